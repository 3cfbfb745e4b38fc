//! An app described with utoipa-axum's `OpenApiRouter`: the routes and their OpenAPI document
//! come from the same code, and the audit layer is built from that document, so the fields a
//! record keeps are the ones the document marks `x-auditable`. Records are logged through
//! `tracing` (the default sink); `audit-store` would store them.
//!
//! Run with: `cargo run -p audit-layer --features utoipa --example openapi_router`, then
//!
//! ```sh
//! curl -X POST localhost:3000/accounts/acc_1/tokens \
//!   -H 'content-type: application/json' -d '{"name": "ci", "value": "s3cr3t"}'
//! curl localhost:3000/openapi.json
//! ```

use std::net::SocketAddr;

use audit_layer::AuditLayer;
use axum::extract::Path;
use axum::{Json, Router, routing::get};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// A token to create: its name is recorded, its value never.
#[derive(Deserialize, ToSchema)]
struct NewToken {
    #[schema(extensions(("x-auditable" = json!(true))))]
    name: String,
    value: String,
}

/// The token created.
#[derive(Serialize, ToSchema)]
struct Token {
    #[schema(extensions(("x-auditable" = json!(true))))]
    id: String,
    #[schema(extensions(("x-auditable" = json!(true))))]
    name: String,
}

/// Create Token
#[utoipa::path(
    post,
    path = "/accounts/{account_id}/tokens",
    params(("account_id" = String, Path, description = "The account id")),
    request_body = NewToken,
    responses((status = 200, description = "The token", body = Token)),
)]
async fn create_token(Path(_account_id): Path<String>, Json(new): Json<NewToken>) -> Json<Token> {
    let _ = new.value;
    Json(Token {
        id: "tok_1".into(),
        name: new.name,
    })
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt().with_env_filter("info").init();
    let (app, document) = OpenApiRouter::new()
        .routes(routes!(create_token))
        .split_for_parts();
    let layer = AuditLayer::try_new(&document)?.service_name("tokens-api");
    let document = serde_json::to_string(&document)?;
    let app: Router = app
        .route(
            "/openapi.json",
            get(move || async move { document.clone() }),
        )
        .layer(layer);

    let listener = tokio::net::TcpListener::bind("127.0.0.1:3000").await?;
    println!("listening on http://{}", listener.local_addr()?);
    axum::serve(
        listener,
        app.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .await?;
    Ok(())
}
