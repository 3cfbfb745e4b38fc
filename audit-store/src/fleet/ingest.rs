//! The ingestor: a durable pull consumer of the fleet's stream that writes records into SQL
//! through the ingest pipeline, acknowledging each message once its record is committed.
//!
//! ```no_run
//! use audit_store::PostgresStore;
//! use audit_store::fleet::{FleetConfig, ingest};
//! use audit_store::store::AuditStore as _;
//!
//! # async fn run(keys: audit_store::chain::ChainKeys) -> audit_store::Result<()> {
//! let store = PostgresStore::connect("postgres://audit@db/audit").await?.chained(keys);
//! store.migrate().await?;
//! let ingestor = ingest::builder(store, FleetConfig::new("nats://10.0.0.1:4222")?)
//!     .consumer("audit-ingest")
//!     .pipeline(|p| p.writers(2))
//!     .connect()
//!     .await?;
//! let metrics = ingestor
//!     .run(async { tokio::signal::ctrl_c().await.ok(); })
//!     .await?;
//! println!("stored {}", metrics.pipeline.stored);
//! # Ok(()) }
//! ```
//!
//! # What happens to a message
//!
//! Every ingestor process of a fleet pulls from the same durable consumer (explicit
//! acknowledgement, [`ack_wait`](IngestorBuilder::ack_wait) 30 s, at most
//! [`max_ack_pending`](IngestorBuilder::max_ack_pending) messages out at once): JetStream
//! hands each message to one of them, and again to any of them when it is not acknowledged in
//! time (an ingestor killed mid-batch). Messages are taken in batches bounded in count and
//! bytes ([`batch_size`](IngestorBuilder::batch_size), [`batch_bytes`](IngestorBuilder::batch_bytes)).
//!
//! A message carries one or more records, one per line ([the wire format](super)). Each
//! record is parsed as an [`AuditRecord`] and committed through an in-process
//! [ingest pipeline](crate::pipeline) over the SQL store, in strict mode: batches from many messages
//! share one chained transaction (group commit), enriched by the pipeline's
//! [`Directory`](crate::pipeline::Directory) if one is configured, and the pipeline's
//! checkpoints, retention and gap records run as in a single process. A message is
//! acknowledged only once all its records are committed; the store skips a record it
//! already holds (the same id), so a message delivered twice (an acknowledgement lost, an
//! ingestor killed after its commit) is stored once.
//!
//! # Poison messages
//!
//! A record that is larger than [`max_record_bytes`](IngestorBuilder::max_record_bytes),
//! is not an audit record, names an account or zone by an id longer than [`MAX_ID_BYTES`]
//! (the layer never records one; the store's indexes could not hold it), or that the
//! database refuses row by row ([`StoreError::is_data_error`](crate::StoreError::is_data_error))
//! is *poison*, and so is a whole message of more than [`MAX_RECORDS_PER_MESSAGE`] records:
//! it is published to the dead-letter subject (default `audit.dead`) with the headers
//! `Audit-Dead-Reason` (`too_large`, `too_many_records`, `unparseable`, `id_too_long`,
//! `refused`), `Audit-Original-Subject`, `Audit-Original-Stream`, `Audit-Original-Sequence`,
//! `Audit-Original-Record` (the record's index in its message, from 0; absent for a whole
//! message) and `Audit-Deliveries`, counted
//! ([`IngestorMetrics::dead_lettered`]) and reported by a gap record: in the account's log
//! when the record names its account, else in the log of records without one. Its message's
//! other records are stored, and the message acknowledged; poison is never retried for ever
//! and never holds back the messages behind it.
//!
//! # The database down
//!
//! The pipeline keeps the records of unacknowledged messages in memory and retries the write
//! with backoff (no spool: the stream is the buffer). Meanwhile the ingestor tells JetStream
//! every third of `ack_wait` that it is still working on them (`+WPI`), so they are not
//! handed to another ingestor; it takes no more than [`in_flight`](IngestorBuilder::in_flight)
//! records and [`in_flight_bytes`](IngestorBuilder::in_flight_bytes) at a time, and everything
//! else waits in the stream. Were a message redelivered all the same (the ingestor paused
//! longer than `ack_wait`), the store's skip by id makes the second write harmless.
//!
//! # Shutdown
//!
//! When the future given to [`run`](Ingestor::run) resolves, the ingestor stops pulling,
//! waits until every record it took is committed and its message acknowledged (at most
//! [`shutdown_timeout`](IngestorBuilder::shutdown_timeout)), flushes the pipeline (gap
//! records, a last checkpoint) and returns. Messages buffered but not started are left
//! unacknowledged: JetStream hands them to another ingestor after `ack_wait`. If the
//! database does not come back within the timeout, the ingestor stops without acknowledging
//! what it holds, which is redelivered.
//!
//! # Metrics
//!
//! The pipeline's metrics (see [`pipeline`](crate::pipeline#metrics): stored, duplicates,
//! batch write seconds, the lag from a record's time to its commit, ...) and the ingestor's
//! own counters through the [`metrics`](https://docs.rs/metrics) facade:
//! `audit_ingest_fetched_total`, `audit_ingest_acked_total`,
//! `audit_ingest_dead_lettered_total`, `audit_ingest_redelivery_requested_total`, and the
//! gauge `audit_ingest_in_flight`. [`IngestorMonitor::metrics`] reads them all at once.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_nats::jetstream::{self, AckKind, consumer::pull};
use audit_layer::NotCommitted;
use audit_layer::record::AuditRecord;
use bytes::Bytes;
use futures_util::StreamExt as _;
use futures_util::stream::FuturesUnordered;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::config::FleetConfig;
use super::destination::ensure_streams;
use super::message::{self, MAX_RECORDS_PER_MESSAGE};
use crate::model::MAX_ID_BYTES;
use crate::pipeline::{self, IngestSink, Pipeline, PipelineBuilder, PipelineMetrics};
use crate::store::ChainedStore;
use crate::{Result, StoreError};

