//! What a statistics read of one account's log asks for, and what it gets back: records per
//! time bucket split by result, and the most frequent actors, actions and products.

use std::time::Duration;

use super::ColumnFilter;

/// One account's records in `[since_ms, before_ms)` matching `filters`, counted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StatsQuery {
    /// The account.
    pub account_id: String,
    /// Records at or after this time (ms since the epoch).
    pub since_ms: i64,
    /// Records before this time.
    pub before_ms: i64,
    /// Filters, AND-ed (as in [`RecordQuery`](super::RecordQuery)).
    pub filters: Vec<ColumnFilter>,
    /// Where the buckets start: a record at `t` counts in bucket `(t - origin_ms) / bucket_ms`.
    pub origin_ms: i64,
    /// The width of a bucket, ms (at least 1).
    pub bucket_ms: i64,
    /// How many actors, actions and products to return, the most frequent first.
    pub top: u32,
    /// How long the database may take to answer (see
    /// [`RecordQuery::time_limit`](super::RecordQuery::time_limit)). `None`: no limit.
    pub time_limit: Option<Duration>,
}

impl StatsQuery {
    /// Counts of `account_id`'s records in `[since_ms, before_ms)` per `bucket_ms` from
    /// `since_ms`, the top 10 of each kind, without filters or time limit.
    ///
    /// ```
    /// use audit_store::model::StatsQuery;
    ///
    /// let query = StatsQuery::new("acc-1", 0, 86_400_000, 3_600_000);
    /// assert_eq!((query.origin_ms, query.top), (0, 10));
    /// ```
    pub fn new(
        account_id: impl Into<String>,
        since_ms: i64,
        before_ms: i64,
        bucket_ms: i64,
    ) -> Self {
        Self {
            account_id: account_id.into(),
            since_ms,
            before_ms,
            filters: Vec::new(),
            origin_ms: since_ms,
            bucket_ms,
            top: 10,
            time_limit: None,
        }
    }
}

/// What [`AuditStore::stats`](crate::store::AuditStore::stats) returns. Buckets without
/// records are absent.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// `(bucket, action_result, records)`, by bucket then result.
    pub series: Vec<(i64, String, u64)>,
    /// `(actor_email, records)`, the most first (`None`: records without an email).
    pub actors: Vec<(Option<String>, u64)>,
    /// `((action_type, resource_type), records)`, the most first.
    pub actions: Vec<((String, Option<String>), u64)>,
    /// `(resource_product, records)`, the most first.
    pub products: Vec<(Option<String>, u64)>,
}
