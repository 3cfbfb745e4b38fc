//! What trace correlation and the metrics facade add to an audited request, measured in one
//! run against the same request without them.
//!
//! The service is the layer benchmark's (`audit-layer/benches/layer.rs`): an axum `Router`
//! with the load benchmark's alerting policy route and handlers (`loadbench/src/api.rs`), a
//! GET and a PUT of a ~0.5 KB JSON policy, under an `AuditLayer` with a policy describing
//! both. Here the layer writes into the real sink, an [`IngestSink`] whose pipeline stores
//! into SQLite (a temporary file) on a thread of its own, so the request pays what it pays in
//! an app: the record built, then handed to the pipeline's queue.
//!
//! Three variants per request kind, one criterion group each (`get_policy`, `update_policy`):
//!
//! - `audit`: no `traceparent`, no metrics recorder: the baseline;
//! - `traceparent`: the request carries a W3C `traceparent`, which the layer parses and
//!   records as the trace and span ids;
//! - `metrics`: no `traceparent`, with `metrics-exporter-prometheus`'s recorder (the demo's,
//!   with the pipeline's histogram buckets) installed when the pipeline is built, so its
//!   counters, gauges and histograms record (the request side counts every record queued).
//!
//! Each iteration builds the request, drives the service as a tower `Service` on a
//! current-thread runtime and reads the response body to its end (the record is emitted
//! there). Ratios against `audit` are the figures; the pipeline's writes run on another
//! thread alike for every variant.
//!
//! ```text
//! cargo bench -p audit-store --bench request
//! ```

use std::hint::black_box;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use audit_layer::{AuditLayer, AuditPolicy, Operation};
use audit_store::SqliteStore;
use audit_store::pipeline::{self, IngestSink, PipelineMetrics};
use audit_store::store::AuditStore;
use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::routing::get;
use bytes::Bytes;
use criterion::{Criterion, criterion_group, criterion_main};
use http::{HeaderValue, Method, Request, StatusCode, Uri, header};
use http_body_util::BodyExt;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusRecorder};
use tokio::runtime::Runtime;
use tower::{Service, ServiceExt};

#[path = "../../loadbench/src/api.rs"]
mod api;

use api::{BEARER, ITEM_ROUTE, POLICY_JSON, USER_AGENT, get_policy, update_policy};

/// A request path matching [`ITEM_ROUTE`].
const PATH: &str = "/accounts/023e105f4ecef8ad9ca31a8372d0c353/alerting/v3/policies/0da2b59e-f118-439d-8097-bdfb215203c9";
const TRACEPARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

fn policy() -> AuditPolicy {
    AuditPolicy::builder()
        .operation(Operation::new(Method::GET, ITEM_ROUTE).summary("Get a Notification policy"))
        .operation(Operation::new(Method::PUT, ITEM_ROUTE).summary("Update a Notification policy"))
        .build()
        .expect("the bench policy compiles")
}

/// The demo's recorder: the pipeline's histograms with their buckets.
fn recorder() -> PrometheusRecorder {
    let mut builder = PrometheusBuilder::new();
    for (name, buckets) in pipeline::HISTOGRAM_BUCKETS {
        builder = builder
            .set_buckets_for_metric(Matcher::Full(name.into()), buckets)
            .expect("valid buckets");
    }
    builder.build_recorder()
}

/// An audited app over a fresh SQLite store whose pipeline runs on a thread of its own.
struct Audited {
    app: Router,
    sink: IngestSink,
    pipeline: Option<std::thread::JoinHandle<()>>,
    _dir: tempfile::TempDir,
}

impl Audited {
    /// With `recorder` the pipeline's metrics go to it (it is the default while the pipeline
    /// is built: the handles it registers then keep recording into it).
    fn start(recorder: Option<&PrometheusRecorder>) -> Self {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let path = dir.path().join("audit.db");
        let setup = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a tokio runtime");
        let build = || {
            setup.block_on(async {
                let store = SqliteStore::open(&path).await.expect("the store opens");
                store.migrate().await.expect("the store migrates");
                // Room for every record of a run: the requests outpace SQLite, and a full
                // queue would drop records (another path, with another cost).
                pipeline::builder(store)
                    .queue_capacity(1 << 20)
                    .queue_bytes(2 << 30)
                    .build()
                    .await
                    .expect("the pipeline starts")
            })
        };
        let (sink, pipeline) = match recorder {
            Some(recorder) => metrics::with_local_recorder(recorder, build),
            None => build(),
        };
        let pipeline = std::thread::spawn(move || setup.block_on(pipeline.run()));
        let app = Router::new()
            .route(ITEM_ROUTE, get(get_policy).put(update_policy))
            .layer(AuditLayer::new(policy()).sink(sink.clone()));
        Self {
            app,
            sink,
            pipeline: Some(pipeline),
            _dir: dir,
        }
    }

