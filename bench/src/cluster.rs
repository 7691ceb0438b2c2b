//! The benchmark's cluster: three parties made by `tss_node::cluster::create_cluster`
//! (TEST-ONLY fixture primes), configs tuned for the bench, and real daemon
//! processes that can be stopped and started again over the same stores.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::Context;
use tss_node::client::Client;
use tss_node::cluster::ClusterDirs;
use tss_node::cluster::Daemon;
use tss_node::cluster::Processes;
use tss_node::cluster::NAMES;
use tss_node::config::NodeConfig;

/// Three parties on loopback, their folders, and (while started) processes.
pub struct Cluster {
    /// Folders and gRPC addresses.
    pub dirs: ClusterDirs,
    /// Prometheus listeners, one per party.
    pub metrics: Vec<SocketAddr>,
    daemon: Daemon,
    procs: Option<Processes>,
    starts: usize,
}

impl Cluster {
    /// Creates the parties in `root` with fixture primes, every node with a
    /// metrics listener, the gateway client allowed raw digests, and the
    /// presignature pool off.
    pub fn create(root: &Path, daemon: Daemon) -> anyhow::Result<Self> {
        let dirs = tss_node::cluster::create_cluster(root, true)?;
        let metrics = (0..dirs.parties.len())
            .map(|_| tss_node::cluster::free_addr())
            .collect::<anyhow::Result<Vec<_>>>()?;
        let c = Cluster {
            dirs,
            metrics,
            daemon,
            procs: None,
            starts: 0,
        };
        c.configure(0, 1)?;
        Ok(c)
    }

    /// Rewrites each `node.toml` with this presignature pool setting
    /// (`target` per key and signer pair, `parallel` sessions led at once);
    /// takes effect at the next start.
    pub fn configure(&self, target: usize, parallel: usize) -> anyhow::Result<()> {
        self.rewrite(|cfg| {
            cfg.presign.target = target;
            cfg.presign.parallel = parallel;
        })
    }

    /// Rewrites each `node.toml` for a FROST run: the ECDSA pool off,
    /// `frost_target` pooled nonces per FROST key and signer pair (0: every
    /// signature runs both rounds), the other pool settings the daemon's
    /// defaults; takes effect at the next start.
    pub fn configure_frost(&self, frost_target: usize) -> anyhow::Result<()> {
        self.rewrite(|cfg| {
            let defaults = tss_node::config::PresignConfig::default();
            cfg.presign.target = 0;
            cfg.presign.frost_target = frost_target;
            cfg.presign.parallel = defaults.parallel;
        })
    }

    /// Rewrites each `node.toml`: relocatable paths, this node's metrics
    /// listener, the gateway's policy, then `pool`'s changes.
    fn rewrite(&self, pool: impl Fn(&mut NodeConfig)) -> anyhow::Result<()> {
        for (i, dir) in self.dirs.parties.iter().enumerate() {
            let path = dir.join("node.toml");
            let mut cfg = NodeConfig::load(&path)?;
            // `load` made paths absolute; keep the file relocatable, as
            // `create_cluster` writes it.
            cfg.store_dir = "store".into();
            cfg.tls_cert = "tls.crt".into();
            cfg.passphrase_file = Some("passphrase".into());
            cfg.metrics_listen = Some(self.metrics[i]);
            pool(&mut cfg);
            cfg.policy = Some("policy.toml".into());
            std::fs::write(
                dir.join("policy.toml"),
                tss_node::cluster::demo_policy(&["gateway"]),
            )?;
            tss_node::init::write_config(&path, &cfg)?;
        }
        Ok(())
    }

