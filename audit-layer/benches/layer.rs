//! What the audit layer adds to each request, next to the bare service and to tower-http's
//! `TraceLayer`, measured in the same run.
//!
//! The inner service is an axum `Router` with one realistic route,
//! `/accounts/{account_id}/alerting/v3/policies/{policy_id}`, so `MatchedPath` is present, as
//! it is in an app; its handlers are the load benchmark's (`loadbench/src/api.rs`, included
//! here), so the two benchmarks measure the same service. Two request kinds, one criterion group each:
//!
//! - `get_policy`: `GET`, the handler returns a small JSON object;
//! - `update_policy`: `PUT` with a ~0.5 KB JSON alerting policy, which the handler parses with
//!   `axum::Json` and answers with `{"id": ...}`.
//!
//! And three variants per kind, each layered onto the router with `Router::layer`:
//!
//! - `bare`: the router alone;
//! - `trace`: `TraceLayer::new_for_http()` with its span and response event at `INFO`, under a
//!   real `tracing_subscriber::fmt()` subscriber (INFO, no ANSI) writing through
//!   `tracing_appender::non_blocking` into `std::io::sink()`;
//! - `audit`: `AuditLayer` with a policy describing both operations, into a
//!   [`DiscardSink`](audit_layer::sink::DiscardSink), so the layer's own work (capture, request
//!   body read-ahead, response copy, record assembly) is measured, not a sink's.
//!
//! Each iteration builds the request (identical headers and a `Bytes::from_static` body for all
//! variants, with a `ConnectInfo` peer), drives the service as a tower `Service` (`ready`, then
//! `call`) on a current-thread tokio runtime, and collects the response body to its end: the
//! audit record is emitted at the end of the body, so every variant consumes it alike.
//!
//! Subtract `bare` from the others for the cost each layer adds per request.
//!
//! ```text
//! cargo bench -p audit-layer --bench layer
//! ```

use std::hint::black_box;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use audit_layer::sink::{DiscardSink, MemorySink};
use audit_layer::{AuditLayer, AuditPolicy, Operation};
use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::routing::get;
use bytes::Bytes;
use criterion::{Criterion, criterion_group, criterion_main};
use http::{HeaderValue, Method, Request, StatusCode, Uri, header};
use http_body_util::BodyExt;
use tokio::runtime::Runtime;
use tower::{Service, ServiceExt};
use tower_http::trace::{DefaultMakeSpan, DefaultOnResponse, TraceLayer};
use tracing::{Dispatch, Level};
use tracing_appender::non_blocking::WorkerGuard;

#[path = "../../loadbench/src/api.rs"]
mod api;

use api::{BEARER, ITEM_ROUTE, POLICY_JSON, USER_AGENT, get_policy, update_policy};

/// A request path matching [`ITEM_ROUTE`].
const PATH: &str = "/accounts/023e105f4ecef8ad9ca31a8372d0c353/alerting/v3/policies/0da2b59e-f118-439d-8097-bdfb215203c9";

fn app() -> Router {
    Router::new().route(ITEM_ROUTE, get(get_policy).put(update_policy))
}

fn policy() -> AuditPolicy {
    AuditPolicy::builder()
        .operation(Operation::new(Method::GET, ITEM_ROUTE).summary("Get a Notification policy"))
        .operation(Operation::new(Method::PUT, ITEM_ROUTE).summary("Update a Notification policy"))
        .build()
        .expect("the bench policy compiles")
}

fn traced() -> Router {
    app().layer(
        TraceLayer::new_for_http()
            .make_span_with(DefaultMakeSpan::new().level(Level::INFO))
            .on_response(DefaultOnResponse::new().level(Level::INFO)),
    )
}

fn audited() -> Router {
    app().layer(AuditLayer::new(policy()).sink(DiscardSink))
}

/// A `tracing_subscriber::fmt()` subscriber at INFO writing into `std::io::sink()` through a
/// non-blocking writer, and the guard of that writer's worker thread.
fn log_subscriber() -> (Dispatch, WorkerGuard) {
    let (writer, worker) = tracing_appender::non_blocking(std::io::sink());
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(Level::INFO)
        .with_ansi(false)
        .with_writer(writer)
        .finish();
    (Dispatch::new(subscriber), worker)
}

