#![allow(missing_docs)]
//! The marking rules and the malformed-body cases, through the public API only, on the
//! alerting-policies API described twice: by hand as an OpenAPI 3.0 YAML document
//! (`schemas/fixtures/alerting-3.0.yaml`) and by utoipa derive macros (OpenAPI 3.1). Every rule
//! is checked on both; the YAML fixture is also read through `openapiv3::OpenAPI`.
//!
//! Values that must never reach a record contain `CANARY`.

mod fuzz_checks;

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use audit_layer::record::{ActionType, AuditRecord, Body};
use audit_layer::sink::MemorySink;
use audit_layer::spec::OpenApiDocument;
use audit_layer::{AuditLayer, AuditPolicy, AuditRequestBody, IntoAuditPolicy};
use bytes::Bytes;
use http::{Method, Request, Response};
use http_body_util::{BodyExt, Full};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tower::{ServiceBuilder, ServiceExt, service_fn};
use utoipa::{OpenApi, ToSchema};

const FIXTURE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../schemas/fixtures/alerting-3.0.yaml"
);
const POLICY_URI: &str = "/accounts/acc_1/alerting/v3/policies/pol_1";
const LIST_URI: &str = "/accounts/acc_1/alerting/v3/policies";
const JSON: Option<&str> = Some("application/json");
const WAIT: Duration = Duration::from_secs(5);

/// The alerting API as utoipa derives it.
#[allow(dead_code)]
mod derived {
    use super::*;

    #[derive(Serialize, Deserialize, ToSchema)]
    pub(crate) struct Policy {
        #[schema(extensions(("x-auditable" = json!(true))))]
        pub(crate) id: String,
        #[schema(extensions(("x-auditable" = json!(true))))]
        pub(crate) name: String,
        #[schema(extensions(("x-auditable" = json!(true))))]
        pub(crate) description: Option<String>,
        #[schema(extensions(("x-auditable" = json!(true))))]
        pub(crate) enabled: bool,
        #[schema(extensions(("x-auditable" = json!(true))))]
        pub(crate) alert_type: String,
        #[schema(extensions(("x-auditable" = json!(true))))]
        pub(crate) cooldown_seconds: Option<i64>,
        /// Marking this field is silently dropped by utoipa; the leaves of `Filters` are marked.
        #[schema(extensions(("x-auditable" = json!(true))))]
        pub(crate) filters: Option<Filters>,
        pub(crate) mechanisms: Mechanisms,
        #[schema(extensions(("x-auditable" = json!(true))))]
        pub(crate) labels: HashMap<String, String>,
        pub(crate) headers: HashMap<String, String>,
        pub(crate) condition: Option<Condition>,
    }

    #[derive(Serialize, Deserialize, ToSchema)]
    pub(crate) struct PolicyCreate {
        #[serde(flatten)]
        pub(crate) policy: Policy,
        pub(crate) secret_token: Option<String>,
    }

    #[derive(Serialize, Deserialize, ToSchema)]
    pub(crate) struct Filters {
        #[schema(extensions(("x-auditable" = json!(true))))]
        pub(crate) services: Vec<String>,
        #[schema(extensions(("x-auditable" = json!(true))))]
        pub(crate) zones: Vec<String>,
        pub(crate) selectors: Vec<String>,
    }

    #[derive(Serialize, Deserialize, ToSchema)]
    pub(crate) struct Mechanisms {
        pub(crate) email: Vec<EmailMechanism>,
        pub(crate) webhooks: Vec<Webhook>,
        pub(crate) default_target: Option<Target>,
    }

    #[derive(Serialize, Deserialize, ToSchema)]
    pub(crate) struct EmailMechanism {
        #[schema(extensions(("x-auditable" = json!(true))))]
        pub(crate) id: String,
    }

    #[derive(Serialize, Deserialize, ToSchema)]
    pub(crate) struct Webhook {
        #[schema(extensions(("x-auditable" = json!(true))))]
        pub(crate) id: String,
        pub(crate) url: String,
    }

    #[derive(Serialize, Deserialize, ToSchema)]
    #[serde(untagged)]
    pub(crate) enum Target {
        Email(EmailTarget),
        Webhook(WebhookTarget),
    }

    #[derive(Serialize, Deserialize, ToSchema)]
    pub(crate) struct EmailTarget {
        #[serde(rename = "type")]
        #[schema(extensions(("x-auditable" = json!(true))))]
        pub(crate) kind: String,
        #[schema(extensions(("x-auditable" = json!(true))))]
        pub(crate) id: String,
        #[schema(extensions(("x-auditable" = json!(true))))]
        pub(crate) address: String,
    }

    #[derive(Serialize, Deserialize, ToSchema)]
    pub(crate) struct WebhookTarget {
        #[serde(rename = "type")]
        #[schema(extensions(("x-auditable" = json!(true))))]
        pub(crate) kind: String,
        #[schema(extensions(("x-auditable" = json!(true))))]
        pub(crate) id: String,
        pub(crate) address: String,
        #[schema(extensions(("x-auditable" = json!(true))))]
        pub(crate) name: Option<String>,
    }

    #[derive(Serialize, Deserialize, ToSchema)]
    pub(crate) struct Condition {
        #[schema(extensions(("x-auditable" = json!(true))))]
        pub(crate) op: String,
        #[schema(extensions(("x-auditable" = json!(true))))]
        pub(crate) field: Option<String>,
        pub(crate) value: Option<String>,
        #[schema(no_recursion)]
        pub(crate) children: Vec<Condition>,
    }

