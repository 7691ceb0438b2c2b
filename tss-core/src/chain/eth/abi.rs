//! Strict decoding of contract-call arguments against a function signature
//! the operator listed (`functions` of a whitelisted contract).
//!
//! [`Function::parse`] reads a canonical Solidity signature such as
//! `swapExactTokensForTokens(uint256,uint256,address[],address,uint256)`
//! and computes its selector (the first four bytes of its keccak-256).
//! [`Function::decode`] reads calldata as exactly that function's ABI
//! encoding and refuses anything else: another selector, missing or extra
//! bytes, dirty high bits of an `address`, `bool`, `uintN`, `intN` or
//! `bytesN`, and dynamic data that is not laid out exactly as the standard
//! encoder lays it out (offsets in order, directly after the head and after
//! each other; zero padding). A contract's own decoder reads the same values
//! from every encoding accepted here, so what policy checks is what the
//! contract acts on.
//!
//! Supported parameter types: `address`, `bool`, `uint8`..`uint256`,
//! `int8`..`int256`, `bytes1`..`bytes32`, `bytes`, `string`, and dynamic
//! arrays `T[]` of the fixed-size (one-word) types among them. Tuples,
//! fixed-size arrays and nested or dynamic-element arrays are refused when
//! the signature is parsed.

use alloy_primitives::{keccak256, Address, U256};

use crate::chain::{invalid, ChainError};

/// A one-word ABI type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WordType {
    /// `address`: 12 zero bytes, then 20.
    Address,
    /// `bool`: 0 or 1.
    Bool,
    /// `uintN` with N bits (8..=256, a multiple of 8).
    Uint(u16),
    /// `intN` with N bits (8..=256, a multiple of 8), two's complement.
    Int(u16),
    /// `bytesN` with N bytes (1..=32), left-aligned.
    FixedBytes(u8),
}

/// A parameter type of a listed function.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ParamType {
    /// One word, in place.
    Word(WordType),
    /// `bytes`: dynamic byte string.
    Bytes,
    /// `string`: dynamic byte string (not checked for UTF-8, as contracts do not).
    String,
    /// `T[]` of a one-word `T`.
    Array(WordType),
}

/// A decoded argument.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Value {
    /// An `address`.
    Address(Address),
    /// A `bool`.
    Bool(bool),
    /// A `uintN`.
    Uint(U256),
    /// An `intN`, as its 32-byte two's-complement word.
    Int([u8; 32]),
    /// A `bytesN`: its N bytes.
    FixedBytes(Vec<u8>),
    /// `bytes` or `string`.
    Bytes(Vec<u8>),
    /// `T[]`.
    Array(Vec<Value>),
}

/// A function a policy lists, parsed from its canonical signature.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Function {
    signature: String,
    selector: [u8; 4],
    params: Vec<ParamType>,
}

impl WordType {
    fn parse(s: &str) -> Option<WordType> {
        let bits = |digits: &str| -> Option<u16> {
            let n: u16 = digits.parse().ok()?;
            // Canonical: no leading zeros or signs (`uint08` is not a type).
            (n.to_string() == digits && n.is_multiple_of(8) && (8..=256).contains(&n)).then_some(n)
        };
        match s {
            "address" => Some(WordType::Address),
            "bool" => Some(WordType::Bool),
            _ => {
                if let Some(d) = s.strip_prefix("uint") {
                    bits(d).map(WordType::Uint)
                } else if let Some(d) = s.strip_prefix("int") {
                    bits(d).map(WordType::Int)
                } else if let Some(d) = s.strip_prefix("bytes") {
                    let n: u8 = d.parse().ok()?;
                    (n.to_string() == d && (1..=32).contains(&n)).then_some(WordType::FixedBytes(n))
                } else {
                    None
                }
            }
        }
    }

    /// Reads one word of this type; `None` if it is not in canonical form.
    fn decode(self, w: &[u8; 32]) -> Option<Value> {
        let zero = |b: &[u8]| b.iter().all(|&x| x == 0);
        match self {
            WordType::Address => {
                zero(&w[..12]).then(|| Value::Address(Address::from_slice(&w[12..])))
            }
            WordType::Bool => (zero(&w[..31]) && w[31] <= 1).then_some(Value::Bool(w[31] == 1)),
            WordType::Uint(bits) => {
                let pad = 32 - usize::from(bits / 8);
                zero(&w[..pad]).then(|| Value::Uint(U256::from_be_bytes(*w)))
            }
            WordType::Int(bits) => {
                let pad = 32 - usize::from(bits / 8);
                // Sign extension: every padding byte repeats the sign bit.
                let fill = if w[pad] & 0x80 == 0 { 0x00 } else { 0xff };
                w[..pad]
                    .iter()
                    .all(|&b| b == fill)
                    .then_some(Value::Int(*w))
            }
            WordType::FixedBytes(n) => {
                let n = usize::from(n);
                zero(&w[n..]).then(|| Value::FixedBytes(w[..n].to_vec()))
            }
        }
    }
}

