//! `GET /accounts/{account_id}/logs/audit/{id}/history?since=&before=&action_time=`: the
//! history of the resource that the audit log `{id}` acted on — the successful writes (every
//! action but `view`) of the same account to the same resource (`resource.type` and
//! `resource.id`) in `[since, before)`, a page at a time (`direction`, `limit`, `cursor`, as
//! for the list) — each with the resource's value before and after it and the difference.
//!
//! Each entry is the record, as the list serves it, with a `history` object added:
//! `{"source", "before", "after", "patch"}`. `source` says where the values come from:
//!
//! - `change`: the record's own `change` (`{"before", "after"}`), which the app told the
//!   layer (already redacted by the layer, as every recorded value is);
//! - `bodies`: derived from the recorded (redacted) request and response bodies: a write's
//!   value is its request body (for `PATCH`, merged into the value before, RFC 7396) with
//!   the fields of its response body over it, a delete's `null`; the value before is the one
//!   after the previous write. Only fields the API description marks auditable are there, so
//!   the values are partial;
//! - `none`: nothing recorded tells.
//!
//! A value not known is `null` and then `patch` is absent; otherwise `patch` is the RFC 6902
//! JSON Patch from `before` to `after`. `result_info.history_status` is `exact` when every
//! entry's values come from `change`, `approximate` when some come from bodies, `unavailable`
//! when none are known (or the record names no resource, when the answer is empty). An id
//! this account's log does not hold, or whose `action.time` is not `action_time`, is a 404
//! with `history_status: unavailable`.
//!
//! Bounded like a page: at most `limit` entries (1 to 1,000) and the router's byte budget
//! ([`AuditLogRouter::page_bytes`](super::AuditLogRouter::page_bytes)), entries included
//! (the answer ends early with a cursor), under the statement time limit; the same
//! authorization as every route.

use std::borrow::Cow;
use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use serde_json::{Value, json};

use super::authorized::{Authorized, RecordId};
use super::params;
use super::{ENVELOPE_BYTES, Shared, error, internal, json_response, names, open_cursor};
use crate::StoreError;
use crate::model::{Column, ColumnFilter, Direction, FilterValue, PageRow, RecordQuery};
use crate::store::ChainedStore;

/// Where an entry's values come from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Source {
    /// The record's `change`, as the app told it.
    Change,
    /// The recorded request and response bodies.
    Bodies,
    /// Nothing recorded tells.
    Unknown,
}

impl Source {
    fn as_str(self) -> &'static str {
        match self {
            Self::Change => "change",
            Self::Bodies => "bodies",
            Self::Unknown => "none",
        }
    }
}

/// One write's values: `None` where not known (`Some(Value::Null)`: known not to exist).
struct Values {
    source: Source,
    before: Option<Value>,
    after: Option<Value>,
}

