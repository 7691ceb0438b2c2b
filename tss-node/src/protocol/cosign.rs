//! What a co-signer checks of every signing request a peer proposes (full
//! protocol or presignature): the client's own signature over the request,
//! under a certificate pinned here; the node's own decoding of the payload;
//! retries and reused request ids; then its own policy. Nothing the
//! coordinator asserts is taken on trust.

use std::sync::Arc;

use proto::v1 as pb;

use crate::error::{blocking, ApiError};
use crate::protocol::{records, Refusal};
use crate::request::decode::Decoded;
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
/// with no client involved.
pub(crate) async fn authenticate(
    node: &Arc<Node>,
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
        if !records::is_ready_now(node, &ask.record.key_id).await? {
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
    let decoded = {
        let (m, h, p, pk, scheme) = (
            ask.message.to_vec(),
            ask.hash,
            ask.payload.cloned(),
            public_key,
            ask.record.scheme,
        );
        match blocking(move || {
            Ok(crate::request::decode::from_wire(
                &m,
                h,
                p.as_ref(),
                &pk,
                scheme,
            ))
        })
        .await?
        {
            Ok(d) => d,
            Err(e) => return Ok(Err(Refusal::Declined(e.to_string()))),
        }
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
        )
        .await?
        {
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
/// signed here before.
pub(crate) async fn known(
    node: &Arc<Node>,
    ask: &Ask<'_>,
    a: &Authenticated,
) -> Result<Option<Refusal>, ApiError> {
    let key_id = &ask.record.key_id;
    if let Some(client) = &a.client {
        match crate::request::retry::check_request_id(
            node,
            key_id,
            ask.request_id,
            &client.name,
            a.request,
        )
        .await
        {
            Err(ApiError::Conflict(m)) => {
                return Ok(Some(Refusal::Conflict(format!("{}: {m}", node.cfg().name))))
            }
            r => r?,
        }
    }
    if crate::request::retry::signed_here(node, key_id, &a.request_id, &a.decoded.digest).await? {
        return Ok(Some(Refusal::AlreadySigned(format!(
            "{} signed this request before",
            node.cfg().name
        ))));
    }
    Ok(None)
}

/// After the policy allowed it: binds the client's request id here.
pub(crate) async fn bind(
    node: &Arc<Node>,
    ask: &Ask<'_>,
    a: &Authenticated,
) -> Result<Option<Refusal>, ApiError> {
    let Some(client) = &a.client else {
        return Ok(None);
    };
    match crate::request::retry::bind_request_id(
        node,
        &ask.record.key_id,
        ask.request_id,
        &client.name,
        a.request,
    )
    .await
    {
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
/// replays.
pub(crate) async fn judge(
    node: &Arc<Node>,
    from: &Party,
    ask: &Ask<'_>,
    a: &Authenticated,
) -> Result<Result<Option<crate::policy::spend::Reservation>, Refusal>, ApiError> {
    let Some(client) = &a.client else {
        return Ok(Ok(None));
    };
    match crate::protocol::approve::check_policy(
        node,
        &client.name,
        &ask.record.key_id,
        ask.request_id,
        &a.decoded,
        format!("co-signer for {}", from.name),
    )
    .await
    {
        Ok(reservation) => Ok(Ok(reservation)),
        Err(e @ ApiError::Policy { .. }) => Ok(Err(Refusal::Denied(e.to_string()))),
        Err(e) => Err(e),
    }
}

/// Loads a key and checks a signer set sent by peer `from`: the key's
/// threshold of distinct ascending indices, including both of us.
pub(crate) async fn key_and_signers(
    node: &Arc<Node>,
    from: &Party,
    key_id: &str,
    signers: &[u32],
) -> Result<Result<(keygen::record::KeyRecord, Vec<u16>), String>, ApiError> {
    if keygen::record::check_key_id(key_id).is_err() {
        return Ok(Err("invalid key id".into()));
    }
    let (n, k) = (node.clone(), key_id.to_owned());
    let Some(record) =
        blocking(move || crate::protocol::records::load_key_record(n.store(), &k)).await?
    else {
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
