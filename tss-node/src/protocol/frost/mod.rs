//! FROST keys (Ed25519 and BIP340 Taproot): their shares and the
//! signatures by such a key, both sides. The request around a signature
//! (client authorisation, policy, limits, retries) and the keygen ceremony
//! (proposal, admin checks, transcript, certificate; the DKG run is
//! `ceremony::keygen`'s) are the same as for ECDSA keys and live with them;
//! what differs is here.
//!
//! A FROST key signs the 32-byte digest the node computed itself from the
//! request (the message hashed as the request says, or a 32-byte message
//! given with `NONE`, such as a Bytom or Vapor sighash): Ed25519 signs those
//! bytes per RFC 8032, Taproot signs them per BIP340 under the BIP86 output
//! key.

pub mod sign;

use ::keygen::record::KeyRecord;
use tss_core::frost::FrostShare;
use tss_core::store::{RecordKind, Store};

use crate::error::ApiError;

/// A FROST key's share (blocking), checked against its record.
pub fn load_share(store: &Store, record: &KeyRecord) -> Result<FrostShare, ApiError> {
    let key_id = &record.key_id;
    let b = store
        .get(RecordKind::KeyShare, crate::keys::key(key_id))?
        .ok_or_else(|| ApiError::NotFound(format!("no share of key {key_id} at this node")))?;
    let share = FrostShare::decode(b.expose())
        .map_err(|e| ApiError::Internal(format!("share of {key_id} is unusable: {e}")))?;
    if !fits(&share, record) {
        return Err(ApiError::Internal(format!(
            "the share of key {key_id} does not match its record"
        )));
    }
    Ok(share)
}

/// Whether `share` is the share `record` names (scheme, public key, index).
pub fn fits(share: &FrostShare, record: &KeyRecord) -> bool {
    Some(share.scheme()) == record.scheme
        && hex::encode(share.public_key()) == record.public_key
        && share.index() == record.my_index
}
