//! Sealing of stored values and derivation of the storage key.
//!
//! Pure functions, no I/O: [`derive_key`] (Argon2id), [`seal`] / [`open`]
//! (XChaCha20-Poly1305) and the encoding of the KDF record. The formats are
//! described in the parent module; the golden tests at the bottom pin them.

use std::fmt;

use chacha20poly1305::aead::{AeadInPlace, KeyInit};
use chacha20poly1305::{Tag, XChaCha20Poly1305, XNonce};
use rand_core::{OsRng, RngCore};
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

use crate::secret::{Passphrase, SecretBytes};

/// Version byte at the start of every sealed value.
pub(crate) const SEAL_VERSION: u8 = 1;
/// XChaCha20 nonce length.
pub(crate) const NONCE_LEN: usize = 24;
/// Poly1305 tag length.
pub(crate) const TAG_LEN: usize = 16;
/// Version byte and nonce.
const HEADER_LEN: usize = 1 + NONCE_LEN;
/// Domain separation prefix of the associated data.
const AAD_DOMAIN: &[u8] = b"tss-store/v1";

/// Version byte of the KDF record (Argon2id v0x13, 32-byte output).
pub(crate) const KDF_VERSION: u8 = 1;
/// Salt length in the KDF record.
pub(crate) const SALT_LEN: usize = 16;
/// Length of an encoded KDF record: version, three u32 parameters, salt.
const KDF_RECORD_LEN: usize = 1 + 3 * 4 + SALT_LEN;
/// Length of the storage key.
const KEY_LEN: usize = 32;

/// The key every value is sealed under. Zeroized on drop, never printed.
#[derive(Zeroize, ZeroizeOnDrop)]
pub(crate) struct StorageKey([u8; KEY_LEN]);

impl StorageKey {
    /// Wraps raw key bytes (golden tests and fuzzing only; real keys come
    /// from [`derive_key`]).
    #[cfg(any(test, feature = "fuzzing"))]
    pub(crate) fn from_bytes(bytes: [u8; KEY_LEN]) -> Self {
        Self(bytes)
    }

    /// The AEAD instance for this key (it zeroizes its own copy on drop).
    fn cipher(&self) -> XChaCha20Poly1305 {
        XChaCha20Poly1305::new(&self.0.into())
    }
}

impl fmt::Debug for StorageKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// Argon2id cost parameters, as stored in the KDF record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KdfParams {
    /// Memory in KiB.
    pub(crate) m_kib: u32,
    /// Passes.
    pub(crate) t: u32,
    /// Lanes.
    pub(crate) p: u32,
}

impl KdfParams {
    /// The parameters every store is created with: 64 MiB, 3 passes, 1 lane.
    /// Changing them needs a migration, not an edit here: existing stores
    /// keep the parameters recorded in their KDF record.
    pub(crate) const FIXED: Self = Self {
        m_kib: 64 * 1024,
        t: 3,
        p: 1,
    };

    /// Cheap parameters so that unit tests do not spend seconds in Argon2.
    #[cfg(test)]
    pub(crate) const CHEAP: Self = Self {
        m_kib: 64,
        t: 1,
        p: 1,
    };

    /// Upper bounds accepted from disk, so that a tampered record cannot make
    /// `open` allocate unbounded memory or spin forever. Lower values are not
    /// a risk: they derive a different key and the check record fails.
    const MAX_M_KIB: u32 = 4 * 1024 * 1024;
    const MAX_T: u32 = 64;
    const MAX_P: u32 = 16;

    fn argon2(&self) -> Result<argon2::Argon2<'static>, argon2::Error> {
        let params = argon2::Params::new(self.m_kib, self.t, self.p, Some(KEY_LEN))?;
        Ok(argon2::Argon2::new(
            argon2::Algorithm::Argon2id,
            argon2::Version::V0x13,
            params,
        ))
    }
}

