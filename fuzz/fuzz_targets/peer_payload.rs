//! Protocol messages inside verified envelopes: a party with a valid
//! identity can still send any payload bytes. `session::delivery` decodes
//! each payload with CBOR into the session's message type before the engine
//! sees it.
//!
//! Under test: `ciborium::from_reader` into the aux-info, keygen and
//! signing/presigning message types (`tss_core::ecdsa::{aux, keygen,
//! sign}::Msg`), exactly as `session::delivery` does. The first byte picks
//! the protocol (the envelope's protocol tag).
#![no_main]

use libfuzzer_sys::fuzz_target;
use tss_core::ecdsa::{aux, keygen, sign};

fuzz_target!(|data: &[u8]| {
    let Some((&which, payload)) = data.split_first() else {
        return;
    };
    match which % 3 {
        0 => {
            let _ = ciborium::from_reader::<aux::Msg, _>(payload);
        }
        1 => {
            let _ = ciborium::from_reader::<keygen::Msg, _>(payload);
        }
        _ => {
            let _ = ciborium::from_reader::<sign::Msg, _>(payload);
        }
    }
});
