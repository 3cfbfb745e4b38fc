//! The PostgreSQL store, for scale and for several app instances sharing one database.
//!
//! A batch is one `INSERT ... SELECT FROM UNNEST($1, ..., $24) ON CONFLICT DO NOTHING`: one
//! statement and one round trip whatever the batch size, with a constant statement text that
//! stays prepared. The table is partitioned by month of `action.time`; the store creates a
//! month's partition before it first writes to it, and retention drops whole months.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex, PoisonError};

use sqlx::postgres::PgPool;
use sqlx::{AssertSqlSafe, Postgres, QueryBuilder, Row};
use uuid::Uuid;

use super::sql::{self, QueryTarget};
use super::{AuditStore, PageRow, RecordQuery};
use crate::Result;
use crate::row::StoredRecord;

const INSERT: &str = "INSERT INTO audit_logs (id, time_ms, account_id, account_name, zone_id, zone_name, \
    action_type, action_result, actor_email, actor_id, actor_ip_address, actor_type, actor_context, \
    actor_token_id, actor_token_name, raw_ray_id, raw_method, raw_status_code, raw_uri, resource_id, \
    resource_product, resource_type, resource_scope, record) \
    SELECT * FROM UNNEST($1::uuid[], $2::int8[], $3::text[], $4::text[], $5::text[], $6::text[], \
    $7::text[], $8::text[], $9::text[], $10::text[], $11::text[], $12::text[], $13::text[], \
    $14::text[], $15::text[], $16::text[], $17::text[], $18::int4[], $19::text[], $20::text[], \
    $21::text[], $22::text[], $23::text[], $24::text[]) \
    ON CONFLICT DO NOTHING";

/// Audit records in PostgreSQL.
///
/// ```no_run
/// use audit_store::PostgresStore;
/// use audit_store::store::AuditStore;
///
/// # async fn run() -> audit_store::Result<()> {
/// let pool = sqlx::PgPool::connect("postgres://postgres@127.0.0.1/test").await?;
/// let store = PostgresStore::new(pool);
/// store.migrate().await?;
/// # Ok(()) }
/// ```
#[derive(Clone, Debug)]
pub struct PostgresStore {
    pool: PgPool,
    /// Months (`year * 12 + month0`) whose partition is known to exist.
    partitions: Arc<Mutex<BTreeSet<i64>>>,
}

impl PostgresStore {
    /// A store on a pool. Point the pool's `search_path` elsewhere to keep the tables in
    /// another schema.
    pub fn new(pool: PgPool) -> Self {
        Self {
            pool,
            partitions: Arc::default(),
        }
    }

    /// Connects to `url` (`postgres://user@host/db`), with a 2 s acquire timeout so that an
    /// unreachable database fails writes fast (and the pipeline spools) rather than waiting
    /// sqlx's default 30 s.
    ///
    /// # Errors
    ///
    /// When the database cannot be reached.
    pub async fn connect(url: &str) -> Result<Self> {
        // A short acquire timeout: while the database is down, a write must fail fast so the
        // pipeline turns to its spool instead of holding records in memory.
        let pool = sqlx::postgres::PgPoolOptions::new()
            .acquire_timeout(std::time::Duration::from_secs(2))
            .connect(url)
            .await?;
        Ok(Self::new(pool))
    }

