//! Shared helpers for the audit-store integration tests: per-test databases (a SQLite file in
//! a temp dir, or a PostgreSQL schema of its own), record builders, a fault-injecting store
//! wrapper, and the `backend_tests!` macro that runs one test body against every backend.

#![allow(dead_code)]

use std::future::Future;
use std::io::{self, Write as _};
use std::net::{IpAddr, Ipv6Addr};
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use audit_layer::record::{
    Account, Action, ActionResult, ActionType, Actor, ActorContext, ActorType, AuditRecord, Raw,
    Resource, Timestamp, Token, Zone,
};
use audit_store::chain::ChainKeys;
use audit_store::export::{Destination, ExportJob, ExportMetrics, ExportStatus};
use audit_store::model::{COLUMNS, ColumnType, StoredRecord};
use audit_store::pipeline::{self, IngestSink, PipelineBuilder, PipelineMetrics};
use audit_store::store::intercept::{Intercepted, Interceptor};
use audit_store::store::{AuditStore, ChainedStore, ExportPositions};
use audit_store::{PostgresStore, SqliteStore, StoreError};
use sqlx::postgres::{PgConnectOptions, PgConnection, PgPool, PgPoolOptions};
use sqlx::sqlite::SqlitePool;
use sqlx::{AssertSqlSafe, Connection, Row};
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;
use uuid::Uuid;

/// SplitMix64, the benchmarks' generator (`benches/support` owns it): the same data on every
/// run.
#[path = "../../benches/support/rng.rs"]
mod rng;

/// Loopback ports below the kernel's ephemeral range (the same helper as `audit-tests`').
#[path = "../../../tests/src/ports.rs"]
#[allow(unreachable_pub)]
mod ports;
#[allow(unused_imports)]
pub(crate) use ports::free_port;

pub(crate) use rng::Rng;

/// What every test returns.
pub(crate) type TestResult<T = ()> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

/// The environment variable naming the PostgreSQL server the Postgres tests use.
pub(crate) const POSTGRES_URL_VAR: &str = "AUDIT_TEST_POSTGRES_URL";

/// The environment variable naming the Python (with the `cloudflare` SDK) of `sdk_compat`.
pub(crate) const SDK_PYTHON_VAR: &str = "AUDIT_SDK_PYTHON";

/// No test may take longer than this; a hang fails instead of stalling the run.
pub(crate) const TEST_TIMEOUT: Duration = Duration::from_secs(25);

/// Instantiates each listed test body once per backend, the way tower-sessions runs one set
/// of route tests against every session store.
///
/// Each name must be an `async fn name<S: ChainedStore>(fx: &Fixture<S>) -> TestResult` in the
/// invoking module. The macro generates `mod sqlite` and `mod postgres`, each holding one
/// `#[tokio::test]` per name that sets up a fresh database for that backend, runs the body
/// (with a time limit) and tears the database down again. Without `AUDIT_TEST_POSTGRES_URL`
/// the Postgres instances are skipped (see [`skip`]).
///
/// `backend_tests!(limit = LIMIT; names...)` gives bodies that take longer than
/// [`TEST_TIMEOUT`] a limit of their own, and a multi-threaded runtime.
#[allow(
    unused_macros,
    reason = "not every test binary that shares this module uses it"
)]
macro_rules! backend_tests {
    (@backend $module:ident, $backend:ident, $attribute:meta, $limit:expr, $($test:ident),+) => {
        mod $module {
            $(
                #[$attribute]
                async fn $test() -> $crate::common::TestResult {
                    let Some(fixture) =
                        <$crate::common::$backend as $crate::common::Backend>::setup().await?
                    else {
                        return Ok(());
                    };
                    let outcome = $crate::common::time_limit($limit, super::$test(&fixture)).await;
                    fixture.teardown().await?;
                    outcome
                }
            )+
        }
    };
    (limit = $limit:expr; $($test:ident),+ $(,)?) => {
        backend_tests!(
            @backend sqlite, Sqlite, tokio::test(flavor = "multi_thread", worker_threads = 2),
            $limit, $($test),+
        );
        backend_tests!(
            @backend postgres, Postgres, tokio::test(flavor = "multi_thread", worker_threads = 2),
            $limit, $($test),+
        );
    };
    ($($test:ident),+ $(,)?) => {
        backend_tests!(@backend sqlite, Sqlite, tokio::test, $crate::common::TEST_TIMEOUT, $($test),+);
        backend_tests!(
            @backend postgres, Postgres, tokio::test, $crate::common::TEST_TIMEOUT, $($test),+
        );
    };
}

