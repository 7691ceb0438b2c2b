//! FROST distributed key generation (RFC 9591 appendix C, the Pedersen DKG
//! with proofs of knowledge), t-of-n, in three rounds:
//!
//! 1. [`Commit`] (broadcast): the party's Feldman commitments to its
//!    polynomial of degree t-1 and a proof of knowledge of its constant term;
//! 2. [`Echo`] (broadcast): a hash of every party's round-1 bytes as this
//!    party received them, so that a party that sent different commitments
//!    to different parties is caught before any secret leaves;
//! 3. [`Share`] (point to point, secret): f_i(j) for each other party j,
//!    checked against i's commitments.
//!
//! Every party ends with the same public key package; the group key is the
//! sum of the constant-term commitments. For Taproot keys the crate tweaks
//! the result per BIP86 (no script tree); the untweaked key is kept as the
//! internal key. The broadcasts are the public transcript an auditor checks
//! (`keygen::verify`); the shares never are.

use std::collections::BTreeMap;

use frost_core::keys::dkg::{self, round1, round2};
use frost_core::keys::PublicKeyPackage;
use futures::SinkExt;
use round_based::rounds_router::simple_store::RoundInput;
use round_based::rounds_router::RoundsRouter;
use round_based::{Delivery, Mpc, MpcParty, Outgoing, ProtocolMessage};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::{
    decode_canonical, engine_error, identifier, identifiers, with_suite, FrostShare, Scheme,
};
use crate::ecdsa::EngineError;

/// A FROST keygen message.
#[derive(Clone, Debug, Serialize, Deserialize, ProtocolMessage)]
pub enum Msg {
    /// Round 1.
    Commit(Commit),
    /// Round 2.
    Echo(Echo),
    /// Round 3.
    Share(Share),
}

/// Round 1 (broadcast): the crate's `round1::Package` encoding (commitments
/// and proof of knowledge).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Commit {
    /// The package bytes.
    #[serde(with = "serde_bytes")]
    pub package: Vec<u8>,
}

/// Round 2 (broadcast): [`echo_digest`] of round 1 as this party saw it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Echo {
    /// The digest.
    pub digest: [u8; 32],
}

/// Round 3 (point to point): the crate's `round2::Package` encoding, the
/// sender's polynomial at the recipient. Secret: never recorded in full,
/// never printed, zeroized on drop.
#[derive(Clone, Serialize, Deserialize)]
pub struct Share {
    /// The package bytes.
    #[serde(with = "serde_bytes")]
    pub package: Vec<u8>,
}

impl std::fmt::Debug for Share {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Share(<secret>)")
    }
}

impl Drop for Share {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.package);
    }
}

/// The digest every party echoes in round 2: the session, the scheme and
/// each party's round-1 package, in index order, length-prefixed.
pub fn echo_digest(eid: &[u8; 32], scheme: Scheme, packages: &[&[u8]]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(b"tss/frost-keygen-echo/v1");
    h.update(eid);
    h.update(scheme.name().as_bytes());
    for p in packages {
        h.update((p.len() as u64).to_be_bytes());
        h.update(p);
    }
    h.finalize().into()
}

/// Runs the DKG as party `i` of `n` with threshold `t`.
pub async fn run<M>(
    eid: &[u8; 32],
    scheme: Scheme,
    i: u16,
    n: u16,
    t: u16,
    party: M,
) -> Result<FrostShare, EngineError>
where
    M: Mpc<ProtocolMessage = Msg>,
{
    with_suite!(scheme, C => run_as::<C, M>(eid, scheme, i, n, t, party).await)
}

