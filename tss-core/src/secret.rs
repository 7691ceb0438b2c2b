//! Secret bytes: zeroized on drop, never printed.

use std::fmt;

use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

/// Secret bytes (serialized key shares, primes, passphrases, private keys).
///
/// Zeroized on drop; `Debug` prints `<redacted>`; not `Clone`, so that a copy
/// is always an explicit decision.
#[derive(Zeroize, ZeroizeOnDrop, PartialEq, Eq)]
pub struct SecretBytes(Vec<u8>);

impl SecretBytes {
    /// Wraps bytes that are already secret.
    pub fn new(bytes: Vec<u8>) -> Self {
        Self(bytes)
    }

    /// Reads the secret. Keep the borrow short and do not copy it out.
    pub fn expose(&self) -> &[u8] {
        &self.0
    }

    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether it holds no bytes.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl From<Zeroizing<Vec<u8>>> for SecretBytes {
    fn from(mut z: Zeroizing<Vec<u8>>) -> Self {
        Self(std::mem::take(&mut *z))
    }
}

impl fmt::Debug for SecretBytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// A store passphrase. Comes from a file or an environment variable, never
/// from the command line.
#[derive(Zeroize, ZeroizeOnDrop)]
pub struct Passphrase(String);

impl Passphrase {
    /// Wraps a passphrase; trailing newlines (from files) are removed.
    pub fn new(mut s: String) -> Self {
        while s.ends_with('\n') || s.ends_with('\r') {
            s.pop();
        }
        Self(s)
    }

    /// The passphrase bytes.
    pub fn expose(&self) -> &[u8] {
        self.0.as_bytes()
    }
}

impl fmt::Debug for Passphrase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug__should_not_print_secret_bytes() {
        let s = SecretBytes::new(b"super secret share".to_vec());
        assert_eq!(format!("{s:?}"), "<redacted>");
        let p = Passphrase::new("hunter2\n".into());
        assert_eq!(format!("{p:?}"), "<redacted>");
        assert_eq!(p.expose(), b"hunter2");
    }
}