    #[derive(Serialize, Deserialize, ToSchema)]
    pub(crate) struct ApiError {
        #[schema(extensions(("x-auditable" = json!(true))))]
        pub(crate) code: u16,
        #[schema(extensions(("x-auditable" = json!(true))))]
        pub(crate) message: String,
        pub(crate) debug_token: Option<String>,
    }

    #[derive(Serialize, Deserialize, ToSchema)]
    pub(crate) struct Login {
        #[schema(extensions(("x-auditable" = json!(true))))]
        pub(crate) email: String,
        #[schema(format = Password)]
        pub(crate) password: String,
        #[schema(extensions(("x-auditable" = json!(true))))]
        pub(crate) remember_me: Option<bool>,
    }

    #[derive(Serialize, Deserialize, ToSchema)]
    pub(crate) struct LoginResponse {
        #[schema(extensions(("x-auditable" = json!(true))))]
        pub(crate) user_id: String,
        pub(crate) session_token: String,
    }

    #[utoipa::path(
        get,
        path = "/accounts/{account_id}/alerting/v3/policies",
        params(
            ("account_id" = String, Path),
            ("page" = Option<u32>, Query, extensions(("x-auditable" = json!(true)))),
            ("per_page" = Option<u32>, Query, extensions(("x-auditable" = json!(true)))),
            ("api_key" = Option<String>, Query),
        ),
        responses((status = 200, body = Vec<Policy>), (status = "4XX", body = ApiError)),
    )]
    pub(crate) async fn list_policies() {}

    #[utoipa::path(
        post,
        path = "/accounts/{account_id}/alerting/v3/policies",
        params(("account_id" = String, Path)),
        request_body = PolicyCreate,
        responses((status = 200, body = Policy), (status = "4XX", body = ApiError)),
        extensions(("x-audit-product" = json!("alerting"))),
    )]
    pub(crate) async fn create_policy() {}

    #[utoipa::path(
        get,
        path = "/accounts/{account_id}/alerting/v3/policies/{policy_id}",
        params(("account_id" = String, Path), ("policy_id" = String, Path), ("include_secrets" = Option<bool>, Query)),
        responses((status = 200, body = Policy), (status = "4XX", body = ApiError)),
    )]
    pub(crate) async fn get_policy() {}

    #[utoipa::path(
        put,
        path = "/accounts/{account_id}/alerting/v3/policies/{policy_id}",
        params(("account_id" = String, Path), ("policy_id" = String, Path)),
        request_body = Policy,
        responses((status = 200, body = Policy), (status = "4XX", body = ApiError)),
        extensions(("x-audit-product" = json!("alerting"))),
    )]
    pub(crate) async fn update_policy() {}

    #[utoipa::path(
        delete,
        path = "/accounts/{account_id}/alerting/v3/policies/{policy_id}",
        params(("account_id" = String, Path), ("policy_id" = String, Path)),
        responses((status = 200), (status = "4XX", body = ApiError)),
    )]
    pub(crate) async fn delete_policy() {}

    #[utoipa::path(
        post,
        path = "/login",
        request_body = Login,
        responses((status = 200, body = LoginResponse), (status = "4XX", body = ApiError)),
        extensions(("x-audit-action" = json!("login")), ("x-audit-product" = json!("auth"))),
    )]
    pub(crate) async fn login() {}

    #[utoipa::path(get, path = "/healthz", responses((status = 200)), extensions(("x-audit" = json!(false))))]
    pub(crate) async fn healthz() {}

    #[derive(OpenApi)]
    #[openapi(
        paths(
            list_policies,
            create_policy,
            get_policy,
            update_policy,
            delete_policy,
            login,
            healthz
        ),
        components(schemas(Policy, PolicyCreate, ApiError, Login, LoginResponse))
    )]
    pub(crate) struct ApiDoc;
}

// ---------------------------------------------------------------------------------------------
// Helpers

/// The YAML fixture, read as an `OpenApiDocument`.
fn fixture_policy() -> Arc<AuditPolicy> {
    OpenApiDocument::from_path(FIXTURE)
        .expect("the fixture parses")
        .into_audit_policy()
        .expect("the fixture compiles")
}

/// The same API, as utoipa derives it.
fn utoipa_policy() -> Arc<AuditPolicy> {
    (&derived::ApiDoc::openapi())
        .into_audit_policy()
        .expect("the utoipa description compiles")
}

