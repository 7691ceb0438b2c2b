use super::*;
use crate::chain::finish_signature;
use bitcoin::absolute::LockTime;
use bitcoin::hashes::sha256d;
use bitcoin::psbt::PsbtSighashType;
use bitcoin::transaction::Version;
use bitcoin::{Amount, OutPoint, Sequence, Txid, WitnessProgram, WitnessVersion};
use k256::ecdsa::SigningKey;
use std::collections::BTreeMap;

fn signing_key(n: u8) -> SigningKey {
    let mut k = [0u8; 32];
    k[31] = n;
    SigningKey::from_slice(&k).unwrap()
}

fn pubkey(sk: &SigningKey) -> Vec<u8> {
    sk.verifying_key()
        .to_encoded_point(true)
        .as_bytes()
        .to_vec()
}

/// The key's P2WPKH script, computed with rust-bitcoin only.
fn wpkh(sk: &SigningKey) -> ScriptBuf {
    let pk = CompressedPublicKey::from_slice(&pubkey(sk)).unwrap();
    ScriptBuf::new_p2wpkh(&pk.wpubkey_hash())
}

fn txout(value: u64, script: &ScriptBuf) -> TxOut {
    TxOut {
        value: Amount::from_sat(value),
        script_pubkey: script.clone(),
    }
}

fn fake_outpoint(n: u8, vout: u32) -> OutPoint {
    OutPoint {
        txid: Txid::from_byte_array([n; 32]),
        vout,
    }
}

/// A PSBT spending `inputs` (outpoint, spent output) to `outputs`, with
/// `witness_utxo` set.
fn build(inputs: &[(OutPoint, TxOut)], outputs: Vec<TxOut>) -> Psbt {
    let tx = Transaction {
        version: Version::TWO,
        lock_time: LockTime::ZERO,
        input: inputs
            .iter()
            .map(|(op, _)| TxIn {
                previous_output: *op,
                script_sig: ScriptBuf::new(),
                sequence: Sequence::ENABLE_RBF_NO_LOCKTIME,
                witness: Witness::new(),
            })
            .collect(),
        output: outputs,
    };
    let mut psbt = Psbt::from_unsigned_tx(tx).unwrap();
    for (input, (_, utxo)) in psbt.inputs.iter_mut().zip(inputs) {
        input.witness_utxo = Some(utxo.clone());
    }
    psbt
}

fn destination() -> ScriptBuf {
    ScriptBuf::from_bytes(
        script_for_address(
            "bc1qar0srrr7xfkvy5l643lydnw9re59gtzzwf5mdq",
            Network::Bitcoin,
        )
        .unwrap(),
    )
}

fn sign_inputs(sk: &SigningKey, summary: &PsbtSummary) -> Vec<(usize, EcdsaSignature)> {
    summary
        .inputs
        .iter()
        .enumerate()
        .filter_map(|(i, inp)| inp.sighash.map(|h| (i, h)))
        .map(|(i, h)| {
            let (sig, _) = sk.sign_prehash_recoverable(&h).unwrap();
            let rs: [u8; 64] = sig.to_bytes().into();
            (i, finish_signature(&pubkey(sk), &h, &rs).unwrap())
        })
        .collect()
}

/// Full script verification by libbitcoinconsensus 26 (Bitcoin Core's
/// interpreter, Taproot rules on): every input of `tx` against its spent
/// output (`spent`, in input order, all of them: BIP341 commits to every
/// one); the error names the input.
pub(super) fn consensus_verify(tx: &Transaction, spent: &[TxOut]) -> Result<(), String> {
    // The library reads the spent outputs through these pointers during
    // each call; `spent` outlives them.
    let utxos: Vec<bitcoinconsensus::Utxo> = spent
        .iter()
        .map(|o| bitcoinconsensus::Utxo {
            script_pubkey: o.script_pubkey.as_bytes().as_ptr(),
            script_pubkey_len: o.script_pubkey.len() as u32,
            value: o.value.to_sat() as i64,
        })
        .collect();
    let bytes = bitcoin::consensus::serialize(tx);
    for (i, o) in spent.iter().enumerate() {
        bitcoinconsensus::verify(
            o.script_pubkey.as_bytes(),
            o.value.to_sat(),
            &bytes,
            Some(&utxos),
            i,
        )
        .map_err(|e| format!("input {i}: {e:?}"))?;
    }
    Ok(())
}

