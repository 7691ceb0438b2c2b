//! FROST signing by `t` signers in two rounds: each signer commits to two
//! single-use nonces ([`commit`]), then, over the message and everyone's
//! commitments, releases a signature share ([`sign_share`]); the shares
//! add up to the signature ([`aggregate`], which checks every share and
//! names a wrong one's sender).
//!
//! The first round needs no message, so a pair of signers can run it ahead
//! of time and keep the nonces sealed (a pool): a request then takes one
//! round. [`run`] is both rounds over a `round-based` delivery, for when no
//! pooled nonce is left.
//!
//! A nonce signs at most one message, ever: [`Nonces`] is consumed by
//! [`sign_share`], and a caller that stores nonces deletes them before
//! calling it and releases the share only once the deletion is durable (a
//! crash then loses the nonce, or brings it back with nothing made from it
//! seen: never a reuse that shows).
//!
//! `signers` are keygen indices in increasing order; a culprit is reported
//! as a position in `signers` (the session index, as the engines use).

use std::collections::BTreeMap;

use frost_core::round1::{Nonce, NonceCommitment, SigningCommitments, SigningNonces};
use frost_core::round2::SignatureShare;
use frost_core::{Ciphersuite, Field, Group, Identifier, SigningPackage};
use futures::SinkExt;
use round_based::rounds_router::simple_store::RoundInput;
use round_based::rounds_router::RoundsRouter;
use round_based::{Delivery, Mpc, MpcParty, Outgoing, ProtocolMessage};
use serde::{Deserialize, Serialize};

use super::share::Suite;
use super::{
    decode_canonical, engine_error, identifier, round2, with_suite, FrostShare, Positions,
};
use crate::ecdsa::sign::BeforeRelease;
use crate::ecdsa::EngineError;
use crate::secret::SecretBytes;
use zeroize::Zeroizing;

/// A FROST signing message.
#[derive(Clone, Debug, Serialize, Deserialize, ProtocolMessage)]
pub enum Msg {
    /// Round 1 (broadcast): the sender's nonce commitments.
    Commit(CommitMsg),
    /// Round 2 (broadcast): the sender's signature share.
    Share(ShareMsg),
}

/// Round 1: the crate's `SigningCommitments` encoding.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CommitMsg {
    /// The commitments.
    #[serde(with = "serde_bytes")]
    pub commitments: Vec<u8>,
}

/// Round 2: the crate's `SignatureShare` encoding (32 bytes).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ShareMsg {
    /// The share.
    #[serde(with = "serde_bytes")]
    pub share: Vec<u8>,
}

/// A signer's single-use nonce pair (secret: the two scalars [`commit`]
/// writes, or the crate's `SigningNonces` encoding in pool entries made
/// before). Consumed by [`sign_share`].
pub struct Nonces(SecretBytes);

impl std::fmt::Debug for Nonces {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Nonces(<secret>)")
    }
}

impl Nonces {
    /// The bytes to seal in a pool.
    pub fn expose(&self) -> &[u8] {
        self.0.expose()
    }

    /// Nonces read back from a pool (checked when used).
    pub fn from_stored(bytes: SecretBytes) -> Self {
        Nonces(bytes)
    }
}

/// Round 1: fresh nonces for `share` and their public commitments (the
/// bytes the other signers need).
pub fn commit(share: &FrostShare) -> Result<(Nonces, Vec<u8>), EngineError> {
    with_suite!(share.scheme(), C => commit_as::<C>(share))
}

fn commit_as<C: Suite>(share: &FrostShare) -> Result<(Nonces, Vec<u8>), EngineError> {
    let kp = share.key_package::<C>()?;
    // RFC 9591's nonce_generate, as frost-core's `round1::commit` does it,
    // with the commitments by the generator's precomputed table.
    let hiding =
        zeroize::Zeroizing::new(Nonce::<C>::new(kp.signing_share(), &mut rand_core::OsRng));
    let binding =
        zeroize::Zeroizing::new(Nonce::<C>::new(kp.signing_share(), &mut rand_core::OsRng));
    let commitments = SigningCommitments::<C>::new(
        NonceCommitment::new(C::mul_generator(&hiding.to_scalar())),
        NonceCommitment::new(C::mul_generator(&binding.to_scalar())),
    );
    let bug = |e: frost_core::Error<C>| EngineError::Protocol(e.to_string());
    // The two nonce scalars (hiding, binding); their commitments are
    // recomputed when they sign.
    let mut secret = zeroize::Zeroizing::new(Vec::with_capacity(2 * NONCE_LEN));
    for n in [&*hiding, &*binding] {
        let b = zeroize::Zeroizing::new(n.serialize());
        secret.extend_from_slice(&b);
    }
    Ok((
        Nonces(SecretBytes::from(secret)),
        commitments.serialize().map_err(bug)?,
    ))
}

