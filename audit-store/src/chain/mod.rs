//! Tamper evidence: a hash chain over every account's audit log, with signed checkpoints.
//!
//! A store given [`ChainKeys`] (`SqliteStore::chained`, `PostgresStore::chained`) writes every
//! record as the next link of its account's chain, in the same transaction as the record:
//!
//! - `chain_seq`: 1, 2, 3, ... per account, without gaps;
//! - `chain_hash` = SHA-256 over the chain's name, the sequence number, the previous record's
//!   hash and every stored column of the record (its JSON and the filter columns);
//! - `chain_seal` = HMAC-SHA256 of that hash under a key derived from the server's
//!   [`ChainSecret`], so someone who can write to the database but does not hold the secret
//!   cannot recompute a link that verifies.
//!
//! The sequence number is assigned under a lock on the account's row in `audit_chain_heads`,
//! held for the writing transaction: that row is the one ordering point per account, so
//! several writers, and several app instances sharing one PostgreSQL, still build a single
//! linear chain per account.
//!
//! At start-up, every few records or seconds, hourly and at shutdown (see
//! [`PipelineBuilder::checkpoint_after`](crate::pipeline::PipelineBuilder::checkpoint_after))
//! the store signs a [`Checkpoint`](crate::model::Checkpoint) per account with Ed25519: the account, its last sequence
//! number, the head hash and the time. Checkpoints are also handed to a [`CheckpointSink`], to
//! be kept outside the database: the newest one is what reveals that the newest records were
//! deleted. Retention verifies the prefix it prunes, then leaves a signed *anchor* where an
//! account's chain now starts, also handed to the sink (see
//! [`ChainedStore::retain`](crate::store::ChainedStore::retain)).
//!
//! The secret comes from a secret manager or a file only its owner may read
//! ([`ChainSecret::from_file`] refuses any other).
//!
//! [`verify::verify`](crate::verify::verify) walks one account's chain and reports `ok` with
//! counts, or the first broken sequence number and the kind of break;
//! [`verify::verify_all`](crate::verify::verify_all) does the same for every chain of a store
//! in one pass over its records. The query router serves the first at
//! `GET /accounts/{account_id}/logs/audit/verify`, and the `audit-verify` binary runs both
//! from the command line with only the public key.
//!
//! This module computes: hashes, seals, signatures and keys. The stored shapes are in
//! [`model`](crate::model), the stores that read and write them in [`store`](crate::store).

mod checkpoint;
mod keys;

use std::collections::HashMap;

use hmac::{Hmac, KeyInit, Mac};
use sha2::{Digest, Sha256};
use uuid::Uuid;

pub use checkpoint::{CheckpointSink, JsonLinesCheckpoints, Publish};
pub(crate) use keys::SealKey;
pub use keys::{ChainKeys, ChainSecret, KeyError, PublicKey, Verifier};

use crate::model::{ColumnValue, Link, StoredRecord};

/// The hash before a chain's first record.
pub(crate) const GENESIS: [u8; 32] = [0; 32];

/// The chain a record belongs to: its account's id, `""` for records without an account.
pub(crate) fn chain_of(row: &StoredRecord) -> &str {
    row.account_id.as_deref().unwrap_or("")
}

/// A running SHA-256 over a record's stored columns, each encoded unambiguously (a tag, a
/// length where variable). Writers and verifiers feed the same columns in the same order.
pub(crate) struct RowDigest(Sha256);

impl RowDigest {
    pub(crate) fn new() -> Self {
        Self(Sha256::new_with_prefix(b"audit-row/v1\0"))
    }

    pub(crate) fn text(&mut self, value: Option<&str>) {
        match value {
            None => self.0.update([0]),
            Some(text) => {
                self.0.update([1]);
                self.0.update((text.len() as u64).to_be_bytes());
                self.0.update(text.as_bytes());
            }
        }
    }

    /// A text column read back as its stored bytes: encoded as [`text`](Self::text) encodes
    /// the string they spell.
    pub(crate) fn bytes(&mut self, value: Option<&[u8]>) {
        match value {
            None => self.0.update([0]),
            Some(bytes) => {
                self.0.update([1]);
                self.0.update((bytes.len() as u64).to_be_bytes());
                self.0.update(bytes);
            }
        }
    }

