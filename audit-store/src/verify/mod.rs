//! Walking chains: every record's link, seal and position, every checkpoint's signature.
//!
//! No index orders records by their place in a chain (it cost too much at ingest). The
//! verifier reads records in whatever order the database returns them cheaply: the whole
//! store in table order ([`verify_all`]), one account through its time index ([`verify`]),
//! a span and the records chained around it a page at a time outwards from it (`span`).
//! Each chain keeps its running state (the previous hash, the next expected sequence number)
//! and a reorder buffer of the records that arrived ahead of their turn: concurrent writers
//! commit in sequence order, but their records' ids and times interleave, and a record
//! replayed from a spool is stored among old ones with a new sequence number. Whatever is
//! still waiting in a buffer at the end is behind a gap: the missing record.

mod check;
mod external;
mod span;

use std::collections::HashMap;
use std::fmt;

use futures_util::StreamExt as _;
use serde::Serialize;

use crate::Result;
use crate::chain::Verifier;
use crate::model::{ChainScope, Checkpoint};
use crate::store::ChainedStore;
use check::ChainCheck;
pub use external::{CheckpointSource, ReadCheckpoints};

/// Records held in reorder buffers (all chains together) before the verifier looks up the
/// record a chain is waiting for instead of reading on: about 200 bytes each, so ~50 MB.
/// Only a deleted record, or far more out-of-order records than concurrent writers produce,
/// fill it.
const MAX_BUFFERED: usize = 250_000;

/// Which part of a chain to verify: the records whose time is in `[since_ms, before_ms)`
/// and everything chained between them. Unbounded sides reach the chain's ends.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Span {
    /// Records at or after this time (ms since the Unix epoch).
    pub since_ms: Option<i64>,
    /// Records before this time.
    pub before_ms: Option<i64>,
}

impl Span {
    /// The whole chain.
    pub fn all() -> Self {
        Self::default()
    }

    fn is_all(&self) -> bool {
        self.since_ms.is_none() && self.before_ms.is_none()
    }
}

/// How a chain is broken.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum BreakKind {
    /// The record does not match its chain hash: a column was changed, or the record was
    /// moved to another position.
    Modified,
    /// The record was chained at another position (its seal names that one): records were
    /// swapped, renumbered or copied.
    Moved,
    /// The chain hash is not sealed by the server's key: the record was inserted, or its
    /// hash rewritten, by someone without the secret.
    Forged,
    /// Sequence numbers are missing: records were deleted.
    Missing,
    /// Two records carry the same sequence number: one was inserted.
    Duplicate,
    /// The newest records are missing: a signed checkpoint (or the chain's head) vouches for
    /// more records than there are.
    Truncated,
    /// A checkpoint or anchor is not validly signed by a trusted key: it was changed, replaced
    /// or forged.
    BadCheckpoint,
    /// A validly signed checkpoint does not match the chain: records up to it were rewritten
    /// (hashes recomputed without the secret).
    CheckpointMismatch,
    /// The chain has records but no head row: it was deleted (the next write would start the
    /// chain over at 1).
    HeadMissing,
    /// Records of the account carry no link at all (no sequence number, hash or seal) though
    /// they are no older than its chain: rows written into the table past the chain, which
    /// the log would serve as genuine. The break's `seq` is 0: they have none.
    Unlinked,
}

impl BreakKind {
    /// The kind's name, as in the JSON report.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Modified => "modified",
            Self::Moved => "moved",
            Self::Forged => "forged",
            Self::Missing => "missing",
            Self::Duplicate => "duplicate",
            Self::Truncated => "truncated",
            Self::BadCheckpoint => "bad_checkpoint",
            Self::CheckpointMismatch => "checkpoint_mismatch",
            Self::HeadMissing => "head_missing",
            Self::Unlinked => "unlinked",
        }
    }
}

/// The first break of a chain.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Break {
    /// The first sequence number that does not verify.
    pub seq: i64,
    /// What is wrong there.
    pub kind: BreakKind,
    /// A sentence saying what was found.
    pub detail: String,
}