    /// The connection pool.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// One `INSERT ... SELECT FROM UNNEST` of all `records`.
    async fn insert_rows(&self, records: &[StoredRecord]) -> Result<u64> {
        macro_rules! column {
            ($field:ident) => {
                records.iter().map(|r| r.$field.clone()).collect::<Vec<_>>()
            };
        }
        let stored = sqlx::query(INSERT)
            .bind(column!(id))
            .bind(column!(time_ms))
            .bind(column!(account_id))
            .bind(column!(account_name))
            .bind(column!(zone_id))
            .bind(column!(zone_name))
            .bind(records.iter().map(|r| r.action_type).collect::<Vec<_>>())
            .bind(records.iter().map(|r| r.action_result).collect::<Vec<_>>())
            .bind(column!(actor_email))
            .bind(column!(actor_id))
            .bind(column!(actor_ip_address))
            .bind(records.iter().map(|r| r.actor_type).collect::<Vec<_>>())
            .bind(records.iter().map(|r| r.actor_context).collect::<Vec<_>>())
            .bind(column!(actor_token_id))
            .bind(column!(actor_token_name))
            .bind(column!(raw_ray_id))
            .bind(column!(raw_method))
            .bind(column!(raw_status_code))
            .bind(column!(raw_uri))
            .bind(column!(resource_id))
            .bind(column!(resource_product))
            .bind(column!(resource_type))
            .bind(column!(resource_scope))
            .bind(column!(record))
            .execute(&self.pool)
            .await?
            .rows_affected();
        Ok(stored)
    }

    /// Creates the monthly partitions `records` need that are not known to exist.
    async fn ensure_partitions(&self, records: &[StoredRecord]) -> Result<()> {
        let months: BTreeSet<i64> = records.iter().map(|r| month_of(r.time_ms)).collect();
        let missing: Vec<i64> = {
            let known = self
                .partitions
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            months.into_iter().filter(|m| !known.contains(m)).collect()
        };
        for month in missing {
            let (from, to) = (month_start_ms(month), month_start_ms(month + 1));
            let name = partition_name(month);
            // Identifiers cannot be bound; `name` is built from integers only.
            let sql = format!(
                "CREATE TABLE IF NOT EXISTS {name} PARTITION OF audit_logs FOR VALUES FROM ({from}) TO ({to})"
            );
            if let Err(e) = sqlx::query(AssertSqlSafe(sql)).execute(&self.pool).await {
                // Another instance may have created it at the same moment.
                let exists: bool = sqlx::query_scalar("SELECT to_regclass($1) IS NOT NULL")
                    .bind(&name)
                    .fetch_one(&self.pool)
                    .await?;
                if !exists {
                    return Err(e.into());
                }
            }
            self.partitions
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .insert(month);
        }
        Ok(())
    }
}

/// Months since year 0 (`year * 12 + month - 1`), in UTC.
fn month_of(time_ms: i64) -> i64 {
    let days = time_ms.div_euclid(86_400_000);
    let (year, month, _) = civil_from_days(days);
    year * 12 + (month - 1)
}

fn month_start_ms(month: i64) -> i64 {
    let (year, month0) = (month.div_euclid(12), month.rem_euclid(12));
    days_from_civil(year, month0 + 1, 1) * 86_400_000
}

fn partition_name(month: i64) -> String {
    format!(
        "audit_logs_p{:04}_{:02}",
        month.div_euclid(12),
        month.rem_euclid(12) + 1
    )
}

/// Days since 1970-01-01 → (year, month 1-12, day), proleptic Gregorian (H. Hinnant).
fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

/// (year, month 1-12, day) → days since 1970-01-01.
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

impl QueryTarget for QueryBuilder<Postgres> {
    fn sql(&mut self, sql: &str) {
        self.push(sql);
    }
    fn text(&mut self, value: String) {
        self.push_bind(value);
    }
    fn int(&mut self, value: i32) {
        self.push_bind(value);
    }
    fn bigint(&mut self, value: i64) {
        self.push_bind(value);
    }
    fn uuid(&mut self, value: Uuid) {
        self.push_bind(value);
    }
}

impl AuditStore for PostgresStore {
    async fn page(&self, query: &RecordQuery) -> Result<Vec<PageRow>> {
        let mut builder = QueryBuilder::<Postgres>::new("");
        sql::page(&mut builder, query);
        let rows = builder.build().fetch_all(&self.pool).await?;
        rows.into_iter()
            .map(|row| {
                Ok(PageRow {
                    time_ms: row.try_get(0)?,
                    id: row.try_get(1)?,
                    record: row.try_get(2)?,
                })
            })
            .collect()
    }

