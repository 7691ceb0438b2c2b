//! The pool: per key and signer pair, what the first rounds of signing make
//! ahead of time, so that a Sign request is answered in one round: CGGMP24
//! presignatures for ECDSA keys, batches of FROST nonces for FROST keys
//! ([`frost`]). Both kinds are stored, counted, led, accepted and consumed
//! the same way (`presignature` records, `presign` metrics).
//!
//! - Refill runs on its own Tokio runtime whose threads are in the idle
//!   scheduling class (`SCHED_IDLE`): client requests and Health never wait
//!   behind it.
//!   Of each pair, the party with the lower keygen index leads the presign
//!   sessions; the other accepts while it holds fewer than target + slack.
//! - A presignature is used at most once, also across crashes: it is removed
//!   from the sealed store, together with a record of what it signed, in one
//!   transaction that is flushed before anything made with it leaves the
//!   node ([`consume_entry`], [`PoolRole`]). If either party lacks it, the pair
//!   falls back to the full protocol; a presignature is never reused and
//!   never exported.

pub mod frost;
pub mod sign;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use keygen::record::KeyRecord;
use proto::v1 as pb;
use rand::RngCore;
use serde::{Deserialize, Serialize};
use tss_core::ecdsa::KeyShare;
use tss_core::envelope::Protocol;
use tss_core::secret::SecretBytes;
use tss_core::session::{self, SessionInfo};
use tss_core::store::RecordKind;

use crate::error::{blocking, ApiError};
use crate::protocol::accepted;
use crate::protocol::{cosign, decline, records, sid};
use crate::session::{Registered, SessionFailure};
use crate::state::Node;
use crate::transport::peers::Party;

/// What a consumed presignature was used for (the `presignature_used` log).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct UsedRecord {
    /// Presignature id (hex).
    pub id: String,
    /// Key.
    pub key_id: String,
    /// Keygen indices of the pair.
    pub signers: Vec<u16>,
    /// Digest it was consumed for (hex).
    pub digest: String,
    /// "coordinator" or "co-signer".
    pub role: String,
    /// When (Unix seconds).
    pub at_unix: u64,
}

/// Presignatures ready here for a key and pair.
pub fn level(node: &Node, key_id: &str, signers: &[u16]) -> Result<usize, ApiError> {
    Ok(node
        .store()
        .keys_with_prefix(
            RecordKind::Presignature,
            &crate::keys::presignature_prefix(key_id, signers),
        )?
        .len())
}

/// How many ready ids a signing request looks at from each end of a pair's
/// pool ([`ready_ids`]): enough for the requests one node has in flight,
/// without listing a full pool on every request.
pub const READY_AT_ENDS: usize = 32;

/// Ids of presignatures ready here for a key and pair, in order: up to
/// [`READY_AT_ENDS`] from each end (the pair's leader draws from the front,
/// the other party from the back).
pub fn ready_ids(node: &Node, key_id: &str, signers: &[u16]) -> Result<Vec<[u8; 32]>, ApiError> {
    let p = crate::keys::presignature_prefix(key_id, signers);
    Ok(node
        .store()
        .keys_at_ends(RecordKind::Presignature, &p, READY_AT_ENDS)?
        .into_iter()
        .filter_map(|k| crate::keys::presignature_id(&p, &k))
        .collect())
}

/// A party's role in a pool signature (recorded with the entry's use),
/// which decides when its removal of the entry is flushed. Either way
/// nothing made with the entry leaves the node before that flush, so a
/// crash can bring an entry back only with nothing made from it seen
/// outside, and an entry whose part left is gone for good.
#[derive(Clone, Copy, Debug)]
pub enum PoolRole {
    /// The party that returns its part to the coordinator: the removal is
    /// flushed by the caller while it makes its part, before the part is
    /// released ([`sign::co_sign`]).
    CoSigner,
    /// The party that combines the parts into the signature: the removal
    /// is flushed before its own part is made (while the co-signer's is on
    /// its way), so the signature, kept for retries as soon as it is made,
    /// never carries a part of an entry that could come back.
    Coordinator,
}

impl PoolRole {
    fn name(self) -> &'static str {
        match self {
            PoolRole::CoSigner => "co-signer",
            PoolRole::Coordinator => "coordinator",
        }
    }
}

