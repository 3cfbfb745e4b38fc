//! Accounts whose batch the destination [refused](super::DeliveryError::refused): their
//! batches narrowed (halved after each refusal) until the refused record goes alone, that
//! record held back with a backoff, while the job goes on with every other account.
//!
//! A refusal is about what a batch holds, so one account's refused record (a record too
//! large for the destination, one it cannot parse) must not stop the export of the others:
//! otherwise one tenant could blind a SIEM to every tenant. Only a refusal the destination
//! says is one (an HTTP 400, 413, 422) is taken so; any other failure of a batch (a WAF's
//! 403, a parser's 500, a timeout) is the destination's, and the job retries that batch
//! before any other.

use std::collections::HashMap;
use std::time::Duration;

use tokio::time::Instant;

use crate::model::CommitPosition;

/// The refused accounts of one job, in memory: a restart forgets them, reads the refused
/// batch again whole, and narrows it again.
#[derive(Debug, Default)]
pub(super) struct Holds {
    held: HashMap<String, Hold>,
    /// Batches the destination took, of any account: a record refused alone is skipped (when
    /// the job skips) only if the destination took a batch since its account was first
    /// refused, so that a destination refusing everything skips nothing.
    taken: u64,
}

#[derive(Debug)]
struct Hold {
    /// The most records of the account's next batch.
    limit: u32,
    /// The last record of the widest batch refused: past it, batches are whole again.
    through: CommitPosition,
    /// Refusals of the record alone.
    alone: u32,
    /// `taken` when the account was first refused.
    taken_then: u64,
    /// No attempt before this.
    until: Option<Instant>,
    /// The action time of the first record of the account's last refused batch.
    first_ms: i64,
}

/// What the job does after a refusal.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Next {
    /// Send the first half of the batch next (on the account's next turn).
    Narrowed,
    /// The record, alone, is held back until its backoff passed: the `n`th refusal of it.
    Held(u32),
    /// The record was refused alone as often as the job allows, and the destination took
    /// other batches since the account was first refused: the job moves past it.
    Skip,
}

impl Holds {
    /// The most records of `account`'s next batch: `whole` unless it is held.
    pub(super) fn limit(&self, account: &str, whole: u32) -> u32 {
        self.held.get(account).map_or(whole, |h| h.limit.min(whole))
    }

    /// Whether `account`'s held record is still waiting for its backoff.
    pub(super) fn waiting(&self, account: &str, now: Instant) -> bool {
        self.held
            .get(account)
            .and_then(|h| h.until)
            .is_some_and(|until| now < until)
    }

    /// How many accounts are held.
    pub(super) fn len(&self) -> usize {
        self.held.len()
    }

    /// The oldest action time of a held account's refused record: how far behind the job is.
    pub(super) fn oldest_ms(&self) -> Option<i64> {
        self.held.values().map(|h| h.first_ms).min()
    }

    /// The destination took `account`'s batch ending at `last`: past the refused range, the
    /// account is whole again; within it, its batches widen again (doubled), and a record
    /// refused alone after this one starts its own count and backoff.
    pub(super) fn taken(&mut self, account: &str, last: CommitPosition) {
        self.taken += 1;
        let Some(hold) = self.held.get_mut(account) else {
            return;
        };
        if hold.through <= last {
            self.held.remove(account);
            return;
        }
        hold.limit = hold.limit.saturating_mul(2);
        hold.alone = 0;
        hold.until = None;
    }

    /// Forgets `account`'s hold: its refused records are gone (retention, a changed filter).
    pub(super) fn release(&mut self, account: &str) {
        self.held.remove(account);
    }

    /// Forgets the holds of accounts no longer among `accounts` (their records are gone).
    pub(super) fn keep_only(&mut self, accounts: &[String]) {
        if !self.held.is_empty() {
            self.held.retain(|account, _| accounts.contains(account));
        }
    }

    /// The destination refused `account`'s batch of `records` from the action time `first_ms`
    /// to the record at `last`. `skip_after`:
    /// the refusals of a record alone after which it is skipped (0: never); `wait`: the
    /// backoff after the `n`th refusal of it.
    pub(super) fn refused(
        &mut self,
        account: &str,
        records: usize,
        last: CommitPosition,
        first_ms: i64,
        skip_after: u32,
        wait: impl FnOnce(u32) -> Duration,
    ) -> Next {
        let taken = self.taken;
        let hold = self.held.entry(account.to_owned()).or_insert(Hold {
            limit: u32::MAX,
            through: last,
            alone: 0,
            taken_then: taken,
            until: None,
            first_ms,
        });
        hold.through = hold.through.max(last);
        hold.first_ms = first_ms;
        if records > 1 {
            hold.limit = u32::try_from(records / 2).unwrap_or(u32::MAX).max(1);
            hold.until = None;
            return Next::Narrowed;
        }
        hold.limit = 1;
        hold.alone += 1;
        if skip_after > 0 && hold.alone >= skip_after && taken > hold.taken_then {
            self.held.remove(account);
            return Next::Skip;
        }
        hold.until = Some(Instant::now() + wait(hold.alone));
        Next::Held(hold.alone)
    }
}

