//! A FROST key's nonce pool, both sides: a signer pair makes batches of
//! round-1 nonces ahead of time ([`run_and_store`], driven by the pool
//! refill of [`super`], which leads and accepts these sessions as it does
//! presign sessions), and a request is then answered in one round:
//! the coordinator and the co-signer each consume their own copy of one
//! entry (with the request recorded as signed) and compute a signature
//! share with it ([`sign_from_pool`] here; the co-signer's side is
//! [`super::sign::co_sign`], shared with presignatures).
//!
//! A nonce signs at most one message, ever: an entry is deleted in the
//! transaction that records its use, and that transaction is on disk
//! before anything made with the entry leaves its node (the coordinator
//! flushes before it makes its share, the co-signer while it makes its
//! share and before releasing it: [`super::PoolRole`]). A crash before the
//! flush brings the entry back with nothing made from it seen outside;
//! once a share has left, its sender's removal is durable and the pair
//! never signs with the entry again. Each side
//! signs over the commitments it stored itself when the batch was made,
//! and over the digest it derived itself from the request: a coordinator
//! cannot make a co-signer sign with commitments or a message of its
//! choosing. Unlike an ECDSA presignature, pooled FROST nonces also sign
//! raw digests: the Schnorr challenge hashes the message together with the
//! nonce commitments and binding factors, so the choice of message after
//! the nonces are fixed gives no handle on the key (RFC 9591, section 5).
//! Every share is verified and a wrong one names its sender.

use std::sync::Arc;
use std::time::{Duration, Instant};

use keygen::record::KeyRecord;
use proto::v1 as pb;
use tss_core::frost::pool::{self, PoolEntry};
use tss_core::frost::FrostShare;
use tss_core::store::RecordKind;

use super::sign::{draw, PoolMiss};
use crate::error::blocking;
use crate::protocol::job::SignJob;
use crate::session::{Registered, SessionFailure};
use crate::state::Node;

/// Runs our part of a nonce-pool session (one round: `count` commitments
/// each way) and stores the batch sealed, in one flushed write.
pub async fn run_and_store(
    node: Arc<Node>,
    reg: Registered,
    record: KeyRecord,
    share: Arc<FrostShare>,
    signers: Vec<u16>,
    count: u16,
) -> Result<(), SessionFailure> {
    let eid = reg.info.id;
    let me = reg.info.me;
    let started = Instant::now();
    let sg = signers.clone();
    let edit = batch_edit(&node);
    let ran = reg
        .run(
            Duration::from_millis(node.cfg().timeouts.sign_ms),
            move |party| async move {
                let cpu0 = crate::metrics::thread_cpu_time();
                let e = pool::precommit_sending(&share, me, &sg, count, party, edit).await?;
                Ok((e, crate::metrics::thread_cpu_time().saturating_sub(cpu0)))
            },
        )
        .await;
    let (entries, cpu) = match ran {
        Ok(r) => r,
        Err(f) => {
            if let SessionFailure::Misbehaved { culprit, reason } = &f {
                tracing::error!(key_id = %record.key_id, culprit = %culprit, reason = %reason,
                    "nonce pool session: a party sent an invalid batch; nothing stored");
            }
            return Err(f);
        }
    };
    let n = node.clone();
    let key_id = record.key_id.clone();
    let sg = signers.clone();
    blocking(move || {
        let rows: Vec<(Vec<u8>, tss_core::secret::SecretBytes)> = entries
            .iter()
            .enumerate()
            .map(|(j, e)| {
                let id = pool::entry_id(&eid, u16::try_from(j).unwrap_or(u16::MAX));
                (crate::keys::presignature(&key_id, &sg, &id), e.encode())
            })
            .collect();
        let refs: Vec<(&[u8], &[u8])> = rows
            .iter()
            .map(|(k, v)| (k.as_slice(), v.expose()))
            .collect();
        n.store().put_all(RecordKind::Presignature, &refs)?;
        n.store().flush()?;
        Ok(())
    })
    .await
    .map_err(|e| SessionFailure::Engine(e.to_string()))?;
    let pair = crate::state::pair_label(&record, &signers);
    for _ in 0..count {
        node.metrics().presignature_generated(&record.key_id, &pair);
    }
    node.metrics().observe_presign(cpu, started.elapsed());
    Ok(())
}

