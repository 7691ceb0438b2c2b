//! Tests of the TLS transport.

use std::convert::Infallible;
use std::pin::Pin;

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_stream::StreamExt;
use tonic::codegen::http;
use tower::Service as _;

use rustls::pki_types::ServerName;
use tokio::net::{TcpListener, TcpStream};
use tokio_stream::Stream;

use crate::transport::channel::connect;
use crate::transport::channel::connect_lazy;
use crate::transport::fingerprint;
use crate::transport::identity::cert_der_from_pem;
use crate::transport::identity::generate_tls_identity;
use crate::transport::identity::pem_encode_into;
use crate::transport::identity::pem_len;
use crate::transport::identity::TlsIdentity;
use crate::transport::listener::peer_fingerprint;
use crate::transport::listener::tls_incoming;
use crate::transport::pinning::client_config;
use crate::transport::pinning::provider;
use crate::transport::pinning::server_config;
use crate::transport::pinning::PinnedServerCertVerifier;
use crate::transport::ALPN_H2;

type Incoming = Pin<
    Box<dyn Stream<Item = Result<tokio_rustls::server::TlsStream<TcpStream>, io::Error>> + Send>,
>;

/// How long a test waits for something that should happen promptly.
const WAIT: Duration = Duration::from_secs(5);
/// How long a test waits to conclude that something did not happen.
const QUIET: Duration = Duration::from_millis(300);

async fn start_server(me: &TlsIdentity, allowed: Vec<Vec<u8>>) -> (SocketAddr, Incoming) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let incoming = tls_incoming(listener, server_config(me, allowed).unwrap());
    (addr, Box::pin(incoming))
}

async fn dial(
    addr: SocketAddr,
    config: Arc<rustls::ClientConfig>,
) -> io::Result<tokio_rustls::client::TlsStream<TcpStream>> {
    let tcp = TcpStream::connect(addr).await?;
    tokio_rustls::TlsConnector::from(config)
        .connect(ServerName::from(addr.ip()), tcp)
        .await
}

/// After a handshake the server may refuse, the client's first read fails
/// or sees EOF instead of data.
async fn assert_refused_after_handshake(mut client: tokio_rustls::client::TlsStream<TcpStream>) {
    let _ = client.write_all(b"ping").await;
    let mut buf = [0u8; 16];
    match tokio::time::timeout(WAIT, client.read(&mut buf)).await {
        Ok(Ok(0)) | Ok(Err(_)) => {}
        other => panic!("client was not refused: {other:?}"),
    }
}

