//! Writes the seed corpora of the fuzz targets (`fuzz/corpus/<target>/`)
//! from real encodings: envelopes and protocol messages of real aux-info,
//! keygen, presigning and signing runs (TEST-ONLY fixture primes), the
//! stored records of their results, a complete keygen transcript, Ethereum
//! transactions, PSBTs, gRPC requests and policy files.
//!
//! Build and run from `fuzz/`: `cargo fuzz build -s none --features seeds
//! seeds && target/x86_64-unknown-linux-gnu/release/seeds` (the aux-info
//! run proves three Paillier keys: several minutes under the coverage
//! instrumentation). `--no-protocols` writes only the seeds that need no
//! protocol run; `--frost-only` also writes the FROST ones (no Paillier
//! work), and stops there. Seeds are
//! named `seed-<what>` so that they survive next to what the fuzzer adds;
//! the identity keys, PSBT key and storage key are fixed, as in
//! `fuzz_targets/common.rs`.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

// The sanitizer-coverage hooks, when built by `cargo fuzz`.
#[cfg(fuzzing)]
extern crate libfuzzer_sys;
use std::sync::{Arc, Mutex};

use alloy_consensus::{SignableTransaction, TxEip1559, TxLegacy};
use alloy_primitives::{Address, Bytes, TxKind, U256};
use bitcoin::absolute::LockTime;
use bitcoin::hashes::Hash;
use bitcoin::transaction::Version;
use bitcoin::{
    Amount, CompressedPublicKey, OutPoint, Psbt, ScriptBuf, Sequence, Transaction, TxIn, TxOut,
    Txid, Witness,
};
use keygen::record::{AuxRecord, KeyParty, KeyRecord};
use keygen::transcript::{
    self as kt, CertParty, CertificateFacts, Entry, KeyCertificate, SignedCertificate,
    TranscriptFile,
};
use prost::Message;
use proto::v1 as pb;
use serde_bytes::ByteBuf;
use tss_core::chain::{self, btc};
use tss_core::ecdsa::{self, aux, keygen as kg, presign, sign, AuxInfo, KeyShare};
use tss_core::envelope::{Envelope, Protocol};
use tss_core::identity::IdentityKey;
use tss_core::secret::SecretBytes;
use tss_core::store::fuzzing;
use tss_core::testing::Net;

#[path = "../fuzz_targets/common.rs"]
mod common;

/// Where the corpora go.
fn corpus_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus")
}

fn write(target: &str, name: &str, bytes: &[u8]) {
    let dir = corpus_dir().join(target);
    std::fs::create_dir_all(&dir).expect("create corpus dir");
    std::fs::write(dir.join(format!("seed-{name}")), bytes).expect("write seed");
}

fn with_tag(tag: u8, b: &[u8]) -> Vec<u8> {
    let mut v = vec![tag];
    v.extend_from_slice(b);
    v
}

fn identity(i: u8) -> IdentityKey {
    IdentityKey::from_secret(&SecretBytes::new(common::identity_secret(i).to_vec()))
        .expect("32-byte secret")
}

/// Results of one full run of every protocol.
struct Runs {
    primes: Vec<u8>,
    aux: Vec<Envelope>,
    keygen: Vec<Envelope>,
    presign: Vec<Envelope>,
    sign: Vec<Envelope>,
    aux_id: [u8; 32],
    keygen_id: [u8; 32],
    auxes: Vec<AuxInfo>,
    shares: Vec<Arc<KeyShare>>,
    presig: Vec<u8>,
}

