//! Idempotent retries: a client request id is bound to the request it first
//! named, and a signature this node made or co-signed is kept (sealed), so
//! that a client retrying the same request, through any node, gets the
//! original signature, and one reusing the id for another request gets
//! `ALREADY_EXISTS` naming the conflict.
//!
//! Records (tree `seen_execution`, values sealed like every record):
//! - `request/<key id> 0x00 <client request id>`: CBOR `{v: 1, client,
//!   request: SHA-256 of the request without its expiry}`
//!   ([`tss_core::authorization::ClientRequest::digest`]); written once the
//!   request is allowed here, never replaced.
//! - `signature/<sign request id>` (of key, session request id, digest):
//!   CBOR `{v: 1, rs: r || s (low S), signers: names}`; written before the
//!   coordinator returns the signature, and by a co-signer whose engine
//!   produced it.
//!
//! All functions here block (store access). Whether this node released its
//! part of a signature is [`crate::request::retry::is_signed`].

use std::sync::Arc;
use std::time::Instant;

use keygen::record::KeyRecord;
use proto::v1 as pb;
use serde::{Deserialize, Serialize};
use tss_core::session::{self};
use tss_core::store::{RecordKind, Store};

use crate::error::{blocking, ApiError};
use crate::state::claims::RequestClaim;
use crate::state::Node;

pub(crate) const VERSION: u8 = 1;

#[derive(Serialize, Deserialize)]
pub(crate) struct Binding {
    pub(crate) v: u8,
    pub(crate) client: String,
    #[serde(with = "serde_bytes")]
    pub(crate) request: Vec<u8>,
}

#[derive(Serialize, Deserialize)]
pub(crate) struct StoredSignature {
    pub(crate) v: u8,
    #[serde(with = "serde_bytes")]
    pub(crate) rs: Vec<u8>,
    pub(crate) signers: Vec<String>,
}

pub(crate) fn encode<T: Serialize>(v: &T) -> Result<Vec<u8>, ApiError> {
    let mut out = Vec::new();
    ciborium::into_writer(v, &mut out)
        .map_err(|e| ApiError::Internal(format!("encoding a record: {e}")))?;
    Ok(out)
}

pub(crate) fn corrupt(what: &str, e: impl std::fmt::Display) -> ApiError {
    tracing::error!(error = %e, "a {what} record is unusable");
    ApiError::Internal(format!("a stored {what} record is unusable: {e}"))
}

/// Why a request id cannot be used for this request, if it cannot.
pub(crate) fn conflict(
    b: &Binding,
    key_id: &str,
    client: &str,
    request: &[u8; 32],
) -> Option<String> {
    if b.client != client {
        return Some(format!(
            "request id already used with key {key_id} by client {}: use a new request id",
            b.client
        ));
    }
    (b.request.as_slice() != request.as_slice()).then(|| {
        format!(
            "request id already used with key {key_id} for another request (another payload, hash or chain): use a new request id, or retry the original request unchanged"
        )
    })
}

pub(crate) fn load_binding(store: &Store, key: &[u8]) -> Result<Option<Binding>, ApiError> {
    match store.get(RecordKind::SeenExecution, key)? {
        None => Ok(None),
        Some(v) => ciborium::from_reader(v.expose())
            .map(Some)
            .map_err(|e| corrupt("request id", e)),
    }
}

/// Refuses (`ALREADY_EXISTS`, naming the conflict) a request id of key
/// `key_id` that this node saw for another client or another request.
pub fn check_binding(
    node: &Node,
    key_id: &str,
    request_id: &[u8],
    client: &str,
    request: &[u8; 32],
) -> Result<(), ApiError> {
    match load_binding(
        node.store(),
        &crate::keys::request_binding(key_id, request_id),
    )? {
        Some(b) => match conflict(&b, key_id, client, request) {
            Some(why) => Err(ApiError::Conflict(why)),
            None => Ok(()),
        },
        None => Ok(()),
    }
}

