//! Keygen transcripts: what the parties record of a key's aux-info and keygen
//! sessions, the key certificate each party signs, and the file an auditor
//! verifies offline (format in `docs/TRANSCRIPT.md`).
//!
//! - Every party records its own view of a session (the envelopes it sent
//!   and the ones it accepted, [`tss_core::session::Recorder`]). Point-to-point
//!   keygen messages carry secret shares, so they are kept only as
//!   [`HashedEnvelope`]s ([`Entry::recorded`]); everything else in full.
//! - After keygen the coordinator collects the point-to-point envelopes it did
//!   not see, each party [`merge`]s them into its view and checks the session
//!   is complete, and all compute the same [`root`] over the canonical order.
//! - Each party signs the same [`KeyCertificate`]; the key itself then signs
//!   the certificate's [`certificate_digest`] with a threshold signature.

use serde::{Deserialize, Serialize};
use serde_bytes::ByteBuf;
use sha2::{Digest, Sha256};
use tss_core::envelope::{Envelope, EnvelopeError, HashedEnvelope, Protocol};
use tss_core::identity::{IdentityKey, PartyId};

/// `format` of a transcript file.
pub const TRANSCRIPT_FORMAT: &str = "tss-keygen-transcript";
/// Version of the transcript file format.
pub const TRANSCRIPT_VERSION: u8 = 1;
/// `format` of a key certificate.
pub const CERTIFICATE_FORMAT: &str = "tss-key-certificate/v1";
/// Domain prefix of what certificate signatures cover ([`certificate_digest`]).
/// Sign requests whose message starts with it are reserved for certificates.
pub const CERT_DOMAIN: &[u8] = b"tss/key-certificate/v1";
const CHAIN_DOMAIN: &[u8] = b"tss/transcript-chain/v1";

/// One recorded envelope: in full, or reduced to its hash (p2p keygen
/// messages, which carry secret shares).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Entry {
    /// The whole envelope.
    Full(Envelope),
    /// Header, payload hash and signature.
    Hashed(HashedEnvelope),
}

/// Why transcript data was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TranscriptError {
    /// An entry does not decode.
    #[error("entry does not decode: {0}")]
    Entry(#[from] EnvelopeError),
    /// Two different envelopes claim the same place in a session.
    #[error("party {sender} sent two different envelopes as {what} #{seq}")]
    Conflict {
        /// Sender index.
        sender: u16,
        /// "broadcast" or "p2p to N".
        what: String,
        /// Sequence number.
        seq: u32,
    },
    /// An envelope does not belong here or does not verify.
    #[error("{0}")]
    Invalid(String),
    /// The file does not decode.
    #[error("transcript file does not decode: {0}")]
    File(String),
}

impl Entry {
    /// The form in which a party records `e`: p2p keygen envelopes (secret
    /// shares) as their hash, everything else in full.
    pub fn recorded(e: &Envelope) -> Entry {
        if is_secret_p2p(e.protocol, e.recipient) {
            Entry::Hashed(e.hashed())
        } else {
            Entry::Full(e.clone())
        }
    }

    /// Whether this is the form [`Entry::recorded`] gives such an envelope.
    pub fn has_recorded_form(&self) -> bool {
        let hashed = is_secret_p2p(self.protocol(), self.recipient());
        matches!(self, Entry::Hashed(_)) == hashed
    }

    /// Encoding: an envelope (magic `TSE2`) or a hashed envelope (`TSH2`).
    pub fn encode(&self) -> Vec<u8> {
        match self {
            Entry::Full(e) => e.encode(),
            Entry::Hashed(h) => h.encode(),
        }
    }

    /// Parses either encoding. Hostile input: never panics.
    pub fn decode(b: &[u8]) -> Result<Entry, TranscriptError> {
        if b.starts_with(b"TSH") {
            Ok(Entry::Hashed(HashedEnvelope::decode(b)?))
        } else {
            Ok(Entry::Full(Envelope::decode(b)?))
        }
    }

