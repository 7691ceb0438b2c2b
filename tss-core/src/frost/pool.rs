//! Nonce pools: FROST's first signing round, run by a signer pair ahead of
//! time and in batches, so that a request then takes one round.
//!
//! [`precommit`] is one broadcast round in which every signer of the pair
//! sends the commitments of `count` fresh nonce pairs; each signer ends with
//! `count` [`PoolEntry`]s: its own secret nonces and every signer's
//! commitments, under ids both derive from the session id ([`entry_id`]).
//! A signer seals its entries; to sign, it deletes an entry and only then
//! computes its signature share with it ([`PoolEntry::sign_share`]
//! consumes the entry), releasing the share only once the deletion is
//! durable, so a nonce signs at most one message, ever, also across
//! crashes. Each signer keeps its own copy of every commitment: a
//! co-signer signs over the commitments it stored, never over ones a
//! coordinator sends with a request.

use futures::SinkExt;
use round_based::rounds_router::simple_store::RoundInput;
use round_based::rounds_router::RoundsRouter;
use round_based::{Delivery, Mpc, MpcParty, Outgoing, ProtocolMessage};
use serde::{Deserialize, Serialize};
use sha2::Digest;
use zeroize::Zeroizing;

use super::sign::{self, Nonces, OwnShare, Signing};
use super::{FrostShare, Scheme};
use crate::ecdsa::EngineError;
use crate::secret::SecretBytes;

/// Most nonce pairs one [`precommit`] session makes (bounds its messages).
pub const MAX_BATCH: u16 = 128;

/// Format version of stored pool entries.
pub const POOL_ENTRY_VERSION: u8 = 1;

/// A nonce-pool message.
#[derive(Clone, Debug, Serialize, Deserialize, ProtocolMessage)]
pub enum Msg {
    /// The only round (broadcast): the sender's commitments, one per entry.
    Batch(BatchMsg),
}

/// The commitments of a batch, in entry order (the crate's
/// `SigningCommitments` encodings).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct BatchMsg {
    /// One commitment per entry.
    pub commitments: Vec<serde_bytes::ByteBuf>,
}

/// Id of entry `j` of the pool session `eid` (both signers derive it).
pub fn entry_id(eid: &[u8; 32], j: u16) -> [u8; 32] {
    sha2::Sha256::new()
        .chain_update(b"tss/frost-nonce/v1")
        .chain_update(eid)
        .chain_update(j.to_be_bytes())
        .finalize()
        .into()
}

/// One pooled nonce of a signer pair, as one signer holds it: its secret
/// nonces and every signer's commitments. Secret: sealed at rest, never
/// printed; consumed by [`PoolEntry::sign_share`].
pub struct PoolEntry {
    scheme: Scheme,
    signers: Vec<u16>,
    commitments: Vec<Vec<u8>>,
    nonces: Nonces,
}

impl std::fmt::Debug for PoolEntry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PoolEntry")
            .field("scheme", &self.scheme)
            .field("signers", &self.signers)
            .finish_non_exhaustive()
    }
}

#[derive(Serialize, Deserialize)]
struct Stored {
    v: u8,
    scheme: Scheme,
    signers: Vec<u16>,
    commitments: Vec<serde_bytes::ByteBuf>,
    #[serde(with = "serde_bytes")]
    nonces: Vec<u8>,
}

impl Drop for Stored {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.nonces);
    }
}

impl PoolEntry {
    /// The signer pair (keygen indices, increasing).
    pub fn signers(&self) -> &[u16] {
        &self.signers
    }

    /// Every signer's commitments, in `signers` order.
    pub fn commitments(&self) -> &[Vec<u8>] {
        &self.commitments
    }

