//! Bitcoin-family evaluation: every output, the per-transaction limit on
//! what the transaction pays away as a whole, the 24-hour limit on what
//! leaves the key, and the claims the ledger binds the txid to.
//!
//! What a PSBT states and who vouches for it:
//! - outputs (scripts, amounts): committed by the txid, so by every
//!   signature of the transaction;
//! - the key's own inputs (which ones, their amounts): each BIP143
//!   signature commits only to its own input's amount, and nothing commits
//!   to which other inputs are the key's. A set of PSBTs of one transaction
//!   that each name a different input as the key's would each look small;
//!   [`Claims`] make the ledger refuse all but the first set of claims;
//! - other parties' inputs and their amounts, hence the fee: the PSBT's
//!   author only.
//!
//! For a Taproot key (P2TR key-path inputs, change to its P2TR script) the
//! same rules apply; there each BIP341 signature commits to every input's
//! amount and script, so misstated claims only yield invalid signatures.

use std::collections::BTreeSet;

use tss_core::chain::btc::{Network, PsbtSummary};
use tss_core::chain::eth::U256;

use super::{
    Asset, Chain, Charge, Decision, EntryKind, KeyRules, PolicyError, PolicyRole, Target, Usage,
};

/// One input of the key, as a PSBT states it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OwnInput {
    /// "txid:vout", txid in display order.
    pub outpoint: String,
    /// Amount in the smallest unit.
    pub value: u64,
}

/// What a decision on a Bitcoin-family transaction rests on beyond its
/// txid: which inputs are the key's and their amounts (see the module
/// docs). The ledger binds the txid to `hash` and each own outpoint to its
/// amount.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Claims {
    /// Network of the transaction.
    pub chain: Chain,
    /// Unsigned txid, internal byte order (as the ledger keys it).
    pub txid: [u8; 32],
    /// Txid in display order, for messages.
    pub txid_hex: String,
    /// [`PsbtSummary::claims_hash`]: every input's outpoint, ownership and
    /// stated amount.
    pub hash: [u8; 32],
    /// The key's inputs, in order.
    pub own: Vec<OwnInput>,
}

impl Claims {
    /// The claims of an analysed PSBT.
    pub fn of(s: &PsbtSummary) -> Claims {
        Claims {
            chain: Chain::Bitcoin(s.network),
            txid: s.txid,
            txid_hex: s.txid_hex.clone(),
            hash: s.claims_hash(),
            own: s
                .own_inputs()
                .map(|(_, i)| OwnInput {
                    outpoint: i.outpoint.clone(),
                    value: i.value,
                })
                .collect(),
        }
    }

    /// In words, how these claims differ from `first` (the key's inputs
    /// the transaction was first judged on), for a refusal.
    pub fn differs_from(&self, first: &[OwnInput]) -> String {
        for f in first {
            match self.own.iter().find(|o| o.outpoint == f.outpoint) {
                None => {
                    return format!(
                        "input {} was the key's ({} sat) and now is not",
                        f.outpoint, f.value
                    )
                }
                Some(o) if o.value != f.value => {
                    return format!(
                        "input {} was {} sat and now is {} sat",
                        f.outpoint, f.value, o.value
                    )
                }
                Some(_) => {}
            }
        }
        let known: BTreeSet<&str> = first.iter().map(|f| f.outpoint.as_str()).collect();
        if let Some(o) = self
            .own
            .iter()
            .find(|o| !known.contains(o.outpoint.as_str()))
        {
            return format!(
                "input {} ({} sat) is now the key's and was not",
                o.outpoint, o.value
            );
        }
        "the other parties' inputs or their stated amounts differ".into()
    }
}

