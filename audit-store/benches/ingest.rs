//! Ingest load benchmark: realistic ~600-byte records through the real pipeline
//! (`pipeline::builder(store)` → `IngestSink::submit` → batches → `store.insert`), next to the
//! databases' own bulk loaders loading the same rows into the same table with the same
//! indexes, in the same run:
//!
//! - SQLite: `sqlite3 <db> -cmd '.mode csv' '.import --skip 0 rows.csv audit_logs'`;
//! - PostgreSQL: `psql <url> -c "\copy audit_logs(<24 columns>) FROM 'rows.csv' CSV"`.
//!
//! A load harness, not criterion: one long run per configuration.
//!
//! ```text
//! cargo bench -p audit-store --bench ingest -- --rows 1000000 [--backend sqlite|postgres|both]
//! cargo bench -p audit-store --bench ingest -- --quick      # 20k rows, CI smoke, < 60 s
//! ```
//!
//! Other options: `--index-rows N` (rows for the index-cost runs, default 200,000),
//! `--pg-writers 2,3,4` (pipeline writers tried for PostgreSQL), `--no-index-cost`,
//! `--breakdown` (time serialization and direct `store.insert` apart from the pipeline),
//! `--experiments` (changes to the defaults, each through the same pipeline: SQLite page size,
//! cache and batch size, including the settings before they were tuned; PostgreSQL 1,000-row
//! batches), `--seed N`,
//! `--sample N` (print N generated records as JSON lines and exit), `--sqlite3-cache-kib N`
//! (give the sqlite3 shell a page cache too; the store uses 16,384 KiB).
//!
//! Under `cargo test --benches` (no `--bench` argument) it runs a 2,000-row smoke pass and
//! skips whatever is missing instead of failing.
//!
//! # Requirements
//!
//! - The `sqlite3` command-line shell for the SQLite reference: `apt-get install -y sqlite3`.
//!   Without it the reference is skipped with a message.
//! - `psql` and a PostgreSQL server at `AUDIT_BENCH_POSTGRES_URL`, else
//!   `AUDIT_TEST_POSTGRES_URL`, else `postgres://postgres@127.0.0.1:5432/test`. The benchmark
//!   drops and recreates the schema `audit_bench` for every run; nothing else is touched.
//!   Server CPU is read from `/proc` when the server runs on this machine.
//!
//! # What is measured, and how it is kept fair
//!
//! - Records are generated before the clock starts (deterministic from `--seed`, by the
//!   generator in `benches/support`; times spread over the 30 days ending now, in time order,
//!   ids UUIDv7 of their time). The CSV is written from the same records through
//!   `StoredRecord::from_record`, column by column in the store's own column table, so both
//!   sides load identical column values.
//! - Every run starts on a fresh database (SQLite file) or a fresh schema (PostgreSQL), built by
//!   the store's own `migrate()`: the same table and the same indexes for both tools. For the
//!   index-cost runs the secondary indexes are dropped after `migrate()`.
//! - Ours: the clock runs from the first `submit` until the last record is committed (the
//!   pipeline's `stored` counter reaches N), with `shutdown()` already called; how much later
//!   `shutdown()` returns is reported separately (it waits for the recovery task's next
//!   probe). The producer respects backpressure (pauses while the queue holds more than one
//!   lane's capacity) and the run asserts that nothing was dropped.
//! - CPU per row: ours is this process's user+system time (it includes SQLite itself, which is
//!   embedded); a reference tool's is its child process's time. For PostgreSQL the server's CPU
//!   (its postmaster and children, including reaped backends) is reported alongside.
//! - PostgreSQL: the table is partitioned by month. Ours creates partitions as it goes (inside
//!   the timed run). For `\copy`, the partitions are created before the clock starts by
//!   inserting one row per day of the data through the store and deleting them again.
//!   A `CHECKPOINT` precedes every timed PostgreSQL run.
//! - SQLite: the database file is created by `SqliteStore::open` for both tools, so the
//!   reference loads into the same page size (the 16 MiB page cache is a connection setting:
//!   the shell keeps its default 2 MB). `.import` cannot write BLOBs, so the reference stores
//!   `id` as its 36-character text and empty strings where ours stores NULL (CSV has no NULL
//!   for `.import`). Same table, same indexes; the reference's rows are a little larger (it is
//!   not favoured by this).

mod support;

use std::collections::BTreeMap;
use std::io::{BufWriter, Write as _};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use audit_layer::record::AuditRecord;
use audit_layer::sink::AuditSink;
use audit_store::model::{COLUMNS, ColumnValue, LINK_COLUMNS, StoredRecord};
use audit_store::store::{AuditStore, ChainedStore, sql};
use audit_store::{PostgresStore, SqliteStore, pipeline};
use sqlx::postgres::PgPool;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::{AssertSqlSafe, Connection as _};
use uuid::Uuid;

use support::cpu::{self, Cpu};
use support::records::{DAY_MS, Dataset};
use support::world::{Profile, World};
use support::{Argv, Backend, BoxResult, Common, postgres, section, sqlite};

const SCHEMA: &str = "audit_bench";
/// The pipeline's queue capacity (its documented default, set explicitly so the producer
/// knows the lane size).
const QUEUE_CAPACITY: usize = 65_536;
/// The pipeline's queue bound in bytes (its documented default, set explicitly so the
/// producer knows it): the queue is full at whichever bound comes first.
const QUEUE_BYTES: u64 = 16 << 20;
/// The producer looks at the queue depth every this many submits.
const CHECK_EVERY: usize = 64;
/// The index every query uses; the one kept by the "one index" configuration.
const MAIN_INDEX: &str = "audit_logs_account_time";
/// The advisory lock that keeps concurrent runs out of each other's schema.
const LOCK_KEY: i64 = 0x6175_6469_745f_6263;
/// `--sqlite3-cache-kib`: a page cache for the sqlite3 shell too (it defaults to 2 MB).
static SQLITE3_CACHE_KIB: std::sync::OnceLock<u32> = std::sync::OnceLock::new();

fn main() {
    support::harness("ingest", USAGE, Args::parse, run);
}

const USAGE: &str = "usage: cargo bench -p audit-store --bench ingest -- [--rows N] \
[--backend sqlite|postgres|both] [--quick] [--index-rows N] [--pg-writers 2,3,4] \
[--no-index-cost] [--breakdown] [--experiments] [--seed N] [--sample N] [--sqlite3-cache-kib N]";

// ---------------------------------------------------------------------------------------------
// Command line

