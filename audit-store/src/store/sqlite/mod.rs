//! The embedded SQLite store, the default.
//!
//! One file in WAL mode; records are written by multi-row `INSERT OR IGNORE` statements of up
//! to 250 rows, all of a batch in one transaction: never one commit per record.

mod page;
mod scan;
mod wal;
mod write;

use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};

use super::chained;
use super::shared::{self, Tables};
use super::{AuditStore, ChainedStore, LinkScan, scan::spawn_scan};
use super::{TableNames, migrations};
use crate::chain::ChainKeys;
use crate::model::{ChainScope, Retention, StoredRecord};
use crate::{Result, StoreError};
use wal::{CHECKPOINT_BUSY_TIMEOUT, Checkpoints, WRITER_AUTOCHECKPOINT};

/// Rows written between refreshes of the planner's statistics.
const ANALYZE_EVERY: u64 = 100_000;
/// Page cache of the connection that inserts records, bytes (see
/// [`SqliteStore::set_writer_cache`]).
const WRITER_CACHE_BYTES: u64 = 16 << 20;
/// Page cache of each reading connection.
const READER_CACHE: &str = "-8192";
/// Rows SQLite's worker thread may read ahead of the task decoding them (sqlx's default is
/// 50). With room for a few milliseconds of rows, the scan hands rows over in bursts instead
/// of waking the other thread for each one (see `scan`).
const ROW_BUFFER: usize = 1024;

/// Audit records in an embedded SQLite database.
///
/// ```no_run
/// use audit_store::SqliteStore;
/// use audit_store::store::AuditStore as _;
///
/// # async fn run() -> audit_store::Result<()> {
/// let store = SqliteStore::open("audit.db").await?;
/// store.migrate().await?;
/// # Ok(()) }
/// ```
#[derive(Clone, Debug)]
pub struct SqliteStore {
    pool: SqlitePool,
    /// Record inserts: one connection (SQLite has one writer at a time), so one page cache
    /// holds the indexes being written instead of every pooled connection warming its own.
    writer: SqlitePool,
    /// Rows written since the planner's statistics were last refreshed.
    unanalyzed: Arc<AtomicU64>,
    /// Set: every record is chained (see [`chain`](crate::chain)).
    chain: Option<Arc<ChainKeys>>,
    /// The task checkpointing the WAL, for stores opened by this module; ends with the last
    /// clone of the store.
    checkpoints: Option<Arc<Checkpoints>>,
    /// Where the tables are.
    names: Arc<TableNames>,
}

impl SqliteStore {
    /// A store on an existing pool, used for reads and writes alike. The caller chooses its
    /// options; [`open`](Self::open) sets the recommended ones.
    pub fn new(pool: SqlitePool) -> Self {
        Self::with_writer(pool.clone(), pool)
    }

    /// A store reading through `pool` and inserting records through `writer`.
    fn with_writer(pool: SqlitePool, writer: SqlitePool) -> Self {
        Self {
            pool,
            writer,
            unanalyzed: Arc::default(),
            chain: None,
            checkpoints: None,
            names: Arc::default(),
        }
    }

    /// Chains every record this store writes into its account's hash chain, sealed and
    /// checkpointed with `keys` (see [`chain`](crate::chain)).
    ///
    /// ```no_run
    /// use audit_store::SqliteStore;
    /// use audit_store::chain::{ChainKeys, ChainSecret};
    ///
    /// # async fn run(secret_hex: &str) -> Result<(), Box<dyn std::error::Error>> {
    /// let keys = ChainKeys::from_secret(&ChainSecret::from_hex(secret_hex)?);
    /// let store = SqliteStore::open("audit.db").await?.chained(keys);
    /// # Ok(()) }
    /// ```
    #[must_use]
    pub fn chained(mut self, keys: ChainKeys) -> Self {
        self.chain = Some(Arc::new(keys));
        self
    }

    /// Keeps the store's tables under `names` (another prefix than `audit_`): give it before
    /// the first [`migrate`](AuditStore::migrate), and always the same.
    ///
    /// ```no_run
    /// use audit_store::SqliteStore;
    /// use audit_store::store::TableNames;
    ///
    /// # async fn run() -> audit_store::Result<()> {
    /// let store = SqliteStore::open("app.db")
    ///     .await?
    ///     .table_names(TableNames::new().prefix("compliance_")?)?;
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    ///
    /// [`StoreError::Config`] when `names` has a schema (PostgreSQL's only).
    pub fn table_names(mut self, names: TableNames) -> Result<Self> {
        self.names = Arc::new(names.for_sqlite()?);
        Ok(self)
    }