fn run_protocols(net: &Net) -> Runs {
    let fixture = tss_core::testing::fixture_primes().expect("fixture primes");
    let primes_record = tss_core::primes::encode(&fixture[0]).expose().to_vec();
    let primes = Arc::new(Mutex::new(
        fixture.into_iter().take(3).map(Some).collect::<Vec<_>>(),
    ));

    let t0 = std::time::Instant::now();
    let aux_id = [0xa1; 32];
    let (auxes, aux_envs) = net.run_recorded(Protocol::AuxInfo, aux_id, &[0, 1, 2], move |i, p| {
        let pr = primes.lock().unwrap()[usize::from(i)].take().unwrap();
        async move { aux::run(&aux_id, i, 3, pr, p).await }
    });
    let auxes: Vec<AuxInfo> = auxes.into_iter().map(|r| r.unwrap()).collect();
    eprintln!("aux info: {:?}", t0.elapsed());

    let keygen_id = [0xb2; 32];
    let (shares, kg_envs) = net.run_recorded(Protocol::Keygen, keygen_id, &[0, 1, 2], {
        move |i, p| async move { kg::run(&keygen_id, i, 3, 2, p).await }
    });
    let shares: Vec<Arc<KeyShare>> = shares
        .into_iter()
        .zip(auxes.clone())
        .map(|(s, a)| Arc::new(kg::complete(s.unwrap(), a).unwrap()))
        .collect();
    eprintln!("keygen: {:?}", t0.elapsed());

    let pair = [0u16, 1];
    let sid = tss_core::session::presign_execution_id("k", &pair, &[7; 32]);
    let s2 = shares.clone();
    let (presigs, presign_envs) = net.run_recorded(Protocol::Presign, sid, &[0, 1], move |i, p| {
        let share = s2[usize::from(i)].clone();
        async move { presign::run(&sid, i, &pair, &share, p).await }
    });
    let presig = presigs[0].as_ref().unwrap().encode().expose().to_vec();
    eprintln!("presign: {:?}", t0.elapsed());

    Runs {
        primes: primes_record,
        aux: aux_envs,
        keygen: kg_envs,
        presign: presign_envs,
        sign: Vec::new(),
        aux_id,
        keygen_id,
        auxes,
        shares,
        presig,
    }
}

/// Signs `digest` with the key of `shares` (parties 0 and 1); returns the
/// low-S `r || s` and the signing run's envelopes.
fn threshold_sign(
    net: &Net,
    shares: &[Arc<KeyShare>],
    digest: [u8; 32],
) -> ([u8; 64], Vec<Envelope>) {
    let sid = tss_core::session::sign_execution_id("k", &[0, 1], b"seed", &digest);
    let s2 = shares.to_vec();
    let (sigs, envs) = net.run_recorded(Protocol::Sign, sid, &[0, 1], move |i, p| {
        let share = s2[usize::from(i)].clone();
        async move {
            let data = sign::ToSign::raw_digest(&digest);
            sign::run(&sid, i, &[0, 1], &share, data, p).await
        }
    });
    let mut rs = [0u8; 64];
    sigs.into_iter()
        .next()
        .unwrap()
        .unwrap()
        .write_to_slice(&mut rs);
    let pk = ecdsa::public_key(&shares[0]);
    let fin = chain::finish_signature(&pk, &digest, &rs).expect("threshold signature verifies");
    let mut out = [0u8; 64];
    out[..32].copy_from_slice(&fin.r);
    out[32..].copy_from_slice(&fin.s);
    (out, envs)
}

/// A few envelopes of each kind: the first of each (protocol, sender,
/// broadcast or p2p, round size) so that every message type is present.
fn pick(envs: &[Envelope], max: usize) -> Vec<&Envelope> {
    let mut seen = BTreeSet::new();
    envs.iter()
        .filter(|e| seen.insert((e.sender, e.recipient.is_some(), e.seq)))
        .take(max)
        .collect()
}

fn envelopes_and_payloads(r: &Runs) {
    for (name, envs) in [
        ("aux", &r.aux),
        ("keygen", &r.keygen),
        ("presign", &r.presign),
        ("sign", &r.sign),
    ] {
        for (k, e) in pick(envs, 6).into_iter().enumerate() {
            let to = e.recipient.map_or("all".to_owned(), |x| x.to_string());
            let n = format!("{name}-{k}-from{}-to{to}", e.sender);
            // Aux-info messages are up to ~200 KB: keep two in the envelope
            // corpus, the payload corpus has its own.
            if name != "aux" || k < 2 {
                write("envelope", &n, &e.encode());
            }
            write("envelope", &format!("{n}-hashed"), &e.hashed().encode());
            let tag = match e.protocol {
                Protocol::AuxInfo => 0,
                Protocol::Keygen => 1,
                _ => 2,
            };
            write("peer_payload", &n, &with_tag(tag, &e.payload));
        }
    }
}

