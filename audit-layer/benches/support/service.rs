//! The service the request benchmarks measure (`audit-layer`'s `layer`, `audit-store`'s
//! `request`), included by both with `#[path]`: an axum `Router` with the load benchmark's
//! alerting policy route and handlers (`loadbench/src/api.rs`), the `AuditPolicy` describing
//! its GET and PUT, and the two requests as a client sends them.

use std::hint::black_box;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use audit_layer::{AuditPolicy, Operation};
use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::routing::get;
use bytes::Bytes;
use criterion::Bencher;
use http::{HeaderName, HeaderValue, Method, Request, StatusCode, Uri, header};
use http_body_util::BodyExt;
use tokio::runtime::Runtime;
use tower::{Service, ServiceExt};

#[path = "../../../loadbench/src/api.rs"]
mod api;

use api::{BEARER, ITEM_ROUTE, POLICY_JSON, USER_AGENT, get_policy, update_policy};

/// A request path matching [`ITEM_ROUTE`].
const PATH: &str = "/accounts/023e105f4ecef8ad9ca31a8372d0c353/alerting/v3/policies/0da2b59e-f118-439d-8097-bdfb215203c9";

/// The router with the policy route alone.
pub(crate) fn app() -> Router {
    Router::new().route(ITEM_ROUTE, get(get_policy).put(update_policy))
}

/// The audit policy describing both operations of the route.
pub(crate) fn policy() -> AuditPolicy {
    AuditPolicy::builder()
        .operation(Operation::new(Method::GET, ITEM_ROUTE).summary("Get a Notification policy"))
        .operation(Operation::new(Method::PUT, ITEM_ROUTE).summary("Update a Notification policy"))
        .build()
        .expect("the bench policy compiles")
}

/// A current-thread tokio runtime, which the benches drive the requests on.
pub(crate) fn runtime() -> Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime")
}

/// The request kinds, one criterion group each.
#[derive(Clone, Copy)]
pub(crate) enum Kind {
    /// `GET`: the handler returns a small JSON object.
    Get,
    /// `PUT` with a ~0.5 KB JSON alerting policy, parsed by the handler.
    Put,
}

impl Kind {
    /// Every kind, in the order of the groups.
    pub(crate) const ALL: [Self; 2] = [Self::Get, Self::Put];

    /// Its criterion group's name.
    pub(crate) fn group(self) -> &'static str {
        match self {
            Self::Get => "get_policy",
            Self::Put => "update_policy",
        }
    }

    /// The request as a client sends it (with the peer a server would record), with the
    /// header `extra` besides the usual ones.
    pub(crate) fn request(self, extra: Option<(HeaderName, &'static str)>) -> Request<Body> {
        let mut builder = Request::builder()
            .uri(Uri::from_static(PATH))
            .header(header::HOST, HeaderValue::from_static("api.example.com"))
            .header(header::USER_AGENT, HeaderValue::from_static(USER_AGENT))
            .header(header::ACCEPT, HeaderValue::from_static("application/json"))
            .header(header::AUTHORIZATION, HeaderValue::from_static(BEARER))
            .extension(ConnectInfo(SocketAddr::from(([127, 0, 0, 1], 40000))));
        if let Some((name, value)) = extra {
            builder = builder.header(name, HeaderValue::from_static(value));
        }
        let (builder, body) = match self {
            Self::Get => (builder.method(Method::GET), Body::empty()),
            Self::Put => (
                builder
                    .method(Method::PUT)
                    .header(
                        header::CONTENT_TYPE,
                        HeaderValue::from_static("application/json"),
                    )
                    .header(header::CONTENT_LENGTH, HeaderValue::from(POLICY_JSON.len())),
                Body::from(Bytes::from_static(POLICY_JSON.as_bytes())),
            ),
        };
        builder.body(body).expect("the bench request is valid")
    }
}

/// Requests made by [`roundtrip`] since the count was last reset: for instruction counts per
/// request under callgrind (`--toggle-collect='*roundtrip*'`).
pub(crate) static REQUESTS: AtomicU64 = AtomicU64::new(0);

/// One request through `svc`, response body read to its end, counted in [`REQUESTS`].
pub(crate) async fn roundtrip(svc: &mut Router, req: Request<Body>) -> (StatusCode, Bytes) {
    REQUESTS.fetch_add(1, Ordering::Relaxed);
    let Ok(ready) = ServiceExt::<Request<Body>>::ready(svc).await;
    let Ok(response) = ready.call(req).await;
    let (parts, body) = response.into_parts();
    let body = body
        .collect()
        .await
        .expect("the response body is readable")
        .to_bytes();
    (parts.status, body)
}

/// Times `iters` requests made by `request` through a clone of `svc`, on `rt`, each response
/// read to its end.
pub(crate) fn time_requests(
    b: &mut Bencher<'_>,
    rt: &Runtime,
    svc: &Router,
    request: impl Fn() -> Request<Body> + Copy + 'static,
) {
    b.to_async(rt).iter_custom(|iters| {
        let mut svc = svc.clone();
        async move {
            let start = Instant::now();
            for _ in 0..iters {
                black_box(roundtrip(&mut svc, request()).await);
            }
            start.elapsed()
        }
    });
}
