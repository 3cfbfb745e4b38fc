//! `GET /accounts/{account_id}/logs/audit/stats`: counts of an account's records for a query —
//! per hour or day over the range, split by result (failures stand out), and the most
//! frequent actors, actions and products — for the viewer's trends and any dashboard.
//!
//! It takes the list's parameters (`since`, `before`, every filter with its repeats and
//! `.not` forms) but not its paging (`cursor`, `limit`, `direction`), and two of its own:
//! `interval` (`hour` or `day`; by default `hour` for ranges up to 7 days, else `day`), `top`
//! (1–50, default 10) and `utc_offset` (`Z` or `±HH:MM` from `-14:00` to `+14:00`, default
//! `Z`; `+` sent as `%2B`). Buckets are aligned to the hours or days of that offset — a
//! viewer in UTC+2 asks `utc_offset=%2B02:00` and gets its own midnights — and each bucket's
//! `time` is the instant it starts, in UTC. The offset is fixed over the range: a zone that
//! changes offset inside it (daylight saving time) sees the days after the change shifted by
//! the difference. Every bucket of the range is listed, empty ones with zeros.
//!
//! Bounded like a page: one statement under the router's
//! [`statement_timeout`](super::AuditLogRouter::statement_timeout) (a 422 naming the slow
//! filters beyond), at most [`MAX_BUCKETS`] buckets (a longer range at `interval=hour` is a
//! 400 that says to use `day`), at most [`MAX_TOP`] entries per list.
//!
//! ```json
//! {"success": true, "errors": [], "messages": [], "result": {
//!   "since": "2025-01-01T00:00:00.000Z", "before": "2025-01-02T00:00:00.000Z",
//!   "interval": "hour", "utc_offset": "Z", "count": 3,
//!   "series": [{"time": "2025-01-01T00:00:00.000Z", "success": 2, "failure": 1}, ...],
//!   "actors": [{"actor_email": "alice@example.com", "count": 3}],
//!   "actions": [{"action_type": "update", "resource_type": "dns_record", "count": 2}, ...],
//!   "products": [{"resource_product": "dns", "count": 3}]}}
//! ```

use audit_layer::ProductCategories;
use std::sync::Arc;

use audit_layer::record::Timestamp;
use axum::extract::{Path, RawQuery, State};
use axum::http::{StatusCode, request::Parts};
use axum::response::Response;
use serde_json::{Value, json};

use super::params::{self, BadParameter};
use super::{Shared, authorize, error, internal, json_response, read_failed};
use crate::model::{RecordQuery, Stats, StatsQuery};
use crate::store::ChainedStore;

/// The most buckets one answer holds (41 days of hours).
pub const MAX_BUCKETS: i64 = 1000;
/// The most entries of each top list.
pub const MAX_TOP: u32 = 50;
/// The length of the top lists when `top` is not given.
const DEFAULT_TOP: u32 = 10;
const HOUR_MS: i64 = 3_600_000;
const DAY_MS: i64 = 24 * HOUR_MS;
/// The longest range bucketed by hour when `interval` is not given.
const HOURLY_UP_TO_MS: i64 = 7 * DAY_MS;
/// The largest `utc_offset` either way, minutes: the farthest any time zone is from UTC.
const MAX_OFFSET_MINUTES: i64 = 14 * 60;

/// A validated stats query (without its account).
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct StatsParams {
    pub(crate) query: params::LogQuery,
    pub(crate) bucket_ms: i64,
    pub(crate) top: u32,
    /// `utc_offset`, ms east of UTC: the buckets start at this offset's hours or midnights.
    pub(crate) offset_ms: i64,
}

impl StatsParams {
    /// The start of the bucket holding `since`: an hour or a midnight of the offset's time.
    pub(crate) fn origin_ms(&self) -> i64 {
        origin(self.query.since_ms, self.bucket_ms, self.offset_ms)
    }
}

fn origin(since_ms: i64, bucket_ms: i64, offset_ms: i64) -> i64 {
    (since_ms + offset_ms).div_euclid(bucket_ms) * bucket_ms - offset_ms
}

