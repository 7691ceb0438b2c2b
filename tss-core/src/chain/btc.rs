//! Bitcoin and Litecoin: addresses and PSBTs (BIP174) spending the key's
//! P2WPKH outputs, or a FROST Taproot key's P2TR outputs by their key path.
//!
//! A key spends one kind of output, told by the form of its public key:
//! an ECDSA key (33- or 65-byte SEC1) its native segwit v0 outputs (P2WPKH,
//! BIP141/BIP143); a FROST Taproot key (its 32-byte x-only output key) its
//! P2TR outputs, key path only ([`taproot`], BIP341/BIP340; Bitcoin
//! networks only). Outputs of any other script are foreign. Signing a PSBT
//! goes in two steps:
//!
//! 1. [`analyse_psbt`] reads the PSBT: every input's amount (from
//!    `witness_utxo`, or from a `non_witness_utxo` whose txid is checked
//!    against the outpoint), which inputs are the key's, the outputs with
//!    their addresses and whether they pay the key back, the fee, and for
//!    each of the key's inputs the preimage and sighash: BIP143 with
//!    SIGHASH_ALL for P2WPKH, BIP341 with SIGHASH_DEFAULT or ALL for P2TR.
//!    Policy decides on this summary.
//! 2. [`add_signatures`] (ECDSA) or [`add_taproot_signatures`] (BIP340)
//!    puts the signatures over those sighashes into the PSBT; when every
//!    input is then signed or already finalised it finalises the key's
//!    inputs and extracts the transaction.
//!
//! Amounts of inputs that are not the key's come from whoever built the
//! PSBT: BIP143 commits only to the amount of the input being signed, so the
//! fee is exact only when every foreign input carries a `non_witness_utxo`
//! (checked here) or the PSBT's author is trusted. Which inputs are the
//! key's is the PSBT's word too (its `witness_utxo` scripts): what the key
//! itself spends ([`PsbtSummary::key_spend`], its inputs minus the outputs
//! paying it back) is exact only for signatures all made on the same claims
//! ([`PsbtSummary::claims_hash`]), which the node's ledger enforces per txid.
//! A BIP341 signature commits to every input's amount and script, so for a
//! Taproot key a PSBT that misstates any input gets signatures that are not
//! valid on chain.
//!
//! Rust-bitcoin knows Bitcoin's address encodings only, so addresses are
//! encoded here from the script with the network's bech32 prefix and
//! base58check version bytes.

use std::collections::BTreeSet;
use std::fmt;

use base64ct::{Base64, Encoding};
use bitcoin::hashes::Hash;
use bitcoin::psbt::{Input, Psbt};
use bitcoin::sighash::SighashCache;
use bitcoin::{
    ecdsa, CompressedPublicKey, EcdsaSighashType, ScriptBuf, Transaction, TxIn, TxOut, Witness,
};
use k256::ecdsa::signature::hazmat::PrehashVerifier;

use super::{invalid, ChainError, EcdsaSignature};

mod address;
mod taproot;

use self::address::Params;
pub use self::address::{
    address_for_script, p2tr_address, p2wpkh_address, script_for_address, Network,
};
pub use self::taproot::{add_taproot_signatures, tap_sighash};

/// Most inputs a PSBT may have.
pub const MAX_INPUTS: usize = 1000;
/// Most outputs a PSBT may have.
pub const MAX_OUTPUTS: usize = 1000;

/// Base64 PSBT (as wallets exchange it) to its binary form, checking that it
/// parses.
///
/// # Errors
/// [`ChainError::Invalid`] when the text is not base64 or not a PSBT.
pub fn decode_psbt_base64(s: &str) -> Result<Vec<u8>, ChainError> {
    let bytes = Base64::decode_vec(s.trim())
        .map_err(|_| invalid("PSBT is not valid base64 (RFC 4648, padded)"))?;
    parse_psbt(&bytes)?;
    Ok(bytes)
}

/// Binary PSBT to base64.
pub fn encode_psbt_base64(psbt: &[u8]) -> String {
    Base64::encode_string(psbt)
}