/// Consumes a pool entry (an ECDSA presignature or a FROST key's pooled
/// nonces) for signing request (`request_id`, `digest`) of `record`'s key:
/// removes it, logs its use and records the request as signed, in one
/// transaction (on a blocking thread; flushed as [`PoolRole`] says), and
/// returns what `then` makes of its bytes.
/// `None` if this node does not hold it (never had it, or consumed it).
/// `then` runs on the consumed entry on the same blocking thread once it is
/// removed (the coordinator's own share made with it, after the flush).
#[allow(clippy::too_many_arguments)]
pub async fn consume_entry<T: Send + 'static>(
    node: &Arc<Node>,
    record: &KeyRecord,
    signers: &[u16],
    id: [u8; 32],
    request_id: &[u8],
    digest: [u8; 32],
    role: PoolRole,
    then: impl FnOnce(SecretBytes) -> T + Send + 'static,
) -> Result<Option<T>, ApiError> {
    let (n, record, signers, request_id) = (
        node.clone(),
        record.clone(),
        signers.to_vec(),
        request_id.to_vec(),
    );
    blocking(move || consume_entry_now(&n, &record, &signers, id, &request_id, digest, role, then))
        .await
}

/// [`consume_entry`] on the calling (blocking) thread.
#[allow(clippy::too_many_arguments)]
pub fn consume_entry_now<T>(
    node: &Node,
    record: &KeyRecord,
    signers: &[u16],
    id: [u8; 32],
    request_id: &[u8],
    digest: [u8; 32],
    role: PoolRole,
    then: impl FnOnce(SecretBytes) -> T,
) -> Result<Option<T>, ApiError> {
    let used = UsedRecord {
        id: hex::encode(id),
        key_id: record.key_id.clone(),
        signers: signers.to_vec(),
        digest: hex::encode(digest),
        role: role.name().to_owned(),
        at_unix: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
    };
    let used = serde_json::to_vec(&used).map_err(|e| ApiError::Internal(e.to_string()))?;
    let signed = crate::keys::signed(&record.key_id, request_id, &digest);
    let key = crate::keys::presignature(&record.key_id, signers, &id);
    let entry = (RecordKind::Presignature, key.as_slice());
    let log = (
        RecordKind::PresignatureUsed,
        crate::keys::presignature_used(&id),
        used.as_slice(),
    );
    let also = [(RecordKind::SeenExecution, signed.as_slice(), &[1u8][..])];
    let taken = match role {
        PoolRole::Coordinator => node.store().consume(entry, log, &also)?,
        PoolRole::CoSigner => node.store().consume_unflushed(entry, log, &also)?,
    }
    .map(then);
    if taken.is_some() {
        node.metrics()
            .presignature_consumed(&record.key_id, &crate::state::pair_label(record, signers));
        node.presign_wake().notify_one();
    }
    Ok(taken)
}

/// Every `presignature_used` record of this store (for audits and tests).
pub fn used_records(store: &tss_core::store::Store) -> anyhow::Result<Vec<UsedRecord>> {
    let mut out = Vec::new();
    for k in store.keys(RecordKind::PresignatureUsed)? {
        if let Some(v) = store.get(RecordKind::PresignatureUsed, &k)? {
            out.push(serde_json::from_slice(v.expose())?);
        }
    }
    Ok(out)
}

/// The signer pairs of a key that include this node, ascending each.
pub fn pairs_with_me(record: &KeyRecord) -> Vec<Vec<u16>> {
    let me = record.my_index;
    (0..record.parties.len() as u16)
        .filter(|&o| o != me)
        .map(|o| if o < me { vec![o, me] } else { vec![me, o] })
        .collect()
}

/// Session info of a presign run.
pub(crate) fn presign_session(
    record: &KeyRecord,
    signers: &[u16],
    eid: [u8; 32],
) -> Result<SessionInfo, ApiError> {
    let mut info = crate::protocol::job::sign_session(record, signers, record.my_index, eid)?;
    info.protocol = match record.scheme {
        None => Protocol::Presign,
        Some(_) => Protocol::FrostPresign,
    };
    Ok(info)
}

