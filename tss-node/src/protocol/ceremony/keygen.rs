//! Distributed key generation: the coordinator makes sure the party set has
//! aux info, proposes the DKG to every party, starts it and runs it, then
//! certifies the key ([`super::certify`]); a participant checks the
//! proposal, runs its part and stores its share and view.

use std::sync::Arc;
use std::time::{Duration, Instant};

use ::keygen::record::{AuxRecord, KeyParty, KeyRecord, KEY_RECORD_VERSION};
use proto::v1 as pb;
use rand::RngCore;
use tss_core::ecdsa::{self};
use tss_core::envelope::Protocol;
use tss_core::session::{self, Recorder};
use tss_core::store::RecordKind;

use crate::config::ClientEntry;
use crate::error::{blocking, ApiError};
use crate::protocol::accepted;
use crate::protocol::ceremony::aux::{run_aux, wait_for_aux};
use crate::protocol::ceremony::certify::certify_key;
use crate::protocol::ceremony::{progress_ready, KeygenAsk, Progress};
use crate::protocol::records::is_ready_now as is_ready;
use crate::protocol::{decline, failure, progress, propose_all, sid, start_all, with_heartbeat};
use crate::session::{Registered, SessionFailure};
use crate::state::Node;
use crate::transport::peers::Party;

