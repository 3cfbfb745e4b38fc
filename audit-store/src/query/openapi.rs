//! The audit log API described in OpenAPI 3.1 (feature `utoipa`), for the app to merge into
//! its own document: every parameter the [router](super::AuditLogRouter) takes and every
//! status it answers, under the router's [prefix](super::AuditLogRouter::prefix).

use utoipa::openapi::path::{HttpMethod, OperationBuilder, ParameterBuilder, ParameterIn};
use utoipa::openapi::schema::{AnyOfBuilder, Array, ObjectBuilder, SchemaFormat, Type};
use utoipa::openapi::tag::Tag;
use utoipa::openapi::{
    ContentBuilder, Info, OpenApi, PathItem, PathsBuilder, RefOr, Required, ResponseBuilder, Schema,
};

use super::params::{DEFAULT_LIMIT, FILTERS, Kind, MAX_LIMIT, MAX_VALUE_LEN, filter};

/// The tag of the audit log's operations.
pub const TAG: &str = "Audit Logs";

/// The audit log API's paths under `prefix` (`""` when mounted at the root), as the router
/// built with the same [prefix](super::AuditLogRouter::prefix) serves them. Merge it into
/// the app's document (`app_doc.merge(audit_store::query::openapi(""))`).
///
/// ```
/// use utoipa::openapi::RefOr;
///
/// let doc = audit_store::query::openapi("/v4");
/// let list = doc.paths.get_path_item("/v4/accounts/{account_id}/logs/audit").unwrap();
/// let get = list.get.as_ref().unwrap();
/// assert_eq!(get.operation_id.as_deref(), Some("audit-logs-list"));
/// let names: Vec<&str> = get.parameters.iter().flatten()
///     .filter_map(|p| match p { RefOr::T(p) => Some(p.name.as_str()), RefOr::Ref(_) => None })
///     .collect();
/// assert!(names.contains(&"actor_email.not"));
/// ```
pub fn openapi(prefix: &str) -> OpenApi {
    let base = format!("{prefix}/accounts/{{account_id}}/logs/audit");
    let paths = PathsBuilder::new()
        .path(base.clone(), PathItem::new(HttpMethod::Get, list()))
        .path(
            format!("{base}/verify"),
            PathItem::new(HttpMethod::Get, verify()),
        )
        .path(
            format!("{base}/stats"),
            PathItem::new(HttpMethod::Get, stats()),
        )
        .path(
            format!("{base}/product_categories"),
            PathItem::new(HttpMethod::Get, categories()),
        )
        .path(
            format!("{base}/{{id}}"),
            PathItem::new(HttpMethod::Get, one()),
        )
        .path(
            format!("{base}/{{id}}/history"),
            PathItem::new(HttpMethod::Get, history()),
        );
    let mut tag = Tag::new(TAG);
    tag.description = Some("Who did what, when, from where: the account's audit log".into());
    let mut doc = OpenApi::new(Info::new("Audit logs", "2"), paths.build());
    doc.tags = Some(vec![tag]);
    doc
}

fn string() -> ObjectBuilder {
    ObjectBuilder::new().schema_type(Type::String)
}

fn parameter(
    name: &str,
    location: ParameterIn,
    required: bool,
    description: &str,
) -> ParameterBuilder {
    ParameterBuilder::new()
        .name(name)
        .parameter_in(location)
        .required(if required {
            Required::True
        } else {
            Required::False
        })
        .description(Some(description))
}

fn account_id() -> ParameterBuilder {
    parameter(
        "account_id",
        ParameterIn::Path,
        true,
        "The account whose audit log is read.",
    )
    .schema(Some(string()))
}

fn formatted(format: &str) -> ObjectBuilder {
    string().format(Some(SchemaFormat::Custom(format.to_owned())))
}

fn time(name: &str, required: bool, description: &str) -> ParameterBuilder {
    let schema = AnyOfBuilder::new()
        .item(formatted("date"))
        .item(formatted("date-time"))
        .description(Some(
            "A date (YYYY-MM-DD, midnight UTC) or an RFC 3339 time",
        ));
    parameter(name, ParameterIn::Query, required, description).schema(Some(schema))
}

