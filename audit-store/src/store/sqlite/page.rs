//! Reads of one account's records from SQLite under a time limit (a page, statistics): SQLite
//! has no statement timeout, so a progress handler interrupts the statement once the deadline
//! passes.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use futures_util::future::BoxFuture;
use sqlx::sqlite::{SqliteConnection, SqlitePool};

use super::super::TableNames;
use super::super::aggregate::stats_on;
use super::super::shared::Tables;
use crate::model::{Page, RecordQuery, Stats, StatsQuery};
use crate::{Result, StoreError};

/// Virtual machine steps between two looks at the clock: a few microseconds of work.
const STEPS_PER_CHECK: i32 = 1000;

/// Disarms a read's progress handler when the read is done, or dropped (a client gone). The
/// handler stays on the pooled connection, harmless, until the next read replaces it:
/// removing it would cost another round trip to the connection's thread on every page.
struct Disarm(Arc<AtomicBool>);

impl Drop for Disarm {
    fn drop(&mut self) {
        self.0.store(false, Ordering::Relaxed);
    }
}

/// One page of `query` (see [`AuditStore::page`](crate::store::AuditStore::page)).
pub(super) async fn page(
    pool: &SqlitePool,
    names: &TableNames,
    query: &RecordQuery,
) -> Result<Page> {
    timed(
        pool,
        names,
        query.time_limit,
        query,
        |conn, names, query| Box::pin(Tables::<sqlx::Sqlite>::page_on(conn, names, query)),
    )
    .await
}

/// The statistics of `query` (see [`AuditStore::stats`](crate::store::AuditStore::stats)).
pub(super) async fn stats(
    pool: &SqlitePool,
    names: &TableNames,
    query: &StatsQuery,
) -> Result<Stats> {
    timed(
        pool,
        names,
        query.time_limit,
        query,
        |conn, names, query| Box::pin(stats_on::<sqlx::Sqlite>(conn, names, query)),
    )
    .await
}

/// `read` of `query` on a pooled connection, interrupted at `limit` ([`StoreError::StatementTimeout`]).
async fn timed<Q: Sync + ?Sized, T>(
    pool: &SqlitePool,
    names: &TableNames,
    limit: Option<Duration>,
    query: &Q,
    read: impl for<'c> FnOnce(
        &'c mut SqliteConnection,
        &'c TableNames,
        &'c Q,
    ) -> BoxFuture<'c, Result<T>>,
) -> Result<T> {
    let mut conn = pool.acquire().await?;
    let Some(limit) = limit else {
        return read(&mut conn, names, query).await;
    };
    let deadline = Instant::now() + limit;
    let armed = Arc::new(AtomicBool::new(true));
    let handler = Arc::clone(&armed);
    conn.lock_handle()
        .await?
        .set_progress_handler(STEPS_PER_CHECK, move || {
            !handler.load(Ordering::Relaxed) || Instant::now() < deadline
        });
    let _disarm = Disarm(armed);
    read(&mut conn, names, query)
        .await
        .map_err(|e| timed_out(e, limit))
}

/// The interruption of a statement at its deadline, as [`StoreError::StatementTimeout`].
fn timed_out(e: StoreError, limit: Duration) -> StoreError {
    match &e {
        StoreError::Database(sqlx::Error::Database(db))
            // SQLITE_INTERRUPT
            if db.code().as_deref() == Some("9") =>
        {
            StoreError::StatementTimeout(limit)
        }
        _ => e,
    }
}