/// The unsealed KDF record: which parameters and salt derive the storage key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct KdfRecord {
    /// Argon2id parameters.
    pub(crate) params: KdfParams,
    /// Random salt chosen at creation.
    pub(crate) salt: [u8; SALT_LEN],
}

/// Why a KDF record cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum KdfRecordError {
    /// Written by a newer (or unknown) build.
    #[error("KDF record version {0} is not supported (this build reads version {KDF_VERSION})")]
    UnknownVersion(u8),
    /// Wrong length for its version.
    #[error("KDF record has {0} bytes, expected {KDF_RECORD_LEN}")]
    BadLength(usize),
    /// Parameters outside what this build accepts.
    #[error("KDF parameters out of range: {0:?}")]
    ParamsOutOfRange(KdfParams),
}

impl KdfRecord {
    /// Fresh record with the given parameters and a random salt.
    pub(crate) fn generate(params: KdfParams) -> Result<Self, rand_core::Error> {
        let mut salt = [0u8; SALT_LEN];
        OsRng.try_fill_bytes(&mut salt)?;
        Ok(Self { params, salt })
    }

    /// `version || m_kib (u32 BE) || t (u32 BE) || p (u32 BE) || salt`.
    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(KDF_RECORD_LEN);
        out.push(KDF_VERSION);
        out.extend_from_slice(&self.params.m_kib.to_be_bytes());
        out.extend_from_slice(&self.params.t.to_be_bytes());
        out.extend_from_slice(&self.params.p.to_be_bytes());
        out.extend_from_slice(&self.salt);
        out
    }

    /// Parses a record read from disk; refuses unknown versions and
    /// parameters this build would not derive with.
    pub(crate) fn decode(bytes: &[u8]) -> Result<Self, KdfRecordError> {
        let (&version, rest) = bytes.split_first().ok_or(KdfRecordError::BadLength(0))?;
        if version != KDF_VERSION {
            return Err(KdfRecordError::UnknownVersion(version));
        }
        if bytes.len() != KDF_RECORD_LEN {
            return Err(KdfRecordError::BadLength(bytes.len()));
        }
        let (m, rest) = split_u32(rest);
        let (t, rest) = split_u32(rest);
        let (p, rest) = split_u32(rest);
        let mut salt = [0u8; SALT_LEN];
        salt.copy_from_slice(rest);
        let params = KdfParams { m_kib: m, t, p };
        let in_range = (1..=KdfParams::MAX_P).contains(&p)
            && (1..=KdfParams::MAX_T).contains(&t)
            && m >= 8 * p
            && m <= KdfParams::MAX_M_KIB;
        if !in_range {
            return Err(KdfRecordError::ParamsOutOfRange(params));
        }
        Ok(Self { params, salt })
    }
}

/// Splits a big-endian u32 off the front. Callers have checked the length.
fn split_u32(bytes: &[u8]) -> (u32, &[u8]) {
    let (head, rest) = bytes.split_at(4);
    let mut word = [0u8; 4];
    word.copy_from_slice(head);
    (u32::from_be_bytes(word), rest)
}

/// Derives the 32-byte storage key with Argon2id.
///
/// Fails only for parameters Argon2 rejects (or an allocation failure it
/// reports); [`KdfRecord::decode`] keeps stored parameters in range.
pub(crate) fn derive_key(
    pass: &Passphrase,
    salt: &[u8],
    params: &KdfParams,
) -> Result<StorageKey, argon2::Error> {
    let mut key = StorageKey([0u8; KEY_LEN]);
    params
        .argon2()?
        .hash_password_into(pass.expose(), salt, &mut key.0)?;
    Ok(key)
}

/// Why a value could not be sealed.
#[derive(Debug, thiserror::Error)]
pub enum SealError {
    /// The OS random generator failed.
    #[error("no randomness for a nonce: {0}")]
    Random(rand_core::Error),
    /// Key or value beyond what the format or the AEAD can carry.
    #[error("record too large to seal ({0} bytes)")]
    TooLarge(usize),
}