    pub(crate) fn int(&mut self, value: i64) {
        self.0.update([2]);
        self.0.update(value.to_be_bytes());
    }

    /// A nullable integer column: as [`int`](Self::int) encodes it, or NULL as
    /// [`text`](Self::text) encodes one (records from before the column was nullable have a
    /// value, and keep their digests).
    pub(crate) fn optional_int(&mut self, value: Option<i64>) {
        match value {
            None => self.0.update([0]),
            Some(value) => self.int(value),
        }
    }

    pub(crate) fn uuid(&mut self, value: Uuid) {
        self.0.update([3]);
        self.0.update(value.as_bytes());
    }

    pub(crate) fn finish(self) -> [u8; 32] {
        self.0.finalize().into()
    }
}

/// The digest of a record's columns, as a writer computes it: every column of
/// [`COLUMNS`](crate::model::COLUMNS), in order.
pub(crate) fn row_digest(r: &StoredRecord) -> [u8; 32] {
    let mut d = RowDigest::new();
    for column in &crate::model::COLUMNS {
        match column.value(r) {
            ColumnValue::Uuid(v) => d.uuid(v),
            ColumnValue::BigInt(v) => d.int(v),
            ColumnValue::Int(v) => d.optional_int(v.map(i64::from)),
            ColumnValue::Text(v) => d.text(v),
        }
    }
    d.finish()
}

fn put_name(hasher: &mut impl Digest, chain: &str) {
    hasher.update((chain.len() as u64).to_be_bytes());
    hasher.update(chain.as_bytes());
}

/// The chain hash of the record at `seq` of `chain`, after `prev`.
pub(crate) fn link(prev: &[u8], chain: &str, seq: i64, digest: &[u8; 32]) -> [u8; 32] {
    let mut h = Sha256::new_with_prefix(b"audit-chain/v1\0");
    put_name(&mut h, chain);
    h.update(seq.to_be_bytes());
    h.update(prev);
    h.update(digest);
    h.finalize().into()
}

/// The seal of a chain hash: it binds the hash to its chain and position under the secret.
pub(crate) fn seal(key: &SealKey, chain: &str, seq: i64, hash: &[u8]) -> [u8; 32] {
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(key.bytes()).expect("any key length");
    mac.update(b"audit-seal/v1\0");
    mac.update(&(chain.len() as u64).to_be_bytes());
    mac.update(chain.as_bytes());
    mac.update(&seq.to_be_bytes());
    mac.update(hash);
    mac.finalize().into_bytes().into()
}

/// The MAC of one line of spool segment `segment` (see the pipeline's spool): it binds the
/// record's JSON text to the segment, under the spool key.
pub(crate) fn spool_mac(key: &SealKey, segment: u64, line: &[u8]) -> [u8; 32] {
    spool_hmac(key, segment, line)
        .finalize()
        .into_bytes()
        .into()
}

/// Whether `mac` is [`spool_mac`] of `line` (compared in constant time).
pub(crate) fn spool_mac_matches(key: &SealKey, segment: u64, line: &[u8], mac: &[u8]) -> bool {
    spool_hmac(key, segment, line).verify_slice(mac).is_ok()
}

fn spool_hmac(key: &SealKey, segment: u64, line: &[u8]) -> Hmac<Sha256> {
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(key.bytes()).expect("any key length");
    mac.update(b"audit-spool/v1\0");
    mac.update(&segment.to_be_bytes());
    mac.update(&(line.len() as u64).to_be_bytes());
    mac.update(line);
    mac
}

/// Links `rows` onto their chains, in order. `heads` holds every chain the rows belong to
/// (a new chain at `(0, GENESIS)`) and is advanced to the new heads.
pub(crate) fn link_rows(
    keys: &ChainKeys,
    heads: &mut HashMap<String, (i64, [u8; 32])>,
    rows: &[StoredRecord],
) -> Vec<Link> {
    link_digested(keys, heads, rows, &row_digests(rows))
}

/// [`row_digest`] of each row: the bulk of linking's work (a hash over the whole record),
/// and independent of the chains' heads, so writers compute it while the database works.
pub(crate) fn row_digests(rows: &[StoredRecord]) -> Vec<[u8; 32]> {
    rows.iter().map(row_digest).collect()
}