    async fn migrate(&self) -> Result<()> {
        sqlx::migrate!("migrations/postgres")
            .run(&self.pool)
            .await?;
        Ok(())
    }

    async fn insert(&self, records: &[StoredRecord]) -> Result<u64> {
        if records.is_empty() {
            return Ok(0);
        }
        self.ensure_partitions(records).await?;
        match self.insert_rows(records).await {
            // "no partition of relation found for row": another instance dropped a month this
            // one believed existed. Forget what we knew and create what is missing.
            Err(crate::StoreError::Database(sqlx::Error::Database(e)))
                if e.code().as_deref() == Some("23514") =>
            {
                self.partitions
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .clear();
                self.ensure_partitions(records).await?;
                self.insert_rows(records).await
            }
            other => other,
        }
    }

    async fn ping(&self) -> Result<()> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    async fn delete_before(&self, cutoff_ms: i64) -> Result<u64> {
        // Whole months before the cutoff: drop their partitions.
        let rows = sqlx::query(
            "SELECT c.relname::text FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid \
             WHERE i.inhparent = to_regclass('audit_logs')",
        )
        .fetch_all(&self.pool)
        .await?;
        let mut deleted = 0;
        for row in rows {
            let name: String = row.get(0);
            let Some(month) = parse_partition_name(&name) else {
                continue;
            };
            if month_start_ms(month + 1) <= cutoff_ms {
                let n: i64 =
                    sqlx::query_scalar(AssertSqlSafe(format!("SELECT count(*) FROM {name}")))
                        .fetch_one(&self.pool)
                        .await?;
                sqlx::query(AssertSqlSafe(format!("DROP TABLE {name}")))
                    .execute(&self.pool)
                    .await?;
                self.partitions
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .remove(&month);
                deleted += u64::try_from(n).unwrap_or(0);
            }
        }
        // The month the cutoff falls in: delete its older rows in bounded steps.
        loop {
            let step = sqlx::query(
                "DELETE FROM audit_logs WHERE (id, time_ms) IN \
                 (SELECT id, time_ms FROM audit_logs WHERE time_ms < $1 LIMIT 5000)",
            )
            .bind(cutoff_ms)
            .execute(&self.pool)
            .await?
            .rows_affected();
            deleted += step;
            if step < 5000 {
                return Ok(deleted);
            }
        }
    }

    async fn get(&self, account_id: &str, id: Uuid) -> Result<Option<String>> {
        let row = sqlx::query("SELECT record FROM audit_logs WHERE id = $1 AND account_id = $2")
            .bind(id)
            .bind(account_id)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.map(|r| r.get(0)))
    }

    async fn count(&self) -> Result<u64> {
        let n: i64 = sqlx::query_scalar("SELECT count(*) FROM audit_logs")
            .fetch_one(&self.pool)
            .await?;
        Ok(u64::try_from(n).unwrap_or(0))
    }
}

/// `audit_logs_p2026_11` → its month number, for partitions this store created.
fn parse_partition_name(name: &str) -> Option<i64> {
    let rest = name.strip_prefix("audit_logs_p")?;
    let (year, month) = rest.split_once('_')?;
    let (year, month): (i64, i64) = (year.parse().ok()?, month.parse().ok()?);
    (1..=12).contains(&month).then_some(year * 12 + month - 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn months_and_their_bounds() {
        // 2025-01-23T18:25:14.749Z
        let t = 1_737_656_714_749;
        let month = month_of(t);
        assert_eq!(partition_name(month), "audit_logs_p2025_01");
        assert_eq!(month_start_ms(month), 1_735_689_600_000); // 2025-01-01
        assert_eq!(month_start_ms(month + 1), 1_738_368_000_000); // 2025-02-01
        assert_eq!(parse_partition_name("audit_logs_p2025_01"), Some(month));
        assert_eq!(month_of(month_start_ms(month + 1) - 1), month);
        assert_eq!(month_of(-1), month_of(0) - 1);
        assert_eq!(partition_name(month_of(0)), "audit_logs_p1970_01");
    }
}
