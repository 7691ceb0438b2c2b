//! `tss-node`: the threshold-signing daemon, and the pieces `tssctl`, the
//! benchmark and the tests share. The modules follow the architecture
//! (README, "Layout"); dependencies point one way:
//!
//! `service -> protocol -> request -> state -> {session, policy, primes}
//! -> {keys, transport, config, metrics, error}`
//!
//! (`config` uses `transport` only to read the pinned certificates). Nothing
//! below `protocol` imports it; `.ci/cycles.py` fails CI on any module
//! cycle. Public for the binaries, the benchmark, the fuzz targets and the
//! tests: `client`, `cluster`, `config`, `init`, `run`, `error`, `policy`,
//! `request`, `transport`, and the TEST-ONLY `testing` (the few internals the
//! hostile and lying tests drive); `state`, `protocol`, `keys`, `service`,
//! `session`, `metrics` and `primes` are crate-private.
//!
//! - [`service`]: the Signer and Peer gRPC services: authenticate, convert,
//!   call [`protocol`];
//! - [`protocol`]: one module per protocol, coordinator and co-signer side
//!   together (sign, presign pool, transactions, the key ceremonies);
//! - [`request`]: the request vocabulary: hashing, client authorisation,
//!   the node's own decoding, retry records;
//! - [`state`]: the node's shared state ([`state::Node`]), claims and
//!   admission;
//! - [`session`]: the session registry and the engine runner;
//! - [`policy`]: what this custodian signs (pure), the spend ledger, the
//!   audit log; [`primes`]: the safe-prime pool;
//! - [`transport`]: pinned mutual TLS, the listener, peer channels;
//! - [`keys`]: every record key of the store, in one place;
//! - [`config`], [`init`], [`run`]: configuration, creating a party,
//!   start-up; [`metrics`]: Prometheus; [`error`]: the typed error and its
//!   one mapping to gRPC status;
//! - [`client`] and [`cluster`]: the client library (`tssctl`, gateways) and
//!   local clusters (`tssctl demo`, benchmark, tests).
#![forbid(unsafe_code)]
#![deny(missing_docs)]
#![cfg_attr(test, allow(non_snake_case))]

pub mod backup;
pub mod client;
pub mod cluster;
pub mod config;
pub mod error;
pub mod init;
pub(crate) mod keys;
pub(crate) mod metrics;
pub mod policy;
pub(crate) mod primes;
pub(crate) mod protocol;
pub mod request;
pub mod run;
pub(crate) mod service;
pub(crate) mod session;
pub(crate) mod state;
#[doc(hidden)]
pub mod testing;
pub mod transport;

/// A node's presignature records, read from its store (`tss-node
/// presignatures`: ready ids and the used-presignature records, no secrets).
pub use protocol::presign::{used_records, UsedRecord};

/// Installs the log subscriber (stderr, `RUST_LOG`, else `default_level`).
pub fn init_logging(default_level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_level));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}
