//! What this node released, for the policy's rolling 24-hour limits, and
//! the claims each Bitcoin-family transaction was released on.
//!
//! Every allowed request that moves value, and every allowed Bitcoin-family
//! request, reserves its amounts and claims while it is being signed; the
//! reservation becomes sealed records ([`RecordKind::Spend`]) only when this
//! node releases its part (the coordinator returns the signature, a
//! co-signer issues its partial signature), and vanishes if nothing was
//! released. Reservations and records are read under one lock, so what is
//! in flight counts like what is recorded.
//!
//! Charges are keyed by transaction, so signing the same transaction again
//! (another request id, or the next input of the same PSBT) counts once.
//! That is sound only because every signature of a transaction comes from
//! one decision: an Ethereum signing hash commits to the whole transaction,
//! but a Bitcoin-family signature (BIP143) commits only to its own input's
//! amount, and nothing commits to which other inputs are the key's. So the
//! first release of a Bitcoin-family txid binds it to its
//! [`Claims`](crate::policy::Claims) (which inputs are the key's, every
//! input's stated amount) and each of the key's outpoints to its amount; a
//! later request for that txid with other claims, or naming one of those
//! outpoints with another amount, is refused (rule `limits.claims`), in
//! flight as on disk. A replacement transaction (RBF) is a new txid: it is
//! charged again, in full, even though at most one of the two can confirm.
//!
//! Record keys, all beginning `<key id> 0x00 <chain> 0x00`, then:
//! - `<asset> 0x00 <transaction id hex>`: a charge; value CBOR
//!   `{amount: 32-byte big-endian, unix: seconds}`. The asset is `native` or
//!   a `0x` token address; the transaction id is the Ethereum signing hash
//!   or the Bitcoin txid in internal byte order.
//! - `claims 0x00 <txid hex, internal byte order>`: the claims a
//!   Bitcoin-family transaction was first released on; value CBOR
//!   `{hash: 32 bytes, own: [[outpoint, amount], ...], unix: seconds}`.
//! - `outpoint 0x00 <txid:vout, display order>`: one of the key's outpoints
//!   as first released; value CBOR `{amount: u64, tx: txid hex (display
//!   order), unix: seconds}`.
//!
//! The words `claims` and `outpoint` are never an asset, so the charge
//! records of an asset are exactly those under its prefix; records written
//! before claims were recorded read as before; such a Bitcoin-family txid
//! is bound by its next release, which adds its charge to the old one (the
//! old signatures may have been released on other claims). The records of
//! one release are written in one atomic batch, and never expire.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use tss_core::chain::eth::U256;
use tss_core::store::{RecordKind, Store, StoreError};

use crate::keys;
use crate::policy::{Asset, Chain, Charge, Claims, Decision, OwnInput, Usage};

/// Length of the rolling window.
pub const WINDOW_SECS: u64 = 24 * 3600;

/// The rule that refuses a request whose claims differ from recorded ones.
pub const CLAIMS_RULE: &str = "limits.claims";

#[derive(Serialize, Deserialize)]
struct Spent {
    #[serde(with = "serde_bytes")]
    amount: Vec<u8>,
    unix: u64,
}

/// A txid's claims as first released.
#[derive(Serialize, Deserialize)]
struct Bound {
    #[serde(with = "serde_bytes")]
    hash: Vec<u8>,
    own: Vec<(String, u64)>,
    unix: u64,
}

/// One of the key's outpoints as first released.
#[derive(Serialize, Deserialize)]
struct Pinned {
    amount: u64,
    tx: String,
    unix: u64,
}

/// Decodes a spend record's value: `(amount, unix seconds)`. Public for
/// the fuzz targets in `fuzz/`.
#[doc(hidden)]
pub fn decode_record(bytes: &[u8]) -> Result<(U256, u64), SpendRecordError> {
    let s: Spent =
        ciborium::from_reader(bytes).map_err(|e| SpendRecordError::Malformed(e.to_string()))?;
    // 32 bytes as written; anything longer does not fit a U256.
    let amount = U256::try_from_be_slice(&s.amount)
        .ok_or(SpendRecordError::AmountTooLong(s.amount.len()))?;
    Ok((amount, s.unix))
}

/// Why a stored spend record does not decode.
#[doc(hidden)]
#[derive(Debug, thiserror::Error)]
pub enum SpendRecordError {
    /// Not the CBOR of a spend record.
    #[error("not a spend record: {0}")]
    Malformed(String),
    /// An amount that does not fit 256 bits.
    #[error("amount is {0} bytes, more than 32")]
    AmountTooLong(usize),
}

