//! The pipeline's metrics through the `metrics` facade: with a Prometheus recorder installed
//! (this test binary's global recorder), the counters, histograms and gauges a pipeline
//! records, with its labels, as an app's `/metrics` would serve them.

#[macro_use]
mod common;

use std::time::Duration;

use audit_layer::AuditSink;
use audit_layer::record::Timestamp;
use audit_store::pipeline::HISTOGRAM_BUCKETS;
use common::{TestResult, fast, record, start, stop};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

fn recorder() -> PrometheusHandle {
    let mut builder = PrometheusBuilder::new();
    for (name, buckets) in HISTOGRAM_BUCKETS {
        builder = builder
            .set_buckets_for_metric(Matcher::Full(name.into()), buckets)
            .expect("valid buckets");
    }
    builder.install_recorder().expect("the only recorder")
}

/// The value of the sample `series` (name and labels, as rendered) in `text`.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|value| value.parse().ok())
}

#[tokio::test]
async fn a_pipeline_exports_its_counters_histograms_and_gauges_with_its_labels() -> TestResult {
    let prometheus = recorder();
    let fx = common::sqlite().await?;
    let (sink, worker) = start(
        fast(fx.store.clone())
            .batch_size(16)
            .metric_label("log", "test"),
    )
    .await?;
    // Records made 2 s ago: their lag to the commit is at least 2 s.
    let made = Timestamp::now().unix_millis() - 2_000;
    for i in 0..40 {
        sink.submit(record(Some("acc_a"), made + i));
    }
    let m = stop(&sink, worker).await?;
    assert_eq!(m.stored, 40);

    let text = prometheus.render();
    let count =
        |series: &str| sample(&text, series).unwrap_or_else(|| panic!("no {series} in:\n{text}"));
    assert_eq!(count(r#"audit_records_enqueued_total{log="test"}"#), 40.0);
    assert_eq!(count(r#"audit_records_stored_total{log="test"}"#), 40.0);
    assert_eq!(count(r#"audit_records_dropped_total{log="test"}"#), 0.0);
    assert_eq!(
        count(r#"audit_batches_total{log="test"}"#),
        m.batches as f64
    );

    // Histograms, not summaries: buckets, a sum and a count.
    assert!(
        text.contains("# TYPE audit_batch_records histogram"),
        "{text}"
    );
    assert_eq!(count(r#"audit_batch_records_sum{log="test"}"#), 40.0);
    assert_eq!(
        count(r#"audit_batch_records_count{log="test"}"#),
        m.batches as f64
    );
    assert_eq!(
        count(r#"audit_batch_records_bucket{log="test",le="16"}"#),
        m.batches as f64,
        "no batch over 16 records"
    );
    assert!(
        text.contains("# TYPE audit_batch_write_seconds histogram"),
        "{text}"
    );
    assert_eq!(
        count(r#"audit_batch_write_seconds_count{log="test"}"#),
        m.batches as f64
    );
    assert!(
        text.contains("# TYPE audit_commit_lag_seconds histogram"),
        "{text}"
    );
    let lag = r#"audit_commit_lag_seconds_count{log="test",from="queue"}"#;
    assert_eq!(count(lag), 40.0, "one lag per record");
    assert_eq!(
        count(r#"audit_commit_lag_seconds_bucket{log="test",from="queue",le="1"}"#),
        0.0,
        "every record waited 2 s or more"
    );
    assert!(count(r#"audit_commit_lag_seconds_sum{log="test",from="queue"}"#) >= 78.0);

    assert!(text.contains("# TYPE audit_queue_depth gauge"), "{text}");
    assert_eq!(count(r#"audit_queue_depth{log="test"}"#), 0.0);
    assert!(
        text.contains("# HELP audit_records_stored_total Records written to the database."),
        "descriptions from the snapshot's help texts: {text}"
    );
    // A pipeline without labels is a series of its own.
    let fx2 = common::sqlite().await?;
    let (sink2, worker2) = start(fast(fx2.store.clone())).await?;
    sink2.submit(record(Some("acc_b"), made));
    stop(&sink2, worker2).await?;
    tokio::time::sleep(Duration::from_millis(10)).await;
    let text = prometheus.render();
    assert_eq!(
        sample(&text, "audit_records_stored_total"),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        sample(&text, r#"audit_records_stored_total{log="test"}"#),
        Some(40.0)
    );
    Ok(())
}
