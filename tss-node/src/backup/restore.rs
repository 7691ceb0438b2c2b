//! `tss-node restore`: a fresh party folder from a backup ([`super`]).
//!
//! Everything is checked before anything is written: the file decodes; its
//! header passes `backup verify` against the operator's `parties.toml`
//! (the party, its identity and TLS certificate are the ones named there,
//! and every key's transcript passes the audit with this party in it); the
//! recovery key opens it (age authenticates every chunk: a truncated or
//! altered ciphertext fails); the header is the one the payload names by
//! its hash; the identity key in it is the party's in `parties.toml`; and
//! every key of the header has its share and the same transcript. Age
//! encryption needs only the public recipient, so anyone who knows it can
//! make a file that decrypts: the identity key is what ties a backup to
//! the party, since only the party (and its backups) hold it. The folder is built under a temporary name beside the
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

use super::{backed_up, parse, Header, Payload, FORMAT};
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
/// new store sealed under `pass`, once it passes `backup verify` against
/// `parties_toml`; `party`: refuse a backup of any other.
pub fn restore(
    file: &Path,
    identity_file: &Path,
    dir: &Path,
    pass: &Passphrase,
    parties_toml: &str,
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
    let mut rest = plain.as_slice();
    let payload: Payload = ciborium::from_reader(&mut rest)
        .map_err(|e| anyhow::anyhow!("the backup's encrypted part does not decode: {e}"))?;
    if !rest.is_empty() {
        bail!("the backup's encrypted part has bytes after its end");
    }
    check(&parsed.header, parsed.header_bytes, &payload)?;
    // Last, as the slowest (each transcript's full audit): the party and
    // its keys are the ones parties.toml and the certificates name.
    super::verify(&bytes, parties_toml, party)?;

    if std::fs::symlink_metadata(dir).is_ok_and(|m| m.file_type().is_symlink()) {
        bail!(
            "{} is a symbolic link: restore into a plain new folder",
            dir.display()
        );
    }
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
    if !parent.is_dir() {
        bail!("{} does not exist: create it first", parent.display());
    }
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
    // rename(2) replaces an empty folder; the staging folder is kept (not
    // removed on drop) only once it is in place.
    std::fs::rename(staging.path(), dir).with_context(|| {
        format!(
            "cannot move the restored folder into place at {}",
            dir.display()
        )
    })?;
    let _ = staging.keep();
    std::fs::File::open(parent).and_then(|d| d.sync_all())?;
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
    let store_dir = raw.get("store_dir").and_then(|v| v.as_str());
    if store_dir
        .and_then(|d| super::relative_name(Path::new(d)))
        .is_none()
        || store_dir.is_some_and(|d| d.contains('/'))
    {
        raw.insert("store_dir".into(), toml::Value::String("store".into()));
        changed = true;
    }
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
            "# Restored by tss-node restore: store_dir, tls_cert and policy name\n\
             # the store and files restored beside this one.\n{}",
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
    let mut seen = std::collections::BTreeSet::new();
    for (tag, key, _) in &p.records {
        match RecordKind::ALL.iter().find(|k| k.tag() == tag) {
            Some(&k) if backed_up(k) => {}
            _ => bail!("the backup holds records of kind {tag:?}, which no backup holds"),
        }
        if !seen.insert((tag.as_str(), key.as_slice())) {
            bail!("the backup holds a {tag} record twice");
        }
    }
    let in_header = |key: &[u8]| header.keys.iter().any(|k| k.key_id.as_bytes() == key);
    for (tag, key, _) in &p.records {
        let unknown = (tag == RecordKind::KeyInfo.tag() && !in_header(key))
            || (tag == RecordKind::KeyShare.tag()
                && !in_header(key)
                && !key.starts_with(b"retired/"));
        if unknown {
            bail!(
                "the backup holds a {tag} record of a key its header does not name ({:?})",
                String::from_utf8_lossy(key)
            );
        }
    }
    for k in &header.keys {
        let share = record(RecordKind::KeyShare, crate::keys::key(&k.key_id))
            .with_context(|| format!("the backup holds no share of key {:?}", k.key_id))?;
        let stored = record(
            RecordKind::Transcript,
            &crate::keys::transcript_file(&k.key_id),
        );
        if stored.map(|t| t.as_slice()) != Some(k.transcript.as_slice()) {
            bail!(
                "key {:?}: the transcript in the header is not the party's own",
                k.key_id
            );
        }
        share_matches(k, share)?;
    }
    check_files(header, p, |kind, key| record(kind, key).map(|v| v.to_vec()))?;
    Ok(())
}

