//! Trader rules (listed functions, recipients, approvals) and message
//! hashing modes.

use std::collections::HashMap;

use tss_core::chain::eth::TxKind;

use super::super::*;

const SELF: &str = "0x7E5F4552091A69125d5DfCb7b8C2659029395Bdf";
const DEST: &str = "0x1111111111111111111111111111111111111111";
const STRANGER: &str = "0x2222222222222222222222222222222222222222";
const ROUTER: &str = "0x3333333333333333333333333333333333333333";
const USDC: &str = "0xa0b86991c6218b36c1d19d4a2e9eb0ce3606eb48";
const SWAP: &str = "swapExactTokensForTokens(uint256,uint256,address[],address,uint256)";

const POLICY: &str = r#"
version = 1

[clients.desk]
roles = ["trader"]

[clients.gw]
roles = ["withdrawer"]

[clients.ops]
roles = ["signer"]

[clients.raw]
roles = []

[[keys]]
key = "wallet"
chains = ["ethereum:1"]
raw_digest = ["raw"]

[[keys.whitelist]]
chain = "ethereum:1"
address = "0x1111111111111111111111111111111111111111"
kind = "destination"
label = "treasury"

[[keys.whitelist]]
chain = "ethereum:1"
address = "0x3333333333333333333333333333333333333333"
kind = "contract"
label = "router"
functions = [
  { signature = "swapExactTokensForTokens(uint256,uint256,address[],address,uint256)", recipients = [3] },
  { signature = "multiHop(address[],uint256)", recipients = [0] },
  { signature = "deposit()" },
]

[[keys.whitelist]]
chain = "ethereum:1"
address = "0xa0b86991c6218b36c1d19d4a2e9eb0ce3606eb48"
kind = "contract"
label = "USDC, listed as a contract by mistake"

[[keys.limits]]
chain = "ethereum:1"
asset = "native"
per_tx = "1000"
per_24h = "2500"

[[keys.limits]]
chain = "ethereum:1"
asset = "0xa0b86991c6218b36c1d19d4a2e9eb0ce3606eb48"
per_tx = "500"
per_24h = "800"
"#;

const CLIENTS: &[&str] = &["desk", "gw", "ops", "raw"];

#[derive(Default)]
struct Used(HashMap<(Chain, Asset), U256>);

impl Usage for Used {
    fn used_24h(&self, _key: &str, chain: Chain, asset: Asset) -> U256 {
        self.0.get(&(chain, asset)).copied().unwrap_or(U256::ZERO)
    }
}

fn policy() -> Policy {
    Policy::parse(POLICY, CLIENTS).unwrap()
}

fn addr(s: &str) -> Address {
    parse_eth_address(s).unwrap()
}

fn w_addr(a: &str) -> [u8; 32] {
    let mut w = [0u8; 32];
    w[12..].copy_from_slice(addr(a).as_slice());
    w
}

fn w_u(v: u64) -> [u8; 32] {
    U256::from(v).to_be_bytes()
}

fn call_data(sig: &str, words: &[[u8; 32]]) -> Vec<u8> {
    let mut out = tss_core::chain::eth::abi::Function::parse(sig)
        .unwrap()
        .selector()
        .to_vec();
    for w in words {
        out.extend_from_slice(w);
    }
    out
}

/// swapExactTokensForTokens(1000, 990, [USDC, STRANGER], to, deadline).
fn swap(to: &str) -> Vec<u8> {
    call_data(
        SWAP,
        &[
            w_u(1000),
            w_u(990),
            w_u(0xa0),
            w_addr(to),
            w_u(1_700_000_000),
            w_u(2),
            w_addr(USDC),
            w_addr(STRANGER),
        ],
    )
}

fn contract_call(to: &str, value: u64, calldata: Vec<u8>) -> UnsignedTx {
    let mut selector = [0u8; 4];
    selector.copy_from_slice(&calldata[..4]);
    tx(to, value, Call::ContractCall { selector, calldata })
}

fn tx(to: &str, value: u64, call: Call) -> UnsignedTx {
    UnsignedTx {
        kind: TxKind::Eip1559,
        chain_id: 1,
        nonce: 1,
        to: Some(addr(to)),
        value: U256::from(value),
        gas_limit: 100_000,
        call,
        signing_hash: [5; 32],
    }
}

