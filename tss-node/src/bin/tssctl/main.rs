//! `tssctl`: client of the tss-node Signer API, and the local demo.

mod demo;
mod demo_frost;

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, Parser, Subcommand, ValueEnum};
use proto::v1 as pb;

#[derive(Parser)]
#[command(
    name = "tssctl",
    version,
    about = "Client for tss-node: keygen, sign, keys, transcripts, health; and a local demo"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Args)]
struct Conn {
    /// Node address.
    #[arg(long, env = "TSSCTL_NODE")]
    node: SocketAddr,
    /// The node's TLS certificate (its tls.crt), pinned.
    #[arg(long, env = "TSSCTL_NODE_CERT")]
    node_cert: PathBuf,
    /// Client folder with client.crt and client.key (from `tssctl client-init`).
    #[arg(long, env = "TSSCTL_CLIENT")]
    client: PathBuf,
}

#[derive(Clone, Copy, ValueEnum)]
enum Hash {
    /// EIP-191 personal message (role signer).
    Eip191,
    /// Bitcoin signed message (role signer).
    BitcoinMessage,
    /// Bare SHA-256 (the key's `raw_digest` must list the client).
    Sha256,
    /// Bare Keccak-256 (`raw_digest`).
    Keccak256,
    /// Bare double SHA-256 (`raw_digest`).
    DoubleSha256,
    /// The message is a 32-byte digest, signed as given (every signer's
    /// policy must list the client in the key's `raw_digest`; always the
    /// full protocol).
    None,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run a local three-node cluster: keygen, sign, verify with k256.
    Demo {
        /// Keep the cluster folder here instead of a temporary one.
        #[arg(long)]
        keep: Option<PathBuf>,
        /// Generate real safe primes at each node (minutes) instead of the
        /// committed TEST-ONLY ones.
        #[arg(long)]
        fresh_primes: bool,
        /// Sign this many messages (sequentially) and report Sign latency.
        #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=1000))]
        signs: u16,
        /// Key scheme: ecdsa (CGGMP24), ed25519 or taproot (FROST).
        #[arg(long, default_value = "ecdsa", value_parser = ["ecdsa", "ed25519", "taproot"])]
        scheme: String,
    },
    /// Create a client identity (TLS key and certificate) in a folder.
    ClientInit {
        #[arg(long)]
        dir: PathBuf,
        #[arg(long)]
        name: String,
    },
    /// Distributed key generation (admin). Shows progress.
    Keygen {
        #[command(flatten)]
        conn: Conn,
        #[arg(long)]
        key: String,
        /// Signature scheme: ecdsa (CGGMP24, secp256k1), ed25519 (FROST) or
        /// taproot (FROST, BIP340 with the BIP86 key path).
        #[arg(long, default_value = "ecdsa", value_parser = ["ecdsa", "ed25519", "taproot"])]
        scheme: String,
    },
    /// Sign a message; the node hashes it.
    Sign {
        #[command(flatten)]
        conn: Conn,
        #[arg(long)]
        key: String,
        /// Message as text.
        #[arg(long, conflicts_with = "message_hex")]
        message: Option<String>,
        /// Message as hex.
        #[arg(long)]
        message_hex: Option<String>,
        #[arg(long, value_enum, default_value = "eip191")]
        hash: Hash,
        /// Request id (hex); random if not given.
        #[arg(long)]
        request_id: Option<String>,
    },
    /// Sign an unsigned Ethereum transaction (EIP-1559 or legacy EIP-155
    /// RLP, hex); prints the raw signed transaction for eth_sendRawTransaction.
    SignEth {
        #[command(flatten)]
        conn: Conn,
        #[arg(long)]
        key: String,
        /// Unsigned transaction, hex (`tssctl eth-tx` builds one).
        #[arg(long)]
        tx: String,
        /// Chain id the transaction is for (must match the transaction).
        #[arg(long)]
        chain_id: u64,
        /// Request id (hex); random if not given.
        #[arg(long)]
        request_id: Option<String>,
    },
    /// Sign a PSBT's inputs that spend the key's P2WPKH outputs; prints the
    /// updated PSBT and, when complete, the transaction hex.
    SignPsbt {
        #[command(flatten)]
        conn: Conn,
        #[arg(long)]
        key: String,
        /// PSBT, base64, or @FILE holding it.
        #[arg(long)]
        psbt: String,
        /// bitcoin, bitcoin-testnet, litecoin or litecoin-testnet.
        #[arg(long, default_value = "bitcoin")]
        chain: String,
        /// Request id (hex); random if not given.
        #[arg(long)]
        request_id: Option<String>,
    },
    /// Build an unsigned EIP-1559 transaction (hex) for `sign-eth`: a plain
    /// transfer, or an ERC-20 transfer with --token.
    EthTx {
        #[arg(long)]
        chain_id: u64,
        #[arg(long)]
        nonce: u64,
        /// Recipient (of the ether, or of the tokens with --token).
        #[arg(long)]
        to: String,
        /// Amount in base units (wei, or token units with --token).
        #[arg(long)]
        amount: String,
        /// ERC-20 token contract: build transfer(to, amount) to it.
        #[arg(long)]
        token: Option<String>,
        #[arg(long, default_value_t = 100_000)]
        gas_limit: u64,
        /// Max fee per gas, wei.
        #[arg(long, default_value_t = 30_000_000_000)]
        max_fee: u128,
        /// Max priority fee per gas, wei.
        #[arg(long, default_value_t = 1_000_000_000)]
        priority_fee: u128,
    },
    /// A node's audit log of policy decisions (admin); checks the hash chain.
    Audit {
        #[command(flatten)]
        conn: Conn,
        /// First entry.
        #[arg(long, default_value_t = 0)]
        from: u64,
        /// At most this many entries (0: all).
        #[arg(long, default_value_t = 0)]
        limit: u64,
    },
    /// Show one key.
    GetKey {
        #[command(flatten)]
        conn: Conn,
        #[arg(long)]
        key: String,
    },
    /// List keys.
    ListKeys {
        #[command(flatten)]
        conn: Conn,
    },
    /// Node health and peer reachability.
    Health {
        #[command(flatten)]
        conn: Conn,
    },
    /// Keygen transcripts (any client).
    Transcript {
        #[command(subcommand)]
        cmd: TranscriptCmd,
    },
    /// Run a node in this process (used by `demo` when no tss-node binary is
    /// beside tssctl; same code as `tss-node run`).
    #[command(hide = true)]
    Node {
        #[command(subcommand)]
        cmd: NodeCmd,
    },
}

