//! The offline verifier behind `tss-audit verify`: checks a transcript file
//! against the parties the auditor names, with no network and no trust in
//! any node. Each check gives one [`Check`] line; `docs/TRANSCRIPT.md` lists
//! what each re-computes and what is not re-checked.

use std::fmt;

use cggmp24::security_level::SecurityLevel;
use generic_ec::{NonZero, Point, Scalar};
use generic_ec_zkp::polynomial::Polynomial;
use paillier_zk::backend::Integer;
use paillier_zk::{no_small_factor as pi_fac, paillier_blum_modulus as pi_mod};
use sha2::Sha256;
use tss_core::ecdsa::{Curve, Level};
use tss_core::envelope::Protocol;
use tss_core::identity::PartyId;

use crate::transcript::{
    certificate_digest, check_session, decode_entries, root, Entry, KeyCertificate, TranscriptFile,
};

type KgMsg = cggmp24_keygen::ThresholdMsg<Curve, Level, Sha256>;
type AuxMsg = cggmp24::key_refresh::msg::Msg<Sha256, Level>;
type KgRound1 = cggmp24_keygen::msg::threshold::MsgRound1<Sha256>;
type KgRound2 = cggmp24_keygen::msg::threshold::MsgRound2Broad<Curve, Level>;
type KgRound3 = cggmp24_keygen::msg::threshold::MsgRound3<Curve>;
type AuxRound1 = cggmp24::key_refresh::msg::MsgRound1<Sha256>;
type AuxRound2 = cggmp24::key_refresh::msg::MsgRound2<Level>;
type AuxRound3 = cggmp24::key_refresh::msg::MsgRound3;
type Sid<'a> = cggmp24::ExecutionId<'a>;

pub mod frost;
mod parties;
pub(crate) mod unambiguous;

pub use parties::{parse_parties, AuditorParty, PartiesError};

/// Outcome of one check.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Passed; what was established.
    Pass(String),
    /// Failed; why.
    Fail(String),
    /// Not run because a check it depends on failed.
    Skipped(String),
}

/// One line of the report.
#[derive(Clone, Debug)]
pub struct Check {
    /// Stable check name.
    pub name: &'static str,
    /// Result.
    pub outcome: Outcome,
}

/// All checks, in order.
#[derive(Clone, Debug, Default)]
pub struct Report {
    /// One per check.
    pub checks: Vec<Check>,
}

impl Report {
    /// True when every check passed.
    pub fn passed(&self) -> bool {
        self.checks
            .iter()
            .all(|c| matches!(c.outcome, Outcome::Pass(_)))
    }

    /// Names of the failed checks.
    pub fn failed(&self) -> Vec<&'static str> {
        self.checks
            .iter()
            .filter(|c| matches!(c.outcome, Outcome::Fail(_)))
            .map(|c| c.name)
            .collect()
    }

    fn push(&mut self, name: &'static str, r: Result<String, String>) -> bool {
        let ok = r.is_ok();
        self.checks.push(Check {
            name,
            outcome: match r {
                Ok(s) => Outcome::Pass(s),
                Err(s) => Outcome::Fail(s),
            },
        });
        ok
    }

    fn skip(&mut self, names: &[&'static str], why: &str) {
        for name in names {
            self.checks.push(Check {
                name,
                outcome: Outcome::Skipped(why.to_owned()),
            });
        }
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for c in &self.checks {
            let (tag, text) = match &c.outcome {
                Outcome::Pass(s) => ("pass", s),
                Outcome::Fail(s) => ("FAIL", s),
                Outcome::Skipped(s) => ("skip", s),
            };
            writeln!(f, "{tag}  {:<18} {text}", c.name)?;
        }
        Ok(())
    }
}

/// Names of all checks, in report order.
pub const CHECKS: [&str; 13] = [
    "format",
    "certificates",
    "parties",
    "envelopes",
    "hash chain",
    "commitments",
    "polynomial degree",
    "public key",
    "public shares",
    "interpolation",
    "schnorr proofs",
    "paillier proofs",
    "key signature",
];

