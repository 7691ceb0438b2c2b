//! Engine tests: three parties on threads, wired through the real envelope
//! delivery (signing, verification, sequence checks) by an in-memory router.
//! Primes come from the committed TEST-ONLY fixtures.

use std::sync::{Arc, Mutex};

use futures::channel::mpsc;
use round_based::MpcParty;

use super::*;
use crate::envelope::{Envelope, Protocol};
use crate::identity::IdentityKey;
use crate::session::{self, Received, SessionInfo};
use crate::testing::{Net, MAX_SEEN};

#[test]
fn cggmp24__should_keygen_2_of_3_and_sign_with_every_pair() {
    let primes = crate::testing::fixture_primes().unwrap();
    assert!(primes.len() >= 3, "fixtures hold at least three prime sets");
    let net = Net::new(3);
    let primes = Arc::new(Mutex::new(
        primes.into_iter().take(3).map(Some).collect::<Vec<_>>(),
    ));

    // Given aux info for the party set
    let t0 = std::time::Instant::now();
    let aux_sid = [1u8; 32];
    let (auxes, aux_carried) =
        net.run_recorded(Protocol::AuxInfo, aux_sid, &[0, 1, 2], move |i, party| {
            let p = primes.lock().unwrap()[usize::from(i)].take().unwrap();
            async move { aux::run(&aux_sid, i, 3, p, party).await }
        });
    eprintln!("aux info: {:?}", t0.elapsed());
    let auxes: Vec<AuxInfo> = auxes.into_iter().map(|r| r.unwrap()).collect();

    // And the size check refuses a modulus longer than an honest one, and
    // ring-Pedersen parameters out of range; honest messages pass it
    let round2 = aux_carried
        .iter()
        .filter(|e| e.sender == 2)
        .map(|e| decode_cbor::<aux::Msg>(&e.payload).unwrap())
        .find_map(|m| match m {
            cggmp24::key_refresh::msg::Msg::Round2(d) => Some(d),
            _ => None,
        })
        .expect("party 2 sent round 2");
    let check = |d: &cggmp24::key_refresh::msg::MsgRound2<Level>| {
        aux::check_sizes(&round_based::Incoming {
            id: 1,
            sender: 2,
            msg_type: round_based::MessageType::Broadcast,
            msg: cggmp24::key_refresh::msg::Msg::Round2(d.clone()),
        })
    };
    check(&round2).expect("an honest round 2 passes");
    let mut huge = cggmp24::backend::Integer::one();
    huge.set_bit(20_000, true); // 20001 bits
    type Round2 = cggmp24::key_refresh::msg::MsgRound2<Level>;
    type Edit = fn(&mut Round2, &cggmp24::backend::Integer);
    let edits: [(&str, Edit); 4] = [
        ("N has 20001 bits", |d, huge| d.N = huge.clone()),
        ("N^ has 20001 bits", |d, huge| d.hat_N = huge.clone()),
        ("s is not in 1..N^", |d, _| d.s = d.hat_N.clone()),
        ("t is not in 1..N^", |d, _| {
            d.t = cggmp24::backend::Integer::zero()
        }),
    ];
    for (what, edit) in edits {
        let mut bad = round2.clone();
        edit(&mut bad, &huge);
        match check(&bad) {
            Err(crate::session::DeliveryError::Misbehaved { culprit, reason }) => {
                assert_eq!(culprit, 2);
                assert!(reason.contains(what), "{reason}");
            }
            other => panic!("{what}: must be refused, got {other:?}"),
        }
    }

    // When the three parties run 2-of-3 keygen
    let t0 = std::time::Instant::now();
    let kg_sid = [2u8; 32];
    let shares = net.run(
        Protocol::Keygen,
        kg_sid,
        &[0, 1, 2],
        move |i, party| async move { keygen::run(&kg_sid, i, 3, 2, party).await },
    );
    eprintln!("keygen: {:?}", t0.elapsed());
    let shares: Vec<Arc<KeyShare>> = shares
        .into_iter()
        .zip(auxes)
        .map(|(s, a)| {
            let full = keygen::complete(s.unwrap(), a).unwrap();
            // Stored form round-trips.
            Arc::new(decode_share(encode_share(&full).expose()).unwrap())
        })
        .collect();
    let pk = public_key(&shares[0]);
    assert!(
        shares.iter().all(|s| public_key(s) == pk),
        "all parties agree on the key"
    );

    // Then every pair signs, and k256 verifies each signature
    for (pair, hash) in [
        ([0usize, 1], sign::HashAlgo::Sha256),
        ([0, 2], sign::HashAlgo::Keccak256),
        ([1, 2], sign::HashAlgo::DoubleSha256),
    ] {
        let msg = format!("message for pair {pair:?}").into_bytes();
        let sid = crate::session::sign_execution_id(
            "k",
            &[pair[0] as u16, pair[1] as u16],
            b"r",
            &[0; 32],
        );
        let s2 = shares.clone();
        let m2 = msg.clone();
        let t0 = std::time::Instant::now();
        let sigs = net.run(Protocol::Sign, sid, &pair, move |i, party| {
            let share = s2[pair[usize::from(i)]].clone();
            let m = m2.clone();
            async move {
                let (data, _) = hash.data_to_sign(&m);
                let at_keygen = [pair[0] as u16, pair[1] as u16];
                sign::run(
                    &sid,
                    i,
                    &at_keygen,
                    &share,
                    sign::ToSign::Hashed(data),
                    party,
                )
                .await
            }
        });
        eprintln!("sign {pair:?}: {:?}", t0.elapsed());
        let (_, digest) = hash.data_to_sign(&msg);
        for s in sigs {
            let s = s.unwrap();
            let mut rs = [0u8; 64];
            s.write_to_slice(&mut rs);
            let fin = crate::chain::finish_signature(&pk, &digest, &rs).unwrap();
            assert!(fin.v <= 1);
        }
    }

    // And a raw digest signs through the full protocol
    let digest = [0x5a; 32];
    let sid = crate::session::sign_execution_id("k", &[0, 2], b"raw", &digest);
    let s2 = shares.clone();
    let sigs = net.run(Protocol::Sign, sid, &[0, 2], move |i, party| {
        let share = s2[[0, 2][usize::from(i)]].clone();
        async move {
            let data = sign::ToSign::raw_digest(&digest);
            sign::run(&sid, i, &[0, 2], &share, data, party).await
        }
    });
    for s in sigs {
        let mut rs = [0u8; 64];
        s.unwrap().write_to_slice(&mut rs);
        crate::chain::finish_signature(&pk, &digest, &rs).unwrap();
    }

    // And the release hook runs exactly once per signer, before its partial
    // signature leaves; a failing hook withholds the partial signature
    let gate_run = |tag: &'static [u8], fail: bool| {
        let sid = crate::session::sign_execution_id("k", &[0, 1], tag, &[0; 32]);
        let s2 = shares.clone();
        let calls = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let c2 = calls.clone();
        let (r, carried) = net.run_recorded(Protocol::Sign, sid, &[0, 1], move |i, party| {
            let share = s2[usize::from(i)].clone();
            let calls = c2.clone();
            async move {
                let (data, _) = sign::HashAlgo::Sha256.data_to_sign(b"gated");
                let hook: sign::BeforeRelease = Box::new(move || {
                    calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    if fail {
                        Err("the spend cannot be recorded".into())
                    } else {
                        Ok(())
                    }
                });
                sign::run_with_release(
                    &sid,
                    i,
                    &[0, 1],
                    &share,
                    sign::ToSign::Hashed(data),
                    Some(hook),
                    party,
                )
                .await
            }
        });
        let round4 = carried
            .iter()
            .filter(|e| {
                matches!(
                    decode_cbor::<sign::Msg>(&e.payload),
                    Ok(sign::Msg::Round4(_))
                )
            })
            .count();
        (r, round4, calls.load(std::sync::atomic::Ordering::SeqCst))
    };
    let (r, round4, calls) = gate_run(b"gate-ok", false);
    assert!(r.iter().all(Result::is_ok), "signs when the hook succeeds");
    assert_eq!(
        (round4, calls),
        (2, 2),
        "one partial and one hook call each"
    );
    let (r, round4, calls) = gate_run(b"gate-fail", true);
    assert_eq!((round4, calls), (0, 2), "no partial signature leaves");
    for e in r {
        let e = e.expect_err("no signature without partial signatures");
        assert!(
            e.to_string()
                .contains("withheld: the spend cannot be recorded"),
            "{e}"
        );
    }

    // And our round-1 check refuses a co-signer whose ψ0 or ψ1 alone is
    // wrong (the pinned engine accepts either one alone: see round1.rs)
    let sid = crate::session::sign_execution_id("k", &[0, 1], b"round1", &[0; 32]);
    let s2 = shares.clone();
    let (_, carried) = net.run_recorded(Protocol::Sign, sid, &[0, 1], move |i, party| {
        let share = s2[usize::from(i)].clone();
        async move {
            let data = sign::ToSign::raw_digest(&[1; 32]);
            sign::run(&sid, i, &[0, 1], &share, data, party).await
        }
    });
    let round1 = |recipient: Option<u16>| {
        carried
            .iter()
            .filter(|e| e.sender == 0 && e.recipient == recipient)
            .map(|e| decode_cbor::<sign::Msg>(&e.payload).unwrap())
            .find(|m| matches!(m, sign::Msg::Round1a(_) | sign::Msg::Round1b(_)))
            .unwrap()
    };
    let (sign::Msg::Round1a(a), sign::Msg::Round1b(b)) = (round1(None), round1(Some(1))) else {
        panic!("signer 0 sent round 1a and 1b first");
    };
    let inspect = |b: cggmp24::signing::msg::MsgRound1b<Curve>| {
        let mut check = round1::Round1Check::new(&sid, 1, &[0, 1], &shares[1]).unwrap();
        let at = |id, msg_type, msg| round_based::Incoming {
            id,
            sender: 0,
            msg_type,
            msg,
        };
        check.inspect(&at(
            1,
            round_based::MessageType::Broadcast,
            sign::Msg::Round1a(a.clone()),
        ))?;
        check.inspect(&at(2, round_based::MessageType::P2P, sign::Msg::Round1b(b)))
    };
    inspect(b.clone()).expect("the honest proofs verify");
    for (what, tamper) in [("psi0", 0usize), ("psi1", 1)] {
        let mut bad = b.clone();
        let proof = if tamper == 0 {
            &mut bad.psi0
        } else {
            &mut bad.psi1
        };
        proof.proof.w += generic_ec::Scalar::one();
        match inspect(bad) {
            Err(crate::session::DeliveryError::Misbehaved { culprit, reason }) => {
                assert_eq!(culprit, 0);
                assert!(reason.contains(what), "{reason}");
            }
            other => panic!("a wrong {what} alone must be refused, got {other:?}"),
        }
    }

    // And every pair presigns, then signs from its presignatures in one step
    for pair in [[0usize, 1], [0, 2], [1, 2]] {
        let at_keygen = [pair[0] as u16, pair[1] as u16];
        let sid = crate::session::presign_execution_id("k", &at_keygen, &[7; 32]);
        let s2 = shares.clone();
        let t0 = std::time::Instant::now();
        let presigs = net.run(Protocol::Presign, sid, &pair, move |i, party| {
            let share = s2[pair[usize::from(i)]].clone();
            async move { presign::run(&sid, i, &at_keygen, &share, party).await }
        });
        eprintln!("presign {pair:?}: {:?}", t0.elapsed());
        // Stored form round-trips.
        let presigs: Vec<presign::StoredPresignature> = presigs
            .into_iter()
            .map(|p| presign::StoredPresignature::decode(p.unwrap().encode().expose()).unwrap())
            .collect();
        let copies: Vec<presign::StoredPresignature> = presigs
            .iter()
            .map(|p| presign::StoredPresignature::decode(p.encode().expose()).unwrap())
            .collect();
        let combiner = &copies[0];
        let (data, digest) = sign::HashAlgo::Keccak256.data_to_sign(b"from the pool");
        let partials: Vec<[u8; 32]> = presigs.into_iter().map(|p| p.issue(data)).collect();
        let sig = combiner.combine(&partials, data).unwrap();
        // The same signature as cggmp24's own combination (which checks
        // every partial against the commitments)
        let theirs: Vec<cggmp24::signing::PartialSignature<Curve>> = partials
            .iter()
            .map(|p| cggmp24::signing::PartialSignature {
                sigma: generic_ec::Scalar::from_be_bytes(p).unwrap(),
            })
            .collect();
        let reference =
            cggmp24::signing::PartialSignature::combine(&theirs, &combiner.public_data(), data)
                .unwrap();
        assert_eq!(sig, reference);
        let mut rs = [0u8; 64];
        sig.write_to_slice(&mut rs);
        crate::chain::finish_signature(&pk, &digest, &rs).unwrap();

        // A wrong partial from the other signer names it, whichever signer
        // combines (its own partial is its own computation)
        for (me, combiner) in copies.iter().enumerate() {
            let other = 1 - me;
            let mut bad = partials.clone();
            bad[other][31] ^= 1;
            match combiner.combine(&bad, data) {
                Err(presign::CombineError::InvalidPartial { culprit }) => {
                    assert_eq!(culprit, at_keygen[other])
                }
                r => panic!(
                    "expected culprit {}, got {:?}",
                    at_keygen[other],
                    r.map(|_| ())
                ),
            }
            // So does a partial for another message
            let (msg2, _) = sign::HashAlgo::Keccak256.data_to_sign(b"something else");
            let mut wrong = partials.clone();
            wrong[other] = copies[other].issue(msg2);
            assert!(matches!(
                combiner.combine(&wrong, data),
                Err(presign::CombineError::InvalidPartial { .. })
            ));
        }
    }

    let seen = MAX_SEEN.lock().unwrap();
    for p in [
        Protocol::AuxInfo,
        Protocol::Keygen,
        Protocol::Sign,
        Protocol::Presign,
    ] {
        let max = seen
            .iter()
            .filter(|(q, _)| *q == p)
            .map(|(_, l)| *l)
            .max()
            .unwrap_or(0);
        eprintln!(
            "largest {p:?} payload: {max} bytes (limit {})",
            p.max_payload()
        );
        assert!(
            max * 2 <= p.max_payload(),
            "{p:?} payloads must stay well under the limit"
        );
    }
}

