//! Monthly partitions of `audit_logs`: created before a month's first write, dropped whole by
//! retention.

use std::collections::BTreeSet;
use std::sync::{Mutex, PoisonError};

use sqlx::postgres::PgPool;
use sqlx::{AssertSqlSafe, Row};

use crate::Result;
use crate::model::StoredRecord;
use crate::store::TableNames;

/// The partitions a store knows to exist.
#[derive(Debug, Default)]
pub(super) struct Partitions {
    /// Months (`year * 12 + month0`) whose partition is known to exist.
    known: Mutex<BTreeSet<i64>>,
}

impl Partitions {
    /// Creates the monthly partitions `records` need that are not known to exist.
    pub(super) async fn ensure(
        &self,
        pool: &PgPool,
        names: &TableNames,
        records: &[StoredRecord],
    ) -> Result<()> {
        let months: BTreeSet<i64> = records.iter().map(|r| month_of(r.time_ms)).collect();
        let missing: Vec<i64> = {
            let known = self.known.lock().unwrap_or_else(PoisonError::into_inner);
            months.into_iter().filter(|m| !known.contains(m)).collect()
        };
        for month in missing {
            let (from, to) = (month_start_ms(month), month_start_ms(month + 1));
            let name = names.qualify(&partition_name(names, month));
            // Identifiers cannot be bound; `name` is built from the checked prefix and
            // integers only.
            let sql = format!(
                "CREATE TABLE IF NOT EXISTS {name} PARTITION OF {} FOR VALUES FROM ({from}) TO ({to})",
                names.logs()
            );
            if let Err(e) = sqlx::query(AssertSqlSafe(sql)).execute(pool).await {
                // Another instance may have created it at the same moment.
                let exists: bool = sqlx::query_scalar("SELECT to_regclass($1) IS NOT NULL")
                    .bind(&name)
                    .fetch_one(pool)
                    .await?;
                if !exists {
                    return Err(e.into());
                }
            }
            self.known
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .insert(month);
        }
        Ok(())
    }

    /// Forgets what it knew: another instance dropped a month this one believed existed.
    pub(super) fn forget(&self) {
        self.known
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clear();
    }

    /// Drops the partitions of whole months before `cutoff_ms`, except those holding a chained
    /// record beyond its chain's pruned prefix (`pruned`: each chain's last pruned sequence
    /// number), and returns how many records they held.
    pub(super) async fn drop_before(
        &self,
        pool: &PgPool,
        names: &TableNames,
        cutoff_ms: i64,
        pruned: &[(String, i64)],
    ) -> Result<u64> {
        let (pruned_chains, pruned_seqs): (Vec<&str>, Vec<i64>) =
            pruned.iter().map(|(c, s)| (c.as_str(), *s)).unzip();
        let mut deleted = 0;
        // Whole months before the cutoff: drop their partitions.
        let rows = sqlx::query(
            "SELECT c.relname::text FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid \
         WHERE i.inhparent = to_regclass($1)",
        )
        .bind(names.logs())
        .fetch_all(pool)
        .await?;
        for row in rows {
            let name: String = row.get(0);
            let Some(month) = parse_partition_name(names, &name) else {
                continue;
            };
            let name = names.qualify(&name);
            if month_start_ms(month + 1) <= cutoff_ms {
                // Locked first, in the transaction that drops it: an insert into the month
                // (a spool replay of old records) commits before the checks below read it,
                // or waits and then fails on the missing partition and is retried. Checked
                // without the lock, such an insert was dropped with the month uncounted, its
                // chained records with it.
                let mut tx = pool.begin().await?;
                sqlx::query(AssertSqlSafe(format!(
                    "LOCK TABLE {name} IN ACCESS EXCLUSIVE MODE"
                )))
                .execute(&mut *tx)
                .await?;
                // A chained record beyond its chain's pruned prefix (written late, by a
                // spool replay) keeps its month until the chain's prefix passes it.
                let kept: bool = sqlx::query_scalar(AssertSqlSafe(format!(
                    "SELECT EXISTS (SELECT 1 FROM {name} p \
                 LEFT JOIN UNNEST($1::text[], $2::int8[]) AS a(chain, seq) \
                 ON coalesce(p.account_id, '') = a.chain \
                 WHERE p.chain_seq IS NOT NULL AND (a.seq IS NULL OR p.chain_seq > a.seq))"
                )))
                .bind(&pruned_chains)
                .bind(&pruned_seqs)
                .fetch_one(&mut *tx)
                .await?;
                if kept {
                    continue;
                }
                let n: i64 =
                    sqlx::query_scalar(AssertSqlSafe(format!("SELECT count(*) FROM {name}")))
                        .fetch_one(&mut *tx)
                        .await?;
                sqlx::query(AssertSqlSafe(format!("DROP TABLE {name}")))
                    .execute(&mut *tx)
                    .await?;
                tx.commit().await?;
                self.known
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .remove(&month);
                deleted += u64::try_from(n).unwrap_or(0);
            }
        }
        Ok(deleted)
    }
}

/// Months since year 0 (`year * 12 + month - 1`), in UTC.
fn month_of(time_ms: i64) -> i64 {
    let (year, month, _) = audit_layer::record::Timestamp::from_unix_millis(time_ms).date();
    year * 12 + i64::from(month) - 1
}

fn month_start_ms(month: i64) -> i64 {
    let (year, month0) = (month.div_euclid(12), month.rem_euclid(12));
    days_from_civil(year, month0 + 1, 1) * 86_400_000
}

/// `audit_logs_p2026_11` (with the names' prefix), unqualified.
fn partition_name(names: &TableNames, month: i64) -> String {
    format!(
        "{}logs_p{:04}_{:02}",
        names.table_prefix(),
        month.div_euclid(12),
        month.rem_euclid(12) + 1
    )
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

/// `audit_logs_p2026_11` → its month number, for partitions this store created.
fn parse_partition_name(names: &TableNames, name: &str) -> Option<i64> {
    let rest = name
        .strip_prefix(names.table_prefix())?
        .strip_prefix("logs_p")?;
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
        let names = TableNames::default();
        assert_eq!(partition_name(&names, month), "audit_logs_p2025_01");
        assert_eq!(month_start_ms(month), 1_735_689_600_000); // 2025-01-01
        assert_eq!(month_start_ms(month + 1), 1_738_368_000_000); // 2025-02-01
        assert_eq!(
            parse_partition_name(&names, "audit_logs_p2025_01"),
            Some(month)
        );
        let other = TableNames::new().prefix("b_").unwrap();
        assert_eq!(partition_name(&other, month), "b_logs_p2025_01");
        assert_eq!(parse_partition_name(&other, "audit_logs_p2025_01"), None);
        assert_eq!(month_of(month_start_ms(month + 1) - 1), month);
        assert_eq!(month_of(-1), month_of(0) - 1);
        assert_eq!(partition_name(&names, month_of(0)), "audit_logs_p1970_01");
    }
}