impl ParamType {
    fn parse(s: &str) -> Result<ParamType, String> {
        let alias = |t: &str| match t {
            "uint" => Some("uint256"),
            "int" => Some("int256"),
            "byte" => Some("bytes1"),
            _ => None,
        };
        if s.starts_with('(') || s.contains(')') {
            return Err(format!(
                "{s:?}: tuple (struct) parameters are not supported: list a function whose parameters are address, bool, uintN, intN, bytesN, bytes, string or T[] of those"
            ));
        }
        let (base, array) = match s.strip_suffix("[]") {
            Some(b) => (b, true),
            None => (s, false),
        };
        if base.contains('[') || base.contains(']') {
            return Err(format!(
                "{s:?}: fixed-size and nested arrays are not supported (only T[] of a one-word type)"
            ));
        }
        if let Some(canonical) = alias(base) {
            return Err(format!(
                "{s:?}: write the canonical type {canonical} (the selector is computed from the canonical signature)"
            ));
        }
        let ty = match (base, WordType::parse(base)) {
            (_, Some(w)) if array => ParamType::Array(w),
            (_, Some(w)) => ParamType::Word(w),
            ("bytes" | "string", None) if array => {
                return Err(format!(
                    "{s:?}: arrays of dynamic types are not supported (only T[] of a one-word type)"
                ))
            }
            ("bytes", None) => ParamType::Bytes,
            ("string", None) => ParamType::String,
            _ => {
                return Err(format!(
                    "unknown or unsupported type {s:?} (supported: address, bool, uint8..uint256, int8..int256, bytes1..bytes32, bytes, string, and T[] of a one-word type)"
                ))
            }
        };
        Ok(ty)
    }
}

impl std::fmt::Display for WordType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            WordType::Address => f.write_str("address"),
            WordType::Bool => f.write_str("bool"),
            WordType::Uint(n) => write!(f, "uint{n}"),
            WordType::Int(n) => write!(f, "int{n}"),
            WordType::FixedBytes(n) => write!(f, "bytes{n}"),
        }
    }
}

impl std::fmt::Display for ParamType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ParamType::Word(w) => write!(f, "{w}"),
            ParamType::Bytes => f.write_str("bytes"),
            ParamType::String => f.write_str("string"),
            ParamType::Array(w) => write!(f, "{w}[]"),
        }
    }
}

fn word_at(body: &[u8], at: usize) -> Option<&[u8; 32]> {
    body.get(at..at.checked_add(32)?)
        .and_then(|s| <&[u8; 32]>::try_from(s).ok())
}

/// A word holding an offset or a length, as a `usize`; `None` if larger.
fn small(w: &[u8; 32]) -> Option<usize> {
    let (high, low) = w.split_at(24);
    if high.iter().any(|&b| b != 0) {
        return None;
    }
    let mut b = [0u8; 8];
    b.copy_from_slice(low);
    usize::try_from(u64::from_be_bytes(b)).ok()
}

/// A function signature [`Function::parse`] refuses: what is not canonical
/// or not supported, in words an operator can act on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct SignatureError(String);

impl Function {
    /// Parses a canonical signature `name(type,type,...)`, without spaces
    /// or parameter names.
    ///
    /// # Errors
    /// [`SignatureError`], naming what is not canonical or not supported.
    pub fn parse(signature: &str) -> Result<Function, SignatureError> {
        Function::parse_text(signature).map_err(SignatureError)
    }

