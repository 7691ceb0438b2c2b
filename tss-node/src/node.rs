//! The node's shared state: identity, store, pinned parties and clients, the
//! session registry, and the machinery that runs one protocol session.
//!
//! A session's engine runs on a blocking thread (`spawn_blocking` +
//! `futures::executor::block_on`): CGGMP24 rounds are CPU-heavy and must not
//! stall the reactor that answers Health and delivers messages. Outgoing
//! envelopes go to one ordered queue per peer, each drained by its own task.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::channel::mpsc;
use futures::StreamExt;
use proto::v1::peer_client::PeerClient;
use round_based::MpcParty;
use tokio::sync::{oneshot, OwnedSemaphorePermit, Semaphore};
use tonic::transport::Channel;
use tss_core::ecdsa::EngineError;
use tss_core::envelope::Envelope;
use tss_core::identity::{IdentityKey, PartyId};
use tss_core::session::{self, IncomingStream, OutgoingSink, Received, SessionInfo};
use tss_core::store::Store;

use crate::claims::{Claim, ClaimSet};
use crate::config::{ClientEntry, NodeConfig};
use crate::pool::PrimePool;
use crate::tls;

/// Largest gRPC message the Peer service accepts or sends.
pub const MAX_PEER_MESSAGE: usize = tss_core::envelope::Protocol::MAX_ENVELOPE + 4096;

/// A party of the cluster (ourselves included).
pub struct Party {
    /// Name.
    pub name: String,
    /// Pinned identity key.
    pub id: PartyId,
    /// Fingerprint of its pinned TLS certificate.
    pub fingerprint: tls::Fingerprint,
    /// Listener address.
    pub address: SocketAddr,
    /// Client for its Peer service (`None` for ourselves).
    pub client: Option<PeerClient<Channel>>,
}

/// Envelopes a session buffers before its engine reads them. Every party
/// sends at most a handful of messages per round, so this is generous.
const INBOX_DEPTH: usize = 32;

/// How long a session that failed to send waits for its engine's own
/// verdict, which may name a culprit ([`Registered::run_recorded`]).
const BLAME_GRACE: Duration = Duration::from_secs(2);

/// A session waiting for messages or running.
struct Slot {
    info: Arc<SessionInfo>,
    inbound: mpsc::Sender<Received>,
    start: Option<oneshot::Sender<()>>,
    /// Tells the session's runner why it was ended (an abort), even while
    /// its engine is busy computing.
    ended: oneshot::Sender<SessionFailure>,
    /// Distinguishes a re-registered id from the one that owned it before.
    generation: u64,
}

impl Slot {
    /// Removed from the registry: tells its runner why.
    fn end(self, why: SessionFailure) {
        let _ = self.ended.send(why);
    }
}

/// The node.
pub struct Node {
    /// Config as loaded.
    pub cfg: NodeConfig,
    /// Sealed store.
    pub store: Store,
    /// Identity key that signs our envelopes.
    pub identity: Arc<IdentityKey>,
    /// Our identity.
    pub me: PartyId,
    /// All parties sorted by identity (their keygen index order).
    pub parties: Vec<Party>,
    /// Pinned clients and their certificates (DER), by fingerprint.
    clients: HashMap<tls::Fingerprint, (ClientEntry, Vec<u8>)>,
    /// DER certificates of the peers and clients (pinned by the TLS server).
    allowed: Vec<Vec<u8>>,
    sessions: Mutex<HashMap<[u8; 32], Slot>>,
    next_generation: std::sync::atomic::AtomicU64,
    aux_runs: ClaimSet<[u8; 32]>,
    keygens: ClaimSet<String>,
    signing: ClaimSet<[u8; 32]>,
    presignatures: ClaimSet<[u8; 32]>,
    proposed: Mutex<HashMap<PartyId, usize>>,
    /// Serialises "load or generate aux info" at the coordinator.
    pub aux_lock: tokio::sync::Mutex<()>,
    permits: Arc<Semaphore>,
    /// Gate for client requests that start sessions.
    pub admission: crate::admission::Admission,
    /// Safe-prime pool.
    pub primes: Arc<PrimePool>,
    /// Presignature pool counters.
    pub counters: crate::presign::Counters,
    /// Wakes the presign refill loop (a presignature was consumed).
    pub presign_wake: tokio::sync::Notify,
    /// The presign pool's low-priority runtime (`None` when the pool is off).
    pub pool_rt: Option<crate::presign::PoolRuntime>,
    /// Prometheus metrics.
    pub metrics: Arc<crate::metrics::Metrics>,
    /// The signing policy in force (replaced on SIGHUP).
    policy: std::sync::RwLock<Arc<crate::policy::Policy>>,
    /// Why the last reload was refused.
    policy_error: Mutex<Option<String>>,
    /// Amounts reserved by requests in flight (policy limits).
    pub ledger: Arc<crate::spend::Ledger>,
    /// The audit log of policy decisions.
    pub audit: crate::audit::AuditLog,
}

