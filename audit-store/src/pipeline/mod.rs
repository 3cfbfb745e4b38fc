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
//! [`IngestSink::submit`] puts the record on a bounded in-memory queue and returns at once:
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
//! The most records the pipeline holds at once is the queue, the overflow buffer and, per
//! writer, the batch being written plus its rows (`queue + overflow + 2 × batch × writers`).
//! A record with half-kilobyte bodies takes about 2 KiB, so the defaults (8,192 + 8,192 +
//! 2 × 4,000) bound the pipeline near 50 MiB with one writer, whatever the load: beyond that
//! records wait in the spool. Size the three settings to the memory you give the pipeline;
//! the whole-server benchmark (`BENCHMARKS.md`) measures peak RSS at saturation.
//!
//! Nothing is dropped silently. A record is dropped only when the queue is full and there is
//! no spool (or its overflow buffer is full too), or the spool is out of its byte budget;
//! drops are counted, and once storage works again a *gap record* is written into each
//! affected account's log saying how many records were lost and between which times.
//!
//! # Retention
//!
//! The pipeline deletes records older than the retention period (default 18 months) a minute
//! after it starts and then daily, through [`AuditStore::delete_before`].
//!
//! # Ordering
//!
//! Records are spread over the writers by account: all records of one account go through one
//! writer, in the order they were submitted (records that overflowed or were spooled are
//! stored when replayed, after later ones). A chained store numbers records in the order it
//! stores them, under a per-account lock (see [`chain`](crate::chain)).

mod enrich;
mod metrics;

use std::collections::HashMap;
use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use audit_layer::record::{
    Account, Action, ActionResult, ActionType, Actor, ActorContext, ActorType, AuditRecord, Body,
    Raw, Resource, Timestamp,
};
use audit_layer::sink::AuditSink;
use futures_util::FutureExt;
use std::panic::AssertUnwindSafe;
use tokio::sync::{Notify, mpsc, oneshot};
use uuid::Uuid;

use enrich::Enricher;
pub use enrich::{BoxError, Directory, Lookup};
use metrics::Counters;
pub use metrics::PipelineMetrics;

use crate::Result;
use crate::chain::CheckpointSink;
use crate::row::StoredRecord;
use crate::spool::{Appended, Spool};
use crate::store::AuditStore;

pub use audit_layer::NotCommitted;

/// Bytes the spool may exceed its budget by to keep gap records.
const GAP_RESERVE: u64 = 1024 * 1024;

/// How a batch write is retried before the pipeline turns to the spool.
#[derive(Clone, Copy, Debug)]
struct Retry {
    attempts: u32,
    first_backoff: Duration,
    max_backoff: Duration,
}

impl Retry {
    fn backoff(&self, attempt: u32) -> Duration {
        self.first_backoff
            .saturating_mul(1 << attempt.min(16))
            .min(self.max_backoff)
    }
}

/// Configures a pipeline; see [`builder`].
#[must_use]
pub struct PipelineBuilder<S> {
    store: S,
    queue_capacity: usize,
    batch_size: usize,
    flush_interval: Duration,
    writers: usize,
    directory: Option<Arc<dyn Directory>>,
    cache_capacity: u64,
    cache_ttl: Duration,
    lookup_timeout: Duration,
    spool: Option<(PathBuf, u64)>,
    retry: Retry,
    probe_interval: Duration,
    write_timeout: Duration,
    checkpoint_interval: Duration,
    checkpoint_sink: Option<Arc<dyn CheckpointSink>>,
    overflow_capacity: usize,
    retention: Option<Duration>,
    retention_interval: Duration,
    backpressure: Option<Duration>,
}

/// 18 months of 30.44 days: the original system's retention.
const EIGHTEEN_MONTHS: Duration = Duration::from_secs(548 * 24 * 3600);

impl<S> std::fmt::Debug for PipelineBuilder<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PipelineBuilder")
            .field("queue_capacity", &self.queue_capacity)
            .field("batch_size", &self.batch_size)
            .field("flush_interval", &self.flush_interval)
            .field("writers", &self.writers)
            .field("spool", &self.spool)
            .field("checkpoint_interval", &self.checkpoint_interval)
            .finish_non_exhaustive()
    }
}

/// A pipeline writing into `store`, with the defaults documented on each setting.
pub fn builder<S: AuditStore>(store: S) -> PipelineBuilder<S> {
    PipelineBuilder {
        store,
        queue_capacity: 8192,
        batch_size: 4000,
        flush_interval: Duration::from_millis(20),
        writers: 1,
        directory: None,
        cache_capacity: 10_000,
        cache_ttl: Duration::from_secs(300),
        lookup_timeout: Duration::from_secs(2),
        spool: None,
        retry: Retry {
            attempts: 3,
            first_backoff: Duration::from_millis(50),
            max_backoff: Duration::from_secs(5),
        },
        probe_interval: Duration::from_millis(250),
        write_timeout: Duration::from_secs(10),
        checkpoint_interval: Duration::from_secs(3600),
        checkpoint_sink: None,
        overflow_capacity: 8192,
        retention: Some(EIGHTEEN_MONTHS),
        retention_interval: Duration::from_secs(24 * 3600),
        backpressure: None,
    }
}

impl<S: AuditStore> PipelineBuilder<S> {
    /// How many records may wait in memory for a writer. Defaults to 8,192 (about 16 MiB of
    /// records with half-kilobyte bodies; see [Memory](crate::pipeline#memory)).
    pub fn queue_capacity(mut self, records: usize) -> Self {
        self.queue_capacity = records.max(1);
        self
    }

    /// The most records written in one transaction. Defaults to 4,000 (SQLite writes them as
    /// statements of 250 rows). Larger transactions are faster — the ingest benchmark
    /// measured 10,000-row ones 1.6x faster than 1,000-row ones — and hold more memory. Under
    /// light load batches are smaller: a partial batch is written after the flush interval.
    pub fn batch_size(mut self, records: usize) -> Self {
        self.batch_size = records.max(1);
        self
    }

    /// How long a partial batch waits for more records. Defaults to 20 ms.
    pub fn flush_interval(mut self, interval: Duration) -> Self {
        self.flush_interval = interval;
        self
    }

    /// How many batches are written concurrently. Defaults to 1, right for SQLite (one
    /// writer at a time); PostgreSQL benefits from 2–4.
    pub fn writers(mut self, writers: usize) -> Self {
        self.writers = writers.max(1);
        self
    }

    /// Where account and zone names come from. Defaults to none: records keep only ids.
    pub fn directory(mut self, directory: impl Directory) -> Self {
        self.directory = Some(Arc::new(directory));
        self
    }

