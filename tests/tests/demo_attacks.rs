//! Issue 18, "A log that holds under attack", against the running `demo-app` binary: one test
//! per finding that a user of the demo can observe over HTTP or on disk, written as the
//! attacker tried it at commit ee57d59 and asserting what DESIGN.md promises ("Delivery
//! promises": bounded in bytes, honest outcomes; "Tamper evidence"; "Who, from where").
//!
//! What the suite assumes of features still being built (field names, markers, rates,
//! timeouts, the demo's flags) is in one place, [`expected`], to be aligned as they land.
//! Demos whose memory is measured run with [`MEASURED_MALLOC`], so that their RSS follows what
//! they hold. The measurement of the issue's figures ([`measure_issue_18_figures`]) is
//! ignored by default: it floods for `AUDIT_ATTACK_FLOOD_SECS` (default 20) seconds.
//!
//! Run with `cargo test -p audit-tests --test demo_attacks`; against another build of the demo
//! (an older commit's, to see each test fail there) with `AUDIT_TEST_DEMO_BIN=<its binary>`;
//! the figures with `cargo test -p audit-tests --test demo_attacks measure -- --ignored
//! --nocapture`.

#![allow(clippy::unwrap_used, missing_docs)]

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use audit_layer::record::Timestamp;
use audit_tests::{
    ADMIN_TOKEN, ALICE, ALICE_ID, Api, Auth, BOB, DEMO, Demo, DemoConfig, FloodSpec, Latency,
    MEASURED_MALLOC, MemoryWatch, OTHER, PASSWORD, Reply, SlowBodies, SlowBodyOutcome,
    SlowBodySpec, demo_command, demo_has_flag, exits_within, flood, free_port, log_window,
    long_user_agent, python_json_lines, skip, slow_readers, wait_for_ray,
};
use reqwest::Method;
use serde_json::{Value, json};
use tokio::io::AsyncWriteExt;

// ---------------------------------------------------------------------------------------------
// What this suite assumes of issue 18's features: align these when they land
// ---------------------------------------------------------------------------------------------

mod expected {
    use std::time::Duration;

    /// The most bytes a recorded string (`raw.user_agent`, `raw.uri`, ids) keeps, its
    /// truncation marker included.
    pub(crate) const STRING_CAP_BYTES: usize = 8 * 1024;
    /// What a truncated string shows, after the part kept.
    pub(crate) const TRUNCATION_MARKER: &str = "…[truncated";
    /// The most bytes one stored record takes (its JSON text).
    pub(crate) const RECORD_CAP_BYTES: usize = 64 * 1024;

    /// `action.type` of a record that stands for failed authentications coalesced.
    pub(crate) const SUMMARY_ACTION: &str = "summary";
    /// Where a summary record says how many records it stands for (a number).
    pub(crate) const SUMMARY_COUNT: &str = "/resource/request/count";
    /// Where it names their source (the client IP).
    pub(crate) const SUMMARY_SOURCE: &str = "/actor/ip_address";
    /// Where it says when the window began and ended (RFC 3339).
    pub(crate) const SUMMARY_WINDOW: [&str; 2] =
        ["/resource/request/first", "/resource/request/last"];
    /// Records of failed authentication kept individually per source and window; beyond that
    /// they are coalesced into summary records.
    pub(crate) const FAILED_AUTH_PER_WINDOW: usize = 10;
    /// The coalescing window.
    pub(crate) const FAILED_AUTH_WINDOW: Duration = Duration::from_secs(60);

    /// Where a record keeps the request id a client sent, untrusted (optional).
    pub(crate) const CLIENT_REQUEST_ID: &str = "/raw/client_request_id";
    /// Where a record says the client left before the response was delivered.
    pub(crate) const CLIENT_GONE: &str = "/raw/client_gone";

    /// How long a body the layer reads before the app's auth may take to arrive (408 after).
    pub(crate) const BODY_READ_TIMEOUT: Duration = Duration::from_secs(10);
    /// The bytes of such bodies held at once, for all requests (503 beyond).
    pub(crate) const BODY_BUDGET_BYTES: u64 = 32 * 1024 * 1024;

    /// The largest answer of one page of the log (`limit=1000`).
    pub(crate) const PAGE_BYTES_MAX: usize = 16 * 1024 * 1024;
    /// The most any one attack here may add to the demo's resident memory.
    pub(crate) const ADDED_RSS_MAX_MIB: f64 = 64.0;