/// Keygen as coordinator, for `caller` (the TLS client, an admin).
pub async fn keygen(
    node: Arc<Node>,
    caller: &ClientEntry,
    req: pb::KeygenRequest,
    p: Progress,
) -> Result<KeyRecord, ApiError> {
    let started = Instant::now();
    let key_id = req.key_id;
    ::keygen::record::check_key_id(&key_id).map_err(|e| ApiError::Invalid(e.to_string()))?;
    if req.request_id.is_empty() || req.request_id.len() > 128 {
        return Err(ApiError::Invalid("request_id must be 1-128 bytes".into()));
    }
    let scheme = crate::request::parse_scheme(&req.scheme)?;
    let asked = crate::request::auth::keygen_request(&key_id, &req.request_id, scheme);
    crate::request::auth::verify_caller(&node, caller, &asked, req.authorization.as_ref())?;
    let ask = KeygenAsk {
        key_id: key_id.clone(),
        request_id: req.request_id,
        authorization: req.authorization,
    };
    let _reserved = node.claims().reserve_key(&key_id)?;
    let (n, k) = (node.clone(), key_id.clone());
    let has_file = blocking(move || {
        Ok(n.store()
            .contains(RecordKind::Transcript, &crate::keys::transcript_file(&k))?)
    })
    .await?;
    if has_file {
        return Err(ApiError::Conflict(format!(
            "key {key_id} already exists: choose another id"
        )));
    }
    // An earlier keygen of this id stopped after DKG (a crash or a lost
    // party during certification): finish it if every party still has its
    // part; if not, and nobody certified it, it is replaced below.
    let n = node.clone();
    let k = key_id.clone();
    if let Some(rec) =
        blocking(move || crate::protocol::records::load_key_record(n.store(), &k)).await?
    {
        progress(
            &p,
            started,
            "certificate",
            format!("key {key_id} was generated before but not certified: finishing it"),
        )
        .await;
        match with_heartbeat(
            &p,
            started,
            "certificate",
            certify_key(&node, &rec, &p, started),
        )
        .await
        {
            Ok(()) => {
                progress_ready(&p, started, &rec).await;
                return Ok(rec);
            }
            // Certified here (before, or by this attempt): never replaced.
            Err(e) if is_ready(&node, &key_id).await? => {
                return Err(e.prefixed(&format!(
                    "key {key_id} is certified here but its transcript could not be finished"
                )))
            }
            Err(e) => {
                tracing::warn!(key_id, error = %e, "an unfinished key could not be finished; replacing it");
                progress(
                    &p,
                    started,
                    "keygen",
                    format!(
                        "the unfinished key {key_id} cannot be finished ({e}); generating it anew"
                    ),
                )
                .await;
            }
        }
    }
    if node.peers().all().len() < usize::from(node.cfg().threshold) || node.peers().all().len() < 2
    {
        return Err(ApiError::NotReady(
            "this node has no peers configured".into(),
        ));
    }
    let set = session::party_set_id(&node.peers().ids());
    for attempt in 0..2 {
        let dkg = match scheme {
            // FROST keys need no aux info.
            Some(s) => Dkg::Frost(s),
            None => Dkg::Ecdsa(load_or_make_aux(&node, &ask, &p, started).await?),
        };
        let mut nonce = [0u8; 32];
        rand::thread_rng().fill_bytes(&mut nonce);
        let eid = session::keygen_execution_id(&key_id, &set, &nonce);
        let info = node.peers().ceremony_session(eid, dkg.protocol());
        let reg = node.sessions().register(info.clone(), false, None)?;
        progress(
            &p,
            started,
            "keygen",
            format!(
                "proposing key {key_id} ({}, t={}) to all parties",
                dkg.scheme_name(),
                node.cfg().threshold
            ),
        )
        .await;
        let kind = pb::proposal::Kind::Keygen(pb::KeygenProposal {
            key_id: key_id.clone(),
            party_set: set.to_vec(),
            nonce: nonce.to_vec(),
            aux_id: dkg.aux_id().to_vec(),
            threshold: u32::from(node.cfg().threshold),
            request_id: ask.request_id.clone(),
            authorization: ask.authorization.clone(),
            scheme: scheme.map_or_else(String::new, |s| s.name().to_owned()),
        });
        match propose_all(&node, &info, kind).await {
            Ok(()) => {}
            Err(r) if attempt == 0 && r.missing_aux => {
                // A party lost or never stored this aux info: make new aux info.
                drop(reg);
                let n = node.clone();
                blocking(move || {
                    n.store().take(
                        RecordKind::AuxInfo,
                        &crate::keys::aux_info(&n.peers().ids()),
                    )?;
                    Ok(())
                })
                .await?;
                let why = r.reasons.join("; ");
                progress(
                    &p,
                    started,
                    "aux_info",
                    format!("a party lacks the current aux info ({why}); generating anew"),
                )
                .await;
                continue;
            }
            Err(r) => return Err(r.into_error(&node)),
        }
        // Every party accepted, so none has this key certified: put aside
        // what an unfinished earlier run left here (each party does the same
        // when the session starts).
        let (n, k) = (node.clone(), key_id.clone());
        blocking(move || crate::protocol::records::retire_unfinished(&n, &k)).await?;
        let dkg_start = Instant::now();
        start_all(&node, &info).await?;
        progress(
            &p,
            started,
            "keygen",
            "running distributed key generation".into(),
        )
        .await;
        return match with_heartbeat(
            &p,
            started,
            "keygen",
            run_party(node.clone(), reg, key_id.clone(), dkg),
        )
        .await
        {
            Ok(rec) => {
                progress(
                    &p,
                    started,
                    "keygen",
                    format!(
                        "key {key_id} sealed at every party; DKG took {} ms; public key {}",
                        dkg_start.elapsed().as_millis(),
                        rec.public_key
                    ),
                )
                .await;
                with_heartbeat(
                    &p,
                    started,
                    "certificate",
                    certify_key(&node, &rec, &p, started),
                )
                .await
                .map_err(|e| {
                    tracing::error!(key_id, error = %e, "key certification failed");
                    e.prefixed(&format!(
                        "key {key_id} was generated and its shares are sealed at every party, \
                                 but its transcript could not be certified"
                    ))
                })?;
                progress_ready(&p, started, &rec).await;
                Ok(rec)
            }
            Err(f) => {
                node.peers().send_abort(&info, &f.to_string()).await;
                Err(failure("keygen", f))
            }
        };
    }
    Err(ApiError::Unavailable(
        "parties could not agree on aux info".into(),
    ))
}

