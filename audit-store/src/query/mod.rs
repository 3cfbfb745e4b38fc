//! The read side: an axum [`Router`] that serves an account's audit log the way the original
//! system's v2 API does, so tools written for that API work against it.
//!
//! - `GET /accounts/{account_id}/logs/audit?since=&before=` — a page of records, newest first:
//!   every filter of the original API (`action_type`, `actor_email`, `resource_product`, ...),
//!   repeatable (OR) and with a `<name>.not` form, `direction`, `limit` (1–1000, default 100)
//!   and an opaque `cursor`. With `Accept: application/x-ndjson`, every matching record is
//!   streamed instead, one per line, page by page (for SIEM ingestion).
//! - `GET /accounts/{account_id}/logs/audit/{id}` — one record.
//! - `GET /accounts/{account_id}/logs/audit/verify?since=&before=` — verifies the account's
//!   hash chain (a chained store only; see [`chain`](crate::chain)): `result` is a
//!   [`VerifyReport`](crate::verify::VerifyReport), `ok` with counts or the first break.
//!
//! Responses use the original envelope, `{"success", "errors", "messages", "result",
//! "result_info": {"count", "cursor", "cursors": {"after"}}}`; the last page has no cursor.
//! Every bad parameter is a 400 naming it. Access is decided by the app's [`Authorizer`]: a
//! caller without access to the account gets a 404 (no hint the account exists), one without
//! credentials a 401.
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

mod cursor;
mod params;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderValue, StatusCode, header, request::Parts};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use bytes::Bytes;
use cursor::CursorKey;
pub use params::BadParameter;
use uuid::Uuid;

use crate::chain::Verifier;
use crate::model::{PageRow, RecordQuery};
use crate::store::ChainedStore;

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
    store: S,
    authorizer: Arc<dyn Authorizer>,
    cursor_key: CursorKey,
    export_page: u32,
    verifier: Option<Verifier>,
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
    export_page: u32,
    verifier: Option<Verifier>,
}

impl<S: ChainedStore> AuditLogRouter<S> {
    /// A router over `store`, guarded by `authorizer`.
    pub fn new(store: S, authorizer: impl Authorizer) -> Self {
        let verifier = store.chain_keys().map(crate::chain::ChainKeys::verifier);
        Self {
            store,
            authorizer: Arc::new(authorizer),
            cursor_key: CursorKey::random(),
            export_page: 1000,
            verifier,
        }
    }

    /// What the verify endpoint trusts. Defaults, for a chained store, to the store's own
    /// keys (signatures and seals); give one with older public keys after a key rotation.
    pub fn verifier(mut self, verifier: Verifier) -> Self {
        self.verifier = Some(verifier);
        self
    }

    /// The key cursors are signed with. Defaults to a random key per process, so cursors do
    /// not survive a restart; give every instance behind one load balancer the same key.
    pub fn cursor_key(mut self, key: [u8; 32]) -> Self {
        self.cursor_key = CursorKey::new(key);
        self
    }

    /// The router, to `merge` into the app's.
    pub fn into_router(self) -> Router {
        let shared = Arc::new(Shared {
            store: self.store,
            authorizer: self.authorizer,
            cursor_key: self.cursor_key,
            export_page: self.export_page,
            verifier: self.verifier,
        });
        Router::new()
            .route("/accounts/{account_id}/logs/audit", get(list::<S>))
            .route("/accounts/{account_id}/logs/audit/verify", get(verify::<S>))
            .route("/accounts/{account_id}/logs/audit/{id}", get(one::<S>))
            .with_state(shared)
    }
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
    Path(account_id): Path<String>,
    RawQuery(raw): RawQuery,
    parts: Parts,
) -> Response {
    if let Some(denied) = authorize(&shared, &parts, &account_id).await {
        return denied;
    }
    let query = match params::parse(raw.as_deref().unwrap_or("")) {
        Ok(query) => query,
        Err(e) => return error(StatusCode::BAD_REQUEST, 400, &e.to_string()),
    };
    let binding = query.binding(&account_id);
    let after = match &query.cursor {
        None => None,
        Some(cursor) => match shared.cursor_key.open(cursor, &binding) {
            Some(position) => Some(position),
            None => {
                return error(
                    StatusCode::BAD_REQUEST,
                    400,
                    "invalid value for 'cursor': not a cursor this query issued (edited, from another query, or expired); start again without 'cursor'",
                );
            }
        },
    };
    let ndjson = parts
        .headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("application/x-ndjson"));
    let mut page = RecordQuery {
        account_id,
        since_ms: query.since_ms,
        before_ms: query.before_ms,
        filters: query.filters.clone(),
        direction: query.direction,
        after,
        limit: query.limit,
    };
    if ndjson {
        page.limit = shared.export_page;
        return export(Arc::clone(&shared), page);
    }
    // One more than asked: whether another page exists.
    page.limit = query.limit + 1;
    let mut rows = match shared.store.page(&page).await {
        Ok(rows) => rows,
        Err(e) => return internal(&e),
    };
    let more = rows.len() > query.limit as usize;
    rows.truncate(query.limit as usize);
    let cursor = more
        .then(|| rows.last())
        .flatten()
        .map(|last| shared.cursor_key.seal(last.time_ms, last.id, &binding));
    json_response(envelope(&rows, cursor.as_deref()))
}