/// Both descriptions of the API, named for assertion messages.
fn sources() -> [(&'static str, Arc<AuditPolicy>); 2] {
    [
        ("yaml fixture", fixture_policy()),
        ("utoipa", utoipa_policy()),
    ]
}

/// A request body of `method uri` as a record holds it, as text.
fn request_text(
    policy: &AuditPolicy,
    method: &Method,
    uri: &str,
    content_type: Option<&str>,
    body: &[u8],
) -> Option<String> {
    policy
        .redact_request_body(method, uri, content_type, body)
        .map(|raw| raw.get().to_owned())
}

/// The JSON request body of `PUT` on a policy as a record holds it.
fn put(policy: &AuditPolicy, body: &Value) -> Value {
    request(policy, &Method::PUT, POLICY_URI, body)
}

fn request(policy: &AuditPolicy, method: &Method, uri: &str, body: &Value) -> Value {
    let text = request_text(policy, method, uri, JSON, body.to_string().as_bytes())
        .expect("a JSON body is recorded");
    assert_no_canary(&text);
    serde_json::from_str(&text).expect("the record holds JSON")
}

/// The JSON response body of `method uri` with `status` as a record holds it.
fn response(policy: &AuditPolicy, method: &Method, uri: &str, status: u16, body: &Value) -> String {
    let text = policy
        .redact_response_body(method, uri, status, JSON, body.to_string().as_bytes())
        .expect("a response body is recorded")
        .get()
        .to_owned();
    assert_no_canary(&text);
    text
}

/// The marker text for a malformed `PUT` body, checked to quote nothing of the body.
fn put_marker(policy: &AuditPolicy, content_type: Option<&str>, body: &[u8]) -> String {
    let text = request_text(policy, &Method::PUT, POLICY_URI, content_type, body)
        .expect("a body is recorded");
    assert_no_canary(&text);
    let marker: Value = serde_json::from_str(&text).expect("a marker is JSON");
    let reason = marker["_unparsed"]
        .as_str()
        .unwrap_or_else(|| panic!("not a marker: {text}"));
    assert_eq!(
        marker.as_object().map(serde_json::Map::len),
        Some(1),
        "{text}"
    );
    // The reason is one of a fixed set, with at most a byte offset: nothing of the body.
    let (fixed, offset) = match reason.rsplit_once(" at byte ") {
        Some((fixed, offset)) => (fixed, Some(offset)),
        None => (reason, None),
    };
    assert!(
        fuzz_checks::PARSE_REASONS.contains(&fixed) || fuzz_checks::OTHER_REASONS.contains(&fixed),
        "the marker {text} has an unknown reason"
    );
    assert!(
        offset.is_none_or(|o| o.parse::<usize>().is_ok_and(|o| o <= body.len())),
        "{text}"
    );
    text
}

fn assert_no_canary(text: &str) {
    assert!(
        !text.contains("CANARY"),
        "a value that is not auditable was kept: {text}"
    );
}

fn marker(reason: &str) -> String {
    json!({"_unparsed": reason}).to_string()
}

/// Each malformed JSON `PUT` body becomes the marker with its reason, on both descriptions.
fn assert_markers(cases: &[(&[u8], &str)]) {
    for (source, policy) in sources() {
        for (body, reason) in cases {
            assert_eq!(put_marker(&policy, JSON, body), marker(reason), "{source}");
        }
    }
}

/// A JSON `PUT` body as each description's record holds it, as text, by source.
fn put_texts(body: &[u8]) -> Vec<(&'static str, String)> {
    sources()
        .iter()
        .map(|(source, policy)| {
            let text = request_text(policy, &Method::PUT, POLICY_URI, JSON, body);
            (*source, text.expect("a body"))
        })
        .collect()
}

/// What [`put_texts`] gives when both descriptions keep `text`.
fn kept_by_both(text: &str) -> [(&'static str, String); 2] {
    [
        ("yaml fixture", text.to_owned()),
        ("utoipa", text.to_owned()),
    ]
}

/// Sends one request through `AuditLayer` to a handler answering `status` with `reply`, reads
/// the whole response, and returns the sink the records go to.
async fn exchange(
    policy: Arc<AuditPolicy>,
    request: Request<Full<Bytes>>,
    status: u16,
    reply: &'static str,
) -> MemorySink {
    let sink = MemorySink::new();
    let layer = AuditLayer::try_new(policy)
        .expect("the policy is usable")
        .sink(sink.clone());
    let handler = service_fn(
        move |req: Request<AuditRequestBody<Full<Bytes>>>| async move {
            let _ = req.into_body().collect().await;
            let response = Response::builder()
                .status(status)
                .header("content-type", "application/json")
                .body(Full::new(Bytes::from_static(reply.as_bytes())))
                .expect("a valid response");
            Ok::<_, Infallible>(response)
        },
    );
    let response = ServiceBuilder::new()
        .layer(layer)
        .service(handler)
        .oneshot(request)
        .await
        .expect("served");
    let body = response
        .into_body()
        .collect()
        .await
        .expect("the response body")
        .to_bytes();
    assert_eq!(
        body,
        reply.as_bytes(),
        "the client gets the reply untouched"
    );
    sink
}

async fn only_record(
    policy: Arc<AuditPolicy>,
    request: Request<Full<Bytes>>,
    status: u16,
    reply: &'static str,
) -> AuditRecord {
    let sink = exchange(policy, request, status, reply).await;
    let mut records = sink.wait_for(1, WAIT).await;
    tokio::task::yield_now().await;
    assert_eq!(sink.len(), 1, "one record per request: {records:#?}");
    records.remove(0)
}

fn get(uri: &str) -> Request<Full<Bytes>> {
    Request::get(uri)
        .body(Full::default())
        .expect("a valid request")
}

fn with_json(method: Method, uri: &str, body: &Value) -> Request<Full<Bytes>> {
    Request::builder()
        .method(method)
        .uri(uri)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.to_string())))
        .expect("a valid request")
}

// ---------------------------------------------------------------------------------------------
// The descriptions themselves

#[test]
fn both_descriptions_compile_to_the_same_operations() {
    for (source, policy) in sources() {
        assert_eq!(policy.len(), 7, "{source}: every operation is described");
    }
}

