//! Query benchmark: one account's audit log page at 1,000,000 stored records, through the real
//! request path (the axum router in-process) and through `AuditStore::page` alone, on SQLite and
//! PostgreSQL.
//!
//! ```text
//! cargo bench -p audit-store --bench query                          # 1M rows, both backends
//! AUDIT_BENCH_ROWS=100000 cargo bench -p audit-store --bench query  # quick, CI smoke
//! cargo bench -p audit-store --bench query -- postgres/http         # criterion filter
//! cargo test -p audit-store --benches                               # 2,000 rows, each once
//! ```
//!
//! # Environment
//!
//! - `AUDIT_BENCH_ROWS`: records stored (default 1,000,000; `100000` is a quick mode). Under
//!   `cargo test --benches` (criterion's test mode: no `--bench` argument, or `--test`) the
//!   default is 2,000 and every benchmark runs once.
//! - `AUDIT_BENCH_BACKENDS`: `sqlite`, `postgres` or `sqlite,postgres` (the default).
//! - `AUDIT_BENCH_POSTGRES_URL`, else `AUDIT_TEST_POSTGRES_URL`, else
//!   `postgres://postgres@127.0.0.1:5432/test`. An unreachable server is skipped with a
//!   message. The data lives in the schemas `audit_bench_query` and `audit_bench_query_noidx`
//!   (`audit_bench_query_smoke*` in test mode); nothing else is touched.
//! - `AUDIT_BENCH_PG_SCHEMA`: another schema than `audit_bench_query` (and `<it>_noidx`), so
//!   that runs sharing a server do not rebuild or measure each other's data.
//! - `AUDIT_BENCH_CACHE_DIR`: where the SQLite databases are kept between runs (default
//!   `<target>/audit-bench-cache/`); `AUDIT_BENCH_CACHE=0` builds them in a temp dir instead.
//!   A database (SQLite file or PostgreSQL schema) is reused when it holds the same data set
//!   (row count, generator version, seed, migrations' text) — checked from a `bench_meta` table
//!   and a `count(*)`; for SQLite also the page size a new `SqliteStore::open` file gets — so
//!   only the first run pays for the load. `AUDIT_BENCH_REBUILD=1` loads
//!   again anyway.
//! - `AUDIT_BENCH_NO_INDEX=0` skips the comparison without the composite filter indexes.
//! - `AUDIT_BENCH_NO_STATS=0` skips the SQLite comparison without `ANALYZE` statistics.
//! - `AUDIT_BENCH_POOL_VARIANTS=0` skips the comparisons with other sqlx pool settings.
//!
//! # Data
//!
//! Deterministic (fixed seed, fixed end time 2025-11-04T12:00Z): records of ~830 bytes of JSON
//! (~1.3 KB stored with their columns) over the 30 days before the end, in time order, ids
//! UUIDv7 of their time, inserted through `store.insert` in batches of 1,000 (the generator of
//! `benches/support`, its query profile: ~50 actors per account whose activity is
//! Zipf-distributed, as bots and CI tokens dominate real logs).
//! 100 accounts; the first holds 10% of the rows. ~12 products, every action type.
//! Then `VACUUM ANALYZE` (PostgreSQL) / `ANALYZE` (SQLite).
//!
//! # Measured
//!
//! For the big account, `since` = end − 7 days, `before` = end, `limit=100`, newest first:
//!
//! 1. no filter;
//! 2. `actor_email` = the account's most active email (and, as "2b", one with ~2% of the
//!    account's rows; in a data set too small for its records to fill a page, as the quick
//!    mode's, the least active email that does);
//! 3. `resource_product=workers`;
//! 4. `action_type=update`;
//! 5. the second page of (1), through its cursor;
//! 6. the page of (1) after 5,000 records (page 51), through its cursor (after half the
//!    window's records in a data set too small for that: ~1,100 in the quick mode).
//!
//! - `http/*`: `tower::ServiceExt::oneshot` on `AuditLogRouter::new(store, |_, _|
//!   Access::Allowed).into_router()`, body collected: routing, parameter parsing, the cursor's
//!   HMAC, the store query (limit + 1 rows) and the envelope.
//! - `page/*`: the same `RecordQuery` (limit 101) through `store.page()` alone.
//! - `*-noindex` groups: (2)–(4) on a copy of the data without the three composite filter
//!   indexes (`(account_id, actor_email|resource_product|action_type, time_ms)`, covering the
//!   stats' columns since migration 20261206000060).
//! - `sqlite-nostats`: the queries whose plan changes without `ANALYZE` statistics, on a copy
//!   without `sqlite_stat1` and `sqlite_stat4`. The store never runs `ANALYZE` (nor
//!   `PRAGMA optimize`), so this is what a deployed SQLite database plans with.
//! - Pool variants, (1), (2) and (6) on the same data through pools opened like the stores'
//!   own but: `sqlite-rowbuf` with `row_buffer_size(1024)` (sqlx hands rows from its SQLite
//!   worker thread to the caller through a channel of 50, so a page of 101 blocks the worker
//!   and costs extra thread wake-ups); `*-noping` with `test_before_acquire(false)` (by default
//!   every `acquire` first pings the connection: one more round trip to the SQLite worker
//!   thread or the PostgreSQL server per query); `sqlite-tuned` with both.
//! - `sqlite-sqlx` / `postgres-sqlx`: below the store, on the raw pool: `SELECT 1`, the page
//!   query of (1) fetched as its 101 rows, and the same scan aggregated into one row.
//!
//! A full run measures ~80 benchmarks: ~17 minutes, plus the first load of 1M records (~5 min
//! for SQLite, ~1 min for PostgreSQL, on 2 busy cores). `AUDIT_BENCH_NO_INDEX=0
//! AUDIT_BENCH_NO_STATS=0 AUDIT_BENCH_POOL_VARIANTS=0` keeps the 28 core ones (~4 minutes).
//!
//! Before measuring, every query is checked (status, page size, filter, order, cursor) and its
//! plan printed, for the statement the store's own `store::sql` builds: SQLite's `EXPLAIN
//! QUERY PLAN` with and without `ANALYZE` statistics, and PostgreSQL's `EXPLAIN (ANALYZE,
//! BUFFERS)` of both the custom and the generic plan (sqlx keeps statements prepared, so after
//! five executions PostgreSQL may switch to the generic one; the plan counts of the benchmark
//! connection are printed at the end). The PostgreSQL
//! store is given a one-connection pool so that this is observable; the benchmark is
//! sequential, so one connection is all it would use anyway.
//!
//! At the end, a table of criterion's median estimates per backend and query.

mod support;
/// The viewer's requests (issue 21), in `benches/query/viewer.rs`.
#[path = "query/viewer.rs"]
mod viewer;

use std::collections::BTreeMap;
use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use audit_layer::record::Timestamp;
use audit_store::model::{Column, ColumnFilter, Direction, FilterValue, RecordQuery, StoredRecord};
use audit_store::query::{Access, AuditLogRouter};
use audit_store::store::sql::Dialect;
use audit_store::store::{AuditStore, ChainedStore};
use audit_store::{PostgresStore, SqliteStore};
use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use bytes::Bytes;
use criterion::{BenchmarkId, Criterion, SamplingMode};
use http_body_util::BodyExt as _;
use sqlx::postgres::{PgConnection, PgPool, PgPoolOptions};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::{AssertSqlSafe, Connection as _, Executor as _, Row as _};
use tokio::runtime::Runtime;
use tower::ServiceExt as _;
use uuid::Uuid;

use support::cpu::load_averages;
use support::records::{DAY_MS, Dataset};
use support::sql::Statement;
use support::world::{Profile, World};
use support::{BoxError, BoxResult, postgres, sqlite};

const DEFAULT_ROWS: usize = 1_000_000;
/// Rows under `cargo test --benches`.
const SMOKE_ROWS: usize = 2_000;
/// Records per `store.insert`.
const BATCH: usize = 1_000;
const SEED: u64 = 0x0051_ce0f_a11a_ccee;
/// Bump when the generator changes: cached databases are then rebuilt.
const GENERATOR_VERSION: u32 = 1;
/// The page size asked for.
const LIMIT: u32 = 100;
const SCHEMA: &str = "audit_bench_query";
const SMOKE_SCHEMA: &str = "audit_bench_query_smoke";
/// The indexes dropped for the "without a composite index" comparison.
const FILTER_INDEXES: [&str; 3] = [
    "audit_logs_account_actor_email",
    "audit_logs_account_product",
    "audit_logs_account_action",
];
/// The product filtered on (10% of the traffic).
const PRODUCT: &str = "workers";

