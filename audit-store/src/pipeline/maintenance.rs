//! Periodic work beside ingestion: signed checkpoints of every chain, and retention.

use std::sync::Arc;
use std::time::Duration;

use super::Context;
use super::metrics::Counters;
use crate::store::ChainedStore;

impl<S: ChainedStore> Context<S> {
    /// Signs a checkpoint of every chain every `checkpoint_interval` until stopped.
    pub(super) async fn checkpoints(self: Arc<Self>, mut stop: tokio::sync::watch::Receiver<bool>) {
        loop {
            tokio::select! {
                () = tokio::time::sleep(self.checkpoint_interval) => self.checkpoint().await,
                _ = stop.changed() => return,
            }
        }
    }

    /// Deletes records older than `keep` a minute after start (sooner with a shorter
    /// interval), then every `retention_interval`, until stopped.
    pub(super) async fn retain(
        self: Arc<Self>,
        keep: Duration,
        mut stop: tokio::sync::watch::Receiver<bool>,
    ) {
        let mut wait = self.retention_interval.min(Duration::from_secs(60));
        loop {
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                _ = stop.changed() => return,
            }
            wait = self.retention_interval;
            let keep_ms = i64::try_from(keep.as_millis()).unwrap_or(i64::MAX);
            let cutoff = crate::time::now_ms().saturating_sub(keep_ms);
            match self.store.delete_before(cutoff).await {
                Ok(deleted) => {
                    Counters::add(&self.shared.counters.expired, deleted);
                    tracing::info!(target: "audit_store", deleted, "audit retention ran");
                }
                Err(e) => {
                    tracing::warn!(target: "audit_store", "audit retention failed, will retry: {e}")
                }
            }
        }
    }

    /// One round of checkpoints, handed to the checkpoint sink. Failures are logged: the
    /// next round vouches for everything this one would have.
    pub(super) async fn checkpoint(&self) {
        let now = crate::time::now_ms();
        match self.store.checkpoint(now).await {
            Ok(checkpoints) => {
                Counters::add(&self.shared.counters.checkpoints, checkpoints.len() as u64);
                if let Some(sink) = &self.checkpoint_sink
                    && let Err(e) = sink.publish(&checkpoints).await
                {
                    tracing::error!(target: "audit_store", "the checkpoint sink failed: {e}");
                }
            }
            Err(e) => {
                tracing::warn!(target: "audit_store", "cannot sign audit chain checkpoints now: {e}");
            }
        }
    }
}
