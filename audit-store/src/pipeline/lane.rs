//! A writer: takes batches off its lane of the queue, enriches and flattens them, and writes
//! each in one transaction, with retries, else to the spool.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use audit_layer::NotCommitted;
use futures_util::FutureExt as _;
use tokio::sync::mpsc;

use super::Context;
use super::Destination;
use super::gaps::GapSpan;
use super::metrics::{Counters, Source};
use super::queue::{Envelope, Message, batch_end};
use super::spool::Appended;
use crate::Result;
use crate::model::StoredRecord;

/// Messages a lane takes from its channel at a time: enough that taking costs little per
/// record, few enough that the buffer they pass through stays small beside the batch.
pub(super) const RECEIVE_CHUNK: usize = 256;

/// Moves the records of `received` to `batch`, taking their bytes off the queue's count
/// (`queued`) and adding them to `held`; whether a shutdown was among them.
pub(super) fn unpack(
    received: &mut Vec<Message>,
    batch: &mut Vec<Envelope>,
    queued: &AtomicU64,
    held: &mut u64,
) -> bool {
    let mut shutdown = false;
    let mut bytes = 0;
    for message in received.drain(..) {
        match message {
            Message::Record(e) => {
                bytes += e.bytes;
                batch.push(e);
            }
            Message::Shutdown => shutdown = true,
        }
    }
    queued.fetch_sub(bytes, Ordering::Relaxed);
    *held += bytes;
    shutdown
}

impl<S: Destination> Context<S> {
    /// One write, bounded in time: a database that hangs fails like one that refuses, so the
    /// pipeline retries and then spools. A write that timed out may have committed; its
    /// retry then finds the records stored and skips them.
    pub(super) async fn insert(&self, rows: &[StoredRecord]) -> Result<u64> {
        match tokio::time::timeout(self.write_timeout, self.store.write_rows(rows)).await {
            Ok(result) => result,
            Err(_) => Err(crate::StoreError::Timeout(self.write_timeout)),
        }
    }

    pub(super) async fn lane(self: Arc<Self>, mut rx: mpsc::Receiver<Message>) {
        let mut batch: Vec<Envelope> = Vec::with_capacity(self.batch_size);
        let mut received: Vec<Message> = Vec::with_capacity(RECEIVE_CHUNK);
        let mut closing = false;
        let queued = &self.shared.queued_bytes;
        while !closing {
            // The first record, then whatever follows it within the flush interval, taken
            // from the channel as many at a time as are there, until the batch is full in
            // records or in bytes.
            let mut held = 0;
            closing |= rx.recv_many(&mut received, RECEIVE_CHUNK).await == 0;
            closing |= unpack(&mut received, &mut batch, queued, &mut held);
            let deadline = tokio::time::Instant::now() + self.flush_interval;
            while !closing && batch.len() < self.batch_size && held < self.batch_bytes {
                let room = (self.batch_size - batch.len()).min(RECEIVE_CHUNK);
                match tokio::time::timeout_at(deadline, rx.recv_many(&mut received, room)).await {
                    Ok(0) => closing = true,
                    Ok(_) => closing |= unpack(&mut received, &mut batch, queued, &mut held),
                    Err(_) => break,
                }
            }
            if self.shared.backpressure.is_some() {
                // Room in the queue for the requests held back.
                self.shared.room.notify_waiters();
            }
            if closing {
                // Take what raced the shutdown in, too.
                rx.close();
                while let Ok(message) = rx.try_recv() {
                    if let Message::Record(e) = message {
                        queued.fetch_sub(e.bytes, Ordering::Relaxed);
                        batch.push(e);
                    }
                }
            }
            while !batch.is_empty() {
                let end = batch_end(&batch, self.batch_size, self.batch_bytes);
                let rest = batch.split_off(end);
                let full = std::mem::replace(&mut batch, rest);
                let count = full.len();
                // What a panic would lose, per account: one id cloned per account, not per
                // record.
                let spans = GapSpan::of_batch(&full);
                let processed = AssertUnwindSafe(self.process(full, closing))
                    .catch_unwind()
                    .await;
                self.shared
                    .in_memory
                    .fetch_sub(count as u64, Ordering::Relaxed);
                if processed.is_err() {
                    // A bug (a panicking directory, say) must not stop ingestion: the batch is
                    // counted as lost, and the lane goes on.
                    tracing::error!(target: "audit_store", records = count, "an audit batch panicked and was dropped");
                    for (account, span) in spans {
                        self.shared.drop_span(account, span);
                    }
                }
            }
        }
    }

