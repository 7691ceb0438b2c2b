//! Pinned-certificate verifiers and the TLS 1.3 configs built on them.

use std::collections::HashSet;
use std::sync::Arc;

use anyhow::{bail, Context as _};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::sign::SingleCertAndKey;
use rustls::{CertificateError, DigitallySignedStruct, DistinguishedName, SignatureScheme};

use super::{fingerprint, Fingerprint, TlsIdentity, ALPN_H2};

/// The crypto provider every config is built with.
pub(super) fn provider() -> Arc<CryptoProvider> {
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
pub(super) struct PinnedServerCertVerifier {
    pub(super) pinned: Fingerprint,
    pub(super) algorithms: WebPkiSupportedAlgorithms,
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