impl fmt::Display for Break {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "broken at sequence {} ({}): {}",
            self.seq,
            self.kind.as_str(),
            self.detail
        )
    }
}

/// What a verification concluded.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Every record checked links, and a validly signed checkpoint at or after the last of
    /// them vouches that none was deleted or rewritten.
    Ok,
    /// Nothing found broken, but no checkpoint covers (all of) what was checked: the newest
    /// records could have been deleted or (without the secret) rewritten, and nothing here
    /// could tell. See [`VerifyReport::unverifiable`].
    Unverifiable,
    /// A break: see [`VerifyReport::broken`].
    Broken,
}

impl Outcome {
    /// `ok`, `unverifiable` or `broken`, as in the JSON report.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::Unverifiable => "unverifiable",
            Self::Broken => "broken",
        }
    }
}

/// The outcome of verifying one account's chain.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct VerifyReport {
    /// The account (the chain's name).
    pub account_id: String,
    /// Whether everything verified: `outcome` is [`Outcome::Ok`].
    pub ok: bool,
    /// What the verification concluded.
    pub outcome: Outcome,
    /// Why the outcome is [`Outcome::Unverifiable`] (which records no checkpoint covers).
    pub unverifiable: Option<String>,
    /// Records whose link was checked.
    pub records: u64,
    /// The first and last sequence numbers checked.
    pub first_seq: Option<i64>,
    /// See `first_seq`.
    pub last_seq: Option<i64>,
    /// Signed checkpoints matched against the chain.
    pub checkpoints: u64,
    /// The newest validly signed checkpoint's sequence number and time (ms).
    pub latest_checkpoint: Option<(i64, i64)>,
    /// Where the chain starts after retention, if it was pruned (the anchor's sequence).
    pub anchored_at: Option<i64>,
    /// Whether every record's seal was checked (the verifier holds the secret).
    pub seals_checked: bool,
    /// Records newer than the newest checkpoint: linked, but vouched for by a signature only
    /// once the next checkpoint is made (and by their seals, when those were checked).
    pub after_latest_checkpoint: u64,
    /// The first break, if any.
    pub broken: Option<Break>,
}

/// Verifies the chain of `account_id` (`""`: records without an account) over `span`.
///
/// `external` are checkpoints kept outside the database (from a [`CheckpointSink`](crate::chain::CheckpointSink)):
/// they count like the stored ones, so deleting the newest records *and* the stored
/// checkpoints that vouch for them is still found.
///
/// The whole chain ([`Span::all`]) is read once, through the account's time index, and put
/// back into sequence order in memory: about what a query for all of the account's records
/// costs. A span reads its records and the records chained around it (the one before its
/// first, checked in full, and the one after its last; without the secret, on to the
/// checkpoint after it), a page at a time outwards through the time index: about what the
/// span holds, not the whole account. To verify every account, [`verify_all`] reads the store
/// once instead.
///
/// The report's [`outcome`](VerifyReport::outcome) is `ok` only where a validly signed
/// checkpoint covers what was checked; an account with no record and no checkpoint is
/// `unverifiable`, and one with records but no head row is broken
/// ([`BreakKind::HeadMissing`]).
///
/// ```no_run
/// use audit_store::chain::{ChainKeys, ChainSecret};
/// use audit_store::verify::{self, Span};
/// use audit_store::SqliteStore;
///
/// # async fn run(keys: ChainKeys) -> audit_store::Result<()> {
/// let store = SqliteStore::open("audit.db").await?.chained(keys.clone());
/// let report = verify::verify(&store, &keys.verifier(), "acc-1", Span::all(), &[]).await?;
/// match &report.broken {
///     None => println!("ok: {} records", report.records),
///     Some(b) => println!("{b}"),
/// }
/// # Ok(()) }
/// ```
///
/// # Errors
///
/// When the database fails, or the store does not support chains.
pub async fn verify<S: ChainedStore>(
    store: &S,
    verifier: &Verifier,
    account_id: &str,
    span: Span,
    external: &[Checkpoint],
) -> Result<VerifyReport> {
    let chain = account_id;
    // The head first: every record up to it was committed before the reads below start.
    let head = store.chain_head(chain).await?.map(|h| h.seq);
    let mut stored = store.checkpoints(chain).await?;
    stored.extend(external.iter().filter(|c| c.account_id == chain).cloned());
    let mut check = ChainCheck::new(chain.to_owned(), stored, verifier, head);
    check.head_looked_up(head);

    if span.is_all() {
        if check.expected <= check.last {
            let scope = ChainScope::Chain {
                chain: chain.to_owned(),
                first: check.floor,
                last: check.last,
            };
            let mut scan = store.chain_scan(scope);
            while let Some(chunk) = scan.next().await {
                for link in chunk? {
                    check.feed(link.row, verifier);
                }
                while check.buffer.len() > MAX_BUFFERED {
                    resolve_gap(store, &mut check, verifier).await?;
                }
            }
        }
    } else {
        span::walk(store, &mut check, verifier, span).await?;
    }
    if head.is_none() && check.report.records > 0 {
        // The chain's first records may have been committed after the head was read.
        let again = store.chain_head(chain).await?.map(|h| h.seq);
        check.head_looked_up(again);
    }
    let (since_ms, before_ms) = (
        span.since_ms.unwrap_or(i64::MIN),
        span.before_ms.unwrap_or(i64::MAX),
    );
    let unlinked = store.unlinked(chain, since_ms, before_ms).await?;
    Ok(with_unlinked(check.finish(), unlinked))
}

