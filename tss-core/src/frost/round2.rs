//! Round 2 of a FROST signature computed once per signature: a signer's
//! share from its two nonces ([`share`], for pooled nonces and the
//! two-round protocol alike), and, on the pooled path, the collecting
//! signer's signature from the group commitment its own share was computed
//! with ([`signature`]; the two-round protocol aggregates with the crate).
//!
//! The crate's `round2::sign` takes its nonces as `SigningNonces`, whose
//! only constructors recompute both commitments by a scalar multiplication
//! without the generator's table (two for each share, four more for a
//! Taproot share whose group commitment has an odd y), and its `aggregate`
//! recomputes every binding factor and the group commitment the shares
//! were made with, then verifies with two more such multiplications. Here
//! the same steps run once, with the crate's own internals (binding
//! factors, group commitment, Lagrange coefficient, challenge) and the
//! suite's rules (Taproot: BIP340's even-y key package and negated nonces
//! for an odd group commitment); the signature is then checked by an
//! independent verifier (ed25519-dalek `verify_strict`, k256 BIP340).
//! Tests compare every share and signature with the crate's, over random
//! keys, messages and nonces of both suites.

use frost_core::keys::KeyPackage;
use frost_core::round1::{Nonce, NonceCommitment, SigningCommitments};
use frost_core::{Ciphersuite, Element, Field, Group, Scalar, Signature, SigningPackage};
use zeroize::Zeroizing;

use super::share::Suite;
use super::{engine_error, FrostShare, Positions};
use crate::ecdsa::EngineError;

/// A signer's share over a signing package and the group commitment it
/// was computed with.
pub(crate) struct Computed<C: Ciphersuite> {
    /// R as the crate computes it (Taproot: its y may be odd; the
    /// signature encodes its x only, and the shares are made for it).
    pub(crate) group_commitment: Element<C>,
    /// This signer's share z_i.
    pub(crate) z: Scalar<C>,
}

/// The share of `share`'s party over `package` with the nonces `hiding`
/// and `binding`, which must be the ones `package` lists for this party
/// (refused otherwise, as the crate refuses them).
pub(crate) fn share<C: Suite>(
    share: &FrostShare,
    package: &SigningPackage<C>,
    by_id: &Positions<C>,
    hiding: &Nonce<C>,
    binding: &Nonce<C>,
) -> Result<Computed<C>, EngineError> {
    let bug = |e: frost_core::Error<C>| engine_error(e, by_id, "signature share");
    let kp: &KeyPackage<C> = share.signing_key_package::<C>()?;
    if package.signing_commitments().len() < usize::from(*kp.min_signers()) {
        return Err(EngineError::InvalidInput(format!(
            "{} commitments for a key that needs {} signers",
            package.signing_commitments().len(),
            kp.min_signers()
        )));
    }
    let id = *kp.identifier();
    let listed = package
        .signing_commitment(&id)
        .ok_or_else(|| EngineError::InvalidInput("no commitments for this signer".into()))?;
    let committed = SigningCommitments::<C>::new(
        NonceCommitment::new(C::mul_generator(&hiding.to_scalar())),
        NonceCommitment::new(C::mul_generator(&binding.to_scalar())),
    );
    if committed != listed {
        return Err(EngineError::InvalidInput(
            "the nonces do not match the commitments listed for this signer".into(),
        ));
    }
    let factors =
        frost_core::compute_binding_factor_list(package, kp.verifying_key(), &[]).map_err(bug)?;
    let rho = factors
        .get(&id)
        .ok_or_else(|| EngineError::Protocol("no binding factor for this signer".into()))?;
    let rho = scalar::<C>(&rho.serialize())?;
    let r = frost_core::compute_group_commitment(package, &factors)
        .map_err(bug)?
        .to_element();
    let lambda = frost_core::derive_interpolating_value(&id, package).map_err(bug)?;
    let c = C::challenge(&r, kp.verifying_key(), package.message())
        .map_err(bug)?
        .to_scalar();
    // The nonce part, BIP340-negated for an odd R (Taproot), kept in a
    // zeroizing `Nonce`: it and the share would give away the signing share.
    let mut k = Zeroizing::new(Nonce::<C>::from_scalar(
        hiding.to_scalar() + binding.to_scalar() * rho,
    ));
    if C::negates_nonces(&r) {
        k = Zeroizing::new(Nonce::<C>::from_scalar(
            <<C::Group as Group>::Field as Field>::zero() - k.to_scalar(),
        ));
    }
    Ok(Computed {
        group_commitment: r,
        z: k.to_scalar() + lambda * kp.signing_share().to_scalar() * c,
    })
}

/// The 64-byte signature of group commitment `r` and every signer's share
/// `zs`, if it verifies under `public_key` (the 32-byte key a verifier
/// uses: [`FrostShare::public_key`]) over `message`; `None` if not (a
/// wrong share: the caller finds whose).
pub(crate) fn signature<C: Suite>(
    r: Element<C>,
    zs: &[Scalar<C>],
    public_key: &[u8],
    message: &[u8],
) -> Result<Option<[u8; 64]>, EngineError> {
    let zero = <<C::Group as Group>::Field as Field>::zero();
    let z = zs.iter().fold(zero, |acc, z| acc + *z);
    let bytes: [u8; 64] = Signature::<C>::new(r, z)
        .serialize()
        .map_err(|e| EngineError::Protocol(format!("signature: {e}")))?
        .try_into()
        .map_err(|_| EngineError::Protocol("a signature that is not 64 bytes".into()))?;
    Ok(C::verifies(public_key, message, &bytes).then_some(bytes))
}

/// A scalar in the suite's canonical encoding.
pub(crate) fn scalar<C: Ciphersuite>(bytes: &[u8]) -> Result<Scalar<C>, EngineError> {
    let bad = || EngineError::Protocol("a scalar that does not decode".into());
    let ser = bytes.try_into().map_err(|_| bad())?;
    <<C::Group as Group>::Field as Field>::deserialize(&ser).map_err(|_| bad())
}
