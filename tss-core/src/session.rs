//! Sessions: execution ids, and the bridge between signed envelopes and a
//! `round-based` delivery.
//!
//! Each protocol run has a [`SessionInfo`]: its id (the CGGMP24 execution id),
//! protocol, our index and the pinned identities of all parties, in protocol
//! index order. [`delivery`] turns a channel of envelopes (as received from the
//! transport, tagged with the identity the transport authenticated) into the
//! `Stream`/`Sink` pair an engine runs on. Every incoming envelope is checked
//! here, in order, before its payload reaches the engine:
//!
//! 1. it belongs to this session and protocol;
//! 2. its sender index is a party of the session other than us, and that
//!    party's identity is the one the transport (mutual TLS) authenticated;
//! 3. it is broadcast or addressed to us;
//! 4. its sequence number is the next one expected from that sender on that
//!    stream (each sender numbers its broadcasts, and its p2p messages to each
//!    recipient, from 0): duplicates, replays and gaps are refused;
//! 5. its Ed25519 signature verifies under the sender's pinned identity;
//! 6. the payload deserializes as a message of the protocol.
//!
//! A failed check ends the session with a [`DeliveryError`] naming the culprit.
//! Reliable broadcast is enforced by the engines themselves (CGGMP24's echo
//! round), which stays switched on.

use std::collections::HashMap;
use std::sync::Arc;

use futures::channel::mpsc;
use futures::{SinkExt, Stream, StreamExt};
use round_based::{Incoming, MessageDestination, MessageType, Outgoing};
use serde::{de::DeserializeOwned, Serialize};
use sha2::{Digest, Sha256};

use crate::envelope::{Envelope, Protocol};
use crate::identity::{IdentityKey, PartyId};

/// Static facts about one protocol run.
#[derive(Clone, Debug)]
pub struct SessionInfo {
    /// Session id; also the CGGMP24 execution id.
    pub id: [u8; 32],
    /// Protocol run in this session.
    pub protocol: Protocol,
    /// Our index among `parties`.
    pub me: u16,
    /// Identities of the parties, in protocol index order.
    pub parties: Vec<PartyId>,
}

/// An envelope as the transport received it, with the identity the transport
/// authenticated (from the TLS peer certificate).
#[derive(Debug)]
pub struct Received {
    /// Decoded (not yet verified) envelope.
    pub envelope: Envelope,
    /// Identity of the authenticated transport peer.
    pub from: PartyId,
}

/// A session ended because of a message, or the transport failed.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum DeliveryError {
    /// A party sent something invalid.
    #[error("party {culprit} misbehaved: {reason}")]
    Misbehaved {
        /// Index of the party at fault.
        culprit: u16,
        /// What was wrong.
        reason: String,
    },
    /// Outgoing messages can no longer be sent (session torn down).
    #[error("session transport closed")]
    Closed,
    /// A message could not be encoded (a bug).
    #[error("cannot encode a protocol message: {0}")]
    Encode(String),
}

/// Domain-separated hash of length-prefixed parts: the one way ids are made.
pub fn derive_id(domain: &str, parts: &[&[u8]]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update((domain.len() as u32).to_be_bytes());
    h.update(domain.as_bytes());
    for p in parts {
        h.update((p.len() as u64).to_be_bytes());
        h.update(p);
    }
    h.finalize().into()
}

/// Execution id of a signing run: bound to the key, the signer set (keygen
/// indices), the client's request id and the digest being signed.
pub fn sign_execution_id(
    key_id: &str,
    signers: &[u16],
    request_id: &[u8],
    digest: &[u8; 32],
) -> [u8; 32] {
    let signers: Vec<u8> = signers.iter().flat_map(|s| s.to_be_bytes()).collect();
    derive_id(
        "tss/sign/v1",
        &[key_id.as_bytes(), &signers, request_id, digest],
    )
}

/// Execution id of a presign run, which is also the presignature's id:
/// bound to the key, the signer pair (keygen indices) and a fresh nonce.
pub fn presign_execution_id(key_id: &str, signers: &[u16], nonce: &[u8; 32]) -> [u8; 32] {
    let signers: Vec<u8> = signers.iter().flat_map(|s| s.to_be_bytes()).collect();
    derive_id("tss/presign/v1", &[key_id.as_bytes(), &signers, nonce])
}

/// Identifier of a signing request, independent of the signer pair: a
/// request that was signed once is refused by every party that signed it.
pub fn sign_request_id(key_id: &str, request_id: &[u8], digest: &[u8; 32]) -> [u8; 32] {
    derive_id(
        "tss/sign-request/v1",
        &[key_id.as_bytes(), request_id, digest],
    )
}

