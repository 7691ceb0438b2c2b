//! `tssctl demo`: a local three-party cluster, keygen, one signature checked
//! with `k256`, the keygen transcript verified offline, step by step.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use k256::ecdsa::signature::hazmat::PrehashVerifier;
use proto::v1 as pb;
use tss_node::client;
use tss_node::cluster::{connect_retry, create_cluster, wait_healthy, Daemon, Processes, NAMES};

fn step(t0: Instant, msg: &str) {
    eprintln!("[{:>7.2} s] {msg}", t0.elapsed().as_secs_f64());
}

/// Runs the demo; returns the final JSON line. `signs` > 1 signs that many
/// messages in sequence and reports Sign latency through the API.
pub async fn run(
    keep: Option<PathBuf>,
    fresh_primes: bool,
    signs: usize,
    scheme: Option<tss_core::frost::Scheme>,
) -> anyhow::Result<serde_json::Value> {
    let t0 = Instant::now();
    let tmp;
    let root = match &keep {
        Some(d) => {
            if d.exists() && std::fs::read_dir(d)?.next().is_some() {
                bail!(
                    "{} exists and is not empty: choose a new folder for --keep",
                    d.display()
                );
            }
            d.clone()
        }
        None => {
            tmp = tempfile::tempdir()?;
            tmp.path().to_owned()
        }
    };
    if fresh_primes {
        step(
            t0,
            "using fresh safe primes: each node generates its own (minutes per party)",
        );
    } else {
        eprintln!("**********************************************************************");
        eprintln!("* DEMO MODE: the parties use the committed TEST-ONLY safe primes.    *");
        eprintln!("* Their factorisation is public: this key is NOT secure. Use         *");
        eprintln!("* `tssctl demo --fresh-primes` or a real deployment for real keys.   *");
        eprintln!("**********************************************************************");
    }
    step(t0, &format!("creating three parties in {}", root.display()));
    let dirs = create_cluster(&root, !fresh_primes)?;
    if scheme.is_some() {
        // An Ed25519 or Taproot gateway asks for chain sighashes: 32-byte
        // digests it computed (HASH_ALGORITHM_NONE), which the policy must
        // allow it.
        for dir in &dirs.parties {
            std::fs::write(
                dir.join("policy.toml"),
                tss_node::cluster::demo_policy(&["gateway"]),
            )?;
        }
    }
    step(
        t0,
        "parties created: Ed25519 identities, TLS certificates, sealed stores, configs",
    );
    let daemon = Daemon::locate()?;
    match &daemon {
        Daemon::Binary(p) => step(t0, &format!("daemon: {}", p.display())),
        Daemon::InProcessFallback(p) => step(
            t0,
            &format!(
                "daemon: no tss-node binary of this build; running `{} node run` (same code)",
                p.display()
            ),
        ),
    }
    let mut procs = Processes(Vec::new());
    let logs = root.join("logs");
    std::fs::create_dir_all(&logs)?;
    for (i, dir) in dirs.parties.iter().enumerate() {
        let log = std::fs::File::create(logs.join(format!("{}.log", NAMES[i])))?;
        let mut cmd = daemon.command(&dir.join("node.toml"));
        cmd.stdout(Stdio::null()).stderr(log);
        procs.0.push(cmd.spawn().context("cannot start tss-node")?);
        step(t0, &format!("started {} on {}", NAMES[i], dirs.addrs[i]));
    }
    let node_cert = |i: usize| dirs.parties[i].join("tls.crt");
    for i in 0..3 {
        let mut c = connect_retry(
            dirs.addrs[i],
            &node_cert(i),
            &dirs.admin,
            Duration::from_secs(30),
        )
        .await?;
        wait_healthy(&mut c, Duration::from_secs(30)).await?;
    }
    let mut admin = client::connect_with_files(dirs.addrs[0], &node_cert(0), &dirs.admin).await?;
    step(t0, "all three nodes healthy");
    if fresh_primes {
        // Each node fills its prime pool in the background from start-up;
        // aux-info generation needs one set at every party.
        loop {
            let mut ready = Vec::new();
            for i in 0..3 {
                let mut c =
                    client::connect_with_files(dirs.addrs[i], &node_cert(i), &dirs.admin).await?;
                ready.push(
                    c.health(pb::HealthRequest {})
                        .await?
                        .into_inner()
                        .primes_ready,
                );
            }
            if ready.iter().all(|&r| r >= 1) {
                break;
            }
            step(
                t0,
                &format!("  waiting for safe primes at each party (sets ready: {ready:?})"),
            );
            tokio::time::sleep(Duration::from_secs(10)).await;
        }
        step(t0, "safe primes ready at every party");
    }

    let key_id = "demo-key";
    let scheme_name = scheme.map_or("ecdsa", |s| s.name());
    step(
        t0,
        &format!(
            "keygen {key_id} ({scheme_name}) through {} (2-of-3)",
            NAMES[0]
        ),
    );
    let kg_start = Instant::now();
    let mut stream = admin
        .keygen(pb::KeygenRequest {
            key_id: key_id.into(),
            scheme: scheme_name.into(),
            ..Default::default()
        })
        .await?
        .into_inner();
    let mut key = None;
    while let Some(ev) = stream.message().await? {
        match ev.event {
            Some(pb::keygen_event::Event::Progress(p)) => step(
                t0,
                &format!(
                    "  keygen [{} +{:.1} s] {}",
                    p.stage,
                    p.elapsed_ms as f64 / 1000.0,
                    p.detail
                ),
            ),
            Some(pb::keygen_event::Event::Done(k)) => key = Some(k),
            None => {}
        }
    }
    let key = key.context("keygen ended without a key")?;
    step(
        t0,
        &format!(
            "keygen done in {:.2} s: public key {}",
            kg_start.elapsed().as_secs_f64(),
            hex::encode(&key.public_key)
        ),
    );

    let mut gw = client::connect_with_files(dirs.addrs[1], &node_cert(1), &dirs.gateway).await?;
    if let Some(scheme) = scheme {
        let out = crate::demo_frost::sign_and_check(t0, &mut gw, &key, scheme, signs).await?;
        let (transcript_verified, report) = audit(t0, &root, &dirs, key_id, keep.is_some()).await?;
        drop(procs);
        step(t0, "nodes stopped");
        let mut out = out;
        out["transcript_verified"] = transcript_verified.into();
        if out["verified"] != true {
            bail!("signature did not verify: {out}");
        }
        if !transcript_verified {
            bail!("the keygen transcript did not verify:\n{report}");
        }
        return Ok(out);
    }
    let message = b"tss-node demo: 2-of-3 threshold ECDSA".to_vec();
    step(
        t0,
        &format!(
            "signing {:?} (EIP-191 personal message) through {}",
            String::from_utf8_lossy(&message),
            NAMES[1]
        ),
    );
    let request_id: [u8; 16] = rand::random();
    let sig = gw
        .sign(pb::SignRequest {
            key_id: key_id.into(),
            message: message.clone(),
            hash: pb::HashAlgorithm::Eip191 as i32,
            request_id: request_id.to_vec(),
            ..Default::default()
        })
        .await?
        .into_inner();
    step(
        t0,
        &format!(
            "signed by {} in {} ms",
            sig.signers.join(" + "),
            sig.elapsed_ms
        ),
    );

    // Independent verification with k256.
    let vk = k256::ecdsa::VerifyingKey::from_sec1_bytes(&key.public_key)?;
    // The EIP-191 digest computed independently of the node (alloy), which
    // must also be the digest the node says it signed.
    let digest = alloy_primitives::eip191_hash_message(&message).0;
    let ksig = k256::ecdsa::Signature::from_der(&sig.der)?;
    let verified = sig.digest == digest
        && vk.verify_prehash(&digest, &ksig).is_ok()
        && k256::ecdsa::RecoveryId::from_byte(sig.v as u8)
            .and_then(|rid| {
                k256::ecdsa::VerifyingKey::recover_from_prehash(&digest, &ksig, rid).ok()
            })
            .is_some_and(|rec| rec == vk);
    step(
        t0,
        &format!(
            "k256 verification and key recovery: {}",
            if verified { "OK" } else { "FAILED" }
        ),
    );
    if signs > 1 {
        step(
            t0,
            &format!(
                "measuring: {} more sequential Sign calls through {}",
                signs - 1,
                NAMES[1]
            ),
        );
        latency(t0, &mut gw, signs, |k| pb::SignRequest {
            key_id: key_id.into(),
            message: format!("latency probe {k}").into_bytes(),
            hash: pb::HashAlgorithm::Eip191 as i32,
            request_id: rand::random::<[u8; 16]>().to_vec(),
            ..Default::default()
        })
        .await?;
    }
    let (transcript_verified, report) = audit(t0, &root, &dirs, key_id, keep.is_some()).await?;
    drop(procs);
    step(t0, "nodes stopped");
    if let Some(d) = &keep {
        step(
            t0,
            &format!(
                "cluster kept in {} (node.toml files, logs/, parties.toml, transcripts/)",
                d.display()
            ),
        );
    }
    let out = serde_json::json!({
        "public_key": hex::encode(&key.public_key),
        "message": hex::encode(&message),
        "hash": "eip191",
        "der": hex::encode(&sig.der),
        "r": hex::encode(&sig.r),
        "s": hex::encode(&sig.s),
        "v": sig.v,
        "eth_address": key.eth_address,
        "verified": verified,
        "transcript_verified": transcript_verified,
    });
    if !verified {
        bail!("signature did not verify: {out}");
    }
    if !transcript_verified {
        bail!("the keygen transcript did not verify:\n{report}");
    }
    Ok(out)
}

