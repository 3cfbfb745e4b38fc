//! Tamper evidence on the writing side, as an insider with write access to the database or
//! the data directory attacks it (issue 18): retention that verifies what it prunes and
//! publishes its anchor, spooled records that replay only when authenticated, checkpoints
//! from start-up on and every few records, private files whatever the umask; and the
//! pipeline's bounds in bytes, which keep a flood of large records from filling memory.

#[macro_use]
mod common;

use std::path::Path;
use std::time::Duration;

use audit_layer::AuditSink as _;
use audit_layer::record::AuditRecord;
use audit_store::StoreError;
use audit_store::chain::{ChainKeys, ChainSecret, JsonLinesCheckpoints};
use audit_store::model::{Checkpoint, CheckpointKind};
use audit_store::store::{AuditStore, ChainedStore};
use audit_store::verify::{self, Span};

use common::*;

backend_tests!(
    retention_refuses_a_prefix_whose_times_were_edited,
    a_forged_anchor_does_not_stop_retention_unseen,
    retention_sends_its_anchor_to_the_checkpoint_sink,
    a_forged_spool_line_is_not_replayed,
    checkpoints_are_signed_at_start_up_and_after_n_records,
);

fn keys() -> ChainKeys {
    ChainKeys::from_secret(&ChainSecret::from_bytes([42; 32]))
}

/// Stores `n` records of `account`, one minute apart from `start_ms`, in one batch.
async fn fill<S: ChainedStore>(
    store: &S,
    account: &str,
    n: usize,
    start_ms: i64,
) -> TestResult<Vec<AuditRecord>> {
    let records: Vec<_> = (0..n)
        .map(|i| record(Some(account), start_ms + i as i64 * 60_000))
        .collect();
    assert_eq!(store.insert(&rows(&records)?).await?, n as u64);
    Ok(records)
}

/// The attack: `UPDATE audit_logs SET time_ms=0 WHERE chain_seq<=120`, then a
/// retention pass. It must delete nothing of that chain, sign no anchor over it, and report.
async fn retention_refuses_a_prefix_whose_times_were_edited<S: Chainable>(
    fx: &Fixture<S>,
) -> TestResult {
    let store = fx.store.with_chain(keys());
    // Today's records (none older than the cutoff), and another account's old ones.
    fill(&store, "acc_demo", 150, BASE_MS).await?;
    fill(&store, "acc_old", 10, BASE_MS - 86_400_000).await?;
    // PostgreSQL keeps rows in monthly partitions: the insider's edit needs January 1970's.
    fx.store.insert(&rows(&[record(None, 0)])?).await?;
    fx.db
        .exec("DELETE FROM audit_logs WHERE time_ms = 0")
        .await?;

    let edited = fx
        .db
        .exec(
            "UPDATE audit_logs SET time_ms = 0 WHERE account_id = 'acc_demo' AND chain_seq <= 120",
        )
        .await?;
    assert_eq!(edited, 120);
    let retention = store.retain(BASE_MS).await?;
    assert_eq!(retention.refused.len(), 1, "{retention:?}");
    let refusal = &retention.refused[0];
    assert_eq!((refusal.chain.as_str(), refusal.seq), ("acc_demo", 1));
    assert!(refusal.to_string().contains("acc_demo"), "{refusal}");
    // The untouched account is pruned in the same pass, under an anchor.
    assert_eq!(retention.deleted, 10);
    assert_eq!(retention.anchors.len(), 1);
    assert_eq!(
        (
            retention.anchors[0].account_id.as_str(),
            retention.anchors[0].seq
        ),
        ("acc_old", 10)
    );
    let count: u64 = fx
        .db
        .exec("UPDATE audit_logs SET time_ms = time_ms WHERE account_id = 'acc_demo'")
        .await?;
    assert_eq!(count, 150, "nothing of the edited chain is deleted");
    let anchors = store.checkpoints("acc_demo").await?;
    assert!(
        anchors.iter().all(|c| c.kind != CheckpointKind::Anchor),
        "no anchor vouches for the edit: {anchors:?}"
    );
    // Verification still finds the edit: it was not laundered.
    let report = verify::verify(&store, &keys().verifier(), "acc_demo", Span::all(), &[]).await?;
    assert!(!report.ok, "{report:?}");

    // Through the plain interface, the refusal is an error naming the chain; the next
    // pass refuses again.
    match store.delete_before(BASE_MS).await {
        Err(StoreError::Tampered(refusal)) => assert_eq!(refusal.chain, "acc_demo"),
        other => panic!("expected a refusal, got {other:?}"),
    }
    Ok(())
}