fn approve(spender: &str, amount: U256) -> UnsignedTx {
    tx(
        USDC,
        0,
        Call::Erc20Approve {
            spender: addr(spender),
            amount,
        },
    )
}

fn eval(p: &Policy, client: &str, t: &UnsignedTx, used: &Used) -> Decision {
    let intent = Intent::Ethereum {
        tx: t,
        sender: addr(SELF),
    };
    p.evaluate(client, "wallet", &intent, used)
}

fn usdc(amount: u64) -> Charge {
    Charge {
        chain: Chain::Ethereum(1),
        asset: Asset::Token(addr(USDC)),
        amount: U256::from(amount),
    }
}

#[test]
fn trader__should_call_listed_functions_with_own_or_whitelisted_recipients() {
    // Given a router whose swap must pay the key or a whitelisted destination
    let p = policy();
    let none = Used::default();
    for to in [SELF, DEST] {
        // When a trader swaps to the key itself or to the treasury
        let d = eval(&p, "desk", &contract_call(ROUTER, 0, swap(to)), &none);
        // Then it is allowed, and nothing is charged (the tokens the router
        // pulls were charged when approved)
        assert!(d.allow, "{to}: {d:?}");
        assert!(d.charges.is_empty(), "{d:?}");
        assert!(d.reason.contains(SWAP), "{}", d.reason);
    }
    let d = eval(&p, "desk", &contract_call(ROUTER, 0, swap(SELF)), &none);
    assert!(d.reason.contains("this key"), "{}", d.reason);
    // A listed function without recipients; its ETH value counts.
    let d = eval(
        &p,
        "desk",
        &contract_call(ROUTER, 700, call_data("deposit()", &[])),
        &none,
    );
    assert!(d.allow, "{d:?}");
    assert_eq!(d.charges.len(), 1);
    assert_eq!(d.charges[0].asset, Asset::Native);
    // An address[] recipient: every element must pass.
    let hop = |a: &str, b: &str| {
        call_data(
            "multiHop(address[],uint256)",
            &[w_u(0x40), w_u(5), w_u(2), w_addr(a), w_addr(b)],
        )
    };
    assert!(
        eval(
            &p,
            "desk",
            &contract_call(ROUTER, 0, hop(SELF, DEST)),
            &none
        )
        .allow
    );
    let d = eval(
        &p,
        "desk",
        &contract_call(ROUTER, 0, hop(DEST, STRANGER)),
        &none,
    );
    assert_eq!(d.rule, "recipients", "{d:?}");
}

#[test]
fn trader__should_deny_unlisted_functions_other_recipients_and_bad_calldata() {
    let p = policy();
    let none = Used::default();
    // A recipient that is neither the key nor whitelisted
    let d = eval(&p, "desk", &contract_call(ROUTER, 0, swap(STRANGER)), &none);
    assert_eq!(d.rule, "recipients", "{d:?}");
    assert!(
        d.reason.contains("argument 3") && d.reason.contains(&addr(STRANGER).to_string()),
        "{}",
        d.reason
    );
    // A whitelisted contract is not a recipient (only destinations are)
    let d = eval(&p, "desk", &contract_call(ROUTER, 0, swap(ROUTER)), &none);
    assert_eq!(d.rule, "recipients", "{d:?}");
    // A selector not listed for the router
    let d = eval(
        &p,
        "desk",
        &contract_call(ROUTER, 0, call_data("sweep(address)", &[w_addr(STRANGER)])),
        &none,
    );
    assert_eq!(d.rule, "functions", "{d:?}");
    assert!(
        d.reason.contains(SWAP),
        "names what is listed: {}",
        d.reason
    );
    // Calldata that does not decode as the listed signature
    let mut dirty = swap(SELF);
    dirty[4 + 3 * 32] = 1; // high byte of the `to` word
    let mut short = swap(SELF);
    short.truncate(short.len() - 32);
    let mut long = swap(SELF);
    long.extend_from_slice(&[0; 32]);
    let mut moved = swap(SELF);
    moved[4 + 2 * 32 + 31] = 0x60; // path offset pointing at `to`
    for data in [dirty, short, long, moved] {
        let d = eval(&p, "desk", &contract_call(ROUTER, 0, data), &none);
        assert_eq!(d.rule, "calldata", "{d:?}");
    }
    // A withdrawer may not trade; a contract not whitelisted is refused
    let d = eval(&p, "gw", &contract_call(ROUTER, 0, swap(SELF)), &none);
    assert_eq!(d.rule, "roles");
    let d = eval(&p, "desk", &contract_call(STRANGER, 0, swap(SELF)), &none);
    assert_eq!(d.rule, "whitelist");
}

