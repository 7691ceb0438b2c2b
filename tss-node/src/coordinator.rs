//! The coordinator: the node that received a client request drives the
//! session with the other parties.
//!
//! Sign: pick a co-signer among the key's other parties; if it is down,
//! declines, or the session fails, try the next. Fail with UNAVAILABLE only
//! when no two parties can sign, naming each party that could not.
//!
//! Keygen: make sure the party set has aux info (run aux-info generation
//! once if not), then propose the DKG to every party, start it, run it;
//! then certify the key and store its transcript ([`crate::transcript`]).

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use keygen::record::KeyRecord;
use proto::v1 as pb;
use rand::RngCore;
use tss_core::ecdsa::sign::{HashAlgo, ToSign};
use tss_core::envelope::Protocol;
use tss_core::identity::PartyId;
use tss_core::session::{self, SessionInfo};
use tss_core::store::RecordKind;

use crate::client_auth;
use crate::config::ClientEntry;
use crate::error::{blocking, ApiError};
use crate::flows;
use crate::metrics::SignPath;
use crate::node::{Node, RequestClaim, SessionFailure};
use crate::signable::{self, Decoded};

/// Progress reports of a long request.
pub type Progress = tokio::sync::mpsc::Sender<pb::KeygenProgress>;

/// How the bytes of a Sign request become what is signed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Hashing {
    /// The node hashes the message itself (presignatures allowed).
    Node(HashAlgo),
    /// The message is a raw 32-byte digest (full protocol only).
    Raw,
}

/// Maps the wire hash enum.
pub fn hash_algo(h: i32) -> Result<Hashing, ApiError> {
    match pb::HashAlgorithm::try_from(h) {
        Ok(pb::HashAlgorithm::Sha256) => Ok(Hashing::Node(HashAlgo::Sha256)),
        Ok(pb::HashAlgorithm::Keccak256) => Ok(Hashing::Node(HashAlgo::Keccak256)),
        Ok(pb::HashAlgorithm::DoubleSha256) => Ok(Hashing::Node(HashAlgo::DoubleSha256)),
        Ok(pb::HashAlgorithm::Eip191) => Ok(Hashing::Node(HashAlgo::Eip191)),
        Ok(pb::HashAlgorithm::BitcoinMessage) => Ok(Hashing::Node(HashAlgo::BitcoinMessage)),
        Ok(pb::HashAlgorithm::None) => Ok(Hashing::Raw),
        Ok(pb::HashAlgorithm::Unspecified) => Err(ApiError::InvalidArgument(
            "hash is not set: choose EIP191 or BITCOIN_MESSAGE (signed messages), or SHA256, KECCAK256, DOUBLE_SHA256 or NONE (bare hash, raw digest)".into(),
        )),
        Err(_) => Err(ApiError::InvalidArgument(format!(
            "unknown hash algorithm {h}: choose SHA256 (1), KECCAK256 (2), DOUBLE_SHA256 (3), NONE (4), EIP191 (5) or BITCOIN_MESSAGE (6)"
        ))),
    }
}

/// What the engine signs, and the 32-byte digest.
pub fn to_sign(hashing: Hashing, message: &[u8]) -> Result<(ToSign, [u8; 32]), ApiError> {
    match hashing {
        Hashing::Node(h) => {
            let (data, digest) = h.data_to_sign(message);
            Ok((ToSign::Hashed(data), digest))
        }
        Hashing::Raw => {
            let digest: [u8; 32] = message.try_into().map_err(|_| {
                ApiError::InvalidArgument(format!(
                    "hash NONE signs a raw digest: the message must be exactly 32 bytes, not {}",
                    message.len()
                ))
            })?;
            Ok((ToSign::raw_digest(&digest), digest))
        }
    }
}

/// Checks a Sign request's fields (shared by coordinator and co-signers).
pub fn check_sign_input(
    node: &Node,
    key_id: &str,
    message: &[u8],
    request_id: &[u8],
) -> Result<(), ApiError> {
    keygen::record::check_key_id(key_id).map_err(|e| ApiError::InvalidArgument(e.to_string()))?;
    if message.is_empty() {
        return Err(ApiError::InvalidArgument(
            "message is empty: send the bytes to sign".into(),
        ));
    }
    if message.len() > node.cfg.limits.max_message_bytes {
        return Err(ApiError::InvalidArgument(format!(
            "message is {} bytes; this node signs messages of at most {} bytes",
            message.len(),
            node.cfg.limits.max_message_bytes
        )));
    }
    if request_id.is_empty() || request_id.len() > 128 {
        return Err(ApiError::InvalidArgument(
            "request_id must be 1-128 bytes".into(),
        ));
    }
    Ok(())
}

/// Key under which a signed request is recorded (`seen_execution` tree).
pub fn signed_key(key_id: &str, request_id: &[u8], digest: &[u8; 32]) -> Vec<u8> {
    [
        b"signed/".as_slice(),
        &session::sign_request_id(key_id, request_id, digest),
    ]
    .concat()
}

/// Whether this node released its part of a signature for the session
/// (key, session request id, digest): it was recorded as signed.
pub async fn signed_here(
    node: &Arc<Node>,
    key_id: &str,
    request_id: &[u8],
    digest: &[u8; 32],
) -> Result<bool, ApiError> {
    let (n, k) = (node.clone(), signed_key(key_id, request_id, digest));
    blocking(move || Ok(n.store.contains(RecordKind::SeenExecution, &k)?)).await
}

/// Refuses, with `ALREADY_EXISTS` naming the conflict, a client request id
/// this node saw for another client or another request ([`crate::retry`]).
pub async fn check_request_id(
    node: &Arc<Node>,
    key_id: &str,
    request_id: &[u8],
    client: &str,
    request: [u8; 32],
) -> Result<(), ApiError> {
    request_id_binding(node, key_id, request_id, client, request, false).await
}

/// Binds a client request id to its request durably, once allowed here.
pub async fn bind_request_id(
    node: &Arc<Node>,
    key_id: &str,
    request_id: &[u8],
    client: &str,
    request: [u8; 32],
) -> Result<(), ApiError> {
    request_id_binding(node, key_id, request_id, client, request, true).await
}

/// [`crate::retry::bind`] (`bind`) or [`crate::retry::check_binding`], off
/// the reactor.
async fn request_id_binding(
    node: &Arc<Node>,
    key_id: &str,
    request_id: &[u8],
    client: &str,
    request: [u8; 32],
    bind: bool,
) -> Result<(), ApiError> {
    let (n, k, r, c) = (
        node.clone(),
        key_id.to_owned(),
        request_id.to_vec(),
        client.to_owned(),
    );
    blocking(move || {
        if bind {
            crate::retry::bind(&n, &k, &r, &c, &request)
        } else {
            crate::retry::check_binding(&n, &k, &r, &c, &request)
        }
    })
    .await
}

/// The signature of a session this node kept, rebuilt and verified, as
/// the response to a retry.
pub async fn stored_response(
    node: &Arc<Node>,
    record: &KeyRecord,
    request_id: &[u8],
    digest: &[u8; 32],
    started: Instant,
) -> Result<Option<pb::SignResponse>, ApiError> {
    let (n, k, r, d) = (
        node.clone(),
        record.key_id.clone(),
        request_id.to_vec(),
        *digest,
    );
    let Some((rs, signers)) =
        blocking(move || crate::retry::stored_signature(&n, &k, &r, &d)).await?
    else {
        return Ok(None);
    };
    let public_key = record
        .public_key_bytes()
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    let fin = tss_core::chain::finish_signature(&public_key, digest, &rs)
        .map_err(|e| ApiError::Internal(format!("a kept signature does not verify ({e})")))?;
    tracing::info!(key_id = %record.key_id, "a retried request: the kept signature is returned");
    Ok(Some(signature_response(
        &fin,
        digest,
        public_key,
        signers,
        "stored",
        vec![],
        started,
    )))
}

