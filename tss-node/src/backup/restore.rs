//! `tss-node restore`: a fresh party folder from a backup ([`super`]).
//!
//! Everything is checked before anything is written: the file decodes, the
//! recovery key opens it (age authenticates every chunk: a truncated or
//! altered ciphertext fails), the header is the one the payload names by
//! its hash, the identity key in it is the header's party, and every key
//! of the header has its share and, where the header has a transcript, the
//! same certificate. The folder is built under a temporary name beside the
//! target and renamed into place only once complete: a failed restore
//! leaves nothing. No presignature or pooled nonce comes back (a backup
//! never holds one): the restored party's pools start empty, and pairs
//! refill them; what its peers still hold for a pair with it is consumed
//! as missing and falls back to the full protocol.

use std::path::Path;

use anyhow::{bail, Context};
use sha2::{Digest, Sha256};
use tss_core::identity::IdentityKey;
use tss_core::secret::{Passphrase, SecretBytes};
use tss_core::store::{RecordKind, Store};

use super::{parse, relative_name, Header, Payload, FORMAT, NOT_BACKED_UP};
use crate::keys::IDENTITY_KEY;

/// What a restore wrote.
#[derive(Debug)]
pub struct Restored {
    /// The backup's header.
    pub header: Header,
    /// Records written to the new store.
    pub records: usize,
    /// What the operator still has to do.
    pub notes: Vec<String>,
}

/// Restores the backup `file` into the new folder `dir` (which must not
/// exist, or be empty), with the age identity in `identity_file` and a
/// new store sealed under `pass`; `party`: refuse a backup of any other.
pub fn restore(
    file: &Path,
    identity_file: &Path,
    dir: &Path,
    pass: &Passphrase,
    party: Option<&str>,
) -> anyhow::Result<Restored> {
    let bytes = std::fs::read(file).with_context(|| format!("cannot read {}", file.display()))?;
    let parsed = parse(&bytes)?;
    super::check_party(&parsed.header, party)?;
    let identity = recovery_key(identity_file)?;
    let plain = age::decrypt(&identity, parsed.sealed);
    let plain = zeroize::Zeroizing::new(plain.map_err(|e| match e {
        age::DecryptError::NoMatchingKeys => anyhow::anyhow!(
            "this backup is not encrypted to the recovery key {} (wrong key)",
            identity_file.display()
        ),
        e => anyhow::anyhow!("the backup's encrypted part is damaged (truncated or altered): {e}"),
    })?);
    let payload: Payload = ciborium::from_reader(plain.as_slice())
        .map_err(|e| anyhow::anyhow!("the backup's encrypted part does not decode: {e}"))?;
    check(&parsed.header, parsed.header_bytes, &payload)?;

    if dir.exists() && std::fs::read_dir(dir)?.next().is_some() {
        bail!(
            "{} exists and is not empty: restore into a new folder",
            dir.display()
        );
    }
    let parent = dir
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(parent)?;
    let name = dir
        .file_name()
        .context("--dir must name a folder")?
        .to_string_lossy();
    let staging = tempfile::Builder::new()
        .prefix(&format!(".{name}.restoring-"))
        .tempdir_in(parent)
        .with_context(|| format!("cannot create a folder in {}", parent.display()))?;
    let records = write_folder(staging.path(), &payload, pass)?;
    let named = crate::config::NodeConfig::load(&staging.path().join("node.toml"))?
        .passphrase_file
        .filter(|f| !f.exists());
    let notes = named
        .and_then(|f| f.file_name().map(|n| n.to_string_lossy().into_owned()))
        .map(|n| {
            format!(
                "node.toml names the passphrase file {n:?}, which a backup never holds: \
                 put the new store's passphrase there (or edit passphrase_file) before `tss-node run`"
            )
        })
        .into_iter()
        .collect();
    if dir.exists() {
        std::fs::remove_dir(dir)?;
    }
    let staged = staging.keep();
    std::fs::rename(&staged, dir).with_context(|| {
        format!(
            "cannot move the restored folder into place at {}",
            dir.display()
        )
    })?;
    Ok(Restored {
        header: parsed.header,
        records,
        notes,
    })
}

/// The age X25519 identity (`AGE-SECRET-KEY-1...`) in `path`, as
/// `backup new-recovery-key` or `age-keygen` writes it.
fn recovery_key(path: &Path) -> anyhow::Result<age::x25519::Identity> {
    let text = zeroize::Zeroizing::new(
        std::fs::read_to_string(path)
            .with_context(|| format!("cannot read the recovery key {}", path.display()))?,
    );
    text.lines()
        .map(str::trim)
        .find(|l| l.starts_with("AGE-SECRET-KEY-1"))
        .and_then(|l| l.parse::<age::x25519::Identity>().ok())
        .with_context(|| {
            format!(
                "{} holds no age X25519 identity (a line AGE-SECRET-KEY-1...)",
                path.display()
            )
        })
}

