//! The node's audit log: every policy decision (allow or deny, the rule,
//! the decoded intent, the client), append-only and hash-chained, sealed in
//! the store ([`RecordKind::Audit`]). Read it with `tssctl audit`, which
//! checks the chain.
//!
//! Entry `n` (from 0): `body` is a JSON object ([`AuditBody`]);
//! `hash_n = SHA-256("tss/audit/v1" || hash_{n-1} || body)` with
//! `hash_{-1}` all zero. Record key: `n` as 8 bytes big-endian; value: CBOR
//! `{prev, body, hash}`. An entry is written and flushed before the request
//! it records goes on.

use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tss_core::store::{RecordKind, Store, StoreError};

use crate::keys;

/// Domain of the entry hashes.
pub const DOMAIN: &[u8] = b"tss/audit/v1";

/// Most entries one read returns.
pub const MAX_READ: usize = 1000;

/// What one entry records.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct AuditBody {
    /// Position in the log.
    pub seq: u64,
    /// When, in milliseconds since the Unix epoch.
    pub unix_ms: u64,
    /// This node's party name.
    pub node: String,
    /// `coordinator` or `co-signer` (and which party coordinated).
    pub role: String,
    /// The client that asked (name as this node pins it).
    pub client: String,
    /// Key.
    pub key_id: String,
    /// Request id, hex.
    pub request_id: String,
    /// `allow` or `deny`.
    pub decision: String,
    /// The rule that decided.
    pub rule: String,
    /// Why.
    pub reason: String,
    /// The request as this node decoded it.
    pub intent: serde_json::Value,
}

/// One stored entry.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct StoredEntry {
    /// Position.
    pub seq: u64,
    /// Hash of the previous entry.
    #[serde(with = "serde_bytes")]
    pub prev: Vec<u8>,
    /// JSON body.
    #[serde(with = "serde_bytes")]
    pub body: Vec<u8>,
    /// This entry's hash.
    #[serde(with = "serde_bytes")]
    pub hash: Vec<u8>,
}

impl From<&proto::v1::AuditEntry> for StoredEntry {
    fn from(e: &proto::v1::AuditEntry) -> Self {
        StoredEntry {
            seq: e.seq,
            prev: e.prev_hash.clone(),
            body: e.body.clone(),
            hash: e.hash.clone(),
        }
    }
}

/// `SHA-256(DOMAIN || prev || body)`.
pub fn entry_hash(prev: &[u8], body: &[u8]) -> [u8; 32] {
    Sha256::new()
        .chain_update(DOMAIN)
        .chain_update(prev)
        .chain_update(body)
        .finalize()
        .into()
}

/// Checks that `entries` are consecutive, each hash is right and each links
/// to the one before; `prev` is the hash before the first (all zero when the
/// first is entry 0). Returns the last hash.
pub fn verify_chain(entries: &[StoredEntry], prev: [u8; 32]) -> Result<[u8; 32], ChainError> {
    let mut prev = prev;
    let first = entries.first().map_or(0, |e| e.seq);
    for (expect_seq, e) in (first..).zip(entries) {
        if e.seq != expect_seq {
            return Err(ChainError::Missing {
                seq: expect_seq,
                next: e.seq,
            });
        }
        if e.prev != prev {
            return Err(ChainError::Unlinked { seq: e.seq });
        }
        let h = entry_hash(&e.prev, &e.body);
        if e.hash != h {
            return Err(ChainError::Hash { seq: e.seq });
        }
        let body: AuditBody =
            serde_json::from_slice(&e.body).map_err(|err| ChainError::NotRecord {
                seq: e.seq,
                reason: err.to_string(),
            })?;
        if body.seq != e.seq {
            return Err(ChainError::Renumbered {
                seq: e.seq,
                says: body.seq,
            });
        }
        prev = h;
    }
    Ok(prev)
}