#[test]
fn trader__should_charge_approvals_to_the_tokens_limits() {
    let p = policy();
    let none = Used::default();
    // An unlimited approval exceeds the per-transaction limit
    let d = eval(&p, "desk", &approve(ROUTER, U256::MAX), &none);
    assert_eq!(d.rule, "limits.per_tx", "{d:?}");
    // An approval within limits is charged like a transfer of that amount
    let d = eval(&p, "desk", &approve(ROUTER, U256::from(500)), &none);
    assert!(d.allow, "{d:?}");
    assert_eq!(d.charges, vec![usdc(500)]);
    // ... and counts in the rolling 24 h: 500 released, 300 more fits 800,
    // 301 does not, whether as an approval or a withdrawal
    let mut used = Used::default();
    used.0.insert(
        (Chain::Ethereum(1), Asset::Token(addr(USDC))),
        U256::from(500),
    );
    assert!(eval(&p, "desk", &approve(ROUTER, U256::from(300)), &used).allow);
    let d = eval(&p, "desk", &approve(ROUTER, U256::from(301)), &used);
    assert_eq!(d.rule, "limits.per_24h", "{d:?}");
    let withdraw = tx(
        USDC,
        0,
        Call::Erc20Transfer {
            recipient: addr(DEST),
            amount: U256::from(301),
        },
    );
    assert_eq!(eval(&p, "gw", &withdraw, &used).rule, "limits.per_24h");
    // Revoking (approve 0) charges nothing
    let d = eval(&p, "desk", &approve(ROUTER, U256::ZERO), &used);
    assert!(d.allow && d.charges.is_empty(), "{d:?}");
    // The spender must be a whitelisted contract
    let d = eval(&p, "desk", &approve(DEST, U256::from(1)), &none);
    assert_eq!(d.rule, "whitelist", "{d:?}");
}

#[test]
fn trader__should_not_reach_allowances_through_other_token_functions() {
    // Given the token itself whitelisted as a contract with no functions
    let p = policy();
    let none = Used::default();
    // increaseAllowance(router, MAX) on the token is not an approval the
    // node charges: it is a contract call, and nothing is listed
    let inc = call_data(
        "increaseAllowance(address,uint256)",
        &[w_addr(ROUTER), [0xff; 32]],
    );
    let d = eval(&p, "desk", &contract_call(USDC, 0, inc), &none);
    assert_eq!(d.rule, "functions", "{d:?}");
    // And such functions cannot be listed at all
    for sig in [
        "increaseAllowance(address,uint256)",
        "increaseApproval(address,uint256)",
        "setApprovalForAll(address,bool)",
    ] {
        let text = POLICY.replace(
            "{ signature = \"deposit()\" }",
            &format!("{{ signature = \"{sig}\" }}"),
        );
        let e = Policy::parse(&text, CLIENTS).unwrap_err().to_string();
        assert!(e.contains("grants an allowance"), "{sig}: {e}");
    }
    // The ERC-20 functions the node decodes itself cannot be listed either
    for sig in ["approve(address,uint256)", "transfer(address,uint256)"] {
        let text = POLICY.replace(
            "{ signature = \"deposit()\" }",
            &format!("{{ signature = \"{sig}\" }}"),
        );
        let e = Policy::parse(&text, CLIENTS).unwrap_err().to_string();
        assert!(e.contains("ERC-20 function"), "{sig}: {e}");
    }
}

