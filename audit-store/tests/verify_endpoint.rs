//! The verify endpoint against an insider (issue 18): it consults the checkpoints kept
//! outside the database when configured, and an account whose head row, or whose records,
//! head and stored checkpoints were deleted does not verify ok. SQLite and PostgreSQL
//! (`backend_tests!`).

#[macro_use]
mod common;

use audit_store::chain::{ChainKeys, ChainSecret, CheckpointSink as _, JsonLinesCheckpoints};
use audit_store::query::{Access, AuditLogRouter};
use audit_store::store::AuditStore;
use axum::Router;
use axum::body::Body;
use http::{Request, StatusCode};
use http_body_util::BodyExt;
use serde_json::Value;
use tower::ServiceExt;

use common::{BASE_MS, Chainable, Fixture, TestResult, record, rows};

backend_tests!(
    the_verify_endpoint_consults_the_checkpoints_kept_outside,
    a_deleted_head_row_does_not_verify_ok,
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
