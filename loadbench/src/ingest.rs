//! `loadbench ingest ...`: the fleet's ingest side, measured in a process of its own (so that
//! its CPU is its own), into the same PostgreSQL schema as the `audit-postgres` servers.
//!
//! - Without `--baseline`: one ingestor (`audit_store::fleet::ingest`, as `audit-ingest`
//!   runs it: the durable consumer, strict-mode commits, acknowledgement after commit) until
//!   `SIGTERM`, every commit noted (when, and how old each record was: commit time minus the
//!   record's `action.time`, the request's start: the end-to-end lag).
//! - With `--baseline`: the in-process pipeline over the same store, fed the same records:
//!   every message the stream holds is read first (not timed, not consumed), then submitted to
//!   the pipeline as an app's audit layer would, and the pipeline is flushed.
//!
//! Either way it writes a report (JSON) for the driver: CPU, commits, lags, counts.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use audit_layer::AuditSink;
use audit_layer::record::AuditRecord;
use audit_store::PostgresStore;
use audit_store::fleet::{FleetConfig, ingest};
use audit_store::pipeline;
use audit_store::store::AuditStore;
use audit_store::store::intercept::Intercepted;

use crate::flags::Flags;
use crate::server::{CommitLog, CommitTimes};
use crate::usage::process_usage;
use crate::{BoxError, unix_ms};

/// What the ingest role reports when it exits, read by the driver.
#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
pub(crate) struct IngestReport {
    /// CPU (utime + stime, clock ticks) from the start of the measured part to the end.
    pub(crate) cpu_ticks: u64,
    /// When the measured part started (unix ms): the ingestor's first pull, or the
    /// baseline's first submit.
    pub(crate) started_ms: i64,
    /// Records read from the stream before the baseline's measured part.
    pub(crate) records_read: u64,
    /// Messages acknowledged (ingestor), records stored (both).
    pub(crate) acked: u64,
    pub(crate) stored: u64,
    pub(crate) dead_lettered: u64,
    /// Ingestor: messages handed back for redelivery (the pipeline refused their commit),
    /// and records its pipeline counted as dropped (each reported by a gap record). Both 0
    /// in a healthy run.
    #[serde(default)]
    pub(crate) redelivered: u64,
    #[serde(default)]
    pub(crate) dropped: u64,
    /// Per committed record: commit time minus the record's `action.time`, ms.
    pub(crate) lags_ms: Vec<u32>,
    /// Per committed batch: (unix ms when the insert returned, records committed so far).
    pub(crate) commits: Vec<(i64, u64)>,
}

/// Options of `loadbench ingest`.
struct IngestArgs {
    nats_url: String,
    postgres_url: String,
    report: PathBuf,
    ready: Option<PathBuf>,
    baseline: bool,
    writers: usize,
    batch_size: usize,
}

impl IngestArgs {
    fn parse(args: &[String]) -> Result<Self, BoxError> {
        let mut nats_url = None;
        let mut postgres_url = None;
        let mut report = None;
        let mut ready = None;
        let mut baseline = false;
        let mut writers = 3;
        let mut batch_size = 4000;
        let mut flags = Flags::new(args);
        while let Some(flag) = flags.flag() {
            match flag {
                "--nats-url" => nats_url = Some(flags.value(flag)?.to_owned()),
                "--postgres-url" => postgres_url = Some(flags.value(flag)?.to_owned()),
                "--report" => report = Some(PathBuf::from(flags.value(flag)?)),
                "--ready" => ready = Some(PathBuf::from(flags.value(flag)?)),
                "--baseline" => baseline = true,
                "--writers" => writers = flags.parse(flag)?,
                "--batch-size" => batch_size = flags.parse(flag)?,
                other => return Err(format!("ingest: unknown option {other:?}").into()),
            }
        }
        Ok(Self {
            nats_url: nats_url.ok_or("ingest: --nats-url is required")?,
            postgres_url: postgres_url.ok_or("ingest: --postgres-url is required")?,
            report: report.ok_or("ingest: --report is required")?,
            ready,
            baseline,
            writers,
            batch_size,
        })
    }
}

/// `loadbench ingest ...`: ingests until `SIGTERM` (or, `--baseline`, until the stream's
/// records are stored), writes the report, exits.
pub(crate) fn main(args: &[String]) -> Result<ExitCode, BoxError> {
    let args = IngestArgs::parse(args)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let report = runtime.block_on(async {
        if args.baseline {
            baseline(&args).await
        } else {
            ingestor(&args).await
        }
    })?;
    std::fs::write(&args.report, serde_json::to_vec(&report)?)?;
    Ok(ExitCode::SUCCESS)
}

