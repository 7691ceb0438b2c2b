use std::collections::HashMap;

use tss_core::chain::btc::{InputSummary, OutputSummary, OwnSpend};
use tss_core::chain::eth::TxKind;

use super::*;

const DEST: &str = "0x1111111111111111111111111111111111111111";
const STRANGER: &str = "0x2222222222222222222222222222222222222222";
const ROUTER: &str = "0x3333333333333333333333333333333333333333";
const USDC: &str = "0xa0b86991c6218b36c1d19d4a2e9eb0ce3606eb48";
/// P2WPKH of private key 1 (BIP 173 test vector).
const BTC_DEST: &str = "bc1qw508d6qejxtdg4y5r3zarvary0c5xw7kv8f3t4";
const BTC_DEST_SCRIPT: &str = "0014751e76e8199196d454941c45d1b3a323f1433bd6";

const POLICY: &str = r#"
version = 1

[clients.gw]
roles = ["withdrawer"]

[clients.desk]
roles = ["trader"]

[clients.ops]
roles = ["signer"]

[[keys]]
key = "wallet"
chains = ["ethereum:1", "bitcoin"]
raw_digest = ["ops"]

[[keys.whitelist]]
chain = "ethereum:1"
address = "0x1111111111111111111111111111111111111111"
kind = "destination"
label = "exchange"

[[keys.whitelist]]
chain = "ethereum:1"
address = "0x3333333333333333333333333333333333333333"
kind = "contract"
label = "router"

[[keys.whitelist]]
chain = "bitcoin"
address = "bc1qw508d6qejxtdg4y5r3zarvary0c5xw7kv8f3t4"
kind = "destination"

[[keys.limits]]
chain = "ethereum:1"
asset = "native"
per_tx = "1_000"
per_24h = "2_500"

[[keys.limits]]
chain = "ethereum:1"
asset = "0xa0b86991c6218b36c1d19d4a2e9eb0ce3606eb48"
per_tx = "500"
per_24h = "500"

[[keys.limits]]
chain = "bitcoin"
asset = "native"
per_tx = "100000"
per_24h = "150000"

[[keys]]
key = "*"
"#;

const CLIENTS: &[&str] = &["gw", "desk", "ops", "admin"];

/// Usage from a fixed table.
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

fn tx(chain_id: u64, to: Option<&str>, value: u64, call: Call) -> UnsignedTx {
    UnsignedTx {
        kind: TxKind::Eip1559,
        chain_id,
        nonce: 7,
        to: to.map(addr),
        value: U256::from(value),
        gas_limit: 21_000,
        call,
        signing_hash: [5; 32],
    }
}

/// The key's own address (private key 1).
const SELF: &str = "0x7E5F4552091A69125d5DfCb7b8C2659029395Bdf";

fn eth_intent(t: &UnsignedTx) -> Intent<'_> {
    Intent::Ethereum {
        tx: t,
        sender: addr(SELF),
    }
}

fn eth(p: &Policy, client: &str, t: &UnsignedTx, used: &Used) -> Decision {
    p.evaluate(client, "wallet", &eth_intent(t), used)
}

#[test]
fn policy__should_allow_a_whitelisted_transfer_within_limits_and_charge_it() {
    let d = eth(
        &policy(),
        "gw",
        &tx(1, Some(DEST), 1000, Call::Transfer),
        &Used::default(),
    );
    assert!(d.allow, "{d:?}");
    assert!(d.reason.contains("exchange"), "{}", d.reason);
    assert_eq!(
        d.charges,
        vec![Charge {
            chain: Chain::Ethereum(1),
            asset: Asset::Native,
            amount: U256::from(1000)
        }]
    );
}

