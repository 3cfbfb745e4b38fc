//! Configuring a pipeline: every setting with its default, and [`build`](PipelineBuilder::build),
//! which opens the spool and hands out the sink and the pipeline.

use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::sync::{Notify, mpsc};

use super::Destination;
use super::enrich::{Directory, Enricher};
use super::mark::{MARK_INTERVAL, RunningMark};
use super::metrics::Counters;
use super::route::LaneRouter;
use super::shared::{Admission, Shared};
use super::sink::IngestSink;
use super::spool::Spool;
use super::{Context, Pipeline};
use crate::Result;
use crate::chain::CheckpointSink;

/// How a batch write is retried before the pipeline turns to the spool.
#[derive(Clone, Copy, Debug)]
pub(super) struct Retry {
    pub(super) attempts: u32,
    pub(super) first_backoff: Duration,
    pub(super) max_backoff: Duration,
}

impl Retry {
    pub(super) fn backoff(&self, attempt: u32) -> Duration {
        self.first_backoff
            .saturating_mul(1 << attempt.min(16))
            .min(self.max_backoff)
    }
}

/// Configures a pipeline; see [`builder`].
#[must_use]
pub struct PipelineBuilder<S> {
    pub(super) store: S,
    pub(super) queue_capacity: usize,
    pub(super) queue_bytes: u64,
    pub(super) batch_size: usize,
    pub(super) batch_bytes: u64,
    pub(super) flush_interval: Duration,
    pub(super) writers: usize,
    pub(super) directory: Option<Arc<dyn Directory>>,
    pub(super) cache_capacity: u64,
    pub(super) cache_ttl: Duration,
    pub(super) lookup_timeout: Duration,
    pub(super) spool: Option<(PathBuf, u64)>,
    pub(super) retry: Retry,
    pub(super) probe_interval: Duration,
    pub(super) write_timeout: Duration,
    pub(super) checkpoint_interval: Duration,
    pub(super) checkpoint_records: u64,
    pub(super) checkpoint_every: Duration,
    pub(super) checkpoint_sink: Option<Arc<dyn CheckpointSink>>,
    pub(super) overflow_capacity: usize,
    pub(super) overflow_bytes: u64,
    pub(super) retention: Option<Duration>,
    pub(super) retention_interval: Duration,
    pub(super) backpressure: Option<Duration>,
    /// The labels of every metric the pipeline exports through the `metrics` facade.
    pub(super) metric_labels: Vec<metrics::Label>,
}

/// 18 months of 30.44 days: the original system's retention.
pub(super) const EIGHTEEN_MONTHS: Duration = Duration::from_secs(548 * 24 * 3600);

impl<S> std::fmt::Debug for PipelineBuilder<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PipelineBuilder")
            .field("queue_capacity", &self.queue_capacity)
            .field("queue_bytes", &self.queue_bytes)
            .field("batch_size", &self.batch_size)
            .field("batch_bytes", &self.batch_bytes)
            .field("overflow_bytes", &self.overflow_bytes)
            .field("flush_interval", &self.flush_interval)
            .field("writers", &self.writers)
            .field("spool", &self.spool)
            .field("checkpoint_interval", &self.checkpoint_interval)
            .field("checkpoint_records", &self.checkpoint_records)
            .field("checkpoint_every", &self.checkpoint_every)
            .finish_non_exhaustive()
    }
}

/// A pipeline writing into `store`, with the defaults documented on each setting.
pub fn builder<S: Destination>(store: S) -> PipelineBuilder<S> {
    PipelineBuilder {
        store,
        queue_capacity: 8192,
        queue_bytes: 16 << 20,
        batch_size: 4000,
        batch_bytes: 8 << 20,
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
        checkpoint_records: 1000,
        checkpoint_every: Duration::from_secs(10),
        checkpoint_sink: None,
        overflow_capacity: 8192,
        overflow_bytes: 16 << 20,
        retention: Some(EIGHTEEN_MONTHS),
        retention_interval: Duration::from_secs(24 * 3600),
        backpressure: None,
        metric_labels: Vec::new(),
    }
}

impl<S: Destination> PipelineBuilder<S> {
    /// How many lanes (writers) the queue is divided into, each of
    /// `queue_capacity / lanes` records.
    #[cfg(feature = "nats")]
    pub(crate) fn lanes(&self) -> usize {
        self.writers
    }

    /// How many records may wait in memory for a writer. Defaults to 8,192 (about 16 MiB of
    /// records with half-kilobyte bodies; see [Memory](crate::pipeline#memory)).
    pub fn queue_capacity(mut self, records: usize) -> Self {
        self.queue_capacity = records.max(1);
        self
    }

