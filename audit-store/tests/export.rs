//! Push export jobs against every backend (see `backend_tests!`): what a destination receives,
//! in what order, how often, and where a restarted job resumes.

#[macro_use]
mod common;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use audit_store::export::{DeliveryError, Destination, EncodedBatch, ExportJob, Scope};
use audit_store::model::{Column, ColumnFilter, CommitPosition, FilterValue};
use audit_store::store::{ChainedStore, ExportPositions};
use common::{BASE_MS, Fixture, TestResult, record, rows};
use tokio::sync::oneshot;
use uuid::Uuid;

backend_tests!(
    every_record_is_delivered_once_in_order_when_nothing_fails,
    a_failed_batch_is_sent_again_identical_under_its_key,
    a_restart_resumes_and_resends_only_the_interrupted_batch,
    a_delivery_answered_during_shutdown_keeps_its_place,
    an_interrupted_batch_that_now_reads_as_nothing_is_passed,
    a_job_of_one_account_with_a_filter_sends_only_its_matching_records,
    records_committed_less_than_the_settle_time_ago_wait,
    a_record_committed_an_hour_after_its_action_is_exported_after_the_job_passed_its_time,
    a_refused_record_holds_back_only_its_own_account,
    a_record_refused_alone_is_skipped_by_a_job_that_skips,
    a_destination_refusing_everything_makes_nothing_skipped,
    the_jobs_clock_is_the_one_that_stamps_commits,
    the_settle_time_is_measured_on_the_stores_clock,
    a_hold_whose_records_are_gone_is_forgotten,
);

/// What a destination got: every batch, in arrival order.
#[derive(Clone, Default)]
struct Received(Arc<Mutex<Vec<EncodedBatch>>>);

