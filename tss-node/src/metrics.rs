//! Prometheus metrics: what the daemon counts, and the endpoint that serves it.
//!
//! [`Metrics`] owns one `prometheus-client` registry (every name prefixed
//! `tss_`) and typed handles to each metric; code that does the work calls its
//! methods, [`serve`] exposes the OpenMetrics text on `GET /metrics`.
//!
//! | metric | type | labels |
//! |---|---|---|
//! | `tss_sign_duration_seconds` | histogram | `path` (`pool`, `full`) |
//! | `tss_sessions_running` | gauge | `kind` |
//! | `tss_sessions_failed_total` | counter | `kind` |
//! | `tss_presign_pool_level` | gauge | `key_id`, `pair` |
//! | `tss_presignatures_generated_total` | counter | `key_id`, `pair` |
//! | `tss_presignatures_consumed_total` | counter | `key_id`, `pair` |
//! | `tss_presign_cpu_seconds` | histogram | none |
//! | `tss_presign_wall_seconds` | histogram | none |
//! | `tss_peer_rpc_errors_total` | counter | `peer` |
//!
//! Label values come only from configuration (party names, key ids) and from
//! fixed session kinds, so the number of series stays bounded. Nothing secret
//! (shares, nonces, presignatures, messages, request ids, client payloads) is
//! ever a label or a value. Label values are escaped by the encoder, so a key
//! id cannot break the exposition.
//!
//! The endpoint is plain HTTP/1.1 without authentication. Metrics carry no
//! secrets, but they do reveal activity (signing rate, pool levels, which peer
//! fails): bind it to a private interface (loopback or a monitoring network),
//! never to the address the gRPC API or the peers use.

use std::convert::Infallible;
use std::fmt::{self, Write as _};
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::Full;
use hyper::body::Bytes;
use hyper::header::{HeaderValue, ALLOW, CONTENT_TYPE};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::{Registry, Unit};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};
use tokio::task::{JoinError, JoinSet};

/// The session kinds the daemon runs; their series exist from start-up (at 0).
pub const SESSION_KINDS: [&str; 4] = ["aux_info", "keygen", "sign", "presign"];

/// The only path [`serve`] answers with metrics.
pub const METRICS_PATH: &str = "/metrics";

/// The content type of what `prometheus-client` encodes.
const OPENMETRICS_CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
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

/// How a signature was produced: the `path` label of `tss_sign_duration_seconds`.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
#[non_exhaustive]
pub enum SignPath {
    /// One round over a stored presignature (`"pool"`).
    Pool,
    /// The full interactive protocol (`"full"`).
    Full,
}

impl SignPath {
    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            SignPath::Pool => "pool",
            SignPath::Full => "full",
        }
    }
}

impl EncodeLabelValue for SignPath {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), fmt::Error> {
        encoder.write_str(self.as_str())
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PathLabels {
    path: SignPath,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabels {
    kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PoolLabels {
    key_id: String,
    pair: String,
}

impl PoolLabels {
    fn new(key_id: &str, pair: &str) -> Self {
        Self {
            key_id: key_id.to_owned(),
            pair: pair.to_owned(),
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PeerLabels {
    peer: String,
}

type HistogramFamily<S> = Family<S, Histogram, fn() -> Histogram>;

/// Sign latency: 0.5 ms doubling to about 33 s (17 bounds, then `+Inf`).
fn sign_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.0005, 2.0, 17))
}

/// Presignature cost: 10 ms doubling to about 164 s (15 bounds, then `+Inf`);
/// pure-Rust and GMP builds both land well inside.
fn presign_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.01, 2.0, 15))
}

/// The daemon's metrics. Cheap to update from any thread; hold it in an `Arc`.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    sign_duration: HistogramFamily<PathLabels>,
    sessions_running: Family<KindLabels, Gauge>,
    sessions_failed: Family<KindLabels, Counter>,
    pool_level: Family<PoolLabels, Gauge<u64, AtomicU64>>,
    presignatures_generated: Family<PoolLabels, Counter>,
    presignatures_consumed: Family<PoolLabels, Counter>,
    presign_cpu: Histogram,
    presign_wall: Histogram,
    peer_rpc_errors: Family<PeerLabels, Counter>,
}

