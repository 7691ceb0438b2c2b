//! A lying coordinator (issue #7): charlie's process is replaced by this
//! test with charlie's own identity ([`crate::hostile`]), and charlie
//! coordinates. It proposes signing sessions to alice for requests the
//! gateway did not sign as charlie says: no client signature, another
//! client's name on the gateway's signature, one payload byte altered under
//! a valid signature, an expired signature, an old signature replayed. Each
//! time alice refuses (a replay as a request it signed before: the
//! coordinator may fetch that signature, never a new one). Then charlie takes alice's partial signature of a
//! transaction the gateway did sign, completes the signature and aborts:
//! alice has counted the amount against its 24-hour limit and recorded the
//! request before its partial signature left, and its audit log names the
//! client that really signed.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::channel::mpsc;
use proto::v1 as pb;
use sha2::Digest;
use tonic::Code;
use tss_core::authorization::ClientRequest;
use tss_core::ecdsa::sign::{HashAlgo, ToSign};
use tss_core::session;

use crate::harness::{step, Cluster};
use crate::hostile::{client_identity, setup, Attack, Hostile, Setup, CHARLIE_NAME};

const CHAIN: u64 = 11_155_111;
const DEST: &str = "0x1111111111111111111111111111111111111111";
const ALICE: usize = 0;

/// The gateway may withdraw (1000 wei a transaction, 1500 wei a day) and
/// sign bare SHA-256 hashes of messages (`raw_digest`).
fn policy() -> String {
    format!(
        "version = 1\n\n[clients.gateway]\nroles = [\"withdrawer\", \"signer\"]\n\n\
         [[keys]]\nkey = \"*\"\nchains = [\"ethereum:{CHAIN}\"]\nraw_digest = [\"gateway\"]\n\n\
         [[keys.whitelist]]\nchain = \"ethereum:{CHAIN}\"\naddress = \"{DEST}\"\nkind = \"destination\"\n\n\
         [[keys.limits]]\nchain = \"ethereum:{CHAIN}\"\nasset = \"native\"\nper_tx = \"1000\"\nper_24h = \"1500\"\n"
    )
}

fn eth_tx(nonce: u64, wei: u64) -> Vec<u8> {
    tss_node::client::eip1559_transfer(
        CHAIN,
        nonce,
        DEST,
        &wei.to_string(),
        None,
        21_000,
        2_000_000_000,
        1_000_000_000,
    )
    .expect("transaction")
}

/// A signing proposal charlie makes to alice.
struct Lie {
    request_id: Vec<u8>,
    message: Vec<u8>,
    hash: pb::HashAlgorithm,
    ethereum: bool,
    authorization: Option<pb::ClientAuthorization>,
}

impl Lie {
    fn message(message: &[u8]) -> Self {
        Lie {
            request_id: rand::random::<[u8; 16]>().to_vec(),
            message: message.to_vec(),
            hash: pb::HashAlgorithm::Sha256,
            ethereum: false,
            authorization: None,
        }
    }

    fn ethereum(tx: Vec<u8>) -> Self {
        Lie {
            message: tx,
            hash: pb::HashAlgorithm::Keccak256,
            ethereum: true,
            ..Lie::message(b"")
        }
    }

    fn kind(&self) -> Option<pb::sign_payload::Kind> {
        self.ethereum
            .then_some(pb::sign_payload::Kind::EthereumChainId(CHAIN))
    }

    /// The request as a client signs it (for `self`'s own fields).
    fn request<'a>(&'a self, key_id: &'a str, chain: &'a str) -> ClientRequest<'a> {
        let kind = self.kind();
        tss_node::request::auth::signing_request(
            key_id,
            &self.request_id,
            &self.message,
            self.hash as i32,
            chain,
            kind.as_ref(),
        )
    }

    fn chain(&self) -> String {
        tss_node::request::auth::payload_chain(self.kind().as_ref())
    }

    /// `self` signed by `who`.
    fn signed_by(mut self, who: &tss_node::transport::TlsIdentity, key_id: &str) -> Self {
        let chain = self.chain();
        let auth = tss_node::request::auth::authorize(who, &self.request(key_id, &chain), 300)
            .expect("sign");
        self.authorization = Some(auth);
        self
    }
}

