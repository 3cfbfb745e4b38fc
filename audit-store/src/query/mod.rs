//! The read side: an axum [`Router`] that serves an account's audit log the way the original
//! system's v2 API does, so tools written for that API work against it.
//!
//! - `GET /accounts/{account_id}/logs/audit?since=&before=` — a page of records, newest first:
//!   every filter of the original API (`action_type`, `actor_email`, `resource_product`, ...),
//!   repeatable (OR) and with a `<name>.not` form, `direction`, `limit` (1–1000, default 100)
//!   and an opaque `cursor`. With `Accept: application/x-ndjson` or `format=ndjson`, every
//!   matching record is streamed instead, one per line, page by page (for SIEM ingestion);
//!   with `Accept: text/csv` or `format=csv`, as CSV (a header row, every cell quoted,
//!   formulas defused).
//!   `product_category` (repeatable, any case) adds the products of a category to the
//!   `resource_product` filter ([`AuditLogRouter::product_categories`]).
//! - `GET /accounts/{account_id}/logs/audit/{id}` — one record.
//! - `GET /accounts/{account_id}/logs/audit/stats?since=&before=` — counts for the same
//!   filters: records per hour or day by result, the top actors, actions and products
//!   (`interval=hour|day`, `top` up to [`MAX_TOP`], `utc_offset` for the caller's hours and
//!   days); bounded like a page.
//! - `GET /accounts/{account_id}/logs/audit/product_categories` — the product categories and
//!   the products each stands for.
//! - `GET /accounts/{account_id}/logs/audit/{id}/history?since=&before=&action_time=` — the
//!   writes of the resource the record `{id}` acted on, each with the resource's value before
//!   and after and an RFC 6902 patch between them; `result_info.history_status` is `exact`,
//!   `approximate` or `unavailable` (see `history`).
//! - `GET /accounts/{account_id}/logs/audit/verify?since=&before=` — verifies the account's
//!   hash chain (a chained store only; see [`chain`](crate::chain)) against its stored
//!   checkpoints and those kept outside ([`AuditLogRouter::external_checkpoints`]): `result`
//!   is a [`VerifyReport`](crate::verify::VerifyReport), whose `outcome` is `ok`,
//!   `unverifiable` (no checkpoint covers what was checked) or `broken` (the first break).
//!
//! Records stored before the v2 API's names (`raw.ray_id`, no `actor.token_id`) are served
//! under them; the stored rows are not rewritten (see `names`).
//!
//! Responses use the original envelope, `{"success", "errors", "messages", "result",
//! "result_info": {"count", "cursor", "cursors": {"after"}}}`; the last page has no cursor.
//! Every bad parameter is a 400 naming it. Access is decided by the app's [`Authorizer`]: a
//! caller without access to the account gets a 404 (no hint the account exists), one without
//! credentials a 401.
//!
//! What one caller can make the server hold is bounded, whatever the records weigh: a page's
//! answer stops at a byte budget ([`AuditLogRouter::page_bytes`], 16 MiB) and then carries a
//! cursor to the rest; an export holds about a megabyte at a time, is read only as fast as
//! the client takes it, and each account has at most [`AuditLogRouter::exports_per_account`]
//! (2) running at once (a 429 beyond); every statement has a time limit
//! ([`AuditLogRouter::statement_timeout`], 2 s), which a filter the indexes cannot serve may
//! reach on a long range (a 422 that says which filter and how to narrow the query); a
//! verification runs one at a time per account and [`AuditLogRouter::verifications_at_once`]
//! (2) in all, each within [`AuditLogRouter::verify_time_limit`] (60 s). No answer may be
//! cached (`Cache-Control: no-store`).
//!
//! ```
//! use audit_store::query::{Access, AuditLogRouter};
//! use audit_store::SqliteStore;
//! use axum::Router;
//!
//! # async fn run(store: SqliteStore) {
//! let authorize = |request: &http::request::Parts, account_id: &str| {
//!     match request.headers.get("authorization").and_then(|v| v.to_str().ok()) {
//!         None => Access::Unauthenticated,
//!         Some(token) if token == format!("Bearer token-of-{account_id}") => Access::Allowed,
//!         Some(_) => Access::Denied,
//!     }
//! };
//! let app: Router = Router::new().merge(AuditLogRouter::new(store, authorize).into_router());
//! # }
//! ```

