//! The query parameters of `GET /accounts/{account_id}/logs/audit`, validated.
//!
//! Every problem is a [`BadParameter`] that names the parameter and what was expected, in
//! the words a person reading a 400 needs.

use audit_layer::ProductCategories;
use audit_layer::record::{ActionType, ActorContext, ActorType};
use uuid::Uuid;

use crate::model::{Column, ColumnFilter, Direction, FilterValue};

/// The most values one filter parameter (`actor_email`, `actor_email.not`, ...) may carry.
pub(crate) const MAX_FILTER_VALUES: usize = 100;
/// The largest page.
pub(crate) const MAX_LIMIT: u32 = 1000;
/// The page size when none is asked for.
pub(crate) const DEFAULT_LIMIT: u32 = 100;
/// Longest filter value accepted, in characters (as JSON Schema's `maxLength` counts).
pub(crate) const MAX_VALUE_LEN: usize = 1024;

/// `actor_type` values the v2 API allows that no record of this log holds (Cloudflare's own
/// staff): a filter on one selects nothing (its `.not` form, everything), never a 400.
const SPEC_ONLY_ACTOR_TYPES: [&str; 1] = ["cloudflare_admin"];
/// Every `actor_type` a filter takes: the record's, then the v2 API's others.
const ACTOR_TYPES: &str = "user, account, system, cloudflare_admin";
/// `actor_context` values the v2 API allows that no record of this log holds (an Origin CA
/// key): as [`SPEC_ONLY_ACTOR_TYPES`].
const SPEC_ONLY_ACTOR_CONTEXTS: [&str; 1] = ["origin_ca_key"];
/// Every `actor_context` a filter takes: the record's, then the v2 API's others.
const ACTOR_CONTEXTS: &str = "api_token, api_key, dash, oauth, system, origin_ca_key";

/// The message of an answer for a range whose `before` is not after its `since`.
pub(crate) const EMPTY_RANGE: &str =
    "'before' is not after 'since': the range holds no record (did you swap them?)";

/// A parameter that cannot be used, and why.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct BadParameter(pub(crate) String);

/// A validated audit log query (without its account).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct LogQuery {
    pub(crate) since_ms: i64,
    pub(crate) before_ms: i64,
    pub(crate) filters: Vec<ColumnFilter>,
    pub(crate) direction: Direction,
    pub(crate) limit: u32,
    pub(crate) cursor: Option<String>,
    /// `format`: how the answer is written.
    pub(crate) format: AnswerFormat,
}

/// The `format` parameter: a JSON page (the default), or every matching record streamed as
/// NDJSON (also chosen by `Accept: application/x-ndjson`) or CSV.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) enum AnswerFormat {
    #[default]
    Json,
    Ndjson,
    Csv,
}

fn parse_format(format: Option<&str>) -> Result<AnswerFormat, BadParameter> {
    match format {
        None | Some("json") => Ok(AnswerFormat::Json),
        Some("ndjson") => Ok(AnswerFormat::Ndjson),
        Some("csv") => Ok(AnswerFormat::Csv),
        Some(other) => Err(bad(format!(
            "invalid value for 'format': expected json, ndjson or csv, got {}",
            quoted(other)
        ))),
    }
}

impl LogQuery {
    /// What a cursor for this query is bound to: the account, the filters, the range and the
    /// direction (not the limit, which a client may change between pages).
    pub(crate) fn binding(&self, account_id: &str) -> String {
        // JSON: every part quoted and delimited, so no two queries share a binding.
        let mut filters: Vec<(&str, bool, Vec<String>)> = self
            .filters
            .iter()
            .map(|f| {
                let mut values: Vec<String> = f.values.iter().map(FilterValue::canonical).collect();
                values.sort();
                (f.column.name(), f.negated, values)
            })
            .collect();
        filters.sort();
        serde_json::json!([
            1,
            account_id,
            self.since_ms,
            self.before_ms,
            self.direction.as_str(),
            filters
        ])
        .to_string()
    }
}

/// The kind of values a filter takes.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Kind {
    Text,
    ActionType,
    ActionResult,
    ActorType,
    ActorContext,
    StatusCode,
    Ip,
    Id,
}

