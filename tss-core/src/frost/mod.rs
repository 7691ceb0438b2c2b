//! FROST (RFC 9591) threshold Schnorr signatures, as runtime-agnostic
//! `async fn`s and plain functions over the ZcashFoundation crates:
//!
//! - [`Scheme::Ed25519`]: plain Ed25519 signatures (RFC 8032), as Bytom,
//!   Vapor and other Ed25519 chains verify them (`frost-ed25519`);
//! - [`Scheme::Taproot`]: BIP340 signatures under the BIP86-tweaked output
//!   key, for Taproot key-path spends (`frost-secp256k1-tr`).
//!
//! - [`keygen`]: the DKG (commitments with proofs of knowledge, an echo of
//!   everyone's commitments, secret shares point to point);
//! - [`sign`]: signing in two rounds (nonce commitments, signature shares),
//!   either both interactive or with the first made ahead of time (a nonce
//!   pool) so that a request takes one round.
//!
//! Party index `i` (0-based, keygen order, as everywhere in this crate) is
//! FROST identifier `i + 1`. Every function takes bytes from peers or disk as
//! hostile: decoding refuses non-canonical encodings, and a failure names the
//! party whose bytes caused it.

pub mod keygen;
pub mod pool;
mod round2;
mod share;
pub mod sign;

use std::collections::BTreeMap;

use frost_core::{Ciphersuite, Identifier};
use serde::{Deserialize, Serialize};

pub use self::share::FrostShare;
use crate::ecdsa::EngineError;

/// The Ed25519 ciphersuite.
pub(crate) type Ed = frost_ed25519::Ed25519Sha512;
/// The secp256k1 BIP340/Taproot ciphersuite.
pub(crate) type Tr = frost_secp256k1_tr::Secp256K1Sha256TR;

/// Which Schnorr scheme a FROST key signs with.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Scheme {
    /// Ed25519 (RFC 8032) over the message bytes.
    Ed25519,
    /// BIP340 Schnorr on secp256k1 under the BIP86-tweaked output key.
    Taproot,
}

impl Scheme {
    /// Name in requests, configs and JSON (`ed25519`, `taproot`).
    pub fn name(self) -> &'static str {
        match self {
            Scheme::Ed25519 => "ed25519",
            Scheme::Taproot => "taproot",
        }
    }

    /// Parses [`Scheme::name`].
    pub fn from_name(s: &str) -> Option<Self> {
        match s {
            "ed25519" => Some(Scheme::Ed25519),
            "taproot" => Some(Scheme::Taproot),
            _ => None,
        }
    }
}

impl std::fmt::Display for Scheme {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Runs `$body` with `$c` as the ciphersuite type of `$scheme`.
macro_rules! with_suite {
    ($scheme:expr, $c:ident => $body:expr) => {
        match $scheme {
            $crate::frost::Scheme::Ed25519 => {
                type $c = $crate::frost::Ed;
                $body
            }
            $crate::frost::Scheme::Taproot => {
                type $c = $crate::frost::Tr;
                $body
            }
        }
    };
}
pub(crate) use with_suite;

/// Each signer's position in `signers`, by identifier (to name a culprit).
pub(crate) type Positions<C> = std::collections::BTreeMap<Identifier<C>, u16>;

/// FROST identifier of party index `i`.
pub(crate) fn identifier<C: Ciphersuite>(i: u16) -> Result<Identifier<C>, EngineError> {
    i.checked_add(1)
        .and_then(|n| Identifier::try_from(n).ok())
        .ok_or_else(|| EngineError::InvalidInput(format!("party index {i} has no identifier")))
}

/// Identifiers of `parties` (indices), to map a FROST culprit back.
pub(crate) fn identifiers<C: Ciphersuite>(
    parties: &[u16],
) -> Result<BTreeMap<Identifier<C>, u16>, EngineError> {
    parties
        .iter()
        .map(|&i| Ok((identifier::<C>(i)?, i)))
        .collect()
}

/// Maps a FROST error, naming the first culprit it blames (as an index of
/// `by_id`) and saying `what` failed.
pub(crate) fn engine_error<C: Ciphersuite>(
    e: frost_core::Error<C>,
    by_id: &BTreeMap<Identifier<C>, u16>,
    what: &str,
) -> EngineError {
    match e.culprits().first().and_then(|id| by_id.get(id)) {
        Some(&culprit) => EngineError::Misbehaved {
            culprit,
            reason: format!("{what}: {e}"),
        },
        None => EngineError::Protocol(format!("{what}: {e}")),
    }
}

/// Decodes `bytes` with `decode` and refuses an encoding that does not
/// re-encode to the same bytes (the crates' decoders accept trailing
/// bytes): what is hashed, recorded or compared is then canonical.
pub(crate) fn decode_canonical<T, E>(
    bytes: &[u8],
    decode: impl FnOnce(&[u8]) -> Result<T, E>,
    encode: impl FnOnce(&T) -> Result<Vec<u8>, E>,
) -> Option<T> {
    let v = decode(bytes).ok()?;
    match encode(&v) {
        Ok(again) if again == bytes => Some(v),
        _ => None,
    }
}

#[cfg(test)]
mod tests;
#[cfg(test)]
mod vectors;
