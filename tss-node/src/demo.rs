//! `tssctl demo`: a local three-party cluster, keygen, one signature checked
//! with `k256`, the keygen transcript verified offline, step by step.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use k256::ecdsa::signature::hazmat::PrehashVerifier;
use proto::v1 as pb;

use crate::client;
use crate::config::{ClientEntry, NodeConfig, PartyEntry, Role};

/// TEST-ONLY public primes shipped with the source, so that the demo does not
/// spend minutes per party on prime generation.
pub const FIXTURE_PRIMES: &str = include_str!("../../tests/fixtures/primes.test-only.txt");

/// Party names of a local cluster.
pub const NAMES: [&str; 3] = ["custodian-a", "custodian-b", "custodian-c"];

/// A local cluster's folder layout.
pub struct ClusterDirs {
    /// Root folder.
    pub root: PathBuf,
    /// Party folders (holding node.toml).
    pub parties: Vec<PathBuf>,
    /// Admin client folder.
    pub admin: PathBuf,
    /// Gateway client folder.
    pub gateway: PathBuf,
    /// Listen addresses.
    pub addrs: Vec<SocketAddr>,
}

/// A free loopback port (bound then released).
pub fn free_addr() -> anyhow::Result<SocketAddr> {
    let l = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(l.local_addr()?)
}

/// The demo cluster's signing policy: the `gateway` client may sign
/// domain-separated messages (EIP-191, Bitcoin signed message; hashed by the
/// node) with every key, and the clients named in `raw_digest` bare hashes
/// of their bytes and raw 32-byte digests. No transaction is allowed: custody
/// policies list chains, whitelists and limits (see `examples/policy.toml`).
pub fn demo_policy(raw_digest: &[&str]) -> String {
    let list = raw_digest
        .iter()
        .map(|c| format!("{c:?}"))
        .collect::<Vec<_>>()
        .join(", ");
    format!(
        "# Demo policy: the gateway signs messages with every key.\n\
         version = 1\n\n\
         [clients.gateway]\n\
         roles = [\"signer\"]\n\n\
         [[keys]]\n\
         key = \"*\"\n\
         raw_digest = [{list}]\n"
    )
}

/// Creates three parties, an admin and a gateway client, and configs that
/// pin each other. `test_primes`: preload party i with fixture prime set i.
pub fn create_cluster(root: &Path, test_primes: bool) -> anyhow::Result<ClusterDirs> {
    let fixtures = if test_primes {
        tss_core::primes::fixtures_from_text(FIXTURE_PRIMES)?
    } else {
        vec![]
    };
    create_cluster_with_primes(root, fixtures, 1)
}