    /// The demo's flags for the settings above, passed (with the values above) only when its
    /// `--help` lists them, so that the suite runs the demo with the values it expects.
    pub(crate) fn demo_flags() -> [(&'static str, String); 4] {
        [
            (
                "--body-read-timeout-ms",
                BODY_READ_TIMEOUT.as_millis().to_string(),
            ),
            ("--body-budget", BODY_BUDGET_BYTES.to_string()),
            ("--failed-auth-rate", FAILED_AUTH_PER_WINDOW.to_string()),
            (
                "--failed-auth-window-ms",
                FAILED_AUTH_WINDOW.as_millis().to_string(),
            ),
        ]
    }
}

use expected::*;

// ---------------------------------------------------------------------------------------------
// The demo under attack, and its log
// ---------------------------------------------------------------------------------------------

/// The demo's configuration in this suite: [`expected::demo_flags`] where it has them, and the
/// allocator setting that makes its RSS measurable.
fn attack_config() -> DemoConfig {
    let mut config = DemoConfig::default().env(MEASURED_MALLOC.0, MEASURED_MALLOC.1);
    for (flag, value) in expected::demo_flags() {
        if demo_has_flag(flag) {
            config = config.arg(flag).arg(value);
        }
    }
    config
}

/// A demo with its data in `dir`.
async fn start(dir: &Path) -> Demo {
    Demo::start_with(&dir.join("data"), &dir.join("logs"), &attack_config()).await
}

/// Stops `demo` gracefully (everything accepted is written, summaries included) and starts it
/// again on the same data: what is in the log then is all there will be.
async fn restart(demo: &mut Demo, dir: &Path) -> Demo {
    let status = demo.stop().await;
    assert!(status.success(), "demo-app exited with {status} on SIGTERM");
    start(dir).await
}

/// One record of a census: its size, and the record with every string longer than 256
/// characters cut (a flooded log holds hundreds of megabytes).
#[derive(Debug)]
struct Brief {
    bytes: usize,
    record: Value,
}

/// The part of acc_demo's log in the [`log_window`] that `filters` select, read with alice's
/// token in pages of 100 and kept as [`Brief`]s.
async fn census(api: &Api, filters: &[(&str, &str)]) -> Vec<Brief> {
    let (since, before) = log_window();
    let mut cursor: Option<String> = None;
    let mut briefs = Vec::new();
    loop {
        let mut query = vec![
            ("since", since.as_str()),
            ("before", before.as_str()),
            ("limit", "100"),
        ];
        query.extend_from_slice(filters);
        if let Some(cursor) = &cursor {
            query.push(("cursor", cursor.as_str()));
        }
        let path = format!("/accounts/{DEMO}/logs/audit");
        let reply = api
            .call(Method::GET, &path, &query, &Auth::admin(), None)
            .await;
        let mut body = reply.expect(200, "reading the audit log").json();
        for record in body["result"].as_array_mut().expect("a page").drain(..) {
            let bytes = record.to_string().len();
            briefs.push(Brief {
                bytes,
                record: shrink(record),
            });
        }
        match body["result_info"]["cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => return briefs,
        }
    }
}

/// `value` with every string longer than 256 characters cut to its first 256 and `…`.
fn shrink(value: Value) -> Value {
    match value {
        Value::String(s) if s.len() > 256 => {
            Value::String(s.chars().take(256).chain("…".chars()).collect())
        }
        Value::Array(items) => Value::Array(items.into_iter().map(shrink).collect()),
        Value::Object(map) => Value::Object(map.into_iter().map(|(k, v)| (k, shrink(v))).collect()),
        other => other,
    }
}

/// A summary record, read by the [`expected`] pointers.
#[derive(Debug)]
struct Summary {
    source: String,
    count: u64,
    window: (String, String),
}

impl Summary {
    /// `record` as a summary, if it is one; panics if a summary lacks a field.
    fn of(record: &Value) -> Option<Self> {
        if record["action"]["type"] != SUMMARY_ACTION {
            return None;
        }
        let text = |pointer: &str| {
            record
                .pointer(pointer)
                .and_then(Value::as_str)
                .unwrap_or_else(|| panic!("a summary record without {pointer}: {record:#}"))
                .to_owned()
        };
        let count = record
            .pointer(SUMMARY_COUNT)
            .and_then(Value::as_u64)
            .unwrap_or_else(|| panic!("a summary record without {SUMMARY_COUNT}: {record:#}"));
        Some(Self {
            source: text(SUMMARY_SOURCE),
            count,
            window: (text(SUMMARY_WINDOW[0]), text(SUMMARY_WINDOW[1])),
        })
    }
}

/// The records of failed requests from `source` with a status in `statuses`, and the
/// summaries of `source`.
fn failures_from<'a>(
    briefs: &'a [Brief],
    source: &str,
    statuses: &[u16],
) -> (Vec<&'a Brief>, Vec<Summary>) {
    let individual = briefs
        .iter()
        .filter(|b| b.record["actor"]["ip_address"] == source)
        .filter(|b| {
            b.record["raw"]["status_code"]
                .as_u64()
                .is_some_and(|s| statuses.iter().any(|&w| u64::from(w) == s))
        })
        .filter(|b| b.record["action"]["type"] != SUMMARY_ACTION)
        .collect();
    let summaries = briefs
        .iter()
        .filter_map(|b| Summary::of(&b.record))
        .filter(|s| s.source == source)
        .collect();
    (individual, summaries)
}

/// The records of `rays`, waited for one by one (each read by its own filter, so that a
/// flooded log is never read whole before a measurement).
async fn wait_for_each(api: &Api, rays: &[String]) {
    for ray in rays {
        wait_for_ray(api, DEMO, &Auth::admin(), ray).await;
    }
}

/// Fills acc_demo's log with `n` records of alice's reads, each carrying a `User-Agent` of
/// `bytes` (what an attacker's huge records would weigh where nothing caps them), and waits
/// until they are stored.
async fn huge_records(demo: &Demo, api: &Api, n: usize, bytes: usize) {
    let client = reqwest::Client::builder()
        .user_agent(long_user_agent(bytes))
        .build()
        .unwrap();
    let url = format!("{}/accounts/{DEMO}/alerting/v3/policies", demo.base());
    for chunk in 0..n.div_ceil(4) {
        let sends = (chunk * 4..n.min(chunk * 4 + 4)).map(|_| {
            let request = client.get(&url).bearer_auth(ADMIN_TOKEN);
            async move { request.send().await.unwrap() }
        });
        for response in futures_util::future::join_all(sends).await {
            assert_eq!(response.status(), 200);
        }
    }
    // One more, after them all: its record is written after theirs (one account's records go
    // through one lane of the pipeline, in order), and it is cheap to wait for.
    let last = api
        .get(
            &format!("/accounts/{DEMO}/alerting/v3/policies"),
            &Auth::admin(),
        )
        .await
        .expect(200, "alice");
    wait_for_ray(api, DEMO, &Auth::admin(), &last.ray()).await;
}

/// An RFC 3339 time, `ms` from now.
fn from_now(ms: i64) -> String {
    Timestamp::from_unix_millis(Timestamp::now().unix_millis() + ms).to_string()
}

/// The record of `reply` in acc_demo's log.
async fn record_of(api: &Api, reply: &Reply) -> Value {
    let mut records = wait_for_ray(api, DEMO, &Auth::admin(), &reply.ray()).await;
    assert_eq!(records.len(), 1, "{records:#?}");
    records.remove(0)
}

// ---------------------------------------------------------------------------------------------
// Bounded in bytes
// ---------------------------------------------------------------------------------------------

