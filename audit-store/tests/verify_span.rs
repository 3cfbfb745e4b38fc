//! Verifying a span of time (issue 18, "Span verification reads the span and its anchors"):
//! what it reads (the span and the records chained around it, not the whole account) and what
//! it finds (the last record of the span deleted, a record moved out of the span by editing
//! its time), on SQLite and PostgreSQL (`backend_tests!`).

#[macro_use]
mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use audit_store::chain::{ChainKeys, ChainSecret, Verifier};
use audit_store::model::{ChainRow, ChainScope, Direction, TimedLink};
use audit_store::store::intercept::{Intercepted, Interceptor};
use audit_store::store::{AuditStore, ChainedStore, LinkScan};
use audit_store::verify::{self, BreakKind, Outcome, Span, VerifyReport};
use futures_util::StreamExt as _;
use uuid::Uuid;

use common::{BASE_MS, Chainable, Fixture, TestResult, record, rows};

backend_tests!(
    limit = std::time::Duration::from_secs(120);
    a_span_is_read_around_itself_not_across_the_whole_account,
    the_last_record_of_a_span_deleted_is_found,
    a_record_moved_out_of_a_span_by_its_time_is_found,
    a_record_chained_in_a_span_with_an_old_time_is_found_where_it_is,
);

fn keys() -> ChainKeys {
    ChainKeys::from_secret(&ChainSecret::from_bytes([9; 32]))
}

fn public_only() -> Verifier {
    Verifier::public(keys().public_key())
}

const ACCOUNT: &str = "acc_span";
/// Records are one second apart: record `n` (from 1) is at `at(n)`.
fn at(n: i64) -> i64 {
    BASE_MS + (n - 1) * 1000
}

/// The span of records `first..=last`.
fn span(first: i64, last: i64) -> Span {
    Span {
        since_ms: Some(at(first)),
        before_ms: Some(at(last) + 1),
    }
}

/// A store that counts the links it reads for a verifier.
/// Counts the chain links verification reads, whichever way it reads them.
#[derive(Clone, Default)]
struct Links(Arc<AtomicU64>);

impl Links {
    fn counted<T>(&self, read: audit_store::Result<Vec<T>>) -> audit_store::Result<Vec<T>> {
        if let Ok(links) = &read {
            self.0.fetch_add(links.len() as u64, Ordering::SeqCst);
        }
        read
    }
}

impl Interceptor for Links {
    async fn chain_rows<S: ChainedStore>(
        &self,
        inner: &S,
        chain: &str,
        after: (i64, Uuid),
        limit: u32,
    ) -> audit_store::Result<Vec<ChainRow>> {
        self.counted(inner.chain_rows(chain, after, limit).await)
    }

    async fn chain_page<S: ChainedStore>(
        &self,
        inner: &S,
        chain: &str,
        span: (i64, i64),
        after: Option<(i64, Uuid)>,
        direction: Direction,
        limit: u32,
    ) -> audit_store::Result<Vec<TimedLink>> {
        self.counted(inner.chain_page(chain, span, after, direction, limit).await)
    }

    fn chain_scan<S: ChainedStore>(&self, inner: &S, scope: ChainScope) -> LinkScan {
        let links = Arc::clone(&self.0);
        inner
            .chain_scan(scope)
            .inspect(move |chunk| {
                if let Ok(chunk) = chunk {
                    links.fetch_add(chunk.len() as u64, Ordering::SeqCst);
                }
            })
            .boxed()
    }
}

/// A store whose chain reads are counted.
type Reading<S> = Intercepted<S, Links>;

/// `store`, its chain reads counted.
fn reading<S: ChainedStore>(store: S) -> Reading<S> {
    Intercepted::new(store, Links::default())
}

/// Links read since the last call.
fn take<S>(store: &Reading<S>) -> u64 {
    store.interceptor().0.swap(0, Ordering::SeqCst)
}

/// `n` records of [`ACCOUNT`], one second apart from `at(1)`, in batches of 100, then a
/// checkpoint.
async fn fill<S: ChainedStore>(store: &S, n: i64) -> TestResult {
    let records: Vec<_> = (1..=n).map(|i| record(Some(ACCOUNT), at(i))).collect();
    for chunk in records.chunks(100) {
        store.insert(&rows(chunk)?).await?;
    }
    store.checkpoint(at(n) + 60_000).await?;
    Ok(())
}

async fn check<S: ChainedStore>(
    store: &S,
    verifier: &Verifier,
    span: Span,
) -> TestResult<VerifyReport> {
    Ok(verify::verify(store, verifier, ACCOUNT, span, &[]).await?)
}

fn broken_at(report: &VerifyReport, seq: i64, kind: BreakKind) {
    let broken = report
        .broken
        .as_ref()
        .unwrap_or_else(|| panic!("expected a break at {seq}, got {report:?}"));
    assert_eq!((broken.seq, broken.kind), (seq, kind), "{broken}");
    assert_eq!(report.outcome, Outcome::Broken);
}

