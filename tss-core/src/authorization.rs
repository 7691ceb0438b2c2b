//! Client request authorisations: what a client signs so that every party
//! (not only the node that received the request) learns from the client
//! itself who asked for what.
//!
//! A client signs the canonical encoding of its request
//! ([`ClientRequest::signed_bytes`]) with the private key of its TLS
//! certificate, which every node pins. The coordinator forwards the
//! signature with the request; each co-signer rebuilds the encoding from the
//! request bytes it was sent (the same bytes it decodes and judges), checks
//! the signature against the certificate it pins for that client, and applies
//! the policy of that client. A coordinator that names another client, or
//! alters one byte of what the client asked, has no valid signature to show.
//!
//! Encoding (all integers big-endian; `lp16(x)` is a 2-byte length then `x`):
//!
//! ```text
//! "tss/client-request/v1" 0x00
//! operation      u8      1 Sign, 2 SignEthereumTransaction, 3 SignBitcoinPsbt, 4 Keygen
//! key_id         lp16(UTF-8)
//! request_id     lp16(bytes)
//! payload        32 bytes: SHA-256 of the payload (the message, the unsigned
//!                Ethereum transaction, the binary PSBT; empty for Keygen)
//! hash           u32     the HashAlgorithm wire value for Sign, else 0
//! chain          lp16(UTF-8): "" for Sign and Keygen, "ethereum:<chain id>",
//!                or the Bitcoin-family network name
//! expires_unix   u64     seconds since 1970-01-01 UTC
//! ```
//!
//! Everything but `expires_unix` is the request itself: its digest
//! ([`ClientRequest::digest`]) is the same for a retry that the client
//! signed again with a later expiry.

use sha2::{Digest, Sha256};

/// Domain separation of the signed encoding (followed by one zero byte).
pub const DOMAIN: &[u8] = b"tss/client-request/v1";

/// The longest validity a node accepts (from now to `expires_unix`).
pub const MAX_VALIDITY_SECS: u64 = 3600;

/// Clock difference tolerated between a client and a node.
pub const CLOCK_SKEW_SECS: u64 = 60;

/// What a client asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Operation {
    /// `Sign`: a message the node hashes (or a raw digest).
    Sign,
    /// `SignEthereumTransaction`.
    SignEthereumTransaction,
    /// `SignBitcoinPsbt`.
    SignBitcoinPsbt,
    /// `Keygen` (and the aux-info run it may need).
    Keygen,
}

impl Operation {
    /// The operation's byte in the encoding.
    pub fn code(self) -> u8 {
        match self {
            Operation::Sign => 1,
            Operation::SignEthereumTransaction => 2,
            Operation::SignBitcoinPsbt => 3,
            Operation::Keygen => 4,
        }
    }

    /// Name for logs and messages.
    pub fn name(self) -> &'static str {
        match self {
            Operation::Sign => "Sign",
            Operation::SignEthereumTransaction => "SignEthereumTransaction",
            Operation::SignBitcoinPsbt => "SignBitcoinPsbt",
            Operation::Keygen => "Keygen",
        }
    }
}

/// A client request as it is signed.
#[derive(Clone, Copy, Debug)]
pub struct ClientRequest<'a> {
    /// What is asked.
    pub operation: Operation,
    /// The key (the new key's id for Keygen).
    pub key_id: &'a str,
    /// The client's idempotency id.
    pub request_id: &'a [u8],
    /// The payload bytes (empty for Keygen).
    pub payload: &'a [u8],
    /// `HashAlgorithm` wire value (Sign), else 0.
    pub hash: u32,
    /// "" (Sign, Keygen), `ethereum:<chain id>`, or a Bitcoin-family network.
    pub chain: &'a str,
}

/// Why an authorisation's fields cannot be encoded or are not current.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AuthorizationError {
    /// A field is longer than the encoding allows.
    #[error("{0} is longer than 65535 bytes")]
    TooLong(&'static str),
    /// The authorisation's time has passed.
    #[error("the client's authorisation expired at {expires} (unix seconds; now {now}): sign the request again with a later expires_unix")]
    Expired {
        /// Its expiry.
        expires: u64,
        /// This node's clock.
        now: u64,
    },
    /// The authorisation is valid for longer than a node accepts.
    #[error("the client's authorisation is valid until {expires}, more than {max} s from now ({now}): use an expiry at most {max} s ahead")]
    TooLongValid {
        /// Its expiry.
        expires: u64,
        /// This node's clock.
        now: u64,
        /// [`MAX_VALIDITY_SECS`].
        max: u64,
    },
}

fn lp16(out: &mut Vec<u8>, what: &'static str, b: &[u8]) -> Result<(), AuthorizationError> {
    let len = u16::try_from(b.len()).map_err(|_| AuthorizationError::TooLong(what))?;
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(b);
    Ok(())
}

