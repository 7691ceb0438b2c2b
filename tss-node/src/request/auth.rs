//! End-to-end request authentication: who asked, learnt from the client's
//! own signature over its request ([`tss_core::authorization`]), checked by
//! every party against the certificate it pins for that client.
//!
//! The coordinator checks that the signer is the TLS caller; a co-signer
//! checks the signature over the request bytes it was sent (the same bytes
//! it decodes and judges) and applies the policy of the client whose
//! signature verified. No party takes a client name from another party.

use std::time::{SystemTime, UNIX_EPOCH};

use proto::v1 as pb;
use rustls::pki_types::CertificateDer;
use tss_core::authorization::{self, AuthorizationError, ClientRequest, Operation};

use crate::config::ClientEntry;
use crate::error::ApiError;
use crate::state::Node;

/// Signature algorithms a client's certificate key may use.
static ALGORITHMS: &[&dyn rustls::pki_types::SignatureVerificationAlgorithm] = &[
    webpki::ring::ECDSA_P256_SHA256,
    webpki::ring::ECDSA_P384_SHA384,
    webpki::ring::ED25519,
];

/// Why a client authorisation is refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AuthError {
    /// The request carries no authorisation.
    #[error("the request carries no client authorization: sign it with the client's TLS key (docs/FORMATS.md, \"Client request authorisation\"; tssctl and tss_node::client do it)")]
    Missing,
    /// The named certificate is not a client this node pins.
    #[error("the request is signed for a certificate that is not a client of {node}")]
    UnknownClient {
        /// This node.
        node: String,
    },
    /// The signature does not verify under the client's pinned certificate.
    #[error("the client signature does not verify under {client}'s pinned certificate: the request differs from what {client} signed, or it was signed with another key")]
    BadSignature {
        /// The client named.
        client: String,
    },
    /// Signed by another client than the TLS caller.
    #[error("the request is signed by {signer}, but the caller is {caller}: a client signs its own requests")]
    NotTheCaller {
        /// Who signed.
        signer: String,
        /// Who called.
        caller: String,
    },
    /// Expired, too long valid, or a field out of range.
    #[error(transparent)]
    Invalid(#[from] AuthorizationError),
}

impl From<AuthError> for ApiError {
    fn from(e: AuthError) -> Self {
        match e {
            AuthError::Invalid(_) => ApiError::Invalid(e.to_string()),
            _ => ApiError::Unauthenticated(e.to_string()),
        }
    }
}

fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Whether `signature` over `msg` verifies under the key of certificate
/// `cert_der`.
pub fn verify_signature(cert_der: &[u8], msg: &[u8], signature: &[u8]) -> bool {
    let der = CertificateDer::from(cert_der);
    let Ok(cert) = webpki::EndEntityCert::try_from(&der) else {
        return false;
    };
    ALGORITHMS
        .iter()
        .any(|alg| cert.verify_signature(*alg, msg, signature).is_ok())
}

/// Checks `auth` over `request` (blocking-free: one signature check) and
/// returns the client that signed it, as pinned by this node.
pub fn verify(
    node: &Node,
    request: &ClientRequest<'_>,
    auth: Option<&pb::ClientAuthorization>,
) -> Result<ClientEntry, AuthError> {
    let auth = auth.ok_or(AuthError::Missing)?;
    let unknown = || AuthError::UnknownClient {
        node: node.cfg().name.clone(),
    };
    let fp: crate::transport::Fingerprint = auth
        .client_cert_sha256
        .as_slice()
        .try_into()
        .map_err(|_| unknown())?;
    let (client, cert) = node.client_with_cert(&fp).ok_or_else(unknown)?;
    let msg = request.signed_bytes(auth.expires_unix)?;
    if !verify_signature(cert, &msg, &auth.signature) {
        return Err(AuthError::BadSignature {
            client: client.name.clone(),
        });
    }
    authorization::check_expiry(auth.expires_unix, now_unix())?;
    Ok(client.clone())
}