    /// The directory cache's size and entry lifetime. Defaults to 10,000 names for 5 minutes.
    pub fn directory_cache(mut self, capacity: u64, ttl: Duration) -> Self {
        self.cache_capacity = capacity;
        self.cache_ttl = ttl;
        self
    }

    /// How long a directory lookup may take before it counts as failed (the record is stored
    /// without the name). Defaults to 2 s.
    pub fn directory_timeout(mut self, timeout: Duration) -> Self {
        self.lookup_timeout = timeout;
        self
    }

    /// Spills records to `dir` while the database is unavailable, up to `budget_bytes`.
    /// Defaults to none.
    pub fn spool(mut self, dir: impl Into<PathBuf>, budget_bytes: u64) -> Self {
        self.spool = Some((dir.into(), budget_bytes));
        self
    }

    /// How often a failed write is retried, and the first and longest pause between tries.
    /// Defaults to 3 attempts, from 50 ms up to 5 s.
    pub fn retry(mut self, attempts: u32, first_backoff: Duration, max_backoff: Duration) -> Self {
        self.retry = Retry {
            attempts: attempts.max(1),
            first_backoff,
            max_backoff,
        };
        self
    }

    /// The longest one batch write may take before it counts as failed. Defaults to 10 s.
    pub fn write_timeout(mut self, timeout: Duration) -> Self {
        self.write_timeout = timeout;
        self
    }

    /// How often a degraded pipeline checks whether the database is back. Defaults to 250 ms.
    pub fn probe_interval(mut self, interval: Duration) -> Self {
        self.probe_interval = interval;
        self
    }

    /// How often a chained store signs a checkpoint of every account's chain, also of chains
    /// that did not grow (see [`chain`](crate::chain)). Defaults to hourly. A last checkpoint
    /// is made at shutdown. Does nothing for a store without chain keys.
    pub fn checkpoints(mut self, interval: Duration) -> Self {
        self.checkpoint_interval = interval.max(Duration::from_millis(10));
        self
    }

    /// How many records may wait in memory for the spool when the queue is full (only with a
    /// [`spool`](Self::spool)). Defaults to 8,192; beyond it, records are dropped and counted.
    /// The buffer is what absorbs a saturated server's excess while the spool writes it: at
    /// 4,096 the whole-server benchmark saw it overflow (and records dropped) at saturation.
    pub fn overflow_capacity(mut self, records: usize) -> Self {
        self.overflow_capacity = records.max(1);
        self
    }

    /// Backpressure: while the queue is three-quarters full (any of its lanes, with several
    /// [writers](Self::writers)), audited requests wait (up to
    /// `max_wait`) before they are served, so the server slows to what storage absorbs
    /// instead of spilling the excess to the spool. Defaults to off: in the default mode a
    /// request never waits for storage.
    ///
    /// With it, records stay in memory for a bounded time as well as in bounded number: the
    /// queue holds at most a few batches' worth, so the capture-to-commit lag stays near the
    /// time the store takes to write them. A request that waited `max_wait` goes on anyway,
    /// and its record takes the usual path (the queue's remaining quarter, else the spool's
    /// overflow); [`PipelineMetrics::waited`] and [`PipelineMetrics::waits_timed_out`] count
    /// both. Waiting requests are woken as soon as a writer takes a batch off the queue, or
    /// when the pipeline shuts down. Requests of unaudited operations never wait.
    ///
    /// ```no_run
    /// # use audit_store::{SqliteStore, pipeline};
    /// # use std::time::Duration;
    /// # async fn run(store: SqliteStore) -> audit_store::Result<()> {
    /// let (sink, pipeline) = pipeline::builder(store)
    ///     .spool("audit-spool", 256 * 1024 * 1024)
    ///     .backpressure(Duration::from_secs(2))
    ///     .build()
    ///     .await?;
    /// # Ok(()) }
    /// ```
    pub fn backpressure(mut self, max_wait: Duration) -> Self {
        self.backpressure = Some(max_wait);
        self
    }

    /// How long records are kept: older ones are deleted a minute after start and then every
    /// [`retention_interval`](Self::retention_interval). `None` keeps everything. Defaults to
    /// 18 months, the original system's retention.
    pub fn retention(mut self, keep: Option<Duration>) -> Self {
        self.retention = keep;
        self
    }

    /// How often retention runs. Defaults to daily.
    pub fn retention_interval(mut self, interval: Duration) -> Self {
        self.retention_interval = interval.max(Duration::from_millis(10));
        self
    }

    /// Where checkpoints are also kept, outside the database. Defaults to none.
    pub fn checkpoint_sink(mut self, sink: impl CheckpointSink) -> Self {
        self.checkpoint_sink = Some(Arc::new(sink));
        self
    }

    /// The sink to give the layer, and the pipeline to run.
    ///
    /// # Errors
    ///
    /// When the spool directory cannot be opened.
    pub async fn build(self) -> Result<(IngestSink, Pipeline<S>)> {
        let spool = match &self.spool {
            Some((dir, budget)) => Some(Spool::open(dir.clone(), *budget).await?),
            None => None,
        };
        // A mark left behind: the last process was killed with records in memory.
        let crashed = self
            .spool
            .as_ref()
            .and_then(|(dir, _)| RunningMark::take(dir));
        let per_lane = self.queue_capacity.div_ceil(self.writers).max(1);
        let (senders, receivers): (Vec<_>, Vec<_>) =
            (0..self.writers).map(|_| mpsc::channel(per_lane)).unzip();
        let shared = Arc::new(Shared {
            counters: Counters::default(),
            degraded: AtomicBool::new(spool.as_ref().is_some_and(|s| !s.is_empty())),
            spilled: AtomicBool::new(false),
            in_memory: std::sync::atomic::AtomicU64::new(0),
            closing: AtomicBool::new(false),
            finished: AtomicBool::new(false),
            done: Notify::new(),
            gaps: Mutex::default(),
            spool_bytes: std::sync::atomic::AtomicU64::new(
                spool.as_ref().map_or(0, Spool::used_bytes),
            ),
            per_lane,
            lanes: senders.iter().map(mpsc::Sender::downgrade).collect(),
            room: Notify::new(),
            backpressure: self.backpressure.map(|max_wait| Admission {
                // The last quarter of each lane is room for the requests in flight between
                // the check and their record.
                below: (per_lane * 3 / 4).max(1),
                max_wait,
            }),
        });
        let (overflow, overflow_rx) = match &spool {
            Some(_) => {
                let (tx, rx) = mpsc::channel(self.overflow_capacity);
                (Some(tx), Some(rx))
            }
            None => (None, None),
        };
        if let Some(mark) = crashed {
            let lost = mark.in_memory + mark.arrivals;
            tracing::error!(target: "audit_store", lost, "the last audit pipeline stopped without shutting down; a gap record reports what it held in memory");
            if lost > 0 {
                let last = mark.noted_ms + i64::try_from(MARK_INTERVAL.as_millis()).unwrap_or(0);
                shared
                    .gaps
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .note_unattributed(lost, mark.noted_ms, last);
            }
            Counters::add(&shared.counters.unclean_restarts, 1);
        }
        let sink = IngestSink {
            shared: Arc::clone(&shared),
            lanes: senders.into(),
            overflow,
        };
        let enricher = self
            .directory
            .map(|d| Enricher::new(d, self.cache_capacity, self.cache_ttl, self.lookup_timeout));
        let pipeline = Pipeline {
            ctx: Arc::new(Context {
                store: self.store,
                shared,
                enricher,
                spool: tokio::sync::Mutex::new(spool),
                has_spool: self.spool.is_some(),
                batch_size: self.batch_size,
                flush_interval: self.flush_interval,
                retry: self.retry,
                probe_interval: self.probe_interval,
                write_timeout: self.write_timeout,
                checkpoint_interval: self.checkpoint_interval,
                checkpoint_sink: self.checkpoint_sink,
                retention: self.retention,
                retention_interval: self.retention_interval,
                spool_dir: self.spool.as_ref().map(|(dir, _)| dir.clone()),
            }),
            lanes: receivers,
            overflow: overflow_rx,
        };
        Ok((sink, pipeline))
    }
}

