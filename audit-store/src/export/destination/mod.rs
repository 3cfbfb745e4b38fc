//! Where an export job delivers its batches: the [`Destination`] trait and the destinations
//! that ship with the crate.

mod file;
mod http;
mod syslog;

use std::future::Future;
use std::time::Duration;

pub use file::{DEFAULT_FILE_KEEP, DEFAULT_FILE_MAX_BYTES, FileDestination};
pub use http::{DEFAULT_HTTP_TIMEOUT, HttpDestination};
pub use syslog::SyslogDestination;

use super::batch::EncodedBatch;

/// Takes batches of records. A job calls [`deliver`](Self::deliver) with one batch at a time
/// and, when it fails, again with the same batch after a backoff, until it succeeds: a
/// destination sees a batch at least once, and again only after an error (or a restart
/// that interrupted a delivery), always under the batch's idempotency key.
///
/// A destination that can tell that it refuses *this batch* (an HTTP 400, 413 or 422: it
/// would refuse it again), not that it is unavailable, says so with
/// [`DeliveryError::refused`]: the job then goes on with the other accounts and narrows the
/// refused account's batches down to the record refused (see
/// [`ExportJob`](crate::export::ExportJob)).
pub trait Destination: Send + Sync + 'static {
    /// Delivers one batch. `Ok` means the destination has it: the job moves past it.
    fn deliver(
        &self,
        batch: &EncodedBatch,
    ) -> impl Future<Output = Result<(), DeliveryError>> + Send;
}

/// Why a delivery failed; the job tries again. Its text never holds a secret.
///
/// ```
/// use audit_store::export::DeliveryError;
///
/// let down = DeliveryError::new("cannot connect to siem.example:443");
/// let refused = DeliveryError::refused("siem.example:443 answered 413 Payload Too Large");
/// assert!(!down.is_refused() && refused.is_refused());
/// ```
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct DeliveryError {
    message: String,
    retry_after: Option<Duration>,
    refused: bool,
}

impl DeliveryError {
    /// A failure described by `message` (which must not contain a secret): the destination
    /// could not take the batch now (down, overloaded, timed out), and would take it later.
    pub fn new(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            retry_after: None,
            refused: false,
        }
    }

    /// The destination refused this batch for what it holds (too large, a record it cannot
    /// parse), and would refuse it again: the job holds this account's export back, narrows
    /// its batches to find the record refused, and goes on with the other accounts.
    pub fn refused(message: impl Into<String>) -> Self {
        Self {
            refused: true,
            ..Self::new(message)
        }
    }

    /// Whether the destination [refused](Self::refused) the batch itself.
    pub fn is_refused(&self) -> bool {
        self.refused
    }

    /// The destination asked to be tried again no sooner than `wait` from now.
    #[must_use]
    pub fn retry_after(mut self, wait: Option<Duration>) -> Self {
        self.retry_after = wait;
        self
    }

    /// The wait the destination asked for, if any.
    pub fn asked_wait(&self) -> Option<Duration> {
        self.retry_after
    }
}
