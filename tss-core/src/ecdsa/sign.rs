//! Interactive threshold signing (3+1 rounds) by exactly t parties.
//!
//! The node hashes the message itself ([`HashAlgo::data_to_sign`]): the engine
//! only ever signs data whose preimage this node has seen.
//!
//! The last round's message is this signer's partial signature: with it,
//! the other signer can complete the signature. [`run_with_release`] calls
//! a hook right before that message leaves (the node records what the
//! signature counts against its limits there, durably), and withholds the
//! message if the hook fails.

use std::pin::Pin;
use std::task::{Context, Poll};

use cggmp24::key_share::AnyKeyShare;
use futures::Sink;
use round_based::{Mpc, Outgoing};
use sha2::Digest;

pub use super::round1::Msg;
use super::{Curve, EngineError, KeyShare, Signature};

/// How a node hashes the message bytes it is asked to sign.
///
/// The bare hashes ([`HashAlgo::Sha256`], [`HashAlgo::Keccak256`],
/// [`HashAlgo::DoubleSha256`]) of caller bytes can be transaction signing
/// hashes (keccak-256 of an Ethereum signing payload, double SHA-256 of a
/// BIP143 preimage); the domain-separated modes ([`HashAlgo::Eip191`],
/// [`HashAlgo::BitcoinMessage`]) prefix the message so that no transaction
/// hashes to the same digest. See [`HashAlgo::is_domain_separated`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum HashAlgo {
    /// SHA-256 of the bytes (bare).
    Sha256,
    /// Keccak-256 of the bytes (bare; Ethereum transactions).
    Keccak256,
    /// SHA-256 applied twice (bare; Bitcoin transactions).
    DoubleSha256,
    /// EIP-191 personal message (`personal_sign`): keccak-256 of
    /// `"\x19Ethereum Signed Message:\n" || decimal length || message`.
    Eip191,
    /// Bitcoin signed message (`signmessage`): double SHA-256 of
    /// `"\x18Bitcoin Signed Message:\n" || compact-size length || message`.
    BitcoinMessage,
}

/// EIP-191 version 0x45 prefix (before the decimal length).
const EIP191_PREFIX: &[u8] = b"\x19Ethereum Signed Message:\n";
/// Bitcoin Core's message magic (before the compact-size length).
const BITCOIN_MESSAGE_PREFIX: &[u8] = b"\x18Bitcoin Signed Message:\n";

/// Bitcoin's compact-size encoding of a length.
fn compact_size(n: usize) -> Vec<u8> {
    let n = n as u64;
    match n {
        0..=0xfc => vec![n as u8],
        0xfd..=0xffff => [&[0xfd][..], &(n as u16).to_le_bytes()].concat(),
        0x1_0000..=0xffff_ffff => [&[0xfe][..], &(n as u32).to_le_bytes()].concat(),
        _ => [&[0xff][..], &n.to_le_bytes()].concat(),
    }
}

impl HashAlgo {
    /// Stable name.
    pub fn name(self) -> &'static str {
        match self {
            HashAlgo::Sha256 => "sha256",
            HashAlgo::Keccak256 => "keccak256",
            HashAlgo::DoubleSha256 => "double_sha256",
            HashAlgo::Eip191 => "eip191",
            HashAlgo::BitcoinMessage => "bitcoin_message",
        }
    }

    /// Whether the node prefixes the message with a message-signing domain,
    /// so that the digest cannot be a transaction's signing hash.
    pub fn is_domain_separated(self) -> bool {
        match self {
            HashAlgo::Eip191 | HashAlgo::BitcoinMessage => true,
            HashAlgo::Sha256 | HashAlgo::Keccak256 | HashAlgo::DoubleSha256 => false,
        }
    }

    /// Hashes `msg` and returns what the engine signs plus the 32-byte digest.
    pub fn data_to_sign(self, msg: &[u8]) -> (cggmp24::DataToSign<Curve>, [u8; 32]) {
        match self {
            HashAlgo::Sha256 => {
                let d: [u8; 32] = sha2::Sha256::digest(msg).into();
                (cggmp24::DataToSign::digest::<sha2::Sha256>(msg), d)
            }
            HashAlgo::Keccak256 => {
                let d: [u8; 32] = sha3::Keccak256::digest(msg).into();
                (cggmp24::DataToSign::digest::<sha3::Keccak256>(msg), d)
            }
            HashAlgo::DoubleSha256 => double_sha256(&[msg]),
            HashAlgo::Eip191 => {
                let h = sha3::Keccak256::new()
                    .chain_update(EIP191_PREFIX)
                    .chain_update(msg.len().to_string().as_bytes())
                    .chain_update(msg);
                let d: [u8; 32] = h.clone().finalize().into();
                (cggmp24::DataToSign::from_digest(h), d)
            }
            HashAlgo::BitcoinMessage => {
                double_sha256(&[BITCOIN_MESSAGE_PREFIX, &compact_size(msg.len()), msg])
            }
        }
    }
}

