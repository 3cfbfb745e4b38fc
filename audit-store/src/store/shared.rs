//! The statements both backends run alike, written once over sqlx's database traits: reads of
//! records and pages, reads of chains and checkpoints, and a chained store's retention. A
//! backend's store calls them with its pool; the SQL differs only in its placeholders (see
//! [`Dialect`]).

use futures_util::TryStreamExt as _;
use sqlx::{ColumnIndex, Decode, Encode, Executor, IntoArguments, Pool, QueryBuilder, Row, Type};
use uuid::Uuid;

use super::TableNames;
use super::decode::{CHECKPOINT_COLUMNS, chain_row_of, checkpoint_of, head_of};
use super::sql::{self, Dialect, Numbered, QueryTarget};
use crate::Result;
use crate::chain::{self, ChainKeys, GENESIS};
use crate::model::{
    ChainHead, ChainRow, Checkpoint, CheckpointKind, Direction, LINK_COLUMNS, Page, PageRow,
    RecordQuery, Refusal, TimedLink, index_of,
};

/// A database one of the stores runs on.
pub(crate) trait Backend: sqlx::Database<QueryResult: RowsAffected> {
    /// How its SQL differs.
    const DIALECT: Dialect;
}

#[cfg(feature = "sqlite")]
impl Backend for sqlx::Sqlite {
    const DIALECT: Dialect = Dialect::Sqlite;
}

#[cfg(feature = "postgres")]
impl Backend for sqlx::Postgres {
    const DIALECT: Dialect = Dialect::Postgres;
}

/// Rows per `DELETE` step of retention: short transactions that never hold locks long.
pub(super) const DELETE_CHUNK: i64 = 5000;

/// Checkpoints per `INSERT`: 7 values each, well under both databases' parameter limits.
const CHECKPOINTS_PER_STATEMENT: usize = 500;

/// The tables of a store, on its pool.
pub(super) struct Tables<'a, DB: sqlx::Database> {
    pool: &'a Pool<DB>,
    names: &'a TableNames,
}

/// How far back a record's time may be behind a record chained before it, for retention's
/// check of what it prunes: 30 days. Records spooled while the database was down are chained
/// when replayed, after newer ones, so time may run back along a chain by as long as an
/// outage lasted; further back than this, a record's time was edited.
pub(super) const REPLAY_LAG_MAX_MS: i64 = 30 * 24 * 3600 * 1000;

/// What retention did to one chain.
pub(super) struct Pruned {
    /// Records deleted.
    pub(super) deleted: u64,
    /// The anchor signed, if the chain's start moved.
    pub(super) anchor: Option<Checkpoint>,
    /// Why the chain was not pruned, if its prefix does not verify.
    pub(super) refused: Option<Refusal>,
    /// The last sequence number of the chain's prefix older than the cutoff (deleted now or
    /// by an earlier pass): PostgreSQL keeps a month's partition while it holds a later one.
    #[cfg_attr(not(feature = "postgres"), allow(dead_code))]
    pub(super) last_pruned: i64,
}

impl<'a, DB: sqlx::Database> Tables<'a, DB> {
    pub(super) fn new(pool: &'a Pool<DB>, names: &'a TableNames) -> Self {
        Self { pool, names }
    }
}

