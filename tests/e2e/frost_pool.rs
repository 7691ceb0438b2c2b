//! FROST nonce pools through real nodes: one-round signing from pooled
//! nonces for both schemes (also raw digests), each nonce consumed once by
//! both parties of its pair, and a co-signer killed right after consuming
//! one: the request completes with the other co-signer and the nonce is
//! never used again.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use proto::v1 as pb;
use sha2::Digest;

use crate::frost::assert_frost_valid;
use crate::harness::{
    edit_config, presignature_audit as audit, ready, sign_request, step, used, wait_pool, Cluster,
};

const NAMES: [&str; 3] = tss_node::cluster::NAMES;

/// Every pair of node `i`, by names.
fn pairs_of(i: usize) -> Vec<[&'static str; 2]> {
    (0..3)
        .filter(|&j| j != i)
        .map(|j| [NAMES[i], NAMES[j]])
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn frost_pool__should_sign_in_one_round_and_use_each_nonce_once() {
    let t0 = Instant::now();
    // Given pools of 6 nonces per FROST key and pair, and a gateway allowed raw digests
    let mut cluster = Cluster::start_with(|_, cfg| {
        cfg.presign.target = 0;
        cfg.presign.frost_target = 6;
        cfg.presign.idle_priority = false;
        let policy = cfg.policy.as_ref().expect("demo clusters have a policy");
        std::fs::write(policy, tss_node::cluster::demo_policy(&["gateway"])).expect("write policy");
    })
    .await;
    let mut signed = Vec::new();
    for scheme in ["ed25519", "taproot"] {
        let key_id = format!("pool-{scheme}");
        let (key, _) = cluster.keygen_scheme(0, &key_id, scheme).await;
        for i in 0..3 {
            wait_pool(&cluster, i, &key_id, &pairs_of(i), 6).await;
        }
        step(t0, &format!("{scheme}: pools ready"));
        // When the gateway signs through every node, one request at a time
        let mut ids = HashSet::new();
        for n in 0..9 {
            let i = n % 3;
            let message = format!("{scheme} pooled message {n}").into_bytes();
            let r = cluster
                .client(i, "gateway")
                .await
                .sign(sign_request(&key_id, &message))
                .await
                .expect("sign")
                .into_inner();
            // Then each is answered from the pool, valid, with its own nonce
            assert_frost_valid(scheme, &key.public_key, &message, &r);
            assert_eq!(r.path, "pool", "request {n} via node {i}");
            assert!(ids.insert(r.presignature_id.clone()), "a nonce used twice");
            signed.push((hex::encode(&r.presignature_id), hex::encode(&r.digest)));
        }
        // And hash NONE is signed from the pool too: an Ed25519 key signs
        // the message bytes as given, of any length (Ed25519 hashes them
        // itself); a Taproot key signs a 32-byte digest (a BIP341 sighash)
        let raw: Vec<u8> = match scheme {
            "ed25519" => (0..100u8).collect(),
            _ => sha2::Sha256::digest(format!("{scheme} raw")).to_vec(),
        };
        let req = pb::SignRequest {
            key_id: key_id.clone(),
            message: raw.clone(),
            hash: pb::HashAlgorithm::None as i32,
            request_id: rand::random::<[u8; 16]>().to_vec(),
            ..Default::default()
        };
        let mut gw = cluster.client(1, "gateway").await;
        let r = gw.sign(req.clone()).await.expect("raw sign").into_inner();
        assert_eq!(r.path, "pool");
        assert!(ids.insert(r.presignature_id.clone()));
        let sig: [u8; 64] = r.signature.as_slice().try_into().unwrap();
        if scheme == "ed25519" {
            assert_eq!(
                r.digest,
                sha2::Sha256::digest(&raw).to_vec(),
                "the request's digest"
            );
            let pk: [u8; 32] = key.public_key.as_slice().try_into().unwrap();
            ed25519_dalek::VerifyingKey::from_bytes(&pk)
                .unwrap()
                .verify_strict(&raw, &ed25519_dalek::Signature::from_bytes(&sig))
                .expect("ed25519-dalek strict verification of the message bytes");
        } else {
            assert_eq!(r.digest, raw);
            use bitcoin::secp256k1::{schnorr, Message, Secp256k1, XOnlyPublicKey};
            Secp256k1::verification_only()
                .verify_schnorr(
                    &schnorr::Signature::from_slice(&sig).unwrap(),
                    &Message::from_digest(raw.as_slice().try_into().unwrap()),
                    &XOnlyPublicKey::from_slice(&key.public_key).unwrap(),
                )
                .expect("BIP340 verification by rust-bitcoin");
            // (a Taproot key refuses a raw message that is not 32 bytes)
            let mut short = req.clone();
            short.message = vec![1; 31];
            short.request_id = vec![9; 16];
            let e = gw.sign(short).await.unwrap_err();
            assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e:?}");
        }
        // (a retry through another node returns the kept signature)
        let again = cluster
            .client(2, "gateway")
            .await
            .sign(req)
            .await
            .expect("retry")
            .into_inner();
        assert_eq!(again.signature, r.signature);
        signed.push((hex::encode(&r.presignature_id), hex::encode(&r.digest)));
        // And the pools refill
        for i in 0..3 {
            wait_pool(&cluster, i, &key_id, &pairs_of(i), 4).await;
        }
    }
    step(t0, "signed from the pools");
    // And every nonce used was consumed by exactly the two parties of its
    // pair, for the digest it signed, and is ready nowhere
    for i in 0..3 {
        cluster.kill(i);
    }
    let audits: Vec<serde_json::Value> = (0..3).map(|i| audit(&cluster, i)).collect();
    for (id, digest) in &signed {
        let holders: Vec<usize> = (0..3)
            .filter(|&i| used(&audits[i]).get(id) == Some(digest))
            .collect();
        assert_eq!(holders.len(), 2, "nonce {id} consumed by {holders:?}");
        assert!((0..3).all(|i| !ready(&audits[i]).contains(id)));
    }
    cluster.assert_no_panics();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn frost_pool__should_never_reuse_a_nonce_whose_cosigner_crashed_while_consuming_it() {
    let t0 = Instant::now();
    // Given nonces only for the pair alice+bob (charlie's pool is off), and
    // bob pausing after consuming one, before its signature share
    let mut cluster = Cluster::start_with(|i, cfg| {
        cfg.presign.target = 0;
        cfg.presign.frost_target = if i == 2 { 0 } else { 3 };
        cfg.presign.idle_priority = false;
        if i == 1 {
            cfg.test_hooks = Some(tss_node::config::TestHooks {
                pause_before_partial_ms: 60_000,
                ..Default::default()
            });
        }
    })
    .await;
    let (key, _) = cluster.keygen_scheme(0, "crash-frost", "taproot").await;
    wait_pool(&cluster, 0, "crash-frost", &[[NAMES[0], NAMES[1]]], 3).await;
    wait_pool(&cluster, 1, "crash-frost", &[[NAMES[1], NAMES[0]]], 3).await;
    step(t0, "pool alice+bob ready");

    // When alice signs from the pool and bob is killed while paused
    let mut c = cluster.client(0, "gateway").await;
    let msg = b"signed while bob crashes".to_vec();
    let m2 = msg.clone();
    let signing = tokio::spawn(async move {
        c.sign(sign_request("crash-frost", &m2))
            .await
            .expect("sign")
            .into_inner()
    });
    let log = cluster.log_path(1);
    let deadline = Instant::now() + Duration::from_secs(60);
    while !std::fs::read_to_string(&log)
        .unwrap_or_default()
        .contains("TEST HOOK: pausing")
    {
        assert!(Instant::now() < deadline, "bob never reached the pause");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    cluster.kill(1);
    step(t0, "bob killed while consuming");

    // Then the request still succeeds through charlie, in two rounds
    let r = signing.await.unwrap();
    assert_frost_valid("taproot", &key.public_key, &msg, &r);
    assert_eq!(r.path, "full");
    let signers: HashSet<&str> = r.signers.iter().map(String::as_str).collect();
    assert_eq!(signers, HashSet::from([NAMES[0], NAMES[2]]));

    // And after bob restarts (without the hook), the pool serves again
    edit_config(&cluster.dirs.parties[1], |cfg| cfg.test_hooks = None);
    cluster.spawn(1);
    cluster.wait_healthy(1).await;
    wait_pool(&cluster, 0, "crash-frost", &[[NAMES[0], NAMES[1]]], 1).await;
    let mut later = Vec::new();
    for i in [0usize, 1] {
        let m = format!("after the crash via {i}").into_bytes();
        let r = cluster
            .client(i, "gateway")
            .await
            .sign(sign_request("crash-frost", &m))
            .await
            .expect("sign after restart")
            .into_inner();
        assert_frost_valid("taproot", &key.public_key, &m, &r);
        later.push(r);
    }
    assert!(
        later.iter().any(|r| r.path == "pool"),
        "the pool serves again"
    );
    step(t0, "signed after restart");

    // And the nonce bob consumed is gone at both parties, used once
    for i in 0..3 {
        cluster.kill(i);
    }
    let (alice, bob) = (audit(&cluster, 0), audit(&cluster, 1));
    let digest = hex::encode(sha2::Sha256::digest(&msg));
    let crashed: Vec<String> = used(&bob)
        .into_iter()
        .filter(|(_, d)| *d == digest)
        .map(|(id, _)| id)
        .collect();
    assert_eq!(crashed.len(), 1, "bob consumed one nonce for it");
    let id = &crashed[0];
    assert_eq!(used(&alice).get(id), Some(&digest), "alice consumed it too");
    assert!(!ready(&alice).contains(id) && !ready(&bob).contains(id));
    for r in &later {
        assert_ne!(&hex::encode(&r.presignature_id), id, "never reused");
    }
    cluster.assert_no_panics();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn frost_pool__should_name_a_cosigner_whose_signature_share_is_wrong_and_fail_over() {
    let t0 = Instant::now();
    // Given an Ed25519 key whose co-signer bob sends corrupt signature
    // shares from the pool (charlie's pool is off)
    let mut cluster = Cluster::start_with(|i, cfg| {
        cfg.presign.target = 0;
        cfg.presign.frost_target = if i == 2 { 0 } else { 3 };
        cfg.presign.idle_priority = false;
        if i == 1 {
            cfg.test_hooks = Some(tss_node::config::TestHooks {
                corrupt_frost_share: true,
                ..Default::default()
            });
        }
    })
    .await;
    let (key, _) = cluster.keygen_scheme(0, "hostile-frost", "ed25519").await;
    wait_pool(&cluster, 0, "hostile-frost", &[[NAMES[0], NAMES[1]]], 3).await;
    step(t0, "pool alice+bob ready");
    // When alice signs and draws from the pool with bob first
    let msg = b"bob lies about its share".to_vec();
    let r = cluster
        .client(0, "gateway")
        .await
        .sign(sign_request("hostile-frost", &msg))
        .await
        .expect("sign")
        .into_inner();
    // Then the signature is valid, made with charlie in two rounds
    assert_frost_valid("ed25519", &key.public_key, &msg, &r);
    assert_eq!(r.path, "full");
    let signers: HashSet<&str> = r.signers.iter().map(String::as_str).collect();
    assert_eq!(signers, HashSet::from([NAMES[0], NAMES[2]]));
    // And alice's log names bob's share as the one that does not verify
    let log = std::fs::read_to_string(cluster.log_path(0)).unwrap();
    let named = log.lines().any(|l| {
        l.contains("invalid signature share")
            && l.contains(NAMES[1])
            && l.contains("does not verify under its verifying share")
    });
    assert!(named, "alice names bob:\n{log}");
    cluster.assert_no_panics();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn frost_pool__should_name_a_peer_whose_nonce_batch_is_bad_and_store_nothing() {
    let t0 = Instant::now();
    // Given a Taproot key whose party bob sends a commitment that is not a
    // curve point in every pool batch, and charlie a batch one short
    let mut cluster = Cluster::start_with(|i, cfg| {
        cfg.presign.target = 0;
        cfg.presign.frost_target = 3;
        cfg.presign.idle_priority = false;
        cfg.test_hooks = match i {
            1 => Some(tss_node::config::TestHooks {
                corrupt_frost_commitment: true,
                ..Default::default()
            }),
            2 => Some(tss_node::config::TestHooks {
                short_frost_batch: true,
                ..Default::default()
            }),
            _ => None,
        };
    })
    .await;
    let (key, _) = cluster.keygen_scheme(0, "hostile-batch", "taproot").await;
    // When alice's pool sessions with each of them run
    let deadline = Instant::now() + Duration::from_secs(60);
    let log = loop {
        let log = std::fs::read_to_string(cluster.log_path(0)).unwrap();
        let named = |who: &str, what: &str| {
            log.lines()
                .any(|l| l.contains("sent an invalid batch") && l.contains(who) && l.contains(what))
        };
        if named(NAMES[1], "do not decode") && named(NAMES[2], "nonce commitments for a batch") {
            break log;
        }
        assert!(Instant::now() < deadline, "alice names neither:\n{log}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    step(t0, "alice named bob and charlie");
    // Then alice names bob's commitment and charlie's short batch (above)
    // and holds no pool entry with either
    let k = cluster
        .client(0, "gateway")
        .await
        .get_key(pb::GetKeyRequest {
            key_id: "hostile-batch".into(),
        })
        .await
        .expect("get key")
        .into_inner();
    assert!(!k.pool.is_empty(), "alice reports her pools");
    assert!(k.pool.iter().all(|p| p.ready == 0), "{:?}\n{log}", k.pool);
    // And a request is still signed, in two rounds
    let msg = b"signed despite hostile pools".to_vec();
    let r = cluster
        .client(0, "gateway")
        .await
        .sign(sign_request("hostile-batch", &msg))
        .await
        .expect("sign")
        .into_inner();
    assert_frost_valid("taproot", &key.public_key, &msg, &r);
    assert_eq!(r.path, "full");
    cluster.assert_no_panics();
}
