//! SignBitcoinPsbt on a FROST Taproot key through real nodes: two P2TR
//! key-path inputs of the key with change back to it and a whitelisted
//! payment, signed, finalised, extracted and checked outside the node
//! (BIP341 sighash from the funding transactions and k256's BIP340
//! verification of every witness; libbitcoinconsensus 26 with the Taproot
//! rules and every spent output; a tampered copy that fails both); SIGHASH_NONE
//! refused; a destination the co-signers' own policies do not whitelist
//! refused by them; an Ed25519 key refused for PSBTs.

use std::time::Instant;

use bitcoin::hashes::Hash;
use bitcoin::sighash::{Prevouts, SighashCache};
use proto::v1 as pb;
use tonic::Code;

use crate::harness::{step, Cluster};

/// `OP_1 <x-only output key>`.
fn p2tr(key: &[u8]) -> bitcoin::ScriptBuf {
    let q = bitcoin::secp256k1::XOnlyPublicKey::from_slice(key).expect("x-only key");
    bitcoin::ScriptBuf::new_p2tr_tweaked(bitcoin::key::TweakedPublicKey::dangerous_assume_tweaked(
        q,
    ))
}

fn p2wpkh_of(byte: u8) -> bitcoin::ScriptBuf {
    bitcoin::ScriptBuf::new_p2wpkh(&bitcoin::WPubkeyHash::from_byte_array([byte; 20]))
}

fn testnet_address(script: &bitcoin::Script) -> String {
    bitcoin::Address::from_script(script, bitcoin::Network::Testnet)
        .unwrap()
        .to_string()
}

/// A previous transaction paying `value` to `script`.
fn funding(script: &bitcoin::ScriptBuf, value: u64, salt: u8) -> bitcoin::Transaction {
    bitcoin::Transaction {
        version: bitcoin::transaction::Version::TWO,
        lock_time: bitcoin::absolute::LockTime::ZERO,
        input: vec![bitcoin::TxIn {
            previous_output: bitcoin::OutPoint::new(bitcoin::Txid::from_byte_array([salt; 32]), 0),
            ..Default::default()
        }],
        output: vec![bitcoin::TxOut {
            value: bitcoin::Amount::from_sat(value),
            script_pubkey: script.clone(),
        }],
    }
}

/// A PSBT spending output 0 of each of `prev` to `outputs`, every input
/// asking for sighash type `sighash` (None: the field is absent).
fn psbt(
    prev: &[&bitcoin::Transaction],
    outputs: Vec<(bitcoin::ScriptBuf, u64)>,
    sighash: Option<u32>,
) -> String {
    let tx = bitcoin::Transaction {
        version: bitcoin::transaction::Version::TWO,
        lock_time: bitcoin::absolute::LockTime::ZERO,
        input: prev
            .iter()
            .map(|p| bitcoin::TxIn {
                previous_output: bitcoin::OutPoint::new(p.compute_txid(), 0),
                sequence: bitcoin::Sequence::ENABLE_RBF_NO_LOCKTIME,
                ..Default::default()
            })
            .collect(),
        output: outputs
            .into_iter()
            .map(|(script_pubkey, v)| bitcoin::TxOut {
                value: bitcoin::Amount::from_sat(v),
                script_pubkey,
            })
            .collect(),
    };
    let mut p = bitcoin::psbt::Psbt::from_unsigned_tx(tx).unwrap();
    for (i, prev) in prev.iter().enumerate() {
        p.inputs[i].witness_utxo = Some(prev.output[0].clone());
        p.inputs[i].sighash_type = sighash.map(bitcoin::psbt::PsbtSighashType::from_u32);
    }
    tss_core::chain::btc::encode_psbt_base64(&p.serialize())
}

async fn sign_psbt(
    cluster: &Cluster,
    via: usize,
    key_id: &str,
    psbt_base64: String,
) -> Result<pb::SignBitcoinPsbtResponse, tonic::Status> {
    let mut c = cluster.client(via, "gateway").await;
    c.sign_bitcoin_psbt(pb::SignBitcoinPsbtRequest {
        key_id: key_id.into(),
        psbt_base64,
        chain: "bitcoin-testnet".into(),
        request_id: rand::random::<[u8; 16]>().to_vec(),
        ..Default::default()
    })
    .await
    .map(|r| r.into_inner())
}

