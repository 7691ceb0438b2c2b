//! FROST engine tests: three parties on threads, wired through the real
//! envelope delivery by the in-memory router of `crate::testing`; every
//! signature is checked by an independent verifier (ed25519-dalek strict
//! verification, rust-bitcoin's BIP340 verification).

use std::collections::BTreeMap;

use futures::SinkExt;
use round_based::{Delivery, Mpc, MpcParty, Outgoing};

use super::sign::{self, Signing};
use super::*;
use crate::envelope::Protocol;
use crate::testing::Net;

const SCHEMES: [Scheme; 2] = [Scheme::Ed25519, Scheme::Taproot];

fn keygen(net: &Net, scheme: Scheme, sid: [u8; 32]) -> Vec<FrostShare> {
    net.run(
        Protocol::FrostKeygen,
        sid,
        &[0, 1, 2],
        move |i, party| async move { keygen::run(&sid, scheme, i, 3, 2, party).await },
    )
    .into_iter()
    .map(|r| r.expect("honest keygen"))
    .collect()
}

/// Verifies `sig` over `msg` under `share`'s public key with an
/// independent verifier.
fn verify_independently(share: &FrostShare, msg: &[u8], sig: &[u8; 64]) {
    match share.scheme() {
        Scheme::Ed25519 => {
            let pk: [u8; 32] = share.public_key().try_into().unwrap();
            let vk = ed25519_dalek::VerifyingKey::from_bytes(&pk).unwrap();
            vk.verify_strict(msg, &ed25519_dalek::Signature::from_bytes(sig))
                .expect("ed25519-dalek strict verification");
        }
        Scheme::Taproot => {
            use bitcoin::secp256k1::{schnorr, Message, Secp256k1, XOnlyPublicKey};
            let secp = Secp256k1::verification_only();
            let q = XOnlyPublicKey::from_slice(&share.public_key()).unwrap();
            let digest: [u8; 32] = msg.try_into().expect("a 32-byte BIP340 message");
            secp.verify_schnorr(
                &schnorr::Signature::from_slice(sig).unwrap(),
                &Message::from_digest(digest),
                &q,
            )
            .expect("BIP340 verification by rust-bitcoin");
        }
    }
}

#[test]
fn frost__should_keygen_2_of_3_and_sign_with_every_pair() {
    for scheme in SCHEMES {
        let net = Net::new(3);
        // Given a DKG among three parties
        let shares = keygen(&net, scheme, [5u8; 32]);
        // Then they agree on the key, which is a key of the scheme
        let pk = shares[0].public_key();
        assert_eq!(pk.len(), 32);
        assert!(shares.iter().all(|s| s.public_key() == pk));
        assert!(shares
            .iter()
            .all(|s| s.verifying_shares() == shares[0].verifying_shares()));
        assert_eq!(shares[0].threshold(), 2);
        assert_eq!(shares[0].parties(), 3);
        if scheme == Scheme::Taproot {
            // And the output key is the internal key tweaked per BIP86
            use bitcoin::key::TapTweak;
            use bitcoin::secp256k1::{Secp256k1, XOnlyPublicKey};
            let secp = Secp256k1::verification_only();
            let p = XOnlyPublicKey::from_slice(&shares[0].internal_key().unwrap()).unwrap();
            let (q, _) = p.tap_tweak(&secp, None);
            assert_eq!(q.to_x_only_public_key().serialize().to_vec(), pk);
        } else {
            assert!(shares[0].internal_key().is_none());
        }
        // When every pair signs in two rounds
        let msg: Vec<u8> = match scheme {
            Scheme::Ed25519 => b"bytom sighash or any message".to_vec(),
            Scheme::Taproot => <sha2::Sha256 as sha2::Digest>::digest(b"a BIP341 sighash").to_vec(),
        };
        for pair in [[0u16, 1], [0, 2], [1, 2]] {
            let signer_shares: Vec<FrostShare> = pair
                .iter()
                .map(|&p| shares[usize::from(p)].clone())
                .collect();
            let members: Vec<usize> = pair.iter().map(|&p| usize::from(p)).collect();
            let m = msg.clone();
            let sigs = net.run(
                Protocol::FrostSign,
                [pair[0] as u8 + 9; 32],
                &members,
                move |i, party| {
                    let share = signer_shares[usize::from(i)].clone();
                    let m = m.clone();
                    async move { sign::run(&share, i, &pair, &m, None, party).await }
                },
            );
            // Then both signers hold the same signature, valid for an
            // independent verifier
            let sigs: Vec<[u8; 64]> = sigs.into_iter().map(|s| s.expect("signs")).collect();
            assert_eq!(sigs[0], sigs[1]);
            verify_independently(&shares[0], &msg, &sigs[0]);
        }
    }
}

