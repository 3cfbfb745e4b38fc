//! One chain's walk: its signed statements, the next expected link, and the records that
//! arrived ahead of their turn.

use std::collections::{BTreeMap, HashSet};

use uuid::Uuid;

use super::{Break, BreakKind, Outcome, VerifyReport};
use crate::chain::{GENESIS, Verifier, link, seal};
use crate::model::{ChainRow, Checkpoint, CheckpointKind};

/// One chain being verified: what its signed statements say, where the walk is, and the
/// records that arrived ahead of their turn.
pub(super) struct ChainCheck {
    pub(super) report: VerifyReport,
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
    pub(super) expected: i64,
    /// Rows below it are not part of the walk (before the anchor, or the span).
    pub(super) floor: i64,
    /// Rows above it are not part of the walk (after the span).
    pub(super) last: i64,
    /// The row at `expected` gives the starting hash only (a span starting mid-chain).
    starts_mid_chain: bool,
    /// The chain's head when the walk started, if known.
    head: Option<i64>,
    /// Whether `head` was looked up (and so `None` means the chain has no head row).
    head_looked_up: bool,
    /// The last record of the span (`None`: the span holds none): what the verification is
    /// about, as opposed to the records around it that are checked too.
    span_end: Option<i64>,
    /// Whether the whole chain is walked (not a span).
    whole: bool,
    /// Rows ahead of `expected`, by `(seq, id)`.
    pub(super) buffer: BTreeMap<(i64, Uuid), ChainRow>,
    /// A break ended the walk: later rows are not checked.
    stopped: bool,
    /// Rows looked up ahead of the scan: when the scan reaches them they are skipped.
    pub(super) looked_up: HashSet<Uuid>,
}

