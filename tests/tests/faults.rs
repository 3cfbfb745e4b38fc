//! Faults, under load (issue 8): the real `demo-app` binary on a PostgreSQL cluster of the
//! test's own (initdb'd into a temporary directory, on a free port, stopped by a drop guard;
//! never the machine's shared one), driven by a bounded load generator that records the
//! `x-request-id` of every answer, then checked against the audit tables read directly.
//!
//! - [`slowest_postgres_outage_mid_load_every_answer_stored_once`]: PostgreSQL is stopped
//!   mid-load for [`OUTAGE`] (10 s here, not the 30 s, to bound CI time) and started
//!   again; the demo keeps answering, no request waits on audit storage, and every answered
//!   request has exactly one record once the pipeline catches up.
//! - [`slow_database_bounded_memory_and_no_loss`]: every chunk to and from PostgreSQL is
//!   delayed by [`SLOW_DB_DELAY`] through a proxy: memory stays bounded, nothing is lost.
//! - [`sigkill_mid_load_then_restart_loses_only_the_uncommitted_tail`] (default mode) and
//!   [`strict_mode_sigkill_mid_load_loses_no_answered_record`]; strict mode with the database
//!   unreachable: [`strict_mode_fails_closed_fast_while_postgres_is_unreachable`].
//! - [`sigterm_mid_load_stores_every_answered_request`].
//! - [`spool_path_that_is_a_file_stops_the_start`] and
//!   [`spool_over_budget_while_postgres_is_unreachable_is_counted_in_gap_records`].
//!
//! Requests of two kinds make the load: authenticated audited writes (`PUT` and `POST` of
//! alerting policies), which also need the app's own tables — in the same PostgreSQL — and
//! unauthenticated audited `POST`s, answered `401` without any database: their latency is what
//! the audit layer adds, so they are the ones the "never waits on storage" bound applies to.
//!
//! Run with `cargo test -p audit-tests --test faults -- --test-threads=1 --nocapture` to see
//! the measured numbers. Without PostgreSQL (or `runuser` when running as root) the
//! PostgreSQL tests print why and pass.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::print_stderr,
    missing_docs
)]

mod support_pg;

use std::time::{Duration, Instant};

use support_pg::{
    Accounting, Demo, Kind, Load, LoadSpec, PgCluster, Proxy, Samples, Stored, cluster_or_skip,
    demo_command, demo_has_flag, free_port, spool_segments, wait_for_catch_up,
};

/// How long PostgreSQL stays down in the outage test. The issue asks for 30 s; 10 s keeps the
/// whole file within about three minutes and still outlasts every retry and backoff of the
/// pipeline's first attempt (3 tries, 50 ms to 5 s) many times over.
const OUTAGE: Duration = Duration::from_secs(10);

/// The latency the slow-database proxy adds to every chunk, each way.
const SLOW_DB_DELAY: Duration = Duration::from_millis(20);

/// No request that needs no database may take longer than this, whatever the audit store
/// does: the request path never waits on audit storage.
const NO_STORAGE_WAIT: Duration = Duration::from_secs(1);

/// The most the demo's resident memory may grow under the slow database.
const MEMORY_GROWTH_LIMIT_KIB: u64 = 100 * 1024;

/// The load of most tests: about 300 requests/s.
const LOAD: LoadSpec = LoadSpec {
    writers: 8,
    write_rate: 150.0,
    anonymous: 4,
    anonymous_rate: 150.0,
};

fn blocking<T>(f: impl FnOnce() -> T) -> T {
    tokio::task::block_in_place(f)
}

fn tempdir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("faults-")
        .tempdir()
        .unwrap()
}

fn print_load(test: &str, samples: &Samples) {
    eprintln!(
        "[{test}] requests sent {}, answered by status {:?}, unanswered {}",
        samples.0.len(),
        samples.by_status(),
        samples.unanswered()
    );
}

