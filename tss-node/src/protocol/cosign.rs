//! What a co-signer checks of every signing request a peer proposes (full
//! protocol or presignature): the client's own signature over the request,
//! under a certificate pinned here; the node's own decoding of the payload;
//! retries and reused request ids; then its own policy. Nothing the
//! coordinator asserts is taken on trust.
//!
//! The checks read the store and verify signatures: they run on the
//! calling blocking thread, all of one request's in one hand-off from the
//! reactor ([`vet`]).

use proto::v1 as pb;

use crate::error::ApiError;
use crate::protocol::{records, Refusal};
use crate::request::decode::Decoded;
use crate::state::claims::RequestClaim;
use crate::state::Node;
use crate::transport::peers::Party;

/// What a co-signer was asked, decoded by itself, and who asked: the
/// client whose signature over the request verified here.
pub(crate) struct Authenticated {
    pub(crate) decoded: Decoded,
    /// This session's request id, derived here from the client's (a PSBT
    /// input's own id).
    pub(crate) request_id: Vec<u8>,
    /// `None` for the key's signature over its own certificate (no client).
    pub(crate) client: Option<crate::config::ClientEntry>,
    /// The client's request without its expiry
    /// ([`tss_core::authorization::ClientRequest::digest`]).
    pub(crate) request: [u8; 32],
}

/// A co-signer's view of a signing request (from a proposal or a pool
/// request).
pub(crate) struct Ask<'a> {
    pub(crate) record: &'a keygen::record::KeyRecord,
    /// The client's request id.
    pub(crate) request_id: &'a [u8],
    pub(crate) message: &'a [u8],
    pub(crate) hash: i32,
    pub(crate) payload: Option<&'a pb::SignPayload>,
    pub(crate) authorization: Option<&'a pb::ClientAuthorization>,
}

impl Ask<'_> {
    /// This session's request id: the client's, or for a PSBT input the
    /// id derived from the client's and the input index.
    fn session_request_id(&self) -> Vec<u8> {
        match self.payload.and_then(|p| p.kind.as_ref()) {
            Some(pb::sign_payload::Kind::Bitcoin(b)) => {
                crate::request::decode::input_request_id(self.request_id, b.input_index as usize)
            }
            _ => self.request_id.to_vec(),
        }
    }
}

