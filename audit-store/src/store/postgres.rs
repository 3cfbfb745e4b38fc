//! The PostgreSQL store, for scale and for several app instances sharing one database.
//!
//! A batch is one binary `COPY audit_logs FROM STDIN`, the cheapest way in for the server and
//! for us (the rows are encoded straight from the records). A batch that meets an id already
//! stored (a retry of a batch that committed) is written again as one `INSERT ... SELECT FROM
//! UNNEST($1, ..., $24) ON CONFLICT DO NOTHING`, which skips the stored rows. The table is
//! partitioned by month of `action.time`; the store creates a month's partition before it
//! first writes to it, and retention drops whole months.

use std::borrow::Cow;
use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::{Arc, Mutex, PoisonError};

use futures_util::TryStreamExt as _;
use futures_util::stream::BoxStream;
use sqlx::postgres::PgPool;
use sqlx::{AssertSqlSafe, Postgres, QueryBuilder, Row};
use uuid::Uuid;

use super::copy;
use super::sql::{self, QueryTarget};
use super::{AuditStore, PageRow, RecordQuery, SCAN_CHUNK, chain_condition, spawn_scan};
use crate::chain::{
    self, ChainHead, ChainKeys, ChainRow, ChainScope, Checkpoint, CheckpointKind, GENESIS, Link,
    ScannedLink,
};
use crate::row::{
    StoredRecord, chain_row_of, chain_select, checkpoint_of, head_of, scanned_link_of,
};
use crate::{Result, StoreError};

const INSERT: &str = "INSERT INTO audit_logs (id, time_ms, account_id, account_name, zone_id, zone_name, \
    action_type, action_result, actor_email, actor_id, actor_ip_address, actor_type, actor_context, \
    actor_token_id, actor_token_name, raw_ray_id, raw_method, raw_status_code, raw_uri, resource_id, \
    resource_product, resource_type, resource_scope, record) \
    SELECT * FROM UNNEST($1::uuid[], $2::int8[], $3::text[], $4::text[], $5::text[], $6::text[], \
    $7::text[], $8::text[], $9::text[], $10::text[], $11::text[], $12::text[], $13::text[], \
    $14::text[], $15::text[], $16::text[], $17::text[], $18::int4[], $19::text[], $20::text[], \
    $21::text[], $22::text[], $23::text[], $24::text[]) \
    ON CONFLICT DO NOTHING";

/// [`INSERT`] of chained rows, each with its link. Without `ON CONFLICT`: an id already stored
/// fails the statement (`unique_violation`), and the batch is linked again without it.
const INSERT_LINKED: &str = "INSERT INTO audit_logs (id, time_ms, account_id, account_name, zone_id, zone_name, \
    action_type, action_result, actor_email, actor_id, actor_ip_address, actor_type, actor_context, \
    actor_token_id, actor_token_name, raw_ray_id, raw_method, raw_status_code, raw_uri, resource_id, \
    resource_product, resource_type, resource_scope, record, chain_seq, chain_hash, chain_seal) \
    SELECT * FROM UNNEST($1::uuid[], $2::int8[], $3::text[], $4::text[], $5::text[], $6::text[], \
    $7::text[], $8::text[], $9::text[], $10::text[], $11::text[], $12::text[], $13::text[], \
    $14::text[], $15::text[], $16::text[], $17::text[], $18::int4[], $19::text[], $20::text[], \
    $21::text[], $22::text[], $23::text[], $24::text[], $25::int8[], $26::bytea[], $27::bytea[])";

/// The condition selecting `chain`'s rows (see [`chain_condition`]) and a function numbering
/// the statement's further parameters after it: `$1` is `chain` when it must be bound.
fn chain_params(chain: &str) -> (String, bool, impl Fn(usize) -> String) {
    let (condition, bind) = chain_condition(chain, "$1");
    let base = usize::from(bind);
    (condition, bind, move |i: usize| format!("${}", base + i))
}

/// Rows whose digests a chained write computes between two looks at its head statements.
const DIGEST_SLICE: usize = 500;
/// Rows a chained write inserts in a first statement, while it links the rest.
const LEAD_ROWS: usize = 2000;

