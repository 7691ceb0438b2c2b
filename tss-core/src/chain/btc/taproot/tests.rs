//! Taproot key-path PSBTs: the BIP341 sighash against a computation written
//! here from the BIP's text (SHA-256 only), the sighash types and script-path
//! fields refused, the spent outputs required, ownership beside P2WPKH, and
//! finalised witnesses checked with k256's BIP340 verification.

use bitcoin::absolute::LockTime;
use bitcoin::hashes::Hash;
use bitcoin::psbt::{Psbt, PsbtSighashType};
use bitcoin::secp256k1::{Keypair, Message, Secp256k1};
use bitcoin::transaction::Version;
use bitcoin::{
    Amount, CompressedPublicKey, OutPoint, ScriptBuf, Sequence, Transaction, TxIn, TxOut, Txid,
    Witness,
};
use sha2::{Digest, Sha256};

use crate::chain::btc::{
    add_signatures, add_taproot_signatures, analyse_psbt, tap_sighash, Network, OwnSpend,
    PsbtSummary,
};
use crate::chain::ChainError;

fn keypair(n: u8) -> Keypair {
    Keypair::from_seckey_slice(&Secp256k1::new(), &[n; 32]).unwrap()
}

/// The 32-byte x-only key the node is given for a Taproot key.
fn output_key(kp: &Keypair) -> [u8; 32] {
    kp.x_only_public_key().0.serialize()
}

/// `OP_1 <32-byte key>`, written out by hand.
fn p2tr(key: &[u8; 32]) -> ScriptBuf {
    let mut s = vec![0x51, 0x20];
    s.extend_from_slice(key);
    ScriptBuf::from_bytes(s)
}

fn p2wpkh(sec1: &[u8]) -> ScriptBuf {
    ScriptBuf::new_p2wpkh(
        &CompressedPublicKey::from_slice(sec1)
            .unwrap()
            .wpubkey_hash(),
    )
}

fn txout(value: u64, script: &ScriptBuf) -> TxOut {
    TxOut {
        value: Amount::from_sat(value),
        script_pubkey: script.clone(),
    }
}

fn outpoint(n: u8) -> OutPoint {
    OutPoint {
        txid: Txid::from_byte_array([n; 32]),
        vout: u32::from(n),
    }
}

/// A PSBT spending `inputs` to `outputs`, each input with `witness_utxo`.
fn build(inputs: &[TxOut], outputs: Vec<TxOut>) -> Psbt {
    let tx = Transaction {
        version: Version::TWO,
        lock_time: LockTime::from_consensus(800_000),
        input: (0..inputs.len())
            .map(|i| TxIn {
                previous_output: outpoint(i as u8 + 1),
                script_sig: ScriptBuf::new(),
                sequence: Sequence(0xffff_fffd - i as u32),
                witness: Witness::new(),
            })
            .collect(),
        output: outputs,
    };
    let mut psbt = Psbt::from_unsigned_tx(tx).unwrap();
    for (input, utxo) in psbt.inputs.iter_mut().zip(inputs) {
        input.witness_utxo = Some(utxo.clone());
    }
    psbt
}

/// Two inputs of the Taproot key, one P2WPKH input of someone else; a
/// payment and change back to the key.
fn mixed(key: &[u8; 32]) -> Psbt {
    let other = k256::ecdsa::SigningKey::from_slice(&[5; 32]).unwrap();
    let other = other.verifying_key().to_encoded_point(true);
    build(
        &[
            txout(50_000, &p2tr(key)),
            txout(20_000, &p2wpkh(other.as_bytes())),
            txout(30_000, &p2tr(key)),
        ],
        vec![
            txout(60_000, &p2wpkh(other.as_bytes())),
            txout(39_000, &p2tr(key)),
        ],
    )
}

fn sha(parts: &[&[u8]]) -> [u8; 32] {
    let mut h = Sha256::new();
    for p in parts {
        h.update(p);
    }
    h.finalize().into()
}

