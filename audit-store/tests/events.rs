//! Events in the store, on SQLite and PostgreSQL: records of actions that are not HTTP requests
//! (no `raw.method`, `raw.uri` or `raw.status_code`, an action type of their own, what changed)
//! are stored byte for byte with NULL in those columns, chained and verified like any record,
//! and found by the filters; and a database written before the columns were nullable keeps
//! every record, and its chains verify, after the migration.

#[macro_use]
mod common;

use std::path::Path;

use audit_layer::record::{ActionType, AuditRecord, Change};
use audit_store::SqliteStore;
use audit_store::chain::{ChainKeys, ChainSecret};
use audit_store::store::{AuditStore, ChainedStore};
use audit_store::verify::{self, Outcome, Span};
use common::*;
use serde_json::json;

backend_tests!(an_event_is_stored_with_null_request_columns_and_verifies);

fn keys() -> ChainKeys {
    ChainKeys::from_secret(&ChainSecret::from_bytes([7; 32]))
}

/// A system event of `account`: no exchange, an action of its own, a value before and after.
fn event(account: &str, time_ms: i64) -> AuditRecord {
    let mut r = record(Some(account), time_ms);
    r.action.kind = ActionType::from_static("expire");
    r.raw.method = None;
    r.raw.uri = None;
    r.raw.status_code = None;
    r.raw.user_agent = None;
    r.resource.request = None;
    r.resource.response = None;
    r.change = Some(Change {
        before: Some(json!({"status": "active"}).into()),
        after: Some(json!({"status": "revoked"}).into()),
    });
    r
}

async fn an_event_is_stored_with_null_request_columns_and_verifies<S: Chainable>(
    fx: &Fixture<S>,
) -> TestResult {
    let store = fx.store.with_chain(keys());
    let before = record(Some("acc_ev"), BASE_MS);
    let ev = event("acc_ev", BASE_MS + 1);
    let after = record(Some("acc_ev"), BASE_MS + 2);
    let all = [before, ev.clone(), after];
    assert_eq!(store.insert(&rows(&all)?).await?, 3);

    assert_eq!(store.get("acc_ev", ev.id).await?, Some(json_of(&ev)?));
    let (_, status, texts) = fx.db.columns(ev.id).await?.ok_or("row missing")?;
    assert_eq!(status, None, "raw_status_code");
    let names = text_columns();
    let column = |name: &str| texts[names.iter().position(|n| *n == name).unwrap_or(0)].clone();
    assert_eq!(column("raw_method"), None);
    assert_eq!(column("raw_uri"), None);
    assert_eq!(column("action_type").as_deref(), Some("expire"));
    assert_eq!(
        column("raw_ray_id").as_deref(),
        Some(ev.raw.cf_ray_id.as_str())
    );

    store.checkpoint(BASE_MS + 10_000).await?;
    let report = verify::verify(&store, &keys().verifier(), "acc_ev", Span::all(), &[]).await?;
    assert_eq!(report.outcome, Outcome::Ok, "{report:?}");
    assert_eq!(report.records, 3);
    Ok(())
}

fn json_of(r: &AuditRecord) -> TestResult<String> {
    Ok(serde_json::to_string(r)?)
}

/// The SQLite migrations from before this one, applied by sqlx as the store's own are (same
/// files, same checksums, same table).
fn previous_migrations(dir: &Path) -> TestResult {
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("migrations/sqlite");
    for entry in std::fs::read_dir(&source)? {
        let path = entry?.path();
        let name = path
            .file_name()
            .ok_or("a file name")?
            .to_string_lossy()
            .into_owned();
        if name.as_str() < "20261206000010" {
            std::fs::copy(&path, dir.join(&name))?;
        }
    }
    Ok(())
}

// The store's writes now stamp `committed_ms` (migration 20261206000050), so today's code can
// no longer write into the schema before 20261206000010 as this test did. The same upgrade of
// a database written before 010, with real rows and chains, is tested from a database dump in
// `before_v2_names.rs`. To revive this one, write its first records from a dump too.
#[tokio::test]
#[ignore = "today's store cannot write the schema before 20261206000010; before_v2_names.rs tests that upgrade"]
async fn a_sqlite_database_written_before_keeps_its_records_and_chains() -> TestResult {
    let dir = tempfile::tempdir()?;
    let old = dir.path().join("old-migrations");
    std::fs::create_dir(&old)?;
    previous_migrations(&old)?;
    let path = dir.path().join("audit.db");

    // Written by a store whose schema is the previous one.
    let store = SqliteStore::open(&path).await?.chained(keys());
    sqlx::migrate::Migrator::new(old.as_path())
        .await?
        .run(store.pool())
        .await?;
    let records: Vec<AuditRecord> = (0..50)
        .map(|i| record(Some(["acc_a", "acc_b"][i % 2]), BASE_MS + i as i64))
        .collect();
    assert_eq!(store.insert(&rows(&records)?).await?, 50);
    store.checkpoint(BASE_MS + 10_000).await?;
    let refused = store.insert(&rows(&[event("acc_a", BASE_MS + 100)])?).await;
    assert!(refused.is_err(), "the previous schema refuses NULL methods");

    // Upgraded: every record is there, byte for byte, its chain verifies, events go in.
    store.migrate().await?;
    for r in &records {
        let account = r.account.as_ref().ok_or("account")?.id.as_str();
        assert_eq!(store.get(account, r.id).await?, Some(json_of(r)?));
    }
    let ev = event("acc_a", BASE_MS + 200);
    assert_eq!(store.insert(&rows(std::slice::from_ref(&ev))?).await?, 1);
    store.checkpoint(BASE_MS + 20_000).await?;
    for (account, n) in [("acc_a", 26), ("acc_b", 25)] {
        let report = verify::verify(&store, &keys().verifier(), account, Span::all(), &[]).await?;
        assert_eq!(report.outcome, Outcome::Ok, "{account}: {report:?}");
        assert_eq!(report.records, n);
    }
    Ok(())
}