/// Like [`create_cluster`], preloading party i with the TEST-ONLY prime sets
/// `fixtures[i * per_party..(i + 1) * per_party]` (one set is used per
/// aux-info run; tests that interrupt aux-info runs need several).
pub fn create_cluster_with_primes(
    root: &Path,
    fixtures: Vec<tss_core::primes::Primes>,
    per_party: usize,
) -> anyhow::Result<ClusterDirs> {
    let test_primes = !fixtures.is_empty();
    std::fs::create_dir_all(root)?;
    let admin = root.join("admin");
    let gateway = root.join("gateway");
    let admin_cert = crate::init::init_client(&admin, "admin")?;
    let gateway_cert = crate::init::init_client(&gateway, "gateway")?;
    let mut entries = Vec::new();
    let mut parties = Vec::new();
    let mut addrs = Vec::new();
    for (i, name) in NAMES.iter().enumerate() {
        let dir = root.join(name);
        std::fs::create_dir_all(&dir)?;
        let pass: [u8; 24] = rand::random();
        let pass_file = dir.join("passphrase");
        crate::config::write_private(&pass_file, hex::encode(pass).as_bytes())?;
        let pass = crate::config::read_passphrase(Some(&pass_file))?;
        let addr = free_addr()?;
        let primes = fixtures
            .get(i * per_party..(i + 1) * per_party)
            .unwrap_or_default();
        let done =
            crate::init::init_party(&dir, name, addr, &pass, Some("passphrase".into()), primes)?;
        entries.push(done.entry);
        parties.push(dir);
        addrs.push(addr);
    }
    for (i, dir) in parties.iter().enumerate() {
        let path = dir.join("node.toml");
        let mut cfg = NodeConfig::load(&path)?;
        // `load` made paths absolute; keep the file relocatable.
        cfg.store_dir = "store".into();
        cfg.tls_cert = "tls.crt".into();
        cfg.passphrase_file = Some("passphrase".into());
        cfg.peers = entries
            .iter()
            .enumerate()
            .filter(|(j, _)| *j != i)
            .map(|(_, e)| e.clone())
            .collect::<Vec<PartyEntry>>();
        cfg.clients = vec![
            ClientEntry {
                name: "admin".into(),
                role: Role::Admin,
                cert: admin_cert.clone(),
            },
            ClientEntry {
                name: "gateway".into(),
                role: Role::Gateway,
                cert: gateway_cert.clone(),
            },
        ];
        cfg.policy = Some("policy.toml".into());
        std::fs::write(dir.join("policy.toml"), demo_policy(&[]))?;
        if test_primes {
            // The fixture set covers aux info; do not generate more in the background.
            cfg.primes.pool_target = 0;
        }
        std::fs::remove_file(&path)?;
        crate::init::write_config(&path, &cfg)?;
    }
    let party_files: Vec<PathBuf> = parties.iter().map(|d| d.join("party.toml")).collect();
    write_parties_toml(&root.join("parties.toml"), &party_files)?;
    Ok(ClusterDirs {
        root: root.to_owned(),
        parties,
        admin,
        gateway,
        addrs,
    })
}

/// A party as an auditor names it in `parties.toml`.
#[derive(serde::Serialize)]
struct AuditorEntry {
    name: String,
    identity: String,
    /// Hex SHA-256 of the DER TLS certificate.
    tls_fingerprint: String,
    cert: String,
}

/// Writes the auditor's `parties.toml` (read by `tss-audit verify
/// --parties`) from the parties' public `party.toml` files: a `[[parties]]`
/// table each with name, identity, TLS fingerprint and certificate.
pub fn write_parties_toml(path: &Path, party_files: &[PathBuf]) -> anyhow::Result<()> {
    let mut out = String::from(
        "# The parties' public entries (from their party.toml files), for\n\
         # `tss-audit verify K.transcript --parties parties.toml`.\n",
    );
    for f in party_files {
        let text =
            std::fs::read_to_string(f).with_context(|| format!("cannot read {}", f.display()))?;
        let e: PartyEntry = toml::from_str(&text)
            .with_context(|| format!("invalid party entry {}", f.display()))?;
        let der = crate::tls::cert_der_from_pem(&e.cert)
            .with_context(|| format!("{}: bad certificate", f.display()))?;
        let entry = AuditorEntry {
            name: e.name,
            identity: e.identity,
            tls_fingerprint: hex::encode(crate::tls::fingerprint(&der)),
            cert: e.cert,
        };
        out.push_str(&format!("\n[[parties]]\n{}", toml::to_string(&entry)?));
    }
    std::fs::write(path, out).with_context(|| format!("cannot write {}", path.display()))
}

/// The daemon the demo starts: a `tss-node` binary, or this executable.
pub enum Daemon {
    /// The `tss-node` binary of the same build.
    Binary(PathBuf),
    /// This executable's hidden `node run` subcommand (the same daemon code,
    /// `tss_node::run`), when no `tss-node` binary of this build exists.
    InProcessFallback(PathBuf),
}

