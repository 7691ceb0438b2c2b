//! Safe primes for Paillier keys.
//!
//! Aux-info generation needs four 1536-bit safe primes per party. Finding them
//! takes several seconds even with a sieve ([`generate_safe_prime`]), so
//! nodes keep a sealed pool filled in the background ([`generate`] runs the
//! search on several threads). The encoding here ([`encode`]/[`decode`]) is
//! backend-independent: big-endian bytes, so a pool written by the pure-Rust
//! build loads in the GMP build.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, OnceLock};

use cggmp24::backend::{Integer, IsPrime};
use cggmp24::security_level::SecurityLevel128;
use rand_core::OsRng;
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

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
    // The engine checks the lower bound; a longer prime would make a modulus
    // that every peer refuses as over-long (`ecdsa::aux`).
    if ints
        .iter()
        .any(|p| p.significant_bits() > u64::from(PRIME_BITS))
    {
        return Err(PrimesError::Malformed(format!(
            "a prime is longer than {PRIME_BITS} bits"
        )));
    }
    Primes::try_from(ints).map_err(|_| PrimesError::TooSmall)
}

/// Generates four safe primes of [`PRIME_BITS`] bits on `threads` OS threads.
///
/// Every thread searches for the next missing prime from its own random
/// start (see [`generate_safe_prime`]); all stop as soon as four are found.
/// CPU-heavy (5 to 15 s on two cores, GMP or pure Rust): never call it on an
/// async reactor thread.
pub fn generate(threads: usize) -> Primes {
    let primes = sieve_primes(PRIME_BITS);
    let stop = AtomicBool::new(false);
    let found = Mutex::new(Vec::with_capacity(4));
    std::thread::scope(|s| {
        for _ in 0..threads.max(1) {
            s.spawn(|| {
                while let Some(p) = search(PRIME_BITS, primes, &stop) {
                    let Ok(mut f) = found.lock() else {
                        stop.store(true, Ordering::Relaxed);
                        return;
                    };
                    if f.len() < 4 {
                        f.push(p);
                    }
                    if f.len() >= 4 {
                        stop.store(true, Ordering::Relaxed);
                    }
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

/// Smallest size [`generate_safe_prime`] accepts.
pub const MIN_SAFE_PRIME_BITS: u32 = 16;

/// Odd primes below this bound are sieved out of every candidate q and 2q+1.
///
/// A larger bound leaves fewer candidates for the Fermat test but costs one
/// residue per sieve prime and window. At 1536 bits, going from 2^16 to 2^23
/// (564 162 primes, ~0.1 s of sieving per window) cuts the Fermat tests per
/// safe prime from ~2 900 to ~1 400; beyond 2^23 the sieve eats the gain, with
/// either backend.
const SIEVE_BOUND: u32 = 1 << 23;

/// Candidates q0 + 2k for k below this are sieved from one random start q0.
/// A 1536-bit safe prime turns up about every 430 000 odd numbers, so most
/// searches end in their first window.
const WINDOW: usize = 1 << 20;

/// Rounds asked of the backend's own primality test (as in fast-paillier; the
/// pure-Rust backend picks its own count).
const PRIMALITY_REPS: u32 = 25;

/// Generates a random safe prime p = 2q + 1 of exactly `bits` bits.
///
/// Starts at a random odd q0 of `bits - 1` bits and walks q = q0 + 2k: a
/// sieve drops every k for which a small odd prime divides q or 2q + 1, a
/// base-2 Fermat test on q and then on p drops almost all of the rest, and
/// the backend's full primality test must accept both q and p. p is always
/// 3 mod 4. Each call draws a fresh start from the OS RNG, so two results are
/// independent (in particular never close to each other).
///
/// # Panics
/// If `bits` is below [`MIN_SAFE_PRIME_BITS`].
pub fn generate_safe_prime(bits: u32) -> Integer {
    assert!(
        bits >= MIN_SAFE_PRIME_BITS,
        "safe primes of {bits} bits are not supported"
    );
    let never = AtomicBool::new(false);
    match search(bits, sieve_primes(bits), &never) {
        Some(p) => p,
        None => unreachable!("the search gives up only when told to stop"),
    }
}

/// Searches for a safe prime of `bits` bits; `None` once `stop` is set.
fn search(bits: u32, primes: &[u32], stop: &AtomicBool) -> Option<Integer> {
    loop {
        let mut q0 = Integer::random_bits(bits - 1, &mut OsRng);
        q0.set_bit(bits - 2, true);
        q0.set_bit(0, true);
        let rejected = sieve(&q0, primes, WINDOW);
        for k in (0..WINDOW).filter(|&k| rejected[k / 64] & (1 << (k % 64)) == 0) {
            if stop.load(Ordering::Relaxed) {
                return None;
            }
            // k < WINDOW, so 2k fits in a u64.
            let q = &q0 + 2 * k as u64;
            if q.significant_bits() >= u64::from(bits) {
                // Walked past `bits - 1` bits: start again elsewhere.
                break;
            }
            if !fermat_base_2(&q) {
                continue;
            }
            let p = (&q << 1u32) + 1u32;
            // If q is prime, p passing base 2 proves p prime (Pocklington:
            // p - 1 = 2q with q > sqrt(p), and 3 does not divide p); the
            // backend's full test still has the last word on both.
            if fermat_base_2(&p) && is_probably_prime(&q) && is_probably_prime(&p) {
                return Some(p);
            }
        }
    }
}

/// Whether 2^(n-1) = 1 (mod n), for odd n > 2.
fn fermat_base_2(n: &Integer) -> bool {
    Integer::from(2u32)
        .pow_mod_ref(&(n - 1u32), n)
        .is_some_and(|r| r.is_one())
}

fn is_probably_prime(n: &Integer) -> bool {
    !matches!(n.is_probably_prime(PRIMALITY_REPS, &mut OsRng), IsPrime::No)
}

/// Odd primes to sieve with for `bits`-bit safe primes: those below
/// [`SIEVE_BOUND`] and below every candidate q (>= 2^(bits-2)), so that a
/// sieve prime is never q or 2q + 1 itself.
fn sieve_primes(bits: u32) -> &'static [u32] {
    static PRIMES: OnceLock<Vec<u32>> = OnceLock::new();
    let all = PRIMES.get_or_init(|| odd_primes_below(SIEVE_BOUND));
    let below = 1u64 << (bits - 2).min(40);
    &all[..all.partition_point(|&r| u64::from(r) < below)]
}

/// Odd primes below `bound`, by the sieve of Eratosthenes over odd numbers.
fn odd_primes_below(bound: u32) -> Vec<u32> {
    // Index i stands for 2i + 1.
    let n = bound as usize / 2;
    let mut composite = vec![false; n];
    let mut primes = Vec::new();
    for i in 1..n {
        if !composite[i] {
            let r = 2 * i + 1;
            primes.push(r as u32);
            // Odd multiples of r from r^2 on: indices (r^2 - 1)/2 + j*r.
            for j in ((r * r - 1) / 2..n).step_by(r) {
                composite[j] = true;
            }
        }
    }
    primes
}

/// Bitset over k in `0..window`: bit k is set when some prime r in `primes`
/// divides q = q0 + 2k or 2q + 1. q0 must be odd.
fn sieve(q0: &Integer, primes: &[u32], window: usize) -> Vec<u64> {
    // q0 as 32-bit digits, most significant first.
    let bytes = Zeroizing::new(q0.to_bytes_msf());
    let digits: Zeroizing<Vec<u32>> = Zeroizing::new(
        bytes
            .rchunks(4)
            .rev()
            .map(|c| c.iter().fold(0, |d, &b| (d << 8) | u32::from(b)))
            .collect(),
    );
    let mut rejected = vec![0u64; window.div_ceil(64)];
    for &r in primes {
        let r = u64::from(r);
        let a = Reducer::new(r).residue(&digits);
        // r divides q when 2k = -a, and 2q + 1 when 2k = (r - 1)/2 - a
        // (mod r); half = (r + 1)/2 is the inverse of 2 mod r (r is odd).
        let half = r / 2 + 1;
        let divides_q = (r - a) % r * half % r;
        let divides_p = (r / 2 + r - a) % r * half % r;
        for start in [divides_q, divides_p] {
            // start < r < 2^32.
            for k in (start as usize..window).step_by(r as usize) {
                rejected[k / 64] |= 1 << (k % 64);
            }
        }
    }
    rejected
}

/// Reduction modulo a fixed r < 2^32 by multiplication (Barrett), which is
/// several times faster than a hardware division.
struct Reducer {
    r: u64,
    /// floor((2^64 - 1) / r).
    m: u64,
}

impl Reducer {
    fn new(r: u64) -> Self {
        Self { r, m: u64::MAX / r }
    }

    /// x mod r, for any x.
    fn reduce(&self, x: u64) -> u64 {
        // The estimate undershoots the quotient by at most 2.
        let q = ((u128::from(x) * u128::from(self.m)) >> 64) as u64;
        let mut rem = x - q * self.r;
        while rem >= self.r {
            rem -= self.r;
        }
        rem
    }

    /// The number with these 32-bit digits (most significant first), mod r.
    fn residue(&self, digits: &[u32]) -> u64 {
        digits
            .iter()
            .fold(0, |acc, &d| self.reduce((acc << 32) | u64::from(d)))
    }
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

    #[test]
    fn generate_safe_prime__should_return_safe_primes_of_the_requested_size() {
        for bits in [MIN_SAFE_PRIME_BITS, 64, 256, 512] {
            // When
            let p = generate_safe_prime(bits);

            // Then
            assert_eq!(p.significant_bits(), u64::from(bits));
            assert_eq!(p.mod_u(4), 3);
            assert!(is_probably_prime(&p), "{bits}-bit p is not prime");
            let q = (&p - 1u32) >> 1u32;
            assert!(
                is_probably_prime(&q),
                "(p-1)/2 of {bits}-bit p is not prime"
            );
        }
    }

    #[test]
    fn generate_safe_prime__should_not_repeat_itself() {
        assert_ne!(generate_safe_prime(256), generate_safe_prime(256));
    }

    #[test]
    fn sieve__should_reject_exactly_the_candidates_with_a_small_factor() {
        // Given a random odd start and the primes below 1000
        let mut q0 = Integer::random_bits(255, &mut OsRng);
        q0.set_bit(254, true);
        q0.set_bit(0, true);
        let primes = odd_primes_below(1000);

        // When
        let window = 3000;
        let rejected = sieve(&q0, &primes, window);

        // Then a candidate is rejected iff a prime divides q or 2q + 1
        for k in 0..window {
            let q = &q0 + 2 * k as u64;
            let p = (&q << 1u32) + 1u32;
            let has_factor = primes.iter().any(|&r| q.mod_u(r) == 0 || p.mod_u(r) == 0);
            let is_rejected = rejected[k / 64] & (1 << (k % 64)) != 0;
            assert_eq!(is_rejected, has_factor, "k = {k}");
        }
    }

    #[test]
    fn sieve__should_reject_q_when_2q_plus_1_has_a_small_factor() {
        // Given q = 2^255 - 19, a prime (Curve25519's field) that passes the
        // Fermat test, while 2q + 1 = 2^256 - 37 is divisible by 3
        let q = (Integer::one() << 255u32) - 19u32;
        assert!(is_probably_prime(&q) && fermat_base_2(&q));
        assert_eq!(((&q << 1u32) + 1u32).mod_u(3), 0);

        // When
        let rejected = sieve(&q, sieve_primes(256), 1);

        // Then
        assert_eq!(rejected[0] & 1, 1);
    }

    #[test]
    fn sieve__should_reject_q_with_a_small_factor() {
        // Given q = 7 * (2^255 - 19)
        let q = ((Integer::one() << 255u32) - 19u32) * 7u32;

        // When / Then
        assert_eq!(sieve(&q, &[5, 7, 11], 1)[0] & 1, 1);
        assert_eq!(sieve(&q, &[5, 11], 1)[0] & 1, 0);
    }

    #[test]
    fn sieve__should_keep_known_safe_primes() {
        // Given the fixture primes, made by fast-paillier's generator
        let fixtures = fixtures_from_text(include_str!(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../tests/fixtures/primes.test-only.txt"
        )))
        .unwrap();

        for p in fixtures.iter().flat_map(|set| set.primes_ref()) {
            // When
            let q = (p - 1u32) >> 1u32;
            let rejected = sieve(&q, sieve_primes(PRIME_BITS), 1);

            // Then
            assert_eq!(rejected[0] & 1, 0);
            assert!(fermat_base_2(&q) && fermat_base_2(p));
        }
    }

    #[test]
    fn reducer__should_agree_with_division() {
        let mut rng = rand::thread_rng();
        for &r in [3, 5, 65_521, SIEVE_BOUND - 3, u32::MAX].iter() {
            let reducer = Reducer::new(u64::from(r));
            for x in [0, 1, u64::from(r) - 1, u64::from(r), u64::MAX]
                .into_iter()
                .chain((0..1000).map(|_| rand::Rng::gen::<u64>(&mut rng)))
            {
                assert_eq!(reducer.reduce(x), x % u64::from(r), "{x} mod {r}");
            }
        }
    }

    #[test]
    fn odd_primes_below__should_list_the_odd_primes() {
        assert_eq!(odd_primes_below(30), [3, 5, 7, 11, 13, 17, 19, 23, 29]);
        assert_eq!(odd_primes_below(31), [3, 5, 7, 11, 13, 17, 19, 23, 29]);
        assert_eq!(odd_primes_below(32).last(), Some(&31));
        // pi(2^23) = 564 163, and 2 is left out.
        assert_eq!(sieve_primes(PRIME_BITS).len(), 564_162);
        assert_eq!(sieve_primes(16), odd_primes_below(1 << 14));
    }

    #[test]
    fn generate__should_return_four_distinct_safe_primes() {
        // When
        let primes = generate(2).into_primes();

        // Then
        for p in &primes {
            assert_eq!(p.significant_bits(), u64::from(PRIME_BITS));
            assert!(is_probably_prime(p));
            assert!(is_probably_prime(&((p - 1u32) >> 1u32)));
        }
        for (i, a) in primes.iter().enumerate() {
            assert!(primes[i + 1..].iter().all(|b| a != b));
        }
        assert!(decode(encode(&Primes::try_from(primes).unwrap()).expose()).is_ok());
    }
}