fn key_parties() -> Vec<KeyParty> {
    (0..3)
        .map(|i| KeyParty {
            name: format!("p{i}"),
            identity: common::party_id(i).to_hex(),
        })
        .collect()
}

fn cert_parties() -> Vec<CertParty> {
    (0..3u8)
        .map(|i| CertParty {
            name: format!("p{i}"),
            identity: ByteBuf::from(common::party_id(i).0.to_vec()),
            tls_fingerprint: ByteBuf::from(vec![0xf0 + i; 32]),
        })
        .collect()
}

/// Returns the encoded transcript file and entry list.
fn transcript(net: &Net, r: &mut Runs) -> (Vec<u8>, Vec<u8>, Vec<u8>) {
    let recorded = |v: &[Envelope]| kt::merge(v.iter().map(Entry::recorded)).expect("merge");
    let aux = recorded(&r.aux);
    let keygen = recorded(&r.keygen);
    let root = kt::root(aux.iter().chain(keygen.iter()));
    let cert = KeyCertificate::from_facts(CertificateFacts {
        key_id: "k",
        parties: cert_parties(),
        share: &r.shares[0],
        aux_id: r.aux_id,
        keygen_id: r.keygen_id,
        root,
        created_unix: 1_700_000_000,
    });
    let certs: Vec<SignedCertificate> = (0..3u8)
        .map(|i| SignedCertificate::sign(&identity(i), u16::from(i), &cert))
        .collect();
    let (key_sig, sign_envs) =
        threshold_sign(net, &r.shares, kt::certificate_digest(&cert.encode()));
    r.sign = sign_envs;
    let file = TranscriptFile::new(&aux, &keygen, certs, key_sig).encode();
    let report = keygen::verify::verify(&file, &auditor_parties());
    eprintln!("seed transcript verifies: {report:?}");
    (file, cert.encode(), kt::encode_entries(&keygen))
}

fn auditor_parties() -> Vec<keygen::verify::AuditorParty> {
    keygen::verify::parse_parties(&parties_toml()).expect("parties parse")
}

fn parties_toml() -> String {
    let mut text = String::new();
    for i in 0..3u8 {
        text += &format!(
            "[[parties]]\nname = \"p{i}\"\nidentity = \"{}\"\ntls_fingerprint = \"{}\"\n",
            common::party_id(i).to_hex(),
            hex::encode([0xf0 + i; 32]),
        );
    }
    text
}

#[derive(serde::Serialize)]
struct Spent {
    #[serde(with = "serde_bytes")]
    amount: Vec<u8>,
    unix: u64,
}