impl ChainCheck {
    /// Checks the chain's signed statements; the walk starts at the anchor (or the chain's
    /// first record) and covers the whole chain.
    pub(super) fn new(
        chain: String,
        stored: Vec<Checkpoint>,
        verifier: &Verifier,
        head: Option<i64>,
    ) -> Self {
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
                outcome: Outcome::Unverifiable,
                unverifiable: None,
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
            head_looked_up: false,
            span_end: None,
            whole: true,
            buffer: BTreeMap::new(),
            stopped: false,
            looked_up: HashSet::new(),
        }
    }

    /// Says that `head` is the chain's head as looked up (`None`: the chain has no head row).
    pub(super) fn head_looked_up(&mut self, head: Option<i64>) {
        self.head = head;
        self.head_looked_up = true;
    }

    /// The chain's head, as given.
    pub(super) fn head(&self) -> Option<i64> {
        self.head
    }

    /// The first validly signed checkpoint at or after `seq`.
    pub(super) fn checkpoint_at_or_after(&self, seq: i64) -> Option<i64> {
        let at = self.checkpoints.partition_point(|c| c.seq < seq);
        self.checkpoints.get(at).map(|c| c.seq)
    }

    /// The records of a span are `lo..=hi` (none when `hi < lo`): what the outcome is about.
    pub(super) fn span(&mut self, lo: i64, hi: i64) {
        self.span_end = (hi >= lo).then_some(hi);
    }

    /// Narrows the walk to the records chained from the first to the last of a span
    /// (`chain_span`'s answer; `None`: no record in it).
    pub(super) fn narrow(&mut self, window: Option<(i64, i64)>) {
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
    pub(super) fn feed(&mut self, row: ChainRow, verifier: &Verifier) {
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
    pub(super) fn missing(&mut self) {
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
    pub(super) fn finish(mut self) -> VerifyReport {
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
            } else if let Some(head) = self.head.filter(|&h| h.min(self.last) > walked_to) {
                if head > self.last {
                    // A span's walk: the chain goes on after the records missing.
                    let first = walked_to + 1;
                    self.breaks.push(Break {
                        seq: first,
                        kind: BreakKind::Missing,
                        detail: if first == self.last {
                            format!("record {first} is missing (the chain goes on to {head})")
                        } else {
                            format!(
                                "records {first} to {} are missing (the chain goes on to {head})",
                                self.last
                            )
                        },
                    });
                } else {
                    self.breaks
                        .push(truncated(walked_to, head, "the chain's head"));
                }
            }
        }
        // Records, but no head row: deleted (the next write would start the chain again).
        if self.head_looked_up
            && self.head.is_none()
            && let Some(last) = self.report.last_seq
        {
            self.breaks.push(Break {
                seq: last,
                kind: BreakKind::HeadMissing,
                detail: format!(
                    "the chain's head row is missing, though its records go up to {last}: it \
                     was deleted"
                ),
            });
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
        // What the outcome is about: the chain, or the span's records (the records around an
        // empty span).
        let end = if self.whole {
            report.last_seq
        } else {
            self.span_end.or(report.last_seq)
        };
        let newest = report.latest_checkpoint.map(|(seq, _)| seq);
        report.unverifiable = match (end, newest) {
            (Some(end), Some(newest)) if end > newest => Some(format!(
                "records {} to {end} are newer than the newest checkpoint (at {newest}): no \
                 signature vouches for them yet, so a deletion or rewrite of them could not be \
                 told",
                (newest + 1).max(report.first_seq.unwrap_or(newest + 1))
            )),
            (Some(end), None) => Some(format!(
                "no checkpoint vouches for this chain (its records up to {end} are linked, but \
                 nothing signed says how long it was): checkpoints may have been deleted"
            )),
            (None, None) if report.anchored_at.is_none() && report.records == 0 => Some(
                "no record and no checkpoint: nothing vouches that this log is empty (it may \
                 have been deleted whole)"
                    .to_owned(),
            ),
            _ => None,
        };
        report.outcome = match (&report.broken, &report.unverifiable) {
            (Some(_), _) => Outcome::Broken,
            (None, Some(_)) => Outcome::Unverifiable,
            (None, None) => Outcome::Ok,
        };
        report.ok = report.outcome == Outcome::Ok;
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
    use crate::model::StoredRecord;
    use std::collections::HashMap;

    fn keys() -> ChainKeys {
        ChainKeys::from_secret(&ChainSecret::from_bytes([3; 32]))
    }

    /// `n` records of chain `a`, linked, as a verifier reads them back.
    fn chain(n: u128) -> Vec<ChainRow> {
        let rows: Vec<StoredRecord> = (1..=n)
            .map(|i| StoredRecord {
                time_ms: i as i64,
                raw_ray_id: format!("r{i}"),
                ..StoredRecord::sample(i, Some("a"))
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
            assert!(report.broken.is_none(), "{order:?}: {report:?}");
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
        assert!(report.broken.is_none(), "{report:?}");
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
        assert!(report.broken.is_none(), "{report:?}");
        assert_eq!(
            (report.records, report.first_seq, report.last_seq),
            (4, Some(4), Some(7))
        );
    }

    #[test]
    fn the_outcome_is_ok_only_where_a_checkpoint_covers_what_was_checked() {
        let rows = chain(10);
        let verifier = keys().verifier();
        let at = |seq: i64| {
            Checkpoint::sign(
                &keys(),
                CheckpointKind::Checkpoint,
                "a".into(),
                seq,
                rows[seq as usize - 1].hash.clone(),
                1,
            )
        };
        let outcome = |checkpoints: Vec<Checkpoint>, span: Option<(i64, i64)>| {
            let mut check = ChainCheck::new("a".into(), checkpoints, &verifier, Some(10));
            if let Some((lo, hi)) = span {
                check.span(lo, hi);
                check.narrow(Some((lo - 1, hi + 1)));
            }
            for row in &rows {
                check.feed(row.clone(), &verifier);
            }
            let report = check.finish();
            assert!(report.broken.is_none(), "{report:?}");
            (report.outcome, report.ok)
        };
        assert_eq!(outcome(vec![at(10)], None), (Outcome::Ok, true));
        assert_eq!(outcome(vec![at(8)], None).0, Outcome::Unverifiable);
        assert_eq!(outcome(Vec::new(), None).0, Outcome::Unverifiable);
        // A span is about its own records: a checkpoint at or after its last covers it.
        assert_eq!(outcome(vec![at(8)], Some((3, 6))).0, Outcome::Ok);
        assert_eq!(outcome(vec![at(5)], Some((3, 6))).0, Outcome::Unverifiable);
        // Nothing at all: not an empty log proven, only nothing known.
        let empty = ChainCheck::new("a".into(), Vec::new(), &verifier, None).finish();
        assert_eq!((empty.outcome, empty.records), (Outcome::Unverifiable, 0));
    }
}