/// The DKG a keygen runs: CGGMP24's, completed with the party set's aux
/// info, or a FROST scheme's (no aux info).
pub(crate) enum Dkg {
    /// CGGMP24 threshold ECDSA.
    Ecdsa(AuxRecord),
    /// FROST.
    Frost(tss_core::frost::Scheme),
}

impl Dkg {
    fn protocol(&self) -> Protocol {
        match self {
            Dkg::Ecdsa(_) => Protocol::Keygen,
            Dkg::Frost(_) => Protocol::FrostKeygen,
        }
    }

    fn scheme_name(&self) -> &'static str {
        match self {
            Dkg::Ecdsa(_) => "ecdsa",
            Dkg::Frost(s) => s.name(),
        }
    }

    fn aux_id(&self) -> &[u8] {
        match self {
            Dkg::Ecdsa(a) => &a.aux_id,
            Dkg::Frost(_) => &[],
        }
    }
}

/// The party set's aux info for a new ECDSA key, generated first if there
/// is none (one "load or generate" at a time: two keygens must not both
/// start an aux-info run).
async fn load_or_make_aux(
    node: &Arc<Node>,
    ask: &KeygenAsk,
    p: &Progress,
    started: Instant,
) -> Result<AuxRecord, ApiError> {
    let _aux_lock = node.aux_lock().lock().await;
    let n = node.clone();
    if let Some(a) = blocking(move || crate::protocol::records::load_aux_for_keygen(&n)).await? {
        return Ok(a);
    }
    run_aux(node, ask, p, started).await?;
    let n = node.clone();
    blocking(move || crate::protocol::records::load_aux(&n))
        .await?
        .ok_or_else(|| ApiError::Internal("aux info missing right after generation".into()))
}

/// Runs DKG as one party and seals the share (an ECDSA share completed
/// with its aux info).
pub async fn run_party(
    node: Arc<Node>,
    reg: Registered,
    key_id: String,
    dkg: Dkg,
) -> Result<KeyRecord, SessionFailure> {
    let _running = node.metrics().session_running("keygen");
    let r = match dkg {
        Dkg::Ecdsa(aux) => keygen_inner(node.clone(), reg, key_id, aux).await,
        Dkg::Frost(scheme) => frost_keygen_inner(node.clone(), reg, key_id, scheme).await,
    };
    if r.is_err() {
        node.metrics().session_failed("keygen");
    }
    r
}

pub(crate) async fn keygen_inner(
    node: Arc<Node>,
    reg: Registered,
    key_id: String,
    aux: AuxRecord,
) -> Result<KeyRecord, SessionFailure> {
    let info = reg.info.clone();
    let n = info.parties.len() as u16;
    let t = node.cfg().threshold;
    let eid = info.id;
    let me = info.me;
    let recorder = Recorder::default();
    let incomplete = reg
        .run_recorded(
            Duration::from_millis(node.cfg().timeouts.keygen_ms),
            Some(recorder.clone()),
            move |party| async move { ecdsa::keygen::run(&eid, me, n, t, party).await },
        )
        .await?;
    // Point-to-point envelopes (secret shares) only as their hash.
    let view = crate::protocol::ceremony::transcript::encode_view(&recorder.take());
    let aux_id = aux.aux_id;
    let share = ecdsa::keygen::complete(incomplete, aux.aux)
        .map_err(|e| SessionFailure::Engine(e.to_string()))?;
    let record = KeyRecord {
        v: KEY_RECORD_VERSION,
        key_id: key_id.clone(),
        public_key: hex::encode(ecdsa::public_key(&share)),
        threshold: t,
        parties: key_parties(&node),
        my_index: me,
        aux_id: hex::encode(aux_id),
        keygen_id: hex::encode(eid),
        created_unix: crate::protocol::ceremony::transcript::now_unix(),
        scheme: None,
    };
    seal_key(&node, &record, ecdsa::encode_share(&share), view)
        .await
        .map_err(|e| SessionFailure::Engine(e.to_string()))?;
    tracing::info!(key_id, public_key = %record.public_key, "key generated and sealed");
    Ok(record)
}

