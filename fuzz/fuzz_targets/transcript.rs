//! Keygen transcripts and key certificates: stored by every party, sent
//! between parties (`CertifyKey`, `StoreTranscript`, `TranscriptPart`),
//! exported to auditors, and read by `tss-audit verify` from a file anyone
//! may hand over.
//!
//! Under test (the first byte picks one): `TranscriptFile::decode` (and the
//! entries and certificates inside), `KeyCertificate::decode`,
//! `decode_entry_list` with `merge` and `root`, `keygen::verify::verify`
//! against fixed auditor parties, and `verify::parse_parties`.
#![no_main]

use keygen::transcript::{self, KeyCertificate, SignedCertificate, TranscriptFile};
use keygen::verify;
use libfuzzer_sys::fuzz_target;

#[path = "common.rs"]
mod common;

fn auditor() -> &'static [verify::AuditorParty] {
    static A: std::sync::OnceLock<Vec<verify::AuditorParty>> = std::sync::OnceLock::new();
    A.get_or_init(|| {
        let mut text = String::new();
        for i in 0..3u8 {
            text += &format!(
                "[[parties]]\nname = \"p{i}\"\nidentity = \"{}\"\ntls_fingerprint = \"{}\"\n",
                common::party_id(i).to_hex(),
                hex::encode([0xf0 + i; 32]),
            );
        }
        verify::parse_parties(&text).expect("fixed parties parse")
    })
}

fn certificate(body: &[u8]) {
    if let Ok(c) = KeyCertificate::decode(body) {
        assert_eq!(c.encode(), body, "certificate encoding is canonical");
        let _ = c.party_ids();
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&which, b)) = data.split_first() else {
        return;
    };
    match which % 5 {
        0 => {
            if let Ok(f) = TranscriptFile::decode(b) {
                assert_eq!(f.encode(), b, "transcript encoding is canonical");
                let _ = transcript::decode_entries(&f.aux);
                let _ = transcript::decode_entries(&f.keygen);
                for c in &f.certificates {
                    certificate(&c.body);
                    let _ = c.verify(&common::party_id(c.party as u8));
                }
            }
        }
        1 => certificate(b),
        2 => {
            if let Ok(entries) = transcript::decode_entry_list(b) {
                if let Ok(merged) = transcript::merge(entries) {
                    let _ = transcript::root(&merged);
                }
            }
            let _ = ciborium::from_reader::<SignedCertificate, _>(b);
        }
        3 => {
            let _ = verify::verify(b, auditor());
        }
        _ => {
            if let Ok(text) = std::str::from_utf8(b) {
                let _ = verify::parse_parties(text);
            }
        }
    }
});
