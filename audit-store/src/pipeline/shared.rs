//! What the sink and the pipeline's tasks share: counters, the degraded and closing states, the
//! drops waiting for a gap record, and backpressure's admission rule.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use audit_layer::record::AuditRecord;
use tokio::sync::{Notify, mpsc};

use super::gaps::{GapSpan, Gaps};
use super::metrics::Counters;
use super::queue::Message;

pub(super) struct Shared {
    pub(super) counters: Counters,
    /// The database is failing: writes go to the spool, strict requests are refused.
    pub(super) degraded: AtomicBool,
    /// Records overflowed to the spool: replay them once the queue has room.
    pub(super) spilled: AtomicBool,
    /// Records accepted and not yet stored, spooled or dropped (what a crash would lose).
    pub(super) in_memory: std::sync::atomic::AtomicU64,
    pub(super) closing: AtomicBool,
    pub(super) finished: AtomicBool,
    pub(super) done: Notify,
    pub(super) gaps: Mutex<Gaps>,
    pub(super) spool_bytes: std::sync::atomic::AtomicU64,
    /// Bytes of the records in the queue (their size hints), and the most it holds.
    pub(super) queued_bytes: std::sync::atomic::AtomicU64,
    pub(super) queue_bytes_max: u64,
    /// Bytes of the records in the overflow buffer, and the most it holds.
    pub(super) overflow_bytes: std::sync::atomic::AtomicU64,
    pub(super) overflow_bytes_max: u64,
    pub(super) per_lane: usize,
    /// The queue's lanes, to measure its depth (weak: the pipeline ends when every sink is
    /// gone).
    pub(super) lanes: Vec<mpsc::WeakSender<Message>>,
    /// Wakes requests held by backpressure: a writer took a batch, or the pipeline closes.
    pub(super) room: Notify,
    pub(super) backpressure: Option<Admission>,
    /// Wakes the checkpoint task: `checkpoint_records` records were stored since its last
    /// round.
    pub(super) checkpoint_due: Notify,
    /// Records stored between rounds of checkpoints (see
    /// [`PipelineBuilder::checkpoint_after`](super::PipelineBuilder::checkpoint_after)).
    pub(super) checkpoint_records: u64,
    /// `counters.stored` when the last round of checkpoints began.
    pub(super) stored_at_checkpoint: std::sync::atomic::AtomicU64,
}

/// When requests wait for the queue (see [`PipelineBuilder::backpressure`]).
#[derive(Clone, Copy, Debug)]
pub(super) struct Admission {
    /// Requests go on while every lane holds fewer records than this,
    pub(super) below: usize,
    /// and the queue fewer bytes than this.
    pub(super) below_bytes: u64,
    pub(super) max_wait: Duration,
}

impl Shared {
    /// Records waiting in the queue now.
    /// What the pipeline holds now: records in the queue, bytes in memory (the queue and the
    /// overflow buffer), bytes in the spool.
    pub(super) fn levels(&self) -> (u64, u64, u64) {
        (
            self.queue_depth() as u64,
            self.queued_bytes.load(Ordering::Relaxed) + self.overflow_bytes.load(Ordering::Relaxed),
            self.spool_bytes.load(Ordering::Relaxed),
        )
    }

    /// Sets the facade's gauges to the [`levels`](Self::levels) now.
    pub(super) fn export_levels(&self) {
        let (depth, bytes, spool) = self.levels();
        self.counters.levels(depth, bytes, spool);
    }

    pub(super) fn queue_depth(&self) -> usize {
        self.lanes
            .iter()
            .filter_map(mpsc::WeakSender::upgrade)
            .map(|l| self.per_lane.saturating_sub(l.capacity()))
            .sum()
    }

    /// How many records the queue holds when full.
    pub(super) fn queue_capacity(&self) -> usize {
        self.per_lane * self.lanes.len()
    }

    /// Notes that a round of checkpoints begins: the record count starts over.
    pub(super) fn checkpointed(&self) {
        self.stored_at_checkpoint
            .store(self.counters.stored.get(), Ordering::Relaxed);
    }

    /// Counts `n` records stored; wakes the checkpoint task once enough were since its last
    /// round.
    pub(super) fn stored(&self, n: u64) {
        let stored = Counters::add(&self.counters.stored, n) + n;
        let since = stored.saturating_sub(self.stored_at_checkpoint.load(Ordering::Relaxed));
        if n > 0 && since >= self.checkpoint_records {
            self.checkpoint_due.notify_one();
        }
    }

    pub(super) fn drop_record(&self, account: Option<&str>, time_ms: i64) {
        Counters::add(&self.counters.dropped, 1);
        self.gaps
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .note(account, time_ms);
    }

    /// [`drop_record`](Self::drop_record) for a span of one account's records.
    pub(super) fn drop_span(&self, account: Option<String>, span: GapSpan) {
        Counters::add(&self.counters.dropped, span.lost);
        self.gaps
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .note_span(account, &span);
    }
}

/// What a gap record needs of a record that may yet be dropped: its account and time.
pub(super) struct Lost {
    pub(super) account: Option<String>,
    pub(super) time_ms: i64,
}

impl Lost {
    pub(super) fn of(record: &AuditRecord) -> Self {
        Self {
            account: record.account.as_ref().map(|a| a.id.clone()),
            time_ms: record.action.time.unix_millis(),
        }
    }

    pub(super) fn drop(&self, shared: &Shared) {
        shared.drop_record(self.account.as_deref(), self.time_ms);
    }
}