/// Length of an encoded nonce scalar (both suites).
const NONCE_LEN: usize = 32;

/// A signer's hiding and binding nonces, zeroized on drop.
type NoncePair<C> = (Zeroizing<Nonce<C>>, Zeroizing<Nonce<C>>);

/// Decodes a signer's two nonce scalars (hiding, binding): as [`commit`]
/// writes them, or in the crate's `SigningNonces` encoding of pool
/// entries made before (its commitments checked against the scalars).
/// [`round2::share`] checks them against the signer's listed commitments.
fn decode_nonces<C: Suite>(bytes: &[u8]) -> Option<NoncePair<C>> {
    if bytes.len() == 2 * NONCE_LEN {
        let (h, b) = bytes.split_at(NONCE_LEN);
        return Some((
            Zeroizing::new(Nonce::<C>::deserialize(h).ok()?),
            Zeroizing::new(Nonce::<C>::deserialize(b).ok()?),
        ));
    }
    decode_canonical(
        bytes,
        SigningNonces::<C>::deserialize,
        SigningNonces::<C>::serialize,
    )
    .filter(|n| {
        SigningNonces::from_nonces(*n.hiding(), *n.binding()).commitments() == n.commitments()
    })
    .map(|n| (Zeroizing::new(*n.hiding()), Zeroizing::new(*n.binding())))
}

/// What every signer signs over: the signers, their round-1 commitments
/// (one per signer, in `signers` order) and the message.
#[derive(Clone, Copy, Debug)]
pub struct Signing<'a> {
    /// Keygen indices of the signers, increasing.
    pub signers: &'a [u16],
    /// Each signer's commitments, in `signers` order.
    pub commitments: &'a [Vec<u8>],
    /// The message: any bytes for Ed25519; for Taproot, the 32-byte BIP341
    /// sighash (or any BIP340 message).
    pub message: &'a [u8],
}

impl Signing<'_> {
    /// The crate's signing package, with the identifiers of the signers;
    /// refuses a commitment that does not decode, naming its signer.
    fn package<C: Ciphersuite>(
        &self,
        share: &FrostShare,
    ) -> Result<(SigningPackage<C>, Positions<C>), EngineError> {
        self.check_signers(share)?;
        let mut map = BTreeMap::new();
        let mut by_id = BTreeMap::new();
        for (pos, (&s, c)) in self.signers.iter().zip(self.commitments).enumerate() {
            let pos = u16::try_from(pos).unwrap_or(u16::MAX);
            let c = decode_commitments::<C>(pos, c)?;
            let id = identifier::<C>(s)?;
            map.insert(id, c);
            by_id.insert(id, pos);
        }
        Ok((SigningPackage::new(map, self.message), by_id))
    }

    /// [`Signing::package`] of commitments this node checked with
    /// [`check_commitments`] when they were made and kept sealed since (a
    /// pool entry): each point is decoded without repeating the checks
    /// ([`Suite::element_checked_before`]).
    fn package_checked_before<C: Suite>(
        &self,
        share: &FrostShare,
    ) -> Result<(SigningPackage<C>, Positions<C>), EngineError> {
        self.check_signers(share)?;
        let header = C::commitments_header();
        let len = header.len() + 2 * C::ELEMENT_LEN;
        let mut map = BTreeMap::new();
        let mut by_id = BTreeMap::new();
        for (pos, (&s, c)) in self.signers.iter().zip(self.commitments).enumerate() {
            let c = (c.len() == len && c.starts_with(header))
                .then(|| {
                    let (h, b) = c[header.len()..].split_at(C::ELEMENT_LEN);
                    Some(SigningCommitments::<C>::new(
                        NonceCommitment::new(C::element_checked_before(h)?),
                        NonceCommitment::new(C::element_checked_before(b)?),
                    ))
                })
                .flatten()
                .ok_or_else(|| {
                    EngineError::InvalidInput(format!(
                        "the stored nonce commitments of signer {s} do not decode"
                    ))
                })?;
            let id = identifier::<C>(s)?;
            map.insert(id, c);
            by_id.insert(id, u16::try_from(pos).unwrap_or(u16::MAX));
        }
        Ok((SigningPackage::new(map, self.message), by_id))
    }

    /// Refuses signers that do not fit `share`'s key.
    fn check_signers(&self, share: &FrostShare) -> Result<(), EngineError> {
        let t = usize::from(share.threshold());
        let increasing = self.signers.windows(2).all(|w| w[0] < w[1]);
        if self.signers.len() != t
            || self.commitments.len() != t
            || !increasing
            || self.signers.iter().any(|&s| s >= share.parties())
        {
            return Err(EngineError::InvalidInput(format!(
                "{} signers ({:?}) with {} commitments for a {t}-of-{} key",
                self.signers.len(),
                self.signers,
                self.commitments.len(),
                share.parties()
            )));
        }
        Ok(())
    }

    /// Position of `share`'s party among the signers.
    fn position(&self, share: &FrostShare) -> Result<usize, EngineError> {
        self.signers
            .iter()
            .position(|&s| s == share.index())
            .ok_or_else(|| {
                EngineError::InvalidInput(format!(
                    "party {} is not among the signers {:?}",
                    share.index(),
                    self.signers
                ))
            })
    }
}

