//! The presignature pool: per key and signer pair, presignatures made ahead
//! of time so that a Sign request is answered in one round.
//!
//! - Refill runs on its own Tokio runtime whose threads are in the idle
//!   scheduling class (`SCHED_IDLE`): client requests and Health never wait
//!   behind it.
//!   Of each pair, the party with the lower keygen index leads the presign
//!   sessions; the other accepts while it holds fewer than target + slack.
//! - A presignature is used at most once, also across crashes: it is removed
//!   from the sealed store, together with a record of what it signed, in one
//!   flushed transaction before its partial signature is issued
//!   ([`consume`]). If either party lacks it, the pair falls back to the full
//!   protocol; a presignature is never reused and never exported.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use keygen::record::KeyRecord;
use proto::v1 as pb;
use rand::RngCore;
use serde::{Deserialize, Serialize};
use tss_core::ecdsa::presign::StoredPresignature;
use tss_core::ecdsa::KeyShare;
use tss_core::envelope::Protocol;
use tss_core::session::{self, SessionInfo};
use tss_core::store::RecordKind;

use crate::error::{blocking, ApiError};
use crate::flows;
use crate::node::{Node, Registered, SessionFailure};

/// Counters since start (reported by Health).
#[derive(Default)]
pub struct Counters {
    /// Presignatures generated and stored here.
    pub generated: AtomicU64,
    /// Presignatures consumed here.
    pub consumed: AtomicU64,
    /// Signatures coordinated here from a presignature.
    pub pool_signs: AtomicU64,
    /// Signatures coordinated here with the full protocol.
    pub full_signs: AtomicU64,
    /// Pool attempts that fell back to the full protocol.
    pub fallbacks: AtomicU64,
}

impl Counters {
    /// Health view.
    pub fn snapshot(&self) -> pb::PoolCounters {
        pb::PoolCounters {
            generated: self.generated.load(Ordering::Relaxed),
            consumed: self.consumed.load(Ordering::Relaxed),
            pool_signs: self.pool_signs.load(Ordering::Relaxed),
            full_signs: self.full_signs.load(Ordering::Relaxed),
            fallbacks: self.fallbacks.load(Ordering::Relaxed),
        }
    }
}

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

/// Store key of a presignature: `key_id 0x00 s0 s1 id` (key ids never hold 0x00).
pub fn store_key(key_id: &str, signers: &[u16], id: &[u8; 32]) -> Vec<u8> {
    let mut k = prefix(key_id, signers);
    k.extend_from_slice(id);
    k
}

fn prefix(key_id: &str, signers: &[u16]) -> Vec<u8> {
    let mut k = key_id.as_bytes().to_vec();
    k.push(0);
    for s in signers {
        k.extend_from_slice(&s.to_be_bytes());
    }
    k
}

/// Presignatures ready here for a key and pair.
pub fn level(node: &Node, key_id: &str, signers: &[u16]) -> Result<usize, ApiError> {
    Ok(node
        .store
        .keys_with_prefix(RecordKind::Presignature, &prefix(key_id, signers))?
        .len())
}

/// Ids of the presignatures ready here for a key and pair.
pub fn ready_ids(node: &Node, key_id: &str, signers: &[u16]) -> Result<Vec<[u8; 32]>, ApiError> {
    let p = prefix(key_id, signers);
    Ok(node
        .store
        .keys_with_prefix(RecordKind::Presignature, &p)?
        .into_iter()
        .filter_map(|k| k.get(p.len()..).and_then(|id| id.try_into().ok()))
        .collect())
}

