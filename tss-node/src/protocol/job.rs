//! What one signing request carries to a signing run, on either path:
//! the full protocol ([`super::sign`]) and the pool path
//! ([`super::presign`]) share it, so neither imports the other for it.

use std::sync::Arc;
use std::time::Instant;

use keygen::record::KeyRecord;
use proto::v1 as pb;
use tss_core::envelope::Protocol;
use tss_core::identity::PartyId;
use tss_core::session::{self, SessionInfo};

use crate::error::ApiError;
use crate::protocol::approve::Release;
use crate::protocol::{propose_pair_reply, Attempt};
use crate::request::retry::{mark_seen, signature_response};
use crate::session::Registered;
use crate::state::Node;

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
        .ok_or_else(|| ApiError::Invalid("signer index out of range".into()))?;
    let me = signers
        .iter()
        .position(|&s| s == me)
        .ok_or_else(|| ApiError::Internal("this node is not among the signers".into()))?;
    Ok(SessionInfo {
        id: eid,
        protocol: match record.scheme {
            Some(_) => Protocol::FrostSign,
            None => Protocol::Sign,
        },
        me: me as u16,
        parties,
    })
}

/// The names of `signers` (keygen indices), as a SignResponse lists them.
pub(crate) fn signer_names(record: &KeyRecord, signers: &[u16]) -> Vec<String> {
    signers
        .iter()
        .map(|&s| {
            record
                .parties
                .get(usize::from(s))
                .map_or_else(String::new, |p| p.name.clone())
        })
        .collect()
}

/// Everything one Sign request needs, shared by both paths.
pub(crate) struct SignJob {
    pub(crate) record: KeyRecord,
    pub(crate) public_key: Vec<u8>,
    /// This session's request id (a PSBT input's own, derived from the
    /// client's).
    pub(crate) request_id: Vec<u8>,
    /// What co-signers are sent.
    pub(crate) wire: Wire,
    pub(crate) digest: [u8; 32],
    /// What a FROST key signs: the digest, or an Ed25519 key's message
    /// (`request::decode::schnorr_message`); the digest for ECDSA keys.
    pub(crate) message: Vec<u8>,
    /// What the request counts against this node's limits.
    pub(crate) release: Release,
    /// This session's partial signature may have left (full protocol).
    pub(crate) partial_left: Arc<std::sync::atomic::AtomicBool>,
    pub(crate) started: Instant,
}

impl SignJob {
    /// A signing proposal of this job for `signers`.
    pub(crate) fn sign_proposal(&self, signers: &[u16]) -> pb::SignProposal {
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
    pub(crate) fn response(
        &self,
        fin: &tss_core::chain::EcdsaSignature,
        signers: &[u16],
        path: &str,
        presignature_id: Vec<u8>,
    ) -> pb::SignResponse {
        let names = signer_names(&self.record, signers);
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
    pub(crate) fn finish(
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

/// Registers this job's session with co-signer `cand` (either scheme):
/// the signers in order and the session. A node at its session limit is
/// fatal (no fail-over); any other refusal is one line.
pub(crate) fn register_pair(
    node: &Arc<Node>,
    job: &SignJob,
    cand: u16,
) -> Result<(Registered, Vec<u16>), Attempt> {
    let record = &job.record;
    let me = record.my_index;
    let mut signers = vec![me, cand];
    signers.sort_unstable();
    let eid = session::sign_execution_id(&record.key_id, &signers, &job.request_id, &job.digest);
    let info =
        sign_session(record, &signers, me, eid).map_err(|e| Attempt::Failed(e.to_string()))?;
    match node.sessions().register(info, false, None) {
        Ok(r) => Ok((r, signers)),
        // This node is at its session limit: tell the caller, no failover.
        Err(e @ ApiError::Busy(_)) => Err(Attempt::Fatal(e)),
        Err(e) => Err(Attempt::Failed(e.to_string())),
    }
}

/// Marks the session's execution id used and proposes the job to the
/// co-signer `name` (either scheme).
pub(crate) async fn propose_job(
    node: &Arc<Node>,
    job: &SignJob,
    signers: &[u16],
    reg: &Registered,
    name: &str,
    client_rpc: &mut proto::v1::peer_client::PeerClient<tonic::transport::Channel>,
) -> Result<(), Attempt> {
    let eid = reg.info.id;
    if let Err(e) = mark_seen(node, eid).await {
        // This pair already ran this request: another pair may still sign it.
        return Err(Attempt::Failed(format!("{name}: {e}")));
    }
    let proposal = pb::Proposal {
        session_id: eid.to_vec(),
        kind: Some(pb::proposal::Kind::Sign(job.sign_proposal(signers))),
    };
    propose_pair_reply(node, client_rpc, &reg.info, proposal, name).await?;
    Ok(())
}
