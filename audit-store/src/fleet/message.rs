//! The stream's messages: how a batch of records is packed into messages, and how an
//! ingestor takes a message apart again.
//!
//! A message carries one or more records of one subject (so of one partition, in the order
//! they were published): their JSON, one record per line (`\n` between them; a record's
//! JSON has no raw line break). Its `Nats-Msg-Id` is the record's id when it carries one;
//! when it carries several, it is derived from all of their ids in order (the first id, the
//! count, and 128 bits of their SHA-256), so a retried batch packs into the same messages
//! under the same ids, and the stream's duplicate window drops them.
//!
//! Packing many records into one message is what makes the stream cheap: JetStream's cost
//! is mostly per message (its acknowledgement, its index entry, its deletion once ingested,
//! an acknowledgement from the ingestor). Measured by `loadbench --variants audit-nats`
//! (BENCHMARKS.md, "Fleet mode").

use std::fmt::Write as _;

use bytes::Bytes;
use sha2::{Digest as _, Sha256};

use super::config::FleetConfig;
use crate::model::StoredRecord;

/// The most records one message may carry, for publishers
/// ([`FleetConfig::records_per_message`]) and ingestors alike (a message with more lines is
/// poison).
pub const MAX_RECORDS_PER_MESSAGE: usize = 4096;

/// A message ready to publish.
#[derive(Debug)]
pub(crate) struct Packed {
    pub(crate) subject: String,
    pub(crate) id: String,
    pub(crate) payload: Bytes,
    /// How many records it carries.
    pub(crate) records: u64,
}

/// Packs `rows` into messages: grouped by subject (the rows of one subject keep their
/// order), at most `records` records and `bytes` bytes each (a record larger than `bytes`
/// goes alone).
pub(crate) fn pack(
    rows: &[StoredRecord],
    config: &FleetConfig,
    records: usize,
    bytes: usize,
) -> Vec<Packed> {
    // Checked by `FleetConfig::validate`, but a destination made by `NatsDestination::new`
    // is not: 0 would pack nothing, more than the ingestors take would be moved aside.
    let records = records.clamp(1, MAX_RECORDS_PER_MESSAGE);
    let mut order: Vec<(u32, usize)> = rows
        .iter()
        .enumerate()
        .map(|(i, row)| (config.partition_of(row.account_id.as_deref()), i))
        .collect();
    // Stable: the rows of one partition stay in their order.
    order.sort_by_key(|&(partition, _)| partition);
    let mut packed = Vec::new();
    let mut start = 0;
    while start < order.len() {
        let partition = order[start].0;
        let mut end = start;
        let mut size = 0;
        while end < order.len() && order[end].0 == partition && end - start < records {
            let len = rows[order[end].1].record.len() + 1;
            if end > start && size + len > bytes {
                break;
            }
            size += len;
            end += 1;
        }
        let members = order[start..end].iter().map(|&(_, i)| &rows[i]);
        packed.push(one_message(config.subject_of(partition), members, size));
        start = end;
    }
    packed
}

fn one_message<'a>(
    subject: String,
    rows: impl ExactSizeIterator<Item = &'a StoredRecord> + Clone,
    size: usize,
) -> Packed {
    let n = rows.len();
    let mut payload = Vec::with_capacity(size);
    for row in rows.clone() {
        if !payload.is_empty() {
            payload.push(b'\n');
        }
        payload.extend_from_slice(row.record.as_bytes());
    }
    let mut ids = rows.map(|row| row.id);
    let first = ids.next().expect("a message carries a record");
    let id = if n == 1 {
        first.to_string()
    } else {
        let mut digest = Sha256::new();
        digest.update(first.as_bytes());
        for id in ids {
            digest.update(id.as_bytes());
        }
        let digest = digest.finalize();
        let mut hex = String::with_capacity(32);
        for byte in &digest[..16] {
            let _ = write!(hex, "{byte:02x}");
        }
        format!("{first}+{n}.{hex}")
    };
    Packed {
        subject,
        id,
        payload: Bytes::from(payload),
        records: n as u64,
    }
}

/// The records (lines) of a message's payload, as slices of it. A final line break ends the
/// last line (NDJSON's convention) rather than starting an empty one; an empty payload, or
/// an empty line between two, is one empty (unparseable) record.
pub(crate) fn records(payload: &Bytes) -> impl Iterator<Item = Bytes> + '_ {
    let body = lines_of(payload);
    // SIMD search: a byte-by-byte scan was an eighth of the ingestor's CPU (a profile of
    // `loadbench --variants audit-nats --nats-ingest backlog`).
    let mut start = 0;
    let mut ends = memchr::memchr_iter(b'\n', &payload[..body]).chain(std::iter::once(body));
    std::iter::from_fn(move || {
        let end = ends.next()?;
        let line = payload.slice(start..end);
        start = end + 1;
        Some(line)
    })
}

/// How many records a message's payload carries (as [`records`] splits it).
pub(crate) fn count(payload: &[u8]) -> usize {
    1 + memchr::memchr_iter(b'\n', &payload[..lines_of(payload)]).count()
}