/// A Sign response for the finished signature `fin` of `digest`.
fn signature_response(
    fin: &tss_core::chain::EcdsaSignature,
    digest: &[u8; 32],
    public_key: Vec<u8>,
    signers: Vec<String>,
    path: &str,
    presignature_id: Vec<u8>,
    started: Instant,
) -> pb::SignResponse {
    pb::SignResponse {
        r: fin.r.to_vec(),
        s: fin.s.to_vec(),
        v: u32::from(fin.v),
        der: fin.der.clone(),
        signature_rsv: fin.to_rsv().to_vec(),
        digest: digest.to_vec(),
        public_key,
        signers,
        elapsed_ms: started.elapsed().as_millis() as u64,
        path: path.into(),
        presignature_id,
    }
}

/// Claims a signing request (key, request id, digest) at this node, as
/// coordinator or co-signer. Refused if it is being signed here right now or
/// was signed here before: any two signer pairs share a party, so a replay
/// through any node or pair meets a party that refuses it.
pub async fn claim_fresh_request(
    node: &Arc<Node>,
    key_id: &str,
    request_id: &[u8],
    digest: &[u8; 32],
) -> Result<RequestClaim, ApiError> {
    let claim = node
        .claim_request(session::sign_request_id(key_id, request_id, digest))
        .ok_or_else(|| {
            ApiError::AlreadyExists(format!(
                "the same request (key, request id, message) is being signed at {} right now",
                node.cfg.name
            ))
        })?;
    let (n, k) = (node.clone(), signed_key(key_id, request_id, digest));
    if blocking(move || Ok(n.store.contains(RecordKind::SeenExecution, &k)?)).await? {
        return Err(ApiError::AlreadyExists(
            "this request id was already used to sign this message with this key: use a new request id"
                .into(),
        ));
    }
    Ok(claim)
}

/// Records an execution id as used; refuses one seen before.
pub async fn mark_seen(node: &Arc<Node>, eid: [u8; 32]) -> Result<(), ApiError> {
    let n = node.clone();
    let fresh = blocking(move || {
        let fresh = n.store.insert_new(RecordKind::SeenExecution, &eid, &[1])?;
        n.store.flush()?;
        Ok(fresh)
    })
    .await?;
    if fresh {
        Ok(())
    } else {
        Err(ApiError::AlreadyExists(
            "this request id was already used to sign this message with this key: use a new request id".into(),
        ))
    }
}

/// Signers' session info: protocol indices follow ascending keygen indices.
pub fn sign_session(
    record: &KeyRecord,
    signers: &[u16],
    me: u16,
    eid: [u8; 32],
) -> Result<SessionInfo, ApiError> {
    let ids = record
        .party_ids()
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    let parties = signers
        .iter()
        .map(|&s| ids.get(usize::from(s)).copied())
        .collect::<Option<Vec<PartyId>>>()
        .ok_or_else(|| ApiError::InvalidArgument("signer index out of range".into()))?;
    let me = signers
        .iter()
        .position(|&s| s == me)
        .ok_or_else(|| ApiError::Internal("this node is not among the signers".into()))?;
    Ok(SessionInfo {
        id: eid,
        protocol: Protocol::Sign,
        me: me as u16,
        parties,
    })
}

/// Why the pool path did not produce a signature.
enum PoolMiss {
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

/// Proposes a two-party session (sign, presign) to co-signer `name`. When it
/// does not answer, or the call fails, tells it to drop the session (it may
/// have accepted late). Errors are one line for the caller's failure list.
pub async fn propose_pair(
    node: &Node,
    client: &mut proto::v1::peer_client::PeerClient<tonic::transport::Channel>,
    info: &SessionInfo,
    proposal: pb::Proposal,
    name: &str,
) -> Result<(), String> {
    propose_pair_reply(node, client, info, proposal, name)
        .await
        .map_err(|r| match r {
            Attempt::Failed(m)
            | Attempt::Denied(m)
            | Attempt::Busy(m)
            | Attempt::AlreadySigned(m)
            | Attempt::Conflict(m) => m,
            Attempt::Fatal(e) => e.to_string(),
        })
}

/// One co-signer attempt that did not produce a signature.
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

/// [`propose_pair`], telling a policy refusal apart.
async fn propose_pair_reply(
    node: &Node,
    client: &mut proto::v1::peer_client::PeerClient<tonic::transport::Channel>,
    info: &SessionInfo,
    proposal: pb::Proposal,
    name: &str,
) -> Result<(), Attempt> {
    let timeout = Duration::from_millis(node.cfg.timeouts.propose_ms);
    match tokio::time::timeout(timeout, client.propose(proposal)).await {
        Err(_) => {
            node.send_abort(info, "proposal timed out").await;
            Err(Attempt::Failed(format!(
                "{name}: no answer within {} ms",
                timeout.as_millis()
            )))
        }
        Ok(Err(status)) if status.code() == tonic::Code::ResourceExhausted => Err(Attempt::Busy(
            format!("{name}: busy ({})", status.message()),
        )),
        Ok(Err(status)) => {
            node.metrics.peer_rpc_error(name);
            node.send_abort(info, "proposal failed").await;
            Err(Attempt::Failed(format!(
                "{name}: unreachable ({})",
                status.message()
            )))
        }
        Ok(Ok(reply)) if reply.get_ref().denied => Err(Attempt::Denied(format!(
            "{name}: {}",
            reply.get_ref().reason
        ))),
        Ok(Ok(reply)) if reply.get_ref().conflict => Err(Attempt::Conflict(format!(
            "{name}: {}",
            reply.get_ref().reason
        ))),
        Ok(Ok(reply)) if reply.get_ref().already_signed => Err(Attempt::AlreadySigned(format!(
            "{name}: {}",
            reply.get_ref().reason
        ))),
        Ok(Ok(reply)) if !reply.get_ref().accepted => Err(Attempt::Failed(format!(
            "{name}: declined ({})",
            reply.get_ref().reason
        ))),
        Ok(Ok(_)) => Ok(()),
    }
}

/// Everything one Sign request needs, shared by both paths.
struct SignJob {
    record: KeyRecord,
    public_key: Vec<u8>,
    /// This session's request id (a PSBT input's own, derived from the
    /// client's).
    request_id: Vec<u8>,
    /// What co-signers are sent.
    wire: Wire,
    digest: [u8; 32],
    /// What the request counts against this node's limits.
    release: Release,
    /// This session's partial signature may have left (full protocol).
    partial_left: Arc<std::sync::atomic::AtomicBool>,
    started: Instant,
}

impl SignJob {
    /// A signing proposal of this job for `signers`.
    fn sign_proposal(&self, signers: &[u16]) -> pb::SignProposal {
        pb::SignProposal {
            key_id: self.record.key_id.clone(),
            signers: signers.iter().map(|&s| u32::from(s)).collect(),
            request_id: self.wire.request_id.clone(),
            message: self.wire.message.clone(),
            hash: self.wire.hash,
            payload: self.wire.payload.clone(),
            authorization: self.wire.authorization.clone(),
        }
    }
}

impl SignJob {
    fn response(
        &self,
        fin: &tss_core::chain::EcdsaSignature,
        signers: &[u16],
        path: &str,
        presignature_id: Vec<u8>,
    ) -> pb::SignResponse {
        let names = signers
            .iter()
            .map(|&s| {
                self.record
                    .parties
                    .get(usize::from(s))
                    .map_or_else(String::new, |p| p.name.clone())
            })
            .collect();
        signature_response(
            fin,
            &self.digest,
            self.public_key.clone(),
            names,
            path,
            presignature_id,
            self.started,
        )
    }