#[test]
fn utoipa_drops_the_mark_on_a_struct_field_yet_its_marked_leaves_are_kept() {
    let doc =
        serde_json::to_value(derived::ApiDoc::openapi()).expect("the utoipa document serializes");
    let filters = &doc["components"]["schemas"]["Policy"]["properties"]["filters"];
    assert!(
        filters.is_object(),
        "the Policy schema declares filters: {doc:#}"
    );
    assert!(
        !filters.to_string().contains("x-auditable"),
        "utoipa is expected to drop the field's x-auditable on an Option<Struct> field: {filters}"
    );
    // Marking the leaves inside `Filters` is enough.
    let body = json!({"filters": {"services": ["waf"], "zones": ["example.com"], "selectors": ["CANARY-sel"]}});
    assert_eq!(
        put(&utoipa_policy(), &body),
        json!({"filters": {"services": ["waf"], "zones": ["example.com"]}})
    );
}

// ---------------------------------------------------------------------------------------------
// The marking rules, each on both descriptions

#[test]
fn a_leaf_is_kept_iff_it_is_marked() {
    let body = json!({
        "id": "pol_1",
        "name": "Advanced Security Events Alert",
        "description": "Notify the SOC",
        "enabled": true,
        "alert_type": "http_alert_origin_error",
        "cooldown_seconds": 300,
        "secret_token": "CANARY-secret-token",
        "mechanisms": {"webhooks": [{"id": "wh_1", "url": "https://hooks.example.com/CANARY-url"}]},
    });
    let expected = json!({
        "id": "pol_1",
        "name": "Advanced Security Events Alert",
        "description": "Notify the SOC",
        "enabled": true,
        "alert_type": "http_alert_origin_error",
        "cooldown_seconds": 300,
        "mechanisms": {"webhooks": [{"id": "wh_1"}]},
    });
    for (source, policy) in sources() {
        assert_eq!(put(&policy, &body), expected, "{source}");
        let nulls = json!({"description": null, "cooldown_seconds": null, "name": "n"});
        assert_eq!(
            put(&policy, &nulls),
            nulls,
            "{source}: a marked nullable leaf keeps its null"
        );
    }
}

#[test]
fn nested_objects_are_descended_through_ref_all_of_and_nullable_forms() {
    // YAML: filters is `nullable` + `allOf: [$ref]`, mechanisms a plain `$ref`, condition
    // `oneOf: [$ref, null]`. utoipa: `Option<Filters>` and `Option<Condition>` are
    // `oneOf: [$ref, {type: null}]`, `Mechanisms` a `$ref`. None of these fields is marked.
    let body = json!({
        "name": "n",
        "filters": {"services": ["waf", "dns"], "zones": ["example.com"], "selectors": ["CANARY-selector"]},
        "mechanisms": {
            "email": [{"id": "soc@example.com"}],
            "webhooks": [{"id": "wh_1", "url": "https://hooks.example.com/CANARY-url"}],
        },
        "condition": {"op": "eq", "field": "zone", "value": "CANARY-value"},
    });
    let expected = json!({
        "name": "n",
        "filters": {"services": ["waf", "dns"], "zones": ["example.com"]},
        "mechanisms": {"email": [{"id": "soc@example.com"}], "webhooks": [{"id": "wh_1"}]},
        "condition": {"op": "eq", "field": "zone"},
    });
    for (source, policy) in sources() {
        assert_eq!(put(&policy, &body), expected, "{source}");
        // A null where a nested object may be is no kept value: containers only hold kept
        // values, and null holds none.
        let nulls = json!({"name": "n", "filters": null, "condition": null});
        assert_eq!(put(&policy, &nulls), json!({"name": "n"}), "{source}");
        // A nested object that keeps nothing does not appear at all.
        let nothing = json!({"name": "n", "filters": {"selectors": ["CANARY-selector"]}, "mechanisms": {"webhooks": [{"url": "CANARY-url"}]}});
        assert_eq!(put(&policy, &nothing), json!({"name": "n"}), "{source}");
    }
}

#[test]
fn one_of_keeps_a_key_only_if_every_branch_declaring_it_marks_it() {
    // `address` is marked in EmailTarget, unmarked in WebhookTarget: never kept, even in a body
    // that is plainly an email target. `name` is declared (and marked) by WebhookTarget only.
    let email = json!({"type": "email", "id": "tgt_1", "address": "CANARY-soc@example.com", "extra": "CANARY-extra"});
    let webhook = json!({"type": "webhook", "id": "tgt_2", "address": "https://hooks.example.com/CANARY", "name": "pager"});
    for (source, policy) in sources() {
        let kept = put(&policy, &json!({"mechanisms": {"default_target": email}}));
        assert_eq!(
            kept,
            json!({"mechanisms": {"default_target": {"type": "email", "id": "tgt_1"}}}),
            "{source}"
        );
        let kept = put(&policy, &json!({"mechanisms": {"default_target": webhook}}));
        assert_eq!(
            kept,
            json!({"mechanisms": {"default_target": {"type": "webhook", "id": "tgt_2", "name": "pager"}}}),
            "{source}"
        );
    }
}

#[test]
fn any_of_keeps_a_key_only_if_every_branch_declaring_it_marks_it() {
    // Only the YAML fixture has an anyOf (`mechanisms.fallback`); utoipa's derives emit none, so
    // there the key is undeclared and dropped whole.
    let body = json!({"mechanisms": {"fallback": {"type": "webhook", "id": "tgt_3", "address": "https://CANARY", "name": "ops"}}});
    assert_eq!(
        put(&fixture_policy(), &body),
        json!({"mechanisms": {"fallback": {"type": "webhook", "id": "tgt_3", "name": "ops"}}})
    );
    assert_eq!(put(&utoipa_policy(), &body), json!({}));
}