mod authorized;
mod categories;
mod cursor;
mod export;
mod history;
mod names;
#[cfg(feature = "utoipa")]
#[cfg_attr(docsrs, doc(cfg(feature = "utoipa")))]
mod openapi;
mod params;
mod stats;
#[cfg(feature = "viewer")]
mod viewer;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use audit_layer::ProductCategories;
use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header, request::Parts};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use bytes::Bytes;
use cursor::CursorKey;
#[cfg(feature = "utoipa")]
#[cfg_attr(docsrs, doc(cfg(feature = "utoipa")))]
pub use openapi::{ApiDescription, TAG, openapi};
pub use params::BadParameter;
pub use stats::{MAX_BUCKETS, MAX_TOP};
#[cfg(feature = "viewer")]
pub use viewer::InvalidFrameAncestor;

use crate::StoreError;
use crate::chain::Verifier;
use crate::model::{Column, Page, PageRow, RecordQuery};
use crate::store::ChainedStore;
use crate::verify::CheckpointSource;
use authorized::{Authorized, RecordId};
use export::Exports;
use uuid::Uuid;

/// The default of [`AuditLogRouter::page_bytes`].
pub const DEFAULT_PAGE_BYTES: usize = 16 * 1024 * 1024;
/// The default of [`AuditLogRouter::exports_per_account`].
pub const DEFAULT_EXPORTS_PER_ACCOUNT: usize = 2;
/// The default of [`AuditLogRouter::statement_timeout`].
pub const DEFAULT_STATEMENT_TIMEOUT: Duration = Duration::from_secs(2);
/// The default of [`AuditLogRouter::verifications_at_once`].
pub const DEFAULT_VERIFICATIONS_AT_ONCE: usize = 2;
/// The default of [`AuditLogRouter::verify_time_limit`].
pub const DEFAULT_VERIFY_TIME_LIMIT: Duration = Duration::from_secs(60);
/// What a page's answer holds besides its records, at most: the envelope and two cursors.
const ENVELOPE_BYTES: usize = 2048;

/// Whether a caller may read an account's audit log.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// Yes.
    Allowed,
    /// The request carries no (valid) credentials: 401.
    Unauthenticated,
    /// The caller may not read this account's log: 404, as if the account did not exist.
    Denied,
}

/// The future of [`Authorizer::authorize`].
pub type Authorization<'a> = Pin<Box<dyn Future<Output = Access> + Send + 'a>>;

/// The app's decision, from the request, whether the caller may read an account's log.
///
/// Implemented for closures `Fn(&Parts, &str) -> Access`; implement the trait for a type when
/// the decision needs I/O.
pub trait Authorizer: Send + Sync + 'static {
    /// Decides for one request and account.
    fn authorize<'a>(&'a self, request: &'a Parts, account_id: &'a str) -> Authorization<'a>;
}

impl<F> Authorizer for F
where
    F: Fn(&Parts, &str) -> Access + Send + Sync + 'static,
{
    fn authorize<'a>(&'a self, request: &'a Parts, account_id: &'a str) -> Authorization<'a> {
        let access = self(request, account_id);
        Box::pin(std::future::ready(access))
    }
}

/// Builds the audit log [`Router`].
#[must_use]
pub struct AuditLogRouter<S> {
    /// What every route reads, set by the builder's methods.
    shared: Shared<S>,
    prefix: String,
    #[cfg(feature = "viewer")]
    viewer: Option<viewer::Viewer>,
}

impl<S> std::fmt::Debug for AuditLogRouter<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditLogRouter").finish_non_exhaustive()
    }
}

