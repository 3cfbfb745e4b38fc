//! The aggregate reads both backends run alike: one account's statistics (records per time
//! bucket and result, the top actors, actions and products), one statement built by
//! [`sql::stats`] and read on a connection the backend set a time limit on.

use futures_util::TryStreamExt as _;
use sqlx::{ColumnIndex, Decode, Encode, Executor, IntoArguments, QueryBuilder, Row, Type};
use uuid::Uuid;

use super::TableNames;
use super::shared::Backend;
use super::sql;
use crate::Result;
use crate::model::{Stats, StatsQuery};

/// The statistics of `query`, read on `conn`. (The time limit is the backend's part.)
pub(super) async fn stats_on<DB>(
    conn: &mut DB::Connection,
    names: &TableNames,
    query: &StatsQuery,
) -> Result<Stats>
where
    DB: Backend,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    DB::Arguments: IntoArguments<DB> + Default,
    usize: ColumnIndex<DB::Row>,
    for<'t> String: Encode<'t, DB> + Decode<'t, DB> + Type<DB>,
    for<'t> i64: Encode<'t, DB> + Decode<'t, DB> + Type<DB>,
    for<'t> i32: Encode<'t, DB> + Type<DB>,
    for<'t> Uuid: Encode<'t, DB> + Type<DB>,
    for<'t> Option<String>: Decode<'t, DB> + Type<DB>,
    for<'t> Option<i64>: Decode<'t, DB> + Type<DB>,
{
    let mut builder = QueryBuilder::<DB>::new("");
    sql::stats(&mut builder, names, query);
    let mut rows = builder.build().fetch(&mut *conn);
    let mut stats = Stats::default();
    while let Some(row) = rows.try_next().await? {
        let part: String = row.try_get(0)?;
        let a: Option<String> = row.try_get(2)?;
        let b: Option<String> = row.try_get(3)?;
        let n = u64::try_from(row.try_get::<i64, _>(4)?).unwrap_or(0);
        match part.as_str() {
            "series" => {
                let bucket: Option<i64> = row.try_get(1)?;
                stats
                    .series
                    .push((bucket.unwrap_or(0), a.unwrap_or_default(), n));
            }
            "actor" => stats.actors.push((a, n)),
            "action" => stats.actions.push(((a.unwrap_or_default(), b), n)),
            _ => stats.products.push((a, n)),
        }
    }
    // UNION ALL keeps each part's rows together but not the parts' order within: sort.
    stats.series.sort();
    for list in [&mut stats.actors, &mut stats.products] {
        list.sort_by(|x, y| y.1.cmp(&x.1).then_with(|| x.0.cmp(&y.0)));
    }
    stats
        .actions
        .sort_by(|x, y| y.1.cmp(&x.1).then_with(|| x.0.cmp(&y.0)));
    Ok(stats)
}