    /// Serializes the entry (secret: seal it).
    pub fn encode(&self) -> SecretBytes {
        let stored = Stored {
            v: POOL_ENTRY_VERSION,
            scheme: self.scheme,
            signers: self.signers.clone(),
            commitments: self
                .commitments
                .iter()
                .map(|c| serde_bytes::ByteBuf::from(c.clone()))
                .collect(),
            nonces: self.nonces.expose().to_vec(),
        };
        let mut out = Zeroizing::new(Vec::with_capacity(512));
        // Serializing into a Vec cannot fail for this type.
        ciborium::into_writer(&stored, &mut *out).expect("CBOR into Vec");
        SecretBytes::from(out)
    }

    /// Deserializes a stored entry (its nonces are checked against its
    /// commitments when it signs).
    pub fn decode(b: &[u8]) -> Result<Self, EngineError> {
        let bad = |what: String| EngineError::InvalidInput(format!("stored pool entry: {what}"));
        let mut s: Stored =
            ciborium::from_reader(b).map_err(|e| bad(format!("does not decode: {e}")))?;
        if s.v != POOL_ENTRY_VERSION {
            return Err(bad(format!("unknown format version {}", s.v)));
        }
        if s.commitments.len() != s.signers.len() || s.signers.windows(2).any(|w| w[0] >= w[1]) {
            return Err(bad("signers and commitments disagree".into()));
        }
        let nonces = Zeroizing::new(std::mem::take(&mut s.nonces));
        Ok(PoolEntry {
            scheme: s.scheme,
            signers: s.signers.clone(),
            commitments: s.commitments.iter().map(|c| c.to_vec()).collect(),
            nonces: Nonces::from_stored(SecretBytes::from(nonces)),
        })
    }

    /// What the signers sign over with this entry.
    pub fn signing<'a>(&'a self, message: &'a [u8]) -> Signing<'a> {
        Signing {
            signers: &self.signers,
            commitments: &self.commitments,
            message,
        }
    }

    /// This signer's signature share over `message` (consumes the entry:
    /// the caller has deleted it from its store first). Refused if the
    /// entry is another key's scheme or another party's.
    pub fn sign_share(self, share: &FrostShare, message: &[u8]) -> Result<Vec<u8>, EngineError> {
        if self.scheme != share.scheme() || !self.signers.contains(&share.index()) {
            return Err(EngineError::InvalidInput(
                "the pool entry belongs to another key or party".into(),
            ));
        }
        let PoolEntry {
            signers,
            commitments,
            nonces,
            ..
        } = self;
        let signing = Signing {
            signers: &signers,
            commitments: &commitments,
            message,
        };
        // Checked when the batch was made ([`precommit`]), sealed since.
        sign::sign_share_checked_before(share, &signing, nonces)
    }

    /// This signer's share over `message` with the entry (consumed: the
    /// caller has deleted it from its store first), as the signer that
    /// collects the shares: made before the other shares arrive, it then
    /// aggregates them ([`sign::OwnShare::aggregate`], each checked, a wrong
    /// one naming its signer).
    pub fn sign_own(self, share: &FrostShare, message: &[u8]) -> Result<OwnShare, EngineError> {
        if self.scheme != share.scheme() || !self.signers.contains(&share.index()) {
            return Err(EngineError::InvalidInput(
                "the pool entry belongs to another key or party".into(),
            ));
        }
        let PoolEntry {
            signers,
            commitments,
            nonces,
            ..
        } = self;
        let signing = Signing {
            signers: &signers,
            commitments: &commitments,
            message,
        };
        sign::sign_own(share, &signing, nonces)
    }

    /// [`PoolEntry::sign_own`], then the aggregate with the other signers'
    /// shares `theirs` (in `signers` order, without ours).
    pub fn sign_and_aggregate(
        self,
        share: &FrostShare,
        message: &[u8],
        theirs: &[&[u8]],
    ) -> Result<[u8; 64], EngineError> {
        self.sign_own(share, message)?.aggregate(share, theirs)
    }
}