/// Binds the request id to this request (first request wins). Durable
/// with the store's next flush, which precedes the release of any part of
/// a signature for it: a crash before then loses the binding with the
/// rest of the request, which was never signed.
pub fn bind(
    node: &Node,
    key_id: &str,
    request_id: &[u8],
    client: &str,
    request: &[u8; 32],
) -> Result<(), ApiError> {
    let key = crate::keys::request_binding(key_id, request_id);
    let b = Binding {
        v: VERSION,
        client: client.to_owned(),
        request: request.to_vec(),
    };
    if !node
        .store()
        .insert_new(RecordKind::SeenExecution, &key, &encode(&b)?)?
    {
        // Bound before (or just now, by a concurrent request).
        return check_binding(node, key_id, request_id, client, request);
    }
    Ok(())
}

/// Keeps the signature of a session (`r || s`, low S) for retries.
pub fn store_signature(
    store: &Store,
    key_id: &str,
    session_request_id: &[u8],
    digest: &[u8; 32],
    rs: &[u8; 64],
    signers: Vec<String>,
) -> Result<(), ApiError> {
    let s = StoredSignature {
        v: VERSION,
        rs: rs.to_vec(),
        signers,
    };
    store.put(
        RecordKind::SeenExecution,
        &crate::keys::kept_signature(key_id, session_request_id, digest),
        &encode(&s)?,
    )?;
    store.flush()?;
    Ok(())
}

/// A kept signature: `r || s` and the signers' names.
pub type Kept = ([u8; 64], Vec<String>);

/// The kept signature of a session.
pub fn stored_signature(
    store: &Store,
    key_id: &str,
    session_request_id: &[u8],
    digest: &[u8; 32],
) -> Result<Option<Kept>, ApiError> {
    let Some(v) = store.get(
        RecordKind::SeenExecution,
        &crate::keys::kept_signature(key_id, session_request_id, digest),
    )?
    else {
        return Ok(None);
    };
    let s: StoredSignature =
        ciborium::from_reader(v.expose()).map_err(|e| corrupt("signature", e))?;
    let rs: [u8; 64] =
        s.rs.as_slice()
            .try_into()
            .map_err(|_| corrupt("signature", "not 64 bytes"))?;
    Ok(Some((rs, s.signers)))
}

/// Whether this node released its part of a signature for the session
/// (key, session request id, digest): it was recorded as signed.
pub fn is_signed(
    node: &Node,
    key_id: &str,
    request_id: &[u8],
    digest: &[u8; 32],
) -> Result<bool, ApiError> {
    let k = crate::keys::signed(key_id, request_id, digest);
    Ok(node.store().contains(RecordKind::SeenExecution, &k)?)
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

/// Binds a client request id to its request once allowed here ([`bind`]).
pub async fn bind_request_id(
    node: &Arc<Node>,
    key_id: &str,
    request_id: &[u8],
    client: &str,
    request: [u8; 32],
) -> Result<(), ApiError> {
    request_id_binding(node, key_id, request_id, client, request, true).await
}

/// [`crate::request::retry::bind`] (`bind`) or [`crate::request::retry::check_binding`], off
/// the reactor.
pub(crate) async fn request_id_binding(
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
            crate::request::retry::bind(&n, &k, &r, &c, &request)
        } else {
            crate::request::retry::check_binding(&n, &k, &r, &c, &request)
        }
    })
    .await
}

/// The signature of a session this node kept, rebuilt and verified (off
/// the reactor), as the response to a retry.
pub async fn stored_response(
    node: &Arc<Node>,
    record: &KeyRecord,
    request_id: &[u8],
    digest: &[u8; 32],
    started: Instant,
) -> Result<Option<pb::SignResponse>, ApiError> {
    let (n, rec, r, d) = (node.clone(), record.clone(), request_id.to_vec(), *digest);
    blocking(move || {
        stored_signature(n.store(), &rec.key_id, &r, &d)?
            .map(|kept| kept_response(&rec, kept, &d, &d, started))
            .transpose()
    })
    .await
}

