//! The server side: TLS handshakes off the accept loop, and the
//! authenticated caller of a request.

use std::io;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, Semaphore};
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::Stream;

use super::{fingerprint, Fingerprint};

/// Longest time a server-side TLS handshake may take before the connection is dropped.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Most connections accepted but not yet handed to the server (handshaking
/// or queued). When reached, the accept loop waits, leaving further
/// connections in the kernel's listen backlog.
const MAX_PENDING_CONNECTIONS: usize = 256;

/// Capacity of the queue of established connections handed to the server.
const INCOMING_QUEUE: usize = 32;

/// Pause after an accept error that is not about one connection (e.g. out of
/// file descriptors), so the loop does not spin.
const ACCEPT_ERROR_BACKOFF: Duration = Duration::from_millis(100);

/// Accepts TCP connections on `listener` and yields those that complete a
/// TLS handshake under `config`, for tonic's `Server::serve_with_incoming`.
///
/// Each handshake runs in its own task, limited to [`HANDSHAKE_TIMEOUT`].
/// Failed or timed-out handshakes are logged at debug level with the peer's
/// address and dropped; they never end the stream. The stream yields only
/// `Ok` items (the `Result` is what tonic expects). Dropping the stream stops
/// the accept loop and closes the listener.
///
/// # Panics
///
/// Must be called from within a Tokio runtime (it spawns the accept loop).
pub fn tls_incoming(
    listener: TcpListener,
    config: Arc<rustls::ServerConfig>,
) -> impl Stream<Item = Result<tokio_rustls::server::TlsStream<TcpStream>, io::Error>> {
    let (tx, rx) = mpsc::channel(INCOMING_QUEUE);
    tokio::spawn(accept_loop(
        listener,
        tokio_rustls::TlsAcceptor::from(config),
        tx,
    ));
    ReceiverStream::new(rx)
}

type IncomingSender = mpsc::Sender<Result<tokio_rustls::server::TlsStream<TcpStream>, io::Error>>;

async fn accept_loop(
    listener: TcpListener,
    acceptor: tokio_rustls::TlsAcceptor,
    tx: IncomingSender,
) {
    let pending = Arc::new(Semaphore::new(MAX_PENDING_CONNECTIONS));
    loop {
        let permit = tokio::select! {
            () = tx.closed() => break,
            permit = Arc::clone(&pending).acquire_owned() => match permit {
                Ok(permit) => permit,
                // The semaphore is never closed.
                Err(_) => break,
            },
        };
        let (tcp, peer) = tokio::select! {
            () = tx.closed() => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) if is_per_connection_error(&e) => {
                    tracing::debug!(error = %e, "TCP accept failed");
                    continue;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "TCP accept failed; backing off");
                    tokio::time::sleep(ACCEPT_ERROR_BACKOFF).await;
                    continue;
                }
            },
        };
        let acceptor = acceptor.clone();
        let tx = tx.clone();
        tokio::spawn(async move {
            // Held until the connection is handed over, bounding the tasks.
            let _permit = permit;
            if let Err(e) = tcp.set_nodelay(true) {
                tracing::debug!(%peer, error = %e, "could not set TCP_NODELAY");
            }
            let stream = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                Ok(Ok(stream)) => stream,
                Ok(Err(e)) => {
                    tracing::debug!(%peer, error = %e, "TLS handshake failed");
                    return;
                }
                Err(_) => {
                    tracing::debug!(%peer, timeout = ?HANDSHAKE_TIMEOUT, "TLS handshake timed out");
                    return;
                }
            };
            let client = stream
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|certs| certs.first())
                .map(|cert| hex::encode(fingerprint(cert)));
            tracing::debug!(%peer, fingerprint = ?client, "TLS connection established");
            if tx.send(Ok(stream)).await.is_err() {
                tracing::debug!(%peer, "TLS connection dropped: server is shutting down");
            }
        });
    }
}

/// Accept errors that concern one connection only; the next accept may succeed at once.
fn is_per_connection_error(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionRefused
            | io::ErrorKind::Interrupted
    )
}

/// The fingerprint of the authenticated caller of a request served over
/// [`tls_incoming`]: the first (end-entity) certificate it presented.
///
/// `None` if the request did not come over such a connection (for example
/// in a unit test that builds a `Request` by hand); treat that as
/// unauthenticated.
pub fn peer_fingerprint<T>(req: &tonic::Request<T>) -> Option<Fingerprint> {
    let certs = req.peer_certs()?;
    certs.first().map(|cert| fingerprint(cert))
}
