//! The node's sealed store: sled, every value sealed with an AEAD under a key
//! derived from the store passphrase.
//!
//! The API is blocking (sled does disk I/O and opening runs Argon2id): async
//! callers use `spawn_blocking`. [`Store`] is a cheap `Clone` handle.
//!
//! # Layout
//!
//! One sled database per directory, one tree per [`RecordKind`]:
//!
//! | tree             | content                                              |
//! |------------------|------------------------------------------------------|
//! | `meta`           | `kdf` (unsealed KDF record), `check` (sealed)         |
//! | `primes`         | pregenerated safe primes, one record per set          |
//! | `aux_info`       | aux info (Paillier keys and proofs) per key           |
//! | `key_share`      | key shares                                           |
//! | `key_info`       | public key information                               |
//! | `seen_execution` | execution ids already run (replay protection)        |
//! | `presignature`   | presignatures, single use ([`Store::take`])          |
//! | `node_secret`    | the node's identity and TLS private keys             |
//! | `transcript`     | keygen transcripts: each party's view of an aux-info  |
//! |                  | run (`aux/<aux id>`) and of a keygen run (`view/<key>`), |
//! |                  | a key's certificate (`cert/<key>`), the final file    |
//! |                  | (`file/<key>`)                                        |
//!
//! The tree name is also the record kind's tag ([`RecordKind::tag`]).
//!
//! # Records
//!
//! - `meta/kdf`, unsealed: `version (1 byte = 1) || m_kib (u32 BE) || t (u32
//!   BE) || p (u32 BE) || salt (16 bytes)`. Version 1 means Argon2id v1.3
//!   with a 32-byte output. Created with m = 64 MiB, t = 3, p = 1; opening
//!   uses the stored values, so changing the defaults needs a migration.
//! - Every other value is sealed with XChaCha20-Poly1305:
//!   `version (1 byte = 1) || nonce (24 bytes, random) || ciphertext || tag (16 bytes)`.
//! - Associated data: `"tss-store/v1" || tag || 0x00 || key length (u32 BE)
//!   || key || version`. A value copied to another record key or another kind
//!   no longer opens ([`StoreError::Corrupt`]).
//! - `meta/check` is a known plaintext sealed under the tag `meta`; failing to
//!   open it at [`Store::open`] means the passphrase is wrong.
//!
//! # What the disk sees, and what is not protected
//!
//! Values are confidential and authenticated. Record keys, tree names, value
//! lengths and the KDF record are stored in clear: never put secrets in keys.
//! Sealing does not detect deletion of records or a rollback of the whole
//! directory to an older copy (a presignature taken since then would come
//! back); protect the directory itself against that.
//!
//! # Durability
//!
//! [`Store::put`] and [`Store::insert_new`] are durable after
//! [`Store::flush`] (sled also flushes in the background every 500 ms).
//! [`Store::take`] flushes before it returns the value, so a taken record does
//! not come back after a crash.

mod seal;

/// FUZZING ONLY (feature `fuzzing`, off by default): the pure codecs of
/// stored values, so that `fuzz/` can feed them hostile bytes without a sled
/// directory or an Argon2 derivation. Takes raw storage-key bytes, which the
/// daemon never does; not part of the API.
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing {
    use super::seal::{self, KdfParams, KdfRecord, StorageKey};
    pub use super::seal::{KdfRecordError, OpenError, SealError};
    use crate::secret::SecretBytes;

    /// Tag of the store's own tree (KDF and check records); the others are
    /// [`super::RecordKind::tag`].
    pub const META_TAG: &str = super::META_TREE;

    /// Opens a sealed value as [`super::Store::get`] does, under `key`.
    pub fn open(
        key: [u8; 32],
        tag: &str,
        record_key: &[u8],
        sealed: &[u8],
    ) -> Result<SecretBytes, OpenError> {
        seal::open(&StorageKey::from_bytes(key), tag, record_key, sealed)
    }

    /// Seals `value` with a chosen nonce (seed generation only).
    pub fn seal(
        key: [u8; 32],
        tag: &str,
        record_key: &[u8],
        value: &[u8],
        nonce: &[u8; 24],
    ) -> Result<Vec<u8>, SealError> {
        seal::seal_with_nonce(&StorageKey::from_bytes(key), tag, record_key, value, nonce)
    }

    /// Parses the unsealed KDF record: `(m_kib, t, p, salt)`.
    pub fn decode_kdf_record(bytes: &[u8]) -> Result<(u32, u32, u32, [u8; 16]), KdfRecordError> {
        let r = KdfRecord::decode(bytes)?;
        Ok((r.params.m_kib, r.params.t, r.params.p, r.salt))
    }

    /// Encodes a KDF record (seed generation and round-trip checks).
    pub fn encode_kdf_record(m_kib: u32, t: u32, p: u32, salt: [u8; 16]) -> Vec<u8> {
        KdfRecord {
            params: KdfParams { m_kib, t, p },
            salt,
        }
        .encode()
    }
}

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::secret::{Passphrase, SecretBytes};

