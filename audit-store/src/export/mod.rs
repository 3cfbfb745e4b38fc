//! Push export: committed records delivered to the places security teams read them (a SIEM's
//! HTTPS endpoint, a syslog collector over TLS, a file a shipper tails), at least once, per
//! account in the order they were committed ([`CommitPosition`](crate::model::CommitPosition)),
//! with a durable place in the database per job.
//!
//! An [`ExportJob`] reads committed records through the store (never from the request path),
//! a batch per account at a time, encodes them in its [`Format`], and hands each batch to its
//! [`Destination`] until the destination takes it, waiting between attempts (exponential
//! backoff with jitter, or the destination's `Retry-After`). Before a batch is sent its last
//! record is written to the job's position in the database; once it is delivered, the
//! position moves past it. So a restart resumes where the job was, a batch interrupted by a
//! restart is sent again identical and under the same idempotency key, and a record is sent
//! twice only when a delivery failed (or was interrupted) after the destination got it.
//!
//! ```no_run
//! use audit_store::SqliteStore;
//! use audit_store::export::{ExportJob, Format, HttpDestination, Secret};
//!
//! # async fn run(store: SqliteStore) -> Result<(), Box<dyn std::error::Error>> {
//! let siem = HttpDestination::new("https://siem.example/audit")?
//!     .secret(Secret::new(std::env::var("EXPORT_SECRET")?));
//! let job = ExportJob::new("siem", store, siem)?.format(Format::Ndjson);
//! let status = job.status(); // delivered, failed, lag: for a metrics endpoint
//! let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
//! let task = tokio::spawn(job.run(async move { let _ = stopped.await; }));
//! // ... at shutdown:
//! let _ = stop.send(());
//! task.await?;
//! println!("{:?}", status.snapshot());
//! # Ok(()) }
//! ```

mod batch;
mod destination;
mod format;
mod hold;
mod job;
mod metrics;
mod retry;
mod secret;
mod tls;

pub use batch::{EncodedBatch, idempotency_key};
pub use destination::{
    DEFAULT_FILE_KEEP, DEFAULT_FILE_MAX_BYTES, DEFAULT_HTTP_TIMEOUT, DeliveryError, Destination,
    FileDestination, HttpDestination, SyslogDestination,
};
pub use format::csv::{header as csv_header, write_row as write_csv_row};
pub use format::{Format, FormatError, UnknownFormat};
pub use job::{
    DEFAULT_BATCH_BYTES, DEFAULT_BATCH_RECORDS, DEFAULT_POLL_INTERVAL, DEFAULT_SETTLE,
    DEFAULT_STOP_GRACE, ExportJob, Scope,
};
pub use metrics::{ExportMetrics, ExportStatus, to_prometheus as exports_to_prometheus};
pub use secret::{SIGNATURE_HEADER, Secret, signature, verify_signature};
pub use tls::TlsConfig;

/// A job or destination configured wrongly; the message names the setting and the fix.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ExportConfigError(String);

impl ExportConfigError {
    pub(crate) fn new(message: impl Into<String>) -> Self {
        Self(message.into())
    }

    /// `name` as the name of a job or rule (`what`): 1 to 64 ASCII letters, digits, `-`, `_` or
    /// `.`, since it is written into keys, metrics and paths.
    pub(crate) fn check_name(what: &str, name: &str) -> Result<(), Self> {
        let valid = !name.is_empty()
            && name.len() <= 64
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
        if valid {
            return Ok(());
        }
        Err(Self::new(format!(
            "invalid {what} name {:?}: expected 1 to 64 letters, digits, '-', '_' or '.'",
            name.chars().take(80).collect::<String>()
        )))
    }
}