    /// How many bytes of records may wait in memory for a writer, counted by
    /// [`AuditRecord::size_hint`](audit_layer::record::AuditRecord::size_hint) (about their
    /// JSON's length). Defaults to 16 MiB. Beyond it the queue counts as full, as beyond
    /// [`queue_capacity`](Self::queue_capacity): records go to the spool's overflow
    /// ([`overflow_bytes`](Self::overflow_bytes)), [backpressure](Self::backpressure) holds
    /// requests back from three-quarters of it, and without a spool they are dropped and
    /// counted. A single record larger than the whole bound is still taken when the queue is
    /// empty.
    ///
    /// ```no_run
    /// # use audit_store::{SqliteStore, pipeline};
    /// # async fn run(store: SqliteStore) -> audit_store::Result<()> {
    /// let (sink, pipeline) = pipeline::builder(store)
    ///     .queue_bytes(64 << 20)
    ///     .overflow_bytes(64 << 20)
    ///     .batch_bytes(16 << 20)
    ///     .build()
    ///     .await?;
    /// # Ok(()) }
    /// ```
    pub fn queue_bytes(mut self, bytes: u64) -> Self {
        self.queue_bytes = bytes.max(1);
        self
    }

    /// The most bytes of records written in one transaction (and appended to the spool as one
    /// segment, and replayed from it in one transaction), counted as
    /// [`queue_bytes`](Self::queue_bytes) counts them; a single larger record is written
    /// alone. Defaults to 8 MiB.
    pub fn batch_bytes(mut self, bytes: u64) -> Self {
        self.batch_bytes = bytes.max(1);
        self
    }

