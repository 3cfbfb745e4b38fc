//! The audit log in PostgreSQL, beside the app's own tables: chained (tamper-evident) under a
//! secret from the environment, its tables in a schema of their own (`audit`). It makes one
//! request through the audited app, in-process, reads the record back through the audit log
//! API and exits.
//!
//! Run with:
//!
//! ```sh
//! DATABASE_URL=postgres://postgres@127.0.0.1:5432/test \
//! AUDIT_CHAIN_SECRET=$(openssl rand -hex 32) \
//!   cargo run -p audit-store --features postgres --example postgres
//! ```

use std::time::Duration;

use audit_layer::{AuditHandle, AuditLayer, AuditPolicy, Identity, Operation};
use audit_store::AuditLog;
use audit_store::chain::{ChainKeys, ChainSecret};
use audit_store::query::Access;
use audit_store::store::TableNames;
use axum::body::Body;
use axum::http::{Method, Request};
use axum::{Extension, Router, routing::delete};
use http_body_util::BodyExt;
use tower::ServiceExt;

/// Deletes a DNS record of a zone that belongs to `acc_1` (your handler knows the account).
async fn delete_record(Extension(audit): Extension<AuditHandle>) -> &'static str {
    audit.identify(Identity::user("usr_1").account("acc_1"));
    r#"{"id": "r1"}"#
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let url = std::env::var("DATABASE_URL").map_err(
        |_| "set DATABASE_URL to a PostgreSQL URL, e.g. postgres://postgres@127.0.0.1:5432/test",
    )?;
    let secret = std::env::var("AUDIT_CHAIN_SECRET")
        .map_err(|_| "set AUDIT_CHAIN_SECRET to 64 hex digits, e.g. $(openssl rand -hex 32)")?;
    let keys = ChainKeys::from_secret(&ChainSecret::from_hex(&secret)?);
    println!("checkpoints are signed by {}", keys.public_key());

    let audit = AuditLog::postgres(url)
        .table_names(TableNames::new().schema("audit")?)
        .chained(keys)
        // Everyone may read: this example's only caller is itself.
        .authorizer(|_: &http::request::Parts, _: &str| Access::Allowed)
        .start()
        .await?;
    let policy = AuditPolicy::builder()
        .operation(
            Operation::new(
                Method::DELETE,
                "/zones/{zone_id}/dns_records/{dns_record_id}",
            )
            .summary("Delete DNS Record"),
        )
        .build()?;
    let app = Router::new()
        .route(
            "/zones/{zone_id}/dns_records/{dns_record_id}",
            delete(delete_record),
        )
        .merge(audit.router())
        .layer(audit.layer(AuditLayer::new(policy)));

    let deleted = Request::delete("/zones/z1/dns_records/r1")
        .header(
            "traceparent",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        )
        .body(Body::empty())?;
    let response = app.clone().oneshot(deleted).await?;
    response.into_body().collect().await?;
    // The pipeline writes in batches, off the request path.
    for _ in 0..100 {
        if audit.metrics().stored > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let read = Request::get("/accounts/acc_1/logs/audit?since=2026-01-01&before=2100-01-01")
        .body(Body::empty())?;
    let page = app.oneshot(read).await?.into_body().collect().await?;
    println!("{}", String::from_utf8_lossy(&page.to_bytes()));
    audit.shutdown().await;
    Ok(())
}