/// Rewrites the restored `node.toml` where a field names its file by
/// another path than the one restored beside it (an absolute path, or one
/// outside the old folder); untouched (comments and all) otherwise.
fn point_config_at_files(dir: &Path, paths: &[(String, String)]) -> anyhow::Result<()> {
    let file = dir.join("node.toml");
    let text = std::fs::read_to_string(&file)?;
    let mut raw: toml::Table = toml::from_str(&text)?;
    let mut changed = false;
    for (field, name) in paths {
        if !matches!(field.as_str(), "tls_cert" | "policy") {
            bail!("the backup names a file for node.toml field {field:?}");
        }
        if raw.get(field).and_then(|v| v.as_str()) != Some(name.as_str()) {
            raw.insert(field.clone(), toml::Value::String(name.clone()));
            changed = true;
        }
    }
    if changed {
        std::fs::remove_file(&file)?;
        let text = format!(
            "# Restored by tss-node restore: tls_cert and policy name the files\n\
             # restored beside this one.\n{}",
            toml::to_string(&raw)?
        );
        super::write_new(&file, text.as_bytes())?;
    }
    Ok(())
}

/// Every check of a decrypted backup against its header.
fn check(header: &Header, header_bytes: &[u8], p: &Payload) -> anyhow::Result<()> {
    if p.format != FORMAT {
        bail!("unknown backup payload format {:?}", p.format);
    }
    if p.header_sha256.as_slice() != Sha256::digest(header_bytes).as_slice() {
        bail!("the backup's public header was altered after the backup was made");
    }
    let record = |kind: RecordKind, key: &[u8]| {
        p.records
            .iter()
            .find(|(t, k, _)| t == kind.tag() && k.as_slice() == key)
            .map(|(_, _, v)| v)
    };
    let id =
        record(RecordKind::NodeSecret, IDENTITY_KEY).context("the backup holds no identity key")?;
    let id = IdentityKey::from_secret(&SecretBytes::new(id.to_vec()))?;
    if id.party_id().0.as_slice() != header.party_id.as_slice() {
        bail!("the backup's identity key is not the party its header names");
    }
    for (tag, _, _) in &p.records {
        let kind = RecordKind::ALL.iter().find(|k| k.tag() == tag);
        match kind {
            Some(k) if !NOT_BACKED_UP.contains(k) => {}
            _ => bail!("the backup holds records of kind {tag:?}, which no backup holds"),
        }
    }
    for k in &header.keys {
        if record(RecordKind::KeyShare, crate::keys::key(&k.key_id)).is_none() {
            bail!("the backup holds no share of key {}", k.key_id);
        }
        let stored = record(
            RecordKind::Transcript,
            &crate::keys::transcript_file(&k.key_id),
        );
        if !k.transcript.is_empty() && stored.map(|t| t.as_slice()) != Some(k.transcript.as_slice())
        {
            bail!(
                "key {}: the transcript in the header is not the party's own",
                k.key_id
            );
        }
    }
    for (name, _) in &p.files {
        if relative_name(Path::new(name)).as_deref() != Some(name.as_str()) {
            bail!("the backup names a file {name:?} outside the party folder");
        }
    }
    if !p.files.iter().any(|(n, _)| n == "node.toml") {
        bail!("the backup holds no node.toml");
    }
    Ok(())
}

/// Writes the party's files and a new store holding every record into
/// `dir`; returns the number of records.
fn write_folder(dir: &Path, p: &Payload, pass: &Passphrase) -> anyhow::Result<usize> {
    for (name, bytes) in &p.files {
        let path = dir.join(name);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        super::write_new(&path, bytes)?;
    }
    point_config_at_files(dir, &p.paths)?;
    let cfg: crate::config::NodeConfig = crate::config::NodeConfig::load(&dir.join("node.toml"))
        .context("the backup's node.toml does not load")?;
    let store = Store::create(&cfg.store_dir, pass)?;
    for &kind in RecordKind::ALL {
        let rows: Vec<(&[u8], &[u8])> = p
            .records
            .iter()
            .filter(|(t, _, _)| t == kind.tag())
            .map(|(_, k, v)| (k.as_slice(), v.as_slice()))
            .collect();
        if !rows.is_empty() {
            store.put_all(kind, &rows)?;
        }
    }
    store.flush()?;
    Ok(p.records.len())
}
