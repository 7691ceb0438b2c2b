//! The cluster's parties as this node sees them: pinned identities, TLS
//! fingerprints and one lazily connected Peer channel each.

use std::net::SocketAddr;
use std::time::Duration;

use proto::v1::peer_client::PeerClient;
use tonic::transport::Channel;
use tss_core::envelope::Protocol;
use tss_core::identity::PartyId;
use tss_core::session::SessionInfo;

use super::{
    cert_der_from_pem, client_config, connect_lazy, fingerprint, Fingerprint, TlsIdentity,
};

/// Largest gRPC message the Peer service accepts or sends.
pub const MAX_PEER_MESSAGE: usize = Protocol::MAX_ENVELOPE + 4096;

/// A peer as the node's config names it.
pub struct PeerSpec {
    /// Name.
    pub name: String,
    /// Identity key, hex.
    pub identity: String,
    /// TLS certificate, PEM.
    pub cert_pem: String,
    /// Listener address.
    pub address: SocketAddr,
}

/// A party of the cluster (ourselves included).
pub struct Party {
    /// Name.
    pub name: String,
    /// Pinned identity key.
    pub id: PartyId,
    /// Fingerprint of its pinned TLS certificate.
    pub fingerprint: Fingerprint,
    /// Listener address.
    pub address: SocketAddr,
    /// Client for its Peer service (`None` for ourselves).
    pub client: Option<PeerClient<Channel>>,
}

/// Every party, sorted by identity (their keygen index order).
pub struct Peers {
    me: PartyId,
    name: String,
    parties: Vec<Party>,
    /// Bound of one proposal-sized call to a peer.
    call: Duration,
}

impl Peers {
    /// The parties of a cluster as this node's config names them: itself
    /// (`me`, listening on `listen`) and its peers, with channels that
    /// connect on first use; `call` bounds one proposal-sized call. Returns
    /// them with the peers' certificates (DER), which the TLS server pins.
    pub fn new(
        me: (&str, PartyId, SocketAddr),
        peers: &[PeerSpec],
        call: Duration,
        my_tls: &TlsIdentity,
    ) -> anyhow::Result<(Self, Vec<Vec<u8>>)> {
        let (my_name, me, listen) = me;
        let mut parties = vec![Party {
            name: my_name.to_owned(),
            id: me,
            fingerprint: my_tls.fingerprint(),
            address: listen,
            client: None,
        }];
        let mut certs = Vec::new();
        for p in peers {
            let der = cert_der_from_pem(&p.cert_pem)?;
            certs.push(der.clone());
            let id = PartyId::from_hex(&p.identity)?;
            if id == me {
                anyhow::bail!("peer {} has this node's own identity", p.name);
            }
            let channel = connect_lazy(p.address, client_config(my_tls, der.clone())?, call)?;
            let client = PeerClient::new(channel)
                .max_decoding_message_size(MAX_PEER_MESSAGE)
                .max_encoding_message_size(MAX_PEER_MESSAGE);
            parties.push(Party {
                name: p.name.clone(),
                id,
                fingerprint: fingerprint(&der),
                address: p.address,
                client: Some(client),
            });
        }
        parties.sort_by_key(|p| p.id);
        let peers = Peers {
            me,
            name: my_name.to_owned(),
            parties,
            call,
        };
        Ok((peers, certs))
    }

    /// Our identity.
    pub fn me(&self) -> PartyId {
        self.me
    }

    /// Every party but ourselves, in index order.
    pub fn others(&self) -> impl Iterator<Item = &Party> {
        self.parties.iter().filter(move |p| p.id != self.me)
    }

    /// Every party, ourselves included, in index order.
    pub fn all(&self) -> &[Party] {
        &self.parties
    }

    /// The party with a TLS fingerprint (not ourselves).
    pub fn by_fingerprint(&self, fp: &Fingerprint) -> Option<&Party> {
        self.parties
            .iter()
            .find(|p| p.id != self.me && &p.fingerprint == fp)
    }

    /// The party with an identity.
    pub fn party(&self, id: &PartyId) -> Option<&Party> {
        self.parties.iter().find(|p| &p.id == id)
    }

    /// The name of the party with an identity, or its index in `info`.
    pub fn name_in(&self, info: &SessionInfo, index: u16) -> String {
        info.parties
            .get(usize::from(index))
            .and_then(|id| self.party(id))
            .map_or_else(|| format!("party #{index}"), |p| p.name.clone())
    }