    /// Session id.
    pub fn session_id(&self) -> [u8; 32] {
        match self {
            Entry::Full(e) => e.session_id,
            Entry::Hashed(h) => h.session_id,
        }
    }

    /// Protocol.
    pub fn protocol(&self) -> Protocol {
        match self {
            Entry::Full(e) => e.protocol,
            Entry::Hashed(h) => h.protocol,
        }
    }

    /// Sender index.
    pub fn sender(&self) -> u16 {
        match self {
            Entry::Full(e) => e.sender,
            Entry::Hashed(h) => h.sender,
        }
    }

    /// Recipient index (`None`: broadcast).
    pub fn recipient(&self) -> Option<u16> {
        match self {
            Entry::Full(e) => e.recipient,
            Entry::Hashed(h) => h.recipient,
        }
    }

    /// Sequence number.
    pub fn seq(&self) -> u32 {
        match self {
            Entry::Full(e) => e.seq,
            Entry::Hashed(h) => h.seq,
        }
    }

    /// Digest in the hash chain (the same for both forms of an envelope).
    pub fn digest(&self) -> [u8; 32] {
        match self {
            Entry::Full(e) => e.digest(),
            Entry::Hashed(h) => h.digest(),
        }
    }

    /// Checks the sender's signature.
    pub fn verify(&self, sender: &PartyId) -> Result<(), tss_core::identity::IdentityError> {
        match self {
            Entry::Full(e) => e.verify(sender),
            Entry::Hashed(h) => h.verify(sender),
        }
    }

    /// Canonical position within its session: sequence number, then sender,
    /// then broadcast before p2p, then recipient.
    pub fn order_key(&self) -> (u32, u16, u32) {
        (
            self.seq(),
            self.sender(),
            self.recipient().map_or(0, |r| u32::from(r) + 1),
        )
    }

    fn describe(&self) -> String {
        match self.recipient() {
            None => "broadcast".into(),
            Some(r) => format!("p2p to {r}"),
        }
    }
}

/// Merges views of one session (entries in any order, duplicates allowed)
/// into its canonical order. Two different envelopes at one place (a party
/// that equivocated) are refused.
pub fn merge(entries: impl IntoIterator<Item = Entry>) -> Result<Vec<Entry>, TranscriptError> {
    let mut by_key: std::collections::BTreeMap<(u32, u16, u32), Entry> = Default::default();
    for e in entries {
        match by_key.get(&e.order_key()) {
            Some(old) if old.digest() != e.digest() => {
                return Err(TranscriptError::Conflict {
                    sender: e.sender(),
                    what: e.describe(),
                    seq: e.seq(),
                });
            }
            // Prefer the full form when both are known.
            Some(Entry::Full(_)) => {}
            _ => {
                by_key.insert(e.order_key(), e);
            }
        }
    }
    Ok(by_key.into_values().collect())
}

/// Whether an envelope carries a secret share (the point-to-point messages
/// of a DKG, ECDSA or FROST): recorded only as its hash, never in full.
pub fn is_secret_p2p(protocol: Protocol, recipient: Option<u16>) -> bool {
    matches!(protocol, Protocol::Keygen | Protocol::FrostKeygen) && recipient.is_some()
}

/// Number of broadcast messages each party sends in a session of `protocol`
/// (CGGMP24 with the echo round on; every party also sends exactly one p2p
/// message to every other party).
pub fn broadcasts_per_party(protocol: Protocol) -> Option<u32> {
    match protocol {
        Protocol::AuxInfo => Some(3),
        Protocol::Keygen => Some(4),
        Protocol::FrostKeygen => Some(2),
        _ => None,
    }
}

