//! Verifying a span of time: the records in it and the records chained around it, read a
//! page at a time through the account's time index, from the span outwards, until every
//! sequence number the walk needs was seen (or the account has no more records either way).
//!
//! No index orders records by sequence number (it cost too much at ingest), but records in
//! time order are nearly in chain order: the records linking into and out of a span are
//! almost always the ones just before and after it in time. A record chained among them with
//! a time far away (a spool replay, or a time edited to move it out of the span) is still
//! found: the search widens, page after page, until it is; only a record that is not there at
//! all (deleted) makes it read to the account's ends.

use std::collections::HashSet;

use uuid::Uuid;

use super::Span;
use super::check::ChainCheck;
use crate::Result;
use crate::chain::Verifier;
use crate::model::{Direction, TimedLink};
use crate::store::ChainedStore;

/// Rows per statement while reading the span itself.
const SPAN_PAGE: u32 = 1024;
/// The most rows per statement while searching outwards.
const MAX_SEARCH_PAGE: u32 = 4096;

/// Walks the part of `check`'s chain that `span` covers: its records, the two records chained
/// before its first (the one before is checked in full, which finds the first record moved
/// out of the span or deleted) and the one after its last (which finds the last moved out or
/// deleted); without the secret, also on to the checkpoint that vouches for them.
pub(super) async fn walk<S: ChainedStore>(
    store: &S,
    check: &mut ChainCheck,
    verifier: &Verifier,
    span: Span,
) -> Result<()> {
    let chain = check.report.account_id.clone();
    let (since, before) = (
        span.since_ms.unwrap_or(i64::MIN),
        span.before_ms.unwrap_or(i64::MAX),
    );
    let (lo, hi) = match store.chain_span(&chain, since, before).await? {
        Some(window) => window,
        // No record in the span: the walk checks that the one chained after the last record
        // before it is indeed after it.
        None => {
            let prev = store
                .chain_page(&chain, (i64::MIN, since), None, Direction::Desc, 1)
                .await?;
            match prev.first() {
                Some(p) => (p.row.seq + 1, p.row.seq),
                None => (check.expected, check.expected - 1),
            }
        }
    };
    check.span(lo, hi);
    // The record after the span, if the head or a checkpoint says there is one (a missing
    // head row is reported on its own; then look anyway).
    let after_span = match check.head() {
        Some(head) => head > hi || check.checkpoint_at_or_after(hi + 1).is_some(),
        None => true,
    };
    let mut last = if after_span { hi + 1 } else { hi };
    if !verifier.checks_seals() {
        // Without seals only a checkpoint vouches for what was walked: walk on to it.
        if let Some(cp) = check.checkpoint_at_or_after(hi) {
            last = last.max(cp);
        }
    }
    check.narrow(Some((lo - 1, last)));
    if check.expected > check.last {
        return Ok(());
    }
    let mut search = Search::new(check.floor, check.last);

    // The span itself, oldest first.
    let mut after: Option<(i64, Uuid)> = None;
    loop {
        let page = store
            .chain_page(&chain, (since, before), after, Direction::Asc, SPAN_PAGE)
            .await?;
        after = page.last().map(|l| (l.time_ms, l.row.id));
        let full = page.len() == SPAN_PAGE as usize;
        search.take(page, check, verifier);
        if !full {
            break;
        }
    }

    // Outwards, both ways, until every record of the walk was seen.
    let mut later = Side::new(Direction::Asc, (before, i64::MAX), before != i64::MAX);
    let mut earlier = Side::new(Direction::Desc, (i64::MIN, since), since != i64::MIN);
    // Each side looks for what is chained on its side of the span, and for what is missing
    // inside it (a record of the span chained there with a time outside it): as few rows as
    // that. Once one side has no more records, the other looks for everything still missing.
    while search.missing() > 0 && (later.open || earlier.open) {
        for asc in [true, false] {
            let (below, inside, above) = search.missing_around(lo, hi);
            let (side, other_open) = if asc {
                (&mut later, earlier.open)
            } else {
                (&mut earlier, later.open)
            };
            let (own, others) = if asc { (above, below) } else { (below, above) };
            let wanted = inside + own + if other_open { 0 } else { others };
            if !side.open || wanted == 0 {
                continue;
            }
            let limit = side.next_limit(wanted);
            let page = store
                .chain_page(&chain, side.range, side.after, side.direction, limit)
                .await?;
            side.after = page.last().map(|l| (l.time_ms, l.row.id));
            side.open = page.len() == limit as usize;
            let found = search.take(page, check, verifier);
            side.fruitless = found == 0;
        }
    }
    Ok(())
}

/// The sequence numbers the walk needs, and which were seen.
struct Search {
    first: i64,
    last: i64,
    seen: HashSet<i64>,
}

impl Search {
    fn new(first: i64, last: i64) -> Self {
        Self {
            first,
            last,
            seen: HashSet::new(),
        }
    }

    /// How many records of the walk were not seen yet.
    fn missing(&self) -> usize {
        usize::try_from(self.last - self.first + 1).unwrap_or(0) - self.seen.len()
    }

    /// How many records not seen yet are chained before `lo`, from `lo` to `hi`, and after
    /// `hi`.
    fn missing_around(&self, lo: i64, hi: i64) -> (usize, usize, usize) {
        let mut counts = (0, 0, 0);
        for seq in self.first..=self.last {
            if self.seen.contains(&seq) {
                continue;
            }
            match seq {
                s if s < lo => counts.0 += 1,
                s if s <= hi => counts.1 += 1,
                _ => counts.2 += 1,
            }
        }
        counts
    }

    /// Feeds a page to the walk; returns how many records of the walk it held.
    fn take(&mut self, page: Vec<TimedLink>, check: &mut ChainCheck, verifier: &Verifier) -> usize {
        let mut found = 0;
        for link in page {
            let seq = link.row.seq;
            if (self.first..=self.last).contains(&seq) && self.seen.insert(seq) {
                found += 1;
            }
            check.feed(link.row, verifier);
        }
        found
    }
}

/// One direction of the outward search.
struct Side {
    direction: Direction,
    range: (i64, i64),
    after: Option<(i64, Uuid)>,
    open: bool,
    /// The last page held none of the records looked for: the next one is twice as long.
    fruitless: bool,
    limit: u32,
}

impl Side {
    fn new(direction: Direction, range: (i64, i64), open: bool) -> Self {
        Self {
            direction,
            range,
            after: None,
            open,
            fruitless: false,
            limit: 0,
        }
    }

    /// A page as long as what is missing on this side, doubling while pages come back without
    /// any of it.
    fn next_limit(&mut self, missing: usize) -> u32 {
        let wanted = u32::try_from(missing).unwrap_or(u32::MAX);
        self.limit = if self.fruitless {
            self.limit.saturating_mul(2).max(wanted)
        } else {
            wanted
        }
        .clamp(1, MAX_SEARCH_PAGE);
        self.limit
    }
}
