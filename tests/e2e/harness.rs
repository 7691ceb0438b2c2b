//! `Cluster`: three parties created with the same code as `tssctl demo`
//! (TEST-ONLY fixture primes), run as real processes.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use k256::ecdsa::signature::hazmat::PrehashVerifier;
use proto::v1 as pb;
use tss_node::client::Client;
use tss_node::cluster::ClusterDirs;
use tss_node::config::NodeConfig;

pub struct Cluster {
    pub dirs: ClusterDirs,
    procs: Vec<Option<Child>>,
    /// Extra environment of each node's process (e.g. `RUST_LOG`).
    envs: Vec<Vec<(String, String)>>,
    _tmp: tempfile::TempDir,
}

impl Cluster {
    /// Creates three parties and starts them; waits until all are healthy.
    /// The pools are off (presignatures and FROST nonces): these tests
    /// exercise the full protocols.
    pub async fn start() -> Cluster {
        Self::start_with(|_, cfg| {
            cfg.presign.target = 0;
            cfg.presign.frost_target = 0;
        })
        .await
    }

    /// Like [`Cluster::start`], after `edit(i, config)` on each node's config.
    pub async fn start_with(edit: impl Fn(usize, &mut NodeConfig)) -> Cluster {
        let primes = tss_core::primes::fixtures_from_text(tss_node::cluster::FIXTURE_PRIMES)
            .expect("fixtures");
        Self::start_with_primes(primes, 1, edit).await
    }

    /// Like [`Cluster::start_with`], with `per_party` TEST-ONLY prime sets
    /// of `primes` at each party (one is used per aux-info run).
    pub async fn start_with_primes(
        primes: Vec<tss_core::primes::Primes>,
        per_party: usize,
        edit: impl Fn(usize, &mut NodeConfig),
    ) -> Cluster {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dirs = tss_node::cluster::create_cluster_with_primes(
            &tmp.path().join("cluster"),
            primes,
            per_party,
        )
        .expect("create cluster");
        for (i, dir) in dirs.parties.iter().enumerate() {
            // These tests sign bare SHA-256 (and other bare) hashes of their
            // messages and check them: the gateway is listed in raw_digest
            // (the demo's own policy allows it domain-separated messages only).
            std::fs::write(
                dir.join("policy.toml"),
                tss_node::cluster::demo_policy(&["gateway"]),
            )
            .expect("write policy");
            edit_config(dir, |cfg| edit(i, cfg));
        }
        let mut c = Cluster {
            dirs,
            procs: vec![None, None, None],
            envs: vec![Vec::new(); 3],
            _tmp: tmp,
        };
        for i in 0..3 {
            c.spawn(i);
        }
        for i in 0..3 {
            c.wait_healthy(i).await;
        }
        c
    }

    pub fn log_path(&self, i: usize) -> PathBuf {
        self.dirs
            .root
            .join(format!("{}.log", tss_node::cluster::NAMES[i]))
    }

