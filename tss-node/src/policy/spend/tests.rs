use std::sync::Arc;

use tss_core::chain::btc::{InputSummary, Network, OutputSummary, OwnSpend, PsbtSummary};
use tss_core::secret::Passphrase;

use super::*;
use crate::policy::{Intent, Policy};

/// P2WPKH of private key 1 (BIP 173 test vector), whitelisted.
const DEST_SCRIPT: &str = "0014751e76e8199196d454941c45d1b3a323f1433bd6";
const OWN_SCRIPT: &str = "0014000000000000000000000000000000000000000a";

const POLICY: &str = r#"
version = 1

[clients.gw]
roles = ["withdrawer"]

[[keys]]
key = "wallet"
chains = ["bitcoin"]

[[keys.whitelist]]
chain = "bitcoin"
address = "bc1qw508d6qejxtdg4y5r3zarvary0c5xw7kv8f3t4"
kind = "destination"

[[keys.limits]]
chain = "bitcoin"
asset = "native"
per_tx = "100000"
per_24h = "150000"
"#;

const BTC: Chain = Chain::Bitcoin(Network::Bitcoin);

struct Fixture {
    _dir: tempfile::TempDir,
    store: Store,
    ledger: Arc<Ledger>,
    policy: Policy,
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::create(dir.path(), &Passphrase::new("pw".into())).unwrap();
    Fixture {
        _dir: dir,
        store,
        ledger: Arc::default(),
        policy: Policy::parse(POLICY, &["gw"]).unwrap(),
    }
}

fn outpoint(n: u8) -> String {
    format!("{}:0", hex::encode([n; 32]))
}

/// A PSBT summary of transaction `txid`: inputs `(outpoint byte, amount,
/// the key's?)`, outputs `(script hex, amount)`; the fee is what is left.
fn summary(txid: u8, inputs: &[(u8, u64, bool)], outputs: &[(&str, u64)]) -> PsbtSummary {
    let total_in: u64 = inputs.iter().map(|i| i.1).sum();
    let total_out: u64 = outputs.iter().map(|o| o.1).sum();
    PsbtSummary {
        network: Network::Bitcoin,
        txid: [txid; 32],
        txid_hex: hex::encode([txid; 32]),
        inputs: inputs
            .iter()
            .map(|&(n, value, ours)| InputSummary {
                outpoint: outpoint(n),
                value,
                ours,
                spend: ours.then_some(OwnSpend::P2wpkh),
                sighash_preimage: ours.then(|| vec![1]),
                sighash: ours.then_some([2; 32]),
            })
            .collect(),
        outputs: outputs
            .iter()
            .map(|&(script, value)| OutputSummary {
                script_pubkey: hex::decode(script).unwrap(),
                address: None,
                value,
                to_self: script == OWN_SCRIPT,
            })
            .collect(),
        fee: total_in - total_out,
    }
}

impl Fixture {
    fn decide(&self, s: &PsbtSummary) -> (Decision, Option<Reservation>) {
        self.ledger.decide(&self.store, "wallet", s.txid, |u| {
            self.policy.evaluate("gw", "wallet", &Intent::Bitcoin(s), u)
        })
    }

    /// Decides and, if allowed, releases (commits).
    fn sign(&self, s: &PsbtSummary) -> Decision {
        let (d, r) = self.decide(s);
        if let Some(r) = r {
            r.commit(&self.store).unwrap();
        }
        d
    }

    /// What counts against the 24 h limit for a transaction other than
    /// any of the tests'.
    fn used(&self) -> U256 {
        let mut used = U256::ZERO;
        let _ = self.ledger.decide(&self.store, "wallet", [0xee; 32], |u| {
            used = u.used_24h("wallet", BTC, Asset::Native);
            Decision {
                allow: false,
                rule: "test".into(),
                reason: String::new(),
                charges: vec![],
                claims: None,
            }
        });
        used
    }
}

/// One transaction spending two outputs of the key (60 000 and 40 000 sat)
/// to the whitelisted destination: 99 000 sat, fee 1 000.
fn honest() -> PsbtSummary {
    summary(
        9,
        &[(1, 60_000, true), (2, 40_000, true)],
        &[(DEST_SCRIPT, 99_000)],
    )
}

/// The same transaction, claiming only input `own` as the key's.
fn split(own: u8) -> PsbtSummary {
    let (a, b) = if own == 1 {
        (true, false)
    } else {
        (false, true)
    };
    summary(
        9,
        &[(1, 60_000, a), (2, 40_000, b)],
        &[(DEST_SCRIPT, 99_000)],
    )
}

