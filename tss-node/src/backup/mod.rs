//! Backup and restore of one party (`tss-node backup`, `backup verify`,
//! `restore`): everything a party needs to come back on a new machine,
//! encrypted to an offline recovery key (age, X25519).
//!
//! A backup file is (docs/FORMATS.md, "Party backup"):
//!
//! ```text
//! "tss-node backup\n" | u32 BE header length | header (CBOR)
//!   | Ed25519 signature (64) | age ciphertext
//! ```
//!
//! The header is public: the party's name, identity and TLS fingerprint,
//! the recipient the backup is encrypted to, and each key's id, scheme,
//! index, public key and finished keygen transcript. The signature is the
//! party's identity key's, over a domain tag, the header and the SHA-256 of
//! the ciphertext: age needs only the public recipient to encrypt, so
//! anyone could make a file that decrypts, but only the party can sign
//! one. `backup verify` therefore proves without the recovery key that the
//! whole file was made by the party `parties.toml` names, of keys whose
//! transcripts pass the audit with it. The ciphertext holds the node's
//! config files and every sealed record except presignatures, pooled
//! nonces and pregenerated primes, with the SHA-256 of the header.
//!
//! The records are taken from a stopped node (the store is single-process):
//! a backup of a running node is refused with that reason.

mod restore;

pub use restore::restore;

use std::path::Path;

use anyhow::{bail, Context};
use serde::{Deserialize, Serialize};
use serde_bytes::ByteBuf;
use sha2::{Digest, Sha256};
use tss_core::identity::IdentityKey;
use tss_core::store::{RecordKind, Store};
use zeroize::Zeroize;

use crate::config::NodeConfig;
use crate::keys::IDENTITY_KEY;

/// The first bytes of every backup file.
pub const MAGIC: &[u8] = b"tss-node backup\n";
/// [`Header::format`] of this version.
pub const FORMAT: &str = "tss-node-backup/v1";
/// Largest header accepted (transcripts of ECDSA keys are the bulk).
const MAX_HEADER: usize = 64 << 20;

/// What the party's signature covers, before the header and the
/// ciphertext's SHA-256.
const SIGNED_DOMAIN: &[u8] = b"tss-node backup v1\0";

/// Whether records of `kind` are in a backup. Not: single-use material a
/// restored node must never bring back (presignatures, pooled nonces), and
/// primes, a cache. A kind added to the store later is left out until it
/// is named here (a test fails until it is decided).
pub fn backed_up(kind: RecordKind) -> bool {
    matches!(
        kind,
        RecordKind::AuxInfo
            | RecordKind::KeyShare
            | RecordKind::KeyInfo
            | RecordKind::SeenExecution
            | RecordKind::PresignatureUsed
            | RecordKind::NodeSecret
            | RecordKind::Transcript
            | RecordKind::Spend
            | RecordKind::Audit
    )
}

/// The public part of a backup.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Header {
    /// Always [`FORMAT`].
    pub format: String,
    /// Party name.
    pub party: String,
    /// Ed25519 identity public key (32 bytes).
    pub party_id: ByteBuf,
    /// SHA-256 of the party's TLS certificate (DER).
    pub tls_fingerprint: ByteBuf,
    /// The age recipient the backup is encrypted to.
    pub recipient: String,
    /// When the backup was made, seconds since the Unix epoch.
    pub created_unix: u64,
    /// Every key the party holds a share of.
    pub keys: Vec<HeaderKey>,
}

/// A key in a backup's header.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct HeaderKey {
    /// Key id.
    pub key_id: String,
    /// `ecdsa`, `ed25519` or `taproot`.
    pub scheme: String,
    /// This party's keygen index.
    pub index: u16,
    /// The key's public key (as `GetKey` gives it).
    pub public_key: ByteBuf,
    /// The key's finished keygen transcript (as `ExportTranscript` gives
    /// it); empty for a key whose certification did not finish here.
    pub transcript: ByteBuf,
}

/// The encrypted part of a backup. Secret: zeroized on drop.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Payload {
    /// Always [`FORMAT`].
    format: String,
    /// SHA-256 of the header bytes as written in the file.
    header_sha256: ByteBuf,
    /// Files of the party's folder: name (relative to the folder) and
    /// bytes: `node.toml`, its TLS certificate and policy, `party.toml`.
    files: Vec<(String, ByteBuf)>,
    /// The `node.toml` fields (`tls_cert`, `policy`) naming a file, and the
    /// name of that file in `files`.
    paths: Vec<(String, String)>,
    /// Sealed records in plaintext: kind tag, key, value.
    records: Vec<(String, ByteBuf, ByteBuf)>,
}

