//! Periodic work beside ingestion: signed checkpoints of every chain, and retention (whose
//! anchors go to the checkpoint sink too).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::Context;
use super::Destination;
use super::metrics::Counters;
use crate::model::{Checkpoint, CheckpointKind};

/// The shortest time between two rounds of checkpoints started by the record count: under
/// load, one round a second (at most one checkpoint per chain that grew).
pub(super) const CHECKPOINT_FLOOR: Duration = Duration::from_secs(1);

impl<S: Destination> Context<S> {
    /// Signs checkpoints until stopped: of every chain at once (start-up) and every
    /// `checkpoint_interval`; between those, of the chains that grew, once
    /// `checkpoint_records` records were stored since the last round or `checkpoint_every`
    /// passed, but never more often than [`CHECKPOINT_FLOOR`] (nor than `checkpoint_every`).
    pub(super) async fn checkpoints(self: Arc<Self>, mut stop: tokio::sync::watch::Receiver<bool>) {
        let mut signed = HashMap::new();
        // Start-up: what the database holds now is vouched for before anything is added, so
        // rewinding a chain while the process was down is found against the last word of
        // the previous process, and records deleted from now on against this one.
        self.checkpoint_round(&mut signed, true).await;
        let mut full_at = Instant::now() + self.checkpoint_interval;
        let floor = CHECKPOINT_FLOOR.min(self.checkpoint_every);
        loop {
            let round_started = Instant::now();
            let timer = (round_started + self.checkpoint_every).min(full_at);
            tokio::select! {
                () = tokio::time::sleep_until(timer.into()) => {}
                () = self.shared.checkpoint_due.notified() => {
                    // Under load the record count is reached quickly: rounds stay apart.
                    let next = (round_started + floor).min(full_at);
                    tokio::select! {
                        () = tokio::time::sleep_until(next.into()) => {}
                        _ = stop.changed() => return,
                    }
                }
                _ = stop.changed() => return,
            }
            let full = Instant::now() >= full_at;
            if full {
                full_at = Instant::now() + self.checkpoint_interval;
            }
            self.checkpoint_round(&mut signed, full).await;
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
            match self.store.expire(cutoff).await {
                Ok(retention) => {
                    Counters::add(&self.shared.counters.expired, retention.deleted);
                    tracing::info!(target: "audit_store", deleted = retention.deleted, "audit retention ran");
                    for refusal in &retention.refused {
                        Counters::add(&self.shared.counters.retention_refused, 1);
                        tracing::error!(target: "audit_store", chain = %refusal.chain, seq = refusal.seq, "{refusal}; nothing of that chain was deleted: find out who edited the audit database");
                    }
                    self.publish(&retention.anchors).await;
                }
                Err(e) => {
                    tracing::warn!(target: "audit_store", "audit retention failed, will retry: {e}")
                }
            }
        }
    }

    /// One round of checkpoints of every chain, handed to the checkpoint sink: the last word
    /// at shutdown.
    pub(super) async fn checkpoint(&self) {
        self.checkpoint_round(&mut HashMap::new(), true).await;
    }

    /// One round of checkpoints: of every chain when `full` (also chains that did not grow:
    /// a fresh checkpoint says nothing was deleted since), else of those whose head moved
    /// since `signed` (the sequence number last signed per chain), stored, counted and handed
    /// to the checkpoint sink. Failures are logged: the next round vouches for everything
    /// this one would have.
    pub(super) async fn checkpoint_round(&self, signed: &mut HashMap<String, i64>, full: bool) {
        let Some(keys) = self.store.checkpoint_keys() else {
            return;
        };
        self.shared.checkpointed();
        let now = crate::time::now_ms();
        let heads = match self.store.heads().await {
            Ok(heads) => heads,
            Err(e) => {
                tracing::warn!(target: "audit_store", "cannot sign audit chain checkpoints now: {e}");
                return;
            }
        };
        let checkpoints: Vec<Checkpoint> = heads
            .into_iter()
            .filter(|h| full || signed.get(&h.chain) != Some(&h.seq))
            .map(|h| {
                Checkpoint::sign(
                    keys,
                    CheckpointKind::Checkpoint,
                    h.chain,
                    h.seq,
                    h.hash,
                    now,
                )
            })
            .collect();
        if checkpoints.is_empty() {
            return;
        }
        if let Err(e) = self.store.keep_checkpoints(&checkpoints).await {
            tracing::warn!(target: "audit_store", "cannot sign audit chain checkpoints now: {e}");
            return;
        }
        for checkpoint in &checkpoints {
            signed.insert(checkpoint.account_id.clone(), checkpoint.seq);
        }
        Counters::add(&self.shared.counters.checkpoints, checkpoints.len() as u64);
        self.publish(&checkpoints).await;
    }

    /// Hands checkpoints or anchors to the checkpoint sink, if any. A failure is logged: they
    /// stay in the database, and the next round vouches for everything these would have.
    async fn publish(&self, checkpoints: &[Checkpoint]) {
        if checkpoints.is_empty() {
            return;
        }
        if let Some(sink) = &self.checkpoint_sink
            && let Err(e) = sink.publish(checkpoints).await
        {
            tracing::error!(target: "audit_store", "the checkpoint sink failed: {e}");
        }
    }
}
