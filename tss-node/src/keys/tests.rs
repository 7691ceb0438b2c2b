//! Snapshot of the store's record-key layout: every record key this crate
//! writes, for fixed inputs. A store written by one version is read by the
//! next, so a change here is a format change (docs/FORMATS.md) and needs a
//! migration, never a silent edit of the expected bytes.

use tss_core::identity::PartyId;
use tss_core::store::RecordKind;

use super::*;

const KEY: &str = "key-1";
const DIGEST: [u8; 32] = [0xd1; 32];
const ID: [u8; 32] = [0x1d; 32];

fn text(k: &[u8]) -> String {
    String::from_utf8_lossy(k).into_owned()
}

#[test]
fn record_keys__should_keep_their_layout() {
    // Independent values (PARTY_SET_ID, SIGN_REQUEST_ID) were computed
    // outside Rust from the derivation in docs/FORMATS.md.
    // Trees: the record kind's tag is the sled tree name.
    let tags: Vec<&str> = RecordKind::ALL.iter().map(|k| k.tag()).collect();
    assert_eq!(
        tags,
        [
            "primes",
            "aux_info",
            "key_share",
            "key_info",
            "seen_execution",
            "presignature",
            "presignature_used",
            "node_secret",
            "transcript",
            "spend",
            "audit",
        ]
    );

    // node_secret
    assert_eq!(IDENTITY_KEY, b"identity");
    assert_eq!(TLS_KEY, b"tls_key");

    // aux_info: the party set's id.
    let parties = [PartyId([3; 32]), PartyId([1; 32]), PartyId([2; 32])];
    assert_eq!(hex::encode(aux_info(&parties)), PARTY_SET_ID);

    // key_share / key_info: the key id itself; a replaced unfinished share.
    assert_eq!(key(KEY), b"key-1");
    assert_eq!(
        text(&retired_share(KEY, 1_700_000_000_123)),
        "retired/key-1/1700000000123"
    );

    // seen_execution: signed requests, request-id bindings, kept signatures.
    assert_eq!(execution(&ID), ID);
    let signed = signed(KEY, b"req-1", &DIGEST);
    assert_eq!(&signed[..7], b"signed/");
    assert_eq!(hex::encode(&signed[7..]), SIGN_REQUEST_ID);
    assert_eq!(request_binding(KEY, b"req-1"), b"request/key-1\0req-1");
    let kept = kept_signature(KEY, b"req-1", &DIGEST);
    assert_eq!(&kept[..10], b"signature/");
    assert_eq!(hex::encode(&kept[10..]), SIGN_REQUEST_ID);

    // presignature: key id, 0x00, the signers big-endian, the id.
    let mut want = b"key-1\0\x00\x00\x00\x02".to_vec();
    assert_eq!(presignature_prefix(KEY, &[0, 2]), want);
    want.extend_from_slice(&ID);
    assert_eq!(presignature(KEY, &[0, 2], &ID), want);

    assert_eq!(presignature_id(&want[..10], &want), Some(ID));
    assert_eq!(presignature_id(&want[..10], &want[..41]), None);
    assert_eq!(presignature_used(&ID), ID);

    // transcript
    assert_eq!(text(&aux_view(&ID)), format!("aux/{}", hex::encode(ID)));
    assert_eq!(text(&keygen_view(KEY)), "view/key-1");
    assert_eq!(text(&certificate(KEY)), "cert/key-1");
    assert_eq!(text(&transcript_file(KEY)), "file/key-1");

    // audit: the sequence number, big-endian; primes: the set's id.
    assert_eq!(audit_entry(0x0102), [0, 0, 0, 0, 0, 0, 1, 2]);
    assert_eq!(audit_seq(&audit_entry(u64::MAX - 7)), Some(u64::MAX - 7));
    assert_eq!(audit_seq(&[1, 2, 3]), None);
    assert_eq!(prime_set(&[7; 16]), [7; 16]);
}

const PARTY_SET_ID: &str = "af3af160280c08cf5f8582c1ad0b40287c8fdda32256a7fcce539c26e66f441d";
const SIGN_REQUEST_ID: &str = "074ed33d2147ce8bd5fb28426625af67faf5963d708d0a8834512a16042c71e8";