/// One record on its way, with whoever waits for its commit.
struct Envelope {
    record: AuditRecord,
    committed: Option<oneshot::Sender<Result<(), NotCommitted>>>,
}

// Records travel unboxed: a box per record would be an allocation on the request path.
#[allow(clippy::large_enum_variant)]
enum Message {
    Record(Envelope),
    Shutdown,
}

/// Messages a lane takes from its channel at a time: enough that taking costs little per
/// record, few enough that the buffer they pass through stays small beside the batch.
const RECEIVE_CHUNK: usize = 256;

/// Moves the records of `received` to `batch`; whether a shutdown was among them.
fn unpack(received: &mut Vec<Message>, batch: &mut Vec<Envelope>) -> bool {
    let mut shutdown = false;
    for message in received.drain(..) {
        match message {
            Message::Record(e) => batch.push(e),
            Message::Shutdown => shutdown = true,
        }
    }
    shutdown
}

/// Drops waiting to be reported by a gap record, by account.
#[derive(Debug, Default)]
struct Gaps {
    spans: HashMap<Option<String>, GapSpan>,
}

#[derive(Clone, Copy, Debug)]
struct GapSpan {
    lost: u64,
    first_ms: i64,
    last_ms: i64,
}

impl GapSpan {
    fn at(time_ms: i64) -> Self {
        Self {
            lost: 0,
            first_ms: time_ms,
            last_ms: time_ms,
        }
    }

    /// Adds `other`'s records and times.
    fn merge(&mut self, other: &GapSpan) {
        self.lost += other.lost;
        self.first_ms = self.first_ms.min(other.first_ms);
        self.last_ms = self.last_ms.max(other.last_ms);
    }

    /// The span of `batch`'s records, per account.
    fn of_batch(batch: &[Envelope]) -> Vec<(Option<String>, GapSpan)> {
        let mut spans: HashMap<Option<&str>, GapSpan> = HashMap::new();
        for e in batch {
            let time_ms = e.record.action.time.unix_millis();
            let account = e.record.account.as_ref().map(|a| a.id.as_str());
            spans
                .entry(account)
                .or_insert_with(|| GapSpan::at(time_ms))
                .merge(&GapSpan {
                    lost: 1,
                    first_ms: time_ms,
                    last_ms: time_ms,
                });
        }
        spans
            .into_iter()
            .map(|(account, span)| (account.map(str::to_owned), span))
            .collect()
    }
}

impl Gaps {
    fn note(&mut self, account: Option<&str>, time_ms: i64) {
        self.note_span(
            account.map(str::to_owned),
            &GapSpan {
                lost: 1,
                first_ms: time_ms,
                last_ms: time_ms,
            },
        );
    }

    fn note_span(&mut self, account: Option<String>, span: &GapSpan) {
        self.spans
            .entry(account)
            .or_insert_with(|| GapSpan::at(span.first_ms))
            .merge(span);
    }

    /// Notes `lost` records of unknown accounts lost between two times.
    fn note_unattributed(&mut self, lost: u64, first_ms: i64, last_ms: i64) {
        self.note_span(
            None,
            &GapSpan {
                lost,
                first_ms,
                last_ms,
            },
        );
    }
}

/// The file in the spool directory that says a pipeline is running, and how many records it
/// holds in memory: found at start, it means the last process stopped without shutting down.
const RUNNING_MARK: &str = "RUNNING";
/// How often the running mark is rewritten.
const MARK_INTERVAL: Duration = Duration::from_millis(100);

/// What the running mark holds.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct RunningMark {
    /// When it was written, ms since the Unix epoch.
    noted_ms: i64,
    /// Records accepted and not yet stored, spooled or counted as dropped.
    in_memory: u64,
    /// Records accepted during the last interval: about how many more may have arrived
    /// before the next mark would have been written.
    arrivals: u64,
}

impl RunningMark {
    /// Reads a mark left by a process that did not shut down, and removes it.
    fn take(dir: &std::path::Path) -> Option<Self> {
        let path = dir.join(RUNNING_MARK);
        let text = std::fs::read_to_string(&path).ok()?;
        let _ = std::fs::remove_file(&path);
        serde_json::from_str(&text).ok()
    }
}

/// What a gap record needs of a record that may yet be dropped: its account and time.
struct Lost {
    account: Option<String>,
    time_ms: i64,
}

impl Lost {
    fn of(record: &AuditRecord) -> Self {
        Self {
            account: record.account.as_ref().map(|a| a.id.clone()),
            time_ms: record.action.time.unix_millis(),
        }
    }

    fn drop(&self, shared: &Shared) {
        shared.drop_record(self.account.as_deref(), self.time_ms);
    }
}

