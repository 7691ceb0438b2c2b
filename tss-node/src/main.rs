//! `tss-node`: one party of a threshold-signing cluster.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "tss-node",
    version,
    about = "Threshold-signature (2-of-3 ECDSA) signing daemon"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Create a party: identity key, TLS certificate, sealed store, config.
    ///
    /// The store passphrase comes from --passphrase-file or TSS_PASSPHRASE.
    Init {
        /// Folder for the party (created).
        #[arg(long)]
        dir: PathBuf,
        /// Party name, e.g. custodian-a.
        #[arg(long)]
        name: String,
        /// Address to listen on.
        #[arg(long, default_value = "127.0.0.1:7001")]
        listen: SocketAddr,
        /// File holding the store passphrase (recorded in node.toml).
        #[arg(long)]
        passphrase_file: Option<PathBuf>,
        /// TEST ONLY: preload the prime pool from a public fixture file.
        /// Keys made with these primes are not secure.
        #[arg(long, value_name = "FILE")]
        insecure_test_primes: Option<PathBuf>,
    },
    /// Serve.
    Run {
        /// The node.toml written by init (with peers and clients added).
        #[arg(long)]
        config: PathBuf,
    },
    /// Back up this party, encrypted to an offline recovery key (stop the
    /// node first): `tss-node backup --config node.toml --to age1... --out
    /// FILE`. Holds everything the party needs to come back except
    /// presignatures and pooled nonces (docs/FORMATS.md, "Party backup").
    #[command(args_conflicts_with_subcommands = true)]
    Backup {
        #[command(subcommand)]
        action: Option<BackupCmd>,
        /// The party's node.toml.
        #[arg(long)]
        config: Option<PathBuf>,
        /// The recovery key's age X25519 recipient (age1...), or a file
        /// holding it.
        #[arg(long)]
        to: Option<String>,
        /// The backup file to write (must not exist).
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Restore a party from a backup into a new folder; the new store is
    /// sealed under the passphrase from --passphrase-file or TSS_PASSPHRASE.
    Restore {
        /// The backup file.
        #[arg(long)]
        from: PathBuf,
        /// The recovery key (age identity file, AGE-SECRET-KEY-1...).
        #[arg(long)]
        identity: PathBuf,
        /// The new party folder (must not exist, or be empty).
        #[arg(long)]
        dir: PathBuf,
        /// File holding the new store's passphrase.
        #[arg(long)]
        passphrase_file: Option<PathBuf>,
        /// The parties.toml an auditor uses: the backup must be of one of
        /// these parties, with their identity and TLS certificate, and of
        /// keys whose transcripts pass the audit.
        #[arg(long)]
        parties: PathBuf,
        /// Refuse a backup of any other party than this one.
        #[arg(long)]
        party: Option<String>,
    },
    /// Audit presignatures offline (stop the node first): prints JSON with
    /// the ids ready per key and pair and every consumed presignature with
    /// the digest it was used for. No secret is printed.
    Presignatures {
        #[arg(long)]
        config: PathBuf,
    },
}

#[derive(Subcommand)]
enum BackupCmd {
    /// Check a backup without the recovery key: it is the backup of a
    /// party of parties.toml, and each of its keys' transcripts passes the
    /// audit with that party in it.
    Verify {
        /// The backup file.
        file: PathBuf,
        /// The auditor's parties.toml (as for tss-audit).
        #[arg(long)]
        parties: PathBuf,
        /// Refuse a backup of any other party than this one.
        #[arg(long)]
        party: Option<String>,
    },
    /// Make a recovery key: writes an age X25519 identity (keep it offline)
    /// and prints its recipient, for --to.
    NewRecoveryKey {
        /// Where to write the identity (must not exist).
        #[arg(long)]
        out: PathBuf,
    },
}