/// `report`, broken by `unlinked` records when it found nothing broken before them.
fn with_unlinked(mut report: VerifyReport, unlinked: u64) -> VerifyReport {
    if unlinked == 0 || report.broken.is_some() {
        return report;
    }
    report.broken = Some(Break {
        seq: 0,
        kind: BreakKind::Unlinked,
        detail: format!(
            "{unlinked} record(s) of this account carry no chain link though they are no older \
             than its chain or were committed after it began: they were written into the table \
             past the chain (the log serves them as genuine)"
        ),
    });
    report.outcome = Outcome::Broken;
    report.ok = false;
    report
}

/// Verifies every chain of the store in one pass over its records in table order (one
/// sequential read, every chain's state in memory), and returns one report per chain, in
/// the order of the chains' names: every chain with a head, a stored checkpoint or anchor, or
/// a record, and every chain named by an `external` checkpoint (which reveals a chain deleted
/// whole, head and all).
///
/// The records are read in one statement, so in one consistent snapshot; chains are verified
/// to at least the heads read just before it (records written while it runs may be checked
/// too). Memory: each chain's state, and the records waiting for their turn; should those
/// exceed a bound (250,000 records, from a deleted record or an unusually disordered table),
/// the record a chain waits for is looked up directly, on a second connection of the pool.
///
/// ```no_run
/// use audit_store::chain::ChainKeys;
/// use audit_store::verify;
/// use audit_store::SqliteStore;
///
/// # async fn run(keys: ChainKeys) -> audit_store::Result<()> {
/// let store = SqliteStore::open("audit.db").await?.chained(keys.clone());
/// for report in verify::verify_all(&store, &keys.verifier(), &[]).await? {
///     if let Some(b) = &report.broken {
///         println!("{:?}: {b}", report.account_id);
///     }
/// }
/// # Ok(()) }
/// ```
///
/// # Errors
///
/// When the database fails, or the store does not support chains.
pub async fn verify_all<S: ChainedStore>(
    store: &S,
    verifier: &Verifier,
    external: &[Checkpoint],
) -> Result<Vec<VerifyReport>> {
    let heads = store.chain_heads().await?;
    let mut statements: HashMap<String, Vec<Checkpoint>> = HashMap::new();
    for cp in store
        .all_checkpoints()
        .await?
        .into_iter()
        .chain(external.iter().cloned())
    {
        statements
            .entry(cp.account_id.clone())
            .or_default()
            .push(cp);
    }
    let mut checks: HashMap<String, ChainCheck> =
        HashMap::with_capacity(heads.len().max(statements.len()));
    for head in heads {
        let stored = statements.remove(&head.chain).unwrap_or_default();
        let mut check = ChainCheck::new(head.chain.clone(), stored, verifier, Some(head.seq));
        check.head_looked_up(Some(head.seq));
        checks.insert(head.chain, check);
    }
    for (chain, stored) in statements {
        let mut check = ChainCheck::new(chain.clone(), stored, verifier, None);
        check.head_looked_up(None);
        checks.insert(chain, check);
    }

    let mut buffered = 0usize;
    let mut scan = store.chain_scan(ChainScope::All);
    while let Some(chunk) = scan.next().await {
        for link in chunk? {
            let check = match checks.get_mut(&link.chain) {
                Some(check) => check,
                // A chain without head or statements: records whose head row was deleted.
                None => checks.entry(link.chain.clone()).or_insert_with(|| {
                    let mut check = ChainCheck::new(link.chain, Vec::new(), verifier, None);
                    check.head_looked_up(None);
                    check
                }),
            };
            let before = check.buffer.len();
            check.feed(link.row, verifier);
            buffered = buffered + check.buffer.len() - before;
        }
        while buffered > MAX_BUFFERED {
            let Some(check) = checks.values_mut().max_by_key(|c| c.buffer.len()) else {
                break;
            };
            let before = check.buffer.len();
            resolve_gap(store, check, verifier).await?;
            buffered = buffered + check.buffer.len() - before;
        }
    }
    for check in checks.values_mut() {
        if check.head().is_none() && check.report.records > 0 {
            // The chain's first records may have been committed after the heads were read.
            let again = store.chain_head(&check.report.account_id).await?;
            check.head_looked_up(again.map(|h| h.seq));
        }
    }
    // Rows without a link are not in the scan: one more pass finds the chains that have any
    // (none, as a rule), and those are counted precisely.
    let unlinked_chains = store.chains_with_unlinked().await?;
    let mut reports = Vec::with_capacity(checks.len());
    for check in checks.into_values() {
        let report = check.finish();
        let unlinked = if unlinked_chains.contains(&report.account_id) {
            store
                .unlinked(&report.account_id, i64::MIN, i64::MAX)
                .await?
        } else {
            0
        };
        reports.push(with_unlinked(report, unlinked));
    }
    reports.sort_by(|a, b| a.account_id.cmp(&b.account_id));
    Ok(reports)
}

