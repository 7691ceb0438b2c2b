//! Each custodian signs only what its own policy allows: Ethereum
//! transactions and Bitcoin PSBTs decoded by every node, whitelists, limits
//! that survive restarts, per-node differences, SIGHUP reload, the audit
//! log. Signed transactions are checked with alloy and rust-bitcoin
//! (libbitcoinconsensus), independently of the node.

use std::time::{Duration, Instant};

use alloy_consensus::transaction::SignerRecoverable;
use alloy_consensus::{Transaction, TxEnvelope};
use alloy_eips::eip2718::Decodable2718;
use bitcoin::hashes::Hash;
use proto::v1 as pb;
use tonic::Code;

use crate::harness::{step, Cluster};

const CHAIN: u64 = 11_155_111;
/// Whitelisted at every node.
const DEST: &str = "0x1111111111111111111111111111111111111111";
/// Whitelisted at no node.
const STRANGER: &str = "0x2222222222222222222222222222222222222222";
/// Whitelisted at node 0 only.
const ONLY_A: &str = "0x4444444444444444444444444444444444444444";
/// Whitelisted at nodes 0 and 1.
const A_AND_B: &str = "0x5555555555555555555555555555555555555555";
/// Whitelisted by the policy reloaded on SIGHUP.
const LATER: &str = "0x6666666666666666666666666666666666666666";
const TOKEN: &str = "0xa0b86991c6218b36c1d19d4a2e9eb0ce3606eb48";
/// A DEX router whitelisted as a contract at every node.
const ROUTER: &str = "0x7777777777777777777777777777777777777777";
const SWAP: &str = "swapExactTokensForTokens(uint256,uint256,address[],address,uint256)";

fn dest_entry(chain: &str, address: &str) -> String {
    format!(
        "\n[[keys.whitelist]]\nchain = \"{chain}\"\naddress = \"{address}\"\nkind = \"destination\"\n"
    )
}

/// Gateway may withdraw, trade and sign messages; ETH (1000 wei a transaction,
/// 1500 wei a day) and the token on Sepolia; BTC on testnet.
pub(crate) fn policy(eth_dests: &[&str], btc_dests: &[String]) -> String {
    let mut s = format!(
        "version = 1\n\n[clients.gateway]\nroles = [\"withdrawer\", \"trader\", \"signer\"]\n\n\
         [[keys]]\nkey = \"*\"\nchains = [\"ethereum:{CHAIN}\", \"bitcoin-testnet\"]\n"
    );
    for d in eth_dests {
        s += &dest_entry(&format!("ethereum:{CHAIN}"), d);
    }
    for d in btc_dests {
        s += &dest_entry("bitcoin-testnet", d);
    }
    s += &format!(
        "\n[[keys.limits]]\nchain = \"ethereum:{CHAIN}\"\nasset = \"native\"\nper_tx = \"1000\"\nper_24h = \"1500\"\n\
         \n[[keys.limits]]\nchain = \"ethereum:{CHAIN}\"\nasset = \"{TOKEN}\"\nper_tx = \"1000000\"\nper_24h = \"10000000\"\n\
         \n[[keys.limits]]\nchain = \"bitcoin-testnet\"\nasset = \"native\"\nper_tx = \"100000\"\nper_24h = \"1000000\"\n"
    );
    s
}

fn eth_policy(i: usize) -> String {
    let mut dests = vec![DEST];
    if i == 0 {
        dests.push(ONLY_A);
    }
    if i <= 1 {
        dests.push(A_AND_B);
    }
    policy(&dests, &[])
        + &format!(
            "\n[[keys.whitelist]]\nchain = \"ethereum:{CHAIN}\"\naddress = \"{ROUTER}\"\nkind = \"contract\"\n\
             functions = [{{ signature = \"{SWAP}\", recipients = [3] }}]\n"
        )
}

fn word(address: &str) -> [u8; 32] {
    let mut w = [0u8; 32];
    w[12..].copy_from_slice(
        address
            .parse::<alloy_primitives::Address>()
            .unwrap()
            .as_slice(),
    );
    w
}

fn selector(signature: &str) -> Vec<u8> {
    alloy_primitives::keccak256(signature.as_bytes())[..4].to_vec()
}

