//! Transcript tests: a real aux-info + keygen + signing run of three parties
//! on the in-memory network (real envelopes, real engines; TEST-ONLY fixture
//! primes), verified offline; tampering of every kind; and a test-only
//! dealer whose keygen commits one party to a degree-2 polynomial.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::{Arc, Mutex, OnceLock};

use generic_ec::{Point, Scalar, SecretScalar};
use generic_ec_zkp::polynomial::Polynomial;
use generic_ec_zkp::schnorr_pok;
use rand_core::RngCore;
use serde_bytes::ByteBuf;
use sha2::Sha256;
use tss_core::ecdsa::{self, Curve, Level};
use tss_core::envelope::{Envelope, Protocol};
use tss_core::identity::IdentityKey;
use tss_core::testing::Net;

use crate::transcript::*;
use crate::verify::{self, unambiguous, AuditorParty, Outcome, Report, CHECKS};

type KgMsg = cggmp24_keygen::ThresholdMsg<Curve, Level, Sha256>;
use cggmp24_keygen::msg::threshold as kg;

/// A finished ceremony: the parties' keys, both sessions' entries and the
/// transcript file.
struct Ceremony {
    keys: Vec<Arc<IdentityKey>>,
    aux_id: [u8; 32],
    aux: Vec<Entry>,
    file: TranscriptFile,
}

impl Ceremony {
    fn bytes(&self) -> Vec<u8> {
        self.file.encode()
    }
}

pub(crate) fn cert_parties(keys: &[Arc<IdentityKey>]) -> Vec<CertParty> {
    keys.iter()
        .enumerate()
        .map(|(i, k)| CertParty {
            name: format!("custodian-{i}"),
            identity: ByteBuf::from(k.party_id().0.to_vec()),
            tls_fingerprint: ByteBuf::from(vec![i as u8; 32]),
        })
        .collect()
}

pub(crate) fn auditor(keys: &[Arc<IdentityKey>]) -> Vec<AuditorParty> {
    keys.iter()
        .enumerate()
        .map(|(i, k)| AuditorParty {
            name: format!("custodian-{i}"),
            identity: k.party_id().to_hex(),
            tls_fingerprint: Some(hex::encode([i as u8; 32])),
            cert: None,
        })
        .collect()
}

/// Each party's own view of a run: what it sent, and what reached it.
fn views(carried: &[Envelope], n: u16) -> Vec<Vec<Entry>> {
    (0..n)
        .map(|i| {
            carried
                .iter()
                .filter(|e| e.sender == i || e.recipient.is_none_or(|r| r == i))
                .map(Entry::recorded)
                .collect()
        })
        .collect()
}

/// Completes the sessions as the nodes do: merge the parties' views.
fn complete(views: Vec<Vec<Entry>>) -> Vec<Entry> {
    merge(views.into_iter().flatten()).unwrap()
}

fn sign_certificate(net: &Net, shares: &[ecdsa::KeyShare], body: &[u8], sid: [u8; 32]) -> [u8; 64] {
    let mut msg = b"tss/key-certificate/v1".to_vec();
    msg.extend_from_slice(body);
    let (data, digest) = ecdsa::sign::HashAlgo::Sha256.data_to_sign(&msg);
    assert_eq!(digest, certificate_digest(body));
    let pair = [0u16, 1];
    let s: Vec<ecdsa::KeyShare> = shares.to_vec();
    let sigs = net.run(Protocol::Sign, sid, &[0, 1], move |i, party| {
        let share = s[usize::from(i)].clone();
        async move {
            ecdsa::sign::run(
                &sid,
                i,
                &pair,
                &share,
                ecdsa::sign::ToSign::Hashed(data),
                party,
            )
            .await
        }
    });
    let mut rs = [0u8; 64];
    sigs[0].as_ref().unwrap().write_to_slice(&mut rs);
    let pk = ecdsa::public_key(&shares[0]);
    let sig = tss_core::chain::finish_signature(&pk, &digest, &rs).unwrap();
    let mut out = [0u8; 64];
    out[..32].copy_from_slice(&sig.r);
    out[32..].copy_from_slice(&sig.s);
    out
}