/// Double SHA-256 of the concatenated `parts`.
fn double_sha256(parts: &[&[u8]]) -> (cggmp24::DataToSign<Curve>, [u8; 32]) {
    let inner = parts
        .iter()
        .fold(sha2::Sha256::new(), |h, p| h.chain_update(p))
        .finalize();
    let d: [u8; 32] = sha2::Sha256::digest(inner).into();
    // The outer hash over the inner digest that we computed ourselves.
    let outer = sha2::Sha256::new().chain_update(inner);
    (cggmp24::DataToSign::from_digest(outer), d)
}

/// What the full protocol signs.
#[derive(Clone, Copy, Debug)]
pub enum ToSign {
    /// A message this node hashed itself (may also use presignatures).
    Hashed(cggmp24::DataToSign<Curve>),
    /// A raw digest from a client, preimage unknown: full protocol only.
    RawDigest(cggmp24::signing::PrehashedDataToSign<Curve>),
}

impl ToSign {
    /// Wraps a raw 32-byte digest (reduced modulo the group order, as ECDSA
    /// verifiers do).
    pub fn raw_digest(digest: &[u8; 32]) -> Self {
        ToSign::RawDigest(cggmp24::signing::PrehashedDataToSign::from_scalar(
            generic_ec::Scalar::from_be_bytes_mod_order(digest),
        ))
    }

    fn as_any(&self) -> &dyn cggmp24::signing::AnyDataToSign<Curve> {
        match self {
            ToSign::Hashed(d) => d,
            ToSign::RawDigest(d) => d,
        }
    }
}

/// Signing and presigning take exactly the key's threshold of signers.
pub(super) fn check_signers(
    parties_at_keygen: &[u16],
    share: &KeyShare,
) -> Result<(), EngineError> {
    if parties_at_keygen.len() != usize::from(share.min_signers()) {
        return Err(EngineError::InvalidInput(format!(
            "{} signers given, the key needs exactly {}",
            parties_at_keygen.len(),
            share.min_signers()
        )));
    }
    Ok(())
}

/// Runs full signing as signer `i` (0-based among the signers);
/// `parties_at_keygen[j]` is the keygen index of signer `j`.
pub async fn run<M>(
    eid: &[u8; 32],
    i: u16,
    parties_at_keygen: &[u16],
    share: &KeyShare,
    data: ToSign,
    party: M,
) -> Result<Signature, EngineError>
where
    M: Mpc<ProtocolMessage = Msg>,
{
    run_with_release(eid, i, parties_at_keygen, share, data, None, party).await
}

/// Called once, right before this signer's partial signature leaves; an
/// error (the caller's own type) withholds it and ends the session, with
/// the error's text.
pub type BeforeRelease = Box<dyn FnOnce() -> Result<(), WithheldError> + Send>;

/// Why a [`BeforeRelease`] hook withheld the partial signature: the
/// caller's own error, boxed.
pub type WithheldError = Box<dyn std::error::Error + Send + Sync>;

/// [`run`], calling `before_release` right before this signer's partial
/// signature (the last round's message) is handed to the delivery. The hook
/// runs on the engine's thread and may block.
pub async fn run_with_release<M>(
    eid: &[u8; 32],
    i: u16,
    parties_at_keygen: &[u16],
    share: &KeyShare,
    data: ToSign,
    before_release: Option<BeforeRelease>,
    party: M,
) -> Result<Signature, EngineError>
where
    M: Mpc<ProtocolMessage = Msg>,
{
    check_signers(parties_at_keygen, share)?;
    let mut check = super::round1::Round1Check::new(eid, i, parties_at_keygen, share)?;
    let party = super::guarded(party, move |m| check.inspect(m));
    let party = gated(party, before_release);
    cggmp24::signing(cggmp24::ExecutionId::new(eid), i, parties_at_keygen, share)
        .sign(&mut rand_core::OsRng, party, data.as_any())
        .await
        .map_err(|e| EngineError::from_engine(&e))
}

