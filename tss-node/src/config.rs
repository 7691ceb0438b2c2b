//! Node configuration (`node.toml`) and the public party entry (`party.toml`).
//!
//! ```toml
//! name = "custodian-a"
//! listen = "127.0.0.1:7001"
//! store_dir = "store"                 # relative to this file
//! tls_cert = "tls.crt"
//! passphrase_file = "passphrase"      # or set TSS_PASSPHRASE; never on the command line
//! threshold = 2
//! policy = "policy.toml"              # what this node signs (examples/policy.toml); none: nothing
//!
//! [primes]
//! pool_target = 1                     # safe-prime sets kept ready
//!
//! [presign]
//! target = 16                         # presignatures per ECDSA key and signer pair
//! frost_target = 256                  # pooled nonces per FROST key and signer pair
//!
//! [timeouts]
//! propose_ms = 3000
//! sign_ms = 30000
//! keygen_ms = 60000
//! aux_ms = 1800000
//!
//! [[peers]]                           # one block per other party: paste its party.toml
//! name = "custodian-b"
//! address = "127.0.0.1:7002"
//! identity = "<hex Ed25519 public key>"
//! cert = """-----BEGIN CERTIFICATE-----..."""
//!
//! [[clients]]
//! name = "gateway-1"
//! role = "gateway"                    # or "admin"
//! cert = """-----BEGIN CERTIFICATE-----..."""
//! ```

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use serde::{Deserialize, Serialize};
use tss_core::identity::PartyId;

/// Environment variable that may hold the store passphrase.
pub const PASSPHRASE_ENV: &str = "TSS_PASSPHRASE";

/// A party's public entry: what the other parties pin.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct PartyEntry {
    /// Unique party name.
    pub name: String,
    /// Address of its gRPC listener.
    pub address: SocketAddr,
    /// Hex Ed25519 identity public key (signs envelopes).
    pub identity: String,
    /// PEM TLS certificate (pinned).
    pub cert: String,
}

/// Role of a client.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// May start keygen and read keys and health.
    Admin,
    /// May sign and read keys and health.
    Gateway,
}

/// A client allowed to call the Signer API.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ClientEntry {
    /// Name (for logs and records).
    pub name: String,
    /// Which API it may call; what it may sign is up to the policy file.
    pub role: Role,
    /// PEM TLS client certificate (pinned).
    pub cert: String,
}

/// Safe-prime pool settings.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PrimesConfig {
    /// Number of prime sets to keep ready.
    pub pool_target: usize,
    /// Threads used by background generation.
    pub threads: usize,
}

impl Default for PrimesConfig {
    fn default() -> Self {
        Self {
            pool_target: 1,
            threads: 1,
        }
    }
}

/// Presignature pool settings.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PresignConfig {
    /// Presignatures to keep ready per key and signer pair (0 turns the pool
    /// off: every signature runs the full protocol).
    pub target: usize,
    /// Pooled nonces (FROST's first round, made ahead in batches) to keep
    /// ready per FROST key and signer pair (0: every FROST signature runs
    /// both rounds). Nonces are cheap: a batch of 128 takes milliseconds.
    pub frost_target: usize,
    /// Presign sessions this node leads at once.
    pub parallel: usize,
    /// A peer may hold at most this many more than `target` of our
    /// presignatures for one key and pair; further proposals are declined.
    pub slack: usize,
    /// Run presigning in the idle scheduling class (Linux `SCHED_IDLE`: only
    /// when nothing else wants the CPU). `false` runs it at normal priority,
    /// for hosts whose other load would otherwise keep the pool empty (and
    /// for tests that run several clusters on one machine).
    pub idle_priority: bool,
}

impl PresignConfig {
    /// The pool target for a key of `scheme` (`None`: ECDSA).
    pub fn target_for(&self, scheme: Option<tss_core::frost::Scheme>) -> usize {
        match scheme {
            None => self.target,
            Some(_) => self.frost_target,
        }
    }

    /// Whether any pool is on.
    pub fn any(&self) -> bool {
        self.target > 0 || self.frost_target > 0
    }
}