/// One input of an analysed PSBT.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InputSummary {
    /// The output spent, "txid:vout" (txid in display order).
    pub outpoint: String,
    /// satoshis, from witness_utxo (or non_witness_utxo, checked against the outpoint's txid)
    pub value: u64,
    /// spends the key's own script (P2WPKH, or P2TR for a Taproot key)
    pub ours: bool,
    /// For our inputs: how the key signs it.
    pub spend: Option<OwnSpend>,
    /// For our inputs: the signing preimage. P2WPKH: the BIP143 preimage
    /// (SIGHASH_ALL), whose double SHA-256 is the sighash. P2TR: the BIP341
    /// signature message with its epoch byte, whose "TapSighash" tagged
    /// hash ([`tap_sighash`]) is the sighash.
    pub sighash_preimage: Option<Vec<u8>>,
    /// For our inputs: the digest to sign.
    pub sighash: Option<[u8; 32]>,
}

/// How the key signs one of its inputs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum OwnSpend {
    /// P2WPKH: ECDSA over the BIP143 sighash, SIGHASH_ALL.
    P2wpkh,
    /// P2TR key path: BIP340 over the BIP341 sighash, SIGHASH_DEFAULT
    /// (64-byte witness signature) or, if `sighash_all`, SIGHASH_ALL (65).
    TaprootKeyPath {
        /// The input asks for SIGHASH_ALL (else SIGHASH_DEFAULT).
        sighash_all: bool,
    },
}

/// One output of an analysed PSBT.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OutputSummary {
    /// The output's script.
    pub script_pubkey: Vec<u8>,
    /// Its address on the network, `None` for non-standard scripts (OP_RETURN, bare multisig, ...).
    pub address: Option<String>,
    /// Amount in the smallest unit.
    pub value: u64,
    /// pays the key's own script (change)
    pub to_self: bool,
}

/// What a PSBT spends and where it sends it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PsbtSummary {
    /// The network the addresses are written for.
    pub network: Network,
    /// unsigned txid, internal byte order
    pub txid: [u8; 32],
    /// display order
    pub txid_hex: String,
    /// Every input, in order.
    pub inputs: Vec<InputSummary>,
    /// Every output, in order.
    pub outputs: Vec<OutputSummary>,
    /// Inputs minus outputs.
    pub fee: u64,
}

impl PsbtSummary {
    /// The key's own inputs: index, outpoint and amount.
    pub fn own_inputs(&self) -> impl Iterator<Item = (usize, &InputSummary)> {
        self.inputs.iter().enumerate().filter(|(_, i)| i.ours)
    }

    /// What leaves the key: its own inputs minus the outputs paying it back
    /// (0 if it gets back more than it puts in). Exact for a transaction
    /// every own input of which this node signs on these same claims: BIP143
    /// commits each signature to its own input's amount.
    pub fn key_spend(&self) -> u64 {
        let own = self
            .own_inputs()
            .fold(0u64, |a, (_, i)| a.saturating_add(i.value));
        own.saturating_sub(self.returned())
    }

    /// What the transaction pays away as a whole: the outputs that do not
    /// return to the key, plus the fee. The outputs are committed by the
    /// txid; the fee rests on the input amounts as the PSBT states them
    /// (its author vouches for other parties' inputs), and is never
    /// negative, so this is at least the outputs to others, and at least
    /// [`Self::key_spend`].
    pub fn payments(&self) -> u64 {
        self.outputs
            .iter()
            .filter(|o| !o.to_self)
            .fold(self.fee, |a, o| a.saturating_add(o.value))
    }

    /// Total of the outputs paying the key back.
    pub fn returned(&self) -> u64 {
        self.outputs
            .iter()
            .filter(|o| o.to_self)
            .fold(0u64, |a, o| a.saturating_add(o.value))
    }

    /// SHA-256 of what a decision on this PSBT rests on beyond the txid:
    /// the network, the txid, and for every input in order its outpoint,
    /// whether it is the key's and its amount, as this PSBT states them.
    /// Two PSBTs of one transaction that agree on all of that have the same
    /// claims.
    pub fn claims_hash(&self) -> [u8; 32] {
        use sha2::Digest;
        let mut h = sha2::Sha256::new();
        h.update(b"tss/psbt-claims/v1\0");
        h.update(self.network.name().as_bytes());
        h.update([0]);
        h.update(self.txid);
        h.update((self.inputs.len() as u64).to_be_bytes());
        for i in &self.inputs {
            h.update((i.outpoint.len() as u64).to_be_bytes());
            h.update(i.outpoint.as_bytes());
            h.update([u8::from(i.ours)]);
            h.update(i.value.to_be_bytes());
        }
        h.finalize().into()
    }
}