type Configure<S> = Box<dyn FnOnce(PipelineBuilder<S>) -> PipelineBuilder<S> + Send>;

/// The default durable consumer's name.
pub const DEFAULT_CONSUMER: &str = "audit-ingest";

/// An ingestor writing into `store` from the stream of `fleet`, with the defaults documented
/// on each setting of [`IngestorBuilder`].
pub fn builder<S: ChainedStore>(store: S, fleet: FleetConfig) -> IngestorBuilder<S> {
    IngestorBuilder {
        store,
        fleet,
        consumer: DEFAULT_CONSUMER.to_owned(),
        batch_size: 1000,
        batch_bytes: 8 << 20,
        fetch_expiry: Duration::from_secs(5),
        ack_wait: Duration::from_secs(30),
        max_ack_pending: 20_000,
        max_record_bytes: 1 << 20,
        in_flight: 8000,
        in_flight_bytes: 64 << 20,
        shutdown_timeout: Duration::from_secs(30),
        create_stream: false,
        pipeline: Box::new(|p| p),
    }
}

/// Configures an [`Ingestor`]; see [`builder`].
#[must_use]
pub struct IngestorBuilder<S> {
    store: S,
    fleet: FleetConfig,
    consumer: String,
    batch_size: usize,
    batch_bytes: usize,
    fetch_expiry: Duration,
    ack_wait: Duration,
    max_ack_pending: i64,
    max_record_bytes: usize,
    in_flight: usize,
    in_flight_bytes: usize,
    shutdown_timeout: Duration,
    create_stream: bool,
    pipeline: Configure<S>,
}

impl<S> std::fmt::Debug for IngestorBuilder<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IngestorBuilder")
            .field("fleet", &self.fleet)
            .field("consumer", &self.consumer)
            .field("batch_size", &self.batch_size)
            .field("batch_bytes", &self.batch_bytes)
            .field("ack_wait", &self.ack_wait)
            .field("max_ack_pending", &self.max_ack_pending)
            .field("in_flight", &self.in_flight)
            .field("in_flight_bytes", &self.in_flight_bytes)
            .finish_non_exhaustive()
    }
}

impl<S: ChainedStore> IngestorBuilder<S> {
    /// The durable consumer's name, shared by every ingestor of the fleet. Defaults to
    /// `audit-ingest`.
    pub fn consumer(mut self, name: impl Into<String>) -> Self {
        self.consumer = name.into();
        self
    }

    /// The most messages pulled at once, and the records committed as one group (a message's
    /// records stay together, so a group may hold one message's more). Defaults to 1,000.
    pub fn batch_size(mut self, messages: usize) -> Self {
        self.batch_size = messages.max(1);
        self
    }

    /// The most bytes of messages pulled at once, and gathered into one group commit.
    /// Defaults to 8 MiB; never less than the servers' payload limit (and a little more, for
    /// headers), so that the largest message they take can be pulled.
    pub fn batch_bytes(mut self, bytes: usize) -> Self {
        self.batch_bytes = bytes.max(1024);
        self
    }

    /// How long one pull request waits on the server for messages. Defaults to 5 s.
    pub fn fetch_expiry(mut self, expiry: Duration) -> Self {
        self.fetch_expiry = expiry.max(Duration::from_millis(100));
        self
    }

