//! Claims: an entry in a shared set, held until its guard drops.
//!
//! The node uses them for "at most one at a time" rules: one keygen per key
//! id, one run of a signing request, one aux-info run.

use std::collections::HashSet;
use std::hash::Hash;
use std::sync::{Arc, Mutex};

/// A set of claimed values.
pub struct ClaimSet<K: Hash + Eq + Clone>(Arc<Mutex<HashSet<K>>>);

/// A held claim; releases its value when dropped.
pub struct Claim<K: Hash + Eq + Clone> {
    set: Arc<Mutex<HashSet<K>>>,
    value: K,
}

impl<K: Hash + Eq + Clone> Default for ClaimSet<K> {
    fn default() -> Self {
        Self(Arc::new(Mutex::new(HashSet::new())))
    }
}

impl<K: Hash + Eq + Clone> ClaimSet<K> {
    /// Claims `value`; `None` if it is already claimed (or, with
    /// `exclusive`, if anything is).
    pub fn try_claim(&self, value: K, exclusive: bool) -> Option<Claim<K>> {
        let mut s = self.0.lock().ok()?;
        if exclusive && !s.is_empty() {
            return None;
        }
        s.insert(value.clone()).then(|| Claim {
            set: self.0.clone(),
            value,
        })
    }

    /// Whether `value` is claimed now.
    pub fn is_claimed(&self, value: &K) -> bool {
        self.0.lock().map(|s| s.contains(value)).unwrap_or(false)
    }
}

impl<K: Hash + Eq + Clone> Drop for Claim<K> {
    fn drop(&mut self) {
        if let Ok(mut s) = self.set.lock() {
            s.remove(&self.value);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[allow(non_snake_case)]
    fn claim__should_be_held_until_dropped() {
        let set = ClaimSet::default();
        let a = set.try_claim(1, false).expect("free");
        assert!(set.try_claim(1, false).is_none(), "held");
        assert!(
            set.try_claim(2, true).is_none(),
            "exclusive refuses while any is held"
        );
        let b = set.try_claim(2, false).expect("other values are free");
        drop(a);
        assert!(!set.is_claimed(&1));
        assert!(set.is_claimed(&2));
        drop(b);
        assert!(set.try_claim(3, true).is_some());
    }
}