impl Drop for Payload {
    fn drop(&mut self) {
        for (_, _, v) in &mut self.records {
            v.zeroize();
        }
        for (_, v) in &mut self.files {
            v.zeroize();
        }
    }
}

/// What `backup` wrote.
#[derive(Debug)]
pub struct Written {
    /// The public header.
    pub header: Header,
    /// Records in the backup.
    pub records: usize,
    /// File size in bytes.
    pub bytes: usize,
}

/// Writes a backup of the party of `config` (stopped) to `out`, encrypted
/// to the age recipient `to` (`age1...`, or a file whose first such line
/// is it). Refuses an existing `out`.
pub fn backup(config: &Path, to: &str, out: &Path) -> anyhow::Result<Written> {
    let recipient = recipient(to)?;
    if out.exists() {
        bail!("{} exists: choose a new file for the backup", out.display());
    }
    let cfg = NodeConfig::load(config)?;
    let store = Store::open(&cfg.store_dir, &cfg.passphrase()?).with_context(|| {
        format!(
            "cannot open the store of {} (stop the node first: a running node holds it)",
            cfg.name
        )
    })?;
    let folder = config.parent().unwrap_or(Path::new("."));
    let (files, paths) = folder_files(config, &cfg, folder)?;
    let identity = store
        .get(RecordKind::NodeSecret, IDENTITY_KEY)?
        .context("the store holds no identity key")?;
    let identity = IdentityKey::from_secret(&identity)?;
    let cert_pem = std::fs::read_to_string(&cfg.tls_cert)
        .with_context(|| format!("cannot read {}", cfg.tls_cert.display()))?;
    let keys = header_keys(&store)?;
    let header = Header {
        format: FORMAT.into(),
        party: cfg.name.clone(),
        party_id: ByteBuf::from(identity.party_id().0.to_vec()),
        tls_fingerprint: ByteBuf::from(pem_fingerprint(&cert_pem)?.to_vec()),
        recipient: recipient.to_string(),
        created_unix: crate::protocol::ceremony::transcript::now_unix(),
        keys,
    };
    let header_bytes = encode_cbor(&header);
    let mut records = Vec::new();
    for &kind in RecordKind::ALL {
        if !backed_up(kind) {
            continue;
        }
        for k in store.keys(kind)? {
            if let Some(v) = store.get(kind, &k)? {
                records.push((
                    kind.tag().to_owned(),
                    ByteBuf::from(k),
                    ByteBuf::from(v.expose().to_vec()),
                ));
            }
        }
    }
    let payload = Payload {
        format: FORMAT.into(),
        header_sha256: ByteBuf::from(Sha256::digest(&header_bytes).to_vec()),
        files,
        paths,
        records,
    };
    let n_records = payload.records.len();
    let mut plain = zeroize::Zeroizing::new(encode_cbor(&payload));
    drop(payload);
    let sealed = age::encrypt(&recipient, &plain)
        .map_err(|e| anyhow::anyhow!("cannot encrypt the backup: {e}"))?;
    plain.zeroize();
    let signature = identity.sign(&signed_bytes(&header_bytes, &sealed));
    let mut file = Vec::with_capacity(MAGIC.len() + 4 + header_bytes.len() + 64 + sealed.len());
    file.extend_from_slice(MAGIC);
    file.extend_from_slice(&u32::try_from(header_bytes.len())?.to_be_bytes());
    file.extend_from_slice(&header_bytes);
    file.extend_from_slice(&signature);
    file.extend_from_slice(&sealed);
    write_new(out, &file)?;
    Ok(Written {
        header,
        records: n_records,
        bytes: file.len(),
    })
}

/// What the party signs: the domain tag, the header bytes and the
/// ciphertext's SHA-256.
fn signed_bytes(header: &[u8], sealed: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(SIGNED_DOMAIN.len() + header.len() + 32);
    v.extend_from_slice(SIGNED_DOMAIN);
    v.extend_from_slice(header);
    v.extend_from_slice(&Sha256::digest(sealed));
    v
}

/// Each key's header entry, from the store's key records and transcripts.
fn header_keys(store: &Store) -> anyhow::Result<Vec<HeaderKey>> {
    let mut keys = Vec::new();
    for r in crate::protocol::records::list_key_records(store)? {
        let transcript = store
            .get(
                RecordKind::Transcript,
                &crate::keys::transcript_file(&r.key_id),
            )?
            .map(|t| t.expose().to_vec())
            .unwrap_or_default();
        keys.push(HeaderKey {
            key_id: r.key_id.clone(),
            scheme: r.scheme.map_or("ecdsa", |s| s.name()).to_owned(),
            index: r.my_index,
            public_key: ByteBuf::from(r.public_key_bytes()?),
            transcript: ByteBuf::from(transcript),
        });
    }
    Ok(keys)
}