fn verify_with_consensus(tx_hex: &str, spent: &[(OutPoint, TxOut)]) -> Transaction {
    let tx: Transaction = bitcoin::consensus::encode::deserialize_hex(tx_hex).unwrap();
    let spent: BTreeMap<OutPoint, TxOut> = spent.iter().cloned().collect();
    let in_order: Vec<TxOut> = tx
        .input
        .iter()
        .map(|i| spent[&i.previous_output].clone())
        .collect();
    consensus_verify(&tx, &in_order).unwrap();
    // The verifier is not vacuous: paying one satoshi more breaks every signature.
    let mut tampered = tx.clone();
    tampered.output[0].value += Amount::from_sat(1);
    assert!(consensus_verify(&tampered, &in_order).is_err());
    tx
}

fn analyse_err(psbt: &[u8], sk: &SigningKey) -> String {
    match analyse_psbt(psbt, &pubkey(sk), Network::Bitcoin) {
        Err(ChainError::Invalid(m)) => m,
        Ok(s) => panic!("analysed: {s:?}"),
        Err(e) => panic!("another error: {e:?}"),
    }
}

#[test]
fn p2wpkh_address__should_match_known_vectors() {
    // Private key 1 (BIP173's P2WPKH example program 751e76e8...).
    let sk = signing_key(1);
    let compressed = pubkey(&sk);
    let uncompressed = sk.verifying_key().to_encoded_point(false);
    let want = [
        (
            Network::Bitcoin,
            "bc1qw508d6qejxtdg4y5r3zarvary0c5xw7kv8f3t4",
        ),
        (
            Network::BitcoinTestnet,
            "tb1qw508d6qejxtdg4y5r3zarvary0c5xw7kxpjzsx",
        ),
        (
            Network::Litecoin,
            "ltc1qw508d6qejxtdg4y5r3zarvary0c5xw7kgmn4n9",
        ),
        (
            Network::LitecoinTestnet,
            "tltc1qw508d6qejxtdg4y5r3zarvary0c5xw7klfsuq0",
        ),
    ];
    for (net, addr) in want {
        assert_eq!(p2wpkh_address(&compressed, net).unwrap(), addr);
        assert_eq!(p2wpkh_address(uncompressed.as_bytes(), net).unwrap(), addr);
    }
    // rust-bitcoin agrees for Bitcoin.
    let pk = CompressedPublicKey::from_slice(&compressed).unwrap();
    assert_eq!(
        bitcoin::Address::p2wpkh(&pk, bitcoin::Network::Bitcoin).to_string(),
        want[0].1
    );
    assert!(p2wpkh_address(&[5; 33], Network::Bitcoin).is_err());
    assert!(p2wpkh_address(&[], Network::Bitcoin).is_err());
}

#[test]
fn address_for_script__should_match_known_base58_vectors() {
    let pkh = ScriptBuf::new_p2pkh(
        &CompressedPublicKey::from_slice(&pubkey(&signing_key(1)))
            .unwrap()
            .pubkey_hash(),
    );
    let want = [
        (Network::Bitcoin, "1BgGZ9tcN4rm9KBzDn7KprQz87SZ26SAMH"),
        (
            Network::BitcoinTestnet,
            "mrCDrCybB6J1vRfbwM5hemdJz73FwDBC8r",
        ),
        (Network::Litecoin, "LVuDpNCSSj6pQ7t9Pv6d6sUkLKoqDEVUnJ"),
        (
            Network::LitecoinTestnet,
            "mrCDrCybB6J1vRfbwM5hemdJz73FwDBC8r",
        ),
    ];
    for (net, addr) in want {
        assert_eq!(address_for_script(pkh.as_bytes(), net).unwrap(), addr);
        assert_eq!(script_for_address(addr, net).unwrap(), pkh.as_bytes());
    }
    // BIP350 P2TR example.
    let tr = script_for_address(
        "bc1p0xlxvlhemja6c4dqv22uapctqupfhlxm9h8z3k2e72q4k9hcz7vqzk5jj0",
        Network::Bitcoin,
    )
    .unwrap();
    assert_eq!(
        hex::encode(&tr),
        "512079be667ef9dcbbac55a06295ce870b07029bfcdb2dce28d959f2815b16f81798"
    );
}