/// Audit records in PostgreSQL.
///
/// ```no_run
/// use audit_store::PostgresStore;
/// use audit_store::store::AuditStore;
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
    /// Months (`year * 12 + month0`) whose partition is known to exist.
    partitions: Arc<Mutex<BTreeSet<i64>>>,
    /// Set: every record is chained (see [`chain`]).
    chain: Option<Arc<ChainKeys>>,
}

impl PostgresStore {
    /// A store on a pool. Point the pool's `search_path` elsewhere to keep the tables in
    /// another schema.
    pub fn new(pool: PgPool) -> Self {
        Self {
            pool,
            partitions: Arc::default(),
            chain: None,
        }
    }

    /// Chains every record this store writes into its account's hash chain, sealed and
    /// checkpointed with `keys` (see [`chain`]). Every instance writing to
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

    /// Writes `records` (with their `links` when chained, one per record) on `conn` in one
    /// statement: a `COPY` when the batch is large enough to gain by it ([`copy::pays`]), else
    /// an `INSERT`.
    async fn write_rows(
        conn: &mut sqlx::PgConnection,
        records: &[StoredRecord],
        links: Option<&[Link]>,
    ) -> sqlx::Result<u64> {
        if copy::pays(records) {
            copy::copy_rows(conn, records, links).await
        } else {
            Self::insert_rows(conn, records, links).await
        }
    }

