//! Connecting to a node's Signer API as a client (used by `tssctl`, the demo
//! and the tests).

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use anyhow::Context;
use proto::v1::signer_client::SignerClient;
use tonic::transport::Channel;

use crate::tls;

/// A Signer client over pinned mutual TLS.
pub type Client = SignerClient<Channel>;

/// Connects to `node` (whose certificate is `node_cert_pem`) as the client
/// whose certificate and key are `cert_pem`/`key_pem`.
pub async fn connect(
    node: SocketAddr,
    node_cert_pem: &str,
    cert_pem: &str,
    key_pem: &str,
) -> anyhow::Result<Client> {
    let me = tls::TlsIdentity::from_pem(cert_pem, key_pem)?;
    let cfg = tls::client_config(&me, tls::cert_der_from_pem(node_cert_pem)?)?;
    let ch = tls::connect(node, cfg, Duration::from_secs(5))
        .await
        .with_context(|| format!("cannot connect to {node}"))?;
    Ok(SignerClient::new(ch).max_decoding_message_size(crate::run::MAX_CLIENT_RESPONSE))
}

/// Connects using files: the node's `tls.crt` and a client folder holding
/// `client.crt` and `client.key` (as written by `tssctl client-init`).
pub async fn connect_with_files(
    node: SocketAddr,
    node_cert: &Path,
    client_dir: &Path,
) -> anyhow::Result<Client> {
    let read = |p: &Path| {
        std::fs::read_to_string(p).with_context(|| format!("cannot read {}", p.display()))
    };
    let key = zeroize::Zeroizing::new(read(&client_dir.join("client.key"))?);
    connect(
        node,
        &read(node_cert)?,
        &read(&client_dir.join("client.crt"))?,
        &key,
    )
    .await
}