    /// How long JetStream waits for a message's acknowledgement before it hands the message
    /// to another ingestor (the consumer's `ack_wait`, set when the consumer is created).
    /// Defaults to 30 s.
    pub fn ack_wait(mut self, wait: Duration) -> Self {
        self.ack_wait = wait.max(Duration::from_secs(1));
        self
    }

    /// The most messages handed out and not yet acknowledged, over all ingestors (the
    /// consumer's `max_ack_pending`, set when the consumer is created). Defaults to 20,000.
    pub fn max_ack_pending(mut self, messages: i64) -> Self {
        self.max_ack_pending = messages.max(1);
        self
    }

    /// Records larger than this are poison (see [the module docs](self#poison-messages)).
    /// Defaults to 1 MiB.
    pub fn max_record_bytes(mut self, bytes: usize) -> Self {
        self.max_record_bytes = bytes.max(1);
        self
    }

    /// The most records of this ingestor waiting for their commit. Defaults to 8,000.
    pub fn in_flight(mut self, records: usize) -> Self {
        self.in_flight = records.max(1);
        self
    }

    /// The most bytes of messages of this ingestor waiting for their commit. Defaults to
    /// 64 MiB. With [`in_flight`](Self::in_flight), it bounds the ingestor's memory, and the
    /// pipeline's queue is sized to take them all: records are never refused for want of
    /// room (which would hand their messages back for redelivery).
    pub fn in_flight_bytes(mut self, bytes: usize) -> Self {
        self.in_flight_bytes = bytes.max(1 << 20);
        self
    }

    /// How long a shutdown waits for the records taken to be committed. Defaults to 30 s.
    pub fn shutdown_timeout(mut self, timeout: Duration) -> Self {
        self.shutdown_timeout = timeout;
        self
    }

    /// Creates the stream (and the dead-letter stream) when missing, as
    /// [`NatsDestination::ensure_stream`](super::NatsDestination::ensure_stream) does.
    /// Defaults to off: a missing stream is an error.
    pub fn create_stream(mut self, create: bool) -> Self {
        self.create_stream = create;
        self
    }

    /// Configures the pipeline that writes into the store (writers, directory, checkpoint
    /// sink, retention, metric labels...). A spool set here is ignored: the stream is the
    /// ingestor's buffer.
    pub fn pipeline(
        mut self,
        configure: impl FnOnce(PipelineBuilder<S>) -> PipelineBuilder<S> + Send + 'static,
    ) -> Self {
        self.pipeline = Box::new(configure);
        self
    }

    /// Connects (waiting for a server), checks that the stream exists (or creates it), and
    /// creates the durable consumer if it does not exist.
    ///
    /// # Errors
    ///
    /// [`StoreError::Config`] naming a setting that cannot work; [`StoreError::Stream`] when
    /// NATS does not answer or the stream is missing.
    pub async fn connect(self) -> Result<Ingestor<S>> {
        crate::fleet::subject::check_name("consumer", &self.consumer)
            .map_err(StoreError::Config)?;
        let client = self.fleet.connect(true).await?;
        let js = jetstream::ContextBuilder::new()
            .timeout(self.fleet.request_timeout)
            .build(client.clone());
        if self.create_stream {
            ensure_streams(&js, &self.fleet).await?;
        }
        let stream = js.get_stream(&self.fleet.stream).await.map_err(|e| {
            StoreError::Stream(format!(
                "cannot open the stream {} (stream): {e}; create it with --create-stream or NatsDestination::ensure_stream",
                self.fleet.stream
            ))
        })?;
        let consumer: jetstream::consumer::PullConsumer = stream
            .get_or_create_consumer(
                &self.consumer,
                pull::Config {
                    durable_name: Some(self.consumer.clone()),
                    description: Some("audit-ingest: writes audit records into SQL".to_owned()),
                    ack_policy: jetstream::consumer::AckPolicy::Explicit,
                    ack_wait: self.ack_wait,
                    max_ack_pending: self.max_ack_pending,
                    filter_subject: format!("{}.>", self.fleet.subject_prefix),
                    ..Default::default()
                },
            )
            .await
            .map_err(|e| {
                StoreError::Stream(format!(
                    "cannot open the consumer {} (consumer) of the stream {}: {e}",
                    self.consumer, self.fleet.stream
                ))
            })?;
        let in_flight = self.in_flight;
        // A pull must have room for the largest message the servers take: one larger than a
        // pull's bytes is never delivered, and holds the consumer's head for good.
        let batch_bytes = self
            .batch_bytes
            .max(client.max_payload().saturating_add(PULL_HEADROOM));
        let configured = (self.pipeline)(pipeline::builder(self.store));
        // Room for every record in flight in every lane: an account's records all go to one
        // lane, so one lane may get them all, and a strict commit that
        // finds its lane full is refused (its message would come back only after a delay).
        let lanes = configured.lanes();
        let (sink, pipeline) = configured
            .without_spool()
            .queue_capacity(
                (in_flight + self.batch_size + MAX_RECORDS_PER_MESSAGE).saturating_mul(lanes),
            )
            // Room for every byte in flight, and a pull's more: a record's size as the queue
            // counts it (its JSON's length, estimated) is about its message's.
            .queue_bytes(
                (self.in_flight_bytes as u64)
                    .saturating_add(batch_bytes as u64)
                    .saturating_mul(2),
            )
            .build()
            .await?;
        let counters = Arc::new(Counters::default());
        Ok(Ingestor {
            shared: Arc::new(Shared {
                client,
                js,
                sink,
                counters,
                dead_letter_subject: self.fleet.dead_letter_subject.clone(),
                max_record_bytes: self.max_record_bytes,
                ack_wait: self.ack_wait,
                request_timeout: self.fleet.request_timeout,
            }),
            consumer,
            pipeline,
            batch_size: self.batch_size,
            batch_bytes,
            fetch_expiry: self.fetch_expiry,
            in_flight,
            in_flight_kib: kib(self.in_flight_bytes),
            shutdown_timeout: self.shutdown_timeout,
        })
    }
}

