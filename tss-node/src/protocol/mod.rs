//! The protocols, one module each, holding **both** sides of it: what the
//! coordinator (the node a client called) does and what a co-signer or
//! participant does when a peer proposes it.
//!
//! - [`sign`]: the full CGGMP24 signature (coordinator, co-signer, retries);
//! - [`presign`]: the presignature pool (generation both sides, and signing
//!   from a presignature both sides);
//! - [`tx`]: Ethereum transactions and Bitcoin PSBTs on top of [`sign`];
//! - [`ceremony`]: aux info, keygen and the key's certificate and transcript;
//! - [`cosign`]: the checks a co-signer makes of every signing request;
//! - [`approve`]: this node's own policy decision, ledger and audit entry;
//! - [`records`]: the key and aux-info records both sides read.
//!
//! Shared here: proposing a session to peers and starting it, and the
//! replies to a proposal. A second signature scheme adds files here.

pub mod approve;
pub mod ceremony;
pub mod certificate;
pub mod cosign;
pub mod frost;
pub mod job;
pub mod presign;
pub mod records;
pub mod sign;
pub mod tx;

use std::sync::Arc;
use std::time::{Duration, Instant};

use keygen::record::KeyRecord;
use proto::v1 as pb;
use tss_core::session::SessionInfo;

use crate::error::ApiError;
use crate::protocol::ceremony::Progress;
use crate::session::SessionFailure;
use crate::state::Node;
use crate::transport::peers::{call, CallFailure, PeerCallError};

/// One co-signer attempt that did not produce a signature.
#[derive(Debug)]
pub enum Attempt {
    /// It could not sign (down, declined, failed): try the next.
    Failed(String),
    /// Its policy refused the request: try the next; if every co-signer
    /// refuses, the client gets their reasons.
    Denied(String),
    /// It runs its maximum of sessions: try the next; if none is free, the
    /// client gets RESOURCE_EXHAUSTED (retry later).
    Busy(String),
    /// It signed this request before: fetch the signature (a retry).
    AlreadySigned(String),
    /// The request id was used for another request: ALREADY_EXISTS.
    Conflict(String),
    /// Stop trying (this node cannot go on).
    Fatal(ApiError),
}

impl std::fmt::Display for Attempt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Attempt::Failed(m)
            | Attempt::Denied(m)
            | Attempt::Busy(m)
            | Attempt::AlreadySigned(m)
            | Attempt::Conflict(m) => f.write_str(m),
            Attempt::Fatal(e) => e.fmt(f),
        }
    }
}

/// Proposes a two-party session (sign, presign) to co-signer `name`. When it
/// does not answer, or the call fails, tells it to drop the session (it may
/// have accepted late). The error tells a policy refusal, a busy peer, a
/// replayed request and a failure apart; its text is one line for the
/// caller's failure list.
pub(crate) async fn propose_pair_reply(
    node: &Node,
    client: &mut proto::v1::peer_client::PeerClient<tonic::transport::Channel>,
    info: &SessionInfo,
    proposal: pb::Proposal,
    name: &str,
) -> Result<(), Attempt> {
    let timeout = Duration::from_millis(node.cfg().timeouts.propose_ms);
    let reply = match call(timeout, client.propose(proposal)).await {
        Err(CallFailure::TimedOut(t)) => {
            node.peers().send_abort(info, "proposal timed out").await;
            return Err(Attempt::Failed(format!(
                "{name}: no answer within {} ms",
                t.as_millis()
            )));
        }
        Err(CallFailure::Busy(s)) => {
            return Err(Attempt::Busy(format!("{name}: busy ({})", s.message())))
        }
        Err(CallFailure::Failed(s)) => {
            node.metrics().peer_rpc_error(name);
            node.peers().send_abort(info, "proposal failed").await;
            return Err(Attempt::Failed(format!(
                "{name}: unreachable ({})",
                s.message()
            )));
        }
        Ok(reply) => reply,
    };
    match reply {
        reply if reply.denied => Err(Attempt::Denied(format!("{name}: {}", reply.reason))),
        reply if reply.conflict => Err(Attempt::Conflict(format!("{name}: {}", reply.reason))),
        reply if reply.already_signed => {
            Err(Attempt::AlreadySigned(format!("{name}: {}", reply.reason)))
        }
        reply if !reply.accepted => Err(Attempt::Failed(format!(
            "{name}: declined ({})",
            reply.reason
        ))),
        _ => Ok(()),
    }
}

