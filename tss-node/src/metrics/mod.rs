//! Prometheus metrics: what the daemon counts, and the endpoint that serves it.
//!
//! [`Metrics`] owns one `prometheus-client` registry (every name prefixed
//! `tss_`) and typed handles to each metric; code that does the work calls its
//! methods, [`http::serve`] exposes the OpenMetrics text on `GET /metrics`.
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
//!
//! [`Metrics`] also keeps the pool counters Health reports
//! ([`Metrics::pool_counters`]); they are not exported to Prometheus.

pub mod http;
#[cfg(test)]
mod tests;

use std::fmt::{self, Write as _};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::{Registry, Unit};

/// The session kinds the daemon runs; their series exist from start-up (at 0).
pub const SESSION_KINDS: [&str; 4] = ["aux_info", "keygen", "sign", "presign"];

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
    counters: PoolCounters,
}

/// The pool counters since start, for Health (not exported to Prometheus).
#[derive(Debug, Default)]
struct PoolCounters {
    generated: AtomicU64,
    consumed: AtomicU64,
    pool_signs: AtomicU64,
    full_signs: AtomicU64,
    fallbacks: AtomicU64,
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
            counters: PoolCounters::default(),
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
        self.counters.generated.fetch_add(1, Ordering::Relaxed);
        self.presignatures_generated
            .get_or_create(&PoolLabels::new(key_id, pair))
            .inc();
    }

    /// Counts one presignature used for a signature, for `key_id` and `pair`.
    pub fn presignature_consumed(&self, key_id: &str, pair: &str) {
        self.counters.consumed.fetch_add(1, Ordering::Relaxed);
        self.presignatures_consumed
            .get_or_create(&PoolLabels::new(key_id, pair))
            .inc();
    }

    /// Counts a signature this node coordinated from a presignature.
    pub fn signed_from_pool(&self) {
        self.counters.pool_signs.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a signature this node coordinated with the full protocol.
    pub fn signed_full(&self) {
        self.counters.full_signs.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a pool attempt that fell back to the full protocol.
    pub fn pool_fell_back(&self) {
        self.counters.fallbacks.fetch_add(1, Ordering::Relaxed);
    }

    /// The pool counters since start (Health).
    pub fn pool_counters(&self) -> proto::v1::PoolCounters {
        let c = &self.counters;
        proto::v1::PoolCounters {
            generated: c.generated.load(Ordering::Relaxed),
            consumed: c.consumed.load(Ordering::Relaxed),
            pool_signs: c.pool_signs.load(Ordering::Relaxed),
            full_signs: c.full_signs.load(Ordering::Relaxed),
            fallbacks: c.fallbacks.load(Ordering::Relaxed),
        }
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