/// Reads the policy file named by the config (none: nothing is signed).
fn load_policy(cfg: &NodeConfig) -> anyhow::Result<crate::policy::Policy> {
    use anyhow::Context;
    let Some(path) = &cfg.policy else {
        return Ok(crate::policy::Policy::deny_all());
    };
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read policy {}", path.display()))?;
    let names: Vec<&str> = cfg.clients.iter().map(|c| c.name.as_str()).collect();
    crate::policy::Policy::parse(&text, &names)
        .map_err(|e| anyhow::anyhow!("invalid policy {}: {e}", path.display()))
}

/// A registered session: owns its inbound queue and a session permit, and
/// unregisters itself when dropped.
pub struct Registered {
    node: Arc<Node>,
    /// Session facts.
    pub info: Arc<SessionInfo>,
    inbound: Option<mpsc::Receiver<Received>>,
    start: Option<oneshot::Receiver<()>>,
    ended: Option<oneshot::Receiver<SessionFailure>>,
    generation: u64,
    proposer: Option<PartyId>,
    _permit: OwnedSemaphorePermit,
}

impl Drop for Registered {
    fn drop(&mut self) {
        self.node.unregister(&self.info.id, self.generation);
        if let Some(p) = self.proposer {
            if let Ok(mut held) = self.node.proposed.lock() {
                if let Some(n) = held.get_mut(&p) {
                    *n = n.saturating_sub(1);
                }
            }
        }
    }
}

/// Keeps an aux-info run marked as in progress (see [`Node::aux_in_progress`]).
pub type AuxGuard = Claim<[u8; 32]>;
/// Holds a signing request claimed (see [`Node::claim_request`]).
pub type RequestClaim = Claim<[u8; 32]>;
/// Holds a key id reserved for one keygen (see [`Node::reserve_key`]).
pub type KeyReservation = Claim<String>;

/// Why a session did not produce its output.
#[derive(Clone, Debug)]
pub enum SessionFailure {
    /// It did not finish in time.
    Timeout(Duration),
    /// A peer could not be reached while sending to it.
    Unreachable {
        /// Party name.
        peer: String,
        /// Transport error.
        reason: String,
    },
    /// A party sent something invalid.
    Misbehaved {
        /// Party name.
        culprit: String,
        /// What was wrong.
        reason: String,
    },
    /// Aborted by a peer or locally.
    Aborted(String),
    /// The engine failed otherwise.
    Engine(String),
}

impl std::fmt::Display for SessionFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SessionFailure::Timeout(d) => write!(f, "timed out after {} ms", d.as_millis()),
            SessionFailure::Unreachable { peer, reason } => {
                write!(f, "{peer} unreachable: {reason}")
            }
            SessionFailure::Misbehaved { culprit, reason } => {
                write!(f, "{culprit} sent an invalid message: {reason}")
            }
            SessionFailure::Aborted(r) => write!(f, "aborted: {r}"),
            SessionFailure::Engine(r) => write!(f, "protocol failed: {r}"),
        }
    }
}

