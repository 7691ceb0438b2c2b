//! A FROST key's signature by two parties, both sides: the coordinator
//! proposes the request to one co-signer and both run the two FROST rounds
//! ([`sign_full`]); the co-signer, once its own checks passed
//! ([`crate::protocol::sign::accept`]), runs its side ([`cosign`]). Each
//! records the request and its amounts durably before its signature share
//! leaves; every share is checked and a wrong one names its sender.

use std::sync::Arc;
use std::time::Duration;

use keygen::record::KeyRecord;
use proto::v1 as pb;
use tss_core::ecdsa::sign::BeforeRelease;
use tss_core::frost::FrostShare;

use crate::error::{blocking, ApiError};
use crate::protocol::Attempt;
use crate::session::{Registered, SessionFailure};
use crate::state::Node;

pub(crate) use crate::protocol::job::SignJob;

/// Both FROST rounds as one signer of the session `reg` over `message`;
/// `before_release` runs right before this signer's share leaves.
pub async fn run_engine(
    node: Arc<Node>,
    reg: Registered,
    share: Arc<FrostShare>,
    signers: Vec<u16>,
    message: Vec<u8>,
    before_release: Option<BeforeRelease>,
) -> Result<[u8; 64], SessionFailure> {
    let me = reg.info.me;
    let _running = node.metrics().session_running("sign");
    let r = reg
        .run(
            Duration::from_millis(node.cfg().timeouts.sign_ms),
            move |party| async move {
                tss_core::frost::sign::run(&share, me, &signers, &message, before_release, party)
                    .await
            },
        )
        .await;
    if r.is_err() {
        node.metrics().session_failed("sign");
    }
    r
}

/// The FROST share of a key: unsealed, decoded and checked against its
/// record once (off the reactor), then kept decoded in memory (zeroized on
/// drop like the store's copy) while it still matches the record.
pub async fn load(node: &Arc<Node>, record: &KeyRecord) -> Result<Arc<FrostShare>, ApiError> {
    if let Some(s) = cached(node, record) {
        return Ok(s);
    }
    let (n, rec) = (node.clone(), record.clone());
    blocking(move || load_now(&n, &rec)).await
}

/// The share kept in memory, while it still matches the record.
fn cached(node: &Node, record: &KeyRecord) -> Option<Arc<FrostShare>> {
    node.cached_frost_share(&record.key_id)
        .filter(|s| super::fits(s, record))
}

/// [`load`] on the calling (blocking) thread.
pub fn load_now(node: &Node, record: &KeyRecord) -> Result<Arc<FrostShare>, ApiError> {
    if let Some(s) = cached(node, record) {
        return Ok(s);
    }
    let share = Arc::new(super::load_share(node.store(), record)?);
    node.cache_frost_share(&record.key_id, share.clone());
    Ok(share)
}

/// Both rounds with co-signer `cand`, as coordinator. Errors are one line
/// for the caller's list of failures.
pub(crate) async fn sign_full(
    node: &Arc<Node>,
    job: &SignJob,
    cand: u16,
    name: &str,
    client_rpc: &mut proto::v1::peer_client::PeerClient<tonic::transport::Channel>,
    share: Arc<FrostShare>,
) -> Result<pb::SignResponse, Attempt> {
    let record = &job.record;
    let (reg, signers) = crate::protocol::job::register_pair(node, job, cand)?;
    crate::protocol::job::propose_job(node, job, &signers, &reg, name, client_rpc).await?;
    let info = reg.info.clone();
    let hook = job.release.before_partial(
        node,
        &record.key_id,
        &job.request_id,
        &job.digest,
        job.partial_left.clone(),
    );
    match run_engine(
        node.clone(),
        reg,
        share,
        signers.clone(),
        job.message.clone(),
        Some(hook),
    )
    .await
    {
        Ok(sig) => Ok(crate::request::retry::schnorr_response(
            record,
            &sig,
            &job.digest,
            crate::protocol::job::signer_names(record, &signers),
            "full",
            job.started,
        )),
        Err(f) => {
            tracing::warn!(co_signer = %name, failure = %f, "signing session failed; trying the next co-signer");
            node.peers().send_abort(&info, &f.to_string()).await;
            Err(Attempt::Failed(format!("{name}: {f}")))
        }
    }
}

/// What a co-signer runs once its checks passed and the session is
/// registered.
pub(crate) struct CoSign {
    pub(crate) reg: Registered,
    pub(crate) record: KeyRecord,
    pub(crate) signers: Vec<u16>,
    pub(crate) request_id: Vec<u8>,
    pub(crate) digest: [u8; 32],
    /// What the key signs (`request::decode::schnorr_message`).
    pub(crate) message: Vec<u8>,
    /// Records the request and its amounts before this node's share leaves.
    pub(crate) hook: BeforeRelease,
    /// The coordinator's name (for logs).
    pub(crate) coordinator: String,
    /// This node's claim on the request, held until the session ends.
    pub(crate) claim: crate::state::claims::RequestClaim,
}

/// The co-signer's side: runs both rounds in the background and keeps the
/// signature for a retry through another node.
pub(crate) async fn cosign(node: &Arc<Node>, c: CoSign) -> Result<(), ApiError> {
    let share = load(node, &c.record).await?;
    let n = node.clone();
    tokio::spawn(async move {
        let CoSign {
            reg,
            record,
            signers,
            request_id,
            digest,
            message,
            hook,
            coordinator,
            claim,
        } = c;
        let _claim = claim;
        match run_engine(n.clone(), reg, share, signers.clone(), message, Some(hook)).await {
            Ok(sig) => {
                tracing::info!(coordinator = %coordinator, key_id = %record.key_id, "co-signed");
                let names = crate::protocol::job::signer_names(&record, &signers);
                let key_id = record.key_id.clone();
                let kept = blocking(move || {
                    crate::request::retry::store_signature(
                        n.store(),
                        &key_id,
                        &request_id,
                        &digest,
                        &sig,
                        names,
                    )
                })
                .await;
                if let Err(e) = kept {
                    tracing::warn!(error = %e, "a co-signed signature could not be kept for retries");
                }
            }
            Err(f) => tracing::warn!(coordinator = %coordinator, failure = %f, "co-signing failed"),
        }
    });
    Ok(())
}
