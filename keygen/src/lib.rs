//! The DKG ceremony's state, without any network.
//!
//! - [`record`]: what each party stores about a key and about its party
//!   set's aux info, and the rules for key ids;
//! - [`transcript`]: recorded envelopes, the key certificate and the
//!   transcript file;
//! - [`ceremony`]: the steps after DKG that need no store or network:
//!   completing each party's views of a key's two runs, comparing
//!   certificates, checking the file's signatures and assembling it;
//! - [`verify`]: the offline checks of `tss-audit verify`.
//!
//! The ceremony's steps (DESIGN.md, "Keygen"):
//! 1. the coordinator proposes `keygen(key_id, parties, t)`; each party checks
//!    the proposer is a pinned party and the party set is its own;
//! 2. if the party set has no aux info yet, they run aux-info generation first
//!    (primes from each node's pool); aux info is reused for later keys;
//! 3. DKG; each party completes its share with the aux info and seals it;
//! 4. the coordinator collects the point-to-point envelopes it did not see;
//!    every party completes its view of both sessions, computes the
//!    transcript root and signs the same key certificate;
//! 5. the new key signs the certificate's digest (threshold signature).
#![forbid(unsafe_code)]
#![cfg_attr(test, allow(non_snake_case))]
#![deny(missing_docs)]

pub mod ceremony;
pub mod record;
pub mod transcript;
pub mod verify;

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_frost;
