//! `tss-bench`: end-to-end figures of a local three-node tss-node cluster.
//!
//! ```sh
//! cargo run --release --features gmp --bin tss-bench -- [--quick] --out FILE.json  # GMP daemons
//! cargo run --release --bin tss-bench -- [--quick] --out FILE.json                 # pure-Rust daemons
//! cargo run --release --bin tss-bench -- --scheme ed25519 [--quick] --out FILE.json  # FROST Ed25519
//! cargo run --release --bin tss-bench -- --scheme taproot [--quick] --out FILE.json  # FROST Taproot
//! ```
//!
//! (`--features gmp` from the workspace root also reaches tss-node and
//! tss-core, whose defaults stay on: that only affects this process, which
//! does no Paillier work; the daemons are built separately as below.)
//!
//! Progress goes to stderr, a table to stdout, the figures (milliseconds
//! unless the name says otherwise) to `FILE.json`. `--scheme ecdsa` (the
//! default) measures CGGMP24 keys in these steps ([`phases`]):
//!
//! 1. Builds `tss-node` and `tss-fixtures` (release) with the backend this
//!    bench was built for: feature `gmp` means `--no-default-features
//!    --features gmp`, otherwise the default pure-Rust one; copies both into
//!    the work folder. The bench does no Paillier work itself.
//! 2. Limits: in-process `k256` signing of a 32-byte digest (median).
//! 3. Safe primes: `tss-fixtures primes 1 FILE` (one party's set of four
//!    1536-bit safe primes, all cores) several times, median wall time.
//! 4. Cluster A: `tss_node::cluster::create_cluster` with the committed TEST-ONLY primes,
//!    the pool off, raw digests allowed for the gateway. The gRPC limit:
//!    GetKey round trips over one mTLS connection (Health round trips are
//!    reported too; Health also pings the node's two peers). The first Keygen runs
//!    aux info (its time comes from the progress stream: the first
//!    `aux_info` event to its `done`) and makes the benchmark key. Full
//!    protocol Sign: random raw digests (`HASH_ALGORITHM_NONE` never uses a
//!    presignature), sequential. The stores are then snapshotted; further
//!    Keygens (aux info reused) give the DKG time end to end at the client.
//! 5. Cluster B: the snapshot restored (a pool fills for every key, so only
//!    the benchmark key is kept), the pool on (`presign.target`, `parallel =
//!    2`). Time until every pair is at target; presignature CPU and wall
//!    time per signer from each node's `tss_presign_{cpu,wall}_seconds`
//!    (`_sum / _count`, averaged over the nodes). Sign of random messages
//!    with SHA-256: sequential (p50/p99 of the calls that took the pool
//!    path), 8 and 64 at once (round robin over the three nodes; before a
//!    batch the pools are refilled to hold enough for it and the nodes'
//!    signing sessions have ended; `sign_pool_rps_*` counts pool-path
//!    answers up to the last of them, the rate over all paths is in the
//!    batch's details), then 8 at once for a fixed time after the pools are
//!    drained (every path counts).
//!
//! Every signature is checked with `k256` (digest, public key, DER against
//! `r || s || v`, low S, recovery id); one that does not verify stops the
//! run.
//!
//! `--scheme ed25519` or `--scheme taproot` measures FROST keys
//! ([`frost`]): only `tss-node` is built, there are no primes, no `k256`
//! limit and no aux info; cluster A runs with the nonce pool off
//! (`presign.frost_target = 0`: DKG, two-round Sign, sustained load without
//! a pool), cluster B with it on (one-round Sign at 1, 8 and 64 at once,
//! sustained load after a drain). Each signature is checked with
//! ed25519-dalek `verify_strict` or BIP340 under the x-only output key. The
//! table shows the FROST targets on 2 cores (pool Sign p50 ≤ 2 ms, two-round
//! Sign p50 ≤ 5 ms, sustained ≥ 200 signatures/s) and whether they were met.
//!
//! Any other failure names its phase, stops the daemons and makes the
//! exit status non-zero (`--keep-going` goes on with the later phases
//! first). All processes, this client included, share the machine's cores;
//! the load average at start and end is recorded.