/// Verifies transcript file bytes against the auditor's parties.
pub fn verify(file: &[u8], auditor: &[AuditorParty]) -> Report {
    let mut report = Report::default();
    let f = match TranscriptFile::decode(file) {
        Ok(f) => f,
        Err(e) => {
            report.push("format", Err(e.to_string()));
            report.skip(&CHECKS[1..], "the file does not decode");
            return report;
        }
    };
    report.push(
        "format",
        Ok(format!(
            "{} v{}, {} aux-info and {} keygen envelopes, {} certificates",
            f.format,
            f.version,
            f.aux.len(),
            f.keygen.len(),
            f.certificates.len()
        )),
    );

    // Certificates: the reference is party 0's; all must be identical.
    let cert = f
        .certificates
        .first()
        .ok_or_else(|| "no certificates".to_owned())
        .and_then(|c| KeyCertificate::decode(&c.body).map_err(|e| e.to_string()));
    let cert = match cert {
        Ok(c) => c,
        Err(e) => {
            report.push("certificates", Err(format!("certificate 0: {e}")));
            report.skip(&CHECKS[2..], "no readable certificate");
            return report;
        }
    };
    let ids = match cert.party_ids() {
        Ok(ids) => ids,
        Err(e) => {
            report.push("certificates", Err(e.to_string()));
            report.skip(&CHECKS[2..], "no readable certificate");
            return report;
        }
    };
    report.push("certificates", check_certificates(&f, &cert, &ids));
    report.push("parties", check_parties(&cert, auditor));
    if let Some(scheme) = crate::transcript::frost_scheme_of(&cert.curve) {
        frost::verify_rest(&f, &cert, &ids, scheme, &mut report);
        return report;
    }

    let entries = decode_entries(&f.aux).and_then(|a| Ok((a, decode_entries(&f.keygen)?)));
    let (aux, kg) = match entries {
        Ok(v) => v,
        Err(e) => {
            report.push("envelopes", Err(e.to_string()));
            report.skip(&CHECKS[4..12], "envelopes do not decode");
            report.push("key signature", check_key_signature(&f, &cert));
            return report;
        }
    };
    let msgs = check_envelopes(&cert, &ids, &aux, &kg);
    let msgs = match msgs {
        Ok(m) => {
            report.push(
                "envelopes",
                Ok(format!(
                    "{} envelopes, each signed by its sender; both sessions complete, canonical order",
                    aux.len() + kg.len()
                )),
            );
            Some(m)
        }
        Err(e) => {
            report.push("envelopes", Err(e));
            None
        }
    };
    report.push(
        "hash chain",
        check_root(root(aux.iter().chain(kg.iter())), &cert),
    );
    match msgs {
        Some(m) => {
            let eid_aux = cert.aux_id.to_vec();
            let eid_kg = cert.keygen_id.to_vec();
            report.push("commitments", check_commitments(&m, &eid_aux, &eid_kg));
            let dkg = Dkg::new(&m);
            report.push("polynomial degree", dkg.check_degree(cert.threshold));
            report.push("public key", dkg.check_public_key(&cert));
            report.push("public shares", dkg.check_public_shares(&cert));
            report.push("interpolation", dkg.check_interpolation(cert.threshold));
            report.push("schnorr proofs", dkg.check_schnorr(&m, &eid_kg));
            report.push("paillier proofs", check_paillier(&m, &eid_aux));
        }
        None => report.skip(
            &CHECKS[5..12],
            "the envelopes are not an authentic complete run",
        ),
    }
    report.push("key signature", check_key_signature(&f, &cert));
    report
}

/// The "hash chain" check: the root over the envelopes is the one the
/// certificates name.
fn check_root(r: [u8; 32], cert: &KeyCertificate) -> Result<String, String> {
    if r.as_slice() == cert.transcript_root.as_slice() {
        Ok(format!(
            "root {} is the one all certificates name",
            hex::encode(r)
        ))
    } else {
        Err(format!(
            "root of the envelopes is {}, certificates name {}",
            hex::encode(r),
            hex::encode(&cert.transcript_root)
        ))
    }
}