async fn store(url: &str) -> Result<PostgresStore, BoxError> {
    let store = PostgresStore::connect(url).await?;
    store.migrate().await?;
    Ok(store)
}

fn ticks() -> u64 {
    process_usage(std::process::id()).map_or(0, |(ticks, _)| ticks)
}

fn fill(report: &mut IngestReport, log: CommitLog) {
    report.lags_ms = log.lags_ms;
    report.commits = log.commits;
}

/// One ingestor, as `audit-ingest` runs it, until `SIGTERM`.
async fn ingestor(args: &IngestArgs) -> Result<IngestReport, BoxError> {
    let times = CommitTimes(Arc::new(Mutex::new(CommitLog::default())));
    let store = Intercepted::new(store(&args.postgres_url).await?, times.clone());
    let (writers, batch_size) = (args.writers, args.batch_size);
    // A cluster elects its JetStream leader a moment after its nodes answer.
    let deadline = Instant::now() + Duration::from_secs(30);
    let ingestor = loop {
        let connected = ingest::builder(store.clone(), crate::nats::fleet(&args.nats_url)?)
            .pipeline(move |p| p.writers(writers).batch_size(batch_size))
            // Live, it starts before the first server, which would create the stream.
            .create_stream(true)
            .connect()
            .await;
        match connected {
            Ok(ingestor) => break ingestor,
            Err(e) if Instant::now() > deadline => return Err(e.into()),
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    };
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    if let Some(ready) = &args.ready {
        std::fs::write(ready, b"ready")?;
    }
    let start_ticks = ticks();
    let started_ms = unix_ms();
    let metrics = ingestor
        .run(async move {
            term.recv().await;
        })
        .await?;
    let mut report = IngestReport {
        cpu_ticks: ticks().saturating_sub(start_ticks),
        started_ms,
        acked: metrics.acked,
        stored: metrics.pipeline.stored,
        dead_lettered: metrics.dead_lettered,
        redelivered: metrics.redelivery_requested,
        dropped: metrics.pipeline.dropped,
        ..IngestReport::default()
    };
    fill(&mut report, times.take());
    Ok(report)
}

/// The in-process pipeline over the same store, fed every record the stream holds.
async fn baseline(args: &IngestArgs) -> Result<IngestReport, BoxError> {
    let records = read_stream(&args.nats_url).await?;
    let times = CommitTimes(Arc::new(Mutex::new(CommitLog::default())));
    let store = Intercepted::new(store(&args.postgres_url).await?, times.clone());
    let (sink, pipeline) = pipeline::builder(store)
        .writers(args.writers)
        .batch_size(args.batch_size)
        // Room for the whole backlog in every lane (a lane takes the accounts that hash to
        // it, so one may get most): the baseline measures the writes, not the overflow.
        .queue_capacity((records.len() + 1).saturating_mul(args.writers))
        .queue_bytes(u64::MAX / 2)
        .build()
        .await?;
    let worker = tokio::spawn(pipeline.run());
    let records_read = records.len() as u64;
    let start_ticks = ticks();
    let started_ms = unix_ms();
    for record in records {
        sink.submit(record);
    }
    sink.shutdown().await;
    worker.await?;
    let metrics = sink.metrics();
    let mut report = IngestReport {
        cpu_ticks: ticks().saturating_sub(start_ticks),
        started_ms,
        records_read,
        stored: metrics.stored,
        dropped: metrics.dropped,
        ..IngestReport::default()
    };
    fill(&mut report, times.take());
    Ok(report)
}

/// Every record in the fleet's stream, read by sequence number (not consumed).
async fn read_stream(url: &str) -> Result<Vec<AuditRecord>, BoxError> {
    let fleet = FleetConfig::new(url)?;
    let client = async_nats::connect(crate::nats::first_url(url)).await?;
    let js = async_nats::jetstream::new(client);
    let mut stream = js.get_stream(fleet.stream_name()).await?;
    let info = stream.info().await?;
    let (first, last) = (info.state.first_sequence, info.state.last_sequence);
    let mut records = Vec::new();
    for seq in first..=last {
        let message =
            match tokio::time::timeout(Duration::from_secs(5), stream.get_raw_message(seq)).await {
                Ok(Ok(message)) => message,
                // Acknowledged and deleted, or never there.
                Ok(Err(_)) => continue,
                Err(_) => return Err(format!("no answer for message {seq} of the stream").into()),
            };
        // One record per line (the fleet's wire format).
        for line in message.payload.split(|&b| b == b'\n') {
            records.push(serde_json::from_slice(line)?);
        }
    }
    Ok(records)
}
