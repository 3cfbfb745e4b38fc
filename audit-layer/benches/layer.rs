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

use std::time::Duration;

use audit_layer::AuditLayer;
use audit_layer::sink::{DiscardSink, MemorySink};
use axum::Router;
use criterion::{Criterion, criterion_group, criterion_main};
use http::{HeaderName, StatusCode, header};
use tokio::runtime::Runtime;
use tower_http::trace::{DefaultMakeSpan, DefaultOnResponse, TraceLayer};
use tracing::{Dispatch, Level};
use tracing_appender::non_blocking::WorkerGuard;

#[path = "support/service.rs"]
mod service;

use service::{Kind, app, policy, roundtrip, runtime, time_requests};

/// The header the requests carry besides the usual ones.
const ACCEPT_ENCODING: Option<(HeaderName, &str)> =
    Some((header::ACCEPT_ENCODING, "gzip, deflate, br"));

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

/// Every variant answers 200, and the audit layer emits one (schema-valid) record per request
/// once the body is consumed.
fn preflight(rt: &Runtime, kind: Kind) {
    rt.block_on(async {
        for mut svc in [app(), traced(), audited()] {
            let (status, body) = roundtrip(&mut svc, kind.request(ACCEPT_ENCODING)).await;
            assert_eq!(status, StatusCode::OK, "{}: {body:?}", kind.group());
        }
        let records = MemorySink::new();
        let mut svc = app().layer(AuditLayer::new(policy()).sink(records.clone()));
        let (status, _) = roundtrip(&mut svc, kind.request(ACCEPT_ENCODING)).await;
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
        time_requests(b, rt, svc, move || kind.request(ACCEPT_ENCODING));
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
    let rt = runtime();
    for kind in Kind::ALL {
        bench_kind(c, &rt, kind);
    }
}

criterion_group!(benches, layer_overhead);
criterion_main!(benches);