#[test]
fn frost__should_sign_in_one_round_from_pooled_nonces_and_name_a_wrong_share() {
    for scheme in SCHEMES {
        let net = Net::new(3);
        let shares = keygen(&net, scheme, [6u8; 32]);
        let msg = [0x42u8; 32];
        // Given nonces made ahead of time by signers 0 and 2, sealed and read back
        let (n0, c0) = sign::commit(&shares[0]).unwrap();
        let (n2, c2) = sign::commit(&shares[2]).unwrap();
        let stored = |n: sign::Nonces| {
            sign::Nonces::from_stored(crate::secret::SecretBytes::new(n.expose().to_vec()))
        };
        let (n0, n2) = (stored(n0), stored(n2));
        let commitments = vec![c0, c2];
        let signing = Signing {
            signers: &[0, 2],
            commitments: &commitments,
            message: &msg,
        };
        // When each releases its share and the coordinator aggregates
        let s0 = sign::sign_share(&shares[0], &signing, n0).unwrap();
        let s2 = sign::sign_share(&shares[2], &signing, n2).unwrap();
        sign::verify_share(&shares[0], &signing, 1, &s2).expect("an honest share verifies");
        let sig = sign::aggregate(&shares[0], &signing, &[s0.clone(), s2.clone()]).unwrap();
        // Then the signature verifies independently
        verify_independently(&shares[0], &msg, &sig);
        // And a wrong share is refused naming its signer (position 1)
        let mut bad = s2.clone();
        bad[0] ^= 1;
        for wrong in [bad, s0.clone(), vec![0u8; 31]] {
            match sign::aggregate(&shares[0], &signing, &[s0.clone(), wrong]) {
                Err(EngineError::Misbehaved { culprit: 1, .. }) => {}
                other => panic!("{scheme}: expected signer 1 blamed, got {other:?}"),
            }
        }
        // And nonces whose commitments are not the ones listed are refused
        let (n_other, _) = sign::commit(&shares[0]).unwrap();
        let e = sign::sign_share(&shares[0], &signing, n_other).unwrap_err();
        assert!(e.to_string().contains("commitment"), "{e}");
        // And a commitment that does not decode is blamed on its signer
        let garbage = vec![commitments[0].clone(), vec![1, 2, 3]];
        let broken = Signing {
            commitments: &garbage,
            ..signing
        };
        let (n0, _) = sign::commit(&shares[0]).unwrap();
        match sign::sign_share(&shares[0], &broken, n0) {
            Err(EngineError::Misbehaved { culprit: 1, .. }) => {}
            other => panic!("expected signer 1 blamed, got {other:?}"),
        }
    }
}

