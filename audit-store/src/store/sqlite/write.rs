//! How a batch goes into SQLite: multi-row `INSERT OR IGNORE` statements of up to 250 rows,
//! all of a batch in one transaction, through the store's one writing connection.

use std::collections::HashSet;

use sqlx::{QueryBuilder, Row, Sqlite, SqlitePool};
use uuid::Uuid;

use super::super::chained::{self, Heads, LinkedWrite};
use super::super::{TableNames, sql};
use crate::Result;
use crate::chain::{self, ChainKeys};
use crate::model::{COLUMNS, ColumnValue, Link, StoredRecord};

/// Rows per `INSERT` statement (25 values each, 28 when chained: 7,000 bind parameters, well
/// under SQLite's 32,766). A prepared statement holds every bound value and its program;
/// 1,000-row ones held 6 MiB more of a server's memory under load and were slower (ingest
/// benchmark, 200k rows: 19.0k rows/s at 44.5 µs CPU per row, against 21.5k at 39.3 µs).
const ROWS_PER_STATEMENT: usize = 250;
/// Values per `IN (...)` list.
const IN_LIST: usize = 500;

/// Whether the insert statement for `chunk` is kept prepared on the connection: only the
/// full-size one, which every large batch reuses. A prepared statement of many rows holds
/// megabytes; cached for every partial size (each a different SQL text, up to sqlx's 100 per
/// connection), the 1,000-row ones of an earlier version held most of a server's memory under
/// light load (the whole-server benchmark's peak RSS).
fn cached(chunk: &[StoredRecord]) -> bool {
    chunk.len() == ROWS_PER_STATEMENT
}

/// `INSERT OR IGNORE` of `rows`, each with its link when chained, stamped `committed_ms`
/// (when their transaction took the write lock: the commit order export reads in).
fn insert_statement(
    names: &TableNames,
    rows: &[StoredRecord],
    links: Option<&[Link]>,
    committed_ms: i64,
) -> QueryBuilder<Sqlite> {
    let mut builder = QueryBuilder::new(format!("INSERT OR IGNORE INTO {} (", names.logs()));
    builder.push(match links {
        Some(_) => sql::linked_columns(),
        None => sql::columns(),
    });
    builder.push(", committed_ms) ");
    builder.push_values(rows.iter().enumerate(), |mut b, (i, r)| {
        for column in &COLUMNS {
            match column.value(r) {
                ColumnValue::Uuid(v) => b.push_bind(v),
                ColumnValue::BigInt(v) => b.push_bind(v),
                ColumnValue::Int(v) => b.push_bind(v),
                ColumnValue::Text(v) => b.push_bind(v),
            };
        }
        if let Some(link) = links.map(|l| l[i]) {
            b.push_bind(link.seq)
                .push_bind(link.hash.to_vec())
                .push_bind(link.seal.to_vec());
        }
        b.push_bind(committed_ms);
    });
    builder
}

/// `?, ?, ?` for `n` values.
fn placeholders(n: usize) -> String {
    let mut text = "?, ".repeat(n);
    text.truncate(text.len().saturating_sub(2));
    text
}

/// Writes an unchained batch in one transaction; rows already stored are skipped.
pub(super) async fn insert_unchained(
    writer: &SqlitePool,
    names: &TableNames,
    records: &[StoredRecord],
) -> Result<u64> {
    // IMMEDIATE: the write lock first, then the stamp, so that the transaction commits soon
    // after the time it stamps (an export job reads records once that is `settle` old).
    let mut tx = writer.begin_with("BEGIN IMMEDIATE").await?;
    let committed_ms = crate::time::now_ms();
    let mut stored = 0;
    for chunk in records.chunks(ROWS_PER_STATEMENT) {
        stored += insert_statement(names, chunk, None, committed_ms)
            .build()
            .persistent(cached(chunk))
            .execute(&mut *tx)
            .await?
            .rows_affected();
    }
    tx.commit().await?;
    Ok(stored)
}