#[cfg(test)]
mod tests {
    use uuid::Uuid;

    use super::*;

    fn at(n: i64) -> CommitPosition {
        CommitPosition {
            committed_ms: n,
            time_ms: n,
            id: Uuid::nil(),
        }
    }

    const NO_WAIT: fn(u32) -> Duration = |_| Duration::ZERO;

    #[test]
    fn a_refused_batch_is_halved_down_to_one_record_then_held() {
        let mut holds = Holds::default();
        assert_eq!(holds.limit("a", 500), 500);
        assert_eq!(
            holds.refused("a", 500, at(500), 500, 0, NO_WAIT),
            Next::Narrowed
        );
        assert_eq!(holds.limit("a", 500), 250);
        assert_eq!(holds.limit("b", 500), 500, "other accounts whole");
        assert_eq!(
            holds.refused("a", 250, at(250), 250, 0, NO_WAIT),
            Next::Narrowed
        );
        assert_eq!(holds.limit("a", 500), 125);
        holds.taken("a", at(100));
        assert_eq!(
            holds.limit("a", 500),
            250,
            "widened again, but still short of the refused batch's end"
        );
        assert_eq!(
            holds.refused("a", 1, at(101), 101, 0, NO_WAIT),
            Next::Held(1)
        );
        assert_eq!(
            holds.refused("a", 1, at(101), 101, 0, NO_WAIT),
            Next::Held(2)
        );
        assert_eq!(holds.limit("a", 500), 1);
        assert_eq!(
            holds.oldest_ms(),
            Some(101),
            "behind since the refused record"
        );
        holds.taken("a", at(101));
        holds.taken("a", at(500));
        assert_eq!(
            (holds.limit("a", 500), holds.len()),
            (500, 0),
            "whole again"
        );
        assert_eq!(holds.oldest_ms(), None);
    }

    #[test]
    fn a_record_taken_after_refusals_leaves_the_next_one_its_own_count() {
        let mut holds = Holds::default();
        assert_eq!(holds.refused("a", 2, at(2), 1, 3, NO_WAIT), Next::Narrowed);
        assert_eq!(holds.refused("a", 1, at(1), 1, 3, NO_WAIT), Next::Held(1));
        assert_eq!(holds.refused("a", 1, at(1), 1, 3, NO_WAIT), Next::Held(2));
        holds.taken("a", at(1));
        assert_eq!(holds.limit("a", 500), 2, "widened again");
        assert_eq!(holds.refused("a", 1, at(2), 2, 3, NO_WAIT), Next::Held(1));
        assert!(!holds.waiting("a", Instant::now()));
    }

    #[test]
    fn holds_of_accounts_whose_records_are_gone_are_forgotten() {
        let mut holds = Holds::default();
        holds.refused("a", 1, at(1), 1, 0, NO_WAIT);
        holds.refused("b", 1, at(1), 1, 0, NO_WAIT);
        holds.keep_only(&["b".to_owned()]);
        assert_eq!(holds.len(), 1);
        holds.release("b");
        assert_eq!((holds.len(), holds.oldest_ms()), (0, None));
    }

    #[test]
    fn a_held_record_waits_for_its_backoff() {
        let mut holds = Holds::default();
        holds.refused("a", 1, at(1), 1, 0, |_| Duration::from_secs(60));
        assert!(holds.waiting("a", Instant::now()));
        assert!(!holds.waiting("b", Instant::now()));
        assert!(!holds.waiting("a", Instant::now() + Duration::from_secs(61)));
    }

    #[test]
    fn a_record_is_skipped_only_after_the_destination_took_another_batch() {
        let mut holds = Holds::default();
        for n in 1..=5 {
            assert_eq!(holds.refused("a", 1, at(1), 1, 2, NO_WAIT), Next::Held(n));
        }
        holds.taken("b", at(7));
        assert_eq!(holds.refused("a", 1, at(1), 1, 2, NO_WAIT), Next::Skip);
        assert_eq!(holds.len(), 0);
        assert_eq!(
            holds.refused("c", 1, at(1), 1, 0, NO_WAIT),
            Next::Held(1),
            "never skipped when the job does not skip"
        );
    }
}
