//! The Signer service (client API). Callers are identified by their pinned
//! TLS client certificate and mapped to a role: `admin` may start keygen,
//! `gateway` may sign; both may read keys, transcripts and health.

use std::sync::Arc;
use std::time::Duration;

use proto::v1 as pb;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use crate::config::{ClientEntry, Role};
use crate::error::{blocking, ApiError};
use crate::state::Node;

/// The Signer service.
pub struct SignerService {
    node: Arc<Node>,
}

impl SignerService {
    /// A service over `node`.
    pub fn new(node: Arc<Node>) -> Self {
        Self { node }
    }

    fn client<T>(&self, req: &Request<T>) -> Result<ClientEntry, ApiError> {
        let fp = crate::transport::peer_fingerprint(req)
            .ok_or_else(|| ApiError::Unauthenticated("no client certificate".into()))?;
        self.node
            .client(&fp)
            .cloned()
            .ok_or_else(|| ApiError::Denied("this certificate is not a client of this node".into()))
    }

    fn require(&self, c: &ClientEntry, role: Role, what: &str) -> Result<(), ApiError> {
        if c.role == role {
            Ok(())
        } else {
            Err(ApiError::Denied(format!(
                "client {} has role {:?}; {what} needs role {:?}",
                c.name, c.role, role
            )))
        }
    }
}

/// Public view of a key record.
pub fn key_info(r: &keygen::record::KeyRecord) -> pb::KeyInfo {
    let pk = r.public_key_bytes().unwrap_or_default();
    if let Some(scheme) = r.scheme {
        return frost_key_info(r, scheme, pk);
    }
    let eth_address = tss_core::chain::eth_address(&pk).unwrap_or_default();
    let mut addresses: Vec<pb::ChainAddress> = tss_core::chain::btc::Network::ALL
        .iter()
        .filter_map(|&net| {
            tss_core::chain::btc::p2wpkh_address(&pk, net)
                .ok()
                .map(|address| pb::ChainAddress {
                    chain: net.name().into(),
                    address,
                })
        })
        .collect();
    addresses.push(pb::ChainAddress {
        chain: "ethereum".into(),
        address: eth_address.clone(),
    });
    pb::KeyInfo {
        key_id: r.key_id.clone(),
        eth_address,
        addresses,
        public_key: pk,
        threshold: u32::from(r.threshold),
        parties: r.parties.iter().map(|p| p.name.clone()).collect(),
        created_unix: r.created_unix,
        pool: vec![],
        scheme: "ecdsa".into(),
    }
}

/// Public view of a FROST key: Taproot keys have P2TR addresses on the
/// Bitcoin networks; an Ed25519 key's address is the chain's own encoding
/// of the public key, which the gateway computes.
fn frost_key_info(
    r: &keygen::record::KeyRecord,
    scheme: tss_core::frost::Scheme,
    pk: Vec<u8>,
) -> pb::KeyInfo {
    use tss_core::chain::btc::{p2tr_address, Network};
    let addresses = match scheme {
        tss_core::frost::Scheme::Taproot => [Network::Bitcoin, Network::BitcoinTestnet]
            .iter()
            .filter_map(|&net| {
                p2tr_address(&pk, net).ok().map(|address| pb::ChainAddress {
                    chain: net.name().into(),
                    address,
                })
            })
            .collect(),
        tss_core::frost::Scheme::Ed25519 => vec![],
    };
    pb::KeyInfo {
        key_id: r.key_id.clone(),
        addresses,
        public_key: pk,
        threshold: u32::from(r.threshold),
        parties: r.parties.iter().map(|p| p.name.clone()).collect(),
        created_unix: r.created_unix,
        scheme: scheme.name().into(),
        ..Default::default()
    }
}

/// Key view with this node's presignature levels per signer pair it is in
/// (blocking: reads the store).
pub fn key_info_with_pool(
    node: &Node,
    r: &keygen::record::KeyRecord,
) -> Result<pb::KeyInfo, ApiError> {
    let mut info = key_info(r);
    for pair in crate::protocol::presign::pairs_with_me(r) {
        info.pool.push(pb::PoolLevel {
            signers: crate::state::pair_label(r, &pair)
                .split('+')
                .map(str::to_owned)
                .collect(),
            ready: crate::protocol::presign::level(node, &r.key_id, &pair)? as u32,
            target: node.cfg().presign.target_for(r.scheme) as u32,
        });
    }
    Ok(info)
}

#[tonic::async_trait]
impl pb::signer_server::Signer for SignerService {
    type KeygenStream = ReceiverStream<Result<pb::KeygenEvent, Status>>;

