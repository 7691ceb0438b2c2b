//! Bad client and peer input: a clear status, and the node keeps serving.

use std::time::Duration;

use proto::v1 as pb;
use tonic::Code;

use crate::harness::{sign_request, Cluster};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sign__should_refuse_bad_input_with_clear_status_and_keep_serving() {
    let cluster = Cluster::start().await;
    let mut c = cluster.client(0, "gateway").await;

    let cases: Vec<(&str, pb::SignRequest, Code, &str)> = vec![
        (
            "unknown key",
            sign_request("no-such-key", b"m"),
            Code::NotFound,
            "no key",
        ),
        (
            "empty message",
            sign_request("k", b""),
            Code::InvalidArgument,
            "message is empty",
        ),
        (
            "unknown hash",
            pb::SignRequest {
                hash: 99,
                ..sign_request("k", b"m")
            },
            Code::InvalidArgument,
            "unknown hash",
        ),
        (
            "hash not set",
            pb::SignRequest {
                hash: 0,
                ..sign_request("k", b"m")
            },
            Code::InvalidArgument,
            "hash is not set",
        ),
        (
            "oversized message",
            sign_request("k", &vec![7u8; 100 * 1024]),
            Code::InvalidArgument,
            "at most",
        ),
        (
            "malformed key id",
            sign_request("bad key/../", b"m"),
            Code::InvalidArgument,
            "key id",
        ),
        (
            "empty request id",
            pb::SignRequest {
                request_id: vec![],
                ..sign_request("k", b"m")
            },
            Code::InvalidArgument,
            "request_id",
        ),
    ];
    for (what, req, code, text) in cases {
        let err = c.sign(req).await.expect_err(what);
        assert_eq!(err.code(), code, "{what}: {err:?}");
        assert!(
            err.message().contains(text),
            "{what}: message {:?} should mention {text:?}",
            err.message()
        );
    }

    // A request that is not a SignRequest at all (fields with the wrong wire
    // types) is refused at decoding, before any handler runs
    let gw_cert = std::fs::read_to_string(cluster.dirs.gateway.join("client.crt")).unwrap();
    let gw_key = std::fs::read_to_string(cluster.dirs.gateway.join("client.key")).unwrap();
    let gw = tss_node::transport::TlsIdentity::from_pem(&gw_cert, &gw_key).unwrap();
    let node_cert = std::fs::read_to_string(cluster.dirs.parties[0].join("tls.crt")).unwrap();
    let cfg = tss_node::transport::client_config(
        &gw,
        tss_node::transport::cert_der_from_pem(&node_cert).unwrap(),
    )
    .unwrap();
    let ch = tss_node::transport::connect(cluster.dirs.addrs[0], cfg, Duration::from_secs(5))
        .await
        .unwrap();
    let mut grpc = tonic::client::Grpc::new(ch);
    grpc.ready().await.unwrap();
    let err = grpc
        .unary(
            tonic::Request::new(WrongTypes {
                key_id: 5,
                message: 7,
            }),
            tonic::codegen::http::uri::PathAndQuery::from_static("/tss.v1.Signer/Sign"),
            tonic_prost::ProstCodec::<WrongTypes, pb::SignResponse>::default(),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(err.code(), Code::Internal | Code::InvalidArgument)
            && err.message().contains("decode"),
        "malformed request: {err:?}"
    );

    // A request larger than the transport limit is refused by gRPC itself
    let err = c
        .sign(sign_request("k", &vec![1u8; 5 << 20]))
        .await
        .unwrap_err();
    assert!(
        matches!(
            err.code(),
            Code::OutOfRange | Code::ResourceExhausted | Code::InvalidArgument
        ),
        "huge request: {err:?}"
    );

    // A peer (with its real identity) delivering garbage envelopes is refused
    let dir = &cluster.dirs.parties[1];
    let pass = tss_node::config::read_passphrase(Some(&dir.join("passphrase"))).unwrap();
    let tls_key = {
        // Read custodian-b's TLS key from a copy of its store (the node holds the lock).
        let copy = tempfile::tempdir().unwrap();
        copy_dir(&dir.join("store"), copy.path());
        let store = tss_core::store::Store::open(copy.path(), &pass).unwrap();
        let k = store
            .get(tss_core::store::RecordKind::NodeSecret, b"tls_key")
            .unwrap()
            .unwrap();
        String::from_utf8(k.expose().to_vec()).unwrap()
    };
    let b_tls = tss_node::transport::TlsIdentity::from_pem(
        &std::fs::read_to_string(dir.join("tls.crt")).unwrap(),
        &tls_key,
    )
    .unwrap();
    let a_cert = std::fs::read_to_string(cluster.dirs.parties[0].join("tls.crt")).unwrap();
    let cfg = tss_node::transport::client_config(
        &b_tls,
        tss_node::transport::cert_der_from_pem(&a_cert).unwrap(),
    )
    .unwrap();
    let ch = tss_node::transport::connect(cluster.dirs.addrs[0], cfg, Duration::from_secs(5))
        .await
        .unwrap();
    let mut peer = pb::peer_client::PeerClient::new(ch);
    peer.ping(pb::Ack {})
        .await
        .expect("custodian-b's real identity is accepted");
    for garbage in [vec![], vec![0u8; 10], b"TSE2".repeat(40), {
        let mut huge = b"TSE2".to_vec();
        huge.extend([0u8; 32]);
        huge.push(1);
        huge.extend([0u8; 8]);
        huge.extend(u32::MAX.to_be_bytes());
        huge.extend([0u8; 64]);
        huge
    }] {
        let err = peer
            .deliver(pb::EnvelopeBytes { envelope: garbage })
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    }
    let err = peer
        .propose(pb::Proposal {
            session_id: vec![1, 2, 3],
            kind: None,
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");

    // And the node keeps serving
    assert_eq!(cluster.health(0).await.party, "custodian-a");
}

fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap().flatten() {
        let p = e.path();
        let dst = to.join(e.file_name());
        if p.is_dir() {
            copy_dir(&p, &dst);
        } else {
            std::fs::copy(&p, &dst).unwrap();
        }
    }
}

/// Same field numbers as `SignRequest`, other wire types.
#[derive(Clone, PartialEq, prost::Message)]
struct WrongTypes {
    #[prost(uint64, tag = "1")]
    key_id: u64,
    #[prost(uint64, tag = "2")]
    message: u64,
}
