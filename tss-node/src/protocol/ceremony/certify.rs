//! The key's certificate, both sides: the coordinator collects the parties'
//! views, has every party certify the key, has the key sign its
//! certificate and distributes the transcript ([`super::transcript`] holds
//! the records and checks).

use std::sync::Arc;
use std::time::{Duration, Instant};

use ::keygen::record::KeyRecord;
use proto::v1 as pb;
use tss_core::ecdsa::sign::HashAlgo;

use crate::error::{blocking, ApiError};
use crate::protocol::approve::Release;
use crate::protocol::ceremony::Progress;
use crate::protocol::sign::{sign_full, SignJob, Wire};
use crate::protocol::{call_peer, key_peers, progress, Attempt, PeerRpc};
use crate::request::retry::claim_fresh_request;
use crate::request::{to_sign, Hashing};
use crate::state::Node;

/// After keygen, as its coordinator: completes the transcript with every
/// party, has every party certify the key, has the key sign the certificate,
/// and stores the verified transcript file here and at the peers
/// ([`crate::transcript`] lists the steps). Fails only if this node cannot
/// produce a verified file; a peer that cannot store it is reported.
pub(crate) async fn certify_key(
    node: &Arc<Node>,
    record: &KeyRecord,
    p: &Progress,
    started: Instant,
) -> Result<(), ApiError> {
    let peers = key_peers(node, record)?;
    progress(
        p,
        started,
        "transcript",
        "collecting the point-to-point envelopes the other parties sent each other".into(),
    )
    .await;
    let sessions = collect_transcript(node, record, &peers).await?;
    let root = sessions.root();
    progress(
        p,
        started,
        "certificate",
        format!(
            "transcript complete ({} aux-info and {} keygen envelopes, root {}); every party checks it and signs the key certificate",
            sessions.aux.len(),
            sessions.keygen.len(),
            hex::encode(root)
        ),
    )
    .await;
    let (n, rec) = (node.clone(), record.clone());
    let share = blocking(move || crate::protocol::records::load_any_share(n.store(), &rec)).await?;
    let (body, signatures) = certify_everywhere(node, record, &peers, &sessions, &share).await?;
    progress(
        p,
        started,
        "certificate",
        format!(
            "all {n} parties signed the same certificate; the key signs it ({}-of-{n}, full protocol)",
            record.threshold,
            n = signatures.len(),
        ),
    )
    .await;
    let key_signature = sign_certificate(node, record, &body, share).await?;
    progress(
        p,
        started,
        "transcript",
        "the key signed its certificate; checking the signatures and storing the transcript".into(),
    )
    .await;
    let (n, rec, b, sigs) = (
        node.clone(),
        record.clone(),
        body.clone(),
        signatures.clone(),
    );
    let size = blocking(move || {
        let at = |e: ::keygen::ceremony::CeremonyError| {
            ApiError::Internal(format!("at {}: {e}", n.cfg().name))
        };
        crate::protocol::ceremony::transcript::check_signatures(&rec, &b, &sigs, &key_signature)
            .map_err(at)?;
        let file =
            crate::protocol::ceremony::transcript::assemble(&sessions, &b, &sigs, key_signature);
        crate::protocol::ceremony::transcript::store_file(&n, &rec.key_id, &file)?;
        Ok(file.len())
    })
    .await?;
    progress(
        p,
        started,
        "transcript",
        format!(
            "transcript stored at {} ({size} bytes, root {}); sending the signatures to the other parties",
            node.cfg().name,
            hex::encode(root)
        ),
    )
    .await;
    let req = pb::StoreTranscriptRequest {
        key_id: record.key_id.clone(),
        certificate_body: body,
        signatures,
        key_signature: key_signature.to_vec(),
    };
    for detail in distribute_transcript(node, &peers, req).await {
        progress(p, started, "transcript", detail).await;
    }
    Ok(())
}

