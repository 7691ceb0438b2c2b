//! `tssctl`: client of the tss-node Signer API, and the local demo.

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
    Sha256,
    Keccak256,
    DoubleSha256,
    /// The message is a 32-byte digest, signed as given (the client needs
    /// `raw_digest = true` at every signer; always the full protocol).
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
        #[arg(long, value_enum, default_value = "sha256")]
        hash: Hash,
        /// Request id (hex); random if not given.
        #[arg(long)]
        request_id: Option<String>,
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
        "public_key": hex::encode(&k.public_key),
        "threshold": k.threshold,
        "parties": k.parties,
        "eth_address": k.eth_address,
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
        } => {
            let out = tss_node::demo::run(keep, fresh_primes, usize::from(signs)).await?;
            json(out);
        }
        Cmd::ClientInit { dir, name } => {
            let cert = tss_node::init::init_client(&dir, &name)?;
            println!("created client {name} in {}", dir.display());
            println!("add it to the node.toml of each node it may call (an admin: of every node):\n\n[[clients]]\nname = {name:?}\nrole = \"gateway\"  # or \"admin\"\ncert = \"\"\"\n{}\"\"\"", cert.trim_end());
        }
        Cmd::Keygen { conn, key } => {
            let mut c = connect(&conn).await?;
            let t0 = std::time::Instant::now();
            let mut stream = c
                .keygen(pb::KeygenRequest { key_id: key })
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
                })
                .await?
                .into_inner();
            json(serde_json::json!({
                "r": hex::encode(&r.r), "s": hex::encode(&r.s), "v": r.v,
                "der": hex::encode(&r.der), "signature_rsv": hex::encode(&r.signature_rsv),
                "digest": hex::encode(&r.digest), "public_key": hex::encode(&r.public_key),
                "signers": r.signers, "elapsed_ms": r.elapsed_ms,
                "path": r.path, "presignature_id": hex::encode(&r.presignature_id),
            }));
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
            tss_node::run::run(cfg).await?;
        }
    }
    Ok(())
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
