//! Counters for every path a record can take, as a snapshot struct and in Prometheus text,
//! and the same counts, with histograms and gauges, through the [`metrics`] facade.
//! See [Metrics](super#metrics).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use metrics::{Counter, Gauge, Histogram, Label};

/// Buckets for the pipeline's latency histograms, in seconds: 100 µs to 60 s.
pub const LATENCY_BUCKETS: &[f64] = &[
    0.0001, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
    30.0, 60.0,
];

/// Buckets for the records in a batch: 1 to 4,096.
pub const BATCH_RECORDS_BUCKETS: &[f64] = &[
    1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0, 2048.0, 4096.0,
];

/// Each histogram the pipeline records, with the buckets suited to it.
///
/// ```
/// let names: Vec<&str> = audit_store::pipeline::HISTOGRAM_BUCKETS.iter().map(|(n, _)| *n).collect();
/// assert_eq!(names, ["audit_batch_records", "audit_batch_write_seconds", "audit_commit_lag_seconds"]);
/// ```
pub const HISTOGRAM_BUCKETS: [(&str, &[f64]); 3] = [
    ("audit_batch_records", BATCH_RECORDS_BUCKETS),
    ("audit_batch_write_seconds", LATENCY_BUCKETS),
    ("audit_commit_lag_seconds", LATENCY_BUCKETS),
];

/// One count: the value the snapshot reads, and the same count through the facade.
#[derive(Debug)]
pub(crate) struct Tally {
    value: AtomicU64,
    exported: Counter,
}

impl Tally {
    fn new(name: &'static str, help: &'static str, labels: &[Label]) -> Self {
        metrics::describe_counter!(name, help);
        Self {
            value: AtomicU64::new(0),
            exported: metrics::counter!(name, labels.iter()),
        }
    }

    /// The count now.
    pub(crate) fn get(&self) -> u64 {
        self.value.load(Ordering::Relaxed)
    }
}

/// Where a committed record came from, for the lag histogram.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Source {
    /// Straight from the queue.
    Queue,
    /// Replayed from the spool.
    Spool,
}

/// Live counters, shared by the sink and the pipeline, and the facade's histograms and gauges.
#[derive(Debug)]
pub(crate) struct Counters {
    pub(crate) enqueued: Tally,
    pub(crate) stored: Tally,
    pub(crate) duplicates: Tally,
    pub(crate) spooled: Tally,
    pub(crate) replayed: Tally,
    pub(crate) dropped: Tally,
    pub(crate) failed_writes: Tally,
    pub(crate) batches: Tally,
    batch_micros_sum: AtomicU64,
    batch_micros_max: AtomicU64,
    pub(crate) gap_records: Tally,
    pub(crate) checkpoints: Tally,
    pub(crate) overflowed: Tally,
    pub(crate) expired: Tally,
    pub(crate) unclean_restarts: Tally,
    pub(crate) spool_rejected: Tally,
    pub(crate) retention_refused: Tally,
    pub(crate) waited: Tally,
    pub(crate) waits_timed_out: Tally,
    batch_records: Histogram,
    batch_seconds: Histogram,
    lag_from_queue: Histogram,
    lag_from_spool: Histogram,
    queue_depth: Gauge,
    queue_bytes: Gauge,
    spool_bytes: Gauge,
    /// The export jobs reported with [`IngestSink::report_export`](super::IngestSink::report_export).
    pub(crate) exports: std::sync::Mutex<Vec<crate::export::ExportStatus>>,
}

impl Default for Counters {
    fn default() -> Self {
        Self::new(&[])
    }
}

