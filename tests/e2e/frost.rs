//! FROST keys through real nodes: Ed25519 and Taproot keygen, a signature
//! through every node checked by an independent verifier (ed25519-dalek
//! strict, rust-bitcoin BIP340), the Taproot addresses as rust-bitcoin
//! derives them, a retry answered with the same signature, fail-over and
//! restart with a party down, the transcript passing the real `tss-audit`,
//! and a request an ECDSA key is needed for refused.

use std::process::Command;
use std::time::{Duration, Instant};

use proto::v1 as pb;
use sha2::Digest;
use tonic::Code;

use crate::harness::{sign_request, step, tss_audit, Cluster};

/// Checks `r` as `scheme`'s signature of SHA-256(`message`) under `key`.
pub(crate) fn assert_frost_valid(scheme: &str, key: &[u8], message: &[u8], r: &pb::SignResponse) {
    let digest: [u8; 32] = sha2::Sha256::digest(message).into();
    assert_eq!(
        r.digest, digest,
        "the node signed the digest of the message"
    );
    assert_eq!(r.scheme, scheme);
    let sig: [u8; 64] = r
        .signature
        .as_slice()
        .try_into()
        .expect("64-byte signature");
    assert_eq!([r.r.as_slice(), r.s.as_slice()].concat(), sig);
    assert!(r.der.is_empty() && r.signature_rsv.is_empty());
    let key: [u8; 32] = key.try_into().expect("32-byte key");
    match scheme {
        "ed25519" => {
            let vk = ed25519_dalek::VerifyingKey::from_bytes(&key).expect("Ed25519 key");
            vk.verify_strict(&digest, &ed25519_dalek::Signature::from_bytes(&sig))
                .expect("ed25519-dalek strict verification");
        }
        "taproot" => {
            use bitcoin::secp256k1::{schnorr, Message, Secp256k1, XOnlyPublicKey};
            let secp = Secp256k1::verification_only();
            secp.verify_schnorr(
                &schnorr::Signature::from_slice(&sig).unwrap(),
                &Message::from_digest(digest),
                &XOnlyPublicKey::from_slice(&key).unwrap(),
            )
            .expect("BIP340 verification by rust-bitcoin");
        }
        other => panic!("unexpected scheme {other}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frost__should_keygen_sign_through_every_node_fail_over_and_pass_tss_audit() {
    let t0 = Instant::now();
    let build = tokio::task::spawn_blocking(tss_audit);
    let mut cluster = Cluster::start().await;
    let tmp = tempfile::tempdir().unwrap();
    for scheme in ["ed25519", "taproot"] {
        let key_id = format!("frost-{scheme}");
        step(
            t0,
            &format!("Given a {scheme} key generated through node 0"),
        );
        let (key, progress) = cluster.keygen_scheme(0, &key_id, scheme).await;
        assert_eq!(key.scheme, scheme);
        assert_eq!(key.public_key.len(), 32);
        assert!(
            !progress.iter().any(|p| p.stage == "aux_info"),
            "a FROST key needs no aux info"
        );
        if scheme == "taproot" {
            // Then its addresses are the P2TR outputs of the x-only key
            let q = bitcoin::secp256k1::XOnlyPublicKey::from_slice(&key.public_key).unwrap();
            let tweaked = bitcoin::key::TweakedPublicKey::dangerous_assume_tweaked(q);
            for (chain, net) in [
                ("bitcoin", bitcoin::Network::Bitcoin),
                ("bitcoin-testnet", bitcoin::Network::Testnet),
            ] {
                let want = bitcoin::Address::p2tr_tweaked(tweaked, net).to_string();
                let got = key.addresses.iter().find(|a| a.chain == chain).unwrap();
                assert_eq!(got.address, want);
            }
        } else {
            assert!(key.addresses.is_empty() && key.eth_address.is_empty());
        }

        step(t0, "When the gateway signs through each node");
        for i in 0..3 {
            let mut gw = cluster.client(i, "gateway").await;
            let message = format!("{scheme} message through node {i}").into_bytes();
            let req = sign_request(&key_id, &message);
            let r = gw.sign(req.clone()).await.expect("sign").into_inner();
            assert_frost_valid(scheme, &key.public_key, &message, &r);
            // And a retry of the same request gets the same signature
            let again = gw.sign(req).await.expect("retry").into_inner();
            assert_eq!(again.signature, r.signature);
        }

        step(t0, "And an Ethereum transaction with the key is refused");
        let mut gw = cluster.client(1, "gateway").await;
        let e = gw
            .sign_ethereum_transaction(pb::SignEthereumTransactionRequest {
                key_id: key_id.clone(),
                unsigned_tx: vec![0xc0],
                chain_id: 1,
                request_id: vec![1; 16],
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
        assert!(e.message().contains("FROST"), "{}", e.message());

        step(t0, "And the transcript exported by node 2 passes tss-audit");
        let file = cluster
            .client(2, "gateway")
            .await
            .export_transcript(pb::ExportTranscriptRequest {
                key_id: key_id.clone(),
            })
            .await
            .expect("export")
            .into_inner()
            .transcript;
        let path = tmp.path().join(format!("{key_id}.transcript"));
        std::fs::write(&path, &file).unwrap();
        let audit = tss_audit();
        let out = Command::new(audit)
            .arg("verify")
            .arg(&path)
            .arg("--parties")
            .arg(cluster.dirs.root.join("parties.toml"))
            .output()
            .expect("run tss-audit");
        let report = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{report}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(report.contains("proofs of knowledge"), "{report}");
    }

    step(t0, "When node 2 is down, node 0 still signs with node 1");
    cluster.kill(2);
    let mut gw = cluster.client(0, "gateway").await;
    let r = tokio::time::timeout(
        Duration::from_secs(60),
        gw.sign(sign_request("frost-taproot", b"with a party down")),
    )
    .await
    .expect("in time")
    .expect("sign")
    .into_inner();
    let key = cluster
        .client(0, "gateway")
        .await
        .get_key(pb::GetKeyRequest {
            key_id: "frost-taproot".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_frost_valid("taproot", &key.public_key, b"with a party down", &r);
    let mut signers = r.signers.clone();
    signers.sort();
    assert_eq!(signers, ["custodian-a", "custodian-b"]);

    step(t0, "And after a restart node 2 signs again");
    cluster.spawn(2);
    cluster.wait_healthy(2).await;
    let mut gw = cluster.client(2, "gateway").await;
    let r = gw
        .sign(sign_request("frost-ed25519", b"after a restart"))
        .await
        .expect("sign")
        .into_inner();
    let key = cluster
        .client(2, "gateway")
        .await
        .get_key(pb::GetKeyRequest {
            key_id: "frost-ed25519".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_frost_valid("ed25519", &key.public_key, b"after a restart", &r);
    cluster.assert_no_panics();
    drop(build);
}