fn compact(script: &[u8]) -> Vec<u8> {
    assert!(script.len() < 0xfd, "short scripts only");
    let mut v = vec![script.len() as u8];
    v.extend_from_slice(script);
    v
}

/// BIP341's SigMsg for a key-path spend (no annex, hash type 0x00 or 0x01),
/// then the "TapSighash" tagged hash, from the BIP's text.
fn bip341_by_hand(tx: &Transaction, prevouts: &[TxOut], i: usize, hash_type: u8) -> [u8; 32] {
    assert!(hash_type <= 1);
    let cat = |f: &dyn Fn(usize) -> Vec<u8>| (0..prevouts.len()).flat_map(f).collect::<Vec<u8>>();
    let prevouts_ser = cat(&|j| {
        let o = tx.input[j].previous_output;
        [&o.txid.to_byte_array()[..], &o.vout.to_le_bytes()].concat()
    });
    let amounts = cat(&|j| prevouts[j].value.to_sat().to_le_bytes().to_vec());
    let scripts = cat(&|j| compact(prevouts[j].script_pubkey.as_bytes()));
    let sequences = cat(&|j| tx.input[j].sequence.0.to_le_bytes().to_vec());
    let outputs: Vec<u8> = tx
        .output
        .iter()
        .flat_map(|o| {
            [
                &o.value.to_sat().to_le_bytes()[..],
                &compact(o.script_pubkey.as_bytes()),
            ]
            .concat()
        })
        .collect();
    let mut m = vec![0u8, hash_type];
    m.extend_from_slice(&tx.version.0.to_le_bytes());
    m.extend_from_slice(&tx.lock_time.to_consensus_u32().to_le_bytes());
    for part in [&prevouts_ser, &amounts, &scripts, &sequences, &outputs] {
        m.extend_from_slice(&sha(&[part]));
    }
    m.push(0); // spend_type: key path, no annex
    m.extend_from_slice(&(i as u32).to_le_bytes());
    let tag = sha(&[b"TapSighash"]);
    sha(&[&tag, &tag, &m])
}

fn prevouts(psbt: &Psbt) -> Vec<TxOut> {
    psbt.inputs
        .iter()
        .map(|i| i.witness_utxo.clone().unwrap())
        .collect()
}

/// An input index and the BIP340 signature for it.
type Sig = (usize, [u8; 64]);

fn sign(kp: &Keypair, summary: &PsbtSummary) -> Vec<Sig> {
    let secp = Secp256k1::new();
    summary
        .own_inputs()
        .map(|(i, input)| {
            let msg = Message::from_digest(input.sighash.unwrap());
            (i, secp.sign_schnorr_no_aux_rand(&msg, kp).serialize())
        })
        .collect()
}

fn k256_verifies(key: &[u8; 32], digest: &[u8; 32], sig: &[u8]) -> bool {
    let vk = k256::schnorr::VerifyingKey::from_bytes(key).unwrap();
    let sig = k256::schnorr::Signature::try_from(sig).unwrap();
    vk.verify_raw(digest, &sig).is_ok()
}

#[test]
fn analyse_psbt__should_give_the_bip341_sighash_of_each_own_input() {
    // Given a PSBT with two inputs of the key and a foreign P2WPKH input
    let kp = keypair(3);
    let key = output_key(&kp);
    for (field, hash_type) in [(None, 0u8), (Some(0), 0), (Some(1), 1)] {
        let mut psbt = mixed(&key);
        for input in &mut psbt.inputs {
            input.sighash_type = field.map(PsbtSighashType::from_u32);
        }
        // When it is analysed for the Taproot key
        let s = analyse_psbt(&psbt.serialize(), &key, Network::Bitcoin).unwrap();
        // Then inputs 0 and 2 are the key's, with the sighash the BIP's
        // text gives, and the change counts as returned
        let own: Vec<usize> = s.own_inputs().map(|(i, _)| i).collect();
        assert_eq!(own, [0, 2]);
        for &i in &own {
            let input = &s.inputs[i];
            let want = bip341_by_hand(&psbt.unsigned_tx, &prevouts(&psbt), i, hash_type);
            assert_eq!(input.sighash, Some(want), "input {i} type {hash_type}");
            assert_eq!(tap_sighash(input.sighash_preimage.as_ref().unwrap()), want);
            let sighash_all = hash_type == 1;
            assert_eq!(input.spend, Some(OwnSpend::TaprootKeyPath { sighash_all }));
        }
        assert!(s.inputs[1].sighash.is_none() && s.inputs[1].spend.is_none());
        assert!(s.outputs[1].to_self && !s.outputs[0].to_self);
        assert_eq!(
            s.outputs[1].address.as_deref().map(|a| &a[..4]),
            Some("bc1p")
        );
        assert_eq!(
            (s.fee, s.key_spend(), s.payments()),
            (1_000, 41_000, 61_000)
        );
    }
}

