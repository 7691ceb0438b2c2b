//! Signing from a presignature, both sides: the coordinator consumes its
//! own presignature while the co-signer consumes its own and returns its
//! partial signature; either's consumption is on disk before anything made
//! with its entry leaves it ([`super::PoolRole`]).

use std::sync::Arc;
use std::time::Duration;

use proto::v1 as pb;

use tss_core::ecdsa::presign::StoredPresignature;

use crate::error::{in_place, ApiError};
use crate::protocol::cosign;
use crate::protocol::job::SignJob;
use crate::protocol::Refusal;
use crate::state::Node;
use crate::transport::peers::Party;

/// Why the pool path did not produce a signature.
pub(crate) enum PoolMiss {
    /// One of us lacks the presignature (or used it): run the full protocol
    /// with the same co-signer.
    Missing(String),
    /// The co-signer cannot or will not sign: try the next one.
    Failed(String),
    /// The co-signer's policy refused the request: try the next one.
    Denied(String),
    /// The co-signer signed this request before (a retry).
    AlreadySigned(String),
    /// The request id was used for another request.
    Conflict(String),
}

/// One pool entry both parties consumed for a request: this node's (what
/// `prepare` made of its bytes) and the co-signer's answer.
pub(crate) struct Drawn<T> {
    /// The entry's id.
    pub(crate) pid: [u8; 32],
    /// The signer pair, ascending.
    pub(crate) signers: Vec<u16>,
    /// This node's entry, consumed durably with the request recorded, as
    /// `prepare` left it.
    pub(crate) ours: T,
    /// The co-signer's 32-byte partial signature or signature share.
    pub(crate) theirs: [u8; 32],
    _claim: crate::state::claims::Claim<[u8; 32]>,
}

/// Draws a pool entry this node and `cand` hold for `job`: consumes ours
/// (durably, with the request recorded as signed) while the co-signer
/// consumes its own and returns its part (ECDSA keys: a presignature's
/// partial signature; FROST keys: a signature share from pooled nonces).
/// `prepare` runs on our entry once its removal is durable, while the
/// co-signer's answer is on its way (our own share, made ahead).
#[allow(clippy::too_many_arguments)]
pub(crate) async fn draw<T: Send + 'static>(
    node: &Arc<Node>,
    job: &SignJob,
    cand: u16,
    ids: Vec<[u8; 32]>,
    name: &str,
    client_rpc: &mut proto::v1::peer_client::PeerClient<tonic::transport::Channel>,
    prepare: impl FnOnce(tss_core::secret::SecretBytes) -> T + Send + 'static,
) -> Result<Drawn<T>, PoolMiss> {
    let me = job.record.my_index;
    let mut signers = vec![me, cand];
    signers.sort_unstable();
    let key_id = job.record.key_id.clone();
    // The pair's leader (lower index) draws from the front of the sorted
    // ids, the other party from the back, so that the two rarely pick the
    // same entry at once; a claim keeps our own requests apart.
    let mut ids = ids;
    if signers.first() != Some(&me) {
        ids.reverse();
    }
    let Some((pid, claim)) = ids
        .iter()
        .find_map(|id| node.claims().claim_presignature(*id).map(|c| (*id, c)))
    else {
        return Err(PoolMiss::Missing("no pool entry ready".into()));
    };
    let local = crate::protocol::presign::consume_entry(
        node,
        &job.record,
        &signers,
        pid,
        &job.request_id,
        job.digest,
        crate::protocol::presign::PoolRole::Coordinator,
        prepare,
    );
    let remote = tokio::time::timeout(
        Duration::from_millis(node.cfg().timeouts.propose_ms),
        client_rpc.sign_with_presignature(pb::PresignSignRequest {
            key_id: key_id.clone(),
            signers: signers.iter().map(|&s| u32::from(s)).collect(),
            presignature_id: pid.to_vec(),
            request_id: job.wire.request_id.clone(),
            message: job.wire.message.clone(),
            hash: job.wire.hash,
            payload: job.wire.payload.clone(),
            authorization: job.wire.authorization.clone(),
        }),
    );
    let (local, remote) = tokio::join!(local, remote);
    let ours = local.map_err(|e| PoolMiss::Failed(format!("{e} (this node)")))?;
    let reply = match remote {
        Err(_) => {
            return Err(PoolMiss::Failed(format!(
                "{name}: no answer within {} ms",
                node.cfg().timeouts.propose_ms
            )))
        }
        Ok(Err(status)) => {
            node.metrics().peer_rpc_error(name);
            return Err(PoolMiss::Failed(format!(
                "{name}: unreachable ({})",
                status.message()
            )));
        }
        Ok(Ok(r)) => r.into_inner(),
    };
    let Some(ours) = ours else {
        return Err(PoolMiss::Missing(format!(
            "{} lacks pool entry {}",
            node.cfg().name,
            hex::encode(pid)
        )));
    };
    if reply.missing {
        return Err(PoolMiss::Missing(format!("{name}: {}", reply.reason)));
    }
    if reply.denied {
        return Err(PoolMiss::Denied(format!("{name}: {}", reply.reason)));
    }
    if reply.conflict {
        return Err(PoolMiss::Conflict(format!("{name}: {}", reply.reason)));
    }
    if reply.already_signed {
        return Err(PoolMiss::AlreadySigned(format!("{name}: {}", reply.reason)));
    }
    let Ok(theirs) = <[u8; 32]>::try_from(reply.partial_signature.as_slice()) else {
        return Err(PoolMiss::Failed(format!(
            "{name}: declined ({})",
            reply.reason
        )));
    };
    Ok(Drawn {
        pid,
        signers,
        ours,
        theirs,
        _claim: claim,
    })
}

