//! Presignatures: the three interactive rounds of signing, run ahead of time
//! by a signer pair, so that a later signature needs one local step per
//! signer and one message.
//!
//! Rules this module serves (the node enforces them around it):
//! - a presignature is used at most once: [`StoredPresignature::issue`]
//!   consumes it, and the store removes it before that is called (durably
//!   before the partial signature leaves the node);
//! - only for data the node hashed itself: [`StoredPresignature::issue`]
//!   takes [`cggmp24::DataToSign`], which only exists for a known preimage;
//!   raw digests go through the full protocol.

use cggmp24::signing::Presignature;
use generic_ec::coords::AlwaysHasAffineX;
use generic_ec::{NonZero, Point, Scalar};
use round_based::Mpc;

use super::sign::Msg;
use super::{Curve, EngineError, KeyShare, Signature};
use crate::secret::SecretBytes;

/// Format version of stored presignatures.
pub const PRESIGNATURE_FORMAT_VERSION: u8 = 1;

/// One signer's presignature with the public data both signers share.
/// Secret: never log it, seal it at rest, never export it.
pub struct StoredPresignature {
    /// Keygen indices of the signers, ascending.
    pub signers: Vec<u16>,
    /// This signer's position in `signers`.
    pub me: u16,
    presig: Presignature<Curve>,
    gamma: NonZero<Point<Curve>>,
    /// (Δ̃_j, S̃_j) of each signer, in `signers` order.
    commitments: Vec<(Point<Curve>, Point<Curve>)>,
}

impl std::fmt::Debug for StoredPresignature {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoredPresignature")
            .field("signers", &self.signers)
            .field("me", &self.me)
            .finish_non_exhaustive()
    }
}

#[derive(serde::Serialize, serde::Deserialize)]
struct Encoded {
    v: u8,
    signers: Vec<u16>,
    me: u16,
    presig: Presignature<Curve>,
    gamma: NonZero<Point<Curve>>,
    commitments: Vec<(Point<Curve>, Point<Curve>)>,
}

/// Why a partial signature could not be combined.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CombineError {
    /// A signer's partial signature does not match its presignature
    /// commitment: that signer cheated or its presignature is not ours.
    #[error("the partial signature of signer #{culprit} (keygen index) is invalid")]
    InvalidPartial {
        /// Keygen index of the signer whose partial was wrong.
        culprit: u16,
    },
    /// The bytes are not a scalar.
    #[error("partial signature of signer #{culprit} is not 32 bytes of a scalar")]
    Malformed {
        /// Keygen index of the sender.
        culprit: u16,
    },
    /// The combined signature is degenerate (zero s): retry with another
    /// presignature.
    #[error("combined signature is degenerate")]
    Degenerate,
}

impl StoredPresignature {
    /// Serializes for the sealed store (secret: seal it).
    pub fn encode(&self) -> SecretBytes {
        let enc = Encoded {
            v: PRESIGNATURE_FORMAT_VERSION,
            signers: self.signers.clone(),
            me: self.me,
            presig: self.presig.clone(),
            gamma: self.gamma,
            commitments: self.commitments.clone(),
        };
        let mut out = Vec::new();
        // Serializing into a Vec cannot fail for these types.
        ciborium::into_writer(&enc, &mut out).expect("CBOR into Vec");
        SecretBytes::new(out)
    }

    /// Deserializes a stored presignature and checks its shape.
    pub fn decode(b: &[u8]) -> Result<Self, EngineError> {
        let e: Encoded = super::decode_cbor(b).map_err(|e| {
            EngineError::InvalidInput(format!("stored presignature does not decode: {e}"))
        })?;
        if e.v != PRESIGNATURE_FORMAT_VERSION {
            return Err(EngineError::InvalidInput(format!(
                "stored presignature has unknown format version {}",
                e.v
            )));
        }
        if e.signers.len() != e.commitments.len() || usize::from(e.me) >= e.signers.len() {
            return Err(EngineError::InvalidInput(
                "stored presignature is inconsistent".into(),
            ));
        }
        Ok(Self {
            signers: e.signers,
            me: e.me,
            presig: e.presig,
            gamma: e.gamma,
            commitments: e.commitments,
        })
    }