#[test]
fn policy__should_deny_and_name_the_rule() {
    let p = policy();
    let none = Used::default();
    let cases: Vec<(&str, UnsignedTx, &str)> = vec![
        ("gw", tx(1, Some(STRANGER), 1, Call::Transfer), "whitelist"),
        (
            "gw",
            tx(1, Some(DEST), 1001, Call::Transfer),
            "limits.per_tx",
        ),
        ("gw", tx(5, Some(DEST), 1, Call::Transfer), "chains"),
        // A trader may not withdraw, a withdrawer may not trade.
        ("desk", tx(1, Some(DEST), 1, Call::Transfer), "roles"),
        (
            "gw",
            tx(
                1,
                Some(ROUTER),
                0,
                Call::ContractCall {
                    selector: [1, 2, 3, 4],
                    calldata: vec![1, 2, 3, 4],
                },
            ),
            "roles",
        ),
        // A router is a contract, not a destination, and vice versa.
        ("gw", tx(1, Some(ROUTER), 1, Call::Transfer), "whitelist"),
        (
            "desk",
            tx(
                1,
                Some(DEST),
                0,
                Call::ContractCall {
                    selector: [1, 2, 3, 4],
                    calldata: vec![1, 2, 3, 4],
                },
            ),
            "whitelist",
        ),
        // ERC-20 recipients are checked, not just the token contract.
        (
            "gw",
            tx(
                1,
                Some(USDC),
                0,
                Call::Erc20Transfer {
                    recipient: addr(STRANGER),
                    amount: U256::from(1),
                },
            ),
            "whitelist",
        ),
        (
            "gw",
            tx(
                1,
                Some(USDC),
                0,
                Call::Erc20TransferFrom {
                    from: addr(DEST),
                    recipient: addr(STRANGER),
                    amount: U256::from(1),
                },
            ),
            "whitelist",
        ),
        (
            "gw",
            tx(
                1,
                Some(USDC),
                0,
                Call::Erc20Transfer {
                    recipient: addr(DEST),
                    amount: U256::from(501),
                },
            ),
            "limits.per_tx",
        ),
        // A token with no limit moves nothing.
        (
            "gw",
            tx(
                1,
                Some(STRANGER),
                0,
                Call::Erc20Transfer {
                    recipient: addr(DEST),
                    amount: U256::from(1),
                },
            ),
            "limits",
        ),
        (
            "desk",
            tx(
                1,
                Some(USDC),
                0,
                Call::Erc20Approve {
                    spender: addr(STRANGER),
                    amount: U256::MAX,
                },
            ),
            "whitelist",
        ),
        ("gw", tx(1, None, 0, Call::Create), "contract-creation"),
        ("nobody", tx(1, Some(DEST), 1, Call::Transfer), "roles"),
    ];
    for (client, t, rule) in cases {
        let d = eth(&p, client, &t, &none);
        assert!(!d.allow, "{client} {t:?} was allowed");
        assert_eq!(d.rule, rule, "{client} {t:?}: {}", d.reason);
        assert!(d.charges.is_empty());
    }
}

#[test]
fn policy__should_allow_erc20_withdrawals_and_charge_the_token() {
    // (Trading calls and approvals: `policy/eth/tests.rs`.)
    let p = policy();
    let none = Used::default();
    let withdraw = tx(
        1,
        Some(USDC),
        0,
        Call::Erc20Transfer {
            recipient: addr(DEST),
            amount: U256::from(500),
        },
    );
    let d = eth(&p, "gw", &withdraw, &none);
    assert!(d.allow, "{d:?}");
    assert_eq!(
        d.charges,
        vec![Charge {
            chain: Chain::Ethereum(1),
            asset: Asset::Token(addr(USDC)),
            amount: U256::from(500)
        }]
    );
}

#[test]
fn policy__should_deny_past_the_rolling_limit() {
    let p = policy();
    let mut used = Used::default();
    used.0
        .insert((Chain::Ethereum(1), Asset::Native), U256::from(2000));
    let t = tx(1, Some(DEST), 500, Call::Transfer);
    assert!(eth(&p, "gw", &t, &used).allow, "2000 + 500 fits 2500");
    let t = tx(1, Some(DEST), 501, Call::Transfer);
    let d = eth(&p, "gw", &t, &used);
    assert_eq!(d.rule, "limits.per_24h", "{d:?}");
    assert!(d.reason.contains("2000"), "{}", d.reason);
}

#[test]
fn policy__should_gate_messages_and_raw_digests_per_client_and_key() {
    let p = policy();
    let none = Used::default();
    let msg = Intent::Message {
        hash: HashAlgo::Eip191,
    };
    assert!(p.evaluate("ops", "wallet", &msg, &none).allow);
    assert!(
        p.evaluate("ops", "other-key", &msg, &none).allow,
        "\"*\" entry"
    );
    assert_eq!(p.evaluate("gw", "wallet", &msg, &none).rule, "roles");
    assert!(p.evaluate("ops", "wallet", &Intent::RawDigest, &none).allow);
    assert_eq!(
        p.evaluate("ops", "other-key", &Intent::RawDigest, &none)
            .rule,
        "raw_digest"
    );
    // The "*" entry allows no chain.
    let t = tx(1, Some(DEST), 1, Call::Transfer);
    assert_eq!(
        p.evaluate("gw", "other-key", &eth_intent(&t), &none).rule,
        "chains"
    );
    // No policy at all: everything is refused.
    let d = Policy::deny_all().evaluate("ops", "wallet", &msg, &none);
    assert_eq!(d.rule, "keys");
}

