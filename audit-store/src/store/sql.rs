//! The text of the statements, built from the [column list](crate::model::COLUMNS): the one
//! place that names the stored columns in SQL. Public for the benchmarks, which run the
//! store's own statements against the databases' command-line tools; not a stable API.
//!
//! Every value is a bound parameter; only fixed identifiers are spliced in.

use super::TableNames;
use crate::model::{
    COLUMNS, ColumnFilter, CommitPosition, CommitQuery, Direction, FilterValue, LINK_COLUMNS,
    RecordQuery, StatsQuery,
};

/// How a database spells what the two backends write differently.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dialect {
    /// SQLite: `?` placeholders.
    Sqlite,
    /// PostgreSQL: `$1`, `$2`, ... placeholders.
    Postgres,
}

impl Dialect {
    /// The placeholder of the `n`th bound value (from 1).
    pub fn placeholder(self, n: usize) -> String {
        match self {
            Self::Sqlite => "?".to_owned(),
            Self::Postgres => format!("${n}"),
        }
    }

    /// What identifies a row of `audit_logs`: its primary key (PostgreSQL's includes the time,
    /// the partitioning column).
    pub(crate) fn row_key(self) -> &'static str {
        match self {
            Self::Sqlite => "id",
            Self::Postgres => "(id, time_ms)",
        }
    }

    /// [`row_key`](Self::row_key)'s columns, as a select list.
    pub(crate) fn row_key_columns(self) -> &'static str {
        match self {
            Self::Sqlite => "id",
            Self::Postgres => "id, time_ms",
        }
    }
}

/// The stored columns, comma-separated, in [`COLUMNS`] order.
///
/// ```
/// let list = audit_store::store::sql::columns();
/// assert!(list.starts_with("id, time_ms, account_id, "));
/// assert!(list.ends_with(", record"));
/// ```
pub fn columns() -> String {
    COLUMNS
        .iter()
        .map(|c| c.name)
        .collect::<Vec<_>>()
        .join(", ")
}

/// [`columns`] and the chain's [`LINK_COLUMNS`]: what a chained write inserts.
pub fn linked_columns() -> String {
    format!("{}, {}", columns(), LINK_COLUMNS.join(", "))
}

/// The select list of a link read back: [`LINK_COLUMNS`], then every stored column (the
/// columns a verifier digests).
pub(crate) fn link_select() -> String {
    format!("{}, {}", LINK_COLUMNS.join(", "), columns())
}

/// A statement whose bound values are numbered as they are added.
#[derive(Debug)]
pub(crate) struct Numbered {
    dialect: Dialect,
    bound: usize,
}

impl Numbered {
    pub(crate) fn new(dialect: Dialect) -> Self {
        Self { dialect, bound: 0 }
    }

    /// The next value's placeholder.
    pub(crate) fn next(&mut self) -> String {
        self.bound += 1;
        self.dialect.placeholder(self.bound)
    }

    /// The condition selecting the records of `chain` through the account indexes: the
    /// chain named `""` holds the records without an account (and any whose account id is
    /// empty), and binds nothing; another chain binds its name, which the caller binds first.
    pub(crate) fn chain_condition(&mut self, chain: &str) -> String {
        if chain.is_empty() {
            "(account_id IS NULL OR account_id = '')".to_owned()
        } else {
            format!("account_id = {}", self.next())
        }
    }
}

/// Where a query with bound values is built: a backend's `QueryBuilder`.
pub trait QueryTarget {
    /// Appends SQL text.
    fn sql(&mut self, sql: &str);
    /// Binds a text value.
    fn text(&mut self, value: String);
    /// Binds a 32-bit integer.
    fn int(&mut self, value: i32);
    /// Binds a 64-bit integer.
    fn bigint(&mut self, value: i64);
    /// Binds a UUID.
    fn uuid(&mut self, value: uuid::Uuid);
}

fn value(target: &mut impl QueryTarget, value: &FilterValue) {
    match value {
        FilterValue::Text(t) => target.text(t.clone()),
        FilterValue::Int(i) => target.int(*i),
        FilterValue::Uuid(u) => target.uuid(*u),
    }
}

