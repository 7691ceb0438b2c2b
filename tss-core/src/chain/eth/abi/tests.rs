use super::*;

const SWAP: &str = "swapExactTokensForTokens(uint256,uint256,address[],address,uint256)";

fn addr(b: u8) -> Address {
    Address::repeat_byte(b)
}

fn w_addr(a: Address) -> [u8; 32] {
    let mut w = [0u8; 32];
    w[12..].copy_from_slice(a.as_slice());
    w
}

fn w_u(v: u64) -> [u8; 32] {
    U256::from(v).to_be_bytes()
}

fn calldata(f: &Function, words: &[[u8; 32]]) -> Vec<u8> {
    let mut out = f.selector().to_vec();
    for w in words {
        out.extend_from_slice(w);
    }
    out
}

/// A canonical swap: amountIn, amountOutMin, path (offset 0xa0), to,
/// deadline, then path = [1.., 2..].
fn swap_words(to: Address) -> Vec<[u8; 32]> {
    vec![
        w_u(1000),
        w_u(990),
        w_u(0xa0),
        w_addr(to),
        w_u(1_700_000_000),
        w_u(2),
        w_addr(addr(1)),
        w_addr(addr(2)),
    ]
}

fn err(f: &Function, data: &[u8]) -> String {
    match f.decode(data) {
        Err(ChainError::Invalid(m)) => m,
        Ok(v) => panic!("decoded: {v:?}"),
        Err(e) => panic!("another error: {e:?}"),
    }
}

#[test]
fn parse__should_compute_known_selectors() {
    // Given well-known signatures and their published selectors
    let cases = [
        ("transfer(address,uint256)", [0xa9, 0x05, 0x9c, 0xbb]),
        ("approve(address,uint256)", [0x09, 0x5e, 0xa7, 0xb3]),
        (SWAP, [0x38, 0xed, 0x17, 0x39]),
        (
            "swapExactETHForTokens(uint256,address[],address,uint256)",
            [0x7f, 0xf3, 0x6a, 0xb5],
        ),
    ];
    for (sig, sel) in cases {
        // When parsed, Then the selector is the published one
        let f = Function::parse(sig).unwrap();
        assert_eq!(f.selector(), sel, "{sig}");
        assert_eq!(f.signature(), sig);
    }
    let f = Function::parse(SWAP).unwrap();
    assert_eq!(
        f.params(),
        &[
            ParamType::Word(WordType::Uint(256)),
            ParamType::Word(WordType::Uint(256)),
            ParamType::Array(WordType::Address),
            ParamType::Word(WordType::Address),
            ParamType::Word(WordType::Uint(256)),
        ]
    );
    assert!(Function::parse("deposit()").unwrap().params().is_empty());
    // Types print in their canonical form.
    let g = Function::parse("g(bool,int8,bytes4,bytes,string,uint16[])").unwrap();
    let names: Vec<String> = g.params().iter().map(ToString::to_string).collect();
    assert_eq!(names.join(","), "bool,int8,bytes4,bytes,string,uint16[]");
}

#[test]
fn parse__should_refuse_non_canonical_or_unsupported_signatures() {
    let cases = [
        ("transfer(address, uint256)", "without spaces"),
        (
            "transfer(address to,uint256)",
            "without spaces or parameter names",
        ),
        ("transfer(address,uint)", "canonical type uint256"),
        ("f(int)", "canonical type int256"),
        ("f(uint7)", "unknown or unsupported"),
        ("f(uint264)", "unknown or unsupported"),
        ("f(uint08)", "unknown or unsupported"),
        ("f(bytes33)", "unknown or unsupported"),
        ("f(bytes0)", "unknown or unsupported"),
        ("f((address,uint256))", "tuple"),
        ("f(address[2])", "fixed-size"),
        ("f(address[][])", "nested"),
        ("f(bytes[])", "dynamic types"),
        ("f(string[])", "dynamic types"),
        ("transfer", "not a function signature"),
        ("transfer(address", "must end with"),
        ("(address)", "not a Solidity function name"),
        ("1f(address)", "not a Solidity function name"),
        ("f(address,)", "unknown or unsupported"),
    ];
    for (sig, needle) in cases {
        let e = Function::parse(sig).unwrap_err();
        assert!(
            e.to_string().contains(needle),
            "{sig}: expected {needle:?} in {e}"
        );
    }
}

#[test]
fn decode__should_read_a_canonical_swap() {
    // Given the canonical encoding of a swap to address 3..
    let f = Function::parse(SWAP).unwrap();
    let data = calldata(&f, &swap_words(addr(3)));
    // When it is decoded, Then every argument is read
    let v = f.decode(&data).unwrap();
    assert_eq!(
        v,
        vec![
            Value::Uint(U256::from(1000)),
            Value::Uint(U256::from(990)),
            Value::Array(vec![Value::Address(addr(1)), Value::Address(addr(2))]),
            Value::Address(addr(3)),
            Value::Uint(U256::from(1_700_000_000u64)),
        ]
    );
}

