//! The audit log API described in OpenAPI 3.1 (feature `utoipa`), for the app to merge into
//! its own document: every parameter the [router](super::AuditLogRouter) takes, every limit
//! it enforces, every status and error body it answers, under the router's
//! [prefix](super::AuditLogRouter::prefix). [`AuditLogRouter::description`](super::AuditLogRouter::description)
//! gives the description of one router; [`ApiDescription`] builds it without a store (for a
//! document made before the store is opened).

use audit_layer::ProductCategories;
use utoipa::openapi::path::{HttpMethod, OperationBuilder, ParameterBuilder, ParameterIn};
use utoipa::openapi::schema::{
    AnyOfBuilder, Array, ArrayBuilder, ObjectBuilder, SchemaFormat, Type,
};
use utoipa::openapi::security::SecurityRequirement;
use utoipa::openapi::tag::Tag;
use utoipa::openapi::{
    ContentBuilder, Info, OpenApi, PathItem, PathsBuilder, RefOr, Required, ResponseBuilder, Schema,
};

use super::params::{
    DEFAULT_LIMIT, FILTERS, Kind, MAX_FILTER_VALUES, MAX_LIMIT, MAX_VALUE_LEN, filter,
};

/// An action type (`audit_layer::record::ActionType`): a lowercase word, at most 64 bytes.
const ACTION_TYPE_PATTERN: &str = "^[a-z][a-z0-9_]{0,63}$";

/// The tag of the audit log's operations.
pub const TAG: &str = "Audit Logs";

/// The audit log API's paths under `prefix` (`""` when mounted at the root), as a router
/// built with the same [prefix](super::AuditLogRouter::prefix) and no other setting that
/// changes what it serves (no product categories, no viewer) serves them; the same as
/// `ApiDescription::new().prefix(prefix).openapi()`. Merge it into the app's document
/// (`app_doc.merge(audit_store::query::openapi(""))`).
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
    ApiDescription::new().prefix(prefix).openapi()
}

/// What an [`AuditLogRouter`](super::AuditLogRouter) serves, to describe in OpenAPI: its
/// prefix, the product categories its `product_category` filter takes, and whether it serves
/// the viewer. [`AuditLogRouter::description`](super::AuditLogRouter::description) gives the
/// one of a router; build it here when the document is made without the store.
///
/// ```
/// use audit_layer::ProductCategories;
/// use audit_store::query::ApiDescription;
///
/// let categories = ProductCategories::new().category("DNS", ["dns", "zones"])?;
/// let doc = ApiDescription::new()
///     .prefix("/client/v4")
///     .product_categories(categories)
///     .openapi();
/// assert!(doc.paths.get_path_item("/client/v4/accounts/{account_id}/logs/audit/stats").is_some());
/// # Ok::<(), audit_layer::PolicyError>(())
/// ```
#[derive(Clone, Debug, Default)]
#[must_use]
pub struct ApiDescription {
    prefix: String,
    categories: ProductCategories,
    viewer: bool,
}

impl ApiDescription {
    /// A router at the root, without product categories or viewer.
    pub fn new() -> Self {
        Self::default()
    }

    /// The router's [prefix](super::AuditLogRouter::prefix). Defaults to none.
    pub fn prefix(mut self, prefix: &str) -> Self {
        prefix.clone_into(&mut self.prefix);
        self
    }

    /// The router's [product categories](super::AuditLogRouter::product_categories): the
    /// values `product_category` takes (in any case). Defaults to none, and then the
    /// parameter is not described (every value of it is a 400).
    pub fn product_categories(mut self, categories: ProductCategories) -> Self {
        self.categories = categories;
        self
    }

    /// Whether the router serves the viewer (`AuditLogRouter::with_viewer`, feature
    /// `viewer`). Defaults to `false`.
    pub fn viewer(mut self, viewer: bool) -> Self {
        self.viewer = viewer;
        self
    }

