//! The key's signature over its certificate is a sign request like any
//! other, with a reserved message: which requests are certificates, and
//! when a co-signer signs one (only the certificate it signed itself).
//! Shared by the ceremony that asks for it ([`super::ceremony`]) and the
//! co-signer's checks ([`super::cosign`]).

use tss_core::store::RecordKind;

use crate::error::ApiError;
use crate::state::Node;

/// Domain prefix of the message the key signs over its certificate: the key
/// signs SHA-256(domain || certificate body)
/// ([`::keygen::transcript::certificate_digest`]). Sign requests whose message
/// starts with it are reserved for key certificates.
pub const CERTIFICATE_DOMAIN: &[u8] = ::keygen::transcript::CERT_DOMAIN;

/// Request id of the key's signature over its certificate.
pub const CERTIFICATE_REQUEST_ID: &[u8] = b"key-certificate";

/// The certificate body this node signed for a key, if any (blocking).
pub fn load_certificate(node: &Node, key_id: &str) -> Result<Option<Vec<u8>>, ApiError> {
    Ok(node
        .store()
        .get(RecordKind::Transcript, &crate::keys::certificate(key_id))?
        .map(|b| b.expose().to_vec()))
}

/// Why a co-signer declines a message that starts with
/// [`CERTIFICATE_DOMAIN`].
#[derive(Debug, thiserror::Error)]
pub enum CertificateDecline {
    /// Certificates are signed over SHA-256 only.
    #[error("messages starting with the key-certificate domain are reserved for key certificates (SHA-256)")]
    NotSha256,
    /// This node has signed no certificate for the key.
    #[error("{node} has not certified key {key_id}: messages starting with the key-certificate domain are reserved for key certificates")]
    NotCertified {
        /// This node.
        node: String,
        /// The key.
        key_id: String,
    },
    /// The message is not the certificate this node signed.
    #[error("the message is not the certificate {node} signed for key {key_id} (messages starting with the key-certificate domain are reserved for key certificates)")]
    NotOurs {
        /// This node.
        node: String,
        /// The key.
        key_id: String,
    },
}

/// Whether a co-signer may sign `message`, which starts with
/// [`CERTIFICATE_DOMAIN`]: only SHA-256 over the domain and the certificate
/// this node signed itself. The inner `Err` is the reason to decline.
/// Blocking.
pub fn check_certificate_message(
    node: &Node,
    key_id: &str,
    sha256: bool,
    message: &[u8],
) -> Result<Result<(), CertificateDecline>, ApiError> {
    if !sha256 {
        return Ok(Err(CertificateDecline::NotSha256));
    }
    let Some(body) = load_certificate(node, key_id)? else {
        return Ok(Err(CertificateDecline::NotCertified {
            node: node.cfg().name.clone(),
            key_id: key_id.to_owned(),
        }));
    };
    if message.strip_prefix(CERTIFICATE_DOMAIN) != Some(body.as_slice()) {
        return Ok(Err(CertificateDecline::NotOurs {
            node: node.cfg().name.clone(),
            key_id: key_id.to_owned(),
        }));
    }
    Ok(Ok(()))
}
