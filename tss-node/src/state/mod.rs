//! The node's shared state ([`Node`]): one value per running node, built at
//! start-up and shared by every handler and background task. Its fields are
//! private and grouped; each is reached through an accessor, so a function
//! that needs one thing (the store, the peers, the session registry) takes
//! that and not the node.

pub mod admission;
pub mod claims;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use tss_core::identity::IdentityKey;
use tss_core::store::Store;

use self::admission::Admission;
use self::claims::Claims;
use crate::config::{ClientEntry, NodeConfig};
use crate::metrics::Metrics;
use crate::policy::audit::AuditLog;
use crate::policy::spend::Ledger;
use crate::policy::{Policy, PolicyError};
use crate::primes::PrimePool;
use crate::session::idle::PoolRuntime;
use crate::session::Sessions;
use crate::transport::peers::{PeerSpec, Peers};
use crate::transport::{self, Fingerprint};

/// The pinned clients and their certificates (DER), by fingerprint.
struct Clients {
    by_fingerprint: HashMap<Fingerprint, (ClientEntry, Vec<u8>)>,
}

/// The signing policy in force, replaced on SIGHUP.
struct PolicyState {
    current: RwLock<Arc<Policy>>,
    /// Why the last reload was refused.
    error: Mutex<Option<String>>,
}

/// The presignature pool's machinery.
struct PresignPool {
    /// Wakes the refill loop (a presignature was consumed).
    wake: tokio::sync::Notify,
    /// The pool's low-priority runtime (`None` when the pool is off).
    runtime: Option<PoolRuntime>,
}

/// The node.
pub struct Node {
    cfg: NodeConfig,
    store: Store,
    identity: Arc<IdentityKey>,
    peers: Arc<Peers>,
    clients: Clients,
    /// DER certificates of the peers and clients (pinned by the TLS server).
    allowed: Vec<Vec<u8>>,
    sessions: Arc<Sessions>,
    claims: Claims,
    /// Serialises "load or generate aux info" at the coordinator.
    aux_lock: tokio::sync::Mutex<()>,
    admission: Admission,
    primes: Arc<PrimePool>,
    pool: PresignPool,
    metrics: Arc<Metrics>,
    policy: PolicyState,
    ledger: Arc<Ledger>,
    audit: AuditLog,
    /// FROST shares decoded once, by key id (`protocol::frost::sign::load`).
    frost_shares: Mutex<HashMap<String, Arc<tss_core::frost::FrostShare>>>,
}

/// Reads the policy file named by the config (none: nothing is signed).
fn load_policy(cfg: &NodeConfig) -> Result<Policy, PolicyError> {
    let Some(path) = &cfg.policy else {
        return Ok(Policy::deny_all());
    };
    let text = std::fs::read_to_string(path).map_err(|e| PolicyError::Read {
        path: path.display().to_string(),
        reason: e.to_string(),
    })?;
    let names: Vec<&str> = cfg.clients.iter().map(|c| c.name.as_str()).collect();
    Policy::parse(&text, &names).map_err(|e| PolicyError::InFile {
        path: path.display().to_string(),
        reason: e.to_string(),
    })
}

impl Node {
    /// Builds the node from its config, opened store and secrets.
    pub fn new(
        cfg: NodeConfig,
        store: Store,
        identity: IdentityKey,
        my_tls: &transport::TlsIdentity,
    ) -> anyhow::Result<Arc<Self>> {
        let identity = Arc::new(identity);
        let specs: Vec<PeerSpec> = cfg
            .peers
            .iter()
            .map(|p| PeerSpec {
                name: p.name.clone(),
                identity: p.identity.clone(),
                cert_pem: p.cert.clone(),
                address: p.address,
            })
            .collect();
        let (peers, mut allowed) = Peers::new(
            (&cfg.name, identity.party_id(), cfg.listen),
            &specs,
            Duration::from_millis(cfg.timeouts.propose_ms),
            my_tls,
        )?;
        let peers = Arc::new(peers);
        let mut by_fingerprint = HashMap::new();
        for c in &cfg.clients {
            let der = transport::cert_der_from_pem(&c.cert)?;
            by_fingerprint.insert(transport::fingerprint(&der), (c.clone(), der.clone()));
            allowed.push(der);
        }
        let policy = load_policy(&cfg)?;
        let audit = AuditLog::open(&store)?;
        let primes = PrimePool::new(store.clone(), cfg.primes.clone());
        let runtime = if cfg.presign.any() {
            Some(PoolRuntime::start(
                cfg.presign.parallel.max(1) * 2 + 2,
                cfg.presign.idle_priority,
            )?)
        } else {
            None
        };
        let metrics = Metrics::new();
        let sessions = Arc::new(Sessions::new(
            &cfg.name,
            cfg.limits.max_sessions,
            cfg.timeouts.propose_ms,
            identity.clone(),
            peers.clone(),
            metrics.clone(),
        ));
        Ok(Arc::new(Node {
            admission: Admission::new(&cfg.name, &cfg.limits),
            claims: Claims::new(&cfg.name),
            store,
            identity,
            peers,
            clients: Clients { by_fingerprint },
            allowed,
            sessions,
            aux_lock: tokio::sync::Mutex::new(()),
            primes,
            pool: PresignPool {
                wake: tokio::sync::Notify::new(),
                runtime,
            },
            metrics,
            policy: PolicyState {
                current: RwLock::new(Arc::new(policy)),
                error: Mutex::new(None),
            },
            ledger: Arc::default(),
            audit,
            frost_shares: Mutex::default(),
            cfg,
        }))
    }