    /// The description, to merge into the app's document.
    pub fn openapi(&self) -> OpenApi {
        let base = format!("{}/accounts/{{account_id}}/logs/audit", self.prefix);
        let category = category_schema(&self.categories);
        let mut paths = PathsBuilder::new()
            .path(
                base.clone(),
                PathItem::new(HttpMethod::Get, list(category.clone())),
            )
            .path(
                format!("{base}/verify"),
                PathItem::new(HttpMethod::Get, verify()),
            )
            .path(
                format!("{base}/stats"),
                PathItem::new(HttpMethod::Get, stats(category)),
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
        if self.viewer {
            paths = paths
                .path(
                    format!("{base}/viewer"),
                    PathItem::new(HttpMethod::Get, viewer_page()),
                )
                .path(
                    format!("{base}/viewer/{{asset}}"),
                    PathItem::new(HttpMethod::Get, viewer_asset()),
                );
        }
        let mut tag = Tag::new(TAG);
        tag.description = Some("Who did what, when, from where: the account's audit log".into());
        let mut doc = OpenApi::new(Info::new("Audit logs", "2"), paths.build());
        doc.tags = Some(vec![tag]);
        doc
    }
}

/// The schema of a `product_category` value: one of `categories`' names in any case (a
/// pattern, as JSON Schema has no case-insensitive `enum`); `None` when there are none.
fn category_schema(categories: &ProductCategories) -> Option<RefOr<Schema>> {
    if categories.is_empty() {
        return None;
    }
    let names: Vec<&str> = categories.iter().map(|c| c.value()).collect();
    let alternatives: Vec<String> = names.iter().map(|n| any_case(n)).collect();
    Some(
        string()
            .pattern(Some(format!("^(?:{})$", alternatives.join("|"))))
            .description(Some(format!(
                "One of {} (in any case)",
                names
                    .iter()
                    .map(|n| format!("`{n}`"))
                    .collect::<Vec<_>>()
                    .join(", ")
            )))
            .examples(names.iter().map(|n| serde_json::Value::from(*n)))
            .into(),
    )
}

/// A regular expression (ECMA 262, as JSON Schema's) matching `name` in any case, as
/// [`ProductCategories::get`] compares names.
fn any_case(name: &str) -> String {
    let mut pattern = String::with_capacity(name.len() * 4);
    for c in name.chars() {
        let mut lower = c.to_lowercase();
        let mut upper = c.to_uppercase();
        match (lower.next(), lower.next(), upper.next(), upper.next()) {
            (Some(l), None, Some(u), None) if l != u => {
                pattern.push('[');
                pattern.push(l);
                pattern.push(u);
                pattern.push(']');
            }
            _ if c.is_alphanumeric() || c == ' ' || c == '_' || c == '&' => pattern.push(c),
            // `-` and `.`, the other characters a name may hold.
            _ => {
                pattern.push('\\');
                pattern.push(c);
            }
        }
    }
    pattern
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
            .description(Some(format!("At most {MAX_VALUE_LEN} characters")))
            .into(),
        Kind::ActionType => string()
            .pattern(Some(ACTION_TYPE_PATTERN))
            .description(Some(
                "An action type: `view`, `create`, `update`, `delete`, or another an operation \
                 or an event names (a lowercase word of letters, digits and `_`, e.g. `login`)",
            ))
            .into(),
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

/// An error or a message of the envelope: a code and what a person reads.
fn note() -> ObjectBuilder {
    ObjectBuilder::new()
        .property("code", ObjectBuilder::new().schema_type(Type::Integer))
        .property("message", string())
        .required("code")
        .required("message")
}

/// The envelope of an error: `success: false` and the errors, each a code and a message
/// (the message names the parameter at fault).
fn error_envelope() -> ObjectBuilder {
    ObjectBuilder::new()
        .property(
            "success",
            ObjectBuilder::new()
                .schema_type(Type::Boolean)
                .enum_values(Some([false])),
        )
        .property(
            "errors",
            ArrayBuilder::new().items(note()).min_items(Some(1)),
        )
        .property("messages", Array::new(note()))
        .property("result", ObjectBuilder::new().schema_type(Type::Null))
        .required("success")
        .required("errors")
        .required("messages")
        .required("result")
}

/// The envelope of a success whose `result` is `result`.
fn envelope(result: impl Into<RefOr<Schema>>) -> ObjectBuilder {
    ObjectBuilder::new()
        .property(
            "success",
            ObjectBuilder::new()
                .schema_type(Type::Boolean)
                .enum_values(Some([true])),
        )
        .property(
            "errors",
            ArrayBuilder::new().items(note()).max_items(Some(0)),
        )
        .property("messages", Array::new(note()))
        .property("result", result)
        .required("success")
        .required("errors")
        .required("messages")
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
        .response("414", too_long())
}

/// hyper's answer, before any handler, to a request line over 64 KiB: a query of many long
/// filter values can be.
fn too_long() -> ResponseBuilder {
    ResponseBuilder::new().description(
        "The request line is longer than the server takes (64 KiB with hyper): fewer or \
         shorter filter values.",
    )
}

fn operation(id: &str, summary: &str, description: &str) -> OperationBuilder {
    OperationBuilder::new()
        .tag(TAG)
        .operation_id(Some(id))
        .summary(Some(summary))
        .description(Some(description))
        .parameter(account_id())
}

fn list(category: Option<RefOr<Schema>>) -> OperationBuilder {
    let operation = matching(
        operation(
            "audit-logs-list",
            "List an account's audit logs",
            "A page of the account's audit log records, newest first, with a cursor to the next \
             page; with `format=ndjson` or `Accept: application/x-ndjson`, every matching \
             record, one per line; with `format=csv` or `Accept: text/csv`, as CSV. A range \
             whose `before` is not after `since` holds no record: the answer is empty, with a \
             message that says so.",
        ),
        category,
    )
    .parameter(
        parameter(
            "format",
            ParameterIn::Query,
            false,
            "How the answer is written: a JSON page (`json`, the default), or every matching \
             record streamed as NDJSON (`ndjson`) or CSV (`csv`).",
        )
        .schema(Some(
            string()
                .enum_values(Some(["json", "ndjson", "csv"]))
                .default(Some("json".into())),
        )),
    );
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
                .content("application/x-ndjson", json(string()))
                .content(
                    "text/csv",
                    json(string().description(Some(
                        "A header row, then one row per record, every cell quoted",
                    ))),
                ),
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
fn matching(operation: OperationBuilder, category: Option<RefOr<Schema>>) -> OperationBuilder {
    let mut operation = operation
        .parameter(time("since", true, "Records at or after this time."))
        .parameter(time("before", true, "Records before this time."));
    let filters = FILTERS.iter().map(|&(name, description)| {
        let kind = filter(name).map_or(Kind::Text, |(_, kind)| kind);
        (name, description, value_schema(kind))
    });
    let category = category.map(|schema| {
        (
            "product_category",
            "product category (its `resource.product` values, see `/product_categories`)",
            schema,
        )
    });
    for (name, description, schema) in filters.chain(category) {
        for (suffix, what) in [("", "equal to"), (".not", "not equal to")] {
            operation = operation.parameter(
                parameter(
                    &format!("{name}{suffix}"),
                    ParameterIn::Query,
                    false,
                    &format!(
                        "Records whose {description} is {what} one of the values (repeatable, \
                         at most {MAX_FILTER_VALUES} values)."
                    ),
                )
                .schema(Some(
                    ArrayBuilder::new()
                        .items(schema.clone())
                        .max_items(Some(MAX_FILTER_VALUES)),
                ))
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

fn stats(category: Option<RefOr<Schema>>) -> OperationBuilder {
    let interval = string().enum_values(Some(["hour", "day"]));
    let top = ObjectBuilder::new()
        .schema_type(Type::Integer)
        .minimum(Some(1))
        .maximum(Some(super::stats::MAX_TOP))
        .default(Some(10.into()));
    matching(
        operation(
            "audit-logs-stats",
            "Count an account's audit logs",
            "Counts of the matching records per hour or day, by result, and the most frequent \
             actors, actions and products.",
        ),
        category,
    )
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
            .parameter(time(
                "action_time",
                true,
                "The audit log's `action.time` (another time: a 404).",
            )),
    )
    .response(
        "200",
        ResponseBuilder::new()
            .description("A page of the resource's history.")
            .content(
                "application/json",
                json(
                    envelope(Array::new(ObjectBuilder::new())).property(
                        "result_info",
                        ObjectBuilder::new()
                            .property("count", ObjectBuilder::new().schema_type(Type::Integer))
                            .property(
                                "history_status",
                                string().enum_values(Some(["exact", "approximate", "unavailable"])),
                            )
                            .property("cursor", string())
                            .property("cursors", ObjectBuilder::new().property("after", string())),
                    ),
                ),
            ),
    )
    .response(
        "422",
        error("The query reached its time limit: narrow 'since' and 'before'."),
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

fn viewer_page() -> OperationBuilder {
    operation(
        "audit-logs-viewer",
        "Open the audit log viewer",
        "The viewer's page (HTML): it reads this API with the browser's credentials, and keeps \
         its state (the API's query parameters) in its own URL.",
    )
    .response(
        "200",
        ResponseBuilder::new()
            .description("The page.")
            .content("text/html", ContentBuilder::new().schema(Some(string()))),
    )
    .response("401", error("The request carries no valid credentials."))
    .response(
        "404",
        error("No such account, or the caller may not read its log."),
    )
    .response("414", too_long())
}

fn viewer_asset() -> OperationBuilder {
    let asset = parameter(
        "asset",
        ParameterIn::Path,
        true,
        "The viewer's script or style sheet.",
    )
    .schema(Some(string()));
    let text = |media: &str| {
        (
            media.to_owned(),
            ContentBuilder::new().schema(Some(string())).build(),
        )
    };
    let mut found = ResponseBuilder::new().description("The asset.");
    for (media, content) in [text("text/javascript"), text("text/css")] {
        found = found.content(media, content);
    }
    operation(
        "audit-logs-viewer-asset",
        "Get an asset of the audit log viewer",
        "The viewer's script (`viewer.js`) and style sheet (`viewer.css`): the same for \
         every account, served without credentials.",
    )
    .parameter(asset)
    .security(SecurityRequirement::default())
    .response("200", found)
    .response(
        "404",
        ResponseBuilder::new()
            .description("No such asset.")
            .content(
                "text/plain",
                ContentBuilder::new().schema(Some(string())).build(),
            ),
    )
    .response("414", too_long())
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
        // The account, the range, every filter (each with `.not`; no `product_category` without
        // categories), `format`, paging.
        assert_eq!(names.len(), 1 + 2 + FILTERS.len() * 2 + 1 + 3);
        let statuses: Vec<&str> = list
            .responses
            .responses
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(
            statuses,
            ["200", "400", "401", "404", "414", "422", "429", "500"]
        );
    }

    #[test]
    fn product_categories_are_described_as_the_router_takes_them() {
        let categories = ProductCategories::new()
            .category("DNS", ["dns"])
            .and_then(|c| c.category("Rules & Pages.v2", ["rules"]))
            .unwrap();
        let doc = ApiDescription::new()
            .product_categories(categories)
            .viewer(true)
            .openapi();
        let list = doc
            .paths
            .get_path_operation("/accounts/{account_id}/logs/audit", HttpMethod::Get)
            .unwrap();
        let schema = list
            .parameters
            .iter()
            .flatten()
            .find_map(|p| match p {
                RefOr::T(p) if p.name == "product_category" => p.schema.clone(),
                _ => None,
            })
            .unwrap();
        let schema = serde_json::to_value(schema).unwrap();
        assert_eq!(schema["maxItems"], 100);
        assert_eq!(
            schema["items"]["pattern"],
            "^(?:[dD][nN][sS]|[rR][uU][lL][eE][sS] & [pP][aA][gG][eE][sS]\\.[vV]2)$"
        );
        for path in [
            "/accounts/{account_id}/logs/audit/viewer",
            "/accounts/{account_id}/logs/audit/viewer/{asset}",
        ] {
            assert!(doc.paths.get_path_item(path).is_some(), "{path}");
        }
        assert!(
            openapi("")
                .paths
                .get_path_item("/accounts/{account_id}/logs/audit/viewer")
                .is_none()
        );
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
