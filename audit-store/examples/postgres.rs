//! An audited axum app whose audit log lives in PostgreSQL, chained (tamper-evident) under a
//! secret from the environment, with the store's tables beside the app's own.
//!
//! Run with:
//!
//! ```sh
//! DATABASE_URL=postgres://postgres@127.0.0.1:5432/test \
//! AUDIT_CHAIN_SECRET=$(openssl rand -hex 32) \
//!   cargo run -p audit-store --features postgres --example postgres
//! curl -X DELETE localhost:3000/zones/z1/dns_records/r1
//! curl -H 'authorization: Bearer example-auditor' 'localhost:3000/accounts/acc_1/logs/audit?since=2026-01-01&before=2030-01-01'
//! ```

use std::net::SocketAddr;

use audit_layer::{AuditLayer, AuditPolicy, Identity, Operation};
use audit_store::PostgresStore;
use audit_store::chain::{ChainKeys, ChainSecret};
use audit_store::pipeline;
use audit_store::query::{Access, AuditLogRouter};
use audit_store::store::AuditStore;
use axum::http::header::AUTHORIZATION;
use axum::http::{Method, request::Parts};
use axum::{Extension, Router, routing::delete};

/// Deletes a DNS record of a zone that belongs to `acc_1` (your handler knows the account).
async fn delete_record(Extension(audit): Extension<audit_layer::AuditHandle>) -> &'static str {
    audit.identify(Identity::user("usr_1").account("acc_1"));
    r#"{"id": "r1"}"#
}

fn auditor(request: &Parts, _account_id: &str) -> Access {
    match request.headers.get(AUTHORIZATION) {
        Some(value) if value == "Bearer example-auditor" => Access::Allowed,
        _ => Access::Unauthenticated,
    }
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

    let store = PostgresStore::connect(&url).await?.chained(keys);
    store.migrate().await?;
    let (sink, pipeline) = pipeline::builder(store.clone()).build().await?;
    let worker = tokio::spawn(pipeline.run());

    let policy = AuditPolicy::builder()
        .operation(
            Operation::new(
                Method::DELETE,
                "/zones/{zone_id}/dns_records/{dns_record_id}",
            )
            .summary("Delete DNS Record"),
        )
        .build()?;
    let layer = AuditLayer::new(policy).sink(sink.clone());
    let flush = layer.flush_handle();
    let app = Router::new()
        .route(
            "/zones/{zone_id}/dns_records/{dns_record_id}",
            delete(delete_record),
        )
        .merge(AuditLogRouter::new(store, auditor).into_router())
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
    flush.flush(audit_layer::DEFAULT_DETACHED_TIMEOUT).await;
    sink.shutdown().await;
    worker.await?;
    Ok(())
}