mod cluster;
mod frost;
mod metrics;
mod phases;
mod pool;
mod report;
mod sign;
mod stats;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::OnceLock;
use std::time::{Duration, Instant, SystemTime};

use anyhow::{bail, Context};
use clap::{Parser, ValueEnum};
use serde_json::{json, Map, Value};
use tss_core::frost::Scheme;
use tss_node::cluster::Daemon;

use crate::cluster::Cluster;
use crate::pool::FillLimits;
use crate::stats::round3;

#[derive(Parser)]
#[command(
    name = "tss-bench",
    about = "Measures a local three-node tss-node cluster: primes, aux info, DKG, presignatures, Sign"
)]
struct Cli {
    /// Key scheme under measurement: ecdsa (CGGMP24), or ed25519 / taproot
    /// (FROST: no safe primes or aux info; the pool holds round-1 nonces).
    #[arg(long, value_enum, default_value_t = SchemeArg::Ecdsa)]
    scheme: SchemeArg,
    /// Fewer iterations and a smaller pool (ECDSA: under 10 minutes on 2
    /// cores, one safe-prime run; FROST: about a minute).
    #[arg(long)]
    quick: bool,
    /// Where to write the figures (JSON).
    #[arg(long)]
    out: PathBuf,
    /// Safe-prime runs (default 1 with --quick, else 5; 0 skips them).
    /// ECDSA only.
    #[arg(long)]
    prime_runs: Option<usize>,
    /// Presignatures per key and signer pair (default 24 with --quick, else
    /// 100); with a FROST scheme, pooled nonces (`presign.frost_target`,
    /// default 256, the daemon's default).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    presign_target: Option<u32>,
    /// Keep the work folder (binaries, configs, stores, logs) here instead
    /// of a temporary one.
    #[arg(long)]
    keep: Option<PathBuf>,
    /// After a phase fails, go on with the next ones (its figures stay null;
    /// the exit status is still non-zero). A signature that does not verify
    /// always stops the run.
    #[arg(long)]
    keep_going: bool,
}

/// `--scheme`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum SchemeArg {
    /// CGGMP24 threshold ECDSA on secp256k1.
    Ecdsa,
    /// FROST Ed25519.
    Ed25519,
    /// FROST BIP340 Schnorr on secp256k1 (Taproot key path).
    Taproot,
}

impl SchemeArg {
    /// The FROST scheme (`None`: ECDSA).
    fn frost(self) -> Option<Scheme> {
        match self {
            SchemeArg::Ecdsa => None,
            SchemeArg::Ed25519 => Some(Scheme::Ed25519),
            SchemeArg::Taproot => Some(Scheme::Taproot),
        }
    }
}

/// Iterations and sizes of one run.
struct Plan {
    /// FROST scheme, or `None` for ECDSA.
    scheme: Option<Scheme>,
    k256_iters: usize,
    rtt_samples: usize,
    prime_runs: usize,
    full_signs: usize,
    dkg_keygens: usize,
    presign_target: usize,
    presign_parallel: usize,
    c1_signs: usize,
    c8_signs: usize,
    c64_signs: usize,
    sustained: Duration,
    drain_max: Duration,
    fill: FillLimits,
}

impl Plan {
    fn new(cli: &Cli) -> Self {
        match cli.scheme.frost() {
            None => Self::ecdsa(cli),
            Some(s) => Self::frost(cli, s),
        }
    }

