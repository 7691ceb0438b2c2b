//! Keygen transcripts at a node: the views of a key's aux-info and keygen
//! runs each party records, their completion, the key certificate each party
//! signs, and the finished file an auditor checks with `tss-audit verify`.
//!
//! The steps (the coordinator drives them right after keygen,
//! [`crate::coordinator::keygen`]):
//! 1. every party stores its own view of both runs with their results
//!    ([`crate::flows`]): the envelopes it sent and accepted, point-to-point
//!    keygen envelopes (secret shares) only as their hash;
//! 2. the coordinator asks each peer for the point-to-point envelopes it sent
//!    to the other peers ([`part`], `TranscriptPart`) and completes its views;
//! 3. it sends each peer the point-to-point envelopes that peer did not see
//!    ([`Sessions::unseen_by`], `CertifyKey`); each party completes its
//!    views, checks both runs are complete and authentic ([`complete`]),
//!    builds the certificate from its own records only ([`certificate`]),
//!    signs it and keeps the completed runs ([`certify`]);
//! 4. the coordinator requires all certificates to be byte-equal; the new key
//!    signs the certificate with the full protocol, and a co-signer signs
//!    only the certificate it signed itself ([`check_certificate_message`]);
//! 5. the coordinator checks every signature ([`check_signatures`]),
//!    assembles the file ([`assemble`]), stores it and sends the
//!    signatures to the peers ([`store`], `StoreTranscript`), who check them
//!    ([`check_signatures`]) and store the same file.
//!
//! Everything a peer sends is checked here: entries must be of the key's two
//! runs and signed by their sender's pinned identity; a certificate must be
//! our own byte for byte; signatures must verify.
//!
//! Store layout (`transcript` tree): `aux/<aux id hex>` (this party's view of
//! an aux-info run; the completed run once a key on it is certified),
//! `view/<key id>` (its view of the key's keygen run; the completed run once
//! certified), `cert/<key id>` (the certificate body it signed),
//! `file/<key id>` (the finished transcript file).

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use keygen::record::KeyRecord;
use keygen::transcript::{
    self as kt, CertParty, Entry, KeyCertificate, SignedCertificate, TranscriptFile,
    CERTIFICATE_FORMAT,
};
use proto::v1 as pb;
use tss_core::ecdsa::{self, KeyShare};
use tss_core::envelope::{Envelope, Protocol};
use tss_core::identity::PartyId;
use tss_core::store::RecordKind;

use crate::error::{blocking, ApiError};
use crate::flows;
use crate::node::{Node, Party};

/// Domain prefix of the message the key signs over its certificate: the key
/// signs SHA-256(domain || certificate body)
/// ([`keygen::transcript::certificate_digest`]). Sign requests whose message
/// starts with it are reserved for key certificates.
pub const CERTIFICATE_DOMAIN: &[u8] = keygen::transcript::CERT_DOMAIN;

/// Request id of the key's signature over its certificate.
pub const CERTIFICATE_REQUEST_ID: &[u8] = b"key-certificate";

/// Largest difference between the coordinator's certificate time and this
/// node's clock.
pub const MAX_CLOCK_SKEW_SECS: u64 = 600;

/// Seconds since the Unix epoch.
pub fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Record key of this party's view of aux-info run `aux_id`.
pub fn aux_key(aux_id: &[u8; 32]) -> Vec<u8> {
    format!("aux/{}", hex::encode(aux_id)).into_bytes()
}

/// Record key of this party's view of a key's keygen run.
pub fn view_key(key_id: &str) -> Vec<u8> {
    format!("view/{key_id}").into_bytes()
}

/// Record key of the certificate body this party signed for a key.
pub fn cert_key(key_id: &str) -> Vec<u8> {
    format!("cert/{key_id}").into_bytes()
}

/// Record key of a key's finished transcript file.
pub fn file_key(key_id: &str) -> Vec<u8> {
    format!("file/{key_id}").into_bytes()
}

/// What this party stores of a run it took part in: every envelope it sent
/// and accepted, in recorded form (point-to-point keygen envelopes only as
/// their hash, never their payload).
pub fn encode_view(recorded: &[Envelope]) -> Vec<u8> {
    let entries: Vec<Entry> = recorded.iter().map(Entry::recorded).collect();
    kt::encode_entries(&entries)
}

/// A key's two runs, each in canonical order.
#[derive(Clone, Debug, Default)]
pub struct Sessions {
    /// The aux-info run.
    pub aux: Vec<Entry>,
    /// The keygen run.
    pub keygen: Vec<Entry>,
}

