//! CGGMP24 threshold ECDSA on secp256k1, as runtime-agnostic `async fn`s.
//!
//! - [`aux`]: auxiliary info (Paillier keys and their proofs), once per party set;
//! - [`keygen`]: threshold DKG (t-of-n), completed with the party set's aux info;
//! - [`sign`]: interactive signing by exactly t parties;
//! - [`presign`]: the interactive rounds of signing run ahead of time by a
//!   signer pair, so that a signature later takes one round.
//!
//! Every function takes a `round-based` party built by
//! [`crate::session::delivery`], so every message it reads has been
//! authenticated. The functions are CPU-heavy between messages: drive them on
//! a blocking thread, not on an async reactor.

pub mod aux;
pub mod keygen;
pub mod presign;
mod round1;
pub mod sign;

use cggmp24::key_share::AnyKeyShare;
use cggmp24::security_level::SecurityLevel128;

pub use crate::cbor::{decode_cbor, CborError, MAX_INTEGER_BITS};
use crate::secret::SecretBytes;
use crate::session::DeliveryError;

/// The curve.
pub type Curve = cggmp24::supported_curves::Secp256k1;
/// Security level of Paillier keys and proofs.
pub type Level = SecurityLevel128;
/// Aux info of one party (its Paillier secret and everyone's public parameters).
pub type AuxInfo = cggmp24::key_share::AuxInfo<Level>;
/// A complete key share (core share + aux info).
pub type KeyShare = cggmp24::KeyShare<Curve, Level>;
/// Key share without aux info, as output by DKG.
pub type IncompleteKeyShare = cggmp24::IncompleteKeyShare<Curve>;
/// ECDSA signature as output by the engine.
pub type Signature = cggmp24::Signature<Curve>;

/// Format version of stored key shares and aux info. Every older version must
/// keep loading.
pub const SHARE_FORMAT_VERSION: u8 = 1;

/// Why a protocol run failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EngineError {
    /// A party sent something invalid; the session was aborted.
    #[error("party {culprit} misbehaved: {reason}")]
    Misbehaved {
        /// Protocol index of the party at fault.
        culprit: u16,
        /// What was wrong.
        reason: String,
    },
    /// The session's transport closed (peer gone, timeout, shutdown).
    #[error("session transport closed")]
    Closed,
    /// The protocol failed for a reason the engine reports.
    #[error("protocol failed: {0}")]
    Protocol(String),
    /// Inputs do not fit together (a bug or corrupted state).
    #[error("invalid input: {0}")]
    InvalidInput(String),
}

