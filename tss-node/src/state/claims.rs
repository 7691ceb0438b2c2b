//! Claims: an entry in a shared set, held until its guard drops.
//!
//! The node uses them for "at most one at a time" rules ([`Claims`]): one
//! keygen per key id, one run of a signing request, one aux-info run, one
//! request per presignature.

use std::collections::HashSet;
use std::hash::Hash;
use std::sync::{Arc, Mutex};

use tokio::sync::Notify;
use tokio::time::Instant;

use crate::error::ApiError;

/// A set of claimed values.
pub struct ClaimSet<K: Hash + Eq + Clone>(Arc<Shared<K>>);

struct Shared<K> {
    held: Mutex<HashSet<K>>,
    /// Woken whenever a claim is released.
    released: Notify,
}

/// A held claim; releases its value when dropped.
pub struct Claim<K: Hash + Eq + Clone> {
    set: Arc<Shared<K>>,
    value: K,
}

impl<K: Hash + Eq + Clone> Default for ClaimSet<K> {
    fn default() -> Self {
        Self(Arc::new(Shared {
            held: Mutex::new(HashSet::new()),
            released: Notify::new(),
        }))
    }
}

impl<K: Hash + Eq + Clone> ClaimSet<K> {
    /// Claims `value`; `None` if it is already claimed (or, with
    /// `exclusive`, if anything is).
    pub fn try_claim(&self, value: K, exclusive: bool) -> Option<Claim<K>> {
        let mut s = self.0.held.lock().ok()?;
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
        self.0
            .held
            .lock()
            .map(|s| s.contains(value))
            .unwrap_or(false)
    }

    /// Waits until `ready()` holds, looking again each time a claim of this
    /// set is released (never by polling); `false` if `deadline` passes
    /// first. The wake-up is registered before each look, so a release
    /// between the look and the wait is not missed.
    pub async fn wait_until(
        &self,
        deadline: Option<Instant>,
        mut ready: impl FnMut() -> bool,
    ) -> bool {
        loop {
            let released = self.0.released.notified();
            tokio::pin!(released);
            released.as_mut().enable();
            if ready() {
                return true;
            }
            match deadline {
                Some(d) => {
                    if tokio::time::timeout_at(d, released).await.is_err() {
                        return ready();
                    }
                }
                None => released.await,
            }
        }
    }
}

impl<K: Hash + Eq + Clone> Drop for Claim<K> {
    fn drop(&mut self) {
        if let Ok(mut s) = self.set.held.lock() {
            s.remove(&self.value);
        }
        self.set.released.notify_waiters();
    }
}

/// Keeps an aux-info run marked as in progress (see [`Claims::aux_in_progress`]).
pub type AuxGuard = Claim<[u8; 32]>;
/// Holds a signing request claimed (see [`Claims::claim_request`]).
pub type RequestClaim = Claim<[u8; 32]>;
/// Holds a key id reserved for one keygen (see [`Claims::reserve_key`]).
pub type KeyReservation = Claim<String>;

/// The node's one-at-a-time rules.
pub struct Claims {
    name: String,
    aux_runs: ClaimSet<[u8; 32]>,
    keygens: ClaimSet<String>,
    signing: ClaimSet<[u8; 32]>,
    presignatures: ClaimSet<[u8; 32]>,
}

impl Claims {
    /// No claim held; `name` is this node's, for messages.
    pub fn new(name: &str) -> Self {
        Claims {
            name: name.to_owned(),
            aux_runs: ClaimSet::default(),
            keygens: ClaimSet::default(),
            signing: ClaimSet::default(),
            presignatures: ClaimSet::default(),
        }
    }

    /// Marks aux-info run `id` as in progress until the guard drops (after
    /// its result is sealed). `None` if another run is in progress here:
    /// a node takes part in one aux-info run at a time.
    pub fn aux_in_progress(&self, id: [u8; 32]) -> Option<AuxGuard> {
        self.aux_runs.try_claim(id, true)
    }

    /// Whether our part of aux-info run `id` is still in progress.
    pub fn aux_running(&self, id: &[u8; 32]) -> bool {
        self.aux_runs.is_claimed(id)
    }

    /// Waits until our part of aux-info run `id` has ended (its result is
    /// sealed by then, or it failed). Aux-info runs are bounded by their
    /// timeout, so this ends.
    pub async fn aux_ended(&self, id: &[u8; 32]) {
        self.aux_runs
            .wait_until(None, || !self.aux_runs.is_claimed(id))
            .await;
    }

    /// Waits until no keygen of `key_id` runs here; `false` if one still
    /// runs at `deadline`.
    pub async fn keygen_ended(&self, key_id: &str, deadline: Instant) -> bool {
        let k = key_id.to_owned();
        self.keygens
            .wait_until(Some(deadline), || !self.keygens.is_claimed(&k))
            .await
    }

    /// [`Claims::reserve_key`], waiting until `deadline` for a keygen of
    /// the same id to let go.
    pub async fn reserve_key_by(
        &self,
        key_id: &str,
        deadline: Instant,
    ) -> Result<KeyReservation, ApiError> {
        let mut reserved = None;
        self.keygens
            .wait_until(Some(deadline), || {
                reserved = self.reserve_key(key_id).ok();
                reserved.is_some()
            })
            .await;
        match reserved {
            Some(r) => Ok(r),
            None => self.reserve_key(key_id),
        }
    }

    /// Reserves a key id for one keygen at a time (coordinated or joined).
    pub fn reserve_key(&self, key_id: &str) -> Result<KeyReservation, ApiError> {
        self.keygens
            .try_claim(key_id.to_owned(), false)
            .ok_or_else(|| {
                ApiError::Conflict(format!(
                    "a keygen for key {key_id} is already running at {}",
                    self.name
                ))
            })
    }

    /// Whether a keygen of `key_id` runs here now (coordinated or joined).
    pub fn keygen_running(&self, key_id: &str) -> bool {
        self.keygens.is_claimed(&key_id.to_owned())
    }

    /// Claims a signing request (key, request id, digest) while it is being
    /// signed here, so that the same request cannot run twice at once
    /// through two coordinators (any two signer pairs share a party).
    pub fn claim_request(&self, id: [u8; 32]) -> Option<RequestClaim> {
        self.signing.try_claim(id, false)
    }

    /// Claims a presignature id for one coordinator request here.
    pub fn claim_presignature(&self, id: [u8; 32]) -> Option<Claim<[u8; 32]>> {
        self.presignatures.try_claim(id, false)
    }

    /// Whether a presignature id is claimed by a request here now.
    pub fn presignature_claimed(&self, id: &[u8; 32]) -> bool {
        self.presignatures.is_claimed(id)
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

    #[tokio::test]
    #[allow(non_snake_case)]
    async fn wait_until__should_wake_on_release_and_give_up_at_the_deadline() {
        let set = std::sync::Arc::new(ClaimSet::default());
        let held = set.try_claim(7, false).expect("free");
        let soon = Instant::now() + std::time::Duration::from_millis(50);
        assert!(
            !set.wait_until(Some(soon), || !set.is_claimed(&7)).await,
            "still held at the deadline"
        );
        let started = Instant::now();
        let release = tokio::spawn(async move {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            drop(held);
        });
        let far = Instant::now() + std::time::Duration::from_secs(30);
        assert!(set.wait_until(Some(far), || !set.is_claimed(&7)).await);
        assert!(
            started.elapsed() < std::time::Duration::from_secs(10),
            "woken, not timed out"
        );
        release.await.expect("release task");
    }
}
