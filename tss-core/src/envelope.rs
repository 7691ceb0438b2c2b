//! Signed envelopes: the only form in which protocol messages cross the wire.
//!
//! ```text
//! envelope = magic "TSE2" | session_id[32] | protocol u8 | seq u32 | sender u16
//!          | recipient_flag u8 (0 broadcast, 1 p2p) | recipient u16
//!          | payload_len u32 | payload | signature[64]
//! signature = Ed25519(sender identity, "tss-envelope/v2" | header | SHA-256(payload))
//! header    = the envelope's first 50 bytes (magic to payload_len)
//! ```
//! All integers are big-endian. [`Envelope::decode`] checks the length of the
//! payload against the per-protocol limit *before* allocating and refuses
//! trailing bytes; the signature is checked by [`crate::session`] against the
//! session's pinned identities.
//!
//! The signature covers the payload through its hash, so that an envelope
//! reduced to its header, payload hash and signature ([`HashedEnvelope`]) can
//! still be verified: keygen transcripts keep point-to-point messages that
//! carry secret shares in that form.

use sha2::{Digest, Sha256};

use crate::identity::{IdentityKey, PartyId};

const MAGIC: &[u8; 4] = b"TSE2";
const HASHED_MAGIC: &[u8; 4] = b"TSH2";
const SIGN_DOMAIN: &[u8] = b"tss-envelope/v2";
const HEADER_LEN: usize = 4 + 32 + 1 + 4 + 2 + 1 + 2 + 4;
const SIG_LEN: usize = 64;
/// Length of an encoded [`HashedEnvelope`].
pub const HASHED_LEN: usize = HEADER_LEN + 32 + SIG_LEN;

/// Which protocol a session runs. Determines the payload size limit.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Protocol {
    /// CGGMP24 auxiliary info (Paillier keys, ring-Pedersen parameters, proofs).
    AuxInfo,
    /// CGGMP24 threshold DKG.
    Keygen,
    /// CGGMP24 interactive signing (3+1 rounds).
    Sign,
    /// CGGMP24 presigning (the 3 interactive rounds of signing, ahead of time).
    Presign,
    /// FROST DKG (Ed25519 or Taproot key): commitments, their echo, shares.
    FrostKeygen,
    /// FROST signing, both rounds (nonce commitments, signature shares).
    FrostSign,
    /// FROST nonce pool: a batch of round-1 commitments, ahead of time.
    FrostPresign,
}

impl Protocol {
    /// Wire tag.
    pub fn tag(self) -> u8 {
        match self {
            Protocol::AuxInfo => 1,
            Protocol::Keygen => 2,
            Protocol::Sign => 3,
            Protocol::Presign => 4,
            Protocol::FrostKeygen => 5,
            Protocol::FrostSign => 6,
            Protocol::FrostPresign => 7,
        }
    }

    /// Parses a wire tag.
    pub fn from_tag(t: u8) -> Option<Self> {
        Some(match t {
            1 => Protocol::AuxInfo,
            2 => Protocol::Keygen,
            3 => Protocol::Sign,
            4 => Protocol::Presign,
            5 => Protocol::FrostKeygen,
            6 => Protocol::FrostSign,
            7 => Protocol::FrostPresign,
            _ => return None,
        })
    }

    /// Largest payload a single message of this protocol may carry: the
    /// largest measured message (aux info 212 KB, keygen 411 B, signing 28 KB,
    /// FROST under 200 B; see `docs/FORMATS.md`) with a margin of about 4x or
    /// more.
    pub fn max_payload(self) -> usize {
        match self {
            Protocol::AuxInfo => 1 << 20,
            Protocol::Keygen => 16 << 10,
            Protocol::Sign | Protocol::Presign => 128 << 10,
            Protocol::FrostKeygen | Protocol::FrostSign => 4 << 10,
            // Up to 128 commitments of 69 or 71 bytes.
            Protocol::FrostPresign => 16 << 10,
        }
    }