impl<DB> QueryTarget for QueryBuilder<DB>
where
    DB: sqlx::Database,
    for<'t> String: Encode<'t, DB> + Type<DB>,
    for<'t> i32: Encode<'t, DB> + Type<DB>,
    for<'t> i64: Encode<'t, DB> + Type<DB>,
    for<'t> Uuid: Encode<'t, DB> + Type<DB>,
{
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

impl<DB> Tables<'_, DB>
where
    DB: Backend,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    DB::Arguments: IntoArguments<DB> + Default,
    usize: ColumnIndex<DB::Row>,
    for<'t> &'t str: Encode<'t, DB> + Type<DB>,
    for<'t> String: Encode<'t, DB> + Decode<'t, DB> + Type<DB>,
    for<'t> i64: Encode<'t, DB> + Decode<'t, DB> + Type<DB>,
    for<'t> i32: Encode<'t, DB> + Decode<'t, DB> + Type<DB>,
    for<'t> Uuid: Encode<'t, DB> + Decode<'t, DB> + Type<DB>,
    for<'t> Vec<u8>: Encode<'t, DB> + Decode<'t, DB> + Type<DB>,
    for<'t> Option<i64>: Decode<'t, DB> + Type<DB>,
    for<'t> Option<&'t [u8]>: Decode<'t, DB> + Type<DB>,
{
    /// A statement that selects rows of `chain`: `sql` gets the chain's condition and
    /// numbers its further values after the chain's.
    fn of_chain<'q>(
        chain: &'q str,
        sql: impl FnOnce(&str, &mut Numbered) -> String,
    ) -> sqlx::query::Query<'q, DB, DB::Arguments> {
        let mut numbered = Numbered::new(DB::DIALECT);
        let condition = numbered.chain_condition(chain);
        let query = sqlx::query(sqlx::AssertSqlSafe(sql(&condition, &mut numbered)));
        if chain.is_empty() {
            query
        } else {
            query.bind(chain)
        }
    }

    pub(super) async fn ping(&self) -> Result<()> {
        sqlx::query("SELECT 1").execute(self.pool).await?;
        Ok(())
    }

    pub(super) async fn get(&self, account_id: &str, id: Uuid) -> Result<Option<String>> {
        let logs = self.names.logs();
        let mut n = Numbered::new(DB::DIALECT);
        let sql = format!(
            "SELECT record FROM {logs} WHERE id = {} AND account_id = {}",
            n.next(),
            n.next()
        );
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(id)
            .bind(account_id)
            .fetch_optional(self.pool)
            .await?;
        Ok(row.map(|r| r.try_get(0)).transpose()?)
    }

    pub(super) async fn count(&self) -> Result<u64> {
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT count(*) FROM {}",
            self.names.logs()
        )))
        .fetch_one(self.pool)
        .await?;
        Ok(u64::try_from(row.try_get::<i64, _>(0)?).unwrap_or(0))
    }

    /// One page of `query` read on `conn` row by row, up to its limit or its byte budget:
    /// never more than the page in memory. (The time limit is the backend's part.)
    pub(super) async fn page_on(
        conn: &mut DB::Connection,
        names: &TableNames,
        query: &RecordQuery,
    ) -> Result<Page> {
        let mut builder = QueryBuilder::<DB>::new("");
        sql::page(&mut builder, names, query);
        let mut rows = builder.build().fetch(&mut *conn);
        let mut page = Page::default();
        let mut bytes = 0usize;
        while let Some(row) = rows.try_next().await? {
            let record: String = row.try_get(2)?;
            if let Some(max) = query.max_bytes
                && !page.rows.is_empty()
                && bytes.saturating_add(record.len()) > max
            {
                page.cut = true;
                break;
            }
            bytes += record.len();
            page.rows.push(PageRow {
                time_ms: row.try_get(0)?,
                id: row.try_get(1)?,
                record,
            });
        }
        Ok(page)
    }

    pub(super) async fn chain_heads(&self) -> Result<Vec<ChainHead>> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT chain, seq, hash FROM {} ORDER BY chain",
            self.names.chain_heads()
        )))
        .fetch_all(self.pool)
        .await?;
        rows.iter().map(head_of).collect()
    }

    pub(super) async fn chains(&self) -> Result<Vec<String>> {
        // A loose index scan: from each account id to the next through the account index.
        let logs = self.names.logs();
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "WITH RECURSIVE accounts(id) AS ( \
                 SELECT min(account_id) FROM {logs} WHERE account_id > '' \
                 UNION ALL \
                 SELECT (SELECT min(account_id) FROM {logs} WHERE account_id > accounts.id) \
                 FROM accounts WHERE accounts.id IS NOT NULL \
             ) SELECT id FROM accounts WHERE id IS NOT NULL",
        )))
        .fetch_all(self.pool)
        .await?;
        let mut chains: Vec<String> = rows
            .iter()
            .map(|r| r.try_get(0))
            .collect::<Result<_, _>>()?;
        let unnamed = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT 1 FROM {logs} WHERE account_id IS NULL OR account_id = '' LIMIT 1",
        )))
        .fetch_optional(self.pool)
        .await?;
        if unnamed.is_some() {
            chains.insert(0, String::new());
        }
        Ok(chains)
    }

    pub(super) async fn chain_head(&self, chain: &str) -> Result<Option<ChainHead>> {
        let heads = self.names.chain_heads();
        let sql = format!(
            "SELECT chain, seq, hash FROM {heads} WHERE chain = {}",
            DB::DIALECT.placeholder(1)
        );
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(chain)
            .fetch_optional(self.pool)
            .await?;
        row.as_ref().map(head_of).transpose()
    }

    pub(super) async fn chain_rows(
        &self,
        chain: &str,
        after: (i64, Uuid),
        limit: u32,
    ) -> Result<Vec<ChainRow>> {
        let logs = self.names.logs();
        let rows = Self::of_chain(chain, |condition, n| {
            format!(
                "SELECT {} FROM {logs} WHERE {condition} AND chain_seq IS NOT NULL \
                 AND (chain_seq, id) > ({}, {}) ORDER BY chain_seq, id LIMIT {}",
                sql::link_select(),
                n.next(),
                n.next(),
                n.next()
            )
        })
        .bind(after.0)
        .bind(after.1)
        .bind(i64::from(limit))
        .fetch_all(self.pool)
        .await?;
        rows.iter().map(chain_row_of).collect()
    }

    pub(super) async fn chain_span(
        &self,
        chain: &str,
        since_ms: i64,
        before_ms: i64,
    ) -> Result<Option<(i64, i64)>> {
        let logs = self.names.logs();
        let row = Self::of_chain(chain, |condition, n| {
            format!(
                "SELECT min(chain_seq), max(chain_seq) FROM {logs} WHERE {condition} \
                 AND chain_seq IS NOT NULL AND time_ms >= {} AND time_ms < {}",
                n.next(),
                n.next()
            )
        })
        .bind(since_ms)
        .bind(before_ms)
        .fetch_one(self.pool)
        .await?;
        let (lo, hi): (Option<i64>, Option<i64>) = (row.try_get(0)?, row.try_get(1)?);
        Ok(lo.zip(hi))
    }

    /// How many of `chain`'s records in `[since_ms, before_ms)` carry no link (no sequence
    /// number) though they are no older than its oldest linked record, or were committed
    /// after it (a forged record backdated below the chain, whose `committed_ms` is the
    /// stamp of its insert): written past the chain, since a chained store links every
    /// record it writes. Records from before the chain began (a store chained later) are
    /// older than its first link and were committed before it (or before commit stamps, 0),
    /// and are not counted.
    pub(super) async fn unlinked(&self, chain: &str, since_ms: i64, before_ms: i64) -> Result<u64> {
        let logs = self.names.logs();
        let first: Option<i64> = Self::of_chain(chain, |condition, _| {
            format!("SELECT min(time_ms) FROM {logs} WHERE {condition} AND chain_seq IS NOT NULL")
        })
        .fetch_one(self.pool)
        .await?
        .try_get(0)?;
        let Some(first) = first else {
            return Ok(0);
        };
        // The first link's commit stamp: the earliest of the linked records', read through
        // the commit index (account, committed_ms), which stops at the first linked one;
        // 0 (stored before commit stamps) says nothing. (Ordered by `chain_seq` instead, SQLite,
        // which has no chain index, sorted the account's records: verifying its largest
        // account took 1.5x as long, `cargo bench -p audit-store --bench chain`.)
        let first_committed = Self::of_chain(chain, |condition, _| {
            format!(
                "SELECT committed_ms FROM {logs} WHERE {condition} AND chain_seq IS NOT NULL \
                 AND committed_ms > 0 ORDER BY committed_ms LIMIT 1"
            )
        })
        .fetch_optional(self.pool)
        .await?
        .map(|row| row.try_get::<Option<i64>, _>(0))
        .transpose()?
        .flatten()
        .filter(|committed| *committed > 0);
        // Two ranges of the time index: no older than the first link, any commit; older,
        // committed since the first link.
        let mut count = self
            .unlinked_in(chain, since_ms.max(first), before_ms, None)
            .await?;
        if let Some(committed) = first_committed
            && since_ms < first
        {
            count += self
                .unlinked_in(chain, since_ms, before_ms.min(first), Some(committed))
                .await?;
        }
        Ok(count)
    }

    /// `chain`'s records without a link, of a time in `[since_ms, before_ms)`, committed at or
    /// after `committed_ms` when given.
    async fn unlinked_in(
        &self,
        chain: &str,
        since_ms: i64,
        before_ms: i64,
        committed_ms: Option<i64>,
    ) -> Result<u64> {
        if since_ms >= before_ms {
            return Ok(0);
        }
        let logs = self.names.logs();
        // Placeholders numbered in the order they stand (SQLite's `?` are positional).
        let query = Self::of_chain(chain, |condition, n| {
            let mut sql = format!(
                "SELECT count(*) FROM {logs} WHERE {condition} AND chain_seq IS NULL \
                 AND time_ms >= {} AND time_ms < {}",
                n.next(),
                n.next()
            );
            if committed_ms.is_some() {
                sql.push_str(&format!(" AND committed_ms >= {}", n.next()));
            }
            sql
        })
        .bind(since_ms)
        .bind(before_ms);
        let query = match committed_ms {
            Some(committed) => query.bind(committed),
            None => query,
        };
        let row = query.fetch_one(self.pool).await?;
        let count: i64 = row.try_get(0)?;
        Ok(u64::try_from(count).unwrap_or(0))
    }

    /// The chains with any record that carries no link, in one pass over the table.
    pub(super) async fn chains_with_unlinked(&self) -> Result<Vec<String>> {
        let logs = self.names.logs();
        let sql =
            format!("SELECT DISTINCT COALESCE(account_id, '') FROM {logs} WHERE chain_seq IS NULL");
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .fetch_all(self.pool)
            .await?;
        rows.iter()
            .map(|row| row.try_get::<String, _>(0).map_err(Into::into))
            .collect()
    }

    pub(super) async fn chain_page(
        &self,
        chain: &str,
        (since_ms, before_ms): (i64, i64),
        after: Option<(i64, Uuid)>,
        direction: Direction,
        limit: u32,
    ) -> Result<Vec<TimedLink>> {
        let logs = self.names.logs();
        let (cmp, order) = match direction {
            Direction::Asc => (">", "ASC"),
            Direction::Desc => ("<", "DESC"),
        };
        // After a position, its time bounds the index range the scan starts from.
        let (since_ms, before_ms) = match (after, direction) {
            (None, _) => (since_ms, before_ms),
            (Some((t, _)), Direction::Asc) => (since_ms.max(t), before_ms),
            (Some((t, _)), Direction::Desc) => (since_ms, before_ms.min(t.saturating_add(1))),
        };
        let rows = Self::of_chain(chain, |condition, n| {
            let mut sql = format!(
                "SELECT {} FROM {logs} WHERE {condition} AND chain_seq IS NOT NULL \
                 AND time_ms >= {} AND time_ms < {}",
                sql::link_select(),
                n.next(),
                n.next()
            );
            if after.is_some() {
                sql.push_str(&format!(
                    " AND (time_ms {cmp} {} OR (time_ms = {} AND id {cmp} {}))",
                    n.next(),
                    n.next(),
                    n.next()
                ));
            }
            sql.push_str(&format!(
                " ORDER BY time_ms {order}, id {order} LIMIT {}",
                n.next()
            ));
            sql
        })
        .bind(since_ms)
        .bind(before_ms);
        let rows = match after {
            Some((t, id)) => rows.bind(t).bind(t).bind(id),
            None => rows,
        };
        let rows = rows.bind(i64::from(limit)).fetch_all(self.pool).await?;
        const TIME: usize = crate::model::LINK_COLUMNS.len() + crate::model::index_of("time_ms");
        rows.iter()
            .map(|row| {
                Ok(TimedLink {
                    time_ms: row.try_get(TIME)?,
                    row: chain_row_of(row)?,
                })
            })
            .collect()
    }

    /// The checkpoints and anchors of `chain`, or of every chain.
    pub(super) async fn checkpoints(&self, chain: Option<&str>) -> Result<Vec<Checkpoint>> {
        let checkpoint_table = self.names.checkpoints();
        let rows = match chain {
            None => {
                sqlx::query(sqlx::AssertSqlSafe(format!(
                    "SELECT {CHECKPOINT_COLUMNS} FROM {checkpoint_table} \
                     ORDER BY chain, seq, time_ms"
                )))
                .fetch_all(self.pool)
                .await?
            }
            Some(chain) => {
                sqlx::query(sqlx::AssertSqlSafe(format!(
                    "SELECT {CHECKPOINT_COLUMNS} FROM {checkpoint_table} WHERE chain = {} \
                     ORDER BY seq, time_ms",
                    DB::DIALECT.placeholder(1)
                )))
                .bind(chain)
                .fetch_all(self.pool)
                .await?
            }
        };
        rows.iter().map(checkpoint_of).collect()
    }

    pub(super) async fn write_checkpoints(&self, checkpoints: &[Checkpoint]) -> Result<()> {
        let checkpoint_table = self.names.checkpoints();
        for chunk in checkpoints.chunks(CHECKPOINTS_PER_STATEMENT) {
            let mut builder = QueryBuilder::<DB>::new(format!(
                "INSERT INTO {checkpoint_table} ({CHECKPOINT_COLUMNS}) "
            ));
            builder.push_values(chunk, |mut b, c| {
                b.push_bind(c.account_id.as_str())
                    .push_bind(c.seq)
                    .push_bind(c.head.clone())
                    .push_bind(c.time_ms)
                    .push_bind(c.kind.as_str())
                    .push_bind(c.key_id.as_str())
                    .push_bind(c.signature.clone());
            });
            builder.push(" ON CONFLICT DO NOTHING");
            builder.build().execute(self.pool).await?;
        }
        Ok(())
    }

    /// Retention of every chain (with `keys`: a chained store) by [`prune_chain`](Self::prune_chain):
    /// what was deleted, signed and refused, and each pruned chain's last pruned sequence
    /// number (a refused chain is not among them).
    pub(super) async fn prune_chains(
        &self,
        keys: Option<&ChainKeys>,
        cutoff_ms: i64,
    ) -> Result<(crate::model::Retention, Vec<(String, i64)>)> {
        let mut retention = crate::model::Retention::default();
        let mut pruned = Vec::new();
        let Some(keys) = keys else {
            return Ok((retention, pruned));
        };
        for head in self.chain_heads().await? {
            let chain = self.prune_chain(keys, &head, cutoff_ms).await?;
            retention.deleted += chain.deleted;
            retention.anchors.extend(chain.anchor);
            match chain.refused {
                Some(refusal) => retention.refused.push(refusal),
                None => pruned.push((head.chain, chain.last_pruned)),
            }
        }
        Ok((retention, pruned))
    }

    /// Retention of one chain: verifies the prefix older than the cutoff (see
    /// [`check_prefix`](Self::check_prefix)), signs an anchor where the chain will start,
    /// then deletes the prefix. A prefix that does not verify is refused: nothing is signed
    /// or deleted.
    ///
    /// Every query goes through the account index: the chain's prefix is older than the
    /// cutoff, so its time bounds the range read (and, in PostgreSQL, the partitions).
    pub(super) async fn prune_chain(
        &self,
        keys: &ChainKeys,
        head: &ChainHead,
        cutoff_ms: i64,
    ) -> Result<Pruned> {
        let chain = head.chain.as_str();
        let last_pruned = self.last_older(chain, head.seq, cutoff_ms).await?;
        let mut pruned = Pruned {
            deleted: 0,
            last_pruned,
            anchor: None,
            refused: None,
        };
        let start = self.newest_anchor(chain).await?;
        // Nothing to prune past a valid anchor. An anchor row not signed by this store is no
        // reason to stop quietly (a forged one with a huge sequence would halt retention of
        // the chain unseen): the check below refuses it, and the refusal is reported.
        let verifier = keys.verifier();
        if last_pruned == 0
            || start
                .as_ref()
                .is_some_and(|a| a.seq >= last_pruned && a.is_signed_for(&verifier))
        {
            return Ok(pruned);
        }
        let hash = match self
            .check_prefix(
                keys,
                chain,
                start.as_ref(),
                last_pruned,
                head.seq,
                cutoff_ms,
            )
            .await?
        {
            Ok(hash) => hash,
            Err(refusal) => {
                pruned.refused = Some(refusal);
                return Ok(pruned);
            }
        };
        let anchor = Checkpoint::sign(
            keys,
            CheckpointKind::Anchor,
            chain.to_owned(),
            last_pruned,
            hash.to_vec(),
            crate::time::now_ms(),
        );
        self.write_checkpoints(std::slice::from_ref(&anchor))
            .await?;
        pruned.deleted = self.delete_prefix(chain, last_pruned, cutoff_ms).await?;
        self.delete_checkpoints_below(chain, last_pruned).await?;
        pruned.anchor = Some(anchor);
        Ok(pruned)
    }

    /// The newest anchor of `chain`, if it has one: where the chain now starts.
    async fn newest_anchor(&self, chain: &str) -> Result<Option<Checkpoint>> {
        let checkpoint_table = self.names.checkpoints();
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {CHECKPOINT_COLUMNS} FROM {checkpoint_table} WHERE chain = {} \
             AND kind = 'anchor' ORDER BY seq DESC LIMIT 1",
            DB::DIALECT.placeholder(1)
        )))
        .bind(chain)
        .fetch_optional(self.pool)
        .await?;
        row.as_ref().map(checkpoint_of).transpose()
    }

    /// Verifies what retention is about to prune of `chain`: the records after its newest
    /// anchor (`start`; from genesis without one) up to `last`, and the link from `last` to
    /// the first record kept. Each record must be there once, in sequence; its hash must link
    /// it to the one before, its seal must be this store's, and its time may not run back
    /// more than [`REPLAY_LAG_MAX_MS`] behind a record chained before it (spooled records are
    /// chained when replayed, after newer ones; anything further back was edited). The
    /// anchor it starts from must be signed by this store's key. Returns the hash of record
    /// `last`, where the new anchor goes, or why the prefix is refused.
    ///
    /// Reads the prefix once, in sequence order, as a stream: memory does not grow with it.
    async fn check_prefix(
        &self,
        keys: &ChainKeys,
        chain: &str,
        start: Option<&Checkpoint>,
        last: i64,
        head: i64,
        cutoff_ms: i64,
    ) -> Result<std::result::Result<[u8; 32], Refusal>> {
        let logs = self.names.logs();
        use futures_util::TryStreamExt as _;
        let refuse = |seq: i64, reason: &str| {
            Ok(Err(Refusal {
                chain: chain.to_owned(),
                seq,
                reason: reason.to_owned(),
            }))
        };
        let (mut expected, mut prev) = match start {
            None => (1, GENESIS),
            Some(anchor) => {
                if !anchor.is_signed_for(&keys.verifier()) {
                    return refuse(
                        anchor.seq,
                        "is where an anchor not signed by this store's key says the chain starts",
                    );
                }
                match <[u8; 32]>::try_from(anchor.head.as_slice()) {
                    Ok(hash) => (anchor.seq + 1, hash),
                    Err(_) => {
                        return refuse(anchor.seq, "has an anchor whose hash is not 32 bytes");
                    }
                }
            }
        };
        let first = expected - 1;
        let mut rows = Self::of_chain(chain, |condition, n| {
            format!(
                "SELECT {} FROM {logs} WHERE {condition} AND time_ms < {} \
                 AND chain_seq > {} AND chain_seq <= {} ORDER BY chain_seq, id",
                sql::link_select(),
                n.next(),
                n.next(),
                n.next()
            )
        })
        .bind(cutoff_ms)
        .bind(first)
        .bind(last)
        .fetch(self.pool);
        let mut latest_ms = i64::MIN;
        let seal_key = keys.seal_key();
        while let Some(row) = rows.try_next().await? {
            let link = chain_row_of(&row)?;
            let time_ms: i64 = row.try_get(LINK_COLUMNS.len() + index_of("time_ms"))?;
            if link.seq < expected {
                return refuse(link.seq, "is in the chain twice");
            }
            if link.seq > expected {
                return refuse(expected, "is missing");
            }
            let hash = chain::link(&prev, chain, link.seq, &link.digest);
            if link.hash != hash {
                return refuse(
                    link.seq,
                    "does not hash to its link (edited, or the record before it was)",
                );
            }
            if link.seal != chain::seal(seal_key, chain, link.seq, &hash) {
                return refuse(link.seq, "does not carry this store's seal");
            }
            if time_ms < latest_ms.saturating_sub(REPLAY_LAG_MAX_MS) {
                return refuse(
                    link.seq,
                    "has a time further back than a spool replay can explain",
                );
            }
            latest_ms = latest_ms.max(time_ms);
            prev = hash;
            expected += 1;
        }
        drop(rows);
        if expected <= last {
            return refuse(expected, "is missing");
        }
        if last < head {
            // The first record kept must link to the last one pruned, or the anchor would
            // start a chain that does not continue.
            let next = Self::of_chain(chain, |condition, n| {
                format!(
                    "SELECT {} FROM {logs} WHERE {condition} AND time_ms >= {} \
                     AND chain_seq = {}",
                    sql::link_select(),
                    n.next(),
                    n.next()
                )
            })
            .bind(cutoff_ms)
            .bind(last + 1)
            .fetch_all(self.pool)
            .await?;
            let [next] = next.as_slice() else {
                return refuse(last + 1, "is missing or in the chain twice");
            };
            let link = chain_row_of(next)?;
            let hash = chain::link(&prev, chain, link.seq, &link.digest);
            if link.hash != hash || link.seal != chain::seal(seal_key, chain, link.seq, &hash) {
                return refuse(link.seq, "does not link to the record before it");
            }
        }
        Ok(Ok(prev))
    }

    /// The sequence number of the last record of `chain`'s longest prefix older than the
    /// cutoff (`head`, the chain's last, when every record is older).
    async fn last_older(&self, chain: &str, head: i64, cutoff_ms: i64) -> Result<i64> {
        let logs = self.names.logs();
        let keep: Option<i64> = Self::of_chain(chain, |condition, n| {
            format!(
                "SELECT min(chain_seq) FROM {logs} WHERE {condition} \
                 AND chain_seq IS NOT NULL AND time_ms >= {}",
                n.next()
            )
        })
        .bind(cutoff_ms)
        .fetch_one(self.pool)
        .await?
        .try_get(0)?;
        Ok(keep.map_or(head, |k| k - 1))
    }

    /// Deletes `chain`'s records up to `last` that are older than the cutoff, in steps of
    /// [`DELETE_CHUNK`].
    async fn delete_prefix(&self, chain: &str, last: i64, cutoff_ms: i64) -> Result<u64> {
        let logs = self.names.logs();
        let (key, key_columns) = (DB::DIALECT.row_key(), DB::DIALECT.row_key_columns());
        let mut deleted = 0;
        loop {
            let step = Self::of_chain(chain, |condition, n| {
                format!(
                    "DELETE FROM {logs} WHERE {key} IN (SELECT {key_columns} \
                     FROM {logs} WHERE {condition} AND time_ms < {} \
                     AND chain_seq IS NOT NULL AND chain_seq <= {} ORDER BY time_ms LIMIT {})",
                    n.next(),
                    n.next(),
                    n.next()
                )
            })
            .bind(cutoff_ms)
            .bind(last)
            .bind(DELETE_CHUNK)
            .execute(self.pool)
            .await?
            .rows_affected();
            deleted += step;
            if step < DELETE_CHUNK as u64 {
                return Ok(deleted);
            }
        }
    }

    /// Deletes the checkpoints of pruned records, and older anchors: they vouch for nothing
    /// left.
    async fn delete_checkpoints_below(&self, chain: &str, last_pruned: i64) -> Result<()> {
        let checkpoint_table = self.names.checkpoints();
        let mut n = Numbered::new(DB::DIALECT);
        let sql = format!(
            "DELETE FROM {checkpoint_table} WHERE (chain = {} AND seq < {}) \
             OR (chain = {} AND seq = {} AND kind = 'checkpoint')",
            n.next(),
            n.next(),
            n.next(),
            n.next()
        );
        sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(chain)
            .bind(last_pruned)
            .bind(chain)
            .bind(last_pruned)
            .execute(self.pool)
            .await?;
        Ok(())
    }

    /// Deletes unchained records (all of them in an unchained store) older than the cutoff, in
    /// steps of [`DELETE_CHUNK`], oldest first when `oldest_first`.
    pub(super) async fn delete_unchained(&self, cutoff_ms: i64, oldest_first: bool) -> Result<u64> {
        let logs = self.names.logs();
        let (key, key_columns) = (DB::DIALECT.row_key(), DB::DIALECT.row_key_columns());
        let order = if oldest_first {
            " ORDER BY time_ms"
        } else {
            ""
        };
        let mut n = Numbered::new(DB::DIALECT);
        let sql = format!(
            "DELETE FROM {logs} WHERE {key} IN (SELECT {key_columns} FROM {logs} \
             WHERE time_ms < {} AND chain_seq IS NULL{order} LIMIT {})",
            n.next(),
            n.next()
        );
        let mut deleted = 0;
        loop {
            let done = sqlx::query(sqlx::AssertSqlSafe(sql.clone()))
                .bind(cutoff_ms)
                .bind(DELETE_CHUNK)
                .execute(self.pool)
                .await?;
            let step = done.rows_affected();
            deleted += step;
            if step < DELETE_CHUNK as u64 {
                return Ok(deleted);
            }
        }
    }
}