impl Metrics {
    /// All metrics registered, at zero.
    pub fn new() -> Arc<Metrics> {
        let sign_duration = HistogramFamily::new_with_constructor(sign_histogram as fn() -> _);
        let sessions_running = Family::<KindLabels, Gauge>::default();
        let sessions_failed = Family::<KindLabels, Counter>::default();
        let pool_level = Family::<PoolLabels, Gauge<u64, AtomicU64>>::default();
        let presignatures_generated = Family::<PoolLabels, Counter>::default();
        let presignatures_consumed = Family::<PoolLabels, Counter>::default();
        let presign_cpu = presign_histogram();
        let presign_wall = presign_histogram();
        let peer_rpc_errors = Family::<PeerLabels, Counter>::default();

        // Series with known labels exist from the start, so that `rate()` and
        // `increase()` see the first event. (`get_or_create` creates the
        // series; its read guard is released at once.)
        for path in [SignPath::Pool, SignPath::Full] {
            drop(sign_duration.get_or_create(&PathLabels { path }));
        }
        for kind in SESSION_KINDS {
            drop(sessions_running.get_or_create(&KindLabels { kind }));
            drop(sessions_failed.get_or_create(&KindLabels { kind }));
        }

        let mut registry = Registry::with_prefix("tss");
        registry.register_with_unit(
            "sign_duration",
            "Time to produce a signature, by path",
            Unit::Seconds,
            sign_duration.clone(),
        );
        registry.register(
            "sessions_running",
            "Protocol sessions this node is running, by kind",
            sessions_running.clone(),
        );
        registry.register(
            "sessions_failed",
            "Protocol sessions that failed on this node, by kind",
            sessions_failed.clone(),
        );
        registry.register(
            "presign_pool_level",
            "Presignatures ready, by key and signer pair",
            pool_level.clone(),
        );
        registry.register(
            "presignatures_generated",
            "Presignatures generated, by key and signer pair",
            presignatures_generated.clone(),
        );
        registry.register(
            "presignatures_consumed",
            "Presignatures used for a signature, by key and signer pair",
            presignatures_consumed.clone(),
        );
        registry.register_with_unit(
            "presign_cpu",
            "CPU time of this node's engine thread per presignature",
            Unit::Seconds,
            presign_cpu.clone(),
        );
        registry.register_with_unit(
            "presign_wall",
            "Wall-clock time per presignature",
            Unit::Seconds,
            presign_wall.clone(),
        );
        registry.register(
            "peer_rpc_errors",
            "Failed RPCs to a peer, by peer name",
            peer_rpc_errors.clone(),
        );

        Arc::new(Metrics {
            registry,
            sign_duration,
            sessions_running,
            sessions_failed,
            pool_level,
            presignatures_generated,
            presignatures_consumed,
            presign_cpu,
            presign_wall,
            peer_rpc_errors,
        })
    }

    /// Records how long one signature took on `path`.
    pub fn observe_sign(&self, path: SignPath, elapsed: Duration) {
        self.sign_duration
            .get_or_create(&PathLabels { path })
            .observe(elapsed.as_secs_f64());
    }

    /// Counts one running session of `kind` (one of [`SESSION_KINDS`]) until
    /// the returned guard is dropped.
    pub fn session_running(&self, kind: &'static str) -> SessionGuard {
        let gauge = self
            .sessions_running
            .get_or_create_owned(&KindLabels { kind });
        gauge.inc();
        SessionGuard { gauge }
    }

    /// Counts one failed session of `kind` (one of [`SESSION_KINDS`]).
    pub fn session_failed(&self, kind: &'static str) {
        self.sessions_failed
            .get_or_create(&KindLabels { kind })
            .inc();
    }

    /// Sets how many presignatures are ready for `key_id` and signer `pair`
    /// (for example `"alice+bob"`).
    pub fn set_pool_level(&self, key_id: &str, pair: &str, level: u64) {
        self.pool_level
            .get_or_create(&PoolLabels::new(key_id, pair))
            .set(level);
    }

    /// Counts one presignature generated for `key_id` and signer `pair`.
    pub fn presignature_generated(&self, key_id: &str, pair: &str) {
        self.presignatures_generated
            .get_or_create(&PoolLabels::new(key_id, pair))
            .inc();
    }

    /// Counts one presignature used for a signature, for `key_id` and `pair`.
    pub fn presignature_consumed(&self, key_id: &str, pair: &str) {
        self.presignatures_consumed
            .get_or_create(&PoolLabels::new(key_id, pair))
            .inc();
    }