/// A PSBT with the key's signatures added.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SignedPsbt {
    /// The updated PSBT, binary.
    pub psbt: Vec<u8>,
    /// The updated PSBT, base64.
    pub psbt_base64: String,
    /// Whether every input is finalised (then `tx_hex` is the transaction).
    pub complete: bool,
    /// The extracted network transaction, hex, when `complete`.
    pub tx_hex: Option<String>,
}

/// Reads a PSBT that spends outputs of `public_key` (see the module docs):
/// a SEC1 key's P2WPKH outputs, or a 32-byte x-only Taproot output key's
/// P2TR outputs.
///
/// # Errors
/// [`ChainError::Invalid`] when the bytes are not a PSBT, an input has no
/// UTXO information or inconsistent UTXO information, one of the key's
/// P2WPKH inputs asks for a sighash type other than ALL, no input is the
/// key's, the outputs spend more than the inputs, an amount is above the
/// network's money supply, or there are more than [`MAX_INPUTS`] inputs or
/// [`MAX_OUTPUTS`] outputs. For a Taproot key also
/// [`ChainError::MissingSpentOutput`], [`ChainError::SighashType`] and
/// [`ChainError::ScriptPath`] (see [`taproot`]).
pub fn analyse_psbt(
    psbt: &[u8],
    public_key: &[u8],
    net: Network,
) -> Result<PsbtSummary, ChainError> {
    let psbt = parse_psbt(psbt)?;
    let key = OwnKey::parse(public_key, net)?;
    let ours_script = key.script();
    let p = net.params();
    let tx = &psbt.unsigned_tx;
    if tx.output.is_empty() {
        return Err(invalid("transaction has no outputs"));
    }
    let utxos = match key {
        OwnKey::P2tr(_) => taproot::spent_outputs(&psbt)?,
        OwnKey::P2wpkh(_) => (tx.input.iter().zip(&psbt.inputs).enumerate())
            .map(|(i, (txin, input))| spent_output(i, txin, input))
            .collect::<Result<_, _>>()?,
    };

    let mut cache = SighashCache::new(tx);
    let mut inputs = Vec::with_capacity(tx.input.len());
    let mut total_in: u64 = 0;
    for (i, ((txin, input), utxo)) in tx.input.iter().zip(&psbt.inputs).zip(&utxos).enumerate() {
        let value = checked_amount(utxo, p, || format!("input {i}"))?;
        total_in = total_in
            .checked_add(value)
            .ok_or_else(|| invalid("input amounts overflow"))?;
        let ours = utxo.script_pubkey == ours_script;
        let (spend, sighash_preimage, sighash) = match key {
            _ if !ours => (None, None, None),
            OwnKey::P2wpkh(_) => {
                require_sighash_all(i, input)?;
                let (preimage, sighash) = bip143(&mut cache, i, utxo)?;
                (Some(OwnSpend::P2wpkh), Some(preimage), Some(sighash))
            }
            OwnKey::P2tr(_) => {
                let (ty, preimage, sighash) = taproot::key_path(&mut cache, i, input, &utxos)?;
                let sighash_all = ty == bitcoin::TapSighashType::All;
                let spend = OwnSpend::TaprootKeyPath { sighash_all };
                (Some(spend), Some(preimage), Some(sighash))
            }
        };
        inputs.push(InputSummary {
            outpoint: txin.previous_output.to_string(),
            value,
            ours,
            spend,
            sighash_preimage,
            sighash,
        });
    }
    if !inputs.iter().any(|i| i.ours) {
        return Err(invalid(format!(
            "no input spends this key's {} output",
            key.kind()
        )));
    }

    let mut outputs = Vec::with_capacity(tx.output.len());
    let mut total_out: u64 = 0;
    for (i, out) in tx.output.iter().enumerate() {
        let value = checked_amount(out, p, || format!("output {i}"))?;
        total_out = total_out
            .checked_add(value)
            .ok_or_else(|| invalid("output amounts overflow"))?;
        outputs.push(OutputSummary {
            script_pubkey: out.script_pubkey.to_bytes(),
            address: address_for_script(out.script_pubkey.as_bytes(), net),
            value,
            to_self: out.script_pubkey == ours_script,
        });
    }
    let fee = total_in.checked_sub(total_out).ok_or_else(|| {
        invalid(format!(
            "outputs total {total_out} but inputs only {total_in}: the transaction spends more than it has"
        ))
    })?;

    let txid = tx.compute_txid();
    Ok(PsbtSummary {
        network: net,
        txid: txid.to_byte_array(),
        txid_hex: txid.to_string(),
        inputs,
        outputs,
        fee,
    })
}