    /// How many bytes of records may wait in memory for the spool when the queue is full
    /// (only with a [`spool`](Self::spool)), counted as [`queue_bytes`](Self::queue_bytes)
    /// counts them. Defaults to 16 MiB; beyond it, records are dropped and counted (and a
    /// gap record says so).
    pub fn overflow_bytes(mut self, bytes: u64) -> Self {
        self.overflow_bytes = bytes.max(1);
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
    /// that did not grow (see [`chain`](crate::chain)): a fresh checkpoint says nothing was
    /// deleted since. Defaults to hourly. Such a round is also made at start-up, before
    /// anything is written, and at shutdown; in between, the chains that grow are
    /// checkpointed far more often (see [`checkpoint_after`](Self::checkpoint_after)). Does
    /// nothing for a store without chain keys.
    pub fn checkpoints(mut self, interval: Duration) -> Self {
        self.checkpoint_interval = interval.max(Duration::from_millis(10));
        self
    }

    /// Signs a checkpoint of each chain that grew once `records` records were stored since
    /// the last round, or `interval` passed, whichever comes first; under load, at most one
    /// round a second. Defaults to 1,000 records or 10 s: deleting the newest records (and
    /// rewinding the chain's head) is then found by a checkpoint at most 10 s or about 1,000
    /// records old, kept in the database and handed to the
    /// [checkpoint sink](Self::checkpoint_sink). Each round reads every chain's head and
    /// writes one checkpoint per chain that grew. Does nothing for a store without chain
    /// keys.
    ///
    /// ```no_run
    /// # use audit_store::{SqliteStore, pipeline};
    /// # use std::time::Duration;
    /// # async fn run(store: SqliteStore) -> audit_store::Result<()> {
    /// let (sink, pipeline) = pipeline::builder(store)
    ///     .checkpoint_after(10_000, Duration::from_secs(60))
    ///     .build()
    ///     .await?;
    /// # Ok(()) }
    /// ```
    pub fn checkpoint_after(mut self, records: u64, interval: Duration) -> Self {
        self.checkpoint_records = records.max(1);
        self.checkpoint_every = interval.max(Duration::from_millis(10));
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
    /// overflow); [`PipelineMetrics::waited`](super::PipelineMetrics::waited) and [`PipelineMetrics::waits_timed_out`](super::PipelineMetrics::waits_timed_out) count
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

    /// A label every metric of this pipeline carries through the [`metrics`] facade (see
    /// [Metrics](crate::pipeline#metrics)), e.g. to tell apart two pipelines of one process.
    /// Defaults to none; may be called again for more labels.
    ///
    /// ```no_run
    /// # async fn run(store: audit_store::SqliteStore) -> audit_store::Result<()> {
    /// let (sink, pipeline) = audit_store::pipeline::builder(store)
    ///     .metric_label("log", "billing")
    ///     .build()
    ///     .await?;
    /// # Ok(()) }
    /// ```
    pub fn metric_label(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.metric_labels
            .push(metrics::Label::new(key.into(), value.into()));
        self
    }

    /// Takes the spool away (the fleet's ingestor: the stream is its buffer).
    #[cfg(feature = "nats")]
    pub(crate) fn without_spool(mut self) -> Self {
        self.spool = None;
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
            Some((dir, budget)) => {
                // Spooled lines are authenticated under a key of the chain's secret, so that
                // a line written into the spool by hand never replays as a genuine record.
                let key = self.store.spool_keys().map(|k| k.spool_key().clone());
                Some(Spool::open(dir.clone(), *budget, key).await?)
            }
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
            counters: Counters::new(&self.metric_labels),
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
            queued_bytes: std::sync::atomic::AtomicU64::new(0),
            queue_bytes_max: self.queue_bytes,
            overflow_bytes: std::sync::atomic::AtomicU64::new(0),
            overflow_bytes_max: self.overflow_bytes,
            per_lane,
            lanes: senders.iter().map(mpsc::Sender::downgrade).collect(),
            room: Notify::new(),
            backpressure: self.backpressure.map(|max_wait| Admission {
                // The last quarter of each lane is room for the requests in flight between
                // the check and their record.
                below: (per_lane * 3 / 4).max(1),
                below_bytes: (self.queue_bytes / 4 * 3).max(1),
                max_wait,
            }),
            checkpoint_due: Notify::new(),
            checkpoint_records: self.checkpoint_records,
            stored_at_checkpoint: std::sync::atomic::AtomicU64::new(0),
        });
        let (overflow, overflow_rx) = match &spool {
            Some(_) => {
                let (tx, rx) = mpsc::channel(self.overflow_capacity);
                (Some(tx), Some(rx))
            }
            None => (None, None),
        };
        if let Some(None) = crashed {
            tracing::error!(target: "audit_store", "the last audit pipeline stopped without shutting down, and its running mark is unreadable: how many records it held in memory is unknown");
            Counters::add(&shared.counters.unclean_restarts, 1);
        }
        if let Some(Some(mark)) = crashed {
            // The mark is a file anyone with the spool directory can write: its numbers are
            // read as hints, never trusted to be in range.
            let lost = mark.in_memory.saturating_add(mark.arrivals);
            let noted_ms = mark.noted_ms.clamp(0, crate::time::now_ms());
            tracing::error!(target: "audit_store", lost, "the last audit pipeline stopped without shutting down; a gap record reports what it held in memory");
            if lost > 0 {
                let last =
                    noted_ms.saturating_add(i64::try_from(MARK_INTERVAL.as_millis()).unwrap_or(0));
                shared
                    .gaps
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .note_unattributed(lost, noted_ms, last);
            }
            Counters::add(&shared.counters.unclean_restarts, 1);
        }
        let sink = IngestSink {
            shared: Arc::clone(&shared),
            router: Arc::new(LaneRouter::new(senders.len())),
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
                batch_bytes: self.batch_bytes,
                flush_interval: self.flush_interval,
                retry: self.retry,
                probe_interval: self.probe_interval,
                write_timeout: self.write_timeout,
                checkpoint_interval: self.checkpoint_interval,
                checkpoint_every: self.checkpoint_every,
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

#[cfg(all(test, feature = "sqlite"))]
mod tests {
    use std::time::Instant;

    use audit_layer::AuditSink as _;

    use super::*;
    use crate::SqliteStore;
    use crate::pipeline::Lookup;
    use crate::pipeline::gaps::{GapSpan, gap_record};
    use crate::store::AuditStore as _;

    /// A directory that answers after ten seconds.
    struct Slow;

    impl Directory for Slow {
        fn account_name<'a>(&'a self, _: &'a str) -> Lookup<'a> {
            Box::pin(async {
                tokio::time::sleep(Duration::from_secs(10)).await;
                Ok(Some("too late".to_owned()))
            })
        }

        fn zone_name<'a>(&'a self, zone_id: &'a str) -> Lookup<'a> {
            self.account_name(zone_id)
        }
    }

    #[tokio::test]
    async fn a_directory_slower_than_its_timeout_leaves_the_name_out() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(dir.path().join("audit.db"))
            .await
            .unwrap();
        store.migrate().await.unwrap();
        let (sink, pipeline) = builder(store.clone())
            .directory(Slow)
            .directory_timeout(Duration::from_millis(50))
            .build()
            .await
            .unwrap();
        let running = tokio::spawn(pipeline.run());
        let started = Instant::now();
        let record = gap_record(Some("acc".to_owned()), GapSpan::at(0));
        let id = record.id;
        sink.submit(record);
        sink.shutdown().await;
        running.await.unwrap();
        // The default timeout (2 s) would have held the record that long.
        assert!(
            started.elapsed() < Duration::from_millis(1500),
            "waited {:?} for the directory",
            started.elapsed()
        );
        let stored = store
            .get("acc", id)
            .await
            .unwrap()
            .expect("the record is stored");
        let stored: serde_json::Value = serde_json::from_str(&stored).unwrap();
        assert_eq!(stored["account"]["id"], "acc");
        assert!(stored["account"].get("name").is_none(), "{stored}");
    }
}
