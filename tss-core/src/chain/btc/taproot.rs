//! Taproot key-path inputs (BIP341 sighash, BIP340 signature) of a FROST
//! Taproot key.
//!
//! Such a key is known here by its 32-byte x-only output key Q, already
//! BIP86-tweaked from the group key (no script tree); its output script is
//! `OP_1 <Q>`. An input is the key's exactly when the output it spends
//! (`witness_utxo`, or the output of its `non_witness_utxo`, checked against
//! the outpoint) has that script; an output to that script is change. For
//! each of the key's inputs:
//!
//! - every input of the PSBT must carry its spent output: the BIP341 sighash
//!   commits to all spent amounts and scripts (`Prevouts::All`), so the node
//!   cannot compute it otherwise ([`ChainError::MissingSpentOutput`]);
//! - the sighash type is SIGHASH_DEFAULT (no `sighash_type`, or 0) or
//!   SIGHASH_ALL (1); anything else is refused ([`ChainError::SighashType`]);
//! - script-path fields (`tap_merkle_root`, `tap_scripts`,
//!   `tap_script_sigs`, leaf hashes in `tap_key_origins`) are refused
//!   ([`ChainError::ScriptPath`]): the key's output has no script tree, so
//!   they cannot be right, and treating the input as foreign instead would
//!   hide an amount leaving the key;
//! - the digest signed is the BIP341 key-path sighash (no annex), computed
//!   here from the PSBT bytes by every node itself.
//!
//! Finalised, a key-path witness is the one signature: 64 bytes for
//! SIGHASH_DEFAULT, 65 (`sig || 0x01`) for SIGHASH_ALL.

use std::collections::BTreeSet;

use bitcoin::hashes::Hash;
use bitcoin::key::TweakedPublicKey;
use bitcoin::psbt::{Input, Psbt};
use bitcoin::secp256k1::{schnorr, Message, Secp256k1, Verification, XOnlyPublicKey};
use bitcoin::sighash::{Prevouts, SighashCache};
use bitcoin::{ScriptBuf, TapSighash, TapSighashType, Transaction, TxOut, Witness};

use super::{finish, is_finalised, parse_psbt, spent_output, SignedPsbt};
use crate::chain::{invalid, ChainError};

/// The x-only output key of a Taproot key.
pub(super) fn output_key(bytes: &[u8]) -> Result<XOnlyPublicKey, ChainError> {
    XOnlyPublicKey::from_slice(bytes)
        .map_err(|_| invalid("public key is not an x-only secp256k1 key (Taproot output key)"))
}

/// `OP_1 <output key>`.
pub(super) fn output_script(key: &XOnlyPublicKey) -> ScriptBuf {
    // The record's key is the output key itself (tweaked at keygen).
    ScriptBuf::new_p2tr_tweaked(TweakedPublicKey::dangerous_assume_tweaked(*key))
}

/// Every input's spent output, in input order (BIP341's `Prevouts::All`).
pub(super) fn spent_outputs(psbt: &Psbt) -> Result<Vec<TxOut>, ChainError> {
    let tx = &psbt.unsigned_tx;
    let mut out = Vec::with_capacity(tx.input.len());
    for (i, (txin, input)) in tx.input.iter().zip(&psbt.inputs).enumerate() {
        if input.witness_utxo.is_none() && input.non_witness_utxo.is_none() {
            return Err(ChainError::MissingSpentOutput { input: i });
        }
        out.push(spent_output(i, txin, input)?);
    }
    Ok(out)
}

/// The sighash type key-path input `i` asks for: DEFAULT or ALL.
fn sighash_type(i: usize, input: &Input) -> Result<TapSighashType, ChainError> {
    match input.sighash_type.map(|t| t.to_u32()) {
        None | Some(0) => Ok(TapSighashType::Default),
        Some(1) => Ok(TapSighashType::All),
        Some(t) => Err(ChainError::SighashType {
            input: i,
            sighash_type: t,
            allowed: "SIGHASH_DEFAULT (0) or SIGHASH_ALL (1) for Taproot inputs",
        }),
    }
}

/// Refuses script-path data on one of the key's inputs.
fn require_key_path(i: usize, input: &Input) -> Result<(), ChainError> {
    let field = if input.tap_merkle_root.is_some() {
        "tap_merkle_root"
    } else if !input.tap_scripts.is_empty() {
        "tap_scripts"
    } else if !input.tap_script_sigs.is_empty() {
        "tap_script_sigs"
    } else if input.tap_key_origins.values().any(|(l, _)| !l.is_empty()) {
        "leaf hashes in tap_key_origins"
    } else {
        return Ok(());
    };
    Err(ChainError::ScriptPath { input: i, field })
}

/// Checks that the key's input `i` is a key-path spend the node signs, and
/// returns its sighash type, BIP341 signature message (with the epoch byte)
/// and sighash. `prevouts`: every input's spent output.
pub(super) fn key_path(
    cache: &mut SighashCache<&Transaction>,
    i: usize,
    input: &Input,
    prevouts: &[TxOut],
) -> Result<(TapSighashType, Vec<u8>, [u8; 32]), ChainError> {
    require_key_path(i, input)?;
    let ty = sighash_type(i, input)?;
    let fail = |e: &dyn std::fmt::Display| invalid(format!("input {i}: no BIP341 sighash: {e}"));
    let all = Prevouts::All(prevouts);
    let mut preimage = Vec::new();
    cache
        .taproot_encode_signing_data_to(&mut preimage, i, &all, None, None, ty)
        .map_err(|e| fail(&e))?;
    let sighash = cache
        .taproot_key_spend_signature_hash(i, &all, ty)
        .map_err(|e| fail(&e))?
        .to_byte_array();
    if tap_sighash(&preimage) != sighash {
        return Err(invalid(format!(
            "input {i}: the BIP341 message does not hash to the sighash (a bug)"
        )));
    }
    Ok((ty, preimage, sighash))
}

