//! The ECDSA (CGGMP24) phases: the gRPC and `k256` limits, safe primes,
//! aux info and DKG, full-protocol Sign, the presignature pool (fill, CPU
//! and wall time per signer, Sign at 1, 8 and 64 at once, sustained load
//! after a drain) and the nodes' own counters. The Sign batches, the
//! settling between them and the sustained run are shared with the FROST
//! phases ([`crate::frost`]).

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use proto::v1 as pb;
use serde_json::{json, Value};
use tss_node::client::Client;

use crate::cluster::Cluster;
use crate::sign::{self, Hashing, Key, Load};
use crate::stats::{self, round3, Summary};
use crate::{metrics, pool, progress, Fields, Plan, Run};

/// Before the cluster: the in-process `k256` limit and the safe-prime
/// timing with `tss-fixtures` (`fixtures`, work files in `root`).
pub(crate) async fn limits_and_primes(
    plan: &Plan,
    run: &mut Run,
    fixtures: &Path,
    root: &Path,
) -> anyhow::Result<()> {
    let mut f = Fields::new();
    let r = limit_k256(plan.k256_iters, &mut f);
    run.finish("limit_k256", f, r)?;

    if plan.prime_runs == 0 {
        run.note("safe-prime timing skipped (--prime-runs 0)".into());
    } else {
        let mut f = Fields::new();
        let r = safe_primes(fixtures, root, plan.prime_runs, &mut f).await;
        run.finish("safe_primes", f, r)?;
        if plan.prime_runs == 1 {
            run.note("safe primes: a single run (the median of one)".into());
        }
    }
    Ok(())
}

/// Everything that needs the daemons (ECDSA).
pub(crate) async fn with_cluster(
    plan: &Plan,
    run: &mut Run,
    cluster: &mut Cluster,
) -> anyhow::Result<()> {
    progress("cluster A: starting three nodes (TEST-ONLY fixture primes, pool off)");
    let r = cluster.start().await;
    run.required("cluster_start", r)?;
    let admin = cluster.admin_clients().await?;
    let gw = cluster.gateway_clients().await?;

    let mut f = Fields::new();
    let r = grpc_rtt(&gw[0], plan.rtt_samples, &mut f).await;
    run.finish("health_rtt", f, r)?;

    let mut f = Fields::new();
    let r = first_keygen(&admin[0], &mut f).await;
    run.fields.extend(f);
    let key = Arc::new(run.required("aux_info", r)?);

    let mut f = Fields::new();
    let r = sign_full(&gw, key.clone(), plan.full_signs, &mut f).await;
    run.finish("sign_full", f, r)?;

    // Keep a copy holding only the benchmark key for the pool phase.
    snapshot_then_dkg(cluster, run, "", plan.dkg_keygens).await?;
    progress(&format!(
        "cluster B: benchmark key only, pool on (target {} per pair, parallel {})",
        plan.presign_target, plan.presign_parallel
    ));
    let r = cluster
        .restore_stores("bench")
        .and_then(|()| cluster.configure(plan.presign_target, plan.presign_parallel));
    run.required("pool_config", r)?;
    let started = Instant::now();
    let r = cluster.start().await;
    run.required("pool_cluster_start", r)?;
    let gw = cluster.gateway_clients().await?;
    let ctx = PoolCtx {
        gw: &gw,
        metrics: &cluster.metrics,
        key,
        hashing: Hashing::Sha256,
        plan,
    };

    let mut f = Fields::new();
    let r = pool_fill(&ctx, started, &mut f).await;
    let pool_ok = run.finish("pool_fill", f, r)?;

    let mut f = Fields::new();
    let r = presign_metrics(&cluster.metrics, &mut f).await;
    run.finish("presign_metrics", f, r)?;

    let mut f = Fields::new();
    let r = getkey_rtt(&gw[0], &ctx.key.id, plan.rtt_samples, &mut f).await;
    run.finish("limit_grpc_rtt", f, r)?;

    for (label, n, conc) in [
        ("c1", plan.c1_signs, 1),
        ("c8", plan.c8_signs, 8),
        ("c64", plan.c64_signs, 64),
    ] {
        let mut f = Fields::new();
        let refill = label != "c1" && pool_ok;
        let r = pool_sign(&ctx, run, label, n, conc, refill, &mut f).await;
        run.finish(&format!("sign_pool_{label}"), f, r)?;
    }

    settle(&ctx, run, "sustained").await;
    let mut f = Fields::new();
    let r = sustained(&ctx, "sustained", &mut f).await;
    run.finish("sign_sustained", f, r)?;

    let mut f = Fields::new();
    let r = counters(cluster, &mut f).await;
    run.finish("counters", f, r)?;
    Ok(())
}