fn psbt(outputs: Vec<(Option<&str>, &str, u64, bool)>, fee: u64) -> PsbtSummary {
    let outputs: Vec<OutputSummary> = outputs
        .into_iter()
        .map(|(address, script, value, to_self)| OutputSummary {
            script_pubkey: hex::decode(script).unwrap(),
            address: address.map(str::to_owned),
            value,
            to_self,
        })
        .collect();
    let total: u64 = outputs.iter().map(|o| o.value).sum::<u64>() + fee;
    PsbtSummary {
        network: Network::Bitcoin,
        txid: [9; 32],
        txid_hex: hex::encode([9; 32]),
        inputs: vec![InputSummary {
            outpoint: format!("{}:0", hex::encode([8; 32])),
            value: total,
            ours: true,
            spend: Some(OwnSpend::P2wpkh),
            sighash_preimage: Some(vec![1]),
            sighash: Some([2; 32]),
        }],
        outputs,
        fee,
    }
}

#[test]
fn policy__should_check_every_bitcoin_output() {
    let p = policy();
    let none = Used::default();
    let own = "0014000000000000000000000000000000000000000a";
    let ok = psbt(
        vec![
            (Some(BTC_DEST), BTC_DEST_SCRIPT, 60_000, false),
            (Some("bc1q-own"), own, 500_000, true),
        ],
        1_000,
    );
    let d = p.evaluate("gw", "wallet", &Intent::Bitcoin(&ok), &none);
    assert!(d.allow, "{d:?}");
    assert_eq!(d.charges[0].amount, U256::from(61_000), "payment plus fee");
    // An output to an unknown script, and a "change" output that does not
    // pay the key, are both refused.
    let stranger = "00140101010101010101010101010101010101010101";
    for outs in [
        vec![
            (Some(BTC_DEST), BTC_DEST_SCRIPT, 60_000, false),
            (Some("bc1q-stranger"), stranger, 1, false),
        ],
        vec![
            (Some(BTC_DEST), BTC_DEST_SCRIPT, 60_000, false),
            (Some("bc1q-not-own"), stranger, 500_000, false),
        ],
    ] {
        let d = p.evaluate("gw", "wallet", &Intent::Bitcoin(&psbt(outs, 1_000)), &none);
        assert_eq!(d.rule, "whitelist", "{d:?}");
        assert!(d.reason.contains("output 1"), "{}", d.reason);
    }
    let big = psbt(
        vec![(Some(BTC_DEST), BTC_DEST_SCRIPT, 99_500, false)],
        1_000,
    );
    let d = p.evaluate("gw", "wallet", &Intent::Bitcoin(&big), &none);
    assert_eq!(d.rule, "limits.per_tx", "the fee counts too: {d:?}");
    assert_eq!(
        p.evaluate("desk", "wallet", &Intent::Bitcoin(&ok), &none)
            .rule,
        "roles"
    );
}

#[test]
fn policy__should_refuse_bad_files_with_a_clear_error() {
    let cases = [
        (POLICY.replace("version = 1", "version = 2"), "version"),
        (
            POLICY.replace("[clients.ops]", "[clients.mallory]"),
            "mallory",
        ),
        (
            POLICY.replace("per_tx = \"1_000\"", "per_tx = \"1.5\""),
            "integer",
        ),
        (
            POLICY.replace(
                "0x1111111111111111111111111111111111111111",
                "0x1111111111111111111111111111111111111111ab",
            ),
            "20-byte",
        ),
        (
            POLICY.replace(
                "0xa0b86991c6218b36c1d19d4a2e9eb0ce3606eb48",
                "0xA0b86991c6218b36c1d19d4a2e9eb0ce3606eb49",
            ),
            "checksum",
        ),
        (
            POLICY.replace(
                "chains = [\"ethereum:1\", \"bitcoin\"]",
                "chains = [\"ethereum:1\"]",
            ),
            "not in this key's chains",
        ),
        (
            POLICY.replace("ethereum:1\", \"bitcoin\"]", "ethereum:0\"]"),
            "positive",
        ),
        (
            POLICY.replace("kind = \"contract\"", "kind = \"friend\""),
            "friend",
        ),
        (format!("{POLICY}\nsurprise = 1\n"), "surprise"),
        (
            POLICY.replace(
                "bc1qw508d6qejxtdg4y5r3zarvary0c5xw7kv8f3t4",
                "ltc1qw508d6qejxtdg4y5r3zarvary0c5xw7kgmn4n9",
            ),
            "whitelist[2]",
        ),
    ];
    for (text, needle) in cases {
        let e = Policy::parse(&text, CLIENTS).unwrap_err().to_string();
        assert!(e.contains(needle), "expected {needle:?} in: {e}");
    }
    assert_ne!(policy().sha256(), [0; 32]);
}

