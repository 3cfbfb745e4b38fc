//! Batches written to PostgreSQL by `COPY audit_logs FROM STDIN (FORMAT binary)`.
//!
//! `COPY` is the cheapest way into PostgreSQL, for the server and for us: the server inserts
//! the rows of a partition in multi-row heap writes and parses no text, and we encode every
//! field straight from the [`StoredRecord`] into the wire buffer, cloning nothing. It cannot
//! skip a row that is already stored, so a duplicate id (a retried batch) fails the whole
//! statement with `unique_violation` ([`is_duplicate`]): an unchained batch is then written
//! again with `INSERT ... ON CONFLICT DO NOTHING`, a chained one rolled back and linked again
//! without its stored rows.
//!
//! A `COPY` cut off part way (the pipeline's write timeout drops the write) leaves its
//! connection between messages of the protocol; [`Guarded`] closes such a connection instead
//! of handing it back to the pool.
//!
//! The format, from PostgreSQL's `COPY` reference: a signature and two zero words, then per
//! row a 16-bit field count and per field a 32-bit length (`-1` for NULL) and the value in the
//! type's binary form (`uuid`: 16 bytes; `int8`, `int4`: big-endian; `text`: its UTF-8 bytes;
//! `bytea`: the bytes), and a `-1` field count to end.

use sqlx::pool::PoolConnection;
use sqlx::postgres::{PgConnection, Postgres};

use crate::model::{COLUMNS, ColumnValue, LINK_COLUMNS, Link, StoredRecord};
use crate::store::{TableNames, sql};

/// The statement of a batch, with each record's link when chained.
fn statement(names: &TableNames, chained: bool) -> String {
    let columns = if chained {
        sql::linked_columns()
    } else {
        sql::columns()
    };
    format!(
        "COPY {} ({columns}) FROM STDIN (FORMAT binary)",
        names.logs()
    )
}

/// `PGCOPY\n\377\r\n\0`, no flags, no header extension.
const HEADER: &[u8] = b"PGCOPY\n\xff\r\n\0\0\0\0\0\0\0\0\0";

/// The field count that ends the data.
const TRAILER: &[u8] = &(-1_i16).to_be_bytes();

/// What the encoder fills before handing a chunk to the connection: large enough that a
/// message costs little per row, small enough that a batch never sits whole in memory twice.
const CHUNK: usize = 256 * 1024;

/// The fewest bytes of records' JSON a batch holds for [`copy_rows`] to write it; smaller ones
/// go by one `INSERT` ([`pays`]).
///
/// A `COPY` ends with `CopyDone` in a write of its own, and sqlx 0.9.0 leaves Nagle's algorithm
/// on (sqlx issue #4335, fixed upstream but not yet released): the kernel holds that small
/// segment until the server acknowledges the previous small one, which the server delays
/// (40 ms on Linux), having nothing to answer yet. Measured on loopback: a 4-row `COPY` took
/// 44 ms where an `INSERT` took under 1 ms; from one full segment (64 KiB on loopback) on,
/// no stall. Strict mode waits for exactly such small batches, and below this size `COPY`
/// saves little server CPU anyway.
pub(crate) const MIN_BYTES: usize = 64 * 1024;

/// Whether `records` are worth a `COPY` (see [`MIN_BYTES`]).
pub(crate) fn pays(records: &[StoredRecord]) -> bool {
    let mut bytes = 0;
    records.iter().any(|r| {
        bytes += r.record.len();
        bytes >= MIN_BYTES
    })
}

/// Writes `records` (with their `links` when chained, one per record) in one `COPY` on
/// `conn`. Returns the rows written: all of them, or an error and none (one statement).
pub(crate) async fn copy_rows(
    conn: &mut PgConnection,
    names: &TableNames,
    records: &[StoredRecord],
    links: Option<&[Link]>,
) -> sqlx::Result<u64> {
    debug_assert!(links.is_none_or(|l| l.len() == records.len()));
    let mut copy = conn.copy_in_raw(&statement(names, links.is_some())).await?;
    let mut buf = Vec::with_capacity(CHUNK + 4096);
    buf.extend_from_slice(HEADER);
    for (i, record) in records.iter().enumerate() {
        if let Err(e) = encode_row(&mut buf, record, links.map(|l| &l[i])) {
            let _ = copy.abort("a field too long for PostgreSQL").await;
            return Err(e);
        }
        if buf.len() >= CHUNK {
            if let Err(e) = copy.send(buf.as_slice()).await {
                // The connection is already broken; `abort` tells the server if it is not.
                let _ = copy.abort("the client failed to send a batch").await;
                return Err(e);
            }
            buf.clear();
        }
    }
    buf.extend_from_slice(TRAILER);
    copy.send(buf.as_slice()).await?;
    copy.finish().await
}

/// A pooled connection for a write that may be cancelled: closed when dropped, unless the
/// write finished and called [`release`](Self::release).
pub(crate) struct Guarded(Option<PoolConnection<Postgres>>);

impl Guarded {
    pub(crate) fn new(conn: PoolConnection<Postgres>) -> Self {
        Self(Some(conn))
    }

    /// The connection, until released.
    pub(crate) fn conn(&mut self) -> &mut PgConnection {
        // Only `release`, which takes `self`, empties it.
        self.0
            .as_deref_mut()
            .expect("a guarded connection is held until released")
    }