struct Shared<S> {
    store: S,
    authorizer: Arc<dyn Authorizer>,
    cursor_key: CursorKey,
    verifier: Option<Verifier>,
    external: Option<Arc<dyn CheckpointSource>>,
    page_bytes: usize,
    statement_timeout: Option<Duration>,
    exports: Exports,
    /// Verifications running, per account (one each) and in all.
    verifying: Exports,
    verifications: Arc<tokio::sync::Semaphore>,
    verify_time_limit: Option<Duration>,
    categories: ProductCategories,
}

impl<S: ChainedStore> AuditLogRouter<S> {
    /// A router over `store`, guarded by `authorizer`.
    pub fn new(store: S, authorizer: impl Authorizer) -> Self {
        let verifier = store.chain_keys().map(crate::chain::ChainKeys::verifier);
        Self {
            shared: Shared {
                store,
                authorizer: Arc::new(authorizer),
                cursor_key: CursorKey::random(),
                verifier,
                external: None,
                page_bytes: DEFAULT_PAGE_BYTES,
                statement_timeout: Some(DEFAULT_STATEMENT_TIMEOUT),
                exports: Exports::new(DEFAULT_EXPORTS_PER_ACCOUNT),
                verifying: Exports::new(1),
                verifications: Arc::new(tokio::sync::Semaphore::new(DEFAULT_VERIFICATIONS_AT_ONCE)),
                verify_time_limit: Some(DEFAULT_VERIFY_TIME_LIMIT),
                categories: ProductCategories::new(),
            },
            prefix: String::new(),
            #[cfg(feature = "viewer")]
            viewer: None,
        }
    }

    /// The path the API is served under: with `/client/v4`, a page is
    /// `GET /client/v4/accounts/{account_id}/logs/audit`. Defaults to none (`/accounts/...`).
    /// The API's description (`openapi(prefix)`, feature `utoipa`) takes the same prefix.
    ///
    /// ```
    /// # use audit_store::query::{Access, AuditLogRouter};
    /// # fn run(store: audit_store::SqliteStore) {
    /// let router = AuditLogRouter::new(store, |_: &http::request::Parts, _: &str| Access::Allowed)
    ///     .prefix("/client/v4");
    /// # let _ = router; }
    /// ```
    ///
    /// # Panics
    ///
    /// When `prefix` does not start with `/`, ends with `/`, or holds a character a path
    /// template gives a meaning (`{`, `}`, `*`, `?`, `#`) or whitespace: a mistake in the app's
    /// code, found at start-up as axum finds a bad route.
    #[track_caller]
    pub fn prefix(mut self, prefix: &str) -> Self {
        let bad = !prefix.starts_with('/')
            || prefix.ends_with('/')
            || prefix
                .chars()
                .any(|c| matches!(c, '{' | '}' | '*' | '?' | '#') || c.is_whitespace());
        assert!(
            !bad,
            "invalid audit log router prefix {prefix:?}: expected a path such as \"/client/v4\" \
             (starting with '/', not ending with '/', without {{ }} * ? # or spaces)"
        );
        self.prefix = prefix.to_owned();
        self
    }

    /// The product categories `GET …/logs/audit/product_categories` serves and the
    /// `product_category` filter takes: usually the app's policy's
    /// ([`AuditPolicy::product_categories`](audit_layer::AuditPolicy::product_categories),
    /// from `x-audit-product-category` in its API description), extended with
    /// [`ProductCategories::category`] for products only events have. Defaults to none: the
    /// endpoint lists nothing and every `product_category` value is a 400.
    ///
    /// A category is a name for a set of `resource.product` values, resolved when a query is
    /// made, not a field of each record: the filter becomes one on `resource_product` (which
    /// an index serves), a category declared or changed later applies to the records already
    /// stored, and the stored rows (whose JSON each chain's digests cover) stay as written.
    ///
    /// ```
    /// # use audit_store::query::{Access, AuditLogRouter};
    /// use audit_layer::ProductCategories;
    /// # fn run(store: audit_store::SqliteStore) -> Result<(), audit_layer::PolicyError> {
    /// let categories = ProductCategories::new().category("DNS", ["dns", "zones"])?;
    /// let router = AuditLogRouter::new(store, |_: &http::request::Parts, _: &str| Access::Allowed)
    ///     .product_categories(categories);
    /// # let _ = router; Ok(()) }
    /// ```
    pub fn product_categories(mut self, categories: ProductCategories) -> Self {
        self.shared.categories = categories;
        self
    }

