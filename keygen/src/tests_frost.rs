//! Transcript tests for FROST keys (Ed25519 and Taproot): a real DKG and a
//! real threshold signature over the certificate on the in-memory network,
//! verified offline; then tampering (a flipped byte, a wrong-degree
//! polynomial with a valid proof, another key's signature).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use serde_bytes::ByteBuf;
use tss_core::envelope::{Envelope, Protocol};
use tss_core::frost::{self, FrostShare, Scheme};
use tss_core::testing::Net;

use crate::tests::{auditor, cert_parties};
use crate::transcript::*;
use crate::verify::{self, Outcome, Report};

/// Every party's view merged, as the nodes complete their transcripts.
fn entries(carried: &[Envelope]) -> Vec<Entry> {
    merge(carried.iter().map(Entry::recorded)).unwrap()
}

struct Ceremony {
    net: Net,
    shares: Vec<FrostShare>,
    kg: Vec<Entry>,
    file: TranscriptFile,
}

fn sign(net: &Net, shares: &[FrostShare], msg: &[u8], sid: [u8; 32]) -> [u8; 64] {
    let s: Vec<FrostShare> = shares[..2].to_vec();
    let m = msg.to_vec();
    let sigs = net.run(Protocol::FrostSign, sid, &[0, 1], move |i, party| {
        let share = s[usize::from(i)].clone();
        let m = m.clone();
        async move { frost::sign::run(&share, i, &[0, 1], &m, None, party).await }
    });
    sigs[0].as_ref().copied().unwrap()
}

/// Certificates of `shares` over `kg`, and the key's signature over them.
fn file(net: &Net, shares: &[FrostShare], kg: &[Entry], kg_id: [u8; 32]) -> TranscriptFile {
    let r = root(kg.iter());
    let certs: Vec<SignedCertificate> = shares
        .iter()
        .enumerate()
        .map(|(i, share)| {
            let cert = KeyCertificate::from_frost(
                "frost-key",
                cert_parties(&net.keys),
                share,
                kg_id,
                r,
                1_700_000_000,
            );
            SignedCertificate::sign(&net.keys[i], i as u16, &cert)
        })
        .collect();
    let digest = certificate_digest(&certs[0].body);
    let mut sid = kg_id;
    sid[0] ^= 0xff;
    let sig = sign(net, shares, &digest, sid);
    TranscriptFile::new(&[], kg, certs, sig)
}

fn ceremony(scheme: Scheme) -> Ceremony {
    let net = Net::new(3);
    let kg_id = [0xc0 | scheme as u8; 32];
    let (shares, carried) = net.run_recorded(
        Protocol::FrostKeygen,
        kg_id,
        &[0, 1, 2],
        move |i, party| async move { frost::keygen::run(&kg_id, scheme, i, 3, 2, party).await },
    );
    let shares: Vec<FrostShare> = shares.into_iter().map(|s| s.unwrap()).collect();
    let kg = entries(&carried);
    let file = file(&net, &shares, &kg, kg_id);
    Ceremony {
        net,
        shares,
        kg,
        file,
    }
}

/// Party `i`'s round-1 package with `t` coefficients (degree t - 1).
fn package_of_degree(scheme: Scheme, i: u16, t: u16) -> Vec<u8> {
    fn make<C: frost_core::Ciphersuite>(i: u16, t: u16) -> Vec<u8> {
        let id = frost_core::Identifier::<C>::try_from(i + 1).unwrap();
        let (_, p) = frost_core::keys::dkg::part1::<C, _>(id, 3, t, rand_core::OsRng).unwrap();
        p.serialize().unwrap()
    }
    match scheme {
        Scheme::Ed25519 => make::<frost_ed25519::Ed25519Sha512>(i, t),
        Scheme::Taproot => make::<frost_secp256k1_tr::Secp256K1Sha256TR>(i, t),
    }
}

fn fails(r: &Report, check: &str) -> String {
    let c = r
        .checks
        .iter()
        .find(|c| c.name == check)
        .unwrap_or_else(|| panic!("no check {check}\n{r}"));
    match &c.outcome {
        Outcome::Fail(why) => why.clone(),
        o => panic!("{check} did not fail: {o:?}\n{r}"),
    }
}

