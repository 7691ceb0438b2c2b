//! What one signing request carries to a signing run, on either path:
//! the full protocol ([`super::sign`]) and the pool path
//! ([`super::presign`]) share it, so neither imports the other for it.

use std::sync::Arc;
use std::time::Instant;

use keygen::record::KeyRecord;
use proto::v1 as pb;
use tss_core::envelope::Protocol;
use tss_core::identity::PartyId;
use tss_core::session::SessionInfo;

use crate::error::ApiError;
use crate::protocol::approve::Release;
use crate::request::retry::signature_response;

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
        protocol: Protocol::Sign,
        me: me as u16,
        parties,
    })
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