#[test]
fn decode__should_read_each_supported_type() {
    let f = Function::parse("f(bool,int8,bytes4,bytes,string,uint16[])").unwrap();
    let mut b4 = [0u8; 32];
    b4[..4].copy_from_slice(b"abcd");
    let mut minus_one = [0xffu8; 32];
    minus_one[31] = 0xff;
    let mut text = [0u8; 32];
    text[..5].copy_from_slice(b"hello");
    let data = calldata(
        &f,
        &[
            w_u(1),
            minus_one,
            b4,
            w_u(0xc0),
            w_u(0x120),
            w_u(0x160),
            // bytes: 33 bytes, two words
            w_u(33),
            [7; 32],
            {
                let mut w = [0u8; 32];
                w[0] = 8;
                w
            },
            // string "hello"
            w_u(5),
            text,
            // uint16[] = [65535]
            w_u(1),
            w_u(65535),
        ],
    );
    let v = f.decode(&data).unwrap();
    let mut bytes = vec![7u8; 32];
    bytes.push(8);
    assert_eq!(
        v,
        vec![
            Value::Bool(true),
            Value::Int([0xff; 32]),
            Value::FixedBytes(b"abcd".to_vec()),
            Value::Bytes(bytes),
            Value::Bytes(b"hello".to_vec()),
            Value::Array(vec![Value::Uint(U256::from(65535))]),
        ]
    );
    // An empty array and empty bytes take one length word each.
    let g = Function::parse("g(address[],bytes)").unwrap();
    let data = calldata(&g, &[w_u(0x40), w_u(0x60), w_u(0), w_u(0)]);
    assert_eq!(
        g.decode(&data).unwrap(),
        vec![Value::Array(vec![]), Value::Bytes(vec![])]
    );
}

#[test]
fn decode__should_refuse_what_is_not_exactly_the_declared_encoding() {
    let f = Function::parse(SWAP).unwrap();
    let good = calldata(&f, &swap_words(addr(3)));
    assert!(f.decode(&good).is_ok());

    // Another selector
    let mut other = good.clone();
    other[0] ^= 1;
    assert!(err(&f, &other).contains("selector 0x38ed1739"));
    assert!(err(&f, &good[..3]).contains("selector"));
    // Truncated head, truncated array, trailing bytes
    assert!(err(&f, &good[..4 + 32 * 4]).contains("truncated calldata"));
    assert!(err(&f, &good[..good.len() - 32]).contains("do not fit"));
    let mut long = good.clone();
    long.extend_from_slice(&[0; 32]);
    assert!(err(&f, &long).contains("32 bytes after its arguments"));
    // An address with dirty high bytes (as recipient and as path element)
    let mut w = swap_words(addr(3));
    w[3][0] = 1;
    let m = err(&f, &calldata(&f, &w));
    assert!(
        m.contains("argument 3") && m.contains("not an address"),
        "{m}"
    );
    let mut w = swap_words(addr(3));
    w[7][11] = 1;
    let m = err(&f, &calldata(&f, &w));
    assert!(m.contains("argument 2") && m.contains("element 1"), "{m}");
    // An offset pointing elsewhere than the standard place (here: at the
    // `to` word, which would read as a different path)
    let mut w = swap_words(addr(3));
    w[2] = w_u(0x60);
    assert!(err(&f, &calldata(&f, &w)).contains("offset is not 160"));
    // A length that cannot fit, including one that would overflow
    for len in [3u64, u64::MAX] {
        let mut w = swap_words(addr(3));
        w[5] = w_u(len);
        assert!(err(&f, &calldata(&f, &w)).contains("do not fit"), "{len}");
    }
    let mut w = swap_words(addr(3));
    w[5] = [0xff; 32];
    assert!(err(&f, &calldata(&f, &w)).contains("length"));
    // Dirty words of the other static types
    let g = Function::parse("g(bool,uint8,int8,bytes2)").unwrap();
    let ok = [w_u(0), w_u(255), w_u(127), [0; 32]];
    assert!(g.decode(&calldata(&g, &ok)).is_ok());
    let cases: [(usize, [u8; 32], &str); 5] = [
        (0, w_u(2), "not a bool"),
        (1, w_u(256), "does not fit uint8"),
        (2, w_u(128), "sign-extended int8"),
        (2, [0xff; 32], ""),
        (3, w_u(1), "bytes2 with nonzero"),
    ];
    for (i, word, needle) in cases {
        let mut words = ok;
        words[i] = word;
        let r = g.decode(&calldata(&g, &words));
        if needle.is_empty() {
            assert!(r.is_ok(), "-1 is a valid int8");
        } else {
            let m = err(&g, &calldata(&g, &words));
            assert!(m.contains(needle), "{m}");
        }
    }
    // Nonzero padding after bytes
    let h = Function::parse("h(bytes)").unwrap();
    let mut tail = [0u8; 32];
    tail[0] = 9;
    tail[1] = 1;
    let m = err(&h, &calldata(&h, &[w_u(0x20), w_u(1), tail]));
    assert!(m.contains("padding"), "{m}");
}

#[test]
fn decode__should_not_panic_on_garbage() {
    use rand::{Rng, SeedableRng};
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(11);
    let f = Function::parse("f(address[],bytes,uint8,string)").unwrap();
    for _ in 0..20_000 {
        let len = rng.gen_range(0..300);
        let mut data: Vec<u8> = f.selector().to_vec();
        data.extend((0..len).map(|_| {
            // Mostly small bytes, so that offsets and lengths are plausible.
            if rng.gen_bool(0.8) {
                rng.gen_range(0..0x80)
            } else {
                rng.gen()
            }
        }));
        let _ = f.decode(&data);
    }
}