pub(super) async fn history<S: ChainedStore>(
    State(shared): State<Arc<Shared<S>>>,
    Authorized {
        account_id,
        params: (RecordId(id), query),
    }: Authorized<(RecordId, params::HistoryQuery)>,
) -> Response {
    let binding = json!([
        "history",
        1,
        account_id,
        id,
        query.since_ms,
        query.before_ms,
        query.direction.as_str()
    ])
    .to_string();
    let after = match open_cursor(&shared, query.cursor.as_deref(), &binding, "history") {
        Ok(after) => after,
        Err(bad) => return bad,
    };
    let source = match shared.store.get(&account_id, id).await {
        Ok(Some(json)) => serde_json::from_str::<Value>(&names::current(&json)).ok(),
        Ok(None) => None,
        Err(e) => return internal(&e),
    };
    let Some(source) = source.filter(|r| time_ms(r) == Some(query.action_time_ms)) else {
        return unavailable();
    };
    let resource = &source["resource"];
    let (Some(kind), Some(resource_id)) = (resource["type"].as_str(), resource["id"].as_str())
    else {
        return answer(Vec::new(), None, "unavailable");
    };
    let filters = writes_of(kind, resource_id);
    let budget = shared.page_bytes.saturating_sub(ENVELOPE_BYTES);
    let page = RecordQuery {
        account_id: account_id.clone(),
        since_ms: query.since_ms,
        before_ms: query.before_ms,
        filters: filters.clone(),
        direction: query.direction,
        after,
        limit: query.limit + 1,
        max_bytes: Some(budget),
        time_limit: shared.statement_timeout,
    };
    let (mut rows, cut) = match shared.store.page(&page).await {
        Ok(page) => (page.rows, page.cut),
        Err(e) => return read_failed(&e),
    };
    let mut more = cut || rows.len() > query.limit as usize;
    rows.truncate(query.limit as usize);
    let records: Vec<(PageRow, Value)> = rows
        .into_iter()
        .filter_map(|mut row| {
            if let Cow::Owned(renamed) = names::current(&row.record) {
                row.record = renamed;
            }
            let value = serde_json::from_str(&row.record).ok()?;
            Some((row, value))
        })
        .collect();

    // The value before the oldest write of the page: after the write just before it.
    let oldest = match query.direction {
        Direction::Asc => records.first(),
        Direction::Desc => records.last(),
    };
    let prior = match oldest {
        Some((row, _)) if records.iter().any(|(_, r)| change(r).is_none()) => {
            let previous = RecordQuery {
                direction: Direction::Desc,
                after: Some((row.time_ms, row.id)),
                before_ms: row.time_ms.saturating_add(1),
                limit: 1,
                ..page.clone()
            };
            match shared.store.page(&previous).await {
                Ok(found) => found
                    .rows
                    .first()
                    .and_then(|r| serde_json::from_str::<Value>(&names::current(&r.record)).ok())
                    .and_then(|r| values(&r, None).after),
                Err(e) => return read_failed(&e),
            }
        }
        _ => None,
    };

    // Built within a bound of work: each entry holds the resource's whole value before and
    // after, which PATCHes merged one into the next can make far larger than any record.
    let work_limit = budget.saturating_mul(2);
    let mut considered = records.len();
    let mut prior = prior;
    let mut entries = loop {
        let (built, cut) = build(&records[..considered], query.direction, prior, work_limit);
        if !cut {
            break built;
        }
        more = true;
        if query.direction == Direction::Asc {
            // Built in the page's order: the first entries are the page.
            break built;
        }
        // Newest first, built from the oldest: keep the newer half, starting from the value
        // after the write just before it (as for a page's first write).
        considered = (considered / 2).max(1);
        prior = values(&records[considered].1, None).after.filter(small);
    };
    let mut size = 0;
    let mut kept = 0;
    for (_, text, _) in &entries {
        if kept > 0 && size + text.len() + 1 > budget {
            more = true;
            break;
        }
        size += text.len() + 1;
        kept += 1;
    }
    entries.truncate(kept);
    let status = if entries.is_empty() {
        status(&[values(&source, None).source])
    } else {
        status(&entries.iter().map(|(_, _, s)| *s).collect::<Vec<_>>())
    };
    let cursor = more
        .then(|| entries.last())
        .flatten()
        .map(|(row, _, _)| shared.cursor_key.seal(row.time_ms, row.id, &binding));
    answer(
        entries.into_iter().map(|(_, text, _)| text).collect(),
        cursor,
        status,
    )
}

/// The largest value carried from one write to the next (JSON text); a larger one is not
/// carried, and the next write's value before it is unknown.
const MAX_STATE_BYTES: usize = 256 * 1024;

/// Whether a value is small enough to carry to the next write.
fn small(value: &Value) -> bool {
    serde_json::to_string(value).is_ok_and(|text| text.len() <= MAX_STATE_BYTES)
}

/// The entries of `records` (in the page's order), each write's value before it being the
/// value after the one before, from `prior` on; cut short (`true`) once their text passes
/// `limit` bytes, with at least one built. Cut short, they are the oldest: in the page's order
/// for `Asc`, in time order for `Desc`.
fn build(
    records: &[(PageRow, Value)],
    direction: Direction,
    prior: Option<Value>,
    limit: usize,
) -> (Vec<(&PageRow, String, Source)>, bool) {
    let mut entries = Vec::with_capacity(records.len());
    let mut state = prior;
    let mut size = 0usize;
    let in_time_order: Box<dyn Iterator<Item = &(PageRow, Value)>> = match direction {
        Direction::Asc => Box::new(records.iter()),
        Direction::Desc => Box::new(records.iter().rev()),
    };
    for (row, record) in in_time_order {
        let values = values(record, state.take());
        state = values.after.clone().filter(small);
        let text = entry(&row.record, &values);
        size = size.saturating_add(text.len());
        if !entries.is_empty() && size > limit {
            return (entries, true);
        }
        entries.push((row, text, values.source));
    }
    if direction == Direction::Desc {
        entries.reverse();
    }
    (entries, false)
}