/// Runs our part of a pool session for `record`'s key and stores what it
/// made: one presignature (ECDSA), or a batch of `count` nonces (FROST).
async fn run_session(
    node: Arc<Node>,
    reg: Registered,
    record: KeyRecord,
    signers: Vec<u16>,
    count: u16,
) -> Result<(), SessionFailure> {
    let engine = |e: ApiError| SessionFailure::Engine(e.to_string());
    if record.scheme.is_some() {
        let share = crate::protocol::frost::sign::load(&node, &record)
            .await
            .map_err(engine)?;
        return frost::run_and_store(node, reg, record, share, signers, count).await;
    }
    let (n, k) = (node.clone(), record.key_id.clone());
    let share = Arc::new(
        blocking(move || crate::protocol::records::load_share(n.store(), &k))
            .await
            .map_err(engine)?,
    );
    run_and_store(node, reg, record, share, signers).await
}

/// What the pool of a key and pair holds at most at the follower: target
/// and slack.
fn cap(node: &Node, record: &KeyRecord) -> usize {
    node.cfg().presign.target_for(record.scheme) + node.cfg().presign.slack
}

/// Nonces a FROST refill session makes for a pair with `have` ready or in
/// flight (0: not yet). A pair refills in batches once it is a quarter
/// below its target, so that one signature does not cost one session.
fn frost_batch(target: usize, have: usize) -> u16 {
    let deficit = target.saturating_sub(have);
    let low_water = (target / 4).max(1);
    if deficit < low_water {
        return 0;
    }
    u16::try_from(deficit.min(usize::from(tss_core::frost::pool::MAX_BATCH))).unwrap_or(0)
}

/// Runs our part of a presign session and stores the presignature.
pub async fn run_and_store(
    node: Arc<Node>,
    reg: Registered,
    record: KeyRecord,
    share: Arc<KeyShare>,
    signers: Vec<u16>,
) -> Result<(), SessionFailure> {
    let eid = reg.info.id;
    let me = reg.info.me;
    let started = Instant::now();
    let sg = signers.clone();
    let (presig, cpu) = reg
        .run(
            Duration::from_millis(node.cfg().timeouts.sign_ms),
            move |party| async move {
                let cpu0 = crate::metrics::thread_cpu_time();
                let p = tss_core::ecdsa::presign::run(&eid, me, &sg, &share, party).await?;
                Ok((p, crate::metrics::thread_cpu_time().saturating_sub(cpu0)))
            },
        )
        .await?;
    let n = node.clone();
    let key = crate::keys::presignature(&record.key_id, &signers, &eid);
    blocking(move || {
        n.store()
            .put(RecordKind::Presignature, &key, presig.encode().expose())?;
        n.store().flush()?;
        Ok(())
    })
    .await
    .map_err(|e| SessionFailure::Engine(e.to_string()))?;
    let pair = crate::state::pair_label(&record, &signers);
    node.metrics().presignature_generated(&record.key_id, &pair);
    node.metrics().observe_presign(cpu, started.elapsed());
    Ok(())
}

/// Leads one pool session for a key and pair (`count` nonces for a FROST
/// key; 0 for an ECDSA key's one presignature).
async fn lead_one(
    node: Arc<Node>,
    record: KeyRecord,
    signers: Vec<u16>,
    count: u16,
) -> Result<(), String> {
    let ids = record.party_ids().map_err(|e| e.to_string())?;
    let other = signers
        .iter()
        .copied()
        .find(|&s| s != record.my_index)
        .and_then(|s| ids.get(usize::from(s)).copied())
        .ok_or("pair without a peer")?;
    let party = node.peers().party(&other).ok_or("peer not configured")?;
    let mut client = party.client.clone().ok_or("peer has no client")?;
    let name = party.name.clone();
    let mut nonce = [0u8; 32];
    rand::thread_rng().fill_bytes(&mut nonce);
    let eid = session::presign_execution_id(&record.key_id, &signers, &nonce);
    let info = presign_session(&record, &signers, eid).map_err(|e| e.to_string())?;
    let reg = node
        .sessions()
        .register(info, false, None)
        .map_err(|e| e.to_string())?;
    let proposal = pb::Proposal {
        session_id: eid.to_vec(),
        kind: Some(pb::proposal::Kind::Presign(pb::PresignProposal {
            key_id: record.key_id.clone(),
            signers: signers.iter().map(|&s| u32::from(s)).collect(),
            nonce: nonce.to_vec(),
            count: u32::from(count),
        })),
    };
    crate::protocol::propose_pair_reply(&node, &mut client, &reg.info, proposal, &name)
        .await
        .map_err(|a| a.to_string())?;
    let info = reg.info.clone();
    let _running = node.metrics().session_running("presign");
    if let Err(f) = run_session(node.clone(), reg, record, signers, count).await {
        node.metrics().session_failed("presign");
        node.peers().send_abort(&info, &f.to_string()).await;
        return Err(f.to_string());
    }
    Ok(())
}