/// Checks that every commitment of `signing` decodes (a wrong one names its
/// signer) and that the signers fit `share`'s key.
pub fn check_commitments(share: &FrostShare, signing: &Signing<'_>) -> Result<(), EngineError> {
    with_suite!(share.scheme(), C => signing.package::<C>(share).map(|_| ()))
}

/// [`check_commitments`] for every signer but the one at position `me`
/// (whose commitments this node made itself).
pub fn check_commitments_of_others(
    share: &FrostShare,
    me: u16,
    signing: &Signing<'_>,
) -> Result<(), EngineError> {
    fn as_suite<C: Suite>(
        share: &FrostShare,
        me: u16,
        signing: &Signing<'_>,
    ) -> Result<(), EngineError> {
        signing.check_signers(share)?;
        for (pos, c) in signing.commitments.iter().enumerate() {
            let pos = u16::try_from(pos).unwrap_or(u16::MAX);
            if pos != me {
                decode_commitments::<C>(pos, c)?;
            }
        }
        Ok(())
    }
    with_suite!(share.scheme(), C => as_suite::<C>(share, me, signing))
}

/// Signer `pos`'s commitments, decoded canonically (blamed on it if not).
fn decode_commitments<C: Ciphersuite>(
    pos: u16,
    c: &[u8],
) -> Result<SigningCommitments<C>, EngineError> {
    decode_canonical(
        c,
        SigningCommitments::<C>::deserialize,
        SigningCommitments::<C>::serialize,
    )
    .ok_or_else(|| EngineError::Misbehaved {
        culprit: pos,
        reason: "its nonce commitments do not decode".into(),
    })
}

/// Round 2: this signer's signature share over `signing`, with the nonces
/// whose commitments it listed for this signer (refused otherwise).
pub fn sign_share(
    share: &FrostShare,
    signing: &Signing<'_>,
    nonces: Nonces,
) -> Result<Vec<u8>, EngineError> {
    with_suite!(share.scheme(), C => sign_share_as::<C>(share, signing, nonces, false))
}

fn sign_share_as<C: Suite>(
    share: &FrostShare,
    signing: &Signing<'_>,
    nonces: Nonces,
    checked_before: bool,
) -> Result<Vec<u8>, EngineError> {
    signing.position(share)?;
    let (package, by_id) = if checked_before {
        signing.package_checked_before::<C>(share)?
    } else {
        signing.package::<C>(share)?
    };
    let own = sign_with(share, &package, &by_id, nonces)?;
    Ok(<<C::Group as Group>::Field as Field>::serialize(&own.z)
        .as_ref()
        .to_vec())
}

/// [`sign_share`] with commitments this node checked when they were made
/// and kept sealed since (a pool entry's).
pub fn sign_share_checked_before(
    share: &FrostShare,
    signing: &Signing<'_>,
    nonces: Nonces,
) -> Result<Vec<u8>, EngineError> {
    with_suite!(share.scheme(), C => sign_share_as::<C>(share, signing, nonces, true))
}

