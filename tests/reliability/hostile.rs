//! Hostile peers (issue #6, "Hostile peers and clients").
//!
//! A real cluster (three `tss-node` processes) makes a key; then charlie's
//! process is killed and this test process plays charlie with charlie's own
//! operator files: its sealed store (identity key, TLS key, key share), its
//! certificate and its passphrase, loaded with the daemon's own code
//! (`tss_node::run::open_node`). The hostile charlie
//!
//! - serves the Peer service on charlie's address with charlie's TLS
//!   identity, so that the honest coordinators' proposals reach it, runs the
//!   real signing engine with charlie's share, and tampers with what the
//!   engine sends (each session's attack is named in the signed message);
//! - calls alice's Peer service with charlie's TLS client identity, proposing
//!   sessions it then never serves;
//! - takes part in aux-info and keygen runs, waiting for their start like a
//!   real party, and tampers with what it sends there (a huge or over-long
//!   Paillier modulus, invalid proofs).
//!
//! For every case: the honest node ends that session and names charlie (in
//! its log, and in the status charlie's calls get); it stays up
//! ([`Cluster::assert_no_panics`]); the client's Sign through it still
//! succeeds through the third party (bob); and every signature any client
//! receives verifies with k256.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::channel::mpsc;
use futures::StreamExt;
use proto::v1 as pb;
use proto::v1::peer_client::PeerClient;
use proto::v1::peer_server::{Peer, PeerServer};
use sha2::Digest;
use tonic::transport::Channel;
use tonic::{Code, Request, Response, Status};
use tss_core::ecdsa::sign::{Msg, ToSign};
use tss_core::ecdsa::KeyShare;
use tss_core::envelope::{Envelope, Protocol};
use tss_core::identity::IdentityKey;
use tss_core::session::{self, Received, SessionInfo};
use tss_node::testing::Node;
use tss_node::transport::peers::MAX_PEER_MESSAGE;

use crate::harness::{assert_valid, sign_request, step, Cluster};

/// Charlie: the third party of the demo cluster.
pub(crate) const CHARLIE: usize = 2;
/// Name of the party this test plays.
pub(crate) const CHARLIE_NAME: &str = tss_node::cluster::NAMES[CHARLIE];
/// One signing session's time limit in this cluster (the default).
const SIGN_MS: u64 = 30_000;
/// How a coordinator reports a session that hit [`SIGN_MS`].
const TIMED_OUT: &str = "timed out after 30000 ms";

/// What the hostile charlie does in a signing session it co-signs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Attack {
    /// Runs the protocol faithfully.
    Honest,
    /// Sends random bytes instead of its first envelope, then nothing.
    Garbage,
    /// Sends its first envelope cut short by 20 bytes, then nothing.
    Truncated,
    /// Its first envelope with a payload length field of 4 GiB - 1.
    HugeLengthPrefix,
    /// Its first envelope with a 200 KiB payload (the signing limit is
    /// 128 KiB), properly signed, then nothing.
    PayloadOverLimit,
    /// A 5 MiB gRPC message (the Peer service's limit is about 1 MiB), then
    /// nothing.
    OverTransportLimit,
    /// Its first envelope signed with a key other than charlie's identity.
    BadSignature,
    /// A valid envelope of an earlier session first, then the protocol.
    Replay,
    /// Its first envelope twice.
    Duplicate,
    /// Before anything else, a round-4 message (a made-up partial signature)
    /// for a round the session has not reached; then the protocol, with its
    /// broadcast sequence numbers shifted to fit.
    FutureRound,
    /// Round 1b with both range proofs (psi0 for K, psi1 for G) altered
    /// (re-signed properly).
    InvalidProofRound1,
    /// Round 1b with only the range proof psi0 altered (re-signed
    /// properly): see [`hostile__should_refuse_an_invalid_psi0_range_proof`].
    InvalidPsi0Only,
    /// Round 3 with the proof psi' altered (re-signed properly).
    InvalidProofRound3,
    /// Round 4 with its partial signature altered (re-signed properly).
    BadPartialSignature,
    /// Accepts the session and never sends anything.
    Stall,
    /// Runs the protocol but never sends its own partial signature (round
    /// 4): a coordinator that takes the co-signer's partial signature,
    /// completes the signature and gives the co-signer nothing.
    WithholdPartial,
}

impl Attack {
    const ALL: [Attack; 16] = [
        Attack::Honest,
        Attack::Garbage,
        Attack::Truncated,
        Attack::HugeLengthPrefix,
        Attack::PayloadOverLimit,
        Attack::OverTransportLimit,
        Attack::BadSignature,
        Attack::Replay,
        Attack::Duplicate,
        Attack::FutureRound,
        Attack::InvalidProofRound1,
        Attack::InvalidPsi0Only,
        Attack::InvalidProofRound3,
        Attack::BadPartialSignature,
        Attack::Stall,
        Attack::WithholdPartial,
    ];

    fn name(self) -> String {
        format!("{self:?}")
    }

    /// The attack a signed message asks for ("hostile <Attack> <nonce>").
    fn from_message(m: &[u8]) -> Attack {
        let text = String::from_utf8_lossy(m);
        let mut words = text.split(' ');
        if words.next() != Some("hostile") {
            return Attack::Honest;
        }
        let name = words.next().unwrap_or_default();
        Attack::ALL
            .into_iter()
            .find(|a| a.name() == name)
            .unwrap_or(Attack::Honest)
    }
}

/// What the hostile charlie does when asked to take part in aux-info and
/// keygen runs (set by each test; signing attacks are per message).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Ceremony {
    /// Declines them.
    Off,
    /// Says it lacks the proposed aux info (so the proposer starts an
    /// aux-info run), then runs aux-info with its round-2 Paillier modulus N
    /// replaced by a 20 001-bit number (over the integer size limit).
    AuxHugeModulus,
    /// The same with a 4 096-bit N (under the integer size limit, longer
    /// than an honest modulus).
    AuxLongModulus,
    /// The same, with its round-3 no-small-factor proof (Π_fac) altered.
    AuxInvalidProof,
    /// Runs aux-info faithfully, and keygen with its round-3 Schnorr proof
    /// altered.
    KeygenInvalidProof,
}

/// What the hostile charlie saw and did, for the assertions.
#[derive(Clone, Debug)]
enum Event {
    /// A party proposed a signing session to charlie.
    Proposed {
        from: String,
        session: [u8; 32],
        attack: Attack,
    },
    /// Charlie sent bytes to a party; the status it got.
    Sent {
        session: [u8; 32],
        what: &'static str,
        result: Result<(), (Code, String)>,
    },
    /// Charlie's own engine of a session ended.
    EngineEnded {
        session: [u8; 32],
        result: Result<(), String>,
    },
}

/// The status charlie got for bytes it sent.
type SendResult = Result<(), (Code, String)>;

/// The hostile charlie's state.
pub(crate) struct Hostile {
    pub(crate) node: Arc<Node>,
    pub(crate) record: keygen::record::KeyRecord,
    share: Arc<KeyShare>,
    pub(crate) inboxes: Mutex<HashMap<[u8; 32], mpsc::Sender<Received>>>,
    events: Mutex<Vec<Event>>,
    /// Envelopes charlie sent in honest sessions (for replays).
    sent_honestly: Mutex<Vec<Vec<u8>>>,
    /// Sessions charlie proposed and then never serves: what arrives for
    /// them is acknowledged and dropped.
    sinks: Mutex<std::collections::HashSet<[u8; 32]>>,
    ceremony: Mutex<Ceremony>,
    /// Aux-info and keygen runs charlie accepted, waiting for their start
    /// (as a real party, it must not send before the others registered).
    starts: Mutex<HashMap<[u8; 32], tokio::sync::oneshot::Sender<()>>>,
}