    /// Stops the pipeline once it stored everything; its counters.
    fn stop(mut self, rt: &Runtime) -> PipelineMetrics {
        rt.block_on(self.sink.shutdown());
        if let Some(pipeline) = self.pipeline.take() {
            pipeline.join().expect("the pipeline thread ends");
        }
        self.sink.metrics()
    }
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
    fn request(self, traceparent: bool) -> Request<Body> {
        let mut builder = Request::builder()
            .uri(Uri::from_static(PATH))
            .header(header::HOST, HeaderValue::from_static("api.example.com"))
            .header(header::USER_AGENT, HeaderValue::from_static(USER_AGENT))
            .header(header::ACCEPT, HeaderValue::from_static("application/json"))
            .header(header::AUTHORIZATION, HeaderValue::from_static(BEARER))
            .extension(ConnectInfo(SocketAddr::from(([127, 0, 0, 1], 40000))));
        if traceparent {
            builder = builder.header("traceparent", HeaderValue::from_static(TRACEPARENT));
        }
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

/// Requests made by [`roundtrip`] since the last [`bench_kind`] began: for instruction counts
/// per request under callgrind (`--toggle-collect='*roundtrip*'`).
static REQUESTS: AtomicU64 = AtomicU64::new(0);

/// One request through `svc`, response body read to its end.
async fn roundtrip(svc: &mut Router, req: Request<Body>) -> (StatusCode, Bytes) {
    REQUESTS.fetch_add(1, Ordering::Relaxed);
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

fn bench_kind(c: &mut Criterion, rt: &Runtime, kind: Kind) {
    REQUESTS.store(0, Ordering::Relaxed);
    let recorder = recorder();
    let plain = Audited::start(None);
    let recorded = Audited::start(Some(&recorder));
    rt.block_on(async {
        for (svc, traceparent) in [(&plain, false), (&plain, true), (&recorded, false)] {
            let (status, body) = roundtrip(&mut svc.app.clone(), kind.request(traceparent)).await;
            assert_eq!(status, StatusCode::OK, "{}: {body:?}", kind.group());
        }
    });

    let mut group = c.benchmark_group(kind.group());
    group.warm_up_time(Duration::from_secs(1));
    group.measurement_time(Duration::from_secs(3));
    let run = |b: &mut criterion::Bencher<'_>, svc: &Router, traceparent: bool| {
        b.to_async(rt).iter_custom(|iters| {
            let mut svc = svc.clone();
            async move {
                let start = Instant::now();
                for _ in 0..iters {
                    black_box(roundtrip(&mut svc, kind.request(traceparent)).await);
                }
                start.elapsed()
            }
        });
    };
    group.bench_function("audit", |b| run(b, &plain.app, false));
    group.bench_function("traceparent", |b| run(b, &plain.app, true));
    group.bench_function("metrics", |b| run(b, &recorded.app, false));
    group.finish();
    eprintln!(
        "{}: {} requests (3 of them before the clock)",
        kind.group(),
        REQUESTS.load(Ordering::Relaxed)
    );

    let plain = plain.stop(rt);
    let recorded = recorded.stop(rt);
    for (name, metrics) in [("without", &plain), ("with the recorder", &recorded)] {
        // Nothing lost: the figures are of requests whose records were all stored.
        assert_eq!(metrics.dropped, 0, "{name}: {metrics:?}");
        assert_eq!(metrics.stored, metrics.enqueued, "{name}: {metrics:?}");
    }
    let text = recorder.handle().render();
    assert!(
        text.contains("audit_batch_write_seconds_bucket"),
        "the recorder received the pipeline's histograms"
    );
}

fn correlation_and_metrics(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    bench_kind(c, &rt, Kind::Get);
    bench_kind(c, &rt, Kind::Put);
}

criterion_group!(benches, correlation_and_metrics);
criterion_main!(benches);
