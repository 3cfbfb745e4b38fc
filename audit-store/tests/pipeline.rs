//! The ingest pipeline end to end: the sink, batching, enrichment, strict commits, and what
//! happens when the database fails (retries, spool, replay, drops and gap records).
//!
//! The important tests run on SQLite and PostgreSQL (see `backend_tests!`); the rest on
//! SQLite, through `FlakyStore` where a fault is needed.

#[macro_use]
mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use audit_layer::AuditSink;
use audit_layer::NotCommitted;
use audit_layer::record::{AuditRecord, Timestamp};
use audit_store::PostgresStore;
use audit_store::pipeline::{Directory, IngestSink, Lookup, PipelineBuilder, PipelineMetrics};
use audit_store::store::{AuditStore, ChainedStore};
use common::{
    BASE_MS, DbRow, Fixture, FlakyStore, TestResult, account_of, assert_in_order_per_account,
    eventually, fast, flaky_store, json, record, spool_line_len, spool_segments, start, stop,
    until_count, zoned_record,
};
use sqlx::postgres::PgPoolOptions;
use tokio::task::JoinHandle;

backend_tests!(
    sink_records_are_all_stored_after_shutdown,
    strict_commit_resolves_after_the_record_is_stored,
    enrichment_fills_account_and_zone_names,
    writer_failures_then_recovery_lose_and_duplicate_nothing,
    outage_at_startup_spools_then_replays_in_order,
    spool_is_replayed_after_a_restart,
    a_spooled_record_older_than_the_retention_period_is_not_stored,
    queue_overflow_counts_drops_and_writes_a_gap_record,
    a_full_queue_overflows_to_the_spool_and_loses_nothing,
    retention_deletes_what_is_older_than_the_period,
    shutdown_flushes_a_full_queue,
    unstorable_record_does_not_block_the_pipeline,
    a_record_too_large_for_an_index_is_refused_alone,
    hostile_directory_names_are_escaped_and_capped,
    backpressure_holds_requests_until_a_writer_takes_a_batch,
);

/// `(enqueued, stored, duplicates, spooled, replayed, dropped, gap_records)`.
fn counts(m: &PipelineMetrics) -> (u64, u64, u64, u64, u64, u64, u64) {
    (
        m.enqueued,
        m.stored,
        m.duplicates,
        m.spooled,
        m.replayed,
        m.dropped,
        m.gap_records,
    )
}

/// Submits every record through the layer's trait, without waiting.
fn submit_all(sink: &impl AuditSink, records: &[AuditRecord]) {
    for r in records {
        sink.submit(r.clone());
    }
}

/// A test-speed pipeline over a [`FlakyStore`] of the fixture's store, set up by `configure`,
/// whose first write hangs: `first` is submitted and taken off the queue, and its insert waits
/// until the store is released.
async fn with_a_hung_write<S: ChainedStore>(
    fx: &Fixture<S>,
    configure: impl FnOnce(PipelineBuilder<FlakyStore<S>>) -> PipelineBuilder<FlakyStore<S>>,
    first: &AuditRecord,
) -> TestResult<(FlakyStore<S>, IngestSink, JoinHandle<()>)> {
    let flaky = flaky_store(fx.store.clone());
    flaky.interceptor().hold();
    let (sink, worker) = start(configure(fast(flaky.clone()))).await?;
    sink.submit(first.clone());
    eventually("the first write to hang", || {
        flaky.interceptor().waiting() >= 1
    })
    .await?;
    Ok((flaky, sink, worker))
}