impl Sessions {
    /// Root of the transcript's hash chain.
    pub fn root(&self) -> [u8; 32] {
        kt::root(self.aux.iter().chain(self.keygen.iter()))
    }

    fn p2p(&self) -> impl Iterator<Item = &Entry> {
        self.aux
            .iter()
            .chain(self.keygen.iter())
            .filter(|e| e.recipient().is_some())
    }

    /// The point-to-point entries party `j` neither sent nor received: what
    /// it lacks to complete its views.
    pub fn unseen_by(&self, j: u16) -> Vec<Entry> {
        self.p2p()
            .filter(|e| e.sender() != j && e.recipient() != Some(j))
            .cloned()
            .collect()
    }

    /// The point-to-point entries party `me` sent to parties other than `j`.
    pub fn sent_to_others(&self, me: u16, j: u16) -> Vec<Entry> {
        self.p2p()
            .filter(|e| e.sender() == me && e.recipient() != Some(j))
            .cloned()
            .collect()
    }
}

/// A key's execution ids and parties as this node recorded them.
struct KeyIds {
    aux_id: [u8; 32],
    keygen_id: [u8; 32],
    parties: Vec<PartyId>,
}

fn key_ids(record: &KeyRecord) -> Result<KeyIds, ApiError> {
    let bad = |what: &str| {
        ApiError::Internal(format!(
            "the record of key {} is unusable: {what}",
            record.key_id
        ))
    };
    let id = |h: &str, what: &str| {
        hex::decode(h)
            .ok()
            .and_then(|b| <[u8; 32]>::try_from(b).ok())
            .ok_or_else(|| bad(what))
    };
    Ok(KeyIds {
        aux_id: id(&record.aux_id, "aux id")?,
        keygen_id: id(&record.keygen_id, "keygen id")?,
        parties: record.party_ids().map_err(|e| bad(&e.to_string()))?,
    })
}

fn load_entries(node: &Node, key: &[u8], what: &str) -> Result<Vec<Entry>, ApiError> {
    let b = node
        .store
        .get(RecordKind::Transcript, key)?
        .ok_or_else(|| {
            ApiError::FailedPrecondition(format!(
                "{} holds no record of {what} (made before transcripts were recorded?)",
                node.cfg.name
            ))
        })?;
    let entries = kt::decode_entry_list(b.expose())
        .map_err(|e| ApiError::Internal(format!("the stored view of {what} is unusable: {e}")))?;
    kt::merge(entries)
        .map_err(|e| ApiError::Internal(format!("the stored view of {what} is unusable: {e}")))
}

/// This node's views of a key's two runs (blocking): as recorded, or
/// completed once the key was certified here.
pub fn load_views(node: &Node, record: &KeyRecord) -> Result<Sessions, ApiError> {
    let ids = key_ids(record)?;
    Ok(Sessions {
        aux: load_entries(
            node,
            &aux_key(&ids.aux_id),
            &format!("aux-info run {}", record.aux_id),
        )?,
        keygen: load_entries(
            node,
            &view_key(&record.key_id),
            &format!("the keygen run of key {}", record.key_id),
        )?,
    })
}

/// Completes `mine` with entries from peers and checks that both runs are
/// complete authentic runs of the key's sessions among its parties. Errors
/// say what is wrong, for the caller to attribute.
pub fn complete(record: &KeyRecord, mine: Sessions, extra: Vec<Entry>) -> Result<Sessions, String> {
    let ids = key_ids(record).map_err(|e| e.to_string())?;
    let (mut aux, mut keygen) = (mine.aux, mine.keygen);
    for e in extra {
        match (e.protocol(), e.session_id()) {
            (Protocol::AuxInfo, sid) if sid == ids.aux_id => aux.push(e),
            (Protocol::Keygen, sid) if sid == ids.keygen_id => keygen.push(e),
            _ => {
                return Err(format!(
                    "an entry from party {} ({:?} #{}) belongs to neither run of key {}",
                    e.sender(),
                    e.protocol(),
                    e.seq(),
                    record.key_id
                ))
            }
        }
    }
    let aux = kt::merge(aux).map_err(|e| e.to_string())?;
    let keygen = kt::merge(keygen).map_err(|e| e.to_string())?;
    kt::check_session(&aux, &ids.aux_id, Protocol::AuxInfo, &ids.parties)
        .map_err(|e| e.to_string())?;
    kt::check_session(&keygen, &ids.keygen_id, Protocol::Keygen, &ids.parties)
        .map_err(|e| e.to_string())?;
    Ok(Sessions { aux, keygen })
}

