//! Alert rules end to end: committed records read by an alert job, a signed webhook
//! notification to a real receiver (axum on a local port), and the notification recorded in
//! the account's log as a system event through the pipeline.

mod common;
mod receiver;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use audit_layer::record::{ActionResult, AuditRecord, Timestamp};
use audit_store::SqliteStore;
use audit_store::alert::{Alerts, rules_from_yaml};
use audit_store::export::{ExportJob, HttpDestination, Secret};
use audit_store::model::{Column, ColumnFilter, FilterValue, RecordQuery, StoredRecord};
use audit_store::pipeline::IngestSink;
use audit_store::store::AuditStore as _;
use common::{RunningJob, TestResult, fast, record, start, stop, time_limit};
use receiver::{Receiver, Shared};
use tokio::task::JoinHandle;

const SECRET: &str = "alert-secret-canary-19";

const RULES: &str = "
rules:
  - name: failed-logins
    filter: { action_type: login, action_result: failure }
    group_by: actor_email
    threshold: 5
    window: 5m
";

/// A failed login of `email` at `time_ms`.
fn failed_login(email: &str, time_ms: i64) -> TestResult<AuditRecord> {
    let mut r = record(Some("acc_1"), time_ms);
    r.action.kind = "login".parse()?;
    r.action.result = ActionResult::Failure;
    r.raw.status_code = Some(401);
    r.actor.email = Some(email.to_owned());
    r.actor.id = None;
    Ok(r)
}

/// A store in `dir` with its pipeline running, and a receiver of notifications signed by
/// [`SECRET`], answering at once.
async fn start_all(
    dir: &Path,
) -> TestResult<(
    SqliteStore,
    Arc<Shared>,
    Receiver,
    IngestSink,
    JoinHandle<()>,
)> {
    let store = common::sqlite_in(dir).await?;
    let shared = Shared::new(Secret::new(SECRET), Duration::ZERO);
    let receiver = Receiver::start(Arc::clone(&shared), "127.0.0.1:0".parse()?).await?;
    let (sink, worker) = start(fast(store.clone())).await?;
    Ok((store, shared, receiver, sink, worker))
}

/// The system events in acc_1's log: the notifications recorded.
async fn system_events(store: &SqliteStore) -> TestResult<audit_store::model::Page> {
    Ok(store
        .page(&RecordQuery {
            filters: vec![ColumnFilter {
                column: Column::ActorType,
                negated: false,
                values: vec![FilterValue::Text("system".into())],
            }],
            ..RecordQuery::new("acc_1", 0, i64::MAX, 100)
        })
        .await?)
}

