//! `tss-node`: the threshold-signing daemon, and the pieces `tssctl` shares.
//!
//! - [`config`]: `node.toml` and party entries; [`init`]: creating a party;
//! - [`client_auth`]: clients' signatures over their requests, checked by
//!   every party;
//! - [`tls`]: pinned mutual TLS; [`service`]: the Signer and Peer gRPC services;
//! - [`node`]: shared state, session registry, engine runner; [`claims`]:
//!   one-at-a-time rules;
//! - [`flows`]: one party's part in each session; [`coordinator`]: driving a
//!   request across parties; [`pool`]: the safe-prime pool;
//! - [`transcript`]: keygen transcripts, key certificates and their files;
//! - [`policy`]: what this custodian signs (pure); [`signable`]: requests
//!   decoded by the node itself; [`tx`]: Ethereum and Bitcoin signing;
//!   [`spend`]: rolling limit counters; [`audit`]: the decision log;
//! - [`retry`]: request ids bound to their first request, kept signatures
//!   (a retry through any node gets the original signature);
//! - [`run`]: start-up; [`error`]: the typed RPC error and its status mapping;
//! - [`client`] and [`demo`]: used by `tssctl`.
#![forbid(unsafe_code)]
#![deny(missing_docs)]
#![cfg_attr(test, allow(non_snake_case))]

pub mod admission;
pub mod audit;
pub mod claims;
pub mod client;
pub mod client_auth;
pub mod config;
pub mod coordinator;
pub mod demo;
pub mod error;
pub mod flows;
pub mod init;
pub mod metrics;
pub mod node;
pub mod policy;
pub mod pool;
pub mod presign;
pub mod retry;
pub mod run;
pub mod service;
pub mod signable;
pub mod spend;
pub mod tls;
pub mod transcript;
pub mod tx;

/// Installs the log subscriber (stderr, `RUST_LOG`, else `default_level`).
pub fn init_logging(default_level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_level));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}