impl Node {
    /// Builds the node from its config, opened store and secrets.
    pub fn new(
        cfg: NodeConfig,
        store: Store,
        identity: IdentityKey,
        my_tls: &tls::TlsIdentity,
    ) -> anyhow::Result<Arc<Self>> {
        let me = identity.party_id();
        let mut parties = vec![Party {
            name: cfg.name.clone(),
            id: me,
            fingerprint: my_tls.fingerprint(),
            address: cfg.listen,
            client: None,
        }];
        let mut allowed = Vec::new();
        for p in &cfg.peers {
            let der = tls::cert_der_from_pem(&p.cert)?;
            allowed.push(der.clone());
            let id = PartyId::from_hex(&p.identity)?;
            if id == me {
                anyhow::bail!("peer {} has this node's own identity", p.name);
            }
            let channel = tls::connect_lazy(
                p.address,
                tls::client_config(my_tls, der.clone())?,
                Duration::from_millis(cfg.timeouts.propose_ms),
            )?;
            let client = PeerClient::new(channel)
                .max_decoding_message_size(MAX_PEER_MESSAGE)
                .max_encoding_message_size(MAX_PEER_MESSAGE);
            parties.push(Party {
                name: p.name.clone(),
                id,
                fingerprint: tls::fingerprint(&der),
                address: p.address,
                client: Some(client),
            });
        }
        parties.sort_by_key(|p| p.id);
        let mut clients = HashMap::new();
        for c in &cfg.clients {
            let der = tls::cert_der_from_pem(&c.cert)?;
            clients.insert(tls::fingerprint(&der), (c.clone(), der.clone()));
            allowed.push(der);
        }
        let policy = load_policy(&cfg)?;
        let audit = crate::audit::AuditLog::open(&store)?;
        let primes = PrimePool::new(store.clone(), cfg.primes.clone());
        let pool_rt = if cfg.presign.target > 0 {
            Some(crate::presign::PoolRuntime::start(
                cfg.presign.parallel.max(1) * 2 + 2,
                cfg.presign.idle_priority,
            )?)
        } else {
            None
        };
        Ok(Arc::new(Node {
            permits: Arc::new(Semaphore::new(cfg.limits.max_sessions)),
            admission: crate::admission::Admission::new(&cfg.name, &cfg.limits),
            cfg,
            store,
            identity: Arc::new(identity),
            me,
            parties,
            clients,
            allowed,
            sessions: Mutex::new(HashMap::new()),
            next_generation: std::sync::atomic::AtomicU64::new(1),
            aux_runs: ClaimSet::default(),
            keygens: ClaimSet::default(),
            signing: ClaimSet::default(),
            presignatures: ClaimSet::default(),
            proposed: Mutex::new(HashMap::new()),
            aux_lock: tokio::sync::Mutex::new(()),
            primes,
            counters: Default::default(),
            presign_wake: tokio::sync::Notify::new(),
            pool_rt,
            metrics: crate::metrics::Metrics::new(),
            policy: std::sync::RwLock::new(Arc::new(policy)),
            policy_error: Mutex::new(None),
            ledger: Arc::default(),
            audit,
        }))
    }

    /// The policy in force.
    pub fn policy(&self) -> Arc<crate::policy::Policy> {
        self.policy
            .read()
            .map_or_else(|p| p.into_inner().clone(), |g| g.clone())
    }

    /// Why the last policy reload was refused, if it was.
    pub fn policy_error(&self) -> Option<String> {
        self.policy_error
            .lock()
            .map_or_else(|p| p.into_inner().clone(), |g| g.clone())
    }

