//! Load: many concurrent clients. Every request is signed (and the
//! signature verifies) or refused with RESOURCE_EXHAUSTED by the nodes'
//! admission control; Health answers throughout; memory stays bounded.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use proto::v1 as pb;
use sha2::Digest;
use tonic::Code;

use crate::harness::{self, step, Cluster};

/// What a load run saw.
#[derive(Default, Debug)]
struct Outcome {
    signed: usize,
    refused: usize,
    latencies: Vec<Duration>,
    /// Slowest Health answer per node.
    health_max: [Duration; 3],
    /// Most requests running / queued that Health reported per node.
    running_max: [u32; 3],
    queued_max: [u32; 3],
}

/// Sends `total` Sign requests from `clients` concurrent clients (each its
/// own TLS connection, spread over the three nodes) while a watcher asks
/// every node's Health every 250 ms. Any status other than OK or
/// RESOURCE_EXHAUSTED, an invalid signature, or a Health call that fails or
/// takes over 5 s fails the test.
async fn run_load(c: &Cluster, key: &pb::KeyInfo, clients: usize, total: usize) -> Outcome {
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let done = Arc::new(AtomicBool::new(false));
    let watcher = {
        let done = done.clone();
        let mut admins = Vec::new();
        for i in 0..3 {
            admins.push(c.client(i, "admin").await);
        }
        tokio::spawn(async move {
            let mut o = Outcome::default();
            while !done.load(Ordering::Relaxed) {
                for (i, a) in admins.iter_mut().enumerate() {
                    let t = Instant::now();
                    let h = tokio::time::timeout(
                        Duration::from_secs(5),
                        a.health(pb::HealthRequest {}),
                    )
                    .await
                    .unwrap_or_else(|_| {
                        panic!("node {i}: Health did not answer within 5 s under load")
                    })
                    .unwrap_or_else(|s| panic!("node {i}: Health failed under load: {s}"))
                    .into_inner();
                    o.health_max[i] = o.health_max[i].max(t.elapsed());
                    o.running_max[i] = o.running_max[i].max(h.requests_running);
                    o.queued_max[i] = o.queued_max[i].max(h.requests_queued);
                }
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            o
        })
    };
    let mut tasks = Vec::new();
    for k in 0..clients {
        let mut client = c.client(k % 3, "gateway").await;
        let (next, key) = (next.clone(), key.clone());
        tasks.push(tokio::spawn(async move {
            let (mut signed, mut refused, mut lat) = (0, 0, Vec::new());
            while next.fetch_add(1, Ordering::Relaxed) < total {
                let msg = rand::random::<[u8; 32]>();
                let t = Instant::now();
                match client.sign(harness::sign_request(&key.key_id, &msg)).await {
                    Ok(r) => {
                        harness::assert_valid(
                            &key.public_key,
                            &sha2::Sha256::digest(msg),
                            &r.into_inner(),
                        );
                        lat.push(t.elapsed());
                        signed += 1;
                    }
                    Err(s) if s.code() == Code::ResourceExhausted => {
                        assert!(s.message().contains("retry later"), "{s}");
                        refused += 1;
                    }
                    Err(s) => panic!("client {k}: neither signed nor RESOURCE_EXHAUSTED: {s}"),
                }
            }
            (signed, refused, lat)
        }));
    }
    let mut out = Outcome::default();
    for t in tasks {
        let (s, r, l) = t.await.expect("client task");
        out.signed += s;
        out.refused += r;
        out.latencies.extend(l);
    }
    done.store(true, Ordering::Relaxed);
    let w = watcher.await.expect("health watcher");
    out.health_max = w.health_max;
    out.running_max = w.running_max;
    out.queued_max = w.queued_max;
    out.latencies.sort();
    out
}

fn percentile(l: &[Duration], p: usize) -> Duration {
    l.get((l.len() * p / 100).min(l.len().saturating_sub(1)))
        .copied()
        .unwrap_or_default()
}

async fn report(c: &Cluster, what: &str, o: &Outcome, took: Duration) -> [u64; 3] {
    let mut peak = [0; 3];
    for (i, p) in peak.iter_mut().enumerate() {
        *p = c.health(i).await.peak_rss_bytes;
    }
    eprintln!(
        "LOAD {what}: {} signed, {} RESOURCE_EXHAUSTED in {:.1} s ({:.1} signs/s); latency p50 {:?} p99 {:?}; \
         slowest Health {:?}; running max {:?}, queued max {:?}; peak RSS MiB {:?}",
        o.signed,
        o.refused,
        took.as_secs_f64(),
        o.signed as f64 / took.as_secs_f64(),
        percentile(&o.latencies, 50),
        percentile(&o.latencies, 99),
        o.health_max.iter().max().copied().unwrap_or_default(),
        o.running_max,
        o.queued_max,
        peak.map(|b| b / (1024 * 1024)),
    );
    peak
}

/// CI: small admission limits so that 64 clients overflow them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn load__should_sign_or_refuse_with_resource_exhausted_within_the_limits() {
    let t0 = Instant::now();
    let mut c = Cluster::start_with(|_, cfg| {
        cfg.presign.target = 0;
        cfg.limits.max_requests = Some(2);
        cfg.limits.max_queued = 3;
        cfg.limits.queue_ms = 2_000;
    })
    .await;
    let key = c.keygen(0, "load-small").await;
    step(t0, "key made");
    let t = Instant::now();
    let o = run_load(&c, &key, 64, 128).await;
    let peak = report(&c, "64 clients, 128 requests, limits 2+3", &o, t.elapsed()).await;
    assert_eq!(o.signed + o.refused, 128);
    assert!(
        o.refused > 0,
        "64 clients must overflow 2 running + 3 queued per node"
    );
    assert!(o.signed > 0, "admitted requests must be signed");
    for (i, p) in peak.iter().enumerate() {
        let (run, queue) = (o.running_max[i], o.queued_max[i]);
        assert!(run <= 2, "node {i} ran {run} requests");
        assert!(queue <= 3, "node {i} queued {queue}");
        assert!(*p < 1 << 30, "node {i} peak RSS {p} bytes");
    }
    // The gate drains: a request after the burst is admitted and signed.
    let mut g = c.client(1, "gateway").await;
    harness::sign_sha256_ok(&mut g, &key.public_key, &key.key_id, b"after the burst").await;
    c.assert_no_panics();
}

/// The figure of issue #6: 1000 requests from 64 clients with the default
/// limits and the presignature pool on (`docs/RELIABILITY.md`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "long: run with the reliability command of docs/RELIABILITY.md"]
async fn load__should_serve_1000_signs_from_64_clients() {
    let t0 = Instant::now();
    let mut c = Cluster::start_with(|_, cfg| {
        cfg.presign.target = 32;
    })
    .await;
    let key = c.keygen(0, "load").await;
    step(t0, "key made");
    let t = Instant::now();
    let o = run_load(&c, &key, 64, 1000).await;
    let peak = report(
        &c,
        "64 clients, 1000 requests, default limits",
        &o,
        t.elapsed(),
    )
    .await;
    assert_eq!(o.signed + o.refused, 1000);
    assert!(o.signed > 0);
    for (i, p) in peak.iter().enumerate() {
        assert!(*p < 1 << 30, "node {i} peak RSS {p} bytes");
    }
    c.assert_no_panics();
}
