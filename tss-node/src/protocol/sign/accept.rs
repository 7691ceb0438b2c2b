//! The co-signer's side of a full-protocol signature: a proposal checked
//! ([`crate::protocol::cosign`]), the session registered, this node's
//! partial signature released only once the request is recorded.

use std::sync::Arc;

use proto::v1 as pb;
use tss_core::session;

use crate::error::{blocking, ApiError};
use crate::protocol::accepted;
use crate::protocol::cosign;
use crate::protocol::{decline, Refusal};
use crate::state::Node;
use crate::transport::peers::Party;

pub(crate) async fn accept(
    node: &Arc<Node>,
    from: &Party,
    id: [u8; 32],
    s: pb::SignProposal,
) -> Result<pb::ProposalReply, ApiError> {
    // Every check, the session's registration and its execution id
    // recorded, in one hand-off from the reactor.
    let checked = cosign::off_reactor(node, from, move |node, from| {
        let p = cosign::Proposed {
            key_id: &s.key_id,
            signers: &s.signers,
            request_id: &s.request_id,
            message: &s.message,
            hash: s.hash,
            payload: s.payload.as_ref(),
            authorization: s.authorization.as_ref(),
        };
        // Within the proposer's session quota, before the audit log grows.
        let register = |record: &keygen::record::KeyRecord,
                        signers: &[u16],
                        a: &cosign::Authenticated| {
            let eid = session::sign_execution_id(
                &record.key_id,
                signers,
                &a.request_id,
                &a.decoded.digest,
            );
            if eid != id {
                return Ok(Err(Refusal::Declined(
                    "session id does not match the proposal".into(),
                )));
            }
            let info = crate::protocol::sign::sign_session(record, signers, record.my_index, eid)?;
            Ok(Ok(node.sessions().register(info, false, Some(from.id))?))
        };
        let v = match cosign::vet(node, from, &p, false, register)? {
            Ok(v) => v,
            Err(refusal) => return Ok(Err(refusal.proposal_reply())),
        };
        if let Err(e) = crate::request::retry::mark_seen_now(node, v.made.info.id) {
            return Ok(Err(decline(e.to_string())));
        }
        Ok(Ok((v, s)))
    })
    .await?;
    let (v, s) = match checked {
        Ok(x) => x,
        Err(reply) => return Ok(reply),
    };
    let cosign::Vetted {
        record,
        signers,
        authenticated,
        claim,
        reservation,
        made: reg,
    } = v;
    let (data, digest, request_id) = (
        authenticated.decoded.data,
        authenticated.decoded.digest,
        authenticated.request_id,
    );
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
