//! Keygen and signing through every node; failover; restart; the store at rest.

use std::time::{Duration, Instant};

use sha2::Digest;
use tonic::Code;

use crate::harness::{assert_valid, sign_request, Cluster};
use crate::harness::{sign_sha256_ok, step, walk};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster__should_keygen_sign_fail_over_and_survive_restart() {
    let t0 = Instant::now();
    step(
        t0,
        "Given a running three-party cluster with a fresh 2-of-3 key",
    );
    let mut cluster = Cluster::start().await;
    // (while aux-info generation keeps every node busy, Health answers at once)
    let (key, health_ms) = tokio::join!(cluster.keygen(0, "e2e-key"), async {
        tokio::time::sleep(Duration::from_secs(8)).await;
        let mut worst = 0u128;
        for i in 0..3 {
            let mut c = cluster.client(i, "admin").await;
            let t = Instant::now();
            let h = c
                .health(proto::v1::HealthRequest {})
                .await
                .unwrap()
                .into_inner();
            worst = worst.max(t.elapsed().as_millis());
            assert!(
                h.sessions_running >= 1,
                "node {i} is busy with aux info while probed"
            );
        }
        worst
    });
    eprintln!("Health during aux-info generation: worst {health_ms} ms");
    assert!(
        health_ms < 1000,
        "Health took {health_ms} ms while aux info was running"
    );
    assert_eq!(key.threshold, 2);
    assert_eq!(key.parties.len(), 3);
    assert!(key.eth_address.starts_with("0x") && key.eth_address.len() == 42);

    step(t0, "Then every node knows the same key");
    for i in 0..3 {
        let mut c = cluster.client(i, "gateway").await;
        let k = c
            .get_key(proto::v1::GetKeyRequest {
                key_id: "e2e-key".into(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(
            k.public_key, key.public_key,
            "node {i} has the same public key"
        );
        let list = c
            .list_keys(proto::v1::ListKeysRequest {})
            .await
            .unwrap()
            .into_inner();
        assert_eq!(list.keys.len(), 1);
    }

    step(
        t0,
        "When 5 different messages are signed through each node, every signature verifies",
    );
    for i in 0..3 {
        let mut c = cluster.client(i, "gateway").await;
        for m in 0..5 {
            let msg = format!("message {m} through node {i}").into_bytes();
            let r = sign_sha256_ok(&mut c, &key.public_key, "e2e-key", &msg).await;
            assert_eq!(r.digest, sha2::Sha256::digest(&msg).to_vec());
            assert_eq!(r.signers.len(), 2);
        }
    }

    step(t0, "And the other hashes are computed by the node itself");
    let mut c = cluster.client(2, "gateway").await;
    let msg = b"keccak message".to_vec();
    let mut req = sign_request("e2e-key", &msg);
    req.hash = proto::v1::HashAlgorithm::Keccak256 as i32;
    let r = c.sign(req).await.unwrap().into_inner();
    assert_valid(&key.public_key, &sha3::Keccak256::digest(&msg), &r);
    let mut req = sign_request("e2e-key", &msg);
    req.hash = proto::v1::HashAlgorithm::DoubleSha256 as i32;
    let r = c.sign(req).await.unwrap().into_inner();
    assert_valid(
        &key.public_key,
        &sha2::Sha256::digest(sha2::Sha256::digest(&msg)),
        &r,
    );

    step(
        t0,
        "And a retry of the same request returns the original signature, through every node",
    );
    let req = sign_request("e2e-key", b"once");
    let first = c.sign(req.clone()).await.unwrap().into_inner();
    let digest = sha2::Sha256::digest(b"once");
    for i in [2, 0, 1, 2] {
        let mut other = cluster.client(i, "gateway").await;
        let r = other
            .sign(req.clone())
            .await
            .unwrap_or_else(|e| panic!("retry via node {i}: {e:?}"))
            .into_inner();
        assert_eq!(
            (&r.r, &r.s),
            (&first.r, &first.s),
            "retry via node {i}: the original signature, not a new one"
        );
        assert_valid(&key.public_key, &digest, &r);
    }
    step(
        t0,
        "And the same request id for another message is ALREADY_EXISTS naming the conflict",
    );
    for i in 0..3 {
        let mut other = cluster.client(i, "gateway").await;
        let mut changed = req.clone();
        changed.message = b"twice".to_vec();
        let err = other.sign(changed).await.unwrap_err();
        assert_eq!(err.code(), Code::AlreadyExists, "via node {i}: {err:?}");
        assert!(
            err.message().contains("another request"),
            "via node {i}: {err:?}"
        );
    }

    step(
        t0,
        "When one node stops, both remaining nodes still sign (failing over from it)",
    );
    // The party with keygen index 0 is every other coordinator's first
    // choice of co-signer: stopping it makes both fail over.
    let names = tss_node::cluster::NAMES;
    let first = names
        .iter()
        .position(|n| *n == key.parties[0])
        .expect("party names");
    let rest: Vec<usize> = (0..3).filter(|&i| i != first).collect();
    cluster.kill(first);
    for &i in &rest {
        let mut c = cluster.client(i, "gateway").await;
        let msg = format!("with {} down, via {i}", names[first]).into_bytes();
        let r = sign_sha256_ok(&mut c, &key.public_key, "e2e-key", &msg).await;
        assert!(
            !r.signers.iter().any(|s| s == names[first]),
            "the stopped party did not sign"
        );
    }

    step(
        t0,
        "When a second node stops, Sign fails with UNAVAILABLE naming the missing parties, quickly",
    );
    cluster.kill(rest[1]);
    let mut c = cluster.client(rest[0], "gateway").await;
    let t = Instant::now();
    let err = c
        .sign(sign_request("e2e-key", b"nobody to sign with"))
        .await
        .unwrap_err();
    let took = t.elapsed();
    assert_eq!(err.code(), Code::Unavailable, "{err:?}");
    for n in [names[first], names[rest[1]]] {
        assert!(
            err.message().contains(n),
            "message names {n}: {}",
            err.message()
        );
    }
    assert!(
        took < Duration::from_secs(10),
        "UNAVAILABLE within 10 s, took {took:?}"
    );

    step(
        t0,
        "When all three restart, the key is still there and signs",
    );
    cluster.kill(rest[0]);
    for i in 0..3 {
        cluster.spawn(i);
    }
    for i in 0..3 {
        cluster.wait_healthy(i).await;
    }
    for i in 0..3 {
        let mut c = cluster.client(i, "gateway").await;
        let msg = format!("after restart via {i}").into_bytes();
        sign_sha256_ok(&mut c, &key.public_key, "e2e-key", &msg).await;
    }

    step(
        t0,
        "And a second key reuses the party set's aux info: no new aux-info run",
    );
    let t = Instant::now();
    let (key2, progress) = cluster.keygen_with_progress(1, "e2e-key-2").await;
    assert_ne!(key2.public_key, key.public_key);
    assert!(
        progress.iter().all(|p| p.stage != "aux_info"),
        "second keygen reuses aux info: {progress:?}"
    );
    // (DKG, then certification: the parts of the transcript, the
    // certificates and the key's full-protocol signature over them.)
    eprintln!("second keygen (no aux info run) took {:?}", t.elapsed());

    step(t0, "The sealed store does not hold the share in the clear");
    cluster.kill(0);
    let dir = cluster.dirs.parties[0].clone();
    let pass = tss_node::config::read_passphrase(Some(&dir.join("passphrase"))).unwrap();
    let store = tss_core::store::Store::open(&dir.join("store"), &pass).unwrap();
    let share = store
        .get(tss_core::store::RecordKind::KeyShare, b"e2e-key")
        .unwrap()
        .expect("share stored");
    let plain = share.expose().to_vec();
    drop(store);
    assert!(plain.len() > 256);
    let mut disk = Vec::new();
    for e in walk(&dir.join("store")) {
        disk.extend(std::fs::read(e).unwrap());
    }
    for w in plain.chunks(32).filter(|c| c.len() == 32) {
        assert!(
            disk.windows(32).all(|d| d != w),
            "a 32-byte window of the share is on disk in the clear"
        );
    }

    step(
        t0,
        "And a wrong passphrase is refused at start-up with a clear error",
    );
    std::fs::write(dir.join("passphrase"), "definitely-the-wrong-passphrase").unwrap();
    let out = cluster.node_command(0).output().unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("passphrase is wrong"),
        "clear error: {stderr}"
    );
}