struct Shared {
    counters: Counters,
    /// The database is failing: writes go to the spool, strict requests are refused.
    degraded: AtomicBool,
    /// Records overflowed to the spool: replay them once the queue has room.
    spilled: AtomicBool,
    /// Records accepted and not yet stored, spooled or dropped (what a crash would lose).
    in_memory: std::sync::atomic::AtomicU64,
    closing: AtomicBool,
    finished: AtomicBool,
    done: Notify,
    gaps: Mutex<Gaps>,
    spool_bytes: std::sync::atomic::AtomicU64,
    per_lane: usize,
    /// The queue's lanes, to measure its depth (weak: the pipeline ends when every sink is
    /// gone).
    lanes: Vec<mpsc::WeakSender<Message>>,
    /// Wakes requests held by backpressure: a writer took a batch, or the pipeline closes.
    room: Notify,
    backpressure: Option<Admission>,
}

/// When requests wait for the queue (see [`PipelineBuilder::backpressure`]).
#[derive(Clone, Copy, Debug)]
struct Admission {
    /// Requests go on while every lane holds fewer records than this.
    below: usize,
    max_wait: Duration,
}

impl Shared {
    /// Records waiting in the queue now.
    fn queue_depth(&self) -> usize {
        self.lanes
            .iter()
            .filter_map(mpsc::WeakSender::upgrade)
            .map(|l| self.per_lane.saturating_sub(l.capacity()))
            .sum()
    }

    /// How many records the queue holds when full.
    fn queue_capacity(&self) -> usize {
        self.per_lane * self.lanes.len()
    }

    fn drop_record(&self, account: Option<&str>, time_ms: i64) {
        Counters::add(&self.counters.dropped, 1);
        self.gaps
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .note(account, time_ms);
    }

    /// [`drop_record`](Self::drop_record) for a span of one account's records.
    fn drop_span(&self, account: Option<String>, span: GapSpan) {
        Counters::add(&self.counters.dropped, span.lost);
        self.gaps
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .note_span(account, &span);
    }
}

/// The layer's sink: hands records to the pipeline without waiting.
///
/// Cheap to clone. Give one to the `AuditLayer`, keep one to read [`metrics`](Self::metrics)
/// and to [`shutdown`](Self::shutdown) the pipeline.
#[derive(Clone)]
pub struct IngestSink {
    shared: Arc<Shared>,
    lanes: Arc<[mpsc::Sender<Message>]>,
    /// To the spool when the queue is full (with a spool only).
    overflow: Option<mpsc::Sender<Message>>,
}

impl std::fmt::Debug for IngestSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IngestSink")
            .field("metrics", &self.metrics())
            .finish()
    }
}

impl IngestSink {
    fn lane_for(&self, record: &AuditRecord) -> &mpsc::Sender<Message> {
        let lane = match (&record.account, self.lanes.len()) {
            (_, 1) | (None, _) => 0,
            (Some(account), n) => {
                let mut hasher = DefaultHasher::new();
                account.id.hash(&mut hasher);
                (hasher.finish() % n as u64) as usize
            }
        };
        &self.lanes[lane]
    }

    /// Queues a record; when the queue is full, hands it to the spool's overflow buffer
    /// (a record without a commit waiter, with a spool only). When neither takes it, counts
    /// it as dropped and returns `false`.
    fn enqueue(&self, envelope: Envelope) -> bool {
        let rejected = if self.shared.closing.load(Ordering::Acquire) {
            Some(envelope)
        } else {
            match self
                .lane_for(&envelope.record)
                .try_send(Message::Record(envelope))
            {
                Ok(()) => None,
                Err(mpsc::error::TrySendError::Full(Message::Record(e)))
                    if e.committed.is_none() =>
                {
                    self.overflow(e)
                }
                Err(mpsc::error::TrySendError::Full(Message::Record(e)))
                | Err(mpsc::error::TrySendError::Closed(Message::Record(e))) => Some(e),
                Err(_) => unreachable!("only records are sent by submit"),
            }
        };
        match rejected {
            None => {
                Counters::add(&self.shared.counters.enqueued, 1);
                self.shared.in_memory.fetch_add(1, Ordering::Relaxed);
                true
            }
            Some(envelope) => {
                let record = &envelope.record;
                self.shared.drop_record(
                    record.account.as_ref().map(|a| a.id.as_str()),
                    record.action.time.unix_millis(),
                );
                false
            }
        }
    }

    /// Hands a record that found the queue full to the spool's overflow buffer; gives it
    /// back when there is no spool or the buffer is full too.
    fn overflow(&self, envelope: Envelope) -> Option<Envelope> {
        let Some(overflow) = &self.overflow else {
            return Some(envelope);
        };
        match overflow.try_send(Message::Record(envelope)) {
            Ok(()) => {
                Counters::add(&self.shared.counters.overflowed, 1);
                None
            }
            Err(mpsc::error::TrySendError::Full(Message::Record(e)))
            | Err(mpsc::error::TrySendError::Closed(Message::Record(e))) => Some(e),
            Err(_) => unreachable!("only records are sent by submit"),
        }
    }

    /// Records in the fullest lane of the queue now, from the senders' side (no upgrade of
    /// weak senders). A request's record may go to any lane (by its account, known only at
    /// the end), so it waits while any lane is short of room.
    fn fullest_lane(&self) -> usize {
        self.lanes
            .iter()
            .map(|lane| lane.max_capacity() - lane.capacity())
            .max()
            .unwrap_or(0)
    }

    /// Waits until every lane holds fewer than `admission.below` records, the pipeline
    /// closes, or `admission.max_wait` has passed.
    async fn room(self, admission: Admission) {
        let shared = &self.shared;
        Counters::add(&shared.counters.waited, 1);
        let deadline = tokio::time::Instant::now() + admission.max_wait;
        loop {
            let notified = shared.room.notified();
            tokio::pin!(notified);
            // Registered before the check, so a wake-up between the two is not missed.
            notified.as_mut().enable();
            if self.fullest_lane() < admission.below || shared.closing.load(Ordering::Acquire) {
                return;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                Counters::add(&shared.counters.waits_timed_out, 1);
                return;
            }
        }
    }

    /// Submits a record and waits until it is committed to the database (strict mode).
    ///
    /// Many waiting records share a batch, and so a transaction (group commit).
    ///
    /// # Errors
    ///
    /// When the record was not committed: see [`NotCommitted`].
    pub async fn commit(&self, record: AuditRecord) -> std::result::Result<(), NotCommitted> {
        let (tx, rx) = oneshot::channel();
        let envelope = Envelope {
            record,
            committed: Some(tx),
        };
        if !self.enqueue(envelope) {
            return Err(NotCommitted::Rejected);
        }
        rx.await.unwrap_or(Err(NotCommitted::Dropped))
    }

