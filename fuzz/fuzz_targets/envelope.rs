//! Envelope decoding: the bytes every peer sends (`Peer.Deliver`) and the
//! recorded form keygen transcripts keep.
//!
//! Under test: `Envelope::decode`, `HashedEnvelope::decode`,
//! `keygen::transcript::Entry::decode`, and signature verification under a
//! fixed identity. Checks that whatever decodes re-encodes to the same bytes
//! (the encodings are canonical) and that an envelope and its hashed form
//! agree on digest and signature.
#![no_main]

use keygen::transcript::Entry;
use libfuzzer_sys::fuzz_target;
use tss_core::envelope::{Envelope, HashedEnvelope};

#[path = "common.rs"]
mod common;

fuzz_target!(|data: &[u8]| {
    if let Ok(e) = Envelope::decode(data) {
        assert_eq!(e.encode(), data, "envelope encoding is canonical");
        let h = e.hashed();
        assert_eq!(h.digest(), e.digest());
        assert_eq!(HashedEnvelope::decode(&h.encode()).as_ref(), Ok(&h));
        let id = common::party_id(e.sender as u8);
        assert_eq!(e.verify(&id).is_ok(), h.verify(&id).is_ok());
    }
    if let Ok(h) = HashedEnvelope::decode(data) {
        assert_eq!(h.encode(), data, "hashed envelope encoding is canonical");
        let _ = h.verify(&common::party_id(h.sender as u8));
    }
    if let Ok(entry) = Entry::decode(data) {
        assert_eq!(entry.encode(), data, "entry encoding is canonical");
        let _ = entry.has_recorded_form();
        let _ = entry.order_key();
        let _ = entry.verify(&common::party_id(entry.sender() as u8));
    }
});