/// Files and the `node.toml` fields naming them ([`Payload::paths`]).
type FolderFiles = (Vec<(String, ByteBuf)>, Vec<(String, String)>);

/// The party folder's files a restore writes back: `node.toml`, the TLS
/// certificate and policy it names, and `party.toml` if present. A file
/// named by a path inside the folder keeps that path; one outside it is
/// kept under its file name, and a restore points `node.toml` at it.
fn folder_files(config: &Path, cfg: &NodeConfig, folder: &Path) -> anyhow::Result<FolderFiles> {
    let text = std::fs::read(config)?;
    let mut files = vec![("node.toml".to_owned(), ByteBuf::from(text))];
    let mut paths = Vec::new();
    let folder = folder.canonicalize()?;
    for (field, path) in [
        ("tls_cert", Some(cfg.tls_cert.clone())),
        ("policy", cfg.policy.clone()),
    ] {
        let Some(path) = path else { continue };
        let path = path
            .canonicalize()
            .with_context(|| format!("cannot read {}", path.display()))?;
        let name = path
            .strip_prefix(&folder)
            .ok()
            .and_then(relative_name)
            .or_else(|| path.file_name().and_then(|n| relative_name(Path::new(n))))
            .with_context(|| format!("{field} {} has no file name", path.display()))?;
        if files.iter().any(|(n, _)| *n == name) {
            bail!("two files of the party would be restored as {name}: rename one");
        }
        let bytes =
            std::fs::read(&path).with_context(|| format!("cannot read {}", path.display()))?;
        files.push((name.clone(), ByteBuf::from(bytes)));
        paths.push((field.to_owned(), name));
    }
    if let Ok(p) = std::fs::read(folder.join("party.toml")) {
        if !files.iter().any(|(n, _)| n == "party.toml") {
            files.push(("party.toml".to_owned(), ByteBuf::from(p)));
        }
    }
    Ok((files, paths))
}

/// `p` as a plain relative path inside a folder (no root, no `..`).
pub(crate) fn relative_name(p: &Path) -> Option<String> {
    use std::path::Component;
    let plain =
        !p.as_os_str().is_empty() && p.components().all(|c| matches!(c, Component::Normal(_)));
    plain.then(|| p.to_str().map(str::to_owned)).flatten()
}

/// An age X25519 recipient, given as such or as a file holding one.
fn recipient(to: &str) -> anyhow::Result<age::x25519::Recipient> {
    if let Ok(r) = to.trim().parse::<age::x25519::Recipient>() {
        return Ok(r);
    }
    let text = std::fs::read_to_string(to).with_context(|| {
        format!("--to {to:?} is neither an age X25519 recipient (age1...) nor a readable file")
    })?;
    text.lines()
        .map(str::trim)
        .find_map(|l| l.parse::<age::x25519::Recipient>().ok())
        .with_context(|| format!("{to} holds no age X25519 recipient (a line age1...)"))
}

/// SHA-256 of a PEM certificate's DER.
pub(crate) fn pem_fingerprint(pem: &str) -> anyhow::Result<[u8; 32]> {
    let der = rustls_pemfile_der(pem)?;
    Ok(crate::transport::fingerprint(&der))
}

/// The key certificate of a transcript file (its first party's).
pub(crate) fn certificate_of(
    transcript: &[u8],
) -> anyhow::Result<keygen::transcript::KeyCertificate> {
    let f = keygen::transcript::TranscriptFile::decode(transcript)?;
    let c = f
        .certificates
        .first()
        .context("a transcript without certificates")?;
    Ok(keygen::transcript::KeyCertificate::decode(&c.body)?)
}

/// The DER of the first certificate in `pem`.
fn rustls_pemfile_der(pem: &str) -> anyhow::Result<Vec<u8>> {
    use rustls::pki_types::pem::PemObject;
    let cert = rustls::pki_types::CertificateDer::from_pem_slice(pem.as_bytes())
        .map_err(|e| anyhow::anyhow!("the TLS certificate is not PEM: {e}"))?;
    Ok(cert.to_vec())
}

fn encode_cbor<T: Serialize>(v: &T) -> Vec<u8> {
    let mut out = Vec::new();
    // Plain data into a Vec: cannot fail.
    ciborium::into_writer(v, &mut out).expect("CBOR into Vec");
    out
}

