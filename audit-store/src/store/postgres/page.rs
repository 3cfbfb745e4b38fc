//! Reads of one account's records from PostgreSQL under a time limit (a page, statistics):
//! the statement runs in a transaction of its own with `statement_timeout` set for it alone.

use std::time::Duration;

use super::super::TableNames;
use futures_util::future::BoxFuture;
use sqlx::postgres::{PgConnection, PgPool};

use super::super::aggregate::stats_on;
use super::super::shared::Tables;
use crate::model::{Page, RecordQuery, Stats, StatsQuery};
use crate::{Result, StoreError};

/// One page of `query` (see [`AuditStore::page`](crate::store::AuditStore::page)).
pub(super) async fn page(pool: &PgPool, names: &TableNames, query: &RecordQuery) -> Result<Page> {
    timed(
        pool,
        names,
        query.time_limit,
        query,
        |conn, names, query| Box::pin(Tables::<sqlx::Postgres>::page_on(conn, names, query)),
    )
    .await
}

/// The statistics of `query` (see [`AuditStore::stats`](crate::store::AuditStore::stats)):
/// one statement, so the time limit bounds it all.
pub(super) async fn stats(pool: &PgPool, names: &TableNames, query: &StatsQuery) -> Result<Stats> {
    timed(
        pool,
        names,
        query.time_limit,
        query,
        |conn, names, query| Box::pin(stats_on::<sqlx::Postgres>(conn, names, query)),
    )
    .await
}

/// `read` of `query` on a pooled connection, its statements cancelled at `limit`
/// ([`StoreError::StatementTimeout`]).
async fn timed<Q: Sync + ?Sized, T>(
    pool: &PgPool,
    names: &TableNames,
    limit: Option<Duration>,
    query: &Q,
    read: impl for<'c> FnOnce(&'c mut PgConnection, &'c TableNames, &'c Q) -> BoxFuture<'c, Result<T>>,
) -> Result<T> {
    let Some(limit) = limit else {
        let mut conn = pool.acquire().await?;
        return read(&mut conn, names, query).await;
    };
    let mut tx = pool.begin().await?;
    // A number of milliseconds: nothing a caller chooses is spliced in as text.
    let ms = limit.as_millis().clamp(1, i32::MAX as u128);
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "SET LOCAL statement_timeout = {ms}"
    )))
    .execute(&mut *tx)
    .await?;
    let value = match read(&mut tx, names, query).await {
        Ok(value) => value,
        Err(StoreError::Database(sqlx::Error::Database(db)))
            // query_canceled: the statement timeout
            if db.code().as_deref() == Some("57014") =>
        {
            return Err(StoreError::StatementTimeout(limit));
        }
        Err(e) => return Err(e),
    };
    tx.commit().await?;
    Ok(value)
}
