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
//! part of a signature is [`crate::coordinator::signed_here`].

use serde::{Deserialize, Serialize};
use tss_core::session;
use tss_core::store::RecordKind;

use crate::error::ApiError;
use crate::node::Node;

const VERSION: u8 = 1;

#[derive(Serialize, Deserialize)]
struct Binding {
    v: u8,
    client: String,
    #[serde(with = "serde_bytes")]
    request: Vec<u8>,
}

#[derive(Serialize, Deserialize)]
struct StoredSignature {
    v: u8,
    #[serde(with = "serde_bytes")]
    rs: Vec<u8>,
    signers: Vec<String>,
}

fn binding_key(key_id: &str, request_id: &[u8]) -> Vec<u8> {
    [b"request/", key_id.as_bytes(), &[0], request_id].concat()
}

fn signature_key(key_id: &str, session_request_id: &[u8], digest: &[u8; 32]) -> Vec<u8> {
    [
        b"signature/".as_slice(),
        &session::sign_request_id(key_id, session_request_id, digest),
    ]
    .concat()
}

fn encode<T: Serialize>(v: &T) -> Result<Vec<u8>, ApiError> {
    let mut out = Vec::new();
    ciborium::into_writer(v, &mut out)
        .map_err(|e| ApiError::Internal(format!("encoding a record: {e}")))?;
    Ok(out)
}

fn corrupt(what: &str, e: impl std::fmt::Display) -> ApiError {
    tracing::error!(error = %e, "a {what} record is unusable");
    ApiError::Internal(format!("a stored {what} record is unusable: {e}"))
}

/// Why a request id cannot be used for this request, if it cannot.
fn conflict(b: &Binding, key_id: &str, client: &str, request: &[u8; 32]) -> Option<String> {
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

fn load_binding(node: &Node, key: &[u8]) -> Result<Option<Binding>, ApiError> {
    match node.store.get(RecordKind::SeenExecution, key)? {
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
    match load_binding(node, &binding_key(key_id, request_id))? {
        Some(b) => match conflict(&b, key_id, client, request) {
            Some(why) => Err(ApiError::AlreadyExists(why)),
            None => Ok(()),
        },
        None => Ok(()),
    }
}

/// Binds the request id to this request durably (first request wins).
pub fn bind(
    node: &Node,
    key_id: &str,
    request_id: &[u8],
    client: &str,
    request: &[u8; 32],
) -> Result<(), ApiError> {
    let key = binding_key(key_id, request_id);
    let b = Binding {
        v: VERSION,
        client: client.to_owned(),
        request: request.to_vec(),
    };
    if !node
        .store
        .insert_new(RecordKind::SeenExecution, &key, &encode(&b)?)?
    {
        // Bound before (or just now, by a concurrent request).
        return check_binding(node, key_id, request_id, client, request);
    }
    node.store.flush()?;
    Ok(())
}

/// Keeps the signature of a session (`r || s`, low S) for retries.
pub fn store_signature(
    node: &Node,
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
    node.store.put(
        RecordKind::SeenExecution,
        &signature_key(key_id, session_request_id, digest),
        &encode(&s)?,
    )?;
    node.store.flush()?;
    Ok(())
}

/// A kept signature: `r || s` and the signers' names.
pub type Kept = ([u8; 64], Vec<String>);

/// The kept signature of a session.
pub fn stored_signature(
    node: &Node,
    key_id: &str,
    session_request_id: &[u8],
    digest: &[u8; 32],
) -> Result<Option<Kept>, ApiError> {
    let Some(v) = node.store.get(
        RecordKind::SeenExecution,
        &signature_key(key_id, session_request_id, digest),
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
