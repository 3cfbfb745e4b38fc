//! What a query of one account's log asks for, and what it gets back.

use std::time::Duration;

use uuid::Uuid;

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
    /// Every filterable column.
    pub const ALL: [Self; 21] = [
        Self::Id,
        Self::AccountName,
        Self::ZoneId,
        Self::ZoneName,
        Self::ActionType,
        Self::ActionResult,
        Self::ActorEmail,
        Self::ActorId,
        Self::ActorIpAddress,
        Self::ActorType,
        Self::ActorContext,
        Self::ActorTokenId,
        Self::ActorTokenName,
        Self::RawRayId,
        Self::RawMethod,
        Self::RawStatusCode,
        Self::RawUri,
        Self::ResourceId,
        Self::ResourceProduct,
        Self::ResourceType,
        Self::ResourceScope,
    ];

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
    /// The most bytes of records' JSON the page holds: it ends early, before the record that
    /// would take it past this (the first record always comes), and says so
    /// ([`Page::cut`]). `None`: no byte limit.
    pub max_bytes: Option<usize>,
    /// How long the database may take to answer (a statement time limit; PostgreSQL's
    /// `statement_timeout`, an interrupt for SQLite): beyond it the page fails with
    /// [`StoreError::StatementTimeout`](crate::StoreError::StatementTimeout). A filter the
    /// indexes cannot serve reads every record of the time range; this bounds what it costs.
    /// `None`: no limit.
    pub time_limit: Option<Duration>,
}

impl RecordQuery {
    /// A query for the records of `account_id` in `[since_ms, before_ms)`, newest first, up
    /// to `limit`, without filters, byte budget or time limit.
    ///
    /// ```
    /// use audit_store::model::{Direction, RecordQuery};
    ///
    /// let query = RecordQuery {
    ///     direction: Direction::Asc,
    ///     max_bytes: Some(1 << 20),
    ///     ..RecordQuery::new("acc-1", 0, 1_000, 100)
    /// };
    /// assert!(query.filters.is_empty());
    /// ```
    pub fn new(account_id: impl Into<String>, since_ms: i64, before_ms: i64, limit: u32) -> Self {
        Self {
            account_id: account_id.into(),
            since_ms,
            before_ms,
            filters: Vec::new(),
            direction: Direction::Desc,
            after: None,
            limit,
            max_bytes: None,
            time_limit: None,
        }
    }
}

/// What [`AuditStore::page`](crate::store::AuditStore::page) returns: the records, and
/// whether the byte budget ended the page early.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Page {
    /// The records, in the query's order.
    pub rows: Vec<PageRow>,
    /// The page stopped at its byte budget ([`RecordQuery::max_bytes`]) before another
    /// matching record: more follow its last row.
    pub cut: bool,
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

/// A link read in the account's time order
/// ([`ChainedStore::chain_page`](crate::store::ChainedStore::chain_page)), with its time: the
/// position to continue from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TimedLink {
    /// `action.time`, ms.
    pub time_ms: i64,
    /// The link.
    pub row: crate::model::ChainRow,
}
