//! The FROST phases (`--scheme ed25519|taproot`): no safe primes and no aux
//! info, the key is made by the FROST DKG alone, and the pool holds round-1
//! nonces (`presign.frost_target` per key and signer pair, made in batches
//! once a pair is a quarter below target). A Sign answered from the pool
//! takes one round (path "pool"), otherwise both rounds (path "full").
//!
//! 1. Cluster A, nonce pool off (`frost_target = 0`): Health round trips;
//!    the benchmark key (`Keygen` with the scheme); full two-round Sign of
//!    random 32-byte digests with `HASH_ALGORITHM_NONE` (a chain sighash),
//!    sequential, round robin over the nodes (every answer must be "full");
//!    8 clients for a fixed time without any pool
//!    (`sign_sustained_nopool_rps`). The stores are then snapshotted, and
//!    further Keygens give the DKG time end to end at the client.
//! 2. Cluster B: the snapshot (only the benchmark key), the pool on. Time
//!    until every pair is at target; GetKey round trips (the gRPC limit);
//!    Sign sequentially (p50/p90/p99 of the pool-path answers), then 8 and
//!    64 at once (pools refilled to hold enough first, the nodes' signing
//!    sessions ended); `sign_rps_c*` counts every answer, `sign_pool_rps_c*`
//!    pool-path answers up to the last of them. Then the pools are drained
//!    (up to `drain_max`) and 8 clients sign for a fixed time; every path
//!    counts and the split is reported (`sign_sustained_rps`).
//!
//! Every signature is checked independently before it counts
//! ([`crate::sign::verify_frost`]): Ed25519 with ed25519-dalek's
//! `verify_strict` over the message sent, Taproot with BIP340 under the
//! x-only output key that GetKey returns. One that does not verify stops
//! the run.

use std::sync::Arc;
use std::time::Instant;

use anyhow::{bail, Context};
use proto::v1 as pb;
use serde_json::json;
use tss_core::frost::Scheme;
use tss_node::client::Client;

use crate::cluster::Cluster;
use crate::phases::{self, PoolCtx};
use crate::sign::{self, Hashing, Key};
use crate::stats::{round3, Summary};
use crate::{progress, Fields, Plan, Run};

/// Everything that needs the daemons, for a FROST scheme.
pub(crate) async fn with_cluster(
    plan: &Plan,
    run: &mut Run,
    cluster: &mut Cluster,
    scheme: Scheme,
) -> anyhow::Result<()> {
    progress("cluster A: starting three nodes, FROST nonce pool off (frost_target 0)");
    let r = cluster.configure_frost(0);
    run.required("pool_config", r)?;
    let r = cluster.start().await;
    run.required("cluster_start", r)?;
    let admin = cluster.admin_clients().await?;
    let gw = cluster.gateway_clients().await?;

    let mut f = Fields::new();
    let r = phases::grpc_rtt(&gw[0], plan.rtt_samples, &mut f).await;
    run.finish("health_rtt", f, r)?;

    let mut f = Fields::new();
    let r = bench_key(&admin[0], &gw, scheme, &mut f).await;
    run.fields.extend(f);
    let key = Arc::new(run.required("keygen", r)?);

    let mut f = Fields::new();
    let r = sign_full(&gw, key.clone(), plan.full_signs, &mut f).await;
    run.finish("sign_full", f, r)?;

    let ctx = PoolCtx {
        gw: &gw,
        metrics: &cluster.metrics,
        key: key.clone(),
        hashing: Hashing::RawDigest,
        plan,
    };
    phases::settle(&ctx, run, "sustained_nopool").await;
    let mut f = Fields::new();
    let r = phases::sustained(&ctx, "sustained_nopool", &mut f).await;
    run.finish("sign_sustained_nopool", f, r)?;

    // Keep a copy holding only the benchmark key for the pool phase.
    phases::snapshot_then_dkg(cluster, run, scheme.name(), plan.dkg_keygens).await?;
    progress(&format!(
        "cluster B: benchmark key only, nonce pool on (frost_target {} per pair)",
        plan.presign_target
    ));
    let r = cluster
        .restore_stores("bench")
        .and_then(|()| cluster.configure_frost(plan.presign_target));
    run.required("pool_config", r)?;
    let started = Instant::now();
    let r = cluster.start().await;
    run.required("pool_cluster_start", r)?;
    let gw = cluster.gateway_clients().await?;
    let ctx = PoolCtx {
        gw: &gw,
        metrics: &cluster.metrics,
        key,
        hashing: Hashing::RawDigest,
        plan,
    };

    let mut f = Fields::new();
    let r = phases::pool_fill(&ctx, started, &mut f).await;
    let pool_ok = run.finish("pool_fill", f, r)?;

    let mut f = Fields::new();
    let r = phases::getkey_rtt(&gw[0], &ctx.key.id, plan.rtt_samples, &mut f).await;
    run.finish("limit_grpc_rtt", f, r)?;

    for (label, n, conc) in [
        ("c1", plan.c1_signs, 1),
        ("c8", plan.c8_signs, 8),
        ("c64", plan.c64_signs, 64),
    ] {
        let mut f = Fields::new();
        let refill = label != "c1" && pool_ok;
        let r = phases::pool_sign(&ctx, run, label, n, conc, refill, &mut f).await;
        // Every verified answer counts here, whichever path took it.
        let all = f
            .get(&format!("sign_pool_{label}"))
            .map(|d| d["rps_all_paths"].clone());
        f.insert(format!("sign_rps_{label}"), all.unwrap_or_default());
        run.finish(&format!("sign_pool_{label}"), f, r)?;
    }

    phases::settle(&ctx, run, "sustained").await;
    let mut f = Fields::new();
    let r = phases::sustained(&ctx, "sustained", &mut f).await;
    run.finish("sign_sustained", f, r)?;

    let mut f = Fields::new();
    let r = phases::counters(cluster, &mut f).await;
    run.finish("counters", f, r)?;
    Ok(())
}