use self::seal::{KdfParams, KdfRecord, OpenError, StorageKey};

/// Name of the unsealed metadata tree (also the tag of the sealed check record).
const META_TREE: &str = "meta";
/// Key of the KDF record in [`META_TREE`].
const KDF_KEY: &[u8] = b"kdf";
/// Key of the check record in [`META_TREE`].
const CHECK_KEY: &[u8] = b"check";
/// Plaintext of the check record.
const CHECK_PLAINTEXT: &[u8] = b"tss-store check v1";
/// The file sled keeps its data in; its presence means a store exists.
const SLED_DB_FILE: &str = "db";
/// The file sled writes its configuration to.
const SLED_CONF_FILE: &str = "conf";

/// Errors from the sealed store.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// No store in the directory.
    #[error("no store at {}: create one first (or check the configured data directory)", dir.display())]
    NotFound {
        /// The directory that was searched.
        dir: PathBuf,
    },
    /// A store already exists where one was to be created.
    #[error("a store already exists at {}: open it, or choose another directory", dir.display())]
    AlreadyExists {
        /// The directory that holds the existing store.
        dir: PathBuf,
    },
    /// The passphrase does not derive the store's key.
    #[error(
        "the store passphrase is wrong: the check record does not decrypt (store at {})",
        dir.display()
    )]
    WrongPassphrase {
        /// The directory of the store.
        dir: PathBuf,
    },
    /// A record does not open: modified on disk, or moved from another record
    /// key or kind.
    #[error(
        "record {kind}/{key} is corrupt: {reason}; restore the store from a backup or remove the record"
    )]
    Corrupt {
        /// Tag of the record's tree ([`RecordKind::tag`]).
        kind: &'static str,
        /// The record key, hex.
        key: String,
        /// What failed.
        reason: String,
    },
    /// The underlying storage failed (sled or file-system error).
    #[error("store I/O error: {0}")]
    Io(String),
    /// The store (or a record in it) uses a format this build does not read.
    #[error(
        "the store at {} uses a format this build cannot read: {detail}; use a matching build or migrate the store",
        dir.display()
    )]
    UnsupportedFormat {
        /// The directory of the store.
        dir: PathBuf,
        /// What was found.
        detail: String,
    },
}

/// What a record is; each kind lives in its own tree and is sealed under its
/// own tag, so a value cannot be passed off as another kind.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum RecordKind {
    /// Pregenerated safe primes for aux-info runs.
    Primes,
    /// Aux info (Paillier keys and ring-Pedersen parameters).
    AuxInfo,
    /// Key shares.
    KeyShare,
    /// Public information about a key.
    KeyInfo,
    /// Execution ids already run, for replay protection.
    SeenExecution,
    /// Presignatures; single use, read them with [`Store::take`] or
    /// [`Store::consume`].
    Presignature,
    /// Log of consumed presignatures (id, what it signed): written in the
    /// same transaction that removes the presignature.
    PresignatureUsed,
    /// The node's own long-term secrets (identity key, TLS private key).
    NodeSecret,
    /// Keygen transcripts: recorded session views, key certificates and
    /// finished transcript files (public data, sealed like everything else).
    Transcript,
    /// Amounts released per key, chain and asset (rolling policy limits).
    Spend,
    /// The node's hash-chained audit log of policy decisions.
    Audit,
}