/// An EIP-1559 call of `to` with `data` (no value).
fn call(nonce: u64, to: &str, data: Vec<u8>) -> Vec<u8> {
    use alloy_consensus::SignableTransaction;
    let tx = alloy_consensus::TxEip1559 {
        chain_id: CHAIN,
        nonce,
        gas_limit: 200_000,
        max_fee_per_gas: 2,
        max_priority_fee_per_gas: 1,
        to: alloy_primitives::TxKind::Call(to.parse().unwrap()),
        input: data.into(),
        ..Default::default()
    };
    let mut out = Vec::new();
    tx.encode_for_signing(&mut out);
    out
}

/// ERC-20 approve(ROUTER, amount) on the token.
fn approve(nonce: u64, amount: alloy_primitives::U256) -> Vec<u8> {
    let mut data = selector("approve(address,uint256)");
    data.extend_from_slice(&word(ROUTER));
    data.extend_from_slice(&amount.to_be_bytes::<32>());
    call(nonce, TOKEN, data)
}

/// A swap of 1000 tokens along [TOKEN, STRANGER] paying `to`.
fn swap(nonce: u64, to: &str) -> Vec<u8> {
    let u = |v: u64| alloy_primitives::U256::from(v).to_be_bytes::<32>();
    let mut data = selector(SWAP);
    for w in [
        u(1000),
        u(1),
        u(0xa0),
        word(to),
        u(u64::MAX),
        u(2),
        word(TOKEN),
        word(STRANGER),
    ] {
        data.extend_from_slice(&w);
    }
    call(nonce, ROUTER, data)
}

fn transfer(nonce: u64, to: &str, wei: u64) -> Vec<u8> {
    tss_node::client::eip1559_transfer(CHAIN, nonce, to, &wei.to_string(), None, 21_000, 2, 1)
        .unwrap()
}

fn erc20(nonce: u64, to: &str, amount: u64) -> Vec<u8> {
    tss_node::client::eip1559_transfer(
        CHAIN,
        nonce,
        to,
        &amount.to_string(),
        Some(TOKEN),
        60_000,
        2,
        1,
    )
    .unwrap()
}

fn eth_request(tx: Vec<u8>) -> pb::SignEthereumTransactionRequest {
    pb::SignEthereumTransactionRequest {
        key_id: "hot".into(),
        unsigned_tx: tx,
        chain_id: CHAIN,
        request_id: rand::random::<[u8; 16]>().to_vec(),
        ..Default::default()
    }
}

async fn sign_eth(
    cluster: &Cluster,
    via: usize,
    tx: Vec<u8>,
) -> Result<pb::SignEthereumTransactionResponse, tonic::Status> {
    let mut c = cluster.client(via, "gateway").await;
    c.sign_ethereum_transaction(eth_request(tx))
        .await
        .map(|r| r.into_inner())
}

/// Decodes the raw transaction with alloy and checks its sender, hash and
/// contents.
fn check_signed(
    r: &pb::SignEthereumTransactionResponse,
    unsigned: &[u8],
    address: &str,
) -> TxEnvelope {
    let env = TxEnvelope::decode_2718(&mut r.raw_transaction.as_slice()).expect("alloy decodes it");
    let sender = env.recover_signer().expect("recovers a sender");
    assert_eq!(
        sender.to_checksum(None),
        address,
        "the sender is the key's address"
    );
    assert_eq!(env.tx_hash().as_slice(), r.tx_hash.as_slice());
    assert_eq!(env.chain_id(), Some(CHAIN));
    // The signed transaction is the unsigned one plus a signature.
    assert_eq!(
        env.signature_hash().as_slice(),
        alloy_primitives::keccak256(unsigned).as_slice()
    );
    env
}

fn assert_denied(r: Result<impl std::fmt::Debug, tonic::Status>, rule: &str) -> String {
    let s = r.expect_err("must be refused");
    assert_eq!(s.code(), Code::PermissionDenied, "{s:?}");
    assert!(
        s.message().contains(&format!("rule {rule}")),
        "expected rule {rule}: {}",
        s.message()
    );
    s.message().to_owned()
}