/// Why a sealed value could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// Shorter than header plus tag.
    #[error("sealed value truncated ({0} bytes)")]
    Truncated(usize),
    /// Version byte this build does not know.
    #[error("unknown seal version {0}")]
    UnknownVersion(u8),
    /// Tag check failed: wrong key, modified bytes, or the value was moved
    /// to another record key or kind.
    #[error("authentication failed (modified, or moved from another key or kind)")]
    Authentication,
}

/// Associated data: `"tss-store/v1" || tag || 0x00 || len(key) u32 BE || key || version`.
pub(crate) fn aad(tag: &str, key: &[u8]) -> Result<Vec<u8>, SealError> {
    let key_len = u32::try_from(key.len()).map_err(|_| SealError::TooLarge(key.len()))?;
    let mut out = Vec::with_capacity(AAD_DOMAIN.len() + tag.len() + 1 + 4 + key.len() + 1);
    out.extend_from_slice(AAD_DOMAIN);
    out.extend_from_slice(tag.as_bytes());
    out.push(0);
    out.extend_from_slice(&key_len.to_be_bytes());
    out.extend_from_slice(key);
    out.push(SEAL_VERSION);
    Ok(out)
}

/// Seals `value` stored under `key` in the tree tagged `tag`, with a fresh
/// random nonce.
pub(crate) fn seal(
    sk: &StorageKey,
    tag: &str,
    key: &[u8],
    value: &[u8],
) -> Result<Vec<u8>, SealError> {
    let mut nonce = [0u8; NONCE_LEN];
    OsRng
        .try_fill_bytes(&mut nonce)
        .map_err(SealError::Random)?;
    seal_with_nonce(sk, tag, key, value, &nonce)
}

/// [`seal`] with a caller-chosen nonce. Only for golden tests: a nonce must
/// never repeat under one key.
pub(crate) fn seal_with_nonce(
    sk: &StorageKey,
    tag: &str,
    key: &[u8],
    value: &[u8],
    nonce: &[u8; NONCE_LEN],
) -> Result<Vec<u8>, SealError> {
    let aad = aad(tag, key)?;
    // Capacity fixed up front so the buffer never reallocates and leaves a
    // plaintext copy behind in freed memory.
    let mut out = Vec::with_capacity(HEADER_LEN + value.len() + TAG_LEN);
    out.push(SEAL_VERSION);
    out.extend_from_slice(nonce);
    out.extend_from_slice(value);
    let tag_bytes = sk
        .cipher()
        .encrypt_in_place_detached(XNonce::from_slice(nonce), &aad, &mut out[HEADER_LEN..])
        .map_err(|_| {
            // Only fails for messages beyond the cipher's limit; the buffer
            // still holds plaintext then, so wipe it.
            out.zeroize();
            SealError::TooLarge(value.len())
        })?;
    out.extend_from_slice(&tag_bytes);
    Ok(out)
}

/// Opens a sealed value stored under `key` in the tree tagged `tag`.
pub(crate) fn open(
    sk: &StorageKey,
    tag: &str,
    key: &[u8],
    sealed: &[u8],
) -> Result<SecretBytes, OpenError> {
    if sealed.len() < HEADER_LEN + TAG_LEN {
        return Err(OpenError::Truncated(sealed.len()));
    }
    let (&version, rest) = sealed.split_first().ok_or(OpenError::Truncated(0))?;
    if version != SEAL_VERSION {
        return Err(OpenError::UnknownVersion(version));
    }
    let (nonce, rest) = rest.split_at(NONCE_LEN);
    let (ciphertext, tag_bytes) = rest.split_at(rest.len() - TAG_LEN);
    // A key too long for the format cannot have been sealed.
    let aad = aad(tag, key).map_err(|_| OpenError::Authentication)?;
    let mut plain = Zeroizing::new(ciphertext.to_vec());
    sk.cipher()
        .decrypt_in_place_detached(
            XNonce::from_slice(nonce),
            &aad,
            &mut plain,
            Tag::from_slice(tag_bytes),
        )
        .map_err(|_| OpenError::Authentication)?;
    Ok(SecretBytes::from(plain))
}