/// Charlie proposes `lie` to alice; if alice accepts and `run` is given,
/// charlie runs its part of the session with that attack. The reply and
/// the session id.
async fn propose(
    hostile: &Arc<Hostile>,
    lie: &Lie,
    run: Option<Attack>,
) -> (pb::ProposalReply, [u8; 32]) {
    let record = &hostile.record;
    let alice_name = tss_node::cluster::NAMES[ALICE];
    let index = |name: &str| {
        record
            .parties
            .iter()
            .position(|p| p.name == name)
            .expect("party") as u16
    };
    let mut signers = vec![index(CHARLIE_NAME), index(alice_name)];
    signers.sort_unstable();
    let hash = match lie.hash {
        pb::HashAlgorithm::Keccak256 => HashAlgo::Keccak256,
        _ => HashAlgo::Sha256,
    };
    let (data, digest) = hash.data_to_sign(&lie.message);
    let eid = session::sign_execution_id(&record.key_id, &signers, &lie.request_id, &digest);
    let proposal = pb::Proposal {
        session_id: eid.to_vec(),
        kind: Some(pb::proposal::Kind::Sign(pb::SignProposal {
            key_id: record.key_id.clone(),
            signers: signers.iter().map(|&s| u32::from(s)).collect(),
            request_id: lie.request_id.clone(),
            message: lie.message.clone(),
            hash: lie.hash as i32,
            payload: lie.kind().map(|k| pb::SignPayload { kind: Some(k) }),
            authorization: lie.authorization.clone(),
        })),
    };
    // The inbox exists before the proposal: alice sends at once.
    let (in_tx, in_rx) = mpsc::channel(64);
    if run.is_some() {
        hostile.inboxes.lock().unwrap().insert(eid, in_tx);
    }
    let reply = hostile
        .client_of(alice_name)
        .propose(proposal)
        .await
        .expect("alice answers")
        .into_inner();
    match run {
        Some(attack) if reply.accepted => {
            let info = tss_node::testing::sign_session(record, &signers, record.my_index, eid)
                .expect("session");
            tokio::spawn(hostile.clone().run_session(
                info,
                in_rx,
                signers,
                ToSign::Hashed(data),
                alice_name.to_owned(),
                attack,
            ));
        }
        _ => {
            hostile.inboxes.lock().unwrap().remove(&eid);
        }
    }
    (reply, eid)
}

fn assert_refused(reply: &pb::ProposalReply, needle: &str) {
    assert!(
        !reply.accepted && reply.reason.contains(needle),
        "alice must refuse with {needle:?}: {reply:?}"
    );
}