    /// Records the cost of one presignature: `cpu` is the CPU time of this
    /// node's engine thread (a difference of [`thread_cpu_time`] readings
    /// taken on that thread), `wall` the elapsed time.
    pub fn observe_presign(&self, cpu: Duration, wall: Duration) {
        self.presign_cpu.observe(cpu.as_secs_f64());
        self.presign_wall.observe(wall.as_secs_f64());
    }

    /// Counts one failed RPC to `peer` (its configured name).
    pub fn peer_rpc_error(&self, peer: &str) {
        self.peer_rpc_errors
            .get_or_create(&PeerLabels {
                peer: peer.to_owned(),
            })
            .inc();
    }

    /// The OpenMetrics text exposition, ending in `# EOF`.
    ///
    /// Encoding into a `String` with classic histograms cannot fail; should it
    /// ever, the error is logged and the result is empty.
    pub fn encode(&self) -> String {
        self.try_encode().unwrap_or_else(|error| {
            tracing::error!(%error, "encoding metrics failed");
            String::new()
        })
    }

    fn try_encode(&self) -> Result<String, fmt::Error> {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry)?;
        Ok(text)
    }
}

/// One running session in `tss_sessions_running`; dropping it ends the count.
#[derive(Debug)]
#[must_use = "the session counts as running only while the guard is held"]
pub struct SessionGuard {
    gauge: Gauge,
}

impl Drop for SessionGuard {
    fn drop(&mut self) {
        self.gauge.dec();
    }
}

/// CPU time consumed so far by the calling thread
/// (`clock_gettime(CLOCK_THREAD_CPUTIME_ID)`).
///
/// Only differences of two readings on the same OS thread mean anything. An
/// async task can move between threads at every `.await`, so measure work that
/// runs on one thread (a blocking task, a dedicated thread, or a
/// current-thread runtime). Returns zero where the clock is not available.
pub fn thread_cpu_time() -> Duration {
    #[cfg(any(
        target_os = "linux",
        target_os = "android",
        target_os = "macos",
        target_os = "ios",
        target_os = "freebsd",
        target_os = "openbsd",
        target_os = "dragonfly"
    ))]
    {
        let now = rustix::time::clock_gettime(rustix::time::ClockId::ThreadCPUTime);
        // The kernel reports non-negative seconds; a negative one reads as 0.
        Duration::try_from(now).unwrap_or(Duration::ZERO)
    }
    #[cfg(not(any(
        target_os = "linux",
        target_os = "android",
        target_os = "macos",
        target_os = "ios",
        target_os = "freebsd",
        target_os = "openbsd",
        target_os = "dragonfly"
    )))]
    {
        Duration::ZERO
    }
}

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

#[cfg(test)]
#[allow(non_snake_case)]
mod tests {
    use super::*;

    use std::time::Instant;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::sync::oneshot;

    /// How long a test waits for something that should happen promptly.
    const WAIT: Duration = Duration::from_secs(5);