    /// Largest encoded envelope of any protocol (for transport limits).
    pub const MAX_ENVELOPE: usize = (1 << 20) + HEADER_LEN + SIG_LEN;
}

/// A decoded envelope. Its signature is not yet checked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Envelope {
    /// Session (execution) id.
    pub session_id: [u8; 32],
    /// Protocol of the session.
    pub protocol: Protocol,
    /// Sequence number within the session, from 0, counted separately for the
    /// sender's broadcasts and for its p2p messages to each recipient.
    pub seq: u32,
    /// Sender's index in the session.
    pub sender: u16,
    /// `None` for broadcast, else the recipient's index.
    pub recipient: Option<u16>,
    /// Serialized protocol message (opaque here).
    pub payload: Vec<u8>,
    /// Ed25519 signature of the sender.
    pub signature: [u8; 64],
}

/// Why envelope bytes were refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum EnvelopeError {
    /// Shorter than a header, or lengths do not add up.
    #[error("malformed envelope: {0}")]
    Malformed(&'static str),
    /// Payload larger than the protocol allows.
    #[error("payload of {len} bytes exceeds the {limit}-byte limit of {protocol:?} messages")]
    TooLarge {
        /// Protocol named in the header.
        protocol: Protocol,
        /// Declared payload length.
        len: usize,
        /// Limit for that protocol.
        limit: usize,
    },
}

impl Envelope {
    /// Builds and signs an envelope.
    pub fn seal(
        key: &IdentityKey,
        session_id: [u8; 32],
        protocol: Protocol,
        seq: u32,
        sender: u16,
        recipient: Option<u16>,
        payload: Vec<u8>,
    ) -> Self {
        let mut e = Envelope {
            session_id,
            protocol,
            seq,
            sender,
            recipient,
            payload,
            signature: [0; 64],
        };
        e.signature = key.sign(&e.signed_bytes());
        e
    }

    fn header(&self) -> [u8; HEADER_LEN] {
        // Payload length is bounded by the protocol limit (< 4 GiB).
        header(
            self.session_id,
            self.protocol,
            self.seq,
            self.sender,
            self.recipient,
            self.payload.len() as u32,
        )
    }

    /// SHA-256 of the payload.
    pub fn payload_hash(&self) -> [u8; 32] {
        Sha256::digest(&self.payload).into()
    }

    /// The bytes the sender signs.
    pub fn signed_bytes(&self) -> Vec<u8> {
        signed_bytes(&self.header(), &self.payload_hash())
    }

    /// The envelope without its payload: what a transcript keeps of a
    /// message that carries a secret share. Its signature still verifies.
    pub fn hashed(&self) -> HashedEnvelope {
        HashedEnvelope {
            session_id: self.session_id,
            protocol: self.protocol,
            seq: self.seq,
            sender: self.sender,
            recipient: self.recipient,
            payload_len: self.payload.len() as u32,
            payload_hash: self.payload_hash(),
            signature: self.signature,
        }
    }

    /// Checks the signature under `sender`'s identity.
    pub fn verify(&self, sender: &PartyId) -> Result<(), crate::identity::IdentityError> {
        sender.verify(&self.signed_bytes(), &self.signature)
    }

    /// Digest of the envelope as it enters a transcript hash chain; equal to
    /// that of its [`HashedEnvelope`].
    pub fn digest(&self) -> [u8; 32] {
        self.hashed().digest()
    }

    /// Canonical encoding.
    pub fn encode(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(HEADER_LEN + self.payload.len() + SIG_LEN);
        v.extend_from_slice(&self.header());
        v.extend_from_slice(&self.payload);
        v.extend_from_slice(&self.signature);
        v
    }

