//! Connecting to a node's Signer API as a client (used by `tssctl`, the demo
//! and the tests).

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use anyhow::Context;
use proto::v1::signer_client::SignerClient;
use tonic::transport::Channel;

use crate::tls;

/// A Signer client over pinned mutual TLS.
pub type Client = SignerClient<Channel>;

/// Connects to `node` (whose certificate is `node_cert_pem`) as the client
/// whose certificate and key are `cert_pem`/`key_pem`.
pub async fn connect(
    node: SocketAddr,
    node_cert_pem: &str,
    cert_pem: &str,
    key_pem: &str,
) -> anyhow::Result<Client> {
    let me = tls::TlsIdentity::from_pem(cert_pem, key_pem)?;
    let cfg = tls::client_config(&me, tls::cert_der_from_pem(node_cert_pem)?)?;
    let ch = tls::connect(node, cfg, Duration::from_secs(5))
        .await
        .with_context(|| format!("cannot connect to {node}"))?;
    Ok(SignerClient::new(ch).max_decoding_message_size(crate::run::MAX_CLIENT_RESPONSE))
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
    let address = |s: &str| crate::policy::parse_eth_address(s).map_err(anyhow::Error::msg);
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
