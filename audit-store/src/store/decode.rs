//! Rows read back: links (with the digest of their columns), chain heads, checkpoints. Generic
//! over the backend's row type, so both backends decode alike.

use uuid::Uuid;

use crate::Result;
use crate::chain::RowDigest;
use crate::model::{COLUMNS, ChainHead, ChainRow, Checkpoint, CheckpointKind, ColumnType};

/// The digest of the stored columns of a row read back, starting at column `offset`, as
/// `chain::row_digest` computes it for a row written.
///
/// Text columns are hashed as the bytes stored, without checking their type or that they are
/// UTF-8 (a third of the decoding time of a verifier's scan): a value written as text hashes
/// as its bytes, and any other value (one changed in the database to a number, say) to other
/// bytes, so it does not match its chain hash.
pub(super) fn digest_columns<R: sqlx::Row>(row: &R, offset: usize) -> Result<[u8; 32]>
where
    usize: sqlx::ColumnIndex<R>,
    for<'r> Option<&'r [u8]>: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> i64: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> i32: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> Uuid: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
{
    let mut digest = RowDigest::new();
    for (i, column) in COLUMNS.iter().enumerate() {
        let at = offset + i;
        match column.ty {
            ColumnType::Uuid => digest.uuid(row.try_get::<Uuid, _>(at)?),
            ColumnType::BigInt => digest.int(row.try_get::<i64, _>(at)?),
            ColumnType::Int => {
                digest.optional_int(row.try_get::<Option<i32>, _>(at)?.map(i64::from))
            }
            ColumnType::Text => digest.bytes(row.try_get_unchecked::<Option<&[u8]>, _>(at)?),
        }
    }
    Ok(digest.finish())
}

/// A link read back from the select list of [`sql::link_select`](super::sql::link_select).
pub(super) fn chain_row_of<R: sqlx::Row>(row: &R) -> Result<ChainRow>
where
    usize: sqlx::ColumnIndex<R>,
    for<'r> Option<&'r [u8]>: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> i64: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> i32: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> Uuid: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
{
    Ok(ChainRow {
        seq: row.try_get(0)?,
        hash: bytes_at(row, 1)?,
        seal: bytes_at(row, 2)?,
        id: row.try_get(3)?,
        digest: digest_columns(row, 3)?,
    })
}

/// A byte column that may be NULL (as an edited link may be), empty when it is.
pub(super) fn bytes_at<R: sqlx::Row>(row: &R, at: usize) -> Result<Vec<u8>>
where
    usize: sqlx::ColumnIndex<R>,
    for<'r> Option<&'r [u8]>: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
{
    Ok(row
        .try_get::<Option<&[u8]>, _>(at)?
        .unwrap_or_default()
        .to_vec())
}

/// A chain head read back: `chain, seq, hash`.
pub(super) fn head_of<R: sqlx::Row>(row: &R) -> Result<ChainHead>
where
    usize: sqlx::ColumnIndex<R>,
    for<'r> String: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> i64: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> Vec<u8>: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
{
    Ok(ChainHead {
        chain: row.try_get(0)?,
        seq: row.try_get(1)?,
        hash: row.try_get(2)?,
    })
}

/// The select list of [`checkpoint_of`].
pub(super) const CHECKPOINT_COLUMNS: &str = "chain, seq, head, time_ms, kind, key_id, signature";

/// A checkpoint read back: [`CHECKPOINT_COLUMNS`].
pub(super) fn checkpoint_of<R: sqlx::Row>(row: &R) -> Result<Checkpoint>
where
    usize: sqlx::ColumnIndex<R>,
    for<'r> String: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> i64: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> Vec<u8>: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
{
    let kind: String = row.try_get(4)?;
    Ok(Checkpoint {
        account_id: row.try_get(0)?,
        seq: row.try_get(1)?,
        head: row.try_get(2)?,
        time_ms: row.try_get(3)?,
        // An unknown kind can only be an edit: it fails the signature check as a checkpoint.
        kind: CheckpointKind::parse(&kind).unwrap_or(CheckpointKind::Checkpoint),
        key_id: row.try_get(5)?,
        signature: row.try_get(6)?,
    })
}