fn assert_invalid(r: Result<impl std::fmt::Debug, tonic::Status>, needle: &str) {
    let s = r.expect_err("must be refused");
    assert_eq!(s.code(), Code::InvalidArgument, "{s:?}");
    assert!(
        s.message().contains(needle),
        "expected {needle:?}: {}",
        s.message()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn policy__should_sign_only_what_each_nodes_policy_allows_for_ethereum() {
    let t0 = Instant::now();
    // Given three custodians with different whitelists (a small pool, so
    // that transactions also take the presignature path)
    let mut cluster = Cluster::start_with(|i, cfg| {
        cfg.presign.target = 2;
        let path = cfg.policy.as_ref().expect("demo clusters have a policy");
        std::fs::write(path, eth_policy(i)).expect("write policy");
    })
    .await;
    let key = cluster.keygen(0, "hot").await;
    let address = key.eth_address.clone();
    step(t0, "key ready");

    // A whitelisted transfer is signed; alloy recovers the key's address
    let tx = transfer(0, DEST, 1000);
    let r = sign_eth(&cluster, 1, tx.clone()).await.expect("signed");
    let env = check_signed(&r, &tx, &address);
    assert_eq!(env.to(), Some(DEST.parse().unwrap()));
    assert_eq!(r.from, address);
    // And an ERC-20 transfer to a whitelisted address
    let tx = erc20(1, DEST, 500_000);
    let r = sign_eth(&cluster, 2, tx.clone()).await.expect("signed");
    let env = check_signed(&r, &tx, &address);
    assert_eq!(env.to(), Some(TOKEN.parse().unwrap()));
    assert_eq!(&env.input()[..4], &[0xa9, 0x05, 0x9c, 0xbb]);
    step(t0, "transfer and ERC-20 transfer signed and recovered");

    // Trading: an unlimited approval exceeds the token's per-transaction
    // limit; a bounded one is signed (and counts against the token's limits)
    use alloy_primitives::U256;
    assert_denied(
        sign_eth(&cluster, 0, approve(10, U256::MAX)).await,
        "limits.per_tx",
    );
    let tx = approve(10, U256::from(1_000_000u64));
    check_signed(
        &sign_eth(&cluster, 1, tx.clone()).await.expect("signed"),
        &tx,
        &address,
    );
    // The listed swap paying an attacker is refused at every node, as
    // coordinator; paying the key itself is signed
    for i in 0..3 {
        let m = assert_denied(
            sign_eth(&cluster, i, swap(11, STRANGER)).await,
            "recipients",
        );
        assert!(m.contains("argument 3"), "{m}");
    }
    let own = address.to_lowercase();
    let tx = swap(11, &own);
    check_signed(
        &sign_eth(&cluster, 2, tx.clone()).await.expect("signed"),
        &tx,
        &address,
    );
    // Another function of the router is not listed
    let mut sweep = selector("sweep(address)");
    sweep.extend_from_slice(&word(STRANGER));
    assert_denied(
        sign_eth(&cluster, 0, call(12, ROUTER, sweep)).await,
        "functions",
    );
    step(
        t0,
        "trader: approval capped, swap to an attacker refused, swap to the key signed",
    );

    // Messages: the signer role signs EIP-191 personal messages (the
    // digest checked against alloy's); a bare SHA-256 needs raw_digest
    let mut c = cluster.client(0, "gateway").await;
    let msg = b"proof of reserves".to_vec();
    let r = c
        .sign(pb::SignRequest {
            key_id: "hot".into(),
            message: msg.clone(),
            hash: pb::HashAlgorithm::Eip191 as i32,
            request_id: rand::random::<[u8; 16]>().to_vec(),
            ..Default::default()
        })
        .await
        .expect("EIP-191 message signed")
        .into_inner();
    let digest = alloy_primitives::eip191_hash_message(&msg);
    assert_eq!(r.digest, digest.to_vec());
    crate::harness::assert_valid(&key.public_key, digest.as_slice(), &r);
    assert_denied(
        c.sign(pb::SignRequest {
            key_id: "hot".into(),
            message: msg,
            hash: pb::HashAlgorithm::Sha256 as i32,
            request_id: rand::random::<[u8; 16]>().to_vec(),
            ..Default::default()
        })
        .await,
        "raw_digest",
    );
    step(t0, "EIP-191 message signed; bare SHA-256 refused");

    // A recipient no one whitelisted is refused by every node as coordinator
    for i in 0..3 {
        let m = assert_denied(
            sign_eth(&cluster, i, transfer(2, STRANGER, 1)).await,
            "whitelist",
        );
        assert!(m.starts_with(tss_node::cluster::NAMES[i]), "{m}");
        let m = assert_denied(
            sign_eth(&cluster, i, erc20(2, STRANGER, 1)).await,
            "whitelist",
        );
        assert!(m.contains("ERC-20 recipient"), "{m}");
    }
    // Value above the per-transaction limit
    assert_denied(
        sign_eth(&cluster, 0, transfer(2, DEST, 1001)).await,
        "limits.per_tx",
    );
    step(
        t0,
        "unknown recipients and over-limit values denied at every node",
    );

    // Only node 0 allows ONLY_A: both co-signers refuse, with their reasons
    let m = assert_denied(
        sign_eth(&cluster, 0, transfer(2, ONLY_A, 0)).await,
        "whitelist",
    );
    assert!(m.contains("every co-signer refused"), "{m}");
    assert!(
        m.contains(tss_node::cluster::NAMES[1]) && m.contains(tss_node::cluster::NAMES[2]),
        "{m}"
    );
    // Nodes 0 and 1 allow A_AND_B: signed although node 2 refuses
    let tx = transfer(2, A_AND_B, 0);
    let r = sign_eth(&cluster, 0, tx.clone())
        .await
        .expect("two allow it");
    check_signed(&r, &tx, &address);
    let signers = r.signature.as_ref().unwrap().signers.clone();
    assert!(
        !signers.contains(&tss_node::cluster::NAMES[2].to_string()),
        "{signers:?}"
    );
    // Through node 2 it is refused outright
    assert_denied(
        sign_eth(&cluster, 2, transfer(2, A_AND_B, 0)).await,
        "whitelist",
    );
    step(t0, "per-node policies: one is not enough, two are");

    // Rolling 24 h (1500 wei a day): each node counts what it released. The
    // 1000 above was released by node 1 and one co-signer, so through any
    // coordinator at least two nodes refuse 600 more
    for i in 0..3 {
        let m = assert_denied(
            sign_eth(&cluster, i, transfer(3, DEST, 600)).await,
            "limits.per_24h",
        );
        assert!(m.contains("1000 of native"), "{m}");
    }
    step(t0, "24 h limit reached; restarting every node");
    for i in 0..3 {
        cluster.kill(i);
    }
    for i in 0..3 {
        cluster.spawn(i);
    }
    for i in 0..3 {
        cluster.wait_healthy(i).await;
    }
    for i in 0..3 {
        assert_denied(
            sign_eth(&cluster, i, transfer(3, DEST, 600)).await,
            "limits.per_24h",
        );
    }
    // What was denied did not count: 500 still fits
    let tx = transfer(3, DEST, 500);
    check_signed(
        &sign_eth(&cluster, 2, tx.clone()).await.unwrap(),
        &tx,
        &address,
    );
    step(
        t0,
        "the counters survived the restart and count only released signatures",
    );

    // Malformed input says what is wrong
    assert_invalid(
        sign_eth(&cluster, 0, vec![0x02, 0xc0, 0x01]).await,
        "unsigned_tx",
    );
    let mut wrong_chain = eth_request(transfer(5, DEST, 1));
    wrong_chain.chain_id = 1;
    let mut c = cluster.client(0, "gateway").await;
    assert_invalid(
        c.sign_ethereum_transaction(wrong_chain).await,
        "chain id 11155111",
    );
    // transfer(address,uint256) calldata cut short by 8 bytes
    {
        use alloy_consensus::SignableTransaction;
        let mut data = vec![0xa9, 0x05, 0x9c, 0xbb];
        data.extend_from_slice(&[0u8; 56]);
        let tx = alloy_consensus::TxEip1559 {
            chain_id: CHAIN,
            nonce: 5,
            gas_limit: 60_000,
            max_fee_per_gas: 2,
            max_priority_fee_per_gas: 1,
            to: alloy_primitives::TxKind::Call(TOKEN.parse().unwrap()),
            input: data.into(),
            ..Default::default()
        };
        let mut out = Vec::new();
        tx.encode_for_signing(&mut out);
        assert_invalid(sign_eth(&cluster, 0, out).await, "truncated calldata");
    }
    step(
        t0,
        "malformed RLP, wrong chain id and truncated calldata: INVALID_ARGUMENT",
    );

    // The audit log of node 2 holds the decisions, chained
    let mut admin = cluster.client(2, "admin").await;
    let log = admin
        .audit_log(pb::AuditLogRequest {
            from_seq: 0,
            limit: 1000,
        })
        .await
        .unwrap()
        .into_inner();
    let stored: Vec<tss_node::policy::audit::StoredEntry> =
        log.entries.iter().map(Into::into).collect();
    tss_node::policy::audit::verify_chain(&stored, [0; 32]).expect("hash chain");
    let bodies: Vec<serde_json::Value> = stored
        .iter()
        .map(|e| serde_json::from_slice(&e.body).unwrap())
        .collect();
    assert!(bodies.iter().any(|b| b["decision"] == "deny"
        && b["rule"] == "whitelist"
        && b["intent"]["to"].as_str().map(str::to_lowercase) == Some(STRANGER.into())));
    assert!(bodies.iter().any(|b| b["decision"] == "allow"
        && b["intent"]["call"]["type"] == "erc20_transfer"
        && b["intent"]["call"]["amount"] == "500000"));
    // Node 2 refused ONLY_A as co-signer of node 0
    assert!(bodies.iter().any(|b| b["decision"] == "deny"
        && b["role"].as_str().unwrap_or("").starts_with("co-signer")
        && b["intent"]["to"].as_str() == Some(ONLY_A)));
    assert!(bodies
        .iter()
        .all(|b| b["client"] == "gateway" || b["client"] == "admin"));
    let mut gw = cluster.client(2, "gateway").await;
    assert_eq!(
        gw.audit_log(pb::AuditLogRequest::default())
            .await
            .unwrap_err()
            .code(),
        Code::PermissionDenied,
        "the audit log is for admins"
    );
    step(t0, "audit log read and its chain verified");

    // SIGHUP: a bad file is refused and the old policy stays
    let before = cluster.health(0).await.policy_sha256;
    cluster.write_policy(0, "version = 1\n[clients.mallory]\nroles = []\n");
    cluster.sighup(0);
    let h = wait_for(&cluster, 0, |h| !h.policy_error.is_empty()).await;
    assert!(h.policy_error.contains("mallory"), "{}", h.policy_error);
    assert_eq!(h.policy_sha256, before, "the old policy stays in force");
    assert_denied(
        sign_eth(&cluster, 0, transfer(5, LATER, 0)).await,
        "whitelist",
    );
    // A good file takes effect at every node
    for i in 0..3 {
        let mut text = eth_policy(i);
        text += &dest_entry(&format!("ethereum:{CHAIN}"), LATER);
        cluster.write_policy(i, &text);
        cluster.sighup(i);
    }
    for i in 0..3 {
        let want = {
            use sha2::Digest;
            let mut text = eth_policy(i);
            text += &dest_entry(&format!("ethereum:{CHAIN}"), LATER);
            sha2::Sha256::digest(text.as_bytes()).to_vec()
        };
        wait_for(&cluster, i, |h| {
            h.policy_sha256 == want && h.policy_error.is_empty()
        })
        .await;
    }
    let tx = transfer(5, LATER, 0);
    check_signed(
        &sign_eth(&cluster, 1, tx.clone()).await.unwrap(),
        &tx,
        &address,
    );
    step(t0, "SIGHUP: bad policy refused, good policy applied");

    // The README's gateway commands, through the real tssctl
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_tssctl"))
        .args(["eth-tx", "--chain-id", &CHAIN.to_string(), "--nonce", "6"])
        .args(["--to", DEST, "--amount", "0", "--gas-limit", "21000"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let tx_hex = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    let chain = CHAIN.to_string();
    let out = cluster.tssctl(
        0,
        "gateway",
        &[
            "sign-eth",
            "--key",
            "hot",
            "--chain-id",
            &chain,
            "--tx",
            &tx_hex,
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let j: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let raw = hex::decode(
        j["raw_transaction"]
            .as_str()
            .unwrap()
            .trim_start_matches("0x"),
    )
    .unwrap();
    let env = TxEnvelope::decode_2718(&mut raw.as_slice()).unwrap();
    assert_eq!(env.recover_signer().unwrap().to_checksum(None), address);
    assert_eq!(
        env.signature_hash().as_slice(),
        alloy_primitives::keccak256(hex::decode(tx_hex.trim_start_matches("0x")).unwrap())
            .as_slice()
    );
    let out = cluster.tssctl(1, "admin", &["audit"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("hash chain verified from the start"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(lines.iter().any(|b| b["decision"] == "deny"));
    assert!(lines.iter().enumerate().all(|(i, b)| b["seq"] == i as u64));
    step(t0, "tssctl eth-tx, sign-eth and audit");
}

async fn wait_for(
    cluster: &Cluster,
    i: usize,
    ok: impl Fn(&pb::HealthResponse) -> bool,
) -> pb::HealthResponse {
    let until = Instant::now() + Duration::from_secs(20);
    loop {
        let h = cluster.health(i).await;
        if ok(&h) {
            return h;
        }
        assert!(
            Instant::now() < until,
            "node {i} health never matched: {h:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

// ---- Bitcoin ----

fn testnet_address(script: &bitcoin::Script) -> String {
    bitcoin::Address::from_script(script, bitcoin::Network::Testnet)
        .unwrap()
        .to_string()
}

fn p2wpkh_of(byte: u8) -> bitcoin::ScriptBuf {
    bitcoin::ScriptBuf::new_p2wpkh(&bitcoin::WPubkeyHash::from_byte_array([byte; 20]))
}

/// A previous transaction paying `value` to `script`.
fn funding(script: &bitcoin::ScriptBuf, value: u64, salt: u8) -> bitcoin::Transaction {
    bitcoin::Transaction {
        version: bitcoin::transaction::Version::TWO,
        lock_time: bitcoin::absolute::LockTime::ZERO,
        input: vec![bitcoin::TxIn {
            previous_output: bitcoin::OutPoint::new(bitcoin::Txid::from_byte_array([salt; 32]), 0),
            ..Default::default()
        }],
        output: vec![bitcoin::TxOut {
            value: bitcoin::Amount::from_sat(value),
            script_pubkey: script.clone(),
        }],
    }
}

/// A PSBT spending `prev` (output 0 of each) to `outputs`.
fn psbt(prev: &[&bitcoin::Transaction], outputs: Vec<(bitcoin::ScriptBuf, u64)>) -> String {
    psbt_claiming(prev, outputs, &[])
}

/// Like [`psbt`], but the `witness_utxo` of the inputs in `stranger`
/// names another script (same amount): the PSBT claims those inputs are
/// not the key's, while the transaction (and its txid) stays the same.
fn psbt_claiming(
    prev: &[&bitcoin::Transaction],
    outputs: Vec<(bitcoin::ScriptBuf, u64)>,
    stranger: &[usize],
) -> String {
    let tx = bitcoin::Transaction {
        version: bitcoin::transaction::Version::TWO,
        lock_time: bitcoin::absolute::LockTime::ZERO,
        input: prev
            .iter()
            .map(|p| bitcoin::TxIn {
                previous_output: bitcoin::OutPoint::new(p.compute_txid(), 0),
                sequence: bitcoin::Sequence::ENABLE_RBF_NO_LOCKTIME,
                ..Default::default()
            })
            .collect(),
        output: outputs
            .into_iter()
            .map(|(script_pubkey, v)| bitcoin::TxOut {
                value: bitcoin::Amount::from_sat(v),
                script_pubkey,
            })
            .collect(),
    };
    let mut p = bitcoin::psbt::Psbt::from_unsigned_tx(tx).unwrap();
    for (i, prev) in prev.iter().enumerate() {
        let mut utxo = prev.output[0].clone();
        if stranger.contains(&i) {
            utxo.script_pubkey = p2wpkh_of(9);
        }
        p.inputs[i].witness_utxo = Some(utxo);
    }
    tss_core::chain::btc::encode_psbt_base64(&p.serialize())
}

async fn sign_psbt(
    cluster: &Cluster,
    via: usize,
    psbt_base64: String,
) -> Result<pb::SignBitcoinPsbtResponse, tonic::Status> {
    let mut c = cluster.client(via, "gateway").await;
    c.sign_bitcoin_psbt(pb::SignBitcoinPsbtRequest {
        key_id: "cold".into(),
        psbt_base64,
        chain: "bitcoin-testnet".into(),
        request_id: rand::random::<[u8; 16]>().to_vec(),
        ..Default::default()
    })
    .await
    .map(|r| r.into_inner())
}

/// Full script verification of the finished transaction with
/// libbitcoinconsensus, and a tampered copy that must fail it.
fn check_spends(r: &pb::SignBitcoinPsbtResponse, prev: &[&bitcoin::Transaction]) {
    assert!(r.complete, "every input is the key's");
    check_tx(&r.tx_hex, &r.txid, prev);
}

fn check_tx(tx_hex: &str, txid: &str, prev: &[&bitcoin::Transaction]) {
    let raw = hex::decode(tx_hex).unwrap();
    let tx: bitcoin::Transaction = bitcoin::consensus::deserialize(&raw).unwrap();
    assert_eq!(tx.compute_txid().to_string(), txid);
    crate::btc_consensus::verify(&tx, prev).expect("passes libbitcoinconsensus");
    let mut tampered = tx.clone();
    tampered.output[0].value += bitcoin::Amount::from_sat(1);
    assert!(
        crate::btc_consensus::verify(&tampered, prev).is_err(),
        "the script check can fail"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn policy__should_sign_a_whitelisted_psbt_with_change_and_deny_other_outputs() {
    let t0 = Instant::now();
    let dest = p2wpkh_of(7);
    let stranger = p2wpkh_of(8);
    let dest_addr = testnet_address(&dest);
    let mut cluster = Cluster::start_with(|_, cfg| {
        cfg.presign.target = 0;
        let path = cfg.policy.as_ref().expect("demo clusters have a policy");
        std::fs::write(path, policy(&[], std::slice::from_ref(&dest_addr))).expect("policy");
    })
    .await;
    let key = cluster.keygen(1, "cold").await;
    let pk = bitcoin::CompressedPublicKey::from_slice(&key.public_key).unwrap();
    let ours = bitcoin::ScriptBuf::new_p2wpkh(&pk.wpubkey_hash());
    // GetKey names the addresses to fund
    let addresses: std::collections::HashMap<_, _> = key
        .addresses
        .iter()
        .map(|a| (a.chain.as_str(), a.address.clone()))
        .collect();
    assert_eq!(
        addresses["bitcoin-testnet"],
        bitcoin::Address::p2wpkh(&pk, bitcoin::Network::Testnet).to_string()
    );
    assert_eq!(
        addresses["bitcoin"],
        bitcoin::Address::p2wpkh(&pk, bitcoin::Network::Bitcoin).to_string()
    );
    assert!(addresses["litecoin"].starts_with("ltc1q"));
    assert_eq!(addresses["ethereum"], key.eth_address);
    step(t0, "key ready; addresses checked");

    // A payment to the whitelisted address with change back to the key
    let f1 = funding(&ours, 100_000, 1);
    let r = sign_psbt(
        &cluster,
        0,
        psbt(&[&f1], vec![(dest.clone(), 30_000), (ours.clone(), 69_000)]),
    )
    .await
    .expect("signed");
    check_spends(&r, &[&f1]);
    assert_eq!(r.signed_inputs, vec![0]);
    // Two inputs of the key
    let f2 = funding(&ours, 50_000, 2);
    let f3 = funding(&ours, 20_000, 3);
    let r = sign_psbt(
        &cluster,
        2,
        psbt(
            &[&f2, &f3],
            vec![(dest.clone(), 60_000), (ours.clone(), 9_000)],
        ),
    )
    .await
    .expect("signed");
    assert_eq!(r.signed_inputs, vec![0, 1]);
    check_spends(&r, &[&f2, &f3]);
    step(
        t0,
        "PSBTs signed, finalised and verified by libbitcoinconsensus",
    );

    // Split attack: one transaction moving 100000 sat of the key's (two
    // inputs), sent as PSBTs that each call only one input the key's. One
    // signature from each would make a valid transaction (each commits to
    // its own input's amount only); the first PSBT binds the txid to its
    // claims at the nodes that signed it, and any two signing pairs share a
    // node, so every later PSBT of that txid on other claims is refused.
    let f7 = funding(&ours, 60_000, 7);
    let f8 = funding(&ours, 40_000, 8);
    let outs = vec![(dest.clone(), 99_000)];
    let first = psbt_claiming(&[&f7, &f8], outs.clone(), &[1]);
    let r = sign_psbt(&cluster, 0, first.clone()).await.expect("signed");
    assert_eq!(r.signed_inputs, vec![0]);
    assert!(!r.complete, "input 1 is claimed to be a stranger's");
    let txid = r.txid.clone();
    for via in 0..3 {
        for other in [
            psbt_claiming(&[&f7, &f8], outs.clone(), &[0]),
            psbt(&[&f7, &f8], outs.clone()),
        ] {
            let m = assert_denied(sign_psbt(&cluster, via, other).await, "limits.claims");
            assert!(m.contains(&txid), "{m}");
            assert!(m.contains("send that same PSBT again"), "{m}");
        }
    }
    // The same claims again (a retry) are signed
    let again = sign_psbt(&cluster, 1, first)
        .await
        .expect("a retry is signed");
    assert_eq!((again.txid, again.signed_inputs), (txid, vec![0]));
    step(t0, "split PSBTs of one transaction refused (limits.claims)");

    // An output to an unknown address, and change to a foreign address
    let f4 = funding(&ours, 100_000, 4);
    let m = assert_denied(
        sign_psbt(
            &cluster,
            1,
            psbt(
                &[&f4],
                vec![
                    (dest.clone(), 30_000),
                    (stranger.clone(), 1_000),
                    (ours.clone(), 68_000),
                ],
            ),
        )
        .await,
        "whitelist",
    );
    assert!(m.contains(&testnet_address(&stranger)), "{m}");
    assert_denied(
        sign_psbt(
            &cluster,
            1,
            psbt(
                &[&f4],
                vec![(dest.clone(), 30_000), (stranger.clone(), 69_000)],
            ),
        )
        .await,
        "whitelist",
    );
    // Above the per-transaction limit of 100000 sat: a payment of 100000
    // leaves the key 101000 with the fee
    let f5 = funding(&ours, 200_000, 5);
    let m = assert_denied(
        sign_psbt(
            &cluster,
            0,
            psbt(
                &[&f5],
                vec![(dest.clone(), 100_000), (ours.clone(), 99_000)],
            ),
        )
        .await,
        "limits.per_tx",
    );
    assert!(m.contains("moves 101000"), "{m}");
    step(
        t0,
        "unknown outputs, foreign change and over-limit spends denied",
    );

    // Malformed PSBTs
    assert_invalid(sign_psbt(&cluster, 0, "not base64!".into()).await, "psbt");
    assert_invalid(
        sign_psbt(
            &cluster,
            0,
            tss_core::chain::btc::encode_psbt_base64(b"psbt\xffjunk"),
        )
        .await,
        "psbt",
    );
    let mut no_utxo = bitcoin::psbt::Psbt::from_unsigned_tx(bitcoin::Transaction {
        version: bitcoin::transaction::Version::TWO,
        lock_time: bitcoin::absolute::LockTime::ZERO,
        input: vec![bitcoin::TxIn {
            previous_output: bitcoin::OutPoint::new(f4.compute_txid(), 0),
            ..Default::default()
        }],
        output: vec![bitcoin::TxOut {
            value: bitcoin::Amount::from_sat(1_000),
            script_pubkey: dest.clone(),
        }],
    })
    .unwrap();
    no_utxo.inputs[0].witness_utxo = None;
    assert_invalid(
        sign_psbt(
            &cluster,
            0,
            tss_core::chain::btc::encode_psbt_base64(&no_utxo.serialize()),
        )
        .await,
        "witness_utxo",
    );
    step(t0, "malformed PSBTs: INVALID_ARGUMENT");

    // The README's command, through the real tssctl (PSBT from a file)
    let f6 = funding(&ours, 40_000, 6);
    let file = cluster.dirs.root.join("payment.psbt");
    std::fs::write(
        &file,
        psbt(&[&f6], vec![(dest.clone(), 20_000), (ours.clone(), 19_000)]),
    )
    .unwrap();
    let arg = format!("@{}", file.display());
    let out = cluster.tssctl(
        2,
        "gateway",
        &[
            "sign-psbt",
            "--key",
            "cold",
            "--chain",
            "bitcoin-testnet",
            "--psbt",
            &arg,
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let j: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(j["complete"], true);
    check_tx(
        j["tx_hex"].as_str().unwrap(),
        j["txid"].as_str().unwrap(),
        &[&f6],
    );
    step(t0, "tssctl sign-psbt");
    cluster.kill(0);
}