/// Where and how an audit chain is broken.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChainError {
    /// An entry is missing.
    #[error("entry {seq} is missing (next is {next})")]
    Missing {
        /// The missing entry.
        seq: u64,
        /// The entry found in its place.
        next: u64,
    },
    /// An entry does not link to the one before.
    #[error("entry {seq} does not link to the entry before it")]
    Unlinked {
        /// The entry.
        seq: u64,
    },
    /// An entry was edited.
    #[error("entry {seq} does not match its hash")]
    Hash {
        /// The entry.
        seq: u64,
    },
    /// An entry's body is not an audit record.
    #[error("entry {seq} is not an audit record: {reason}")]
    NotRecord {
        /// The entry.
        seq: u64,
        /// The decoding error.
        reason: String,
    },
    /// An entry's body carries another number.
    #[error("entry {seq} says it is entry {says}")]
    Renumbered {
        /// The entry.
        seq: u64,
        /// The number in its body.
        says: u64,
    },
}

fn corrupt(seq: u64, reason: String) -> StoreError {
    StoreError::Corrupt {
        kind: RecordKind::Audit.tag(),
        key: hex::encode(seq.to_be_bytes()),
        reason,
    }
}

/// Decodes the stored entry at position `seq`. Public for the fuzz targets
/// in `fuzz/`.
#[doc(hidden)]
pub fn decode(seq: u64, bytes: &[u8]) -> Result<StoredEntry, StoreError> {
    let e: StoredEntry =
        ciborium::from_reader(bytes).map_err(|err| corrupt(seq, format!("not an entry: {err}")))?;
    if e.seq != seq {
        return Err(corrupt(seq, format!("holds entry {}", e.seq)));
    }
    Ok(e)
}

/// The log's head: next position and last hash.
pub struct AuditLog {
    head: Mutex<(u64, [u8; 32])>,
}

impl AuditLog {
    /// Opens the log in `store`, checking its last entry (blocking).
    pub fn open(store: &Store) -> Result<Self, StoreError> {
        let head = match store.last_key(RecordKind::Audit)? {
            None => (0, [0u8; 32]),
            Some(k) => {
                let seq = keys::audit_seq(&k)
                    .ok_or_else(|| corrupt(0, format!("bad audit key {}", hex::encode(&k))))?;
                let v = store
                    .get(RecordKind::Audit, &k)?
                    .ok_or_else(|| corrupt(seq, "vanished".into()))?;
                let e = decode(seq, v.expose())?;
                if e.hash != entry_hash(&e.prev, &e.body) {
                    return Err(corrupt(
                        seq,
                        "the last entry does not match its hash".into(),
                    ));
                }
                let last: [u8; 32] = e
                    .hash
                    .as_slice()
                    .try_into()
                    .map_err(|_| corrupt(seq, "hash is not 32 bytes".into()))?;
                (seq + 1, last)
            }
        };
        Ok(AuditLog {
            head: Mutex::new(head),
        })
    }

    /// Appends a decision and flushes it (blocking). `body.seq` and
    /// `body.unix_ms` are set here.
    pub fn append(&self, store: &Store, body: AuditBody) -> Result<u64, StoreError> {
        self.append_with(store, body, true)
    }

    /// Appends a decision without its own flush (blocking): it is durable
    /// with the store's next flush, and every path that releases any part
    /// of a signature flushes before the release (`protocol::approve`), so
    /// an entry that allowed a release is on disk before the release. A
    /// crash before that flush loses the entry together with every later
    /// write of the request (the store keeps a prefix of its writes), never
    /// a release without its entry.
    pub fn append_unflushed(&self, store: &Store, body: AuditBody) -> Result<u64, StoreError> {
        self.append_with(store, body, false)
    }

