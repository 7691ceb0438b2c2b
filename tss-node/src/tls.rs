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

#![deny(missing_docs)]
#![forbid(unsafe_code)]

use std::collections::HashSet;
use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, bail, Context as _};
use hyper_util::rt::TokioIo;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::sign::{CertifiedKey, SingleCertAndKey};
use rustls::{CertificateError, DigitallySignedStruct, DistinguishedName, SignatureScheme};
use sha2::{Digest, Sha256};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, Semaphore};
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::Stream;
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

/// ALPN protocol id of HTTP/2, the only protocol spoken over these connections.
const ALPN_H2: &[u8] = b"h2";

/// Longest time a server-side TLS handshake may take before the connection is dropped.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Most connections accepted but not yet handed to the server (handshaking
/// or queued). When reached, the accept loop waits, leaving further
/// connections in the kernel's listen backlog.
const MAX_PENDING_CONNECTIONS: usize = 256;

/// Capacity of the queue of established connections handed to the server.
const INCOMING_QUEUE: usize = 32;

/// Pause after an accept error that is not about one connection (e.g. out of
/// file descriptors), so the loop does not spin.
const ACCEPT_ERROR_BACKOFF: Duration = Duration::from_millis(100);

/// A SHA-256 fingerprint of a DER certificate: the identity of a TLS peer.
pub type Fingerprint = [u8; 32];

/// The SHA-256 of a certificate's DER encoding: the identity of its holder
/// everywhere in the node (pins, logs, authorisation).
pub fn fingerprint(cert_der: &[u8]) -> Fingerprint {
    Sha256::digest(cert_der).into()
}

/// A TLS private key, PKCS#8 DER. Zeroized on drop; never printed.
#[derive(Zeroize, ZeroizeOnDrop)]
pub struct TlsKey(Vec<u8>);

impl fmt::Debug for TlsKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

impl TlsKey {
    /// The key in the borrowed form rustls takes, without copying the secret.
    fn as_der(&self) -> PrivateKeyDer<'_> {
        PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.0.as_slice()))
    }
}

/// A node's or a client's TLS identity: a self-signed certificate and its private key.
pub struct TlsIdentity {
    /// The certificate, DER. Public: this is what peers pin.
    pub cert_der: Vec<u8>,
    key: TlsKey,
}

impl fmt::Debug for TlsIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsIdentity")
            .field("fingerprint", &hex::encode(self.fingerprint()))
            .field("key", &self.key)
            .finish()
    }
}