/// Checks that `entries` (canonically ordered) are exactly one complete run
/// of session `sid` of `protocol` among `parties`: right session, senders and
/// recipients in range, canonical order, each entry in its recorded form and
/// signed by its sender, and every message of every party present.
pub fn check_session(
    entries: &[Entry],
    sid: &[u8; 32],
    protocol: Protocol,
    parties: &[PartyId],
) -> Result<(), TranscriptError> {
    let n = parties.len() as u16;
    let bad = |i: usize, e: &Entry, why: &str| {
        TranscriptError::Invalid(format!(
            "{protocol:?} entry {i} (from party {}, {} #{}): {why}",
            e.sender(),
            e.describe(),
            e.seq()
        ))
    };
    let per_party = broadcasts_per_party(protocol)
        .ok_or_else(|| TranscriptError::Invalid(format!("{protocol:?} is not a keygen session")))?;
    let mut prev: Option<(u32, u16, u32)> = None;
    let mut seen = std::collections::BTreeSet::new();
    for (i, e) in entries.iter().enumerate() {
        if e.session_id() != *sid {
            return Err(bad(i, e, "belongs to another session"));
        }
        if e.protocol() != protocol {
            return Err(bad(i, e, "belongs to another protocol"));
        }
        if e.sender() >= n || e.recipient().is_some_and(|r| r >= n || r == e.sender()) {
            return Err(bad(i, e, "sender or recipient is not a party"));
        }
        if prev.is_some_and(|p| p >= e.order_key()) {
            return Err(bad(i, e, "out of canonical order (or duplicated)"));
        }
        prev = Some(e.order_key());
        if !e.has_recorded_form() {
            return Err(bad(
                i,
                e,
                "in the wrong form (p2p keygen messages are kept only as hashes, all others in full)",
            ));
        }
        e.verify(&parties[usize::from(e.sender())]).map_err(|_| {
            bad(
                i,
                e,
                "signature does not verify under the sender's identity",
            )
        })?;
        seen.insert(e.order_key());
    }
    for j in 0..n {
        for s in 0..per_party {
            if !seen.contains(&(s, j, 0)) {
                return Err(TranscriptError::Invalid(format!(
                    "{protocol:?}: broadcast #{s} of party {j} is missing"
                )));
            }
        }
        for k in (0..n).filter(|&k| k != j) {
            if !seen.contains(&(0, j, u32::from(k) + 1)) {
                return Err(TranscriptError::Invalid(format!(
                    "{protocol:?}: p2p message of party {j} to party {k} is missing"
                )));
            }
        }
    }
    let expected = usize::from(n) * (per_party as usize + usize::from(n) - 1);
    if entries.len() != expected {
        return Err(TranscriptError::Invalid(format!(
            "{protocol:?}: {} entries where a run has {expected}",
            entries.len()
        )));
    }
    Ok(())
}

/// Root of the running hash chain over the aux-info entries, then the keygen
/// entries: `c0 = SHA-256(domain)`, `c(i+1) = SHA-256(c(i) | digest(entry i))`.
pub fn root<'a>(entries: impl IntoIterator<Item = &'a Entry>) -> [u8; 32] {
    let mut c: [u8; 32] = Sha256::digest(CHAIN_DOMAIN).into();
    for e in entries {
        let mut h = Sha256::new();
        h.update(c);
        h.update(e.digest());
        c = h.finalize().into();
    }
    c
}

/// A party as named in a key certificate.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct CertParty {
    /// Party name.
    pub name: String,
    /// Ed25519 identity public key (signs envelopes and certificates).
    pub identity: ByteBuf,
    /// SHA-256 of its pinned TLS certificate (DER).
    pub tls_fingerprint: ByteBuf,
}