impl ClientRequest<'_> {
    fn body(&self) -> Result<Vec<u8>, AuthorizationError> {
        let mut out = Vec::with_capacity(DOMAIN.len() + 128);
        out.extend_from_slice(DOMAIN);
        out.push(0);
        out.push(self.operation.code());
        lp16(&mut out, "key_id", self.key_id.as_bytes())?;
        lp16(&mut out, "request_id", self.request_id)?;
        out.extend_from_slice(&Sha256::digest(self.payload));
        out.extend_from_slice(&self.hash.to_be_bytes());
        lp16(&mut out, "chain", self.chain.as_bytes())?;
        Ok(out)
    }

    /// The bytes the client signs (see the module docs).
    pub fn signed_bytes(&self, expires_unix: u64) -> Result<Vec<u8>, AuthorizationError> {
        let mut out = self.body()?;
        out.extend_from_slice(&expires_unix.to_be_bytes());
        Ok(out)
    }

    /// SHA-256 of the encoding without the expiry: equal for the same
    /// request signed again.
    pub fn digest(&self) -> Result<[u8; 32], AuthorizationError> {
        Ok(Sha256::digest(self.body()?).into())
    }
}

/// Checks that an authorisation expiring at `expires_unix` is current at
/// `now` (both unix seconds), within [`CLOCK_SKEW_SECS`] and at most
/// [`MAX_VALIDITY_SECS`] ahead.
pub fn check_expiry(expires_unix: u64, now: u64) -> Result<(), AuthorizationError> {
    if expires_unix.saturating_add(CLOCK_SKEW_SECS) < now {
        return Err(AuthorizationError::Expired {
            expires: expires_unix,
            now,
        });
    }
    if expires_unix > now.saturating_add(MAX_VALIDITY_SECS + CLOCK_SKEW_SECS) {
        return Err(AuthorizationError::TooLongValid {
            expires: expires_unix,
            now,
            max: MAX_VALIDITY_SECS,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sign_request<'a>(payload: &'a [u8], request_id: &'a [u8]) -> ClientRequest<'a> {
        ClientRequest {
            operation: Operation::Sign,
            key_id: "k1",
            request_id,
            payload,
            hash: 1,
            chain: "",
        }
    }

    #[test]
    fn signed_bytes__should_match_the_documented_layout() {
        // Given a Sign request
        let r = sign_request(b"hello", b"r1");
        // When it is encoded
        let got = r.signed_bytes(0x0102_0304_0506_0708).expect("encodes");
        // Then the bytes are exactly the documented layout (docs/FORMATS.md)
        let mut want = b"tss/client-request/v1\x00\x01\x00\x02k1\x00\x02r1".to_vec();
        want.extend_from_slice(&Sha256::digest(b"hello"));
        want.extend_from_slice(&[0, 0, 0, 1, 0, 0]);
        want.extend_from_slice(&[1, 2, 3, 4, 5, 6, 7, 8]);
        assert_eq!(hex::encode(&got), hex::encode(&want));
        assert_eq!(
            hex::encode(&got),
            "7473732f636c69656e742d726571756573742f7631000100026b31000272312cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b98240000000100000102030405060708"
        );
    }

    #[test]
    fn digest__should_bind_every_field_but_the_expiry() {
        let base = sign_request(b"hello", b"r1");
        let d = base.digest().expect("encodes");
        let changed = [
            ClientRequest {
                operation: Operation::SignEthereumTransaction,
                ..base
            },
            ClientRequest {
                key_id: "k2",
                ..base
            },
            ClientRequest {
                request_id: b"r2",
                ..base
            },
            ClientRequest {
                payload: b"hellp",
                ..base
            },
            ClientRequest { hash: 2, ..base },
            ClientRequest {
                chain: "bitcoin",
                ..base
            },
        ];
        for c in changed {
            assert_ne!(c.digest().expect("encodes"), d, "{c:?}");
        }
        // Length prefixes: moving a byte from one field to the next changes it.
        let a = ClientRequest {
            key_id: "k1r",
            request_id: b"1",
            ..base
        };
        let b = ClientRequest {
            key_id: "k1",
            request_id: b"r1",
            ..base
        };
        assert_ne!(a.digest().expect("encodes"), b.digest().expect("encodes"));
        assert_ne!(
            base.signed_bytes(1).expect("encodes"),
            base.signed_bytes(2).expect("encodes")
        );
    }

    #[test]
    fn signed_bytes__should_refuse_overlong_fields() {
        let long = vec![0u8; 65536];
        let r = sign_request(b"x", &long);
        assert_eq!(
            r.signed_bytes(1),
            Err(AuthorizationError::TooLong("request_id"))
        );
    }

    #[test]
    fn check_expiry__should_refuse_past_and_far_future() {
        let now = 1_800_000_000;
        assert!(check_expiry(now, now).is_ok());
        assert!(check_expiry(now - CLOCK_SKEW_SECS, now).is_ok());
        assert!(matches!(
            check_expiry(now - CLOCK_SKEW_SECS - 1, now),
            Err(AuthorizationError::Expired { .. })
        ));
        assert!(check_expiry(now + MAX_VALIDITY_SECS, now).is_ok());
        assert!(matches!(
            check_expiry(now + MAX_VALIDITY_SECS + CLOCK_SKEW_SECS + 1, now),
            Err(AuthorizationError::TooLongValid { .. })
        ));
    }
}