/// Checks a gap row: in `account`'s log, saying `lost` records were lost between the times
/// `first_ms` and `last_ms`, and valid against the record schema.
fn assert_gap(row: &DbRow, account: &str, lost: u64, first_ms: i64, last_ms: i64) -> TestResult {
    assert_eq!(row.account_id.as_deref(), Some(account));
    assert_eq!(row.action_type, "gap");
    let value: serde_json::Value = serde_json::from_str(&row.record)?;
    audit_layer::schema::validate_json(&value)?;
    let gap: AuditRecord = serde_json::from_value(value)?;
    assert_eq!(account_of(&gap), account);
    assert_eq!(gap.action.kind.as_str(), "gap");
    let first = Timestamp::from_unix_millis(first_ms).to_string();
    let last = Timestamp::from_unix_millis(last_ms).to_string();
    assert_eq!(
        gap.resource.request.as_ref().map(|b| b.to_value()),
        Some(serde_json::json!({"lost": lost, "first": first, "last": last})),
        "gap record {}",
        row.record
    );
    let description = gap.action.description.as_deref().unwrap_or_default();
    assert!(
        description.contains(&format!("{lost} audit records were lost")),
        "{description}"
    );
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// On every backend
// ---------------------------------------------------------------------------------------------

async fn sink_records_are_all_stored_after_shutdown<S: ChainedStore>(
    fx: &Fixture<S>,
) -> TestResult {
    let flaky = flaky_store(fx.store.clone());
    let (sink, worker) = start(fast(flaky.clone()).writers(2).batch_size(64)).await?;
    let accounts = ["acc_a", "acc_b", "acc_c"];
    let mut records: Vec<AuditRecord> = (0..300)
        .map(|i| record(Some(accounts[i % 3]), BASE_MS + i as i64))
        .collect();
    records.extend((0..20).map(|i| record(None, BASE_MS + 1_000 + i)));
    submit_all(&sink, &records);
    let m = stop(&sink, worker).await?;

    assert_eq!(fx.store.count().await?, 320);
    for r in &records[..300] {
        assert_eq!(fx.store.get(account_of(r), r.id).await?, Some(json(r)?));
    }
    let stored = fx.db.rows().await?;
    let anonymous: Vec<&DbRow> = stored.iter().filter(|r| r.account_id.is_none()).collect();
    assert_eq!(anonymous.len(), 20);
    for (row, r) in anonymous.iter().zip(&records[300..]) {
        assert_eq!((row.id, &row.record), (r.id, &json(r)?));
    }
    assert_in_order_per_account(&flaky.interceptor().written());

    assert_eq!(counts(&m), (320, 320, 0, 0, 0, 0, 0));
    assert_eq!((m.queue_depth, m.spool_bytes, m.failed_writes), (0, 0, 0));
    assert!(m.batches >= 5, "320 records in batches of 64: {m:?}");
    let text = m.to_prometheus();
    assert!(
        text.contains("\naudit_records_enqueued_total 320\n"),
        "{text}"
    );
    assert!(
        text.contains("\naudit_records_stored_total 320\n"),
        "{text}"
    );
    assert!(text.contains("\naudit_records_dropped_total 0\n"), "{text}");

    // After shutdown: nothing more is taken, and what is refused is counted.
    assert!(!sink.is_available());
    sink.submit(record(Some("acc_a"), BASE_MS + 5_000));
    assert_eq!(
        sink.commit(record(Some("acc_a"), BASE_MS + 5_001)).await,
        Err(NotCommitted::Rejected)
    );
    let m = sink.metrics();
    assert_eq!((m.enqueued, m.dropped), (320, 2));
    assert_eq!(fx.store.count().await?, 320);
    Ok(())
}

async fn strict_commit_resolves_after_the_record_is_stored<S: ChainedStore>(
    fx: &Fixture<S>,
) -> TestResult {
    let (sink, worker) =
        start(fast(fx.store.clone()).flush_interval(Duration::from_millis(30))).await?;
    for i in 0..5 {
        let r = record(Some("acc_strict"), BASE_MS + i);
        sink.commit(r.clone()).await?;
        // Committed means readable, right now.
        assert_eq!(fx.store.get("acc_strict", r.id).await?, Some(json(&r)?));
    }
    let r = record(Some("acc_strict"), BASE_MS + 5);
    AuditSink::submit_and_commit(&sink, r.clone()).await?;
    assert_eq!(fx.store.get("acc_strict", r.id).await?, Some(json(&r)?));
    assert!(AuditSink::is_available(&sink));

    // Many waiting commits share batches (group commit), and each resolves once stored.
    let mut waiting = tokio::task::JoinSet::new();
    for i in 0..40 {
        let (sink, store) = (sink.clone(), fx.store.clone());
        let r = record(Some("acc_strict"), BASE_MS + 100 + i);
        waiting.spawn(async move {
            sink.commit(r.clone()).await?;
            let stored = store.get("acc_strict", r.id).await?;
            TestResult::Ok(stored == Some(json(&r)?))
        });
    }
    while let Some(joined) = waiting.join_next().await {
        assert!(
            joined??,
            "a committed record was not readable right after its commit"
        );
    }
    assert_eq!(fx.store.count().await?, 46);
    let m = stop(&sink, worker).await?;
    assert_eq!(counts(&m), (46, 46, 0, 0, 0, 0, 0));
    assert!(m.batches < 46, "no commit was grouped: {m:?}");
    Ok(())
}

/// A directory that names every account and zone, counting its lookups.
#[derive(Clone, Default)]
struct Names {
    accounts: Arc<AtomicUsize>,
    zones: Arc<AtomicUsize>,
}

impl Directory for Names {
    fn account_name<'a>(&'a self, account_id: &'a str) -> Lookup<'a> {
        self.accounts.fetch_add(1, Ordering::SeqCst);
        Box::pin(async move { Ok(Some(format!("Account {account_id}"))) })
    }

    fn zone_name<'a>(&'a self, zone_id: &'a str) -> Lookup<'a> {
        self.zones.fetch_add(1, Ordering::SeqCst);
        Box::pin(async move { Ok(Some(format!("{zone_id}.example.com"))) })
    }
}

/// A directory that always fails, counting its lookups.
#[derive(Clone, Default)]
struct Broken {
    calls: Arc<AtomicUsize>,
}

impl Directory for Broken {
    fn account_name<'a>(&'a self, _: &'a str) -> Lookup<'a> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        Box::pin(async { Err("directory unavailable".into()) })
    }

    fn zone_name<'a>(&'a self, _: &'a str) -> Lookup<'a> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        Box::pin(async { Err("directory unavailable".into()) })
    }
}

async fn enrichment_fills_account_and_zone_names<S: ChainedStore>(fx: &Fixture<S>) -> TestResult {
    let names = Names::default();
    let (sink, worker) = start(fast(fx.store.clone()).directory(names.clone())).await?;
    let zoned = zoned_record("acc_e", "zone_e", BASE_MS);
    let plain = record(Some("acc_e"), BASE_MS + 1);
    let anonymous = record(None, BASE_MS + 2);
    let mut named = zoned_record("acc_named", "zone_e", BASE_MS + 3);
    named.account.as_mut().ok_or("account")?.name = Some("Already Named".to_owned());
    submit_all(
        &sink,
        &[
            zoned.clone(),
            plain.clone(),
            anonymous.clone(),
            named.clone(),
        ],
    );
    let m = stop(&sink, worker).await?;
    assert_eq!(counts(&m), (4, 4, 0, 0, 0, 0, 0));

    let mut want = zoned.clone();
    want.account.as_mut().ok_or("account")?.name = Some("Account acc_e".to_owned());
    want.zone.as_mut().ok_or("zone")?.name = Some("zone_e.example.com".to_owned());
    let stored = fx.store.get("acc_e", zoned.id).await?.ok_or("not stored")?;
    assert_eq!(stored, json(&want)?);
    let (_, _, columns) = fx.db.columns(zoned.id).await?.ok_or("row missing")?;
    assert_eq!(columns[1].as_deref(), Some("Account acc_e"));
    assert_eq!(columns[3].as_deref(), Some("zone_e.example.com"));

    let mut want = plain.clone();
    want.account.as_mut().ok_or("account")?.name = Some("Account acc_e".to_owned());
    assert_eq!(fx.store.get("acc_e", plain.id).await?, Some(json(&want)?));

    let mut want = named.clone();
    want.zone.as_mut().ok_or("zone")?.name = Some("zone_e.example.com".to_owned());
    assert_eq!(
        fx.store.get("acc_named", named.id).await?,
        Some(json(&want)?)
    );

    let rows = fx.db.rows().await?;
    let row = rows
        .iter()
        .find(|r| r.id == anonymous.id)
        .ok_or("anonymous record not stored")?;
    assert_eq!(row.record, json(&anonymous)?);

    // One lookup per id: acc_e once (cached for the second record), acc_named never (it had
    // a name), zone_e once.
    assert_eq!(names.accounts.load(Ordering::SeqCst), 1);
    assert_eq!(names.zones.load(Ordering::SeqCst), 1);
    Ok(())
}

