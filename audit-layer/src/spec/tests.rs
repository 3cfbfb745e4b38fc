//! The marking rules, one test each, on hand-written 3.0 and 3.1 documents.

use http::Method;
use serde_json::{Value, json};

use super::OpenApiDocument;
use crate::AuditPolicy;
use crate::policy::{AuditLevel, PolicyError};
use crate::record::ActionType;

const PATH: &str = "/accounts/{account_id}/things/{thing_id}";
const URI: &str = "/accounts/a/things/t";

/// A 3.1 document with one `PUT` operation whose request body is `schema`, plus components.
fn doc_with(schema: Value, components: Value) -> Value {
    json!({
        "openapi": "3.1.0",
        "info": {"title": "t", "version": "1"},
        "paths": {PATH: {"put": {
            "summary": "Update a thing",
            "requestBody": {"content": {"application/json": {"schema": schema}}},
            "responses": {"200": {"description": "ok", "content": {"application/json": {"schema": {
                "type": "object", "properties": {"id": {"type": "string", "x-auditable": true}, "token": {"type": "string"}}
            }}}}}
        }}},
        "components": {"schemas": components}
    })
}

fn compile(doc: Value) -> AuditPolicy {
    OpenApiDocument::from_value(doc)
        .compile()
        .expect("the document compiles")
}

fn compile_err(doc: Value) -> String {
    OpenApiDocument::from_value(doc)
        .compile()
        .expect_err("the document is refused")
        .to_string()
}

/// The request body as the record keeps it.
fn redact(policy: &AuditPolicy, body: Value) -> String {
    let plan = policy.plan_for(&Method::PUT, None, URI).expect("operation");
    let ct = http::HeaderValue::from_static("application/json");
    plan.request
        .redact(Some(&ct), body.to_string().as_bytes())
        .expect("a body")
        .get()
        .to_owned()
}

fn kept(schema: Value, components: Value, body: Value) -> Value {
    serde_json::from_str(&redact(&compile(doc_with(schema, components)), body)).expect("json")
}

#[test]
fn leaves_are_kept_iff_marked() {
    let schema = json!({"type": "object", "properties": {
        "name": {"type": "string", "x-auditable": true},
        "secret": {"type": "string"},
        "count": {"type": "integer", "x-auditable": true},
        "tags": {"type": "array", "items": {"type": "string"}, "x-auditable": true},
        "ids": {"type": "array", "items": {"type": "string"}},
        "meta": {"type": "object", "x-auditable": true},
        "opaque": {"type": "object"}
    }});
    let body = json!({"name": "n", "secret": "s", "count": 3, "tags": ["a"], "ids": ["x"],
                      "meta": {"free": "form"}, "opaque": {"k": "v"}, "undeclared": "u"});
    assert_eq!(
        kept(schema, json!({}), body),
        json!({"name": "n", "count": 3, "tags": ["a"], "meta": {"free": "form"}})
    );
}

#[test]
fn declared_objects_are_descended_through_refs_and_all_of() {
    let components = json!({
        "Filters": {"type": "object", "properties": {
            "zones": {"type": "array", "items": {"type": "string"}, "x-auditable": true},
            "secret": {"type": "string"}}},
        "Base": {"type": "object", "properties": {"name": {"type": "string", "x-auditable": true}}}
    });
    let schema = json!({"allOf": [
        {"$ref": "#/components/schemas/Base"},
        {"type": "object", "properties": {"filters": {"$ref": "#/components/schemas/Filters"}}, "required": ["filters"]}
    ]});
    let body = json!({"name": "n", "filters": {"zones": ["z"], "secret": "s"}});
    assert_eq!(
        kept(schema, components, body),
        json!({"name": "n", "filters": {"zones": ["z"]}})
    );
}

