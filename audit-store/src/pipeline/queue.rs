//! What travels on the queue between the sink and the writers.

use audit_layer::NotCommitted;
use audit_layer::record::AuditRecord;
use tokio::sync::oneshot;

/// One record on its way, with whoever waits for its commit.
pub(super) struct Envelope {
    pub(super) record: AuditRecord,
    pub(super) committed: Option<oneshot::Sender<Result<(), NotCommitted>>>,
}

// Records travel unboxed: a box per record would be an allocation on the request path.
#[allow(clippy::large_enum_variant)]
pub(super) enum Message {
    Record(Envelope),
    Shutdown,
}
