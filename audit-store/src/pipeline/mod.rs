//! The ingest pipeline: the layer's sink, and the background work that enriches, batches and
//! writes records, spilling to a local spool while the database is unavailable.
//!
//! ```no_run
//! use audit_layer::{AuditLayer, AuditPolicy};
//! use audit_store::{SqliteStore, pipeline};
//! use audit_store::store::AuditStore;
//!
//! # async fn run() -> audit_store::Result<()> {
//! let store = SqliteStore::open("audit.db").await?;
//! store.migrate().await?;
//! let (sink, pipeline) = pipeline::builder(store)
//!     .spool("audit-spool", 256 * 1024 * 1024)
//!     .build()
//!     .await?;
//! let worker = tokio::spawn(pipeline.run());
//! let layer = AuditLayer::new(AuditPolicy::default()).sink(sink.clone());
//! // ... serve with the layer; on shutdown:
//! sink.shutdown().await;
//! worker.await.ok();
//! # Ok(()) }
//! ```
//!
//! # What happens to a record
//!
//! [`IngestSink::submit`](audit_layer::AuditSink::submit) puts the record on a bounded in-memory queue and returns at once:
//! a request never waits for storage. The pipeline takes records off the queue in batches
//! (by size, or after a short interval), fills in account and zone names from the
//! application's [`Directory`] through a cache, and writes each batch in one transaction.
//!
//! A failed write is retried with backoff. When the retries are exhausted and a spool is
//! configured, the pipeline becomes *degraded*: batches go to the spool on disk, in order,
//! and a probe replays them, oldest first, as soon as the database answers again — also after
//! a restart, since the spool is read when the pipeline starts. Without a spool, the batch is
//! retried until it is written, and the queue absorbs what arrives meanwhile.
//!
//! When the queue is full (a burst beyond what the database absorbs) and a spool is
//! configured, records *overflow* to the spool instead, through a small bounded buffer that a
//! background task appends to disk in batches; they are replayed once the queue has room
//! again, or at shutdown. Memory stays bounded by the queue and that buffer.
//!
//! With [backpressure](PipelineBuilder::backpressure) the excess never forms: while the queue
//! is three-quarters full, audited requests wait before they are served, until a writer takes
//! the next batch. The server then serves what storage commits, and a record's time from
//! capture to commit stays near the time it takes to write what is ahead of it.
//!
//! # Memory
//!
//! The pipeline holds at most the queue, the overflow buffer and, per writer, the batch being
//! written plus its rows, each bounded in records and in bytes (by
//! [`AuditRecord::size_hint`](audit_layer::record::AuditRecord::size_hint), about a record's
//! JSON length): the queue [`queue_capacity`](PipelineBuilder::queue_capacity) records and
//! [`queue_bytes`](PipelineBuilder::queue_bytes), the overflow
//! [`overflow_capacity`](PipelineBuilder::overflow_capacity) and
//! [`overflow_bytes`](PipelineBuilder::overflow_bytes), a batch
//! [`batch_size`](PipelineBuilder::batch_size) and [`batch_bytes`](PipelineBuilder::batch_bytes)
//! (plus one receive of at most 256 records). Whichever bound is reached first applies: the
//! defaults (8,192 records or 16 MiB, 8,192 records or 16 MiB, 4,000 records or 8 MiB) hold
//! typical records of about 2 KiB by count and large ones (a record may take up to 64 KiB and
//! more) by bytes, so the pipeline stays near `16 + 16 + 2 × 8 × writers` MiB (about 50 MiB
//! with one writer) whatever the load and whatever the records: beyond that, records wait in
//! the spool, or requests wait under backpressure. Size the settings to the memory you give
//! the pipeline; the whole-server benchmark (`BENCHMARKS.md`) measures peak RSS at
//! saturation.
//!
//! Nothing is dropped silently. A record is dropped only when the queue is full and there is
//! no spool (or its overflow buffer is full too), or the spool is out of its byte budget;
//! drops are counted, and once storage works again a *gap record* is written into each
//! affected account's log saying how many records were lost and between which times.
//!
//! # Destinations
//!
//! The pipeline writes to a [`Destination`]: every chained SQL store is one, and so is the
//! fleet's `NatsDestination` (feature `nats`), which publishes each batch to a NATS
//! JetStream stream that `audit-ingest` processes write into SQL. Batching, enrichment,
//! retries, the spool, strict mode (a commit is then the stream's acknowledgement of the
//! replicated write), backpressure and gap records are the same whatever the destination;
//! checkpoints and retention run only where the destination is a chained SQL store.
//!
//! # Retention
//!
//! The pipeline deletes records older than the retention period (default 18 months) a minute
//! after it starts and then daily, through [`ChainedStore::retain`](crate::store::ChainedStore::retain):
//! a chained store verifies what it is about to prune and refuses a chain whose prefix does
//! not verify (logged as an error, counted in
//! [`PipelineMetrics::retention_refused`]); the anchors it
//! signs go to the [checkpoint sink](PipelineBuilder::checkpoint_sink) like checkpoints.
//!
//! # Checkpoints
//!
//! With a chained store, the pipeline signs a checkpoint of every chain at start-up, before
//! it writes anything, then of each chain that grew every 1,000 records or 10 s (whichever
//! first, at most once a second; see [`checkpoint_after`](PipelineBuilder::checkpoint_after)),
//! of every chain hourly ([`checkpoints`](PipelineBuilder::checkpoints)), and of every chain
//! at shutdown; each round is stored and handed to the checkpoint sink.
//!
//! # Spooled records are authenticated
//!
//! With a chained store, every record in the spool carries an HMAC under a key derived from
//! the chain secret: a line written or edited in the spool by hand does not replay; it is
//! counted ([`PipelineMetrics::spool_rejected`]), logged and
//! reported by a gap record. The spool's directory is created accessible by its owner only
//! and its files readable by their owner only (modes 700 and 600, whatever the umask).
//!
//! # Metrics
//!
//! [`IngestSink::metrics`] reads every counter at once ([`PipelineMetrics`]; in Prometheus
//! text with [`to_prometheus`](PipelineMetrics::to_prometheus), feature `prometheus`). The
//! same counters, and histograms of batch sizes, write times and the lag from a record's time
//! to its commit, and gauges of the queue and the spool, go through the
//! [`metrics`](https://docs.rs/metrics) facade to whatever recorder the app installs
//! (Prometheus, StatsD, OpenTelemetry...), with the labels given to
//! [`PipelineBuilder::metric_label`]. Install the recorder before building the pipeline.
//!
//! | name | kind | what |
//! |---|---|---|
//! | `audit_records_{enqueued,stored,duplicate,spooled,replayed,dropped,overflowed,expired}_total` | counter | as [`PipelineMetrics`] |
//! | `audit_batches_total`, `audit_batch_write_failures_total`, `audit_gap_records_total`, `audit_chain_checkpoints_total`, ... | counter | as [`PipelineMetrics`] |
//! | `audit_batch_records` | histogram | records in each batch written to the database |
//! | `audit_batch_write_seconds` | histogram | the time of each batch's write (one transaction) |
//! | `audit_commit_lag_seconds` | histogram | for each record, from its `action.time` to its commit; label `from`: `queue`, or `spool` when replayed from it |
//! | `audit_queue_depth`, `audit_queue_bytes`, `audit_spool_bytes` | gauge | what the pipeline holds, set after each batch |
//!
//! [`HISTOGRAM_BUCKETS`] gives buckets suited to each histogram, for exporters that need
//! them:
//!
//! ```
//! use metrics_exporter_prometheus::{Matcher, PrometheusBuilder};
//!
//! let mut exporter = PrometheusBuilder::new();
//! for (name, buckets) in audit_store::pipeline::HISTOGRAM_BUCKETS {
//!     exporter = exporter.set_buckets_for_metric(Matcher::Full(name.into()), buckets)?;
//! }
//! let prometheus = exporter.install_recorder()?; // then build the pipeline
//! // serve `prometheus.render()` at /metrics
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Ordering
//!
//! Records are spread over the writers by account: all records of one account go through one
//! writer (accounts take the writers in turn as they are first seen, so a few accounts share
//! them evenly), in the order they were submitted (records that overflowed or were spooled are
//! stored when replayed, after later ones). A chained store numbers records in the order it
//! stores them, under a per-account lock (see [`chain`](crate::chain)).