#[test]
fn nullable_forms_are_seen_through() {
    let components = json!({"Inner": {"type": "object", "properties": {"v": {"type": "string", "x-auditable": true}, "s": {"type": "string"}}}});
    let schema = json!({"type": "object", "properties": {
        "a": {"oneOf": [{"type": "null"}, {"$ref": "#/components/schemas/Inner"}]},
        "b": {"anyOf": [{"$ref": "#/components/schemas/Inner"}, {"type": "null"}]},
        "c": {"type": ["string", "null"], "x-auditable": true},
        "d": {"type": "object", "nullable": true, "properties": {"v": {"type": "string", "x-auditable": true}}}
    }});
    let body =
        json!({"a": {"v": "1", "s": "2"}, "b": {"v": "3", "s": "4"}, "c": null, "d": {"v": "x"}});
    assert_eq!(
        kept(schema, components, body),
        json!({"a": {"v": "1"}, "b": {"v": "3"}, "c": null, "d": {"v": "x"}})
    );
}

#[test]
fn one_of_keeps_a_key_only_if_every_declaring_branch_marks_it() {
    let schema = json!({"oneOf": [
        {"type": "object", "properties": {"kind": {"type": "string", "x-auditable": true}, "value": {"type": "string", "x-auditable": true}, "only_a": {"type": "string", "x-auditable": true}}},
        {"type": "object", "properties": {"kind": {"type": "string", "x-auditable": true}, "value": {"type": "string"}}}
    ]});
    let body = json!({"kind": "k", "value": "v", "only_a": "o"});
    assert_eq!(
        kept(schema, json!({}), body),
        json!({"kind": "k", "only_a": "o"})
    );
}

#[test]
fn arrays_apply_the_item_plan_to_each_element() {
    let schema = json!({"type": "object", "properties": {"hooks": {"type": "array", "items": {
        "type": "object", "properties": {"id": {"type": "string", "x-auditable": true}, "url": {"type": "string"}}}}}});
    let body = json!({"hooks": [{"id": "1", "url": "u"}, {"url": "only"}, {"id": "2"}]});
    assert_eq!(
        kept(schema, json!({}), body),
        json!({"hooks": [{"id": "1"}, {"id": "2"}]})
    );
}

#[test]
fn additional_properties_maps_are_explicit() {
    let schema = json!({"type": "object", "properties": {
        "labels": {"type": "object", "additionalProperties": {"type": "string"}, "x-auditable": true},
        "secrets": {"type": "object", "additionalProperties": {"type": "string"}},
        "limits": {"type": "object", "additionalProperties": {"type": "object", "properties": {
            "max": {"type": "integer", "x-auditable": true}, "key": {"type": "string"}}}}
    }});
    let body = json!({"labels": {"env": "prod"}, "secrets": {"db": "pw"}, "limits": {"cpu": {"max": 2, "key": "k"}}});
    assert_eq!(
        kept(schema, json!({}), body),
        json!({"labels": {"env": "prod"}, "limits": {"cpu": {"max": 2}}})
    );
}

#[test]
fn recursive_schemas_compile_and_redact() {
    let components = json!({"Node": {"type": "object", "properties": {
        "name": {"type": "string", "x-auditable": true},
        "secret": {"type": "string"},
        "children": {"type": "array", "items": {"$ref": "#/components/schemas/Node"}}}}});
    let schema = json!({"$ref": "#/components/schemas/Node"});
    let body = json!({"name": "root", "secret": "s", "children": [{"name": "kid", "secret": "s", "children": []}]});
    assert_eq!(
        kept(schema, components, body),
        json!({"name": "root", "children": [{"name": "kid"}]})
    );
}

#[test]
fn a_kept_value_must_have_its_declared_type() {
    let schema = json!({"type": "object", "properties": {
        "name": {"type": "string", "x-auditable": true},
        "count": {"type": "integer", "x-auditable": true},
        "ratio": {"type": "number", "x-auditable": true},
        "tags": {"type": "array", "items": {"type": "string"}, "x-auditable": true},
        "labels": {"type": "object", "additionalProperties": {"type": "string"}, "x-auditable": true},
        "status": {"enum": ["on", "off"], "x-auditable": true}
    }});
    let sneaky = json!({"name": {"password": "p"}, "count": 1.5, "ratio": "r", "tags": [{"token": "t"}, "ok"],
                        "labels": {"env": {"secret": "s"}, "team": "a"}, "status": ["on"]});
    assert_eq!(
        kept(schema.clone(), json!({}), sneaky),
        json!({"tags": ["ok"], "labels": {"team": "a"}})
    );
    let honest =
        json!({"name": "n", "count": 2, "ratio": 0.5, "tags": [], "labels": {}, "status": "on"});
    assert_eq!(
        kept(schema, json!({}), honest),
        json!({"name": "n", "count": 2, "ratio": 0.5, "tags": [], "labels": {}, "status": "on"})
    );
}