    /// The most bytes one page's answer holds, envelope included: a page of large records
    /// ends before `limit` records, with a cursor to the rest (its first record always comes,
    /// whatever its size). Defaults to 16 MiB ([`DEFAULT_PAGE_BYTES`]).
    ///
    /// ```
    /// # use audit_store::query::{Access, AuditLogRouter};
    /// # fn run(store: audit_store::SqliteStore) {
    /// let router = AuditLogRouter::new(store, |_: &http::request::Parts, _: &str| Access::Allowed)
    ///     .page_bytes(4 * 1024 * 1024);
    /// # let _ = router; }
    /// ```
    pub fn page_bytes(mut self, bytes: usize) -> Self {
        self.shared.page_bytes = bytes;
        self
    }

    /// How many NDJSON exports of one account may run at once; beyond, a 429 says to wait.
    /// Defaults to 2 ([`DEFAULT_EXPORTS_PER_ACCOUNT`]).
    ///
    /// ```
    /// # use audit_store::query::{Access, AuditLogRouter};
    /// # fn run(store: audit_store::SqliteStore) {
    /// let router = AuditLogRouter::new(store, |_: &http::request::Parts, _: &str| Access::Allowed)
    ///     .exports_per_account(1);
    /// # let _ = router; }
    /// ```
    pub fn exports_per_account(mut self, exports: usize) -> Self {
        self.shared.exports = Exports::new(exports);
        self
    }

    /// How long one statement of a page or export may run (`None`: no limit). A filter on a
    /// column no index leads with (anything but `actor_email`, `resource_product` and
    /// `action_type`) reads every record of the time range; past the limit the answer is a
    /// 422 naming the filters, and an export ends broken. Defaults to 2 s
    /// ([`DEFAULT_STATEMENT_TIMEOUT`]).
    ///
    /// ```
    /// # use audit_store::query::{Access, AuditLogRouter};
    /// # use std::time::Duration;
    /// # fn run(store: audit_store::SqliteStore) {
    /// let router = AuditLogRouter::new(store, |_: &http::request::Parts, _: &str| Access::Allowed)
    ///     .statement_timeout(Some(Duration::from_secs(10)));
    /// # let _ = router; }
    /// ```
    pub fn statement_timeout(mut self, limit: Option<Duration>) -> Self {
        self.shared.statement_timeout = limit;
        self
    }

    /// How many verifications (`…/verify`) may run at once, of all accounts together; one
    /// account runs one at a time. Beyond, a 429 says to wait. A verification reads every
    /// link of its range, holding a database connection while it does: this bound keeps
    /// them from taking the connections every other read needs. Defaults to 2
    /// ([`DEFAULT_VERIFICATIONS_AT_ONCE`]).
    ///
    /// ```
    /// # use audit_store::query::{Access, AuditLogRouter};
    /// # fn run(store: audit_store::SqliteStore) {
    /// let router = AuditLogRouter::new(store, |_: &http::request::Parts, _: &str| Access::Allowed)
    ///     .verifications_at_once(1);
    /// # let _ = router; }
    /// ```
    pub fn verifications_at_once(mut self, verifications: usize) -> Self {
        self.shared.verifications = Arc::new(tokio::sync::Semaphore::new(verifications));
        self
    }

    /// How long one verification may run (`None`: no limit); past it, the answer is a 422
    /// that says to verify a shorter range. Verifying a whole chain (no `since`/`before`)
    /// reads all of the account's retained records. Defaults to 60 s
    /// ([`DEFAULT_VERIFY_TIME_LIMIT`]).
    ///
    /// ```
    /// # use audit_store::query::{Access, AuditLogRouter};
    /// # use std::time::Duration;
    /// # fn run(store: audit_store::SqliteStore) {
    /// let router = AuditLogRouter::new(store, |_: &http::request::Parts, _: &str| Access::Allowed)
    ///     .verify_time_limit(Some(Duration::from_secs(300)));
    /// # let _ = router; }
    /// ```
    pub fn verify_time_limit(mut self, limit: Option<Duration>) -> Self {
        self.shared.verify_time_limit = limit;
        self
    }

