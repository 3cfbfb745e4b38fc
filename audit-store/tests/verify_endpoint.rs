//! The verify endpoint against an insider (issue 18): it consults the checkpoints kept
//! outside the database when configured, and an account whose head row, or whose records,
//! head and stored checkpoints were deleted does not verify ok. SQLite and PostgreSQL
//! (`backend_tests!`).

#[macro_use]
mod common;

use audit_store::chain::{ChainKeys, ChainSecret, CheckpointSink as _, JsonLinesCheckpoints};
use audit_store::model::ChainScope;
use audit_store::query::{Access, AuditLogRouter};
use audit_store::store::intercept::{Intercepted, Interceptor};
use audit_store::store::{AuditStore, ChainedStore, LinkScan};
use axum::Router;
use axum::body::Body;
use futures_util::StreamExt as _;
use http::{Request, StatusCode};
use http_body_util::BodyExt;
use serde_json::Value;
use tower::ServiceExt;

use common::{BASE_MS, Chainable, Fixture, TestResult, record, rows};

backend_tests!(
    the_verify_endpoint_consults_the_checkpoints_kept_outside,
    a_deleted_head_row_does_not_verify_ok,
    verifications_are_bounded_in_number_and_time,
);

fn keys() -> ChainKeys {
    ChainKeys::from_secret(&ChainSecret::from_bytes([5; 32]))
}

fn allow(_: &http::request::Parts, _: &str) -> Access {
    Access::Allowed
}

/// `/verify` of `account`: its `result`.
async fn verified(router: &Router, account: &str) -> TestResult<Value> {
    let request =
        Request::get(format!("/accounts/{account}/logs/audit/verify")).body(Body::empty())?;
    let response = router.clone().oneshot(request).await?;
    assert_eq!(response.status(), StatusCode::OK);
    let body: Value = serde_json::from_slice(&response.into_body().collect().await?.to_bytes())?;
    Ok(body["result"].clone())
}

async fn fill<S: AuditStore>(store: &S, account: &str) -> TestResult {
    let records: Vec<_> = (0..20)
        .map(|i| record(Some(account), BASE_MS + i * 1000))
        .collect();
    store.insert(&rows(&records)?).await?;
    Ok(())
}

async fn the_verify_endpoint_consults_the_checkpoints_kept_outside<S: Chainable>(
    fx: &Fixture<S>,
) -> TestResult {
    let dir = tempfile::tempdir()?;
    let file = JsonLinesCheckpoints::new(dir.path().join("checkpoints.jsonl"));
    let store = fx.store.with_chain(keys());
    fill(&store, "acc_gone").await?;
    fill(&store, "acc_cut").await?;
    file.publish(&store.checkpoint(BASE_MS + 60_000).await?)
        .await?;
    let outside = AuditLogRouter::new(store.clone(), allow)
        .external_checkpoints(file.clone())
        .into_router();
    let inside = AuditLogRouter::new(store.clone(), allow).into_router();
    for account in ["acc_gone", "acc_cut"] {
        let result = verified(&outside, account).await?;
        assert_eq!(result["outcome"], "ok", "{result}");
    }

    // An insider deletes every record of one account, the newest five of another, the heads
    // to match and every stored checkpoint.
    for sql in [
        "DELETE FROM audit_logs WHERE account_id = 'acc_gone'",
        "DELETE FROM audit_chain_heads WHERE chain = 'acc_gone'",
        "DELETE FROM audit_logs WHERE account_id = 'acc_cut' AND chain_seq > 15",
        "UPDATE audit_chain_heads SET seq = 15 WHERE chain = 'acc_cut'",
        "DELETE FROM audit_checkpoints",
    ] {
        fx.db.exec(sql).await?;
    }
    for (account, seq) in [("acc_gone", 1), ("acc_cut", 16)] {
        let result = verified(&outside, account).await?;
        assert_eq!(
            (
                result["outcome"].clone(),
                result["broken"]["kind"].clone(),
                result["broken"]["seq"].clone()
            ),
            ("broken".into(), "truncated".into(), seq.into()),
            "{result}"
        );
        // Without them, nothing proves it; and nothing says ok either.
        let result = verified(&inside, account).await?;
        assert_eq!(result["outcome"], "unverifiable", "{result}");
        assert_eq!(result["ok"], false);
    }
    // A file of checkpoints that cannot be read fails the verification, loudly.
    std::fs::write(file.path(), "{\"account_id\":\"acc_cut\",\"seq\":\"x\"}\n")?;
    let request = Request::get("/accounts/acc_cut/logs/audit/verify").body(Body::empty())?;
    let response = outside.clone().oneshot(request).await?;
    assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
    Ok(())
}

