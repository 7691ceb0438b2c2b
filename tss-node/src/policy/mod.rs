//! A custodian's signing policy (`policy.toml`): which client may have which
//! key sign what. Every node evaluates its own policy on the transaction it
//! decoded itself; nothing a gateway claims about a request is trusted.
//!
//! Pure: parsing and evaluation only. The node owns loading and reloading
//! ([`crate::state::Node::policy`]), the rolling counters ([`crate::spend`])
//! and the audit log ([`crate::audit`]).
//!
//! ```toml
//! version = 1
//!
//! [clients.gateway-1]          # a client pinned in node.toml [[clients]]
//! roles = ["withdrawer"]       # withdrawer | trader | signer
//!
//! [[keys]]
//! key = "mm-wallet"            # a key id, or "*" for every key
//! chains = ["ethereum:1", "bitcoin"]   # at most one Bitcoin-family network
//! raw_digest = []              # clients that may sign raw digests and bare hashes
//!
//! [[keys.whitelist]]
//! chain = "ethereum:1"
//! address = "0x..."
//! kind = "destination"         # destination (withdrawals) | contract (trading)
//! label = "exchange deposit"
//! # for kind = "contract": what a trader may call, and which address
//! # arguments (from 0) must be the key itself or a whitelisted destination
//! # functions = [{ signature = "swapExactTokensForTokens(uint256,uint256,address[],address,uint256)", recipients = [3] }]
//!
//! [[keys.limits]]
//! chain = "ethereum:1"
//! asset = "native"             # or an ERC-20 token contract
//! per_tx = "1000000000000000000"    # base units: wei, satoshi
//! per_24h = "5000000000000000000"
//! ```
//!
//! Default deny: a request no rule allows is refused, and the refusal names
//! the rule that stopped it.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use serde::Deserialize;
use sha2::Digest;
use tss_core::chain::btc::{Network, PsbtSummary};
use tss_core::chain::eth::{Address, Call, UnsignedTx, U256};
use tss_core::ecdsa::sign::HashAlgo;

pub mod audit;
mod eth;

mod btc;
pub mod spend;
pub use self::btc::{Claims, OwnInput};

/// Why a policy file was refused. The policy in force stays.
#[derive(Debug, Clone, thiserror::Error)]
pub enum PolicyError {
    /// The file could not be read.
    #[error("cannot read policy {path}: {reason}")]
    Read {
        /// The configured path.
        path: String,
        /// The file-system error.
        reason: String,
    },
    /// The file does not parse or breaks a rule of the schema; says where.
    #[error("{0}")]
    Invalid(String),
    /// [`PolicyError::Invalid`], with the file it is in.
    #[error("invalid policy {path}: {reason}")]
    InFile {
        /// The configured path.
        path: String,
        /// What is wrong, and where in the file.
        reason: String,
    },
}

/// The file format version this build reads.
pub const VERSION: u32 = 1;

/// A chain a key may sign for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Chain {
    /// An EVM chain by its EIP-155 chain id.
    Ethereum(u64),
    /// A Bitcoin-family network.
    Bitcoin(Network),
}

impl fmt::Display for Chain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Chain::Ethereum(id) => write!(f, "ethereum:{id}"),
            Chain::Bitcoin(n) => f.write_str(n.name()),
        }
    }
}

impl FromStr for Chain {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        if let Some(id) = s.strip_prefix("ethereum:") {
            return match id.parse::<u64>() {
                Ok(id) if id > 0 => Ok(Chain::Ethereum(id)),
                _ => Err(format!(
                    "chain {s:?}: the chain id must be a positive integer"
                )),
            };
        }
        s.parse::<Network>().map(Chain::Bitcoin).map_err(|_| {
            format!(
                "unknown chain {s:?}: use ethereum:<chain id>, bitcoin, bitcoin-testnet, litecoin or litecoin-testnet"
            )
        })
    }
}

/// An asset whose movements are limited.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Asset {
    /// The chain's own coin (ETH, BTC, LTC).
    Native,
    /// An ERC-20 token by its contract.
    Token(Address),
}

impl fmt::Display for Asset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Asset::Native => f.write_str("native"),
            Asset::Token(a) => write!(f, "{a}"),
        }
    }
}

/// What a client may do, by role.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PolicyRole {
    /// Listed functions of whitelisted contracts, and ERC-20 approvals of
    /// them (charged to the token's limits).
    Trader,
    /// Transfers (native, ERC-20, Bitcoin outputs) to whitelisted destinations.
    Withdrawer,
    /// Domain-separated messages the node hashes itself (`Sign` with
    /// EIP191 or BITCOIN_MESSAGE), with every key that has an entry. Bare
    /// hashes need `raw_digest`.
    Signer,
}

