//! Handlers whose clients left: the server drops the layer's response future when its
//! connection closes, and the layer moves the handler's future into a task of its own, so that
//! a change the handler began is finished and recorded with its real outcome.
//!
//! [`Detached`] counts those tasks, so that a graceful shutdown can wait for them before it
//! flushes the sink, and bounds how long each may run.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::sync::Notify;

/// The default time a handler whose client left may take to finish: 30 s.
pub const DEFAULT_DETACHED_TIMEOUT: Duration = Duration::from_secs(30);

/// The handlers running on their own after their clients left, and how long each may run.
#[derive(Debug)]
pub(crate) struct Detached {
    timeout: Duration,
    running: AtomicUsize,
    idle: Notify,
}

impl Detached {
    pub(crate) fn new(timeout: Duration) -> Self {
        Self {
            timeout,
            running: AtomicUsize::new(0),
            idle: Notify::new(),
        }
    }

    /// How long a detached handler may run before it is dropped (and recorded `499`).
    pub(crate) fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Counts one more detached handler until the returned guard is dropped.
    pub(crate) fn enter(self: &Arc<Self>) -> Running {
        self.running.fetch_add(1, Ordering::SeqCst);
        Running(Arc::clone(self))
    }

    /// How many detached handlers are running.
    pub(crate) fn running(&self) -> usize {
        self.running.load(Ordering::SeqCst)
    }

    /// Completes once no detached handler runs.
    pub(crate) async fn idle(&self) {
        loop {
            let mut notified = std::pin::pin!(self.idle.notified());
            notified.as_mut().enable();
            if self.running() == 0 {
                return;
            }
            notified.await;
        }
    }
}

/// One detached handler, counted while it lives.
pub(crate) struct Running(Arc<Detached>);

impl Drop for Running {
    fn drop(&mut self) {
        if self.0.running.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.0.idle.notify_waiters();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn idle_waits_for_every_running_handler() {
        let detached = Arc::new(Detached::new(DEFAULT_DETACHED_TIMEOUT));
        detached.idle().await;
        let (a, b) = (detached.enter(), detached.enter());
        assert_eq!(detached.running(), 2);
        let waiter = tokio::spawn({
            let detached = Arc::clone(&detached);
            async move { detached.idle().await }
        });
        drop(a);
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished());
        drop(b);
        tokio::time::timeout(Duration::from_secs(5), waiter)
            .await
            .expect("idle once both ended")
            .expect("no panic");
    }
}