/// Creates a new self-signed ECDSA P-256 identity with common name and DNS
/// (or IP) subject alternative name `name`, valid from 1975 to 4096: validity
/// is not what makes it trusted, pinning is.
///
/// Fails if `name` is not a valid DNS name or IP address.
pub fn generate_tls_identity(name: &str) -> anyhow::Result<TlsIdentity> {
    if ServerName::try_from(name).is_err() {
        bail!("TLS certificate name {name:?} is not a DNS name or IP address");
    }
    let key_pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
        .context("generating the TLS key")?;
    let mut params = rcgen::CertificateParams::new(vec![name.to_owned()]).with_context(|| {
        format!("TLS certificate name {name:?} is not a DNS name or IP address")
    })?;
    let mut dn = rcgen::DistinguishedName::new();
    dn.push(rcgen::DnType::CommonName, name);
    params.distinguished_name = dn;
    params.is_ca = rcgen::IsCa::ExplicitNoCa;
    params.key_usages = vec![rcgen::KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![
        rcgen::ExtendedKeyUsagePurpose::ServerAuth,
        rcgen::ExtendedKeyUsagePurpose::ClientAuth,
    ];
    let cert = params
        .self_signed(&key_pair)
        .context("self-signing the TLS certificate")?;
    Ok(TlsIdentity {
        cert_der: cert.der().to_vec(),
        key: TlsKey(key_pair.serialize_der()),
    })
}

impl TlsIdentity {
    /// Loads an identity from a PEM certificate and a PEM PKCS#8 private key
    /// (`-----BEGIN PRIVATE KEY-----`), checking that the key belongs to the
    /// certificate and is usable by rustls.
    pub fn from_pem(cert_pem: &str, key_pem: &str) -> anyhow::Result<Self> {
        let cert_der = cert_der_from_pem(cert_pem)?;
        // Errors from the PEM parser are not forwarded: they could quote the
        // key file.
        let mut parsed = PrivatePkcs8KeyDer::from_pem_slice(key_pem.as_bytes())
            .map_err(|_| anyhow!("TLS key file is not a PEM PKCS#8 private key"))?;
        let key = TlsKey(parsed.secret_pkcs8_der().to_vec());
        parsed.zeroize();
        let identity = TlsIdentity { cert_der, key };
        identity
            .certified_key()
            .context("TLS key does not match the certificate or is not supported")?;
        Ok(identity)
    }

    /// The certificate, PEM.
    pub fn cert_pem(&self) -> String {
        let mut out = String::with_capacity(pem_len("CERTIFICATE", self.cert_der.len()));
        pem_encode_into(&mut out, "CERTIFICATE", &self.cert_der);
        out
    }

    /// The private key, PEM PKCS#8, in a buffer zeroized on drop. Written
    /// with no intermediate copies, so nothing of the key is left behind.
    pub fn key_pem(&self) -> Zeroizing<String> {
        // Capacity reserved up front: a reallocation would leave a copy behind.
        let mut out = Zeroizing::new(String::with_capacity(pem_len(
            "PRIVATE KEY",
            self.key.0.len(),
        )));
        pem_encode_into(&mut out, "PRIVATE KEY", &self.key.0);
        out
    }

    /// The fingerprint of this identity's certificate.
    pub fn fingerprint(&self) -> Fingerprint {
        fingerprint(&self.cert_der)
    }

    /// Signs `msg` with this identity's private key, as a client signs its
    /// requests ([`crate::client_auth`]): ECDSA P-256 with SHA-256 (DER) for
    /// the keys `init` and `client-init` make; P-384/SHA-384 and Ed25519
    /// keys also work.
    pub fn sign(&self, msg: &[u8]) -> anyhow::Result<Vec<u8>> {
        let key = rustls::crypto::ring::sign::any_supported_type(&self.key.as_der())
            .map_err(|_| anyhow!("the TLS key cannot sign"))?;
        let signer = key
            .choose_scheme(&[
                SignatureScheme::ECDSA_NISTP256_SHA256,
                SignatureScheme::ECDSA_NISTP384_SHA384,
                SignatureScheme::ED25519,
            ])
            .ok_or_else(|| anyhow!("the TLS key is not ECDSA P-256, P-384 or Ed25519"))?;
        signer
            .sign(msg)
            .map_err(|e| anyhow!("signing with the TLS key failed: {e}"))
    }

    /// The certificate with its loaded signing key; fails if they do not match.
    fn certified_key(&self) -> Result<CertifiedKey, rustls::Error> {
        let signing_key = rustls::crypto::ring::sign::any_supported_type(&self.key.as_der())?;
        let certified = CertifiedKey::new(
            vec![CertificateDer::from(self.cert_der.clone())],
            signing_key,
        );
        certified.keys_match()?;
        Ok(certified)
    }
}

/// The DER of the first certificate in a PEM text.
pub fn cert_der_from_pem(pem: &str) -> anyhow::Result<Vec<u8>> {
    let cert = CertificateDer::from_pem_slice(pem.as_bytes())
        .map_err(|e| anyhow!("not a PEM certificate: {e}"))?;
    Ok(cert.as_ref().to_vec())
}

/// Exact length of [`pem_encode_into`]'s output.
fn pem_len(label: &str, der_len: usize) -> usize {
    let header = "-----BEGIN -----\n".len() + label.len();
    let footer = "-----END -----\n".len() + label.len();
    let body = der_len.div_ceil(3) * 4 + der_len.div_ceil(PEM_LINE_BYTES);
    header + body + footer
}

/// Input bytes per PEM line (64 base64 characters).
const PEM_LINE_BYTES: usize = 48;

/// Appends `der` as a PEM block (RFC 7468) to `out`, without temporaries.
fn pem_encode_into(out: &mut String, label: &str, der: &[u8]) {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let sextet = |n: u32, shift: u32| char::from(ALPHABET[((n >> shift) & 0x3f) as usize]);
    out.push_str("-----BEGIN ");
    out.push_str(label);
    out.push_str("-----\n");
    for line in der.chunks(PEM_LINE_BYTES) {
        for group in line.chunks(3) {
            let byte = |i: usize| u32::from(group.get(i).copied().unwrap_or(0));
            let n = (byte(0) << 16) | (byte(1) << 8) | byte(2);
            out.push(sextet(n, 18));
            out.push(sextet(n, 12));
            out.push(if group.len() > 1 { sextet(n, 6) } else { '=' });
            out.push(if group.len() > 2 { sextet(n, 0) } else { '=' });
        }
        out.push('\n');
    }
    out.push_str("-----END ");
    out.push_str(label);
    out.push_str("-----\n");
}

/// The crypto provider every config is built with.
fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Server-side verifier: a client certificate is required and must be pinned.
#[derive(Debug)]
struct PinnedClientCertVerifier {
    allowed: HashSet<Fingerprint>,
    algorithms: WebPkiSupportedAlgorithms,
}

impl ClientCertVerifier for PinnedClientCertVerifier {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        true
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let fp = fingerprint(end_entity);
        if !intermediates.is_empty() {
            tracing::debug!(
                fingerprint = %hex::encode(fp),
                intermediates = intermediates.len(),
                "TLS client refused: sent a certificate chain, expected a single pinned certificate"
            );
            return Err(CertificateError::ApplicationVerificationFailure.into());
        }
        if !self.allowed.contains(&fp) {
            tracing::debug!(
                fingerprint = %hex::encode(fp),
                "TLS client refused: certificate is not pinned"
            );
            return Err(CertificateError::ApplicationVerificationFailure.into());
        }
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// Client-side verifier: the server's end-entity certificate must be the pinned one.
#[derive(Debug)]
struct PinnedServerCertVerifier {
    pinned: Fingerprint,
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for PinnedServerCertVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let fp = fingerprint(end_entity);
        if fp != self.pinned {
            tracing::debug!(
                fingerprint = %hex::encode(fp),
                expected = %hex::encode(self.pinned),
                "TLS server refused: certificate is not the pinned one"
            );
            return Err(CertificateError::ApplicationVerificationFailure.into());
        }
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// A TLS 1.3 server config presenting `me` and accepting only clients whose
/// certificate is one of `allowed_client_certs` (DER). ALPN: `h2`.
///
/// Fails if no client certificate is pinned (nobody could ever connect) or if
/// `me`'s key does not match its certificate.
pub fn server_config(
    me: &TlsIdentity,
    allowed_client_certs: Vec<Vec<u8>>,
) -> anyhow::Result<Arc<rustls::ServerConfig>> {
    if allowed_client_certs.is_empty() {
        bail!("TLS server config: no client certificate is pinned");
    }
    let provider = provider();
    let verifier = PinnedClientCertVerifier {
        allowed: allowed_client_certs
            .iter()
            .map(|der| fingerprint(der))
            .collect(),
        algorithms: provider.signature_verification_algorithms,
    };
    let certified = me.certified_key().context("TLS server identity")?;
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .context("TLS server config")?
        .with_client_cert_verifier(Arc::new(verifier))
        .with_cert_resolver(Arc::new(SingleCertAndKey::from(certified)));
    config.alpn_protocols = vec![ALPN_H2.to_vec()];
    // No resumption: every connection is checked against the current pins.
    config.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
    config.send_tls13_tickets = 0;
    Ok(Arc::new(config))
}

/// A TLS 1.3 client config presenting `me` and accepting only a server whose
/// certificate is exactly `pinned_server_cert` (DER). ALPN: `h2`.
pub fn client_config(
    me: &TlsIdentity,
    pinned_server_cert: Vec<u8>,
) -> anyhow::Result<Arc<rustls::ClientConfig>> {
    if pinned_server_cert.is_empty() {
        bail!("TLS client config: the pinned server certificate is empty");
    }
    let provider = provider();
    let verifier = PinnedServerCertVerifier {
        pinned: fingerprint(&pinned_server_cert),
        algorithms: provider.signature_verification_algorithms,
    };
    let certified = me.certified_key().context("TLS client identity")?;
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .context("TLS client config")?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_client_cert_resolver(Arc::new(SingleCertAndKey::from(certified)));
    config.alpn_protocols = vec![ALPN_H2.to_vec()];
    config.resumption = rustls::client::Resumption::disabled();
    Ok(Arc::new(config))
}

/// Accepts TCP connections on `listener` and yields those that complete a
/// TLS handshake under `config`, for tonic's `Server::serve_with_incoming`.
///
/// Each handshake runs in its own task, limited to [`HANDSHAKE_TIMEOUT`].
/// Failed or timed-out handshakes are logged at debug level with the peer's
/// address and dropped; they never end the stream. The stream yields only
/// `Ok` items (the `Result` is what tonic expects). Dropping the stream stops
/// the accept loop and closes the listener.
///
/// # Panics
///
/// Must be called from within a Tokio runtime (it spawns the accept loop).
pub fn tls_incoming(
    listener: TcpListener,
    config: Arc<rustls::ServerConfig>,
) -> impl Stream<Item = Result<tokio_rustls::server::TlsStream<TcpStream>, io::Error>> {
    let (tx, rx) = mpsc::channel(INCOMING_QUEUE);
    tokio::spawn(accept_loop(
        listener,
        tokio_rustls::TlsAcceptor::from(config),
        tx,
    ));
    ReceiverStream::new(rx)
}

type IncomingSender = mpsc::Sender<Result<tokio_rustls::server::TlsStream<TcpStream>, io::Error>>;

async fn accept_loop(
    listener: TcpListener,
    acceptor: tokio_rustls::TlsAcceptor,
    tx: IncomingSender,
) {
    let pending = Arc::new(Semaphore::new(MAX_PENDING_CONNECTIONS));
    loop {
        let permit = tokio::select! {
            () = tx.closed() => break,
            permit = Arc::clone(&pending).acquire_owned() => match permit {
                Ok(permit) => permit,
                // The semaphore is never closed.
                Err(_) => break,
            },
        };
        let (tcp, peer) = tokio::select! {
            () = tx.closed() => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) if is_per_connection_error(&e) => {
                    tracing::debug!(error = %e, "TCP accept failed");
                    continue;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "TCP accept failed; backing off");
                    tokio::time::sleep(ACCEPT_ERROR_BACKOFF).await;
                    continue;
                }
            },
        };
        let acceptor = acceptor.clone();
        let tx = tx.clone();
        tokio::spawn(async move {
            // Held until the connection is handed over, bounding the tasks.
            let _permit = permit;
            if let Err(e) = tcp.set_nodelay(true) {
                tracing::debug!(%peer, error = %e, "could not set TCP_NODELAY");
            }
            let stream = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                Ok(Ok(stream)) => stream,
                Ok(Err(e)) => {
                    tracing::debug!(%peer, error = %e, "TLS handshake failed");
                    return;
                }
                Err(_) => {
                    tracing::debug!(%peer, timeout = ?HANDSHAKE_TIMEOUT, "TLS handshake timed out");
                    return;
                }
            };
            let client = stream
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|certs| certs.first())
                .map(|cert| hex::encode(fingerprint(cert)));
            tracing::debug!(%peer, fingerprint = ?client, "TLS connection established");
            if tx.send(Ok(stream)).await.is_err() {
                tracing::debug!(%peer, "TLS connection dropped: server is shutting down");
            }
        });
    }
}

