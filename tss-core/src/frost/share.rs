//! One party's FROST key share as it is sealed in the store: the scheme,
//! the party's index, its key package (secret) and the key's public package.

use std::fmt;
use std::sync::OnceLock;

use frost_core::keys::{KeyPackage, PublicKeyPackage, VerifyingShare};
use frost_core::round1::{NonceCommitment, SigningCommitments};
use frost_core::{Ciphersuite, Element, Group, Scalar};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use super::{decode_canonical, identifier, with_suite, Ed, Scheme, Tr};
use crate::ecdsa::EngineError;
use crate::secret::SecretBytes;

/// Format version of stored FROST shares. Every older version must keep
/// loading.
pub const FROST_SHARE_VERSION: u8 = 1;

/// A party's share of a FROST key. Secret: sealed at rest, zeroized on drop,
/// never printed.
#[derive(Clone)]
pub struct FrostShare {
    pub(super) scheme: Scheme,
    pub(super) index: u16,
    /// The crate's `KeyPackage` encoding (signing share inside).
    pub(super) key_package: Zeroizing<Vec<u8>>,
    /// The crate's `PublicKeyPackage` encoding.
    pub(super) public_package: Vec<u8>,
    /// Taproot: the untweaked group key P (33-byte SEC1) the output key is
    /// BIP86-tweaked from; empty for Ed25519.
    pub(super) internal_key: Vec<u8>,
    /// Signers needed and parties, from the public package (set by `check`).
    pub(super) threshold: u16,
    pub(super) parties: u16,
    /// Both packages decoded once, when the share is built or loaded:
    /// decoding an Ed25519 point checks its torsion with a scalar
    /// multiplication, too slow to repeat on every signature.
    pub(super) decoded: Decoded,
    /// The group key in the suite's encoding (see [`FrostShare::group_key`]).
    pub(super) group_key: Vec<u8>,
}

/// A share's key package (secret; zeroized on drop by the crate) and
/// public package, decoded.
pub(crate) struct Packages<C: Ciphersuite> {
    pub(crate) key: KeyPackage<C>,
    pub(crate) public: PublicKeyPackage<C>,
    /// The key package a share is computed with, where it is not `key`
    /// ([`Suite::for_signing`]).
    pub(crate) signing: Option<KeyPackage<C>>,
}

impl<C: Ciphersuite> Clone for Packages<C> {
    fn clone(&self) -> Self {
        Packages {
            key: self.key.clone(),
            public: self.public.clone(),
            signing: self.signing.clone(),
        }
    }
}

/// [`Packages`] of either suite.
#[derive(Clone)]
pub(crate) enum Decoded {
    Ed25519(Box<Packages<Ed>>),
    Taproot(Box<Packages<Tr>>),
}

/// A ciphersuite this crate signs with: reaches its decoded packages.
pub(crate) trait Suite: Ciphersuite {
    /// Length of an encoded group element.
    const ELEMENT_LEN: usize;
    /// The packages, if `d` is of this suite.
    fn packages(d: &Decoded) -> Option<&Packages<Self>>;
    /// Wraps this suite's packages.
    fn wrap(p: Packages<Self>) -> Decoded;
    /// A point this node decoded and checked before and kept sealed since,
    /// decoded again without repeating the checks (for Ed25519, the
    /// torsion check, a scalar multiplication); `None` if it is not a
    /// point at all.
    fn element_checked_before(bytes: &[u8]) -> Option<Element<Self>>;
    /// What the crate's `SigningCommitments` encoding puts before the two
    /// points.
    fn commitments_header() -> &'static [u8];
    /// `k * G` by the suite's precomputed table of the generator (the
    /// crate's generic product does without one).
    fn mul_generator(k: &Scalar<Self>) -> Element<Self>;
    /// The key package a signature share is computed with, as the crate's
    /// `pre_sign` makes it (Taproot: BIP340's even-y key), if it is not
    /// `kp` itself.
    fn for_signing(kp: &KeyPackage<Self>) -> Option<KeyPackage<Self>>;
    /// Whether a share for group commitment `r` negates its nonces
    /// (Taproot: an odd y, as BIP340 signs with the even one).
    fn negates_nonces(r: &Element<Self>) -> bool;
    /// Whether `sig` is a valid signature of `message` under the 32-byte
    /// `public_key` ([`FrostShare::public_key`]), by a verifier outside
    /// the FROST crates.
    fn verifies(public_key: &[u8], message: &[u8], sig: &[u8; 64]) -> bool;
}