/// The filters of a resource's writes: its type and id, successful, not a view.
fn writes_of(kind: &str, id: &str) -> Vec<ColumnFilter> {
    let text = |v: &str| FilterValue::Text(audit_layer::escape::visible(v.as_bytes()).into_owned());
    let filter = |column, negated, value| ColumnFilter {
        column,
        negated,
        values: vec![value],
    };
    vec![
        filter(Column::ResourceType, false, text(kind)),
        filter(Column::ResourceId, false, text(id)),
        filter(Column::ActionResult, false, text("success")),
        filter(Column::ActionType, true, text("view")),
    ]
}

/// `action.time` of a record, in ms.
fn time_ms(record: &Value) -> Option<i64> {
    let time = record["action"]["time"].as_str()?;
    crate::time::parse_time(time)
}

/// The record's `change`, when it has one whose values are values: a `before` or `after`
/// that is a `_truncated` or `_unparsed` marker (the change was too large, or its type's
/// schema could not be read) is no value, and the change is not used.
fn change(record: &Value) -> Option<&Value> {
    record
        .get("change")
        .filter(|c| c.is_object())
        .filter(|c| !is_marker(&c["before"]) && !is_marker(&c["after"]))
}

/// A recorded body that holds a value: not absent, not a `_truncated` or `_unparsed` marker.
fn body(record: &Value, which: &str) -> Option<Value> {
    let body = record["resource"].get(which)?;
    (!is_marker(body) && !body.is_null()).then(|| body.clone())
}

/// Whether a recorded value is a marker saying why the value is missing.
fn is_marker(value: &Value) -> bool {
    value.as_object().is_some_and(|o| {
        o.len() == 1 && (o.contains_key("_truncated") || o.contains_key("_unparsed"))
    })
}

/// A write's values, `before` being the value after the previous write (when known).
fn values(record: &Value, before: Option<Value>) -> Values {
    if let Some(change) = change(record) {
        return Values {
            source: Source::Change,
            before: Some(change.get("before").cloned().unwrap_or(Value::Null)),
            after: Some(change.get("after").cloned().unwrap_or(Value::Null)),
        };
    }
    let method = record["raw"]["method"].as_str().unwrap_or("");
    let (before, after) = match record["action"]["type"].as_str() {
        Some("delete") => (before, Some(Value::Null)),
        kind => {
            let before = if kind == Some("create") {
                Some(Value::Null)
            } else {
                before
            };
            let request = match (body(record, "request"), &before, method) {
                (Some(request), Some(prior @ Value::Object(_)), "PATCH") => {
                    let mut merged = prior.clone();
                    json_patch::merge(&mut merged, &request);
                    Some(merged)
                }
                (request, _, _) => request,
            };
            let after = match (request, body(record, "response")) {
                (Some(mut value @ Value::Object(_)), Some(response @ Value::Object(_))) => {
                    json_patch::merge(&mut value, &response);
                    Some(value)
                }
                (request, response) => response.or(request),
            };
            (before, after)
        }
    };
    let source = if after.is_some() {
        Source::Bodies
    } else {
        Source::Unknown
    };
    Values {
        source,
        before,
        after,
    }
}

/// The history status of entries from `sources`.
fn status(sources: &[Source]) -> &'static str {
    if !sources.is_empty() && sources.iter().all(|s| *s == Source::Change) {
        "exact"
    } else if sources.iter().any(|s| *s != Source::Unknown) {
        "approximate"
    } else {
        "unavailable"
    }
}

