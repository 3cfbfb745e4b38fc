//! The redactor and the spec compiler, measured alone.
//!
//! - `redact_1kb`: a ~1 KB alerting-policy `PUT` body (name, description, filters, mechanisms
//!   with a webhook URL and secret, a condition tree, labels, credential headers), reduced by
//!   the plan compiled from `schemas/fixtures/alerting-3.0.yaml`:
//!   - `redact_request_body`: through `AuditPolicy::redact_request_body`, as the layer does it
//!     (route lookup, content-type match, UTF-8 check, one-pass scan, the kept JSON text);
//!   - `keep_nothing_redact_json`: the public `RedactionPlan::keep_nothing()` on the same body:
//!     the scanner validating and skipping everything, without the policy around it;
//!   - `serde_json_value`: `serde_json::from_slice::<Value>` of the same body, the baseline a
//!     reader that at least parses would pay.
//!
//!   Goal: at most 600 ns median for `redact_request_body`.
//! - `compile_100_operations`: `OpenApiDocument::from_value(doc).compile()` of a generated
//!   spec with 100 operations over 50 paths, sharing components through `$ref`s (`allOf`
//!   bases, `oneOf` targets, a recursive condition tree, shared responses and parameters).
//!   `compile` times the compilation of an already-cloned document; `clone_and_compile`
//!   includes the `Value` clone. Goal: under 50 ms.
//!
//! ```text
//! cargo bench -p audit-layer --bench redact
//! ```

use std::hint::black_box;
use std::time::Duration;

use audit_layer::AuditPolicy;
use audit_layer::redact::RedactionPlan;
use audit_layer::spec::OpenApiDocument;
use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use http::Method;
use serde_json::{Map, Value, json};

/// The realistic description the redaction benchmarks compile.
const FIXTURE: &str = include_str!("../../schemas/fixtures/alerting-3.0.yaml");

/// A path of the fixture's `PUT` operation.
const PATH: &str = "/accounts/023e105f4ecef8ad9ca31a8372d0c353/alerting/v3/policies/0da2b59e-f118-439d-8097-bdfb215203c9";

/// 996 bytes.
const BODY: &[u8] = br#"{"name":"Origin error rate alert for production zones","description":"Notify the on-call team when the origin error rate of the production zones stays above the threshold for five consecutive minutes.","enabled":true,"alert_type":"http_alert_origin_error","cooldown_seconds":300,"filters":{"services":["cdn","load_balancing","waf"],"zones":["023e105f4ecef8ad9ca31a8372d0c353","9a7806061c88ada191ed06f989cc3dac"],"selectors":["zone.plan == enterprise"]},"mechanisms":{"email":[{"id":"oncall@example.com"},{"id":"sre-leads@example.com"}],"webhooks":[{"id":"85c0a0c3-b1a4-4d4b-8b5e-4e7c3e5f2d11","url":"https://hooks.example.com/services/T024BE7LD/B0AL6Q4HK/1ZPmNfZtLxJcLkVJvGEFwAZx","secret":"whsec_9f8a7b6c5d4e3f2a1b0c"}]},"condition":{"op":"and","children":[{"op":"eq","field":"zone.plan","value":"enterprise"},{"op":"ne","field":"origin.status","value":"200"}]},"labels":{"team":"edge","env":"production","tier":"1"},"headers":{"Authorization":"Bearer Yq6aAzt7RrcbG7Ok3sqkZ_8IFqS2gVYdz6qvEVPQ"}}"#;

/// What the fixture's markings keep of [`BODY`].
const KEPT: &str = r#"{"name":"Origin error rate alert for production zones","description":"Notify the on-call team when the origin error rate of the production zones stays above the threshold for five consecutive minutes.","enabled":true,"alert_type":"http_alert_origin_error","cooldown_seconds":300,"filters":{"services":["cdn","load_balancing","waf"],"zones":["023e105f4ecef8ad9ca31a8372d0c353","9a7806061c88ada191ed06f989cc3dac"]},"mechanisms":{"email":[{"id":"oncall@example.com"},{"id":"sre-leads@example.com"}],"webhooks":[{"id":"85c0a0c3-b1a4-4d4b-8b5e-4e7c3e5f2d11"}]},"condition":{"op":"and","children":[{"op":"eq","field":"zone.plan"},{"op":"ne","field":"origin.status"}]},"labels":{"team":"edge","env":"production","tier":"1"}}"#;

fn fixture_policy() -> AuditPolicy {
    OpenApiDocument::from_yaml_str(FIXTURE)
        .and_then(|doc| doc.compile())
        .unwrap_or_else(|e| panic!("the fixture compiles: {e}"))
}