/// Identifier of a party set: the hash of its sorted identities.
pub fn party_set_id(parties: &[PartyId]) -> [u8; 32] {
    let mut sorted = parties.to_vec();
    sorted.sort();
    let bytes: Vec<u8> = sorted.iter().flat_map(|p| p.0).collect();
    derive_id("tss/party-set/v1", &[&bytes])
}

/// Execution id of an aux-info run for a party set (fresh `nonce` per run).
pub fn aux_execution_id(party_set: &[u8; 32], nonce: &[u8; 32]) -> [u8; 32] {
    derive_id("tss/aux/v1", &[party_set, nonce])
}

/// Execution id of a keygen run.
pub fn keygen_execution_id(key_id: &str, party_set: &[u8; 32], nonce: &[u8; 32]) -> [u8; 32] {
    derive_id("tss/keygen/v1", &[key_id.as_bytes(), party_set, nonce])
}

fn check(
    info: &SessionInfo,
    next_seq: &mut HashMap<(u16, bool), u32>,
    r: &Received,
) -> Result<(), DeliveryError> {
    let e = &r.envelope;
    let n = info.parties.len() as u16;
    // The transport-authenticated peer is the one we can blame.
    let transport_index = info
        .parties
        .iter()
        .position(|p| *p == r.from)
        .map(|i| i as u16);
    let blame = |reason: &str| DeliveryError::Misbehaved {
        culprit: transport_index.unwrap_or(e.sender),
        reason: reason.to_owned(),
    };
    let Some(from_index) = transport_index else {
        return Err(blame("transport peer is not a party of this session"));
    };
    if e.session_id != info.id {
        return Err(blame("envelope of another session"));
    }
    if e.protocol != info.protocol {
        return Err(blame("envelope of another protocol"));
    }
    if e.sender >= n || e.sender == info.me || e.sender != from_index {
        return Err(blame("sender index does not match the authenticated peer"));
    }
    if let Some(to) = e.recipient {
        if to != info.me {
            return Err(blame("p2p message addressed to another party"));
        }
    }
    let expected = next_seq
        .entry((e.sender, e.recipient.is_some()))
        .or_insert(0);
    if e.seq != *expected {
        return Err(blame(&format!(
            "sequence number {} where {} was expected (duplicate, replay or gap)",
            e.seq, expected
        )));
    }
    e.verify(&info.parties[usize::from(e.sender)])
        .map_err(|err| blame(&err.to_string()))?;
    *expected += 1;
    Ok(())
}

/// The incoming half of a session's delivery.
pub type IncomingStream<M> =
    std::pin::Pin<Box<dyn Stream<Item = Result<Incoming<M>, DeliveryError>> + Send>>;
/// The outgoing half of a session's delivery.
pub type OutgoingSink<M> =
    std::pin::Pin<Box<dyn futures::Sink<Outgoing<M>, Error = DeliveryError> + Send>>;

/// Keeps a copy of every envelope a session sends, and of every envelope it
/// accepted after all checks: the party's own view of a run, from which
/// keygen transcripts are built.
#[derive(Clone, Default)]
pub struct Recorder(Arc<std::sync::Mutex<Vec<Envelope>>>);

impl Recorder {
    fn push(&self, e: &Envelope) {
        if let Ok(mut v) = self.0.lock() {
            v.push(e.clone());
        }
    }

    /// The envelopes recorded so far, in the order they were sent or accepted.
    pub fn take(&self) -> Vec<Envelope> {
        self.0
            .lock()
            .map(|mut v| std::mem::take(&mut *v))
            .unwrap_or_default()
    }
}