/// A connected ingestor; [`run`](Self::run) it. See [the module docs](self).
#[must_use = "an ingestor does nothing unless run"]
pub struct Ingestor<S> {
    shared: Arc<Shared>,
    consumer: jetstream::consumer::PullConsumer,
    pipeline: Pipeline<S>,
    batch_size: usize,
    batch_bytes: usize,
    fetch_expiry: Duration,
    in_flight: usize,
    in_flight_kib: u32,
    shutdown_timeout: Duration,
}

impl<S> std::fmt::Debug for Ingestor<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ingestor")
            .field("metrics", &self.shared.metrics())
            .finish_non_exhaustive()
    }
}

/// What an ingestor did: its own counters and its pipeline's.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct IngestorMetrics {
    /// Messages received from the stream (redeliveries included).
    pub fetched: u64,
    /// Records those messages carried (see [the wire format](super#messages)).
    pub records: u64,
    /// Messages acknowledged after their records were committed (new or already stored) or
    /// moved aside.
    pub acked: u64,
    /// Poison records (or whole messages) moved to the dead-letter subject.
    pub dead_lettered: u64,
    /// Messages handed back for redelivery (the pipeline could not take a record of them).
    pub redelivery_requested: u64,
    /// Records taken and not yet settled.
    pub in_flight: u64,
    /// The pipeline's counters: `stored`, `duplicates`, `dropped`, `gap_records`, ...
    pub pipeline: PipelineMetrics,
}

/// Reads an ingestor's metrics while it runs. Cheap to clone.
#[derive(Clone)]
pub struct IngestorMonitor(Arc<Shared>);

impl std::fmt::Debug for IngestorMonitor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("IngestorMonitor")
            .field(&self.metrics())
            .finish()
    }
}

impl IngestorMonitor {
    /// The counters now.
    pub fn metrics(&self) -> IngestorMetrics {
        self.0.metrics()
    }
}

#[derive(Default)]
struct Counters {
    fetched: AtomicU64,
    records: AtomicU64,
    acked: AtomicU64,
    dead_lettered: AtomicU64,
    redelivery_requested: AtomicU64,
    in_flight: AtomicU64,
}

impl Counters {
    fn add(&self, counter: &AtomicU64, name: &'static str, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
        metrics::counter!(name).increment(n);
    }

    fn in_flight(&self, delta: i64) {
        if delta >= 0 {
            self.in_flight
                .fetch_add(delta.unsigned_abs(), Ordering::Relaxed);
        } else {
            self.in_flight
                .fetch_sub(delta.unsigned_abs(), Ordering::Relaxed);
        }
        metrics::gauge!("audit_ingest_in_flight")
            .set(self.in_flight.load(Ordering::Relaxed) as f64);
    }
}

struct Shared {
    client: async_nats::Client,
    js: jetstream::Context,
    sink: IngestSink,
    counters: Arc<Counters>,
    dead_letter_subject: String,
    max_record_bytes: usize,
    ack_wait: Duration,
    request_timeout: Duration,
}