    fn line_value<'a>(text: &'a str, series: &str) -> Option<&'a str> {
        text.lines()
            .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
    }

    #[test]
    fn encode__should_hold_counter_values_histogram_counts_and_labels() {
        // Given
        let metrics = Metrics::new();

        // When
        metrics.observe_sign(SignPath::Pool, Duration::from_micros(1_500));
        metrics.observe_sign(SignPath::Pool, Duration::from_millis(40));
        metrics.observe_sign(SignPath::Full, Duration::from_secs(2));
        metrics.session_failed("sign");
        metrics.session_failed("sign");
        for _ in 0..3 {
            metrics.presignature_generated("btc-1", "alice+bob");
        }
        metrics.presignature_consumed("btc-1", "alice+bob");
        metrics.set_pool_level("btc-1", "alice+bob", 2);
        metrics.set_pool_level("btc-1", "alice+carol", 5);
        metrics.observe_presign(Duration::from_millis(800), Duration::from_secs(3));
        metrics.peer_rpc_error("bob");
        let text = metrics.encode();

        // Then
        let expect = [
            (r#"tss_sign_duration_seconds_count{path="pool"}"#, "2"),
            (
                r#"tss_sign_duration_seconds_bucket{le="0.002",path="pool"}"#,
                "1",
            ),
            (
                r#"tss_sign_duration_seconds_bucket{le="0.064",path="pool"}"#,
                "2",
            ),
            (r#"tss_sign_duration_seconds_count{path="full"}"#, "1"),
            (
                r#"tss_sign_duration_seconds_bucket{le="+Inf",path="full"}"#,
                "1",
            ),
            (r#"tss_sessions_failed_total{kind="sign"}"#, "2"),
            (r#"tss_sessions_failed_total{kind="keygen"}"#, "0"),
            (r#"tss_sessions_running{kind="presign"}"#, "0"),
            (
                r#"tss_presignatures_generated_total{key_id="btc-1",pair="alice+bob"}"#,
                "3",
            ),
            (
                r#"tss_presignatures_consumed_total{key_id="btc-1",pair="alice+bob"}"#,
                "1",
            ),
            (
                r#"tss_presign_pool_level{key_id="btc-1",pair="alice+bob"}"#,
                "2",
            ),
            (
                r#"tss_presign_pool_level{key_id="btc-1",pair="alice+carol"}"#,
                "5",
            ),
            ("tss_presign_cpu_seconds_count", "1"),
            ("tss_presign_cpu_seconds_sum", "0.8"),
            ("tss_presign_wall_seconds_count", "1"),
            ("tss_presign_wall_seconds_sum", "3.0"),
            (r#"tss_peer_rpc_errors_total{peer="bob"}"#, "1"),
        ];
        for (series, value) in expect {
            assert_eq!(
                line_value(&text, series),
                Some(value),
                "{series} in\n{text}"
            );
        }
        assert!(text.contains("# TYPE tss_sign_duration_seconds histogram\n"));
        assert!(text.contains("# UNIT tss_sign_duration_seconds seconds\n"));
        assert!(text.ends_with("# EOF\n"));
    }

    #[test]
    fn encode__should_escape_label_values() {
        // Given a key id that would break the exposition if written raw
        let metrics = Metrics::new();

        // When
        metrics.set_pool_level("k\"}\nx", "alice+bob", 1);

        // Then
        let text = metrics.encode();
        assert_eq!(
            line_value(
                &text,
                r#"tss_presign_pool_level{key_id="k\"}\nx",pair="alice+bob"}"#
            ),
            Some("1"),
            "{text}"
        );
    }

    #[test]
    fn session_running__should_count_until_guard_is_dropped() {
        // Given
        let metrics = Metrics::new();
        let series = r#"tss_sessions_running{kind="sign"}"#;

        // When
        let first = metrics.session_running("sign");
        let second = metrics.session_running("sign");

        // Then
        assert_eq!(line_value(&metrics.encode(), series), Some("2"));
        drop(first);
        assert_eq!(line_value(&metrics.encode(), series), Some("1"));
        drop(second);
        assert_eq!(line_value(&metrics.encode(), series), Some("0"));
    }

    #[test]
    fn thread_cpu_time__should_grow_while_the_thread_burns_cpu() {
        // Given
        let before = thread_cpu_time();
        let start = Instant::now();

        // When the thread spins until its clock has advanced 50 ms (however
        // loaded the machine is)
        let mut x = 0u64;
        let spun = loop {
            for _ in 0..10_000 {
                x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
            }
            let spun = thread_cpu_time().saturating_sub(before);
            if spun >= Duration::from_millis(50) {
                break spun;
            }
            assert!(start.elapsed() < WAIT, "CPU time stuck at {spun:?}");
        };
        let wall = start.elapsed();
        // and then sleeps
        std::thread::sleep(Duration::from_millis(200));
        let slept = thread_cpu_time().saturating_sub(before) - spun;

        // Then it counts this thread only: no more than the wall time passed,
        // and next to nothing while asleep
        assert!(
            spun <= wall + Duration::from_millis(5),
            "{spun:?} > {wall:?}"
        );
        assert!(slept < Duration::from_millis(100), "slept {slept:?}");
    }

    /// Sends `request` raw and returns everything the server wrote before closing.
    async fn exchange(addr: SocketAddr, request: &[u8]) -> String {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        stream.write_all(request).await.unwrap();
        let mut out = Vec::new();
        // A reset after the response is fine: only what arrived matters.
        let _ = tokio::time::timeout(WAIT, stream.read_to_end(&mut out))
            .await
            .expect("the server closes the connection");
        String::from_utf8_lossy(&out).into_owned()
    }

    async fn start() -> (
        SocketAddr,
        Arc<Metrics>,
        oneshot::Sender<()>,
        tokio::task::JoinHandle<io::Result<()>>,
    ) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let metrics = Metrics::new();
        let (stop, stopped) = oneshot::channel::<()>();
        let server = tokio::spawn(serve(listener, Arc::clone(&metrics), async move {
            let _ = stopped.await;
        }));
        (addr, metrics, stop, server)
    }

    #[tokio::test]
    async fn serve__should_answer_metrics_and_404_elsewhere() {
        // Given
        let (addr, metrics, stop, server) = start().await;
        metrics.observe_sign(SignPath::Pool, Duration::from_millis(3));

        // When
        let ok = exchange(addr, b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n").await;
        let missing = exchange(addr, b"GET /other HTTP/1.1\r\nHost: x\r\n\r\n").await;
        let post = exchange(
            addr,
            b"POST /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n",
        )
        .await;
        let head = exchange(addr, b"HEAD /metrics HTTP/1.1\r\nHost: x\r\n\r\n").await;
        let garbage = exchange(addr, b"\x00\x01\x02 nonsense\r\n\r\n").await;
        let after = exchange(addr, b"GET /metrics HTTP/1.0\r\n\r\n").await;

        // Then
        assert!(ok.starts_with("HTTP/1.1 200 OK\r\n"), "{ok}");
        assert!(
            ok.to_ascii_lowercase()
                .contains(&format!("content-type: {OPENMETRICS_CONTENT_TYPE}\r\n")),
            "{ok}"
        );
        assert!(
            ok.contains("\ntss_sign_duration_seconds_count{path=\"pool\"} 1\n"),
            "{ok}"
        );
        assert!(ok.ends_with("# EOF\n"), "{ok}");
        assert!(
            missing.starts_with("HTTP/1.1 404 Not Found\r\n"),
            "{missing}"
        );
        assert!(
            post.starts_with("HTTP/1.1 405 Method Not Allowed\r\n"),
            "{post}"
        );
        assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
        assert!(head.ends_with("\r\n\r\n"), "no body: {head}");
        assert!(!garbage.contains(" 200 "), "{garbage}");
        assert!(
            after.starts_with("HTTP/1.0 200 OK\r\n"),
            "still serving: {after}"
        );

        stop.send(()).unwrap();
        tokio::time::timeout(WAIT, server)
            .await
            .unwrap()
            .unwrap()
            .unwrap();
    }

    #[tokio::test]
    async fn serve__should_stop_promptly_with_an_idle_connection_open() {
        // Given a client that connected and sent nothing
        let (addr, _metrics, stop, server) = start().await;
        let mut idle = TcpStream::connect(addr).await.unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;

        // When
        stop.send(()).unwrap();

        // Then serve returns well before the header timeout, and the idle
        // connection is closed
        tokio::time::timeout(WAIT, server)
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        let mut buf = [0u8; 16];
        let read = tokio::time::timeout(WAIT, idle.read(&mut buf))
            .await
            .unwrap();
        assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
        assert!(TcpStream::connect(addr).await.is_err(), "listener closed");
    }
}

/// Resident memory of this process, in bytes (0 where unknown).
#[derive(Clone, Copy, Debug, Default)]
pub struct Memory {
    /// Resident now (`VmRSS`).
    pub rss: u64,
    /// Highest resident since start (`VmHWM`).
    pub peak: u64,
}

/// Reads `/proc/self/status` (Linux); zeros elsewhere.
pub fn memory() -> Memory {
    let Ok(status) = std::fs::read_to_string("/proc/self/status") else {
        return Memory::default();
    };
    parse_memory(&status)
}

fn parse_memory(status: &str) -> Memory {
    let kib = |field: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(field))
            .and_then(|v| v.trim().strip_suffix("kB"))
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map_or(0, |k| k * 1024)
    };
    Memory {
        rss: kib("VmRSS:"),
        peak: kib("VmHWM:"),
    }
}

#[cfg(test)]
mod memory_tests {
    #[test]
    fn parse_memory__should_read_rss_and_peak_in_bytes() {
        let m = super::parse_memory("Name:\ttss-node\nVmHWM:\t   20480 kB\nVmRSS:\t   10240 kB\n");
        assert_eq!((m.rss, m.peak), (10240 * 1024, 20480 * 1024));
        let none = super::parse_memory("Name:\ttss-node\n");
        assert_eq!((none.rss, none.peak), (0, 0));
    }
    #[test]
    fn memory__should_be_read_on_linux() {
        let m = super::memory();
        assert!(m.rss > 0 && m.peak >= m.rss, "{m:?}");
    }
}
