//! Protocol messages inside verified envelopes: a party with a valid
//! identity can still send any payload bytes. `session::delivery` decodes
//! each payload with CBOR into the session's message type before the engine
//! sees it.
//!
//! Under test: `tss_core::ecdsa::decode_cbor` into the aux-info, keygen
//! and signing/presigning message types (`tss_core::ecdsa::{aux, keygen,
//! sign}::Msg`) and the FROST ones (`tss_core::frost::{keygen, sign, pool}::Msg`),
//! as `session::delivery` (and `tss-audit verify`) decode payloads. The
//! first byte picks the protocol.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tss_core::ecdsa::{aux, decode_cbor, keygen, sign};

fuzz_target!(|data: &[u8]| {
    let Some((&which, payload)) = data.split_first() else {
        return;
    };
    match which % 6 {
        0 => {
            let _ = decode_cbor::<aux::Msg>(payload);
        }
        1 => {
            let _ = decode_cbor::<keygen::Msg>(payload);
        }
        2 => {
            let _ = decode_cbor::<sign::Msg>(payload);
        }
        3 => {
            let _ = decode_cbor::<tss_core::frost::keygen::Msg>(payload);
        }
        4 => {
            let _ = decode_cbor::<tss_core::frost::sign::Msg>(payload);
        }
        _ => {
            let _ = decode_cbor::<tss_core::frost::pool::Msg>(payload);
        }
    }
});