    /// Re-reads the policy file (SIGHUP). A file that does not load is
    /// refused and the policy in force stays.
    pub fn reload_policy(&self) -> Result<(), String> {
        let result = load_policy(&self.cfg).map_err(|e| format!("{e:#}"));
        let mut err = self.policy_error.lock().unwrap_or_else(|p| p.into_inner());
        match result {
            Ok(p) => {
                *self.policy.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(p);
                *err = None;
                Ok(())
            }
            Err(e) => {
                *err = Some(e.clone());
                Err(e)
            }
        }
    }

    /// Certificates allowed to connect: the peers' and the clients'.
    pub fn allowed_certs(&self) -> Vec<Vec<u8>> {
        self.allowed.clone()
    }

    /// The client entry of a TLS fingerprint.
    pub fn client(&self, fp: &tls::Fingerprint) -> Option<&ClientEntry> {
        self.clients.get(fp).map(|(c, _)| c)
    }

    /// The client entry of a TLS fingerprint and its pinned certificate (DER).
    pub fn client_with_cert(&self, fp: &tls::Fingerprint) -> Option<(&ClientEntry, &[u8])> {
        self.clients.get(fp).map(|(c, d)| (c, d.as_slice()))
    }

    /// The party with a TLS fingerprint (not ourselves).
    pub fn peer_by_fingerprint(&self, fp: &tls::Fingerprint) -> Option<&Party> {
        self.parties
            .iter()
            .find(|p| p.id != self.me && &p.fingerprint == fp)
    }

    /// The party with an identity.
    pub fn party(&self, id: &PartyId) -> Option<&Party> {
        self.parties.iter().find(|p| &p.id == id)
    }

    /// Our index in the sorted party list.
    pub fn my_index(&self) -> u16 {
        // `parties` always contains ourselves (inserted in `new`).
        self.parties
            .iter()
            .position(|p| p.id == self.me)
            .unwrap_or(0) as u16
    }

