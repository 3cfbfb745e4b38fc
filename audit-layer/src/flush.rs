//! What an app calls on graceful shutdown, once the server stopped serving and before it
//! shuts its sink down: [`AuditFlush`].

use std::sync::Arc;
use std::time::Duration;

use crate::coalesce::Coalescing;
use crate::detach::Detached;

/// Finishes what a layer still holds at shutdown: handlers whose clients left and that still
/// run on their own, then the records it is still counting (the summaries of failed
/// authentications coalesced in windows not yet closed). Taken from the configured layer with
/// [`AuditLayer::flush_handle`](crate::AuditLayer::flush_handle); cheap to clone.
///
/// Call [`flush`](Self::flush) after the server stopped serving (axum's graceful shutdown has
/// returned) and before the sink is shut down, so that every record reaches it:
///
/// ```
/// use std::time::Duration;
/// use audit_layer::{AuditLayer, AuditPolicy, sink::MemorySink};
/// use axum::{Router, routing::get};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let records = MemorySink::new();
/// let layer = AuditLayer::new(AuditPolicy::default()).sink(records.clone());
/// let flush = layer.flush_handle();
/// let app: Router = Router::new().route("/", get(|| async { "ok" })).layer(layer);
/// // ... axum::serve(listener, app).with_graceful_shutdown(signal).await ...
/// # drop(app);
/// let flushed = flush.flush(Duration::from_secs(30)).await;
/// assert_eq!(flushed.handlers_still_running, 0);
/// // ... then shut the sink down.
/// # }
/// ```
#[derive(Clone)]
pub struct AuditFlush {
    pub(crate) detached: Arc<Detached>,
    pub(crate) coalescing: Arc<Coalescing>,
}

impl std::fmt::Debug for AuditFlush {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditFlush")
            .field("detached", &self.detached)
            .finish_non_exhaustive()
    }
}

/// What [`AuditFlush::flush`] did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Flushed {
    /// Handlers whose clients left and that were still running when `flush` stopped waiting:
    /// their records come when they finish (or at their timeout), perhaps after the sink was
    /// shut down.
    pub handlers_still_running: usize,
}

impl AuditFlush {
    /// Waits (up to `within`) for the handlers whose clients left, then emits every record
    /// the layer still holds.
    pub async fn flush(&self, within: Duration) -> Flushed {
        let waited = tokio::time::timeout(within, self.detached.idle()).await;
        let handlers_still_running = if waited.is_ok() {
            0
        } else {
            let running = self.detached.running();
            tracing::warn!(
                target: "audit",
                "{running} handlers whose clients left still run after {} ms of shutdown",
                within.as_millis()
            );
            running
        };
        self.coalescing.close(true);
        Flushed {
            handlers_still_running,
        }
    }
}