fn main() -> std::process::ExitCode {
    tss_node::init_logging("info");
    let cli = Cli::parse();
    let r = match cli.cmd {
        Cmd::Init {
            dir,
            name,
            listen,
            passphrase_file,
            insecure_test_primes,
        } => init(dir, name, listen, passphrase_file, insecure_test_primes),
        Cmd::Presignatures { config } => presignatures(config),
        Cmd::Backup {
            action,
            config,
            to,
            out,
        } => backup(action, config, to, out),
        Cmd::Restore {
            from,
            identity,
            dir,
            passphrase_file,
            parties,
            party,
        } => restore(
            &from,
            &identity,
            &dir,
            passphrase_file.as_deref(),
            &parties,
            party.as_deref(),
        ),
        Cmd::Run { config } => tss_node::config::NodeConfig::load(&config).and_then(|cfg| {
            // Read, and removed from the environment, before any other
            // thread starts.
            let pass = cfg.passphrase()?;
            tss_node::config::forget_env_passphrase();
            tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()?
                .block_on(tss_node::run::run(cfg, pass))
        }),
    };
    match r {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tss-node: error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn init(
    dir: PathBuf,
    name: String,
    listen: SocketAddr,
    passphrase_file: Option<PathBuf>,
    primes: Option<PathBuf>,
) -> anyhow::Result<()> {
    let pass = tss_node::config::read_passphrase(passphrase_file.as_deref())?;
    let pf = passphrase_file.map(|p| std::fs::canonicalize(&p).unwrap_or(p));
    let sets = match &primes {
        Some(f) => {
            eprintln!(
                "WARNING: loading TEST-ONLY public primes from {}: keys made with them are NOT secure",
                f.display()
            );
            tss_core::primes::fixtures_from_text(&std::fs::read_to_string(f)?)?
        }
        None => vec![],
    };
    let done = tss_node::init::init_party(&dir, &name, listen, &pass, pf, &sets)?;
    println!("created party {name} in {}", dir.display());
    println!("  config:       {}", done.config_path.display());
    println!(
        "  public entry: {} (give it to the other parties)",
        done.party_path.display()
    );
    Ok(())
}

fn backup(
    action: Option<BackupCmd>,
    config: Option<PathBuf>,
    to: Option<String>,
    out: Option<PathBuf>,
) -> anyhow::Result<()> {
    match action {
        Some(BackupCmd::Verify {
            file,
            parties,
            party,
        }) => {
            let bytes = std::fs::read(&file)
                .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", file.display()))?;
            let text = std::fs::read_to_string(&parties)
                .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", parties.display()))?;
            for line in tss_node::backup::verify(&bytes, &text, party.as_deref())? {
                println!("pass  {line}");
            }
            println!("backup {} verified", file.display());
            Ok(())
        }
        Some(BackupCmd::NewRecoveryKey { out }) => {
            let recipient = tss_node::backup::new_recovery_key(&out)?;
            eprintln!(
                "recovery key written to {} (keep it offline); back up with --to {recipient}",
                out.display()
            );
            println!("{recipient}");
            Ok(())
        }
        None => {
            let (Some(config), Some(to), Some(out)) = (config, to, out) else {
                anyhow::bail!(
                    "backup needs --config node.toml --to RECIPIENT --out FILE \
                     (or a subcommand: verify, new-recovery-key)"
                );
            };
            let w = tss_node::backup::backup(&config, &to, &out)?;
            println!(
                "{}",
                serde_json::json!({
                    "backup": out.display().to_string(),
                    "party": w.header.party,
                    "party_id": hex::encode(&w.header.party_id),
                    "keys": w.header.keys.iter().map(|k| &k.key_id).collect::<Vec<_>>(),
                    "records": w.records,
                    "bytes": w.bytes,
                })
            );
            Ok(())
        }
    }
}

fn restore(
    from: &std::path::Path,
    identity: &std::path::Path,
    dir: &std::path::Path,
    passphrase_file: Option<&std::path::Path>,
    parties: &std::path::Path,
    party: Option<&str>,
) -> anyhow::Result<()> {
    let pass = tss_node::config::read_passphrase(passphrase_file)?;
    let parties = std::fs::read_to_string(parties)
        .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", parties.display()))?;
    let r = tss_node::backup::restore(from, identity, dir, &pass, &parties, party)?;
    for n in &r.notes {
        eprintln!("note: {n}");
    }
    println!(
        "{}",
        serde_json::json!({
            "restored": dir.display().to_string(),
            "party": r.header.party,
            "keys": r.header.keys.iter().map(|k| &k.key_id).collect::<Vec<_>>(),
            "records": r.records,
        })
    );
    Ok(())
}

fn presignatures(config: PathBuf) -> anyhow::Result<()> {
    use tss_core::store::{RecordKind, Store};
    let cfg = tss_node::config::NodeConfig::load(&config)?;
    let store = Store::open(&cfg.store_dir, &cfg.passphrase()?)?;
    let ready: Vec<serde_json::Value> = store
        .keys(RecordKind::Presignature)?
        .iter()
        .filter_map(|k| {
            // key_id 0x00 s0 s1 id (see tss_node::testing::presignature)
            let sep = k.iter().position(|&b| b == 0)?;
            let rest = k.get(sep + 1..)?;
            let (pair, id) = (rest.get(..4)?, rest.get(4..)?);
            Some(serde_json::json!({
                "key_id": String::from_utf8_lossy(&k[..sep]),
                "signers": [u16::from_be_bytes([pair[0], pair[1]]), u16::from_be_bytes([pair[2], pair[3]])],
                "id": hex::encode(id),
            }))
        })
        .collect();
    let used = tss_node::used_records(&store)?;
    println!(
        "{}",
        serde_json::json!({ "party": cfg.name, "ready": ready, "used": used })
    );
    Ok(())
}