    /// What the verify endpoint trusts. Defaults, for a chained store, to the store's own
    /// keys (signatures and seals); give one with older public keys after a key rotation.
    pub fn verifier(mut self, verifier: Verifier) -> Self {
        self.shared.verifier = Some(verifier);
        self
    }

    /// Where the verify endpoint also reads checkpoints kept outside the database (the
    /// pipeline's [`CheckpointSink`](crate::chain::CheckpointSink), read back): they count
    /// like the stored ones, so an insider who deletes an account's newest records (or all of
    /// them) with the stored checkpoints and the head is still found. Defaults to none: the
    /// stored checkpoints only.
    ///
    /// ```
    /// # use audit_store::query::{Access, AuditLogRouter};
    /// use audit_store::chain::JsonLinesCheckpoints;
    /// # fn run(store: audit_store::SqliteStore) {
    /// let router = AuditLogRouter::new(store, |_: &http::request::Parts, _: &str| Access::Allowed)
    ///     .external_checkpoints(JsonLinesCheckpoints::new("/mnt/elsewhere/checkpoints.jsonl"));
    /// # let _ = router; }
    /// ```
    pub fn external_checkpoints(mut self, source: impl CheckpointSource) -> Self {
        self.shared.external = Some(Arc::new(source));
        self
    }

    /// The key cursors are signed with. Defaults to a random key per process, so cursors do
    /// not survive a restart; give every instance behind one load balancer the same key.
    pub fn cursor_key(mut self, key: [u8; 32]) -> Self {
        self.shared.cursor_key = CursorKey::new(key);
        self
    }

    /// What this router serves (its prefix, product categories and viewer), to describe in
    /// OpenAPI: `router.description().openapi()` is the document to merge into the app's.
    ///
    /// ```
    /// # use audit_store::query::{Access, AuditLogRouter};
    /// # fn run(store: audit_store::SqliteStore) {
    /// let router = AuditLogRouter::new(store, |_: &http::request::Parts, _: &str| Access::Allowed)
    ///     .prefix("/client/v4");
    /// let doc = router.description().openapi();
    /// assert!(doc.paths.get_path_item("/client/v4/accounts/{account_id}/logs/audit").is_some());
    /// # }
    /// ```
    #[cfg(feature = "utoipa")]
    #[cfg_attr(docsrs, doc(cfg(feature = "utoipa")))]
    pub fn description(&self) -> ApiDescription {
        let description = ApiDescription::new()
            .prefix(&self.prefix)
            .product_categories(self.shared.categories.clone());
        #[cfg(feature = "viewer")]
        let description = description.viewer(self.viewer.is_some());
        description
    }

    /// The router, to `merge` into the app's.
    pub fn into_router(self) -> Router {
        let shared = Arc::new(self.shared);
        let base = format!("{}/accounts/{{account_id}}/logs/audit", self.prefix);
        let router = Router::new()
            .route(&base, get(list::<S>))
            .route(&format!("{base}/verify"), get(verify::<S>))
            .route(&format!("{base}/stats"), get(stats::stats::<S>))
            .route(
                &format!("{base}/product_categories"),
                get(categories::list::<S>),
            )
            .route(&format!("{base}/{{id}}"), get(one::<S>))
            .route(
                &format!("{base}/{{id}}/history"),
                get(history::history::<S>),
            );
        #[cfg(feature = "viewer")]
        let router = match self.viewer {
            Some(viewer) => viewer.routes(router, &base),
            None => router,
        };
        router
            .layer(axum::middleware::map_response(private_answer))
            .with_state(shared)
    }
}

/// Every answer of the router holds records or speaks of them (errors included): none is
/// kept by a browser's cache (readable there after the session ended) or a shared one, nor
/// sniffed as another type. The viewer's page and assets, which hold no records, say
/// `no-cache` themselves and keep it.
async fn private_answer(mut response: Response) -> Response {
    let headers = response.headers_mut();
    headers
        .entry(header::CACHE_CONTROL)
        .or_insert(HeaderValue::from_static("no-store"));
    headers
        .entry(header::X_CONTENT_TYPE_OPTIONS)
        .or_insert(HeaderValue::from_static("nosniff"));
    response
}