pub(crate) fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

pub(crate) fn summary_json(samples: &[f64]) -> Value {
    Summary::of(samples).map_or(Value::Null, |s| s.to_json())
}

pub(crate) fn p50(samples: &[f64]) -> Value {
    stats::median(samples).map_or(Value::Null, |v| json!(round3(v)))
}

/// In-process `k256` signing and verification of a 32-byte digest.
fn limit_k256(iters: usize, f: &mut Fields) -> anyhow::Result<()> {
    use k256::ecdsa::signature::hazmat::{PrehashSigner, PrehashVerifier};
    use k256::ecdsa::{Signature, SigningKey};
    progress(&format!("limit: k256 signing in process ({iters} digests)"));
    let sk = SigningKey::random(&mut rand::thread_rng());
    let digests: Vec<[u8; 32]> = (0..iters).map(|_| rand::random()).collect();
    let mut sign_ms = Vec::with_capacity(iters);
    let mut verify_ms = Vec::with_capacity(iters);
    for (i, d) in digests.iter().enumerate() {
        let t = Instant::now();
        let sig: Signature = sk.sign_prehash(d)?;
        let signed = t.elapsed();
        let t = Instant::now();
        sk.verifying_key().verify_prehash(d, &sig)?;
        // The first few warm caches up.
        if i >= 20.min(iters / 10) {
            sign_ms.push(ms(signed));
            verify_ms.push(ms(t.elapsed()));
        }
    }
    f.insert("limit_k256_sign_ms".into(), p50(&sign_ms));
    f.insert("limit_k256_sign".into(), summary_json(&sign_ms));
    f.insert("limit_k256_verify_ms".into(), p50(&verify_ms));
    progress(&format!("  k256 sign p50 {} ms", f["limit_k256_sign_ms"]));
    Ok(())
}

/// Round trips of an RPC over one connection, after a warm-up.
async fn rtt<F, Fut>(samples: usize, mut call: F) -> anyhow::Result<Vec<f64>>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<(), tonic::Status>>,
{
    for _ in 0..20 {
        call().await?;
    }
    let mut out = Vec::with_capacity(samples);
    for _ in 0..samples {
        let t = Instant::now();
        call().await?;
        out.push(ms(t.elapsed()));
    }
    Ok(out)
}

pub(crate) async fn grpc_rtt(c: &Client, samples: usize, f: &mut Fields) -> anyhow::Result<()> {
    progress(&format!(
        "extra: Health round trips to one node ({samples}; Health also pings the peers)"
    ));
    let c = c.clone();
    let v = rtt(samples, || {
        let mut c = c.clone();
        async move { c.health(pb::HealthRequest {}).await.map(|_| ()) }
    })
    .await?;
    f.insert("health_rtt_p50_ms".into(), p50(&v));
    f.insert("health_rtt".into(), summary_json(&v));
    progress(&format!("  Health p50 {} ms", f["health_rtt_p50_ms"]));
    Ok(())
}

pub(crate) async fn getkey_rtt(
    c: &Client,
    key_id: &str,
    samples: usize,
    f: &mut Fields,
) -> anyhow::Result<()> {
    progress(&format!(
        "limit: GetKey round trips to one node over one mTLS connection ({samples})"
    ));
    let c = c.clone();
    let v = rtt(samples, || {
        let mut c = c.clone();
        let key_id = key_id.to_owned();
        async move { c.get_key(pb::GetKeyRequest { key_id }).await.map(|_| ()) }
    })
    .await?;
    // The limit: a plain RPC round trip (Health also pings the peers).
    f.insert("limit_grpc_rtt_p50_ms".into(), p50(&v));
    f.insert("limit_grpc_rtt".into(), summary_json(&v));
    progress(&format!("  GetKey p50 {} ms", f["limit_grpc_rtt_p50_ms"]));
    Ok(())
}