    /// Parses an encoding produced by [`Envelope::encode`]. Hostile input:
    /// never panics, never allocates more than the protocol's limit.
    pub fn decode(b: &[u8]) -> Result<Self, EnvelopeError> {
        if b.len() < HEADER_LEN + SIG_LEN {
            return Err(EnvelopeError::Malformed(
                "shorter than header and signature",
            ));
        }
        if &b[0..4] != MAGIC {
            return Err(EnvelopeError::Malformed(
                "bad magic (not an envelope, or another version)",
            ));
        }
        let h = parse_head(b)?;
        let len = h.payload_len as usize;
        if b.len() != HEADER_LEN + len + SIG_LEN {
            return Err(EnvelopeError::Malformed(
                "length field does not match the envelope size",
            ));
        }
        let mut signature = [0u8; 64];
        signature.copy_from_slice(&b[HEADER_LEN + len..]);
        Ok(Envelope {
            session_id: h.session_id,
            protocol: h.protocol,
            seq: h.seq,
            sender: h.sender,
            recipient: h.recipient,
            payload: b[HEADER_LEN..HEADER_LEN + len].to_vec(),
            signature,
        })
    }

    /// The session id that bytes which start like an envelope claim, read
    /// without decoding the rest: lets a receiver end the session that
    /// undecodable bytes from an authenticated peer were meant for. `None`
    /// unless the bytes start with the envelope magic and a whole id.
    pub fn claimed_session(b: &[u8]) -> Option<[u8; 32]> {
        if b.get(0..4)? != MAGIC {
            return None;
        }
        b.get(4..36)?.try_into().ok()
    }
}

fn header(
    session_id: [u8; 32],
    protocol: Protocol,
    seq: u32,
    sender: u16,
    recipient: Option<u16>,
    payload_len: u32,
) -> [u8; HEADER_LEN] {
    let mut h = [0u8; HEADER_LEN];
    h[0..4].copy_from_slice(MAGIC);
    h[4..36].copy_from_slice(&session_id);
    h[36] = protocol.tag();
    h[37..41].copy_from_slice(&seq.to_be_bytes());
    h[41..43].copy_from_slice(&sender.to_be_bytes());
    h[43] = u8::from(recipient.is_some());
    h[44..46].copy_from_slice(&recipient.unwrap_or(0).to_be_bytes());
    h[46..50].copy_from_slice(&payload_len.to_be_bytes());
    h
}

fn signed_bytes(header: &[u8; HEADER_LEN], payload_hash: &[u8; 32]) -> Vec<u8> {
    let mut v = Vec::with_capacity(SIGN_DOMAIN.len() + HEADER_LEN + 32);
    v.extend_from_slice(SIGN_DOMAIN);
    v.extend_from_slice(header);
    v.extend_from_slice(payload_hash);
    v
}

/// Header fields as parsed from bytes.
struct Head {
    session_id: [u8; 32],
    protocol: Protocol,
    seq: u32,
    sender: u16,
    recipient: Option<u16>,
    payload_len: u32,
}

/// Parses the 50-byte header that both encodings share (after the magic),
/// refusing a payload length above the protocol's limit.
fn parse_head(b: &[u8]) -> Result<Head, EnvelopeError> {
    if b.len() < HEADER_LEN {
        return Err(EnvelopeError::Malformed("shorter than a header"));
    }
    let protocol = Protocol::from_tag(b[36]).ok_or(EnvelopeError::Malformed("unknown protocol"))?;
    let u16_at = |i: usize| u16::from_be_bytes([b[i], b[i + 1]]);
    let recipient = match b[43] {
        0 if u16_at(44) == 0 => None,
        1 => Some(u16_at(44)),
        _ => return Err(EnvelopeError::Malformed("bad recipient field")),
    };
    let payload_len = u32::from_be_bytes([b[46], b[47], b[48], b[49]]);
    if payload_len as usize > protocol.max_payload() {
        return Err(EnvelopeError::TooLarge {
            protocol,
            len: payload_len as usize,
            limit: protocol.max_payload(),
        });
    }
    let mut session_id = [0u8; 32];
    session_id.copy_from_slice(&b[4..36]);
    Ok(Head {
        session_id,
        protocol,
        seq: u32::from_be_bytes([b[37], b[38], b[39], b[40]]),
        sender: u16_at(41),
        recipient,
        payload_len,
    })
}