    /// Whether the database is taking records now (not degraded).
    pub fn is_available(&self) -> bool {
        !self.shared.degraded.load(Ordering::Acquire)
            && !self.shared.closing.load(Ordering::Acquire)
    }

    /// The counters now.
    pub fn metrics(&self) -> PipelineMetrics {
        self.shared.counters.snapshot(
            self.shared.queue_depth() as u64,
            self.shared.spool_bytes.load(Ordering::Relaxed),
        )
    }

    /// Stops accepting records, writes (or spools) everything accepted, and waits until the
    /// pipeline's [`run`](Pipeline::run) has finished. Records submitted afterwards are
    /// dropped and counted.
    pub async fn shutdown(&self) {
        let finished = self.shared.done.notified();
        self.shared.closing.store(true, Ordering::Release);
        self.shared.room.notify_waiters();
        for lane in self.lanes.iter().chain(self.overflow.iter()) {
            // Waits behind what is queued; a lane already gone has nothing left to flush.
            let _ = lane.send(Message::Shutdown).await;
        }
        if !self.shared.finished.load(Ordering::Acquire) {
            finished.await;
        }
    }
}

impl AuditSink for IngestSink {
    fn submit_and_commit(&self, record: AuditRecord) -> audit_layer::Commit {
        let sink = self.clone();
        Box::pin(async move {
            sink.commit(record).await
        })
    }

    fn is_available(&self) -> bool {
        IngestSink::is_available(self)
    }

    fn backpressure(&self) -> Option<audit_layer::Backpressure> {
        let admission = self.shared.backpressure?;
        if self.fullest_lane() < admission.below {
            return None;
        }
        Some(Box::pin(self.clone().room(admission)))
    }

    fn submit(&self, record: AuditRecord) {
        let envelope = Envelope {
            record,
            committed: None,
        };
        self.enqueue(envelope);
    }
}

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
    spool: tokio::sync::Mutex<Option<Spool>>,
    has_spool: bool,
    batch_size: usize,
    flush_interval: Duration,
    retry: Retry,
    probe_interval: Duration,
    write_timeout: Duration,
    checkpoint_interval: Duration,
    checkpoint_sink: Option<Arc<dyn CheckpointSink>>,
    retention: Option<Duration>,
    retention_interval: Duration,
    spool_dir: Option<PathBuf>,
}

impl<S: AuditStore> Pipeline<S> {
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
            .chain_keys()
            .is_some()
            .then(|| tokio::spawn(Arc::clone(&ctx).checkpoints(stopped.clone())));
        let retention = ctx
            .retention
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

impl<S: AuditStore> Context<S> {
    /// Signs a checkpoint of every chain every `checkpoint_interval` until stopped.
    async fn checkpoints(self: Arc<Self>, mut stop: tokio::sync::watch::Receiver<bool>) {
        loop {
            tokio::select! {
                () = tokio::time::sleep(self.checkpoint_interval) => self.checkpoint().await,
                _ = stop.changed() => return,
            }
        }
    }

    /// Deletes records older than `keep` a minute after start (sooner with a shorter
    /// interval), then every `retention_interval`, until stopped.
    async fn retain(self: Arc<Self>, keep: Duration, mut stop: tokio::sync::watch::Receiver<bool>) {
        let mut wait = self.retention_interval.min(Duration::from_secs(60));
        loop {
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                _ = stop.changed() => return,
            }
            wait = self.retention_interval;
            let keep_ms = i64::try_from(keep.as_millis()).unwrap_or(i64::MAX);
            let cutoff = crate::chain::now_ms().saturating_sub(keep_ms);
            match self.store.delete_before(cutoff).await {
                Ok(deleted) => {
                    Counters::add(&self.shared.counters.expired, deleted);
                    tracing::info!(target: "audit_store", deleted, "audit retention ran");
                }
                Err(e) => {
                    tracing::warn!(target: "audit_store", "audit retention failed, will retry: {e}")
                }
            }
        }
    }

    /// Appends records that found the queue full to the spool, in batches.
    async fn overflow(self: Arc<Self>, mut rx: mpsc::Receiver<Message>) {
        let mut batch: Vec<Envelope> = Vec::with_capacity(1024);
        let mut closing = false;
        while !closing {
            match rx.recv().await {
                None | Some(Message::Shutdown) => closing = true,
                Some(Message::Record(e)) => batch.push(e),
            }
            while batch.len() < self.batch_size {
                match rx.try_recv() {
                    Ok(Message::Record(e)) => batch.push(e),
                    Ok(Message::Shutdown) => closing = true,
                    Err(_) => break,
                }
            }
            if batch.is_empty() {
                continue;
            }
            let count = batch.len() as u64;
            // Spooled records are stored when replayed, which flattens them: here each is
            // only serialized, so overflowing costs little while the server is saturated.
            let mut lines = Vec::with_capacity(batch.len());
            let mut records = Vec::with_capacity(batch.len());
            for Envelope { mut record, .. } in batch.drain(..) {
                if let Some(enricher) = &self.enricher {
                    enricher.enrich(&mut record).await;
                }
                match serde_json::to_string(&record) {
                    Ok(line) => {
                        lines.push(line);
                        records.push(Lost::of(&record));
                    }
                    Err(e) => {
                        tracing::error!(target: "audit_store", id = %record.id, "unstorable audit record: {e}");
                        Lost::of(&record).drop(&self.shared);
                    }
                }
            }
            self.spill(&lines, &records).await;
            self.shared.in_memory.fetch_sub(count, Ordering::Relaxed);
        }
    }

    /// Rewrites the running mark every [`MARK_INTERVAL`] until stopped, then removes it: a
    /// mark found at the next start means this process was killed.
    async fn mark_running(
        self: Arc<Self>,
        dir: PathBuf,
        mut stop: tokio::sync::watch::Receiver<bool>,
    ) {
        let path = dir.join(RUNNING_MARK);
        let temp = dir.join(format!("{RUNNING_MARK}.tmp"));
        let mut accepted = self.shared.counters.enqueued.load(Ordering::Relaxed);
        loop {
            let now_accepted = self.shared.counters.enqueued.load(Ordering::Relaxed);
            let mark = RunningMark {
                noted_ms: crate::chain::now_ms(),
                in_memory: self.shared.in_memory.load(Ordering::Relaxed),
                arrivals: now_accepted.saturating_sub(accepted),
            };
            accepted = now_accepted;
            if let Ok(text) = serde_json::to_vec(&mark)
                && tokio::fs::write(&temp, text).await.is_ok()
            {
                let _ = tokio::fs::rename(&temp, &path).await;
            }
            tokio::select! {
                () = tokio::time::sleep(MARK_INTERVAL) => {}
                _ = stop.changed() => break,
            }
        }
        let _ = tokio::fs::remove_file(&path).await;
    }