impl RecordKind {
    /// Every kind.
    pub const ALL: &'static [RecordKind] = &[
        RecordKind::Primes,
        RecordKind::AuxInfo,
        RecordKind::KeyShare,
        RecordKind::KeyInfo,
        RecordKind::SeenExecution,
        RecordKind::Presignature,
        RecordKind::PresignatureUsed,
        RecordKind::NodeSecret,
        RecordKind::Transcript,
        RecordKind::Spend,
        RecordKind::Audit,
    ];

    /// Stable tag, bound into each sealed value. Part of the on-disk format:
    /// never change one.
    pub const fn tag(self) -> &'static str {
        match self {
            RecordKind::Primes => "primes",
            RecordKind::AuxInfo => "aux_info",
            RecordKind::KeyShare => "key_share",
            RecordKind::KeyInfo => "key_info",
            RecordKind::SeenExecution => "seen_execution",
            RecordKind::Presignature => "presignature",
            RecordKind::PresignatureUsed => "presignature_used",
            RecordKind::NodeSecret => "node_secret",
            RecordKind::Transcript => "transcript",
            RecordKind::Spend => "spend",
            RecordKind::Audit => "audit",
        }
    }

    /// Name of the sled tree holding this kind (the same as [`Self::tag`]).
    pub const fn tree_name(self) -> &'static str {
        self.tag()
    }
}

impl fmt::Display for RecordKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.tag())
    }
}

/// One open tree per kind.
struct Trees {
    primes: sled::Tree,
    aux_info: sled::Tree,
    key_share: sled::Tree,
    key_info: sled::Tree,
    seen_execution: sled::Tree,
    presignature: sled::Tree,
    presignature_used: sled::Tree,
    node_secret: sled::Tree,
    transcript: sled::Tree,
    spend: sled::Tree,
    audit: sled::Tree,
}

impl Trees {
    fn open(db: &sled::Db, dir: &Path) -> Result<Self, StoreError> {
        let open = |kind: RecordKind| {
            db.open_tree(kind.tree_name())
                .map_err(|e| io_error(dir, &format!("opening tree {kind}"), e))
        };
        Ok(Self {
            primes: open(RecordKind::Primes)?,
            aux_info: open(RecordKind::AuxInfo)?,
            key_share: open(RecordKind::KeyShare)?,
            key_info: open(RecordKind::KeyInfo)?,
            seen_execution: open(RecordKind::SeenExecution)?,
            presignature: open(RecordKind::Presignature)?,
            presignature_used: open(RecordKind::PresignatureUsed)?,
            node_secret: open(RecordKind::NodeSecret)?,
            transcript: open(RecordKind::Transcript)?,
            spend: open(RecordKind::Spend)?,
            audit: open(RecordKind::Audit)?,
        })
    }

    fn get(&self, kind: RecordKind) -> &sled::Tree {
        match kind {
            RecordKind::Primes => &self.primes,
            RecordKind::AuxInfo => &self.aux_info,
            RecordKind::KeyShare => &self.key_share,
            RecordKind::KeyInfo => &self.key_info,
            RecordKind::SeenExecution => &self.seen_execution,
            RecordKind::Presignature => &self.presignature,
            RecordKind::PresignatureUsed => &self.presignature_used,
            RecordKind::NodeSecret => &self.node_secret,
            RecordKind::Transcript => &self.transcript,
            RecordKind::Spend => &self.spend,
            RecordKind::Audit => &self.audit,
        }
    }
}

struct Inner {
    db: sled::Db,
    trees: Trees,
    key: StorageKey,
    dir: PathBuf,
}

/// Handle to an open sealed store. Cheap to clone (shared inside); blocking.
///
/// sled locks the directory, so one process opens a store once and shares
/// clones of the handle.
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

impl fmt::Debug for Store {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Store")
            .field("dir", &self.inner.dir)
            .finish_non_exhaustive()
    }
}

fn io_error(dir: &Path, what: &str, e: impl fmt::Display) -> StoreError {
    StoreError::Io(format!("store at {}: {what}: {e}", dir.display()))
}