async fn writer_failures_then_recovery_lose_and_duplicate_nothing<S: ChainedStore>(
    fx: &Fixture<S>,
) -> TestResult {
    let flaky = flaky_store(fx.store.clone());
    // More failures than attempts: without a spool the batch stays in memory and is retried.
    flaky.interceptor().fail_next(5, false);
    let (sink, worker) = start(fast(flaky.clone())).await?;
    let first: Vec<AuditRecord> = (0..50)
        .map(|i| record(Some(["acc_w1", "acc_w2"][i % 2]), BASE_MS + i as i64))
        .collect();
    submit_all(&sink, &first);
    until_count(&fx.store, 50).await?;
    assert_eq!(flaky.interceptor().failures(), 5);
    eventually("the pipeline to be available again", || sink.is_available()).await?;
    let m = sink.metrics();
    assert_eq!(counts(&m), (50, 50, 0, 0, 0, 0, 0));
    assert_eq!(m.failed_writes, 5);

    // Unclear failures: the transaction committed but the answer was lost, twice. The
    // retries find the records already there and add nothing.
    flaky.interceptor().fail_next(2, true);
    let second: Vec<AuditRecord> = (50..100)
        .map(|i| record(Some(["acc_w1", "acc_w2"][i % 2]), BASE_MS + i as i64))
        .collect();
    submit_all(&sink, &second);
    eventually("the second batch to be settled", || {
        let m = sink.metrics();
        m.stored + m.duplicates == 100
    })
    .await?;
    let m = stop(&sink, worker).await?;
    assert_eq!(counts(&m), (100, 50, 50, 0, 0, 0, 0));
    assert_eq!(m.failed_writes, 7);
    assert_eq!(flaky.interceptor().failures(), 7);
    assert_eq!(fx.store.count().await?, 100);
    for r in first.iter().chain(&second) {
        assert_eq!(fx.store.get(account_of(r), r.id).await?, Some(json(r)?));
    }
    assert_in_order_per_account(&flaky.interceptor().written());
    Ok(())
}

async fn outage_at_startup_spools_then_replays_in_order<S: ChainedStore>(
    fx: &Fixture<S>,
) -> TestResult {
    let spool = tempfile::tempdir()?;
    let flaky = flaky_store(fx.store.clone());
    flaky.interceptor().set_down(true);
    let (sink, worker) = start(fast(flaky.clone()).spool(spool.path(), 1 << 20)).await?;
    assert!(sink.is_available(), "nothing has failed yet");

    let spooled: Vec<AuditRecord> = (0..30)
        .map(|i| record(Some(["acc_o1", "acc_o2"][i % 2]), BASE_MS + i as i64))
        .collect();
    submit_all(&sink, &spooled);
    eventually("30 records spooled", || sink.metrics().spooled == 30).await?;
    assert!(!sink.is_available());
    assert_eq!(fx.store.count().await?, 0);

    // Strict mode while degraded: the record is kept (spooled), but not committed.
    let strict = record(Some("acc_o1"), BASE_MS + 30);
    assert_eq!(
        sink.commit(strict.clone()).await,
        Err(NotCommitted::Spooled)
    );
    let mut bytes = 0;
    for r in spooled.iter().chain([&strict]) {
        bytes += spool_line_len(r)?;
    }
    let m = sink.metrics();
    assert_eq!(counts(&m), (31, 0, 0, 31, 0, 0, 0));
    assert_eq!(m.spool_bytes, bytes);
    assert_eq!(spool_segments(spool.path())?.1, bytes);

    // The database comes back: the spool is replayed, then records go straight in again.
    flaky.interceptor().set_down(false);
    eventually("the spool to be replayed", || sink.metrics().replayed == 31).await?;
    until_count(&fx.store, 31).await?;
    eventually("the pipeline to be available again", || sink.is_available()).await?;
    let after: Vec<AuditRecord> = (31..41)
        .map(|i| record(Some(["acc_o1", "acc_o2"][i % 2]), BASE_MS + i as i64))
        .collect();
    submit_all(&sink, &after);
    let m = stop(&sink, worker).await?;

    assert_eq!(counts(&m), (41, 41, 0, 31, 31, 0, 0));
    assert_eq!(m.spool_bytes, 0);
    assert_eq!(spool_segments(spool.path())?, (0, 0));
    assert_eq!(fx.store.count().await?, 41);
    for r in spooled.iter().chain([&strict]).chain(&after) {
        assert_eq!(fx.store.get(account_of(r), r.id).await?, Some(json(r)?));
    }
    // In order: within each account by time, and the spool before anything newer.
    let written = flaky.interceptor().written();
    assert_in_order_per_account(&written);
    let order: Vec<_> = written.iter().map(|(_, _, id)| *id).collect();
    let mut want: Vec<_> = spooled.iter().map(|r| r.id).collect();
    want.push(strict.id);
    want.extend(after.iter().map(|r| r.id));
    assert_eq!(order, want);
    Ok(())
}

async fn spool_is_replayed_after_a_restart<S: ChainedStore>(fx: &Fixture<S>) -> TestResult {
    let spool = tempfile::tempdir()?;
    let flaky = flaky_store(fx.store.clone());
    flaky.interceptor().set_down(true);
    let records: Vec<AuditRecord> = (0..40)
        .map(|i| record(Some(["acc_r1", "acc_r2"][i % 2]), BASE_MS + i as i64))
        .collect();
    let mut bytes = 0;
    for r in &records {
        bytes += spool_line_len(r)?;
    }

    // First process: the database is down the whole time; shutdown leaves everything spooled.
    {
        let (sink, worker) = start(fast(flaky.clone()).spool(spool.path(), 1 << 20)).await?;
        submit_all(&sink, &records);
        let m = stop(&sink, worker).await?;
        assert_eq!(counts(&m), (40, 0, 0, 40, 0, 0, 0));
        assert_eq!(m.spool_bytes, bytes);
    }
    assert_eq!(fx.store.count().await?, 0);
    assert_eq!(spool_segments(spool.path())?.1, bytes);

    // Second process, database up: it starts degraded, replays everything, and recovers.
    flaky.interceptor().set_down(false);
    let (sink, pipeline) = fast(flaky.clone())
        .spool(spool.path(), 1 << 20)
        .build()
        .await?;
    assert!(
        !sink.is_available(),
        "a non-empty spool must be replayed first"
    );
    assert_eq!(sink.metrics().spool_bytes, bytes);
    let worker = tokio::spawn(pipeline.run());
    eventually("the spool to be replayed", || sink.metrics().replayed == 40).await?;
    eventually("the pipeline to be available", || sink.is_available()).await?;
    let m = stop(&sink, worker).await?;
    assert_eq!(counts(&m), (0, 40, 0, 0, 40, 0, 0));
    assert_eq!(m.spool_bytes, 0);
    assert_eq!(spool_segments(spool.path())?, (0, 0));
    assert_eq!(fx.store.count().await?, 40);
    for r in &records {
        assert_eq!(fx.store.get(account_of(r), r.id).await?, Some(json(r)?));
    }
    let written = flaky.interceptor().written();
    assert_in_order_per_account(&written);
    assert_eq!(
        written.iter().map(|(_, _, id)| *id).collect::<Vec<_>>(),
        records.iter().map(|r| r.id).collect::<Vec<_>>()
    );
    Ok(())
}

