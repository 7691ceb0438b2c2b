//! The Peer service: proposals, start signals, envelopes and aborts from the
//! other parties, and the transcript steps after keygen. Every call is
//! authenticated by the caller's pinned TLS certificate, then handed to the
//! protocol it belongs to ([`crate::protocol`]), which checks the proposal
//! against this node's own view before it registers a session.

use std::sync::Arc;

use proto::v1 as pb;
use tonic::{Request, Response, Status};
use tss_core::envelope::Envelope;

use crate::error::ApiError;
use crate::protocol::ceremony::{self, aux, keygen};
use crate::protocol::{presign, sid, sign};
use crate::session::SessionFailure;
use crate::state::Node;
use crate::transport::{self, peers::Party};

/// The Peer service.
pub struct PeerService {
    node: Arc<Node>,
}

impl PeerService {
    /// A service over `node`.
    pub fn new(node: Arc<Node>) -> Self {
        Self { node }
    }

    fn caller<T>(&self, req: &Request<T>) -> Result<&Party, ApiError> {
        let fp = transport::peer_fingerprint(req)
            .ok_or_else(|| ApiError::Unauthenticated("no client certificate".into()))?;
        self.node
            .peers()
            .by_fingerprint(&fp)
            .ok_or_else(|| ApiError::Denied("caller is not a pinned party of this node".into()))
    }

    async fn propose_inner(
        &self,
        from: &Party,
        p: pb::Proposal,
    ) -> Result<pb::ProposalReply, ApiError> {
        let node = &self.node;
        let id = sid(&p.session_id)?;
        match p.kind {
            None => Err(ApiError::Invalid("proposal has no kind".into())),
            Some(pb::proposal::Kind::Aux(a)) => aux::accept(node, from, id, a).await,
            Some(pb::proposal::Kind::Keygen(k)) => keygen::accept(node, from, id, k).await,
            Some(pb::proposal::Kind::Sign(s)) => sign::accept::accept(node, from, id, s).await,
            Some(pb::proposal::Kind::Presign(ps)) => presign::accept(node, from, id, ps).await,
        }
    }
}

#[tonic::async_trait]
impl pb::peer_server::Peer for PeerService {
    async fn propose(
        &self,
        req: Request<pb::Proposal>,
    ) -> Result<Response<pb::ProposalReply>, Status> {
        let from = self.caller(&req)?;
        let reply = self.propose_inner(from, req.into_inner()).await?;
        if !reply.accepted {
            tracing::info!(from = %from.name, reason = %reply.reason, "declined a proposal");
        }
        Ok(Response::new(reply))
    }

    async fn start(&self, req: Request<pb::SessionRef>) -> Result<Response<pb::Ack>, Status> {
        let from = self.caller(&req)?.id;
        self.node
            .sessions()
            .start(&sid(&req.get_ref().session_id)?, from)?;
        Ok(Response::new(pb::Ack {}))
    }

    async fn deliver(&self, req: Request<pb::EnvelopeBytes>) -> Result<Response<pb::Ack>, Status> {
        let from = self.caller(&req)?;
        let bytes = &req.get_ref().envelope;
        // The caller is authenticated (pinned TLS certificate): bytes it
        // sends for a session that do not decode, or do not fit the
        // session, are its fault. That session ends at once (the engine
        // sees it closed) rather than at its timeout.
        let env = match Envelope::decode(bytes) {
            Ok(env) => env,
            Err(e) => {
                tracing::warn!(from = %from.name, error = %e, "refused an envelope; its session is aborted");
                if let Some(id) = Envelope::claimed_session(bytes) {
                    self.node.sessions().abort(&id, from.id, refused(from, &e));
                }
                return Err(ApiError::Invalid(e.to_string()).into());
            }
        };
        let id = env.session_id;
        if let Err(e) = self.node.sessions().deliver(env, from.id) {
            match &e {
                // Late messages of a session that just ended.
                ApiError::NotFound(_) => {
                    tracing::debug!(from = %from.name, error = %e, "envelope for no session")
                }
                ApiError::Invalid(_) => {
                    tracing::warn!(from = %from.name, error = %e, "refused an envelope; its session is aborted");
                    self.node.sessions().abort(&id, from.id, refused(from, &e));
                }
                _ => tracing::warn!(from = %from.name, error = %e, "refused an envelope"),
            }
            return Err(e.into());
        }
        Ok(Response::new(pb::Ack {}))
    }

