//! PostgreSQL for the benchmarks: which server, whether it answers, and a schema of the
//! benchmark's own for every run (the store's tables built by its own `migrate()`).

use std::str::FromStr;
use std::time::Duration;

use audit_store::PostgresStore;
use audit_store::store::AuditStore;
use sqlx::postgres::{PgConnectOptions, PgConnection, PgPool, PgPoolOptions};
use sqlx::{AssertSqlSafe, Connection as _, Executor as _};

use super::BoxResult;
use super::cpu::local_postmaster;

/// The server when no variable names one.
pub(crate) const DEFAULT_URL: &str = "postgres://postgres@127.0.0.1:5432/test";

/// `AUDIT_BENCH_POSTGRES_URL`, else `AUDIT_TEST_POSTGRES_URL` (the tests' server), if set.
pub(crate) fn url_from_env() -> Option<String> {
    ["AUDIT_BENCH_POSTGRES_URL", "AUDIT_TEST_POSTGRES_URL"]
        .into_iter()
        .filter_map(|name| std::env::var(name).ok())
        .find(|url| !url.trim().is_empty())
}

/// Connects once, giving up after 5 s; returns the server's postmaster when its processes
/// are visible here (its CPU can then be read from `/proc`).
pub(crate) async fn reach(url: &str) -> Result<Option<u32>, String> {
    let pool = tokio::time::timeout(
        Duration::from_secs(5),
        PgPoolOptions::new().max_connections(1).connect(url),
    )
    .await
    .map_err(|_| format!("PostgreSQL at {url} did not answer within 5 s"))?
    .map_err(|e| format!("PostgreSQL at {url} is unreachable: {e}"))?;
    // The server is local when our backend is a process here; its parent is the postmaster.
    // Looked up before the connection closes: the backend exits with it.
    let backend: i32 = sqlx::query_scalar("SELECT pg_backend_pid()")
        .fetch_one(&pool)
        .await
        .map_err(|e| format!("PostgreSQL at {url}: {e}"))?;
    let postmaster = local_postmaster(backend);
    pool.close().await;
    Ok(postmaster)
}

/// Options whose connections live in `schema`.
pub(crate) fn in_schema(url: &str, schema: &str) -> BoxResult<PgConnectOptions> {
    Ok(PgConnectOptions::from_str(url)?.options([("search_path", schema)]))
}

/// A pool of `connections` in `schema`.
pub(crate) async fn pool(url: &str, schema: &str, connections: u32) -> BoxResult<PgPool> {
    Ok(PgPoolOptions::new()
        .max_connections(connections)
        .connect_with(in_schema(url, schema)?)
        .await?)
}

/// One connection in `schema`.
pub(crate) async fn connection(url: &str, schema: &str) -> BoxResult<PgConnection> {
    Ok(PgConnection::connect_with(&in_schema(url, schema)?).await?)
}

/// Runs `sql` (fixed identifiers only) on a connection of its own.
async fn admin(url: &str, sql: String) -> BoxResult<()> {
    let mut conn = PgConnection::connect(url).await?;
    conn.execute(AssertSqlSafe(sql)).await?;
    conn.close().await?;
    Ok(())
}

/// Drops `schema` with everything in it, and creates it empty.
pub(crate) async fn recreate_schema(url: &str, schema: &str) -> BoxResult<()> {
    admin(
        url,
        format!("DROP SCHEMA IF EXISTS {schema} CASCADE; CREATE SCHEMA {schema}"),
    )
    .await
}

/// Drops `schema` with everything in it.
pub(crate) async fn drop_schema(url: &str, schema: &str) -> BoxResult<()> {
    admin(url, format!("DROP SCHEMA IF EXISTS {schema} CASCADE")).await
}

/// A fresh `schema` and a store migrated into it, with a pool of `connections`.
pub(crate) async fn fresh_store(
    url: &str,
    schema: &str,
    connections: u32,
) -> BoxResult<PostgresStore> {
    recreate_schema(url, schema).await?;
    let store = PostgresStore::new(pool(url, schema, connections).await?);
    store.migrate().await?;
    Ok(store)
}

/// Flushes the server's dirty buffers, so that a timed run starts from clean ones.
pub(crate) async fn checkpoint(pool: &PgPool) {
    if let Err(e) = sqlx::query("CHECKPOINT").execute(pool).await {
        eprintln!("  note: CHECKPOINT failed ({e}); continuing");
    }
}

/// The bytes of every partition of `audit_logs`, with their indexes.
pub(crate) async fn table_bytes(pool: &PgPool) -> BoxResult<Option<u64>> {
    let bytes: Option<i64> = sqlx::query_scalar(
        "SELECT sum(pg_total_relation_size(inhrelid))::int8 FROM pg_inherits \
         WHERE inhparent = to_regclass('audit_logs')",
    )
    .fetch_one(pool)
    .await?;
    Ok(bytes.and_then(|b| u64::try_from(b).ok()))
}