/// The filter parameters (each also with a `.not` form) and the field each matches, for the
/// API's description ([`filter`] also takes the aliases `audit_log_id` and `raw_cf_ray_id`).
#[cfg_attr(not(feature = "utoipa"), allow(dead_code))]
pub(crate) const FILTERS: [(&str, &str); 21] = [
    ("action_type", "`action.type`"),
    ("action_result", "`action.result`"),
    ("actor_email", "`actor.email`"),
    ("actor_id", "`actor.id`"),
    ("actor_ip_address", "`actor.ip_address`"),
    ("actor_type", "`actor.type`"),
    ("actor_context", "`actor.context`"),
    ("actor_token_id", "`actor.token_id`"),
    ("actor_token_name", "`actor.token_name`"),
    ("id", "`id` (alias `audit_log_id`)"),
    ("raw_ray_id", "`raw.ray_id` (alias `raw_cf_ray_id`)"),
    ("raw_method", "`raw.method`"),
    ("raw_status_code", "`raw.status_code`"),
    ("raw_uri", "`raw.uri`"),
    ("resource_id", "`resource.id`"),
    ("resource_product", "`resource.product`"),
    ("resource_type", "`resource.type`"),
    ("resource_scope", "`resource.scope`"),
    ("zone_id", "`zone.id`"),
    ("zone_name", "`zone.name`"),
    ("account_name", "`account.name`"),
];

/// Filter parameter names: the original API's, with its aliases.
pub(crate) fn filter(name: &str) -> Option<(Column, Kind)> {
    Some(match name {
        "action_type" => (Column::ActionType, Kind::ActionType),
        "action_result" => (Column::ActionResult, Kind::ActionResult),
        "actor_email" => (Column::ActorEmail, Kind::Text),
        "actor_id" => (Column::ActorId, Kind::Text),
        "actor_ip_address" => (Column::ActorIpAddress, Kind::Ip),
        "actor_type" => (Column::ActorType, Kind::ActorType),
        "actor_context" => (Column::ActorContext, Kind::ActorContext),
        "actor_token_id" => (Column::ActorTokenId, Kind::Text),
        "actor_token_name" => (Column::ActorTokenName, Kind::Text),
        "id" | "audit_log_id" => (Column::Id, Kind::Id),
        "raw_ray_id" | "raw_cf_ray_id" => (Column::RawRayId, Kind::Text),
        "raw_method" => (Column::RawMethod, Kind::Text),
        "raw_status_code" => (Column::RawStatusCode, Kind::StatusCode),
        "raw_uri" => (Column::RawUri, Kind::Text),
        "resource_id" => (Column::ResourceId, Kind::Text),
        "resource_product" => (Column::ResourceProduct, Kind::Text),
        "resource_type" => (Column::ResourceType, Kind::Text),
        "resource_scope" => (Column::ResourceScope, Kind::Text),
        "zone_id" => (Column::ZoneId, Kind::Text),
        "zone_name" => (Column::ZoneName, Kind::Text),
        "account_name" => (Column::AccountName, Kind::Text),
        _ => return None,
    })
}

/// A value quoted for an error message: escaped, and cut to 64 characters.
fn quoted(value: &str) -> String {
    let visible = audit_layer::escape::visible(value.as_bytes());
    let cut: String = visible.chars().take(64).collect();
    if cut.len() < visible.len() {
        format!("{:?}...", cut)
    } else {
        format!("{cut:?}")
    }
}

fn bad(message: String) -> BadParameter {
    BadParameter(message)
}

/// Parses `since`/`before`: a date (`YYYY-MM-DD`, midnight UTC) or an RFC 3339 time.
fn parse_time(name: &str, value: &str) -> Result<i64, BadParameter> {
    let expected = || {
        bad(format!(
            "invalid value for '{name}': expected YYYY-MM-DD or RFC 3339, got {}",
            quoted(value)
        ))
    };
    crate::time::parse_time(value).ok_or_else(expected)
}