/// How long the refill loop gathers wake-ups (consumed entries) before it
/// reads the pools' levels again.
const REFILL_GATHER: Duration = Duration::from_millis(50);

/// A key id and a signer pair.
pub(crate) type PairKey = (String, Vec<u16>);

/// The refill loop (runs on the pool runtime): keeps every pair this node
/// leads at its target, at most `presign.parallel` sessions at once, with
/// back-off for pairs whose peer is down or declines.
pub async fn refill_loop(node: Arc<Node>) {
    if !node.cfg().presign.any() {
        return;
    }
    let parallel = Arc::new(tokio::sync::Semaphore::new(
        node.cfg().presign.parallel.max(1),
    ));
    // Per (key, pair): sessions in flight, and when to try again after failures.
    let in_flight: Arc<std::sync::Mutex<HashMap<PairKey, usize>>> = Arc::default();
    let mut backoff: HashMap<PairKey, (Instant, Duration)> = HashMap::new();
    let (fail_tx, mut fail_rx) = tokio::sync::mpsc::unbounded_channel::<(PairKey, bool)>();
    loop {
        while let Ok((k, ok)) = fail_rx.try_recv() {
            if ok {
                backoff.remove(&k);
            } else {
                let d = backoff.get(&k).map_or(Duration::from_secs(1), |(_, d)| {
                    (*d * 2).min(Duration::from_secs(30))
                });
                backoff.insert(k, (Instant::now() + d, d));
            }
        }
        let n = node.clone();
        // Every key with the level of each pair this node is in (store reads
        // off the reactor).
        let levels = blocking(move || {
            let mut out = Vec::new();
            for record in crate::protocol::records::list_key_records(n.store())? {
                if n.cfg().presign.target_for(record.scheme) == 0 {
                    continue; // this kind of key's pool is off
                }
                if !crate::protocol::records::is_ready(n.store(), &record.key_id)? {
                    continue; // not usable yet (keygen unfinished)
                }
                for signers in pairs_with_me(&record) {
                    let ready = level(&n, &record.key_id, &signers)?;
                    out.push((record.clone(), signers, ready));
                }
            }
            Ok(out)
        })
        .await
        .unwrap_or_else(|e| {
            tracing::warn!(error = %e, "presign pool cannot list keys");
            Vec::new()
        });
        // The pairs it leads that are short of their target, the emptiest
        // first: a freed slot goes to the pair that needs it most, so no
        // pair starves.
        let mut wanted = Vec::new();
        for (record, signers, ready) in levels {
            let label = crate::state::pair_label(&record, &signers);
            node.metrics()
                .set_pool_level(&record.key_id, &label, ready as u64);
            if signers[0] != record.my_index {
                continue;
            }
            let k = (record.key_id.clone(), signers.clone());
            let flying = in_flight
                .lock()
                .map_or(0, |m| m.get(&k).copied().unwrap_or(0));
            let target = node.cfg().presign.target_for(record.scheme);
            // Entries one session makes: one presignature, or a batch of nonces.
            let count = match record.scheme {
                None if ready + flying < target => 1,
                None => 0,
                Some(_) => frost_batch(target, ready + flying),
            };
            if count == 0 || backoff.get(&k).is_some_and(|(t, _)| Instant::now() < *t) {
                continue;
            }
            wanted.push((ready + flying, k, record, signers, count));
        }
        wanted.sort_by_key(|w| w.0);
        for (_, k, record, signers, count) in wanted {
            let Ok(permit) = parallel.clone().try_acquire_owned() else {
                break;
            };
            let entries = usize::from(count);
            if let Ok(mut m) = in_flight.lock() {
                *m.entry(k.clone()).or_insert(0) += entries;
            }
            let (node, in_flight, fail_tx) = (node.clone(), in_flight.clone(), fail_tx.clone());
            // ECDSA sessions carry no count on the wire.
            let wire_count = if record.scheme.is_some() { count } else { 0 };
            tokio::spawn(async move {
                let r = lead_one(node, record, signers, wire_count).await;
                if let Err(e) = &r {
                    tracing::debug!(key_id = %k.0, error = %e, "presign session failed");
                }
                if let Ok(mut m) = in_flight.lock() {
                    if let Some(c) = m.get_mut(&k) {
                        *c = c.saturating_sub(entries);
                    }
                }
                let _ = fail_tx.send((k, r.is_ok()));
                drop(permit);
            });
        }
        tokio::select! {
            _ = node.presign_wake().notified() => {
                // Every consumed entry wakes this loop: a burst of signing
                // is gathered into one look at the levels (each reads every
                // pool) instead of one per signature.
                tokio::time::sleep(REFILL_GATHER).await;
            }
            _ = tokio::time::sleep(Duration::from_millis(250)) => {}
        }
    }
}

