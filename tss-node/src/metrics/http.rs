//! The `/metrics` endpoint: plain HTTP/1 on its own listener, a bounded
//! number of connections, each with read and total timeouts.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::Full;
use hyper::body::Bytes;
use hyper::header::{HeaderValue, ALLOW, CONTENT_TYPE};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};
use tokio::task::{JoinError, JoinSet};

use crate::metrics::Metrics;

/// The only path [`serve`] answers with metrics.
pub const METRICS_PATH: &str = "/metrics";

/// The content type of what `prometheus-client` encodes.
pub(crate) const OPENMETRICS_CONTENT_TYPE: &str =
    "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Scrape connections served at once; further ones wait in the listen backlog.
const MAX_CONNECTIONS: usize = 16;

/// A client must send its request headers within this.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// Upper bound on one connection (keep-alive is off: one request each).
const CONNECTION_TIMEOUT: Duration = Duration::from_secs(30);

/// Pause after a failed `accept` (e.g. out of file descriptors).
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// Read buffer per connection (the smallest hyper allows); bounds header size.
const MAX_BUF_SIZE: usize = 8 * 1024;

/// Serves `GET /metrics` (and `HEAD`) on `listener` until `shutdown` resolves;
/// other paths get 404, other methods on `/metrics` 405.
///
/// Plain HTTP/1.1, no TLS and no authentication: bind `listener` to a private
/// interface (see the module docs). Each connection runs on its own task and
/// answers one request (no keep-alive); at most 16 are served at once, headers
/// must arrive within 10 s and a connection lasts at most 30 s. Bad requests
/// get an HTTP error from hyper or a closed connection, never a panic. Failed
/// `accept`s are logged and retried.
///
/// On shutdown the listener is closed, connections finish their response (or
/// are closed if idle), and this returns once they are done. Fails only if the
/// listener has no local address.
pub async fn serve(
    listener: TcpListener,
    metrics: Arc<Metrics>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    let local = listener.local_addr()?;
    tracing::info!(%local, "metrics endpoint listening (plain HTTP)");

    let mut http = http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .keep_alive(false)
        .max_buf_size(MAX_BUF_SIZE);
    let permits = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut connections = JoinSet::new();
    let mut shutdown = std::pin::pin!(shutdown);

    loop {
        tokio::select! {
            biased;
            () = &mut shutdown => break,
            Some(done) = connections.join_next() => log_finished(done),
            accepted = accept(&listener, &permits) => match accepted {
                Ok((stream, peer, permit)) => {
                    let task = connection(
                        http.clone(),
                        stream,
                        peer,
                        Arc::clone(&metrics),
                        stop_rx.clone(),
                    );
                    connections.spawn(async move {
                        task.await;
                        drop(permit);
                    });
                }
                Err(error) => {
                    tracing::warn!(%error, "metrics endpoint: accept failed");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                }
            },
        }
    }

    drop(listener);
    // No receiver left is fine: then no connection is open.
    let _ = stop_tx.send(true);
    while let Some(done) = connections.join_next().await {
        log_finished(done);
    }
    tracing::info!(%local, "metrics endpoint stopped");
    Ok(())
}

/// Waits for a connection slot, then for a connection.
async fn accept(
    listener: &TcpListener,
    permits: &Arc<Semaphore>,
) -> io::Result<(TcpStream, SocketAddr, OwnedSemaphorePermit)> {
    // The semaphore is never closed; map the impossible error instead of panicking.
    let permit = Arc::clone(permits)
        .acquire_owned()
        .await
        .map_err(io::Error::other)?;
    let (stream, peer) = listener.accept().await?;
    Ok((stream, peer, permit))
}

/// Serves one connection, bounded in time, shutting down gracefully on `stop`.
async fn connection(
    http: http1::Builder,
    stream: TcpStream,
    peer: SocketAddr,
    metrics: Arc<Metrics>,
    mut stop: watch::Receiver<bool>,
) {
    let service = service_fn(move |request: Request<hyper::body::Incoming>| {
        let response = respond(&metrics, &request);
        async move { Ok::<_, Infallible>(response) }
    });
    let conn = http.serve_connection(TokioIo::new(stream), service);
    let mut conn = std::pin::pin!(conn);
    let run = async {
        tokio::select! {
            result = conn.as_mut() => result,
            // Changed or sender gone: either way, the server is stopping.
            _ = stop.changed() => {
                conn.as_mut().graceful_shutdown();
                conn.as_mut().await
            }
        }
    };
    match tokio::time::timeout(CONNECTION_TIMEOUT, run).await {
        Ok(Ok(())) => {}
        Ok(Err(error)) => tracing::debug!(%peer, %error, "metrics connection failed"),
        Err(_) => tracing::debug!(%peer, "metrics connection timed out"),
    }
}

fn log_finished(done: Result<(), JoinError>) {
    if let Err(error) = done {
        tracing::error!(%error, "metrics connection task failed");
    }
}

/// The response to one request; the body of the request is never read.
fn respond<B>(metrics: &Metrics, request: &Request<B>) -> Response<Full<Bytes>> {
    if request.uri().path() != METRICS_PATH {
        return plain(StatusCode::NOT_FOUND, "not found\n");
    }
    if request.method() != Method::GET && request.method() != Method::HEAD {
        let mut response = plain(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n");
        response
            .headers_mut()
            .insert(ALLOW, HeaderValue::from_static("GET, HEAD"));
        return response;
    }
    match metrics.try_encode() {
        Ok(text) => {
            let mut response = Response::new(Full::new(Bytes::from(text)));
            response.headers_mut().insert(
                CONTENT_TYPE,
                HeaderValue::from_static(OPENMETRICS_CONTENT_TYPE),
            );
            response
        }
        Err(error) => {
            tracing::error!(%error, "encoding metrics failed");
            plain(StatusCode::INTERNAL_SERVER_ERROR, "encoding failed\n")
        }
    }
}

fn plain(status: StatusCode, text: &'static str) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from_static(text.as_bytes())));
    *response.status_mut() = status;
    response.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}
