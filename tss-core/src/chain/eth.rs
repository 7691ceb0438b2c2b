//! Ethereum transactions: what a client asks the node to sign.
//!
//! The client sends the *unsigned signing payload* of a transaction (the bytes
//! whose keccak256 is signed): for EIP-1559,
//! `0x02 || rlp([chain_id, nonce, max_priority_fee_per_gas, max_fee_per_gas,
//! gas_limit, to, value, data, access_list])`; for legacy EIP-155,
//! `rlp([nonce, gas_price, gas_limit, to, value, data, chain_id, 0, 0])`.
//! [`decode_unsigned`] decodes it with alloy's decoders, refuses anything that
//! is not exactly what alloy would encode for the decoded transaction, and
//! classifies the call (plain transfer, the ERC-20 transfer functions, other
//! contract calls, contract creation) so that policy can look at what is
//! signed. The arguments of other contract calls are read by [`abi`] against
//! the function signatures a policy lists. [`encode_signed`] attaches a
//! finished signature and returns the `eth_sendRawTransaction` bytes.
//!
//! Refused: pre-EIP-155 legacy transactions (replayable on every chain),
//! chain id 0, EIP-2930, EIP-4844 and EIP-7702 transactions, signed
//! transactions given in place of the signing payload, trailing bytes and
//! non-canonical encodings.

use alloy_consensus::{SignableTransaction, Signed, TxEip1559, TxLegacy};
use alloy_primitives::{keccak256, Signature, TxKind as Destination};
use alloy_rlp::{Decodable, Header};

pub use alloy_primitives::{Address, U256};

use super::{invalid, ChainError, EcdsaSignature};

pub mod abi;

/// The Ethereum address of a secp256k1 public key (SEC1, compressed or not):
/// the last 20 bytes of keccak-256 of its uncompressed coordinates.
///
/// # Errors
/// [`ChainError::Invalid`] when the bytes are not a valid public key.
pub fn address_of(public_key: &[u8]) -> Result<Address, ChainError> {
    let vk = k256::ecdsa::VerifyingKey::from_sec1_bytes(public_key)
        .map_err(|_| invalid("not a valid secp256k1 public key"))?;
    let point = vk.to_encoded_point(false);
    let hash = keccak256(&point.as_bytes()[1..]);
    Ok(Address::from_slice(&hash[12..]))
}

/// The transaction types the node signs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TxKind {
    /// Legacy transaction with EIP-155 replay protection (chain id in the payload).
    Legacy,
    /// EIP-1559 dynamic-fee transaction (EIP-2718 type 0x02).
    Eip1559,
}

/// What a transaction does, read from its `to` and calldata.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Call {
    /// No calldata: a plain value transfer to the transaction's `to`.
    Transfer,
    /// ERC-20 transfer(address,uint256), selector a9059cbb; the token is the tx's `to`.
    Erc20Transfer {
        /// Who receives the tokens.
        recipient: Address,
        /// Token amount, in the token's smallest unit.
        amount: U256,
    },
    /// ERC-20 approve(address,uint256), selector 095ea7b3.
    Erc20Approve {
        /// Who may spend the tokens.
        spender: Address,
        /// Allowance, in the token's smallest unit.
        amount: U256,
    },
    /// ERC-20 transferFrom(address,address,uint256), selector 23b872dd.
    Erc20TransferFrom {
        /// Whose tokens move.
        from: Address,
        /// Who receives the tokens.
        recipient: Address,
        /// Token amount, in the token's smallest unit.
        amount: U256,
    },
    /// Any other calldata (>= 4 bytes): a contract call with this selector.
    /// Its arguments are read by [`abi::Function::decode`] against the
    /// function a policy lists for the selector.
    ContractCall {
        /// The first four bytes of the calldata.
        selector: [u8; 4],
        /// The whole calldata, selector included.
        calldata: Vec<u8>,
    },
    /// `to` is empty: contract creation.
    Create,
}