#[test]
fn script_for_address__should_round_trip_on_every_network() {
    let sk = signing_key(3);
    let pk = CompressedPublicKey::from_slice(&pubkey(&sk)).unwrap();
    let scripts = [
        ScriptBuf::new_p2pkh(&pk.pubkey_hash()),
        ScriptBuf::new_p2sh(&wpkh(&sk).script_hash()),
        wpkh(&sk),
        wpkh(&sk).to_p2wsh(),
        ScriptBuf::new_witness_program(
            &WitnessProgram::new(WitnessVersion::V1, &[7u8; 32]).unwrap(),
        ),
    ];
    for net in Network::ALL {
        assert_eq!(net.name().parse::<Network>().unwrap(), net);
        for script in &scripts {
            let addr = address_for_script(script.as_bytes(), net).unwrap();
            assert_eq!(
                script_for_address(&addr, net).unwrap(),
                script.as_bytes(),
                "{net} {addr}"
            );
            // Upper-case bech32 is the same address.
            if script.is_witness_program() {
                let upper = addr.to_ascii_uppercase();
                assert_eq!(script_for_address(&upper, net).unwrap(), script.as_bytes());
            }
        }
    }
    // Non-standard scripts have no address.
    let op_return = ScriptBuf::new_op_return([1u8, 2, 3]);
    assert_eq!(
        address_for_script(op_return.as_bytes(), Network::Bitcoin),
        None
    );
    assert_eq!(address_for_script(&[], Network::Litecoin), None);
    assert!("dogecoin"
        .parse::<Network>()
        .unwrap_err()
        .to_string()
        .contains("litecoin-testnet"));
}

#[test]
fn script_for_address__should_refuse_other_networks() {
    let sk = signing_key(1);
    let bc = p2wpkh_address(&pubkey(&sk), Network::Bitcoin).unwrap();
    let ltc = p2wpkh_address(&pubkey(&sk), Network::Litecoin).unwrap();
    let m = script_for_address(&bc, Network::Litecoin)
        .unwrap_err()
        .to_string();
    assert!(m.contains("ltc1"), "{m}");
    let m = script_for_address(&ltc, Network::Bitcoin)
        .unwrap_err()
        .to_string();
    assert!(m.contains("bc1"), "{m}");
    assert!(script_for_address(&bc, Network::BitcoinTestnet).is_err());
    // Base58: Bitcoin P2PKH on Litecoin, Litecoin P2PKH on Bitcoin.
    let m = script_for_address("1BgGZ9tcN4rm9KBzDn7KprQz87SZ26SAMH", Network::Litecoin)
        .unwrap_err()
        .to_string();
    assert!(m.contains("ltc1, L, M or 3"), "{m}");
    assert!(script_for_address("LVuDpNCSSj6pQ7t9Pv6d6sUkLKoqDEVUnJ", Network::Bitcoin).is_err());
    // Litecoin still accepts P2SH with Bitcoin's version byte 0x05.
    let p2sh = ScriptBuf::new_p2sh(&wpkh(&sk).script_hash());
    let three = address_for_script(p2sh.as_bytes(), Network::Bitcoin).unwrap();
    assert!(three.starts_with('3'));
    assert_eq!(
        script_for_address(&three, Network::Litecoin).unwrap(),
        p2sh.as_bytes()
    );
    assert!(address_for_script(p2sh.as_bytes(), Network::Litecoin)
        .unwrap()
        .starts_with('M'));
}