/// An anchor row nobody signed, claiming the chain starts far ahead, made retention skip
/// the chain without a word. It is refused and reported now, and nothing is deleted under it.
async fn a_forged_anchor_does_not_stop_retention_unseen<S: Chainable>(
    fx: &Fixture<S>,
) -> TestResult {
    let store = fx.store.with_chain(keys());
    fill(&store, "acc_anchor", 20, BASE_MS - 86_400_000).await?;
    store.checkpoint(BASE_MS - 3_600_000).await?;
    let forged = fx
        .db
        .exec(
            "INSERT INTO audit_checkpoints (chain, seq, head, time_ms, kind, key_id, signature) \
             SELECT chain, 1000000, head, time_ms, 'anchor', key_id, signature \
             FROM audit_checkpoints WHERE chain = 'acc_anchor' AND kind = 'checkpoint'",
        )
        .await?;
    assert_eq!(forged, 1);
    let retention = store.retain(BASE_MS).await?;
    assert_eq!(retention.refused.len(), 1, "{retention:?}");
    assert_eq!(retention.refused[0].chain, "acc_anchor");
    assert_eq!(
        retention.deleted, 0,
        "nothing deleted under a forged anchor"
    );
    assert!(retention.anchors.is_empty());
    Ok(())
}

/// Records deleted without the hashes of what follows, or a seal of another key, are
/// refused just the same; an intact old prefix is pruned and its anchor published.
async fn retention_sends_its_anchor_to_the_checkpoint_sink<S: Chainable>(
    fx: &Fixture<S>,
) -> TestResult {
    let store = fx.store.with_chain(keys());
    let now = i64::try_from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)?
            .as_millis(),
    )?;
    let day = 86_400_000;
    fill(&store, "acc_r", 20, now - 40 * day).await?;
    fill(&store, "acc_r", 5, now - day).await?;
    fill(&store, "acc_gap", 20, now - 40 * day).await?;
    fill(&store, "acc_gap", 1, now - day).await?;
    fx.db
        .exec("DELETE FROM audit_logs WHERE account_id = 'acc_gap' AND chain_seq = 7")
        .await?;
    let dir = tempfile::tempdir()?;
    let file = dir.path().join("checkpoints.jsonl");
    let (sink, worker) = start(
        fast(store.clone())
            .retention(Some(Duration::from_secs(30 * 86_400)))
            .retention_interval(Duration::from_millis(50))
            .checkpoint_sink(JsonLinesCheckpoints::new(&file)),
    )
    .await?;
    eventually("retention to prune acc_r and refuse acc_gap", || {
        let m = sink.metrics();
        m.expired >= 20 && m.retention_refused >= 1
    })
    .await?;
    let m = stop(&sink, worker).await?;
    assert_eq!(m.expired, 20, "only acc_r's old prefix");
    let published = JsonLinesCheckpoints::read(&file)?;
    let anchors: Vec<&Checkpoint> = published
        .iter()
        .filter(|c| c.kind == CheckpointKind::Anchor)
        .collect();
    assert_eq!(anchors.len(), 1, "{published:?}");
    assert_eq!(
        (anchors[0].account_id.as_str(), anchors[0].seq),
        ("acc_r", 20)
    );
    assert!(anchors[0].is_signed_for(&keys().verifier()));
    assert_eq!(
        store
            .checkpoints("acc_r")
            .await?
            .iter()
            .filter(|c| c.kind == CheckpointKind::Anchor)
            .count(),
        1
    );
    let report =
        verify::verify(&store, &keys().verifier(), "acc_r", Span::all(), &published).await?;
    assert!(report.ok, "{report:?}");
    assert_eq!(report.anchored_at, Some(20));
    Ok(())
}