impl Default for PresignConfig {
    fn default() -> Self {
        Self {
            target: 16,
            frost_target: 256,
            parallel: 1,
            slack: 8,
            idle_priority: true,
        }
    }
}

/// TEST ONLY pause points for fault tests (`[test_hooks]`). Compiled into
/// test builds only (debug assertions on): a release build refuses a config
/// that sets them.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TestHooks {
    /// As co-signer on the pool path: sleep this long after the
    /// presignature is durably marked used, before the partial signature is
    /// issued (lets a test kill the node right there).
    pub pause_before_partial_ms: u64,
    /// As co-signer on the pool path of a FROST key: send a signature share
    /// with one bit flipped (a hostile co-signer, for blame tests).
    pub corrupt_frost_share: bool,
    /// In FROST nonce-pool sessions: send a batch whose first commitment is
    /// not a curve point (a hostile peer, for blame tests).
    pub corrupt_frost_commitment: bool,
    /// In FROST nonce-pool sessions: send a batch one commitment short.
    pub short_frost_batch: bool,
}

/// Per-phase timeouts.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Timeouts {
    /// A peer must answer a proposal within this.
    pub propose_ms: u64,
    /// One signing session (full protocol).
    pub sign_ms: u64,
    /// One keygen session.
    pub keygen_ms: u64,
    /// One aux-info session (includes on-demand prime generation at peers).
    pub aux_ms: u64,
}

impl Default for Timeouts {
    fn default() -> Self {
        Self {
            propose_ms: 3_000,
            sign_ms: 30_000,
            keygen_ms: 60_000,
            aux_ms: 1_800_000,
        }
    }
}

/// Limits that protect the node under load.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Protocol sessions this node runs at once (as coordinator or co-signer).
    pub max_sessions: usize,
    /// Largest message accepted by Sign, in bytes.
    pub max_message_bytes: usize,
    /// Client requests (Sign, SignEthereumTransaction, SignBitcoinPsbt,
    /// Keygen) this node coordinates at once. Unset: the machine's cores
    /// (at least 2), see [`Limits::max_requests`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_requests: Option<usize>,
    /// Client requests that may wait for a slot; more are refused at once
    /// with RESOURCE_EXHAUSTED.
    pub max_queued: usize,
    /// Longest wait for a slot before RESOURCE_EXHAUSTED.
    pub queue_ms: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_sessions: 32,
            max_message_bytes: 64 * 1024,
            max_requests: None,
            max_queued: 64,
            queue_ms: 10_000,
        }
    }
}

impl Limits {
    /// Client requests this node coordinates at once: the configured
    /// value, else one per core of this machine (at least 2).
    ///
    /// A full-protocol signature costs each of its two parties about a
    /// CPU-second (pure-Rust build; half that with GMP), and every
    /// request this node coordinates also costs a co-signer the same. More
    /// requests running than the cores finish within `sign_ms` would end
    /// in timeouts (UNAVAILABLE) instead of waiting in the queue or being
    /// refused with RESOURCE_EXHAUSTED (docs/RELIABILITY.md, "Load").
    pub fn max_requests(&self) -> usize {
        self.max_requests.unwrap_or_else(|| {
            std::thread::available_parallelism()
                .map_or(2, |n| n.get())
                .max(2)
        })
    }
}

