//! Automatic audit logs for axum and tower services.
//!
//! Add one layer and every request the service handles becomes a standard audit record — who
//! did it, what changed, when, from where, and how they were authenticated — with request and
//! response bodies reduced to the fields the API description marks auditable.
//!
//! ```
//! use audit_layer::{AuditHandle, AuditLayer, AuditPolicy, Identity, Operation};
//! use audit_layer::record::ActorContext;
//! use audit_layer::sink::MemorySink;
//! use axum::{Extension, Router, routing::put};
//! use http::Method;
//!
//! async fn update_policy(Extension(audit): Extension<AuditHandle>) -> &'static str {
//!     // The app's auth code says who the caller is:
//!     audit.identify(Identity::user("usr_1").email("alice@example.com").context(ActorContext::Dash));
//!     r#"{"id":"p1"}"#
//! }
//!
//! let policy = AuditPolicy::builder()
//!     .operation(
//!         Operation::new(Method::PUT, "/accounts/{account_id}/alerting/v3/policies/{policy_id}")
//!             .summary("Update a Notification policy"),
//!     )
//!     .build()?;
//! let records = MemorySink::new();
//! let app: Router = Router::new()
//!     .route("/accounts/{account_id}/alerting/v3/policies/{policy_id}", put(update_policy))
//!     .layer(AuditLayer::new(policy).sink(records.clone()));
//! # Ok::<(), audit_layer::PolicyError>(())
//! ```
//!
//! # What a record holds
//!
//! See [`record::AuditRecord`] and `schemas/audit-log.schema.json`. In short:
//!
//! - **who**: [`Identity`], told by the app through the [`AuditHandle`] in request extensions
//!   or through `x-audit-actor-*` response headers (stripped before the response leaves);
//! - **what**: `action.type` from the method or the operation's override, `action.result` from
//!   the status, `action.description` from the operation's summary, `resource.*` from the
//!   matched path template, and the redacted bodies;
//! - **when**: `action.time`, UTC, milliseconds; `id` is a UUIDv7;
//! - **where**: account and zone from the path; client IP from the socket, or from forwarding
//!   headers of [trusted proxies](AuditLayer::trusted_proxies) only;
//! - **how**: `actor.context`, and `raw.{method, uri, status_code, user_agent, ray_id}`.
//!
//! Credentials are never recorded: the only header a record keeps is `User-Agent`. Control
//! characters in recorded strings are [escaped](escape::visible).
//!
//! # Failures are recorded too
//!
//! Error statuses, a handler panic, a client that goes away mid-request and a request body
//! over the [limit](AuditLayer::body_limit) all produce a record with `result: failure`. The
//! response body is never buffered: it streams through, copied up to the limit, and the record
//! is emitted at its end — or when it is dropped early.

#![cfg_attr(docsrs, feature(doc_cfg))]

mod body;
mod capture;
mod client_ip;
pub mod escape;
mod future;
pub mod identity;
mod layer;
pub mod policy;
pub mod record;
pub mod redact;
#[cfg(feature = "validate")]
pub mod schema;
mod service;
pub mod sink;
pub mod spec;
#[cfg(test)]
mod tests;

pub use body::{AuditBody, AuditRequestBody};
pub use future::ResponseFuture;
pub use identity::{AuditHandle, Identity, headers as actor_headers};
pub use layer::{AuditLayer, DEFAULT_BODY_LIMIT, DEFAULT_REQUEST_ID_HEADER};
pub use policy::{AuditLevel, AuditPolicy, IntoAuditPolicy, Operation, PolicyError};
pub use service::Audit;
pub use sink::{AuditSink, Backpressure, Commit, NotCommitted};

/// A boxed error that crosses task and crate boundaries: what app-provided hooks (a sink, a
/// directory lookup, a checkpoint sink) return, and what body errors are turned into.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