impl EngineError {
    /// Maps an engine error, naming the culprit when our delivery layer
    /// refused a message.
    pub(crate) fn from_engine(e: &(dyn std::error::Error + 'static)) -> Self {
        let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
        while let Some(err) = cur {
            if let Some(d) = err.downcast_ref::<DeliveryError>() {
                return match d {
                    DeliveryError::Misbehaved { culprit, reason } => EngineError::Misbehaved {
                        culprit: *culprit,
                        reason: reason.clone(),
                    },
                    DeliveryError::Closed => EngineError::Closed,
                    DeliveryError::Encode(m) => EngineError::Protocol(m.clone()),
                };
            }
            cur = err.source();
        }
        let mut msg = e.to_string();
        let mut src = e.source();
        while let Some(s) = src {
            msg.push_str(": ");
            msg.push_str(&s.to_string());
            src = s.source();
        }
        match blamed_party(&msg) {
            Some(culprit) => EngineError::Misbehaved {
                culprit,
                reason: msg,
            },
            None => EngineError::Protocol(msg),
        }
    }
}

/// The first party an engine abort blames. The engines' errors are opaque;
/// their text lists `AbortBlame { faulty_party: N, .. }` (the index in the
/// session, as ours). The text format is that of the pinned versions; the
/// hostile-peer tests would notice a change (the culprit would go unnamed).
fn blamed_party(msg: &str) -> Option<u16> {
    let rest = &msg[msg.find("faulty_party: ")? + "faulty_party: ".len()..];
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

/// The error of a party whose incoming messages pass a check of ours
/// first ([`guarded`]): the transport's own error, or our refusal (found by
/// [`EngineError::from_engine`] through `source()`).
#[derive(Debug, thiserror::Error)]
pub(crate) enum GuardError<E: std::error::Error + 'static> {
    /// The underlying delivery failed.
    #[error("delivery: {0}")]
    Transport(#[source] E),
    /// Our check refused a message.
    #[error("refused: {0}")]
    Refused(#[source] DeliveryError),
}

/// Wraps `party` so that every incoming message goes through `check` before
/// the engine sees it; a refusal ends the session naming the sender.
#[allow(clippy::type_complexity)]
pub(crate) fn guarded<M, Msg, F>(
    party: M,
    mut check: F,
) -> round_based::MpcParty<
    Msg,
    (
        impl futures::Stream<Item = Result<round_based::Incoming<Msg>, GuardError<M::ReceiveError>>>
            + Unpin,
        <M::Delivery as round_based::Delivery<Msg>>::Send,
    ),
    M::Runtime,
>
where
    M: round_based::Mpc<ProtocolMessage = Msg>,
    F: FnMut(&round_based::Incoming<Msg>) -> Result<(), DeliveryError>,
{
    use futures::StreamExt;
    use round_based::Delivery;
    let round_based::MpcParty {
        delivery, runtime, ..
    } = party.into_party();
    let (incoming, outgoing) = delivery.split();
    let incoming = incoming.map(move |m| {
        let m = m.map_err(GuardError::Transport)?;
        check(&m).map_err(GuardError::Refused)?;
        Ok(m)
    });
    round_based::MpcParty::connected((incoming, outgoing)).set_runtime(runtime)
}

#[derive(serde::Serialize, serde::Deserialize)]
struct Versioned<T> {
    v: u8,
    body: T,
}

fn encode_versioned<T: serde::Serialize>(body: &T) -> SecretBytes {
    let mut out = Vec::new();
    // Serializing into a Vec cannot fail for these types.
    ciborium::into_writer(
        &Versioned {
            v: SHARE_FORMAT_VERSION,
            body,
        },
        &mut out,
    )
    .expect("CBOR into Vec");
    SecretBytes::new(out)
}

fn decode_versioned<T: serde::de::DeserializeOwned>(
    b: &[u8],
    what: &str,
) -> Result<T, EngineError> {
    let v: Versioned<T> = decode_cbor(b)
        .map_err(|e| EngineError::InvalidInput(format!("stored {what} does not decode: {e}")))?;
    if v.v != SHARE_FORMAT_VERSION {
        return Err(EngineError::InvalidInput(format!(
            "stored {what} has unknown format version {}",
            v.v
        )));
    }
    Ok(v.body)
}

/// Serializes a key share (secret: seal it).
pub fn encode_share(share: &KeyShare) -> SecretBytes {
    encode_versioned(share)
}

/// Deserializes and validates a key share.
pub fn decode_share(b: &[u8]) -> Result<KeyShare, EngineError> {
    decode_versioned(b, "key share")
}

/// Serializes aux info (secret: holds the Paillier primes).
pub fn encode_aux(aux: &AuxInfo) -> SecretBytes {
    encode_versioned(aux)
}

/// Deserializes and validates aux info.
pub fn decode_aux(b: &[u8]) -> Result<AuxInfo, EngineError> {
    decode_versioned(b, "aux info")
}

/// SEC1 compressed public key of a share's shared key.
pub fn public_key(share: &KeyShare) -> [u8; 33] {
    let pk = share.shared_public_key();
    let b = pk.to_bytes(true);
    let mut out = [0u8; 33];
    out.copy_from_slice(&b);
    out
}

#[cfg(test)]
mod tests;
