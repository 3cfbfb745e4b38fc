//! A store wrapped to watch or change what its writes, chain reads and commit clock do: what
//! a benchmark that times commits, a test that makes the database fail, one that counts what
//! verification reads, or one whose clock is skewed needs. Every other method is forwarded here, once,
//! so that a method added to [`AuditStore`] or [`ChainedStore`] is forwarded by every such
//! wrapper at the same time (neither trait has defaults that would hide a method a wrapper
//! forgot).

use std::future::Future;

use uuid::Uuid;

use super::{AuditStore, ChainedStore, ExportPositions, LinkScan};
use crate::Result;
use crate::chain::ChainKeys;
use crate::model::{
    ChainHead, ChainRow, ChainScope, Checkpoint, CommitQuery, CommittedRow, Direction,
    ExportPosition, Page, RecordQuery, Retention, Stats, StatsQuery, StoredRecord, TimedLink,
};

/// What an [`Intercepted`] store does instead of its inner store's writes, pings and reads of
/// chain links; each method defaults to the inner store's own.
///
/// ```
/// use std::sync::Arc;
/// use std::sync::atomic::{AtomicU64, Ordering};
///
/// use audit_store::model::StoredRecord;
/// use audit_store::store::AuditStore;
/// use audit_store::store::intercept::{Intercepted, Interceptor};
///
/// /// Counts the batches written.
/// #[derive(Clone, Default)]
/// struct Batches(Arc<AtomicU64>);
///
/// impl Interceptor for Batches {
///     async fn insert<S: AuditStore>(
///         &self,
///         inner: &S,
///         records: &[StoredRecord],
///     ) -> audit_store::Result<u64> {
///         let new = inner.insert(records).await?;
///         self.0.fetch_add(1, Ordering::Relaxed);
///         Ok(new)
///     }
/// }
///
/// # async fn wrap(store: impl AuditStore) {
/// let batches = Batches::default();
/// let store = Intercepted::new(store, batches.clone());
/// store.insert(&[]).await.unwrap();
/// assert_eq!(batches.0.load(Ordering::Relaxed), 1);
/// # }
/// ```
pub trait Interceptor: Clone + Send + Sync + 'static {
    /// Writes `records` through `inner`: see [`AuditStore::insert`].
    fn insert<S: AuditStore>(
        &self,
        inner: &S,
        records: &[StoredRecord],
    ) -> impl Future<Output = Result<u64>> + Send {
        inner.insert(records)
    }

    /// Whether `inner`'s database answers: see [`AuditStore::ping`].
    fn ping<S: AuditStore>(&self, inner: &S) -> impl Future<Output = Result<()>> + Send {
        inner.ping()
    }

    /// Links of a chain in chain order, read through `inner`: see [`ChainedStore::chain_rows`].
    fn chain_rows<S: ChainedStore>(
        &self,
        inner: &S,
        chain: &str,
        after: (i64, Uuid),
        limit: u32,
    ) -> impl Future<Output = Result<Vec<ChainRow>>> + Send {
        inner.chain_rows(chain, after, limit)
    }

    /// Links of a chain in time order, read through `inner`: see [`ChainedStore::chain_page`].
    fn chain_page<S: ChainedStore>(
        &self,
        inner: &S,
        chain: &str,
        span: (i64, i64),
        after: Option<(i64, Uuid)>,
        direction: Direction,
        limit: u32,
    ) -> impl Future<Output = Result<Vec<TimedLink>>> + Send {
        inner.chain_page(chain, span, after, direction, limit)
    }

    /// Every link of `scope`, read through `inner`: see [`ChainedStore::chain_scan`].
    fn chain_scan<S: ChainedStore>(&self, inner: &S, scope: ChainScope) -> LinkScan {
        inner.chain_scan(scope)
    }

    /// The clock that stamps `inner`'s commits: see [`ExportPositions::clock_ms`].
    fn clock_ms<S: ExportPositions>(&self, inner: &S) -> impl Future<Output = Result<i64>> + Send {
        inner.clock_ms()
    }
}

/// A store whose writes, pings, reads of chain links and commit clock go through an
/// [`Interceptor`]; everything else is the inner store's, unchanged.
#[derive(Clone, Debug)]
pub struct Intercepted<S, I> {
    store: S,
    interceptor: I,
}

impl<S, I> Intercepted<S, I> {
    /// `store`, its writes going through `interceptor`.
    pub fn new(store: S, interceptor: I) -> Self {
        Self { store, interceptor }
    }