/// `SELECT time_ms, id, record FROM audit_logs WHERE ... ORDER BY ... LIMIT ...`: one page
/// of one account's records, from the records' table of `names`.
pub fn page(target: &mut impl QueryTarget, names: &TableNames, query: &RecordQuery) {
    // After a cursor, the cursor's time narrows the scanned range itself: a bound the index
    // scan starts from, so a deep page costs what the first one does.
    let (since_ms, before_ms) = match (query.after, query.direction) {
        (None, _) => (query.since_ms, query.before_ms),
        (Some((t, _)), Direction::Desc) => {
            (query.since_ms, query.before_ms.min(t.saturating_add(1)))
        }
        (Some((t, _)), Direction::Asc) => (query.since_ms.max(t), query.before_ms),
    };
    target.sql(&format!(
        "SELECT time_ms, id, record FROM {} WHERE ",
        names.logs()
    ));
    matching(
        target,
        &query.account_id,
        (since_ms, before_ms),
        &query.filters,
    );
    let (cmp, order) = match query.direction {
        Direction::Desc => ("<", "DESC"),
        Direction::Asc => (">", "ASC"),
    };
    if let Some(after) = query.after {
        target.sql(" AND (");
        time_and_id(target, cmp, after, cmp);
        target.sql(")");
    }
    target.sql(&format!(" ORDER BY time_ms {order}, id {order} LIMIT "));
    target.bigint(i64::from(query.limit));
}

/// `SELECT committed_ms, time_ms, id, record FROM audit_logs WHERE ... ORDER BY committed_ms,
/// time_ms, id LIMIT ...`: an export job's read of one account's matching records in commit
/// order, after `query.after` and through `query.through`, on the `(account_id, committed_ms,
/// time_ms, id)` index (named for SQLite, whose planner would otherwise take the time index
/// the filters' `time_ms >=` bound suggests, and sort).
pub(crate) fn commit_page(
    target: &mut impl QueryTarget,
    names: &TableNames,
    dialect: Dialect,
    query: &CommitQuery,
) {
    let hint = match dialect {
        Dialect::Sqlite => format!(" INDEXED BY {}logs_account_committed", names.table_prefix()),
        Dialect::Postgres => String::new(),
    };
    target.sql(&format!(
        "SELECT committed_ms, time_ms, id, record FROM {}{hint} WHERE ",
        names.logs()
    ));
    matching(
        target,
        &query.account_id,
        (query.since_ms, i64::MAX),
        &query.filters,
    );
    // (committed_ms, time_ms, id) > after and <= through, each spelled so the index range
    // starts (ends) at its commit.
    if let Some(after) = query.after {
        commit_position(target, ">", after, ">");
    }
    commit_position(target, "<", query.through, "<=");
    target.sql(" ORDER BY committed_ms, time_ms, id LIMIT ");
    target.bigint(i64::from(query.limit));
}

/// ` AND committed_ms {cmp}= c AND (committed_ms {cmp} c OR time_ms {cmp} t OR (time_ms = t
/// AND id {id_cmp} i))`: the rows on one side of `position` in commit order.
fn commit_position(
    target: &mut impl QueryTarget,
    cmp: &str,
    position: CommitPosition,
    id_cmp: &str,
) {
    target.sql(&format!(" AND committed_ms {cmp}= "));
    target.bigint(position.committed_ms);
    target.sql(&format!(" AND (committed_ms {cmp} "));
    target.bigint(position.committed_ms);
    target.sql(" OR ");
    time_and_id(target, cmp, (position.time_ms, position.id), id_cmp);
    target.sql(")");
}

