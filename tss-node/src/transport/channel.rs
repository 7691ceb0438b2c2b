//! The client side: gRPC channels over our own TLS connector.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use tokio::net::TcpStream;

/// by our connector, not by tonic.
fn endpoint(
    addr: SocketAddr,
    connect_timeout: Duration,
) -> Result<tonic::transport::Endpoint, tonic::transport::Error> {
    let endpoint = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))?;
    Ok(endpoint.connect_timeout(connect_timeout))
}

/// A connector dialling `addr` (whatever the URI says) and running our TLS
/// client handshake. tonic applies the connect timeout to the whole of it.
fn tls_connector(
    addr: SocketAddr,
    config: Arc<rustls::ClientConfig>,
) -> impl tower::Service<
    tonic::transport::Uri,
    Response = TokioIo<tokio_rustls::client::TlsStream<TcpStream>>,
    Error = io::Error,
    Future = impl std::future::Future<
        Output = Result<TokioIo<tokio_rustls::client::TlsStream<TcpStream>>, io::Error>,
    > + Send,
> + Send
       + Clone
       + 'static {
    let tls = tokio_rustls::TlsConnector::from(config);
    tower::service_fn(move |_uri: tonic::transport::Uri| {
        let tls = tls.clone();
        async move {
            let tcp = TcpStream::connect(addr).await?;
            tcp.set_nodelay(true)?;
            // The pinned-certificate verifier ignores the name; an IP name
            // also keeps SNI out of the ClientHello.
            let stream = tls.connect(ServerName::from(addr.ip()), tcp).await?;
            Ok(TokioIo::new(stream))
        }
    })
}

/// Opens a gRPC channel to the node at `addr` over mutual TLS with `config`
/// (from [`client_config`], which pins that node's certificate).
///
/// Fails if the TCP connection or the TLS handshake fails or exceeds
/// `connect_timeout`. Under TLS 1.3 the server checks our certificate after
/// our side of the handshake completes, so a server that does not pin us is
/// noticed on the first call, not here.
pub async fn connect(
    addr: SocketAddr,
    config: Arc<rustls::ClientConfig>,
    connect_timeout: Duration,
) -> Result<tonic::transport::Channel, tonic::transport::Error> {
    endpoint(addr, connect_timeout)?
        .connect_with_connector(tls_connector(addr, config))
        .await
}

/// Like [`connect`], but connects on first use and reconnects on later calls
/// after a failure, so a peer that is down when the node starts does not
/// stop it from starting.
pub fn connect_lazy(
    addr: SocketAddr,
    config: Arc<rustls::ClientConfig>,
    connect_timeout: Duration,
) -> Result<tonic::transport::Channel, tonic::transport::Error> {
    Ok(endpoint(addr, connect_timeout)?.connect_with_connector_lazy(tls_connector(addr, config)))
}
