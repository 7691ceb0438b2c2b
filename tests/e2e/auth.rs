//! Authentication and roles: pinned client and peer certificates.

use std::time::Duration;

use proto::v1 as pb;
use tonic::Code;

use crate::harness::Cluster;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth__should_refuse_unpinned_clients_wrong_roles_and_impostor_peers() {
    let cluster = Cluster::start().await;
    let addr = cluster.dirs.addrs[0];
    let node_cert = std::fs::read_to_string(cluster.dirs.parties[0].join("tls.crt")).unwrap();

    // A client certificate that is not in the node's config is refused
    let stranger_dir = tempfile::tempdir().unwrap();
    tss_node::init::init_client(stranger_dir.path(), "stranger").unwrap();
    let refused = match tss_node::client::connect_with_files(
        addr,
        &cluster.dirs.parties[0].join("tls.crt"),
        stranger_dir.path(),
    )
    .await
    {
        Err(_) => true,
        Ok(mut c) => c.health(pb::HealthRequest {}).await.is_err(),
    };
    assert!(refused, "an unpinned client certificate must be refused");

    // A gateway cannot start keygen
    let mut gw = cluster.client(0, "gateway").await;
    let err = gw
        .keygen(pb::KeygenRequest {
            key_id: "nope".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");
    assert!(err.message().contains("Admin"), "{}", err.message());

    // An admin cannot sign (roles are separate)
    let mut admin = cluster.client(0, "admin").await;
    let err = admin
        .sign(crate::harness::sign_request("k", b"m"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);

    // A client certificate cannot call the Peer API
    let client_cert = std::fs::read_to_string(cluster.dirs.gateway.join("client.crt")).unwrap();
    let client_key = std::fs::read_to_string(cluster.dirs.gateway.join("client.key")).unwrap();
    let me = tss_node::transport::TlsIdentity::from_pem(&client_cert, &client_key).unwrap();
    let cfg = tss_node::transport::client_config(
        &me,
        tss_node::transport::cert_der_from_pem(&node_cert).unwrap(),
    )
    .unwrap();
    let ch = tss_node::transport::connect(addr, cfg, Duration::from_secs(5))
        .await
        .unwrap();
    let err = pb::peer_client::PeerClient::new(ch)
        .ping(pb::Ack {})
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");

    // A peer presenting a certificate other than its pinned one is refused:
    // an impostor with custodian-b's name and address but its own key.
    let impostor = tss_node::transport::generate_tls_identity("custodian-b").unwrap();
    let cfg = tss_node::transport::client_config(
        &impostor,
        tss_node::transport::cert_der_from_pem(&node_cert).unwrap(),
    )
    .unwrap();
    let ok = match tss_node::transport::connect(addr, cfg, Duration::from_secs(5)).await {
        Err(_) => false,
        Ok(ch) => pb::peer_client::PeerClient::new(ch)
            .ping(pb::Ack {})
            .await
            .is_ok(),
    };
    assert!(!ok, "an impostor peer certificate must be refused");

    // And the node keeps serving its real clients
    let h = cluster.health(0).await;
    assert_eq!(h.party, "custodian-a");
    assert!(h.peers.iter().all(|p| p.reachable), "{:?}", h.peers);
}