fn redact(c: &mut Criterion) {
    let policy = fixture_policy();
    let redact = || policy.redact_request_body(&Method::PUT, PATH, Some("application/json"), BODY);
    let kept = redact().map(|raw| raw.get().to_owned());
    assert_eq!(
        kept.as_deref(),
        Some(KEPT),
        "the benchmark redacts what the fixture marks"
    );

    let mut group = c.benchmark_group("redact_1kb");
    group.throughput(Throughput::Bytes(BODY.len() as u64));
    group.bench_function("redact_request_body", |b| {
        b.iter(|| {
            policy.redact_request_body(
                &Method::PUT,
                black_box(PATH),
                Some("application/json"),
                black_box(BODY),
            )
        })
    });
    let nothing = RedactionPlan::keep_nothing();
    group.bench_function("keep_nothing_redact_json", |b| {
        b.iter(|| nothing.redact_json(black_box(BODY)))
    });
    group.bench_function("serde_json_value", |b| {
        b.iter(|| serde_json::from_slice::<Value>(black_box(BODY)))
    });
    group.finish();
}

/// A spec of 100 operations over 50 paths: 25 resources, each with a collection path
/// (`GET` list, `POST` create) and an item path (`GET`, `PUT`), sharing components.
fn generated_spec() -> Value {
    let mut paths = Map::new();
    let mut schemas = Map::new();
    for i in 0..25 {
        let product = format!("product{}", i % 5);
        let name = format!("Resource{i}");
        let collection = format!("/accounts/{{account_id}}/{product}/v1/resources{i}");
        let item = format!("{collection}/{{resource{i}_id}}");
        let schema_ref = json!({"$ref": format!("#/components/schemas/{name}")});
        let envelope = json!({"allOf": [
            {"$ref": "#/components/schemas/Envelope"},
            {"type": "object", "properties": {"result": schema_ref}}
        ]});
        let list = json!({"allOf": [
            {"$ref": "#/components/schemas/Envelope"},
            {"type": "object", "properties": {
                "result": {"type": "array", "items": schema_ref},
                "result_info": {"$ref": "#/components/schemas/ResultInfo"}
            }}
        ]});
        let body =
            json!({"required": true, "content": {"application/json": {"schema": schema_ref}}});
        let ok = |schema: &Value| json!({"description": "OK", "content": {"application/json": {"schema": schema}}});
        let errors = json!({"$ref": "#/components/responses/ClientError"});
        paths.insert(
            collection,
            json!({
                "parameters": [{"$ref": "#/components/parameters/AccountId"}],
                "get": {
                    "operationId": format!("list{name}"),
                    "summary": format!("List {name}"),
                    "parameters": [{"$ref": "#/components/parameters/Page"}, {"$ref": "#/components/parameters/PerPage"},
                                   {"name": "api_key", "in": "query", "schema": {"type": "string"}}],
                    "responses": {"200": ok(&list), "4XX": errors}
                },
                "post": {
                    "operationId": format!("create{name}"),
                    "summary": format!("Create {name}"),
                    "x-audit-product": product,
                    "requestBody": body,
                    "responses": {"200": ok(&envelope), "4XX": errors}
                }
            }),
        );
        paths.insert(
            item,
            json!({
                "parameters": [{"$ref": "#/components/parameters/AccountId"},
                               {"name": format!("resource{i}_id"), "in": "path", "required": true, "schema": {"type": "string"}}],
                "get": {
                    "operationId": format!("get{name}"),
                    "summary": format!("Get {name}"),
                    "responses": {"200": ok(&envelope), "4XX": errors}
                },
                "put": {
                    "operationId": format!("update{name}"),
                    "summary": format!("Update {name}"),
                    "x-audit-level": "request",
                    "requestBody": body,
                    "responses": {"200": ok(&envelope), "4XX": errors}
                }
            }),
        );
        schemas.insert(
            name,
            json!({"allOf": [
                {"$ref": "#/components/schemas/Base"},
                {"type": "object", "required": ["name"], "properties": {
                    format!("field{i}"): {"type": "string", "x-auditable": true},
                    "name": {"type": "string", "maxLength": 256, "x-auditable": true},
                    "description": {"type": "string", "nullable": true, "x-auditable": true},
                    "enabled": {"type": "boolean", "x-auditable": true},
                    "secret": {"type": "string", "writeOnly": true},
                    "filters": {"nullable": true, "allOf": [{"$ref": "#/components/schemas/Filters"}]},
                    "targets": {"type": "array", "items": {"$ref": "#/components/schemas/Target"}},
                    "condition": {"oneOf": [{"$ref": "#/components/schemas/Condition"}, {"enum": [null]}]},
                    "labels": {"type": "object", "additionalProperties": {"type": "string"}, "x-auditable": true},
                    "headers": {"type": "object", "additionalProperties": {"type": "string"}},
                    "settings": {"type": "object", "properties": {
                        "threshold": {"type": "number", "x-auditable": true},
                        "window": {"type": "string", "x-auditable": true},
                        "token": {"type": "string", "format": "password"}
                    }}
                }}
            ]}),
        );
    }
    let components = json!({
        "parameters": {
            "AccountId": {"name": "account_id", "in": "path", "required": true, "schema": {"type": "string"}},
            "Page": {"name": "page", "in": "query", "x-auditable": true, "schema": {"type": "integer"}},
            "PerPage": {"name": "per_page", "in": "query", "x-auditable": true, "schema": {"type": "integer"}}
        },
        "responses": {
            "ClientError": {"description": "Refused", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Envelope"}}}}
        },
        "schemas": {
            "Base": {"type": "object", "properties": {
                "id": {"type": "string", "readOnly": true, "x-auditable": true},
                "created_on": {"type": "string", "format": "date-time", "x-auditable": true},
                "modified_on": {"type": "string", "format": "date-time", "x-auditable": true},
                "owner": {"$ref": "#/components/schemas/Owner"}
            }},
            "Owner": {"type": "object", "properties": {"id": {"type": "string", "x-auditable": true}, "email": {"type": "string"}}},
            "Envelope": {"type": "object", "properties": {
                "success": {"type": "boolean", "x-auditable": true},
                "errors": {"type": "array", "items": {"$ref": "#/components/schemas/Message"}},
                "messages": {"type": "array", "items": {"$ref": "#/components/schemas/Message"}}
            }},
            "Message": {"type": "object", "properties": {"code": {"type": "integer", "x-auditable": true}, "message": {"type": "string"}}},
            "ResultInfo": {"type": "object", "properties": {
                "page": {"type": "integer", "x-auditable": true}, "per_page": {"type": "integer", "x-auditable": true},
                "count": {"type": "integer", "x-auditable": true}, "total_count": {"type": "integer", "x-auditable": true}
            }},
            "Filters": {"type": "object", "properties": {
                "services": {"type": "array", "items": {"type": "string"}, "x-auditable": true},
                "zones": {"type": "array", "items": {"type": "string"}, "x-auditable": true},
                "selectors": {"type": "array", "items": {"type": "string"}}
            }},
            "Target": {"oneOf": [{"$ref": "#/components/schemas/EmailTarget"}, {"$ref": "#/components/schemas/WebhookTarget"}]},
            "EmailTarget": {"type": "object", "properties": {
                "type": {"type": "string", "x-auditable": true}, "id": {"type": "string", "x-auditable": true},
                "address": {"type": "string", "format": "email", "x-auditable": true}
            }},
            "WebhookTarget": {"type": "object", "properties": {
                "type": {"type": "string", "x-auditable": true}, "id": {"type": "string", "x-auditable": true},
                "address": {"type": "string", "format": "uri"}, "secret": {"type": "string", "writeOnly": true}
            }},
            "Condition": {"type": "object", "properties": {
                "op": {"type": "string", "x-auditable": true}, "field": {"type": "string", "x-auditable": true},
                "value": {"type": "string"},
                "children": {"type": "array", "items": {"$ref": "#/components/schemas/Condition"}}
            }}
        }
    });
    let mut all_schemas = components["schemas"]
        .as_object()
        .cloned()
        .unwrap_or_default();
    all_schemas.extend(schemas);
    let mut components = components;
    components["schemas"] = Value::Object(all_schemas);
    json!({
        "openapi": "3.0.3",
        "info": {"title": "Generated", "version": "1.0.0"},
        "paths": paths,
        "components": components
    })
}

fn compile(c: &mut Criterion) {
    let doc = generated_spec();
    let policy = OpenApiDocument::from_value(doc.clone())
        .compile()
        .unwrap_or_else(|e| panic!("the generated spec compiles: {e}"));
    assert_eq!(policy.len(), 100);

    let mut group = c.benchmark_group("compile_100_operations");
    group
        .sample_size(30)
        .measurement_time(Duration::from_secs(10));
    group.bench_function("compile", |b| {
        b.iter_batched(
            || OpenApiDocument::from_value(doc.clone()),
            |doc| doc.compile(),
            BatchSize::SmallInput,
        )
    });
    group.bench_function("clone_and_compile", |b| {
        b.iter(|| OpenApiDocument::from_value(black_box(&doc).clone()).compile())
    });
    group.finish();
}

criterion_group!(benches, redact, compile);
criterion_main!(benches);
