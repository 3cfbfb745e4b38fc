//! The layer's side: [`IngestSink`] puts records on the queue (or the spool's overflow
//! buffer) without waiting, holds requests back under backpressure, and waits for commits in
//! strict mode.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use audit_layer::NotCommitted;
use audit_layer::record::AuditRecord;
use audit_layer::sink::AuditSink;
use tokio::sync::{mpsc, oneshot};

use super::metrics::{Counters, PipelineMetrics};
use super::queue::{Envelope, Message};
use super::route::LaneRouter;
use super::shared::{Admission, Shared};

/// The layer's sink: hands records to the pipeline without waiting.
///
/// Cheap to clone. Give one to the `AuditLayer`, keep one to read [`metrics`](Self::metrics)
/// and to [`shutdown`](Self::shutdown) the pipeline.
#[derive(Clone)]
pub struct IngestSink {
    pub(super) shared: Arc<Shared>,
    pub(super) lanes: Arc<[mpsc::Sender<Message>]>,
    /// Which lane an account's records take.
    pub(super) router: Arc<LaneRouter>,
    /// To the spool when the queue is full (with a spool only).
    pub(super) overflow: Option<mpsc::Sender<Message>>,
}

impl std::fmt::Debug for IngestSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IngestSink")
            .field("metrics", &self.metrics())
            .finish()
    }
}

impl IngestSink {
    pub(super) fn lane_for(&self, record: &AuditRecord) -> &mpsc::Sender<Message> {
        &self.lanes[self
            .router
            .lane(record.account.as_ref().map(|a| a.id.as_str()))]
    }

    /// Queues a record; when the queue is full, hands it to the spool's overflow buffer
    /// (a record without a commit waiter, with a spool only). When neither takes it, counts
    /// it as dropped and returns `false`.
    pub(super) fn enqueue(&self, envelope: Envelope) -> bool {
        let shared = &self.shared;
        let bytes = envelope.bytes;
        let rejected = if shared.closing.load(Ordering::Acquire) {
            Some(envelope)
        } else if !reserve(&shared.queued_bytes, shared.queue_bytes_max, bytes) {
            // Full in bytes: as when full in records.
            match envelope.committed {
                None => self.overflow(envelope),
                Some(_) => Some(envelope),
            }
        } else {
            match self
                .lane_for(&envelope.record)
                .try_send(Message::Record(envelope))
            {
                Ok(()) => None,
                Err(mpsc::error::TrySendError::Full(Message::Record(e))) => {
                    shared.queued_bytes.fetch_sub(bytes, Ordering::Relaxed);
                    match e.committed {
                        None => self.overflow(e),
                        Some(_) => Some(e),
                    }
                }
                Err(mpsc::error::TrySendError::Closed(Message::Record(e))) => {
                    shared.queued_bytes.fetch_sub(bytes, Ordering::Relaxed);
                    Some(e)
                }
                Err(_) => unreachable!("only records are sent by submit"),
            }
        };
        match rejected {
            None => {
                Counters::add(&self.shared.counters.enqueued, 1);
                self.shared.in_memory.fetch_add(1, Ordering::Relaxed);
                true
            }
            Some(envelope) => {
                let record = &envelope.record;
                self.shared.drop_record(
                    record.account.as_ref().map(|a| a.id.as_str()),
                    record.action.time.unix_millis(),
                );
                false
            }
        }
    }

    /// Hands a record that found the queue full to the spool's overflow buffer; gives it
    /// back when there is no spool or the buffer is full too.
    pub(super) fn overflow(&self, envelope: Envelope) -> Option<Envelope> {
        let Some(overflow) = &self.overflow else {
            return Some(envelope);
        };
        let (shared, bytes) = (&self.shared, envelope.bytes);
        if !reserve(&shared.overflow_bytes, shared.overflow_bytes_max, bytes) {
            return Some(envelope);
        }
        match overflow.try_send(Message::Record(envelope)) {
            Ok(()) => {
                Counters::add(&shared.counters.overflowed, 1);
                None
            }
            Err(mpsc::error::TrySendError::Full(Message::Record(e)))
            | Err(mpsc::error::TrySendError::Closed(Message::Record(e))) => {
                shared.overflow_bytes.fetch_sub(bytes, Ordering::Relaxed);
                Some(e)
            }
            Err(_) => unreachable!("only records are sent by submit"),
        }
    }

    /// Whether the queue is short of room for the requests in flight: a lane holds
    /// `admission.below` records, or the queue three-quarters of its bytes.
    pub(super) fn crowded(&self, admission: Admission) -> bool {
        self.fullest_lane() >= admission.below
            || self.shared.queued_bytes.load(Ordering::Relaxed) >= admission.below_bytes
    }

