//! The ceremony's steps after DKG that need no store and no network (the
//! node drives them, `tss-node`'s `transcript` module): each party's view of
//! a key's two runs ([`encode_view`], [`Sessions`]), their completion into
//! the full runs with the entries other parties saw ([`Sessions::sent_to_others`],
//! [`Sessions::unseen_by`], [`complete`]), where two parties' certificates
//! differ ([`difference`]), the signatures of the finished file
//! ([`check_signatures`]) and its assembly ([`assemble`]).
//!
//! Entries from peers are untrusted: [`complete`] accepts only entries of
//! the key's two runs, signed by their sender's identity, in recorded form.

use tss_core::envelope::{Envelope, Protocol};
use tss_core::identity::PartyId;

use crate::record::KeyRecord;
use crate::transcript::{self as kt, Entry, KeyCertificate, SignedCertificate, TranscriptFile};

/// What this party stores of a run it took part in: every envelope it sent
/// and accepted, in recorded form (point-to-point keygen envelopes only as
/// their hash, never their payload).
pub fn encode_view(recorded: &[Envelope]) -> Vec<u8> {
    let entries: Vec<Entry> = recorded.iter().map(Entry::recorded).collect();
    kt::encode_entries(&entries)
}

/// A key's two runs, each in canonical order.
#[derive(Clone, Debug, Default)]
pub struct Sessions {
    /// The aux-info run.
    pub aux: Vec<Entry>,
    /// The keygen run.
    pub keygen: Vec<Entry>,
}

impl Sessions {
    /// Root of the transcript's hash chain.
    pub fn root(&self) -> [u8; 32] {
        kt::root(self.aux.iter().chain(self.keygen.iter()))
    }

    fn p2p(&self) -> impl Iterator<Item = &Entry> {
        self.aux
            .iter()
            .chain(self.keygen.iter())
            .filter(|e| e.recipient().is_some())
    }

    /// The point-to-point entries party `j` neither sent nor received: what
    /// it lacks to complete its views.
    pub fn unseen_by(&self, j: u16) -> Vec<Entry> {
        self.p2p()
            .filter(|e| e.sender() != j && e.recipient() != Some(j))
            .cloned()
            .collect()
    }

    /// The point-to-point entries party `me` sent to parties other than `j`.
    pub fn sent_to_others(&self, me: u16, j: u16) -> Vec<Entry> {
        self.p2p()
            .filter(|e| e.sender() == me && e.recipient() != Some(j))
            .cloned()
            .collect()
    }
}

