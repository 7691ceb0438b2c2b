//! The offline checks of a FROST key's transcript (Ed25519 and Taproot
//! keys): one DKG session (no aux info), whose broadcasts are each party's
//! commitments with its proof of knowledge and its echo of round 1. Every
//! figure is recomputed from the envelopes: the degree of each polynomial,
//! each proof of knowledge, the echoes, the group key as the sum of the
//! constant terms (BIP86-tweaked for Taproot), each party's public share,
//! their interpolation, and the key's own signature over its certificate.

use std::collections::{BTreeMap, BTreeSet};

use frost_core::keys::dkg::round1;
use frost_core::keys::PublicKeyPackage;
use frost_core::{Ciphersuite, Group, Identifier};
use tss_core::envelope::Protocol;
use tss_core::frost::keygen::{echo_digest, Msg};
use tss_core::frost::Scheme;
use tss_core::identity::PartyId;

use super::Report;
use crate::transcript::{certificate_digest, check_session, Entry, KeyCertificate, TranscriptFile};

/// Names of the checks of a FROST transcript after "parties", in order.
pub const FROST_CHECKS: [&str; 9] = [
    "envelopes",
    "hash chain",
    "commitments",
    "polynomial degree",
    "public key",
    "public shares",
    "interpolation",
    "schnorr proofs",
    "key signature",
];

/// Each party's round-1 package and echo, in index order.
struct Broadcasts {
    packages: Vec<Vec<u8>>,
    echoes: Vec<[u8; 32]>,
}

/// Runs the FROST checks after "format", "certificates" and "parties".
pub(super) fn verify_rest(
    f: &TranscriptFile,
    cert: &KeyCertificate,
    ids: &[PartyId],
    scheme: Scheme,
    report: &mut Report,
) {
    let kg = match crate::transcript::decode_entries(&f.keygen) {
        Ok(kg) if f.aux.is_empty() => kg,
        Ok(_) => {
            report.push(
                "envelopes",
                Err("a FROST key has no aux-info session, but the file holds one".into()),
            );
            report.skip(&FROST_CHECKS[1..8], "the envelopes are not a FROST run");
            report.push("key signature", key_signature(scheme, f, cert));
            return;
        }
        Err(e) => {
            report.push("envelopes", Err(e.to_string()));
            report.skip(&FROST_CHECKS[1..8], "envelopes do not decode");
            report.push("key signature", key_signature(scheme, f, cert));
            return;
        }
    };
    let b = broadcasts(cert, ids, &kg);
    let b = match b {
        Ok(b) => {
            report.push(
                "envelopes",
                Ok(format!(
                    "{} envelopes, each signed by its sender; the DKG session is complete, canonical order",
                    kg.len()
                )),
            );
            Some(b)
        }
        Err(e) => {
            report.push("envelopes", Err(e));
            None
        }
    };
    report.push(
        "hash chain",
        super::check_root(crate::transcript::root(kg.iter()), cert),
    );
    match b {
        Some(b) => {
            let kg_id: [u8; 32] = cert.keygen_id.as_slice().try_into().unwrap_or([0; 32]);
            tss_core_with_suite(scheme, |s| s.checks(&b, cert, &kg_id, report));
        }
        None => report.skip(
            &FROST_CHECKS[2..8],
            "the envelopes are not an authentic complete run",
        ),
    }
    report.push("key signature", key_signature(scheme, f, cert));
}

/// The broadcasts of a complete, authentic DKG session.
fn broadcasts(cert: &KeyCertificate, ids: &[PartyId], kg: &[Entry]) -> Result<Broadcasts, String> {
    let kg_id: [u8; 32] = cert
        .keygen_id
        .as_slice()
        .try_into()
        .map_err(|_| "the certificate's keygen id is not 32 bytes".to_owned())?;
    check_session(kg, &kg_id, Protocol::FrostKeygen, ids).map_err(|e| e.to_string())?;
    let n = ids.len();
    let mut packages = vec![None; n];
    let mut echoes = vec![None; n];
    for e in kg {
        let Entry::Full(env) = e else { continue };
        let m: Msg = tss_core::ecdsa::decode_cbor(&env.payload).map_err(|err| {
            format!(
                "party {} message #{} is not a protocol message: {err}",
                env.sender, env.seq
            )
        })?;
        let at = usize::from(env.sender);
        match m {
            Msg::Commit(c) => packages[at] = Some(c.package),
            Msg::Echo(x) => echoes[at] = Some(x.digest),
            Msg::Share(_) => return Err(format!("party {} broadcast a secret share", env.sender)),
        }
    }
    let packages = packages
        .into_iter()
        .enumerate()
        .map(|(i, p)| p.ok_or(format!("party {i} has no round-1 commitments")))
        .collect::<Result<_, _>>()?;
    let echoes = echoes
        .into_iter()
        .enumerate()
        .map(|(i, p)| p.ok_or(format!("party {i} has no echo")))
        .collect::<Result<_, _>>()?;
    Ok(Broadcasts { packages, echoes })
}

/// The checks over the suite's group.
struct Suite<C: Ciphersuite> {
    scheme: Scheme,
    _c: std::marker::PhantomData<C>,
}

