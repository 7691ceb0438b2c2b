//! A TLS identity: a self-signed certificate and its private key, PEM in
//! and out. The key's PEM is written with a constant-time base64 encoder
//! (`base64ct`) into a buffer zeroized on drop, and read back with
//! rustls-pki-types' PEM decoder, which is constant-time too: no table
//! lookup is indexed by a secret byte.

use std::fmt;

use anyhow::{anyhow, bail, Context as _};
use base64ct::{Base64, Encoding as _};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use rustls::sign::CertifiedKey;
use rustls::SignatureScheme;
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

use super::{fingerprint, Fingerprint};

/// A TLS private key, PKCS#8 DER. Zeroized on drop; never printed.
#[derive(Zeroize, ZeroizeOnDrop)]
pub struct TlsKey(pub(super) Vec<u8>);

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
    pub(super) key: TlsKey,
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
    pub(super) fn certified_key(&self) -> Result<CertifiedKey, rustls::Error> {
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
pub(super) fn pem_len(label: &str, der_len: usize) -> usize {
    let header = "-----BEGIN -----\n".len() + label.len();
    let footer = "-----END -----\n".len() + label.len();
    let body = der_len.div_ceil(3) * 4 + der_len.div_ceil(PEM_LINE_BYTES);
    header + body + footer
}

/// Input bytes per PEM line (64 base64 characters).
const PEM_LINE_BYTES: usize = 48;

/// Appends `der` as a PEM block (RFC 7468) to `out`, without temporaries
/// that outlive the call. Base64 is constant-time (`base64ct`): the key's
/// bytes never index a table. Each line goes through a stack buffer that is
/// zeroized afterwards.
pub(super) fn pem_encode_into(out: &mut String, label: &str, der: &[u8]) {
    out.push_str("-----BEGIN ");
    out.push_str(label);
    out.push_str("-----\n");
    let mut line_buf = Zeroizing::new([0u8; PEM_LINE_BYTES / 3 * 4]);
    for line in der.chunks(PEM_LINE_BYTES) {
        // The buffer fits a full line, so encoding cannot fail.
        if let Ok(text) = Base64::encode(line, &mut line_buf[..]) {
            out.push_str(text);
        }
        out.push('\n');
    }
    out.push_str("-----END ");
    out.push_str(label);
    out.push_str("-----\n");
}
