//! Tamper evidence, end to end on SQLite and PostgreSQL: chains written by the store and the
//! pipeline, edited directly in the database the way an insider would, and verified by
//! `verify::verify` (one account), `verify::verify_all` (the whole store in one pass), the query
//! router's verify endpoint and the `audit-verify` binary. Every tamper must be found, at the
//! right sequence number, with the right kind, by both verification paths.

#[macro_use]
mod common;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use audit_store::chain::{ChainKeys, ChainSecret, JsonLinesCheckpoints, Verifier};
use audit_store::model::Checkpoint;
use audit_store::query::{Access, AuditLogRouter};
use audit_store::store::ChainedStore;
use audit_store::verify::{self, BreakKind, Outcome, Span, VerifyReport};
use axum::body::Body;
use http::{Request, StatusCode};
use http_body_util::BodyExt;
use tower::ServiceExt;
use uuid::Uuid;

use common::*;

backend_tests!(
    an_untouched_chain_verifies_with_and_without_the_secret,
    every_tamper_is_found_and_located,
    a_retried_batch_is_chained_once,
    a_retried_small_batch_is_chained_once,
    a_small_chained_batch_is_not_held_back,
    two_pipelines_build_one_linear_chain_per_account,
    retention_leaves_a_verifiable_anchor,
    external_checkpoints_reveal_a_silent_truncation,
    the_verify_endpoint_reports_breaks,
    the_whole_store_pass_puts_out_of_order_commits_back_in_order,
);

/// 100k records take longer than `backend_tests!`'s limit in a debug build on a loaded
/// machine: this one runs with a limit of its own.
mod large {
    use super::a_large_untouched_chain_verifies;

    backend_tests!(
        limit = std::time::Duration::from_secs(300);
        a_large_untouched_chain_verifies
    );
}

fn keys() -> ChainKeys {
    ChainKeys::from_secret(&ChainSecret::from_bytes([42; 32]))
}

fn public_only() -> Verifier {
    Verifier::public(keys().public_key())
}

/// Stores `n` records of `account` through `store`, `batch` per insert, one minute apart
/// from `start_ms`; returns them.
async fn fill<S: ChainedStore>(
    store: &S,
    account: Option<&str>,
    n: usize,
    batch: usize,
    start_ms: i64,
) -> TestResult<Vec<audit_layer::record::AuditRecord>> {
    let records: Vec<_> = (0..n)
        .map(|i| record(account, start_ms + i as i64 * 60_000))
        .collect();
    for chunk in records.chunks(batch) {
        assert_eq!(store.insert(&rows(chunk)?).await?, chunk.len() as u64);
    }
    Ok(records)
}

async fn check<S: ChainedStore>(
    store: &S,
    verifier: &Verifier,
    account: &str,
) -> TestResult<VerifyReport> {
    Ok(verify::verify(store, verifier, account, Span::all(), &[]).await?)
}

/// `verify::verify_all`'s reports, by account.
async fn check_all<S: ChainedStore>(
    store: &S,
    verifier: &Verifier,
    external: &[Checkpoint],
) -> TestResult<std::collections::BTreeMap<String, VerifyReport>> {
    let reports = verify::verify_all(store, verifier, external).await?;
    let by_account: std::collections::BTreeMap<String, VerifyReport> = reports
        .into_iter()
        .map(|r| (r.account_id.clone(), r))
        .collect();
    Ok(by_account)
}

/// The whole-store pass says what the per-account walk says about `account`.
async fn same_as_walk<S: ChainedStore>(
    store: &S,
    verifier: &Verifier,
    all: &std::collections::BTreeMap<String, VerifyReport>,
    account: &str,
) -> TestResult {
    let walked = check(store, verifier, account).await?;
    let passed = all
        .get(account)
        .ok_or_else(|| format!("verify_all has no report for {account:?}"))?;
    assert_eq!(
        passed, &walked,
        "verify_all and verify differ on {account:?}"
    );
    Ok(())
}

fn broken_at(report: &VerifyReport, seq: i64, kind: BreakKind) {
    let broken = report.broken.as_ref().unwrap_or_else(|| {
        panic!(
            "{}: expected a break at {seq}, got ok: {report:?}",
            report.account_id
        )
    });
    assert_eq!(
        (broken.seq, broken.kind),
        (seq, kind),
        "{}: {broken}",
        report.account_id
    );
    assert!(!report.ok);
}