/// Every chain there is evidence of: the accounts that hold records, the chains with a head
/// row, and the chains named by a stored or an `external` checkpoint, sorted. An account whose
/// head row was deleted, or whose records and head were, is still listed (the first by its
/// records, the second by its checkpoints).
///
/// # Errors
///
/// When the database fails.
pub async fn chains<S: ChainedStore>(store: &S, external: &[Checkpoint]) -> Result<Vec<String>> {
    let mut chains: std::collections::BTreeSet<String> =
        store.chains().await?.into_iter().collect();
    chains.extend(store.chain_heads().await?.into_iter().map(|h| h.chain));
    chains.extend(
        store
            .all_checkpoints()
            .await?
            .into_iter()
            .map(|c| c.account_id),
    );
    chains.extend(external.iter().map(|c| c.account_id.clone()));
    Ok(chains.into_iter().collect())
}

/// A chain is waiting for a record while more and more later ones pile up in its buffer:
/// looks that record up directly (reading the chain's records through the account index). Found,
/// the chain goes on (and the record is not counted again when the scan reaches it); not
/// found, it is missing.
async fn resolve_gap<S: ChainedStore>(
    store: &S,
    check: &mut ChainCheck,
    verifier: &Verifier,
) -> Result<()> {
    let at = check.expected;
    let mut scan = store.chain_scan(ChainScope::Chain {
        chain: check.report.account_id.clone(),
        first: at,
        last: at,
    });
    let mut found = Vec::new();
    while let Some(chunk) = scan.next().await {
        found.extend(chunk?.into_iter().map(|link| link.row));
    }
    if found.is_empty() {
        check.missing();
        return Ok(());
    }
    for row in found {
        let id = row.id;
        check.feed(row, verifier);
        check.looked_up.insert(id);
    }
    Ok(())
}
