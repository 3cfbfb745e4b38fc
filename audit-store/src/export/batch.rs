//! A batch of one account's records, encoded for a destination, and its idempotency key.

use sha2::{Digest, Sha256};

use super::format::Format;
use crate::model::LogPosition;

/// One account's records in commit order, encoded one line each in the job's format: what
/// a [`Destination`](super::Destination) delivers. Sent again after a failure exactly as
/// first built, under the same [`idempotency_key`](Self::idempotency_key).
#[derive(Clone, Debug)]
pub struct EncodedBatch {
    /// The export job.
    pub job: String,
    /// The account whose records these are.
    pub account_id: String,
    /// A key stable across retries and restarts: derived from the job, the account and the
    /// positions of the batch's first and last records (see [`idempotency_key`]).
    pub idempotency_key: String,
    /// The first record's position.
    pub first: LogPosition,
    /// The last record's position.
    pub last: LogPosition,
    /// How many records the batch holds.
    pub records: usize,
    /// The format of [`lines`](Self::lines).
    pub format: Format,
    /// The records, one line each, every line ending in `\n`. No line holds a raw newline.
    pub lines: String,
    /// Each line's record position, in order (for destinations that frame records one by
    /// one, with their time).
    pub positions: Vec<LogPosition>,
}

impl EncodedBatch {
    /// The batch's lines, without their newlines.
    pub fn lines(&self) -> impl Iterator<Item = &str> {
        self.lines.lines()
    }
}

/// The idempotency key of `job`'s batch of `account_id` from `first` to `last`: 32 hex digits
/// of SHA-256 over the four, so a batch read again after a restart (the same records, up to
/// the same last one) carries the key it was first sent under.
///
/// ```
/// use audit_store::export::idempotency_key;
/// use uuid::Uuid;
///
/// let a = idempotency_key("siem", "acc", (1, Uuid::nil()), (2, Uuid::max()));
/// assert_eq!(a, idempotency_key("siem", "acc", (1, Uuid::nil()), (2, Uuid::max())));
/// assert_ne!(a, idempotency_key("siem", "acc", (1, Uuid::nil()), (3, Uuid::max())));
/// assert_eq!(a.len(), 32);
/// ```
pub fn idempotency_key(
    job: &str,
    account_id: &str,
    first: LogPosition,
    last: LogPosition,
) -> String {
    let mut hash = Sha256::new();
    hash.update(b"audit-export/v1\0");
    for part in [job.as_bytes(), account_id.as_bytes()] {
        hash.update((part.len() as u64).to_be_bytes());
        hash.update(part);
    }
    for (time, id) in [first, last] {
        hash.update(time.to_be_bytes());
        hash.update(id.as_bytes());
    }
    hex::encode(&hash.finalize()[..16])
}