async fn a_span_is_read_around_itself_not_across_the_whole_account<S: Chainable>(
    fx: &Fixture<S>,
) -> TestResult {
    let store = reading(fx.store.with_chain(keys()));
    fill(&store, 3000).await?;
    take(&store);

    // Ten seconds in the middle: its 10 records, and the ones linking into and out of it.
    let report = check(&store, &keys().verifier(), span(1001, 1010)).await?;
    assert!(report.ok, "{report:?}");
    assert_eq!(
        (report.first_seq, report.last_seq, report.records),
        (Some(1000), Some(1011), 12)
    );
    let read = take(&store);
    assert!(read <= 40, "verifying 10 records read {read} of 3000");

    // The account's first and last seconds.
    for (first, last) in [(1, 10), (2991, 3000)] {
        let report = check(&store, &keys().verifier(), span(first, last)).await?;
        assert!(report.ok, "{report:?}");
        let read = take(&store);
        assert!(
            read <= 40,
            "verifying records {first} to {last} read {read} of 3000"
        );
    }
    // A span without records: the records around it link.
    let empty = Span {
        since_ms: Some(at(1500) + 1),
        before_ms: Some(at(1501)),
    };
    let report = check(&store, &keys().verifier(), empty).await?;
    assert!(report.broken.is_none(), "{report:?}");
    assert!(take(&store) <= 40);

    // Without the secret, only the checkpoint vouches for the span: the walk goes on to it.
    let report = check(&store, &public_only(), span(2981, 2990)).await?;
    assert!(report.ok, "{report:?}");
    assert_eq!((report.last_seq, report.checkpoints), (Some(3000), 1));
    let read = take(&store);
    assert!(read <= 80, "read {read} records of 3000");

    // The whole account, for comparison, reads every record.
    let report = check(&store, &keys().verifier(), Span::all()).await?;
    assert!(report.ok, "{report:?}");
    assert!(take(&store) >= 3000);
    Ok(())
}

async fn the_last_record_of_a_span_deleted_is_found<S: Chainable>(fx: &Fixture<S>) -> TestResult {
    let store = fx.store.with_chain(keys());
    fill(&store, 50).await?;
    fx.db
        .exec(&format!(
            "DELETE FROM audit_logs WHERE account_id = '{ACCOUNT}' AND chain_seq = 20"
        ))
        .await?;
    for verifier in [keys().verifier(), public_only()] {
        broken_at(
            &check(&store, &verifier, span(11, 20)).await?,
            20,
            BreakKind::Missing,
        );
    }
    // The first record of a span deleted.
    fx.db
        .exec(&format!(
            "DELETE FROM audit_logs WHERE account_id = '{ACCOUNT}' AND chain_seq = 31"
        ))
        .await?;
    broken_at(
        &check(&store, &keys().verifier(), span(31, 40)).await?,
        31,
        BreakKind::Missing,
    );
    // The newest record, last of its span, deleted with the head moved back: the checkpoint
    // vouches for it.
    fx.db
        .exec(&format!(
            "DELETE FROM audit_logs WHERE account_id = '{ACCOUNT}' AND chain_seq = 50"
        ))
        .await?;
    fx.db
        .exec(&format!(
            "UPDATE audit_chain_heads SET seq = 49 WHERE chain = '{ACCOUNT}'"
        ))
        .await?;
    let report = check(&store, &keys().verifier(), span(41, 50)).await?;
    broken_at(&report, 50, BreakKind::Truncated);
    Ok(())
}

async fn a_record_moved_out_of_a_span_by_its_time_is_found<S: Chainable>(
    fx: &Fixture<S>,
) -> TestResult {
    let store = fx.store.with_chain(keys());
    fill(&store, 60).await?;
    let moved = |seq: i64, to_ms: i64| {
        format!(
            "UPDATE audit_logs SET time_ms = {to_ms} WHERE account_id = '{ACCOUNT}' \
             AND chain_seq = {seq}"
        )
    };
    // The span's last record moved a day later, its first a day earlier, and one in the
    // middle of another span out of it.
    fx.db.exec(&moved(20, at(60) + 86_400_000)).await?;
    fx.db.exec(&moved(31, at(1) - 86_400_000)).await?;
    fx.db.exec(&moved(45, at(1) - 86_400_000)).await?;
    for verifier in [keys().verifier(), public_only()] {
        broken_at(
            &check(&store, &verifier, span(11, 20)).await?,
            20,
            BreakKind::Modified,
        );
        broken_at(
            &check(&store, &verifier, span(31, 40)).await?,
            31,
            BreakKind::Modified,
        );
    }
    broken_at(
        &check(&store, &keys().verifier(), span(41, 50)).await?,
        45,
        BreakKind::Modified,
    );
    Ok(())
}

async fn a_record_chained_in_a_span_with_an_old_time_is_found_where_it_is<S: Chainable>(
    fx: &Fixture<S>,
) -> TestResult {
    // A spool replay: record 21 carries the time of a request long before, but is chained
    // between records of the span.
    let store = reading(fx.store.with_chain(keys()));
    let mut records: Vec<_> = (1..=40).map(|i| record(Some(ACCOUNT), at(i))).collect();
    records[20] = record(Some(ACCOUNT), at(1) - 3_600_000);
    for record in &records {
        store.insert(&rows(std::slice::from_ref(record))?).await?;
    }
    store.checkpoint(at(40) + 60_000).await?;
    take(&store);
    let report = check(&store, &keys().verifier(), span(15, 25)).await?;
    assert!(report.ok, "{report:?}");
    assert_eq!((report.first_seq, report.last_seq), (Some(14), Some(26)));
    assert!(take(&store) <= 40);
    Ok(())
}