/// [`Suite::commitments_header`], computed from an encoding of the
/// generator twice.
fn commitments_header_of<C: Suite>() -> Vec<u8> {
    let g = NonceCommitment::<C>::new(<C::Group as Group>::generator());
    match SigningCommitments::new(g, g).serialize() {
        Ok(enc) if enc.len() >= 2 * C::ELEMENT_LEN => {
            enc[..enc.len() - 2 * C::ELEMENT_LEN].to_vec()
        }
        // Never for these suites; an empty header then matches nothing.
        _ => Vec::new(),
    }
}

impl Suite for Ed {
    const ELEMENT_LEN: usize = 32;
    fn for_signing(_: &KeyPackage<Self>) -> Option<KeyPackage<Self>> {
        None
    }
    fn negates_nonces(_: &Element<Self>) -> bool {
        false
    }
    fn verifies(public_key: &[u8], message: &[u8], sig: &[u8; 64]) -> bool {
        ed25519_verifies(public_key, message, sig)
    }
    fn mul_generator(k: &Scalar<Self>) -> Element<Self> {
        curve25519_dalek::EdwardsPoint::mul_base(k)
    }
    fn element_checked_before(bytes: &[u8]) -> Option<Element<Self>> {
        curve25519_dalek::edwards::CompressedEdwardsY::from_slice(bytes)
            .ok()?
            .decompress()
    }
    fn commitments_header() -> &'static [u8] {
        static HEADER: OnceLock<Vec<u8>> = OnceLock::new();
        HEADER.get_or_init(commitments_header_of::<Self>)
    }
    fn packages(d: &Decoded) -> Option<&Packages<Self>> {
        match d {
            Decoded::Ed25519(p) => Some(p),
            Decoded::Taproot(_) => None,
        }
    }
    fn wrap(p: Packages<Self>) -> Decoded {
        Decoded::Ed25519(Box::new(p))
    }
}

impl Suite for Tr {
    const ELEMENT_LEN: usize = 33;
    fn for_signing(kp: &KeyPackage<Self>) -> Option<KeyPackage<Self>> {
        use frost_secp256k1_tr::keys::EvenY;
        (!kp.has_even_y()).then(|| kp.clone().into_even_y(Some(false)))
    }
    fn negates_nonces(r: &Element<Self>) -> bool {
        use k256::elliptic_curve::point::AffineCoordinates;
        r.to_affine().y_is_odd().into()
    }
    fn verifies(public_key: &[u8], message: &[u8], sig: &[u8; 64]) -> bool {
        bip340_verifies(public_key, message, sig)
    }
    fn mul_generator(k: &Scalar<Self>) -> Element<Self> {
        use k256::elliptic_curve::ops::MulByGenerator;
        k256::ProjectivePoint::mul_by_generator(k)
    }
    fn element_checked_before(bytes: &[u8]) -> Option<Element<Self>> {
        use k256::elliptic_curve::sec1::FromEncodedPoint;
        let point = k256::EncodedPoint::from_bytes(bytes).ok()?;
        let affine: Option<k256::AffinePoint> =
            k256::AffinePoint::from_encoded_point(&point).into();
        affine.map(k256::ProjectivePoint::from)
    }
    fn commitments_header() -> &'static [u8] {
        static HEADER: OnceLock<Vec<u8>> = OnceLock::new();
        HEADER.get_or_init(commitments_header_of::<Self>)
    }
    fn packages(d: &Decoded) -> Option<&Packages<Self>> {
        match d {
            Decoded::Taproot(p) => Some(p),
            Decoded::Ed25519(_) => None,
        }
    }
    fn wrap(p: Packages<Self>) -> Decoded {
        Decoded::Taproot(Box::new(p))
    }
}

/// Decodes both packages of `scheme` (each checked to be canonical).
fn decode_packages(scheme: Scheme, key: &[u8], public: &[u8]) -> Result<Decoded, EngineError> {
    fn as_suite<C: Suite>(key: &[u8], public: &[u8]) -> Result<Decoded, EngineError> {
        let key = decode_canonical(
            key,
            KeyPackage::<C>::deserialize,
            KeyPackage::<C>::serialize,
        )
        .ok_or_else(|| EngineError::InvalidInput("the key package does not decode".into()))?;
        let public = decode_canonical(
            public,
            PublicKeyPackage::<C>::deserialize,
            PublicKeyPackage::<C>::serialize,
        )
        .ok_or_else(|| EngineError::InvalidInput("the public package does not decode".into()))?;
        let signing = C::for_signing(&key);
        Ok(C::wrap(Packages {
            key,
            public,
            signing,
        }))
    }
    with_suite!(scheme, C => as_suite::<C>(key, public))
}