impl PolicyRole {
    /// Name as written in the policy file.
    pub fn name(self) -> &'static str {
        match self {
            PolicyRole::Trader => "trader",
            PolicyRole::Withdrawer => "withdrawer",
            PolicyRole::Signer => "signer",
        }
    }
}

/// What a whitelist entry is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EntryKind {
    /// Receives withdrawals.
    Destination,
    /// A contract traders may call.
    Contract,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PolicyFile {
    version: u32,
    #[serde(default)]
    clients: BTreeMap<String, ClientFile>,
    #[serde(default)]
    keys: Vec<KeyFile>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ClientFile {
    roles: Vec<PolicyRole>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyFile {
    key: String,
    #[serde(default)]
    chains: Vec<String>,
    #[serde(default)]
    raw_digest: Vec<String>,
    #[serde(default)]
    whitelist: Vec<EntryFile>,
    #[serde(default)]
    limits: Vec<LimitFile>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EntryFile {
    chain: String,
    address: String,
    kind: EntryKind,
    #[serde(default)]
    label: String,
    #[serde(default)]
    functions: Vec<eth::FunctionFile>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LimitFile {
    chain: String,
    asset: String,
    per_tx: String,
    per_24h: String,
}

/// A whitelisted address, in the form its chain compares.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Target {
    Eth(Address),
    /// scriptPubKey.
    Script(Vec<u8>),
}

#[derive(Clone, Debug)]
struct Entry {
    chain: Chain,
    target: Target,
    address: String,
    kind: EntryKind,
    label: String,
    /// For Ethereum contracts: the functions traders may call.
    functions: Vec<eth::Allowed>,
}

/// Per-transaction and rolling 24-hour limits of one asset on one chain.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Limit {
    /// Largest amount one transaction may move.
    pub per_tx: U256,
    /// Largest total released within any 24 hours.
    pub per_24h: U256,
}

#[derive(Clone, Debug)]
struct KeyRules {
    /// `None` matches every key.
    key: Option<String>,
    chains: Vec<Chain>,
    raw_digest: Vec<String>,
    whitelist: Vec<Entry>,
    limits: BTreeMap<(Chain, Asset), Limit>,
}

/// A parsed, checked policy.
#[derive(Clone, Debug)]
pub struct Policy {
    roles: BTreeMap<String, Vec<PolicyRole>>,
    keys: Vec<KeyRules>,
    sha256: [u8; 32],
}

/// What is asked, as the node decoded it.
#[derive(Clone, Copy, Debug)]
pub enum Intent<'a> {
    /// A message the node hashes itself (`Sign`).
    Message {
        /// How the node hashes it: domain-separated (role `signer`) or a
        /// bare hash of the caller's bytes (`raw_digest`).
        hash: HashAlgo,
    },
    /// A raw 32-byte digest (`Sign` with hash NONE).
    RawDigest,
    /// An Ethereum transaction.
    Ethereum {
        /// The transaction, decoded by this node.
        tx: &'a UnsignedTx,
        /// The key's own address (derived by this node from the key's
        /// public key): the transaction's sender.
        sender: Address,
    },
    /// A Bitcoin-family PSBT.
    Bitcoin(&'a PsbtSummary),
}

/// An amount a request would release, counted against a limit.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Charge {
    /// Chain.
    pub chain: Chain,
    /// Asset.
    pub asset: Asset,
    /// Amount in base units.
    pub amount: U256,
}

/// The outcome of evaluating one request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decision {
    /// Whether the request may be signed.
    pub allow: bool,
    /// The rule that decided (`whitelist`, `limits.per_24h`, ...).
    pub rule: String,
    /// Why, in words.
    pub reason: String,
    /// What an allowed request counts against the limits.
    pub charges: Vec<Charge>,
    /// For a Bitcoin-family transaction, the claims it was judged on: the
    /// ledger binds the txid and each of the key's outpoints to them and
    /// refuses a later request whose claims differ ([`crate::spend`]).
    pub claims: Option<Box<Claims>>,
}

impl Decision {
    fn deny(rule: &str, reason: String) -> Self {
        Decision {
            allow: false,
            rule: rule.into(),
            reason,
            charges: vec![],
            claims: None,
        }
    }
}