    /// Appends overflowed records (`lines`, their JSON) to the spool; they are replayed when
    /// the queue has room. `lost` says what each one was, should they be dropped.
    async fn spill(&self, lines: &[String], lost: &[Lost]) {
        let mut guard = self.spool.lock().await;
        let Some(spool) = guard.as_mut() else { return };
        match spool.append(lines).await {
            Ok(Appended::Stored) => {
                Counters::add(&self.shared.counters.spooled, lines.len() as u64);
                self.shared.spilled.store(true, Ordering::Release);
            }
            outcome => {
                match outcome {
                    Err(e) => {
                        tracing::error!(target: "audit_store", records = lines.len(), "audit spool write failed, overflowed records dropped: {e}")
                    }
                    _ => {
                        tracing::error!(target: "audit_store", records = lines.len(), "audit spool out of budget: overflowed records dropped")
                    }
                }
                for record in lost {
                    record.drop(&self.shared);
                }
            }
        }
        self.shared
            .spool_bytes
            .store(spool.used_bytes(), Ordering::Relaxed);
    }

    /// One round of checkpoints, handed to the checkpoint sink. Failures are logged: the
    /// next round vouches for everything this one would have.
    async fn checkpoint(&self) {
        let now = crate::chain::now_ms();
        match crate::chain::checkpoint(&self.store, now).await {
            Ok(checkpoints) => {
                Counters::add(&self.shared.counters.checkpoints, checkpoints.len() as u64);
                if let Some(sink) = &self.checkpoint_sink
                    && let Err(e) = sink.publish(&checkpoints).await
                {
                    tracing::error!(target: "audit_store", "the checkpoint sink failed: {e}");
                }
            }
            Err(e) => {
                tracing::warn!(target: "audit_store", "cannot sign audit chain checkpoints now: {e}");
            }
        }
    }

    /// One write, bounded in time: a database that hangs fails like one that refuses, so the
    /// pipeline retries and then spools. A write that timed out may have committed; its
    /// retry then finds the records stored and skips them.
    async fn insert(&self, rows: &[StoredRecord]) -> Result<u64> {
        match tokio::time::timeout(self.write_timeout, self.store.insert(rows)).await {
            Ok(result) => result,
            Err(_) => Err(crate::StoreError::Timeout(self.write_timeout)),
        }
    }

    async fn lane(self: Arc<Self>, mut rx: mpsc::Receiver<Message>) {
        let mut batch: Vec<Envelope> = Vec::with_capacity(self.batch_size);
        let mut received: Vec<Message> = Vec::with_capacity(RECEIVE_CHUNK);
        let mut closing = false;
        while !closing {
            // The first record, then whatever follows it within the flush interval, taken
            // from the channel as many at a time as are there.
            closing |= rx.recv_many(&mut received, RECEIVE_CHUNK).await == 0;
            closing |= unpack(&mut received, &mut batch);
            let deadline = tokio::time::Instant::now() + self.flush_interval;
            while !closing && batch.len() < self.batch_size {
                let room = (self.batch_size - batch.len()).min(RECEIVE_CHUNK);
                match tokio::time::timeout_at(deadline, rx.recv_many(&mut received, room)).await {
                    Ok(0) => closing = true,
                    Ok(_) => closing |= unpack(&mut received, &mut batch),
                    Err(_) => break,
                }
            }
            if self.shared.backpressure.is_some() {
                // Room in the queue for the requests held back.
                self.shared.room.notify_waiters();
            }
            if closing {
                // Take what raced the shutdown in, too.
                rx.close();
                while let Ok(message) = rx.try_recv() {
                    if let Message::Record(e) = message {
                        batch.push(e);
                    }
                }
            }
            while !batch.is_empty() {
                let rest = batch.split_off(batch.len().min(self.batch_size));
                let full = std::mem::replace(&mut batch, rest);
                let count = full.len();
                // What a panic would lose, per account: one id cloned per account, not per
                // record.
                let spans = GapSpan::of_batch(&full);
                let processed = AssertUnwindSafe(self.process(full, closing))
                    .catch_unwind()
                    .await;
                self.shared
                    .in_memory
                    .fetch_sub(count as u64, Ordering::Relaxed);
                if processed.is_err() {
                    // A bug (a panicking directory, say) must not stop ingestion: the batch is
                    // counted as lost, and the lane goes on.
                    tracing::error!(target: "audit_store", records = count, "an audit batch panicked and was dropped");
                    for (account, span) in spans {
                        self.shared.drop_span(account, span);
                    }
                }
            }
        }
    }

    async fn process(&self, batch: Vec<Envelope>, closing: bool) {
        let mut rows = Vec::with_capacity(batch.len());
        let mut waiters = Vec::new();
        for Envelope {
            mut record,
            committed,
        } in batch
        {
            if let Some(enricher) = &self.enricher {
                enricher.enrich(&mut record).await;
            }
            // Serialized before it is taken apart, so that an error can still name it.
            match serde_json::to_string(&record) {
                Ok(json) => rows.push(StoredRecord::flatten(record, json)),
                Err(e) => {
                    tracing::error!(target: "audit_store", id = %record.id, "unstorable audit record: {e}");
                    self.shared.drop_record(
                        record.account.as_ref().map(|a| a.id.as_str()),
                        record.action.time.unix_millis(),
                    );
                    if let Some(tx) = committed {
                        let _ = tx.send(Err(NotCommitted::Dropped));
                    }
                    continue;
                }
            }
            waiters.push(committed);
        }
        let outcome = self.write(rows, closing).await;
        for tx in waiters.into_iter().flatten() {
            let _ = tx.send(outcome);
        }
    }