    pub(super) async fn process(&self, batch: Vec<Envelope>, closing: bool) {
        let mut rows = Vec::with_capacity(batch.len());
        let mut waiters = Vec::new();
        for Envelope {
            mut record,
            committed,
            ..
        } in batch
        {
            if let Some(enricher) = &self.enricher {
                enricher.enrich(&mut record).await;
            }
            // Serialized before it is taken apart, so that an error can still name it.
            match serde_json::to_string(&record) {
                Ok(json) => rows.push(StoredRecord::flatten(record, json)),
                Err(e) => {
                    tracing::error!(target: "audit_store", id = %record.id, "unstorable audit record: {e}");
                    self.shared.drop_record(
                        record.account.as_ref().map(|a| a.id.as_str()),
                        record.action.time.unix_millis(),
                    );
                    if let Some(tx) = committed {
                        let _ = tx.send(Err(NotCommitted::Dropped));
                    }
                    continue;
                }
            }
            waiters.push(committed);
        }
        let outcome = self.write(rows, closing).await;
        for tx in waiters.into_iter().flatten() {
            let _ = tx.send(outcome);
        }
    }

    /// Writes one batch: to the database with retries, else to the spool.
    pub(super) async fn write(
        &self,
        rows: Vec<StoredRecord>,
        closing: bool,
    ) -> std::result::Result<(), NotCommitted> {
        let mut attempt = 0;
        loop {
            if self.has_spool && self.shared.degraded.load(Ordering::Acquire) {
                match self.spool_degraded(&rows).await {
                    Some(outcome) => return outcome,
                    // Recovered while we waited for the spool: write directly.
                    None => continue,
                }
            }
            let started = Instant::now();
            match self.insert(&rows).await {
                Ok(new) => {
                    self.committed(&rows, new, started);
                    if !self.has_spool {
                        self.available_again();
                    }
                    self.write_gaps().await;
                    return Ok(());
                }
                Err(e) if e.is_data_error() => {
                    // The database refuses some row itself: retrying the batch cannot help.
                    // Write row by row and drop only what it refuses.
                    Counters::add(&self.shared.counters.failed_writes, 1);
                    tracing::warn!(target: "audit_store", records = rows.len(), "audit batch refused, writing row by row: {e}");
                    return self.write_each(rows, closing).await;
                }
                Err(e) => {
                    Counters::add(&self.shared.counters.failed_writes, 1);
                    attempt += 1;
                    tracing::warn!(target: "audit_store", attempt, records = rows.len(), "audit batch write failed: {e}");
                    if attempt >= self.retry.attempts {
                        if self.has_spool {
                            self.shared.degraded.store(true, Ordering::Release);
                            continue;
                        }
                        // No spool: keep the batch in memory and keep trying, but not
                        // forever once shutting down.
                        self.shared.degraded.store(true, Ordering::Release);
                        if closing && attempt >= self.retry.attempts + 10 {
                            for row in &rows {
                                self.shared
                                    .drop_record(row.account_id.as_deref(), row.time_ms);
                            }
                            tracing::error!(target: "audit_store", records = rows.len(), "audit database unavailable at shutdown and no spool: records dropped");
                            return Err(NotCommitted::Dropped);
                        }
                    }
                    tokio::time::sleep(self.retry.backoff(attempt.saturating_sub(1))).await;
                }
            }
        }
    }

