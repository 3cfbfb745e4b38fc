//! Counters for every path a record can take, as a snapshot struct and in Prometheus text.

use std::sync::atomic::{AtomicU64, Ordering};

/// Live counters, shared by the sink and the pipeline.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) enqueued: AtomicU64,
    pub(crate) stored: AtomicU64,
    pub(crate) duplicates: AtomicU64,
    pub(crate) spooled: AtomicU64,
    pub(crate) replayed: AtomicU64,
    pub(crate) dropped: AtomicU64,
    pub(crate) failed_writes: AtomicU64,
    pub(crate) batches: AtomicU64,
    pub(crate) batch_micros_sum: AtomicU64,
    pub(crate) batch_micros_max: AtomicU64,
    pub(crate) gap_records: AtomicU64,
    pub(crate) checkpoints: AtomicU64,
    pub(crate) overflowed: AtomicU64,
    pub(crate) expired: AtomicU64,
    pub(crate) unclean_restarts: AtomicU64,
    pub(crate) spool_rejected: AtomicU64,
    pub(crate) retention_refused: AtomicU64,
    pub(crate) waited: AtomicU64,
    pub(crate) waits_timed_out: AtomicU64,
    /// The export jobs reported with [`IngestSink::report_export`](super::IngestSink::report_export).
    pub(crate) exports: std::sync::Mutex<Vec<crate::export::ExportStatus>>,
}

impl Counters {
    pub(crate) fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    pub(crate) fn batch_took(&self, micros: u64) {
        Self::add(&self.batches, 1);
        Self::add(&self.batch_micros_sum, micros);
        self.batch_micros_max.fetch_max(micros, Ordering::Relaxed);
    }

    pub(crate) fn snapshot(
        &self,
        queue_depth: u64,
        queue_bytes: u64,
        spool_bytes: u64,
    ) -> PipelineMetrics {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let batches = get(&self.batches);
        PipelineMetrics {
            enqueued: get(&self.enqueued),
            stored: get(&self.stored),
            duplicates: get(&self.duplicates),
            spooled: get(&self.spooled),
            replayed: get(&self.replayed),
            dropped: get(&self.dropped),
            failed_writes: get(&self.failed_writes),
            gap_records: get(&self.gap_records),
            checkpoints: get(&self.checkpoints),
            overflowed: get(&self.overflowed),
            expired: get(&self.expired),
            unclean_restarts: get(&self.unclean_restarts),
            spool_rejected: get(&self.spool_rejected),
            retention_refused: get(&self.retention_refused),
            waited: get(&self.waited),
            waits_timed_out: get(&self.waits_timed_out),
            batches,
            batch_latency_avg_micros: get(&self.batch_micros_sum)
                .checked_div(batches)
                .unwrap_or(0),
            batch_latency_max_micros: get(&self.batch_micros_max),
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
/// and help text.
#[cfg(feature = "prometheus")]
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
