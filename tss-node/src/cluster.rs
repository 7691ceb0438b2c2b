//! Local clusters of three parties on one machine, for `tssctl demo`, the
//! benchmark and the end-to-end tests: party folders made with the same
//! steps an operator runs (`init`, `client-init`, configs that pin each
//! other), the daemons started and stopped, and their health awaited. Not
//! used by the daemon itself.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
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

/// Local ports handed out by [`free_addr`]: below Linux's ephemeral range
/// (32768-60999), so no outgoing connection and no `bind(0)` takes one while
/// its node is stopped for a restart.
const LOCAL_PORTS: std::ops::Range<u16> = 20_000..32_000;

/// A free loopback address for a local node: a port in [`LOCAL_PORTS`] that
/// binds now and that this process has not handed out before (a test that
/// restarts a node keeps its port while other tests in the same process
/// create clusters). The start is random so concurrent processes (a test
/// and a `tssctl demo` it runs) rarely probe the same ports.
pub fn free_addr() -> anyhow::Result<SocketAddr> {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(u32::MAX);
    let span = u32::from(LOCAL_PORTS.end - LOCAL_PORTS.start);
    if NEXT.load(Ordering::Relaxed) == u32::MAX {
        let start = rand::random::<u32>() % span;
        let _ = NEXT.compare_exchange(u32::MAX, start, Ordering::Relaxed, Ordering::Relaxed);
    }
    for _ in 0..span {
        let n = NEXT.fetch_add(1, Ordering::Relaxed) % span;
        let port = LOCAL_PORTS.start + n as u16;
        if let Ok(l) = std::net::TcpListener::bind(("127.0.0.1", port)) {
            return Ok(l.local_addr()?);
        }
    }
    bail!("no free loopback port in {LOCAL_PORTS:?}")
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
        let der = crate::transport::cert_der_from_pem(&e.cert)
            .with_context(|| format!("{}: bad certificate", f.display()))?;
        let entry = AuditorEntry {
            name: e.name,
            identity: e.identity,
            tls_fingerprint: hex::encode(crate::transport::fingerprint(&der)),
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
