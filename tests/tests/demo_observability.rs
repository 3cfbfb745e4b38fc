//! The demo as an operator sees it beside their tracing and metrics: a request carrying a W3C
//! `traceparent` is found in the audit log with its trace id and the service's name, and
//! `/metrics` shows the audit pipeline's histograms and counters.
//!
//! Run with `cargo test -p audit-tests --test demo_observability`.

#![allow(clippy::unwrap_used, missing_docs)]

use audit_tests::{Api, Auth, DEMO, Demo, assert_valid, wait_for_ray};
use reqwest::Method;

const TRACEPARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

/// The value of the sample `series` (name and labels, as rendered) in Prometheus text.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|value| value.parse().ok())
}

#[tokio::test]
async fn a_request_s_trace_is_in_its_record_and_the_pipeline_s_histograms_in_metrics() {
    let dir = tempfile::tempdir().unwrap();
    let mut demo = Demo::start(&dir.path().join("data"), &dir.path().join("logs")).await;
    let api = Api::new(&demo);
    let admin = Auth::admin();

    // A traced request, one with a malformed header, and one without.
    let traced = api
        .send(
            api.request(Method::GET, &format!("/accounts/{DEMO}"), &[], &admin)
                .header("traceparent", TRACEPARENT),
        )
        .await
        .expect(200, "a traced read")
        .ray();
    let forged = api
        .send(
            api.request(Method::GET, &format!("/accounts/{DEMO}"), &[], &admin)
                .header(
                    "traceparent",
                    "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
                ),
        )
        .await
        .expect(200, "a read with an uppercase traceparent")
        .ray();
    let plain = api
        .get(&format!("/accounts/{DEMO}"), &admin)
        .await
        .expect(200, "an untraced read")
        .ray();

    let record = &wait_for_ray(&api, DEMO, &admin, &traced).await[0];
    assert_valid(record);
    assert_eq!(
        record["trace"]["trace_id"], "4bf92f3577b34da6a3ce929d0e0e4736",
        "{record:#}"
    );
    assert_eq!(record["trace"]["span_id"], "00f067aa0ba902b7", "{record:#}");
    assert_eq!(record["service"], "demo-app", "{record:#}");
    for ray in [&forged, &plain] {
        let record = &wait_for_ray(&api, DEMO, &admin, ray).await[0];
        assert!(
            record.get("trace").is_none(),
            "no valid traceparent: {record:#}"
        );
        assert_eq!(record["service"], "demo-app");
    }

    // What a Prometheus scrape reads: the histograms, as histograms, with what was stored.
    let metrics = api
        .get("/metrics", &Auth::None)
        .await
        .expect(200, "/metrics");
    let text = &metrics.text;
    for histogram in [
        "audit_batch_records",
        "audit_batch_write_seconds",
        "audit_commit_lag_seconds",
    ] {
        assert!(
            text.contains(&format!("# TYPE {histogram} histogram")),
            "{histogram} in:\n{text}"
        );
    }
    let stored = sample(text, "audit_records_stored_total").unwrap_or_else(|| panic!("{text}"));
    assert!(stored >= 3.0, "the three reads are stored: {stored}");
    let lags = sample(text, r#"audit_commit_lag_seconds_count{from="queue"}"#)
        .unwrap_or_else(|| panic!("{text}"));
    assert!(lags >= 3.0, "a lag for each record stored: {lags}");
    assert!(
        text.contains(r#"audit_batch_write_seconds_bucket{le="0.001"}"#),
        "the buckets audit-store suggests: {text}"
    );
    demo.stop().await;
}
