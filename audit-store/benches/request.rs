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

use std::sync::atomic::Ordering;
use std::time::Duration;

use audit_layer::AuditLayer;
use audit_store::SqliteStore;
use audit_store::pipeline::{self, IngestSink, PipelineMetrics};
use audit_store::store::AuditStore;
use axum::Router;
use criterion::{Criterion, criterion_group, criterion_main};
use http::{HeaderName, StatusCode};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusRecorder};
use tokio::runtime::Runtime;

#[path = "../../audit-layer/benches/support/service.rs"]
mod service;

use service::{Kind, REQUESTS, app, policy, roundtrip, runtime, time_requests};

const TRACEPARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

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
        let setup = runtime();
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
        let app = app().layer(AuditLayer::new(policy()).sink(sink.clone()));
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

/// The header a request carries besides the usual ones: a `traceparent`, or none.
fn extra(traceparent: bool) -> Option<(HeaderName, &'static str)> {
    traceparent.then_some((HeaderName::from_static("traceparent"), TRACEPARENT))
}

fn bench_kind(c: &mut Criterion, rt: &Runtime, kind: Kind) {
    REQUESTS.store(0, Ordering::Relaxed);
    let recorder = recorder();
    let plain = Audited::start(None);
    let recorded = Audited::start(Some(&recorder));
    rt.block_on(async {
        for (svc, traceparent) in [(&plain, false), (&plain, true), (&recorded, false)] {
            let (status, body) =
                roundtrip(&mut svc.app.clone(), kind.request(extra(traceparent))).await;
            assert_eq!(status, StatusCode::OK, "{}: {body:?}", kind.group());
        }
    });

    let mut group = c.benchmark_group(kind.group());
    group.warm_up_time(Duration::from_secs(1));
    group.measurement_time(Duration::from_secs(3));
    let run = |b: &mut criterion::Bencher<'_>, svc: &Router, traceparent: bool| {
        time_requests(b, rt, svc, move || kind.request(extra(traceparent)));
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
    let rt = runtime();
    for kind in Kind::ALL {
        bench_kind(c, &rt, kind);
    }
}

criterion_group!(benches, correlation_and_metrics);
criterion_main!(benches);
