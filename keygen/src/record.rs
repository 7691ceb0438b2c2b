//! Stored records of the ceremony: [`KeyRecord`] (public facts about a key,
//! per party) and [`AuxRecord`] (a party set's aux info, secret).

use serde::{Deserialize, Serialize};
use tss_core::ecdsa::{self, AuxInfo, EngineError};
use tss_core::identity::PartyId;
use tss_core::secret::SecretBytes;

/// Format version of [`KeyRecord`].
pub const KEY_RECORD_VERSION: u8 = 1;

/// Why a key id is refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("key id must be 1-64 characters of [A-Za-z0-9._-], got {0:?}")]
pub struct BadKeyId(pub String);

/// Checks a client-chosen key id.
pub fn check_key_id(id: &str) -> Result<(), BadKeyId> {
    let ok = !id.is_empty()
        && id.len() <= 64
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if ok {
        Ok(())
    } else {
        Err(BadKeyId(id.chars().take(80).collect()))
    }
}

/// One party of a key, in keygen index order.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct KeyParty {
    /// Party name.
    pub name: String,
    /// Hex Ed25519 identity.
    pub identity: String,
}

/// Public facts a party stores about a key (next to its sealed share).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct KeyRecord {
    /// Format version.
    pub v: u8,
    /// Key id.
    pub key_id: String,
    /// SEC1 compressed public key, hex.
    pub public_key: String,
    /// Signers needed.
    pub threshold: u16,
    /// Parties in keygen index order.
    pub parties: Vec<KeyParty>,
    /// This party's keygen index.
    pub my_index: u16,
    /// Aux-info run the share is completed with, hex.
    pub aux_id: String,
    /// Keygen execution id, hex.
    pub keygen_id: String,
    /// Creation time, seconds since the Unix epoch.
    pub created_unix: u64,
    /// FROST keys: the scheme (`ed25519`, `taproot`); absent for CGGMP24
    /// ECDSA keys (and in every record written before FROST keys existed).
    /// `public_key` is then the scheme's 32-byte key and `aux_id` is empty.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheme: Option<tss_core::frost::Scheme>,
}

/// Why a stored record does not load.
#[derive(Debug, thiserror::Error)]
#[error("stored record is invalid: {0}")]
pub struct BadRecord(pub String);

impl KeyRecord {
    /// Encodes as JSON (public data).
    pub fn encode(&self) -> Vec<u8> {
        // Plain data into a Vec: cannot fail.
        serde_json::to_vec(self).expect("KeyRecord serializes")
    }

    /// Decodes and checks the version.
    pub fn decode(b: &[u8]) -> Result<Self, BadRecord> {
        let r: KeyRecord = serde_json::from_slice(b).map_err(|e| BadRecord(e.to_string()))?;
        if r.v != KEY_RECORD_VERSION {
            return Err(BadRecord(format!("unknown key record version {}", r.v)));
        }
        Ok(r)
    }

    /// Public key bytes.
    pub fn public_key_bytes(&self) -> Result<Vec<u8>, BadRecord> {
        hex::decode(&self.public_key).map_err(|e| BadRecord(e.to_string()))
    }

    /// Identities in keygen index order.
    pub fn party_ids(&self) -> Result<Vec<PartyId>, BadRecord> {
        self.parties
            .iter()
            .map(|p| PartyId::from_hex(&p.identity).map_err(|e| BadRecord(e.to_string())))
            .collect()
    }
}

/// A party set's aux info as stored: the run id and the (secret) aux info.
pub struct AuxRecord {
    /// Execution id of the aux-info run.
    pub aux_id: [u8; 32],
    /// The aux info.
    pub aux: AuxInfo,
}

impl AuxRecord {
    /// Encodes: `aux_id (32) || versioned aux info`. Secret.
    pub fn encode(&self) -> SecretBytes {
        let body = ecdsa::encode_aux(&self.aux);
        let mut v = Vec::with_capacity(32 + body.len());
        v.extend_from_slice(&self.aux_id);
        v.extend_from_slice(body.expose());
        SecretBytes::new(v)
    }

    /// Decodes and validates.
    pub fn decode(b: &[u8]) -> Result<Self, EngineError> {
        if b.len() < 32 {
            return Err(EngineError::InvalidInput("aux record too short".into()));
        }
        let mut aux_id = [0u8; 32];
        aux_id.copy_from_slice(&b[..32]);
        Ok(AuxRecord {
            aux_id,
            aux: ecdsa::decode_aux(&b[32..])?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[allow(non_snake_case)]
    fn check_key_id__should_accept_names_and_refuse_others() {
        for ok in ["a", "btc-hot.1", "A_B", &"x".repeat(64)] {
            assert!(check_key_id(ok).is_ok(), "{ok}");
        }
        for bad in ["", "a b", "ü", "a/b", &"x".repeat(65)] {
            assert!(check_key_id(bad).is_err(), "{bad}");
        }
    }

    #[test]
    #[allow(non_snake_case)]
    fn key_record__should_roundtrip_and_refuse_unknown_version() {
        let r = KeyRecord {
            v: 1,
            key_id: "k".into(),
            public_key: "02ab".into(),
            threshold: 2,
            parties: vec![KeyParty {
                name: "a".into(),
                identity: "00".into(),
            }],
            my_index: 0,
            aux_id: "00".into(),
            keygen_id: "11".into(),
            created_unix: 5,
            scheme: None,
        };
        assert_eq!(KeyRecord::decode(&r.encode()).unwrap(), r);
        let mut bad = r.clone();
        bad.v = 9;
        assert!(KeyRecord::decode(&bad.encode()).is_err());
        assert!(KeyRecord::decode(b"{").is_err());
    }
}
