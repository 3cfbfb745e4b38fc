//! Durable storage for [`audit_layer`] records, with tamper evidence: an ingest pipeline that
//! enriches and batches records off the request path, SQL stores (SQLite embedded by default,
//! PostgreSQL for scale) that chain every account's records into a keyed hash chain with
//! signed checkpoints, retention, a verifier, and an axum router that serves the audit log.
//!
//! A record flows one way: `AuditLayer` → [`pipeline`] (the layer's sink: a bounded queue,
//! never awaited by a request in the default mode; enrichment, batching, the spool) → a
//! [`store`] → SQL → [`query`] (the audit log API), [`verify`] (the chains), [`export`] (push
//! export to SIEMs, syslog and files) and [`alert`] (rules over committed records). The
//! modules depend on each other in that direction only: [`time`] and the error type at the
//! bottom, then [`model`] (plain data), [`chain`] (hashes, keys, signatures), [`store`] (the
//! databases), [`verify`], [`export`], [`alert`], then [`pipeline`] and [`query`], and on top
//! [`start`]: the [`AuditLog`] that opens, migrates and runs all of it in one call.

// Without a SQL backend (`--no-default-features`) the crate still builds, for an application's
// own store behind the traits; the helpers only the SQL stores use are then unused.
#![cfg_attr(
    not(any(feature = "sqlite", feature = "postgres")),
    allow(dead_code, unused_imports)
)]
#![cfg_attr(docsrs, feature(doc_cfg))]

pub mod alert;
pub mod chain;
mod error;
pub mod export;
#[cfg(feature = "nats")]
#[cfg_attr(docsrs, doc(cfg(feature = "nats")))]
pub mod fleet;
pub mod model;
pub mod pipeline;
mod private_files;
pub mod query;
pub mod start;
pub mod store;
pub mod time;
pub mod verify;

/// The README's examples, compiled as doc tests.
#[cfg(doctest)]
#[doc = include_str!("../../README.md")]
struct ReadmeDoctests;

pub use error::{Result, StoreError};
pub use sqlx;
pub use start::{AuditLog, AuditLogBuilder};
#[cfg(feature = "postgres")]
#[cfg_attr(docsrs, doc(cfg(feature = "postgres")))]
pub use store::postgres::PostgresStore;
#[cfg(feature = "sqlite")]
#[cfg_attr(docsrs, doc(cfg(feature = "sqlite")))]
pub use store::sqlite::SqliteStore;