#[test]
fn withdrawer__should_count_transfer_from_unless_it_pays_the_key() {
    let p = policy();
    let none = Used::default();
    let from = |owner: &str, to: &str, amount: u64| {
        tx(
            USDC,
            0,
            Call::Erc20TransferFrom {
                from: addr(owner),
                recipient: addr(to),
                amount: U256::from(amount),
            },
        )
    };
    // The key's own tokens, or an owner's under its allowance, to the
    // treasury: counted against the token's limits
    for owner in [SELF, STRANGER] {
        let d = eval(&p, "gw", &from(owner, DEST, 400), &none);
        assert!(d.allow, "{d:?}");
        assert_eq!(d.charges, vec![usdc(400)]);
        assert_eq!(
            eval(&p, "gw", &from(owner, DEST, 501), &none).rule,
            "limits.per_tx"
        );
        assert_eq!(
            eval(&p, "gw", &from(owner, STRANGER, 1), &none).rule,
            "whitelist"
        );
    }
    // Pulling tokens into the key moves none of the key's: not charged
    let d = eval(&p, "gw", &from(STRANGER, SELF, 10_000), &none);
    assert!(d.allow && d.charges.is_empty(), "{d:?}");
    assert_eq!(
        eval(&p, "desk", &from(STRANGER, SELF, 1), &none).rule,
        "roles"
    );
}

#[test]
fn policy__should_refuse_bad_function_lists() {
    let cases = [
        (
            POLICY.replace("recipients = [3]", "recipients = [4]"),
            "a uint256, not an address",
        ),
        (
            POLICY.replace("recipients = [3]", "recipients = [9]"),
            "has 5 arguments",
        ),
        (
            POLICY.replace("multiHop(address[],uint256)", "multiHop(address[], uint256)"),
            "without spaces",
        ),
        (
            POLICY.replace("deposit()", "deposit(uint)"),
            "canonical type uint256",
        ),
        (
            POLICY.replace("deposit()", "multiHop(address[],uint256)"),
            "listed before",
        ),
        (
            POLICY.replace(
                "kind = \"destination\"\nlabel = \"treasury\"",
                "kind = \"destination\"\nlabel = \"treasury\"\nfunctions = [{ signature = \"deposit()\" }]",
            ),
            "only for Ethereum entries of kind \"contract\"",
        ),
        (
            POLICY.replace("{ signature = \"deposit()\" }", "{ signature = \"deposit()\", to = [1] }"),
            "unknown field",
        ),
    ];
    for (text, needle) in cases {
        let e = Policy::parse(&text, CLIENTS).unwrap_err().to_string();
        assert!(e.contains(needle), "expected {needle:?} in: {e}");
        assert!(e.contains("keys[0]") || needle == "unknown field", "{e}");
    }
}

#[test]
fn signer__should_sign_only_domain_separated_messages() {
    let p = policy();
    let none = Used::default();
    let msg = |hash| Intent::Message { hash };
    use tss_core::ecdsa::sign::HashAlgo;
    // Given a signer: EIP-191 and Bitcoin signed messages are allowed
    for h in [HashAlgo::Eip191, HashAlgo::BitcoinMessage] {
        let d = p.evaluate("ops", "wallet", &msg(h), &none);
        assert!(d.allow, "{d:?}");
        // and need the role
        assert_eq!(p.evaluate("gw", "wallet", &msg(h), &none).rule, "roles");
    }
    // Bare hashes of caller bytes (which can be transaction signing hashes)
    // need raw_digest, whatever the role
    for h in [
        HashAlgo::Sha256,
        HashAlgo::Keccak256,
        HashAlgo::DoubleSha256,
    ] {
        let d = p.evaluate("ops", "wallet", &msg(h), &none);
        assert_eq!(d.rule, "raw_digest", "{d:?}");
        assert!(d.reason.contains("EIP191"), "{}", d.reason);
        // a client listed in raw_digest may
        assert!(p.evaluate("raw", "wallet", &msg(h), &none).allow, "{h:?}");
        // but only for the key that lists it (no "*" entry here)
        assert_eq!(p.evaluate("raw", "other", &msg(h), &none).rule, "keys");
    }
    assert!(p.evaluate("raw", "wallet", &Intent::RawDigest, &none).allow);
    assert_eq!(
        p.evaluate("ops", "wallet", &Intent::RawDigest, &none).rule,
        "raw_digest"
    );
    // raw_digest is not the signer role: domain-separated modes need it
    assert_eq!(
        p.evaluate("raw", "wallet", &msg(HashAlgo::Eip191), &none)
            .rule,
        "roles"
    );
}
