//! Plaintext records as they come out of the store, before the node trusts
//! them: what a corrupted disk, an old build or a bug could leave there.
//!
//! Under test (the first byte picks one): `ecdsa::decode_share`,
//! `keygen::record::AuxRecord::decode` (with `ecdsa::decode_aux`),
//! `ecdsa::presign::StoredPresignature::decode`, `primes::decode`,
//! `keygen::record::KeyRecord::decode`, `tss_node::policy::audit::decode` and
//! `verify_chain`, `tss_node::policy::spend::decode_record`, the
//! `presignature_used` JSON record, the identity secret of `node_secret`,
//! `tss_core::frost::FrostShare::decode` (a FROST key's share) and
//! `tss_core::frost::pool::PoolEntry::decode` (a pooled FROST nonce).
#![no_main]

use keygen::record::{AuxRecord, KeyRecord};
use libfuzzer_sys::fuzz_target;
use tss_core::ecdsa::{self, presign::StoredPresignature};
use tss_core::identity::IdentityKey;
use tss_core::primes;
use tss_core::secret::SecretBytes;
use tss_node::policy::audit::AuditBody;

fuzz_target!(|data: &[u8]| {
    let Some((&which, b)) = data.split_first() else {
        return;
    };
    match which % 11 {
        0 => {
            if let Ok(share) = ecdsa::decode_share(b) {
                let _ = ecdsa::public_key(&share);
            }
        }
        1 => {
            let _ = AuxRecord::decode(b);
        }
        2 => {
            let _ = StoredPresignature::decode(b);
        }
        3 => {
            let _ = primes::decode(b);
        }
        4 => {
            if let Ok(r) = KeyRecord::decode(b) {
                let _ = r.party_ids();
                let _ = r.public_key_bytes();
                assert_eq!(KeyRecord::decode(&r.encode()).ok().as_ref(), Some(&r));
            }
        }
        5 => {
            let Some((&seq, entry)) = b.split_first() else {
                return;
            };
            if let Ok(e) = tss_node::policy::audit::decode(u64::from(seq), entry) {
                let prev = <[u8; 32]>::try_from(e.prev.as_slice()).unwrap_or([0; 32]);
                let _ = tss_node::policy::audit::verify_chain(std::slice::from_ref(&e), prev);
                let _ = serde_json::from_slice::<AuditBody>(&e.body);
            }
        }
        6 => {
            let _ = tss_node::policy::spend::decode_record(b);
        }
        7 => {
            let _ = serde_json::from_slice::<tss_node::testing::UsedRecord>(b);
        }
        9 => {
            if let Ok(share) = tss_core::frost::FrostShare::decode(b) {
                let _ = (
                    share.public_key(),
                    share.verifying_shares(),
                    share.threshold(),
                );
                let again = tss_core::frost::FrostShare::decode(share.encode().expose());
                assert!(again.is_ok_and(|s| s.public_key() == share.public_key()));
            }
        }
        10 => {
            if let Ok(entry) = tss_core::frost::pool::PoolEntry::decode(b) {
                let again = tss_core::frost::pool::PoolEntry::decode(entry.encode().expose());
                assert!(again
                    .is_ok_and(|e| e.signers() == entry.signers()
                        && e.commitments() == entry.commitments()));
            }
        }
        _ => {
            let _ = IdentityKey::from_secret(&SecretBytes::new(b.to_vec()));
        }
    }
});
