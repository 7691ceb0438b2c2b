//! Keygen transcripts at a node: the views of a key's aux-info and keygen
//! runs each party records, their completion, the key certificate each party
//! signs, and the finished file an auditor checks with `tss-audit verify`.
//!
//! The steps (the coordinator drives them right after keygen,
//! [`crate::protocol::ceremony::keygen::keygen`]):
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
//! The steps that need no store and no network (completing views, comparing
//! certificates, checking signatures, assembling the file) are in
//! [`::keygen::ceremony`], re-exported here; this module loads and stores the
//! records and answers the peers.
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

use ::keygen::ceremony::{self, KeyIds};
pub use ::keygen::ceremony::{
    assemble, check_signatures, complete, difference, encode_view, Sessions,
};
use ::keygen::record::KeyRecord;
use ::keygen::transcript::{
    self as kt, CertParty, Entry, KeyCertificate, SignedCertificate, CERTIFICATE_FORMAT,
};
use proto::v1 as pb;
use tss_core::ecdsa;
use tss_core::store::{RecordKind, Store};

use crate::error::{blocking, ApiError};
pub use crate::protocol::certificate::{load_certificate, CERTIFICATE_REQUEST_ID};
use crate::state::Node;
use crate::transport::peers::Party;

/// Largest difference between the coordinator's certificate time and this
/// node's clock.
pub const MAX_CLOCK_SKEW_SECS: u64 = 600;

/// Seconds since the Unix epoch.
pub fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn key_ids(record: &KeyRecord) -> Result<KeyIds, ApiError> {
    ceremony::key_ids(record).map_err(|e| ApiError::Internal(e.to_string()))
}

pub(crate) fn load_entries(node: &Node, key: &[u8], what: &str) -> Result<Vec<Entry>, ApiError> {
    let b = node
        .store()
        .get(RecordKind::Transcript, key)?
        .ok_or_else(|| {
            ApiError::NotReady(format!(
                "{} holds no record of {what} (made before transcripts were recorded?)",
                node.cfg().name
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
        aux: match &ids.aux_id {
            Some(aux_id) => load_entries(
                node,
                &crate::keys::aux_view(aux_id),
                &format!("aux-info run {}", record.aux_id),
            )?,
            None => Vec::new(),
        },
        keygen: load_entries(
            node,
            &crate::keys::keygen_view(&record.key_id),
            &format!("the keygen run of key {}", record.key_id),
        )?,
    })
}

/// The certificate this node signs for a key, built from its own records
/// only: the key record, the parties of its config (names, identities, TLS
/// fingerprints) and its share (public key, public shares).
pub fn certificate(
    node: &Node,
    record: &KeyRecord,
    share: &crate::protocol::records::AnyShare,
    transcript_root: [u8; 32],
    created_unix: u64,
) -> Result<KeyCertificate, ApiError> {
    let ids = key_ids(record)?;
    if ids.parties != node.peers().ids() {
        return Err(ApiError::NotReady(format!(
            "the parties of key {} differ from the parties configured at {}",
            record.key_id,
            node.cfg().name
        )));
    }
    let parties = ids
        .parties
        .iter()
        .map(|id| {
            let p = node.peers().party(id).ok_or_else(|| {
                ApiError::Internal(format!("party {} is not configured", id.to_hex()))
            })?;
            Ok(CertParty {
                name: p.name.clone(),
                identity: id.0.to_vec().into(),
                tls_fingerprint: p.fingerprint.to_vec().into(),
            })
        })
        .collect::<Result<Vec<_>, ApiError>>()?;
    let share = match share {
        crate::protocol::records::AnyShare::Ecdsa(s) => s,
        crate::protocol::records::AnyShare::Frost(s) => {
            if hex::encode(s.public_key()) != record.public_key {
                return Err(ApiError::Internal(format!(
                    "the share of key {} does not match its record",
                    record.key_id
                )));
            }
            return Ok(KeyCertificate::from_frost(
                &record.key_id,
                parties,
                s,
                ids.keygen_id,
                transcript_root,
                created_unix,
            ));
        }
    };
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
        aux_id: ids.aux_id.unwrap_or_default().to_vec().into(),
        keygen_id: ids.keygen_id.to_vec().into(),
        transcript_root: transcript_root.to_vec().into(),
        created_unix,
    })
}

