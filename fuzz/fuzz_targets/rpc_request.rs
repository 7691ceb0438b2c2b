//! gRPC request messages: the Signer service's client requests and the Peer
//! service's requests that carry bytes to decode.
//!
//! Under test: prost `Message::decode` of the request type picked by the
//! first byte, then the pure steps the node takes first with it:
//! `keygen::record::check_key_id`, `tss_node::request::hash_algo`,
//! `signable::{message, ethereum, psbt, bitcoin_input, from_wire}` (with a
//! fixed key; message requests for an ECDSA, Ed25519 or Taproot key, picked
//! by the first byte too), `btc::decode_psbt_base64`, `Envelope::decode` and
//! `transcript::decode_entry_list`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use prost::Message;
use proto::v1 as pb;
use tss_core::chain::btc;
use tss_core::envelope::Envelope;
use tss_core::frost::Scheme;
use tss_node::error::ApiError;

#[path = "common.rs"]
mod common;

/// A request the node refuses must be refused as the caller's fault, never
/// as an internal error (which would mean the node's own checks disagree).
fn not_internal<T>(r: Result<T, ApiError>) -> Option<T> {
    match r {
        Ok(v) => Some(v),
        Err(ApiError::Internal(m)) => panic!("internal error on client input: {m}"),
        Err(_) => None,
    }
}

fn key_id(k: &str) {
    let _ = keygen::record::check_key_id(k);
}

fn sign_message(message: &[u8], hash: i32, scheme: Option<Scheme>) {
    if let Some(h) = not_internal(tss_node::request::hash_algo(hash)) {
        not_internal(tss_node::request::decode::message(h, message, scheme));
    }
}

fn ethereum(tx: &[u8], chain_id: u64) {
    not_internal(tss_node::request::decode::ethereum(
        tx,
        chain_id,
        &common::BTC_PUBKEY,
    ));
}

fn psbt(bytes: &[u8], chain: &str) {
    if let Some(summary) = not_internal(tss_node::request::decode::psbt(
        bytes,
        chain,
        &common::BTC_PUBKEY,
    )) {
        for i in 0..summary.inputs.len() {
            not_internal(tss_node::request::decode::bitcoin_input(&summary, i));
        }
    }
}

fn from_wire(message: &[u8], hash: i32, payload: Option<&pb::SignPayload>, scheme: Option<Scheme>) {
    not_internal(tss_node::request::decode::from_wire(
        message,
        hash,
        payload,
        &common::BTC_PUBKEY,
        scheme,
    ));
}

fuzz_target!(|data: &[u8]| {
    let Some((&which, b)) = data.split_first() else {
        return;
    };
    // The key's scheme for message requests: ECDSA, Ed25519 or Taproot.
    let scheme = [None, Some(Scheme::Ed25519), Some(Scheme::Taproot)][usize::from(which / 10) % 3];
    match which % 10 {
        0 => {
            if let Ok(r) = pb::SignRequest::decode(b) {
                key_id(&r.key_id);
                sign_message(&r.message, r.hash, scheme);
            }
        }
        1 => {
            if let Ok(r) = pb::SignEthereumTransactionRequest::decode(b) {
                key_id(&r.key_id);
                ethereum(&r.unsigned_tx, r.chain_id);
            }
        }
        2 => {
            if let Ok(r) = pb::SignBitcoinPsbtRequest::decode(b) {
                key_id(&r.key_id);
                if let Ok(bytes) = btc::decode_psbt_base64(&r.psbt_base64) {
                    psbt(&bytes, &r.chain);
                }
            }
        }
        3 => {
            if let Ok(r) = pb::KeygenRequest::decode(b) {
                key_id(&r.key_id);
            }
        }
        4 => {
            let _ = pb::GetKeyRequest::decode(b);
            let _ = pb::ExportTranscriptRequest::decode(b);
            let _ = pb::AuditLogRequest::decode(b);
            let _ = pb::ListKeysRequest::decode(b);
            let _ = pb::HealthRequest::decode(b);
        }
        5 => {
            if let Ok(p) = pb::Proposal::decode(b) {
                if let Some(pb::proposal::Kind::Sign(s)) = &p.kind {
                    key_id(&s.key_id);
                    from_wire(&s.message, s.hash, s.payload.as_ref(), scheme);
                }
            }
        }
        6 => {
            if let Ok(r) = pb::PresignSignRequest::decode(b) {
                key_id(&r.key_id);
                from_wire(&r.message, r.hash, r.payload.as_ref(), scheme);
            }
        }
        7 => {
            if let Ok(r) = pb::EnvelopeBytes::decode(b) {
                let _ = Envelope::decode(&r.envelope);
            }
        }
        8 => {
            if let Ok(r) = pb::EntryList::decode(b) {
                let _ = keygen::transcript::decode_entry_list(&r.entries);
            }
            if let Ok(r) = pb::CertifyRequest::decode(b) {
                let _ = keygen::transcript::decode_entry_list(&r.missing_entries);
            }
        }
        _ => {
            if let Ok(r) = pb::StoreTranscriptRequest::decode(b) {
                let _ = keygen::transcript::KeyCertificate::decode(&r.certificate_body);
            }
            let _ = pb::SessionRef::decode(b);
            let _ = pb::AbortRequest::decode(b);
        }
    }
});
