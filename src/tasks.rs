//! Background work: what outlives the request that started it (resolutions, which a client
//! hanging up must not cut short; NAR fetches that finish and commit after their clients
//! left; late upstream answers still being recorded; the eviction recorder), tracked so that
//! shutdown can wait for it instead of cutting it off.
//!
//! The shape is mini-redis's: one shutdown signal everybody can watch (a
//! [`CancellationToken`]), and one place that knows when every task has finished (a
//! [`TaskTracker`]). Nothing in the service calls `tokio::spawn` directly.

use std::future::Future;
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// The tracked background tasks of one process, and its shutdown signal.
#[derive(Debug, Default)]
pub struct Background {
    /// Every spawned task; `wait` resolves once all have ended after `close`.
    tracker: TaskTracker,
    /// Cancelled when shutdown begins: long-lived loops watch it and wind down.
    shutdown: CancellationToken,
}

impl Background {
    /// No tasks yet, shutdown not signalled.
    pub fn new() -> Self {
        Self::default()
    }

    /// Runs `task` in the background, tracked. Dropping the handle detaches it; awaiting it
    /// gives the task's output (or why it did not finish: a panic, or the runtime stopping).
    pub fn spawn<F>(&self, task: F) -> JoinHandle<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.tracker.spawn(task)
    }

    /// The tracker itself, for layers that spawn their own work (the NAR fetcher).
    pub fn tracker(&self) -> TaskTracker {
        self.tracker.clone()
    }

    /// The shutdown signal: cancelled once, when shutdown begins.
    pub fn shutdown_signal(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    /// Begins shutdown: signals it, then waits up to `grace` for every tracked task to end.
    /// Returns how many were still running when the grace ran out (0: all drained).
    pub async fn drain(&self, grace: Duration) -> usize {
        self.shutdown.cancel();
        self.tracker.close();
        match tokio::time::timeout(grace, self.tracker.wait()).await {
            Ok(()) => 0,
            Err(_) => self.tracker.len(),
        }
    }
}
