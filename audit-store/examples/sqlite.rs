//! The smallest audited axum app that keeps its audit log: SQLite, the ingest pipeline, the
//! audit log API, and a graceful shutdown that writes every record accepted, all started by
//! `AuditLog` in one call.
//!
//! Run with: `cargo run -p audit-store --example sqlite`, then
//!
//! ```sh
//! curl -X PUT localhost:3000/accounts/acc_1/settings \
//!   -H 'content-type: application/json' -d '{"name": "Acme", "secret": "not recorded"}'
//! curl -H 'authorization: Bearer example-auditor' \
//!   'localhost:3000/accounts/acc_1/logs/audit?since=2026-01-01&before=2030-01-01'
//! ```
//!
//! A request with a W3C `traceparent` header is recorded with its trace id
//! (`-H 'traceparent: 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01'`).
//!
//! The records go to `audit-example.db` (and `audit-example-spool/` while the file cannot be
//! written); Ctrl-C stops the server.

use std::net::SocketAddr;

use audit_layer::record::ActorContext;
use audit_layer::spec::OpenApiDocument;
use audit_layer::{AuditHandle, AuditLayer, Identity};
use audit_store::AuditLog;
use audit_store::query::Access;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use axum::{Extension, Json, Router, routing::put};

/// The API's description: what the layer records of each operation. `name` is the one field
/// of the body a record keeps.
const API: &str = r#"
openapi: 3.1.0
info: {title: example, version: "1"}
paths:
  /accounts/{account_id}/settings:
    put:
      summary: Update account settings
      requestBody:
        content:
          application/json:
            schema:
              type: object
              properties:
                name: {type: string, x-auditable: true}
                secret: {type: string}
      responses:
        "200":
          description: The settings
          content:
            application/json:
              schema:
                type: object
                properties:
                  name: {type: string, x-auditable: true}
"#;

/// The handler tells the layer who acted (here a fixed user; your auth code knows).
async fn update_settings(
    Extension(audit): Extension<AuditHandle>,
    Json(settings): Json<serde_json::Value>,
) -> Json<serde_json::Value> {
    audit.identify(Identity::user("usr_1").context(ActorContext::Dash));
    Json(serde_json::json!({"name": settings["name"]}))
}

/// Who may read an account's log: a caller with the auditor's token. Yours asks your auth.
fn auditor(request: &Parts, _account_id: &str) -> Access {
    match request.headers.get(AUTHORIZATION) {
        Some(value) if value == "Bearer example-auditor" => Access::Allowed,
        _ => Access::Unauthenticated,
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let audit = AuditLog::sqlite("audit-example.db")
        .pipeline(|pipeline| pipeline.spool("audit-example-spool", 64 << 20))
        .authorizer(auditor)
        .start()
        .await?;
    let layer = audit.layer(AuditLayer::try_new(OpenApiDocument::from_yaml_str(API)?)?);
    let app = Router::new()
        .route("/accounts/{account_id}/settings", put(update_settings))
        .merge(audit.router())
        .layer(layer);

    let listener = tokio::net::TcpListener::bind("127.0.0.1:3000").await?;
    println!("listening on http://{}", listener.local_addr()?);
    axum::serve(
        listener,
        app.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(async {
        let _ = tokio::signal::ctrl_c().await;
    })
    .await?;
    // Handlers whose clients left, and the layer's summaries, then everything accepted.
    audit.shutdown().await;
    Ok(())
}
