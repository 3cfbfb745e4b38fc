//! Where a push export job stands in one account's log.

use uuid::Uuid;

use super::{ColumnFilter, PageRow};

/// A record's place in an account's log: `(action.time in ms, id)`, the order of the query
/// API's pages.
pub type LogPosition = (i64, Uuid);

/// A record's place in the order its account's records were committed: when its write
/// began (`committed_ms`, stamped by the database at insert), then `(action.time, id)` within
/// one write. The order export reads in: a record committed late (replayed from the spool an
/// hour after its action) comes after everything committed before it, never behind a job's
/// place. Records stored before the column existed all have `committed_ms` 0: they come
/// first, in (time, id) order.
///
/// ```
/// use audit_store::model::CommitPosition;
///
/// let early = CommitPosition { committed_ms: 1_000, time_ms: 900, id: uuid::Uuid::nil() };
/// let late = CommitPosition { committed_ms: 2_000, time_ms: 0, id: uuid::Uuid::nil() };
/// assert!(early < late, "commit order first, whatever the action's time");
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct CommitPosition {
    /// When the record's write began, ms since the epoch (0: stored before the column existed).
    pub committed_ms: i64,
    /// `action.time`, ms.
    pub time_ms: i64,
    /// `id`.
    pub id: Uuid,
}

impl CommitPosition {
    /// The record's `(time, id)`.
    pub fn log_position(&self) -> LogPosition {
        (self.time_ms, self.id)
    }
}

/// How far an export job has delivered one account's records, in commit order
/// ([`CommitPosition`]), kept in the database
/// ([`ExportPositions`](crate::store::ExportPositions)).
///
/// ```
/// use audit_store::model::ExportPosition;
///
/// let fresh = ExportPosition::new("acc-1");
/// assert!(fresh.delivered.is_none() && fresh.pending.is_none());
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExportPosition {
    /// The account.
    pub account_id: String,
    /// The last record delivered; `None` before the first batch.
    pub delivered: Option<CommitPosition>,
    /// The last record of the batch being delivered, written before it is sent: after a
    /// restart the same batch is read again up to it, and sent again under the same
    /// idempotency key. `None` when no batch is in flight.
    pub pending: Option<CommitPosition>,
}

impl ExportPosition {
    /// Nothing delivered yet in `account_id`'s log.
    pub fn new(account_id: impl Into<String>) -> Self {
        Self {
            account_id: account_id.into(),
            delivered: None,
            pending: None,
        }
    }
}

/// A read of one account's records in commit order, for an export job
/// ([`ExportPositions::commit_page`](crate::store::ExportPositions::commit_page)).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CommitQuery {
    /// The account.
    pub account_id: String,
    /// Only records whose action time is at or after this (ms since the epoch).
    pub since_ms: i64,
    /// Filters, AND-ed (the query API's).
    pub filters: Vec<ColumnFilter>,
    /// Records strictly after this position; `None`: from the first.
    pub after: Option<CommitPosition>,
    /// Records at or before this position.
    pub through: CommitPosition,
    /// The most records to return.
    pub limit: u32,
    /// The most bytes of records' JSON: the page ends before the record that would take it
    /// past this (the first record always comes). `None`: no byte limit.
    pub max_bytes: Option<usize>,
}

/// A record read in commit order: its place and the record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CommittedRow {
    /// Its place in commit order.
    pub at: CommitPosition,
    /// The record (its time, id and JSON).
    pub row: PageRow,
}