#[test]
fn script_for_address__should_refuse_malformed_and_unsupported() {
    let good = "bc1qw508d6qejxtdg4y5r3zarvary0c5xw7kv8f3t4";
    // Bad checksum, mixed case, garbage, empty.
    for bad in [
        "bc1qw508d6qejxtdg4y5r3zarvary0c5xw7kv8f3t5",
        "bc1Qw508d6qejxtdg4y5r3zarvary0c5xw7kv8f3t4",
        "1BgGZ9tcN4rm9KBzDn7KprQz87SZ26SAMh",
        "hello",
        "",
    ] {
        assert!(script_for_address(bad, Network::Bitcoin).is_err(), "{bad}");
    }
    assert!(script_for_address(good, Network::Bitcoin).is_ok());
    // Segwit v2 (BIP350 example) is refused.
    let m = script_for_address("bc1zw508d6qejxtdg4y5r3zarvaryvaxxpcs", Network::Bitcoin)
        .unwrap_err()
        .to_string();
    assert!(m.contains("segwit version 2"), "{m}");
}

#[test]
fn psbt_base64__should_round_trip_and_refuse_garbage() {
    let sk = signing_key(1);
    let psbt = build(
        &[(fake_outpoint(1, 0), txout(10_000, &wpkh(&sk)))],
        vec![txout(9_000, &destination())],
    )
    .serialize();
    let b64 = encode_psbt_base64(&psbt);
    assert_eq!(decode_psbt_base64(&b64).unwrap(), psbt);
    assert_eq!(decode_psbt_base64(&format!("{b64}\n")).unwrap(), psbt);
    assert!(decode_psbt_base64("not base64!").is_err());
    assert!(decode_psbt_base64(&encode_psbt_base64(b"hello world")).is_err());
}

#[test]
fn analyse_psbt__should_summarise_one_input_spend() {
    // Given a PSBT spending one of the key's outputs to a destination, with change
    let sk = signing_key(1);
    let ours = wpkh(&sk);
    let spent = [(fake_outpoint(1, 3), txout(100_000, &ours))];
    let psbt = build(
        &spent,
        vec![txout(60_000, &destination()), txout(39_000, &ours)],
    );
    // When it is analysed
    let s = analyse_psbt(&psbt.serialize(), &pubkey(&sk), Network::Bitcoin).unwrap();
    // Then amounts, fee, addresses and the sighash are right
    assert_eq!(s.network, Network::Bitcoin);
    assert_eq!(s.fee, 1_000);
    assert_eq!(s.txid, psbt.unsigned_tx.compute_txid().to_byte_array());
    assert_eq!(s.txid_hex, psbt.unsigned_tx.compute_txid().to_string());
    assert_eq!(s.inputs.len(), 1);
    let input = &s.inputs[0];
    assert_eq!(
        input.outpoint,
        format!("{}:3", Txid::from_byte_array([1; 32]))
    );
    assert_eq!(input.value, 100_000);
    assert!(input.ours);
    let preimage = input.sighash_preimage.as_ref().unwrap();
    assert_eq!(
        sha256d::Hash::hash(preimage).to_byte_array(),
        input.sighash.unwrap()
    );
    // BIP143 preimage: version (4) .. nSequence, outputs hash, locktime, type.
    assert_eq!(preimage.len(), 4 + 32 + 32 + 36 + 26 + 8 + 4 + 32 + 4 + 4);
    assert_eq!(&preimage[preimage.len() - 4..], &[1, 0, 0, 0]);
    assert_eq!(s.outputs[0].value, 60_000);
    assert_eq!(
        s.outputs[0].address.as_deref(),
        Some("bc1qar0srrr7xfkvy5l643lydnw9re59gtzzwf5mdq")
    );
    assert!(!s.outputs[0].to_self);
    assert_eq!(s.outputs[1].value, 39_000);
    assert!(s.outputs[1].to_self);
    assert_eq!(
        s.outputs[1].address.as_deref(),
        Some("bc1qw508d6qejxtdg4y5r3zarvary0c5xw7kv8f3t4")
    );
    // The same PSBT read for Litecoin only changes the addresses.
    let l = analyse_psbt(&psbt.serialize(), &pubkey(&sk), Network::Litecoin).unwrap();
    assert_eq!(l.inputs, s.inputs);
    assert!(l.outputs[1].address.as_deref().unwrap().starts_with("ltc1"));
}