fn tss_core_with_suite(scheme: Scheme, f: impl FnOnce(&dyn SuiteChecks)) {
    match scheme {
        Scheme::Ed25519 => f(&Suite::<frost_ed25519::Ed25519Sha512> {
            scheme,
            _c: std::marker::PhantomData,
        }),
        Scheme::Taproot => f(&Suite::<frost_secp256k1_tr::Secp256K1Sha256TR> {
            scheme,
            _c: std::marker::PhantomData,
        }),
    }
}

trait SuiteChecks {
    fn checks(&self, b: &Broadcasts, cert: &KeyCertificate, kg_id: &[u8; 32], report: &mut Report);
}

impl<C: Ciphersuite> SuiteChecks for Suite<C> {
    fn checks(&self, b: &Broadcasts, cert: &KeyCertificate, kg_id: &[u8; 32], report: &mut Report) {
        let views: Vec<&[u8]> = b.packages.iter().map(Vec::as_slice).collect();
        let digest = echo_digest(kg_id, self.scheme, &views);
        let bad: Vec<String> = b
            .echoes
            .iter()
            .enumerate()
            .filter(|(_, e)| **e != digest)
            .map(|(i, _)| i.to_string())
            .collect();
        let decoded = self.decode(&b.packages);
        report.push(
            "commitments",
            match (&decoded, bad.is_empty()) {
                (Err(e), _) => Err(e.clone()),
                (Ok(_), false) => Err(format!(
                    "the echo of party {} differs from the round-1 commitments in the file",
                    bad.join(", ")
                )),
                (Ok(_), true) => Ok(format!(
                    "{} round-1 packages decode; every party echoed the same view of them",
                    b.packages.len()
                )),
            },
        );
        let Ok(packages) = decoded else {
            report.skip(&FROST_CHECKS[3..8], "the commitments do not decode");
            return;
        };
        report.push("polynomial degree", degree(&packages, cert.threshold));
        let public = self.public_package(&packages);
        match public {
            Ok(p) => {
                report.push("public key", self.public_key(&p, cert));
                report.push("public shares", public_shares(&p, cert));
                report.push("interpolation", interpolation(&p, cert.threshold));
            }
            Err(e) => {
                report.push("public key", Err(e));
                report.skip(&["public shares", "interpolation"], "no group key");
            }
        }
        report.push("schnorr proofs", proofs(&packages));
    }
}

impl<C: Ciphersuite> Suite<C> {
    fn decode(
        &self,
        raw: &[Vec<u8>],
    ) -> Result<BTreeMap<Identifier<C>, round1::Package<C>>, String> {
        raw.iter()
            .enumerate()
            .map(|(i, b)| {
                let id = Identifier::<C>::try_from(i as u16 + 1).map_err(|e| e.to_string())?;
                let p = round1::Package::<C>::deserialize(b)
                    .ok()
                    .filter(|p| p.serialize().ok().as_deref() == Some(b.as_slice()))
                    .ok_or(format!(
                        "party {i}'s round-1 package does not decode canonically"
                    ))?;
                Ok((id, p))
            })
            .collect()
    }

    /// The group key and public shares from the commitments alone, in the
    /// form the parties hold them (Taproot: BIP86-tweaked).
    fn public_package(
        &self,
        packages: &BTreeMap<Identifier<C>, round1::Package<C>>,
    ) -> Result<PublicKeyPackage<C>, String> {
        let commitments: BTreeMap<_, _> = packages
            .iter()
            .map(|(id, p)| (*id, p.commitment()))
            .collect();
        let p = PublicKeyPackage::<C>::from_dkg_commitments(&commitments)
            .map_err(|e| format!("the commitments do not sum to a key: {e}"))?;
        // What the suite does after its DKG: nothing for Ed25519, the BIP86
        // tweak for Taproot.
        Ok(match self.scheme {
            Scheme::Ed25519 => p,
            Scheme::Taproot => taproot_tweak(p)?,
        })
    }

    fn public_key(&self, p: &PublicKeyPackage<C>, cert: &KeyCertificate) -> Result<String, String> {
        let full = p.verifying_key().serialize().map_err(|e| e.to_string())?;
        let key = match self.scheme {
            Scheme::Ed25519 => full,
            Scheme::Taproot => full.get(1..).map(<[u8]>::to_vec).unwrap_or_default(),
        };
        if key.as_slice() == cert.public_key.as_slice() {
            Ok(format!(
                "the sum of the constant terms{} is the certified key {}",
                if self.scheme == Scheme::Taproot {
                    ", BIP86-tweaked,"
                } else {
                    ""
                },
                hex::encode(&key)
            ))
        } else {
            Err(format!(
                "the commitments give key {}, the certificate names {}",
                hex::encode(&key),
                hex::encode(&cert.public_key)
            ))
        }
    }
}

