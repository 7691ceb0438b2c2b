//! A TCP proxy on loopback per ordered pair of nodes, so that a test can
//! delay, drop or cut the traffic of one pair while the others pass.
//!
//! Node `i` reaches peer `j` through proxy `(i, j)` (its config names the
//! proxy's address for `j`); the TLS inside is untouched, so the nodes still
//! authenticate each other end to end. A pair's traffic is both directions:
//! `(i, j)` carries the calls `i` makes to `j` (and their answers), `(j, i)`
//! the calls `j` makes to `i`.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use crate::harness::Cluster;
use tss_node::config::NodeConfig;

/// What a proxy does with the bytes it reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Forward at once.
    Pass,
    /// Forward each chunk after this delay.
    Delay(Duration),
    /// Read and discard: connections stay open, nothing arrives (packets
    /// lost on the way).
    Drop,
    /// Close every connection and refuse new ones.
    Cut,
}

/// One directed proxy.
pub struct Proxy {
    pub listen: SocketAddr,
    upstream: Arc<Mutex<Option<SocketAddr>>>,
    mode: watch::Sender<Mode>,
}

impl Proxy {
    async fn start() -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let listen = listener.local_addr().expect("proxy address");
        let upstream = Arc::new(Mutex::new(None));
        let (mode, rx) = watch::channel(Mode::Pass);
        tokio::spawn(accept_loop(listener, upstream.clone(), rx));
        Proxy {
            listen,
            upstream,
            mode,
        }
    }

    fn set(&self, m: Mode) {
        self.mode.send_replace(m);
    }
}

async fn accept_loop(
    listener: TcpListener,
    upstream: Arc<Mutex<Option<SocketAddr>>>,
    mode: watch::Receiver<Mode>,
) {
    loop {
        let Ok((inbound, _)) = listener.accept().await else {
            continue;
        };
        if *mode.borrow() == Mode::Cut {
            continue; // dropped: the connection is closed at once
        }
        let Some(to) = *upstream.lock().expect("upstream") else {
            continue;
        };
        let mode = mode.clone();
        tokio::spawn(async move {
            let Ok(outbound) = TcpStream::connect(to).await else {
                return;
            };
            let _ = inbound.set_nodelay(true);
            let _ = outbound.set_nodelay(true);
            let (r1, w1) = inbound.into_split();
            let (r2, w2) = outbound.into_split();
            // When either direction ends, both sockets close.
            tokio::select! {
                _ = pump(r1, w2, mode.clone()) => {}
                _ = pump(r2, w1, mode) => {}
            }
        });
    }
}

async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    mut mode: watch::Receiver<Mode>,
) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        tokio::select! {
            r = from.read(&mut buf) => {
                let n = match r {
                    Ok(0) | Err(_) => return,
                    Ok(n) => n,
                };
                let m = *mode.borrow();
                match m {
                    Mode::Pass => {}
                    Mode::Delay(d) => tokio::time::sleep(d).await,
                    Mode::Drop => continue,
                    Mode::Cut => return,
                }
                if to.write_all(&buf[..n]).await.is_err() {
                    return;
                }
            }
            changed = mode.changed() => {
                if changed.is_err() || *mode.borrow() == Mode::Cut {
                    return;
                }
            }
        }
    }
}

/// The proxies of a three-node cluster.
pub struct Net {
    proxies: HashMap<(usize, usize), Proxy>,
}

impl Net {
    /// Sets the mode of both directions between `a` and `b`.
    pub fn set(&self, a: usize, b: usize, m: Mode) {
        self.set_one(a, b, m);
        self.set_one(b, a, m);
    }

    /// Sets the mode of the calls `from` makes to `to` only.
    pub fn set_one(&self, from: usize, to: usize, m: Mode) {
        self.proxies[&(from, to)].set(m);
    }

    /// Every pair that includes `i`.
    pub fn isolate(&self, i: usize, m: Mode) {
        for j in (0..3).filter(|&j| j != i) {
            self.set(i, j, m);
        }
    }

    /// Everything passes again.
    pub fn heal(&self) {
        for p in self.proxies.values() {
            p.set(Mode::Pass);
        }
    }
}

/// Starts a cluster whose peer traffic runs through one proxy per ordered
/// pair; clients reach the nodes directly.
pub async fn start_cluster(edit: impl Fn(usize, &mut NodeConfig)) -> (Cluster, Net) {
    let mut proxies = HashMap::new();
    for i in 0..3 {
        for j in (0..3).filter(|&j| j != i) {
            proxies.insert((i, j), Proxy::start().await);
        }
    }
    let cluster = Cluster::start_with(|i, cfg| {
        for p in cfg.peers.iter_mut() {
            let j = tss_node::cluster::NAMES
                .iter()
                .position(|n| *n == p.name)
                .expect("peer is one of the demo parties");
            let proxy = &proxies[&(i, j)];
            *proxy.upstream.lock().expect("upstream") = Some(p.address);
            p.address = proxy.listen;
        }
        edit(i, cfg);
    })
    .await;
    (cluster, Net { proxies })
}