fn stored_records(r: &Runs) -> Vec<(&'static str, Vec<u8>, Vec<u8>)> {
    let share = ecdsa::encode_share(&r.shares[0]).expose().to_vec();
    let aux_record = AuxRecord {
        aux_id: r.aux_id,
        aux: r.auxes[0].clone(),
    }
    .encode()
    .expose()
    .to_vec();
    let key_record = KeyRecord {
        v: keygen::record::KEY_RECORD_VERSION,
        key_id: "k".into(),
        public_key: hex::encode(ecdsa::public_key(&r.shares[0])),
        threshold: 2,
        parties: key_parties(),
        my_index: 0,
        aux_id: hex::encode(r.aux_id),
        keygen_id: hex::encode(r.keygen_id),
        created_unix: 1_700_000_000,
        scheme: None,
    }
    .encode();
    let body = serde_json::to_vec(&tss_node::policy::audit::AuditBody {
        seq: 0,
        unix_ms: 1_700_000_000_000,
        node: "p0".into(),
        role: "coordinator".into(),
        client: "gw".into(),
        key_id: "k".into(),
        request_id: "00".into(),
        decision: "allow".into(),
        rule: "roles".into(),
        reason: "signer".into(),
        intent: serde_json::json!({"type": "message", "hash": "sha256"}),
    })
    .unwrap();
    let hash = tss_node::policy::audit::entry_hash(&[0; 32], &body);
    let mut audit = Vec::new();
    ciborium::into_writer(
        &tss_node::policy::audit::StoredEntry {
            seq: 0,
            prev: vec![0; 32],
            body,
            hash: hash.to_vec(),
        },
        &mut audit,
    )
    .unwrap();
    let spend = |amount: Vec<u8>| {
        let mut v = Vec::new();
        ciborium::into_writer(
            &Spent {
                amount,
                unix: 1_700_000_000,
            },
            &mut v,
        )
        .unwrap();
        v
    };
    let used = serde_json::to_vec(&tss_node::testing::UsedRecord {
        id: "ab".repeat(32),
        key_id: "k".into(),
        signers: vec![0, 1],
        digest: "cd".repeat(32),
        role: "coordinator".into(),
        at_unix: 1_700_000_000,
    })
    .unwrap();
    vec![
        ("key_share", b"k".to_vec(), share),
        ("aux_info", r.aux_id.to_vec(), aux_record),
        ("presignature", b"k/0/1/id".to_vec(), r.presig.clone()),
        ("primes", b"0".to_vec(), r.primes.clone()),
        ("key_info", b"k".to_vec(), key_record),
        ("audit", 0u64.to_be_bytes().to_vec(), audit),
        (
            "spend",
            b"k\0ethereum:1\0native\0ab".to_vec(),
            spend(vec![0x11; 32]),
        ),
        ("presignature_used", b"k/id".to_vec(), used),
        (
            "node_secret",
            b"identity".to_vec(),
            common::identity_secret(0).to_vec(),
        ),
        // Regression: a spend amount longer than 32 bytes panicked in
        // `U256::from_be_slice`.
        (
            "spend",
            b"k\0ethereum:1\0native\0cd".to_vec(),
            spend(vec![0x11; 33]),
        ),
    ]
}

fn stored_and_sealed(r: &Runs) {
    let selector = |kind: &str| -> u8 {
        match kind {
            "key_share" => 0,
            "aux_info" => 1,
            "presignature" => 2,
            "primes" => 3,
            "key_info" => 4,
            "audit" => 5,
            "spend" => 6,
            "presignature_used" => 7,
            _ => 8,
        }
    };
    for (n, (kind, key, value)) in stored_records(r).into_iter().enumerate() {
        let mut input = vec![selector(kind)];
        if kind == "audit" {
            input.push(0); // the position the entry is read at
        }
        input.extend_from_slice(&value);
        write("stored_record", &format!("{n}-{kind}"), &input);

        let tag_index = common::record_tags()
            .iter()
            .position(|t| *t == kind)
            .unwrap();
        let sealed =
            fuzzing::seal(common::STORAGE_KEY, kind, &key, &value, &[n as u8; 24]).unwrap();
        let mut input = vec![tag_index as u8, key.len() as u8];
        input.extend_from_slice(&key);
        input.extend_from_slice(&sealed);
        write("sealed_record", &format!("{n}-{kind}"), &input);
    }
    let kdf = fuzzing::encode_kdf_record(64 * 1024, 3, 1, [9; 16]);
    let mut input = vec![0, 3];
    input.extend_from_slice(b"kdf");
    input.extend_from_slice(&kdf);
    write("sealed_record", "kdf", &input);
    let check = fuzzing::seal(
        common::STORAGE_KEY,
        "meta",
        b"check",
        b"tss-store check v1",
        &[1; 24],
    )
    .unwrap();
    let mut input = vec![0, 5];
    input.extend_from_slice(b"check");
    input.extend_from_slice(&check);
    write("sealed_record", "check", &input);
}