/// Amounts already released within the last 24 hours (and reserved by
/// requests in flight).
pub trait Usage {
    /// Total for one asset on one chain of `key`.
    fn used_24h(&self, key: &str, chain: Chain, asset: Asset) -> U256;
}

fn parse_amount(s: &str, what: &str) -> Result<U256, String> {
    let digits: String = s.chars().filter(|c| *c != '_').collect();
    if digits.is_empty() || !digits.chars().all(|c| c.is_ascii_digit()) {
        return Err(format!(
            "{what} = {s:?}: write an integer amount in base units (wei, satoshi), for example \"1000000000000000000\" for 1 ETH"
        ));
    }
    U256::from_str_radix(&digits, 10).map_err(|_| format!("{what} = {s:?} is too large"))
}

/// Parses an Ethereum address; mixed case must be a valid EIP-55 checksum.
pub fn parse_eth_address(s: &str) -> Result<Address, PolicyError> {
    parse_address(s).map_err(PolicyError::Invalid)
}

fn parse_address(s: &str) -> Result<Address, String> {
    let body = s.strip_prefix("0x").unwrap_or(s);
    let mixed = body.chars().any(|c| c.is_ascii_uppercase())
        && body.chars().any(|c| c.is_ascii_lowercase());
    let parsed = if mixed {
        Address::parse_checksummed(s, None).map_err(|_| {
            format!("{s:?} has mixed case but is not a valid EIP-55 checksum (a typo?)")
        })
    } else {
        Address::from_str(s).map_err(|_| format!("{s:?} is not a 20-byte hex Ethereum address"))
    }?;
    Ok(parsed)
}

impl Policy {
    /// Parses and checks a policy. `clients` are the names node.toml pins:
    /// the policy may only name those.
    pub fn parse(text: &str, clients: &[&str]) -> Result<Policy, PolicyError> {
        Policy::parse_text(text, clients).map_err(PolicyError::Invalid)
    }

    fn parse_text(text: &str, clients: &[&str]) -> Result<Policy, String> {
        let file: PolicyFile = toml::from_str(text).map_err(|e| e.to_string())?;
        if file.version != VERSION {
            return Err(format!(
                "version = {}: this node reads policy version {VERSION}",
                file.version
            ));
        }
        let known = |name: &str, what: &str| -> Result<(), String> {
            if clients.contains(&name) {
                Ok(())
            } else {
                Err(format!(
                    "{what} names client {name:?}, which node.toml does not pin (known: {})",
                    clients.join(", ")
                ))
            }
        };
        let mut roles = BTreeMap::new();
        for (name, c) in file.clients {
            known(&name, "[clients]")?;
            let mut r = c.roles;
            r.sort_unstable();
            r.dedup();
            roles.insert(name, r);
        }
        let mut keys = Vec::new();
        let mut seen = std::collections::BTreeSet::new();
        for (i, k) in file.keys.into_iter().enumerate() {
            let at = format!("keys[{i}] ({})", k.key);
            if !seen.insert(k.key.clone()) {
                return Err(format!(
                    "{at}: a second [[keys]] entry for {:?}: only one would apply; merge them",
                    k.key
                ));
            }
            let key = if k.key == "*" {
                None
            } else {
                keygen::record::check_key_id(&k.key).map_err(|e| format!("{at}: {e}"))?;
                Some(k.key.clone())
            };
            let mut chains = Vec::new();
            for c in &k.chains {
                chains.push(c.parse::<Chain>().map_err(|e| format!("{at}: {e}"))?);
            }
            btc::one_network(&at, &chains).map_err(|e| e.to_string())?;
            for c in &k.raw_digest {
                known(c, &format!("{at}.raw_digest"))?;
            }
            let mut whitelist = Vec::new();
            for (j, e) in k.whitelist.into_iter().enumerate() {
                let at = format!("{at}.whitelist[{j}]");
                let chain: Chain = e.chain.parse().map_err(|m| format!("{at}: {m}"))?;
                let target = match chain {
                    Chain::Ethereum(_) => {
                        Target::Eth(parse_address(&e.address).map_err(|m| format!("{at}: {m}"))?)
                    }
                    Chain::Bitcoin(net) => Target::Script(
                        tss_core::chain::btc::script_for_address(&e.address, net)
                            .map_err(|m| format!("{at}: {m}"))?,
                    ),
                };
                if !chains.contains(&chain) {
                    return Err(format!(
                        "{at}: chain {chain} is not in this key's chains (add it, or drop the entry)"
                    ));
                }
                let functions = eth::parse_functions(&at, chain, e.kind, e.functions)
                    .map_err(|e| e.to_string())?;
                whitelist.push(Entry {
                    chain,
                    target,
                    address: e.address,
                    kind: e.kind,
                    label: e.label,
                    functions,
                });
            }
            let mut limits = BTreeMap::new();
            for (j, l) in k.limits.into_iter().enumerate() {
                let at = format!("{at}.limits[{j}]");
                let chain: Chain = l.chain.parse().map_err(|m| format!("{at}: {m}"))?;
                let asset = match (chain, l.asset.as_str()) {
                    (_, "native") => Asset::Native,
                    (Chain::Ethereum(_), token) => {
                        Asset::Token(parse_address(token).map_err(|m| format!("{at}: {m}"))?)
                    }
                    (Chain::Bitcoin(_), other) => {
                        return Err(format!(
                            "{at}: asset {other:?}: Bitcoin-family chains only have \"native\""
                        ))
                    }
                };
                let limit = Limit {
                    per_tx: parse_amount(&l.per_tx, &format!("{at}.per_tx"))?,
                    per_24h: parse_amount(&l.per_24h, &format!("{at}.per_24h"))?,
                };
                if limits.insert((chain, asset), limit).is_some() {
                    return Err(format!("{at}: a second limit for {asset} on {chain}"));
                }
            }
            keys.push(KeyRules {
                key,
                chains,
                raw_digest: k.raw_digest,
                whitelist,
                limits,
            });
        }
        Ok(Policy {
            roles,
            keys,
            sha256: sha2::Sha256::digest(text.as_bytes()).into(),
        })
    }