/// The data's end: "now" for the queries (fixed, so a cached database stays valid).
fn end_ms() -> i64 {
    time::macros::datetime!(2025-11-04 12:00 UTC).unix_timestamp() * 1000
}

fn main() {
    if let Err(e) = run() {
        eprintln!("query bench failed: {e}");
        std::process::exit(1);
    }
}

// ---------------------------------------------------------------------------------------------
// Configuration

#[derive(Debug)]
struct Config {
    rows: usize,
    /// `cargo test --benches`: tiny data, every benchmark once.
    smoke: bool,
    sqlite: bool,
    postgres: bool,
    /// Where SQLite databases are kept between runs; `None`: a temp dir.
    cache_dir: Option<PathBuf>,
    rebuild: bool,
    no_index: bool,
    no_stats: bool,
    pool_variants: bool,
    pg_url: String,
    /// `AUDIT_BENCH_PG_SCHEMA`: the PostgreSQL schema of the data (its copy without the
    /// filter indexes gets `_noidx` appended).
    schema: String,
}

impl Config {
    fn from_env() -> BoxResult<Self> {
        let args: Vec<String> = std::env::args().skip(1).collect();
        // Criterion's own rule: `cargo bench` passes `--bench`; `cargo test --benches` does
        // not; `--test` asks for test mode explicitly.
        let smoke = !args.iter().any(|a| a == "--bench") || args.iter().any(|a| a == "--test");
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
        let rows = match var("AUDIT_BENCH_ROWS") {
            Some(v) => v
                .replace(['_', ','], "")
                .parse::<usize>()
                .ok()
                .filter(|n| *n >= 1_000)
                .ok_or_else(|| {
                    format!("AUDIT_BENCH_ROWS={v}: expected a count of at least 1000")
                })?,
            None if smoke => SMOKE_ROWS,
            None => DEFAULT_ROWS,
        };
        let (sqlite, postgres) =
            backends(&var("AUDIT_BENCH_BACKENDS").unwrap_or_else(|| "sqlite,postgres".into()))?;
        let flag = |name: &str, default: bool| {
            var(name).map_or(default, |v| !matches!(v.as_str(), "0" | "false" | "no"))
        };
        let cache_dir = if smoke || !flag("AUDIT_BENCH_CACHE", true) {
            None
        } else {
            var("AUDIT_BENCH_CACHE_DIR").map(PathBuf::from).or_else(|| {
                target_dir()
                    .map(|t| t.join("audit-bench-cache"))
                    .or_else(|| Some(std::env::temp_dir().join("audit-bench-cache")))
            })
        };
        Ok(Self {
            rows,
            smoke,
            sqlite,
            postgres,
            cache_dir,
            rebuild: flag("AUDIT_BENCH_REBUILD", false),
            no_index: flag("AUDIT_BENCH_NO_INDEX", true),
            no_stats: flag("AUDIT_BENCH_NO_STATS", true),
            pool_variants: flag("AUDIT_BENCH_POOL_VARIANTS", true),
            pg_url: postgres::url_from_env().unwrap_or_else(|| postgres::DEFAULT_URL.to_owned()),
            schema: match var("AUDIT_BENCH_PG_SCHEMA") {
                Some(name) if smoke => {
                    return Err(format!(
                        "AUDIT_BENCH_PG_SCHEMA={name}: the test mode uses its own schema, \
                         dropped at the end ({SMOKE_SCHEMA})"
                    )
                    .into());
                }
                Some(name)
                    if name.len() <= 40
                        && name.starts_with(|c: char| c.is_ascii_lowercase())
                        && name
                            .chars()
                            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_') =>
                {
                    name
                }
                Some(name) => {
                    return Err(format!(
                        "AUDIT_BENCH_PG_SCHEMA={name:?}: expected a lower-case identifier \
                         (a-z, 0-9, _; at most 40 characters)"
                    )
                    .into());
                }
                None if smoke => SMOKE_SCHEMA.to_owned(),
                None => SCHEMA.to_owned(),
            },
        })
    }

    fn schema(&self) -> &str {
        &self.schema
    }
}

/// `AUDIT_BENCH_BACKENDS`: whether SQLite and PostgreSQL run.
fn backends(list: &str) -> BoxResult<(bool, bool)> {
    let mut sqlite = false;
    let mut postgres = false;
    for b in list.split(',').map(str::trim) {
        match b {
            "sqlite" => sqlite = true,
            "postgres" | "postgresql" => postgres = true,
            "both" => (sqlite, postgres) = (true, true),
            other => {
                return Err(format!(
                    "AUDIT_BENCH_BACKENDS: unknown backend {other:?} (sqlite, postgres)"
                )
                .into());
            }
        }
    }
    Ok((sqlite, postgres))
}

/// Cargo's target directory: the first ancestor of this executable holding `CACHEDIR.TAG`.
fn target_dir() -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?;
    exe.ancestors()
        .find(|dir| dir.join("CACHEDIR.TAG").is_file())
        .map(Path::to_path_buf)
}

/// Where criterion writes its estimates, found the way criterion finds it.
fn criterion_dir() -> PathBuf {
    if let Some(home) = std::env::var_os("CRITERION_HOME") {
        return PathBuf::from(home);
    }
    if let Some(target) = std::env::var_os("CARGO_TARGET_DIR") {
        return PathBuf::from(target).join("criterion");
    }
    target_dir().map_or_else(
        || PathBuf::from("target/criterion"),
        |t| t.join("criterion"),
    )
}

// ---------------------------------------------------------------------------------------------
// The data set

/// The benchmark's `n` records (`benches/support`'s query profile, fixed seed and end).
fn dataset(n: usize) -> Dataset {
    Dataset {
        world: Arc::new(World::new(SEED, Profile::QUERY)),
        n,
        seed: SEED,
        end_ms: end_ms(),
    }
}

/// What a cached database must have been built from.
fn signature(data: &Dataset, migrations: &str) -> String {
    format!(
        "generator={GENERATOR_VERSION};rows={};seed={SEED:#x};end={};migrations={:016x}",
        data.n,
        data.end_ms,
        migrations_hash(migrations)
    )
}

/// The account every query reads: the largest.
fn account(data: &Dataset) -> &str {
    data.world.first_account()
}

