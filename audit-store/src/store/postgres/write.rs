//! How a batch goes into PostgreSQL: one binary `COPY` when large enough to gain by it, else
//! one `INSERT ... SELECT FROM UNNEST` of an array per column; a chained batch in a
//! transaction that holds its chains' head rows.

use std::collections::{HashMap, HashSet};

use sqlx::postgres::{PgConnection, PgPool, Postgres};
use sqlx::{Row, query::Query};
use uuid::Uuid;

use super::super::chained::{self, LinkedWrite};
use super::super::{TableNames, sql};
use super::copy;
use crate::Result;
use crate::chain::{self, ChainKeys, GENESIS};
use crate::model::{
    COLUMNS, ColumnType, ColumnValue, LINK_COLUMNS, Link, StoredColumn, StoredRecord,
};

/// Rows whose digests a chained write computes between two looks at its head statements.
const DIGEST_SLICE: usize = 500;
/// Rows a chained write inserts in a first statement, while it links the rest.
const LEAD_ROWS: usize = 2000;

/// PostgreSQL's name of a column type, for `UNNEST`'s array casts.
fn pg_type(ty: ColumnType) -> &'static str {
    match ty {
        ColumnType::Uuid => "uuid",
        ColumnType::BigInt => "int8",
        ColumnType::Int => "int4",
        ColumnType::Text => "text",
    }
}

/// `INSERT INTO audit_logs (...) SELECT * FROM UNNEST($1::uuid[], ...)`: one array per
/// column. Unchained, rows already stored are skipped (`ON CONFLICT DO NOTHING`); chained,
/// with the links' arrays and without `ON CONFLICT`: an id already stored fails the statement
/// (`unique_violation`), and the batch is linked again without it.
fn insert_statement(names: &TableNames, chained: bool) -> String {
    let mut types: Vec<&str> = COLUMNS.iter().map(|c| pg_type(c.ty)).collect();
    if chained {
        types.extend(["int8", "bytea", "bytea"]);
        debug_assert_eq!(types.len(), COLUMNS.len() + LINK_COLUMNS.len());
    }
    let arrays: Vec<String> = types
        .iter()
        .enumerate()
        .map(|(i, ty)| format!("${}::{ty}[]", i + 1))
        .collect();
    let columns = if chained {
        sql::linked_columns()
    } else {
        sql::columns()
    };
    let conflict = if chained {
        ""
    } else {
        " ON CONFLICT DO NOTHING"
    };
    format!(
        "INSERT INTO {} ({columns}) SELECT * FROM UNNEST({}){conflict}",
        names.logs(),
        arrays.join(", ")
    )
}

/// Binds `column` of every record as one array.
fn bind_column<'q>(
    query: Query<'q, Postgres, sqlx::postgres::PgArguments>,
    column: &StoredColumn,
    records: &'q [StoredRecord],
) -> Query<'q, Postgres, sqlx::postgres::PgArguments> {
    let values = records.iter().map(|r| column.value(r));
    match column.ty {
        ColumnType::Uuid => query.bind(
            values
                .filter_map(|v| match v {
                    ColumnValue::Uuid(v) => Some(v),
                    _ => None,
                })
                .collect::<Vec<_>>(),
        ),
        ColumnType::BigInt => query.bind(
            values
                .filter_map(|v| match v {
                    ColumnValue::BigInt(v) => Some(v),
                    _ => None,
                })
                .collect::<Vec<_>>(),
        ),
        ColumnType::Int => query.bind(
            values
                .filter_map(|v| match v {
                    ColumnValue::Int(v) => Some(v),
                    _ => None,
                })
                .collect::<Vec<_>>(),
        ),
        ColumnType::Text => query.bind(
            values
                .filter_map(|v| match v {
                    ColumnValue::Text(v) => Some(v),
                    _ => None,
                })
                .collect::<Vec<_>>(),
        ),
    }
}

/// One `INSERT ... SELECT FROM UNNEST` of all `records` (see [`insert_statement`]): the
/// write of a small batch, and the way back for an unchained batch whose `COPY` met an id
/// already stored.
async fn insert_rows(
    conn: &mut PgConnection,
    names: &TableNames,
    records: &[StoredRecord],
    links: Option<&[Link]>,
) -> sqlx::Result<u64> {
    let statement = insert_statement(names, links.is_some());
    let mut query = sqlx::query(sqlx::AssertSqlSafe(statement));
    for column in &COLUMNS {
        query = bind_column(query, column, records);
    }
    if let Some(links) = links {
        query = query
            .bind(links.iter().map(|l| l.seq).collect::<Vec<_>>())
            .bind(links.iter().map(|l| l.hash).collect::<Vec<_>>())
            .bind(links.iter().map(|l| l.seal).collect::<Vec<_>>());
    }
    Ok(query.execute(conn).await?.rows_affected())
}

/// Writes `records` (with their `links` when chained, one per record) on `conn` in one
/// statement: a `COPY` when the batch is large enough to gain by it ([`copy::pays`]), else
/// an `INSERT`.
async fn write_rows(
    conn: &mut PgConnection,
    names: &TableNames,
    records: &[StoredRecord],
    links: Option<&[Link]>,
) -> sqlx::Result<u64> {
    if copy::pays(records) {
        copy::copy_rows(conn, names, records, links).await
    } else {
        insert_rows(conn, names, records, links).await
    }
}

/// Writes an unchained batch: one `COPY` (or `INSERT` when small), or, when the batch holds
/// an id already stored (it is a retry of a batch that committed), one `INSERT` that skips
/// the stored rows.
pub(super) async fn write_unchained(
    pool: &PgPool,
    names: &TableNames,
    records: &[StoredRecord],
) -> Result<u64> {
    let mut guarded = copy::Guarded::new(pool.acquire().await?);
    let written = match write_rows(guarded.conn(), names, records, None).await {
        Err(e) if copy::is_duplicate(&e) => insert_rows(guarded.conn(), names, records, None).await,
        written => written,
    };
    guarded.release();
    Ok(written?)
}

