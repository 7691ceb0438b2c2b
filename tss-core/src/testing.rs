//! TEST-ONLY support: parties on threads wired through the real envelope
//! delivery (signing, verification, sequence checks) by an in-memory router,
//! and the committed TEST-ONLY prime fixtures. Compiled for this crate's
//! tests and, with the `testing` feature, for other crates' tests.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::{Arc, Mutex};

use futures::channel::mpsc;
use futures::StreamExt;
use round_based::MpcParty;

use crate::envelope::{Envelope, Protocol};
use crate::identity::IdentityKey;
use crate::primes::Primes;
use crate::session::{self, Received, SessionInfo};

const FIXTURE: &str = include_str!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../tests/fixtures/primes.test-only.txt"
));

/// The committed TEST-ONLY safe-prime sets (never use them for real keys).
pub fn fixture_primes() -> Result<Vec<Primes>, crate::primes::PrimesError> {
    crate::primes::fixtures_from_text(FIXTURE)
}

/// Largest payload seen per protocol (to keep the limits honest).
pub static MAX_SEEN: Mutex<Vec<(Protocol, usize)>> = Mutex::new(Vec::new());

/// Parties connected by an in-memory router.
pub struct Net {
    /// Identity keys of the parties, by global index.
    pub keys: Vec<Arc<IdentityKey>>,
}

impl Net {
    /// `n` parties with fresh identity keys.
    pub fn new(n: usize) -> Self {
        Net {
            keys: (0..n).map(|_| Arc::new(IdentityKey::generate())).collect(),
        }
    }

    /// Runs `f(i, party)` for each listed member on its own thread, routing
    /// envelopes between them. `members[j]` is the global party index of
    /// protocol index j.
    pub fn run<M, T, F, Fut>(
        &self,
        protocol: Protocol,
        sid: [u8; 32],
        members: &[usize],
        f: F,
    ) -> Vec<T>
    where
        M: serde::Serialize + serde::de::DeserializeOwned + Send + 'static,
        T: Send + 'static,
        F: Fn(u16, MpcParty<M, (session::IncomingStream<M>, session::OutgoingSink<M>)>) -> Fut
            + Send
            + Sync
            + Clone
            + 'static,
        Fut: std::future::Future<Output = T>,
    {
        self.run_recorded(protocol, sid, members, f).0
    }

    /// Like [`Net::run`], and also returns every envelope the router carried,
    /// in the order it carried them.
    pub fn run_recorded<M, T, F, Fut>(
        &self,
        protocol: Protocol,
        sid: [u8; 32],
        members: &[usize],
        f: F,
    ) -> (Vec<T>, Vec<Envelope>)
    where
        M: serde::Serialize + serde::de::DeserializeOwned + Send + 'static,
        T: Send + 'static,
        F: Fn(u16, MpcParty<M, (session::IncomingStream<M>, session::OutgoingSink<M>)>) -> Fut
            + Send
            + Sync
            + Clone
            + 'static,
        Fut: std::future::Future<Output = T>,
    {
        let parties: Vec<_> = members.iter().map(|&g| self.keys[g].party_id()).collect();
        let mut inboxes = Vec::new();
        let mut handles = Vec::new();
        let (out_tx, mut out_rx) = mpsc::unbounded::<Envelope>();
        for (j, &g) in members.iter().enumerate() {
            let (in_tx, in_rx) = mpsc::channel(1024);
            inboxes.push(in_tx);
            let info = Arc::new(SessionInfo {
                id: sid,
                protocol,
                me: j as u16,
                parties: parties.clone(),
            });
            let (inc, out) =
                session::delivery::<M>(info, self.keys[g].clone(), in_rx, out_tx.clone(), None);
            let f = f.clone();
            handles.push(std::thread::spawn(move || {
                futures::executor::block_on(f(j as u16, MpcParty::connected((inc, out))))
            }));
        }
        drop(out_tx);
        let router_parties = parties.clone();
        let router = std::thread::spawn(move || {
            futures::executor::block_on(async move {
                let mut carried = Vec::new();
                while let Some(env) = out_rx.next().await {
                    {
                        let mut m = MAX_SEEN.lock().unwrap();
                        m.push((env.protocol, env.payload.len()));
                    }
                    let bytes = env.encode();
                    let from = router_parties[usize::from(env.sender)];
                    for (k, inbox) in inboxes.iter_mut().enumerate() {
                        let to_k = match env.recipient {
                            None => k != usize::from(env.sender),
                            Some(r) => usize::from(r) == k,
                        };
                        if to_k {
                            let envelope = Envelope::decode(&bytes).expect("own envelope decodes");
                            let _ = inbox.try_send(Received { envelope, from });
                        }
                    }
                    carried.push(env);
                }
                carried
            })
        });
        let out = handles
            .into_iter()
            .map(|h| h.join().expect("party thread"))
            .collect();
        let carried = router.join().expect("router");
        (out, carried)
    }
}
