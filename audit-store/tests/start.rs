//! `AuditLog`, the one-call start: an app's requests, through the layer it hands out, are
//! stored by the pipeline it runs and read back through the router it builds; `shutdown`
//! flushes what the layer and the pipeline still hold. On SQLite, and on PostgreSQL in a
//! schema of the test's own.

mod common;

use std::time::Duration;

use audit_layer::{AuditHandle, AuditLayer, AuditPolicy, Identity, Operation};
use audit_store::AuditLog;
use audit_store::query::Access;
use audit_store::store::{ChainedStore, TableNames};
use axum::Router;
use axum::body::Body;
use axum::routing::put;
use common::{TEST_TIMEOUT, TestResult, time_limit};
use http::{Method, Request, StatusCode};
use tower::ServiceExt as _;
use uuid::Uuid;

fn policy() -> TestResult<AuditPolicy> {
    Ok(AuditPolicy::builder()
        .operation(
            Operation::new(Method::PUT, "/accounts/{account_id}/widgets/{widget_id}")
                .summary("Update a widget"),
        )
        .build()?)
}

async fn update(audit: AuditHandle) -> &'static str {
    audit.identify(Identity::user("usr_start").account("acc_start"));
    "{}"
}

/// The bearer token that may read `account`'s log.
fn authorize(parts: &http::request::Parts, account: &str) -> Access {
    match parts
        .headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
    {
        None => Access::Unauthenticated,
        Some(token) if token == format!("Bearer reader-of-{account}") => Access::Allowed,
        Some(_) => Access::Denied,
    }
}

async fn call(app: &Router, request: Request<Body>) -> TestResult<(StatusCode, String)> {
    let response = app.clone().oneshot(request).await?;
    let status = response.status();
    let body = axum::body::to_bytes(response.into_body(), 1 << 20).await?;
    Ok((status, String::from_utf8(body.to_vec())?))
}

/// Serves `n` audited requests through an app built from `audit`, shuts it down, and checks
/// that every record was stored and reads back through the router.
async fn requests_are_stored_and_read_back<S: ChainedStore>(audit: AuditLog<S>) -> TestResult {
    let app: Router = Router::new()
        .route("/accounts/{account_id}/widgets/{widget_id}", put(update))
        .merge(audit.router())
        .layer(audit.layer(AuditLayer::new(policy()?)));
    for i in 0..3 {
        let request =
            Request::put(format!("/accounts/acc_start/widgets/w{i}")).body(Body::empty())?;
        assert_eq!(call(&app, request).await?.0, StatusCode::OK);
    }
    // Not yet flushed, perhaps: shutdown writes everything accepted.
    let store = audit.store().clone();
    let metrics = audit.shutdown().await;
    assert_eq!(metrics.stored, 3, "{metrics:?}");
    assert_eq!(store.count().await?, 3);

    let list = "/accounts/acc_start/logs/audit?since=2000-01-01&before=2100-01-01";
    let (status, _) = call(&app, Request::get(list).body(Body::empty())?).await?;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, body) = call(
        &app,
        Request::get(list)
            .header("authorization", "Bearer reader-of-acc_start")
            .body(Body::empty())?,
    )
    .await?;
    assert_eq!(status, StatusCode::OK, "{body}");
    let page: serde_json::Value = serde_json::from_str(&body)?;
    let records = page["result"].as_array().ok_or("no result")?;
    assert_eq!(records.len(), 3);
    assert!(records.iter().all(|r| r["actor"]["id"] == "usr_start"));
    assert_eq!(records[0]["action"]["description"], "Update a widget");
    Ok(())
}

#[tokio::test]
async fn sqlite_one_call_stores_what_the_layer_records_and_shutdown_flushes() -> TestResult {
    time_limit(TEST_TIMEOUT, async {
        let dir = tempfile::tempdir()?;
        let spool = dir.path().join("spool");
        let audit = AuditLog::sqlite(dir.path().join("audit.db"))
            .authorizer(authorize)
            .pipeline(move |p| {
                // A flush interval longer than the test: only shutdown writes the records.
                p.flush_interval(Duration::from_secs(60))
                    .batch_size(100)
                    .spool(spool, 1 << 20)
            })
            .table_names(TableNames::new().prefix("app_audit_")?)
            .start()
            .await?;
        assert_eq!(audit.store().names().logs(), "app_audit_logs");
        requests_are_stored_and_read_back(audit).await
    })
    .await
}

#[tokio::test]
async fn without_an_authorizer_the_router_serves_no_one() -> TestResult {
    time_limit(TEST_TIMEOUT, async {
        let dir = tempfile::tempdir()?;
        let audit = AuditLog::sqlite(dir.path().join("audit.db"))
            .start()
            .await?;
        let (status, _) = call(
            &audit.router(),
            Request::get("/accounts/a/logs/audit?since=2000-01-01&before=2100-01-01")
                .header("authorization", "Bearer anything")
                .body(Body::empty())?,
        )
        .await?;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        audit.shutdown().await;
        Ok(())
    })
    .await
}