/// `time_ms {time_cmp} t OR (time_ms = t AND id {id_cmp} i)`: the rows on one side of the
/// key `(t, i)` in `(time_ms, id)` order (`<=` as `id_cmp` takes the key's row in).
fn time_and_id(
    target: &mut impl QueryTarget,
    time_cmp: &str,
    (time_ms, id): (i64, uuid::Uuid),
    id_cmp: &str,
) {
    target.sql(&format!("time_ms {time_cmp} "));
    target.bigint(time_ms);
    target.sql(" OR (time_ms = ");
    target.bigint(time_ms);
    target.sql(&format!(" AND id {id_cmp} "));
    target.uuid(id);
    target.sql(")");
}

/// The condition selecting `account_id`'s records in `[since, before)` that match every
/// filter: what a page and a statistics read select.
fn matching(
    target: &mut impl QueryTarget,
    account_id: &str,
    (since_ms, before_ms): (i64, i64),
    filters: &[ColumnFilter],
) {
    target.sql("account_id = ");
    target.text(account_id.to_owned());
    target.sql(" AND time_ms >= ");
    target.bigint(since_ms);
    target.sql(" AND time_ms < ");
    target.bigint(before_ms);
    for filter in filters {
        let column = filter.column.name();
        if filter.negated {
            target.sql(&format!(" AND ({column} IS NULL OR {column} NOT IN ("));
        } else {
            target.sql(&format!(" AND {column} IN ("));
        }
        for (i, v) in filter.values.iter().enumerate() {
            if i > 0 {
                target.sql(", ");
            }
            value(target, v);
        }
        target.sql(if filter.negated { "))" } else { ")" });
    }
}

/// The statistics of one account's matching records, in one statement (one read of the
/// records, one snapshot): rows `(part, bucket, a, b, n)` where `part` is `series` (`bucket`,
/// `a` = result), `actor` (`a` = email), `action` (`a` = type, `b` = resource type) or
/// `product` (`a`); each top list is cut at `query.top`, the most frequent first.
pub fn stats(target: &mut impl QueryTarget, names: &TableNames, query: &StatsQuery) {
    target.sql(&format!(
        "WITH matched AS MATERIALIZED (SELECT time_ms, action_result, actor_email, \
         action_type, resource_type, resource_product FROM {} WHERE ",
        names.logs()
    ));
    matching(
        target,
        &query.account_id,
        (query.since_ms, query.before_ms),
        &query.filters,
    );
    target.sql(") SELECT 'series' AS part, (time_ms - ");
    target.bigint(query.origin_ms);
    target.sql(") / ");
    target.bigint(query.bucket_ms.max(1));
    target.sql(
        " AS bucket, action_result AS a, CAST(NULL AS TEXT) AS b, count(*) AS n \
         FROM matched GROUP BY 2, 3",
    );
    let tops = [
        ("actor", "actor_email", "CAST(NULL AS TEXT)", "actor_email"),
        (
            "action",
            "action_type",
            "resource_type",
            "action_type, resource_type",
        ),
        (
            "product",
            "resource_product",
            "CAST(NULL AS TEXT)",
            "resource_product",
        ),
    ];
    for (part, a, b, group) in tops {
        target.sql(&format!(
            " UNION ALL SELECT * FROM (SELECT '{part}', CAST(NULL AS BIGINT), {a}, {b}, \
             count(*) AS n FROM matched GROUP BY {group} ORDER BY n DESC, {group} LIMIT "
        ));
        target.bigint(i64::from(query.top));
        target.sql(&format!(") AS top_{part}"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_are_numbered_in_postgres_only() {
        let mut pg = Numbered::new(Dialect::Postgres);
        assert_eq!(pg.chain_condition("acc"), "account_id = $1");
        assert_eq!(pg.next(), "$2");
        let mut lite = Numbered::new(Dialect::Sqlite);
        assert_eq!(
            lite.chain_condition(""),
            "(account_id IS NULL OR account_id = '')"
        );
        assert_eq!(lite.next(), "?");
    }

    #[test]
    fn the_link_select_is_the_link_columns_then_the_stored_ones() {
        assert!(link_select().starts_with("chain_seq, chain_hash, chain_seal, id, time_ms, "));
        assert!(linked_columns().ends_with("record, chain_seq, chain_hash, chain_seal"));
    }
}