/// Signs from a presignature this node and `cand` hold ([`draw`]): issue
/// our partial signature, combine, verify.
pub(crate) async fn sign_from_pool(
    node: &Arc<Node>,
    job: &SignJob,
    data: cggmp24::DataToSign<tss_core::ecdsa::Curve>,
    cand: u16,
    ids: Vec<[u8; 32]>,
    name: &str,
    client_rpc: &mut proto::v1::peer_client::PeerClient<tonic::transport::Channel>,
) -> Result<pb::SignResponse, PoolMiss> {
    let me = job.record.my_index;
    let drawn = draw(node, job, cand, ids, name, client_rpc, |e| e).await?;
    let ours = StoredPresignature::decode(drawn.ours.expose())
        .ok()
        .filter(|p| p.signers == drawn.signers)
        .ok_or_else(|| {
            PoolMiss::Failed(format!(
                "{}: stored presignature {} is unusable",
                node.cfg().name,
                hex::encode(drawn.pid)
            ))
        })?;
    let mine = ours.issue(data);
    let partials: Vec<[u8; 32]> = drawn
        .signers
        .iter()
        .map(|&s| if s == me { mine } else { drawn.theirs })
        .collect();
    let sig = ours.combine(&partials, data).map_err(|e| {
        tracing::error!(co_signer = %name, error = %e, "invalid partial signature");
        PoolMiss::Failed(format!("{name}: {e}"))
    })?;
    let fin = job
        .finish(&sig)
        .map_err(|e| PoolMiss::Failed(e.to_string()))?;
    Ok(job.response(&fin, &drawn.signers, "pool", drawn.pid.to_vec()))
}

/// The co-signer's side: checks the request and consumes its own entry
/// ([`take`], one hand-off from the reactor), then makes its part with the
/// entry while the store flushes the entry's removal, and releases the
/// part only once that flush and its amounts are on disk.
pub(crate) async fn co_sign(
    node: &Arc<Node>,
    from: &Party,
    r: pb::PresignSignRequest,
) -> Result<pb::PresignSignReply, ApiError> {
    let taken = cosign::off_reactor(node, from, move |node, from| take(node, from, &r)).await?;
    let Taken {
        record,
        entry,
        part,
        reservation,
        _claim,
    } = match taken {
        Ok(t) => t,
        Err(reply) => return Ok(reply),
    };
    // The flush starts on a blocking thread while the part is made here.
    let n = node.clone();
    let flushed = tokio::task::spawn_blocking(move || n.store().flush());
    let made = in_place(move || part.make(entry)).await;
    flushed
        .await
        .map_err(|e| ApiError::Internal(format!("worker failed: {e}")))??;
    let partial = made?;
    // Durably consumed: only now may the partial signature be issued.
    // Test builds only: a release build refuses a config with test hooks.
    #[cfg(debug_assertions)]
    if let Some(h) = &node.cfg().test_hooks {
        if h.pause_before_partial_ms > 0 {
            tracing::warn!(
                ms = h.pause_before_partial_ms,
                "TEST HOOK: pausing before the partial signature"
            );
            tokio::time::sleep(Duration::from_millis(h.pause_before_partial_ms)).await;
        }
    }
    if let Some(r) = reservation {
        let n = node.clone();
        in_place(move || crate::protocol::approve::commit_spend(&n, Some(r))).await?;
    }
    // Test builds only: a hostile co-signer's share.
    #[cfg(debug_assertions)]
    let partial = {
        let mut partial = partial;
        if record.scheme.is_some()
            && node
                .cfg()
                .test_hooks
                .as_ref()
                .is_some_and(|h| h.corrupt_frost_share)
        {
            tracing::warn!("TEST HOOK: sending a corrupt signature share");
            if let Some(b) = partial.last_mut() {
                *b ^= 1;
            }
        }
        partial
    };
    tracing::info!(coordinator = %from.name, key_id = %record.key_id, "co-signed from a presignature");
    Ok(pb::PresignSignReply {
        partial_signature: partial,
        ..Default::default()
    })
}

