//! The Peer service: proposals, start signals, envelopes and aborts from the
//! other parties, and the transcript steps after keygen
//! ([`crate::transcript`]). Every call is authenticated by the caller's
//! pinned TLS certificate; every proposal is checked against this node's own
//! view (its party set, its keys, its threshold) before it registers a
//! session.

use std::sync::Arc;
use std::time::Duration;

use proto::v1 as pb;
use tonic::{Request, Response, Status};
use tss_core::envelope::{Envelope, Protocol};
use tss_core::session;

use crate::client_auth;
use crate::coordinator;
use crate::error::{blocking, ApiError};
use crate::flows;
use crate::node::{Node, Party, SessionFailure};
use crate::signable::{self, Decoded};
use crate::tls;
use crate::transcript;

/// The Peer service.
pub struct PeerService {
    node: Arc<Node>,
}

impl PeerService {
    /// Whether key `key_id` is ready for signing here.
    async fn ready(&self, key_id: &str) -> Result<bool, ApiError> {
        let (n, k) = (self.node.clone(), key_id.to_owned());
        blocking(move || flows::is_ready(&n, &k)).await
    }

    /// A service over `node`.
    pub fn new(node: Arc<Node>) -> Self {
        Self { node }
    }

    fn caller<T>(&self, req: &Request<T>) -> Result<&Party, ApiError> {
        let fp = tls::peer_fingerprint(req)
            .ok_or_else(|| ApiError::Unauthenticated("no client certificate".into()))?;
        self.node.peer_by_fingerprint(&fp).ok_or_else(|| {
            ApiError::PermissionDenied("caller is not a pinned party of this node".into())
        })
    }
}

fn sid(b: &[u8]) -> Result<[u8; 32], ApiError> {
    b.try_into()
        .map_err(|_| ApiError::InvalidArgument("session id must be 32 bytes".into()))
}

