//! The export jobs' positions (`audit_export_positions` under the default
//! [names](super::TableNames)), the same statements on both databases.

use futures_util::TryStreamExt as _;
use sqlx::{ColumnIndex, Decode, Encode, Executor, IntoArguments, Pool, QueryBuilder, Row, Type};
use uuid::Uuid;

use super::TableNames;
use super::shared::Backend;
use super::sql::{self, Numbered};
use crate::Result;
use crate::model::{CommitPosition, CommitQuery, CommittedRow, ExportPosition, PageRow};

/// Every position of `job`.
pub(super) async fn load<DB>(
    pool: &Pool<DB>,
    names: &TableNames,
    job: &str,
) -> Result<Vec<ExportPosition>>
where
    DB: Backend,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'c> &'c Pool<DB>: Executor<'c, Database = DB>,
    DB::Arguments: IntoArguments<DB> + Default,
    usize: ColumnIndex<DB::Row>,
    for<'t> &'t str: Encode<'t, DB> + Type<DB>,
    for<'t> String: Decode<'t, DB> + Type<DB>,
    for<'t> Option<i64>: Decode<'t, DB> + Type<DB>,
    for<'t> Option<Uuid>: Decode<'t, DB> + Type<DB>,
{
    let mut n = Numbered::new(DB::DIALECT);
    let sql = format!(
        "SELECT account_id, delivered_committed_ms, delivered_time_ms, delivered_id, \
         pending_committed_ms, pending_time_ms, pending_id \
         FROM {} WHERE job = {} ORDER BY account_id",
        names.export_positions(),
        n.next()
    );
    let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(job)
        .fetch_all(pool)
        .await?;
    rows.iter()
        .map(|row| {
            let at = |c: usize| -> Result<Option<CommitPosition>> {
                let committed: Option<i64> = row.try_get(c)?;
                let time: Option<i64> = row.try_get(c + 1)?;
                let id: Option<Uuid> = row.try_get(c + 2)?;
                Ok(time.zip(id).map(|(time_ms, id)| CommitPosition {
                    committed_ms: committed.unwrap_or(0),
                    time_ms,
                    id,
                }))
            };
            Ok(ExportPosition {
                account_id: row.try_get(0)?,
                delivered: at(1)?,
                pending: at(4)?,
            })
        })
        .collect()
}

/// Stores `position` for `job` (an upsert: one row per job and account).
pub(super) async fn save<DB>(
    pool: &Pool<DB>,
    names: &TableNames,
    job: &str,
    position: &ExportPosition,
) -> Result<()>
where
    DB: Backend,
    for<'c> &'c Pool<DB>: Executor<'c, Database = DB>,
    DB::Arguments: IntoArguments<DB> + Default,
    for<'t> &'t str: Encode<'t, DB> + Type<DB>,
    for<'t> i64: Encode<'t, DB> + Type<DB>,
    for<'t> Option<i64>: Encode<'t, DB> + Type<DB>,
    for<'t> Option<Uuid>: Encode<'t, DB> + Type<DB>,
{
    let mut n = Numbered::new(DB::DIALECT);
    let values: Vec<String> = (0..9).map(|_| n.next()).collect();
    let sql = format!(
        "INSERT INTO {} \
         (job, account_id, delivered_committed_ms, delivered_time_ms, delivered_id, \
         pending_committed_ms, pending_time_ms, pending_id, updated_ms) VALUES ({}) \
         ON CONFLICT (job, account_id) DO UPDATE SET \
         delivered_committed_ms = excluded.delivered_committed_ms, \
         delivered_time_ms = excluded.delivered_time_ms, delivered_id = excluded.delivered_id, \
         pending_committed_ms = excluded.pending_committed_ms, \
         pending_time_ms = excluded.pending_time_ms, pending_id = excluded.pending_id, \
         updated_ms = excluded.updated_ms",
        names.export_positions(),
        values.join(", ")
    );
    sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(job)
        .bind(position.account_id.as_str())
        .bind(position.delivered.map_or(0, |p| p.committed_ms))
        .bind(position.delivered.map(|p| p.time_ms))
        .bind(position.delivered.map(|p| p.id))
        .bind(position.pending.map_or(0, |p| p.committed_ms))
        .bind(position.pending.map(|p| p.time_ms))
        .bind(position.pending.map(|p| p.id))
        .bind(crate::time::now_ms())
        .execute(pool)
        .await?;
    Ok(())
}