fn check_certificates(
    f: &TranscriptFile,
    cert: &KeyCertificate,
    ids: &[PartyId],
) -> Result<String, String> {
    let n = cert.parties.len();
    if f.certificates.len() != n {
        return Err(format!(
            "{} certificates for {n} parties",
            f.certificates.len()
        ));
    }
    let first = &f.certificates[0].body;
    for (i, c) in f.certificates.iter().enumerate() {
        if usize::from(c.party) != i {
            return Err(format!("certificate {i} claims party index {}", c.party));
        }
        let name = &cert.parties[i].name;
        if c.body != *first {
            return Err(format!(
                "certificate of {name} differs from that of {}",
                cert.parties[0].name
            ));
        }
        c.verify(&ids[i])
            .map_err(|e| format!("certificate of {name}: {e}"))?;
    }
    if cert.public_shares.len() != n || usize::from(cert.threshold) > n || cert.threshold == 0 {
        return Err(format!(
            "certificate names {} public shares and threshold {} for {n} parties",
            cert.public_shares.len(),
            cert.threshold
        ));
    }
    if cert.curve != "secp256k1" && crate::transcript::frost_scheme_of(&cert.curve).is_none() {
        return Err(format!("unsupported curve {:?}", cert.curve));
    }
    Ok(format!(
        "key {:?} ({}): {n} certificates agree, each signed by its party's identity key ({}-of-{n}, created {})",
        cert.key_id, cert.curve, cert.threshold, cert.created_unix
    ))
}

fn check_parties(cert: &KeyCertificate, auditor: &[AuditorParty]) -> Result<String, String> {
    if auditor.len() != cert.parties.len() {
        return Err(format!(
            "the auditor names {} parties, the transcript {}",
            auditor.len(),
            cert.parties.len()
        ));
    }
    for p in &cert.parties {
        let id = hex::encode(&p.identity);
        let a = auditor
            .iter()
            .find(|a| a.identity.trim().eq_ignore_ascii_case(&id))
            .ok_or_else(|| {
                format!(
                    "transcript party {} (identity {id}) is not among the auditor's parties",
                    p.name
                )
            })?;
        if a.name != p.name {
            return Err(format!(
                "identity {id} is {:?} in the transcript but {:?} for the auditor",
                p.name, a.name
            ));
        }
        let fp = a.fingerprint().map_err(|e| e.to_string())?;
        if fp.as_slice() != p.tls_fingerprint.as_slice() {
            return Err(format!(
                "{}: TLS certificate fingerprint differs from the auditor's",
                p.name
            ));
        }
    }
    let names: Vec<_> = cert.parties.iter().map(|p| p.name.as_str()).collect();
    Ok(format!(
        "{} are the auditor's parties (identity keys and TLS fingerprints)",
        names.join(", ")
    ))
}

/// Decoded protocol messages, by party index.
struct Msgs {
    n: u16,
    aux_r1: Vec<AuxRound1>,
    aux_echo: Vec<Vec<u8>>,
    aux_r2: Vec<AuxRound2>,
    /// `(sender, recipient, message)`.
    aux_r3: Vec<(u16, u16, AuxRound3)>,
    kg_r1: Vec<KgRound1>,
    kg_echo: Vec<Vec<u8>>,
    kg_r2: Vec<KgRound2>,
    kg_r3: Vec<KgRound3>,
}

fn payload<M: serde::de::DeserializeOwned>(e: &Entry) -> Result<M, String> {
    match e {
        Entry::Full(env) => tss_core::ecdsa::decode_cbor(&env.payload).map_err(|err| {
            format!(
                "party {} message #{} is not a protocol message: {err}",
                env.sender, env.seq
            )
        }),
        Entry::Hashed(_) => Err("a message needed in full is only hashed".into()),
    }
}

