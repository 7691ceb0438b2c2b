//! What one party does in each kind of session, whether it coordinates or
//! was asked to join: run the engine on the registered session and store
//! the result. Aux-info and keygen runs are recorded: the party's view of
//! each is stored with its result ([`crate::transcript`]).

use std::sync::Arc;
use std::time::Duration;

use keygen::record::{AuxRecord, KeyParty, KeyRecord, KEY_RECORD_VERSION};
use tss_core::ecdsa::{self, KeyShare};
use tss_core::session::Recorder;
use tss_core::store::RecordKind;

use crate::error::{blocking, ApiError};
use crate::node::{Node, Registered, SessionFailure};
use crate::transcript;

/// The party set's current aux info, if any.
pub fn load_aux(node: &Node) -> Result<Option<AuxRecord>, ApiError> {
    let set = tss_core::session::party_set_id(&node.party_ids());
    match node.store.get(RecordKind::AuxInfo, &set)? {
        None => Ok(None),
        Some(b) => AuxRecord::decode(b.expose())
            .map(Some)
            .map_err(|e| ApiError::Internal(format!("stored aux info is unusable: {e}"))),
    }
}

/// The party set's current aux info for a new key: only if this node also
/// holds its recorded view, without which the key could not be certified
/// (aux info made before transcripts were recorded is replaced).
pub fn load_aux_for_keygen(node: &Node) -> Result<Option<AuxRecord>, ApiError> {
    let Some(a) = load_aux(node)? else {
        return Ok(None);
    };
    if node
        .store
        .contains(RecordKind::Transcript, &transcript::aux_key(&a.aux_id))?
    {
        return Ok(Some(a));
    }
    tracing::warn!(
        aux_id = %hex::encode(a.aux_id),
        "the current aux info has no recorded transcript (made before transcripts were recorded): not used for new keys"
    );
    Ok(None)
}

/// A key's public record.
pub fn load_key_record(node: &Node, key_id: &str) -> Result<Option<KeyRecord>, ApiError> {
    match node.store.get(RecordKind::KeyInfo, key_id.as_bytes())? {
        None => Ok(None),
        Some(b) => KeyRecord::decode(b.expose())
            .map(Some)
            .map_err(|e| ApiError::Internal(format!("key record of {key_id} is unusable: {e}"))),
    }
}

/// Every key record this node holds.
pub fn list_key_records(node: &Node) -> Result<Vec<KeyRecord>, ApiError> {
    let mut out = Vec::new();
    for k in node.store.keys(RecordKind::KeyInfo)? {
        if let Some(b) = node.store.get(RecordKind::KeyInfo, &k)? {
            match KeyRecord::decode(b.expose()) {
                Ok(r) => out.push(r),
                Err(e) => tracing::error!(error = %e, "a key record is unusable; skipped"),
            }
        }
    }
    Ok(out)
}

/// Where a key stands at this node.
#[derive(Debug)]
pub enum KeyState {
    /// Nothing of the key is here.
    Absent,
    /// Keygen ran (part of) its course here but the key was never certified
    /// here: not usable, and a new keygen with the same id replaces it.
    Unfinished,
    /// Every party signed the same key certificate: the key is usable.
    Ready(KeyRecord),
}

/// Where key `key_id` stands at this node. Ready needs the record and the
/// certificate this node signed, which it stores only after every party
/// handed over its view of the runs: by then every party holds its share.
/// A crash anywhere before leaves the key unfinished. A key made before
/// keygen runs were recorded (a record without a view: keygen now stores
/// the view before the record) is ready as it always was.
pub fn key_state(node: &Node, key_id: &str) -> Result<KeyState, ApiError> {
    let certified = is_certified(node, key_id)?;
    let viewed = node
        .store
        .contains(RecordKind::Transcript, &transcript::view_key(key_id))?;
    if let Some(r) = load_key_record(node, key_id)? {
        if certified || !viewed {
            return Ok(KeyState::Ready(r));
        }
        return Ok(KeyState::Unfinished);
    }
    let any = certified
        || viewed
        || node
            .store
            .contains(RecordKind::KeyShare, key_id.as_bytes())?;
    Ok(if any {
        KeyState::Unfinished
    } else {
        KeyState::Absent
    })
}

/// Whether this node signed key `key_id`'s certificate (see [`key_state`]).
pub fn is_certified(node: &Node, key_id: &str) -> Result<bool, ApiError> {
    Ok(node
        .store
        .contains(RecordKind::Transcript, &transcript::cert_key(key_id))?)
}