    /// "alice+bob": names of a key's signers, for metrics and listings.
    pub fn pair_label(&self, record: &keygen::record::KeyRecord, signers: &[u16]) -> String {
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

    /// Identities of all parties in index order.
    pub fn party_ids(&self) -> Vec<PartyId> {
        self.parties.iter().map(|p| p.id).collect()
    }

    /// Marks aux-info run `id` as in progress until the guard drops (after
    /// its result is sealed). `None` if another run is in progress here:
    /// a node takes part in one aux-info run at a time.
    pub fn aux_in_progress(&self, id: [u8; 32]) -> Option<AuxGuard> {
        self.aux_runs.try_claim(id, true)
    }

    /// Reserves a key id for one keygen at a time (coordinated or joined).
    pub fn reserve_key(&self, key_id: &str) -> Result<KeyReservation, crate::error::ApiError> {
        self.keygens
            .try_claim(key_id.to_owned(), false)
            .ok_or_else(|| {
                crate::error::ApiError::AlreadyExists(format!(
                    "a keygen for key {key_id} is already running at {}",
                    self.cfg.name
                ))
            })
    }

    /// Whether a keygen of `key_id` runs here now (coordinated or joined).
    pub fn keygen_running(&self, key_id: &str) -> bool {
        self.keygens.is_claimed(&key_id.to_owned())
    }

    /// Claims a signing request (key, request id, digest) while it is being
    /// signed here, so that the same request cannot run twice at once
    /// through two coordinators (any two signer pairs share a party).
    pub fn claim_request(&self, id: [u8; 32]) -> Option<RequestClaim> {
        self.signing.try_claim(id, false)
    }

    /// Claims a presignature id for one coordinator request here.
    pub fn claim_presignature(&self, id: [u8; 32]) -> Option<Claim<[u8; 32]>> {
        self.presignatures.try_claim(id, false)
    }

    /// Whether a presignature id is claimed by a request here now.
    pub fn presignature_claimed(&self, id: &[u8; 32]) -> bool {
        self.presignatures.is_claimed(id)
    }

    /// Whether our part of aux-info run `id` is still in progress.
    pub fn aux_running(&self, id: &[u8; 32]) -> bool {
        self.aux_runs.is_claimed(id)
    }

    /// Session info of a run of all parties (aux info, keygen), in keygen
    /// index order.
    pub fn ceremony_session(
        &self,
        id: [u8; 32],
        protocol: tss_core::envelope::Protocol,
    ) -> SessionInfo {
        SessionInfo {
            id,
            protocol,
            me: self.my_index(),
            parties: self.party_ids(),
        }
    }

    /// Sessions currently registered.
    pub fn sessions_running(&self) -> usize {
        self.sessions.lock().map(|s| s.len()).unwrap_or(0)
    }

    /// Registers a session so that its messages are accepted. Fails when the
    /// id is in use or the node runs its maximum of sessions. `proposer` is
    /// the peer that asked for it: one peer may hold at most a quarter of
    /// the session slots, so that it cannot starve the others.
    pub fn register(
        self: &Arc<Self>,
        info: SessionInfo,
        needs_start: bool,
        proposer: Option<PartyId>,
    ) -> Result<Registered, crate::error::ApiError> {
        use crate::error::ApiError;
        let max = self.cfg.limits.max_sessions;
        let mut s = self
            .sessions
            .lock()
            .map_err(|_| ApiError::Internal("session registry poisoned".into()))?;
        if let Some(p) = proposer {
            let mut held = self
                .proposed
                .lock()
                .map_err(|_| ApiError::Internal("quota poisoned".into()))?;
            let n = held.entry(p).or_insert(0);
            if *n >= (max / 4).max(2) {
                return Err(ApiError::ResourceExhausted(format!(
                    "{} already runs {n} sessions for that party; retry later",
                    self.cfg.name
                )));
            }
        }
        let permit = self.permits.clone().try_acquire_owned().map_err(|_| {
            ApiError::ResourceExhausted(format!(
                "node {} already runs {max} sessions; retry later",
                self.cfg.name
            ))
        })?;
        let info = Arc::new(info);
        if s.contains_key(&info.id) {
            return Err(ApiError::AlreadyExists(
                "a session with this id is already running".into(),
            ));
        }
        let (tx, rx) = mpsc::channel(INBOX_DEPTH);
        let (ended_tx, ended_rx) = oneshot::channel();
        let (start_tx, start_rx) = if needs_start {
            let (a, b) = oneshot::channel();
            (Some(a), Some(b))
        } else {
            (None, None)
        };
        if let Some(p) = proposer {
            // Counted until the Registered is dropped (see its Drop).
            let mut held = self
                .proposed
                .lock()
                .map_err(|_| ApiError::Internal("quota poisoned".into()))?;
            *held.entry(p).or_insert(0) += 1;
        }
        let generation = self
            .next_generation
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        s.insert(
            info.id,
            Slot {
                info: info.clone(),
                inbound: tx,
                start: start_tx,
                ended: ended_tx,
                generation,
            },
        );
        Ok(Registered {
            node: self.clone(),
            info,
            inbound: Some(rx),
            start: start_rx,
            ended: Some(ended_rx),
            generation,
            proposer,
            _permit: permit,
        })
    }

    fn unregister(&self, id: &[u8; 32], generation: u64) {
        if let Ok(mut s) = self.sessions.lock() {
            if s.get(id).is_some_and(|slot| slot.generation == generation) {
                s.remove(id);
            }
        }
    }

    /// Hands a received envelope to its session.
    pub fn deliver(&self, envelope: Envelope, from: PartyId) -> Result<(), crate::error::ApiError> {
        use crate::error::ApiError;
        let mut s = self
            .sessions
            .lock()
            .map_err(|_| ApiError::Internal("session registry poisoned".into()))?;
        let slot = s.get_mut(&envelope.session_id).ok_or_else(|| {
            ApiError::NotFound("no such session (finished, aborted or never proposed)".into())
        })?;
        if !slot.info.parties.contains(&from) {
            return Err(ApiError::PermissionDenied(
                "sender is not a party of this session".into(),
            ));
        }
        // Cheap checks before buffering; the session checks everything else
        // (signature, sequence) in order.
        let sender_ok = slot.info.parties.get(usize::from(envelope.sender)) == Some(&from);
        let recipient_ok = envelope.recipient.is_none_or(|r| r == slot.info.me);
        if envelope.protocol != slot.info.protocol || !sender_ok || !recipient_ok {
            return Err(ApiError::InvalidArgument(
                "envelope does not fit this session (protocol, sender or recipient)".into(),
            ));
        }
        slot.inbound
            .try_send(Received { envelope, from })
            .map_err(|_| ApiError::ResourceExhausted("session inbox full".into()))
    }

    /// Signals a registered session that all parties accepted.
    pub fn start(&self, id: &[u8; 32], from: PartyId) -> Result<(), crate::error::ApiError> {
        use crate::error::ApiError;
        let mut s = self
            .sessions
            .lock()
            .map_err(|_| ApiError::Internal("session registry poisoned".into()))?;
        let slot = s
            .get_mut(id)
            .ok_or_else(|| ApiError::NotFound("no such session".into()))?;
        if !slot.info.parties.contains(&from) {
            return Err(ApiError::PermissionDenied(
                "not a party of this session".into(),
            ));
        }
        if let Some(tx) = slot.start.take() {
            let _ = tx.send(());
        }
        Ok(())
    }

    /// Ends a session early, if `from` is one of its parties: its runner
    /// fails with `why` at once, and its engine sees its inbox close.
    pub fn abort(&self, id: &[u8; 32], from: PartyId, why: SessionFailure) {
        self.end_sessions(from, &why, |s| s == id);
    }

    /// Ends every session `from` is a party of (it restarted, so they can
    /// never finish), each failing with `why`; returns how many.
    pub fn abort_all_of(&self, from: PartyId, why: &SessionFailure) -> usize {
        self.end_sessions(from, why, |_| true)
    }

    /// Removes the sessions `which` selects among those `from` is a party
    /// of, telling each runner `why`; returns how many.
    fn end_sessions(
        &self,
        from: PartyId,
        why: &SessionFailure,
        which: impl Fn(&[u8; 32]) -> bool,
    ) -> usize {
        let Ok(mut s) = self.sessions.lock() else {
            return 0;
        };
        let ended: Vec<Slot> = s
            .extract_if(|id, slot| which(id) && slot.info.parties.contains(&from))
            .map(|(_, slot)| slot)
            .collect();
        let n = ended.len();
        for slot in ended {
            slot.end(why.clone());
        }
        n
    }

    /// Tells every peer this node has just started, so that each ends the
    /// sessions it still holds with this node's previous process
    /// ([`Node::abort_all_of`]). One try per peer, all at once, each
    /// bounded by `propose_ms`: a peer that is down has no session to end,
    /// and one that cannot be reached ends them at their timeouts.
    pub async fn announce_start(&self) {
        let wait = Duration::from_millis(self.cfg.timeouts.propose_ms);
        let peers = self
            .parties
            .iter()
            .filter_map(|p| Some((p.name.clone(), p.client.clone()?)));
        let calls = peers.map(|(name, mut c)| async move {
            let req = proto::v1::AbortRequest {
                session_id: vec![],
                reason: format!("{} restarted", self.cfg.name),
                all_sessions: true,
            };
            match tokio::time::timeout(wait, c.abort(req)).await {
                Ok(Ok(_)) => tracing::debug!(peer = %name, "told peer of this start"),
                Ok(Err(s)) => {
                    tracing::debug!(peer = %name, status = %s, "could not tell peer of this start")
                }
                Err(_) => tracing::debug!(peer = %name, "peer did not answer the start notice"),
            }
        });
        futures::future::join_all(calls).await;
    }

    /// Tells the other parties of a session to drop it.
    pub async fn send_abort(&self, info: &SessionInfo, reason: &str) {
        for id in &info.parties {
            if let Some(mut c) = self.party(id).and_then(|p| p.client.clone()) {
                let req = proto::v1::AbortRequest {
                    session_id: info.id.to_vec(),
                    reason: reason.to_owned(),
                    all_sessions: false,
                };
                let _ = tokio::time::timeout(
                    Duration::from_millis(self.cfg.timeouts.propose_ms),
                    c.abort(req),
                )
                .await;
            }
        }
    }
}

/// The `round-based` party an engine runs on.
pub type EngineParty<M> = MpcParty<M, (IncomingStream<M>, OutgoingSink<M>)>;

impl Registered {
    /// Waits for the coordinator's Start (participants of multi-party runs).
    pub async fn wait_start(&mut self, timeout: Duration) -> Result<(), SessionFailure> {
        if let Some(rx) = self.start.take() {
            match tokio::time::timeout(timeout, rx).await {
                Ok(Ok(())) => Ok(()),
                Ok(Err(_)) => Err(SessionFailure::Aborted(
                    "the coordinator aborted the session".into(),
                )),
                Err(_) => Err(SessionFailure::Timeout(timeout)),
            }
        } else {
            Ok(())
        }
    }