/// [`sign_share`] over an already decoded signing package: the share
/// and the group commitment it was made for ([`round2::share`]).
fn sign_with<C: Suite>(
    share: &FrostShare,
    package: &SigningPackage<C>,
    by_id: &Positions<C>,
    nonces: Nonces,
) -> Result<round2::Computed<C>, EngineError> {
    let (hiding, binding) = decode_nonces::<C>(nonces.expose())
        .ok_or_else(|| EngineError::InvalidInput("stored nonces are unusable".into()))?;
    round2::share(share, package, by_id, &hiding, &binding)
}

/// Checks signer `position`'s signature share over `signing` under its
/// verifying share; a wrong one is blamed on that signer.
pub fn verify_share(
    share: &FrostShare,
    signing: &Signing<'_>,
    position: u16,
    signature_share: &[u8],
) -> Result<(), EngineError> {
    with_suite!(share.scheme(), C => verify_share_as::<C>(share, signing, position, signature_share))
}

fn verify_share_as<C: Suite>(
    share: &FrostShare,
    signing: &Signing<'_>,
    position: u16,
    bytes: &[u8],
) -> Result<(), EngineError> {
    let (package, _) = signing.package::<C>(share)?;
    let pkp = share.public_package::<C>()?;
    let (id, s) = decode_share::<C>(signing.signers, position, bytes)?;
    let vs = pkp.verifying_shares().get(&id).ok_or_else(|| {
        EngineError::InvalidInput(format!("no verifying share for signer at {position}"))
    })?;
    frost_core::verify_signature_share(id, vs, &s, &package, pkp.verifying_key()).map_err(|_| {
        EngineError::Misbehaved {
            culprit: position,
            reason: "its signature share does not verify under its verifying share".into(),
        }
    })
}

/// Signer `position`'s identifier and signature share, decoded (a share
/// that does not decode, or not canonically, is blamed on that signer).
fn decode_share<C: Suite>(
    signers: &[u16],
    position: u16,
    bytes: &[u8],
) -> Result<(Identifier<C>, SignatureShare<C>), EngineError> {
    let &signer = signers
        .get(usize::from(position))
        .ok_or_else(|| EngineError::InvalidInput(format!("no signer at position {position}")))?;
    let id = identifier::<C>(signer)?;
    let s = decode_canonical(bytes, SignatureShare::<C>::deserialize, |s| {
        Ok::<_, frost_core::Error<C>>(s.serialize())
    })
    .ok_or_else(|| EngineError::Misbehaved {
        culprit: position,
        reason: "its signature share does not decode".into(),
    })?;
    Ok((id, s))
}

/// Combines every signer's share (in `signers` order) into the 64-byte
/// signature, checked under the key. The crate's aggregation verifies the
/// signature and, only if it fails, every share under its signer's
/// verifying share, naming the first wrong one: a signature that verifies
/// proves each share right (with every other share right, a share is the
/// signature's `z` less theirs), so the common case costs one
/// verification instead of one per share.
pub fn aggregate(
    share: &FrostShare,
    signing: &Signing<'_>,
    shares: &[Vec<u8>],
) -> Result<[u8; 64], EngineError> {
    with_suite!(share.scheme(), C => {
        let (package, by_id) = signing.package::<C>(share)?;
        aggregate_with::<C>(share, signing.signers, &package, &by_id, shares)
    })
}

fn aggregate_with<C: Suite>(
    share: &FrostShare,
    signers: &[u16],
    package: &SigningPackage<C>,
    by_id: &Positions<C>,
    shares: &[Vec<u8>],
) -> Result<[u8; 64], EngineError> {
    if shares.len() != signers.len() {
        return Err(EngineError::InvalidInput(format!(
            "{} signature shares for {} signers",
            shares.len(),
            signers.len()
        )));
    }
    let pkp = share.public_package::<C>()?;
    let mut all = BTreeMap::new();
    for (pos, s) in shares.iter().enumerate() {
        let pos = u16::try_from(pos).unwrap_or(u16::MAX);
        let (id, s) = decode_share::<C>(signers, pos, s)?;
        all.insert(id, s);
    }
    let sig = frost_core::aggregate(package, &all, pkp).map_err(|e| {
        match (&e, e.culprits().first().and_then(|id| by_id.get(id))) {
            (frost_core::Error::InvalidSignatureShare { .. }, Some(&culprit)) => {
                EngineError::Misbehaved {
                    culprit,
                    reason: "its signature share does not verify under its verifying share".into(),
                }
            }
            _ => engine_error(e, by_id, "aggregate"),
        }
    })?;
    let bytes = sig
        .serialize()
        .map_err(|e| EngineError::Protocol(e.to_string()))?;
    bytes
        .try_into()
        .map_err(|_| EngineError::Protocol("a signature that is not 64 bytes".into()))
}

