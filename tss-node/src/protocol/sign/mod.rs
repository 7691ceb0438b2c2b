//! The full CGGMP24 signature. The coordinator picks a co-signer among the
//! key's other parties; if it is down, declines, or the session fails, it
//! tries the next, and fails with UNAVAILABLE only when no two parties can
//! sign, naming each party that could not. The co-signer side is
//! [`accept`]; retries are in [`retry`].

pub mod accept;
pub mod retry;

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use keygen::record::KeyRecord;
use proto::v1 as pb;
use tss_core::ecdsa::sign::ToSign;
use tss_core::ecdsa::{self, KeyShare};
use tss_core::store::RecordKind;

use crate::config::ClientEntry;
use crate::error::{blocking, in_place, ApiError};
use crate::metrics::SignPath;
use crate::protocol::approve::{decide, Release};
use crate::protocol::presign::sign::{sign_from_pool, PoolMiss};
use crate::protocol::sign::retry::find_elsewhere;
use crate::protocol::Attempt;
use crate::request::decode::Decoded;
use crate::request::retry::{
    bind, check_binding, claim_fresh, is_signed, kept_response, stored_signature,
};
use crate::request::{check_sign_input, hash_algo};
use crate::session::{Registered, SessionFailure};
use crate::state::Node;

pub(crate) use crate::protocol::job::SignJob;
pub use crate::protocol::job::{sign_session, Wire};

/// Sign (a message) as coordinator, for `caller` (the TLS client).
pub async fn sign(
    node: Arc<Node>,
    caller: &ClientEntry,
    req: pb::SignRequest,
) -> Result<pb::SignResponse, ApiError> {
    let started = Instant::now();
    let hashing = hash_algo(req.hash)?;
    check_sign_input(&node, &req.key_id, &req.message, &req.request_id)?;
    // The client's signature, the key, a retry, the policy and the request
    // id's binding, in one hand-off from the reactor.
    let (n, caller) = (node.clone(), caller.clone());
    let checked = in_place(move || {
        let asked = crate::request::auth::signing_request(
            &req.key_id,
            &req.request_id,
            &req.message,
            req.hash,
            "",
            None,
        );
        let client =
            crate::request::auth::verify_caller(&n, &caller, &asked, req.authorization.as_ref())?;
        let request = asked
            .digest()
            .map_err(crate::request::auth::AuthError::from)?;
        let record = crate::protocol::records::load_ready_record(&n, &req.key_id)?
            .ok_or_else(|| crate::protocol::records::no_key(&req.key_id))?;
        let decoded = crate::request::decode::message(hashing, &req.message, record.scheme)?;
        check_binding(&n, &record.key_id, &req.request_id, &client.name, &request)?;
        let signed = match record.scheme {
            Some(scheme) => crate::request::decode::schnorr_message(
                scheme,
                req.hash,
                None,
                &req.message,
                &decoded.digest,
            ),
            None => decoded.digest.to_vec(),
        };
        if let Some(kept) =
            stored_signature(n.store(), &record.key_id, &req.request_id, &decoded.digest)?
        {
            return kept_response(&record, kept, &decoded.digest, &signed, started).map(Err);
        }
        let reservation = decide(
            &n,
            &client.name,
            &record.key_id,
            &req.request_id,
            &decoded,
            "coordinator".into(),
        )?;
        bind(&n, &record.key_id, &req.request_id, &client.name, &request)?;
        let wire = Wire {
            request_id: req.request_id,
            message: req.message,
            hash: req.hash,
            payload: None,
            authorization: req.authorization,
        };
        let prepared = prepare(&n, &record, &wire.request_id, &wire, &decoded, started)?;
        Ok(Ok((record, decoded, reservation, wire, prepared)))
    })
    .await?;
    let (record, decoded, reservation, wire, prepared) = match checked {
        Ok(fresh) => fresh,
        Err(kept) => return Ok(kept),
    };
    let request_id = wire.request_id.clone();
    sign_prepared(
        &node,
        record,
        &request_id,
        wire,
        &decoded,
        Release::new(reservation),
        started,
        prepared,
    )
    .await
}