struct Setup {
    net: Net,
    auxes: Vec<ecdsa::AuxInfo>,
    aux_id: [u8; 32],
    aux: Vec<Entry>,
}

/// Aux info of the three parties (the slow part), once per test binary.
fn setup() -> &'static Setup {
    static S: OnceLock<Setup> = OnceLock::new();
    S.get_or_init(|| {
        let net = Net::new(3);
        let primes = tss_core::testing::fixture_primes().unwrap();
        let primes = Arc::new(Mutex::new(
            primes.into_iter().take(3).map(Some).collect::<Vec<_>>(),
        ));
        let aux_id = [0xa0; 32];
        let (auxes, carried) =
            net.run_recorded(Protocol::AuxInfo, aux_id, &[0, 1, 2], move |i, party| {
                let p = primes.lock().unwrap()[usize::from(i)].take().unwrap();
                async move { ecdsa::aux::run(&aux_id, i, 3, p, party).await }
            });
        Setup {
            net,
            auxes: auxes.into_iter().map(|a| a.unwrap()).collect(),
            aux_id,
            aux: complete(views(&carried, 3)),
        }
    })
}

/// A real keygen of `key_id` on the shared aux info, certified and signed.
fn ceremony(key_id: &str, kg_id: [u8; 32]) -> Ceremony {
    let s = setup();
    let (shares, carried) = s.net.run_recorded(
        Protocol::Keygen,
        kg_id,
        &[0, 1, 2],
        move |i, party| async move { ecdsa::keygen::run(&kg_id, i, 3, 2, party).await },
    );
    let shares: Vec<ecdsa::KeyShare> = shares
        .into_iter()
        .zip(&s.auxes)
        .map(|(sh, aux)| ecdsa::keygen::complete(sh.unwrap(), aux.clone()).unwrap())
        .collect();
    let kg = complete(views(&carried, 3));
    let root = root(s.aux.iter().chain(kg.iter()));
    let certs: Vec<SignedCertificate> = shares
        .iter()
        .enumerate()
        .map(|(i, share)| {
            let cert = KeyCertificate::from_facts(CertificateFacts {
                key_id,
                parties: cert_parties(&s.net.keys),
                share,
                aux_id: s.aux_id,
                keygen_id: kg_id,
                root,
                created_unix: 1_700_000_000,
            });
            SignedCertificate::sign(&s.net.keys[i], i as u16, &cert)
        })
        .collect();
    let mut sign_sid = kg_id;
    sign_sid[0] ^= 0xff;
    let sig = sign_certificate(&s.net, &shares, &certs[0].body, sign_sid);
    Ceremony {
        keys: s.net.keys.clone(),
        aux_id: s.aux_id,
        aux: s.aux.clone(),
        file: TranscriptFile::new(&s.aux, &kg, certs, sig),
    }
}

fn honest() -> &'static Ceremony {
    static C: OnceLock<Ceremony> = OnceLock::new();
    C.get_or_init(|| ceremony("honest-key", [0xb0; 32]))
}

fn fails(r: &Report, check: &str) -> String {
    let c = r
        .checks
        .iter()
        .find(|c| c.name == check)
        .unwrap_or_else(|| panic!("no check {check}"));
    match &c.outcome {
        Outcome::Fail(why) => why.clone(),
        o => panic!("{check} did not fail: {o:?}\n{r}"),
    }
}

#[test]
fn verify__should_pass_every_check_on_a_real_keygen() {
    let c = honest();
    let r = verify::verify(&c.bytes(), &auditor(&c.keys));
    assert!(r.passed(), "{r}");
    let names: Vec<_> = r.checks.iter().map(|c| c.name).collect();
    assert_eq!(names, CHECKS);
    // Keygen p2p messages carry secret shares: only their hashes are kept.
    let kg = decode_entries(&c.file.keygen).unwrap();
    assert!(kg
        .iter()
        .all(|e| matches!(e, Entry::Hashed(_)) == e.recipient().is_some()));
    // The file is canonical CBOR and round-trips.
    assert_eq!(TranscriptFile::decode(&c.bytes()).unwrap(), c.file);
}