    /// One `INSERT ... SELECT FROM UNNEST` of all `records`: the write of a small batch, and
    /// the way back for an unchained batch whose `COPY` met an id already stored. Unchained
    /// ([`INSERT`]), rows already stored are skipped; chained ([`INSERT_LINKED`], `links` one
    /// per record), they fail the statement.
    async fn insert_rows<'e>(
        executor: impl sqlx::PgExecutor<'e>,
        records: &[StoredRecord],
        links: Option<&[Link]>,
    ) -> sqlx::Result<u64> {
        macro_rules! column {
            ($field:ident) => {
                records.iter().map(|r| r.$field.clone()).collect::<Vec<_>>()
            };
        }
        let statement = if links.is_some() {
            INSERT_LINKED
        } else {
            INSERT
        };
        let query = sqlx::query(statement)
            .bind(column!(id))
            .bind(column!(time_ms))
            .bind(column!(account_id))
            .bind(column!(account_name))
            .bind(column!(zone_id))
            .bind(column!(zone_name))
            .bind(records.iter().map(|r| r.action_type).collect::<Vec<_>>())
            .bind(records.iter().map(|r| r.action_result).collect::<Vec<_>>())
            .bind(column!(actor_email))
            .bind(column!(actor_id))
            .bind(column!(actor_ip_address))
            .bind(records.iter().map(|r| r.actor_type).collect::<Vec<_>>())
            .bind(records.iter().map(|r| r.actor_context).collect::<Vec<_>>())
            .bind(column!(actor_token_id))
            .bind(column!(actor_token_name))
            .bind(column!(raw_ray_id))
            .bind(column!(raw_method))
            .bind(column!(raw_status_code))
            .bind(column!(raw_uri))
            .bind(column!(resource_id))
            .bind(column!(resource_product))
            .bind(column!(resource_type))
            .bind(column!(resource_scope))
            .bind(column!(record));
        let query = match links {
            Some(links) => query
                .bind(links.iter().map(|l| l.seq).collect::<Vec<_>>())
                .bind(links.iter().map(|l| l.hash).collect::<Vec<_>>())
                .bind(links.iter().map(|l| l.seal).collect::<Vec<_>>()),
            None => query,
        };
        Ok(query.execute(executor).await?.rows_affected())
    }

    /// Writes an unchained batch: one `COPY` (or `INSERT` when small), or, when the batch
    /// holds an id already stored (it is a retry of a batch that committed), one `INSERT`
    /// that skips the stored rows.
    async fn write_unchained(&self, records: &[StoredRecord]) -> Result<u64> {
        let mut guarded = copy::Guarded::new(self.pool.acquire().await?);
        let written = match Self::write_rows(guarded.conn(), records, None).await {
            Err(e) if copy::is_duplicate(&e) => Self::insert_rows(guarded.conn(), records, None)
                .await
                .map_err(Into::into),
            written => written.map_err(Into::into),
        };
        guarded.release();
        written
    }

    async fn write(&self, records: &[StoredRecord]) -> Result<u64> {
        match &self.chain {
            None => self.write_unchained(records).await,
            Some(keys) => self.insert_chained(keys, records).await,
        }
    }

    /// Writes a batch as the next links of its chains, in one transaction that holds its
    /// chains' head rows (`FOR UPDATE`, locked in name order so writers never deadlock): the
    /// ordering point per account across every instance sharing the database.
    async fn insert_chained(&self, keys: &ChainKeys, records: &[StoredRecord]) -> Result<u64> {
        let mut guarded = copy::Guarded::new(self.pool.acquire().await?);
        let written = Self::insert_chained_on(guarded.conn(), keys, records).await;
        guarded.release();
        written
    }

    /// [`insert_chained`](Self::insert_chained) on `conn`.
    async fn insert_chained_on(
        conn: &mut sqlx::PgConnection,
        keys: &ChainKeys,
        records: &[StoredRecord],
    ) -> Result<u64> {
        use sqlx::Connection as _;
        let records = chain::dedup_ids(records);
        let mut skip_stored = false;
        loop {
            let mut tx = conn.begin().await?;
            // A retried batch may have committed before: such records keep their links.
            let rows: Cow<'_, [StoredRecord]> = if skip_stored {
                let stored: HashSet<Uuid> = sqlx::query_scalar(
                    "SELECT l.id FROM audit_logs l \
                     JOIN UNNEST($1::uuid[], $2::int8[]) AS b(id, time_ms) \
                     ON l.id = b.id AND l.time_ms = b.time_ms",
                )
                .bind(records.iter().map(|r| r.id).collect::<Vec<_>>())
                .bind(records.iter().map(|r| r.time_ms).collect::<Vec<_>>())
                .fetch_all(&mut *tx)
                .await?
                .into_iter()
                .collect();
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
            // The rows' digests (most of linking's work) are computed while the server
            // creates and locks the heads.
            let lock_heads = async {
                sqlx::query(
                    "INSERT INTO audit_chain_heads (chain, seq, hash) \
                     SELECT c, 0, $2 FROM UNNEST($1::text[]) AS c ORDER BY c \
                     ON CONFLICT (chain) DO NOTHING",
                )
                .bind(&chains)
                .bind(GENESIS.to_vec())
                .execute(&mut *tx)
                .await?;
                sqlx::query(
                    "SELECT chain, seq, hash FROM audit_chain_heads WHERE chain = ANY($1) \
                     ORDER BY chain FOR UPDATE",
                )
                .bind(&chains)
                .fetch_all(&mut *tx)
                .await
            };
            // The first rows' digests are computed while the server creates and locks the
            // heads; the others', and their links, while it inserts the first rows. Linking
            // then costs the writer little more than the bytes it adds.
            let lead = rows.len().min(LEAD_ROWS);
            let (first, rest) = rows.split_at(lead);
            let digest_first = async {
                // In slices, giving the statements above their turn in between.
                let mut digests = Vec::with_capacity(first.len());
                for slice in first.chunks(DIGEST_SLICE) {
                    digests.extend(chain::row_digests(slice));
                    tokio::task::yield_now().await;
                }
                digests
            };
            let (locked, digests) = tokio::join!(lock_heads, digest_first);
            let locked = locked?;
            let mut heads = HashMap::with_capacity(locked.len());
            for row in &locked {
                let hash: Vec<u8> = row.try_get(2)?;
                heads.insert(
                    row.try_get::<String, _>(0)?,
                    (
                        row.try_get::<i64, _>(1)?,
                        hash.try_into().unwrap_or(GENESIS),
                    ),
                );
            }
            let links = chain::link_digested(keys, &mut heads, first, &digests);
            let (copied_first, rest_links) =
                tokio::join!(Self::write_rows(&mut tx, first, Some(&links)), async {
                    chain::link_rows(keys, &mut heads, rest)
                });
            let copied = match copied_first {
                Ok(n) if !rest.is_empty() => Self::write_rows(&mut tx, rest, Some(&rest_links))
                    .await
                    .map(|m| n + m),
                other => other,
            };
            let stored = match copied {
                Ok(stored) => stored,
                // A retried batch that committed before: link only the rows not stored.
                Err(e) if copy::is_duplicate(&e) => {
                    tx.rollback().await?;
                    if skip_stored {
                        return Err(StoreError::Config(
                            "a chained batch kept colliding with stored records".into(),
                        ));
                    }
                    skip_stored = true;
                    continue;
                }
                Err(e) => return Err(e.into()),
            };
            let (names, seqs, hashes): (Vec<&str>, Vec<i64>, Vec<[u8; 32]>) = chains
                .iter()
                .filter_map(|c| heads.get(*c).map(|(seq, hash)| (*c, *seq, *hash)))
                .fold(
                    (vec![], vec![], vec![]),
                    |(mut n, mut s, mut h), (c, seq, hash)| {
                        n.push(c);
                        s.push(seq);
                        h.push(hash);
                        (n, s, h)
                    },
                );
            sqlx::query(
                "UPDATE audit_chain_heads AS h SET seq = u.seq, hash = u.hash \
                 FROM UNNEST($1::text[], $2::int8[], $3::bytea[]) AS u(chain, seq, hash) \
                 WHERE h.chain = u.chain",
            )
            .bind(names)
            .bind(seqs)
            .bind(hashes)
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
            return Ok(stored);
        }
    }

    /// Retention on a chained store: per chain, signs an anchor where the chain will start,
    /// then deletes the longest prefix of records that are all older than the cutoff.
    /// Returns the pruned prefix of each chain, `(chain, last pruned seq)`.
    async fn prune_chains(
        &self,
        keys: &ChainKeys,
        cutoff_ms: i64,
    ) -> Result<(u64, Vec<(String, i64)>)> {
        let mut deleted = 0;
        let mut pruned = Vec::new();
        for head in self.chain_heads().await? {
            // Every query goes through the account index: the chain's prefix is older than
            // the cutoff, so its time bounds the range read (and the partitions).
            let (chain, bind, p) = chain_params(&head.chain);
            let named = |sql: String| {
                let query = sqlx::query(AssertSqlSafe(sql));
                if bind {
                    query.bind(head.chain.clone())
                } else {
                    query
                }
            };
            let keep: Option<i64> = named(format!(
                "SELECT min(chain_seq) FROM audit_logs WHERE {chain} \
                 AND chain_seq IS NOT NULL AND time_ms >= {}",
                p(1)
            ))
            .bind(cutoff_ms)
            .fetch_one(&self.pool)
            .await?
            .try_get(0)?;
            let last_pruned = keep.map_or(head.seq, |k| k - 1);
            pruned.push((head.chain.clone(), last_pruned));
            let anchored: Option<i64> = sqlx::query_scalar(
                "SELECT max(seq) FROM audit_checkpoints WHERE chain = $1 AND kind = 'anchor'",
            )
            .bind(&head.chain)
            .fetch_one(&self.pool)
            .await?;
            if last_pruned <= anchored.unwrap_or(0) {
                continue;
            }
            let hash: Option<Vec<u8>> = named(format!(
                "SELECT chain_hash FROM audit_logs WHERE {chain} AND time_ms < {} \
                 AND chain_seq = {}",
                p(1),
                p(2)
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
                chain::now_ms(),
            );
            self.write_checkpoints(std::slice::from_ref(&anchor))
                .await?;
            loop {
                let step = named(format!(
                    "DELETE FROM audit_logs WHERE (id, time_ms) IN (SELECT id, time_ms \
                     FROM audit_logs WHERE {chain} AND time_ms < {} \
                     AND chain_seq IS NOT NULL AND chain_seq <= {} ORDER BY time_ms LIMIT 5000)",
                    p(1),
                    p(2)
                ))
                .bind(cutoff_ms)
                .bind(last_pruned)
                .execute(&self.pool)
                .await?
                .rows_affected();
                deleted += step;
                if step < 5000 {
                    break;
                }
            }
            sqlx::query(
                "DELETE FROM audit_checkpoints WHERE chain = $1 \
                 AND (seq < $2 OR (seq = $2 AND kind = 'checkpoint'))",
            )
            .bind(&head.chain)
            .bind(last_pruned)
            .execute(&self.pool)
            .await?;
        }
        Ok((deleted, pruned))
    }

    /// Creates the monthly partitions `records` need that are not known to exist.
    async fn ensure_partitions(&self, records: &[StoredRecord]) -> Result<()> {
        let months: BTreeSet<i64> = records.iter().map(|r| month_of(r.time_ms)).collect();
        let missing: Vec<i64> = {
            let known = self
                .partitions
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            months.into_iter().filter(|m| !known.contains(m)).collect()
        };
        for month in missing {
            let (from, to) = (month_start_ms(month), month_start_ms(month + 1));
            let name = partition_name(month);
            // Identifiers cannot be bound; `name` is built from integers only.
            let sql = format!(
                "CREATE TABLE IF NOT EXISTS {name} PARTITION OF audit_logs FOR VALUES FROM ({from}) TO ({to})"
            );
            if let Err(e) = sqlx::query(AssertSqlSafe(sql)).execute(&self.pool).await {
                // Another instance may have created it at the same moment.
                let exists: bool = sqlx::query_scalar("SELECT to_regclass($1) IS NOT NULL")
                    .bind(&name)
                    .fetch_one(&self.pool)
                    .await?;
                if !exists {
                    return Err(e.into());
                }
            }
            self.partitions
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .insert(month);
        }
        Ok(())
    }
}

