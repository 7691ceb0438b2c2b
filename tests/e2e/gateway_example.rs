//! The Python gateway example (`examples/python-gateway`) against a real
//! cluster: a client in another language signs its request with its TLS
//! key (the canonical encoding of docs/FORMATS.md) and gets a signature
//! that every party agreed to, checked here with k256.

use std::path::{Path, PathBuf};
use std::process::Command;

use k256::ecdsa::signature::hazmat::PrehashVerifier;

use crate::harness::{step, Cluster};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn has_modules(python: &Path) -> bool {
    Command::new(python)
        .args(["-c", "import grpc, grpc_tools, cryptography"])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

/// A Python with the example's requirements: the system's if it has them,
/// else a virtual environment under the target folder, made once.
fn python_with_grpc() -> PathBuf {
    let system = PathBuf::from("python3");
    if has_modules(&system) {
        return system;
    }
    let venv = Path::new(env!("CARGO_TARGET_TMPDIR")).join("python-gateway-venv");
    let python = venv.join("bin").join("python3");
    if !has_modules(&python) {
        let ok = Command::new("python3")
            .args(["-m", "venv"])
            .arg(&venv)
            .status()
            .is_ok_and(|s| s.success());
        assert!(
            ok,
            "python3 -m venv {} failed: install python3 (with venv)",
            venv.display()
        );
        let out = Command::new(&python)
            .args(["-m", "pip", "install", "--quiet", "-r"])
            .arg(repo().join("examples/python-gateway/requirements.txt"))
            .output()
            .expect("run pip");
        assert!(
            out.status.success(),
            "pip install of the example's requirements failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    python
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_gateway__should_sign_its_request_and_get_a_verified_signature() {
    let t0 = std::time::Instant::now();
    step(t0, "Given a cluster with a key, and Python with grpcio");
    let cluster = Cluster::start().await;
    let key = cluster.keygen(0, "py-key").await;
    let python = tokio::task::spawn_blocking(python_with_grpc)
        .await
        .expect("python");

    step(
        t0,
        "When the Python gateway signs a Sign request and calls node 1",
    );
    let mut cmd = Command::new(python);
    cmd.arg(repo().join("examples/python-gateway/gateway.py"))
        .arg("--node")
        .arg(cluster.dirs.addrs[1].to_string())
        .arg("--node-cert")
        .arg(cluster.dirs.parties[1].join("tls.crt"))
        .args(["--party", tss_node::cluster::NAMES[1], "--client"])
        .arg(&cluster.dirs.gateway)
        .args(["--key", "py-key", "--message", "sent by a Python gateway"]);
    let out = tokio::task::spawn_blocking(move || cmd.output())
        .await
        .expect("join")
        .expect("run gateway.py");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "gateway.py failed: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );

    step(
        t0,
        "Then it prints a signature that verifies under the key (k256)",
    );
    let line = stdout.lines().last().expect("a JSON line");
    let v: serde_json::Value = serde_json::from_str(line).expect("JSON");
    assert_eq!(v["verified"], true, "{v}");
    assert_eq!(v["public_key"], hex::encode(&key.public_key), "{v}");
    let (_, digest) =
        tss_core::ecdsa::sign::HashAlgo::BitcoinMessage.data_to_sign(b"sent by a Python gateway");
    assert_eq!(v["digest"], hex::encode(digest));
    let der = hex::decode(v["der"].as_str().expect("der")).expect("hex");
    let sig = k256::ecdsa::Signature::from_der(&der).expect("DER signature");
    k256::ecdsa::VerifyingKey::from_sec1_bytes(&key.public_key)
        .expect("key")
        .verify_prehash(&digest, &sig)
        .expect("the signature verifies");
}