    /// Runs an engine on a blocking thread over this session's delivery.
    pub async fn run<M, T, F, Fut>(self, timeout: Duration, engine: F) -> Result<T, SessionFailure>
    where
        M: serde::Serialize + serde::de::DeserializeOwned + Send + 'static,
        T: Send + 'static,
        F: FnOnce(EngineParty<M>) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = Result<T, EngineError>>,
    {
        self.run_recorded(timeout, None, engine).await
    }

    /// Like [`Registered::run`], keeping every envelope sent and accepted in
    /// `recorder` (keygen transcripts).
    pub async fn run_recorded<M, T, F, Fut>(
        mut self,
        timeout: Duration,
        recorder: Option<session::Recorder>,
        engine: F,
    ) -> Result<T, SessionFailure>
    where
        M: serde::Serialize + serde::de::DeserializeOwned + Send + 'static,
        T: Send + 'static,
        F: FnOnce(EngineParty<M>) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = Result<T, EngineError>>,
    {
        let node = self.node.clone();
        let info = self.info.clone();
        let Some(inbound) = self.inbound.take() else {
            return Err(SessionFailure::Engine("session already ran".into()));
        };
        let (out_tx, out_rx) = mpsc::unbounded();
        let (inc, out) = session::delivery::<M>(
            info.clone(),
            node.identity.clone(),
            inbound,
            out_tx,
            recorder,
        );
        let (fail_tx, mut fail_rx) = tokio::sync::mpsc::unbounded_channel::<SessionFailure>();
        let pump = tokio::spawn(pump(node.clone(), info.clone(), out_rx, fail_tx));
        let job = tokio::task::spawn_blocking(move || {
            futures::executor::block_on(engine(MpcParty::connected((inc, out))))
        });
        let ended = self.ended.take();
        let ended = async move {
            match ended {
                Some(rx) => rx
                    .await
                    .unwrap_or_else(|_| SessionFailure::Aborted("session ended (aborted)".into())),
                None => std::future::pending().await,
            }
        };
        let job = tokio::time::timeout(timeout, job);
        tokio::pin!(job);
        let result = tokio::select! {
            biased;
            r = &mut job => match r {
                Err(_) => Err(SessionFailure::Timeout(timeout)),
                Ok(Err(e)) => Err(SessionFailure::Engine(format!("engine task failed: {e}"))),
                Ok(Ok(Ok(v))) => Ok(v),
                Ok(Ok(Err(e))) => Err(self.explain(e, &mut fail_rx)),
            },
            Some(f) = fail_rx.recv() => {
                // A peer that refuses our envelopes has often just ended
                // the session over a party's invalid message, which our
                // engine is about to refuse too: its verdict names the
                // culprit, so it wins if it comes at once.
                match tokio::time::timeout(BLAME_GRACE, &mut job).await {
                    Ok(Ok(Ok(Err(e @ EngineError::Misbehaved { .. })))) => {
                        Err(self.explain(e, &mut fail_rx))
                    }
                    _ => Err(f),
                }
            }
            // Ended by a party (or its restart) while the engine computes:
            // the engine stops at its next read of the closed inbox, but
            // the session (its slot, and an aux-info run's claim) ends now.
            why = ended => Err(why),
        };
        // Dropping `self` unregisters the session: a still-running engine sees
        // its inbox close and stops.
        // The pump ends by itself once the engine's sink is dropped and the
        // queued envelopes are sent (each send is bounded by a timeout).
        drop(self);
        drop(pump);
        result
    }

