//! One party unreachable, pairs cut, delayed or losing packets: requests
//! complete or fail with a clear status within the configured timeouts, no
//! session hangs, and a party that comes back serves again by itself.

use std::time::{Duration, Instant};

use proto::v1 as pb;
use sha2::Digest;
use tonic::Code;

use crate::harness::{self, step, Cluster};
use crate::proxy::{self, Mode};
use tss_node::cluster::NAMES;

const A: &str = NAMES[0];
const B: &str = NAMES[1];
const C: &str = NAMES[2];

/// Timeouts of these clusters: a peer must answer a proposal within
/// PROPOSE_MS, a session must finish within SIGN_MS.
const PROPOSE_MS: u64 = 2_000;
const SIGN_MS: u64 = 20_000;

fn short_timeouts(_: usize, cfg: &mut tss_node::config::NodeConfig) {
    cfg.presign.target = 0;
    cfg.timeouts.propose_ms = PROPOSE_MS;
    cfg.timeouts.sign_ms = SIGN_MS;
}

/// Signs a fresh message through node `i`; checks any signature with k256.
async fn sign(
    c: &Cluster,
    i: usize,
    key: &pb::KeyInfo,
) -> (Result<pb::SignResponse, tonic::Status>, Duration) {
    let msg = rand::random::<[u8; 16]>();
    let mut client = c.client(i, "gateway").await;
    let t = Instant::now();
    let r = client
        .sign(harness::sign_request(&key.key_id, &msg))
        .await
        .map(|r| r.into_inner());
    let took = t.elapsed();
    if let Ok(resp) = &r {
        harness::assert_valid(&key.public_key, &sha2::Sha256::digest(msg), resp);
    }
    (r, took)
}

