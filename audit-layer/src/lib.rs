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
//! use axum::{Router, routing::put};
//! use http::Method;
//!
//! async fn update_policy(audit: AuditHandle) -> &'static str {
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
//! - **where**: account and zone from the path; client IP from the socket peer (see
//!   [below](#the-client-address)), or from forwarding headers of
//!   [trusted proxies](AuditLayer::trusted_proxies) only;
//! - **how**: `actor.context`, and `raw.{method, uri, status_code, user_agent, cf_ray_id}`;
//! - **which trace, which service**: `trace.{trace_id, span_id}` from the request's W3C
//!   `traceparent` (or the current OpenTelemetry span), and the layer's
//!   [service name](AuditLayer::service_name) (see [`correlation`]).
//!
//! Credentials are never recorded: the only header a record keeps is `User-Agent`. Control
//! characters, line separators and invisible format characters (bidi controls among them) in
//! recorded strings are [escaped](escape::visible), also inside redacted bodies
//! ([`escape::json_text`]).
//!
//! A record is bounded in bytes whatever the client sends: each string is cut at
//! [8 KiB](AuditLayer::string_limit) with a visible `…[truncated from N bytes]` marker, and a
//! record over [64 KiB](AuditLayer::record_limit) of JSON loses its bodies (then has its
//! strings cut shorter) before it is emitted.
//!
//! # Events: actions that are not requests
//!
//! A background job, a policy the app enforces, work a request started in another task: the
//! app records them as [events](event) through [`AuditLayer::events`], the same record, sink,
//! redaction and bounds. An event caused by a request carries its ray id, and who acted
//! follows work into spawned tasks through an explicit adapter
//! ([`in_audit_context`](WithAuditContext::in_audit_context), see [`context`]). Handlers tell
//! what a request changed with `AuditHandle::before` and `AuditHandle::after` (feature
//! `utoipa`): typed values reduced by their schema, recorded as the record's `change`.
//!
//! # Failures are recorded too
//!
//! Error statuses, a handler panic, a request body over the [limit](AuditLayer::body_limit),
//! too slow or beyond the [budget](AuditLayer::body_budget) all produce a record with
//! `result: failure`. Outside strict mode the response body is never buffered: it streams
//! through, copied up to the limit, and the record is emitted at its end — or when it is
//! dropped early.
//!
//! Outcomes are honest when the client goes away: a server drops the layer's response future
//! when the connection closes, and the layer then moves the handler into a task of its own,
//! where it runs to completion (see [`AuditLayer::detached_timeout`]). A request whose handler
//! completed is recorded with the handler's status and result, marked `raw.client_gone`, also
//! when its response was not delivered whole; only a request whose handler did not complete
//! (still running at the timeout, or never started: the client left while its body was read
//! or while it waited for the sink) is recorded `499`, a failure, without the mark.
//!
//! # Bounds
//!
//! Anyone can reach the layer before the app's authentication runs. What an anonymous client
//! can make it hold or write is bounded:
//!
//! | what | bound | beyond it |
//! |---|---|---|
//! | a request body read ahead of the handler (operations that record bodies) | the [body limit](AuditLayer::body_limit), 1 MiB | `413`, recorded |
//! | the time it may take to arrive whole | the [read timeout](AuditLayer::body_read_timeout), 10 s from when reading starts | `408`, recorded |
//! | the bytes all such bodies hold at once | the [budget](AuditLayer::body_budget), 32 MiB per layer: each body charged with what it holds, as it arrives (not its declared length ahead of its bytes); returned when the body reaches the handler | `503` with `Retry-After: 1`, recorded |
//! | records of failed authentication (`401`/`403`, no actor known) | [10](AuditLayer::failed_auth_rate) per source IP, account and [60 s window](AuditLayer::failed_auth_window), kept one by one | counted into one `summary` record per source, account and window |
//! | the table of open windows | [10,000](AuditLayer::failed_auth_sources) (source, account) pairs, as many sources | counted by source alone, then in one window for everyone |
//! | a handler whose client left | the [detached timeout](AuditLayer::detached_timeout), 30 s | dropped, recorded `499` |
//!
//! The budget counts the bytes of the bodies the layer holds; the server's own buffers come on
//! top (hyper keeps a read buffer of up to ~400 KiB per connection being read).
//!
//! A summary record stands for the records it counted: `action.type: "summary"`,
//! `action.result: "failure"`, `actor.ip_address` the source, `account` the account (absent
//! for windows counted by source or for everyone), `raw.status_code` the most frequent status
//! and `raw.method`/`raw.uri` `-`, and `resource.request` holds
//! `{"count", "first", "last", "statuses": {"401": n, ...}, "by"}` (`first`/`last`: RFC 3339
//! times of the first and last counted request; `by`: `source_account`, `source` or
//! `everyone`). It is emitted when its window closes (a task on the tokio runtime checks every
//! second, or a quarter of the window if shorter), and at a flush.
//!
//! At graceful shutdown, once the server stopped serving and before the sink shuts down, the
//! app calls [`AuditFlush::flush`] (from [`AuditLayer::flush_handle`]): it waits for handlers
//! whose clients left and emits the summaries of open windows, so nothing counted is lost.
//!
//! # Policies, sinks and strict mode
//!
//! The [policy](AuditPolicy) is compiled once, at start-up: from the app's OpenAPI description
//! (see [`spec`]: a JSON or YAML document, or a utoipa or openapiv3 value), or operation by
//! operation with [`AuditPolicy::builder`]. Finished records go to an [`AuditSink`] (see
//! [`sink`]; the default logs each record through `tracing`, and the `audit-store` crate stores
//! them). A sink that is full holds requests back before their handlers run
//! ([backpressure](AuditSink::backpressure)); in [strict mode](AuditLayer::strict) a response
//! is released only once its record is durably stored.
//!
//! # Cargo features
//!
//! - `axum` (default): reads what axum puts in the request's extensions. `MatchedPath` names
//!   the routes the policy does not describe (their records get scope, product and resource
//!   type from the template axum matched); `ConnectInfo<SocketAddr>` is the client address.
//! - `validate`: the `schema` module, which checks records against
//!   `schemas/audit-log.schema.json` (pulls in `jsonschema`); [`MemorySink`](sink::MemorySink)
//!   then checks every record it receives.
//! - `utoipa`: compiles policies from a `utoipa::openapi::OpenApi` (OpenAPI 3.1).
//! - `openapiv3`: compiles policies from an `openapiv3::OpenAPI` (OpenAPI 3.0).
//! - `opentelemetry`: records the current OpenTelemetry span's trace and span ids (through
//!   `tracing-opentelemetry`) when a request is served inside one; see [`correlation`].
//!
//! # Without axum
//!
//! With `default-features = false` the layer is a plain tower layer over any
//! `Service<http::Request<B>>`, and behaves as inside axum in all but two ways. Each request's
//! operation is found by matching its path against the policy's own templates (inside axum
//! too, when axum's matched template is not one the policy describes); a request the policy
//! does not describe still gets a metadata record, without resource names. And the client
//! address is taken from a [`SocketAddr`](std::net::SocketAddr) alone, as described next.
//!
//! # The client address
//!
//! The layer reads the socket peer from the request's extensions: axum's
//! `ConnectInfo<SocketAddr>` (feature `axum`; serve the app with
//! `into_make_service_with_connect_info::<SocketAddr>()`), otherwise a plain
//! [`std::net::SocketAddr`] that the server inserted. Without either, `actor.ip_address` is
//! absent. A server built on hyper inserts the address its listener accepted:
//!
//! ```
//! use std::convert::Infallible;
//! use std::net::SocketAddr;
//!
//! use audit_layer::{AuditLayer, AuditPolicy, AuditRequestBody, sink::MemorySink};
//! use bytes::Bytes;
//! use http::{Request, Response};
//! use http_body_util::{BodyExt, Full};
//! use tower::{ServiceBuilder, ServiceExt, service_fn};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let records = MemorySink::new();
//! let svc = ServiceBuilder::new()
//!     .layer(AuditLayer::new(AuditPolicy::default()).sink(records.clone()))
//!     .service(service_fn(|_req: Request<AuditRequestBody<Full<Bytes>>>| async {
//!         Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"ok"))))
//!     }));
//!
//! let peer: SocketAddr = "192.0.2.7:51000".parse()?;
//! let mut req = Request::get("/status").body(Full::default())?;
//! req.extensions_mut().insert(peer);
//! svc.oneshot(req).await?.into_body().collect().await?;
//! assert_eq!(records.records()[0].actor.ip_address, Some(peer.ip()));
//! # Ok(())
//! # }
//! ```
//!
//! Behind a proxy, the peer is the proxy. Name your proxies with
//! [`trusted_proxies`](AuditLayer::trusted_proxies): for a request from one of them the
//! client is the nearest address in the forwarding header that is not a trusted proxy. Only
//! the header your proxies write is read, `X-Forwarded-For` unless
//! [`forwarding_header`](AuditLayer::forwarding_header) says `Forwarded`: a proxy passes the
//! other header on as the client wrote it.