#[derive(Debug)]
struct Args {
    common: Common,
    index_rows: usize,
    pg_writers: Vec<usize>,
    index_cost: bool,
    breakdown: bool,
    experiments: bool,
}

impl Args {
    fn parse() -> BoxResult<Self> {
        let mut argv = Argv::from_env(USAGE, 0x00a0_d17e);
        let mut index_rows = None;
        let mut pg_writers = None;
        let mut index_cost = true;
        let mut breakdown = false;
        let mut experiments = false;
        while let Some(arg) = argv.next_flag()? {
            match arg.as_str() {
                "--index-rows" => index_rows = Some(argv.count("--index-rows")?),
                "--pg-writers" => pg_writers = Some(parse_writers(&argv.value("--pg-writers")?)?),
                "--no-index-cost" => index_cost = false,
                "--breakdown" => breakdown = true,
                "--experiments" => experiments = true,
                "--sample" => {
                    print_sample(argv.seed, argv.count("--sample")?)?;
                    std::process::exit(0);
                }
                "--sqlite3-cache-kib" => {
                    let kib: u32 = argv.value("--sqlite3-cache-kib")?.parse()?;
                    let _ = SQLITE3_CACHE_KIB.set(kib);
                }
                other => argv.unknown(other)?,
            }
        }
        let common = argv.common()?;
        let (rows, smoke) = (common.rows, common.smoke);
        let index_rows = index_rows.unwrap_or(if smoke || common.quick { rows } else { 200_000 });
        Ok(Self {
            index_rows: index_rows.min(rows).max(1),
            pg_writers: pg_writers.unwrap_or_else(|| if smoke { vec![2] } else { vec![2, 3, 4] }),
            // On 2,000 debug-build rows the index cost says nothing; keep CI's smoke run short.
            index_cost: index_cost && !smoke,
            breakdown,
            experiments,
            common,
        })
    }
}

/// `--pg-writers 2,3,4`.
fn parse_writers(list: &str) -> BoxResult<Vec<usize>> {
    let parsed: Result<Vec<usize>, _> = list.split(',').map(|w| w.trim().parse()).collect();
    let parsed = parsed.map_err(|e| format!("--pg-writers {list}: {e}"))?;
    if parsed.is_empty() || parsed.contains(&0) {
        return Err("--pg-writers takes writer counts of at least 1".into());
    }
    Ok(parsed)
}

