//! The storage backends: one store type per database, behind a cargo feature, with the same
//! logical schema through sqlx migrations.
//!
//! Two traits describe a store. [`AuditStore`] writes and reads records: what the ingest
//! pipeline and the query API need. [`ChainedStore`] adds what tamper evidence needs: the
//! chains' links and heads, and the signed checkpoints. Both SQL stores implement both, whether
//! or not they were given chain keys (reading a chain needs no keys). Neither trait has
//! methods that fail by default: a type that wraps a store forwards every method, or does not
//! compile.
//!
//! The statements both backends share are written once ([`sql`] builds their text from the
//! [column list](crate::model::COLUMNS); `shared` runs them on either database); a backend's
//! own module holds only what its database does differently (how a batch goes in, how a whole
//! store is scanned, SQLite's WAL checkpoints, PostgreSQL's partitions).

#[cfg(any(feature = "sqlite", feature = "postgres"))]
mod aggregate;
#[cfg(any(feature = "sqlite", feature = "postgres"))]
mod chained;
#[cfg(any(feature = "sqlite", feature = "postgres"))]
mod decode;
pub mod intercept;
#[cfg(any(feature = "sqlite", feature = "postgres"))]
mod migrations;
mod names;
#[cfg(any(feature = "sqlite", feature = "postgres"))]
mod positions;
#[cfg(feature = "postgres")]
#[cfg_attr(docsrs, doc(cfg(feature = "postgres")))]
pub mod postgres;
#[cfg(any(feature = "sqlite", feature = "postgres"))]
mod scan;
#[cfg(any(feature = "sqlite", feature = "postgres"))]
mod shared;
#[doc(hidden)]
pub mod sql;
#[cfg(feature = "sqlite")]
#[cfg_attr(docsrs, doc(cfg(feature = "sqlite")))]
pub mod sqlite;

use std::future::Future;

use futures_util::stream::BoxStream;
use uuid::Uuid;

use crate::chain::ChainKeys;
use crate::model::{
    ChainHead, ChainRow, ChainScope, Checkpoint, CheckpointKind, Direction, ExportPosition, Page,
    RecordQuery, Retention, ScannedLink, Stats, StatsQuery, StoredRecord, TimedLink,
};
use crate::{Result, StoreError};
pub use names::{DEFAULT_PREFIX, TableNames};

/// What [`ChainedStore::chain_scan`] returns: chunks of links as they are read; an error is
/// the last item.
pub type LinkScan = BoxStream<'static, Result<Vec<ScannedLink>>>;

/// A database that holds audit records.
///
/// Writes are idempotent: a record already stored (same `id` and time, as in a retried batch)
/// is skipped, so a retry never duplicates a record.
pub trait AuditStore: Clone + Send + Sync + 'static {
    /// Creates or updates the schema. Safe to run on every start, from several instances.
    fn migrate(&self) -> impl Future<Output = Result<()>> + Send;

    /// Writes `records` in one transaction and returns how many were new.
    fn insert(&self, records: &[StoredRecord]) -> impl Future<Output = Result<u64>> + Send;

    /// Whether the database answers.
    fn ping(&self) -> impl Future<Output = Result<()>> + Send;

    /// Deletes records whose time is before `cutoff_ms`, in bounded steps, and returns how
    /// many were deleted. Nothing at or after the cutoff is touched. A chained store deletes
    /// only the prefix of each chain that is older than the cutoff, after verifying it and
    /// signing an anchor where the chain now starts (see [`ChainedStore::retain`]).
    ///
    /// # Errors
    ///
    /// [`StoreError::Tampered`] when a chain's prefix does not verify (the other chains are
    /// pruned; nothing of that one is deleted); a database error.
    fn delete_before(&self, cutoff_ms: i64) -> impl Future<Output = Result<u64>> + Send;

    /// The JSON of one record of one account, exactly as written.
    fn get(
        &self,
        account_id: &str,
        id: Uuid,
    ) -> impl Future<Output = Result<Option<String>>> + Send;

    /// How many records are stored (all accounts). For tests and operators; it scans.
    fn count(&self) -> impl Future<Output = Result<u64>> + Send;

    /// One page of one account's records matching `query`, in `(time, id)` order: up to
    /// `query.limit` records, fewer when `query.max_bytes` ends it early (then
    /// [`Page::cut`] says so), read as they come (never more than the page in memory) and
    /// stopped at `query.time_limit` ([`StoreError::StatementTimeout`]).
    fn page(&self, query: &RecordQuery) -> impl Future<Output = Result<Page>> + Send;

    /// Counts of one account's records matching `query`: per time bucket and result, and the
    /// most frequent actors, actions and products, read in one statement stopped at
    /// `query.time_limit` ([`StoreError::StatementTimeout`]).
    fn stats(&self, query: &StatsQuery) -> impl Future<Output = Result<Stats>> + Send;
}

