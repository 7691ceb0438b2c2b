//! Connecting to a node's Signer API as a client (used by `tssctl`, the demo
//! and the tests). Requests that lead to a signature or a ceremony are
//! signed with the client's TLS key on the way out
//! ([`crate::client_auth`]), unless they already carry an authorisation.

use std::net::SocketAddr;
use std::ops::{Deref, DerefMut};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use proto::v1 as pb;
use proto::v1::signer_client::SignerClient;
use tonic::transport::Channel;
use tonic::{Response, Status};

/// How long a request's authorisation is valid (Sign and transactions).
pub const SIGN_VALIDITY_SECS: u64 = 300;

/// How long a Keygen authorisation is valid: the ceremony's later
/// proposals (after aux-info generation) carry it too.
pub const KEYGEN_VALIDITY_SECS: u64 = tss_core::authorization::MAX_VALIDITY_SECS;

/// A Signer client over pinned mutual TLS that signs its requests. Every
/// other RPC of [`SignerClient`] is reached through `Deref`.
#[derive(Clone)]
pub struct Client {
    rpc: SignerClient<Channel>,
    me: Arc<crate::transport::TlsIdentity>,
}

impl Deref for Client {
    type Target = SignerClient<Channel>;
    fn deref(&self) -> &Self::Target {
        &self.rpc
    }
}

impl DerefMut for Client {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.rpc
    }
}

fn auth_status(e: anyhow::Error) -> Status {
    Status::invalid_argument(format!("cannot sign the request: {e:#}"))
}

impl Client {
    /// This client's identity (certificate and key).
    pub fn identity(&self) -> &crate::transport::TlsIdentity {
        &self.me
    }

    /// Signs `request` as this client, valid for `validity_secs`.
    pub fn authorize(
        &self,
        request: &tss_core::authorization::ClientRequest<'_>,
        validity_secs: u64,
    ) -> anyhow::Result<pb::ClientAuthorization> {
        crate::request::auth::authorize(&self.me, request, validity_secs)
    }

    /// `Sign`, signed by this client.
    pub async fn sign(
        &mut self,
        mut req: pb::SignRequest,
    ) -> Result<Response<pb::SignResponse>, Status> {
        if req.authorization.is_none() {
            let asked = crate::request::auth::signing_request(
                &req.key_id,
                &req.request_id,
                &req.message,
                req.hash,
                "",
                None,
            );
            req.authorization = Some(
                self.authorize(&asked, SIGN_VALIDITY_SECS)
                    .map_err(auth_status)?,
            );
        }
        self.rpc.sign(req).await
    }

    /// `SignEthereumTransaction`, signed by this client.
    pub async fn sign_ethereum_transaction(
        &mut self,
        mut req: pb::SignEthereumTransactionRequest,
    ) -> Result<Response<pb::SignEthereumTransactionResponse>, Status> {
        if req.authorization.is_none() {
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
            req.authorization = Some(
                self.authorize(&asked, SIGN_VALIDITY_SECS)
                    .map_err(auth_status)?,
            );
        }
        self.rpc.sign_ethereum_transaction(req).await
    }

    /// `SignBitcoinPsbt`, signed by this client (over the binary PSBT; a
    /// PSBT that is not base64 is sent as it is, for the node to refuse).
    pub async fn sign_bitcoin_psbt(
        &mut self,
        mut req: pb::SignBitcoinPsbtRequest,
    ) -> Result<Response<pb::SignBitcoinPsbtResponse>, Status> {
        if req.authorization.is_none() {
            let psbt = tss_core::chain::btc::decode_psbt_base64(req.psbt_base64.trim())
                .unwrap_or_else(|_| req.psbt_base64.as_bytes().to_vec());
            let kind = pb::sign_payload::Kind::Bitcoin(pb::BitcoinInput::default());
            let asked = crate::request::auth::signing_request(
                &req.key_id,
                &req.request_id,
                &psbt,
                0,
                &req.chain,
                Some(&kind),
            );
            req.authorization = Some(
                self.authorize(&asked, SIGN_VALIDITY_SECS)
                    .map_err(auth_status)?,
            );
        }
        self.rpc.sign_bitcoin_psbt(req).await
    }

    /// `Keygen`, signed by this client (a random request id if none is set).
    pub async fn keygen(
        &mut self,
        mut req: pb::KeygenRequest,
    ) -> Result<Response<tonic::Streaming<pb::KeygenEvent>>, Status> {
        if req.request_id.is_empty() {
            req.request_id = rand::random::<[u8; 16]>().to_vec();
        }
        if req.authorization.is_none() {
            let scheme = crate::request::parse_scheme(&req.scheme)
                .map_err(|e| Status::invalid_argument(e.to_string()))?;
            let asked = crate::request::auth::keygen_request(&req.key_id, &req.request_id, scheme);
            req.authorization = Some(
                self.authorize(&asked, KEYGEN_VALIDITY_SECS)
                    .map_err(auth_status)?,
            );
        }
        self.rpc.keygen(req).await
    }
}