/// The facts about a key that each party signs. Encoded as CBOR in the
/// field order below; the three parties sign the same bytes.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct KeyCertificate {
    /// Always [`CERTIFICATE_FORMAT`].
    pub format: String,
    /// Key id.
    pub key_id: String,
    /// Curve ("secp256k1").
    pub curve: String,
    /// Signers needed (t of n).
    pub threshold: u16,
    /// Parties in keygen index order.
    pub parties: Vec<CertParty>,
    /// SEC1 compressed public key.
    pub public_key: ByteBuf,
    /// SEC1 compressed public share of each party, in index order.
    pub public_shares: Vec<ByteBuf>,
    /// Execution id of the aux-info session.
    pub aux_id: ByteBuf,
    /// Execution id of the keygen session.
    pub keygen_id: ByteBuf,
    /// Root of the transcript's hash chain.
    pub transcript_root: ByteBuf,
    /// Creation time, seconds since the Unix epoch (chosen by the coordinator).
    pub created_unix: u64,
}

impl KeyCertificate {
    /// Canonical encoding (what parties sign).
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        // Plain data into a Vec: cannot fail.
        ciborium::into_writer(self, &mut out).expect("CBOR into Vec");
        out
    }

    /// Decodes and checks the encoding is canonical and the format known.
    pub fn decode(b: &[u8]) -> Result<Self, TranscriptError> {
        let c: KeyCertificate =
            ciborium::from_reader(b).map_err(|e| TranscriptError::File(e.to_string()))?;
        if c.format != CERTIFICATE_FORMAT {
            return Err(TranscriptError::File(format!(
                "unknown certificate format {:?}",
                c.format
            )));
        }
        if c.encode() != b {
            return Err(TranscriptError::File(
                "certificate is not canonically encoded".into(),
            ));
        }
        Ok(c)
    }

    /// Party identities in index order.
    pub fn party_ids(&self) -> Result<Vec<PartyId>, TranscriptError> {
        self.parties
            .iter()
            .map(|p| {
                <[u8; 32]>::try_from(p.identity.as_slice())
                    .map(PartyId)
                    .map_err(|_| {
                        TranscriptError::Invalid(format!("identity of {} is not 32 bytes", p.name))
                    })
            })
            .collect()
    }
}

/// What certificate signatures cover: `CERT_DOMAIN | body` (the parties'
/// Ed25519 signatures, and the key's ECDSA signature through SHA-256).
pub fn cert_signed_bytes(body: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(CERT_DOMAIN.len() + body.len());
    v.extend_from_slice(CERT_DOMAIN);
    v.extend_from_slice(body);
    v
}

/// The digest the key's threshold signature covers:
/// `SHA-256("tss/key-certificate/v1" | certificate bytes)`.
pub fn certificate_digest(body: &[u8]) -> [u8; 32] {
    Sha256::digest(cert_signed_bytes(body)).into()
}

/// A certificate signed by one party's identity key.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct SignedCertificate {
    /// Index of the signing party.
    pub party: u16,
    /// [`KeyCertificate`] bytes.
    pub body: ByteBuf,
    /// Ed25519 over `"tss/key-certificate/v1" | body`.
    pub signature: ByteBuf,
}

impl SignedCertificate {
    /// Signs `cert` as party `party`.
    pub fn sign(key: &IdentityKey, party: u16, cert: &KeyCertificate) -> Self {
        let body = cert.encode();
        let signature = key.sign(&cert_signed_bytes(&body));
        SignedCertificate {
            party,
            body: ByteBuf::from(body),
            signature: ByteBuf::from(signature.to_vec()),
        }
    }

    /// Checks the signature under `id`.
    pub fn verify(&self, id: &PartyId) -> Result<(), TranscriptError> {
        let sig = <[u8; 64]>::try_from(self.signature.as_slice())
            .map_err(|_| TranscriptError::Invalid("signature is not 64 bytes".into()))?;
        id.verify(&cert_signed_bytes(&self.body), &sig)
            .map_err(|_| TranscriptError::Invalid("signature does not verify".into()))
    }
}

/// The file an auditor verifies (CBOR, canonical: re-encoding gives the same
/// bytes).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct TranscriptFile {
    /// Always [`TRANSCRIPT_FORMAT`].
    pub format: String,
    /// [`TRANSCRIPT_VERSION`].
    pub version: u8,
    /// Aux-info session entries, canonical order.
    pub aux: Vec<ByteBuf>,
    /// Keygen session entries, canonical order.
    pub keygen: Vec<ByteBuf>,
    /// One certificate per party, in party index order.
    pub certificates: Vec<SignedCertificate>,
    /// Threshold ECDSA signature (`r | s`, low S) by the new key over
    /// [`certificate_digest`].
    pub key_signature: ByteBuf,
}

