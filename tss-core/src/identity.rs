//! Party identities: long-term Ed25519 keys that sign every envelope.
//!
//! A party is known to the others by its [`PartyId`] (the Ed25519 public key),
//! pinned in their configs together with its TLS certificate.

use std::fmt;

use ed25519_dalek::{Signer, Verifier};

use crate::secret::SecretBytes;

/// Public identity of a party: its Ed25519 verifying key.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PartyId(pub [u8; 32]);

impl PartyId {
    /// Parses a hex-encoded identity key and checks it is a valid Ed25519 point.
    pub fn from_hex(s: &str) -> Result<Self, IdentityError> {
        let b: [u8; 32] = hex::decode(s.trim())
            .map_err(|_| IdentityError::Malformed("identity key is not hex"))?
            .try_into()
            .map_err(|_| IdentityError::Malformed("identity key must be 32 bytes"))?;
        ed25519_dalek::VerifyingKey::from_bytes(&b)
            .map_err(|_| IdentityError::Malformed("identity key is not an Ed25519 point"))?;
        Ok(Self(b))
    }

    /// Hex encoding.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    /// Verifies an Ed25519 signature by this party over `msg`.
    pub fn verify(&self, msg: &[u8], sig: &[u8; 64]) -> Result<(), IdentityError> {
        let vk = ed25519_dalek::VerifyingKey::from_bytes(&self.0)
            .map_err(|_| IdentityError::Malformed("identity key is not an Ed25519 point"))?;
        vk.verify(msg, &ed25519_dalek::Signature::from_bytes(sig))
            .map_err(|_| IdentityError::BadSignature)
    }
}

impl fmt::Debug for PartyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PartyId({})", &self.to_hex()[..16])
    }
}

/// Errors about identity keys and their signatures.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum IdentityError {
    /// Not a valid key encoding.
    #[error("{0}")]
    Malformed(&'static str),
    /// The signature does not verify under the claimed identity.
    #[error("signature does not verify under the sender's identity key")]
    BadSignature,
}

/// A party's private identity key. Zeroized on drop, never printed.
pub struct IdentityKey(ed25519_dalek::SigningKey);

impl IdentityKey {
    /// Generates a fresh identity key from the OS RNG.
    pub fn generate() -> Self {
        Self(ed25519_dalek::SigningKey::generate(&mut rand_core::OsRng))
    }

    /// Loads a key from its 32 secret bytes.
    pub fn from_secret(bytes: &SecretBytes) -> Result<Self, IdentityError> {
        let b: &[u8; 32] = bytes
            .expose()
            .try_into()
            .map_err(|_| IdentityError::Malformed("identity secret key must be 32 bytes"))?;
        Ok(Self(ed25519_dalek::SigningKey::from_bytes(b)))
    }

    /// The secret bytes, to be sealed at rest.
    pub fn to_secret(&self) -> SecretBytes {
        SecretBytes::new(self.0.to_bytes().to_vec())
    }

    /// The public identity.
    pub fn party_id(&self) -> PartyId {
        PartyId(self.0.verifying_key().to_bytes())
    }

    /// Signs `msg`.
    pub fn sign(&self, msg: &[u8]) -> [u8; 64] {
        self.0.sign(msg).to_bytes()
    }
}

impl fmt::Debug for IdentityKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("IdentityKey(<redacted>)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity__should_sign_and_verify_and_redact() {
        let k = IdentityKey::generate();
        let sig = k.sign(b"hello");
        assert_eq!(k.party_id().verify(b"hello", &sig), Ok(()));
        assert_eq!(
            k.party_id().verify(b"hellO", &sig),
            Err(IdentityError::BadSignature)
        );
        assert_eq!(format!("{k:?}"), "IdentityKey(<redacted>)");
        let k2 = IdentityKey::from_secret(&k.to_secret()).unwrap();
        assert_eq!(k2.party_id(), k.party_id());
        assert!(PartyId::from_hex("zz").is_err());
    }
}