/// A chained batch, in one transaction that holds its chains' head rows (`FOR UPDATE`, locked
/// in name order so writers never deadlock): the ordering point per account across every
/// instance sharing the database.
pub(super) struct ChainedWrite<'a> {
    pub(super) conn: &'a mut PgConnection,
    pub(super) keys: &'a ChainKeys,
    pub(super) names: &'a TableNames,
}

impl LinkedWrite for ChainedWrite<'_> {
    async fn attempt(
        &mut self,
        records: &[StoredRecord],
        skip_stored: bool,
    ) -> Result<Option<u64>> {
        use sqlx::Connection as _;
        let (keys, names) = (self.keys, self.names);
        let mut tx = self.conn.begin().await?;
        let rows = if skip_stored {
            chained::without(records, &stored_ids(&mut tx, names, records).await?)
        } else {
            records.into()
        };
        let chains = chained::chains_of(&rows);
        // The first rows' digests are computed while the server creates and locks the heads;
        // the others', and their links, while it inserts the first rows. Linking then costs
        // the writer little more than the bytes it adds.
        let lead = rows.len().min(LEAD_ROWS);
        let (first, rest) = rows.split_at(lead);
        let digest_first = async {
            // In slices, giving the statements of `lock_heads` their turn in between.
            let mut digests = Vec::with_capacity(first.len());
            for slice in first.chunks(DIGEST_SLICE) {
                digests.extend(chain::row_digests(slice));
                tokio::task::yield_now().await;
            }
            digests
        };
        let (locked, digests) = tokio::join!(lock_heads(&mut tx, names, &chains), digest_first);
        let mut heads = locked?;
        let links = chain::link_digested(keys, &mut heads, first, &digests);
        let (written_first, rest_links) =
            tokio::join!(write_rows(&mut tx, names, first, Some(&links)), async {
                chain::link_rows(keys, &mut heads, rest)
            });
        let written = match written_first {
            Ok(n) if !rest.is_empty() => write_rows(&mut tx, names, rest, Some(&rest_links))
                .await
                .map(|m| n + m),
            other => other,
        };
        let stored = match written {
            Ok(stored) => stored,
            // A retried batch that committed before: link only the rows not stored.
            Err(e) if copy::is_duplicate(&e) => {
                tx.rollback().await?;
                return Ok(None);
            }
            Err(e) => return Err(e.into()),
        };
        let advanced = chained::advanced(&chains, &heads);
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "UPDATE {} AS h SET seq = u.seq, hash = u.hash \
             FROM UNNEST($1::text[], $2::int8[], $3::bytea[]) AS u(chain, seq, hash) \
             WHERE h.chain = u.chain",
            names.chain_heads()
        )))
        .bind(advanced.iter().map(|a| a.0).collect::<Vec<_>>())
        .bind(advanced.iter().map(|a| a.1).collect::<Vec<_>>())
        .bind(advanced.iter().map(|a| a.2).collect::<Vec<_>>())
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(Some(stored))
    }
}

/// The ids among `records` that are stored already.
async fn stored_ids(
    conn: &mut PgConnection,
    names: &TableNames,
    records: &[StoredRecord],
) -> Result<HashSet<Uuid>> {
    Ok(sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "SELECT l.id FROM {} l \
         JOIN UNNEST($1::uuid[], $2::int8[]) AS b(id, time_ms) \
         ON l.id = b.id AND l.time_ms = b.time_ms",
        names.logs()
    )))
    .bind(records.iter().map(|r| r.id).collect::<Vec<_>>())
    .bind(records.iter().map(|r| r.time_ms).collect::<Vec<_>>())
    .fetch_all(conn)
    .await?
    .into_iter()
    .collect())
}

/// Creates the heads of new chains and locks every head of `chains` for the transaction.
async fn lock_heads(
    conn: &mut PgConnection,
    names: &TableNames,
    chains: &[&str],
) -> Result<HashMap<String, (i64, [u8; 32])>> {
    let heads_table = names.chain_heads();
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "INSERT INTO {heads_table} (chain, seq, hash) \
         SELECT c, 0, $2 FROM UNNEST($1::text[]) AS c ORDER BY c \
         ON CONFLICT (chain) DO NOTHING",
    )))
    .bind(chains)
    .bind(GENESIS.to_vec())
    .execute(&mut *conn)
    .await?;
    let locked = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT chain, seq, hash FROM {heads_table} WHERE chain = ANY($1) \
         ORDER BY chain FOR UPDATE",
    )))
    .bind(chains)
    .fetch_all(&mut *conn)
    .await?;
    let mut heads = HashMap::with_capacity(locked.len());
    for row in &locked {
        heads.insert(
            row.try_get::<String, _>(0)?,
            (
                row.try_get::<i64, _>(1)?,
                chained::head_hash(row.try_get(2)?),
            ),
        );
    }
    Ok(heads)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_unnest_statements_cast_every_column_in_order() {
        let plain = insert_statement(&TableNames::default(), false);
        assert!(plain.contains("$1::uuid[], $2::int8[], $3::text[]"));
        assert!(plain.contains("$18::int4[]"));
        assert!(plain.ends_with("$24::text[]) ON CONFLICT DO NOTHING"));
        let linked = insert_statement(&TableNames::default(), true);
        assert!(linked.ends_with("$25::int8[], $26::bytea[], $27::bytea[])"));
    }
}