/// An error in the original API's envelope.
fn error(status: StatusCode, code: u32, message: &str) -> Response {
    let body = serde_json::json!({
        "success": false,
        "errors": [{"code": code, "message": message}],
        "messages": [],
        "result": null,
    });
    (status, axum::Json(body)).into_response()
}

fn internal(e: &crate::StoreError) -> Response {
    tracing::error!(target: "audit_store", "audit log query failed: {e}");
    error(
        StatusCode::INTERNAL_SERVER_ERROR,
        10000,
        "internal error reading the audit log",
    )
}

/// Checks access; the response to give instead when it is not granted.
async fn authorize<S>(shared: &Shared<S>, parts: &Parts, account_id: &str) -> Option<Response> {
    match shared.authorizer.authorize(parts, account_id).await {
        Access::Allowed => None,
        Access::Unauthenticated => Some(error(
            StatusCode::UNAUTHORIZED,
            10001,
            "authentication required",
        )),
        Access::Denied => Some(error(StatusCode::NOT_FOUND, 10404, "not found")),
    }
}

fn json_response(body: String) -> Response {
    let mut response = Response::new(Body::from(body));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

async fn list<S: ChainedStore>(
    State(shared): State<Arc<Shared<S>>>,
    headers: HeaderMap,
    Authorized {
        account_id,
        params: query,
    }: Authorized<params::LogQuery>,
) -> Response {
    let binding = query.binding(&account_id);
    let after = match open_cursor(&shared, query.cursor.as_deref(), &binding, "query") {
        Ok(after) => after,
        Err(bad) => return bad,
    };
    let accepts = |media: &str| {
        headers
            .get(header::ACCEPT)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.contains(media))
    };
    let stream = match query.format {
        params::AnswerFormat::Csv => Some(export::Stream::Csv),
        params::AnswerFormat::Ndjson => Some(export::Stream::Ndjson),
        params::AnswerFormat::Json if accepts("application/x-ndjson") => {
            Some(export::Stream::Ndjson)
        }
        // The viewer's CSV button asks this way.
        params::AnswerFormat::Json if accepts("text/csv") => Some(export::Stream::Csv),
        params::AnswerFormat::Json => None,
    };
    let mut page = RecordQuery {
        account_id,
        since_ms: query.since_ms,
        before_ms: query.before_ms,
        filters: query.filters.clone(),
        direction: query.direction,
        after,
        limit: query.limit,
        max_bytes: None,
        time_limit: shared.statement_timeout,
    };
    if let Some(stream) = stream {
        return export::export(Arc::clone(&shared), page, stream);
    }
    if query.before_ms <= query.since_ms {
        return json_response(
            serde_json::json!({
                "success": true, "errors": [],
                "messages": [{"code": 10200, "message": params::EMPTY_RANGE}],
                "result": [], "result_info": {"count": 0, "cursors": {}},
            })
            .to_string(),
        );
    }
    // One more than asked: whether another page exists.
    page.limit = query.limit + 1;
    page.max_bytes = Some(
        shared
            .page_bytes
            .saturating_sub(ENVELOPE_BYTES + query.limit as usize),
    );
    let Page { mut rows, cut } = match shared.store.page(&page).await {
        Ok(page) => page,
        Err(e) => return read_failed(&e, &page),
    };
    let more = cut || rows.len() > query.limit as usize;
    rows.truncate(query.limit as usize);
    for row in &mut rows {
        if let std::borrow::Cow::Owned(renamed) = names::current(&row.record) {
            row.record = renamed;
        }
    }
    let cursor = more
        .then(|| rows.last())
        .flatten()
        .map(|last| shared.cursor_key.seal(last.time_ms, last.id, &binding));
    envelope_response(rows, cursor.as_deref())
}

