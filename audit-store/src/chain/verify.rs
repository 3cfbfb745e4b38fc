//! Walking a chain: every record's link, seal and position, every checkpoint's signature.

use std::fmt;

use serde::Serialize;
use uuid::Uuid;

use super::{Checkpoint, CheckpointKind, GENESIS, Verifier, link, seal};
use crate::Result;
use crate::store::AuditStore;

/// Records fetched per query while walking a chain.
const CHUNK: u32 = 10_000;

/// One stored link, as a verifier reads it: the digest of the record's columns is computed
/// by the store while it decodes the row.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChainRow {
    /// `chain_seq`.
    pub seq: i64,
    /// `id`, to page through rows that share a sequence number.
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
    let mut report = VerifyReport {
        account_id: chain.to_owned(),
        ok: false,
        records: 0,
        first_seq: None,
        last_seq: None,
        checkpoints: 0,
        latest_checkpoint: None,
        anchored_at: None,
        seals_checked: verifier.checks_seals(),
        after_latest_checkpoint: 0,
        broken: None,
    };
    let mut breaks: Vec<Break> = Vec::new();

    // Statements first: a bad signature is a break wherever it points.
    let mut stored = store.checkpoints(chain).await?;
    stored.extend(external.iter().filter(|c| c.account_id == chain).cloned());
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
                    "the {} for sequence {} dated {} ms is not validly signed by a trusted key \
                     (changed, replaced or forged)",
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
    report.latest_checkpoint = checkpoints
        .iter()
        .max_by_key(|c| (c.seq, c.time_ms))
        .map(|c| (c.seq, c.time_ms));
    let (start, mut prev) = match &anchor {
        Some(a) => {
            report.anchored_at = Some(a.seq);
            (a.seq + 1, a.head.clone())
        }
        None => (1, GENESIS.to_vec()),
    };

    // Where to walk.
    let (mut expected, last) = if span.is_all() {
        (start, i64::MAX)
    } else {
        match store
            .chain_span(
                chain,
                span.since_ms.unwrap_or(i64::MIN),
                span.before_ms.unwrap_or(i64::MAX),
            )
            .await?
        {
            None => (start, start - 1),
            Some((lo, hi)) => (lo.max(start), hi),
        }
    };
    if expected > start && expected <= last {
        // Starting mid-chain: the previous record's hash is the starting point, and its seal
        // (when checked) vouches for it.
        let before = store
            .chain_rows(chain, (expected - 2, Uuid::max()), 1)
            .await?;
        match before.first() {
            Some(row) if row.seq == expected - 1 => {
                if let Some(key) = verifier.seal_key()
                    && row.seal != seal(key, chain, row.seq, &row.hash)
                {
                    breaks.push(forged(row.seq));
                }
                prev = row.hash.clone();
            }
            _ => breaks.push(Break {
                seq: expected - 1,
                kind: BreakKind::Missing,
                detail: format!("record {} is missing", expected - 1),
            }),
        }
    }

    // The walk, fetching the next chunk while hashing this one.
    let mut cursor = (expected - 1, Uuid::max());
    let mut last_seen: Option<i64> = None;
    let mut next_cp = checkpoints.partition_point(|c| c.seq < expected);
    let mut pending = (expected <= last).then(|| fetch(store, chain, cursor));
    'walk: while let Some(fetching) = pending.take() {
        let rows = fetching
            .await
            .map_err(|e| crate::StoreError::Config(format!("verification task failed: {e}")))??;
        let full = rows.len() == CHUNK as usize;
        if let Some(row) = rows.last() {
            cursor = (row.seq, row.id);
            if full && row.seq <= last {
                pending = Some(fetch(store, chain, cursor));
            }
        }
        for row in &rows {
            if row.seq > last {
                break 'walk;
            }
            if row.seq < expected {
                if last_seen == Some(row.seq) {
                    breaks.push(Break {
                        seq: row.seq,
                        kind: BreakKind::Duplicate,
                        detail: format!(
                            "two records carry sequence {} (one is {})",
                            row.seq, row.id
                        ),
                    });
                    break 'walk;
                }
                continue; // left over before the anchor
            }
            if row.seq > expected {
                breaks.push(Break {
                    seq: expected,
                    kind: BreakKind::Missing,
                    detail: if row.seq == expected + 1 {
                        format!("record {expected} is missing")
                    } else {
                        format!("records {expected} to {} are missing", row.seq - 1)
                    },
                });
                break 'walk;
            }
            let hash = link(&prev, chain, row.seq, &row.digest);
            let sealed = verifier
                .seal_key()
                .map(|key| row.seal == seal(key, chain, row.seq, &row.hash));
            if row.hash != hash || sealed == Some(false) {
                breaks.push(classify(verifier, chain, row, row.hash == hash));
                break 'walk;
            }
            while let Some(cp) = checkpoints.get(next_cp).filter(|c| c.seq <= row.seq) {
                if cp.seq == row.seq {
                    if cp.head != hash {
                        breaks.push(Break {
                            seq: row.seq,
                            kind: BreakKind::CheckpointMismatch,
                            detail: format!(
                                "the checkpoint dated {} ms vouches for another record {}: \
                                 records up to {} were rewritten",
                                cp.time_ms, row.seq, row.seq
                            ),
                        });
                        break 'walk;
                    }
                    report.checkpoints += 1;
                }
                next_cp += 1;
            }
            prev = hash.to_vec();
            report.first_seq.get_or_insert(row.seq);
            report.last_seq = Some(row.seq);
            report.records += 1;
            last_seen = Some(row.seq);
            expected += 1;
        }
    }

    // Truncation: signed statements (and the head) vouch for records that are not there.
    if breaks.iter().all(|b| b.kind == BreakKind::BadCheckpoint) {
        let walked_to = expected - 1;
        let vouched = checkpoints
            .iter()
            .filter(|c| c.seq <= last)
            .max_by_key(|c| c.seq);
        if let Some(cp) = vouched.filter(|c| c.seq > walked_to) {
            breaks.push(truncated(
                walked_to,
                cp.seq,
                &format!("a checkpoint dated {} ms", cp.time_ms),
            ));
        } else if span.is_all()
            && let Some(head) = store.chain_head(chain).await?
            && head.seq > walked_to
        {
            breaks.push(truncated(walked_to, head.seq, "the chain's head"));
        }
    }
    if let Some((seq, _)) = report.latest_checkpoint {
        report.after_latest_checkpoint = report
            .last_seq
            .map_or(0, |l| u64::try_from(l - seq).unwrap_or(0));
    } else {
        report.after_latest_checkpoint = report.records;
    }
    report.broken = match bad_anchors.into_iter().min_by_key(|b| b.seq) {
        Some(anchor) => Some(anchor),
        None => breaks.into_iter().min_by_key(|b| b.seq),
    };
    report.ok = report.broken.is_none();
    Ok(report)
}

fn fetch<S: AuditStore>(
    store: &S,
    chain: &str,
    after: (i64, Uuid),
) -> tokio::task::JoinHandle<Result<Vec<ChainRow>>> {
    let (store, chain) = (store.clone(), chain.to_owned());
    tokio::spawn(async move { store.chain_rows(&chain, after, CHUNK).await })
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