/// Finding: "User-Agent has no length cap (400,000 bytes stored; the URI is kept up to
/// ~60 KB)".
#[tokio::test]
async fn a_400_kb_user_agent_and_a_60_kb_uri_are_stored_capped_with_a_marker() {
    let dir = tempfile::tempdir().unwrap();
    let demo = start(dir.path()).await;
    let api = Api::new(&demo);
    let agent = long_user_agent(400_000);

    let anonymous = api
        .request(
            Method::GET,
            &format!("/accounts/{DEMO}/alerting/v3/policies"),
            &[],
            &Auth::None,
        )
        .header("user-agent", &agent);
    let anonymous = api.send(anonymous).await.expect(401, "anonymous");
    let long_path = format!("/zones/{}", "z".repeat(60_000));
    let alice = api
        .request(Method::GET, &long_path, &[], &Auth::admin())
        .header("user-agent", &agent);
    let alice = api.send(alice).await.expect(404, "an unknown zone");

    for (what, reply) in [("anonymous", &anonymous), ("alice", &alice)] {
        let record = record_of(&api, reply).await;
        let size = record.to_string().len();
        assert!(
            size <= RECORD_CAP_BYTES,
            "{what}: a record of {size} bytes (cap {RECORD_CAP_BYTES})"
        );
        let stored = record["raw"]["user_agent"].as_str().unwrap();
        assert!(
            stored.len() <= STRING_CAP_BYTES,
            "{what}: raw.user_agent kept {} of {} bytes (cap {STRING_CAP_BYTES})",
            stored.len(),
            agent.len()
        );
        assert!(
            stored.contains(TRUNCATION_MARKER)
                && agent.starts_with(stored.get(..32).unwrap_or("-")),
            "{what}: raw.user_agent does not show that it was cut: {stored:.80}…"
        );
    }
    let record = record_of(&api, &alice).await;
    let uri = record["raw"]["uri"].as_str().unwrap();
    assert!(
        uri.len() <= STRING_CAP_BYTES && uri.contains(TRUNCATION_MARKER),
        "raw.uri kept {} of {} bytes: {uri:.80}…",
        uri.len(),
        long_path.len()
    );
}

/// Finding: "Any anonymous client fills any account's log: a request to
/// `/accounts/acc_demo/*` without credentials is answered 401 and filed in acc_demo's log …
/// One client wrote 961 MB into acc_demo in 66 s."
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_anonymous_flood_on_acc_demo_is_coalesced_into_counted_summaries() {
    let dir = tempfile::tempdir().unwrap();
    let mut demo = start(dir.path()).await;
    let spec = FloodSpec {
        path: format!("/accounts/{DEMO}/alerting/v3/policies"),
        user_agent_bytes: 400_000,
        connections: 8,
        requests: 200,
        duration: Duration::from_secs(20),
    };
    let outcome = flood(demo.base(), &spec).await;
    let refused = outcome.by_status.get(&401).copied().unwrap_or(0);
    assert_eq!(
        refused, outcome.sent,
        "every request answered 401: {outcome:?}"
    );

    let demo = restart(&mut demo, dir.path()).await;
    let api = Api::new(&demo);
    let briefs = census(&api, &[]).await;
    let (individual, summaries) = failures_from(&briefs, "127.0.0.1", &[401]);
    let windows =
        (outcome.elapsed.as_secs_f64() / FAILED_AUTH_WINDOW.as_secs_f64()).ceil() as usize + 1;
    let allowed = FAILED_AUTH_PER_WINDOW * windows;
    assert!(
        individual.len() <= allowed,
        "{} records of failed authentication from one source in acc_demo's log, one per \
         request: at most {FAILED_AUTH_PER_WINDOW} per {FAILED_AUTH_WINDOW:?} window ({allowed} \
         in {windows} windows), the rest coalesced",
        individual.len()
    );
    let summarized: u64 = summaries.iter().map(|s| s.count).sum();
    assert_eq!(
        individual.len() as u64 + summarized,
        refused as u64,
        "individual records plus the summaries' counts ({summaries:?}) account for every \
         refused request: nothing silently lost"
    );
    for summary in &summaries {
        assert!(summary.count > 0, "{summary:?}");
        assert!(summary.window.0 <= summary.window.1, "{summary:?}");
    }
    let bytes: usize = individual.iter().map(|b| b.bytes).sum();
    assert!(
        bytes <= allowed * RECORD_CAP_BYTES,
        "the flood wrote {bytes} bytes into acc_demo's log"
    );
}

/// Finding: "one `limit=1000` page built a 400 MB answer (+820 MB RSS)".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_page_of_1000_huge_records_holds_bounded_bytes_and_memory() {
    let dir = tempfile::tempdir().unwrap();
    let demo = start(dir.path()).await;
    let api = Api::new(&demo);
    huge_records(&demo, &api, 150, 400_000).await;

    let watch = MemoryWatch::start(demo.pid());
    let (since, before) = log_window();
    let query = [
        ("since", since.as_str()),
        ("before", before.as_str()),
        ("limit", "1000"),
    ];
    let path = format!("/accounts/{DEMO}/logs/audit");
    let page = api
        .call(Method::GET, &path, &query, &Auth::admin(), None)
        .await;
    let memory = watch.stop().await;
    let page = page.expect(200, "a page of 1000");
    assert!(
        memory.added_mib() <= ADDED_RSS_MAX_MIB,
        "one page added {:.0} MiB to the demo's RSS ({memory:?})",
        memory.added_mib()
    );
    assert!(
        page.text.len() <= PAGE_BYTES_MAX,
        "one page is {} bytes (at most {PAGE_BYTES_MAX})",
        page.text.len()
    );
}

/// Finding: "6 slow NDJSON exports took RSS from 1.1 to 4.8 GB".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn six_slow_ndjson_exports_hold_bounded_memory() {
    let dir = tempfile::tempdir().unwrap();
    let demo = start(dir.path()).await;
    let api = Api::new(&demo);
    huge_records(&demo, &api, 150, 400_000).await;

    let watch = MemoryWatch::start(demo.pid());
    let (since, before) = log_window();
    let path = format!("/accounts/{DEMO}/logs/audit?since={since}&before={before}");
    let headers = [
        format!("Authorization: Bearer {ADMIN_TOKEN}"),
        "Accept: application/x-ndjson".to_owned(),
    ];
    let readers = slow_readers(demo.addr(), &path, &headers, 6, 64 * 1024).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let memory = watch.stop().await;
    drop(readers);
    assert!(
        memory.added_mib() <= ADDED_RSS_MAX_MIB,
        "6 exports read slowly added {:.0} MiB to the demo's RSS ({memory:?})",
        memory.added_mib()
    );
}

/// The fastest of three verifications of acc_demo's chain over `[since, before)`.
async fn fastest_verification(api: &Api, since: &str, before: &str) -> Duration {
    let query = [("since", since), ("before", before)];
    let path = format!("/accounts/{DEMO}/logs/audit/verify");
    let mut fastest = Duration::MAX;
    for _ in 0..3 {
        let started = Instant::now();
        api.call(Method::GET, &path, &query, &Auth::admin(), None)
            .await
            .expect(200, "a verification");
        fastest = fastest.min(started.elapsed());
    }
    fastest
}