/// The success envelope, with the records' stored JSON spliced in as is.
fn envelope(rows: &[PageRow], cursor: Option<&str>) -> String {
    let size: usize = rows.iter().map(|r| r.record.len() + 1).sum();
    let mut body = String::with_capacity(size + 160);
    body.push_str(r#"{"success":true,"errors":[],"messages":[],"result":["#);
    for (i, row) in rows.iter().enumerate() {
        if i > 0 {
            body.push(',');
        }
        body.push_str(&row.record);
    }
    body.push_str(r#"],"result_info":{"count":"#);
    body.push_str(&rows.len().to_string());
    match cursor {
        Some(cursor) => {
            // Cursors are base64url: nothing to escape.
            body.push_str(r#","cursor":""#);
            body.push_str(cursor);
            body.push_str(r#"","cursors":{"after":""#);
            body.push_str(cursor);
            body.push_str(r#""}}}"#);
        }
        None => body.push_str(r#","cursors":{}}}"#),
    }
    body
}

/// Streams every matching record as NDJSON, one page in memory at a time.
fn export<S: ChainedStore>(shared: Arc<Shared<S>>, first: RecordQuery) -> Response {
    let pages = futures_util::stream::unfold(Some(first), move |state| {
        let shared = Arc::clone(&shared);
        async move {
            let mut query = state?;
            match shared.store.page(&query).await {
                Ok(rows) => {
                    let full = rows.len() == query.limit as usize;
                    let mut chunk =
                        String::with_capacity(rows.iter().map(|r| r.record.len() + 1).sum());
                    for row in &rows {
                        chunk.push_str(&row.record);
                        chunk.push('\n');
                    }
                    let next = match (full, rows.last()) {
                        (true, Some(last)) => {
                            query.after = Some((last.time_ms, last.id));
                            Some(query)
                        }
                        _ => None,
                    };
                    Some((Ok::<_, std::io::Error>(Bytes::from(chunk)), next))
                }
                Err(e) => {
                    tracing::error!(target: "audit_store", "audit log export failed: {e}");
                    // Ends the stream with an error: the client sees a broken transfer, not a
                    // silently short export.
                    Some((Err(std::io::Error::other("audit log export failed")), None))
                }
            }
        }
    });
    let mut response = Response::new(Body::from_stream(pages));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/x-ndjson"),
    );
    response
}

async fn verify<S: ChainedStore>(
    State(shared): State<Arc<Shared<S>>>,
    Path(account_id): Path<String>,
    RawQuery(raw): RawQuery,
    parts: Parts,
) -> Response {
    if let Some(denied) = authorize(&shared, &parts, &account_id).await {
        return denied;
    }
    let span = match params::parse_span(raw.as_deref().unwrap_or("")) {
        Ok(span) => span,
        Err(e) => return error(StatusCode::BAD_REQUEST, 400, &e.to_string()),
    };
    let Some(verifier) = &shared.verifier else {
        return error(
            StatusCode::NOT_IMPLEMENTED,
            10501,
            "this audit log is not chained: tamper evidence is not enabled on its store",
        );
    };
    match crate::verify::verify(&shared.store, verifier, &account_id, span, &[]).await {
        Ok(report) => match serde_json::to_string(&report) {
            Ok(report) => json_response(format!(
                r#"{{"success":true,"errors":[],"messages":[],"result":{report}}}"#
            )),
            Err(e) => internal(&e.into()),
        },
        Err(e) => internal(&e),
    }
}

async fn one<S: ChainedStore>(
    State(shared): State<Arc<Shared<S>>>,
    Path((account_id, id)): Path<(String, String)>,
    parts: Parts,
) -> Response {
    if let Some(denied) = authorize(&shared, &parts, &account_id).await {
        return denied;
    }
    let Ok(id) = id.parse::<Uuid>() else {
        return error(
            StatusCode::BAD_REQUEST,
            400,
            "invalid audit log id in the path: expected a UUID",
        );
    };
    match shared.store.get(&account_id, id).await {
        Ok(Some(record)) => json_response(format!(
            r#"{{"success":true,"errors":[],"messages":[],"result":{record}}}"#
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