    /// Our index in the sorted party list.
    pub fn my_index(&self) -> u16 {
        // `parties` always contains ourselves (inserted in `new`).
        self.parties
            .iter()
            .position(|p| p.id == self.me)
            .unwrap_or(0) as u16
    }

    /// Identities of all parties in index order.
    pub fn ids(&self) -> Vec<PartyId> {
        self.parties.iter().map(|p| p.id).collect()
    }

    /// Session info of a run of all parties (aux info, keygen), in keygen
    /// index order.
    pub fn ceremony_session(&self, id: [u8; 32], protocol: Protocol) -> SessionInfo {
        SessionInfo {
            id,
            protocol,
            me: self.my_index(),
            parties: self.ids(),
        }
    }

    /// Tells every peer this node has just started, so that each ends the
    /// sessions it still holds with this node's previous process
    /// ([`crate::session::Sessions::abort_all_of`]). One try per peer, all
    /// at once, each bounded by `propose_ms`: a peer that is down has no
    /// session to end, and one that cannot be reached ends them at their
    /// timeouts.
    pub async fn announce_start(&self) {
        let wait = self.call;
        let peers = self
            .parties
            .iter()
            .filter_map(|p| Some((p.name.clone(), p.client.clone()?)));
        let calls = peers.map(|(name, mut c)| async move {
            let req = proto::v1::AbortRequest {
                session_id: vec![],
                reason: format!("{} restarted", self.name),
                all_sessions: true,
            };
            match tokio::time::timeout(wait, c.abort(req)).await {
                Ok(Ok(_)) => tracing::debug!(peer = %name, "told peer of this start"),
                Ok(Err(s)) => {
                    tracing::debug!(peer = %name, status = %s, "could not tell peer of this start")
                }
                Err(_) => tracing::debug!(peer = %name, "peer did not answer the start notice"),
            }
        });
        futures::future::join_all(calls).await;
    }

    /// Tells the other parties of a session to drop it.
    pub async fn send_abort(&self, info: &SessionInfo, reason: &str) {
        for id in &info.parties {
            if let Some(mut c) = self.party(id).and_then(|p| p.client.clone()) {
                let req = proto::v1::AbortRequest {
                    session_id: info.id.to_vec(),
                    reason: reason.to_owned(),
                    all_sessions: false,
                };
                let _ = tokio::time::timeout(self.call, c.abort(req)).await;
            }
        }
    }
}

/// Why a call to a peer brought no reply. This is the one place that reads
/// the gRPC code of a peer's answer; protocol code branches on these causes.
#[derive(Debug)]
pub enum CallFailure {
    /// No answer within the call's timeout.
    TimedOut(Duration),
    /// The peer runs its maximum of sessions (it said `RESOURCE_EXHAUSTED`).
    Busy(tonic::Status),
    /// The call failed otherwise: down, refused, or an error from the peer.
    Failed(tonic::Status),
}

impl CallFailure {
    /// One line for a caller's failure list, naming the peer.
    pub fn line(&self, peer: &str) -> String {
        match self {
            CallFailure::TimedOut(t) => format!("{peer}: no answer within {} ms", t.as_millis()),
            CallFailure::Busy(s) | CallFailure::Failed(s) => {
                format!("{peer}: {:?}: {}", s.code(), s.message())
            }
        }
    }
}

/// A failed call to a named peer; displays as one line naming it (see
/// [`CallFailure::line`]).
#[derive(Debug)]
pub struct PeerCallError {
    /// The peer's name.
    pub peer: String,
    /// How the call failed.
    pub failure: CallFailure,
}

impl std::fmt::Display for PeerCallError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.failure.line(&self.peer))
    }
}

impl std::error::Error for PeerCallError {}

/// Runs one call to a peer with a timeout and classifies its failure.
pub async fn call<T>(
    timeout: Duration,
    fut: impl std::future::Future<Output = Result<tonic::Response<T>, tonic::Status>>,
) -> Result<T, CallFailure> {
    match tokio::time::timeout(timeout, fut).await {
        Err(_) => Err(CallFailure::TimedOut(timeout)),
        Ok(Err(s)) if s.code() == tonic::Code::ResourceExhausted => Err(CallFailure::Busy(s)),
        Ok(Err(s)) => Err(CallFailure::Failed(s)),
        Ok(Ok(r)) => Ok(r.into_inner()),
    }
}
