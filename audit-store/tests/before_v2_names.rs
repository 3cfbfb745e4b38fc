//! An audit database written before records took the v2 API's names (commit `e904ca3`:
//! `raw.ray_id`, the token only as `actor.token`) is served under the current names
//! (`raw.cf_ray_id`, `actor.token_id`, `actor.token_name`) by every read of the query router,
//! its rows are not rewritten, and its chain still verifies.
//!
//! `fixtures/before-v2-names/audit.sql` is that database, dumped; `make.sh` beside it says how
//! it was made (the demo app of that commit, a few requests, then a dump).

mod common;

use audit_store::SqliteStore;
use audit_store::chain::{ChainKeys, ChainSecret};
use audit_store::query::{Access, AuditLogRouter};
use audit_store::store::AuditStore;
use axum::Router;
use http::StatusCode;
use serde_json::Value;
use sqlx::{AssertSqlSafe, Row};

use common::TestResult;

/// The fixture's chain secret and admin token (`make.sh`): test values that guard nothing.
const SECRET: &str = "0101010101010101010101010101010101010101010101010101010101010101";
const ACCOUNT: &str = "acc_demo";
const RANGE: &str = "since=2020-01-01&before=2100-01-01";

/// A store holding the fixture, migrated by the current code, chained with its keys.
async fn fixture(dir: &tempfile::TempDir) -> TestResult<SqliteStore> {
    let store = SqliteStore::open(dir.path().join("audit.db")).await?;
    let dump = include_str!("fixtures/before-v2-names/audit.sql");
    sqlx::raw_sql(AssertSqlSafe(dump))
        .execute(store.pool())
        .await?;
    store.migrate().await?;
    Ok(store.chained(ChainKeys::from_secret(&ChainSecret::from_hex(SECRET)?)))
}

fn allow(_: &http::request::Parts, _: &str) -> Access {
    Access::Allowed
}

async fn get(router: &Router, uri: &str, accept: Option<&str>) -> TestResult<(StatusCode, String)> {
    let reply = common::get(router, uri, &[(http::header::ACCEPT, accept)]).await?;
    Ok((reply.status, String::from_utf8(reply.body.to_vec())?))
}

/// A record as served: the current names, valid by the schema, the token twice alike.
fn assert_current(record: &Value) {
    let raw = &record["raw"];
    assert!(raw["cf_ray_id"].is_string(), "{record:#}");
    assert!(raw.get("ray_id").is_none(), "{record:#}");
    let actor = &record["actor"];
    assert_eq!(
        actor.get("token_id"),
        actor["token"].get("id"),
        "{record:#}"
    );
    assert_eq!(
        actor.get("token_name"),
        actor["token"].get("name"),
        "{record:#}"
    );
    audit_layer::schema::validate_json(record).unwrap_or_else(|e| panic!("{e}: {record:#}"));
}

#[tokio::test]
async fn records_written_before_the_v2_names_are_served_under_them_and_still_verify() -> TestResult
{
    let dir = tempfile::tempdir()?;
    let store = fixture(&dir).await?;
    let stored: Vec<String> = sqlx::query("SELECT record FROM audit_logs ORDER BY time_ms, id")
        .fetch_all(store.pool())
        .await?
        .iter()
        .map(|row| row.get(0))
        .collect();
    assert!(
        stored.len() >= 5,
        "the fixture holds the requests of make.sh"
    );
    assert!(
        stored
            .iter()
            .all(|r| r.contains(r#""ray_id":"#) && !r.contains("cf_ray_id")),
        "the fixture was written with the previous names"
    );
    let router = AuditLogRouter::new(store.clone(), allow).into_router();

    // A page: every record under the current names; the token of the API token's requests
    // by both names.
    let (status, body) = get(
        &router,
        &format!("/accounts/{ACCOUNT}/logs/audit?{RANGE}&limit=1000"),
        None,
    )
    .await?;
    assert_eq!(status, StatusCode::OK, "{body}");
    let page: Value = serde_json::from_str(&body)?;
    let records = page["result"].as_array().ok_or("no result")?;
    assert!(records.len() >= 4, "{body}");
    records.iter().for_each(assert_current);
    let with_token: Vec<&Value> = records
        .iter()
        .filter(|r| r["actor"]["context"] == "api_token")
        .collect();
    assert!(!with_token.is_empty(), "{body}");
    for record in &with_token {
        assert_eq!(
            record["actor"]["token_name"], "demo admin token",
            "{record:#}"
        );
    }
    assert!(
        records.iter().any(|r| r["actor"]["context"] == "dash"),
        "the session's records too: {body}"
    );

    // Filtering by the ray id under either parameter name finds the record.
    let update = with_token
        .iter()
        .find(|r| r["action"]["type"] == "update")
        .ok_or("the policy update")?;
    let ray = update["raw"]["cf_ray_id"].as_str().ok_or("a ray id")?;
    for name in ["raw_cf_ray_id", "raw_ray_id"] {
        let (_, body) = get(
            &router,
            &format!("/accounts/{ACCOUNT}/logs/audit?{RANGE}&{name}={ray}"),
            None,
        )
        .await?;
        let found: Value = serde_json::from_str(&body)?;
        assert_eq!(
            found["result"].as_array().map(Vec::len),
            Some(1),
            "{name}: {body}"
        );
        assert_eq!(&found["result"][0], *update);
    }

    // One record, and the NDJSON export: the same.
    let id = update["id"].as_str().ok_or("an id")?;
    let (_, body) = get(
        &router,
        &format!("/accounts/{ACCOUNT}/logs/audit/{id}"),
        None,
    )
    .await?;
    let one: Value = serde_json::from_str(&body)?;
    assert_eq!(&one["result"], *update);
    let (_, body) = get(
        &router,
        &format!("/accounts/{ACCOUNT}/logs/audit?{RANGE}"),
        Some("application/x-ndjson"),
    )
    .await?;
    let exported: Vec<Value> = body
        .lines()
        .map(serde_json::from_str)
        .collect::<Result<_, _>>()?;
    assert_eq!(exported.len(), records.len());
    exported.iter().for_each(assert_current);

    // Nothing was rewritten: the stored rows are as they were, and the chain verifies.
    let after: Vec<String> = sqlx::query("SELECT record FROM audit_logs ORDER BY time_ms, id")
        .fetch_all(store.pool())
        .await?
        .iter()
        .map(|row| row.get(0))
        .collect();
    assert_eq!(after, stored);
    let (status, body) = get(
        &router,
        &format!("/accounts/{ACCOUNT}/logs/audit/verify"),
        None,
    )
    .await?;
    assert_eq!(status, StatusCode::OK, "{body}");
    let report: Value = serde_json::from_str(&body)?;
    assert_eq!(report["result"]["outcome"], "ok", "{body}");
    Ok(())
}