/// What one value of a filter may be: what the router accepts, no more.
fn value_schema(kind: Kind) -> RefOr<Schema> {
    let one_of = |values: &[&str]| string().enum_values(Some(values.to_vec())).into();
    match kind {
        Kind::Text => string()
            .max_length(Some(MAX_VALUE_LEN))
            .description(Some(format!("At most {MAX_VALUE_LEN} bytes of UTF-8")))
            .into(),
        Kind::ActionType => one_of(&[
            "view", "create", "update", "delete", "login", "logout", "gap", "summary",
        ]),
        Kind::ActionResult => one_of(&["success", "failure"]),
        Kind::ActorType => one_of(&["user", "account", "system"]),
        Kind::ActorContext => one_of(&["api_token", "api_key", "dash", "oauth", "system"]),
        Kind::StatusCode => ObjectBuilder::new()
            .schema_type(Type::Integer)
            .minimum(Some(100))
            .maximum(Some(599))
            .into(),
        Kind::Ip => AnyOfBuilder::new()
            .item(formatted("ipv4"))
            .item(formatted("ipv6"))
            .into(),
        Kind::Id => formatted("uuid").into(),
    }
}

fn json(schema: impl Into<RefOr<Schema>>) -> ContentBuilder {
    ContentBuilder::new().schema(Some(schema))
}

/// The envelope of an error: `success: false` and the errors, each a code and a message.
fn error_envelope() -> ObjectBuilder {
    let error = ObjectBuilder::new()
        .property("code", ObjectBuilder::new().schema_type(Type::Integer))
        .property("message", string())
        .required("code")
        .required("message");
    ObjectBuilder::new()
        .property("success", ObjectBuilder::new().schema_type(Type::Boolean))
        .property("errors", Array::new(error))
        .property("messages", Array::new(ObjectBuilder::new()))
        .property("result", ObjectBuilder::new().schema_type(Type::Null))
        .required("success")
        .required("errors")
}

/// The envelope of a success whose `result` is `result`.
fn envelope(result: impl Into<RefOr<Schema>>) -> ObjectBuilder {
    ObjectBuilder::new()
        .property("success", ObjectBuilder::new().schema_type(Type::Boolean))
        .property("errors", Array::new(ObjectBuilder::new()))
        .property("messages", Array::new(ObjectBuilder::new()))
        .property("result", result)
        .required("success")
        .required("result")
}

fn error(description: &str) -> ResponseBuilder {
    ResponseBuilder::new()
        .description(description)
        .content("application/json", json(error_envelope()))
}

/// The answers every read shares.
fn with_errors(operation: OperationBuilder) -> OperationBuilder {
    operation
        .response(
            "400",
            error("A parameter is invalid; the message names it."),
        )
        .response("401", error("The request carries no valid credentials."))
        .response(
            "404",
            error("No such account, or the caller may not read its log."),
        )
        .response("500", error("The audit log could not be read."))
}

fn operation(id: &str, summary: &str, description: &str) -> OperationBuilder {
    OperationBuilder::new()
        .tag(TAG)
        .operation_id(Some(id))
        .summary(Some(summary))
        .description(Some(description))
        .parameter(account_id())
}

fn list() -> OperationBuilder {
    let operation = matching(operation(
        "audit-logs-list",
        "List an account's audit logs",
        "A page of the account's audit log records, newest first, with a cursor to the next \
         page; with `Accept: application/x-ndjson`, every matching record, one per line.",
    ));
    let records = Array::new(ObjectBuilder::new().description(Some(
        "An audit log record (the JSON Schema `audit-log.schema.json`).",
    )));
    let page = envelope(records).property(
        "result_info",
        ObjectBuilder::new()
            .property("count", ObjectBuilder::new().schema_type(Type::Integer))
            .property("cursor", string())
            .property("cursors", ObjectBuilder::new().property("after", string())),
    );
    paging(operation)
        .response(
            "200",
            ResponseBuilder::new()
                .description("A page of records, or (NDJSON) every record.")
                .content("application/json", json(page))
                .content("application/x-ndjson", json(string())),
        )
        .response(
            "422",
            error("The query reached its time limit; the message names the slow filters."),
        )
        .response(
            "429",
            error("Too many exports of this account run at once."),
        )
        .pipe(with_errors)
}