    /// The policy that allows nothing (a node without a policy file).
    pub fn deny_all() -> Policy {
        Policy {
            roles: BTreeMap::new(),
            keys: vec![],
            sha256: [0; 32],
        }
    }

    /// SHA-256 of the policy file (all zero for [`Policy::deny_all`]).
    pub fn sha256(&self) -> [u8; 32] {
        self.sha256
    }

    /// The entry for `key`: its own first, else `*`.
    fn key_rules(&self, key: &str) -> Option<&KeyRules> {
        self.keys
            .iter()
            .find(|k| k.key.as_deref() == Some(key))
            .or_else(|| self.keys.iter().find(|k| k.key.is_none()))
    }

    /// Decides one request of `client` to sign `intent` with `key`.
    pub fn evaluate(
        &self,
        client: &str,
        key: &str,
        intent: &Intent<'_>,
        usage: &dyn Usage,
    ) -> Decision {
        let Some(rules) = self.key_rules(key) else {
            return Decision::deny(
                "keys",
                format!("no [[keys]] entry for key {key:?} (and no \"*\" entry)"),
            );
        };
        let roles: &[PolicyRole] = self.roles.get(client).map_or(&[], Vec::as_slice);
        let has = |r: PolicyRole| roles.contains(&r);
        match intent {
            Intent::Message { hash } if hash.is_domain_separated() => {
                if has(PolicyRole::Signer) {
                    allow(
                        format!("signer: message hashed with {}", hash.name()),
                        vec![],
                    )
                } else {
                    Decision::deny(
                        "roles",
                        format!("client {client:?} lacks role signer (needed to sign messages)"),
                    )
                }
            }
            Intent::Message { hash } => {
                // A bare hash of caller bytes can be a transaction's signing
                // hash (keccak-256 of an Ethereum payload, double SHA-256 of
                // a BIP143 preimage): as powerful as a raw digest.
                if rules.raw_digest.iter().any(|c| c == client) {
                    allow(
                        format!(
                            "raw_digest: client listed for this key (bare {} of the message)",
                            hash.name()
                        ),
                        vec![],
                    )
                } else {
                    Decision::deny(
                        "raw_digest",
                        format!(
                            "client {client:?} is not in raw_digest for key {key:?}: a bare {} of caller bytes can be a transaction's signing hash; sign messages with EIP191 or BITCOIN_MESSAGE (role signer)",
                            hash.name()
                        ),
                    )
                }
            }
            Intent::RawDigest => {
                if rules.raw_digest.iter().any(|c| c == client) {
                    allow("raw_digest: client listed for this key".into(), vec![])
                } else {
                    Decision::deny(
                        "raw_digest",
                        format!("client {client:?} is not in raw_digest for key {key:?}"),
                    )
                }
            }
            Intent::Ethereum { tx, sender } => {
                rules.ethereum(client, key, &has, tx, *sender, usage)
            }
            Intent::Bitcoin(s) => rules.bitcoin(client, key, &has, s, usage),
        }
    }
}