/// Connects to `node` (whose certificate is `node_cert_pem`) as the client
/// whose certificate and key are `cert_pem`/`key_pem`.
pub async fn connect(
    node: SocketAddr,
    node_cert_pem: &str,
    cert_pem: &str,
    key_pem: &str,
) -> anyhow::Result<Client> {
    let me = crate::transport::TlsIdentity::from_pem(cert_pem, key_pem)?;
    let cfg =
        crate::transport::client_config(&me, crate::transport::cert_der_from_pem(node_cert_pem)?)?;
    let ch = crate::transport::connect(node, cfg, Duration::from_secs(5))
        .await
        .with_context(|| format!("cannot connect to {node}"))?;
    Ok(Client {
        rpc: SignerClient::new(ch).max_decoding_message_size(crate::run::MAX_CLIENT_RESPONSE),
        me: Arc::new(me),
    })
}

/// Connects using files: the node's `tls.crt` and a client folder holding
/// `client.crt` and `client.key` (as written by `tssctl client-init`).
pub async fn connect_with_files(
    node: SocketAddr,
    node_cert: &Path,
    client_dir: &Path,
) -> anyhow::Result<Client> {
    let read = |p: &Path| {
        std::fs::read_to_string(p).with_context(|| format!("cannot read {}", p.display()))
    };
    let key = zeroize::Zeroizing::new(read(&client_dir.join("client.key"))?);
    connect(
        node,
        &read(node_cert)?,
        &read(&client_dir.join("client.crt"))?,
        &key,
    )
    .await
}

/// An unsigned EIP-1559 transfer (`0x02 || rlp(...)`, the bytes
/// `SignEthereumTransaction` takes), for `tssctl eth-tx`: `amount` wei to
/// `to`, or with `token` an ERC-20 `transfer(to, amount)` call to the token
/// contract.
#[allow(clippy::too_many_arguments)]
pub fn eip1559_transfer(
    chain_id: u64,
    nonce: u64,
    to: &str,
    amount: &str,
    token: Option<&str>,
    gas_limit: u64,
    max_fee_per_gas: u128,
    max_priority_fee_per_gas: u128,
) -> anyhow::Result<Vec<u8>> {
    use alloy_consensus::{SignableTransaction, TxEip1559};
    use alloy_primitives::{Bytes, TxKind, U256};
    let address = |s: &str| crate::policy::parse_eth_address(s).map_err(anyhow::Error::new);
    let recipient = address(to)?;
    let amount = U256::from_str_radix(amount, 10)
        .map_err(|_| anyhow::anyhow!("amount {amount:?} must be an integer in base units"))?;
    let (dest, value, input) = match token {
        None => (recipient, amount, Bytes::new()),
        Some(t) => {
            // transfer(address,uint256): selector, then two 32-byte words.
            let mut data = vec![0xa9, 0x05, 0x9c, 0xbb];
            data.extend_from_slice(&[0u8; 12]);
            data.extend_from_slice(recipient.as_slice());
            data.extend_from_slice(&amount.to_be_bytes::<32>());
            (address(t)?, U256::ZERO, Bytes::from(data))
        }
    };
    let tx = TxEip1559 {
        chain_id,
        nonce,
        gas_limit,
        max_fee_per_gas,
        max_priority_fee_per_gas,
        to: TxKind::Call(dest),
        value,
        access_list: Default::default(),
        input,
    };
    let mut out = Vec::new();
    tx.encode_for_signing(&mut out);
    Ok(out)
}

/// Checks a FROST key's 64-byte signature with a verifier independent of
/// the FROST engines that made it (for `tssctl demo` and `tss-bench`):
/// Ed25519 with ed25519-dalek's strict verification over `message` as given;
/// Taproot with rust-bitcoin's (libsecp256k1) BIP340 verification of the
/// 32-byte `message` under the x-only output key `public_key`.
pub fn verify_frost_signature(
    scheme: tss_core::frost::Scheme,
    public_key: &[u8; 32],
    message: &[u8],
    signature: &[u8],
) -> anyhow::Result<()> {
    use tss_core::frost::Scheme;
    let signature: &[u8; 64] = signature
        .try_into()
        .with_context(|| format!("a {}-byte signature (expected 64)", signature.len()))?;
    match scheme {
        Scheme::Ed25519 => {
            let vk = ed25519_dalek::VerifyingKey::from_bytes(public_key)
                .context("not an Ed25519 public key")?;
            vk.verify_strict(message, &ed25519_dalek::Signature::from_bytes(signature))
                .context("ed25519-dalek verify_strict rejects the signature")
        }
        Scheme::Taproot => {
            use bitcoin::secp256k1::{schnorr, Message, Secp256k1, XOnlyPublicKey};
            let digest: [u8; 32] = message.try_into().with_context(|| {
                format!(
                    "a {}-byte Taproot message (BIP340 signs a 32-byte digest)",
                    message.len()
                )
            })?;
            let q = XOnlyPublicKey::from_slice(public_key).context("not an x-only public key")?;
            let s = schnorr::Signature::from_slice(signature).context("not a BIP340 signature")?;
            Secp256k1::verification_only()
                .verify_schnorr(&s, &Message::from_digest(digest), &q)
                .context("BIP340 verification (libsecp256k1) rejects the signature")
        }
    }
}
