//! Unsigned Ethereum transactions from clients (`SignEthereumTransaction`,
//! and co-signers' proposals).
//!
//! Under test: `tss_core::chain::eth::decode_unsigned`, then what the node
//! does with an accepted transaction: `tss_node::signable::ethereum` (chain
//! check, digest) and `eth::encode_signed` with a fixed signature.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tss_core::chain::{eth, EcdsaSignature};

fuzz_target!(|data: &[u8]| {
    let Ok(tx) = eth::decode_unsigned(data) else {
        return;
    };
    let decoded = tss_node::signable::ethereum(data, tx.chain_id)
        .expect("a transaction decode_unsigned accepts is signable for its own chain");
    assert_eq!(decoded.digest, tx.signing_hash);
    let _ = decoded.intent();
    let sig = EcdsaSignature {
        r: [0x11; 32],
        s: [0x22; 32],
        v: 1,
        der: Vec::new(),
    };
    let _ = eth::encode_signed(data, &sig);
});