#[test]
fn verify__should_pass_every_check_on_a_real_frost_keygen_and_refuse_tampering() {
    for scheme in [Scheme::Ed25519, Scheme::Taproot] {
        let c = ceremony(scheme);
        let aud = auditor(&c.net.keys);
        // Given an honest transcript, every FROST check passes
        let r = verify::verify(&c.file.encode(), &aud);
        assert!(r.passed(), "{scheme}:\n{r}");
        let names: Vec<&str> = r.checks.iter().map(|c| c.name).collect();
        assert_eq!(names[..3], ["format", "certificates", "parties"]);
        assert_eq!(names[3..], verify::frost::FROST_CHECKS, "{scheme}");
        assert!(r.to_string().contains("proofs of knowledge"), "{r}");
        // And the certificate names the scheme and the key every share holds
        let cert = KeyCertificate::decode(&c.file.certificates[0].body).unwrap();
        assert_eq!(frost_scheme_of(&cert.curve), Some(scheme));
        assert_eq!(cert.public_key.to_vec(), c.shares[2].public_key());

        // When any byte of any envelope is flipped, a check fails
        for (k, e) in c.kg.iter().enumerate().step_by(2) {
            let mut bytes = e.encode();
            let at = bytes.len() / 2;
            bytes[at] ^= 0x01;
            let mut f = c.file.clone();
            f.keygen[k] = ByteBuf::from(bytes);
            let r = verify::verify(&f.encode(), &aud);
            assert!(!r.passed(), "{scheme}: flipped entry {k} passed\n{r}");
        }

        // When another key signed the certificate, the key signature fails
        let other = ceremony(scheme);
        let mut f = c.file.clone();
        f.key_signature = other.file.key_signature.clone();
        let why = fails(&verify::verify(&f.encode(), &aud), "key signature");
        assert!(why.contains("does not verify"), "{why}");
    }
}

#[test]
fn verify__should_catch_a_frost_party_with_a_degree_2_polynomial() {
    for scheme in [Scheme::Ed25519, Scheme::Taproot] {
        // Given a run where party 2 committed, with a valid proof of
        // knowledge, to a polynomial of degree 2 (the honest parties refuse
        // it, so the envelopes are resealed as if they had not)
        let c = ceremony(scheme);
        let kg_id: [u8; 32] = KeyCertificate::decode(&c.file.certificates[0].body)
            .unwrap()
            .keygen_id
            .to_vec()
            .try_into()
            .unwrap();
        let bad_package = package_of_degree(scheme, 2, 3);
        let mut kg: Vec<Entry> = Vec::new();
        let mut packages: Vec<Vec<u8>> = vec![Vec::new(); 3];
        for e in &c.kg {
            if let Entry::Full(env) = e {
                if let Ok(frost::keygen::Msg::Commit(cm)) =
                    tss_core::ecdsa::decode_cbor(&env.payload)
                {
                    packages[usize::from(env.sender)] = cm.package;
                }
            }
        }
        packages[2] = bad_package.clone();
        let views: Vec<&[u8]> = packages.iter().map(Vec::as_slice).collect();
        let digest = frost::keygen::echo_digest(&kg_id, scheme, &views);
        for e in &c.kg {
            let Entry::Full(env) = e else {
                kg.push(e.clone());
                continue;
            };
            let msg =
                match tss_core::ecdsa::decode_cbor::<frost::keygen::Msg>(&env.payload).unwrap() {
                    frost::keygen::Msg::Commit(_) if env.sender == 2 => {
                        frost::keygen::Msg::Commit(frost::keygen::Commit {
                            package: bad_package.clone(),
                        })
                    }
                    frost::keygen::Msg::Echo(_) => {
                        frost::keygen::Msg::Echo(frost::keygen::Echo { digest })
                    }
                    m => m,
                };
            let mut payload = Vec::new();
            ciborium::into_writer(&msg, &mut payload).unwrap();
            kg.push(Entry::Full(Envelope::seal(
                &c.net.keys[usize::from(env.sender)],
                env.session_id,
                env.protocol,
                env.seq,
                env.sender,
                env.recipient,
                payload,
            )));
        }
        let f = file(&c.net, &c.shares, &kg, kg_id);
        let r = verify::verify(&f.encode(), &auditor(&c.net.keys));
        // Then the degree check names the party, and the key derived from
        // the commitments is not the certified one
        let why = fails(&r, "polynomial degree");
        assert!(why.contains("party 2") && why.contains("degree 2"), "{why}");
        fails(&r, "public key");
        // While the envelopes, the echoes and the proofs all check
        for ok in ["envelopes", "hash chain", "commitments", "schnorr proofs"] {
            let c = r.checks.iter().find(|c| c.name == ok).unwrap();
            assert!(
                matches!(c.outcome, Outcome::Pass(_)),
                "{ok}: {:?}",
                c.outcome
            );
        }
    }
}