/// Both verification paths, with the secret, find `account` broken at `seq`, as `kind`.
async fn found_by_both<S: ChainedStore>(
    store: &S,
    account: &str,
    seq: i64,
    kind: BreakKind,
) -> TestResult {
    broken_at(&check(store, &keys().verifier(), account).await?, seq, kind);
    broken_at(
        &check_all(store, &keys().verifier(), &[]).await?[account],
        seq,
        kind,
    );
    Ok(())
}

async fn an_untouched_chain_verifies_with_and_without_the_secret<S: Chainable>(
    fx: &Fixture<S>,
) -> TestResult {
    let store = fx.store.with_chain(keys());
    // Interleaved accounts in one batch, several batches, and records without an account.
    let mut records = Vec::new();
    for i in 0..600 {
        let account = ["a", "b", "c"][i % 3];
        records.push(record(Some(account), BASE_MS + i as i64));
    }
    records.extend((0..30).map(|i| record(None, BASE_MS + i)));
    for chunk in records.chunks(128) {
        store.insert(&rows(chunk)?).await?;
    }
    let checkpoints = store.checkpoint(BASE_MS + 10_000).await?;
    assert_eq!(
        checkpoints.len(),
        4,
        "one per chain, the account-less one included"
    );
    fill(&store, Some("a"), 7, 7, BASE_MS + 20_000).await?;

    for (account, n) in [("a", 207), ("b", 200), ("c", 200), ("", 30)] {
        let report = check(&store, &keys().verifier(), account).await?;
        // "a" has 7 records newer than its checkpoint: linked and sealed, but nothing signed
        // says they were all there, so it cannot be called ok.
        let expected = if account == "a" {
            Outcome::Unverifiable
        } else {
            Outcome::Ok
        };
        assert_eq!(report.outcome, expected, "{report:?}");
        assert!(report.broken.is_none() && report.ok == (expected == Outcome::Ok));
        assert_eq!(report.records, n);
        assert_eq!(
            (report.first_seq, report.last_seq),
            (Some(1), Some(n as i64))
        );
        assert_eq!(report.checkpoints, 1);
        assert!(report.seals_checked);
        let expected_tail = if account == "a" { 7 } else { 0 };
        assert_eq!(report.after_latest_checkpoint, expected_tail);
        let public = check(&store, &public_only(), account).await?;
        assert!(
            public.outcome == expected && !public.seals_checked,
            "{public:?}"
        );
        assert_eq!(public.records, n);
    }
    // The whole-store pass: one report per chain, each the per-account walk's.
    for verifier in [keys().verifier(), public_only()] {
        let all = check_all(&store, &verifier, &[]).await?;
        assert_eq!(
            all.keys().map(String::as_str).collect::<Vec<_>>(),
            ["", "a", "b", "c"]
        );
        for account in ["a", "b", "c", ""] {
            same_as_walk(&store, &verifier, &all, account).await?;
        }
    }
    // An account that never wrote has no records, and nothing says whether it should have.
    let none = check(&store, &keys().verifier(), "nobody").await?;
    assert!(
        none.outcome == Outcome::Unverifiable && none.records == 0,
        "{none:?}"
    );

    // A span verifies the records in it and what is chained between them.
    let report = verify::verify(
        &store,
        &keys().verifier(),
        "a",
        Span {
            since_ms: Some(BASE_MS + 30),
            before_ms: Some(BASE_MS + 300),
        },
        &[],
    )
    .await?;
    assert!(report.ok, "{report:?}");
    // The span's records 11 to 100, and the records linking into and out of it.
    assert_eq!((report.first_seq, report.last_seq), (Some(10), Some(101)));
    assert_eq!(report.records, 92);
    Ok(())
}

/// The cases: each tampers with its own account's chain of 50 records, checkpointed at 40.
const TAMPERED: [&str; 13] = [
    "t-unlinked",
    "t-backdated",
    "t-body",
    "t-column",
    "t-delete",
    "t-forge",
    "t-dup",
    "t-swap",
    "t-renumber",
    "t-truncate",
    "t-head",
    "t-checkpoint",
    "t-stranger",
];

