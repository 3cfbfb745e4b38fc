//! A page of records from PostgreSQL under a time limit: the statement runs in a transaction
//! of its own with `statement_timeout` set for it alone.

use sqlx::postgres::PgPool;

use super::super::TableNames;
use super::super::shared::Tables;
use crate::model::{Page, RecordQuery};
use crate::{Result, StoreError};

/// One page of `query` (see [`AuditStore::page`](crate::store::AuditStore::page)).
pub(super) async fn page(pool: &PgPool, names: &TableNames, query: &RecordQuery) -> Result<Page> {
    let Some(limit) = query.time_limit else {
        let mut conn = pool.acquire().await?;
        return Tables::<sqlx::Postgres>::page_on(&mut conn, names, query).await;
    };
    let mut tx = pool.begin().await?;
    // A number of milliseconds: nothing a caller chooses is spliced in as text.
    let ms = limit.as_millis().clamp(1, i32::MAX as u128);
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "SET LOCAL statement_timeout = {ms}"
    )))
    .execute(&mut *tx)
    .await?;
    let page = match Tables::<sqlx::Postgres>::page_on(&mut tx, names, query).await {
        Ok(page) => page,
        Err(StoreError::Database(sqlx::Error::Database(db)))
            // query_canceled: the statement timeout
            if db.code().as_deref() == Some("57014") =>
        {
            return Err(StoreError::StatementTimeout(limit));
        }
        Err(e) => return Err(e),
    };
    tx.commit().await?;
    Ok(page)
}
