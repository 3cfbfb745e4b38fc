//! The PostgreSQL store, for scale and for several app instances sharing one database.
//!
//! A batch is one binary `COPY audit_logs FROM STDIN`, the cheapest way in for the server and
//! for us (the rows are encoded straight from the records). A batch that meets an id already
//! stored (a retry of a batch that committed) is written again as one `INSERT ... SELECT FROM
//! UNNEST($1, ..., $24) ON CONFLICT DO NOTHING`, which skips the stored rows. The table is
//! partitioned by month of `action.time`; the store creates a month's partition before it
//! first writes to it, and retention drops whole months.

mod copy;
mod page;
mod partitions;
mod scan;
mod write;

use std::sync::Arc;

use sqlx::postgres::PgPool;

use super::chained;
use super::shared::{self, Tables};
use super::{AuditStore, ChainedStore, LinkScan, scan::spawn_scan};
use super::{TableNames, migrations};
use crate::chain::ChainKeys;
use crate::model::{ChainScope, Retention, StoredRecord};
use crate::{Result, StoreError};
use partitions::Partitions;

/// Audit records in PostgreSQL.
///
/// ```no_run
/// use audit_store::PostgresStore;
/// use audit_store::store::AuditStore as _;
///
/// # async fn run() -> audit_store::Result<()> {
/// let pool = sqlx::PgPool::connect("postgres://postgres@127.0.0.1/test").await?;
/// let store = PostgresStore::new(pool);
/// store.migrate().await?;
/// # Ok(()) }
/// ```
#[derive(Clone, Debug)]
pub struct PostgresStore {
    pool: PgPool,
    /// The monthly partitions known to exist.
    partitions: Arc<Partitions>,
    /// Set: every record is chained (see [`chain`](crate::chain)).
    chain: Option<Arc<ChainKeys>>,
    /// Where the tables are.
    names: Arc<TableNames>,
}

impl PostgresStore {
    /// A store on a pool, its tables named by default (`audit_logs`, ... found through the
    /// connection's `search_path`); see [`table_names`](Self::table_names).
    pub fn new(pool: PgPool) -> Self {
        Self {
            pool,
            partitions: Arc::default(),
            chain: None,
            names: Arc::default(),
        }
    }

    /// Keeps the store's tables under `names`: another prefix than `audit_`, and a schema of
    /// their own (created by the migrations). Give it before the first
    /// [`migrate`](AuditStore::migrate), and always the same on every instance.
    ///
    /// ```no_run
    /// use audit_store::PostgresStore;
    /// use audit_store::store::TableNames;
    ///
    /// # async fn run() -> audit_store::Result<()> {
    /// let store = PostgresStore::connect("postgres://postgres@127.0.0.1/app")
    ///     .await?
    ///     .table_names(TableNames::new().schema("audit")?);
    /// # Ok(()) }
    /// ```
    #[must_use]
    pub fn table_names(mut self, names: TableNames) -> Self {
        self.names = Arc::new(names);
        self.partitions = Arc::default();
        self
    }

    /// The names of the store's tables.
    pub fn names(&self) -> &TableNames {
        &self.names
    }

    /// The store's migrations, with its table names, for an application that runs them with
    /// its own sqlx migrator instead of [`migrate`](AuditStore::migrate) (see
    /// [`SqliteStore::migrations`](crate::SqliteStore::migrations) for an example). Their
    /// versions are `2026112600000N` and up: the application's must differ.
    pub fn migrations(&self) -> Vec<sqlx::migrate::Migration> {
        migrations::postgres(&self.names)
    }

    /// Chains every record this store writes into its account's hash chain, sealed and
    /// checkpointed with `keys` (see [`chain`](crate::chain)). Every instance writing to
    /// the database must use the same keys.
    #[must_use]
    pub fn chained(mut self, keys: ChainKeys) -> Self {
        self.chain = Some(Arc::new(keys));
        self
    }

    /// Connects to `url` (`postgres://user@host/db`), with a 2 s acquire timeout so that an
    /// unreachable database fails writes fast (and the pipeline spools) rather than waiting
    /// sqlx's default 30 s.
    ///
    /// # Errors
    ///
    /// When the database cannot be reached.
    pub async fn connect(url: &str) -> Result<Self> {
        // A short acquire timeout: while the database is down, a write must fail fast so the
        // pipeline turns to its spool instead of holding records in memory.
        let pool = sqlx::postgres::PgPoolOptions::new()
            .acquire_timeout(std::time::Duration::from_secs(2))
            .connect(url)
            .await?;
        Ok(Self::new(pool))
    }

    /// The connection pool.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    fn tables(&self) -> Tables<'_, sqlx::Postgres> {
        Tables::new(&self.pool, &self.names)
    }

    async fn write(&self, records: &[StoredRecord]) -> Result<u64> {
        match &self.chain {
            None => write::write_unchained(&self.pool, &self.names, records).await,
            Some(keys) => {
                let mut guarded = copy::Guarded::new(self.pool.acquire().await?);
                let mut write = write::ChainedWrite {
                    conn: guarded.conn(),
                    keys,
                    names: &self.names,
                };
                let written = chained::insert_linked(&mut write, records).await;
                guarded.release();
                written
            }
        }
    }
}

impl AuditStore for PostgresStore {
    shared::record_reads!();

    async fn page(&self, query: &crate::model::RecordQuery) -> Result<crate::model::Page> {
        page::page(&self.pool, &self.names, query).await
    }

    async fn stats(&self, query: &crate::model::StatsQuery) -> Result<crate::model::Stats> {
        page::stats(&self.pool, &self.names, query).await
    }

    async fn migrate(&self) -> Result<()> {
        migrations::migrate(&self.pool, &self.names, self.migrations()).await
    }

    async fn insert(&self, records: &[StoredRecord]) -> Result<u64> {
        if records.is_empty() {
            return Ok(0);
        }
        self.partitions
            .ensure(&self.pool, &self.names, records)
            .await?;
        match self.write(records).await {
            // "no partition of relation found for row": another instance dropped a month this
            // one believed existed. Forget what we knew and create what is missing.
            Err(StoreError::Database(sqlx::Error::Database(e)))
                if e.code().as_deref() == Some("23514") =>
            {
                self.partitions.forget();
                self.partitions
                    .ensure(&self.pool, &self.names, records)
                    .await?;
                self.write(records).await
            }
            other => other,
        }
    }

    async fn delete_before(&self, cutoff_ms: i64) -> Result<u64> {
        shared::deleted_unless_refused(self.retain(cutoff_ms).await?)
    }
}

impl ChainedStore for PostgresStore {
    shared::chained_reads!();

    async fn retain(&self, cutoff_ms: i64) -> Result<Retention> {
        // A chained store first prunes each chain's prefix (signing its anchor), so that
        // dropping a month below never cuts a chain in the middle. A refused chain is not
        // among the pruned: the months holding its records stay.
        let (mut retention, pruned) = self
            .tables()
            .prune_chains(self.chain.as_deref(), cutoff_ms)
            .await?;
        retention.deleted += self
            .partitions
            .drop_before(&self.pool, &self.names, cutoff_ms, &pruned)
            .await?;
        // The month the cutoff falls in: delete its older rows in bounded steps.
        retention.deleted += self.tables().delete_unchained(cutoff_ms, false).await?;
        Ok(retention)
    }

    fn chain_scan(&self, scope: ChainScope) -> LinkScan {
        let (pool, names) = (self.pool.clone(), Arc::clone(&self.names));
        spawn_scan(move |tx| scan::scan(pool, names, scope, tx))
    }
}
super::positions::export_positions!(PostgresStore);
