//! [`AuditHandle`] as an axum extractor (feature `axum`): a handler takes `handle: AuditHandle`
//! instead of `Extension(handle): Extension<AuditHandle>`.
//!
//! ```
//! use audit_layer::{AuditHandle, AuditLayer, AuditPolicy, Identity, sink::MemorySink};
//! use axum::{Router, body::Body, routing::put};
//! use tower::ServiceExt as _;
//!
//! async fn update(audit: AuditHandle) -> &'static str {
//!     audit.identify(Identity::user("usr_1"));
//!     "{}"
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let records = MemorySink::new();
//! let app: Router = Router::new()
//!     .route("/zones/{zone_id}", put(update))
//!     .layer(AuditLayer::new(AuditPolicy::default()).sink(records.clone()));
//! let request = http::Request::put("/zones/z1").body(Body::empty()).unwrap();
//! assert_eq!(app.oneshot(request).await.unwrap().status(), 200);
//! # }
//! ```
//!
//! A route the layer does not wrap has no handle: taking `AuditHandle` there answers `500`
//! with a message saying so; take `Option<AuditHandle>` where a handler serves both.

use axum::extract::{FromRequestParts, OptionalFromRequestParts};
use axum::response::{IntoResponse, Response};
use http::StatusCode;
use http::request::Parts;

use crate::identity::AuditHandle;

/// Why `AuditHandle` could not be extracted: the request did not go through an `AuditLayer`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MissingAuditHandle;

impl std::fmt::Display for MissingAuditHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(
            "the request has no AuditHandle: its route is not wrapped by an AuditLayer (add \
             the layer with `.layer(...)` after the route, or take Option<AuditHandle>)",
        )
    }
}

impl std::error::Error for MissingAuditHandle {}

impl IntoResponse for MissingAuditHandle {
    fn into_response(self) -> Response {
        // Whoever reads it is the app's developer: the fault is in the app's router.
        (StatusCode::INTERNAL_SERVER_ERROR, self.to_string()).into_response()
    }
}

impl<S: Send + Sync> FromRequestParts<S> for AuditHandle {
    type Rejection = MissingAuditHandle;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        parts
            .extensions
            .get::<AuditHandle>()
            .cloned()
            .ok_or(MissingAuditHandle)
    }
}

impl<S: Send + Sync> OptionalFromRequestParts<S> for AuditHandle {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Option<Self>, Self::Rejection> {
        Ok(parts.extensions.get::<AuditHandle>().cloned())
    }
}

#[cfg(test)]
mod tests {
    use axum::Router;
    use axum::body::Body;
    use axum::routing::get;
    use tower::ServiceExt as _;

    use super::*;
    use crate::sink::MemorySink;
    use crate::{AuditLayer, AuditPolicy, Identity};

    async fn who(audit: AuditHandle) -> &'static str {
        audit.identify(Identity::user("usr_extracted"));
        "ok"
    }

    async fn maybe(audit: Option<AuditHandle>) -> &'static str {
        if audit.is_some() { "handle" } else { "none" }
    }

    async fn body(response: Response) -> String {
        let bytes = axum::body::to_bytes(response.into_body(), 1 << 16)
            .await
            .unwrap();
        String::from_utf8(bytes.to_vec()).unwrap()
    }

    #[tokio::test]
    async fn the_extracted_handle_is_the_one_the_record_reads() {
        let records = MemorySink::new();
        let app: Router = Router::new()
            .route("/who", get(who))
            .layer(AuditLayer::new(AuditPolicy::default()).sink(records.clone()));
        let response = app
            .oneshot(http::Request::get("/who").body(Body::empty()).unwrap())
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        // The record goes out at the end of the response body.
        assert_eq!(body(response).await, "ok");
        let recorded = records.records();
        assert_eq!(recorded.len(), 1);
        assert_eq!(recorded[0].actor.id.as_deref(), Some("usr_extracted"));
    }

    #[tokio::test]
    async fn without_the_layer_the_handle_is_a_500_that_says_why_or_none() {
        let app: Router = Router::new()
            .route("/who", get(who))
            .route("/maybe", get(maybe));
        let response = app
            .clone()
            .oneshot(http::Request::get("/who").body(Body::empty()).unwrap())
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
        assert!(
            body(response)
                .await
                .contains("not wrapped by an AuditLayer")
        );
        let response = app
            .oneshot(http::Request::get("/maybe").body(Body::empty()).unwrap())
            .await
            .unwrap();
        assert_eq!(body(response).await, "none");
    }
}