#[test]
fn arrays_apply_the_item_plan_to_each_element() {
    let body = json!({
        "filters": {"services": ["waf", "dns", "ssl"], "zones": [], "selectors": ["CANARY-1", "CANARY-2"]},
        "mechanisms": {
            "email": [{"id": "a@example.com"}, {"id": "b@example.com", "name": "CANARY-name"}],
            "webhooks": [
                {"id": "wh_1", "url": "https://hooks.example.com/CANARY-1"},
                {"url": "https://hooks.example.com/CANARY-2"},
                {"id": "wh_2", "extra": "CANARY-3"},
            ],
        },
    });
    let expected = json!({
        "filters": {"services": ["waf", "dns", "ssl"], "zones": []},
        "mechanisms": {
            "email": [{"id": "a@example.com"}, {"id": "b@example.com"}],
            // An element that keeps nothing is left out.
            "webhooks": [{"id": "wh_1"}, {"id": "wh_2"}],
        },
    });
    for (source, policy) in sources() {
        assert_eq!(put(&policy, &body), expected, "{source}");
    }
}

#[test]
fn undeclared_keys_are_dropped_at_every_level() {
    let body = json!({
        "name": "n",
        "webhook_secret": "CANARY-root",
        "CANARY-key": {"nested": ["CANARY-deep"]},
        "filters": {"zones": ["z"], "extra": "CANARY-filters"},
        "mechanisms": {"sms": [{"id": "CANARY-sms"}], "webhooks": [{"id": "wh", "token": "CANARY-wh"}]},
        "condition": {"op": "and", "note": "CANARY-note", "children": [{"op": "eq", "secret": "CANARY-child"}]},
    });
    let expected = json!({
        "name": "n",
        "filters": {"zones": ["z"]},
        "mechanisms": {"webhooks": [{"id": "wh"}]},
        "condition": {"op": "and", "children": [{"op": "eq"}]},
    });
    for (source, policy) in sources() {
        assert_eq!(put(&policy, &body), expected, "{source}");
    }
}

#[test]
fn additional_properties_maps_are_kept_by_their_value_schema() {
    let body = json!({
        "labels": {"team": "soc", "env": "prod"},
        "headers": {"Authorization": "Bearer CANARY-token", "X-Api-Key": "CANARY-key"},
    });
    for (source, policy) in sources() {
        assert_eq!(
            put(&policy, &body),
            json!({"labels": {"team": "soc", "env": "prod"}}),
            "{source}"
        );
        let empty = json!({"labels": {}, "headers": {}});
        assert_eq!(put(&policy, &empty), json!({"labels": {}}), "{source}");
    }
}

#[test]
fn recursive_schemas_are_redacted_at_every_depth() {
    let body = json!({"condition": {"op": "and", "value": "CANARY-0", "children": [
        {"op": "eq", "field": "zone", "value": "CANARY-1", "children": []},
        {"op": "or", "children": [
            {"op": "ne", "field": "service", "value": "CANARY-2", "children": [
                {"op": "eq", "field": "deep", "value": "CANARY-3", "children": [
                    {"op": "eq", "field": "deeper", "value": "CANARY-4"},
                ]},
            ]},
        ]},
    ]}});
    let expected = json!({"condition": {"op": "and", "children": [
        // An empty array of objects holds no kept value, so it is left out.
        {"op": "eq", "field": "zone"},
        {"op": "or", "children": [
            {"op": "ne", "field": "service", "children": [
                {"op": "eq", "field": "deep", "children": [{"op": "eq", "field": "deeper"}]},
            ]},
        ]},
    ]}});
    for (source, policy) in sources() {
        assert_eq!(put(&policy, &body), expected, "{source}");
    }
}

#[test]
fn the_all_of_composition_keeps_what_its_parts_mark() {
    // POST takes PolicyCreate = allOf[Policy, {secret_token}], secret_token unmarked.
    let body = json!({"name": "n", "secret_token": "CANARY-token", "filters": {"zones": ["z"], "selectors": ["CANARY-s"]}});
    for (source, policy) in sources() {
        let kept = request(&policy, &Method::POST, LIST_URI, &body);
        assert_eq!(
            kept,
            json!({"name": "n", "filters": {"zones": ["z"]}}),
            "{source}"
        );
    }
}

#[test]
fn responses_are_redacted_by_the_schema_of_their_status() {
    let ok = json!({
        "id": "pol_1",
        "name": "n",
        "headers": {"Authorization": "CANARY-auth"},
        "mechanisms": {"webhooks": [{"id": "wh_1", "url": "https://CANARY"}]},
    });
    let error = json!({"code": 1003, "message": "Policy not found", "debug_token": "CANARY-debug"});
    for (source, policy) in sources() {
        assert_eq!(
            response(&policy, &Method::PUT, POLICY_URI, 200, &ok),
            r#"{"id":"pol_1","mechanisms":{"webhooks":[{"id":"wh_1"}]},"name":"n"}"#,
            "{source}"
        );
        for status in [400, 404, 422] {
            assert_eq!(
                response(&policy, &Method::GET, POLICY_URI, status, &error),
                r#"{"code":1003,"message":"Policy not found"}"#,
                "{source} {status}"
            );
        }
        assert_eq!(
            response(&policy, &Method::GET, POLICY_URI, 500, &error),
            marker("the response status is not described for this operation"),
            "{source}"
        );
    }
}