async fn a_deleted_head_row_does_not_verify_ok<S: Chainable>(fx: &Fixture<S>) -> TestResult {
    let store = fx.store.with_chain(keys());
    fill(&store, "acc_headless").await?;
    store.checkpoint(BASE_MS + 60_000).await?;
    fx.db
        .exec("DELETE FROM audit_chain_heads WHERE chain = 'acc_headless'")
        .await?;
    let router = AuditLogRouter::new(store, allow).into_router();
    let result = verified(&router, "acc_headless").await?;
    assert_eq!(result["outcome"], "broken", "{result}");
    assert_eq!(result["broken"]["kind"], "head_missing", "{result}");
    Ok(())
}

/// A store whose full-chain scans (a verification without `since`/`before`) take its
/// duration per chunk: a long chain on a slow disk.
#[derive(Clone)]
struct SlowScan(std::time::Duration);

impl Interceptor for SlowScan {
    fn chain_scan<S: ChainedStore>(&self, inner: &S, scope: ChainScope) -> LinkScan {
        let wait = self.0;
        inner
            .chain_scan(scope)
            .then(move |chunk| async move {
                tokio::time::sleep(wait).await;
                chunk
            })
            .boxed()
    }
}

/// The answer's status and its first error message.
async fn status_and_message(router: &Router, uri: &str) -> TestResult<(StatusCode, String)> {
    let response = router
        .clone()
        .oneshot(Request::get(uri).body(Body::empty())?)
        .await?;
    let status = response.status();
    let body: Value = serde_json::from_slice(&response.into_body().collect().await?.to_bytes())?;
    Ok((
        status,
        body["errors"][0]["message"]
            .as_str()
            .unwrap_or("")
            .to_owned(),
    ))
}

/// A verification reads a whole chain and holds a connection while it does: one account
/// cannot run two at once, all accounts together no more than the router allows, and none
/// runs past its time limit. Other reads go on meanwhile.
async fn verifications_are_bounded_in_number_and_time<S: Chainable>(fx: &Fixture<S>) -> TestResult {
    use std::time::Duration;

    let store = fx.store.with_chain(keys());
    fill(&store, "acc_1").await?;
    fill(&store, "acc_2").await?;
    store.checkpoint(BASE_MS + 60_000).await?;
    let slow = Intercepted::new(store, SlowScan(Duration::from_millis(1500)));

    // Past the time limit: a 422 that says to verify a shorter range.
    let limited = AuditLogRouter::new(slow.clone(), allow)
        .verify_time_limit(Some(Duration::from_millis(200)))
        .into_router();
    let (status, message) =
        status_and_message(&limited, "/accounts/acc_1/logs/audit/verify").await?;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{message}");
    assert!(
        message.contains("time limit") && message.contains("'since'"),
        "{message}"
    );

    // One at a time in all here: while acc_1's runs, a second of acc_1 and one of acc_2 are
    // refused with 429, and a page of acc_2 is served.
    let router = AuditLogRouter::new(slow, allow)
        .verifications_at_once(1)
        .into_router();
    let running = tokio::spawn({
        let router = router.clone();
        async move { status_and_message(&router, "/accounts/acc_1/logs/audit/verify").await }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (status, message) =
        status_and_message(&router, "/accounts/acc_1/logs/audit/verify").await?;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{message}");
    assert!(message.contains("already running"), "{message}");
    let (status, message) =
        status_and_message(&router, "/accounts/acc_2/logs/audit/verify").await?;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{message}");
    // BASE_MS is 2025-03-10T09:00:00Z.
    let page = "/accounts/acc_2/logs/audit?since=2025-03-10&before=2025-03-11";
    let (status, message) = status_and_message(&router, page).await?;
    assert_eq!(status, StatusCode::OK, "{message}");
    let (status, message) = running.await??;
    assert_eq!(status, StatusCode::OK, "{message}");
    // Its place is given back: the next verification runs.
    let (status, message) =
        status_and_message(&router, "/accounts/acc_2/logs/audit/verify").await?;
    assert_eq!(status, StatusCode::OK, "{message}");
    Ok(())
}