/// A signer's own share over a decoded signing package, made before the
/// other signers' shares arrive ([`sign_own`]); [`OwnShare::aggregate`]
/// adds theirs. Public data only: the nonces are spent.
pub struct OwnShare(OwnInner);

enum OwnInner {
    Ed25519(Box<Own<super::Ed>>),
    Taproot(Box<Own<super::Tr>>),
}

struct Own<C: Ciphersuite> {
    signers: Vec<u16>,
    me: usize,
    package: SigningPackage<C>,
    by_id: Positions<C>,
    /// Our share and the group commitment it was made for.
    mine: round2::Computed<C>,
}

impl std::fmt::Debug for OwnShare {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("OwnShare")
    }
}

/// A suite whose [`Own`] an [`OwnShare`] holds.
trait OwnSuite: Suite {
    fn wrap_own(o: Own<Self>) -> OwnShare;
}

impl OwnSuite for super::Ed {
    fn wrap_own(o: Own<Self>) -> OwnShare {
        OwnShare(OwnInner::Ed25519(Box::new(o)))
    }
}

impl OwnSuite for super::Tr {
    fn wrap_own(o: Own<Self>) -> OwnShare {
        OwnShare(OwnInner::Taproot(Box::new(o)))
    }
}

/// With pooled nonces, as the signer that collects the shares: this
/// signer's share with `nonces` over `signing`, the commitments decoded
/// and the group commitment computed once for this share and the
/// aggregate ([`OwnShare::aggregate`]), so that the share can be made
/// while the other signers' shares are on their way. The commitments are
/// a pool entry's, checked when they were made and kept sealed since.
pub fn sign_own(
    share: &FrostShare,
    signing: &Signing<'_>,
    nonces: Nonces,
) -> Result<OwnShare, EngineError> {
    fn as_suite<C: OwnSuite>(
        share: &FrostShare,
        signing: &Signing<'_>,
        nonces: Nonces,
    ) -> Result<OwnShare, EngineError> {
        let me = signing.position(share)?;
        let (package, by_id) = signing.package_checked_before::<C>(share)?;
        let mine = sign_with::<C>(share, &package, &by_id, nonces)?;
        Ok(C::wrap_own(Own {
            signers: signing.signers.to_vec(),
            me,
            package,
            by_id,
            mine,
        }))
    }
    with_suite!(share.scheme(), C => as_suite::<C>(share, signing, nonces))
}

impl OwnShare {
    /// The signature: this share and the other signers' `theirs` (in
    /// signer order, without ours), checked under `share`'s key by a
    /// verifier outside the FROST crates (a wrong share names its signer).
    /// The sum is made with the group commitment our share was computed
    /// for; only if it does not verify does the crate's aggregation run,
    /// to find the wrong share.
    pub fn aggregate(self, share: &FrostShare, theirs: &[&[u8]]) -> Result<[u8; 64], EngineError> {
        fn as_suite<C: Suite>(
            o: &Own<C>,
            share: &FrostShare,
            theirs: &[&[u8]],
        ) -> Result<[u8; 64], EngineError> {
            if theirs.len() + 1 != o.signers.len() {
                return Err(EngineError::InvalidInput(format!(
                    "{} other signature shares for {} signers",
                    theirs.len(),
                    o.signers.len()
                )));
            }
            let mine = <<C::Group as Group>::Field as Field>::serialize(&o.mine.z)
                .as_ref()
                .to_vec();
            let mut others = theirs.iter();
            let shares: Vec<Vec<u8>> = (0..o.signers.len())
                .map(|pos| {
                    if pos == o.me {
                        Ok(mine.clone())
                    } else {
                        others.next().map(|s| s.to_vec()).ok_or_else(|| {
                            EngineError::InvalidInput("fewer signature shares than signers".into())
                        })
                    }
                })
                .collect::<Result<_, _>>()?;
            let mut zs = Vec::with_capacity(shares.len());
            for (pos, s) in shares.iter().enumerate() {
                let pos = u16::try_from(pos).unwrap_or(u16::MAX);
                let (_, s) = decode_share::<C>(&o.signers, pos, s)?;
                zs.push(round2::scalar::<C>(&s.serialize())?);
            }
            let (public_key, message) = (share.public_key(), o.package.message());
            if let Some(sig) =
                round2::signature::<C>(o.mine.group_commitment, &zs, &public_key, message)?
            {
                return Ok(sig);
            }
            // A wrong share: the crate's aggregation names it. Should it
            // accept the shares, its signature is returned only if it
            // verifies here too.
            let sig = aggregate_with::<C>(share, &o.signers, &o.package, &o.by_id, &shares)?;
            if C::verifies(&public_key, message, &sig) {
                Ok(sig)
            } else {
                Err(EngineError::Protocol(
                    "the aggregate signature does not verify".into(),
                ))
            }
        }
        match (&self.0, share.scheme()) {
            (OwnInner::Ed25519(o), super::Scheme::Ed25519) => as_suite(o, share, theirs),
            (OwnInner::Taproot(o), super::Scheme::Taproot) => as_suite(o, share, theirs),
            _ => Err(EngineError::InvalidInput(
                "a signature share of another key's scheme".into(),
            )),
        }
    }
}