/// Why a record (or a whole message) is poison.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Poison {
    TooLarge,
    TooMany,
    Unparseable,
    IdTooLong,
    Refused,
}

impl Poison {
    fn as_str(self) -> &'static str {
        match self {
            Self::TooLarge => "too_large",
            Self::TooMany => "too_many_records",
            Self::Unparseable => "unparseable",
            Self::IdTooLong => "id_too_long",
            Self::Refused => "refused",
        }
    }
}

impl<S: ChainedStore> Ingestor<S> {
    /// Reads the metrics while the ingestor runs.
    pub fn monitor(&self) -> IngestorMonitor {
        IngestorMonitor(Arc::clone(&self.shared))
    }

    /// The counters now.
    pub fn metrics(&self) -> IngestorMetrics {
        self.shared.metrics()
    }

    /// Ingests until `shutdown` resolves, then stops as described in [the module
    /// docs](self#shutdown) and returns the final counters.
    ///
    /// # Errors
    ///
    /// [`StoreError::Stream`] when the consumer cannot be read from at all (it was deleted).
    pub async fn run(
        self,
        shutdown: impl std::future::Future<Output = ()> + Send,
    ) -> Result<IngestorMetrics> {
        let Self {
            shared,
            consumer,
            pipeline,
            batch_size,
            batch_bytes,
            fetch_expiry,
            in_flight,
            in_flight_kib,
            shutdown_timeout,
        } = self;
        let worker = tokio::spawn(pipeline.run());
        let permits = Arc::new(Semaphore::new(in_flight));
        let kib_permits = Arc::new(Semaphore::new(in_flight_kib as usize));
        let mut settling = tokio::task::JoinSet::new();
        tokio::pin!(shutdown);
        let mut failure = None;
        'pull: loop {
            let mut messages = match consumer
                .stream()
                .max_messages_per_batch(batch_size)
                .max_bytes_per_batch(batch_bytes)
                .expires(fetch_expiry)
                .messages()
                .await
            {
                Ok(messages) => messages,
                Err(e) => {
                    tracing::warn!(target: "audit_store", "cannot pull from the audit stream, will retry: {e}");
                    tokio::select! {
                        () = &mut shutdown => break 'pull,
                        () = tokio::time::sleep(Duration::from_secs(1)) => continue 'pull,
                    }
                }
            };
            loop {
                while settling.try_join_next().is_some() {}
                let first = tokio::select! {
                    () = &mut shutdown => break 'pull,
                    next = messages.next() => next,
                };
                let mut chunk = match first {
                    Some(Ok(message)) => vec![message],
                    Some(Err(e)) => {
                        // NATS unreachable, or a missed heartbeat: the pull is renewed; not
                        // in a tight loop.
                        tracing::warn!(target: "audit_store", "audit stream pull: {e}");
                        tokio::select! {
                            () = &mut shutdown => break 'pull,
                            () = tokio::time::sleep(Duration::from_millis(250)) => continue,
                        }
                    }
                    None => {
                        if consumer_gone(&consumer).await {
                            failure = Some(StoreError::Stream(
                                "the audit consumer was deleted".to_owned(),
                            ));
                            break 'pull;
                        }
                        continue 'pull;
                    }
                };
                let mut records = records_of(&chunk[0]);
                let mut bytes = chunk[0].payload.len();
                // Whatever else is already there, up to a batch of records or of bytes: one
                // group commit.
                while records < batch_size && bytes < batch_bytes {
                    match tokio::time::timeout(Duration::from_millis(5), messages.next()).await {
                        Ok(Some(Ok(message))) => {
                            records += records_of(&message);
                            bytes += message.payload.len();
                            chunk.push(message);
                        }
                        _ => break,
                    }
                }
                let n = chunk.len();
                // A chunk larger than the whole budget still goes, alone.
                let chunk_kib = kib(chunk.iter().map(|m| m.payload.len()).sum()).min(in_flight_kib);
                let chunk_records = u32::try_from(records.min(in_flight)).unwrap_or(u32::MAX);
                let permit = tokio::select! {
                    () = &mut shutdown => {
                        // Taken, not started: left unacknowledged, for redelivery.
                        break 'pull;
                    }
                    permit = async {
                        let records = Arc::clone(&permits).acquire_many_owned(chunk_records).await?;
                        let bytes = Arc::clone(&kib_permits).acquire_many_owned(chunk_kib).await?;
                        Ok::<_, tokio::sync::AcquireError>((records, bytes))
                    } => permit,
                };
                let Ok(permit) = permit else { break 'pull };
                shared.counters.add(
                    &shared.counters.fetched,
                    "audit_ingest_fetched_total",
                    n as u64,
                );
                shared.counters.add(
                    &shared.counters.records,
                    "audit_ingest_records_total",
                    records as u64,
                );
                shared.counters.in_flight(records as i64);
                settling.spawn(Arc::clone(&shared).settle(chunk, permit));
            }
        }
        let settled = tokio::time::timeout(shutdown_timeout, async {
            while settling.join_next().await.is_some() {}
        })
        .await;
        if settled.is_ok() {
            shared.sink.shutdown().await;
            let _ = worker.await;
        } else {
            tracing::error!(target: "audit_store", "the audit database did not take the records in flight before the shutdown timeout: they are left to the stream, for redelivery");
            settling.abort_all();
            worker.abort();
        }
        // The acknowledgements written out; not waited for beyond a request's timeout when
        // NATS is unreachable (they would be lost with the connection all the same, and the
        // messages redelivered, then skipped by the store).
        let _ = tokio::time::timeout(shared.request_timeout, shared.client.flush()).await;
        match failure {
            Some(e) => Err(e),
            None => Ok(shared.metrics()),
        }
    }
}

