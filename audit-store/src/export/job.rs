//! One export job: reads committed records in commit order, one batch per account at a
//! time, delivers each until it is taken, and keeps its place in the database.

use std::collections::HashMap;
use std::future::Future;
use std::time::Duration;

use super::ExportConfigError;
use super::batch::{EncodedBatch, idempotency_key};
use super::destination::{DeliveryError, Destination};
use super::format::Format;
use super::hold::{Holds, Next};
use super::metrics::ExportStatus;
use super::retry::Backoff;
use crate::model::{ColumnFilter, CommitPosition, CommitQuery, ExportPosition, LogPosition};
use crate::store::ExportPositions;
use crate::time::now_ms;

/// The default of [`ExportJob::batch_records`].
pub const DEFAULT_BATCH_RECORDS: u32 = 500;
/// The default of [`ExportJob::batch_bytes`].
pub const DEFAULT_BATCH_BYTES: usize = 1024 * 1024;
/// The default of [`ExportJob::poll_interval`].
pub const DEFAULT_POLL_INTERVAL: Duration = Duration::from_secs(1);
/// The default of [`ExportJob::settle`].
pub const DEFAULT_SETTLE: Duration = Duration::from_secs(5);
/// The default of [`ExportJob::stop_grace`].
pub const DEFAULT_STOP_GRACE: Duration = Duration::from_secs(5);

/// Whose records a job exports.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Scope {
    /// One account's.
    Account(String),
    /// Every account's, each in its own order (records without an account are not exported).
    AllAccounts,
}

/// A push export job: a [destination](Destination), a [format](Format), optional filters (the
/// query API's), and whose records ([`Scope`]). Build it, keep its [`status`](Self::status),
/// and spawn [`run`](Self::run) with a shutdown signal.
///
/// It reads only committed records, through the store, per account in the order they were
/// committed (and in (time, id) order within one write: [`CommitPosition`]), never from the
/// request path. Its place in each account's log is kept in the database (the
/// [`ExportPositions`] table), so a restart resumes where it left off and a destination that
/// was down gets everything when it returns. Each batch is delivered at least once: it is
/// sent again, identical and under the same idempotency key, after a failure or when a
/// restart interrupted its delivery, and never otherwise.
///
/// A record committed late (replayed from the pipeline's spool after the database was down
/// for an hour) is read after its commit like any other, whatever its action's time: it is
/// not passed over. It then arrives after records with later action times; a destination
/// that needs time order sorts by `action.time`.
///
/// A record is read once its write began [`settle`](Self::settle) ago (5 s by default), so
/// that a write still in its transaction when the job reads is not passed over: the settle
/// time must exceed the longest write transaction (the pipeline's are milliseconds to
/// a second). The settle time is measured on the database's clock, which stamps the records
/// (`ExportPositions::clock_ms`), so an app clock ahead of the database's skips nothing.
///
/// A batch the destination [refuses](DeliveryError::refused) for what it holds (an HTTP 413
/// for a record too large, a 400 or 422) holds back only its own account: the job goes on
/// with the others, and sends that account's batches halved after each refusal until the
/// refused record goes alone, after the records before it. That record is then sent again
/// after a backoff, like any failed batch, and the account's later records wait behind it
/// (their order is kept), unless the job [skips](Self::skip_refused_after) it.
#[derive(Debug)]
pub struct ExportJob<S, D> {
    name: String,
    store: S,
    destination: D,
    scope: Scope,
    format: Format,
    filters: Vec<ColumnFilter>,
    since_ms: i64,
    batch_records: u32,
    batch_bytes: usize,
    poll_interval: Duration,
    settle: Duration,
    backoff: Backoff,
    read_time_limit: Duration,
    stop_grace: Duration,
    skip_refused_after: u32,
    status: ExportStatus,
}