#[test]
fn frost_share__should_round_trip_and_refuse_parts_that_do_not_fit() {
    let net = Net::new(3);
    for scheme in SCHEMES {
        let shares = keygen(&net, scheme, [7u8; 32]);
        // Given a share encoded for the store
        let enc = shares[1].encode();
        let back = FrostShare::decode(enc.expose()).unwrap();
        // Then it decodes to the same share, and prints no secret
        assert_eq!(back.public_key(), shares[1].public_key());
        assert_eq!(back.index(), 1);
        assert!(!format!("{back:?}").contains("key_package"));
        // And a share whose index or public package is another's is refused
        let mut v: ciborium::Value = ciborium::from_reader(enc.expose()).unwrap();
        if let ciborium::Value::Map(m) = &mut v {
            for (k, val) in m.iter_mut() {
                if k.as_text() == Some("index") {
                    *val = ciborium::Value::Integer(2.into());
                }
            }
        }
        let mut b = Vec::new();
        ciborium::into_writer(&v, &mut b).unwrap();
        let e = FrostShare::decode(&b).unwrap_err();
        assert!(e.to_string().contains("another party"), "{e}");
        let other = keygen(&net, scheme, [8u8; 32]);
        let mixed = FrostShare {
            public_package: other[1].public_package.clone(),
            ..shares[1].clone()
        };
        assert!(FrostShare::decode(mixed.encode().expose()).is_err());
        // And truncated bytes are refused
        assert!(FrostShare::decode(&enc.expose()[..enc.len() - 3]).is_err());
    }
}

/// What the hostile party 2 echoes in round 2.
#[derive(Clone, Copy)]
enum EchoMode {
    /// Nothing (it stops after round 1).
    Silent,
    /// The true digest of round 1 as it saw it.
    Honest,
    /// A digest of something else.
    False,
}

/// Party 2 sends `bad` as its round-1 package (and echoes per `echo`)
/// instead of running the DKG; returns every party's outcome.
fn keygen_against(
    scheme: Scheme,
    bad: fn(Scheme, u16) -> Vec<u8>,
    echo: EchoMode,
) -> Vec<Result<FrostShare, EngineError>> {
    use futures::StreamExt;
    let net = Net::new(3);
    let sid = [9u8; 32];
    net.run(
        Protocol::FrostKeygen,
        sid,
        &[0, 1, 2],
        move |i, party: MpcParty<keygen::Msg, _>| async move {
            if i < 2 {
                return keygen::run(&sid, scheme, i, 3, 2, party).await;
            }
            let package = bad(scheme, i);
            let (mut incoming, mut outgoing) = party.into_party().delivery.split();
            let msg = keygen::Msg::Commit(keygen::Commit {
                package: package.clone(),
            });
            outgoing.send(Outgoing::broadcast(msg)).await.unwrap();
            let mut seen = [Vec::new(), Vec::new(), package];
            let mut got = 0;
            while got < 2 {
                match incoming.next().await {
                    Some(Ok(m)) => {
                        if let keygen::Msg::Commit(c) = m.msg {
                            seen[usize::from(m.sender)] = c.package;
                            got += 1;
                        }
                    }
                    _ => return Err(EngineError::Closed),
                }
            }
            let views: Vec<&[u8]> = seen.iter().map(Vec::as_slice).collect();
            let digest = match echo {
                EchoMode::Silent => return Err(EngineError::Closed),
                EchoMode::Honest => keygen::echo_digest(&sid, scheme, &views),
                EchoMode::False => [7u8; 32],
            };
            let msg = keygen::Msg::Echo(keygen::Echo { digest });
            outgoing.send(Outgoing::broadcast(msg)).await.unwrap();
            Err(EngineError::Closed)
        },
    )
}

fn expect_blamed(scheme: Scheme, out: &[Result<FrostShare, EngineError>], needle: &str) {
    for r in &out[..2] {
        match r {
            Err(EngineError::Misbehaved { culprit: 2, reason }) => {
                assert!(reason.contains(needle), "{scheme}: {reason}")
            }
            other => panic!("{scheme}: expected party 2 blamed ({needle}), got {other:?}"),
        }
    }
}

