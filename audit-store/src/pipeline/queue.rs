//! What travels on the queue between the sink and the writers, and how much of it makes a
//! batch.

use audit_layer::NotCommitted;
use audit_layer::record::AuditRecord;
use tokio::sync::oneshot;

/// One record on its way, with whoever waits for its commit.
pub(super) struct Envelope {
    pub(super) record: AuditRecord,
    pub(super) committed: Option<oneshot::Sender<Result<(), NotCommitted>>>,
    /// The record's size as the queue counts it ([`AuditRecord::size_hint`]).
    pub(super) bytes: u64,
}

impl Envelope {
    pub(super) fn new(
        record: AuditRecord,
        committed: Option<oneshot::Sender<Result<(), NotCommitted>>>,
    ) -> Self {
        let bytes = record.size_hint() as u64;
        Self {
            record,
            committed,
            bytes,
        }
    }
}

/// The most records of `batch`, from its start, that hold at most `max_records` records and
/// `max_bytes` bytes together (at least one, whatever its size).
pub(super) fn batch_end(batch: &[Envelope], max_records: usize, max_bytes: u64) -> usize {
    let mut bytes = 0u64;
    for (i, e) in batch.iter().enumerate().take(max_records) {
        bytes = bytes.saturating_add(e.bytes);
        if i > 0 && bytes > max_bytes {
            return i;
        }
    }
    batch.len().min(max_records)
}

// Records travel unboxed: a box per record would be an allocation on the request path.
#[allow(clippy::large_enum_variant)]
pub(super) enum Message {
    Record(Envelope),
    Shutdown,
}
