//! What this node released, for the policy's rolling 24-hour limits.
//!
//! Every allowed request that moves value reserves its amounts while it is
//! being signed; the reservation becomes a sealed record
//! ([`RecordKind::Spend`]) only when this node releases its part (the
//! coordinator returns the signature, a co-signer issues its partial
//! signature), and vanishes if nothing was released. Records are keyed by
//! transaction, so signing the same transaction again (another request id,
//! or the next input of the same PSBT) counts once.
//!
//! Record key: `<key id> 0x00 <chain> 0x00 <asset> 0x00 <transaction id hex>`;
//! value: CBOR `{amount: 32-byte big-endian, unix: seconds}`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use tss_core::chain::eth::U256;
use tss_core::store::{RecordKind, Store, StoreError};

use crate::policy::{Asset, Chain, Charge, Decision, Usage};

/// Length of the rolling window.
pub const WINDOW_SECS: u64 = 24 * 3600;

#[derive(Serialize, Deserialize)]
struct Spent {
    #[serde(with = "serde_bytes")]
    amount: Vec<u8>,
    unix: u64,
}

/// Decodes a spend record's value: `(amount, unix seconds)`. Public for
/// the fuzz targets in `fuzz/`.
#[doc(hidden)]
pub fn decode_record(bytes: &[u8]) -> Result<(U256, u64), String> {
    let s: Spent = ciborium::from_reader(bytes).map_err(|e| format!("not a spend record: {e}"))?;
    // 32 bytes as written; anything longer does not fit a U256.
    let amount = U256::try_from_be_slice(&s.amount)
        .ok_or_else(|| format!("amount is {} bytes, more than 32", s.amount.len()))?;
    Ok((amount, s.unix))
}

struct Held {
    key: String,
    tx: [u8; 32],
    charges: Vec<Charge>,
}

/// Reservations of requests in flight.
#[derive(Default)]
pub struct Ledger {
    held: Mutex<(u64, HashMap<u64, Held>)>,
}

/// The amounts of one allowed request, held until released or dropped.
pub struct Reservation {
    ledger: Arc<Ledger>,
    id: u64,
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn prefix(key: &str, chain: Chain, asset: Asset) -> Vec<u8> {
    format!("{key}\0{chain}\0{asset}\0").into_bytes()
}

fn record_key(key: &str, c: &Charge, tx: &[u8; 32]) -> Vec<u8> {
    let mut k = prefix(key, c.chain, c.asset);
    k.extend_from_slice(hex::encode(tx).as_bytes());
    k
}

/// Usage as seen from the store plus other requests' reservations, leaving
/// out transaction `tx` itself (it counts once).
struct View<'a> {
    store: &'a Store,
    held: &'a HashMap<u64, Held>,
    tx: [u8; 32],
    now: u64,
}

impl View<'_> {
    fn stored(&self, key: &str, chain: Chain, asset: Asset) -> Result<U256, StoreError> {
        let p = prefix(key, chain, asset);
        let own = hex::encode(self.tx);
        let mut total = U256::ZERO;
        for k in self.store.keys_with_prefix(RecordKind::Spend, &p)? {
            if k.ends_with(own.as_bytes()) {
                continue;
            }
            let Some(v) = self.store.get(RecordKind::Spend, &k)? else {
                continue;
            };
            let (amount, unix) =
                decode_record(v.expose()).map_err(|reason| StoreError::Corrupt {
                    kind: RecordKind::Spend.tag(),
                    key: hex::encode(&k),
                    reason,
                })?;
            if unix.saturating_add(WINDOW_SECS) > self.now {
                total = total.saturating_add(amount);
            }
        }
        Ok(total)
    }
}

impl Usage for View<'_> {
    fn used_24h(&self, key: &str, chain: Chain, asset: Asset) -> U256 {
        let stored = match self.stored(key, chain, asset) {
            Ok(t) => t,
            Err(e) => {
                // Fail closed: an unreadable ledger allows nothing that moves value.
                tracing::error!(error = %e, "cannot read the spend ledger; treating the limit as used up");
                return U256::MAX;
            }
        };
        let held = self
            .held
            .values()
            .filter(|h| h.key == key && h.tx != self.tx)
            .flat_map(|h| h.charges.iter())
            .filter(|c| c.chain == chain && c.asset == asset)
            .fold(U256::ZERO, |a, c| a.saturating_add(c.amount));
        stored.saturating_add(held)
    }
}

impl Ledger {
    /// Runs `decide` against the current usage and, if it allows a request
    /// that moves value, reserves the amounts, atomically with respect to
    /// other requests (blocking: reads the store).
    pub fn decide(
        self: &Arc<Self>,
        store: &Store,
        key: &str,
        tx: [u8; 32],
        decide: impl FnOnce(&dyn Usage) -> Decision,
    ) -> (Decision, Option<Reservation>) {
        let mut g = self.held.lock().unwrap_or_else(|p| p.into_inner());
        let view = View {
            store,
            held: &g.1,
            tx,
            now: now(),
        };
        let d = decide(&view);
        if !d.allow || d.charges.is_empty() {
            return (d, None);
        }
        g.0 += 1;
        let id = g.0;
        g.1.insert(
            id,
            Held {
                key: key.to_string(),
                tx,
                charges: d.charges.clone(),
            },
        );
        let r = Reservation {
            ledger: self.clone(),
            id,
        };
        (d, Some(r))
    }
}

impl Reservation {
    /// This node released its part: record the amounts durably (blocking).
    /// A transaction already recorded keeps its first time.
    pub fn commit(self, store: &Store) -> Result<(), StoreError> {
        let held = {
            let mut g = self.ledger.held.lock().unwrap_or_else(|p| p.into_inner());
            g.1.remove(&self.id)
        };
        let Some(h) = held else { return Ok(()) };
        let unix = now();
        for c in &h.charges {
            let mut v = Vec::new();
            let rec = Spent {
                amount: c.amount.to_be_bytes::<32>().to_vec(),
                unix,
            };
            ciborium::into_writer(&rec, &mut v)
                .map_err(|e| StoreError::Io(format!("encoding a spend record: {e}")))?;
            store.insert_new(RecordKind::Spend, &record_key(&h.key, c, &h.tx), &v)?;
        }
        store.flush()
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        let mut g = self.ledger.held.lock().unwrap_or_else(|p| p.into_inner());
        g.1.remove(&self.id);
    }
}