fn eth_txs() -> Vec<(&'static str, Vec<u8>)> {
    let to = Address::repeat_byte(0x28);
    let token = Address::repeat_byte(0xa0);
    let call = |selector: [u8; 4], words: &[[u8; 32]]| {
        let mut v = selector.to_vec();
        for w in words {
            v.extend_from_slice(w);
        }
        v
    };
    let word_addr = |a: Address| {
        let mut w = [0u8; 32];
        w[12..].copy_from_slice(a.as_slice());
        w
    };
    let amount = U256::from(1_000_000u64).to_be_bytes::<32>();
    let eip1559 = |to: TxKind, input: Vec<u8>| {
        let tx = TxEip1559 {
            chain_id: 1,
            nonce: 7,
            gas_limit: 60_000,
            max_fee_per_gas: 30_000_000_000,
            max_priority_fee_per_gas: 1_000_000_000,
            to,
            value: U256::from(1_000_000_000_000_000u64),
            access_list: Default::default(),
            input: Bytes::from(input),
        };
        let mut out = Vec::new();
        tx.encode_for_signing(&mut out);
        out
    };
    let legacy = |to: TxKind, input: Vec<u8>| {
        let tx = TxLegacy {
            chain_id: Some(5),
            nonce: 3,
            gas_price: 20_000_000_000,
            gas_limit: 21_000,
            to,
            value: U256::from(12345u64),
            input: Bytes::from(input),
        };
        let mut out = Vec::new();
        tx.encode_for_signing(&mut out);
        out
    };
    vec![
        ("eip1559-transfer", eip1559(TxKind::Call(to), vec![])),
        (
            "eip1559-erc20-transfer",
            eip1559(
                TxKind::Call(token),
                call([0xa9, 0x05, 0x9c, 0xbb], &[word_addr(to), amount]),
            ),
        ),
        (
            "eip1559-erc20-approve",
            eip1559(
                TxKind::Call(token),
                call([0x09, 0x5e, 0xa7, 0xb3], &[word_addr(to), amount]),
            ),
        ),
        (
            "eip1559-erc20-transfer-from",
            eip1559(
                TxKind::Call(token),
                call(
                    [0x23, 0xb8, 0x72, 0xdd],
                    &[word_addr(token), word_addr(to), amount],
                ),
            ),
        ),
        (
            "eip1559-create",
            eip1559(TxKind::Create, vec![0x60, 0x80, 0x60, 0x40]),
        ),
        ("legacy-transfer", legacy(TxKind::Call(to), vec![])),
        (
            "legacy-call",
            legacy(TxKind::Call(token), vec![1, 2, 3, 4, 5]),
        ),
    ]
}

