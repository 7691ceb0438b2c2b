//! Admission control for client requests that start protocol sessions
//! (signing, keygen): at most `max_requests` run at once, at most
//! `max_queued` wait for a slot, and none waits longer than `queue_ms`.
//! Anything beyond is refused at once with RESOURCE_EXHAUSTED, so that a
//! burst of clients costs this node bounded memory and its peers bounded
//! sessions, and a client learns to retry instead of timing out.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::config::Limits;
use crate::error::ApiError;

/// The node's request gate.
pub struct Admission {
    node: String,
    running: Arc<Semaphore>,
    max_running: usize,
    queued: AtomicUsize,
    max_queued: usize,
    wait: Duration,
    refused: AtomicUsize,
}

/// A running request's slot; freed when dropped.
pub struct Ticket {
    _permit: OwnedSemaphorePermit,
}

/// One place in the queue; freed when dropped (also when the client goes
/// away while waiting).
struct QueuePlace<'a>(&'a AtomicUsize);

impl Drop for QueuePlace<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Admission {
    /// A gate for node `node` with the configured limits.
    pub fn new(node: &str, limits: &Limits) -> Self {
        let max_running = limits.max_requests().max(1);
        Self {
            node: node.to_owned(),
            running: Arc::new(Semaphore::new(max_running)),
            max_running,
            queued: AtomicUsize::new(0),
            max_queued: limits.max_queued,
            wait: Duration::from_millis(limits.queue_ms),
            refused: AtomicUsize::new(0),
        }
    }

    /// Waits for a slot, or refuses when the queue is full or the wait
    /// exceeds the configured bound.
    pub async fn admit(&self) -> Result<Ticket, ApiError> {
        if let Ok(p) = self.running.clone().try_acquire_owned() {
            return Ok(Ticket { _permit: p });
        }
        if self.queued.fetch_add(1, Ordering::AcqRel) >= self.max_queued {
            self.queued.fetch_sub(1, Ordering::AcqRel);
            return Err(self.refuse(format!(
                "node {} is busy: {} requests running and {} queued; retry later",
                self.node, self.max_running, self.max_queued
            )));
        }
        let _place = QueuePlace(&self.queued);
        match tokio::time::timeout(self.wait, self.running.clone().acquire_owned()).await {
            Ok(Ok(p)) => Ok(Ticket { _permit: p }),
            Ok(Err(_)) => Err(ApiError::Internal("request gate closed".into())),
            Err(_) => Err(self.refuse(format!(
                "node {} is busy: no request slot freed within {} ms; retry later",
                self.node,
                self.wait.as_millis()
            ))),
        }
    }

    fn refuse(&self, why: String) -> ApiError {
        self.refused.fetch_add(1, Ordering::Relaxed);
        ApiError::Busy(why)
    }

    /// Requests running now.
    pub fn running(&self) -> usize {
        self.max_running - self.running.available_permits()
    }

    /// Requests waiting for a slot now.
    pub fn queued(&self) -> usize {
        self.queued.load(Ordering::Acquire)
    }

    /// Requests refused since the node started.
    pub fn refused(&self) -> usize {
        self.refused.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gate(running: usize, queued: usize, queue_ms: u64) -> Arc<Admission> {
        Arc::new(Admission::new(
            "alice",
            &Limits {
                max_requests: Some(running),
                max_queued: queued,
                queue_ms,
                ..Limits::default()
            },
        ))
    }

    #[tokio::test]
    async fn admit__should_run_up_to_the_bound_queue_the_next_and_refuse_beyond() {
        let g = gate(2, 1, 60_000);
        let a = g.admit().await.expect("first runs");
        let _b = g.admit().await.expect("second runs");
        assert_eq!(g.running(), 2);
        let waiter = {
            let g = g.clone();
            tokio::spawn(async move { g.admit().await.map(|_| ()) })
        };
        while g.queued() == 0 {
            tokio::task::yield_now().await;
        }
        let err = g.admit().await.err().expect("queue full");
        assert!(matches!(err, ApiError::Busy(_)), "{err}");
        assert!(err.to_string().contains("2 requests running and 1 queued"));
        assert_eq!(g.refused(), 1);
        drop(a);
        waiter.await.expect("join").expect("queued request runs");
        assert_eq!(g.queued(), 0);
    }

    #[tokio::test]
    async fn admit__should_refuse_after_waiting_the_bound_and_free_its_place() {
        let g = gate(1, 4, 50);
        let _a = g.admit().await.expect("runs");
        let err = g.admit().await.err().expect("waited too long");
        assert!(err.to_string().contains("within 50 ms"), "{err}");
        assert_eq!(g.queued(), 0, "the place is freed");
    }

    #[tokio::test]
    async fn admit__should_free_the_place_of_a_client_that_went_away() {
        let g = gate(1, 1, 60_000);
        let _a = g.admit().await.expect("runs");
        let waiter = {
            let g = g.clone();
            tokio::spawn(async move { g.admit().await.map(|_| ()) })
        };
        while g.queued() == 0 {
            tokio::task::yield_now().await;
        }
        waiter.abort();
        let _ = waiter.await;
        assert_eq!(g.queued(), 0);
    }
}