    /// The store wrapped.
    pub fn store(&self) -> &S {
        &self.store
    }

    /// The interceptor.
    pub fn interceptor(&self) -> &I {
        &self.interceptor
    }
}

impl<S: AuditStore, I: Interceptor> AuditStore for Intercepted<S, I> {
    async fn migrate(&self) -> Result<()> {
        self.store.migrate().await
    }

    async fn insert(&self, records: &[StoredRecord]) -> Result<u64> {
        self.interceptor.insert(&self.store, records).await
    }

    async fn ping(&self) -> Result<()> {
        self.interceptor.ping(&self.store).await
    }

    async fn delete_before(&self, cutoff_ms: i64) -> Result<u64> {
        self.store.delete_before(cutoff_ms).await
    }

    async fn get(&self, account_id: &str, id: Uuid) -> Result<Option<String>> {
        self.store.get(account_id, id).await
    }

    async fn count(&self) -> Result<u64> {
        self.store.count().await
    }

    async fn page(&self, query: &RecordQuery) -> Result<Page> {
        self.store.page(query).await
    }

    async fn stats(&self, query: &StatsQuery) -> Result<Stats> {
        self.store.stats(query).await
    }
}

impl<S: ChainedStore, I: Interceptor> ChainedStore for Intercepted<S, I> {
    fn chain_keys(&self) -> Option<&ChainKeys> {
        self.store.chain_keys()
    }

    async fn chain_heads(&self) -> Result<Vec<ChainHead>> {
        self.store.chain_heads().await
    }

    async fn chains(&self) -> Result<Vec<String>> {
        self.store.chains().await
    }

    async fn chain_head(&self, chain: &str) -> Result<Option<ChainHead>> {
        self.store.chain_head(chain).await
    }

    async fn chain_rows(
        &self,
        chain: &str,
        after: (i64, Uuid),
        limit: u32,
    ) -> Result<Vec<ChainRow>> {
        self.interceptor
            .chain_rows(&self.store, chain, after, limit)
            .await
    }

    async fn chain_span(
        &self,
        chain: &str,
        since_ms: i64,
        before_ms: i64,
    ) -> Result<Option<(i64, i64)>> {
        self.store.chain_span(chain, since_ms, before_ms).await
    }

    async fn chain_page(
        &self,
        chain: &str,
        span: (i64, i64),
        after: Option<(i64, Uuid)>,
        direction: Direction,
        limit: u32,
    ) -> Result<Vec<TimedLink>> {
        self.interceptor
            .chain_page(&self.store, chain, span, after, direction, limit)
            .await
    }

    fn chain_scan(&self, scope: ChainScope) -> LinkScan {
        self.interceptor.chain_scan(&self.store, scope)
    }

    async fn unlinked(&self, chain: &str, since_ms: i64, before_ms: i64) -> Result<u64> {
        self.store.unlinked(chain, since_ms, before_ms).await
    }

    async fn chains_with_unlinked(&self) -> Result<Vec<String>> {
        self.store.chains_with_unlinked().await
    }

    async fn all_checkpoints(&self) -> Result<Vec<Checkpoint>> {
        self.store.all_checkpoints().await
    }

    async fn checkpoints(&self, chain: &str) -> Result<Vec<Checkpoint>> {
        self.store.checkpoints(chain).await
    }

    async fn retain(&self, cutoff_ms: i64) -> Result<Retention> {
        self.store.retain(cutoff_ms).await
    }

    async fn write_checkpoints(&self, checkpoints: &[Checkpoint]) -> Result<()> {
        self.store.write_checkpoints(checkpoints).await
    }

    async fn checkpoint(&self, now_ms: i64) -> Result<Vec<Checkpoint>> {
        self.store.checkpoint(now_ms).await
    }
}

impl<S: ExportPositions, I: Interceptor> ExportPositions for Intercepted<S, I> {
    async fn export_positions(&self, job: &str) -> Result<Vec<ExportPosition>> {
        self.store.export_positions(job).await
    }

    async fn save_export_position(&self, job: &str, position: &ExportPosition) -> Result<()> {
        self.store.save_export_position(job, position).await
    }

    async fn clock_ms(&self) -> Result<i64> {
        self.interceptor.clock_ms(&self.store).await
    }

    async fn commit_page(&self, query: &CommitQuery) -> Result<Vec<CommittedRow>> {
        self.store.commit_page(query).await
    }
}