fn parse_value(name: &str, kind: Kind, value: &str) -> Result<FilterValue, BadParameter> {
    let enum_error = |expected: &str| {
        bad(format!(
            "invalid value for '{name}': expected one of {expected}, got {}",
            quoted(value)
        ))
    };
    if value.len() > MAX_VALUE_LEN && value.chars().count() > MAX_VALUE_LEN {
        return Err(bad(format!(
            "invalid value for '{name}': longer than {MAX_VALUE_LEN} characters"
        )));
    }
    Ok(match kind {
        // Stored columns hold control characters escaped; so must the value compared.
        Kind::Text => {
            FilterValue::Text(audit_layer::escape::visible(value.as_bytes()).into_owned())
        }
        // Open: events name their own (`expire`, `disable`, ...).
        Kind::ActionType => FilterValue::Text(
            value
                .parse::<ActionType>()
                .map_err(|_| {
                    bad(format!(
                        "invalid value for '{name}': expected an action type, a lowercase name of \
                         letters, digits and '_' that starts with a letter (e.g. update, login, \
                         expire), got {}",
                        quoted(value)
                    ))
                })?
                .as_str()
                .to_owned(),
        ),
        Kind::ActionResult => match value {
            "success" | "failure" => FilterValue::Text(value.to_owned()),
            _ => return Err(enum_error("success, failure")),
        },
        Kind::ActorType => match value.parse::<ActorType>() {
            Ok(kind) => FilterValue::Text(kind.as_str().to_owned()),
            Err(_) if SPEC_ONLY_ACTOR_TYPES.contains(&value) => FilterValue::Text(value.to_owned()),
            Err(_) => return Err(enum_error(ACTOR_TYPES)),
        },
        Kind::ActorContext => match value.parse::<ActorContext>() {
            Ok(context) => FilterValue::Text(context.as_str().to_owned()),
            Err(_) if SPEC_ONLY_ACTOR_CONTEXTS.contains(&value) => {
                FilterValue::Text(value.to_owned())
            }
            Err(_) => return Err(enum_error(ACTOR_CONTEXTS)),
        },
        Kind::StatusCode => {
            // Clients that type numbers as floats send "200.0".
            let code = value
                .strip_suffix(".0")
                .unwrap_or(value)
                .parse::<i32>()
                .ok()
                .filter(|c| (100..=599).contains(c))
                .ok_or_else(|| {
                    bad(format!(
                        "invalid value for '{name}': expected an HTTP status code (an integer from 100 to 599), got {}",
                        quoted(value)
                    ))
                })?;
            FilterValue::Int(code)
        }
        Kind::Ip => {
            let ip = value.parse::<std::net::IpAddr>().map_err(|_| {
                bad(format!(
                    "invalid value for '{name}': expected an IPv4 or IPv6 address, got {}",
                    quoted(value)
                ))
            })?;
            FilterValue::Text(ip.to_string())
        }
        Kind::Id => FilterValue::Uuid(value.parse::<Uuid>().map_err(|_| {
            bad(format!(
                "invalid value for '{name}': expected an audit log id (a UUID), got {}",
                quoted(value)
            ))
        })?),
    })
}

/// Parses a raw query string.
/// Parses the verify endpoint's query: optional `since` and `before`, nothing else.
pub(crate) fn parse_span(query: &str) -> Result<crate::verify::Span, BadParameter> {
    let mut span = crate::verify::Span::default();
    for (key, value) in form_urlencoded::parse(query.as_bytes()) {
        let slot = match &*key {
            "since" => &mut span.since_ms,
            "before" => &mut span.before_ms,
            other => {
                return Err(bad(format!(
                    "unknown parameter {}: verification takes 'since' and 'before'",
                    quoted(other)
                )));
            }
        };
        if slot.is_some() {
            return Err(bad(format!(
                "'{key}' is given more than once: give it once"
            )));
        }
        *slot = Some(parse_time(&key, &value)?);
    }
    Ok(span)
}

/// The parameters of a query as given, each checked on its own; [`parse`] checks them together.
struct Given<'c> {
    /// What `product_category` values stand for.
    categories: &'c ProductCategories,
    since: Option<String>,
    before: Option<String>,
    direction: Option<String>,
    limit: Option<String>,
    cursor: Option<String>,
    format: Option<String>,
    filters: Vec<ColumnFilter>,
    /// Values so far of each filter parameter, by its name as given.
    values: Vec<(String, usize)>,
}