/// `--sample N`: the first `n` records of the data set for `seed`, as JSON lines.
fn print_sample(seed: u64, n: usize) -> BoxResult<()> {
    let data = Dataset {
        world: Arc::new(World::new(seed, Profile::INGEST)),
        n: n.max(1000),
        seed,
        end_ms: 1_767_225_600_000,
    };
    for record in data.iter().take(n) {
        println!("{}", serde_json::to_string(&record)?);
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// The rows as CSV, for the reference loaders

/// A data set written as CSV (the stored columns in table order), and facts about it.
struct Csv {
    path: PathBuf,
    bytes: u64,
    avg_json: f64,
    /// One row of each day in the data (their ids altered): inserting them creates every
    /// PostgreSQL partition the data needs.
    one_per_day: Vec<StoredRecord>,
}

impl Csv {
    fn write(data: &Dataset, path: &Path) -> BoxResult<Self> {
        let file = std::fs::File::create(path)?;
        let mut out = BufWriter::with_capacity(1 << 20, file);
        let mut line = Vec::with_capacity(4096);
        let mut json_bytes = 0_u64;
        let mut per_day: BTreeMap<i64, StoredRecord> = BTreeMap::new();
        for record in data.iter() {
            let row = StoredRecord::from_record(&record)?;
            json_bytes += row.record.len() as u64;
            line.clear();
            csv_row(&mut line, &row);
            out.write_all(&line)?;
            per_day.entry(row.time_ms.div_euclid(DAY_MS)).or_insert(row);
        }
        out.flush()?;
        Ok(Self {
            path: path.to_owned(),
            bytes: std::fs::metadata(path)?.len(),
            avg_json: json_bytes as f64 / data.n as f64,
            one_per_day: per_day.into_values().collect(),
        })
    }
}

/// One CSV line of `r`: every stored column in [`COLUMNS`] order.
fn csv_row(out: &mut Vec<u8>, r: &StoredRecord) {
    fn text(out: &mut Vec<u8>, v: Option<&str>) {
        // NULL is an empty unquoted field; every value is quoted, so "" stays an empty string.
        if let Some(s) = v {
            out.push(b'"');
            for b in s.bytes() {
                if b == b'"' {
                    out.push(b'"');
                }
                out.push(b);
            }
            out.push(b'"');
        }
    }
    for column in &COLUMNS {
        match column.value(r) {
            ColumnValue::Uuid(id) => text(out, Some(&id.hyphenated().to_string())),
            ColumnValue::BigInt(v) => out.extend_from_slice(v.to_string().as_bytes()),
            ColumnValue::Int(Some(v)) => out.extend_from_slice(v.to_string().as_bytes()),
            ColumnValue::Int(None) => {}
            ColumnValue::Text(v) => text(out, v),
        }
        out.push(b',');
    }
    // The last field's comma becomes the line end.
    out.pop();
    out.push(b'\n');
}

// ---------------------------------------------------------------------------------------------
// Runs

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Indexes {
    /// Everything `migrate()` creates.
    All,
    /// The primary key and `audit_logs_account_time`.
    One,
    /// The primary key only.
    None,
}

impl Indexes {
    fn label(self) -> &'static str {
        match self {
            Self::All => "all (migrate)",
            Self::One => "pk+account_time",
            Self::None => "pk only",
        }
    }

    fn keeps(self, index: &str) -> bool {
        match self {
            Self::All => true,
            Self::One => index == MAIN_INDEX,
            Self::None => false,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Tool {
    /// Our pipeline; `variant` names a non-default configuration (experiments).
    Ours {
        writers: usize,
        variant: &'static str,
    },
    Reference,
}

#[derive(Clone, Debug)]
struct Measured {
    backend: Backend,
    indexes: Indexes,
    tool: Tool,
    rows: usize,
    wall: Duration,
    cpu: Cpu,
    /// Bytes on disk after the load (database file, or table + indexes).
    bytes: Option<u64>,
    /// Ours: how much longer `shutdown()` took to return after the last commit.
    shutdown_lag: Option<Duration>,
}

impl Measured {
    fn rate(&self) -> f64 {
        self.rows as f64 / self.wall.as_secs_f64().max(1e-9)
    }

    fn tool_name(&self) -> String {
        match (&self.tool, self.backend) {
            (Tool::Ours { writers, variant }, _) => format!(
                "ours: pipeline, {writers} writer{}{}{variant}",
                if *writers == 1 { "" } else { "s" },
                if variant.is_empty() { "" } else { ", " },
            ),
            (Tool::Reference, Backend::Sqlite) => match SQLITE3_CACHE_KIB.get() {
                Some(kib) => format!("sqlite3 .import, cache {} MiB", kib / 1024),
                None => "sqlite3 .import".to_owned(),
            },
            (Tool::Reference, Backend::Postgres) => "psql \\copy".to_owned(),
        }
    }

    /// Client-side ticks: ours is this process, a reference tool its child process.
    fn client_ticks(&self) -> u64 {
        match self.tool {
            Tool::Ours { .. } => self.cpu.own,
            Tool::Reference => self.cpu.children,
        }
    }

    /// The system-time part of [`client_ticks`](Self::client_ticks).
    fn client_sys_ticks(&self) -> u64 {
        match self.tool {
            Tool::Ours { .. } => self.cpu.own_sys,
            Tool::Reference => self.cpu.children_sys,
        }
    }
}

/// What a pipeline run measured: until the last commit, its CPU, and how much later
/// `shutdown()` returned.
struct PipelineRun {
    wall: Duration,
    cpu: Cpu,
    shutdown_lag: Duration,
}

/// Submits every record through the real pipeline and waits until all are committed.
async fn run_pipeline<S: ChainedStore>(
    store: S,
    records: Vec<AuditRecord>,
    writers: usize,
    batch_size: Option<usize>,
    server_cpu: Option<u32>,
) -> BoxResult<PipelineRun> {
    let n = records.len() as u64;
    let mut builder = pipeline::builder(store)
        .queue_capacity(QUEUE_CAPACITY)
        .queue_bytes(QUEUE_BYTES)
        .writers(writers);
    if let Some(batch) = batch_size {
        builder = builder.batch_size(batch);
    }
    let (sink, pipeline) = builder.build().await?;
    // Lanes are per account; keeping the whole queue under one lane's capacity guarantees no
    // lane can overflow, whatever the account mix.
    let high_water = QUEUE_CAPACITY
        .div_ceil(writers)
        .saturating_sub(2 * CHECK_EVERY)
        .max(CHECK_EVERY);
    let before = Cpu::before(server_cpu);
    let started = Instant::now();
    let worker = tokio::spawn(pipeline.run());
    for (i, record) in records.into_iter().enumerate() {
        if i % CHECK_EVERY == 0 {
            // Half the byte bound leaves room for CHECK_EVERY records of the largest size.
            while {
                let m = sink.metrics();
                m.queue_depth as usize >= high_water || m.queue_bytes >= QUEUE_BYTES / 2
            } {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        }
        sink.submit(record);
    }
    // The clock stops when the last record is committed (`stored` counts committed rows);
    // `shutdown()` returns later, by up to the pipeline's probe interval (see the report).
    let mut committed = None;
    {
        let shutdown = sink.shutdown();
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                () = &mut shutdown => break,
                () = tokio::time::sleep(Duration::from_millis(1)) => {
                    if committed.is_none() && sink.metrics().stored >= n {
                        committed = Some(started.elapsed());
                    }
                }
            }
        }
    }
    worker.await?;
    let until_shutdown = started.elapsed();
    let cpu = Cpu::after(server_cpu).since(before);
    let wall = committed.unwrap_or(until_shutdown);
    let m = sink.metrics();
    if m.dropped != 0 || m.stored != n || m.spooled != 0 {
        return Err(format!(
            "pipeline lost records: {n} submitted, {} stored, {} dropped, {} spooled ({m:?})",
            m.stored, m.dropped, m.spooled
        )
        .into());
    }
    if m.failed_writes != 0 {
        eprintln!(
            "  warning: {} batch writes failed and were retried",
            m.failed_writes
        );
    }
    Ok(PipelineRun {
        wall,
        cpu,
        shutdown_lag: until_shutdown.saturating_sub(wall),
    })
}

/// Runs an external loader and times it; its CPU is this process's reaped-children time.
fn run_tool(mut command: Command, server_cpu: Option<u32>) -> BoxResult<(Duration, Cpu)> {
    let before = Cpu::before(server_cpu);
    let started = Instant::now();
    let output = command.output()?;
    let wall = started.elapsed();
    let cpu = Cpu::after(server_cpu).since(before);
    let stderr = String::from_utf8_lossy(&output.stderr);
    if !output.status.success() || !stderr.trim().is_empty() {
        let stderr: String = stderr.chars().take(2000).collect();
        return Err(format!("{command:?} failed ({}): {stderr}", output.status).into());
    }
    Ok((wall, cpu))
}

fn have(program: &str) -> bool {
    Command::new("which")
        .arg(program)
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

fn check_count(what: &str, got: u64, want: usize) -> BoxResult<()> {
    if got == want as u64 {
        Ok(())
    } else {
        Err(format!("{what}: {got} rows in the table, expected {want}").into())
    }
}

// --- SQLite

/// The SQLite configurations `--experiments` tries, as changes to the store's defaults
/// (`SqliteStore::open`: 8 KiB pages, a 16 MiB page cache; the pipeline: batches of 10,000).
const SQLITE_EXPERIMENTS: [Tuning; 7] = [
    Tuning::DEFAULT,
    Tuning {
        cache_kib: Some(2_000),
        batch_size: Some(1_000),
        page_size: Some(4_096),
        label: "old defaults: 4 KiB pages, 2 MB cache, batch 1k",
    },
    BATCH_1K,
    Tuning {
        page_size: Some(4_096),
        label: "4 KiB pages",
        ..Tuning::DEFAULT
    },
    Tuning {
        cache_kib: Some(131_072),
        label: "cache 128 MiB",
        ..Tuning::DEFAULT
    },
    Tuning {
        cache_kib: Some(32_768),
        label: "cache 32 MiB (the default before 2026-11-26)",
        ..Tuning::DEFAULT
    },
    Tuning {
        cache_kib: Some(8_192),
        label: "cache 8 MiB",
        ..Tuning::DEFAULT
    },
];

/// The PostgreSQL configurations `--experiments` tries.
const POSTGRES_EXPERIMENTS: [Tuning; 2] = [Tuning::DEFAULT, BATCH_1K];

/// Batches of 1,000, the pipeline's default before it was tuned.
const BATCH_1K: Tuning = Tuning {
    batch_size: Some(1_000),
    label: "batch 1k",
    ..Tuning::DEFAULT
};

/// A change to the store's settings, to try it before making it in the store: the page cache
/// and page size are SQLite's, the batch size the pipeline's (for both backends).
#[derive(Clone, Copy, Debug)]
struct Tuning {
    /// `PRAGMA cache_size` in KiB (the store sets 16,384).
    cache_kib: Option<u32>,
    /// The pipeline's batch size (its default is 10,000).
    batch_size: Option<usize>,
    /// `PRAGMA page_size` for the new file (the store sets 8,192): rows of a `WITHOUT ROWID`
    /// table longer than about a quarter page spill into overflow pages.
    page_size: Option<u32>,
    label: &'static str,
}

impl Tuning {
    /// The store's own settings.
    const DEFAULT: Self = Self {
        cache_kib: None,
        batch_size: None,
        page_size: None,
        label: "",
    };

    fn is_default(&self) -> bool {
        self.cache_kib.is_none() && self.page_size.is_none()
    }
}

async fn sqlite_fresh(path: &Path, indexes: Indexes) -> BoxResult<SqliteStore> {
    sqlite_fresh_tuned(path, indexes, Tuning::DEFAULT).await
}

async fn sqlite_fresh_tuned(
    path: &Path,
    indexes: Indexes,
    tuning: Tuning,
) -> BoxResult<SqliteStore> {
    sqlite::remove(path);
    let store = if tuning.is_default() {
        SqliteStore::open(path).await?
    } else {
        // `SqliteStore::open`'s settings (its `with_options` is private: keep these in step),
        // with the tuning's changes.
        let page_size = tuning.page_size.unwrap_or(8_192);
        let cache_kib = tuning.cache_kib.unwrap_or(16_384);
        let options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .pragma("page_size", page_size.to_string())
            .pragma("cache_size", format!("-{cache_kib}"))
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(Duration::from_secs(10));
        // One connection, as the store's writer: one page cache, warmed by every insert.
        let pool = SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(options)
            .await?;
        SqliteStore::new(pool)
    };
    store.migrate().await?;
    drop_sqlite_indexes(store.pool(), indexes).await?;
    Ok(store)
}

async fn drop_sqlite_indexes(pool: &SqlitePool, indexes: Indexes) -> BoxResult<()> {
    let names: Vec<String> = sqlx::query_scalar(
        "SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'audit_logs' \
         AND sql IS NOT NULL",
    )
    .fetch_all(pool)
    .await?;
    for name in names.iter().filter(|n| !indexes.keeps(n)) {
        sqlx::query(AssertSqlSafe(format!("DROP INDEX \"{name}\"")))
            .execute(pool)
            .await?;
    }
    Ok(())
}

async fn sqlite_count(path: &Path) -> BoxResult<u64> {
    let store = SqliteStore::open(path).await?;
    let n = store.count().await?;
    store.pool().close().await;
    Ok(n)
}

async fn sqlite_ours(
    dir: &Path,
    data: &Dataset,
    indexes: Indexes,
    tuning: Tuning,
) -> BoxResult<Measured> {
    let path = dir.join("ours.db");
    let store = sqlite_fresh_tuned(&path, indexes, tuning).await?;
    let records = data.records();
    let run = run_pipeline(store.clone(), records, 1, tuning.batch_size, None).await?;
    store.pool().close().await;
    let bytes = sqlite::bytes(&path);
    check_count("sqlite ours", sqlite_count(&path).await?, data.n)?;
    sqlite::remove(&path);
    Ok(Measured {
        backend: Backend::Sqlite,
        indexes,
        tool: Tool::Ours {
            writers: 1,
            variant: tuning.label,
        },
        rows: data.n,
        wall: run.wall,
        cpu: run.cpu,
        bytes: Some(bytes),
        shutdown_lag: Some(run.shutdown_lag),
    })
}

async fn sqlite_reference(
    dir: &Path,
    csv: &Path,
    rows: usize,
    indexes: Indexes,
) -> BoxResult<Measured> {
    let path = dir.join("reference.db");
    let store = sqlite_fresh(&path, indexes).await?;
    // `.import` needs exactly the CSV's columns: drop the chain's (always NULL in an
    // unchained store, as in ours, whose partial chain index then holds no entry).
    sqlx::query("DROP INDEX IF EXISTS audit_logs_chain")
        .execute(store.pool())
        .await?;
    for column in LINK_COLUMNS.iter().rev() {
        sqlx::query(AssertSqlSafe(format!(
            "ALTER TABLE audit_logs DROP COLUMN {column}"
        )))
        .execute(store.pool())
        .await?;
    }
    // Nor the commit time our writes stamp (export reads in commit order): the CSV has no
    // such field, and `.import` would warn on every line. The reference keeps one index
    // fewer than ours, so this favours it.
    sqlx::query("DROP INDEX IF EXISTS audit_logs_account_committed")
        .execute(store.pool())
        .await?;
    sqlx::query("ALTER TABLE audit_logs DROP COLUMN committed_ms")
        .execute(store.pool())
        .await?;
    store.pool().close().await;
    let mut command = Command::new("sqlite3");
    command.arg(&path);
    if let Some(kib) = SQLITE3_CACHE_KIB.get() {
        command
            .arg("-cmd")
            .arg(format!("PRAGMA cache_size = -{kib}"));
    }
    command
        .arg("-cmd")
        .arg(".mode csv")
        .arg(format!(".import --skip 0 \"{}\" audit_logs", csv.display()));
    let (wall, cpu) = run_tool(command, None)?;
    let bytes = sqlite::bytes(&path);
    check_count("sqlite3 .import", sqlite_count(&path).await?, rows)?;
    sqlite::remove(&path);
    Ok(Measured {
        backend: Backend::Sqlite,
        indexes,
        tool: Tool::Reference,
        rows,
        wall,
        cpu,
        bytes: Some(bytes),
        shutdown_lag: None,
    })
}

// --- PostgreSQL

struct Postgres {
    url: String,
    /// The server's postmaster, when its processes are visible in /proc.
    local: Option<u32>,
    /// Holds an advisory lock for the whole run, so two benchmarks (say, one under
    /// `cargo test --benches`) never drop each other's schema.
    _lock: sqlx::PgConnection,
}

impl Postgres {
    /// Connects, and waits for any other ingest benchmark using the schema to finish.
    async fn connect() -> Result<Self, String> {
        let url = postgres::url_from_env().unwrap_or_else(|| postgres::DEFAULT_URL.to_owned());
        let local = postgres::reach(&url).await?;
        let failed = |e: sqlx::Error| format!("PostgreSQL at {url}: {e}");
        let mut lock = sqlx::PgConnection::connect(&url).await.map_err(failed)?;
        let locked: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
            .bind(LOCK_KEY)
            .fetch_one(&mut lock)
            .await
            .map_err(failed)?;
        if !locked {
            println!(
                "  another ingest benchmark is using schema {SCHEMA}; waiting for it to finish"
            );
            sqlx::query("SELECT pg_advisory_lock($1)")
                .bind(LOCK_KEY)
                .execute(&mut lock)
                .await
                .map_err(failed)?;
        }
        Ok(Self {
            url,
            local,
            _lock: lock,
        })
    }

    /// Drops and recreates the benchmark schema; returns a store whose pool lives in it,
    /// migrated and with the chosen indexes.
    async fn fresh(&self, indexes: Indexes) -> BoxResult<PostgresStore> {
        let store = postgres::fresh_store(&self.url, SCHEMA, 10).await?;
        let names: Vec<String> = sqlx::query_scalar(
            "SELECT c.relname::text FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid \
             WHERE i.indrelid = to_regclass('audit_logs') AND NOT i.indisprimary",
        )
        .fetch_all(store.pool())
        .await?;
        for name in names.iter().filter(|n| !indexes.keeps(n)) {
            sqlx::query(AssertSqlSafe(format!("DROP INDEX \"{name}\"")))
                .execute(store.pool())
                .await?;
        }
        Ok(store)
    }

    /// Flushes the server's dirty buffers so every timed run starts alike, then lets the
    /// backends of closed connections exit (their CPU would otherwise blur the server's).
    async fn checkpoint(&self, pool: &PgPool) {
        postgres::checkpoint(pool).await;
        tokio::time::sleep(Duration::from_millis(300)).await;
    }

    async fn ours(
        &self,
        data: &Dataset,
        indexes: Indexes,
        writers: usize,
        tuning: Tuning,
    ) -> BoxResult<Measured> {
        let store = self.fresh(indexes).await?;
        self.checkpoint(store.pool()).await;
        let records = data.records();
        let run = run_pipeline(
            store.clone(),
            records,
            writers,
            tuning.batch_size,
            self.local,
        )
        .await?;
        check_count("postgres ours", store.count().await?, data.n)?;
        let bytes = postgres::table_bytes(store.pool()).await?;
        store.pool().close().await;
        Ok(Measured {
            backend: Backend::Postgres,
            indexes,
            tool: Tool::Ours {
                writers,
                variant: tuning.label,
            },
            rows: data.n,
            wall: run.wall,
            cpu: run.cpu,
            bytes,
            shutdown_lag: Some(run.shutdown_lag),
        })
    }

    async fn reference(&self, csv: &Csv, rows: usize, indexes: Indexes) -> BoxResult<Measured> {
        let store = self.fresh(indexes).await?;
        // `\copy` into the partitioned parent needs the month partitions: let the store create
        // them (one row per day of the data), then remove those rows.
        let seeds: Vec<StoredRecord> = csv
            .one_per_day
            .iter()
            .enumerate()
            .map(|(i, r)| {
                let mut r = r.clone();
                r.id = Uuid::from_u128(i as u128 + 1);
                r
            })
            .collect();
        store.insert(&seeds).await?;
        sqlx::query("DELETE FROM audit_logs")
            .execute(store.pool())
            .await?;
        self.checkpoint(store.pool()).await;
        let mut command = Command::new("psql");
        command
            .arg(&self.url)
            .arg("-X")
            .arg("-q")
            .arg("-v")
            .arg("ON_ERROR_STOP=1")
            .arg("-c")
            .arg(format!(
                "\\copy audit_logs({}) FROM '{}' CSV",
                sql::columns(),
                csv.path.display()
            ))
            .env("PGOPTIONS", format!("-c search_path={SCHEMA}"));
        let (wall, cpu) = run_tool(command, self.local)?;
        check_count("psql \\copy", store.count().await?, rows)?;
        let bytes = postgres::table_bytes(store.pool()).await?;
        store.pool().close().await;
        Ok(Measured {
            backend: Backend::Postgres,
            indexes,
            tool: Tool::Reference,
            rows,
            wall,
            cpu,
            bytes,
            shutdown_lag: None,
        })
    }

    async fn drop_schema(&self) {
        let _ = postgres::drop_schema(&self.url, SCHEMA).await;
    }
}

// ---------------------------------------------------------------------------------------------
// The benchmark

/// What this machine offers the benchmark.
struct Env {
    ticks: f64,
    sqlite3: bool,
    psql: bool,
    postgres: Option<Postgres>,
}

impl Env {
    /// Looks for the reference tools and the PostgreSQL server, and says what is missing.
    async fn probe(args: &Args) -> BoxResult<Self> {
        let mut env = Self {
            ticks: cpu::clock_ticks_per_second(),
            sqlite3: have("sqlite3"),
            psql: have("psql"),
            postgres: None,
        };
        if args.common.backends.contains(&Backend::Sqlite) && !env.sqlite3 {
            println!(
                "  !! the sqlite3 command-line shell is not installed: the SQLite reference \
                 (.import) is skipped. Install it with `apt-get install -y sqlite3`."
            );
        }
        if env.sqlite3
            && let Ok(v) = Command::new("sqlite3").arg("--version").output()
        {
            let v = String::from_utf8_lossy(&v.stdout);
            println!(
                "  sqlite3 shell {}",
                v.split_whitespace().next().unwrap_or("?")
            );
        }
        if args.common.backends.contains(&Backend::Postgres) {
            match Postgres::connect().await {
                Ok(pg) => {
                    println!(
                        "  PostgreSQL at {} (schema {SCHEMA}); server CPU {}",
                        pg.url,
                        if pg.local.is_some() {
                            "read from /proc"
                        } else {
                            "not visible (remote server)"
                        }
                    );
                    if !env.psql {
                        println!(
                            "  !! psql is not installed: the PostgreSQL reference (\\copy) is \
                             skipped. Install it with `apt-get install -y postgresql-client`."
                        );
                    }
                    env.postgres = Some(pg);
                }
                Err(e) if args.common.postgres_required && !args.common.smoke => {
                    return Err(e.into());
                }
                Err(e) => println!("  !! {e}: PostgreSQL runs are skipped"),
            }
        }
        Ok(env)
    }

    /// `ticks` per row of `rows`, in µs.
    fn per_row(&self, ticks: u64, rows: usize) -> f64 {
        cpu::per_row(ticks, self.ticks, rows as u64)
    }

    /// The server to run `backend` on, if it runs here.
    fn runs(&self, backend: Backend) -> bool {
        backend == Backend::Sqlite || self.postgres.is_some()
    }
}

async fn run(args: Args) -> BoxResult<()> {
    println!("audit-store ingest benchmark, {} mode", args.common.mode());
    println!(
        "  machine: {} CPUs, load average {}",
        support::cpus(),
        cpu::load_averages()
    );
    let env = Env::probe(&args).await?;

    let tmp = tempfile::Builder::new().prefix("audit-ingest-").tempdir()?;
    let data = Dataset {
        world: Arc::new(World::new(args.common.seed, Profile::INGEST)),
        n: args.common.rows,
        seed: args.common.seed,
        end_ms: support::now_ms()?,
    };
    let started = Instant::now();
    let csv = Csv::write(&data, &tmp.path().join("rows.csv"))?;
    println!(
        "  data: {} records, average record JSON {:.0} bytes, CSV {:.1} MB (written in {:.1} s)",
        data.n,
        csv.avg_json,
        csv.bytes as f64 / 1e6,
        started.elapsed().as_secs_f64()
    );
    println!();

    let runs = Runs {
        args: &args,
        env: &env,
        dir: tmp.path(),
    };
    // (a)–(c): the full comparison, all indexes.
    let (results, best_writers) = runs.compare(&data, &csv).await?;

    // (d), and the experiments: on a smaller set.
    let small = Dataset {
        n: args.index_rows,
        ..data.clone()
    };
    let small_csv = if small.n == data.n || !(args.index_cost || args.experiments) {
        None
    } else {
        Some(Csv::write(&small, &tmp.path().join("rows-small.csv"))?)
    };
    let small_run = SmallRun {
        data: &small,
        csv: small_csv.as_ref().unwrap_or(&csv),
        writers: best_writers,
    };
    let index_results = if args.index_cost {
        runs.index_cost(&small_run).await?
    } else {
        Vec::new()
    };
    let experiment_results = if args.experiments {
        runs.experiments(&small_run).await?
    } else {
        Vec::new()
    };
    if let Some(small_csv) = &small_csv {
        let _ = std::fs::remove_file(&small_csv.path);
    }

    if args.breakdown {
        runs.breakdown(&data, best_writers).await?;
    }
    if let Some(pg) = &env.postgres {
        pg.drop_schema().await;
    }
    print_results(&args, &env, &results, &index_results, &experiment_results);
    Ok(())
}

/// One measured load of a data set.
#[derive(Clone, Copy, Debug)]
enum Load {
    /// Ours, through the pipeline.
    Ours {
        indexes: Indexes,
        writers: usize,
        tuning: Tuning,
    },
    /// The database's own bulk loader.
    Reference(Indexes),
}

impl Load {
    /// Ours with the store's settings.
    fn ours(indexes: Indexes, writers: usize) -> Self {
        Self::Ours {
            indexes,
            writers,
            tuning: Tuning::DEFAULT,
        }
    }
}

/// The runs of one benchmark: its options, this machine and the directory for its files.
struct Runs<'a> {
    args: &'a Args,
    env: &'a Env,
    dir: &'a Path,
}

impl Runs<'_> {
    /// Runs `load` on `backend` and prints its line; `None` when its reference tool is missing.
    async fn measure(
        &self,
        backend: Backend,
        data: &Dataset,
        csv: &Csv,
        load: Load,
    ) -> BoxResult<Option<Measured>> {
        let (env, dir) = (self.env, self.dir);
        let pg = env.postgres.as_ref();
        let measured = match load {
            Load::Ours {
                indexes,
                writers,
                tuning,
            } => match (backend, pg) {
                (Backend::Sqlite, _) => sqlite_ours(dir, data, indexes, tuning).await?,
                (Backend::Postgres, Some(pg)) => pg.ours(data, indexes, writers, tuning).await?,
                (Backend::Postgres, None) => return Ok(None),
            },
            Load::Reference(indexes) => match (backend, pg) {
                (Backend::Sqlite, _) if env.sqlite3 => {
                    sqlite_reference(dir, &csv.path, data.n, indexes).await?
                }
                (Backend::Postgres, Some(pg)) if env.psql => {
                    pg.reference(csv, data.n, indexes).await?
                }
                _ => return Ok(None),
            },
        };
        Ok(Some(report(measured, env)))
    }

    /// One part of the benchmark: for every backend that runs here, a section titled
    /// `<backend><title>` with the loads `loads` gives for it.
    async fn phase(
        &self,
        (data, csv): (&Dataset, &Csv),
        title: &str,
        loads: impl Fn(Backend) -> Vec<Load>,
    ) -> BoxResult<Vec<Measured>> {
        let mut results = Vec::new();
        let backends = &self.args.common.backends;
        for &backend in backends.iter().filter(|b| self.env.runs(**b)) {
            section(&format!("{}{title}", backend.title()));
            for load in loads(backend) {
                results.extend(self.measure(backend, data, csv, load).await?);
            }
        }
        Ok(results)
    }

    /// (a)–(c): ours against the reference tool, all indexes, every `--pg-writers` count. Returns
    /// the results and the fastest writer count.
    async fn compare(&self, data: &Dataset, csv: &Csv) -> BoxResult<(Vec<Measured>, usize)> {
        let args = self.args;
        let title = format!(", {} rows, all indexes", data.n);
        let results = self
            .phase((data, csv), &title, |backend| {
                let writers = match backend {
                    Backend::Sqlite => vec![1],
                    Backend::Postgres => args.pg_writers.clone(),
                };
                let ours = writers.into_iter().map(|w| Load::ours(Indexes::All, w));
                ours.chain([Load::Reference(Indexes::All)]).collect()
            })
            .await?;
        // The first of the fastest.
        let mut best: Option<&Measured> = None;
        for m in results.iter().filter(|m| m.backend == Backend::Postgres) {
            if matches!(m.tool, Tool::Ours { .. }) && best.is_none_or(|b| m.rate() > b.rate()) {
                best = Some(m);
            }
        }
        let best_writers = match best.map(|m| &m.tool) {
            Some(Tool::Ours { writers, .. }) => *writers,
            _ => args.pg_writers[0],
        };
        Ok((results, best_writers))
    }

    /// (d): what the indexes cost, ours and the reference, with every index, one, and none.
    async fn index_cost(&self, small: &SmallRun<'_>) -> BoxResult<Vec<Measured>> {
        let title = format!(": index cost, {} rows", small.data.n);
        self.phase((small.data, small.csv), &title, |backend| {
            [Indexes::All, Indexes::One, Indexes::None]
                .into_iter()
                .flat_map(|i| [Load::ours(i, small.writers(backend)), Load::Reference(i)])
                .collect()
        })
        .await
    }

    /// Configurations the store does not use today, through the same pipeline, after the
    /// reference.
    async fn experiments(&self, small: &SmallRun<'_>) -> BoxResult<Vec<Measured>> {
        let title = format!(": experiments, {} rows, all indexes", small.data.n);
        self.phase((small.data, small.csv), &title, |backend| {
            let tunings = match backend {
                Backend::Sqlite => SQLITE_EXPERIMENTS.to_vec(),
                Backend::Postgres => POSTGRES_EXPERIMENTS.to_vec(),
            };
            let ours = tunings.into_iter().map(|tuning| Load::Ours {
                indexes: Indexes::All,
                writers: small.writers(backend),
                tuning,
            });
            [Load::Reference(Indexes::All)]
                .into_iter()
                .chain(ours)
                .collect()
        })
        .await
    }
}

/// The smaller data set of the index-cost runs and the experiments.
struct SmallRun<'a> {
    data: &'a Dataset,
    csv: &'a Csv,
    /// PostgreSQL's pipeline writers: the fastest count of the comparison.
    writers: usize,
}

impl SmallRun<'_> {
    fn writers(&self, backend: Backend) -> usize {
        match backend {
            Backend::Sqlite => 1,
            Backend::Postgres => self.writers,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Output

/// The tables, the goals and the fairness notes.
fn print_results(
    args: &Args,
    env: &Env,
    results: &[Measured],
    index_results: &[Measured],
    experiment_results: &[Measured],
) {
    println!();
    section("Results");
    print_table(results, env);
    if !index_results.is_empty() {
        println!();
        section("Index cost");
        print_table(index_results, env);
        print_index_summary(index_results);
    }
    if !experiment_results.is_empty() {
        println!();
        section("Experiments (not what the store does today)");
        print_table(experiment_results, env);
    }
    println!();
    section("Goals");
    if args.common.smoke || args.common.quick || args.common.rows < 1_000_000 {
        println!(
            "  (indicative only: the goals are stated for 1M rows; run without --quick for them)"
        );
    }
    for note in goals(results) {
        println!("  {note}");
    }
    println!();
    println!("Fairness notes:");
    for note in FAIRNESS {
        println!("  - {note}");
    }
}

const FAIRNESS: [&str; 5] = [
    "both tools load the same rows into a table built by the store's migrate(), same indexes, \
     fresh each run",
    "sqlite3 .import stores id as 36-char text (CSV cannot carry a BLOB) and '' for NULL; ours \
     stores a 16-byte BLOB and NULL",
    "PostgreSQL partitions for \\copy are created before its clock starts (one row per day \
     inserted through the store, then deleted); ours creates them inside its run",
    "CPU: ours = this process (SQLite is embedded, so it includes SQLite); reference = the \
     tool's process; server = the PostgreSQL server's postmaster and its children (checkpointer \
     and walwriter included, and any other client's load on that server)",
    "ours is timed until its last commit; shutdown() returns later (see the per-run lines), \
     which is not counted",
];

fn report(m: Measured, env: &Env) -> Measured {
    let server = m
        .cpu
        .server
        .map(|t| format!(", server {:.1} µs/row", env.per_row(t, m.rows)))
        .unwrap_or_default();
    println!(
        "  {:<44} {:>9} rows in {:>7.2} s = {:>9.0} rows/s; cpu {:.1} µs/row{server}{lag}",
        m.tool_name(),
        m.rows,
        m.wall.as_secs_f64(),
        m.rate(),
        env.per_row(m.client_ticks(), m.rows),
        lag = m
            .shutdown_lag
            .map(|l| format!(
                "; shutdown() returned {:.0} ms after the last commit",
                l.as_secs_f64() * 1e3
            ))
            .unwrap_or_default(),
    );
    m
}

fn reference_for<'a>(results: &'a [Measured], m: &Measured) -> Option<&'a Measured> {
    results.iter().find(|r| {
        r.tool == Tool::Reference
            && r.backend == m.backend
            && r.indexes == m.indexes
            && r.rows == m.rows
    })
}

fn print_table(results: &[Measured], env: &Env) {
    println!(
        "{:<9} {:<16} {:<44} {:>8} {:>8} {:>8} {:>8} {:>10} {:>5} {:>10} {:>10} {:>9}",
        "backend",
        "indexes",
        "tool",
        "rows",
        "seconds",
        "rows/s",
        "ours/ref",
        "cpu µs/row",
        "sys%",
        "srv µs/row",
        "tot µs/row",
        "bytes/row"
    );
    for m in results {
        let ratio = match (&m.tool, reference_for(results, m)) {
            (Tool::Ours { .. }, Some(r)) => format!("{:.2}x", m.rate() / r.rate()),
            _ => "-".to_owned(),
        };
        let client = env.per_row(m.client_ticks(), m.rows);
        let (server, total) = match m.cpu.server {
            Some(s) => (
                format!("{:.1}", env.per_row(s, m.rows)),
                format!("{:.1}", client + env.per_row(s, m.rows)),
            ),
            None => ("-".to_owned(), format!("{client:.1}")),
        };
        println!(
            "{:<9} {:<16} {:<44} {:>8} {:>8.2} {:>8.0} {:>8} {:>10.1} {:>5.0} {:>10} {:>10} {:>9}",
            m.backend.name(),
            m.indexes.label(),
            m.tool_name(),
            m.rows,
            m.wall.as_secs_f64(),
            m.rate(),
            ratio,
            client,
            100.0 * m.client_sys_ticks() as f64 / m.client_ticks().max(1) as f64,
            server,
            total,
            m.bytes.map_or_else(
                || "-".to_owned(),
                |b| format!("{:.0}", b as f64 / m.rows as f64)
            ),
        );
    }
}

fn print_index_summary(results: &[Measured]) {
    println!("rows/s with all indexes vs without secondary indexes (pk only):");
    for backend in [Backend::Sqlite, Backend::Postgres] {
        for reference in [false, true] {
            let find = |indexes: Indexes| {
                results.iter().find(|m| {
                    m.backend == backend
                        && m.indexes == indexes
                        && matches!(m.tool, Tool::Reference) == reference
                })
            };
            if let (Some(all), Some(one), Some(none)) =
                (find(Indexes::All), find(Indexes::One), find(Indexes::None))
            {
                println!(
                    "  {:<9} {:<44} pk only {:>8.0} rows/s, +account_time {:>8.0} ({:.0}%), \
                     all {:>8.0} ({:.0}%): the secondary indexes cost {:.0}% of throughput",
                    backend.name(),
                    all.tool_name(),
                    none.rate(),
                    one.rate(),
                    100.0 * one.rate() / none.rate(),
                    all.rate(),
                    100.0 * all.rate() / none.rate(),
                    100.0 * (1.0 - all.rate() / none.rate()),
                );
            }
        }
    }
}

/// A line per backend: our best rate against the reference tool's, and the goal.
fn goals(results: &[Measured]) -> Vec<String> {
    let best = |backend: Backend| {
        results
            .iter()
            .filter(|m| m.backend == backend && matches!(m.tool, Tool::Ours { .. }))
            .max_by(|a, b| a.rate().total_cmp(&b.rate()))
    };
    let mut notes = Vec::new();
    for (backend, goal, reference) in [
        (Backend::Sqlite, 1.0, "sqlite3 .import"),
        (Backend::Postgres, 0.8, "psql \\copy"),
    ] {
        let Some(ours) = best(backend) else { continue };
        match reference_for(results, ours) {
            Some(r) => {
                let ratio = ours.rate() / r.rate();
                notes.push(format!(
                    "{:<9} ours {:.0} rows/s ({}) vs {} {:.0} rows/s = {:.2}x, goal ≥ {goal:.1}x: {}",
                    backend.name(),
                    ours.rate(),
                    ours.tool_name(),
                    r.tool_name(),
                    r.rate(),
                    ratio,
                    support::verdict(ratio >= goal)
                ));
            }
            None => notes.push(format!(
                "{:<9} ours {:.0} rows/s; no {reference} run to compare with",
                backend.name(),
                ours.rate()
            )),
        }
    }
    notes
}

// ---------------------------------------------------------------------------------------------
// Breakdown: where the time goes, stage by stage

impl Runs<'_> {
    /// Times serialization and direct `store.insert` apart from the pipeline.
    async fn breakdown(&self, data: &Dataset, pg_writers: usize) -> BoxResult<()> {
        let (args, env, dir) = (self.args, self.env, self.dir);
        let data = Dataset {
            n: args.index_rows,
            ..data.clone()
        };
        section(&format!("Breakdown, {} rows, all indexes", data.n));
        let rows = generate_and_flatten(env, &data)?;
        for &backend in &args.common.backends {
            match backend {
                Backend::Sqlite => {
                    let path: PathBuf = dir.join("breakdown.db");
                    let store = sqlite_fresh(&path, Indexes::All).await?;
                    let (wall, cpu) = direct_inserts(&store, &rows, 1).await?;
                    println!(
                        "  sqlite   store.insert direct (1000-row batches, 1 task): {:.2} s = {:.0} rows/s, {:.1} µs/row cpu",
                        wall.as_secs_f64(),
                        data.n as f64 / wall.as_secs_f64(),
                        env.per_row(cpu.own, data.n)
                    );
                    store.pool().close().await;
                    sqlite::remove(&path);
                }
                Backend::Postgres => {
                    let Some(pg) = &env.postgres else { continue };
                    for tasks in [1, pg_writers] {
                        let store = pg.fresh(Indexes::All).await?;
                        pg.checkpoint(store.pool()).await;
                        let before = Cpu::before(pg.local);
                        let (wall, _) = direct_inserts(&store, &rows, tasks).await?;
                        let cpu = Cpu::after(pg.local).since(before);
                        println!(
                            "  postgres store.insert direct (1000-row batches, {tasks} task{}): {:.2} s = {:.0} rows/s, {:.1} µs/row cpu, server {}",
                            if tasks == 1 { "" } else { "s" },
                            wall.as_secs_f64(),
                            data.n as f64 / wall.as_secs_f64(),
                            env.per_row(cpu.own, data.n),
                            cpu.server.map_or_else(
                                || "-".to_owned(),
                                |s| format!("{:.1} µs/row", env.per_row(s, data.n))
                            )
                        );
                        store.pool().close().await;
                        if tasks == pg_writers {
                            break;
                        }
                    }
                }
            }
        }
        Ok(())
    }
}