/// The BIP341 sighash of a signature message (epoch byte included, as
/// [`super::InputSummary::sighash_preimage`] holds it for a Taproot input):
/// its "TapSighash" tagged hash.
pub fn tap_sighash(preimage: &[u8]) -> [u8; 32] {
    TapSighash::hash(preimage).to_byte_array()
}

/// Whether `sig` is the key's valid key-path signature of input `i`.
fn verifies<C: Verification>(
    secp: &Secp256k1<C>,
    key: &XOnlyPublicKey,
    sig: &bitcoin::taproot::Signature,
    ty: TapSighashType,
    sighash: &[u8; 32],
) -> bool {
    sig.sighash_type == ty
        && secp
            .verify_schnorr(&sig.signature, &Message::from_digest(*sighash), key)
            .is_ok()
}

/// Adds the key's BIP340 signatures (64 bytes each, over the inputs' BIP341
/// sighashes) as `tap_key_sig` of the given inputs; when every input then
/// can be finalised (all inputs the key's and signed, or already
/// finalised), finalises the key's inputs (`final_script_witness` = the
/// signature, with `0x01` appended for SIGHASH_ALL; the other fields
/// cleared as the BIP371 finalizer does), extracts the transaction and
/// returns its hex.
///
/// `output_key` is the key's 32-byte x-only output key. Every signature is
/// checked (with libsecp256k1's BIP340 verification) against the input's
/// BIP341 sighash before it goes in, and so is a `tap_key_sig` the PSBT
/// already carries on one of the key's inputs before it is finalised.
///
/// # Errors
/// [`ChainError`] when the PSBT does not parse or lacks a spent output, an
/// index is out of range, given twice, already finalised or not an input
/// of the key, an input of the key is not a key-path spend the node signs,
/// or a signature does not verify.
pub fn add_taproot_signatures(
    psbt: &[u8],
    output_key: &[u8],
    sigs: &[(usize, [u8; 64])],
) -> Result<SignedPsbt, ChainError> {
    let mut psbt = parse_psbt(psbt)?;
    let key = self::output_key(output_key)?;
    let ours = output_script(&key);
    let prevouts = spent_outputs(&psbt)?;
    let secp = Secp256k1::verification_only();
    let n = psbt.inputs.len();

    let mut added = Vec::with_capacity(sigs.len());
    let mut seen = BTreeSet::new();
    let mut cache = SighashCache::new(&psbt.unsigned_tx);
    for (idx, sig) in sigs {
        let idx = *idx;
        if !seen.insert(idx) {
            return Err(invalid(format!("two signatures for input {idx}")));
        }
        let (Some(input), Some(utxo)) = (psbt.inputs.get(idx), prevouts.get(idx)) else {
            return Err(invalid(format!(
                "signature for input {idx}, but the PSBT has {n} inputs"
            )));
        };
        if is_finalised(input) {
            return Err(invalid(format!("input {idx} is already finalised")));
        }
        if utxo.script_pubkey != ours {
            return Err(invalid(format!(
                "input {idx} does not spend this key's Taproot (P2TR) output"
            )));
        }
        let (ty, _, sighash) = key_path(&mut cache, idx, input, &prevouts)?;
        let signature = schnorr::Signature::from_slice(sig).map_err(|_| {
            invalid(format!(
                "signature for input {idx} is not a BIP340 signature"
            ))
        })?;
        let sig = bitcoin::taproot::Signature {
            signature,
            sighash_type: ty,
        };
        if !verifies(&secp, &key, &sig, ty, &sighash) {
            return Err(invalid(format!(
                "signature for input {idx} does not verify under the key's output key for its BIP341 sighash"
            )));
        }
        added.push((idx, sig));
    }
    for (idx, sig) in added {
        if let Some(input) = psbt.inputs.get_mut(idx) {
            input.tap_key_sig = Some(sig);
        }
    }

    // Can every input be finalised now?
    let mut complete = true;
    let mut finalise = Vec::new();
    let mut cache = SighashCache::new(&psbt.unsigned_tx);
    for (i, (input, utxo)) in psbt.inputs.iter().zip(&prevouts).enumerate() {
        if is_finalised(input) {
            continue;
        }
        let (true, Some(sig)) = (utxo.script_pubkey == ours, input.tap_key_sig) else {
            complete = false;
            continue;
        };
        let (ty, _, sighash) = key_path(&mut cache, i, input, &prevouts)?;
        if !verifies(&secp, &key, &sig, ty, &sighash) {
            return Err(invalid(format!(
                "input {i} carries a tap_key_sig that does not verify under this key for its BIP341 sighash"
            )));
        }
        finalise.push((i, sig));
    }
    let witnesses = finalise
        .into_iter()
        .map(|(i, sig)| (i, Witness::p2tr_key_spend(&sig)));
    Ok(finish(psbt, complete.then_some(witnesses)))
}

#[cfg(test)]
mod tests;
