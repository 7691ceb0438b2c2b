//! Transaction signing at the coordinator: decode the transaction, check
//! this node's policy, sign through [`crate::protocol::sign::sign_decoded`] (each
//! co-signer decodes and checks it again), record the amounts, and return
//! the transaction ready for its network.

use std::sync::Arc;
use std::time::Instant;

use proto::v1 as pb;
use tss_core::chain::{btc, eth, EcdsaSignature};

use crate::config::ClientEntry;
use crate::error::{blocking, ApiError};
use crate::protocol::sign::Wire;
use crate::state::Node;

pub(crate) fn signature_of(resp: &pb::SignResponse) -> Result<EcdsaSignature, ApiError> {
    let r = <[u8; 32]>::try_from(resp.r.as_slice());
    let s = <[u8; 32]>::try_from(resp.s.as_slice());
    let (Ok(r), Ok(s), Ok(v)) = (r, s, u8::try_from(resp.v)) else {
        return Err(ApiError::Internal(
            "signature fields out of shape (a bug)".into(),
        ));
    };
    Ok(EcdsaSignature {
        r,
        s,
        v,
        der: resp.der.clone(),
    })
}

/// `SignEthereumTransaction` as coordinator.
pub async fn sign_ethereum(
    node: Arc<Node>,
    caller: &ClientEntry,
    req: pb::SignEthereumTransactionRequest,
) -> Result<pb::SignEthereumTransactionResponse, ApiError> {
    let started = Instant::now();
    crate::request::check_sign_input(&node, &req.key_id, &req.unsigned_tx, &req.request_id)?;
    let kind = pb::sign_payload::Kind::EthereumChainId(req.chain_id);
    let chain = crate::request::auth::ethereum_chain(req.chain_id);
    let asked = crate::request::auth::signing_request(
        &req.key_id,
        &req.request_id,
        &req.unsigned_tx,
        0,
        &chain,
        Some(&kind),
    );
    let client =
        crate::request::auth::verify_caller(&node, caller, &asked, req.authorization.as_ref())?;
    let request = asked
        .digest()
        .map_err(crate::request::auth::AuthError::from)?;
    let record = crate::protocol::records::load_record(&node, &req.key_id).await?;
    crate::request::check_payload_scheme(
        &record,
        Some(&pb::SignPayload {
            kind: Some(kind.clone()),
        }),
    )?;
    let public_key = record
        .public_key_bytes()
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    let decoded = crate::request::decode::ethereum(&req.unsigned_tx, req.chain_id, &public_key)?;
    crate::request::retry::check_request_id(
        &node,
        &record.key_id,
        &req.request_id,
        &client.name,
        request,
    )
    .await?;
    // A retry of a signed transaction skips the policy: it signs nothing new.
    let stored = crate::request::retry::stored_response(
        &node,
        &record,
        &req.request_id,
        &decoded.digest,
        started,
    )
    .await?;
    let reservation = match stored {
        Some(_) => None,
        None => {
            let r = crate::protocol::approve::check_policy(
                &node,
                &client.name,
                &record.key_id,
                &req.request_id,
                &decoded,
                "coordinator".into(),
            )
            .await?;
            crate::request::retry::bind_request_id(
                &node,
                &record.key_id,
                &req.request_id,
                &client.name,
                request,
            )
            .await?;
            r
        }
    };
    let wire = Wire {
        request_id: req.request_id.clone(),
        message: req.unsigned_tx.clone(),
        hash: pb::HashAlgorithm::Keccak256 as i32,
        payload: Some(pb::SignPayload { kind: Some(kind) }),
        authorization: req.authorization.clone(),
    };
    let resp = crate::protocol::sign::sign_decoded(
        &node,
        record,
        &req.request_id,
        wire,
        &decoded,
        crate::protocol::approve::Release::new(reservation),
        started,
    )
    .await?;
    let signed = eth::encode_signed(&req.unsigned_tx, &signature_of(&resp)?)
        .map_err(|e| ApiError::Internal(format!("cannot attach the signature: {e}")))?;
    Ok(pb::SignEthereumTransactionResponse {
        raw_transaction: signed.raw,
        tx_hash: signed.hash.to_vec(),
        from: tss_core::chain::eth_address(&public_key)
            .map_err(|e| ApiError::Internal(e.to_string()))?,
        signature: Some(resp),
    })
}