    fn parse_text(signature: &str) -> Result<Function, String> {
        let Some((name, rest)) = signature.split_once('(') else {
            return Err(format!(
                "{signature:?} is not a function signature: write name(type,...), e.g. \"swapExactTokensForTokens(uint256,uint256,address[],address,uint256)\""
            ));
        };
        let Some(list) = rest.strip_suffix(')') else {
            return Err(format!("{signature:?}: the signature must end with ')'"));
        };
        let ident = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == '$';
        if name.is_empty()
            || name.starts_with(|c: char| c.is_ascii_digit())
            || !name.chars().all(ident)
        {
            return Err(format!(
                "{signature:?}: {name:?} is not a Solidity function name"
            ));
        }
        if signature.chars().any(char::is_whitespace) {
            return Err(format!(
                "{signature:?}: write the canonical signature, without spaces or parameter names"
            ));
        }
        let params = if list.is_empty() {
            Vec::new()
        } else {
            list.split(',')
                .map(ParamType::parse)
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| format!("{signature:?}: {e}"))?
        };
        let hash = keccak256(signature.as_bytes());
        let mut selector = [0u8; 4];
        selector.copy_from_slice(&hash[..4]);
        Ok(Function {
            signature: signature.to_owned(),
            selector,
            params,
        })
    }

    /// The canonical signature.
    pub fn signature(&self) -> &str {
        &self.signature
    }

    /// The 4-byte selector: the start of keccak-256 of the signature.
    pub fn selector(&self) -> [u8; 4] {
        self.selector
    }

    /// The parameter types, in order.
    pub fn params(&self) -> &[ParamType] {
        &self.params
    }

    /// Decodes `calldata` (selector included) as exactly this function's
    /// canonical ABI encoding.
    ///
    /// # Errors
    /// [`ChainError::Invalid`] naming the argument or the byte range that
    /// does not decode.
    pub fn decode(&self, calldata: &[u8]) -> Result<Vec<Value>, ChainError> {
        let sig = &self.signature;
        if calldata.get(..4) != Some(&self.selector[..]) {
            return Err(invalid(format!(
                "calldata does not start with the selector 0x{} of {sig}",
                hex::encode(self.selector)
            )));
        }
        let body = &calldata[4..];
        let head = 32 * self.params.len();
        if body.len() < head {
            return Err(invalid(format!(
                "truncated calldata: {sig} needs at least {} bytes, got {}",
                4 + head,
                calldata.len()
            )));
        }
        let mut tail = head;
        let mut out = Vec::with_capacity(self.params.len());
        for (i, p) in self.params.iter().enumerate() {
            let bad =
                |what: &str| invalid(format!("argument {i} (counted from 0) of {sig}: {what}"));
            // In range: `body` holds the whole head.
            let w = word_at(body, 32 * i).ok_or_else(|| bad("missing"))?;
            let elem = match p {
                ParamType::Word(t) => {
                    out.push(t.decode(w).ok_or_else(|| bad(&dirty(*t)))?);
                    continue;
                }
                ParamType::Array(t) => Some(*t),
                ParamType::Bytes | ParamType::String => None,
            };
            let start = small(w);
            if start != Some(tail) {
                return Err(bad(&format!(
                    "its data offset is not {tail}, where the standard encoding places it"
                )));
            }
            let len = word_at(body, tail)
                .and_then(small)
                .ok_or_else(|| bad("its length is missing or too large"))?;
            let data = tail + 32;
            let room = body.len() - data.min(body.len());
            match elem {
                Some(t) => {
                    if len > room / 32 {
                        return Err(bad(&format!("{len} elements do not fit in the calldata")));
                    }
                    let mut items = Vec::with_capacity(len);
                    for k in 0..len {
                        let e = word_at(body, data + 32 * k).ok_or_else(|| bad("truncated"))?;
                        items.push(
                            t.decode(e)
                                .ok_or_else(|| bad(&format!("element {k}: {}", dirty(t))))?,
                        );
                    }
                    out.push(Value::Array(items));
                    tail = data + 32 * len;
                }
                None => {
                    let padded = len.div_ceil(32) * 32;
                    if padded > room {
                        return Err(bad(&format!("{len} bytes do not fit in the calldata")));
                    }
                    let bytes = &body[data..data + padded];
                    if bytes[len..].iter().any(|&b| b != 0) {
                        return Err(bad("its padding is not zero"));
                    }
                    out.push(Value::Bytes(bytes[..len].to_vec()));
                    tail = data + padded;
                }
            }
        }
        if body.len() != tail {
            return Err(invalid(format!(
                "calldata for {sig} has {} bytes after its arguments",
                body.len() - tail
            )));
        }
        Ok(out)
    }
}

fn dirty(t: WordType) -> String {
    match t {
        WordType::Address => "not an address (its 12 high bytes are not zero)".into(),
        WordType::Bool => "not a bool (must be 0 or 1)".into(),
        WordType::Uint(n) => format!("does not fit uint{n}"),
        WordType::Int(n) => format!("is not a sign-extended int{n}"),
        WordType::FixedBytes(n) => format!("bytes{n} with nonzero bytes after the first {n}"),
    }
}

#[cfg(test)]
mod tests;
