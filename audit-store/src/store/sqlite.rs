//! The embedded SQLite store, the default.
//!
//! One file in WAL mode; records are written by multi-row `INSERT OR IGNORE` statements of up
//! to 1,000 rows (24 columns each, well under SQLite's 32,766 bind parameters), all of a batch
//! in one transaction: never one commit per record.

use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::{QueryBuilder, Row, Sqlite};
use uuid::Uuid;

use super::sql::{self, QueryTarget};
use super::{AuditStore, PageRow, RecordQuery};
use crate::Result;
use crate::row::{COLUMNS, StoredRecord};

/// Rows written between refreshes of the planner's statistics.
const ANALYZE_EVERY: u64 = 100_000;

/// Rows per `INSERT` statement.
const ROWS_PER_STATEMENT: usize = 1000;
/// Rows per `DELETE` step of retention: short transactions that never hold the write lock long.
const DELETE_CHUNK: i64 = 5000;

/// Audit records in an embedded SQLite database.
///
/// ```no_run
/// use audit_store::SqliteStore;
/// use audit_store::store::AuditStore;
///
/// # async fn run() -> audit_store::Result<()> {
/// let store = SqliteStore::open("audit.db").await?;
/// store.migrate().await?;
/// # Ok(()) }
/// ```
#[derive(Clone, Debug)]
pub struct SqliteStore {
    pool: SqlitePool,
    /// Rows written since the planner's statistics were last refreshed.
    unanalyzed: Arc<AtomicU64>,
}

impl SqliteStore {
    /// A store on an existing pool. The caller chooses its options; [`open`](Self::open) sets
    /// the recommended ones.
    pub fn new(pool: SqlitePool) -> Self {
        Self {
            pool,
            unanalyzed: Arc::default(),
        }
    }

    /// Opens (creating if missing) the database file at `path`, in WAL mode with
    /// `synchronous = NORMAL`: a commit survives a crash of the process, and readers never
    /// block the writer.
    ///
    /// # Errors
    ///
    /// When the file cannot be opened or created.
    pub async fn open(path: impl AsRef<Path>) -> Result<Self> {
        Self::with_options(SqliteConnectOptions::new().filename(path)).await
    }

    /// Opens a database from a `sqlite:` URL (`sqlite://demo-data/audit.db`), with the same
    /// settings as [`open`](Self::open).
    ///
    /// # Errors
    ///
    /// When the URL is not a SQLite URL or the file cannot be opened.
    pub async fn connect(url: &str) -> Result<Self> {
        Self::with_options(SqliteConnectOptions::from_str(url)?).await
    }

    /// The store's settings on top of `options`: WAL, `synchronous = NORMAL`, a 10 s busy
    /// timeout, 8 KiB pages for new files (a ~2 KiB row of this `WITHOUT ROWID` table spills
    /// into overflow pages of 4 KiB ones) and a 32 MiB page cache for the writer's index
    /// updates. Chosen by the ingest benchmark's experiments (see BENCHMARKS.md).
    async fn with_options(options: SqliteConnectOptions) -> Result<Self> {
        let options = options
            .create_if_missing(true)
            .pragma("page_size", "8192")
            .pragma("cache_size", "-32768")
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(Duration::from_secs(10));
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(options)
            .await?;
        Ok(Self::new(pool))
    }

    /// The connection pool.
    pub fn pool(&self) -> &SqlitePool {
        &self.pool
    }

    /// Refreshes the planner's statistics where they are stale (`PRAGMA optimize`, bounded by
    /// `analysis_limit`). Without statistics SQLite does not pick the composite indexes, and a
    /// filtered query in a large account takes 6–100 ms instead of under 1 ms (measured by the
    /// query benchmark). Run by [`migrate`](AuditStore::migrate) and by retention.
    ///
    /// # Errors
    ///
    /// When the database refuses the pragmas.
    pub async fn optimize(&self) -> Result<()> {
        let mut conn = self.pool.acquire().await?;
        sqlx::query("PRAGMA analysis_limit = 1000")
            .execute(&mut *conn)
            .await?;
        sqlx::query("PRAGMA optimize = 0x10002")
            .execute(&mut *conn)
            .await?;
        Ok(())
    }
}