/// Runs a test body, failing it if it takes longer than `limit`.
pub(crate) async fn time_limit<T>(
    limit: Duration,
    body: impl Future<Output = TestResult<T>>,
) -> TestResult<T> {
    match tokio::time::timeout(limit, body).await {
        Ok(outcome) => outcome,
        Err(_) => Err(format!("test did not finish within {limit:?}").into()),
    }
}

// ---------------------------------------------------------------------------------------------
// Tests that cannot run here
// ---------------------------------------------------------------------------------------------

/// Says that the calling test cannot run here, because of `why`, and lets it return.
///
/// Under CI (the variable `CI` is `true`) a test that cannot run must not pass: this panics,
/// naming the test, `what` could not run, why, and the fix. Elsewhere the test is skipped: one
/// line `SKIPPED <test>: <why>` goes straight to the process's stderr (libtest captures only
/// `print!` and `eprint!`, so the line shows in `cargo test`'s output) and the caller returns.
pub(crate) fn skip(what: &str, why: &str) {
    let current = std::thread::current();
    // libtest runs each test on a thread named after it.
    let test = current.name().unwrap_or("a test");
    if std::env::var("CI").is_ok_and(|ci| ci == "true") {
        panic!(
            "{test}: {what} cannot run under CI: {why}. Set the variable it needs \
             (`bash .ci/run` sets both {POSTGRES_URL_VAR} and {SDK_PYTHON_VAR})"
        );
    }
    let _ = writeln!(io::stderr(), "SKIPPED {test}: {why}");
}