impl Daemon {
    /// Finds the `tss-node` binary beside this executable. When it is missing
    /// or older than this executable and we were started by `cargo run`
    /// (which builds only `tssctl`), builds it with the same profile and
    /// features first.
    pub fn locate() -> anyhow::Result<Self> {
        let me = std::env::current_exe()?;
        let sibling = me.with_file_name(format!("tss-node{}", std::env::consts::EXE_SUFFIX));
        let modified = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
        // A sibling from an older build would run stale code.
        let fresh = || matches!((modified(&sibling), modified(&me)), (Some(a), Some(b)) if a >= b);
        if !fresh() {
            if let (Ok(cargo), Some(profile_dir)) = (
                std::env::var("CARGO"),
                me.parent()
                    .and_then(|d| d.file_name())
                    .and_then(|n| n.to_str()),
            ) {
                let profile = if profile_dir == "debug" {
                    "dev"
                } else {
                    profile_dir
                };
                let mut build = Command::new(cargo);
                strip_cargo_run_env(&mut build);
                // The same package selection as `cargo run --bin tssctl`, so
                // that features resolve alike and only the binary is built.
                build.args(["build", "--profile", profile, "--bin", "tss-node"]);
                if cfg!(feature = "gmp") {
                    // As documented for the production build.
                    build.args([
                        "-p",
                        "tss-node",
                        "--no-default-features",
                        "--features",
                        "gmp",
                    ]);
                }
                eprintln!("building the tss-node daemon binary ({profile} profile)...");
                let ok = build.status().map(|s| s.success()).unwrap_or(false);
                if !ok {
                    eprintln!("could not build tss-node; running the daemon inside tssctl instead");
                }
            }
        }
        Ok(if fresh() {
            Daemon::Binary(sibling)
        } else {
            Daemon::InProcessFallback(me)
        })
    }

    /// Builds the `tss-node` binary in the release profile with an explicit
    /// backend: default features (pure-Rust big integers), or with `gmp`
    /// `--no-default-features --features gmp` (the production build; needs
    /// m4). Unlike [`Daemon::locate`] this ignores how the caller was built.
    pub fn build(gmp: bool) -> anyhow::Result<Self> {
        Ok(Daemon::Binary(cargo_build_release(
            "tss-node", "tss-node", gmp,
        )?))
    }

    /// The command that runs one node with `config`.
    pub fn command(&self, config: &Path) -> Command {
        let mut cmd = match self {
            Daemon::Binary(p) => {
                let mut c = Command::new(p);
                c.arg("run");
                c
            }
            Daemon::InProcessFallback(p) => {
                let mut c = Command::new(p);
                c.args(["node", "run"]);
                c
            }
        };
        cmd.arg("--config").arg(config);
        cmd
    }
}

/// `cargo run` sets these for the program; a nested build that inherits them
/// looks different to build scripts (ring's) and would rebuild, and then make
/// the next `cargo run` rebuild too.
fn strip_cargo_run_env(build: &mut Command) {
    for (k, _) in std::env::vars_os() {
        let k = k.to_string_lossy().into_owned();
        if [
            "CARGO_PKG_",
            "CARGO_MANIFEST_",
            "CARGO_CRATE_",
            "CARGO_BIN_",
            "CARGO_PRIMARY_",
        ]
        .iter()
        .any(|p| k.starts_with(p))
            || k == "OUT_DIR"
        {
            build.env_remove(k);
        }
    }
}

/// Builds binary `bin` of workspace package `package` in the release profile
/// (default features, or `--no-default-features --features gmp`) and returns
/// the path cargo reports for it. Cargo's own output goes to stderr.
pub fn cargo_build_release(package: &str, bin: &str, gmp: bool) -> anyhow::Result<PathBuf> {
    cargo_build(package, bin, "release", gmp)
}

/// Builds binary `bin` of workspace package `package` in cargo profile
/// `profile` ("dev", "release", ...), with default features or with
/// `--no-default-features --features gmp`, and returns the path cargo
/// reports for it. Cargo's own output goes to stderr.
pub fn cargo_build(package: &str, bin: &str, profile: &str, gmp: bool) -> anyhow::Result<PathBuf> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .context("tss-node has no parent folder")?
        .join("Cargo.toml");
    let mut build = Command::new(cargo);
    strip_cargo_run_env(&mut build);
    build
        .args(["build", "--message-format=json-render-diagnostics"])
        .args(["--profile", profile])
        .arg("--manifest-path")
        .arg(&manifest)
        .args(["-p", package, "--bin", bin]);
    if gmp {
        build.args(["--no-default-features", "--features", "gmp"]);
    }
    build.stdin(Stdio::null()).stderr(Stdio::inherit());
    let out = build.output().context("cannot run cargo")?;
    if !out.status.success() {
        bail!(
            "`cargo build --profile {profile} -p {package} --bin {bin}{}` failed ({})",
            if gmp {
                " --no-default-features --features gmp"
            } else {
                ""
            },
            out.status
        );
    }
    // One JSON message per line; the artifact of `bin` names its executable.
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|m| m["reason"] == "compiler-artifact" && m["target"]["name"] == bin)
        .find_map(|m| m["executable"].as_str().map(PathBuf::from))
        .with_context(|| format!("cargo built {package} but reported no executable {bin}"))
}