fn sled_exists(dir: &Path) -> bool {
    dir.join(SLED_DB_FILE).exists() || dir.join(SLED_CONF_FILE).exists()
}

/// Creates `dir` (and parents) readable by the owner only.
fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(dir)
}

impl Store {
    /// Creates a new store in `dir` (created if missing) sealed under `pass`.
    ///
    /// Derives the storage key with Argon2id (m = 64 MiB, t = 3, p = 1, random
    /// 16-byte salt), which takes a noticeable fraction of a second. Refuses
    /// with [`StoreError::AlreadyExists`] if a store is already there.
    pub fn create(dir: &Path, pass: &Passphrase) -> Result<Store, StoreError> {
        Self::create_with_params(dir, pass, KdfParams::FIXED)
    }

    /// [`Store::create`] with cheap Argon2 parameters, for unit tests only.
    #[cfg(test)]
    pub(crate) fn create_for_tests(dir: &Path, pass: &Passphrase) -> Result<Store, StoreError> {
        Self::create_with_params(dir, pass, KdfParams::CHEAP)
    }

    fn create_with_params(
        dir: &Path,
        pass: &Passphrase,
        params: KdfParams,
    ) -> Result<Store, StoreError> {
        let already = || StoreError::AlreadyExists {
            dir: dir.to_path_buf(),
        };
        if sled_exists(dir) {
            return Err(already());
        }
        create_private_dir(dir).map_err(|e| io_error(dir, "creating the directory", e))?;

        let record =
            KdfRecord::generate(params).map_err(|e| io_error(dir, "generating the salt", e))?;
        let key = seal::derive_key(pass, &record.salt, &record.params)
            .map_err(|e| io_error(dir, "deriving the storage key", e))?;
        let check = seal::seal(&key, META_TREE, CHECK_KEY, CHECK_PLAINTEXT)
            .map_err(|e| io_error(dir, "sealing the check record", e))?;

        // create_new makes sled refuse an existing data file, closing the race
        // with another creator between the check above and here.
        let db = sled::Config::new()
            .path(dir)
            .create_new(true)
            .open()
            .map_err(|e| match e {
                sled::Error::Io(ref io) if io.kind() == std::io::ErrorKind::AlreadyExists => {
                    already()
                }
                e => io_error(dir, "creating the database", e),
            })?;
        let meta = db
            .open_tree(META_TREE)
            .map_err(|e| io_error(dir, "opening the meta tree", e))?;
        // One batch: a crash leaves either both records or neither.
        let mut batch = sled::Batch::default();
        batch.insert(KDF_KEY, record.encode());
        batch.insert(CHECK_KEY, check);
        meta.apply_batch(batch)
            .map_err(|e| io_error(dir, "writing the meta records", e))?;
        db.flush().map_err(|e| io_error(dir, "flushing", e))?;

        let trees = Trees::open(&db, dir)?;
        tracing::info!(dir = %dir.display(), "created sealed store");
        Ok(Store {
            inner: Arc::new(Inner {
                db,
                trees,
                key,
                dir: dir.to_path_buf(),
            }),
        })
    }

