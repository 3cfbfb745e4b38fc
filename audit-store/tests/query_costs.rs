//! What one caller of the audit log API can make the server hold or the database do, whatever
//! the records weigh (issue 18, "Query costs"): a page ends at its byte budget with a cursor
//! to the rest, an export streams a chunk at a time, an account has at most two exports
//! running, and a filter no index serves stops at the statement time limit with an error
//! that says so. The same tests on SQLite and PostgreSQL (`backend_tests!`).

#[macro_use]
mod common;

use std::time::Duration;

use audit_store::model::StoredRecord;
use audit_store::query::{Access, AuditLogRouter};
use audit_store::store::{AuditStore, ChainedStore};
use axum::Router;
use axum::body::Body;
use http::{Request, StatusCode, header};
use http_body_util::BodyExt;
use serde_json::Value;
use tower::ServiceExt;

use common::{BASE_MS, Fixture, TestResult, record, rows};

backend_tests!(
    a_page_of_huge_records_ends_at_its_byte_budget_with_a_cursor_to_the_rest,
    an_export_of_huge_records_comes_a_chunk_at_a_time,
    a_third_export_of_one_account_at_once_is_refused_with_429,
    a_filter_no_index_serves_stops_at_the_time_limit_with_a_clear_error,
);

const ACCOUNT: &str = "acc_big";
const RANGE: &str = "since=2025-03-01&before=2025-04-01";

fn authorize(_: &http::request::Parts, account: &str) -> Access {
    if account == ACCOUNT || account == "acc_other" {
        Access::Allowed
    } else {
        Access::Denied
    }
}

/// `n` records of `account`, each about `bytes` long (a user agent of that size, written into
/// the stored JSON directly: what a store holds from before the layer capped strings).
async fn huge<S: AuditStore>(store: &S, account: &str, n: usize, bytes: usize) -> TestResult {
    let agent = "u".repeat(bytes);
    let mut stored: Vec<StoredRecord> = Vec::new();
    for i in 0..n {
        let mut row = rows(&[record(Some(account), BASE_MS + i as i64 * 1000)])?.remove(0);
        let mut json: Value = serde_json::from_str(&row.record)?;
        json["raw"]["user_agent"] = Value::String(agent.clone());
        row.record = serde_json::to_string(&json)?;
        stored.push(row);
    }
    for chunk in stored.chunks(8) {
        store.insert(chunk).await?;
    }
    Ok(())
}

async fn get(router: &Router, uri: &str, ndjson: bool) -> TestResult<http::Response<Body>> {
    let mut request = Request::get(uri);
    if ndjson {
        request = request.header(header::ACCEPT, "application/x-ndjson");
    }
    Ok(router.clone().oneshot(request.body(Body::empty())?).await?)
}

async fn body_of(response: http::Response<Body>) -> TestResult<(StatusCode, Vec<u8>)> {
    let status = response.status();
    let body = response.into_body().collect().await?.to_bytes().to_vec();
    Ok((status, body))
}

async fn a_page_of_huge_records_ends_at_its_byte_budget_with_a_cursor_to_the_rest<
    S: ChainedStore,
>(
    fx: &Fixture<S>,
) -> TestResult {
    huge(&fx.store, ACCOUNT, 24, 512 * 1024).await?;
    let budget = 4 * 1024 * 1024;
    let router = AuditLogRouter::new(fx.store.clone(), authorize)
        .page_bytes(budget)
        .into_router();
    let mut seen = std::collections::HashSet::new();
    let mut cursor: Option<String> = None;
    let mut pages = 0;
    loop {
        let mut uri = format!("/accounts/{ACCOUNT}/logs/audit?{RANGE}&limit=1000");
        if let Some(c) = &cursor {
            uri.push_str(&format!("&cursor={c}"));
        }
        let (status, body) = body_of(get(&router, &uri, false).await?).await?;
        assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
        assert!(
            body.len() <= budget,
            "page {pages} is {} bytes, over its budget of {budget}",
            body.len()
        );
        let page: Value = serde_json::from_slice(&body)?;
        let records = page["result"].as_array().ok_or("a page")?;
        assert!(!records.is_empty(), "every page makes progress");
        assert_eq!(page["result_info"]["count"], records.len());
        for r in records {
            assert!(
                seen.insert(r["id"].as_str().ok_or("an id")?.to_owned()),
                "a record came twice"
            );
        }
        pages += 1;
        match page["result_info"]["cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => break,
        }
    }
    assert_eq!(seen.len(), 24, "every record, once");
    assert!(
        pages >= 3,
        "12 MiB of records in pages of 4 MiB: {pages} pages"
    );

    // A single record larger than the budget still comes, alone, with a cursor after it.
    let router = AuditLogRouter::new(fx.store.clone(), authorize)
        .page_bytes(1024)
        .into_router();
    let uri = format!("/accounts/{ACCOUNT}/logs/audit?{RANGE}&limit=5");
    let (status, body) = body_of(get(&router, &uri, false).await?).await?;
    assert_eq!(status, StatusCode::OK);
    let page: Value = serde_json::from_slice(&body)?;
    assert_eq!(page["result_info"]["count"], 1);
    assert!(page["result_info"]["cursor"].is_string());
    Ok(())
}

