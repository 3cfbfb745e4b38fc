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
    /// A setting that cannot work.
    #[error("invalid audit store configuration: {0}")]
    Config(String),
}

/// `Result` with [`StoreError`].
pub type Result<T, E = StoreError> = std::result::Result<T, E>;
