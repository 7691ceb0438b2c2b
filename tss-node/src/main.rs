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
    /// Audit presignatures offline (stop the node first): prints JSON with
    /// the ids ready per key and pair and every consumed presignature with
    /// the digest it was used for. No secret is printed.
    Presignatures {
        #[arg(long)]
        config: PathBuf,
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
