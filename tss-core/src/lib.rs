//! Threshold-signature engines and everything in `tss-node` that needs no network.
//!
//! - [`secret`]: secret newtypes that zeroize on drop and never print.
//! - [`identity`]: Ed25519 party identities.
//! - [`authorization`]: what a client signs over its request, checked by
//!   every party.
//! - [`envelope`]: signed envelopes that carry every protocol message.
//! - [`session`]: execution ids and the bridge from verified envelopes to a
//!   `round-based` delivery.
//! - [`ecdsa`]: the CGGMP24 engines (aux info, keygen, signing).
//! - [`frost`]: the FROST engines (Ed25519 and BIP340 Taproot: keygen,
//!   signing from single-use nonces).
//! - [`primes`]: safe primes for Paillier keys.
//! - [`store`]: the sealed key-value store.
//! - [`chain`]: signature encodings, Ethereum transactions, Bitcoin/Litecoin PSBTs.
//!
//! Nothing here opens a socket or owns an async runtime: engines are plain
//! `async fn`s driven by whatever executor the caller chooses.
#![forbid(unsafe_code)]
#![deny(missing_docs)]
#![cfg_attr(test, allow(non_snake_case))]

#[cfg(not(any(feature = "pure-rust", feature = "gmp")))]
compile_error!("select a big-integer backend: feature `pure-rust` (default) or `gmp`");

/// The big-integer backend this build uses for Paillier arithmetic.
///
/// With both features on (for example `--features gmp` without
/// `--no-default-features`), fast-paillier uses num-bigint: the build works
/// but is not the fast one. `tss-node` warns about it at start-up.
pub const BACKEND: &str = if cfg!(feature = "pure-rust") {
    "pure-rust"
} else {
    "gmp"
};

/// Whether both backend features are on (see [`BACKEND`]).
pub const BOTH_BACKENDS: bool = cfg!(all(feature = "pure-rust", feature = "gmp"));

pub mod authorization;
mod cbor;
pub mod chain;
pub mod ecdsa;
pub mod envelope;
pub mod error;
pub mod frost;
pub mod identity;
pub mod primes;
pub mod secret;
pub mod session;
pub mod store;
#[cfg(any(test, feature = "testing"))]
pub mod testing;

pub use error::{Culprit, Error};