async fn every_tamper_is_found_and_located<S: Chainable>(fx: &Fixture<S>) -> TestResult {
    let store = fx.store.with_chain(keys());
    for account in TAMPERED {
        fill(&store, Some(account), 40, 16, BASE_MS).await?;
    }
    store.checkpoint(BASE_MS + 3_600_000).await?;
    for account in TAMPERED {
        fill(&store, Some(account), 10, 10, BASE_MS + 3_600_000).await?;
    }
    let db = &fx.db;
    let pg = db.is_postgres();
    let random_bytes = if pg {
        "decode(md5(random()::text) || md5(random()::text), 'hex')"
    } else {
        "randomblob(32)"
    };
    let new_id = |id: Uuid| {
        if pg {
            format!("'{id}'")
        } else {
            format!("X'{}'", id.simple())
        }
    };
    let copy_columns = "time_ms, account_id, action_type, action_result, raw_ray_id, \
                        raw_method, raw_status_code, raw_uri";
    let one = |sql: String| async move { db.exec(&sql).await };

    // One byte of a stored body.
    assert_eq!(one("UPDATE audit_logs SET record = replace(record, 'page me', 'page mE') WHERE account_id = 't-body' AND chain_seq = 17".into()).await?, 1);
    // A filter column only: the record's JSON is intact, but searches would miss it.
    one("UPDATE audit_logs SET actor_email = 'mallory@example.com' WHERE account_id = 't-column' AND chain_seq = 12".into()).await?;
    // A middle record deleted.
    one("DELETE FROM audit_logs WHERE account_id = 't-delete' AND chain_seq = 23".into()).await?;
    // A forged record appended after the head, with made-up link bytes.
    one(format!(
        "INSERT INTO audit_logs (id, {copy_columns}, record, chain_seq, chain_hash, chain_seal) \
         SELECT {}, {copy_columns}, record, 51, {random_bytes}, {random_bytes} FROM audit_logs \
         WHERE account_id = 't-forge' AND chain_seq = 50",
        new_id(Uuid::now_v7())
    ))
    .await?;
    // A copy of record 10, edited, inserted beside it with the same sequence and link.
    one(format!(
        "INSERT INTO audit_logs (id, {copy_columns}, record, chain_seq, chain_hash, chain_seal) \
         SELECT {}, {copy_columns}, replace(record, 'page me', 'ignore'), chain_seq, chain_hash, \
         chain_seal FROM audit_logs WHERE account_id = 't-dup' AND chain_seq = 10",
        new_id(Uuid::now_v7())
    ))
    .await?;
    // A forged record inserted with no link at all (no sequence number, hash or seal): the
    // chain's scans never read it, but the log serves it.
    one(format!(
        "INSERT INTO audit_logs (id, {copy_columns}, record) \
         SELECT {}, {copy_columns}, replace(record, 'page me', 'forged') FROM audit_logs \
         WHERE account_id = 't-unlinked' AND chain_seq = 50",
        new_id(Uuid::now_v7())
    ))
    .await?;
    // The same, backdated a day before the chain's first record (as if from before the store
    // was chained), its insert stamped with its commit time as every write since is.
    let rest = copy_columns.trim_start_matches("time_ms, ");
    one(format!(
        "INSERT INTO audit_logs (id, time_ms, {rest}, record, committed_ms) \
         SELECT {}, time_ms - 86400000, {rest}, replace(record, 'page me', 'backdated'), {} \
         FROM audit_logs WHERE account_id = 't-backdated' AND chain_seq = 1",
        new_id(Uuid::now_v7()),
        SystemTime::now().duration_since(UNIX_EPOCH)?.as_millis()
    ))
    .await?;
    // Two records swapped.
    one("UPDATE audit_logs SET chain_seq = CASE chain_seq WHEN 5 THEN 6 ELSE 5 END WHERE account_id = 't-swap' AND chain_seq IN (5, 6)".into()).await?;
    // Record 20 deleted and every later one renumbered to close the gap.
    one("DELETE FROM audit_logs WHERE account_id = 't-renumber' AND chain_seq = 20".into()).await?;
    one("UPDATE audit_logs SET chain_seq = chain_seq - 1 WHERE account_id = 't-renumber' AND chain_seq > 20".into()).await?;
    // The newest 15 deleted, and the head moved back to hide it: the checkpoint at 40 knows.
    one("DELETE FROM audit_logs WHERE account_id = 't-truncate' AND chain_seq > 35".into()).await?;
    one("UPDATE audit_chain_heads SET seq = 35 WHERE chain = 't-truncate'".into()).await?;
    // The newest 5 deleted, head left alone.
    one("DELETE FROM audit_logs WHERE account_id = 't-head' AND chain_seq > 45".into()).await?;
    // A checkpoint edited to vouch for something else.
    one(format!(
        "UPDATE audit_checkpoints SET head = {random_bytes} WHERE chain = 't-checkpoint'"
    ))
    .await?;
    // A checkpoint replaced by one signed with another key.
    one("DELETE FROM audit_checkpoints WHERE chain = 't-stranger'".into()).await?;
    let stranger = ChainKeys::from_secret(&ChainSecret::from_bytes([7; 32]));
    let real = store
        .chain_head("t-stranger")
        .await?
        .ok_or("t-stranger has a head")?;
    let other_store = fx.store.with_chain(stranger);
    // (The stranger's checkpoint is written through a store holding the stranger's key.)
    let forged = other_store.checkpoint(BASE_MS + 7_200_000).await?;
    let forged: Vec<Checkpoint> = forged
        .into_iter()
        .filter(|c| c.account_id == "t-stranger")
        .collect();
    assert_eq!(forged.len(), 1);
    assert_eq!(forged[0].seq, real.seq);
    // Remove the stranger's checkpoints of the other chains again: only t-stranger's counts.
    one(format!(
        "DELETE FROM audit_checkpoints WHERE key_id = '{}' AND chain <> 't-stranger'",
        forged[0].key_id
    ))
    .await?;

    let expected: [(&str, i64, BreakKind); 13] = [
        ("t-unlinked", 0, BreakKind::Unlinked),
        ("t-backdated", 0, BreakKind::Unlinked),
        ("t-body", 17, BreakKind::Modified),
        ("t-column", 12, BreakKind::Modified),
        ("t-delete", 23, BreakKind::Missing),
        ("t-forge", 51, BreakKind::Forged),
        ("t-dup", 10, BreakKind::Duplicate),
        ("t-swap", 5, BreakKind::Moved),
        ("t-renumber", 20, BreakKind::Moved),
        ("t-truncate", 36, BreakKind::Truncated),
        ("t-head", 46, BreakKind::Truncated),
        ("t-checkpoint", 40, BreakKind::BadCheckpoint),
        ("t-stranger", 50, BreakKind::BadCheckpoint),
    ];
    let all = check_all(&store, &keys().verifier(), &[]).await?;
    assert_eq!(all.len(), TAMPERED.len(), "{:?}", all.keys());
    for (account, seq, kind) in expected {
        let report = check(&store, &keys().verifier(), account).await?;
        broken_at(&report, seq, kind);
        broken_at(&all[account], seq, kind);
    }
    // Without the secret, the breaks are still found and located; a swap or an unlinked
    // forgery reads as a modification.
    let public: [(&str, Option<(i64, BreakKind)>); 8] = [
        ("t-unlinked", Some((0, BreakKind::Unlinked))),
        ("t-backdated", Some((0, BreakKind::Unlinked))),
        ("t-body", Some((17, BreakKind::Modified))),
        ("t-delete", Some((23, BreakKind::Missing))),
        ("t-swap", Some((5, BreakKind::Modified))),
        ("t-truncate", Some((36, BreakKind::Truncated))),
        ("t-checkpoint", Some((40, BreakKind::BadCheckpoint))),
        ("t-forge", Some((51, BreakKind::Modified))),
    ];
    let all = check_all(&store, &public_only(), &[]).await?;
    for (account, expected) in public {
        let report = check(&store, &public_only(), account).await?;
        match expected {
            Some((seq, kind)) => {
                broken_at(&report, seq, kind);
                broken_at(&all[account], seq, kind);
            }
            None => assert!(report.ok, "{report:?}"),
        }
    }
    // The untampered remainder of the database still verifies: tampering is local. A record
    // older than its account's chain without a link (written and committed before the store
    // was chained) is not a break.
    fill(&store, Some("bystander"), 20, 20, BASE_MS).await?;
    one(format!(
        "INSERT INTO audit_logs (id, {copy_columns}, record, committed_ms) \
         SELECT {}, {}, account_id, action_type, action_result, raw_ray_id, raw_method, \
         raw_status_code, raw_uri, record, 1 FROM audit_logs \
         WHERE account_id = 'bystander' AND chain_seq = 1",
        new_id(Uuid::now_v7()),
        BASE_MS - 60_000
    ))
    .await?;
    let bystander = check(&store, &keys().verifier(), "bystander").await?;
    assert!(bystander.broken.is_none(), "{bystander:?}");
    let all = check_all(&store, &keys().verifier(), &[]).await?;
    assert!(all["bystander"].broken.is_none(), "{:?}", all["bystander"]);
    assert_eq!(
        all.values().filter(|r| r.broken.is_some()).count(),
        TAMPERED.len()
    );
    Ok(())
}

