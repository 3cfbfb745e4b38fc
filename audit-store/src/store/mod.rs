//! The storage backends: one store type per database, behind a cargo feature, with the same
//! logical schema through sqlx migrations.

#[cfg(feature = "postgres")]
mod copy;
#[cfg(feature = "postgres")]
pub mod postgres;
mod sql;
#[cfg(feature = "sqlite")]
pub mod sqlite;

use std::future::Future;

use futures_util::stream::BoxStream;
use uuid::Uuid;

use crate::chain::{ChainHead, ChainKeys, ChainRow, ChainScope, Checkpoint, ScannedLink};
use crate::row::StoredRecord;
use crate::{Result, StoreError};

fn unchained<T>() -> Result<T> {
    Err(StoreError::Config(
        "this store does not keep hash chains (give it chain keys)".into(),
    ))
}

/// Links per chunk of [`AuditStore::chain_scan`].
pub(crate) const SCAN_CHUNK: usize = 2048;

/// Runs `read` on a task of its own, which sends chunks of links into a channel, and returns
/// the channel as a stream: reading and decoding (the store's side) overlap with verifying
/// (the caller's). An error of `read` is the stream's last item.
pub(crate) fn spawn_scan<F, Fut>(read: F) -> BoxStream<'static, Result<Vec<ScannedLink>>>
where
    F: FnOnce(tokio::sync::mpsc::Sender<Result<Vec<ScannedLink>>>) -> Fut,
    Fut: Future<Output = Result<()>> + Send + 'static,
{
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    let fut = read(tx.clone());
    tokio::spawn(async move {
        if let Err(e) = fut.await {
            // The reader may be gone already; then nobody is left to tell.
            let _ = tx.send(Err(e)).await;
        }
    });
    Box::pin(futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    }))
}

/// The SQL condition selecting the rows of `chain` through the account indexes: the chain
/// named `""` holds the records without an account (and any whose account id is empty).
/// `param` is the placeholder for `chain`; the flag says whether `chain` must be bound to it.
pub(crate) fn chain_condition(chain: &str, param: &str) -> (String, bool) {
    if chain.is_empty() {
        ("(account_id IS NULL OR account_id = '')".to_owned(), false)
    } else {
        (format!("account_id = {param}"), true)
    }
}

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

    /// One page of one account's records matching `query`, in `(time, id)` order.
    fn page(&self, query: &RecordQuery) -> impl Future<Output = Result<Vec<PageRow>>> + Send;

    // Tamper evidence (see [`chain`](crate::chain)). A store that does not keep chains
    // answers these with an error; wrappers around a store forward them.

    /// The keys this store chains records with; `None` when it does not chain them.
    fn chain_keys(&self) -> Option<&ChainKeys> {
        None
    }

    /// The newest link of every chain.
    fn chain_heads(&self) -> impl Future<Output = Result<Vec<ChainHead>>> + Send {
        async { unchained() }
    }

    /// The newest link of one chain.
    fn chain_head(&self, chain: &str) -> impl Future<Output = Result<Option<ChainHead>>> + Send {
        let _ = chain;
        async { unchained() }
    }

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
    ) -> impl Future<Output = Result<Vec<ChainRow>>> + Send {
        let _ = (chain, after, limit);
        async { unchained() }
    }

    /// The lowest and highest sequence numbers of `chain`'s records whose time is in
    /// `[since_ms, before_ms)`.
    fn chain_span(
        &self,
        chain: &str,
        since_ms: i64,
        before_ms: i64,
    ) -> impl Future<Output = Result<Option<(i64, i64)>>> + Send {
        let _ = (chain, since_ms, before_ms);
        async { unchained() }
    }

    /// The links of `scope`, read in one statement (one consistent snapshot of the
    /// database) and sent in chunks as they are read, while the caller works on the previous
    /// ones. Not in sequence order: [`ChainScope::All`] comes in table order (one sequential
    /// pass, every chain interleaved), [`ChainScope::Chain`] in the account's time order
    /// through the account index; the verifier puts rows back into sequence order.
    ///
    /// Call it within a Tokio runtime: the read runs on a task of its own, holding one of the
    /// pool's connections until it ends. Dropping the stream stops it.
    fn chain_scan(&self, scope: ChainScope) -> BoxStream<'static, Result<Vec<ScannedLink>>> {
        let _ = scope;
        Box::pin(futures_util::stream::once(async { unchained() }))
    }

    /// Every checkpoint and anchor stored, of every chain.
    fn all_checkpoints(&self) -> impl Future<Output = Result<Vec<Checkpoint>>> + Send {
        async { unchained() }
    }

    /// Every checkpoint and anchor stored for `chain`.
    fn checkpoints(&self, chain: &str) -> impl Future<Output = Result<Vec<Checkpoint>>> + Send {
        let _ = chain;
        async { unchained() }
    }

    /// Stores checkpoints (already signed).
    fn write_checkpoints(
        &self,
        checkpoints: &[Checkpoint],
    ) -> impl Future<Output = Result<()>> + Send {
        let _ = checkpoints;
        async { unchained() }
    }
}