async fn run_as<C: super::share::Suite, M>(
    eid: &[u8; 32],
    scheme: Scheme,
    i: u16,
    n: u16,
    t: u16,
    party: M,
) -> Result<FrostShare, EngineError>
where
    M: Mpc<ProtocolMessage = Msg>,
{
    if t < 2 || t > n || i >= n {
        return Err(EngineError::InvalidInput(format!(
            "party {i} of a {t}-of-{n} key"
        )));
    }
    let all: Vec<u16> = (0..n).collect();
    let by_id = identifiers::<C>(&all)?;
    let me = identifier::<C>(i)?;
    let MpcParty { delivery, .. } = party.into_party();
    let (incoming, mut outgoing) = delivery.split();
    let mut rounds = RoundsRouter::<Msg>::builder();
    let r1 = rounds.add_round(RoundInput::<Commit>::broadcast(i, n));
    let r2 = rounds.add_round(RoundInput::<Echo>::broadcast(i, n));
    let r3 = rounds.add_round(RoundInput::<Share>::p2p(i, n));
    let mut rounds = rounds.listen(incoming);
    let closed = |_| EngineError::Closed;
    let blame = |culprit: u16, reason: String| EngineError::Misbehaved { culprit, reason };

    // Round 1: commitments and proof of knowledge.
    let (secret1, package1) = dkg::part1::<C, _>(me, n, t, rand_core::OsRng)
        .map_err(|e| engine_error(e, &by_id, "DKG part 1"))?;
    let mine = package1
        .serialize()
        .map_err(|e| EngineError::Protocol(e.to_string()))?;
    outgoing
        .send(Outgoing::broadcast(Msg::Commit(Commit {
            package: mine.clone(),
        })))
        .await
        .map_err(closed)?;
    let commits = rounds.complete(r1).await.map_err(round_error)?;
    let mut raw: BTreeMap<u16, Vec<u8>> = BTreeMap::from([(i, mine)]);
    let mut packages: BTreeMap<frost_core::Identifier<C>, round1::Package<C>> = BTreeMap::new();
    for (j, _, m) in commits.into_iter_indexed() {
        let p = decode_canonical(
            &m.package,
            round1::Package::<C>::deserialize,
            round1::Package::<C>::serialize,
        )
        .ok_or_else(|| blame(j, "its round-1 package does not decode".into()))?;
        let degree = p.commitment().serialize().map(|c| c.len()).unwrap_or(0);
        if degree != usize::from(t) {
            return Err(blame(
                j,
                format!(
                    "it committed to {degree} coefficients, not {t} (a polynomial of degree {})",
                    t - 1
                ),
            ));
        }
        packages.insert(identifier::<C>(j)?, p);
        raw.insert(j, m.package.clone());
    }

    // Round 2: everyone saw the same round 1.
    let seen: Vec<&[u8]> = raw.values().map(Vec::as_slice).collect();
    let digest = echo_digest(eid, scheme, &seen);
    outgoing
        .send(Outgoing::broadcast(Msg::Echo(Echo { digest })))
        .await
        .map_err(closed)?;
    let echoes = rounds.complete(r2).await.map_err(round_error)?;
    for (j, _, e) in echoes.into_iter_indexed() {
        if e.digest != digest {
            return Err(blame(
                j,
                "its view of round 1 differs from ours: a party sent different commitments to different parties".into(),
            ));
        }
    }

    // Round 3: shares, point to point. `part2` checks every proof of
    // knowledge first and names the party whose proof fails.
    let (secret2, out) =
        dkg::part2::<C>(secret1, &packages).map_err(|e| engine_error(e, &by_id, "DKG part 2"))?;
    for (to, package) in out {
        let j = *by_id
            .get(&to)
            .ok_or_else(|| EngineError::Protocol("a share for an unknown party".into()))?;
        let bytes = package
            .serialize()
            .map_err(|e| EngineError::Protocol(e.to_string()))?;
        outgoing
            .send(Outgoing::p2p(j, Msg::Share(Share { package: bytes })))
            .await
            .map_err(closed)?;
    }
    let shares = rounds.complete(r3).await.map_err(round_error)?;
    let mut received: BTreeMap<frost_core::Identifier<C>, round2::Package<C>> = BTreeMap::new();
    for (j, _, m) in shares.into_iter_indexed() {
        let p = decode_canonical(
            &m.package,
            round2::Package::<C>::deserialize,
            round2::Package::<C>::serialize,
        )
        .ok_or_else(|| blame(j, "its round-3 share does not decode".into()))?;
        received.insert(identifier::<C>(j)?, p);
    }
    let (key_package, public_package) = dkg::part3::<C>(&secret2, &packages, &received)
        .map_err(|e| engine_error(e, &by_id, "DKG part 3"))?;

    // The untweaked group key (Taproot's internal key): the sum of the
    // constant terms, as an auditor computes it.
    let internal_key = match scheme {
        Scheme::Ed25519 => Vec::new(),
        Scheme::Taproot => {
            let mut all_packages = packages.clone();
            all_packages.insert(me, package1);
            let commitments: BTreeMap<_, _> = all_packages
                .iter()
                .map(|(id, p)| (*id, p.commitment()))
                .collect();
            PublicKeyPackage::<C>::from_dkg_commitments(&commitments)
                .and_then(|p| p.verifying_key().serialize())
                .map_err(|e| EngineError::Protocol(format!("internal key: {e}")))?
        }
    };
    FrostShare::from_parts(scheme, i, &key_package, &public_package, internal_key)
}

/// A round that did not complete: the delivery layer's refusal names the
/// culprit; anything else is the transport.
fn round_error<E1, E2>(e: round_based::rounds_router::CompleteRoundError<E1, E2>) -> EngineError
where
    E1: std::error::Error + 'static,
    E2: std::error::Error + 'static,
{
    EngineError::from_engine(&e)
}
