//! Runs one engine on a blocking thread over its session's delivery, and
//! sends its outgoing envelopes to the peers.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use futures::channel::mpsc;
use futures::StreamExt;
use round_based::MpcParty;
use tss_core::ecdsa::EngineError;
use tss_core::envelope::Envelope;
use tss_core::session::{self, IncomingStream, OutgoingSink, SessionInfo};

use super::{Registered, SessionFailure, Sessions, BLAME_GRACE};

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
        let sessions = self.sessions.clone();
        let info = self.info.clone();
        let Some(inbound) = self.inbound.take() else {
            return Err(SessionFailure::Engine("session already ran".into()));
        };
        let (out_tx, out_rx) = mpsc::unbounded();
        let (inc, out) = session::delivery::<M>(
            info.clone(),
            sessions.identity.clone(),
            inbound,
            out_tx,
            recorder,
        );
        let (fail_tx, mut fail_rx) = tokio::sync::mpsc::unbounded_channel::<SessionFailure>();
        let pump = tokio::spawn(pump(sessions.clone(), info.clone(), out_rx, fail_tx));
        let job = tokio::task::spawn_blocking(move || {
            futures::executor::block_on(engine(MpcParty::connected((inc, out))))
        });
        let mut ended_rx = self.ended.take();
        let ended = async {
            match ended_rx.as_mut() {
                Some(rx) => rx
                    .await
                    .unwrap_or_else(|_| SessionFailure::Aborted("session ended (aborted)".into())),
                None => std::future::pending().await,
            }
        };
        let job = tokio::time::timeout(timeout, job);
        tokio::pin!(job);
        // `Err(Ok(e))`: the engine's own error, explained below.
        let result: Result<T, Result<EngineError, SessionFailure>> = tokio::select! {
            biased;
            r = &mut job => match r {
                Err(_) => Err(Err(SessionFailure::Timeout(timeout))),
                Ok(Err(e)) => Err(Err(SessionFailure::Engine(format!("engine task failed: {e}")))),
                Ok(Ok(Ok(v))) => Ok(v),
                Ok(Ok(Err(e))) => Err(Ok(e)),
            },
            Some(f) = fail_rx.recv() => {
                // A peer that refuses our envelopes has often just ended
                // the session over a party's invalid message, which our
                // engine is about to refuse too: its verdict names the
                // culprit, so it wins if it comes at once.
                match tokio::time::timeout(BLAME_GRACE, &mut job).await {
                    Ok(Ok(Ok(Err(e @ EngineError::Misbehaved { .. })))) => Err(Ok(e)),
                    _ => Err(Err(f)),
                }
            }
            // Ended by a party (or its restart) while the engine computes:
            // the engine stops at its next read of the closed inbox, but
            // the session (its slot, and an aux-info run's claim) ends now.
            why = ended => Err(Err(why)),
        };
        // An engine that stopped without naming a culprit stopped because
        // its session was ended: a party's reason (a refused envelope names
        // its sender) is sent before the inbox closes, so it is here now and
        // says more than the engine's closed inbox.
        let result = result.map_err(|failed| match failed {
            Err(why) => why,
            Ok(e @ EngineError::Misbehaved { .. }) => self.explain(e, &mut fail_rx),
            Ok(e) => match ended_rx.as_mut().and_then(|rx| rx.try_recv().ok()) {
                Some(why) => why,
                None => self.explain(e, &mut fail_rx),
            },
        });
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
                let name = self.sessions.peers.name_in(&self.info, culprit);
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
    sessions: Arc<Sessions>,
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
        let Some(party) = sessions.peers.party(id) else {
            continue;
        };
        let Some(mut client) = party.client.clone() else {
            continue;
        };
        let name = party.name.clone();
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Vec<u8>>();
        queues.insert(j as u16, tx);
        let fail = fail.clone();
        let metrics = sessions.metrics.clone();
        let per_call = Duration::from_millis(sessions.propose_ms.max(1000) * 3);
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
