//! Reliability tests (issue #6): real `tss-node` processes on 127.0.0.1
//! under crashes, partitions, load and hostile peers.
//!
//! The fast cases run with `cargo test --workspace` (CI). The long ones
//! (50+ seeded kills, 1000 signs from 64 clients) are `#[ignore]`d and run
//! with the one command of `docs/RELIABILITY.md`:
//!
//! ```text
//! cargo test --release -p tss-node --test reliability -- --include-ignored --nocapture
//! ```

#![allow(non_snake_case)]

mod faults;
#[path = "../e2e/harness.rs"]
#[allow(dead_code)]
mod harness;
mod hostile;
mod load;
mod lying;
mod partition;
mod proxy;
mod secrets;