#![cfg_attr(docsrs, feature(doc_cfg))]

mod ahead;
#[cfg(feature = "utoipa")]
#[cfg_attr(docsrs, doc(cfg(feature = "utoipa")))]
pub mod auditable;
mod body;
mod capture;
mod client_ip;
mod coalesce;
mod config;
pub mod context;
pub mod correlation;
mod detach;
pub mod escape;
pub mod event;
#[cfg(feature = "axum")]
#[cfg_attr(docsrs, doc(cfg(feature = "axum")))]
pub mod extract;
mod flush;
mod future;
pub mod identity;
mod layer;
pub mod policy;
pub mod record;
pub mod redact;
#[cfg(feature = "validate")]
#[cfg_attr(docsrs, doc(cfg(feature = "validate")))]
pub mod schema;
mod service;
pub mod sink;
pub mod spec;
#[cfg(test)]
mod tests;

pub use ahead::{DEFAULT_BODY_BUDGET, DEFAULT_BODY_READ_TIMEOUT};
pub use body::{AuditBody, AuditRequestBody};
pub use client_ip::ForwardingHeader;
pub use coalesce::{
    DEFAULT_FAILED_AUTH_RATE, DEFAULT_FAILED_AUTH_SOURCES, DEFAULT_FAILED_AUTH_WINDOW,
};
pub use context::{AuditContext, WithAuditContext};
pub use detach::DEFAULT_DETACHED_TIMEOUT;
pub use event::{AuditEvent, AuditEvents};
pub use flush::{AuditFlush, Flushed};
pub use future::ResponseFuture;
pub use identity::{AuditHandle, Identity, headers as actor_headers};
pub use layer::{AuditLayer, DEFAULT_BODY_LIMIT, DEFAULT_REQUEST_ID_HEADER};
pub use policy::{
    AuditLevel, AuditPolicy, IntoAuditPolicy, Operation, PolicyError, ProductCategories,
    ProductCategory, TenantParams,
};
pub use record::{DEFAULT_RECORD_LIMIT, DEFAULT_STRING_LIMIT};
pub use service::Audit;
pub use sink::{AuditSink, Backpressure, Commit, NotCommitted};

/// A boxed error that crosses task and crate boundaries: what app-provided hooks (a sink, a
/// directory lookup, a checkpoint sink) return, and what body errors are turned into.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