/// The certificate this node signs for a key, built from its own records
/// only: the key record, the parties of its config (names, identities, TLS
/// fingerprints) and its share (public key, public shares).
pub fn certificate(
    node: &Node,
    record: &KeyRecord,
    share: &KeyShare,
    transcript_root: [u8; 32],
    created_unix: u64,
) -> Result<KeyCertificate, ApiError> {
    let ids = key_ids(record)?;
    if ids.parties != node.party_ids() {
        return Err(ApiError::FailedPrecondition(format!(
            "the parties of key {} differ from the parties configured at {}",
            record.key_id, node.cfg.name
        )));
    }
    let parties = ids
        .parties
        .iter()
        .map(|id| {
            let p = node.party(id).ok_or_else(|| {
                ApiError::Internal(format!("party {} is not configured", id.to_hex()))
            })?;
            Ok(CertParty {
                name: p.name.clone(),
                identity: id.0.to_vec().into(),
                tls_fingerprint: p.fingerprint.to_vec().into(),
            })
        })
        .collect::<Result<Vec<_>, ApiError>>()?;
    let public_key = ecdsa::public_key(share);
    if hex::encode(public_key) != record.public_key {
        return Err(ApiError::Internal(format!(
            "the share of key {} does not match its record",
            record.key_id
        )));
    }
    let public_shares = share
        .core
        .key_info
        .public_shares
        .iter()
        .map(|p| p.to_bytes(true).to_vec().into())
        .collect();
    Ok(KeyCertificate {
        format: CERTIFICATE_FORMAT.into(),
        key_id: record.key_id.clone(),
        curve: "secp256k1".into(),
        threshold: record.threshold,
        parties,
        public_key: public_key.to_vec().into(),
        public_shares,
        aux_id: ids.aux_id.to_vec().into(),
        keygen_id: ids.keygen_id.to_vec().into(),
        transcript_root: transcript_root.to_vec().into(),
        created_unix,
    })
}

/// Where a peer's certificate differs from ours, in words.
pub fn difference(ours: &[u8], theirs: &[u8]) -> String {
    let Ok(t) = KeyCertificate::decode(theirs) else {
        return "its certificate does not decode".into();
    };
    let Ok(o) = KeyCertificate::decode(ours) else {
        return "our certificate does not decode".into();
    };
    let fields: [(&str, bool); 11] = [
        ("format", o.format == t.format),
        ("key id", o.key_id == t.key_id),
        ("curve", o.curve == t.curve),
        ("threshold", o.threshold == t.threshold),
        (
            "parties (names, identities, TLS fingerprints)",
            o.parties == t.parties,
        ),
        ("public key", o.public_key == t.public_key),
        ("public shares", o.public_shares == t.public_shares),
        ("aux id", o.aux_id == t.aux_id),
        ("keygen id", o.keygen_id == t.keygen_id),
        ("transcript root", o.transcript_root == t.transcript_root),
        ("creation time", o.created_unix == t.created_unix),
    ];
    let differ: Vec<&str> = fields
        .iter()
        .filter(|(_, same)| !same)
        .map(|(f, _)| *f)
        .collect();
    if differ.is_empty() {
        "same facts, different encoding".into()
    } else {
        format!("{} differ", differ.join(", "))
    }
}

/// Checks the signatures a transcript file carries: each party's over
/// `body` under its identity (index order), and the key's (`r || s`, low S)
/// over the certificate digest. Errors name the party.
pub fn check_signatures(
    record: &KeyRecord,
    body: &[u8],
    signatures: &[Vec<u8>],
    key_signature: &[u8; 64],
) -> Result<(), String> {
    use k256::ecdsa::signature::hazmat::PrehashVerifier;
    let ids = record.party_ids().map_err(|e| e.to_string())?;
    if signatures.len() != ids.len() {
        return Err(format!(
            "{} certificate signatures for {} parties",
            signatures.len(),
            ids.len()
        ));
    }
    for (i, (s, id)) in signatures.iter().zip(&ids).enumerate() {
        let signed = SignedCertificate {
            party: i as u16,
            body: body.to_vec().into(),
            signature: s.clone().into(),
        };
        if signed.verify(id).is_err() {
            let name = record.parties.get(i).map_or("?", |p| p.name.as_str());
            return Err(format!(
                "the certificate signature of {name} does not verify under its identity"
            ));
        }
    }
    let pk = record.public_key_bytes().map_err(|e| e.to_string())?;
    let vk = k256::ecdsa::VerifyingKey::from_sec1_bytes(&pk)
        .map_err(|_| "the key's public key is not a secp256k1 point".to_owned())?;
    let sig = k256::ecdsa::Signature::from_slice(key_signature)
        .map_err(|_| "the key signature is not (r, s)".to_owned())?;
    if sig.normalize_s().is_some() {
        return Err("the key signature is not in low-S form".into());
    }
    vk.verify_prehash(&kt::certificate_digest(body), &sig)
        .map_err(|_| "the key's signature over the certificate does not verify".to_owned())
}