impl TranscriptFile {
    /// Assembles a file.
    pub fn new(
        aux: &[Entry],
        keygen: &[Entry],
        certificates: Vec<SignedCertificate>,
        key_signature: [u8; 64],
    ) -> Self {
        let enc = |v: &[Entry]| v.iter().map(|e| ByteBuf::from(e.encode())).collect();
        TranscriptFile {
            format: TRANSCRIPT_FORMAT.into(),
            version: TRANSCRIPT_VERSION,
            aux: enc(aux),
            keygen: enc(keygen),
            certificates,
            key_signature: ByteBuf::from(key_signature.to_vec()),
        }
    }

    /// Canonical encoding.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        // Plain data into a Vec: cannot fail.
        ciborium::into_writer(self, &mut out).expect("CBOR into Vec");
        out
    }

    /// Decodes; refuses unknown formats and versions and non-canonical
    /// encodings.
    pub fn decode(b: &[u8]) -> Result<Self, TranscriptError> {
        let f: TranscriptFile =
            ciborium::from_reader(b).map_err(|e| TranscriptError::File(e.to_string()))?;
        if f.format != TRANSCRIPT_FORMAT {
            return Err(TranscriptError::File(format!(
                "not a keygen transcript (format {:?})",
                f.format
            )));
        }
        if f.version != TRANSCRIPT_VERSION {
            return Err(TranscriptError::File(format!(
                "transcript version {} is not supported (this tool reads version {TRANSCRIPT_VERSION})",
                f.version
            )));
        }
        if f.encode() != b {
            return Err(TranscriptError::File(
                "not canonically encoded (trailing or re-ordered bytes)".into(),
            ));
        }
        Ok(f)
    }
}

/// Decodes a list of encoded entries.
pub fn decode_entries(v: &[ByteBuf]) -> Result<Vec<Entry>, TranscriptError> {
    v.iter().map(|b| Entry::decode(b)).collect()
}

/// Encodes a list of entries for storage or the wire (CBOR list of byte
/// strings).
pub fn encode_entries(v: &[Entry]) -> Vec<u8> {
    let list: Vec<ByteBuf> = v.iter().map(|e| ByteBuf::from(e.encode())).collect();
    let mut out = Vec::new();
    // Plain data into a Vec: cannot fail.
    ciborium::into_writer(&list, &mut out).expect("CBOR into Vec");
    out
}

/// Decodes [`encode_entries`] output.
pub fn decode_entry_list(b: &[u8]) -> Result<Vec<Entry>, TranscriptError> {
    let list: Vec<ByteBuf> =
        ciborium::from_reader(b).map_err(|e| TranscriptError::File(e.to_string()))?;
    decode_entries(&list)
}

/// What a party knows about a key when it signs the certificate.
pub struct CertificateFacts<'a> {
    /// Key id.
    pub key_id: &'a str,
    /// Parties in keygen index order.
    pub parties: Vec<CertParty>,
    /// The party's own key share (public key and public shares come from it).
    pub share: &'a tss_core::ecdsa::KeyShare,
    /// Aux-info execution id.
    pub aux_id: [u8; 32],
    /// Keygen execution id.
    pub keygen_id: [u8; 32],
    /// Transcript root the party computed itself.
    pub root: [u8; 32],
    /// Creation time agreed for the certificate.
    pub created_unix: u64,
}