/// Waits until no node runs a session (aborted ones freed theirs).
async fn sessions_drain(c: &Cluster, within: Duration) {
    let t = Instant::now();
    loop {
        let mut running = Vec::new();
        for i in 0..3 {
            running.push(c.health(i).await.sessions_running);
        }
        if running.iter().all(|&n| n == 0) {
            return;
        }
        assert!(
            t.elapsed() < within,
            "sessions still registered after {within:?}: {running:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The signers' names, in the order of `NAMES` (a key's own party order
/// follows the identities).
/// Signs through each of `nodes` in turn: each succeeds without charlie
/// within `bound`.
async fn signs_without_charlie(
    c: &Cluster,
    key: &pb::KeyInfo,
    nodes: [usize; 2],
    bound: Duration,
    t0: Instant,
    how: &str,
) {
    for i in nodes {
        let (r, took) = sign(c, i, key).await;
        let r = r.unwrap_or_else(|s| panic!("sign through node {i} ({how}): {s}"));
        assert!(!signers(&r).contains(&C), "{:?}", r.signers);
        assert!(took < bound, "took {took:?}, bound {bound:?}");
        step(t0, &format!("{how}: signed through node {i} in {took:?}"));
    }
}

fn signers(r: &pb::SignResponse) -> Vec<&str> {
    let mut v: Vec<&str> = r.signers.iter().map(String::as_str).collect();
    v.sort_by_key(|n| NAMES.iter().position(|x| x == n));
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable__should_sign_through_the_other_two_within_the_bound_and_serve_again_when_back()
{
    let t0 = Instant::now();
    let (mut c, net) = proxy::start_cluster(short_timeouts).await;
    let key = c.keygen(0, "unreachable").await;
    step(t0, "key made");
    // The stated bound: one proposal timeout for the unreachable party,
    // then one signing session with the other (at most SIGN_MS).
    let bound = Duration::from_millis(PROPOSE_MS + SIGN_MS);

    // Stopped: connections to it are refused.
    c.kill(2);
    signs_without_charlie(&c, &key, [0, 1], bound, t0, "charlie stopped").await;
    c.spawn(2);
    c.wait_healthy(2).await;
    let (r, _) = sign(&c, 2, &key).await;
    r.expect("charlie serves again after a restart");

    // Its traffic dropped: connections stay open, nothing arrives. Bob tries
    // charlie first (the pair bob leads), waits out the proposal, then
    // signs with alice.
    net.isolate(2, Mode::Drop);
    signs_without_charlie(&c, &key, [1, 0], bound, t0, "charlie's traffic dropped").await;
    net.heal();
    // Back without operator action: its own requests and the others' reach it.
    let t = Instant::now();
    loop {
        let (r, _) = sign(&c, 2, &key).await;
        match r {
            Ok(r) => {
                assert!(signers(&r).contains(&C));
                break;
            }
            Err(s) => assert!(
                t.elapsed() < Duration::from_secs(30),
                "charlie did not serve again within 30 s: {s}"
            ),
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    step(
        t0,
        &format!(
            "charlie serves again {:?} after the network healed",
            t.elapsed()
        ),
    );
    sessions_drain(&c, Duration::from_millis(SIGN_MS + 5_000)).await;
    c.assert_no_panics();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partition__should_route_around_a_cut_pair_fail_clearly_when_none_is_left_and_free_sessions(
) {
    let t0 = Instant::now();
    let (mut c, net) = proxy::start_cluster(short_timeouts).await;
    let key = c.keygen(0, "partition").await;
    step(t0, "key made");

    // alice | bob cut: each signs with charlie.
    net.set(0, 1, Mode::Cut);
    for (i, me) in [(0, A), (1, B)] {
        let (r, took) = sign(&c, i, &key).await;
        let r = r.unwrap_or_else(|s| panic!("sign through {me} with alice|bob cut: {s}"));
        assert_eq!(signers(&r), [me, C]);
        step(
            t0,
            &format!("alice|bob cut: {me} signed with charlie in {took:?}"),
        );
    }

    // alice cut from both: her requests fail at once with UNAVAILABLE naming
    // both; the others still sign.
    net.set(0, 2, Mode::Cut);
    let (r, took) = sign(&c, 0, &key).await;
    let s = r.expect_err("alice cannot reach anyone");
    assert_eq!(s.code(), Code::Unavailable, "{s}");
    assert!(s.message().contains(B) && s.message().contains(C), "{s}");
    assert!(
        took < Duration::from_millis(2 * PROPOSE_MS + 1_000),
        "took {took:?}"
    );
    let (r, _) = sign(&c, 1, &key).await;
    assert_eq!(signers(&r.expect("bob signs with charlie")), [B, C]);
    step(
        t0,
        &format!("alice isolated: UNAVAILABLE in {took:?} ({})", s.message()),
    );

    // alice|charlie cut, alice|bob slow (100 ms per chunk each way): alice
    // still signs, with bob, slower.
    net.heal();
    net.set(0, 2, Mode::Cut);
    net.set(0, 1, Mode::Delay(Duration::from_millis(100)));
    let (r, took) = sign(&c, 0, &key).await;
    let r = r.unwrap_or_else(|s| panic!("sign over a slow pair: {s}"));
    assert_eq!(signers(&r), [A, B]);
    step(
        t0,
        &format!("alice|bob delayed 100 ms per chunk: signed in {took:?}"),
    );

    // Mid-session loss: bob accepts alice's proposal, but nothing bob sends
    // alice arrives. Alice's session times out (SIGN_MS), she aborts it and
    // signs with charlie; bob's half of the session is dropped.
    net.heal();
    net.set_one(1, 0, Mode::Drop);
    let (r, took) = sign(&c, 0, &key).await;
    let r = r.unwrap_or_else(|s| panic!("sign after a session lost mid-way: {s}"));
    assert_eq!(signers(&r), [A, C]);
    let bound = Duration::from_millis(2 * (PROPOSE_MS + SIGN_MS));
    assert!(took < bound, "took {took:?}, bound {bound:?}");
    step(
        t0,
        &format!("bob's messages to alice lost mid-session: signed with charlie in {took:?}"),
    );
    net.heal();
    sessions_drain(&c, Duration::from_millis(SIGN_MS + 5_000)).await;
    step(t0, "every session freed");
    let (r, _) = sign(&c, 1, &key).await;
    r.expect("bob signs after the network healed");
    c.assert_no_panics();
}
