//! The co-signer's side of a full-protocol signature: a proposal checked
//! ([`crate::protocol::cosign`]), the session registered, this node's
//! partial signature released only once the request is recorded.

use std::sync::Arc;

use proto::v1 as pb;
use tss_core::session;

use crate::error::{blocking, ApiError};
use crate::protocol::accepted;
use crate::protocol::cosign;
use crate::protocol::cosign::Ask;
use crate::protocol::{decline, Refusal};
use crate::state::Node;
use crate::transport::peers::Party;

pub(crate) async fn accept(
    node: &Arc<Node>,
    from: &Party,
    id: [u8; 32],
    s: pb::SignProposal,
) -> Result<pb::ProposalReply, ApiError> {
    if keygen::record::check_key_id(&s.key_id).is_err() {
        return Ok(decline("invalid key id"));
    }
    let (record, signers) = match cosign::key_and_signers(node, from, &s.key_id, &s.signers).await?
    {
        Ok(x) => x,
        Err(why) => return Ok(decline(why)),
    };
    let ask = Ask {
        record: &record,
        request_id: &s.request_id,
        message: &s.message,
        hash: s.hash,
        payload: s.payload.as_ref(),
        authorization: s.authorization.as_ref(),
    };
    let authenticated = match cosign::authenticate(node, from, &ask, false).await? {
        Ok(a) => a,
        Err(refusal) => return Ok(refusal.proposal_reply()),
    };
    if let Some(refusal) = cosign::known(node, &ask, &authenticated).await? {
        return Ok(refusal.proposal_reply());
    }
    let (data, digest, request_id) = (
        authenticated.decoded.data,
        authenticated.decoded.digest,
        authenticated.request_id.clone(),
    );
    let claim = match crate::request::retry::claim_fresh_request(
        node,
        &record.key_id,
        &request_id,
        &digest,
    )
    .await
    {
        Ok(c) => c,
        // Signed before, or being signed now: a known request (the
        // coordinator fetches its signature, never signs it anew).
        Err(e) => return Ok(Refusal::AlreadySigned(e.to_string()).proposal_reply()),
    };
    let eid = session::sign_execution_id(&record.key_id, &signers, &request_id, &digest);
    if eid != id {
        return Ok(decline("session id does not match the proposal"));
    }
    let info = crate::protocol::sign::sign_session(&record, &signers, record.my_index, eid)?;
    // Within the proposer's session quota, before the audit log grows.
    let reg = node.sessions().register(info, false, Some(from.id))?;
    let reservation = match cosign::judge(node, from, &ask, &authenticated).await? {
        Ok(r) => r,
        Err(refusal) => return Ok(refusal.proposal_reply()),
    };
    if let Some(refusal) = cosign::bind(node, &ask, &authenticated).await? {
        return Ok(refusal.proposal_reply());
    }
    if let Err(e) = crate::request::retry::mark_seen(node, eid).await {
        return Ok(decline(e.to_string()));
    }
    // The amounts and the request are recorded durably before our
    // partial signature leaves; if the session ends before that, the
    // reservation is dropped (nothing was released).
    let hook = crate::protocol::approve::Release::new(reservation).before_partial(
        node,
        &record.key_id,
        &request_id,
        &digest,
        Default::default(),
    );
    if let Some(scheme) = record.scheme {
        let message = crate::request::decode::schnorr_message(
            scheme,
            s.hash,
            s.payload.as_ref(),
            &s.message,
            &digest,
        );
        let c = crate::protocol::frost::sign::CoSign {
            reg,
            record,
            signers,
            request_id,
            digest,
            message,
            hook,
            coordinator: from.name.clone(),
            claim,
        };
        crate::protocol::frost::sign::cosign(node, c).await?;
        tracing::info!(from = %from.name, key_id = %s.key_id, "accepted signing");
        return Ok(accepted());
    }
    let (n, key_id) = (node.clone(), record.key_id.clone());
    let share =
        Arc::new(blocking(move || crate::protocol::records::load_share(n.store(), &key_id)).await?);
    let n = node.clone();
    let coordinator_name = from.name.clone();
    tokio::spawn(async move {
        let _claim = claim;
        match crate::protocol::sign::run_engine(
            n.clone(),
            reg,
            share,
            signers.clone(),
            data,
            Some(hook),
        )
        .await
        {
            Ok(sig) => {
                tracing::info!(coordinator = %coordinator_name, key_id = %record.key_id, "co-signed");
                // Kept for a retry through another node.
                let mut rs = [0u8; 64];
                sig.write_to_slice(&mut rs);
                let names = signers
                    .iter()
                    .filter_map(|&i| record.parties.get(usize::from(i)))
                    .map(|p| p.name.clone())
                    .collect();
                let key_id = record.key_id.clone();
                let kept = blocking(move || {
                    let pk = record
                        .public_key_bytes()
                        .map_err(|e| ApiError::Internal(e.to_string()))?;
                    let fin = tss_core::chain::finish_signature(&pk, &digest, &rs)
                        .map_err(|e| ApiError::Internal(e.to_string()))?;
                    let low_s: [u8; 64] = [fin.r, fin.s]
                        .concat()
                        .try_into()
                        .map_err(|_| ApiError::Internal("r || s".into()))?;
                    crate::request::retry::store_signature(
                        n.store(),
                        &key_id,
                        &request_id,
                        &digest,
                        &low_s,
                        names,
                    )
                })
                .await;
                if let Err(e) = kept {
                    tracing::warn!(error = %e, "a co-signed signature could not be kept for retries");
                }
            }
            Err(f) => {
                tracing::warn!(coordinator = %coordinator_name, failure = %f, "co-signing failed")
            }
        }
    });
    tracing::info!(from = %from.name, key_id = %s.key_id, "accepted signing");
    Ok(accepted())
}