/// An envelope reduced to its header, the SHA-256 of its payload and its
/// signature, which still verifies.
///
/// ```text
/// hashed = magic "TSH2" | header fields as in the envelope (46 bytes)
///        | payload_hash[32] | signature[64]
/// digest = SHA-256("tss-envelope-digest/v2" | envelope header | payload_hash | signature)
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HashedEnvelope {
    /// Session (execution) id.
    pub session_id: [u8; 32],
    /// Protocol of the session.
    pub protocol: Protocol,
    /// Sequence number (see [`Envelope::seq`]).
    pub seq: u32,
    /// Sender's index.
    pub sender: u16,
    /// `None` for broadcast, else the recipient's index.
    pub recipient: Option<u16>,
    /// Length of the payload.
    pub payload_len: u32,
    /// SHA-256 of the payload.
    pub payload_hash: [u8; 32],
    /// Ed25519 signature of the sender.
    pub signature: [u8; 64],
}

impl HashedEnvelope {
    fn header(&self) -> [u8; HEADER_LEN] {
        header(
            self.session_id,
            self.protocol,
            self.seq,
            self.sender,
            self.recipient,
            self.payload_len,
        )
    }

    /// Checks the signature under `sender`'s identity.
    pub fn verify(&self, sender: &PartyId) -> Result<(), crate::identity::IdentityError> {
        sender.verify(
            &signed_bytes(&self.header(), &self.payload_hash),
            &self.signature,
        )
    }

    /// Digest of the envelope for a transcript hash chain: binds the header,
    /// the payload (through its hash) and the signature.
    pub fn digest(&self) -> [u8; 32] {
        let mut h = Sha256::new();
        h.update(b"tss-envelope-digest/v2");
        h.update(self.header());
        h.update(self.payload_hash);
        h.update(self.signature);
        h.finalize().into()
    }

    /// Canonical encoding ([`HASHED_LEN`] bytes).
    pub fn encode(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(HASHED_LEN);
        v.extend_from_slice(&self.header());
        v[0..4].copy_from_slice(HASHED_MAGIC);
        v.extend_from_slice(&self.payload_hash);
        v.extend_from_slice(&self.signature);
        v
    }