#[cfg(test)]
#[allow(non_snake_case)]
mod tests {
    use super::*;

    fn golden_key() -> StorageKey {
        StorageKey::from_bytes([0x42; KEY_LEN])
    }

    #[test]
    fn seal_with_nonce__should_match_golden_encoding() {
        // Given a fixed key and nonce
        let nonce = [0x24; NONCE_LEN];
        // When sealing a known value
        let sealed = seal_with_nonce(&golden_key(), "key_share", b"k1", b"hello", &nonce).unwrap();
        // Then the bytes are exactly the v1 format (cross-checked with
        // libsodium's crypto_aead_xchacha20poly1305_ietf_encrypt)
        assert_eq!(hex::encode(&sealed), GOLDEN_SEALED);
        assert_eq!(&sealed[..1], &[SEAL_VERSION]);
        assert_eq!(&sealed[1..HEADER_LEN], &nonce);
        assert_eq!(sealed.len(), HEADER_LEN + 5 + TAG_LEN);
        // And it opens back
        let opened = open(&golden_key(), "key_share", b"k1", &sealed).unwrap();
        assert_eq!(opened.expose(), b"hello");
    }

    const GOLDEN_SEALED: &str = "01242424242424242424242424242424242424242424242424cd3bbb09019cd031aedd83483b069732c5d7baf1c7";

    #[test]
    fn aad__should_match_golden_layout() {
        let aad = aad("primes", b"ab").unwrap();
        let mut expected = b"tss-store/v1primes\x00".to_vec();
        expected.extend_from_slice(&[0, 0, 0, 2]);
        expected.extend_from_slice(b"ab");
        expected.push(1);
        assert_eq!(aad, expected);
    }

    #[test]
    fn derive_key__should_match_golden_key_with_fixed_params() {
        // Given the production parameters, a fixed passphrase and salt
        let pass = Passphrase::new("correct horse battery staple".into());
        let salt = [0x5a; SALT_LEN];
        // When deriving
        let key = derive_key(&pass, &salt, &KdfParams::FIXED).unwrap();
        // Then the key is fixed (cross-checked with libsodium's crypto_pwhash,
        // Argon2id v1.3, opslimit 3, memlimit 64 MiB)
        assert_eq!(hex::encode(key.0), GOLDEN_KEY);
    }

    const GOLDEN_KEY: &str = "b5d354876f658cde1a5d125c43b4a60465890d322a2394066a3428b0d1fa231a";

    #[test]
    fn derive_key__should_depend_on_passphrase_and_salt() {
        let a = derive_key(
            &Passphrase::new("a".into()),
            &[1; SALT_LEN],
            &KdfParams::CHEAP,
        )
        .unwrap();
        let b = derive_key(
            &Passphrase::new("b".into()),
            &[1; SALT_LEN],
            &KdfParams::CHEAP,
        )
        .unwrap();
        let c = derive_key(
            &Passphrase::new("a".into()),
            &[2; SALT_LEN],
            &KdfParams::CHEAP,
        )
        .unwrap();
        assert_ne!(a.0, b.0);
        assert_ne!(a.0, c.0);
    }

    #[test]
    fn open__should_fail_when_any_byte_is_flipped() {
        let sealed = seal(&golden_key(), "key_share", b"k", b"secret value").unwrap();
        for i in 0..sealed.len() {
            let mut bad = sealed.clone();
            bad[i] ^= 0x01;
            let err = open(&golden_key(), "key_share", b"k", &bad).unwrap_err();
            if i == 0 {
                assert!(
                    matches!(err, OpenError::UnknownVersion(_)),
                    "byte {i}: {err:?}"
                );
            } else {
                assert!(
                    matches!(err, OpenError::Authentication),
                    "byte {i}: {err:?}"
                );
            }
        }
    }

