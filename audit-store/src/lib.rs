//! Durable storage for [`audit_layer`] records: an ingest pipeline that enriches and batches
//! records off the request path, SQL stores (SQLite embedded by default, PostgreSQL for scale),
//! retention, and an axum router that serves the audit log.
//!
//! Data flows one way: `AuditLayer` → [`pipeline`] (the layer's sink: a bounded queue, never
//! awaited by a request in the default mode) → enrichment and batching → a [`store`] → SQL.

pub mod chain;
mod error;
pub mod pipeline;
pub mod query;
pub mod row;
mod spool;
pub mod store;

/// The README's examples, compiled as doc tests.
#[cfg(doctest)]
#[doc = include_str!("../../README.md")]
struct ReadmeDoctests;

pub use error::{Result, StoreError};
pub use sqlx;
#[cfg(feature = "postgres")]
pub use store::postgres::PostgresStore;
#[cfg(feature = "sqlite")]
pub use store::sqlite::SqliteStore;