/// Writes a new file, readable by its owner only; refuses an existing one.
fn write_new(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("cannot create {}", path.display()))?;
    f.write_all(bytes)?;
    f.sync_all()?;
    Ok(())
}

/// A backup file split into its header (decoded, and its bytes) and
/// ciphertext. Refuses a file that is not a backup, or a damaged header.
pub struct Parsed<'a> {
    /// The header.
    pub header: Header,
    /// The header's bytes as in the file.
    pub header_bytes: &'a [u8],
    /// The party's signature ([`signed_bytes`]).
    pub signature: [u8; 64],
    /// The age ciphertext.
    pub sealed: &'a [u8],
}

/// Splits backup file bytes ([`Parsed`]).
pub fn parse(file: &[u8]) -> anyhow::Result<Parsed<'_>> {
    let rest = file
        .strip_prefix(MAGIC)
        .context("not a tss-node backup (it does not start with \"tss-node backup\")")?;
    let (len, rest) = rest
        .split_first_chunk::<4>()
        .context("the backup is truncated (no header length)")?;
    let len = usize::try_from(u32::from_be_bytes(*len))?;
    if len > MAX_HEADER || len > rest.len() {
        bail!("the backup is truncated or damaged (header length {len})");
    }
    let (header_bytes, rest) = rest.split_at(len);
    let (signature, sealed) = rest
        .split_first_chunk::<64>()
        .context("the backup is truncated (no signature)")?;
    let header: Header = ciborium::from_reader(header_bytes)
        .map_err(|e| anyhow::anyhow!("the backup's header does not decode: {e}"))?;
    if header.format != FORMAT {
        bail!(
            "unknown backup format {:?} (this tss-node reads {FORMAT})",
            header.format
        );
    }
    if encode_cbor(&header) != header_bytes {
        bail!("the backup's header is not canonically encoded");
    }
    if sealed.is_empty() {
        bail!("the backup is truncated (no encrypted part)");
    }
    let mut seen = std::collections::BTreeSet::new();
    if !header.keys.iter().all(|k| seen.insert(k.key_id.as_str())) {
        bail!("the backup's header names a key twice");
    }
    Ok(Parsed {
        header,
        header_bytes,
        signature: *signature,
        sealed,
    })
}

/// Checks, without the recovery key, that a backup belongs to a party of
/// `parties.toml` and to certified keys of that party: the party's name,
/// identity and TLS fingerprint are the auditor's, and each key's
/// transcript passes the full audit (`tss-audit verify`) with this party
/// at the key's index and the key's public key. Returns one line per check.
pub fn verify(file: &[u8], parties_toml: &str, party: Option<&str>) -> anyhow::Result<Vec<String>> {
    let parsed = parse(file)?;
    let h = &parsed.header;
    check_party(h, party)?;
    let parties = keygen::verify::parse_parties(parties_toml)?;
    let me = parties
        .iter()
        .find(|p| p.name == h.party)
        .with_context(|| format!("party {} is not in parties.toml", h.party))?;
    if !me.identity.eq_ignore_ascii_case(&hex::encode(&h.party_id)) {
        bail!(
            "the backup's identity {} is not {}'s in parties.toml",
            hex::encode(&h.party_id),
            h.party
        );
    }
    let fp = me.fingerprint()?;
    if fp.as_slice() != h.tls_fingerprint.as_slice() {
        bail!(
            "the backup's TLS certificate is not {}'s in parties.toml",
            h.party
        );
    }
    let id = tss_core::identity::PartyId(
        <[u8; 32]>::try_from(h.party_id.as_slice())
            .ok()
            .context("the backup's identity is not 32 bytes")?,
    );
    id.verify(
        &signed_bytes(parsed.header_bytes, parsed.sealed),
        &parsed.signature,
    )
    .map_err(|_| {
        anyhow::anyhow!(
            "the backup is not signed by {:?}'s identity key: it was altered, or made by someone else",
            h.party
        )
    })?;
    let age_days =
        crate::protocol::ceremony::transcript::now_unix().saturating_sub(h.created_unix) / 86_400;
    let mut lines = vec![
        format!(
            "party {:?}: identity {} and TLS certificate are the ones in parties.toml",
            h.party,
            hex::encode(&h.party_id)
        ),
        format!(
            "signed by the party's identity key; encrypted to {}; made at unix time {} ({age_days} days ago)",
            h.recipient, h.created_unix
        ),
    ];
    for k in &h.keys {
        if k.transcript.is_empty() {
            bail!(
                "key {:?}: no finished transcript (its certification did not finish at {:?}): \
                 a backup of an uncertified key proves nothing about it",
                k.key_id,
                h.party
            );
        }
        let report = keygen::verify::verify(&k.transcript, &parties);
        if !report.passed() {
            bail!(
                "key {}: its transcript fails the audit ({}):\n{report}",
                k.key_id,
                report.failed().join(", ")
            );
        }
        let cert = certificate_of(&k.transcript)?;
        let at = cert.parties.get(usize::from(k.index));
        let scheme = keygen::transcript::frost_scheme_of(&cert.curve).map_or("ecdsa", |s| s.name());
        if cert.key_id != k.key_id
            || scheme != k.scheme
            || cert.public_key.as_slice() != k.public_key.as_slice()
            || at.map(|p| (p.name.as_str(), p.identity.as_slice()))
                != Some((h.party.as_str(), h.party_id.as_slice()))
        {
            bail!(
                "key {}: the header's id, scheme, public key or index {} disagrees with its certificate",
                k.key_id,
                k.index
            );
        }
        lines.push(format!(
            "key {} ({}): transcript audited; {} is party {} of it; public key {}",
            k.key_id,
            k.scheme,
            h.party,
            k.index,
            hex::encode(&k.public_key)
        ));
    }
    Ok(lines)
}