/// The value of the environment variable `var`; `None`, after [`skip`] for `what`, when it is
/// unset or blank.
pub(crate) fn env_or_skip(var: &str, what: &str) -> Option<String> {
    match std::env::var(var) {
        Ok(value) if !value.trim().is_empty() => Some(value),
        _ => {
            skip(what, &format!("{var} is not set"));
            None
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Backends and fixtures
// ---------------------------------------------------------------------------------------------

/// A database to run a test against.
pub(crate) trait Backend {
    /// The store type.
    type Store: AuditStore;
    /// A fresh, migrated, empty database; `None` when the backend is not configured here.
    async fn setup() -> TestResult<Option<Fixture<Self::Store>>>;
}

/// The embedded SQLite backend: a fresh database file in a temp dir per test.
pub(crate) struct Sqlite;

/// The PostgreSQL backend: a fresh schema per test on `AUDIT_TEST_POSTGRES_URL`.
pub(crate) struct Postgres;

/// Direct access to the test's database, for what the store trait does not expose.
#[derive(Clone, Debug)]
pub(crate) enum Db {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

/// A stored row, as read back directly.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct DbRow {
    pub(crate) id: Uuid,
    pub(crate) account_id: Option<String>,
    pub(crate) time_ms: i64,
    pub(crate) action_type: String,
    pub(crate) record: String,
}

/// The text columns compared against [`StoredRecord`], in [`COLUMNS`] order: all but
/// `record` (`id`, `time_ms` and `raw_status_code` are not text).
pub(crate) fn text_columns() -> Vec<&'static str> {
    COLUMNS
        .iter()
        .filter(|c| c.ty == ColumnType::Text && c.name != "record")
        .map(|c| c.name)
        .collect()
}

impl Db {
    /// Every row, ordered by time then id.
    pub(crate) async fn rows(&self) -> TestResult<Vec<DbRow>> {
        const SQL: &str = "SELECT id, account_id, time_ms, action_type, record FROM audit_logs \
                           ORDER BY time_ms, id";
        type Tuple = (Uuid, Option<String>, i64, String, String);
        let tuples: Vec<Tuple> = match self {
            Self::Sqlite(pool) => sqlx::query_as(SQL).fetch_all(pool).await?,
            Self::Postgres(pool) => sqlx::query_as(SQL).fetch_all(pool).await?,
        };
        Ok(tuples
            .into_iter()
            .map(|(id, account_id, time_ms, action_type, record)| DbRow {
                id,
                account_id,
                time_ms,
                action_type,
                record,
            })
            .collect())
    }

    /// The rows whose `action_type` is `gap`.
    pub(crate) async fn gap_rows(&self) -> TestResult<Vec<DbRow>> {
        Ok(self
            .rows()
            .await?
            .into_iter()
            .filter(|r| r.action_type == "gap")
            .collect())
    }

    /// `time_ms`, `raw_status_code` and the [`text_columns`] of the row with `id`.
    pub(crate) async fn columns(
        &self,
        id: Uuid,
    ) -> TestResult<Option<(i64, Option<i32>, Vec<Option<String>>)>> {
        let select = format!(
            "SELECT time_ms, raw_status_code, {} FROM audit_logs WHERE id = ",
            text_columns().join(", ")
        );
        match self {
            Self::Sqlite(pool) => {
                let row = sqlx::query(AssertSqlSafe(format!("{select}?")))
                    .bind(id)
                    .fetch_optional(pool)
                    .await?;
                row.map(|r| r.read()).transpose()
            }
            Self::Postgres(pool) => {
                let row = sqlx::query(AssertSqlSafe(format!("{select}$1")))
                    .bind(id)
                    .fetch_optional(pool)
                    .await?;
                row.map(|r| r.read()).transpose()
            }
        }
    }

    /// The partitions of `audit_logs` (PostgreSQL), sorted; empty for SQLite.
    pub(crate) async fn partitions(&self) -> TestResult<Vec<String>> {
        match self {
            Self::Sqlite(_) => Ok(Vec::new()),
            Self::Postgres(pool) => Ok(sqlx::query_scalar(
                "SELECT c.relname::text FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid \
                 WHERE i.inhparent = to_regclass('audit_logs') ORDER BY 1",
            )
            .fetch_all(pool)
            .await?),
        }
    }

    /// Whether this is PostgreSQL.
    pub(crate) fn is_postgres(&self) -> bool {
        matches!(self, Self::Postgres(_))
    }
}

/// Reads the [`Db::columns`] tuple from either backend's row type.
trait RowAccess {
    fn read(&self) -> TestResult<(i64, Option<i32>, Vec<Option<String>>)>;
}

macro_rules! row_access {
    ($row:ty) => {
        impl RowAccess for $row {
            fn read(&self) -> TestResult<(i64, Option<i32>, Vec<Option<String>>)> {
                let count = text_columns().len();
                let mut texts = Vec::with_capacity(count);
                for i in 0..count {
                    texts.push(self.try_get::<Option<String>, _>(i + 2)?);
                }
                Ok((self.try_get(0)?, self.try_get(1)?, texts))
            }
        }
    };
}
row_access!(sqlx::sqlite::SqliteRow);
row_access!(sqlx::postgres::PgRow);

/// One test's database: the store, direct access to it, and what cleans it up.
pub(crate) struct Fixture<S> {
    pub(crate) store: S,
    pub(crate) db: Db,
    pub(crate) backend: &'static str,
    cleanup: Cleanup,
}

enum Cleanup {
    /// The SQLite file's directory, deleted on drop.
    Dir(tempfile::TempDir),
    /// The Postgres schema, dropped by [`Fixture::teardown`] or, if the test panicked, by
    /// the guard's `Drop`.
    Schema(SchemaGuard),
}

impl<S> Fixture<S> {
    /// Removes the test's database.
    pub(crate) async fn teardown(self) -> TestResult {
        match self.cleanup {
            Cleanup::Dir(dir) => {
                dir.close()?;
                Ok(())
            }
            Cleanup::Schema(guard) => guard.drop_now().await,
        }
    }
}

impl Backend for Sqlite {
    type Store = SqliteStore;

    async fn setup() -> TestResult<Option<Fixture<SqliteStore>>> {
        let dir = tempfile::tempdir()?;
        let store = sqlite_in(dir.path()).await?;
        Ok(Some(Fixture {
            db: Db::Sqlite(store.pool().clone()),
            store,
            backend: "sqlite",
            cleanup: Cleanup::Dir(dir),
        }))
    }
}

/// Drops a test's Postgres schema (CASCADE) when dropped, unless already dropped.
pub(crate) struct SchemaGuard {
    url: String,
    schema: String,
    armed: bool,
}

impl SchemaGuard {
    /// Drops `schema` at the end (whether or not it exists by then).
    pub(crate) fn new(url: &str, schema: &str) -> Self {
        Self {
            url: url.to_owned(),
            schema: schema.to_owned(),
            armed: true,
        }
    }

    /// A fresh schema `<prefix>_<uuid>` on `url`, dropped at the end, and a pool whose
    /// `search_path` is it.
    pub(crate) async fn fresh(url: &str, prefix: &str) -> TestResult<(Self, PgPool)> {
        let guard = Self::new(url, &fresh_schema_name(prefix));
        let mut admin = PgConnection::connect(url).await?;
        sqlx::query(AssertSqlSafe(format!("CREATE SCHEMA {}", guard.schema)))
            .execute(&mut admin)
            .await?;
        admin.close().await?;
        let options = PgConnectOptions::from_str(url)?.options([("search_path", &guard.schema)]);
        let pool = PgPoolOptions::new()
            .max_connections(4)
            .connect_with(options)
            .await?;
        Ok((guard, pool))
    }

    async fn drop_now(mut self) -> TestResult {
        self.armed = false;
        drop_schema(&self.url, &self.schema).await
    }
}

impl Drop for SchemaGuard {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        // Reached when a test panicked (or returned early): clean up on a thread of its own,
        // since `Drop` cannot await and the test's runtime may be the one unwinding.
        let (url, schema) = (self.url.clone(), self.schema.clone());
        let cleanup = std::thread::spawn(move || -> Result<(), String> {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| e.to_string())?;
            runtime
                .block_on(drop_schema(&url, &schema))
                .map_err(|e| e.to_string())
        });
        match cleanup.join() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => eprintln!("could not drop test schema {}: {e}", self.schema),
            Err(_) => eprintln!(
                "could not drop test schema {}: cleanup panicked",
                self.schema
            ),
        }
    }
}