    /// Opens the store in `dir` with `pass`.
    ///
    /// Errors: [`StoreError::NotFound`] if there is no store,
    /// [`StoreError::WrongPassphrase`] if the check record does not decrypt,
    /// [`StoreError::UnsupportedFormat`] for an unknown KDF or seal version,
    /// [`StoreError::Io`] if sled fails (for example when another process
    /// holds the store open).
    pub fn open(dir: &Path, pass: &Passphrase) -> Result<Store, StoreError> {
        if !dir.join(SLED_DB_FILE).is_file() {
            return Err(StoreError::NotFound {
                dir: dir.to_path_buf(),
            });
        }
        let unsupported = |detail: String| StoreError::UnsupportedFormat {
            dir: dir.to_path_buf(),
            detail,
        };

        let db = sled::Config::new().path(dir).open().map_err(|e| {
            io_error(
                dir,
                "opening the database (is another process using it?)",
                e,
            )
        })?;
        let meta = db
            .open_tree(META_TREE)
            .map_err(|e| io_error(dir, "opening the meta tree", e))?;
        let read = |key: &[u8]| -> Result<sled::IVec, StoreError> {
            meta.get(key).map_err(|e| io_error(dir, "reading the meta tree", e))?.ok_or_else(|| {
                unsupported(format!(
                    "no {} record in the meta tree (not a sealed store, or its creation was interrupted)",
                    String::from_utf8_lossy(key)
                ))
            })
        };

        let record = KdfRecord::decode(&read(KDF_KEY)?).map_err(|e| unsupported(e.to_string()))?;
        let key = seal::derive_key(pass, &record.salt, &record.params)
            .map_err(|e| io_error(dir, "deriving the storage key", e))?;
        let check = match seal::open(&key, META_TREE, CHECK_KEY, &read(CHECK_KEY)?) {
            Ok(check) => check,
            Err(OpenError::Authentication) => {
                return Err(StoreError::WrongPassphrase {
                    dir: dir.to_path_buf(),
                })
            }
            Err(e) => return Err(unsupported(format!("check record: {e}"))),
        };
        if check.expose() != CHECK_PLAINTEXT {
            return Err(unsupported("check record has unexpected content".into()));
        }

        let trees = Trees::open(&db, dir)?;
        tracing::info!(dir = %dir.display(), "opened sealed store");
        Ok(Store {
            inner: Arc::new(Inner {
                db,
                trees,
                key,
                dir: dir.to_path_buf(),
            }),
        })
    }

