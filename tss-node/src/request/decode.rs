//! What a signing request asks for, decoded by this node itself: the same
//! code runs at the coordinator (from the client's request) and at each
//! co-signer (from the proposal), so every party derives the digest and the
//! policy intent from the bytes, never from what another party claims.

use std::sync::Arc;

use proto::v1 as pb;
use sha2::Digest;
use tss_core::chain::btc::{self, PsbtSummary};
use tss_core::chain::eth::{self, UnsignedTx};
use tss_core::ecdsa::sign::{HashAlgo, ToSign};
use tss_core::frost::Scheme;

use crate::error::ApiError;
use crate::policy::Intent;
use crate::request::Hashing;

/// The request's kind, decoded.
#[derive(Clone, Debug)]
pub enum Payload {
    /// A message hashed by the node, or a raw digest.
    Message(Hashing),
    /// An unsigned Ethereum transaction.
    Ethereum {
        /// The transaction as decoded here.
        tx: Box<UnsignedTx>,
        /// The signing key's address (its sender), from the key's public key.
        sender: eth::Address,
    },
    /// One input of a PSBT.
    Bitcoin {
        /// The whole PSBT as analysed here (shared by its inputs' sessions).
        summary: Arc<PsbtSummary>,
        /// The input this session signs.
        input: usize,
    },
}

/// A decoded request: what the engine signs and what policy sees.
#[derive(Clone, Debug)]
pub struct Decoded {
    /// Kind and parsed contents.
    pub payload: Payload,
    /// What the engine signs.
    pub data: ToSign,
    /// The 32-byte digest.
    pub digest: [u8; 32],
    /// The transaction this belongs to (limits count a transaction once):
    /// Ethereum signing hash, Bitcoin txid, else the digest.
    pub tx_id: [u8; 32],
}

impl Decoded {
    /// The policy's view.
    pub fn intent(&self) -> Intent<'_> {
        match &self.payload {
            Payload::Message(Hashing::Node(h)) => Intent::Message { hash: *h },
            Payload::Message(Hashing::Raw) => Intent::RawDigest,
            Payload::Ethereum { tx, sender } => Intent::Ethereum {
                tx,
                sender: *sender,
            },
            Payload::Bitcoin { summary, .. } => Intent::Bitcoin(summary),
        }
    }
}

fn invalid(e: impl std::fmt::Display) -> ApiError {
    ApiError::Invalid(e.to_string())
}

/// Decodes an unsigned Ethereum transaction and checks it is for `chain_id`;
/// `public_key` is the signing key's (its address is the sender policy
/// compares recipients with).
pub fn ethereum(tx_bytes: &[u8], chain_id: u64, public_key: &[u8]) -> Result<Decoded, ApiError> {
    let sender = eth::address_of(public_key)
        .map_err(|e| ApiError::Internal(format!("the key's public key: {e}")))?;
    let tx = eth::decode_unsigned(tx_bytes).map_err(|e| invalid(format!("unsigned_tx: {e}")))?;
    if chain_id == 0 {
        return Err(invalid(
            "chain_id is not set: name the chain the transaction is for",
        ));
    }
    if tx.chain_id != chain_id {
        return Err(invalid(format!(
            "the transaction is for chain id {}, the request names chain id {chain_id}",
            tx.chain_id
        )));
    }
    let (data, digest) = HashAlgo::Keccak256.data_to_sign(tx_bytes);
    if digest != tx.signing_hash {
        return Err(ApiError::Internal(
            "the transaction's signing hash differs from the digest (a bug)".into(),
        ));
    }
    Ok(Decoded {
        tx_id: tx.signing_hash,
        payload: Payload::Ethereum {
            tx: Box::new(tx),
            sender,
        },
        data: ToSign::Hashed(data),
        digest,
    })
}

/// Analyses a PSBT for the key `public_key` on `chain`.
pub fn psbt(psbt: &[u8], chain: &str, public_key: &[u8]) -> Result<Arc<PsbtSummary>, ApiError> {
    let net: btc::Network = chain.parse().map_err(invalid)?;
    btc::analyse_psbt(psbt, public_key, net)
        .map(Arc::new)
        .map_err(|e| invalid(format!("psbt: {e}")))
}