    /// Writes one batch: to the database with retries, else to the spool.
    async fn write(
        &self,
        rows: Vec<StoredRecord>,
        closing: bool,
    ) -> std::result::Result<(), NotCommitted> {
        let mut attempt = 0;
        loop {
            if self.has_spool && self.shared.degraded.load(Ordering::Acquire) {
                match self.to_spool(&rows).await {
                    Some(outcome) => return outcome,
                    // Recovered while we waited for the spool: write directly.
                    None => continue,
                }
            }
            let started = Instant::now();
            match self.insert(&rows).await {
                Ok(new) => {
                    self.committed(&rows, new, started);
                    if !self.has_spool {
                        self.available_again();
                    }
                    self.write_gaps().await;
                    return Ok(());
                }
                Err(e) if e.is_data_error() => {
                    // The database refuses some row itself: retrying the batch cannot help.
                    // Write row by row and drop only what it refuses.
                    Counters::add(&self.shared.counters.failed_writes, 1);
                    tracing::warn!(target: "audit_store", records = rows.len(), "audit batch refused, writing row by row: {e}");
                    return self.write_each(rows, closing).await;
                }
                Err(e) => {
                    Counters::add(&self.shared.counters.failed_writes, 1);
                    attempt += 1;
                    tracing::warn!(target: "audit_store", attempt, records = rows.len(), "audit batch write failed: {e}");
                    if attempt >= self.retry.attempts {
                        if self.has_spool {
                            self.shared.degraded.store(true, Ordering::Release);
                            continue;
                        }
                        // No spool: keep the batch in memory and keep trying, but not
                        // forever once shutting down.
                        self.shared.degraded.store(true, Ordering::Release);
                        if closing && attempt >= self.retry.attempts + 10 {
                            for row in &rows {
                                self.shared
                                    .drop_record(row.account_id.as_deref(), row.time_ms);
                            }
                            tracing::error!(target: "audit_store", records = rows.len(), "audit database unavailable at shutdown and no spool: records dropped");
                            return Err(NotCommitted::Dropped);
                        }
                    }
                    tokio::time::sleep(self.retry.backoff(attempt.saturating_sub(1))).await;
                }
            }
        }
    }

    /// Writes rows one at a time, dropping (counted, and reported by a gap record) those the
    /// database refuses; the rest go through [`write`](Self::write) again if the database
    /// fails meanwhile.
    async fn write_each(
        &self,
        rows: Vec<StoredRecord>,
        closing: bool,
    ) -> std::result::Result<(), NotCommitted> {
        let mut outcome = Ok(());
        let mut rows = rows.into_iter();
        while let Some(row) = rows.next() {
            let started = Instant::now();
            match self.insert(std::slice::from_ref(&row)).await {
                Ok(new) => self.committed(std::slice::from_ref(&row), new, started),
                Err(e) if e.is_data_error() => {
                    tracing::error!(target: "audit_store", id = %row.id, "the audit database refuses this record, dropped: {e}");
                    self.shared
                        .drop_record(row.account_id.as_deref(), row.time_ms);
                    outcome = Err(NotCommitted::Dropped);
                }
                Err(_) => {
                    let rest: Vec<StoredRecord> = std::iter::once(row).chain(rows).collect();
                    return Box::pin(self.write(rest, closing)).await.and(outcome);
                }
            }
        }
        self.write_gaps().await;
        outcome
    }