impl KeyCertificate {
    /// The certificate a party signs, from its own records.
    pub fn from_facts(f: CertificateFacts<'_>) -> Self {
        let key_info = &f.share.core.key_info;
        let t = key_info
            .vss_setup
            .as_ref()
            .map_or(key_info.public_shares.len() as u16, |v| v.min_signers);
        KeyCertificate {
            format: CERTIFICATE_FORMAT.into(),
            key_id: f.key_id.into(),
            curve: "secp256k1".into(),
            threshold: t,
            parties: f.parties,
            public_key: ByteBuf::from(tss_core::ecdsa::public_key(f.share).to_vec()),
            public_shares: key_info
                .public_shares
                .iter()
                .map(|p| ByteBuf::from(p.to_bytes(true).to_vec()))
                .collect(),
            aux_id: ByteBuf::from(f.aux_id.to_vec()),
            keygen_id: ByteBuf::from(f.keygen_id.to_vec()),
            transcript_root: ByteBuf::from(f.root.to_vec()),
            created_unix: f.created_unix,
        }
    }
}

/// The certificate `curve` of a FROST key of `scheme`.
pub fn frost_curve(scheme: tss_core::frost::Scheme) -> &'static str {
    match scheme {
        tss_core::frost::Scheme::Ed25519 => "ed25519",
        tss_core::frost::Scheme::Taproot => "secp256k1-taproot",
    }
}

/// The FROST scheme a certificate's `curve` names (`None` for ECDSA keys,
/// whose curve is "secp256k1").
pub fn frost_scheme_of(curve: &str) -> Option<tss_core::frost::Scheme> {
    use tss_core::frost::Scheme;
    [Scheme::Ed25519, Scheme::Taproot]
        .into_iter()
        .find(|s| frost_curve(*s) == curve)
}

impl KeyCertificate {
    /// The certificate a party of a FROST key signs, from its own share:
    /// the scheme's public key (32 bytes: Ed25519, or Taproot's x-only
    /// output key), each party's verifying share in the suite's encoding,
    /// and no aux info (`aux_id` empty).
    pub fn from_frost(
        key_id: &str,
        parties: Vec<CertParty>,
        share: &tss_core::frost::FrostShare,
        keygen_id: [u8; 32],
        root: [u8; 32],
        created_unix: u64,
    ) -> Self {
        KeyCertificate {
            format: CERTIFICATE_FORMAT.into(),
            key_id: key_id.into(),
            curve: frost_curve(share.scheme()).into(),
            threshold: share.threshold(),
            parties,
            public_key: ByteBuf::from(share.public_key()),
            public_shares: share
                .verifying_shares()
                .into_iter()
                .map(ByteBuf::from)
                .collect(),
            aux_id: ByteBuf::new(),
            keygen_id: ByteBuf::from(keygen_id.to_vec()),
            transcript_root: ByteBuf::from(root.to_vec()),
            created_unix,
        }
    }
}

/// Whether `sig` is `scheme`'s signature by the 32-byte `key` over `msg`,
/// by an independent verifier: ed25519-dalek's strict verification, or
/// k256's BIP340 (x-only key). An error says which input is malformed.
pub fn frost_signature_ok(
    scheme: tss_core::frost::Scheme,
    key: &[u8],
    msg: &[u8],
    sig: &[u8; 64],
) -> Result<bool, &'static str> {
    let key: [u8; 32] = key.try_into().map_err(|_| "the key is not 32 bytes")?;
    Ok(match scheme {
        tss_core::frost::Scheme::Ed25519 => ed25519_dalek::VerifyingKey::from_bytes(&key)
            .map_err(|_| "the key is not an Ed25519 point")?
            .verify_strict(msg, &ed25519_dalek::Signature::from_bytes(sig))
            .is_ok(),
        tss_core::frost::Scheme::Taproot => {
            let vk = k256::schnorr::VerifyingKey::from_bytes(&key)
                .map_err(|_| "the key is not an x-only secp256k1 key")?;
            let s = k256::schnorr::Signature::try_from(sig.as_slice())
                .map_err(|_| "the signature is not a BIP340 signature")?;
            vk.verify_raw(msg, &s).is_ok()
        }
    })
}