/// The range and the filters: what the list, an export and the stats select records by.
fn matching(operation: OperationBuilder) -> OperationBuilder {
    let mut operation = operation
        .parameter(time("since", true, "Records at or after this time."))
        .parameter(time("before", true, "Records before this time."));
    let filters = FILTERS.iter().map(|&(name, description)| {
        let kind = filter(name).map_or(Kind::Text, |(_, kind)| kind);
        (name, description, value_schema(kind))
    });
    let category = (
        "product_category",
        "product category (its `resource.product` values, see `/product_categories`)",
        string().max_length(Some(MAX_VALUE_LEN)).into(),
    );
    for (name, description, schema) in filters.chain([category]) {
        for (suffix, what) in [("", "equal to"), (".not", "not equal to")] {
            operation = operation.parameter(
                parameter(
                    &format!("{name}{suffix}"),
                    ParameterIn::Query,
                    false,
                    &format!(
                        "Records whose {description} is {what} one of the values (repeatable)."
                    ),
                )
                .schema(Some(Array::new(schema.clone())))
                .explode(Some(true)),
            );
        }
    }
    operation
}

/// The paging of the list and the history.
fn paging(operation: OperationBuilder) -> OperationBuilder {
    let direction = ObjectBuilder::new()
        .schema_type(Type::String)
        .enum_values(Some(["desc", "asc"]))
        .default(Some("desc".into()));
    let limit = ObjectBuilder::new()
        .schema_type(Type::Integer)
        .minimum(Some(1))
        .maximum(Some(MAX_LIMIT))
        .default(Some(DEFAULT_LIMIT.into()));
    operation
        .parameter(
            parameter("direction", ParameterIn::Query, false, "The order by time.")
                .schema(Some(direction)),
        )
        .parameter(
            parameter("limit", ParameterIn::Query, false, "Records per page.").schema(Some(limit)),
        )
        .parameter(
            parameter(
                "cursor",
                ParameterIn::Query,
                false,
                "The `result_info.cursor` of the previous page, with the same parameters.",
            )
            .schema(Some(string())),
        )
}

fn stats() -> OperationBuilder {
    let interval = string().enum_values(Some(["hour", "day"]));
    let top = ObjectBuilder::new()
        .schema_type(Type::Integer)
        .minimum(Some(1))
        .maximum(Some(super::stats::MAX_TOP))
        .default(Some(10.into()));
    matching(operation(
        "audit-logs-stats",
        "Count an account's audit logs",
        "Counts of the matching records per hour or day, by result, and the most frequent \
         actors, actions and products.",
    ))
    .parameter(
        parameter(
            "interval",
            ParameterIn::Query,
            false,
            "The buckets' length (by default `hour` up to 7 days, else `day`).",
        )
        .schema(Some(interval)),
    )
    .parameter(
        parameter("top", ParameterIn::Query, false, "Entries per top list.").schema(Some(top)),
    )
    .parameter(
        parameter(
            "utc_offset",
            ParameterIn::Query,
            false,
            "The time zone offset the buckets follow: `Z` (the default: UTC hours and days) or \
             `±HH:MM` from `-14:00` to `+14:00` (`+` sent as `%2B`), so that days start at the \
             caller's midnight. Fixed over the range; each bucket's `time` is its start in UTC.",
        )
        .schema(Some(
            string()
                .pattern(Some("^(Z|[+-](0[0-9]|1[0-4]):[0-5][0-9])$"))
                .default(Some("Z".into())),
        )),
    )
    .response(
        "200",
        ResponseBuilder::new()
            .description("The counts.")
            .content("application/json", json(envelope(ObjectBuilder::new()))),
    )
    .response(
        "422",
        error("The query reached its time limit; the message names the slow filters."),
    )
    .pipe(with_errors)
}

fn categories() -> OperationBuilder {
    let category = ObjectBuilder::new()
        .property("value", string())
        .property("label", string())
        .property("products", Array::new(ObjectBuilder::new()));
    operation(
        "audit-logs-product-categories",
        "List the product categories",
        "The values the `product_category` filter takes, each with its products.",
    )
    .response(
        "200",
        ResponseBuilder::new()
            .description("The categories.")
            .content("application/json", json(envelope(Array::new(category)))),
    )
    .pipe(with_errors)
}

