//! RFC 9591's test vector for FROST(Ed25519, SHA-512) (appendix E.1, also
//! shipped by `frost-ed25519` as `tests/helpers/vectors.json`) through this
//! crate's own signing path: the shares and nonces of the vector go in, and
//! the commitments, both signature shares and the signature must come out
//! byte for byte as the RFC lists them.
//!
//! Only the Ed25519 vector applies as is: a Taproot key here always signs
//! under its BIP86-tweaked output key, which the `frost-secp256k1-tr`
//! vectors (untweaked) do not cover; Taproot signatures are checked with
//! BIP340 verifiers instead (`tests.rs`, the chain and e2e tests).

use std::collections::BTreeMap;

use frost_core::keys::{KeyPackage, PublicKeyPackage, SigningShare, VerifyingShare};
use frost_core::round1::{Nonce, SigningNonces};
use frost_core::VerifyingKey;

use super::sign::{self, Nonces, Signing};
use super::{identifier, Ed, FrostShare, Scheme};
use crate::secret::SecretBytes;

/// RFC 9591, appendix E.1 (2-of-3, signers 1 and 3).
const VERIFYING_KEY: &str = "15d21ccd7ee42959562fc8aa63224c8851fb3ec85a3faf66040d380fb9738673";
const MESSAGE: &str = "74657374";
/// Participant shares of identifiers 1, 2 and 3.
const SHARES: [&str; 3] = [
    "929dcc590407aae7d388761cddb0c0db6f5627aea8e217f4a033f2ec83d93509",
    "a91e66e012e4364ac9aaa405fcafd370402d9859f7b6685c07eed76bf409e80d",
    "d3cb090a075eb154e82fdb4b3cb507f110040905468bb9c46da8bdea643a9a02",
];
/// Per signer (identifiers 1 and 3): hiding and binding nonce, their
/// commitments, and the signature share.
const SIGNERS: [[&str; 5]; 2] = [
    [
        "ef6599dea4010581a72b3018c37c29a4341d7cab0773e8687ca74dcf14009701",
        "2baadfa0c69aa60d517ad4751de372a73f9d89cfc39026601f18458cdec12605",
        "9b116f12589591a7e23fe8048059ab10ab48e67739e7a2fb3890f61a7999478c",
        "c39b66b7dfccb122da24f13587f9a08c4347cae70046ca15169adf90ba65854d",
        "60997f0142e43e8005027fe5ab7447dac00d22c2d7ddd9571a02613ba7d81c08",
    ],
    [
        "80f8d9a4b8f9366e1a0b618107c907cd3ee29fa9bb40b4691cc1bde696240005",
        "2610b664a5a187b4855e87d2ff485bebdf043dc2f161fcd4854cd01dc0276404",
        "e679a2a971748ccfaabead4dbe8ac1def61275c186c79d471e1e45091ad1e687",
        "b2a942478453fabb6bd3181c56ba657413447b4136e1daea2484d396d1a516b3",
        "79390e78bc59699c7af831f8f5fb478ec871a85f561a8641b5670ac4443f720f",
    ],
];
const SIGNATURE: &str = "154fb694ee7fcb37bf2381d94488c2a84b03b3352ad085feca81ad26d45852b7ecfe971ce4da95c4a95db93ac376b053897fca212ef85f99cf696bffeb178f07";

fn h(s: &str) -> Vec<u8> {
    hex::decode(s).unwrap()
}

/// Party `index`'s share (keygen index: identifier - 1) of the vector's key.
fn share(index: u16) -> FrostShare {
    let vk = VerifyingKey::<Ed>::deserialize(&h(VERIFYING_KEY)).unwrap();
    let signing: Vec<SigningShare<Ed>> = SHARES
        .iter()
        .map(|s| SigningShare::deserialize(&h(s)).unwrap())
        .collect();
    let verifying: BTreeMap<_, _> = (0u16..3)
        .map(|i| {
            let vs = VerifyingShare::from(signing[usize::from(i)]);
            (identifier::<Ed>(i).unwrap(), vs)
        })
        .collect();
    let public = PublicKeyPackage::new(verifying.clone(), vk, Some(2));
    let id = identifier::<Ed>(index).unwrap();
    let kp = KeyPackage::new(id, signing[usize::from(index)], verifying[&id], vk, 2);
    FrostShare::from_parts(Scheme::Ed25519, index, &kp, &public, Vec::new()).unwrap()
}

#[test]
fn frost_sign__should_reproduce_the_rfc_9591_ed25519_vector() {
    // Given the vector's key shares of parties 1 and 3 (indices 0 and 2)
    // and their round-one nonces
    let signers = [0u16, 2];
    let shares: Vec<FrostShare> = signers.iter().map(|&i| share(i)).collect();
    assert_eq!(shares[0].public_key(), h(VERIFYING_KEY));
    let nonces: Vec<SigningNonces<Ed>> = SIGNERS
        .iter()
        .map(|v| {
            let n = |s: &str| Nonce::<Ed>::deserialize(&h(s)).unwrap();
            SigningNonces::from_nonces(n(v[0]), n(v[1]))
        })
        .collect();
    // Then their commitments are the vector's
    let commitments: Vec<Vec<u8>> = nonces
        .iter()
        .map(|n| n.commitments().serialize().unwrap())
        .collect();
    for (c, v) in commitments.iter().zip(&SIGNERS) {
        let want = frost_core::round1::SigningCommitments::<Ed>::new(
            frost_core::round1::NonceCommitment::deserialize(&h(v[2])).unwrap(),
            frost_core::round1::NonceCommitment::deserialize(&h(v[3])).unwrap(),
        );
        assert_eq!(c, &want.serialize().unwrap());
    }

    // When each signs the vector's message through this crate
    let message = h(MESSAGE);
    let signing = Signing {
        signers: &signers,
        commitments: &commitments,
        message: &message,
    };
    let sig_shares: Vec<Vec<u8>> = shares
        .iter()
        .zip(&nonces)
        .map(|(s, n)| {
            let stored = Nonces::from_stored(SecretBytes::from(zeroize::Zeroizing::new(
                n.serialize().unwrap(),
            )));
            sign::sign_share(s, &signing, stored).unwrap()
        })
        .collect();

    // Then both signature shares and the aggregate are the vector's, and
    // ed25519-dalek's strict verification accepts the signature
    for (s, v) in sig_shares.iter().zip(&SIGNERS) {
        assert_eq!(hex::encode(s), v[4]);
    }
    let sig = sign::aggregate(&shares[1], &signing, &sig_shares).unwrap();
    assert_eq!(hex::encode(sig), SIGNATURE);
    let vk =
        ed25519_dalek::VerifyingKey::from_bytes(&h(VERIFYING_KEY).try_into().unwrap()).unwrap();
    vk.verify_strict(&message, &ed25519_dalek::Signature::from_bytes(&sig))
        .unwrap();

    // And signer 0's share replaced by signer 1's is refused, naming
    // signer 0 (the crate verifies each share once the signature fails)
    let wrong = vec![sig_shares[1].clone(), sig_shares[1].clone()];
    let e = sign::aggregate(&shares[0], &signing, &wrong).unwrap_err();
    assert!(
        matches!(e, crate::ecdsa::EngineError::Misbehaved { culprit: 0, .. }),
        "{e:?}"
    );
}
