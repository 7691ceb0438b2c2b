//! The key and aux-info records both roles read and write: loading, the
//! state of a key, putting an unfinished key aside, and the share.

use std::sync::Arc;

use keygen::record::{AuxRecord, KeyRecord};
use tss_core::ecdsa::{self, KeyShare};
use tss_core::store::{RecordKind, Store};

use crate::error::{blocking, ApiError};
use crate::state::Node;

/// The party set's current aux info, if any.
pub fn load_aux(node: &Node) -> Result<Option<AuxRecord>, ApiError> {
    let set = crate::keys::aux_info(&node.peers().ids());
    match node.store().get(RecordKind::AuxInfo, &set)? {
        None => Ok(None),
        Some(b) => AuxRecord::decode(b.expose())
            .map(Some)
            .map_err(|e| ApiError::Internal(format!("stored aux info is unusable: {e}"))),
    }
}

/// The party set's current aux info for a new key: only if this node also
/// holds its recorded view, without which the key could not be certified
/// (aux info made before transcripts were recorded is replaced).
pub fn load_aux_for_keygen(node: &Node) -> Result<Option<AuxRecord>, ApiError> {
    let Some(a) = load_aux(node)? else {
        return Ok(None);
    };
    if node
        .store()
        .contains(RecordKind::Transcript, &crate::keys::aux_view(&a.aux_id))?
    {
        return Ok(Some(a));
    }
    tracing::warn!(
        aux_id = %hex::encode(a.aux_id),
        "the current aux info has no recorded transcript (made before transcripts were recorded): not used for new keys"
    );
    Ok(None)
}

/// A key's public record.
pub fn load_key_record(store: &Store, key_id: &str) -> Result<Option<KeyRecord>, ApiError> {
    match store.get(RecordKind::KeyInfo, crate::keys::key(key_id))? {
        None => Ok(None),
        Some(b) => KeyRecord::decode(b.expose())
            .map(Some)
            .map_err(|e| ApiError::Internal(format!("key record of {key_id} is unusable: {e}"))),
    }
}

/// Every key record this node holds.
pub fn list_key_records(store: &Store) -> Result<Vec<KeyRecord>, ApiError> {
    let mut out = Vec::new();
    for k in store.keys(RecordKind::KeyInfo)? {
        if let Some(b) = store.get(RecordKind::KeyInfo, &k)? {
            match KeyRecord::decode(b.expose()) {
                Ok(r) => out.push(r),
                Err(e) => tracing::error!(error = %e, "a key record is unusable; skipped"),
            }
        }
    }
    Ok(out)
}

/// Where a key stands at this node.
#[derive(Debug)]
pub enum KeyState {
    /// Nothing of the key is here.
    Absent,
    /// Keygen ran (part of) its course here but the key was never certified
    /// here: not usable, and a new keygen with the same id replaces it.
    Unfinished,
    /// Every party signed the same key certificate: the key is usable.
    Ready(KeyRecord),
}

/// Where key `key_id` stands at this node. Ready needs the record and the
/// certificate this node signed, which it stores only after every party
/// handed over its view of the runs: by then every party holds its share.
/// A crash anywhere before leaves the key unfinished. A key made before
/// keygen runs were recorded (a record without a view: keygen now stores
/// the view before the record) is ready as it always was.
pub fn key_state(store: &Store, key_id: &str) -> Result<KeyState, ApiError> {
    let certified = is_certified(store, key_id)?;
    let viewed = store.contains(RecordKind::Transcript, &crate::keys::keygen_view(key_id))?;
    if let Some(r) = load_key_record(store, key_id)? {
        if certified || !viewed {
            return Ok(KeyState::Ready(r));
        }
        return Ok(KeyState::Unfinished);
    }
    let any =
        certified || viewed || store.contains(RecordKind::KeyShare, crate::keys::key(key_id))?;
    Ok(if any {
        KeyState::Unfinished
    } else {
        KeyState::Absent
    })
}

/// Whether this node signed key `key_id`'s certificate (see [`key_state`]).
pub fn is_certified(store: &Store, key_id: &str) -> Result<bool, ApiError> {
    Ok(store.contains(RecordKind::Transcript, &crate::keys::certificate(key_id))?)
}

/// Whether key `key_id` is ready here (see [`key_state`]).
pub fn is_ready(store: &Store, key_id: &str) -> Result<bool, ApiError> {
    Ok(matches!(key_state(store, key_id)?, KeyState::Ready(_)))
}