fn insert_statement(rows: &[StoredRecord]) -> QueryBuilder<Sqlite> {
    let mut builder = QueryBuilder::new("INSERT OR IGNORE INTO audit_logs (");
    builder.push(COLUMNS.join(", "));
    builder.push(") ");
    builder.push_values(rows, |mut b, r| {
        b.push_bind(r.id)
            .push_bind(r.time_ms)
            .push_bind(r.account_id.clone())
            .push_bind(r.account_name.clone())
            .push_bind(r.zone_id.clone())
            .push_bind(r.zone_name.clone())
            .push_bind(r.action_type)
            .push_bind(r.action_result)
            .push_bind(r.actor_email.clone())
            .push_bind(r.actor_id.clone())
            .push_bind(r.actor_ip_address.clone())
            .push_bind(r.actor_type)
            .push_bind(r.actor_context)
            .push_bind(r.actor_token_id.clone())
            .push_bind(r.actor_token_name.clone())
            .push_bind(r.raw_ray_id.clone())
            .push_bind(r.raw_method.clone())
            .push_bind(r.raw_status_code)
            .push_bind(r.raw_uri.clone())
            .push_bind(r.resource_id.clone())
            .push_bind(r.resource_product.clone())
            .push_bind(r.resource_type.clone())
            .push_bind(r.resource_scope.clone())
            .push_bind(r.record.clone());
    });
    builder
}

impl QueryTarget for QueryBuilder<Sqlite> {
    fn sql(&mut self, sql: &str) {
        self.push(sql);
    }
    fn text(&mut self, value: String) {
        self.push_bind(value);
    }
    fn int(&mut self, value: i32) {
        self.push_bind(value);
    }
    fn bigint(&mut self, value: i64) {
        self.push_bind(value);
    }
    fn uuid(&mut self, value: Uuid) {
        self.push_bind(value);
    }
}

impl AuditStore for SqliteStore {
    async fn page(&self, query: &RecordQuery) -> Result<Vec<PageRow>> {
        let mut builder = QueryBuilder::<Sqlite>::new("");
        sql::page(&mut builder, query);
        let rows = builder.build().fetch_all(&self.pool).await?;
        rows.into_iter()
            .map(|row| {
                Ok(PageRow {
                    time_ms: row.try_get(0)?,
                    id: row.try_get(1)?,
                    record: row.try_get(2)?,
                })
            })
            .collect()
    }

    async fn migrate(&self) -> Result<()> {
        sqlx::migrate!("migrations/sqlite").run(&self.pool).await?;
        self.optimize().await
    }

    async fn insert(&self, records: &[StoredRecord]) -> Result<u64> {
        let mut tx = self.pool.begin().await?;
        let mut stored = 0;
        for chunk in records.chunks(ROWS_PER_STATEMENT) {
            stored += insert_statement(chunk)
                .build()
                .execute(&mut *tx)
                .await?
                .rows_affected();
        }
        tx.commit().await?;
        // Statistics follow the data as it grows (see `optimize`).
        let written = self.unanalyzed.fetch_add(stored, Ordering::Relaxed) + stored;
        if written >= ANALYZE_EVERY {
            self.unanalyzed.store(0, Ordering::Relaxed);
            self.optimize().await?;
        }
        Ok(stored)
    }

    async fn ping(&self) -> Result<()> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    async fn delete_before(&self, cutoff_ms: i64) -> Result<u64> {
        let mut deleted = 0;
        loop {
            let step = sqlx::query(
                "DELETE FROM audit_logs WHERE id IN \
                 (SELECT id FROM audit_logs WHERE time_ms < ? ORDER BY time_ms LIMIT ?)",
            )
            .bind(cutoff_ms)
            .bind(DELETE_CHUNK)
            .execute(&self.pool)
            .await?
            .rows_affected();
            deleted += step;
            if step < DELETE_CHUNK as u64 {
                self.optimize().await?;
                return Ok(deleted);
            }
        }
    }

    async fn get(&self, account_id: &str, id: Uuid) -> Result<Option<String>> {
        let row = sqlx::query("SELECT record FROM audit_logs WHERE id = ? AND account_id = ?")
            .bind(id)
            .bind(account_id)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.map(|r| r.get(0)))
    }

    async fn count(&self) -> Result<u64> {
        let n: i64 = sqlx::query_scalar("SELECT count(*) FROM audit_logs")
            .fetch_one(&self.pool)
            .await?;
        Ok(u64::try_from(n).unwrap_or(0))
    }
}