/// The position after which the page `cursor` asks for starts (`None`: the first page); a
/// 400 when `cursor` is not one this `what` (with these parameters: `binding`) issued.
#[expect(
    clippy::result_large_err,
    reason = "the answer itself, as axum's rejections are: made once per refused request"
)]
fn open_cursor<S>(
    shared: &Shared<S>,
    cursor: Option<&str>,
    binding: &str,
    what: &str,
) -> Result<Option<(i64, Uuid)>, Response> {
    let Some(cursor) = cursor else {
        return Ok(None);
    };
    match shared.cursor_key.open(cursor, binding) {
        Some(position) => Ok(Some(position)),
        None => Err(error(
            StatusCode::BAD_REQUEST,
            400,
            &format!(
                "invalid value for 'cursor': not a cursor this {what} issued (edited, from \
                 another query, or expired); start again without 'cursor'"
            ),
        )),
    }
}

/// The answer to a read that failed: a 422 for one stopped at its time limit, naming the
/// filters that made it slow; a 500 otherwise.
fn read_failed(e: &StoreError, query: &RecordQuery) -> Response {
    let StoreError::StatementTimeout(limit) = e else {
        return internal(e);
    };
    let unindexed: Vec<String> = query
        .filters
        .iter()
        .map(|f| f.column)
        .filter(|c| {
            !matches!(
                c,
                Column::ActorEmail | Column::ResourceProduct | Column::ActionType
            )
        })
        .map(|c| format!("'{}'", c.name()))
        .collect();
    let why = if unindexed.is_empty() {
        "this range holds too many records to search".to_owned()
    } else {
        format!(
            "no index serves the filter on {}, so every record of the range is searched",
            unindexed.join(", ")
        )
    };
    error(
        StatusCode::UNPROCESSABLE_ENTITY,
        10422,
        &format!(
            "the query stopped at its time limit of {limit:?}: {why}; narrow 'since' and \
             'before', or also filter on 'actor_email', 'resource_product' or 'action_type' \
             (indexed)"
        ),
    )
}

/// Small answers are built in one piece; larger ones are sent record by record, so that the
/// records are not copied into a second buffer as large as the page.
const ONE_PIECE_BYTES: usize = 256 * 1024;