fn package_of_degree(scheme: Scheme, i: u16, t: u16) -> Vec<u8> {
    with_suite!(scheme, C => {
        let (_, p) = frost_core::keys::dkg::part1::<C, _>(
            identifier::<C>(i).unwrap(), 3, t, rand_core::OsRng).unwrap();
        p.serialize().unwrap()
    })
}

#[test]
fn frost_keygen__should_name_a_party_with_a_wrong_degree_a_bad_proof_or_a_false_echo() {
    for scheme in SCHEMES {
        // A polynomial of degree 2 for a 2-of-3 key
        let out = keygen_against(scheme, |s, i| package_of_degree(s, i, 3), EchoMode::Silent);
        expect_blamed(scheme, &out, "coefficients");
        // Another party's package: its proof of knowledge is for identifier 1
        let out = keygen_against(scheme, |s, _| package_of_degree(s, 0, 2), EchoMode::Honest);
        expect_blamed(scheme, &out, "proof of knowledge");
        // An honest package with an echo of something else
        let out = keygen_against(scheme, |s, i| package_of_degree(s, i, 2), EchoMode::False);
        expect_blamed(scheme, &out, "view of round 1");
        // Bytes that are not a package
        let out = keygen_against(scheme, |_, _| vec![0, 1, 2, 3], EchoMode::Silent);
        expect_blamed(scheme, &out, "does not decode");
    }
}

#[test]
fn frost_pool__should_make_batches_that_sign_once_each_after_sealing() {
    for scheme in SCHEMES {
        let net = Net::new(3);
        let shares = keygen(&net, scheme, [10u8; 32]);
        let pair = [1u16, 2];
        let eid = [11u8; 32];
        // Given a batch of 5 pooled nonces made by the pair 1, 2
        let ss: Vec<FrostShare> = pair
            .iter()
            .map(|&p| shares[usize::from(p)].clone())
            .collect();
        let out = net.run(Protocol::FrostPresign, eid, &[1, 2], move |i, party| {
            let share = ss[usize::from(i)].clone();
            async move { pool::precommit(&share, i, &pair, 5, party).await }
        });
        let batches: Vec<Vec<pool::PoolEntry>> =
            out.into_iter().map(|r| r.expect("honest batch")).collect();
        assert!(batches.iter().all(|b| b.len() == 5));
        // Then the ids both derive are distinct
        let ids: std::collections::BTreeSet<[u8; 32]> =
            (0..5).map(|j| pool::entry_id(&eid, j)).collect();
        assert_eq!(ids.len(), 5);
        // When each entry is sealed, read back and signs one message
        let [a, b]: [Vec<pool::PoolEntry>; 2] = batches.try_into().unwrap();
        for (j, (ea, eb)) in a.into_iter().zip(b).enumerate() {
            let (ea, eb) = (
                pool::PoolEntry::decode(ea.encode().expose()).unwrap(),
                pool::PoolEntry::decode(eb.encode().expose()).unwrap(),
            );
            assert_eq!(ea.signers(), &pair);
            let msg = [j as u8; 32];
            let commitments = ea.signing(&msg);
            let (signers, cs) = (
                commitments.signers.to_vec(),
                commitments.commitments.to_vec(),
            );
            let sb = eb.sign_share(&shares[2], &msg).unwrap();
            let signing = Signing {
                signers: &signers,
                commitments: &cs,
                message: &msg,
            };
            let sa = ea.sign_share(&shares[1], &msg).unwrap();
            let sig = sign::aggregate(&shares[1], &signing, &[sa, sb]).unwrap();
            // Then every signature verifies independently
            verify_independently(&shares[0], &msg, &sig);
        }
    }
}