#[test]
fn ledger__should_refuse_a_second_psbt_of_one_transaction_claiming_other_own_inputs() {
    // Given the first split PSBT was allowed and released (60 000 sat leave
    // the key as it claims)
    let f = fixture();
    let d = f.sign(&split(1));
    assert!(d.allow, "{d:?}");
    assert_eq!(f.used(), U256::from(60_000));

    // When the same transaction comes back claiming the other input, or
    // both (the honest PSBT)
    for s in [split(2), honest()] {
        let (d, r) = f.decide(&s);
        // Then it is refused by the claims rule, saying what differs
        assert!(!d.allow && r.is_none(), "{d:?}");
        assert_eq!(d.rule, CLAIMS_RULE);
        assert!(d.reason.contains("released at unix"), "{}", d.reason);
        assert!(
            d.reason.contains("send that same PSBT again"),
            "{}",
            d.reason
        );
    }
    let (d, _) = f.decide(&split(2));
    assert!(
        d.reason.contains(&format!(
            "input {} was the key's (60000 sat) and now is not",
            outpoint(1)
        )),
        "{}",
        d.reason
    );
    let (d, _) = f.decide(&honest());
    assert!(
        d.reason.contains(&format!(
            "input {} (40000 sat) is now the key's",
            outpoint(2)
        )),
        "{}",
        d.reason
    );
    // And nothing more was counted
    assert_eq!(f.used(), U256::from(60_000));
}

#[test]
fn ledger__should_refuse_different_claims_of_one_transaction_while_both_are_in_flight() {
    // Given the first split PSBT is allowed and still being signed
    let f = fixture();
    let (d, held) = f.decide(&split(1));
    assert!(d.allow && held.is_some(), "{d:?}");

    // When the second split PSBT of the same transaction is decided
    let (d, r) = f.decide(&split(2));

    // Then it is refused, while the same claims again (the next input of
    // the same PSBT) are allowed
    assert_eq!(d.rule, CLAIMS_RULE, "{d:?}");
    assert!(
        d.reason.contains("is being signed on other claims"),
        "{}",
        d.reason
    );
    assert!(r.is_none());
    let (d, again) = f.decide(&split(1));
    assert!(d.allow && again.is_some(), "{d:?}");
    // And once the first is dropped unreleased, the other claims may go
    drop(held);
    drop(again);
    let (d, _) = f.decide(&split(2));
    assert!(d.allow, "{d:?}");
}

#[test]
fn ledger__should_refuse_the_true_request_after_a_tiny_claimed_amount() {
    // Given the transaction was first released on a tiny claimed amount of
    // the key's input (its signature would not verify, but the txid is
    // registered), the rest claimed as a stranger's input
    let f = fixture();
    let tiny = summary(
        9,
        &[(1, 1_000, true), (2, 99_000, false)],
        &[(DEST_SCRIPT, 99_000)],
    );
    let d = f.sign(&tiny);
    assert!(d.allow, "{d:?}");
    assert_eq!(f.used(), U256::from(1_000));

    // When the true request for the same transaction comes
    let d = f.sign(&honest());

    // Then it is refused, and naming the input's first amount
    assert_eq!(d.rule, CLAIMS_RULE, "{d:?}");
    assert!(
        d.reason.contains(&format!(
            "input {} was 1000 sat and now is 60000 sat",
            outpoint(1)
        )),
        "{}",
        d.reason
    );
    // And the outpoint stays bound to its amount in another transaction too
    let other = summary(7, &[(1, 60_000, true)], &[(DEST_SCRIPT, 59_000)]);
    let d = f.sign(&other);
    assert_eq!(d.rule, CLAIMS_RULE, "{d:?}");
    assert!(d.reason.contains("as 1000 sat"), "{}", d.reason);
}