/// A decoded unsigned transaction.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UnsignedTx {
    /// Legacy EIP-155 or EIP-1559.
    pub kind: TxKind,
    /// EIP-155 chain id (never 0).
    pub chain_id: u64,
    /// Sender nonce.
    pub nonce: u64,
    /// Recipient or called contract; `None` for contract creation.
    pub to: Option<Address>,
    /// Wei sent with the transaction.
    pub value: U256,
    /// Gas limit.
    pub gas_limit: u64,
    /// What the transaction does.
    pub call: Call,
    /// keccak256 of the bytes given to `decode_unsigned` (they are exactly the signing payload).
    pub signing_hash: [u8; 32],
}

/// A signed transaction, ready for `eth_sendRawTransaction`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SignedTx {
    /// Network encoding: the EIP-2718 envelope (EIP-1559) or plain RLP (legacy).
    pub raw: Vec<u8>,
    /// Transaction hash: keccak256 of `raw`.
    pub hash: [u8; 32],
}

/// A decoded signing payload, in alloy's types.
enum Parsed {
    Legacy(TxLegacy),
    Eip1559(TxEip1559),
}

const TRANSFER: [u8; 4] = [0xa9, 0x05, 0x9c, 0xbb];
const APPROVE: [u8; 4] = [0x09, 0x5e, 0xa7, 0xb3];
const TRANSFER_FROM: [u8; 4] = [0x23, 0xb8, 0x72, 0xdd];

/// Decodes an unsigned signing payload (see the module docs) and classifies
/// its call.
///
/// # Errors
/// [`ChainError::Invalid`] when the bytes are not exactly the canonical
/// signing payload of a supported, replay-protected transaction, or when
/// the calldata of an ERC-20 function is malformed.
pub fn decode_unsigned(bytes: &[u8]) -> Result<UnsignedTx, ChainError> {
    parse(bytes).map(|(_, tx)| tx)
}

/// Attaches `sig` (over [`UnsignedTx::signing_hash`]) to the unsigned payload
/// and returns the network encoding: the EIP-2718 envelope for EIP-1559, the
/// RLP list with `v = 35 + 2 * chain_id + parity` for legacy EIP-155.
///
/// The payload goes through every check of [`decode_unsigned`] again. The
/// signature is not checked against a key here (that is
/// [`super::finish_signature`]'s job); it must be low-S with recovery id 0
/// or 1, as Ethereum requires.
///
/// # Errors
/// [`ChainError::Invalid`] when the payload is refused by
/// [`decode_unsigned`] or the signature cannot be a valid Ethereum signature.
pub fn encode_signed(unsigned: &[u8], sig: &EcdsaSignature) -> Result<SignedTx, ChainError> {
    let (parsed, _) = parse(unsigned)?;
    let signature = ethereum_signature(sig)?;
    let mut raw = Vec::new();
    match parsed {
        Parsed::Legacy(tx) => tx.into_signed(signature).eip2718_encode(&mut raw),
        Parsed::Eip1559(tx) => tx.into_signed(signature).eip2718_encode(&mut raw),
    }
    let hash = keccak256(&raw).0;
    Ok(SignedTx { raw, hash })
}

/// The alloy signature for `sig`, refusing what no Ethereum node accepts.
fn ethereum_signature(sig: &EcdsaSignature) -> Result<Signature, ChainError> {
    if sig.v > 1 {
        return Err(invalid(format!(
            "recovery id {} cannot be encoded in an Ethereum signature (must be 0 or 1)",
            sig.v
        )));
    }
    let k = k256::ecdsa::Signature::from_scalars(sig.r, sig.s)
        .map_err(|_| invalid("signature scalars r and s must be in [1, n-1]"))?;
    if k.normalize_s().is_some() {
        return Err(invalid(
            "signature s is in the high half: Ethereum requires low-S (EIP-2)",
        ));
    }
    Ok(Signature::new(
        U256::from_be_bytes(sig.r),
        U256::from_be_bytes(sig.s),
        sig.v == 1,
    ))
}

