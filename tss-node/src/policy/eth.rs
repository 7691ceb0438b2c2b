//! Ethereum rules: what a decoded transaction may do, for which role.
//!
//! - Plain transfers and ERC-20 `transfer`/`transferFrom` (role
//!   `withdrawer`): the recipient must be a whitelisted destination; the
//!   amounts count against the limits of the native coin and the token.
//!   A `transferFrom` whose recipient is the key itself pulls tokens in
//!   and moves none of the key's: it is allowed and not charged.
//! - ERC-20 `approve` (role `trader`): the spender must be a whitelisted
//!   contract, and the allowance counts against the token's limits like a
//!   transfer of that amount (so an unlimited approval exceeds `per_tx`).
//! - Other contract calls (role `trader`): the contract must be whitelisted
//!   with the called function in its `functions`; the calldata must be
//!   exactly that function's ABI encoding, and every argument named in
//!   `recipients` must be the key's own address or a whitelisted
//!   destination. The ETH value of the call counts against native limits.
//!
//! The key's own address (the transaction's sender) comes from the key's
//! public key at each node ([`super::Intent::Ethereum`]), never from the
//! request.

use serde::Deserialize;
use tss_core::chain::eth::abi::{Function, ParamType, Value, WordType};
use tss_core::chain::eth::{Address, Call, UnsignedTx, U256};

use super::{
    allow, Asset, Chain, Charge, Decision, EntryKind, KeyRules, PolicyError, PolicyRole, Target,
    Usage,
};

/// A function a trader may call on a whitelisted contract, as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FunctionFile {
    signature: String,
    #[serde(default)]
    recipients: Vec<usize>,
}

/// A function a trader may call, checked.
#[derive(Clone, Debug)]
pub(super) struct Allowed {
    function: Function,
    /// Indices (from 0) of `address` / `address[]` arguments that must be
    /// the key's own address or whitelisted destinations.
    recipients: Vec<usize>,
}

/// Functions the ERC-20 rules decode and check themselves (by selector,
/// before any `functions` list is consulted).
const ERC20: [&str; 3] = [
    "transfer(address,uint256)",
    "approve(address,uint256)",
    "transferFrom(address,address,uint256)",
];

/// Functions that grant a spender an allowance no limit would charge.
const GRANTS: [&str; 3] = [
    "increaseAllowance(address,uint256)",
    "increaseApproval(address,uint256)",
    "setApprovalForAll(address,bool)",
];

fn selector_of(sig: &str) -> Option<[u8; 4]> {
    Function::parse(sig).ok().map(|f| f.selector())
}

/// Checks the `functions` of one whitelist entry; the error says where
/// (`at`) and what is wrong.
pub(super) fn parse_functions(
    at: &str,
    chain: Chain,
    kind: EntryKind,
    files: Vec<FunctionFile>,
) -> Result<Vec<Allowed>, PolicyError> {
    functions_text(at, chain, kind, files).map_err(PolicyError::Invalid)
}