/// Parses `utc_offset`: `Z`, or `+HH:MM` / `-HH:MM` within [`MAX_OFFSET_MINUTES`].
fn parse_offset(text: &str) -> Result<i64, BadParameter> {
    let invalid = || {
        let hint = if text.starts_with(' ') {
            " (a '+' in a query string means a space: send it as %2B)"
        } else {
            ""
        };
        BadParameter(format!(
            "invalid value for 'utc_offset': expected Z or ±HH:MM from -14:00 to +14:00{hint}, \
             got {:?}",
            text.chars().take(64).collect::<String>()
        ))
    };
    if text == "Z" {
        return Ok(0);
    }
    let (sign, rest) = match text.as_bytes().first() {
        Some(b'+') => (1, &text[1..]),
        Some(b'-') => (-1, &text[1..]),
        _ => return Err(invalid()),
    };
    let digits = |s: &str| {
        (s.len() == 2 && s.bytes().all(|b| b.is_ascii_digit()))
            .then(|| s.parse::<i64>().ok())
            .flatten()
    };
    let (hours, minutes) = rest
        .split_once(':')
        .and_then(|(h, m)| Some((digits(h)?, digits(m)?)))
        .ok_or_else(invalid)?;
    let total = hours * 60 + minutes;
    if minutes >= 60 || total > MAX_OFFSET_MINUTES {
        return Err(invalid());
    }
    Ok(sign * total * 60_000)
}

/// `offset_ms` as `utc_offset` writes it: `Z` or `±HH:MM`.
fn offset_text(offset_ms: i64) -> String {
    if offset_ms == 0 {
        return "Z".to_owned();
    }
    let minutes = offset_ms.abs() / 60_000;
    let sign = if offset_ms < 0 { '-' } else { '+' };
    format!("{sign}{:02}:{:02}", minutes / 60, minutes % 60)
}

/// Parses the stats endpoint's query string: the list's range and filters, `interval` and `top`.
pub(crate) fn parse(
    raw: &str,
    categories: &ProductCategories,
) -> Result<StatsParams, BadParameter> {
    let mut rest = form_urlencoded::Serializer::new(String::new());
    let (mut interval, mut top, mut offset) = (None, None, None);
    for (key, value) in form_urlencoded::parse(raw.as_bytes()) {
        let slot = match &*key {
            "interval" => &mut interval,
            "top" => &mut top,
            "utc_offset" => &mut offset,
            "cursor" | "limit" | "direction" => {
                return Err(BadParameter(format!(
                    "'{key}' does not apply to stats: they count every matching record \
                     (give 'since', 'before', filters, 'interval' and 'top')"
                )));
            }
            _ => {
                rest.append_pair(&key, &value);
                continue;
            }
        };
        if slot.is_some() {
            return Err(BadParameter(format!(
                "'{key}' is given more than once: give it once"
            )));
        }
        *slot = Some(value.into_owned());
    }
    let query = params::parse(&rest.finish(), categories)?;
    let range = query.before_ms - query.since_ms;
    let bucket_ms = match interval.as_deref() {
        None if range <= HOURLY_UP_TO_MS => HOUR_MS,
        None | Some("day") => DAY_MS,
        Some("hour") => HOUR_MS,
        Some(other) => {
            return Err(BadParameter(format!(
                "invalid value for 'interval': expected hour or day, got {:?}",
                other.chars().take(64).collect::<String>()
            )));
        }
    };
    let offset_ms = offset.as_deref().map_or(Ok(0), parse_offset)?;
    let origin = origin(query.since_ms, bucket_ms, offset_ms);
    let buckets = (query.before_ms - origin + bucket_ms - 1) / bucket_ms;
    if buckets > MAX_BUCKETS {
        let advice = if bucket_ms == HOUR_MS {
            "use interval=day or a shorter range"
        } else {
            "use a shorter range"
        };
        return Err(BadParameter(format!(
            "invalid value for 'before': the range holds {buckets} buckets of a {}, at most \
             {MAX_BUCKETS}: {advice}",
            if bucket_ms == HOUR_MS { "hour" } else { "day" }
        )));
    }
    let top = match top {
        None => DEFAULT_TOP,
        Some(text) => text
            .parse::<u32>()
            .ok()
            .filter(|t| (1..=MAX_TOP).contains(t))
            .ok_or_else(|| {
                BadParameter(format!(
                    "invalid value for 'top': expected an integer from 1 to {MAX_TOP}, got {:?}",
                    text.chars().take(64).collect::<String>()
                ))
            })?,
    };
    Ok(StatsParams {
        query,
        bucket_ms,
        top,
        offset_ms,
    })
}