fn cbor(v: &impl Serialize) -> Result<Vec<u8>, StoreError> {
    let mut out = Vec::new();
    ciborium::into_writer(v, &mut out)
        .map_err(|e| StoreError::Io(format!("encoding a spend record: {e}")))?;
    Ok(out)
}

struct Held {
    key: String,
    tx: [u8; 32],
    charges: Vec<Charge>,
    claims: Option<Box<Claims>>,
}

/// Reservations of requests in flight.
#[derive(Default)]
pub struct Ledger {
    held: Mutex<(u64, HashMap<u64, Held>)>,
}

/// The amounts and claims of one allowed request, held until released or
/// dropped.
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
    keys::spend_prefix(key, chain, asset)
}

fn record_key(key: &str, c: &Charge, tx: &[u8; 32]) -> Vec<u8> {
    keys::spend_charge(key, c.chain, c.asset, tx)
}

fn claims_key(key: &str, chain: Chain, txid: &[u8; 32]) -> Vec<u8> {
    keys::spend_claims(key, chain, txid)
}

fn outpoint_key(key: &str, chain: Chain, outpoint: &str) -> Vec<u8> {
    keys::spend_outpoint(key, chain, outpoint)
}

fn corrupt(k: &[u8], reason: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt {
        kind: RecordKind::Spend.tag(),
        key: hex::encode(k),
        reason: reason.to_string(),
    }
}

fn read<T: serde::de::DeserializeOwned>(store: &Store, k: &[u8]) -> Result<Option<T>, StoreError> {
    let Some(v) = store.get(RecordKind::Spend, k)? else {
        return Ok(None);
    };
    ciborium::from_reader(v.expose())
        .map(Some)
        .map_err(|e| corrupt(k, format!("not a claims or outpoint record: {e}")))
}

/// Usage as seen from the store plus other requests' reservations, leaving
/// out transaction `tx` itself (it counts once: its claims are checked).
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
        // The request's own transaction counts once: its record is left
        // out, as the request charges it again. A Bitcoin-family txid
        // charged before claims were recorded keeps its old charge, to
        // which the release adds the new one ([`records`]).
        let skip_own = match chain {
            Chain::Bitcoin(_) => self
                .store
                .contains(RecordKind::Spend, &claims_key(key, chain, &self.tx))?,
            Chain::Ethereum(_) => true,
        };
        let mut total = U256::ZERO;
        for k in self.store.keys_with_prefix(RecordKind::Spend, &p)? {
            if skip_own && k.ends_with(own.as_bytes()) {
                continue;
            }
            let Some(v) = self.store.get(RecordKind::Spend, &k)? else {
                continue;
            };
            let (amount, unix) = decode_record(v.expose()).map_err(|r| corrupt(&k, r))?;
            if unix.saturating_add(WINDOW_SECS) > self.now {
                total = total.saturating_add(amount);
            }
        }
        Ok(total)
    }

    /// Whether `c` agrees with the claims recorded or held for its txid and
    /// its outpoints; else why not, in words.
    fn check_claims(&self, key: &str, c: &Claims) -> Result<Result<(), String>, StoreError> {
        if c.txid != self.tx {
            return Ok(Err(format!(
                "the claims are for tx {}, the request for another transaction (a bug)",
                c.txid_hex
            )));
        }
        let retry = "this node signs a transaction only on the claims it first released it on: send that same PSBT again, or build a new transaction";
        if let Some(b) = read::<Bound>(self.store, &claims_key(key, c.chain, &c.txid))? {
            if b.hash != c.hash {
                let first: Vec<OwnInput> = b
                    .own
                    .into_iter()
                    .map(|(outpoint, value)| OwnInput { outpoint, value })
                    .collect();
                return Ok(Err(format!(
                    "{} tx {} was released at unix {} on other claims: {}; {retry}",
                    c.chain,
                    c.txid_hex,
                    b.unix,
                    c.differs_from(&first)
                )));
            }
        }
        let held = self
            .held
            .values()
            .filter(|h| h.key == key)
            .filter_map(|h| h.claims.as_ref())
            .filter(|h| h.chain == c.chain);
        for h in held.clone() {
            if h.txid == c.txid && h.hash != c.hash {
                return Ok(Err(format!(
                    "{} tx {} is being signed on other claims: {}; {retry}",
                    c.chain,
                    c.txid_hex,
                    c.differs_from(&h.own)
                )));
            }
        }
        for o in &c.own {
            if let Some(p) = read::<Pinned>(self.store, &outpoint_key(key, c.chain, &o.outpoint))? {
                if p.amount != o.value {
                    return Ok(Err(format!(
                        "input {} was released at unix {} as {} sat (tx {}); this request says {} sat",
                        o.outpoint, p.unix, p.amount, p.tx, o.value
                    )));
                }
            }
            for h in held.clone() {
                if let Some(other) = h
                    .own
                    .iter()
                    .find(|x| x.outpoint == o.outpoint && x.value != o.value)
                {
                    return Ok(Err(format!(
                        "input {} is being signed as {} sat (tx {}); this request says {} sat",
                        o.outpoint, other.value, h.txid_hex, o.value
                    )));
                }
            }
        }
        Ok(Ok(()))
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
    /// that moves value or carries claims, checks the claims against those
    /// recorded and held (a difference turns the decision into a refusal by
    /// [`CLAIMS_RULE`]) and reserves the amounts and claims, atomically with
    /// respect to other requests (blocking: reads the store). `tx` is the
    /// request's transaction id (Ethereum signing hash, Bitcoin txid in
    /// internal byte order, else the digest).
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
        let mut d = decide(&view);
        if let (true, Some(c)) = (d.allow, &d.claims) {
            let refused = match view.check_claims(key, c) {
                Ok(Ok(())) => None,
                Ok(Err(why)) => Some(why),
                Err(e) => {
                    tracing::error!(error = %e, "cannot read the spend ledger; refusing");
                    Some(format!(
                        "cannot read the claims recorded for this transaction ({e})"
                    ))
                }
            };
            if let Some(reason) = refused {
                d = Decision {
                    allow: false,
                    rule: CLAIMS_RULE.into(),
                    reason,
                    charges: vec![],
                    claims: None,
                };
            }
        }
        if !d.allow || (d.charges.is_empty() && d.claims.is_none()) {
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
                claims: d.claims.clone(),
            },
        );
        let r = Reservation {
            ledger: self.clone(),
            id,
        };
        (d, Some(r))
    }
}