    /// Independent check with k256 before anything is released.
    fn finish(
        &self,
        sig: &tss_core::ecdsa::Signature,
    ) -> Result<tss_core::chain::EcdsaSignature, ApiError> {
        let mut rs = [0u8; 64];
        sig.write_to_slice(&mut rs);
        tss_core::chain::finish_signature(&self.public_key, &self.digest, &rs).map_err(|e| {
            tracing::error!(error = %e, "combined signature does not verify; not released");
            ApiError::Internal(format!(
                "the combined signature does not verify ({e}); nothing was released"
            ))
        })
    }
}

/// Signs from a presignature this node and `cand` hold: consume ours
/// (durably, with the request recorded as signed) while the co-signer
/// consumes its own and returns its partial signature; combine, verify.
async fn sign_from_pool(
    node: &Arc<Node>,
    job: &SignJob,
    data: cggmp24::DataToSign<tss_core::ecdsa::Curve>,
    cand: u16,
    ids: Vec<[u8; 32]>,
    name: &str,
    client_rpc: &mut proto::v1::peer_client::PeerClient<tonic::transport::Channel>,
) -> Result<pb::SignResponse, PoolMiss> {
    let me = job.record.my_index;
    let mut signers = vec![me, cand];
    signers.sort_unstable();
    let key_id = job.record.key_id.clone();
    // The pair's leader (lower index) draws from the front of the sorted
    // ids, the other party from the back, so that the two rarely pick the
    // same presignature at once; a claim keeps our own requests apart.
    let mut ids = ids;
    if signers.first() != Some(&me) {
        ids.reverse();
    }
    let Some((pid, _picked)) = ids
        .iter()
        .find_map(|id| node.claim_presignature(*id).map(|c| (*id, c)))
    else {
        return Err(PoolMiss::Missing("no presignature ready".into()));
    };
    let local = crate::presign::consume(
        node,
        &job.record,
        &signers,
        pid,
        &job.request_id,
        job.digest,
        "coordinator",
    );
    let remote = tokio::time::timeout(
        Duration::from_millis(node.cfg.timeouts.propose_ms),
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
                node.cfg.timeouts.propose_ms
            )))
        }
        Ok(Err(status)) => {
            node.metrics.peer_rpc_error(name);
            return Err(PoolMiss::Failed(format!(
                "{name}: unreachable ({})",
                status.message()
            )));
        }
        Ok(Ok(r)) => r.into_inner(),
    };
    let Some(ours) = ours else {
        return Err(PoolMiss::Missing(format!(
            "{} lacks presignature {}",
            node.cfg.name,
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
    let mine = ours.issue(data);
    let partials: Vec<[u8; 32]> = signers
        .iter()
        .map(|&s| if s == me { mine } else { theirs })
        .collect();
    let sig = ours.combine(&partials, data).map_err(|e| {
        tracing::error!(co_signer = %name, error = %e, "invalid partial signature");
        PoolMiss::Failed(format!("{name}: {e}"))
    })?;
    let fin = job
        .finish(&sig)
        .map_err(|e| PoolMiss::Failed(e.to_string()))?;
    Ok(job.response(&fin, &signers, "pool", pid.to_vec()))
}

/// The last progress line of a keygen that gave a ready key.
async fn progress_ready(p: &Progress, started: Instant, rec: &KeyRecord) {
    let detail = format!(
        "key {} ready and certified; public key {}",
        rec.key_id, rec.public_key
    );
    progress(p, started, "done", detail).await;
}

async fn is_ready(node: &Arc<Node>, key_id: &str) -> Result<bool, ApiError> {
    let (n, k) = (node.clone(), key_id.to_owned());
    blocking(move || flows::is_ready(&n, &k)).await
}

/// Loads a key this node holds, or NOT_FOUND.
pub async fn load_record(node: &Arc<Node>, key_id: &str) -> Result<KeyRecord, ApiError> {
    let (n, k) = (node.clone(), key_id.to_owned());
    blocking(move || flows::load_ready_record(&n, &k))
        .await?
        .ok_or_else(|| {
            ApiError::NotFound(format!(
                "no key {key_id:?}: create it with Keygen, or check the id"
            ))
        })
}

/// Evaluates this node's policy for `client` on a decoded request, appends
/// the decision to the audit log (durably, before anything is signed) and
/// reserves the amounts it moves. PERMISSION_DENIED names the rule.
pub async fn check_policy(
    node: &Arc<Node>,
    client: &str,
    key_id: &str,
    request_id: &[u8],
    decoded: &Decoded,
    role: String,
) -> Result<Option<crate::spend::Reservation>, ApiError> {
    let (n, client, key_id, request_id, decoded) = (
        node.clone(),
        client.to_owned(),
        key_id.to_owned(),
        request_id.to_vec(),
        decoded.clone(),
    );
    blocking(move || {
        let policy = n.policy();
        let intent = decoded.intent();
        let (d, reservation) = n.ledger.decide(&n.store, &key_id, decoded.tx_id, |usage| {
            policy.evaluate(&client, &key_id, &intent, usage)
        });
        let body = crate::audit::AuditBody {
            seq: 0,
            unix_ms: 0,
            node: n.cfg.name.clone(),
            role,
            client: client.clone(),
            key_id: key_id.clone(),
            request_id: hex::encode(&request_id),
            decision: if d.allow { "allow" } else { "deny" }.into(),
            rule: d.rule.clone(),
            reason: d.reason.clone(),
            intent: crate::policy::intent_json(&intent),
        };
        n.audit.append(&n.store, body)?;
        if d.allow {
            tracing::info!(client, key_id, reason = %d.reason, "policy allows");
            Ok(reservation)
        } else {
            tracing::warn!(client, key_id, rule = %d.rule, reason = %d.reason, "policy denies");
            Err(ApiError::PermissionDenied(format!(
                "{} policy denies (rule {}): {}",
                n.cfg.name, d.rule, d.reason
            )))
        }
    })
    .await
}

/// What a request counts against this node's limits, committed durably at
/// the first moment this node releases any part of a signature for it (its
/// partial signature, on either path and in either role, or the finished
/// signature), and dropped if it never does. Shared by the sessions of one
/// request (every input of a PSBT).
#[derive(Clone, Default)]
pub struct Release {
    reservation: Arc<std::sync::Mutex<Option<crate::spend::Reservation>>>,
}

impl Release {
    /// A release of `reservation` (`None`: nothing to count).
    pub fn new(reservation: Option<crate::spend::Reservation>) -> Self {
        Release {
            reservation: Arc::new(std::sync::Mutex::new(reservation)),
        }
    }

    /// Records the amounts durably (blocking); later calls record nothing.
    pub fn commit(
        &self,
        store: &tss_core::store::Store,
    ) -> Result<(), tss_core::store::StoreError> {
        let r = self
            .reservation
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        match r {
            Some(r) => r.commit(store),
            None => Ok(()),
        }
    }

    /// The hook that runs right before this node's partial signature of a
    /// full-protocol session leaves: records the amounts and the request as
    /// signed here (`key_id`, session `request_id`, `digest`), durably, and
    /// sets `left` (the session's own flag: its partial signature may have
    /// left). If recording fails the partial signature is withheld.
    pub fn before_partial(
        &self,
        node: &Arc<Node>,
        key_id: &str,
        request_id: &[u8],
        digest: &[u8; 32],
        left: Arc<std::sync::atomic::AtomicBool>,
    ) -> tss_core::ecdsa::sign::BeforeRelease {
        let (release, n) = (self.clone(), node.clone());
        let key = signed_key(key_id, request_id, digest);
        Box::new(move || {
            release.commit(&n.store).map_err(|e| {
                tracing::error!(error = %e, "cannot record a released amount; partial signature withheld");
                format!(
                    "{} cannot record the amount against its policy limits ({e})",
                    n.cfg.name
                )
            })?;
            n.store
                .put(RecordKind::SeenExecution, &key, &[1])
                .and_then(|()| n.store.flush())
                .map_err(|e| {
                    tracing::error!(error = %e, "cannot record a signed request; partial signature withheld");
                    format!("{} cannot record the signed request ({e})", n.cfg.name)
                })?;
            left.store(true, Ordering::SeqCst);
            Ok(())
        })
    }
}

/// Records what this node released against the policy limits; a request
/// whose amounts cannot be recorded is not released.
pub async fn commit_spend(
    node: &Arc<Node>,
    reservation: Option<crate::spend::Reservation>,
) -> Result<(), ApiError> {
    let Some(r) = reservation else {
        return Ok(());
    };
    let n = node.clone();
    blocking(move || {
        r.commit(&n.store).map_err(|e| {
            tracing::error!(error = %e, "cannot record a released amount");
            ApiError::Internal(format!(
                "cannot record the amount against the policy limits ({e}); the signature is withheld"
            ))
        })
    })
    .await
}

/// What co-signers are sent: the client's request bytes, how to decode
/// them, and the client's signature over them.
#[derive(Clone, Debug, Default)]
pub struct Wire {
    /// The client's request id (a PSBT's, not its inputs').
    pub request_id: Vec<u8>,
    /// Message, unsigned transaction or PSBT.
    pub message: Vec<u8>,
    /// Hash algorithm (wire enum) for messages.
    pub hash: i32,
    /// Transaction kind; `None` for messages.
    pub payload: Option<pb::SignPayload>,
    /// The client's signature over its request (`None` only for the key's
    /// own certificate).
    pub authorization: Option<pb::ClientAuthorization>,
}

/// Sign (a message) as coordinator, for `caller` (the TLS client).
pub async fn sign(
    node: Arc<Node>,
    caller: &ClientEntry,
    req: pb::SignRequest,
) -> Result<pb::SignResponse, ApiError> {
    let started = Instant::now();
    let hashing = hash_algo(req.hash)?;
    check_sign_input(&node, &req.key_id, &req.message, &req.request_id)?;
    let asked = client_auth::signing_request(
        &req.key_id,
        &req.request_id,
        &req.message,
        req.hash,
        "",
        None,
    );
    let client = client_auth::verify_caller(&node, caller, &asked, req.authorization.as_ref())?;
    let request = asked.digest().map_err(client_auth::AuthError::from)?;
    let decoded = signable::message(hashing, &req.message)?;
    let record = load_record(&node, &req.key_id).await?;
    check_request_id(
        &node,
        &record.key_id,
        &req.request_id,
        &client.name,
        request,
    )
    .await?;
    if let Some(resp) =
        stored_response(&node, &record, &req.request_id, &decoded.digest, started).await?
    {
        return Ok(resp);
    }
    let reservation = check_policy(
        &node,
        &client.name,
        &record.key_id,
        &req.request_id,
        &decoded,
        "coordinator".into(),
    )
    .await?;
    bind_request_id(
        &node,
        &record.key_id,
        &req.request_id,
        &client.name,
        request,
    )
    .await?;
    let request_id = req.request_id.clone();
    let wire = Wire {
        request_id: req.request_id,
        message: req.message,
        hash: req.hash,
        payload: None,
        authorization: req.authorization,
    };
    sign_decoded(
        &node,
        record,
        &request_id,
        wire,
        &decoded,
        Release::new(reservation),
        started,
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
    let node = node.clone();
    let (data, digest) = (decoded.data, decoded.digest);
    // A retry: the signature kept here, or, if this node released its part
    // before without keeping the signature, the one a peer kept.
    if let Some(resp) = stored_response(&node, &record, request_id, &digest, started).await? {
        return Ok(resp);
    }
    if signed_here(&node, &record.key_id, request_id, &digest).await? {
        return find_elsewhere(&node, &record, request_id, &wire, &digest, started).await;
    }
    let _claim = claim_fresh_request(&node, &record.key_id, request_id, &digest).await?;
    let me = record.my_index;
    let ids = record
        .party_ids()
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    let public_key = record
        .public_key_bytes()
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    let job = SignJob {
        record,
        public_key,
        request_id: request_id.to_vec(),
        wire,
        digest,
        release,
        partial_left: Default::default(),
        started,
    };
    let record = &job.record;
    // Co-signers with presignatures ready first, the fullest pool first (not
    // counting those our other requests hold right now); on a tie, pairs
    // this node leads, so that the two parties of a pair seldom draw from
    // its pool at the same moment.
    let mut candidates = Vec::new();
    for cand in (0..ids.len() as u16).filter(|&c| c != me) {
        let mut pair = vec![me, cand];
        pair.sort_unstable();
        let leads = pair[0] == me;
        let (n, k) = (node.clone(), record.key_id.clone());
        let ready: Vec<[u8; 32]> = match data {
            ToSign::Hashed(_) if node.cfg.presign.target > 0 => {
                blocking(move || crate::presign::ready_ids(&n, &k, &pair))
                    .await?
                    .into_iter()
                    .filter(|id| !node.presignature_claimed(id))
                    .collect()
            }
            _ => vec![],
        };
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
                .party(&cand_id)
                .map_or_else(|| format!("party #{cand}"), |p| p.name.clone());
            let Some(mut client_rpc) = node.party(&cand_id).and_then(|p| p.client.clone()) else {
                failures.push(format!("{name}: not in this node's config"));
                continue;
            };
            if let (ToSign::Hashed(hashed), false) = (data, ready.is_empty()) {
                match sign_from_pool(&node, &job, hashed, cand, ready, &name, &mut client_rpc).await
                {
                    Ok(resp) => {
                        node.counters.pool_signs.fetch_add(1, Ordering::Relaxed);
                        node.metrics.observe_sign(SignPath::Pool, started.elapsed());
                        break 'sign Ok(resp);
                    }
                    Err(PoolMiss::Missing(why)) => {
                        node.counters.fallbacks.fetch_add(1, Ordering::Relaxed);
                        tracing::info!(co_signer = %name, why, "presignature unavailable; full protocol");
                    }
                    Err(PoolMiss::Failed(why)) => {
                        tracing::warn!(co_signer = %name, why, "pool signing failed; trying the next co-signer");
                        failures.push(why);
                        continue;
                    }
                    Err(PoolMiss::Denied(why)) => {
                        tracing::warn!(co_signer = %name, why, "co-signer's policy refused; trying the next co-signer");
                        denials.push(why);
                        continue;
                    }
                    Err(PoolMiss::AlreadySigned(why)) => {
                        signed_before.push(why);
                        continue;
                    }
                    Err(PoolMiss::Conflict(why)) => {
                        conflicts.push(why);
                        continue;
                    }
                }
            }
            let share = match &share {
                Some(s) => s.clone(),
                None => {
                    let (n, key_id) = (node.clone(), record.key_id.clone());
                    let s = Arc::new(blocking(move || flows::load_share(&n, &key_id)).await?);
                    share = Some(s.clone());
                    s
                }
            };
            match sign_full(&node, &job, data, cand, &name, &mut client_rpc, share).await {
                Ok(resp) => {
                    node.counters.full_signs.fetch_add(1, Ordering::Relaxed);
                    node.metrics.observe_sign(SignPath::Full, started.elapsed());
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
            break 'sign Err(ApiError::AlreadyExists(conflicts.join("; ")));
        }
        if !signed_before.is_empty() {
            // A retry of a request another node coordinated: never a new
            // signature, and never UNAVAILABLE for a known request.
            tracing::info!(reasons = %signed_before.join("; "), "a retried request; fetching its signature");
            break 'sign find_elsewhere(&node, record, request_id, &job.wire, &digest, started)
                .await;
        }
        if !busy.is_empty() && denials.is_empty() {
            // A co-signer is up but at its session limit: worth a retry.
            failures.extend(busy);
            break 'sign Err(ApiError::ResourceExhausted(format!(
                "no co-signer has a free session for key {} now; retry later: {}",
                record.key_id,
                failures.join("; ")
            )));
        }
        failures.extend(busy);
        if failures.is_empty() && !denials.is_empty() {
            break 'sign Err(ApiError::PermissionDenied(format!(
                "{} allowed it, but every co-signer refused: {}",
                node.cfg.name,
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
            blocking(move || {
                release.commit(&n.store).map_err(|e| {
                    tracing::error!(error = %e, "cannot record a released amount");
                    ApiError::Internal(format!(
                        "cannot record the amount against the policy limits ({e}); the signature is withheld"
                    ))
                })?;
                crate::retry::store_signature(&n, &k, &r, &digest, &rs, signers)
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
                signed_key(&record.key_id, request_id, &digest),
            );
            let _ = blocking(move || {
                n.store.take(RecordKind::SeenExecution, &k)?;
                Ok(())
            })
            .await;
            Err(e)
        }
    }
}

/// `r || s` of a response.
fn rs_of(resp: &pb::SignResponse) -> Result<[u8; 64], ApiError> {
    [resp.r.as_slice(), resp.s.as_slice()]
        .concat()
        .try_into()
        .map_err(|_| ApiError::Internal("signature is not r || s".into()))
}

/// A retry of a request whose signature this node does not hold: asks
/// every other party of the key for the signature it kept, verifies it
/// under the key itself and keeps it. `FAILED_PRECONDITION` when no
/// reachable party holds it (retry later: it is never signed anew).
async fn find_elsewhere(
    node: &Arc<Node>,
    record: &KeyRecord,
    request_id: &[u8],
    wire: &Wire,
    digest: &[u8; 32],
    started: Instant,
) -> Result<pb::SignResponse, ApiError> {
    let public_key = record
        .public_key_bytes()
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    let timeout = Duration::from_millis(node.cfg.timeouts.propose_ms);
    let mut why = Vec::new();
    for (_, name, mut rpc) in key_peers(node, record)? {
        let req = pb::FindSignatureRequest {
            key_id: record.key_id.clone(),
            request_id: wire.request_id.clone(),
            message: wire.message.clone(),
            hash: wire.hash,
            payload: wire.payload.clone(),
            authorization: wire.authorization.clone(),
        };
        let r = tokio::time::timeout(timeout, rpc.find_signature(req)).await;
        let reply = match call_error(node, &name, timeout, r) {
            Ok(reply) => reply,
            Err(e) => {
                why.push(e);
                continue;
            }
        };
        if reply.conflict {
            return Err(ApiError::AlreadyExists(format!("{name}: {}", reply.reason)));
        }
        let Ok(rs) = <[u8; 64]>::try_from(reply.signature.as_slice()) else {
            why.push(match (reply.signed, reply.reason.is_empty()) {
                (true, _) => format!("{name} signed it but does not hold the signature"),
                (false, true) => format!("{name} did not sign it"),
                (false, false) => format!("{name}: {}", reply.reason),
            });
            continue;
        };
        // The peer's word is not needed: the signature verifies or not.
        let Ok(fin) = tss_core::chain::finish_signature(&public_key, digest, &rs) else {
            tracing::warn!(peer = %name, "a peer returned a signature that does not verify");
            why.push(format!("{name} returned a signature that does not verify"));
            continue;
        };
        let (n, k, r, signers) = (
            node.clone(),
            record.key_id.clone(),
            request_id.to_vec(),
            reply.signers.clone(),
        );
        let d = *digest;
        blocking(move || crate::retry::store_signature(&n, &k, &r, &d, &rs, signers)).await?;
        tracing::info!(key_id = %record.key_id, peer = %name, "a retried request: returning the signature a peer kept");
        return Ok(signature_response(
            &fin,
            digest,
            public_key,
            reply.signers,
            "stored",
            vec![],
            started,
        ));
    }
    Err(ApiError::FailedPrecondition(format!(
        "this request was signed before (or is being signed now), but no reachable party holds its signature now ({}); retry later",
        why.join("; ")
    )))
}

/// The full interactive protocol with co-signer `cand`. Errors are one line
/// for the caller's list of failures.
async fn sign_full(
    node: &Arc<Node>,
    job: &SignJob,
    data: ToSign,
    cand: u16,
    name: &str,
    client_rpc: &mut proto::v1::peer_client::PeerClient<tonic::transport::Channel>,
    share: Arc<tss_core::ecdsa::KeyShare>,
) -> Result<pb::SignResponse, Attempt> {
    let record = &job.record;
    let me = record.my_index;
    let mut signers = vec![me, cand];
    signers.sort_unstable();
    let eid = session::sign_execution_id(&record.key_id, &signers, &job.request_id, &job.digest);
    let info =
        sign_session(record, &signers, me, eid).map_err(|e| Attempt::Failed(e.to_string()))?;
    let reg = match node.register(info, false, None) {
        Ok(r) => r,
        // This node is at its session limit: tell the caller, no failover.
        Err(e @ ApiError::ResourceExhausted(_)) => return Err(Attempt::Fatal(e)),
        Err(e) => return Err(Attempt::Failed(e.to_string())),
    };
    sign_full_registered(node, job, data, name, client_rpc, share, signers, reg).await
}

/// [`sign_full`] once the session is registered; errors are one line.
#[allow(clippy::too_many_arguments)]
async fn sign_full_registered(
    node: &Arc<Node>,
    job: &SignJob,
    data: ToSign,
    name: &str,
    client_rpc: &mut proto::v1::peer_client::PeerClient<tonic::transport::Channel>,
    share: Arc<tss_core::ecdsa::KeyShare>,
    signers: Vec<u16>,
    reg: crate::node::Registered,
) -> Result<pb::SignResponse, Attempt> {
    let eid = reg.info.id;
    if let Err(e) = mark_seen(node, eid).await {
        // This pair already ran this request: another pair may still sign it.
        return Err(Attempt::Failed(format!("{name}: {e}")));
    }
    let proposal = pb::Proposal {
        session_id: eid.to_vec(),
        kind: Some(pb::proposal::Kind::Sign(job.sign_proposal(&signers))),
    };
    propose_pair_reply(node, client_rpc, &reg.info, proposal, name).await?;
    let info = reg.info.clone();
    let hook = job.release.before_partial(
        node,
        &job.record.key_id,
        &job.request_id,
        &job.digest,
        job.partial_left.clone(),
    );
    match flows::sign(node.clone(), reg, share, signers.clone(), data, Some(hook)).await {
        Ok(sig) => {
            let fin = job
                .finish(&sig)
                .map_err(|e| Attempt::Failed(e.to_string()))?;
            Ok(job.response(&fin, &signers, "full", vec![]))
        }
        Err(f) => {
            tracing::warn!(co_signer = %name, failure = %f, "signing session failed; trying the next co-signer");
            node.send_abort(&info, &f.to_string()).await;
            Err(Attempt::Failed(format!("{name}: {f}")))
        }
    }
}

async fn progress(p: &Progress, started: Instant, stage: &str, detail: String) {
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
struct Refused {
    /// One line per party that did not accept.
    reasons: Vec<String>,
    /// Some party declined because it lacks the proposed aux info.
    missing_aux: bool,
}

impl Refused {
    fn into_error(self, node: &Node) -> ApiError {
        ApiError::Unavailable(format!(
            "keygen needs all {} parties: {}",
            node.parties.len(),
            self.reasons.join("; ")
        ))
    }
}

/// Proposes a session to every other party; on any refusal aborts the ones
/// that accepted.
async fn propose_all(
    node: &Arc<Node>,
    info: &SessionInfo,
    kind: pb::proposal::Kind,
) -> Result<(), Refused> {
    let timeout = Duration::from_millis(node.cfg.timeouts.propose_ms);
    let mut calls = Vec::new();
    for p in node.parties.iter().filter(|p| p.id != node.me) {
        let Some(mut c) = p.client.clone() else {
            continue;
        };
        let name = p.name.clone();
        let metrics = node.metrics.clone();
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
    node.send_abort(info, "another party refused").await;
    Err(Refused {
        missing_aux: refusals.iter().any(|r| r.1),
        reasons: refusals.into_iter().map(|r| r.0).collect(),
    })
}

async fn start_all(node: &Arc<Node>, info: &SessionInfo) -> Result<(), ApiError> {
    let timeout = Duration::from_millis(node.cfg.timeouts.propose_ms);
    for p in node.parties.iter().filter(|p| p.id != node.me) {
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
            node.send_abort(info, "start failed").await;
            return Err(ApiError::Unavailable(format!(
                "{} did not take the start signal",
                p.name
            )));
        }
    }
    Ok(())
}

/// Runs `fut`, reporting progress every few seconds.
async fn with_heartbeat<T>(
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

fn failure(stage: &str, f: SessionFailure) -> ApiError {
    match f {
        SessionFailure::Timeout(_) => ApiError::DeadlineExceeded(format!("{stage} {f}")),
        _ => ApiError::Unavailable(format!("{stage} failed: {f}")),
    }
}

async fn run_aux(
    node: &Arc<Node>,
    ask: &KeygenAsk,
    p: &Progress,
    started: Instant,
) -> Result<(), ApiError> {
    if node.primes.ready() == 0 {
        return Err(no_primes(node));
    }

    let set = session::party_set_id(&node.party_ids());
    let mut nonce = [0u8; 32];
    rand::thread_rng().fill_bytes(&mut nonce);
    let eid = session::aux_execution_id(&set, &nonce);
    let info = node.ceremony_session(eid, Protocol::AuxInfo);
    let _in_progress = node.aux_in_progress(eid).ok_or_else(|| {
        ApiError::FailedPrecondition(format!(
            "an aux-info run is already in progress at {}; retry when it ends",
            node.cfg.name
        ))
    })?;
    let reg = node.register(info.clone(), false, None)?;
    progress(
        p,
        started,
        "aux_info",
        "proposing aux-info generation to all parties".into(),
    )
    .await;
    propose_all(
        node,
        &info,
        pb::proposal::Kind::Aux(pb::AuxProposal {
            party_set: set.to_vec(),
            nonce: nonce.to_vec(),
            key_id: ask.key_id.clone(),
            request_id: ask.request_id.clone(),
            authorization: ask.authorization.clone(),
        }),
    )
    .await
    .map_err(|r| r.into_error(node))?;
    start_all(node, &info).await?;
    progress(
        p,
        started,
        "aux_info",
        format!(
            "running (Paillier keys from pooled primes, proofs; primes left here: {})",
            node.primes.ready().saturating_sub(1)
        ),
    )
    .await;
    let r = with_heartbeat(p, started, "aux_info", flows::aux(node.clone(), reg)).await;
    if let Err(f) = r {
        node.send_abort(&info, &f.to_string()).await;
        return Err(failure("aux-info generation", f));
    }
    progress(
        p,
        started,
        "aux_info",
        "done; aux info sealed at every party".into(),
    )
    .await;
    Ok(())
}

/// An admin client's Keygen request as this node verified it: forwarded
/// with every proposal of the ceremony, and checked by every party.
struct KeygenAsk {
    key_id: String,
    request_id: Vec<u8>,
    authorization: Option<pb::ClientAuthorization>,
}

/// The error when this node has no safe primes ready.
pub fn no_primes(node: &Node) -> ApiError {
    ApiError::FailedPrecondition(format!(
        "no safe primes ready at {} (the pool is {}): aux-info generation needs one set per party; \
         retry when `tssctl health` shows primes_ready >= 1",
        node.cfg.name,
        if node.primes.generating() { "generating" } else { "empty and not configured to refill" }
    ))
}

/// Keygen as coordinator, for `caller` (the TLS client, an admin).
pub async fn keygen(
    node: Arc<Node>,
    caller: &ClientEntry,
    req: pb::KeygenRequest,
    p: Progress,
) -> Result<KeyRecord, ApiError> {
    let started = Instant::now();
    let key_id = req.key_id;
    keygen::record::check_key_id(&key_id).map_err(|e| ApiError::InvalidArgument(e.to_string()))?;
    if req.request_id.is_empty() || req.request_id.len() > 128 {
        return Err(ApiError::InvalidArgument(
            "request_id must be 1-128 bytes".into(),
        ));
    }
    let asked = client_auth::keygen_request(&key_id, &req.request_id);
    client_auth::verify_caller(&node, caller, &asked, req.authorization.as_ref())?;
    let ask = KeygenAsk {
        key_id: key_id.clone(),
        request_id: req.request_id,
        authorization: req.authorization,
    };
    let _reserved = node.reserve_key(&key_id)?;
    let (n, k) = (node.clone(), key_id.clone());
    let has_file = blocking(move || {
        Ok(n.store
            .contains(RecordKind::Transcript, &crate::transcript::file_key(&k))?)
    })
    .await?;
    if has_file {
        return Err(ApiError::AlreadyExists(format!(
            "key {key_id} already exists: choose another id"
        )));
    }
    // An earlier keygen of this id stopped after DKG (a crash or a lost
    // party during certification): finish it if every party still has its
    // part; if not, and nobody certified it, it is replaced below.
    let n = node.clone();
    let k = key_id.clone();
    if let Some(rec) = blocking(move || flows::load_key_record(&n, &k)).await? {
        progress(
            &p,
            started,
            "certificate",
            format!("key {key_id} was generated before but not certified: finishing it"),
        )
        .await;
        match with_heartbeat(
            &p,
            started,
            "certificate",
            certify_key(&node, &rec, &p, started),
        )
        .await
        {
            Ok(()) => {
                progress_ready(&p, started, &rec).await;
                return Ok(rec);
            }
            // Certified here (before, or by this attempt): never replaced.
            Err(e) if is_ready(&node, &key_id).await? => {
                return Err(prefixed(
                    e,
                    &format!(
                        "key {key_id} is certified here but its transcript could not be finished"
                    ),
                ))
            }
            Err(e) => {
                tracing::warn!(key_id, error = %e, "an unfinished key could not be finished; replacing it");
                progress(
                    &p,
                    started,
                    "keygen",
                    format!(
                        "the unfinished key {key_id} cannot be finished ({e}); generating it anew"
                    ),
                )
                .await;
            }
        }
    }
    if node.parties.len() < usize::from(node.cfg.threshold) || node.parties.len() < 2 {
        return Err(ApiError::FailedPrecondition(
            "this node has no peers configured".into(),
        ));
    }
    let set = session::party_set_id(&node.party_ids());
    for attempt in 0..2 {
        // One "load or generate aux info" at a time: two keygens must not
        // both start an aux-info run.
        let aux_lock = node.aux_lock.lock().await;
        let n = node.clone();
        let aux = match blocking(move || flows::load_aux_for_keygen(&n)).await? {
            Some(a) => a,
            None => {
                run_aux(&node, &ask, &p, started).await?;
                let n = node.clone();
                blocking(move || flows::load_aux(&n))
                    .await?
                    .ok_or_else(|| {
                        ApiError::Internal("aux info missing right after generation".into())
                    })?
            }
        };
        drop(aux_lock);
        let mut nonce = [0u8; 32];
        rand::thread_rng().fill_bytes(&mut nonce);
        let eid = session::keygen_execution_id(&key_id, &set, &nonce);
        let info = node.ceremony_session(eid, Protocol::Keygen);
        let reg = node.register(info.clone(), false, None)?;
        progress(
            &p,
            started,
            "keygen",
            format!(
                "proposing key {key_id} (t={}) to all parties",
                node.cfg.threshold
            ),
        )
        .await;
        let kind = pb::proposal::Kind::Keygen(pb::KeygenProposal {
            key_id: key_id.clone(),
            party_set: set.to_vec(),
            nonce: nonce.to_vec(),
            aux_id: aux.aux_id.to_vec(),
            threshold: u32::from(node.cfg.threshold),
            request_id: ask.request_id.clone(),
            authorization: ask.authorization.clone(),
        });
        match propose_all(&node, &info, kind).await {
            Ok(()) => {}
            Err(r) if attempt == 0 && r.missing_aux => {
                // A party lost or never stored this aux info: make new aux info.
                drop(reg);
                let n = node.clone();
                blocking(move || {
                    n.store.take(RecordKind::AuxInfo, &set)?;
                    Ok(())
                })
                .await?;
                let why = r.reasons.join("; ");
                progress(
                    &p,
                    started,
                    "aux_info",
                    format!("a party lacks the current aux info ({why}); generating anew"),
                )
                .await;
                continue;
            }
            Err(r) => return Err(r.into_error(&node)),
        }
        // Every party accepted, so none has this key certified: put aside
        // what an unfinished earlier run left here (each party does the same
        // when the session starts).
        let (n, k) = (node.clone(), key_id.clone());
        blocking(move || flows::retire_unfinished(&n, &k)).await?;
        let dkg_start = Instant::now();
        start_all(&node, &info).await?;
        progress(
            &p,
            started,
            "keygen",
            "running distributed key generation".into(),
        )
        .await;
        return match with_heartbeat(
            &p,
            started,
            "keygen",
            flows::keygen(node.clone(), reg, key_id.clone(), aux),
        )
        .await
        {
            Ok(rec) => {
                progress(
                    &p,
                    started,
                    "keygen",
                    format!(
                        "key {key_id} sealed at every party; DKG took {} ms; public key {}",
                        dkg_start.elapsed().as_millis(),
                        rec.public_key
                    ),
                )
                .await;
                with_heartbeat(
                    &p,
                    started,
                    "certificate",
                    certify_key(&node, &rec, &p, started),
                )
                .await
                .map_err(|e| {
                    tracing::error!(key_id, error = %e, "key certification failed");
                    prefixed(
                        e,
                        &format!(
                            "key {key_id} was generated and its shares are sealed at every party, \
                                 but its transcript could not be certified"
                        ),
                    )
                })?;
                progress_ready(&p, started, &rec).await;
                Ok(rec)
            }
            Err(f) => {
                node.send_abort(&info, &f.to_string()).await;
                Err(failure("keygen", f))
            }
        };
    }
    Err(ApiError::Unavailable(
        "parties could not agree on aux info".into(),
    ))
}

/// `e` with `prefix` before its message, same status code.
fn prefixed(e: ApiError, prefix: &str) -> ApiError {
    let m = |s: String| format!("{prefix}: {s}");
    match e {
        ApiError::InvalidArgument(s) => ApiError::InvalidArgument(m(s)),
        ApiError::PermissionDenied(s) => ApiError::PermissionDenied(m(s)),
        ApiError::Unauthenticated(s) => ApiError::Unauthenticated(m(s)),
        ApiError::NotFound(s) => ApiError::NotFound(m(s)),
        ApiError::AlreadyExists(s) => ApiError::AlreadyExists(m(s)),
        ApiError::Unavailable(s) => ApiError::Unavailable(m(s)),
        ApiError::ResourceExhausted(s) => ApiError::ResourceExhausted(m(s)),
        ApiError::DeadlineExceeded(s) => ApiError::DeadlineExceeded(m(s)),
        ApiError::FailedPrecondition(s) => ApiError::FailedPrecondition(m(s)),
        ApiError::Internal(s) => ApiError::Internal(m(s)),
    }
}

type PeerRpc = proto::v1::peer_client::PeerClient<tonic::transport::Channel>;

/// The other parties of a key: index, name, client.
fn key_peers(node: &Node, record: &KeyRecord) -> Result<Vec<(u16, String, PeerRpc)>, ApiError> {
    let ids = record
        .party_ids()
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    ids.iter()
        .enumerate()
        .filter(|(i, _)| *i != usize::from(record.my_index))
        .map(|(i, id)| {
            let p = node.party(id).ok_or_else(|| {
                ApiError::FailedPrecondition(format!(
                    "party #{i} of key {} is not in the config of {}",
                    record.key_id, node.cfg.name
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

/// One line for a failed peer call.
fn call_error<T>(
    node: &Node,
    name: &str,
    timeout: Duration,
    r: Result<Result<tonic::Response<T>, tonic::Status>, tokio::time::error::Elapsed>,
) -> Result<T, String> {
    match r {
        Ok(Ok(r)) => Ok(r.into_inner()),
        Ok(Err(s)) => {
            node.metrics.peer_rpc_error(name);
            Err(format!("{name}: {:?}: {}", s.code(), s.message()))
        }
        Err(_) => Err(format!(
            "{name}: no answer within {} ms",
            timeout.as_millis()
        )),
    }
}

/// After keygen, as its coordinator: completes the transcript with every
/// party, has every party certify the key, has the key sign the certificate,
/// and stores the verified transcript file here and at the peers
/// ([`crate::transcript`] lists the steps). Fails only if this node cannot
/// produce a verified file; a peer that cannot store it is reported.
async fn certify_key(
    node: &Arc<Node>,
    record: &KeyRecord,
    p: &Progress,
    started: Instant,
) -> Result<(), ApiError> {
    let peers = key_peers(node, record)?;
    progress(
        p,
        started,
        "transcript",
        "collecting the point-to-point envelopes the other parties sent each other".into(),
    )
    .await;
    let sessions = collect_transcript(node, record, &peers).await?;
    let root = sessions.root();
    progress(
        p,
        started,
        "certificate",
        format!(
            "transcript complete ({} aux-info and {} keygen envelopes, root {}); every party checks it and signs the key certificate",
            sessions.aux.len(),
            sessions.keygen.len(),
            hex::encode(root)
        ),
    )
    .await;
    let (n, k) = (node.clone(), record.key_id.clone());
    let share = Arc::new(blocking(move || flows::load_share(&n, &k)).await?);
    let (body, signatures) = certify_everywhere(node, record, &peers, &sessions, &share).await?;
    progress(
        p,
        started,
        "certificate",
        format!(
            "all {n} parties signed the same certificate; the key signs it ({}-of-{n}, full protocol)",
            record.threshold,
            n = signatures.len(),
        ),
    )
    .await;
    let key_signature = sign_certificate(node, record, &body, share).await?;
    progress(
        p,
        started,
        "transcript",
        "the key signed its certificate; checking the signatures and storing the transcript".into(),
    )
    .await;
    let (n, rec, b, sigs) = (
        node.clone(),
        record.clone(),
        body.clone(),
        signatures.clone(),
    );
    let size = blocking(move || {
        let at = |e: String| ApiError::Internal(format!("at {}: {e}", n.cfg.name));
        crate::transcript::check_signatures(&rec, &b, &sigs, &key_signature).map_err(at)?;
        let file = crate::transcript::assemble(&sessions, &b, &sigs, key_signature);
        crate::transcript::store_file(&n, &rec.key_id, &file)?;
        Ok(file.len())
    })
    .await?;
    progress(
        p,
        started,
        "transcript",
        format!(
            "transcript stored at {} ({size} bytes, root {}); sending the signatures to the other parties",
            node.cfg.name,
            hex::encode(root)
        ),
    )
    .await;
    let req = pb::StoreTranscriptRequest {
        key_id: record.key_id.clone(),
        certificate_body: body,
        signatures,
        key_signature: key_signature.to_vec(),
    };
    for detail in distribute_transcript(node, &peers, req).await {
        progress(p, started, "transcript", detail).await;
    }
    Ok(())
}

/// Step 2: asks every peer for the point-to-point envelopes it sent to the
/// others, and completes this node's views of both runs with them.
async fn collect_transcript(
    node: &Arc<Node>,
    record: &KeyRecord,
    peers: &[(u16, String, PeerRpc)],
) -> Result<crate::transcript::Sessions, ApiError> {
    // A peer may still be storing its share: it waits up to the keygen timeout.
    let wait = Duration::from_millis(node.cfg.timeouts.keygen_ms + node.cfg.timeouts.propose_ms);
    let parts = futures::future::join_all(peers.iter().map(|(_, name, c)| {
        let mut c = c.clone();
        let req = pb::TranscriptPartRequest {
            key_id: record.key_id.clone(),
        };
        async move {
            let r = tokio::time::timeout(wait, c.transcript_part(req)).await;
            call_error(node, name, wait, r).and_then(|l| {
                keygen::transcript::decode_entry_list(&l.entries)
                    .map_err(|e| format!("{name}: its transcript part does not decode: {e}"))
            })
        }
    }))
    .await;
    let mut extra = Vec::new();
    let mut failures = Vec::new();
    for r in parts {
        match r {
            Ok(v) => extra.extend(v),
            Err(e) => failures.push(e),
        }
    }
    if !failures.is_empty() {
        return Err(ApiError::Unavailable(format!(
            "cannot collect the transcript: {}",
            failures.join("; ")
        )));
    }
    let (n, rec) = (node.clone(), record.clone());
    blocking(move || {
        let mine = crate::transcript::load_views(&n, &rec)?;
        crate::transcript::complete(&rec, mine, extra).map_err(|e| {
            ApiError::Unavailable(format!("the collected transcript does not check: {e}"))
        })
    })
    .await
}

/// Step 3: sends every peer the envelopes it did not see and one
/// certificate time; builds and signs this node's own certificate; requires
/// every peer's certificate to be the same bytes, signed by its identity.
/// Returns the certificate and every party's signature (index order).
async fn certify_everywhere(
    node: &Arc<Node>,
    record: &KeyRecord,
    peers: &[(u16, String, PeerRpc)],
    sessions: &crate::transcript::Sessions,
    share: &tss_core::ecdsa::KeyShare,
) -> Result<(Vec<u8>, Vec<Vec<u8>>), ApiError> {
    use keygen::transcript::{encode_entries, SignedCertificate};
    let created_unix = crate::transcript::now_unix();
    let cert = crate::transcript::certificate(node, record, share, sessions.root(), created_unix)?;
    let own = SignedCertificate::sign(&node.identity, record.my_index, &cert);
    let body = own.body.to_vec();
    let ids = record
        .party_ids()
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    let timeout = Duration::from_millis(node.cfg.timeouts.propose_ms.max(1000) * 4);
    let replies = futures::future::join_all(peers.iter().map(|(j, name, c)| {
        let mut c = c.clone();
        let req = pb::CertifyRequest {
            key_id: record.key_id.clone(),
            missing_entries: encode_entries(&sessions.unseen_by(*j)),
            created_unix,
        };
        async move {
            if req.missing_entries.len() + 1024 > crate::node::MAX_PEER_MESSAGE {
                return Err(format!(
                    "{name}: the envelopes it lacks ({} bytes) exceed the peer message limit",
                    req.missing_entries.len()
                ));
            }
            let r = tokio::time::timeout(timeout, c.certify_key(req)).await;
            call_error(node, name, timeout, r)
        }
    }))
    .await;
    let mut signatures = vec![Vec::new(); ids.len()];
    signatures[usize::from(record.my_index)] = own.signature.to_vec();
    let mut failures = Vec::new();
    for ((j, name, _), r) in peers.iter().zip(replies) {
        let r = match r {
            Ok(r) => r,
            Err(e) => {
                failures.push(e);
                continue;
            }
        };
        if r.certificate_body != body {
            failures.push(format!(
                "{name} certifies a different key certificate ({})",
                crate::transcript::difference(&body, &r.certificate_body)
            ));
            continue;
        }
        let signed = SignedCertificate {
            party: *j,
            body: r.certificate_body.into(),
            signature: r.signature.clone().into(),
        };
        if signed.verify(&ids[usize::from(*j)]).is_err() {
            failures.push(format!(
                "{name}'s certificate signature does not verify under its pinned identity"
            ));
            continue;
        }
        signatures[usize::from(*j)] = r.signature;
    }
    if !failures.is_empty() {
        return Err(ApiError::Unavailable(format!(
            "the parties did not all certify the same key: {}",
            failures.join("; ")
        )));
    }
    let (n, rec, s, b) = (node.clone(), record.clone(), sessions.clone(), body.clone());
    blocking(move || crate::transcript::store_certified(&n, &rec, &s, &b)).await?;
    Ok((body, signatures))
}

/// Step 5: sends the signatures to every peer, which checks them and stores
/// the same file. One progress line per peer; failures do not fail keygen
/// (this node holds the file).
async fn distribute_transcript(
    node: &Arc<Node>,
    peers: &[(u16, String, PeerRpc)],
    req: pb::StoreTranscriptRequest,
) -> Vec<String> {
    let timeout = Duration::from_millis(node.cfg.timeouts.propose_ms.max(1000) * 4);
    let stored = futures::future::join_all(peers.iter().map(|(_, name, c)| {
        let mut c = c.clone();
        let req = req.clone();
        async move {
            let r = tokio::time::timeout(timeout, c.store_transcript(req)).await;
            call_error(node, name, timeout, r).map(|_| name.clone())
        }
    }))
    .await;
    stored
        .into_iter()
        .map(|r| match r {
            Ok(name) => format!("{name} checked the signatures and stored the transcript"),
            Err(e) => {
                tracing::warn!(key_id = %req.key_id, error = %e, "a party did not store the transcript");
                format!(
                    "{e} (not stored there; export the transcript from {})",
                    node.cfg.name
                )
            }
        })
        .collect()
}

/// The key's threshold signature (`r || s`, low S) over its certificate:
/// SHA-256 of the certificate domain and `body`, by the full protocol with
/// one co-signer (each co-signer signs only the certificate it signed).
async fn sign_certificate(
    node: &Arc<Node>,
    record: &KeyRecord,
    body: &[u8],
    share: Arc<tss_core::ecdsa::KeyShare>,
) -> Result<[u8; 64], ApiError> {
    let message = keygen::transcript::cert_signed_bytes(body);
    let (data, digest) = to_sign(Hashing::Node(HashAlgo::Sha256), &message)?;
    if digest != keygen::transcript::certificate_digest(body) {
        return Err(ApiError::Internal(
            "the certificate digest differs from the signed one (a bug)".into(),
        ));
    }
    let request_id = crate::transcript::CERTIFICATE_REQUEST_ID.to_vec();
    let _claim = claim_fresh_request(node, &record.key_id, &request_id, &digest).await?;
    let job = SignJob {
        record: record.clone(),
        public_key: record
            .public_key_bytes()
            .map_err(|e| ApiError::Internal(e.to_string()))?,
        wire: Wire {
            request_id: request_id.clone(),
            message,
            hash: pb::HashAlgorithm::Sha256 as i32,
            payload: None,
            authorization: None,
        },
        request_id,
        digest,
        release: Release::default(),
        partial_left: Default::default(),
        started: Instant::now(),
    };
    let mut failures = Vec::new();
    for (cand, name, mut rpc) in key_peers(node, record)? {
        match sign_full(node, &job, data, cand, &name, &mut rpc, share.clone()).await {
            Ok(resp) => {
                // Recorded as signed before our partial signature left.
                let rs: [u8; 64] = [resp.r.as_slice(), resp.s.as_slice()]
                    .concat()
                    .try_into()
                    .map_err(|_| ApiError::Internal("signature is not r || s".into()))?;
                return Ok(rs);
            }
            Err(
                Attempt::Failed(why)
                | Attempt::Denied(why)
                | Attempt::Busy(why)
                | Attempt::AlreadySigned(why)
                | Attempt::Conflict(why),
            ) => failures.push(why),
            Err(Attempt::Fatal(e)) => return Err(e),
        }
    }
    Err(ApiError::Unavailable(format!(
        "the key could not sign its certificate: {}",
        failures.join("; ")
    )))
}