async fn wait_for_policy(cluster: &Cluster, i: usize, text: &str) {
    let want = sha2::Sha256::digest(text.as_bytes()).to_vec();
    let until = Instant::now() + Duration::from_secs(30);
    while cluster.health(i).await.policy_sha256 != want {
        assert!(Instant::now() < until, "node {i} never loaded the policy");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lying__coordinator_should_get_only_what_the_client_signed_and_pay_for_what_it_takes() {
    let t0 = Instant::now();
    let Setup {
        mut cluster,
        hostile,
        stop: _stop,
        ..
    } = setup(t0, "lying-key").await;
    let key_id = hostile.record.key_id.clone();
    let text = policy();
    for i in 0..2 {
        cluster.write_policy(i, &text);
        cluster.sighup(i);
        wait_for_policy(&cluster, i, &text).await;
    }
    let gateway = client_identity(&cluster.dirs.gateway);
    let admin = client_identity(&cluster.dirs.admin);
    let mut admin_rpc = cluster.client(ALICE, "admin").await;
    let audit_len = |mut rpc: tss_node::client::Client| async move {
        rpc.audit_log(pb::AuditLogRequest::default())
            .await
            .expect("audit log")
            .into_inner()
            .total
    };
    let before = audit_len(admin_rpc.clone()).await;

    step(t0, "When charlie proposes a request no client signed");
    let (r, _) = propose(&hostile, &Lie::message(b"lying: unsigned"), None).await;
    step(t0, "Then alice refuses it");
    assert_refused(&r, "carries no client authorization");

    step(
        t0,
        "When charlie names the admin on the gateway's signature",
    );
    let mut lie = Lie::message(b"lying: relabelled").signed_by(&gateway, &key_id);
    if let Some(a) = lie.authorization.as_mut() {
        a.client_cert_sha256 = admin.fingerprint().to_vec();
    }
    let (r, _) = propose(&hostile, &lie, None).await;
    assert_refused(&r, "does not verify under admin's pinned certificate");

    step(t0, "When the admin really signed a Sign request");
    let lie = Lie::message(b"lying: admin").signed_by(&admin, &key_id);
    let (r, _) = propose(&hostile, &lie, None).await;
    assert_refused(&r, "client admin has role Admin");

    step(
        t0,
        "When charlie alters one byte under the gateway's signature",
    );
    let mut lie = Lie::message(b"lying: altered").signed_by(&gateway, &key_id);
    lie.message[0] ^= 1;
    let (r, _) = propose(&hostile, &lie, None).await;
    assert_refused(&r, "does not verify under gateway's pinned certificate");

    step(
        t0,
        "When charlie sends a signature that expired an hour ago",
    );
    let mut lie = Lie::message(b"lying: expired");
    let expires = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs()
        - 3600;
    let chain = lie.chain();
    let signed = lie
        .request(&key_id, &chain)
        .signed_bytes(expires)
        .expect("encode");
    lie.authorization = Some(pb::ClientAuthorization {
        client_cert_sha256: gateway.fingerprint().to_vec(),
        expires_unix: expires,
        signature: gateway.sign(&signed).expect("sign"),
    });
    let (r, _) = propose(&hostile, &lie, None).await;
    assert_refused(&r, "expired");
    assert_eq!(
        audit_len(admin_rpc.clone()).await,
        before,
        "what no client signed never reaches alice's policy or audit log"
    );

    step(
        t0,
        "When charlie replays the signature of a request alice signed",
    );
    let lie = Lie::message(b"lying: signed once").signed_by(&gateway, &key_id);
    let mut gw = cluster.client(ALICE, "gateway").await;
    gw.sign(pb::SignRequest {
        key_id: key_id.clone(),
        message: lie.message.clone(),
        hash: lie.hash as i32,
        request_id: lie.request_id.clone(),
        authorization: lie.authorization.clone(),
    })
    .await
    .expect("the gateway's own request signs");
    let signed_once = audit_len(admin_rpc.clone()).await;
    for _ in 0..3 {
        let (r, _) = propose(&hostile, &lie, None).await;
        assert_refused(&r, "signed this request before");
        assert!(r.already_signed, "{r:?}");
    }
    assert_eq!(
        audit_len(admin_rpc.clone()).await,
        signed_once,
        "replays do not grow alice's audit log"
    );

    step(
        t0,
        "When charlie takes alice's partial signature of a signed withdrawal and aborts",
    );
    let lie = Lie::ethereum(eth_tx(1, 1000)).signed_by(&gateway, &key_id);
    let (r, eid) = propose(&hostile, &lie, Some(Attack::WithholdPartial)).await;
    assert!(r.accepted, "alice accepts what the gateway signed: {r:?}");
    let end = hostile.engine_end(eid, Duration::from_secs(60)).await;
    assert_eq!(
        end,
        Some(Ok(())),
        "charlie completes the signature with alice's partial signature"
    );
    hostile
        .client_of(tss_node::cluster::NAMES[ALICE])
        .abort(pb::AbortRequest {
            session_id: eid.to_vec(),
            reason: "lying coordinator took the partial signature".into(),
            all_sessions: false,
        })
        .await
        .expect("abort");

    step(
        t0,
        "Then alice counted the amount: the next 1000 wei exceed its 24 h limit",
    );
    let err = gw
        .sign_ethereum_transaction(pb::SignEthereumTransactionRequest {
            key_id: key_id.clone(),
            unsigned_tx: eth_tx(2, 1000),
            chain_id: CHAIN,
            request_id: rand::random::<[u8; 16]>().to_vec(),
            ..Default::default()
        })
        .await
        .expect_err("over the 24 h limit at alice");
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");
    assert!(err.message().contains("limits.per_24h"), "{err:?}");
    step(
        t0,
        "And alice recorded the request: charlie cannot run it again",
    );
    let (r, _) = propose(&hostile, &lie, None).await;
    assert_refused(&r, "signed this request before");
    assert!(r.already_signed, "{r:?}");

    step(
        t0,
        "And alice's audit log names the gateway, which really signed",
    );
    let log = admin_rpc
        .audit_log(pb::AuditLogRequest {
            from_seq: 0,
            limit: 1000,
        })
        .await
        .expect("audit log")
        .into_inner();
    let signing_hash = hex::encode(alloy_primitives::keccak256(&lie.message));
    let entry = log
        .entries
        .iter()
        .map(|e| serde_json::from_slice::<serde_json::Value>(&e.body).expect("json"))
        .find(|b| b["intent"]["signing_hash"] == signing_hash.as_str())
        .expect("an audit entry for the withdrawal");
    assert_eq!(entry["client"], "gateway", "{entry}");
    assert_eq!(entry["decision"], "allow", "{entry}");
    assert_eq!(
        entry["role"],
        format!("co-signer for {CHARLIE_NAME}").as_str(),
        "{entry}"
    );
    cluster.assert_no_panics();
}
