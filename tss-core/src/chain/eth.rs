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
//! signed. [`encode_signed`] attaches a finished signature and returns the
//! `eth_sendRawTransaction` bytes.
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
    ContractCall {
        /// The first four bytes of the calldata.
        selector: [u8; 4],
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
        _ => Call::ContractCall { selector },
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
mod tests {
    use super::*;
    use crate::chain::{eth_address, finish_signature};
    use alloy_consensus::transaction::RlpEcdsaDecodableTx;
    use alloy_primitives::{address, Bytes};
    use k256::ecdsa::SigningKey;

    const TOKEN: Address = address!("a0b86991c6218b36c1d19d4a2e9eb0ce3606eb48");
    const ALICE: Address = address!("1111111111111111111111111111111111111111");
    const BOB: Address = address!("2222222222222222222222222222222222222222");

    fn eip1559(to: Destination, input: Vec<u8>) -> TxEip1559 {
        TxEip1559 {
            chain_id: 1,
            nonce: 7,
            gas_limit: 60_000,
            max_fee_per_gas: 30_000_000_000,
            max_priority_fee_per_gas: 1_000_000_000,
            to,
            value: U256::from(1_000_000_000_000_000u64),
            access_list: Default::default(),
            input: Bytes::from(input),
        }
    }

    fn legacy(chain_id: Option<u64>, to: Destination, input: Vec<u8>) -> TxLegacy {
        TxLegacy {
            chain_id,
            nonce: 3,
            gas_price: 20_000_000_000,
            gas_limit: 21_000,
            to,
            value: U256::from(12345u64),
            input: Bytes::from(input),
        }
    }

    fn word_addr(a: Address) -> [u8; 32] {
        let mut w = [0u8; 32];
        w[12..].copy_from_slice(a.as_slice());
        w
    }

    fn word_u256(v: U256) -> [u8; 32] {
        v.to_be_bytes()
    }

    fn calldata(selector: [u8; 4], words: &[[u8; 32]]) -> Vec<u8> {
        let mut out = selector.to_vec();
        for w in words {
            out.extend_from_slice(w);
        }
        out
    }

    fn key() -> SigningKey {
        SigningKey::from_slice(&[0x42; 32]).unwrap()
    }

    fn sign(sk: &SigningKey, digest: &[u8; 32]) -> EcdsaSignature {
        let (sig, _) = sk.sign_prehash_recoverable(digest).unwrap();
        let rs: [u8; 64] = sig.to_bytes().into();
        let pk = sk.verifying_key().to_encoded_point(true);
        finish_signature(pk.as_bytes(), digest, &rs).unwrap()
    }

    fn err(bytes: &[u8]) -> String {
        match decode_unsigned(bytes) {
            Err(ChainError::Invalid(m)) => m,
            Ok(tx) => panic!("decoded: {tx:?}"),
        }
    }

    #[test]
    fn decode_unsigned__should_read_eip1559_transfer() {
        // Given an EIP-1559 plain transfer encoded by alloy
        let tx = eip1559(Destination::Call(ALICE), vec![]);
        let bytes = tx.encoded_for_signing();
        // When it is decoded
        let out = decode_unsigned(&bytes).unwrap();
        // Then every field and the signing hash match alloy's
        assert_eq!(out.kind, TxKind::Eip1559);
        assert_eq!(out.chain_id, 1);
        assert_eq!(out.nonce, 7);
        assert_eq!(out.to, Some(ALICE));
        assert_eq!(out.value, U256::from(1_000_000_000_000_000u64));
        assert_eq!(out.gas_limit, 60_000);
        assert_eq!(out.call, Call::Transfer);
        assert_eq!(out.signing_hash, tx.signature_hash().0);
    }

    #[test]
    fn decode_unsigned__should_read_legacy_eip155_transfer() {
        let tx = legacy(Some(56), Destination::Call(BOB), vec![]);
        let bytes = tx.encoded_for_signing();
        let out = decode_unsigned(&bytes).unwrap();
        assert_eq!(out.kind, TxKind::Legacy);
        assert_eq!(out.chain_id, 56);
        assert_eq!(out.nonce, 3);
        assert_eq!(out.to, Some(BOB));
        assert_eq!(out.value, U256::from(12345u64));
        assert_eq!(out.gas_limit, 21_000);
        assert_eq!(out.call, Call::Transfer);
        assert_eq!(out.signing_hash, tx.signature_hash().0);
    }

    #[test]
    fn decode_unsigned__should_classify_erc20_calls() {
        let amount = U256::from(5_000_000u64) << 100;
        let cases = [
            (
                calldata(TRANSFER, &[word_addr(BOB), word_u256(amount)]),
                Call::Erc20Transfer {
                    recipient: BOB,
                    amount,
                },
            ),
            (
                calldata(APPROVE, &[word_addr(BOB), word_u256(U256::MAX)]),
                Call::Erc20Approve {
                    spender: BOB,
                    amount: U256::MAX,
                },
            ),
            (
                calldata(
                    TRANSFER_FROM,
                    &[word_addr(ALICE), word_addr(BOB), word_u256(amount)],
                ),
                Call::Erc20TransferFrom {
                    from: ALICE,
                    recipient: BOB,
                    amount,
                },
            ),
            (
                calldata([0xde, 0xad, 0xbe, 0xef], &[word_u256(amount)]),
                Call::ContractCall {
                    selector: [0xde, 0xad, 0xbe, 0xef],
                },
            ),
            (
                vec![0x12, 0x34, 0x56, 0x78],
                Call::ContractCall {
                    selector: [0x12, 0x34, 0x56, 0x78],
                },
            ),
        ];
        for (data, want) in cases {
            let a = eip1559(Destination::Call(TOKEN), data.clone()).encoded_for_signing();
            let b = legacy(Some(1), Destination::Call(TOKEN), data).encoded_for_signing();
            for bytes in [a, b] {
                let out = decode_unsigned(&bytes).unwrap();
                assert_eq!(out.to, Some(TOKEN));
                assert_eq!(out.call, want);
            }
        }
    }

    #[test]
    fn decode_unsigned__should_classify_create() {
        for data in [vec![], vec![0x60, 0x80, 0x60, 0x40, 0x52], vec![0x01]] {
            let a = eip1559(Destination::Create, data.clone()).encoded_for_signing();
            let b = legacy(Some(1), Destination::Create, data).encoded_for_signing();
            for bytes in [a, b] {
                let out = decode_unsigned(&bytes).unwrap();
                assert_eq!(out.to, None);
                assert_eq!(out.call, Call::Create);
            }
        }
    }

    #[test]
    fn decode_unsigned__should_refuse_malformed_erc20_calldata() {
        let to = Destination::Call(TOKEN);
        let one = word_u256(U256::from(1u64));
        let enc = |data: Vec<u8>| eip1559(to, data).encoded_for_signing();

        let mut short = calldata(TRANSFER, &[word_addr(BOB), one]);
        short.truncate(40);
        assert_eq!(
            err(&enc(short)),
            "truncated calldata: transfer(address,uint256) needs 68 bytes, got 40"
        );

        let mut long = calldata(APPROVE, &[word_addr(BOB), one]);
        long.extend_from_slice(&[0; 5]);
        assert_eq!(
            err(&enc(long)),
            "calldata for approve(address,uint256) has 5 trailing bytes"
        );

        let mut dirty = word_addr(BOB);
        dirty[0] = 1;
        let m = err(&enc(calldata(TRANSFER, &[dirty, one])));
        assert!(
            m.starts_with("argument 1 of transfer(address,uint256) is not an address"),
            "{m}"
        );
        let m = err(&enc(calldata(
            TRANSFER_FROM,
            &[word_addr(ALICE), dirty, one],
        )));
        assert!(
            m.starts_with("argument 2 of transferFrom(address,address,uint256) is not an address"),
            "{m}"
        );
        let m = err(&enc(calldata(TRANSFER_FROM, &[word_addr(ALICE), one])));
        assert_eq!(
            m,
            "truncated calldata: transferFrom(address,address,uint256) needs 100 bytes, got 68"
        );

        assert_eq!(
            err(&enc(vec![0xa9, 0x05, 0x9c])),
            "calldata of 3 bytes is shorter than a 4-byte selector"
        );
    }

    #[test]
    fn decode_unsigned__should_refuse_pre_eip155_legacy() {
        let bytes = legacy(None, Destination::Call(BOB), vec![]).encoded_for_signing();
        assert_eq!(
            err(&bytes),
            "legacy transaction without EIP-155 chain id: refuse replayable transactions"
        );
    }

    #[test]
    fn decode_unsigned__should_refuse_chain_id_zero() {
        let a = legacy(Some(0), Destination::Call(BOB), vec![]).encoded_for_signing();
        let mut tx = eip1559(Destination::Call(BOB), vec![]);
        tx.chain_id = 0;
        let b = tx.encoded_for_signing();
        for bytes in [a, b] {
            assert!(err(&bytes).contains("chain id 0"));
        }
    }

    #[test]
    fn decode_unsigned__should_name_unsupported_types() {
        let body = eip1559(Destination::Call(BOB), vec![]).encoded_for_signing();
        for (ty, name) in [(0x01, "EIP-2930"), (0x03, "EIP-4844"), (0x04, "EIP-7702")] {
            let mut bytes = body.clone();
            bytes[0] = ty;
            let m = err(&bytes);
            assert!(
                m.contains(name) && m.contains(&format!("0x{ty:02x}")),
                "{m}"
            );
        }
        assert!(err(&[0x05, 0xc0]).contains("unknown transaction type 0x05"));
        assert!(err(&[0x83, 1, 2, 3]).contains("RLP string"));
    }

    #[test]
    fn decode_unsigned__should_refuse_trailing_and_truncated_bytes() {
        let a = eip1559(Destination::Call(BOB), vec![]).encoded_for_signing();
        let b = legacy(Some(1), Destination::Call(BOB), vec![]).encoded_for_signing();
        for bytes in [a, b] {
            let mut long = bytes.clone();
            long.extend_from_slice(&[0xde, 0xad]);
            assert!(err(&long).starts_with("2 trailing bytes after the "));
            for n in 0..bytes.len() {
                assert!(decode_unsigned(&bytes[..n]).is_err(), "prefix {n}");
            }
        }
        assert_eq!(err(&[]), "empty transaction");
    }

    #[test]
    fn decode_unsigned__should_refuse_non_canonical_encodings() {
        // EIP-155 fields after chain id must be two empty strings (zeros).
        let mut bytes = legacy(Some(1), Destination::Call(BOB), vec![]).encoded_for_signing();
        let n = bytes.len();
        bytes[n - 1] = 0x01;
        assert!(err(&bytes).contains("canonical"), "{}", err(&bytes));

        // A list header in long form for a short payload.
        let body = legacy(Some(1), Destination::Call(BOB), vec![]).encoded_for_signing();
        let payload = &body[1..];
        assert!(payload.len() < 56);
        let mut long_form = vec![0xf8, payload.len() as u8];
        long_form.extend_from_slice(payload);
        assert!(decode_unsigned(&long_form).is_err());
    }

    #[test]
    fn decode_unsigned__should_say_when_given_a_signed_transaction() {
        let sk = key();
        let a = eip1559(Destination::Call(BOB), vec![]);
        let sig = sign(&sk, &a.signature_hash().0);
        let signed = encode_signed(&a.encoded_for_signing(), &sig).unwrap();
        assert!(err(&signed.raw).contains("signed transaction"));

        for chain_id in [Some(1), None] {
            let b = legacy(chain_id, Destination::Call(BOB), vec![]);
            let mut raw = Vec::new();
            let sig = Signature::new(U256::from(5u64), U256::from(6u64), true);
            b.into_signed(sig).eip2718_encode(&mut raw);
            let m = err(&raw);
            assert!(m.contains("signed transaction"), "{m}");
        }
    }

    #[test]
    fn decode_unsigned__should_not_panic_on_garbage() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
        let good = eip1559(
            Destination::Call(TOKEN),
            calldata(TRANSFER, &[word_addr(BOB), word_u256(U256::from(9u64))]),
        )
        .encoded_for_signing();
        for i in 0..5000 {
            let bytes: Vec<u8> = if i % 2 == 0 {
                let len = rng.gen_range(0..200);
                (0..len).map(|_| rng.gen()).collect()
            } else {
                let mut b = good.clone();
                let at = rng.gen_range(0..b.len());
                b[at] = rng.gen();
                b
            };
            let _ = decode_unsigned(&bytes);
        }
    }

    #[test]
    fn encode_signed__should_produce_transactions_alloy_recovers() {
        // Given a key, its address, and one transaction of each kind
        let sk = key();
        let pk = sk.verifying_key().to_encoded_point(false);
        let want: Address = eth_address(pk.as_bytes()).unwrap().parse().unwrap();
        let transfer = calldata(TRANSFER, &[word_addr(BOB), word_u256(U256::from(9u64))]);

        // EIP-1559
        let tx = eip1559(Destination::Call(TOKEN), transfer.clone());
        let unsigned = tx.encoded_for_signing();
        let decoded = decode_unsigned(&unsigned).unwrap();
        let sig = sign(&sk, &decoded.signing_hash);
        let out = encode_signed(&unsigned, &sig).unwrap();
        assert_eq!(out.raw[0], 0x02);
        assert_eq!(out.hash, keccak256(&out.raw).0);
        let mut buf = out.raw.as_slice();
        let back = Signed::<TxEip1559>::eip2718_decode(&mut buf).unwrap();
        assert!(buf.is_empty());
        assert_eq!(back.tx(), &tx);
        assert_eq!(back.hash().0, out.hash);
        assert_eq!(back.recover_signer().unwrap(), want);

        // Legacy EIP-155: v = 35 + 2 * chain_id + parity
        let tx = legacy(Some(137), Destination::Call(TOKEN), transfer);
        let unsigned = tx.encoded_for_signing();
        let decoded = decode_unsigned(&unsigned).unwrap();
        let sig = sign(&sk, &decoded.signing_hash);
        let out = encode_signed(&unsigned, &sig).unwrap();
        let mut buf = out.raw.as_slice();
        let back = Signed::<TxLegacy>::rlp_decode(&mut buf).unwrap();
        assert!(buf.is_empty());
        assert_eq!(back.tx(), &tx);
        assert_eq!(back.hash().0, out.hash);
        assert_eq!(back.recover_signer().unwrap(), want);
        // The encoded v is 35 + 2 * 137 + parity.
        let mut fields = out.raw.as_slice();
        let _ = Header::decode(&mut fields).unwrap();
        let _ = TxLegacy::rlp_decode_fields(&mut fields).unwrap();
        let v = u64::decode(&mut fields).unwrap();
        assert_eq!(v, 35 + 2 * 137 + u64::from(sig.v));
    }

    #[test]
    fn encode_signed__should_refuse_unusable_signatures() {
        let unsigned = eip1559(Destination::Call(BOB), vec![]).encoded_for_signing();
        let good = sign(&key(), &keccak256(&unsigned).0);

        let mut bad = good.clone();
        bad.v = 2;
        assert!(encode_signed(&unsigned, &bad).is_err());

        let mut zero = good.clone();
        zero.r = [0; 32];
        assert!(encode_signed(&unsigned, &zero).is_err());

        // The high-S twin of a valid signature.
        let k = k256::ecdsa::Signature::from_scalars(good.r, good.s).unwrap();
        let high = k256::ecdsa::Signature::from_scalars(k.r(), -*k.s()).unwrap();
        let mut hs = good.clone();
        hs.s.copy_from_slice(&high.to_bytes()[32..]);
        assert!(encode_signed(&unsigned, &hs)
            .unwrap_err()
            .to_string()
            .contains("low-S"));

        // And it re-checks the payload.
        assert!(encode_signed(&unsigned[..10], &good).is_err());
    }
}