async fn an_export_of_huge_records_comes_a_chunk_at_a_time<S: ChainedStore>(
    fx: &Fixture<S>,
) -> TestResult {
    huge(&fx.store, ACCOUNT, 12, 512 * 1024).await?;
    let router = AuditLogRouter::new(fx.store.clone(), authorize).into_router();
    let uri = format!("/accounts/{ACCOUNT}/logs/audit?{RANGE}");
    let response = get(&router, &uri, true).await?;
    assert_eq!(response.status(), StatusCode::OK);
    let mut body = response.into_body();
    let (mut text, mut largest, mut chunks) = (Vec::new(), 0, 0);
    while let Some(frame) = body.frame().await {
        if let Ok(data) = frame?.into_data() {
            largest = largest.max(data.len());
            chunks += 1;
            text.extend_from_slice(&data);
        }
    }
    // About a megabyte at a time: two records of half a megabyte, and the start of a third.
    assert!(
        largest <= 3 * 512 * 1024,
        "an export chunk of {largest} bytes"
    );
    assert!(chunks >= 4, "6 MiB in {chunks} chunks");
    let lines: Vec<&[u8]> = text
        .split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .collect();
    assert_eq!(lines.len(), 12, "every record, one per line");
    for line in lines {
        serde_json::from_slice::<Value>(line)?;
    }
    Ok(())
}

async fn a_third_export_of_one_account_at_once_is_refused_with_429<S: ChainedStore>(
    fx: &Fixture<S>,
) -> TestResult {
    huge(&fx.store, ACCOUNT, 4, 1024).await?;
    huge(&fx.store, "acc_other", 4, 1024).await?;
    let router = AuditLogRouter::new(fx.store.clone(), authorize).into_router();
    let uri = |account: &str| format!("/accounts/{account}/logs/audit?{RANGE}");
    // Two exports started, their bodies not read yet.
    let first = get(&router, &uri(ACCOUNT), true).await?;
    let second = get(&router, &uri(ACCOUNT), true).await?;
    assert_eq!(
        (first.status(), second.status()),
        (StatusCode::OK, StatusCode::OK)
    );

    let third = get(&router, &uri(ACCOUNT), true).await?;
    assert_eq!(
        third
            .headers()
            .get(header::CONNECTION)
            .map(|v| v.as_bytes()),
        Some(&b"close"[..])
    );
    let (status, body) = body_of(third).await?;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    let body: Value = serde_json::from_slice(&body)?;
    let message = body["errors"][0]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("at most 2") && message.contains("cursor"),
        "{body}"
    );
    assert_eq!(body["success"], false);
    // Another account is not held up, nor is a page of this one.
    assert_eq!(
        get(&router, &uri("acc_other"), true).await?.status(),
        StatusCode::OK
    );
    assert_eq!(
        get(&router, &uri(ACCOUNT), false).await?.status(),
        StatusCode::OK
    );

    // One finishes (read to its end): the next export runs.
    let (status, _) = body_of(first).await?;
    assert_eq!(status, StatusCode::OK);
    let next = get(&router, &uri(ACCOUNT), true).await?;
    assert_eq!(next.status(), StatusCode::OK);
    // One abandoned (its body dropped, the client gone) frees its place too.
    drop(second);
    drop(next);
    let (a, b) = (
        get(&router, &uri(ACCOUNT), true).await?,
        get(&router, &uri(ACCOUNT), true).await?,
    );
    assert_eq!((a.status(), b.status()), (StatusCode::OK, StatusCode::OK));
    Ok(())
}

async fn a_filter_no_index_serves_stops_at_the_time_limit_with_a_clear_error<S: ChainedStore>(
    fx: &Fixture<S>,
) -> TestResult {
    // Enough records that searching them all for a URI takes longer than a millisecond.
    let template = rows(&[record(Some(ACCOUNT), BASE_MS)])?.remove(0);
    let template_id = template.id.to_string();
    for start in (0..40_000).step_by(10_000) {
        let chunk: Vec<StoredRecord> = (start..start + 10_000)
            .map(|i| {
                let mut row = template.clone();
                row.id = uuid::Uuid::now_v7();
                row.time_ms = BASE_MS + i as i64;
                row.record = template.record.replace(&template_id, &row.id.to_string());
                row
            })
            .collect();
        fx.store.insert(&chunk).await?;
    }
    let uri = format!("/accounts/{ACCOUNT}/logs/audit?{RANGE}&raw_uri=/nowhere");
    let strict = AuditLogRouter::new(fx.store.clone(), authorize)
        .statement_timeout(Some(Duration::from_millis(1)))
        .into_router();
    let (status, body) = body_of(get(&strict, &uri, false).await?).await?;
    assert_eq!(
        status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "{}",
        String::from_utf8_lossy(&body)
    );
    let body: Value = serde_json::from_slice(&body)?;
    let message = body["errors"][0]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("time limit")
            && message.contains("'raw_uri'")
            && message.contains("narrow 'since'"),
        "{message}"
    );
    // An export stopped at the limit ends broken, not silently short.
    let response = get(&strict, &uri, true).await?;
    assert_eq!(response.status(), StatusCode::OK);
    assert!(response.into_body().collect().await.is_err());

    // The connection that was stopped is fine for the next query, and within the default
    // limit the same search answers.
    let relaxed = AuditLogRouter::new(fx.store.clone(), authorize).into_router();
    for _ in 0..3 {
        let (status, body) = body_of(get(&relaxed, &uri, false).await?).await?;
        assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
        let body: Value = serde_json::from_slice(&body)?;
        assert_eq!(body["result_info"]["count"], 0);
    }
    let indexed = format!("/accounts/{ACCOUNT}/logs/audit?{RANGE}&limit=5");
    let (status, _) = body_of(get(&strict, &indexed, false).await?).await?;
    assert!(
        status == StatusCode::OK || status == StatusCode::UNPROCESSABLE_ENTITY,
        "{status}"
    );
    Ok(())
}