/// Learns who asked and what: checks the client's signature over the
/// request bytes (under a certificate pinned here, never a name the
/// coordinator gives) before anything else is done with them, then
/// decodes the request itself. The key certificate (a message in its
/// reserved domain) is signed only if it is the one this node signed,
/// with no client involved. Blocking.
pub(crate) fn authenticate(
    node: &Node,
    from: &Party,
    ask: &Ask<'_>,
    presign: bool,
) -> Result<Result<Authenticated, Refusal>, ApiError> {
    if let Err(e) =
        crate::request::check_sign_input(node, &ask.record.key_id, ask.message, ask.request_id)
    {
        return Ok(Err(Refusal::Declined(e.to_string())));
    }
    let certificate = ask.payload.is_none()
        && ask
            .message
            .starts_with(crate::protocol::certificate::CERTIFICATE_DOMAIN);
    let mut request = [0u8; 32];
    let client = if certificate {
        if presign {
            return Ok(Err(Refusal::Declined("messages starting with the key-certificate domain are reserved for key certificates, signed by the full protocol only".into())));
        }
        None
    } else {
        let kind = ask.payload.and_then(|p| p.kind.as_ref());
        let chain = crate::request::auth::payload_chain(kind);
        let asked = crate::request::auth::signing_request(
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
        let client = match crate::request::auth::verify(node, &asked, ask.authorization) {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(coordinator = %from.name, error = %e, "refused a signing request without a valid client authorization");
                return Ok(Err(Refusal::Denied(format!(
                    "{} refuses (rule authorization): {e}",
                    node.cfg().name
                ))));
            }
        };
        if client.role != crate::config::Role::Gateway {
            return Ok(Err(Refusal::Denied(format!(
                "{} refuses (rule clients): client {} has role {:?}; signing needs role Gateway",
                node.cfg().name,
                client.name,
                client.role
            ))));
        }
        if !records::is_ready(node.store(), &ask.record.key_id)? {
            return Ok(Err(Refusal::Declined(
                crate::protocol::records::unfinished(node, &ask.record.key_id).to_string(),
            )));
        }
        Some(client)
    };
    if let Err(e) = crate::request::check_payload_scheme(ask.record, ask.payload) {
        return Ok(Err(Refusal::Declined(e.to_string())));
    }
    let public_key = ask
        .record
        .public_key_bytes()
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    let decoded = match crate::request::decode::from_wire(
        ask.message,
        ask.hash,
        ask.payload,
        &public_key,
        ask.record.scheme,
    ) {
        Ok(d) => d,
        Err(e) => return Ok(Err(Refusal::Declined(e.to_string()))),
    };
    // (FROST keys' pooled nonces sign raw digests too: `protocol::frost::pool`.)
    if presign
        && ask.record.scheme.is_none()
        && !matches!(decoded.data, tss_core::ecdsa::sign::ToSign::Hashed(_))
    {
        return Ok(Err(Refusal::Declined(
            "raw digests are never signed from a presignature".into(),
        )));
    }
    if certificate {
        let sha256 = matches!(
            decoded.payload,
            crate::request::decode::Payload::Message(crate::request::Hashing::Node(
                tss_core::ecdsa::sign::HashAlgo::Sha256
            ))
        );
        if let Err(why) = crate::protocol::certificate::check_certificate_message(
            node,
            &ask.record.key_id,
            sha256,
            ask.message,
        )? {
            return Ok(Err(Refusal::Declined(why.to_string())));
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
/// signed here before. Blocking.
pub(crate) fn known(
    node: &Node,
    ask: &Ask<'_>,
    a: &Authenticated,
) -> Result<Option<Refusal>, ApiError> {
    let key_id = &ask.record.key_id;
    if let Some(client) = &a.client {
        match crate::request::retry::check_binding(
            node,
            key_id,
            ask.request_id,
            &client.name,
            &a.request,
        ) {
            Err(ApiError::Conflict(m)) => {
                return Ok(Some(Refusal::Conflict(format!("{}: {m}", node.cfg().name))))
            }
            r => r?,
        }
    }
    if crate::request::retry::is_signed(node, key_id, &a.request_id, &a.decoded.digest)? {
        return Ok(Some(Refusal::AlreadySigned(format!(
            "{} signed this request before",
            node.cfg().name
        ))));
    }
    Ok(None)
}

/// After the policy allowed it: binds the client's request id here.
/// Blocking.
pub(crate) fn bind(
    node: &Node,
    ask: &Ask<'_>,
    a: &Authenticated,
) -> Result<Option<Refusal>, ApiError> {
    let Some(client) = &a.client else {
        return Ok(None);
    };
    match crate::request::retry::bind(
        node,
        &ask.record.key_id,
        ask.request_id,
        &client.name,
        &a.request,
    ) {
        Err(ApiError::Conflict(m)) => {
            Ok(Some(Refusal::Conflict(format!("{}: {m}", node.cfg().name))))
        }
        r => r.map(|()| None),
    }
}

/// This node's policy for the client that signed an authenticated
/// request (appended to the audit log); the amounts it reserves. Called
/// only for a fresh request (claimed, not signed before) within the
/// proposer's session quota, so a peer cannot grow the audit log with
/// replays. Blocking.
pub(crate) fn judge(
    node: &Node,
    from: &Party,
    ask: &Ask<'_>,
    a: &Authenticated,
) -> Result<Result<Option<crate::policy::spend::Reservation>, Refusal>, ApiError> {
    let Some(client) = &a.client else {
        return Ok(Ok(None));
    };
    match crate::protocol::approve::decide(
        node,
        &client.name,
        &ask.record.key_id,
        ask.request_id,
        &a.decoded,
        format!("co-signer for {}", from.name),
    ) {
        Ok(reservation) => Ok(Ok(reservation)),
        Err(e @ ApiError::Policy { .. }) => Ok(Err(Refusal::Denied(e.to_string()))),
        Err(e) => Err(e),
    }
}

/// Loads a key and checks a signer set sent by peer `from`: the key's
/// threshold of distinct ascending indices, including both of us.
/// Blocking.
pub(crate) fn key_and_signers(
    node: &Node,
    from: &Party,
    key_id: &str,
    signers: &[u32],
) -> Result<Result<(keygen::record::KeyRecord, Vec<u16>), String>, ApiError> {
    if keygen::record::check_key_id(key_id).is_err() {
        return Ok(Err("invalid key id".into()));
    }
    let Some(record) = crate::protocol::records::load_key_record(node.store(), key_id)? else {
        return Ok(Err(format!("no key {key_id} at {}", node.cfg().name)));
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

/// A signing request as a peer sent it (a proposal or a pool request).
pub(crate) struct Proposed<'a> {
    pub(crate) key_id: &'a str,
    pub(crate) signers: &'a [u32],
    pub(crate) request_id: &'a [u8],
    pub(crate) message: &'a [u8],
    pub(crate) hash: i32,
    pub(crate) payload: Option<&'a pb::SignPayload>,
    pub(crate) authorization: Option<&'a pb::ClientAuthorization>,
}

/// A signing request this co-signer accepted: its key and signers, who
/// asked and what, the request claimed here, the amounts this node's
/// policy reserved, and what the caller's step made.
pub(crate) struct Vetted<R> {
    pub(crate) record: keygen::record::KeyRecord,
    pub(crate) signers: Vec<u16>,
    pub(crate) authenticated: Authenticated,
    pub(crate) claim: RequestClaim,
    pub(crate) reservation: Option<crate::policy::spend::Reservation>,
    pub(crate) made: R,
}

/// Every check a co-signer makes of a signing request from peer `from`,
/// in order, on the calling (blocking) thread: key and signer set
/// ([`key_and_signers`]), the client's signature and this node's own
/// decoding ([`authenticate`]), retries and reused request ids
/// ([`known`]), the request claimed here, then `step` (the caller's own
/// check or session registration: within the proposer's quota, before
/// the audit log grows), this node's policy ([`judge`]) and the request
/// id bound ([`bind`]).
pub(crate) fn vet<R>(
    node: &Node,
    from: &Party,
    p: &Proposed<'_>,
    presign: bool,
    step: impl FnOnce(
        &keygen::record::KeyRecord,
        &[u16],
        &Authenticated,
    ) -> Result<Result<R, Refusal>, ApiError>,
) -> Result<Result<Vetted<R>, Refusal>, ApiError> {
    let (record, signers) = match key_and_signers(node, from, p.key_id, p.signers)? {
        Ok(x) => x,
        Err(why) => return Ok(Err(Refusal::Declined(why))),
    };
    let ask = Ask {
        record: &record,
        request_id: p.request_id,
        message: p.message,
        hash: p.hash,
        payload: p.payload,
        authorization: p.authorization,
    };
    let authenticated = match authenticate(node, from, &ask, presign)? {
        Ok(a) => a,
        Err(refusal) => return Ok(Err(refusal)),
    };
    if let Some(refusal) = known(node, &ask, &authenticated)? {
        return Ok(Err(refusal));
    }
    let claim = match crate::request::retry::claim_fresh(
        node,
        &record.key_id,
        &authenticated.request_id,
        &authenticated.decoded.digest,
    ) {
        Ok(c) => c,
        // Signed before, or being signed now: a known request (the
        // coordinator fetches its signature, never signs it anew).
        Err(e) => return Ok(Err(Refusal::AlreadySigned(e.to_string()))),
    };
    let made = match step(&record, &signers, &authenticated)? {
        Ok(m) => m,
        Err(refusal) => return Ok(Err(refusal)),
    };
    let reservation = match judge(node, from, &ask, &authenticated)? {
        Ok(r) => r,
        Err(refusal) => return Ok(Err(refusal)),
    };
    if let Some(refusal) = bind(node, &ask, &authenticated)? {
        return Ok(Err(refusal));
    }
    Ok(Ok(Vetted {
        record,
        signers,
        authenticated,
        claim,
        reservation,
        made,
    }))
}

/// Runs `f` on a blocking thread with the peer `from` (looked up there by
/// its pinned identity): a co-signer's whole check of one request in one
/// hand-off from the reactor.
pub(crate) async fn off_reactor<T: Send + 'static>(
    node: &std::sync::Arc<Node>,
    from: &Party,
    f: impl FnOnce(&Node, &Party) -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    let (n, id) = (node.clone(), from.id);
    crate::error::in_place(move || {
        let from = n
            .peers()
            .party(&id)
            .ok_or_else(|| ApiError::Internal("a calling peer left the config".into()))?;
        f(&n, from)
    })
    .await
}