/// Months since year 0 (`year * 12 + month - 1`), in UTC.
fn month_of(time_ms: i64) -> i64 {
    let (year, month, _) = audit_layer::record::Timestamp::from_unix_millis(time_ms).date();
    year * 12 + i64::from(month) - 1
}

fn month_start_ms(month: i64) -> i64 {
    let (year, month0) = (month.div_euclid(12), month.rem_euclid(12));
    days_from_civil(year, month0 + 1, 1) * 86_400_000
}

fn partition_name(month: i64) -> String {
    format!(
        "audit_logs_p{:04}_{:02}",
        month.div_euclid(12),
        month.rem_euclid(12) + 1
    )
}

/// (year, month 1-12, day) → days since 1970-01-01.
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

impl QueryTarget for QueryBuilder<Postgres> {
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

impl AuditStore for PostgresStore {
    async fn page(&self, query: &RecordQuery) -> Result<Vec<PageRow>> {
        let mut builder = QueryBuilder::<Postgres>::new("");
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
        sqlx::migrate!("migrations/postgres")
            .run(&self.pool)
            .await?;
        Ok(())
    }

    async fn insert(&self, records: &[StoredRecord]) -> Result<u64> {
        if records.is_empty() {
            return Ok(0);
        }
        self.ensure_partitions(records).await?;
        match self.write(records).await {
            // "no partition of relation found for row": another instance dropped a month this
            // one believed existed. Forget what we knew and create what is missing.
            Err(crate::StoreError::Database(sqlx::Error::Database(e)))
                if e.code().as_deref() == Some("23514") =>
            {
                self.partitions
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .clear();
                self.ensure_partitions(records).await?;
                self.write(records).await
            }
            other => other,
        }
    }