fn allow(reason: String, charges: Vec<Charge>) -> Decision {
    Decision {
        allow: true,
        rule: "allow".into(),
        reason,
        charges,
        claims: None,
    }
}

impl KeyRules {
    fn chain_allowed(&self, chain: Chain, key: &str) -> Result<(), Decision> {
        if self.chains.contains(&chain) {
            Ok(())
        } else {
            Err(Decision::deny(
                "chains",
                format!("key {key:?} may not sign for {chain}"),
            ))
        }
    }

    fn listed(&self, chain: Chain, target: &Target, kind: EntryKind) -> Option<&Entry> {
        self.whitelist
            .iter()
            .find(|e| e.chain == chain && e.kind == kind && &e.target == target)
    }

    /// Checks each charge against its limits.
    fn limits(&self, key: &str, charges: &[Charge], usage: &dyn Usage) -> Result<(), Decision> {
        for c in charges {
            let Some(limit) = self.limits.get(&(c.chain, c.asset)) else {
                return Err(Decision::deny(
                    "limits",
                    format!(
                        "no limit is set for {} on {} for key {key:?}: nothing of it may move (default deny)",
                        c.asset, c.chain
                    ),
                ));
            };
            if c.amount > limit.per_tx {
                return Err(Decision::deny(
                    "limits.per_tx",
                    format!(
                        "moves {} of {} on {}; the per-transaction limit is {}",
                        c.amount, c.asset, c.chain, limit.per_tx
                    ),
                ));
            }
            let used = usage.used_24h(key, c.chain, c.asset);
            let total = used.saturating_add(c.amount);
            if total > limit.per_24h {
                return Err(Decision::deny(
                    "limits.per_24h",
                    format!(
                        "{used} of {} on {} released in the last 24 h; {} more would exceed the 24 h limit of {}",
                        c.asset, c.chain, c.amount, limit.per_24h
                    ),
                ));
            }
        }
        Ok(())
    }
}

impl Entry {
    fn describe(&self) -> String {
        if self.label.is_empty() {
            format!("whitelisted {}", self.address)
        } else {
            format!("whitelisted {} ({})", self.address, self.label)
        }
    }
}

/// A JSON view of an intent, for the audit log.
pub fn intent_json(intent: &Intent<'_>) -> serde_json::Value {
    use serde_json::json;
    match intent {
        Intent::Message { hash } => json!({ "type": "message", "hash": hash.name() }),
        Intent::RawDigest => json!({ "type": "raw_digest" }),
        Intent::Ethereum { tx, sender } => {
            let call = match &tx.call {
                Call::Transfer => json!({ "type": "transfer" }),
                Call::Erc20Transfer { recipient, amount } => json!({
                    "type": "erc20_transfer", "recipient": recipient.to_string(), "amount": amount.to_string()
                }),
                Call::Erc20Approve { spender, amount } => json!({
                    "type": "erc20_approve", "spender": spender.to_string(), "amount": amount.to_string()
                }),
                Call::Erc20TransferFrom {
                    from,
                    recipient,
                    amount,
                } => json!({
                    "type": "erc20_transfer_from", "from": from.to_string(),
                    "recipient": recipient.to_string(), "amount": amount.to_string()
                }),
                Call::ContractCall { selector, calldata } => json!({
                    "type": "contract_call", "selector": hex::encode(selector),
                    "calldata": hex::encode(calldata)
                }),
                Call::Create => json!({ "type": "create" }),
            };
            json!({
                "type": "ethereum",
                "chain": Chain::Ethereum(tx.chain_id).to_string(),
                "sender": sender.to_string(),
                "nonce": tx.nonce,
                "to": tx.to.map(|a| a.to_string()),
                "value": tx.value.to_string(),
                "call": call,
                "signing_hash": hex::encode(tx.signing_hash),
            })
        }
        Intent::Bitcoin(s) => json!({
            "type": "bitcoin",
            "chain": s.network.name(),
            "txid": s.txid_hex,
            "fee": s.fee,
            "inputs": s.inputs.iter().map(|i| json!({
                "outpoint": i.outpoint, "value": i.value, "ours": i.ours
            })).collect::<Vec<_>>(),
            "outputs": s.outputs.iter().map(|o| json!({
                "address": o.address, "value": o.value, "to_self": o.to_self
            })).collect::<Vec<_>>(),
        }),
    }
}

#[cfg(test)]
mod tests;