#[test]
fn policy__example_file_should_load() {
    let text = include_str!("../../../examples/policy.toml");
    let p = Policy::parse(text, &["gateway-withdrawals", "mm-desk"]).unwrap();
    let none = Used::default();
    let router = "0x68b3465833fb72A70ecDF485E0e4C7bD8665Fc45";
    let sig = "swapExactTokensForTokens(uint256,uint256,address[],address)";
    let word = |a: &str| {
        let mut w = [0u8; 32];
        w[12..].copy_from_slice(addr(a).as_slice());
        w
    };
    let swap_to = |to: &str| {
        let f = tss_core::chain::eth::abi::Function::parse(sig).unwrap();
        let mut data = f.selector().to_vec();
        for w in [
            U256::from(100).to_be_bytes(),
            U256::from(99).to_be_bytes(),
            U256::from(0x80).to_be_bytes(),
            word(to),
            U256::from(2).to_be_bytes(),
            word(USDC),
            word(DEST),
        ] {
            data.extend_from_slice(&w);
        }
        let call = Call::ContractCall {
            selector: f.selector(),
            calldata: data,
        };
        tx(1, Some(router), 0, call)
    };
    // A swap paying the key itself is a trade; paying anyone else is not
    let own = swap_to(SELF);
    let d = p.evaluate("mm-desk", "mm-wallet", &eth_intent(&own), &none);
    assert!(d.allow, "{d:?}");
    let d = p.evaluate(
        "mm-desk",
        "mm-wallet",
        &eth_intent(&swap_to(STRANGER)),
        &none,
    );
    assert_eq!(d.rule, "recipients", "{d:?}");
    assert!(
        !p.evaluate("gateway-withdrawals", "mm-wallet", &eth_intent(&own), &none)
            .allow
    );
}

/// A summary of one transaction with `inputs` (amount, the key's?), paying
/// `dest` to the whitelisted destination and `change` back to the key.
fn psbt_with(inputs: &[(u64, bool)], dest: u64, change: u64) -> PsbtSummary {
    let mut s = psbt(
        vec![
            (Some(BTC_DEST), BTC_DEST_SCRIPT, dest, false),
            (
                Some("bc1q-own"),
                "0014000000000000000000000000000000000000000a",
                change,
                true,
            ),
        ],
        0,
    );
    s.inputs = inputs
        .iter()
        .enumerate()
        .map(|(i, &(value, ours))| InputSummary {
            outpoint: format!("{}:{i}", hex::encode([8; 32])),
            value,
            ours,
            spend: ours.then_some(OwnSpend::P2wpkh),
            sighash_preimage: ours.then(|| vec![1]),
            sighash: ours.then_some([2; 32]),
        })
        .collect();
    let total: u64 = inputs.iter().map(|i| i.0).sum();
    s.fee = total - dest - change;
    s
}

#[test]
fn policy__should_judge_a_bitcoin_transaction_per_tx_on_its_payments_as_a_whole() {
    let p = policy();
    let none = Used::default();
    let judge = |s: &PsbtSummary| p.evaluate("gw", "wallet", &Intent::Bitcoin(s), &none);
    // A transaction paying 119 000 sat away (fee 1 000) is over the
    // per-transaction limit of 100 000 however its PSBT splits the inputs
    // between the key and others: the honest PSBT, and one that calls one
    // of the key's inputs a stranger's (so that only 60 000 seem to leave
    // the key)
    for inputs in [
        [(60_000, true), (60_000, true)],
        [(60_000, true), (60_000, false)],
    ] {
        let d = judge(&psbt_with(&inputs, 119_000, 0));
        assert_eq!(d.rule, "limits.per_tx", "{inputs:?}: {d:?}");
        assert!(d.reason.contains("moves 120000 sat"), "{}", d.reason);
        assert!(d.reason.contains("fee 1000 sat"), "{}", d.reason);
    }
    // Another party's input pays too: its payments count per transaction,
    // while the 24 h charge is what leaves the key (10 000 in, 1 000 back)
    let d = judge(&psbt_with(
        &[(10_000, true), (150_000, false)],
        158_000,
        1_000,
    ));
    assert_eq!(d.rule, "limits.per_tx", "{d:?}");
    let d = judge(&psbt_with(
        &[(10_000, true), (80_000, false)],
        88_000,
        1_000,
    ));
    assert!(d.allow, "{d:?}");
    assert_eq!(d.charges[0].amount, U256::from(9_000));
}