    fn ecdsa(cli: &Cli) -> Self {
        let q = cli.quick;
        let pick = |quick: usize, full: usize| if q { quick } else { full };
        let secs = |quick: u64, full: u64| Duration::from_secs(if q { quick } else { full });
        let presign_target = cli.presign_target.map_or(pick(24, 100), |t| t as usize);
        Plan {
            scheme: None,
            k256_iters: pick(2_000, 20_000),
            rtt_samples: pick(200, 1_000),
            prime_runs: cli.prime_runs.unwrap_or(pick(1, 5)),
            full_signs: pick(5, 20),
            dkg_keygens: pick(5, 20),
            presign_target,
            presign_parallel: 2,
            // Each batch fits in the three pairs' pools together.
            c1_signs: pick(16, 100).min(presign_target * 3 / 2),
            c8_signs: pick(24, 100).min(presign_target * 3 / 2),
            c64_signs: pick(64, 128).min(presign_target * 3),
            sustained: secs(30, 120),
            drain_max: secs(60, 180),
            fill: FillLimits {
                cap: secs(420, 1_800),
                stall: secs(90, 180),
                none: Duration::from_secs(30),
            },
        }
    }

    /// FROST: no primes, no `k256` limit; many more Sign samples (a call
    /// takes milliseconds), the daemon's default nonce pool.
    fn frost(cli: &Cli, scheme: Scheme) -> Self {
        let q = cli.quick;
        let pick = |quick: usize, full: usize| if q { quick } else { full };
        let secs = |quick: u64, full: u64| Duration::from_secs(if q { quick } else { full });
        let presign_target = cli.presign_target.map_or(
            tss_node::config::PresignConfig::default().frost_target,
            |t| t as usize,
        );
        Plan {
            scheme: Some(scheme),
            k256_iters: 0,
            rtt_samples: pick(200, 1_000),
            prime_runs: 0,
            full_signs: pick(30, 100),
            dkg_keygens: pick(5, 20),
            presign_target,
            presign_parallel: tss_node::config::PresignConfig::default().parallel,
            c1_signs: pick(50, 200).min(presign_target * 3 / 2),
            c8_signs: pick(96, 400).min(presign_target * 3 / 2),
            c64_signs: pick(192, 640).min(presign_target * 3),
            sustained: secs(10, 30),
            drain_max: secs(15, 30),
            fill: FillLimits {
                cap: secs(60, 120),
                stall: Duration::from_secs(30),
                none: Duration::from_secs(30),
            },
        }
    }

    fn to_json(&self) -> Value {
        if let Some(scheme) = self.scheme {
            return json!({
                "scheme": scheme.name(),
                "rtt_samples": self.rtt_samples,
                "full_signs": self.full_signs,
                "dkg_keygens": self.dkg_keygens,
                "frost_target": self.presign_target,
                "presign_parallel": self.presign_parallel,
                "c1_signs": self.c1_signs,
                "c8_signs": self.c8_signs,
                "c64_signs": self.c64_signs,
                "sustained_s": self.sustained.as_secs(),
                "drain_max_s": self.drain_max.as_secs(),
                "fill_cap_s": self.fill.cap.as_secs(),
                "fill_stall_s": self.fill.stall.as_secs(),
            });
        }
        json!({
            "k256_iters": self.k256_iters,
            "rtt_samples": self.rtt_samples,
            "prime_runs": self.prime_runs,
            "full_signs": self.full_signs,
            "dkg_keygens": self.dkg_keygens,
            "presign_target": self.presign_target,
            "presign_parallel": self.presign_parallel,
            "c1_signs": self.c1_signs,
            "c8_signs": self.c8_signs,
            "c64_signs": self.c64_signs,
            "sustained_s": self.sustained.as_secs(),
            "drain_max_s": self.drain_max.as_secs(),
            "fill_cap_s": self.fill.cap.as_secs(),
            "fill_stall_s": self.fill.stall.as_secs(),
        })
    }
}

static T0: OnceLock<Instant> = OnceLock::new();

fn progress(msg: &str) {
    let t0 = T0.get_or_init(Instant::now);
    eprintln!("[{:>7.1} s] {msg}", t0.elapsed().as_secs_f64());
}

