//! `tssctl demo --scheme ed25519|taproot`: the signature of a FROST key,
//! checked by an independent verifier (ed25519-dalek's strict verification,
//! or rust-bitcoin's BIP340 verification under the Taproot output key).

use std::time::Instant;

use anyhow::Context;
use proto::v1 as pb;
use sha2::Digest;
use tss_core::frost::Scheme;
use tss_node::cluster::NAMES;

fn step(t0: Instant, msg: &str) {
    eprintln!("[{:>7.2} s] {msg}", t0.elapsed().as_secs_f64());
}

/// Signs the 32-byte SHA-256 of the demo text (a chain sighash in real
/// use) through the gateway's node and checks it; returns the demo's JSON.
pub async fn sign_and_check(
    t0: Instant,
    gw: &mut tss_node::client::Client,
    key: &pb::KeyInfo,
    scheme: Scheme,
    signs: usize,
) -> anyhow::Result<serde_json::Value> {
    let text = format!("tss-node demo: 2-of-3 threshold {} (FROST)", scheme.name());
    let message: [u8; 32] = sha2::Sha256::digest(text.as_bytes()).into();
    step(
        t0,
        &format!(
            "signing SHA-256({text:?}) = {} ({}) through {}",
            hex::encode(message),
            match scheme {
                Scheme::Ed25519 => "as the message bytes; Ed25519 hashes them itself",
                Scheme::Taproot => "as the 32-byte BIP340 message",
            },
            NAMES[1]
        ),
    );
    let sig = gw
        .sign(pb::SignRequest {
            key_id: key.key_id.clone(),
            message: message.to_vec(),
            hash: pb::HashAlgorithm::None as i32,
            request_id: rand::random::<[u8; 16]>().to_vec(),
            ..Default::default()
        })
        .await?
        .into_inner();
    step(
        t0,
        &format!(
            "signed by {} in {} ms ({} path)",
            sig.signers.join(" + "),
            sig.elapsed_ms,
            sig.path
        ),
    );
    let signature: [u8; 64] = sig
        .signature
        .as_slice()
        .try_into()
        .context("the node's signature is not 64 bytes")?;
    let public_key: [u8; 32] = key
        .public_key
        .as_slice()
        .try_into()
        .context("the key is not 32 bytes")?;
    // The digest that names the request: an Ed25519 key signs the message
    // bytes as given and names them by their SHA-256; a Taproot key signs
    // the 32-byte digest itself.
    let digest: [u8; 32] = match scheme {
        Scheme::Ed25519 => sha2::Sha256::digest(message).into(),
        Scheme::Taproot => message,
    };
    let verified = sig.digest == digest
        && tss_node::client::verify_frost_signature(scheme, &public_key, &message, &signature)
            .is_ok();
    step(
        t0,
        &format!(
            "{} verification: {}",
            match scheme {
                Scheme::Ed25519 => "ed25519-dalek strict",
                Scheme::Taproot => "rust-bitcoin BIP340",
            },
            if verified { "OK" } else { "FAILED" }
        ),
    );
    crate::demo::latency(t0, gw, signs, |k| pb::SignRequest {
        key_id: key.key_id.clone(),
        message: sha2::Sha256::digest(format!("latency probe {k}")).to_vec(),
        hash: pb::HashAlgorithm::None as i32,
        request_id: rand::random::<[u8; 16]>().to_vec(),
        ..Default::default()
    })
    .await?;
    let mut out = serde_json::json!({
        "scheme": scheme.name(),
        "public_key": hex::encode(public_key),
        "message": hex::encode(message),
        "signature": hex::encode(signature),
        "verified": verified,
    });
    if scheme == Scheme::Taproot {
        let address = key
            .addresses
            .iter()
            .find(|a| a.chain == "bitcoin")
            .map(|a| a.address.clone())
            .context("the Taproot key has no bitcoin address")?;
        out["address"] = address.into();
    }
    Ok(out)
}