/// Runs the FROST DKG as one party of a keygen and seals the share, the
/// view of the run and the key record.
async fn frost_keygen_inner(
    node: Arc<Node>,
    reg: Registered,
    key_id: String,
    scheme: tss_core::frost::Scheme,
) -> Result<KeyRecord, SessionFailure> {
    let info = reg.info.clone();
    let n = info.parties.len() as u16;
    let t = node.cfg().threshold;
    let (eid, me) = (info.id, info.me);
    let recorder = Recorder::default();
    let share = reg
        .run_recorded(
            Duration::from_millis(node.cfg().timeouts.keygen_ms),
            Some(recorder.clone()),
            move |party| async move {
                tss_core::frost::keygen::run(&eid, scheme, me, n, t, party).await
            },
        )
        .await?;
    // Point-to-point envelopes (secret shares) only as their hash.
    let view = crate::protocol::ceremony::transcript::encode_view(&recorder.take());
    let record = KeyRecord {
        v: KEY_RECORD_VERSION,
        key_id: key_id.clone(),
        public_key: hex::encode(share.public_key()),
        threshold: t,
        parties: key_parties(&node),
        my_index: me,
        aux_id: String::new(),
        keygen_id: hex::encode(eid),
        created_unix: crate::protocol::ceremony::transcript::now_unix(),
        scheme: Some(scheme),
    };
    seal_key(&node, &record, share.encode(), view)
        .await
        .map_err(|e| SessionFailure::Engine(e.to_string()))?;
    tracing::info!(key_id, scheme = scheme.name(), public_key = %record.public_key, "key generated and sealed");
    Ok(record)
}

/// What a participant runs once a keygen starts: the DKG, or first the
/// wait for the aux-info run it names.
enum Pending {
    Ready(Dkg),
    Aux([u8; 32]),
}

/// Seals a new key's share and this party's view of its runs, then its
/// record, which makes the key visible: a crash in between leaves no usable
/// half key. Never overwrites a share.
pub(crate) async fn seal_key(
    node: &Arc<Node>,
    record: &KeyRecord,
    share: tss_core::secret::SecretBytes,
    view: Vec<u8>,
) -> Result<(), ApiError> {
    let (n, rec) = (node.clone(), record.clone());
    blocking(move || {
        if !n.store().insert_new(
            RecordKind::KeyShare,
            crate::keys::key(&rec.key_id),
            share.expose(),
        )? {
            return Err(ApiError::Conflict(format!(
                "a share of key {} already exists; not overwritten",
                rec.key_id
            )));
        }
        n.store().put(
            RecordKind::Transcript,
            &crate::keys::keygen_view(&rec.key_id),
            &view,
        )?;
        n.store().flush()?;
        n.store().put(
            RecordKind::KeyInfo,
            crate::keys::key(&rec.key_id),
            &rec.encode(),
        )?;
        n.store().flush()?;
        Ok(())
    })
    .await
}

/// The key's parties as the record lists them: this node's configured
/// parties, in keygen index order.
pub(crate) fn key_parties(node: &Node) -> Vec<KeyParty> {
    node.peers()
        .all()
        .iter()
        .map(|p| KeyParty {
            name: p.name.clone(),
            identity: p.id.to_hex(),
        })
        .collect()
}

