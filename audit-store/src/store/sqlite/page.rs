//! A page of records from SQLite under a time limit: SQLite has no statement timeout, so a
//! progress handler interrupts the statement once the deadline passes.

use std::time::{Duration, Instant};

use sqlx::pool::PoolConnection;
use sqlx::sqlite::SqlitePool;

use super::super::shared::Tables;
use crate::model::{Page, RecordQuery};
use crate::{Result, StoreError};

/// Virtual machine steps between two looks at the clock: a few microseconds of work.
const STEPS_PER_CHECK: i32 = 1000;

/// A pooled connection whose progress handler is still set: should the page's future be
/// dropped before the handler is removed (a client gone), the connection is closed rather
/// than handed back to the pool with a handler that would interrupt its next statement.
struct Interruptible(Option<PoolConnection<sqlx::Sqlite>>);

impl Drop for Interruptible {
    fn drop(&mut self) {
        if let Some(mut conn) = self.0.take() {
            conn.close_on_drop();
        }
    }
}

/// One page of `query` (see [`AuditStore::page`](crate::store::AuditStore::page)).
pub(super) async fn page(pool: &SqlitePool, query: &RecordQuery) -> Result<Page> {
    let mut conn = pool.acquire().await?;
    let Some(limit) = query.time_limit else {
        return Tables::<sqlx::Sqlite>::page_on(&mut conn, query).await;
    };
    let deadline = Instant::now() + limit;
    conn.lock_handle()
        .await?
        .set_progress_handler(STEPS_PER_CHECK, move || Instant::now() < deadline);
    let mut guard = Interruptible(Some(conn));
    let conn = guard.0.as_mut().expect("set just above");
    let outcome = Tables::<sqlx::Sqlite>::page_on(conn, query).await;
    conn.lock_handle().await?.remove_progress_handler();
    let conn = guard.0.take().expect("set just above");
    drop(conn);
    outcome.map_err(|e| timed_out(e, limit))
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