/// Signs a decoded request the policy allowed: find a co-signer (pool path
/// first), sign, check the signature. `release` is committed before any
/// part of the signature leaves this node.
pub async fn sign_decoded(
    node: &Arc<Node>,
    record: KeyRecord,
    request_id: &[u8],
    wire: Wire,
    decoded: &Decoded,
    release: Release,
    started: Instant,
) -> Result<pb::SignResponse, ApiError> {
    // A retry, the request claimed, every pair's ready entries and a FROST
    // key's share, in one hand-off from the reactor.
    let (n, rid, d) = (node.clone(), request_id.to_vec(), decoded.clone());
    let (record, wire, prepared) = in_place(move || {
        let p = prepare(&n, &record, &rid, &wire, &d, started)?;
        Ok((record, wire, p))
    })
    .await?;
    sign_prepared(
        node, record, request_id, wire, decoded, release, started, prepared,
    )
    .await
}

/// [`sign_decoded`] once [`prepare`]d.
#[allow(clippy::too_many_arguments)]
async fn sign_prepared(
    node: &Arc<Node>,
    record: KeyRecord,
    request_id: &[u8],
    wire: Wire,
    decoded: &Decoded,
    release: Release,
    started: Instant,
    prepared: Prepared,
) -> Result<pb::SignResponse, ApiError> {
    let node = node.clone();
    let (data, digest) = (decoded.data, decoded.digest);
    let Prepared {
        message,
        others,
        standing,
    } = prepared;
    let me = record.my_index;
    let ids = record
        .party_ids()
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    let public_key = record
        .public_key_bytes()
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    let (_claim, ready, frost_share) = match standing {
        Standing::Kept(resp) => return Ok(*resp),
        // This node released its part before without keeping the
        // signature: the one a peer kept.
        Standing::SignedHere => {
            return find_elsewhere(
                &node, &record, request_id, &wire, &digest, &message, started,
            )
            .await
        }
        Standing::Fresh {
            claim,
            ready,
            frost_share,
        } => (claim, ready, frost_share),
    };
    let job = SignJob {
        record,
        public_key,
        request_id: request_id.to_vec(),
        wire,
        digest,
        message,
        release,
        partial_left: Default::default(),
        started,
    };
    let record = &job.record;
    let mut candidates = Vec::new();
    for (cand, ready) in others.into_iter().zip(ready) {
        let leads = me < cand;
        let ready: Vec<[u8; 32]> = ready
            .into_iter()
            .filter(|id| !node.claims().presignature_claimed(id))
            .collect();
        candidates.push((cand, ready, leads));
    }
    candidates.sort_by_key(|(_, ready, leads)| std::cmp::Reverse((ready.len(), *leads)));
    let mut share: Option<Arc<tss_core::ecdsa::KeyShare>> = None;
    let mut failures = Vec::new();
    let mut denials = Vec::new();
    let mut busy = Vec::new();
    let mut signed_before = Vec::new();
    let mut conflicts = Vec::new();
    let result = 'sign: {
        for (cand, ready, _) in candidates {
            let cand_id = ids[usize::from(cand)];
            let name = node
                .peers()
                .party(&cand_id)
                .map_or_else(|| format!("party #{cand}"), |p| p.name.clone());
            let Some(mut client_rpc) = node.peers().party(&cand_id).and_then(|p| p.client.clone())
            else {
                failures.push(format!("{name}: not in this node's config"));
                continue;
            };
            if !ready.is_empty() {
                let pooled = match (&frost_share, data) {
                    (Some(fs), _) => Some(
                        crate::protocol::presign::frost::sign_from_pool(
                            &node,
                            &job,
                            fs.clone(),
                            cand,
                            ready,
                            &name,
                            &mut client_rpc,
                        )
                        .await,
                    ),
                    (None, ToSign::Hashed(hashed)) => Some(
                        sign_from_pool(&node, &job, hashed, cand, ready, &name, &mut client_rpc)
                            .await,
                    ),
                    (None, _) => None,
                };
                match pooled {
                    None => {}
                    Some(Ok(resp)) => {
                        node.metrics().signed_from_pool();
                        node.metrics()
                            .observe_sign(SignPath::Pool, started.elapsed());
                        break 'sign Ok(resp);
                    }
                    Some(Err(PoolMiss::Missing(why))) => {
                        node.metrics().pool_fell_back();
                        tracing::info!(co_signer = %name, why, "pool entry unavailable; full protocol");
                    }
                    Some(Err(PoolMiss::Failed(why))) => {
                        tracing::warn!(co_signer = %name, why, "pool signing failed; trying the next co-signer");
                        failures.push(why);
                        continue;
                    }
                    Some(Err(PoolMiss::Denied(why))) => {
                        tracing::warn!(co_signer = %name, why, "co-signer's policy refused; trying the next co-signer");
                        denials.push(why);
                        continue;
                    }
                    Some(Err(PoolMiss::AlreadySigned(why))) => {
                        signed_before.push(why);
                        continue;
                    }
                    Some(Err(PoolMiss::Conflict(why))) => {
                        conflicts.push(why);
                        continue;
                    }
                }
            }
            let attempt = if let Some(fs) = &frost_share {
                crate::protocol::frost::sign::sign_full(
                    &node,
                    &job,
                    cand,
                    &name,
                    &mut client_rpc,
                    fs.clone(),
                )
                .await
            } else {
                let share = match &share {
                    Some(s) => s.clone(),
                    None => {
                        let (n, key_id) = (node.clone(), record.key_id.clone());
                        let s = Arc::new(
                            blocking(move || {
                                crate::protocol::records::load_share(n.store(), &key_id)
                            })
                            .await?,
                        );
                        share = Some(s.clone());
                        s
                    }
                };
                sign_full(&node, &job, data, cand, &name, &mut client_rpc, share).await
            };
            match attempt {
                Ok(resp) => {
                    node.metrics().signed_full();
                    node.metrics()
                        .observe_sign(SignPath::Full, started.elapsed());
                    break 'sign Ok(resp);
                }
                Err(Attempt::Failed(why)) => failures.push(why),
                Err(Attempt::Denied(why)) => denials.push(why),
                Err(Attempt::Busy(why)) => busy.push(why),
                Err(Attempt::AlreadySigned(why)) => signed_before.push(why),
                Err(Attempt::Conflict(why)) => conflicts.push(why),
                Err(Attempt::Fatal(e)) => break 'sign Err(e),
            }
        }
        if !conflicts.is_empty() {
            break 'sign Err(ApiError::Conflict(conflicts.join("; ")));
        }
        if !signed_before.is_empty() {
            // A retry of a request another node coordinated: never a new
            // signature, and never UNAVAILABLE for a known request.
            tracing::info!(reasons = %signed_before.join("; "), "a retried request; fetching its signature");
            break 'sign find_elsewhere(
                &node,
                record,
                request_id,
                &job.wire,
                &digest,
                &job.message,
                started,
            )
            .await;
        }
        if !busy.is_empty() && denials.is_empty() {
            // A co-signer is up but at its session limit: worth a retry.
            failures.extend(busy);
            break 'sign Err(ApiError::Busy(format!(
                "no co-signer has a free session for key {} now; retry later: {}",
                record.key_id,
                failures.join("; ")
            )));
        }
        failures.extend(busy);
        if failures.is_empty() && !denials.is_empty() {
            break 'sign Err(ApiError::Denied(format!(
                "{} allowed it, but every co-signer refused: {}",
                node.cfg().name,
                denials.join("; ")
            )));
        }
        failures.extend(denials);
        Err(ApiError::Unavailable(format!(
            "no two parties can sign key {}: {}",
            record.key_id,
            failures.join("; ")
        )))
    };
    match result {
        Ok(resp) => {
            // The full path recorded the request before our partial
            // signature left, the pool path with the presignature it
            // consumed. The amounts are recorded before the signature
            // leaves (already, if our partial signature left).
            // The signature is kept for retries before it leaves.
            let (n, release) = (node.clone(), job.release.clone());
            let (k, r, rs, signers) = (
                record.key_id.clone(),
                request_id.to_vec(),
                rs_of(&resp)?,
                resp.signers.clone(),
            );
            in_place(move || {
                release.commit(n.store()).map_err(|e| {
                    tracing::error!(error = %e, "cannot record a released amount");
                    ApiError::Internal(format!(
                        "cannot record the amount against the policy limits ({e}); the signature is withheld"
                    ))
                })?;
                crate::request::retry::store_signature(n.store(), &k, &r, &digest, &rs, signers)
            })
            .await?;
            Ok(resp)
        }
        Err(e) if job.partial_left.load(Ordering::SeqCst) => {
            // Our partial signature left: the request stays recorded as
            // signed (and its amounts counted) here.
            Err(e)
        }
        Err(e) => {
            // The pool path records the request with the presignature it
            // consumes; nothing was released, so the client may retry it.
            let (n, k) = (
                node.clone(),
                crate::keys::signed(&record.key_id, request_id, &digest),
            );
            let _ = blocking(move || {
                n.store().take(RecordKind::SeenExecution, &k)?;
                Ok(())
            })
            .await;
            Err(e)
        }
    }
}