/// Record keys and values, to write in one batch.
type Records = Vec<(Vec<u8>, Vec<u8>)>;

/// The records one release writes: claims and outpoints not recorded yet,
/// and charges not recorded yet. A Bitcoin-family txid charged before
/// claims were recorded (an earlier version) gets the new charge added to
/// the old one, as [`View::stored`] counted it.
fn records(store: &Store, h: &Held, unix: u64) -> Result<Records, StoreError> {
    let mut out = Vec::new();
    let mut bound_before = true;
    if let Some(c) = &h.claims {
        let k = claims_key(&h.key, c.chain, &c.txid);
        bound_before = store.contains(RecordKind::Spend, &k)?;
        if !bound_before {
            let bound = Bound {
                hash: c.hash.to_vec(),
                own: c
                    .own
                    .iter()
                    .map(|o| (o.outpoint.clone(), o.value))
                    .collect(),
                unix,
            };
            out.push((k, cbor(&bound)?));
        }
        for o in &c.own {
            let k = outpoint_key(&h.key, c.chain, &o.outpoint);
            if !store.contains(RecordKind::Spend, &k)? {
                let pinned = Pinned {
                    amount: o.value,
                    tx: c.txid_hex.clone(),
                    unix,
                };
                out.push((k, cbor(&pinned)?));
            }
        }
    }
    for c in &h.charges {
        let k = record_key(&h.key, c, &h.tx);
        let amount = match store.get(RecordKind::Spend, &k)? {
            None => c.amount,
            Some(_) if bound_before => continue,
            Some(old) => {
                let (old, _) = decode_record(old.expose()).map_err(|r| corrupt(&k, r))?;
                old.saturating_add(c.amount)
            }
        };
        let spent = Spent {
            amount: amount.to_be_bytes::<32>().to_vec(),
            unix,
        };
        out.push((k, cbor(&spent)?));
    }
    Ok(out)
}

impl Reservation {
    /// This node released its part: record the amounts and claims durably
    /// (blocking), in one atomic batch, before the reservation ends. A
    /// transaction or outpoint already recorded keeps its first record
    /// (which [`Ledger::decide`] made sure agrees).
    pub fn commit(self, store: &Store) -> Result<(), StoreError> {
        {
            // Under the lock: spend records are written only here, so what
            // is read above is what the batch lands on, and no decision sees
            // this request neither held nor recorded.
            let mut g = self.ledger.held.lock().unwrap_or_else(|p| p.into_inner());
            let Some(h) = g.1.get(&self.id) else {
                return Ok(());
            };
            store.put_all(RecordKind::Spend, &records(store, h, now())?)?;
            g.1.remove(&self.id);
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

#[cfg(test)]
mod tests;