impl Hostile {
    fn event(&self, e: Event) {
        let short = |s: &[u8; 32]| hex::encode(&s[..4]);
        match &e {
            Event::Proposed {
                from,
                session,
                attack,
            } => eprintln!(
                "  [{CHARLIE_NAME}] {from} proposed session {}; attack {attack:?}",
                short(session)
            ),
            Event::Sent {
                session,
                what,
                result,
            } => eprintln!(
                "  [{CHARLIE_NAME}] session {}: sent {what}: {result:?}",
                short(session)
            ),
            Event::EngineEnded { session, result } => eprintln!(
                "  [{CHARLIE_NAME}] session {}: own engine ended: {result:?}",
                short(session)
            ),
        }
        self.events.lock().unwrap().push(e);
    }

    fn events(&self) -> Vec<Event> {
        self.events.lock().unwrap().clone()
    }

    /// The session a proposal with `attack` opened (`None` if none did).
    fn session_of(&self, attack: Attack, from: &str) -> Option<[u8; 32]> {
        self.events().into_iter().rev().find_map(|e| match e {
            Event::Proposed {
                from: f,
                session,
                attack: a,
            } if a == attack && f == from => Some(session),
            _ => None,
        })
    }

    fn sends(&self, session: [u8; 32]) -> Vec<(&'static str, SendResult)> {
        self.events()
            .into_iter()
            .filter_map(|e| match e {
                Event::Sent {
                    session: s,
                    what,
                    result,
                } if s == session => Some((what, result)),
                _ => None,
            })
            .collect()
    }

    fn engine_result(&self, session: [u8; 32]) -> Option<Result<(), String>> {
        self.events().into_iter().find_map(|e| match e {
            Event::EngineEnded { session: s, result } if s == session => Some(result),
            _ => None,
        })
    }