/// `node.toml`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeConfig {
    /// This party's name.
    pub name: String,
    /// gRPC listen address (Signer and Peer services).
    pub listen: SocketAddr,
    /// Sealed store directory.
    pub store_dir: PathBuf,
    /// This party's TLS certificate (PEM). The private key is in the store.
    pub tls_cert: PathBuf,
    /// File holding the store passphrase (else `TSS_PASSPHRASE`).
    #[serde(default)]
    pub passphrase_file: Option<PathBuf>,
    /// Signing threshold for new keys.
    #[serde(default = "default_threshold")]
    pub threshold: u16,
    /// Safe-prime pool.
    #[serde(default)]
    pub primes: PrimesConfig,
    /// Presignature pool.
    #[serde(default)]
    pub presign: PresignConfig,
    /// Prometheus metrics listener (plain HTTP; bind it to a private
    /// interface). Off when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics_listen: Option<SocketAddr>,
    /// Timeouts.
    #[serde(default)]
    pub timeouts: Timeouts,
    /// Admission limits.
    #[serde(default)]
    pub limits: Limits,
    /// Signing policy file (`policy.toml`, see `examples/policy.toml`).
    /// Without one the node signs nothing; reloaded on SIGHUP.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy: Option<PathBuf>,
    /// The other parties.
    #[serde(default)]
    pub peers: Vec<PartyEntry>,
    /// Clients of the Signer API.
    #[serde(default)]
    pub clients: Vec<ClientEntry>,
    /// TEST ONLY: pause points for fault tests; never set in production.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub test_hooks: Option<TestHooks>,
}

fn default_threshold() -> u16 {
    2
}

impl NodeConfig {
    /// Loads and checks a config; relative paths are resolved against its folder.
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read config {}", path.display()))?;
        let mut cfg: NodeConfig =
            toml::from_str(&text).with_context(|| format!("invalid config {}", path.display()))?;
        let base = path.parent().unwrap_or(Path::new("."));
        cfg.store_dir = base.join(&cfg.store_dir);
        cfg.tls_cert = base.join(&cfg.tls_cert);
        if let Some(p) = &cfg.passphrase_file {
            cfg.passphrase_file = Some(base.join(p));
        }
        if let Some(p) = &cfg.policy {
            cfg.policy = Some(base.join(p));
        }
        cfg.check()?;
        Ok(cfg)
    }

    fn check(&self) -> anyhow::Result<()> {
        if self.test_hooks.is_some() && !cfg!(debug_assertions) {
            bail!(
                "the config sets [test_hooks], which only test builds (debug assertions on) \
                 honour: remove the section"
            );
        }
        let mut names = std::collections::HashSet::new();
        names.insert(self.name.as_str());
        for p in &self.peers {
            if !names.insert(p.name.as_str()) {
                bail!("party name {:?} appears twice in the config", p.name);
            }
            PartyId::from_hex(&p.identity)
                .with_context(|| format!("peer {}: bad identity key", p.name))?;
            crate::transport::cert_der_from_pem(&p.cert)
                .with_context(|| format!("peer {}: bad certificate", p.name))?;
        }
        let mut certs = std::collections::HashMap::new();
        for p in &self.peers {
            if let Ok(der) = crate::transport::cert_der_from_pem(&p.cert) {
                certs.insert(
                    crate::transport::fingerprint(&der),
                    format!("peer {}", p.name),
                );
            }
        }
        let mut clients = std::collections::HashSet::new();
        for c in &self.clients {
            if !clients.insert(c.name.as_str()) {
                bail!(
                    "client name {:?} appears twice in [[clients]]: policies and audit logs name clients, so each name must be unique",
                    c.name
                );
            }
            let der = crate::transport::cert_der_from_pem(&c.cert)
                .with_context(|| format!("client {}: bad certificate", c.name))?;
            if let Some(other) = certs.insert(
                crate::transport::fingerprint(&der),
                format!("client {}", c.name),
            ) {
                bail!(
                    "client {} has the same certificate as {other}: every peer and client needs its own certificate (a peer's key must not also act as a client)",
                    c.name
                );
            }
        }
        let n = self.peers.len() + 1;
        if self.threshold < 2 || (!self.peers.is_empty() && usize::from(self.threshold) > n) {
            bail!(
                "threshold {} does not fit {} parties (2 <= t <= n)",
                self.threshold,
                n
            );
        }
        Ok(())
    }

    /// Reads the store passphrase from the file or the environment.
    pub fn passphrase(&self) -> anyhow::Result<tss_core::secret::Passphrase> {
        read_passphrase(self.passphrase_file.as_deref())
    }
}