#[test]
fn sign__should_abort_naming_culprit_when_peer_sends_garbage() {
    // A peer whose first message is not a protocol message is blamed.
    let keys: Vec<_> = (0..2).map(|_| Arc::new(IdentityKey::generate())).collect();
    let info = Arc::new(SessionInfo {
        id: [5; 32],
        protocol: Protocol::Keygen,
        me: 0,
        parties: keys.iter().map(|k| k.party_id()).collect(),
    });
    let (mut in_tx, in_rx) = mpsc::channel(8);
    let (out_tx, _out_rx) = mpsc::unbounded();
    let (inc, out) = session::delivery::<keygen::Msg>(info, keys[0].clone(), in_rx, out_tx, None);
    let garbage = Envelope::seal(
        &keys[1],
        [5; 32],
        Protocol::Keygen,
        0,
        1,
        None,
        b"\xff\xff".to_vec(),
    );
    in_tx
        .try_send(Received {
            envelope: garbage,
            from: keys[1].party_id(),
        })
        .unwrap();
    let r = futures::executor::block_on(keygen::run(
        &[5; 32],
        0,
        2,
        2,
        MpcParty::connected((inc, out)),
    ));
    match r {
        Err(EngineError::Misbehaved { culprit, .. }) => assert_eq!(culprit, 1),
        other => panic!("expected culprit 1, got {:?}", other.map(|_| ())),
    }
}