#[derive(Subcommand)]
enum TranscriptCmd {
    /// Write a key's keygen transcript to a file for an auditor
    /// (`tss-audit verify FILE --parties parties.toml`).
    Export {
        #[command(flatten)]
        conn: Conn,
        #[arg(long)]
        key: String,
        /// Output file.
        #[arg(long)]
        out: PathBuf,
    },
}

#[derive(Subcommand)]
enum NodeCmd {
    Run {
        #[arg(long)]
        config: PathBuf,
    },
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    match cli.cmd {
        Cmd::Node { .. } => tss_node::init_logging("info"),
        _ => tss_node::init_logging("warn"),
    }
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("tssctl: cannot start runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match rt.block_on(run(cli.cmd)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            match e.downcast_ref::<tonic::Status>() {
                Some(s) => eprintln!("tssctl: {:?}: {}", s.code(), s.message()),
                None => eprintln!("tssctl: error: {e:#}"),
            }
            std::process::ExitCode::FAILURE
        }
    }
}

fn json(v: serde_json::Value) {
    println!("{v}");
}

fn key_json(k: &pb::KeyInfo) -> serde_json::Value {
    serde_json::json!({
        "key_id": k.key_id,
        "scheme": k.scheme,
        "public_key": hex::encode(&k.public_key),
        "threshold": k.threshold,
        "parties": k.parties,
        "eth_address": k.eth_address,
        "addresses": k.addresses.iter().map(|a| (a.chain.clone(), serde_json::Value::from(a.address.clone()))).collect::<serde_json::Map<_, _>>(),
        "created_unix": k.created_unix,
        "presignatures": k.pool.iter().map(|p| serde_json::json!({
            "signers": p.signers, "ready": p.ready, "target": p.target,
        })).collect::<Vec<_>>(),
    })
}