/// Generates the records and flattens them to rows, timing each stage.
fn generate_and_flatten(env: &Env, data: &Dataset) -> BoxResult<Vec<StoredRecord>> {
    let before = Cpu::before(None);
    let started = Instant::now();
    let records = data.records();
    let generated = started.elapsed();
    let cpu_gen = Cpu::after(None).since(before);
    println!(
        "  generate records (not timed in runs): {:.2} s, {:.2} µs/row cpu",
        generated.as_secs_f64(),
        env.per_row(cpu_gen.own, data.n)
    );

    let before = Cpu::before(None);
    let started = Instant::now();
    let rows: Vec<StoredRecord> = records
        .iter()
        .map(StoredRecord::from_record)
        .collect::<Result<_, _>>()?;
    let flattened = started.elapsed();
    let cpu_flat = Cpu::after(None).since(before);
    println!(
        "  StoredRecord::from_record (serde_json + columns): {:.2} s = {:.0} rows/s, {:.2} µs/row cpu",
        flattened.as_secs_f64(),
        data.n as f64 / flattened.as_secs_f64(),
        env.per_row(cpu_flat.own, data.n)
    );
    Ok(rows)
}

/// Writes pre-flattened rows with `store.insert` in 1000-row batches from `tasks` tasks:
/// the store alone, without the pipeline or serialization.
async fn direct_inserts<S: ChainedStore>(
    store: &S,
    rows: &[StoredRecord],
    tasks: usize,
) -> BoxResult<(Duration, Cpu)> {
    let rows: Arc<[StoredRecord]> = rows.into();
    let before = Cpu::before(None);
    let started = Instant::now();
    let chunks = rows.len().div_ceil(1000);
    let mut set = tokio::task::JoinSet::new();
    for t in 0..tasks {
        let store = store.clone();
        let rows = Arc::clone(&rows);
        set.spawn(async move {
            let mut c = t;
            while c < chunks {
                let end = ((c + 1) * 1000).min(rows.len());
                store.insert(&rows[c * 1000..end]).await?;
                c += tasks;
            }
            Ok::<_, audit_store::StoreError>(())
        });
    }
    while let Some(r) = set.join_next().await {
        r??;
    }
    Ok((started.elapsed(), Cpu::after(None).since(before)))
}