/// Stores the completed runs and the certificate this node signed (blocking).
pub fn store_certified(
    store: &Store,
    record: &KeyRecord,
    sessions: &Sessions,
    body: &[u8],
) -> Result<(), ApiError> {
    let ids = key_ids(record)?;
    let t = RecordKind::Transcript;
    if let Some(aux_id) = &ids.aux_id {
        store.put(
            t,
            &crate::keys::aux_view(aux_id),
            &kt::encode_entries(&sessions.aux),
        )?;
    }
    store.put(
        t,
        &crate::keys::keygen_view(&record.key_id),
        &kt::encode_entries(&sessions.keygen),
    )?;
    store.put(t, &crate::keys::certificate(&record.key_id), body)?;
    store.flush()?;
    Ok(())
}

/// Stores a key's finished file (blocking). A file stored before stays; a
/// different one is refused.
pub fn store_file(node: &Node, key_id: &str, file: &[u8]) -> Result<(), ApiError> {
    if !node.store().insert_new(
        RecordKind::Transcript,
        &crate::keys::transcript_file(key_id),
        file,
    )? {
        let same = node
            .store()
            .get(
                RecordKind::Transcript,
                &crate::keys::transcript_file(key_id),
            )?
            .is_some_and(|old| old.expose() == file);
        if !same {
            return Err(ApiError::Conflict(format!(
                "{} already holds another transcript of key {key_id}",
                node.cfg().name
            )));
        }
    }
    node.store().flush()?;
    Ok(())
}

pub(crate) fn check_key_id(key_id: &str) -> Result<(), ApiError> {
    ::keygen::record::check_key_id(key_id).map_err(|e| ApiError::Invalid(e.to_string()))
}

/// A key's record, which must name `from` as a party (blocking).
pub(crate) fn record_for(node: &Node, from: &Party, key_id: &str) -> Result<KeyRecord, ApiError> {
    let record = crate::protocol::records::load_key_record(node.store(), key_id)?
        .ok_or_else(|| ApiError::NotFound(format!("no key {key_id} at {}", node.cfg().name)))?;
    let ids = key_ids(&record)?;
    if !ids.parties.contains(&from.id) {
        return Err(ApiError::Denied(format!(
            "{} is not a party of key {key_id}",
            from.name
        )));
    }
    Ok(record)
}

