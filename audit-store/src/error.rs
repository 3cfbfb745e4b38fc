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
    /// A setting that cannot work.
    #[error("invalid audit store configuration: {0}")]
    Config(String),
}

impl StoreError {
    /// Whether the database refused the data itself (a value it cannot store, a violated
    /// constraint) rather than failed: retrying the same rows cannot help.
    pub fn is_data_error(&self) -> bool {
        match self {
            Self::Database(sqlx::Error::Database(e)) => {
                let class = e.code().map(|c| c.chars().take(2).collect::<String>());
                !matches!(e.kind(), sqlx::error::ErrorKind::Other)
                    || matches!(class.as_deref(), Some("22" | "23"))
            }
            Self::Json(_) => true,
            _ => false,
        }
    }
}

/// `Result` with [`StoreError`].
pub type Result<T, E = StoreError> = std::result::Result<T, E>;
