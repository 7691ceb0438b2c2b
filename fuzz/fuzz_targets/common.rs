//! Fixed keys shared by the targets and `seeds` (which signs, seals and
//! builds the seed inputs with the matching secrets).
#![allow(dead_code)]

use tss_core::identity::{IdentityKey, PartyId};
use tss_core::secret::SecretBytes;

/// Ed25519 identity secret of party `i` (0, 1, 2) in the seeds.
pub fn identity_secret(i: u8) -> [u8; 32] {
    [i + 1; 32]
}

/// Identity of party `i` in the seeds (computed once per process).
pub fn party_id(i: u8) -> PartyId {
    static IDS: std::sync::OnceLock<Vec<PartyId>> = std::sync::OnceLock::new();
    IDS.get_or_init(|| {
        (0..3)
            .map(|i| {
                IdentityKey::from_secret(&SecretBytes::new(identity_secret(i).to_vec()))
                    // 32 bytes: always a valid Ed25519 secret.
                    .expect("32-byte identity secret")
                    .party_id()
            })
            .collect()
    })[usize::from(i % 3)]
}

/// Compressed secp256k1 public key of the secret scalar 1 (the generator):
/// the key the PSBT seeds spend from.
pub const BTC_PUBKEY: [u8; 33] = [
    0x02, 0x79, 0xbe, 0x66, 0x7e, 0xf9, 0xdc, 0xbb, 0xac, 0x55, 0xa0, 0x62, 0x95, 0xce, 0x87, 0x0b,
    0x07, 0x02, 0x9b, 0xfc, 0xdb, 0x2d, 0xce, 0x28, 0xd9, 0x59, 0xf2, 0x81, 0x5b, 0x16, 0xf8, 0x17,
    0x98,
];

/// The x-only form of [`BTC_PUBKEY`], as a Taproot key's output key: the
/// key whose P2TR outputs the Taproot path analyses.
#[allow(dead_code)]
pub const TAPROOT_KEY: [u8; 32] = {
    let mut k = [0u8; 32];
    let mut i = 0;
    while i < 32 {
        k[i] = BTC_PUBKEY[i + 1];
        i += 1;
    }
    k
};

/// Storage key the sealed-record seeds are sealed under.
pub const STORAGE_KEY: [u8; 32] = [0x5e; 32];

/// Record kinds as tagged in the store (the store's own tree first), indexed
/// by the first input byte of `sealed_record`.
pub fn record_tags() -> Vec<&'static str> {
    std::iter::once(tss_core::store::fuzzing::META_TAG)
        .chain(tss_core::store::RecordKind::ALL.iter().map(|k| k.tag()))
        .collect()
}