/// [`link_rows`] with the rows' digests already computed ([`row_digests`]).
pub(crate) fn link_digested(
    keys: &ChainKeys,
    heads: &mut HashMap<String, (i64, [u8; 32])>,
    rows: &[StoredRecord],
    digests: &[[u8; 32]],
) -> Vec<Link> {
    rows.iter()
        .zip(digests)
        .map(|(row, digest)| {
            let chain = chain_of(row);
            let head = match heads.get_mut(chain) {
                Some(head) => head,
                None => heads.entry(chain.to_owned()).or_insert((0, GENESIS)),
            };
            let seq = head.0 + 1;
            let hash = link(&head.1, chain, seq, digest);
            *head = (seq, hash);
            Link {
                seq,
                hash,
                seal: seal(keys.seal_key(), chain, seq, &hash),
            }
        })
        .collect()
}

/// Keeps the first of rows with the same id: a batch must not chain a record twice.
pub(crate) fn dedup_ids(rows: &[StoredRecord]) -> std::borrow::Cow<'_, [StoredRecord]> {
    let mut seen = std::collections::HashSet::with_capacity(rows.len());
    if rows.iter().all(|r| seen.insert(r.id)) {
        return std::borrow::Cow::Borrowed(rows);
    }
    seen.clear();
    std::borrow::Cow::Owned(rows.iter().filter(|r| seen.insert(r.id)).cloned().collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Checkpoint, CheckpointKind};

    fn row(id: u128, account: Option<&str>) -> StoredRecord {
        StoredRecord::sample(id, account)
    }

    /// Values computed before the column list was a table (commit 0400249): a store's
    /// existing chains must keep verifying.
    #[test]
    fn digests_links_seals_and_signatures_are_those_of_stored_chains() {
        let mut r = row(7, Some("acc_demo"));
        r.actor_email = Some("alice@example.com".into());
        r.raw_status_code = Some(201);
        let digest = row_digest(&r);
        assert_eq!(
            hex::encode(digest),
            "02cd3ecf8f0024d6fe2273c109ed97e257ef001d7e4b9b644634f3e9d8c3c4ab"
        );
        let keys = ChainKeys::from_secret(&ChainSecret::from_bytes([9; 32]));
        let hash = link(&GENESIS, "acc_demo", 1, &digest);
        assert_eq!(
            hex::encode(hash),
            "7baef598f15ab6b13d1cdd8c57c0c0b5e0f661d73b3d0e2b5b496d3e1ce31650"
        );
        assert_eq!(
            hex::encode(seal(keys.seal_key(), "acc_demo", 1, &hash)),
            "bbc15b85ffef558ebb8205fa7548fdac361e7389e0f746c76de7f39e3954e9cc"
        );
        let checkpoint = Checkpoint::sign(
            &keys,
            CheckpointKind::Checkpoint,
            "acc_demo".into(),
            1,
            hash.to_vec(),
            1000,
        );
        assert_eq!(
            hex::encode(&checkpoint.signature),
            "53ff59038acfa70d2b34b5f2deb1f2a6d90a5d60bae23533ffdfde5c1f3aa02f\
             c6520b5bf65f32974c4ea79144c401e5336a54ec3223883148dc2917bf54ce0f"
        );
        assert_eq!(
            keys.public_key().to_hex(),
            "45ac5396d4ef6f3653e00a8d0df29b526d4e8628466ef4f37269f8b8c79aa929"
        );
    }

    #[test]
    fn rows_link_per_account_in_order() {
        let keys = ChainKeys::from_secret(&ChainSecret::from_bytes([9; 32]));
        let rows = [
            row(1, Some("a")),
            row(2, Some("b")),
            row(3, Some("a")),
            row(4, None),
        ];
        let mut heads = HashMap::new();
        let links = link_rows(&keys, &mut heads, &rows);
        assert_eq!(
            links.iter().map(|l| l.seq).collect::<Vec<_>>(),
            [1, 1, 2, 1]
        );
        assert_eq!(
            links[2].hash,
            link(&links[0].hash, "a", 2, &row_digest(&rows[2]))
        );
        assert_eq!(heads["a"], (2, links[2].hash));
        assert_eq!(heads[""], (1, links[3].hash));
        assert_eq!(links[0].seal, seal(keys.seal_key(), "a", 1, &links[0].hash));
        // Same record, other position or chain: another hash and seal.
        assert_ne!(
            link(&GENESIS, "a", 1, &row_digest(&rows[0])),
            link(&GENESIS, "b", 1, &row_digest(&rows[0]))
        );
        assert_ne!(
            seal(keys.seal_key(), "a", 1, &links[0].hash),
            seal(keys.seal_key(), "a", 2, &links[0].hash)
        );
    }

    #[test]
    fn every_column_is_covered_and_encoding_is_unambiguous() {
        let base = row(1, Some("a"));
        let digest = row_digest(&base);
        let mut changed = base.clone();
        changed.actor_email = Some(String::new());
        assert_ne!(row_digest(&changed), digest, "NULL and empty differ");
        let mut changed = base.clone();
        changed.raw_status_code = Some(201);
        assert_ne!(row_digest(&changed), digest);
        let mut changed = base.clone();
        changed.record = "{} ".into();
        assert_ne!(row_digest(&changed), digest);
        // Moving bytes between adjacent columns changes the digest.
        let (mut x, mut y) = (base.clone(), base);
        x.raw_ray_id = "ab".into();
        x.raw_method = Some("c".into());
        y.raw_ray_id = "a".into();
        y.raw_method = Some("bc".into());
        assert_ne!(row_digest(&x), row_digest(&y));
    }

    #[test]
    fn text_read_back_as_bytes_digests_alike() {
        for value in [None, Some(""), Some("café {\"a\":1}")] {
            let (mut a, mut b) = (RowDigest::new(), RowDigest::new());
            a.text(value);
            b.bytes(value.map(str::as_bytes));
            assert_eq!(a.finish(), b.finish());
        }
    }

    #[test]
    fn checkpoints_round_trip_json_and_detect_any_change() {
        let keys = ChainKeys::from_secret(&ChainSecret::from_bytes([5; 32]));
        let verifier = Verifier::public(keys.public_key());
        let cp = Checkpoint::sign(
            &keys,
            CheckpointKind::Checkpoint,
            "acc".into(),
            42,
            vec![7; 32],
            1000,
        );
        assert!(cp.is_signed_for(&verifier));
        let json = serde_json::to_string(&cp).unwrap();
        let back: Checkpoint = serde_json::from_str(&json).unwrap();
        assert_eq!(back, cp);
        let mut changed = cp.clone();
        changed.seq = 41;
        assert!(!changed.is_signed_for(&verifier));
        let mut changed = cp.clone();
        changed.kind = CheckpointKind::Anchor;
        assert!(!changed.is_signed_for(&verifier));
        let mut changed = cp;
        changed.head[0] ^= 1;
        assert!(!changed.is_signed_for(&verifier));
    }

    #[test]
    fn spool_macs_bind_the_line_its_segment_and_the_key() {
        let keys = ChainKeys::from_secret(&ChainSecret::from_bytes([9; 32]));
        let other = ChainKeys::from_secret(&ChainSecret::from_bytes([8; 32]));
        let mac = spool_mac(keys.spool_key(), 7, b"{\"id\":1}");
        assert!(spool_mac_matches(keys.spool_key(), 7, b"{\"id\":1}", &mac));
        assert!(!spool_mac_matches(keys.spool_key(), 7, b"{\"id\":2}", &mac));
        assert!(!spool_mac_matches(keys.spool_key(), 8, b"{\"id\":1}", &mac));
        assert!(!spool_mac_matches(
            other.spool_key(),
            7,
            b"{\"id\":1}",
            &mac
        ));
        assert!(!spool_mac_matches(
            keys.spool_key(),
            7,
            b"{\"id\":1}",
            &mac[..31]
        ));
        // Not a record's seal under the other key.
        assert_ne!(mac, seal(keys.seal_key(), "", 7, b"{\"id\":1}"));
    }

    #[test]
    fn duplicate_ids_in_a_batch_are_chained_once() {
        let rows = [row(1, Some("a")), row(2, Some("a")), row(1, Some("a"))];
        assert_eq!(dedup_ids(&rows).len(), 2);
        assert!(matches!(
            dedup_ids(&rows[..2]),
            std::borrow::Cow::Borrowed(_)
        ));
    }
}