fn functions_text(
    at: &str,
    chain: Chain,
    kind: EntryKind,
    files: Vec<FunctionFile>,
) -> Result<Vec<Allowed>, String> {
    if files.is_empty() {
        return Ok(Vec::new());
    }
    if kind != EntryKind::Contract || !matches!(chain, Chain::Ethereum(_)) {
        return Err(format!(
            "{at}: functions are only for Ethereum entries of kind \"contract\""
        ));
    }
    let mut out: Vec<Allowed> = Vec::new();
    for (k, f) in files.into_iter().enumerate() {
        let at = format!("{at}.functions[{k}]");
        let function = Function::parse(&f.signature).map_err(|e| format!("{at}: {e}"))?;
        let sig = function.signature().to_owned();
        let sel = function.selector();
        if ERC20.iter().any(|s| selector_of(s) == Some(sel)) {
            return Err(format!(
                "{at}: {sig} has the selector of an ERC-20 function the node checks by its own rules (transfer, transferFrom: role withdrawer and whitelisted destinations; approve: role trader, a whitelisted spender, charged to the token's limits): remove it"
            ));
        }
        if GRANTS.iter().any(|s| selector_of(s) == Some(sel)) {
            return Err(format!(
                "{at}: {sig} grants an allowance that no limit would charge and cannot be listed: traders use approve, which is charged to the token's limits"
            ));
        }
        if let Some(other) = out.iter().find(|a| a.function.selector() == sel) {
            return Err(format!(
                "{at}: {sig} has the selector 0x{} of {}, listed before",
                hex::encode(sel),
                other.function.signature()
            ));
        }
        let mut recipients = f.recipients;
        recipients.sort_unstable();
        recipients.dedup();
        for &r in &recipients {
            match function.params().get(r) {
                Some(ParamType::Word(WordType::Address) | ParamType::Array(WordType::Address)) => {}
                Some(other) => {
                    return Err(format!(
                        "{at}: recipients names argument {r} of {sig}, a {other}, not an address or address[] (arguments count from 0)"
                    ))
                }
                None => {
                    return Err(format!(
                        "{at}: recipients names argument {r}, but {sig} has {} arguments (counted from 0)",
                        function.params().len()
                    ))
                }
            }
        }
        out.push(Allowed {
            function,
            recipients,
        });
    }
    Ok(out)
}