impl Counters {
    /// Counters registered with the facade's recorder (if one is installed), each metric
    /// carrying `labels`.
    pub(crate) fn new(labels: &[Label]) -> Self {
        let help = |name: &str| {
            PROMETHEUS
                .iter()
                .find(|(n, _, _)| *n == name)
                .map_or("", |(_, _, help)| *help)
        };
        let tally = |name: &'static str| Tally::new(name, help(name), labels);
        let gauge = |name: &'static str| {
            metrics::describe_gauge!(name, help(name));
            metrics::gauge!(name, labels.iter())
        };
        metrics::describe_histogram!(
            "audit_batch_records",
            metrics::Unit::Count,
            "Records in each batch written to the database."
        );
        metrics::describe_histogram!(
            "audit_batch_write_seconds",
            metrics::Unit::Seconds,
            "Time of each batch write (one transaction)."
        );
        metrics::describe_histogram!(
            "audit_commit_lag_seconds",
            metrics::Unit::Seconds,
            "From a record's action time to its commit."
        );
        let lag = |from: &'static str| {
            let mut labels = labels.to_vec();
            labels.push(Label::from_static_parts("from", from));
            metrics::histogram!("audit_commit_lag_seconds", labels.iter())
        };
        Self {
            enqueued: tally("audit_records_enqueued_total"),
            stored: tally("audit_records_stored_total"),
            duplicates: tally("audit_records_duplicate_total"),
            spooled: tally("audit_records_spooled_total"),
            replayed: tally("audit_records_replayed_total"),
            dropped: tally("audit_records_dropped_total"),
            failed_writes: tally("audit_batch_write_failures_total"),
            batches: tally("audit_batches_total"),
            batch_micros_sum: AtomicU64::new(0),
            batch_micros_max: AtomicU64::new(0),
            gap_records: tally("audit_gap_records_total"),
            checkpoints: tally("audit_chain_checkpoints_total"),
            overflowed: tally("audit_records_overflowed_total"),
            expired: tally("audit_records_expired_total"),
            unclean_restarts: tally("audit_unclean_restarts_total"),
            spool_rejected: tally("audit_spool_records_rejected_total"),
            retention_refused: tally("audit_retention_refusals_total"),
            waited: tally("audit_requests_waited_total"),
            waits_timed_out: tally("audit_request_waits_timed_out_total"),
            batch_records: metrics::histogram!("audit_batch_records", labels.iter()),
            batch_seconds: metrics::histogram!("audit_batch_write_seconds", labels.iter()),
            lag_from_queue: lag("queue"),
            lag_from_spool: lag("spool"),
            queue_depth: gauge("audit_queue_depth"),
            queue_bytes: gauge("audit_queue_bytes"),
            spool_bytes: gauge("audit_spool_bytes"),
            exports: std::sync::Mutex::new(Vec::new()),
        }
    }

    /// Adds `n` to `counter`; the count before.
    pub(crate) fn add(counter: &Tally, n: u64) -> u64 {
        counter.exported.increment(n);
        counter.value.fetch_add(n, Ordering::Relaxed)
    }

    /// One batch written in `took`: its records, committed at once, whose action times are
    /// `times_ms`.
    pub(crate) fn batch_written(
        &self,
        took: Duration,
        from: Source,
        times_ms: impl ExactSizeIterator<Item = i64>,
    ) {
        let micros = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
        Self::add(&self.batches, 1);
        self.batch_micros_sum.fetch_add(micros, Ordering::Relaxed);
        self.batch_micros_max.fetch_max(micros, Ordering::Relaxed);
        self.batch_records.record(times_ms.len() as f64);
        self.batch_seconds.record(took.as_secs_f64());
        let lag = match from {
            Source::Queue => &self.lag_from_queue,
            Source::Spool => &self.lag_from_spool,
        };
        let now_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
        for time_ms in times_ms {
            // A clock that went back, or a record from the future, is no lag.
            lag.record(now_ms.saturating_sub(time_ms).max(0) as f64 / 1000.0);
        }
    }

    /// Sets the gauges of what the pipeline holds now.
    pub(crate) fn levels(&self, queue_depth: u64, queue_bytes: u64, spool_bytes: u64) {
        self.queue_depth.set(queue_depth as f64);
        self.queue_bytes.set(queue_bytes as f64);
        self.spool_bytes.set(spool_bytes as f64);
    }

    pub(crate) fn snapshot(
        &self,
        queue_depth: u64,
        queue_bytes: u64,
        spool_bytes: u64,
    ) -> PipelineMetrics {
        let batches = self.batches.get();
        PipelineMetrics {
            enqueued: self.enqueued.get(),
            stored: self.stored.get(),
            duplicates: self.duplicates.get(),
            spooled: self.spooled.get(),
            replayed: self.replayed.get(),
            dropped: self.dropped.get(),
            failed_writes: self.failed_writes.get(),
            gap_records: self.gap_records.get(),
            checkpoints: self.checkpoints.get(),
            overflowed: self.overflowed.get(),
            expired: self.expired.get(),
            unclean_restarts: self.unclean_restarts.get(),
            spool_rejected: self.spool_rejected.get(),
            retention_refused: self.retention_refused.get(),
            waited: self.waited.get(),
            waits_timed_out: self.waits_timed_out.get(),
            batches,
            batch_latency_avg_micros: self
                .batch_micros_sum
                .load(Ordering::Relaxed)
                .checked_div(batches)
                .unwrap_or(0),
            batch_latency_max_micros: self.batch_micros_max.load(Ordering::Relaxed),
            queue_depth,
            queue_bytes,
            spool_bytes,
            exports: self
                .exports
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .iter()
                .map(crate::export::ExportStatus::snapshot)
                .collect(),
        }
    }
}