/// The pool round as signer `i` (a position in `signers`): `count` fresh
/// nonce pairs, everyone's commitments exchanged; returns this signer's
/// entries in order (entry `j` has id [`entry_id`]`(eid, j)`). A signer
/// whose batch has the wrong length or a commitment that does not decode
/// is named.
pub async fn precommit<M>(
    share: &FrostShare,
    i: u16,
    signers: &[u16],
    count: u16,
    party: M,
) -> Result<Vec<PoolEntry>, EngineError>
where
    M: Mpc<ProtocolMessage = Msg>,
{
    precommit_sending(share, i, signers, count, party, |_| {}).await
}

/// [`precommit`], with `edit` applied to this signer's batch as it is sent
/// (its own entries keep the true commitments). For fault tests only: a
/// daemon's test hook plays a peer that sends bad commitments or a short
/// batch; [`precommit`] sends the batch unchanged.
pub async fn precommit_sending<M>(
    share: &FrostShare,
    i: u16,
    signers: &[u16],
    count: u16,
    party: M,
    edit: impl FnOnce(&mut BatchMsg),
) -> Result<Vec<PoolEntry>, EngineError>
where
    M: Mpc<ProtocolMessage = Msg>,
{
    let n = u16::try_from(signers.len())
        .map_err(|_| EngineError::InvalidInput("too many signers".into()))?;
    if signers.get(usize::from(i)) != Some(&share.index())
        || n != share.threshold()
        || signers.windows(2).any(|w| w[0] >= w[1])
    {
        return Err(EngineError::InvalidInput(format!(
            "signer {i} of {signers:?} is not party {} of a {}-of-{} key",
            share.index(),
            share.threshold(),
            share.parties()
        )));
    }
    if count == 0 || count > MAX_BATCH {
        return Err(EngineError::InvalidInput(format!(
            "a batch of {count} nonces (1 to {MAX_BATCH})"
        )));
    }
    let MpcParty { delivery, .. } = party.into_party();
    let (incoming, mut outgoing) = delivery.split();
    let mut rounds = RoundsRouter::<Msg>::builder();
    let r1 = rounds.add_round(RoundInput::<BatchMsg>::broadcast(i, n));
    let mut rounds = rounds.listen(incoming);

    let mut mine = Vec::with_capacity(usize::from(count));
    let mut nonces = Vec::with_capacity(usize::from(count));
    for _ in 0..count {
        let (secret, public) = sign::commit(share)?;
        nonces.push(secret);
        mine.push(serde_bytes::ByteBuf::from(public));
    }
    let mut sent = BatchMsg {
        commitments: mine.clone(),
    };
    edit(&mut sent);
    outgoing
        .send(Outgoing::broadcast(Msg::Batch(sent)))
        .await
        .map_err(|_| EngineError::Closed)?;
    let theirs = rounds
        .complete(r1)
        .await
        .map_err(|e| EngineError::from_engine(&e))?;
    let batches = theirs.into_vec_including_me(BatchMsg { commitments: mine });
    for (from, b) in batches.iter().enumerate() {
        if b.commitments.len() != usize::from(count) {
            return Err(EngineError::Misbehaved {
                culprit: u16::try_from(from).unwrap_or(u16::MAX),
                reason: format!(
                    "it sent {} nonce commitments for a batch of {count}",
                    b.commitments.len()
                ),
            });
        }
    }
    let mut out = Vec::with_capacity(usize::from(count));
    for (j, secret) in nonces.into_iter().enumerate() {
        let commitments: Vec<Vec<u8>> = batches
            .iter()
            .map(|b| b.commitments.get(j).map(|c| c.to_vec()).unwrap_or_default())
            .collect();
        let entry = PoolEntry {
            scheme: share.scheme(),
            signers: signers.to_vec(),
            commitments,
            nonces: secret,
        };
        // Every peer's commitment must decode (one that does not is named
        // now, not when the entry is used); ours were made here.
        sign::check_commitments_of_others(share, i, &entry.signing(&[]))?;
        out.push(entry);
    }
    Ok(out)
}