#[tokio::test]
async fn mtls__should_accept_pinned_client_and_expose_its_fingerprint() {
    // Given a server pinning the client, and a client pinning the server
    let server_id = generate_tls_identity("node-a").unwrap();
    let client_id = generate_tls_identity("node-b").unwrap();
    let (addr, mut incoming) = start_server(&server_id, vec![client_id.cert_der.clone()]).await;
    let config = client_config(&client_id, server_id.cert_der.clone()).unwrap();

    // When the client connects
    let mut client = dial(addr, config).await.unwrap();
    let mut server = tokio::time::timeout(WAIT, incoming.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();

    // Then each side sees the other's certificate, over TLS 1.3 and h2
    let (_, session) = server.get_ref();
    let seen = session.peer_certificates().unwrap();
    assert_eq!(seen.len(), 1);
    assert_eq!(fingerprint(&seen[0]), client_id.fingerprint());
    assert_eq!(session.alpn_protocol(), Some(ALPN_H2));
    assert_eq!(
        session.protocol_version(),
        Some(rustls::ProtocolVersion::TLSv1_3)
    );
    let server_seen = client.get_ref().1.peer_certificates().unwrap();
    assert_eq!(fingerprint(&server_seen[0]), server_id.fingerprint());

    // And data flows both ways
    client.write_all(b"ping").await.unwrap();
    let mut buf = [0u8; 4];
    server.read_exact(&mut buf).await.unwrap();
    assert_eq!(&buf, b"ping");
    server.write_all(b"pong").await.unwrap();
    client.read_exact(&mut buf).await.unwrap();
    assert_eq!(&buf, b"pong");
}

#[tokio::test]
async fn mtls__should_refuse_client_with_unpinned_cert() {
    // Given a server pinning client B only
    let server_id = generate_tls_identity("node-a").unwrap();
    let pinned = generate_tls_identity("node-b").unwrap();
    let stranger = generate_tls_identity("node-b").unwrap();
    let (addr, mut incoming) = start_server(&server_id, vec![pinned.cert_der.clone()]).await;

    // When a client with another certificate (same name) connects
    let config = client_config(&stranger, server_id.cert_der.clone()).unwrap();
    if let Ok(client) = dial(addr, config).await {
        assert_refused_after_handshake(client).await;
    }

    // Then the server yields no connection, and keeps accepting pinned clients
    assert!(tokio::time::timeout(QUIET, incoming.next()).await.is_err());
    let config = client_config(&pinned, server_id.cert_der.clone()).unwrap();
    let _client = dial(addr, config).await.unwrap();
    let server = tokio::time::timeout(WAIT, incoming.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let seen = server.get_ref().1.peer_certificates().unwrap();
    assert_eq!(fingerprint(&seen[0]), pinned.fingerprint());
}

#[tokio::test]
async fn mtls__should_refuse_client_without_cert() {
    // Given a server and a client that pins it but presents no certificate
    let server_id = generate_tls_identity("node-a").unwrap();
    let client_id = generate_tls_identity("node-b").unwrap();
    let (addr, mut incoming) = start_server(&server_id, vec![client_id.cert_der.clone()]).await;
    let provider = provider();
    let verifier = PinnedServerCertVerifier {
        pinned: server_id.fingerprint(),
        algorithms: provider.signature_verification_algorithms,
    };
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_no_client_auth();
    config.alpn_protocols = vec![ALPN_H2.to_vec()];

    // When it connects, then it is refused and the server yields nothing
    if let Ok(client) = dial(addr, Arc::new(config)).await {
        assert_refused_after_handshake(client).await;
    }
    assert!(tokio::time::timeout(QUIET, incoming.next()).await.is_err());
}

#[tokio::test]
async fn mtls__should_refuse_server_with_unpinned_cert() {
    // Given a server that pins the client, but whose certificate is not
    // the one the client pins
    let server_id = generate_tls_identity("node-a").unwrap();
    let impostor = generate_tls_identity("node-a").unwrap();
    let client_id = generate_tls_identity("node-b").unwrap();
    let (addr, mut incoming) = start_server(&impostor, vec![client_id.cert_der.clone()]).await;

    // When the client connects
    let config = client_config(&client_id, server_id.cert_der.clone()).unwrap();
    let result = dial(addr, config).await;

    // Then the client refuses the handshake and the server yields nothing
    let err = result.expect_err("client accepted an unpinned server");
    assert!(
        err.to_string().contains("certificate"),
        "unexpected error: {err}"
    );
    assert!(tokio::time::timeout(QUIET, incoming.next()).await.is_err());
}

#[tokio::test]
async fn incoming__should_not_be_blocked_by_silent_client() {
    // Given a server and a TCP client that never starts a handshake
    let server_id = generate_tls_identity("node-a").unwrap();
    let client_id = generate_tls_identity("node-b").unwrap();
    let (addr, mut incoming) = start_server(&server_id, vec![client_id.cert_der.clone()]).await;
    let _silent = TcpStream::connect(addr).await.unwrap();

    // When a pinned client connects afterwards, then it is served at once
    let config = client_config(&client_id, server_id.cert_der.clone()).unwrap();
    let _client = tokio::time::timeout(WAIT, dial(addr, config))
        .await
        .unwrap()
        .unwrap();
    let server = tokio::time::timeout(WAIT, incoming.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(server.get_ref().1.peer_certificates().is_some());
}

#[test]
fn tls_key__should_print_redacted() {
    let id = generate_tls_identity("node-a").unwrap();
    assert_eq!(format!("{:?}", id.key), "<redacted>");
    let shown = format!("{id:?}");
    assert!(shown.contains("<redacted>"));
    assert!(shown.contains(&hex::encode(id.fingerprint())));
    let pem = id.key_pem();
    let body: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    assert!(!shown.contains(&body[..16]));
}

#[test]
fn pem__should_round_trip_and_refuse_mismatched_key() {
    // Given an identity written as PEM
    let id = generate_tls_identity("node-a").unwrap();
    let cert_pem = id.cert_pem();
    let key_pem = id.key_pem();
    assert!(cert_pem.starts_with("-----BEGIN CERTIFICATE-----\n"));
    assert!(key_pem.starts_with("-----BEGIN PRIVATE KEY-----\n"));
    assert!(cert_pem.lines().all(|l| l.len() <= 64));
    assert_eq!(cert_pem.len(), pem_len("CERTIFICATE", id.cert_der.len()));
    assert_eq!(key_pem.len(), pem_len("PRIVATE KEY", id.key.0.len()));

    // When it is read back, then it is the same identity
    assert_eq!(cert_der_from_pem(&cert_pem).unwrap(), id.cert_der);
    let back = TlsIdentity::from_pem(&cert_pem, &key_pem).unwrap();
    assert_eq!(back.cert_der, id.cert_der);
    assert_eq!(back.key.0, id.key.0);

    // And a key of another identity, or garbage, is refused
    let other = generate_tls_identity("node-a").unwrap();
    assert!(TlsIdentity::from_pem(&cert_pem, &other.key_pem()).is_err());
    assert!(TlsIdentity::from_pem(&cert_pem, "not a key").is_err());
    assert!(TlsIdentity::from_pem(&key_pem, &key_pem).is_err());
    assert!(
        cert_der_from_pem("-----BEGIN CERTIFICATE-----\n%%%\n-----END CERTIFICATE-----\n").is_err()
    );
}

#[test]
fn pem_encode__should_match_rfc4648_vectors() {
    for (input, expected) in [
        (&b""[..], ""),
        (b"f", "Zg=="),
        (b"fo", "Zm8="),
        (b"foo", "Zm9v"),
        (b"foob", "Zm9vYg=="),
        (b"fooba", "Zm9vYmE="),
        (b"foobar", "Zm9vYmFy"),
    ] {
        let mut out = String::new();
        pem_encode_into(&mut out, "X", input);
        let body: String = out.lines().filter(|l| !l.starts_with("-----")).collect();
        assert_eq!(body, expected);
        assert_eq!(out.len(), pem_len("X", input.len()));
    }
}

#[test]
fn config__should_refuse_empty_pins() {
    let id = generate_tls_identity("node-a").unwrap();
    assert!(server_config(&id, vec![]).is_err());
    assert!(client_config(&id, vec![]).is_err());
    assert!(generate_tls_identity("not a dns name!").is_err());
}

/// A raw gRPC-shaped service that answers with the caller's fingerprint
/// in a response header, as seen through [`peer_fingerprint`].
#[derive(Clone)]
struct WhoAmI;

impl tonic::server::NamedService for WhoAmI {
    const NAME: &'static str = "tss.test.WhoAmI";
}

impl tower::Service<http::Request<tonic::body::Body>> for WhoAmI {
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = std::future::Ready<Result<Self::Response, Infallible>>;

    fn poll_ready(
        &mut self,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Infallible>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<tonic::body::Body>) -> Self::Future {
        let req = tonic::Request::from_http(req);
        let who = peer_fingerprint(&req).map_or_else(|| "none".to_owned(), hex::encode);
        let resp = http::Response::builder()
            .header("content-type", "application/grpc")
            .header("grpc-status", "0")
            .header("x-peer-fingerprint", who)
            .body(tonic::body::Body::empty())
            .unwrap();
        std::future::ready(Ok(resp))
    }
}

fn who_am_i_request(addr: SocketAddr) -> http::Request<tonic::body::Body> {
    http::Request::builder()
        .method("POST")
        .uri(format!("http://{addr}/tss.test.WhoAmI/Get"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(tonic::body::Body::empty())
        .unwrap()
}

async fn who_am_i(
    channel: &mut tonic::transport::Channel,
    addr: SocketAddr,
) -> Result<String, tonic::transport::Error> {
    let resp = tokio::time::timeout(WAIT, async {
        std::future::poll_fn(|cx| channel.poll_ready(cx)).await?;
        channel.call(who_am_i_request(addr)).await
    })
    .await
    .expect("gRPC call timed out")?;
    Ok(resp
        .headers()
        .get("x-peer-fingerprint")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned())
}

async fn serve_who_am_i(listener: TcpListener, config: Arc<rustls::ServerConfig>) {
    let incoming = tls_incoming(listener, config);
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(WhoAmI)
            .serve_with_incoming(incoming),
    );
}

#[tokio::test]
async fn connect__should_reach_tonic_server_which_sees_client_fingerprint() {
    // Given a tonic server over tls_incoming, pinning the client
    let server_id = generate_tls_identity("node-a").unwrap();
    let client_id = generate_tls_identity("node-b").unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    serve_who_am_i(
        listener,
        server_config(&server_id, vec![client_id.cert_der.clone()]).unwrap(),
    )
    .await;

    // When the client connects and calls
    let config = client_config(&client_id, server_id.cert_der.clone()).unwrap();
    let mut channel = connect(addr, config, WAIT).await.unwrap();
    let who = who_am_i(&mut channel, addr).await.unwrap();

    // Then the handler saw the client's fingerprint via peer_fingerprint
    assert_eq!(who, hex::encode(client_id.fingerprint()));
}

#[tokio::test]
async fn connect__should_fail_against_server_with_unpinned_cert() {
    let server_id = generate_tls_identity("node-a").unwrap();
    let impostor = generate_tls_identity("node-a").unwrap();
    let client_id = generate_tls_identity("node-b").unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    serve_who_am_i(
        listener,
        server_config(&impostor, vec![client_id.cert_der.clone()]).unwrap(),
    )
    .await;

    let config = client_config(&client_id, server_id.cert_der.clone()).unwrap();
    assert!(connect(addr, config, WAIT).await.is_err());
}

#[tokio::test]
async fn connect_lazy__should_start_while_peer_down_and_reconnect_later() {
    // Given a lazy channel to an address where nothing listens yet
    let server_id = generate_tls_identity("node-a").unwrap();
    let client_id = generate_tls_identity("node-b").unwrap();
    let addr = {
        let probe = TcpListener::bind("127.0.0.1:0").await.unwrap();
        probe.local_addr().unwrap()
    };
    let config = client_config(&client_id, server_id.cert_der.clone()).unwrap();
    let mut channel = connect_lazy(addr, config, Duration::from_secs(1)).unwrap();

    // When a call is made while the peer is down, then it fails
    assert!(who_am_i(&mut channel, addr).await.is_err());

    // And when the peer comes up, the same channel reaches it
    let listener = TcpListener::bind(addr).await.unwrap();
    serve_who_am_i(
        listener,
        server_config(&server_id, vec![client_id.cert_der.clone()]).unwrap(),
    )
    .await;
    let mut who = who_am_i(&mut channel, addr).await;
    for _ in 0..20 {
        if who.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        who = who_am_i(&mut channel, addr).await;
    }
    assert_eq!(who.unwrap(), hex::encode(client_id.fingerprint()));
}