/// Poison records of one message logged one by one; the rest are counted in one line.
const POISON_LOGGED_PER_MESSAGE: usize = 8;

/// Room in a pull, beyond the servers' payload limit, for a message's headers and framing.
const PULL_HEADROOM: usize = 64 << 10;

/// The records a message carries, as the ingestor counts them: a message with too many is
/// one (poison) item.
fn records_of(message: &jetstream::Message) -> usize {
    counted(message::count(&message.payload))
}

/// The records of a message of `lines` lines, as the ingestor counts them.
fn counted(lines: usize) -> usize {
    if lines > MAX_RECORDS_PER_MESSAGE {
        1
    } else {
        lines
    }
}

/// `bytes` in KiB, rounded up (the unit of the ingestor's byte permits).
fn kib(bytes: usize) -> u32 {
    u32::try_from(bytes.div_ceil(1024)).unwrap_or(u32::MAX)
}

async fn consumer_gone(consumer: &jetstream::consumer::PullConsumer) -> bool {
    let mut consumer = consumer.clone();
    matches!(
        consumer.info().await,
        Err(e) if e.kind() == jetstream::context::ConsumerInfoErrorKind::NotFound
    )
}

impl Shared {
    fn metrics(&self) -> IngestorMetrics {
        let c = &self.counters;
        IngestorMetrics {
            fetched: c.fetched.load(Ordering::Relaxed),
            records: c.records.load(Ordering::Relaxed),
            acked: c.acked.load(Ordering::Relaxed),
            dead_lettered: c.dead_lettered.load(Ordering::Relaxed),
            redelivery_requested: c.redelivery_requested.load(Ordering::Relaxed),
            in_flight: c.in_flight.load(Ordering::Relaxed),
            pipeline: self.sink.metrics(),
        }
    }

    /// Commits the records of `chunk` and settles each message once all of its records are:
    /// acknowledged when they are committed (poison records moved aside first), handed back
    /// whole when the pipeline could not take one of them. A message's share of `permits`
    /// is given back as soon as it is settled, not with the whole chunk: the ingestor then
    /// takes more while the chunk's slower records are still being written.
    async fn settle(
        self: Arc<Self>,
        chunk: Vec<jetstream::Message>,
        mut permits: (OwnedSemaphorePermit, OwnedSemaphorePermit),
    ) {
        let mut taken: Vec<Option<Taken>> = Vec::with_capacity(chunk.len());
        let mut commits = FuturesUnordered::new();
        for (m, message) in chunk.into_iter().enumerate() {
            let lines = message::count(&message.payload);
            let records = counted(lines);
            let kib = kib(message.payload.len()) as usize;
            let mut t = Taken {
                records,
                _permits: (
                    permits.0.split(records.min(permits.0.num_permits())),
                    permits.1.split(kib.min(permits.1.num_permits())),
                ),
                message,
                remaining: 0,
                poison: Vec::new(),
                redeliver: false,
            };
            if lines > MAX_RECORDS_PER_MESSAGE {
                t.poison
                    .push((None, t.message.payload.clone(), Poison::TooMany));
            } else {
                for (i, line) in message::records(&t.message.payload).enumerate() {
                    match self.admit(&line) {
                        Ok(record) => {
                            let sink = self.sink.clone();
                            t.remaining += 1;
                            commits.push(async move { (m, i, line, sink.commit(record).await) });
                        }
                        Err(poison) => t.poison.push((Some(i), line, poison)),
                    }
                }
            }
            if t.remaining == 0 {
                self.finish(t).await;
                taken.push(None);
            } else {
                taken.push(Some(t));
            }
        }
        let every = self.ack_wait / 3;
        let mut progress = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
        loop {
            tokio::select! {
                next = commits.next() => {
                    let Some((m, i, line, outcome)) = next else { break };
                    let Some(t) = taken[m].as_mut() else { continue };
                    match outcome {
                        Ok(()) => {}
                        // Refused by the database row by row: the pipeline counted it and
                        // notes the gap.
                        Err(NotCommitted::Dropped) => t.poison.push((Some(i), line, Poison::Refused)),
                        Err(_) => t.redeliver = true,
                    }
                    t.remaining -= 1;
                    if t.remaining == 0 {
                        let t = taken[m].take().expect("taken above");
                        self.finish(t).await;
                    }
                }
                _ = progress.tick() => {
                    // Still working on them: not to be handed to another ingestor.
                    for t in taken.iter().flatten() {
                        let _ = t.message.ack_with(AckKind::Progress).await;
                    }
                }
            }
        }
        let _ = tokio::time::timeout(self.request_timeout, self.client.flush()).await;
    }