/// Why a key's runs or certificate signatures do not check; the words say
/// what, and name the party where one is at fault.
#[derive(Debug, thiserror::Error)]
pub enum CeremonyError {
    /// The key's own record is unusable.
    #[error("the record of key {key_id} is unusable: {what}")]
    Record {
        /// The key.
        key_id: String,
        /// What is wrong with its record.
        what: String,
    },
    /// A peer's entry belongs to neither run of the key.
    #[error(
        "an entry from party {party} ({protocol:?} #{seq}) belongs to neither run of key {key_id}"
    )]
    ForeignEntry {
        /// Index of the sender.
        party: u16,
        /// Protocol the entry claims.
        protocol: Protocol,
        /// Its sequence number.
        seq: u32,
        /// The key.
        key_id: String,
    },
    /// A run is not complete and authentic.
    #[error(transparent)]
    Run(#[from] kt::TranscriptError),
    /// Not one certificate signature per party.
    #[error("{got} certificate signatures for {parties} parties")]
    SignatureCount {
        /// Signatures given.
        got: usize,
        /// The key's parties.
        parties: usize,
    },
    /// A party's certificate signature does not verify under its identity.
    #[error("the certificate signature of {name} does not verify under its identity")]
    PartySignature {
        /// The party's name.
        name: String,
    },
    /// The key's own signature over its certificate is refused.
    #[error("{0}")]
    KeySignature(&'static str),
}

/// A key's execution ids and parties as its record holds them.
#[derive(Clone, Debug)]
pub struct KeyIds {
    /// Execution id of the aux-info run; `None` for a FROST key (no aux
    /// info).
    pub aux_id: Option<[u8; 32]>,
    /// The protocol of the key's DKG session.
    pub keygen_protocol: Protocol,
    /// Execution id of the keygen run.
    pub keygen_id: [u8; 32],
    /// The key's parties, in keygen index order.
    pub parties: Vec<PartyId>,
}

/// Reads a key's execution ids and parties from its record; the error says
/// what is unusable.
pub fn key_ids(record: &KeyRecord) -> Result<KeyIds, CeremonyError> {
    let bad = |what: &str| CeremonyError::Record {
        key_id: record.key_id.clone(),
        what: what.to_owned(),
    };
    let id = |h: &str, what: &str| {
        hex::decode(h)
            .ok()
            .and_then(|b| <[u8; 32]>::try_from(b).ok())
            .ok_or_else(|| bad(what))
    };
    let aux_id = match record.scheme {
        Some(_) => None,
        None => Some(id(&record.aux_id, "aux id")?),
    };
    Ok(KeyIds {
        aux_id,
        keygen_protocol: match record.scheme {
            Some(_) => Protocol::FrostKeygen,
            None => Protocol::Keygen,
        },
        keygen_id: id(&record.keygen_id, "keygen id")?,
        parties: record.party_ids().map_err(|e| bad(&e.to_string()))?,
    })
}

/// Completes `mine` with entries from peers and checks that both runs are
/// complete authentic runs of the key's sessions among its parties. Errors
/// say what is wrong, for the caller to attribute.
pub fn complete(
    record: &KeyRecord,
    mine: Sessions,
    extra: Vec<Entry>,
) -> Result<Sessions, CeremonyError> {
    let ids = key_ids(record)?;
    let (mut aux, mut keygen) = (mine.aux, mine.keygen);
    for e in extra {
        match (e.protocol(), e.session_id()) {
            (Protocol::AuxInfo, sid) if Some(sid) == ids.aux_id => aux.push(e),
            (p, sid) if p == ids.keygen_protocol && sid == ids.keygen_id => keygen.push(e),
            _ => {
                return Err(CeremonyError::ForeignEntry {
                    party: e.sender(),
                    protocol: e.protocol(),
                    seq: e.seq(),
                    key_id: record.key_id.clone(),
                })
            }
        }
    }
    let aux = kt::merge(aux)?;
    let keygen = kt::merge(keygen)?;
    match &ids.aux_id {
        Some(aux_id) => kt::check_session(&aux, aux_id, Protocol::AuxInfo, &ids.parties)?,
        None if aux.is_empty() => {}
        None => {
            return Err(CeremonyError::Record {
                key_id: record.key_id.clone(),
                what: "a FROST key has no aux-info run, but entries of one were given".into(),
            })
        }
    }
    kt::check_session(&keygen, &ids.keygen_id, ids.keygen_protocol, &ids.parties)?;
    Ok(Sessions { aux, keygen })
}

/// Where a peer's certificate differs from ours, in words.
pub fn difference(ours: &[u8], theirs: &[u8]) -> String {
    let Ok(t) = KeyCertificate::decode(theirs) else {
        return "its certificate does not decode".into();
    };
    let Ok(o) = KeyCertificate::decode(ours) else {
        return "our certificate does not decode".into();
    };
    let fields: [(&str, bool); 11] = [
        ("format", o.format == t.format),
        ("key id", o.key_id == t.key_id),
        ("curve", o.curve == t.curve),
        ("threshold", o.threshold == t.threshold),
        (
            "parties (names, identities, TLS fingerprints)",
            o.parties == t.parties,
        ),
        ("public key", o.public_key == t.public_key),
        ("public shares", o.public_shares == t.public_shares),
        ("aux id", o.aux_id == t.aux_id),
        ("keygen id", o.keygen_id == t.keygen_id),
        ("transcript root", o.transcript_root == t.transcript_root),
        ("creation time", o.created_unix == t.created_unix),
    ];
    let differ: Vec<&str> = fields
        .iter()
        .filter(|(_, same)| !same)
        .map(|(f, _)| *f)
        .collect();
    if differ.is_empty() {
        "same facts, different encoding".into()
    } else {
        format!("{} differ", differ.join(", "))
    }
}

/// Checks the signatures a transcript file carries: each party's over
/// `body` under its identity (index order), and the key's (`r || s`, low S)
/// over the certificate digest. Errors name the party.
pub fn check_signatures(
    record: &KeyRecord,
    body: &[u8],
    signatures: &[Vec<u8>],
    key_signature: &[u8; 64],
) -> Result<(), CeremonyError> {
    use k256::ecdsa::signature::hazmat::PrehashVerifier;
    let bad = |what: String| CeremonyError::Record {
        key_id: record.key_id.clone(),
        what,
    };
    let ids = record.party_ids().map_err(|e| bad(e.to_string()))?;
    if signatures.len() != ids.len() {
        return Err(CeremonyError::SignatureCount {
            got: signatures.len(),
            parties: ids.len(),
        });
    }
    for (i, (s, id)) in signatures.iter().zip(&ids).enumerate() {
        let signed = SignedCertificate {
            party: i as u16,
            body: body.to_vec().into(),
            signature: s.clone().into(),
        };
        if signed.verify(id).is_err() {
            let name = record.parties.get(i).map_or("?", |p| p.name.as_str());
            return Err(CeremonyError::PartySignature {
                name: name.to_owned(),
            });
        }
    }
    let pk = record.public_key_bytes().map_err(|e| bad(e.to_string()))?;
    if let Some(scheme) = record.scheme {
        return match kt::frost_signature_ok(
            scheme,
            &pk,
            &kt::certificate_digest(body),
            key_signature,
        ) {
            Ok(true) => Ok(()),
            Ok(false) => Err(CeremonyError::KeySignature(
                "the key's signature over the certificate does not verify",
            )),
            Err(what) => Err(CeremonyError::KeySignature(what)),
        };
    }
    let vk = k256::ecdsa::VerifyingKey::from_sec1_bytes(&pk).map_err(|_| {
        CeremonyError::KeySignature("the key's public key is not a secp256k1 point")
    })?;
    let sig = k256::ecdsa::Signature::from_slice(key_signature)
        .map_err(|_| CeremonyError::KeySignature("the key signature is not (r, s)"))?;
    if sig.normalize_s().is_some() {
        return Err(CeremonyError::KeySignature(
            "the key signature is not in low-S form",
        ));
    }
    vk.verify_prehash(&kt::certificate_digest(body), &sig)
        .map_err(|_| {
            CeremonyError::KeySignature("the key's signature over the certificate does not verify")
        })
}

/// Assembles a key's transcript file.
pub fn assemble(
    sessions: &Sessions,
    body: &[u8],
    signatures: &[Vec<u8>],
    key_signature: [u8; 64],
) -> Vec<u8> {
    let certificates = signatures
        .iter()
        .enumerate()
        .map(|(i, s)| SignedCertificate {
            party: i as u16,
            body: body.to_vec().into(),
            signature: s.clone().into(),
        })
        .collect();
    TranscriptFile::new(&sessions.aux, &sessions.keygen, certificates, key_signature).encode()
}

#[cfg(test)]
mod tests {
    #![allow(non_snake_case)]
    use super::*;
    use crate::record::{KeyParty, KEY_RECORD_VERSION};
    use crate::transcript::CERTIFICATE_FORMAT;
    use sha2::Digest;
    use tss_core::identity::IdentityKey;

    const AUX: [u8; 32] = [0xa0; 32];
    const KG: [u8; 32] = [0xb0; 32];

    /// A complete run's envelopes (payloads are not parsed here).
    fn run(keys: &[IdentityKey], sid: [u8; 32], protocol: Protocol) -> Vec<Envelope> {
        let n = keys.len() as u16;
        let per_party = kt::broadcasts_per_party(protocol).unwrap();
        let mut out = Vec::new();
        for j in 0..n {
            let key = &keys[usize::from(j)];
            for s in 0..per_party {
                out.push(Envelope::seal(
                    key,
                    sid,
                    protocol,
                    s,
                    j,
                    None,
                    vec![j as u8, s as u8],
                ));
            }
            for k in (0..n).filter(|&k| k != j) {
                let share = format!("SECRET-SHARE-{j}-{k}").into_bytes();
                out.push(Envelope::seal(key, sid, protocol, 0, j, Some(k), share));
            }
        }
        out
    }

    /// What party `me` recorded of a run, as stored and loaded back.
    fn view(all: &[Envelope], me: u16) -> Vec<Entry> {
        let seen: Vec<Envelope> = all
            .iter()
            .filter(|e| e.recipient.is_none() || e.sender == me || e.recipient == Some(me))
            .cloned()
            .collect();
        kt::merge(kt::decode_entry_list(&encode_view(&seen)).unwrap()).unwrap()
    }

    struct Fixture {
        keys: Vec<IdentityKey>,
        aux: Vec<Envelope>,
        keygen: Vec<Envelope>,
        record: KeyRecord,
        signer: k256::ecdsa::SigningKey,
    }

    fn fixture() -> Fixture {
        let keys: Vec<IdentityKey> = (0..3).map(|_| IdentityKey::generate()).collect();
        let signer = k256::ecdsa::SigningKey::random(&mut rand::rngs::OsRng);
        let record = KeyRecord {
            v: KEY_RECORD_VERSION,
            key_id: "k".into(),
            public_key: hex::encode(signer.verifying_key().to_sec1_bytes()),
            threshold: 2,
            parties: keys
                .iter()
                .enumerate()
                .map(|(i, k)| KeyParty {
                    name: format!("p{i}"),
                    identity: k.party_id().to_hex(),
                })
                .collect(),
            my_index: 0,
            aux_id: hex::encode(AUX),
            keygen_id: hex::encode(KG),
            created_unix: 0,
            scheme: None,
        };
        Fixture {
            aux: run(&keys, AUX, Protocol::AuxInfo),
            keygen: run(&keys, KG, Protocol::Keygen),
            keys,
            record,
            signer,
        }
    }

    fn views(f: &Fixture, me: u16) -> Sessions {
        Sessions {
            aux: view(&f.aux, me),
            keygen: view(&f.keygen, me),
        }
    }

    #[test]
    fn certificate_domain__should_give_the_certificate_digest() {
        let body = b"some certificate bytes";
        let d: [u8; 32] = sha2::Sha256::digest(kt::cert_signed_bytes(body)).into();
        assert_eq!(d, kt::certificate_digest(body));
    }

    #[test]
    fn encode_view__should_keep_keygen_shares_only_as_hashes() {
        let f = fixture();
        let v = views(&f, 1);
        assert!(v
            .keygen
            .iter()
            .all(|e| matches!(e, Entry::Hashed(_)) == e.recipient().is_some()));
        assert!(v.aux.iter().all(|e| matches!(e, Entry::Full(_))));
        // No share payload anywhere in the stored bytes (aux: a control).
        let marker = b"SECRET-SHARE";
        let has = |b: Vec<u8>| b.windows(marker.len()).any(|w| w == marker);
        assert!(!has(encode_view(&f.keygen)));
        assert!(has(encode_view(&f.aux)));
    }

    #[test]
    fn complete__should_give_every_party_the_same_complete_runs() {
        // Given each party's own view
        let f = fixture();
        // When the coordinator (0) completes its view with what 1 and 2 sent each other
        let parts: Vec<Entry> = [1u16, 2]
            .iter()
            .flat_map(|&j| views(&f, j).sent_to_others(j, 0))
            .collect();
        assert_eq!(parts.len(), 4, "one aux and one keygen envelope from each");
        let full = complete(&f.record, views(&f, 0), parts).unwrap();
        // Then both runs are complete, and each peer completes its own view
        // with what it did not see to the same root
        assert_eq!(full.aux.len(), 15);
        assert_eq!(full.keygen.len(), 18);
        for j in [1u16, 2] {
            let missing = full.unseen_by(j);
            assert_eq!(missing.len(), 4);
            assert!(missing
                .iter()
                .all(|e| e.sender() != j && e.recipient() != Some(j)));
            let theirs = complete(&f.record, views(&f, j), missing).unwrap();
            assert_eq!(theirs.root(), full.root());
        }
        // And a view alone is not a complete run
        let err = complete(&f.record, views(&f, 1), vec![]).unwrap_err();
        assert!(err.to_string().contains("missing"), "{err}");
    }

    #[test]
    fn complete__should_refuse_foreign_forged_and_unhashed_entries() {
        let f = fixture();
        let missing = |g: &Fixture| {
            complete(
                &g.record,
                views(g, 0),
                [1u16, 2]
                    .iter()
                    .flat_map(|&j| views(g, j).sent_to_others(j, 0))
                    .collect(),
            )
            .unwrap()
            .unseen_by(1)
        };
        // An entry of another session
        let mut extra = missing(&f);
        extra.push(Entry::Full(Envelope::seal(
            &f.keys[0],
            [7; 32],
            Protocol::Keygen,
            9,
            0,
            None,
            vec![],
        )));
        let err = complete(&f.record, views(&f, 1), extra).unwrap_err();
        assert!(matches!(err, CeremonyError::ForeignEntry { .. }), "{err}");
        // A keygen share in full (it must never be stored)
        let mut extra = missing(&f);
        let share = f
            .keygen
            .iter()
            .find(|e| e.sender == 0 && e.recipient == Some(2))
            .unwrap();
        // (the hashed form is there too: merging prefers the full one)
        extra.push(Entry::Full(share.clone()));
        let err = complete(&f.record, views(&f, 1), extra).unwrap_err();
        assert!(err.to_string().contains("wrong form"), "{err}");
        // An envelope signed by the wrong party
        let mut extra = missing(&f);
        extra.retain(|e| !(e.protocol() == Protocol::AuxInfo && e.sender() == 0));
        extra.push(Entry::Full(Envelope::seal(
            &f.keys[1],
            AUX,
            Protocol::AuxInfo,
            0,
            0,
            Some(2),
            vec![1],
        )));
        let err = complete(&f.record, views(&f, 1), extra).unwrap_err();
        assert!(err.to_string().contains("signature"), "{err}");
        // Two different envelopes in one place
        let mut extra = missing(&f);
        extra.push(Entry::Full(Envelope::seal(
            &f.keys[0],
            AUX,
            Protocol::AuxInfo,
            0,
            0,
            Some(2),
            vec![1, 2, 3],
        )));
        let err = complete(&f.record, views(&f, 1), extra).unwrap_err();
        assert!(err.to_string().contains("two different"), "{err}");
    }

    #[test]
    fn check_signatures__should_name_the_party_whose_signature_fails() {
        use k256::ecdsa::signature::hazmat::PrehashSigner;
        let f = fixture();
        let body = b"certificate body".to_vec();
        let signed: Vec<Vec<u8>> = f
            .keys
            .iter()
            .map(|k| k.sign(&kt::cert_signed_bytes(&body)).to_vec())
            .collect();
        let sig: k256::ecdsa::Signature = f
            .signer
            .sign_prehash(&kt::certificate_digest(&body))
            .unwrap();
        let sig = sig.normalize_s().unwrap_or(sig);
        let key_sig: [u8; 64] = sig.to_bytes().into();
        check_signatures(&f.record, &body, &signed, &key_sig).unwrap();

        let mut bad = signed.clone();
        bad.swap(1, 2);
        let err = check_signatures(&f.record, &body, &bad, &key_sig).unwrap_err();
        assert!(err.to_string().contains("p1"), "{err}");
        let err = check_signatures(&f.record, &body, &signed[..2], &key_sig).unwrap_err();
        assert!(
            err.to_string().contains("2 certificate signatures"),
            "{err}"
        );
        let err = check_signatures(&f.record, b"other body", &signed, &key_sig).unwrap_err();
        assert!(err.to_string().contains("p0"), "{err}");
        let mut high = sig;
        high = k256::ecdsa::Signature::from_scalars(high.r(), -*high.s()).unwrap();
        let high: [u8; 64] = high.to_bytes().into();
        let err = check_signatures(&f.record, &body, &signed, &high).unwrap_err();
        assert!(err.to_string().contains("low-S"), "{err}");
    }

    #[test]
    fn difference__should_name_the_fields_that_differ() {
        let cert = KeyCertificate {
            format: CERTIFICATE_FORMAT.into(),
            key_id: "k".into(),
            curve: "secp256k1".into(),
            threshold: 2,
            parties: vec![],
            public_key: vec![2; 33].into(),
            public_shares: vec![],
            aux_id: vec![0; 32].into(),
            keygen_id: vec![1; 32].into(),
            transcript_root: vec![3; 32].into(),
            created_unix: 5,
        };
        let mut other = cert.clone();
        other.transcript_root = vec![4; 32].into();
        other.created_unix = 6;
        let d = difference(&cert.encode(), &other.encode());
        assert_eq!(d, "transcript root, creation time differ");
        assert!(difference(&cert.encode(), b"junk").contains("does not decode"));
    }
}
