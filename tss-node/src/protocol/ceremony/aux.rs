//! Aux-info generation (Paillier keys and their proofs), once per party
//! set: the coordinator runs it before the first keygen; a participant
//! accepts a proposal, runs its part and stores the result with its view.

use std::sync::Arc;
use std::time::{Duration, Instant};

use ::keygen::record::AuxRecord;
use proto::v1 as pb;
use rand::RngCore;
use tss_core::ecdsa::{self};
use tss_core::envelope::Protocol;
use tss_core::session::{self, Recorder};
use tss_core::store::RecordKind;

use crate::error::{blocking, ApiError};
use crate::protocol::accepted;
use crate::protocol::ceremony::KeygenAsk;
use crate::protocol::ceremony::{no_primes, Progress};
use crate::protocol::{decline, failure, progress, propose_all, sid, start_all, with_heartbeat};
use crate::session::{Registered, SessionFailure};
use crate::state::Node;
use crate::transport::peers::Party;

pub(crate) async fn run_aux(
    node: &Arc<Node>,
    ask: &KeygenAsk,
    p: &Progress,
    started: Instant,
) -> Result<(), ApiError> {
    if node.primes().ready() == 0 {
        return Err(no_primes(node));
    }

    let set = session::party_set_id(&node.peers().ids());
    let mut nonce = [0u8; 32];
    rand::thread_rng().fill_bytes(&mut nonce);
    let eid = session::aux_execution_id(&set, &nonce);
    let info = node.peers().ceremony_session(eid, Protocol::AuxInfo);
    let _in_progress = node.claims().aux_in_progress(eid).ok_or_else(|| {
        ApiError::NotReady(format!(
            "an aux-info run is already in progress at {}; retry when it ends",
            node.cfg().name
        ))
    })?;
    let reg = node.sessions().register(info.clone(), false, None)?;
    progress(
        p,
        started,
        "aux_info",
        "proposing aux-info generation to all parties".into(),
    )
    .await;
    propose_all(
        node,
        &info,
        pb::proposal::Kind::Aux(pb::AuxProposal {
            party_set: set.to_vec(),
            nonce: nonce.to_vec(),
            key_id: ask.key_id.clone(),
            request_id: ask.request_id.clone(),
            authorization: ask.authorization.clone(),
        }),
    )
    .await
    .map_err(|r| r.into_error(node))?;
    start_all(node, &info).await?;
    progress(
        p,
        started,
        "aux_info",
        format!(
            "running (Paillier keys from pooled primes, proofs; primes left here: {})",
            node.primes().ready().saturating_sub(1)
        ),
    )
    .await;
    let r = with_heartbeat(p, started, "aux_info", run_party(node.clone(), reg)).await;
    if let Err(f) = r {
        node.peers().send_abort(&info, &f.to_string()).await;
        return Err(failure("aux-info generation", f));
    }
    progress(
        p,
        started,
        "aux_info",
        "done; aux info sealed at every party".into(),
    )
    .await;
    Ok(())
}

/// Runs aux-info generation as one party and stores the result as the party
/// set's current aux info. The caller holds [`Node::aux_in_progress`] for
/// the run from the moment it accepts or proposes it.
pub async fn run_party(node: Arc<Node>, reg: Registered) -> Result<[u8; 32], SessionFailure> {
    let _running = node.metrics().session_running("aux_info");
    let r = aux_inner(node.clone(), reg).await;
    if r.is_err() {
        node.metrics().session_failed("aux_info");
    }
    r
}

pub(crate) async fn aux_inner(
    node: Arc<Node>,
    reg: Registered,
) -> Result<[u8; 32], SessionFailure> {
    let info = reg.info.clone();
    let n = info.parties.len() as u16;
    let pool = node.primes().clone();
    let primes = tokio::task::spawn_blocking(move || pool.take())
        .await
        .map_err(|e| SessionFailure::Engine(e.to_string()))?
        .map_err(|e| SessionFailure::Engine(e.to_string()))?;
    let eid = info.id;
    let recorder = Recorder::default();
    let aux = reg
        .run_recorded(
            Duration::from_millis(node.cfg().timeouts.aux_ms),
            Some(recorder.clone()),
            move |party| async move { ecdsa::aux::run(&eid, info.me, n, primes, party).await },
        )
        .await?;
    let view = crate::protocol::ceremony::transcript::encode_view(&recorder.take());
    let record = AuxRecord { aux_id: eid, aux };
    let set = crate::keys::aux_info(&node.peers().ids());
    let n2 = node.clone();
    blocking(move || {
        // The view first: aux info without it could not be certified.
        n2.store()
            .put(RecordKind::Transcript, &crate::keys::aux_view(&eid), &view)?;
        n2.store()
            .put(RecordKind::AuxInfo, &set, record.encode().expose())?;
        n2.store().flush()?;
        Ok(())
    })
    .await
    .map_err(|e| SessionFailure::Engine(e.to_string()))?;
    tracing::info!(aux_id = %hex::encode(eid), "aux info stored");
    Ok(eid)
}

/// Waits while our part of aux-info run `aux_id` finishes and returns its
/// result (`None` if the run ended without storing it).
pub(crate) async fn wait_for_aux(
    node: &Arc<Node>,
    aux_id: [u8; 32],
) -> Option<::keygen::record::AuxRecord> {
    loop {
        // Looked at before the record: a run that ends in between is seen
        // by the next look.
        let running = node.claims().aux_running(&aux_id);
        let n = node.clone();
        if let Ok(Some(a)) = blocking(move || crate::protocol::records::load_aux(&n)).await {
            if a.aux_id == aux_id {
                return Some(a);
            }
        }
        if !running {
            return None;
        }
        node.claims().aux_ended(&aux_id).await;
    }
}

/// A participant's answer to an aux-info proposal from `from` (session
/// `id`): checked against this node's own party set and the admin's
/// signature over the Keygen request, then run in the background.
pub(crate) async fn accept(
    node: &Arc<Node>,
    from: &Party,
    id: [u8; 32],
    a: pb::AuxProposal,
) -> Result<pb::ProposalReply, ApiError> {
    let my_set = session::party_set_id(&node.peers().ids());
    let start_wait = Duration::from_millis(node.cfg().timeouts.propose_ms * 4);
    let nonce: [u8; 32] = sid(&a.nonce)?;
    let expected = session::aux_execution_id(&my_set, &nonce);
    if let Err(why) = super::check_proposal(
        node,
        from,
        &a.party_set,
        expected,
        id,
        &crate::request::auth::keygen_request(&a.key_id, &a.request_id, None),
        a.authorization.as_ref(),
    ) {
        return Ok(decline(why.to_string()));
    }
    if node.primes().ready() == 0 {
        return Ok(decline(
            crate::protocol::ceremony::no_primes(node).to_string(),
        ));
    }
    let info = node.peers().ceremony_session(id, Protocol::AuxInfo);
    let mut reg = node.sessions().register(info, true, Some(from.id))?;
    let Some(in_progress) = node.claims().aux_in_progress(id) else {
        return Ok(decline(format!(
            "an aux-info run is already in progress at {}",
            node.cfg().name
        )));
    };
    let n = node.clone();
    tokio::spawn(async move {
        let _in_progress = in_progress;
        if let Err(f) = reg.wait_start(start_wait).await {
            tracing::warn!(failure = %f, "aux-info session never started");
            return;
        }
        if let Err(f) = run_party(n, reg).await {
            tracing::warn!(failure = %f, "aux-info session failed");
        }
    });
    tracing::info!(from = %from.name, "accepted aux-info generation");
    Ok(accepted())
}
