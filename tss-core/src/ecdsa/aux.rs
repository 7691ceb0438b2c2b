//! Aux-info generation: each party contributes a Paillier key (from its
//! pre-generated safe primes) with ring-Pedersen parameters, and proves them.
//! Run once per party set; the result is reused for every key of that set.
//!
//! The engine checks that each party's moduli N and N̂ are at least the
//! security level's size, not that they are at most: a party could send a
//! modulus as large as the payload limit (1 MiB, millions of bits), and the
//! others' proof checks modulo it would run for hours on a blocking thread
//! that no timeout can stop. [`check_sizes`] refuses moduli longer than an
//! honest party's (two primes of the level's size) and ring-Pedersen
//! parameters not reduced modulo N̂, before the engine sees them.

use cggmp24::security_level::SecurityLevel;
use round_based::{Incoming, Mpc};

use super::{AuxInfo, EngineError, Level};
use crate::primes::Primes;
use crate::session::DeliveryError;

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
    let party = super::guarded(party, check_sizes);
    cggmp24::aux_info_gen(cggmp24::ExecutionId::new(eid), i, n, primes)
        .start(&mut rand_core::OsRng, party)
        .await
        .map_err(|e| EngineError::from_engine(&e))
}

/// Longest modulus an honest party makes: the product of two primes of the
/// level's size.
pub const MAX_MODULUS_BITS: u64 = 2 * <Level as SecurityLevel>::RSA_PRIME_BITLEN as u64;

/// Refuses a round-2 message whose N or N̂ is longer than
/// [`MAX_MODULUS_BITS`], or whose s or t is not in 1..N̂ (see the module
/// docs). The engine checks the rest (lower bounds, proofs).
pub(crate) fn check_sizes(m: &Incoming<Msg>) -> Result<(), DeliveryError> {
    let cggmp24::key_refresh::msg::Msg::Round2(d) = &m.msg else {
        return Ok(());
    };
    let blame = |reason: String| DeliveryError::Misbehaved {
        culprit: m.sender,
        reason,
    };
    for (name, x) in [("N", &d.N), ("N^", &d.hat_N)] {
        let bits = x.significant_bits();
        if bits > MAX_MODULUS_BITS {
            return Err(blame(format!(
                "its Paillier modulus {name} has {bits} bits (an honest one has at most {MAX_MODULUS_BITS})"
            )));
        }
    }
    let zero = cggmp24::backend::Integer::zero();
    for (name, x) in [("s", &d.s), ("t", &d.t)] {
        if *x <= zero || *x >= d.hat_N {
            return Err(blame(format!(
                "its ring-Pedersen parameter {name} is not in 1..N^"
            )));
        }
    }
    Ok(())
}