/// FNV-1a over the backend's migration files: a changed migration invalidates the cache.
fn migrations_hash(backend: &str) -> u64 {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("migrations")
        .join(backend);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .map(|d| d.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default();
    files.sort();
    let mut hash = 0xcbf2_9ce4_8422_2325_u64;
    for file in files {
        for b in std::fs::read(&file).unwrap_or_default() {
            hash = (hash ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
    }
    hash
}

/// Inserts the data set through `store.insert` in batches of [`BATCH`], `writers` at a time,
/// records generated on another thread meanwhile. Returns the wall time and the mean JSON size.
async fn load<S: ChainedStore>(
    store: &S,
    data: &Dataset,
    writers: usize,
) -> BoxResult<(Duration, f64)> {
    let (tx, rx) = tokio::sync::mpsc::channel::<Vec<StoredRecord>>(8);
    let json_bytes = Arc::new(AtomicUsize::new(0));
    let generator = {
        let data = data.clone();
        let json_bytes = Arc::clone(&json_bytes);
        std::thread::spawn(move || generate_batches(&data, &json_bytes, tx))
    };
    let started = Instant::now();
    let rx = Arc::new(tokio::sync::Mutex::new(rx));
    let done = Arc::new(AtomicUsize::new(0));
    let step = (data.n / 10).max(BATCH);
    let mut tasks = Vec::new();
    for _ in 0..writers.max(1) {
        let (store, rx, done) = (store.clone(), Arc::clone(&rx), Arc::clone(&done));
        let n = data.n;
        tasks.push(tokio::spawn(async move {
            loop {
                let Some(batch) = rx.lock().await.recv().await else {
                    return Ok::<(), audit_store::StoreError>(());
                };
                store.insert(&batch).await?;
                let before = done.fetch_add(batch.len(), Ordering::Relaxed);
                let after = before + batch.len();
                if after / step != before / step || after == n {
                    let secs = started.elapsed().as_secs_f64();
                    eprintln!(
                        "    {after:>9} / {n} rows  {:>6.1} s  {:>7.0} rows/s",
                        secs,
                        after as f64 / secs
                    );
                }
            }
        }));
    }
    for task in tasks {
        task.await??;
    }
    generator
        .join()
        .map_err(|_| BoxError::from("the record generator panicked"))??;
    let avg = json_bytes.load(Ordering::Relaxed) as f64 / data.n as f64;
    Ok((started.elapsed(), avg))
}

/// The data set flattened into batches of [`BATCH`] rows, sent to the writers; the JSON bytes
/// are counted on the way.
fn generate_batches(
    data: &Dataset,
    json_bytes: &AtomicUsize,
    tx: tokio::sync::mpsc::Sender<Vec<StoredRecord>>,
) -> BoxResult<()> {
    let mut batch = Vec::with_capacity(BATCH);
    for record in data.iter() {
        let row = StoredRecord::from_record(&record)?;
        json_bytes.fetch_add(row.record.len(), Ordering::Relaxed);
        batch.push(row);
        if batch.len() == BATCH {
            let full = std::mem::replace(&mut batch, Vec::with_capacity(BATCH));
            if tx.blocking_send(full).is_err() {
                return Ok(());
            }
        }
    }
    if !batch.is_empty() {
        let _ = tx.blocking_send(batch);
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// The queries

#[derive(Clone, Debug)]
struct Filter {
    param: &'static str,
    column: Column,
    value: String,
    /// Where the value is in a record's JSON.
    pointer: &'static str,
}

#[derive(Clone, Debug)]
struct Case {
    /// Criterion's id within a group.
    key: &'static str,
    what: String,
    filter: Option<Filter>,
    /// Records before the measured page, reached through cursors (0: the first page).
    skip: usize,
}

fn cases(data: &Dataset, smoke: bool) -> BoxResult<Vec<Case>> {
    let (top, top_share) = data
        .world
        .email_at_rank(0)
        .ok_or("the big account has no actor with an email")?;
    let (typical, typical_share) = typical_email(data, smoke)?;
    let email = |value: String| Filter {
        param: "actor_email",
        column: Column::ActorEmail,
        value,
        pointer: "/actor/email",
    };
    // The smoke data set has ~30 records in the window; the quick mode's 100,000 rows ~2,300,
    // so there the deep page starts half way through them.
    let in_window = data.n as f64 * 0.1 * 7.0 / 30.0;
    let (page2, deep) = if smoke {
        (5, 10)
    } else if in_window >= 6_000.0 {
        (100, 5_000)
    } else {
        (100, ((in_window * 0.5) as usize / 100 * 100).max(200))
    };
    Ok(vec![
        Case {
            key: "1_unfiltered",
            what: "account + 7 days".into(),
            filter: None,
            skip: 0,
        },
        Case {
            key: "2_actor_email",
            what: format!(
                "+ actor_email={top} (most active, {:.0}% of the account)",
                top_share * 100.0
            ),
            filter: Some(email(top)),
            skip: 0,
        },
        Case {
            key: "2b_actor_email_2pct",
            what: format!(
                "+ actor_email={typical} ({:.1}% of the account)",
                typical_share * 100.0
            ),
            filter: Some(email(typical)),
            skip: 0,
        },
        Case {
            key: "3_resource_product",
            what: format!("+ resource_product={PRODUCT} (~10%)"),
            filter: Some(Filter {
                param: "resource_product",
                column: Column::ResourceProduct,
                value: PRODUCT.into(),
                pointer: "/resource/product",
            }),
            skip: 0,
        },
        Case {
            key: "4_action_type",
            what: "+ action_type=update (~18%)".into(),
            filter: Some(Filter {
                param: "action_type",
                column: Column::ActionType,
                value: "update".into(),
                pointer: "/action/type",
            }),
            skip: 0,
        },
        Case {
            key: "5_second_page",
            what: format!("account + 7 days, next page after {page2} (cursor)"),
            filter: None,
            skip: page2,
        },
        Case {
            key: "6_deep_page",
            what: format!("account + 7 days, next page after {deep} (cursor)"),
            filter: None,
            skip: deep,
        },
    ])
}

/// The "typical" actor of case 2b: the one at Zipf rank 9 (~2 % of the account), or, in a data
/// set too small for it to fill a page in the window (the quick mode's 100,000 rows hold ~50
/// of its records in 7 days), the least active actor expected to fill one with a margin.
fn typical_email(data: &Dataset, smoke: bool) -> BoxResult<(String, f64)> {
    // The largest account holds a tenth of the records, spread evenly over 30 days.
    let in_window = data.n as f64 * 0.1 * 7.0 / 30.0;
    let mut found = None;
    for rank in (0..=9).rev() {
        let Some((email, share)) = data.world.email_at_rank(rank) else {
            continue;
        };
        // The smoke run checks no page's size: it keeps the rank of the real runs.
        let fills = smoke || share * in_window >= 1.2 * f64::from(LIMIT);
        found = Some((email, share));
        if fills {
            break;
        }
    }
    found.ok_or_else(|| "the big account has too few actors with an email".into())
}

/// A case made concrete against one store: the request and the store query it runs.
struct Prepared {
    case: Case,
    uri: String,
    query: RecordQuery,
    /// Rows the page returned (the check's finding).
    rows: usize,
}

fn window(data: &Dataset) -> (i64, i64) {
    (data.end_ms - 7 * DAY_MS, data.end_ms)
}

fn rfc3339(ms: i64) -> BoxResult<String> {
    let t = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)?;
    Ok(t.format(&time::format_description::well_known::Rfc3339)?)
}

fn uri(data: &Dataset, case: &Case, limit: u32, cursor: Option<&str>) -> BoxResult<String> {
    let (since, before) = window(data);
    let mut query = form_urlencoded::Serializer::new(String::new());
    query
        .append_pair("since", &rfc3339(since)?)
        .append_pair("before", &rfc3339(before)?)
        .append_pair("limit", &limit.to_string());
    if let Some(f) = &case.filter {
        query.append_pair(f.param, &f.value);
    }
    if let Some(c) = cursor {
        query.append_pair("cursor", c);
    }
    Ok(format!(
        "/accounts/{}/logs/audit?{}",
        account(data),
        query.finish()
    ))
}

fn record_query(
    data: &Dataset,
    case: &Case,
    limit: u32,
    after: Option<(i64, Uuid)>,
) -> RecordQuery {
    let (since_ms, before_ms) = window(data);
    RecordQuery {
        account_id: account(data).to_owned(),
        since_ms,
        before_ms,
        filters: case
            .filter
            .iter()
            .map(|f| ColumnFilter {
                column: f.column,
                negated: false,
                values: vec![FilterValue::Text(f.value.clone())],
            })
            .collect(),
        direction: Direction::Desc,
        after,
        // What the router asks for: one more than the page, to know whether another exists.
        limit: limit + 1,
        max_bytes: Some(audit_store::query::DEFAULT_PAGE_BYTES),
        time_limit: Some(audit_store::query::DEFAULT_STATEMENT_TIMEOUT),
    }
}

async fn get(router: &Router, uri: &str) -> BoxResult<(StatusCode, Bytes)> {
    let request = Request::get(uri).body(Body::empty())?;
    let response = router.clone().oneshot(request).await?;
    let status = response.status();
    let body = response.into_body().collect().await?.to_bytes();
    Ok((status, body))
}

/// A page's `(time_ms, id)` positions, newest first, and its cursor.
type Page = (Vec<(i64, Uuid)>, Option<String>);

/// A page's records' positions and its cursor, checked against the case.
fn check_page(case: &Case, data: &Dataset, status: StatusCode, body: &[u8]) -> BoxResult<Page> {
    let text = String::from_utf8_lossy(body);
    if status != StatusCode::OK {
        return Err(format!("{}: status {status}: {text}", case.key).into());
    }
    let v: serde_json::Value = serde_json::from_slice(body)?;
    let records = v["result"]
        .as_array()
        .ok_or_else(|| format!("{}: no result array: {text}", case.key))?;
    let (since, before) = window(data);
    let mut positions = Vec::with_capacity(records.len());
    for r in records {
        let time = r["action"]["time"]
            .as_str()
            .ok_or("a record without action.time")?
            .parse::<Timestamp>()
            .map_err(|e| format!("action.time: {e:?}"))?
            .unix_millis();
        let id = r["id"]
            .as_str()
            .ok_or("a record without id")?
            .parse::<Uuid>()?;
        if r["account"]["id"].as_str() != Some(account(data)) {
            return Err(format!("{}: a record of another account", case.key).into());
        }
        if !(since..before).contains(&time) {
            return Err(format!("{}: a record outside the time range", case.key).into());
        }
        if let Some(f) = &case.filter
            && r.pointer(f.pointer).and_then(|v| v.as_str()) != Some(f.value.as_str())
        {
            return Err(format!(
                "{}: a record not matching {}={}",
                case.key, f.param, f.value
            )
            .into());
        }
        if positions.last().is_some_and(|last| *last <= (time, id)) {
            return Err(format!("{}: records out of order", case.key).into());
        }
        positions.push((time, id));
    }
    let cursor = v["result_info"]["cursor"].as_str().map(str::to_owned);
    Ok((positions, cursor))
}

/// Checks every case against `store` through `router` and returns what to measure.
async fn prepare<S: ChainedStore>(
    store: &S,
    router: &Router,
    data: &Dataset,
    cases: &[Case],
    smoke: bool,
) -> BoxResult<Vec<Prepared>> {
    let mut prepared = Vec::new();
    for case in cases {
        // Page to the position through cursors, 1,000 records at a time (a cursor is bound to
        // the query, not to its limit).
        let mut cursor: Option<String> = None;
        let mut after: Option<(i64, Uuid)> = None;
        let mut skipped = 0;
        while skipped < case.skip {
            let step = (case.skip - skipped).min(1000) as u32;
            let u = uri(data, case, step, cursor.as_deref())?;
            let (status, body) = get(router, &u).await?;
            let (positions, next) = check_page(case, data, status, &body)?;
            if let (Some(a), Some(first)) = (after, positions.first())
                && *first >= a
            {
                return Err(format!("{}: a page does not follow the previous", case.key).into());
            }
            skipped += positions.len();
            after = positions.last().copied().or(after);
            cursor = Some(next.ok_or_else(|| {
                format!("{}: no page after {skipped} records in this data", case.key)
            })?);
        }
        let measured = uri(data, case, LIMIT, cursor.as_deref())?;
        let (status, body) = get(router, &measured).await?;
        let (positions, next) = check_page(case, data, status, &body)?;
        if !smoke && (positions.len() != LIMIT as usize || next.is_none()) {
            return Err(format!(
                "{}: expected a full page of {LIMIT} with a cursor, got {} rows",
                case.key,
                positions.len()
            )
            .into());
        }
        if let (Some(a), Some(first)) = (after, positions.first())
            && *first >= a
        {
            return Err(format!("{}: the page does not follow the previous", case.key).into());
        }
        let query = record_query(data, case, LIMIT, after);
        let direct: Vec<(i64, Uuid)> = store
            .page(&query)
            .await?
            .rows
            .iter()
            .map(|r| (r.time_ms, r.id))
            .collect();
        if direct[..direct.len().min(LIMIT as usize)] != positions[..] {
            return Err(format!("{}: store.page and the router disagree", case.key).into());
        }
        prepared.push(Prepared {
            case: case.clone(),
            uri: measured,
            query,
            rows: positions.len(),
        });
    }
    Ok(prepared)
}

// ---------------------------------------------------------------------------------------------
// SQLite

async fn sqlite_signature(pool: &SqlitePool) -> Option<String> {
    sqlx::query_scalar("SELECT v FROM bench_meta WHERE k = 'signature'")
        .fetch_optional(pool)
        .await
        .ok()
        .flatten()
}

async fn sqlite_set_signature(pool: &SqlitePool, signature: &str) -> BoxResult<()> {
    sqlx::query("CREATE TABLE IF NOT EXISTS bench_meta (k TEXT PRIMARY KEY, v TEXT NOT NULL)")
        .execute(pool)
        .await?;
    sqlx::query("INSERT OR REPLACE INTO bench_meta (k, v) VALUES ('signature', ?)")
        .bind(signature)
        .execute(pool)
        .await?;
    Ok(())
}

async fn page_size(pool: &SqlitePool) -> Option<i64> {
    sqlx::query_scalar("PRAGMA page_size")
        .fetch_one(pool)
        .await
        .ok()
}

/// The file's size and page size.
async fn sqlite_layout(store: &SqliteStore, path: &Path) -> String {
    let bytes = std::fs::metadata(path).map_or(0, |m| m.len());
    format!(
        "{:.2} GB in pages of {} bytes",
        bytes as f64 / 1e9,
        page_size(store.pool()).await.unwrap_or(0)
    )
}

/// The page size `SqliteStore::open` gives a new file (the store may set one): a cached
/// database built with another is stale.
async fn fresh_page_size() -> Option<i64> {
    let dir = tempfile::tempdir().ok()?;
    let store = SqliteStore::open(dir.path().join("probe.db")).await.ok()?;
    store.migrate().await.ok()?;
    let size = page_size(store.pool()).await;
    store.pool().close().await;
    size
}

/// Opens the database at `path` if it holds `signature` and `rows` records, in pages of the
/// size the store now creates.
async fn sqlite_reuse(path: &Path, signature: &str, rows: usize) -> Option<SqliteStore> {
    if !path.is_file() {
        return None;
    }
    let store = SqliteStore::open(path).await.ok()?;
    let ok = sqlite_signature(store.pool()).await.as_deref() == Some(signature)
        && page_size(store.pool()).await == fresh_page_size().await
        && store.count().await.ok() == Some(rows as u64);
    if ok {
        Some(store)
    } else {
        store.pool().close().await;
        None
    }
}

async fn sqlite_finish(store: &SqliteStore, signature: &str) -> BoxResult<()> {
    let started = Instant::now();
    sqlx::query("ANALYZE").execute(store.pool()).await?;
    sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)")
        .execute(store.pool())
        .await?;
    sqlite_set_signature(store.pool(), signature).await?;
    eprintln!(
        "    ANALYZE + checkpoint: {:.1} s",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// The benchmark database: reused from the cache, or built (migrate, load, ANALYZE).
async fn sqlite_main(
    config: &Config,
    dir: &Path,
    data: &Dataset,
) -> BoxResult<(SqliteStore, PathBuf)> {
    let path = dir.join(format!("query-sqlite-{}.db", data.n));
    let signature = signature(data, "sqlite");
    if !config.rebuild
        && let Some(store) = sqlite_reuse(&path, &signature, data.n).await
    {
        eprintln!(
            "  sqlite: reusing {} ({} rows, {})",
            path.display(),
            data.n,
            sqlite_layout(&store, &path).await
        );
        store.migrate().await?;
        return Ok((store, path));
    }
    sqlite::remove(&path);
    eprintln!("  sqlite: loading {} rows into {}", data.n, path.display());
    let store = SqliteStore::open(&path).await?;
    store.migrate().await?;
    let (wall, avg) = load(&store, data, 1).await?;
    eprintln!(
        "    loaded in {:.1} s ({:.0} rows/s), mean record JSON {avg:.0} bytes",
        wall.as_secs_f64(),
        data.n as f64 / wall.as_secs_f64()
    );
    sqlite_finish(&store, &signature).await?;
    eprintln!("    {}", sqlite_layout(&store, &path).await);
    Ok((store, path))
}

/// What a copy of the benchmark database goes without.
#[derive(Clone, Copy, Debug)]
enum Without {
    /// The composite filter indexes ([`FILTER_INDEXES`]).
    FilterIndexes,
    /// `ANALYZE` statistics.
    Statistics,
}

impl Without {
    /// The copy's file name suffix.
    fn suffix(self) -> &'static str {
        match self {
            Self::FilterIndexes => "noidx",
            Self::Statistics => "nostats",
        }
    }

    /// What the signature adds for the copy.
    fn signature(self) -> &'static str {
        match self {
            Self::FilterIndexes => "noidx",
            Self::Statistics => "nostats2",
        }
    }

    fn making(self) -> &'static str {
        match self {
            Self::FilterIndexes => "and dropping the filter indexes",
            Self::Statistics => "without statistics",
        }
    }
}

/// A copy of the benchmark database without `what`: reused from the cache, or made with
/// `VACUUM INTO`.
async fn sqlite_copy(
    config: &Config,
    main: &SqliteStore,
    dir: &Path,
    data: &Dataset,
    what: Without,
) -> BoxResult<SqliteStore> {
    let path = dir.join(format!("query-sqlite-{}-{}.db", data.n, what.suffix()));
    let signature = format!("{};{}", signature(data, "sqlite"), what.signature());
    if !config.rebuild
        && let Some(store) = sqlite_reuse(&path, &signature, data.n).await
    {
        eprintln!("  sqlite: reusing {}", path.display());
        return Ok(store);
    }
    sqlite::remove(&path);
    eprintln!("  sqlite: copying to {} {}", path.display(), what.making());
    let started = Instant::now();
    sqlx::query("VACUUM INTO ?")
        .bind(path.to_string_lossy().into_owned())
        .execute(main.pool())
        .await?;
    // A fresh pool: none of its connections has loaded statistics the copy goes without.
    let store = SqliteStore::open(&path).await?;
    match what {
        Without::FilterIndexes => {
            for index in FILTER_INDEXES {
                sqlx::query(AssertSqlSafe(format!("DROP INDEX IF EXISTS {index}")))
                    .execute(store.pool())
                    .await?;
            }
            eprintln!("    copied in {:.1} s", started.elapsed().as_secs_f64());
            sqlite_finish(&store, &signature).await?;
            Ok(store)
        }
        Without::Statistics => {
            // The bundled SQLite is built with STAT4: drop both tables.
            sqlx::raw_sql("DROP TABLE IF EXISTS sqlite_stat1; DROP TABLE IF EXISTS sqlite_stat4")
                .execute(store.pool())
                .await?;
            sqlite_set_signature(store.pool(), &signature).await?;
            store.pool().close().await;
            eprintln!("    copied in {:.1} s", started.elapsed().as_secs_f64());
            Ok(SqliteStore::open(&path).await?)
        }
    }
}

async fn sqlite_plan(pool: &SqlitePool, statement: &Statement) -> BoxResult<Vec<String>> {
    let mut conn = pool.acquire().await?;
    sqlite_plan_on(&mut conn, statement).await
}

async fn sqlite_plan_on(
    conn: &mut sqlx::SqliteConnection,
    statement: &Statement,
) -> BoxResult<Vec<String>> {
    let rows = statement
        .wrapped("EXPLAIN QUERY PLAN {}")
        .query()
        .fetch_all(&mut *conn)
        .await?;
    let mut depth: BTreeMap<i64, usize> = BTreeMap::new();
    let mut lines = Vec::new();
    for row in rows {
        let (id, parent, detail): (i64, i64, String) =
            (row.try_get(0)?, row.try_get(1)?, row.try_get(3)?);
        let d = depth.get(&parent).map_or(0, |d| d + 1);
        depth.insert(id, d);
        lines.push(format!("{}{detail}", "  ".repeat(d)));
    }
    Ok(lines)
}

async fn sqlite_count(pool: &SqlitePool, query: &RecordQuery) -> BoxResult<i64> {
    let row = Statement::count(Dialect::Sqlite, query)
        .query()
        .fetch_one(pool)
        .await?;
    Ok(row.try_get(0)?)
}

/// Prints each query's plan with the statistics, and without them where that differs.
async fn sqlite_explain(label: &str, pool: &SqlitePool, prepared: &[Prepared]) -> BoxResult<()> {
    println!("\n=== SQLite EXPLAIN QUERY PLAN ({label}) ===");
    // A connection that forgets the ANALYZE statistics (in a transaction rolled back, then
    // closed): the plans a database that was never analyzed gets (the store never runs ANALYZE).
    let mut bare = pool.acquire().await?.detach();
    let stat4: i64 =
        sqlx::query_scalar("SELECT count(*) FROM sqlite_schema WHERE name = 'sqlite_stat4'")
            .fetch_one(&mut bare)
            .await?;
    bare.execute(if stat4 > 0 {
        "BEGIN; DELETE FROM sqlite_stat1; DELETE FROM sqlite_stat4; ANALYZE sqlite_schema"
    } else {
        "BEGIN; DELETE FROM sqlite_stat1; ANALYZE sqlite_schema"
    })
    .await?;
    for p in prepared {
        let statement = Statement::page(Dialect::Sqlite, &p.query);
        let plan = sqlite_plan(pool, &statement).await?;
        let without = sqlite_plan_on(&mut bare, &statement).await?;
        let matching = sqlite_count(pool, &p.query).await?;
        print_case(p, matching, &statement.sql);
        for line in &plan {
            println!("   {line}");
        }
        if without != plan {
            println!("   without ANALYZE statistics:");
            for line in &without {
                println!("   {line}");
            }
        }
    }
    bare.execute("ROLLBACK").await?;
    bare.close().await?;
    Ok(())
}

/// The line naming a case in the EXPLAIN output; for the first page and the second, the SQL.
fn print_case(p: &Prepared, matching: i64, sql: &str) {
    println!(
        "-- {} {}: {} rows match in the window, page of {}",
        p.case.key, p.case.what, matching, p.rows
    );
    if p.case.key == "1_unfiltered" || p.case.key == "5_second_page" {
        println!("   {sql}");
    }
}

// ---------------------------------------------------------------------------------------------
// PostgreSQL

struct Pg {
    url: String,
}

impl Pg {
    async fn connect(url: &str) -> Result<Self, String> {
        postgres::reach(url).await?;
        Ok(Self {
            url: url.to_owned(),
        })
    }

    async fn pool(&self, schema: &str, connections: u32) -> BoxResult<PgPool> {
        postgres::pool(&self.url, schema, connections).await
    }

    async fn connection(&self, schema: &str) -> BoxResult<PgConnection> {
        postgres::connection(&self.url, schema).await
    }

    /// Whether `schema` holds the data set `signature` describes.
    async fn holds(&self, schema: &str, signature: &str, rows: usize) -> bool {
        let Ok(mut conn) = self.connection(schema).await else {
            return false;
        };
        let found: Option<String> =
            sqlx::query_scalar("SELECT v FROM bench_meta WHERE k = 'signature'")
                .fetch_optional(&mut conn)
                .await
                .ok()
                .flatten();
        let ok = found.as_deref() == Some(signature)
            && sqlx::query_scalar::<_, i64>("SELECT count(*) FROM audit_logs")
                .fetch_one(&mut conn)
                .await
                .ok()
                == Some(rows as i64);
        let _ = conn.close().await;
        ok
    }

    /// VACUUM ANALYZE (no autovacuum in the middle of the measurements), then the signature.
    async fn finish(&self, schema: &str, signature: &str) -> BoxResult<()> {
        let started = Instant::now();
        let mut conn = self.connection(schema).await?;
        conn.execute("VACUUM (ANALYZE) audit_logs").await?;
        conn.execute("CREATE TABLE IF NOT EXISTS bench_meta (k text PRIMARY KEY, v text NOT NULL)")
            .await?;
        sqlx::query(
            "INSERT INTO bench_meta (k, v) VALUES ('signature', $1) \
             ON CONFLICT (k) DO UPDATE SET v = excluded.v",
        )
        .bind(signature)
        .execute(&mut conn)
        .await?;
        conn.close().await?;
        eprintln!(
            "    VACUUM ANALYZE: {:.1} s",
            started.elapsed().as_secs_f64()
        );
        Ok(())
    }

    /// The benchmark schema: reused, or built (migrate, load, VACUUM ANALYZE).
    async fn main(&self, config: &Config, data: &Dataset) -> BoxResult<()> {
        let schema = config.schema();
        let signature = signature(data, "postgres");
        if !config.rebuild && self.holds(schema, &signature, data.n).await {
            eprintln!("  postgres: reusing schema {schema} ({} rows)", data.n);
            return Ok(());
        }
        eprintln!("  postgres: loading {} rows into schema {schema}", data.n);
        let store = postgres::fresh_store(&self.url, schema, 4).await?;
        let (wall, avg) = load(&store, data, 2).await?;
        eprintln!(
            "    loaded in {:.1} s ({:.0} rows/s, 2 writers), mean record JSON {avg:.0} bytes",
            wall.as_secs_f64(),
            data.n as f64 / wall.as_secs_f64()
        );
        store.pool().close().await;
        self.finish(schema, &signature).await
    }

    /// A copy of the benchmark schema without the composite filter indexes: same partitions,
    /// `INSERT ... SELECT` from the main schema.
    async fn noidx(&self, config: &Config, data: &Dataset) -> BoxResult<String> {
        let main = config.schema();
        let schema = format!("{main}_noidx");
        let signature = format!("{};noidx", signature(data, "postgres"));
        if !config.rebuild && self.holds(&schema, &signature, data.n).await {
            eprintln!("  postgres: reusing schema {schema}");
            return Ok(schema);
        }
        eprintln!("  postgres: copying {main} to {schema} without the filter indexes");
        let started = Instant::now();
        let store = postgres::fresh_store(&self.url, &schema, 1).await?;
        let pool = store.pool();
        for index in FILTER_INDEXES {
            sqlx::query(AssertSqlSafe(format!("DROP INDEX IF EXISTS {index}")))
                .execute(pool)
                .await?;
        }
        let partitions: Vec<(String, String)> = sqlx::query_as(AssertSqlSafe(format!(
            "SELECT c.relname::text, pg_get_expr(c.relpartbound, c.oid) FROM pg_inherits i \
             JOIN pg_class c ON c.oid = i.inhrelid WHERE i.inhparent = '{main}.audit_logs'::regclass"
        )))
        .fetch_all(pool)
        .await?;
        for (name, bound) in partitions {
            sqlx::query(AssertSqlSafe(format!(
                "CREATE TABLE {schema}.{name} PARTITION OF {schema}.audit_logs {bound}"
            )))
            .execute(pool)
            .await?;
        }
        sqlx::query(AssertSqlSafe(format!(
            "INSERT INTO {schema}.audit_logs SELECT * FROM {main}.audit_logs"
        )))
        .execute(pool)
        .await?;
        pool.close().await;
        eprintln!("    copied in {:.1} s", started.elapsed().as_secs_f64());
        self.finish(&schema, &signature).await?;
        Ok(schema)
    }

    async fn drop_smoke_schemas(&self) {
        for schema in [SMOKE_SCHEMA.to_owned(), format!("{SMOKE_SCHEMA}_noidx")] {
            let _ = postgres::drop_schema(&self.url, &schema).await;
        }
    }

    /// Prints each query's custom and generic plan, executed (`EXPLAIN (ANALYZE, BUFFERS)`).
    async fn explain(&self, label: &str, schema: &str, prepared: &[Prepared]) -> BoxResult<()> {
        println!("\n=== PostgreSQL EXPLAIN (ANALYZE, BUFFERS) ({label}) ===");
        let mut conn = self.connection(schema).await?;
        for p in prepared {
            let statement = Statement::page(Dialect::Postgres, &p.query);
            let matching = pg_count(&mut conn, &p.query).await?;
            print_case(p, matching, &statement.sql);
            for mode in ["custom", "generic"] {
                conn.execute(AssertSqlSafe(format!(
                    "SET plan_cache_mode = force_{mode}_plan; PREPARE bench_q({}) AS {}",
                    statement.pg_types(),
                    statement.sql
                )))
                .await?;
                let rows = sqlx::raw_sql(AssertSqlSafe(format!(
                    "EXPLAIN (ANALYZE, BUFFERS) EXECUTE bench_q({})",
                    statement.pg_literals()
                )))
                .fetch_all(&mut conn)
                .await?;
                conn.execute("DEALLOCATE bench_q; RESET plan_cache_mode")
                    .await?;
                println!("   [{mode} plan]");
                for row in rows {
                    let line: String = row.try_get(0)?;
                    println!("   {line}");
                }
            }
        }
        conn.close().await?;
        Ok(())
    }
}

/// How many rows the query selects without its limit, through a statement prepared as the
/// store's are.
async fn pg_count(conn: &mut PgConnection, query: &RecordQuery) -> BoxResult<i64> {
    let count = Statement::count(Dialect::Postgres, query);
    conn.execute(AssertSqlSafe(format!(
        "PREPARE bench_count({}) AS {}",
        count.pg_types(),
        count.sql
    )))
    .await?;
    let matching: i64 = sqlx::raw_sql(AssertSqlSafe(format!(
        "EXECUTE bench_count({})",
        count.pg_literals()
    )))
    .fetch_one(&mut *conn)
    .await?
    .try_get(0)?;
    conn.execute("DEALLOCATE bench_count").await?;
    Ok(matching)
}

/// Whether the page query this benchmark explains is the one the store sends: every statement
/// text `store::sql` builds for the cases must be one the store prepared on the benchmark
/// connection. Prints a warning when not (the measurements stay valid, the plans would not).
async fn pg_check_mirror(pool: &PgPool, prepared: &[Prepared]) -> BoxResult<()> {
    let statements: Vec<String> =
        sqlx::query_scalar("SELECT statement FROM pg_prepared_statements")
            .fetch_all(pool)
            .await?;
    let stale: Vec<&str> = prepared
        .iter()
        .filter(|p| !statements.contains(&Statement::page(Dialect::Postgres, &p.query).sql))
        .map(|p| p.case.key)
        .collect();
    if stale.is_empty() {
        println!(
            "\n  EXPLAIN mirror: the page SQL matches what the store prepared, for every case"
        );
    } else {
        println!(
            "\n  WARNING: the page SQL explained differs from what the store prepared for {}: \
             the plans below are not those of the measured queries",
            stale.join(", ")
        );
    }
    Ok(())
}

/// The generic/custom plan counts of the page statements on the benchmark connection.
async fn pg_plan_cache(pool: &PgPool) -> BoxResult<()> {
    let rows = sqlx::query(
        "SELECT statement, generic_plans, custom_plans FROM pg_prepared_statements \
         WHERE statement LIKE 'SELECT time_ms, id, record FROM audit_logs%' ORDER BY statement",
    )
    .fetch_all(pool)
    .await?;
    println!("\n  prepared page statements on the benchmark connection (generic / custom plans):");
    for row in rows {
        let (statement, generic, custom): (String, i64, i64) =
            (row.try_get(0)?, row.try_get(1)?, row.try_get(2)?);
        // What follows the account and time range: the filters and the cursor condition.
        let rest = statement
            .split_once("time_ms < $3")
            .map_or(statement.as_str(), |(_, rest)| rest);
        let rest = rest.split(" ORDER BY").next().unwrap_or("").trim();
        let shape = rest.strip_prefix("AND ").unwrap_or(rest).to_owned();
        println!(
            "    {:<50} generic {generic:>8}  custom {custom:>8}",
            if shape.is_empty() {
                "(no filter)".to_owned()
            } else {
                shape
            }
        );
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Measuring

fn bench_group<S: ChainedStore>(
    c: &mut Criterion,
    rt: &Runtime,
    group: &str,
    store: &S,
    router: &Router,
    prepared: &[Prepared],
    slow: bool,
) {
    let mut g = c.benchmark_group(group);
    if slow {
        // Tens of ms per query: flat sampling keeps the run to seconds.
        g.sampling_mode(SamplingMode::Flat)
            .sample_size(20)
            .measurement_time(Duration::from_secs(5));
    }
    for p in prepared {
        let failed = |what: &str, e: String| {
            FAILURES
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .entry(format!("{group}/{what}/{}", p.case.key))
                .or_insert((0, e))
                .0 += 1;
        };
        g.bench_function(BenchmarkId::new("http", p.case.key), |b| {
            b.to_async(rt).iter(|| async {
                match get(router, &p.uri).await {
                    Ok((StatusCode::OK, body)) => black_box(body.len()),
                    Ok((status, body)) => {
                        failed(
                            "http",
                            format!("{status}: {}", String::from_utf8_lossy(&body)),
                        );
                        0
                    }
                    Err(e) => {
                        failed("http", e.to_string());
                        0
                    }
                }
            });
        });
        g.bench_function(BenchmarkId::new("page", p.case.key), |b| {
            b.to_async(rt).iter(|| async {
                match store.page(&p.query).await.map(|page| page.rows) {
                    Ok(rows) if rows.len() >= p.rows => black_box(rows.len()),
                    Ok(rows) => {
                        failed("page", format!("{} rows, {} expected", rows.len(), p.rows));
                        0
                    }
                    Err(e) => {
                        failed("page", e.to_string());
                        0
                    }
                }
            });
        });
    }
    g.finish();
}

/// Measured calls that failed (a benchmark of errors is no benchmark): id → (count, first).
static FAILURES: Mutex<BTreeMap<String, (u64, String)>> = Mutex::new(BTreeMap::new());

/// Where a query's time goes below the store, on the raw pool, as the group `{backend}-sqlx`:
/// `select_1` (one round trip to the SQLite worker thread or the server, plus the pool's
/// ping), `rows_101` (the page query of the first case, all 101 rows fetched: what `page()`
/// runs) and `one_row` (the same scan, reading every record, aggregated into one row: the
/// engine's work without handing over 101 rows).
fn bench_diag<DB: sqlx::Database>(bench: &mut Bench<'_>, pool: &sqlx::Pool<DB>, first: &Prepared)
where
    for<'c> &'c mut DB::Connection: sqlx::Executor<'c, Database = DB>,
    for<'q> <DB as sqlx::Database>::Arguments: sqlx::IntoArguments<DB>,
    String: for<'q> sqlx::Encode<'q, DB> + sqlx::Type<DB>,
    i32: for<'q> sqlx::Encode<'q, DB> + sqlx::Type<DB>,
    i64: for<'q> sqlx::Encode<'q, DB> + sqlx::Type<DB>,
    Uuid: for<'q> sqlx::Encode<'q, DB> + sqlx::Type<DB>,
{
    let dialect = if bench.backend == "sqlite" {
        Dialect::Sqlite
    } else {
        Dialect::Postgres
    };
    let page = Statement::page(dialect, &first.query);
    let one_row = page.wrapped("SELECT count(*), sum(length(record)) FROM ({}) AS page");
    let group = format!("{}-sqlx", bench.backend);
    let rt = bench.rt;
    let mut g = bench.c.benchmark_group(&group);
    g.bench_function("select_1", |b| {
        b.to_async(rt)
            .iter(|| async { black_box(sqlx::query("SELECT 1").fetch_one(pool).await.is_ok()) });
    });
    g.bench_function("rows_101", |b| {
        b.to_async(rt)
            .iter(|| async { black_box(page.query().fetch_all(pool).await.map(|r| r.len()).ok()) });
    });
    g.bench_function("one_row", |b| {
        b.to_async(rt)
            .iter(|| async { black_box(one_row.query().fetch_one(pool).await.is_ok()) });
    });
    g.finish();
    bench.measured.push(Measured {
        backend: bench.backend,
        group,
        variant: "raw-sqlx",
        cases: Vec::new(),
    });
}

/// The cases a pool variant is measured with.
const VARIANT_CASES: [&str; 3] = ["1_unfiltered", "2_actor_email", "6_deep_page"];

/// A measured group, for the summary.
struct Measured {
    backend: &'static str,
    group: String,
    /// `all`, `no-comp` (without the composite filter indexes), `no-stats`, or a pool
    /// variant.
    variant: &'static str,
    cases: Vec<(&'static str, String)>,
}

fn router_for<S: ChainedStore>(store: S) -> Router {
    AuditLogRouter::new(store, |_: &http::request::Parts, _: &str| Access::Allowed).into_router()
}

/// What measuring one backend needs, and the groups measured so far.
struct Bench<'a> {
    c: &'a mut Criterion,
    rt: &'a Runtime,
    config: &'a Config,
    data: &'a Dataset,
    cases: &'a [Case],
    measured: &'a mut Vec<Measured>,
    backend: &'static str,
}

impl Bench<'_> {
    /// Measures `prepared` on `store` as the group `group`, noted as `variant`.
    fn group<S: ChainedStore>(
        &mut self,
        group: &str,
        variant: &'static str,
        store: &S,
        router: &Router,
        prepared: &[Prepared],
    ) {
        // Slow without the indexes or the statistics: flat sampling (not in test mode).
        let slow = matches!(variant, "no-comp" | "no-stats") && !self.config.smoke;
        bench_group(self.c, self.rt, group, store, router, prepared, slow);
        self.measured.push(Measured {
            backend: self.backend,
            group: group.to_owned(),
            variant,
            cases: prepared
                .iter()
                .map(|p| (p.case.key, p.case.what.clone()))
                .collect(),
        });
    }

    /// Measures [`VARIANT_CASES`] on `store` as the group `{backend}-{variant}`.
    fn variant<S: ChainedStore>(&mut self, variant: &'static str, store: &S) -> BoxResult<()> {
        let router = router_for(store.clone());
        let wanted: Vec<Case> = self
            .cases
            .iter()
            .filter(|c| VARIANT_CASES.contains(&c.key))
            .cloned()
            .collect();
        let prepared = self.rt.block_on(prepare(
            store,
            &router,
            self.data,
            &wanted,
            self.config.smoke,
        ))?;
        let group = format!("{}-{variant}", self.backend);
        self.group(&group, variant, store, &router, &prepared);
        Ok(())
    }

    /// The filtered cases, checked against `store` (a copy without the filter indexes).
    async fn prepare_filtered<S: ChainedStore>(
        &self,
        store: &S,
        router: &Router,
    ) -> BoxResult<Vec<Prepared>> {
        let filtered: Vec<Case> = self
            .cases
            .iter()
            .filter(|c| c.filter.is_some())
            .cloned()
            .collect();
        prepare(store, router, self.data, &filtered, self.config.smoke).await
    }
}

fn run_sqlite(bench: &mut Bench<'_>) -> BoxResult<()> {
    let (config, data, rt) = (bench.config, bench.data, bench.rt);
    let temp;
    let dir = match &config.cache_dir {
        Some(dir) => {
            std::fs::create_dir_all(dir)?;
            dir.clone()
        }
        None => {
            temp = tempfile::tempdir()?;
            temp.path().to_path_buf()
        }
    };
    let (store, path) = rt.block_on(sqlite_main(config, &dir, data))?;
    let router = router_for(store.clone());
    let prepared = rt.block_on(async {
        let prepared = prepare(&store, &router, data, bench.cases, config.smoke).await?;
        sqlite_explain("composite indexes", store.pool(), &prepared).await?;
        Ok::<_, BoxError>(prepared)
    })?;
    bench.group("sqlite", "all", &store, &router, &prepared);
    viewer::measure(bench.c, rt, "sqlite", &store, data, config.smoke)?;
    if config.pool_variants {
        bench_diag(bench, store.pool(), &prepared[0]);
        sqlite_pool_variants(bench, &path)?;
    }
    if config.no_index {
        let noidx = rt.block_on(sqlite_copy(
            config,
            &store,
            &dir,
            data,
            Without::FilterIndexes,
        ))?;
        let router = router_for(noidx.clone());
        let prepared = rt.block_on(async {
            let prepared = bench.prepare_filtered(&noidx, &router).await?;
            let label = "without the composite filter indexes";
            sqlite_explain(label, noidx.pool(), &prepared).await?;
            Ok::<_, BoxError>(prepared)
        })?;
        bench.group("sqlite-noindex", "no-comp", &noidx, &router, &prepared);
        rt.block_on(noidx.pool().close());
    }
    if config.no_stats {
        sqlite_without_stats(bench, &store, &dir)?;
    }
    rt.block_on(store.pool().close());
    Ok(())
}

/// The pool variants: the same database through pools opened like the store's own but for a
/// larger row buffer, no ping before each acquire, or both.
fn sqlite_pool_variants(bench: &mut Bench<'_>, path: &Path) -> BoxResult<()> {
    // (variant, row buffer of 1024 instead of 50, ping before every acquire)
    for (variant, row_buffer, ping) in [
        ("rowbuf", true, true),
        ("noping", false, false),
        ("tuned", true, false),
    ] {
        let mut options = SqliteConnectOptions::new()
            .filename(path)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(Duration::from_secs(10));
        if row_buffer {
            options = options.row_buffer_size(1024);
        }
        let pool = bench.rt.block_on(
            SqlitePoolOptions::new()
                .max_connections(4)
                .test_before_acquire(ping)
                .connect_with(options),
        )?;
        let store = SqliteStore::new(pool);
        bench.variant(variant, &store)?;
        bench.rt.block_on(store.pool().close());
    }
    Ok(())
}

/// The queries whose plan changes without `ANALYZE` statistics, on a copy without them.
fn sqlite_without_stats(bench: &mut Bench<'_>, store: &SqliteStore, dir: &Path) -> BoxResult<()> {
    let (config, data, rt) = (bench.config, bench.data, bench.rt);
    let nostats = rt.block_on(sqlite_copy(config, store, dir, data, Without::Statistics))?;
    let router = router_for(nostats.clone());
    let prepared = rt.block_on(async {
        let mut differing = Vec::new();
        for p in prepare(&nostats, &router, data, bench.cases, config.smoke).await? {
            let statement = Statement::page(Dialect::Sqlite, &p.query);
            let with = sqlite_plan(store.pool(), &statement).await?;
            let without = sqlite_plan(nostats.pool(), &statement).await?;
            if with != without {
                differing.push(p);
            }
        }
        Ok::<_, BoxError>(differing)
    })?;
    if prepared.is_empty() {
        println!("\nsqlite: every query plans the same without ANALYZE statistics");
    } else {
        println!(
            "\nsqlite: without ANALYZE statistics these plan differently (see above): {}",
            prepared
                .iter()
                .map(|p| p.case.key)
                .collect::<Vec<_>>()
                .join(", ")
        );
        bench.group("sqlite-nostats", "no-stats", &nostats, &router, &prepared);
    }
    rt.block_on(nostats.pool().close());
    Ok(())
}

fn run_postgres(bench: &mut Bench<'_>) -> BoxResult<()> {
    let (config, data, rt) = (bench.config, bench.data, bench.rt);
    let pg = match rt.block_on(Pg::connect(&config.pg_url)) {
        Ok(pg) => pg,
        Err(e) => {
            println!("\npostgres: skipped ({e}); set AUDIT_BENCH_POSTGRES_URL to run it");
            return Ok(());
        }
    };
    let schema = config.schema();
    rt.block_on(pg.main(config, data))?;
    // One connection: the benchmark is sequential, and the plan counts of
    // `pg_prepared_statements` are then those of every measured query.
    let store = PostgresStore::new(rt.block_on(pg.pool(schema, 1))?);
    let router = router_for(store.clone());
    let prepared = rt.block_on(async {
        let prepared = prepare(&store, &router, data, bench.cases, config.smoke).await?;
        pg_check_mirror(store.pool(), &prepared).await?;
        pg.explain("composite indexes", schema, &prepared).await?;
        Ok::<_, BoxError>(prepared)
    })?;
    bench.group("postgres", "all", &store, &router, &prepared);
    viewer::measure(bench.c, rt, "postgres", &store, data, config.smoke)?;
    if config.pool_variants {
        bench_diag(bench, store.pool(), &prepared[0]);
    }
    rt.block_on(pg_plan_cache(store.pool()))?;
    if config.pool_variants {
        let pool = rt.block_on(
            PgPoolOptions::new()
                .max_connections(1)
                .test_before_acquire(false)
                .connect_with(postgres::in_schema(&config.pg_url, schema)?),
        )?;
        let noping = PostgresStore::new(pool);
        bench.variant("noping", &noping)?;
        rt.block_on(noping.pool().close());
    }
    if config.no_index {
        let noidx_schema = rt.block_on(pg.noidx(config, data))?;
        let noidx = PostgresStore::new(rt.block_on(pg.pool(&noidx_schema, 1))?);
        let router = router_for(noidx.clone());
        let prepared = rt.block_on(async {
            let prepared = bench.prepare_filtered(&noidx, &router).await?;
            let label = "without the composite filter indexes";
            pg.explain(label, &noidx_schema, &prepared).await?;
            Ok::<_, BoxError>(prepared)
        })?;
        bench.group("postgres-noindex", "no-comp", &noidx, &router, &prepared);
        rt.block_on(pg_plan_cache(noidx.pool()))?;
        rt.block_on(noidx.pool().close());
    }
    rt.block_on(store.pool().close());
    if config.smoke {
        rt.block_on(pg.drop_smoke_schemas());
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Summary

/// Criterion's median estimate (ns) of `group/function/key`, if written during this run.
fn median_ns(group: &str, function: &str, key: &str, since: SystemTime) -> Option<f64> {
    estimate(&criterion_dir().join(group).join(function).join(key), since)
}

/// Criterion's median estimate (ns) of `group/function`, if written during this run.
fn median_ns_fn(group: &str, function: &str, since: SystemTime) -> Option<f64> {
    estimate(&criterion_dir().join(group).join(function), since)
}

fn estimate(dir: &Path, since: SystemTime) -> Option<f64> {
    let path = dir.join("new").join("estimates.json");
    let modified = std::fs::metadata(&path).ok()?.modified().ok()?;
    if modified < since {
        return None;
    }
    let json: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).ok()?).ok()?;
    json["median"]["point_estimate"].as_f64()
}

fn show(ns: Option<f64>) -> String {
    match ns {
        None => "-".into(),
        Some(ns) if ns < 1e6 => format!("{:.0} µs", ns / 1e3),
        Some(ns) => format!("{:.2} ms", ns / 1e6),
    }
}

fn summary(measured: &[Measured], since: SystemTime, rows: usize) {
    println!(
        "\n=== Medians (criterion median estimates), {rows} rows, load average now {} ===",
        load_averages()
    );
    println!(
        "{:<9} {:<8} {:<20} {:>10} {:>10} {:>10}  {:<5}  query",
        "backend", "variant", "case", "http", "page()", "http-page", "<1ms"
    );
    for m in measured.iter().filter(|m| m.variant == "raw-sqlx") {
        let get = |f: &str| show(median_ns_fn(&m.group, f, since));
        println!(
            "{:<9} raw sqlx on the pool: SELECT 1 {}, page query of (1) fetched as 101 rows {}, \
             the same scan aggregated into one row {}",
            m.backend,
            get("select_1"),
            get("rows_101"),
            get("one_row"),
        );
    }
    for m in measured {
        for (key, what) in &m.cases {
            let http = median_ns(&m.group, "http", key, since);
            let page = median_ns(&m.group, "page", key, since);
            let envelope = http.zip(page).map(|(h, p)| h - p);
            let goal = http.map_or("-", |h| if h < 1e6 { "yes" } else { "NO" });
            println!(
                "{:<9} {:<8} {:<20} {:>10} {:>10} {:>10}  {:<5}  {what}",
                m.backend,
                m.variant,
                key,
                show(http),
                show(page),
                show(envelope),
                goal,
            );
        }
    }
    println!(
        "(criterion's estimates are under {})",
        criterion_dir().display()
    );
}

fn run() -> BoxResult<()> {
    let config = Config::from_env()?;
    let started = SystemTime::now();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let mut c = Criterion::default()
        .warm_up_time(Duration::from_secs(2))
        .measurement_time(Duration::from_secs(5))
        .configure_from_args();
    println!(
        "query bench: {} rows{}, backends: {}{}; load average {}; {} CPUs",
        config.rows,
        if config.smoke {
            " (test mode: each benchmark once)"
        } else {
            ""
        },
        if config.sqlite { "sqlite " } else { "" },
        if config.postgres { "postgres" } else { "" },
        load_averages(),
        support::cpus(),
    );
    let data = dataset(config.rows);
    let cases = cases(&data, config.smoke)?;
    let mut measured = Vec::new();
    for (on, backend, run) in [
        (
            config.sqlite,
            "sqlite",
            run_sqlite as fn(&mut Bench<'_>) -> BoxResult<()>,
        ),
        (config.postgres, "postgres", run_postgres),
    ] {
        if on {
            run(&mut Bench {
                c: &mut c,
                rt: &rt,
                config: &config,
                data: &data,
                cases: &cases,
                measured: &mut measured,
                backend,
            })?;
        }
    }
    c.final_summary();
    if !config.smoke {
        summary(&measured, started, config.rows);
        viewer::summary(&data, started);
    }
    let failures = std::mem::take(&mut *FAILURES.lock().unwrap_or_else(PoisonError::into_inner));
    if !failures.is_empty() {
        for (id, (count, first)) in &failures {
            eprintln!("query bench: {id}: {count} measured calls failed; first: {first}");
        }
        return Err(format!("{} benchmarks measured failing calls", failures.len()).into());
    }
    if config.smoke {
        println!("query bench: test mode passed ({} rows)", config.rows);
    }
    Ok(())
}
