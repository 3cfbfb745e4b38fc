//! The spool's side: records that overflowed a full queue are appended to it, and while the
//! database is unavailable a probe waits for it and replays the spool in order.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use tokio::sync::mpsc;

use super::Context;
use super::Destination;
use super::metrics::Counters;
use super::queue::{Envelope, Message, batch_end};
use super::shared::Lost;
use super::spool::Appended;
use crate::model::StoredRecord;

impl<S: Destination> Context<S> {
    /// Appends records that found the queue full to the spool, in batches.
    pub(super) async fn overflow(self: Arc<Self>, mut rx: mpsc::Receiver<Message>) {
        let mut batch: Vec<Envelope> = Vec::with_capacity(1024);
        let mut closing = false;
        let buffered = &self.shared.overflow_bytes;
        while !closing {
            // As many as make a batch, in records and in bytes: one segment.
            let mut held = 0;
            let mut take = |e: Envelope, held: &mut u64| {
                buffered.fetch_sub(e.bytes, Ordering::Relaxed);
                *held += e.bytes;
                batch.push(e);
            };
            match rx.recv().await {
                None | Some(Message::Shutdown) => closing = true,
                Some(Message::Record(e)) => take(e, &mut held),
            }
            let mut taken = 1;
            while taken < self.batch_size && held < self.batch_bytes {
                match rx.try_recv() {
                    Ok(Message::Record(e)) => take(e, &mut held),
                    Ok(Message::Shutdown) => closing = true,
                    Err(_) => break,
                }
                taken += 1;
            }
            // One segment per batch, bounded as the writers' batches are.
            while !batch.is_empty() {
                let end = batch_end(&batch, self.batch_size, self.batch_bytes);
                let part: Vec<Envelope> = batch.drain(..end).collect();
                self.spool_overflowing(part).await;
            }
        }
    }

    /// Serializes records that found the queue full and appends them to the spool as one
    /// segment.
    async fn spool_overflowing(&self, batch: Vec<Envelope>) {
        {
            let count = batch.len() as u64;
            // Spooled records are stored when replayed, which flattens them: here each is
            // only serialized, so overflowing costs little while the server is saturated.
            let mut lines = Vec::with_capacity(batch.len());
            let mut records = Vec::with_capacity(batch.len());
            for Envelope { mut record, .. } in batch {
                if let Some(enricher) = &self.enricher {
                    enricher.enrich(&mut record).await;
                }
                match serde_json::to_string(&record) {
                    Ok(line) => {
                        lines.push(line);
                        records.push(Lost::of(&record));
                    }
                    Err(e) => {
                        tracing::error!(target: "audit_store", id = %record.id, "unstorable audit record: {e}");
                        Lost::of(&record).drop(&self.shared);
                    }
                }
            }
            self.spool_overflowed(&lines, &records).await;
            self.shared.in_memory.fetch_sub(count, Ordering::Relaxed);
        }
    }

    /// Appends overflowed records (`lines`, their JSON) to the spool; they are replayed when
    /// the queue has room. `lost` says what each one was, should they be dropped.
    pub(super) async fn spool_overflowed(&self, lines: &[String], lost: &[Lost]) {
        let mut guard = self.spool.lock().await;
        let Some(spool) = guard.as_mut() else { return };
        match spool.append(lines).await {
            Ok(Appended::Stored) => {
                Counters::add(&self.shared.counters.spooled, lines.len() as u64);
                self.shared.spilled.store(true, Ordering::Release);
            }
            outcome => {
                match outcome {
                    Err(e) => {
                        tracing::error!(target: "audit_store", records = lines.len(), "audit spool write failed, overflowed records dropped: {e}")
                    }
                    _ => {
                        tracing::error!(target: "audit_store", records = lines.len(), "audit spool out of budget: overflowed records dropped")
                    }
                }
                for record in lost {
                    record.drop(&self.shared);
                }
            }
        }
        self.shared
            .spool_bytes
            .store(spool.used_bytes(), Ordering::Relaxed);
    }

    /// While degraded: probe the database, and replay the spool in order once it answers.
    /// Records that overflowed are replayed once the queue is less than half full (at
    /// shutdown, whatever the queue).
    pub(super) async fn recover(self: Arc<Self>, stop: Arc<AtomicBool>) {
        loop {
            let stopping = stop.load(Ordering::Acquire);
            let degraded = self.shared.degraded.load(Ordering::Acquire);
            let spilled = self.shared.spilled.load(Ordering::Acquire)
                && (stopping || self.shared.queue_depth() < self.shared.queue_capacity() / 2);
            if (degraded || spilled) && self.has_spool {
                if self.store.probe().await.is_ok() {
                    self.replay().await;
                }
            } else if !degraded {
                self.write_gaps().await;
            }
            if stopping {
                return;
            }
            tokio::time::sleep(self.probe_interval).await;
        }
    }

    /// Leaves the degraded state (strict mode serves again), saying so once.
    pub(super) fn available_again(&self) {
        if self.shared.degraded.swap(false, Ordering::AcqRel) {
            tracing::info!(target: "audit_store", "audit store available again: records go to the database");
        }
    }