#[test]
fn add_signatures__should_finalise_a_spend_that_passes_script_verification() {
    let sk = signing_key(1);
    let ours = wpkh(&sk);
    for n in [1u8, 2] {
        // Given a PSBT spending n of the key's outputs
        let spent: Vec<_> = (0..n)
            .map(|i| {
                (
                    fake_outpoint(10 + i, u32::from(i)),
                    txout(50_000 + u64::from(i), &ours),
                )
            })
            .collect();
        let total: u64 = spent.iter().map(|(_, o)| o.value.to_sat()).sum();
        let mut psbt = build(
            &spent,
            vec![
                txout(30_000, &destination()),
                txout(total - 30_000 - 500, &ours),
            ],
        );
        // with some metadata the finalizer must clear
        psbt.inputs[0].sighash_type = Some(PsbtSighashType::from(EcdsaSighashType::All));
        let bytes = psbt.serialize();
        let s = analyse_psbt(&bytes, &pubkey(&sk), Network::Bitcoin).unwrap();
        assert_eq!(s.fee, 500);
        assert!(s.inputs.iter().all(|i| i.ours && i.sighash.is_some()));

        // When every sighash is signed and the signatures added
        let sigs = sign_inputs(&sk, &s);
        let out = add_signatures(&bytes, &pubkey(&sk), &sigs).unwrap();

        // Then the PSBT is complete and the transaction passes libbitcoinconsensus
        assert!(out.complete);
        assert_eq!(out.psbt_base64, encode_psbt_base64(&out.psbt));
        let tx = verify_with_consensus(out.tx_hex.as_deref().unwrap(), &spent);
        assert_eq!(tx.compute_txid().to_byte_array(), s.txid);
        let back = Psbt::deserialize(&out.psbt).unwrap();
        for input in &back.inputs {
            assert!(input.partial_sigs.is_empty());
            assert!(input.sighash_type.is_none());
            let w = input.final_script_witness.as_ref().unwrap();
            assert_eq!(w.len(), 2);
            assert_eq!(w.nth(0).unwrap().last(), Some(&1u8), "DER || SIGHASH_ALL");
            assert_eq!(w.nth(1).unwrap(), pubkey(&sk).as_slice());
            assert!(input.witness_utxo.is_some());
        }
    }
}

#[test]
fn add_signatures__should_leave_foreign_inputs_to_their_owner() {
    // Given a PSBT with one input of ours and one of another key
    let sk = signing_key(1);
    let other = signing_key(2);
    let spent = [
        (fake_outpoint(1, 0), txout(40_000, &wpkh(&sk))),
        (fake_outpoint(2, 1), txout(70_000, &wpkh(&other))),
    ];
    let psbt = build(&spent, vec![txout(109_000, &destination())]);
    let bytes = psbt.serialize();
    let s = analyse_psbt(&bytes, &pubkey(&sk), Network::Bitcoin).unwrap();
    assert!(s.inputs[0].ours && !s.inputs[1].ours);
    assert!(s.inputs[1].sighash.is_none() && s.inputs[1].sighash_preimage.is_none());
    assert_eq!(s.fee, 1_000);

    // When we sign ours: not complete, our signature sits in partial_sigs
    let out = add_signatures(&bytes, &pubkey(&sk), &sign_inputs(&sk, &s)).unwrap();
    assert!(!out.complete);
    assert_eq!(out.tx_hex, None);
    let mut psbt = Psbt::deserialize(&out.psbt).unwrap();
    let our_pk = bitcoin::PublicKey::from_slice(&pubkey(&sk)).unwrap();
    let sig = psbt.inputs[0].partial_sigs[&our_pk];
    assert_eq!(sig.sighash_type, EcdsaSighashType::All);
    assert!(psbt.inputs[0].final_script_witness.is_none());
    // Signing input 1 is refused: it is not ours.
    let m = add_signatures(
        &bytes,
        &pubkey(&sk),
        &[(1, sign_inputs(&sk, &s)[0].1.clone())],
    )
    .unwrap_err()
    .to_string();
    assert!(m.contains("does not spend this key's"), "{m}");

    // When the other party finalises its input (with rust-bitcoin's sighash)
    let h = SighashCache::new(&psbt.unsigned_tx)
        .p2wpkh_signature_hash(
            1,
            &wpkh(&other),
            Amount::from_sat(70_000),
            EcdsaSighashType::All,
        )
        .unwrap()
        .to_byte_array();
    let (k, _) = other.sign_prehash_recoverable(&h).unwrap();
    let k = k.normalize_s().unwrap_or(k);
    let other_sig = ecdsa::Signature::sighash_all(
        bitcoin::secp256k1::ecdsa::Signature::from_compact(&k.to_bytes()).unwrap(),
    );
    let other_pk = CompressedPublicKey::from_slice(&pubkey(&other)).unwrap();
    psbt.inputs[1].final_script_witness = Some(Witness::p2wpkh(&other_sig, &other_pk.0));

    // Then adding nothing more completes it, and it verifies
    let out = add_signatures(&psbt.serialize(), &pubkey(&sk), &[]).unwrap();
    assert!(out.complete);
    verify_with_consensus(out.tx_hex.as_deref().unwrap(), &spent);
}