/// Accept errors that concern one connection only; the next accept may succeed at once.
fn is_per_connection_error(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionRefused
            | io::ErrorKind::Interrupted
    )
}

/// The fingerprint of the authenticated caller of a request served over
/// [`tls_incoming`]: the first (end-entity) certificate it presented.
///
/// `None` if the request did not come over such a connection (for example
/// in a unit test that builds a `Request` by hand); treat that as
/// unauthenticated.
pub fn peer_fingerprint<T>(req: &tonic::Request<T>) -> Option<Fingerprint> {
    let certs = req.peer_certs()?;
    certs.first().map(|cert| fingerprint(cert))
}

/// Builds the endpoint for `addr`. The scheme is `http` because TLS is done
/// by our connector, not by tonic.
fn endpoint(
    addr: SocketAddr,
    connect_timeout: Duration,
) -> Result<tonic::transport::Endpoint, tonic::transport::Error> {
    let endpoint = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))?;
    Ok(endpoint.connect_timeout(connect_timeout))
}

/// A connector dialling `addr` (whatever the URI says) and running our TLS
/// client handshake. tonic applies the connect timeout to the whole of it.
fn tls_connector(
    addr: SocketAddr,
    config: Arc<rustls::ClientConfig>,
) -> impl tower::Service<
    tonic::transport::Uri,
    Response = TokioIo<tokio_rustls::client::TlsStream<TcpStream>>,
    Error = io::Error,
    Future = impl std::future::Future<
        Output = Result<TokioIo<tokio_rustls::client::TlsStream<TcpStream>>, io::Error>,
    > + Send,