fn parse(bytes: &[u8]) -> Result<(Parsed, UnsignedTx), ChainError> {
    let Some(&first) = bytes.first() else {
        return Err(invalid("empty transaction"));
    };
    let parsed = match first {
        0x02 => Parsed::Eip1559(parse_eip1559(&bytes[1..])?),
        0xc0..=0xff => Parsed::Legacy(parse_legacy(bytes)?),
        0x01 => return Err(unsupported_type(first, "EIP-2930 access-list")),
        0x03 => return Err(unsupported_type(first, "EIP-4844 blob")),
        0x04 => return Err(unsupported_type(first, "EIP-7702 set-code")),
        0x00..=0x7f => {
            return Err(invalid(format!(
                "unknown transaction type 0x{first:02x}: only EIP-1559 (0x02) and legacy EIP-155 are signed"
            )))
        }
        0x80..=0xbf => {
            return Err(invalid(
                "not a transaction: an RLP string where a typed transaction or an RLP list was expected",
            ))
        }
    };
    let (kind, chain_id, nonce, to, value, gas_limit, input) = match &parsed {
        Parsed::Legacy(tx) => (
            TxKind::Legacy,
            // `parse_legacy` refuses transactions without a chain id.
            tx.chain_id.unwrap_or_default(),
            tx.nonce,
            tx.to,
            tx.value,
            tx.gas_limit,
            &tx.input,
        ),
        Parsed::Eip1559(tx) => (
            TxKind::Eip1559,
            tx.chain_id,
            tx.nonce,
            tx.to,
            tx.value,
            tx.gas_limit,
            &tx.input,
        ),
    };
    if chain_id == 0 {
        return Err(invalid("chain id 0 is not a valid EIP-155 chain id"));
    }
    let to = match to {
        Destination::Call(addr) => Some(addr),
        Destination::Create => None,
    };
    let call = classify(to, input)?;
    let tx = UnsignedTx {
        kind,
        chain_id,
        nonce,
        to,
        value,
        gas_limit,
        call,
        signing_hash: keccak256(bytes).0,
    };
    Ok((parsed, tx))
}

fn unsupported_type(ty: u8, name: &str) -> ChainError {
    invalid(format!(
        "{name} transactions (type 0x{ty:02x}) are not supported: only EIP-1559 (0x02) and legacy EIP-155 are signed"
    ))
}

/// Checks that `bytes` is exactly one well-formed RLP list, nothing after it.
fn exact_list(bytes: &[u8], what: &str) -> Result<(), ChainError> {
    let mut rest = bytes;
    Header::decode_bytes(&mut rest, true)
        .map_err(|e| invalid(format!("{what} is not a well-formed RLP list: {e}")))?;
    if !rest.is_empty() {
        return Err(invalid(format!(
            "{} trailing bytes after the {what}",
            rest.len()
        )));
    }
    Ok(())
}

/// `payload` is everything after the 0x02 type byte.
fn parse_eip1559(payload: &[u8]) -> Result<TxEip1559, ChainError> {
    const WHAT: &str = "EIP-1559 transaction";
    exact_list(payload, WHAT)?;
    let mut buf = payload;
    let tx = match TxEip1559::decode(&mut buf) {
        Ok(tx) => tx,
        Err(e) => {
            let mut signed = payload;
            if Signed::<TxEip1559>::rlp_decode(&mut signed).is_ok() && signed.is_empty() {
                return Err(signed_given());
            }
            return Err(invalid(format!("{WHAT} does not decode: {e}")));
        }
    };
    if !buf.is_empty() {
        // `exact_list` saw one list; the decoder stopped early inside it.
        return Err(invalid(format!(
            "{} trailing bytes after the {WHAT}",
            buf.len()
        )));
    }
    if tx.encoded_for_signing().get(1..) != Some(payload) {
        return Err(non_canonical(WHAT));
    }
    Ok(tx)
}