#[test]
fn psbt_summary__should_tell_split_claims_of_one_transaction_apart() {
    // Given one transaction spending two outputs of the key, and two
    // PSBTs of it that each call only one of them the key's (the other
    // one's witness_utxo names a stranger's script)
    let sk = signing_key(1);
    let stranger = wpkh(&signing_key(2));
    let spent = [
        (fake_outpoint(1, 0), txout(50_000, &wpkh(&sk))),
        (fake_outpoint(2, 0), txout(50_000, &wpkh(&sk))),
    ];
    let outputs = vec![txout(90_000, &destination()), txout(9_000, &wpkh(&sk))];
    let honest = build(&spent, outputs.clone());
    let mut first = honest.clone();
    first.inputs[1].witness_utxo = Some(txout(50_000, &stranger));
    let mut second = honest.clone();
    second.inputs[0].witness_utxo = Some(txout(50_000, &stranger));
    let analyse = |p: &Psbt| analyse_psbt(&p.serialize(), &pubkey(&sk), Network::Bitcoin);
    let (h, a, b) = (
        analyse(&honest).unwrap(),
        analyse(&first).unwrap(),
        analyse(&second).unwrap(),
    );

    // Then they share the txid but not the claims
    assert_eq!((a.txid, b.txid), (h.txid, h.txid));
    let hashes: BTreeSet<[u8; 32]> = [&h, &a, &b].iter().map(|s| s.claims_hash()).collect();
    assert_eq!(hashes.len(), 3);
    assert_eq!(h.claims_hash(), analyse(&honest).unwrap().claims_hash());
    // And the key's own spend looks halved in each split PSBT, while the
    // payments (outputs to others plus fee) are the same in all three
    assert_eq!(h.key_spend(), 91_000);
    assert_eq!((a.key_spend(), b.key_spend()), (41_000, 41_000));
    assert_eq!(
        (h.payments(), a.payments(), b.payments()),
        (91_000, 91_000, 91_000)
    );
    assert_eq!(h.returned(), 9_000);
    // And one signature from each split PSBT makes a valid transaction:
    // each signature commits only to its own input's amount, which is
    // why the node binds a txid to the claims it first judged it on
    let s0 = sign_inputs(&sk, &a);
    let s1 = sign_inputs(&sk, &b);
    assert_eq!((s0[0].0, s1[0].0), (0, 1));
    let sigs = [s0[0].clone(), s1[0].clone()];
    let out = add_signatures(&honest.serialize(), &pubkey(&sk), &sigs).unwrap();
    assert!(out.complete);
    verify_with_consensus(out.tx_hex.as_deref().unwrap(), &spent);
}

