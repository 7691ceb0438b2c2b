//! The operator's policy file (`policy.toml`), read at start-up and on
//! every reload.
//!
//! Under test: `tss_node::policy::Policy::parse`, then `Policy::evaluate`
//! of messages (bare and domain-separated) and a raw-digest request for each pinned client.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tss_core::chain::eth::U256;
use tss_core::ecdsa::sign::HashAlgo;
use tss_node::policy::{Asset, Chain, Intent, Policy, Usage};

/// Client names node.toml would pin (those of `examples/policy.toml` and
/// the unit tests).
const CLIENTS: [&str; 5] = ["gateway-withdrawals", "mm-desk", "gw", "desk", "ops"];

struct Nothing;

impl Usage for Nothing {
    fn used_24h(&self, _: &str, _: Chain, _: Asset) -> U256 {
        U256::ZERO
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(policy) = Policy::parse(text, &CLIENTS) else {
        return;
    };
    for client in CLIENTS {
        for key in ["mm-wallet", "other"] {
            for intent in [
                Intent::Message {
                    hash: HashAlgo::Sha256,
                },
                Intent::Message {
                    hash: HashAlgo::Eip191,
                },
                Intent::RawDigest,
            ] {
                let _ = policy.evaluate(client, key, &intent, &Nothing);
            }
        }
    }
});
