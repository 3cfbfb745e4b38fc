//! The embedded SQLite store, the default.
//!
//! One file in WAL mode; records are written by multi-row `INSERT OR IGNORE` statements of up
//! to 250 rows, all of a batch in one transaction: never one commit per record.

use std::borrow::Cow;
use std::collections::{BTreeSet, HashMap};
use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures_util::stream::BoxStream;
use futures_util::{FutureExt as _, TryStreamExt as _};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::{QueryBuilder, Row, Sqlite};
use uuid::Uuid;

use super::sql::{self, QueryTarget};
use super::{AuditStore, PageRow, RecordQuery, SCAN_CHUNK, chain_condition, spawn_scan};
use crate::chain::{
    self, ChainHead, ChainKeys, ChainRow, ChainScope, Checkpoint, CheckpointKind, GENESIS, Link,
    ScannedLink,
};
use crate::row::{
    COLUMNS, StoredRecord, chain_row_of, chain_select, checkpoint_of, head_of, packed_chain_select,
    packed_link_of,
};
use crate::{Result, StoreError};

/// Rows written between refreshes of the planner's statistics.
const ANALYZE_EVERY: u64 = 100_000;

/// Rows per `INSERT` statement (24 columns each, 27 when chained: 6,750 bind parameters, well
/// under SQLite's 32,766). A prepared statement holds every bound value and its program;
/// 1,000-row ones held 6 MiB more of a server's memory under load and were slower (ingest
/// benchmark, 200k rows: 19.0k rows/s at 44.5 µs CPU per row, against 21.5k at 39.3 µs).
const ROWS_PER_STATEMENT: usize = 250;
/// Values per `IN (...)` list.
const IN_LIST: usize = 500;
/// Page cache of the connection that inserts records, bytes (see
/// [`SqliteStore::set_writer_cache`]).
const WRITER_CACHE_BYTES: u64 = 16 << 20;
/// Page cache of each reading connection.
const READER_CACHE: &str = "-8192";
/// How often the WAL is checkpointed off the writer (see [`checkpoints`]).
const CHECKPOINT_EVERY: Duration = Duration::from_millis(250);
/// WAL frames past which a checkpoint also restarts the log, pausing the writer for the last
/// frames only: 4,096 pages of 8 KiB, 32 MiB of WAL file.
const WAL_RESTART_FRAMES: i64 = 4096;
/// How long a checkpoint waits for a lock (the writer's, a reader's snapshot) before it gives
/// up until its next pass.
const CHECKPOINT_BUSY_TIMEOUT: Duration = Duration::from_millis(50);
/// The writer's own `wal_autocheckpoint`, pages: a backstop, in case the checkpoints of
/// [`checkpoints`] stop (SQLite's default is 1,000).
const WRITER_AUTOCHECKPOINT: &str = "16384";
/// Rows per `DELETE` step of retention: short transactions that never hold the write lock long.
const DELETE_CHUNK: i64 = 5000;
/// `mmap_size` of the connection that reads a whole store for verification: the file is read
/// in place instead of copied page by page out of the OS cache (`pread`). SQLite caps it at
/// its compile-time maximum (2 GB in the bundled build); beyond that it reads as usual.
const SCAN_MMAP_BYTES: i64 = 1 << 40;
/// Rows SQLite's worker thread may read ahead of the task decoding them (sqlx's default is
/// 50). With room for a few milliseconds of rows, the scan hands rows over in bursts instead
/// of waking the other thread for each one (see `chain_scan`).
const ROW_BUFFER: usize = 1024;
/// How long the scan waits when no row is ready, letting the worker fill the buffer.
const SCAN_NAP: Duration = Duration::from_millis(1);

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
    /// Record inserts: one connection (SQLite has one writer at a time), so one page cache
    /// holds the indexes being written instead of every pooled connection warming its own.
    writer: SqlitePool,
    /// Rows written since the planner's statistics were last refreshed.
    unanalyzed: Arc<AtomicU64>,
    /// Set: every record is chained (see [`chain`]).
    chain: Option<Arc<ChainKeys>>,
    /// The task checkpointing the WAL, for stores opened by this module; ends with the last
    /// clone of the store.
    checkpoints: Option<Arc<Checkpoints>>,
}