/// A schema name no other test uses: `<prefix>_` and a UUID (letters, digits and `_` only:
/// safe to splice into SQL as an identifier).
pub(crate) fn fresh_schema_name(prefix: &str) -> String {
    format!("{prefix}_{}", Uuid::now_v7().simple())
}

async fn drop_schema(url: &str, schema: &str) -> TestResult {
    let mut conn = PgConnection::connect(url).await?;
    // Never wait forever on a lock a leaked connection still holds.
    sqlx::query("SET lock_timeout = '10s'")
        .execute(&mut conn)
        .await?;
    sqlx::query(AssertSqlSafe(format!(
        "DROP SCHEMA IF EXISTS {schema} CASCADE"
    )))
    .execute(&mut conn)
    .await?;
    conn.close().await?;
    Ok(())
}

/// The Postgres URL for tests, or `None` (after [`skip`]) when it is not set.
pub(crate) fn postgres_url() -> Option<String> {
    env_or_skip(POSTGRES_URL_VAR, "a PostgreSQL test")
}

impl Backend for Postgres {
    type Store = PostgresStore;

    async fn setup() -> TestResult<Option<Fixture<PostgresStore>>> {
        let Some(url) = postgres_url() else {
            return Ok(None);
        };
        let (guard, pool) = SchemaGuard::fresh(&url, "audit_test").await?;
        let store = PostgresStore::new(pool.clone());
        store.migrate().await?;
        Ok(Some(Fixture {
            store,
            db: Db::Postgres(pool),
            backend: "postgres",
            cleanup: Cleanup::Schema(guard),
        }))
    }
}

/// A migrated SQLite store in the file `audit.db` of `dir`.
pub(crate) async fn sqlite_in(dir: &std::path::Path) -> TestResult<SqliteStore> {
    let store = SqliteStore::open(dir.join("audit.db")).await?;
    store.migrate().await?;
    Ok(store)
}

/// A fresh SQLite fixture, for tests that run on SQLite only.
pub(crate) async fn sqlite() -> TestResult<Fixture<SqliteStore>> {
    Sqlite::setup()
        .await?
        .ok_or_else(|| "the SQLite backend is always available".into())
}

// ---------------------------------------------------------------------------------------------
// Records
// ---------------------------------------------------------------------------------------------

/// `2025-03-10T09:00:00.000Z`: a fixed base time for records whose time matters.
pub(crate) const BASE_MS: i64 = 1_741_597_200_000;

/// Milliseconds since the epoch of an RFC 3339 time (a test's constant: a typo panics).
pub(crate) fn ms(rfc3339: &str) -> i64 {
    rfc3339
        .parse::<Timestamp>()
        .expect("a valid test time")
        .unix_millis()
}