impl<S: ExportPositions, D: Destination> ExportJob<S, D> {
    /// A job named `name` (its key in the positions table: 1 to 64 letters, digits, `-`, `_`
    /// or `.`) exporting every account's records to `destination` as NDJSON.
    ///
    /// # Errors
    ///
    /// When `name` is not a valid job name.
    pub fn new(name: &str, store: S, destination: D) -> Result<Self, ExportConfigError> {
        ExportConfigError::check_name("export job", name)?;
        Ok(Self {
            status: ExportStatus::new(name),
            name: name.to_owned(),
            store,
            destination,
            scope: Scope::AllAccounts,
            format: Format::Ndjson,
            filters: Vec::new(),
            since_ms: 0,
            batch_records: DEFAULT_BATCH_RECORDS,
            batch_bytes: DEFAULT_BATCH_BYTES,
            poll_interval: DEFAULT_POLL_INTERVAL,
            settle: DEFAULT_SETTLE,
            backoff: Backoff {
                first: Duration::from_millis(250),
                max: Duration::from_secs(60),
            },
            read_time_limit: Duration::from_secs(10),
            stop_grace: DEFAULT_STOP_GRACE,
            skip_refused_after: 0,
        })
    }

    /// Whose records. Defaults to [`Scope::AllAccounts`].
    #[must_use]
    pub fn scope(mut self, scope: Scope) -> Self {
        self.scope = scope;
        self
    }

    /// The records' format. Defaults to [`Format::Ndjson`].
    #[must_use]
    pub fn format(mut self, format: Format) -> Self {
        self.format = format;
        self
    }

    /// Only records matching every filter (the query API's filters). Defaults to none.
    #[must_use]
    pub fn filters(mut self, filters: Vec<ColumnFilter>) -> Self {
        self.filters = filters;
        self
    }

    /// Only records at or after this time (ms since the epoch), for a job that should not
    /// send the whole retained log first. Defaults to 0: everything.
    #[must_use]
    pub fn since_ms(mut self, since_ms: i64) -> Self {
        self.since_ms = since_ms;
        self
    }

    /// The most records per batch. Defaults to 500.
    #[must_use]
    pub fn batch_records(mut self, records: u32) -> Self {
        self.batch_records = records.max(1);
        self
    }

    /// The most bytes of encoded lines per batch (before compression); a single record larger
    /// than this goes alone. Defaults to 1 MiB.
    #[must_use]
    pub fn batch_bytes(mut self, bytes: usize) -> Self {
        self.batch_bytes = bytes.max(1);
        self
    }

    /// How long the job sleeps when it has delivered everything. Defaults to 1 s.
    #[must_use]
    pub fn poll_interval(mut self, interval: Duration) -> Self {
        self.poll_interval = interval;
        self
    }

    /// How long after its write began a record is read: longer than any write transaction
    /// takes (see the type's docs). Defaults to 5 s.
    #[must_use]
    pub fn settle(mut self, settle: Duration) -> Self {
        self.settle = settle;
        self
    }

    /// The first wait after a failed delivery (doubled, with jitter, after each further
    /// failure) and the longest. A destination's `Retry-After` is honoured within these two:
    /// never less than the first, never more than the longest. Defaults to 250 ms and 60 s.
    #[must_use]
    pub fn backoff(mut self, first: Duration, max: Duration) -> Self {
        self.backoff = Backoff {
            first,
            max: max.max(first),
        };
        self
    }

    /// A handle on the job's counters (delivered, failed, lag), to read while it runs.
    pub fn status(&self) -> ExportStatus {
        self.status.clone()
    }

    /// On shutdown, how long a delivery attempt already in flight is given to be answered.
    /// If the destination takes it within this time, the job saves its place before it stops;
    /// otherwise the batch is sent again, under the same key, when the job next runs. No
    /// attempt starts once shutdown began. Defaults to 5 s.
    #[must_use]
    pub fn stop_grace(mut self, grace: Duration) -> Self {
        self.stop_grace = grace;
        self
    }