#[test]
fn add_signatures__should_refuse_bad_signatures_and_indices() {
    let sk = signing_key(1);
    let spent = [(fake_outpoint(1, 0), txout(40_000, &wpkh(&sk)))];
    let bytes = build(&spent, vec![txout(39_000, &destination())]).serialize();
    let s = analyse_psbt(&bytes, &pubkey(&sk), Network::Bitcoin).unwrap();
    let good = sign_inputs(&sk, &s).remove(0).1;
    let pk = pubkey(&sk);

    // Out of range, twice, wrong digest, wrong key.
    assert!(add_signatures(&bytes, &pk, &[(1, good.clone())]).is_err());
    assert!(add_signatures(&bytes, &pk, &[(0, good.clone()), (0, good.clone())]).is_err());
    let (other, _) = sk.sign_prehash_recoverable(&[5u8; 32]).unwrap();
    let rs: [u8; 64] = other.to_bytes().into();
    let wrong = finish_signature(&pk, &[5u8; 32], &rs).unwrap();
    let m = add_signatures(&bytes, &pk, &[(0, wrong)])
        .unwrap_err()
        .to_string();
    assert!(m.contains("does not verify"), "{m}");
    assert!(add_signatures(&bytes, &pubkey(&signing_key(2)), &[(0, good.clone())]).is_err());
    // A high-S signature is refused.
    let k = k256::ecdsa::Signature::from_scalars(good.r, good.s).unwrap();
    let high = k256::ecdsa::Signature::from_scalars(k.r(), -*k.s()).unwrap();
    let mut hs = good.clone();
    hs.s.copy_from_slice(&high.to_bytes()[32..]);
    assert!(add_signatures(&bytes, &pk, &[(0, hs)]).is_err());
    // Finalised inputs cannot be signed again.
    let done = add_signatures(&bytes, &pk, &[(0, good.clone())]).unwrap();
    assert!(done.complete);
    let m = add_signatures(&done.psbt, &pk, &[(0, good)])
        .unwrap_err()
        .to_string();
    assert!(m.contains("already finalised"), "{m}");
}

#[test]
fn analyse_psbt__should_check_non_witness_utxo() {
    let sk = signing_key(1);
    let ours = wpkh(&sk);
    let prev = Transaction {
        version: Version::TWO,
        lock_time: LockTime::ZERO,
        input: vec![TxIn {
            previous_output: fake_outpoint(9, 0),
            script_sig: ScriptBuf::new(),
            sequence: Sequence::MAX,
            witness: Witness::new(),
        }],
        output: vec![txout(1, &destination()), txout(80_000, &ours)],
    };
    let outpoint = OutPoint {
        txid: prev.compute_txid(),
        vout: 1,
    };
    let mut psbt = build(
        &[(outpoint, txout(80_000, &ours))],
        vec![txout(79_000, &destination())],
    );
    psbt.inputs[0].witness_utxo = None;
    psbt.inputs[0].non_witness_utxo = Some(prev.clone());
    // A matching full previous transaction gives the amount.
    let s = analyse_psbt(&psbt.serialize(), &pubkey(&sk), Network::Bitcoin).unwrap();
    assert_eq!(s.inputs[0].value, 80_000);
    assert_eq!(s.fee, 1_000);
    assert!(s.inputs[0].ours);

    // A witness_utxo that disagrees with it is refused.
    let mut lying = psbt.clone();
    lying.inputs[0].witness_utxo = Some(txout(90_000, &ours));
    assert!(analyse_err(&lying.serialize(), &sk).contains("disagrees"));

    // Another transaction than the one spent is refused.
    let mut other = prev.clone();
    other.lock_time = LockTime::from_consensus(1);
    psbt.inputs[0].non_witness_utxo = Some(other);
    let m = analyse_err(&psbt.serialize(), &sk);
    assert!(m.contains("non_witness_utxo is transaction"), "{m}");
}