/// A snapshot of the pipeline's counters. Every record the layer submits ends up counted as
/// exactly one of stored, duplicate (already stored: a retried write), spooled-and-waiting,
/// or dropped; `replayed` counts the spooled ones that reached the database since.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct PipelineMetrics {
    /// Records accepted: into the queue, or, when it was full, into its overflow to the spool.
    pub enqueued: u64,
    /// Records written to the database (directly or replayed from the spool).
    pub stored: u64,
    /// Records the database already held (a batch retried after an unclear failure).
    pub duplicates: u64,
    /// Records written to the local spool while the database was unavailable.
    pub spooled: u64,
    /// Spooled records since written to the database (also counted in `stored`).
    pub replayed: u64,
    /// Records lost: the queue was full, or the spool out of its budget.
    pub dropped: u64,
    /// Batch writes that failed (and were retried or spooled).
    pub failed_writes: u64,
    /// Gap records written to say how many records were lost, and when.
    pub gap_records: u64,
    /// Records that found the queue full and went to the spool instead (also counted in
    /// `spooled` once appended).
    pub overflowed: u64,
    /// Records deleted by retention.
    pub expired: u64,
    /// 1 when this pipeline found that the previous one (same spool) was killed without
    /// shutting down; a gap record reports what it held in memory.
    pub unclean_restarts: u64,
    /// Spooled records refused at replay because their authentication failed (a line
    /// forged, edited or damaged in the spool): never stored; also counted in `dropped`, and
    /// reported by a gap record.
    pub spool_rejected: u64,
    /// Chains retention refused to prune because what it was about to delete does not
    /// verify (see [`ChainedStore::retain`](crate::store::ChainedStore::retain)), counted
    /// per chain and pass.
    pub retention_refused: u64,
    /// Requests that waited for room in the queue ([backpressure](super::PipelineBuilder::backpressure)).
    pub waited: u64,
    /// Of those, requests that went on after the longest wait, the queue still full.
    pub waits_timed_out: u64,
    /// Chain checkpoints signed (one per account per round; see [`chain`](crate::chain)).
    pub checkpoints: u64,
    /// Batches written.
    pub batches: u64,
    /// Mean time to write one batch, in microseconds.
    pub batch_latency_avg_micros: u64,
    /// Longest time to write one batch, in microseconds.
    pub batch_latency_max_micros: u64,
    /// Records waiting in the queue now.
    pub queue_depth: u64,
    /// Bytes of records in memory now: in the queue and the overflow buffer (by
    /// [`AuditRecord::size_hint`](audit_layer::record::AuditRecord::size_hint)).
    pub queue_bytes: u64,
    /// Bytes in the spool now.
    pub spool_bytes: u64,
    /// The export and alert jobs reported to the pipeline: delivered, failed, lag.
    pub exports: Vec<crate::export::ExportMetrics>,
}