    /// Writes the spool's segments to the database, oldest first, as many in a transaction
    /// as hold up to a batch's records, removing them once committed; clears the degraded
    /// and spilled states when the spool is empty.
    ///
    /// While more remains behind what is being written, the spool is locked only to read and
    /// to remove segments, never during a database write: segments are immutable once
    /// appended, and appends (of overflowing records, of batches while degraded) go on
    /// meanwhile. The spool's last records are written with the lock held, and the degraded
    /// state is cleared before it is released, so appends wait for that one transaction
    /// (bounded by the write timeout) and then go to the database. Otherwise, while records
    /// keep arriving, a segment could be appended during every replay transaction that takes
    /// longer than a flush interval, the replay would never find the spool empty, and strict
    /// mode would refuse requests for as long as they came.
    pub(super) async fn replay(&self) {
        loop {
            let guard = self.spool.lock().await;
            let Some(spool) = guard.as_ref() else { return };
            let oldest = match spool.oldest_batch(self.batch_size, self.batch_bytes).await {
                Ok(Some(oldest)) => oldest,
                Ok(None) => {
                    // Seen empty under the lock: nothing can be appended behind this.
                    self.shared.spilled.store(false, Ordering::Release);
                    self.available_again();
                    break;
                }
                Err(e) => {
                    tracing::error!(target: "audit_store", "cannot read the audit spool: {e}");
                    return;
                }
            };
            // Held through the write only when it empties the spool.
            let mut held = oldest.all.then_some(guard);
            let mut rows = Vec::with_capacity(oldest.records.len());
            // Older than the retention period: deleted already, or about to be. A segment
            // copied out of the spool and put back after retention removed its records would
            // otherwise chain them again, as new, after newer ones.
            let retained_from = self
                .retention
                .filter(|_| self.store.keeps_records())
                .map(|keep| {
                    crate::time::now_ms()
                        .saturating_sub(i64::try_from(keep.as_millis()).unwrap_or(i64::MAX))
                });
            for text in oldest.records {
                match StoredRecord::from_json(text) {
                    Ok(row) if retained_from.is_some_and(|from| row.time_ms < from) => {
                        tracing::error!(target: "audit_store", id = %row.id, time_ms = row.time_ms, "a spooled record older than the retention period is not stored (a segment replayed after its records were deleted?), dropped");
                        self.shared
                            .drop_record(row.account_id.as_deref(), row.time_ms);
                    }
                    Ok(row) => rows.push(row),
                    Err(e) => {
                        tracing::error!(target: "audit_store", "unreadable record in the audit spool, dropped: {e}");
                        Counters::add(&self.shared.counters.dropped, 1);
                    }
                }
            }
            let started = Instant::now();
            match self.insert(&rows).await {
                Ok(new) => self.replayed(&rows, new, started),
                Err(e) if e.is_data_error() => {
                    // Row by row may take long: not while appends wait.
                    held = None;
                    Counters::add(&self.shared.counters.failed_writes, 1);
                    tracing::warn!(target: "audit_store", "a spooled batch is refused, replaying row by row: {e}");
                    for row in &rows {
                        match self.insert(std::slice::from_ref(row)).await {
                            Ok(new) => {
                                self.replayed(std::slice::from_ref(row), new, Instant::now());
                            }
                            Err(e) if e.is_data_error() => {
                                tracing::error!(target: "audit_store", id = %row.id, "the audit database refuses this spooled record, dropped: {e}");
                                self.shared
                                    .drop_record(row.account_id.as_deref(), row.time_ms);
                            }
                            Err(e) => {
                                tracing::warn!(target: "audit_store", "audit spool replay failed, will retry: {e}");
                                return;
                            }
                        }
                    }
                }
                Err(e) => {
                    Counters::add(&self.shared.counters.failed_writes, 1);
                    tracing::warn!(target: "audit_store", "audit spool replay failed, will retry: {e}");
                    return;
                }
            }
            let mut guard = match held {
                Some(guard) => guard,
                None => self.spool.lock().await,
            };
            let Some(spool) = guard.as_mut() else { return };
            for id in oldest.ids {
                if let Err(e) = spool.remove(id).await {
                    tracing::error!(target: "audit_store", "cannot remove a replayed spool segment: {e}");
                    return;
                }
            }
            if oldest.rejected > 0 {
                // Counted once, with the segments gone: lines that were forged, edited or
                // damaged are not records of any known account, and a gap record (in the
                // log of records without an account) says that they were refused.
                let now = crate::time::now_ms();
                Counters::add(&self.shared.counters.spool_rejected, oldest.rejected);
                Counters::add(&self.shared.counters.dropped, oldest.rejected);
                self.shared
                    .gaps
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .note_unattributed(oldest.rejected, now, now);
            }
            self.shared
                .spool_bytes
                .store(spool.used_bytes(), Ordering::Relaxed);
            if spool.is_empty() {
                // Empty under the lock: batches waiting to be spooled go to the database.
                self.shared.spilled.store(false, Ordering::Release);
                self.available_again();
                break;
            }
        }
        self.write_gaps().await;
    }
}
