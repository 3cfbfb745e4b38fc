//! The OpenAPI document's fixed parts ([`ApiDoc`]: title, tags, the two ways to
//! authenticate) and its JSON text ([`json_text`]). The operations come from the routers in
//! [`super::routes()`].

use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use crate::api::ErrorBody;

/// The document's fixed parts; the operations come from the routers in [`super::routes()`].
#[derive(OpenApi)]
#[openapi(
    info(
        title = "demo-app",
        description = "A multi-product API (accounts, members and invitations, API tokens, \
            zones, DNS records, alerting policies, dashboard login) audited end to end by \
            audit-layer. Fields marked `x-auditable: true` are the only request and response \
            values an audit record keeps.",
        license(name = "MIT OR Apache-2.0"),
    ),
    components(schemas(ErrorBody)),
    modifiers(&SecuritySchemes),
    security(("api_token" = []), ("dash_session" = [])),
    tags(
        (name = "accounts", description = "Accounts and their settings"),
        (name = "members", description = "Who may act on an account"),
        (name = "tokens", description = "API tokens of an account"),
        (name = "zones", description = "Zones (domains)"),
        (name = "dns", description = "DNS records of a zone"),
        (name = "alerting", description = "Notification policies"),
        (name = "user", description = "The signed-in user's own invitations to accounts"),
        (name = "login", description = "Dashboard sessions"),
        (name = "operations", description = "Health and description of the service"),
    ),
)]
pub(super) struct ApiDoc;

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

/// `document` as pretty JSON with every object's keys sorted (utoipa keeps extensions in a
/// `HashMap`, whose order changes from run to run), and a final newline.
pub(super) fn json_text(document: utoipa::openapi::OpenApi) -> String {
    let document = serde_json::to_value(document).map(sort_keys);
    let mut text = document
        .and_then(|d| serde_json::to_string_pretty(&d))
        .unwrap_or_else(|e| format!("{{\"error\": \"the document does not serialize: {e}\"}}"));
    text.push('\n');
    text
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