/// A spool segment copied aside and put back after retention deleted its records: replayed,
/// they would be chained again as new. Records older than the retention period are not
/// stored from the spool; they are counted and reported by a gap record.
async fn a_spooled_record_older_than_the_retention_period_is_not_stored<S: ChainedStore>(
    fx: &Fixture<S>,
) -> TestResult {
    let spool = tempfile::tempdir()?;
    let flaky = flaky_store(fx.store.clone());
    flaky.interceptor().set_down(true);
    let now = audit_layer::record::Timestamp::now().unix_millis();
    let old = record(Some("acc_old"), now - 40 * 86_400_000);
    let fresh = record(Some("acc_old"), now - 60_000);
    {
        let (sink, worker) = start(fast(flaky.clone()).spool(spool.path(), 1 << 20)).await?;
        submit_all(&sink, &[old.clone(), fresh.clone()]);
        stop(&sink, worker).await?;
    }
    flaky.interceptor().set_down(false);
    let (sink, worker) = start(
        fast(flaky.clone())
            .spool(spool.path(), 1 << 20)
            .retention(Some(Duration::from_secs(30 * 86_400))),
    )
    .await?;
    eventually("the spool to be replayed", || sink.is_available()).await?;
    let m = stop(&sink, worker).await?;
    assert_eq!((m.replayed, m.dropped), (1, 1), "{m:?}");
    assert_eq!(
        fx.store.get("acc_old", fresh.id).await?,
        Some(json(&fresh)?)
    );
    assert_eq!(fx.store.get("acc_old", old.id).await?, None);
    let gaps = fx.db.gap_rows().await?;
    assert_eq!(gaps.len(), 1, "the drop is reported");
    Ok(())
}

async fn queue_overflow_counts_drops_and_writes_a_gap_record<S: ChainedStore>(
    fx: &Fixture<S>,
) -> TestResult {
    let records: Vec<AuditRecord> = (0..31)
        .map(|i| record(Some("acc_q"), BASE_MS + i))
        .collect();
    // The first record is taken off the queue and its write hangs...
    let (flaky, sink, worker) =
        with_a_hung_write(fx, |pipeline| pipeline.queue_capacity(10), &records[0]).await?;
    // ...so of the next 30, the queue holds 10 and the other 20 are dropped.
    submit_all(&sink, &records[1..]);
    let m = sink.metrics();
    assert_eq!((m.enqueued, m.dropped, m.queue_depth), (11, 20, 10));
    assert_eq!(fx.store.count().await?, 0);

    flaky.interceptor().release();
    until_count(&fx.store, 12).await?;
    let m = stop(&sink, worker).await?;
    assert_eq!(counts(&m), (11, 11, 0, 0, 0, 20, 1));
    assert_eq!(fx.store.count().await?, 12);
    for r in &records[..11] {
        assert_eq!(fx.store.get("acc_q", r.id).await?, Some(json(r)?));
    }
    for r in &records[11..] {
        assert_eq!(fx.store.get("acc_q", r.id).await?, None);
    }
    let gaps = fx.db.gap_rows().await?;
    assert_eq!(gaps.len(), 1);
    assert_gap(&gaps[0], "acc_q", 20, BASE_MS + 11, BASE_MS + 30)?;
    assert_eq!(
        fx.store.get("acc_q", gaps[0].id).await?.as_ref(),
        Some(&gaps[0].record)
    );
    Ok(())
}

/// With a spool, a burst beyond the queue is not dropped: it waits on disk and is stored once
/// the queue has room, with bounded memory (queue plus the overflow buffer).
async fn a_full_queue_overflows_to_the_spool_and_loses_nothing<S: ChainedStore>(
    fx: &Fixture<S>,
) -> TestResult {
    let dir = tempfile::tempdir()?;
    let records: Vec<AuditRecord> = (0..500)
        .map(|i| record(Some(["acc_o1", "acc_o2"][i % 2]), BASE_MS + i as i64))
        .collect();
    let configure = |pipeline: PipelineBuilder<_>| {
        pipeline
            .queue_capacity(10)
            .batch_size(10)
            .spool(dir.path(), 64 * 1024 * 1024)
    };
    let (flaky, sink, worker) = with_a_hung_write(fx, configure, &records[0]).await?;
    // The database takes nothing: the queue fills with 10, the other 489 overflow.
    for r in &records[1..] {
        sink.submit(r.clone());
        if sink.metrics().overflowed % 64 == 0 {
            tokio::task::yield_now().await;
        }
    }
    eventually("the overflow to reach the spool", || {
        sink.metrics().spooled == 489
    })
    .await?;
    let m = sink.metrics();
    assert_eq!(
        (m.enqueued, m.overflowed, m.dropped),
        (500, 489, 0),
        "{m:?}"
    );
    assert_eq!(m.queue_depth, 10);
    assert!(m.spool_bytes > 0);
    assert!(
        sink.is_available(),
        "an overflow is not an outage: strict requests go on"
    );

    flaky.interceptor().release();
    until_count(&fx.store, 500).await?;
    let m = stop(&sink, worker).await?;
    assert_eq!(counts(&m), (500, 500, 0, 489, 489, 0, 0), "{m:?}");
    assert_eq!(m.spool_bytes, 0);
    for r in &records {
        assert_eq!(fx.store.get(account_of(r), r.id).await?, Some(json(r)?));
    }
    assert!(fx.db.gap_rows().await?.is_empty());
    Ok(())
}

async fn retention_deletes_what_is_older_than_the_period<S: ChainedStore>(
    fx: &Fixture<S>,
) -> TestResult {
    let now = Timestamp::now().unix_millis();
    let day = 86_400_000;
    let (sink, worker) = start(
        fast(fx.store.clone())
            .retention(Some(Duration::from_secs(30 * 86_400)))
            .retention_interval(Duration::from_millis(50)),
    )
    .await?;
    let old: Vec<AuditRecord> = (0..40)
        .map(|i| record(Some("acc_r"), now - 45 * day + i))
        .collect();
    let young: Vec<AuditRecord> = (0..25)
        .map(|i| record(Some("acc_r"), now - 29 * day + i))
        .collect();
    submit_all(&sink, &old);
    submit_all(&sink, &young);
    // Under load, retention's first round ran while the batch was being inserted: it found
    // the old month empty, then dropped it once the insert committed, its 40 records
    // uncounted (and, chained, cut from their chain). The month is locked before it is read.
    eventually("retention to delete the old records", || {
        sink.metrics().expired == 40
    })
    .await
    .map_err(|e| format!("{e}: {:?}", sink.metrics()))?;
    let m = stop(&sink, worker).await?;
    assert_eq!((m.stored, m.expired), (65, 40));
    assert_eq!(fx.store.count().await?, 25);
    for r in &young {
        assert!(fx.store.get("acc_r", r.id).await?.is_some());
    }
    Ok(())
}