/// The record's JSON with its `history` object added.
fn entry(record: &str, values: &Values) -> String {
    let mut history = json!({
        "source": values.source.as_str(),
        "before": values.before.clone().unwrap_or(Value::Null),
        "after": values.after.clone().unwrap_or(Value::Null),
    });
    if let (Some(before), Some(after)) = (&values.before, &values.after) {
        history["patch"] = serde_json::to_value(json_patch::diff(before, after))
            .unwrap_or_else(|_| Value::Array(Vec::new()));
    }
    // A stored record is one JSON object: its text ends with its closing brace.
    let open = record.trim_end().strip_suffix('}').unwrap_or(record);
    let separator = if open.trim_end().ends_with('{') {
        ""
    } else {
        ","
    };
    format!(r#"{open}{separator}"history":{history}}}"#)
}

fn answer(entries: Vec<String>, cursor: Option<String>, status: &str) -> Response {
    let size: usize = entries.iter().map(|e| e.len() + 1).sum();
    let mut body = String::with_capacity(size + 256);
    body.push_str(r#"{"success":true,"errors":[],"messages":[],"result":["#);
    body.push_str(&entries.join(","));
    body.push_str(r#"],"result_info":"#);
    let mut info = json!({"count": entries.len(), "history_status": status});
    if let Some(cursor) = cursor {
        info["cursor"] = json!(cursor);
        info["cursors"] = json!({"after": cursor});
    } else {
        info["cursors"] = json!({});
    }
    body.push_str(&info.to_string());
    body.push('}');
    json_response(body)
}

/// The answer for an id the account's log does not hold at that `action_time`.
fn unavailable() -> Response {
    let mut response = json_response(
        json!({
            "success": false,
            "errors": [{"code": 10404, "message": "no audit log with this id and action_time in this account's log"}],
            "messages": [],
            "result": null,
            "result_info": {"count": 0, "history_status": "unavailable"},
        })
        .to_string(),
    );
    *response.status_mut() = StatusCode::NOT_FOUND;
    response
}

/// A failed read: a 422 at the time limit (the resource's id is not indexed), else a 500.
fn read_failed(e: &StoreError) -> Response {
    let StoreError::StatementTimeout(limit) = e else {
        return internal(e);
    };
    error(
        StatusCode::UNPROCESSABLE_ENTITY,
        10422,
        &format!(
            "the history stopped at its time limit of {limit:?}: no index serves a resource's \
             records, so every record of the range is searched; narrow 'since' and 'before'"
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(kind: &str, method: &str, request: Value, response: Value) -> Value {
        json!({"action": {"type": kind}, "raw": {"method": method},
               "resource": {"request": request, "response": response}})
    }

    /// `n` PATCHes of one resource, each adding an 8 KiB label (a free-form object): the
    /// value carried from write to write grows by 8 KiB each.
    fn growing_patches(n: usize) -> Vec<(PageRow, Value)> {
        (0..n)
            .map(|i| {
                let record = write(
                    "update",
                    "PATCH",
                    json!({"labels": {format!("k{i}"): "x".repeat(8 * 1024)}}),
                    Value::Null,
                );
                let row = PageRow {
                    time_ms: i as i64,
                    id: uuid::Uuid::now_v7(),
                    record: record.to_string(),
                };
                (row, record)
            })
            .collect()
    }

    #[test]
    fn the_value_carried_between_writes_and_the_work_of_a_page_are_bounded() {
        let records = growing_patches(200);
        // Unbounded, entry i would hold 2 x 8 KiB x i: 320 MiB for the page.
        let (entries, cut) = build(&records, Direction::Asc, None, usize::MAX);
        assert!(!cut);
        let largest = entries.iter().map(|(_, text, _)| text.len()).max().unwrap();
        assert!(
            largest < 3 * MAX_STATE_BYTES,
            "an entry holds at most about two carried values and their patch: {largest}"
        );
        // Within a work limit: cut after the entry that passes it, in the page's order.
        let limit = 4 * 1024 * 1024;
        let (entries, cut) = build(&records, Direction::Asc, None, limit);
        assert!(cut);
        let size: usize = entries.iter().map(|(_, text, _)| text.len()).sum();
        assert!(size <= limit, "{size}");
        assert_eq!(entries[0].0.time_ms, 0, "the oldest first");
        // A page newest first: what is built before the cut is its oldest, in time order.
        let newest_first: Vec<_> = records.into_iter().rev().collect();
        let (entries, cut) = build(&newest_first, Direction::Desc, None, limit);
        assert!(cut);
        assert_eq!(entries[0].0.time_ms, 0);
        assert!(entries.windows(2).all(|w| w[0].0.time_ms < w[1].0.time_ms));
    }

    #[test]
    fn a_change_whose_values_are_markers_is_not_taken_as_told() {
        let dropped = json!({"change": {"before": {"_truncated": "too large"},
                                        "after": {"_truncated": "too large"}},
                             "action": {"type": "update"}, "raw": {"method": "PUT"},
                             "resource": {"request": {"ttl": 5}}});
        let v = values(&dropped, Some(json!({"ttl": 1})));
        assert_eq!(v.source, Source::Bodies, "the bodies, not the markers");
        assert_eq!(v.after, Some(json!({"ttl": 5})));
    }

    #[test]
    fn values_come_from_change_or_from_bodies() {
        let told = json!({"change": {"before": {"ttl": 60}, "after": {"ttl": 120}}});
        let v = values(&told, None);
        assert_eq!(
            (v.source, v.before, v.after),
            (
                Source::Change,
                Some(json!({"ttl": 60})),
                Some(json!({"ttl": 120}))
            )
        );

        let created = write(
            "create",
            "POST",
            json!({"name": "a"}),
            json!({"id": "p1", "name": "a"}),
        );
        let v = values(&created, None);
        assert_eq!(
            (v.source, v.before, v.after.clone()),
            (
                Source::Bodies,
                Some(Value::Null),
                Some(json!({"id": "p1", "name": "a"}))
            )
        );

        let patched = write("update", "PATCH", json!({"enabled": false}), Value::Null);
        let v = values(
            &patched,
            Some(json!({"id": "p1", "name": "a", "enabled": true})),
        );
        assert_eq!(
            v.after,
            Some(json!({"id": "p1", "name": "a", "enabled": false}))
        );
        let put = write(
            "update",
            "PUT",
            json!({"name": "b"}),
            json!({"_truncated": "over the cap"}),
        );
        assert_eq!(
            values(&put, None).after,
            Some(json!({"name": "b"})),
            "a marker is no value"
        );

        let answered = write("update", "PUT", json!({"name": "b"}), json!({"id": "p1"}));
        assert_eq!(
            values(&answered, None).after,
            Some(json!({"id": "p1", "name": "b"})),
            "the response's fields over the request's"
        );

        let deleted = write("delete", "DELETE", Value::Null, Value::Null);
        let v = values(&deleted, Some(json!({"name": "b"})));
        assert_eq!(
            (v.before, v.after),
            (Some(json!({"name": "b"})), Some(Value::Null))
        );

        let unknown = write(
            "update",
            "PUT",
            json!({"_unparsed": "not JSON"}),
            Value::Null,
        );
        assert_eq!(values(&unknown, None).source, Source::Unknown);
    }

    #[test]
    fn an_entry_is_the_record_with_its_history() {
        let values = Values {
            source: Source::Change,
            before: Some(json!({"ttl": 60})),
            after: Some(json!({"ttl": 120})),
        };
        let full: Value = serde_json::from_str(&entry(r#"{"id":"x"}"#, &values)).unwrap();
        assert_eq!(
            full,
            json!({"id": "x", "history": {"source": "change", "before": {"ttl": 60}, "after": {"ttl": 120},
                   "patch": [{"op": "replace", "path": "/ttl", "value": 120}]}})
        );
        let unknown = Values {
            source: Source::Bodies,
            before: None,
            after: Some(json!(1)),
        };
        let partial: Value = serde_json::from_str(&entry("{}", &unknown)).unwrap();
        assert!(partial["history"].get("patch").is_none(), "{partial}");
    }

    #[test]
    fn the_status_says_where_the_values_come_from() {
        use Source::{Bodies, Change, Unknown};
        assert_eq!(status(&[Change, Change]), "exact");
        assert_eq!(status(&[Change, Bodies]), "approximate");
        assert_eq!(status(&[Unknown, Bodies]), "approximate");
        assert_eq!(status(&[Unknown]), "unavailable");
        assert_eq!(status(&[]), "unavailable");
    }
}