/// Waits while our part of aux-info run `aux_id` finishes and returns its
/// result (`None` if the run ended without storing it).
async fn wait_for_aux(node: &Arc<Node>, aux_id: [u8; 32]) -> Option<keygen::record::AuxRecord> {
    loop {
        let n = node.clone();
        if let Ok(Some(a)) = blocking(move || flows::load_aux(&n)).await {
            if a.aux_id == aux_id {
                return Some(a);
            }
        }
        if !node.aux_running(&aux_id) {
            // One last look: the run may have finished just now.
            let n = node.clone();
            return blocking(move || flows::load_aux(&n))
                .await
                .ok()
                .flatten()
                .filter(|a| a.aux_id == aux_id);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn decline(reason: impl Into<String>) -> pb::ProposalReply {
    pb::ProposalReply {
        accepted: false,
        reason: reason.into(),
        ..Default::default()
    }
}

/// Why a co-signer does not sign a request.
enum Refusal {
    /// Malformed, or not for this node.
    Declined(String),
    /// This node's policy refuses it.
    Denied(String),
    /// This node signed the request before: a retry (the coordinator
    /// fetches the signature, it is never signed anew).
    AlreadySigned(String),
    /// The request id was used for another request here.
    Conflict(String),
}

/// The reply flags of a refusal: reason, denied, already signed, conflict.
struct Flags(String, bool, bool, bool);

impl Refusal {
    fn flags(self) -> Flags {
        match self {
            Refusal::Declined(m) => Flags(m, false, false, false),
            Refusal::Denied(m) => Flags(m, true, false, false),
            Refusal::AlreadySigned(m) => Flags(m, false, true, false),
            Refusal::Conflict(m) => Flags(m, false, false, true),
        }
    }

    fn proposal_reply(self) -> pb::ProposalReply {
        let Flags(reason, denied, already_signed, conflict) = self.flags();
        pb::ProposalReply {
            reason,
            denied,
            already_signed,
            conflict,
            ..Default::default()
        }
    }

    fn presign_reply(self) -> pb::PresignSignReply {
        let Flags(reason, denied, already_signed, conflict) = self.flags();
        pb::PresignSignReply {
            reason,
            denied,
            already_signed,
            conflict,
            ..Default::default()
        }
    }
}

/// What a co-signer was asked, decoded by itself, and who asked: the
/// client whose signature over the request verified here.
struct Authenticated {
    decoded: Decoded,
    /// This session's request id, derived here from the client's (a PSBT
    /// input's own id).
    request_id: Vec<u8>,
    /// `None` for the key's signature over its own certificate (no client).
    client: Option<crate::config::ClientEntry>,
    /// The client's request without its expiry
    /// ([`tss_core::authorization::ClientRequest::digest`]).
    request: [u8; 32],
}

/// A co-signer's view of a signing request (from a proposal or a pool
/// request).
struct Ask<'a> {
    record: &'a keygen::record::KeyRecord,
    /// The client's request id.
    request_id: &'a [u8],
    message: &'a [u8],
    hash: i32,
    payload: Option<&'a pb::SignPayload>,
    authorization: Option<&'a pb::ClientAuthorization>,
}

impl Ask<'_> {
    /// This session's request id: the client's, or for a PSBT input the
    /// id derived from the client's and the input index.
    fn session_request_id(&self) -> Vec<u8> {
        match self.payload.and_then(|p| p.kind.as_ref()) {
            Some(pb::sign_payload::Kind::Bitcoin(b)) => {
                signable::input_request_id(self.request_id, b.input_index as usize)
            }
            _ => self.request_id.to_vec(),
        }
    }
}

fn accept() -> pb::ProposalReply {
    pb::ProposalReply {
        accepted: true,
        ..Default::default()
    }
}

impl PeerService {
    /// Learns who asked and what: checks the client's signature over the
    /// request bytes (under a certificate pinned here, never a name the
    /// coordinator gives) before anything else is done with them, then
    /// decodes the request itself. The key certificate (a message in its
    /// reserved domain) is signed only if it is the one this node signed,
    /// with no client involved.
    async fn authenticate(
        &self,
        from: &Party,
        ask: &Ask<'_>,
        presign: bool,
    ) -> Result<Result<Authenticated, Refusal>, ApiError> {
        let node = &self.node;
        if let Err(e) =
            coordinator::check_sign_input(node, &ask.record.key_id, ask.message, ask.request_id)
        {
            return Ok(Err(Refusal::Declined(e.to_string())));
        }
        let certificate =
            ask.payload.is_none() && ask.message.starts_with(transcript::CERTIFICATE_DOMAIN);
        let mut request = [0u8; 32];
        let client = if certificate {
            if presign {
                return Ok(Err(Refusal::Declined("messages starting with the key-certificate domain are reserved for key certificates, signed by the full protocol only".into())));
            }
            None
        } else {
            let kind = ask.payload.and_then(|p| p.kind.as_ref());
            let chain = client_auth::payload_chain(kind);
            let asked = client_auth::signing_request(
                &ask.record.key_id,
                ask.request_id,
                ask.message,
                ask.hash,
                &chain,
                kind,
            );
            request = match asked.digest() {
                Ok(d) => d,
                Err(e) => return Ok(Err(Refusal::Declined(e.to_string()))),
            };
            let client = match client_auth::verify(node, &asked, ask.authorization) {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!(coordinator = %from.name, error = %e, "refused a signing request without a valid client authorization");
                    return Ok(Err(Refusal::Denied(format!(
                        "{} refuses (rule authorization): {e}",
                        node.cfg.name
                    ))));
                }
            };
            if client.role != crate::config::Role::Gateway {
                return Ok(Err(Refusal::Denied(format!(
                    "{} refuses (rule clients): client {} has role {:?}; signing needs role Gateway",
                    node.cfg.name, client.name, client.role
                ))));
            }
            if !self.ready(&ask.record.key_id).await? {
                return Ok(Err(Refusal::Declined(
                    flows::unfinished(node, &ask.record.key_id).to_string(),
                )));
            }
            Some(client)
        };
        let public_key = ask
            .record
            .public_key_bytes()
            .map_err(|e| ApiError::Internal(e.to_string()))?;
        let decoded = {
            let (m, h, p, pk) = (
                ask.message.to_vec(),
                ask.hash,
                ask.payload.cloned(),
                public_key,
            );
            match blocking(move || Ok(signable::from_wire(&m, h, p.as_ref(), &pk))).await? {
                Ok(d) => d,
                Err(e) => return Ok(Err(Refusal::Declined(e.to_string()))),
            }
        };
        if presign && !matches!(decoded.data, tss_core::ecdsa::sign::ToSign::Hashed(_)) {
            return Ok(Err(Refusal::Declined(
                "raw digests are never signed from a presignature".into(),
            )));
        }
        if certificate {
            let sha256 = matches!(
                decoded.payload,
                signable::Payload::Message(coordinator::Hashing::Node(
                    tss_core::ecdsa::sign::HashAlgo::Sha256
                ))
            );
            if let Err(why) =
                transcript::check_certificate_message(node, &ask.record.key_id, sha256, ask.message)
                    .await?
            {
                return Ok(Err(Refusal::Declined(why)));
            }
        }
        Ok(Ok(Authenticated {
            decoded,
            request_id: ask.session_request_id(),
            client,
            request,
        }))
    }

    /// A retry or a reused request id, as this node knows it: the request
    /// id bound here to another request (a conflict), or this session
    /// signed here before.
    async fn known(&self, ask: &Ask<'_>, a: &Authenticated) -> Result<Option<Refusal>, ApiError> {
        let node = &self.node;
        let key_id = &ask.record.key_id;
        if let Some(client) = &a.client {
            match coordinator::check_request_id(
                node,
                key_id,
                ask.request_id,
                &client.name,
                a.request,
            )
            .await
            {
                Err(ApiError::AlreadyExists(m)) => {
                    return Ok(Some(Refusal::Conflict(format!("{}: {m}", node.cfg.name))))
                }
                r => r?,
            }
        }
        if coordinator::signed_here(node, key_id, &a.request_id, &a.decoded.digest).await? {
            return Ok(Some(Refusal::AlreadySigned(format!(
                "{} signed this request before",
                node.cfg.name
            ))));
        }
        Ok(None)
    }

    /// After the policy allowed it: binds the client's request id here.
    async fn bind(&self, ask: &Ask<'_>, a: &Authenticated) -> Result<Option<Refusal>, ApiError> {
        let Some(client) = &a.client else {
            return Ok(None);
        };
        match coordinator::bind_request_id(
            &self.node,
            &ask.record.key_id,
            ask.request_id,
            &client.name,
            a.request,
        )
        .await
        {
            Err(ApiError::AlreadyExists(m)) => Ok(Some(Refusal::Conflict(format!(
                "{}: {m}",
                self.node.cfg.name
            )))),
            r => r.map(|()| None),
        }
    }

    /// This node's policy for the client that signed an authenticated
    /// request (appended to the audit log); the amounts it reserves. Called
    /// only for a fresh request (claimed, not signed before) within the
    /// proposer's session quota, so a peer cannot grow the audit log with
    /// replays.
    async fn judge(
        &self,
        from: &Party,
        ask: &Ask<'_>,
        a: &Authenticated,
    ) -> Result<Result<Option<crate::spend::Reservation>, Refusal>, ApiError> {
        let Some(client) = &a.client else {
            return Ok(Ok(None));
        };
        match coordinator::check_policy(
            &self.node,
            &client.name,
            &ask.record.key_id,
            ask.request_id,
            &a.decoded,
            format!("co-signer for {}", from.name),
        )
        .await
        {
            Ok(reservation) => Ok(Ok(reservation)),
            Err(ApiError::PermissionDenied(m)) => Ok(Err(Refusal::Denied(m))),
            Err(e) => Err(e),
        }
    }

    /// Checks shared by keygen and aux-info proposals: the party set is this
    /// node's own, the session id is the one the proposal implies, and the
    /// run serves a Keygen request signed by a client that this node pins
    /// as admin (checked here from the client's signature).
    fn check_ceremony(
        &self,
        from: &Party,
        party_set: &[u8],
        expected_id: [u8; 32],
        id: [u8; 32],
        asked: &tss_core::authorization::ClientRequest<'_>,
        authorization: Option<&pb::ClientAuthorization>,
    ) -> Result<(), String> {
        if party_set != session::party_set_id(&self.node.party_ids()) {
            return Err("party set differs from this node's configured parties".into());
        }
        if expected_id != id {
            return Err("session id does not match the proposal".into());
        }
        let client = client_auth::verify(&self.node, asked, authorization).map_err(|e| {
            tracing::warn!(coordinator = %from.name, error = %e, "refused a ceremony without a valid admin authorization");
            format!("{} refuses: {e}", self.node.cfg.name)
        })?;
        if client.role != crate::config::Role::Admin {
            return Err(format!(
                "{} is not an admin client of {}",
                client.name, self.node.cfg.name
            ));
        }
        Ok(())
    }

    async fn propose_inner(
        &self,
        from: &Party,
        p: pb::Proposal,
    ) -> Result<pb::ProposalReply, ApiError> {
        let node = &self.node;
        let id = sid(&p.session_id)?;
        let my_set = session::party_set_id(&node.party_ids());
        let start_wait = Duration::from_millis(node.cfg.timeouts.propose_ms * 4);
        match p.kind {
            None => Err(ApiError::InvalidArgument("proposal has no kind".into())),
            Some(pb::proposal::Kind::Aux(a)) => {
                let nonce: [u8; 32] = sid(&a.nonce)?;
                let expected = session::aux_execution_id(&my_set, &nonce);
                if let Err(why) = self.check_ceremony(
                    from,
                    &a.party_set,
                    expected,
                    id,
                    &client_auth::keygen_request(&a.key_id, &a.request_id),
                    a.authorization.as_ref(),
                ) {
                    return Ok(decline(why));
                }
                if node.primes.ready() == 0 {
                    return Ok(decline(coordinator::no_primes(node).to_string()));
                }
                let info = node.ceremony_session(id, Protocol::AuxInfo);
                let mut reg = node.register(info, true, Some(from.id))?;
                let Some(in_progress) = node.aux_in_progress(id) else {
                    return Ok(decline(format!(
                        "an aux-info run is already in progress at {}",
                        node.cfg.name
                    )));
                };
                let n = node.clone();
                tokio::spawn(async move {
                    let _in_progress = in_progress;
                    if let Err(f) = reg.wait_start(start_wait).await {
                        tracing::warn!(failure = %f, "aux-info session never started");
                        return;
                    }
                    if let Err(f) = flows::aux(n, reg).await {
                        tracing::warn!(failure = %f, "aux-info session failed");
                    }
                });
                tracing::info!(from = %from.name, "accepted aux-info generation");
                Ok(accept())
            }
            Some(pb::proposal::Kind::Keygen(k)) => {
                let nonce: [u8; 32] = sid(&k.nonce)?;
                if keygen::record::check_key_id(&k.key_id).is_err() {
                    return Ok(decline("invalid key id"));
                }
                if k.threshold != u32::from(node.cfg.threshold) {
                    return Ok(decline(format!(
                        "threshold {} differs from this node's {}",
                        k.threshold, node.cfg.threshold
                    )));
                }
                let expected = session::keygen_execution_id(&k.key_id, &my_set, &nonce);
                if let Err(why) = self.check_ceremony(
                    from,
                    &k.party_set,
                    expected,
                    id,
                    &client_auth::keygen_request(&k.key_id, &k.request_id),
                    k.authorization.as_ref(),
                ) {
                    return Ok(decline(why));
                }
                let reservation = match node.reserve_key(&k.key_id) {
                    Ok(r) => r,
                    Err(e) => return Ok(decline(e.to_string())),
                };
                let (n, key_id) = (node.clone(), k.key_id.clone());
                let (state, aux) = blocking(move || {
                    Ok((
                        flows::key_state(&n, &key_id)?,
                        flows::load_aux_for_keygen(&n)?,
                    ))
                })
                .await?;
                if let flows::KeyState::Ready(_) = state {
                    return Ok(decline(format!(
                        "key {} already exists at {} (certified)",
                        k.key_id, node.cfg.name
                    )));
                }
                let aux_id: [u8; 32] = sid(&k.aux_id)?;
                let aux = aux.filter(|a| a.aux_id == aux_id);
                // Our part of that aux-info run may still be finishing (the
                // last round's proofs take a while): accept, and wait for it.
                if aux.is_none() && !node.aux_running(&aux_id) {
                    return Ok(pb::ProposalReply {
                        reason: format!(
                            "missing aux info {} at {}",
                            hex::encode(aux_id),
                            node.cfg.name
                        ),
                        missing_aux: true,
                        ..Default::default()
                    });
                }
                let info = node.ceremony_session(id, Protocol::Keygen);
                let mut reg = node.register(info, true, Some(from.id))?;
                let n = node.clone();
                tokio::spawn(async move {
                    let _reservation = reservation;
                    if let Err(f) = reg.wait_start(start_wait).await {
                        tracing::warn!(failure = %f, "keygen session never started");
                        return;
                    }
                    let aux = match aux {
                        Some(a) => a,
                        None => match wait_for_aux(&n, aux_id).await {
                            Some(a) => a,
                            None => {
                                tracing::warn!(aux_id = %hex::encode(aux_id), "aux-info run ended without aux info; keygen abandoned");
                                return;
                            }
                        },
                    };
                    // An unfinished earlier run of this key id is put aside
                    // only now that every party accepted the new one.
                    let (n2, id) = (n.clone(), k.key_id.clone());
                    if let Err(e) = blocking(move || flows::retire_unfinished(&n2, &id)).await {
                        tracing::warn!(error = %e, "keygen abandoned: the unfinished earlier key could not be put aside");
                        return;
                    }
                    if let Err(f) = flows::keygen(n, reg, k.key_id, aux).await {
                        tracing::warn!(failure = %f, "keygen session failed");
                    }
                });
                tracing::info!(from = %from.name, "accepted keygen");
                Ok(accept())
            }
            Some(pb::proposal::Kind::Sign(s)) => self.propose_sign(from, id, s).await,
            Some(pb::proposal::Kind::Presign(ps)) => self.propose_presign(from, id, ps).await,
        }
    }

    /// Loads a key and checks a signer set sent by peer `from`: the key's
    /// threshold of distinct ascending indices, including both of us.
    async fn key_and_signers(
        &self,
        from: &Party,
        key_id: &str,
        signers: &[u32],
    ) -> Result<Result<(keygen::record::KeyRecord, Vec<u16>), String>, ApiError> {
        let node = &self.node;
        if keygen::record::check_key_id(key_id).is_err() {
            return Ok(Err("invalid key id".into()));
        }
        let (n, k) = (node.clone(), key_id.to_owned());
        let Some(record) = blocking(move || flows::load_key_record(&n, &k)).await? else {
            return Ok(Err(format!("no key {key_id} at {}", node.cfg.name)));
        };
        let ids = record
            .party_ids()
            .map_err(|e| ApiError::Internal(e.to_string()))?;
        let Ok(signers) = signers
            .iter()
            .map(|&x| u16::try_from(x))
            .collect::<Result<Vec<u16>, _>>()
        else {
            return Ok(Err("signer index out of range".into()));
        };
        let from_index = ids.iter().position(|p| *p == from.id).map(|i| i as u16);
        let ascending = signers.windows(2).all(|w| w[0] < w[1]);
        if signers.len() != usize::from(record.threshold)
            || !ascending
            || signers.iter().any(|&x| usize::from(x) >= ids.len())
            || !signers.contains(&record.my_index)
            || from_index.is_none_or(|f| !signers.contains(&f))
        {
            return Ok(Err("signer set must be the key's threshold of distinct ascending indices, including both of us".into()));
        }
        Ok(Ok((record, signers)))
    }

    async fn propose_presign(
        &self,
        from: &Party,
        id: [u8; 32],
        ps: pb::PresignProposal,
    ) -> Result<pb::ProposalReply, ApiError> {
        let node = &self.node;
        let Some(rt) = node.pool_rt.as_ref() else {
            return Ok(decline(format!(
                "the presignature pool is off at {}",
                node.cfg.name
            )));
        };
        let (record, signers) = match self.key_and_signers(from, &ps.key_id, &ps.signers).await? {
            Ok(x) => x,
            Err(why) => return Ok(decline(why)),
        };
        // The party with the lower index of the pair leads its presign runs.
        if signers.first() == Some(&record.my_index) {
            return Ok(decline("this node leads presigning for this pair"));
        }
        if !self.ready(&record.key_id).await? {
            return Ok(decline(flows::unfinished(node, &record.key_id).to_string()));
        }
        let nonce: [u8; 32] = sid(&ps.nonce)?;
        if session::presign_execution_id(&record.key_id, &signers, &nonce) != id {
            return Ok(decline("session id does not match the proposal"));
        }
        let cap = node.cfg.presign.target + node.cfg.presign.slack;
        let (n, k, sg) = (node.clone(), record.key_id.clone(), signers.clone());
        if blocking(move || crate::presign::level(&n, &k, &sg)).await? >= cap {
            return Ok(decline(format!(
                "{} already holds {cap} presignatures for this key and pair",
                node.cfg.name
            )));
        }
        let mut info = coordinator::sign_session(&record, &signers, record.my_index, id)?;
        info.protocol = Protocol::Presign;
        let reg = node.register(info, false, Some(from.id))?;
        let (n, k) = (node.clone(), record.key_id.clone());
        let share = Arc::new(blocking(move || flows::load_share(&n, &k)).await?);
        let n = node.clone();
        rt.handle().spawn(async move {
            let _running = n.metrics.session_running("presign");
            if let Err(f) =
                crate::presign::run_and_store(n.clone(), reg, record, share, signers).await
            {
                n.metrics.session_failed("presign");
                tracing::debug!(failure = %f, "presign session failed");
            }
        });
        Ok(accept())
    }

    async fn sign_with_presignature_inner(
        &self,
        from: &Party,
        r: pb::PresignSignRequest,
    ) -> Result<pb::PresignSignReply, ApiError> {
        let node = &self.node;
        let refuse = |reason: String, missing: bool| pb::PresignSignReply {
            reason,
            missing,
            ..Default::default()
        };
        if keygen::record::check_key_id(&r.key_id).is_err() {
            return Ok(refuse("invalid key id".into(), false));
        }
        let (record, signers) = match self.key_and_signers(from, &r.key_id, &r.signers).await? {
            Ok(x) => x,
            Err(why) => return Ok(refuse(why, false)),
        };
        let ask = Ask {
            record: &record,
            request_id: &r.request_id,
            message: &r.message,
            hash: r.hash,
            payload: r.payload.as_ref(),
            authorization: r.authorization.as_ref(),
        };
        let authenticated = match self.authenticate(from, &ask, true).await? {
            Ok(a) => a,
            Err(refusal) => return Ok(refusal.presign_reply()),
        };
        if let Some(refusal) = self.known(&ask, &authenticated).await? {
            return Ok(refusal.presign_reply());
        }
        let tss_core::ecdsa::sign::ToSign::Hashed(data) = authenticated.decoded.data else {
            return Ok(refuse(
                "raw digests are never signed from a presignature".into(),
                false,
            ));
        };
        let (digest, request_id) = (
            authenticated.decoded.digest,
            authenticated.request_id.clone(),
        );
        let Ok(pid) = <[u8; 32]>::try_from(r.presignature_id.as_slice()) else {
            return Ok(refuse("presignature id must be 32 bytes".into(), false));
        };
        let _claim = match coordinator::claim_fresh_request(
            node,
            &record.key_id,
            &request_id,
            &digest,
        )
        .await
        {
            Ok(c) => c,
            Err(e) => return Ok(Refusal::AlreadySigned(e.to_string()).presign_reply()),
        };
        let reservation = match self.judge(from, &ask, &authenticated).await? {
            Ok(r) => r,
            Err(refusal) => return Ok(refusal.presign_reply()),
        };
        if let Some(refusal) = self.bind(&ask, &authenticated).await? {
            return Ok(refusal.presign_reply());
        }
        let presig = crate::presign::consume(
            node,
            &record,
            &signers,
            pid,
            &request_id,
            digest,
            "co-signer",
        )
        .await?;
        let Some(presig) = presig else {
            return Ok(refuse(
                format!(
                    "{} holds no presignature {} for this pair (never made, or used)",
                    node.cfg.name,
                    hex::encode(pid)
                ),
                true,
            ));
        };
        // Durably consumed: only now may the partial signature be issued.
        if let Some(h) = &node.cfg.test_hooks {
            if h.pause_before_partial_ms > 0 {
                tracing::warn!(
                    ms = h.pause_before_partial_ms,
                    "TEST HOOK: pausing before the partial signature"
                );
                tokio::time::sleep(Duration::from_millis(h.pause_before_partial_ms)).await;
            }
        }
        coordinator::commit_spend(node, reservation).await?;
        let partial = presig.issue(data);
        tracing::info!(coordinator = %from.name, key_id = %record.key_id, "co-signed from a presignature");
        Ok(pb::PresignSignReply {
            partial_signature: partial.to_vec(),
            ..Default::default()
        })
    }

    async fn find_signature_inner(
        &self,
        from: &Party,
        r: pb::FindSignatureRequest,
    ) -> Result<pb::FindSignatureReply, ApiError> {
        let node = &self.node;
        let refused = |reason: String| pb::FindSignatureReply {
            reason,
            ..Default::default()
        };
        if keygen::record::check_key_id(&r.key_id).is_err() {
            return Ok(refused("invalid key id".into()));
        }
        let (n, k) = (node.clone(), r.key_id.clone());
        let Some(record) = blocking(move || flows::load_key_record(&n, &k)).await? else {
            return Ok(refused(format!("no key {} at {}", r.key_id, node.cfg.name)));
        };
        let ask = Ask {
            record: &record,
            request_id: &r.request_id,
            message: &r.message,
            hash: r.hash,
            payload: r.payload.as_ref(),
            authorization: r.authorization.as_ref(),
        };
        let a = match self.authenticate(from, &ask, false).await? {
            Ok(a) => a,
            Err(refusal) => return Ok(refused(refusal.flags().0)),
        };
        if let Some(Refusal::Conflict(m)) = self.known(&ask, &a).await? {
            return Ok(pb::FindSignatureReply {
                conflict: true,
                ..refused(m)
            });
        }
        let (n, k, rid, d) = (
            node.clone(),
            record.key_id.clone(),
            a.request_id.clone(),
            a.decoded.digest,
        );
        if let Some((rs, signers)) =
            blocking(move || crate::retry::stored_signature(&n, &k, &rid, &d)).await?
        {
            tracing::info!(caller = %from.name, key_id = %record.key_id, "handed out a kept signature for a retried request");
            return Ok(pb::FindSignatureReply {
                signed: true,
                signature: rs.to_vec(),
                signers,
                ..Default::default()
            });
        }
        let signed =
            coordinator::signed_here(node, &record.key_id, &a.request_id, &a.decoded.digest)
                .await?;
        Ok(pb::FindSignatureReply {
            signed,
            ..Default::default()
        })
    }

    async fn propose_sign(
        &self,
        from: &Party,
        id: [u8; 32],
        s: pb::SignProposal,
    ) -> Result<pb::ProposalReply, ApiError> {
        let node = &self.node;
        if keygen::record::check_key_id(&s.key_id).is_err() {
            return Ok(decline("invalid key id"));
        }
        let (record, signers) = match self.key_and_signers(from, &s.key_id, &s.signers).await? {
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
        let authenticated = match self.authenticate(from, &ask, false).await? {
            Ok(a) => a,
            Err(refusal) => return Ok(refusal.proposal_reply()),
        };
        if let Some(refusal) = self.known(&ask, &authenticated).await? {
            return Ok(refusal.proposal_reply());
        }
        let (data, digest, request_id) = (
            authenticated.decoded.data,
            authenticated.decoded.digest,
            authenticated.request_id.clone(),
        );
        let claim = match coordinator::claim_fresh_request(
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
        let info = coordinator::sign_session(&record, &signers, record.my_index, eid)?;
        // Within the proposer's session quota, before the audit log grows.
        let reg = node.register(info, false, Some(from.id))?;
        let reservation = match self.judge(from, &ask, &authenticated).await? {
            Ok(r) => r,
            Err(refusal) => return Ok(refusal.proposal_reply()),
        };
        if let Some(refusal) = self.bind(&ask, &authenticated).await? {
            return Ok(refusal.proposal_reply());
        }
        if let Err(e) = coordinator::mark_seen(node, eid).await {
            return Ok(decline(e.to_string()));
        }
        let (n, key_id) = (node.clone(), record.key_id.clone());
        let share = Arc::new(blocking(move || flows::load_share(&n, &key_id)).await?);
        let n = node.clone();
        let coordinator_name = from.name.clone();
        // The amounts and the request are recorded durably before our
        // partial signature leaves; if the session ends before that, the
        // reservation is dropped (nothing was released).
        let hook = coordinator::Release::new(reservation).before_partial(
            node,
            &record.key_id,
            &request_id,
            &digest,
            Default::default(),
        );
        tokio::spawn(async move {
            let _claim = claim;
            match flows::sign(n.clone(), reg, share, signers.clone(), data, Some(hook)).await {
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
                        crate::retry::store_signature(
                            &n,
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
        Ok(accept())
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
        self.node.start(&sid(&req.get_ref().session_id)?, from)?;
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
                    self.node.abort(&id, from.id, refused(from, &e));
                }
                return Err(ApiError::InvalidArgument(e.to_string()).into());
            }
        };
        let id = env.session_id;
        if let Err(e) = self.node.deliver(env, from.id) {
            match &e {
                // Late messages of a session that just ended.
                ApiError::NotFound(_) => {
                    tracing::debug!(from = %from.name, error = %e, "envelope for no session")
                }
                ApiError::InvalidArgument(_) => {
                    tracing::warn!(from = %from.name, error = %e, "refused an envelope; its session is aborted");
                    self.node.abort(&id, from.id, refused(from, &e));
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
            let ended = self.node.abort_all_of(from.id, &why);
            tracing::info!(from = %from.name, ended, "peer restarted; its sessions here are ended");
            return Ok(Response::new(pb::Ack {}));
        }
        let id = sid(&req.get_ref().session_id)?;
        // The reason is the peer's text: shown clipped.
        let reason: String = req.get_ref().reason.chars().take(300).collect();
        tracing::info!(from = %from.name, %reason, "session aborted by peer");
        let why = SessionFailure::Aborted(format!("{} ended it: {reason}", from.name));
        self.node.abort(&id, from.id, why);
        Ok(Response::new(pb::Ack {}))
    }

    async fn sign_with_presignature(
        &self,
        req: Request<pb::PresignSignRequest>,
    ) -> Result<Response<pb::PresignSignReply>, Status> {
        let from = self.caller(&req)?;
        let reply = self
            .sign_with_presignature_inner(from, req.into_inner())
            .await?;
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
        let reply = self.find_signature_inner(from, req.into_inner()).await?;
        Ok(Response::new(reply))
    }

    async fn transcript_part(
        &self,
        req: Request<pb::TranscriptPartRequest>,
    ) -> Result<Response<pb::EntryList>, Status> {
        let from = self.caller(&req)?;
        let r = transcript::part(&self.node, from, req.into_inner()).await;
        log_refusal(from, "a transcript part", &r);
        Ok(Response::new(r?))
    }

    async fn certify_key(
        &self,
        req: Request<pb::CertifyRequest>,
    ) -> Result<Response<pb::CertifyReply>, Status> {
        let from = self.caller(&req)?;
        let r = transcript::certify(&self.node, from, req.into_inner()).await;
        log_refusal(from, "to certify a key", &r);
        Ok(Response::new(r?))
    }

    async fn store_transcript(
        &self,
        req: Request<pb::StoreTranscriptRequest>,
    ) -> Result<Response<pb::Ack>, Status> {
        let from = self.caller(&req)?;
        let r = transcript::store(&self.node, from, req.into_inner()).await;
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
