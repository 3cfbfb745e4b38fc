//! Reading links for verification from PostgreSQL: a sequential scan of every partition, or
//! one chain through the account index, rows streamed as the server reads them.

use futures_util::TryStreamExt as _;
use sqlx::Row as _;
use sqlx::postgres::{PgPool, PgRow};

use super::super::TableNames;
use super::super::decode::chain_row_of;
use super::super::scan::{Chunker, Chunks, scan_statement};
use super::super::sql::{self, Dialect};
use crate::Result;
use crate::model::{ChainScope, LINK_COLUMNS, ScannedLink, index_of};

/// A link read back from [`sql::link_select`], with the chain it belongs to (its
/// `account_id`, `""` when it has none).
fn scanned_link_of(row: &PgRow) -> Result<ScannedLink> {
    const ACCOUNT: usize = LINK_COLUMNS.len() + index_of("account_id");
    let chain = row.try_get::<Option<&str>, _>(ACCOUNT)?.unwrap_or("");
    Ok(ScannedLink {
        chain: chain.to_owned(),
        row: chain_row_of(row)?,
    })
}

/// Reads the links of `scope` into `tx`'s chunks (see
/// [`ChainedStore::chain_scan`](crate::store::ChainedStore::chain_scan)).
pub(super) async fn scan(
    pool: PgPool,
    names: std::sync::Arc<TableNames>,
    scope: ChainScope,
    tx: Chunks,
) -> Result<()> {
    let mut conn = pool.acquire().await?;
    let (sql, binds) = scan_statement(&names, &scope, Dialect::Postgres, &sql::link_select());
    let whole = binds.is_none();
    if whole {
        // A scan joining another one in progress would start mid-table and wrap around:
        // every chain's start would come last, and wait in memory.
        sqlx::query("SET synchronize_seqscans = off")
            .execute(&mut *conn)
            .await?;
    }
    let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
    if let Some((chain, first, last)) = binds {
        if !chain.is_empty() {
            query = query.bind(chain);
        }
        query = query.bind(first).bind(last);
    }
    let mut complete = true;
    {
        let mut rows = query.fetch(&mut *conn);
        let mut chunks = Chunker::new(tx);
        while let Some(row) = rows.try_next().await? {
            if !chunks.push(scanned_link_of(&row)?).await {
                complete = false; // the reader is gone
                break;
            }
        }
        if complete {
            chunks.finish().await;
        }
    }
    if !complete {
        // The rest of the result is still on its way: rather than read it to reuse the
        // connection, close it.
        conn.close_on_drop();
    } else if whole {
        sqlx::query("RESET synchronize_seqscans")
            .execute(&mut *conn)
            .await?;
    }
    Ok(())
}