/// Whether key `key_id` is ready here (see [`key_state`]).
pub fn is_ready(node: &Node, key_id: &str) -> Result<bool, ApiError> {
    Ok(matches!(key_state(node, key_id)?, KeyState::Ready(_)))
}

/// A key's record, for client requests and presigning: only once it is
/// ready. `None` if the key is not here at all.
pub fn load_ready_record(node: &Node, key_id: &str) -> Result<Option<KeyRecord>, ApiError> {
    match key_state(node, key_id)? {
        KeyState::Ready(r) => Ok(Some(r)),
        KeyState::Absent => Ok(None),
        KeyState::Unfinished => Err(unfinished(node, key_id)),
    }
}

/// The error for a request on an unfinished key.
pub fn unfinished(node: &Node, key_id: &str) -> ApiError {
    ApiError::FailedPrecondition(format!(
        "key {key_id} is not ready at {}: its keygen did not finish (no key certificate); \
         run Keygen with the same id again to replace it",
        node.cfg.name
    ))
}

/// Record key under which an unfinished key's share is kept when a new
/// keygen replaces it (key ids cannot contain '/').
pub fn retired_key(key_id: &str, unix_ms: u128) -> Vec<u8> {
    format!("retired/{key_id}/{unix_ms}").into_bytes()
}

/// Before a new keygen of `key_id` stores anything: puts aside what an
/// unfinished earlier run left here (blocking). The share is kept sealed
/// under [`retired_key`] (never used again, kept for the operator); the
/// record, the recorded view and the share under the key id are removed,
/// the record first so that the old key is never visible half-removed.
/// Refuses a ready key.
pub fn retire_unfinished(node: &Node, key_id: &str) -> Result<(), ApiError> {
    match key_state(node, key_id)? {
        KeyState::Absent => return Ok(()),
        KeyState::Ready(_) => {
            return Err(ApiError::AlreadyExists(format!(
                "key {key_id} is certified at {}: not replaced",
                node.cfg.name
            )))
        }
        KeyState::Unfinished => {}
    }
    let s = &node.store;
    if let Some(share) = s.get(RecordKind::KeyShare, key_id.as_bytes())? {
        let at = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis())
            .unwrap_or(0);
        let mut at = at;
        while !s.insert_new(
            RecordKind::KeyShare,
            &retired_key(key_id, at),
            share.expose(),
        )? {
            at += 1; // another retire in the same millisecond
        }
        s.flush()?;
    }
    s.take(RecordKind::KeyInfo, key_id.as_bytes())?;
    s.flush()?;
    s.take(RecordKind::Transcript, &transcript::view_key(key_id))?;
    s.take(RecordKind::Transcript, &transcript::cert_key(key_id))?;
    s.take(RecordKind::KeyShare, key_id.as_bytes())?;
    s.flush()?;
    tracing::warn!(
        key_id,
        "an unfinished earlier keygen of this key id was put aside (share kept as retired)"
    );
    Ok(())
}

/// A key's share.
pub fn load_share(node: &Node, key_id: &str) -> Result<KeyShare, ApiError> {
    let b = node
        .store
        .get(RecordKind::KeyShare, key_id.as_bytes())?
        .ok_or_else(|| ApiError::NotFound(format!("no share of key {key_id} at this node")))?;
    ecdsa::decode_share(b.expose())
        .map_err(|e| ApiError::Internal(format!("share of {key_id} is unusable: {e}")))
}

/// Runs aux-info generation as one party and stores the result as the party
/// set's current aux info. The caller holds [`Node::aux_in_progress`] for
/// the run from the moment it accepts or proposes it.
pub async fn aux(node: Arc<Node>, reg: Registered) -> Result<[u8; 32], SessionFailure> {
    let _running = node.metrics.session_running("aux_info");
    let r = aux_inner(node.clone(), reg).await;
    if r.is_err() {
        node.metrics.session_failed("aux_info");
    }
    r
}

async fn aux_inner(node: Arc<Node>, reg: Registered) -> Result<[u8; 32], SessionFailure> {
    let info = reg.info.clone();
    let n = info.parties.len() as u16;
    let pool = node.primes.clone();
    let primes = tokio::task::spawn_blocking(move || pool.take())
        .await
        .map_err(|e| SessionFailure::Engine(e.to_string()))?
        .map_err(SessionFailure::Engine)?;
    let eid = info.id;
    let recorder = Recorder::default();
    let aux = reg
        .run_recorded(
            Duration::from_millis(node.cfg.timeouts.aux_ms),
            Some(recorder.clone()),
            move |party| async move { ecdsa::aux::run(&eid, info.me, n, primes, party).await },
        )
        .await?;
    let view = transcript::encode_view(&recorder.take());
    let record = AuxRecord { aux_id: eid, aux };
    let set = tss_core::session::party_set_id(&node.party_ids());
    let n2 = node.clone();
    blocking(move || {
        // The view first: aux info without it could not be certified.
        n2.store
            .put(RecordKind::Transcript, &transcript::aux_key(&eid), &view)?;
        n2.store
            .put(RecordKind::AuxInfo, &set, record.encode().expose())?;
        n2.store.flush()?;
        Ok(())
    })
    .await
    .map_err(|e| SessionFailure::Engine(e.to_string()))?;
    tracing::info!(aux_id = %hex::encode(eid), "aux info stored");
    Ok(eid)
}

