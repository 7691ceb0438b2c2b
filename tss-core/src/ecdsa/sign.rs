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

use super::{Curve, EngineError, KeyShare, Signature};

/// Signing protocol message.
pub type Msg = cggmp24::signing::msg::Msg<Curve, sha2::Sha256>;

/// How a node hashes the message bytes it is asked to sign.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum HashAlgo {
    /// SHA-256 (generic messages).
    Sha256,
    /// Keccak-256 (Ethereum).
    Keccak256,
    /// SHA-256 applied twice (Bitcoin).
    DoubleSha256,
}

impl HashAlgo {
    /// Stable name.
    pub fn name(self) -> &'static str {
        match self {
            HashAlgo::Sha256 => "sha256",
            HashAlgo::Keccak256 => "keccak256",
            HashAlgo::DoubleSha256 => "double_sha256",
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
            HashAlgo::DoubleSha256 => {
                let inner = sha2::Sha256::digest(msg);
                let d: [u8; 32] = sha2::Sha256::digest(inner).into();
                // The outer hash over the inner digest that we computed ourselves.
                let outer = sha2::Sha256::new().chain_update(inner);
                (cggmp24::DataToSign::from_digest(outer), d)
            }
        }
    }
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
/// error withholds it and ends the session (with the error's text).
pub type BeforeRelease = Box<dyn FnOnce() -> Result<(), String> + Send>;

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
    Withheld(String),
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
