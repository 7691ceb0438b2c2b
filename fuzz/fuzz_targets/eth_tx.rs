//! Unsigned Ethereum transactions from clients (`SignEthereumTransaction`,
//! and co-signers' proposals).
//!
//! Under test: `tss_core::chain::eth::decode_unsigned`, then what the node
//! does with an accepted transaction: `tss_node::request::decode::ethereum` (chain
//! check, digest), the strict ABI decoder on the calldata of contract
//! calls (`eth::abi::Function::decode`, as policy runs it for listed
//! functions) and `eth::encode_signed` with a fixed signature.
#![no_main]

#[path = "common.rs"]
mod common;

use libfuzzer_sys::fuzz_target;
use tss_core::chain::{eth, EcdsaSignature};

/// Signatures a policy might list (static, dynamic array, bytes, string).
const LISTED: [&str; 3] = [
    "swapExactTokensForTokens(uint256,uint256,address[],address,uint256)",
    "f(bytes,bool,int8,bytes4)",
    "g(string,uint16[],address)",
];

fuzz_target!(|data: &[u8]| {
    let Ok(tx) = eth::decode_unsigned(data) else {
        return;
    };
    let decoded = tss_node::request::decode::ethereum(data, tx.chain_id, &common::BTC_PUBKEY)
        .expect("a transaction decode_unsigned accepts is signable for its own chain");
    assert_eq!(decoded.digest, tx.signing_hash);
    let _ = decoded.intent();
    if let eth::Call::ContractCall { calldata, .. } = &tx.call {
        for sig in LISTED {
            let f = eth::abi::Function::parse(sig).expect("a supported signature");
            // Any selector: the decoder must refuse or decode, never panic.
            let mut data = f.selector().to_vec();
            data.extend_from_slice(calldata.get(4..).unwrap_or_default());
            let _ = f.decode(&data);
        }
    }
    let sig = EcdsaSignature {
        r: [0x11; 32],
        s: [0x22; 32],
        v: 1,
        der: Vec::new(),
    };
    let _ = eth::encode_signed(data, &sig);
});