    fn explain(
        &self,
        e: EngineError,
        fails: &mut tokio::sync::mpsc::UnboundedReceiver<SessionFailure>,
    ) -> SessionFailure {
        if !matches!(e, EngineError::Misbehaved { .. }) {
            if let Ok(f) = fails.try_recv() {
                return f;
            }
        }
        match e {
            EngineError::Misbehaved { culprit, reason } => {
                let name = self
                    .info
                    .parties
                    .get(usize::from(culprit))
                    .and_then(|id| self.node.party(id))
                    .map_or_else(|| format!("party #{culprit}"), |p| p.name.clone());
                SessionFailure::Misbehaved {
                    culprit: name,
                    reason,
                }
            }
            EngineError::Closed => {
                SessionFailure::Aborted("session closed (aborted by a party or timed out)".into())
            }
            other => SessionFailure::Engine(other.to_string()),
        }
    }
}

/// Sends a session's outgoing envelopes: one ordered queue and task per peer.
async fn pump(
    node: Arc<Node>,
    info: Arc<SessionInfo>,
    mut out: mpsc::UnboundedReceiver<Envelope>,
    fail: tokio::sync::mpsc::UnboundedSender<SessionFailure>,
) {
    let mut queues: HashMap<u16, tokio::sync::mpsc::UnboundedSender<Vec<u8>>> = HashMap::new();
    let mut tasks = Vec::new();
    for (j, id) in info.parties.iter().enumerate() {
        if j == usize::from(info.me) {
            continue;
        }
        let Some(party) = node.party(id) else {
            continue;
        };
        let Some(mut client) = party.client.clone() else {
            continue;
        };
        let name = party.name.clone();
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Vec<u8>>();
        queues.insert(j as u16, tx);
        let fail = fail.clone();
        let metrics = node.metrics.clone();
        let per_call = Duration::from_millis(node.cfg.timeouts.propose_ms.max(1000) * 3);
        tasks.push(tokio::spawn(async move {
            while let Some(bytes) = rx.recv().await {
                let req = proto::v1::EnvelopeBytes { envelope: bytes };
                let r = tokio::time::timeout(per_call, client.deliver(req)).await;
                let err = match r {
                    Ok(Ok(_)) => continue,
                    Ok(Err(status)) => format!("{}: {}", status.code(), status.message()),
                    Err(_) => format!("no answer within {} ms", per_call.as_millis()),
                };
                metrics.peer_rpc_error(&name);
                let _ = fail.send(SessionFailure::Unreachable {
                    peer: name.clone(),
                    reason: err,
                });
                return;
            }
        }));
    }
    while let Some(env) = out.next().await {
        let bytes = env.encode();
        match env.recipient {
            None => {
                for q in queues.values() {
                    let _ = q.send(bytes.clone());
                }
            }
            Some(r) => {
                if let Some(q) = queues.get(&r) {
                    let _ = q.send(bytes);
                }
            }
        }
    }
    drop(queues);
    for t in tasks {
        let _ = t.await;
    }
}