/// A key's record, for client requests and presigning: only once it is
/// ready. `None` if the key is not here at all.
pub fn load_ready_record(node: &Node, key_id: &str) -> Result<Option<KeyRecord>, ApiError> {
    match key_state(node.store(), key_id)? {
        KeyState::Ready(r) => Ok(Some(r)),
        KeyState::Absent => Ok(None),
        KeyState::Unfinished => Err(unfinished(node, key_id)),
    }
}

/// The error for a request on an unfinished key.
pub fn unfinished(node: &Node, key_id: &str) -> ApiError {
    ApiError::NotReady(format!(
        "key {key_id} is not ready at {}: its keygen did not finish (no key certificate); \
         run Keygen with the same id again to replace it",
        node.cfg().name
    ))
}

/// Before a new keygen of `key_id` stores anything: puts aside what an
/// unfinished earlier run left here (blocking). The share is kept sealed
/// under [`retired_key`] (never used again, kept for the operator); the
/// record, the recorded view and the share under the key id are removed,
/// the record first so that the old key is never visible half-removed.
/// Refuses a ready key.
pub fn retire_unfinished(node: &Node, key_id: &str) -> Result<(), ApiError> {
    match key_state(node.store(), key_id)? {
        KeyState::Absent => return Ok(()),
        KeyState::Ready(_) => {
            return Err(ApiError::Conflict(format!(
                "key {key_id} is certified at {}: not replaced",
                node.cfg().name
            )))
        }
        KeyState::Unfinished => {}
    }
    let s = &node.store();
    if let Some(share) = s.get(RecordKind::KeyShare, crate::keys::key(key_id))? {
        let at = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis())
            .unwrap_or(0);
        let mut at = at;
        while !s.insert_new(
            RecordKind::KeyShare,
            &crate::keys::retired_share(key_id, at),
            share.expose(),
        )? {
            at += 1; // another retire in the same millisecond
        }
        s.flush()?;
    }
    s.take(RecordKind::KeyInfo, crate::keys::key(key_id))?;
    s.flush()?;
    s.take(RecordKind::Transcript, &crate::keys::keygen_view(key_id))?;
    s.take(RecordKind::Transcript, &crate::keys::certificate(key_id))?;
    s.take(RecordKind::KeyShare, crate::keys::key(key_id))?;
    s.flush()?;
    node.forget_frost_share(key_id);
    tracing::warn!(
        key_id,
        "an unfinished earlier keygen of this key id was put aside (share kept as retired)"
    );
    Ok(())
}

/// A key's share.
pub fn load_share(store: &Store, key_id: &str) -> Result<KeyShare, ApiError> {
    let b = store
        .get(RecordKind::KeyShare, crate::keys::key(key_id))?
        .ok_or_else(|| ApiError::NotFound(format!("no share of key {key_id} at this node")))?;
    ecdsa::decode_share(b.expose())
        .map_err(|e| ApiError::Internal(format!("share of {key_id} is unusable: {e}")))
}

/// A key's share, of the key's scheme.
#[derive(Clone)]
pub enum AnyShare {
    /// A CGGMP24 ECDSA share.
    Ecdsa(Arc<KeyShare>),
    /// A FROST share.
    Frost(Arc<tss_core::frost::FrostShare>),
}

/// A key's share of the scheme its record names (blocking).
pub fn load_any_share(store: &Store, record: &KeyRecord) -> Result<AnyShare, ApiError> {
    Ok(match record.scheme {
        Some(_) => AnyShare::Frost(Arc::new(crate::protocol::frost::load_share(store, record)?)),
        None => AnyShare::Ecdsa(Arc::new(load_share(store, &record.key_id)?)),
    })
}

/// [`is_ready`], off the reactor.
pub async fn is_ready_now(node: &Arc<Node>, key_id: &str) -> Result<bool, ApiError> {
    let (n, k) = (node.clone(), key_id.to_owned());
    blocking(move || is_ready(n.store(), &k)).await
}

/// Loads a key this node holds, or NOT_FOUND.
pub async fn load_record(node: &Arc<Node>, key_id: &str) -> Result<KeyRecord, ApiError> {
    let (n, k) = (node.clone(), key_id.to_owned());
    blocking(move || crate::protocol::records::load_ready_record(&n, &k))
        .await?
        .ok_or_else(|| no_key(key_id))
}

/// NOT_FOUND for a key this node does not hold.
pub fn no_key(key_id: &str) -> ApiError {
    ApiError::NotFound(format!(
        "no key {key_id:?}: create it with Keygen, or check the id"
    ))
}
