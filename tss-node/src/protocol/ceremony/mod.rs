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
) -> Result<(), String> {
    if party_set != session::party_set_id(&node.peers().ids()) {
        return Err("party set differs from this node's configured parties".into());
    }
    if expected_id != id {
        return Err("session id does not match the proposal".into());
    }
    let client = crate::request::auth::verify(node, asked, authorization).map_err(|e| {
        tracing::warn!(coordinator = %from.name, error = %e, "refused a ceremony without a valid admin authorization");
        format!("{} refuses: {e}", node.cfg().name)
    })?;
    if client.role != crate::config::Role::Admin {
        return Err(format!(
            "{} is not an admin client of {}",
            client.name,
            node.cfg().name
        ));
    }
    Ok(())
}