/// Running node processes; killed on drop.
pub struct Processes(pub Vec<Child>);

impl Drop for Processes {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Waits until a node answers Health.
pub async fn wait_healthy(
    c: &mut client::Client,
    timeout: Duration,
) -> anyhow::Result<pb::HealthResponse> {
    let start = Instant::now();
    loop {
        match c.health(pb::HealthRequest {}).await {
            Ok(r) => return Ok(r.into_inner()),
            Err(e) if start.elapsed() > timeout => {
                bail!("node did not become healthy: {}", e.message())
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}

/// Connects, retrying while the node starts.
pub async fn connect_retry(
    addr: SocketAddr,
    node_cert: &Path,
    client_dir: &Path,
    timeout: Duration,
) -> anyhow::Result<client::Client> {
    let start = Instant::now();
    loop {
        match client::connect_with_files(addr, node_cert, client_dir).await {
            Ok(c) => return Ok(c),
            Err(e) if start.elapsed() > timeout => return Err(e.context("node did not come up")),
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

fn step(t0: Instant, msg: &str) {
    eprintln!("[{:>7.2} s] {msg}", t0.elapsed().as_secs_f64());
}

/// Runs the demo; returns the final JSON line. `signs` > 1 signs that many
/// messages in sequence and reports Sign latency through the API.
pub async fn run(
    keep: Option<PathBuf>,
    fresh_primes: bool,
    signs: usize,
) -> anyhow::Result<serde_json::Value> {
    let t0 = Instant::now();
    let tmp;
    let root = match &keep {
        Some(d) => {
            if d.exists() && std::fs::read_dir(d)?.next().is_some() {
                bail!(
                    "{} exists and is not empty: choose a new folder for --keep",
                    d.display()
                );
            }
            d.clone()
        }
        None => {
            tmp = tempfile::tempdir()?;
            tmp.path().to_owned()
        }
    };
    if fresh_primes {
        step(
            t0,
            "using fresh safe primes: each node generates its own (minutes per party)",
        );
    } else {
        eprintln!("**********************************************************************");
        eprintln!("* DEMO MODE: the parties use the committed TEST-ONLY safe primes.    *");
        eprintln!("* Their factorisation is public: this key is NOT secure. Use         *");
        eprintln!("* `tssctl demo --fresh-primes` or a real deployment for real keys.   *");
        eprintln!("**********************************************************************");
    }
    step(t0, &format!("creating three parties in {}", root.display()));
    let dirs = create_cluster(&root, !fresh_primes)?;
    step(
        t0,
        "parties created: Ed25519 identities, TLS certificates, sealed stores, configs",
    );
    let daemon = Daemon::locate()?;
    match &daemon {
        Daemon::Binary(p) => step(t0, &format!("daemon: {}", p.display())),
        Daemon::InProcessFallback(p) => step(
            t0,
            &format!(
                "daemon: no tss-node binary of this build; running `{} node run` (same code)",
                p.display()
            ),
        ),
    }
    let mut procs = Processes(Vec::new());
    let logs = root.join("logs");
    std::fs::create_dir_all(&logs)?;
    for (i, dir) in dirs.parties.iter().enumerate() {
        let log = std::fs::File::create(logs.join(format!("{}.log", NAMES[i])))?;
        let mut cmd = daemon.command(&dir.join("node.toml"));
        cmd.stdout(Stdio::null()).stderr(log);
        procs.0.push(cmd.spawn().context("cannot start tss-node")?);
        step(t0, &format!("started {} on {}", NAMES[i], dirs.addrs[i]));
    }
    let node_cert = |i: usize| dirs.parties[i].join("tls.crt");
    for i in 0..3 {
        let mut c = connect_retry(
            dirs.addrs[i],
            &node_cert(i),
            &dirs.admin,
            Duration::from_secs(30),
        )
        .await?;
        wait_healthy(&mut c, Duration::from_secs(30)).await?;
    }
    let mut admin = client::connect_with_files(dirs.addrs[0], &node_cert(0), &dirs.admin).await?;
    step(t0, "all three nodes healthy");
    if fresh_primes {
        // Each node fills its prime pool in the background from start-up;
        // aux-info generation needs one set at every party.
        loop {
            let mut ready = Vec::new();
            for i in 0..3 {
                let mut c =
                    client::connect_with_files(dirs.addrs[i], &node_cert(i), &dirs.admin).await?;
                ready.push(
                    c.health(pb::HealthRequest {})
                        .await?
                        .into_inner()
                        .primes_ready,
                );
            }
            if ready.iter().all(|&r| r >= 1) {
                break;
            }
            step(
                t0,
                &format!("  waiting for safe primes at each party (sets ready: {ready:?})"),
            );
            tokio::time::sleep(Duration::from_secs(10)).await;
        }
        step(t0, "safe primes ready at every party");
    }

    let key_id = "demo-key";
    step(
        t0,
        &format!("keygen {key_id} through {} (2-of-3)", NAMES[0]),
    );
    let kg_start = Instant::now();
    let mut stream = admin
        .keygen(pb::KeygenRequest {
            key_id: key_id.into(),
            ..Default::default()
        })
        .await?
        .into_inner();
    let mut key = None;
    while let Some(ev) = stream.message().await? {
        match ev.event {
            Some(pb::keygen_event::Event::Progress(p)) => step(
                t0,
                &format!(
                    "  keygen [{} +{:.1} s] {}",
                    p.stage,
                    p.elapsed_ms as f64 / 1000.0,
                    p.detail
                ),
            ),
            Some(pb::keygen_event::Event::Done(k)) => key = Some(k),
            None => {}
        }
    }
    let key = key.context("keygen ended without a key")?;
    step(
        t0,
        &format!(
            "keygen done in {:.2} s: public key {}",
            kg_start.elapsed().as_secs_f64(),
            hex::encode(&key.public_key)
        ),
    );

    let message = b"tss-node demo: 2-of-3 threshold ECDSA".to_vec();
    let mut gw = client::connect_with_files(dirs.addrs[1], &node_cert(1), &dirs.gateway).await?;
    step(
        t0,
        &format!(
            "signing {:?} (EIP-191 personal message) through {}",
            String::from_utf8_lossy(&message),
            NAMES[1]
        ),
    );
    let request_id: [u8; 16] = rand::random();
    let sig = gw
        .sign(pb::SignRequest {
            key_id: key_id.into(),
            message: message.clone(),
            hash: pb::HashAlgorithm::Eip191 as i32,
            request_id: request_id.to_vec(),
            ..Default::default()
        })
        .await?
        .into_inner();
    step(
        t0,
        &format!(
            "signed by {} in {} ms",
            sig.signers.join(" + "),
            sig.elapsed_ms
        ),
    );

    // Independent verification with k256.
    let vk = k256::ecdsa::VerifyingKey::from_sec1_bytes(&key.public_key)?;
    // The EIP-191 digest computed independently of the node (alloy), which
    // must also be the digest the node says it signed.
    let digest = alloy_primitives::eip191_hash_message(&message).0;
    let ksig = k256::ecdsa::Signature::from_der(&sig.der)?;
    let verified = sig.digest == digest
        && vk.verify_prehash(&digest, &ksig).is_ok()
        && k256::ecdsa::RecoveryId::from_byte(sig.v as u8)
            .and_then(|rid| {
                k256::ecdsa::VerifyingKey::recover_from_prehash(&digest, &ksig, rid).ok()
            })
            .is_some_and(|rec| rec == vk);
    step(
        t0,
        &format!(
            "k256 verification and key recovery: {}",
            if verified { "OK" } else { "FAILED" }
        ),
    );
    if signs > 1 {
        step(
            t0,
            &format!(
                "measuring: {} more sequential Sign calls through {}",
                signs - 1,
                NAMES[1]
            ),
        );
        let mut ms = Vec::with_capacity(signs);
        for k in 1..signs {
            let t = Instant::now();
            gw.sign(pb::SignRequest {
                key_id: key_id.into(),
                message: format!("latency probe {k}").into_bytes(),
                hash: pb::HashAlgorithm::Eip191 as i32,
                request_id: rand::random::<[u8; 16]>().to_vec(),
                ..Default::default()
            })
            .await?;
            ms.push(t.elapsed().as_secs_f64() * 1000.0);
        }
        ms.sort_by(f64::total_cmp);
        let pct = |p: f64| ms[((ms.len() as f64 - 1.0) * p).round() as usize];
        step(
            t0,
            &format!(
                "Sign latency through the API (full protocol, {} calls): p50 {:.0} ms, p90 {:.0} ms, max {:.0} ms",
                ms.len(),
                pct(0.5),
                pct(0.9),
                pct(1.0)
            ),
        );
    }
    // The keygen transcript, exported from a party other than the
    // coordinator, checked offline as an auditor would.
    let mut reader = client::connect_with_files(dirs.addrs[1], &node_cert(1), &dirs.admin).await?;
    let file = reader
        .export_transcript(pb::ExportTranscriptRequest {
            key_id: key_id.into(),
        })
        .await?
        .into_inner()
        .transcript;
    let transcripts = root.join("transcripts");
    std::fs::create_dir_all(&transcripts)?;
    let transcript_path = transcripts.join(format!("{key_id}.transcript"));
    std::fs::write(&transcript_path, &file)?;
    step(
        t0,
        &format!(
            "keygen transcript exported from {}: {} ({} bytes)",
            NAMES[1],
            transcript_path.display(),
            file.len()
        ),
    );
    let parties_path = root.join("parties.toml");
    let auditor = keygen::verify::parse_parties(&std::fs::read_to_string(&parties_path)?)
        .map_err(|e| anyhow::anyhow!("{}: {e}", parties_path.display()))?;
    let report = {
        let file = file.clone();
        tokio::task::spawn_blocking(move || keygen::verify::verify(&file, &auditor)).await?
    };
    let transcript_verified = report.passed();
    step(
        t0,
        &if transcript_verified {
            format!(
                "transcript verified offline: all {} checks pass (parties, envelopes, commitments, proofs, key signature)",
                report.checks.len()
            )
        } else {
            format!(
                "transcript verification FAILED: {}",
                report.failed().join(", ")
            )
        },
    );
    step(
        t0,
        &format!(
            "an auditor runs: tss-audit verify {} --parties {}{}",
            transcript_path.display(),
            parties_path.display(),
            if keep.is_none() {
                "  (the folder is temporary: keep it with --keep DIR)"
            } else {
                ""
            }
        ),
    );
    drop(procs);
    step(t0, "nodes stopped");
    if let Some(d) = &keep {
        step(
            t0,
            &format!(
                "cluster kept in {} (node.toml files, logs/, parties.toml, transcripts/)",
                d.display()
            ),
        );
    }
    let out = serde_json::json!({
        "public_key": hex::encode(&key.public_key),
        "message": hex::encode(&message),
        "hash": "eip191",
        "der": hex::encode(&sig.der),
        "r": hex::encode(&sig.r),
        "s": hex::encode(&sig.s),
        "v": sig.v,
        "eth_address": key.eth_address,
        "verified": verified,
        "transcript_verified": transcript_verified,
    });
    if !verified {
        bail!("signature did not verify: {out}");
    }
    if !transcript_verified {
        bail!("the keygen transcript did not verify:\n{report}");
    }
    Ok(out)
}
