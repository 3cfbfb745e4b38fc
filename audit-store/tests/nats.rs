//! Fleet mode against a real NATS server: a private single-node JetStream `nats-server`
//! (Debian's `/usr/sbin/nats-server`) per test, on a free port with its store in a temp dir,
//! never the machine's 127.0.0.1:4222.
//!
//! Records go app → pipeline → `NatsDestination` → stream → `Ingestor` → SQLite (and
//! PostgreSQL with `AUDIT_TEST_POSTGRES_URL`, in a schema of its own): each stored once, chains
//! verified; duplicates dropped; poison messages moved aside with a gap record; NATS down
//! → spool → replay; strict mode released only by the stream's ack; an ingestor's shutdown
//! commits and acknowledges what it took; the `audit-ingest` binary end to end.

mod common;

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use async_nats::jetstream;
use audit_layer::NotCommitted;
use audit_layer::record::AuditRecord;
use audit_store::chain::{ChainKeys, ChainSecret};
use audit_store::fleet::{FleetConfig, IngestorMetrics, NatsDestination, ingest};
use audit_store::model::StoredRecord;
use audit_store::pipeline::{self, Destination, IngestSink};
use audit_store::store::ChainedStore;
use audit_store::verify;
use common::{BASE_MS, Backend, TestResult, record};
use tokio::sync::oneshot;
use uuid::Uuid;

const NATS_SERVER: &str = "/usr/sbin/nats-server";
const LIMIT: Duration = Duration::from_secs(90);

fn keys() -> ChainKeys {
    ChainKeys::from_secret(&ChainSecret::from_bytes([23; 32]))
}

// ---------------------------------------------------------------------------------------------
// A private NATS server
// ---------------------------------------------------------------------------------------------

/// A single-node JetStream server of this test: its own port and store directory. Stopped
/// (killed) when dropped.
struct NatsServer {
    child: Option<Child>,
    port: u16,
    dir: tempfile::TempDir,
}

impl NatsServer {
    /// Starts one; `None` (after [`common::skip`]) when there is no `nats-server` here.
    async fn start() -> TestResult<Option<Self>> {
        if !Path::new(NATS_SERVER).exists() {
            common::skip(
                "a NATS test",
                &format!(
                    "{NATS_SERVER} is missing (Debian package nats-server; .ci/run installs it)"
                ),
            );
            return Ok(None);
        }
        let port = common::free_port();
        let mut server = Self {
            child: None,
            port,
            dir: tempfile::tempdir()?,
        };
        server.run().await?;
        Ok(Some(server))
    }

    fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// Starts the process (again: the same port and store) and waits until it listens.
    async fn run(&mut self) -> TestResult {
        let store: PathBuf = self.dir.path().join("js");
        let child = Command::new(NATS_SERVER)
            .args([
                "-js",
                "-a",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-sd",
            ])
            .arg(&store)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        self.child = Some(child);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            if tokio::time::Instant::now() > deadline {
                return Err(format!("nats-server did not listen on {}", self.port).into());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(())
    }

    /// Kills the process and waits for it.
    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.stop();
    }
}

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

/// A fleet on `server` with test-speed timeouts.
fn fleet(server: &NatsServer) -> TestResult<FleetConfig> {
    Ok(FleetConfig::new(&server.url())?.request_timeout(Duration::from_millis(1500)))
}