async fn run(cmd: Cmd) -> anyhow::Result<()> {
    match cmd {
        Cmd::Demo {
            keep,
            fresh_primes,
            signs,
            scheme,
        } => {
            let scheme = tss_core::frost::Scheme::from_name(&scheme);
            let out = demo::run(keep, fresh_primes, usize::from(signs), scheme).await?;
            json(out);
        }
        Cmd::ClientInit { dir, name } => {
            let cert = tss_node::init::init_client(&dir, &name)?;
            println!("created client {name} in {}", dir.display());
            println!("add it to the node.toml of each node it may call (an admin: of every node):\n\n[[clients]]\nname = {name:?}\nrole = \"gateway\"  # or \"admin\"\ncert = \"\"\"\n{}\"\"\"", cert.trim_end());
        }
        Cmd::Keygen { conn, key, scheme } => {
            let mut c = connect(&conn).await?;
            let t0 = std::time::Instant::now();
            let mut stream = c
                .keygen(pb::KeygenRequest {
                    key_id: key,
                    scheme,
                    ..Default::default()
                })
                .await?
                .into_inner();
            while let Some(ev) = stream.message().await? {
                match ev.event {
                    Some(pb::keygen_event::Event::Progress(p)) => eprintln!(
                        "[{:>7.1} s] {}: {}",
                        t0.elapsed().as_secs_f64(),
                        p.stage,
                        p.detail
                    ),
                    Some(pb::keygen_event::Event::Done(k)) => json(key_json(&k)),
                    None => {}
                }
            }
        }
        Cmd::Sign {
            conn,
            key,
            message,
            message_hex,
            hash,
            request_id,
        } => {
            let msg = match (message, message_hex) {
                (Some(m), None) => m.into_bytes(),
                (None, Some(h)) => {
                    hex::decode(h.trim_start_matches("0x")).context("--message-hex is not hex")?
                }
                _ => anyhow::bail!("give --message or --message-hex"),
            };
            let request_id = match request_id {
                Some(h) => hex::decode(h).context("--request-id is not hex")?,
                None => rand::random::<[u8; 16]>().to_vec(),
            };
            let hash = match hash {
                Hash::Eip191 => pb::HashAlgorithm::Eip191,
                Hash::BitcoinMessage => pb::HashAlgorithm::BitcoinMessage,
                Hash::Sha256 => pb::HashAlgorithm::Sha256,
                Hash::Keccak256 => pb::HashAlgorithm::Keccak256,
                Hash::DoubleSha256 => pb::HashAlgorithm::DoubleSha256,
                Hash::None => pb::HashAlgorithm::None,
            };
            let mut c = connect(&conn).await?;
            let r = c
                .sign(pb::SignRequest {
                    key_id: key,
                    message: msg,
                    hash: hash as i32,
                    request_id,
                    ..Default::default()
                })
                .await?
                .into_inner();
            json(serde_json::json!({
                "r": hex::encode(&r.r), "s": hex::encode(&r.s), "v": r.v,
                "der": hex::encode(&r.der), "signature_rsv": hex::encode(&r.signature_rsv),
                "digest": hex::encode(&r.digest), "public_key": hex::encode(&r.public_key),
                "signers": r.signers, "elapsed_ms": r.elapsed_ms,
                "path": r.path, "presignature_id": hex::encode(&r.presignature_id),
                "scheme": r.scheme, "signature": hex::encode(&r.signature),
            }));
        }
        Cmd::SignEth {
            conn,
            key,
            tx,
            chain_id,
            request_id,
        } => {
            let unsigned_tx =
                hex::decode(tx.trim().trim_start_matches("0x")).context("--tx is not hex")?;
            let r = connect(&conn)
                .await?
                .sign_ethereum_transaction(pb::SignEthereumTransactionRequest {
                    key_id: key,
                    unsigned_tx,
                    chain_id,
                    request_id: request_id_or_random(request_id)?,
                    ..Default::default()
                })
                .await?
                .into_inner();
            json(serde_json::json!({
                "raw_transaction": format!("0x{}", hex::encode(&r.raw_transaction)),
                "tx_hash": format!("0x{}", hex::encode(&r.tx_hash)),
                "from": r.from,
                "signers": r.signature.as_ref().map(|s| s.signers.clone()),
                "path": r.signature.as_ref().map(|s| s.path.clone()),
            }));
        }
        Cmd::SignPsbt {
            conn,
            key,
            psbt,
            chain,
            request_id,
        } => {
            let psbt_base64 = match psbt.strip_prefix('@') {
                Some(f) => {
                    std::fs::read_to_string(f).with_context(|| format!("cannot read {f}"))?
                }
                None => psbt,
            };
            let r = connect(&conn)
                .await?
                .sign_bitcoin_psbt(pb::SignBitcoinPsbtRequest {
                    key_id: key,
                    psbt_base64: psbt_base64.trim().to_owned(),
                    chain,
                    request_id: request_id_or_random(request_id)?,
                    ..Default::default()
                })
                .await?
                .into_inner();
            json(serde_json::json!({
                "psbt": r.psbt_base64, "complete": r.complete, "tx_hex": r.tx_hex,
                "txid": r.txid, "signed_inputs": r.signed_inputs,
            }));
        }
        Cmd::EthTx {
            chain_id,
            nonce,
            to,
            amount,
            token,
            gas_limit,
            max_fee,
            priority_fee,
        } => {
            let tx = tss_node::client::eip1559_transfer(
                chain_id,
                nonce,
                &to,
                &amount,
                token.as_deref(),
                gas_limit,
                max_fee,
                priority_fee,
            )?;
            println!("0x{}", hex::encode(tx));
        }
        Cmd::Audit { conn, from, limit } => {
            let mut c = connect(&conn).await?;
            let mut entries = Vec::new();
            let mut next = from;
            loop {
                let want = if limit == 0 {
                    1000
                } else {
                    (limit - entries.len() as u64).min(1000)
                };
                if want == 0 {
                    break;
                }
                let r = c
                    .audit_log(pb::AuditLogRequest {
                        from_seq: next,
                        limit: want as u32,
                    })
                    .await?
                    .into_inner();
                if r.entries.is_empty() {
                    break;
                }
                next += r.entries.len() as u64;
                entries.extend(r.entries);
            }
            let stored: Vec<tss_node::policy::audit::StoredEntry> =
                entries.iter().map(Into::into).collect();
            // From entry 0 the chain is checked from its start; a later
            // window is checked from the hash its first entry names.
            let start: [u8; 32] = match stored.first() {
                Some(e) if e.seq > 0 => e.prev.as_slice().try_into().unwrap_or([0; 32]),
                _ => [0; 32],
            };
            let head = tss_node::policy::audit::verify_chain(&stored, start)
                .map_err(|e| anyhow::anyhow!("the audit log's hash chain is broken: {e}"))?;
            for e in &stored {
                println!("{}", String::from_utf8_lossy(&e.body));
            }
            eprintln!(
                "audit log: {} entries from {from}, hash chain verified{}; head {}",
                stored.len(),
                if from == 0 { " from the start" } else { "" },
                hex::encode(head)
            );
        }
        Cmd::GetKey { conn, key } => {
            let k = connect(&conn)
                .await?
                .get_key(pb::GetKeyRequest { key_id: key })
                .await?
                .into_inner();
            json(key_json(&k));
        }
        Cmd::ListKeys { conn } => {
            let r = connect(&conn)
                .await?
                .list_keys(pb::ListKeysRequest {})
                .await?
                .into_inner();
            if !r.unfinished.is_empty() {
                eprintln!(
                    "unfinished keys (not usable; keygen with the same id finishes or replaces them): {}",
                    r.unfinished.join(", ")
                );
            }
            json(serde_json::Value::Array(
                r.keys.iter().map(key_json).collect(),
            ));
        }
        Cmd::Health { conn } => {
            let h = connect(&conn)
                .await?
                .health(pb::HealthRequest {})
                .await?
                .into_inner();
            json(serde_json::json!({
                "party": h.party, "version": h.version, "keys": h.keys,
                "primes_ready": h.primes_ready, "primes_generating": h.primes_generating,
                "sessions_running": h.sessions_running,
                "presign": h.presign.map(|p| serde_json::json!({
                    "generated": p.generated, "consumed": p.consumed,
                    "pool_signs": p.pool_signs, "full_signs": p.full_signs,
                    "fallbacks": p.fallbacks,
                })),
                "policy_sha256": hex::encode(&h.policy_sha256),
                "policy_error": h.policy_error,
                "peers": h.peers.iter().map(|p| serde_json::json!({"name": p.name, "reachable": p.reachable, "error": p.error})).collect::<Vec<_>>(),
            }));
        }
        Cmd::Transcript {
            cmd: TranscriptCmd::Export { conn, key, out },
        } => {
            let bytes = connect(&conn)
                .await?
                .export_transcript(pb::ExportTranscriptRequest { key_id: key })
                .await?
                .into_inner()
                .transcript;
            let root = transcript_root(&bytes)
                .context("the node answered with bytes that are not a keygen transcript")?;
            std::fs::write(&out, &bytes)
                .with_context(|| format!("cannot write {}", out.display()))?;
            json(serde_json::json!({
                "path": out.display().to_string(),
                "bytes": bytes.len(),
                "transcript_root": root,
            }));
        }
        Cmd::Node {
            cmd: NodeCmd::Run { config },
        } => {
            let cfg = tss_node::config::NodeConfig::load(&config)?;
            let pass = cfg.passphrase()?;
            tss_node::run::run(cfg, pass).await?;
        }
    }
    Ok(())
}

fn request_id_or_random(hex_id: Option<String>) -> anyhow::Result<Vec<u8>> {
    Ok(match hex_id {
        Some(h) => hex::decode(h).context("--request-id is not hex")?,
        None => rand::random::<[u8; 16]>().to_vec(),
    })
}

async fn connect(c: &Conn) -> anyhow::Result<tss_node::client::Client> {
    tss_node::client::connect_with_files(c.node, &c.node_cert, &c.client).await
}

/// The transcript root the file's first certificate names (hex).
fn transcript_root(file: &[u8]) -> anyhow::Result<String> {
    let f = keygen::transcript::TranscriptFile::decode(file)?;
    let c = f.certificates.first().context("no certificates")?;
    let cert = keygen::transcript::KeyCertificate::decode(&c.body)?;
    Ok(hex::encode(&cert.transcript_root))
}