#[tokio::test]
async fn a_bad_start_says_what_failed() -> TestResult {
    time_limit(TEST_TIMEOUT, async {
        let dir = tempfile::tempdir()?;
        let e = AuditLog::sqlite(dir.path().join("audit.db"))
            .table_names(TableNames::new().schema("audit")?)
            .start()
            .await
            .unwrap_err();
        assert!(
            e.to_string().contains("a SQLite store has no schema"),
            "{e}"
        );
        Ok(())
    })
    .await
}

#[tokio::test]
async fn postgres_one_call_stores_what_the_layer_records_and_shutdown_flushes() -> TestResult {
    let Some(url) = common::postgres_url() else {
        return Ok(());
    };
    time_limit(TEST_TIMEOUT, async {
        let schema = format!("adopt_start_{}", Uuid::now_v7().simple());
        let audit = AuditLog::postgres(url.clone())
            .authorizer(authorize)
            .table_names(TableNames::new().schema(&schema)?)
            .chained(audit_store::chain::ChainKeys::from_secret(
                &audit_store::chain::ChainSecret::from_hex(&"cd".repeat(32))?,
            ))
            .start()
            .await;
        let outcome = match audit {
            Ok(audit) => requests_are_stored_and_read_back(audit).await,
            Err(e) => Err(e.into()),
        };
        let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(&url).await?;
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "DROP SCHEMA IF EXISTS {schema} CASCADE"
        )))
        .execute(&mut conn)
        .await?;
        outcome
    })
    .await
}

/// Under a prefix, the router serves exactly the paths its description lists.
#[tokio::test]
async fn the_router_serves_under_its_prefix_the_paths_its_description_lists() -> TestResult {
    time_limit(TEST_TIMEOUT, async {
        let dir = tempfile::tempdir()?;
        let audit = AuditLog::sqlite(dir.path().join("audit.db"))
            .authorizer(authorize)
            .router(|r| r.prefix("/client/v4"))
            .start()
            .await?;
        let router = audit.router();
        let doc = audit_store::query::openapi("/client/v4");
        assert_eq!(doc.paths.paths.len(), 6);
        for (path, item) in &doc.paths.paths {
            let get = item.get.as_ref().ok_or("a GET operation")?;
            assert_eq!(
                get.tags.as_deref(),
                Some(&[audit_store::query::TAG.to_owned()][..])
            );
            let uri = format!(
                "{}?since=2000-01-01&before=2100-01-01",
                path.replace("{account_id}", "acc_start")
                    .replace("{id}", &Uuid::nil().to_string())
            );
            let request = Request::get(&uri)
                .header("authorization", "Bearer reader-of-acc_start")
                .body(Body::empty())?;
            let (status, body) = call(&router, request).await?;
            let envelope: serde_json::Value = serde_json::from_str(&body)?;
            // Served by the router: its envelope, whatever the answer (a missing record is a
            // 404 in the envelope; an unchained log's verify a 501).
            assert!(envelope.get("success").is_some(), "{uri}: {status} {body}");
            let declared = get.responses.responses.contains_key(status.as_str());
            assert!(declared, "{uri}: {status} is not declared");
        }
        let unprefixed =
            Request::get("/accounts/acc_start/logs/audit?since=2000-01-01&before=2100-01-01")
                .header("authorization", "Bearer reader-of-acc_start")
                .body(Body::empty())?;
        assert_eq!(call(&router, unprefixed).await?.0, StatusCode::NOT_FOUND);
        audit.shutdown().await;
        Ok(())
    })
    .await
}

#[tokio::test]
#[should_panic(expected = "invalid audit log router prefix \"/v4/\"")]
async fn a_bad_prefix_is_refused_at_start_up() {
    let pool = sqlx::sqlite::SqlitePool::connect_lazy("sqlite::memory:").unwrap();
    let _ = audit_store::query::AuditLogRouter::new(
        audit_store::SqliteStore::new(pool),
        |_: &http::request::Parts, _: &str| Access::Allowed,
    )
    .prefix("/v4/");
}

/// Dropped without `shutdown` while the runtime runs on, the log still writes what it took.
#[tokio::test]
async fn dropped_without_shutdown_it_still_writes_what_it_accepted() -> TestResult {
    time_limit(TEST_TIMEOUT, async {
        let dir = tempfile::tempdir()?;
        let audit = AuditLog::sqlite(dir.path().join("audit.db"))
            .pipeline(|p| p.flush_interval(Duration::from_secs(60)).batch_size(100))
            .start()
            .await?;
        let app: Router = Router::new()
            .route("/accounts/{account_id}/widgets/{widget_id}", put(update))
            .layer(audit.layer(AuditLayer::new(policy()?)));
        for i in 0..2 {
            let request = Request::put(format!("/accounts/a/widgets/w{i}")).body(Body::empty())?;
            assert_eq!(call(&app, request).await?.0, StatusCode::OK);
        }
        let store = audit.store().clone();
        drop(audit);
        common::until_count(&store, 2).await
    })
    .await
}