impl<'c> Given<'c> {
    fn new(categories: &'c ProductCategories) -> Self {
        Self {
            categories,
            since: None,
            before: None,
            direction: None,
            limit: None,
            cursor: None,
            format: None,
            filters: Vec::new(),
            values: Vec::new(),
        }
    }

    /// Takes one `key=value` pair of the query string.
    fn take(&mut self, key: &str, value: String) -> Result<(), BadParameter> {
        let (name, negated) = match key.strip_suffix(".not") {
            Some(name) => (name, true),
            None => (key, false),
        };
        let slot = match (name, negated) {
            ("since", false) => &mut self.since,
            ("before", false) => &mut self.before,
            ("direction", false) => &mut self.direction,
            ("limit", false) => &mut self.limit,
            ("cursor", false) => &mut self.cursor,
            ("format", false) => &mut self.format,
            _ => return self.filter(key, name, negated, &value),
        };
        if slot.is_some() {
            return Err(bad(format!(
                "'{name}' is given more than once: give it once"
            )));
        }
        *slot = Some(value);
        Ok(())
    }

    /// Adds a filter value (filters repeat: their values are OR-ed).
    fn filter(
        &mut self,
        key: &str,
        name: &str,
        negated: bool,
        value: &str,
    ) -> Result<(), BadParameter> {
        if name == "product_category" {
            return self.category(key, negated, value);
        }
        let Some((column, kind)) = filter(name) else {
            return Err(bad(format!(
                "unknown parameter {}: see the audit log API's parameters",
                quoted(key)
            )));
        };
        self.count(key)?;
        let value = parse_value(key, kind, value)?;
        self.push(column, negated, value);
        Ok(())
    }

    /// Counts one more value of the filter parameter `key`, within [`MAX_FILTER_VALUES`].
    fn count(&mut self, key: &str) -> Result<(), BadParameter> {
        let count = match self.values.iter_mut().find(|(k, _)| k == key) {
            Some((_, count)) => count,
            None => {
                self.values.push((key.to_owned(), 0));
                &mut self.values.last_mut().expect("just pushed").1
            }
        };
        *count += 1;
        if *count > MAX_FILTER_VALUES {
            return Err(bad(format!(
                "too many values for {}: at most {MAX_FILTER_VALUES} in one query",
                quoted(key)
            )));
        }
        Ok(())
    }

    /// A `product_category` value: the products of that category (its name matched without
    /// regard to case) join the `resource_product` filter of the same form, as the v2 API
    /// unions the two.
    fn category(&mut self, key: &str, negated: bool, value: &str) -> Result<(), BadParameter> {
        self.count(key)?;
        let Some(category) = self.categories.get(value) else {
            let known: Vec<&str> = self.categories.iter().map(|c| c.value()).collect();
            let expected = if known.is_empty() {
                "none: this audit log declares no product categories".to_owned()
            } else {
                format!("one of {} (in any case)", known.join(", "))
            };
            return Err(bad(format!(
                "invalid value for '{key}': unknown product category {}: expected {expected}; \
                 GET /accounts/{{account_id}}/logs/audit/product_categories lists them",
                quoted(value)
            )));
        };
        for product in category.products() {
            let product = audit_layer::escape::visible(product.as_bytes()).into_owned();
            self.push(Column::ResourceProduct, negated, FilterValue::Text(product));
        }
        Ok(())
    }

    /// Adds `value` to the filter on `column` of the same form (repeats are OR-ed).
    fn push(&mut self, column: Column, negated: bool, value: FilterValue) {
        match self
            .filters
            .iter_mut()
            .find(|f| f.column == column && f.negated == negated)
        {
            Some(existing) => existing.values.push(value),
            None => self.filters.push(ColumnFilter {
                column,
                negated,
                values: vec![value],
            }),
        }
    }
}

