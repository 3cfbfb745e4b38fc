//! The viewer's server time (issue 21), on the query benchmark's data: for the big account
//! over all 30 days, through the router with the viewer mounted,
//!
//! - `viewer/page/*`: the list request the viewer's first page makes (`limit=50`, newest
//!   first) — the page's HTML is a constant string;
//! - `viewer/stats/*`: the stats endpoint the viewer's trends read (hourly buckets are at
//!   most 1,000: 30 days are read by day, as the viewer asks by default; `top=5`),
//!
//! each unfiltered and with the filters of the main cases (`actor_email` = the most active
//! email, `resource_product=workers`, `action_type=update`). The targets: a first page under
//! 50 ms and stats under 150 ms (medians), printed against the main group's `http/1_unfiltered`
//! (a 7-day page of 100, measured in the same run) as the baseline.

use std::hint::black_box;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use audit_store::query::{Access, AuditLogRouter};
use audit_store::store::ChainedStore;
use axum::Router;
use axum::http::StatusCode;
use criterion::{BenchmarkId, Criterion, SamplingMode};
use tokio::runtime::Runtime;

use super::support::BoxResult;
use super::support::records::{DAY_MS, Dataset};
use super::{account, get, median_ns, rfc3339, show};

/// The viewer's first page and its stats, goals in ms.
const PAGE_GOAL_MS: f64 = 50.0;
const STATS_GOAL_MS: f64 = 150.0;

/// The filters measured: (criterion key, parameter, value).
fn filters(data: &Dataset) -> BoxResult<Vec<(&'static str, &'static str, String)>> {
    let (top, _) = data
        .world
        .email_at_rank(0)
        .ok_or("the big account has no actor with an email")?;
    Ok(vec![
        ("0_unfiltered", "", String::new()),
        ("2_actor_email", "actor_email", top),
        (
            "3_resource_product",
            "resource_product",
            super::PRODUCT.to_owned(),
        ),
        ("4_action_type", "action_type", "update".to_owned()),
    ])
}

fn uri(
    data: &Dataset,
    path: &str,
    extra: &[(&str, &str)],
    filter: (&str, &str),
) -> BoxResult<String> {
    let mut query = form_urlencoded::Serializer::new(String::new());
    query
        .append_pair("since", &rfc3339(data.end_ms - 30 * DAY_MS)?)
        .append_pair("before", &rfc3339(data.end_ms)?);
    for (k, v) in extra {
        query.append_pair(k, v);
    }
    if !filter.0.is_empty() {
        query.append_pair(filter.0, filter.1);
    }
    Ok(format!(
        "/accounts/{}/logs/audit{path}?{}",
        account(data),
        query.finish()
    ))
}

/// The backends measured so far, for [`summary`].
static MEASURED: Mutex<Vec<&'static str>> = Mutex::new(Vec::new());

/// Measures the viewer's requests on `store` as the group `{backend}-viewer`.
pub(super) fn measure<S: ChainedStore>(
    c: &mut Criterion,
    rt: &Runtime,
    backend: &'static str,
    store: &S,
    data: &Dataset,
    smoke: bool,
) -> BoxResult<()> {
    let router: Router = AuditLogRouter::new(store.clone(), |_: &http::request::Parts, _: &str| {
        Access::Allowed
    })
    .with_viewer()
    .into_router();
    let group = format!("{backend}-viewer");
    let mut requests = Vec::new();
    for (key, param, value) in filters(data)? {
        let page = uri(data, "", &[("limit", "50")], (param, &value))?;
        let stats = uri(data, "/stats", &[("top", "5")], (param, &value))?;
        // Checked once before measuring: a benchmark of errors is no benchmark.
        for (what, uri) in [("page", &page), ("stats", &stats)] {
            let (status, body) = rt.block_on(get(&router, uri))?;
            if status != StatusCode::OK {
                return Err(format!(
                    "{group} {what} {key}: {status}: {}",
                    String::from_utf8_lossy(&body)
                )
                .into());
            }
            let body: serde_json::Value = serde_json::from_slice(&body)?;
            let found = if what == "page" {
                body["result"].as_array().map_or(0, Vec::len) as u64
            } else {
                body["result"]["count"].as_u64().unwrap_or(0)
            };
            if found == 0 && !smoke {
                return Err(format!("{group} {what} {key}: nothing matched").into());
            }
            println!("{group} {what} {key}: {found} records");
        }
        requests.push((key, page, stats));
    }
    let (status, _) = rt.block_on(get(
        &router,
        &format!("/accounts/{}/logs/audit/viewer", account(data)),
    ))?;
    if status != StatusCode::OK {
        return Err(format!("{group}: the viewer page answered {status}").into());
    }
    let mut g = c.benchmark_group(&group);
    if !smoke {
        g.sampling_mode(SamplingMode::Flat)
            .sample_size(20)
            .measurement_time(Duration::from_secs(5));
    }
    for (key, page, stats) in &requests {
        for (function, uri) in [("page", page), ("stats", stats)] {
            g.bench_function(BenchmarkId::new(function, key), |b| {
                b.to_async(rt).iter(|| async {
                    let (status, body) = get(&router, uri).await.expect("the router answers");
                    assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
                    black_box(body.len())
                });
            });
        }
    }
    g.finish();
    MEASURED
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .push(backend);
    Ok(())
}

/// The medians of each backend's `{backend}-viewer` group against the goals and the baseline
/// `{backend}/http/1_unfiltered`.
pub(super) fn summary(data: &Dataset, since: SystemTime) {
    let measured = MEASURED
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .clone();
    for backend in measured {
        summary_of(backend, &format!("{backend}-viewer"), data, since);
    }
}

fn summary_of(backend: &str, group: &str, data: &Dataset, since: SystemTime) {
    let baseline = median_ns(backend, "http", "1_unfiltered", since);
    println!(
        "\n=== {group}: the viewer's requests over 30 days (medians; baseline {backend} http/1_unfiltered = {}) ===",
        show(baseline)
    );
    println!(
        "{:<20} {:>10} {:>8} {:>6}  {:>10} {:>8} {:>6}",
        "filter", "page", "x base", "<50ms", "stats", "x base", "<150ms"
    );
    let Ok(filters) = filters(data) else { return };
    for (key, _, _) in filters {
        let page = median_ns(group, "page", key, since);
        let stats = median_ns(group, "stats", key, since);
        let ratio = |ns: Option<f64>| match (ns, baseline) {
            (Some(ns), Some(b)) if b > 0.0 => format!("{:.1}", ns / b),
            _ => "-".into(),
        };
        let goal = |ns: Option<f64>, ms: f64| {
            ns.map_or("-", |ns| if ns < ms * 1e6 { "yes" } else { "NO" })
        };
        println!(
            "{:<20} {:>10} {:>8} {:>6}  {:>10} {:>8} {:>6}",
            key,
            show(page),
            ratio(page),
            goal(page, PAGE_GOAL_MS),
            show(stats),
            ratio(stats),
            goal(stats, STATS_GOAL_MS),
        );
    }
}
