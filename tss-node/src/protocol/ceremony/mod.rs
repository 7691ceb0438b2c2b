//! The ceremonies every party takes part in: aux-info generation
//! ([`aux`]), distributed key generation ([`keygen`]) and the key's
//! certificate and transcript ([`certify`], [`transcript`]). Each module
//! holds the coordinator's and the participants' side.

pub mod aux;
pub mod certify;
pub mod keygen;
pub mod transcript;

use std::sync::Arc;
use std::time::Instant;

use ::keygen::record::KeyRecord;
use proto::v1 as pb;
use tss_core::session::{self};

use crate::error::ApiError;
use crate::protocol::progress;
use crate::state::Node;
use crate::transport::peers::Party;

/// An admin client's Keygen request as this node verified it: forwarded
/// with every proposal of the ceremony, and checked by every party.
pub(crate) struct KeygenAsk {
    pub(crate) key_id: String,
    pub(crate) request_id: Vec<u8>,
    pub(crate) authorization: Option<pb::ClientAuthorization>,
}

/// Progress reports of a long request.
pub type Progress = tokio::sync::mpsc::Sender<pb::KeygenProgress>;

/// The error when this node has no safe primes ready.
pub fn no_primes(node: &Node) -> ApiError {
    ApiError::NotReady(format!(
        "no safe primes ready at {} (the pool is {}): aux-info generation needs one set per party; \
         retry when `tssctl health` shows primes_ready >= 1",
        node.cfg().name,
        if node.primes().generating() { "generating" } else { "empty and not configured to refill" }
    ))
}

/// The last progress line of a keygen that gave a ready key.
pub(crate) async fn progress_ready(p: &Progress, started: Instant, rec: &KeyRecord) {
    let detail = format!(
        "key {} ready and certified; public key {}",
        rec.key_id, rec.public_key
    );
    progress(p, started, "done", detail).await;
}

/// Why a party declines a keygen or aux-info proposal (the text goes back
/// to the coordinator as the reply's reason).
#[derive(Debug, thiserror::Error)]
pub(crate) enum ProposalDecline {
    /// The proposal names another party set.
    #[error("party set differs from this node's configured parties")]
    PartySet,
    /// The session id is not the one the proposal implies.
    #[error("session id does not match the proposal")]
    SessionId,
    /// The admin's signature over the Keygen request does not check.
    #[error("{node} refuses: {reason}")]
    Unauthorised {
        /// This node.
        node: String,
        /// What failed.
        reason: String,
    },
    /// The request was signed by a client that is not an admin here.
    #[error("{client} is not an admin client of {node}")]
    NotAdmin {
        /// The signing client.
        client: String,
        /// This node.
        node: String,
    },
}

/// Checks shared by keygen and aux-info proposals: the party set is this
/// node's own, the session id is the one the proposal implies, and the
/// run serves a Keygen request signed by a client that this node pins
/// as admin (checked here from the client's signature).
pub(crate) fn check_proposal(
    node: &Arc<Node>,
    from: &Party,
    party_set: &[u8],
    expected_id: [u8; 32],
    id: [u8; 32],
    asked: &tss_core::authorization::ClientRequest<'_>,
    authorization: Option<&pb::ClientAuthorization>,
) -> Result<(), ProposalDecline> {
    if party_set != session::party_set_id(&node.peers().ids()) {
        return Err(ProposalDecline::PartySet);
    }
    if expected_id != id {
        return Err(ProposalDecline::SessionId);
    }
    let client = crate::request::auth::verify(node, asked, authorization).map_err(|e| {
        tracing::warn!(coordinator = %from.name, error = %e, "refused a ceremony without a valid admin authorization");
        ProposalDecline::Unauthorised {
            node: node.cfg().name.clone(),
            reason: e.to_string(),
        }
    })?;
    if client.role != crate::config::Role::Admin {
        return Err(ProposalDecline::NotAdmin {
            client: client.name.clone(),
            node: node.cfg().name.clone(),
        });
    }
    Ok(())
}
