//! Reading links for verification from SQLite: the whole store in one pass in table order, or
//! one chain through the account index, each row's text columns packed into two values.

use std::time::Duration;

use futures_util::{FutureExt as _, TryStreamExt as _};
use sqlx::Row as _;
use sqlx::sqlite::{SqlitePool, SqliteRow};
use uuid::Uuid;

use super::super::TableNames;
use super::super::scan::{Chunker, Chunks, scan_statement};
use super::super::sql::Dialect;
use crate::chain::RowDigest;
use crate::model::{
    COLUMNS, ChainRow, ChainScope, ColumnType, LINK_COLUMNS, ScannedLink, index_of, text_columns,
};
use crate::{Result, StoreError};

/// `mmap_size` of the connection that reads a whole store for verification: the file is read
/// in place instead of copied page by page out of the OS cache (`pread`). SQLite caps it at
/// its compile-time maximum (2 GB in the bundled build); beyond that it reads as usual.
const SCAN_MMAP_BYTES: i64 = 1 << 40;
/// How long the scan waits when no row is ready, letting the worker fill the buffer.
const SCAN_NAP: Duration = Duration::from_millis(1);

/// The columns of [`COLUMNS`] read as typed values (the others are text, packed).
fn typed_columns() -> impl Iterator<Item = &'static crate::model::StoredColumn> {
    COLUMNS.iter().filter(|c| c.ty != ColumnType::Text)
}

/// The select list of [`packed_link_of`], for SQLite (3.44 or later, as bundled): the link
/// columns, the typed columns, and the text columns packed into two values, their byte
/// lengths (`-1` for NULL) and their concatenation. SQLite's driver copies every value of a
/// row into its own allocation before handing it over: 8 values instead of 27 take a third
/// off the verifier's cost per record.
fn packed_select() -> String {
    let lengths: Vec<String> = text_columns()
        .map(|c| format!("ifnull(octet_length({}), -1)", c.name))
        .collect();
    let texts: Vec<&str> = text_columns().map(|c| c.name).collect();
    let typed: Vec<&str> = typed_columns().map(|c| c.name).collect();
    format!(
        "{}, {}, concat_ws(',', {}), concat({})",
        LINK_COLUMNS.join(", "),
        typed.join(", "),
        lengths.join(", "),
        texts.join(", ")
    )
}

/// The text columns of a packed row, one after the other.
struct Packed<'r> {
    lengths: std::slice::Split<'r, u8, fn(&u8) -> bool>,
    texts: &'r [u8],
    at: usize,
}

impl<'r> Packed<'r> {
    fn next(&mut self) -> Option<Option<&'r [u8]>> {
        let n: i64 = std::str::from_utf8(self.lengths.next()?)
            .ok()?
            .parse()
            .ok()?;
        if n < 0 {
            return Some(None);
        }
        let end = usize::try_from(n)
            .ok()
            .and_then(|n| self.at.checked_add(n))
            .filter(|end| *end <= self.texts.len())?;
        let text = &self.texts[self.at..end];
        self.at = end;
        Some(Some(text))
    }
}

/// A link read back from [`packed_select`], with its chain, digested as the columns one by
/// one would be.
fn packed_link_of(row: &SqliteRow) -> Result<ScannedLink> {
    let typed = LINK_COLUMNS.len();
    let texts_at = typed + typed_columns().count();
    let id: Uuid = row.try_get(typed)?;
    let malformed = || StoreError::Corrupt(format!("record {id}: unreadable packed columns"));
    let lengths: &[u8] = row.try_get_unchecked(texts_at)?;
    let mut packed = Packed {
        lengths: lengths.split((|b| *b == b',') as fn(&u8) -> bool),
        texts: row.try_get_unchecked(texts_at + 1)?,
        at: 0,
    };
    let mut digest = RowDigest::new();
    let mut chain = String::new();
    let mut next_typed = typed;
    for (i, column) in COLUMNS.iter().enumerate() {
        match column.ty {
            ColumnType::Uuid => digest.uuid(row.try_get(next_typed)?),
            ColumnType::BigInt => digest.int(row.try_get(next_typed)?),
            ColumnType::Int => {
                digest.optional_int(row.try_get::<Option<i32>, _>(next_typed)?.map(i64::from))
            }
            ColumnType::Text => {
                let text = packed.next().ok_or_else(malformed)?;
                if i == index_of("account_id") {
                    chain = String::from_utf8_lossy(text.unwrap_or_default()).into_owned();
                }
                digest.bytes(text);
                continue;
            }
        }
        next_typed += 1;
    }
    if packed.at != packed.texts.len() {
        return Err(malformed());
    }
    Ok(ScannedLink {
        chain,
        row: ChainRow {
            seq: row.try_get(0)?,
            id,
            digest: digest.finish(),
            hash: super::super::decode::bytes_at(row, 1)?,
            seal: super::super::decode::bytes_at(row, 2)?,
        },
    })
}

/// Reads the links of `scope` into `tx`'s chunks (see
/// [`ChainedStore::chain_scan`](crate::store::ChainedStore::chain_scan)).
pub(super) async fn scan(
    pool: SqlitePool,
    names: std::sync::Arc<TableNames>,
    scope: ChainScope,
    tx: Chunks,
) -> Result<()> {
    let mut conn = pool.acquire().await?;
    let whole = matches!(scope, ChainScope::All);
    let (sql, binds) = scan_statement(&names, &scope, Dialect::Sqlite, &packed_select());
    if whole {
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "PRAGMA mmap_size = {SCAN_MMAP_BYTES}"
        )))
        .execute(&mut *conn)
        .await?;
    }
    let outcome = async {
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
        if let Some((chain, first, last)) = binds {
            if !chain.is_empty() {
                query = query.bind(chain);
            }
            query = query.bind(first).bind(last);
        }
        let mut rows = query.fetch(&mut *conn);
        let mut chunks = Chunker::new(tx);
        loop {
            // Rows come from sqlx's worker thread one by one. Waiting for each as it comes
            // costs a wake-up (a futex call and a context switch) per row, more than decoding
            // it: when none is ready, nap and take a burst.
            let next = match rows.try_next().now_or_never() {
                Some(next) => next?,
                None => {
                    tokio::time::sleep(SCAN_NAP).await;
                    rows.try_next().await?
                }
            };
            let Some(row) = next else { break };
            if !chunks.push(packed_link_of(&row)?).await {
                return Ok(()); // the reader is gone
            }
        }
        chunks.finish().await;
        Result::Ok(())
    }
    .await;
    if whole {
        // The pooled connection goes back to reading through the page cache.
        sqlx::query("PRAGMA mmap_size = 0")
            .execute(&mut *conn)
            .await?;
    }
    outcome
}