    /// The names of the store's tables.
    pub fn names(&self) -> &TableNames {
        &self.names
    }

    /// The store's migrations, with its table names, for an application that runs them with
    /// its own sqlx migrator (with its own migrations, in one table of its own) instead of
    /// [`migrate`](AuditStore::migrate). Their versions are `2026112600000N` and up: the
    /// application's must differ. Run them one way or the other, not both.
    ///
    /// ```no_run
    /// use audit_store::SqliteStore;
    /// use audit_store::sqlx::migrate::Migrator;
    ///
    /// // `app`: the application's own, `sqlx::migrate!("./migrations")`.
    /// # async fn run(app: Migrator) -> Result<(), Box<dyn std::error::Error>> {
    /// let store = SqliteStore::open("app.db").await?;
    /// let mut migrations: Vec<_> = app.iter().cloned().collect();
    /// migrations.extend(store.migrations());
    /// Migrator::with_migrations(migrations).run(store.pool()).await?;
    /// # Ok(()) }
    /// ```
    pub fn migrations(&self) -> Vec<sqlx::migrate::Migration> {
        migrations::sqlite(&self.names)
    }

    /// Opens (creating if missing) the database file at `path`, in WAL mode with
    /// `synchronous = NORMAL`: a commit survives a crash of the process, and readers never
    /// block the writer for long. A task of the store's checkpoints the WAL every 250 ms,
    /// off the writer's commits; a checkpoint that would wait for a reader gives up after
    /// 50 ms. It ends with the last clone of the store.
    ///
    /// # Errors
    ///
    /// When the file cannot be opened or created.
    ///
    /// A new database file is created readable and writable by the owner only (mode 600,
    /// whatever the umask; SQLite gives its `-wal` and `-shm` files the database file's mode),
    /// in a directory created accessible by the owner only (700) when missing. An existing
    /// file keeps its mode.
    pub async fn open(path: impl AsRef<Path>) -> Result<Self> {
        let options = SqliteConnectOptions::new().filename(path);
        create_private(&options)?;
        Self::with_options(options, true).await
    }

    /// Opens a database from a `sqlite:` URL (`sqlite://demo-data/audit.db`), with the same
    /// settings as [`open`](Self::open).
    ///
    /// # Errors
    ///
    /// When the URL is not a SQLite URL or the file cannot be opened.
    pub async fn connect(url: &str) -> Result<Self> {
        let options = SqliteConnectOptions::from_str(url)?;
        create_private(&options)?;
        Self::with_options(options, true).await
    }

    /// Opens an existing database from a `sqlite:` URL, with the same settings as
    /// [`open`](Self::open); a missing file is an error rather than a new empty database
    /// (for tools that read a store, such as `audit-verify`). It leaves checkpointing the WAL
    /// to the application writing to the database.
    ///
    /// # Errors
    ///
    /// When the URL is not a SQLite URL or the file does not exist.
    pub async fn connect_existing(url: &str) -> Result<Self> {
        let options = SqliteConnectOptions::from_str(url)?;
        if !options.get_filename().exists() {
            return Err(StoreError::Config(format!(
                "no SQLite database at {} (check the database URL)",
                options.get_filename().display()
            )));
        }
        Self::with_options(options, false).await
    }

    /// The store's settings on top of `options`: WAL, `synchronous = NORMAL`, a 10 s busy
    /// timeout, 8 KiB pages for new files (a ~2 KiB row of this `WITHOUT ROWID` table spills
    /// into overflow pages of 4 KiB ones), and a 16 MiB page cache for the writer's index
    /// updates, chosen by the ingest and whole-server benchmarks (see BENCHMARKS.md). Records
    /// are inserted through one connection, so that cache is one cache: with every pooled
    /// connection inserting in turn, each warmed its own and a process under write load held
    /// 4 x 32 MiB (the whole-server benchmark's peak RSS). Readers get up to 4 connections of
    /// 8 MiB each. Up to 1,024 rows read ahead per query, for the verifier's scan. With
    /// `checkpoint`, a task of the store's checkpoints the WAL on a connection of its own
    /// (see [`checkpoints`]).
    async fn with_options(options: SqliteConnectOptions, checkpoint: bool) -> Result<Self> {
        let options = options
            .create_if_missing(true)
            .pragma("page_size", "8192")
            .pragma("cache_size", READER_CACHE)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(Duration::from_secs(10))
            .row_buffer_size(ROW_BUFFER);
        let writer = SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(
                options
                    .clone()
                    .pragma("cache_size", cache_size(WRITER_CACHE_BYTES))
                    .pragma("wal_autocheckpoint", WRITER_AUTOCHECKPOINT),
            )
            .await?;
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(options.clone())
            .await?;
        let mut store = Self::with_writer(pool, writer);
        if checkpoint {
            // Checkpoints copy pages through a buffer of their own, not the page cache. A
            // short busy timeout: a checkpoint that must wait for a reader gives up, rather
            // than hold the writer back while it waits (see `checkpoints`).
            let options = options
                .pragma("cache_size", "-256")
                .busy_timeout(CHECKPOINT_BUSY_TIMEOUT);
            let task = tokio::spawn(wal::checkpoints(options));
            store.checkpoints = Some(Arc::new(Checkpoints(task.abort_handle())));
        }
        Ok(store)
    }