/// Finding: "`/verify` of a 1-second span took 1.66 s (it reads the whole account)".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verifying_a_one_second_span_does_not_read_the_whole_account() {
    let dir = tempfile::tempdir().unwrap();
    let demo = start(dir.path()).await;
    let api = Api::new(&demo);
    let (since, before) = (from_now(-20), from_now(980));
    let mut rays = Vec::new();
    for _ in 0..10 {
        let reply = api
            .get(
                &format!("/accounts/{DEMO}/alerting/v3/policies"),
                &Auth::admin(),
            )
            .await;
        rays.push(reply.expect(200, "alice").ray());
    }
    wait_for_each(&api, &rays).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let small = fastest_verification(&api, &since, &before).await;

    // The same second, once the account holds much more after it.
    huge_records(&demo, &api, 150, 400_000).await;
    let large = fastest_verification(&api, &since, &before).await;
    assert!(
        large <= small * 3 + Duration::from_millis(50),
        "verifying the same second took {small:?}, then {large:?} once the account held 150 \
         more records of 400 KB after it: it reads the whole account"
    );
}

/// Finding: "The layer buffers up to 1 MiB of request body before the app's auth runs, with no
/// read timeout: 500 anonymous connections each one byte short held RSS from 46 to 549 MB for
/// 45 s+."
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_anonymous_bodies_are_answered_408_or_503_and_hold_bounded_memory() {
    const CONNECTIONS: usize = 500;
    let dir = tempfile::tempdir().unwrap();
    let mut demo = start(dir.path()).await;
    let spec = SlowBodySpec {
        connections: CONNECTIONS,
        path: format!("/accounts/{DEMO}/alerting/v3/policies"),
        body_bytes: 1_000_000,
    };
    let watch = MemoryWatch::start(demo.pid());
    let deadline = Instant::now() + Duration::from_secs(30) + BODY_READ_TIMEOUT;
    let bodies = SlowBodies::start(demo.addr(), &spec, deadline);
    let sent = bodies.wait_sent(Duration::from_secs(30)).await;
    // What is sent may still wait in the kernel's buffers: give the demo time to read it.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let memory = watch.peak();
    eprintln!(
        "[attacks] {sent} stalled bodies added {:.0} MiB to the demo's RSS",
        memory.added_mib()
    );
    assert!(
        memory.added_mib() <= ADDED_RSS_MAX_MIB,
        "{sent} stalled bodies added {:.0} MiB to the demo's RSS ({memory:?})",
        memory.added_mib()
    );
    let outcomes = bodies.outcomes().await;
    let memory = watch.stop().await;
    assert!(
        memory.added_mib() <= ADDED_RSS_MAX_MIB,
        "the stalled bodies added {:.0} MiB to the demo's RSS ({memory:?})",
        memory.added_mib()
    );
    let mut by_status: BTreeMap<Option<u16>, usize> = BTreeMap::new();
    for outcome in &outcomes {
        *by_status.entry(outcome.status).or_default() += 1;
    }
    let still_open = outcomes
        .iter()
        .filter(|o| !o.closed && o.status.is_none())
        .count();
    assert_eq!(
        still_open,
        0,
        "connections neither answered nor closed {:?} after they stalled: {by_status:?}",
        BODY_READ_TIMEOUT + Duration::from_secs(30)
    );
    for outcome in &outcomes {
        match outcome.status {
            Some(408 | 503) => {}
            // Refused while the body was still going out: the answer may be lost in the reset.
            None if !outcome.sent_all => {}
            _ => panic!("a stalled body answered {outcome:?}; all: {by_status:?}"),
        }
    }

    let demo = restart(&mut demo, dir.path()).await;
    let api = Api::new(&demo);
    let briefs = census(&api, &[]).await;
    let (individual, summaries) = failures_from(&briefs, "127.0.0.1", &[408, 503]);
    let summarized: u64 = summaries.iter().map(|s| s.count).sum();
    // Every answered stalled body is recorded. A connection that saw no answer (reset while
    // its body was still going out) may have been closed before the demo read its request,
    // and so have no record: seen once in a full run, 499 records for 499 answers of 500.
    let answered = outcomes.iter().filter(|o| o.status.is_some()).count() as u64;
    let recorded = individual.len() as u64 + summarized;
    assert!(
        (answered..=CONNECTIONS as u64).contains(&recorded),
        "every answered stalled body is recorded (individually or counted in a summary), and \
         none twice: {recorded} recorded ({} records, summaries {summaries:?}) for {answered} \
         answered of {CONNECTIONS}; answers {by_status:?}",
        individual.len()
    );
}

// ---------------------------------------------------------------------------------------------
// Honest outcomes
// ---------------------------------------------------------------------------------------------

/// Sends alice's `POST` of a policy named `name` over a bare connection, with
/// `User-Agent: client-gone/<name>`, and closes the connection `linger` after the last byte,
/// without reading the answer.
async fn write_and_leave(addr: std::net::SocketAddr, name: &str, linger: Duration) {
    let body = json!({"name": name, "enabled": true,
        "alert_type": "clickhouse_alert_fw_ent_anomaly"})
    .to_string();
    let request = format!(
        "POST /accounts/{DEMO}/alerting/v3/policies HTTP/1.1\r\nHost: {addr}\r\n\
         Authorization: Bearer {ADMIN_TOKEN}\r\nUser-Agent: client-gone/{name}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream.write_all(request.as_bytes()).await.unwrap();
    if linger < Duration::from_millis(10) {
        // Blocks the worker for under two milliseconds: a timer would not wake that soon.
        std::thread::sleep(linger);
    } else {
        tokio::time::sleep(linger).await;
    }
    drop(stream);
}

/// The names of alice's policies.
async fn policy_names(api: &Api) -> Vec<String> {
    let path = format!("/accounts/{DEMO}/alerting/v3/policies");
    let policies = api.get(&path, &Auth::admin()).await.expect(200, "policies");
    policies
        .json()
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|p| Some(p["name"].as_str()?.to_owned()))
        .collect()
}