> + Send
       + Clone
       + 'static {
    let tls = tokio_rustls::TlsConnector::from(config);
    tower::service_fn(move |_uri: tonic::transport::Uri| {
        let tls = tls.clone();
        async move {
            let tcp = TcpStream::connect(addr).await?;
            tcp.set_nodelay(true)?;
            // The pinned-certificate verifier ignores the name; an IP name
            // also keeps SNI out of the ClientHello.
            let stream = tls.connect(ServerName::from(addr.ip()), tcp).await?;
            Ok(TokioIo::new(stream))
        }
    })
}

/// Opens a gRPC channel to the node at `addr` over mutual TLS with `config`
/// (from [`client_config`], which pins that node's certificate).
///
/// Fails if the TCP connection or the TLS handshake fails or exceeds
/// `connect_timeout`. Under TLS 1.3 the server checks our certificate after
/// our side of the handshake completes, so a server that does not pin us is
/// noticed on the first call, not here.
pub async fn connect(
    addr: SocketAddr,
    config: Arc<rustls::ClientConfig>,
    connect_timeout: Duration,
) -> Result<tonic::transport::Channel, tonic::transport::Error> {
    endpoint(addr, connect_timeout)?
        .connect_with_connector(tls_connector(addr, config))
        .await
}

/// Like [`connect`], but connects on first use and reconnects on later calls
/// after a failure, so a peer that is down when the node starts does not
/// stop it from starting.
pub fn connect_lazy(
    addr: SocketAddr,
    config: Arc<rustls::ClientConfig>,
    connect_timeout: Duration,
) -> Result<tonic::transport::Channel, tonic::transport::Error> {
    Ok(endpoint(addr, connect_timeout)?.connect_with_connector_lazy(tls_connector(addr, config)))
}

