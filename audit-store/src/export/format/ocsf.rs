//! OCSF 1.8.0 "API Activity" (class 6003, category 6 "Application Activity"): what SIEMs that
//! normalize to OCSF (Amazon Security Lake, Splunk, ...) ingest without a custom parser.
//!
//! | OCSF attribute | from |
//! |---|---|
//! | `activity_id`, `activity_name` | `action.type`: `create` 1 Create, `view` 2 Read, `update` 3 Update, `delete` 4 Delete, anything else 99 with its own name (`login`, ...) |
//! | `class_uid` 6003, `category_uid` 6, `type_uid` | `class_uid * 100 + activity_id` |
//! | `severity_id` | 1 (Informational) |
//! | `status_id`, `status` | `action.result`: 1 Success, 2 Failure |
//! | `status_code` | `raw.status_code` |
//! | `time` | `action.time`, ms |
//! | `message` | `action.description` |
//! | `metadata` | `uid` = `id`, `tenant_uid` = `account.id`, `correlation_uid` = the ray id, `original_time` = `action.time`, `log_name` `audit_logs`, `product` this crate |
//! | `actor.user` | `uid` = `actor.id`, `email_addr` = `actor.email`, `credential_uid` = `actor.token.id`, `type_id` from `actor.type` (user 1, system 3, account 99); without id or e-mail, `actor.app_name` = `actor.type` or `unknown` |
//! | `api` | `operation` = `action.description` or `METHOD path`, `request.uid` = the ray id, `response.code` = `raw.status_code`, `service.name` = `resource.product` |
//! | `src_endpoint` | `ip` = `actor.ip_address`; without one, `name` `unknown` |
//! | `http_request` | `http_method`, `url` (`url_string`, `path`, `query_string`) from `raw.uri`, `user_agent`, `uid` = the ray id |
//! | `http_response` | `code` = `raw.status_code` |
//! | `resources[0]` | `uid` = `resource.id`, `type` = `resource.type`, `name` = `resource.type` when there is no id, `group.name` = `resource.product`, `data` = `resource.request` and `.response` |
//! | `unmapped` | `account`, `zone`, `actor.context`, `actor.type`, `actor.token.name`, `resource.scope`, `raw.client_request_id`, `raw.client_gone` |

use serde_json::{Map, Value, json};

use super::FormatError;
use super::fields::Fields;
use crate::model::PageRow;

/// The OCSF version the output follows (and the test validates against).
pub(super) const OCSF_VERSION: &str = "1.8.0";

/// `row` as one OCSF API Activity event (without its newline).
pub(super) fn write(row: &PageRow, out: &mut String) -> Result<(), FormatError> {
    let f = Fields::parse(row)?;
    let action = f.str(&["action", "type"]).unwrap_or("unknown");
    let (activity_id, activity_name) = match action {
        "create" => (1, "Create"),
        "view" => (2, "Read"),
        "update" => (3, "Update"),
        "delete" => (4, "Delete"),
        other => (99, other),
    };
    let (status_id, status) = match f.str(&["action", "result"]) {
        Some("success") => (1, "Success"),
        Some("failure") => (2, "Failure"),
        _ => (0, "Unknown"),
    };
    let status_code = f.status_code();
    let ray_id = f.ray_id();
    let method = f.str(&["raw", "method"]).unwrap_or("");
    let uri = f.str(&["raw", "uri"]).unwrap_or("");
    let (path, query) = match uri.split_once('?') {
        Some((path, query)) => (path, Some(query)),
        None => (uri, None),
    };

    let mut event = Map::new();
    event.insert("activity_id".into(), json!(activity_id));
    event.insert("activity_name".into(), json!(activity_name));
    event.insert("category_uid".into(), json!(6));
    event.insert("category_name".into(), json!("Application Activity"));
    event.insert("class_uid".into(), json!(6003));
    event.insert("class_name".into(), json!("API Activity"));
    event.insert("type_uid".into(), json!(600_300 + activity_id));
    event.insert(
        "type_name".into(),
        json!(format!("API Activity: {activity_name}")),
    );
    event.insert("severity_id".into(), json!(1));
    event.insert("severity".into(), json!("Informational"));
    event.insert("status_id".into(), json!(status_id));
    event.insert("status".into(), json!(status));
    if let Some(code) = status_code {
        event.insert("status_code".into(), json!(code.to_string()));
    }
    event.insert("time".into(), json!(row.time_ms));
    if let Some(description) = f.str(&["action", "description"]) {
        event.insert("message".into(), json!(description));
    }
    event.insert("metadata".into(), metadata(&f, row, ray_id));
    event.insert("actor".into(), actor(&f));

    let mut api = Map::new();
    let operation = match f.str(&["action", "description"]) {
        Some(description) => description.to_owned(),
        None => format!("{method} {path}"),
    };
    api.insert("operation".into(), json!(operation));
    if let Some(ray_id) = ray_id {
        api.insert("request".into(), json!({ "uid": ray_id }));
    }
    if let Some(code) = status_code {
        api.insert("response".into(), json!({ "code": code }));
    }
    if let Some(product) = f.str(&["resource", "product"]) {
        api.insert("service".into(), json!({ "name": product }));
    }
    event.insert("api".into(), Value::Object(api));

    event.insert(
        "src_endpoint".into(),
        match f.str(&["actor", "ip_address"]) {
            Some(ip) => json!({ "ip": ip }),
            None => json!({ "name": "unknown" }),
        },
    );

    let mut url = Map::new();
    url.insert("url_string".into(), json!(uri));
    url.insert("path".into(), json!(path));
    if let Some(query) = query {
        url.insert("query_string".into(), json!(query));
    }
    let mut http_request = Map::new();
    if !method.is_empty() {
        http_request.insert("http_method".into(), json!(method));
    }
    http_request.insert("url".into(), Value::Object(url));
    if let Some(agent) = f.str(&["raw", "user_agent"]) {
        http_request.insert("user_agent".into(), json!(agent));
    }
    if let Some(ray_id) = ray_id {
        http_request.insert("uid".into(), json!(ray_id));
    }
    event.insert("http_request".into(), Value::Object(http_request));
    if let Some(code) = status_code {
        event.insert("http_response".into(), json!({ "code": code }));
    }
    if let Some(resource) = resource(&f) {
        event.insert("resources".into(), json!([resource]));
    }
    let unmapped = unmapped(&f);
    if !unmapped.is_empty() {
        event.insert("unmapped".into(), Value::Object(unmapped));
    }
    out.push_str(&Value::Object(event).to_string());
    Ok(())
}