    /// A record of a message, or why it is poison.
    fn admit(&self, line: &[u8]) -> std::result::Result<AuditRecord, Poison> {
        if line.len() > self.max_record_bytes {
            return Err(Poison::TooLarge);
        }
        let record =
            serde_json::from_slice::<AuditRecord>(line).map_err(|_| Poison::Unparseable)?;
        let long = |id: Option<&str>| id.is_some_and(|id| id.len() > MAX_ID_BYTES);
        if long(record.account.as_ref().map(|a| a.id.as_str()))
            || long(record.zone.as_ref().map(|z| z.id.as_str()))
        {
            return Err(Poison::IdTooLong);
        }
        Ok(record)
    }

    /// Settles a message whose records are all settled: handed back whole if the pipeline
    /// could not take one of them (the store skips, when it comes back, those committed);
    /// else its poison moved aside, then acknowledged.
    async fn finish(&self, t: Taken) {
        self.counters.in_flight(-(t.records as i64));
        if t.redeliver {
            let _ = t
                .message
                .ack_with(AckKind::Nak(Some(Duration::from_secs(1))))
                .await;
            self.counters.add(
                &self.counters.redelivery_requested,
                "audit_ingest_redelivery_requested_total",
                1,
            );
            return;
        }
        let mut logged = 0;
        for (_, bytes, poison) in &t.poison {
            if *poison != Poison::Refused {
                // Never reached the pipeline: its loss noted for a gap record in its
                // account's log (when it names one).
                let (account, time_ms) = account_and_time(bytes);
                if logged < POISON_LOGGED_PER_MESSAGE {
                    logged += 1;
                    tracing::error!(target: "audit_store", reason = poison.as_str(), subject = %t.message.subject, account = account.as_deref().unwrap_or(""), "poison audit record moved to the dead-letter subject");
                }
                self.sink.note_lost(account.as_deref(), time_ms);
            }
        }
        if t.poison.len() > POISON_LOGGED_PER_MESSAGE {
            tracing::error!(target: "audit_store", records = t.poison.len(), subject = %t.message.subject, "poison audit records of one message moved to the dead-letter subject (the first {POISON_LOGGED_PER_MESSAGE} logged)");
        }
        // All published at once, their acknowledgements awaited together: a message of
        // thousands of junk lines takes one round trip, not one each.
        futures_util::future::join_all(t.poison.iter().map(|(index, bytes, poison)| {
            self.move_aside(&t.message, *index, bytes.clone(), *poison)
        }))
        .await;
        if let Err(e) = t.message.ack().await {
            tracing::warn!(target: "audit_store", "cannot acknowledge an audit message (it will be redelivered, and skipped by the store): {e}");
        }
        self.counters
            .add(&self.counters.acked, "audit_ingest_acked_total", 1);
    }