#[derive(Clone, Copy)]
enum Kind {
    Get,
    Put,
}

impl Kind {
    fn group(self) -> &'static str {
        match self {
            Self::Get => "get_policy",
            Self::Put => "update_policy",
        }
    }

    /// The request as a client sends it (with the peer a server would record).
    fn request(self) -> Request<Body> {
        let builder = Request::builder()
            .uri(Uri::from_static(PATH))
            .header(header::HOST, HeaderValue::from_static("api.example.com"))
            .header(header::USER_AGENT, HeaderValue::from_static(USER_AGENT))
            .header(header::ACCEPT, HeaderValue::from_static("application/json"))
            .header(
                header::ACCEPT_ENCODING,
                HeaderValue::from_static("gzip, deflate, br"),
            )
            .header(header::AUTHORIZATION, HeaderValue::from_static(BEARER))
            .extension(ConnectInfo(SocketAddr::from(([127, 0, 0, 1], 40000))));
        let (builder, body) = match self {
            Self::Get => (builder.method(Method::GET), Body::empty()),
            Self::Put => (
                builder
                    .method(Method::PUT)
                    .header(
                        header::CONTENT_TYPE,
                        HeaderValue::from_static("application/json"),
                    )
                    .header(header::CONTENT_LENGTH, HeaderValue::from(POLICY_JSON.len())),
                Body::from(Bytes::from_static(POLICY_JSON.as_bytes())),
            ),
        };
        builder.body(body).expect("the bench request is valid")
    }
}

/// One request through `svc`, response body read to its end.
async fn roundtrip(svc: &mut Router, req: Request<Body>) -> (StatusCode, Bytes) {
    let Ok(ready) = ServiceExt::<Request<Body>>::ready(svc).await;
    let Ok(response) = ready.call(req).await;
    let (parts, body) = response.into_parts();
    let body = body
        .collect()
        .await
        .expect("the response body is readable")
        .to_bytes();
    (parts.status, body)
}

/// Every variant answers 200, and the audit layer emits one (schema-valid) record per request
/// once the body is consumed.
fn preflight(rt: &Runtime, kind: Kind) {
    rt.block_on(async {
        for mut svc in [app(), traced(), audited()] {
            let (status, body) = roundtrip(&mut svc, kind.request()).await;
            assert_eq!(status, StatusCode::OK, "{}: {body:?}", kind.group());
        }
        let records = MemorySink::new();
        let mut svc = app().layer(AuditLayer::new(policy()).sink(records.clone()));
        let (status, _) = roundtrip(&mut svc, kind.request()).await;
        assert_eq!(status, StatusCode::OK);
        let records = records.records();
        assert_eq!(records.len(), 1, "one record per request");
        assert_eq!(records[0].raw.status_code, Some(200));
    });
}

fn bench_kind(c: &mut Criterion, rt: &Runtime, kind: Kind) {
    preflight(rt, kind);

    let mut group = c.benchmark_group(kind.group());
    group.warm_up_time(Duration::from_secs(2));
    group.measurement_time(Duration::from_secs(5));

    let run = |b: &mut criterion::Bencher<'_>, svc: &Router| {
        b.to_async(rt).iter_custom(|iters| {
            let mut svc = svc.clone();
            async move {
                let start = Instant::now();
                for _ in 0..iters {
                    black_box(roundtrip(&mut svc, kind.request()).await);
                }
                start.elapsed()
            }
        });
    };

    let bare = app();
    group.bench_function("bare", |b| run(b, &bare));

    let trace = traced();
    let (dispatch, worker) = log_subscriber();
    {
        // The runtime is current-thread: the future runs on this thread, under this default.
        let _default = tracing::dispatcher::set_default(&dispatch);
        group.bench_function("trace", |b| run(b, &trace));
    }
    drop(worker);

    let audit = audited();
    group.bench_function("audit", |b| run(b, &audit));

    group.finish();
}

fn layer_overhead(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    bench_kind(c, &rt, Kind::Get);
    bench_kind(c, &rt, Kind::Put);
}

criterion_group!(benches, layer_overhead);
criterion_main!(benches);