/// The length of `payload` without the line break that ends its last line, if any.
fn lines_of(payload: &[u8]) -> usize {
    payload.len() - usize::from(payload.last() == Some(&b'\n'))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Rows of these accounts, ids 1, 2, ...; each record's JSON names its id.
    fn rows(accounts: &[Option<&str>]) -> Vec<StoredRecord> {
        accounts
            .iter()
            .enumerate()
            .map(|(i, account)| {
                let mut row = StoredRecord::sample(i as u128 + 1, *account);
                row.record = format!(r#"{{"id":{}}}"#, i + 1);
                row
            })
            .collect()
    }

    fn config() -> FleetConfig {
        FleetConfig::new("nats://127.0.0.1:4222").unwrap()
    }

    /// The ids the records of a message name, in order.
    fn ids_in(message: &Packed) -> Vec<u64> {
        records(&message.payload)
            .map(|line| {
                serde_json::from_slice::<serde_json::Value>(&line).unwrap()["id"]
                    .as_u64()
                    .unwrap()
            })
            .collect()
    }

    #[test]
    fn a_batch_packs_by_subject_in_order_within_bounds() {
        let accounts = [Some("a"), Some("b"), Some("a"), None, Some("a"), Some("b")];
        let rows = rows(&accounts);
        let config = config();
        let packed = pack(&rows, &config, 2, 1 << 20);
        let total: u64 = packed.iter().map(|p| p.records).sum();
        assert_eq!(total, 6);
        for message in &packed {
            let ids = ids_in(message);
            assert_eq!(ids.len() as u64, message.records);
            assert!(ids.len() <= 2);
            for id in &ids {
                let account = accounts[*id as usize - 1];
                assert_eq!(config.subject(account), message.subject);
            }
            let first = rows[ids[0] as usize - 1].id;
            if ids.len() == 1 {
                assert_eq!(message.id, first.to_string(), "one record: its own id");
            } else {
                assert!(
                    message.id.starts_with(&format!("{first}+2.")),
                    "{}",
                    message.id
                );
            }
        }
        // One account's records keep their order across its messages.
        let a_subject = config.subject(Some("a"));
        let a_ids: Vec<u64> = packed
            .iter()
            .filter(|m| m.subject == a_subject)
            .flat_map(ids_in)
            .collect();
        assert_eq!(a_ids, [1, 3, 5]);
    }

    #[test]
    fn the_same_records_pack_into_the_same_message_ids_and_others_do_not() {
        let rows = rows(&[Some("a"); 5]);
        let config = config();
        let ids = |rows: &[StoredRecord]| -> Vec<String> {
            pack(rows, &config, 10, 1 << 20)
                .into_iter()
                .map(|p| p.id)
                .collect()
        };
        assert_eq!(ids(&rows), ids(&rows));
        assert_ne!(ids(&rows), ids(&rows[..4]));
        let mut swapped = rows.clone();
        swapped.swap(1, 2);
        assert_ne!(ids(&rows), ids(&swapped));
    }

    #[test]
    fn a_message_holds_at_most_its_bytes_and_a_larger_record_goes_alone() {
        let rows = rows(&[Some("a"); 4]);
        let one = rows[0].record.len();
        let packed = pack(&rows, &config(), 100, 2 * one + 2);
        assert_eq!(packed.iter().map(|p| p.records).collect::<Vec<_>>(), [2, 2]);
        assert!(packed.iter().all(|p| p.payload.len() <= 2 * one + 2));
        assert_eq!(ids_in(&packed[0]), [1, 2]);
        let packed = pack(&rows, &config(), 100, 3);
        assert_eq!(packed.len(), 4, "each record alone");
    }

    #[test]
    fn a_records_bound_outside_what_ingestors_take_is_clamped() {
        // `NatsDestination::new` does not validate its config: 0 once made an empty message
        // (a panic in the lane, its batch dropped).
        let few = rows(&[Some("a"); 3]);
        assert_eq!(
            pack(&few, &config(), 0, 1 << 20).len(),
            3,
            "one record each"
        );
        let many = rows(&vec![Some("a"); MAX_RECORDS_PER_MESSAGE + 1]);
        let packed = pack(&many, &config(), usize::MAX, usize::MAX);
        assert_eq!(
            packed.iter().map(|p| p.records).collect::<Vec<_>>(),
            [MAX_RECORDS_PER_MESSAGE as u64, 1]
        );
    }

    #[test]
    fn a_payload_splits_into_its_lines() {
        let payload = Bytes::from_static(b"{\"a\":1}\n{\"b\":2}");
        let lines: Vec<Bytes> = records(&payload).collect();
        assert_eq!(lines, [&b"{\"a\":1}"[..], &b"{\"b\":2}"[..]]);
        assert_eq!(count(&payload), 2);
        // A final line break ends the last line; it does not start an empty record.
        let payload = Bytes::from_static(b"{\"a\":1}\n{\"b\":2}\n");
        assert_eq!(records(&payload).collect::<Vec<_>>(), lines);
        assert_eq!(count(&payload), 2);
        // An empty line between two is a record of its own (unparseable), as is a lone one.
        let payload = Bytes::from_static(b"{}\n\n{}");
        assert_eq!(
            records(&payload).collect::<Vec<_>>(),
            [&b"{}"[..], &b""[..], &b"{}"[..]]
        );
        assert_eq!(count(&payload), 3);
        let payload = Bytes::from_static(b"\n");
        assert_eq!(records(&payload).collect::<Vec<_>>(), [&b""[..]]);
        assert_eq!(count(&payload), 1);
        let payload = Bytes::from_static(b"{}");
        assert_eq!(records(&payload).count(), 1);
        assert_eq!(count(&payload), 1);
        assert_eq!(records(&Bytes::new()).count(), 1);
    }
}