/// The response for a signature kept here, rebuilt and verified (a retry).
/// Blocking: it verifies the signature.
pub fn kept_response(
    record: &KeyRecord,
    (rs, signers): Kept,
    digest: &[u8; 32],
    message: &[u8],
    started: Instant,
) -> Result<pb::SignResponse, ApiError> {
    let public_key = record
        .public_key_bytes()
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    if let Some(scheme) = record.scheme {
        if ::keygen::transcript::frost_signature_ok(scheme, &public_key, message, &rs) != Ok(true) {
            return Err(ApiError::Internal(
                "a kept signature does not verify".into(),
            ));
        }
        tracing::info!(key_id = %record.key_id, "a retried request: the kept signature is returned");
        return Ok(schnorr_response(
            record, &rs, digest, signers, "stored", started,
        ));
    }
    let fin = tss_core::chain::finish_signature(&public_key, digest, &rs)
        .map_err(|e| ApiError::Internal(format!("a kept signature does not verify ({e})")))?;
    tracing::info!(key_id = %record.key_id, "a retried request: the kept signature is returned");
    Ok(signature_response(
        &fin,
        digest,
        public_key,
        signers,
        "stored",
        vec![],
        started,
    ))
}

/// A Sign response for the finished signature `fin` of `digest`.
pub(crate) fn signature_response(
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
        signature: Vec::new(),
        scheme: "ecdsa".into(),
    }
}

/// The response for a FROST key's 64-byte signature `sig` over `digest`.
pub(crate) fn schnorr_response(
    record: &KeyRecord,
    sig: &[u8; 64],
    digest: &[u8; 32],
    signers: Vec<String>,
    path: &str,
    started: Instant,
) -> pb::SignResponse {
    pb::SignResponse {
        r: sig[..32].to_vec(),
        s: sig[32..].to_vec(),
        digest: digest.to_vec(),
        public_key: record.public_key_bytes().unwrap_or_default(),
        signers,
        elapsed_ms: started.elapsed().as_millis() as u64,
        path: path.into(),
        signature: sig.to_vec(),
        scheme: record.scheme.map_or("ecdsa", |s| s.name()).into(),
        ..Default::default()
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
    let (n, k, r, d) = (
        node.clone(),
        key_id.to_owned(),
        request_id.to_vec(),
        *digest,
    );
    blocking(move || claim_fresh(&n, &k, &r, &d)).await
}

/// [`claim_fresh_request`] on the calling (blocking) thread.
pub fn claim_fresh(
    node: &Node,
    key_id: &str,
    request_id: &[u8],
    digest: &[u8; 32],
) -> Result<RequestClaim, ApiError> {
    let claim = node
        .claims()
        .claim_request(session::sign_request_id(key_id, request_id, digest))
        .ok_or_else(|| {
            ApiError::Conflict(format!(
                "the same request (key, request id, message) is being signed at {} right now",
                node.cfg().name
            ))
        })?;
    if is_signed(node, key_id, request_id, digest)? {
        return Err(ApiError::Conflict(
            "this request id was already used to sign this message with this key: use a new request id"
                .into(),
        ));
    }
    Ok(claim)
}

/// Records an execution id as used; refuses one seen before.
pub async fn mark_seen(node: &Arc<Node>, eid: [u8; 32]) -> Result<(), ApiError> {
    let n = node.clone();
    blocking(move || mark_seen_now(&n, eid)).await
}

/// [`mark_seen`] on the calling (blocking) thread, flushed before the
/// session runs: an execution id never runs twice, also across crashes
/// (its first rounds' messages leave before any partial signature).
pub fn mark_seen_now(node: &Node, eid: [u8; 32]) -> Result<(), ApiError> {
    let fresh = node.store().insert_new(
        RecordKind::SeenExecution,
        crate::keys::execution(&eid),
        &[1],
    )?;
    node.store().flush()?;
    if fresh {
        Ok(())
    } else {
        Err(ApiError::Conflict(
            "this request id was already used to sign this message with this key: use a new request id".into(),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conflict__should_name_another_client_or_another_request() {
        let b = Binding {
            v: VERSION,
            client: "gateway".into(),
            request: vec![1; 32],
        };
        assert_eq!(conflict(&b, "k", "gateway", &[1; 32]), None);
        let other = conflict(&b, "k", "wallet", &[1; 32]).expect("another client");
        assert!(other.contains("by client gateway"), "{other}");
        let changed = conflict(&b, "k", "gateway", &[2; 32]).expect("another request");
        assert!(changed.contains("for another request"), "{changed}");
    }
}