/// What a coordinator signs for a request, with whom it may, and where
/// the request stands ([`prepare`]).
struct Prepared {
    /// What a FROST key signs (the digest, or an Ed25519 key's message);
    /// an ECDSA key's digest.
    message: Vec<u8>,
    /// The key's other parties: candidate co-signers.
    others: Vec<u16>,
    standing: Standing,
}

/// Where a coordinator's request stands before it picks a co-signer.
enum Standing {
    /// A retry of a request signed here: the kept signature.
    Kept(Box<pb::SignResponse>),
    /// This node released its part before without keeping the signature.
    SignedHere,
    /// A fresh request, claimed here: each other party's ready pool
    /// entries (in `others` order) and a FROST key's share.
    Fresh {
        claim: crate::state::claims::RequestClaim,
        ready: Vec<Vec<[u8; 32]>>,
        frost_share: Option<Arc<tss_core::frost::FrostShare>>,
    },
}

/// [`Prepared`] for a request the policy allowed, on the calling
/// (blocking) thread.
fn prepare(
    node: &Node,
    record: &KeyRecord,
    request_id: &[u8],
    wire: &Wire,
    decoded: &Decoded,
    started: Instant,
) -> Result<Prepared, ApiError> {
    let digest = &decoded.digest;
    let message = match record.scheme {
        Some(scheme) => crate::request::decode::schnorr_message(
            scheme,
            wire.hash,
            wire.payload.as_ref(),
            &wire.message,
            digest,
        ),
        None => digest.to_vec(),
    };
    let me = record.my_index;
    let others: Vec<u16> = (0..record.parties.len() as u16)
        .filter(|&c| c != me)
        .collect();
    let standing = 'standing: {
        if let Some(kept) = stored_signature(node.store(), &record.key_id, request_id, digest)? {
            break 'standing Standing::Kept(Box::new(kept_response(
                record, kept, digest, &message, started,
            )?));
        }
        if is_signed(node, &record.key_id, request_id, digest)? {
            break 'standing Standing::SignedHere;
        }
        let claim = claim_fresh(node, &record.key_id, request_id, digest)?;
        // ECDSA keys draw presignatures only for data this node hashed;
        // FROST keys draw pooled nonces for any request.
        let pooled = node.cfg().presign.target_for(record.scheme) > 0
            && (record.scheme.is_some() || matches!(decoded.data, ToSign::Hashed(_)));
        let ready = others
            .iter()
            .map(|&cand| {
                if !pooled {
                    return Ok(Vec::new());
                }
                let mut pair = vec![me, cand];
                pair.sort_unstable();
                crate::protocol::presign::ready_ids(node, &record.key_id, &pair)
            })
            .collect::<Result<_, ApiError>>()?;
        let frost_share = match record.scheme {
            Some(_) => Some(crate::protocol::frost::sign::load_now(node, record)?),
            None => None,
        };
        Standing::Fresh {
            claim,
            ready,
            frost_share,
        }
    };
    Ok(Prepared {
        message,
        others,
        standing,
    })
}