/// At least 90% of the requests sent before `sent_before` were answered (what the exact
/// counts are counted over), and every answer carries its `x-request-id`.
#[track_caller]
fn assert_answered(what: &str, samples: &Samples, sent_before: Duration, demo_stderr: &str) {
    assert_eq!(
        samples.answered_without_ray(),
        0,
        "{what}: answers without x-request-id"
    );
    let sent: Vec<_> = samples.0.iter().filter(|s| s.sent < sent_before).collect();
    let answered = sent.iter().filter(|s| s.answer.is_some()).count();
    assert!(
        answered * 10 >= sent.len() * 9 && answered > 0,
        "{what}: only {answered} of {} requests were answered; demo stderr (tail):\n{demo_stderr}",
        sent.len()
    );
}

#[track_caller]
fn assert_exactly_once(what: &str, accounting: &Accounting, demo_stderr: &str) {
    assert!(
        accounting.missing.is_empty() && accounting.duplicated.is_empty(),
        "{what}: {accounting}; missing (first 10): {:?}; duplicated (first 10): {:?}\n\
         demo stderr (tail):\n{demo_stderr}",
        &accounting.missing[..accounting.missing.len().min(10)],
        &accounting.duplicated[..accounting.duplicated.len().min(10)],
    );
}

// ---------------------------------------------------------------------------------------------
// 1. PostgreSQL stopped mid-load, then started again
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slowest_postgres_outage_mid_load_every_answer_stored_once() {
    const TEST: &str = "outage";
    let Some(mut pg) = blocking(|| cluster_or_skip(TEST)) else {
        return;
    };
    let dir = tempdir();
    let data = dir.path().join("data");
    let demo = Demo::start(&data, &dir.path().join("logs"), &pg.url(), &[]).await;

    let load = Load::start(&demo.base, LOAD);
    tokio::time::sleep(Duration::from_secs(4)).await;
    let down_at = load.started.elapsed();
    // Crash-like: no clean shutdown of the sessions, a batch may be cut mid-transaction.
    blocking(|| pg.stop("immediate"));
    let down_since = Instant::now();
    let mut most_segments = 0;
    while down_since.elapsed() < OUTAGE {
        most_segments = most_segments.max(spool_segments(&data.join("spool")));
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    blocking(|| pg.restart());
    let up_at = load.started.elapsed();
    tokio::time::sleep(Duration::from_secs(4)).await;
    let end_at = load.started.elapsed();
    let samples = load.stop().await;

    let rays = samples.answered_rays();
    let caught_up = Instant::now();
    let stored =
        wait_for_catch_up(&pg, &rays, Duration::from_secs(15), Duration::from_secs(90)).await;
    let accounting = Accounting::of(&rays, &stored);

    print_load(TEST, &samples);
    for (kind, name) in [(Kind::Anonymous, "no-db 401"), (Kind::Write, "auth write")] {
        eprintln!(
            "[{TEST}] {name:<10} before  {}\n[{TEST}] {name:<10} during  {}\n[{TEST}] {name:<10} after   {}",
            samples.latency(kind, Duration::ZERO, down_at),
            samples.latency(kind, down_at, up_at),
            samples.latency(kind, up_at, end_at),
        );
    }
    eprintln!(
        "[{TEST}] outage {OUTAGE:?}; most spool segments seen during it: {most_segments}; \
         caught up {:.1?} after the load stopped; {accounting}; gap records {} (lost {})",
        caught_up.elapsed(),
        stored.gap_records,
        stored.lost_in_gaps
    );

    assert_answered(TEST, &samples, Duration::MAX, &demo.stderr_tail(20));
    // The demo kept answering: requests that need no database were answered throughout.
    let during = samples.latency(Kind::Anonymous, down_at, up_at);
    let expected_during = (LOAD.anonymous_rate * OUTAGE.as_secs_f64() * 0.5) as usize;
    assert!(
        during.count >= expected_during,
        "only {} requests answered during the outage (expected at least {expected_during})",
        during.count
    );
    // And none of them waited on the audit store.
    let all = samples.latency(Kind::Anonymous, Duration::ZERO, end_at);
    assert!(
        all.max < NO_STORAGE_WAIT,
        "a request that needs no database took {:?}: the request path waits on storage",
        all.max
    );
    assert_exactly_once(
        "every answered request exactly once in the log",
        &accounting,
        &demo.stderr_tail(20),
    );
    assert_eq!(stored.gap_records, 0, "nothing may be dropped");
}

// ---------------------------------------------------------------------------------------------
// 2. A slow database
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_database_bounded_memory_and_no_loss() {
    const TEST: &str = "slow-db";
    let Some(pg) = blocking(|| cluster_or_skip(TEST)) else {
        return;
    };
    let proxy = Proxy::start(pg.addr()).await;
    let dir = tempdir();
    let demo = Demo::start(
        &dir.path().join("data"),
        &dir.path().join("logs"),
        &proxy.url(),
        &[],
    )
    .await;

    // Warm up (connections, caches, allocator) before the baseline.
    let warm = Load::start(&demo.base, LOAD);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let warm = warm.stop().await;
    let rss_before = demo.status_kib("VmRSS");

    proxy.set_delay(SLOW_DB_DELAY);
    let spec = LoadSpec {
        anonymous: 6,
        anonymous_rate: 600.0,
        ..LOAD
    };
    let load = Load::start(&demo.base, spec);
    let started = Instant::now();
    let mut rss_peak = rss_before;
    while started.elapsed() < Duration::from_secs(10) {
        rss_peak = rss_peak.max(demo.status_kib("VmRSS"));
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let samples = load.stop().await;
    let mut rays = warm.answered_rays();
    rays.extend(samples.answered_rays());
    let stored =
        wait_for_catch_up(&pg, &rays, Duration::from_secs(15), Duration::from_secs(60)).await;
    let caught_up = started.elapsed();
    let rss_after = demo.status_kib("VmRSS");
    let hwm = demo.status_kib("VmHWM");
    let accounting = Accounting::of(&rays, &stored);

    print_load(TEST, &samples);
    eprintln!(
        "[{TEST}] +{SLOW_DB_DELAY:?} per chunk each way; no-db 401 {}; auth write {}",
        samples.latency(Kind::Anonymous, Duration::ZERO, Duration::MAX),
        samples.latency(Kind::Write, Duration::ZERO, Duration::MAX),
    );
    eprintln!(
        "[{TEST}] VmRSS before {rss_before} KiB, peak {rss_peak} KiB, after catch-up {rss_after} KiB \
         (VmHWM {hwm} KiB); caught up {caught_up:.1?} after the slow load began; {accounting}"
    );

    assert!(
        rss_peak.saturating_sub(rss_before) < MEMORY_GROWTH_LIMIT_KIB,
        "memory grew by {} KiB under a slow database",
        rss_peak - rss_before
    );
    assert_answered(TEST, &samples, Duration::MAX, &demo.stderr_tail(20));
    assert_exactly_once(
        "no loss with a slow database",
        &accounting,
        &demo.stderr_tail(20),
    );
    assert_eq!(stored.gap_records, 0, "nothing may be dropped");
}

// ---------------------------------------------------------------------------------------------
// 3. SIGKILL mid-load, restart on the same data directory
// ---------------------------------------------------------------------------------------------

/// Kills the demo (started with `extra`) after [`KILL_AFTER`] of load, restarts it on the
/// same data and database, and waits for the replay. The samples, the time of the kill since
/// the load started, the final read, the spool segments the killed process left, and the
/// end of its stderr.
async fn kill_mid_load(
    pg: &PgCluster,
    extra: &[&str],
) -> (Samples, Duration, Stored, usize, String) {
    const KILL_AFTER: Duration = Duration::from_secs(5);
    let dir = tempdir();
    let data = dir.path().join("data");
    let logs = dir.path().join("logs");
    let mut demo = Demo::start(&data, &logs, &pg.url(), extra).await;
    let load = Load::start(&demo.base, LOAD);
    tokio::time::sleep(KILL_AFTER).await;
    let killed_at = load.started.elapsed();
    let status = demo.kill().await;
    assert!(!status.success(), "SIGKILL exit: {status}");
    let samples = load.stop().await;
    let left_in_spool = spool_segments(&data.join("spool"));
    let killed_stderr = demo.stderr_tail(20);

    let demo = Demo::start(&data, &logs, &pg.url(), extra).await;
    let rays = samples.answered_rays();
    let stored =
        wait_for_catch_up(pg, &rays, Duration::from_secs(5), Duration::from_secs(30)).await;
    drop(demo);
    (samples, killed_at, stored, left_in_spool, killed_stderr)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_mid_load_then_restart_loses_only_the_uncommitted_tail() {
    const TEST: &str = "sigkill";
    let Some(pg) = blocking(|| cluster_or_skip(TEST)) else {
        return;
    };
    let (samples, killed_at, stored, left_in_spool, demo_tail) = kill_mid_load(&pg, &[]).await;
    let rays = samples.answered_rays();
    let accounting = Accounting::of(&rays, &stored);
    // When the lost answers were sent, before the kill.
    let lost_ages: Vec<Duration> = samples
        .0
        .iter()
        .filter(|s| {
            s.answer
                .as_ref()
                .and_then(|a| a.1.as_ref())
                .is_some_and(|ray| accounting.missing.contains(ray))
        })
        .map(|s| killed_at.saturating_sub(s.sent))
        .collect();

    print_load(TEST, &samples);
    eprintln!(
        "[{TEST}] default mode: stored {} of {} answered ({} lost, sent at most {:?} before the kill), \
         {} stored without an answer, {} requests sent; {} spool segments left by the killed process",
        accounting.once,
        accounting.answered,
        accounting.missing.len(),
        lost_ages.iter().max().copied().unwrap_or_default(),
        accounting.stored_unanswered,
        samples.0.len(),
        left_in_spool,
    );

    let settled = killed_at.saturating_sub(Duration::from_secs(1));
    assert_answered(TEST, &samples, settled, &demo_tail);
    assert!(accounting.duplicated.is_empty(), "{accounting}");
    assert!(
        stored.total() <= samples.0.len() as u64,
        "more records ({}) than requests sent ({})",
        stored.total(),
        samples.0.len()
    );
    assert!(accounting.once <= accounting.answered);
    // Loss is bounded by what was not yet committed: only the last moments before the kill
    // (the pipeline flushes every 20 ms), never older answers.
    if let Some(oldest) = lost_ages.iter().max() {
        assert!(
            *oldest < Duration::from_secs(2),
            "an answer sent {oldest:?} before the kill was lost: older than anything in flight"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strict_mode_sigkill_mid_load_loses_no_answered_record() {
    const TEST: &str = "sigkill-strict";
    if !demo_has_flag("--strict") {
        eprintln!(
            "SKIPPED {TEST}: the demo binary has no --strict flag (strict mode is not configurable)"
        );
        return;
    }
    let Some(pg) = blocking(|| cluster_or_skip(TEST)) else {
        return;
    };
    let (samples, killed_at, stored, left_in_spool, demo_tail) =
        kill_mid_load(&pg, &["--strict"]).await;
    let rays = samples.answered_rays();
    let accounting = Accounting::of(&rays, &stored);
    print_load(TEST, &samples);
    eprintln!(
        "[{TEST}] strict mode: no-db 401 {}; auth write {}; {accounting}; {left_in_spool} spool segments left",
        samples.latency(Kind::Anonymous, Duration::ZERO, Duration::MAX),
        samples.latency(Kind::Write, Duration::ZERO, Duration::MAX),
    );
    let settled = killed_at.saturating_sub(Duration::from_secs(1));
    assert_answered(TEST, &samples, settled, &demo_tail);
    // Strict: an answer is released only once its record is committed.
    assert_exactly_once(
        "strict mode: every answered request committed before the kill",
        &accounting,
        &demo_tail,
    );
}

/// Strict mode with the database unreachable (the proxy refuses service, so connections fail
/// at once): requests are refused with `503` quickly instead of waiting, the demo answers
/// normally again once the database is back, and every answered request — refused ones too —
/// has exactly one record.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strict_mode_fails_closed_fast_while_postgres_is_unreachable() {
    const TEST: &str = "strict-outage";
    const DOWN: Duration = Duration::from_secs(4);
    if !demo_has_flag("--strict") {
        eprintln!(
            "SKIPPED {TEST}: the demo binary has no --strict flag (strict mode is not configurable)"
        );
        return;
    }
    let Some(pg) = blocking(|| cluster_or_skip(TEST)) else {
        return;
    };
    let proxy = Proxy::start(pg.addr()).await;
    let dir = tempdir();
    let data = dir.path().join("data");
    let demo = Demo::start(&data, &dir.path().join("logs"), &proxy.url(), &["--strict"]).await;
    let spec = LoadSpec {
        writers: 2,
        write_rate: 50.0,
        anonymous: 2,
        anonymous_rate: 100.0,
    };
    let load = Load::start(&demo.base, spec);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let down_at = load.started.elapsed();
    proxy.set_reject(true);
    tokio::time::sleep(DOWN).await;
    let up_at = load.started.elapsed();
    proxy.set_reject(false);
    tokio::time::sleep(Duration::from_secs(3)).await;
    let end_at = load.started.elapsed();
    let samples = load.stop().await;
    let rays = samples.answered_rays();
    let stored =
        wait_for_catch_up(&pg, &rays, Duration::from_secs(10), Duration::from_secs(60)).await;
    let accounting = Accounting::of(&rays, &stored);
    // Statuses of the no-database requests in the outage's second half (the pipeline has
    // given up on the database by then) and in the last second (recovered).
    let statuses = |from: Duration, to: Duration| {
        let mut counts = std::collections::BTreeMap::<u16, usize>::new();
        for s in &samples.0 {
            if s.kind == Kind::Anonymous
                && s.sent >= from
                && s.sent < to
                && let Some((status, _)) = s.answer
            {
                *counts.entry(status).or_default() += 1;
            }
        }
        counts
    };
    let late_outage = statuses(down_at + DOWN / 2, up_at);
    let recovered = statuses(end_at - Duration::from_secs(1), end_at);
    let during = samples.latency(Kind::Anonymous, down_at, up_at);

    print_load(TEST, &samples);
    eprintln!(
        "[{TEST}] no-db requests: late in the outage {late_outage:?}, in the last second {recovered:?}; \
         latency during the outage {during}; {accounting}; gap records {}",
        stored.gap_records
    );
    assert_answered(TEST, &samples, Duration::MAX, &demo.stderr_tail(20));
    assert!(
        during.max < NO_STORAGE_WAIT,
        "a strict request waited {:?} for an unreachable database instead of failing closed",
        during.max
    );
    assert!(
        late_outage.keys().all(|s| *s == 503) && !late_outage.is_empty(),
        "strict mode must refuse with 503 while the database is unreachable: {late_outage:?}"
    );
    assert!(
        recovered.keys().all(|s| *s == 401) && !recovered.is_empty(),
        "strict mode must serve again once the database is back: {recovered:?}"
    );
    assert_exactly_once(
        "strict mode: every answered request, refused ones too, exactly once",
        &accounting,
        &demo.stderr_tail(20),
    );
}

// ---------------------------------------------------------------------------------------------
// 4. SIGTERM under load
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_mid_load_stores_every_answered_request() {
    const TEST: &str = "sigterm";
    let Some(pg) = blocking(|| cluster_or_skip(TEST)) else {
        return;
    };
    let dir = tempdir();
    let data = dir.path().join("data");
    let mut demo = Demo::start(&data, &dir.path().join("logs"), &pg.url(), &[]).await;
    let load = Load::start(&demo.base, LOAD);
    tokio::time::sleep(Duration::from_secs(4)).await;
    let signalled_at = load.started.elapsed();
    let stopping = Instant::now();
    let status = demo.terminate().await;
    let took = stopping.elapsed();
    let samples = load.stop().await;
    let left_in_spool = spool_segments(&data.join("spool"));
    // Right after the exit: a graceful stop flushes everything before it exits.
    let stored = Stored::read(&pg).unwrap();
    let rays = samples.answered_rays();
    let accounting = Accounting::of(&rays, &stored);

    print_load(TEST, &samples);
    eprintln!(
        "[{TEST}] exit {status} {took:.1?} after SIGTERM; {accounting}; {left_in_spool} spool segments left; \
         gap records {}",
        stored.gap_records
    );
    assert!(
        status.success(),
        "SIGTERM exit: {status}; {}",
        demo.stderr_tail(20)
    );
    assert_answered(TEST, &samples, signalled_at, &demo.stderr_tail(20));
    assert_eq!(
        left_in_spool, 0,
        "a graceful stop with the database up spooled records"
    );
    assert_exactly_once(
        "every answered request stored by the graceful stop",
        &accounting,
        &demo.stderr_tail(20),
    );
    assert_eq!(stored.gap_records, 0, "nothing may be dropped");
}

// ---------------------------------------------------------------------------------------------
// 5. The spool unusable, or out of budget
// ---------------------------------------------------------------------------------------------

/// Tests run as root, so permissions do not stop writes: a regular file where the spool
/// directory goes is the unwritable spool. The demo must refuse to start, saying so, rather
/// than serve without a working spool (it would lose records at the first outage).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spool_path_that_is_a_file_stops_the_start() {
    let dir = tempdir();
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    let spool = data.join("spool");
    std::fs::write(&spool, b"not a directory\n").unwrap();
    let port = free_port();
    // SQLite (the default): the spool is checked the same way whatever the database.
    let mut child = demo_command()
        .arg("--listen")
        .arg(format!("127.0.0.1:{port}"))
        .arg("--data-dir")
        .arg(&data)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("demo-app serves with a regular file as its spool directory");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let output = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    eprintln!(
        "[spool-file] exit {:?}; stderr: {stderr}",
        output.status.code()
    );
    // A failure at start-up (1), not a configuration error (2): the message names the spool.
    assert_eq!(output.status.code(), Some(1), "exit code; stderr: {stderr}");
    assert!(
        stderr.contains("audit pipeline") && stderr.contains(&spool.display().to_string()),
        "the message names the spool and its path: {stderr}"
    );
    assert_eq!(
        std::fs::read(&spool).unwrap(),
        b"not a directory\n",
        "the file in the spool's place was changed"
    );
}

/// The database unreachable (the proxy refuses service: connections fail at once) and far more
/// records than a small spool budget: the spool fills to its budget, later records are
/// dropped and counted, and once the database is back the spool is replayed and a gap record
/// says how many were lost — exactly as many as the answered requests missing from the log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spool_over_budget_while_postgres_is_unreachable_is_counted_in_gap_records() {
    const TEST: &str = "spool-budget";
    const BUDGET: u64 = 64 * 1024;
    if !demo_has_flag("--spool-budget") {
        eprintln!("SKIPPED {TEST}: the demo binary has no --spool-budget flag");
        return;
    }
    let Some(pg) = blocking(|| cluster_or_skip(TEST)) else {
        return;
    };
    let proxy = Proxy::start(pg.addr()).await;
    let dir = tempdir();
    let data = dir.path().join("data");
    let spool = data.join("spool");
    let demo = Demo::start(
        &data,
        &dir.path().join("logs"),
        &proxy.url(),
        &["--spool-budget", &BUDGET.to_string()],
    )
    .await;

    proxy.set_reject(true);
    let spec = LoadSpec {
        writers: 2,
        write_rate: 50.0,
        anonymous: 4,
        anonymous_rate: 400.0,
    };
    let load = Load::start(&demo.base, spec);
    let started = Instant::now();
    let mut most_spooled = 0u64;
    while started.elapsed() < Duration::from_secs(4) {
        most_spooled = most_spooled.max(dir_bytes(&spool));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let samples = load.stop().await;
    let outage_latency = samples.latency(Kind::Anonymous, Duration::ZERO, Duration::MAX);
    proxy.set_reject(false);

    let rays = samples.answered_rays();
    // Wait for the replay and the gap record: until the numbers stop changing.
    let stored =
        wait_for_catch_up(&pg, &rays, Duration::from_secs(5), Duration::from_secs(60)).await;
    let accounting = Accounting::of(&rays, &stored);
    let left = spool_segments(&spool);

    print_load(TEST, &samples);
    eprintln!(
        "[{TEST}] budget {BUDGET} B, spool peaked at {most_spooled} B; no-db 401 during the outage {outage_latency}; \
         {accounting}; gap records {} (lost {}); {left} spool segments left",
        stored.gap_records, stored.lost_in_gaps
    );
    assert_answered(TEST, &samples, Duration::MAX, &demo.stderr_tail(20));
    assert!(
        outage_latency.max < NO_STORAGE_WAIT,
        "a request that needs no database took {:?}",
        outage_latency.max
    );
    assert!(accounting.duplicated.is_empty(), "{accounting}");
    assert!(
        most_spooled <= BUDGET + 1024 * 1024,
        "the spool grew to {most_spooled} B, past its budget and the gap reserve"
    );
    assert!(
        !accounting.missing.is_empty(),
        "the budget of {BUDGET} B never ran out: the test did not exercise it"
    );
    assert!(stored.gap_records >= 1, "no gap record reports the loss");
    // Exact accounting: every answered request is in the log or counted as lost.
    let unanswered = samples.unanswered() as u64;
    let missing = accounting.missing.len() as u64;
    assert!(
        missing <= stored.lost_in_gaps && stored.lost_in_gaps <= missing + unanswered,
        "{missing} answered requests are missing but the gap records count {} lost \
         ({unanswered} unanswered)",
        stored.lost_in_gaps
    );
    assert_eq!(
        left, 0,
        "the spool was not drained after the database came back"
    );
}

fn dir_bytes(dir: &std::path::Path) -> u64 {
    std::fs::read_dir(dir).map_or(0, |entries| {
        entries
            .filter_map(Result::ok)
            .filter_map(|e| e.metadata().ok())
            .map(|m| m.len())
            .sum()
    })
}

// ---------------------------------------------------------------------------------------------
// Measurement, not run by default: how long a stopped PostgreSQL takes to reach the spool
// ---------------------------------------------------------------------------------------------

/// With PostgreSQL stopped (connections refused), how long until the pipeline turns to the
/// spool. Ignored by default (it takes minutes): run it with
/// `cargo test -p audit-tests --test faults -- --ignored --nocapture`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement that takes minutes"]
async fn measure_time_until_the_spool_after_postgres_stops() {
    const TEST: &str = "time-to-spool";
    const LIMIT: Duration = Duration::from_secs(150);
    let Some(mut pg) = blocking(|| cluster_or_skip(TEST)) else {
        return;
    };
    let dir = tempdir();
    let data = dir.path().join("data");
    let demo = Demo::start(&data, &dir.path().join("logs"), &pg.url(), &[]).await;
    let spec = LoadSpec {
        writers: 0,
        write_rate: 1.0,
        anonymous: 2,
        anonymous_rate: 100.0,
    };
    let load = Load::start(&demo.base, spec);
    tokio::time::sleep(Duration::from_secs(2)).await;
    blocking(|| pg.stop("fast"));
    let down = Instant::now();
    let mut first_segment = None;
    while down.elapsed() < LIMIT {
        if spool_segments(&data.join("spool")) > 0 {
            first_segment = Some(down.elapsed());
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    blocking(|| pg.restart());
    tokio::time::sleep(Duration::from_secs(2)).await;
    let samples = load.stop().await;
    let rays = samples.answered_rays();
    let stored =
        wait_for_catch_up(&pg, &rays, Duration::from_secs(15), Duration::from_secs(90)).await;
    let accounting = Accounting::of(&rays, &stored);
    print_load(TEST, &samples);
    eprintln!(
        "[{TEST}] first spool segment {first_segment:?} after PostgreSQL stopped (limit {LIMIT:?}); \
         {accounting}; gap records {} (lost {})",
        stored.gap_records, stored.lost_in_gaps
    );
    assert_exactly_once(TEST, &accounting, &demo.stderr_tail(20));
}