    /// Issues this signer's partial signature. Call only after the
    /// presignature was removed from the store, at most once, and release
    /// the result only once the removal is durable.
    pub fn issue(&self, data: cggmp24::DataToSign<Curve>) -> [u8; 32] {
        let p = self.presig.clone().issue_partial_signature(data);
        let mut out = [0u8; 32];
        out.copy_from_slice(&p.sigma.to_be_bytes());
        out
    }

    /// Combines the partial signatures of all signers (in `signers` order)
    /// into a signature. Each partial from another signer is checked first
    /// against that signer's commitment (σ_j·Γ = m·Δ̃_j + r·S̃_j), so that a
    /// wrong partial names its signer; ours (position `me`) is our own
    /// computation.
    pub fn combine(
        &self,
        partials: &[[u8; 32]],
        data: cggmp24::DataToSign<Curve>,
    ) -> Result<Signature, CombineError> {
        if partials.len() != self.signers.len() {
            return Err(CombineError::Degenerate);
        }
        let r = NonZero::from_scalar(self.gamma.x().to_scalar()).ok_or(CombineError::Degenerate)?;
        let m = data.to_scalar();
        let mut sum = Scalar::<Curve>::zero();
        for (j, ((bytes, (delta, s)), &signer)) in partials
            .iter()
            .zip(&self.commitments)
            .zip(&self.signers)
            .enumerate()
        {
            let sigma = Scalar::<Curve>::from_be_bytes(bytes)
                .map_err(|_| CombineError::Malformed { culprit: signer })?;
            if j != usize::from(self.me) && self.gamma * sigma != m * delta + *r * s {
                return Err(CombineError::InvalidPartial { culprit: signer });
            }
            sum += sigma;
        }
        let s = NonZero::from_scalar(sum).ok_or(CombineError::Degenerate)?;
        Ok(Signature::from_raw_parts(r, s).normalize_s())
    }

    /// The public data cggmp24 uses to check partial signatures (tests).
    #[cfg(test)]
    pub(crate) fn public_data(&self) -> cggmp24::signing::PresignaturePublicData<Curve> {
        use cggmp24::signing::PresignatureCommitment;
        cggmp24::signing::PresignaturePublicData {
            Gamma: self.gamma,
            commitments: self
                .commitments
                .iter()
                .map(|(d, s)| PresignatureCommitment {
                    tilde_Delta: *d,
                    tilde_S: *s,
                })
                .collect(),
        }
    }
}

/// Runs presigning as signer `i` (0-based among the signers);
/// `parties_at_keygen[j]` is the keygen index of signer `j`.
pub async fn run<M>(
    eid: &[u8; 32],
    i: u16,
    parties_at_keygen: &[u16],
    share: &KeyShare,
    party: M,
) -> Result<StoredPresignature, EngineError>
where
    M: Mpc<ProtocolMessage = Msg>,
{
    super::sign::check_signers(parties_at_keygen, share)?;
    let mut check = super::round1::Round1Check::new(eid, i, parties_at_keygen, share)?;
    let party = super::guarded(party, move |m| check.inspect(m));
    let (presig, public) =
        cggmp24::signing(cggmp24::ExecutionId::new(eid), i, parties_at_keygen, share)
            .generate_presignature(&mut rand_core::OsRng, party)
            .await
            .map_err(|e| EngineError::from_engine(&e))?;
    Ok(StoredPresignature {
        signers: parties_at_keygen.to_vec(),
        me: i,
        gamma: public.Gamma,
        commitments: public
            .commitments
            .iter()
            .map(|c| (c.tilde_Delta, c.tilde_S))
            .collect(),
        presig,
    })
}