/// One input of an analysed PSBT: the node hashes the preimage it computed
/// itself (BIP143 double SHA-256, or BIP341's tagged hash).
pub fn bitcoin_input(summary: &Arc<PsbtSummary>, input: usize) -> Result<Decoded, ApiError> {
    let i = summary.inputs.get(input).ok_or_else(|| {
        invalid(format!(
            "input {input} does not exist (the PSBT has {})",
            summary.inputs.len()
        ))
    })?;
    let (Some(preimage), Some(sighash)) = (&i.sighash_preimage, i.sighash) else {
        return Err(invalid(format!(
            "input {input} does not spend this key's output"
        )));
    };
    let (data, digest) = match i.spend {
        // BIP341 tagged hash; only a FROST Taproot key (BIP340) signs it.
        Some(btc::OwnSpend::TaprootKeyPath { .. }) => {
            let d = btc::tap_sighash(preimage);
            (ToSign::raw_digest(&d), d)
        }
        _ => {
            let (data, d) = HashAlgo::DoubleSha256.data_to_sign(preimage);
            (ToSign::Hashed(data), d)
        }
    };
    if digest != sighash {
        return Err(ApiError::Internal(
            "the sighash preimage does not hash to the sighash (a bug)".into(),
        ));
    }
    Ok(Decoded {
        payload: Payload::Bitcoin {
            summary: summary.clone(),
            input,
        },
        data,
        digest,
        tx_id: summary.txid,
    })
}

/// A message request (`Sign`) for a key of `scheme` (`None`: ECDSA). An
/// Ed25519 key asked with hash `NONE` signs the message bytes as given, of
/// any length (Ed25519 hashes them itself; see [`schnorr_message`]): the
/// request's digest is then their SHA-256.
pub fn message(
    hashing: Hashing,
    message: &[u8],
    scheme: Option<Scheme>,
) -> Result<Decoded, ApiError> {
    let (data, digest) = match (hashing, scheme) {
        (Hashing::Raw, Some(Scheme::Ed25519)) => {
            let digest: [u8; 32] = sha2::Sha256::digest(message).into();
            (ToSign::raw_digest(&digest), digest)
        }
        _ => crate::request::to_sign(hashing, message)?,
    };
    Ok(Decoded {
        payload: Payload::Message(hashing),
        data,
        digest,
        tx_id: digest,
    })
}

/// Decodes what a co-signer was asked to sign (`message`, `hash` and the
/// optional `payload` of a proposal).
pub fn from_wire(
    message: &[u8],
    hash: i32,
    payload: Option<&pb::SignPayload>,
    public_key: &[u8],
    scheme: Option<Scheme>,
) -> Result<Decoded, ApiError> {
    match payload.and_then(|p| p.kind.as_ref()) {
        None => self::message(crate::request::hash_algo(hash)?, message, scheme),
        Some(pb::sign_payload::Kind::EthereumChainId(id)) => ethereum(message, *id, public_key),
        Some(pb::sign_payload::Kind::Bitcoin(b)) => {
            let summary = psbt(message, &b.chain, public_key)?;
            bitcoin_input(&summary, b.input_index as usize)
        }
    }
}

/// What a FROST key of `scheme` signs for a request (its wire fields and
/// the digest this node derived from them): an Ed25519 key asked with hash
/// `NONE` signs the message bytes as given; otherwise the key signs the
/// 32-byte digest (for Taproot, per BIP340). Derived from the request
/// bytes by every party itself.
pub fn schnorr_message(
    scheme: Scheme,
    hash: i32,
    payload: Option<&pb::SignPayload>,
    message: &[u8],
    digest: &[u8; 32],
) -> Vec<u8> {
    let plain = payload.and_then(|p| p.kind.as_ref()).is_none();
    if scheme == Scheme::Ed25519 && plain && hash == pb::HashAlgorithm::None as i32 {
        message.to_vec()
    } else {
        digest.to_vec()
    }
}

/// The request id of input `input` of a PSBT request: every input is its own
/// signing session.
pub fn input_request_id(request_id: &[u8], input: usize) -> Vec<u8> {
    sha2::Sha256::new()
        .chain_update(b"tss/psbt-input/v1")
        .chain_update((input as u64).to_be_bytes())
        .chain_update(request_id)
        .finalize()
        .to_vec()
}
