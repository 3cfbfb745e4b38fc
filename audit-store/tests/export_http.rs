//! The HTTP destination against a real receiver (axum on a local port) that fails in every
//! way a SIEM's endpoint does: errors, slowness, reset connections, and down across a restart
//! of the exporter. Each phase lasts about a second (the 30 s shortened: the backoff
//! and timeouts are scaled down with it).

mod common;
mod receiver;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use audit_layer::record::Timestamp;
use audit_store::SqliteStore;
use audit_store::export::{ExportJob, HttpDestination, Secret};
use audit_store::store::AuditStore as _;
use common::{RunningJob, TestResult, record, time_limit};
use receiver::{Mode, Receiver, Shared};
use tokio::sync::oneshot;
use uuid::Uuid;

const SECRET: &str = "whsec-canary-7f3a91";
const URL_TOKEN: &str = "urltoken-canary-55e2";

/// Starts an export job of every account to `url`, with timeouts and backoff scaled to the
/// test's phases.
fn start_exporter(store: SqliteStore, url: &str) -> TestResult<RunningJob> {
    let destination = HttpDestination::new(url)?
        .secret(Secret::new(SECRET))
        .timeout(Duration::from_millis(300));
    let job = ExportJob::new("siem", store, destination)?
        .batch_records(40)
        .settle(Duration::from_millis(300))
        .poll_interval(Duration::from_millis(50))
        .backoff(Duration::from_millis(20), Duration::from_millis(300));
    Ok(RunningJob::spawn(job))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_committed_record_arrives_in_order_through_errors_slowness_resets_and_a_restart()
-> TestResult {
    time_limit(Duration::from_secs(40), async {
        let dir = tempfile::tempdir()?;
        let store = common::sqlite_in(dir.path()).await?;
        let shared = Shared::new(Secret::new(SECRET), Duration::from_millis(600));
        let receiver = Receiver::start(Arc::clone(&shared), "127.0.0.1:0".parse()?).await?;
        let addr = receiver.addr;
        let url = format!("http://{addr}/ingest?token={URL_TOKEN}");

        // Records are committed all along, in three accounts.
        let (stop_writing, mut writing_stopped) = oneshot::channel::<()>();
        let writer = {
            let store = store.clone();
            tokio::spawn(async move {
                let mut written: Vec<(String, i64, Uuid)> = Vec::new();
                let mut i = 0usize;
                loop {
                    if writing_stopped.try_recv().is_ok() {
                        return Ok::<_, audit_store::StoreError>(written);
                    }
                    let account = ["acc_a", "acc_b", "acc_c"][i % 3];
                    let r = record(Some(account), Timestamp::now().unix_millis());
                    written.push((account.to_owned(), r.action.time.unix_millis(), r.id));
                    store
                        .insert(&[audit_store::model::StoredRecord::from_record(&r)?])
                        .await?;
                    i += 1;
                    tokio::time::sleep(Duration::from_millis(4)).await;
                }
            })
        };

        let exporter = start_exporter(store.clone(), &url)?;
        let status = exporter.status.clone();
        let mut phases = Vec::new();
        for mode in [
            Mode::Ok,
            Mode::Error,
            Mode::Ok,
            Mode::Slow,
            Mode::Ok,
            Mode::Reset,
            Mode::Ok,
        ] {
            shared.set_mode(mode);
            tokio::time::sleep(Duration::from_millis(1000)).await;
            phases.push((mode, status.snapshot().failed_attempts));
        }
        // Stopped across a restart of the exporter.
        receiver.stop().await;
        tokio::time::sleep(Duration::from_millis(700)).await;
        exporter.stop().await?;
        let failed_before_restart = status.snapshot();
        let exporter = start_exporter(store.clone(), &url)?;
        let status = exporter.status.clone();
        tokio::time::sleep(Duration::from_millis(700)).await;
        let down = status.snapshot();
        assert!(
            down.consecutive_failures > 0,
            "failing while down: {down:?}"
        );
        assert!(down.lag_ms > 0, "and behind: {down:?}");
        let _ = stop_writing.send(());
        let written = writer.await??;
        shared.set_mode(Mode::Ok);
        let receiver = Receiver::start(Arc::clone(&shared), addr).await?;

        // Everything arrives.
        let mut expected: BTreeMap<String, Vec<(i64, Uuid)>> = BTreeMap::new();
        for (account, time, id) in &written {
            expected
                .entry(account.clone())
                .or_default()
                .push((*time, *id));
        }
        for ids in expected.values_mut() {
            ids.sort();
        }
        let want: usize = expected.values().map(Vec::len).sum();
        let mut waited = Duration::ZERO;
        loop {
            let got: std::collections::HashSet<String> = shared
                .deliveries()
                .iter()
                .flat_map(|d| d.lines.clone())
                .collect();
            if got.len() >= want {
                break;
            }
            assert!(
                waited < Duration::from_secs(15),
                "{} of {want} records after 15 s",
                got.len()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
            waited += Duration::from_millis(50);
        }
        exporter.stop().await?;
        receiver.stop().await;

        assert_eq!(
            shared.bad.load(Ordering::Relaxed),
            0,
            "every delivery gzipped and signed"
        );
        // Every committed record arrived, in order per account (counting each once, where it
        // first arrived).
        let deliveries = shared.deliveries();
        let mut arrived: BTreeMap<String, Vec<(i64, Uuid)>> = BTreeMap::new();
        let mut keys_of: HashMap<Uuid, Vec<(String, Vec<String>)>> = HashMap::new();
        for delivery in &deliveries {
            for line in &delivery.lines {
                let value: serde_json::Value = serde_json::from_str(line)?;
                let id: Uuid = value["id"].as_str().ok_or("id")?.parse()?;
                let time = value["action"]["time"]
                    .as_str()
                    .ok_or("time")?
                    .parse::<Timestamp>()?
                    .unix_millis();
                let account = value["account"]["id"].as_str().ok_or("account")?.to_owned();
                let seen = keys_of.entry(id).or_default();
                if seen.is_empty() {
                    arrived.entry(account).or_default().push((time, id));
                }
                seen.push((delivery.idempotency_key.clone(), delivery.lines.clone()));
            }
        }
        assert_eq!(arrived, expected);
        // A record arrived twice only in a batch sent again: the same key, the same records.
        let mut duplicated = 0;
        for copies in keys_of.values().filter(|c| c.len() > 1) {
            duplicated += 1;
            assert!(
                copies.iter().all(|c| c == &copies[0]),
                "a duplicate outside a retried batch: {copies:?}"
            );
        }
        // The slow phase lost answers the receiver had taken: those batches came again.
        assert!(duplicated > 0, "no batch was retried after a lost answer");
        let after = status.snapshot();
        assert_eq!(after.consecutive_failures, 0);
        assert_eq!(after.lag_ms, 0);
        // Each misbehaving phase failed attempts (a good phase may see the last failure of
        // an attempt begun before it).
        for pair in phases.windows(2) {
            let ((_, before), (mode, failed)) = (pair[0], pair[1]);
            assert!(
                mode == Mode::Ok || failed > before,
                "phase {mode:?}: {phases:?}"
            );
        }
        // The secret and the URL's token appear in no error the job reported.
        for snapshot in [&failed_before_restart, &down, &after] {
            let text = format!("{snapshot:?}");
            assert!(
                !text.contains(SECRET) && !text.contains(URL_TOKEN),
                "{text}"
            );
        }
        Ok(())
    })
    .await
}

/// A `tracing` writer into a shared buffer.
#[derive(Clone, Default)]
struct Captured(Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn the_secret_and_tokens_never_reach_logs_errors_or_debug_output() -> TestResult {
    const TOKEN: &str = "Bearer hec-canary-0c1d";
    let dir = tempfile::tempdir()?;
    let store = common::sqlite_in(dir.path()).await?;
    store
        .insert(&common::rows(&[record(Some("acc_a"), 1_000)])?)
        .await?;
    // A port nothing listens on, then one that answers 500, then one that is slow.
    let shared = Shared::new(Secret::new(SECRET), Duration::from_millis(400));
    shared.set_mode(Mode::Error);
    let receiver = Receiver::start(Arc::clone(&shared), "127.0.0.1:0".parse()?).await?;
    let closed = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await?
        .local_addr()?;
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(move || writer.clone())
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);
    let mut reported = String::new();
    for (addr, mode) in [
        (closed, Mode::Error),
        (receiver.addr, Mode::Error),
        (receiver.addr, Mode::Slow),
    ] {
        shared.set_mode(mode);
        let url = format!("http://{addr}/ingest?token={URL_TOKEN}");
        let destination = HttpDestination::new(&url)?
            .secret(Secret::new(SECRET))
            .authorization(Secret::new(TOKEN))
            .timeout(Duration::from_millis(200));
        reported.push_str(&format!("{destination:?}"));
        let job = ExportJob::new("siem", store.clone(), destination)?
            .settle(Duration::ZERO)
            .backoff(Duration::from_millis(10), Duration::from_millis(50));
        reported.push_str(&format!("{job:?}"));
        let status = job.status();
        let job = RunningJob::spawn(job);
        tokio::time::sleep(Duration::from_millis(500)).await;
        job.stop().await?;
        let snapshot = status.snapshot();
        assert!(snapshot.failed_attempts > 0, "{snapshot:?}");
        reported.push_str(&format!("{snapshot:?}{}", snapshot.to_prometheus()));
    }
    receiver.stop().await;
    let logs = String::from_utf8_lossy(
        &captured
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner),
    )
    .into_owned();
    assert!(logs.contains("export delivery failed"), "{logs}");
    for text in [&logs, &reported] {
        for canary in [SECRET, URL_TOKEN, "hec-canary"] {
            assert!(!text.contains(canary), "{canary} in: {text}");
        }
    }
    Ok(())
}

/// A redirect is never followed: a 301 would make the POST a GET without its body (and its
/// 200 a delivery nobody received), a 307 would send the signed records wherever the answer
/// points. Either is a failed attempt, retried at the configured URL.
#[tokio::test]
async fn a_redirect_is_a_failed_delivery_never_followed() -> TestResult {
    use std::sync::atomic::AtomicU64;

    use audit_store::export::Destination as _;
    use axum::http::{StatusCode, header};
    use axum::response::IntoResponse as _;

    // Elsewhere: counts every request that reaches it.
    let elsewhere_hits = Arc::new(AtomicU64::new(0));
    let hits = Arc::clone(&elsewhere_hits);
    let count = move || {
        let hits = Arc::clone(&hits);
        async move {
            hits.fetch_add(1, Ordering::SeqCst);
            StatusCode::OK
        }
    };
    let elsewhere = axum::Router::new().fallback(count);
    let elsewhere_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let elsewhere_addr = elsewhere_listener.local_addr()?;
    tokio::spawn(async move { axum::serve(elsewhere_listener, elsewhere).await });

    // The configured URL: `/moved` answers 301 to a path of its own (whose GET is a 200),
    // `/temporary` 307 to the other server.
    let to_other = format!("http://{elsewhere_addr}/stolen");
    let here = axum::Router::new()
        .route(
            "/moved",
            axum::routing::post(|| async {
                (
                    StatusCode::MOVED_PERMANENTLY,
                    [(header::LOCATION, "/moved/")],
                )
                    .into_response()
            }),
        )
        .route("/moved/", axum::routing::get(|| async { StatusCode::OK }))
        .route(
            "/temporary",
            axum::routing::post(move || {
                let to_other = to_other.clone();
                async move {
                    (
                        StatusCode::TEMPORARY_REDIRECT,
                        [(header::LOCATION, to_other)],
                    )
                        .into_response()
                }
            }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move { axum::serve(listener, here).await });

    let batch = one_record_batch();
    for (path, status) in [
        ("moved", "301 Moved Permanently"),
        ("temporary", "307 Temporary Redirect"),
    ] {
        let destination =
            HttpDestination::new(&format!("http://{addr}/{path}"))?.secret(Secret::new(SECRET));
        let failed = destination
            .deliver(&batch)
            .await
            .expect_err("a redirect is not a delivery");
        let message = failed.to_string();
        assert!(message.contains(status), "{message}");
        assert!(message.contains("redirects are not followed"), "{message}");
    }
    assert_eq!(
        elsewhere_hits.load(Ordering::SeqCst),
        0,
        "nothing was sent where the redirect pointed"
    );
    Ok(())
}

/// A 400, 413 or 422 refuses the batch itself (the job narrows that account's batches and goes
/// on with the others); a 401, 404, 429 or 5xx says the destination takes nothing now.
#[tokio::test]
async fn an_answer_about_the_batch_refuses_it_and_others_fail_it() -> TestResult {
    use audit_store::export::Destination as _;
    use axum::http::StatusCode;

    let answer = |status: u16| async move { StatusCode::from_u16(status).unwrap_or_default() };
    let app = axum::Router::new().route(
        "/{status}",
        axum::routing::post(
            move |axum::extract::Path(status): axum::extract::Path<u16>| answer(status),
        ),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move { axum::serve(listener, app).await });
    let batch = one_record_batch();
    for (status, refused) in [
        (400, true),
        (413, true),
        (422, true),
        (401, false),
        (404, false),
        (429, false),
        (500, false),
        (503, false),
    ] {
        let destination = HttpDestination::new(&format!("http://{addr}/{status}"))?;
        let failed = destination
            .deliver(&batch)
            .await
            .expect_err("an error status is not a delivery");
        assert_eq!(failed.is_refused(), refused, "{status}: {failed}");
        assert!(failed.to_string().contains(&status.to_string()), "{failed}");
    }
    Ok(())
}

/// A batch of one empty record, for a destination's answer alone.
fn one_record_batch() -> audit_store::export::EncodedBatch {
    audit_store::export::EncodedBatch {
        job: "siem".into(),
        account_id: "acc_1".into(),
        idempotency_key: "key-1".into(),
        first: (0, Uuid::nil()),
        last: (0, Uuid::nil()),
        records: 1,
        format: audit_store::export::Format::Ndjson,
        lines: "{}\n".into(),
        positions: vec![(0, Uuid::nil())],
    }
}