#[test]
fn analyse_psbt__should_refuse_what_it_cannot_account_for() {
    let sk = signing_key(1);
    let ours = wpkh(&sk);
    let dest = destination();
    let one = |v: u64| [(fake_outpoint(1, 0), txout(v, &ours))];

    // Not a PSBT at all, or with trailing bytes.
    assert!(analyse_err(b"hello", &sk).contains("not a valid PSBT"));
    assert!(analyse_err(&[], &sk).contains("not a valid PSBT"));
    let mut long = build(&one(10_000), vec![txout(9_000, &dest)]).serialize();
    long.push(0);
    assert!(analyse_err(&long, &sk).contains("1 trailing bytes"));

    // No UTXO information on input 1.
    let mut psbt = build(
        &[
            one(10_000)[0].clone(),
            (fake_outpoint(2, 0), txout(5_000, &dest)),
        ],
        vec![txout(9_000, &dest)],
    );
    psbt.inputs[1].witness_utxo = None;
    assert_eq!(
        analyse_err(&psbt.serialize(), &sk),
        "input 1 has no witness_utxo: the node must know the amount it signs for (BIP143)"
    );

    // Our input asks for SIGHASH_NONE.
    let mut psbt = build(&one(10_000), vec![txout(9_000, &dest)]);
    psbt.inputs[0].sighash_type = Some(PsbtSighashType::from(EcdsaSighashType::None));
    assert!(analyse_err(&psbt.serialize(), &sk).contains("SIGHASH_ALL only"));
    // (A foreign input may ask for anything: it is not ours to sign.)

    // No input is ours.
    let psbt = build(
        &[(fake_outpoint(1, 0), txout(10_000, &dest))],
        vec![txout(9_000, &dest)],
    );
    assert_eq!(
        analyse_err(&psbt.serialize(), &sk),
        "no input spends this key's P2WPKH output"
    );

    // Outputs above inputs.
    let psbt = build(&one(10_000), vec![txout(10_001, &dest)]);
    assert!(analyse_err(&psbt.serialize(), &sk).contains("spends more than it has"));

    // Amounts beyond the money supply (so no sum can overflow).
    let psbt = build(&one(u64::MAX), vec![txout(1, &dest)]);
    assert!(analyse_err(&psbt.serialize(), &sk).contains("money supply"));
    let psbt = build(
        &one(10_000),
        vec![txout(u64::MAX / 2, &dest), txout(u64::MAX / 2, &dest)],
    );
    assert!(analyse_err(&psbt.serialize(), &sk).contains("money supply"));

    // The same outpoint twice.
    let psbt = build(
        &[one(10_000)[0].clone(), one(10_000)[0].clone()],
        vec![txout(9_000, &dest)],
    );
    assert!(analyse_err(&psbt.serialize(), &sk).contains("a second time"));

    // Too many inputs.
    let many: Vec<_> = (0..=MAX_INPUTS as u32)
        .map(|i| (fake_outpoint(1, i), txout(1_000, &ours)))
        .collect();
    let psbt = build(&many, vec![txout(1_000, &dest)]);
    assert!(analyse_err(&psbt.serialize(), &sk).contains("1001 inputs"));

    // No outputs.
    let psbt = build(&one(10_000), vec![]);
    assert!(analyse_err(&psbt.serialize(), &sk).contains("no outputs"));

    // Not a key.
    let psbt = build(&one(10_000), vec![txout(9_000, &dest)]).serialize();
    assert!(analyse_psbt(&psbt, &[0u8; 33], Network::Bitcoin).is_err());
}

#[test]
fn analyse_psbt__should_not_panic_on_garbage() {
    use rand::{Rng, SeedableRng};
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(11);
    let sk = signing_key(1);
    let spent = [
        (fake_outpoint(1, 0), txout(40_000, &wpkh(&sk))),
        (fake_outpoint(2, 1), txout(70_000, &destination())),
    ];
    let good = build(&spent, vec![txout(100_000, &destination())]).serialize();
    for _ in 0..3000 {
        let mut b = good.clone();
        for _ in 0..rng.gen_range(1..4) {
            let at = rng.gen_range(0..b.len());
            b[at] = rng.gen();
        }
        let _ = analyse_psbt(&b, &pubkey(&sk), Network::Litecoin);
        let _ = add_signatures(&b, &pubkey(&sk), &[]);
    }
}
