//! Walking chains: every record's link, seal and position, every checkpoint's signature.
//!
//! No index orders records by their place in a chain (it cost too much at ingest). The
//! verifier reads records in whatever order the database returns them cheaply: the whole
//! store in table order ([`verify_all`]), one account through its time index ([`verify`]).
//! Each chain keeps its running state (the previous hash, the next expected sequence number)
//! and a reorder buffer of the records that arrived ahead of their turn: concurrent writers
//! commit in sequence order, but their records' ids and times interleave, and a record
//! replayed from a spool is stored among old ones with a new sequence number. Whatever is
//! still waiting in a buffer at the end is behind a gap: the missing record.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;

use futures_util::StreamExt as _;
use serde::Serialize;
use uuid::Uuid;

use super::{Checkpoint, CheckpointKind, GENESIS, Verifier, link, seal};
use crate::Result;
use crate::store::AuditStore;

/// Records held in reorder buffers (all chains together) before the verifier looks up the
/// record a chain is waiting for instead of reading on: about 200 bytes each, so ~50 MB.
/// Only a deleted record, or far more out-of-order records than concurrent writers produce,
/// fill it.
const MAX_BUFFERED: usize = 250_000;

/// Which links [`AuditStore::chain_scan`] reads.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ChainScope {
    /// Every chained record of the store.
    All,
    /// The records of one chain whose sequence numbers are in `first..=last`.
    Chain {
        /// The chain: the account id, `""` for records without an account.
        chain: String,
        /// The lowest sequence number read.
        first: i64,
        /// The highest sequence number read.
        last: i64,
    },
}

/// A link read by [`AuditStore::chain_scan`], with the chain it belongs to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScannedLink {
    /// The chain: the record's account id, `""` when it has none.
    pub chain: String,
    /// The link.
    pub row: ChainRow,
}

/// One stored link, as a verifier reads it: the digest of the record's columns is computed
/// by the store while it decodes the row.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChainRow {
    /// `chain_seq`.
    pub seq: i64,
    /// `id`: tells apart rows that share a sequence number.
    pub id: Uuid,
    /// The digest of the row's columns.
    pub digest: [u8; 32],
    /// `chain_hash` as stored.
    pub hash: Vec<u8>,
    /// `chain_seal` as stored.
    pub seal: Vec<u8>,
}

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