async fn a_retried_batch_is_chained_once<S: Chainable>(fx: &Fixture<S>) -> TestResult {
    // The write commits but its answer is lost; the retry must not chain the records again.
    retried_batches_are_chained_once(fx, 300, None).await
}

async fn a_retried_small_batch_is_chained_once<S: Chainable>(fx: &Fixture<S>) -> TestResult {
    // As above, in batches of 20: on PostgreSQL these are written by `INSERT` rather than
    // `COPY`, and the retry meets the stored rows there.
    retried_batches_are_chained_once(fx, 100, Some(20)).await
}

/// `n` records over two accounts through a pipeline (of `batch_size` when given) whose first
/// two writes commit but report failure: each account's chain holds its records once.
async fn retried_batches_are_chained_once<S: Chainable>(
    fx: &Fixture<S>,
    n: usize,
    batch_size: Option<usize>,
) -> TestResult {
    let flaky = flaky_store(fx.store.with_chain(keys()));
    let builder = fast(flaky.clone());
    let builder = match batch_size {
        Some(size) => builder.batch_size(size),
        None => builder,
    };
    let (sink, worker) = start(builder).await?;
    let records: Vec<_> = (0..n)
        .map(|i| record(Some(["x", "y"][i % 2]), BASE_MS + i as i64))
        .collect();
    flaky.interceptor().fail_next(2, true);
    for r in &records {
        audit_layer::sink::AuditSink::submit(&sink, r.clone());
    }
    let metrics = stop(&sink, worker).await?;
    assert_eq!(metrics.stored + metrics.duplicates, n as u64, "{metrics:?}");
    assert!(flaky.interceptor().failures() >= 2);
    assert_eq!(fx.store.count().await?, n as u64);
    let half = (n / 2) as u64;
    for account in ["x", "y"] {
        let report = check(&fx.store.with_chain(keys()), &keys().verifier(), account).await?;
        assert!(report.ok, "{report:?}");
        assert_eq!((report.records, report.last_seq), (half, Some(half as i64)));
    }
    Ok(())
}