    /// Skip a record that the destination [refused](DeliveryError::refused) alone `refusals`
    /// times, if it took other batches (of this account, before the record, or of others)
    /// since the account's first refusal: the job moves past it, counts it
    /// (`skipped_records`) and logs its id at error level. The record stays in the store
    /// (the query API and a later job still have it); only this destination goes without it.
    /// Defaults to 0: never skip, and the account's export waits until the destination takes
    /// the record (at least once, whatever the destination does), which also means that a
    /// record one account can make the destination refuse holds back that account's later
    /// records. A destination that refuses everything makes nothing skipped, and neither
    /// does one that took nothing since (a refused record first in a one-account job's log);
    /// one that refuses every record of one account while it takes the others' makes each
    /// of that account's records skipped in turn, after `refusals` attempts each.
    #[must_use]
    pub fn skip_refused_after(mut self, refusals: u32) -> Self {
        self.skip_refused_after = refusals;
        self
    }

    /// Runs the job until `shutdown` completes.
    ///
    /// The job then stops at once, except that a delivery attempt in flight is given
    /// [`stop_grace`](Self::stop_grace) to be answered and, if taken, has its place saved.
    /// A batch whose delivery was cut short is sent again, identical and under the same key,
    /// when the job next runs.
    pub async fn run(self, shutdown: impl Future<Output = ()> + Send) {
        tokio::pin!(shutdown);
        let mut stop = Stop {
            signal: shutdown,
            stopping: false,
        };
        let Some(mut positions) = stop.unless(self.load_positions()).await else {
            return;
        };
        let mut holds = Holds::default();
        let mut read_failures = 0u32;
        loop {
            let wait = match self.pass(&mut positions, &mut holds, &mut stop).await {
                Ok(more) => {
                    read_failures = 0;
                    (!more).then_some(self.poll_interval)
                }
                Err(e) => {
                    read_failures += 1;
                    self.status.read_failed(&e.to_string());
                    tracing::warn!(
                        target: "audit_store::export",
                        job = %self.name,
                        "export job cannot read the store: {e}"
                    );
                    Some(self.backoff.wait(read_failures, None))
                }
            };
            if stop.stopping {
                return;
            }
            if let Some(wait) = wait
                && stop.unless(tokio::time::sleep(wait)).await.is_none()
            {
                return;
            }
        }
    }

    async fn load_positions(&self) -> HashMap<String, ExportPosition> {
        let mut failures = 0u32;
        loop {
            match self.store.export_positions(&self.name).await {
                Ok(positions) => {
                    return positions
                        .into_iter()
                        .map(|p| (p.account_id.clone(), p))
                        .collect();
                }
                Err(e) => {
                    failures += 1;
                    self.status.read_failed(&e.to_string());
                    tracing::warn!(
                        target: "audit_store::export",
                        job = %self.name,
                        "export job cannot read its positions: {e}"
                    );
                    tokio::time::sleep(self.backoff.wait(failures, None)).await;
                }
            }
        }
    }