/// Adds our signatures (DER || 0x01 in partial_sigs, keyed by our compressed key) for the given input indices; when every input then can be finalised (all inputs ours and signed, or already finalised), finalises our P2WPKH inputs (final_script_witness = [sig, pubkey]; clear partial_sigs, sighash_type, bip32_derivation etc. as BIP174 finalizer does), extracts the transaction and returns its hex.
///
/// Every signature is checked (with `k256`) against the input's BIP143
/// sighash before it goes in, and so is a signature by the key that the PSBT
/// already carries before it is finalised. The extracted transaction is not
/// checked against a fee-rate limit: the fee is policy's business, on
/// [`analyse_psbt`]'s summary.
///
/// # Errors
/// [`ChainError::Invalid`] when the PSBT does not parse, an index is out of
/// range, given twice, already finalised or not an input of the key, or a
/// signature does not verify.
pub fn add_signatures(
    psbt: &[u8],
    public_key: &[u8],
    sigs: &[(usize, EcdsaSignature)],
) -> Result<SignedPsbt, ChainError> {
    let mut psbt = parse_psbt(psbt)?;
    let key = compressed_key(public_key)?;
    let ours_script = p2wpkh_script(&key);
    let psbt_key = bitcoin::PublicKey::new(key.0);
    let verifier = k256::ecdsa::VerifyingKey::from_sec1_bytes(&key.to_bytes())
        .map_err(|_| invalid("public key is not a valid secp256k1 point"))?;
    let n = psbt.inputs.len();

    let mut added = Vec::with_capacity(sigs.len());
    let mut seen = BTreeSet::new();
    let mut cache = SighashCache::new(&psbt.unsigned_tx);
    for (idx, sig) in sigs {
        let idx = *idx;
        if !seen.insert(idx) {
            return Err(invalid(format!("two signatures for input {idx}")));
        }
        let (Some(txin), Some(input)) = (psbt.unsigned_tx.input.get(idx), psbt.inputs.get(idx))
        else {
            return Err(invalid(format!(
                "signature for input {idx}, but the PSBT has {n} inputs"
            )));
        };
        if is_finalised(input) {
            return Err(invalid(format!("input {idx} is already finalised")));
        }
        let utxo = spent_output(idx, txin, input)?;
        if utxo.script_pubkey != ours_script {
            return Err(invalid(format!(
                "input {idx} does not spend this key's P2WPKH output"
            )));
        }
        require_sighash_all(idx, input)?;
        let (_, sighash) = bip143(&mut cache, idx, &utxo)?;
        let k = k256::ecdsa::Signature::from_scalars(sig.r, sig.s)
            .map_err(|_| invalid(format!("signature for input {idx}: r or s out of range")))?;
        if k.normalize_s().is_some() {
            return Err(invalid(format!(
                "signature for input {idx} is high-S (non-standard, BIP146)"
            )));
        }
        verifier.verify_prehash(&sighash, &k).map_err(|_| {
            invalid(format!(
                "signature for input {idx} does not verify under the key for its BIP143 sighash"
            ))
        })?;
        let secp = bitcoin::secp256k1::ecdsa::Signature::from_compact(&k.to_bytes())
            .map_err(|_| invalid(format!("signature for input {idx}: r or s out of range")))?;
        added.push((idx, ecdsa::Signature::sighash_all(secp)));
    }
    for (idx, sig) in added {
        if let Some(input) = psbt.inputs.get_mut(idx) {
            input.partial_sigs.insert(psbt_key, sig);
        }
    }

    // Can every input be finalised now?
    let mut complete = true;
    let mut finalise = Vec::new();
    let mut cache = SighashCache::new(&psbt.unsigned_tx);
    for (i, (txin, input)) in psbt.unsigned_tx.input.iter().zip(&psbt.inputs).enumerate() {
        if is_finalised(input) {
            continue;
        }
        let Some(sig) = input.partial_sigs.get(&psbt_key) else {
            complete = false;
            continue;
        };
        let utxo = spent_output(i, txin, input)?;
        if utxo.script_pubkey != ours_script {
            complete = false;
            continue;
        }
        require_sighash_all(i, input)?;
        let (_, sighash) = bip143(&mut cache, i, &utxo)?;
        let k = k256::ecdsa::Signature::from_slice(&sig.signature.serialize_compact());
        let valid = sig.sighash_type == EcdsaSighashType::All
            && k.is_ok_and(|k| verifier.verify_prehash(&sighash, &k).is_ok());
        if !valid {
            return Err(invalid(format!(
                "input {i} carries a signature by this key that does not verify"
            )));
        }
        finalise.push((i, *sig));
    }

    let witnesses = finalise
        .into_iter()
        .map(|(i, sig)| (i, Witness::p2wpkh(&sig, &key.0)));
    Ok(finish(psbt, complete.then_some(witnesses)))
}

