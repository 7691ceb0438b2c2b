//! The presignature pool: one-round signing, each presignature used at most
//! once (also across a crash), raw digests never from the pool, metrics.

use std::collections::{HashMap, HashSet};
use std::io::{Read, Write};
use std::time::{Duration, Instant};

use proto::v1 as pb;
use sha2::Digest;

use crate::harness::{
    assert_valid, edit_config, presignature_audit as audit, ready, sign_request, step, used,
    wait_pool, Cluster,
};

fn http_get(addr: std::net::SocketAddr, path: &str) -> String {
    let mut s = std::net::TcpStream::connect(addr).expect("metrics listener");
    write!(s, "GET {path} HTTP/1.0\r\nHost: x\r\n\r\n").unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}

/// Value of the first sample line starting with `prefix` (name + labels).
fn sample(text: &str, prefix: &str) -> f64 {
    text.lines()
        .find(|l| l.starts_with(prefix))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn pool__should_use_each_presignature_once_and_never_for_raw_digests() {
    let t0 = Instant::now();
    let metrics_addr = tss_node::cluster::free_addr().unwrap();
    // Given a cluster whose pools hold 4 presignatures per key and pair, a
    // gateway allowed raw digests, and metrics on node 0
    let mut cluster = Cluster::start_with(|i, cfg| {
        cfg.presign.target = 4;
        cfg.presign.parallel = 2;
        // Other tests' clusters share this machine's CPU; at idle priority
        // they could keep this pool empty for minutes.
        cfg.presign.idle_priority = false;
        let policy = cfg.policy.as_ref().expect("demo clusters have a policy");
        std::fs::write(policy, tss_node::cluster::demo_policy(&["gateway"])).expect("write policy");
        if i == 0 {
            cfg.metrics_listen = Some(metrics_addr);
        }
    })
    .await;
    let key = cluster.keygen(0, "pool-key").await;
    step(t0, "keygen done; waiting for pools");
    let names = tss_node::cluster::NAMES;
    for i in 0..3 {
        let pairs: Vec<[&str; 2]> = (0..3)
            .filter(|&j| j != i)
            .map(|j| [names[i], names[j]])
            .collect();
        wait_pool(&cluster, i, "pool-key", &pairs, 4).await;
    }
    step(t0, "pools ready");

    // When 12 requests sign at once through all three nodes while pools refill
    let mut tasks = Vec::new();
    for n in 0..12usize {
        let mut c = cluster.client(n % 3, "gateway").await;
        tasks.push(tokio::spawn(async move {
            let msg = format!("concurrent message {n}").into_bytes();
            let r = c
                .sign(sign_request("pool-key", &msg))
                .await
                .expect("sign")
                .into_inner();
            (msg, r)
        }));
    }
    let mut responses = Vec::new();
    for t in tasks {
        responses.push(t.await.unwrap());
    }
    step(t0, "concurrent signs done");

    // Then every signature verifies, and no presignature signed twice
    let mut ids = HashSet::new();
    let mut pool_path = 0;
    for (msg, r) in &responses {
        assert_valid(&key.public_key, &sha2::Sha256::digest(msg), r);
        if r.path == "pool" {
            pool_path += 1;
            assert_eq!(r.presignature_id.len(), 32);
            assert!(
                ids.insert(r.presignature_id.clone()),
                "presignature {} used twice",
                hex::encode(&r.presignature_id)
            );
        } else {
            assert_eq!(r.path, "full");
            assert!(r.presignature_id.is_empty());
        }
    }
    assert!(
        pool_path >= 6,
        "most signs use the pool ({pool_path} of 12)"
    );

    // When raw digests are signed
    let before: Vec<pb::PoolCounters> = futures_all(&cluster).await;
    let metrics_before = http_get(metrics_addr, "/metrics");
    for n in 0..3usize {
        let digest: [u8; 32] = sha2::Sha256::digest(format!("raw {n}")).into();
        let mut c = cluster.client(n, "gateway").await;
        let r = c
            .sign(pb::SignRequest {
                key_id: "pool-key".into(),
                message: digest.to_vec(),
                hash: pb::HashAlgorithm::None as i32,
                request_id: rand::random::<[u8; 16]>().to_vec(),
                ..Default::default()
            })
            .await
            .expect("raw digest sign")
            .into_inner();
        // Then they go through the full protocol and never touch the pool
        assert_valid(&key.public_key, &digest, &r);
        assert_eq!(r.path, "full");
        assert!(r.presignature_id.is_empty());
    }
    let after: Vec<pb::PoolCounters> = futures_all(&cluster).await;
    for (b, a) in before.iter().zip(&after) {
        assert_eq!(a.consumed, b.consumed, "no presignature consumed");
        assert_eq!(a.pool_signs, b.pool_signs);
        assert_eq!(a.full_signs, b.full_signs + 1, "one full sign per node");
    }

    // And the metrics reflect the signs coordinated at node 0
    let text = http_get(metrics_addr, "/metrics");
    assert!(
        text.starts_with("HTTP/1.") && text.contains(" 200 "),
        "{text}"
    );
    let pool_count = sample(&text, "tss_sign_duration_seconds_count{path=\"pool\"}");
    let full_count = sample(&text, "tss_sign_duration_seconds_count{path=\"full\"}");
    assert_eq!(pool_count, after[0].pool_signs as f64);
    assert_eq!(full_count, after[0].full_signs as f64);
    assert_eq!(
        full_count,
        sample(
            &metrics_before,
            "tss_sign_duration_seconds_count{path=\"full\"}"
        ) + 1.0
    );
    assert!(sample(&text, "tss_presignatures_generated_total") >= 1.0);
    assert!(text.contains("tss_presign_pool_level"));
    assert!(http_get(metrics_addr, "/other").contains(" 404 "));

    // And both parties' records agree: each pool signature's presignature
    // is consumed at both signers for that digest, and is no longer ready
    for i in 0..3 {
        cluster.kill(i);
    }
    let audits: Vec<serde_json::Value> = (0..3).map(|i| audit(&cluster, i)).collect();
    for (msg, r) in responses.iter().filter(|(_, r)| r.path == "pool") {
        let id = hex::encode(&r.presignature_id);
        let digest = hex::encode(sha2::Sha256::digest(msg));
        for name in &r.signers {
            let i = names.iter().position(|n| n == name).unwrap();
            assert_eq!(
                used(&audits[i]).get(&id),
                Some(&digest),
                "{name} recorded presignature {id} for this digest"
            );
        }
    }
    for a in &audits {
        let (u, rd) = (used(a), ready(a));
        assert!(
            u.keys().all(|id| !rd.contains(id)),
            "a used id is ready again"
        );
    }
    // A presignature both parties consumed for different digests (two
    // coordinators drew it at once) released no signature
    let mut by_id: HashMap<String, HashSet<String>> = HashMap::new();
    for a in &audits {
        for (id, d) in used(a) {
            by_id.entry(id).or_default().insert(d);
        }
    }
    for (msg, r) in responses.iter().filter(|(_, r)| r.path == "pool") {
        let id = hex::encode(&r.presignature_id);
        let digests = &by_id[&id];
        assert_eq!(
            digests,
            &HashSet::from([hex::encode(sha2::Sha256::digest(msg))]),
            "presignature {id} was consumed for one digest only"
        );
    }
    step(t0, "records checked");
}

async fn futures_all(c: &Cluster) -> Vec<pb::PoolCounters> {
    let mut out = Vec::new();
    for i in 0..3 {
        out.push(c.health(i).await.presign.expect("pool counters"));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn pool__should_drop_a_presignature_whose_cosigner_crashed_while_consuming_it() {
    let t0 = Instant::now();
    // Given presignatures only for the pair alice+bob (charlie's pool is
    // off), and bob pausing after consuming one, before its partial
    let mut cluster = Cluster::start_with(|i, cfg| {
        cfg.presign.target = if i == 2 { 0 } else { 2 };
        cfg.presign.idle_priority = false;
        if i == 1 {
            cfg.test_hooks = Some(tss_node::config::TestHooks {
                pause_before_partial_ms: 60_000,
                ..Default::default()
            });
        }
    })
    .await;
    let key = cluster.keygen(0, "crash-key").await;
    let names = tss_node::cluster::NAMES;
    wait_pool(&cluster, 0, "crash-key", &[[names[0], names[1]]], 2).await;
    wait_pool(&cluster, 1, "crash-key", &[[names[1], names[0]]], 2).await;
    step(t0, "pool alice+bob ready");

    // When alice signs from the pool and bob is killed while paused
    let mut c = cluster.client(0, "gateway").await;
    let msg = b"signed while bob crashes".to_vec();
    let m2 = msg.clone();
    let signing = tokio::spawn(async move {
        c.sign(sign_request("crash-key", &m2))
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

    // Then the request still succeeds through charlie, by the full protocol
    let r = signing.await.unwrap();
    assert_valid(&key.public_key, &sha2::Sha256::digest(&msg), &r);
    assert_eq!(r.path, "full");
    let signers: HashSet<&str> = r.signers.iter().map(String::as_str).collect();
    assert_eq!(signers, HashSet::from([names[0], names[2]]));

    // And after bob restarts (without the hook), signing from the pool goes on
    edit_config(&cluster.dirs.parties[1], |cfg| cfg.test_hooks = None);
    cluster.spawn(1);
    cluster.wait_healthy(1).await;
    wait_pool(&cluster, 0, "crash-key", &[[names[0], names[1]]], 1).await;
    let mut later = Vec::new();
    for i in [0usize, 1] {
        let mut c = cluster.client(i, "gateway").await;
        let m = format!("after the crash via {i}").into_bytes();
        let r = c
            .sign(sign_request("crash-key", &m))
            .await
            .expect("sign after restart")
            .into_inner();
        assert_valid(&key.public_key, &sha2::Sha256::digest(&m), &r);
        later.push(r);
    }
    assert!(
        later.iter().any(|r| r.path == "pool"),
        "the pool serves again"
    );
    step(t0, "signed after restart");

    // And the presignature bob consumed is gone at both parties, used once
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
    assert_eq!(crashed.len(), 1, "bob consumed one presignature for it");
    let id = &crashed[0];
    assert_eq!(used(&alice).get(id), Some(&digest), "alice consumed it too");
    assert!(!ready(&alice).contains(id) && !ready(&bob).contains(id));
    for r in &later {
        assert_ne!(&hex::encode(&r.presignature_id), id, "never reused");
    }
}