    /// One batch of each account; whether any account has more waiting. Returns early, with
    /// `stop.stopping` set, once shutdown began.
    async fn pass<F: Future<Output = ()>>(
        &self,
        positions: &mut HashMap<String, ExportPosition>,
        holds: &mut Holds,
        stop: &mut Stop<'_, F>,
    ) -> crate::Result<bool> {
        let accounts = match &self.scope {
            Scope::Account(account) => vec![account.clone()],
            Scope::AllAccounts => {
                let Some(chains) = stop.unless(self.store.chains()).await else {
                    return Ok(false);
                };
                let mut chains = chains?;
                chains.retain(|c| !c.is_empty());
                holds.keep_only(&chains);
                chains
            }
        };
        let Some(clock) = stop.unless(self.read_limited(self.store.clock_ms())).await else {
            return Ok(false);
        };
        let now = now_ms();
        let settled = CommitPosition {
            committed_ms: clock?
                .saturating_sub(i64::try_from(self.settle.as_millis()).unwrap_or(i64::MAX)),
            time_ms: i64::MAX,
            id: uuid::Uuid::max(),
        };
        let mut more = false;
        let mut lag = 0;
        for account in accounts {
            if holds.waiting(&account, tokio::time::Instant::now()) {
                continue;
            }
            let limit = holds.limit(&account, self.batch_records);
            let position = positions
                .entry(account.clone())
                .or_insert_with(|| ExportPosition::new(account));
            let Some(read) = stop.unless(self.read_batch(position, settled, limit)).await else {
                return Ok(false);
            };
            let Some((batch, last, full)) = read? else {
                // Nothing to read: a held account's refused records are gone too.
                holds.release(&position.account_id);
                if let Some(pending) = position.pending.take() {
                    // The interrupted batch now reads as nothing (the job's filters or
                    // `since` changed, or retention removed its records): nothing to send
                    // again, so the job moves past it rather than read it for ever.
                    position.delivered = Some(pending);
                    self.store
                        .save_export_position(&self.name, position)
                        .await?;
                    more = true;
                }
                continue;
            };
            lag = lag.max(now - batch.first.0);
            self.status.set_lag(lag);
            if position.pending != Some(last) {
                position.pending = Some(last);
                let Some(saved) = stop
                    .unless(self.store.save_export_position(&self.name, position))
                    .await
                else {
                    return Ok(false);
                };
                saved?;
            }
            match self.deliver(&batch, stop).await {
                Delivery::Taken => holds.taken(&position.account_id, last),
                Delivery::Stopped => return Ok(false),
                Delivery::Refused(e) => {
                    let next = holds.refused(
                        &position.account_id,
                        batch.records,
                        last,
                        batch.first.0,
                        self.skip_refused_after,
                        |n| self.backoff.wait(n, e.asked_wait()),
                    );
                    if next != Next::Skip {
                        more |= next == Next::Narrowed;
                        self.refused(&batch, &next, &e);
                        continue;
                    }
                    self.skipped(&batch, &e);
                }
            }
            // Taken (or skipped): its place is saved even when shutdown began during the
            // attempt.
            position.delivered = Some(last);
            position.pending = None;
            self.store
                .save_export_position(&self.name, position)
                .await?;
            more |= full;
        }
        self.status.set_held(holds.len());
        // A held account is behind since its refused record's action.
        let held = holds.oldest_ms().map_or(0, |oldest| now - oldest);
        self.status.set_lag(if more { lag.max(held) } else { held });
        Ok(more)
    }

    fn refused(&self, batch: &EncodedBatch, next: &Next, e: &DeliveryError) {
        let what = match next {
            Next::Held(n) => format!("the record refused alone ({n} times) is held back"),
            _ => "the next batch of the account is halved".to_owned(),
        };
        tracing::warn!(
            target: "audit_store::export",
            job = %self.name,
            account = ?batch.account_id,
            records = batch.records,
            "export destination refused a batch ({e}): {what}; other accounts go on"
        );
    }

    fn skipped(&self, batch: &EncodedBatch, e: &DeliveryError) {
        self.status.skipped(batch.records);
        tracing::error!(
            target: "audit_store::export",
            job = %self.name,
            account = ?batch.account_id,
            record = %batch.first.1,
            refusals = self.skip_refused_after,
            "export destination refused a record every time it went alone ({e}); \
             skipped: the record stays in the store but this destination goes without it"
        );
    }

    /// A read of the store, cut short at the job's read time limit.
    async fn read_limited<T>(
        &self,
        read: impl Future<Output = crate::Result<T>>,
    ) -> crate::Result<T> {
        tokio::time::timeout(self.read_time_limit, read)
            .await
            .map_err(|_| crate::StoreError::StatementTimeout(self.read_time_limit))?
    }