/// The attack on the spool: a forged "alice removed member bob" placed in a spool
/// segment. It must not be stored, let alone chained; it is counted and reported.
async fn a_forged_spool_line_is_not_replayed<S: Chainable>(fx: &Fixture<S>) -> TestResult {
    let store = fx.store.with_chain(keys());
    let spool = tempfile::tempdir()?;
    let flaky = flaky_store(store.clone());
    flaky.interceptor().set_down(true);
    let records: Vec<AuditRecord> = (0..5).map(|i| record(Some("acc_s"), BASE_MS + i)).collect();
    {
        let (sink, worker) = start(fast(flaky.clone()).spool(spool.path(), 1 << 20)).await?;
        for r in &records {
            sink.submit(r.clone());
        }
        let m = stop(&sink, worker).await?;
        assert_eq!(m.spooled, 5);
    }
    let segment = std::fs::read_dir(spool.path())?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|e| e == "seg"))
        .ok_or("a spool segment")?;
    let genuine = std::fs::read_to_string(&segment)?;
    assert!(
        !genuine.lines().next().unwrap_or_default().starts_with('{'),
        "each line starts with its MAC"
    );
    // Bare JSON (as the attacker wrote it), and with a made-up MAC.
    let mut forged = record(Some("acc_s"), BASE_MS + 10);
    forged.action.description = Some("alice removed member bob".into());
    let mut other = record(Some("acc_s"), BASE_MS + 11);
    other.action.description = Some("bob removed member alice".into());
    let mut text = genuine.clone();
    text.push_str(&format!("{}\n", json(&forged)?));
    text.push_str(&format!("{} {}\n", "0f".repeat(32), json(&other)?));
    std::fs::write(&segment, text)?;

    let (sink, worker) = start(fast(store.clone()).spool(spool.path(), 1 << 20)).await?;
    eventually("the spool to be replayed", || sink.metrics().replayed == 5).await?;
    eventually("the pipeline to be available", || sink.is_available()).await?;
    let m = stop(&sink, worker).await?;
    assert_eq!((m.spool_rejected, m.dropped, m.gap_records), (2, 2, 1));
    assert_eq!(store.get("acc_s", forged.id).await?, None);
    assert_eq!(store.get("acc_s", other.id).await?, None);
    for r in &records {
        assert_eq!(store.get("acc_s", r.id).await?, Some(json(r)?));
    }
    let gaps = fx.db.gap_rows().await?;
    assert_eq!(gaps.len(), 1, "{gaps:?}");
    assert!(gaps[0].record.contains("\"lost\":2"), "{}", gaps[0].record);
    let report = verify::verify(&store, &keys().verifier(), "acc_s", Span::all(), &[]).await?;
    assert!(report.ok && report.records == 5, "{report:?}");
    Ok(())
}

/// The checkpoints in the file at `path` of `account`.
fn published(path: &Path, account: &str) -> TestResult<Vec<Checkpoint>> {
    if !path.exists() {
        return Ok(Vec::new());
    }
    Ok(JsonLinesCheckpoints::read(path)?
        .into_iter()
        .filter(|c| c.account_id == account)
        .collect())
}