    async fn keygen(
        &self,
        req: Request<pb::KeygenRequest>,
    ) -> Result<Response<Self::KeygenStream>, Status> {
        let c = self.client(&req)?;
        self.require(&c, Role::Admin, "Keygen")?;
        let req = req.into_inner();
        let key_id = req.key_id.clone();
        keygen::record::check_key_id(&key_id).map_err(|e| ApiError::Invalid(e.to_string()))?;
        let ticket = self.node.admission().admit().await?;
        tracing::info!(client = %c.name, key_id, "keygen requested");
        let (tx, rx) = tokio::sync::mpsc::channel(64);
        let (ptx, mut prx) = tokio::sync::mpsc::channel::<pb::KeygenProgress>(64);
        let node = self.node.clone();
        let forward = tx.clone();
        let forwarder = tokio::spawn(async move {
            while let Some(p) = prx.recv().await {
                let ev = pb::KeygenEvent {
                    event: Some(pb::keygen_event::Event::Progress(p)),
                };
                if forward.send(Ok(ev)).await.is_err() {
                    break;
                }
            }
        });
        tokio::spawn(async move {
            // `keygen` owns the only progress sender: when it returns, the
            // forwarder has every progress event queued and ends after
            // sending them, so the last event always comes last.
            let r = crate::protocol::ceremony::keygen::keygen(node, &c, req, ptx).await;
            drop(ticket);
            let ev = match r {
                Ok(rec) => Ok(pb::KeygenEvent {
                    event: Some(pb::keygen_event::Event::Done(key_info(&rec))),
                }),
                Err(e) => Err(Status::from(e)),
            };
            let _ = forwarder.await;
            let _ = tx.send(ev).await;
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    async fn sign(
        &self,
        req: Request<pb::SignRequest>,
    ) -> Result<Response<pb::SignResponse>, Status> {
        let c = self.client(&req)?;
        self.require(&c, Role::Gateway, "Sign")?;
        if req
            .get_ref()
            .message
            .starts_with(crate::protocol::certificate::CERTIFICATE_DOMAIN)
        {
            return Err(ApiError::Invalid(format!(
                "messages starting with {:?} are reserved for key certificates",
                String::from_utf8_lossy(crate::protocol::certificate::CERTIFICATE_DOMAIN)
            ))
            .into());
        }
        let _ticket = self.node.admission().admit().await?;
        let r = crate::protocol::sign::sign(self.node.clone(), &c, req.into_inner()).await;
        match &r {
            Ok(resp) => tracing::info!(client = %c.name, ms = resp.elapsed_ms, "signed"),
            Err(e) => tracing::warn!(client = %c.name, error = %e, "sign refused or failed"),
        }
        Ok(Response::new(r?))
    }

    async fn get_key(
        &self,
        req: Request<pb::GetKeyRequest>,
    ) -> Result<Response<pb::KeyInfo>, Status> {
        self.client(&req)?;
        let key_id = req.into_inner().key_id;
        keygen::record::check_key_id(&key_id).map_err(|e| ApiError::Invalid(e.to_string()))?;
        let n = self.node.clone();
        let k = key_id.clone();
        let info = blocking(
            move || match crate::protocol::records::load_ready_record(&n, &k)? {
                Some(rec) => key_info_with_pool(&n, &rec).map(Some),
                None => Ok(None),
            },
        )
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no key {key_id:?} at this node")))?;
        Ok(Response::new(info))
    }

    async fn list_keys(
        &self,
        req: Request<pb::ListKeysRequest>,
    ) -> Result<Response<pb::ListKeysResponse>, Status> {
        self.client(&req)?;
        let n = self.node.clone();
        let (keys, unfinished) = blocking(move || {
            let (mut keys, mut unfinished) = (Vec::new(), Vec::new());
            for k in n.store().keys(tss_core::store::RecordKind::KeyInfo)? {
                let id = String::from_utf8_lossy(&k).into_owned();
                match crate::protocol::records::key_state(n.store(), &id)? {
                    crate::protocol::records::KeyState::Ready(r) => {
                        keys.push(key_info_with_pool(&n, &r)?)
                    }
                    crate::protocol::records::KeyState::Unfinished => unfinished.push(id),
                    crate::protocol::records::KeyState::Absent => {}
                }
            }
            Ok((keys, unfinished))
        })
        .await?;
        Ok(Response::new(pb::ListKeysResponse { keys, unfinished }))
    }

    async fn export_transcript(
        &self,
        req: Request<pb::ExportTranscriptRequest>,
    ) -> Result<Response<pb::TranscriptFile>, Status> {
        let c = self.client(&req)?;
        let key_id = req.into_inner().key_id;
        let transcript =
            crate::protocol::ceremony::transcript::export(&self.node, key_id.clone()).await?;
        tracing::info!(client = %c.name, key_id, bytes = transcript.len(), "transcript exported");
        Ok(Response::new(pb::TranscriptFile { transcript }))
    }

    async fn health(
        &self,
        req: Request<pb::HealthRequest>,
    ) -> Result<Response<pb::HealthResponse>, Status> {
        self.client(&req)?;
        let node = &self.node;
        let mut pings = Vec::new();
        for p in node.peers().others() {
            let Some(mut c) = p.client.clone() else {
                continue;
            };
            let name = p.name.clone();
            pings.push(async move {
                let r = tokio::time::timeout(Duration::from_millis(1000), c.ping(pb::Ack {})).await;
                let error = match r {
                    Ok(Ok(_)) => String::new(),
                    Ok(Err(s)) => s.message().to_owned(),
                    Err(_) => "no answer within 1000 ms".into(),
                };
                pb::PeerStatus {
                    name,
                    reachable: error.is_empty(),
                    error,
                }
            });
        }
        let peers = futures::future::join_all(pings).await;
        let n = node.clone();
        let (keys, primes_ready, memory) = blocking(move || {
            Ok((
                n.store().len(tss_core::store::RecordKind::KeyInfo)? as u32,
                n.primes().ready() as u32,
                crate::metrics::memory(),
            ))
        })
        .await?;
        Ok(Response::new(pb::HealthResponse {
            party: node.cfg().name.clone(),
            version: env!("CARGO_PKG_VERSION").into(),
            keys,
            primes_ready,
            primes_generating: node.primes().generating(),
            sessions_running: node.sessions().running() as u32,
            peers,
            presign: Some(node.metrics().pool_counters()),
            policy_sha256: {
                let h = node.policy().sha256();
                if h == [0; 32] {
                    vec![]
                } else {
                    h.to_vec()
                }
            },
            policy_error: node.policy_error().unwrap_or_default(),
            requests_running: node.admission().running() as u32,
            requests_queued: node.admission().queued() as u32,
            requests_refused: node.admission().refused() as u64,
            rss_bytes: memory.rss,
            peak_rss_bytes: memory.peak,
        }))
    }

    async fn sign_ethereum_transaction(
        &self,
        req: Request<pb::SignEthereumTransactionRequest>,
    ) -> Result<Response<pb::SignEthereumTransactionResponse>, Status> {
        let c = self.client(&req)?;
        self.require(&c, Role::Gateway, "SignEthereumTransaction")?;
        let _ticket = self.node.admission().admit().await?;
        let r = crate::protocol::tx::sign_ethereum(self.node.clone(), &c, req.into_inner()).await;
        match &r {
            Ok(resp) => {
                tracing::info!(client = %c.name, tx_hash = %hex::encode(&resp.tx_hash), "signed an Ethereum transaction")
            }
            Err(e) => {
                tracing::warn!(client = %c.name, error = %e, "Ethereum signing refused or failed")
            }
        }
        Ok(Response::new(r?))
    }

    async fn sign_bitcoin_psbt(
        &self,
        req: Request<pb::SignBitcoinPsbtRequest>,
    ) -> Result<Response<pb::SignBitcoinPsbtResponse>, Status> {
        let c = self.client(&req)?;
        self.require(&c, Role::Gateway, "SignBitcoinPsbt")?;
        let _ticket = self.node.admission().admit().await?;
        let r = crate::protocol::tx::sign_bitcoin(self.node.clone(), &c, req.into_inner()).await;
        match &r {
            Ok(resp) => {
                tracing::info!(client = %c.name, txid = %resp.txid, complete = resp.complete, "signed a PSBT")
            }
            Err(e) => {
                tracing::warn!(client = %c.name, error = %e, "PSBT signing refused or failed")
            }
        }
        Ok(Response::new(r?))
    }

    async fn audit_log(
        &self,
        req: Request<pb::AuditLogRequest>,
    ) -> Result<Response<pb::AuditLogResponse>, Status> {
        let c = self.client(&req)?;
        self.require(&c, Role::Admin, "AuditLog")?;
        let r = req.into_inner();
        let limit = match r.limit {
            0 => 100,
            l => (l as usize).min(crate::policy::audit::MAX_READ),
        };
        let n = self.node.clone();
        let entries = blocking(move || {
            Ok(crate::policy::audit::AuditLog::read(
                n.store(),
                r.from_seq,
                limit,
            )?)
        })
        .await?;
        Ok(Response::new(pb::AuditLogResponse {
            entries: entries
                .into_iter()
                .map(|e| pb::AuditEntry {
                    seq: e.seq,
                    prev_hash: e.prev,
                    hash: e.hash,
                    body: e.body,
                })
                .collect(),
            total: self.node.audit().len(),
        }))
    }
}