/// The records of [`write_and_leave`]'s writes, by policy name: once every policy in
/// `created` has its record and no more arrive, or after 15 s. (A request the server dropped
/// unread ran no handler, and may have no record.)
async fn records_of_writes(api: &Api, created: &[String]) -> BTreeMap<String, Value> {
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut seen = usize::MAX;
    loop {
        let records: BTreeMap<String, Value> = census(api, &[("raw_method", "POST")])
            .await
            .into_iter()
            .filter_map(|b| {
                let agent = b.record["raw"]["user_agent"].as_str()?;
                Some((agent.strip_prefix("client-gone/")?.to_owned(), b.record))
            })
            .collect();
        let all_created = created.iter().all(|n| records.contains_key(n));
        if (all_created && records.len() == seen) || Instant::now() > deadline {
            return records;
        }
        seen = records.len();
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Holds the write lock of the SQLite database `path` for `hold` (through python3's
/// `sqlite3`), so that the demo's writes wait meanwhile; returns once the lock is taken, or
/// `None` without python3.
fn lock_database(path: &Path, hold: Duration) -> Option<std::process::Child> {
    const SCRIPT: &str = "import sqlite3, sys, time\n\
        db = sqlite3.connect(sys.argv[1], timeout=30, isolation_level=None)\n\
        db.execute('BEGIN IMMEDIATE')\n\
        print('locked', flush=True)\n\
        time.sleep(float(sys.argv[2]))\n\
        db.execute('ROLLBACK')\n";
    let mut child = std::process::Command::new("python3")
        .args(["-c", SCRIPT])
        .arg(path)
        .arg(hold.as_secs_f64().to_string())
        .stdout(Stdio::piped())
        .spawn()
        .ok()?;
    let mut line = String::new();
    let stdout = child.stdout.as_mut().expect("a piped stdout");
    std::io::BufRead::read_line(&mut std::io::BufReader::new(stdout), &mut line)
        .expect("python3 says when it holds the lock");
    assert_eq!(
        line.trim(),
        "locked",
        "python3 could not lock {}",
        path.display()
    );
    Some(child)
}

/// Finding: "A write whose handler ran and changed state, but whose client disconnected within
/// a millisecond, is recorded `499`/`failure`: a search for successful changes misses it (6 of
/// 48)."
///
/// Two rounds: 64 writes whose clients leave within two milliseconds of sending (as the issue
/// tried it: some handlers finish first, some after; a request the server dropped unread has
/// no record and changed nothing), and 8 whose handlers wait on the app's database, locked for
/// 1.5 s, while their clients leave: those are certainly gone before any answer, and a change
/// made once the lock is released must be recorded as made, with the client gone. (At
/// ee57d59 the handler is dropped with the connection, but a statement that SQLite already
/// runs for it commits all the same: a `499` for a change that happened.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_whose_client_left_is_recorded_with_the_handlers_outcome() {
    let dir = tempfile::tempdir().unwrap();
    let demo = start(dir.path()).await;
    let api = Api::new(&demo);
    let quick: Vec<String> = (0..64).map(|i| format!("gone-{i}")).collect();
    for (i, name) in quick.iter().enumerate() {
        write_and_leave(
            demo.addr(),
            name,
            Duration::from_micros(250 * (i % 9) as u64),
        )
        .await;
    }
    let late: Vec<String> = (0..8).map(|i| format!("late-{i}")).collect();
    let Some(mut lock) =
        lock_database(&dir.path().join("data/app.db"), Duration::from_millis(1500))
    else {
        skip(
            "a_write_whose_client_left_is_recorded_with_the_handlers_outcome",
            "no python3 to lock the app's database",
            "install python3",
        );
        return;
    };
    // Each leaves once its request surely reached the handler, which waits for the lock.
    let leaving = late
        .iter()
        .map(|name| write_and_leave(demo.addr(), name, Duration::from_millis(100)));
    futures_util::future::join_all(leaving).await;
    tokio::task::spawn_blocking(move || lock.wait())
        .await
        .unwrap()
        .unwrap();

    // The waiting handlers retry the lock on SQLite's busy timer: their changes land shortly
    // after it is released. The set of changes is read once it holds still for a second.
    let ours = |names: Vec<String>| -> Vec<String> {
        names
            .into_iter()
            .filter(|n| quick.contains(n) || late.contains(n))
            .collect()
    };
    let settle = Instant::now() + Duration::from_secs(15);
    let mut created = ours(policy_names(&api).await);
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let now = ours(policy_names(&api).await);
        if now == created || Instant::now() > settle {
            break;
        }
        created = now;
    }
    let records = records_of_writes(&api, &created).await;
    let mut wrong = Vec::new();
    for name in quick.iter().chain(&late) {
        let made = created.contains(name);
        let Some(record) = records.get(name) else {
            if made || late.contains(name) {
                wrong.push(format!("{name}: not recorded (created: {made})"));
            }
            continue;
        };
        let (status, result) = (&record["raw"]["status_code"], &record["action"]["result"]);
        let gone = record.pointer(CLIENT_GONE).unwrap_or(&Value::Null);
        // The handler completed (the change is there): its own status, and for a client known
        // to be gone, the mark. It did not: a failure (499).
        let honest = if made {
            status == 200 && result == "success" && (gone == true || !late.contains(name))
        } else {
            result == "failure" && gone.is_null()
        };
        if !honest {
            let made = if made { "created" } else { "not created" };
            wrong.push(format!(
                "{name}: {made}, recorded {status} {result} {CLIENT_GONE}={gone}"
            ));
        }
    }
    eprintln!(
        "[attacks] client gone: {} of {} writes created, {} recorded, {} marked {CLIENT_GONE}",
        created.len(),
        quick.len() + late.len(),
        records.len(),
        records
            .values()
            .filter(|r| r.pointer(CLIENT_GONE) == Some(&Value::Bool(true)))
            .count()
    );
    assert!(
        wrong.is_empty(),
        "writes whose client left are recorded otherwise than their handler ended:\n{}",
        wrong.join("\n")
    );
}

// ---------------------------------------------------------------------------------------------
// What a record shows
// ---------------------------------------------------------------------------------------------

/// Finding: "U+2028/U+2029 and bidi controls (U+202E) are not escaped: one exported NDJSON
/// record becomes three unparseable lines for Python's `str.splitlines()`, and names display
/// reversed."
#[tokio::test]
async fn line_and_bidi_separators_are_escaped_in_an_ndjson_export() {
    const TRICKS: [char; 3] = ['\u{2028}', '\u{2029}', '\u{202e}'];
    let dir = tempfile::tempdir().unwrap();
    let demo = start(dir.path()).await;
    let api = Api::new(&demo);
    let name = format!("north{}south{}east{}tsew", TRICKS[0], TRICKS[1], TRICKS[2]);
    let agent = format!("agent{}one{}two{}owt", TRICKS[0], TRICKS[1], TRICKS[2]);
    let request = api
        .request(
            Method::POST,
            &format!("/accounts/{DEMO}/alerting/v3/policies"),
            &[],
            &Auth::admin(),
        )
        .header(
            "user-agent",
            reqwest::header::HeaderValue::from_bytes(agent.as_bytes()).unwrap(),
        )
        .json(&json!({"name": name, "enabled": true,
            "alert_type": "clickhouse_alert_fw_ent_anomaly"}));
    let reply = api
        .send(request)
        .await
        .expect(200, "a policy with a tricky name");
    let ray = reply.ray();
    wait_for_ray(&api, DEMO, &Auth::admin(), &ray).await;

    let (since, before) = log_window();
    let query = [
        ("since", since.as_str()),
        ("before", before.as_str()),
        ("raw_ray_id", ray.as_str()),
    ];
    let export = api
        .request(
            Method::GET,
            &format!("/accounts/{DEMO}/logs/audit"),
            &query,
            &Auth::admin(),
        )
        .header("accept", "application/x-ndjson");
    let export = api.send(export).await.expect(200, "the export").text;
    let Some(python) = python_json_lines(&export) else {
        skip(
            "line_and_bidi_separators_are_escaped_in_an_ndjson_export",
            "no python3",
            "install python3",
        );
        return;
    };
    assert_eq!(
        (python.lines, python.json),
        (1, 1),
        "one record exported is {} lines for Python's splitlines(), {} of them JSON: {export:?}",
        python.lines,
        python.json
    );
    let lower = export.to_lowercase();
    for c in TRICKS {
        let code = format!("{:04x}", c as u32);
        assert!(
            !export.contains(c),
            "the export holds U+{code} unescaped: {export:?}"
        );
        assert!(
            lower.contains(&format!("\\u{code}")) || lower.contains(&format!("\\\\u{{{code}}}")),
            "U+{code} is not in the export at all, escaped: {export:?}"
        );
    }
}

/// Finding: "Any client chooses the record's ray id (`x-request-id`, 1–128 chars, no
/// trusted-proxy check): another tenant's 404 answers a query for alice's ray id."
#[tokio::test]
async fn a_client_chosen_request_id_is_not_the_recorded_ray_id() {
    let dir = tempfile::tempdir().unwrap();
    let demo = start(dir.path()).await;
    let api = Api::new(&demo);
    let path = format!("/accounts/{DEMO}/alerting/v3/policies");
    let alices = api.get(&path, &Auth::admin()).await.expect(200, "alice");
    let ray = alices.ray();

    let mut forged = Vec::new();
    for (who, auth, status) in [("bob", Auth::other(), 404), ("anonymous", Auth::None, 401)] {
        let request = api
            .request(Method::GET, &path, &[], &auth)
            .header("x-request-id", &ray);
        let reply = api.send(request).await.expect(status, who);
        assert_ne!(
            reply.ray_id.as_deref(),
            Some(ray.as_str()),
            "{who} chose the request id: alice's ray id answers {who}'s request"
        );
        forged.push((who, reply));
    }
    for (who, reply) in &forged {
        let record = record_of(&api, reply).await;
        assert_ne!(
            record["raw"]["cf_ray_id"],
            ray.as_str(),
            "{who}: {record:#}"
        );
        if let Some(claimed) = record.pointer(CLIENT_REQUEST_ID) {
            assert_eq!(
                claimed,
                ray.as_str(),
                "{who}: the client's value, kept as untrusted"
            );
        }
    }
    let records = wait_for_ray(&api, DEMO, &Auth::admin(), &ray).await;
    assert_eq!(
        records.len(),
        1,
        "alice's ray id finds alice's record only: {records:#?}"
    );
    assert_eq!(records[0]["actor"]["email"], ALICE);
}

/// Finding: "Query parameter *names* are kept verbatim (`/login?pw-secret-1`,
/// `token[tok_…]=1`)."
#[tokio::test]
async fn query_parameter_names_are_not_recorded_verbatim() {
    let dir = tempfile::tempdir().unwrap();
    let demo = start(dir.path()).await;
    let api = Api::new(&demo);
    let login = api
        .post(
            "/login?pw-secret-1",
            &Auth::None,
            &json!({"email": ALICE, "password": PASSWORD}),
        )
        .await
        .expect(200, "a login");
    let policies = api
        .get(
            &format!("/accounts/{DEMO}/alerting/v3/policies?token[tok_5ecret9]=1"),
            &Auth::admin(),
        )
        .await
        .expect(200, "alice's policies");
    for (secret, reply) in [("pw-secret-1", &login), ("tok_5ecret9", &policies)] {
        let record = record_of(&api, reply).await;
        assert!(
            !record.to_string().contains(secret),
            "the record keeps the parameter name {secret:?}: raw.uri {}",
            record["raw"]["uri"]
        );
    }
}

/// Finding: "`raw.uri` keeps percent-encoding the router decoded (`/accounts/acc%5Fdemo`), so
/// `raw_uri` filters miss it."
#[tokio::test]
async fn a_percent_encoded_path_is_recorded_as_routed_and_found_by_raw_uri() {
    let dir = tempfile::tempdir().unwrap();
    let demo = start(dir.path()).await;
    let api = Api::new(&demo);
    let routed = format!("/accounts/{DEMO}/alerting/v3/policies");
    let reply = api
        .get("/accounts/acc%5Fdemo/alerting/v3/policies", &Auth::admin())
        .await
        .expect(200, "acc%5Fdemo is acc_demo");
    let record = record_of(&api, &reply).await;
    assert_eq!(
        record["raw"]["uri"],
        routed.as_str(),
        "raw.uri is not the path as the router decoded it"
    );
    let found = census(&api, &[("raw_uri", routed.as_str())]).await;
    assert!(
        found
            .iter()
            .any(|b| b.record["raw"]["cf_ray_id"] == reply.ray()),
        "a raw_uri filter for {routed} does not find the request"
    );
}

// ---------------------------------------------------------------------------------------------
// Tamper evidence: the files on disk
// ---------------------------------------------------------------------------------------------

/// Every file and directory under `root` whose permissions let others in: directories must be
/// 0700, files 0600, the public key may be read by anyone.
fn loose_permissions(root: &Path) -> Vec<String> {
    use std::os::unix::fs::PermissionsExt as _;
    let mut loose = Vec::new();
    let mut pending = vec![root.to_path_buf()];
    while let Some(path) = pending.pop() {
        let Ok(metadata) = std::fs::symlink_metadata(&path) else {
            continue; // gone meanwhile (a WAL file at a checkpoint)
        };
        let mode = metadata.permissions().mode() & 0o777;
        let public = path.file_name().is_some_and(|n| n == "audit-public.key");
        let allowed = if public {
            0o644
        } else if metadata.is_dir() {
            0o700
        } else {
            0o600
        };
        if mode & !allowed != 0 {
            loose.push(format!("{:04o} {}", mode, path.display()));
        }
        if metadata.is_dir() {
            for entry in std::fs::read_dir(&path).into_iter().flatten().flatten() {
                pending.push(entry.path());
            }
        }
    }
    loose.sort();
    loose
}

/// Finding: "Files are created 0644 in a 0755 directory (audit.db, WAL, spool, checkpoints,
/// app.db)".
#[tokio::test]
async fn the_data_directory_is_private() {
    let dir = tempfile::tempdir().unwrap();
    let mut demo = start(dir.path()).await;
    let api = Api::new(&demo);
    let reply = api
        .get(
            &format!("/accounts/{DEMO}/alerting/v3/policies"),
            &Auth::admin(),
        )
        .await
        .expect(200, "alice");
    record_of(&api, &reply).await;
    let data = dir.path().join("data");
    let running = loose_permissions(&data);
    demo.stop().await;
    let stopped = loose_permissions(&data);
    assert!(
        running.is_empty() && stopped.is_empty(),
        "others may enter or read the demo's data (directories must be 0700, files 0600):\n\
         while running:\n  {}\nafter stopping:\n  {}",
        running.join("\n  "),
        stopped.join("\n  ")
    );
}

/// Finding: "`chain.secret` is 0600 but read without checking its mode".
#[tokio::test]
async fn a_world_readable_chain_secret_stops_the_start() {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir(&data).unwrap();
    std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o700)).unwrap();
    let secret = data.join("chain.secret");
    std::fs::write(&secret, format!("{}\n", "5a".repeat(32))).unwrap();
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o644)).unwrap();

    let child = demo_command()
        .arg("--listen")
        .arg(format!("127.0.0.1:{}", free_port()))
        .arg("--data-dir")
        .arg(&data)
        .env("DEMO_ADMIN_TOKEN", ADMIN_TOKEN)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let output = tokio::task::spawn_blocking(move || {
        exits_within(
            child,
            Duration::from_secs(10),
            "a world-readable chain.secret must stop the start",
        )
    })
    .await
    .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{stderr}");
    assert!(
        stderr.contains(&secret.display().to_string()) && stderr.contains("chmod 600"),
        "the error names neither the file nor the fix: {stderr}"
    );
}