async fn a_small_chained_batch_is_not_held_back<S: Chainable>(fx: &Fixture<S>) -> TestResult {
    // See `a_small_batch_is_not_held_back` in `store.rs`: the same for a chained store, whose
    // write is a transaction of several statements.
    let store = fx.store.with_chain(keys());
    let fastest = fastest_small_write(&store, "acc_small").await?;
    assert!(
        fastest < std::time::Duration::from_millis(25),
        "the fastest chained write of 4 records took {fastest:?}"
    );
    let report = check(&store, &keys().verifier(), "acc_small").await?;
    assert!(report.broken.is_none(), "{report:?}");
    assert_eq!(report.last_seq, Some(36));
    Ok(())
}

async fn two_pipelines_build_one_linear_chain_per_account<S: Chainable>(
    fx: &Fixture<S>,
) -> TestResult {
    // Two app instances on one database: each its own store handle and pipeline (two
    // writers each), submitting into the same accounts at the same time.
    let accounts = ["p", "q", "r"];
    let mut sinks = Vec::new();
    for _ in 0..2 {
        let store = fx.store.with_chain(keys());
        sinks.push(start(fast(store).writers(2).batch_size(64)).await?);
    }
    let per_instance = 1500;
    let submit = |sink: audit_store::pipeline::IngestSink, offset: i64| {
        tokio::spawn(async move {
            for i in 0..per_instance {
                let r = record(Some(accounts[i % 3]), BASE_MS + offset + i as i64);
                audit_layer::sink::AuditSink::submit(&sink, r);
                if i % 100 == 0 {
                    tokio::task::yield_now().await;
                }
            }
        })
    };
    let a = submit(sinks[0].0.clone(), 0);
    let b = submit(sinks[1].0.clone(), 500_000);
    a.await?;
    b.await?;
    for (sink, worker) in sinks {
        let metrics = stop(&sink, worker).await?;
        assert_eq!(metrics.stored, per_instance as u64, "{metrics:?}");
    }
    let store = fx.store.with_chain(keys());
    let all = check_all(&store, &keys().verifier(), &[]).await?;
    assert_eq!(all.len(), accounts.len());
    for account in accounts {
        let report = check(&store, &keys().verifier(), account).await?;
        assert!(report.ok, "{report:?}");
        assert_eq!(report.records, 1000);
        assert_eq!(report.last_seq, Some(1000));
        assert_eq!(all[account], report);
    }
    Ok(())
}