/// The handler.
pub(super) async fn stats<S: ChainedStore>(
    State(shared): State<Arc<Shared<S>>>,
    Path(account_id): Path<String>,
    RawQuery(raw): RawQuery,
    parts: Parts,
) -> Response {
    if let Some(denied) = authorize(&shared, &parts, &account_id).await {
        return denied;
    }
    let params = match parse(raw.as_deref().unwrap_or(""), &shared.categories) {
        Ok(params) => params,
        Err(e) => return error(StatusCode::BAD_REQUEST, 400, &e.to_string()),
    };
    let q = &params.query;
    let query = StatsQuery {
        account_id,
        since_ms: q.since_ms,
        before_ms: q.before_ms,
        filters: q.filters.clone(),
        origin_ms: params.origin_ms(),
        bucket_ms: params.bucket_ms,
        top: params.top,
        time_limit: shared.statement_timeout,
    };
    match shared.store.stats(&query).await {
        Ok(stats) => {
            let messages = if query.before_ms <= query.since_ms {
                json!([{"code": 10200, "message": params::EMPTY_RANGE}])
            } else {
                json!([])
            };
            let body = json!({
                "success": true, "errors": [], "messages": messages,
                "result": result(&query, params.offset_ms, &stats),
            });
            json_response(body.to_string())
        }
        Err(e @ crate::StoreError::StatementTimeout(_)) => {
            let filters = RecordQuery {
                filters: query.filters.clone(),
                ..RecordQuery::new(query.account_id.clone(), query.since_ms, query.before_ms, 1)
            };
            read_failed(&e, &filters)
        }
        Err(e) => internal(&e),
    }
}

fn time(ms: i64) -> String {
    Timestamp::from_unix_millis(ms).to_string()
}