    /// The directory the store lives in.
    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }

    fn tree(&self, kind: RecordKind) -> &sled::Tree {
        self.inner.trees.get(kind)
    }

    fn io(&self, what: &str, kind: RecordKind, e: impl fmt::Display) -> StoreError {
        io_error(&self.inner.dir, &format!("{what} in {kind}"), e)
    }

    fn seal(&self, kind: RecordKind, key: &[u8], value: &[u8]) -> Result<Vec<u8>, StoreError> {
        seal::seal(&self.inner.key, kind.tag(), key, value)
            .map_err(|e| self.io(&format!("sealing record {}", hex::encode(key)), kind, e))
    }

    fn unseal(
        &self,
        kind: RecordKind,
        key: &[u8],
        sealed: &[u8],
    ) -> Result<SecretBytes, StoreError> {
        seal::open(&self.inner.key, kind.tag(), key, sealed).map_err(|e| match e {
            OpenError::UnknownVersion(v) => StoreError::UnsupportedFormat {
                dir: self.inner.dir.clone(),
                detail: format!(
                    "record {kind}/{} has seal version {v} (this build reads version {})",
                    hex::encode(key),
                    seal::SEAL_VERSION
                ),
            },
            e => StoreError::Corrupt {
                kind: kind.tag(),
                key: hex::encode(key),
                reason: e.to_string(),
            },
        })
    }

    /// Seals `value` and stores it under `key`, replacing any previous value.
    /// Durable after [`Store::flush`].
    pub fn put(&self, kind: RecordKind, key: &[u8], value: &[u8]) -> Result<(), StoreError> {
        let sealed = self.seal(kind, key, value)?;
        self.tree(kind)
            .insert(key, sealed)
            .map_err(|e| self.io("writing", kind, e))?;
        Ok(())
    }

    /// Reads and opens the value under `key`, if any.
    pub fn get(&self, kind: RecordKind, key: &[u8]) -> Result<Option<SecretBytes>, StoreError> {
        match self
            .tree(kind)
            .get(key)
            .map_err(|e| self.io("reading", kind, e))?
        {
            Some(sealed) => self.unseal(kind, key, &sealed).map(Some),
            None => Ok(None),
        }
    }

    /// Removes the value under `key` and returns it; at most one caller gets
    /// a given value.
    ///
    /// The removal is flushed to disk before the value is returned, so a
    /// taken record does not come back after a crash. A record that does not
    /// open is left in place (the error says which). If the flush fails the
    /// value is dropped and the error returned: it is never handed out with a
    /// removal that might not be durable.
    pub fn take(&self, kind: RecordKind, key: &[u8]) -> Result<Option<SecretBytes>, StoreError> {
        let tree = self.tree(kind);
        loop {
            let Some(sealed) = tree.get(key).map_err(|e| self.io("reading", kind, e))? else {
                return Ok(None);
            };
            let value = self.unseal(kind, key, &sealed)?;
            let swapped = tree
                .compare_and_swap(key, Some(&sealed), None as Option<&[u8]>)
                .map_err(|e| self.io("removing", kind, e))?;
            if swapped.is_ok() {
                self.flush()?;
                return Ok(Some(value));
            }
            // Replaced or taken concurrently since we read it: read again.
        }
    }

    /// Removes the value under `key` of `kind` and, in the same transaction,
    /// writes `log_value` under `log_key` of `log_kind` (which must be absent)
    /// plus any `also` records; then flushes to disk and returns the removed
    /// value. `None` (and nothing written) if the value is absent or the log
    /// record exists already. At most one caller gets a given value, and a
    /// consumed value never comes back after a crash.
    pub fn consume(
        &self,
        entry: (RecordKind, &[u8]),
        log: (RecordKind, &[u8], &[u8]),
        also: &[(RecordKind, &[u8], &[u8])],
    ) -> Result<Option<SecretBytes>, StoreError> {
        self.consume_then(entry, log, also, true)
    }

    /// [`Store::consume`] without its flush: the removal is durable with
    /// the store's next flush, which the caller makes before anything made
    /// with the value leaves the process (a crash before then brings the
    /// value back, with nothing made from it ever seen). At most one
    /// caller of this process gets a given value.
    pub fn consume_unflushed(
        &self,
        entry: (RecordKind, &[u8]),
        log: (RecordKind, &[u8], &[u8]),
        also: &[(RecordKind, &[u8], &[u8])],
    ) -> Result<Option<SecretBytes>, StoreError> {
        self.consume_then(entry, log, also, false)
    }

    fn consume_then(
        &self,
        (kind, key): (RecordKind, &[u8]),
        (log_kind, log_key, log_value): (RecordKind, &[u8], &[u8]),
        also: &[(RecordKind, &[u8], &[u8])],
        flush: bool,
    ) -> Result<Option<SecretBytes>, StoreError> {
        use sled::transaction::{ConflictableTransactionError, TransactionError};
        use sled::Transactional;

        let sealed_log = self.seal(log_kind, log_key, log_value)?;
        let sealed_also = also
            .iter()
            .map(|(k, key, v)| Ok((*k, *key, self.seal(*k, key, v)?)))
            .collect::<Result<Vec<_>, StoreError>>()?;
        let mut kinds = vec![kind, log_kind];
        for (k, _, _) in &sealed_also {
            if !kinds.contains(k) {
                kinds.push(*k);
            }
        }
        let trees: Vec<&sled::Tree> = kinds.iter().map(|k| self.tree(*k)).collect();
        let at = |k: RecordKind| kinds.iter().position(|x| *x == k).unwrap_or(0);
        let taken = trees
            .as_slice()
            .transaction(|t| {
                if t[at(log_kind)].get(log_key)?.is_some() {
                    return Ok(None);
                }
                let Some(sealed) = t[at(kind)].remove(key)? else {
                    return Ok(None);
                };
                t[at(log_kind)].insert(log_key, sealed_log.as_slice())?;
                for (k, key, v) in &sealed_also {
                    t[at(*k)].insert(*key, v.as_slice())?;
                }
                Ok::<_, ConflictableTransactionError<()>>(Some(sealed))
            })
            .map_err(|e: TransactionError<()>| self.io("consuming", kind, format!("{e:?}")))?;
        let Some(sealed) = taken else {
            return Ok(None);
        };
        if flush {
            self.flush()?;
        }
        // Opened after the removal (durable, or flushed by the caller before
        // anything made with it leaves); a record that does not open
        // is gone either way, and the error says which.
        self.unseal(kind, key, &sealed).map(Some)
    }

    /// Keys of a kind that start with `prefix`, ascending.
    pub fn keys_with_prefix(
        &self,
        kind: RecordKind,
        prefix: &[u8],
    ) -> Result<Vec<Vec<u8>>, StoreError> {
        self.tree(kind)
            .scan_prefix(prefix)
            .keys()
            .map(|k| {
                k.map(|k| k.to_vec())
                    .map_err(|e| self.io("listing", kind, e))
            })
            .collect()
    }

    /// Up to `k` keys from each end of those starting with `prefix` (all
    /// of them if there are at most `2k`), in order: what a caller that
    /// takes from the front or the back needs, without listing a long run.
    pub fn keys_at_ends(
        &self,
        kind: RecordKind,
        prefix: &[u8],
        k: usize,
    ) -> Result<Vec<Vec<u8>>, StoreError> {
        let listing = |e| self.io("listing", kind, e);
        let mut iter = self.tree(kind).scan_prefix(prefix).keys();
        let mut front = Vec::with_capacity(k);
        for key in iter.by_ref().take(k) {
            front.push(key.map_err(listing)?.to_vec());
        }
        let mut back = Vec::with_capacity(k);
        for key in iter.rev().take(k) {
            back.push(key.map_err(listing)?.to_vec());
        }
        back.reverse();
        front.extend(back);
        Ok(front)
    }

    /// Stores `value` under `key` only if `key` is absent, atomically.
    /// Returns `false` (and changes nothing) if a value already existed.
    /// Durable after [`Store::flush`].
    pub fn insert_new(
        &self,
        kind: RecordKind,
        key: &[u8],
        value: &[u8],
    ) -> Result<bool, StoreError> {
        let sealed = self.seal(kind, key, value)?;
        let swapped = self
            .tree(kind)
            .compare_and_swap(key, None as Option<&[u8]>, Some(sealed))
            .map_err(|e| self.io("inserting", kind, e))?;
        Ok(swapped.is_ok())
    }

    /// Seals and stores every `(key, value)`, replacing previous values, as
    /// one atomic batch: after a crash either all of them are stored or
    /// none. Durable after [`Store::flush`].
    pub fn put_all<K: AsRef<[u8]>, V: AsRef<[u8]>>(
        &self,
        kind: RecordKind,
        records: &[(K, V)],
    ) -> Result<(), StoreError> {
        let mut batch = sled::Batch::default();
        for (k, v) in records {
            let k = k.as_ref();
            batch.insert(k, self.seal(kind, k, v.as_ref())?);
        }
        self.tree(kind)
            .apply_batch(batch)
            .map_err(|e| self.io("writing", kind, e))
    }

    /// Whether a value exists under `key` (without opening it).
    pub fn contains(&self, kind: RecordKind, key: &[u8]) -> Result<bool, StoreError> {
        self.tree(kind)
            .contains_key(key)
            .map_err(|e| self.io("reading", kind, e))
    }

    /// All keys of a kind, in ascending byte order.
    pub fn keys(&self, kind: RecordKind) -> Result<Vec<Vec<u8>>, StoreError> {
        self.tree(kind)
            .iter()
            .keys()
            .map(|k| {
                k.map(|k| k.to_vec())
                    .map_err(|e| self.io("listing", kind, e))
            })
            .collect()
    }

    /// The smallest key of a kind, if any.
    pub fn first_key(&self, kind: RecordKind) -> Result<Option<Vec<u8>>, StoreError> {
        match self.tree(kind).iter().keys().next() {
            Some(k) => k
                .map(|k| Some(k.to_vec()))
                .map_err(|e| self.io("listing", kind, e)),
            None => Ok(None),
        }
    }

    /// The largest key of a kind, if any.
    pub fn last_key(&self, kind: RecordKind) -> Result<Option<Vec<u8>>, StoreError> {
        match self.tree(kind).last() {
            Ok(last) => Ok(last.map(|(k, _)| k.to_vec())),
            Err(e) => Err(self.io("listing", kind, e)),
        }
    }

    /// Number of records of a kind (walks the tree).
    pub fn len(&self, kind: RecordKind) -> Result<usize, StoreError> {
        Ok(self.tree(kind).len())
    }

    /// Writes everything to disk and waits for it (fsync).
    pub fn flush(&self) -> Result<(), StoreError> {
        self.inner
            .db
            .flush()
            .map_err(|e| io_error(&self.inner.dir, "flushing", e))?;
        Ok(())
    }
}

#[cfg(test)]
#[allow(non_snake_case)]
mod tests;
