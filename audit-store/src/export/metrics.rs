//! What an export job has done and how far behind it is: counters any thread can read, and
//! the same through the [`metrics`] facade, labelled `job=<name>`.
//!
//! | facade name | kind | meaning |
//! | --- | --- | --- |
//! | `audit_export_delivered_records_total` | counter | records delivered |
//! | `audit_export_delivered_batches_total` | counter | batches delivered |
//! | `audit_export_failed_attempts_total` | counter | delivery attempts that failed |
//! | `audit_export_refused_attempts_total` | counter | of those, attempts the destination refused for what the batch held |
//! | `audit_export_skipped_records_total` | counter | records refused alone and skipped ([`skip_refused_after`](crate::export::ExportJob::skip_refused_after)) |
//! | `audit_export_held_accounts` | gauge | accounts whose export waits on a refused batch |
//! | `audit_export_read_errors_total` | counter | reads of the store that failed |
//! | `audit_export_consecutive_failures` | gauge | failed attempts since the last delivery |
//! | `audit_export_lag_seconds` | gauge | age of the oldest record not yet delivered |

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use metrics::{Counter, Gauge};

/// The job's metrics through the facade, for whatever recorder the app installs (none: no-ops).
#[derive(Debug)]
struct Facade {
    delivered_records: Counter,
    delivered_batches: Counter,
    failed_attempts: Counter,
    refused_attempts: Counter,
    skipped_records: Counter,
    read_errors: Counter,
    consecutive_failures: Gauge,
    held_accounts: Gauge,
    lag_seconds: Gauge,
}

impl Default for Facade {
    fn default() -> Self {
        Self {
            delivered_records: Counter::noop(),
            delivered_batches: Counter::noop(),
            failed_attempts: Counter::noop(),
            refused_attempts: Counter::noop(),
            skipped_records: Counter::noop(),
            read_errors: Counter::noop(),
            consecutive_failures: Gauge::noop(),
            held_accounts: Gauge::noop(),
            lag_seconds: Gauge::noop(),
        }
    }
}

impl Facade {
    /// The job's metrics registered with the installed recorder, labelled `job`.
    fn new(job: &str) -> Self {
        let help = |name: &str| {
            METRICS
                .iter()
                .find(|(n, ..)| *n == name)
                .map_or("", |(_, _, help, _)| *help)
        };
        let labels = [("job", job.to_owned())];
        let counter = |name: &'static str| {
            metrics::describe_counter!(name, help(name));
            metrics::counter!(name, &labels)
        };
        let gauge = |name: &'static str| {
            metrics::describe_gauge!(name, help(name));
            metrics::gauge!(name, &labels)
        };
        Self {
            delivered_records: counter("audit_export_delivered_records_total"),
            delivered_batches: counter("audit_export_delivered_batches_total"),
            failed_attempts: counter("audit_export_failed_attempts_total"),
            refused_attempts: counter("audit_export_refused_attempts_total"),
            skipped_records: counter("audit_export_skipped_records_total"),
            read_errors: counter("audit_export_read_errors_total"),
            consecutive_failures: gauge("audit_export_consecutive_failures"),
            held_accounts: gauge("audit_export_held_accounts"),
            lag_seconds: gauge("audit_export_lag_seconds"),
        }
    }
}

/// A running job's live counters; [`ExportStatus::snapshot`] reads them.
#[derive(Debug, Default)]
struct Counters {
    delivered_records: AtomicU64,
    delivered_batches: AtomicU64,
    failed_attempts: AtomicU64,
    refused_attempts: AtomicU64,
    skipped_records: AtomicU64,
    retried_batches: AtomicU64,
    read_errors: AtomicU64,
    consecutive_failures: AtomicU64,
    held_accounts: AtomicU64,
    lag_ms: AtomicI64,
    last_delivery_ms: AtomicI64,
    last_error: Mutex<Option<String>>,
    facade: Facade,
}

/// A handle on one export job's counters, cheap to clone: read it from a metrics or status
/// endpoint while the job runs. The same counts go to the [`metrics`] facade as they change
/// (`audit_export_delivered_records_total{job="<name>"}`, ...: the names of
/// [`to_prometheus`]), for an app that installed a recorder.
#[derive(Clone, Debug, Default)]
pub struct ExportStatus {
    job: Arc<str>,
    counters: Arc<Counters>,
}