async fn retention_leaves_a_verifiable_anchor<S: Chainable>(fx: &Fixture<S>) -> TestResult {
    let store = fx.store.with_chain(keys());
    fill(&store, Some("r"), 30, 7, BASE_MS).await?;
    // A record of an old time arriving late (a spool replay): chained at 31.
    fill(&store, Some("r"), 1, 1, BASE_MS + 2 * 60_000 + 1).await?;
    fill(&store, Some("r"), 5, 5, BASE_MS + 30 * 60_000).await?;
    store.checkpoint(BASE_MS + 3_600_000).await?;

    let cutoff = BASE_MS + 10 * 60_000;
    let deleted = store.delete_before(cutoff).await?;
    assert_eq!(
        deleted, 10,
        "the prefix 1..=10; the late old record stays with its chain"
    );
    let report = check(&store, &keys().verifier(), "r").await?;
    assert!(report.ok, "{report:?}");
    assert_eq!(report.anchored_at, Some(10));
    assert_eq!(
        (report.first_seq, report.last_seq, report.records),
        (Some(11), Some(36), 26)
    );
    assert_eq!(report.checkpoints, 1);
    let public = check(&store, &public_only(), "r").await?;
    assert!(public.ok, "{public:?}");
    // Retention again with the same cutoff: nothing more, and one anchor.
    assert_eq!(store.delete_before(cutoff).await?, 0);
    // Once the cutoff passes the late record, the prefix reaches past it.
    assert_eq!(store.delete_before(BASE_MS + 31 * 60_000).await?, 22);
    let report = check(&store, &keys().verifier(), "r").await?;
    assert!(report.ok, "{report:?}");
    assert_eq!((report.anchored_at, report.records), (Some(32), 4));
    // The whole-store pass starts the chain at its anchor too.
    let all = check_all(&store, &keys().verifier(), &[]).await?;
    assert_eq!(all["r"], report);

    // Deleting the first kept record, or forging the anchor, is found.
    fx.db
        .exec("DELETE FROM audit_logs WHERE account_id = 'r' AND chain_seq = 33")
        .await?;
    found_by_both(&store, "r", 33, BreakKind::Missing).await?;
    fx.db
        .exec("UPDATE audit_checkpoints SET seq = 33 WHERE chain = 'r' AND kind = 'anchor'")
        .await?;
    found_by_both(&store, "r", 33, BreakKind::BadCheckpoint).await
}