    /// How charlie's own engine ended in `session`, waiting up to `limit`
    /// for it: the coordinator may hand out the signature while charlie's
    /// engine still finishes its last round.
    pub(crate) async fn engine_end(
        &self,
        session: [u8; 32],
        limit: Duration,
    ) -> Option<Result<(), String>> {
        let until = Instant::now() + limit;
        loop {
            let r = self.engine_result(session);
            if r.is_some() || Instant::now() >= until {
                return r;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The calling party, authenticated by its pinned TLS certificate.
    fn caller<T>(&self, req: &Request<T>) -> Result<(String, tss_core::identity::PartyId), Status> {
        let fp = tss_node::transport::peer_fingerprint(req)
            .ok_or_else(|| Status::unauthenticated("no client certificate"))?;
        let p = self
            .node
            .peers()
            .by_fingerprint(&fp)
            .ok_or_else(|| Status::permission_denied("not a party"))?;
        Ok((p.name.clone(), p.id))
    }

    pub(crate) fn client_of(&self, name: &str) -> PeerClient<Channel> {
        self.node
            .peers()
            .all()
            .iter()
            .find(|p| p.name == name)
            .and_then(|p| p.client.clone())
            .expect("a peer of charlie")
    }

    /// Delivers `bytes` to a party (10 s at most) and records the status.
    async fn send(
        &self,
        client: &mut PeerClient<Channel>,
        session: [u8; 32],
        what: &'static str,
        bytes: Vec<u8>,
    ) {
        let r = tokio::time::timeout(
            Duration::from_secs(10),
            client.deliver(pb::EnvelopeBytes { envelope: bytes }),
        )
        .await;
        let result = match r {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(s)) => Err((s.code(), s.message().to_owned())),
            Err(_) => Err((Code::DeadlineExceeded, "no answer in 10 s".into())),
        };
        self.event(Event::Sent {
            session,
            what,
            result,
        });
    }

    /// Waits for charlie's engine of `session` to end, closes its inbox and
    /// records the outcome.
    async fn ended(
        &self,
        session: [u8; 32],
        done: tokio::sync::oneshot::Receiver<Result<(), String>>,
    ) {
        let result = done
            .await
            .unwrap_or_else(|_| Err("engine thread ended".into()));
        self.inboxes.lock().unwrap().remove(&session);
        self.event(Event::EngineEnded { session, result });
    }

    /// Charlie's part of one signing session, with `attack` applied to
    /// everything its engine sends to `to`.
    pub(crate) async fn run_session(
        self: Arc<Self>,
        info: SessionInfo,
        in_rx: mpsc::Receiver<Received>,
        signers: Vec<u16>,
        data: ToSign,
        to: String,
        attack: Attack,
    ) {
        let info = Arc::new(info);
        let (out_tx, mut out_rx) = mpsc::unbounded();
        let (inc, out) = session::delivery::<Msg>(
            info.clone(),
            self.node.identity().clone(),
            in_rx,
            out_tx,
            None,
        );
        let (done_tx, done_rx) = tokio::sync::oneshot::channel();
        let (eid, me, share) = (info.id, info.me, self.share.clone());
        // A plain thread: a stalled engine must not hold up the runtime's
        // shutdown; it ends when its inbox closes.
        std::thread::spawn(move || {
            let party = round_based::MpcParty::connected((inc, out));
            let r = futures::executor::block_on(tss_core::ecdsa::sign::run(
                &eid, me, &signers, &share, data, party,
            ));
            let _ = done_tx.send(r.map(|_| ()).map_err(|e| e.to_string()));
        });
        let mut client = self.client_of(&to);
        let mut tamper = Tamper::new(attack, self.node.identity().clone(), info.clone());
        while let Some(env) = out_rx.next().await {
            if attack == Attack::Honest {
                self.sent_honestly.lock().unwrap().push(env.encode());
            }
            let replay = self.sent_honestly.lock().unwrap().first().cloned();
            for (what, bytes) in tamper.apply(env, replay) {
                let mut c = if what == "5 MiB message" {
                    client.clone().max_encoding_message_size(16 << 20)
                } else {
                    client.clone()
                };
                self.send(&mut c, info.id, what, bytes).await;
            }
            client = self.client_of(&to);
        }
        self.ended(info.id, done_rx).await;
    }
}

impl Hostile {
    /// Charlie's part of an aux-info or keygen run (all three parties), its
    /// engine `run` on the real delivery, with `tamper` applied to every
    /// envelope it sends (broadcasts go to both other parties).
    async fn run_ceremony<M, F, Fut>(
        self: Arc<Self>,
        info: SessionInfo,
        in_rx: mpsc::Receiver<Received>,
        run: F,
        tamper: fn(&IdentityKey, Envelope) -> Envelope,
        start: tokio::sync::oneshot::Receiver<()>,
    ) where
        M: serde::Serialize + serde::de::DeserializeOwned + Send + 'static,
        F: FnOnce(
                round_based::MpcParty<M, (session::IncomingStream<M>, session::OutgoingSink<M>)>,
            ) -> Fut
            + Send
            + 'static,
        Fut: std::future::Future<Output = Result<(), String>>,
    {
        if tokio::time::timeout(Duration::from_secs(30), start)
            .await
            .is_err()
        {
            eprintln!("  [{CHARLIE_NAME}] a ceremony never started");
            return;
        }
        let info = Arc::new(info);
        let (out_tx, mut out_rx) = mpsc::unbounded();
        let (inc, out) = session::delivery::<M>(
            info.clone(),
            self.node.identity().clone(),
            in_rx,
            out_tx,
            None,
        );
        let (done_tx, done_rx) = tokio::sync::oneshot::channel();
        std::thread::spawn(move || {
            let party = round_based::MpcParty::connected((inc, out));
            let _ = done_tx.send(futures::executor::block_on(run(party)));
        });
        let peers: Vec<(u16, String)> = info
            .parties
            .iter()
            .enumerate()
            .filter(|(j, _)| *j != usize::from(info.me))
            .map(|(j, id)| {
                let name = self
                    .node
                    .peers()
                    .all()
                    .iter()
                    .find(|p| p.id == *id)
                    .map(|p| p.name.clone())
                    .expect("a party");
                (j as u16, name)
            })
            .collect();
        while let Some(env) = out_rx.next().await {
            let env = tamper(self.node.identity(), env);
            for (j, name) in &peers {
                if env.recipient.is_some_and(|r| r != *j) {
                    continue;
                }
                let mut c = self.client_of(name);
                self.send(&mut c, info.id, "ceremony envelope", env.encode())
                    .await;
            }
        }
        self.ended(info.id, done_rx).await;
    }

    /// Accepts an aux-info or keygen proposal: opens the session's inbox
    /// and runs charlie's part in the background.
    fn join_ceremony(self: &Arc<Self>, session: [u8; 32], keygen: bool) {
        let ceremony = *self.ceremony.lock().unwrap();
        let protocol = if keygen {
            Protocol::Keygen
        } else {
            Protocol::AuxInfo
        };
        let info = self.node.peers().ceremony_session(session, protocol);
        let (me, n) = (info.me, info.parties.len() as u16);
        let (in_tx, in_rx) = mpsc::channel(64);
        self.inboxes.lock().unwrap().insert(session, in_tx);
        let (start_tx, start) = tokio::sync::oneshot::channel();
        self.starts.lock().unwrap().insert(session, start_tx);
        let me2 = self.clone();
        if keygen {
            let tamper = match ceremony {
                Ceremony::KeygenInvalidProof => alter_keygen_proof,
                _ => keep,
            };
            tokio::spawn(me2.run_ceremony::<tss_core::ecdsa::keygen::Msg, _, _>(
                info,
                in_rx,
                move |party| async move {
                    tss_core::ecdsa::keygen::run(&session, me, n, 2, party)
                        .await
                        .map(|_| ())
                        .map_err(|e| e.to_string())
                },
                tamper,
                start,
            ));
        } else {
            let tamper = match ceremony {
                Ceremony::AuxHugeModulus => modulus_of_20001_bits,
                Ceremony::AuxLongModulus => modulus_of_4096_bits,
                Ceremony::AuxInvalidProof => alter_fac_proof,
                _ => keep,
            };
            let primes = self
                .node
                .primes()
                .take()
                .expect("charlie has prime sets left");
            tokio::spawn(me2.run_ceremony::<tss_core::ecdsa::aux::Msg, _, _>(
                info,
                in_rx,
                move |party| async move {
                    tss_core::ecdsa::aux::run(&session, me, n, primes, party)
                        .await
                        .map(|_| ())
                        .map_err(|e| e.to_string())
                },
                tamper,
                start,
            ));
        }
    }
}

fn keep(_: &IdentityKey, e: Envelope) -> Envelope {
    e
}

/// Aux-info round 2 with N replaced by 2^(bits - 1) + 1.
fn long_modulus(key: &IdentityKey, e: Envelope, bits: u32) -> Envelope {
    use cggmp24::key_refresh::msg::Msg as AuxMsg;
    let Ok(AuxMsg::Round2(mut d)) =
        tss_core::ecdsa::decode_cbor::<tss_core::ecdsa::aux::Msg>(&e.payload)
    else {
        return e;
    };
    let mut n = cggmp24::backend::Integer::one();
    n.set_bit(bits - 1, true);
    d.N = n;
    let mut payload = Vec::new();
    ciborium::into_writer(&tss_core::ecdsa::aux::Msg::Round2(d), &mut payload).expect("encode");
    reseal(key, &e, e.seq, payload)
}

fn modulus_of_20001_bits(key: &IdentityKey, e: Envelope) -> Envelope {
    long_modulus(key, e, 20_001)
}

fn modulus_of_4096_bits(key: &IdentityKey, e: Envelope) -> Envelope {
    long_modulus(key, e, 4_096)
}

/// Flips the last digit of the text at `path` (map keys) in a CBOR payload;
/// `None` if the payload has no such field.
fn alter_cbor_text(payload: &[u8], path: &[&str]) -> Option<Vec<u8>> {
    use ciborium::Value;
    let mut v: Value = ciborium::from_reader(payload).ok()?;
    let mut cur = &mut v;
    for key in path {
        let Value::Map(entries) = cur else {
            return None;
        };
        cur = entries
            .iter_mut()
            .find(|(k, _)| k.as_text() == Some(key))
            .map(|(_, v)| v)?;
    }
    let Value::Text(t) = cur else { return None };
    let last = t.pop()?;
    t.push(if last == '1' { '2' } else { '1' });
    let mut out = Vec::new();
    ciborium::into_writer(&v, &mut out).ok()?;
    Some(out)
}

/// Aux-info round 3 with the Π_fac proof's z1 altered.
fn alter_fac_proof(key: &IdentityKey, e: Envelope) -> Envelope {
    match alter_cbor_text(&e.payload, &["Round3", "fac_proof", "proof", "z1", "value"]) {
        Some(p) => reseal(key, &e, e.seq, p),
        None => e,
    }
}

/// Keygen round 3 with the Schnorr proof altered.
fn alter_keygen_proof(key: &IdentityKey, e: Envelope) -> Envelope {
    use cggmp24::keygen::ThresholdMsg;
    let Ok(ThresholdMsg::Round3(mut m)) =
        tss_core::ecdsa::decode_cbor::<tss_core::ecdsa::keygen::Msg>(&e.payload)
    else {
        return e;
    };
    m.sch_proof.0 += cggmp24::generic_ec::Scalar::one();
    let mut payload = Vec::new();
    ciborium::into_writer(&tss_core::ecdsa::keygen::Msg::Round3(m), &mut payload).expect("encode");
    reseal(key, &e, e.seq, payload)
}

/// Rewrites charlie's outgoing envelopes for one attack.
struct Tamper {
    attack: Attack,
    key: Arc<IdentityKey>,
    info: Arc<SessionInfo>,
    /// Charlie has stopped sending.
    silent: bool,
    /// The attack's one-off step is done.
    done: bool,
}

fn reseal(key: &IdentityKey, e: &Envelope, seq: u32, payload: Vec<u8>) -> Envelope {
    Envelope::seal(
        key,
        e.session_id,
        e.protocol,
        seq,
        e.sender,
        e.recipient,
        payload,
    )
}

fn decode_msg(e: &Envelope) -> Msg {
    ciborium::from_reader(e.payload.as_slice()).expect("charlie's own engine message decodes")
}

fn encode_msg(m: &Msg) -> Vec<u8> {
    let mut out = Vec::new();
    ciborium::into_writer(m, &mut out).expect("encode a message");
    out
}

impl Tamper {
    fn new(attack: Attack, key: Arc<IdentityKey>, info: Arc<SessionInfo>) -> Self {
        Tamper {
            attack,
            key,
            info,
            silent: attack == Attack::Stall,
            done: false,
        }
    }

    /// What to send for `env` (in order), each with a label.
    fn apply(&mut self, env: Envelope, replay: Option<Vec<u8>>) -> Vec<(&'static str, Vec<u8>)> {
        use cggmp24::generic_ec::Scalar;
        if self.silent {
            return vec![];
        }
        let first = !self.done;
        self.done = true;
        let honest = env.encode();
        match self.attack {
            Attack::Honest | Attack::Stall => vec![("envelope", honest)],
            _ if !first
                && !matches!(
                    self.attack,
                    Attack::FutureRound
                        | Attack::InvalidProofRound1
                        | Attack::InvalidPsi0Only
                        | Attack::InvalidProofRound3
                        | Attack::BadPartialSignature
                        | Attack::WithholdPartial
                ) =>
            {
                vec![("envelope", honest)]
            }
            Attack::Garbage => {
                self.silent = true;
                let junk: Vec<u8> = (0..600).map(|_| rand::random::<u8>()).collect();
                vec![("garbage bytes", junk)]
            }
            Attack::Truncated => {
                self.silent = true;
                vec![("truncated envelope", honest[..honest.len() - 20].to_vec())]
            }
            Attack::HugeLengthPrefix => {
                self.silent = true;
                let mut b = honest;
                b[46..50].copy_from_slice(&u32::MAX.to_be_bytes());
                vec![("huge length prefix", b)]
            }
            Attack::PayloadOverLimit => {
                self.silent = true;
                let mut payload = env.payload.clone();
                payload.resize(200 << 10, 0);
                assert!(payload.len() > Protocol::Sign.max_payload());
                let e = reseal(&self.key, &env, env.seq, payload);
                vec![("payload over the limit", e.encode())]
            }
            Attack::OverTransportLimit => {
                self.silent = true;
                let mut b = honest;
                b.resize(5 << 20, 0x5a);
                vec![("5 MiB message", b)]
            }
            Attack::BadSignature => {
                self.silent = true;
                let mut e = env;
                e.signature = IdentityKey::generate().sign(&e.signed_bytes());
                vec![("envelope signed by another key", e.encode())]
            }
            Attack::Replay => {
                let old = replay.expect("an earlier honest session to replay from");
                vec![("replayed envelope", old), ("envelope", honest)]
            }
            Attack::Duplicate => vec![("envelope", honest.clone()), ("duplicate", honest)],
            Attack::FutureRound => {
                // Broadcasts after the made-up one are renumbered by one.
                let mut out = Vec::new();
                if first {
                    let sigma = Scalar::random(&mut rand::rngs::OsRng);
                    let fake = Msg::Round4(cggmp24::signing::msg::MsgRound4 {
                        partial_sig: cggmp24::signing::PartialSignature { sigma },
                    });
                    let e = Envelope::seal(
                        &self.key,
                        self.info.id,
                        Protocol::Sign,
                        0,
                        self.info.me,
                        None,
                        encode_msg(&fake),
                    );
                    out.push(("round-4 message before round 1", e.encode()));
                }
                if env.recipient.is_none() {
                    let e = reseal(&self.key, &env, env.seq + 1, env.payload.clone());
                    out.push(("envelope (renumbered)", e.encode()));
                } else {
                    out.push(("envelope", honest));
                }
                out
            }
            Attack::InvalidProofRound1 | Attack::InvalidPsi0Only => match decode_msg(&env) {
                Msg::Round1b(mut m) => {
                    m.psi0.proof.w += Scalar::one();
                    if self.attack == Attack::InvalidProofRound1 {
                        m.psi1.proof.w += Scalar::one();
                    }
                    let e = reseal(&self.key, &env, env.seq, encode_msg(&Msg::Round1b(m)));
                    vec![("round 1b with an invalid proof", e.encode())]
                }
                _ => vec![("envelope", honest)],
            },
            Attack::InvalidProofRound3 => match decode_msg(&env) {
                Msg::Round3(mut m) => {
                    m.psi_prime.proof.z += Scalar::one();
                    let e = reseal(&self.key, &env, env.seq, encode_msg(&Msg::Round3(m)));
                    vec![("round 3 with an invalid proof", e.encode())]
                }
                _ => vec![("envelope", honest)],
            },
            Attack::WithholdPartial => match decode_msg(&env) {
                Msg::Round4(_) => vec![],
                _ => vec![("envelope", honest)],
            },
            Attack::BadPartialSignature => match decode_msg(&env) {
                Msg::Round4(mut m) => {
                    m.partial_sig.sigma += Scalar::one();
                    let e = reseal(&self.key, &env, env.seq, encode_msg(&Msg::Round4(m)));
                    vec![("round 4 with a wrong partial signature", e.encode())]
                }
                _ => vec![("envelope", honest)],
            },
        }
    }
}

/// The Peer service charlie serves.
#[derive(Clone)]
struct Server(Arc<Hostile>);

fn declined(reason: &str) -> pb::ProposalReply {
    pb::ProposalReply {
        reason: reason.into(),
        ..Default::default()
    }
}

#[tonic::async_trait]
impl Peer for Server {
    async fn propose(
        &self,
        req: Request<pb::Proposal>,
    ) -> Result<Response<pb::ProposalReply>, Status> {
        let (from, _) = self.0.caller(&req)?;
        let p = req.into_inner();
        let session: [u8; 32] = p
            .session_id
            .as_slice()
            .try_into()
            .map_err(|_| Status::invalid_argument("session id"))?;
        let ceremony = *self.0.ceremony.lock().unwrap();
        let accepted = pb::ProposalReply {
            accepted: true,
            ..Default::default()
        };
        let s = match p.kind {
            Some(pb::proposal::Kind::Sign(s)) => s,
            Some(pb::proposal::Kind::Aux(_)) if ceremony != Ceremony::Off => {
                eprintln!("  [{CHARLIE_NAME}] {from} proposed aux info; {ceremony:?}");
                self.0.join_ceremony(session, false);
                return Ok(Response::new(accepted));
            }
            Some(pb::proposal::Kind::Keygen(_)) if ceremony == Ceremony::KeygenInvalidProof => {
                eprintln!("  [{CHARLIE_NAME}] {from} proposed keygen; {ceremony:?}");
                self.0.join_ceremony(session, true);
                return Ok(Response::new(accepted));
            }
            Some(pb::proposal::Kind::Keygen(k)) if ceremony != Ceremony::Off => {
                return Ok(Response::new(pb::ProposalReply {
                    reason: format!("missing aux info {}", hex::encode(k.aux_id)),
                    missing_aux: true,
                    ..Default::default()
                }));
            }
            _ => return Ok(Response::new(declined("hostile charlie declines this"))),
        };
        let attack = Attack::from_message(&s.message);
        let signers: Vec<u16> = s.signers.iter().map(|&x| x as u16).collect();
        let record = &self.0.record;
        let info = tss_node::testing::sign_session(record, &signers, record.my_index, session)?;
        let (data, _) =
            tss_node::request::to_sign(tss_node::request::hash_algo(s.hash)?, &s.message)?;
        self.0.event(Event::Proposed {
            from: from.clone(),
            session,
            attack,
        });
        // The inbox exists before the reply: the coordinator sends at once.
        let (in_tx, in_rx) = mpsc::channel(64);
        self.0.inboxes.lock().unwrap().insert(session, in_tx);
        tokio::spawn(
            self.0
                .clone()
                .run_session(info, in_rx, signers, data, from, attack),
        );
        Ok(Response::new(accepted))
    }

    async fn start(&self, req: Request<pb::SessionRef>) -> Result<Response<pb::Ack>, Status> {
        if let Ok(id) = <[u8; 32]>::try_from(req.get_ref().session_id.as_slice()) {
            if let Some(go) = self.0.starts.lock().unwrap().remove(&id) {
                let _ = go.send(());
            }
        }
        Ok(Response::new(pb::Ack {}))
    }

    async fn deliver(&self, req: Request<pb::EnvelopeBytes>) -> Result<Response<pb::Ack>, Status> {
        let (_, from) = self.0.caller(&req)?;
        let envelope = Envelope::decode(&req.get_ref().envelope)
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        let inbox = self
            .0
            .inboxes
            .lock()
            .unwrap()
            .get(&envelope.session_id)
            .cloned();
        let Some(mut inbox) = inbox else {
            if self.0.sinks.lock().unwrap().contains(&envelope.session_id) {
                // A session charlie proposed and never serves: swallow.
                return Ok(Response::new(pb::Ack {}));
            }
            return Err(Status::not_found("no such session"));
        };
        inbox
            .try_send(Received { envelope, from })
            .map_err(|_| Status::resource_exhausted("inbox"))?;
        Ok(Response::new(pb::Ack {}))
    }

    async fn sign_with_presignature(
        &self,
        _: Request<pb::PresignSignRequest>,
    ) -> Result<Response<pb::PresignSignReply>, Status> {
        Err(Status::unimplemented(
            "hostile charlie holds no presignatures",
        ))
    }

    async fn abort(&self, req: Request<pb::AbortRequest>) -> Result<Response<pb::Ack>, Status> {
        let (from, _) = self.0.caller(&req)?;
        let r = req.into_inner();
        eprintln!(
            "  hostile {CHARLIE_NAME}: {from} aborted a session: {}",
            r.reason
        );
        if let Ok(id) = <[u8; 32]>::try_from(r.session_id.as_slice()) {
            // Closing the inbox ends charlie's engine.
            self.0.inboxes.lock().unwrap().remove(&id);
        }
        Ok(Response::new(pb::Ack {}))
    }

    async fn ping(&self, _: Request<pb::Ack>) -> Result<Response<pb::Ack>, Status> {
        Ok(Response::new(pb::Ack {}))
    }

    async fn find_signature(
        &self,
        _: Request<pb::FindSignatureRequest>,
    ) -> Result<Response<pb::FindSignatureReply>, Status> {
        Err(Status::unimplemented("hostile charlie keeps no signatures"))
    }

    async fn transcript_part(
        &self,
        _: Request<pb::TranscriptPartRequest>,
    ) -> Result<Response<pb::EntryList>, Status> {
        Err(Status::unimplemented("hostile"))
    }

    async fn certify_key(
        &self,
        _: Request<pb::CertifyRequest>,
    ) -> Result<Response<pb::CertifyReply>, Status> {
        Err(Status::unimplemented("hostile"))
    }

    async fn store_transcript(
        &self,
        _: Request<pb::StoreTranscriptRequest>,
    ) -> Result<Response<pb::Ack>, Status> {
        Err(Status::unimplemented("hostile"))
    }
}

/// Loads charlie (killed first) from its operator files and serves the
/// hostile Peer service on charlie's address. The server stops when the
/// returned sender is dropped.
async fn become_charlie(
    cluster: &mut Cluster,
    key_id: &str,
) -> (Arc<Hostile>, tokio::sync::oneshot::Sender<()>) {
    cluster.kill(CHARLIE);
    let cfg = tss_node::config::NodeConfig::load(&cluster.dirs.parties[CHARLIE].join("node.toml"))
        .expect("charlie's config");
    assert_eq!(cfg.name, CHARLIE_NAME);
    let listen = cfg.listen;
    let pass = cfg.passphrase().expect("charlie's passphrase");
    let (node, tls) = tss_node::run::open_node(cfg, pass)
        .await
        .expect("open charlie's store with its passphrase");
    let record = tss_node::testing::load_key_record(node.store(), key_id)
        .expect("charlie's store")
        .expect("charlie holds the key");
    let share =
        Arc::new(tss_node::testing::load_share(node.store(), key_id).expect("charlie's share"));
    let hostile = Arc::new(Hostile {
        node: node.clone(),
        record,
        share,
        inboxes: Mutex::default(),
        events: Mutex::default(),
        sent_honestly: Mutex::default(),
        sinks: Mutex::default(),
        ceremony: Mutex::new(Ceremony::Off),
        starts: Mutex::default(),
    });
    let server_cfg =
        tss_node::transport::server_config(&tls, node.allowed_certs()).expect("charlie's TLS");
    let mut listener = None;
    for _ in 0..50 {
        match tokio::net::TcpListener::bind(listen).await {
            Ok(l) => {
                listener = Some(l);
                break;
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
    let listener = listener.expect("bind charlie's address");
    let incoming = tss_node::transport::tls_incoming(listener, server_cfg);
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = Server(hostile.clone());
    tokio::spawn(async move {
        let _ = tonic::transport::Server::builder()
            .add_service(
                PeerServer::new(server)
                    .max_decoding_message_size(MAX_PEER_MESSAGE)
                    .max_encoding_message_size(MAX_PEER_MESSAGE),
            )
            .serve_with_incoming_shutdown(incoming, async {
                let _ = stop_rx.await;
            })
            .await;
    });
    (hostile, stop_tx)
}

/// The honest process whose coordinator tries charlie first, and the
/// other honest process. With nothing pooled, a coordinator tries the
/// co-signers of pairs it leads (higher keygen index) first, lowest index
/// first, then the others.
fn coordinator_trying_charlie_first(record: &keygen::record::KeyRecord) -> (usize, usize) {
    let index = |i: usize| {
        record
            .parties
            .iter()
            .position(|p| p.name == tss_node::cluster::NAMES[i])
            .expect("every party is in the key record")
    };
    let charlie = index(CHARLIE);
    let honest: Vec<usize> = (0..3).filter(|&i| i != CHARLIE).collect();
    for (k, &node) in honest.iter().enumerate() {
        let me = index(node);
        let mut cands: Vec<usize> = (0..3).filter(|&c| c != me).collect();
        cands.sort_by_key(|&c| std::cmp::Reverse(me < c));
        if cands[0] == charlie {
            return (node, honest[1 - k]);
        }
    }
    unreachable!("some honest node tries charlie first")
}

/// Strips ANSI colour codes from a log.
fn plain(log: &str) -> String {
    let mut out = String::with_capacity(log.len());
    let mut chars = log.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for d in chars.by_ref() {
                if d.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// Node `i`'s log from byte `from` on, without colour codes.
fn log_since(cluster: &Cluster, i: usize, from: usize) -> String {
    let log = std::fs::read(cluster.log_path(i)).unwrap_or_default();
    plain(&String::from_utf8_lossy(
        log.get(from..).unwrap_or_default(),
    ))
}

fn log_len(cluster: &Cluster, i: usize) -> usize {
    std::fs::metadata(cluster.log_path(i)).map_or(0, |m| m.len() as usize)
}

/// The line of `log` that reports a failed signing attempt with charlie and
/// contains `needle` (`None` if there is none).
fn failed_attempt_line<'a>(log: &'a str, needle: &str) -> Option<&'a str> {
    log.lines().find(|l| {
        l.contains("signing session failed")
            && l.contains(&format!("co_signer={CHARLIE_NAME}"))
            && l.contains(needle)
    })
}

/// A client's Sign of a message that names `attack`, through node `via`.
async fn sign_attacked(
    cluster: &Cluster,
    via: usize,
    key_id: &str,
    public_key: &[u8],
    attack: Attack,
) -> (pb::SignResponse, Duration) {
    let message = format!(
        "hostile {} {}",
        attack.name(),
        hex::encode(rand::random::<[u8; 8]>())
    );
    let mut c = cluster.client(via, "gateway").await;
    let t = Instant::now();
    let r = c
        .sign(sign_request(key_id, message.as_bytes()))
        .await
        .unwrap_or_else(|s| panic!("{attack:?}: Sign through node {via} failed: {s}"))
        .into_inner();
    let took = t.elapsed();
    assert_valid(public_key, &sha2::Sha256::digest(message.as_bytes()), &r);
    (r, took)
}

/// What the honest coordinator must show after one attack.
struct Expect {
    attack: Attack,
    /// Status charlie's tampered delivery gets (`None`: accepted into the
    /// session, refused there).
    refused: Option<(&'static [Code], &'static str)>,
    /// Text of the coordinator's log line about the failed attempt.
    failure: &'static str,
    /// Another coordinator log line (if any) naming charlie.
    also: Option<&'static str>,
}

/// Checks what one attack left: charlie was asked first and did its
/// attack; the coordinator gave up on charlie naming it, and the signature
/// came from the pair without charlie.
#[allow(clippy::too_many_arguments)]
fn check_failover(
    cluster: &Cluster,
    hostile: &Hostile,
    coord: usize,
    other: usize,
    log_from: usize,
    resp: &pb::SignResponse,
    e: &Expect,
) {
    let a = e.attack;
    let coord_name = tss_node::cluster::NAMES[coord];
    let session = hostile
        .session_of(a, coord_name)
        .unwrap_or_else(|| panic!("{a:?}: {coord_name} never proposed the session to charlie"));
    let sends = hostile.sends(session);
    let tampered = sends
        .iter()
        .find(|(what, _)| *what != "envelope")
        .unwrap_or_else(|| panic!("{a:?}: charlie sent nothing tampered: {sends:?}"));
    match e.refused {
        None => assert!(
            tampered.1.is_ok(),
            "{a:?}: the tampered envelope is checked inside the session, got {:?}",
            tampered.1
        ),
        Some((code, text)) => match &tampered.1 {
            Err((c, m)) => {
                assert!(
                    code.contains(c),
                    "{a:?}: status of the tampered delivery: {c:?} {m}"
                );
                assert!(
                    m.contains(text),
                    "{a:?}: status message {m:?} lacks {text:?}"
                );
            }
            Ok(()) => panic!("{a:?}: the honest node accepted {}", tampered.0),
        },
    }
    let mut signers = resp.signers.clone();
    signers.sort();
    let mut expected = vec![
        coord_name.to_string(),
        tss_node::cluster::NAMES[other].to_string(),
    ];
    expected.sort();
    assert_eq!(
        signers, expected,
        "{a:?}: signed by the honest pair, not with charlie"
    );
    let log = log_since(cluster, coord, log_from);
    assert!(
        failed_attempt_line(&log, e.failure).is_some(),
        "{a:?}: {coord_name}'s log has no failed attempt with {CHARLIE_NAME} saying {:?}:\n{log}",
        e.failure
    );
    if let Some(also) = e.also {
        assert!(
            log.lines()
                .any(|l| l.contains(also) && l.contains(CHARLIE_NAME)),
            "{a:?}: {coord_name}'s log has no line naming {CHARLIE_NAME} with {also:?}:\n{log}"
        );
    }
}

/// A cluster with a key, charlie played by this test.
pub(crate) struct Setup {
    pub(crate) cluster: Cluster,
    /// The key's public key.
    pub(crate) pk: Vec<u8>,
    pub(crate) hostile: Arc<Hostile>,
    /// Stops charlie's server when dropped.
    pub(crate) stop: tokio::sync::oneshot::Sender<()>,
    /// The honest node that tries charlie first.
    pub(crate) coord: usize,
    /// The other honest node.
    pub(crate) other: usize,
}

pub(crate) async fn setup(t0: Instant, key_id: &str) -> Setup {
    step(t0, "Given a three-party cluster and a 2-of-3 key");
    // Several prime sets per party: the ceremony case runs aux info again.
    let (primes, per_party) = crate::harness::all_test_primes();
    let mut cluster = Cluster::start_with_primes(primes, per_party, |_, cfg| {
        cfg.presign.target = 0;
        cfg.timeouts.sign_ms = SIGN_MS;
        cfg.timeouts.aux_ms = 240_000;
        // Several Sign requests wait on charlie's stalls at once (each up
        // to SIGN_MS): more slots than the cores of a CI machine.
        cfg.limits.max_requests = Some(8);
    })
    .await;
    let key = cluster.keygen(0, key_id).await;
    step(
        t0,
        "And charlie's process replaced by this test, with charlie's files",
    );
    let (hostile, stop) = become_charlie(&mut cluster, key_id).await;
    let (coord, other) = coordinator_trying_charlie_first(&hostile.record);
    eprintln!(
        "coordinator {} tries {CHARLIE_NAME} first",
        tss_node::cluster::NAMES[coord]
    );
    Setup {
        cluster,
        pk: key.public_key,
        hostile,
        stop,
        coord,
        other,
    }
}

/// The pinned engine (cggmp24 0.7.0-alpha.3, signing.rs, "Verify psi0, psi1
/// proofs") ends the psi0 check with `.err()?` in its blame closure, so it
/// accepts a round 1b whose psi0 alone is invalid (and never checks psi1
/// when psi0 verifies). The node checks both proofs itself before the engine
/// (tss-core/src/ecdsa/round1.rs); this case shows it refuses such a message.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile__should_refuse_an_invalid_psi0_range_proof() {
    let t0 = Instant::now();
    let Setup {
        mut cluster,
        pk,
        hostile,
        stop: _stop,
        coord,
        other,
    } = setup(t0, "psi0-key").await;
    step(t0, "When charlie sends round 1b with only psi0 invalid");
    let from = log_len(&cluster, coord);
    let (r, _) = sign_attacked(&cluster, coord, "psi0-key", &pk, Attack::InvalidPsi0Only).await;
    step(
        t0,
        "Then the coordinator refuses it and signs with the other party",
    );
    check_failover(
        &cluster,
        &hostile,
        coord,
        other,
        from,
        &r,
        &Expect {
            attack: Attack::InvalidPsi0Only,
            refused: None,
            failure: "round-1 range proof psi0 (for K) does not verify",
            also: None,
        },
    );
    cluster.assert_no_panics();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile__honest_nodes_should_abort_name_charlie_and_keep_signing() {
    let t0 = Instant::now();
    let Setup {
        mut cluster,
        pk,
        hostile,
        stop: _stop,
        coord,
        other,
    } = setup(t0, "hostile-key").await;
    let key_id = "hostile-key";
    let coord_name = tss_node::cluster::NAMES[coord];

    step(
        t0,
        "When charlie co-signs honestly, the signature is made with it",
    );
    let (r, took) = sign_attacked(&cluster, coord, key_id, &pk, Attack::Honest).await;
    assert!(
        r.signers.iter().any(|s| s == CHARLIE_NAME),
        "the honest run was signed with charlie: {:?}",
        r.signers
    );
    eprintln!("  honest signature with charlie in {took:?}");
    assert!(!hostile.sent_honestly.lock().unwrap().is_empty());

    step(
        t0,
        "When charlie replays an envelope of that finished session",
    );
    let (r, _) = sign_attacked(&cluster, coord, key_id, &pk, Attack::Replay).await;
    let session = hostile
        .session_of(Attack::Replay, coord_name)
        .expect("proposed");
    let sends = hostile.sends(session);
    let replay = sends
        .iter()
        .find(|(w, _)| *w == "replayed envelope")
        .expect("replay sent");
    assert!(
        matches!(&replay.1, Err((Code::NotFound, _))),
        "a replay of a finished session reaches no session: {:?}",
        replay.1
    );
    assert!(
        r.signers.iter().any(|s| s == CHARLIE_NAME),
        "then the session went on unharmed, with charlie: {:?}",
        r.signers
    );

    assert_eq!(
        hostile.engine_end(session, Duration::from_secs(30)).await,
        Some(Ok(())),
        "charlie's own engine finished the replay session"
    );

    // Attacks that end the session at once; the Sign fails over to the
    // other honest party well before the session timeout.
    let quick = [
        Expect {
            attack: Attack::Truncated,
            refused: Some((&[Code::InvalidArgument], "length field does not match")),
            failure: "custodian-c sent an invalid message: malformed envelope: length field does not match",
            also: Some("refused an envelope"),
        },
        Expect {
            attack: Attack::HugeLengthPrefix,
            refused: Some((&[Code::InvalidArgument], "exceeds the 131072-byte limit")),
            failure: "custodian-c sent an invalid message: payload of 4294967295 bytes exceeds the 131072-byte limit",
            also: Some("refused an envelope"),
        },
        Expect {
            attack: Attack::PayloadOverLimit,
            refused: Some((&[Code::InvalidArgument], "payload of 204800 bytes exceeds")),
            failure: "custodian-c sent an invalid message: payload of 204800 bytes exceeds",
            also: Some("refused an envelope"),
        },
        Expect {
            attack: Attack::BadSignature,
            refused: None,
            failure: "custodian-c sent an invalid message: signature does not verify",
            also: None,
        },
        Expect {
            attack: Attack::Duplicate,
            refused: None,
            failure: "custodian-c sent an invalid message: sequence number 0 where 1 was expected",
            also: None,
        },
        Expect {
            attack: Attack::FutureRound,
            refused: None,
            failure: "resulting signature is not valid",
            also: None,
        },
        Expect {
            attack: Attack::InvalidProofRound1,
            refused: None,
            failure: "round-1 range proof psi0 (for K) does not verify",
            also: None,
        },
        Expect {
            attack: Attack::InvalidProofRound3,
            refused: None,
            failure: "proof is invalid",
            also: None,
        },
        Expect {
            attack: Attack::BadPartialSignature,
            refused: None,
            failure: "resulting signature is not valid",
            also: None,
        },
    ];
    for e in &quick {
        step(
            t0,
            &format!("When charlie co-signs with attack {:?}", e.attack),
        );
        let from = log_len(&cluster, coord);
        let (r, took) = sign_attacked(&cluster, coord, key_id, &pk, e.attack).await;
        eprintln!("  signed by {:?} in {took:?}", r.signers);
        check_failover(&cluster, &hostile, coord, other, from, &r, e);
        assert!(
            took < Duration::from_millis(SIGN_MS),
            "{:?}: the session with charlie ended before its {SIGN_MS} ms timeout ({took:?})",
            e.attack
        );
        cluster.assert_no_panics();
    }

    // Attacks after which charlie goes silent: the session ends at its
    // timeout and the Sign fails over; run at once, with charlie flooding
    // the other honest node with sessions it never serves.
    step(
        t0,
        "When charlie stalls sessions (garbage, an over-size gRPC message, silence) and floods the other node with proposals",
    );
    let slow = [
        Expect {
            attack: Attack::Garbage,
            refused: Some((&[Code::InvalidArgument], "bad magic")),
            failure: TIMED_OUT,
            also: Some("refused an envelope"),
        },
        Expect {
            attack: Attack::OverTransportLimit,
            refused: Some((&[Code::OutOfRange, Code::ResourceExhausted], "")),
            failure: TIMED_OUT,
            also: None,
        },
    ];
    // Within the per-peer quota (a quarter of the sessions): charlie's
    // stalled sessions must not stop the honest pair.
    let flood_n = quota(&cluster, other);
    let from_coord = log_len(&cluster, coord);
    let from_other = log_len(&cluster, other);
    let t_slow = Instant::now();
    let signs = futures::future::join_all(
        slow.iter()
            .map(|e| e.attack)
            .chain([Attack::Stall])
            .enumerate()
            .map(|(i, a)| {
                let cluster = &cluster;
                let pk = &pk;
                async move {
                    // Staggered, so that the fail-overs do not all compete
                    // for the CPU at the same moment.
                    tokio::time::sleep(Duration::from_secs(8 * i as u64)).await;
                    sign_attacked(cluster, coord, key_id, pk, a).await
                }
            }),
    );
    let flood = flood_proposals(&hostile, &cluster, other, flood_n);
    let during = async {
        // While charlie's sessions fill its quota at `other`, the honest
        // pair still signs through it.
        tokio::time::sleep(Duration::from_secs(2)).await;
        sign_attacked(&cluster, other, key_id, &pk, Attack::Honest).await
    };
    let (signed, flooded, (during, during_took)) = tokio::join!(signs, flood, during);
    eprintln!(
        "  signed through {} during the flood in {during_took:?}",
        tss_node::cluster::NAMES[other]
    );
    assert!(
        !during.signers.iter().any(|s| s == CHARLIE_NAME),
        "signed by the honest pair: {:?}",
        during.signers
    );
    for (e, (r, took)) in slow.iter().zip(&signed) {
        eprintln!("  {:?}: signed by {:?} in {took:?}", e.attack, r.signers);
        check_failover(&cluster, &hostile, coord, other, from_coord, r, e);
    }
    let (stall_resp, _) = &signed[slow.len()];
    let stall = hostile
        .session_of(Attack::Stall, coord_name)
        .expect("the stalled session was proposed to charlie");
    assert!(hostile.sends(stall).is_empty(), "charlie sent nothing");
    assert!(
        !stall_resp.signers.iter().any(|s| s == CHARLIE_NAME),
        "the stalled Sign was signed by the honest pair"
    );
    let bound = Duration::from_millis(SIGN_MS + 3_000) + Duration::from_secs(60);
    for (r, took) in &signed {
        assert!(
            *took >= Duration::from_millis(SIGN_MS) && *took < bound,
            "a stalled session ends at its {SIGN_MS} ms timeout and the Sign then fails over (took {took:?}, signers {:?})",
            r.signers
        );
    }
    let log = log_since(&cluster, coord, from_coord);
    let timeouts = log
        .lines()
        .filter(|l| failed_attempt_line(l, TIMED_OUT).is_some())
        .count();
    assert!(
        timeouts >= signed.len(),
        "{coord_name} logged {timeouts} timed-out attempts with {CHARLIE_NAME}, expected {}:\n{log}",
        signed.len()
    );

    step(
        t0,
        "Then charlie's stalled sessions timed out and were freed",
    );
    assert!(
        flooded.iter().all(|r| r.is_ok()),
        "{} accepted charlie's sessions within its quota: {flooded:?}",
        tss_node::cluster::NAMES[other]
    );
    let accepted = flooded.len();
    let other_name = tss_node::cluster::NAMES[other];
    let deadline = t_slow + Duration::from_millis(SIGN_MS) + Duration::from_secs(30);
    loop {
        let h = cluster.health(other).await;
        let log = log_since(&cluster, other, from_other);
        let ended = log
            .lines()
            .filter(|l| {
                l.contains("co-signing failed")
                    && l.contains(&format!("coordinator={CHARLIE_NAME}"))
                    && l.contains(TIMED_OUT)
            })
            .count();
        if h.sessions_running == 0 && ended >= accepted {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{other_name} still runs {} sessions; {ended} of charlie's {accepted} stalled sessions ended:\n{log}",
            h.sessions_running
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }

    step(t0, "Then both honest nodes are up, unharmed, and sign");
    cluster.assert_no_panics();
    for via in [coord, other] {
        let (r, _) = sign_attacked(&cluster, via, key_id, &pk, Attack::Honest).await;
        eprintln!(
            "  through {}: signed by {:?}",
            tss_node::cluster::NAMES[via],
            r.signers
        );
    }
    cluster.assert_no_panics();
    step(t0, "done");
}

/// The sessions one peer may hold at node `i`: a quarter of its
/// `limits.max_sessions`, at least 2 (`Node::register`).
fn quota(cluster: &Cluster, i: usize) -> usize {
    let limits = tss_node::config::NodeConfig::load(&cluster.dirs.parties[i].join("node.toml"))
        .expect("config")
        .limits;
    (limits.max_sessions / 4).max(2)
}

/// One peer may hold at most its quota of a node's session slots (a
/// quarter of `max_sessions`): beyond it, proposals are refused, so a peer
/// that never serves its sessions cannot take every slot. (This found
/// `Node::register` checking the quota without counting sessions.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile__peer_should_not_take_more_than_its_quota_of_sessions() {
    let t0 = Instant::now();
    let Setup {
        cluster,
        pk,
        hostile,
        stop: _stop,
        other,
        ..
    } = setup(t0, "quota-key").await;
    let limit = tss_node::config::NodeConfig::load(&cluster.dirs.parties[other].join("node.toml"))
        .expect("config")
        .limits
        .max_sessions;
    step(
        t0,
        "When charlie proposes more sessions than the node runs, and never serves them",
    );
    let flooded = flood_proposals(&hostile, &cluster, other, limit + 2).await;
    step(
        t0,
        "Then it is refused beyond its quota, and the node still signs for its clients",
    );
    let accepted = flooded.iter().take_while(|r| r.is_ok()).count();
    assert_eq!(
        accepted,
        quota(&cluster, other),
        "charlie got exactly its quota of sessions: {flooded:?}"
    );
    assert!(
        flooded[accepted..]
            .iter()
            .all(|r| matches!(r, Err((Code::ResourceExhausted, _)))),
        "beyond its quota charlie is refused with RESOURCE_EXHAUSTED: {flooded:?}"
    );
    let (r, _) = sign_attacked(&cluster, other, "quota-key", &pk, Attack::Honest).await;
    assert!(!r.signers.iter().any(|s| s == CHARLIE_NAME));
}

/// Charlie proposes `n` signing sessions to node `to` (as a coordinator
/// would, for requests the gateway client really signed) and never serves
/// them. The outcome of each proposal, in order.
async fn flood_proposals(
    hostile: &Hostile,
    cluster: &Cluster,
    to: usize,
    n: usize,
) -> Vec<Result<(), (Code, String)>> {
    let to_name = tss_node::cluster::NAMES[to];
    let record = &hostile.record;
    let to_index = record
        .parties
        .iter()
        .position(|p| p.name == to_name)
        .expect("party") as u16;
    let mut signers = vec![record.my_index, to_index];
    signers.sort_unstable();
    let gateway = client_identity(&cluster.dirs.gateway);
    let mut client = hostile.client_of(to_name);
    let mut out = Vec::new();
    for i in 0..n {
        let message = format!("flood {i} {}", hex::encode(rand::random::<[u8; 8]>()));
        let digest: [u8; 32] = sha2::Sha256::digest(message.as_bytes()).into();
        let request_id = rand::random::<[u8; 16]>().to_vec();
        let eid = session::sign_execution_id(&record.key_id, &signers, &request_id, &digest);
        let hash = pb::HashAlgorithm::Sha256 as i32;
        let asked = tss_node::request::auth::signing_request(
            &record.key_id,
            &request_id,
            message.as_bytes(),
            hash,
            "",
            None,
        );
        let authorization =
            tss_node::request::auth::authorize(&gateway, &asked, 300).expect("sign");
        hostile.sinks.lock().unwrap().insert(eid);
        let r = client
            .propose(pb::Proposal {
                session_id: eid.to_vec(),
                kind: Some(pb::proposal::Kind::Sign(pb::SignProposal {
                    key_id: record.key_id.clone(),
                    signers: signers.iter().map(|&s| u32::from(s)).collect(),
                    request_id,
                    message: message.into_bytes(),
                    hash,
                    payload: None,
                    authorization: Some(authorization),
                })),
            })
            .await;
        out.push(match r {
            Ok(reply) if reply.get_ref().accepted => Ok(()),
            Ok(reply) => Err((Code::Ok, reply.into_inner().reason)),
            Err(s) => Err((s.code(), s.message().to_owned())),
        });
    }
    eprintln!("  charlie's flood of {to_name}: {out:?}");
    out
}

/// Charlie attacks aux-info and keygen runs: a huge Paillier modulus, an
/// invalid Π_fac proof, an invalid Schnorr proof. Each keygen fails with
/// charlie named, within the timeouts; no node keeps any part of the key;
/// the honest nodes stay up and sign with the existing key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile__aux_info_and_keygen_should_abort_naming_charlie() {
    let t0 = Instant::now();
    let Setup {
        mut cluster,
        pk,
        hostile,
        stop: _stop,
        coord,
        other,
    } = setup(t0, "ceremony-key").await;
    for (ceremony, key_id, expect) in [
        (
            Ceremony::AuxHugeModulus,
            "k-huge",
            "big integer longer than 8192 bits",
        ),
        (
            Ceremony::AuxLongModulus,
            "k-long",
            "Paillier modulus N has 4096 bits",
        ),
        (
            Ceremony::AuxInvalidProof,
            "k-fac",
            "provided invalid proof for Rfac",
        ),
        (
            Ceremony::KeygenInvalidProof,
            "k-sch",
            "party provided invalid schnorr proof",
        ),
    ] {
        *hostile.ceremony.lock().unwrap() = ceremony;
        step(
            t0,
            &format!("When charlie takes part in a keygen with {ceremony:?}"),
        );
        let started = Instant::now();
        let mut admin = cluster.client(coord, "admin").await;
        let r = async {
            let mut s = admin
                .keygen(pb::KeygenRequest {
                    key_id: key_id.into(),
                    ..Default::default()
                })
                .await?
                .into_inner();
            while s.message().await?.is_some() {}
            Ok::<(), Status>(())
        }
        .await;
        let err = r.expect_err("keygen with a hostile party must fail");
        let took = started.elapsed();
        eprintln!("  keygen failed in {took:?}: {err:?}");
        step(
            t0,
            "Then keygen fails naming charlie, and no node keeps the key",
        );
        assert!(
            err.message().contains(CHARLIE_NAME) && err.message().contains(expect),
            "{ceremony:?}: {err:?}"
        );
        for i in [coord, other] {
            let e = cluster
                .client(i, "gateway")
                .await
                .get_key(pb::GetKeyRequest {
                    key_id: key_id.into(),
                })
                .await
                .expect_err("no key after a failed keygen");
            assert!(
                matches!(e.code(), Code::NotFound | Code::FailedPrecondition),
                "{e:?}"
            );
        }
        step(t0, "And both honest nodes still sign with the existing key");
        for i in [coord, other] {
            let mut c = cluster.client(i, "gateway").await;
            let msg = format!("after {ceremony:?} via {i}");
            let r = c
                .sign(sign_request("ceremony-key", msg.as_bytes()))
                .await
                .expect("sign after the attack")
                .into_inner();
            assert_valid(&pk, &sha2::Sha256::digest(msg.as_bytes()), &r);
        }
        cluster.assert_no_panics();
    }
}

/// A client's TLS identity from its folder (`client.crt`, `client.key`).
pub(crate) fn client_identity(dir: &std::path::Path) -> tss_node::transport::TlsIdentity {
    let read = |f: &str| std::fs::read_to_string(dir.join(f)).expect("client file");
    tss_node::transport::TlsIdentity::from_pem(&read("client.crt"), &read("client.key"))
        .expect("identity")
}
