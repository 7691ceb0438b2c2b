//! The safe-prime pool: sealed prime sets, refilled in the background.
//!
//! Generation is CPU-heavy (minutes per set with pure-Rust big integers), so
//! it runs on its own OS thread, never on the async runtime, with a bounded
//! number of worker threads (`primes.threads`) so that requests keep a core.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};

use tss_core::primes::{self, Primes};
use tss_core::store::{RecordKind, Store, StoreError};

use crate::config::PrimesConfig;

/// Why no prime set could be taken.
#[derive(Debug, thiserror::Error)]
pub enum TakeError {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A stored set does not decode.
    #[error("stored primes are corrupt: {0}")]
    Corrupt(String),
}

/// The pool.
pub struct PrimePool {
    store: Store,
    cfg: PrimesConfig,
    generating: AtomicBool,
    wake: (Mutex<bool>, Condvar),
}

impl PrimePool {
    /// A pool over `store`.
    pub fn new(store: Store, cfg: PrimesConfig) -> Arc<Self> {
        Arc::new(Self {
            store,
            cfg,
            generating: AtomicBool::new(false),
            wake: (Mutex::new(false), Condvar::new()),
        })
    }

    /// Sets ready in the pool.
    pub fn ready(&self) -> usize {
        self.store.len(RecordKind::Primes).unwrap_or(0)
    }

    /// Whether the background thread is generating now.
    pub fn generating(&self) -> bool {
        self.generating.load(Ordering::Relaxed)
    }

    /// Starts the background refill thread.
    pub fn start(self: &Arc<Self>) -> std::io::Result<()> {
        let pool = self.clone();
        std::thread::Builder::new()
            .name("prime-pool".into())
            .spawn(move || pool.refill_loop())?;
        Ok(())
    }

    fn refill_loop(&self) {
        loop {
            while self.ready() < self.cfg.pool_target {
                self.generating.store(true, Ordering::Relaxed);
                let t = std::time::Instant::now();
                let p = primes::generate(self.cfg.threads);
                if let Err(e) = self.put(&p) {
                    tracing::error!(error = %e, "cannot store generated primes");
                    break;
                }
                tracing::info!(
                    secs = t.elapsed().as_secs_f64(),
                    ready = self.ready(),
                    "safe-prime set generated"
                );
            }
            self.generating.store(false, Ordering::Relaxed);
            let (lock, cv) = &self.wake;
            let Ok(mut woken) = lock.lock() else { return };
            while !*woken {
                woken = match cv.wait(woken) {
                    Ok(w) => w,
                    Err(_) => return,
                };
            }
            *woken = false;
        }
    }

    fn put(&self, p: &Primes) -> Result<(), StoreError> {
        let id: [u8; 16] = rand::random();
        self.store.put(
            RecordKind::Primes,
            crate::keys::prime_set(&id),
            primes::encode(p).expose(),
        )?;
        self.store.flush()
    }

    /// Takes a set out of the pool (durably removed, never handed out twice),
    /// or generates one now if the pool is empty. Blocking: call it from a
    /// blocking thread.
    pub fn take(&self) -> Result<Primes, TakeError> {
        let taken = loop {
            match self.store.first_key(RecordKind::Primes)? {
                None => break None,
                Some(k) => {
                    if let Some(v) = self.store.take(RecordKind::Primes, &k)? {
                        break Some(v);
                    }
                }
            }
        };
        self.kick();
        match taken {
            Some(v) => primes::decode(v.expose()).map_err(|e| TakeError::Corrupt(e.to_string())),
            None => {
                tracing::warn!("prime pool empty: generating a set now (this takes minutes)");
                Ok(primes::generate(self.cfg.threads.max(2)))
            }
        }
    }

    fn kick(&self) {
        let (lock, cv) = &self.wake;
        if let Ok(mut w) = lock.lock() {
            *w = true;
            cv.notify_all();
        }
    }
}