async fn external_checkpoints_reveal_a_silent_truncation<S: Chainable>(
    fx: &Fixture<S>,
) -> TestResult {
    let dir = tempfile::tempdir()?;
    let file = dir.path().join("checkpoints.jsonl");
    let store = fx.store.with_chain(keys());
    let (sink, worker) = start(
        fast(store.clone())
            .checkpoints(Duration::from_millis(20))
            .checkpoint_sink(JsonLinesCheckpoints::new(&file)),
    )
    .await?;
    for i in 0..100 {
        let r = record(Some(["e", "f"][i % 2]), BASE_MS + i as i64);
        audit_layer::sink::AuditSink::submit(&sink, r);
    }
    eventually("two rounds of checkpoints", || {
        sink.metrics().checkpoints >= 4
    })
    .await?;
    let metrics = stop(&sink, worker).await?;
    assert_eq!(metrics.stored, 100);
    // The last round, at shutdown, vouches for everything written.
    let kept = JsonLinesCheckpoints::read(&file)?;
    for account in ["e", "f"] {
        let newest = kept
            .iter()
            .filter(|c| c.account_id == account)
            .max_by_key(|c| c.time_ms)
            .ok_or("a checkpoint per account")?;
        assert_eq!(newest.seq, 50);
        assert!(newest.is_signed_for(&public_only()));
    }

    // An insider deletes the newest 5 records of `e`, every stored checkpoint, and moves the
    // head back: nothing left in the database contradicts the shorter chain...
    fx.db
        .exec("DELETE FROM audit_logs WHERE account_id = 'e' AND chain_seq > 45")
        .await?;
    fx.db.exec("DELETE FROM audit_checkpoints").await?;
    fx.db
        .exec("UPDATE audit_chain_heads SET seq = 45 WHERE chain = 'e'")
        .await?;
    let inside = check(&store, &keys().verifier(), "e").await?;
    assert!(
        inside.broken.is_none(),
        "only what is kept outside can reveal this: {inside:?}"
    );
    // ... and yet, without any checkpoint, it is not called ok.
    assert_eq!(inside.outcome, Outcome::Unverifiable, "{inside:?}");
    // ... but the checkpoints kept outside do.
    let report = verify::verify(&store, &public_only(), "e", Span::all(), &kept).await?;
    broken_at(&report, 46, BreakKind::Truncated);
    let all = check_all(&store, &public_only(), &kept).await?;
    broken_at(&all["e"], 46, BreakKind::Truncated);
    assert!(all["f"].ok, "{:?}", all["f"]);

    // A chain deleted whole, head and all: only an external checkpoint still names it, and
    // the whole-store pass reports it.
    fx.db
        .exec("DELETE FROM audit_logs WHERE account_id = 'f'")
        .await?;
    fx.db
        .exec("DELETE FROM audit_chain_heads WHERE chain = 'f'")
        .await?;
    let all = check_all(&store, &public_only(), &kept).await?;
    broken_at(&all["f"], 1, BreakKind::Truncated);
    Ok(())
}

async fn the_verify_endpoint_reports_breaks<S: Chainable>(fx: &Fixture<S>) -> TestResult {
    let store = fx.store.with_chain(keys());
    fill(&store, Some("acc"), 20, 20, BASE_MS).await?;
    store.checkpoint(BASE_MS + 3_600_000).await?;
    let authorize = |request: &http::request::Parts, account: &str| match request
        .headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
    {
        None => Access::Unauthenticated,
        Some(t) if t == format!("Bearer {account}") => Access::Allowed,
        Some(_) => Access::Denied,
    };
    let router = AuditLogRouter::new(store, authorize).into_router();
    let get = |uri: &str, token: Option<&str>| {
        let router = router.clone();
        let mut request = Request::get(uri);
        if let Some(token) = token {
            request = request.header("authorization", format!("Bearer {token}"));
        }
        async move {
            let response = router.oneshot(request.body(Body::empty())?).await?;
            let status = response.status();
            let body = response.into_body().collect().await?.to_bytes();
            TestResult::Ok((status, serde_json::from_slice::<serde_json::Value>(&body)?))
        }
    };
    let uri = "/accounts/acc/logs/audit/verify";
    let (status, body) = get(uri, Some("acc")).await?;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["result"]["ok"], true, "{body}");
    assert_eq!(body["result"]["records"], 20);
    assert_eq!(body["result"]["seals_checked"], true);
    let (_, body) = get(
        &format!("{uri}?since=2025-03-10T09:05:00Z&before=2025-03-10T09:10:00Z"),
        Some("acc"),
    )
    .await?;
    assert_eq!(
        (
            body["result"]["first_seq"].clone(),
            body["result"]["records"].clone()
        ),
        (5.into(), 7.into()),
        "the span's records 6 to 10, and the ones linking into and out of it: {body}"
    );

    fx.db
        .exec("UPDATE audit_logs SET raw_status_code = 201 WHERE account_id = 'acc' AND chain_seq = 8")
        .await?;
    let (status, body) = get(uri, Some("acc")).await?;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["result"]["ok"], false);
    assert_eq!(body["result"]["broken"]["seq"], 8, "{body}");
    assert_eq!(body["result"]["broken"]["kind"], "modified");

    assert_eq!(get(uri, None).await?.0, StatusCode::UNAUTHORIZED);
    assert_eq!(get(uri, Some("other")).await?.0, StatusCode::NOT_FOUND);
    let (status, body) = get(&format!("{uri}?limit=5"), Some("acc")).await?;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        body["errors"][0]["message"]
            .as_str()
            .unwrap_or("")
            .contains("'limit'")
            || body["errors"][0]["message"]
                .as_str()
                .unwrap_or("")
                .contains("\"limit\""),
        "{body}"
    );

    // An unchained store has nothing to verify.
    let plain = AuditLogRouter::new(fx.store.clone(), authorize).into_router();
    let response = plain
        .oneshot(
            Request::get(uri)
                .header("authorization", "Bearer acc")
                .body(Body::empty())?,
        )
        .await?;
    assert_eq!(response.status(), StatusCode::NOT_IMPLEMENTED);
    Ok(())
}