/// Consumes a presignature for signing request (`request_id`, `digest`) of
/// `record`'s key: removes it, logs its use and records the request as
/// signed, durably, in one transaction (on a blocking thread). `None` if
/// this node does not hold it (never had it, or consumed it before).
pub async fn consume(
    node: &Arc<Node>,
    record: &KeyRecord,
    signers: &[u16],
    id: [u8; 32],
    request_id: &[u8],
    digest: [u8; 32],
    role: &'static str,
) -> Result<Option<StoredPresignature>, ApiError> {
    let used = UsedRecord {
        id: hex::encode(id),
        key_id: record.key_id.clone(),
        signers: signers.to_vec(),
        digest: hex::encode(digest),
        role: role.to_owned(),
        at_unix: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
    };
    let used = serde_json::to_vec(&used).map_err(|e| ApiError::Internal(e.to_string()))?;
    let signed = crate::coordinator::signed_key(&record.key_id, request_id, &digest);
    let key = store_key(&record.key_id, signers, &id);
    let n = node.clone();
    let taken = blocking(move || {
        Ok(n.store.consume(
            (RecordKind::Presignature, &key),
            (RecordKind::PresignatureUsed, &id, &used),
            &[(RecordKind::SeenExecution, &signed, &[1])],
        )?)
    })
    .await?;
    let Some(bytes) = taken else {
        return Ok(None);
    };
    node.counters.consumed.fetch_add(1, Ordering::Relaxed);
    node.metrics
        .presignature_consumed(&record.key_id, &node.pair_label(record, signers));
    node.presign_wake.notify_one();
    let p = StoredPresignature::decode(bytes.expose())
        .map_err(|e| ApiError::Internal(format!("stored presignature is unusable: {e}")))?;
    if p.signers != signers {
        return Err(ApiError::Internal(
            "stored presignature belongs to another signer pair".into(),
        ));
    }
    Ok(Some(p))
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

/// The pool's runtime: a separate Tokio runtime on low-priority threads.
pub struct PoolRuntime {
    handle: tokio::runtime::Handle,
}

impl PoolRuntime {
    /// Starts the runtime on its own OS thread (which owns it for the life of
    /// the process); `idle`: in the idle scheduling class.
    pub fn start(blocking_threads: usize, idle: bool) -> std::io::Result<Self> {
        let lower = move || {
            if idle {
                lower_priority();
            }
        };
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::Builder::new()
            .name("presign-pool".into())
            .spawn(move || {
                lower();
                let rt = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(1)
                    .max_blocking_threads(blocking_threads.max(1))
                    .thread_name("presign-pool")
                    .on_thread_start(lower)
                    .enable_all()
                    .build();
                match rt {
                    Ok(rt) => {
                        let _ = tx.send(Ok(rt.handle().clone()));
                        rt.block_on(std::future::pending::<()>());
                    }
                    Err(e) => {
                        let _ = tx.send(Err(e));
                    }
                }
            })?;
        let handle = rx
            .recv()
            .map_err(|e| std::io::Error::other(format!("pool runtime thread died: {e}")))??;
        Ok(Self { handle })
    }

    /// Handle to spawn pool work on.
    pub fn handle(&self) -> &tokio::runtime::Handle {
        &self.handle
    }
}

/// Puts the calling thread in the idle scheduling class (Linux `SCHED_IDLE`:
/// it runs only when no normal thread wants the CPU, and a waking normal
/// thread preempts it at once), else at nice 19.
fn lower_priority() {
    #[cfg(target_os = "linux")]
    {
        use thread_priority::unix::{
            set_thread_priority_and_policy, thread_native_id, NormalThreadSchedulePolicy,
            ThreadSchedulePolicy,
        };
        let idle = set_thread_priority_and_policy(
            thread_native_id(),
            thread_priority::ThreadPriority::Min,
            ThreadSchedulePolicy::Normal(NormalThreadSchedulePolicy::Idle),
        );
        if let Err(e) = idle {
            tracing::warn!(error = ?e, "cannot put the presign thread in SCHED_IDLE; using nice 19");
            let tid = rustix::thread::gettid();
            if let Err(e) = rustix::process::setpriority_process(Some(tid), 19) {
                tracing::warn!(error = %e, "cannot lower the presign thread's priority");
            }
        }
    }
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
fn presign_session(
    record: &KeyRecord,
    signers: &[u16],
    eid: [u8; 32],
) -> Result<SessionInfo, ApiError> {
    let mut info = crate::coordinator::sign_session(record, signers, record.my_index, eid)?;
    info.protocol = Protocol::Presign;
    Ok(info)
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
            Duration::from_millis(node.cfg.timeouts.sign_ms),
            move |party| async move {
                let cpu0 = crate::metrics::thread_cpu_time();
                let p = tss_core::ecdsa::presign::run(&eid, me, &sg, &share, party).await?;
                Ok((p, crate::metrics::thread_cpu_time().saturating_sub(cpu0)))
            },
        )
        .await?;
    let n = node.clone();
    let key = store_key(&record.key_id, &signers, &eid);
    blocking(move || {
        n.store
            .put(RecordKind::Presignature, &key, presig.encode().expose())?;
        n.store.flush()?;
        Ok(())
    })
    .await
    .map_err(|e| SessionFailure::Engine(e.to_string()))?;
    node.counters.generated.fetch_add(1, Ordering::Relaxed);
    let pair = node.pair_label(&record, &signers);
    node.metrics.presignature_generated(&record.key_id, &pair);
    node.metrics.observe_presign(cpu, started.elapsed());
    Ok(())
}

/// Leads one presign session for a key and pair.
async fn lead_one(node: Arc<Node>, record: KeyRecord, signers: Vec<u16>) -> Result<(), String> {
    let ids = record.party_ids().map_err(|e| e.to_string())?;
    let other = signers
        .iter()
        .copied()
        .find(|&s| s != record.my_index)
        .and_then(|s| ids.get(usize::from(s)).copied())
        .ok_or("pair without a peer")?;
    let party = node.party(&other).ok_or("peer not configured")?;
    let mut client = party.client.clone().ok_or("peer has no client")?;
    let name = party.name.clone();
    let mut nonce = [0u8; 32];
    rand::thread_rng().fill_bytes(&mut nonce);
    let eid = session::presign_execution_id(&record.key_id, &signers, &nonce);
    let info = presign_session(&record, &signers, eid).map_err(|e| e.to_string())?;
    let reg = node
        .register(info, false, None)
        .map_err(|e| e.to_string())?;
    let proposal = pb::Proposal {
        session_id: eid.to_vec(),
        kind: Some(pb::proposal::Kind::Presign(pb::PresignProposal {
            key_id: record.key_id.clone(),
            signers: signers.iter().map(|&s| u32::from(s)).collect(),
            nonce: nonce.to_vec(),
        })),
    };
    crate::coordinator::propose_pair(&node, &mut client, &reg.info, proposal, &name).await?;
    let (n, k) = (node.clone(), record.key_id.clone());
    let share = Arc::new(
        blocking(move || flows::load_share(&n, &k))
            .await
            .map_err(|e| e.to_string())?,
    );
    let info = reg.info.clone();
    let _running = node.metrics.session_running("presign");
    if let Err(f) = run_and_store(node.clone(), reg, record, share, signers).await {
        node.metrics.session_failed("presign");
        node.send_abort(&info, &f.to_string()).await;
        return Err(f.to_string());
    }
    Ok(())
}

/// A key id and a signer pair.
type PairKey = (String, Vec<u16>);

/// The refill loop (runs on the pool runtime): keeps every pair this node
/// leads at its target, at most `presign.parallel` sessions at once, with
/// back-off for pairs whose peer is down or declines.
pub async fn refill_loop(node: Arc<Node>) {
    let target = node.cfg.presign.target;
    if target == 0 {
        return;
    }
    let parallel = Arc::new(tokio::sync::Semaphore::new(
        node.cfg.presign.parallel.max(1),
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
            for record in flows::list_key_records(&n)? {
                if !flows::is_ready(&n, &record.key_id)? {
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
            let label = node.pair_label(&record, &signers);
            node.metrics
                .set_pool_level(&record.key_id, &label, ready as u64);
            if signers[0] != record.my_index {
                continue;
            }
            let k = (record.key_id.clone(), signers.clone());
            let flying = in_flight
                .lock()
                .map_or(0, |m| m.get(&k).copied().unwrap_or(0));
            if ready + flying >= target || backoff.get(&k).is_some_and(|(t, _)| Instant::now() < *t)
            {
                continue;
            }
            wanted.push((ready + flying, k, record, signers));
        }
        wanted.sort_by_key(|w| w.0);
        for (_, k, record, signers) in wanted {
            let Ok(permit) = parallel.clone().try_acquire_owned() else {
                break;
            };
            if let Ok(mut m) = in_flight.lock() {
                *m.entry(k.clone()).or_insert(0) += 1;
            }
            let (node, in_flight, fail_tx) = (node.clone(), in_flight.clone(), fail_tx.clone());
            tokio::spawn(async move {
                let r = lead_one(node, record, signers).await;
                if let Err(e) = &r {
                    tracing::debug!(key_id = %k.0, error = %e, "presign session failed");
                }
                if let Ok(mut m) = in_flight.lock() {
                    if let Some(c) = m.get_mut(&k) {
                        *c = c.saturating_sub(1);
                    }
                }
                let _ = fail_tx.send((k, r.is_ok()));
                drop(permit);
            });
        }
        tokio::select! {
            _ = node.presign_wake.notified() => {}
            _ = tokio::time::sleep(Duration::from_millis(250)) => {}
        }
    }
}