/// A send refused by [`Gate`]: the transport's own error, or the hook's.
#[derive(Debug, thiserror::Error)]
pub(crate) enum GateError<E: std::error::Error + 'static> {
    /// The underlying delivery failed.
    #[error("delivery: {0}")]
    Transport(#[source] E),
    /// The hook failed: the partial signature was not sent.
    #[error("partial signature withheld: {0}")]
    Withheld(#[source] WithheldError),
}

/// An outgoing sink that runs a hook before the first round-4 message.
struct Gate<S> {
    inner: S,
    before: Option<BeforeRelease>,
}

impl<S> Sink<Outgoing<Msg>> for Gate<S>
where
    S: Sink<Outgoing<Msg>> + Unpin,
    S::Error: std::error::Error + 'static,
{
    type Error = GateError<S::Error>;

    fn poll_ready(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Pin::new(&mut self.inner)
            .poll_ready(cx)
            .map_err(GateError::Transport)
    }

    fn start_send(mut self: Pin<&mut Self>, item: Outgoing<Msg>) -> Result<(), Self::Error> {
        if matches!(item.msg, cggmp24::signing::msg::Msg::Round4(_)) {
            if let Some(hook) = self.before.take() {
                hook().map_err(GateError::Withheld)?;
            }
        }
        Pin::new(&mut self.inner)
            .start_send(item)
            .map_err(GateError::Transport)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Pin::new(&mut self.inner)
            .poll_flush(cx)
            .map_err(GateError::Transport)
    }

    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Pin::new(&mut self.inner)
            .poll_close(cx)
            .map_err(GateError::Transport)
    }
}

/// Wraps `party`'s outgoing sink in a [`Gate`].
#[allow(clippy::type_complexity)]
fn gated<M>(
    party: M,
    before: Option<BeforeRelease>,
) -> round_based::MpcParty<
    Msg,
    (
        <M::Delivery as round_based::Delivery<Msg>>::Receive,
        Gate<<M::Delivery as round_based::Delivery<Msg>>::Send>,
    ),
    M::Runtime,
>
where
    M: Mpc<ProtocolMessage = Msg>,
{
    use round_based::Delivery;
    let round_based::MpcParty {
        delivery, runtime, ..
    } = party.into_party();
    let (incoming, outgoing) = delivery.split();
    round_based::MpcParty::connected((
        incoming,
        Gate {
            inner: outgoing,
            before,
        },
    ))
    .set_runtime(runtime)
}

#[cfg(test)]
mod tests {
    use super::*;
    use bitcoin::hashes::Hash;

    const ALL: [HashAlgo; 5] = [
        HashAlgo::Sha256,
        HashAlgo::Keccak256,
        HashAlgo::DoubleSha256,
        HashAlgo::Eip191,
        HashAlgo::BitcoinMessage,
    ];

    fn messages() -> Vec<Vec<u8>> {
        vec![
            b"".to_vec(),
            b"hello".to_vec(),
            vec![b'a'; 252],
            vec![b'b'; 253],
            vec![b'c'; 70_000],
        ]
    }

    #[test]
    fn data_to_sign__should_match_alloy_eip191_hash_message() {
        for m in messages() {
            let (data, d) = HashAlgo::Eip191.data_to_sign(&m);
            assert_eq!(
                d,
                alloy_primitives::eip191_hash_message(&m).0,
                "{}",
                m.len()
            );
            let want = generic_ec::Scalar::<Curve>::from_be_bytes_mod_order(d);
            assert_eq!(data.to_scalar(), want);
        }
    }

    #[test]
    fn data_to_sign__should_match_rust_bitcoin_signed_msg_hash() {
        // The compact-size length changes form at 253 and 65536 bytes.
        for m in messages() {
            let text = String::from_utf8(m.clone()).unwrap();
            let (data, d) = HashAlgo::BitcoinMessage.data_to_sign(&m);
            let want = bitcoin::sign_message::signed_msg_hash(&text).to_byte_array();
            assert_eq!(d, want, "{}", m.len());
            let want = generic_ec::Scalar::<Curve>::from_be_bytes_mod_order(d);
            assert_eq!(data.to_scalar(), want);
        }
        // rust-bitcoin's own vector for "test"
        let (_, d) = HashAlgo::BitcoinMessage.data_to_sign(b"test");
        let mut rev = d;
        rev.reverse();
        assert_eq!(
            hex::encode(rev),
            "a6f87fe6d58a032c320ff8d1541656f0282c2c7bfcc69d61af4c8e8ed528e49c"
        );
    }

    #[test]
    fn data_to_sign__should_give_each_mode_its_own_digest() {
        let m = b"the same bytes";
        let mut seen = std::collections::HashSet::new();
        for h in ALL {
            let (data, d) = h.data_to_sign(m);
            assert!(seen.insert(d), "{} collides", h.name());
            let want = generic_ec::Scalar::<Curve>::from_be_bytes_mod_order(d);
            assert_eq!(data.to_scalar(), want, "{}", h.name());
        }
        let separated: Vec<_> = ALL.iter().filter(|h| h.is_domain_separated()).collect();
        assert_eq!(separated, [&HashAlgo::Eip191, &HashAlgo::BitcoinMessage]);
    }

    #[test]
    fn compact_size__should_use_bitcoins_forms() {
        assert_eq!(compact_size(0xfc), vec![0xfc]);
        assert_eq!(compact_size(0xfd), vec![0xfd, 0xfd, 0x00]);
        assert_eq!(compact_size(0x1_0000), vec![0xfe, 0, 0, 1, 0]);
    }
}