// ---------------------------------------------------------------------------------------------
// The demo's own finding
// ---------------------------------------------------------------------------------------------

/// Finding: "an administrator of acc_other added alice to acc_other without her consent".
#[tokio::test]
async fn an_administrator_cannot_make_alice_a_member_of_another_account() {
    let dir = tempfile::tempdir().unwrap();
    let demo = start(dir.path()).await;
    let api = Api::new(&demo);
    let (_, alice) = api.login(ALICE, PASSWORD).await;
    let alice = Auth::Session(alice.expect("alice's session"));
    let (_, bob) = api.login(BOB, PASSWORD).await;
    let bob = Auth::Session(bob.expect("bob's session"));
    let members = format!("/accounts/{OTHER}/members");

    let added = api
        .post(
            &members,
            &Auth::other(),
            &json!({"email": ALICE, "role": "administrator"}),
        )
        .await
        .expect(200, "bob adds alice");
    assert_eq!(
        added.json()["status"],
        "pending",
        "bob made alice a member of acc_other without her consent: {}",
        added.text
    );
    let account = api.get(&format!("/accounts/{OTHER}"), &alice).await;
    assert_eq!(
        account.status, 404,
        "alice is a member of acc_other without having accepted: {}",
        account.text
    );
    let (relogin, _) = api.login(ALICE, PASSWORD).await;
    assert_eq!(
        relogin.json()["accounts"],
        json!([DEMO]),
        "{}",
        relogin.text
    );

    let invites = api
        .get("/user/invites", &alice)
        .await
        .expect(200, "alice's invitations");
    let invite = invites.json()[0]["id"].as_str().unwrap().to_owned();
    let answer = format!("/user/invites/{invite}");
    let accepted = json!({"status": "accepted"});
    for (who, auth, status) in [
        ("bob's session", &bob, 404),
        ("bob's token", &Auth::other(), 403),
        ("alice's token", &Auth::admin(), 403),
        ("nobody", &Auth::None, 401),
    ] {
        let reply = api
            .call(Method::PATCH, &answer, &[], auth, Some(&accepted))
            .await;
        assert_eq!(
            reply.status, status,
            "{who} answers alice's invitation: {}",
            reply.text
        );
    }
    let account = api.get(&format!("/accounts/{OTHER}"), &alice).await;
    assert_eq!(account.status, 404, "{}", account.text);

    let reply = api
        .call(Method::PATCH, &answer, &[], &alice, Some(&accepted))
        .await
        .expect(200, "alice accepts");
    api.get(&format!("/accounts/{OTHER}"), &alice)
        .await
        .expect(200, "alice is a member once she accepted");
    let records = wait_for_ray(&api, OTHER, &Auth::other(), &reply.ray()).await;
    assert_eq!(records[0]["actor"]["id"], ALICE_ID, "{:#}", records[0]);
    assert_eq!(records[0]["resource"]["request"]["status"], "accepted");
}