/// [`verify`] at the node the client called: the signer must be the caller.
pub fn verify_caller(
    node: &Node,
    caller: &ClientEntry,
    request: &ClientRequest<'_>,
    auth: Option<&pb::ClientAuthorization>,
) -> Result<ClientEntry, AuthError> {
    let signer = verify(node, request, auth)?;
    if signer.name != caller.name {
        return Err(AuthError::NotTheCaller {
            signer: signer.name,
            caller: caller.name.clone(),
        });
    }
    Ok(signer)
}

/// The chain field of an Ethereum request's authorisation.
pub fn ethereum_chain(chain_id: u64) -> String {
    format!("ethereum:{chain_id}")
}

/// The request a signing proposal is for, as its client signed it: rebuilt
/// from the bytes the co-signer decodes (`message`, `hash`, `payload`).
pub fn signing_request<'a>(
    key_id: &'a str,
    request_id: &'a [u8],
    message: &'a [u8],
    hash: i32,
    chain: &'a str,
    payload: Option<&pb::sign_payload::Kind>,
) -> ClientRequest<'a> {
    let (operation, hash) = match payload {
        None => (Operation::Sign, hash as u32),
        Some(pb::sign_payload::Kind::EthereumChainId(_)) => (Operation::SignEthereumTransaction, 0),
        Some(pb::sign_payload::Kind::Bitcoin(_)) => (Operation::SignBitcoinPsbt, 0),
    };
    ClientRequest {
        operation,
        key_id,
        request_id,
        payload: message,
        hash,
        chain,
    }
}

/// The chain field for a proposal's payload (see [`signing_request`]).
pub fn payload_chain(payload: Option<&pb::sign_payload::Kind>) -> String {
    match payload {
        None => String::new(),
        Some(pb::sign_payload::Kind::EthereumChainId(id)) => ethereum_chain(*id),
        Some(pb::sign_payload::Kind::Bitcoin(b)) => b.chain.clone(),
    }
}

/// A Keygen request as its admin client signed it.
pub fn keygen_request<'a>(
    key_id: &'a str,
    request_id: &'a [u8],
    scheme: Option<tss_core::frost::Scheme>,
) -> ClientRequest<'a> {
    ClientRequest {
        operation: Operation::Keygen,
        key_id,
        request_id,
        // The scheme's name for a FROST key, nothing for ECDSA (the
        // encoding of every Keygen signed before FROST keys existed).
        payload: scheme.map_or(&[][..], |s| s.name().as_bytes()),
        hash: 0,
        chain: "",
    }
}

/// Signs `request` as the client `me`, valid for `validity_secs` from now.
pub fn authorize(
    me: &crate::transport::TlsIdentity,
    request: &ClientRequest<'_>,
    validity_secs: u64,
) -> anyhow::Result<pb::ClientAuthorization> {
    let expires_unix = now_unix() + validity_secs;
    let msg = request.signed_bytes(expires_unix)?;
    Ok(pb::ClientAuthorization {
        client_cert_sha256: me.fingerprint().to_vec(),
        expires_unix,
        signature: me.sign(&msg)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verify_signature__should_accept_the_holder_and_nothing_else() {
        // Given a client identity and another one
        let me = crate::transport::generate_tls_identity("gw.example").expect("identity");
        let other = crate::transport::generate_tls_identity("other.example").expect("identity");
        let req = keygen_request("k1", b"r1", None);
        let auth = authorize(&me, &req, 60).expect("signs");
        let msg = req.signed_bytes(auth.expires_unix).expect("encodes");
        // Then its signature verifies under its own certificate only
        assert!(verify_signature(&me.cert_der, &msg, &auth.signature));
        assert!(!verify_signature(&other.cert_der, &msg, &auth.signature));
        // And not over other bytes, nor as garbage
        let mut altered = msg.clone();
        *altered.last_mut().expect("non-empty") ^= 1;
        assert!(!verify_signature(&me.cert_der, &altered, &auth.signature));
        assert!(!verify_signature(&me.cert_der, &msg, b"garbage"));
        assert!(!verify_signature(
            b"not a certificate",
            &msg,
            &auth.signature
        ));
    }
}