    async fn ping(&self) -> Result<()> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    async fn delete_before(&self, cutoff_ms: i64) -> Result<u64> {
        // A chained store first prunes each chain's prefix (signing its anchor), so that
        // dropping a month below never cuts a chain in the middle.
        let (mut deleted, pruned) = match &self.chain {
            Some(keys) => self.prune_chains(keys, cutoff_ms).await?,
            None => (0, Vec::new()),
        };
        let (pruned_chains, pruned_seqs): (Vec<String>, Vec<i64>) = pruned.into_iter().unzip();
        // Whole months before the cutoff: drop their partitions.
        let rows = sqlx::query(
            "SELECT c.relname::text FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid \
             WHERE i.inhparent = to_regclass('audit_logs')",
        )
        .fetch_all(&self.pool)
        .await?;
        for row in rows {
            let name: String = row.get(0);
            let Some(month) = parse_partition_name(&name) else {
                continue;
            };
            if month_start_ms(month + 1) <= cutoff_ms {
                // A chained record beyond its chain's pruned prefix (written late, by a
                // spool replay) keeps its month until the chain's prefix passes it.
                let kept: bool = sqlx::query_scalar(AssertSqlSafe(format!(
                    "SELECT EXISTS (SELECT 1 FROM {name} p \
                     LEFT JOIN UNNEST($1::text[], $2::int8[]) AS a(chain, seq) \
                     ON coalesce(p.account_id, '') = a.chain \
                     WHERE p.chain_seq IS NOT NULL AND (a.seq IS NULL OR p.chain_seq > a.seq))"
                )))
                .bind(&pruned_chains)
                .bind(&pruned_seqs)
                .fetch_one(&self.pool)
                .await?;
                if kept {
                    continue;
                }
                let n: i64 =
                    sqlx::query_scalar(AssertSqlSafe(format!("SELECT count(*) FROM {name}")))
                        .fetch_one(&self.pool)
                        .await?;
                sqlx::query(AssertSqlSafe(format!("DROP TABLE {name}")))
                    .execute(&self.pool)
                    .await?;
                self.partitions
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .remove(&month);
                deleted += u64::try_from(n).unwrap_or(0);
            }
        }
        // The month the cutoff falls in: delete its older rows in bounded steps.
        loop {
            let step = sqlx::query(
                "DELETE FROM audit_logs WHERE (id, time_ms) IN (SELECT id, time_ms \
                 FROM audit_logs WHERE time_ms < $1 AND chain_seq IS NULL LIMIT 5000)",
            )
            .bind(cutoff_ms)
            .execute(&self.pool)
            .await?
            .rows_affected();
            deleted += step;
            if step < 5000 {
                return Ok(deleted);
            }
        }
    }

