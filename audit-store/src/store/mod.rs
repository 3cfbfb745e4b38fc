//! The storage backends: one store type per database, behind a cargo feature, with the same
//! logical schema through sqlx migrations.

#[cfg(feature = "postgres")]
pub mod postgres;
#[cfg(feature = "sqlite")]
pub mod sqlite;

use std::future::Future;

use uuid::Uuid;

use crate::Result;
use crate::row::StoredRecord;

/// A database that holds audit records.
///
/// Writes are idempotent: a record whose `id` is already stored is skipped, so a retried batch
/// never duplicates a record.
pub trait AuditStore: Clone + Send + Sync + 'static {
    /// Creates or updates the schema. Safe to run on every start, from several instances.
    fn migrate(&self) -> impl Future<Output = Result<()>> + Send;

    /// Writes `records` in one transaction and returns how many were new.
    fn insert(&self, records: &[StoredRecord]) -> impl Future<Output = Result<u64>> + Send;

    /// Whether the database answers.
    fn ping(&self) -> impl Future<Output = Result<()>> + Send;

    /// Deletes records whose time is before `cutoff_ms`, in bounded steps, and returns how
    /// many were deleted. Nothing at or after the cutoff is touched.
    fn delete_before(&self, cutoff_ms: i64) -> impl Future<Output = Result<u64>> + Send;

    /// The JSON of one record of one account, exactly as written.
    fn get(
        &self,
        account_id: &str,
        id: Uuid,
    ) -> impl Future<Output = Result<Option<String>>> + Send;

    /// How many records are stored (all accounts). For tests and operators; it scans.
    fn count(&self) -> impl Future<Output = Result<u64>> + Send;
}