/// Exports the key's keygen transcript from a party other than the
/// coordinator and checks it offline, as an auditor would.
async fn audit(
    t0: Instant,
    root: &std::path::Path,
    dirs: &tss_node::cluster::ClusterDirs,
    key_id: &str,
    kept: bool,
) -> anyhow::Result<(bool, keygen::verify::Report)> {
    // The keygen transcript, exported from a party other than the
    // coordinator, checked offline as an auditor would.
    let node_cert = |i: usize| dirs.parties[i].join("tls.crt");
    let mut reader = client::connect_with_files(dirs.addrs[1], &node_cert(1), &dirs.admin).await?;
    let file = reader
        .export_transcript(pb::ExportTranscriptRequest {
            key_id: key_id.into(),
        })
        .await?
        .into_inner()
        .transcript;
    let transcripts = root.join("transcripts");
    std::fs::create_dir_all(&transcripts)?;
    let transcript_path = transcripts.join(format!("{key_id}.transcript"));
    std::fs::write(&transcript_path, &file)?;
    step(
        t0,
        &format!(
            "keygen transcript exported from {}: {} ({} bytes)",
            NAMES[1],
            transcript_path.display(),
            file.len()
        ),
    );
    let parties_path = root.join("parties.toml");
    let auditor = keygen::verify::parse_parties(&std::fs::read_to_string(&parties_path)?)
        .map_err(|e| anyhow::anyhow!("{}: {e}", parties_path.display()))?;
    let report = {
        let file = file.clone();
        tokio::task::spawn_blocking(move || keygen::verify::verify(&file, &auditor)).await?
    };
    let transcript_verified = report.passed();
    step(
        t0,
        &if transcript_verified {
            format!(
                "transcript verified offline: all {} checks pass (parties, envelopes, commitments, proofs, key signature)",
                report.checks.len()
            )
        } else {
            format!(
                "transcript verification FAILED: {}",
                report.failed().join(", ")
            )
        },
    );
    step(
        t0,
        &format!(
            "an auditor runs: tss-audit verify {} --parties {}{}",
            transcript_path.display(),
            parties_path.display(),
            if !kept {
                "  (the folder is temporary: keep it with --keep DIR)"
            } else {
                ""
            }
        ),
    );
    Ok((transcript_verified, report))
}

