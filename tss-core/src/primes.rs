//! Safe primes for Paillier keys.
//!
//! Aux-info generation needs four 1536-bit safe primes per party. Finding them
//! takes minutes on one core, so nodes keep a sealed pool filled in the
//! background ([`generate`] spreads the four primes over threads). The
//! encoding here ([`encode`]/[`decode`]) is backend-independent: big-endian
//! bytes, so a pool written by the pure-Rust build loads in the GMP build.

use cggmp24::backend::Integer;
use cggmp24::security_level::SecurityLevel128;
use serde::{Deserialize, Serialize};

use crate::secret::SecretBytes;

/// Four safe primes for one aux-info run, at the security level the node uses.
pub type Primes = cggmp24::PregeneratedPrimes<SecurityLevel128>;

/// Bit length of each prime at our security level.
pub const PRIME_BITS: u32 =
    <SecurityLevel128 as cggmp24::security_level::SecurityLevel>::RSA_PRIME_BITLEN;

/// Errors from decoding stored or fixture primes.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PrimesError {
    /// The bytes are not a primes record.
    #[error("malformed primes record: {0}")]
    Malformed(String),
    /// A number is smaller than the security level requires.
    #[error("a prime is smaller than {PRIME_BITS} bits")]
    TooSmall,
}

#[derive(Serialize, Deserialize)]
struct Encoded {
    v: u8,
    primes: Vec<serde_bytes_vec::Bytes>,
}

mod serde_bytes_vec {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    /// A byte vector serialized as a CBOR byte string.
    pub struct Bytes(pub Vec<u8>);

    impl Serialize for Bytes {
        fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            s.serialize_bytes(&self.0)
        }
    }
    impl<'de> Deserialize<'de> for Bytes {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            struct V;
            impl serde::de::Visitor<'_> for V {
                type Value = Bytes;
                fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                    f.write_str("bytes")
                }
                fn visit_bytes<E: serde::de::Error>(self, v: &[u8]) -> Result<Bytes, E> {
                    Ok(Bytes(v.to_vec()))
                }
            }
            d.deserialize_bytes(V)
        }
    }
}

/// Encodes primes as a versioned CBOR record (secret: seal it before storing).
pub fn encode(primes: &Primes) -> SecretBytes {
    let enc = Encoded {
        v: 1,
        primes: primes
            .primes_ref()
            .iter()
            .map(|p| serde_bytes_vec::Bytes(p.to_bytes_msf()))
            .collect(),
    };
    let mut out = Vec::new();
    // Writing CBOR into a Vec cannot fail.
    ciborium::into_writer(&enc, &mut out).expect("CBOR into Vec");
    SecretBytes::new(out)
}

/// Decodes a record written by [`encode`].
pub fn decode(bytes: &[u8]) -> Result<Primes, PrimesError> {
    let enc: Encoded =
        ciborium::from_reader(bytes).map_err(|e| PrimesError::Malformed(e.to_string()))?;
    if enc.v != 1 {
        return Err(PrimesError::Malformed(format!("unknown version {}", enc.v)));
    }
    let nums: [Vec<u8>; 4] = enc
        .primes
        .into_iter()
        .map(|b| b.0)
        .collect::<Vec<_>>()
        .try_into()
        .map_err(|_| PrimesError::Malformed("expected four primes".into()))?;
    let ints = nums.map(|b| Integer::from_bytes_msf(&b));
    Primes::try_from(ints).map_err(|_| PrimesError::TooSmall)
}

/// Generates four safe primes, spreading them over `threads` OS threads.
///
/// CPU-heavy (minutes with the pure-Rust backend): never call it on an async
/// reactor thread.
pub fn generate(threads: usize) -> Primes {
    let threads = threads.clamp(1, 4);
    let found = std::sync::Mutex::new(Vec::with_capacity(4));
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| loop {
                if found.lock().map(|f| f.len()).unwrap_or(4) >= 4 {
                    return;
                }
                let p = Integer::generate_safe_prime(&mut rand_core::OsRng, PRIME_BITS);
                let Ok(mut f) = found.lock() else { return };
                if f.len() < 4 {
                    f.push(p);
                }
            });
        }
    });
    let found = found
        .into_inner()
        .expect("no thread panicked while holding the lock");
    // Invariants: the threads stop at exactly four primes, each of
    // PRIME_BITS bits, so both conversions succeed.
    let Ok(ints) = <[Integer; 4]>::try_from(found) else {
        unreachable!("exactly four primes were collected")
    };
    let Ok(primes) = Primes::try_from(ints) else {
        unreachable!("generated primes have the required size")
    };
    primes
}

/// Header line of fixture files: they hold primes whose factorisation is
/// public, so anything built on them is insecure.
pub const FIXTURE_HEADER: &str =
    "# TEST ONLY: these safe primes are public. Keys built on them are NOT secure.";

/// Writes primes in the fixture text format: a header, then one hex line per set.
pub fn fixtures_to_text(sets: &[Primes]) -> String {
    let mut s = String::from(FIXTURE_HEADER);
    s.push('\n');
    for p in sets {
        s.push_str(&hex::encode(encode(p).expose()));
        s.push('\n');
    }
    s
}

/// Reads the fixture text format written by [`fixtures_to_text`].
pub fn fixtures_from_text(text: &str) -> Result<Vec<Primes>, PrimesError> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| {
            let b = hex::decode(l).map_err(|e| PrimesError::Malformed(e.to_string()))?;
            decode(&b)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decode__should_refuse_garbage_and_small_numbers() {
        assert!(matches!(
            decode(b"\x00\x01"),
            Err(PrimesError::Malformed(_))
        ));
        let small = Encoded {
            v: 1,
            primes: (0..4).map(|_| serde_bytes_vec::Bytes(vec![7])).collect(),
        };
        let mut b = Vec::new();
        ciborium::into_writer(&small, &mut b).unwrap();
        assert!(matches!(decode(&b), Err(PrimesError::TooSmall)));
    }
}