/// A destination on `server`, its stream created (JetStream may take a moment to be ready).
async fn destination(server: &NatsServer) -> TestResult<NatsDestination> {
    let destination = NatsDestination::connect(fleet(server)?)
        .await?
        .spool_keys_from(&keys());
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        match destination.ensure_stream().await {
            Ok(_) => return Ok(destination),
            Err(e) if tokio::time::Instant::now() > deadline => return Err(e.into()),
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

/// A publishing pipeline into `destination`, spooling to `spool`, with quick retries.
async fn publisher(
    destination: NatsDestination,
    spool: &Path,
) -> TestResult<(IngestSink, tokio::task::JoinHandle<()>)> {
    let (sink, pipeline) = pipeline::builder(destination)
        .flush_interval(Duration::from_millis(5))
        .retry(2, Duration::from_millis(10), Duration::from_millis(50))
        .write_timeout(Duration::from_secs(2))
        .probe_interval(Duration::from_millis(50))
        .spool(spool, 16 << 20)
        .build()
        .await?;
    Ok((sink, tokio::spawn(pipeline.run())))
}

/// A running ingestor into `store`; send on the returned sender to shut it down.
struct Running {
    stop: oneshot::Sender<()>,
    task: tokio::task::JoinHandle<audit_store::Result<IngestorMetrics>>,
    monitor: audit_store::fleet::IngestorMonitor,
}

impl Running {
    async fn stop(self) -> TestResult<IngestorMetrics> {
        let _ = self.stop.send(());
        Ok(self.task.await??)
    }
}

async fn ingestor<S: ChainedStore>(store: S, server: &NatsServer) -> TestResult<Running> {
    ingestor_with(ingest::builder(store, fleet(server)?)).await
}

async fn ingestor_with<S: ChainedStore>(
    builder: ingest::IngestorBuilder<S>,
) -> TestResult<Running> {
    let ingestor = builder
        .pipeline(|p| p.flush_interval(Duration::from_millis(5)))
        .shutdown_timeout(Duration::from_secs(20))
        .connect()
        .await?;
    let monitor = ingestor.monitor();
    let (stop, stopped) = oneshot::channel();
    let task = tokio::spawn(ingestor.run(async {
        let _ = stopped.await;
    }));
    Ok(Running {
        stop,
        task,
        monitor,
    })
}

/// Waits (polling, up to 30 s) until `check` holds.
async fn until(what: &str, mut check: impl AsyncFnMut() -> TestResult<bool>) -> TestResult {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while !check().await? {
        if tokio::time::Instant::now() > deadline {
            return Err(format!("timed out waiting for {what}").into());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}

async fn jetstream_of(server: &NatsServer) -> TestResult<jetstream::Context> {
    Ok(jetstream::new(async_nats::connect(server.url()).await?))
}

/// Messages the stream `name` holds now.
async fn messages_in(js: &jetstream::Context, name: &str) -> TestResult<u64> {
    Ok(js.get_stream(name).await?.get_info().await?.state.messages)
}

/// Records the stream `name` holds now: its messages carry one per line.
async fn records_in(js: &jetstream::Context, name: &str) -> TestResult<u64> {
    let stream = js.get_stream(name).await?;
    let state = stream.clone().get_info().await?.state;
    let mut records = 0;
    for seq in state.first_sequence..=state.last_sequence {
        if let Ok(message) = stream.get_raw_message(seq).await {
            records += 1 + message.payload.iter().filter(|&&b| b == b'\n').count() as u64;
        }
    }
    Ok(records)
}

/// How many records a gap record reports lost.
fn lost_in(gap: &str) -> u64 {
    let at = gap
        .find(" audit records were lost")
        .unwrap_or_else(|| panic!("not a gap record: {gap}"));
    let digits = gap[..at]
        .rsplit(|c: char| !c.is_ascii_digit())
        .next()
        .unwrap_or_default();
    digits
        .parse()
        .unwrap_or_else(|_| panic!("no count in {gap}"))
}

/// Waits until the ingestor took `records` records and settled every one of them (committed,
/// skipped as duplicates, or moved aside, and their messages acknowledged).
async fn until_settled(monitor: &audit_store::fleet::IngestorMonitor, records: u64) -> TestResult {
    until("every record settled", async || {
        let m = monitor.metrics();
        Ok(m.records == records && m.in_flight == 0)
    })
    .await
}

/// `n` records over five accounts (and some without one), times from `BASE_MS` on.
fn records(n: usize) -> Vec<AuditRecord> {
    (0..n)
        .map(|i| {
            let account = match i % 6 {
                5 => None,
                k => Some(format!("acc-{k}")),
            };
            record(account.as_deref(), BASE_MS + i as i64)
        })
        .collect()
}

/// Every chain of `store` verifies.
async fn chains_verify<S: ChainedStore>(store: &S) -> TestResult {
    let reports = verify::verify_all(store, &keys().verifier(), &[]).await?;
    assert!(!reports.is_empty());
    for report in reports {
        assert!(report.ok, "{report:?}");
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Round trip, on both backends
// ---------------------------------------------------------------------------------------------

/// Published through the pipeline (some strictly, the rest packed several to a message),
/// ten published again twice (the second time the same messages, dropped by the stream's
/// window) and one more under another message id (stored once all the same), ingested:
/// each record stored once, chains verify, the consumer has nothing pending.
async fn round_trip<S: ChainedStore>(store: S, db: &common::Db) -> TestResult {
    let Some(server) = NatsServer::start().await? else {
        return Ok(());
    };
    let spool = tempfile::tempdir()?;
    let destination = destination(&server).await?;
    let js = jetstream_of(&server).await?;
    let (sink, worker) = publisher(destination.clone(), spool.path()).await?;
    let mut all = records(120);
    // A body an app made from pretty-printed JSON: still one line, one record of its message.
    all[7].change = Some(audit_layer::record::Change {
        before: None,
        after: Some(audit_layer::record::Body::from_json(
            "{\n  \"ttl\": 300,\r\n  \"tags\": [\n    \"a\"\n  ]\n}".to_owned(),
        )?),
    });
    // Strict mode: the commit resolves once the stream holds the record.
    let strict = all[0].clone();
    sink.commit(strict).await?;
    assert_eq!(
        messages_in(&js, "AUDIT").await?,
        1,
        "acknowledged means in the stream"
    );
    for r in &all[1..] {
        audit_layer::AuditSink::submit(&sink, r.clone());
    }
    common::stop(&sink, worker).await?;
    assert_eq!(records_in(&js, "AUDIT").await?, 120);
    assert!(
        messages_in(&js, "AUDIT").await? < 60,
        "several records to a message"
    );

    // Ten records published again (packed otherwise than by the pipeline: new messages,
    // which the store skips), then that batch retried: the stream drops its messages.
    let rows: Vec<StoredRecord> = all[..10]
        .iter()
        .map(StoredRecord::from_record)
        .collect::<Result<_, _>>()?;
    assert_eq!(destination.write_rows(&rows).await?, 10);
    assert_eq!(destination.write_rows(&rows).await?, 0, "all duplicates");
    assert_eq!(records_in(&js, "AUDIT").await?, 130);
    // One under another message id (past the window, say): the store skips it.
    let mut headers = async_nats::HeaderMap::new();
    headers.insert("Nats-Msg-Id", "another-id");
    js.publish_with_headers(
        destination.config().subject(Some("acc-1")),
        headers,
        rows[1].record.clone().into(),
    )
    .await?
    .await?;
    assert_eq!(records_in(&js, "AUDIT").await?, 131);
    let messages = messages_in(&js, "AUDIT").await?;

    let running = ingestor(store.clone(), &server).await?;
    until_settled(&running.monitor, 131).await?;
    let metrics = running.stop().await?;
    assert_eq!(metrics.fetched, messages, "{metrics:?}");
    assert_eq!(metrics.acked, messages, "{metrics:?}");
    assert_eq!(metrics.pipeline.stored, 120, "{metrics:?}");
    assert_eq!(metrics.pipeline.duplicates, 11, "{metrics:?}");
    assert_eq!(metrics.dead_lettered, 0);
    assert_eq!(metrics.in_flight, 0);
    // Work-queue retention: acknowledged messages are gone from the stream.
    assert_eq!(messages_in(&js, "AUDIT").await?, 0);

    let stored = db.rows().await?;
    assert_eq!(stored.len(), 120, "each record once");
    let ids: HashSet<Uuid> = stored.iter().map(|r| r.id).collect();
    let sent: HashSet<Uuid> = all.iter().map(|r| r.id).collect();
    assert_eq!(ids, sent);
    chains_verify(&store).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_published_are_ingested_once_into_sqlite_and_chains_verify() -> TestResult {
    let fx = common::sqlite().await?;
    let store = fx.store.clone().chained(keys());
    let outcome = common::time_limit(LIMIT, round_trip(store, &fx.db)).await;
    fx.teardown().await?;
    outcome
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_published_are_ingested_once_into_postgres_and_chains_verify() -> TestResult {
    let Some(fx) = common::Postgres::setup().await? else {
        return Ok(());
    };
    let store = fx.store.clone().chained(keys());
    let outcome = common::time_limit(LIMIT, round_trip(store, &fx.db)).await;
    fx.teardown().await?;
    outcome
}

// ---------------------------------------------------------------------------------------------
// Poison
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poison_messages_go_to_the_dead_letter_subject_and_a_gap_record_reports_them() -> TestResult
{
    common::time_limit(LIMIT, async {
        let Some(server) = NatsServer::start().await? else {
            return Ok(());
        };
        let fx = common::sqlite().await?;
        let store = fx.store.clone().chained(keys());
        let destination = destination(&server).await?;
        let js = jetstream_of(&server).await?;
        let config = destination.config();
        let poison_time = "2026-01-02T03:04:05Z";
        // The longest account id the layer records (256 characters of 3 bytes each) is good.
        let widest = "日".repeat(audit_layer::record::MAX_PATH_ID_CHARS);
        let good = record(Some(&widest), BASE_MS);
        let mixed = [record(Some("acc-mixed"), BASE_MS), record(Some("acc-mixed"), BASE_MS + 1)];
        let mut large = record(Some("acc-large"), BASE_MS);
        large.resource.request = Some(serde_json::json!({"name": "x".repeat(8192)}).into());
        // An account id no layer records, and no index could hold at length: its gap record
        // goes to the log of records without an account.
        let long_id = record(Some(&"a".repeat(audit_store::model::MAX_ID_BYTES + 1)), BASE_MS);
        let payloads: Vec<(String, Vec<u8>)> = vec![
            (config.subject(None), b"not json at all".to_vec()),
            (
                config.subject(Some("acc-poison")),
                format!(r#"{{"account":{{"id":"acc-poison"}},"action":{{"time":"{poison_time}"}},"id":7}}"#)
                    .into_bytes(),
            ),
            (config.subject(Some(&widest)), serde_json::to_vec(&good)?),
            (config.subject(Some("acc-large")), serde_json::to_vec(&large)?),
            (config.subject(None), serde_json::to_vec(&long_id)?),
            // Three records in one message, the middle one poison: the other two are stored.
            (
                config.subject(Some("acc-mixed")),
                [
                    serde_json::to_vec(&mixed[0])?,
                    br#"{"account":{"id":"acc-mixed"},"id":8}"#.to_vec(),
                    serde_json::to_vec(&mixed[1])?,
                ]
                .join(&b'\n'),
            ),
            // More records than any message may carry: moved aside whole, unread.
            (
                config.subject(None),
                vec![&b"{}"[..]; audit_store::fleet::MAX_RECORDS_PER_MESSAGE + 1].join(&b'\n'),
            ),
        ];
        for (subject, payload) in payloads {
            js.publish(subject, payload.into()).await?.await?;
        }
        let running = ingestor_with(
            ingest::builder(store.clone(), fleet(&server)?).max_record_bytes(4096),
        )
        .await?;
        let monitor = running.monitor.clone();
        until("the poison moved aside and the good records stored", async || {
            let m = monitor.metrics();
            Ok(m.dead_lettered == 6 && m.acked == 7)
        })
        .await?;
        let metrics = running.stop().await?;
        assert_eq!(metrics.pipeline.stored, 3, "{metrics:?}");
        assert_eq!(metrics.fetched, 7, "{metrics:?}");
        assert_eq!(metrics.records, 9, "{metrics:?}");
        assert_eq!(messages_in(&js, "AUDIT").await?, 0, "nothing left to retry");
        let stored: HashSet<Uuid> = fx.db.rows().await?.iter().map(|r| r.id).collect();
        for id in [good.id, mixed[0].id, mixed[1].id] {
            assert!(stored.contains(&id), "{id} not stored");
        }

        // Moved aside, with headers that say why and whence.
        let mut dead = js.get_stream("AUDIT_DEAD").await?;
        let info = dead.info().await?;
        assert_eq!(info.state.messages, 6);
        // Bounded: junk sent to the stream cannot fill the servers' disks through it.
        assert_eq!(info.config.max_bytes, 1 << 30);
        assert_eq!(info.config.discard, jetstream::stream::DiscardPolicy::Old);
        let mut moved = Vec::new();
        for seq in 1..=6 {
            moved.push(dead.get_raw_message(seq).await?);
        }
        let reason = |m: &jetstream::message::StreamMessage| {
            m.headers
                .get("Audit-Dead-Reason")
                .map(|v| v.as_str().to_owned())
        };
        let mut reasons: Vec<String> = moved.iter().filter_map(reason).collect();
        reasons.sort();
        assert_eq!(
            reasons,
            [
                "id_too_long",
                "too_large",
                "too_many_records",
                "unparseable",
                "unparseable",
                "unparseable"
            ]
        );
        // The poison record of the mixed message alone, with its place in it.
        let middle = moved
            .iter()
            .find(|m| &m.payload[..] == br#"{"account":{"id":"acc-mixed"},"id":8}"#)
            .ok_or("the mixed message's poison record is moved aside alone")?;
        assert_eq!(
            middle.headers.get("Audit-Original-Record").map(|v| v.as_str()),
            Some("1")
        );
        let whole = moved
            .iter()
            .find(|m| reason(m).as_deref() == Some("too_many_records"))
            .ok_or("the message of too many records")?;
        assert!(whole.headers.get("Audit-Original-Record").is_none());
        assert_eq!(
            whole.payload.len(),
            (audit_store::fleet::MAX_RECORDS_PER_MESSAGE + 1) * 3 - 1
        );
        let first = moved
            .iter()
            .find(|m| &m.payload[..] == b"not json at all")
            .ok_or("the unparseable message is kept as it was")?;
        assert_eq!(first.subject.as_str(), "audit.dead");
        let headers = &first.headers;
        assert_eq!(
            headers.get("Audit-Original-Subject").map(|v| v.as_str()),
            Some(config.subject(None).as_str())
        );
        assert_eq!(
            headers.get("Audit-Original-Stream").map(|v| v.as_str()),
            Some("AUDIT")
        );
        assert!(headers.get("Audit-Original-Sequence").is_some());

        // Reported: in acc-poison's log (its time), in acc-large's, in acc-mixed's, and in the
        // log of records without an account (the unparseable message, the one of too many).
        let gaps = fx.db.gap_rows().await?;
        let lost: u64 = gaps.iter().map(|g| lost_in(&g.record)).sum();
        assert_eq!(lost, 6, "{gaps:?}");
        assert!(gaps.iter().all(|g| g.account_id.as_ref().is_none_or(|a| a.len() < 100)));
        assert!(gaps.iter().any(|g| g.account_id.as_deref() == Some("acc-large")));
        assert!(gaps.iter().any(|g| g.account_id.as_deref() == Some("acc-mixed")));
        let poisoned = gaps
            .iter()
            .find(|g| g.account_id.as_deref() == Some("acc-poison"))
            .ok_or("no gap record in acc-poison's log")?;
        assert!(poisoned.record.contains("1 audit records were lost"), "{}", poisoned.record);
        assert!(poisoned.record.contains("2026-01-02T03:04:05"), "{}", poisoned.record);
        assert!(gaps.iter().any(|g| g.account_id.is_none()));
        chains_verify(&store).await?;
        fx.teardown().await
    })
    .await
}

// ---------------------------------------------------------------------------------------------
// NATS down
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_spool_while_nats_is_down_and_replay_when_it_returns() -> TestResult {
    common::time_limit(LIMIT, async {
        let Some(mut server) = NatsServer::start().await? else {
            return Ok(());
        };
        let spool = tempfile::tempdir()?;
        let destination = destination(&server).await?;
        let (sink, worker) = publisher(destination, spool.path()).await?;
        server.stop();

        let all = records(40);
        for r in &all[..39] {
            audit_layer::AuditSink::submit(&sink, r.clone());
        }
        common::eventually("the records spooled", || sink.metrics().spooled == 39).await?;
        let (segments, _) = common::spool_segments(spool.path())?;
        assert!(segments > 0);
        // Strict mode: not acknowledged by the stream, so not released as committed.
        assert_eq!(
            sink.commit(all[39].clone()).await,
            Err(NotCommitted::Spooled)
        );

        server.run().await?;
        until("the spool replayed and emptied", async || {
            Ok(sink.metrics().replayed == 40 && common::spool_segments(spool.path())?.0 == 0)
        })
        .await?;
        let published = common::stop(&sink, worker).await?;
        assert_eq!(published.dropped, 0, "{published:?}");

        // A publish the client held while NATS was down may have reached the stream once it
        // came back, before the same records were replayed from the spool packed otherwise:
        // the stream may hold a record twice, the store holds each once.
        let js = jetstream_of(&server).await?;
        let in_stream = records_in(&js, "AUDIT").await?;
        assert!(in_stream >= 40, "{in_stream}");
        let fx = common::sqlite().await?;
        let store = fx.store.clone().chained(keys());
        let running = ingestor(store.clone(), &server).await?;
        until_settled(&running.monitor, in_stream).await?;
        let metrics = running.stop().await?;
        assert_eq!(metrics.pipeline.stored, 40, "{metrics:?}");
        assert_eq!(metrics.pipeline.duplicates, in_stream - 40, "{metrics:?}");
        let rows = fx.db.rows().await?;
        assert_eq!(rows.len(), 40);
        let ids: HashSet<Uuid> = rows.iter().map(|r| r.id).collect();
        assert_eq!(ids, all.iter().map(|r| r.id).collect());
        chains_verify(&store).await?;
        fx.teardown().await
    })
    .await
}

// ---------------------------------------------------------------------------------------------
// Shutdown
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ingestor_shutting_down_commits_and_acknowledges_what_it_took() -> TestResult {
    common::time_limit(LIMIT, async {
        let Some(server) = NatsServer::start().await? else {
            return Ok(());
        };
        let destination = destination(&server).await?;
        let rows: Vec<StoredRecord> = records(30)
            .iter()
            .map(StoredRecord::from_record)
            .collect::<Result<_, _>>()?;
        assert_eq!(destination.write_rows(&rows).await?, 30);

        let fx = common::sqlite().await?;
        let flaky = common::flaky_store(fx.store.clone());
        // The database holds every write: the records are taken, not committed.
        flaky.interceptor().hold();
        let running = ingestor(flaky.clone(), &server).await?;
        let monitor = running.monitor.clone();
        until("the records taken", async || {
            Ok(monitor.metrics().in_flight == 30)
        })
        .await?;
        common::eventually("a write waiting", || flaky.interceptor().waiting() > 0).await?;
        let stop = running.stop;
        let _ = stop.send(());
        // Shutting down: it waits for the commit instead of dropping the batch.
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(!running.task.is_finished());
        flaky.interceptor().release();
        let metrics = running.task.await??;
        assert_eq!(metrics.pipeline.stored, 30, "{metrics:?}");
        assert_eq!(metrics.acked, metrics.fetched, "{metrics:?}");
        assert_eq!(fx.db.rows().await?.len(), 30);

        let js = jetstream_of(&server).await?;
        let mut consumer: jetstream::consumer::PullConsumer = js
            .get_stream("AUDIT")
            .await?
            .get_consumer("audit-ingest")
            .await?;
        let info = consumer.info().await?;
        assert_eq!(info.num_ack_pending, 0, "{info:?}");
        assert_eq!(info.num_pending, 0, "{info:?}");
        assert_eq!(messages_in(&js, "AUDIT").await?, 0);
        fx.teardown().await
    })
    .await
}

/// A fleet stopped all at once (Ctrl-C in a terminal, a whole host going down): NATS gone
/// before the ingestor is told to stop. It commits and acknowledges what it took, and exits
/// without waiting for NATS to come back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ingestor_stops_promptly_when_nats_went_away_first() -> TestResult {
    common::time_limit(LIMIT, async {
        let Some(mut server) = NatsServer::start().await? else {
            return Ok(());
        };
        let destination = destination(&server).await?;
        let rows: Vec<StoredRecord> = records(10)
            .iter()
            .map(StoredRecord::from_record)
            .collect::<Result<_, _>>()?;
        assert_eq!(destination.write_rows(&rows).await?, 10);
        let fx = common::sqlite().await?;
        let running = ingestor(fx.store.clone(), &server).await?;
        let monitor = running.monitor.clone();
        until_settled(&monitor, 10).await?;

        server.stop();
        tokio::time::sleep(Duration::from_millis(300)).await;
        let started = std::time::Instant::now();
        let metrics = running.stop().await?;
        // The request timeout of `fleet()` is 1.5 s: one flush bounded by it, not for ever.
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the ingestor took {:?} to stop",
            started.elapsed()
        );
        assert_eq!(metrics.pipeline.stored, 10, "{metrics:?}");
        assert_eq!(fx.db.rows().await?.len(), 10);
        fx.teardown().await
    })
    .await
}

/// Publishes `records`, then ingests them while the database holds every write, so that
/// `in_flight` of them wait in the pipeline at once: none may be refused for want of room
/// (its message handed back for redelivery, the record counted as lost and reported by a gap
/// record that is false). Then the database takes them, and each is stored once.
async fn held_records_are_neither_refused_nor_reported_lost(
    records: Vec<AuditRecord>,
    in_flight: usize,
    configure: impl FnOnce(
        pipeline::PipelineBuilder<common::FlakyStore<audit_store::SqliteStore>>,
    )
        -> pipeline::PipelineBuilder<common::FlakyStore<audit_store::SqliteStore>>
    + Send
    + 'static,
) -> TestResult {
    let Some(server) = NatsServer::start().await? else {
        return Ok(());
    };
    let destination = destination(&server).await?;
    let n = records.len() as u64;
    let rows: Vec<StoredRecord> = records
        .iter()
        .map(StoredRecord::from_record)
        .collect::<Result<_, _>>()?;
    // Messages of up to 100 records (fewer where a batch spans subjects).
    for batch in rows.chunks(100) {
        assert_eq!(destination.write_rows(batch).await?, batch.len() as u64);
    }

    let fx = common::sqlite().await?;
    let flaky = common::flaky_store(fx.store.clone());
    flaky.interceptor().hold();
    let ingestor = ingest::builder(flaky.clone(), fleet(&server)?)
        .in_flight(in_flight)
        .batch_size(50)
        .pipeline(move |p| configure(p.flush_interval(Duration::from_millis(5))))
        .connect()
        .await?;
    let monitor = ingestor.monitor();
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(ingestor.run(async {
        let _ = stopped.await;
    }));
    // As many as fit: a group of messages is taken whole or waits.
    until("the records taken", async || {
        Ok(monitor.metrics().in_flight + 50 > in_flight as u64)
    })
    .await?;
    common::eventually("a write waiting", || flaky.interceptor().waiting() > 0).await?;
    let waiting = monitor.metrics();
    assert_eq!(waiting.redelivery_requested, 0, "{waiting:?}");
    assert_eq!(waiting.pipeline.dropped, 0, "{waiting:?}");

    flaky.interceptor().release();
    until_settled(&monitor, n).await?;
    let _ = stop.send(());
    let metrics = task.await??;
    assert_eq!(metrics.records, n, "{metrics:?}");
    assert_eq!(metrics.acked, metrics.fetched, "{metrics:?}");
    assert_eq!(metrics.redelivery_requested, 0, "{metrics:?}");
    assert_eq!(metrics.pipeline.dropped, 0, "{metrics:?}");
    assert_eq!(metrics.pipeline.gap_records, 0, "{metrics:?}");
    assert_eq!(fx.db.rows().await?.len() as u64, n);
    fx.teardown().await
}

/// Records go to the pipeline's lanes by account: when every record in flight belongs to one
/// account, its lane must still have room for them all. 3,000 in flight is more than the
/// third of the whole queue (in flight, a group, and the largest message) a lane would get
/// were the queue not sized per lane.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_of_one_account_all_in_flight_are_neither_refused_nor_reported_lost() -> TestResult
{
    let records = (0..3500)
        .map(|i| record(Some("acc-0"), BASE_MS + i))
        .collect();
    // 3,000 records in flight wait in one lane of three: a batch of 20 taken by its writer,
    // the rest queued.
    let configure = |p: pipeline::PipelineBuilder<_>| p.writers(3).batch_size(20);
    common::time_limit(
        LIMIT,
        held_records_are_neither_refused_nor_reported_lost(records, 3000, configure),
    )
    .await
}

/// Large records (bodies of 100 KiB) in flight: the pipeline's queue counts bytes too, and
/// must have room for every byte the ingestor takes (300 records, 30 MiB).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_records_in_flight_are_neither_refused_nor_reported_lost() -> TestResult {
    let body = audit_layer::record::Body::from_json(format!(
        "{{\"notes\":\"{}\"}}",
        "x".repeat(100 << 10)
    ))?;
    let records = (0..300)
        .map(|i| {
            let mut record = record(Some(&format!("acc-{}", i % 3)), BASE_MS + i);
            record.resource.request = Some(body.clone());
            record
        })
        .collect();
    let configure = |p: pipeline::PipelineBuilder<_>| p.batch_size(10);
    common::time_limit(
        LIMIT,
        held_records_are_neither_refused_nor_reported_lost(records, 300, configure),
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn while_the_database_is_down_the_ingestor_keeps_its_messages_without_redelivery()
-> TestResult {
    common::time_limit(LIMIT, async {
        let Some(server) = NatsServer::start().await? else {
            return Ok(());
        };
        let destination = destination(&server).await?;
        let rows: Vec<StoredRecord> = records(20)
            .iter()
            .map(StoredRecord::from_record)
            .collect::<Result<_, _>>()?;
        assert_eq!(destination.write_rows(&rows).await?, 20);

        let fx = common::sqlite().await?;
        let flaky = common::flaky_store(fx.store.clone());
        flaky.interceptor().set_down(true);
        let ingestor = ingest::builder(flaky.clone(), fleet(&server)?)
            .ack_wait(Duration::from_secs(1))
            .pipeline(|p| {
                p.flush_interval(Duration::from_millis(5)).retry(
                    2,
                    Duration::from_millis(10),
                    Duration::from_millis(100),
                )
            })
            .connect()
            .await?;
        let monitor = ingestor.monitor();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(ingestor.run(async {
            let _ = stopped.await;
        }));
        until("the records taken", async || {
            Ok(monitor.metrics().records == 20)
        })
        .await?;
        let taken = monitor.metrics().fetched;
        // Three times the consumer's ack_wait: without the in-progress acknowledgements
        // JetStream would have handed every message out again.
        tokio::time::sleep(Duration::from_secs(3)).await;
        let waiting = monitor.metrics();
        assert_eq!(
            (waiting.fetched, waiting.records),
            (taken, 20),
            "redelivered while the database was down: {waiting:?}"
        );
        assert_eq!(waiting.acked, 0);
        assert_eq!(waiting.in_flight, 20);
        assert!(flaky.interceptor().failures() > 0);

        flaky.interceptor().set_down(false);
        until_settled(&monitor, 20).await?;
        let _ = stop.send(());
        let metrics = task.await??;
        assert_eq!(metrics.records, 20, "{metrics:?}");
        assert_eq!(metrics.acked, taken, "{metrics:?}");
        assert_eq!(metrics.pipeline.stored, 20, "{metrics:?}");
        assert_eq!(metrics.pipeline.dropped, 0, "{metrics:?}");
        assert_eq!(fx.db.rows().await?.len(), 20);
        fx.teardown().await
    })
    .await
}

// ---------------------------------------------------------------------------------------------
// The audit-ingest binary
// ---------------------------------------------------------------------------------------------

const AUDIT_INGEST: &str = env!("CARGO_BIN_EXE_audit-ingest");

#[test]
fn audit_ingest_help_documents_every_setting_and_its_variable() -> TestResult {
    let output = Command::new(AUDIT_INGEST).arg("--help").output()?;
    assert!(output.status.success());
    let help = String::from_utf8(output.stdout)?;
    for (flag, var) in [
        ("--nats-url", "AUDIT_NATS_URL"),
        ("--database-url", "DATABASE_URL"),
        ("--chain-secret", "AUDIT_CHAIN_SECRET"),
        ("--stream", "AUDIT_STREAM"),
        ("--subject-prefix", "AUDIT_SUBJECT_PREFIX"),
        ("--consumer", "AUDIT_CONSUMER"),
        ("--dead-letter-subject", "AUDIT_DEAD_LETTER_SUBJECT"),
        ("--create-stream", "AUDIT_CREATE_STREAM"),
        ("--replicas", "AUDIT_NATS_REPLICAS"),
        ("--batch-size", "AUDIT_INGEST_BATCH_SIZE"),
        ("--in-flight", "AUDIT_INGEST_IN_FLIGHT"),
        ("--in-flight-bytes", "AUDIT_INGEST_IN_FLIGHT_BYTES"),
        ("--writers", "AUDIT_INGEST_WRITERS"),
        ("--table-prefix", "AUDIT_TABLE_PREFIX"),
        ("--schema", "AUDIT_SCHEMA"),
    ] {
        assert!(help.contains(flag), "{flag} missing from:\n{help}");
        assert!(
            help.contains(&format!("env: {var}")),
            "{var} missing from:\n{help}"
        );
    }
    Ok(())
}

#[test]
fn audit_ingest_names_a_bad_setting_and_prints_no_secret() -> TestResult {
    let run = |args: &[&str], envs: &[(&str, &str)]| -> TestResult<(i32, String)> {
        let mut command = Command::new(AUDIT_INGEST);
        command
            .args(args)
            .env_remove("AUDIT_NATS_URL")
            .env_remove("DATABASE_URL")
            .env_remove("AUDIT_CHAIN_SECRET");
        for (k, v) in envs {
            command.env(k, v);
        }
        let output = command.output()?;
        Ok((
            output.status.code().unwrap_or(-1),
            format!(
                "{}{}",
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            ),
        ))
    };
    let db = "sqlite://unused.db";
    let (code, text) = run(
        &[
            "--nats-url",
            "nats://u:hunter2@[::1",
            "--database-url",
            db,
            "--unchained",
        ],
        &[],
    )?;
    assert_eq!(code, 2, "{text}");
    assert!(text.contains("--nats-url"), "{text}");
    assert!(!text.contains("hunter2"), "{text}");
    let (code, text) = run(
        &["--nats-url", "nats://127.0.0.1:1", "--database-url", db],
        &[],
    )?;
    assert_eq!(code, 2, "{text}");
    assert!(text.contains("--chain-secret/AUDIT_CHAIN_SECRET"), "{text}");
    let (code, text) = run(
        &["--nats-url", "nats://127.0.0.1:1", "--database-url", db],
        &[("AUDIT_CHAIN_SECRET", "not-a-secret-but-private")],
    )?;
    assert_eq!(code, 2, "{text}");
    assert!(text.contains("--chain-secret/AUDIT_CHAIN_SECRET"), "{text}");
    assert!(!text.contains("not-a-secret-but-private"), "{text}");
    let (code, text) = run(
        &[
            "--nats-url",
            "nats://127.0.0.1:1",
            "--database-url",
            "mysql://x",
            "--unchained",
        ],
        &[],
    )?;
    assert_eq!(code, 2, "{text}");
    assert!(text.contains("--database-url/DATABASE_URL"), "{text}");
    let (code, text) = run(
        &[
            "--nats-url",
            "nats://127.0.0.1:1",
            "--database-url",
            db,
            "--unchained",
            "--stream",
            "A.B",
        ],
        &[],
    )?;
    assert_eq!(code, 2, "{text}");
    assert!(text.contains("'stream'"), "{text}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_ingest_ingests_until_sigterm_then_exits_cleanly() -> TestResult {
    common::time_limit(LIMIT, async {
        let Some(server) = NatsServer::start().await? else {
            return Ok(());
        };
        let dir = tempfile::tempdir()?;
        let secret = ChainSecret::from_bytes([23; 32]);
        // The secret through the environment, as an operator would.
        let db_path = dir.path().join("audit.db");
        let mut child = Command::new(AUDIT_INGEST)
            .args([
                "--nats-url",
                &server.url(),
                "--create-stream",
                "--database-url",
            ])
            .arg(format!("sqlite://{}", db_path.display()))
            .env("AUDIT_CHAIN_SECRET", secret.to_hex())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()?;
        let destination = NatsDestination::connect(fleet(&server)?).await?;
        let all = records(25);
        let rows: Vec<StoredRecord> = all
            .iter()
            .map(StoredRecord::from_record)
            .collect::<Result<_, _>>()?;
        // The ingestor creates the stream: publish once it exists.
        until("the stream", async || Ok(destination.probe().await.is_ok())).await?;
        assert_eq!(destination.write_rows(&rows).await?, 25);
        let store =
            audit_store::SqliteStore::connect_existing(&format!("sqlite://{}", db_path.display()))
                .await?
                .chained(keys());
        until("the records stored", async || {
            Ok(audit_store::store::AuditStore::count(&store).await? == 25)
        })
        .await?;
        let status = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()?;
        assert!(status.success());
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        let exit = loop {
            if let Some(exit) = child.try_wait()? {
                break exit;
            }
            if std::time::Instant::now() > deadline {
                let _ = child.kill();
                return Err("audit-ingest did not stop on SIGTERM".into());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        let output = child.wait_with_output()?;
        let stdout = String::from_utf8_lossy(&output.stdout);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(exit.success(), "{stdout}{stderr}");
        assert!(
            stdout.contains("audit-ingest: consuming stream AUDIT"),
            "{stdout}"
        );
        assert!(stdout.contains("stored 25"), "{stdout}");
        assert!(!stdout.contains(&secret.to_hex()) && !stderr.contains(&secret.to_hex()));
        chains_verify(&store).await
    })
    .await
}