    /// Records in the fullest lane of the queue now, from the senders' side (no upgrade of
    /// weak senders). A request's record may go to any lane (by its account, known only at
    /// the end), so it waits while any lane is short of room.
    pub(super) fn fullest_lane(&self) -> usize {
        self.lanes
            .iter()
            .map(|lane| lane.max_capacity() - lane.capacity())
            .max()
            .unwrap_or(0)
    }

    /// Waits until the queue is not [crowded](Self::crowded), the pipeline closes, or
    /// `admission.max_wait` has passed.
    pub(super) async fn room(self, admission: Admission) {
        let shared = &self.shared;
        Counters::add(&shared.counters.waited, 1);
        let deadline = tokio::time::Instant::now() + admission.max_wait;
        loop {
            let notified = shared.room.notified();
            tokio::pin!(notified);
            // Registered before the check, so a wake-up between the two is not missed.
            notified.as_mut().enable();
            if !self.crowded(admission) || shared.closing.load(Ordering::Acquire) {
                return;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                Counters::add(&shared.counters.waits_timed_out, 1);
                return;
            }
        }
    }

    /// Submits a record and waits until it is committed to the database (strict mode).
    ///
    /// Many waiting records share a batch, and so a transaction (group commit).
    ///
    /// # Errors
    ///
    /// When the record was not committed: see [`NotCommitted`].
    pub async fn commit(&self, record: AuditRecord) -> std::result::Result<(), NotCommitted> {
        let (tx, rx) = oneshot::channel();
        let envelope = Envelope::new(record, Some(tx));
        if !self.enqueue(envelope) {
            return Err(NotCommitted::Rejected);
        }
        rx.await.unwrap_or(Err(NotCommitted::Dropped))
    }

    /// Counts a record lost before it reached the pipeline (a fleet's poison message), so
    /// that a gap record in its account's log reports it once storage works.
    #[cfg(feature = "nats")]
    pub(crate) fn note_lost(&self, account: Option<&str>, time_ms: i64) {
        self.shared.drop_record(account, time_ms);
    }

    /// Whether the database is taking records now (not degraded).
    pub fn is_available(&self) -> bool {
        !self.shared.degraded.load(Ordering::Acquire)
            && !self.shared.closing.load(Ordering::Acquire)
    }

    /// The counters now.
    pub fn metrics(&self) -> PipelineMetrics {
        let (depth, bytes, spool) = self.shared.levels();
        self.shared.counters.snapshot(depth, bytes, spool)
    }

    /// Adds an export or alert job's counters to [`metrics`](Self::metrics) (and so to the
    /// Prometheus text): its delivered and failed counts and how far behind it is.
    pub fn report_export(&self, status: &crate::export::ExportStatus) {
        self.shared
            .counters
            .exports
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(status.clone());
    }

    /// Stops accepting records, writes (or spools) everything accepted, and waits until the
    /// pipeline's [`run`](super::Pipeline::run) has finished. Records submitted afterwards are
    /// dropped and counted.
    pub async fn shutdown(&self) {
        let finished = self.shared.done.notified();
        self.shared.closing.store(true, Ordering::Release);
        self.shared.room.notify_waiters();
        for lane in self.lanes.iter().chain(self.overflow.iter()) {
            // Waits behind what is queued; a lane already gone has nothing left to flush.
            let _ = lane.send(Message::Shutdown).await;
        }
        if !self.shared.finished.load(Ordering::Acquire) {
            finished.await;
        }
    }
}

/// Takes `n` bytes of a byte bound `max` that `held` counts: refused (nothing taken) when
/// they do not fit, unless nothing is held (a record larger than the whole bound still goes
/// through, alone).
fn reserve(held: &AtomicU64, max: u64, n: u64) -> bool {
    let before = held.fetch_add(n, Ordering::Relaxed);
    if before == 0 || before.saturating_add(n) <= max {
        return true;
    }
    held.fetch_sub(n, Ordering::Relaxed);
    false
}

impl AuditSink for IngestSink {
    fn submit_and_commit(&self, record: AuditRecord) -> audit_layer::Commit {
        let sink = self.clone();
        Box::pin(async move { sink.commit(record).await })
    }

    fn is_available(&self) -> bool {
        IngestSink::is_available(self)
    }

    fn backpressure(&self) -> Option<audit_layer::Backpressure> {
        let admission = self.shared.backpressure?;
        if !self.crowded(admission) {
            return None;
        }
        Some(Box::pin(self.clone().room(admission)))
    }

    fn submit(&self, record: AuditRecord) {
        self.enqueue(Envelope::new(record, None));
    }
}