/// A chained batch on the writing connection, in one `BEGIN IMMEDIATE` transaction: SQLite's
/// write lock is the ordering point, also between processes sharing the file.
pub(super) struct ChainedWrite<'a> {
    pub(super) writer: &'a SqlitePool,
    pub(super) keys: &'a ChainKeys,
    pub(super) names: &'a TableNames,
}

impl LinkedWrite for ChainedWrite<'_> {
    async fn attempt(
        &mut self,
        records: &[StoredRecord],
        skip_stored: bool,
    ) -> Result<Option<u64>> {
        let mut tx = self.writer.begin_with("BEGIN IMMEDIATE").await?;
        let committed_ms = crate::time::now_ms();
        let rows = if skip_stored {
            chained::without(records, &stored_ids(&mut tx, self.names, records).await?)
        } else {
            records.into()
        };
        let chains = chained::chains_of(&rows);
        let mut heads = read_heads(&mut tx, self.names, &chains).await?;
        let keys = self.keys;
        // Each statement's links are computed while SQLite writes the previous one: the
        // hashing runs on this thread while SQLite's worker thread inserts.
        let mut stored = 0;
        let mut chunks = rows.chunks(ROWS_PER_STATEMENT);
        let mut next = chunks
            .next()
            .map(|chunk| (chunk, chain::link_rows(keys, &mut heads, chunk)));
        while let Some((chunk, links)) = next.take() {
            let mut statement = insert_statement(self.names, chunk, Some(&links), committed_ms);
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
            // `OR IGNORE` skipped a row already stored: its links are wrong now.
            tx.rollback().await?;
            return Ok(None);
        }
        for chunk in chained::advanced(&chains, &heads).chunks(IN_LIST) {
            let mut builder = QueryBuilder::<Sqlite>::new(format!(
                "INSERT INTO {} (chain, seq, hash) ",
                self.names.chain_heads()
            ));
            builder.push_values(chunk, |mut b, (chain, seq, hash)| {
                b.push_bind(*chain).push_bind(*seq).push_bind(hash.to_vec());
            });
            builder.push(
                " ON CONFLICT (chain) DO UPDATE SET seq = excluded.seq, hash = excluded.hash",
            );
            builder.build().execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(Some(stored))
    }
}

/// The ids among `records` that are stored already.
async fn stored_ids(
    tx: &mut sqlx::SqliteConnection,
    names: &TableNames,
    records: &[StoredRecord],
) -> Result<HashSet<Uuid>> {
    let mut stored = HashSet::new();
    for chunk in records.chunks(IN_LIST) {
        let sql = format!(
            "SELECT id FROM {} WHERE id IN ({})",
            names.logs(),
            placeholders(chunk.len())
        );
        let mut query = sqlx::query_scalar::<_, Uuid>(sqlx::AssertSqlSafe(sql));
        for r in chunk {
            query = query.bind(r.id);
        }
        stored.extend(query.fetch_all(&mut *tx).await?);
    }
    Ok(stored)
}

/// The heads of `chains` as stored; chains without one start at genesis when linked.
async fn read_heads(
    tx: &mut sqlx::SqliteConnection,
    names: &TableNames,
    chains: &[&str],
) -> Result<Heads> {
    let mut heads = Heads::with_capacity(chains.len());
    for chunk in chains.chunks(IN_LIST) {
        let sql = format!(
            "SELECT chain, seq, hash FROM {} WHERE chain IN ({})",
            names.chain_heads(),
            placeholders(chunk.len())
        );
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
        for chain in chunk {
            query = query.bind(*chain);
        }
        for row in query.fetch_all(&mut *tx).await? {
            heads.insert(
                row.try_get::<String, _>(0)?,
                (row.try_get(1)?, chained::head_hash(row.try_get(2)?)),
            );
        }
    }
    Ok(heads)
}