/// `since` and `before`: both required. A `before` not after `since` is an empty range (the
/// answer says so: [`EMPTY_RANGE`]), not an error: OpenAPI cannot state a constraint
/// between two parameters, so a client that follows the API's description can send it.
fn parse_range(since: Option<&str>, before: Option<&str>) -> Result<(i64, i64), BadParameter> {
    let since = since.ok_or_else(|| {
        bad("missing required parameter 'since': expected YYYY-MM-DD or RFC 3339".into())
    })?;
    let before = before.ok_or_else(|| {
        bad("missing required parameter 'before': expected YYYY-MM-DD or RFC 3339".into())
    })?;
    let since_ms = parse_time("since", since)?;
    let before_ms = parse_time("before", before)?;
    Ok((since_ms, before_ms))
}

fn parse_direction(direction: Option<&str>) -> Result<Direction, BadParameter> {
    match direction {
        None | Some("desc") => Ok(Direction::Desc),
        Some("asc") => Ok(Direction::Asc),
        Some(other) => Err(bad(format!(
            "invalid value for 'direction': expected desc or asc, got {}",
            quoted(other)
        ))),
    }
}

fn parse_limit(limit: Option<&str>) -> Result<u32, BadParameter> {
    let Some(text) = limit else {
        return Ok(DEFAULT_LIMIT);
    };
    text.strip_suffix(".0")
        .unwrap_or(text)
        .parse::<u32>()
        .ok()
        .filter(|l| (1..=MAX_LIMIT).contains(l))
        .ok_or_else(|| {
            bad(format!(
                "invalid value for 'limit': expected an integer from 1 to {MAX_LIMIT}, got {}",
                quoted(text)
            ))
        })
}

/// A validated query of a resource's history (`…/logs/audit/{id}/history`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct HistoryQuery {
    pub(crate) since_ms: i64,
    pub(crate) before_ms: i64,
    /// The `action.time` of the audit log the history is of.
    pub(crate) action_time_ms: i64,
    pub(crate) direction: Direction,
    pub(crate) limit: u32,
    pub(crate) cursor: Option<String>,
}

/// Parses the query string of a history: `since`, `before` and `action_time` required,
/// `direction`, `limit` and `cursor` as for a page; nothing else.
pub(crate) fn parse_history(query: &str) -> Result<HistoryQuery, BadParameter> {
    const NAMES: [&str; 6] = [
        "since",
        "before",
        "action_time",
        "direction",
        "limit",
        "cursor",
    ];
    let mut given: [Option<String>; 6] = Default::default();
    for (key, value) in form_urlencoded::parse(query.as_bytes()) {
        let Some(i) = NAMES.iter().position(|n| *n == key) else {
            return Err(bad(format!(
                "unknown parameter {}: a history takes 'since', 'before', 'action_time', \
                 'direction', 'limit' and 'cursor'",
                quoted(&key)
            )));
        };
        if given[i].is_some() {
            return Err(bad(format!(
                "'{key}' is given more than once: give it once"
            )));
        }
        given[i] = Some(value.into_owned());
    }
    let [since, before, action_time, direction, limit, cursor] = given;
    let (since_ms, before_ms) = parse_range(since.as_deref(), before.as_deref())?;
    let action_time = action_time.ok_or_else(|| {
        bad("missing required parameter 'action_time': expected the RFC 3339 action.time of the audit log".into())
    })?;
    Ok(HistoryQuery {
        since_ms,
        before_ms,
        action_time_ms: parse_time("action_time", &action_time)?,
        direction: parse_direction(direction.as_deref())?,
        limit: parse_limit(limit.as_deref())?,
        cursor,
    })
}