/// The BIP86 tweak the Taproot suite applies after its DKG (no script
/// tree), applied to a public package computed from commitments.
fn taproot_tweak<C: Ciphersuite>(p: PublicKeyPackage<C>) -> Result<PublicKeyPackage<C>, String> {
    // Only called for the Taproot suite: round-trip through its own type.
    let bytes = p.serialize().map_err(|e| e.to_string())?;
    let tr = frost_secp256k1_tr::keys::PublicKeyPackage::deserialize(&bytes)
        .map_err(|e| e.to_string())?;
    use frost_secp256k1_tr::keys::Tweak;
    let tweaked = tr.tweak::<&[u8]>(None);
    let again = tweaked.serialize().map_err(|e| e.to_string())?;
    PublicKeyPackage::<C>::deserialize(&again).map_err(|e| e.to_string())
}

fn degree<C: Ciphersuite>(
    packages: &BTreeMap<Identifier<C>, round1::Package<C>>,
    t: u16,
) -> Result<String, String> {
    for (i, p) in packages.values().enumerate() {
        let k = p.commitment().serialize().map(|c| c.len()).unwrap_or(0);
        if k != usize::from(t) {
            return Err(format!(
                "party {i} committed to {k} coefficients: a polynomial of degree {}, not {} for threshold {t}",
                k.saturating_sub(1),
                t - 1
            ));
        }
    }
    Ok(format!(
        "every party committed to a polynomial of degree {} (threshold {t})",
        t - 1
    ))
}

fn public_shares<C: Ciphersuite>(
    p: &PublicKeyPackage<C>,
    cert: &KeyCertificate,
) -> Result<String, String> {
    let ours: Vec<Vec<u8>> = p
        .verifying_shares()
        .values()
        .map(|v| v.serialize().unwrap_or_default())
        .collect();
    let theirs: Vec<Vec<u8>> = cert.public_shares.iter().map(|b| b.to_vec()).collect();
    if ours == theirs {
        Ok(format!(
            "the {} public shares are the summed commitments evaluated at each party",
            ours.len()
        ))
    } else {
        Err("the certificate's public shares are not the summed commitments evaluated at each party".into())
    }
}

fn interpolation<C: Ciphersuite>(p: &PublicKeyPackage<C>, t: u16) -> Result<String, String> {
    let ids: Vec<Identifier<C>> = p.verifying_shares().keys().copied().collect();
    let key = p.verifying_key().to_element();
    let mut subsets = 0;
    for set in subsets_of(ids.len(), usize::from(t)) {
        let x_set: BTreeSet<Identifier<C>> = set.iter().map(|&i| ids[i]).collect();
        let mut sum = <C::Group as Group>::identity();
        for id in &x_set {
            let l = frost_core::compute_lagrange_coefficient(&x_set, None, *id)
                .map_err(|e| e.to_string())?;
            sum = sum + p.verifying_shares()[id].to_element() * l;
        }
        if sum != key {
            return Err(format!(
                "the public shares of parties {set:?} do not interpolate to the key"
            ));
        }
        subsets += 1;
    }
    Ok(format!(
        "every one of the {subsets} sets of {t} public shares interpolates to the key"
    ))
}

/// Every `k`-subset of `0..n`, in lexicographic order.
fn subsets_of(n: usize, k: usize) -> Vec<Vec<usize>> {
    let mut out = Vec::new();
    let mut cur = Vec::new();
    fn go(start: usize, n: usize, k: usize, cur: &mut Vec<usize>, out: &mut Vec<Vec<usize>>) {
        if cur.len() == k {
            out.push(cur.clone());
            return;
        }
        for i in start..n {
            cur.push(i);
            go(i + 1, n, k, cur, out);
            cur.pop();
        }
    }
    go(0, n, k, &mut cur, &mut out);
    out
}

fn proofs<C: Ciphersuite>(
    packages: &BTreeMap<Identifier<C>, round1::Package<C>>,
) -> Result<String, String> {
    for (i, (id, p)) in packages.iter().enumerate() {
        frost_core::keys::dkg::verify_proof_of_knowledge(
            *id,
            p.commitment(),
            p.proof_of_knowledge(),
        )
        .map_err(|_| {
            format!("party {i}'s proof of knowledge of its constant term does not verify")
        })?;
    }
    Ok(format!(
        "{} proofs of knowledge of the constant terms verify",
        packages.len()
    ))
}

/// The key's own signature over its certificate digest, checked by an
/// independent verifier (ed25519-dalek strict, or k256's BIP340).
fn key_signature(
    scheme: Scheme,
    f: &TranscriptFile,
    cert: &KeyCertificate,
) -> Result<String, String> {
    let body = &f.certificates.first().ok_or("no certificate")?.body;
    let digest = certificate_digest(body);
    let sig: [u8; 64] = f
        .key_signature
        .as_slice()
        .try_into()
        .map_err(|_| "the key signature is not 64 bytes".to_owned())?;
    match crate::transcript::frost_signature_ok(scheme, &cert.public_key, &digest, &sig) {
        Ok(true) => Ok(format!(
            "the new key signed the certificate ({}, digest {})",
            scheme.name(),
            hex::encode(digest)
        )),
        Ok(false) => Err("the key's signature over the certificate does not verify".into()),
        Err(what) => Err(format!("certified key or signature: {what}")),
    }
}
