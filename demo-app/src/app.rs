//! Router assembly: every product's routes, the auth middleware, the OpenAPI document they
//! describe, and the `AuditLayer` built from that document over the whole app.
//!
//! [`router`] is the one place the app is put together; `main` serves it and the tests drive
//! it, with whatever audit sink each needs.

use std::sync::OnceLock;

use audit_layer::{AuditHandle, AuditLayer, AuditSink, PolicyError};
use audit_store::pipeline::{Directory, Lookup};
use audit_store::query::{Access, AuditLogRouter, Authorization, Authorizer};
use audit_store::store::ChainedStore;
use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::http::header::CONTENT_TYPE;
use axum::http::request::Parts;
use axum::middleware::from_fn_with_state;
use axum::response::IntoResponse;
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::require_auth;
use crate::db::Db;
use crate::products::{accounts, alerting, dns, login, members, tokens, zones};
use crate::state::AppState;

/// The document's fixed parts; the operations come from the routers in [`routes()`].
#[derive(OpenApi)]
#[openapi(
    info(
        title = "demo-app",
        description = "A multi-product API (accounts, members, API tokens, zones, DNS records, \
            alerting policies, dashboard login) audited end to end by audit-layer. Fields marked \
            `x-auditable: true` are the only request and response values an audit record keeps.",
        license(name = "MIT OR Apache-2.0"),
    ),
    modifiers(&SecuritySchemes),
    security(("api_token" = []), ("dash_session" = [])),
    tags(
        (name = "accounts", description = "Accounts and their settings"),
        (name = "members", description = "Who may act on an account"),
        (name = "tokens", description = "API tokens of an account"),
        (name = "zones", description = "Zones (domains)"),
        (name = "dns", description = "DNS records of a zone"),
        (name = "alerting", description = "Notification policies"),
        (name = "login", description = "Dashboard sessions"),
        (name = "operations", description = "Health and description of the service"),
    ),
)]
struct ApiDoc;

/// Adds the two ways to authenticate to the document.
struct SecuritySchemes;

impl Modify for SecuritySchemes {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "api_token",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "An API token of the account: `Authorization: Bearer <token>`.",
                    ))
                    .build(),
            ),
        );
        components.add_security_scheme(
            "dash_session",
            SecurityScheme::ApiKey(ApiKey::Cookie(ApiKeyValue::with_description(
                "demo_session",
                "The dashboard session cookie set by `POST /login`.",
            ))),
        );
    }
}

/// The routes behind authentication, and the public ones (login, health, this document).
fn routes() -> (OpenApiRouter<AppState>, OpenApiRouter<AppState>) {
    let protected = OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(accounts::list_accounts))
        .routes(routes!(accounts::get_account, accounts::update_account))
        .routes(routes!(members::list_members, members::add_member))
        .routes(routes!(members::remove_member))
        .routes(routes!(tokens::list_tokens, tokens::create_token))
        .routes(routes!(tokens::revoke_token))
        .routes(routes!(zones::list_zones, zones::create_zone))
        .routes(routes!(
            zones::get_zone,
            zones::update_zone,
            zones::delete_zone
        ))
        .routes(routes!(dns::list_records, dns::create_record))
        .routes(routes!(
            dns::get_record,
            dns::update_record,
            dns::delete_record
        ))
        .routes(routes!(alerting::list_policies, alerting::create_policy))
        .routes(routes!(
            alerting::get_policy,
            alerting::update_policy,
            alerting::delete_policy
        ));
    let public = OpenApiRouter::new()
        .routes(routes!(login::login))
        .routes(routes!(login::logout))
        .routes(routes!(healthz))
        .routes(routes!(openapi_json));
    (protected, public)
}

/// The app's OpenAPI document: what `/openapi.json` serves, `--print-openapi` prints,
/// `schemas/demo-openapi.json` holds, and the audit policy is compiled from.
pub(crate) fn openapi() -> utoipa::openapi::OpenApi {
    let (protected, public) = routes();
    protected.merge(public).into_openapi()
}

/// [`openapi`] as pretty JSON with every object's keys sorted (utoipa keeps extensions in a
/// `HashMap`, whose order changes from run to run), and a final newline.
pub(crate) fn openapi_json_text() -> &'static str {
    static TEXT: OnceLock<String> = OnceLock::new();
    TEXT.get_or_init(|| {
        let document = serde_json::to_value(openapi()).map(sort_keys);
        let mut text = document
            .and_then(|d| serde_json::to_string_pretty(&d))
            .unwrap_or_else(|e| format!("{{\"error\": \"the document does not serialize: {e}\"}}"));
        text.push('\n');
        text
    })
}