/// A process killed with records in memory leaves its running mark in the spool directory;
/// the next start reports what the mark says it held with a gap record. A clean stop leaves
/// no mark.
#[tokio::test]
async fn a_killed_pipeline_is_reported_at_the_next_start() -> TestResult {
    let fx = common::sqlite().await?;
    let dir = tempfile::tempdir()?;
    // A clean run: the mark exists while running and is gone after shutdown.
    let (sink, worker) = start(fast(fx.store.clone()).spool(dir.path(), 1 << 20)).await?;
    let mark = dir.path().join("RUNNING");
    eventually("the running mark", || mark.exists()).await?;
    sink.submit(record(Some("acc_k"), BASE_MS));
    let m = stop(&sink, worker).await?;
    assert_eq!((m.stored, m.unclean_restarts), (1, 0));
    assert!(!mark.exists(), "a clean stop leaves no mark");

    // What a SIGKILL leaves: the last mark, 40 records in memory, 2 arriving.
    std::fs::write(
        &mark,
        r#"{"noted_ms":1741597200000,"in_memory":40,"arrivals":2}"#,
    )?;
    let (sink, worker) = start(fast(fx.store.clone()).spool(dir.path(), 1 << 20)).await?;
    until_count(&fx.store, 2).await?;
    let m = stop(&sink, worker).await?;
    assert_eq!((m.unclean_restarts, m.gap_records), (1, 1), "{m:?}");
    let gaps = fx.db.gap_rows().await?;
    assert_eq!(gaps.len(), 1);
    let gap: serde_json::Value = serde_json::from_str(&gaps[0].record)?;
    assert_eq!(gap["resource"]["request"]["lost"], 42, "{gap}");
    assert_eq!(
        gap["resource"]["request"]["first"],
        "2025-03-10T09:00:00.000Z"
    );
    assert!(
        gap.get("account").is_none_or(serde_json::Value::is_null),
        "{gap}"
    );
    assert!(!mark.exists());

    // A mark that does not read as one (overwritten to hide what the process held) still
    // says the process was killed.
    std::fs::write(&mark, "not a mark")?;
    let (sink, worker) = start(fast(fx.store.clone()).spool(dir.path(), 1 << 20)).await?;
    let m = stop(&sink, worker).await?;
    assert_eq!(m.unclean_restarts, 1, "{m:?}");
    assert!(!mark.exists());
    fx.teardown().await
}

async fn shutdown_flushes_a_full_queue<S: ChainedStore>(fx: &Fixture<S>) -> TestResult {
    let (sink, worker) =
        start(fast(fx.store.clone()).queue_capacity(5_000).batch_size(500)).await?;
    let records: Vec<AuditRecord> = (0..5_000)
        .map(|i| {
            record(
                Some(["acc_s1", "acc_s2", "acc_s3"][i % 3]),
                BASE_MS + i as i64,
            )
        })
        .collect();
    submit_all(&sink, &records);
    let m = sink.metrics();
    assert_eq!((m.enqueued, m.dropped), (5_000, 0));
    // Shutdown right away, with the queue (nearly) full.
    let m = stop(&sink, worker).await?;
    assert_eq!(counts(&m), (5_000, 5_000, 0, 0, 0, 0, 0));
    assert_eq!(m.queue_depth, 0);
    assert_eq!(fx.store.count().await?, 5_000);
    for r in records.iter().step_by(499) {
        assert_eq!(fx.store.get(account_of(r), r.id).await?, Some(json(r)?));
    }
    Ok(())
}

/// With backpressure, a queue three-quarters full holds requests back (no overflow, no drop)
/// until a writer takes a batch off it; a wait ends at its limit, or at shutdown.
async fn backpressure_holds_requests_until_a_writer_takes_a_batch<S: ChainedStore>(
    fx: &Fixture<S>,
) -> TestResult {
    let dir = tempfile::tempdir()?;
    let records: Vec<AuditRecord> = (0..20)
        .map(|i| record(Some("acc_b"), BASE_MS + i))
        .collect();
    let configure = |pipeline: PipelineBuilder<_>| {
        pipeline
            .queue_capacity(8)
            .batch_size(4)
            .spool(dir.path(), 64 * 1024 * 1024)
            .backpressure(Duration::from_secs(60))
    };
    let (flaky, sink, worker) = with_a_hung_write(fx, configure, &records[0]).await?;
    // Room while fewer than 6 (three quarters of 8) are queued.
    for r in &records[1..7] {
        assert!(sink.backpressure().is_none(), "{:?}", sink.metrics());
        sink.submit(r.clone());
    }
    let Some(wait) = sink.backpressure() else {
        return Err("six queued records of eight: requests wait".into());
    };
    let waiting = tokio::spawn(wait);
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(!waiting.is_finished(), "no writer took a batch yet");

    // The hanging write ends; the writer takes the next batch of four and wakes the request.
    flaky.interceptor().release();
    tokio::time::timeout(Duration::from_secs(10), waiting).await??;
    let m = sink.metrics();
    assert_eq!((m.waited, m.waits_timed_out), (1, 0), "{m:?}");
    until_count(&fx.store, 7).await?;

    // A wait that outlasts its limit lets the request go on; the record still finds room.
    let (short, short_worker) = start(
        fast(flaky.clone())
            .queue_capacity(4)
            .batch_size(1)
            .backpressure(Duration::from_millis(30)),
    )
    .await?;
    flaky.interceptor().hold();
    short.submit(records[7].clone());
    eventually("the write to hang", || flaky.interceptor().waiting() >= 1).await?;
    for r in &records[8..11] {
        short.submit(r.clone());
    }
    let Some(wait) = short.backpressure() else {
        return Err("a full queue holds requests back".into());
    };
    tokio::time::timeout(Duration::from_secs(10), wait).await?;
    let m = short.metrics();
    assert_eq!((m.waited, m.waits_timed_out), (1, 1), "{m:?}");

    // Shutdown wakes whoever waits, at once.
    let Some(wait) = short.backpressure() else {
        return Err("still full".into());
    };
    let waiting = tokio::spawn(wait);
    let stopping = {
        let short = short.clone();
        tokio::spawn(async move { short.shutdown().await })
    };
    tokio::time::timeout(Duration::from_secs(10), waiting).await??;
    flaky.interceptor().release();
    stopping.await?;
    short_worker.await?;
    let m = stop(&sink, worker).await?;
    assert_eq!((m.dropped, m.overflowed), (0, 0), "{m:?}");
    until_count(&fx.store, 11).await?;
    for r in &records[..11] {
        assert_eq!(fx.store.get("acc_b", r.id).await?, Some(json(r)?));
    }
    Ok(())
}

