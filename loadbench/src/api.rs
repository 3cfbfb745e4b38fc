//! The API the benchmarks serve: one alerting policy, read with a `GET`, and written with a
//! ~0.5 KB JSON body that the handler parses, as an app would. The requests carry a browser's
//! headers and a bearer token.
//!
//! The load benchmark's servers serve it, and the layer benchmark
//! (`audit-layer/benches/layer.rs`) includes this file, so both measure the same handlers.
//! Each serves part of it: the write is a `POST` to the collection here, a `PUT` to the
//! policy there.
#![allow(dead_code)]

use std::borrow::Cow;

use axum::Json;
use axum::extract::Path;
use serde::{Deserialize, Serialize};

/// The route of one policy (`GET`).
pub(crate) const ITEM_ROUTE: &str = "/accounts/{account_id}/alerting/v3/policies/{policy_id}";

/// The route of the policy collection (`POST` creates one).
pub(crate) const COLLECTION_ROUTE: &str = "/accounts/{account_id}/alerting/v3/policies";

/// The body of a write: an alerting policy of about half a kilobyte.
pub(crate) const POLICY_JSON: &str = r#"{"name":"Origin error rate alert for production zones","description":"Notify the on-call team when the origin error rate of the production zones stays above the threshold for five consecutive minutes.","enabled":true,"alert_type":"http_alert_origin_error","filters":{"services":["cdn","load_balancing","waf"],"zones":["023e105f4ecef8ad9ca31a8372d0c353","9a7806061c88ada191ed06f989cc3dac"]},"mechanisms":{"webhooks":[{"id":"85c0a0c3b1a44d4b8b5e4e7c3e5f2d11","url":"https://hooks.example.com/services/T024BE7LD/B0AL6Q4HK/1ZPmNfZtLxJcLkVJvGEFwAZx"}]}}"#;

/// The `Authorization` header of every request.
pub(crate) const BEARER: &str = "Bearer Yq6aAzt7RrcbG7Ok3sqkZ_8IFqS2gVYdz6qvEVPQ";

/// The `User-Agent` header of every request.
pub(crate) const USER_AGENT: &str = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0.0.0 Safari/537.36";

/// A policy as written ([`POLICY_JSON`]).
#[derive(Deserialize)]
#[allow(dead_code, reason = "parsed like a handler would, not read")]
pub(crate) struct Policy {
    name: String,
    description: String,
    enabled: bool,
    alert_type: String,
    filters: Filters,
    mechanisms: Mechanisms,
}

#[derive(Deserialize)]
#[allow(dead_code, reason = "parsed like a handler would, not read")]
struct Filters {
    services: Vec<String>,
    zones: Vec<String>,
}

#[derive(Deserialize)]
#[allow(dead_code, reason = "parsed like a handler would, not read")]
struct Mechanisms {
    webhooks: Vec<Webhook>,
}

#[derive(Deserialize)]
#[allow(dead_code, reason = "parsed like a handler would, not read")]
struct Webhook {
    id: String,
    url: String,
}

/// A policy as read.
#[derive(Serialize)]
pub(crate) struct PolicyView {
    id: String,
    name: &'static str,
    enabled: bool,
}

/// What a write answers: the policy's id.
#[derive(Serialize)]
pub(crate) struct Written {
    id: Cow<'static, str>,
}

/// `GET` [`ITEM_ROUTE`]: a small JSON object.
pub(crate) async fn get_policy(
    Path((_account_id, policy_id)): Path<(String, String)>,
) -> Json<PolicyView> {
    Json(PolicyView {
        id: policy_id,
        name: "Origin error rate alert for production zones",
        enabled: true,
    })
}

/// `POST` [`COLLECTION_ROUTE`]: parses the policy and answers a new id.
pub(crate) async fn create_policy(
    Path(_account_id): Path<String>,
    Json(policy): Json<Policy>,
) -> Json<Written> {
    std::hint::black_box(&policy);
    Json(Written {
        id: Cow::Borrowed("0da2b59e-f118-439d-8097-bdfb215203c9"),
    })
}

/// `PUT` [`ITEM_ROUTE`]: parses the policy and answers its id.
pub(crate) async fn update_policy(
    Path((_account_id, policy_id)): Path<(String, String)>,
    Json(policy): Json<Policy>,
) -> Json<Written> {
    std::hint::black_box(&policy);
    Json(Written {
        id: Cow::Owned(policy_id),
    })
}