#[test]
fn frost_pool__should_name_a_signer_with_a_short_batch_or_bad_commitments() {
    for scheme in SCHEMES {
        let net = Net::new(3);
        let shares = keygen(&net, scheme, [12u8; 32]);
        for bad in [0usize, 1] {
            let ss = shares.clone();
            let out = net.run(
                Protocol::FrostPresign,
                [13u8 + bad as u8; 32],
                &[0, 1],
                move |i, party: MpcParty<pool::Msg, _>| {
                    let share = ss[usize::from(i)].clone();
                    async move {
                        if i == 0 {
                            return pool::precommit(&share, 0, &[0, 1], 3, party).await;
                        }
                        // Party 1 sends two commitments (short) or three that do not decode
                        let commitments = if bad == 0 {
                            (0..2).map(|_| sign::commit(&share).unwrap().1).collect()
                        } else {
                            vec![vec![1u8, 2, 3]; 3]
                        };
                        let (_, mut outgoing) = party.into_party().delivery.split();
                        let msg = pool::Msg::Batch(pool::BatchMsg {
                            commitments: commitments
                                .into_iter()
                                .map(serde_bytes::ByteBuf::from)
                                .collect(),
                        });
                        outgoing.send(Outgoing::broadcast(msg)).await.unwrap();
                        Err(EngineError::Closed)
                    }
                },
            );
            match &out[0] {
                Err(EngineError::Misbehaved { culprit: 1, reason }) => {
                    let needle = if bad == 0 {
                        "for a batch of 3"
                    } else {
                        "do not decode"
                    };
                    assert!(reason.contains(needle), "{scheme}: {reason}");
                }
                other => panic!("{scheme}: expected signer 1 blamed, got {other:?}"),
            }
        }
        // And an entry signs only for its own key and party
        let ss = shares.clone();
        let out = net.run(
            Protocol::FrostPresign,
            [15u8; 32],
            &[0, 1],
            move |i, party| {
                let share = ss[usize::from(i)].clone();
                async move { pool::precommit(&share, i, &[0, 1], 1, party).await }
            },
        );
        let e = out.into_iter().next().unwrap().unwrap().pop().unwrap();
        assert!(e.sign_share(&shares[2], &[0u8; 32]).is_err());
    }
}

/// Nonces in the crate's `SigningNonces` encoding, as pool entries made
/// before the two-scalar encoding hold them.
fn commit_in_crate_encoding(share: &FrostShare) -> (sign::Nonces, Vec<u8>) {
    fn as_suite<C: share::Suite>(share: &FrostShare) -> (sign::Nonces, Vec<u8>) {
        let kp = share.key_package::<C>().unwrap();
        let (n, c) = frost_core::round1::commit(kp.signing_share(), &mut rand_core::OsRng);
        let bytes = crate::secret::SecretBytes::new(n.serialize().unwrap());
        (sign::Nonces::from_stored(bytes), c.serialize().unwrap())
    }
    with_suite!(share.scheme(), C => as_suite::<C>(share))
}

