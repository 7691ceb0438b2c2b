//! Chain-facing encodings of signatures and keys.
//!
//! And what a client asks to sign on each chain:
//!
//! - [`eth`]: Ethereum unsigned transactions (legacy EIP-155 and EIP-1559):
//!   decoding, call classification, the signed network encoding.
//! - [`btc`]: Bitcoin and Litecoin addresses and PSBTs: analysis (amounts,
//!   fee, BIP143 sighashes of an ECDSA key's P2WPKH inputs and BIP341
//!   sighashes of a FROST Taproot key's key-path inputs), signatures,
//!   finalisation.
//!
//! Everything here takes client bytes: decoders refuse anything they cannot
//! account for, with a [`ChainError`] that says what is wrong.

pub mod btc;
pub mod eth;

use k256::ecdsa::{RecoveryId, Signature as K256Signature, VerifyingKey};
use sha3::{Digest, Keccak256};

/// A finished ECDSA signature in every form a client needs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EcdsaSignature {
    /// r, 32 bytes big-endian.
    pub r: [u8; 32],
    /// s (low-S normalised), 32 bytes big-endian.
    pub s: [u8; 32],
    /// Recovery id (0 or 1).
    pub v: u8,
    /// DER encoding.
    pub der: Vec<u8>,
}

impl EcdsaSignature {
    /// r || s || v.
    pub fn to_rsv(&self) -> [u8; 65] {
        let mut out = [0u8; 65];
        out[..32].copy_from_slice(&self.r);
        out[32..64].copy_from_slice(&self.s);
        out[64] = self.v;
        out
    }
}

/// Why a transaction or PSBT was refused; the message says what is wrong (it
/// reaches the client as INVALID_ARGUMENT).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum ChainError {
    /// The bytes do not decode, or decode to something unsupported / inconsistent.
    #[error("{0}")]
    Invalid(String),
    /// A PSBT input asks for a sighash type the node does not sign with.
    #[error(
        "input {input} asks for sighash type {sighash_type:#x}; the node signs {allowed} only"
    )]
    SighashType {
        /// The input's index.
        input: usize,
        /// The PSBT's `sighash_type` field, as a number.
        sighash_type: u32,
        /// What the node signs for an input of this kind, in words.
        allowed: &'static str,
    },
    /// A PSBT input carries no spent output (`witness_utxo` or
    /// `non_witness_utxo`), and the sighash commits to it.
    #[error(
        "input {input} has no witness_utxo: a Taproot (BIP341) signature commits to the \
         amount and script of every input, so every input must carry its spent output"
    )]
    MissingSpentOutput {
        /// The input's index.
        input: usize,
    },
    /// An input of the key's Taproot output carries script-path data, but
    /// the key's output key has no script tree (BIP86): only its key path
    /// can spend it.
    #[error(
        "input {input} spends this key's Taproot output but carries {field}: the key's output \
         has no script tree (BIP86), the node signs its key path only; remove the script-path fields"
    )]
    ScriptPath {
        /// The input's index.
        input: usize,
        /// The PSBT field found (`tap_merkle_root`, `tap_scripts`, ...).
        field: &'static str,
    },
}

/// A [`ChainError::Invalid`] with this message.
pub(crate) fn invalid(msg: impl Into<String>) -> ChainError {
    ChainError::Invalid(msg.into())
}

/// Why a signature was not released.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum SignatureError {
    /// The public key bytes are not a secp256k1 point.
    #[error("public key is not a valid secp256k1 point")]
    BadPublicKey,
    /// r or s is out of range.
    #[error("signature scalars are out of range")]
    BadScalars,
    /// The signature does not verify under the key for this digest.
    #[error("signature does not verify under the public key")]
    DoesNotVerify,
}

/// Checks `r || s` against `public_key` (SEC1) and `digest` with `k256`
/// (independently of the engine), normalises s to the low half and computes
/// the recovery id.
pub fn finish_signature(
    public_key: &[u8],
    digest: &[u8; 32],
    rs: &[u8; 64],
) -> Result<EcdsaSignature, SignatureError> {
    let vk = VerifyingKey::from_sec1_bytes(public_key).map_err(|_| SignatureError::BadPublicKey)?;
    let sig = K256Signature::from_slice(rs).map_err(|_| SignatureError::BadScalars)?;
    let sig = sig.normalize_s().unwrap_or(sig);
    use k256::ecdsa::signature::hazmat::PrehashVerifier;
    vk.verify_prehash(digest, &sig)
        .map_err(|_| SignatureError::DoesNotVerify)?;
    let recid = RecoveryId::trial_recovery_from_prehash(&vk, digest, &sig)
        .map_err(|_| SignatureError::DoesNotVerify)?;
    let bytes = sig.to_bytes();
    let mut r = [0u8; 32];
    let mut s = [0u8; 32];
    r.copy_from_slice(&bytes[..32]);
    s.copy_from_slice(&bytes[32..]);
    Ok(EcdsaSignature {
        r,
        s,
        v: recid.to_byte(),
        der: sig.to_der().as_bytes().to_vec(),
    })
}

/// Ethereum address (EIP-55 checksummed, `0x`-prefixed) of a SEC1 public key.
pub fn eth_address(public_key: &[u8]) -> Result<String, SignatureError> {
    let vk = VerifyingKey::from_sec1_bytes(public_key).map_err(|_| SignatureError::BadPublicKey)?;
    let uncompressed = vk.to_encoded_point(false);
    let hash = Keccak256::digest(&uncompressed.as_bytes()[1..]);
    let addr = hex::encode(&hash[12..]);
    let check = hex::encode(Keccak256::digest(addr.as_bytes()));
    let mut out = String::from("0x");
    for (c, h) in addr.chars().zip(check.chars()) {
        if c.is_ascii_alphabetic() && h.to_digit(16).unwrap_or(0) >= 8 {
            out.push(c.to_ascii_uppercase());
        } else {
            out.push(c);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use k256::ecdsa::SigningKey;

    #[test]
    fn finish_signature__should_normalise_and_recover() {
        let sk = SigningKey::from_slice(&[7u8; 32]).unwrap();
        let pk = sk.verifying_key().to_encoded_point(true);
        let digest = [9u8; 32];
        let (sig, _) = sk.sign_prehash_recoverable(&digest).unwrap();
        // Feed the high-S twin: must come back low-S with a matching recovery id.
        let high = K256Signature::from_scalars(sig.r(), -*sig.s()).unwrap();
        let hs: [u8; 64] = high.to_bytes().into();
        let out = finish_signature(pk.as_bytes(), &digest, &hs).unwrap();
        let low = K256Signature::from_slice(&[out.r, out.s].concat()).unwrap();
        assert!(low.normalize_s().is_none(), "s must be low");
        let rec = VerifyingKey::recover_from_prehash(
            &digest,
            &low,
            RecoveryId::from_byte(out.v).unwrap(),
        )
        .unwrap();
        assert_eq!(&rec, sk.verifying_key());
        let mut bad = hs;
        bad[40] ^= 1;
        assert!(finish_signature(pk.as_bytes(), &digest, &bad).is_err());
    }

    #[test]
    fn eth_address__should_match_known_vector() {
        // Private key 1: address 0x7E5F4552091A69125d5DfCb7b8C2659029395Bdf.
        let mut k = [0u8; 32];
        k[31] = 1;
        let sk = SigningKey::from_slice(&k).unwrap();
        let pk = sk.verifying_key().to_encoded_point(true);
        assert_eq!(
            eth_address(pk.as_bytes()).unwrap(),
            "0x7E5F4552091A69125d5DfCb7b8C2659029395Bdf"
        );
    }
}
