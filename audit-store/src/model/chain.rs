//! What a hash chain is made of, as stored: links, heads and signed statements (see
//! [`chain`](crate::chain) for how they are computed and [`verify`](crate::verify) for how they
//! are checked).

use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// A record's place in its chain, as written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Link {
    pub(crate) seq: i64,
    pub(crate) hash: [u8; 32],
    pub(crate) seal: [u8; 32],
}

/// The newest link of a chain.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChainHead {
    /// The chain: the account id, `""` for records without an account.
    pub chain: String,
    /// The newest record's sequence number.
    pub seq: i64,
    /// The newest record's chain hash.
    pub hash: Vec<u8>,
}

/// What a signed statement says about a chain.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CheckpointKind {
    /// The chain's head at a time.
    Checkpoint,
    /// Where the chain starts after retention: the last pruned record's sequence and hash.
    Anchor,
}

impl CheckpointKind {
    /// `checkpoint` or `anchor`, as stored.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Checkpoint => "checkpoint",
            Self::Anchor => "anchor",
        }
    }

    pub(crate) fn parse(text: &str) -> Option<Self> {
        match text {
            "checkpoint" => Some(Self::Checkpoint),
            "anchor" => Some(Self::Anchor),
            _ => None,
        }
    }
}

/// A signed statement about one account's chain: "at `time_ms`, the chain's record `seq` had
/// hash `head`". Serializes to JSON (hex for the bytes) to be kept outside the database.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoint {
    /// The chain: the account id, `""` for records without an account.
    pub account_id: String,
    /// The sequence number of the record it vouches for.
    pub seq: i64,
    /// That record's chain hash.
    #[serde(with = "hex::serde")]
    pub head: Vec<u8>,
    /// When it was made, ms since the Unix epoch.
    pub time_ms: i64,
    /// Checkpoint or anchor.
    pub kind: CheckpointKind,
    /// Which key signed it ([`PublicKey::key_id`](crate::chain::PublicKey::key_id)).
    pub key_id: String,
    /// The Ed25519 signature over all of the above.
    #[serde(with = "hex::serde")]
    pub signature: Vec<u8>,
}

/// Which links [`ChainedStore::chain_scan`](crate::store::ChainedStore::chain_scan) reads.
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

/// A link read by [`ChainedStore::chain_scan`](crate::store::ChainedStore::chain_scan), with the chain it belongs to.
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

/// What one retention pass did ([`ChainedStore::retain`](crate::store::ChainedStore::retain)).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Retention {
    /// Records deleted.
    pub deleted: u64,
    /// The anchors signed, one per chain whose start moved: to be kept outside the database
    /// too, like checkpoints.
    pub anchors: Vec<Checkpoint>,
    /// Chains whose prefix did not verify: nothing of them was deleted.
    pub refused: Vec<Refusal>,
}

/// A chain retention would not prune: the prefix it was about to delete does not verify, so
/// deleting it (and signing an anchor over what remains) would launder a tamper.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refusal {
    /// The chain: the account id, `""` for records without an account.
    pub chain: String,
    /// The sequence number where the prefix stops verifying.
    pub seq: i64,
    /// What is wrong there.
    pub reason: String,
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "retention refused to prune the audit chain {:?}: record {} {}",
            self.chain, self.seq, self.reason
        )
    }
}