async fn checkpoints_are_signed_at_start_up_and_after_n_records<S: Chainable>(
    fx: &Fixture<S>,
) -> TestResult {
    let store = fx.store.with_chain(keys());
    fill(&store, "acc_c", 3, BASE_MS).await?;
    fill(&store, "acc_idle", 1, BASE_MS).await?;
    let dir = tempfile::tempdir()?;
    let file = dir.path().join("checkpoints.jsonl");
    let hour = Duration::from_secs(3600);
    let (sink, worker) = start(
        fast(store.clone())
            .checkpoints(hour)
            .checkpoint_after(10, hour)
            .checkpoint_sink(JsonLinesCheckpoints::new(&file)),
    )
    .await?;
    // Start-up: every chain, before anything is written.
    eventually("the start-up checkpoints", || {
        published(&file, "acc_c").is_ok_and(|c| c.iter().any(|c| c.seq == 3))
            && published(&file, "acc_idle").is_ok_and(|c| c.len() == 1)
    })
    .await?;
    // Ten records stored: the chain that grew, within the one-second floor.
    for i in 0..10 {
        sink.submit(record(Some("acc_c"), BASE_MS + 10 + i));
    }
    eventually("a checkpoint after ten records", || {
        published(&file, "acc_c").is_ok_and(|c| c.iter().any(|c| c.seq == 13))
    })
    .await?;
    assert_eq!(
        published(&file, "acc_idle")?.len(),
        1,
        "a chain that did not grow"
    );
    let m = stop(&sink, worker).await?;
    // Shutdown: every chain again.
    assert_eq!(published(&file, "acc_idle")?.len(), 2);
    assert_eq!(m.checkpoints, published(&file, "acc_c")?.len() as u64 + 2);
    for checkpoint in JsonLinesCheckpoints::read(&file)? {
        assert!(checkpoint.is_signed_for(&keys().verifier()));
    }

    // By time alone: one record, and a checkpoint of it without waiting for the count.
    let (sink, worker) = start(
        fast(store.clone())
            .checkpoints(hour)
            .checkpoint_after(1_000_000, Duration::from_millis(200))
            .checkpoint_sink(JsonLinesCheckpoints::new(&file)),
    )
    .await?;
    sink.submit(record(Some("acc_c"), BASE_MS + 30));
    eventually("a checkpoint after the interval", || {
        published(&file, "acc_c").is_ok_and(|c| c.iter().any(|c| c.seq == 14))
    })
    .await?;
    stop(&sink, worker).await?;
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Files: private whatever the umask
// ---------------------------------------------------------------------------------------------

/// Set in the child process that runs the body under a given umask (the value).
#[cfg(unix)]
const UMASK_CHILD: &str = "AUDIT_TEST_UMASK_CHILD";

/// Every file and directory under `root` whose permissions let anyone but the owner in.
#[cfg(unix)]
fn loose_permissions(root: &Path) -> TestResult<Vec<String>> {
    use std::os::unix::fs::PermissionsExt as _;
    let mut loose = Vec::new();
    let mut pending = vec![root.to_path_buf()];
    while let Some(path) = pending.pop() {
        let Ok(metadata) = std::fs::symlink_metadata(&path) else {
            continue;
        };
        let mode = metadata.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            loose.push(format!("{mode:04o} {}", path.display()));
        }
        if metadata.is_dir() {
            for entry in std::fs::read_dir(&path)? {
                pending.push(entry?.path());
            }
        }
    }
    Ok(loose)
}

