//! Where finished records go: the [`AuditSink`] trait and the sinks that ship with the layer.
//!
//! The layer hands every record to a sink with [`AuditSink::submit`], which must not block and
//! must not wait for storage: the request path never awaits a database. The `audit-store` crate
//! implements the trait with a bounded queue in front of its batching ingest pipeline.
//!
//! Shipped here:
//! - [`MemorySink`] keeps records in memory, for tests;
//! - [`ChannelSink`] forwards records into a bounded tokio channel, counting what it had to drop;
//! - [`TracingSink`] (the default) emits each record as one JSON `tracing` event;
//! - [`DiscardSink`] drops every record, for measuring the layer's own cost.
//!
//! Closures implement the trait too:
//!
//! ```
//! use audit_layer::{AuditLayer, AuditPolicy, record::AuditRecord};
//!
//! let layer = AuditLayer::new(AuditPolicy::default())
//!     .sink(|record: AuditRecord| println!("{}", record.raw.cf_ray_id));
//! ```

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::sync::{Notify, mpsc};

use crate::record::AuditRecord;

/// Receives finished audit records.
///
/// `submit` is called on the request path, once per request, after the response has been
/// handed to the server (at the end of the response body, or when it is dropped). It must
/// return promptly: queue the record, never perform I/O inline.
///
/// Sinks that can confirm a durable write also support strict mode
/// ([`AuditLayer::strict`](crate::AuditLayer::strict)) by overriding
/// [`submit_and_commit`](Self::submit_and_commit) and [`is_available`](Self::is_available).
pub trait AuditSink: Send + Sync + 'static {
    /// Takes one finished record.
    fn submit(&self, record: AuditRecord);

    /// Takes one record and completes once it is durably stored (strict mode). The response
    /// waits for this future; many waiting records should share a write (group commit).
    ///
    /// The default submits and completes at once: a sink that cannot confirm durability
    /// claims nothing more than it can.
    fn submit_and_commit(&self, record: AuditRecord) -> Commit {
        self.submit(record);
        Box::pin(std::future::ready(Ok(())))
    }

    /// Whether the sink can store records durably right now. In strict mode a request is
    /// answered `503 Service Unavailable`, without running the handler, when it cannot.
    /// Defaults to `true`.
    fn is_available(&self) -> bool {
        true
    }

    /// Backpressure: `None` when the sink has room for another record now, or a future that
    /// completes once it has (or once the sink stops waiting).
    ///
    /// The layer asks before it serves each audited request; while the future is pending the
    /// request waits, before its body is read and before the handler runs. A sink whose
    /// storage falls behind thus slows the server down to what storage absorbs, instead of
    /// letting records pile up in memory. Requests of unaudited operations never wait.
    ///
    /// Called once per audited request, so the `None` answer must be cheap (an atomic load,
    /// say). Defaults to `None`: never wait.
    ///
    /// ```
    /// use audit_layer::{AuditSink, Backpressure, record::AuditRecord};
    /// use std::sync::Arc;
    /// use tokio::sync::Semaphore;
    ///
    /// /// Lets at most 100 records be in flight to a slow destination.
    /// struct Limited(Arc<Semaphore>);
    ///
    /// impl AuditSink for Limited {
    ///     fn submit(&self, record: AuditRecord) {
    ///         // ... hand the record over; a permit comes back when it is stored
    ///     }
    ///
    ///     fn backpressure(&self) -> Option<Backpressure> {
    ///         if self.0.available_permits() > 0 {
    ///             return None;
    ///         }
    ///         let permits = Arc::clone(&self.0);
    ///         Some(Box::pin(async move {
    ///             let _ = permits.acquire().await;
    ///         }))
    ///     }
    /// }
    /// ```
    fn backpressure(&self) -> Option<Backpressure> {
        None
    }
}

/// What [`AuditSink::backpressure`] returns when the sink is full: completes when a request
/// may go on.
pub type Backpressure = Pin<Box<dyn Future<Output = ()> + Send>>;

/// The future of [`AuditSink::submit_and_commit`].
pub type Commit = Pin<Box<dyn Future<Output = Result<(), NotCommitted>> + Send>>;

/// Why a record given to [`AuditSink::submit_and_commit`] was not durably stored. Strict mode
/// answers the request `503` in every case; the variants tell operators (and metrics) where the
/// record went.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum NotCommitted {
    /// The sink could not accept the record (its queue was full, or it was shutting down).
    #[error("the audit sink could not accept the record")]
    Rejected,
    /// The store was unavailable; the record went to a local spool and will be stored when it
    /// returns.
    #[error("the audit store is unavailable; the record was spooled")]
    Spooled,
    /// The record was lost (a spool out of budget or unwritable, or a store that refused it).
    /// A sink that drops records says so in its log too (audit-store writes a gap record).
    #[error("the audit record was dropped")]
    Dropped,
}

impl<F> AuditSink for F
where
    F: Fn(AuditRecord) + Send + Sync + 'static,
{
    fn submit(&self, record: AuditRecord) {
        self(record)
    }
}

impl<S: AuditSink + ?Sized> AuditSink for Arc<S> {
    fn submit(&self, record: AuditRecord) {
        (**self).submit(record)
    }

    fn submit_and_commit(&self, record: AuditRecord) -> Commit {
        (**self).submit_and_commit(record)
    }

    fn is_available(&self) -> bool {
        (**self).is_available()
    }

    fn backpressure(&self) -> Option<Backpressure> {
        (**self).backpressure()
    }
}