/// Reads a passphrase from `file` if given, else from `TSS_PASSPHRASE`.
pub fn read_passphrase(file: Option<&Path>) -> anyhow::Result<tss_core::secret::Passphrase> {
    let s = match file {
        Some(f) => std::fs::read_to_string(f)
            .with_context(|| format!("cannot read passphrase file {}", f.display()))?,
        None => std::env::var(PASSPHRASE_ENV).map_err(|_| {
            anyhow::anyhow!(
                "no store passphrase: set passphrase_file in the config or {PASSPHRASE_ENV}"
            )
        })?,
    };
    let p = tss_core::secret::Passphrase::new(s);
    if p.expose().len() < 8 {
        bail!("the store passphrase must have at least 8 characters");
    }
    Ok(p)
}

/// Removes `TSS_PASSPHRASE` from this process's environment once it has
/// been read, so that later environment reads and child processes do not
/// see it. Call it before any other thread starts (`tss-node run` does, in
/// `main`). The kernel keeps the environment the process started with
/// (`/proc/<pid>/environ`, readable by the same user and root): prefer
/// `passphrase_file`.
pub fn forget_env_passphrase() {
    std::env::remove_var(PASSPHRASE_ENV);
}

/// Writes a file readable by the owner only (0600), refusing to overwrite.
pub fn write_private(path: &Path, contents: &[u8]) -> anyhow::Result<()> {
    use std::io::Write;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts
        .open(path)
        .with_context(|| format!("cannot create {} (it must not exist yet)", path.display()))?;
    f.write_all(contents)?;
    f.sync_all()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn check__should_refuse_duplicate_clients_and_a_client_with_a_peers_certificate() {
        // Given a config with one peer and one client, each with its own certificate
        let cert = |n: &str| {
            crate::transport::generate_tls_identity(n)
                .expect("identity")
                .cert_pem()
        };
        let peer_cert = cert("custodian-b");
        let mut cfg: NodeConfig = toml::from_str(
            "name = \"custodian-a\"\nlisten = \"127.0.0.1:7001\"\nstore_dir = \"store\"\ntls_cert = \"tls.crt\"\n",
        )
        .expect("parse");
        cfg.peers.push(PartyEntry {
            name: "custodian-b".into(),
            address: "127.0.0.1:7002".parse().expect("address"),
            identity: tss_core::identity::IdentityKey::generate()
                .party_id()
                .to_hex(),
            cert: peer_cert.clone(),
        });
        let client = |name: &str, cert: String| ClientEntry {
            name: name.into(),
            role: Role::Gateway,
            cert,
        };
        cfg.clients.push(client("gateway", cert("gw")));
        cfg.check().expect("a valid config");
        // When a second client has the same name: refused, naming it
        let mut dup = cfg.clone();
        dup.clients.push(client("gateway", cert("gw2")));
        let e = dup.check().expect_err("duplicate client name").to_string();
        assert!(e.contains("\"gateway\" appears twice"), "{e}");
        // When a client uses the peer's certificate: refused
        let mut peer = cfg.clone();
        peer.clients.push(client("sneaky", peer_cert));
        let e = peer.check().expect_err("a peer's certificate").to_string();
        assert!(e.contains("same certificate as peer custodian-b"), "{e}");
        // When two clients share a certificate: refused
        let mut twin = cfg.clone();
        let shared = twin.clients[0].cert.clone();
        twin.clients.push(client("gateway-2", shared));
        let e = twin.check().expect_err("a shared certificate").to_string();
        assert!(e.contains("same certificate as client gateway"), "{e}");
    }

    #[test]
    fn max_requests__should_follow_the_cores_unless_set_and_stay_unset_in_written_configs() {
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        let auto = Limits::default();
        assert_eq!(auto.max_requests(), cores.max(2));
        // A config written on one machine does not freeze its core count.
        let written = toml::to_string(&auto).expect("serialize");
        assert!(!written.contains("max_requests"), "{written}");
        let set: Limits = toml::from_str("max_requests = 5").expect("parse");
        assert_eq!(set.max_requests(), 5);
        assert!(toml::to_string(&set)
            .expect("serialize")
            .contains("max_requests = 5"));
    }
}
