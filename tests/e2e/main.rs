//! End-to-end tests: three real `tss-node` processes on 127.0.0.1, each in
//! its own temporary folder, talking pinned mutual TLS. Every signature is
//! checked with `k256`, independently of the engine.
//!
//! One module per scenario; `harness` starts and stops the cluster.

#![allow(non_snake_case)]

// Shared with tests/reliability, which uses more of it.
#[allow(dead_code)]
mod harness;

mod auth;
mod backup;
mod bad_input;
mod btc_consensus;
mod cli;
mod frost;
mod frost_pool;
mod gateway_example;
mod policy;
mod pool;
mod signing;
mod taproot_psbt;
mod transcript;