/// `r || s` of a response.
pub(crate) fn rs_of(resp: &pb::SignResponse) -> Result<[u8; 64], ApiError> {
    [resp.r.as_slice(), resp.s.as_slice()]
        .concat()
        .try_into()
        .map_err(|_| ApiError::Internal("signature is not r || s".into()))
}

/// The full interactive protocol with co-signer `cand`. Errors are one line
/// for the caller's list of failures.
pub(crate) async fn sign_full(
    node: &Arc<Node>,
    job: &SignJob,
    data: ToSign,
    cand: u16,
    name: &str,
    client_rpc: &mut proto::v1::peer_client::PeerClient<tonic::transport::Channel>,
    share: Arc<tss_core::ecdsa::KeyShare>,
) -> Result<pb::SignResponse, Attempt> {
    let (reg, signers) = crate::protocol::job::register_pair(node, job, cand)?;
    sign_full_registered(node, job, data, name, client_rpc, share, signers, reg).await
}

/// [`sign_full`] once the session is registered; errors are one line.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn sign_full_registered(
    node: &Arc<Node>,
    job: &SignJob,
    data: ToSign,
    name: &str,
    client_rpc: &mut proto::v1::peer_client::PeerClient<tonic::transport::Channel>,
    share: Arc<tss_core::ecdsa::KeyShare>,
    signers: Vec<u16>,
    reg: crate::session::Registered,
) -> Result<pb::SignResponse, Attempt> {
    crate::protocol::job::propose_job(node, job, &signers, &reg, name, client_rpc).await?;
    let info = reg.info.clone();
    let hook = job.release.before_partial(
        node,
        &job.record.key_id,
        &job.request_id,
        &job.digest,
        job.partial_left.clone(),
    );
    match crate::protocol::sign::run_engine(
        node.clone(),
        reg,
        share,
        signers.clone(),
        data,
        Some(hook),
    )
    .await
    {
        Ok(sig) => {
            let fin = job
                .finish(&sig)
                .map_err(|e| Attempt::Failed(e.to_string()))?;
            Ok(job.response(&fin, &signers, "full", vec![]))
        }
        Err(f) => {
            tracing::warn!(co_signer = %name, failure = %f, "signing session failed; trying the next co-signer");
            node.peers().send_abort(&info, &f.to_string()).await;
            Err(Attempt::Failed(format!("{name}: {f}")))
        }
    }
}

/// Runs full signing as one signer. `before_release` runs right before this
/// signer's partial signature leaves (see [`ecdsa::sign::run_with_release`]).
pub async fn run_engine(
    node: Arc<Node>,
    reg: Registered,
    share: Arc<KeyShare>,
    signers: Vec<u16>,
    data: ecdsa::sign::ToSign,
    before_release: Option<ecdsa::sign::BeforeRelease>,
) -> Result<ecdsa::Signature, SessionFailure> {
    let eid = reg.info.id;
    let me = reg.info.me;
    let _running = node.metrics().session_running("sign");
    let r = reg
        .run(
            Duration::from_millis(node.cfg().timeouts.sign_ms),
            move |party| async move {
                ecdsa::sign::run_with_release(
                    &eid,
                    me,
                    &signers,
                    &share,
                    data,
                    before_release,
                    party,
                )
                .await
            },
        )
        .await;
    if r.is_err() {
        node.metrics().session_failed("sign");
    }
    r
}
