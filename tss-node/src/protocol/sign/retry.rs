//! A retried request: the coordinator asks the key's other parties for a
//! signature they kept ([`find_elsewhere`]); a party answers from its own
//! records only ([`find_signature`]).

use std::sync::Arc;
use std::time::{Duration, Instant};

use keygen::record::KeyRecord;
use proto::v1 as pb;

use crate::error::{blocking, ApiError};
use crate::protocol::cosign;
use crate::protocol::cosign::Ask;
use crate::protocol::sign::Wire;
use crate::protocol::{call_peer, key_peers, Refusal};
use crate::request::retry::signature_response;
use crate::state::Node;
use crate::transport::peers::Party;

/// A retry of a request whose signature this node does not hold: asks
/// every other party of the key for the signature it kept, verifies it
/// under the key itself and keeps it. `FAILED_PRECONDITION` when no
/// reachable party holds it (retry later: it is never signed anew).
pub(crate) async fn find_elsewhere(
    node: &Arc<Node>,
    record: &KeyRecord,
    request_id: &[u8],
    wire: &Wire,
    digest: &[u8; 32],
    message: &[u8],
    started: Instant,
) -> Result<pb::SignResponse, ApiError> {
    let public_key = record
        .public_key_bytes()
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    let timeout = Duration::from_millis(node.cfg().timeouts.propose_ms);
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
        let reply = match call_peer(node, &name, timeout, rpc.find_signature(req)).await {
            Ok(reply) => reply,
            Err(e) => {
                why.push(e.to_string());
                continue;
            }
        };
        if reply.conflict {
            return Err(ApiError::Conflict(format!("{name}: {}", reply.reason)));
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
        let fin = match record.scheme {
            Some(scheme) => {
                match ::keygen::transcript::frost_signature_ok(scheme, &public_key, message, &rs) {
                    Ok(true) => None,
                    _ => {
                        tracing::warn!(peer = %name, "a peer returned a signature that does not verify");
                        why.push(format!("{name} returned a signature that does not verify"));
                        continue;
                    }
                }
            }
            None => match tss_core::chain::finish_signature(&public_key, digest, &rs) {
                Ok(fin) => Some(fin),
                Err(_) => {
                    tracing::warn!(peer = %name, "a peer returned a signature that does not verify");
                    why.push(format!("{name} returned a signature that does not verify"));
                    continue;
                }
            },
        };
        let (n, k, r, signers) = (
            node.clone(),
            record.key_id.clone(),
            request_id.to_vec(),
            reply.signers.clone(),
        );
        let d = *digest;
        blocking(move || {
            crate::request::retry::store_signature(n.store(), &k, &r, &d, &rs, signers)
        })
        .await?;
        tracing::info!(key_id = %record.key_id, peer = %name, "a retried request: returning the signature a peer kept");
        let Some(fin) = fin else {
            return Ok(crate::request::retry::schnorr_response(
                record,
                &rs,
                digest,
                reply.signers,
                "stored",
                started,
            ));
        };
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
    Err(ApiError::NotReady(format!(
        "this request was signed before (or is being signed now), but no reachable party holds its signature now ({}); retry later",
        why.join("; ")
    )))
}

pub(crate) async fn find_signature(
    node: &Arc<Node>,
    from: &Party,
    r: pb::FindSignatureRequest,
) -> Result<pb::FindSignatureReply, ApiError> {
    cosign::off_reactor(node, from, move |node, from| {
        find_signature_now(node, from, &r)
    })
    .await
}

fn find_signature_now(
    node: &Node,
    from: &Party,
    r: &pb::FindSignatureRequest,
) -> Result<pb::FindSignatureReply, ApiError> {
    let refused = |reason: String| pb::FindSignatureReply {
        reason,
        ..Default::default()
    };
    if keygen::record::check_key_id(&r.key_id).is_err() {
        return Ok(refused("invalid key id".into()));
    }
    let Some(record) = crate::protocol::records::load_key_record(node.store(), &r.key_id)? else {
        return Ok(refused(format!(
            "no key {} at {}",
            r.key_id,
            node.cfg().name
        )));
    };
    let ask = Ask {
        record: &record,
        request_id: &r.request_id,
        message: &r.message,
        hash: r.hash,
        payload: r.payload.as_ref(),
        authorization: r.authorization.as_ref(),
    };
    let a = match cosign::authenticate(node, from, &ask, false)? {
        Ok(a) => a,
        Err(refusal) => return Ok(refused(refusal.flags().0)),
    };
    if let Some(Refusal::Conflict(m)) = cosign::known(node, &ask, &a)? {
        return Ok(pb::FindSignatureReply {
            conflict: true,
            ..refused(m)
        });
    }
    if let Some((rs, signers)) = crate::request::retry::stored_signature(
        node.store(),
        &record.key_id,
        &a.request_id,
        &a.decoded.digest,
    )? {
        tracing::info!(caller = %from.name, key_id = %record.key_id, "handed out a kept signature for a retried request");
        return Ok(pb::FindSignatureReply {
            signed: true,
            signature: rs.to_vec(),
            signers,
            ..Default::default()
        });
    }
    let signed =
        crate::request::retry::is_signed(node, &record.key_id, &a.request_id, &a.decoded.digest)?;
    Ok(pb::FindSignatureReply {
        signed,
        ..Default::default()
    })
}
