//! CBOR decoding of engine types, from peers (protocol messages) and from
//! disk (key shares, aux info, presignatures), with the big-integer checks
//! the engines' own decoders lack.
//!
//! Re-exported as `ecdsa::decode_cbor` and `ecdsa::MAX_INTEGER_BITS`; it
//! sits below both `ecdsa` and `session`, which decode with it.

/// Decodes CBOR from a peer (a protocol message) or from disk (a key share,
/// aux info, a presignature) into an engine type.
///
/// The engines' big integers (fast-paillier) deserialize from
/// `{radix, value}` and pass the radix to `from_str_radix`, which panics
/// for a radix outside 2..=36, with either big-integer backend. So the bytes
/// are first read as a plain CBOR value and refused if they hold such a
/// radix (as a map entry, or as the first of a two-element array, the other
/// shape serde accepts for that struct); only then are they decoded into `T`.
/// Found by the `peer_payload` fuzz target.
pub fn decode_cbor<T: serde::de::DeserializeOwned>(b: &[u8]) -> Result<T, CborError> {
    // Every item, not only the first: ciborium reads an enum written as a
    // variant name followed by its content as two items.
    let mut rest = b;
    while !rest.is_empty() {
        let value: ciborium::Value =
            ciborium::from_reader(&mut rest).map_err(|e| CborError::Malformed(e.to_string()))?;
        check_radixes(&value)?;
    }
    ciborium::from_reader(b).map_err(|e| CborError::Malformed(e.to_string()))
}

/// Why [`decode_cbor`] refused its bytes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CborError {
    /// Not CBOR, or not the shape of the expected type (ciborium's words).
    #[error("{0}")]
    Malformed(String),
    /// A big integer written with a radix the engines' decoder would
    /// panic on.
    #[error("big integer with a radix outside 2..=36")]
    Radix,
    /// A big integer over [`MAX_INTEGER_BITS`].
    #[error("big integer longer than {MAX_INTEGER_BITS} bits")]
    TooLong,
}

/// Longest big integer accepted in any engine message or stored record.
/// An honest one is at most a Paillier ciphertext (N², 6 144 bits) or a
/// proof value of about N·N̂·2^(ℓ+ε) (6 912 bits). Peers' proof values are
/// exponents in modular exponentiations that no timeout interrupts: without
/// a bound, one message of the payload limit (1 MiB) would hold an exponent
/// of millions of bits and keep a core busy for minutes.
pub const MAX_INTEGER_BITS: u32 = 8192;

/// Refuses any big integer with a radix outside 2..=36 or more than
/// [`MAX_INTEGER_BITS`] bits (see [`decode_cbor`]). Recursion depth is
/// bounded by ciborium's nesting limit on the value.
fn check_radixes(v: &ciborium::Value) -> Result<(), CborError> {
    use ciborium::Value;
    fn untag(mut v: &Value) -> &Value {
        while let Value::Tag(_, inner) = v {
            v = inner;
        }
        v
    }
    let radix_of = |r: &Value| match untag(r) {
        Value::Integer(i) => Some(i128::from(*i)),
        _ => None, // not an integer: serde refuses it without panicking
    };
    // A number written as `{radix, value}` or `[radix, value]`.
    let check = |radix: Option<i128>, digits: Option<&str>| -> Result<(), CborError> {
        let Some(radix) = radix else { return Ok(()) };
        if !(2..=36).contains(&radix) {
            return Err(CborError::Radix);
        }
        if let Some(d) = digits {
            // Bits per digit: log2(radix), at least 1 (radix 2..=36).
            let bits_per_digit = (radix as f64).log2();
            let digits = d
                .trim_start_matches(['-', '+'])
                .trim_start_matches('0')
                .len();
            if (digits as f64 - 1.0) * bits_per_digit >= f64::from(MAX_INTEGER_BITS) {
                return Err(CborError::TooLong);
            }
        }
        Ok(())
    };
    let key_is = |k: &Value, name: &str| match untag(k) {
        Value::Text(t) => t == name,
        Value::Bytes(b) => b == name.as_bytes(),
        _ => false,
    };
    match untag(v) {
        Value::Map(entries) => {
            let radix = entries.iter().find(|(k, _)| key_is(k, "radix"));
            if let Some((_, r)) = radix {
                let digits = entries
                    .iter()
                    .find(|(k, _)| key_is(k, "value"))
                    .and_then(|(_, d)| untag(d).as_text());
                // A radix that is not an integer is refused by serde.
                check(radix_of(r), digits)?;
            }
            for (k, val) in entries {
                check_radixes(k)?;
                check_radixes(val)?;
            }
            Ok(())
        }
        Value::Array(items) => {
            if let [r, Value::Text(d)] = items.as_slice() {
                check(radix_of(r), Some(d))?;
            }
            items.iter().try_for_each(check_radixes)
        }
        _ => Ok(()),
    }
}