    /// The next batch of `position`'s account (the pending one again, if a delivery was
    /// interrupted) of the records committed through `settled`, its last record's place, and
    /// whether it was cut short by its bounds (more may follow).
    async fn read_batch(
        &self,
        position: &ExportPosition,
        settled: CommitPosition,
        limit: u32,
    ) -> crate::Result<Option<(EncodedBatch, CommitPosition, bool)>> {
        let query = CommitQuery {
            account_id: position.account_id.clone(),
            since_ms: self.since_ms,
            filters: self.filters.clone(),
            after: position.delivered,
            through: position.pending.unwrap_or(settled),
            limit,
            max_bytes: Some(self.batch_bytes),
        };
        let rows = self.read_limited(self.store.commit_page(&query)).await?;
        // Full (more may follow: no sleep before the next pass) when the page reached its
        // record limit, or half its byte budget (it may have been cut by it).
        let bytes: usize = rows.iter().map(|r| r.row.record.len()).sum();
        let mut full = rows.len() == limit as usize || bytes.saturating_mul(2) > self.batch_bytes;
        let mut lines = String::new();
        let mut span: Option<(LogPosition, LogPosition)> = None;
        let mut last = None;
        let mut records = 0;
        let mut positions = Vec::with_capacity(rows.len());
        for committed in &rows {
            let row = &committed.row;
            let at = (row.time_ms, row.id);
            let start = lines.len();
            self.format
                .write_line(row, &mut lines)
                .map_err(|e| crate::StoreError::Config(e.to_string()))?;
            if records > 0 && lines.len() > self.batch_bytes {
                lines.truncate(start);
                full = true;
                break;
            }
            records += 1;
            positions.push(at);
            last = Some(committed.at);
            span = Some((span.map_or(at, |(first, _)| first), at));
        }
        let (Some((first, last_at)), Some(last)) = (span, last) else {
            return Ok(None);
        };
        Ok(Some((
            EncodedBatch {
                job: self.name.clone(),
                idempotency_key: idempotency_key(&self.name, &position.account_id, first, last_at),
                account_id: position.account_id.clone(),
                first,
                last: last_at,
                records,
                format: self.format,
                lines,
                positions,
            },
            last,
            full,
        )))
    }

    /// Delivers `batch`, trying again after each failure until it is taken, refused, or
    /// shutdown stops it (an attempt in flight is given the stop grace first).
    async fn deliver<F: Future<Output = ()>>(
        &self,
        batch: &EncodedBatch,
        stop: &mut Stop<'_, F>,
    ) -> Delivery {
        let mut attempt = 0u32;
        loop {
            attempt += 1;
            let sending = self.destination.deliver(batch);
            tokio::pin!(sending);
            let outcome = match stop.unless(&mut sending).await {
                Some(outcome) => outcome,
                None => match tokio::time::timeout(self.stop_grace, sending).await {
                    Ok(outcome) => outcome,
                    Err(_) => return Delivery::Stopped,
                },
            };
            match outcome {
                Ok(()) => {
                    self.status.delivered(batch.records, attempt, now_ms());
                    return Delivery::Taken;
                }
                Err(e) if e.is_refused() => {
                    self.status.refused(&e.to_string());
                    self.status.set_lag(now_ms() - batch.first.0);
                    return Delivery::Refused(e);
                }
                Err(e) => {
                    self.status.failed(&e.to_string());
                    self.status.set_lag(now_ms() - batch.first.0);
                    tracing::warn!(
                        target: "audit_store::export",
                        job = %self.name,
                        account = ?batch.account_id,
                        attempt,
                        "export delivery failed, will retry: {e}"
                    );
                    if stop.stopping
                        || stop
                            .unless(tokio::time::sleep(
                                self.backoff.wait(attempt, e.asked_wait()),
                            ))
                            .await
                            .is_none()
                    {
                        return Delivery::Stopped;
                    }
                }
            }
        }
    }
}

/// How one batch's delivery ended.
enum Delivery {
    /// The destination has it.
    Taken,
    /// The destination refused it for what it holds.
    Refused(DeliveryError),
    /// Shutdown began before it was taken.
    Stopped,
}

/// The job's shutdown signal, awaited alongside its work; once it completed, `stopping`
/// stays set (the signal is not polled again).
struct Stop<'a, F> {
    signal: std::pin::Pin<&'a mut F>,
    stopping: bool,
}

impl<F: Future<Output = ()>> Stop<'_, F> {
    /// `work`'s output, or `None` when shutdown began first (or had begun).
    async fn unless<T>(&mut self, work: impl Future<Output = T>) -> Option<T> {
        if self.stopping {
            return None;
        }
        tokio::select! {
            biased;
            () = self.signal.as_mut() => {
                self.stopping = true;
                None
            }
            out = work => Some(out),
        }
    }
}