fn history() -> OperationBuilder {
    let operation = operation(
        "audit-logs-history",
        "Get the history of an audit log's resource",
        "The successful writes to the resource the audit log acted on, each with the \
         resource's value before and after it.",
    )
    .parameter(id());
    paging(
        operation
            .parameter(time("since", true, "Writes at or after this time."))
            .parameter(time("before", true, "Writes before this time."))
            .parameter(
                parameter(
                    "action_time",
                    ParameterIn::Query,
                    false,
                    "The audit log's `action.time`.",
                )
                .schema(Some(formatted("date-time"))),
            ),
    )
    .response(
        "200",
        ResponseBuilder::new()
            .description("A page of the resource's history.")
            .content(
                "application/json",
                json(envelope(Array::new(ObjectBuilder::new()))),
            ),
    )
    .pipe(with_errors)
}

fn id() -> ParameterBuilder {
    parameter("id", ParameterIn::Path, true, "The audit log's id.").schema(Some(formatted("uuid")))
}

fn verify() -> OperationBuilder {
    let report = ObjectBuilder::new()
        .description(Some("The verification report"))
        .property("account_id", string())
        .property("ok", ObjectBuilder::new().schema_type(Type::Boolean))
        .property(
            "outcome",
            string().enum_values(Some(["ok", "unverifiable", "broken"])),
        );
    operation(
        "audit-logs-verify",
        "Verify an account's audit log",
        "Verifies the account's hash chain against its signed checkpoints.",
    )
    .parameter(time("since", false, "Records at or after this time."))
    .parameter(time("before", false, "Records before this time."))
    .response(
        "200",
        ResponseBuilder::new()
            .description("The report: `ok`, `unverifiable` or `broken`.")
            .content("application/json", json(envelope(report))),
    )
    .response("501", error("The audit log is not chained."))
    .pipe(with_errors)
}

fn one() -> OperationBuilder {
    operation(
        "audit-logs-get",
        "Get an audit log record",
        "One record of the account's audit log, by id.",
    )
    .parameter(id())
    .response(
        "200",
        ResponseBuilder::new()
            .description("The record.")
            .content("application/json", json(envelope(ObjectBuilder::new()))),
    )
    .pipe(with_errors)
}

/// `value.pipe(f)`: `f(value)`, to keep a chain of builder calls in order.
trait Pipe: Sized {
    fn pipe(self, f: impl FnOnce(Self) -> Self) -> Self {
        f(self)
    }
}

impl Pipe for OperationBuilder {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_filter_and_its_negation_is_a_documented_parameter() {
        let doc = openapi("");
        let list = doc
            .paths
            .get_path_operation("/accounts/{account_id}/logs/audit", HttpMethod::Get)
            .unwrap();
        let names: Vec<&str> = list
            .parameters
            .iter()
            .flatten()
            .filter_map(|p| match p {
                RefOr::T(p) => Some(p.name.as_str()),
                RefOr::Ref(_) => None,
            })
            .collect();
        for name in [
            "since",
            "before",
            "direction",
            "limit",
            "cursor",
            "zone_id",
            "zone_id.not",
        ] {
            assert!(names.contains(&name), "{name} missing from {names:?}");
        }
        // The account, the range, every filter and `product_category` (each with `.not`), paging.
        assert_eq!(names.len(), 1 + 2 + (FILTERS.len() + 1) * 2 + 3);
        let statuses: Vec<&str> = list
            .responses
            .responses
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(statuses, ["200", "400", "401", "404", "422", "429", "500"]);
    }

    #[test]
    fn the_prefix_is_in_every_path() {
        let doc = openapi("/client/v4");
        let paths: Vec<&str> = doc.paths.paths.keys().map(String::as_str).collect();
        assert_eq!(
            paths,
            [
                "/client/v4/accounts/{account_id}/logs/audit",
                "/client/v4/accounts/{account_id}/logs/audit/product_categories",
                "/client/v4/accounts/{account_id}/logs/audit/stats",
                "/client/v4/accounts/{account_id}/logs/audit/verify",
                "/client/v4/accounts/{account_id}/logs/audit/{id}",
                "/client/v4/accounts/{account_id}/logs/audit/{id}/history",
            ]
        );
    }
}
