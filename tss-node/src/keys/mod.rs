//! The store layout: every record key this node writes, encoded (and, where
//! a key is read back, decoded) here and nowhere else. The tree of a record
//! is its [`RecordKind`]; the layout is in docs/FORMATS.md and pinned by the
//! snapshot test in `tests.rs`: a store written by one version is read by
//! the next, so a change here is a format change that needs a migration.
//!
//! Key ids never hold `0x00` or `/` (config and request checks), which keeps
//! the separators below unambiguous.

use std::fmt::Display;

use tss_core::identity::PartyId;

#[cfg(test)]
mod tests;

// ---------------------------------------------------------------- node_secret

/// `node_secret`: the party's Ed25519 identity key.
pub const IDENTITY_KEY: &[u8] = b"identity";
/// `node_secret`: the party's TLS private key (PKCS#8 PEM).
pub const TLS_KEY: &[u8] = b"tls_key";

// ------------------------------------------------------------------- aux_info

/// `aux_info`: the aux info of a party set, under the set's id.
pub(crate) fn aux_info(parties: &[PartyId]) -> [u8; 32] {
    tss_core::session::party_set_id(parties)
}

// ---------------------------------------------------- key_info and key_share

/// `key_info` and `key_share`: a key's record and this party's share, under
/// the key id.
pub(crate) fn key(key_id: &str) -> &[u8] {
    key_id.as_bytes()
}

/// `key_share`: an unfinished key's share, put aside when a new keygen of
/// the same key id replaces it: `retired/<key id>/<unix ms>`.
pub(crate) fn retired_share(key_id: &str, unix_ms: u128) -> Vec<u8> {
    format!("retired/{key_id}/{unix_ms}").into_bytes()
}

// ------------------------------------------------------------- seen_execution

/// `seen_execution`: an execution id used once (32 bytes).
pub(crate) fn execution(eid: &[u8; 32]) -> &[u8] {
    eid
}

/// `seen_execution`: a signing request (key, session request id, digest)
/// this party released its part of: `signed/<sign request id>`.
pub(crate) fn signed(key_id: &str, request_id: &[u8], digest: &[u8; 32]) -> Vec<u8> {
    [
        b"signed/".as_slice(),
        &tss_core::session::sign_request_id(key_id, request_id, digest),
    ]
    .concat()
}

/// `seen_execution`: a client request id bound to its first request:
/// `request/<key id> 0x00 <request id>`.
pub(crate) fn request_binding(key_id: &str, request_id: &[u8]) -> Vec<u8> {
    [b"request/", key_id.as_bytes(), &[0], request_id].concat()
}

/// `seen_execution`: the signature of a session, kept for retries:
/// `signature/<sign request id>`.
pub(crate) fn kept_signature(
    key_id: &str,
    session_request_id: &[u8],
    digest: &[u8; 32],
) -> Vec<u8> {
    [
        b"signature/".as_slice(),
        &tss_core::session::sign_request_id(key_id, session_request_id, digest),
    ]
    .concat()
}

// -------------------------------------------- presignature, presignature_used

/// `presignature`: the prefix of a key's and pair's presignatures:
/// `<key id> 0x00 <signer u16 big-endian>...`.
pub(crate) fn presignature_prefix(key_id: &str, signers: &[u16]) -> Vec<u8> {
    let mut k = key_id.as_bytes().to_vec();
    k.push(0);
    for s in signers {
        k.extend_from_slice(&s.to_be_bytes());
    }
    k
}

/// `presignature`: one presignature: [`presignature_prefix`] then its id.
pub fn presignature(key_id: &str, signers: &[u16], id: &[u8; 32]) -> Vec<u8> {
    let mut k = presignature_prefix(key_id, signers);
    k.extend_from_slice(id);
    k
}

/// The id of a presignature key found under `prefix`, if well formed.
pub(crate) fn presignature_id(prefix: &[u8], key: &[u8]) -> Option<[u8; 32]> {
    key.strip_prefix(prefix)?.try_into().ok()
}

/// `presignature_used`: the record of a consumed presignature, under its id.
pub(crate) fn presignature_used(id: &[u8; 32]) -> &[u8] {
    id
}

// ----------------------------------------------------------------- transcript

/// `transcript`: this party's view of aux-info run `aux_id`: `aux/<hex>`.
pub(crate) fn aux_view(aux_id: &[u8; 32]) -> Vec<u8> {
    format!("aux/{}", hex::encode(aux_id)).into_bytes()
}

/// `transcript`: this party's view of a key's keygen run: `view/<key id>`.
pub(crate) fn keygen_view(key_id: &str) -> Vec<u8> {
    format!("view/{key_id}").into_bytes()
}

/// `transcript`: the certificate body this party signed: `cert/<key id>`.
pub(crate) fn certificate(key_id: &str) -> Vec<u8> {
    format!("cert/{key_id}").into_bytes()
}

/// `transcript`: a key's finished transcript file: `file/<key id>`.
pub(crate) fn transcript_file(key_id: &str) -> Vec<u8> {
    format!("file/{key_id}").into_bytes()
}

// ---------------------------------------------------------------------- spend

/// `spend`: the prefix of one key's charges of one asset on one chain:
/// `<key id> 0x00 <chain> 0x00 <asset> 0x00`.
pub(crate) fn spend_prefix(key_id: &str, chain: impl Display, asset: impl Display) -> Vec<u8> {
    format!("{key_id}\0{chain}\0{asset}\0").into_bytes()
}

/// `spend`: one transaction's charge: [`spend_prefix`] then the hex txid.
pub(crate) fn spend_charge(
    key_id: &str,
    chain: impl Display,
    asset: impl Display,
    tx: &[u8; 32],
) -> Vec<u8> {
    let mut k = spend_prefix(key_id, chain, asset);
    k.extend_from_slice(hex::encode(tx).as_bytes());
    k
}

/// `spend`: the claims a Bitcoin-family txid was first released on:
/// `<key id> 0x00 <chain> 0x00 claims 0x00 <hex txid>`.
pub(crate) fn spend_claims(key_id: &str, chain: impl Display, txid: &[u8; 32]) -> Vec<u8> {
    format!("{key_id}\0{chain}\0claims\0{}", hex::encode(txid)).into_bytes()
}

/// `spend`: the amount an own outpoint was first claimed with:
/// `<key id> 0x00 <chain> 0x00 outpoint 0x00 <txid:vout>`.
pub(crate) fn spend_outpoint(key_id: &str, chain: impl Display, outpoint: &str) -> Vec<u8> {
    format!("{key_id}\0{chain}\0outpoint\0{outpoint}").into_bytes()
}

// ---------------------------------------------------------------------- audit

/// `audit`: entry `seq`, big-endian (the tree's order is the log's order).
pub(crate) fn audit_entry(seq: u64) -> [u8; 8] {
    seq.to_be_bytes()
}

/// The sequence number of an `audit` key, if well formed.
pub(crate) fn audit_seq(key: &[u8]) -> Option<u64> {
    <[u8; 8]>::try_from(key).ok().map(u64::from_be_bytes)
}

// --------------------------------------------------------------------- primes

/// `primes`: one safe-prime set of the pool, under a random id.
pub(crate) fn prime_set(id: &[u8; 16]) -> &[u8] {
    id
}