/// A co-signer's pool entry, consumed for a request it accepted (the
/// removal not yet flushed), and what it makes its part with.
struct Taken {
    record: keygen::record::KeyRecord,
    entry: tss_core::secret::SecretBytes,
    part: Part,
    reservation: Option<crate::policy::spend::Reservation>,
    _claim: crate::state::claims::RequestClaim,
}

/// How a co-signer makes its part from its entry: the data it hashed
/// itself, or a FROST key's share and the message it derived itself.
enum Part {
    Presignature {
        data: cggmp24::DataToSign<tss_core::ecdsa::Curve>,
        pair: Vec<u16>,
    },
    Frost {
        share: Arc<tss_core::frost::FrostShare>,
        message: Vec<u8>,
        pair: Vec<u16>,
    },
}

impl Part {
    /// The partial signature (ECDSA) or signature share (FROST) from the
    /// entry's bytes.
    fn make(self, entry: tss_core::secret::SecretBytes) -> Result<Vec<u8>, ApiError> {
        match self {
            Part::Presignature { data, pair } => {
                let presig = StoredPresignature::decode(entry.expose())
                    .ok()
                    .filter(|p| p.signers == pair)
                    .ok_or_else(|| ApiError::Internal("stored presignature is unusable".into()))?;
                Ok(presig.issue(data).to_vec())
            }
            Part::Frost {
                share,
                message,
                pair,
            } => {
                // Our own copy of the commitments, the digest derived here.
                let unusable =
                    |e: String| ApiError::Internal(format!("a pooled nonce is unusable: {e}"));
                let entry = tss_core::frost::pool::PoolEntry::decode(entry.expose())
                    .map_err(|e| unusable(e.to_string()))?;
                if entry.signers() != pair.as_slice() {
                    return Err(unusable("it belongs to another signer pair".into()));
                }
                entry
                    .sign_share(&share, &message)
                    .map_err(|e| unusable(e.to_string()))
            }
        }
    }
}

/// Checks a pool request ([`cosign::vet`]) and consumes this node's entry
/// for it (blocking; not flushed: [`co_sign`] flushes before releasing
/// anything made with it). `Err`: the reply that refuses it.
fn take(
    node: &Node,
    from: &Party,
    r: &pb::PresignSignRequest,
) -> Result<Result<Taken, pb::PresignSignReply>, ApiError> {
    let refuse = |reason: String, missing: bool| pb::PresignSignReply {
        reason,
        missing,
        ..Default::default()
    };
    let Ok(pid) = <[u8; 32]>::try_from(r.presignature_id.as_slice()) else {
        return Ok(Err(refuse(
            "presignature id must be 32 bytes".into(),
            false,
        )));
    };
    let proposed = cosign::Proposed {
        key_id: &r.key_id,
        signers: &r.signers,
        request_id: &r.request_id,
        message: &r.message,
        hash: r.hash,
        payload: r.payload.as_ref(),
        authorization: r.authorization.as_ref(),
    };
    // ECDSA: only data this node hashed itself (never a raw digest). FROST
    // keys sign any request from pooled nonces: the challenge hashes the
    // message with the nonce commitments (docs in `protocol::frost::pool`).
    let step = |record: &keygen::record::KeyRecord, signers: &[u16], a: &cosign::Authenticated| {
        let pair = signers.to_vec();
        Ok(match (record.scheme, a.decoded.data) {
            (None, tss_core::ecdsa::sign::ToSign::Hashed(data)) => {
                Ok(Part::Presignature { data, pair })
            }
            (None, _) => Err(Refusal::Declined(
                "raw digests are never signed from a presignature".into(),
            )),
            (Some(scheme), _) => Ok(Part::Frost {
                share: crate::protocol::frost::sign::load_now(node, record)?,
                message: crate::request::decode::schnorr_message(
                    scheme,
                    r.hash,
                    r.payload.as_ref(),
                    &r.message,
                    &a.decoded.digest,
                ),
                pair,
            }),
        })
    };
    let v = match cosign::vet(node, from, &proposed, true, step)? {
        Ok(v) => v,
        Err(refusal) => return Ok(Err(refusal.presign_reply())),
    };
    let entry = crate::protocol::presign::consume_entry_now(
        node,
        &v.record,
        &v.signers,
        pid,
        &v.authenticated.request_id,
        v.authenticated.decoded.digest,
        crate::protocol::presign::PoolRole::CoSigner,
        |e| e,
    )?;
    let Some(entry) = entry else {
        return Ok(Err(refuse(
            format!(
                "{} holds no presignature {} for this pair (never made, or used)",
                node.cfg().name,
                hex::encode(pid)
            ),
            true,
        )));
    };
    Ok(Ok(Taken {
        record: v.record,
        entry,
        part: v.made,
        reservation: v.reservation,
        _claim: v.claim,
    }))
}
