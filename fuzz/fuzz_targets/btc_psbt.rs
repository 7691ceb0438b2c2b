//! PSBTs from clients (`SignBitcoinPsbt`, base64) and co-signers' proposals
//! (binary).
//!
//! Under test: `tss_core::chain::btc::{decode_psbt_base64, analyse_psbt,
//! add_signatures, add_taproot_signatures}` for a fixed key (an ECDSA key's
//! P2WPKH inputs, or a Taproot key's P2TR key-path inputs), then
//! `tss_node::request::decode::bitcoin_input` for each input. The first
//! byte picks the network, whether the rest is base64 text (as a client
//! sends it) or binary, and which kind of key.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tss_core::chain::btc;

#[path = "common.rs"]
mod common;

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let net = btc::Network::ALL[usize::from(mode & 3)];
    let bytes = if mode & 4 != 0 {
        let Ok(text) = std::str::from_utf8(rest) else {
            return;
        };
        match btc::decode_psbt_base64(text) {
            Ok(b) => b,
            Err(_) => return,
        }
    } else {
        rest.to_vec()
    };
    // Finalising with no new signatures: parses, checks, and finalises
    // whatever is already signed.
    let key: &[u8] = if mode & 8 != 0 {
        let _ = btc::add_taproot_signatures(&bytes, &common::TAPROOT_KEY, &[]);
        &common::TAPROOT_KEY
    } else {
        let _ = btc::add_signatures(&bytes, &common::BTC_PUBKEY, &[]);
        &common::BTC_PUBKEY
    };
    let Ok(summary) = btc::analyse_psbt(&bytes, key, net) else {
        return;
    };
    let summary = std::sync::Arc::new(summary);
    for i in 0..summary.inputs.len() {
        if let Ok(d) = tss_node::request::decode::bitcoin_input(&summary, i) {
            let _ = d.intent();
        }
    }
});