    pub fn node_command(&self, i: usize) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_tss-node"));
        cmd.arg("run")
            .arg("--config")
            .arg(self.dirs.parties[i].join("node.toml"));
        cmd
    }

    pub fn spawn(&mut self, i: usize) {
        assert!(self.procs[i].is_none(), "node {i} already running");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path(i))
            .expect("log");
        let child = self
            .node_command(i)
            .envs(self.envs[i].iter().map(|(k, v)| (k, v)))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn tss-node");
        self.procs[i] = Some(child);
    }

    /// Sets an environment variable for node `i`'s next start.
    pub fn set_env(&mut self, i: usize, key: &str, value: &str) {
        self.envs[i].retain(|(k, _)| k != key);
        self.envs[i].push((key.into(), value.into()));
    }

    /// Whether node `i`'s process is running (it has not exited).
    pub fn running(&mut self, i: usize) -> bool {
        match self.procs[i].as_mut() {
            Some(c) => matches!(c.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// Fails the test if any node's log shows a panic, or a node that
    /// should be running has exited.
    pub fn assert_no_panics(&mut self) {
        for i in 0..3 {
            let log = std::fs::read_to_string(self.log_path(i)).unwrap_or_default();
            if let Some(at) = log.find("panicked at") {
                let end = (at + 600).min(log.len());
                let end = (end..log.len())
                    .find(|e| log.is_char_boundary(*e))
                    .unwrap_or(log.len());
                panic!("node {i} panicked: {}", &log[at..end]);
            }
            if self.procs[i].is_some() {
                assert!(self.running(i), "node {i} exited");
            }
        }
    }

    /// Sends SIGKILL to node `i` without waiting (usable while requests
    /// borrow the cluster); [`Cluster::reap`] collects it.
    pub fn kill_only(&self, i: usize) {
        if let Some(c) = self.procs[i].as_ref() {
            let _ = Command::new("kill")
                .args(["-KILL", &c.id().to_string()])
                .status();
        }
    }

    /// Waits for node `i` to exit (after [`Cluster::kill_only`]).
    pub fn reap(&mut self, i: usize) {
        if let Some(mut c) = self.procs[i].take() {
            let _ = c.wait();
        }
    }

    /// SIGKILL, like a crash.
    pub fn kill(&mut self, i: usize) {
        if let Some(mut c) = self.procs[i].take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Replaces node `i`'s policy file (takes effect at the next start or
    /// SIGHUP).
    pub fn write_policy(&self, i: usize, text: &str) {
        std::fs::write(self.dirs.parties[i].join("policy.toml"), text).expect("write policy");
    }

    /// Sends SIGHUP to node `i` (policy reload).
    pub fn sighup(&self, i: usize) {
        let pid = self.procs[i].as_ref().expect("node running").id();
        let ok = Command::new("kill")
            .args(["-HUP", &pid.to_string()])
            .status()
            .expect("run kill")
            .success();
        assert!(ok, "kill -HUP {pid}");
    }

    /// Runs the real `tssctl` with `args`, connected to node `i` as client
    /// `who` ("admin" or "gateway").
    pub fn tssctl(&self, i: usize, who: &str, args: &[&str]) -> std::process::Output {
        let client = if who == "admin" {
            &self.dirs.admin
        } else {
            &self.dirs.gateway
        };
        Command::new(env!("CARGO_BIN_EXE_tssctl"))
            .args(args)
            .arg("--node")
            .arg(self.dirs.addrs[i].to_string())
            .arg("--node-cert")
            .arg(self.dirs.parties[i].join("tls.crt"))
            .arg("--client")
            .arg(client)
            .output()
            .expect("run tssctl")
    }

    pub async fn client(&self, i: usize, who: &str) -> Client {
        let dir = if who == "admin" {
            &self.dirs.admin
        } else {
            &self.dirs.gateway
        };
        tss_node::cluster::connect_retry(
            self.dirs.addrs[i],
            &self.dirs.parties[i].join("tls.crt"),
            dir,
            Duration::from_secs(30),
        )
        .await
        .expect("connect")
    }

    pub async fn wait_healthy(&self, i: usize) {
        let mut c = self.client(i, "admin").await;
        tss_node::cluster::wait_healthy(&mut c, Duration::from_secs(30))
            .await
            .expect("healthy");
    }

    /// Health of node `i`, asked as the admin client.
    pub async fn health(&self, i: usize) -> pb::HealthResponse {
        let mut c = self.client(i, "admin").await;
        c.health(pb::HealthRequest {})
            .await
            .expect("health")
            .into_inner()
    }

    pub async fn keygen(&self, i: usize, key_id: &str) -> pb::KeyInfo {
        self.keygen_with_progress(i, key_id).await.0
    }

    /// Keygen through node `i`, with the progress it reported.
    pub async fn keygen_with_progress(
        &self,
        i: usize,
        key_id: &str,
    ) -> (pb::KeyInfo, Vec<pb::KeygenProgress>) {
        self.keygen_scheme(i, key_id, "").await
    }

    /// Keygen of a key of `scheme` ("" for ECDSA, "ed25519", "taproot")
    /// through node `i`, with the progress it reported.
    pub async fn keygen_scheme(
        &self,
        i: usize,
        key_id: &str,
        scheme: &str,
    ) -> (pb::KeyInfo, Vec<pb::KeygenProgress>) {
        let mut c = self.client(i, "admin").await;
        let mut s = c
            .keygen(pb::KeygenRequest {
                key_id: key_id.into(),
                scheme: scheme.into(),
                ..Default::default()
            })
            .await
            .expect("keygen")
            .into_inner();
        let mut done = None;
        let mut progress = Vec::new();
        while let Some(ev) = s.message().await.expect("keygen stream") {
            match ev.event {
                Some(pb::keygen_event::Event::Done(k)) => done = Some(k),
                Some(pb::keygen_event::Event::Progress(p)) => progress.push(p),
                None => {}
            }
        }
        (done.expect("keygen finished with a key"), progress)
    }
}

/// Every TEST-ONLY prime set there is (the demo's and the fault tests'),
/// and how many each of three parties gets: one is used per aux-info run.
pub fn all_test_primes() -> (Vec<tss_core::primes::Primes>, usize) {
    let mut all =
        tss_core::primes::fixtures_from_text(tss_node::cluster::FIXTURE_PRIMES).expect("fixtures");
    all.extend(
        tss_core::primes::fixtures_from_text(include_str!(
            "../fixtures/primes-faults.test-only.txt"
        ))
        .expect("fault fixture primes"),
    );
    let per_party = all.len() / 3;
    (all, per_party)
}

/// Rewrites a node's config in place (paths stay relative, as written by
/// `create_cluster`).
pub fn edit_config(dir: &std::path::Path, edit: impl FnOnce(&mut NodeConfig)) {
    let path = dir.join("node.toml");
    let mut cfg = NodeConfig::load(&path).expect("config");
    cfg.store_dir = "store".into();
    cfg.tls_cert = "tls.crt".into();
    cfg.passphrase_file = Some("passphrase".into());
    edit(&mut cfg);
    std::fs::remove_file(&path).expect("remove config");
    tss_node::init::write_config(&path, &cfg).expect("write config");
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for i in 0..3 {
            self.kill(i);
        }
        // A failing test shows the end of each node's log (the folder goes
        // with the cluster).
        if std::thread::panicking() {
            for i in 0..3 {
                let log = std::fs::read_to_string(self.log_path(i)).unwrap_or_default();
                let lines: Vec<&str> = log.lines().collect();
                let tail = &lines[lines.len().saturating_sub(25)..];
                eprintln!(
                    "---- last lines of node {i}'s log ----\n{}",
                    tail.join("\n")
                );
            }
        }
    }
}

pub fn sign_request(key_id: &str, message: &[u8]) -> pb::SignRequest {
    pb::SignRequest {
        key_id: key_id.into(),
        message: message.to_vec(),
        hash: pb::HashAlgorithm::Sha256 as i32,
        request_id: rand::random::<[u8; 16]>().to_vec(),
        ..Default::default()
    }
}

/// Signs `message` (SHA-256) through `c` and checks the signature with k256.
pub async fn sign_sha256_ok(
    c: &mut Client,
    public_key: &[u8],
    key_id: &str,
    message: &[u8],
) -> pb::SignResponse {
    use sha2::Digest;
    let r = c
        .sign(sign_request(key_id, message))
        .await
        .expect("sign")
        .into_inner();
    assert_valid(public_key, &sha2::Sha256::digest(message), &r);
    r
}

/// Checks a signature with k256: verifies, s is low, v recovers the key.
pub fn assert_valid(public_key: &[u8], digest: &[u8], r: &pb::SignResponse) {
    let vk = k256::ecdsa::VerifyingKey::from_sec1_bytes(public_key).expect("public key");
    let sig = k256::ecdsa::Signature::from_slice(&[r.r.as_slice(), r.s.as_slice()].concat())
        .expect("r||s");
    assert_eq!(
        sig,
        k256::ecdsa::Signature::from_der(&r.der).expect("der"),
        "DER and r||s agree"
    );
    assert!(sig.normalize_s().is_none(), "s must be low");
    vk.verify_prehash(digest, &sig)
        .expect("signature verifies with k256");
    let rid = k256::ecdsa::RecoveryId::from_byte(r.v as u8).expect("v is 0 or 1");
    let rec = k256::ecdsa::VerifyingKey::recover_from_prehash(digest, &sig, rid).expect("recovers");
    assert_eq!(rec, vk, "recovery id recovers the key");
    assert_eq!(
        &r.signature_rsv[..64],
        &[r.r.as_slice(), r.s.as_slice()].concat()[..]
    );
    assert_eq!(u32::from(r.signature_rsv[64]), r.v);
}

/// Every file below `dir`.
pub fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

/// Prints a test step with the time since `t0` (shown with `--nocapture`).
pub fn step(t0: std::time::Instant, what: &str) {
    eprintln!("[{:>6.1}s] {what}", t0.elapsed().as_secs_f64());
}

/// The `tss-audit` binary (package tss-keygen), built once per test run in
/// the profile of this test binary: cargo builds only this package's own
/// binaries for its tests.
pub fn tss_audit() -> PathBuf {
    static BIN: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    BIN.get_or_init(|| {
        // target/<profile dir>/deps/e2e-<hash>
        let exe = std::env::current_exe().expect("test executable");
        let dir = exe
            .parent()
            .and_then(|d| d.parent())
            .and_then(|d| d.file_name())
            .and_then(|n| n.to_str())
            .expect("test executable under target/<profile>/deps");
        // `cargo test --workspace` has built it already (for the keygen
        // crate's CLI test); building it here would compete for the CPU
        // with the other clusters' idle-priority presign pools.
        let built = exe
            .parent()
            .and_then(|d| d.parent())
            .map(|d| d.join("tss-audit"))
            .filter(|p| p.is_file());
        if let Some(p) = built {
            return p;
        }
        let profile = if dir == "debug" { "dev" } else { dir };
        tss_node::cluster::cargo_build("tss-keygen", "tss-audit", profile, false)
            .expect("build tss-audit")
    })
    .clone()
}

/// Waits until node `i` holds at least `min` presignatures for each of the
/// pairs `pairs` (by signer names) of `key`.
pub async fn wait_pool(c: &Cluster, i: usize, key: &str, pairs: &[[&str; 2]], min: u32) {
    let deadline = Instant::now() + Duration::from_secs(240);
    loop {
        let k = c
            .client(i, "gateway")
            .await
            .get_key(pb::GetKeyRequest { key_id: key.into() })
            .await
            .expect("get key")
            .into_inner();
        let ok = pairs.iter().all(|want| {
            k.pool.iter().any(|p| {
                p.signers.iter().map(String::as_str).collect::<HashSet<_>>()
                    == want.iter().copied().collect()
                    && p.ready >= min
            })
        });
        if ok {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "pool of node {i} did not reach {min}: {:?}",
            k.pool
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The offline audit of node `i` (`tss-node presignatures`; node stopped):
/// fails if its store does not open or a record does not decode.
pub fn presignature_audit(c: &Cluster, i: usize) -> serde_json::Value {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_tss-node"))
        .arg("presignatures")
        .arg("--config")
        .arg(c.dirs.parties[i].join("node.toml"))
        .output()
        .expect("run tss-node presignatures");
    assert!(
        out.status.success(),
        "audit failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("audit JSON")
}

/// id -> digest of every consumed presignature in an audit.
pub fn used(a: &serde_json::Value) -> HashMap<String, String> {
    a["used"]
        .as_array()
        .expect("used")
        .iter()
        .map(|u| {
            (
                u["id"].as_str().unwrap().to_owned(),
                u["digest"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

/// Ids of the ready presignatures in an audit.
pub fn ready(a: &serde_json::Value) -> HashSet<String> {
    a["ready"]
        .as_array()
        .expect("ready")
        .iter()
        .map(|r| r["id"].as_str().unwrap().to_owned())
        .collect()
}