#[test]
fn frost_pool__should_sign_with_either_nonce_encoding_and_refuse_stored_commitments_that_do_not_decode(
) {
    for scheme in SCHEMES {
        let net = Net::new(3);
        let shares = keygen(&net, scheme, [16u8; 32]);
        let msg = [0x17u8; 32];
        // Given signer 0's nonces as two scalars and signer 2's in the
        // crate's encoding (a pool entry made by an earlier version)
        let (n0, c0) = sign::commit(&shares[0]).unwrap();
        assert_eq!(n0.expose().len(), 64, "{scheme}: two 32-byte scalars");
        let (n2, c2) = commit_in_crate_encoding(&shares[2]);
        assert!(n2.expose().len() > 64);
        let commitments = vec![c0, c2];
        let signing = Signing {
            signers: &[0, 2],
            commitments: &commitments,
            message: &msg,
        };
        // When both sign over commitments checked before (a pool entry's)
        let s0 = sign::sign_share_checked_before(&shares[0], &signing, n0).unwrap();
        let s2 = sign::sign_share_checked_before(&shares[2], &signing, n2).unwrap();
        let sig = sign::aggregate(&shares[0], &signing, &[s0, s2]).unwrap();
        // Then the signature verifies independently
        verify_independently(&shares[0], &msg, &sig);
        // And stored commitments of the wrong length or encoding are
        // refused, never signed over
        let mut other_header = commitments[1].clone();
        other_header[0] ^= 0xff;
        let mut longer = commitments[1].clone();
        longer.push(0);
        for bad in [vec![1u8, 2, 3], other_header, longer] {
            let broken = vec![commitments[0].clone(), bad];
            let signing = Signing {
                commitments: &broken,
                ..signing
            };
            let (n0, _) = sign::commit(&shares[0]).unwrap();
            let e = sign::sign_share_checked_before(&shares[0], &signing, n0).unwrap_err();
            assert!(e.to_string().contains("do not decode"), "{scheme}: {e}");
        }
        // And nonces that are not two scalars nor the crate's encoding are
        // refused
        let junk = sign::Nonces::from_stored(crate::secret::SecretBytes::new(vec![7u8; 50]));
        let e = sign::sign_share_checked_before(&shares[0], &signing, junk).unwrap_err();
        assert!(e.to_string().contains("unusable"), "{scheme}: {e}");
    }
}

#[test]
fn frost_round2__should_make_the_crates_shares_and_signatures_once_per_signature() {
    fn as_suite<C: share::Suite>(shares: &[FrostShare]) -> [usize; 2] {
        use rand::Rng;
        let mut rng = rand::thread_rng();
        let mut parities = [0usize; 2];
        for round in 0..48 {
            // Given a random pair, fresh nonces from the crate and a message
            let pair: [u16; 2] = [[0, 1], [0, 2], [1, 2]][round % 3];
            let msg: [u8; 32] = rng.gen();
            let mut nonces = Vec::new();
            let mut map = BTreeMap::new();
            let mut by_id = BTreeMap::new();
            for (pos, &i) in pair.iter().enumerate() {
                let kp = shares[usize::from(i)].key_package::<C>().unwrap();
                let (n, c) = frost_core::round1::commit(kp.signing_share(), &mut rand_core::OsRng);
                map.insert(*kp.identifier(), c);
                by_id.insert(*kp.identifier(), pos as u16);
                nonces.push(n);
            }
            let package = frost_core::SigningPackage::new(map, &msg);
            // When each signer computes its share here and with the crate
            let mut ours = Vec::new();
            let mut theirs = BTreeMap::new();
            for (n, &i) in nonces.iter().zip(&pair) {
                let share = &shares[usize::from(i)];
                let c =
                    round2::share::<C>(share, &package, &by_id, n.hiding(), n.binding()).unwrap();
                let kp = share.key_package::<C>().unwrap();
                let crate_share = frost_core::round2::sign(&package, n, kp).unwrap();
                // Then the shares are the crate's
                assert_eq!(
                    <<C::Group as frost_core::Group>::Field as frost_core::Field>::serialize(&c.z)
                        .as_ref(),
                    crate_share.serialize().as_slice(),
                    "{round}: share of {i}"
                );
                theirs.insert(*kp.identifier(), crate_share);
                ours.push(c);
            }
            // And both signers found the same group commitment
            assert!(ours[0].group_commitment == ours[1].group_commitment);
            parities[usize::from(C::negates_nonces(&ours[0].group_commitment))] += 1;
            // And the signature from it is the crate's aggregate, verified
            let pkp = shares[0].public_package::<C>().unwrap();
            let crate_sig = frost_core::aggregate(&package, &theirs, pkp)
                .unwrap()
                .serialize()
                .unwrap();
            let zs: Vec<_> = ours.iter().map(|c| c.z).collect();
            let sig = round2::signature::<C>(
                ours[0].group_commitment,
                &zs,
                &shares[0].public_key(),
                &msg,
            )
            .unwrap()
            .expect("the signature verifies");
            assert_eq!(sig.as_slice(), crate_sig.as_slice(), "{round}");
            verify_independently(&shares[0], &msg, &sig);
            // And a sum with one share changed does not verify
            let one = <<C::Group as frost_core::Group>::Field as frost_core::Field>::one();
            let wrong = [zs[0], zs[1] + one];
            let refused = round2::signature::<C>(
                ours[0].group_commitment,
                &wrong,
                &shares[0].public_key(),
                &msg,
            )
            .unwrap();
            assert!(refused.is_none(), "{round}: a wrong share verified");
        }
        parities
    }
    // An Ed25519 key, and Taproot keys until one with an even and one with
    // an odd output key (BIP340 signs with the even one: the odd key's
    // shares are negated) have both been checked.
    let net = Net::new(3);
    let shares = keygen(&net, Scheme::Ed25519, [21u8; 32]);
    as_suite::<Ed>(&shares);
    let mut key_parities = [false; 2];
    for sid in 0u8..64 {
        let shares = keygen(&Net::new(3), Scheme::Taproot, [sid; 32]);
        let odd = shares[0].group_key()[0] == 0x03;
        if key_parities[usize::from(odd)] {
            continue;
        }
        key_parities[usize::from(odd)] = true;
        let parities = as_suite::<Tr>(&shares);
        // Both BIP340 cases ran: an even and an odd group commitment
        assert!(parities[0] > 0 && parities[1] > 0, "{parities:?}");
        if key_parities == [true; 2] {
            break;
        }
    }
    assert_eq!(key_parities, [true; 2], "an even and an odd Taproot key");
}