/// The signed PSBT; with `finalise` (every input can be finalised), the
/// given inputs finalised with their witnesses and the transaction
/// extracted.
fn finish(mut psbt: Psbt, finalise: Option<impl Iterator<Item = (usize, Witness)>>) -> SignedPsbt {
    let complete = finalise.is_some();
    let mut tx_hex = None;
    if let Some(witnesses) = finalise {
        for (i, witness) in witnesses {
            if let Some(input) = psbt.inputs.get_mut(i) {
                let old = std::mem::take(input);
                // BIP174/BIP371 finalizer: keep only the UTXO, the final
                // witness and the unknown and proprietary fields.
                *input = Input {
                    non_witness_utxo: old.non_witness_utxo,
                    witness_utxo: old.witness_utxo,
                    final_script_witness: Some(witness),
                    proprietary: old.proprietary,
                    unknown: old.unknown,
                    ..Input::default()
                };
            }
        }
        let tx = psbt.clone().extract_tx_unchecked_fee_rate();
        tx_hex = Some(bitcoin::consensus::encode::serialize_hex(&tx));
    }
    let bytes = psbt.serialize();
    SignedPsbt {
        psbt_base64: encode_psbt_base64(&bytes),
        psbt: bytes,
        complete,
        tx_hex,
    }
}

/// Parses a binary PSBT: nothing after it, and within the size bounds.
fn parse_psbt(bytes: &[u8]) -> Result<Psbt, ChainError> {
    let mut rest = bytes;
    let psbt = Psbt::deserialize_from_reader(&mut rest)
        .map_err(|e| invalid(format!("not a valid PSBT: {e}")))?;
    if !rest.is_empty() {
        return Err(invalid(format!(
            "{} trailing bytes after the PSBT",
            rest.len()
        )));
    }
    if psbt.unsigned_tx.input.len() > MAX_INPUTS {
        return Err(invalid(format!(
            "PSBT has {} inputs, more than the {MAX_INPUTS} the node signs",
            psbt.unsigned_tx.input.len()
        )));
    }
    if psbt.unsigned_tx.output.len() > MAX_OUTPUTS {
        return Err(invalid(format!(
            "PSBT has {} outputs, more than the {MAX_OUTPUTS} the node signs",
            psbt.unsigned_tx.output.len()
        )));
    }
    let mut outpoints = BTreeSet::new();
    for (i, txin) in psbt.unsigned_tx.input.iter().enumerate() {
        if !outpoints.insert(txin.previous_output) {
            return Err(invalid(format!(
                "input {i} spends {} a second time",
                txin.previous_output
            )));
        }
    }
    Ok(psbt)
}

fn compressed_key(public_key: &[u8]) -> Result<CompressedPublicKey, ChainError> {
    let key = bitcoin::secp256k1::PublicKey::from_slice(public_key)
        .map_err(|_| invalid("public key is not a valid secp256k1 point"))?;
    Ok(CompressedPublicKey(key))
}

fn p2wpkh_script(key: &CompressedPublicKey) -> ScriptBuf {
    ScriptBuf::new_p2wpkh(&key.wpubkey_hash())
}

/// The key a PSBT is analysed for, by the form of its public key.
enum OwnKey {
    /// An ECDSA key (33- or 65-byte SEC1): its P2WPKH outputs.
    P2wpkh(CompressedPublicKey),
    /// A FROST Taproot key's 32-byte x-only output key: its P2TR outputs.
    P2tr(bitcoin::secp256k1::XOnlyPublicKey),
}