    /// Parses an encoding produced by [`HashedEnvelope::encode`].
    pub fn decode(b: &[u8]) -> Result<Self, EnvelopeError> {
        if b.len() != HASHED_LEN {
            return Err(EnvelopeError::Malformed(
                "hashed envelope has the wrong length",
            ));
        }
        if &b[0..4] != HASHED_MAGIC {
            return Err(EnvelopeError::Malformed(
                "bad magic (not a hashed envelope, or another version)",
            ));
        }
        let h = parse_head(b)?;
        let mut payload_hash = [0u8; 32];
        payload_hash.copy_from_slice(&b[HEADER_LEN..HEADER_LEN + 32]);
        let mut signature = [0u8; 64];
        signature.copy_from_slice(&b[HEADER_LEN + 32..]);
        Ok(HashedEnvelope {
            session_id: h.session_id,
            protocol: h.protocol,
            seq: h.seq,
            sender: h.sender,
            recipient: h.recipient,
            payload_len: h.payload_len,
            payload_hash,
            signature,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(key: &IdentityKey) -> Envelope {
        Envelope::seal(
            key,
            [7; 32],
            Protocol::Sign,
            3,
            1,
            Some(0),
            b"payload".to_vec(),
        )
    }

    #[test]
    fn envelope__should_roundtrip_and_verify() {
        let k = IdentityKey::generate();
        let e = sample(&k);
        let d = Envelope::decode(&e.encode()).unwrap();
        assert_eq!(d, e);
        d.verify(&k.party_id()).unwrap();
        assert!(d.verify(&IdentityKey::generate().party_id()).is_err());
    }

    #[test]
    fn envelope__should_fail_verify_when_any_byte_flips() {
        let k = IdentityKey::generate();
        let bytes = sample(&k).encode();
        for i in 0..bytes.len() {
            let mut b = bytes.clone();
            b[i] ^= 0x01;
            if let Ok(e) = Envelope::decode(&b) {
                assert!(
                    e.verify(&k.party_id()).is_err(),
                    "flip at {i} still verified"
                );
            }
        }
    }

    #[test]
    fn hashed__should_verify_roundtrip_and_keep_the_digest() {
        let k = IdentityKey::generate();
        let e = sample(&k);
        let h = e.hashed();
        assert_eq!(h.encode().len(), HASHED_LEN);
        let d = HashedEnvelope::decode(&h.encode()).unwrap();
        assert_eq!(d, h);
        d.verify(&k.party_id()).unwrap();
        assert_eq!(d.digest(), e.digest());
        let bytes = h.encode();
        for i in 0..bytes.len() {
            let mut b = bytes.clone();
            b[i] ^= 0x01;
            if let Ok(x) = HashedEnvelope::decode(&b) {
                assert!(
                    x.verify(&k.party_id()).is_err(),
                    "flip at {i} still verified"
                );
            }
        }
        assert!(
            Envelope::decode(&bytes).is_err(),
            "hashed form is not an envelope"
        );
    }

    #[test]
    fn claimed_session__should_read_the_id_of_undecodable_envelope_bytes() {
        let k = IdentityKey::generate();
        let b = sample(&k).encode();
        assert_eq!(Envelope::claimed_session(&b[..40]), Some([7; 32]));
        assert_eq!(Envelope::claimed_session(&b[..35]), None);
        assert_eq!(Envelope::claimed_session(&[0u8; 64]), None);
        assert_eq!(Envelope::claimed_session(&[]), None);
    }

    #[test]
    fn decode__should_refuse_huge_length_prefix_before_allocating() {
        let k = IdentityKey::generate();
        let mut b = sample(&k).encode();
        b[46..50].copy_from_slice(&u32::MAX.to_be_bytes());
        assert!(matches!(
            Envelope::decode(&b),
            Err(EnvelopeError::TooLarge { .. })
        ));
        assert!(Envelope::decode(&b[..10]).is_err());
        let mut t = sample(&k).encode();
        t.push(0);
        assert!(Envelope::decode(&t).is_err());
    }
}

#[cfg(test)]
mod snapshot {
    use super::*;
    use crate::secret::SecretBytes;

    /// The wire format is frozen: a change here breaks every deployed peer.
    #[test]
    fn envelope__encoding_should_match_snapshot() {
        let key = IdentityKey::from_secret(&SecretBytes::new(vec![7; 32])).unwrap();
        let e = Envelope::seal(
            &key,
            [9; 32],
            Protocol::Keygen,
            2,
            1,
            Some(0),
            b"abc".to_vec(),
        );
        assert_eq!(hex::encode(e.encode()), SNAPSHOT);
        let b = Envelope::seal(&key, [9; 32], Protocol::AuxInfo, 0, 2, None, vec![]);
        assert_eq!(&hex::encode(b.encode())[..100], BROADCAST_HEADER);
    }

    // "TSE2" | session 09.. | keygen | seq 2 | sender 1 | p2p to 0 | len 3 | "abc" | Ed25519 signature
    const SNAPSHOT: &str = "5453453209090909090909090909090909090909090909090909090909090909090909090200000002000101000000000003616263a8f3f3d81029779108cec3d1832c0483d0ca37d0988c36682dc97b9f80e522b73cfbf2d26f2584255d4b9e1e3c8bbef4c2648902a58b13e2127dae95f7fdc70f";
    // "TSE2" | session 09.. | aux info | seq 0 | sender 2 | broadcast | len 0
    const BROADCAST_HEADER: &str = "5453453209090909090909090909090909090909090909090909090909090909090909090100000000000200000000000000";
}