fn check_envelopes(
    cert: &KeyCertificate,
    ids: &[PartyId],
    aux: &[Entry],
    kg: &[Entry],
) -> Result<Msgs, String> {
    let sid = |b: &[u8], what: &str| {
        <[u8; 32]>::try_from(b).map_err(|_| format!("{what} in the certificate is not 32 bytes"))
    };
    let aux_id = sid(&cert.aux_id, "aux_id")?;
    let kg_id = sid(&cert.keygen_id, "keygen_id")?;
    check_session(aux, &aux_id, Protocol::AuxInfo, ids).map_err(|e| e.to_string())?;
    check_session(kg, &kg_id, Protocol::Keygen, ids).map_err(|e| e.to_string())?;
    let n = ids.len() as u16;
    let mut m = Msgs {
        n,
        aux_r1: vec![],
        aux_echo: vec![],
        aux_r2: vec![],
        aux_r3: vec![],
        kg_r1: vec![],
        kg_echo: vec![],
        kg_r2: vec![],
        kg_r3: vec![],
    };
    let wrong = |e: &Entry| {
        format!(
            "party {} message #{} ({:?}) is not the message that round expects",
            e.sender(),
            e.seq(),
            e.protocol()
        )
    };
    // Canonical order: seq, then sender; each round's broadcasts come in
    // party order.
    for e in aux {
        let msg: AuxMsg = payload(e)?;
        match (e.recipient(), e.seq(), msg) {
            (None, 0, AuxMsg::Round1(r)) => m.aux_r1.push(r),
            (None, 1, AuxMsg::ReliabilityCheck(h)) => m.aux_echo.push(h.0.to_vec()),
            (None, 2, AuxMsg::Round2(r)) => m.aux_r2.push(r),
            (Some(to), 0, AuxMsg::Round3(r)) => m.aux_r3.push((e.sender(), to, r)),
            _ => return Err(wrong(e)),
        }
    }
    for e in kg {
        if e.recipient().is_some() {
            continue; // hashed shares
        }
        let msg: KgMsg = payload(e)?;
        match (e.seq(), msg) {
            (0, KgMsg::Round1(r)) => m.kg_r1.push(r),
            (1, KgMsg::ReliabilityCheck(h)) => m.kg_echo.push(h.0.to_vec()),
            (2, KgMsg::Round2Broad(r)) => m.kg_r2.push(r),
            (3, KgMsg::Round3(r)) => m.kg_r3.push(r),
            _ => return Err(wrong(e)),
        }
    }
    Ok(m)
}

fn check_commitments(m: &Msgs, aux_id: &[u8], kg_id: &[u8]) -> Result<String, String> {
    let aux_sid = Sid::new(aux_id);
    let kg_sid = Sid::new(kg_id);
    for j in 0..m.n {
        let i = usize::from(j);
        let c = udigest::hash::<Sha256>(&unambiguous::AuxHashCom {
            sid: aux_sid,
            prover: j,
            decommitment: &m.aux_r2[i],
        });
        if c != m.aux_r1[i].commitment {
            return Err(format!(
                "aux info: party {j}'s round-2 values do not open its round-1 commitment"
            ));
        }
        let c = udigest::hash::<Sha256>(&unambiguous::KgHashCom {
            sid: kg_sid,
            party_index: j,
            decommitment: &m.kg_r2[i],
        });
        if c != m.kg_r1[i].commitment {
            return Err(format!(
                "keygen: party {j}'s polynomial commitment does not open its round-1 commitment"
            ));
        }
    }
    let aux_echo =
        udigest::hash_iter::<Sha256>(m.aux_r1.iter().map(|commitment| unambiguous::AuxEcho {
            sid: aux_sid,
            commitment,
        }));
    let kg_echo =
        udigest::hash_iter::<Sha256>(m.kg_r1.iter().map(|commitment| unambiguous::KgEcho {
            sid: kg_sid,
            commitment,
        }));
    for j in 0..usize::from(m.n) {
        if m.aux_echo[j] != aux_echo.as_slice() || m.kg_echo[j] != kg_echo.as_slice() {
            return Err(format!(
                "party {j}'s echo round hash differs: it saw other round-1 commitments"
            ));
        }
    }
    Ok(
        "every party's round-2 values open its round-1 hash commitment, and every echo agrees (both sessions)"
            .into(),
    )
}

struct Dkg {
    polys: Vec<Polynomial<Point<Curve>>>,
    sum: Polynomial<Point<Curve>>,
}