/// A filterable column.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
#[allow(missing_docs)]
pub enum Column {
    Id,
    AccountName,
    ZoneId,
    ZoneName,
    ActionType,
    ActionResult,
    ActorEmail,
    ActorId,
    ActorIpAddress,
    ActorType,
    ActorContext,
    ActorTokenId,
    ActorTokenName,
    RawRayId,
    RawMethod,
    RawStatusCode,
    RawUri,
    ResourceId,
    ResourceProduct,
    ResourceType,
    ResourceScope,
}

impl Column {
    /// The column's SQL name (a fixed identifier, never user input).
    pub fn name(self) -> &'static str {
        match self {
            Self::Id => "id",
            Self::AccountName => "account_name",
            Self::ZoneId => "zone_id",
            Self::ZoneName => "zone_name",
            Self::ActionType => "action_type",
            Self::ActionResult => "action_result",
            Self::ActorEmail => "actor_email",
            Self::ActorId => "actor_id",
            Self::ActorIpAddress => "actor_ip_address",
            Self::ActorType => "actor_type",
            Self::ActorContext => "actor_context",
            Self::ActorTokenId => "actor_token_id",
            Self::ActorTokenName => "actor_token_name",
            Self::RawRayId => "raw_ray_id",
            Self::RawMethod => "raw_method",
            Self::RawStatusCode => "raw_status_code",
            Self::RawUri => "raw_uri",
            Self::ResourceId => "resource_id",
            Self::ResourceProduct => "resource_product",
            Self::ResourceType => "resource_type",
            Self::ResourceScope => "resource_scope",
        }
    }
}

/// A value to compare a column with; always bound, never spliced into SQL.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FilterValue {
    /// A text column's value.
    Text(String),
    /// An integer column's value.
    Int(i32),
    /// The id column's value.
    Uuid(Uuid),
}

impl FilterValue {
    /// A stable text form, for binding cursors to filters.
    pub(crate) fn canonical(&self) -> String {
        match self {
            Self::Text(t) => format!("t:{t}"),
            Self::Int(i) => format!("i:{i}"),
            Self::Uuid(u) => format!("u:{u}"),
        }
    }
}

/// `column IN (values)`, or with `negated`, `column IS NULL OR column NOT IN (values)`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ColumnFilter {
    /// The column.
    pub column: Column,
    /// Whether the filter excludes its values.
    pub negated: bool,
    /// The values (OR-ed).
    pub values: Vec<FilterValue>,
}

/// Newest first, or oldest first.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Direction {
    /// Newest first (the default).
    #[default]
    Desc,
    /// Oldest first.
    Asc,
}

impl Direction {
    /// `desc` or `asc`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Desc => "desc",
            Self::Asc => "asc",
        }
    }
}

/// One page of a keyset-paginated query over one account's records.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecordQuery {
    /// The account.
    pub account_id: String,
    /// Records at or after this time (ms since the epoch).
    pub since_ms: i64,
    /// Records before this time.
    pub before_ms: i64,
    /// Filters, AND-ed.
    pub filters: Vec<ColumnFilter>,
    /// The order.
    pub direction: Direction,
    /// Records strictly after this `(time, id)` position in `direction`.
    pub after: Option<(i64, Uuid)>,
    /// The most records to return.
    pub limit: u32,
}

/// A record of a page: its position and its JSON.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PageRow {
    /// `action.time`, ms.
    pub time_ms: i64,
    /// `id`.
    pub id: Uuid,
    /// The record's JSON, exactly as written.
    pub record: String,
}