/// A directory whose name for `acc_poison` holds a NUL character (legal in a Rust string and
/// in JSON, where it is escaped, but not in a PostgreSQL text column).
struct NulNames;

impl Directory for NulNames {
    fn account_name<'a>(&'a self, account_id: &'a str) -> Lookup<'a> {
        Box::pin(
            async move { Ok((account_id == "acc_poison").then(|| "Evil\u{0}Corp".to_owned())) },
        )
    }

    fn zone_name<'a>(&'a self, _: &'a str) -> Lookup<'a> {
        Box::pin(async { Ok(None) })
    }
}

/// One record the database refuses must not hold back every record after it (a poison
/// batch retried or replayed forever).
async fn unstorable_record_does_not_block_the_pipeline<S: ChainedStore>(
    fx: &Fixture<S>,
) -> TestResult {
    let spool = tempfile::tempdir()?;
    let (sink, worker) = start(
        fast(fx.store.clone())
            .directory(NulNames)
            .spool(spool.path(), 1 << 20),
    )
    .await?;
    let poison = record(Some("acc_poison"), BASE_MS);
    let others: Vec<AuditRecord> = (1..11)
        .map(|i| record(Some("acc_ok"), BASE_MS + i))
        .collect();
    sink.submit(poison);
    submit_all(&sink, &others);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
    let mut stored = 0;
    while tokio::time::Instant::now() < deadline {
        stored = 0;
        for r in &others {
            if fx.store.get("acc_ok", r.id).await?.is_some() {
                stored += 1;
            }
        }
        if stored == others.len() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let m = stop(&sink, worker).await?;
    assert_eq!(
        stored,
        others.len(),
        "{}: records behind an unstorable one were not stored within 3 s: {m:?}",
        fx.backend
    );
    // The refused record is accounted for: stored (sanitized) or dropped, never in limbo.
    assert_eq!(m.stored + m.dropped, 11, "{m:?}");
    Ok(())
}

/// A record PostgreSQL's indexes cannot hold: an account id of 6,000 random characters (the
/// layer never records one; an app building its own events might), "index row size exceeds
/// btree maximum" (SQLSTATE class 54). That refusal is the record's, not the database's: the
/// batch is written row by row, that record dropped and reported by a gap record (of no
/// account: its own could not be stored either), and every other record stored. It was once
/// retried as an outage, holding its lane for good. An actor email of 6,000 characters (a
/// sign-in's claimed email, which the layer caps at 8 KiB) is stored whole in the JSON, its
/// column cut to its first bytes.
async fn a_record_too_large_for_an_index_is_refused_alone<S: ChainedStore>(
    fx: &Fixture<S>,
) -> TestResult {
    let spool = tempfile::tempdir()?;
    let (sink, worker) = start(fast(fx.store.clone()).spool(spool.path(), 1 << 20)).await?;
    let huge_account = common::Rng(7).hex(6000);
    let huge = record(Some(&huge_account), BASE_MS);
    let email = format!("{}@example.com", common::Rng(8).hex(6000));
    let mut long_email = record(Some("acc_ok"), BASE_MS + 1);
    long_email.actor.email = Some(email.clone());
    let others: Vec<AuditRecord> = (2..12)
        .map(|i| record(Some("acc_ok"), BASE_MS + i))
        .chain([long_email.clone()])
        .collect();
    sink.submit(huge.clone());
    submit_all(&sink, &others);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    let mut stored = 0;
    while stored < others.len() && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
        stored = 0;
        for r in &others {
            if fx.store.get("acc_ok", r.id).await?.is_some() {
                stored += 1;
            }
        }
    }
    let m = stop(&sink, worker).await?;
    assert_eq!(
        stored,
        others.len(),
        "{}: records beside one too large for an index were not stored within 5 s: {m:?}",
        fx.backend
    );
    let json = fx
        .store
        .get("acc_ok", long_email.id)
        .await?
        .expect("stored");
    assert!(json.contains(&email), "the JSON keeps the whole email");
    let (_, _, texts) = fx.db.columns(long_email.id).await?.expect("stored");
    let index = common::text_columns()
        .iter()
        .position(|c| *c == "actor_email")
        .expect("a text column");
    let column = texts[index].as_deref().unwrap_or_default();
    assert!(email.starts_with(column) && column.len() == 320, "{column}");
    // SQLite has no such limit and stores it; PostgreSQL refuses it, and says so.
    if fx.backend == "postgres" {
        assert_eq!((m.stored, m.dropped, m.gap_records), (11, 1, 1), "{m:?}");
        assert!(fx.store.get(&huge_account, huge.id).await?.is_none());
    } else {
        assert_eq!(m.stored, 12, "{m:?}");
    }
    Ok(())
}

/// A directory whose names are a tenant's choice: a right-to-left override and a line
/// separator in acc_rtl's, 100 KB in zone z_long's.
struct HostileNames;

impl Directory for HostileNames {
    fn account_name<'a>(&'a self, account_id: &'a str) -> Lookup<'a> {
        Box::pin(async move {
            Ok((account_id == "acc_rtl").then(|| "Acme\u{202e}gpj.exe\u{2028}Corp".to_owned()))
        })
    }

    fn zone_name<'a>(&'a self, zone_id: &'a str) -> Lookup<'a> {
        Box::pin(async move { Ok((zone_id == "z_long").then(|| "z".repeat(100_000))) })
    }
}