/// Sends `signs - 1` sequential Sign requests (`request(k)`, k from 1) and
/// reports their latency and the paths that answered them.
pub async fn latency(
    t0: Instant,
    gw: &mut client::Client,
    signs: usize,
    request: impl Fn(usize) -> pb::SignRequest,
) -> anyhow::Result<()> {
    let mut ms = Vec::with_capacity(signs);
    let mut paths = std::collections::BTreeMap::<String, usize>::new();
    for k in 1..signs {
        let t = Instant::now();
        let r = gw.sign(request(k)).await?.into_inner();
        ms.push(t.elapsed().as_secs_f64() * 1000.0);
        *paths.entry(r.path).or_default() += 1;
    }
    if ms.is_empty() {
        return Ok(());
    }
    ms.sort_by(f64::total_cmp);
    let pct = |p: f64| ms[((ms.len() as f64 - 1.0) * p).round() as usize];
    let paths: Vec<String> = paths.iter().map(|(p, n)| format!("{n} {p}")).collect();
    step(
        t0,
        &format!(
            "Sign latency through the API ({} calls: {}): p50 {:.1} ms, p90 {:.1} ms, max {:.1} ms",
            ms.len(),
            paths.join(", "),
            pct(0.5),
            pct(0.9),
            pct(1.0)
        ),
    );
    Ok(())
}