/// The `result` of an answer: every bucket of the range (empty ones too) and the top lists.
fn result(query: &StatsQuery, offset_ms: i64, stats: &Stats) -> Value {
    let buckets = (query.before_ms - query.origin_ms + query.bucket_ms - 1) / query.bucket_ms;
    let mut counts = vec![(0u64, 0u64); usize::try_from(buckets.max(0)).unwrap_or(0)];
    let mut total = 0u64;
    for (bucket, outcome, n) in &stats.series {
        total += n;
        let Some(slot) = usize::try_from(*bucket)
            .ok()
            .and_then(|b| counts.get_mut(b))
        else {
            continue;
        };
        if outcome == "failure" {
            slot.1 += n;
        } else {
            slot.0 += n;
        }
    }
    let series: Vec<Value> = counts
        .iter()
        .enumerate()
        .map(|(i, (success, failure))| {
            let start = query.origin_ms + i as i64 * query.bucket_ms;
            json!({"time": time(start), "success": success, "failure": failure})
        })
        .collect();
    json!({
        "since": time(query.since_ms),
        "before": time(query.before_ms),
        "interval": if query.bucket_ms == DAY_MS { "day" } else { "hour" },
        "utc_offset": offset_text(offset_ms),
        "count": total,
        "series": series,
        "actors": stats.actors.iter()
            .map(|(email, n)| json!({"actor_email": email, "count": n})).collect::<Vec<_>>(),
        "actions": stats.actions.iter()
            .map(|((action, resource), n)| json!({"action_type": action, "resource_type": resource, "count": n}))
            .collect::<Vec<_>>(),
        "products": stats.products.iter()
            .map(|(product, n)| json!({"resource_product": product, "count": n})).collect::<Vec<_>>(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_interval_follows_the_range_unless_given() {
        let p = parse(
            "since=2025-01-01&before=2025-01-02",
            &ProductCategories::new(),
        )
        .unwrap();
        assert_eq!((p.bucket_ms, p.top, p.offset_ms), (HOUR_MS, DEFAULT_TOP, 0));
        let p = parse(
            "since=2025-01-01&before=2025-01-31&actor_email=a@x&top=3",
            &ProductCategories::new(),
        )
        .unwrap();
        assert_eq!((p.bucket_ms, p.top), (DAY_MS, 3));
        assert_eq!(p.query.filters.len(), 1);
        let p = parse(
            "since=2025-01-01&before=2025-01-31&interval=hour",
            &ProductCategories::new(),
        )
        .unwrap();
        assert_eq!(p.bucket_ms, HOUR_MS);
    }

    #[test]
    fn buckets_start_at_the_offsets_hours_and_midnights() {
        let categories = ProductCategories::new();
        // 2025-01-01T00:00Z is 02:00 in UTC+2: its day started at 2024-12-31T22:00Z.
        let p = parse(
            "since=2025-01-01&before=2025-01-31&utc_offset=%2B02:00",
            &categories,
        )
        .unwrap();
        assert_eq!(p.offset_ms, 2 * HOUR_MS);
        assert_eq!(time(p.origin_ms()), "2024-12-31T22:00:00.000Z");
        // In UTC-05:00, 2025-01-01T00:00Z is 19:00 of the day before, which began at 05:00Z.
        let p = parse(
            "since=2025-01-01&before=2025-01-31&utc_offset=-05:00",
            &categories,
        )
        .unwrap();
        assert_eq!(time(p.origin_ms()), "2024-12-31T05:00:00.000Z");
        // Hours of a half-hour zone start at half past in UTC.
        let p = parse(
            "since=2025-01-01T10:10:00Z&before=2025-01-02&utc_offset=%2B05:30",
            &categories,
        )
        .unwrap();
        assert_eq!(p.bucket_ms, HOUR_MS);
        assert_eq!(time(p.origin_ms()), "2025-01-01T09:30:00.000Z");
        for (given, ms) in [
            ("Z", 0),
            ("+00:00", 0),
            ("-00:30", -1_800_000),
            ("+14:00", 14 * HOUR_MS),
        ] {
            assert_eq!(parse_offset(given).unwrap(), ms, "{given}");
        }
        for ms in [0, 2 * HOUR_MS, -(5 * HOUR_MS + 1_800_000), 14 * HOUR_MS] {
            assert_eq!(parse_offset(&offset_text(ms)).unwrap(), ms);
        }
        assert_eq!(offset_text(-(9 * HOUR_MS + 1_800_000)), "-09:30");
    }

    #[test]
    fn the_answer_names_its_offset() {
        let query = StatsQuery::new("a", 0, DAY_MS, DAY_MS);
        assert_eq!(result(&query, 0, &Stats::default())["utc_offset"], "Z");
        assert_eq!(
            result(&query, -(3 * HOUR_MS), &Stats::default())["utc_offset"],
            "-03:00"
        );
    }

    #[test]
    fn every_bad_parameter_is_named() {
        let e = |q: &str| parse(q, &ProductCategories::new()).unwrap_err().to_string();
        let base = "since=2025-01-01&before=2025-01-02";
        assert!(e(&format!("{base}&cursor=x")).starts_with("'cursor' does not apply to stats"));
        assert!(e(&format!("{base}&limit=5")).starts_with("'limit' does not apply"));
        assert_eq!(
            e(&format!("{base}&interval=week")),
            "invalid value for 'interval': expected hour or day, got \"week\""
        );
        assert_eq!(
            e(&format!("{base}&top=51")),
            "invalid value for 'top': expected an integer from 1 to 50, got \"51\""
        );
        assert_eq!(
            e(&format!("{base}&top=1&top=2")),
            "'top' is given more than once: give it once"
        );
        assert_eq!(
            e("since=2025-01-01&before=2025-03-01&interval=hour"),
            "invalid value for 'before': the range holds 1416 buckets of a hour, at most 1000: use interval=day or a shorter range"
        );
        assert!(e("since=2000-01-01&before=2025-01-01").contains("use a shorter range"));
        assert!(e("before=2025-01-01").starts_with("missing required parameter 'since'"));
        assert!(e(&format!("{base}&colour=red")).starts_with("unknown parameter"));
        let offset = "invalid value for 'utc_offset': expected Z or ±HH:MM from -14:00 to +14:00";
        for bad in [
            "14:00",
            "+14:01",
            "-15:00",
            "+2:00",
            "+02:60",
            "+0200",
            "UTC",
            "+02:00:00",
            "-",
        ] {
            let message = e(&format!("{base}&utc_offset={}", bad.replace('+', "%2B")));
            assert!(message.starts_with(offset), "{bad}: {message}");
        }
        assert_eq!(
            e(&format!("{base}&utc_offset=+02:00")),
            format!(
                "{offset} (a '+' in a query string means a space: send it as %2B), got \" 02:00\""
            )
        );
        assert_eq!(
            e(&format!("{base}&utc_offset=Z&utc_offset=Z")),
            "'utc_offset' is given more than once: give it once"
        );
    }

    #[test]
    fn every_bucket_is_listed_and_counts_land_in_theirs() {
        let query = StatsQuery {
            origin_ms: 0,
            ..StatsQuery::new("a", 1_000, 3 * HOUR_MS, HOUR_MS)
        };
        let stats = Stats {
            series: vec![
                (0, "success".into(), 2),
                (2, "failure".into(), 1),
                (2, "success".into(), 4),
            ],
            ..Stats::default()
        };
        let r = result(&query, 0, &stats);
        assert_eq!(r["count"], 7);
        assert_eq!(r["series"].as_array().unwrap().len(), 3);
        assert_eq!(
            r["series"][1],
            json!({"time": "1970-01-01T01:00:00.000Z", "success": 0, "failure": 0})
        );
        assert_eq!(r["series"][2]["failure"], 1);
        assert_eq!(r["since"], "1970-01-01T00:00:01.000Z");
    }
}