/// A UUIDv7 for a record at `time_ms`, its random bits drawn from `rng`: records of the same
/// millisecond order by them, not by when they were made.
pub(crate) fn record_id(rng: &mut Rng, time_ms: i64) -> Uuid {
    let mut random = [0u8; 10];
    random[..8].copy_from_slice(&rng.next_u64().to_be_bytes());
    random[8..].copy_from_slice(&rng.next_u64().to_be_bytes()[..2]);
    uuid::Builder::from_unix_timestamp_millis(time_ms as u64, &random).into_uuid()
}

/// A typical record of `account` at `time_ms`, with a fresh id. Records of the same account
/// serialize to the same length (ids and times have fixed widths).
pub(crate) fn record(account: Option<&str>, time_ms: i64) -> AuditRecord {
    let id = Uuid::now_v7();
    AuditRecord {
        id,
        account: account.map(|id| Account {
            id: id.to_owned(),
            name: None,
        }),
        action: Action {
            description: Some("Update a Notification policy".into()),
            result: ActionResult::Success,
            time: Timestamp::from_unix_millis(time_ms),
            kind: ActionType::Update,
        },
        actor: Actor {
            context: Some(ActorContext::ApiToken),
            email: Some("alice@example.com".to_owned()),
            id: Some("user_1".to_owned()),
            ip_address: Some(IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1))),
            token: Token {
                id: Some("tok_1".to_owned()),
                name: Some("deploy".to_owned()),
            },
            kind: Some(ActorType::User),
        },
        raw: Raw {
            method: Some("PUT".to_owned()),
            cf_ray_id: id.simple().to_string(),
            status_code: Some(200),
            uri: Some("/alerting/v3/policies/pol_1?verbose=REDACTED".to_owned()),
            user_agent: Some("curl/8.5.0".to_owned()),
            client_request_id: None,
            client_gone: false,
        },
        resource: Resource {
            id: Some("pol_1".to_owned()),
            product: Some("alerting".into()),
            request: Some(serde_json::json!({"name": "page me", "enabled": true}).into()),
            response: Some(serde_json::json!({"id": "pol_1"}).into()),
            scope: Some("accounts".into()),
            kind: Some("policies".into()),
        },
        zone: None,
        change: None,
        trace: None,
        service: None,
    }
}

/// [`record`] with a zone.
pub(crate) fn zoned_record(account: &str, zone: &str, time_ms: i64) -> AuditRecord {
    let mut r = record(Some(account), time_ms);
    r.zone = Some(Zone {
        id: zone.to_owned(),
        name: None,
    });
    r
}

/// The JSON the store must hold for `record`.
pub(crate) fn json(record: &AuditRecord) -> TestResult<String> {
    Ok(serde_json::to_string(record)?)
}

/// `records` flattened for [`AuditStore::insert`].
pub(crate) fn rows(records: &[AuditRecord]) -> TestResult<Vec<StoredRecord>> {
    records
        .iter()
        .map(|r| StoredRecord::from_record(r).map_err(Into::into))
        .collect()
}

/// The account id of a record, or `""` without one.
pub(crate) fn account_of(record: &AuditRecord) -> &str {
    record.account.as_ref().map_or("", |a| a.id.as_str())
}

/// The bytes a record takes in the spool: its JSON line and the newline.
pub(crate) fn spool_line_len(record: &AuditRecord) -> TestResult<u64> {
    Ok(json(record)?.len() as u64 + 1)
}

// ---------------------------------------------------------------------------------------------
// Pipelines
// ---------------------------------------------------------------------------------------------

/// A builder with test-speed timings: short flushes, quick retries and probes.
pub(crate) fn fast<S: ChainedStore>(store: S) -> PipelineBuilder<S> {
    pipeline::builder(store)
        // The tests' records are dated from `BASE_MS`, older than the default period by now:
        // a test of retention sets its own.
        .retention(None)
        .flush_interval(Duration::from_millis(5))
        .retry(3, Duration::from_millis(1), Duration::from_millis(4))
        .probe_interval(Duration::from_millis(10))
}

/// Builds the pipeline and spawns it.
pub(crate) async fn start<S: ChainedStore>(
    builder: PipelineBuilder<S>,
) -> TestResult<(IngestSink, JoinHandle<()>)> {
    let (sink, pipeline) = builder.build().await?;
    Ok((sink, tokio::spawn(pipeline.run())))
}

/// Shuts the pipeline down and waits for its task, then returns the final counters.
pub(crate) async fn stop(sink: &IngestSink, worker: JoinHandle<()>) -> TestResult<PipelineMetrics> {
    sink.shutdown().await;
    worker.await?;
    Ok(sink.metrics())
}