pub(crate) async fn progress(p: &Progress, started: Instant, stage: &str, detail: String) {
    tracing::info!(stage, %detail, "keygen progress");
    let _ = p
        .send(pb::KeygenProgress {
            stage: stage.into(),
            detail,
            elapsed_ms: started.elapsed().as_millis() as u64,
        })
        .await;
}

/// Why a proposal to all parties failed.
pub(crate) struct Refused {
    /// One line per party that did not accept.
    pub(crate) reasons: Vec<String>,
    /// Some party declined because it lacks the proposed aux info.
    pub(crate) missing_aux: bool,
}

impl Refused {
    fn into_error(self, node: &Node) -> ApiError {
        ApiError::Unavailable(format!(
            "keygen needs all {} parties: {}",
            node.peers().all().len(),
            self.reasons.join("; ")
        ))
    }
}

/// Proposes a session to every other party; on any refusal aborts the ones
/// that accepted.
pub(crate) async fn propose_all(
    node: &Arc<Node>,
    info: &SessionInfo,
    kind: pb::proposal::Kind,
) -> Result<(), Refused> {
    let timeout = Duration::from_millis(node.cfg().timeouts.propose_ms);
    let mut calls = Vec::new();
    for p in node.peers().others() {
        let Some(mut c) = p.client.clone() else {
            continue;
        };
        let name = p.name.clone();
        let metrics = node.metrics().clone();
        let req = pb::Proposal {
            session_id: info.id.to_vec(),
            kind: Some(kind.clone()),
        };
        calls.push(async move {
            match tokio::time::timeout(timeout, c.propose(req)).await {
                Err(_) => Err((
                    format!("{name}: no answer within {} ms", timeout.as_millis()),
                    false,
                )),
                Ok(Err(s)) => {
                    metrics.peer_rpc_error(&name);
                    Err((format!("{name}: unreachable ({})", s.message()), false))
                }
                Ok(Ok(r)) if !r.get_ref().accepted => Err((
                    format!("{name}: declined ({})", r.get_ref().reason),
                    r.get_ref().missing_aux,
                )),
                Ok(Ok(_)) => Ok(()),
            }
        });
    }
    let refusals: Vec<(String, bool)> = futures::future::join_all(calls)
        .await
        .into_iter()
        .filter_map(Result::err)
        .collect();
    if refusals.is_empty() {
        return Ok(());
    }
    node.peers().send_abort(info, "another party refused").await;
    Err(Refused {
        missing_aux: refusals.iter().any(|r| r.1),
        reasons: refusals.into_iter().map(|r| r.0).collect(),
    })
}

pub(crate) async fn start_all(node: &Arc<Node>, info: &SessionInfo) -> Result<(), ApiError> {
    let timeout = Duration::from_millis(node.cfg().timeouts.propose_ms);
    for p in node.peers().others() {
        let Some(mut c) = p.client.clone() else {
            continue;
        };
        let r = tokio::time::timeout(
            timeout,
            c.start(pb::SessionRef {
                session_id: info.id.to_vec(),
            }),
        )
        .await;
        if !matches!(r, Ok(Ok(_))) {
            node.peers().send_abort(info, "start failed").await;
            return Err(ApiError::Unavailable(format!(
                "{} did not take the start signal",
                p.name
            )));
        }
    }
    Ok(())
}

/// Runs `fut`, reporting progress every few seconds.
pub(crate) async fn with_heartbeat<T>(
    p: &Progress,
    started: Instant,
    stage: &str,
    fut: impl std::future::Future<Output = T>,
) -> T {
    tokio::pin!(fut);
    let mut tick = tokio::time::interval(Duration::from_secs(5));
    tick.tick().await;
    let stage_start = Instant::now();
    loop {
        tokio::select! {
            r = &mut fut => return r,
            _ = tick.tick() => progress(p, started, stage, format!("running for {} s", stage_start.elapsed().as_secs())).await,
        }
    }
}