    /// The connection pool.
    pub fn pool(&self) -> &SqlitePool {
        &self.pool
    }

    /// Sets the page cache of the connection that inserts records, from the next statement
    /// on (also after a reconnection). It holds the index pages being written to: with many
    /// accounts, a larger one is faster (the ingest benchmark: 128 MiB 1.1x and 8 MiB 0.85x
    /// of the 16 MiB default, 100 accounts), and it is most of what the store adds to a
    /// process's memory under load. For a store made by [`new`](Self::new), the pool given.
    ///
    /// ```no_run
    /// use audit_store::SqliteStore;
    ///
    /// # async fn run() -> audit_store::Result<()> {
    /// let store = SqliteStore::open("audit.db").await?;
    /// store.set_writer_cache(64 << 20).await?;
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    ///
    /// When the writer's connection cannot be reached.
    pub async fn set_writer_cache(&self, bytes: u64) -> Result<()> {
        let size = cache_size(bytes);
        let options = (*self.writer.connect_options())
            .clone()
            .pragma("cache_size", size.clone());
        self.writer.set_connect_options(options);
        let mut conn = self.writer.acquire().await?;
        sqlx::query(sqlx::AssertSqlSafe(format!("PRAGMA cache_size = {size}")))
            .execute(&mut *conn)
            .await?;
        Ok(())
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
        // On the writer: `ANALYZE` writes its statistics, and reads the indexes the writer's
        // cache already holds. Run on a reader, it filled that reader's cache for nothing
        // (17 MiB of a server's peak memory) and waited for the writer's lock.
        let mut conn = self.writer.acquire().await?;
        sqlx::query("PRAGMA analysis_limit = 1000")
            .execute(&mut *conn)
            .await?;
        sqlx::query("PRAGMA optimize = 0x10002")
            .execute(&mut *conn)
            .await?;
        Ok(())
    }
}

/// Creates the database file `options` names, empty and private, when it is missing (see
/// [`SqliteStore::open`]); nothing for an in-memory database.
fn create_private(options: &SqliteConnectOptions) -> Result<()> {
    let path = options.get_filename();
    if path.as_os_str().is_empty() || path == Path::new(":memory:") {
        return Ok(());
    }
    crate::private_files::touch(path).map_err(|e| {
        StoreError::Config(format!(
            "cannot create the SQLite database {}: {e}",
            path.display()
        ))
    })
}

/// `PRAGMA cache_size`'s value for `bytes`: negative is KiB (at least 1).
fn cache_size(bytes: u64) -> String {
    format!("-{}", (bytes / 1024).max(1))
}

impl SqliteStore {
    fn tables(&self) -> Tables<'_, sqlx::Sqlite> {
        Tables::new(&self.pool, &self.names)
    }
}

impl AuditStore for SqliteStore {
    shared::record_reads!();

    async fn page(&self, query: &crate::model::RecordQuery) -> Result<crate::model::Page> {
        page::page(&self.pool, &self.names, query).await
    }

    async fn stats(&self, query: &crate::model::StatsQuery) -> Result<crate::model::Stats> {
        page::stats(&self.pool, &self.names, query).await
    }

    async fn migrate(&self) -> Result<()> {
        migrations::migrate(&self.pool, &self.names, self.migrations()).await?;
        self.optimize().await
    }

    async fn insert(&self, records: &[StoredRecord]) -> Result<u64> {
        if records.is_empty() {
            return Ok(0);
        }
        let stored = match &self.chain {
            Some(keys) => {
                let mut write = write::ChainedWrite {
                    writer: &self.writer,
                    keys,
                    names: &self.names,
                };
                chained::insert_linked(&mut write, records).await?
            }
            None => write::insert_unchained(&self.writer, &self.names, records).await?,
        };
        // Statistics follow the data as it grows (see `optimize`).
        let written = self.unanalyzed.fetch_add(stored, Ordering::Relaxed) + stored;
        if written >= ANALYZE_EVERY {
            self.unanalyzed.store(0, Ordering::Relaxed);
            self.optimize().await?;
        }
        Ok(stored)
    }

