//! The store's error type.

/// What can go wrong storing or reading audit records.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The database refused or failed an operation.
    #[error("audit store database error: {0}")]
    Database(#[from] sqlx::Error),
    /// A migration could not be applied.
    #[error("audit store migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// A record could not be turned into JSON, or stored JSON into a record.
    #[error("audit record (de)serialization failed: {0}")]
    Json(#[from] serde_json::Error),
    /// The local spool could not be read or written.
    #[error("audit spool I/O error at {path}: {source}")]
    Spool {
        /// The file or directory.
        path: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A write took longer than the pipeline's write timeout.
    #[error("audit store write timed out after {0:?}")]
    Timeout(std::time::Duration),
    /// A read took longer than its statement time limit
    /// ([`RecordQuery::time_limit`](crate::model::RecordQuery::time_limit)) and was stopped.
    #[error("audit log query stopped at its time limit of {0:?}")]
    StatementTimeout(std::time::Duration),
    /// Data read back from the database is not what the store writes: a row or value edited
    /// or damaged outside the store.
    #[error("unreadable audit data: {0}")]
    Corrupt(String),
    /// A write met rows it did not expect, again after the store's own retry: another writer
    /// stored the same records at the same moment.
    #[error("audit write conflict: {0}")]
    Conflict(String),
    /// An operation of tamper evidence (checkpoints, verification with seals) on a store that
    /// was not given chain keys.
    #[error("this audit store does not chain records (give it chain keys with `.chained(keys)`)")]
    NotChained,
    /// A chain's records do not verify where the store checks them before acting on them
    /// (retention checks the prefix it prunes): the database was edited outside the store.
    #[error("{0}")]
    Tampered(crate::model::Refusal),
    /// The stream a fleet publishes to or ingests from (NATS JetStream) failed or did not
    /// answer in time: retried, then spooled, by the pipeline. The text names what failed,
    /// never a server's credentials.
    #[error("audit stream error: {0}")]
    Stream(String),
    /// The stream refused a record itself (larger than the servers' payload limit): retrying
    /// cannot help, so the pipeline drops it and reports it by a gap record.
    #[error("audit stream refused the record: {0}")]
    StreamRefused(String),
    /// A setting that cannot work, or a database that is not where a setting says.
    #[error("invalid audit store configuration: {0}")]
    Config(String),
}

impl StoreError {
    /// Whether the database refused the data itself (a value it cannot store, a violated
    /// constraint, a row over one of its limits) rather than failed: retrying the same rows
    /// cannot help.
    ///
    /// PostgreSQL's classes `22` (data exception), `23` (integrity constraint violation) and
    /// `54` (program limit exceeded: "index row size exceeds btree maximum" for a value of a
    /// few kilobytes in an indexed column) count. A class-54 refusal of a whole batch (too
    /// many parameters, say) is then written row by row, which is what it needs too.
    pub fn is_data_error(&self) -> bool {
        match self {
            Self::Database(sqlx::Error::Database(e)) => {
                let class = e.code().map(|c| c.chars().take(2).collect::<String>());
                !matches!(e.kind(), sqlx::error::ErrorKind::Other)
                    || matches!(class.as_deref(), Some("22" | "23" | "54"))
            }
            Self::Json(_) | Self::StreamRefused(_) => true,
            _ => false,
        }
    }
}

/// `Result` with [`StoreError`].
pub type Result<T, E = StoreError> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stream_that_fails_is_retried_and_one_that_refuses_the_record_is_not() {
        assert!(!StoreError::Stream("publish failed: timed out".into()).is_data_error());
        assert!(StoreError::StreamRefused("max payload size exceeded".into()).is_data_error());
    }
}