    /// Config as loaded.
    pub fn cfg(&self) -> &NodeConfig {
        &self.cfg
    }

    /// The sealed store.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The identity key that signs our envelopes.
    pub fn identity(&self) -> &Arc<IdentityKey> {
        &self.identity
    }

    /// The cluster's parties and their channels.
    pub fn peers(&self) -> &Arc<Peers> {
        &self.peers
    }

    /// The session registry.
    pub fn sessions(&self) -> &Arc<Sessions> {
        &self.sessions
    }

    /// The one-at-a-time rules.
    pub fn claims(&self) -> &Claims {
        &self.claims
    }

    /// Serialises "load or generate aux info" at the coordinator.
    pub fn aux_lock(&self) -> &tokio::sync::Mutex<()> {
        &self.aux_lock
    }

    /// The gate for client requests that start sessions.
    pub fn admission(&self) -> &Admission {
        &self.admission
    }

    /// The safe-prime pool.
    pub fn primes(&self) -> &Arc<PrimePool> {
        &self.primes
    }

    /// Wakes the presign refill loop (a presignature was consumed).
    pub fn presign_wake(&self) -> &tokio::sync::Notify {
        &self.pool.wake
    }

    /// The presign pool's low-priority runtime (`None` when the pool is off).
    pub fn pool_runtime(&self) -> Option<&PoolRuntime> {
        self.pool.runtime.as_ref()
    }

    /// Prometheus metrics and the pool counters Health reports.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// Amounts reserved by requests in flight (policy limits).
    pub fn ledger(&self) -> &Arc<Ledger> {
        &self.ledger
    }

    /// The audit log of policy decisions.
    pub fn audit(&self) -> &AuditLog {
        &self.audit
    }

    /// The FROST share of `key_id` decoded earlier, if any (the caller
    /// checks it against the key's record).
    pub fn cached_frost_share(&self, key_id: &str) -> Option<Arc<tss_core::frost::FrostShare>> {
        self.frost_shares
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(key_id)
            .cloned()
    }

    /// Keeps a decoded FROST share of `key_id` for later requests.
    pub fn cache_frost_share(&self, key_id: &str, share: Arc<tss_core::frost::FrostShare>) {
        self.frost_shares
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(key_id.to_owned(), share);
    }

    /// Drops the decoded share of `key_id` (its stored share was put aside).
    pub fn forget_frost_share(&self, key_id: &str) {
        self.frost_shares
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(key_id);
    }

    /// The policy in force.
    pub fn policy(&self) -> Arc<Policy> {
        self.policy
            .current
            .read()
            .map_or_else(|p| p.into_inner().clone(), |g| g.clone())
    }

    /// Why the last policy reload was refused, if it was.
    pub fn policy_error(&self) -> Option<String> {
        self.policy
            .error
            .lock()
            .map_or_else(|p| p.into_inner().clone(), |g| g.clone())
    }

    /// Re-reads the policy file (SIGHUP). A file that does not load is
    /// refused and the policy in force stays.
    pub fn reload_policy(&self) -> Result<(), PolicyError> {
        let result = load_policy(&self.cfg);
        let mut err = self.policy.error.lock().unwrap_or_else(|p| p.into_inner());
        match result {
            Ok(p) => {
                *self
                    .policy
                    .current
                    .write()
                    .unwrap_or_else(|p| p.into_inner()) = Arc::new(p);
                *err = None;
                Ok(())
            }
            Err(e) => {
                *err = Some(e.to_string());
                Err(e)
            }
        }
    }

    /// Certificates allowed to connect: the peers' and the clients'.
    pub fn allowed_certs(&self) -> Vec<Vec<u8>> {
        self.allowed.clone()
    }

    /// The client entry of a TLS fingerprint.
    pub fn client(&self, fp: &Fingerprint) -> Option<&ClientEntry> {
        self.clients.by_fingerprint.get(fp).map(|(c, _)| c)
    }

    /// The client entry of a TLS fingerprint and its pinned certificate (DER).
    pub fn client_with_cert(&self, fp: &Fingerprint) -> Option<(&ClientEntry, &[u8])> {
        self.clients
            .by_fingerprint
            .get(fp)
            .map(|(c, d)| (c, d.as_slice()))
    }
}

/// "alice+bob": names of a key's signers, for metrics and listings.
pub fn pair_label(record: &keygen::record::KeyRecord, signers: &[u16]) -> String {
    signers
        .iter()
        .map(|&s| {
            record
                .parties
                .get(usize::from(s))
                .map_or_else(|| format!("#{s}"), |p| p.name.clone())
        })
        .collect::<Vec<_>>()
        .join("+")
}