/// Runs DKG as one party, completes the share with `aux` and seals it.
pub async fn keygen(
    node: Arc<Node>,
    reg: Registered,
    key_id: String,
    aux: AuxRecord,
) -> Result<KeyRecord, SessionFailure> {
    let _running = node.metrics.session_running("keygen");
    let r = keygen_inner(node.clone(), reg, key_id, aux).await;
    if r.is_err() {
        node.metrics.session_failed("keygen");
    }
    r
}

async fn keygen_inner(
    node: Arc<Node>,
    reg: Registered,
    key_id: String,
    aux: AuxRecord,
) -> Result<KeyRecord, SessionFailure> {
    let info = reg.info.clone();
    let n = info.parties.len() as u16;
    let t = node.cfg.threshold;
    let eid = info.id;
    let me = info.me;
    let recorder = Recorder::default();
    let incomplete = reg
        .run_recorded(
            Duration::from_millis(node.cfg.timeouts.keygen_ms),
            Some(recorder.clone()),
            move |party| async move { ecdsa::keygen::run(&eid, me, n, t, party).await },
        )
        .await?;
    // Point-to-point envelopes (secret shares) only as their hash.
    let view = transcript::encode_view(&recorder.take());
    let aux_id = aux.aux_id;
    let share = ecdsa::keygen::complete(incomplete, aux.aux)
        .map_err(|e| SessionFailure::Engine(e.to_string()))?;
    let record = KeyRecord {
        v: KEY_RECORD_VERSION,
        key_id: key_id.clone(),
        public_key: hex::encode(ecdsa::public_key(&share)),
        threshold: t,
        parties: node
            .parties
            .iter()
            .map(|p| KeyParty {
                name: p.name.clone(),
                identity: p.id.to_hex(),
            })
            .collect(),
        my_index: me,
        aux_id: hex::encode(aux_id),
        keygen_id: hex::encode(eid),
        created_unix: transcript::now_unix(),
    };
    let n2 = node.clone();
    let rec = record.clone();
    blocking(move || {
        let share_bytes = ecdsa::encode_share(&share);
        // Share and view of the run first, then the record that makes the
        // key visible: a crash in between leaves no usable half key.
        if !n2.store.insert_new(
            RecordKind::KeyShare,
            rec.key_id.as_bytes(),
            share_bytes.expose(),
        )? {
            return Err(ApiError::AlreadyExists(format!(
                "a share of key {} already exists; not overwritten",
                rec.key_id
            )));
        }
        n2.store.put(
            RecordKind::Transcript,
            &transcript::view_key(&rec.key_id),
            &view,
        )?;
        n2.store.flush()?;
        n2.store
            .put(RecordKind::KeyInfo, rec.key_id.as_bytes(), &rec.encode())?;
        n2.store.flush()?;
        Ok(())
    })
    .await
    .map_err(|e| SessionFailure::Engine(e.to_string()))?;
    tracing::info!(key_id, public_key = %record.public_key, "key generated and sealed");
    Ok(record)
}

/// Runs full signing as one signer. `before_release` runs right before this
/// signer's partial signature leaves (see [`ecdsa::sign::run_with_release`]).
pub async fn sign(
    node: Arc<Node>,
    reg: Registered,
    share: Arc<KeyShare>,
    signers: Vec<u16>,
    data: ecdsa::sign::ToSign,
    before_release: Option<ecdsa::sign::BeforeRelease>,
) -> Result<ecdsa::Signature, SessionFailure> {
    let eid = reg.info.id;
    let me = reg.info.me;
    let _running = node.metrics.session_running("sign");
    let r = reg
        .run(
            Duration::from_millis(node.cfg.timeouts.sign_ms),
            move |party| async move {
                ecdsa::sign::run_with_release(
                    &eid,
                    me,
                    &signers,
                    &share,
                    data,
                    before_release,
                    party,
                )
                .await
            },
        )
        .await;
    if r.is_err() {
        node.metrics.session_failed("sign");
    }
    r
}
