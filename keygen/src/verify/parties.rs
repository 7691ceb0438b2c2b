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
pub fn parse_parties(text: &str) -> Result<Vec<AuditorParty>, String> {
    let f: PartiesFile = toml::from_str(text).map_err(|e| e.to_string())?;
    if f.parties.is_empty() {
        return Err("no [[parties]] entries".into());
    }
    Ok(f.parties)
}

impl AuditorParty {
    pub(super) fn fingerprint(&self) -> Result<[u8; 32], String> {
        use rustls_pki_types::pem::PemObject;
        use sha2::Digest;
        let from_cert = match &self.cert {
            Some(pem) => {
                let der = rustls_pki_types::CertificateDer::from_pem_slice(pem.as_bytes())
                    .map_err(|e| format!("{}: cert is not a PEM certificate: {e}", self.name))?;
                Some(<[u8; 32]>::from(Sha256::digest(der.as_ref())))
            }
            None => None,
        };
        let given = match &self.tls_fingerprint {
            Some(h) => Some(
                hex::decode(h.trim())
                    .ok()
                    .and_then(|b| <[u8; 32]>::try_from(b).ok())
                    .ok_or_else(|| format!("{}: tls_fingerprint is not 32 hex bytes", self.name))?,
            ),
            None => None,
        };
        match (from_cert, given) {
            (Some(a), Some(b)) if a != b => Err(format!(
                "{}: tls_fingerprint does not match cert",
                self.name
            )),
            (Some(a), _) | (None, Some(a)) => Ok(a),
            (None, None) => Err(format!("{}: give tls_fingerprint or cert", self.name)),
        }
    }
}