// ---------------------------------------------------------------------------------------------
// The figures of the issue
// ---------------------------------------------------------------------------------------------

/// The two figures issue 18 asks for, printed as `SUMMARY` lines: (a) the RSS that 500
/// stalled bodies add; (b) an anonymous flood of 400 KB user agents on acc_demo for
/// `AUDIT_ATTACK_FLOOD_SECS` seconds (default 20): what it adds to acc_demo's log, the median
/// time of list queries on that account afterwards, and the summary records per source and
/// window. Asserts nothing: the suite above asserts the bounds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement of several minutes: run it with --ignored --nocapture"]
async fn measure_issue_18_figures() {
    let flood_secs: u64 = std::env::var("AUDIT_ATTACK_FLOOD_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20);

    // (a) 500 stalled bodies.
    let dir = tempfile::tempdir().unwrap();
    let demo = start(dir.path()).await;
    let spec = SlowBodySpec {
        connections: 500,
        path: format!("/accounts/{DEMO}/alerting/v3/policies"),
        body_bytes: 1_000_000,
    };
    let watch = MemoryWatch::start(demo.pid());
    let deadline = Instant::now() + Duration::from_secs(60) + BODY_READ_TIMEOUT;
    let bodies = SlowBodies::start(demo.addr(), &spec, deadline);
    let sent = bodies.wait_sent(Duration::from_secs(60)).await;
    let while_stalled = watch.peak();
    let outcomes = bodies.outcomes().await;
    let memory = watch.stop().await;
    let count = |f: &dyn Fn(&SlowBodyOutcome) -> bool| outcomes.iter().filter(|o| f(o)).count();
    let slowest = outcomes.iter().filter_map(|o| o.after).max();
    println!(
        "SUMMARY attack-slow-body connections={} sent={sent} rss_baseline_mib={:.0} \
         rss_added_mib={:.0} rss_added_once_sent_mib={:.0} answered_408={} answered_503={} \
         other_answers={} closed_without_answer={} open_at_deadline={} last_answer_s={:.1}",
        outcomes.len(),
        memory.baseline_kib as f64 / 1024.0,
        memory.added_mib(),
        while_stalled.added_mib(),
        count(&|o| o.status == Some(408)),
        count(&|o| o.status == Some(503)),
        count(&|o| o.status.is_some_and(|s| s != 408 && s != 503)),
        count(&|o| o.status.is_none() && o.closed),
        count(&|o| o.status.is_none() && !o.closed),
        slowest.unwrap_or_default().as_secs_f64(),
    );
    drop(demo);

    // (b) the flood.
    let dir = tempfile::tempdir().unwrap();
    let mut demo = start(dir.path()).await;
    let before = query_latencies(&Api::new(&demo)).await;
    let spec = FloodSpec {
        path: format!("/accounts/{DEMO}/alerting/v3/policies"),
        user_agent_bytes: 400_000,
        connections: 8,
        requests: usize::MAX,
        duration: Duration::from_secs(flood_secs),
    };
    let outcome = flood(demo.base(), &spec).await;
    let demo = restart(&mut demo, dir.path()).await;
    let api = Api::new(&demo);
    let briefs = census(&api, &[]).await;
    let (individual, summaries) = failures_from(&briefs, "127.0.0.1", &[401]);
    let bytes: usize = briefs.iter().map(|b| b.bytes).sum();
    let largest = briefs.iter().map(|b| b.bytes).max().unwrap_or(0);
    let mut windows: BTreeMap<(&str, &str, &str), (usize, u64)> = BTreeMap::new();
    for s in &summaries {
        let entry = windows
            .entry((&s.source, &s.window.0, &s.window.1))
            .or_default();
        entry.0 += 1;
        entry.1 += s.count;
    }
    println!(
        "SUMMARY attack-flood secs={flood_secs} sent={} answered_401={} records={} \
         log_bytes={bytes} log_mib={:.1} largest_record_bytes={largest} individual_401={} \
         summaries={} summarized={} windows={}",
        outcome.sent,
        outcome.by_status.get(&401).copied().unwrap_or(0),
        briefs.len(),
        bytes as f64 / 1024.0 / 1024.0,
        individual.len(),
        summaries.len(),
        summaries.iter().map(|s| s.count).sum::<u64>(),
        windows.len(),
    );
    for ((source, first, last), (n, count)) in &windows {
        println!(
            "SUMMARY attack-flood-window source={source} first={first} last={last} \
             summaries={n} summarized={count}"
        );
    }

    // Queries on the flooded account, and the same queries before the flood (the baseline of
    // the same run); `/healthz` measures what HTTP alone costs.
    let after = query_latencies(&api).await;
    let floor = healthz_latency(&api).await;
    for ((kind, before), (_, after)) in before.iter().zip(&after) {
        println!(
            "SUMMARY attack-flood-query kind={kind} before_p50_us={} after_p50_us={} \
             after_over_before={:.2} after_p50_less_http_us={} {after}",
            before.p50.as_micros(),
            after.p50.as_micros(),
            after.p50.as_secs_f64() / before.p50.as_secs_f64(),
            after.p50.saturating_sub(floor.p50).as_micros(),
        );
    }
    println!("SUMMARY attack-flood-query kind=healthz {floor}");
}

/// The latencies of 100 list queries of each kind on acc_demo: the newest records, a filter
/// that matches nothing, and one that matches a flood of 401s.
async fn query_latencies(api: &Api) -> Vec<(&'static str, Latency)> {
    let (since, before) = log_window();
    let kinds: [(&str, Vec<(&str, &str)>); 3] = [
        ("newest-10", vec![("limit", "10")]),
        (
            "matches-nothing",
            vec![("actor_email", "nobody@example.invalid")],
        ),
        (
            "status-401-limit-10",
            vec![("raw_status_code", "401"), ("limit", "10")],
        ),
    ];
    let path = format!("/accounts/{DEMO}/logs/audit");
    let mut latencies = Vec::new();
    for (kind, filters) in kinds {
        let mut query = vec![("since", since.as_str()), ("before", before.as_str())];
        query.extend_from_slice(&filters);
        let times = timed(100, || async {
            api.call(Method::GET, &path, &query, &Auth::admin(), None)
                .await
                .expect(200, kind);
        })
        .await;
        latencies.push((kind, times));
    }
    latencies
}

/// The latency of the demo's `/healthz`: HTTP's own cost, the floor of every query above.
async fn healthz_latency(api: &Api) -> Latency {
    timed(100, || async {
        api.get("/healthz", &Auth::None)
            .await
            .expect(200, "/healthz");
    })
    .await
}

async fn timed<F: std::future::Future<Output = ()>>(
    n: usize,
    mut call: impl FnMut() -> F,
) -> Latency {
    let mut times = Vec::with_capacity(n);
    for _ in 0..n {
        let started = Instant::now();
        call().await;
        times.push(started.elapsed());
    }
    times.sort_unstable();
    Latency::of(&times)
}