/// One signer's last step with pooled nonces, as the party that collects
/// the shares: [`sign_own`], then [`OwnShare::aggregate`] with the other
/// signers' `theirs` (in `signers` order, without its own).
pub fn sign_and_aggregate(
    share: &FrostShare,
    signing: &Signing<'_>,
    nonces: Nonces,
    theirs: &[&[u8]],
) -> Result<[u8; 64], EngineError> {
    sign_own(share, signing, nonces)?.aggregate(share, theirs)
}

/// Both rounds as signer `i` (a position in `signers`) of `message`;
/// `before_release` runs right before this signer's share leaves (an error
/// withholds it). Every signer ends with the checked signature.
pub async fn run<M>(
    share: &FrostShare,
    i: u16,
    signers: &[u16],
    message: &[u8],
    before_release: Option<BeforeRelease>,
    party: M,
) -> Result<[u8; 64], EngineError>
where
    M: Mpc<ProtocolMessage = Msg>,
{
    let n = u16::try_from(signers.len())
        .map_err(|_| EngineError::InvalidInput("too many signers".into()))?;
    if signers.get(usize::from(i)) != Some(&share.index()) {
        return Err(EngineError::InvalidInput(format!(
            "signer {i} of {signers:?} is not party {}",
            share.index()
        )));
    }
    let MpcParty { delivery, .. } = party.into_party();
    let (incoming, mut outgoing) = delivery.split();
    let mut rounds = RoundsRouter::<Msg>::builder();
    let r1 = rounds.add_round(RoundInput::<CommitMsg>::broadcast(i, n));
    let r2 = rounds.add_round(RoundInput::<ShareMsg>::broadcast(i, n));
    let mut rounds = rounds.listen(incoming);
    let closed = |_| EngineError::Closed;

    let (nonces, mine) = commit(share)?;
    outgoing
        .send(Outgoing::broadcast(Msg::Commit(CommitMsg {
            commitments: mine.clone(),
        })))
        .await
        .map_err(closed)?;
    let theirs = rounds
        .complete(r1)
        .await
        .map_err(|e| EngineError::from_engine(&e))?;
    let commitments: Vec<Vec<u8>> = theirs
        .into_vec_including_me(CommitMsg { commitments: mine })
        .into_iter()
        .map(|c| c.commitments)
        .collect();
    let signing = Signing {
        signers,
        commitments: &commitments,
        message,
    };
    let own = sign_share(share, &signing, nonces)?;
    if let Some(hook) = before_release {
        hook().map_err(|e| EngineError::Protocol(format!("signature share withheld: {e}")))?;
    }
    outgoing
        .send(Outgoing::broadcast(Msg::Share(ShareMsg {
            share: own.clone(),
        })))
        .await
        .map_err(closed)?;
    let theirs = rounds
        .complete(r2)
        .await
        .map_err(|e| EngineError::from_engine(&e))?;
    let shares: Vec<Vec<u8>> = theirs
        .into_vec_including_me(ShareMsg { share: own })
        .into_iter()
        .map(|s| s.share)
        .collect();
    aggregate(share, &signing, &shares)
}