async fn safe_primes(exe: &Path, root: &Path, runs: usize, f: &mut Fields) -> anyhow::Result<()> {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    progress(&format!(
        "safe primes: {runs} run(s) of `tss-fixtures primes 1` ({threads} threads)"
    ));
    f.insert("safe_primes_threads".into(), threads.into());
    let mut secs = Vec::new();
    for i in 0..runs {
        let file = root.join(format!("primes-{i}.txt"));
        let t = Instant::now();
        let out = tokio::process::Command::new(exe)
            .arg("primes")
            .arg("1")
            .arg(&file)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .kill_on_drop(true)
            .output()
            .await
            .with_context(|| format!("cannot run {}", exe.display()))?;
        let s = t.elapsed().as_secs_f64();
        if !out.status.success() {
            bail!(
                "tss-fixtures failed ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        let _ = std::fs::remove_file(&file);
        secs.push(round3(s));
        progress(&format!("  run {}/{runs}: {s:.1} s", i + 1));
        f.insert("safe_primes_runs_s".into(), json!(secs));
        f.insert(
            "safe_primes_s_per_party_median".into(),
            json!(stats::median(&secs).map(round3)),
        );
    }
    Ok(())
}

/// The first Keygen: aux info, then the benchmark key.
async fn first_keygen(admin: &Client, f: &mut Fields) -> anyhow::Result<Key> {
    progress("aux info + first keygen (benchmark key `bench`)");
    let run = sign::keygen(
        &mut admin.clone(),
        "bench",
        "",
        Duration::from_secs(1_800),
        true,
    )
    .await?;
    let aux = run.aux_info().context(
        "the progress stream has no aux_info start and done: was aux info already there?",
    )?;
    f.insert("aux_info_s".into(), json!(round3(aux.as_secs_f64())));
    f.insert(
        "first_keygen_s".into(),
        json!(round3(run.total.as_secs_f64())),
    );
    f.insert(
        "first_keygen_dkg_reported_ms".into(),
        json!(run.dkg_reported_ms()),
    );
    progress(&format!(
        "  aux info {:.1} s, first keygen {:.1} s at the client",
        aux.as_secs_f64(),
        run.total.as_secs_f64()
    ));
    Key::from_info(&run.key)
}

/// Snapshots the stores (holding only the benchmark key so far), then times
/// `n` further Keygens of `scheme` ("": ECDSA) on the restarted cluster and
/// stops it: the pool phase restores the snapshot, without those keys.
pub(crate) async fn snapshot_then_dkg(
    cluster: &mut Cluster,
    run: &mut Run,
    scheme: &str,
    n: usize,
) -> anyhow::Result<()> {
    cluster.stop();
    let r = cluster.snapshot_stores("bench");
    run.required("snapshot", r)?;
    let r = cluster.start().await;
    run.required("cluster_restart", r)?;
    let admin = cluster.admin_clients().await?;
    let mut f = Fields::new();
    let r = dkg(&admin[0], scheme, n, &mut f).await;
    run.finish("dkg", f, r)?;
    cluster.stop();
    Ok(())
}

/// Further Keygens of `scheme` ("": ECDSA): DKG only (ECDSA: aux info
/// reused), end to end at the client.
pub(crate) async fn dkg(
    admin: &Client,
    scheme: &str,
    n: usize,
    f: &mut Fields,
) -> anyhow::Result<()> {
    if scheme.is_empty() {
        progress(&format!("DKG: {n} more keygens (aux info reused)"));
    } else {
        progress(&format!("DKG: {n} more {scheme} keygens (no aux info)"));
    }
    let mut total = Vec::new();
    let mut reported = Vec::new();
    for i in 1..=n {
        let run = sign::keygen(
            &mut admin.clone(),
            &format!("dkg-{i}"),
            scheme,
            Duration::from_secs(300),
            false,
        )
        .await?;
        if run.aux_info().is_some() {
            bail!("keygen dkg-{i} ran aux info again: aux info was not reused");
        }
        total.push(ms(run.total));
        reported.extend(run.dkg_reported_ms());
    }
    f.insert("dkg_p50_ms".into(), p50(&total));
    f.insert("dkg_ms".into(), summary_json(&total));
    f.insert("dkg_coordinator_reported_p50_ms".into(), p50(&reported));
    progress(&format!("  Keygen (DKG) p50 {} ms", f["dkg_p50_ms"]));
    Ok(())
}

/// Details of a batch of Sign calls.
pub(crate) fn load_json(l: &Load, n: usize, concurrency: usize) -> Value {
    let all: Vec<f64> = l.signed.iter().map(|s| s.ms).collect();
    let pool: Vec<f64> = l.signed.iter().filter(|s| s.pool()).map(|s| s.ms).collect();
    let full: Vec<f64> = l
        .signed
        .iter()
        .filter(|s| !s.pool())
        .map(|s| s.ms)
        .collect();
    let mut paths = std::collections::BTreeMap::<&str, usize>::new();
    for s in &l.signed {
        let p = if s.path.is_empty() { "(none)" } else { &s.path };
        *paths.entry(p).or_default() += 1;
    }
    json!({
        "requests": n,
        "concurrency": concurrency,
        "signed": l.signed.len(),
        "pool_path": pool.len(),
        "full_path": full.len(),
        "paths": paths,
        "rejected_resource_exhausted": l.rejected,
        "failed": l.failed,
        "errors": l.errors,
        "elapsed_s": round3(l.elapsed.as_secs_f64()),
        "rps_all_paths": round3(rps(l)),
        "rps_pool_path": l.pool_rps().map(round3),
        "latency_ms": summary_json(&all),
        "pool_latency_ms": summary_json(&pool),
        "pool_latency_p50_ms_by_node": (0..tss_node::cluster::NAMES.len())
            .map(|n| {
                let v: Vec<f64> = l
                    .signed
                    .iter()
                    .filter(|s| s.pool() && s.node == n)
                    .map(|s| s.ms)
                    .collect();
                p50(&v)
            })
            .collect::<Vec<_>>(),
        "full_latency_ms": summary_json(&full),
    })
}

pub(crate) fn rps(l: &Load) -> f64 {
    l.signed.len() as f64 / l.elapsed.as_secs_f64().max(1e-9)
}

pub(crate) fn check_failures(l: &Load, n: usize) -> anyhow::Result<()> {
    if l.failed > 0 {
        bail!(
            "{} of {n} Sign calls failed; first: {}",
            l.failed,
            l.errors.first().map_or("", String::as_str)
        );
    }
    Ok(())
}

/// Full protocol: raw digests, sequential, round robin over the nodes.
async fn sign_full(gw: &[Client], key: Arc<Key>, n: usize, f: &mut Fields) -> anyhow::Result<()> {
    progress(&format!(
        "Sign, full protocol: {n} random raw digests (HASH_ALGORITHM_NONE), sequential"
    ));
    let l = sign::load(gw, key, Hashing::RawDigest, n, 1).await?;
    let v: Vec<f64> = l.signed.iter().map(|s| s.ms).collect();
    f.insert("sign_full_p50_ms".into(), p50(&v));
    f.insert("sign_full".into(), load_json(&l, n, 1));
    check_failures(&l, n)?;
    if l.rejected > 0 {
        bail!(
            "{} of {n} sequential Sign calls were refused (RESOURCE_EXHAUSTED)",
            l.rejected
        );
    }
    if l.pool_count() > 0 {
        bail!(
            "{} raw-digest signatures came from a presignature (path \"pool\"): \
             a raw digest must always take the full protocol",
            l.pool_count()
        );
    }
    progress(&format!(
        "  full-protocol Sign p50 {} ms",
        f["sign_full_p50_ms"]
    ));
    Ok(())
}

/// What the pool phases share.
pub(crate) struct PoolCtx<'a> {
    /// One gateway connection per node.
    pub gw: &'a [Client],
    /// The nodes' Prometheus listeners.
    pub metrics: &'a [std::net::SocketAddr],
    /// The key under measurement.
    pub key: Arc<Key>,
    /// How the batches give their messages (ECDSA pool: SHA-256; FROST:
    /// raw 32-byte digests).
    pub hashing: Hashing,
    /// Sizes of this run.
    pub plan: &'a Plan,
}

/// Waits (up to `max`) until no node runs a signing session, so that one
/// batch does not measure the tail of the previous one. Reads
/// `tss_sessions_running{kind="sign"}`, else Health's count of all sessions.
pub(crate) async fn settle(ctx: &PoolCtx<'_>, run: &mut Run, before: &str) {
    let max = Duration::from_secs(90);
    let t = Instant::now();
    loop {
        let mut busy = Vec::new();
        for (i, c) in ctx.gw.iter().enumerate() {
            let sign = match metrics::fetch(ctx.metrics[i]).await {
                Ok(m) => m.sum("tss_sessions_running", &[("kind", "sign")]),
                Err(_) => None,
            };
            let n = match sign {
                Some(n) => Some(n as u64),
                None => c
                    .clone()
                    .health(pb::HealthRequest {})
                    .await
                    .ok()
                    .map(|h| u64::from(h.into_inner().sessions_running)),
            };
            match n {
                Some(0) => {}
                Some(n) => busy.push(format!("{}: {n}", tss_node::cluster::NAMES[i])),
                None => busy.push(format!("{}: no answer", tss_node::cluster::NAMES[i])),
            }
        }
        if busy.is_empty() {
            return;
        }
        if t.elapsed() > max {
            run.note(format!(
                "before {before}: sessions still running after {} s ({}); measuring anyway",
                max.as_secs(),
                busy.join(", ")
            ));
            return;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

pub(crate) async fn pool_fill(
    ctx: &PoolCtx<'_>,
    started: Instant,
    f: &mut Fields,
) -> anyhow::Result<()> {
    // A FROST key's pool holds round-1 nonces.
    let what = match ctx.key.scheme() {
        None => "presignatures",
        Some(_) => "nonces",
    };
    progress(&format!(
        "pool fill: waiting until every pair holds {} {what}",
        ctx.plan.presign_target
    ));
    let (_, _, after) =
        pool::wait_for(ctx.gw, &ctx.key.id, None, ctx.plan.fill, "pool fill").await?;
    let secs = started.elapsed().as_secs_f64();
    let count = after.total();
    f.insert("pool_fill_s".into(), json!(round3(secs)));
    f.insert("presign_fill_count".into(), count.into());
    f.insert(
        "presign_fill_per_s".into(),
        json!(round3(count as f64 / secs.max(1e-9))),
    );
    f.insert("pool_levels_after_fill".into(), after.to_json());
    progress(&format!(
        "  {count} {what} in {secs:.1} s from start-up ({:.2}/s)",
        count as f64 / secs.max(1e-9)
    ));
    Ok(())
}

/// Presignature CPU and wall time per signer from each node's metrics.
async fn presign_metrics(addrs: &[std::net::SocketAddr], f: &mut Fields) -> anyhow::Result<()> {
    progress("presign CPU and wall time per signer from the nodes' /metrics");
    let mut cpu = Vec::new();
    let mut wall = Vec::new();
    let mut per_node = Vec::new();
    for addr in addrs {
        let s = metrics::fetch(*addr).await?;
        let c = s.sum_count("tss_presign_cpu_seconds", &[]);
        let w = s.sum_count("tss_presign_wall_seconds", &[]);
        let avg = |x: Option<(f64, f64)>| x.filter(|(_, n)| *n > 0.0).map(|(s, n)| s / n);
        cpu.extend(avg(c));
        wall.extend(avg(w).map(|s| s * 1000.0));
        per_node.push(json!({
            "metrics": addr.to_string(),
            "cpu_s_sum_count": c.map(|(s, n)| json!([round3(s), n])),
            "wall_s_sum_count": w.map(|(s, n)| json!([round3(s), n])),
        }));
    }
    f.insert("presign_metrics_per_node".into(), json!(per_node));
    let mean = |v: &[f64]| (!v.is_empty()).then(|| round3(v.iter().sum::<f64>() / v.len() as f64));
    f.insert("presign_cpu_s_per_signer".into(), json!(mean(&cpu)));
    f.insert("presign_wall_ms".into(), json!(mean(&wall)));
    if cpu.is_empty() || wall.is_empty() {
        bail!(
            "no node reports tss_presign_cpu_seconds and tss_presign_wall_seconds \
             with a non-zero _count"
        );
    }
    progress(&format!(
        "  presign CPU {} s per signer, wall {} ms",
        f["presign_cpu_s_per_signer"], f["presign_wall_ms"]
    ));
    Ok(())
}

/// One batch of SHA-256 Sign calls; first, if asked, the pools refilled to
/// hold enough for it.
pub(crate) async fn pool_sign(
    ctx: &PoolCtx<'_>,
    run: &mut Run,
    label: &str,
    n: usize,
    concurrency: usize,
    refill: bool,
    f: &mut Fields,
) -> anyhow::Result<()> {
    if refill {
        // Each pair serves about a third of the calls; a quarter more for
        // an uneven spread.
        let mut need = n.div_ceil(3) * 5 / 4;
        if ctx.key.scheme().is_some() {
            // A FROST pair refills only once it is a quarter below target:
            // three quarters is as full as it is kept between batches.
            need = need.min(ctx.plan.presign_target * 3 / 4);
        }
        let need = u32::try_from(need).unwrap_or(u32::MAX);
        progress(&format!(
            "sign {label}: waiting until every pair holds {need} presignatures (or its target)"
        ));
        let what = format!("refill before {label}");
        match pool::wait_for(ctx.gw, &ctx.key.id, Some(need), ctx.plan.fill, &what).await {
            Ok((t, _, _)) => {
                f.insert(
                    format!("pool_refill_before_{label}_s"),
                    json!(round3(t.as_secs_f64())),
                );
            }
            Err(e) => run.note(format!(
                "{e:#}; measuring {label} with the pools as they are"
            )),
        }
    }
    settle(ctx, run, label).await;
    progress(&format!(
        "sign {label}: {n} Sign calls ({}), {concurrency} at a time",
        ctx.hashing.describe()
    ));
    let l = sign::load(ctx.gw, ctx.key.clone(), ctx.hashing, n, concurrency).await?;
    let pool: Vec<f64> = l.signed.iter().filter(|s| s.pool()).map(|s| s.ms).collect();
    // Pool-path answers only (the batch's rate over all paths stays in
    // its details); null without any.
    f.insert(
        format!("sign_pool_rps_{label}"),
        json!(l.pool_rps().map(round3)),
    );
    f.insert(format!("sign_pool_{label}"), load_json(&l, n, concurrency));
    if label == "c1" {
        let s = Summary::of(&pool);
        f.insert(
            "sign_pool_p50_ms".into(),
            json!(s.as_ref().map(|s| round3(s.p50))),
        );
        f.insert(
            "sign_pool_p90_ms".into(),
            json!(s.as_ref().map(|s| round3(s.p90))),
        );
        f.insert(
            "sign_pool_p99_ms".into(),
            json!(s.as_ref().map(|s| round3(s.p99))),
        );
    }
    progress(&format!(
        "  {} signed ({} pool, {} full), {} refused, {} failed; {:.2}/s (pool path {:.2}/s){}",
        l.signed.len(),
        pool.len(),
        l.signed.len() - pool.len(),
        l.rejected,
        l.failed,
        rps(&l),
        l.pool_rps().unwrap_or(0.0),
        stats::median(&pool).map_or(String::new(), |m| format!("; pool p50 {m:.1} ms"))
    ));
    check_failures(&l, n)?;
    if concurrency == 1 && l.rejected > 0 {
        bail!(
            "{} of {n} sequential Sign calls were refused (RESOURCE_EXHAUSTED)",
            l.rejected
        );
    }
    if pool.is_empty() {
        bail!(
            "no Sign call took the pool path ({} full): the nodes hold no presignatures for {}",
            l.signed.len(),
            ctx.key.id
        );
    }
    Ok(())
}

/// Eight at a time for a fixed duration, after the pools are drained;
/// figures `sign_{label}_rps` and `sign_{label}`.
pub(crate) async fn sustained(
    ctx: &PoolCtx<'_>,
    label: &str,
    f: &mut Fields,
) -> anyhow::Result<()> {
    const CONCURRENCY: usize = 8;
    let window = ctx.plan.sustained;
    progress(&format!(
        "{label}: drain the pools, then {} s at {CONCURRENCY} at a time (any path counts)",
        window.as_secs()
    ));
    let stop = Arc::new(AtomicBool::new(false));
    let shared = Arc::new(Mutex::new(Load::default()));
    let controller = async {
        let t = Instant::now();
        let drained = loop {
            let stopped = stop.load(Ordering::Relaxed);
            let recent_all_full = shared
                .lock()
                .map(|l| {
                    let v = &l.signed;
                    v.len() >= 16 && v[v.len() - 16..].iter().all(|s| !s.pool())
                })
                .unwrap_or(false);
            let low = match pool::levels(ctx.gw, &ctx.key.id).await {
                Ok(l) => l.total() <= l.pairs().len() as u64,
                Err(_) => false,
            };
            if stopped || recent_all_full || low {
                break true;
            }
            if t.elapsed() > ctx.plan.drain_max {
                break false;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        };
        let drain = t.elapsed();
        let start = Instant::now();
        while start.elapsed() < window && !stop.load(Ordering::Relaxed) {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        stop.store(true, Ordering::Relaxed);
        (drained, drain, start)
    };
    let grace = Duration::from_secs(2);
    let (abandoned, (drained, drain, start)) = tokio::join!(
        sign::load_until(
            ctx.gw,
            ctx.key.clone(),
            ctx.hashing,
            CONCURRENCY,
            stop.clone(),
            shared.clone(),
            grace
        ),
        controller
    );
    let abandoned = abandoned?;
    let l = std::mem::take(
        &mut *shared
            .lock()
            .map_err(|_| anyhow::anyhow!("a load task panicked"))?,
    );
    let end = start + window;
    let in_window: Vec<&sign::Signed> = l
        .signed
        .iter()
        .filter(|s| s.at >= start && s.at <= end)
        .collect();
    let pool = in_window.iter().filter(|s| s.pool()).count();
    let rate = in_window.len() as f64 / window.as_secs_f64();
    let lat: Vec<f64> = in_window.iter().map(|s| s.ms).collect();
    f.insert(format!("sign_{label}_rps"), json!(round3(rate)));
    f.insert(
        format!("sign_{label}"),
        json!({
            "concurrency": CONCURRENCY,
            "window_s": window.as_secs(),
            "drain_s": round3(drain.as_secs_f64()),
            "drained": drained,
            "signed_in_window": in_window.len(),
            "pool_path": pool,
            "full_path": in_window.len() - pool,
            "latency_ms": summary_json(&lat),
            "signed_in_all": l.signed.len(),
            "abandoned_at_end": abandoned,
            "rejected_resource_exhausted": l.rejected,
            "failed": l.failed,
            "errors": l.errors,
        }),
    );
    progress(&format!(
        "  {:.2}/s over {} s ({} pool, {} full; drain took {:.1} s{})",
        rate,
        window.as_secs(),
        pool,
        in_window.len() - pool,
        drain.as_secs_f64(),
        if drained { "" } else { ", pools NOT drained" }
    ));
    check_failures(&l, l.signed.len() + l.failed + l.rejected)?;
    if in_window.is_empty() {
        bail!(
            "no Sign call succeeded in the {} s window",
            window.as_secs()
        );
    }
    Ok(())
}

/// The nodes' own counters at the end: Health.presign and the server-side
/// Sign durations by path.
pub(crate) async fn counters(cluster: &Cluster, f: &mut Fields) -> anyhow::Result<()> {
    let mut nodes = Vec::new();
    for (i, mut c) in cluster.admin_clients().await?.into_iter().enumerate() {
        let h = c.health(pb::HealthRequest {}).await?.into_inner();
        let m = metrics::fetch(cluster.metrics[i]).await.ok();
        let sign_s = |path: &str| {
            m.as_ref()
                .and_then(|m| m.sum_count("tss_sign_duration_seconds", &[("path", path)]))
                .filter(|(_, n)| *n > 0.0)
                .map(|(s, n)| json!({"count": n, "mean_ms": round3(s / n * 1000.0)}))
        };
        nodes.push(json!({
            "party": h.party,
            "presign": h.presign.map(|p| json!({
                "generated": p.generated,
                "consumed": p.consumed,
                "pool_signs": p.pool_signs,
                "full_signs": p.full_signs,
                "fallbacks": p.fallbacks,
            })),
            "server_sign_pool": sign_s("pool"),
            "server_sign_full": sign_s("full"),
        }));
    }
    f.insert("node_counters".into(), json!(nodes));
    Ok(())
}