    /// Counts rows replayed from the spool: gap records the spool kept count as gap
    /// records, everything else as stored and replayed.
    fn replayed(&self, rows: &[StoredRecord], new: u64, started: Instant) {
        let counters = &self.shared.counters;
        let gaps = rows.iter().filter(|r| r.action_type == "gap").count() as u64;
        let records = rows.len() as u64 - gaps;
        Counters::add(&counters.gap_records, gaps.min(new));
        Counters::add(&counters.stored, new.saturating_sub(gaps));
        Counters::add(
            &counters.duplicates,
            records.saturating_sub(new.saturating_sub(gaps)),
        );
        Counters::add(&counters.replayed, records);
        counters.batch_took(u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX));
    }

    fn committed(&self, rows: &[StoredRecord], new: u64, started: Instant) {
        let counters = &self.shared.counters;
        Counters::add(&counters.stored, new);
        Counters::add(
            &counters.duplicates,
            (rows.len() as u64).saturating_sub(new),
        );
        counters.batch_took(u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX));
    }

    /// Appends a batch to the spool. `None` when the pipeline recovered meanwhile.
    async fn to_spool(
        &self,
        rows: &[StoredRecord],
    ) -> Option<std::result::Result<(), NotCommitted>> {
        let mut guard = self.spool.lock().await;
        // Checked under the lock: recovery clears the flag while holding it.
        if !self.shared.degraded.load(Ordering::Acquire) {
            return None;
        }
        let spool = guard.as_mut()?;
        let texts: Vec<String> = rows.iter().map(|r| r.record.clone()).collect();
        let outcome = match spool.append(&texts).await {
            Ok(Appended::Stored) => {
                Counters::add(&self.shared.counters.spooled, rows.len() as u64);
                Err(NotCommitted::Spooled)
            }
            Ok(Appended::OverBudget) => {
                tracing::error!(target: "audit_store", records = rows.len(), "audit spool out of budget: records dropped");
                Err(NotCommitted::Dropped)
            }
            Err(e) => {
                tracing::error!(target: "audit_store", records = rows.len(), "audit spool write failed, records dropped: {e}");
                Err(NotCommitted::Dropped)
            }
        };
        if outcome == Err(NotCommitted::Dropped) {
            for row in rows {
                self.shared
                    .drop_record(row.account_id.as_deref(), row.time_ms);
            }
        }
        self.shared
            .spool_bytes
            .store(spool.used_bytes(), Ordering::Relaxed);
        Some(outcome)
    }

    /// While degraded: probe the database, and replay the spool in order once it answers.
    /// Records that overflowed are replayed once the queue is less than half full (at
    /// shutdown, whatever the queue).
    async fn recover(self: Arc<Self>, stop: Arc<AtomicBool>) {
        loop {
            let stopping = stop.load(Ordering::Acquire);
            let degraded = self.shared.degraded.load(Ordering::Acquire);
            let spilled = self.shared.spilled.load(Ordering::Acquire)
                && (stopping || self.shared.queue_depth() < self.shared.queue_capacity() / 2);
            if (degraded || spilled) && self.has_spool {
                if self.store.ping().await.is_ok() {
                    self.replay().await;
                }
            } else if !degraded {
                self.write_gaps().await;
            }
            if stopping {
                return;
            }
            tokio::time::sleep(self.probe_interval).await;
        }
    }

    /// Leaves the degraded state (strict mode serves again), saying so once.
    fn available_again(&self) {
        if self.shared.degraded.swap(false, Ordering::AcqRel) {
            tracing::info!(target: "audit_store", "audit store available again: records go to the database");
        }
    }

    /// Writes the spool's segments to the database, oldest first, as many in a transaction
    /// as hold up to a batch's records, removing them once committed; clears the degraded
    /// and spilled states when the spool is empty.
    ///
    /// While more remains behind what is being written, the spool is locked only to read and
    /// to remove segments, never during a database write: segments are immutable once
    /// appended, and appends (of overflowing records, of batches while degraded) go on
    /// meanwhile. The spool's last records are written with the lock held, and the degraded
    /// state is cleared before it is released, so appends wait for that one transaction
    /// (bounded by the write timeout) and then go to the database. Otherwise, while records
    /// keep arriving, a segment could be appended during every replay transaction that takes
    /// longer than a flush interval, the replay would never find the spool empty, and strict
    /// mode would refuse requests for as long as they came.
    async fn replay(&self) {
        loop {
            let guard = self.spool.lock().await;
            let Some(spool) = guard.as_ref() else { return };
            let oldest = match spool.oldest_batch(self.batch_size).await {
                Ok(Some(oldest)) => oldest,
                Ok(None) => {
                    // Seen empty under the lock: nothing can be appended behind this.
                    self.shared.spilled.store(false, Ordering::Release);
                    self.available_again();
                    break;
                }
                Err(e) => {
                    tracing::error!(target: "audit_store", "cannot read the audit spool: {e}");
                    return;
                }
            };
            // Held through the write only when it empties the spool.
            let mut held = oldest.all.then_some(guard);
            let mut rows = Vec::with_capacity(oldest.records.len());
            for text in oldest.records {
                match StoredRecord::from_json(text) {
                    Ok(row) => rows.push(row),
                    Err(e) => {
                        tracing::error!(target: "audit_store", "unreadable record in the audit spool, dropped: {e}");
                        Counters::add(&self.shared.counters.dropped, 1);
                    }
                }
            }
            let started = Instant::now();
            match self.insert(&rows).await {
                Ok(new) => self.replayed(&rows, new, started),
                Err(e) if e.is_data_error() => {
                    // Row by row may take long: not while appends wait.
                    held = None;
                    Counters::add(&self.shared.counters.failed_writes, 1);
                    tracing::warn!(target: "audit_store", "a spooled batch is refused, replaying row by row: {e}");
                    for row in &rows {
                        match self.insert(std::slice::from_ref(row)).await {
                            Ok(new) => {
                                self.replayed(std::slice::from_ref(row), new, Instant::now());
                            }
                            Err(e) if e.is_data_error() => {
                                tracing::error!(target: "audit_store", id = %row.id, "the audit database refuses this spooled record, dropped: {e}");
                                self.shared
                                    .drop_record(row.account_id.as_deref(), row.time_ms);
                            }
                            Err(e) => {
                                tracing::warn!(target: "audit_store", "audit spool replay failed, will retry: {e}");
                                return;
                            }
                        }
                    }
                }
                Err(e) => {
                    Counters::add(&self.shared.counters.failed_writes, 1);
                    tracing::warn!(target: "audit_store", "audit spool replay failed, will retry: {e}");
                    return;
                }
            }
            let mut guard = match held {
                Some(guard) => guard,
                None => self.spool.lock().await,
            };
            let Some(spool) = guard.as_mut() else { return };
            for id in oldest.ids {
                if let Err(e) = spool.remove(id).await {
                    tracing::error!(target: "audit_store", "cannot remove a replayed spool segment: {e}");
                    return;
                }
            }
            self.shared
                .spool_bytes
                .store(spool.used_bytes(), Ordering::Relaxed);
            if spool.is_empty() {
                // Empty under the lock: batches waiting to be spooled go to the database.
                self.shared.spilled.store(false, Ordering::Release);
                self.available_again();
                break;
            }
        }
        self.write_gaps().await;
    }

    /// Writes one gap record per account that lost records, if any did.
    async fn write_gaps(&self) {
        let spans: Vec<(Option<String>, GapSpan)> = {
            let mut gaps = self
                .shared
                .gaps
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            if gaps.spans.is_empty() {
                return;
            }
            gaps.spans.drain().collect()
        };
        let rows: Vec<StoredRecord> = spans
            .iter()
            .filter_map(|(account, span)| {
                StoredRecord::from_record(&gap_record(account.clone(), *span)).ok()
            })
            .collect();
        match self.insert(&rows).await {
            Ok(new) => {
                Counters::add(&self.shared.counters.gap_records, new);
            }
            Err(e) => {
                tracing::warn!(target: "audit_store", "cannot write audit gap records yet: {e}");
                // With a spool, the report of the loss is kept on disk beyond the budget (it
                // is small), so it survives a restart and replays in order.
                if self.has_spool {
                    let texts: Vec<String> = rows.iter().map(|r| r.record.clone()).collect();
                    let mut guard = self.spool.lock().await;
                    if let Some(spool) = guard.as_mut()
                        && let Ok(Appended::Stored) =
                            spool.append_reserved(&texts, GAP_RESERVE).await
                    {
                        self.shared.degraded.store(true, Ordering::Release);
                        self.shared
                            .spool_bytes
                            .store(spool.used_bytes(), Ordering::Relaxed);
                        return;
                    }
                }
                let mut gaps = self
                    .shared
                    .gaps
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner);
                for (account, span) in spans {
                    gaps.spans
                        .entry(account)
                        .and_modify(|e| {
                            e.lost += span.lost;
                            e.first_ms = e.first_ms.min(span.first_ms);
                            e.last_ms = e.last_ms.max(span.last_ms);
                        })
                        .or_insert(span);
                }
            }
        }
    }
}

/// The record that says an account's log lost `span.lost` records.
fn gap_record(account: Option<String>, span: GapSpan) -> AuditRecord {
    let id = Uuid::now_v7();
    let first = Timestamp::from_unix_millis(span.first_ms);
    let last = Timestamp::from_unix_millis(span.last_ms);
    AuditRecord {
        id,
        account: account.map(|id| Account { id, name: None }),
        action: Action {
            description: Some(
                format!(
                    "{} audit records were lost between {first} and {last}",
                    span.lost
                )
                .into(),
            ),
            result: ActionResult::Failure,
            time: Timestamp::now(),
            kind: ActionType::Gap,
        },
        actor: Actor {
            context: Some(ActorContext::System),
            kind: Some(ActorType::System),
            ..Actor::default()
        },
        raw: Raw {
            method: "-".into(),
            ray_id: id.simple().to_string(),
            status_code: 500,
            uri: "-".into(),
            user_agent: None,
        },
        resource: Resource {
            id: None,
            product: Some("audit_log".into()),
            request: Some(Body::from(serde_json::json!({
                "lost": span.lost,
                "first": first.to_string(),
                "last": last.to_string(),
            }))),
            response: None,
            scope: Some("accounts".into()),
            kind: Some("gap".into()),
        },
        zone: None,
    }
}