#[test]
fn analyse_psbt__should_refuse_sighash_types_other_than_default_and_all() {
    let key = output_key(&keypair(3));
    for t in [2u32, 3, 0x81, 0x82, 0x83, 4, 0x100] {
        // Given the key's input 2 asking for sighash type t
        let mut psbt = mixed(&key);
        psbt.inputs[2].sighash_type = Some(PsbtSighashType::from_u32(t));
        // Then analysis refuses it, naming the input
        let e = analyse_psbt(&psbt.serialize(), &key, Network::Bitcoin).unwrap_err();
        assert!(
            matches!(e, ChainError::SighashType { input: 2, sighash_type, .. } if sighash_type == t),
            "{e:?}"
        );
        assert!(e.to_string().contains("input 2"), "{e}");
    }
    // A foreign input's sighash type is its signer's business.
    let mut psbt = mixed(&key);
    psbt.inputs[1].sighash_type = Some(PsbtSighashType::from_u32(2));
    analyse_psbt(&psbt.serialize(), &key, Network::Bitcoin).unwrap();
}

#[test]
fn analyse_psbt__should_refuse_a_taproot_psbt_with_an_input_lacking_its_spent_output() {
    let kp = keypair(3);
    let key = output_key(&kp);
    // Given the foreign input without any UTXO field
    let mut psbt = mixed(&key);
    psbt.inputs[1].witness_utxo = None;
    let bytes = psbt.serialize();
    // Then neither analysis nor signing computes a sighash
    let e = analyse_psbt(&bytes, &key, Network::Bitcoin).unwrap_err();
    assert_eq!(e, ChainError::MissingSpentOutput { input: 1 });
    assert!(e.to_string().contains("every input"), "{e}");
    let e = add_taproot_signatures(&bytes, &key, &[(0, [1; 64])]).unwrap_err();
    assert_eq!(e, ChainError::MissingSpentOutput { input: 1 });
}

#[test]
fn analyse_psbt__should_refuse_script_path_fields_on_the_keys_inputs() {
    let key = output_key(&keypair(3));
    let mut psbt = mixed(&key);
    psbt.inputs[0].tap_merkle_root = Some(bitcoin::TapNodeHash::from_byte_array([7; 32]));
    let e = analyse_psbt(&psbt.serialize(), &key, Network::Bitcoin).unwrap_err();
    assert_eq!(
        e,
        ChainError::ScriptPath {
            input: 0,
            field: "tap_merkle_root"
        }
    );
    // The same field on someone else's input is not ours to judge.
    let mut psbt = mixed(&key);
    psbt.inputs[1].tap_merkle_root = Some(bitcoin::TapNodeHash::from_byte_array([7; 32]));
    analyse_psbt(&psbt.serialize(), &key, Network::Bitcoin).unwrap();
}