/// Whether every input of `tx` spends `prev` by a key-path witness that
/// k256 verifies under `key` for the BIP341 sighash computed here from the
/// funding transactions (`Prevouts::All`).
fn key_path_spends_verify(
    tx: &bitcoin::Transaction,
    prev: &[&bitcoin::Transaction],
    key: &[u8],
) -> bool {
    let spent = crate::btc_consensus::spent_outputs(tx, prev).expect("a funding transaction");
    let mut cache = SighashCache::new(tx);
    (0..tx.input.len()).all(|i| {
        let w = &tx.input[i].witness;
        let Some(sig) = w.nth(0).filter(|_| w.len() == 1) else {
            return false;
        };
        let ty = match sig.len() {
            64 => bitcoin::TapSighashType::Default,
            65 if sig[64] == 0x01 => bitcoin::TapSighashType::All,
            _ => return false,
        };
        let digest = cache
            .taproot_key_spend_signature_hash(i, &Prevouts::All(&spent), ty)
            .expect("sighash")
            .to_byte_array();
        let sig: [u8; 64] = sig[..64].try_into().unwrap();
        keygen::transcript::frost_signature_ok(tss_core::frost::Scheme::Taproot, key, &digest, &sig)
            == Ok(true)
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn taproot_psbt__should_sign_key_path_inputs_under_each_nodes_policy() {
    let t0 = Instant::now();
    let dest = p2wpkh_of(7);
    // Whitelisted at node 0 only: its co-signers must refuse it themselves.
    let only_a = p2wpkh_of(8);
    let (dest_addr, only_a_addr) = (testnet_address(&dest), testnet_address(&only_a));
    let cluster = Cluster::start_with(|i, cfg| {
        cfg.presign.target = 0;
        let mut dests = vec![dest_addr.clone()];
        if i == 0 {
            dests.push(only_a_addr.clone());
        }
        let path = cfg.policy.as_ref().expect("demo clusters have a policy");
        std::fs::write(path, crate::policy::policy(&[], &dests)).expect("policy");
    })
    .await;

    step(t0, "Given a Taproot key and two of its P2TR outputs");
    let (key, _) = cluster.keygen_scheme(1, "tap", "taproot").await;
    let ours = p2tr(&key.public_key);
    let tb1p = key
        .addresses
        .iter()
        .find(|a| a.chain == "bitcoin-testnet")
        .expect("a testnet address");
    assert_eq!(tb1p.address, testnet_address(&ours));
    let f1 = funding(&ours, 60_000, 1);
    let f2 = funding(&ours, 40_000, 2);

    for (via, sighash, salt) in [(0, None, 3u8), (2, Some(1), 4)] {
        step(
            t0,
            &format!("When node {via} signs a payment with change (sighash {sighash:?})"),
        );
        // A distinct pair of outputs each round (each spend is new).
        let f1 = funding(&ours, 60_000, salt);
        let f2 = funding(&ours, 40_000, salt + 10);
        let outs = vec![(dest.clone(), 70_000), (ours.clone(), 29_000)];
        let r = sign_psbt(&cluster, via, "tap", psbt(&[&f1, &f2], outs, sighash))
            .await
            .expect("signed");
        // Then both inputs are signed by the key's scheme and finalised
        assert_eq!(r.signed_inputs, vec![0, 1]);
        assert!(r.complete);
        for s in &r.signatures {
            assert_eq!(s.scheme, "taproot");
            assert_eq!(s.signature.len(), 64);
        }
        let raw = hex::decode(&r.tx_hex).unwrap();
        let tx: bitcoin::Transaction = bitcoin::consensus::deserialize(&raw).unwrap();
        assert_eq!(tx.compute_txid().to_string(), r.txid);
        let want_len = if sighash == Some(1) { 65 } else { 64 };
        assert!(tx
            .input
            .iter()
            .all(|i| i.witness.nth(0).unwrap().len() == want_len));
        // And the spends verify outside the node; a tampered copy does not
        assert!(key_path_spends_verify(&tx, &[&f1, &f2], &key.public_key));
        let mut tampered = tx.clone();
        tampered.output[0].value += bitcoin::Amount::from_sat(1);
        assert!(!key_path_spends_verify(
            &tampered,
            &[&f1, &f2],
            &key.public_key
        ));
        // And libbitcoinconsensus 26 (Taproot rules, every spent output)
        // accepts the spends and refuses the tampered copy
        crate::btc_consensus::verify(&tx, &[&f1, &f2]).expect("passes libbitcoinconsensus");
        let e = crate::btc_consensus::verify(&tampered, &[&f1, &f2]).expect_err("tampered");
        assert!(e.contains("input 0"), "{e}");
    }

    step(t0, "When a PSBT asks for SIGHASH_NONE, then it is refused");
    let outs = vec![(dest.clone(), 70_000), (ours.clone(), 29_000)];
    let e = sign_psbt(&cluster, 1, "tap", psbt(&[&f1, &f2], outs, Some(2)))
        .await
        .expect_err("SIGHASH_NONE");
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
    assert!(
        e.message().contains("input 0") && e.message().contains("SIGHASH_DEFAULT"),
        "{}",
        e.message()
    );

    step(
        t0,
        "When node 0 alone whitelists the destination, then its co-signers refuse",
    );
    let outs = vec![(only_a.clone(), 70_000), (ours.clone(), 29_000)];
    let e = sign_psbt(&cluster, 0, "tap", psbt(&[&f1, &f2], outs, None))
        .await
        .expect_err("not whitelisted at the co-signers");
    assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");
    assert!(
        e.message().contains("every co-signer refused") && e.message().contains("rule whitelist"),
        "{}",
        e.message()
    );
    // And a co-signer asked directly refuses it by its own policy too
    let outs = vec![(only_a.clone(), 70_000), (ours.clone(), 29_000)];
    let e = sign_psbt(&cluster, 1, "tap", psbt(&[&f1, &f2], outs, None))
        .await
        .expect_err("not whitelisted at node 1");
    assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");

    step(t0, "And an Ed25519 key is refused for PSBTs");
    cluster.keygen_scheme(2, "ed", "ed25519").await;
    let outs = vec![(dest.clone(), 70_000), (ours.clone(), 29_000)];
    let e = sign_psbt(&cluster, 0, "ed", psbt(&[&f1, &f2], outs, None))
        .await
        .expect_err("Ed25519 key");
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
    assert!(e.message().contains("FROST ed25519"), "{}", e.message());
}