#[test]
fn policy__should_return_the_claims_a_bitcoin_decision_rests_on() {
    let p = policy();
    let none = Used::default();
    // A spend: the claims name the key's inputs and their amounts
    let s = psbt_with(
        &[(30_000, true), (20_000, false), (10_000, true)],
        39_000,
        20_000,
    );
    let d = p.evaluate("gw", "wallet", &Intent::Bitcoin(&s), &none);
    assert!(d.allow, "{d:?}");
    let c = d.claims.expect("claims");
    assert_eq!((c.txid, c.hash), (s.txid, s.claims_hash()));
    let own: Vec<_> = c
        .own
        .iter()
        .map(|o| (o.outpoint.as_str(), o.value))
        .collect();
    let op = |i| format!("{}:{i}", hex::encode([8; 32]));
    assert_eq!(
        own,
        vec![(op(0).as_str(), 30_000), (op(2).as_str(), 10_000)]
    );
    assert_eq!(d.charges[0].amount, U256::from(20_000));
    // A consolidation moves nothing of the key's but is still bound
    let s = psbt_with(&[(30_000, true), (10_000, true)], 0, 40_000);
    let d = p.evaluate("gw", "wallet", &Intent::Bitcoin(&s), &none);
    assert!(
        d.allow && d.charges.is_empty() && d.claims.is_some(),
        "{d:?}"
    );
    // Nothing else carries claims
    let t = tx(1, Some(DEST), 1, Call::Transfer);
    assert!(eth(&p, "gw", &t, &none).claims.is_none());
}

#[test]
fn policy__should_refuse_a_second_entry_for_the_same_key() {
    // Given the sample policy with its "wallet" entry repeated
    let start = POLICY.find("[[keys]]").expect("a keys entry");
    let text = format!("{POLICY}\n{}", &POLICY[start..]);
    // Then the file is refused, naming the second entry
    let e = Policy::parse(&text, CLIENTS).unwrap_err().to_string();
    assert!(e.contains("a second [[keys]] entry for \"wallet\""), "{e}");
}

#[test]
fn policy__should_refuse_an_entry_that_enables_two_bitcoin_family_networks() {
    // A key entry, and the "*" entry, each judged alone
    let two = POLICY.replace(
        "chains = [\"ethereum:1\", \"bitcoin\"]",
        "chains = [\"ethereum:1\", \"bitcoin\", \"litecoin\"]",
    );
    let star = POLICY.replace(
        "key = \"*\"\n",
        "key = \"*\"\nchains = [\"bitcoin-testnet\", \"ethereum:5\", \"litecoin-testnet\"]\n",
    );
    for (text, at, nets) in [
        (two, "keys[0] (wallet)", "bitcoin and litecoin"),
        (star, "keys[1] (*)", "bitcoin-testnet and litecoin-testnet"),
    ] {
        let e = Policy::parse(&text, CLIENTS).unwrap_err().to_string();
        assert!(
            e.starts_with(&format!("{at}: chains enables {nets}")),
            "{e}"
        );
        assert!(e.contains("same P2WPKH script"), "{e}");
        assert!(e.contains("use a separate key for each network"), "{e}");
    }
    // One network per entry is fine, also when "*" enables another one:
    // a key with its own entry never uses "*"
    let text = POLICY.replace("key = \"*\"\n", "key = \"*\"\nchains = [\"litecoin\"]\n");
    let p = Policy::parse(&text, CLIENTS).unwrap();
    let mut ltc = psbt(vec![(Some(BTC_DEST), BTC_DEST_SCRIPT, 1_000, false)], 1_000);
    ltc.network = Network::Litecoin;
    let d = p.evaluate("gw", "wallet", &Intent::Bitcoin(&ltc), &Used::default());
    assert_eq!(d.rule, "chains", "{d:?}");
    assert!(d.reason.contains("litecoin"), "{}", d.reason);
}
