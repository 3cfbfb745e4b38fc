//! `GET /metrics`: the audit pipeline's counters, histograms and gauges (see
//! `audit_store::pipeline`'s Metrics) in the Prometheus text format, through the `metrics`
//! facade and `metrics-exporter-prometheus`.
//!
//! The recorder is installed once per process, by [`install`], before the audit pipeline is
//! built (the pipeline registers its metrics when it is built).

use std::sync::OnceLock;
use std::time::Duration;

use axum::http::StatusCode;
use axum::http::header::CONTENT_TYPE;
use axum::response::IntoResponse;
use metrics_exporter_prometheus::{BuildError, Matcher, PrometheusBuilder, PrometheusHandle};

/// How often the recorder drains what histograms recorded since (bounding its memory when
/// nobody scrapes).
const UPKEEP_EVERY: Duration = Duration::from_secs(5);

/// The process's Prometheus recorder, once installed; `None` when another recorder was
/// installed first.
static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// Installs the Prometheus recorder as the process's `metrics` recorder, with buckets suited
/// to each of the pipeline's histograms. Later calls do nothing.
pub(crate) fn install() {
    HANDLE.get_or_init(|| match recorder() {
        Ok(handle) => {
            let upkeep = handle.clone();
            let spawned = std::thread::Builder::new()
                .name("metrics-upkeep".into())
                .spawn(move || {
                    loop {
                        std::thread::sleep(UPKEEP_EVERY);
                        upkeep.run_upkeep();
                    }
                });
            if let Err(e) = spawned {
                tracing::warn!(target: "demo_app", "cannot start the metrics upkeep thread: {e}");
            }
            Some(handle)
        }
        Err(e) => {
            tracing::warn!(target: "demo_app", "no /metrics: cannot install the Prometheus recorder: {e}");
            None
        }
    });
}

fn recorder() -> Result<PrometheusHandle, BuildError> {
    let mut builder = PrometheusBuilder::new();
    for (name, buckets) in audit_store::pipeline::HISTOGRAM_BUCKETS {
        builder = builder.set_buckets_for_metric(Matcher::Full(name.into()), buckets)?;
    }
    builder.install_recorder()
}

/// Metrics
///
/// The audit pipeline's counters, histograms (batch sizes, write times, the lag from a
/// record's time to its commit) and gauges, in the Prometheus text format. Not audited.
#[utoipa::path(
    get,
    path = "/metrics",
    responses(
        (status = 200, description = "The metrics, in the Prometheus text exposition format 0.0.4", body = String, content_type = "text/plain"),
        (status = 503, description = "No metrics recorder could be installed", body = String, content_type = "text/plain"),
    ),
    extensions(("x-audit" = json!(false))),
)]
pub(crate) async fn metrics() -> impl IntoResponse {
    match HANDLE.get().and_then(Option::as_ref) {
        Some(handle) => (
            StatusCode::OK,
            [(CONTENT_TYPE, "text/plain; version=0.0.4")],
            handle.render(),
        ),
        None => (
            StatusCode::SERVICE_UNAVAILABLE,
            [(CONTENT_TYPE, "text/plain")],
            "no metrics recorder\n".to_owned(),
        ),
    }
}