impl Received {
    fn batches(&self) -> Vec<EncodedBatch> {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// The ids received per account, in order, duplicates included.
    fn ids(&self) -> BTreeMap<String, Vec<Uuid>> {
        let mut ids: BTreeMap<String, Vec<Uuid>> = BTreeMap::new();
        for batch in self.batches() {
            for line in batch.lines() {
                let value: serde_json::Value = serde_json::from_str(line).unwrap_or_default();
                let id = value["id"]
                    .as_str()
                    .and_then(|s| s.parse().ok())
                    .unwrap_or_default();
                ids.entry(batch.account_id.clone()).or_default().push(id);
            }
        }
        ids
    }
}

/// A destination that keeps what it gets, after failing the first `fail` attempts (which it
/// also keeps when `got_it`: the receiver had the batch, its answer was lost), hanging
/// forever from attempt `hang_from` on, and answering `answer_after` after it kept a batch.
/// It [refuses](DeliveryError::refused) every batch holding a record of `refuse` (every
/// batch, with `refuse_all`), as a SIEM answers 413 to a record too large for it.
#[derive(Clone, Default)]
struct Recorder {
    received: Received,
    attempts: Arc<Mutex<u32>>,
    fail: u32,
    got_it: bool,
    hang_from: Option<u32>,
    answer_after: Duration,
    refuse: Vec<Uuid>,
    refuse_all: bool,
}

impl Destination for Recorder {
    async fn deliver(&self, batch: &EncodedBatch) -> Result<(), DeliveryError> {
        let attempt = {
            let mut attempts = self.attempts.lock().unwrap_or_else(PoisonError::into_inner);
            *attempts += 1;
            *attempts
        };
        if self.hang_from.is_some_and(|from| attempt >= from) {
            std::future::pending::<()>().await;
        }
        if self.refuse_all
            || batch
                .positions
                .iter()
                .any(|(_, id)| self.refuse.contains(id))
        {
            return Err(DeliveryError::refused("413 Payload Too Large"));
        }
        if attempt <= self.fail && !self.got_it {
            return Err(DeliveryError::new("refused"));
        }
        self.received
            .0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(batch.clone());
        tokio::time::sleep(self.answer_after).await;
        if attempt <= self.fail {
            return Err(DeliveryError::new("answer lost"));
        }
        Ok(())
    }
}

/// `per_account` records in each of `accounts`, stored in the past (past the settle time),
/// returned in (time, id) order per account.
async fn seed<S: ChainedStore>(
    store: &S,
    accounts: &[&str],
    per_account: usize,
) -> TestResult<BTreeMap<String, Vec<Uuid>>> {
    let mut expected = BTreeMap::new();
    for account in accounts {
        let mut records: Vec<_> = (0..per_account)
            // Several records per millisecond: the id orders them.
            .map(|i| record(Some(account), BASE_MS + (i / 3) as i64))
            .collect();
        store.insert(&rows(&records)?).await?;
        records.sort_by_key(|r| (r.action.time.unix_millis(), r.id));
        expected.insert(
            (*account).to_owned(),
            records.iter().map(|r| r.id).collect::<Vec<_>>(),
        );
    }
    Ok(expected)
}

/// A job over `store` to `destination`, with short waits (records are read as soon as they
/// are committed).
fn job<S: ExportPositions>(store: S, destination: Recorder) -> TestResult<ExportJob<S, Recorder>> {
    Ok(ExportJob::new("siem", store, destination)?
        .settle(Duration::ZERO)
        .batch_records(100)
        .poll_interval(Duration::from_millis(20))
        .backoff(Duration::from_millis(5), Duration::from_millis(20)))
}

/// Runs `job` until `done` holds of what was received (or 10 s pass), then stops it.
async fn run_until<S: ExportPositions>(
    job: ExportJob<S, Recorder>,
    received: &Received,
    done: impl Fn(&Received) -> bool,
) -> TestResult {
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(job.run(async move {
        let _ = stopped.await;
    }));
    let mut waited = Duration::ZERO;
    while !done(received) {
        if waited > Duration::from_secs(10) {
            return Err("the job did not deliver in 10 s".into());
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
        waited += Duration::from_millis(10);
    }
    let _ = stop.send(());
    task.await?;
    Ok(())
}

fn total(ids: &BTreeMap<String, Vec<Uuid>>) -> usize {
    ids.values().map(Vec::len).sum()
}

async fn every_record_is_delivered_once_in_order_when_nothing_fails<S: ExportPositions>(
    fx: &Fixture<S>,
) -> TestResult {
    let expected = seed(&fx.store, &["acc_a", "acc_b", "acc_c"], 250).await?;
    let recorder = Recorder::default();
    let received = recorder.received.clone();
    let job = job(fx.store.clone(), recorder)?;
    let status = job.status();
    run_until(job, &received, |r| total(&r.ids()) >= 750).await?;
    assert_eq!(
        received.ids(),
        expected,
        "each record once, in (time, id) order"
    );
    let batches = received.batches();
    assert_eq!(batches.len(), 9, "100, 100 and 50 records per account");
    let keys: std::collections::HashSet<_> =
        batches.iter().map(|b| b.idempotency_key.clone()).collect();
    assert_eq!(keys.len(), 9, "a key of its own per batch");
    let metrics = status.snapshot();
    assert_eq!(
        (metrics.delivered_records, metrics.failed_attempts),
        (750, 0)
    );
    // The positions are in the database: the last record of each account, nothing pending.
    let positions = fx.store.export_positions("siem").await?;
    assert_eq!(positions.len(), 3);
    for position in positions {
        let last = expected[&position.account_id].last().copied();
        assert_eq!(position.delivered.map(|p| p.id), last);
        assert_eq!(position.pending, None);
    }
    Ok(())
}

async fn a_failed_batch_is_sent_again_identical_under_its_key<S: ExportPositions>(
    fx: &Fixture<S>,
) -> TestResult {
    let expected = seed(&fx.store, &["acc_a"], 150).await?;
    let recorder = Recorder {
        fail: 3,
        got_it: true,
        ..Recorder::default()
    };
    let received = recorder.received.clone();
    let job = job(fx.store.clone(), recorder)?;
    let status = job.status();
    run_until(job, &received, |r| total(&r.ids()) >= 150 + 300).await?;
    let batches = received.batches();
    // The first batch four times (three answers lost), then the second once.
    assert_eq!(batches.len(), 5);
    for retry in &batches[1..4] {
        assert_eq!(retry.idempotency_key, batches[0].idempotency_key);
        assert_eq!(retry.lines, batches[0].lines, "the same bytes");
    }
    assert_ne!(batches[4].idempotency_key, batches[0].idempotency_key);
    let mut first_seen: Vec<Uuid> = Vec::new();
    for id in &received.ids()["acc_a"] {
        if !first_seen.contains(id) {
            first_seen.push(*id);
        }
    }
    assert_eq!(first_seen, expected["acc_a"]);
    let metrics = status.snapshot();
    assert_eq!(
        (
            metrics.failed_attempts,
            metrics.retried_batches,
            metrics.consecutive_failures
        ),
        (3, 1, 0)
    );
    assert_eq!(metrics.last_error.as_deref(), Some("answer lost"));
    Ok(())
}

async fn a_restart_resumes_and_resends_only_the_interrupted_batch<S: ExportPositions>(
    fx: &Fixture<S>,
) -> TestResult {
    let expected = seed(&fx.store, &["acc_a", "acc_b"], 300).await?;
    // First run: two batches are taken, the third hangs until the job is stopped.
    let hanging = Recorder {
        hang_from: Some(3),
        ..Recorder::default()
    };
    let first = hanging.received.clone();
    let attempts = Arc::clone(&hanging.attempts);
    // The hanging attempt gets a short grace when the job stops, and is not answered in it.
    let first_job = job(fx.store.clone(), hanging)?.stop_grace(Duration::from_millis(50));
    run_until(first_job, &first, |_| {
        *attempts.lock().unwrap_or_else(PoisonError::into_inner) >= 3
    })
    .await?;
    assert_eq!(first.batches().len(), 2);
    let pending: HashMap<String, Option<CommitPosition>> = fx
        .store
        .export_positions("siem")
        .await?
        .into_iter()
        .map(|p| (p.account_id, p.pending))
        .collect();
    assert_eq!(
        pending.values().filter(|p| p.is_some()).count(),
        1,
        "the interrupted batch is pending: {pending:?}"
    );

    // Second run, a new job on the same table: it starts with the interrupted batch.
    let recorder = Recorder::default();
    let second = recorder.received.clone();
    run_until(job(fx.store.clone(), recorder)?, &second, |r| {
        total(&r.ids()) + total(&first.ids()) >= 600
    })
    .await?;
    let resent = &second.batches()[0];
    let (pending_account, pending_last) = pending
        .iter()
        .find_map(|(a, p)| p.map(|p| (a.clone(), p)))
        .ok_or("a pending batch")?;
    assert_eq!(resent.account_id, pending_account);
    assert_eq!(
        resent.last,
        pending_last.log_position(),
        "read again up to the same record"
    );
    // Everything arrived once, in order: the interrupted batch had never been received.
    let mut all = first.ids();
    for (account, ids) in second.ids() {
        all.entry(account).or_default().extend(ids);
    }
    assert_eq!(all, expected);
    // Its key is the one it was first sent under (derived, so a third run agrees).
    assert_eq!(
        resent.idempotency_key,
        audit_store::export::idempotency_key("siem", &resent.account_id, resent.first, resent.last)
    );
    Ok(())
}

async fn a_delivery_answered_during_shutdown_keeps_its_place<S: ExportPositions>(
    fx: &Fixture<S>,
) -> TestResult {
    let expected = seed(&fx.store, &["acc_a"], 150).await?;
    // The destination keeps each batch at once and answers 300 ms later; the job is stopped
    // in between, as soon as the first batch arrived.
    let slow = Recorder {
        answer_after: Duration::from_millis(300),
        ..Recorder::default()
    };
    let first = slow.received.clone();
    let stopped = job(fx.store.clone(), slow)?;
    let status = stopped.status();
    run_until(stopped, &first, |r| total(&r.ids()) >= 100).await?;
    assert_eq!(first.batches().len(), 1, "no attempt starts once stopping");
    assert_eq!(status.snapshot().delivered_records, 100);
    let positions = fx.store.export_positions("siem").await?;
    assert_eq!(positions.len(), 1);
    assert_eq!(
        positions[0].delivered.map(|p| p.id),
        Some(expected["acc_a"][99]),
        "the batch answered within the stop grace has its place saved"
    );
    assert_eq!(positions[0].pending, None);

    // The next run starts after it: nothing is sent twice.
    let recorder = Recorder::default();
    let second = recorder.received.clone();
    run_until(job(fx.store.clone(), recorder)?, &second, |r| {
        total(&r.ids()) >= 50
    })
    .await?;
    let mut all = first.ids();
    for (account, ids) in second.ids() {
        all.entry(account).or_default().extend(ids);
    }
    assert_eq!(all, expected);
    Ok(())
}

async fn an_interrupted_batch_that_now_reads_as_nothing_is_passed<S: ExportPositions>(
    fx: &Fixture<S>,
) -> TestResult {
    seed(&fx.store, &["acc_a"], 150).await?;
    // First run: the first batch is taken, the second hangs until the job is stopped.
    let hanging = Recorder {
        hang_from: Some(2),
        ..Recorder::default()
    };
    let attempts = Arc::clone(&hanging.attempts);
    let first = hanging.received.clone();
    let stopped = job(fx.store.clone(), hanging)?.stop_grace(Duration::from_millis(50));
    run_until(stopped, &first, |_| {
        *attempts.lock().unwrap_or_else(PoisonError::into_inner) >= 2
    })
    .await?;
    let positions = fx.store.export_positions("siem").await?;
    assert!(positions[0].pending.is_some(), "{positions:?}");

    // Restarted with a `since` past every record of the interrupted batch (as an operator
    // skips a batch the destination keeps refusing): it reads as nothing, and the job goes
    // on with the records after it instead of reading that empty batch for ever.
    let later: Vec<_> = (0..10)
        .map(|i| record(Some("acc_a"), BASE_MS + 100_000 + i))
        .collect();
    fx.store.insert(&rows(&later)?).await?;
    let recorder = Recorder::default();
    let second = recorder.received.clone();
    let restarted = job(fx.store.clone(), recorder)?.since_ms(BASE_MS + 50_000);
    run_until(restarted, &second, |r| total(&r.ids()) >= 10).await?;
    // One record a millisecond: time order is the order they were made in.
    let ids = later.iter().map(|r| r.id).collect::<Vec<_>>();
    assert_eq!(second.ids()["acc_a"], ids);
    let positions = fx.store.export_positions("siem").await?;
    assert_eq!(positions[0].pending, None);
    assert_eq!(positions[0].delivered.map(|p| p.id), ids.last().copied());
    Ok(())
}

async fn a_job_of_one_account_with_a_filter_sends_only_its_matching_records<S: ExportPositions>(
    fx: &Fixture<S>,
) -> TestResult {
    let mut kept = Vec::new();
    let mut records = Vec::new();
    for (i, account) in ["acc_a", "acc_b", "acc_a", "acc_a"].into_iter().enumerate() {
        let mut r = record(Some(account), BASE_MS + i as i64);
        if i == 2 {
            r.action.kind = audit_layer::record::ActionType::Delete;
        } else if account == "acc_a" {
            kept.push(r.id);
        }
        records.push(r);
    }
    fx.store.insert(&rows(&records)?).await?;
    let recorder = Recorder::default();
    let received = recorder.received.clone();
    let job = job(fx.store.clone(), recorder)?
        .scope(Scope::Account("acc_a".to_owned()))
        .filters(vec![ColumnFilter {
            column: Column::ActionType,
            negated: true,
            values: vec![FilterValue::Text("delete".to_owned())],
        }]);
    run_until(job, &received, |r| total(&r.ids()) >= 2).await?;
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(received.ids(), BTreeMap::from([("acc_a".to_owned(), kept)]));
    Ok(())
}

async fn records_committed_less_than_the_settle_time_ago_wait<S: ExportPositions>(
    fx: &Fixture<S>,
) -> TestResult {
    let now = audit_layer::record::Timestamp::now().unix_millis();
    let first = record(Some("acc_a"), now - 60_000);
    fx.store
        .insert(&rows(std::slice::from_ref(&first))?)
        .await?;
    tokio::time::sleep(Duration::from_millis(700)).await;
    // Committed now, though its action is older than the first's: the commit is what waits.
    let second = record(Some("acc_a"), now - 120_000);
    fx.store
        .insert(&rows(std::slice::from_ref(&second))?)
        .await?;
    let recorder = Recorder::default();
    let received = recorder.received.clone();
    let job = job(fx.store.clone(), recorder)?.settle(Duration::from_millis(600));
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(job.run(async move {
        let _ = stopped.await;
    }));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        received.ids()["acc_a"],
        vec![first.id],
        "the one committed 700 ms ago is read, the one just committed waits"
    );
    let mut waited = 0;
    while total(&received.ids()) < 2 && waited < 200 {
        tokio::time::sleep(Duration::from_millis(10)).await;
        waited += 1;
    }
    let _ = stop.send(());
    task.await?;
    assert_eq!(received.ids()["acc_a"], vec![first.id, second.id]);
    Ok(())
}

/// The hole of a job reading in (time, id) order: a record committed long after its action
/// (the pipeline's spool replayed after an outage) lies behind the job's place. In commit
/// order it comes next.
async fn a_record_committed_an_hour_after_its_action_is_exported_after_the_job_passed_its_time<
    S: ExportPositions,
>(
    fx: &Fixture<S>,
) -> TestResult {
    let now = audit_layer::record::Timestamp::now().unix_millis();
    let recent: Vec<_> = (0..3)
        .map(|i| record(Some("acc_a"), now - 10_000 + i))
        .collect();
    fx.store.insert(&rows(&recent)?).await?;
    let recorder = Recorder::default();
    let received = recorder.received.clone();
    let job = job(fx.store.clone(), recorder)?;
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(job.run(async move {
        let _ = stopped.await;
    }));
    let mut waited = 0;
    while total(&received.ids()) < 3 && waited < 500 {
        tokio::time::sleep(Duration::from_millis(10)).await;
        waited += 1;
    }
    assert_eq!(total(&received.ids()), 3, "the recent records first");
    // The job is past `now - 10 s` in time; this record's action was an hour ago.
    let late = record(Some("acc_a"), now - 3_600_000);
    fx.store.insert(&rows(std::slice::from_ref(&late))?).await?;
    let mut waited = 0;
    while total(&received.ids()) < 4 && waited < 500 {
        tokio::time::sleep(Duration::from_millis(10)).await;
        waited += 1;
    }
    // A few more polls: nothing else comes (no record twice).
    tokio::time::sleep(Duration::from_millis(100)).await;
    let _ = stop.send(());
    task.await?;
    let mut expected: Vec<Uuid> = recent.iter().map(|r| r.id).collect();
    expected.push(late.id);
    assert_eq!(
        received.ids()["acc_a"],
        expected,
        "the late record once, after the others"
    );
    let position = fx.store.export_positions("siem").await?;
    assert_eq!(position.len(), 1);
    assert_eq!(position[0].delivered.map(|p| p.id), Some(late.id));
    assert_eq!(
        position[0].delivered.map(|p| p.time_ms),
        Some(now - 3_600_000)
    );
    Ok(())
}

/// A job of the previous release (positions in (time, id) order, records without a commit
/// stamp) resumes after the upgrade where it was: the old records it had not sent yet, in
/// (time, id) order, then the records committed since, even one whose action is older than
/// everything.
#[tokio::test]
async fn sqlite_a_job_of_the_previous_release_resumes_where_it_was_after_the_upgrade() -> TestResult
{
    use audit_store::model::{COLUMNS, ColumnValue};
    use audit_store::sqlx::{self, QueryBuilder, Sqlite};
    use audit_store::store::AuditStore as _;

    let dir = tempfile::tempdir()?;
    let store = audit_store::SqliteStore::open(dir.path().join("audit.db")).await?;
    // The previous release's schema: every migration before the commit order's.
    let previous: Vec<_> = store
        .migrations()
        .into_iter()
        .filter(|m| m.version < 20261206000050)
        .collect();
    let mut migrator = sqlx::migrate::Migrator::with_migrations(previous);
    migrator.dangerous_set_table_name("_audit_migrations");
    migrator.run(store.pool()).await?;
    // Its records, written with its columns (no commit stamp), and its job's position after
    // the second of four.
    let old: Vec<_> = (0..4)
        .map(|i| record(Some("acc_a"), BASE_MS + i * 1000))
        .collect();
    let old_rows = rows(&old)?;
    let mut insert = QueryBuilder::<Sqlite>::new(format!(
        "INSERT INTO audit_logs ({}) ",
        audit_store::store::sql::columns()
    ));
    insert.push_values(&old_rows, |mut b, r| {
        for column in &COLUMNS {
            match column.value(r) {
                ColumnValue::Uuid(v) => b.push_bind(v),
                ColumnValue::BigInt(v) => b.push_bind(v),
                ColumnValue::Int(v) => b.push_bind(v),
                ColumnValue::Text(v) => b.push_bind(v.map(str::to_owned)),
            };
        }
    });
    insert.build().execute(store.pool()).await?;
    sqlx::query(
        "INSERT INTO audit_export_positions (job, account_id, delivered_time_ms, delivered_id, \
         pending_time_ms, pending_id, updated_ms) VALUES ('siem', 'acc_a', ?, ?, NULL, NULL, 0)",
    )
    .bind(old_rows[1].time_ms)
    .bind(old_rows[1].id)
    .execute(store.pool())
    .await?;

    // The upgrade, then a record committed now whose action is older than all of them.
    store.migrate().await?;
    let late = record(Some("acc_a"), BASE_MS - 3_600_000);
    store.insert(&rows(std::slice::from_ref(&late))?).await?;
    let recorder = Recorder::default();
    let received = recorder.received.clone();
    run_until(job(store.clone(), recorder)?, &received, |r| {
        total(&r.ids()) >= 3
    })
    .await?;
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(
        received.ids()["acc_a"],
        vec![old[2].id, old[3].id, late.id],
        "the old records after the old position, then the one committed since"
    );
    Ok(())
}

/// The job's counters through the `metrics` facade, labelled with its name, as an app's
/// `/metrics` serves them (a Prometheus recorder, local to the job's construction).
#[tokio::test]
async fn the_jobs_counters_reach_the_metrics_facade_labelled_with_its_name() -> TestResult {
    let fx = common::sqlite().await?;
    seed(&fx.store, &["acc_a"], 5).await?;
    let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
    let prometheus = recorder.handle();
    let destination = Recorder {
        fail: 2,
        ..Recorder::default()
    };
    let received = destination.received.clone();
    let job = metrics::with_local_recorder(&recorder, || {
        ExportJob::new("siem.metrics", fx.store.clone(), destination)
    })?
    .settle(Duration::ZERO)
    .poll_interval(Duration::from_millis(20))
    .backoff(Duration::from_millis(5), Duration::from_millis(20));
    // The destination holds the records before the job counts them and clears its lag: stop
    // it only once it has (stopped between the two, the lag gauge kept the records' age).
    let status = job.status();
    run_until(job, &received, |r| {
        let counted = status.snapshot();
        total(&r.ids()) >= 5 && counted.delivered_records >= 5 && counted.lag_ms == 0
    })
    .await?;
    let text = prometheus.render();
    let sample = |series: &str| -> Option<f64> {
        text.lines()
            .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
            .and_then(|value| value.parse().ok())
    };
    for (series, value) in [
        (
            "audit_export_delivered_records_total{job=\"siem.metrics\"}",
            5.0,
        ),
        (
            "audit_export_delivered_batches_total{job=\"siem.metrics\"}",
            1.0,
        ),
        (
            "audit_export_failed_attempts_total{job=\"siem.metrics\"}",
            2.0,
        ),
        (
            "audit_export_consecutive_failures{job=\"siem.metrics\"}",
            0.0,
        ),
        ("audit_export_lag_seconds{job=\"siem.metrics\"}", 0.0),
    ] {
        assert_eq!(sample(series), Some(value), "{series} in:\n{text}");
    }
    Ok(())
}

/// Three accounts of 250 records, and a destination that refuses acc_b's 131st record (at
/// index 130) whatever batch holds it. Returns what was expected, that record's id, and
/// the destination.
async fn seed_with_a_refused_record<S: ChainedStore>(
    store: &S,
) -> TestResult<(BTreeMap<String, Vec<Uuid>>, Uuid, Recorder)> {
    let expected = seed(store, &["acc_a", "acc_b", "acc_c"], 250).await?;
    let refused = expected["acc_b"][130];
    let recorder = Recorder {
        refuse: vec![refused],
        ..Recorder::default()
    };
    Ok((expected, refused, recorder))
}

/// The ids received per account, each once, in the order first received.
fn first_seen(received: &Received) -> BTreeMap<String, Vec<Uuid>> {
    let mut seen = received.ids();
    for ids in seen.values_mut() {
        let mut once = Vec::new();
        for id in ids.iter() {
            if !once.contains(id) {
                once.push(*id);
            }
        }
        *ids = once;
    }
    seen
}

async fn a_refused_record_holds_back_only_its_own_account<S: ExportPositions>(
    fx: &Fixture<S>,
) -> TestResult {
    let (expected, _, recorder) = seed_with_a_refused_record(&fx.store).await?;
    let received = recorder.received.clone();
    let job = job(fx.store.clone(), recorder)?;
    let status = job.status();
    let held = status.clone();
    // The other accounts whole, acc_b up to the refused record, and the record refused alone.
    run_until(job, &received, move |r| {
        let ids = r.ids();
        ids.get("acc_a").map_or(0, Vec::len) == 250
            && ids.get("acc_c").map_or(0, Vec::len) == 250
            && ids.get("acc_b").map_or(0, Vec::len) == 130
            && held.snapshot().held_accounts == 1
    })
    .await?;
    let seen = first_seen(&received);
    assert_eq!(seen["acc_a"], expected["acc_a"]);
    assert_eq!(seen["acc_c"], expected["acc_c"]);
    assert_eq!(
        seen["acc_b"],
        expected["acc_b"][..130],
        "acc_b's records before the refused one, in order; none after it"
    );
    assert_eq!(received.ids(), seen, "nothing taken twice");
    let metrics = status.snapshot();
    assert!(
        metrics.refused_attempts >= 2,
        "the batch narrowed, then the record alone refused: {metrics:?}"
    );
    assert_eq!((metrics.skipped_records, metrics.held_accounts), (0, 1));
    assert!(metrics.lag_ms > 0, "behind since the refused record");
    let positions = fx.store.export_positions("siem").await?;
    let b = positions
        .iter()
        .find(|p| p.account_id == "acc_b")
        .ok_or("no position of acc_b")?;
    assert_eq!(b.delivered.map(|p| p.id), Some(expected["acc_b"][129]));
    Ok(())
}

async fn a_record_refused_alone_is_skipped_by_a_job_that_skips<S: ExportPositions>(
    fx: &Fixture<S>,
) -> TestResult {
    let (expected, refused, recorder) = seed_with_a_refused_record(&fx.store).await?;
    let received = recorder.received.clone();
    let job = job(fx.store.clone(), recorder)?.skip_refused_after(2);
    let status = job.status();
    run_until(job, &received, |r| total(&r.ids()) >= 749).await?;
    let mut without = expected.clone();
    without
        .get_mut("acc_b")
        .ok_or("acc_b")?
        .retain(|id| *id != refused);
    assert_eq!(received.ids(), without, "everything else, once, in order");
    let metrics = status.snapshot();
    assert_eq!((metrics.skipped_records, metrics.held_accounts), (1, 0));
    Ok(())
}

async fn a_destination_refusing_everything_makes_nothing_skipped<S: ExportPositions>(
    fx: &Fixture<S>,
) -> TestResult {
    seed(&fx.store, &["acc_a", "acc_b"], 20).await?;
    let recorder = Recorder {
        refuse_all: true,
        ..Recorder::default()
    };
    let received = recorder.received.clone();
    let job = job(fx.store.clone(), recorder)?.skip_refused_after(1);
    let status = job.status();
    let watched = status.clone();
    // Both accounts narrowed down to their first record and refused alone, again and again.
    run_until(job, &received, move |_| {
        watched.snapshot().refused_attempts >= 2 * (5 + 3)
    })
    .await?;
    assert!(received.batches().is_empty());
    let metrics = status.snapshot();
    assert_eq!((metrics.skipped_records, metrics.held_accounts), (0, 2));
    for position in fx.store.export_positions("siem").await? {
        assert_eq!(position.delivered, None, "{position:?}");
    }
    Ok(())
}

/// The settle time is measured on the clock that stamps `committed_ms` (the database
/// server's, for PostgreSQL), not the app's: it reads a moment after a fresh commit.
async fn the_jobs_clock_is_the_one_that_stamps_commits<S: ExportPositions>(
    fx: &Fixture<S>,
) -> TestResult {
    let before = fx.store.clock_ms().await?;
    let record = record(Some("acc_a"), BASE_MS);
    fx.store
        .insert(&rows(std::slice::from_ref(&record))?)
        .await?;
    let after = fx.store.clock_ms().await?;
    let query = audit_store::model::CommitQuery {
        account_id: "acc_a".into(),
        since_ms: 0,
        filters: Vec::new(),
        after: None,
        through: CommitPosition {
            committed_ms: i64::MAX,
            time_ms: i64::MAX,
            id: Uuid::max(),
        },
        limit: 10,
        max_bytes: None,
    };
    let page = fx.store.commit_page(&query).await?;
    let committed = page
        .first()
        .ok_or("the record was not read")?
        .at
        .committed_ms;
    assert!(
        before <= committed && committed <= after,
        "stamped {committed}, clock {before} then {after}"
    );
    Ok(())
}

/// A store whose commit clock runs an hour behind the app's (as a database server's may).
#[derive(Clone)]
struct ClockBehind;

impl audit_store::store::intercept::Interceptor for ClockBehind {
    async fn clock_ms<S: ExportPositions>(&self, inner: &S) -> audit_store::Result<i64> {
        Ok(inner.clock_ms().await? - 3_600_000)
    }
}

/// Records committed a moment ago on the store's clock wait out the settle time on that
/// clock, whatever the app's clock says: a job with a settle time of a minute, over a store
/// whose clock is an hour behind the app's, reads nothing of records committed now; the same
/// job over the store's own clock reads them once they are a minute old.
async fn the_settle_time_is_measured_on_the_stores_clock<S: ExportPositions>(
    fx: &Fixture<S>,
) -> TestResult {
    use audit_store::store::intercept::Intercepted;

    seed(&fx.store, &["acc_a"], 10).await?;
    // The records' commits, an hour and a half ago on the app's clock: settled by an hour on
    // the app's clock, not yet on the store's (then an hour behind).
    fx.db
        .exec("UPDATE audit_logs SET committed_ms = committed_ms - 5400000")
        .await?;
    let behind = Intercepted::new(fx.store.clone(), ClockBehind);
    let recorder = Recorder::default();
    let received = recorder.received.clone();
    let job = ExportJob::new("siem", behind, recorder)?
        .settle(Duration::from_secs(3_600))
        .poll_interval(Duration::from_millis(20));
    let running = common::RunningJob::spawn(job);
    let status = running.status.clone();
    tokio::time::sleep(Duration::from_millis(300)).await;
    running.stop().await?;
    assert!(
        received.batches().is_empty(),
        "read before they settled on the store's clock"
    );
    assert_eq!(status.snapshot().read_errors, 0);
    // The same records and settle time over the store's own clock: settled.
    let recorder = Recorder::default();
    let received = recorder.received.clone();
    let job = ExportJob::new("siem", fx.store.clone(), recorder)?
        .settle(Duration::from_secs(3_600))
        .poll_interval(Duration::from_millis(20));
    run_until(job, &received, |r| total(&r.ids()) >= 10).await?;
    Ok(())
}

/// A held account whose records are then deleted (retention, an operator) is no longer
/// counted as held nor as behind.
async fn a_hold_whose_records_are_gone_is_forgotten<S: ExportPositions>(
    fx: &Fixture<S>,
) -> TestResult {
    let expected = seed(&fx.store, &["acc_a"], 20).await?;
    let recorder = Recorder {
        refuse: vec![expected["acc_a"][5]],
        ..Recorder::default()
    };
    let running = common::RunningJob::spawn(job(fx.store.clone(), recorder)?);
    let status = running.status.clone();
    common::eventually("acc_a held", || status.snapshot().held_accounts == 1).await?;
    fx.db
        .exec("DELETE FROM audit_logs WHERE account_id = 'acc_a'")
        .await?;
    common::eventually("the hold forgotten", || {
        let m = status.snapshot();
        (m.held_accounts, m.lag_ms) == (0, 0)
    })
    .await?;
    running.stop().await
}