impl fmt::Debug for FrostShare {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FrostShare")
            .field("scheme", &self.scheme)
            .field("index", &self.index)
            .field("public_key", &hex::encode(self.public_key()))
            .finish_non_exhaustive()
    }
}

#[derive(Serialize, Deserialize)]
struct Stored {
    v: u8,
    scheme: Scheme,
    index: u16,
    #[serde(with = "serde_bytes")]
    key_package: Vec<u8>,
    #[serde(with = "serde_bytes")]
    public_package: Vec<u8>,
    #[serde(with = "serde_bytes")]
    internal_key: Vec<u8>,
}

impl Drop for Stored {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.key_package);
    }
}

impl FrostShare {
    /// Builds a share from a DKG's output (checked as [`FrostShare::decode`]
    /// checks a stored one).
    pub(crate) fn from_parts<C: Suite>(
        scheme: Scheme,
        index: u16,
        key_package: &KeyPackage<C>,
        public_package: &PublicKeyPackage<C>,
        internal_key: Vec<u8>,
    ) -> Result<Self, EngineError> {
        let bug = |e: frost_core::Error<C>| EngineError::InvalidInput(format!("{e}"));
        Self::checked(
            scheme,
            index,
            Zeroizing::new(key_package.serialize().map_err(bug)?),
            public_package.serialize().map_err(bug)?,
            internal_key,
        )
    }

    /// Decodes the packages and checks that the parts fit together.
    fn checked(
        scheme: Scheme,
        index: u16,
        key_package: Zeroizing<Vec<u8>>,
        public_package: Vec<u8>,
        internal_key: Vec<u8>,
    ) -> Result<Self, EngineError> {
        let decoded = decode_packages(scheme, &key_package, &public_package)?;
        let mut share = FrostShare {
            scheme,
            index,
            key_package,
            public_package,
            internal_key,
            threshold: 0,
            parties: 0,
            decoded,
            group_key: Vec::new(),
        };
        share.check()?;
        Ok(share)
    }

    /// The key's scheme.
    pub fn scheme(&self) -> Scheme {
        self.scheme
    }

    /// This party's index (keygen order, from 0).
    pub fn index(&self) -> u16 {
        self.index
    }

    /// Signers needed (t of t-of-n).
    pub fn threshold(&self) -> u16 {
        self.threshold
    }

    /// Number of parties (n of t-of-n).
    pub fn parties(&self) -> u16 {
        self.parties
    }

    /// The public key a verifier checks signatures under: the 32-byte
    /// Ed25519 key, or the 32-byte x-only Taproot output key.
    pub fn public_key(&self) -> Vec<u8> {
        let full = self.group_key();
        match self.scheme {
            Scheme::Ed25519 => full,
            Scheme::Taproot => full.get(1..).map(<[u8]>::to_vec).unwrap_or_default(),
        }
    }

    /// The group key in the suite's own encoding (32 bytes for Ed25519,
    /// 33-byte SEC1 for Taproot's output key).
    pub fn group_key(&self) -> Vec<u8> {
        self.group_key.clone()
    }

    /// Taproot: the x-only internal key P (BIP86: the output key is P
    /// tweaked with an empty script tree). `None` for Ed25519.
    pub fn internal_key(&self) -> Option<[u8; 32]> {
        match self.scheme {
            Scheme::Ed25519 => None,
            Scheme::Taproot => self.internal_key.get(1..).and_then(|b| b.try_into().ok()),
        }
    }

    /// Every party's verifying share (g^{s_i}), in index order, in the
    /// suite's encoding.
    pub fn verifying_shares(&self) -> Vec<Vec<u8>> {
        with_suite!(self.scheme, C => self.public_package::<C>()
            .map(|p| {
                p.verifying_shares()
                    .values()
                    .map(|v| v.serialize().unwrap_or_default())
                    .collect()
            })
            .unwrap_or_default())
    }

    /// Serializes the share (secret: seal it).
    pub fn encode(&self) -> SecretBytes {
        let stored = Stored {
            v: FROST_SHARE_VERSION,
            scheme: self.scheme,
            index: self.index,
            key_package: self.key_package.to_vec(),
            public_package: self.public_package.clone(),
            internal_key: self.internal_key.clone(),
        };
        let mut out = Vec::new();
        // Serializing into a Vec cannot fail for this type.
        ciborium::into_writer(&stored, &mut out).expect("CBOR into Vec");
        SecretBytes::new(out)
    }