#[cfg(test)]
#[allow(non_snake_case)]
mod tests {
    use super::*;

    use std::convert::Infallible;
    use std::pin::Pin;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio_stream::StreamExt;
    use tonic::codegen::http;
    use tower::Service as _;

    type Incoming = Pin<
        Box<
            dyn Stream<Item = Result<tokio_rustls::server::TlsStream<TcpStream>, io::Error>> + Send,
        >,
    >;

    /// How long a test waits for something that should happen promptly.
    const WAIT: Duration = Duration::from_secs(5);
    /// How long a test waits to conclude that something did not happen.
    const QUIET: Duration = Duration::from_millis(300);

    async fn start_server(me: &TlsIdentity, allowed: Vec<Vec<u8>>) -> (SocketAddr, Incoming) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let incoming = tls_incoming(listener, server_config(me, allowed).unwrap());
        (addr, Box::pin(incoming))
    }

    async fn dial(
        addr: SocketAddr,
        config: Arc<rustls::ClientConfig>,
    ) -> io::Result<tokio_rustls::client::TlsStream<TcpStream>> {
        let tcp = TcpStream::connect(addr).await?;
        tokio_rustls::TlsConnector::from(config)
            .connect(ServerName::from(addr.ip()), tcp)
            .await
    }

    /// After a handshake the server may refuse, the client's first read fails
    /// or sees EOF instead of data.
    async fn assert_refused_after_handshake(
        mut client: tokio_rustls::client::TlsStream<TcpStream>,
    ) {
        let _ = client.write_all(b"ping").await;
        let mut buf = [0u8; 16];
        match tokio::time::timeout(WAIT, client.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => {}
            other => panic!("client was not refused: {other:?}"),
        }
    }

    #[tokio::test]
    async fn mtls__should_accept_pinned_client_and_expose_its_fingerprint() {
        // Given a server pinning the client, and a client pinning the server
        let server_id = generate_tls_identity("node-a").unwrap();
        let client_id = generate_tls_identity("node-b").unwrap();
        let (addr, mut incoming) = start_server(&server_id, vec![client_id.cert_der.clone()]).await;
        let config = client_config(&client_id, server_id.cert_der.clone()).unwrap();

        // When the client connects
        let mut client = dial(addr, config).await.unwrap();
        let mut server = tokio::time::timeout(WAIT, incoming.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();

        // Then each side sees the other's certificate, over TLS 1.3 and h2
        let (_, session) = server.get_ref();
        let seen = session.peer_certificates().unwrap();
        assert_eq!(seen.len(), 1);
        assert_eq!(fingerprint(&seen[0]), client_id.fingerprint());
        assert_eq!(session.alpn_protocol(), Some(ALPN_H2));
        assert_eq!(
            session.protocol_version(),
            Some(rustls::ProtocolVersion::TLSv1_3)
        );
        let server_seen = client.get_ref().1.peer_certificates().unwrap();
        assert_eq!(fingerprint(&server_seen[0]), server_id.fingerprint());

        // And data flows both ways
        client.write_all(b"ping").await.unwrap();
        let mut buf = [0u8; 4];
        server.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"ping");
        server.write_all(b"pong").await.unwrap();
        client.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"pong");
    }

    #[tokio::test]
    async fn mtls__should_refuse_client_with_unpinned_cert() {
        // Given a server pinning client B only
        let server_id = generate_tls_identity("node-a").unwrap();
        let pinned = generate_tls_identity("node-b").unwrap();
        let stranger = generate_tls_identity("node-b").unwrap();
        let (addr, mut incoming) = start_server(&server_id, vec![pinned.cert_der.clone()]).await;

        // When a client with another certificate (same name) connects
        let config = client_config(&stranger, server_id.cert_der.clone()).unwrap();
        if let Ok(client) = dial(addr, config).await {
            assert_refused_after_handshake(client).await;
        }

        // Then the server yields no connection, and keeps accepting pinned clients
        assert!(tokio::time::timeout(QUIET, incoming.next()).await.is_err());
        let config = client_config(&pinned, server_id.cert_der.clone()).unwrap();
        let _client = dial(addr, config).await.unwrap();
        let server = tokio::time::timeout(WAIT, incoming.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        let seen = server.get_ref().1.peer_certificates().unwrap();
        assert_eq!(fingerprint(&seen[0]), pinned.fingerprint());
    }

    #[tokio::test]
    async fn mtls__should_refuse_client_without_cert() {
        // Given a server and a client that pins it but presents no certificate
        let server_id = generate_tls_identity("node-a").unwrap();
        let client_id = generate_tls_identity("node-b").unwrap();
        let (addr, mut incoming) = start_server(&server_id, vec![client_id.cert_der.clone()]).await;
        let provider = provider();
        let verifier = PinnedServerCertVerifier {
            pinned: server_id.fingerprint(),
            algorithms: provider.signature_verification_algorithms,
        };
        let mut config = rustls::ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])
            .unwrap()
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(verifier))
            .with_no_client_auth();
        config.alpn_protocols = vec![ALPN_H2.to_vec()];

        // When it connects, then it is refused and the server yields nothing
        if let Ok(client) = dial(addr, Arc::new(config)).await {
            assert_refused_after_handshake(client).await;
        }
        assert!(tokio::time::timeout(QUIET, incoming.next()).await.is_err());
    }

    #[tokio::test]
    async fn mtls__should_refuse_server_with_unpinned_cert() {
        // Given a server that pins the client, but whose certificate is not
        // the one the client pins
        let server_id = generate_tls_identity("node-a").unwrap();
        let impostor = generate_tls_identity("node-a").unwrap();
        let client_id = generate_tls_identity("node-b").unwrap();
        let (addr, mut incoming) = start_server(&impostor, vec![client_id.cert_der.clone()]).await;

        // When the client connects
        let config = client_config(&client_id, server_id.cert_der.clone()).unwrap();
        let result = dial(addr, config).await;

        // Then the client refuses the handshake and the server yields nothing
        let err = result.expect_err("client accepted an unpinned server");
        assert!(
            err.to_string().contains("certificate"),
            "unexpected error: {err}"
        );
        assert!(tokio::time::timeout(QUIET, incoming.next()).await.is_err());
    }

    #[tokio::test]
    async fn incoming__should_not_be_blocked_by_silent_client() {
        // Given a server and a TCP client that never starts a handshake
        let server_id = generate_tls_identity("node-a").unwrap();
        let client_id = generate_tls_identity("node-b").unwrap();
        let (addr, mut incoming) = start_server(&server_id, vec![client_id.cert_der.clone()]).await;
        let _silent = TcpStream::connect(addr).await.unwrap();

        // When a pinned client connects afterwards, then it is served at once
        let config = client_config(&client_id, server_id.cert_der.clone()).unwrap();
        let _client = tokio::time::timeout(WAIT, dial(addr, config))
            .await
            .unwrap()
            .unwrap();
        let server = tokio::time::timeout(WAIT, incoming.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert!(server.get_ref().1.peer_certificates().is_some());
    }

    #[test]
    fn tls_key__should_print_redacted() {
        let id = generate_tls_identity("node-a").unwrap();
        assert_eq!(format!("{:?}", id.key), "<redacted>");
        let shown = format!("{id:?}");
        assert!(shown.contains("<redacted>"));
        assert!(shown.contains(&hex::encode(id.fingerprint())));
        let pem = id.key_pem();
        let body: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
        assert!(!shown.contains(&body[..16]));
    }

    #[test]
    fn pem__should_round_trip_and_refuse_mismatched_key() {
        // Given an identity written as PEM
        let id = generate_tls_identity("node-a").unwrap();
        let cert_pem = id.cert_pem();
        let key_pem = id.key_pem();
        assert!(cert_pem.starts_with("-----BEGIN CERTIFICATE-----\n"));
        assert!(key_pem.starts_with("-----BEGIN PRIVATE KEY-----\n"));
        assert!(cert_pem.lines().all(|l| l.len() <= 64));
        assert_eq!(cert_pem.len(), pem_len("CERTIFICATE", id.cert_der.len()));
        assert_eq!(key_pem.len(), pem_len("PRIVATE KEY", id.key.0.len()));

        // When it is read back, then it is the same identity
        assert_eq!(cert_der_from_pem(&cert_pem).unwrap(), id.cert_der);
        let back = TlsIdentity::from_pem(&cert_pem, &key_pem).unwrap();
        assert_eq!(back.cert_der, id.cert_der);
        assert_eq!(back.key.0, id.key.0);

        // And a key of another identity, or garbage, is refused
        let other = generate_tls_identity("node-a").unwrap();
        assert!(TlsIdentity::from_pem(&cert_pem, &other.key_pem()).is_err());
        assert!(TlsIdentity::from_pem(&cert_pem, "not a key").is_err());
        assert!(TlsIdentity::from_pem(&key_pem, &key_pem).is_err());
        assert!(
            cert_der_from_pem("-----BEGIN CERTIFICATE-----\n%%%\n-----END CERTIFICATE-----\n")
                .is_err()
        );
    }

    #[test]
    fn pem_encode__should_match_rfc4648_vectors() {
        for (input, expected) in [
            (&b""[..], ""),
            (b"f", "Zg=="),
            (b"fo", "Zm8="),
            (b"foo", "Zm9v"),
            (b"foob", "Zm9vYg=="),
            (b"fooba", "Zm9vYmE="),
            (b"foobar", "Zm9vYmFy"),
        ] {
            let mut out = String::new();
            pem_encode_into(&mut out, "X", input);
            let body: String = out.lines().filter(|l| !l.starts_with("-----")).collect();
            assert_eq!(body, expected);
            assert_eq!(out.len(), pem_len("X", input.len()));
        }
    }

    #[test]
    fn config__should_refuse_empty_pins() {
        let id = generate_tls_identity("node-a").unwrap();
        assert!(server_config(&id, vec![]).is_err());
        assert!(client_config(&id, vec![]).is_err());
        assert!(generate_tls_identity("not a dns name!").is_err());
    }

    /// A raw gRPC-shaped service that answers with the caller's fingerprint
    /// in a response header, as seen through [`peer_fingerprint`].
    #[derive(Clone)]
    struct WhoAmI;

    impl tonic::server::NamedService for WhoAmI {
        const NAME: &'static str = "tss.test.WhoAmI";
    }

    impl tower::Service<http::Request<tonic::body::Body>> for WhoAmI {
        type Response = http::Response<tonic::body::Body>;
        type Error = Infallible;
        type Future = std::future::Ready<Result<Self::Response, Infallible>>;

        fn poll_ready(
            &mut self,
            _cx: &mut std::task::Context<'_>,
        ) -> std::task::Poll<Result<(), Infallible>> {
            std::task::Poll::Ready(Ok(()))
        }

        fn call(&mut self, req: http::Request<tonic::body::Body>) -> Self::Future {
            let req = tonic::Request::from_http(req);
            let who = peer_fingerprint(&req).map_or_else(|| "none".to_owned(), hex::encode);
            let resp = http::Response::builder()
                .header("content-type", "application/grpc")
                .header("grpc-status", "0")
                .header("x-peer-fingerprint", who)
                .body(tonic::body::Body::empty())
                .unwrap();
            std::future::ready(Ok(resp))
        }
    }

    fn who_am_i_request(addr: SocketAddr) -> http::Request<tonic::body::Body> {
        http::Request::builder()
            .method("POST")
            .uri(format!("http://{addr}/tss.test.WhoAmI/Get"))
            .header("content-type", "application/grpc")
            .header("te", "trailers")
            .body(tonic::body::Body::empty())
            .unwrap()
    }

    async fn who_am_i(
        channel: &mut tonic::transport::Channel,
        addr: SocketAddr,
    ) -> Result<String, tonic::transport::Error> {
        let resp = tokio::time::timeout(WAIT, async {
            std::future::poll_fn(|cx| channel.poll_ready(cx)).await?;
            channel.call(who_am_i_request(addr)).await
        })
        .await
        .expect("gRPC call timed out")?;
        Ok(resp
            .headers()
            .get("x-peer-fingerprint")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned())
    }

    async fn serve_who_am_i(listener: TcpListener, config: Arc<rustls::ServerConfig>) {
        let incoming = tls_incoming(listener, config);
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(WhoAmI)
                .serve_with_incoming(incoming),
        );
    }

    #[tokio::test]
    async fn connect__should_reach_tonic_server_which_sees_client_fingerprint() {
        // Given a tonic server over tls_incoming, pinning the client
        let server_id = generate_tls_identity("node-a").unwrap();
        let client_id = generate_tls_identity("node-b").unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        serve_who_am_i(
            listener,
            server_config(&server_id, vec![client_id.cert_der.clone()]).unwrap(),
        )
        .await;

        // When the client connects and calls
        let config = client_config(&client_id, server_id.cert_der.clone()).unwrap();
        let mut channel = connect(addr, config, WAIT).await.unwrap();
        let who = who_am_i(&mut channel, addr).await.unwrap();

        // Then the handler saw the client's fingerprint via peer_fingerprint
        assert_eq!(who, hex::encode(client_id.fingerprint()));
    }

    #[tokio::test]
    async fn connect__should_fail_against_server_with_unpinned_cert() {
        let server_id = generate_tls_identity("node-a").unwrap();
        let impostor = generate_tls_identity("node-a").unwrap();
        let client_id = generate_tls_identity("node-b").unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        serve_who_am_i(
            listener,
            server_config(&impostor, vec![client_id.cert_der.clone()]).unwrap(),
        )
        .await;

        let config = client_config(&client_id, server_id.cert_der.clone()).unwrap();
        assert!(connect(addr, config, WAIT).await.is_err());
    }

    #[tokio::test]
    async fn connect_lazy__should_start_while_peer_down_and_reconnect_later() {
        // Given a lazy channel to an address where nothing listens yet
        let server_id = generate_tls_identity("node-a").unwrap();
        let client_id = generate_tls_identity("node-b").unwrap();
        let addr = {
            let probe = TcpListener::bind("127.0.0.1:0").await.unwrap();
            probe.local_addr().unwrap()
        };
        let config = client_config(&client_id, server_id.cert_der.clone()).unwrap();
        let mut channel = connect_lazy(addr, config, Duration::from_secs(1)).unwrap();

        // When a call is made while the peer is down, then it fails
        assert!(who_am_i(&mut channel, addr).await.is_err());

        // And when the peer comes up, the same channel reaches it
        let listener = TcpListener::bind(addr).await.unwrap();
        serve_who_am_i(
            listener,
            server_config(&server_id, vec![client_id.cert_der.clone()]).unwrap(),
        )
        .await;
        let mut who = who_am_i(&mut channel, addr).await;
        for _ in 0..20 {
            if who.is_ok() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
            who = who_am_i(&mut channel, addr).await;
        }
        assert_eq!(who.unwrap(), hex::encode(client_id.fingerprint()));
    }
}
