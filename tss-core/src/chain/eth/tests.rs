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
        Err(e) => panic!("another error: {e:?}"),
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
                calldata: calldata([0xde, 0xad, 0xbe, 0xef], &[word_u256(amount)]),
            },
        ),
        (
            vec![0x12, 0x34, 0x56, 0x78],
            Call::ContractCall {
                selector: [0x12, 0x34, 0x56, 0x78],
                calldata: vec![0x12, 0x34, 0x56, 0x78],
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
fn address_of__should_match_the_checksummed_address() {
    // Private key 1: address 0x7E5F4552091A69125d5DfCb7b8C2659029395Bdf.
    let mut k = [0u8; 32];
    k[31] = 1;
    let sk = SigningKey::from_slice(&k).unwrap();
    for compressed in [true, false] {
        let pk = sk.verifying_key().to_encoded_point(compressed);
        assert_eq!(
            address_of(pk.as_bytes()).unwrap().to_checksum(None),
            "0x7E5F4552091A69125d5DfCb7b8C2659029395Bdf"
        );
    }
    assert!(address_of(&[4; 10]).is_err());
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