/// Waits while this node's keygen of `key_id` finishes storing (at most the
/// keygen timeout) and returns the key's record.
pub(crate) async fn wait_for_key(
    node: &Arc<Node>,
    from: &Party,
    key_id: &str,
) -> Result<KeyRecord, ApiError> {
    let timeout = Duration::from_millis(node.cfg().timeouts.keygen_ms);
    let start = Instant::now();
    loop {
        let running = node.claims().keygen_running(key_id);
        let (n, k, f) = (node.clone(), key_id.to_owned(), from.id);
        let found = blocking(move || {
            let from = n
                .peers()
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
                    node.cfg().name
                )))
            }
            None if start.elapsed() >= timeout => {
                return Err(ApiError::Timeout(format!(
                    "the keygen of {key_id} at {} did not finish within {} ms",
                    node.cfg().name,
                    timeout.as_millis()
                )))
            }
            None => {
                let deadline = tokio::time::Instant::from_std(start + timeout);
                node.claims().keygen_ended(key_id, deadline).await;
            }
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
pub(crate) async fn reserve_soon(
    node: &Arc<Node>,
    key_id: &str,
) -> Result<crate::state::claims::KeyReservation, ApiError> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    node.claims()
        .reserve_key_by(key_id, deadline)
        .await
        .map_err(|_| {
            ApiError::Unavailable(format!(
                "a keygen of key {key_id} is running at {}; retry when it ends",
                node.cfg().name
            ))
        })
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
        return Err(ApiError::Invalid(format!(
            "certificate time {} is {} s away from the clock of {} (at most {MAX_CLOCK_SKEW_SECS} s)",
            req.created_unix,
            req.created_unix.abs_diff(now),
            node.cfg().name
        )));
    }
    let extra = kt::decode_entry_list(&req.missing_entries)
        .map_err(|e| ApiError::Invalid(format!("missing_entries: {e}")))?;
    // The key id is held while certifying: a new keygen of the same id (which
    // would put this key aside) cannot be accepted here meanwhile, and none
    // is running while this key is certified.
    let _reserved = reserve_soon(node, &req.key_id).await?;
    let (n, f) = (node.clone(), from.id);
    let key_id = req.key_id.clone();
    let reply = blocking(move || {
        let from = n
            .peers()
            .party(&f)
            .ok_or_else(|| ApiError::Internal("caller vanished".into()))?;
        let record = record_for(&n, from, &req.key_id)?;
        if n.store().contains(
            RecordKind::Transcript,
            &crate::keys::transcript_file(&record.key_id),
        )? {
            return Err(ApiError::Conflict(format!(
                "key {} is already certified at {}",
                record.key_id,
                n.cfg().name
            )));
        }
        let sessions = complete(&record, load_views(&n, &record)?, extra).map_err(|e| {
            ApiError::Invalid(format!(
                "the transcript of key {} does not check at {}: {e}",
                record.key_id,
                n.cfg().name
            ))
        })?;
        let share = crate::protocol::records::load_any_share(n.store(), &record)?;
        let cert = certificate(&n, &record, &share, sessions.root(), req.created_unix)?;
        let signed = SignedCertificate::sign(n.identity(), record.my_index, &cert);
        store_certified(n.store(), &record, &sessions, &signed.body)?;
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
    let key_signature: [u8; 64] = req
        .key_signature
        .as_slice()
        .try_into()
        .map_err(|_| ApiError::Invalid("key_signature must be 64 bytes (r || s)".into()))?;
    if req.signatures.iter().any(|s| s.len() != 64) {
        return Err(ApiError::Invalid(
            "every certificate signature must be 64 bytes".into(),
        ));
    }
    let (n, f) = (node.clone(), from.id);
    let key_id = req.key_id.clone();
    let bytes = blocking(move || {
        let from = n
            .peers()
            .party(&f)
            .ok_or_else(|| ApiError::Internal("caller vanished".into()))?;
        let record = record_for(&n, from, &req.key_id)?;
        let own = load_certificate(&n, &record.key_id)?.ok_or_else(|| {
            ApiError::NotReady(format!(
                "{} has not certified key {}",
                n.cfg().name,
                record.key_id
            ))
        })?;
        if own != req.certificate_body {
            return Err(ApiError::Invalid(format!(
                "the certificate differs from the one {} signed: {}",
                n.cfg().name,
                difference(&own, &req.certificate_body)
            )));
        }
        // This node checked both runs and built this certificate itself
        // (CertifyKey): what is new here are the signatures.
        check_signatures(&record, &own, &req.signatures, &key_signature)
            .map_err(|e| ApiError::Invalid(format!("at {}: {e}", n.cfg().name)))?;
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
        if let Some(f) = n.store().get(RecordKind::Transcript, &crate::keys::transcript_file(&key_id))? {
            return Ok(f.expose().to_vec());
        }
        Err(ApiError::NotFound(
            if crate::protocol::records::load_key_record(n.store(), &key_id)?.is_some() {
                format!(
                    "key {key_id} has no finished transcript at {}: its certification did not complete here",
                    n.cfg().name
                )
            } else {
                format!("no key {key_id:?} at {}", n.cfg().name)
            },
        ))
    })
    .await
}