    /// Writes rows one at a time, dropping (counted, and reported by a gap record) those the
    /// database refuses; the rest go through [`write`](Self::write) again if the database
    /// fails meanwhile.
    pub(super) async fn write_each(
        &self,
        rows: Vec<StoredRecord>,
        closing: bool,
    ) -> std::result::Result<(), NotCommitted> {
        let mut outcome = Ok(());
        let mut rows = rows.into_iter();
        while let Some(row) = rows.next() {
            let started = Instant::now();
            match self.insert(std::slice::from_ref(&row)).await {
                Ok(new) => self.committed(std::slice::from_ref(&row), new, started),
                Err(e) if e.is_data_error() => {
                    tracing::error!(target: "audit_store", id = %row.id, "the audit database refuses this record, dropped: {e}");
                    self.shared
                        .drop_record(row.account_id.as_deref(), row.time_ms);
                    outcome = Err(NotCommitted::Dropped);
                }
                Err(_) => {
                    let rest: Vec<StoredRecord> = std::iter::once(row).chain(rows).collect();
                    return Box::pin(self.write(rest, closing)).await.and(outcome);
                }
            }
        }
        self.write_gaps().await;
        outcome
    }

    /// Counts rows replayed from the spool: gap records the spool kept count as gap
    /// records, everything else as stored and replayed.
    pub(super) fn replayed(&self, rows: &[StoredRecord], new: u64, started: Instant) {
        let counters = &self.shared.counters;
        let gaps = rows.iter().filter(|r| r.action_type == "gap").count() as u64;
        let records = rows.len() as u64 - gaps;
        Counters::add(&counters.gap_records, gaps.min(new));
        self.shared.stored(new.saturating_sub(gaps));
        Counters::add(
            &counters.duplicates,
            records.saturating_sub(new.saturating_sub(gaps)),
        );
        Counters::add(&counters.replayed, records);
        let times = rows.iter().map(|r| r.time_ms);
        counters.batch_written(started.elapsed(), Source::Spool, times);
        self.shared.export_levels();
    }

    pub(super) fn committed(&self, rows: &[StoredRecord], new: u64, started: Instant) {
        let counters = &self.shared.counters;
        self.shared.stored(new);
        Counters::add(
            &counters.duplicates,
            (rows.len() as u64).saturating_sub(new),
        );
        let times = rows.iter().map(|r| r.time_ms);
        counters.batch_written(started.elapsed(), Source::Queue, times);
        self.shared.export_levels();
    }

    /// Appends a batch to the spool while the database is unavailable (degraded). `None` when
    /// the pipeline recovered meanwhile: the batch goes to the database instead.
    pub(super) async fn spool_degraded(
        &self,
        rows: &[StoredRecord],
    ) -> Option<std::result::Result<(), NotCommitted>> {
        let mut guard = self.spool.lock().await;
        // Checked under the lock: recovery clears the flag while holding it.
        if !self.shared.degraded.load(Ordering::Acquire) {
            return None;
        }
        let spool = guard.as_mut()?;
        let texts: Vec<String> = rows.iter().map(|r| r.record.clone()).collect();
        let outcome = match spool.append(&texts).await {
            Ok(Appended::Stored) => {
                Counters::add(&self.shared.counters.spooled, rows.len() as u64);
                Err(NotCommitted::Spooled)
            }
            Ok(Appended::OverBudget) => {
                tracing::error!(target: "audit_store", records = rows.len(), "audit spool out of budget: records dropped");
                Err(NotCommitted::Dropped)
            }
            Err(e) => {
                tracing::error!(target: "audit_store", records = rows.len(), "audit spool write failed, records dropped: {e}");
                Err(NotCommitted::Dropped)
            }
        };
        if outcome == Err(NotCommitted::Dropped) {
            for row in rows {
                self.shared
                    .drop_record(row.account_id.as_deref(), row.time_ms);
            }
        }
        self.shared
            .spool_bytes
            .store(spool.used_bytes(), Ordering::Relaxed);
        self.shared.export_levels();
        Some(outcome)
    }
}