/// A snapshot of an export job's counters.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ExportMetrics {
    /// The job's name.
    pub job: String,
    /// Records delivered (a record delivered again after a retry counts again).
    pub delivered_records: u64,
    /// Batches delivered.
    pub delivered_batches: u64,
    /// Delivery attempts that failed.
    pub failed_attempts: u64,
    /// Of those, the attempts the destination [refused](crate::export::DeliveryError::refused)
    /// for what the batch held.
    pub refused_attempts: u64,
    /// Records the destination refused alone and the job skipped
    /// ([`skip_refused_after`](crate::export::ExportJob::skip_refused_after)).
    pub skipped_records: u64,
    /// Accounts whose export waits on a refused batch (the others go on).
    pub held_accounts: u64,
    /// Batches that needed more than one attempt.
    pub retried_batches: u64,
    /// Reads of the store that failed (retried after a backoff).
    pub read_errors: u64,
    /// Failed attempts since the last success: above zero, the job is failing now.
    pub consecutive_failures: u64,
    /// How far behind the job is: the age, in ms, of the oldest record it has yet to deliver
    /// when it last looked (0 when it had delivered everything committed then).
    pub lag_ms: i64,
    /// When the job last delivered a batch, ms since the epoch (0: never).
    pub last_delivery_ms: i64,
    /// The last failure's description (never holds a secret).
    pub last_error: Option<String>,
}

impl ExportStatus {
    pub(crate) fn new(job: &str) -> Self {
        Self {
            job: job.into(),
            counters: Arc::new(Counters {
                facade: Facade::new(job),
                ..Counters::default()
            }),
        }
    }

    /// The counters now.
    pub fn snapshot(&self) -> ExportMetrics {
        let c = &self.counters;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        ExportMetrics {
            job: self.job.to_string(),
            delivered_records: get(&c.delivered_records),
            delivered_batches: get(&c.delivered_batches),
            failed_attempts: get(&c.failed_attempts),
            refused_attempts: get(&c.refused_attempts),
            skipped_records: get(&c.skipped_records),
            held_accounts: get(&c.held_accounts),
            retried_batches: get(&c.retried_batches),
            read_errors: get(&c.read_errors),
            consecutive_failures: get(&c.consecutive_failures),
            lag_ms: c.lag_ms.load(Ordering::Relaxed),
            last_delivery_ms: c.last_delivery_ms.load(Ordering::Relaxed),
            last_error: c
                .last_error
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone(),
        }
    }

    pub(crate) fn delivered(&self, records: usize, attempts: u32, now_ms: i64) {
        let c = &self.counters;
        c.delivered_records
            .fetch_add(records as u64, Ordering::Relaxed);
        c.delivered_batches.fetch_add(1, Ordering::Relaxed);
        if attempts > 1 {
            c.retried_batches.fetch_add(1, Ordering::Relaxed);
        }
        c.consecutive_failures.store(0, Ordering::Relaxed);
        c.last_delivery_ms.store(now_ms, Ordering::Relaxed);
        let f = &c.facade;
        f.delivered_records.increment(records as u64);
        f.delivered_batches.increment(1);
        f.consecutive_failures.set(0.0);
    }

    pub(crate) fn failed(&self, error: &str) {
        let c = &self.counters;
        c.failed_attempts.fetch_add(1, Ordering::Relaxed);
        let failures = c.consecutive_failures.fetch_add(1, Ordering::Relaxed) + 1;
        c.facade.failed_attempts.increment(1);
        c.facade.consecutive_failures.set(failures as f64);
        *c.last_error.lock().unwrap_or_else(|e| e.into_inner()) = Some(error.to_owned());
    }

    pub(crate) fn refused(&self, error: &str) {
        self.counters
            .refused_attempts
            .fetch_add(1, Ordering::Relaxed);
        self.counters.facade.refused_attempts.increment(1);
        self.failed(error);
    }