/// [`AuditStore::delete_before`](super::AuditStore::delete_before)'s answer from a
/// retention pass: how many records it deleted, or the first chain it refused to prune.
pub(super) fn deleted_unless_refused(retention: crate::model::Retention) -> Result<u64> {
    match retention.refused.into_iter().next() {
        Some(refusal) => Err(crate::StoreError::Tampered(refusal)),
        None => Ok(retention.deleted),
    }
}

/// `rows_affected`, which sqlx's two result types have without a common trait.
pub(crate) trait RowsAffected {
    fn rows_affected(&self) -> u64;
}

#[cfg(feature = "sqlite")]
impl RowsAffected for sqlx::sqlite::SqliteQueryResult {
    fn rows_affected(&self) -> u64 {
        sqlx::sqlite::SqliteQueryResult::rows_affected(self)
    }
}

#[cfg(feature = "postgres")]
impl RowsAffected for sqlx::postgres::PgQueryResult {
    fn rows_affected(&self) -> u64 {
        sqlx::postgres::PgQueryResult::rows_affected(self)
    }
}

/// The methods of [`ChainedStore`](super::ChainedStore) that both SQL stores answer alike,
/// from their `chain` keys and `tables()`: everything but `chain_scan`.
macro_rules! chained_reads {
    () => {
        fn chain_keys(&self) -> Option<&crate::chain::ChainKeys> {
            self.chain.as_deref()
        }

        async fn chain_heads(&self) -> crate::Result<Vec<crate::model::ChainHead>> {
            self.tables().chain_heads().await
        }

        async fn chains(&self) -> crate::Result<Vec<String>> {
            self.tables().chains().await
        }

        async fn chain_head(&self, chain: &str) -> crate::Result<Option<crate::model::ChainHead>> {
            self.tables().chain_head(chain).await
        }

        async fn chain_rows(
            &self,
            chain: &str,
            after: (i64, uuid::Uuid),
            limit: u32,
        ) -> crate::Result<Vec<crate::model::ChainRow>> {
            self.tables().chain_rows(chain, after, limit).await
        }

        async fn chain_span(
            &self,
            chain: &str,
            since_ms: i64,
            before_ms: i64,
        ) -> crate::Result<Option<(i64, i64)>> {
            self.tables().chain_span(chain, since_ms, before_ms).await
        }

        async fn chain_page(
            &self,
            chain: &str,
            span: (i64, i64),
            after: Option<(i64, uuid::Uuid)>,
            direction: crate::model::Direction,
            limit: u32,
        ) -> crate::Result<Vec<crate::model::TimedLink>> {
            self.tables()
                .chain_page(chain, span, after, direction, limit)
                .await
        }

        async fn unlinked(&self, chain: &str, since_ms: i64, before_ms: i64) -> crate::Result<u64> {
            self.tables().unlinked(chain, since_ms, before_ms).await
        }

        async fn chains_with_unlinked(&self) -> crate::Result<Vec<String>> {
            self.tables().chains_with_unlinked().await
        }

        async fn all_checkpoints(&self) -> crate::Result<Vec<crate::model::Checkpoint>> {
            self.tables().checkpoints(None).await
        }

        async fn checkpoints(&self, chain: &str) -> crate::Result<Vec<crate::model::Checkpoint>> {
            self.tables().checkpoints(Some(chain)).await
        }

        async fn write_checkpoints(
            &self,
            checkpoints: &[crate::model::Checkpoint],
        ) -> crate::Result<()> {
            self.tables().write_checkpoints(checkpoints).await
        }
    };
}
pub(super) use chained_reads;

/// The methods of [`AuditStore`](super::AuditStore) that both SQL stores answer alike, from
/// their `tables()`: the reads (but `page`, whose time limit each database sets its own way)
/// and the ping.
macro_rules! record_reads {
    () => {
        async fn ping(&self) -> crate::Result<()> {
            self.tables().ping().await
        }

        async fn get(&self, account_id: &str, id: uuid::Uuid) -> crate::Result<Option<String>> {
            self.tables().get(account_id, id).await
        }

        async fn count(&self) -> crate::Result<u64> {
            self.tables().count().await
        }
    };
}
pub(super) use record_reads;