/// The alerts of [`RULES`], notifying `receiver` (signed) and recording each notification
/// through `sink`.
fn alerts(receiver: &Receiver, sink: &IngestSink) -> TestResult<Alerts> {
    let webhook = HttpDestination::new(&format!("http://{}/ingest", receiver.addr))?
        .secret(Secret::new(SECRET));
    Ok(Alerts::new(
        rules_from_yaml(RULES)?,
        webhook,
        Arc::new(sink.clone()),
    ))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_failed_logins_in_the_window_fire_once_four_never_and_the_notice_is_logged()
-> TestResult {
    time_limit(Duration::from_secs(20), async {
        let dir = tempfile::tempdir()?;
        let (store, shared, receiver, sink, worker) = start_all(dir.path()).await?;

        let now = Timestamp::now().unix_millis() - 60_000;
        let mut records = Vec::new();
        // alice: five within the window, then a sixth still within it: one notification.
        for i in 0..6 {
            records.push(failed_login("alice@example.com", now + i * 10_000)?);
        }
        // bob: four within the window, the fifth after it has passed: none.
        for i in 0..4 {
            records.push(failed_login("bob@example.com", now - 900_000 + i * 10_000)?);
        }
        records.push(failed_login("bob@example.com", now - 900_000 + 301_000)?);
        // carol: five logins, but one succeeded: none.
        for i in 0..5 {
            let mut r = failed_login("carol@example.com", now + i)?;
            if i == 2 {
                r.action.result = ActionResult::Success;
            }
            records.push(r);
        }
        let rows = common::rows(&records)?;
        store.insert(&rows).await?;

        let alerts = alerts(&receiver, &sink)?;
        let job = ExportJob::new("alerts", store.clone(), alerts)?
            .settle(Duration::ZERO)
            .batch_records(3)
            .poll_interval(Duration::from_millis(20));
        let status = job.status();
        sink.report_export(&status);
        let job = RunningJob::spawn(job);
        common::eventually("the job to read every record", || {
            status.snapshot().delivered_records >= rows.len() as u64
        })
        .await?;
        // The system event is written through the pipeline, and read by the job in turn.
        tokio::time::sleep(Duration::from_millis(300)).await;
        job.stop().await?;
        let metrics = stop(&sink, worker).await?;
        receiver.stop().await;
        // The job's counters are in the pipeline's metrics and its Prometheus text.
        assert_eq!(metrics.exports.len(), 1);
        assert!(metrics.exports[0].delivered_records >= rows.len() as u64);
        assert!(
            metrics
                .to_prometheus()
                .contains("audit_export_consecutive_failures{job=\"alerts\"} 0"),
        );

        assert_eq!(
            shared.bad.load(std::sync::atomic::Ordering::Relaxed),
            0,
            "signed"
        );
        let deliveries = shared.deliveries();
        assert_eq!(deliveries.len(), 1, "{deliveries:#?}");
        let notice: serde_json::Value = serde_json::from_str(&deliveries[0].lines[0])?;
        assert_eq!(notice["rule"], "failed-logins");
        assert_eq!(notice["group"], "alice@example.com");
        assert_eq!(notice["count"], 5);
        let fired: Vec<String> = records[..5].iter().map(|r| r.id.to_string()).collect();
        assert_eq!(notice["record_ids"], serde_json::json!(fired));
        assert_eq!(deliveries[0].idempotency_key, notice["notification_id"]);

        // In the account's log: one system event of the notification.
        let page = system_events(&store).await?;
        assert_eq!(page.rows.len(), 1);
        let event: serde_json::Value = serde_json::from_str(&page.rows[0].record)?;
        assert_eq!(event["actor"]["type"], "system");
        assert_eq!(event["resource"]["type"], "notifications");
        assert_eq!(event["resource"]["id"], notice["notification_id"]);
        assert_eq!(event["resource"]["request"]["group"], "alice@example.com");
        assert!(!page.rows[0].record.contains(SECRET));
        Ok(())
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_notification_is_retried_under_its_key_without_counting_twice() -> TestResult {
    time_limit(Duration::from_secs(20), async {
        let dir = tempfile::tempdir()?;
        let (store, shared, receiver, sink, worker) = start_all(dir.path()).await?;
        shared.set_mode(receiver::Mode::Error);
        let now = Timestamp::now().unix_millis() - 60_000;
        let rows: Vec<StoredRecord> = (0..5)
            .map(|i| -> TestResult<StoredRecord> {
                Ok(StoredRecord::from_record(&failed_login(
                    "dave@example.com",
                    now + i,
                )?)?)
            })
            .collect::<TestResult<_>>()?;
        store.insert(&rows).await?;
        let alerts = alerts(&receiver, &sink)?;
        let job = ExportJob::new("alerts", store.clone(), alerts)?
            .settle(Duration::ZERO)
            .poll_interval(Duration::from_millis(20))
            .backoff(Duration::from_millis(10), Duration::from_millis(30));
        let status = job.status();
        let job = RunningJob::spawn(job);
        // Retry-After: 1 from the failing receiver, capped at the job's 30 ms.
        common::eventually("failed attempts", || status.snapshot().failed_attempts >= 3).await?;
        shared.set_mode(receiver::Mode::Ok);
        common::eventually("the notification", || !shared.deliveries().is_empty()).await?;
        tokio::time::sleep(Duration::from_millis(200)).await;
        job.stop().await?;
        stop(&sink, worker).await?;
        receiver.stop().await;
        let deliveries = shared.deliveries();
        assert_eq!(deliveries.len(), 1);
        let notice: serde_json::Value = serde_json::from_str(&deliveries[0].lines[0])?;
        assert_eq!(
            notice["count"], 5,
            "the retried batch was not counted again"
        );
        Ok(())
    })
    .await
}

/// A notification the webhook refuses for what it holds (a group value chosen by whoever
/// made the records) is given up after a few refusals and recorded as failed; it does not
/// hold back the others.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_notification_is_given_up_and_recorded_without_holding_back_others() -> TestResult
{
    time_limit(Duration::from_secs(20), async {
        let dir = tempfile::tempdir()?;
        let (store, shared, receiver, sink, worker) = start_all(dir.path()).await?;
        shared.refuse("mallory@");
        let now = Timestamp::now().unix_millis() - 60_000;
        let mut records = Vec::new();
        // mallory's group fires first, then dave's.
        for email in ["mallory@evil.example", "dave@example.com"] {
            for i in 0..5 {
                records.push(failed_login(email, now + i)?);
            }
        }
        store.insert(&common::rows(&records)?).await?;
        let alerts = alerts(&receiver, &sink)?;
        let job = ExportJob::new("alerts", store.clone(), alerts)?
            .settle(Duration::ZERO)
            .poll_interval(Duration::from_millis(20))
            .backoff(Duration::from_millis(5), Duration::from_millis(20));
        let job = RunningJob::spawn(job);
        common::eventually("dave's notification", || !shared.deliveries().is_empty()).await?;
        tokio::time::sleep(Duration::from_millis(300)).await;
        job.stop().await?;
        stop(&sink, worker).await?;
        receiver.stop().await;
        let deliveries = shared.deliveries();
        assert_eq!(deliveries.len(), 1, "{deliveries:#?}");
        let notice: serde_json::Value = serde_json::from_str(&deliveries[0].lines[0])?;
        assert_eq!(notice["group"], "dave@example.com");
        let page = system_events(&store).await?;
        let mut results: Vec<(String, String)> = page
            .rows
            .iter()
            .map(|row| -> TestResult<(String, String)> {
                let event: serde_json::Value = serde_json::from_str(&row.record)?;
                Ok((
                    event["resource"]["request"]["group"].to_string(),
                    event["action"]["result"].to_string(),
                ))
            })
            .collect::<TestResult<_>>()?;
        results.sort();
        assert_eq!(
            results,
            [
                ("\"dave@example.com\"".into(), "\"success\"".into()),
                ("\"mallory@evil.example\"".into(), "\"failure\"".into()),
            ]
        );
        let given_up = page
            .rows
            .iter()
            .find(|row| row.record.contains("mallory@"))
            .ok_or("no record of the refused notification")?;
        assert!(
            given_up.record.contains("refused it 3 times"),
            "{}",
            given_up.record
        );
        assert!(given_up.record.contains("413"), "{}", given_up.record);
        Ok(())
    })
    .await
}

/// Windows are over action times, records come in commit order: a failed login committed
/// after the job read the others, whose time is older than theirs but within their window,
/// completes it; one whose window has long passed (an hour old) does not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_login_committed_late_counts_in_its_open_window_and_not_in_a_passed_one()
-> TestResult {
    time_limit(Duration::from_secs(20), async {
        let dir = tempfile::tempdir()?;
        let (store, shared, receiver, sink, worker) = start_all(dir.path()).await?;
        let now = Timestamp::now().unix_millis() - 60_000;
        let mut first = Vec::new();
        for i in 0..4 {
            first.push(failed_login("dave@example.com", now + i * 1_000)?);
            first.push(failed_login("erin@example.com", now + i * 1_000)?);
        }
        store.insert(&common::rows(&first)?).await?;

        let alerts = alerts(&receiver, &sink)?;
        let job = ExportJob::new("alerts", store.clone(), alerts)?
            .settle(Duration::ZERO)
            .poll_interval(Duration::from_millis(20));
        let status = job.status();
        let job = RunningJob::spawn(job);
        common::eventually("the job to read the first eight", || {
            status.snapshot().delivered_records >= 8
        })
        .await?;
        assert!(shared.deliveries().is_empty(), "four each: nothing yet");
        // dave's fifth, 10 s before his first; erin's fifth, an hour before hers.
        let late = [
            failed_login("dave@example.com", now - 10_000)?,
            failed_login("erin@example.com", now - 3_600_000)?,
        ];
        store.insert(&common::rows(&late)?).await?;
        common::eventually("the job to read the late two", || {
            status.snapshot().delivered_records >= 10
        })
        .await?;
        tokio::time::sleep(Duration::from_millis(300)).await;
        job.stop().await?;
        stop(&sink, worker).await?;
        receiver.stop().await;
        let deliveries = shared.deliveries();
        assert_eq!(deliveries.len(), 1, "{deliveries:#?}");
        let notice: serde_json::Value = serde_json::from_str(&deliveries[0].lines[0])?;
        assert_eq!(notice["group"], "dave@example.com");
        Ok(())
    })
    .await
}