    pub(crate) fn skipped(&self, records: usize) {
        let c = &self.counters;
        c.skipped_records
            .fetch_add(records as u64, Ordering::Relaxed);
        c.facade.skipped_records.increment(records as u64);
    }

    pub(crate) fn set_held(&self, accounts: usize) {
        let c = &self.counters;
        c.held_accounts.store(accounts as u64, Ordering::Relaxed);
        c.facade.held_accounts.set(accounts as f64);
    }

    pub(crate) fn read_failed(&self, error: &str) {
        self.counters.read_errors.fetch_add(1, Ordering::Relaxed);
        self.counters.facade.read_errors.increment(1);
        *self
            .counters
            .last_error
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = Some(error.to_owned());
    }

    pub(crate) fn set_lag(&self, lag_ms: i64) {
        let lag_ms = lag_ms.max(0);
        self.counters.lag_ms.store(lag_ms, Ordering::Relaxed);
        self.counters.facade.lag_seconds.set(lag_ms as f64 / 1000.0);
    }
}

impl ExportMetrics {
    /// The counters in Prometheus text format, labelled with the job's name.
    ///
    /// ```
    /// use audit_store::export::ExportMetrics;
    ///
    /// let text = ExportMetrics::default().to_prometheus();
    /// assert!(text.contains("audit_export_delivered_records_total{job=\"\"} 0"));
    /// ```
    pub fn to_prometheus(&self) -> String {
        to_prometheus(std::slice::from_ref(self))
    }
}

type Value = fn(&ExportMetrics) -> String;

/// Each metric: its name, kind, help and value in the text format.
const METRICS: [(&str, &str, &str, Value); 9] = [
    (
        "audit_export_delivered_records_total",
        "counter",
        "Records delivered by the export job.",
        |m| m.delivered_records.to_string(),
    ),
    (
        "audit_export_delivered_batches_total",
        "counter",
        "Batches delivered by the export job.",
        |m| m.delivered_batches.to_string(),
    ),
    (
        "audit_export_failed_attempts_total",
        "counter",
        "Delivery attempts that failed.",
        |m| m.failed_attempts.to_string(),
    ),
    (
        "audit_export_refused_attempts_total",
        "counter",
        "Delivery attempts the destination refused for what the batch held.",
        |m| m.refused_attempts.to_string(),
    ),
    (
        "audit_export_skipped_records_total",
        "counter",
        "Records the destination refused alone, skipped by the job.",
        |m| m.skipped_records.to_string(),
    ),
    (
        "audit_export_read_errors_total",
        "counter",
        "Reads of the store that failed.",
        |m| m.read_errors.to_string(),
    ),
    (
        "audit_export_consecutive_failures",
        "gauge",
        "Failed attempts since the last delivery: above 0, the job is failing.",
        |m| m.consecutive_failures.to_string(),
    ),
    (
        "audit_export_held_accounts",
        "gauge",
        "Accounts whose export waits on a refused batch.",
        |m| m.held_accounts.to_string(),
    ),
    (
        "audit_export_lag_seconds",
        "gauge",
        "Age of the oldest record the job has yet to deliver.",
        |m| format!("{:.3}", m.lag_ms as f64 / 1000.0),
    ),
];

/// The counters of several jobs in Prometheus text format: each metric's help and type once,
/// then a line per job.
///
/// ```
/// use audit_store::export::{ExportMetrics, exports_to_prometheus};
///
/// let text = exports_to_prometheus(&[ExportMetrics::default(), ExportMetrics::default()]);
/// assert_eq!(text.matches("# TYPE audit_export_lag_seconds gauge").count(), 1);
/// assert_eq!(text.matches("audit_export_lag_seconds{").count(), 2);
/// ```
pub fn to_prometheus(jobs: &[ExportMetrics]) -> String {
    let mut out = String::new();
    for (name, kind, help, value) in METRICS {
        out.push_str(&format!("# HELP {name} {help}\n# TYPE {name} {kind}\n"));
        for job in jobs {
            let label = job
                .job
                .replace('\\', "\\\\")
                .replace('"', "\\\"")
                .replace('\n', "\\n");
            out.push_str(&format!("{name}{{job=\"{label}\"}} {}\n", value(job)));
        }
    }
    out
}