/// Step 2: asks every peer for the point-to-point envelopes it sent to the
/// others, and completes this node's views of both runs with them.
pub(crate) async fn collect_transcript(
    node: &Arc<Node>,
    record: &KeyRecord,
    peers: &[(u16, String, PeerRpc)],
) -> Result<crate::protocol::ceremony::transcript::Sessions, ApiError> {
    // A peer may still be storing its share: it waits up to the keygen timeout.
    let wait =
        Duration::from_millis(node.cfg().timeouts.keygen_ms + node.cfg().timeouts.propose_ms);
    let parts = futures::future::join_all(peers.iter().map(|(_, name, c)| {
        let mut c = c.clone();
        let req = pb::TranscriptPartRequest {
            key_id: record.key_id.clone(),
        };
        async move {
            call_peer(node, name, wait, c.transcript_part(req))
                .await
                .map_err(|e| e.to_string())
                .and_then(|l| {
                    ::keygen::transcript::decode_entry_list(&l.entries)
                        .map_err(|e| format!("{name}: its transcript part does not decode: {e}"))
                })
        }
    }))
    .await;
    let mut extra = Vec::new();
    let mut failures = Vec::new();
    for r in parts {
        match r {
            Ok(v) => extra.extend(v),
            Err(e) => failures.push(e),
        }
    }
    if !failures.is_empty() {
        return Err(ApiError::Unavailable(format!(
            "cannot collect the transcript: {}",
            failures.join("; ")
        )));
    }
    let (n, rec) = (node.clone(), record.clone());
    blocking(move || {
        let mine = crate::protocol::ceremony::transcript::load_views(&n, &rec)?;
        crate::protocol::ceremony::transcript::complete(&rec, mine, extra).map_err(|e| {
            ApiError::Unavailable(format!("the collected transcript does not check: {e}"))
        })
    })
    .await
}

/// Step 3: sends every peer the envelopes it did not see and one
/// certificate time; builds and signs this node's own certificate; requires
/// every peer's certificate to be the same bytes, signed by its identity.
/// Returns the certificate and every party's signature (index order).
pub(crate) async fn certify_everywhere(
    node: &Arc<Node>,
    record: &KeyRecord,
    peers: &[(u16, String, PeerRpc)],
    sessions: &crate::protocol::ceremony::transcript::Sessions,
    share: &crate::protocol::records::AnyShare,
) -> Result<(Vec<u8>, Vec<Vec<u8>>), ApiError> {
    use ::keygen::transcript::{encode_entries, SignedCertificate};
    let created_unix = crate::protocol::ceremony::transcript::now_unix();
    let cert = crate::protocol::ceremony::transcript::certificate(
        node,
        record,
        share,
        sessions.root(),
        created_unix,
    )?;
    let own = SignedCertificate::sign(node.identity(), record.my_index, &cert);
    let body = own.body.to_vec();
    let ids = record
        .party_ids()
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    let timeout = Duration::from_millis(node.cfg().timeouts.propose_ms.max(1000) * 4);
    let replies = futures::future::join_all(peers.iter().map(|(j, name, c)| {
        let mut c = c.clone();
        let req = pb::CertifyRequest {
            key_id: record.key_id.clone(),
            missing_entries: encode_entries(&sessions.unseen_by(*j)),
            created_unix,
        };
        async move {
            if req.missing_entries.len() + 1024 > crate::transport::peers::MAX_PEER_MESSAGE {
                return Err(format!(
                    "{name}: the envelopes it lacks ({} bytes) exceed the peer message limit",
                    req.missing_entries.len()
                ));
            }
            call_peer(node, name, timeout, c.certify_key(req))
                .await
                .map_err(|e| e.to_string())
        }
    }))
    .await;
    let mut signatures = vec![Vec::new(); ids.len()];
    signatures[usize::from(record.my_index)] = own.signature.to_vec();
    let mut failures = Vec::new();
    for ((j, name, _), r) in peers.iter().zip(replies) {
        let r = match r {
            Ok(r) => r,
            Err(e) => {
                failures.push(e);
                continue;
            }
        };
        if r.certificate_body != body {
            failures.push(format!(
                "{name} certifies a different key certificate ({})",
                crate::protocol::ceremony::transcript::difference(&body, &r.certificate_body)
            ));
            continue;
        }
        let signed = SignedCertificate {
            party: *j,
            body: r.certificate_body.into(),
            signature: r.signature.clone().into(),
        };
        if signed.verify(&ids[usize::from(*j)]).is_err() {
            failures.push(format!(
                "{name}'s certificate signature does not verify under its pinned identity"
            ));
            continue;
        }
        signatures[usize::from(*j)] = r.signature;
    }
    if !failures.is_empty() {
        return Err(ApiError::Unavailable(format!(
            "the parties did not all certify the same key: {}",
            failures.join("; ")
        )));
    }
    let (n, rec, s, b) = (node.clone(), record.clone(), sessions.clone(), body.clone());
    blocking(move || {
        crate::protocol::ceremony::transcript::store_certified(n.store(), &rec, &s, &b)
    })
    .await?;
    Ok((body, signatures))
}