/// The benchmark key `bench`: Keygen with the scheme, then GetKey through
/// every node must give the same scheme and public key.
async fn bench_key(
    admin: &Client,
    gw: &[Client],
    scheme: Scheme,
    f: &mut Fields,
) -> anyhow::Result<Key> {
    progress(&format!("keygen of the benchmark key `bench` ({scheme})"));
    let run = sign::keygen(
        &mut admin.clone(),
        "bench",
        scheme.name(),
        std::time::Duration::from_secs(300),
        true,
    )
    .await?;
    if run.aux_info().is_some() {
        bail!("the {scheme} keygen ran aux info: FROST keys need none");
    }
    f.insert(
        "first_keygen_ms".into(),
        json!(round3(run.total.as_secs_f64() * 1000.0)),
    );
    let key = Key::from_info(&run.key)?;
    if key.scheme() != Some(scheme) {
        bail!(
            "asked for a {scheme} key, the node made a {:?} one",
            run.key.scheme
        );
    }
    for (i, c) in gw.iter().enumerate() {
        let info = c
            .clone()
            .get_key(pb::GetKeyRequest {
                key_id: key.id.clone(),
            })
            .await
            .with_context(|| format!("GetKey at {}", tss_node::cluster::NAMES[i]))?
            .into_inner();
        if info.public_key != run.key.public_key || info.scheme != scheme.name() {
            bail!(
                "{} reports key {} ({}), Keygen returned {} ({scheme})",
                tss_node::cluster::NAMES[i],
                hex::encode(&info.public_key),
                info.scheme,
                hex::encode(&run.key.public_key)
            );
        }
    }
    progress(&format!(
        "  public key {} ({} ms at the client)",
        hex::encode(&run.key.public_key),
        f["first_keygen_ms"]
    ));
    Ok(key)
}

/// Both rounds, no pool: random 32-byte digests, sequential, round robin.
async fn sign_full(gw: &[Client], key: Arc<Key>, n: usize, f: &mut Fields) -> anyhow::Result<()> {
    progress(&format!(
        "Sign, two rounds (no nonce pool): {n} random 32-byte digests, sequential"
    ));
    let l = sign::load(gw, key, Hashing::RawDigest, n, 1).await?;
    let v: Vec<f64> = l.signed.iter().map(|s| s.ms).collect();
    let s = Summary::of(&v);
    f.insert(
        "sign_full_p50_ms".into(),
        json!(s.as_ref().map(|s| round3(s.p50))),
    );
    f.insert(
        "sign_full_p99_ms".into(),
        json!(s.as_ref().map(|s| round3(s.p99))),
    );
    f.insert("sign_full".into(), phases::load_json(&l, n, 1));
    phases::check_failures(&l, n)?;
    if l.rejected > 0 {
        bail!(
            "{} of {n} sequential Sign calls were refused (RESOURCE_EXHAUSTED)",
            l.rejected
        );
    }
    if l.pool_count() > 0 {
        bail!(
            "{} signatures came from the nonce pool (path \"pool\") with frost_target 0",
            l.pool_count()
        );
    }
    progress(&format!(
        "  two-round Sign p50 {} ms, p99 {} ms",
        f["sign_full_p50_ms"], f["sign_full_p99_ms"]
    ));
    Ok(())
}