/// The records of `query` in commit order, read row by row up to its limit or byte budget.
pub(super) async fn commit_page<DB>(
    pool: &Pool<DB>,
    names: &TableNames,
    query: &CommitQuery,
) -> Result<Vec<CommittedRow>>
where
    DB: Backend,
    for<'c> &'c Pool<DB>: Executor<'c, Database = DB>,
    DB::Arguments: IntoArguments<DB> + Default,
    usize: ColumnIndex<DB::Row>,
    for<'t> String: Encode<'t, DB> + Decode<'t, DB> + Type<DB>,
    for<'t> i32: Encode<'t, DB> + Type<DB>,
    for<'t> i64: Encode<'t, DB> + Decode<'t, DB> + Type<DB>,
    for<'t> Uuid: Encode<'t, DB> + Decode<'t, DB> + Type<DB>,
{
    let mut builder = QueryBuilder::<DB>::new("");
    sql::commit_page(&mut builder, names, DB::DIALECT, query);
    let mut rows = builder.build().fetch(pool);
    let mut page = Vec::new();
    let mut bytes = 0usize;
    while let Some(row) = rows.try_next().await? {
        let record: String = row.try_get(3)?;
        if let Some(max) = query.max_bytes
            && !page.is_empty()
            && bytes.saturating_add(record.len()) > max
        {
            break;
        }
        bytes += record.len();
        let (time_ms, id) = (row.try_get(1)?, row.try_get(2)?);
        page.push(CommittedRow {
            at: CommitPosition {
                committed_ms: row.try_get(0)?,
                time_ms,
                id,
            },
            row: PageRow {
                time_ms,
                id,
                record,
            },
        });
    }
    Ok(page)
}

/// Now on the clock that stamps `committed_ms` (see
/// [`ExportPositions::clock_ms`](super::ExportPositions::clock_ms)).
pub(super) async fn clock_ms<DB>(pool: &Pool<DB>) -> Result<i64>
where
    DB: Backend,
    for<'c> &'c Pool<DB>: Executor<'c, Database = DB>,
    DB::Arguments: IntoArguments<DB> + Default,
    usize: ColumnIndex<DB::Row>,
    for<'t> i64: Decode<'t, DB> + Type<DB>,
{
    match DB::DIALECT {
        // Written by this process's clock (`sqlite/write.rs`).
        sql::Dialect::Sqlite => Ok(crate::time::now_ms()),
        // The column's default, `statement_timestamp()`, is the server's clock.
        sql::Dialect::Postgres => {
            let row =
                sqlx::query("SELECT (floor(extract(epoch FROM clock_timestamp()) * 1000))::bigint")
                    .fetch_one(pool)
                    .await?;
            Ok(row.try_get(0)?)
        }
    }
}

/// [`ExportPositions`](super::ExportPositions) for a SQL store, from its `pool()`.
macro_rules! export_positions {
    ($store:ty) => {
        impl super::ExportPositions for $store {
            async fn export_positions(
                &self,
                job: &str,
            ) -> crate::Result<Vec<crate::model::ExportPosition>> {
                super::positions::load(&self.pool, &self.names, job).await
            }

            async fn save_export_position(
                &self,
                job: &str,
                position: &crate::model::ExportPosition,
            ) -> crate::Result<()> {
                super::positions::save(&self.pool, &self.names, job, position).await
            }

            async fn clock_ms(&self) -> crate::Result<i64> {
                super::positions::clock_ms(&self.pool).await
            }

            async fn commit_page(
                &self,
                query: &crate::model::CommitQuery,
            ) -> crate::Result<Vec<crate::model::CommittedRow>> {
                super::positions::commit_page(&self.pool, &self.names, query).await
            }
        }
    };
}
pub(super) use export_positions;