fn point(b: &[u8]) -> Result<Point<Curve>, String> {
    Point::<Curve>::from_bytes(b).map_err(|_| "not a curve point".to_owned())
}

fn at(x: u16) -> Scalar<Curve> {
    Scalar::from(x + 1)
}

impl Dkg {
    fn new(m: &Msgs) -> Self {
        let polys: Vec<_> = m.kg_r2.iter().map(|d| d.F.clone()).collect();
        let sum = polys.iter().sum::<Polynomial<_>>();
        Dkg { polys, sum }
    }

    fn share(&self, i: u16) -> Point<Curve> {
        self.sum.value(&at(i))
    }

    fn check_degree(&self, t: u16) -> Result<String, String> {
        for (j, p) in self.polys.iter().enumerate() {
            let coefs = p.coefs().len();
            if coefs != usize::from(t) {
                return Err(format!(
                    "party {j} committed to a polynomial of degree {} where {t}-of-n needs degree {}",
                    coefs.saturating_sub(1),
                    t.saturating_sub(1)
                ));
            }
        }
        Ok(format!(
            "every committed polynomial has degree {} ({t} signers needed)",
            t.saturating_sub(1)
        ))
    }

    fn check_public_key(&self, cert: &KeyCertificate) -> Result<String, String> {
        let pk: Point<Curve> = self
            .polys
            .iter()
            .map(|p| p.coefs().first().copied().unwrap_or_else(Point::zero))
            .sum();
        let named = point(&cert.public_key).map_err(|e| format!("certificate public key: {e}"))?;
        if pk.is_zero() || pk != named {
            return Err(format!(
                "the sum of the committed constant terms is {}, the certificate names {}",
                hex::encode(pk.to_bytes(true)),
                hex::encode(&cert.public_key)
            ));
        }
        Ok(format!(
            "{} is the sum of the parties' committed constant terms",
            hex::encode(&cert.public_key)
        ))
    }

    fn check_public_shares(&self, cert: &KeyCertificate) -> Result<String, String> {
        for (i, b) in cert.public_shares.iter().enumerate() {
            let named = point(b).map_err(|e| format!("public share {i}: {e}"))?;
            if self.share(i as u16) != named {
                return Err(format!(
                    "public share of party {i} is not the combined commitment polynomial at {}",
                    i + 1
                ));
            }
        }
        Ok("each party's public share is the combined commitment polynomial at its point".into())
    }

    fn check_interpolation(&self, t: u16) -> Result<String, String> {
        if t != 2 {
            return Err(format!(
                "this verifier checks 2-of-n interpolation; threshold is {t}"
            ));
        }
        let pk = self.sum.value::<_, Point<Curve>>(&Scalar::zero());
        let n = self.polys.len() as u16;
        for a in 0..n {
            for b in (a + 1)..n {
                let (xa, xb) = (at(a), at(b));
                let la = xb * (xb - xa).invert().ok_or("equal points")?;
                let lb = xa * (xa - xb).invert().ok_or("equal points")?;
                if self.share(a) * la + self.share(b) * lb != pk {
                    return Err(format!(
                        "public shares of parties {a} and {b} do not interpolate to the public key"
                    ));
                }
            }
        }
        Ok("every 2 of the public shares interpolate to the public key".into())
    }

    fn check_schnorr(&self, m: &Msgs, kg_id: &[u8]) -> Result<String, String> {
        let sid = Sid::new(kg_id);
        let mut rid = vec![0u8; m.kg_r2.first().map_or(0, |d| d.rid.as_ref().len())];
        for d in &m.kg_r2 {
            for (a, b) in rid.iter_mut().zip(d.rid.as_ref()) {
                *a ^= b;
            }
        }
        for j in 0..m.n {
            let i = usize::from(j);
            let y = NonZero::from_point(self.share(j))
                .ok_or_else(|| format!("public share of party {j} is zero"))?;
            let nonce = Scalar::from_hash::<Sha256>(&unambiguous::KgSchnorrPok {
                sid,
                prover: j,
                rid: &rid,
                y,
                h: m.kg_r2[i].sch_commit.0,
            });
            let challenge = generic_ec_zkp::schnorr_pok::Challenge { nonce };
            m.kg_r3[i]
                .sch_proof
                .verify(&m.kg_r2[i].sch_commit, &challenge, &y)
                .map_err(|_| {
                    format!("party {j}'s proof of knowledge of its share does not verify")
                })?;
        }
        Ok(format!(
            "{} Schnorr proofs of knowledge of the key shares verify",
            m.n
        ))
    }
}