/// Figures of one phase.
type Fields = Map<String, Value>;

/// The report being built and the failures so far.
struct Run {
    fields: Fields,
    failures: Vec<Value>,
    notes: Vec<String>,
    keep_going: bool,
}

impl Run {
    /// Takes a phase's figures; a failure is recorded and returned, unless
    /// `--keep-going` (then `false`). A bad signature is always returned.
    fn finish(&mut self, phase: &str, f: Fields, r: anyhow::Result<()>) -> anyhow::Result<bool> {
        self.fields.extend(f);
        match r {
            Ok(()) => Ok(true),
            Err(e) => {
                let e = e.context(format!("phase {phase} failed"));
                self.failures
                    .push(json!({"phase": phase, "error": format!("{e:#}")}));
                if self.keep_going && !sign::is_bad_signature(&e) {
                    progress(&format!("{e:#} (going on: --keep-going)"));
                    Ok(false)
                } else {
                    Err(e)
                }
            }
        }
    }

    /// A phase the later ones cannot do without: its failure always ends
    /// the run.
    fn required<T>(&mut self, phase: &str, r: anyhow::Result<T>) -> anyhow::Result<T> {
        r.map_err(|e| {
            let e = e.context(format!("phase {phase} failed"));
            self.failures
                .push(json!({"phase": phase, "error": format!("{e:#}")}));
            e
        })
    }