mod builder;
mod destination;
mod enrich;
mod gaps;
mod lane;
mod maintenance;
mod mark;
mod metrics;
mod queue;
mod recovery;
mod route;
mod shared;
mod sink;
mod spool;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::sync::{Mutex as AsyncMutex, mpsc};

pub use self::metrics::{
    BATCH_RECORDS_BUCKETS, HISTOGRAM_BUCKETS, LATENCY_BUCKETS, PipelineMetrics,
};
pub use builder::{PipelineBuilder, builder};
pub use destination::Destination;
pub use enrich::{Directory, Lookup};
pub use sink::IngestSink;

use crate::chain::CheckpointSink;
use builder::Retry;
use enrich::Enricher;
use queue::Message;
use shared::Shared;
use spool::Spool;

/// The pipeline's background work; run it with [`run`](Self::run) on the runtime.
#[must_use = "the pipeline does nothing unless run"]
pub struct Pipeline<S> {
    ctx: Arc<Context<S>>,
    lanes: Vec<mpsc::Receiver<Message>>,
    overflow: Option<mpsc::Receiver<Message>>,
}

impl<S> std::fmt::Debug for Pipeline<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pipeline")
            .field("writers", &self.lanes.len())
            .finish_non_exhaustive()
    }
}

struct Context<S> {
    store: S,
    shared: Arc<Shared>,
    enricher: Option<Enricher>,
    spool: AsyncMutex<Option<Spool>>,
    has_spool: bool,
    batch_size: usize,
    batch_bytes: u64,
    flush_interval: Duration,
    retry: Retry,
    probe_interval: Duration,
    write_timeout: Duration,
    checkpoint_interval: Duration,
    checkpoint_every: Duration,
    checkpoint_sink: Option<Arc<dyn CheckpointSink>>,
    retention: Option<Duration>,
    retention_interval: Duration,
    spool_dir: Option<PathBuf>,
}

