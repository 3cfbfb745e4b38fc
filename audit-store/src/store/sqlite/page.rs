//! A page of records from SQLite under a time limit: SQLite has no statement timeout, so a
//! progress handler interrupts the statement once the deadline passes.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use sqlx::sqlite::SqlitePool;

use super::super::TableNames;
use super::super::shared::Tables;
use crate::model::{Page, RecordQuery};
use crate::{Result, StoreError};

/// Virtual machine steps between two looks at the clock: a few microseconds of work.
const STEPS_PER_CHECK: i32 = 1000;

/// Disarms a page's progress handler when the page is done, or dropped (a client gone). The
/// handler stays on the pooled connection, harmless, until the next page replaces it:
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
    let mut conn = pool.acquire().await?;
    let Some(limit) = query.time_limit else {
        return Tables::<sqlx::Sqlite>::page_on(&mut conn, names, query).await;
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
    Tables::<sqlx::Sqlite>::page_on(&mut conn, names, query)
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