/// Refuses a `[[keys]]` entry that enables more than one Bitcoin-family
/// network: a key has the same P2WPKH (or P2TR) script on all of them, so the
/// network a PSBT is judged under would be the client's choice. Each entry
/// is judged alone: the entry a key uses is its own, or else `*`, never
/// both (see `Policy::key_rules`).
pub(super) fn one_network(at: &str, chains: &[Chain]) -> Result<(), PolicyError> {
    let mut nets: Vec<Network> = chains
        .iter()
        .filter_map(|c| match c {
            Chain::Bitcoin(n) => Some(*n),
            Chain::Ethereum(_) => None,
        })
        .collect();
    nets.sort_unstable();
    nets.dedup();
    if nets.len() <= 1 {
        return Ok(());
    }
    let names: Vec<&str> = nets.iter().map(|n| n.name()).collect();
    Err(PolicyError::Invalid(format!(
        "{at}: chains enables {}: a key has the same P2WPKH script on every Bitcoin-family network, \
         so a PSBT could be judged under another network's whitelist and limits than the one it is \
         spent on. Enable one Bitcoin-family network per [[keys]] entry and use a separate key for \
         each network (a key with its own entry does not use the \"*\" entry)",
        names.join(" and ")
    )))
}

impl KeyRules {
    pub(super) fn bitcoin(
        &self,
        client: &str,
        key: &str,
        has: &dyn Fn(PolicyRole) -> bool,
        s: &PsbtSummary,
        usage: &dyn Usage,
    ) -> Decision {
        let chain = Chain::Bitcoin(s.network);
        if let Err(d) = self.chain_allowed(chain, key) {
            return d;
        }
        if !has(PolicyRole::Withdrawer) {
            return Decision::deny(
                "roles",
                format!(
                    "client {client:?} lacks role withdrawer (needed to spend {chain} outputs)"
                ),
            );
        }
        let mut paid = Vec::new();
        for (i, o) in s.outputs.iter().enumerate() {
            if o.to_self {
                continue;
            }
            let shown = o
                .address
                .clone()
                .unwrap_or_else(|| format!("script {}", hex::encode(&o.script_pubkey)));
            let Some(e) = self.listed(
                chain,
                &Target::Script(o.script_pubkey.clone()),
                EntryKind::Destination,
            ) else {
                return Decision::deny(
                    "whitelist",
                    format!(
                        "output {i} pays {} sat to {shown}, which is neither whitelisted for key {key:?} on {chain} nor this key's own address (change must return to the key)",
                        o.value
                    ),
                );
            };
            paid.push(format!("{} sat to {}", o.value, e.describe()));
        }
        // Per transaction: what it pays away as a whole (outputs to others,
        // committed by the txid, plus the fee). Per 24 hours: what leaves the
        // key, exact once the ledger has bound the txid to these claims.
        let payments = s.payments();
        let spend = s.key_spend();
        if payments > 0 {
            let Some(limit) = self.limits.get(&(chain, Asset::Native)) else {
                return Decision::deny(
                    "limits",
                    format!(
                        "no limit is set for native on {chain} for key {key:?}: nothing of it may move (default deny)"
                    ),
                );
            };
            if U256::from(payments) > limit.per_tx {
                return Decision::deny(
                    "limits.per_tx",
                    format!(
                        "moves {payments} sat on {chain} ({} sat to outputs that do not return to the key, fee {} sat); the per-transaction limit is {}",
                        payments.saturating_sub(s.fee),
                        s.fee,
                        limit.per_tx
                    ),
                );
            }
            let used = usage.used_24h(key, chain, Asset::Native);
            let total = used.saturating_add(U256::from(spend));
            if total > limit.per_24h {
                return Decision::deny(
                    "limits.per_24h",
                    format!(
                        "{used} of native on {chain} released in the last 24 h; {spend} more would exceed the 24 h limit of {}",
                        limit.per_24h
                    ),
                );
            }
        }
        let charges = if spend > 0 {
            vec![Charge {
                chain,
                asset: Asset::Native,
                amount: U256::from(spend),
            }]
        } else {
            vec![]
        };
        let what = if paid.is_empty() {
            "to itself".to_string()
        } else {
            paid.join(", ")
        };
        Decision {
            allow: true,
            rule: "allow".into(),
            reason: format!(
                "withdrawer: {chain} tx {} pays {what}, fee {} sat; {spend} sat leave the key",
                s.txid_hex, s.fee
            ),
            charges,
            claims: Some(Box::new(Claims::of(s))),
        }
    }
}