/// Assembles a key's transcript file.
pub fn assemble(
    sessions: &Sessions,
    body: &[u8],
    signatures: &[Vec<u8>],
    key_signature: [u8; 64],
) -> Vec<u8> {
    let certificates = signatures
        .iter()
        .enumerate()
        .map(|(i, s)| SignedCertificate {
            party: i as u16,
            body: body.to_vec().into(),
            signature: s.clone().into(),
        })
        .collect();
    TranscriptFile::new(&sessions.aux, &sessions.keygen, certificates, key_signature).encode()
}

/// Stores the completed runs and the certificate this node signed (blocking).
pub fn store_certified(
    node: &Node,
    record: &KeyRecord,
    sessions: &Sessions,
    body: &[u8],
) -> Result<(), ApiError> {
    let ids = key_ids(record)?;
    let t = RecordKind::Transcript;
    node.store
        .put(t, &aux_key(&ids.aux_id), &kt::encode_entries(&sessions.aux))?;
    node.store.put(
        t,
        &view_key(&record.key_id),
        &kt::encode_entries(&sessions.keygen),
    )?;
    node.store.put(t, &cert_key(&record.key_id), body)?;
    node.store.flush()?;
    Ok(())
}

/// Stores a key's finished file (blocking). A file stored before stays; a
/// different one is refused.
pub fn store_file(node: &Node, key_id: &str, file: &[u8]) -> Result<(), ApiError> {
    if !node
        .store
        .insert_new(RecordKind::Transcript, &file_key(key_id), file)?
    {
        let same = node
            .store
            .get(RecordKind::Transcript, &file_key(key_id))?
            .is_some_and(|old| old.expose() == file);
        if !same {
            return Err(ApiError::AlreadyExists(format!(
                "{} already holds another transcript of key {key_id}",
                node.cfg.name
            )));
        }
    }
    node.store.flush()?;
    Ok(())
}

/// The certificate body this node signed for a key, if any (blocking).
pub fn load_certificate(node: &Node, key_id: &str) -> Result<Option<Vec<u8>>, ApiError> {
    Ok(node
        .store
        .get(RecordKind::Transcript, &cert_key(key_id))?
        .map(|b| b.expose().to_vec()))
}

/// Whether a co-signer may sign `message`, which starts with
/// [`CERTIFICATE_DOMAIN`]: only SHA-256 over the domain and the certificate
/// this node signed itself. `Err` is the reason to decline.
pub async fn check_certificate_message(
    node: &Arc<Node>,
    key_id: &str,
    sha256: bool,
    message: &[u8],
) -> Result<Result<(), String>, ApiError> {
    if !sha256 {
        return Ok(Err(
            "messages starting with the key-certificate domain are reserved for key certificates (SHA-256)"
                .into(),
        ));
    }
    let (n, k) = (node.clone(), key_id.to_owned());
    let Some(body) = blocking(move || load_certificate(&n, &k)).await? else {
        return Ok(Err(format!(
            "{} has not certified key {key_id}: messages starting with the key-certificate domain are reserved for key certificates",
            node.cfg.name
        )));
    };
    if message.strip_prefix(CERTIFICATE_DOMAIN) != Some(body.as_slice()) {
        return Ok(Err(format!(
            "the message is not the certificate {} signed for key {key_id} (messages starting with the key-certificate domain are reserved for key certificates)",
            node.cfg.name
        )));
    }
    Ok(Ok(()))
}

fn check_key_id(key_id: &str) -> Result<(), ApiError> {
    keygen::record::check_key_id(key_id).map_err(|e| ApiError::InvalidArgument(e.to_string()))
}

/// A key's record, which must name `from` as a party (blocking).
fn record_for(node: &Node, from: &Party, key_id: &str) -> Result<KeyRecord, ApiError> {
    let record = flows::load_key_record(node, key_id)?
        .ok_or_else(|| ApiError::NotFound(format!("no key {key_id} at {}", node.cfg.name)))?;
    let ids = key_ids(&record)?;
    if !ids.parties.contains(&from.id) {
        return Err(ApiError::PermissionDenied(format!(
            "{} is not a party of key {key_id}",
            from.name
        )));
    }
    Ok(record)
}