/// A store that keeps every account's log as a hash chain with signed checkpoints (see
/// [`chain`](crate::chain)).
///
/// The reading methods work on any database the store's migrations created, with or without
/// chain keys: a verifier holding only the public key reads chains through them.
pub trait ChainedStore: AuditStore {
    /// The keys this store chains the records it writes with; `None` when it writes
    /// unchained records.
    fn chain_keys(&self) -> Option<&ChainKeys>;

    /// The newest link of every chain.
    fn chain_heads(&self) -> impl Future<Output = Result<Vec<ChainHead>>> + Send;

    /// The chains that hold records: their account ids (`""` for records without one), read
    /// through the account index, one step per account. Unlike [`chain_heads`](Self::chain_heads)
    /// it names a chain whose head row was deleted.
    fn chains(&self) -> impl Future<Output = Result<Vec<String>>> + Send;

    /// The newest link of one chain.
    fn chain_head(&self, chain: &str) -> impl Future<Output = Result<Option<ChainHead>>> + Send;

    /// Up to `limit` links of `chain` after position `after` (`(seq, id)`), in that order.
    ///
    /// No index is keyed by sequence number (it cost too much at ingest): each call reads
    /// every record of the chain through the account index and sorts them. To walk a chain,
    /// use [`chain_scan`](Self::chain_scan), which reads them once.
    fn chain_rows(
        &self,
        chain: &str,
        after: (i64, Uuid),
        limit: u32,
    ) -> impl Future<Output = Result<Vec<ChainRow>>> + Send;

    /// The lowest and highest sequence numbers of `chain`'s records whose time is in
    /// `[since_ms, before_ms)`.
    fn chain_span(
        &self,
        chain: &str,
        since_ms: i64,
        before_ms: i64,
    ) -> impl Future<Output = Result<Option<(i64, i64)>>> + Send;

    /// Up to `limit` links of `chain` whose time is in `[since_ms, before_ms)`, in the
    /// account's time order (`direction`), strictly after the `(time, id)` position `after`:
    /// what verifying a span reads, through the account index, a page at a time from the
    /// span outwards until it holds the records chained around the span, instead of every
    /// record of the account.
    fn chain_page(
        &self,
        chain: &str,
        span: (i64, i64),
        after: Option<(i64, Uuid)>,
        direction: Direction,
        limit: u32,
    ) -> impl Future<Output = Result<Vec<TimedLink>>> + Send;

    /// The links of `scope`, read in one statement (one consistent snapshot of the
    /// database) and sent in chunks as they are read, while the caller works on the previous
    /// ones. Not in sequence order: [`ChainScope::All`] comes in table order (one sequential
    /// pass, every chain interleaved), [`ChainScope::Chain`] in the account's time order
    /// through the account index; the verifier puts rows back into sequence order.
    ///
    /// Call it within a Tokio runtime: the read runs on a task of its own, holding one of the
    /// pool's connections until it ends. Dropping the stream stops it.
    fn chain_scan(&self, scope: ChainScope) -> LinkScan;

    /// How many of `chain`'s records with a time in `[since_ms, before_ms)` carry no link
    /// though they are no older than the chain's oldest linked record, or were committed
    /// after it (`committed_ms`: a forged record backdated below the chain's start): rows
    /// written into the table past the chain (a chained store links every record it
    /// writes), which verification reports as
    /// [`BreakKind::Unlinked`](crate::verify::BreakKind::Unlinked).
    fn unlinked(
        &self,
        chain: &str,
        since_ms: i64,
        before_ms: i64,
    ) -> impl Future<Output = Result<u64>> + Send;

    /// The chains with any record that carries no link (of any time), read in one pass over
    /// the table: where [`unlinked`](Self::unlinked) is worth asking.
    fn chains_with_unlinked(&self) -> impl Future<Output = Result<Vec<String>>> + Send;