/// Stops the checkpoint task when dropped.
#[derive(Debug)]
struct Checkpoints(tokio::task::AbortHandle);

impl Drop for Checkpoints {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Checkpoints the WAL of the database `options` opens, every [`CHECKPOINT_EVERY`], on a
/// connection of its own. SQLite otherwise checkpoints in the commit that fills the WAL past
/// `wal_autocheckpoint`: the writer's, which then waits for the database file to be written
/// and synced (the whole-server benchmark saw it stop ingestion for seconds on a busy host).
/// Here the writer only appends. A `PASSIVE` checkpoint never waits for it. The WAL file
/// starts over when a checkpoint has copied every frame before the writer's next transaction;
/// under continuous writes a pass rarely catches up, so once the WAL holds
/// [`WAL_RESTART_FRAMES`] a `RESTART` checkpoint holds the writer while it copies the frames
/// since the previous pass, or gives up after [`CHECKPOINT_BUSY_TIMEOUT`] if a reader still
/// needs them (and is tried again 2 s later). Ends at once for a database that is not in WAL mode (`sqlite::memory:`), and
/// waits longer between attempts while the database refuses them (a read-only file).
async fn checkpoints(options: SqliteConnectOptions) {
    use sqlx::Connection as _;
    let mut tick = tokio::time::interval(CHECKPOINT_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut conn: Option<sqlx::SqliteConnection> = None;
    // Whether the next pass restarts the WAL; passes until a restart is tried again after
    // one gave up.
    let (mut restart, mut restart_later) = (false, 0_u32);
    let (mut failures, mut skip) = (0_u32, 0_u32);
    loop {
        tick.tick().await;
        if skip > 0 {
            skip -= 1;
            continue;
        }
        if conn.is_none() {
            let Ok(mut c) = sqlx::SqliteConnection::connect_with(&options).await else {
                failures += 1;
                skip = 2_u32.saturating_pow(failures).min(40);
                continue;
            };
            let mode: Option<String> = sqlx::query_scalar("PRAGMA journal_mode")
                .fetch_optional(&mut c)
                .await
                .ok()
                .flatten();
            if !mode.is_some_and(|m| m.eq_ignore_ascii_case("wal")) {
                return;
            }
            conn = Some(c);
        }
        let Some(c) = conn.as_mut() else { continue };
        let mode = if restart { "RESTART" } else { "PASSIVE" };
        let done = sqlx::query_as::<_, (i64, i64, i64)>(sqlx::AssertSqlSafe(format!(
            "PRAGMA wal_checkpoint({mode})"
        )))
        .fetch_one(&mut *c)
        .await;
        match done {
            // (gave up on a lock, frames in the WAL, frames copied): a WAL copied whole starts
            // over at the writer's next transaction without help.
            Ok((gave_up, frames, copied)) => {
                failures = 0;
                if restart && gave_up != 0 {
                    // A reader holds an old snapshot (a long scan): try again in 2 s, not
                    // every pass, so that the writer is held at most 50 ms in 2 s meanwhile.
                    restart_later = 8;
                }
                restart_later = restart_later.saturating_sub(1);
                restart = frames >= WAL_RESTART_FRAMES && copied < frames && restart_later == 0;
            }
            Err(e) => {
                tracing::debug!(target: "audit_store", "SQLite WAL checkpoint failed: {e}");
                conn = None;
                failures += 1;
                skip = 2_u32.saturating_pow(failures).min(40);
            }
        }
    }
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
        }
    }

    /// Chains every record this store writes into its account's hash chain, sealed and
    /// checkpointed with `keys` (see [`chain`]).
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

    /// Opens (creating if missing) the database file at `path`, in WAL mode with
    /// `synchronous = NORMAL`: a commit survives a crash of the process, and readers never
    /// block the writer for long. A task of the store's checkpoints the WAL every 250 ms,
    /// off the writer's commits; a checkpoint that would wait for a reader gives up after
    /// 50 ms. It ends with the last clone of the store.
    ///
    /// # Errors
    ///
    /// When the file cannot be opened or created.
    pub async fn open(path: impl AsRef<Path>) -> Result<Self> {
        Self::with_options(SqliteConnectOptions::new().filename(path), true).await
    }