#[test]
fn ledger__should_allow_the_same_claims_again_and_count_them_once() {
    // Given the honest PSBT was released
    let f = fixture();
    assert!(f.sign(&honest()).allow);
    assert_eq!(f.used(), U256::from(100_000));

    // When it is signed again (a retry, or the co-signer's next input)
    let d = f.sign(&honest());

    // Then it is allowed and still counted once
    assert!(d.allow, "{d:?}");
    assert_eq!(f.used(), U256::from(100_000));
    // And a replacement (another txid spending the same outpoints with the
    // same amounts) is allowed and charged again, up to the 24 h limit
    let rbf = summary(
        8,
        &[(1, 60_000, true), (2, 40_000, true)],
        &[(DEST_SCRIPT, 98_000)],
    );
    let d = f.sign(&rbf);
    assert_eq!(d.rule, "limits.per_24h", "100000 + 100000 > 150000: {d:?}");
    let small = summary(
        6,
        &[(1, 60_000, true)],
        &[(DEST_SCRIPT, 49_000), (OWN_SCRIPT, 10_000)],
    );
    assert!(f.sign(&small).allow);
    assert_eq!(f.used(), U256::from(150_000));
}

#[test]
fn ledger__should_bind_claims_of_a_transaction_that_charges_nothing() {
    // Given a consolidation paying only the key back, first released
    // claiming one of its two inputs (the other as a stranger's, making
    // the claimed fee zero)
    let f = fixture();
    let first = summary(
        9,
        &[(1, 60_000, true), (2, 40_000, false)],
        &[(OWN_SCRIPT, 100_000)],
    );
    let (d, r) = f.decide(&first);
    assert!(d.allow && d.charges.is_empty(), "{d:?}");
    assert!(r.is_some(), "claims are held even with nothing to charge");
    r.unwrap().commit(&f.store).unwrap();

    // When the same transaction claims the other input as the key's: the
    // assembled transaction would give 40 000 sat to the miners
    let second = summary(
        9,
        &[(1, 60_000, false), (2, 40_000, true)],
        &[(OWN_SCRIPT, 100_000)],
    );
    let d = f.sign(&second);

    // Then it is refused
    assert_eq!(d.rule, CLAIMS_RULE, "{d:?}");
}

#[test]
fn ledger__should_read_charges_recorded_before_claims_were() {
    // Given a charge stored in the layout of earlier versions (no claims)
    let f = fixture();
    let old = Spent {
        amount: U256::from(70_000).to_be_bytes::<32>().to_vec(),
        unix: now(),
    };
    let k = format!("wallet\0bitcoin\0native\0{}", hex::encode([9u8; 32]));
    f.store
        .put(RecordKind::Spend, k.as_bytes(), &cbor(&old).unwrap())
        .unwrap();

    // Then it counts, also for a request of that same txid
    assert_eq!(f.used(), U256::from(70_000));
    let d = f.sign(&honest());
    assert_eq!(d.rule, "limits.per_24h", "70000 + 100000 > 150000: {d:?}");
    // And a release of that txid binds it and adds its charge to the old
    let d = f.sign(&split(1));
    assert!(d.allow, "70000 + 60000 fits: {d:?}");
    assert_eq!(f.used(), U256::from(130_000));
    assert_eq!(f.sign(&split(1)).rule, "allow", "bound: counted once");
    assert_eq!(f.used(), U256::from(130_000));
    assert_eq!(f.sign(&honest()).rule, CLAIMS_RULE);
}

/// The spend ledger's record keys (with the chain and asset names they
/// embed): a change is a store format change (docs/FORMATS.md), never a
/// silent edit of the expected bytes.
#[test]
fn spend_record_keys__should_keep_their_layout() {
    use crate::keys;
    use crate::policy::{Asset, Chain};
    let text = |k: &[u8]| String::from_utf8_lossy(k).into_owned();
    let eth = Chain::Ethereum(1);
    assert_eq!(
        text(&keys::spend_prefix("key-1", eth, Asset::Native)),
        "key-1\0ethereum:1\0native\0"
    );
    assert_eq!(
        text(&keys::spend_charge(
            "key-1",
            eth,
            Asset::Native,
            &[0xd1; 32]
        )),
        format!("key-1\0ethereum:1\0native\0{}", hex::encode([0xd1; 32]))
    );
    let btc = Chain::Bitcoin(tss_core::chain::btc::Network::BitcoinTestnet);
    assert_eq!(
        text(&keys::spend_claims("key-1", btc, &[0x1d; 32])),
        format!("key-1\0{btc}\0claims\0{}", hex::encode([0x1d; 32]))
    );
    assert_eq!(
        text(&keys::spend_outpoint("key-1", btc, "ab:1")),
        format!("key-1\0{btc}\0outpoint\0ab:1")
    );
    assert_eq!(btc.to_string(), "bitcoin-testnet");
}
