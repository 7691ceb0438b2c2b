//! Backup and restore of one party through real nodes: a party's backup
//! passes `backup verify` against the auditor's parties.toml; a wrong
//! recovery key, a truncated or tampered file and a backup of another
//! party are refused with nothing written; the party's folder is wiped,
//! restored from its backup, and the restored node signs (as coordinator
//! and as co-signer) under the same public keys, with no presignature or
//! pooled nonce brought back.

use std::path::Path;
use std::process::{Command, Output};
use std::time::Instant;

use crate::frost::assert_frost_valid;
use crate::harness::{
    presignature_audit, ready, sign_request, sign_sha256_ok, step, wait_pool, Cluster,
};

fn tss_node<S: AsRef<std::ffi::OsStr>>(args: &[S]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_tss-node"))
        .args(args)
        .output()
        .expect("run tss-node")
}

fn ok(out: Output, what: &str) -> String {
    assert!(
        out.status.success(),
        "{what} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs a restore that must fail; returns its error text and checks that
/// it wrote nothing.
fn refused(args: &[String], dir: &Path) -> String {
    let out = tss_node(args);
    assert!(!out.status.success(), "restore {args:?} succeeded");
    assert!(!dir.exists(), "a refused restore left {}", dir.display());
    let parent = dir.parent().unwrap();
    let leftovers: Vec<_> = std::fs::read_dir(parent)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().contains("restoring"))
        .collect();
    assert!(leftovers.is_empty(), "a refused restore left {leftovers:?}");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backup__should_restore_a_wiped_party_that_signs_again_and_refuse_bad_backups() {
    let t0 = Instant::now();
    // ECDSA presignature pools off (the full protocol), FROST nonce pools on
    let mut cluster = Cluster::start_with(|_, cfg| {
        cfg.presign.target = 0;
        cfg.presign.frost_target = 8;
    })
    .await;
    let tmp = tempfile::tempdir().unwrap();
    let t = |p: &str| tmp.path().join(p).to_string_lossy().into_owned();

    step(
        t0,
        "Given an ECDSA and an Ed25519 key, each signed through node 2",
    );
    let ecdsa = cluster.keygen(0, "bk-ecdsa").await;
    let (ed, _) = cluster.keygen_scheme(0, "bk-ed", "ed25519").await;
    let mut c2 = cluster.client(2, "gateway").await;
    sign_sha256_ok(&mut c2, &ecdsa.public_key, "bk-ecdsa", b"before").await;
    let r = c2
        .sign(sign_request("bk-ed", b"before"))
        .await
        .unwrap()
        .into_inner();
    assert_frost_valid("ed25519", &ed.public_key, b"before", &r);

    let names = tss_node::cluster::NAMES;
    wait_pool(
        &cluster,
        2,
        "bk-ed",
        &[[names[0], names[2]], [names[1], names[2]]],
        1,
    )
    .await;

    step(
        t0,
        "When node 2 is stopped and backed up to a new recovery key",
    );
    cluster.kill(2);
    assert!(
        !ready(&presignature_audit(&cluster, 2)).is_empty(),
        "node 2 held pooled nonces"
    );
    let party = cluster.dirs.parties[2].clone();
    let config = party.join("node.toml").to_string_lossy().into_owned();
    let recipient = ok(
        tss_node(&["backup", "new-recovery-key", "--out", &t("recovery.key")]),
        "new-recovery-key",
    );
    let recipient = recipient.trim();
    assert!(recipient.starts_with("age1"), "{recipient}");
    ok(
        tss_node(&[
            "backup",
            "--config",
            &config,
            "--to",
            recipient,
            "--out",
            &t("c.backup"),
        ]),
        "backup",
    );
    let backup = std::fs::read(t("c.backup")).unwrap();

    step(
        t0,
        "Then backup verify proves it is node 2's, of certified keys",
    );
    let parties = cluster.dirs.root.join("parties.toml");
    let parties = parties.to_string_lossy().into_owned();
    let name = tss_node::cluster::NAMES[2];
    let report = ok(
        tss_node(&[
            "backup",
            "verify",
            &t("c.backup"),
            "--parties",
            &parties,
            "--party",
            name,
        ]),
        "backup verify",
    );
    assert!(
        report.contains("key bk-ecdsa (ecdsa): transcript audited"),
        "{report}"
    );
    assert!(
        report.contains("key bk-ed (ed25519): transcript audited"),
        "{report}"
    );
    let other = tss_node(&[
        "backup",
        "verify",
        &t("c.backup"),
        "--parties",
        &parties,
        "--party",
        tss_node::cluster::NAMES[0],
    ]);
    assert!(
        !other.status.success(),
        "verify accepted a backup of another party"
    );

    step(t0, "And bad backups are refused with nothing written");
    std::fs::write(t("pass"), "restored-passphrase-1").unwrap();
    let dir = tmp.path().join("restored");
    let d = dir.to_string_lossy().into_owned();
    let restore = |from: &str, key: &str| {
        vec![
            "restore".to_owned(),
            "--from".into(),
            from.into(),
            "--identity".into(),
            key.into(),
            "--dir".into(),
            d.clone(),
            "--passphrase-file".into(),
            t("pass"),
            "--parties".into(),
            parties.clone(),
        ]
    };
    let run_refused = |v: Vec<String>| refused(&v, &dir);
    // A wrong recovery key
    ok(
        tss_node(&["backup", "new-recovery-key", "--out", &t("wrong.key")]),
        "new-recovery-key",
    );
    let e = run_refused(restore(&t("c.backup"), &t("wrong.key")));
    assert!(e.contains("not encrypted to the recovery key"), "{e}");
    // A truncated file
    std::fs::write(t("short.backup"), &backup[..backup.len() - 100]).unwrap();
    let e = run_refused(restore(&t("short.backup"), &t("recovery.key")));
    assert!(e.contains("damaged"), "{e}");
    // A tampered ciphertext (the last byte) and a tampered header (the
    // backup's time, the one header field no other check covers)
    let mut tampered = backup.clone();
    *tampered.last_mut().unwrap() ^= 1;
    std::fs::write(t("tampered.backup"), &tampered).unwrap();
    let e = run_refused(restore(&t("tampered.backup"), &t("recovery.key")));
    assert!(e.contains("damaged"), "{e}");
    // (which backup verify sees without the key: the party's signature
    // covers the ciphertext)
    let out = tss_node(&[
        "backup",
        "verify",
        &t("tampered.backup"),
        "--parties",
        &parties,
    ]);
    assert!(
        !out.status.success(),
        "verify accepted an altered ciphertext"
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("not signed by"));
    let key = b"\x6ccreated_unix\x1a";
    let at = backup
        .windows(key.len())
        .position(|w| w == key)
        .expect("the backup time is in the header")
        + key.len()
        + 3;
    let mut tampered = backup.clone();
    tampered[at] ^= 1;
    std::fs::write(t("header.backup"), &tampered).unwrap();
    let e = run_refused(restore(&t("header.backup"), &t("recovery.key")));
    assert!(e.contains("header was altered"), "{e}");
    // A backup of another party than the one named
    let mut other = restore(&t("c.backup"), &t("recovery.key"));
    other.extend(["--party".to_owned(), tss_node::cluster::NAMES[1].to_owned()]);
    let e = run_refused(other);
    assert!(e.contains("not of"), "{e}");

    step(
        t0,
        "When node 2's folder is wiped and restored from the backup",
    );
    std::fs::remove_dir_all(&party).unwrap();
    let pass_file = tmp.path().join("pass");
    let mut args = restore(&t("c.backup"), &t("recovery.key"));
    args[6] = party.to_string_lossy().into_owned();
    let out = tss_node(&args);
    assert!(
        out.status.success(),
        "restore: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("passphrase file"));
    std::fs::copy(&pass_file, party.join("passphrase")).unwrap();

    step(t0, "Then it holds no presignature or pooled nonce");
    assert!(ready(&presignature_audit(&cluster, 2)).is_empty());

    step(
        t0,
        "And, started again, it signs as coordinator and as co-signer under the same keys",
    );
    cluster.spawn(2);
    cluster.wait_healthy(2).await;
    let mut c2 = cluster.client(2, "gateway").await;
    sign_sha256_ok(&mut c2, &ecdsa.public_key, "bk-ecdsa", b"after").await;
    let r = c2
        .sign(sign_request("bk-ed", b"after"))
        .await
        .unwrap()
        .into_inner();
    assert_frost_valid("ed25519", &ed.public_key, b"after", &r);
    cluster.kill(1);
    let mut c0 = cluster.client(0, "gateway").await;
    let r = sign_sha256_ok(&mut c0, &ecdsa.public_key, "bk-ecdsa", b"with 2").await;
    assert!(
        r.signers.iter().any(|s| s == name),
        "signed by {:?}",
        r.signers
    );
    let r = c0
        .sign(sign_request("bk-ed", b"with 2"))
        .await
        .unwrap()
        .into_inner();
    assert_frost_valid("ed25519", &ed.public_key, b"with 2", &r);
    assert!(
        r.signers.iter().any(|s| s == name),
        "signed by {:?}",
        r.signers
    );
    cluster.assert_no_panics();
}
