//! Exports: every matching record streamed as NDJSON (one per line) or CSV (a header row,
//! then one row per record; see [`crate::export::csv_header`]), about a megabyte read at a
//! time and only as fast as the client takes it, with a cap on the exports of one account
//! running at once.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::body::Body;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::Response;
use bytes::Bytes;

use super::{Shared, error};
use crate::StoreError;
use crate::model::{Page, RecordQuery};
use crate::store::ChainedStore;

/// Records per statement of an export.
const EXPORT_PAGE: u32 = 1000;
/// Bytes of records per statement of an export: what one export holds at a time (the next
/// chunk is read only once the previous one was taken by the connection).
pub(super) const EXPORT_CHUNK_BYTES: usize = 1024 * 1024;

/// How an export writes its records.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Stream {
    /// The stored JSON, one record per line.
    Ndjson,
    /// CSV, with a header row.
    Csv,
}

/// The exports (or verifications) running, per account.
pub(super) struct Exports {
    per_account: usize,
    running: Arc<Mutex<HashMap<String, usize>>>,
}

/// One running export's place: given back when its stream is dropped (done, failed, or the
/// client gone).
pub(super) struct ExportSlot {
    account_id: String,
    running: Arc<Mutex<HashMap<String, usize>>>,
}

impl Exports {
    pub(super) fn new(per_account: usize) -> Self {
        Self {
            per_account,
            running: Arc::default(),
        }
    }

    /// A place for an export of `account_id`, if fewer than the cap are running.
    pub(super) fn enter(&self, account_id: &str) -> Option<ExportSlot> {
        let mut running = self.running.lock().unwrap_or_else(|e| e.into_inner());
        let count = running.entry(account_id.to_owned()).or_default();
        if *count >= self.per_account {
            return None;
        }
        *count += 1;
        Some(ExportSlot {
            account_id: account_id.to_owned(),
            running: Arc::clone(&self.running),
        })
    }
}

impl Drop for ExportSlot {
    fn drop(&mut self) {
        let mut running = self.running.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(count) = running.get_mut(&self.account_id) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                running.remove(&self.account_id);
            }
        }
    }
}

/// Streams every record matching `first` as `stream` says, or answers 429 when the account
/// has as many exports running as it may.
pub(super) fn export<S: ChainedStore>(
    shared: Arc<Shared<S>>,
    mut first: RecordQuery,
    stream: Stream,
) -> Response {
    let Some(slot) = shared.exports.enter(&first.account_id) else {
        let mut response = error(
            StatusCode::TOO_MANY_REQUESTS,
            10429,
            &format!(
                "too many exports of this account's audit log at once (at most {}): wait for \
                 one to finish, or read the log page by page with 'cursor'",
                shared.exports.per_account
            ),
        );
        let headers = response.headers_mut();
        headers.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        // The refused client gets its answer and the connection ends: nothing held for it.
        headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
        return response;
    };
    first.limit = EXPORT_PAGE;
    first.max_bytes = Some(EXPORT_CHUNK_BYTES);
    let pages = futures_util::stream::unfold(Some((first, slot)), move |state| {
        let shared = Arc::clone(&shared);
        async move {
            let (mut query, slot) = state?;
            match shared.store.page(&query).await {
                Ok(Page { rows, cut }) => {
                    let more = cut || rows.len() == query.limit as usize;
                    let mut chunk =
                        String::with_capacity(rows.iter().map(|r| r.record.len() + 1).sum());
                    if stream == Stream::Csv && query.after.is_none() {
                        chunk.push_str(&crate::export::csv_header());
                    }
                    for row in &rows {
                        match stream {
                            Stream::Ndjson => {
                                chunk.push_str(&super::names::current(&row.record));
                                chunk.push('\n');
                            }
                            Stream::Csv => {
                                if let Err(e) = crate::export::write_csv_row(row, &mut chunk) {
                                    tracing::error!(target: "audit_store", "audit log export failed: {e}");
                                    return Some((
                                        Err(std::io::Error::other("audit log export failed")),
                                        None,
                                    ));
                                }
                            }
                        }
                    }
                    let next = match (more, rows.last()) {
                        (true, Some(last)) => {
                            query.after = Some((last.time_ms, last.id));
                            Some((query, slot))
                        }
                        _ => None,
                    };
                    Some((Ok::<_, std::io::Error>(Bytes::from(chunk)), next))
                }
                Err(e) => {
                    match &e {
                        StoreError::StatementTimeout(limit) => tracing::warn!(
                            target: "audit_store",
                            "audit log export of {:?} stopped at its time limit of {limit:?}",
                            query.account_id
                        ),
                        _ => tracing::error!(target: "audit_store", "audit log export failed: {e}"),
                    }
                    // Ends the stream with an error: the client sees a broken transfer, not a
                    // silently short export.
                    Some((Err(std::io::Error::other("audit log export failed")), None))
                }
            }
        }
    });
    let mut response = Response::new(Body::from_stream(pages));
    let headers = response.headers_mut();
    match stream {
        Stream::Ndjson => {
            headers.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/x-ndjson"),
            );
        }
        Stream::Csv => {
            headers.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/csv; charset=utf-8"),
            );
            headers.insert(
                header::CONTENT_DISPOSITION,
                HeaderValue::from_static("attachment; filename=\"audit-log.csv\""),
            );
        }
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_account_has_at_most_its_cap_of_exports_and_a_finished_one_frees_its_place() {
        let exports = Exports::new(2);
        let a = exports.enter("acc");
        let b = exports.enter("acc");
        assert!(a.is_some() && b.is_some());
        assert!(
            exports.enter("acc").is_none(),
            "a third export of one account"
        );
        assert!(
            exports.enter("other").is_some(),
            "other accounts are not held up"
        );
        drop(a);
        assert!(
            exports.enter("acc").is_some(),
            "a finished export frees its place"
        );
    }
}