    #[test]
    fn open__should_fail_under_another_key_tag_or_storage_key() {
        let sealed = seal(&golden_key(), "key_share", b"k", b"v").unwrap();
        assert!(matches!(
            open(&golden_key(), "key_share", b"k2", &sealed),
            Err(OpenError::Authentication)
        ));
        assert!(matches!(
            open(&golden_key(), "primes", b"k", &sealed),
            Err(OpenError::Authentication)
        ));
        let other = StorageKey::from_bytes([0x43; KEY_LEN]);
        assert!(matches!(
            open(&other, "key_share", b"k", &sealed),
            Err(OpenError::Authentication)
        ));
    }

    #[test]
    fn open__should_reject_truncated_values() {
        let sealed = seal(&golden_key(), "key_share", b"k", b"").unwrap();
        assert_eq!(sealed.len(), HEADER_LEN + TAG_LEN);
        assert!(open(&golden_key(), "key_share", b"k", &sealed)
            .unwrap()
            .is_empty());
        for len in 0..sealed.len() {
            assert!(matches!(
                open(&golden_key(), "key_share", b"k", &sealed[..len]),
                Err(OpenError::Truncated(n)) if n == len
            ));
        }
    }

    #[test]
    fn seal__should_use_a_fresh_nonce_each_time() {
        let a = seal(&golden_key(), "key_share", b"k", b"v").unwrap();
        let b = seal(&golden_key(), "key_share", b"k", b"v").unwrap();
        assert_ne!(a, b);
    }

    #[test]
    fn kdf_record__should_round_trip_and_match_golden_encoding() {
        let record = KdfRecord {
            params: KdfParams::FIXED,
            salt: [0xab; SALT_LEN],
        };
        let bytes = record.encode();
        assert_eq!(
            hex::encode(&bytes),
            "01000100000000000300000001abababababababababababababababab"
        );
        assert_eq!(KdfRecord::decode(&bytes).unwrap(), record);
    }

    #[test]
    fn kdf_record__should_refuse_unknown_version_bad_length_and_wild_params() {
        let good = KdfRecord {
            params: KdfParams::FIXED,
            salt: [1; SALT_LEN],
        }
        .encode();
        let mut v2 = good.clone();
        v2[0] = 2;
        assert!(matches!(
            KdfRecord::decode(&v2),
            Err(KdfRecordError::UnknownVersion(2))
        ));
        assert!(matches!(
            KdfRecord::decode(&[]),
            Err(KdfRecordError::BadLength(0))
        ));
        assert!(matches!(
            KdfRecord::decode(&good[..good.len() - 1]),
            Err(KdfRecordError::BadLength(_))
        ));
        for params in [
            KdfParams {
                m_kib: u32::MAX,
                t: 3,
                p: 1,
            },
            KdfParams {
                m_kib: 65536,
                t: 0,
                p: 1,
            },
            KdfParams {
                m_kib: 65536,
                t: 3,
                p: 0,
            },
            KdfParams {
                m_kib: 4,
                t: 3,
                p: 1,
            },
            KdfParams {
                m_kib: 65536,
                t: 1000,
                p: 1,
            },
        ] {
            let bytes = KdfRecord {
                params,
                salt: [1; SALT_LEN],
            }
            .encode();
            assert!(
                matches!(
                    KdfRecord::decode(&bytes),
                    Err(KdfRecordError::ParamsOutOfRange(_))
                ),
                "{params:?}"
            );
        }
    }

    #[test]
    fn storage_key__should_not_print_bytes() {
        assert_eq!(format!("{:?}", golden_key()), "<redacted>");
    }
}