/// The store's directory and files (SQLite database, `-wal`, `-shm`, spool segments,
/// JSON-lines checkpoints) are private under the usual umask 022 and under 000: each test
/// runs in a child process of this test binary started with that umask.
#[cfg(unix)]
#[test]
fn the_stores_files_are_private_whatever_the_umask() -> TestResult {
    if let Ok(umask) = std::env::var(UMASK_CHILD) {
        let status = std::fs::read_to_string("/proc/self/status")?;
        if let Some(line) = status.lines().find(|l| l.starts_with("Umask:")) {
            assert_eq!(
                line.split_whitespace().nth(1),
                Some(umask.as_str()),
                "{line}"
            );
        }
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()?;
        return runtime.block_on(write_everything_and_check_modes());
    }
    for umask in ["0022", "0000"] {
        let output = std::process::Command::new("sh")
            .arg("-c")
            .arg(format!("umask {umask} && exec \"$0\" --exact the_stores_files_are_private_whatever_the_umask --nocapture --test-threads 1"))
            .arg(std::env::current_exe()?)
            .env(UMASK_CHILD, umask)
            .output()?;
        assert!(
            output.status.success(),
            "under umask {umask}:\n{}\n{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(())
}

#[cfg(unix)]
async fn write_everything_and_check_modes() -> TestResult {
    let tmp = tempfile::tempdir()?;
    let data = tmp.path().join("data");
    let store = audit_store::SqliteStore::open(data.join("db/audit.db"))
        .await?
        .chained(keys());
    store.migrate().await?;
    let spool = data.join("spool");
    let file = data.join("external/checkpoints.jsonl");
    // First records go to the spool (the database "down"), then everything is replayed.
    let flaky = flaky_store(store.clone());
    flaky.interceptor().set_down(true);
    let (sink, worker) = start(
        fast(flaky.clone())
            .spool(&spool, 1 << 20)
            .checkpoint_sink(JsonLinesCheckpoints::new(&file)),
    )
    .await?;
    for i in 0..5 {
        sink.submit(record(Some("acc_f"), BASE_MS + i));
    }
    eventually("records to be spooled", || sink.metrics().spooled == 5).await?;
    let (segments, _) = spool_segments(&spool)?;
    assert!(segments > 0);
    let running = loose_permissions(&data)?;
    flaky.interceptor().set_down(false);
    eventually("the spool to be replayed", || sink.metrics().replayed == 5).await?;
    assert!(data.join("db/audit.db-wal").exists() && data.join("db/audit.db-shm").exists());
    let stopped_store = loose_permissions(&data)?;
    stop(&sink, worker).await?;
    assert!(file.exists());
    let stopped = loose_permissions(&data)?;
    assert!(
        running.is_empty() && stopped_store.is_empty() && stopped.is_empty(),
        "others may read the store's files:\n{running:?}\n{stopped_store:?}\n{stopped:?}"
    );
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Bounds in bytes
// ---------------------------------------------------------------------------------------------

/// A record of about `bytes` bytes (its user agent).
fn large_record(account: &str, time_ms: i64, bytes: usize) -> AuditRecord {
    let mut r = record(Some(account), time_ms);
    r.raw.user_agent = Some("x".repeat(bytes));
    r
}

/// Records of 8 KiB against a queue of 64 KiB: beyond its bytes the queue counts as full and
/// the excess goes to the spool (not memory), batches hold at most 20 KiB, and nothing
/// accepted is lost.
#[tokio::test]
async fn the_queue_and_batches_are_bounded_in_bytes() -> TestResult {
    let fx = sqlite().await?;
    let spool = tempfile::tempdir()?;
    let flaky = flaky_store(fx.store.clone());
    flaky.interceptor().hold();
    let (sink, worker) = start(
        fast(flaky.clone())
            .queue_capacity(8192)
            .queue_bytes(64 << 10)
            .overflow_bytes(1 << 20)
            .batch_bytes(20 << 10)
            .spool(spool.path(), 16 << 20),
    )
    .await?;
    let records: Vec<AuditRecord> = (0..60)
        .map(|i| large_record("acc_b", BASE_MS + i, 8 << 10))
        .collect();
    sink.submit(records[0].clone());
    eventually("the first write to hang", || {
        flaky.interceptor().waiting() >= 1
    })
    .await?;
    for r in &records[1..] {
        sink.submit(r.clone());
    }
    let m = sink.metrics();
    assert!(
        m.queue_depth <= 8,
        "the queue holds 64 KiB of 8 KiB records, not {}",
        m.queue_depth
    );
    assert!(m.overflowed >= 50, "{m:?}");
    assert!(m.queue_bytes <= (64 << 10) + (1 << 20), "{m:?}");
    eventually("the overflow to be spooled", || {
        let m = sink.metrics();
        m.spooled == m.overflowed
    })
    .await?;
    let m = sink.metrics();
    assert!(m.queue_bytes <= 64 << 10, "{m:?}");
    let calls_before = flaky.interceptor().calls();
    flaky.interceptor().release();
    let m = stop(&sink, worker).await?;
    assert_eq!(m.dropped, 0, "{m:?}");
    assert_eq!(m.stored, 60, "{m:?}");
    assert_eq!(m.queue_bytes, 0);
    assert_eq!(fx.store.count().await?, 60);
    // 20 KiB a batch: two records of 8 KiB (and their JSON), so at least 30 writes.
    assert!(
        flaky.interceptor().calls() - calls_before >= 30,
        "{} writes for 60 records of 8 KiB",
        flaky.interceptor().calls() - calls_before
    );
    fx.teardown().await?;
    Ok(())
}

/// Under backpressure, requests wait once the queue holds three-quarters of its bytes, however
/// few records that is.
#[tokio::test]
async fn backpressure_holds_requests_by_bytes_too() -> TestResult {
    let fx = sqlite().await?;
    let flaky = flaky_store(fx.store.clone());
    flaky.interceptor().hold();
    let (sink, worker) = start(
        fast(flaky.clone())
            .queue_capacity(8192)
            .queue_bytes(64 << 10)
            .backpressure(Duration::from_secs(5)),
    )
    .await?;
    sink.submit(large_record("acc_p", BASE_MS, 8 << 10));
    eventually("the first write to hang", || {
        flaky.interceptor().waiting() >= 1
    })
    .await?;
    for i in 1..=4 {
        sink.submit(large_record("acc_p", BASE_MS + i, 8 << 10));
    }
    assert!(
        sink.backpressure().is_none(),
        "four records of 8 KiB: under 48 KiB"
    );
    for i in 5..=6 {
        sink.submit(large_record("acc_p", BASE_MS + i, 8 << 10));
    }
    let wait = sink
        .backpressure()
        .ok_or("six records of 8 KiB: over 48 KiB")?;
    let waiting = tokio::spawn(wait);
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(!waiting.is_finished(), "a request waits for room");
    flaky.interceptor().release();
    tokio::time::timeout(Duration::from_secs(2), waiting).await??;
    let m = stop(&sink, worker).await?;
    assert_eq!((m.stored, m.waited, m.waits_timed_out), (7, 1, 0));
    fx.teardown().await?;
    Ok(())
}

/// What verifying the prefix costs retention: 100,000 records of one account pruned in one
/// pass on SQLite, timed. Ignored by default; run with
/// `cargo test -p audit-store --test tamper measure -- --ignored --nocapture`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement: prints how long retention takes to verify and prune 100,000 records"]
async fn measure_retention_of_100k_records() -> TestResult {
    let fx = sqlite().await?;
    let store = fx.store.with_chain(keys());
    let n = 100_000;
    for start in (0..n).step_by(4000) {
        let batch: Vec<AuditRecord> = (start..start + 4000)
            .map(|i| record(Some("acc_m"), BASE_MS + i as i64))
            .collect();
        store.insert(&rows(&batch)?).await?;
    }
    let started = std::time::Instant::now();
    let retention = store.retain(BASE_MS + n as i64 - 1000).await?;
    let took = started.elapsed();
    assert_eq!(retention.deleted, n as u64 - 1000);
    assert!(retention.refused.is_empty());
    println!(
        "retention verified and pruned {} records in {took:?} ({:.0} records/s)",
        retention.deleted,
        retention.deleted as f64 / took.as_secs_f64()
    );
    // For scale: the same deletion of unchained records, which nothing verifies.
    let plain = sqlite().await?;
    for start in (0..n).step_by(4000) {
        let batch: Vec<AuditRecord> = (start..start + 4000)
            .map(|i| record(Some("acc_m"), BASE_MS + i as i64))
            .collect();
        plain.store.insert(&rows(&batch)?).await?;
    }
    let started = std::time::Instant::now();
    let deleted = plain.store.delete_before(BASE_MS + n as i64 - 1000).await?;
    println!(
        "unchained: deleted {deleted} records in {:?}",
        started.elapsed()
    );
    plain.teardown().await?;
    fx.teardown().await?;
    Ok(())
}
