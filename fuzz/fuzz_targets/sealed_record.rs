//! Sealed values read from the store (sled), under a fixed storage key: the
//! format header, version and length checks before and around the AEAD.
//!
//! Under test: `tss_core::store::fuzzing::open` (the code `Store::get` runs
//! on every value) and `decode_kdf_record` (the one unsealed record, read
//! before the key exists). Input: record kind index, record key length, record
//! key, sealed value.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tss_core::store::fuzzing;

#[path = "common.rs"]
mod common;

fuzz_target!(|data: &[u8]| {
    let [kind, key_len, rest @ ..] = data else {
        return;
    };
    let tags = common::record_tags();
    let tag = tags[usize::from(*kind) % tags.len()];
    let Some((key, sealed)) = rest.split_at_checked(usize::from(*key_len)) else {
        return;
    };
    if tag == fuzzing::META_TAG && key == b"kdf" {
        if let Ok((m, t, p, salt)) = fuzzing::decode_kdf_record(sealed) {
            assert_eq!(fuzzing::encode_kdf_record(m, t, p, salt), sealed);
        }
        return;
    }
    if let Ok(plain) = fuzzing::open(common::STORAGE_KEY, tag, key, sealed) {
        // Only an unmodified seed opens; resealing it under its own nonce
        // gives the same bytes back.
        let nonce: [u8; 24] = sealed[1..25].try_into().expect("opened: has a nonce");
        let again = fuzzing::seal(common::STORAGE_KEY, tag, key, plain.expose(), &nonce);
        assert_eq!(again.ok().as_deref(), Some(sealed));
    }
});