    /// Publishes a poison record (record `index` of `message`, or the whole message) to the
    /// dead-letter subject with headers saying why and whence.
    async fn move_aside(
        &self,
        message: &jetstream::Message,
        index: Option<usize>,
        payload: Bytes,
        poison: Poison,
    ) {
        let mut headers = async_nats::HeaderMap::new();
        headers.insert("Audit-Dead-Reason", poison.as_str());
        headers.insert("Audit-Original-Subject", message.subject.as_str());
        if let Some(index) = index {
            headers.insert("Audit-Original-Record", index.to_string().as_str());
        }
        if let Ok(info) = message.info() {
            headers.insert("Audit-Original-Stream", info.stream);
            headers.insert(
                "Audit-Original-Sequence",
                info.stream_sequence.to_string().as_str(),
            );
            headers.insert("Audit-Deliveries", info.delivered.to_string().as_str());
            // Moved aside once, were the message delivered again before its acknowledgement.
            let id = match index {
                Some(index) => format!("{}.{}.{index}", info.stream, info.stream_sequence),
                None => format!("{}.{}", info.stream, info.stream_sequence),
            };
            headers.insert(async_nats::header::NATS_MESSAGE_ID, id.as_str());
        }
        let published = match self
            .js
            .publish_with_headers(
                self.dead_letter_subject.clone(),
                headers.clone(),
                payload.clone(),
            )
            .await
        {
            Ok(ack) => tokio::time::timeout(self.request_timeout, ack)
                .await
                .map_err(|_| "timed out".to_owned())
                .and_then(|r| r.map(drop).map_err(|e| e.to_string())),
            Err(e) => Err(e.to_string()),
        };
        if let Err(e) = published {
            // Kept nowhere in the stream (no dead-letter stream?): still sent to subscribers
            // of the subject, and never retried for ever.
            tracing::error!(target: "audit_store", "the dead-letter stream did not take a poison audit record ({e}); published without it");
            let _ = self
                .client
                .publish_with_headers(self.dead_letter_subject.clone(), headers, payload)
                .await;
        }
        self.counters.add(
            &self.counters.dead_lettered,
            "audit_ingest_dead_lettered_total",
            1,
        );
    }
}

/// A message taken from the stream, while its records are committed.
struct Taken {
    message: jetstream::Message,
    /// Its records, as [`records_of`] counts them.
    records: usize,
    /// Its share of the chunk's permits (records, KiB), given back once it is settled.
    _permits: (Option<OwnedSemaphorePermit>, Option<OwnedSemaphorePermit>),
    /// Records given to the pipeline and not settled yet.
    remaining: usize,
    /// Records (by index; `None`: the whole message) to move aside.
    poison: Vec<(Option<usize>, Bytes, Poison)>,
    /// A record the pipeline could not take: the message goes back to the stream.
    redeliver: bool,
}

/// The account id and time (ms) a payload names, when it is JSON that names them; else no
/// account, and now.
fn account_and_time(payload: &[u8]) -> (Option<String>, i64) {
    /// The two members read; the rest of the payload (bodies of up to the payload limit) is
    /// skipped, not built into a tree of several times its size.
    #[derive(serde::Deserialize)]
    struct Head {
        #[serde(default)]
        account: Option<serde_json::Value>,
        #[serde(default)]
        action: Option<serde_json::Value>,
    }
    let now = crate::time::now_ms();
    let Ok(head) = serde_json::from_slice::<Head>(payload) else {
        return (None, now);
    };
    let account = head
        .account
        .as_ref()
        .and_then(|a| a.get("id"))
        .and_then(serde_json::Value::as_str)
        .filter(|id| id.len() <= MAX_ID_BYTES)
        .map(str::to_owned);
    let time = head
        .action
        .as_ref()
        .and_then(|a| a.get("time"))
        .and_then(serde_json::Value::as_str)
        .and_then(crate::time::parse_time)
        .unwrap_or(now);
    (account, time)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_poison_message_names_its_account_when_it_can() {
        let (account, time) = account_and_time(
            br#"{"account":{"id":"acc"},"action":{"time":"2026-01-02T03:04:05Z"}}"#,
        );
        assert_eq!(account.as_deref(), Some("acc"));
        assert_eq!(time, 1_767_323_045_000);
        let (account, _) = account_and_time(b"not json");
        assert_eq!(account, None);
        let (account, _) = account_and_time(br#"{"account":{"id":7}}"#);
        assert_eq!(account, None);
        // Whatever else a record holds is skipped, whatever its shape; an account that is no
        // object is none.
        let (account, time) = account_and_time(
            br#"{"resource":{"request":{"a":[1,{"b":null}]}},"account":{"id":"acc","name":[]},"action":{"time":"2026-01-02T03:04:05Z","type":5},"x":1}"#,
        );
        assert_eq!((account.as_deref(), time), (Some("acc"), 1_767_323_045_000));
        let (account, time) =
            account_and_time(br#"{"account":"acc","action":{"time":"2026-01-02T03:04:05Z"}}"#);
        assert_eq!((account, time), (None, 1_767_323_045_000));
        let long = format!(
            r#"{{"account":{{"id":"{}"}}}}"#,
            "a".repeat(MAX_ID_BYTES + 1)
        );
        assert_eq!(account_and_time(long.as_bytes()).0, None);
    }
}
