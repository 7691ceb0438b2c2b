//! The command-line tools as an operator runs them.

use std::process::Command;

use crate::harness::walk;
use crate::harness::Cluster;

#[test]
fn tss_node_init__should_create_a_party_and_refuse_bad_setups() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("a");
    let init = |dir: &std::path::Path, pass: Option<&str>| {
        let mut c = Command::new(env!("CARGO_BIN_EXE_tss-node"));
        c.args([
            "init",
            "--name",
            "custodian-a",
            "--listen",
            "127.0.0.1:7101",
            "--dir",
        ])
        .arg(dir);
        c.env_remove("TSS_PASSPHRASE");
        if let Some(p) = pass {
            c.env("TSS_PASSPHRASE", p);
        }
        c.output().unwrap()
    };

    // Without a passphrase: refused, saying where it comes from
    let out = init(&dir, None);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("TSS_PASSPHRASE"));

    // Too short: refused
    let out = init(&dir, Some("short"));
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("at least 8"));

    // With a passphrase from the environment: identity, TLS, store, config, public entry
    let out = init(&dir, Some("correct horse battery"));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for f in ["node.toml", "party.toml", "tls.crt", "store"] {
        assert!(dir.join(f).exists(), "{f} created");
    }
    let entry: tss_node::config::PartyEntry =
        toml::from_str(&std::fs::read_to_string(dir.join("party.toml")).unwrap()).unwrap();
    assert_eq!(entry.name, "custodian-a");
    tss_core::identity::PartyId::from_hex(&entry.identity).unwrap();
    assert_eq!(
        entry.cert,
        std::fs::read_to_string(dir.join("tls.crt")).unwrap()
    );
    // the TLS private key is not written in the clear anywhere in the folder
    let key_marker = "PRIVATE KEY";
    for e in walk(&dir) {
        let b = std::fs::read(&e).unwrap();
        assert!(
            !b.windows(key_marker.len())
                .any(|w| w == key_marker.as_bytes()),
            "{} holds a private key",
            e.display()
        );
    }

    // A second init in the same folder is refused
    let out = init(&dir, Some("correct horse battery"));
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("already"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tssctl__should_call_the_client_api() {
    let cluster = Cluster::start().await;
    let tssctl = |args: &[&str], who: &str| cluster.tssctl(0, who, args);
    let out = tssctl(&["health"], "admin");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let h: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(h["party"], "custodian-a");
    assert_eq!(h["peers"].as_array().unwrap().len(), 2);

    let out = tssctl(&["list-keys"], "admin");
    assert!(out.status.success());
    assert_eq!(
        serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap(),
        serde_json::json!([])
    );

    let out = tssctl(&["get-key", "--key", "missing"], "gateway");
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("NotFound"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let out = tssctl(&["keygen", "--key", "k"], "gateway");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("PermissionDenied"));
}

#[test]
fn tssctl_demo__should_print_a_verified_frost_signature_for_each_scheme() {
    for scheme in ["ed25519", "taproot"] {
        // When the demo runs with a FROST key (seconds: no aux info)
        let out = Command::new(env!("CARGO_BIN_EXE_tssctl"))
            .args(["demo", "--scheme", scheme])
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "demo --scheme {scheme}: {stderr}");

        // Then its last line is the JSON the README names, and the
        // signature verifies here too, independently of the demo
        let stdout = String::from_utf8_lossy(&out.stdout);
        let last = stdout.lines().last().expect("a JSON line");
        let j: serde_json::Value = serde_json::from_str(last).unwrap();
        assert_eq!(j["scheme"], scheme);
        assert_eq!(j["verified"], true, "{stderr}");
        let hex_of = |f: &str| hex::decode(j[f].as_str().unwrap()).unwrap();
        let (key, msg, sig) = (hex_of("public_key"), hex_of("message"), hex_of("signature"));
        assert_eq!((key.len(), msg.len(), sig.len()), (32, 32, 64));
        let key: [u8; 32] = key.try_into().unwrap();
        let sig: [u8; 64] = sig.try_into().unwrap();
        let verifies = |sig: &[u8; 64]| match scheme {
            "ed25519" => ed25519_dalek::VerifyingKey::from_bytes(&key)
                .unwrap()
                .verify_strict(&msg, &ed25519_dalek::Signature::from_bytes(sig))
                .is_ok(),
            _ => {
                use bitcoin::secp256k1::{schnorr, Message, Secp256k1, XOnlyPublicKey};
                Secp256k1::verification_only()
                    .verify_schnorr(
                        &schnorr::Signature::from_slice(sig).unwrap(),
                        &Message::from_digest(msg.as_slice().try_into().unwrap()),
                        &XOnlyPublicKey::from_slice(&key).unwrap(),
                    )
                    .is_ok()
            }
        };
        assert!(verifies(&sig), "{scheme} signature verifies");
        let mut bad = sig;
        bad[40] ^= 1;
        assert!(!verifies(&bad), "a tampered signature fails");
        match scheme {
            "taproot" => assert!(j["address"].as_str().unwrap().starts_with("bc1p")),
            _ => assert!(j.get("address").is_none()),
        }
    }
}