pub(crate) async fn accept(
    node: &Arc<Node>,
    from: &Party,
    id: [u8; 32],
    ps: pb::PresignProposal,
) -> Result<pb::ProposalReply, ApiError> {
    let Some(rt) = node.pool_runtime() else {
        return Ok(decline(format!(
            "the presignature pool is off at {}",
            node.cfg().name
        )));
    };
    let (key_id, asked) = (ps.key_id.clone(), ps.signers.clone());
    let (record, signers) = match cosign::off_reactor(node, from, move |node, from| {
        cosign::key_and_signers(node, from, &key_id, &asked)
    })
    .await?
    {
        Ok(x) => x,
        Err(why) => return Ok(decline(why)),
    };
    // A pool turned off for this kind of key (`target` for ECDSA keys,
    // `frost_target` for FROST keys) takes no entries, even while the
    // other kind's pool runs.
    if node.cfg().presign.target_for(record.scheme) == 0 {
        return Ok(decline(format!(
            "the {} pool is off at {}",
            match record.scheme {
                None => "presignature",
                Some(_) => "nonce",
            },
            node.cfg().name
        )));
    }
    // The party with the lower index of the pair leads its presign runs.
    if signers.first() == Some(&record.my_index) {
        return Ok(decline("this node leads presigning for this pair"));
    }
    if !records::is_ready_now(node, &record.key_id).await? {
        return Ok(decline(
            crate::protocol::records::unfinished(node, &record.key_id).to_string(),
        ));
    }
    let nonce: [u8; 32] = sid(&ps.nonce)?;
    if session::presign_execution_id(&record.key_id, &signers, &nonce) != id {
        return Ok(decline("session id does not match the proposal"));
    }
    let count = match (record.scheme, u16::try_from(ps.count)) {
        (None, Ok(0)) => 0,
        (Some(_), Ok(c)) if (1..=tss_core::frost::pool::MAX_BATCH).contains(&c) => c,
        _ => {
            return Ok(decline(format!(
                "a pool session of {} entries for this key (ECDSA: 0, FROST: 1 to {})",
                ps.count,
                tss_core::frost::pool::MAX_BATCH
            )))
        }
    };
    let cap = cap(node, &record);
    let (n, k, sg) = (node.clone(), record.key_id.clone(), signers.clone());
    let held = blocking(move || crate::protocol::presign::level(&n, &k, &sg)).await?;
    if held + usize::from(count.max(1)) > cap {
        return Ok(decline(format!(
            "{} already holds {held} of at most {cap} pool entries for this key and pair",
            node.cfg().name
        )));
    }
    let info = presign_session(&record, &signers, id)?;
    let reg = node.sessions().register(info, false, Some(from.id))?;
    let n = node.clone();
    rt.handle().spawn(async move {
        let _running = n.metrics().session_running("presign");
        if let Err(f) = run_session(n.clone(), reg, record, signers, count).await {
            n.metrics().session_failed("presign");
            tracing::debug!(failure = %f, "pool session failed");
        }
    });
    Ok(accepted())
}