    fn note(&mut self, n: String) {
        progress(&format!("note: {n}"));
        self.notes.push(n);
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    T0.get_or_init(Instant::now);
    if let Some(p) = cli.out.parent().filter(|p| !p.as_os_str().is_empty()) {
        if !p.is_dir() {
            eprintln!("tss-bench: --out: folder {} does not exist", p.display());
            return ExitCode::FAILURE;
        }
    }
    let plan = Plan::new(&cli);
    let build = if cfg!(feature = "gmp") {
        "gmp"
    } else {
        "pure-rust"
    };
    let mut run = Run {
        fields: report::required(plan.scheme)
            .iter()
            .map(|k| (k.to_string(), Value::Null))
            .collect(),
        failures: Vec::new(),
        notes: Vec::new(),
        keep_going: cli.keep_going,
    };
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    run.fields.insert("date".into(), stats::utc_iso(now).into());
    let scheme_name = plan.scheme.map_or("ecdsa", Scheme::name);
    run.fields.insert("scheme".into(), scheme_name.into());
    run.fields.insert("build".into(), build.into());
    run.fields.insert("quick".into(), cli.quick.into());
    run.fields.insert("machine".into(), report::machine());
    run.fields.insert("loadavg_start".into(), report::loadavg());
    run.fields.insert("plan".into(), plan.to_json());
    progress(&format!(
        "tss-bench: {scheme_name}, {build} daemons, {} run",
        if cli.quick { "quick" } else { "full" }
    ));

    let result = bench(&cli, &plan, &mut run).await;
    if let Err(e) = &result {
        // Failures outside a named phase (e.g. reconnecting) are listed too.
        let error = format!("{e:#}");
        if !run.failures.iter().any(|f| f["error"] == error.as_str()) {
            run.failures.push(json!({"phase": "setup", "error": error}));
        }
    }

    report::derived(plan.scheme, &mut run.fields);
    run.fields.insert("loadavg_end".into(), report::loadavg());
    run.fields.insert(
        "total_s".into(),
        json!(round3(T0.get_or_init(Instant::now).elapsed().as_secs_f64())),
    );
    let complete = result.is_ok() && run.failures.is_empty();
    run.fields.insert("complete".into(), complete.into());
    run.fields
        .insert("failures".into(), Value::Array(run.failures.clone()));
    run.fields.insert("notes".into(), json!(run.notes));
    let report = Value::Object(run.fields.clone());
    let written = serde_json::to_string_pretty(&report)
        .map_err(anyhow::Error::from)
        .and_then(|s| {
            std::fs::write(&cli.out, s + "\n")
                .with_context(|| format!("cannot write {}", cli.out.display()))
        });
    report::print_table(plan.scheme, &report);
    match &written {
        Ok(()) => progress(&format!("figures written to {}", cli.out.display())),
        Err(e) => eprintln!("tss-bench: {e:#}"),
    }
    for f in &run.failures {
        eprintln!("tss-bench: {}", f["error"].as_str().unwrap_or_default());
    }
    if complete && written.is_ok() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

async fn bench(cli: &Cli, plan: &Plan, run: &mut Run) -> anyhow::Result<()> {
    let gmp = cfg!(feature = "gmp");
    let tmp;
    let root = match &cli.keep {
        Some(d) => {
            if d.exists() && std::fs::read_dir(d)?.next().is_some() {
                bail!(
                    "{} exists and is not empty: choose a new folder for --keep",
                    d.display()
                );
            }
            std::fs::create_dir_all(d)?;
            d.clone()
        }
        None => {
            tmp = tempfile::tempdir()?;
            tmp.path().to_owned()
        }
    };
    progress(&format!("work folder {}", root.display()));

    // Private copies: a rebuild in the shared target folder during the run
    // must not swap the binaries under the bench.
    let t = Instant::now();
    let built = build_binaries(gmp, plan.scheme.is_none(), &root.join("bin"));
    let (daemon, fixtures) = run.required("build", built)?;
    run.fields
        .insert("build_s".into(), json!(round3(t.elapsed().as_secs_f64())));
    progress(&format!(
        "binaries ready in {:.0} s: {}",
        t.elapsed().as_secs_f64(),
        daemon.display()
    ));

    if let Some(fixtures) = &fixtures {
        phases::limits_and_primes(plan, run, fixtures, &root).await?;
    } else if cli.prime_runs.is_some() {
        run.note("--prime-runs ignored: FROST keys use no safe primes".into());
    }

    let created = Cluster::create(&root.join("cluster"), Daemon::Binary(daemon));
    let mut cluster = run.required("cluster_create", created)?;
    let r = match plan.scheme {
        None => phases::with_cluster(plan, run, &mut cluster).await,
        Some(scheme) => frost::with_cluster(plan, run, &mut cluster, scheme).await,
    };
    if r.is_err() {
        eprintln!("{}", cluster.log_tails(15));
    }
    cluster.stop();
    progress("daemons stopped");
    r
}

/// Builds `tss-node` and, for ECDSA, `tss-fixtures` (the safe-prime
/// timing), and copies them into `bin`.
fn build_binaries(
    gmp: bool,
    with_fixtures: bool,
    bin: &Path,
) -> anyhow::Result<(PathBuf, Option<PathBuf>)> {
    progress(&format!(
        "building tss-node{} (release{})",
        if with_fixtures {
            " and tss-fixtures"
        } else {
            ""
        },
        if gmp {
            ", --no-default-features --features gmp"
        } else {
            ", default features: pure Rust"
        }
    ));
    let Daemon::Binary(daemon) = Daemon::build(gmp)? else {
        bail!("Daemon::build did not give a tss-node binary");
    };
    let fixtures = if with_fixtures {
        Some(tss_node::cluster::cargo_build_release(
            "tss-core",
            "tss-fixtures",
            gmp,
        )?)
    } else {
        None
    };
    std::fs::create_dir_all(bin)?;
    let copy = |src: &Path| -> anyhow::Result<PathBuf> {
        let dst = bin.join(src.file_name().context("binary without a name")?);
        std::fs::copy(src, &dst).with_context(|| format!("cannot copy {}", src.display()))?;
        Ok(dst)
    };
    let daemon = copy(&daemon)?;
    let fixtures = fixtures.as_deref().map(copy).transpose()?;
    Ok((daemon, fixtures))
}
