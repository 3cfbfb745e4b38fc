//! What both backends do alike to write a batch as the next links of its chains: the retry of
//! a batch that meets its own stored rows, and the bookkeeping around the chains' heads.

use std::borrow::Cow;
use std::collections::{BTreeSet, HashMap, HashSet};
use std::future::Future;

use uuid::Uuid;

use crate::chain::{self, GENESIS};
use crate::model::StoredRecord;
use crate::{Result, StoreError};

/// The heads of the chains a batch extends, by chain: `(seq, hash)`, advanced as rows are
/// linked.
pub(super) type Heads = HashMap<String, (i64, [u8; 32])>;

/// One try at writing a chained batch in one transaction.
pub(super) trait LinkedWrite {
    /// Links and writes `rows` (with `skip_stored`, first leaves out those already stored:
    /// a retried batch may have committed before, and such records keep their links).
    /// `Ok(None)` when a row turned out to be stored already: the transaction was rolled back.
    fn attempt(
        &mut self,
        rows: &[StoredRecord],
        skip_stored: bool,
    ) -> impl Future<Output = Result<Option<u64>>> + Send;
}

/// Writes a chained batch: once, and once more without the rows already stored should it
/// meet any (a retry of a batch that committed). Ids repeated within the batch are chained
/// once.
pub(super) async fn insert_linked(
    write: &mut impl LinkedWrite,
    records: &[StoredRecord],
) -> Result<u64> {
    let records = chain::dedup_ids(records);
    if let Some(stored) = write.attempt(&records, false).await? {
        return Ok(stored);
    }
    write.attempt(&records, true).await?.ok_or_else(|| {
        StoreError::Conflict(
            "a chained batch met records stored by another writer twice in a row".into(),
        )
    })
}

/// `rows` without those whose id is in `stored`.
pub(super) fn without<'a>(
    rows: &'a [StoredRecord],
    stored: &HashSet<Uuid>,
) -> Cow<'a, [StoredRecord]> {
    if stored.is_empty() {
        return Cow::Borrowed(rows);
    }
    Cow::Owned(
        rows.iter()
            .filter(|r| !stored.contains(&r.id))
            .cloned()
            .collect(),
    )
}

/// The chains `rows` belong to, in name order (the order writers lock their heads in, so
/// that they never deadlock).
pub(super) fn chains_of(rows: &[StoredRecord]) -> Vec<&str> {
    rows.iter()
        .map(chain::chain_of)
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect()
}

/// A head as read back: a hash of another length (an edited row) restarts from genesis, and
/// the first link then fails verification.
pub(super) fn head_hash(hash: Vec<u8>) -> [u8; 32] {
    hash.try_into().unwrap_or(GENESIS)
}

/// The heads `chains` have after linking: `(chain, seq, hash)`.
pub(super) fn advanced<'a>(chains: &[&'a str], heads: &Heads) -> Vec<(&'a str, i64, [u8; 32])> {
    chains
        .iter()
        .filter_map(|c| heads.get(*c).map(|(seq, hash)| (*c, *seq, *hash)))
        .collect()
}