impl PipelineMetrics {
    /// The counters in the Prometheus text exposition format (feature `prometheus`).
    ///
    /// ```
    /// let text = audit_store::pipeline::PipelineMetrics::default().to_prometheus();
    /// assert!(text.contains("audit_records_stored_total 0\n"));
    /// ```
    #[cfg(feature = "prometheus")]
    #[cfg_attr(docsrs, doc(cfg(feature = "prometheus")))]
    pub fn to_prometheus(&self) -> String {
        use std::fmt::Write;
        let values = [
            self.enqueued,
            self.stored,
            self.duplicates,
            self.spooled,
            self.replayed,
            self.dropped,
            self.spool_rejected,
            self.failed_writes,
            self.gap_records,
            self.overflowed,
            self.expired,
            self.unclean_restarts,
            self.waited,
            self.waits_timed_out,
            self.checkpoints,
            self.retention_refused,
            self.batches,
            self.batch_latency_avg_micros,
            self.batch_latency_max_micros,
            self.queue_depth,
            self.queue_bytes,
            self.spool_bytes,
        ];
        let mut out = String::with_capacity(2048);
        for ((name, kind, help), value) in PROMETHEUS.iter().zip(values) {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}"
            );
        }
        if !self.exports.is_empty() {
            out.push_str(&crate::export::exports_to_prometheus(&self.exports));
        }
        out
    }
}

/// Each metric of [`PipelineMetrics::to_prometheus`], in the order of its values: name, type
/// and help text (also the facade's descriptions).
const PROMETHEUS: [(&str, &str, &str); 22] = [
    (
        "audit_records_enqueued_total",
        "counter",
        "Records accepted into the ingest queue.",
    ),
    (
        "audit_records_stored_total",
        "counter",
        "Records written to the database.",
    ),
    (
        "audit_records_duplicate_total",
        "counter",
        "Records the database already held.",
    ),
    (
        "audit_records_spooled_total",
        "counter",
        "Records written to the local spool.",
    ),
    (
        "audit_records_replayed_total",
        "counter",
        "Spooled records since written to the database.",
    ),
    (
        "audit_records_dropped_total",
        "counter",
        "Records lost (queue full or spool out of budget).",
    ),
    (
        "audit_spool_records_rejected_total",
        "counter",
        "Spooled records refused at replay: their authentication failed.",
    ),
    (
        "audit_batch_write_failures_total",
        "counter",
        "Failed batch writes.",
    ),
    ("audit_gap_records_total", "counter", "Gap records written."),
    (
        "audit_records_overflowed_total",
        "counter",
        "Records that found the queue full and went to the spool.",
    ),
    (
        "audit_records_expired_total",
        "counter",
        "Records deleted by retention.",
    ),
    (
        "audit_unclean_restarts_total",
        "counter",
        "Starts that found the previous pipeline killed without shutting down.",
    ),
    (
        "audit_requests_waited_total",
        "counter",
        "Requests that waited for room in the ingest queue (backpressure).",
    ),
    (
        "audit_request_waits_timed_out_total",
        "counter",
        "Requests that went on after the longest backpressure wait.",
    ),
    (
        "audit_chain_checkpoints_total",
        "counter",
        "Chain checkpoints signed.",
    ),
    (
        "audit_retention_refusals_total",
        "counter",
        "Chains retention refused to prune: what it would delete does not verify.",
    ),
    ("audit_batches_total", "counter", "Batches written."),
    (
        "audit_batch_latency_avg_microseconds",
        "gauge",
        "Mean batch write time.",
    ),
    (
        "audit_batch_latency_max_microseconds",
        "gauge",
        "Longest batch write time.",
    ),
    (
        "audit_queue_depth",
        "gauge",
        "Records waiting in the ingest queue.",
    ),
    (
        "audit_queue_bytes",
        "gauge",
        "Bytes of records waiting in memory (queue and overflow).",
    ),
    ("audit_spool_bytes", "gauge", "Bytes in the local spool."),
];