    async fn get(&self, account_id: &str, id: Uuid) -> Result<Option<String>> {
        let row = sqlx::query("SELECT record FROM audit_logs WHERE id = $1 AND account_id = $2")
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
        let row = sqlx::query("SELECT chain, seq, hash FROM audit_chain_heads WHERE chain = $1")
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
        let (condition, bind, p) = chain_params(chain);
        let sql = format!(
            "SELECT {} FROM audit_logs WHERE {condition} AND chain_seq IS NOT NULL \
             AND (chain_seq, id) > ({}, {}) ORDER BY chain_seq, id LIMIT {}",
            chain_select(),
            p(1),
            p(2),
            p(3)
        );
        let mut query = sqlx::query(AssertSqlSafe(sql));
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
            let (sql, chain, seqs) = match &scope {
                // A sequential scan of every partition, rows streamed as the server reads
                // them: server and client work at the same time.
                ChainScope::All => (
                    format!(
                        "SELECT {} FROM audit_logs WHERE chain_seq IS NOT NULL",
                        chain_select()
                    ),
                    None,
                    None,
                ),
                // The account index, in its order: records of one account in time order
                // are nearly in chain order.
                ChainScope::Chain { chain, first, last } => {
                    let (condition, bind, p) = chain_params(chain);
                    (
                        format!(
                            "SELECT {} FROM audit_logs WHERE {condition} \
                             AND chain_seq >= {} AND chain_seq <= {} ORDER BY time_ms, id",
                            chain_select(),
                            p(1),
                            p(2)
                        ),
                        bind.then(|| chain.clone()),
                        Some((*first, *last)),
                    )
                }
            };
            let whole = seqs.is_none();
            if whole {
                // A scan joining another one in progress would start mid-table and wrap
                // around: every chain's start would come last, and wait in memory.
                sqlx::query("SET synchronize_seqscans = off")
                    .execute(&mut *conn)
                    .await?;
            }
            let mut query = sqlx::query(AssertSqlSafe(sql));
            if let Some(chain) = chain {
                query = query.bind(chain);
            }
            if let Some((first, last)) = seqs {
                query = query.bind(first).bind(last);
            }
            let mut complete = true;
            {
                let mut rows = query.fetch(&mut *conn);
                let mut chunk = Vec::with_capacity(SCAN_CHUNK);
                while let Some(row) = rows.try_next().await? {
                    chunk.push(scanned_link_of(&row)?);
                    if chunk.len() == SCAN_CHUNK {
                        let full = std::mem::replace(&mut chunk, Vec::with_capacity(SCAN_CHUNK));
                        if tx.send(Ok(full)).await.is_err() {
                            complete = false; // the reader is gone
                            break;
                        }
                    }
                }
                if complete && !chunk.is_empty() {
                    let _ = tx.send(Ok(chunk)).await;
                }
            }
            if !complete {
                // The rest of the result is still on its way: rather than read it to reuse
                // the connection, close it.
                conn.close_on_drop();
            } else if whole {
                sqlx::query("RESET synchronize_seqscans")
                    .execute(&mut *conn)
                    .await?;
            }
            Ok(())
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
        let (condition, bind, p) = chain_params(chain);
        let mut query = sqlx::query(AssertSqlSafe(format!(
            "SELECT min(chain_seq), max(chain_seq) FROM audit_logs \
             WHERE {condition} AND chain_seq IS NOT NULL AND time_ms >= {} AND time_ms < {}",
            p(1),
            p(2)
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
             WHERE chain = $1 ORDER BY seq, time_ms",
        )
        .bind(chain)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(checkpoint_of).collect()
    }

    async fn write_checkpoints(&self, checkpoints: &[Checkpoint]) -> Result<()> {
        if checkpoints.is_empty() {
            return Ok(());
        }
        sqlx::query(
            "INSERT INTO audit_checkpoints (chain, seq, head, time_ms, kind, key_id, signature) \
             SELECT * FROM UNNEST($1::text[], $2::int8[], $3::bytea[], $4::int8[], $5::text[], \
             $6::text[], $7::bytea[]) ON CONFLICT DO NOTHING",
        )
        .bind(
            checkpoints
                .iter()
                .map(|c| c.account_id.as_str())
                .collect::<Vec<_>>(),
        )
        .bind(checkpoints.iter().map(|c| c.seq).collect::<Vec<_>>())
        .bind(
            checkpoints
                .iter()
                .map(|c| c.head.clone())
                .collect::<Vec<_>>(),
        )
        .bind(checkpoints.iter().map(|c| c.time_ms).collect::<Vec<_>>())
        .bind(
            checkpoints
                .iter()
                .map(|c| c.kind.as_str())
                .collect::<Vec<_>>(),
        )
        .bind(
            checkpoints
                .iter()
                .map(|c| c.key_id.as_str())
                .collect::<Vec<_>>(),
        )
        .bind(
            checkpoints
                .iter()
                .map(|c| c.signature.clone())
                .collect::<Vec<_>>(),
        )
        .execute(&self.pool)
        .await?;
        Ok(())
    }
}

/// `audit_logs_p2026_11` → its month number, for partitions this store created.
fn parse_partition_name(name: &str) -> Option<i64> {
    let rest = name.strip_prefix("audit_logs_p")?;
    let (year, month) = rest.split_once('_')?;
    let (year, month): (i64, i64) = (year.parse().ok()?, month.parse().ok()?);
    (1..=12).contains(&month).then_some(year * 12 + month - 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn months_and_their_bounds() {
        // 2025-01-23T18:25:14.749Z
        let t = 1_737_656_714_749;
        let month = month_of(t);
        assert_eq!(partition_name(month), "audit_logs_p2025_01");
        assert_eq!(month_start_ms(month), 1_735_689_600_000); // 2025-01-01
        assert_eq!(month_start_ms(month + 1), 1_738_368_000_000); // 2025-02-01
        assert_eq!(parse_partition_name("audit_logs_p2025_01"), Some(month));
        assert_eq!(month_of(month_start_ms(month + 1) - 1), month);
        assert_eq!(month_of(-1), month_of(0) - 1);
        assert_eq!(partition_name(month_of(0)), "audit_logs_p1970_01");
    }
}