    async fn abort(&self, req: Request<pb::AbortRequest>) -> Result<Response<pb::Ack>, Status> {
        let from = self.caller(&req)?;
        if req.get_ref().all_sessions {
            let why = SessionFailure::Aborted(format!("{} restarted", from.name));
            let ended = self.node.sessions().abort_all_of(from.id, &why);
            tracing::info!(from = %from.name, ended, "peer restarted; its sessions here are ended");
            return Ok(Response::new(pb::Ack {}));
        }
        let id = sid(&req.get_ref().session_id)?;
        // The reason is the peer's text: shown clipped.
        let reason: String = req.get_ref().reason.chars().take(300).collect();
        tracing::info!(from = %from.name, %reason, "session aborted by peer");
        let why = SessionFailure::Aborted(format!("{} ended it: {reason}", from.name));
        self.node.sessions().abort(&id, from.id, why);
        Ok(Response::new(pb::Ack {}))
    }

    async fn sign_with_presignature(
        &self,
        req: Request<pb::PresignSignRequest>,
    ) -> Result<Response<pb::PresignSignReply>, Status> {
        let from = self.caller(&req)?;
        let reply = presign::sign::co_sign(&self.node, from, req.into_inner()).await?;
        if !reply.missing && reply.partial_signature.is_empty() {
            tracing::info!(from = %from.name, reason = %reply.reason, "declined to co-sign from a presignature");
        }
        Ok(Response::new(reply))
    }

    async fn ping(&self, req: Request<pb::Ack>) -> Result<Response<pb::Ack>, Status> {
        self.caller(&req)?;
        Ok(Response::new(pb::Ack {}))
    }

    async fn find_signature(
        &self,
        req: Request<pb::FindSignatureRequest>,
    ) -> Result<Response<pb::FindSignatureReply>, Status> {
        let from = self.caller(&req)?;
        let reply = sign::retry::find_signature(&self.node, from, req.into_inner()).await?;
        Ok(Response::new(reply))
    }

    async fn transcript_part(
        &self,
        req: Request<pb::TranscriptPartRequest>,
    ) -> Result<Response<pb::EntryList>, Status> {
        let from = self.caller(&req)?;
        let r = ceremony::transcript::part(&self.node, from, req.into_inner()).await;
        log_refusal(from, "a transcript part", &r);
        Ok(Response::new(r?))
    }

    async fn certify_key(
        &self,
        req: Request<pb::CertifyRequest>,
    ) -> Result<Response<pb::CertifyReply>, Status> {
        let from = self.caller(&req)?;
        let r = ceremony::transcript::certify(&self.node, from, req.into_inner()).await;
        log_refusal(from, "to certify a key", &r);
        Ok(Response::new(r?))
    }

    async fn store_transcript(
        &self,
        req: Request<pb::StoreTranscriptRequest>,
    ) -> Result<Response<pb::Ack>, Status> {
        let from = self.caller(&req)?;
        let r = ceremony::transcript::store(&self.node, from, req.into_inner()).await;
        log_refusal(from, "to store a transcript", &r);
        r?;
        Ok(Response::new(pb::Ack {}))
    }
}

fn log_refusal<T>(from: &Party, what: &str, r: &Result<T, ApiError>) {
    if let Err(e) = r {
        tracing::warn!(from = %from.name, error = %e, "refused {what}");
    }
}

/// A session's end when `from` sent an envelope it could not accept.
fn refused(from: &Party, e: &dyn std::fmt::Display) -> SessionFailure {
    SessionFailure::Misbehaved {
        culprit: from.name.clone(),
        reason: e.to_string(),
    }
}
