//! Keygen transcripts: every node exports the key's transcript, and the real
//! `tss-audit` verifies it offline against the parties' public entries.

use std::path::Path;
use std::process::Command;
use std::time::Instant;

use keygen::transcript::{KeyCertificate, TranscriptFile};
use proto::v1 as pb;
use sha2::Digest;
use tonic::Code;

use crate::harness::{sign_request, step, tss_audit, Cluster};

/// `parties.toml` as an auditor writes it from the parties' `party.toml`
/// files; `swap` replaces party i's identity.
fn parties_toml(cluster: &Cluster, swap: Option<(usize, &str)>) -> String {
    let mut out = String::new();
    for (i, dir) in cluster.dirs.parties.iter().enumerate() {
        let text = std::fs::read_to_string(dir.join("party.toml")).unwrap();
        let e: tss_node::config::PartyEntry = toml::from_str(&text).unwrap();
        let der = tss_node::transport::cert_der_from_pem(&e.cert).unwrap();
        let identity = match swap {
            Some((j, other)) if j == i => other.to_owned(),
            _ => e.identity.clone(),
        };
        out.push_str(&format!(
            "[[parties]]\nname = {:?}\nidentity = {:?}\ntls_fingerprint = {:?}\ncert = '''\n{}'''\n\n",
            e.name,
            identity,
            hex::encode(sha2::Sha256::digest(&der)),
            e.cert
        ));
    }
    out
}

fn audit(transcript: &Path, parties: &Path) -> (bool, String) {
    let out = Command::new(tss_audit())
        .arg("verify")
        .arg(transcript)
        .arg("--parties")
        .arg(parties)
        .output()
        .expect("run tss-audit");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// The report line of check `name` starts with `tag` ("pass", "FAIL").
fn has_line(report: &str, tag: &str, name: &str) -> bool {
    let prefix = format!("{tag}  {name:<18} ");
    report.lines().any(|l| l.starts_with(&prefix))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transcript__should_be_exported_by_any_node_and_pass_tss_audit() {
    let t0 = Instant::now();
    step(
        t0,
        "Given a running cluster and a key generated through node 0",
    );
    // Build the auditor's binary while the cluster works.
    let build = tokio::task::spawn_blocking(tss_audit);
    let cluster = Cluster::start().await;
    let key = cluster.keygen(0, "audited-key").await;
    let tmp = tempfile::tempdir().unwrap();

    step(
        t0,
        "When node 1 (not the coordinator) exports it with tssctl",
    );
    let file_path = tmp.path().join("audited-key.transcript");
    let out = Command::new(env!("CARGO_BIN_EXE_tssctl"))
        .args(["transcript", "export", "--key", "audited-key", "--out"])
        .arg(&file_path)
        .arg("--node")
        .arg(cluster.dirs.addrs[1].to_string())
        .arg("--node-cert")
        .arg(cluster.dirs.parties[1].join("tls.crt"))
        .arg("--client")
        .arg(&cluster.dirs.gateway)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let printed: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let bytes = std::fs::read(&file_path).unwrap();
    assert_eq!(printed["path"], file_path.display().to_string());
    assert_eq!(printed["bytes"], bytes.len());

    step(t0, "Then every node holds the same file");
    for i in [0, 2] {
        let mut c = cluster.client(i, "admin").await;
        let other = c
            .export_transcript(pb::ExportTranscriptRequest {
                key_id: "audited-key".into(),
            })
            .await
            .unwrap()
            .into_inner()
            .transcript;
        assert!(other == bytes, "node {i} exports the same transcript");
    }

    step(t0, "And its certificate names the key GetKey reports");
    let file = TranscriptFile::decode(&bytes).unwrap();
    let cert = KeyCertificate::decode(&file.certificates[0].body).unwrap();
    let mut gw = cluster.client(1, "gateway").await;
    let got = gw
        .get_key(pb::GetKeyRequest {
            key_id: "audited-key".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(got.public_key, key.public_key);
    assert_eq!(cert.public_key.as_slice(), got.public_key.as_slice());
    assert_eq!(cert.key_id, "audited-key");
    assert_eq!(cert.threshold, 2);
    assert_eq!(
        printed["transcript_root"],
        hex::encode(&cert.transcript_root)
    );
    let names: Vec<&str> = cert.parties.iter().map(|p| p.name.as_str()).collect();
    let mut sorted = names.clone();
    sorted.sort_unstable();
    assert_eq!(sorted, tss_node::cluster::NAMES, "{names:?}");

    step(
        t0,
        "And tss-audit passes all its checks against the parties' entries",
    );
    let parties = tmp.path().join("parties.toml");
    std::fs::write(&parties, parties_toml(&cluster, None)).unwrap();
    build.await.unwrap();
    let (ok, report) = audit(&file_path, &parties);
    eprintln!("{report}");
    assert!(ok, "tss-audit fails:\n{report}");
    for name in keygen::verify::CHECKS {
        assert!(
            has_line(&report, "pass", name),
            "no pass line for {name}:\n{report}"
        );
    }

    step(
        t0,
        "When the auditor's entry for one party names another identity, tss-audit fails on parties",
    );
    let stranger = tss_core::identity::IdentityKey::generate()
        .party_id()
        .to_hex();
    let wrong = tmp.path().join("wrong-parties.toml");
    std::fs::write(&wrong, parties_toml(&cluster, Some((2, &stranger)))).unwrap();
    let (ok, report) = audit(&file_path, &wrong);
    assert!(!ok, "tss-audit passes with a wrong identity:\n{report}");
    assert!(
        has_line(&report, "FAIL", "parties"),
        "no FAIL line for parties:\n{report}"
    );

    step(t0, "And clients cannot sign with the certificate's domain");
    let mut message = b"tss/key-certificate/v1".to_vec();
    message.extend_from_slice(&file.certificates[0].body);
    let err = gw
        .sign(sign_request("audited-key", &message))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    assert!(
        err.message().contains("reserved for key certificates"),
        "{}",
        err.message()
    );

    step(t0, "And a key without transcript is NOT_FOUND");
    let err = gw
        .export_transcript(pb::ExportTranscriptRequest {
            key_id: "no-such-key".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound, "{err:?}");
}