    /// Every checkpoint and anchor stored, of every chain.
    fn all_checkpoints(&self) -> impl Future<Output = Result<Vec<Checkpoint>>> + Send;

    /// Every checkpoint and anchor stored for `chain`.
    fn checkpoints(&self, chain: &str) -> impl Future<Output = Result<Vec<Checkpoint>>> + Send;

    /// Retention: deletes records whose time is before `cutoff_ms`, as
    /// [`AuditStore::delete_before`] does, and says what it did, chain by chain.
    ///
    /// A chained store verifies the prefix of each chain it is about to prune before it
    /// signs the anchor that will vouch for where the chain starts: every record there once
    /// and in sequence, its hash linking it to the one before, its seal this store's, its
    /// time never further back than a spool replay explains (30 days) behind a record
    /// chained before it, and the first record kept linking to the last one pruned. The
    /// prefix is chosen by the records' times, which whoever edits the database can change;
    /// the check makes such an edit stop retention instead of being pruned away under a
    /// fresh anchor. A chain that fails is [refused](Retention::refused): nothing of it is
    /// deleted or signed, and the other chains are pruned. The anchors signed are returned,
    /// to be kept outside the database as well (the pipeline hands them to its
    /// [`CheckpointSink`](crate::chain::CheckpointSink)).
    ///
    /// The default, for types that wrap a store, runs [`AuditStore::delete_before`] and
    /// finds the anchors it signed among [`all_checkpoints`](Self::all_checkpoints).
    ///
    /// # Errors
    ///
    /// A database error; a refused chain is not an error here.
    fn retain(&self, cutoff_ms: i64) -> impl Future<Output = Result<Retention>> + Send {
        async move {
            let started = crate::time::now_ms();
            let deleted = self.delete_before(cutoff_ms).await?;
            let anchors = self
                .all_checkpoints()
                .await?
                .into_iter()
                .filter(|c| c.kind == CheckpointKind::Anchor && c.time_ms >= started)
                .collect();
            Ok(Retention {
                deleted,
                anchors,
                refused: Vec::new(),
            })
        }
    }

    /// Stores checkpoints (already signed).
    fn write_checkpoints(
        &self,
        checkpoints: &[Checkpoint],
    ) -> impl Future<Output = Result<()>> + Send;

    /// Signs and stores a checkpoint for every chain at `now_ms` (also chains that did not
    /// grow: a fresh checkpoint says nothing was deleted since), and returns them.
    ///
    /// # Errors
    ///
    /// [`StoreError::NotChained`] when the store has no chain keys; a database error.
    fn checkpoint(&self, now_ms: i64) -> impl Future<Output = Result<Vec<Checkpoint>>> + Send {
        async move {
            let keys = self.chain_keys().ok_or(StoreError::NotChained)?;
            let checkpoints: Vec<Checkpoint> = self
                .chain_heads()
                .await?
                .into_iter()
                .map(|h| Checkpoint::of_head(keys, h, now_ms))
                .collect();
            self.write_checkpoints(&checkpoints).await?;
            Ok(checkpoints)
        }
    }
}

/// A store that keeps where each push export job stands in each account's log (see
/// [`export`](crate::export)), in a table of its own beside the records.
pub trait ExportPositions: ChainedStore {
    /// Every position stored for `job`.
    fn export_positions(
        &self,
        job: &str,
    ) -> impl Future<Output = Result<Vec<ExportPosition>>> + Send;

    /// Stores `position` for `job`, replacing the account's previous one.
    fn save_export_position(
        &self,
        job: &str,
        position: &ExportPosition,
    ) -> impl Future<Output = Result<()>> + Send;

    /// Now, in ms since the epoch, on the clock that stamps `committed_ms`: the database
    /// server's for PostgreSQL (`statement_timestamp()`, whatever the writing app's clock),
    /// the writing process's for SQLite (one machine). An export job's settle time is
    /// measured on it.
    fn clock_ms(&self) -> impl Future<Output = Result<i64>> + Send;

    /// The records of `query`, in commit order ([`CommitPosition`](crate::model::CommitPosition)):
    /// what an export job reads, so that a record committed late is read after its commit,
    /// not skipped.
    fn commit_page(
        &self,
        query: &crate::model::CommitQuery,
    ) -> impl Future<Output = Result<Vec<crate::model::CommittedRow>>> + Send;
}