/// Step 5: sends the signatures to every peer, which checks them and stores
/// the same file. One progress line per peer; failures do not fail keygen
/// (this node holds the file).
pub(crate) async fn distribute_transcript(
    node: &Arc<Node>,
    peers: &[(u16, String, PeerRpc)],
    req: pb::StoreTranscriptRequest,
) -> Vec<String> {
    let timeout = Duration::from_millis(node.cfg().timeouts.propose_ms.max(1000) * 4);
    let stored = futures::future::join_all(peers.iter().map(|(_, name, c)| {
        let mut c = c.clone();
        let req = req.clone();
        async move {
            call_peer(node, name, timeout, c.store_transcript(req))
                .await
                .map(|_| name.clone())
                .map_err(|e| e.to_string())
        }
    }))
    .await;
    stored
        .into_iter()
        .map(|r| match r {
            Ok(name) => format!("{name} checked the signatures and stored the transcript"),
            Err(e) => {
                tracing::warn!(key_id = %req.key_id, error = %e, "a party did not store the transcript");
                format!(
                    "{e} (not stored there; export the transcript from {})",
                    node.cfg().name
                )
            }
        })
        .collect()
}

/// The key's threshold signature (`r || s`, low S) over its certificate:
/// SHA-256 of the certificate domain and `body`, by the full protocol with
/// one co-signer (each co-signer signs only the certificate it signed).
pub(crate) async fn sign_certificate(
    node: &Arc<Node>,
    record: &KeyRecord,
    body: &[u8],
    share: crate::protocol::records::AnyShare,
) -> Result<[u8; 64], ApiError> {
    let message = ::keygen::transcript::cert_signed_bytes(body);
    let (data, digest) = to_sign(Hashing::Node(HashAlgo::Sha256), &message)?;
    if digest != ::keygen::transcript::certificate_digest(body) {
        return Err(ApiError::Internal(
            "the certificate digest differs from the signed one (a bug)".into(),
        ));
    }
    let request_id = crate::protocol::ceremony::transcript::CERTIFICATE_REQUEST_ID.to_vec();
    let _claim = claim_fresh_request(node, &record.key_id, &request_id, &digest).await?;
    let job = SignJob {
        record: record.clone(),
        public_key: record
            .public_key_bytes()
            .map_err(|e| ApiError::Internal(e.to_string()))?,
        wire: Wire {
            request_id: request_id.clone(),
            message,
            hash: pb::HashAlgorithm::Sha256 as i32,
            payload: None,
            authorization: None,
        },
        request_id,
        digest,
        message: digest.to_vec(),
        release: Release::default(),
        partial_left: Default::default(),
        started: Instant::now(),
    };
    let mut failures = Vec::new();
    for (cand, name, mut rpc) in key_peers(node, record)? {
        let signed = match &share {
            crate::protocol::records::AnyShare::Ecdsa(s) => {
                sign_full(node, &job, data, cand, &name, &mut rpc, s.clone()).await
            }
            crate::protocol::records::AnyShare::Frost(s) => {
                crate::protocol::frost::sign::sign_full(
                    node,
                    &job,
                    cand,
                    &name,
                    &mut rpc,
                    s.clone(),
                )
                .await
            }
        };
        match signed {
            Ok(resp) => {
                // Recorded as signed before our partial signature left.
                let rs: [u8; 64] = [resp.r.as_slice(), resp.s.as_slice()]
                    .concat()
                    .try_into()
                    .map_err(|_| ApiError::Internal("signature is not r || s".into()))?;
                return Ok(rs);
            }
            Err(
                Attempt::Failed(why)
                | Attempt::Denied(why)
                | Attempt::Busy(why)
                | Attempt::AlreadySigned(why)
                | Attempt::Conflict(why),
            ) => failures.push(why),
            Err(Attempt::Fatal(e)) => return Err(e),
        }
    }
    Err(ApiError::Unavailable(format!(
        "the key could not sign its certificate: {}",
        failures.join("; ")
    )))
}