    /// Opens a database from a `sqlite:` URL (`sqlite://demo-data/audit.db`), with the same
    /// settings as [`open`](Self::open).
    ///
    /// # Errors
    ///
    /// When the URL is not a SQLite URL or the file cannot be opened.
    pub async fn connect(url: &str) -> Result<Self> {
        Self::with_options(SqliteConnectOptions::from_str(url)?, true).await
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
                "no SQLite database at {}",
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
            let task = tokio::spawn(checkpoints(options));
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

/// `PRAGMA cache_size`'s value for `bytes`: negative is KiB (at least 1).
fn cache_size(bytes: u64) -> String {
    format!("-{}", (bytes / 1024).max(1))
}

/// Whether the insert statement for `chunk` is kept prepared on the connection: only the
/// full-size one, which every large batch reuses. A prepared statement of many rows holds
/// megabytes; cached for every partial size (each a different SQL text, up to sqlx's 100 per
/// connection), the 1,000-row ones of an earlier version held most of a server's memory under
/// light load (the whole-server benchmark's peak RSS).
fn cached(chunk: &[StoredRecord]) -> bool {
    chunk.len() == ROWS_PER_STATEMENT
}

fn insert_statement(rows: &[StoredRecord], links: Option<&[Link]>) -> QueryBuilder<Sqlite> {
    let mut builder = QueryBuilder::new("INSERT OR IGNORE INTO audit_logs (");
    builder.push(COLUMNS.join(", "));
    if links.is_some() {
        builder.push(", chain_seq, chain_hash, chain_seal");
    }
    builder.push(") ");
    builder.push_values(rows.iter().enumerate(), |mut b, (i, r)| {
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
        if let Some(link) = links.map(|l| l[i]) {
            b.push_bind(link.seq)
                .push_bind(link.hash.to_vec())
                .push_bind(link.seal.to_vec());
        }
    });
    builder
}

/// `?, ?, ?` for `n` values.
fn placeholders(n: usize) -> String {
    let mut text = "?, ".repeat(n);
    text.truncate(text.len().saturating_sub(2));
    text
}

impl SqliteStore {
    /// Writes a batch as the next links of its chains, in one `BEGIN IMMEDIATE` transaction:
    /// SQLite's write lock is the ordering point, also between processes sharing the file.
    async fn insert_chained(&self, keys: &ChainKeys, records: &[StoredRecord]) -> Result<u64> {
        let records = chain::dedup_ids(records);
        let mut skip_stored = false;
        loop {
            let mut tx = self.writer.begin_with("BEGIN IMMEDIATE").await?;
            // A retried batch may have committed before: such records keep their links.
            let rows: Cow<'_, [StoredRecord]> = if skip_stored {
                let mut stored = std::collections::HashSet::new();
                for chunk in records.chunks(IN_LIST) {
                    let sql = format!(
                        "SELECT id FROM audit_logs WHERE id IN ({})",
                        placeholders(chunk.len())
                    );
                    let mut query = sqlx::query_scalar::<_, Uuid>(sqlx::AssertSqlSafe(sql));
                    for r in chunk {
                        query = query.bind(r.id);
                    }
                    stored.extend(query.fetch_all(&mut *tx).await?);
                }
                Cow::Owned(
                    records
                        .iter()
                        .filter(|r| !stored.contains(&r.id))
                        .cloned()
                        .collect(),
                )
            } else {
                Cow::Borrowed(&records[..])
            };
            let chains: Vec<&str> = rows
                .iter()
                .map(chain::chain_of)
                .collect::<BTreeSet<_>>()
                .into_iter()
                .collect();
            let mut heads = HashMap::with_capacity(chains.len());
            for chunk in chains.chunks(IN_LIST) {
                let sql = format!(
                    "SELECT chain, seq, hash FROM audit_chain_heads WHERE chain IN ({})",
                    placeholders(chunk.len())
                );
                let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
                for chain in chunk {
                    query = query.bind(*chain);
                }
                for row in query.fetch_all(&mut *tx).await? {
                    let hash: Vec<u8> = row.try_get(2)?;
                    heads.insert(
                        row.try_get::<String, _>(0)?,
                        (row.try_get(1)?, hash.try_into().unwrap_or(GENESIS)),
                    );
                }
            }
            // Each statement's links are computed while SQLite writes the previous one: the
            // hashing runs on this thread while SQLite's worker thread inserts.
            let mut stored = 0;
            let mut chunks = rows.chunks(ROWS_PER_STATEMENT);
            let mut next = chunks
                .next()
                .map(|chunk| (chunk, chain::link_rows(keys, &mut heads, chunk)));
            while let Some((chunk, links)) = next.take() {
                let mut statement = insert_statement(chunk, Some(&links));
                let (written, following) = tokio::join!(
                    statement
                        .build()
                        .persistent(cached(chunk))
                        .execute(&mut *tx),
                    async {
                        chunks
                            .next()
                            .map(|chunk| (chunk, chain::link_rows(keys, &mut heads, chunk)))
                    }
                );
                stored += written?.rows_affected();
                next = following;
            }
            if stored != rows.len() as u64 {
                tx.rollback().await?;
                if skip_stored {
                    return Err(StoreError::Config(
                        "a chained batch kept colliding with stored records".into(),
                    ));
                }
                skip_stored = true;
                continue;
            }
            let changed: Vec<(&str, i64, [u8; 32])> = chains
                .iter()
                .filter_map(|c| heads.get(*c).map(|(seq, hash)| (*c, *seq, *hash)))
                .collect();
            for chunk in changed.chunks(IN_LIST) {
                let mut builder = QueryBuilder::<Sqlite>::new(
                    "INSERT INTO audit_chain_heads (chain, seq, hash) ",
                );
                builder.push_values(chunk, |mut b, (chain, seq, hash)| {
                    b.push_bind(chain.to_string())
                        .push_bind(*seq)
                        .push_bind(hash.to_vec());
                });
                builder.push(
                    " ON CONFLICT (chain) DO UPDATE SET seq = excluded.seq, hash = excluded.hash",
                );
                builder.build().execute(&mut *tx).await?;
            }
            tx.commit().await?;
            return Ok(stored);
        }
    }

    /// Retention on a chained store: per chain, deletes the longest prefix of records that
    /// are all older than the cutoff, after signing an anchor where the chain now starts.
    async fn delete_chained(&self, keys: &ChainKeys, cutoff_ms: i64) -> Result<u64> {
        let mut deleted = 0;
        for head in self.chain_heads().await? {
            // Every query goes through the account index: the chain's prefix is older than
            // the cutoff, so its time bounds the range read.
            let (chain, bind) = chain_condition(&head.chain, "?");
            let named = |sql: String| {
                let query = sqlx::query(sqlx::AssertSqlSafe(sql));
                if bind {
                    query.bind(head.chain.clone())
                } else {
                    query
                }
            };
            let keep: Option<i64> = named(format!(
                "SELECT min(chain_seq) FROM audit_logs WHERE {chain} \
                 AND chain_seq IS NOT NULL AND time_ms >= ?"
            ))
            .bind(cutoff_ms)
            .fetch_one(&self.pool)
            .await?
            .try_get(0)?;
            let last_pruned = keep.map_or(head.seq, |k| k - 1);
            let anchored: Option<i64> = sqlx::query_scalar(
                "SELECT max(seq) FROM audit_checkpoints WHERE chain = ? AND kind = 'anchor'",
            )
            .bind(&head.chain)
            .fetch_one(&self.pool)
            .await?;
            if last_pruned <= anchored.unwrap_or(0) {
                continue;
            }
            let hash: Option<Vec<u8>> = named(format!(
                "SELECT chain_hash FROM audit_logs WHERE {chain} AND time_ms < ? \
                 AND chain_seq = ?"
            ))
            .bind(cutoff_ms)
            .bind(last_pruned)
            .fetch_optional(&self.pool)
            .await?
            .map(|row| row.try_get(0))
            .transpose()?;
            let Some(hash) = hash else { continue };
            let anchor = Checkpoint::sign(
                keys,
                CheckpointKind::Anchor,
                head.chain.clone(),
                last_pruned,
                hash,
                crate::chain::now_ms(),
            );
            self.write_checkpoints(std::slice::from_ref(&anchor))
                .await?;
            loop {
                let step = named(format!(
                    "DELETE FROM audit_logs WHERE id IN (SELECT id FROM audit_logs \
                     WHERE {chain} AND time_ms < ? AND chain_seq IS NOT NULL \
                     AND chain_seq <= ? ORDER BY time_ms LIMIT ?)"
                ))
                .bind(cutoff_ms)
                .bind(last_pruned)
                .bind(DELETE_CHUNK)
                .execute(&self.pool)
                .await?
                .rows_affected();
                deleted += step;
                if step < DELETE_CHUNK as u64 {
                    break;
                }
            }
            // Checkpoints of pruned records, and older anchors, vouch for nothing left.
            sqlx::query(
                "DELETE FROM audit_checkpoints WHERE chain = ? AND seq < ? \
                 OR (chain = ? AND seq = ? AND kind = 'checkpoint')",
            )
            .bind(&head.chain)
            .bind(last_pruned)
            .bind(&head.chain)
            .bind(last_pruned)
            .execute(&self.pool)
            .await?;
        }
        Ok(deleted)
    }
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
        if records.is_empty() {
            return Ok(0);
        }
        let stored = match &self.chain {
            Some(keys) => self.insert_chained(keys, records).await?,
            None => {
                let mut tx = self.writer.begin().await?;
                let mut stored = 0;
                for chunk in records.chunks(ROWS_PER_STATEMENT) {
                    stored += insert_statement(chunk, None)
                        .build()
                        .persistent(cached(chunk))
                        .execute(&mut *tx)
                        .await?
                        .rows_affected();
                }
                tx.commit().await?;
                stored
            }
        };
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
        let mut deleted = match &self.chain {
            Some(keys) => self.delete_chained(keys, cutoff_ms).await?,
            None => 0,
        };
        // Unchained records (all of them in an unchained store) go by time alone.
        loop {
            let step = sqlx::query(
                "DELETE FROM audit_logs WHERE id IN (SELECT id FROM audit_logs \
                 WHERE time_ms < ? AND chain_seq IS NULL ORDER BY time_ms LIMIT ?)",
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

    fn chain_keys(&self) -> Option<&ChainKeys> {
        self.chain.as_deref()
    }

    async fn chain_heads(&self) -> Result<Vec<ChainHead>> {
        let rows = sqlx::query("SELECT chain, seq, hash FROM audit_chain_heads ORDER BY chain")
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(head_of).collect()
    }

    async fn chain_head(&self, chain: &str) -> Result<Option<ChainHead>> {
        let row = sqlx::query("SELECT chain, seq, hash FROM audit_chain_heads WHERE chain = ?")
            .bind(chain)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(head_of).transpose()
    }

    async fn chain_rows(
        &self,
        chain: &str,
        after: (i64, Uuid),
        limit: u32,
    ) -> Result<Vec<ChainRow>> {
        let (condition, bind) = chain_condition(chain, "?");
        let sql = format!(
            "SELECT {} FROM audit_logs WHERE {condition} AND chain_seq IS NOT NULL \
             AND (chain_seq, id) > (?, ?) ORDER BY chain_seq, id LIMIT ?",
            chain_select()
        );
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
        if bind {
            query = query.bind(chain);
        }
        let rows = query
            .bind(after.0)
            .bind(after.1)
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(chain_row_of).collect()
    }

    fn chain_scan(&self, scope: ChainScope) -> BoxStream<'static, Result<Vec<ScannedLink>>> {
        let pool = self.pool.clone();
        spawn_scan(move |tx| async move {
            let mut conn = pool.acquire().await?;
            let whole = matches!(scope, ChainScope::All);
            let (sql, chain, seqs) = match &scope {
                // The table is clustered by id: one pass in id order, page after page.
                ChainScope::All => (
                    format!(
                        "SELECT {} FROM audit_logs WHERE chain_seq IS NOT NULL",
                        packed_chain_select()
                    ),
                    None,
                    None,
                ),
                // The account index, in its order: records of one account in time order
                // are nearly in chain order.
                ChainScope::Chain { chain, first, last } => {
                    let (condition, bind) = chain_condition(chain, "?");
                    (
                        format!(
                            "SELECT {} FROM audit_logs WHERE {condition} \
                             AND chain_seq >= ? AND chain_seq <= ? ORDER BY time_ms, id",
                            packed_chain_select()
                        ),
                        bind.then(|| chain.clone()),
                        Some((*first, *last)),
                    )
                }
            };
            if whole {
                sqlx::query(sqlx::AssertSqlSafe(format!(
                    "PRAGMA mmap_size = {SCAN_MMAP_BYTES}"
                )))
                .execute(&mut *conn)
                .await?;
            }
            let outcome = async {
                let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
                if let Some(chain) = chain {
                    query = query.bind(chain);
                }
                if let Some((first, last)) = seqs {
                    query = query.bind(first).bind(last);
                }
                let mut rows = query.fetch(&mut *conn);
                let mut chunk = Vec::with_capacity(SCAN_CHUNK);
                loop {
                    // Rows come from sqlx's worker thread one by one. Waiting for each as
                    // it comes costs a wake-up (a futex call and a context switch) per row,
                    // more than decoding it: when none is ready, nap and take a burst.
                    let next = match rows.try_next().now_or_never() {
                        Some(next) => next?,
                        None => {
                            tokio::time::sleep(SCAN_NAP).await;
                            rows.try_next().await?
                        }
                    };
                    let Some(row) = next else { break };
                    chunk.push(packed_link_of(&row)?);
                    if chunk.len() == SCAN_CHUNK {
                        let full = std::mem::replace(&mut chunk, Vec::with_capacity(SCAN_CHUNK));
                        if tx.send(Ok(full)).await.is_err() {
                            return Ok(()); // the reader is gone
                        }
                    }
                }
                if !chunk.is_empty() {
                    let _ = tx.send(Ok(chunk)).await;
                }
                Result::Ok(())
            }
            .await;
            if whole {
                // The pooled connection goes back to reading through the page cache.
                sqlx::query("PRAGMA mmap_size = 0")
                    .execute(&mut *conn)
                    .await?;
            }
            outcome
        })
    }

    async fn all_checkpoints(&self) -> Result<Vec<Checkpoint>> {
        let rows = sqlx::query(
            "SELECT chain, seq, head, time_ms, kind, key_id, signature FROM audit_checkpoints \
             ORDER BY chain, seq, time_ms",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(checkpoint_of).collect()
    }

    async fn chain_span(
        &self,
        chain: &str,
        since_ms: i64,
        before_ms: i64,
    ) -> Result<Option<(i64, i64)>> {
        let (condition, bind) = chain_condition(chain, "?");
        let mut query = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT min(chain_seq), max(chain_seq) FROM audit_logs \
             WHERE {condition} AND chain_seq IS NOT NULL AND time_ms >= ? AND time_ms < ?"
        )));
        if bind {
            query = query.bind(chain);
        }
        let row = query
            .bind(since_ms)
            .bind(before_ms)
            .fetch_one(&self.pool)
            .await?;
        let (lo, hi): (Option<i64>, Option<i64>) = (row.try_get(0)?, row.try_get(1)?);
        Ok(lo.zip(hi))
    }