    /// The write finished (well or not): the connection goes back to the pool, which checks
    /// it as usual.
    pub(crate) fn release(mut self) {
        drop(self.0.take());
    }
}

impl Drop for Guarded {
    fn drop(&mut self) {
        if let Some(conn) = self.0.as_mut() {
            conn.close_on_drop();
        }
    }
}

/// Whether `error` is PostgreSQL's `unique_violation`: the batch holds an id already stored.
pub(crate) fn is_duplicate(error: &sqlx::Error) -> bool {
    matches!(error, sqlx::Error::Database(e) if e.code().as_deref() == Some("23505"))
}

/// One row: every stored column, and the link's when chained.
fn encode_row(out: &mut Vec<u8>, r: &StoredRecord, link: Option<&Link>) -> sqlx::Result<()> {
    let fields = COLUMNS.len()
        + if link.is_some() {
            LINK_COLUMNS.len()
        } else {
            0
        };
    out.extend_from_slice(&(fields as i16).to_be_bytes());
    for column in &COLUMNS {
        match column.value(r) {
            ColumnValue::Uuid(v) => bytes(out, Some(v.as_bytes()))?,
            ColumnValue::BigInt(v) => bytes(out, Some(&v.to_be_bytes()))?,
            ColumnValue::Int(v) => bytes(out, v.map(i32::to_be_bytes).as_ref().map(|b| &b[..]))?,
            ColumnValue::Text(v) => text(out, v)?,
        }
    }
    if let Some(link) = link {
        bytes(out, Some(&link.seq.to_be_bytes()))?;
        bytes(out, Some(&link.hash))?;
        bytes(out, Some(&link.seal))?;
    }
    Ok(())
}

fn text(out: &mut Vec<u8>, value: Option<&str>) -> sqlx::Result<()> {
    bytes(out, value.map(str::as_bytes))
}

/// A field: its length and bytes, or `-1` for NULL.
fn bytes(out: &mut Vec<u8>, value: Option<&[u8]>) -> sqlx::Result<()> {
    match value {
        None => out.extend_from_slice(&(-1_i32).to_be_bytes()),
        Some(v) => {
            let len = i32::try_from(v.len()).map_err(|_| {
                sqlx::Error::Encode(
                    format!(
                        "a field of {} bytes, over the 2 GiB a COPY field can hold",
                        v.len()
                    )
                    .into(),
                )
            })?;
            out.extend_from_slice(&len.to_be_bytes());
            out.extend_from_slice(v);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_statements_name_the_columns_in_the_order_rows_are_encoded() {
        assert!(
            statement(&TableNames::default(), false)
                .starts_with("COPY audit_logs (id, time_ms, account_id, ")
        );
        assert!(
            statement(&TableNames::default(), true)
                .contains("record, chain_seq, chain_hash, chain_seal)")
        );
    }

    #[test]
    fn copy_pays_from_min_bytes_of_records_on() {
        let record = StoredRecord::sample(42, Some("acc"));
        let per_row = record.record.len();
        let under = vec![record.clone(); (MIN_BYTES - 1) / per_row];
        assert!(!pays(&under));
        assert!(!pays(&[]));
        let at = vec![record; MIN_BYTES.div_ceil(per_row)];
        assert!(pays(&at));
    }

    #[test]
    fn a_row_is_a_field_count_then_lengths_and_values() {
        let record = StoredRecord::sample(42, Some("023e105f4ecef8ad9ca31a8372d0c353"));
        let mut out = Vec::new();
        encode_row(&mut out, &record, None).unwrap();
        assert_eq!(&out[..2], &24_i16.to_be_bytes());
        // id: 16 bytes of uuid.
        assert_eq!(&out[2..6], &16_i32.to_be_bytes());
        assert_eq!(&out[6..22], record.id.as_bytes());
        // time_ms: 8 bytes, big-endian.
        assert_eq!(&out[22..26], &8_i32.to_be_bytes());
        assert_eq!(&out[26..34], &record.time_ms.to_be_bytes());
        // The record's JSON is the last field.
        let json = record.record.as_bytes();
        assert_eq!(&out[out.len() - json.len()..], json);
        let len = i32::try_from(json.len()).unwrap();
        let at = out.len() - json.len() - 4;
        assert_eq!(&out[at..at + 4], &len.to_be_bytes());
    }

    #[test]
    fn null_is_a_length_of_minus_one_and_a_chained_row_has_27_fields() {
        let record = StoredRecord::sample(42, None);
        let link = Link {
            seq: 7,
            hash: [1; 32],
            seal: [2; 32],
        };
        let mut out = Vec::new();
        encode_row(&mut out, &record, Some(&link)).unwrap();
        assert_eq!(&out[..2], &27_i16.to_be_bytes());
        let mut tail = Vec::new();
        bytes(&mut tail, Some(&7_i64.to_be_bytes())).unwrap();
        bytes(&mut tail, Some(&[1; 32])).unwrap();
        bytes(&mut tail, Some(&[2; 32])).unwrap();
        assert!(out.ends_with(&tail));
        let mut null = Vec::new();
        text(&mut null, None).unwrap();
        assert_eq!(null, (-1_i32).to_be_bytes());
    }
}