#[test]
fn analyse_psbt__should_keep_p2tr_and_p2wpkh_ownership_apart() {
    // Given a PSBT spending a P2TR output of the Taproot key and a P2WPKH
    // output of an ECDSA key
    let kp = keypair(3);
    let key = output_key(&kp);
    let ecdsa = k256::ecdsa::SigningKey::from_slice(&[9; 32]).unwrap();
    let sec1 = ecdsa.verifying_key().to_encoded_point(true);
    let psbt = build(
        &[
            txout(10_000, &p2tr(&key)),
            txout(10_000, &p2wpkh(sec1.as_bytes())),
        ],
        vec![txout(19_000, &p2wpkh(sec1.as_bytes()))],
    )
    .serialize();
    // Then each key owns its own kind of input only
    let tr = analyse_psbt(&psbt, &key, Network::BitcoinTestnet).unwrap();
    assert_eq!(tr.own_inputs().map(|(i, _)| i).collect::<Vec<_>>(), [0]);
    assert!(!tr.outputs[0].to_self);
    let wpkh = analyse_psbt(&psbt, sec1.as_bytes(), Network::BitcoinTestnet).unwrap();
    assert_eq!(wpkh.own_inputs().map(|(i, _)| i).collect::<Vec<_>>(), [1]);
    assert_eq!(wpkh.inputs[1].spend, Some(OwnSpend::P2wpkh));
    assert!(wpkh.outputs[0].to_self);
    // The ECDSA key's own x-only form is no Taproot key of its inputs
    let xonly: [u8; 32] = sec1.as_bytes()[1..].try_into().unwrap();
    let e = analyse_psbt(&psbt, &xonly, Network::BitcoinTestnet).unwrap_err();
    assert!(e.to_string().contains("Taproot (P2TR) output"), "{e}");
    // A Taproot key spends on the Bitcoin networks only
    let e = analyse_psbt(&psbt, &key, Network::Litecoin).unwrap_err();
    assert!(
        e.to_string().contains("bitcoin and bitcoin-testnet only"),
        "{e}"
    );
    // And signatures go to the matching kind only
    let e = add_taproot_signatures(&psbt, &key, &[(1, [1; 64])]).unwrap_err();
    assert!(
        e.to_string().contains("does not spend this key's Taproot"),
        "{e}"
    );
    let e = add_signatures(&psbt, &key, &[]).unwrap_err();
    assert!(e.to_string().contains("not a valid secp256k1 point"), "{e}");
}

#[test]
fn add_taproot_signatures__should_finalise_key_path_witnesses_that_verify() {
    let kp = keypair(3);
    let key = output_key(&kp);
    for (field, hash_type) in [(None, 0u8), (Some(1), 1)] {
        // Given a PSBT of the key's inputs only
        let mut psbt = build(
            &[txout(50_000, &p2tr(&key)), txout(30_000, &p2tr(&key))],
            vec![txout(79_000, &p2tr(&[2; 32]))],
        );
        for input in &mut psbt.inputs {
            input.sighash_type = field.map(PsbtSighashType::from_u32);
            input.tap_internal_key = Some(kp.x_only_public_key().0);
        }
        let bytes = psbt.serialize();
        let s = analyse_psbt(&bytes, &key, Network::Bitcoin).unwrap();
        // When both are signed
        let sigs = sign(&kp, &s);
        let signed = add_taproot_signatures(&bytes, &key, &sigs).unwrap();
        // Then every input is finalised with a key-path witness: the
        // signature alone, with 0x01 appended for SIGHASH_ALL
        assert!(signed.complete);
        let out = Psbt::deserialize(&signed.psbt).unwrap();
        let raw = hex::decode(signed.tx_hex.unwrap()).unwrap();
        let tx: Transaction = bitcoin::consensus::deserialize(&raw).unwrap();
        assert_eq!(tx.compute_txid(), psbt.unsigned_tx.compute_txid());
        for (i, (input, txin)) in out.inputs.iter().zip(&tx.input).enumerate() {
            let w = input.final_script_witness.as_ref().unwrap();
            assert_eq!(w, &txin.witness);
            assert_eq!(w.len(), 1);
            let sig = w.nth(0).unwrap();
            assert_eq!(sig.len(), if hash_type == 1 { 65 } else { 64 });
            if hash_type == 1 {
                assert_eq!(sig[64], 0x01);
            }
            let digest = bip341_by_hand(&tx, &prevouts(&psbt), i, hash_type);
            assert!(k256_verifies(&key, &digest, &sig[..64]), "input {i}");
            assert!(input.tap_key_sig.is_none() && input.tap_internal_key.is_none());
            assert!(input.sighash_type.is_none() && input.witness_utxo.is_some());
        }
        // And a tampered transaction does not verify
        let mut tampered = tx.clone();
        tampered.output[0].value = Amount::from_sat(78_999);
        let digest = bip341_by_hand(&tampered, &prevouts(&psbt), 0, hash_type);
        let sig = tx.input[0].witness.nth(0).unwrap();
        assert!(!k256_verifies(&key, &digest, &sig[..64]));
        // And libbitcoinconsensus 26 (Taproot rules, every spent output)
        // accepts the finalised spends and refuses the tampered copy
        let spent = prevouts(&psbt);
        crate::chain::btc::tests::consensus_verify(&tx, &spent).unwrap();
        let e = crate::chain::btc::tests::consensus_verify(&tampered, &spent).unwrap_err();
        assert!(e.starts_with("input 0"), "{e}");
    }
}