    async fn checkpoints(&self, chain: &str) -> Result<Vec<Checkpoint>> {
        let rows = sqlx::query(
            "SELECT chain, seq, head, time_ms, kind, key_id, signature FROM audit_checkpoints \
             WHERE chain = ? ORDER BY seq, time_ms",
        )
        .bind(chain)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(checkpoint_of).collect()
    }

    async fn write_checkpoints(&self, checkpoints: &[Checkpoint]) -> Result<()> {
        for chunk in checkpoints.chunks(IN_LIST) {
            let mut builder = QueryBuilder::<Sqlite>::new(
                "INSERT OR IGNORE INTO audit_checkpoints \
                 (chain, seq, head, time_ms, kind, key_id, signature) ",
            );
            builder.push_values(chunk, |mut b, c| {
                b.push_bind(c.account_id.clone())
                    .push_bind(c.seq)
                    .push_bind(c.head.clone())
                    .push_bind(c.time_ms)
                    .push_bind(c.kind.as_str())
                    .push_bind(c.key_id.clone())
                    .push_bind(c.signature.clone());
            });
            builder.build().execute(&self.pool).await?;
        }
        Ok(())
    }
}

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
                    let mut row = crate::chain::tests::row(i, Some("acc"));
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
            tokio::time::sleep(CHECKPOINT_EVERY).await;
            waited += CHECKPOINT_EVERY;
        }
        assert!(
            size(&path) >= db_before + (4 << 20),
            "not checkpointed in {waited:?}"
        );
        tokio::time::sleep(CHECKPOINT_EVERY * 2).await;
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