/// What this node does to its batch as it sends it: nothing, except in
/// test builds whose config plays a hostile peer (`[test_hooks]`).
fn batch_edit(node: &Node) -> impl FnOnce(&mut pool::BatchMsg) {
    #[cfg(debug_assertions)]
    let (corrupt, short) = node.cfg().test_hooks.as_ref().map_or((false, false), |h| {
        (h.corrupt_frost_commitment, h.short_frost_batch)
    });
    #[cfg(not(debug_assertions))]
    let (corrupt, short) = {
        let _ = node;
        (false, false)
    };
    move |b: &mut pool::BatchMsg| {
        if corrupt {
            tracing::warn!("TEST HOOK: sending a nonce commitment that is not a point");
            if let Some(c) = b.commitments.first_mut() {
                c.iter_mut().for_each(|x| *x = 0xff);
            }
        }
        if short {
            tracing::warn!("TEST HOOK: sending a nonce batch one commitment short");
            b.commitments.pop();
        }
    }
}

/// Signs `job` from a pooled nonce this node and `cand` hold: both consume
/// their entry ([`draw`]); ours gives our share as soon as its removal is
/// durable, while the co-signer's share is on its way; theirs is verified
/// (a wrong one names it) as both aggregate to the signature.
pub(crate) async fn sign_from_pool(
    node: &Arc<Node>,
    job: &SignJob,
    share: Arc<FrostShare>,
    cand: u16,
    ids: Vec<[u8; 32]>,
    name: &str,
    client_rpc: &mut proto::v1::peer_client::PeerClient<tonic::transport::Channel>,
) -> Result<pb::SignResponse, PoolMiss> {
    let (s, message) = (share.clone(), job.message.clone());
    let mut pair = vec![job.record.my_index, cand];
    pair.sort_unstable();
    let prepare = move |bytes: tss_core::secret::SecretBytes| {
        let entry = PoolEntry::decode(bytes.expose()).map_err(|e| e.to_string())?;
        if entry.signers() != pair.as_slice() {
            return Err("it belongs to another signer pair".to_string());
        }
        entry.sign_own(&s, &message).map_err(|e| e.to_string())
    };
    let drawn = draw(node, job, cand, ids, name, client_rpc, prepare).await?;
    let unusable = |e: String| {
        PoolMiss::Failed(format!(
            "{}: pooled nonce {} is unusable: {e}",
            node.cfg().name,
            hex::encode(drawn.pid)
        ))
    };
    let own = drawn.ours.map_err(unusable)?;
    let theirs_at = drawn.signers.iter().position(|&s| s == cand);
    let theirs = drawn.theirs;
    let aggregated = crate::error::in_place(move || Ok(own.aggregate(&share, &[&theirs])))
        .await
        .map_err(|e| unusable(e.to_string()))?;
    let sig = aggregated.map_err(|e| match e {
        tss_core::ecdsa::EngineError::Misbehaved { culprit, .. }
            if theirs_at == Some(usize::from(culprit)) =>
        {
            tracing::error!(co_signer = %name, error = %e, "invalid signature share");
            PoolMiss::Failed(format!("{name}: {e}"))
        }
        e => unusable(e.to_string()),
    })?;
    let mut resp = crate::request::retry::schnorr_response(
        &job.record,
        &sig,
        &job.digest,
        crate::protocol::job::signer_names(&job.record, &drawn.signers),
        "pool",
        job.started,
    );
    resp.presignature_id = drawn.pid.to_vec();
    Ok(resp)
}
