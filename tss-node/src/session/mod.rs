//! Sessions: the registry of running protocol sessions (which envelope
//! goes to which engine, start signals, aborts, per-peer quotas) and the
//! runner that drives one engine over its session's delivery.
//!
//! Both roles use it: the coordinator registers the sessions it proposes,
//! a co-signer the sessions it accepts. Nothing here knows what a session
//! computes: [`crate::protocol`] does.

pub mod idle;
mod runner;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::channel::mpsc;
use tokio::sync::{oneshot, OwnedSemaphorePermit, Semaphore};
use tss_core::envelope::Envelope;
use tss_core::identity::{IdentityKey, PartyId};
use tss_core::session::{Received, SessionInfo};

use crate::error::ApiError;
use crate::metrics::Metrics;
use crate::transport::peers::Peers;

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

/// The session registry of this node.
pub struct Sessions {
    name: String,
    max: usize,
    propose_ms: u64,
    identity: Arc<IdentityKey>,
    peers: Arc<Peers>,
    metrics: Arc<Metrics>,
    slots: Mutex<HashMap<[u8; 32], Slot>>,
    next_generation: AtomicU64,
    permits: Arc<Semaphore>,
    proposed: Mutex<HashMap<PartyId, usize>>,
}

/// A registered session: owns its inbound queue and a session permit, and
/// unregisters itself when dropped.
pub struct Registered {
    sessions: Arc<Sessions>,
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
        self.sessions.unregister(&self.info.id, self.generation);
        if let Some(p) = self.proposer {
            if let Ok(mut held) = self.sessions.proposed.lock() {
                if let Some(n) = held.get_mut(&p) {
                    *n = n.saturating_sub(1);
                }
            }
        }
    }
}

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
impl Sessions {
    /// An empty registry holding at most `max` sessions at once.
    pub fn new(
        name: &str,
        max: usize,
        propose_ms: u64,
        identity: Arc<IdentityKey>,
        peers: Arc<Peers>,
        metrics: Arc<Metrics>,
    ) -> Self {
        Sessions {
            name: name.to_owned(),
            max,
            propose_ms,
            identity,
            peers,
            metrics,
            slots: Mutex::new(HashMap::new()),
            next_generation: AtomicU64::new(1),
            permits: Arc::new(Semaphore::new(max)),
            proposed: Mutex::new(HashMap::new()),
        }
    }

    /// Sessions currently registered.
    pub fn running(&self) -> usize {
        self.slots.lock().map(|s| s.len()).unwrap_or(0)
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
    ) -> Result<Registered, ApiError> {
        let max = self.max;
        let mut s = self
            .slots
            .lock()
            .map_err(|_| ApiError::Internal("session registry poisoned".into()))?;
        if let Some(p) = proposer {
            let mut held = self
                .proposed
                .lock()
                .map_err(|_| ApiError::Internal("quota poisoned".into()))?;
            let n = held.entry(p).or_insert(0);
            if *n >= (max / 4).max(2) {
                return Err(ApiError::Busy(format!(
                    "{} already runs {n} sessions for that party; retry later",
                    self.name
                )));
            }
        }
        let permit = self.permits.clone().try_acquire_owned().map_err(|_| {
            ApiError::Busy(format!(
                "node {} already runs {max} sessions; retry later",
                self.name
            ))
        })?;
        let info = Arc::new(info);
        if s.contains_key(&info.id) {
            return Err(ApiError::Conflict(
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
        let generation = self.next_generation.fetch_add(1, Ordering::Relaxed);
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
            sessions: self.clone(),
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
        if let Ok(mut s) = self.slots.lock() {
            if s.get(id).is_some_and(|slot| slot.generation == generation) {
                s.remove(id);
            }
        }
    }

    /// Hands a received envelope to its session.
    pub fn deliver(&self, envelope: Envelope, from: PartyId) -> Result<(), ApiError> {
        let mut s = self
            .slots
            .lock()
            .map_err(|_| ApiError::Internal("session registry poisoned".into()))?;
        let slot = s.get_mut(&envelope.session_id).ok_or_else(|| {
            ApiError::NotFound("no such session (finished, aborted or never proposed)".into())
        })?;
        if !slot.info.parties.contains(&from) {
            return Err(ApiError::Denied(
                "sender is not a party of this session".into(),
            ));
        }
        // Cheap checks before buffering; the session checks everything else
        // (signature, sequence) in order.
        let sender_ok = slot.info.parties.get(usize::from(envelope.sender)) == Some(&from);
        let recipient_ok = envelope.recipient.is_none_or(|r| r == slot.info.me);
        if envelope.protocol != slot.info.protocol || !sender_ok || !recipient_ok {
            return Err(ApiError::Invalid(
                "envelope does not fit this session (protocol, sender or recipient)".into(),
            ));
        }
        slot.inbound
            .try_send(Received { envelope, from })
            .map_err(|_| ApiError::Busy("session inbox full".into()))
    }

    /// Signals a registered session that all parties accepted.
    pub fn start(&self, id: &[u8; 32], from: PartyId) -> Result<(), ApiError> {
        let mut s = self
            .slots
            .lock()
            .map_err(|_| ApiError::Internal("session registry poisoned".into()))?;
        let slot = s
            .get_mut(id)
            .ok_or_else(|| ApiError::NotFound("no such session".into()))?;
        if !slot.info.parties.contains(&from) {
            return Err(ApiError::Denied("not a party of this session".into()));
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
        let Ok(mut s) = self.slots.lock() else {
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
}
