//! The hashed structures CGGMP24 derives commitments and challenges from.
//! The engine crates keep them private; these copies must hash identically
//! (same tags and field names), which the verification of every real
//! transcript confirms.

use generic_ec::{NonZero, Point};
use tss_core::ecdsa::Curve;

use super::{AuxRound1, AuxRound2, KgRound1, KgRound2, Sid};

#[derive(udigest::Digestable)]
#[udigest(tag = "dfns.cggmp24.keygen.threshold.hash_commitment")]
#[udigest(bound = "")]
pub struct KgHashCom<'a> {
    pub sid: Sid<'a>,
    pub party_index: u16,
    pub decommitment: &'a KgRound2,
}

#[derive(udigest::Digestable)]
#[udigest(tag = "dfns.cggmp24.keygen.threshold.schnorr_pok")]
#[udigest(bound = "")]
pub struct KgSchnorrPok<'a> {
    pub sid: Sid<'a>,
    pub prover: u16,
    #[udigest(as_bytes)]
    pub rid: &'a [u8],
    pub y: NonZero<Point<Curve>>,
    pub h: Point<Curve>,
}

#[derive(udigest::Digestable)]
#[udigest(tag = "dfns.cggmp24.keygen.threshold.echo_round")]
#[udigest(bound = "")]
pub struct KgEcho<'a> {
    pub sid: Sid<'a>,
    pub commitment: &'a KgRound1,
}

#[derive(udigest::Digestable)]
#[udigest(tag = "dfns.cggmp24.aux_gen.hash_commitment")]
#[udigest(bound = "")]
pub struct AuxHashCom<'a> {
    pub sid: Sid<'a>,
    pub prover: u16,
    pub decommitment: &'a AuxRound2,
}

#[derive(udigest::Digestable)]
#[udigest(tag = "dfns.cggmp24.aux_gen.echo_round")]
#[udigest(bound = "")]
pub struct AuxEcho<'a> {
    pub sid: Sid<'a>,
    pub commitment: &'a AuxRound1,
}

#[derive(udigest::Digestable)]
#[udigest(tag = "dfns.cggmp24.aux_gen.proof_mod")]
pub struct ProofMod<'a> {
    pub sid: Sid<'a>,
    #[udigest(as_bytes)]
    pub rho: &'a [u8],
    pub prover: u16,
}

#[derive(udigest::Digestable)]
#[udigest(tag = "dfns.cggmp24.aux_gen.proof_fac")]
pub struct ProofFac<'a> {
    pub sid: Sid<'a>,
    #[udigest(as_bytes)]
    pub rho: &'a [u8],
    pub prover: u16,
}