#[test]
fn decode_cbor__should_refuse_a_big_integer_radix_that_would_panic() {
    // Given a signing message whose Paillier integer claims radix 0 (found by
    // the `peer_payload` fuzz target: `from_str_radix` panicked on it)
    let crash = b"\xa1gRound1a\xa7aK\xa2eradix\x00evalue\xdb\x06\x00\x003g68fddf4e28d68";
    // When a node decodes it, Then it is refused without a panic
    assert!(decode_cbor::<sign::Msg>(crash).is_err());
    // And when the variant name and its content come as two items
    let two_items = b"gRound1a\xa7aK\xa2eradix\x00evaluea0aaaaa\x00*20";
    assert!(decode_cbor::<sign::Msg>(two_items).is_err());
    // And the same holds for the array form and for a radix above 36
    let mut arr = Vec::new();
    ciborium::into_writer(&(37u16, "ff"), &mut arr).unwrap();
    assert!(decode_cbor::<cggmp24::backend::Integer>(&arr).is_err());
}

#[test]
fn decode_cbor__should_refuse_a_big_integer_longer_than_the_limit() {
    let int = |bits: u32| {
        let mut x = cggmp24::backend::Integer::one();
        x.set_bit(bits - 1, true);
        let mut b = Vec::new();
        ciborium::into_writer(&x, &mut b).unwrap();
        b
    };
    // Given integers at the limit and a byte over it, as engines write them
    let at = int(MAX_INTEGER_BITS);
    let over = int(MAX_INTEGER_BITS + 8);
    // Then the first decodes and the second is refused
    assert!(decode_cbor::<cggmp24::backend::Integer>(&at).is_ok());
    let e = decode_cbor::<cggmp24::backend::Integer>(&over).unwrap_err();
    assert_eq!(e, super::CborError::TooLong, "{e}");
    // And so is a long one in another radix, or in the array form
    let mut b = Vec::new();
    let binary = format!("1{}", "0".repeat(MAX_INTEGER_BITS as usize + 8));
    ciborium::into_writer(&(2u16, binary.as_str()), &mut b).unwrap();
    assert!(decode_cbor::<cggmp24::backend::Integer>(&b).is_err());
}

#[test]
fn blamed_party__should_read_the_engines_abort_blame() {
    let m = "key refresh protocol failed to complete: protocol was aborted by malicious party: \
             Protocol aborted; malicious parties: [AbortBlame { faulty_party: 2, data_message: 5, \
             proof_message: 8 }]; reason: provided invalid proof for Rfac";
    assert_eq!(blamed_party(m), Some(2));
    assert_eq!(blamed_party("protocol failed: timeout"), None);
    assert_eq!(blamed_party("faulty_party: x"), None);
}