impl<S: Destination> Pipeline<S> {
    /// Runs until [`IngestSink::shutdown`] is called and everything accepted is written or
    /// spooled. Spawn it: `tokio::spawn(pipeline.run())`.
    pub async fn run(self) {
        let Self {
            ctx,
            lanes,
            overflow,
        } = self;
        let mut writers = tokio::task::JoinSet::new();
        for lane in lanes {
            writers.spawn(Arc::clone(&ctx).lane(lane));
        }
        if let Some(overflow) = overflow {
            writers.spawn(Arc::clone(&ctx).overflow(overflow));
        }
        let stop = Arc::new(AtomicBool::new(false));
        let recovery = tokio::spawn(Arc::clone(&ctx).recover(Arc::clone(&stop)));
        let (stop_checkpoints, stopped) = tokio::sync::watch::channel(false);
        let checkpoints = ctx
            .store
            .checkpoint_keys()
            .is_some()
            .then(|| tokio::spawn(Arc::clone(&ctx).checkpoints(stopped.clone())));
        let retention = ctx
            .retention
            .filter(|_| ctx.store.keeps_records())
            .map(|keep| tokio::spawn(Arc::clone(&ctx).retain(keep, stopped.clone())));
        let (stop_mark, mark_stopped) = tokio::sync::watch::channel(false);
        let mark = ctx
            .spool_dir
            .clone()
            .map(|dir| tokio::spawn(Arc::clone(&ctx).mark_running(dir, mark_stopped)));
        while let Some(joined) = writers.join_next().await {
            if let Err(e) = joined {
                tracing::error!(target: "audit_store", "an audit writer stopped: {e}");
            }
        }
        stop.store(true, Ordering::Release);
        let _ = recovery.await;
        // Drops not yet reported: to the database, or to the spool for the next start.
        ctx.write_gaps().await;
        let _ = stop_checkpoints.send(true);
        if let Some(retention) = retention {
            let _ = retention.await;
        }
        if let Some(checkpoints) = checkpoints {
            let _ = checkpoints.await;
            // The last word: what this instance wrote is vouched for at once, so deleting
            // the newest records after a shutdown is found.
            ctx.checkpoint().await;
        }
        // Everything accepted is stored or spooled: a clean stop leaves no mark.
        let _ = stop_mark.send(true);
        if let Some(mark) = mark {
            let _ = mark.await;
        }
        ctx.shared.finished.store(true, Ordering::Release);
        ctx.shared.done.notify_waiters();
    }
}
