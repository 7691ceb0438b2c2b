//! `tss-node run`: open the sealed store, load secrets, serve both gRPC
//! services over mutual TLS until SIGINT/SIGTERM.

use std::sync::Arc;

use anyhow::Context;
use proto::v1::{peer_server::PeerServer, signer_server::SignerServer};
use tss_core::identity::IdentityKey;
use tss_core::store::{RecordKind, Store, StoreError};

use crate::config::NodeConfig;
use crate::keys::{IDENTITY_KEY, TLS_KEY};
use crate::service::{peer::PeerService, signer::SignerService};
use crate::state::Node;
use crate::transport::peers::MAX_PEER_MESSAGE;

/// Largest Signer request accepted at the gRPC layer (the Sign handler
/// enforces the smaller configured message limit with a clear message).
pub const MAX_CLIENT_MESSAGE: usize = 4 << 20;

/// Largest Signer response (a keygen transcript file is a few MB).
pub const MAX_CLIENT_RESPONSE: usize = 16 << 20;

/// Opens the store with `pass` and builds the node (no network yet); also
/// returns the node's TLS identity (certificate file + key from the store).
pub async fn open_node(
    cfg: NodeConfig,
    pass: tss_core::secret::Passphrase,
) -> anyhow::Result<(Arc<Node>, crate::transport::TlsIdentity)> {
    let dir = cfg.store_dir.clone();
    let store = tokio::task::spawn_blocking(move || Store::open(&dir, &pass))
        .await?
        .map_err(|e| match e {
            StoreError::WrongPassphrase { .. } => {
                anyhow::anyhow!(
                    "cannot open the store: {e}. Check passphrase_file or TSS_PASSPHRASE."
                )
            }
            other => anyhow::anyhow!("cannot open the store: {other}"),
        })?;
    let id_secret = store
        .get(RecordKind::NodeSecret, IDENTITY_KEY)?
        .context("the store holds no identity key: was it created with `tss-node init`?")?;
    let identity = IdentityKey::from_secret(&id_secret)?;
    let tls_key = store
        .get(RecordKind::NodeSecret, TLS_KEY)?
        .context("the store holds no TLS key")?;
    let cert_pem = std::fs::read_to_string(&cfg.tls_cert)
        .with_context(|| format!("cannot read TLS certificate {}", cfg.tls_cert.display()))?;
    let key_pem = std::str::from_utf8(tls_key.expose()).context("stored TLS key is not PEM")?;
    let my_tls = crate::transport::TlsIdentity::from_pem(&cert_pem, key_pem)
        .context("the TLS certificate does not match the key in the store")?;
    let node = Node::new(cfg, store, identity, &my_tls)?;
    Ok((node, my_tls))
}

/// Runs the node until a shutdown signal; `pass` opens its store.
pub async fn run(cfg: NodeConfig, pass: tss_core::secret::Passphrase) -> anyhow::Result<()> {
    let listen = cfg.listen;
    if tss_core::BOTH_BACKENDS {
        tracing::warn!(
            "built with both big-integer backends: the slower pure-Rust one is in use; \
             for GMP build with `--no-default-features --features gmp`"
        );
    }
    let (node, my_tls) = open_node(cfg, pass).await?;
    match &node.cfg().policy {
        Some(p) => tracing::info!(
            policy = %p.display(),
            sha256 = %hex::encode(node.policy().sha256()),
            "signing policy loaded (reload with SIGHUP)"
        ),
        None => tracing::warn!(
            "no signing policy (`policy` in node.toml): this node refuses every signing request"
        ),
    }
    #[cfg(unix)]
    tokio::spawn(reload_on_sighup(node.clone()));
    // Before anything proposes sessions: the peers end those they still
    // hold with this node's previous process.
    node.peers().announce_start().await;
    if node.cfg().primes.pool_target > 0 {
        node.primes().start()?;
    }
    if let Some(rt) = &node.pool_runtime() {
        rt.handle()
            .spawn(crate::protocol::presign::refill_loop(node.clone()));
    }
    if let Some(addr) = node.cfg().metrics_listen {
        let l = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("cannot listen for metrics on {addr}"))?;
        tracing::info!(%addr, "metrics on http://{addr}/metrics");
        tokio::spawn(crate::metrics::http::serve(
            l,
            node.metrics().clone(),
            shutdown(),
        ));
    }
    let server_cfg = crate::transport::server_config(&my_tls, node.allowed_certs())?;
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen on {listen}"))?;
    tracing::info!(
        party = %node.cfg().name,
        %listen,
        peers = node.cfg().peers.len(),
        clients = node.cfg().clients.len(),
        primes_ready = node.primes().ready(),
        max_requests = node.cfg().limits.max_requests(),
        backend = tss_core::BACKEND,
        "tss-node serving"
    );
    let incoming = crate::transport::tls_incoming(listener, server_cfg);
    tonic::transport::Server::builder()
        .add_service(
            SignerServer::new(SignerService::new(node.clone()))
                .max_decoding_message_size(MAX_CLIENT_MESSAGE)
                .max_encoding_message_size(MAX_CLIENT_RESPONSE),
        )
        .add_service(
            PeerServer::new(PeerService::new(node.clone()))
                .max_decoding_message_size(MAX_PEER_MESSAGE)
                .max_encoding_message_size(MAX_PEER_MESSAGE),
        )
        .serve_with_incoming_shutdown(incoming, shutdown())
        .await?;
    node.store().flush()?;
    tracing::info!("tss-node stopped");
    Ok(())
}

/// Re-reads the policy on every SIGHUP; a bad file is refused and the
/// policy in force stays.
#[cfg(unix)]
async fn reload_on_sighup(node: Arc<Node>) {
    use tokio::signal::unix::{signal, SignalKind};
    let Ok(mut hup) = signal(SignalKind::hangup()) else {
        tracing::warn!("cannot listen for SIGHUP: the policy cannot be reloaded");
        return;
    };
    while hup.recv().await.is_some() {
        let n = node.clone();
        let r = tokio::task::spawn_blocking(move || n.reload_policy()).await;
        match r {
            Ok(Ok(())) => tracing::info!(
                sha256 = %hex::encode(node.policy().sha256()),
                "policy reloaded"
            ),
            Ok(Err(e)) => tracing::error!(
                error = %e,
                "policy reload refused; the previous policy stays in force"
            ),
            Err(e) => tracing::error!(error = %e, "policy reload failed"),
        }
    }
}

async fn shutdown() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}