async fn a_large_untouched_chain_verifies<S: Chainable>(fx: &Fixture<S>) -> TestResult {
    let store = fx.store.with_chain(keys());
    let n = 100_000;
    // Built from one serialized template (serializing 100k records is the slow part of a
    // debug build): each row gets its own id, time and JSON text.
    let template = rows(&[record(Some("big"), BASE_MS)])?.remove(0);
    let template_id = template.id.to_string();
    for start in (0..n).step_by(10_000) {
        let chunk: Vec<_> = (start..start + 10_000)
            .map(|i| {
                let mut row = template.clone();
                row.id = Uuid::now_v7();
                row.time_ms = BASE_MS + i as i64;
                row.record = template.record.replace(&template_id, &row.id.to_string());
                row
            })
            .collect();
        store.insert(&chunk).await?;
    }
    store.checkpoint(BASE_MS + n as i64).await?;
    let report = check(&store, &keys().verifier(), "big").await?;
    assert!(report.ok, "{report:?}");
    assert_eq!(
        (report.records, report.last_seq, report.checkpoints),
        (n as u64, Some(n as i64), 1)
    );
    Ok(())
}

async fn the_whole_store_pass_puts_out_of_order_commits_back_in_order<S: Chainable>(
    fx: &Fixture<S>,
) -> TestResult {
    // Two writers: the one holding older records commits after the other. Its records come
    // first in table order (SQLite: older ids; PostgreSQL: an older month's partition) but
    // carry later sequence numbers, so the pass reads each chain's 61..120 before its 1..60.
    let store = fx.store.with_chain(keys());
    let older: Vec<_> = (0..120)
        .map(|i| record(Some(["o", "p"][i % 2]), BASE_MS + i as i64 * 1000))
        .collect();
    let month = 40 * 86_400_000;
    let newer: Vec<_> = (0..120)
        .map(|i| record(Some(["o", "p"][i % 2]), BASE_MS + month + i as i64 * 1000))
        .collect();
    for chunk in newer.chunks(50) {
        store.insert(&rows(chunk)?).await?;
    }
    for chunk in older.chunks(50) {
        store.insert(&rows(chunk)?).await?;
    }
    // Records without an account, interleaved the same way.
    let early = record(None, BASE_MS);
    let late = record(None, BASE_MS + month);
    store.insert(&rows(&[late])?).await?;
    store.insert(&rows(&[early])?).await?;
    store.checkpoint(BASE_MS + 2 * month).await?;

    for verifier in [keys().verifier(), public_only()] {
        let all = check_all(&store, &verifier, &[]).await?;
        assert_eq!(all.len(), 3);
        for (account, n) in [("o", 120), ("p", 120), ("", 2)] {
            let report = &all[account];
            assert!(report.ok, "{report:?}");
            assert_eq!(
                (report.records, report.first_seq, report.last_seq),
                (n, Some(1), Some(n as i64))
            );
            assert_eq!(report.checkpoints, 1);
            same_as_walk(&store, &verifier, &all, account).await?;
        }
    }

    // Each kind of tamper among the out-of-order records is still found where it is.
    let db = &fx.db;
    // A record of the later commit (read first) changed...
    db.exec(
        "UPDATE audit_logs SET raw_uri = '/elsewhere' WHERE account_id = 'o' AND chain_seq = 70",
    )
    .await?;
    // ... one of the earlier commit (read last) deleted...
    db.exec("DELETE FROM audit_logs WHERE account_id = 'p' AND chain_seq = 30")
        .await?;
    // ... and the record without an account read first swapped with the one read last.
    db.exec("UPDATE audit_logs SET chain_seq = 3 - chain_seq WHERE account_id IS NULL")
        .await?;
    let all = check_all(&store, &keys().verifier(), &[]).await?;
    broken_at(&all["o"], 70, BreakKind::Modified);
    broken_at(&all["p"], 30, BreakKind::Missing);
    broken_at(&all[""], 1, BreakKind::Moved);
    for account in ["o", "p", ""] {
        same_as_walk(&store, &keys().verifier(), &all, account).await?;
    }
    Ok(())
}
