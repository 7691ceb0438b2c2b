//! `tss-node init`: creates one party (identity, TLS certificate, sealed store,
//! config skeleton and public entry).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use tss_core::identity::IdentityKey;
use tss_core::secret::Passphrase;
use tss_core::store::{RecordKind, Store};

use crate::config::{NodeConfig, PartyEntry, PrimesConfig};
use crate::keys::{IDENTITY_KEY, TLS_KEY};

/// What `init` created.
#[derive(Debug)]
pub struct Initialized {
    /// The config file.
    pub config_path: PathBuf,
    /// The public entry file to hand to the other parties.
    pub party_path: PathBuf,
    /// The public entry.
    pub entry: PartyEntry,
}

/// The policy `init` writes: nothing is allowed until the custodian says so.
pub const INITIAL_POLICY: &str = "\
# What this custodian signs. Default deny: as written, nothing.
# Give clients roles and keys chains, whitelists and limits; see
# examples/policy.toml. Reload with `kill -HUP <tss-node pid>`.
version = 1
";

/// Creates a party in `dir` (which must not hold one yet).
///
/// `passphrase_file`, if given, is recorded in the config; otherwise the node
/// reads `TSS_PASSPHRASE` at start-up. `insecure_test_primes` (TEST ONLY,
/// public primes) are loaded into the prime pool.
pub fn init_party(
    dir: &Path,
    name: &str,
    listen: SocketAddr,
    pass: &Passphrase,
    passphrase_file: Option<PathBuf>,
    insecure_test_primes: &[tss_core::primes::Primes],
) -> anyhow::Result<Initialized> {
    if name.is_empty()
        || name.len() > 64
        || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
    {
        bail!("party name must be 1-64 characters of [A-Za-z0-9-]");
    }
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let config_path = dir.join("node.toml");
    if config_path.exists() {
        bail!(
            "{} already exists: this folder already holds a party",
            config_path.display()
        );
    }
    let store = Store::create(&dir.join("store"), pass)?;
    let identity = IdentityKey::generate();
    let tls_id = crate::transport::generate_tls_identity(name)?;
    store.put(
        RecordKind::NodeSecret,
        IDENTITY_KEY,
        identity.to_secret().expose(),
    )?;
    store.put(RecordKind::NodeSecret, TLS_KEY, tls_id.key_pem().as_bytes())?;
    store.flush()?;
    import_primes(&store, insecure_test_primes)?;
    std::fs::write(dir.join("tls.crt"), tls_id.cert_pem())?;

    let entry = PartyEntry {
        name: name.to_owned(),
        address: listen,
        identity: identity.party_id().to_hex(),
        cert: tls_id.cert_pem(),
    };
    let party_path = dir.join("party.toml");
    std::fs::write(
        &party_path,
        format!(
            "# Public entry of party {name}: give it to the other parties, who add it\n\
             # to their node.toml as a [[peers]] block.\n{}",
            toml::to_string(&entry)?
        ),
    )?;
    let cfg = NodeConfig {
        name: name.to_owned(),
        listen,
        store_dir: "store".into(),
        tls_cert: "tls.crt".into(),
        passphrase_file,
        threshold: 2,
        primes: PrimesConfig::default(),
        presign: Default::default(),
        metrics_listen: None,
        timeouts: Default::default(),
        limits: Default::default(),
        policy: Some("policy.toml".into()),
        peers: vec![],
        clients: vec![],
        test_hooks: None,
    };
    let policy_path = dir.join("policy.toml");
    if !policy_path.exists() {
        std::fs::write(&policy_path, INITIAL_POLICY)?;
    }
    write_config(&config_path, &cfg)?;
    Ok(Initialized {
        config_path,
        party_path,
        entry,
    })
}

/// Writes a config file with a short header.
pub fn write_config(path: &Path, cfg: &NodeConfig) -> anyhow::Result<()> {
    let body = toml::to_string(cfg)?;
    std::fs::write(
        path,
        format!(
            "# tss-node config. Add each other party's party.toml as a [[peers]] block\n\
             # and each client's entry as a [[clients]] block.\n{body}"
        ),
    )
    .with_context(|| format!("cannot write {}", path.display()))
}

/// TEST ONLY: loads public fixture primes into a store's pool.
fn import_primes(store: &Store, primes: &[tss_core::primes::Primes]) -> anyhow::Result<()> {
    for p in primes {
        let id: [u8; 16] = rand::random();
        store.put(
            RecordKind::Primes,
            &id,
            tss_core::primes::encode(p).expose(),
        )?;
    }
    store.flush()?;
    Ok(())
}

/// Creates a client identity (TLS key and certificate) in `dir`.
pub fn init_client(dir: &Path, name: &str) -> anyhow::Result<String> {
    std::fs::create_dir_all(dir)?;
    let id = crate::transport::generate_tls_identity(name)?;
    crate::config::write_private(&dir.join("client.key"), id.key_pem().as_bytes())?;
    std::fs::write(dir.join("client.crt"), id.cert_pem())?;
    Ok(id.cert_pem())
}