fn metadata(f: &Fields, row: &PageRow, ray_id: Option<&str>) -> Value {
    let mut metadata = Map::new();
    metadata.insert("version".into(), json!(OCSF_VERSION));
    metadata.insert("uid".into(), json!(row.id.to_string()));
    metadata.insert(
        "product".into(),
        json!({
            "name": "audit-layer",
            "vendor_name": "audit-layer",
            "version": env!("CARGO_PKG_VERSION"),
        }),
    );
    metadata.insert("log_name".into(), json!("audit_logs"));
    if let Some(account) = f.str(&["account", "id"]) {
        metadata.insert("tenant_uid".into(), json!(account));
    }
    if let Some(ray_id) = ray_id {
        metadata.insert("correlation_uid".into(), json!(ray_id));
    }
    if let Some(time) = f.str(&["action", "time"]) {
        metadata.insert("original_time".into(), json!(time));
    }
    Value::Object(metadata)
}

fn actor(f: &Fields) -> Value {
    let kind = f.str(&["actor", "type"]);
    let id = f.str(&["actor", "id"]);
    let email = f.str(&["actor", "email"]);
    if id.is_none() && email.is_none() {
        return json!({ "app_name": kind.unwrap_or("unknown") });
    }
    let mut user = Map::new();
    if let Some(id) = id {
        user.insert("uid".into(), json!(id));
    }
    if let Some(email) = email {
        user.insert("email_addr".into(), json!(email));
        if id.is_none() {
            user.insert("name".into(), json!(email));
        }
    }
    if let Some(token) = f.str(&["actor", "token", "id"]) {
        user.insert("credential_uid".into(), json!(token));
    }
    let (type_id, type_name) = match kind {
        Some("user") => (1, "User"),
        Some("system") => (3, "System"),
        Some(other) => (99, other),
        None => (0, "Unknown"),
    };
    user.insert("type_id".into(), json!(type_id));
    user.insert("type".into(), json!(type_name));
    json!({ "user": user })
}

fn resource(f: &Fields) -> Option<Value> {
    let id = f.str(&["resource", "id"]);
    let kind = f.str(&["resource", "type"]);
    let mut resource = Map::new();
    match (id, kind) {
        (None, None) => return None,
        (Some(id), _) => {
            resource.insert("uid".into(), json!(id));
        }
        (None, Some(kind)) => {
            resource.insert("name".into(), json!(kind));
        }
    }
    if let Some(kind) = kind {
        resource.insert("type".into(), json!(kind));
    }
    if let Some(product) = f.str(&["resource", "product"]) {
        resource.insert("group".into(), json!({ "name": product }));
    }
    let mut data = Map::new();
    for part in ["request", "response"] {
        if let Some(body) = f.get(&["resource", part]) {
            data.insert(part.into(), body.clone());
        }
    }
    if !data.is_empty() {
        resource.insert("data".into(), Value::Object(data));
    }
    Some(Value::Object(resource))
}

fn unmapped(f: &Fields) -> Map<String, Value> {
    let mut unmapped = Map::new();
    for (name, path) in [
        ("account", &["account"][..]),
        ("zone", &["zone"]),
        ("actor_context", &["actor", "context"]),
        ("actor_type", &["actor", "type"]),
        ("actor_token_name", &["actor", "token", "name"]),
        ("resource_scope", &["resource", "scope"]),
        ("client_request_id", &["raw", "client_request_id"]),
        ("client_gone", &["raw", "client_gone"]),
    ] {
        if let Some(value) = f.get(path) {
            unmapped.insert(name.into(), value.clone());
        }
    }
    unmapped
}