/// Waits (polling) until `condition` holds, for up to 10 s.
pub(crate) async fn eventually(what: &str, mut condition: impl FnMut() -> bool) -> TestResult {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !condition() {
        if tokio::time::Instant::now() >= deadline {
            return Err(format!("timed out waiting for {what}").into());
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    Ok(())
}

/// An export job running in a task of its own until [`stop`](Self::stop)ped.
pub(crate) struct RunningJob {
    /// Its counters, live.
    pub(crate) status: ExportStatus,
    stop: oneshot::Sender<()>,
    task: JoinHandle<()>,
}

impl RunningJob {
    /// Runs `job` in a task of its own.
    pub(crate) fn spawn<S: ExportPositions + 'static, D: Destination>(
        job: ExportJob<S, D>,
    ) -> Self {
        let status = job.status();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(job.run(async move {
            let _ = stopped.await;
        }));
        Self { status, stop, task }
    }

    /// Stops the job (a delivery in flight gets the job's stop grace) and waits for its task to end.
    pub(crate) async fn stop(self) -> TestResult {
        let _ = self.stop.send(());
        self.task.await?;
        Ok(())
    }
}

/// Runs an export job named `name` of `store`'s records to `destination`, with short waits,
/// until `done` holds of its counters or `limit` passes: its counters then.
pub(crate) async fn run_export<S: ExportPositions + 'static, D: Destination>(
    name: &str,
    store: S,
    destination: D,
    limit: Duration,
    done: impl Fn(&ExportMetrics) -> bool,
) -> TestResult<ExportMetrics> {
    let job = ExportJob::new(name, store, destination)?
        .settle(Duration::ZERO)
        .poll_interval(Duration::from_millis(20))
        .backoff(Duration::from_millis(20), Duration::from_millis(100));
    let running = RunningJob::spawn(job);
    let mut waited = Duration::ZERO;
    while !done(&running.status.snapshot()) && waited < limit {
        tokio::time::sleep(Duration::from_millis(20)).await;
        waited += Duration::from_millis(20);
    }
    let status = running.status.clone();
    running.stop().await?;
    Ok(status.snapshot())
}