/// Parses the query string of a page or an export; `categories` are what `product_category`
/// values stand for.
pub(crate) fn parse(query: &str, categories: &ProductCategories) -> Result<LogQuery, BadParameter> {
    let mut given = Given::new(categories);
    for (key, value) in form_urlencoded::parse(query.as_bytes()) {
        given.take(&key, value.into_owned())?;
    }
    let (since_ms, before_ms) = parse_range(given.since.as_deref(), given.before.as_deref())?;
    Ok(LogQuery {
        since_ms,
        before_ms,
        filters: given.filters,
        direction: parse_direction(given.direction.as_deref())?,
        limit: parse_limit(given.limit.as_deref())?,
        cursor: given.cursor,
        format: parse_format(given.format.as_deref())?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// [`super::parse`] with the categories `DNS` (`dns`, `zones`) and `Notifications`
    /// (`alerting`).
    fn parse(query: &str) -> Result<LogQuery, BadParameter> {
        let categories = ProductCategories::new()
            .category("DNS", ["dns", "zones"])
            .and_then(|c| c.category("Notifications", ["alerting"]))
            .expect("valid categories");
        super::parse(query, &categories)
    }

    fn err(query: &str) -> String {
        parse(query).expect_err(query).to_string()
    }

    #[test]
    fn a_full_query_parses() {
        let q = parse("since=2025-01-01&before=2025-01-23T18:25:14.749Z&action_type=update&action_type=create&action_type.not=view&raw_status_code=200.0&direction=asc&limit=50&cursor=abc").unwrap();
        assert_eq!(q.since_ms, 1_735_689_600_000);
        assert_eq!(q.before_ms, 1_737_656_714_749);
        assert_eq!(q.direction, Direction::Asc);
        assert_eq!(q.limit, 50);
        assert_eq!(q.cursor.as_deref(), Some("abc"));
        assert_eq!(q.filters.len(), 3);
        assert_eq!(
            q.filters[0].values.len(),
            2,
            "repeats are OR-ed in one filter"
        );
        assert!(q.filters[1].negated);
        assert_eq!(q.filters[2].values, vec![FilterValue::Int(200)]);
    }

    #[test]
    fn the_described_filters_are_the_accepted_ones() {
        for (name, _) in FILTERS {
            assert!(filter(name).is_some(), "{name}");
        }
        let columns: std::collections::HashSet<_> = FILTERS
            .iter()
            .map(|(n, _)| filter(n).map(|f| f.0))
            .collect();
        assert_eq!(columns.len(), FILTERS.len(), "one parameter per column");
    }

    #[test]
    fn format_is_json_ndjson_or_csv() {
        let base = "since=2025-01-01&before=2025-01-02";
        assert_eq!(parse(base).unwrap().format, AnswerFormat::Json);
        assert_eq!(
            parse(&format!("{base}&format=csv")).unwrap().format,
            AnswerFormat::Csv
        );
        assert_eq!(
            err(&format!("{base}&format=xlsx")),
            "invalid value for 'format': expected json, ndjson or csv, got \"xlsx\""
        );
    }

    #[test]
    fn aliases_of_the_original_api_are_accepted() {
        let q = parse("since=2025-01-01&before=2025-01-02&raw_cf_ray_id=r1&audit_log_id=01948c5e-9a2d-7b3c-8f00-0123456789ab").unwrap();
        assert_eq!(q.filters[0].column, Column::RawRayId);
        assert_eq!(q.filters[1].column, Column::Id);
    }

    #[test]
    fn every_value_the_v2_api_allows_is_a_filter_value() {
        // The enums of the v2 API's list parameters (the official SDKs' `audit_list_params`).
        let allowed = [
            ("action_result", &["success", "failure"][..]),
            ("action_type", &["create", "delete", "view", "update"]),
            (
                "actor_context",
                &["api_key", "api_token", "dash", "oauth", "origin_ca_key"],
            ),
            (
                "actor_type",
                &["account", "cloudflare_admin", "system", "user"],
            ),
            (
                "resource_scope",
                &["accounts", "user", "zones", "memberships"],
            ),
        ];
        for (name, values) in allowed {
            for value in values {
                for key in [name.to_owned(), format!("{name}.not")] {
                    let q = parse(&format!("since=2025-01-01&before=2025-01-02&{key}={value}"))
                        .unwrap_or_else(|e| panic!("{key}={value}: {e}"));
                    assert_eq!(
                        q.filters[0].values,
                        vec![FilterValue::Text((*value).into())]
                    );
                }
            }
        }
        for direction in ["desc", "asc"] {
            parse(&format!(
                "since=2025-01-01&before=2025-01-02&direction={direction}"
            ))
            .unwrap();
        }
    }

    #[test]
    fn product_categories_join_the_resource_product_filter() {
        let q = parse("since=2025-01-01&before=2025-01-02&resource_product=tokens&product_category=dns&product_category=NOTIFICATIONS&product_category.not=Dns").unwrap();
        let text = |v: &[&str]| {
            v.iter()
                .map(|v| FilterValue::Text((*v).into()))
                .collect::<Vec<_>>()
        };
        assert_eq!(
            q.filters,
            vec![
                ColumnFilter {
                    column: Column::ResourceProduct,
                    negated: false,
                    values: text(&["tokens", "dns", "zones", "alerting"]),
                },
                ColumnFilter {
                    column: Column::ResourceProduct,
                    negated: true,
                    values: text(&["dns", "zones"]),
                },
            ]
        );
        assert_eq!(
            err("since=2025-01-01&before=2025-01-02&product_category=security"),
            "invalid value for 'product_category': unknown product category \"security\": expected one of DNS, Notifications (in any case); GET /accounts/{account_id}/logs/audit/product_categories lists them"
        );
        let none = super::parse(
            "since=2025-01-01&before=2025-01-02&product_category.not=dns",
            &ProductCategories::new(),
        )
        .unwrap_err()
        .to_string();
        assert!(
            none.starts_with("invalid value for 'product_category.not': unknown product category \"dns\": expected none"),
            "{none}"
        );
    }

    #[test]
    fn history_queries_parse_and_name_bad_parameters() {
        let q = parse_history("since=2025-01-01&before=2025-01-02&action_time=2025-01-01T10:00:00.5Z&direction=asc&limit=3&cursor=c").unwrap();
        assert_eq!(
            (q.action_time_ms, q.direction, q.limit, q.cursor.as_deref()),
            (1_735_725_600_500, Direction::Asc, 3, Some("c"))
        );
        let e = |q: &str| parse_history(q).unwrap_err().to_string();
        assert_eq!(
            e("since=2025-01-01&before=2025-01-02"),
            "missing required parameter 'action_time': expected the RFC 3339 action.time of the audit log"
        );
        assert!(
            e("before=2025-01-02&action_time=2025-01-01")
                .starts_with("missing required parameter 'since'")
        );
        assert_eq!(
            e("since=2025-01-01&before=2025-01-02&action_time=soon"),
            "invalid value for 'action_time': expected YYYY-MM-DD or RFC 3339, got \"soon\""
        );
        assert!(
            e("since=2025-01-01&before=2025-01-02&action_time=2025-01-01&actor_email=a")
                .starts_with("unknown parameter \"actor_email\": a history takes")
        );
        assert_eq!(
            e("since=2025-01-01&before=2025-01-02&action_time=2025-01-01&limit=1001"),
            "invalid value for 'limit': expected an integer from 1 to 1000, got \"1001\""
        );
        assert_eq!(
            e("since=2025-01-01&since=2025-01-01"),
            "'since' is given more than once: give it once"
        );
    }

    #[test]
    fn every_bad_parameter_is_named() {
        let base = "since=2025-01-01&before=2025-01-02";
        assert_eq!(
            err("before=2025-01-02"),
            "missing required parameter 'since': expected YYYY-MM-DD or RFC 3339"
        );
        assert_eq!(
            err("since=yesterday&before=2025-01-02"),
            "invalid value for 'since': expected YYYY-MM-DD or RFC 3339, got \"yesterday\""
        );
        // An empty range is not an error (OpenAPI cannot say that `before` follows `since`).
        let empty = parse("since=2025-01-02&before=2025-01-01").unwrap();
        assert!(empty.before_ms < empty.since_ms);
        assert_eq!(
            err(&format!("{base}&limit=0")),
            "invalid value for 'limit': expected an integer from 1 to 1000, got \"0\""
        );
        assert_eq!(
            err(&format!("{base}&limit=1001")),
            "invalid value for 'limit': expected an integer from 1 to 1000, got \"1001\""
        );
        assert_eq!(
            err(&format!("{base}&action_type=Edit")),
            "invalid value for 'action_type': expected an action type, a lowercase name of letters, digits and '_' that starts with a letter (e.g. update, login, expire), got \"Edit\""
        );
        // Any well-formed name selects records (those of events that say so, or none).
        assert!(parse(&format!("{base}&action_type=expire")).is_ok());
        assert_eq!(
            err(&format!("{base}&actor_type=robot")),
            "invalid value for 'actor_type': expected one of user, account, system, cloudflare_admin, got \"robot\""
        );
        assert_eq!(
            err(&format!("{base}&actor_context.not=cookie")),
            "invalid value for 'actor_context.not': expected one of api_token, api_key, dash, oauth, system, origin_ca_key, got \"cookie\""
        );
        assert_eq!(
            err(&format!("{base}&raw_status_code=ok")),
            "invalid value for 'raw_status_code': expected an HTTP status code (an integer from 100 to 599), got \"ok\""
        );
        assert_eq!(
            err(&format!("{base}&id=1")),
            "invalid value for 'id': expected an audit log id (a UUID), got \"1\""
        );
        assert_eq!(
            err(&format!("{base}&actor_ip_address=1.2.3")),
            "invalid value for 'actor_ip_address': expected an IPv4 or IPv6 address, got \"1.2.3\""
        );
        assert_eq!(
            err(&format!("{base}&direction=up")),
            "invalid value for 'direction': expected desc or asc, got \"up\""
        );
        assert_eq!(
            err(&format!("{base}&colour=red")),
            "unknown parameter \"colour\": see the audit log API's parameters"
        );
        assert_eq!(
            err(&format!("{base}&since=2025-01-01")),
            "'since' is given more than once: give it once"
        );
        let many: String = (0..101).map(|i| format!("&actor_email=a{i}@x")).collect();
        assert_eq!(
            err(&format!("{base}{many}")),
            "too many values for \"actor_email\": at most 100 in one query"
        );
        // The limit is per parameter, as the API's description says (`maxItems`).
        let spread: String = (0..100)
            .map(|i| format!("&actor_email=a{i}@x&actor_email.not=b{i}@x"))
            .collect();
        assert_eq!(parse(&format!("{base}{spread}")).unwrap().filters.len(), 2);
        // Lengths are counted in characters, as `maxLength`.
        let wide = "é".repeat(1024);
        assert!(parse(&format!("{base}&actor_email={wide}")).is_ok());
        assert_eq!(
            err(&format!("{base}&actor_email={wide}é")),
            "invalid value for 'actor_email': longer than 1024 characters"
        );
        assert!(
            err(&format!("{base}&x\u{1b}[2J=1")).contains("\\x1b"),
            "escaped in the message"
        );
    }

    #[test]
    fn verification_spans_parse_and_name_bad_parameters() {
        let span = parse_span("since=2025-01-01&before=2025-01-02").unwrap();
        assert_eq!(span.since_ms, Some(1_735_689_600_000));
        assert_eq!(span.before_ms, Some(1_735_776_000_000));
        assert_eq!(parse_span("").unwrap(), crate::verify::Span::all());
        let e = |q: &str| parse_span(q).unwrap_err().to_string();
        assert_eq!(
            e("limit=5"),
            "unknown parameter \"limit\": verification takes 'since' and 'before'"
        );
        assert!(e("since=x").starts_with("invalid value for 'since'"));
        assert_eq!(
            e("since=2025-01-01&since=2025-01-01"),
            "'since' is given more than once: give it once"
        );
        assert!(parse_span("since=2025-01-02&before=2025-01-01").is_ok());
    }

    #[test]
    fn the_binding_ignores_order_and_limit() {
        let a = parse("since=2025-01-01&before=2025-01-02&actor_email=a&actor_email=b&limit=5")
            .unwrap();
        let b = parse("actor_email=b&since=2025-01-01&actor_email=a&before=2025-01-02&limit=7")
            .unwrap();
        assert_eq!(a.binding("acc"), b.binding("acc"));
        assert_ne!(a.binding("acc"), a.binding("other"));
        let c =
            parse("since=2025-01-01&before=2025-01-02&actor_email.not=a&actor_email=b").unwrap();
        assert_ne!(a.binding("acc"), c.binding("acc"));
    }
}