    fn append_with(
        &self,
        store: &Store,
        mut body: AuditBody,
        flush: bool,
    ) -> Result<u64, StoreError> {
        let mut head = self.head.lock().unwrap_or_else(|p| p.into_inner());
        let (seq, prev) = *head;
        body.seq = seq;
        body.unix_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        let body = serde_json::to_vec(&body)
            .map_err(|e| StoreError::Io(format!("encoding an audit entry: {e}")))?;
        let hash = entry_hash(&prev, &body);
        let entry = StoredEntry {
            seq,
            prev: prev.to_vec(),
            body,
            hash: hash.to_vec(),
        };
        let mut v = Vec::new();
        ciborium::into_writer(&entry, &mut v)
            .map_err(|e| StoreError::Io(format!("encoding an audit entry: {e}")))?;
        if !store.insert_new(RecordKind::Audit, &keys::audit_entry(seq), &v)? {
            return Err(corrupt(
                seq,
                "an entry already exists at the log's head".into(),
            ));
        }
        if flush {
            store.flush()?;
        }
        *head = (seq + 1, hash);
        Ok(seq)
    }

    /// Entries from `from` on, at most `limit` (blocking).
    pub fn read(store: &Store, from: u64, limit: usize) -> Result<Vec<StoredEntry>, StoreError> {
        let mut out = Vec::new();
        let mut seq = from;
        while out.len() < limit.min(MAX_READ) {
            let Some(v) = store.get(RecordKind::Audit, &keys::audit_entry(seq))? else {
                break;
            };
            out.push(decode(seq, v.expose())?);
            seq += 1;
        }
        Ok(out)
    }

    /// Number of entries.
    pub fn len(&self) -> u64 {
        self.head.lock().unwrap_or_else(|p| p.into_inner()).0
    }

    /// Whether the log is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(reason: &str) -> AuditBody {
        AuditBody {
            seq: 0,
            unix_ms: 0,
            node: "a".into(),
            role: "coordinator".into(),
            client: "gw".into(),
            key_id: "k".into(),
            request_id: "01".into(),
            decision: "deny".into(),
            rule: "whitelist".into(),
            reason: reason.into(),
            intent: serde_json::json!({"type": "message"}),
        }
    }

    #[test]
    fn audit_log__should_chain_survive_reopen_and_detect_edits() {
        let dir = tempfile::tempdir().unwrap();
        let pass = tss_core::secret::Passphrase::new("correct horse".into());
        let store = Store::create(dir.path(), &pass).unwrap();
        let log = AuditLog::open(&store).unwrap();
        for i in 0..3 {
            assert_eq!(log.append(&store, body(&format!("r{i}"))).unwrap(), i);
        }
        // Reopening continues the chain.
        let log = AuditLog::open(&store).unwrap();
        assert_eq!(log.append(&store, body("r3")).unwrap(), 3);
        let all = AuditLog::read(&store, 0, 100).unwrap();
        assert_eq!(all.len(), 4);
        let head = verify_chain(&all, [0; 32]).unwrap();
        assert_eq!(head.to_vec(), all[3].hash);
        // A tail read verifies from the hash before it.
        let tail = AuditLog::read(&store, 2, 100).unwrap();
        let before: [u8; 32] = all[1].hash.as_slice().try_into().unwrap();
        assert_eq!(verify_chain(&tail, before).unwrap(), head);

        // An edited body, a dropped entry or a re-hashed edit are caught.
        let mut edited = all.clone();
        edited[1].body = serde_json::to_vec(&{
            let mut b = body("allowed after all");
            b.seq = 1;
            b
        })
        .unwrap();
        assert_eq!(
            verify_chain(&edited, [0; 32]),
            Err(ChainError::Hash { seq: 1 })
        );
        edited[1].hash = entry_hash(&edited[1].prev, &edited[1].body).to_vec();
        assert_eq!(
            verify_chain(&edited, [0; 32]),
            Err(ChainError::Unlinked { seq: 2 })
        );
        let mut dropped = all.clone();
        dropped.remove(2);
        assert_eq!(
            verify_chain(&dropped, [0; 32]).unwrap_err().to_string(),
            "entry 2 is missing (next is 3)"
        );
    }
}