/// The success envelope of `rows`, with their stored JSON spliced in as is.
fn envelope_response(rows: Vec<PageRow>, cursor: Option<&str>) -> Response {
    let size: usize = rows.iter().map(|r| r.record.len() + 1).sum();
    if size <= ONE_PIECE_BYTES {
        return json_response(envelope(&rows, cursor));
    }
    let (head, tail) = envelope_ends(rows.len(), cursor);
    let count = rows.len();
    let mut pieces: Vec<Bytes> = Vec::with_capacity(count + 2);
    pieces.push(Bytes::from(head));
    for (i, row) in rows.into_iter().enumerate() {
        let mut record = row.record;
        if i + 1 < count {
            record.push(',');
        }
        pieces.push(Bytes::from(record));
    }
    pieces.push(Bytes::from(tail));
    let stream = futures_util::stream::iter(pieces.into_iter().map(Ok::<_, std::io::Error>));
    let mut response = Response::new(Body::from_stream(stream));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

/// The success envelope, with the records' stored JSON spliced in as is.
fn envelope(rows: &[PageRow], cursor: Option<&str>) -> String {
    let (head, tail) = envelope_ends(rows.len(), cursor);
    let size: usize = rows.iter().map(|r| r.record.len() + 1).sum();
    let mut body = String::with_capacity(head.len() + size + tail.len());
    body.push_str(&head);
    for (i, row) in rows.iter().enumerate() {
        if i > 0 {
            body.push(',');
        }
        body.push_str(&row.record);
    }
    body.push_str(&tail);
    body
}

/// What comes before and after the records of a page of `count` records.
fn envelope_ends(count: usize, cursor: Option<&str>) -> (String, String) {
    let head = r#"{"success":true,"errors":[],"messages":[],"result":["#.to_owned();
    let mut tail = String::with_capacity(160);
    tail.push_str(r#"],"result_info":{"count":"#);
    tail.push_str(&count.to_string());
    match cursor {
        Some(cursor) => {
            // Cursors are base64url: nothing to escape.
            tail.push_str(r#","cursor":""#);
            tail.push_str(cursor);
            tail.push_str(r#"","cursors":{"after":""#);
            tail.push_str(cursor);
            tail.push_str(r#""}}}"#);
        }
        None => tail.push_str(r#","cursors":{}}}"#),
    }
    (head, tail)
}

async fn verify<S: ChainedStore>(
    State(shared): State<Arc<Shared<S>>>,
    Authorized {
        account_id,
        params: span,
    }: Authorized<crate::verify::Span>,
) -> Response {
    let Some(verifier) = &shared.verifier else {
        return error(
            StatusCode::NOT_IMPLEMENTED,
            10501,
            "this audit log is not chained: tamper evidence is not enabled on its store",
        );
    };
    let busy = |message: &str| {
        let mut response = error(StatusCode::TOO_MANY_REQUESTS, 10429, message);
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
        response
    };
    let Some(_running) = shared.verifying.enter(&account_id) else {
        return busy(
            "a verification of this account's audit log is already running: wait for its answer",
        );
    };
    let Ok(_permit) = Arc::clone(&shared.verifications).try_acquire_owned() else {
        return busy("too many audit log verifications at once: try again shortly");
    };
    let external = match &shared.external {
        None => Vec::new(),
        Some(source) => match source.checkpoints(Some(&account_id)).await {
            Ok(external) => external,
            Err(e) => {
                tracing::error!(target: "audit_store", "cannot read the external checkpoints: {e}");
                return error(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    10000,
                    "cannot read the checkpoints kept outside the database: nothing verified",
                );
            }
        },
    };
    let verified = crate::verify::verify(&shared.store, verifier, &account_id, span, &external);
    let verified = match shared.verify_time_limit {
        None => verified.await,
        Some(limit) => match tokio::time::timeout(limit, verified).await {
            Ok(verified) => verified,
            Err(_) => {
                return error(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    10422,
                    &format!(
                        "the verification stopped at its time limit of {limit:?}: verify a \
                         shorter range with 'since' and 'before'"
                    ),
                );
            }
        },
    };
    match verified {
        Ok(report) => match serde_json::to_string(&report) {
            Ok(report) => json_response(format!(
                r#"{{"success":true,"errors":[],"messages":[],"result":{report}}}"#
            )),
            Err(e) => internal(&e.into()),
        },
        Err(e) => internal(&e),
    }
}

/// The answer to a record id in the path (`…/logs/audit/{id}`, `…/{id}/history`) that is not
/// a UUID.
fn bad_record_id() -> Response {
    error(
        StatusCode::BAD_REQUEST,
        400,
        "invalid audit log id in the path: expected a UUID",
    )
}

async fn one<S: ChainedStore>(
    State(shared): State<Arc<Shared<S>>>,
    Authorized {
        account_id,
        params: RecordId(id),
    }: Authorized<RecordId>,
) -> Response {
    match shared.store.get(&account_id, id).await {
        Ok(Some(record)) => json_response(format!(
            r#"{{"success":true,"errors":[],"messages":[],"result":{}}}"#,
            names::current(&record)
        )),
        Ok(None) => error(StatusCode::NOT_FOUND, 10404, "not found"),
        Err(e) => internal(&e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_envelope_matches_the_original() {
        let rows = vec![PageRow {
            time_ms: 1,
            id: Uuid::nil(),
            record: r#"{"id":"x"}"#.into(),
        }];
        let body: serde_json::Value = serde_json::from_str(&envelope(&rows, Some("abc"))).unwrap();
        assert_eq!(
            body,
            serde_json::json!({"success": true, "errors": [], "messages": [], "result": [{"id": "x"}],
                "result_info": {"count": 1, "cursor": "abc", "cursors": {"after": "abc"}}})
        );
        let last: serde_json::Value = serde_json::from_str(&envelope(&[], None)).unwrap();
        assert_eq!(
            last["result_info"],
            serde_json::json!({"count": 0, "cursors": {}})
        );
    }
}