#[test]
fn duplicate_keys_inside_a_kept_value_are_refused() {
    let schema =
        json!({"type": "object", "properties": {"meta": {"type": "object", "x-auditable": true}}});
    let policy = compile(doc_with(schema, json!({})));
    let plan = policy.plan_for(&Method::PUT, None, URI).expect("operation");
    let ct = http::HeaderValue::from_static("application/json");
    let kept = plan
        .request
        .redact(Some(&ct), br#"{"meta":{"a":{"x":1,"x":2}}}"#)
        .expect("a body");
    assert_eq!(
        kept.get(),
        r#"{"_unparsed":"duplicate key in an object at byte 20"}"#
    );
}

#[test]
fn marks_beside_a_ref_are_honoured() {
    let components = json!({"Status": {"type": "string", "enum": ["on", "off"]}});
    let schema = json!({"type": "object", "properties": {
        "status": {"$ref": "#/components/schemas/Status", "x-auditable": true},
        "other": {"$ref": "#/components/schemas/Status"},
        "wrapped": {"allOf": [{"$ref": "#/components/schemas/Status"}], "x-auditable": true}
    }});
    let body = json!({"status": "on", "other": "off", "wrapped": "on"});
    assert_eq!(
        kept(schema, components, body),
        json!({"status": "on", "wrapped": "on"})
    );
}

#[test]
fn responses_are_redacted_by_their_own_schema() {
    let policy = compile(doc_with(json!({"type": "object"}), json!({})));
    let plan = policy.plan_for(&Method::PUT, None, URI).expect("operation");
    let ct = http::HeaderValue::from_static("application/json");
    let kept = plan
        .response
        .redact(200, Some(&ct), br#"{"id":"t1","token":"secret"}"#)
        .expect("a body");
    assert_eq!(kept.get(), r#"{"id":"t1"}"#);
}

#[test]
fn query_parameters_are_auditable_only_when_marked() {
    let doc = json!({"openapi": "3.0.3", "info": {"title": "t", "version": "1"},
        "components": {"parameters": {"Page": {"name": "page", "in": "query", "x-auditable": true, "schema": {"type": "integer"}}}},
        "paths": {"/zones": {
            "parameters": [{"name": "name", "in": "query", "schema": {"type": "string", "x-auditable": true}}],
            "get": {"parameters": [{"$ref": "#/components/parameters/Page"}, {"name": "token", "in": "query", "schema": {"type": "string"}}],
                    "responses": {"200": {"description": "ok"}}}}}});
    let policy = compile(doc);
    let plan = policy
        .plan_for(&Method::GET, None, "/zones")
        .expect("operation");
    let uri: http::Uri = "/zones?page=2&name=example.com&token=s3cr3t"
        .parse()
        .expect("uri");
    assert_eq!(
        plan.query.redact_uri(&uri),
        "/zones?page=2&name=example.com&token=REDACTED"
    );
}

#[test]
fn operation_extensions_set_the_plan() {
    let doc = json!({"openapi": "3.1.0", "info": {"title": "t", "version": "1"}, "paths": {
        "/login": {"post": {"x-audit-action": "login", "x-audit-product": "auth", "x-audit-resource-type": "session",
                            "x-audit-scope": "user", "x-audit-level": "request", "responses": {}}},
        "/healthz": {"get": {"x-audit": false, "responses": {}}}}});
    let policy = compile(doc);
    let login = policy
        .plan_for(&Method::POST, None, "/login")
        .expect("login");
    assert_eq!(login.action, ActionType::Login);
    assert_eq!(
        (
            login.product.as_deref(),
            login.kind.as_deref(),
            login.scope.as_deref()
        ),
        (Some("auth"), Some("session"), Some("user"))
    );
    assert_eq!(login.level, AuditLevel::Request);
    assert!(
        !policy
            .plan_for(&Method::GET, None, "/healthz")
            .expect("health")
            .audited
    );
}

#[test]
fn spec_errors_name_the_pointer_and_the_fix() {
    let password = doc_with(
        json!({"type": "object", "properties": {"password": {"type": "string", "format": "password", "x-auditable": true}}}),
        json!({}),
    );
    assert_eq!(
        compile_err(password),
        "audit spec error at #/paths/~1accounts~1{account_id}~1things~1{thing_id}/put/requestBody/content/application~1json/schema/properties/password: x-auditable is set on a field with format: password: passwords are never auditable; remove x-auditable"
    );
    let write_only = doc_with(
        json!({"type": "object", "properties": {"key": {"type": "string", "writeOnly": true, "x-auditable": true}}}),
        json!({}),
    );
    assert!(
        compile_err(write_only)
            .contains("/schema/properties/key: x-auditable is set on a writeOnly field")
    );
    // A reusable auditable type given to a secret field, by `$ref` with a `writeOnly`
    // sibling (3.1) or through `allOf` with `format: password`: refused too.
    let text = json!({"Text": {"type": "string", "x-auditable": true}});
    let by_ref = doc_with(
        json!({"type": "object", "properties": {"password": {"$ref": "#/components/schemas/Text", "writeOnly": true}}}),
        text.clone(),
    );
    assert!(compile_err(by_ref).contains(
        "/schema/properties/password: this field is a secret (writeOnly or format: password)"
    ));
    let by_all_of = doc_with(
        json!({"type": "object", "properties": {"password": {"allOf": [{"$ref": "#/components/schemas/Text"}], "format": "password"}}}),
        text.clone(),
    );
    assert!(compile_err(by_all_of).contains("/properties/password: this field is a secret"));
    // A secret field with an unmarked schema compiles, and is dropped.
    let unmarked = doc_with(
        json!({"type": "object", "properties": {"password": {"type": "string", "writeOnly": true}, "name": {"$ref": "#/components/schemas/Text"}}}),
        text,
    );
    let policy = compile(unmarked);
    assert_eq!(
        redact(&policy, json!({"password": "hunter2", "name": "n"})),
        r#"{"name":"n"}"#
    );
    let dangling = doc_with(json!({"$ref": "#/components/schemas/Missing"}), json!({}));
    assert!(
        compile_err(dangling).contains("/schema: dangling $ref \"#/components/schemas/Missing\"")
    );
    let external = doc_with(json!({"$ref": "other.yaml#/X"}), json!({}));
    assert!(compile_err(external).contains("external $ref \"other.yaml#/X\" is not supported"));
    let mut level = doc_with(json!({}), json!({}));
    level["paths"][PATH]["put"]["x-audit-level"] = json!("everything");
    assert!(compile_err(level).ends_with("/put/x-audit-level: unknown audit level \"everything\": expected metadata, request or request_response"));
    let not_bool = doc_with(
        json!({"type": "object", "properties": {"a": {"type": "string", "x-auditable": "yes"}}}),
        json!({}),
    );
    assert!(
        compile_err(not_bool)
            .ends_with("/properties/a/x-auditable: x-auditable must be true or false")
    );
    assert!(compile_err(json!({"openapi": "2.0"})).contains("unsupported OpenAPI version \"2.0\""));
}

#[test]
fn a_secret_behind_a_marked_ref_is_refused() {
    let components = json!({"Secret": {"type": "string", "format": "password"}});
    let doc = doc_with(
        json!({"type": "object", "properties": {"p": {"$ref": "#/components/schemas/Secret", "x-auditable": true}}}),
        components,
    );
    assert!(matches!(
        OpenApiDocument::from_value(doc).compile(),
        Err(PolicyError::Spec { .. })
    ));
}

#[test]
fn yaml_and_json_documents_are_read_alike() {
    let yaml = "openapi: 3.0.3\ninfo: {title: t, version: '1'}\npaths:\n  /zones:\n    get:\n      summary: List zones\n      responses: {}\n";
    let from_yaml = OpenApiDocument::from_str_any(yaml).expect("yaml");
    let json_text = serde_json::to_string(from_yaml.as_value()).expect("json");
    let from_json = OpenApiDocument::from_str_any(&json_text).expect("json");
    assert_eq!(from_yaml.as_value(), from_json.as_value());
    for (read, expected) in [
        (
            OpenApiDocument::from_yaml_str("openapi: [unclosed"),
            "cannot read the OpenAPI document: invalid YAML",
        ),
        (
            OpenApiDocument::from_path("/nonexistent/api.yaml"),
            "cannot read /nonexistent/api.yaml: cannot read the file",
        ),
    ] {
        let err = read.expect_err(expected).to_string();
        assert!(err.starts_with(expected), "{err}");
    }
}

#[test]
fn product_categories_come_from_operations_and_path_items() {
    let doc = json!({"openapi": "3.1.0", "info": {"title": "t", "version": "1"}, "paths": {
        "/zones/{zone_id}/dns_records/{id}": {
            "x-audit-product-category": "DNS",
            "put": {"x-audit-product": "dns", "responses": {}},
            "get": {"x-audit-product": "dns", "x-audit-product-category": "Reads", "responses": {}}},
        "/zones/{zone_id}": {"patch": {"x-audit-product-category": "dns", "responses": {}}},
        "/accounts/{account_id}/alerting/v3/policies": {"post": {"responses": {}}}}});
    let policy = compile(doc);
    let categories = policy.product_categories();
    let found: Vec<(&str, Vec<&str>)> = categories
        .iter()
        .map(|c| (c.value(), c.products().iter().map(String::as_str).collect()))
        .collect();
    assert_eq!(found.len(), 2, "{found:?}");
    let mut dns = categories.get("dns").unwrap().products().to_vec();
    dns.sort();
    assert_eq!(
        dns,
        ["dns", "zones"],
        "the path item's category, and an operation's of another case"
    );
    assert_eq!(categories.get("READS").unwrap().products(), ["dns"]);
    assert!(categories.get("alerting").is_none());
}

#[test]
fn bad_product_categories_fail_at_start_up() {
    // Every template but the root names a product.
    let with = |op: Value| {
        json!({"openapi": "3.1.0", "info": {"title": "t", "version": "1"},
               "paths": {"/": {"post": op}}})
    };
    assert!(
        compile_err(with(
            json!({"x-audit-product-category": 7, "responses": {}})
        ))
        .ends_with(
            "/post/x-audit-product-category: x-audit-product-category must be a non-empty string"
        )
    );
    let no_product = compile_err(with(
        json!({"x-audit-product-category": "Auth", "responses": {}}),
    ));
    assert!(
        no_product.contains("\"Auth\"") && no_product.contains("POST / has no product"),
        "{no_product}"
    );
    let bad = compile_err(with(
        json!({"x-audit-product": "auth", "x-audit-product-category": "a/b", "responses": {}}),
    ));
    assert!(bad.contains("1 to 64 bytes"), "{bad}");
}

/// Through the layer, from an OpenAPI document: the record's account and zone.
#[cfg(feature = "axum")]
#[tokio::test]
async fn a_layer_records_the_tenant_its_document_names() {
    use axum::body::Body;
    use tower::ServiceExt as _;

    let document = serde_json::json!({
            "openapi": "3.1.0", "info": {"title": "t", "version": "1"},
            "paths": {"/orgs/{org_id}/sites/{site_id}": {"put": {
                "summary": "Update a site",
                "responses": {"200": {"description": "ok"}}}}}});
    let spec = OpenApiDocument::from_value(document).tenant_params(
        crate::TenantParams::new()
            .account("org_id")
            .unwrap()
            .zone("site_id")
            .unwrap(),
    );
    let records = crate::sink::MemorySink::new();
    let app: axum::Router = axum::Router::new()
        .route(
            "/orgs/{org_id}/sites/{site_id}",
            axum::routing::put(|| async { "{}" }),
        )
        .layer(crate::AuditLayer::new(spec).sink(records.clone()));
    let request = http::Request::put("/orgs/org_7/sites/site_3")
        .body(Body::empty())
        .unwrap();
    let response = app.oneshot(request).await.unwrap();
    axum::body::to_bytes(response.into_body(), 1 << 16)
        .await
        .unwrap();
    let record = records.records().pop().expect("a record");
    assert_eq!(record.account.map(|a| a.id).as_deref(), Some("org_7"));
    assert_eq!(record.zone.map(|z| z.id).as_deref(), Some("site_3"));
}