    /// Deserializes a stored share and checks that its parts fit together:
    /// the key package is that of `index`, its signing share matches its
    /// verifying share, and both agree with the public package.
    pub fn decode(b: &[u8]) -> Result<Self, EngineError> {
        let bad = |what: String| EngineError::InvalidInput(format!("stored FROST share: {what}"));
        let s: Stored =
            ciborium::from_reader(b).map_err(|e| bad(format!("does not decode: {e}")))?;
        if s.v != FROST_SHARE_VERSION {
            return Err(bad(format!("unknown format version {}", s.v)));
        }
        Self::checked(
            s.scheme,
            s.index,
            Zeroizing::new(s.key_package.clone()),
            s.public_package.clone(),
            s.internal_key.clone(),
        )
        .map_err(|e| bad(e.to_string()))
    }

    /// Checks the parts fit together and records the threshold, the
    /// number of parties and the group key's encoding.
    fn check(&mut self) -> Result<(), EngineError> {
        let (t, n, key) = with_suite!(self.scheme, C => self.check_as::<C>())?;
        self.threshold = t;
        self.parties = n;
        self.group_key = key;
        Ok(())
    }

    fn check_as<C: Suite>(&self) -> Result<(u16, u16, Vec<u8>), EngineError> {
        let bad = |what: &str| EngineError::InvalidInput(what.to_owned());
        let kp = self.key_package::<C>()?;
        let pkp = self.public_package::<C>()?;
        if *kp.identifier() != identifier::<C>(self.index)? {
            return Err(bad("the key package is another party's"));
        }
        if VerifyingShare::from(*kp.signing_share()) != *kp.verifying_share() {
            return Err(bad("the signing share does not match its verifying share"));
        }
        if pkp.verifying_shares().get(kp.identifier()) != Some(kp.verifying_share())
            || pkp.verifying_key() != kp.verifying_key()
            || pkp.min_signers() != Some(*kp.min_signers())
        {
            return Err(bad("the key package and the public package disagree"));
        }
        let internal_ok = match self.scheme {
            Scheme::Ed25519 => self.internal_key.is_empty(),
            Scheme::Taproot => self.internal_key.len() == 33,
        };
        if !internal_ok {
            return Err(bad("the internal key has the wrong length"));
        }
        let n = u16::try_from(pkp.verifying_shares().len())
            .map_err(|_| bad("too many verifying shares"))?;
        let key = pkp
            .verifying_key()
            .serialize()
            .map_err(|_| bad("the group key does not encode"))?;
        Ok((*kp.min_signers(), n, key))
    }

    /// The key package, decoded (checked to be canonical when loaded).
    pub(crate) fn key_package<C: Suite>(&self) -> Result<&KeyPackage<C>, EngineError> {
        self.packages::<C>().map(|p| &p.key)
    }

    /// The key package a signature share is computed with
    /// ([`Suite::for_signing`]).
    pub(crate) fn signing_key_package<C: Suite>(&self) -> Result<&KeyPackage<C>, EngineError> {
        self.packages::<C>()
            .map(|p| p.signing.as_ref().unwrap_or(&p.key))
    }

    /// The public package, decoded (checked to be canonical when loaded).
    pub(crate) fn public_package<C: Suite>(&self) -> Result<&PublicKeyPackage<C>, EngineError> {
        self.packages::<C>().map(|p| &p.public)
    }

    fn packages<C: Suite>(&self) -> Result<&Packages<C>, EngineError> {
        C::packages(&self.decoded)
            .ok_or_else(|| EngineError::InvalidInput("the share is of another scheme".into()))
    }
}

/// Whether `sig` is a valid signature of `message` under `public_key` by
/// ed25519-dalek's strict verification.
fn ed25519_verifies(public_key: &[u8], message: &[u8], sig: &[u8; 64]) -> bool {
    let Ok(pk) = <[u8; 32]>::try_from(public_key) else {
        return false;
    };
    ed25519_dalek::VerifyingKey::from_bytes(&pk).is_ok_and(|vk| {
        vk.verify_strict(message, &ed25519_dalek::Signature::from_bytes(sig))
            .is_ok()
    })
}

/// Whether `sig` is a valid BIP340 signature of `message` under the
/// x-only `public_key` (k256).
fn bip340_verifies(public_key: &[u8], message: &[u8], sig: &[u8; 64]) -> bool {
    if public_key.len() != 32 {
        return false;
    }
    let Ok(vk) = k256::schnorr::VerifyingKey::from_bytes(public_key) else {
        return false;
    };
    k256::schnorr::Signature::try_from(&sig[..]).is_ok_and(|s| vk.verify_raw(message, &s).is_ok())
}