pub(crate) fn failure(stage: &str, f: SessionFailure) -> ApiError {
    match f {
        SessionFailure::Timeout(_) => ApiError::Timeout(format!("{stage} {f}")),
        SessionFailure::Misbehaved { ref culprit, .. } => ApiError::Misbehaved {
            culprit: culprit.clone(),
            message: format!("{stage} failed: {f}"),
        },
        _ => ApiError::Unavailable(format!("{stage} failed: {f}")),
    }
}

pub(crate) type PeerRpc = proto::v1::peer_client::PeerClient<tonic::transport::Channel>;

/// The other parties of a key: index, name, client.
pub(crate) fn key_peers(
    node: &Node,
    record: &KeyRecord,
) -> Result<Vec<(u16, String, PeerRpc)>, ApiError> {
    let ids = record
        .party_ids()
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    ids.iter()
        .enumerate()
        .filter(|(i, _)| *i != usize::from(record.my_index))
        .map(|(i, id)| {
            let p = node.peers().party(id).ok_or_else(|| {
                ApiError::NotReady(format!(
                    "party #{i} of key {} is not in the config of {}",
                    record.key_id,
                    node.cfg().name
                ))
            })?;
            let c = p
                .client
                .clone()
                .ok_or_else(|| ApiError::Internal(format!("no client for {}", p.name)))?;
            Ok((i as u16, p.name.clone(), c))
        })
        .collect()
}

/// A peer call's reply, or how it failed, naming the peer (a failed call
/// counts as a peer RPC error).
pub(crate) async fn call_peer<T>(
    node: &Node,
    name: &str,
    timeout: Duration,
    fut: impl std::future::Future<Output = Result<tonic::Response<T>, tonic::Status>>,
) -> Result<T, PeerCallError> {
    call(timeout, fut).await.map_err(|failure| {
        if !matches!(failure, CallFailure::TimedOut(_)) {
            node.metrics().peer_rpc_error(name);
        }
        PeerCallError {
            peer: name.to_owned(),
            failure,
        }
    })
}

pub(crate) fn sid(b: &[u8]) -> Result<[u8; 32], ApiError> {
    b.try_into()
        .map_err(|_| ApiError::Invalid("session id must be 32 bytes".into()))
}

pub(crate) fn decline(reason: impl Into<String>) -> pb::ProposalReply {
    pb::ProposalReply {
        accepted: false,
        reason: reason.into(),
        ..Default::default()
    }
}

/// Why a co-signer does not sign a request.
pub(crate) enum Refusal {
    /// Malformed, or not for this node.
    Declined(String),
    /// This node's policy refuses it.
    Denied(String),
    /// This node signed the request before: a retry (the coordinator
    /// fetches the signature, it is never signed anew).
    AlreadySigned(String),
    /// The request id was used for another request here.
    Conflict(String),
}

/// The reply flags of a refusal: reason, denied, already signed, conflict.
pub(crate) struct Flags(String, bool, bool, bool);

impl Refusal {
    fn flags(self) -> Flags {
        match self {
            Refusal::Declined(m) => Flags(m, false, false, false),
            Refusal::Denied(m) => Flags(m, true, false, false),
            Refusal::AlreadySigned(m) => Flags(m, false, true, false),
            Refusal::Conflict(m) => Flags(m, false, false, true),
        }
    }

    fn proposal_reply(self) -> pb::ProposalReply {
        let Flags(reason, denied, already_signed, conflict) = self.flags();
        pb::ProposalReply {
            reason,
            denied,
            already_signed,
            conflict,
            ..Default::default()
        }
    }

    fn presign_reply(self) -> pb::PresignSignReply {
        let Flags(reason, denied, already_signed, conflict) = self.flags();
        pb::PresignSignReply {
            reason,
            denied,
            already_signed,
            conflict,
            ..Default::default()
        }
    }
}

pub(crate) fn accepted() -> pb::ProposalReply {
    pb::ProposalReply {
        accepted: true,
        ..Default::default()
    }
}
