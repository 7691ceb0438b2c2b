//! This node's own decision on a decoded request: its policy for the client
//! that signed the request, the audit entry (written before anything is
//! signed), and the amounts reserved against its limits until this node
//! releases a part of the signature ([`Release`]).

use std::sync::atomic::Ordering;
use std::sync::Arc;

use tss_core::store::RecordKind;

use crate::error::{blocking, ApiError};
use crate::request::decode::Decoded;
use crate::state::Node;

/// Evaluates this node's policy for `client` on a decoded request, appends
/// the decision to the audit log (durably before anything is released: a
/// denial at once, an allowed request with the flush that precedes the
/// release of any part of its signature) and reserves the amounts it
/// moves. PERMISSION_DENIED names the rule.
pub async fn check_policy(
    node: &Arc<Node>,
    client: &str,
    key_id: &str,
    request_id: &[u8],
    decoded: &Decoded,
    role: String,
) -> Result<Option<crate::policy::spend::Reservation>, ApiError> {
    let (n, client, key_id, request_id, decoded) = (
        node.clone(),
        client.to_owned(),
        key_id.to_owned(),
        request_id.to_vec(),
        decoded.clone(),
    );
    blocking(move || decide(&n, &client, &key_id, &request_id, &decoded, role)).await
}

/// [`check_policy`] on the calling (blocking) thread.
pub fn decide(
    n: &Node,
    client: &str,
    key_id: &str,
    request_id: &[u8],
    decoded: &Decoded,
    role: String,
) -> Result<Option<crate::policy::spend::Reservation>, ApiError> {
    let policy = n.policy();
    let intent = decoded.intent();
    let (d, reservation) = n
        .ledger()
        .decide(n.store(), key_id, decoded.tx_id, |usage| {
            policy.evaluate(client, key_id, &intent, usage)
        });
    let body = crate::policy::audit::AuditBody {
        seq: 0,
        unix_ms: 0,
        node: n.cfg().name.clone(),
        role,
        client: client.to_owned(),
        key_id: key_id.to_owned(),
        request_id: hex::encode(request_id),
        decision: if d.allow { "allow" } else { "deny" }.into(),
        rule: d.rule.clone(),
        reason: d.reason.clone(),
        intent: crate::policy::intent_json(&intent),
    };
    // A denial is flushed now (nothing else will be); an allowed
    // request's entry goes to disk with the flush that precedes any
    // release of a part of its signature.
    if d.allow {
        n.audit().append_unflushed(n.store(), body)?;
    } else {
        n.audit().append(n.store(), body)?;
    }
    if d.allow {
        tracing::info!(client, key_id, reason = %d.reason, "policy allows");
        Ok(reservation)
    } else {
        tracing::warn!(client, key_id, rule = %d.rule, reason = %d.reason, "policy denies");
        Err(ApiError::Policy {
            message: format!(
                "{} policy denies (rule {}): {}",
                n.cfg().name,
                d.rule,
                d.reason
            ),
            rule: d.rule,
        })
    }
}

/// What a request counts against this node's limits, committed durably at
/// the first moment this node releases any part of a signature for it (its
/// partial signature, on either path and in either role, or the finished
/// signature), and dropped if it never does. Shared by the sessions of one
/// request (every input of a PSBT).
#[derive(Clone, Default)]
pub struct Release {
    pub(crate) reservation: Arc<std::sync::Mutex<Option<crate::policy::spend::Reservation>>>,
}

impl Release {
    /// A release of `reservation` (`None`: nothing to count).
    pub fn new(reservation: Option<crate::policy::spend::Reservation>) -> Self {
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
        let key = crate::keys::signed(key_id, request_id, digest);
        Box::new(move || {
            release.commit(n.store()).map_err(|e| {
                tracing::error!(error = %e, "cannot record a released amount; partial signature withheld");
                format!(
                    "{} cannot record the amount against its policy limits ({e})",
                    n.cfg().name
                )
            })?;
            n.store()
                .put(RecordKind::SeenExecution, &key, &[1])
                .and_then(|()| n.store().flush())
                .map_err(|e| {
                    tracing::error!(error = %e, "cannot record a signed request; partial signature withheld");
                    format!("{} cannot record the signed request ({e})", n.cfg().name)
                })?;
            left.store(true, Ordering::SeqCst);
            Ok(())
        })
    }
}

/// Records what this node released against the policy limits; a request
/// whose amounts cannot be recorded is not released. Blocking.
pub fn commit_spend(
    node: &Node,
    reservation: Option<crate::policy::spend::Reservation>,
) -> Result<(), ApiError> {
    let Some(r) = reservation else {
        return Ok(());
    };
    r.commit(node.store()).map_err(|e| {
        tracing::error!(error = %e, "cannot record a released amount");
        ApiError::Internal(format!(
            "cannot record the amount against the policy limits ({e}); the signature is withheld"
        ))
    })
}
