//! Threshold DKG: t-of-n, each party ends with a share of a key that no
//! party ever holds. Completed with the party set's aux info.

use round_based::Mpc;

use super::{AuxInfo, Curve, EngineError, IncompleteKeyShare, KeyShare, Level};

/// Keygen protocol message.
pub type Msg = cggmp24::keygen::ThresholdMsg<Curve, Level, sha2::Sha256>;

/// Runs threshold keygen as party `i` of `n` with threshold `t`.
pub async fn run<M>(
    eid: &[u8; 32],
    i: u16,
    n: u16,
    t: u16,
    party: M,
) -> Result<IncompleteKeyShare, EngineError>
where
    M: Mpc<ProtocolMessage = Msg>,
{
    cggmp24::keygen::<Curve>(cggmp24::ExecutionId::new(eid), i, n)
        .set_threshold(t)
        .set_security_level::<Level>()
        .start(&mut rand_core::OsRng, party)
        .await
        .map_err(|e| EngineError::from_engine(&e))
}

/// Joins a DKG output with the party set's aux info into a signing share.
pub fn complete(share: IncompleteKeyShare, aux: AuxInfo) -> Result<KeyShare, EngineError> {
    KeyShare::from_parts((share, aux))
        .map_err(|e| EngineError::InvalidInput(format!("key share and aux info do not fit: {e}")))
}