/// `value` with the keys of every object in sorted order.
fn sort_keys(value: serde_json::Value) -> serde_json::Value {
    use serde_json::Value;
    match value {
        Value::Object(map) => {
            let mut entries: Vec<(String, Value)> = map.into_iter().collect();
            entries.sort_by(|a, b| a.0.cmp(&b.0));
            Value::Object(
                entries
                    .into_iter()
                    .map(|(k, v)| (k, sort_keys(v)))
                    .collect(),
            )
        }
        Value::Array(items) => Value::Array(items.into_iter().map(sort_keys).collect()),
        other => other,
    }
}

/// The whole app: every route, authentication inside the audit layer, and `audit_log` (the
/// audit log query API, see [`audit_log_router`]) merged in, all audited into `sink`.
///
/// # Errors
///
/// When the OpenAPI document does not compile into an audit policy (a marking error); the
/// error names the JSON pointer of the fault.
pub(crate) fn router(
    state: AppState,
    sink: impl AuditSink,
    audit_log: Router,
    strict: bool,
) -> Result<Router, PolicyError> {
    let (protected, public) = routes();
    let (app, spec) = protected
        .route_layer(from_fn_with_state(state.clone(), require_auth))
        .merge(public)
        .split_for_parts();
    let layer = AuditLayer::try_new(&spec)?.sink(sink).strict(strict);
    Ok(app.with_state(state).merge(audit_log).layer(layer))
}

/// The audit log query API, `GET /accounts/{account_id}/logs/audit?since=&before=`, guarded
/// by the demo's own credentials: an account's token (or a member's session) reads only that
/// account's log; no credentials is a 401, another account a 404.
pub(crate) fn audit_log_router<S: ChainedStore>(store: S, state: AppState) -> Router {
    AuditLogRouter::new(store, DemoAuthorizer(state.db.clone())).into_router()
}

/// Decides audit log access with the demo's tokens and sessions.
struct DemoAuthorizer(Db);

impl Authorizer for DemoAuthorizer {
    fn authorize<'a>(&'a self, request: &'a Parts, account_id: &'a str) -> Authorization<'a> {
        Box::pin(async move {
            let principal = match crate::auth::authenticate(&self.0, &request.headers).await {
                Ok(Some(principal)) => principal,
                Ok(None) | Err(_) => return Access::Unauthenticated,
            };
            // Reads of the log are audited like any request: say who read it.
            if let Some(audit) = request.extensions.get::<AuditHandle>() {
                audit.identify(principal.identity());
            }
            if principal.can_access(account_id) {
                Access::Allowed
            } else {
                Access::Denied
            }
        })
    }
}

/// Account and zone names for the audit pipeline, read from the app's own tables.
#[derive(Clone, Debug)]
pub(crate) struct AppDirectory(pub(crate) Db);

impl Directory for AppDirectory {
    fn account_name<'a>(&'a self, account_id: &'a str) -> Lookup<'a> {
        Box::pin(async move { Ok(accounts::account_name(&self.0, account_id).await?) })
    }

    fn zone_name<'a>(&'a self, zone_id: &'a str) -> Lookup<'a> {
        Box::pin(async move { Ok(zones::zone_name(&self.0, zone_id).await?) })
    }
}

/// Health check
///
/// `200 ok` while the database answers, `503` otherwise. Not audited.
#[utoipa::path(
    get,
    path = "/healthz",
    tag = "operations",
    responses(
        (status = 200, description = "Healthy", body = String, content_type = "text/plain"),
        (status = 503, description = "The database does not answer", body = String, content_type = "text/plain"),
    ),
    security(()),
    extensions(("x-audit" = json!(false))),
)]
async fn healthz(State(state): State<AppState>) -> impl IntoResponse {
    match state.db.ping().await {
        Ok(()) => (StatusCode::OK, "ok\n"),
        Err(e) => {
            tracing::warn!(target: "demo_app", "health check: database error: {e}");
            (StatusCode::SERVICE_UNAVAILABLE, "database unavailable\n")
        }
    }
}

/// This OpenAPI document
///
/// Not audited.
#[utoipa::path(
    get,
    path = "/openapi.json",
    tag = "operations",
    responses((status = 200, description = "The OpenAPI 3.1 document of this API", content_type = "application/json")),
    security(()),
    extensions(("x-audit" = json!(false))),
)]
async fn openapi_json() -> impl IntoResponse {
    ([(CONTENT_TYPE, "application/json")], openapi_json_text())
}

#[cfg(test)]
mod tests;