#[test]
fn add_taproot_signatures__should_leave_a_mixed_psbt_open_and_refuse_bad_signatures() {
    let kp = keypair(3);
    let key = output_key(&kp);
    let bytes = mixed(&key).serialize();
    let s = analyse_psbt(&bytes, &key, Network::Bitcoin).unwrap();
    let sigs = sign(&kp, &s);
    // The foreign input is unsigned: the key's signatures go in as
    // tap_key_sig, nothing is finalised
    let signed = add_taproot_signatures(&bytes, &key, &sigs).unwrap();
    assert!(!signed.complete && signed.tx_hex.is_none());
    let out = Psbt::deserialize(&signed.psbt).unwrap();
    assert!(out.inputs[0].tap_key_sig.is_some() && out.inputs[2].tap_key_sig.is_some());
    assert!(out.inputs[0].final_script_witness.is_none());
    // Once the foreign input is finalised by its owner, the PSBT with our
    // kept signatures finalises
    let mut theirs = out.clone();
    theirs.inputs[1].final_script_witness = Some(Witness::from_slice(&[[1u8; 71], [2; 71]]));
    let done = add_taproot_signatures(&theirs.serialize(), &key, &[]).unwrap();
    assert!(done.complete);
    // Refused: a signature that does not verify, for another input's
    // sighash, twice for one input, for a foreign input, out of range
    let mut bad = sigs[0].1;
    bad[10] ^= 1;
    let cases: Vec<(Vec<Sig>, &str)> = vec![
        (vec![(0, bad)], "does not verify"),
        (vec![(0, sigs[1].1)], "does not verify"),
        (vec![sigs[0], sigs[0]], "two signatures for input 0"),
        (vec![(1, sigs[0].1)], "does not spend this key's Taproot"),
        (vec![(3, sigs[0].1)], "the PSBT has 3 inputs"),
    ];
    for (sigs, want) in cases {
        let e = add_taproot_signatures(&bytes, &key, &sigs).unwrap_err();
        assert!(e.to_string().contains(want), "{e} / {want}");
    }
    // A tap_key_sig the PSBT already carries on our input must verify
    let mut forged = mixed(&key);
    forged.inputs[0].tap_key_sig = Some(bitcoin::taproot::Signature {
        signature: bitcoin::secp256k1::schnorr::Signature::from_slice(&bad).unwrap(),
        sighash_type: bitcoin::TapSighashType::Default,
    });
    forged.inputs[1].final_script_witness = Some(Witness::from_slice(&[[1u8; 71]]));
    let e = add_taproot_signatures(&forged.serialize(), &key, &[sigs[1]]).unwrap_err();
    assert!(
        e.to_string().contains("input 0 carries a tap_key_sig"),
        "{e}"
    );
}
