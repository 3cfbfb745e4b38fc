//! The export jobs' positions (`audit_export_positions` under the default
//! [names](super::TableNames)), the same statements on both databases.

use sqlx::{ColumnIndex, Decode, Encode, Executor, IntoArguments, Pool, Row, Type};
use uuid::Uuid;

use super::TableNames;
use super::shared::Backend;
use super::sql::Numbered;
use crate::Result;
use crate::model::{ExportPosition, LogPosition};

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
        "SELECT account_id, delivered_time_ms, delivered_id, pending_time_ms, pending_id \
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
            let at = |t: usize, i: usize| -> Result<Option<LogPosition>> {
                let time: Option<i64> = row.try_get(t)?;
                let id: Option<Uuid> = row.try_get(i)?;
                Ok(time.zip(id))
            };
            Ok(ExportPosition {
                account_id: row.try_get(0)?,
                delivered: at(1, 2)?,
                pending: at(3, 4)?,
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
    let values: Vec<String> = (0..7).map(|_| n.next()).collect();
    let sql = format!(
        "INSERT INTO {} \
         (job, account_id, delivered_time_ms, delivered_id, pending_time_ms, pending_id, \
         updated_ms) VALUES ({}) \
         ON CONFLICT (job, account_id) DO UPDATE SET \
         delivered_time_ms = excluded.delivered_time_ms, delivered_id = excluded.delivered_id, \
         pending_time_ms = excluded.pending_time_ms, pending_id = excluded.pending_id, \
         updated_ms = excluded.updated_ms",
        names.export_positions(),
        values.join(", ")
    );
    sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(job)
        .bind(position.account_id.as_str())
        .bind(position.delivered.map(|(t, _)| t))
        .bind(position.delivered.map(|(_, id)| id))
        .bind(position.pending.map(|(t, _)| t))
        .bind(position.pending.map(|(_, id)| id))
        .bind(crate::time::now_ms())
        .execute(pool)
        .await?;
    Ok(())
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
        }
    };
}
pub(super) use export_positions;
