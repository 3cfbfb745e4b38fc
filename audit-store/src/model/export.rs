//! Where a push export job stands in one account's log.

use uuid::Uuid;

/// A record's place in an account's log: `(action.time in ms, id)`, the order export reads in.
pub type LogPosition = (i64, Uuid);

/// How far an export job has delivered one account's records, kept in the database
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
    pub delivered: Option<LogPosition>,
    /// The last record of the batch being delivered, written before it is sent: after a
    /// restart the same batch is read again up to it, and sent again under the same
    /// idempotency key. `None` when no batch is in flight.
    pub pending: Option<LogPosition>,
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
