//! The request vocabulary: what a client asks for and how every party reads
//! it the same way. How a message is hashed ([`Hashing`]), the checks every
//! signing request passes ([`check_sign_input`]), the client's signature
//! over its request ([`auth`]), the node's own decoding of the payload
//! ([`decode`]) and the records that make retries idempotent ([`retry`]).

pub mod auth;
pub mod decode;
pub mod retry;

use proto::v1 as pb;
use tss_core::ecdsa::sign::{HashAlgo, ToSign};

use crate::error::ApiError;
use crate::state::Node;

/// How the bytes of a Sign request become what is signed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Hashing {
    /// The node hashes the message itself (presignatures allowed).
    Node(HashAlgo),
    /// The message is a raw 32-byte digest (full protocol only).
    Raw,
}

/// Maps the wire hash enum.
pub fn hash_algo(h: i32) -> Result<Hashing, ApiError> {
    match pb::HashAlgorithm::try_from(h) {
        Ok(pb::HashAlgorithm::Sha256) => Ok(Hashing::Node(HashAlgo::Sha256)),
        Ok(pb::HashAlgorithm::Keccak256) => Ok(Hashing::Node(HashAlgo::Keccak256)),
        Ok(pb::HashAlgorithm::DoubleSha256) => Ok(Hashing::Node(HashAlgo::DoubleSha256)),
        Ok(pb::HashAlgorithm::Eip191) => Ok(Hashing::Node(HashAlgo::Eip191)),
        Ok(pb::HashAlgorithm::BitcoinMessage) => Ok(Hashing::Node(HashAlgo::BitcoinMessage)),
        Ok(pb::HashAlgorithm::None) => Ok(Hashing::Raw),
        Ok(pb::HashAlgorithm::Unspecified) => Err(ApiError::Invalid(
            "hash is not set: choose EIP191 or BITCOIN_MESSAGE (signed messages), or SHA256, KECCAK256, DOUBLE_SHA256 or NONE (bare hash, raw digest)".into(),
        )),
        Err(_) => Err(ApiError::Invalid(format!(
            "unknown hash algorithm {h}: choose SHA256 (1), KECCAK256 (2), DOUBLE_SHA256 (3), NONE (4), EIP191 (5) or BITCOIN_MESSAGE (6)"
        ))),
    }
}

/// The signature scheme a Keygen request names: `None` for CGGMP24 ECDSA
/// ("" or "ecdsa"), else the FROST scheme.
pub fn parse_scheme(s: &str) -> Result<Option<tss_core::frost::Scheme>, ApiError> {
    match s {
        "" | "ecdsa" => Ok(None),
        other => tss_core::frost::Scheme::from_name(other)
            .map(Some)
            .ok_or_else(|| {
                ApiError::Invalid(format!(
                    "unknown scheme {other:?}: choose ecdsa (the default), ed25519 or taproot"
                ))
            }),
    }
}

/// Refuses a payload the key's scheme does not sign, from the key's own
/// record (the coordinator and every co-signer): Ethereum transactions need
/// an ECDSA key; PSBT inputs an ECDSA key (its P2WPKH outputs) or a FROST
/// Taproot key (its P2TR outputs, key path). The PSBT analysis tells the two
/// by the public key's form, so an Ed25519 key (32 bytes, like an x-only
/// key) must never reach it.
pub fn check_payload_scheme(
    record: &keygen::record::KeyRecord,
    payload: Option<&pb::SignPayload>,
) -> Result<(), ApiError> {
    use pb::sign_payload::Kind;
    use tss_core::frost::Scheme;
    let (what, need) = match (payload.and_then(|p| p.kind.as_ref()), record.scheme) {
        (None, _)
        | (Some(Kind::EthereumChainId(_)), None)
        | (Some(Kind::Bitcoin(_)), None | Some(Scheme::Taproot)) => return Ok(()),
        (Some(Kind::EthereumChainId(_)), Some(_)) => {
            ("Ethereum transactions", "an ECDSA key (scheme ecdsa)")
        }
        (Some(Kind::Bitcoin(_)), Some(_)) => (
            "PSBT inputs",
            "an ECDSA key (P2WPKH inputs) or a Taproot key (scheme taproot, P2TR key-path inputs)",
        ),
    };
    Err(ApiError::Invalid(format!(
        "key {} is a FROST {} key: {what} need {need}",
        record.key_id,
        record.scheme.map_or("ecdsa", |s| s.name())
    )))
}

/// What the engine signs, and the 32-byte digest.
pub fn to_sign(hashing: Hashing, message: &[u8]) -> Result<(ToSign, [u8; 32]), ApiError> {
    match hashing {
        Hashing::Node(h) => {
            let (data, digest) = h.data_to_sign(message);
            Ok((ToSign::Hashed(data), digest))
        }
        Hashing::Raw => {
            let digest: [u8; 32] = message.try_into().map_err(|_| {
                ApiError::Invalid(format!(
                    "hash NONE signs a raw digest: the message must be exactly 32 bytes, not {}",
                    message.len()
                ))
            })?;
            Ok((ToSign::raw_digest(&digest), digest))
        }
    }
}

/// Checks a Sign request's fields (shared by coordinator and co-signers).
pub fn check_sign_input(
    node: &Node,
    key_id: &str,
    message: &[u8],
    request_id: &[u8],
) -> Result<(), ApiError> {
    keygen::record::check_key_id(key_id).map_err(|e| ApiError::Invalid(e.to_string()))?;
    if message.is_empty() {
        return Err(ApiError::Invalid(
            "message is empty: send the bytes to sign".into(),
        ));
    }
    if message.len() > node.cfg().limits.max_message_bytes {
        return Err(ApiError::Invalid(format!(
            "message is {} bytes; this node signs messages of at most {} bytes",
            message.len(),
            node.cfg().limits.max_message_bytes
        )));
    }
    if request_id.is_empty() || request_id.len() > 128 {
        return Err(ApiError::Invalid("request_id must be 1-128 bytes".into()));
    }
    Ok(())
}