/// Waits (polling) until the store holds `n` records, for up to 10 s.
pub(crate) async fn until_count<S: ChainedStore>(store: &S, n: u64) -> TestResult {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let count = store.count().await?;
        if count == n {
            return Ok(());
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(format!("timed out waiting for {n} stored records (have {count})").into());
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// The fastest of nine writes of 4 records into `account` (times from `BASE_MS` on), each
/// checked to store its 4. A small batch written by `COPY` waited 40 ms every time: sqlx
/// 0.9.0 leaves Nagle's algorithm on, and the kernel held the `COPY`'s last message until
/// the server's delayed acknowledgement.
pub(crate) async fn fastest_small_write<S: ChainedStore>(
    store: &S,
    account: &str,
) -> TestResult<Duration> {
    let mut fastest = Duration::MAX;
    for i in 0..9 {
        let batch: Vec<AuditRecord> = (0..4)
            .map(|j| record(Some(account), BASE_MS + i * 4 + j))
            .collect();
        let rows = rows(&batch)?;
        let started = std::time::Instant::now();
        assert_eq!(store.insert(&rows).await?, 4);
        fastest = fastest.min(started.elapsed());
    }
    Ok(fastest)
}

/// The `*.seg` files in a spool directory and their total size.
pub(crate) fn spool_segments(dir: &std::path::Path) -> TestResult<(usize, u64)> {
    let mut files = 0;
    let mut bytes = 0;
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        if entry.file_name().to_string_lossy().ends_with(".seg") {
            files += 1;
            bytes += entry.metadata()?.len();
        }
    }
    Ok((files, bytes))
}

// ---------------------------------------------------------------------------------------------
// FlakyStore
// ---------------------------------------------------------------------------------------------

/// A test double wrapping a real store: `insert` fails for the next N calls, or while "down"
/// is set (then `ping` fails too), or waits while "held", and takes at least its set latency.
/// Everything else, and every insert it lets through, is the real store's. Its faults are set
/// through [`interceptor`](Intercepted::interceptor) ([`Flaky`]).
pub(crate) type FlakyStore<S> = Intercepted<S, Flaky>;

/// `inner`, wrapped; initially it behaves exactly like `inner`.
pub(crate) fn flaky_store<S: AuditStore>(inner: S) -> FlakyStore<S> {
    Intercepted::new(inner, Flaky::new())
}

/// The faults of a [`FlakyStore`], shared by its clones.
#[derive(Clone)]
pub(crate) struct Flaky(Arc<FlakyState>);

struct FlakyState {
    /// Inserts still to fail.
    fail_next: AtomicUsize,
    /// A failing insert writes the batch first, then reports an error (an "unclear" failure,
    /// as when the commit succeeded but the answer was lost).
    fail_after_writing: AtomicBool,
    /// The database is unreachable: inserts and pings fail.
    down: AtomicBool,
    /// Inserts wait while this is true.
    held: watch::Sender<bool>,
    /// What every insert takes at least, in microseconds (a database far away or busy).
    latency_us: AtomicU64,
    /// Inserts waiting on `held` now.
    waiting: AtomicUsize,
    /// Insert calls, including failed ones.
    calls: AtomicUsize,
    /// Insert calls that reported failure.
    failures: AtomicUsize,
    /// The rows of every insert that succeeded, in call order: (account, time, id).
    written: Mutex<Vec<(Option<String>, i64, Uuid)>>,
}

impl Flaky {
    fn new() -> Self {
        Self(Arc::new(FlakyState {
            fail_next: AtomicUsize::new(0),
            fail_after_writing: AtomicBool::new(false),
            down: AtomicBool::new(false),
            held: watch::Sender::new(false),
            latency_us: AtomicU64::new(0),
            waiting: AtomicUsize::new(0),
            calls: AtomicUsize::new(0),
            failures: AtomicUsize::new(0),
            written: Mutex::default(),
        }))
    }

    /// The next `n` inserts fail; with `after_writing`, each writes its batch first.
    pub(crate) fn fail_next(&self, n: usize, after_writing: bool) {
        self.0
            .fail_after_writing
            .store(after_writing, Ordering::SeqCst);
        self.0.fail_next.store(n, Ordering::SeqCst);
    }

    /// Takes the database down (or brings it back).
    pub(crate) fn set_down(&self, down: bool) {
        self.0.down.store(down, Ordering::SeqCst);
    }

    /// Every insert from now on takes at least `latency` (the round trips of a transaction
    /// to a database that is far away or busy).
    pub(crate) fn set_latency(&self, latency: Duration) {
        self.0.latency_us.store(
            u64::try_from(latency.as_micros()).unwrap_or(u64::MAX),
            Ordering::SeqCst,
        );
    }

    /// Makes inserts wait until [`release`](Self::release).
    pub(crate) fn hold(&self) {
        self.0.held.send_replace(true);
    }

    /// Lets waiting and later inserts through.
    pub(crate) fn release(&self) {
        self.0.held.send_replace(false);
    }

    /// Inserts waiting on [`hold`](Self::hold) now.
    pub(crate) fn waiting(&self) -> usize {
        self.0.waiting.load(Ordering::SeqCst)
    }

    /// Insert calls so far.
    pub(crate) fn calls(&self) -> usize {
        self.0.calls.load(Ordering::SeqCst)
    }

    /// Insert calls that failed so far.
    pub(crate) fn failures(&self) -> usize {
        self.0.failures.load(Ordering::SeqCst)
    }

    /// The rows of the successful inserts, in the order they were written.
    pub(crate) fn written(&self) -> Vec<(Option<String>, i64, Uuid)> {
        self.0
            .written
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn unavailable(&self) -> StoreError {
        self.0.failures.fetch_add(1, Ordering::SeqCst);
        StoreError::Database(sqlx::Error::Io(io::Error::new(
            io::ErrorKind::ConnectionRefused,
            "flaky test store: database unavailable",
        )))
    }
}

impl Interceptor for Flaky {
    async fn insert<S: AuditStore>(
        &self,
        inner: &S,
        records: &[StoredRecord],
    ) -> audit_store::Result<u64> {
        self.0.calls.fetch_add(1, Ordering::SeqCst);
        let mut held = self.0.held.subscribe();
        if *held.borrow_and_update() {
            self.0.waiting.fetch_add(1, Ordering::SeqCst);
            let _ = held.wait_for(|held| !*held).await;
            self.0.waiting.fetch_sub(1, Ordering::SeqCst);
        }
        let latency = self.0.latency_us.load(Ordering::SeqCst);
        if latency > 0 {
            tokio::time::sleep(Duration::from_micros(latency)).await;
        }
        if self.0.down.load(Ordering::SeqCst) {
            return Err(self.unavailable());
        }
        let fail = self
            .0
            .fail_next
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok();
        if fail {
            if self.0.fail_after_writing.load(Ordering::SeqCst) {
                inner.insert(records).await?;
            }
            return Err(self.unavailable());
        }
        let new = inner.insert(records).await?;
        self.0
            .written
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .extend(
                records
                    .iter()
                    .map(|r| (r.account_id.clone(), r.time_ms, r.id)),
            );
        Ok(new)
    }

    async fn ping<S: AuditStore>(&self, inner: &S) -> audit_store::Result<()> {
        if self.0.down.load(Ordering::SeqCst) {
            return Err(StoreError::Database(sqlx::Error::Io(io::Error::new(
                io::ErrorKind::ConnectionRefused,
                "flaky test store: database unavailable",
            ))));
        }
        inner.ping().await
    }
}

/// The fixture stores, given chain keys.
pub(crate) trait Chainable: ChainedStore {
    /// The same database, chaining every record with `keys`.
    fn with_chain(&self, keys: ChainKeys) -> Self;
}

impl Chainable for SqliteStore {
    fn with_chain(&self, keys: ChainKeys) -> Self {
        self.clone().chained(keys)
    }
}

impl Chainable for PostgresStore {
    fn with_chain(&self, keys: ChainKeys) -> Self {
        self.clone().chained(keys)
    }
}

impl Db {
    /// Runs a statement (test SQL with literal values only, valid in both dialects).
    pub(crate) async fn exec(&self, sql: &str) -> TestResult<u64> {
        let sql = AssertSqlSafe(sql.to_owned());
        Ok(match self {
            Self::Sqlite(pool) => sqlx::query(sql).execute(pool).await?.rows_affected(),
            Self::Postgres(pool) => sqlx::query(sql).execute(pool).await?.rows_affected(),
        })
    }
}

/// Checks that, within each account, `written` holds records in increasing time order, and
/// that no id was written twice.
pub(crate) fn assert_in_order_per_account(written: &[(Option<String>, i64, Uuid)]) {
    let mut last: std::collections::HashMap<Option<String>, i64> = Default::default();
    let mut seen = std::collections::HashSet::new();
    for (account, time, id) in written {
        assert!(seen.insert(*id), "record {id} was written twice");
        if let Some(previous) = last.insert(account.clone(), *time) {
            assert!(
                previous < *time,
                "account {account:?}: a record of {time} was written after one of {previous}"
            );
        }
    }
}

// ---------------------------------------------------------------------------------------------
// A router's answers
// ---------------------------------------------------------------------------------------------

/// An answer of a router, read whole.
#[derive(Debug)]
pub(crate) struct Reply {
    pub(crate) status: http::StatusCode,
    /// The `Content-Type` (empty when there is none).
    pub(crate) content_type: String,
    pub(crate) headers: http::HeaderMap,
    pub(crate) body: bytes::Bytes,
}

impl Reply {
    pub(crate) fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub(crate) fn json(&self) -> TestResult<serde_json::Value> {
        serde_json::from_slice(&self.body)
            .map_err(|e| format!("not JSON ({e}): {}", self.text()).into())
    }
}

/// The answer of `router` to `GET uri` with `headers` (`None` values are left out).
pub(crate) async fn get(
    router: &axum::Router,
    uri: &str,
    headers: &[(http::header::HeaderName, Option<&str>)],
) -> TestResult<Reply> {
    use http_body_util::BodyExt as _;
    use tower::ServiceExt as _;

    let mut request = http::Request::get(uri);
    for (name, value) in headers {
        if let Some(value) = value {
            request = request.header(name, *value);
        }
    }
    let response = router
        .clone()
        .oneshot(request.body(axum::body::Body::empty())?)
        .await?;
    let status = response.status();
    let content_type = response
        .headers()
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    let headers = response.headers().clone();
    let body = response.into_body().collect().await?.to_bytes();
    Ok(Reply {
        status,
        content_type,
        headers,
        body,
    })
}

/// `Bearer <token>`, for an `Authorization` header.
pub(crate) fn bearer(token: Option<&str>) -> Option<String> {
    token.map(|token| format!("Bearer {token}"))
}