/// Names from the directory are recorded as the layer records every string: invisible and
/// separator characters escaped, and at most the layer's default string cap with its marker.
async fn hostile_directory_names_are_escaped_and_capped<S: ChainedStore>(
    fx: &Fixture<S>,
) -> TestResult {
    let (sink, worker) = start(fast(fx.store.clone()).directory(HostileNames)).await?;
    let mut hostile = record(Some("acc_rtl"), BASE_MS);
    hostile.zone = Some(audit_layer::record::Zone {
        id: "z_long".to_owned(),
        name: None,
    });
    sink.submit(hostile.clone());
    let m = stop(&sink, worker).await?;
    assert_eq!(m.stored, 1, "{m:?}");
    let stored: serde_json::Value = serde_json::from_str(
        &fx.store
            .get("acc_rtl", hostile.id)
            .await?
            .ok_or("not stored")?,
    )?;
    assert_eq!(
        stored["account"]["name"], "Acme\\u{202e}gpj.exe\\u{2028}Corp",
        "{}",
        fx.backend
    );
    let zone = stored["zone"]["name"].as_str().ok_or("no zone name")?;
    assert!(
        zone.len() <= audit_layer::DEFAULT_STRING_LIMIT && zone.contains("…[truncated"),
        "{}: a zone name of {} bytes: {}…",
        fx.backend,
        zone.len(),
        &zone[..64]
    );
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// SQLite only
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn failing_directory_stores_records_without_names() -> TestResult {
    let fx = common::sqlite().await?;
    let broken = Broken::default();
    let (sink, worker) = start(fast(fx.store.clone()).directory(broken.clone())).await?;
    let records: Vec<AuditRecord> = (0..10)
        .map(|i| zoned_record("acc_f", "zone_f", BASE_MS + i))
        .collect();
    submit_all(&sink, &records);
    let m = stop(&sink, worker).await?;
    assert_eq!(counts(&m), (10, 10, 0, 0, 0, 0, 0));
    for r in &records {
        // Stored as submitted: no name, nothing dropped.
        assert_eq!(fx.store.get("acc_f", r.id).await?, Some(json(r)?));
    }
    // Failures are not cached: every record asked again, for its account and its zone.
    assert_eq!(broken.calls.load(Ordering::SeqCst), 20);
    fx.teardown().await
}

#[tokio::test]
async fn directory_is_asked_once_per_id_thanks_to_the_cache() -> TestResult {
    let fx = common::sqlite().await?;
    let names = Names::default();
    let (sink, worker) = start(fast(fx.store.clone()).directory(names.clone())).await?;
    let first: Vec<AuditRecord> = (0..100)
        .map(|i| zoned_record("acc_c", "zone_c", BASE_MS + i))
        .collect();
    submit_all(&sink, &first);
    until_count(&fx.store, 100).await?;
    // Later batches hit the cache too.
    let second: Vec<AuditRecord> = (100..200)
        .map(|i| zoned_record(["acc_c", "acc_d"][(i % 2) as usize], "zone_c", BASE_MS + i))
        .collect();
    submit_all(&sink, &second);
    let m = stop(&sink, worker).await?;
    assert_eq!(counts(&m), (200, 200, 0, 0, 0, 0, 0));
    assert_eq!(names.accounts.load(Ordering::SeqCst), 2, "acc_c and acc_d");
    assert_eq!(names.zones.load(Ordering::SeqCst), 1, "zone_c");
    for r in first.iter().chain(&second) {
        let stored = fx
            .store
            .get(account_of(r), r.id)
            .await?
            .ok_or("not stored")?;
        let back: AuditRecord = serde_json::from_str(&stored)?;
        let want = format!("Account {}", account_of(r));
        assert_eq!(back.account.and_then(|a| a.name), Some(want));
        assert_eq!(
            back.zone.and_then(|z| z.name).as_deref(),
            Some("zone_c.example.com")
        );
    }

    // Entries expire: past the TTL the directory is asked again.
    let names = Names::default();
    let (sink, worker) = start(
        fast(fx.store.clone())
            .directory(names.clone())
            .directory_cache(100, Duration::from_millis(300)),
    )
    .await?;
    sink.submit(record(Some("acc_ttl"), BASE_MS));
    sink.submit(record(Some("acc_ttl"), BASE_MS + 1));
    until_count(&fx.store, 202).await?;
    assert_eq!(names.accounts.load(Ordering::SeqCst), 1);
    tokio::time::sleep(Duration::from_millis(600)).await;
    sink.submit(record(Some("acc_ttl"), BASE_MS + 2));
    stop(&sink, worker).await?;
    assert_eq!(fx.store.count().await?, 203);
    assert_eq!(names.accounts.load(Ordering::SeqCst), 2);
    fx.teardown().await
}

#[tokio::test]
async fn spool_over_budget_counts_drops_and_writes_a_gap_record() -> TestResult {
    let fx = common::sqlite().await?;
    let spool = tempfile::tempdir()?;
    let flaky = flaky_store(fx.store.clone());
    flaky.interceptor().set_down(true);
    let records: Vec<AuditRecord> = (0..12)
        .map(|i| record(Some("acc_b"), BASE_MS + i))
        .collect();
    let line = spool_line_len(&records[0])?;
    for r in &records {
        assert_eq!(spool_line_len(r)?, line, "records of equal size");
    }
    // Room for exactly five one-record batches.
    let (sink, worker) = start(
        fast(flaky.clone())
            .batch_size(1)
            .spool(spool.path(), 5 * line),
    )
    .await?;
    submit_all(&sink, &records);
    eventually("all 12 records spooled or dropped", || {
        let m = sink.metrics();
        m.spooled + m.dropped == 12
    })
    .await?;
    let m = sink.metrics();
    assert_eq!(counts(&m), (12, 0, 0, 5, 0, 7, 0));
    assert_eq!(m.spool_bytes, 5 * line);
    assert_eq!(spool_segments(spool.path())?, (5, 5 * line));

    flaky.interceptor().set_down(false);
    eventually("the gap record", || sink.metrics().gap_records == 1).await?;
    let m = stop(&sink, worker).await?;
    assert_eq!(counts(&m), (12, 5, 0, 5, 5, 7, 1));
    assert_eq!(fx.store.count().await?, 6);
    for r in &records[..5] {
        assert_eq!(fx.store.get("acc_b", r.id).await?, Some(json(r)?));
    }
    let gaps = fx.db.gap_rows().await?;
    assert_eq!(gaps.len(), 1);
    assert_gap(&gaps[0], "acc_b", 7, BASE_MS + 5, BASE_MS + 11)?;
    fx.teardown().await
}

/// A directory that panics for one account.
struct Panicky;

impl Directory for Panicky {
    fn account_name<'a>(&'a self, account_id: &'a str) -> Lookup<'a> {
        assert_ne!(account_id, "acc_panic", "test directory panics on purpose");
        Box::pin(async { Ok(None) })
    }

    fn zone_name<'a>(&'a self, _: &'a str) -> Lookup<'a> {
        Box::pin(async { Ok(None) })
    }
}

/// The directory is application code: if it panics, the record is stored without the name
/// (or at least counted as dropped) and ingestion goes on.
#[tokio::test]
async fn panicking_directory_does_not_stop_ingestion() -> TestResult {
    let fx = common::sqlite().await?;
    let (sink, worker) = start(fast(fx.store.clone()).directory(Panicky)).await?;
    let victim = record(Some("acc_panic"), BASE_MS);
    sink.submit(victim.clone());
    tokio::time::sleep(Duration::from_millis(50)).await;
    let after: Vec<AuditRecord> = (1..11)
        .map(|i| record(Some("acc_fine"), BASE_MS + i))
        .collect();
    submit_all(&sink, &after);
    let m = stop(&sink, worker).await?;
    let mut stored = 0;
    for r in &after {
        if fx.store.get("acc_fine", r.id).await?.is_some() {
            stored += 1;
        }
    }
    assert_eq!(stored, 10, "records after the panic were lost: {m:?}");
    assert_eq!(m.stored + m.dropped, 11, "{m:?}");
    fx.teardown().await
}

/// Drops counted while the database is down must still be reported (by a gap record) when
/// the process stops before the database comes back: "nothing is dropped silently".
#[tokio::test]
async fn drops_during_an_outage_are_reported_after_a_restart() -> TestResult {
    let fx = common::sqlite().await?;
    let spool = tempfile::tempdir()?;
    let flaky = flaky_store(fx.store.clone());
    flaky.interceptor().set_down(true);
    let records: Vec<AuditRecord> = (0..5).map(|i| record(Some("acc_g"), BASE_MS + i)).collect();
    let budget = 2 * spool_line_len(&records[0])?;
    let (sink, worker) = start(
        fast(flaky.clone())
            .batch_size(1)
            .spool(spool.path(), budget),
    )
    .await?;
    submit_all(&sink, &records);
    let m = stop(&sink, worker).await?;
    assert_eq!(counts(&m), (5, 0, 0, 2, 0, 3, 0));

    flaky.interceptor().set_down(false);
    let (sink, worker) = start(fast(flaky.clone()).spool(spool.path(), budget)).await?;
    eventually("the spool to be replayed", || sink.metrics().replayed == 2).await?;
    tokio::time::sleep(Duration::from_millis(100)).await;
    stop(&sink, worker).await?;
    let gaps = fx.db.gap_rows().await?;
    assert_eq!(
        gaps.len(),
        1,
        "3 records were dropped before the restart, but no gap record says so"
    );
    assert_gap(&gaps[0], "acc_g", 3, BASE_MS + 2, BASE_MS + 4)?;
    fx.teardown().await
}

/// Strict mode must serve again soon after the database is back, while requests keep coming.
///
/// While degraded, every batch goes to the spool as a segment of its own, one per flush
/// interval. The replay used to write one segment per transaction and to leave the degraded
/// state only once it found the spool empty: when a transaction took longer than the lanes
/// took to append a segment (a slow or distant database: here 25 ms against a 5 ms flush
/// interval), the spool never emptied while records kept arriving, and strict mode refused
/// every request until the load stopped (30 s and more in the workspace's fault test
/// `strict_mode_serves_again_soon_after_the_audit_database_is_back`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pipeline_is_available_again_soon_while_records_keep_arriving() -> TestResult {
    let fx = common::sqlite().await?;
    let spool = tempfile::tempdir()?;
    let flaky = flaky_store(fx.store.clone());
    flaky.interceptor().set_down(true);
    let (sink, worker) = start(fast(flaky.clone()).spool(spool.path(), 64 << 20)).await?;

    // A steady load, one record every 2 ms over three accounts, until told to stop.
    let stop_load = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let load = {
        let sink = sink.clone();
        let stop_load = Arc::clone(&stop_load);
        tokio::spawn(async move {
            let mut sent = Vec::new();
            let mut ticks = tokio::time::interval(Duration::from_millis(2));
            while !stop_load.load(Ordering::Acquire) {
                ticks.tick().await;
                let i = sent.len();
                let r = record(
                    Some(["acc_r1", "acc_r2", "acc_r3"][i % 3]),
                    BASE_MS + i as i64,
                );
                sink.submit(r.clone());
                sent.push(r);
            }
            sent
        })
    };
    eventually("a backlog in the spool", || sink.metrics().spooled >= 300).await?;
    assert!(!sink.is_available());

    // The database is back, but every transaction takes 25 ms.
    flaky.interceptor().set_latency(Duration::from_millis(25));
    flaky.interceptor().set_down(false);
    let back = tokio::time::Instant::now();
    let limit = Duration::from_secs(5);
    while !sink.is_available() && back.elapsed() < limit {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let available_after = back.elapsed();
    eprintln!("available again {available_after:?} after the database came back");
    stop_load.store(true, Ordering::Release);
    let sent = load.await?;
    flaky.interceptor().set_latency(Duration::ZERO);
    let m = common::time_limit(common::TEST_TIMEOUT, async { stop(&sink, worker).await }).await?;
    assert!(
        available_after < limit,
        "still unavailable {available_after:?} after the database came back, with records \
         arriving all along: {m:?}"
    );

    // Nothing lost or doubled, the spool empty, and each account's records in order.
    assert_eq!(m.dropped, 0, "{m:?}");
    assert_eq!(m.stored, sent.len() as u64, "{m:?}");
    assert_eq!(fx.store.count().await?, sent.len() as u64);
    assert_eq!(spool_segments(spool.path())?, (0, 0));
    assert_in_order_per_account(&flaky.interceptor().written());
    Ok(())
}

/// PostgreSQL that cannot be reached at all at start-up: records go to the spool, the sink
/// says it is unavailable, and nothing panics or hangs.
#[tokio::test]
async fn postgres_unreachable_at_startup_spools() -> TestResult {
    let pool = PgPoolOptions::new()
        .acquire_timeout(Duration::from_millis(500))
        .connect_lazy("postgres://postgres@127.0.0.1:1/none")?;
    let store = PostgresStore::new(pool);
    assert!(store.ping().await.is_err());
    let spool = tempfile::tempdir()?;
    let (sink, worker) = start(
        fast(store)
            .retry(2, Duration::from_millis(1), Duration::from_millis(2))
            .probe_interval(Duration::from_millis(50))
            .spool(spool.path(), 1 << 20),
    )
    .await?;
    let records: Vec<AuditRecord> = (0..10)
        .map(|i| record(Some("acc_pg"), BASE_MS + i))
        .collect();
    submit_all(&sink, &records);
    eventually("10 records spooled", || sink.metrics().spooled == 10).await?;
    assert!(!sink.is_available());
    assert!(!AuditSink::is_available(&sink));
    let strict = record(Some("acc_pg"), BASE_MS + 10);
    assert_eq!(
        sink.commit(strict.clone()).await,
        Err(NotCommitted::Spooled)
    );

    let m = common::time_limit(common::TEST_TIMEOUT, async { stop(&sink, worker).await }).await;
    let m = m?;
    assert_eq!(counts(&m), (11, 0, 0, 11, 0, 0, 0));
    assert!(m.failed_writes >= 2, "{m:?}");
    let mut bytes = 0;
    for r in records.iter().chain([&strict]) {
        bytes += spool_line_len(r)?;
    }
    assert_eq!(m.spool_bytes, bytes);
    assert_eq!(spool_segments(spool.path())?.1, bytes);
    Ok(())
}
