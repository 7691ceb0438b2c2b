//! Mutual TLS between nodes and between clients and nodes, by pinned certificate.
//!
//! # Trust model
//!
//! There is no certificate authority. Every node and every client has a
//! self-signed ECDSA P-256 certificate ([`generate_tls_identity`]), and the
//! operator distributes the certificates (not the keys) out of band, in the
//! node configuration.
//!
//! * The **identity** of a certificate is its [`fingerprint`]: the SHA-256 of
//!   its DER encoding. Names, issuers, extensions and validity dates inside the
//!   certificate are not trusted and not checked; only the exact bytes matter.
//! * A server ([`server_config`]) **requires** a client certificate and accepts
//!   the handshake only if the client's end-entity certificate is one of the
//!   pinned ones. A client that sends a chain (intermediates) is refused.
//! * A client ([`client_config`]) accepts exactly one server certificate, the
//!   one pinned for the peer it dials. The server name and any chain the server
//!   sends are ignored; the server's end-entity certificate must be the pinned
//!   one.
//! * On both sides the handshake signature is verified against the public key
//!   of the presented (pinned) certificate, so a peer must hold the private key
//!   of the certificate it shows: copying a certificate is not enough.
//! * Only TLS 1.3 is offered, with the `ring` provider installed explicitly
//!   (no process-wide default provider is needed). Session resumption is off
//!   so that every connection is checked against the current pins.
//!
//! Removing a certificate from the pinned set and rebuilding the config
//! revokes it for new connections; connections already established stay up
//! until they close.
//!
//! # Use with tonic
//!
//! The server side is [`tls_incoming`], passed to tonic's
//! `Server::serve_with_incoming`. Handshakes run in their own tasks with a
//! timeout, so a slow or hostile client cannot stall the accept loop. tonic's
//! `Connected` impl for `tokio_rustls::server::TlsStream<TcpStream>` puts the
//! peer's certificates in the request extensions, and [`peer_fingerprint`]
//! reads the authenticated caller's identity from a request.
//!
//! The client side is [`connect`] / [`connect_lazy`]: the endpoint URI is
//! `http://` because TLS is done by our own connector, not by tonic.

pub(crate) mod channel;
pub(crate) mod identity;
pub(crate) mod listener;
pub mod peers;
pub(crate) mod pinning;
#[cfg(test)]
mod tests;

use sha2::{Digest, Sha256};

pub use channel::{connect, connect_lazy};
pub use identity::{cert_der_from_pem, generate_tls_identity, TlsIdentity, TlsKey};
pub use listener::{peer_fingerprint, tls_incoming, HANDSHAKE_TIMEOUT};
pub use pinning::{client_config, server_config};

/// ALPN protocol id of HTTP/2, the only protocol spoken over these connections.
const ALPN_H2: &[u8] = b"h2";

/// A SHA-256 fingerprint of a DER certificate: the identity of a TLS peer.
pub type Fingerprint = [u8; 32];

/// The SHA-256 of a certificate's DER encoding: the identity of its holder
/// everywhere in the node (pins, logs, authorisation).
pub fn fingerprint(cert_der: &[u8]) -> Fingerprint {
    Sha256::digest(cert_der).into()
}