/// Refuses a backup of another party than `party` (if given).
pub(crate) fn check_party(h: &Header, party: Option<&str>) -> anyhow::Result<()> {
    match party {
        Some(p) if p != h.party => bail!("this is a backup of {:?}, not of {p:?}", h.party),
        _ => Ok(()),
    }
}

/// Makes a new recovery key: writes the age X25519 identity to `out`
/// (owner-only, refusing an existing file) and returns its recipient.
pub fn new_recovery_key(out: &Path) -> anyhow::Result<String> {
    use age::secrecy::ExposeSecret;
    let id = age::x25519::Identity::generate();
    let recipient = id.to_public().to_string();
    let text = zeroize::Zeroizing::new(format!(
        "# tss-node recovery key: keep it offline; recipient {recipient}\n{}\n",
        id.to_string().expose_secret()
    ));
    write_new(out, text.as_bytes())?;
    Ok(recipient)
}

#[cfg(test)]
mod tests {
    #![allow(non_snake_case)]
    use super::*;

    #[test]
    fn backed_up__should_decide_every_record_kind() {
        // Every kind the store has is decided: single-use material and
        // primes stay out, everything else comes back
        let out = [RecordKind::Presignature, RecordKind::Primes];
        let decided = [
            RecordKind::AuxInfo,
            RecordKind::KeyShare,
            RecordKind::KeyInfo,
            RecordKind::SeenExecution,
            RecordKind::PresignatureUsed,
            RecordKind::NodeSecret,
            RecordKind::Transcript,
            RecordKind::Spend,
            RecordKind::Audit,
        ];
        for &k in RecordKind::ALL {
            assert!(
                out.contains(&k) || decided.contains(&k),
                "{k:?}: decide whether a backup holds it"
            );
            assert_eq!(backed_up(k), decided.contains(&k), "{k:?}");
        }
    }

    #[test]
    fn parse__should_refuse_what_is_not_a_whole_backup() {
        let header = Header {
            format: FORMAT.into(),
            party: "p".into(),
            party_id: ByteBuf::from(vec![1; 32]),
            tls_fingerprint: ByteBuf::from(vec![2; 32]),
            recipient: "age1x".into(),
            created_unix: 1,
            keys: vec![],
        };
        let hb = encode_cbor(&header);
        let file =
            |hb: &[u8], len: u32, tail: &[u8]| [MAGIC, &len.to_be_bytes()[..], hb, tail].concat();
        let len = u32::try_from(hb.len()).unwrap();
        // A whole file parses
        let whole = file(&hb, len, &[[7u8; 64].as_slice(), b"ct"].concat());
        let p = parse(&whole).unwrap();
        assert_eq!(p.header, header);
        assert_eq!(p.sealed, b"ct");
        // And every cut or change is refused
        let cases: Vec<(Vec<u8>, &str)> = vec![
            (whole[1..].to_vec(), "not a tss-node backup"),
            (whole[..MAGIC.len() + 2].to_vec(), "no header length"),
            (file(&hb, len + 1000, b""), "header length"),
            (file(&hb, len, &[7u8; 10]), "no signature"),
            (file(&hb, len, &[7u8; 64]), "no encrypted part"),
            (
                file(&[&hb[..], b"x"].concat(), len + 1, &[7u8; 70]),
                "canonically",
            ),
        ];
        for (bytes, want) in cases {
            let e = parse(&bytes).err().expect("refused").to_string();
            assert!(e.contains(want), "{want}: {e}");
        }
    }
}