/// Checks that `k`'s share is a share of the certified key at the header's
/// index: its public key and public shares are the certificate's.
fn share_matches(k: &super::HeaderKey, share: &[u8]) -> anyhow::Result<()> {
    let cert = super::certificate_of(&k.transcript)?;
    let (public_key, shares): (Vec<u8>, Vec<Vec<u8>>) = match k.scheme.as_str() {
        "ecdsa" => {
            let s = tss_core::ecdsa::decode_share(share).map_err(|e| {
                anyhow::anyhow!("the share of key {:?} does not decode: {e}", k.key_id)
            })?;
            let shares = s
                .core
                .key_info
                .public_shares
                .iter()
                .map(|p| p.to_bytes(true).to_vec())
                .collect();
            (tss_core::ecdsa::public_key(&s).to_vec(), shares)
        }
        _ => {
            let s = tss_core::frost::FrostShare::decode(share).map_err(|e| {
                anyhow::anyhow!("the share of key {:?} does not decode: {e}", k.key_id)
            })?;
            (s.public_key(), s.verifying_shares())
        }
    };
    let certified: Vec<Vec<u8>> = cert.public_shares.iter().map(|s| s.to_vec()).collect();
    if public_key != cert.public_key.as_slice() || shares != certified {
        bail!(
            "the share of key {:?} is not a share of the certified key",
            k.key_id
        );
    }
    Ok(())
}

/// Checks the party folder's files: only `node.toml`, `party.toml` and the
/// files `node.toml` names (single names, never inside the store), and the
/// TLS certificate is the one the header names, of the TLS key in the
/// backup.
fn check_files(
    header: &Header,
    p: &Payload,
    record: impl Fn(RecordKind, &[u8]) -> Option<Vec<u8>>,
) -> anyhow::Result<()> {
    let mut names = std::collections::BTreeSet::new();
    for (name, _) in &p.files {
        let named = p.paths.iter().any(|(_, n)| n == name);
        let allowed = matches!(name.as_str(), "node.toml" | "party.toml") || named;
        let plain = !name.contains('/')
            && super::relative_name(Path::new(name)).as_deref() == Some(name.as_str());
        if !allowed || !plain || name == "store" || !names.insert(name.as_str()) {
            bail!("the backup holds a file {name:?} a party folder does not have");
        }
    }
    for (field, name) in &p.paths {
        if !matches!(field.as_str(), "tls_cert" | "policy") || !names.contains(name.as_str()) {
            bail!("the backup names {name:?} for node.toml's {field:?}");
        }
    }
    if !names.contains("node.toml") {
        bail!("the backup holds no node.toml");
    }
    let cert = p
        .paths
        .iter()
        .find(|(f, _)| f == "tls_cert")
        .and_then(|(_, n)| p.files.iter().find(|(m, _)| m == n))
        .map(|(_, b)| String::from_utf8_lossy(b).into_owned())
        .context("the backup holds no TLS certificate")?;
    if super::pem_fingerprint(&cert)?.as_slice() != header.tls_fingerprint.as_slice() {
        bail!("the backup's TLS certificate is not the one its header names");
    }
    let key = record(RecordKind::NodeSecret, crate::keys::TLS_KEY)
        .context("the backup holds no TLS key")?;
    let key = zeroize::Zeroizing::new(key);
    let key_pem = std::str::from_utf8(&key).context("the backup's TLS key is not PEM")?;
    crate::transport::TlsIdentity::from_pem(&cert, key_pem)
        .context("the backup's TLS certificate is not of the TLS key in it")?;
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