#[test]
fn login_keeps_the_email_and_never_the_password() {
    let body =
        json!({"email": "alice@example.com", "password": "CANARY-hunter2", "remember_me": true});
    for (source, policy) in sources() {
        let kept = request(&policy, &Method::POST, "/login", &body);
        assert_eq!(
            kept,
            json!({"email": "alice@example.com", "remember_me": true}),
            "{source}"
        );
        let reply = json!({"user_id": "usr_1", "session_token": "CANARY-session"});
        assert_eq!(
            response(&policy, &Method::POST, "/login", 200, &reply),
            r#"{"user_id":"usr_1"}"#,
            "{source}"
        );
    }
}

#[test]
fn health_checks_record_no_body() {
    for (source, policy) in sources() {
        let body = br#"{"status":"CANARY"}"#;
        assert!(
            policy
                .redact_request_body(&Method::GET, "/healthz", JSON, body)
                .is_none(),
            "{source}"
        );
        assert!(
            policy
                .redact_response_body(&Method::GET, "/healthz", 200, JSON, body)
                .is_none(),
            "{source}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Through the layer: query strings, operation extensions, records

#[tokio::test]
async fn query_values_are_redacted_unless_marked_and_undeclared_names_too() {
    for (source, policy) in sources() {
        let uri = "/accounts/acc_1/alerting/v3/policies?page=2&per_page=25&api_key=sk_live_CANARY&unknown=CANARY";
        let record = only_record(Arc::clone(&policy), get(uri), 200, "[]").await;
        assert_eq!(
            record.raw.uri.as_deref().unwrap(),
            "/accounts/acc_1/alerting/v3/policies?page=2&per_page=25&api_key=REDACTED&REDACTED=REDACTED",
            "{source}"
        );
        // Declarations and markings are per operation: per_page is declared (and marked) on the
        // list, not on a single policy.
        let uri = "/accounts/acc_1/alerting/v3/policies/pol_1?include_secrets=true&per_page=5";
        let record = only_record(Arc::clone(&policy), get(uri), 200, "{}").await;
        assert_eq!(
            record.raw.uri.as_deref().unwrap(),
            "/accounts/acc_1/alerting/v3/policies/pol_1?include_secrets=REDACTED&REDACTED=REDACTED",
            "{source}"
        );
    }
}

#[tokio::test]
async fn records_hold_the_redacted_bodies_and_the_operation_extensions() {
    for (source, policy) in sources() {
        let body = json!({"name": "n", "headers": {"Authorization": "CANARY-auth"}, "filters": {"zones": ["z"]}});
        let reply = r#"{"id":"pol_1","name":"n","headers":{"Authorization":"CANARY-auth"}}"#;
        let record = only_record(
            Arc::clone(&policy),
            with_json(Method::PUT, &format!("{POLICY_URI}?api_key=CANARY"), &body),
            200,
            reply,
        )
        .await;
        // The update operation declares no `api_key`: its name is not recorded either.
        assert_eq!(
            record.raw.uri.unwrap(),
            format!("{POLICY_URI}?REDACTED=REDACTED"),
            "{source}"
        );
        assert_eq!(
            record.resource.request.as_ref().map(Body::to_value),
            Some(json!({"name": "n", "filters": {"zones": ["z"]}})),
            "{source}"
        );
        assert_eq!(
            record.resource.response.as_ref().map(Body::to_value),
            Some(json!({"id": "pol_1", "name": "n"})),
            "{source}"
        );
        assert_eq!(
            record.resource.product.as_deref(),
            Some("alerting"),
            "{source}"
        );
        assert_eq!(record.action.kind, ActionType::Update, "{source}");
        assert_eq!(
            record.action.description.is_some(),
            source == "yaml fixture",
            "{source}: only the fixture has summaries"
        );

        let login = json!({"email": "alice@example.com", "password": "CANARY-hunter2"});
        let record = only_record(
            Arc::clone(&policy),
            with_json(Method::POST, "/login", &login),
            200,
            r#"{"user_id":"usr_1","session_token":"CANARY"}"#,
        )
        .await;
        assert_eq!(record.action.kind, ActionType::Login, "{source}");
        assert_eq!(record.resource.product.as_deref(), Some("auth"), "{source}");
        assert_eq!(
            record.resource.request.as_ref().map(Body::to_value),
            Some(json!({"email": "alice@example.com"})),
            "{source}"
        );
        assert_eq!(
            record.resource.response.as_ref().map(Body::to_value),
            Some(json!({"user_id": "usr_1"})),
            "{source}"
        );
        assert!(
            !serde_json::to_string(&record)
                .expect("a record serializes")
                .contains("CANARY"),
            "{source}"
        );

        let sink = exchange(
            Arc::clone(&policy),
            get("/healthz?token=CANARY"),
            200,
            r#"{"status":"ok"}"#,
        )
        .await;
        tokio::task::yield_now().await;
        assert!(
            sink.is_empty(),
            "{source}: x-audit: false records nothing: {:#?}",
            sink.records()
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Malformed bodies: a marker that says where, never what

#[test]
fn invalid_json_becomes_a_marker() {
    assert_markers(&[
        (
            br#"{"name":"CANARY-1" "enabled":true}"#,
            "expected ',' or '}' in an object at byte 19",
        ),
        (
            br#"{"name":"CANARY-unterminated"#,
            "unterminated string at byte 28",
        ),
        (
            br#""CANARY-a-bare-string""#,
            "the body is not a JSON object or array at byte 0",
        ),
    ]);
}

#[test]
fn a_content_type_the_operation_does_not_describe_becomes_a_marker() {
    for (source, policy) in sources() {
        for content_type in [
            "text/plain",
            "text/plain; charset=utf-8",
            "application/x-www-form-urlencoded",
        ] {
            assert_eq!(
                put_marker(&policy, Some(content_type), b"name=CANARY&password=CANARY"),
                marker("the content type is not described for this operation"),
                "{source} {content_type}"
            );
        }
        // Another JSON media type is read by the JSON plan.
        let kept = request_text(
            &policy,
            &Method::PUT,
            POLICY_URI,
            Some("application/merge-patch+json"),
            br#"{"name":"n","headers":{"a":"CANARY"}}"#,
        );
        assert_eq!(kept.as_deref(), Some(r#"{"name":"n"}"#), "{source}");
    }
}

#[test]
fn a_missing_content_type_becomes_a_marker() {
    for (source, policy) in sources() {
        assert_eq!(
            put_marker(&policy, None, br#"{"name":"CANARY"}"#),
            marker("the body has no content type"),
            "{source}"
        );
    }
}

#[test]
fn an_empty_body_is_no_body() {
    for (source, policy) in sources() {
        for content_type in [JSON, None] {
            assert_eq!(
                request_text(&policy, &Method::PUT, POLICY_URI, content_type, b""),
                None,
                "{source}"
            );
        }
    }
    assert_markers(&[(b" \r\n\t", "the body is empty at byte 4")]);
}

#[test]
fn json_of_the_wrong_shape_keeps_nothing_of_it() {
    // Declared objects and arrays given another kind of value.
    let body = json!({
        "name": "n",
        "filters": "CANARY-filters",
        "mechanisms": {"webhooks": {"id": "CANARY-not-an-array"}, "email": "CANARY-email"},
        "condition": ["CANARY-condition"],
        "headers": ["CANARY-headers"],
    });
    for (source, policy) in sources() {
        assert_eq!(put(&policy, &body), json!({"name": "n"}), "{source}");
        // A root of the wrong kind still says that a body came.
        assert_eq!(
            put(&policy, &json!(["CANARY-array-root", {"name": "CANARY"}])),
            json!([]),
            "{source}"
        );
    }
}

#[test]
fn a_marked_scalar_given_a_container_keeps_nothing_of_it() {
    // `name` is a marked string, `enabled` a marked boolean, `labels` a marked map of strings,
    // `filters.services` a marked array of strings. Values of another type do not match the
    // schema and so must be dropped, not copied into the record.
    let body = json!({
        "name": {"password": "CANARY-in-an-object"},
        "enabled": ["CANARY-in-an-array"],
        "labels": {"env": {"token": "CANARY-in-a-label"}},
        "filters": {"services": [{"secret": "CANARY-in-an-element"}]},
    });
    assert_eq!(
        put_texts(body.to_string().as_bytes()),
        kept_by_both("{}"),
        "values of the wrong type were kept"
    );
}

#[test]
fn a_marked_scalar_of_another_scalar_type_is_dropped() {
    let body = json!({"enabled": "CANARY-not-a-boolean", "cooldown_seconds": "CANARY-not-an-integer", "name": 12345});
    assert_eq!(
        put_texts(body.to_string().as_bytes()),
        kept_by_both("{}"),
        "values of the wrong type were kept"
    );
}

#[test]
fn trailing_garbage_becomes_a_marker() {
    assert_markers(&[
        (
            br#"{"name":"n"} CANARY"#,
            "trailing characters after the JSON value at byte 13",
        ),
        (
            br#"{"name":"n"}{"password":"CANARY"}"#,
            "trailing characters after the JSON value at byte 12",
        ),
    ]);
}

#[test]
fn duplicate_keys_become_a_marker() {
    assert_markers(&[
        (
            br#"{"secret":"a","secret":"b"}"#,
            "duplicate key in an object at byte 14",
        ),
        (
            br#"{"name":"CANARY-a","name":"CANARY-b"}"#,
            "duplicate key in an object at byte 19",
        ),
        // In a nested object the plan reads, and spelled differently.
        (
            br#"{"filters":{"zones":["CANARY-a"],"zon\u0065s":["CANARY-b"]}}"#,
            "duplicate key in an object at byte 33",
        ),
    ]);
}

#[test]
fn duplicate_keys_inside_a_kept_map_become_a_marker() {
    // `labels` is a marked map: kept whole. Its duplicate key makes the body ambiguous (which
    // value did the app see?), so it should be refused like any other duplicate.
    let body = br#"{"labels":{"env":"CANARY-first","env":"CANARY-second"}}"#;
    let expected = marker("duplicate key in an object at byte 32");
    assert_eq!(put_texts(body), kept_by_both(&expected));
}

#[test]
fn ten_thousand_levels_of_nesting_become_a_marker_without_overflowing_the_stack() {
    const DEPTH: usize = 10_000;
    let cases = [
        // A dropped field (skipped).
        (
            format!(
                r#"{{"headers":{}"CANARY"{}}}"#,
                "[".repeat(DEPTH),
                "]".repeat(DEPTH)
            ),
            11 + 99,
        ),
        // A kept field (copied).
        (
            format!(
                r#"{{"labels":{}"CANARY"{}}}"#,
                r#"{"k":"#.repeat(DEPTH),
                "}".repeat(DEPTH)
            ),
            10 + 99 * 5,
        ),
        // The recursive schema (walked by the plan).
        (
            format!(
                r#"{{"condition":{}{{"value":"CANARY"}}{}}}"#,
                r#"{"children":["#.repeat(DEPTH),
                "]}".repeat(DEPTH)
            ),
            13 + 49 * 13 + 12,
        ),
    ];
    let reasons = cases
        .iter()
        .map(|(_, at)| format!("nested deeper than 100 levels at byte {at}"))
        .collect::<Vec<_>>();
    let markers = cases
        .iter()
        .zip(&reasons)
        .map(|((body, _), reason)| (body.as_bytes(), reason.as_str()))
        .collect::<Vec<_>>();
    assert_markers(&markers);
}

#[test]
fn non_utf8_becomes_a_marker() {
    assert_markers(&[
        (b"{\"name\":\"\xff CANARY\"}", "invalid UTF-8 at byte 9"),
        (
            b"{\"headers\":{\"a\":\"CANARY \xc3\x28\"}}",
            "invalid UTF-8 at byte 24",
        ),
    ]);
}

#[test]
fn huge_numbers_become_a_marker_only_where_they_would_be_kept() {
    for (source, policy) in sources() {
        assert_eq!(
            put_marker(&policy, JSON, br#"{"cooldown_seconds":1e999}"#),
            marker("number out of range at byte 20"),
            "{source}"
        );
        // `labels` is a map of strings: a number there is dropped for its type, not read.
        assert_eq!(
            request_text(
                &policy,
                &Method::PUT,
                POLICY_URI,
                JSON,
                br#"{"labels":{"a":-1e999}}"#
            )
            .as_deref(),
            Some("{}"),
            "{source}"
        );
        let dropped = br#"{"name":"n","headers":{"x":1e999},"secret_token":-1E+999,"cooldown_seconds":123456789012345678901234567890}"#;
        assert_eq!(
            request_text(&policy, &Method::PUT, POLICY_URI, JSON, dropped).as_deref(),
            Some(r#"{"name":"n","cooldown_seconds":123456789012345678901234567890}"#),
            "{source}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// openapiv3

#[test]
fn the_fixture_read_by_openapiv3_redacts_like_the_document() {
    let text = std::fs::read_to_string(FIXTURE).expect("the fixture is readable");
    let openapi: openapiv3::OpenAPI =
        yaml_serde::from_str(&text).expect("openapiv3 reads the fixture");
    let via_openapiv3 = openapi
        .into_audit_policy()
        .expect("the openapiv3 description compiles");
    let via_document = fixture_policy();
    assert_eq!(via_openapiv3.len(), via_document.len());
    let bodies = [
        (
            Method::PUT,
            POLICY_URI,
            json!({
                "id": "pol_1", "name": "n", "description": null, "enabled": false, "alert_type": "billing_usage_alert",
                "cooldown_seconds": 60, "secret_token": "CANARY",
                "filters": {"services": ["waf"], "zones": ["z"], "selectors": ["CANARY"]},
                "mechanisms": {
                    "email": [{"id": "a@example.com"}],
                    "webhooks": [{"id": "wh", "url": "CANARY"}],
                    "default_target": {"type": "email", "id": "t", "address": "CANARY", "name": "x"},
                    "fallback": {"type": "webhook", "id": "f", "address": "CANARY", "name": "y"},
                },
                "labels": {"env": "prod"},
                "headers": {"Authorization": "CANARY"},
                "condition": {"op": "and", "value": "CANARY", "children": [{"op": "eq", "field": "zone", "value": "CANARY"}]},
            }),
        ),
        (
            Method::POST,
            LIST_URI,
            json!({"name": "n", "secret_token": "CANARY", "labels": {"a": "b"}}),
        ),
        (
            Method::POST,
            "/login",
            json!({"email": "alice@example.com", "password": "CANARY"}),
        ),
    ];
    for (method, uri, body) in &bodies {
        let expected = request(&via_document, method, uri, body);
        assert_eq!(
            request(&via_openapiv3, method, uri, body),
            expected,
            "{method} {uri}"
        );
        assert_ne!(
            expected,
            json!({}),
            "{method} {uri}: the sample keeps something"
        );
    }
    let error = json!({"code": 7, "message": "m", "debug_token": "CANARY"});
    assert_eq!(
        response(&via_openapiv3, &Method::DELETE, POLICY_URI, 404, &error),
        response(&via_document, &Method::DELETE, POLICY_URI, 404, &error)
    );
    assert!(
        via_openapiv3
            .redact_request_body(&Method::GET, "/healthz", JSON, b"{}")
            .is_none()
    );
}

#[tokio::test]
async fn the_fixture_read_by_openapiv3_redacts_queries_like_the_document() {
    let text = std::fs::read_to_string(FIXTURE).expect("the fixture is readable");
    let openapi: openapiv3::OpenAPI =
        yaml_serde::from_str(&text).expect("openapiv3 reads the fixture");
    let policy = openapi
        .into_audit_policy()
        .expect("the openapiv3 description compiles");
    let record = only_record(
        policy,
        get("/accounts/a/alerting/v3/policies?per_page=10&api_key=CANARY"),
        200,
        "{}",
    )
    .await;
    assert_eq!(
        record.raw.uri.as_deref().unwrap(),
        "/accounts/a/alerting/v3/policies?per_page=10&api_key=REDACTED"
    );
}