    async fn delete_before(&self, cutoff_ms: i64) -> Result<u64> {
        shared::deleted_unless_refused(self.retain(cutoff_ms).await?)
    }
}

impl ChainedStore for SqliteStore {
    shared::chained_reads!();

    async fn retain(&self, cutoff_ms: i64) -> Result<Retention> {
        let (mut retention, _) = self
            .tables()
            .prune_chains(self.chain.as_deref(), cutoff_ms)
            .await?;
        // Unchained records (all of them in an unchained store) go by time alone.
        retention.deleted += self.tables().delete_unchained(cutoff_ms, true).await?;
        self.optimize().await?;
        Ok(retention)
    }

    fn chain_scan(&self, scope: ChainScope) -> LinkScan {
        let (pool, names) = (self.pool.clone(), Arc::clone(&self.names));
        spawn_scan(move |tx| scan::scan(pool, names, scope, tx))
    }
}

super::positions::export_positions!(SqliteStore);

#[cfg(test)]
mod tests {
    use super::*;

    async fn writer_cache_size(store: &SqliteStore) -> i64 {
        sqlx::query_scalar("PRAGMA cache_size")
            .fetch_one(&store.writer)
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn the_writer_cache_is_16_mib_until_set_and_stays_set_after_a_reconnection() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(dir.path().join("audit.db"))
            .await
            .unwrap();
        assert_eq!(writer_cache_size(&store).await, -16_384);
        store.set_writer_cache(3 << 20).await.unwrap();
        assert_eq!(writer_cache_size(&store).await, -3072);
        // A new connection (the old one closed, as after an error) gets it too.
        store.writer.close().await;
        let writer = SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with((*store.writer.connect_options()).clone())
            .await
            .unwrap();
        let reopened = SqliteStore::with_writer(store.pool.clone(), writer);
        assert_eq!(writer_cache_size(&reopened).await, -3072);
        // Readers keep theirs.
        let reader: i64 = sqlx::query_scalar("PRAGMA cache_size")
            .fetch_one(&store.pool)
            .await
            .unwrap();
        assert_eq!(reader, -8192);
    }

    #[tokio::test]
    async fn the_wal_is_checkpointed_off_the_writer_and_starts_over() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.db");
        let wal = dir.path().join("audit.db-wal");
        let store = SqliteStore::open(&path).await.unwrap();
        store.migrate().await.unwrap();
        let autocheckpoint: i64 = sqlx::query_scalar("PRAGMA wal_autocheckpoint")
            .fetch_one(&store.writer)
            .await
            .unwrap();
        assert_eq!(autocheckpoint.to_string(), WRITER_AUTOCHECKPOINT);
        let size = |p: &std::path::Path| std::fs::metadata(p).map_or(0, |m| m.len());
        let rows = |from: u128| -> Vec<StoredRecord> {
            (from..from + 2000)
                .map(|i| {
                    let mut row = StoredRecord::sample(i, Some("acc"));
                    row.record = format!("{{\"pad\":\"{}\"}}", "x".repeat(2000));
                    row
                })
                .collect()
        };
        // About 5 MiB of frames, far below the writer's own threshold (128 MiB): only the
        // store's task can copy them into the database file.
        store.insert(&rows(0)).await.unwrap();
        let (db_before, wal_after_first) = (size(&path), size(&wal));
        assert!(wal_after_first > 4 << 20, "{wal_after_first}");
        let mut waited = Duration::ZERO;
        while size(&path) < db_before + (4 << 20) && waited < Duration::from_secs(20) {
            tokio::time::sleep(wal::CHECKPOINT_EVERY).await;
            waited += wal::CHECKPOINT_EVERY;
        }
        assert!(
            size(&path) >= db_before + (4 << 20),
            "not checkpointed in {waited:?}"
        );
        tokio::time::sleep(wal::CHECKPOINT_EVERY * 2).await;
        // Every frame was copied: the next transactions write the WAL from its start, so the
        // file does not grow by what they write.
        store.insert(&rows(10_000)).await.unwrap();
        assert!(
            size(&wal) < wal_after_first + (1 << 20),
            "the WAL grew from {wal_after_first} to {} bytes",
            size(&wal)
        );
        assert_eq!(store.count().await.unwrap(), 4000);
    }

    #[test]
    fn cache_sizes_are_kib_and_never_zero() {
        assert_eq!(cache_size(16 << 20), "-16384");
        assert_eq!(cache_size(0), "-1");
    }
}
