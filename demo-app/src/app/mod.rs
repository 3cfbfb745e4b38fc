//! Router assembly: every product's routes, the auth middleware, the OpenAPI document they
//! describe, and the `AuditLayer` built from that document over the whole app.
//!
//! [`router`] is the one place the app is put together; `main` serves it and the tests drive
//! it, with whatever audit sink each needs. The document's fixed parts are in [`document`];
//! the audit log query API and the names the audit pipeline looks up in [`audit_log`]; the
//! pipeline's metrics at `/metrics` in [`prometheus`].

mod answers;
mod audit_log;
mod document;
mod prometheus;

use std::sync::OnceLock;

use audit_layer::{
    AuditFlush, AuditLayer, AuditSink, IntoAuditPolicy, PolicyError, ProductCategories,
};
use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::http::header::CONTENT_TYPE;
use axum::middleware::from_fn_with_state;
use axum::response::IntoResponse;
use utoipa::OpenApi;
use utoipa::openapi::security::SecurityRequirement;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use self::audit_log::audit_log_description;
#[cfg(test)]
use self::audit_log::audit_log_router;
pub(crate) use self::audit_log::{AppDirectory, audit_log_authorizer, configure_audit_log_router};
use self::document::ApiDoc;
pub(crate) use self::prometheus::install as install_metrics;
use crate::api::{for_each_operation, product};
use crate::auth::require_auth;
use crate::products::{accounts, alerting, dns, invites, login, members, tokens, zones};
use crate::state::AppState;

/// The `service` of every record the app makes.
pub(crate) const SERVICE_NAME: &str = "demo-app";

/// The routes behind authentication (each product's, and the description of the audit log
/// query API), and the public ones (login, health, this document), which the document says
/// need no credentials (`security: [{}]`).
fn routes() -> (OpenApiRouter<AppState>, OpenApiRouter<AppState>) {
    let products = OpenApiRouter::with_openapi(ApiDoc::openapi())
        .merge(accounts::routes())
        .merge(members::routes())
        .merge(invites::routes())
        .merge(tokens::routes())
        .merge(zones::routes())
        .merge(dns::routes())
        .merge(alerting::routes());
    // A document that does not compile fails `router` with the error: no categories here.
    let categories = categories_of(products.get_openapi()).unwrap_or_default();
    // Served by `configure_audit_log_router`'s router, merged into the app in `router`.
    let audit_log = audit_log_description(categories).openapi();
    let mut protected = products.merge(OpenApiRouter::with_openapi(audit_log));
    let operations = OpenApiRouter::new()
        .routes(routes!(healthz))
        .routes(routes!(openapi_json))
        .routes(routes!(prometheus::metrics));
    let mut public = login::routes().merge(product("operations", &[], operations));
    for_each_operation(&mut public, |_, operation| {
        operation.security = Some(vec![SecurityRequirement::default()]);
    });
    answers::declare(&mut protected, &mut public);
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
    TEXT.get_or_init(|| document::json_text(openapi()))
}

/// The product categories the document declares (`x-audit-product-category` on each
/// product's operations), for the audit log API's `product_category` filter and its
/// `product_categories` endpoint.
///
/// # Errors
///
/// When the document does not compile into an audit policy, as [`router`].
pub(crate) fn product_categories() -> Result<ProductCategories, PolicyError> {
    categories_of(&openapi())
}

/// The product categories `document` declares.
fn categories_of(document: &utoipa::openapi::OpenApi) -> Result<ProductCategories, PolicyError> {
    Ok(document.into_audit_policy()?.product_categories().clone())
}

/// The whole app: every route, authentication inside the audit layer, and `audit_log` (the
/// audit log query API, see [`configure_audit_log_router`]) merged in, all audited into `sink` by a
/// layer with the settings `configure` gives it; with the layer's [`AuditFlush`], for the
/// graceful shutdown.
///
/// # Errors
///
/// When the OpenAPI document does not compile into an audit policy (a marking error); the
/// error names the JSON pointer of the fault.
pub(crate) fn router(
    state: AppState,
    sink: impl AuditSink,
    audit_log: Router,
    configure: impl FnOnce(AuditLayer) -> AuditLayer,
) -> Result<(Router, AuditFlush), PolicyError> {
    let (protected, public) = routes();
    let (app, spec) = protected
        .route_layer(from_fn_with_state(state.clone(), require_auth))
        .merge(public)
        .split_for_parts();
    let layer = configure(
        AuditLayer::try_new(&spec)?
            .sink(sink)
            .service_name(SERVICE_NAME),
    );
    let flush = layer.flush_handle();
    state.set_events(layer.events());
    Ok((app.with_state(state).merge(audit_log).layer(layer), flush))
}

/// Health check
///
/// `200 ok` while the database answers, `503` otherwise. Not audited.
#[utoipa::path(
    get,
    path = "/healthz",
    responses(
        (status = 200, description = "Healthy", body = String, content_type = "text/plain"),
        (status = 503, description = "The database does not answer", body = String, content_type = "text/plain"),
    ),
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
    responses((status = 200, description = "The OpenAPI 3.1 document of this API", content_type = "application/json")),
    extensions(("x-audit" = json!(false))),
)]
async fn openapi_json() -> impl IntoResponse {
    ([(CONTENT_TYPE, "application/json")], openapi_json_text())
}

#[cfg(test)]
mod tests;