#[test]
fn verify__should_fail_and_name_a_check_for_any_flipped_byte() {
    use rand::{Rng, SeedableRng};
    let c = honest();
    let bytes = c.bytes();
    let parties = auditor(&c.keys);
    let mut rng = rand::rngs::StdRng::seed_from_u64(4);
    // Positions across the whole file, plus some inside every certificate
    // and the key signature (small regions a uniform sample would miss).
    let mut positions: Vec<usize> = (0..40).map(|_| rng.gen_range(0..bytes.len())).collect();
    let find = |needle: &[u8]| {
        bytes
            .windows(needle.len())
            .position(|w| w == needle)
            .unwrap()
    };
    // (Each of these runs every check, proofs included: a few seconds each.)
    let cert = &c.file.certificates[rng.gen_range(0..3)];
    let at = find(&cert.signature);
    positions.push(at + rng.gen_range(0..64));
    let at = find(&cert.body);
    positions.extend((0..2).map(|_| at + rng.gen_range(0..cert.body.len())));
    let at = find(&c.file.key_signature);
    positions.push(at + rng.gen_range(0..64));
    positions.push(0);
    for pos in positions {
        let mut b = bytes.clone();
        b[pos] ^= 1 << rng.gen_range(0..8);
        let r = verify::verify(&b, &parties);
        assert!(
            !r.passed(),
            "flip at {pos} of {} still verifies",
            bytes.len()
        );
        assert!(!r.failed().is_empty(), "flip at {pos}: no check named\n{r}");
    }
}

fn with(c: &Ceremony, edit: impl FnOnce(&mut TranscriptFile)) -> Vec<u8> {
    let mut f = c.file.clone();
    edit(&mut f);
    f.encode()
}

#[test]
fn verify__should_fail_when_an_envelope_is_dropped_or_reordered() {
    let c = honest();
    let parties = auditor(&c.keys);
    for (what, b) in [
        ("drop aux", with(c, |f| drop(f.aux.remove(4)))),
        ("drop keygen share", with(c, |f| drop(f.keygen.remove(1)))),
        ("reorder keygen", with(c, |f| f.keygen.swap(0, 3))),
        ("reorder aux", with(c, |f| f.aux.swap(0, 1))),
    ] {
        let r = verify::verify(&b, &parties);
        let why = fails(&r, "envelopes");
        assert!(
            why.contains("missing") || why.contains("order") || why.contains("entries"),
            "{what}: {why}"
        );
        fails(&r, "hash chain");
    }
}

#[test]
fn verify__should_fail_when_another_keys_certificate_is_swapped_in() {
    let c = honest();
    let other = ceremony("other-key", [0xc0; 32]);
    let parties = auditor(&c.keys);
    // The other key's transcript verifies on its own.
    assert!(verify::verify(&other.bytes(), &parties).passed());
    let b = with(c, |f| {
        f.certificates[1] = other.file.certificates[1].clone()
    });
    let r = verify::verify(&b, &parties);
    assert!(fails(&r, "certificates").contains("differs"));
    // All three swapped: the certificates agree, but name another root, key
    // and keygen session.
    let b = with(c, |f| f.certificates = other.file.certificates.clone());
    let r = verify::verify(&b, &parties);
    fails(&r, "envelopes");
    fails(&r, "hash chain");
    fails(&r, "key signature");
}