/// The outcome of verifying one account's chain.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct VerifyReport {
    /// The account (the chain's name).
    pub account_id: String,
    /// Whether everything verified.
    pub ok: bool,
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
/// `external` are checkpoints kept outside the database (from a [`CheckpointSink`](super::CheckpointSink)):
/// they count like the stored ones, so deleting the newest records *and* the stored
/// checkpoints that vouch for them is still found.
///
/// The account's records are read once, through the account's time index, and put back into
/// sequence order in memory: the cost is that of reading the whole account (a span too: a
/// record chained inside it may carry any time), about what a query for all of the
/// account's records costs. To verify every account, [`verify_all`] reads the store once
/// instead.
///
/// ```no_run
/// use audit_store::chain::{self, ChainKeys, ChainSecret, Span};
/// use audit_store::SqliteStore;
///
/// # async fn run(keys: ChainKeys) -> audit_store::Result<()> {
/// let store = SqliteStore::open("audit.db").await?.chained(keys.clone());
/// let report = chain::verify(&store, &keys.verifier(), "acc-1", Span::all(), &[]).await?;
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
pub async fn verify<S: AuditStore>(
    store: &S,
    verifier: &Verifier,
    account_id: &str,
    span: Span,
    external: &[Checkpoint],
) -> Result<VerifyReport> {
    let chain = account_id;
    // The head first: every record up to it was committed before the read below starts.
    let head = if span.is_all() {
        store.chain_head(chain).await?.map(|h| h.seq)
    } else {
        None
    };
    let mut stored = store.checkpoints(chain).await?;
    stored.extend(external.iter().filter(|c| c.account_id == chain).cloned());
    let mut check = ChainCheck::new(chain.to_owned(), stored, verifier, head);

    // Where to walk.
    if !span.is_all() {
        let window = store
            .chain_span(
                chain,
                span.since_ms.unwrap_or(i64::MIN),
                span.before_ms.unwrap_or(i64::MAX),
            )
            .await?;
        check.narrow(window);
    }
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
    Ok(check.finish())
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
/// use audit_store::chain::{self, ChainKeys};
/// use audit_store::SqliteStore;
///
/// # async fn run(keys: ChainKeys) -> audit_store::Result<()> {
/// let store = SqliteStore::open("audit.db").await?.chained(keys.clone());
/// for report in chain::verify_all(&store, &keys.verifier(), &[]).await? {
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
pub async fn verify_all<S: AuditStore>(
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
        let check = ChainCheck::new(head.chain.clone(), stored, verifier, Some(head.seq));
        checks.insert(head.chain, check);
    }
    for (chain, stored) in statements {
        let check = ChainCheck::new(chain.clone(), stored, verifier, None);
        checks.insert(chain, check);
    }

    let mut buffered = 0usize;
    let mut scan = store.chain_scan(ChainScope::All);
    while let Some(chunk) = scan.next().await {
        for link in chunk? {
            let check = match checks.get_mut(&link.chain) {
                Some(check) => check,
                // A chain without head or statements: records whose head row was deleted.
                None => checks
                    .entry(link.chain.clone())
                    .or_insert_with(|| ChainCheck::new(link.chain, Vec::new(), verifier, None)),
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
    let mut reports: Vec<VerifyReport> = checks.into_values().map(ChainCheck::finish).collect();
    reports.sort_by(|a, b| a.account_id.cmp(&b.account_id));
    Ok(reports)
}

/// A chain is waiting for a record while more and more later ones pile up in its buffer:
/// looks that record up directly (reading the chain's records through the account index). Found,
/// the chain goes on (and the record is not counted again when the scan reaches it); not
/// found, it is missing.
async fn resolve_gap<S: AuditStore>(
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

/// One chain being verified: what its signed statements say, where the walk is, and the
/// records that arrived ahead of their turn.
struct ChainCheck {
    report: VerifyReport,
    /// Validly signed checkpoints, by sequence number.
    checkpoints: Vec<Checkpoint>,
    /// The next checkpoint to match.
    next_cp: usize,
    breaks: Vec<Break>,
    /// Badly signed anchors: they move the chain's start, so they come first.
    bad_anchors: Vec<Break>,
    /// The chain hash before `expected`.
    prev: Vec<u8>,
    /// The next sequence number to check.
    expected: i64,
    /// Rows below it are not part of the walk (before the anchor, or the span).
    floor: i64,
    /// Rows above it are not part of the walk (after the span).
    last: i64,
    /// The row at `expected` gives the starting hash only (a span starting mid-chain).
    starts_mid_chain: bool,
    /// The chain's head when the walk started, if known.
    head: Option<i64>,
    /// Whether the whole chain is walked (not a span).
    whole: bool,
    /// Rows ahead of `expected`, by `(seq, id)`.
    buffer: BTreeMap<(i64, Uuid), ChainRow>,
    /// A break ended the walk: later rows are not checked.
    stopped: bool,
    /// Rows looked up ahead of the scan: when the scan reaches them they are skipped.
    looked_up: HashSet<Uuid>,
}

impl ChainCheck {
    /// Checks the chain's signed statements; the walk starts at the anchor (or the chain's
    /// first record) and covers the whole chain.
    fn new(chain: String, stored: Vec<Checkpoint>, verifier: &Verifier, head: Option<i64>) -> Self {
        let mut breaks: Vec<Break> = Vec::new();
        let mut checkpoints: Vec<Checkpoint> = Vec::new();
        let mut anchor: Option<Checkpoint> = None;
        let mut bad_anchors: Vec<Break> = Vec::new();
        for cp in stored {
            if !cp.is_signed_for(verifier) || cp.head.len() != 32 {
                // A forged anchor moves the chain's start: every later finding follows from it.
                let into = if cp.kind == CheckpointKind::Anchor {
                    &mut bad_anchors
                } else {
                    &mut breaks
                };
                into.push(Break {
                    seq: cp.seq,
                    kind: BreakKind::BadCheckpoint,
                    detail: format!(
                        "the {} for sequence {} dated {} ms is not validly signed by a trusted \
                         key (changed, replaced or forged)",
                        cp.kind.as_str(),
                        cp.seq,
                        cp.time_ms
                    ),
                });
                continue;
            }
            match cp.kind {
                CheckpointKind::Anchor => {
                    if anchor.as_ref().is_none_or(|a| a.seq < cp.seq) {
                        anchor = Some(cp);
                    }
                }
                CheckpointKind::Checkpoint => checkpoints.push(cp),
            }
        }
        checkpoints.sort_by_key(|c| (c.seq, c.time_ms));
        let latest_checkpoint = checkpoints.last().map(|c| (c.seq, c.time_ms));
        let (start, prev) = match &anchor {
            Some(a) => (a.seq + 1, a.head.clone()),
            None => (1, GENESIS.to_vec()),
        };
        Self {
            report: VerifyReport {
                account_id: chain,
                ok: false,
                records: 0,
                first_seq: None,
                last_seq: None,
                checkpoints: 0,
                latest_checkpoint,
                anchored_at: anchor.as_ref().map(|a| a.seq),
                seals_checked: verifier.checks_seals(),
                after_latest_checkpoint: 0,
                broken: None,
            },
            checkpoints,
            next_cp: 0,
            breaks,
            bad_anchors,
            prev,
            expected: start,
            floor: start,
            last: i64::MAX,
            starts_mid_chain: false,
            head,
            whole: true,
            buffer: BTreeMap::new(),
            stopped: false,
            looked_up: HashSet::new(),
        }
    }

    /// Narrows the walk to the records chained from the first to the last of a span
    /// (`chain_span`'s answer; `None`: no record in it).
    fn narrow(&mut self, window: Option<(i64, i64)>) {
        let start = self.expected;
        self.whole = false;
        let (first, last) = match window {
            None => (start, start - 1),
            Some((lo, hi)) => (lo.max(start), hi),
        };
        self.last = last;
        self.next_cp = self.checkpoints.partition_point(|c| c.seq < first);
        if first > start && first <= last {
            // Starting mid-chain: the previous record's hash is the starting point, and its
            // seal (when checked) vouches for it.
            self.starts_mid_chain = true;
            self.expected = first - 1;
        } else {
            self.expected = first;
        }
        self.floor = self.expected;
    }

    /// Takes one row, in any order.
    fn feed(&mut self, row: ChainRow, verifier: &Verifier) {
        if row.seq < self.floor || row.seq > self.last {
            return; // before the anchor or the span, or after the span
        }
        if row.seq < self.expected {
            if !self.looked_up.remove(&row.id) {
                self.duplicate(&row);
            }
            return;
        }
        if self.stopped {
            return;
        }
        if row.seq > self.expected {
            self.buffer.insert((row.seq, row.id), row);
            return;
        }
        self.check(row, verifier);
        self.drain(verifier);
    }

    /// Checks the buffered rows that are now in turn.
    fn drain(&mut self, verifier: &Verifier) {
        while let Some(entry) = self.buffer.first_entry() {
            let seq = entry.key().0;
            if seq < self.expected {
                let row = entry.remove();
                self.duplicate(&row);
            } else if seq == self.expected && !self.stopped {
                let row = entry.remove();
                self.check(row, verifier);
            } else {
                break;
            }
        }
        if self.stopped {
            self.buffer.clear();
        }
    }

    /// A second row at a sequence number already checked: an inserted record.
    fn duplicate(&mut self, row: &ChainRow) {
        if self.breaks.iter().any(|b| b.seq <= row.seq) {
            return; // an earlier break is what the report names
        }
        self.breaks.push(Break {
            seq: row.seq,
            kind: BreakKind::Duplicate,
            detail: format!("two records carry sequence {} (one is {})", row.seq, row.id),
        });
    }

    /// The record at `expected` is not there: the walk ends.
    fn missing(&mut self) {
        let expected = self.expected;
        let next = self.buffer.first_key_value().map(|((seq, _), _)| *seq);
        self.breaks.push(Break {
            seq: expected,
            kind: BreakKind::Missing,
            detail: match next {
                Some(next) if next > expected + 1 => {
                    format!("records {expected} to {} are missing", next - 1)
                }
                _ => format!("record {expected} is missing"),
            },
        });
        self.stopped = true;
        self.buffer.clear();
    }

    /// Checks the row at `expected`.
    fn check(&mut self, row: ChainRow, verifier: &Verifier) {
        let chain = self.report.account_id.as_str();
        if self.starts_mid_chain {
            self.starts_mid_chain = false;
            if let Some(key) = verifier.seal_key()
                && row.seal != seal(key, chain, row.seq, &row.hash)
            {
                self.breaks.push(forged(row.seq));
            }
            self.prev = row.hash;
            self.expected += 1;
            return;
        }
        let hash = link(&self.prev, chain, row.seq, &row.digest);
        let sealed = verifier
            .seal_key()
            .map(|key| row.seal == seal(key, chain, row.seq, &row.hash));
        if row.hash != hash || sealed == Some(false) {
            self.breaks
                .push(classify(verifier, chain, &row, row.hash == hash));
            self.stopped = true;
            return;
        }
        while let Some(cp) = self
            .checkpoints
            .get(self.next_cp)
            .filter(|c| c.seq <= row.seq)
        {
            if cp.seq == row.seq {
                if cp.head != hash {
                    self.breaks.push(Break {
                        seq: row.seq,
                        kind: BreakKind::CheckpointMismatch,
                        detail: format!(
                            "the checkpoint dated {} ms vouches for another record {}: \
                             records up to {} were rewritten",
                            cp.time_ms, row.seq, row.seq
                        ),
                    });
                    self.stopped = true;
                    return;
                }
                self.report.checkpoints += 1;
            }
            self.next_cp += 1;
        }
        self.prev.clear();
        self.prev.extend_from_slice(&hash);
        self.report.first_seq.get_or_insert(row.seq);
        self.report.last_seq = Some(row.seq);
        self.report.records += 1;
        self.expected += 1;
    }

    /// The report, once every row was fed.
    fn finish(mut self) -> VerifyReport {
        if !self.stopped && !self.buffer.is_empty() {
            // Later records were there, the one in turn never came.
            self.missing();
        }
        // Truncation: signed statements (and the head) vouch for records that are not there.
        if self
            .breaks
            .iter()
            .all(|b| b.kind == BreakKind::BadCheckpoint)
        {
            let walked_to = self.expected - 1;
            let vouched = self
                .checkpoints
                .iter()
                .filter(|c| c.seq <= self.last)
                .max_by_key(|c| c.seq);
            if let Some(cp) = vouched.filter(|c| c.seq > walked_to) {
                let by = format!("a checkpoint dated {} ms", cp.time_ms);
                self.breaks.push(truncated(walked_to, cp.seq, &by));
            } else if self.whole
                && let Some(head) = self.head.filter(|&h| h > walked_to)
            {
                self.breaks
                    .push(truncated(walked_to, head, "the chain's head"));
            }
        }
        let report = &mut self.report;
        report.after_latest_checkpoint = match report.latest_checkpoint {
            Some((seq, _)) => report
                .last_seq
                .map_or(0, |l| u64::try_from(l - seq).unwrap_or(0)),
            None => report.records,
        };
        report.broken = match self.bad_anchors.into_iter().min_by_key(|b| b.seq) {
            Some(anchor) => Some(anchor),
            None => self.breaks.into_iter().min_by_key(|b| b.seq),
        };
        report.ok = report.broken.is_none();
        self.report
    }
}

/// How far from its position a record's seal is looked for, to tell a moved record from a
/// forged one. Only on the failure path: at most twice this many HMACs.
const MOVED_WINDOW: i64 = 10_000;

/// Names the break at a record that does not verify at its position.
fn classify(verifier: &Verifier, chain: &str, row: &ChainRow, links: bool) -> Break {
    let Some(key) = verifier.seal_key() else {
        // Without the secret, a hash that does not link says only that something changed.
        return modified(
            row,
            "a stored column was changed, or the record was moved here",
        );
    };
    if row.seal == seal(key, chain, row.seq, &row.hash) {
        // An authentic hash for this very position, over other content.
        return modified(row, "a stored column was changed");
    }
    if links {
        // The link is right but unsealed: recomputed by someone without the secret.
        return forged(row.seq);
    }
    let lo = row.seq.saturating_sub(MOVED_WINDOW).max(1);
    let hi = row.seq.saturating_add(MOVED_WINDOW);
    match (lo..=hi).find(|&at| at != row.seq && row.seal == seal(key, chain, at, &row.hash)) {
        Some(at) => Break {
            seq: row.seq,
            kind: BreakKind::Moved,
            detail: format!(
                "record {} ({}) was chained at sequence {at}: records were swapped, \
                 renumbered or copied",
                row.seq, row.id
            ),
        },
        None => forged(row.seq),
    }
}

fn modified(row: &ChainRow, why: &str) -> Break {
    Break {
        seq: row.seq,
        kind: BreakKind::Modified,
        detail: format!(
            "record {} ({}) does not match its chain hash: {why}",
            row.seq, row.id
        ),
    }
}

fn forged(seq: i64) -> Break {
    Break {
        seq,
        kind: BreakKind::Forged,
        detail: format!(
            "the chain hash of record {seq} is not sealed by this server's key: the record was \
             inserted, or its hash rewritten, without the secret"
        ),
    }
}

fn truncated(walked_to: i64, vouched: i64, by: &str) -> Break {
    let first = walked_to + 1;
    Break {
        seq: first,
        kind: BreakKind::Truncated,
        detail: if first == vouched {
            format!("the newest record {first} is missing ({by} vouches for it)")
        } else {
            format!("the newest records {first} to {vouched} are missing ({by} vouches for them)")
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chain::{ChainKeys, ChainSecret, link_rows, row_digest};
    use crate::row::StoredRecord;

    fn keys() -> ChainKeys {
        ChainKeys::from_secret(&ChainSecret::from_bytes([3; 32]))
    }

    /// `n` records of chain `a`, linked, as a verifier reads them back.
    fn chain(n: u128) -> Vec<ChainRow> {
        let rows: Vec<StoredRecord> = (1..=n)
            .map(|i| StoredRecord {
                time_ms: i as i64,
                raw_ray_id: format!("r{i}"),
                ..crate::chain::tests::row(i, Some("a"))
            })
            .collect();
        let links = link_rows(&keys(), &mut HashMap::new(), &rows);
        rows.iter()
            .zip(links)
            .map(|(r, l)| ChainRow {
                seq: l.seq,
                id: r.id,
                digest: row_digest(r),
                hash: l.hash.to_vec(),
                seal: l.seal.to_vec(),
            })
            .collect()
    }

    fn run(rows: impl IntoIterator<Item = ChainRow>) -> VerifyReport {
        let verifier = keys().verifier();
        let mut check = ChainCheck::new("a".into(), Vec::new(), &verifier, Some(10));
        for row in rows {
            check.feed(row, &verifier);
        }
        check.finish()
    }

    #[test]
    fn any_arrival_order_verifies_and_the_buffer_empties() {
        let rows = chain(10);
        // Reversed, interleaved, and the first record last.
        let orders: [Vec<usize>; 3] = [
            (0..10).rev().collect(),
            vec![5, 6, 7, 8, 9, 0, 1, 2, 3, 4],
            vec![1, 2, 3, 4, 5, 6, 7, 8, 9, 0],
        ];
        for order in orders {
            let report = run(order.iter().map(|&i| rows[i].clone()));
            assert!(report.ok, "{order:?}: {report:?}");
            assert_eq!((report.records, report.last_seq), (10, Some(10)));
        }
    }

    #[test]
    fn what_is_left_behind_a_gap_is_a_missing_record() {
        let rows = chain(10);
        let report = run(rows.iter().rev().filter(|r| r.seq != 4).cloned());
        let broken = report.broken.unwrap();
        assert_eq!((broken.seq, broken.kind), (4, BreakKind::Missing));
        assert_eq!(report.records, 3);
        let report = run(rows.iter().filter(|r| !(4..=6).contains(&r.seq)).cloned());
        let broken = report.broken.unwrap();
        assert_eq!((broken.seq, broken.kind), (4, BreakKind::Missing));
        assert_eq!(broken.detail, "records 4 to 6 are missing");
        // The newest ones missing: the head vouches for them.
        let report = run(rows[..8].iter().cloned());
        let broken = report.broken.unwrap();
        assert_eq!((broken.seq, broken.kind), (9, BreakKind::Truncated));
    }

    #[test]
    fn a_second_record_at_a_checked_position_is_a_duplicate_whenever_it_comes() {
        let rows = chain(10);
        let mut copy = rows[2].clone();
        copy.id = Uuid::from_u128(99);
        // Before its original (buffered beside it) and after it (read late).
        for copy_first in [true, false] {
            let mut order: Vec<ChainRow> = rows.iter().rev().cloned().collect();
            if copy_first {
                order.insert(0, copy.clone());
            } else {
                order.push(copy.clone());
            }
            let report = run(order);
            let broken = report.broken.unwrap();
            assert_eq!((broken.seq, broken.kind), (3, BreakKind::Duplicate));
        }
    }

    #[test]
    fn swapped_records_are_moved_in_either_order() {
        let rows = chain(10);
        let (mut five, mut six) = (rows[4].clone(), rows[5].clone());
        (five.seq, six.seq) = (6, 5);
        for six_first in [true, false] {
            let mut order: Vec<ChainRow> = rows[..4].to_vec();
            if six_first {
                order.extend([six.clone(), five.clone()]);
            } else {
                order.extend([five.clone(), six.clone()]);
            }
            order.extend(rows[6..].iter().cloned());
            let broken = run(order).broken.unwrap();
            assert_eq!((broken.seq, broken.kind), (5, BreakKind::Moved));
        }
    }

    #[test]
    fn a_record_looked_up_ahead_of_the_scan_is_not_counted_twice() {
        let rows = chain(5);
        let verifier = keys().verifier();
        let mut check = ChainCheck::new("a".into(), Vec::new(), &verifier, Some(5));
        for row in &rows[1..] {
            check.feed(row.clone(), &verifier);
        }
        assert_eq!(check.buffer.len(), 4);
        // What `resolve_gap` does with the record found.
        check.feed(rows[0].clone(), &verifier);
        check.looked_up.insert(rows[0].id);
        assert!(check.buffer.is_empty());
        // The scan reaches it later.
        check.feed(rows[0].clone(), &verifier);
        let report = check.finish();
        assert!(report.ok, "{report:?}");
        assert_eq!(report.records, 5);
    }

    #[test]
    fn a_span_starting_mid_chain_takes_its_start_from_the_record_before() {
        let rows = chain(10);
        let verifier = keys().verifier();
        let mut check = ChainCheck::new("a".into(), Vec::new(), &verifier, None);
        check.narrow(Some((4, 7)));
        assert_eq!((check.floor, check.expected, check.last), (3, 3, 7));
        for row in rows.iter().rev() {
            check.feed(row.clone(), &verifier);
        }
        let report = check.finish();
        assert!(report.ok, "{report:?}");
        assert_eq!(
            (report.records, report.first_seq, report.last_seq),
            (4, Some(4), Some(7))
        );
    }
}