#[test]
fn frost_own_share__should_aggregate_a_pooled_signature_and_name_a_wrong_share() {
    for scheme in SCHEMES {
        let net = Net::new(3);
        let shares = keygen(&net, scheme, [22u8; 32]);
        // Ed25519 signs messages of any length; Taproot a 32-byte one
        let messages: Vec<Vec<u8>> = match scheme {
            Scheme::Ed25519 => vec![vec![], b"vapor".to_vec(), vec![0xa5; 300]],
            Scheme::Taproot => vec![vec![0x33; 32]],
        };
        for msg in messages {
            // Given signers 0 and 2 with pooled nonces
            let (n0, c0) = sign::commit(&shares[0]).unwrap();
            let (n2, c2) = sign::commit(&shares[2]).unwrap();
            let commitments = vec![c0, c2];
            let signing = Signing {
                signers: &[0, 2],
                commitments: &commitments,
                message: &msg,
            };
            let s2 = sign::sign_share_checked_before(&shares[2], &signing, n2).unwrap();
            // (the test reuses signer 0's nonces: a node never does)
            let n0 = n0.expose().to_vec();
            let own = || {
                let n = sign::Nonces::from_stored(crate::secret::SecretBytes::new(n0.clone()));
                sign::sign_own(&shares[0], &signing, n).unwrap()
            };
            // When signer 0 aggregates the honest share, the signature
            // verifies independently
            let sig = own().aggregate(&shares[0], &[&s2]).unwrap();
            verify_independently(&shares[0], &msg, &sig);
            // And a wrong share is refused naming its signer (position 1)
            let mut bad = s2.clone();
            bad[5] ^= 1;
            for wrong in [bad, vec![0u8; 32], vec![1, 2, 3]] {
                match own().aggregate(&shares[0], &[&wrong]) {
                    Err(EngineError::Misbehaved { culprit: 1, .. }) => {}
                    other => panic!("{scheme}: expected signer 1 blamed, got {other:?}"),
                }
            }
            // And a missing or an extra share is refused
            assert!(own().aggregate(&shares[0], &[]).is_err(), "{scheme}");
            assert!(
                own().aggregate(&shares[0], &[&s2, &s2]).is_err(),
                "{scheme}"
            );
        }
    }
}