#[test]
fn verify__should_fail_when_a_party_identity_is_substituted() {
    let c = honest();
    // The auditor's party list differs from the transcript's.
    let mut parties = auditor(&c.keys);
    parties[2].identity = IdentityKey::generate().party_id().to_hex();
    let r = verify::verify(&c.bytes(), &parties);
    assert!(fails(&r, "parties").contains("not among the auditor's parties"));
    let mut parties = auditor(&c.keys);
    parties[0].tls_fingerprint = Some(hex::encode([9u8; 32]));
    fails(&verify::verify(&c.bytes(), &parties), "parties");

    // An impostor rewrites party 2's identity in its certificate and signs it.
    let impostor = IdentityKey::generate();
    let b = with(c, |f| {
        let mut cert = KeyCertificate::decode(&f.certificates[2].body).unwrap();
        cert.parties[2].identity = ByteBuf::from(impostor.party_id().0.to_vec());
        f.certificates[2] = SignedCertificate::sign(&impostor, 2, &cert);
    });
    let r = verify::verify(&b, &auditor(&c.keys));
    fails(&r, "certificates");
}

/// TEST-ONLY dealer: plays all three parties of a keygen on the given aux
/// info, committing party `cheater` to a polynomial of degree `degree`, and
/// builds a transcript that is otherwise fully consistent (envelopes signed
/// by the parties' identity keys, commitments, echoes, Schnorr proofs,
/// certificates, and a key signature made with the secret key the dealer
/// knows).
fn dealer_transcript(c: &Ceremony, cheater: u16, degree: usize) -> Vec<u8> {
    let mut rng = rand_core::OsRng;
    let n = 3u16;
    let kg_id = [0xd0; 32];
    let sid = cggmp24::ExecutionId::new(&kg_id);
    let polys: Vec<Polynomial<SecretScalar<Curve>>> = (0..n)
        .map(|j| Polynomial::sample(&mut rng, if j == cheater { degree } else { 1 }))
        .collect();
    let at = |x: u16| Scalar::<Curve>::from(x + 1);
    let share = |k: u16| -> Scalar<Curve> {
        polys
            .iter()
            .map(|f| f.value::<_, Scalar<Curve>>(&at(k)))
            .sum()
    };
    let mut nonces = Vec::new();
    let r2: Vec<kg::MsgRound2Broad<Curve, Level>> = polys
        .iter()
        .map(|f| {
            let (r, h) = schnorr_pok::prover_commits_ephemeral_secret::<Curve, _>(&mut rng);
            nonces.push(r);
            let mut rid =
                <Level as cggmp24_keygen::security_level::SecurityLevel>::KappaBytes::default();
            rng.fill_bytes(rid.as_mut());
            let mut decommit = rid.clone();
            rng.fill_bytes(decommit.as_mut());
            kg::MsgRound2Broad {
                rid,
                F: f * &Point::generator(),
                sch_commit: h,
                decommit,
            }
        })
        .collect();
    let r1: Vec<kg::MsgRound1<Sha256>> = (0..n)
        .map(|j| kg::MsgRound1 {
            commitment: udigest::hash::<Sha256>(&unambiguous::KgHashCom {
                sid,
                party_index: j,
                decommitment: &r2[usize::from(j)],
            }),
        })
        .collect();
    let echo = udigest::hash_iter::<Sha256>(
        r1.iter()
            .map(|commitment| unambiguous::KgEcho { sid, commitment }),
    );
    let mut rid = vec![0u8; r2[0].rid.as_ref().len()];
    for d in &r2 {
        for (a, b) in rid.iter_mut().zip(d.rid.as_ref()) {
            *a ^= b;
        }
    }
    let mut entries = Vec::new();
    for j in 0..n {
        let key = &c.keys[usize::from(j)];
        let x = share(j);
        let y = generic_ec::NonZero::from_point(Point::generator() * x).unwrap();
        let nonce = Scalar::from_hash::<Sha256>(&unambiguous::KgSchnorrPok {
            sid,
            prover: j,
            rid: &rid,
            y,
            h: r2[usize::from(j)].sch_commit.0,
        });
        let proof = schnorr_pok::prove(
            &nonces[usize::from(j)],
            &schnorr_pok::Challenge { nonce },
            x,
        );
        let seal = |seq: u32, to: Option<u16>, m: KgMsg| {
            let mut payload = Vec::new();
            ciborium::into_writer(&m, &mut payload).unwrap();
            Entry::recorded(&Envelope::seal(
                key,
                kg_id,
                Protocol::Keygen,
                seq,
                j,
                to,
                payload,
            ))
        };
        entries.push(seal(0, None, KgMsg::Round1(r1[usize::from(j)].clone())));
        entries.push(seal(
            1,
            None,
            KgMsg::ReliabilityCheck(kg::MsgReliabilityCheck(echo)),
        ));
        entries.push(seal(
            2,
            None,
            KgMsg::Round2Broad(r2[usize::from(j)].clone()),
        ));
        entries.push(seal(
            3,
            None,
            KgMsg::Round3(kg::MsgRound3 { sch_proof: proof }),
        ));
        for k in (0..n).filter(|&k| k != j) {
            let sigma = polys[usize::from(j)].value::<_, Scalar<Curve>>(&at(k));
            entries.push(seal(
                0,
                Some(k),
                KgMsg::Round2Uni(kg::MsgRound2Uni { sigma }),
            ));
        }
    }
    let kg_entries = merge(entries).unwrap();
    let root = root(c.aux.iter().chain(kg_entries.iter()));
    let secret: Scalar<Curve> = polys
        .iter()
        .map(|f| f.value::<_, Scalar<Curve>>(&Scalar::zero()))
        .sum();
    let pk = Point::generator() * secret;
    let cert = KeyCertificate {
        format: CERTIFICATE_FORMAT.into(),
        key_id: "dealt".into(),
        curve: "secp256k1".into(),
        threshold: 2,
        parties: cert_parties(&c.keys),
        public_key: ByteBuf::from(pk.to_bytes(true).to_vec()),
        public_shares: (0..n)
            .map(|k| ByteBuf::from((Point::generator() * share(k)).to_bytes(true).to_vec()))
            .collect(),
        aux_id: ByteBuf::from(c.aux_id.to_vec()),
        keygen_id: ByteBuf::from(kg_id.to_vec()),
        transcript_root: ByteBuf::from(root.to_vec()),
        created_unix: 1_700_000_000,
    };
    let certs: Vec<_> = (0..n)
        .map(|i| SignedCertificate::sign(&c.keys[usize::from(i)], i, &cert))
        .collect();
    let sk = k256::ecdsa::SigningKey::from_slice(&secret.to_be_bytes()).unwrap();
    let sig: k256::ecdsa::Signature = k256::ecdsa::signature::hazmat::PrehashSigner::sign_prehash(
        &sk,
        &certificate_digest(&certs[0].body),
    )
    .unwrap();
    let sig = sig.normalize_s().unwrap_or(sig);
    let mut rs = [0u8; 64];
    rs.copy_from_slice(&sig.to_bytes());
    TranscriptFile::new(&c.aux, &kg_entries, certs, rs).encode()
}

#[test]
fn verify__should_catch_a_party_committing_to_a_degree_2_polynomial() {
    let c = honest();
    let parties = auditor(&c.keys);
    // The dealer is faithful: with degree 1 everywhere its transcript passes.
    let r = verify::verify(&dealer_transcript(c, 1, 1), &parties);
    assert!(r.passed(), "{r}");
    // Party 1 commits to degree 2: 2-of-3 has become 3-of-3.
    let r = verify::verify(&dealer_transcript(c, 1, 2), &parties);
    let why = fails(&r, "polynomial degree");
    assert!(why.contains("party 1") && why.contains("degree 2"), "{why}");
    fails(&r, "interpolation");
    // Everything an honest run would also show still checks out.
    for ok in [
        "envelopes",
        "hash chain",
        "commitments",
        "public key",
        "schnorr proofs",
        "key signature",
    ] {
        let c = r.checks.iter().find(|c| c.name == ok).unwrap();
        assert!(
            matches!(c.outcome, Outcome::Pass(_)),
            "{ok}: {:?}",
            c.outcome
        );
    }
}