impl KeyRules {
    /// Decides an Ethereum transaction sent by `sender` (this key's address).
    pub(super) fn ethereum(
        &self,
        client: &str,
        key: &str,
        has: &dyn Fn(PolicyRole) -> bool,
        tx: &UnsignedTx,
        sender: Address,
        usage: &dyn Usage,
    ) -> Decision {
        let chain = Chain::Ethereum(tx.chain_id);
        if let Err(d) = self.chain_allowed(chain, key) {
            return d;
        }
        let mut charges = Vec::new();
        if tx.value > U256::ZERO {
            charges.push(Charge {
                chain,
                asset: Asset::Native,
                amount: tx.value,
            });
        }
        let Some(to) = tx.to else {
            return Decision::deny(
                "contract-creation",
                "contract creation is never signed".into(),
            );
        };
        let need = |role: PolicyRole, what: &str| {
            Decision::deny(
                "roles",
                format!(
                    "client {client:?} lacks role {} (needed for {what})",
                    role.name()
                ),
            )
        };
        let token = |amount: U256| Charge {
            chain,
            asset: Asset::Token(to),
            amount,
        };
        let reason = match &tx.call {
            Call::Create => {
                return Decision::deny(
                    "contract-creation",
                    "contract creation is never signed".into(),
                )
            }
            Call::Transfer => {
                if !has(PolicyRole::Withdrawer) {
                    return need(PolicyRole::Withdrawer, "a transfer");
                }
                let Some(e) = self.listed(chain, &Target::Eth(to), EntryKind::Destination) else {
                    return Decision::deny(
                        "whitelist",
                        format!("destination {to} is not whitelisted for key {key:?} on {chain}"),
                    );
                };
                format!(
                    "withdrawer: transfer of {} wei to {}",
                    tx.value,
                    e.describe()
                )
            }
            Call::Erc20TransferFrom {
                from,
                recipient,
                amount,
            } if *recipient == sender => {
                // Tokens arrive at the key (from an owner who gave it an
                // allowance, or from itself): none of the key's leave.
                if !has(PolicyRole::Withdrawer) {
                    return need(PolicyRole::Withdrawer, "an ERC-20 transfer");
                }
                format!("withdrawer: pull {amount} of token {to} from {from} to this key")
            }
            Call::Erc20Transfer { recipient, amount }
            | Call::Erc20TransferFrom {
                recipient, amount, ..
            } => {
                // transferFrom moves the key's tokens (from == key) or an
                // owner's under the allowance it gave this key: either way
                // tokens leave under this key's authority, and count.
                if !has(PolicyRole::Withdrawer) {
                    return need(PolicyRole::Withdrawer, "an ERC-20 transfer");
                }
                let Some(e) = self.listed(chain, &Target::Eth(*recipient), EntryKind::Destination)
                else {
                    return Decision::deny(
                        "whitelist",
                        format!(
                            "ERC-20 recipient {recipient} (token {to}) is not whitelisted for key {key:?} on {chain}"
                        ),
                    );
                };
                charges.push(token(*amount));
                format!("withdrawer: {amount} of token {to} to {}", e.describe())
            }
            Call::Erc20Approve { spender, amount } => {
                if !has(PolicyRole::Trader) {
                    return need(PolicyRole::Trader, "an ERC-20 approval");
                }
                let Some(e) = self.listed(chain, &Target::Eth(*spender), EntryKind::Contract)
                else {
                    return Decision::deny(
                        "whitelist",
                        format!(
                            "approval spender {spender} (token {to}) is not a whitelisted contract for key {key:?} on {chain}"
                        ),
                    );
                };
                if !self.limits.contains_key(&(chain, Asset::Token(to))) {
                    return Decision::deny(
                        "limits",
                        format!("token {to} has no limit for key {key:?} on {chain}: approving it is not allowed"),
                    );
                }
                // The allowance is what the spender may pull: it counts
                // like a transfer of that amount.
                if *amount > U256::ZERO {
                    charges.push(token(*amount));
                }
                format!(
                    "trader: approve {amount} of token {to} to {} (charged to the token's limits)",
                    e.describe()
                )
            }
            Call::ContractCall { selector, calldata } => {
                if !has(PolicyRole::Trader) {
                    return need(PolicyRole::Trader, "a contract call");
                }
                let Some(e) = self.listed(chain, &Target::Eth(to), EntryKind::Contract) else {
                    return Decision::deny(
                        "whitelist",
                        format!("contract {to} is not whitelisted for key {key:?} on {chain}"),
                    );
                };
                let Some(a) = e
                    .functions
                    .iter()
                    .find(|a| a.function.selector() == *selector)
                else {
                    let listed: Vec<&str> =
                        e.functions.iter().map(|a| a.function.signature()).collect();
                    return Decision::deny(
                        "functions",
                        format!(
                            "function 0x{} is not listed for {} (listed: {})",
                            hex::encode(selector),
                            e.describe(),
                            if listed.is_empty() {
                                "none".to_string()
                            } else {
                                listed.join(", ")
                            }
                        ),
                    );
                };
                let sig = a.function.signature();
                let args = match a.function.decode(calldata) {
                    Ok(args) => args,
                    Err(err) => {
                        return Decision::deny(
                            "calldata",
                            format!("the calldata is not a call of {sig}: {err}"),
                        )
                    }
                };
                let mut to_whom = Vec::new();
                for &r in &a.recipients {
                    let addresses = match args.get(r) {
                        Some(Value::Address(x)) => vec![*x],
                        Some(Value::Array(items)) => items
                            .iter()
                            .filter_map(|v| match v {
                                Value::Address(x) => Some(*x),
                                _ => None,
                            })
                            .collect(),
                        // Parsing checked that each index is an address argument.
                        _ => vec![],
                    };
                    for x in addresses {
                        if x == sender {
                            to_whom.push("this key".to_string());
                        } else if let Some(d) =
                            self.listed(chain, &Target::Eth(x), EntryKind::Destination)
                        {
                            to_whom.push(d.describe());
                        } else {
                            return Decision::deny(
                                "recipients",
                                format!(
                                    "argument {r} of {sig} is {x}, neither this key's address {sender} nor a whitelisted destination for key {key:?} on {chain}"
                                ),
                            );
                        }
                    }
                }
                let whom = if to_whom.is_empty() {
                    String::new()
                } else {
                    format!(", recipients {}", to_whom.join(", "))
                };
                format!(
                    "trader: {sig} on {} with {} wei{whom}",
                    e.describe(),
                    tx.value
                )
            }
        };
        if let Err(d) = self.limits(key, &charges, usage) {
            return d;
        }
        allow(reason, charges)
    }
}

#[cfg(test)]
mod tests;