/// Builds a `round-based` delivery for a session.
///
/// `inbound` carries envelopes the transport received for this session;
/// `outbound` receives the signed envelopes to send (a broadcast envelope goes
/// to every other party, a p2p one to its recipient). With a `recorder`,
/// every envelope sent and every envelope accepted is also kept there.
pub fn delivery<M>(
    info: Arc<SessionInfo>,
    key: Arc<IdentityKey>,
    inbound: mpsc::Receiver<Received>,
    outbound: mpsc::UnboundedSender<Envelope>,
    recorder: Option<Recorder>,
) -> (IncomingStream<M>, OutgoingSink<M>)
where
    M: Serialize + DeserializeOwned + Send + 'static,
{
    let in_info = info.clone();
    let in_recorder = recorder.clone();
    let mut next_seq = HashMap::new();
    let mut msg_id = 0u64;
    let incoming = inbound.map(move |r| {
        check(&in_info, &mut next_seq, &r)?;
        let msg: M = crate::cbor::decode_cbor(&r.envelope.payload).map_err(|e| {
            DeliveryError::Misbehaved {
                culprit: r.envelope.sender,
                reason: format!("payload is not a valid protocol message: {e}"),
            }
        })?;
        if let Some(rec) = &in_recorder {
            rec.push(&r.envelope);
        }
        msg_id += 1;
        Ok(Incoming {
            id: msg_id,
            sender: r.envelope.sender,
            msg_type: if r.envelope.recipient.is_some() {
                MessageType::P2P
            } else {
                MessageType::Broadcast
            },
            msg,
        })
    });
    let mut broadcast_seq = 0u32;
    let mut p2p_seq: HashMap<u16, u32> = HashMap::new();
    let outgoing =
        outbound
            .sink_map_err(|_| DeliveryError::Closed)
            .with(move |out: Outgoing<M>| {
                let mut payload = Vec::new();
                let r = ciborium::into_writer(&out.msg, &mut payload)
                    .map_err(|e| DeliveryError::Encode(e.to_string()))
                    .map(|()| {
                        let recipient = match out.recipient {
                            MessageDestination::AllParties => None,
                            MessageDestination::OneParty(p) => Some(p),
                        };
                        let seq = match recipient {
                            None => &mut broadcast_seq,
                            Some(r) => p2p_seq.entry(r).or_insert(0),
                        };
                        let env = Envelope::seal(
                            &key,
                            info.id,
                            info.protocol,
                            *seq,
                            info.me,
                            recipient,
                            payload,
                        );
                        *seq += 1;
                        if let Some(r) = &recorder {
                            r.push(&env);
                        }
                        env
                    });
                futures::future::ready(r)
            });
    (Box::pin(incoming), Box::pin(outgoing))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn setup() -> (Arc<SessionInfo>, Vec<IdentityKey>) {
        let keys: Vec<_> = (0..3).map(|_| IdentityKey::generate()).collect();
        let info = Arc::new(SessionInfo {
            id: [1; 32],
            protocol: Protocol::Sign,
            me: 0,
            parties: keys.iter().map(|k| k.party_id()).collect(),
        });
        (info, keys)
    }

    fn env(keys: &[IdentityKey], sender: u16, seq: u32, sid: [u8; 32]) -> Envelope {
        let mut payload = Vec::new();
        ciborium::into_writer(&42u32, &mut payload).unwrap();
        Envelope::seal(
            &keys[usize::from(sender)],
            sid,
            Protocol::Sign,
            seq,
            sender,
            None,
            payload,
        )
    }

    async fn first(
        info: &Arc<SessionInfo>,
        keys: &[IdentityKey],
        items: Vec<Received>,
    ) -> Vec<Result<u32, DeliveryError>> {
        let (mut tx, rx) = mpsc::channel(16);
        let (otx, _orx) = mpsc::unbounded();
        let k = Arc::new(IdentityKey::from_secret(&keys[0].to_secret()).unwrap());
        let (inc, _out) = delivery::<u32>(info.clone(), k, rx, otx, None);
        for i in items {
            tx.send(i).await.unwrap();
        }
        drop(tx);
        inc.map(|r| r.map(|i| i.msg)).collect().await
    }

    #[tokio::test]
    async fn delivery__should_pass_valid_and_blame_replays_and_impostors() {
        let (info, keys) = setup();
        let p = |i: usize| keys[i].party_id();
        let got = first(
            &info,
            &keys,
            vec![
                Received {
                    envelope: env(&keys, 1, 0, [1; 32]),
                    from: p(1),
                },
                Received {
                    envelope: env(&keys, 1, 0, [1; 32]),
                    from: p(1),
                },
            ],
        )
        .await;
        assert_eq!(got[0], Ok(42));
        assert!(
            matches!(&got[1], Err(DeliveryError::Misbehaved { culprit: 1, reason }) if reason.contains("sequence"))
        );

        // Party 2 relays an envelope signed by party 1: blamed on 2.
        let got = first(
            &info,
            &keys,
            vec![Received {
                envelope: env(&keys, 1, 0, [1; 32]),
                from: p(2),
            }],
        )
        .await;
        assert!(matches!(
            &got[0],
            Err(DeliveryError::Misbehaved { culprit: 2, .. })
        ));

        // Another session's message.
        let got = first(
            &info,
            &keys,
            vec![Received {
                envelope: env(&keys, 1, 0, [9; 32]),
                from: p(1),
            }],
        )
        .await;
        assert!(
            matches!(&got[0], Err(DeliveryError::Misbehaved { culprit: 1, reason }) if reason.contains("another session"))
        );

        // Forged signature.
        let mut e = env(&keys, 1, 0, [1; 32]);
        e.signature = keys[2].sign(&e.signed_bytes());
        let got = first(
            &info,
            &keys,
            vec![Received {
                envelope: e,
                from: p(1),
            }],
        )
        .await;
        assert!(
            matches!(&got[0], Err(DeliveryError::Misbehaved { culprit: 1, reason }) if reason.contains("signature"))
        );
    }
}