    /// Starts the three daemons and waits until each answers Health.
    pub async fn start(&mut self) -> anyhow::Result<()> {
        anyhow::ensure!(self.procs.is_none(), "the cluster is already running");
        self.starts += 1;
        let logs = self.dirs.root.join("logs");
        std::fs::create_dir_all(&logs)?;
        let mut procs = Processes(Vec::new());
        for (i, dir) in self.dirs.parties.iter().enumerate() {
            let log = std::fs::File::create(self.log_path(i))?;
            let mut cmd = self.daemon.command(&dir.join("node.toml"));
            cmd.stdout(Stdio::null()).stderr(log);
            procs.0.push(cmd.spawn().context("cannot start tss-node")?);
        }
        // Killed on drop from here on, also when a node does not come up.
        self.procs = Some(procs);
        for (i, name) in NAMES.iter().enumerate() {
            let mut c = tss_node::cluster::connect_retry(
                self.dirs.addrs[i],
                &self.node_cert(i),
                &self.dirs.admin,
                Duration::from_secs(60),
            )
            .await
            .with_context(|| format!("{name} did not start"))?;
            tss_node::cluster::wait_healthy(&mut c, Duration::from_secs(60)).await?;
        }
        Ok(())
    }

    /// Kills the daemons (the stores survive: every write is flushed).
    pub fn stop(&mut self) {
        self.procs = None;
    }

    /// Copies every party's store to `store.<tag>` (cluster stopped).
    pub fn snapshot_stores(&self, tag: &str) -> anyhow::Result<()> {
        anyhow::ensure!(self.procs.is_none(), "stop the cluster before a snapshot");
        for dir in &self.dirs.parties {
            copy_dir(&dir.join("store"), &dir.join(format!("store.{tag}")))?;
        }
        Ok(())
    }

    /// Replaces every party's store by its `store.<tag>` snapshot.
    pub fn restore_stores(&self, tag: &str) -> anyhow::Result<()> {
        anyhow::ensure!(self.procs.is_none(), "stop the cluster before a restore");
        for dir in &self.dirs.parties {
            std::fs::remove_dir_all(dir.join("store"))?;
            std::fs::rename(dir.join(format!("store.{tag}")), dir.join("store"))?;
        }
        Ok(())
    }

    /// One Signer connection per node as the admin client.
    pub async fn admin_clients(&self) -> anyhow::Result<Vec<Client>> {
        self.clients(&self.dirs.admin).await
    }

    /// One Signer connection per node as the gateway client.
    pub async fn gateway_clients(&self) -> anyhow::Result<Vec<Client>> {
        self.clients(&self.dirs.gateway).await
    }

    async fn clients(&self, client_dir: &Path) -> anyhow::Result<Vec<Client>> {
        let mut out = Vec::new();
        for i in 0..self.dirs.parties.len() {
            out.push(
                tss_node::client::connect_with_files(
                    self.dirs.addrs[i],
                    &self.node_cert(i),
                    client_dir,
                )
                .await?,
            );
        }
        Ok(out)
    }

    fn node_cert(&self, i: usize) -> PathBuf {
        self.dirs.parties[i].join("tls.crt")
    }

    fn log_path(&self, i: usize) -> PathBuf {
        self.dirs
            .root
            .join("logs")
            .join(format!("{}.start{}.log", NAMES[i], self.starts))
    }

    /// The last `lines` lines of each node's log of the latest start.
    pub fn log_tails(&self, lines: usize) -> String {
        let mut out = String::new();
        for i in 0..self.dirs.parties.len() {
            let path = self.log_path(i);
            let text = std::fs::read_to_string(&path).unwrap_or_default();
            let all: Vec<&str> = text.lines().collect();
            out.push_str(&format!("--- {} (last lines)\n", path.display()));
            for l in &all[all.len().saturating_sub(lines)..] {
                out.push_str(l);
                out.push('\n');
            }
        }
        out
    }
}

/// Copies a folder tree (regular files and folders).
fn copy_dir(from: &Path, to: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let target = to.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            copy_dir(&entry.path(), &target)?;
        } else {
            std::fs::copy(entry.path(), &target)
                .with_context(|| format!("cannot copy {}", entry.path().display()))?;
        }
    }
    Ok(())
}