fn psbts() -> Vec<(&'static str, Vec<u8>)> {
    let pk = CompressedPublicKey::from_slice(&common::BTC_PUBKEY).unwrap();
    let ours = ScriptBuf::new_p2wpkh(&pk.wpubkey_hash());
    let dest = ScriptBuf::from_bytes(
        btc::script_for_address(
            "bc1qar0srrr7xfkvy5l643lydnw9re59gtzzwf5mdq",
            btc::Network::Bitcoin,
        )
        .unwrap(),
    );
    let foreign = ScriptBuf::from_bytes(vec![0x00, 0x14].into_iter().chain([0x77; 20]).collect());
    let txout = |v: u64, s: &ScriptBuf| TxOut {
        value: Amount::from_sat(v),
        script_pubkey: s.clone(),
    };
    let build = |inputs: &[(u8, TxOut)], outputs: Vec<TxOut>| {
        let tx = Transaction {
            version: Version::TWO,
            lock_time: LockTime::ZERO,
            input: inputs
                .iter()
                .map(|(n, _)| TxIn {
                    previous_output: OutPoint {
                        txid: Txid::from_byte_array([*n; 32]),
                        vout: u32::from(*n),
                    },
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
        psbt.serialize()
    };
    let one = build(
        &[(1, txout(100_000, &ours))],
        vec![txout(60_000, &dest), txout(39_000, &ours)],
    );
    let two = build(
        &[(1, txout(50_000, &ours)), (2, txout(70_000, &foreign))],
        vec![txout(100_000, &dest), txout(19_000, &ours)],
    );
    // One input signed by the key (scalar 1), so `add_signatures` finalises.
    let summary = btc::analyse_psbt(&one, &common::BTC_PUBKEY, btc::Network::Bitcoin).unwrap();
    let sighash = summary.inputs[0].sighash.unwrap();
    let mut secret = [0u8; 32];
    secret[31] = 1;
    let sk = k256::ecdsa::SigningKey::from_slice(&secret).unwrap();
    let (sig, _) = sk.sign_prehash_recoverable(&sighash).unwrap();
    let rs: [u8; 64] = sig.to_bytes().into();
    let fin = chain::finish_signature(&common::BTC_PUBKEY, &sighash, &rs).unwrap();
    let signed = btc::add_signatures(&one, &common::BTC_PUBKEY, &[(0, fin)]).unwrap();
    // A partially signed one (signature in partial_sigs, not finalised).
    let partial_two = btc::add_signatures(&two, &common::BTC_PUBKEY, &[])
        .map(|s| s.psbt)
        .unwrap_or(two.clone());
    vec![
        ("one-input", one),
        ("two-inputs-one-foreign", two),
        ("finalised", signed.psbt),
        ("two-inputs-after-add", partial_two),
    ]
}

fn chain_requests() -> (Vec<(&'static str, Vec<u8>)>, Vec<(&'static str, Vec<u8>)>) {
    let txs = eth_txs();
    let psbts = psbts();
    for (n, tx) in &txs {
        write("eth_tx", n, tx);
    }
    for (n, p) in &psbts {
        write("btc_psbt", &format!("{n}-binary"), &with_tag(0, p));
        let b64 = btc::encode_psbt_base64(p);
        write(
            "btc_psbt",
            &format!("{n}-base64"),
            &with_tag(4, b64.as_bytes()),
        );
    }
    write("btc_psbt", "one-input-litecoin", &with_tag(2, &psbts[0].1));
    (txs, psbts)
}

fn rpc_requests(txs: &[(&'static str, Vec<u8>)], psbts: &[(&'static str, Vec<u8>)]) {
    let mut n = 0;
    let mut put = |tag: u8, name: &str, bytes: Vec<u8>| {
        write(
            "rpc_request",
            &format!("{n:02}-{name}"),
            &with_tag(tag, &bytes),
        );
        n += 1;
    };
    for (hash, msg) in [
        (1, b"hello".to_vec()),
        (2, b"hi".to_vec()),
        (3, b"x".to_vec()),
        (4, vec![7; 32]),
    ] {
        put(
            0,
            "sign",
            pb::SignRequest {
                key_id: "k".into(),
                message: msg,
                hash,
                request_id: b"r1".to_vec(),
                ..Default::default()
            }
            .encode_to_vec(),
        );
    }
    for (name, tx) in txs.iter().take(3) {
        let chain_id = if name.starts_with("legacy") { 5 } else { 1 };
        put(
            1,
            name,
            pb::SignEthereumTransactionRequest {
                key_id: "k".into(),
                unsigned_tx: tx.clone(),
                chain_id,
                request_id: b"r2".to_vec(),
                ..Default::default()
            }
            .encode_to_vec(),
        );
    }
    for (name, p) in psbts.iter().take(2) {
        put(
            2,
            name,
            pb::SignBitcoinPsbtRequest {
                key_id: "k".into(),
                psbt_base64: btc::encode_psbt_base64(p),
                chain: "bitcoin".into(),
                request_id: b"r3".to_vec(),
                ..Default::default()
            }
            .encode_to_vec(),
        );
    }
    put(
        3,
        "keygen",
        pb::KeygenRequest {
            key_id: "btc-hot.1".into(),
            ..Default::default()
        }
        .encode_to_vec(),
    );
    put(
        4,
        "get-key",
        pb::GetKeyRequest { key_id: "k".into() }.encode_to_vec(),
    );
    let proposal = |message: Vec<u8>, payload: Option<pb::SignPayload>, hash: i32| pb::Proposal {
        session_id: vec![1; 32],
        kind: Some(pb::proposal::Kind::Sign(pb::SignProposal {
            key_id: "k".into(),
            signers: vec![0, 1],
            request_id: b"r".to_vec(),
            message,
            hash,
            authorization: Some(pb::ClientAuthorization {
                client_cert_sha256: vec![2; 32],
                expires_unix: 1_800_000_000,
                signature: vec![3; 71],
            }),
            payload,
        })),
    };
    let eth_payload = Some(pb::SignPayload {
        kind: Some(pb::sign_payload::Kind::EthereumChainId(1)),
    });
    let btc_payload = Some(pb::SignPayload {
        kind: Some(pb::sign_payload::Kind::Bitcoin(pb::BitcoinInput {
            chain: "bitcoin".into(),
            input_index: 0,
        })),
    });
    put(
        5,
        "proposal-message",
        proposal(b"hello".to_vec(), None, 1).encode_to_vec(),
    );
    put(
        5,
        "proposal-eth",
        proposal(txs[0].1.clone(), eth_payload.clone(), 2).encode_to_vec(),
    );
    put(
        5,
        "proposal-btc",
        proposal(psbts[0].1.clone(), btc_payload.clone(), 3).encode_to_vec(),
    );
    put(
        6,
        "presign-sign-btc",
        pb::PresignSignRequest {
            key_id: "k".into(),
            signers: vec![0, 1],
            presignature_id: vec![3; 32],
            request_id: b"r".to_vec(),
            message: psbts[1].1.clone(),
            hash: 3,
            authorization: Some(pb::ClientAuthorization {
                client_cert_sha256: vec![2; 32],
                expires_unix: 1_800_000_000,
                signature: vec![3; 71],
            }),
            payload: btc_payload,
        }
        .encode_to_vec(),
    );
    put(
        6,
        "presign-sign-eth",
        pb::PresignSignRequest {
            key_id: "k".into(),
            signers: vec![0, 1],
            presignature_id: vec![3; 32],
            request_id: b"r".to_vec(),
            message: txs[1].1.clone(),
            hash: 2,
            authorization: Some(pb::ClientAuthorization {
                client_cert_sha256: vec![2; 32],
                expires_unix: 1_800_000_000,
                signature: vec![3; 71],
            }),
            payload: eth_payload,
        }
        .encode_to_vec(),
    );
}

/// Requests that carry envelopes, entries and certificates of the runs.
fn rpc_transcript_requests(r: &Runs, entries: &[u8], cert: &[u8]) {
    let put = |tag: u8, name: &str, bytes: Vec<u8>| {
        write("rpc_request", &format!("t-{name}"), &with_tag(tag, &bytes));
    };
    let small = r.keygen.iter().find(|e| e.recipient.is_none()).unwrap();
    put(
        7,
        "deliver",
        pb::EnvelopeBytes {
            envelope: small.encode(),
        }
        .encode_to_vec(),
    );
    put(
        8,
        "entry-list",
        pb::EntryList {
            entries: entries.to_vec(),
        }
        .encode_to_vec(),
    );
    put(
        9,
        "store-transcript",
        pb::StoreTranscriptRequest {
            key_id: "k".into(),
            certificate_body: cert.to_vec(),
            signatures: vec![vec![4; 64]; 3],
            key_signature: vec![5; 64],
        }
        .encode_to_vec(),
    );
}

fn policies() {
    let example = include_str!("../../examples/policy.toml");
    write("policy", "example", example.as_bytes());
    write(
        "policy",
        "signer-raw",
        br#"version = 1

[clients.ops]
roles = ["signer", "trader"]

[[keys]]
key = "*"
chains = ["ethereum:1", "ethereum:5", "litecoin"]
raw_digest = ["ops"]

[[keys.whitelist]]
chain = "ethereum:5"
address = "0x2828282828282828282828282828282828282828"
kind = "contract"
label = "c"

[[keys.limits]]
chain = "ethereum:5"
asset = "0xa0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0"
per_tx = "1_000"
per_24h = "5_000"
"#,
    );
}

/// FROST seeds: envelopes and payloads of a real FROST DKG, two-round
/// signing and a nonce-pool batch for each scheme, and the share and pool
/// entries they leave.
fn frost_seeds(net: &Net) {
    use tss_core::frost::{keygen as fk, pool, sign as fs, Scheme};
    for scheme in [Scheme::Ed25519, Scheme::Taproot] {
        let sid = [21u8; 32];
        let (shares, kg_envs) = net.run_recorded(
            Protocol::FrostKeygen,
            sid,
            &[0, 1, 2],
            move |i, party| async move { fk::run(&sid, scheme, i, 3, 2, party).await },
        );
        let shares: Vec<_> = shares
            .into_iter()
            .map(|s| s.expect("FROST keygen"))
            .collect();
        let pair = [0u16, 2];
        let ss = vec![shares[0].clone(), shares[2].clone()];
        let s2 = ss.clone();
        let (_, sign_envs) =
            net.run_recorded(Protocol::FrostSign, [22u8; 32], &[0, 2], move |i, party| {
                let share = s2[usize::from(i)].clone();
                async move { fs::run(&share, i, &pair, &[7u8; 32], None, party).await }
            });
        let (batches, pool_envs) = net.run_recorded(
            Protocol::FrostPresign,
            [23u8; 32],
            &[0, 2],
            move |i, party| {
                let share = ss[usize::from(i)].clone();
                async move { pool::precommit(&share, i, &pair, 2, party).await }
            },
        );
        for (what, envs, tag) in [
            ("keygen", &kg_envs, 3u8),
            ("sign", &sign_envs, 4),
            ("pool", &pool_envs, 5),
        ] {
            for (k, e) in pick(envs, 6).into_iter().enumerate() {
                let n = format!("frost-{scheme}-{what}-{k}-from{}", e.sender);
                write("envelope", &n, &e.encode());
                write("peer_payload", &n, &with_tag(tag, &e.payload));
            }
        }
        let mut share_seed = vec![9u8];
        share_seed.extend_from_slice(shares[1].encode().expose());
        write(
            "stored_record",
            &format!("frost-{scheme}-share"),
            &share_seed,
        );
        for (k, b) in batches.into_iter().enumerate() {
            let entry = b.expect("FROST pool batch").remove(0);
            let mut seed = vec![10u8];
            seed.extend_from_slice(entry.encode().expose());
            write(
                "stored_record",
                &format!("frost-{scheme}-pool-entry-{k}"),
                &seed,
            );
        }
    }
}

fn main() {
    // Seeds that need no protocol run first.
    let (txs, psbts) = chain_requests();
    rpc_requests(&txs, &psbts);
    policies();
    write(
        "transcript",
        "parties",
        &with_tag(4, parties_toml().as_bytes()),
    );
    if std::env::args().any(|a| a == "--no-protocols") {
        return;
    }
    let net = Net {
        keys: (0..3).map(|i| Arc::new(identity(i))).collect(),
    };
    frost_seeds(&net);
    if std::env::args().any(|a| a == "--frost-only") {
        return;
    }
    let mut runs = run_protocols(&net);
    let (file, cert, entries) = transcript(&net, &mut runs);
    envelopes_and_payloads(&runs);
    write("transcript", "file", &with_tag(0, &file));
    write("transcript", "verify-file", &with_tag(3, &file));
    write("transcript", "certificate", &with_tag(1, &cert));
    write("transcript", "entry-list", &with_tag(2, &entries));
    stored_and_sealed(&runs);
    rpc_transcript_requests(&runs, &entries, &cert);
    eprintln!("seeds written to {}", corpus_dir().display());
}
