//! The auditor's parties: `parties.toml` as `tss-audit verify` reads it.

use serde::Deserialize;
use sha2::Sha256;

/// A party as the auditor knows it (from the custodians' own `party.toml`
/// entries, collected in `parties.toml`).
#[derive(Clone, Debug, Deserialize)]
pub struct AuditorParty {
    /// Name.
    pub name: String,
    /// Hex Ed25519 identity public key.
    pub identity: String,
    /// Hex SHA-256 of the party's TLS certificate (DER). Give this or `cert`.
    #[serde(default)]
    pub tls_fingerprint: Option<String>,
    /// The party's PEM TLS certificate (as in its `party.toml`).
    #[serde(default)]
    pub cert: Option<String>,
}

#[derive(Deserialize)]
struct PartiesFile {
    parties: Vec<AuditorParty>,
}

/// Parses `parties.toml`: a `[[parties]]` table per party with `name`,
/// `identity`, and `tls_fingerprint` or `cert` (other keys, such as
/// `address`, are ignored).
pub fn parse_parties(text: &str) -> Result<Vec<AuditorParty>, PartiesError> {
    let f: PartiesFile = toml::from_str(text).map_err(|e| PartiesError::Toml(e.to_string()))?;
    if f.parties.is_empty() {
        return Err(PartiesError::Empty);
    }
    Ok(f.parties)
}

/// What is wrong with `parties.toml`, or with one party in it.
#[derive(Debug, Clone, thiserror::Error)]
pub enum PartiesError {
    /// Not TOML of the expected shape.
    #[error("{0}")]
    Toml(String),
    /// No party at all.
    #[error("no [[parties]] entries")]
    Empty,
    /// `cert` is not a PEM certificate.
    #[error("{name}: cert is not a PEM certificate: {reason}")]
    Cert {
        /// The party.
        name: String,
        /// The PEM parser's words.
        reason: String,
    },
    /// `tls_fingerprint` is not 32 hex bytes.
    #[error("{0}: tls_fingerprint is not 32 hex bytes")]
    Fingerprint(String),
    /// Both given, and they disagree.
    #[error("{0}: tls_fingerprint does not match cert")]
    Mismatch(String),
    /// Neither given.
    #[error("{0}: give tls_fingerprint or cert")]
    NoFingerprint(String),
}

impl AuditorParty {
    /// SHA-256 of the party's TLS certificate (DER), from `cert` or
    /// `tls_fingerprint` (which must agree when both are given).
    pub fn fingerprint(&self) -> Result<[u8; 32], PartiesError> {
        use rustls_pki_types::pem::PemObject;
        use sha2::Digest;
        let from_cert = match &self.cert {
            Some(pem) => {
                let der = rustls_pki_types::CertificateDer::from_pem_slice(pem.as_bytes())
                    .map_err(|e| PartiesError::Cert {
                        name: self.name.clone(),
                        reason: e.to_string(),
                    })?;
                Some(<[u8; 32]>::from(Sha256::digest(der.as_ref())))
            }
            None => None,
        };
        let given = match &self.tls_fingerprint {
            Some(h) => Some(
                hex::decode(h.trim())
                    .ok()
                    .and_then(|b| <[u8; 32]>::try_from(b).ok())
                    .ok_or_else(|| PartiesError::Fingerprint(self.name.clone()))?,
            ),
            None => None,
        };
        match (from_cert, given) {
            (Some(a), Some(b)) if a != b => Err(PartiesError::Mismatch(self.name.clone())),
            (Some(a), _) | (None, Some(a)) => Ok(a),
            (None, None) => Err(PartiesError::NoFingerprint(self.name.clone())),
        }
    }
}