fn parse_legacy(bytes: &[u8]) -> Result<TxLegacy, ChainError> {
    const WHAT: &str = "legacy transaction";
    exact_list(bytes, WHAT)?;
    let mut buf = bytes;
    // Alloy's decoder is permissive (the two EIP-155 zero fields are read but
    // not checked, a signed transaction decodes with `v` as chain id): the
    // re-encoding comparison below is what makes it strict.
    let tx =
        TxLegacy::decode(&mut buf).map_err(|e| invalid(format!("{WHAT} does not decode: {e}")))?;
    if !buf.is_empty() {
        return Err(invalid(format!(
            "{} trailing bytes after the {WHAT}",
            buf.len()
        )));
    }
    if tx.chain_id.is_none() {
        // Six fields: a pre-EIP-155 payload. (A signed transaction has nine,
        // and decodes with `v` as chain id: the comparison below catches it.)
        return Err(invalid(
            "legacy transaction without EIP-155 chain id: refuse replayable transactions",
        ));
    }
    if tx.encoded_for_signing() != bytes {
        let mut signed = bytes;
        if let Ok(s) = Signed::<TxLegacy>::rlp_decode(&mut signed) {
            if signed.is_empty() && !is_zero_signature(s.signature()) {
                return Err(signed_given());
            }
        }
        return Err(non_canonical(WHAT));
    }
    Ok(tx)
}

fn is_zero_signature(sig: &Signature) -> bool {
    sig.r().is_zero() && sig.s().is_zero()
}

fn signed_given() -> ChainError {
    invalid("this is a signed transaction: send the unsigned signing payload instead")
}

fn non_canonical(what: &str) -> ChainError {
    invalid(format!(
        "{what} is not in canonical form (its fields re-encode to different bytes)"
    ))
}

fn classify(to: Option<Address>, input: &[u8]) -> Result<Call, ChainError> {
    if to.is_none() {
        return Ok(Call::Create);
    }
    if input.is_empty() {
        return Ok(Call::Transfer);
    }
    let Some(selector) = input.get(..4).and_then(|s| <[u8; 4]>::try_from(s).ok()) else {
        return Err(invalid(format!(
            "calldata of {} bytes is shorter than a 4-byte selector",
            input.len()
        )));
    };
    Ok(match selector {
        TRANSFER => {
            const SIG: &str = "transfer(address,uint256)";
            let w = abi_words::<2>(SIG, input)?;
            Call::Erc20Transfer {
                recipient: address_arg(SIG, 1, &w[0])?,
                amount: U256::from_be_bytes(w[1]),
            }
        }
        APPROVE => {
            const SIG: &str = "approve(address,uint256)";
            let w = abi_words::<2>(SIG, input)?;
            Call::Erc20Approve {
                spender: address_arg(SIG, 1, &w[0])?,
                amount: U256::from_be_bytes(w[1]),
            }
        }
        TRANSFER_FROM => {
            const SIG: &str = "transferFrom(address,address,uint256)";
            let w = abi_words::<3>(SIG, input)?;
            Call::Erc20TransferFrom {
                from: address_arg(SIG, 1, &w[0])?,
                recipient: address_arg(SIG, 2, &w[1])?,
                amount: U256::from_be_bytes(w[2]),
            }
        }
        _ => Call::ContractCall {
            selector,
            calldata: input.to_vec(),
        },
    })
}

/// The `N` static ABI words after the selector; the calldata must be exactly
/// that long.
fn abi_words<const N: usize>(sig: &str, input: &[u8]) -> Result<[[u8; 32]; N], ChainError> {
    let need = 4 + 32 * N;
    if input.len() < need {
        return Err(invalid(format!(
            "truncated calldata: {sig} needs {need} bytes, got {}",
            input.len()
        )));
    }
    if input.len() > need {
        return Err(invalid(format!(
            "calldata for {sig} has {} trailing bytes",
            input.len() - need
        )));
    }
    let mut words = [[0u8; 32]; N];
    for (word, chunk) in words.iter_mut().zip(input[4..].chunks_exact(32)) {
        word.copy_from_slice(chunk);
    }
    Ok(words)
}

/// ABI `address` argument `index` (1-based): 12 zero bytes, then 20.
fn address_arg(sig: &str, index: usize, word: &[u8; 32]) -> Result<Address, ChainError> {
    if word[..12].iter().any(|&b| b != 0) {
        return Err(invalid(format!(
            "argument {index} of {sig} is not an address (its 12 high bytes are not zero)"
        )));
    }
    Ok(Address::from_word((*word).into()))
}

#[cfg(test)]
mod tests;