/// A participant's answer to a keygen proposal from `from` (session `id`):
/// checked against this node's threshold, party set, aux info and the
/// admin's signature, then run in the background once started.
pub(crate) async fn accept(
    node: &Arc<Node>,
    from: &Party,
    id: [u8; 32],
    k: pb::KeygenProposal,
) -> Result<pb::ProposalReply, ApiError> {
    let my_set = session::party_set_id(&node.peers().ids());
    let start_wait = Duration::from_millis(node.cfg().timeouts.propose_ms * 4);
    let nonce: [u8; 32] = sid(&k.nonce)?;
    if ::keygen::record::check_key_id(&k.key_id).is_err() {
        return Ok(decline("invalid key id"));
    }
    if k.threshold != u32::from(node.cfg().threshold) {
        return Ok(decline(format!(
            "threshold {} differs from this node's {}",
            k.threshold,
            node.cfg().threshold
        )));
    }
    let scheme = match crate::request::parse_scheme(&k.scheme) {
        Ok(s) => s,
        Err(e) => return Ok(decline(e.to_string())),
    };
    let expected = session::keygen_execution_id(&k.key_id, &my_set, &nonce);
    if let Err(why) = super::check_proposal(
        node,
        from,
        &k.party_set,
        expected,
        id,
        &crate::request::auth::keygen_request(&k.key_id, &k.request_id, scheme),
        k.authorization.as_ref(),
    ) {
        return Ok(decline(why.to_string()));
    }
    let reservation = match node.claims().reserve_key(&k.key_id) {
        Ok(r) => r,
        Err(e) => return Ok(decline(e.to_string())),
    };
    let (n, key_id) = (node.clone(), k.key_id.clone());
    let (state, aux) = blocking(move || {
        Ok((
            crate::protocol::records::key_state(n.store(), &key_id)?,
            crate::protocol::records::load_aux_for_keygen(&n)?,
        ))
    })
    .await?;
    if let crate::protocol::records::KeyState::Ready(_) = state {
        return Ok(decline(format!(
            "key {} already exists at {} (certified)",
            k.key_id,
            node.cfg().name
        )));
    }
    // FROST keys need no aux info; an ECDSA key needs the named run's,
    // which may still be finishing here (the last round's proofs take a
    // while): accept, and wait for it.
    let pending = match scheme {
        Some(_) if !k.aux_id.is_empty() => return Ok(decline("a FROST key has no aux info")),
        Some(s) => Pending::Ready(Dkg::Frost(s)),
        None => {
            let aux_id: [u8; 32] = sid(&k.aux_id)?;
            let aux = aux.filter(|a| a.aux_id == aux_id);
            if aux.is_none() && !node.claims().aux_running(&aux_id) {
                return Ok(pb::ProposalReply {
                    reason: format!(
                        "missing aux info {} at {}",
                        hex::encode(aux_id),
                        node.cfg().name
                    ),
                    missing_aux: true,
                    ..Default::default()
                });
            }
            match aux {
                Some(a) => Pending::Ready(Dkg::Ecdsa(a)),
                None => Pending::Aux(aux_id),
            }
        }
    };
    let protocol = match scheme {
        Some(_) => Protocol::FrostKeygen,
        None => Protocol::Keygen,
    };
    let info = node.peers().ceremony_session(id, protocol);
    let mut reg = node.sessions().register(info, true, Some(from.id))?;
    let n = node.clone();
    tokio::spawn(async move {
        let _reservation = reservation;
        if let Err(f) = reg.wait_start(start_wait).await {
            tracing::warn!(failure = %f, "keygen session never started");
            return;
        }
        let dkg = match pending {
            Pending::Ready(d) => d,
            Pending::Aux(aux_id) => match wait_for_aux(&n, aux_id).await {
                Some(a) => Dkg::Ecdsa(a),
                None => {
                    tracing::warn!(aux_id = %hex::encode(aux_id), "aux-info run ended without aux info; keygen abandoned");
                    return;
                }
            },
        };
        // An unfinished earlier run of this key id is put aside
        // only now that every party accepted the new one.
        let (n2, id) = (n.clone(), k.key_id.clone());
        if let Err(e) =
            blocking(move || crate::protocol::records::retire_unfinished(&n2, &id)).await
        {
            tracing::warn!(error = %e, "keygen abandoned: the unfinished earlier key could not be put aside");
            return;
        }
        if let Err(f) = run_party(n, reg, k.key_id, dkg).await {
            tracing::warn!(failure = %f, "keygen session failed");
        }
    });
    tracing::info!(from = %from.name, "accepted keygen");
    Ok(accepted())
}