impl OwnKey {
    fn parse(public_key: &[u8], net: Network) -> Result<OwnKey, ChainError> {
        if public_key.len() != 32 {
            return Ok(OwnKey::P2wpkh(compressed_key(public_key)?));
        }
        if !matches!(net, Network::Bitcoin | Network::BitcoinTestnet) {
            return Err(invalid(format!(
                "a Taproot key spends on bitcoin and bitcoin-testnet only, not on {net}"
            )));
        }
        Ok(OwnKey::P2tr(taproot::output_key(public_key)?))
    }

    fn script(&self) -> ScriptBuf {
        match self {
            OwnKey::P2wpkh(k) => p2wpkh_script(k),
            OwnKey::P2tr(k) => taproot::output_script(k),
        }
    }

    fn kind(&self) -> &'static str {
        match self {
            OwnKey::P2wpkh(_) => "P2WPKH",
            OwnKey::P2tr(_) => "Taproot (P2TR)",
        }
    }
}

fn is_finalised(input: &Input) -> bool {
    input.final_script_witness.is_some() || input.final_script_sig.is_some()
}

/// The output input `i` spends, from its UTXO fields.
fn spent_output(i: usize, txin: &TxIn, input: &Input) -> Result<TxOut, ChainError> {
    let outpoint = txin.previous_output;
    let from_full = match &input.non_witness_utxo {
        Some(prev) => {
            let txid = prev.compute_txid();
            if txid != outpoint.txid {
                return Err(invalid(format!(
                    "input {i}: non_witness_utxo is transaction {txid}, but the input spends {outpoint}"
                )));
            }
            let out = usize::try_from(outpoint.vout)
                .ok()
                .and_then(|v| prev.output.get(v))
                .ok_or_else(|| {
                    invalid(format!(
                        "input {i} spends output {} of a transaction with {} outputs",
                        outpoint.vout,
                        prev.output.len()
                    ))
                })?;
            Some(out)
        }
        None => None,
    };
    match (&input.witness_utxo, from_full) {
        (Some(w), Some(f)) if w != f => Err(invalid(format!(
            "input {i}: witness_utxo disagrees with the output its non_witness_utxo holds"
        ))),
        (Some(w), _) => Ok(w.clone()),
        (None, Some(f)) => Ok(f.clone()),
        (None, None) => Err(invalid(format!(
            "input {i} has no witness_utxo: the node must know the amount it signs for (BIP143)"
        ))),
    }
}

fn checked_amount(
    out: &TxOut,
    p: &Params,
    what: impl FnOnce() -> String,
) -> Result<u64, ChainError> {
    let value = out.value.to_sat();
    if value > p.max_money {
        return Err(invalid(format!(
            "{} amount {value} is above {}'s money supply",
            what(),
            p.name
        )));
    }
    Ok(value)
}

fn require_sighash_all(i: usize, input: &Input) -> Result<(), ChainError> {
    match input.sighash_type {
        None => Ok(()),
        Some(t) if t.to_u32() == EcdsaSighashType::All.to_u32() => Ok(()),
        Some(t) => Err(invalid(format!(
            "input {i} asks for sighash type {t} ({:#x}); the node signs SIGHASH_ALL only",
            t.to_u32()
        ))),
    }
}

/// BIP143 preimage and sighash (SIGHASH_ALL) of P2WPKH input `i`.
fn bip143(
    cache: &mut SighashCache<&Transaction>,
    i: usize,
    utxo: &TxOut,
) -> Result<(Vec<u8>, [u8; 32]), ChainError> {
    let fail = |e: &dyn fmt::Display| invalid(format!("input {i}: no BIP143 sighash: {e}"));
    let script_code = utxo
        .script_pubkey
        .p2wpkh_script_code()
        .ok_or_else(|| invalid(format!("input {i} is not P2WPKH")))?;
    let mut preimage = Vec::new();
    cache
        .segwit_v0_encode_signing_data_to(
            &mut preimage,
            i,
            &script_code,
            utxo.value,
            EcdsaSighashType::All,
        )
        .map_err(|e| fail(&e))?;
    let sighash = cache
        .p2wpkh_signature_hash(i, &utxo.script_pubkey, utxo.value, EcdsaSighashType::All)
        .map_err(|e| fail(&e))?;
    Ok((preimage, sighash.to_byte_array()))
}

#[cfg(test)]
mod tests;