/// `SignBitcoinPsbt` as coordinator: one policy decision for the whole
/// transaction, then one signing session per input of the key (ECDSA over
/// BIP143 for an ECDSA key's P2WPKH inputs, BIP340 over BIP341 for a
/// Taproot key's P2TR key-path inputs: `sign_decoded` runs the key's
/// scheme).
pub async fn sign_bitcoin(
    node: Arc<Node>,
    caller: &ClientEntry,
    req: pb::SignBitcoinPsbtRequest,
) -> Result<pb::SignBitcoinPsbtResponse, ApiError> {
    let started = Instant::now();
    let psbt = btc::decode_psbt_base64(req.psbt_base64.trim())
        .map_err(|e| ApiError::Invalid(format!("psbt_base64: {e}")))?;
    crate::request::check_sign_input(&node, &req.key_id, &psbt, &req.request_id)?;
    let asked = crate::request::auth::signing_request(
        &req.key_id,
        &req.request_id,
        &psbt,
        0,
        &req.chain,
        Some(&pb::sign_payload::Kind::Bitcoin(pb::BitcoinInput::default())),
    );
    let client =
        crate::request::auth::verify_caller(&node, caller, &asked, req.authorization.as_ref())?;
    let request = asked
        .digest()
        .map_err(crate::request::auth::AuthError::from)?;
    let record = crate::protocol::records::load_record(&node, &req.key_id).await?;
    let bitcoin = pb::sign_payload::Kind::Bitcoin(pb::BitcoinInput::default());
    crate::request::check_payload_scheme(
        &record,
        Some(&pb::SignPayload {
            kind: Some(bitcoin),
        }),
    )?;
    crate::request::retry::check_request_id(
        &node,
        &record.key_id,
        &req.request_id,
        &client.name,
        request,
    )
    .await?;
    let public_key = record
        .public_key_bytes()
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    let summary = {
        let (p, chain, pk) = (psbt.clone(), req.chain.clone(), public_key.clone());
        blocking(move || crate::request::decode::psbt(&p, &chain, &pk)).await?
    };
    let ours: Vec<usize> = (0..summary.inputs.len())
        .filter(|&i| summary.inputs[i].ours)
        .collect();
    let Some(&first) = ours.first() else {
        return Err(ApiError::Invalid(
            "no input of the PSBT spends this key's output".into(),
        ));
    };
    let whole = crate::request::decode::bitcoin_input(&summary, first)?;
    let reservation = crate::protocol::approve::check_policy(
        &node,
        &client.name,
        &record.key_id,
        &req.request_id,
        &whole,
        "coordinator".into(),
    )
    .await?;
    crate::request::retry::bind_request_id(
        &node,
        &record.key_id,
        &req.request_id,
        &client.name,
        request,
    )
    .await?;
    // One release for the whole transaction: its amounts are recorded
    // before the first part of any input's signature leaves this node.
    let release = crate::protocol::approve::Release::new(reservation);
    let mut sigs = Sigs::default();
    let mut responses = Vec::new();
    for &i in &ours {
        let decoded = crate::request::decode::bitcoin_input(&summary, i)?;
        let wire = Wire {
            request_id: req.request_id.clone(),
            message: psbt.clone(),
            hash: pb::HashAlgorithm::DoubleSha256 as i32,
            payload: Some(pb::SignPayload {
                kind: Some(pb::sign_payload::Kind::Bitcoin(pb::BitcoinInput {
                    chain: req.chain.clone(),
                    input_index: i as u32,
                })),
            }),
            authorization: req.authorization.clone(),
        };
        let resp = crate::protocol::sign::sign_decoded(
            &node,
            record.clone(),
            &crate::request::decode::input_request_id(&req.request_id, i),
            wire,
            &decoded,
            release.clone(),
            started,
        )
        .await
        .map_err(|e| prefix_input(e, i))?;
        match record.scheme {
            None => sigs.ecdsa.push((i, signature_of(&resp)?)),
            Some(_) => sigs.schnorr.push((i, schnorr_of(&resp)?)),
        }
        responses.push(resp);
    }
    // Verifies every signature and finalises: off the reactor.
    let scheme = record.scheme;
    let signed = blocking(move || {
        match scheme {
            None => btc::add_signatures(&psbt, &public_key, &sigs.ecdsa),
            Some(_) => btc::add_taproot_signatures(&psbt, &public_key, &sigs.schnorr),
        }
        .map_err(|e| ApiError::Internal(format!("cannot add the signatures: {e}")))
    })
    .await?;
    Ok(pb::SignBitcoinPsbtResponse {
        psbt_base64: signed.psbt_base64,
        complete: signed.complete,
        tx_hex: signed.tx_hex.unwrap_or_default(),
        txid: summary.txid_hex.clone(),
        signed_inputs: ours.iter().map(|&i| i as u32).collect(),
        signatures: responses,
    })
}

pub(crate) fn prefix_input(e: ApiError, i: usize) -> ApiError {
    match e {
        ApiError::Denied(_)
        | ApiError::Policy { .. }
        | ApiError::Unavailable(_)
        | ApiError::Misbehaved { .. }
        | ApiError::Invalid(_) => e.prefixed(&format!("input {i}")),
        other => other,
    }
}

/// The signatures of a PSBT's inputs, by the key's scheme.
#[derive(Default)]
struct Sigs {
    ecdsa: Vec<(usize, EcdsaSignature)>,
    schnorr: Vec<(usize, [u8; 64])>,
}

/// The 64-byte BIP340 signature of a FROST Taproot key's response.
fn schnorr_of(resp: &pb::SignResponse) -> Result<[u8; 64], ApiError> {
    <[u8; 64]>::try_from(resp.signature.as_slice())
        .map_err(|_| ApiError::Internal("a FROST signature is not 64 bytes (a bug)".into()))
}
