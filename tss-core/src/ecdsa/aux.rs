//! Aux-info generation: each party contributes a Paillier key (from its
//! pre-generated safe primes) with ring-Pedersen parameters, and proves them.
//! Run once per party set; the result is reused for every key of that set.

use round_based::Mpc;

use super::{AuxInfo, EngineError, Level};
use crate::primes::Primes;

/// Aux-info protocol message.
pub type Msg = cggmp24::key_refresh::msg::Msg<sha2::Sha256, Level>;

/// Runs aux-info generation as party `i` of `n`.
pub async fn run<M>(
    eid: &[u8; 32],
    i: u16,
    n: u16,
    primes: Primes,
    party: M,
) -> Result<AuxInfo, EngineError>
where
    M: Mpc<ProtocolMessage = Msg>,
{
    cggmp24::aux_info_gen(cggmp24::ExecutionId::new(eid), i, n, primes)
        .start(&mut rand_core::OsRng, party)
        .await
        .map_err(|e| EngineError::from_engine(&e))
}
