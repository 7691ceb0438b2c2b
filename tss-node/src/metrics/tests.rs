//! Tests of the metrics and their endpoint.

use std::time::Instant;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::oneshot;

use super::*;
use std::io;
use std::net::SocketAddr;

use tokio::net::{TcpListener, TcpStream};

use super::http::*;
use crate::metrics::http::OPENMETRICS_CONTENT_TYPE;

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

/// The metric families, their types, units and help texts: dashboards
/// and alerts are written against them (README, "Metrics"), so a rename is
/// a breaking change, never a side effect of moving code.
#[test]
fn encode__should_keep_the_metric_names() {
    let metrics = Metrics::new();
    // A family with labels appears once it has a series.
    metrics.set_pool_level("k", "a+b", 1);
    metrics.presignature_generated("k", "a+b");
    metrics.presignature_consumed("k", "a+b");
    metrics.peer_rpc_error("b");
    let text = metrics.encode();
    let meta: Vec<&str> = text.lines().filter(|l| l.starts_with("# ")).collect();
    assert_eq!(meta, METRIC_NAMES, "in\n{text}");
}

const METRIC_NAMES: &[&str] = &[
    "# HELP tss_sign_duration_seconds Time to produce a signature, by path.",
    "# TYPE tss_sign_duration_seconds histogram",
    "# UNIT tss_sign_duration_seconds seconds",
    "# HELP tss_sessions_running Protocol sessions this node is running, by kind.",
    "# TYPE tss_sessions_running gauge",
    "# HELP tss_sessions_failed Protocol sessions that failed on this node, by kind.",
    "# TYPE tss_sessions_failed counter",
    "# HELP tss_presign_pool_level Presignatures ready, by key and signer pair.",
    "# TYPE tss_presign_pool_level gauge",
    "# HELP tss_presignatures_generated Presignatures generated, by key and signer pair.",
    "# TYPE tss_presignatures_generated counter",
    "# HELP tss_presignatures_consumed Presignatures used for a signature, by key and signer pair.",
    "# TYPE tss_presignatures_consumed counter",
    "# HELP tss_presign_cpu_seconds CPU time of this node's engine thread per presignature.",
    "# TYPE tss_presign_cpu_seconds histogram",
    "# UNIT tss_presign_cpu_seconds seconds",
    "# HELP tss_presign_wall_seconds Wall-clock time per presignature.",
    "# TYPE tss_presign_wall_seconds histogram",
    "# UNIT tss_presign_wall_seconds seconds",
    "# HELP tss_peer_rpc_errors Failed RPCs to a peer, by peer name.",
    "# TYPE tss_peer_rpc_errors counter",
    "# EOF",
];

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
