//! WAL checkpoints off the writer: a task of the store's copies the WAL into the database file
//! on a connection of its own, so the writer's commits only ever append.

use std::time::Duration;

use sqlx::sqlite::SqliteConnectOptions;

/// How often the WAL is checkpointed off the writer (see [`checkpoints`]).
pub(super) const CHECKPOINT_EVERY: Duration = Duration::from_millis(250);
/// WAL frames past which a checkpoint also restarts the log, pausing the writer for the last
/// frames only: 4,096 pages of 8 KiB, 32 MiB of WAL file.
const WAL_RESTART_FRAMES: i64 = 4096;
/// How long a checkpoint waits for a lock (the writer's, a reader's snapshot) before it gives
/// up until its next pass.
pub(super) const CHECKPOINT_BUSY_TIMEOUT: Duration = Duration::from_millis(50);
/// The writer's own `wal_autocheckpoint`, pages: a backstop, in case the checkpoints of
/// [`checkpoints`] stop (SQLite's default is 1,000).
pub(super) const WRITER_AUTOCHECKPOINT: &str = "16384";

/// Stops the checkpoint task when dropped.
#[derive(Debug)]
pub(super) struct Checkpoints(pub(super) tokio::task::AbortHandle);

impl Drop for Checkpoints {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Checkpoints the WAL of the database `options` opens, every [`CHECKPOINT_EVERY`], on a
/// connection of its own. SQLite otherwise checkpoints in the commit that fills the WAL past
/// `wal_autocheckpoint`: the writer's, which then waits for the database file to be written
/// and synced (the whole-server benchmark saw it stop ingestion for seconds on a busy host).
/// Here the writer only appends. A `PASSIVE` checkpoint never waits for it. The WAL file
/// starts over when a checkpoint has copied every frame before the writer's next transaction;
/// under continuous writes a pass rarely catches up, so once the WAL holds
/// [`WAL_RESTART_FRAMES`] a `RESTART` checkpoint holds the writer while it copies the frames
/// since the previous pass, or gives up after [`CHECKPOINT_BUSY_TIMEOUT`] if a reader still
/// needs them (and is tried again 2 s later). Ends at once for a database that is not in WAL mode (`sqlite::memory:`), and
/// waits longer between attempts while the database refuses them (a read-only file).
pub(super) async fn checkpoints(options: SqliteConnectOptions) {
    use sqlx::Connection as _;
    let mut tick = tokio::time::interval(CHECKPOINT_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut conn: Option<sqlx::SqliteConnection> = None;
    // Whether the next pass restarts the WAL; passes until a restart is tried again after
    // one gave up.
    let (mut restart, mut restart_later) = (false, 0_u32);
    let (mut failures, mut skip) = (0_u32, 0_u32);
    loop {
        tick.tick().await;
        if skip > 0 {
            skip -= 1;
            continue;
        }
        if conn.is_none() {
            let Ok(mut c) = sqlx::SqliteConnection::connect_with(&options).await else {
                failures += 1;
                skip = 2_u32.saturating_pow(failures).min(40);
                continue;
            };
            let mode: Option<String> = sqlx::query_scalar("PRAGMA journal_mode")
                .fetch_optional(&mut c)
                .await
                .ok()
                .flatten();
            if !mode.is_some_and(|m| m.eq_ignore_ascii_case("wal")) {
                return;
            }
            conn = Some(c);
        }
        let Some(c) = conn.as_mut() else { continue };
        let mode = if restart { "RESTART" } else { "PASSIVE" };
        let done = sqlx::query_as::<_, (i64, i64, i64)>(sqlx::AssertSqlSafe(format!(
            "PRAGMA wal_checkpoint({mode})"
        )))
        .fetch_one(&mut *c)
        .await;
        match done {
            // (gave up on a lock, frames in the WAL, frames copied): a WAL copied whole starts
            // over at the writer's next transaction without help.
            Ok((gave_up, frames, copied)) => {
                failures = 0;
                if restart && gave_up != 0 {
                    // A reader holds an old snapshot (a long scan): try again in 2 s, not
                    // every pass, so that the writer is held at most 50 ms in 2 s meanwhile.
                    restart_later = 8;
                }
                restart_later = restart_later.saturating_sub(1);
                restart = frames >= WAL_RESTART_FRAMES && copied < frames && restart_later == 0;
            }
            Err(e) => {
                tracing::debug!(target: "audit_store", "SQLite WAL checkpoint failed: {e}");
                conn = None;
                failures += 1;
                skip = 2_u32.saturating_pow(failures).min(40);
            }
        }
    }
}
