//! Which writer (lane) an account's records go to.
//!
//! Every record of one account goes through one lane, so that the account's records are
//! stored in the order they were submitted and two writers never wait on the same chain's
//! lock. Taking the lane as `hash(account) % lanes` did that, but spread a few accounts
//! unevenly: the load benchmark's eight accounts fell 3 / 0 / 5 over three writers, so one
//! writer sat idle and another carried most of the load. An account is instead given a lane
//! the first time it is seen, the lanes taken in turn, and keeps it: accounts are hashed into
//! [`BUCKETS`] buckets, each bucket given the next lane when it is first used. A few accounts
//! then share the writers evenly (barring two of them hashing into one bucket), and many
//! accounts spread as evenly as hashing spreads them.
//!
//! A lookup is one hash of the account id and one atomic load (a compare-and-swap the first
//! time a bucket is used): no lock on the request path.

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicU16, AtomicUsize, Ordering};

/// Buckets accounts are hashed into (8 KiB of lane numbers per pipeline). Eight accounts
/// share a bucket with a probability under 1 %.
pub(super) const BUCKETS: usize = 4096;

/// The lane of every bucket used so far.
pub(super) struct LaneRouter {
    /// A bucket's lane plus one; 0 while unused.
    buckets: Box<[AtomicU16]>,
    /// The lane the next new bucket gets (modulo the lanes).
    next: AtomicUsize,
    lanes: usize,
}

impl LaneRouter {
    /// A router over `lanes` lanes (at least 1; more than `u16::MAX - 1` are not used).
    pub(super) fn new(lanes: usize) -> Self {
        let lanes = lanes.clamp(1, usize::from(u16::MAX - 1));
        let buckets = if lanes == 1 { 0 } else { BUCKETS };
        Self {
            buckets: (0..buckets).map(|_| AtomicU16::new(0)).collect(),
            next: AtomicUsize::new(0),
            lanes,
        }
    }

    /// The lane of `account` (lane 0 for records without one).
    pub(super) fn lane(&self, account: Option<&str>) -> usize {
        let Some(account) = account else { return 0 };
        if self.lanes == 1 {
            return 0;
        }
        let mut hasher = DefaultHasher::new();
        account.hash(&mut hasher);
        let bucket = &self.buckets[(hasher.finish() % BUCKETS as u64) as usize];
        match bucket.load(Ordering::Relaxed) {
            0 => {
                let lane = self.next.fetch_add(1, Ordering::Relaxed) % self.lanes;
                let mark = u16::try_from(lane + 1).expect("lanes fit in u16 (clamped in new)");
                match bucket.compare_exchange(0, mark, Ordering::Relaxed, Ordering::Relaxed) {
                    Ok(_) => lane,
                    // Another thread gave the bucket its lane first: that one holds.
                    Err(theirs) => usize::from(theirs) - 1,
                }
            }
            mark => usize::from(mark) - 1,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(router: &LaneRouter, accounts: &[String]) -> Vec<usize> {
        let mut per_lane = vec![0; router.lanes];
        for account in accounts {
            per_lane[router.lane(Some(account))] += 1;
        }
        per_lane
    }

    #[test]
    fn a_few_accounts_share_the_lanes_evenly() {
        // Eight accounts, as in the load benchmark (whose eight fell 3 / 0 / 5 under
        // `hash % 3`), chosen so that `hash % 3` would put them all on one lane.
        let accounts: Vec<String> = (0u32..)
            .map(|i| format!("{i:032x}"))
            .filter(|a| {
                let mut hasher = DefaultHasher::new();
                a.hash(&mut hasher);
                hasher.finish().is_multiple_of(3)
            })
            .take(8)
            .collect();
        let router = LaneRouter::new(3);
        let mut per_lane = load(&router, &accounts);
        per_lane.sort_unstable();
        assert_eq!(per_lane, [2, 3, 3]);
    }

    #[test]
    fn an_account_keeps_its_lane_and_accountless_records_take_lane_zero() {
        let router = LaneRouter::new(4);
        let accounts: Vec<String> = (0..100).map(|i| format!("account-{i}")).collect();
        let first: Vec<usize> = accounts.iter().map(|a| router.lane(Some(a))).collect();
        for _ in 0..3 {
            let again: Vec<usize> = accounts.iter().map(|a| router.lane(Some(a))).collect();
            assert_eq!(again, first);
        }
        assert!(first.iter().all(|lane| *lane < 4));
        assert_eq!(router.lane(None), 0);
        assert_eq!(LaneRouter::new(1).lane(Some("any")), 0);
    }

    #[test]
    fn many_accounts_spread_over_every_lane() {
        let router = LaneRouter::new(3);
        let accounts: Vec<String> = (0..3000).map(|i| format!("account-{i}")).collect();
        let per_lane = load(&router, &accounts);
        assert!(
            per_lane.iter().all(|n| (800..=1200).contains(n)),
            "{per_lane:?}"
        );
    }

    #[test]
    fn threads_racing_for_a_new_account_agree_on_its_lane() {
        let router = std::sync::Arc::new(LaneRouter::new(8));
        for round in 0..50 {
            let account = format!("racing-{round}");
            let lanes: Vec<usize> = std::thread::scope(|s| {
                let handles: Vec<_> = (0..4)
                    .map(|_| s.spawn(|| router.lane(Some(&account))))
                    .collect();
                handles.into_iter().map(|h| h.join().unwrap()).collect()
            });
            assert!(lanes.windows(2).all(|w| w[0] == w[1]), "{lanes:?}");
        }
    }
}
