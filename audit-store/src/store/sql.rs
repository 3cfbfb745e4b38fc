//! The page query, built once for both backends: every value is a bound parameter.

use super::{Direction, FilterValue, RecordQuery};

/// Where the query is built: a backend's `QueryBuilder`.
pub(crate) trait QueryTarget {
    fn sql(&mut self, sql: &str);
    fn text(&mut self, value: String);
    fn int(&mut self, value: i32);
    fn bigint(&mut self, value: i64);
    fn uuid(&mut self, value: uuid::Uuid);
}

fn value(target: &mut impl QueryTarget, value: &FilterValue) {
    match value {
        FilterValue::Text(t) => target.text(t.clone()),
        FilterValue::Int(i) => target.int(*i),
        FilterValue::Uuid(u) => target.uuid(*u),
    }
}

/// `SELECT time_ms, id, record FROM audit_logs WHERE ... ORDER BY ... LIMIT ...`.
pub(crate) fn page(target: &mut impl QueryTarget, query: &RecordQuery) {
    // After a cursor, the cursor's time narrows the scanned range itself: a bound the index
    // scan starts from, so a deep page costs what the first one does.
    let (since_ms, before_ms) = match (query.after, query.direction) {
        (None, _) => (query.since_ms, query.before_ms),
        (Some((t, _)), Direction::Desc) => {
            (query.since_ms, query.before_ms.min(t.saturating_add(1)))
        }
        (Some((t, _)), Direction::Asc) => (query.since_ms.max(t), query.before_ms),
    };
    target.sql("SELECT time_ms, id, record FROM audit_logs WHERE account_id = ");
    target.text(query.account_id.clone());
    target.sql(" AND time_ms >= ");
    target.bigint(since_ms);
    target.sql(" AND time_ms < ");
    target.bigint(before_ms);
    for filter in &query.filters {
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
    let (cmp, order) = match query.direction {
        Direction::Desc => ("<", "DESC"),
        Direction::Asc => (">", "ASC"),
    };
    if let Some((time_ms, id)) = query.after {
        target.sql(&format!(" AND (time_ms {cmp} "));
        target.bigint(time_ms);
        target.sql(" OR (time_ms = ");
        target.bigint(time_ms);
        target.sql(&format!(" AND id {cmp} "));
        target.uuid(id);
        target.sql("))");
    }
    target.sql(&format!(" ORDER BY time_ms {order}, id {order} LIMIT "));
    target.bigint(i64::from(query.limit));
}