/// Drops every record. Useful to measure what capture and redaction cost on their own.
///
/// ```
/// use audit_layer::{AuditLayer, AuditPolicy, sink::DiscardSink};
/// let layer = AuditLayer::new(AuditPolicy::default()).sink(DiscardSink);
/// ```
#[derive(Clone, Copy, Debug, Default)]
pub struct DiscardSink;

impl AuditSink for DiscardSink {
    fn submit(&self, record: AuditRecord) {
        drop(record);
    }
}

/// Emits every record as one `tracing` event at `INFO` level, target `audit`, with the record
/// as JSON in the `record` field. The default sink, so that a layer without a store still
/// leaves a trail in the application's logs.
#[derive(Clone, Copy, Debug, Default)]
pub struct TracingSink;

impl AuditSink for TracingSink {
    fn submit(&self, record: AuditRecord) {
        match serde_json::to_string(&record) {
            Ok(json) => tracing::info!(target: "audit", record = %json),
            Err(e) => {
                tracing::error!(target: "audit", id = %record.id, "unserializable audit record: {e}")
            }
        }
    }
}

/// Forwards records into a bounded tokio channel without waiting.
///
/// When the channel is full or closed the record is dropped and counted in
/// [`dropped`](Self::dropped); the request is never held up.
///
/// ```
/// use audit_layer::sink::{AuditSink, ChannelSink};
///
/// # let record: audit_layer::record::AuditRecord = serde_json::from_str(r#"{"id":"01948c5e-9a2d-7b3c-8f00-0123456789ab","action":{"result":"success","time":"2025-01-23T18:25:14.749Z","type":"view"},"actor":{},"raw":{"method":"GET","cf_ray_id":"r","status_code":200,"uri":"/"},"resource":{}}"#).unwrap();
/// let (sink, mut records) = ChannelSink::new(1);
/// sink.submit(record.clone());
/// sink.submit(record); // the channel is full: dropped, not awaited
/// assert_eq!(sink.dropped(), 1);
/// assert!(records.try_recv().is_ok());
/// ```
#[derive(Clone, Debug)]
pub struct ChannelSink {
    sender: mpsc::Sender<AuditRecord>,
    dropped: Arc<AtomicU64>,
}

impl ChannelSink {
    /// A sink and the receiver of its records; `capacity` records may wait in the channel.
    ///
    /// # Panics
    ///
    /// If `capacity` is 0.
    pub fn new(capacity: usize) -> (Self, mpsc::Receiver<AuditRecord>) {
        let (sender, receiver) = mpsc::channel(capacity);
        let sink = Self {
            sender,
            dropped: Arc::default(),
        };
        (sink, receiver)
    }

    /// How many records were dropped because the channel was full or closed.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

impl AuditSink for ChannelSink {
    fn submit(&self, record: AuditRecord) {
        if self.sender.try_send(record).is_err() {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Keeps every record in memory, for tests.
///
/// With the `validate` feature on, every record is also checked against
/// `schemas/audit-log.schema.json` as it arrives, and reading the records fails the test if
/// any did not validate.
///
/// ```
/// use audit_layer::sink::{AuditSink, MemorySink};
///
/// let sink = MemorySink::new();
/// assert!(sink.records().is_empty());
/// ```
#[derive(Clone, Default)]
pub struct MemorySink {
    inner: Arc<MemoryInner>,
}

#[derive(Default)]
struct MemoryInner {
    records: Mutex<Vec<AuditRecord>>,
    invalid: Mutex<Vec<String>>,
    arrived: Notify,
}

impl fmt::Debug for MemorySink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemorySink")
            .field("records", &self.len())
            .finish()
    }
}

impl MemorySink {
    /// An empty sink.
    pub fn new() -> Self {
        Self::default()
    }

    /// How many records arrived so far.
    pub fn len(&self) -> usize {
        self.lock_records().len()
    }

    /// Whether no record arrived yet.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// A copy of the records received so far, in arrival order.
    ///
    /// # Panics
    ///
    /// With the `validate` feature, if any record failed schema validation.
    pub fn records(&self) -> Vec<AuditRecord> {
        self.assert_valid();
        self.lock_records().clone()
    }

    /// Waits until at least `n` records arrived, then returns them all.
    ///
    /// # Panics
    ///
    /// If fewer than `n` arrive within `timeout` (naming what did arrive), or, with the
    /// `validate` feature, if any record failed schema validation.
    pub async fn wait_for(&self, n: usize, timeout: Duration) -> Vec<AuditRecord> {
        let wait = async {
            loop {
                let arrived = self.inner.arrived.notified();
                if self.len() >= n {
                    return;
                }
                arrived.await;
            }
        };
        if tokio::time::timeout(timeout, wait).await.is_err() {
            let got = self.records();
            panic!(
                "expected {n} audit records within {timeout:?}, got {}: {got:#?}",
                got.len()
            );
        }
        self.records()
    }

    fn lock_records(&self) -> std::sync::MutexGuard<'_, Vec<AuditRecord>> {
        self.inner
            .records
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn assert_valid(&self) {
        let invalid = self
            .inner
            .invalid
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        assert!(
            invalid.is_empty(),
            "records failed schemas/audit-log.schema.json:\n{}",
            invalid.join("\n")
        );
    }
}

impl AuditSink for MemorySink {
    fn submit(&self, record: AuditRecord) {
        #[cfg(feature = "validate")]
        if let Err(e) = crate::schema::validate(&record) {
            self.inner
                .invalid
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push(e.to_string());
        }
        self.lock_records().push(record);
        self.inner.arrived.notify_waiters();
    }
}