fn check_paillier(m: &Msgs, aux_id: &[u8]) -> Result<String, String> {
    let sid = Sid::new(aux_id);
    let bits = <Level as SecurityLevel>::RSA_PUBKEY_BITLEN;
    for (j, d) in m.aux_r2.iter().enumerate() {
        for (what, v) in [("N", &d.N), ("N^", &d.hat_N)] {
            if v.significant_bits() < u64::from(bits) {
                return Err(format!(
                    "party {j}'s modulus {what} has {} bits, fewer than {bits}",
                    v.significant_bits()
                ));
            }
        }
    }
    let mut rho = vec![0u8; m.aux_r2.first().map_or(0, |d| d.rho_bytes.as_ref().len())];
    for d in &m.aux_r2 {
        for (a, b) in rho.iter_mut().zip(d.rho_bytes.as_ref()) {
            *a ^= b;
        }
    }
    let security = pi_fac::SecurityParams {
        l: <Level as SecurityLevel>::ELL,
        epsilon: <Level as SecurityLevel>::EPSILON,
    };
    let mut rng = rand_core::OsRng;
    for (from, to, r3) in &m.aux_r3 {
        let prover = &m.aux_r2[usize::from(*from)];
        let verifier = &m.aux_r2[usize::from(*to)];
        pi_mod::non_interactive::verify::<{ cggmp24::security_level::M }, Sha256>(
            &unambiguous::ProofMod {
                sid,
                rho: &rho,
                prover: *from,
            },
            pi_mod::Data { n: &prover.N },
            &r3.mod_proof,
            &mut rng,
        )
        .map_err(|_| format!("party {from}'s proof that N is a Paillier-Blum modulus (to party {to}) does not verify"))?;
        let n_root = prover.N.sqrt_ref().unwrap_or_else(Integer::one);
        pi_fac::non_interactive::verify::<Sha256>(
            &unambiguous::ProofFac {
                sid,
                rho: &rho,
                prover: *from,
            },
            &pi_fac::Aux {
                s: verifier.s.clone(),
                t: verifier.t.clone(),
                rsa_modulo: verifier.hat_N.clone(),
                multiexp: None,
                crt: None,
            },
            pi_fac::Data {
                n: &prover.N,
                n_root: &n_root,
            },
            &security,
            &r3.fac_proof,
        )
        .map_err(|_| {
            format!(
                "party {from}'s proof that N has no small factors (to party {to}) does not verify"
            )
        })?;
    }
    Ok(format!(
        "moduli of at least {bits} bits; {} Paillier-Blum (Π_mod) and {} no-small-factor (Π_fac) proofs verify",
        m.aux_r3.len(),
        m.aux_r3.len()
    ))
}

fn check_key_signature(f: &TranscriptFile, cert: &KeyCertificate) -> Result<String, String> {
    use k256::ecdsa::signature::hazmat::PrehashVerifier;
    let vk = k256::ecdsa::VerifyingKey::from_sec1_bytes(&cert.public_key)
        .map_err(|_| "certificate public key is not a secp256k1 point".to_owned())?;
    let sig = k256::ecdsa::Signature::from_slice(&f.key_signature)
        .map_err(|_| "key signature is not a 64-byte (r, s) signature".to_owned())?;
    if sig.normalize_s().is_some() {
        return Err("key signature is not in low-S form".into());
    }
    let digest = certificate_digest(&f.certificates[0].body);
    vk.verify_prehash(&digest, &sig)
        .map_err(|_| "the key's signature over the certificate does not verify".to_owned())?;
    Ok(format!(
        "the new key signed the certificate (digest {})",
        hex::encode(digest)
    ))
}