/// Waits while this node's keygen of `key_id` finishes storing (at most the
/// keygen timeout) and returns the key's record.
async fn wait_for_key(node: &Arc<Node>, from: &Party, key_id: &str) -> Result<KeyRecord, ApiError> {
    let timeout = Duration::from_millis(node.cfg.timeouts.keygen_ms);
    let start = Instant::now();
    loop {
        let running = node.keygen_running(key_id);
        let (n, k, f) = (node.clone(), key_id.to_owned(), from.id);
        let found = blocking(move || {
            let from = n
                .party(&f)
                .ok_or_else(|| ApiError::Internal("caller vanished".into()))?;
            match record_for(&n, from, &k) {
                Ok(r) => Ok(Some(r)),
                Err(ApiError::NotFound(_)) => Ok(None),
                Err(e) => Err(e),
            }
        })
        .await?;
        match found {
            Some(r) => return Ok(r),
            // Checked before the look: a run that just stored is seen.
            None if !running => {
                return Err(ApiError::NotFound(format!(
                    "no key {key_id} at {}",
                    node.cfg.name
                )))
            }
            None if start.elapsed() >= timeout => {
                return Err(ApiError::DeadlineExceeded(format!(
                    "the keygen of {key_id} at {} did not finish within {} ms",
                    node.cfg.name,
                    timeout.as_millis()
                )))
            }
            None => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

/// `TranscriptPart`: the point-to-point entries of both runs that this node
/// sent to parties other than the caller.
pub async fn part(
    node: &Arc<Node>,
    from: &Party,
    req: pb::TranscriptPartRequest,
) -> Result<pb::EntryList, ApiError> {
    check_key_id(&req.key_id)?;
    let record = wait_for_key(node, from, &req.key_id).await?;
    let n = node.clone();
    let caller = from.id;
    let entries = blocking(move || {
        let ids = key_ids(&record)?;
        let j = ids
            .parties
            .iter()
            .position(|p| *p == caller)
            .ok_or_else(|| ApiError::Internal("caller is not a party".into()))?;
        let views = load_views(&n, &record)?;
        Ok(kt::encode_entries(
            &views.sent_to_others(record.my_index, j as u16),
        ))
    })
    .await?;
    tracing::info!(to = %from.name, key_id = %req.key_id, bytes = entries.len(), "sent transcript part");
    Ok(pb::EntryList { entries })
}

/// Reserves `key_id` (see [`Node::reserve_key`]), waiting up to 5 s for
/// this node's own keygen of it to let go (it ends right after storing).
async fn reserve_soon(
    node: &Arc<Node>,
    key_id: &str,
) -> Result<crate::node::KeyReservation, ApiError> {
    let start = Instant::now();
    loop {
        match node.reserve_key(key_id) {
            Ok(r) => return Ok(r),
            Err(_) if start.elapsed() < Duration::from_secs(5) => {
                tokio::time::sleep(Duration::from_millis(50)).await
            }
            Err(_) => {
                return Err(ApiError::Unavailable(format!(
                    "a keygen of key {key_id} is running at {}; retry when it ends",
                    node.cfg.name
                )))
            }
        }
    }
}

/// `CertifyKey`: completes this node's views with the entries it did not
/// see, checks both runs, builds and signs its certificate, keeps both.
pub async fn certify(
    node: &Arc<Node>,
    from: &Party,
    req: pb::CertifyRequest,
) -> Result<pb::CertifyReply, ApiError> {
    check_key_id(&req.key_id)?;
    let now = now_unix();
    if req.created_unix.abs_diff(now) > MAX_CLOCK_SKEW_SECS {
        return Err(ApiError::InvalidArgument(format!(
            "certificate time {} is {} s away from the clock of {} (at most {MAX_CLOCK_SKEW_SECS} s)",
            req.created_unix,
            req.created_unix.abs_diff(now),
            node.cfg.name
        )));
    }
    let extra = kt::decode_entry_list(&req.missing_entries)
        .map_err(|e| ApiError::InvalidArgument(format!("missing_entries: {e}")))?;
    // The key id is held while certifying: a new keygen of the same id (which
    // would put this key aside) cannot be accepted here meanwhile, and none
    // is running while this key is certified.
    let _reserved = reserve_soon(node, &req.key_id).await?;
    let (n, f) = (node.clone(), from.id);
    let key_id = req.key_id.clone();
    let reply = blocking(move || {
        let from = n
            .party(&f)
            .ok_or_else(|| ApiError::Internal("caller vanished".into()))?;
        let record = record_for(&n, from, &req.key_id)?;
        if n.store
            .contains(RecordKind::Transcript, &file_key(&record.key_id))?
        {
            return Err(ApiError::AlreadyExists(format!(
                "key {} is already certified at {}",
                record.key_id, n.cfg.name
            )));
        }
        let sessions = complete(&record, load_views(&n, &record)?, extra).map_err(|e| {
            ApiError::InvalidArgument(format!(
                "the transcript of key {} does not check at {}: {e}",
                record.key_id, n.cfg.name
            ))
        })?;
        let share = flows::load_share(&n, &record.key_id)?;
        let cert = certificate(&n, &record, &share, sessions.root(), req.created_unix)?;
        let signed = SignedCertificate::sign(&n.identity, record.my_index, &cert);
        store_certified(&n, &record, &sessions, &signed.body)?;
        Ok(pb::CertifyReply {
            certificate_body: signed.body.into_vec(),
            signature: signed.signature.into_vec(),
        })
    })
    .await?;
    tracing::info!(coordinator = %from.name, %key_id, "signed the key certificate");
    Ok(reply)
}

/// `StoreTranscript`: checks the signatures of this node's own certificate
/// (every party's and the key's), assembles the file from its completed
/// runs, stores it.
pub async fn store(
    node: &Arc<Node>,
    from: &Party,
    req: pb::StoreTranscriptRequest,
) -> Result<(), ApiError> {
    check_key_id(&req.key_id)?;
    let key_signature: [u8; 64] =
        req.key_signature.as_slice().try_into().map_err(|_| {
            ApiError::InvalidArgument("key_signature must be 64 bytes (r || s)".into())
        })?;
    if req.signatures.iter().any(|s| s.len() != 64) {
        return Err(ApiError::InvalidArgument(
            "every certificate signature must be 64 bytes".into(),
        ));
    }
    let (n, f) = (node.clone(), from.id);
    let key_id = req.key_id.clone();
    let bytes = blocking(move || {
        let from = n
            .party(&f)
            .ok_or_else(|| ApiError::Internal("caller vanished".into()))?;
        let record = record_for(&n, from, &req.key_id)?;
        let own = load_certificate(&n, &record.key_id)?.ok_or_else(|| {
            ApiError::FailedPrecondition(format!(
                "{} has not certified key {}",
                n.cfg.name, record.key_id
            ))
        })?;
        if own != req.certificate_body {
            return Err(ApiError::InvalidArgument(format!(
                "the certificate differs from the one {} signed: {}",
                n.cfg.name,
                difference(&own, &req.certificate_body)
            )));
        }
        // This node checked both runs and built this certificate itself
        // (CertifyKey): what is new here are the signatures.
        check_signatures(&record, &own, &req.signatures, &key_signature)
            .map_err(|e| ApiError::InvalidArgument(format!("at {}: {e}", n.cfg.name)))?;
        let sessions = load_views(&n, &record)?;
        let file = assemble(&sessions, &own, &req.signatures, key_signature);
        store_file(&n, &record.key_id, &file)?;
        Ok(file.len())
    })
    .await?;
    tracing::info!(coordinator = %from.name, %key_id, bytes, "transcript signatures checked and file stored");
    Ok(())
}

/// `ExportTranscript`: a key's finished transcript file.
pub async fn export(node: &Arc<Node>, key_id: String) -> Result<Vec<u8>, ApiError> {
    check_key_id(&key_id)?;
    let n = node.clone();
    blocking(move || {
        if let Some(f) = n.store.get(RecordKind::Transcript, &file_key(&key_id))? {
            return Ok(f.expose().to_vec());
        }
        Err(ApiError::NotFound(
            if flows::load_key_record(&n, &key_id)?.is_some() {
                format!(
                    "key {key_id} has no finished transcript at {}: its certification did not complete here",
                    n.cfg.name
                )
            } else {
                format!("no key {key_id:?} at {}", n.cfg.name)
            },
        ))
    })
    .await
}

#[cfg(test)]
mod tests {
    #![allow(non_snake_case)]
    use super::*;
    use keygen::record::{KeyParty, KEY_RECORD_VERSION};
    use sha2::Digest;
    use tss_core::identity::IdentityKey;

    const AUX: [u8; 32] = [0xa0; 32];
    const KG: [u8; 32] = [0xb0; 32];

    /// A complete run's envelopes (payloads are not parsed here).
    fn run(keys: &[IdentityKey], sid: [u8; 32], protocol: Protocol) -> Vec<Envelope> {
        let n = keys.len() as u16;
        let per_party = kt::broadcasts_per_party(protocol).unwrap();
        let mut out = Vec::new();
        for j in 0..n {
            let key = &keys[usize::from(j)];
            for s in 0..per_party {
                out.push(Envelope::seal(
                    key,
                    sid,
                    protocol,
                    s,
                    j,
                    None,
                    vec![j as u8, s as u8],
                ));
            }
            for k in (0..n).filter(|&k| k != j) {
                let share = format!("SECRET-SHARE-{j}-{k}").into_bytes();
                out.push(Envelope::seal(key, sid, protocol, 0, j, Some(k), share));
            }
        }
        out
    }

    /// What party `me` recorded of a run, as stored and loaded back.
    fn view(all: &[Envelope], me: u16) -> Vec<Entry> {
        let seen: Vec<Envelope> = all
            .iter()
            .filter(|e| e.recipient.is_none() || e.sender == me || e.recipient == Some(me))
            .cloned()
            .collect();
        kt::merge(kt::decode_entry_list(&encode_view(&seen)).unwrap()).unwrap()
    }

    struct Fixture {
        keys: Vec<IdentityKey>,
        aux: Vec<Envelope>,
        keygen: Vec<Envelope>,
        record: KeyRecord,
        signer: k256::ecdsa::SigningKey,
    }

    fn fixture() -> Fixture {
        let keys: Vec<IdentityKey> = (0..3).map(|_| IdentityKey::generate()).collect();
        let signer = k256::ecdsa::SigningKey::random(&mut rand::rngs::OsRng);
        let record = KeyRecord {
            v: KEY_RECORD_VERSION,
            key_id: "k".into(),
            public_key: hex::encode(signer.verifying_key().to_sec1_bytes()),
            threshold: 2,
            parties: keys
                .iter()
                .enumerate()
                .map(|(i, k)| KeyParty {
                    name: format!("p{i}"),
                    identity: k.party_id().to_hex(),
                })
                .collect(),
            my_index: 0,
            aux_id: hex::encode(AUX),
            keygen_id: hex::encode(KG),
            created_unix: 0,
        };
        Fixture {
            aux: run(&keys, AUX, Protocol::AuxInfo),
            keygen: run(&keys, KG, Protocol::Keygen),
            keys,
            record,
            signer,
        }
    }

    fn views(f: &Fixture, me: u16) -> Sessions {
        Sessions {
            aux: view(&f.aux, me),
            keygen: view(&f.keygen, me),
        }
    }

    #[test]
    fn certificate_domain__should_give_the_certificate_digest() {
        let body = b"some certificate bytes";
        let d: [u8; 32] = sha2::Sha256::digest(kt::cert_signed_bytes(body)).into();
        assert_eq!(d, kt::certificate_digest(body));
    }

    #[test]
    fn encode_view__should_keep_keygen_shares_only_as_hashes() {
        let f = fixture();
        let v = views(&f, 1);
        assert!(v
            .keygen
            .iter()
            .all(|e| matches!(e, Entry::Hashed(_)) == e.recipient().is_some()));
        assert!(v.aux.iter().all(|e| matches!(e, Entry::Full(_))));
        // No share payload anywhere in the stored bytes (aux: a control).
        let marker = b"SECRET-SHARE";
        let has = |b: Vec<u8>| b.windows(marker.len()).any(|w| w == marker);
        assert!(!has(encode_view(&f.keygen)));
        assert!(has(encode_view(&f.aux)));
    }

    #[test]
    fn complete__should_give_every_party_the_same_complete_runs() {
        // Given each party's own view
        let f = fixture();
        // When the coordinator (0) completes its view with what 1 and 2 sent each other
        let parts: Vec<Entry> = [1u16, 2]
            .iter()
            .flat_map(|&j| views(&f, j).sent_to_others(j, 0))
            .collect();
        assert_eq!(parts.len(), 4, "one aux and one keygen envelope from each");
        let full = complete(&f.record, views(&f, 0), parts).unwrap();
        // Then both runs are complete, and each peer completes its own view
        // with what it did not see to the same root
        assert_eq!(full.aux.len(), 15);
        assert_eq!(full.keygen.len(), 18);
        for j in [1u16, 2] {
            let missing = full.unseen_by(j);
            assert_eq!(missing.len(), 4);
            assert!(missing
                .iter()
                .all(|e| e.sender() != j && e.recipient() != Some(j)));
            let theirs = complete(&f.record, views(&f, j), missing).unwrap();
            assert_eq!(theirs.root(), full.root());
        }
        // And a view alone is not a complete run
        let err = complete(&f.record, views(&f, 1), vec![]).unwrap_err();
        assert!(err.contains("missing"), "{err}");
    }

    #[test]
    fn complete__should_refuse_foreign_forged_and_unhashed_entries() {
        let f = fixture();
        let missing = |g: &Fixture| {
            complete(
                &g.record,
                views(g, 0),
                [1u16, 2]
                    .iter()
                    .flat_map(|&j| views(g, j).sent_to_others(j, 0))
                    .collect(),
            )
            .unwrap()
            .unseen_by(1)
        };
        // An entry of another session
        let mut extra = missing(&f);
        extra.push(Entry::Full(Envelope::seal(
            &f.keys[0],
            [7; 32],
            Protocol::Keygen,
            9,
            0,
            None,
            vec![],
        )));
        let err = complete(&f.record, views(&f, 1), extra).unwrap_err();
        assert!(err.contains("neither run"), "{err}");
        // A keygen share in full (it must never be stored)
        let mut extra = missing(&f);
        let share = f
            .keygen
            .iter()
            .find(|e| e.sender == 0 && e.recipient == Some(2))
            .unwrap();
        // (the hashed form is there too: merging prefers the full one)
        extra.push(Entry::Full(share.clone()));
        let err = complete(&f.record, views(&f, 1), extra).unwrap_err();
        assert!(err.contains("wrong form"), "{err}");
        // An envelope signed by the wrong party
        let mut extra = missing(&f);
        extra.retain(|e| !(e.protocol() == Protocol::AuxInfo && e.sender() == 0));
        extra.push(Entry::Full(Envelope::seal(
            &f.keys[1],
            AUX,
            Protocol::AuxInfo,
            0,
            0,
            Some(2),
            vec![1],
        )));
        let err = complete(&f.record, views(&f, 1), extra).unwrap_err();
        assert!(err.contains("signature"), "{err}");
        // Two different envelopes in one place
        let mut extra = missing(&f);
        extra.push(Entry::Full(Envelope::seal(
            &f.keys[0],
            AUX,
            Protocol::AuxInfo,
            0,
            0,
            Some(2),
            vec![1, 2, 3],
        )));
        let err = complete(&f.record, views(&f, 1), extra).unwrap_err();
        assert!(err.contains("two different"), "{err}");
    }

    #[test]
    fn check_signatures__should_name_the_party_whose_signature_fails() {
        use k256::ecdsa::signature::hazmat::PrehashSigner;
        let f = fixture();
        let body = b"certificate body".to_vec();
        let signed: Vec<Vec<u8>> = f
            .keys
            .iter()
            .map(|k| k.sign(&kt::cert_signed_bytes(&body)).to_vec())
            .collect();
        let sig: k256::ecdsa::Signature = f
            .signer
            .sign_prehash(&kt::certificate_digest(&body))
            .unwrap();
        let sig = sig.normalize_s().unwrap_or(sig);
        let key_sig: [u8; 64] = sig.to_bytes().into();
        check_signatures(&f.record, &body, &signed, &key_sig).unwrap();

        let mut bad = signed.clone();
        bad.swap(1, 2);
        let err = check_signatures(&f.record, &body, &bad, &key_sig).unwrap_err();
        assert!(err.contains("p1"), "{err}");
        let err = check_signatures(&f.record, &body, &signed[..2], &key_sig).unwrap_err();
        assert!(err.contains("2 certificate signatures"), "{err}");
        let err = check_signatures(&f.record, b"other body", &signed, &key_sig).unwrap_err();
        assert!(err.contains("p0"), "{err}");
        let mut high = sig;
        high = k256::ecdsa::Signature::from_scalars(high.r(), -*high.s()).unwrap();
        let high: [u8; 64] = high.to_bytes().into();
        let err = check_signatures(&f.record, &body, &signed, &high).unwrap_err();
        assert!(err.contains("low-S"), "{err}");
    }

    #[test]
    fn difference__should_name_the_fields_that_differ() {
        let cert = KeyCertificate {
            format: CERTIFICATE_FORMAT.into(),
            key_id: "k".into(),
            curve: "secp256k1".into(),
            threshold: 2,
            parties: vec![],
            public_key: vec![2; 33].into(),
            public_shares: vec![],
            aux_id: vec![0; 32].into(),
            keygen_id: vec![1; 32].into(),
            transcript_root: vec![3; 32].into(),
            created_unix: 5,
        };
        let mut other = cert.clone();
        other.transcript_root = vec![4; 32].into();
        other.created_unix = 6;
        let d = difference(&cert.encode(), &other.encode());
        assert_eq!(d, "transcript root, creation time differ");
        assert!(difference(&cert.encode(), b"junk").contains("does not decode"));
    }
}
