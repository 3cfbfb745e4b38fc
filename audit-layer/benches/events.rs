//! What an event costs per record, next to what the audit layer adds to one audited HTTP
//! request, through the same sink, measured in the same run.
//!
//! The request side is the layer benchmark's `update_policy` (`benches/layer.rs`): an axum
//! `Router` with the load benchmark's handlers (`loadbench/src/api.rs`, included here), a `PUT`
//! of a ~0.5 KB JSON alerting policy, the response body read to its end. Variants:
//!
//! - `request_bare`: the router alone;
//! - `request_audited`: the router under an `AuditLayer` into the sink below, its policy compiled
//!   from an OpenAPI document whose `PUT` takes the typed policy below (so the request's record
//!   holds the policy reduced by the same schema as the events' values).
//!
//! `request_audited − request_bare` is what the layer adds to make the request's record.
//!
//! The event side emits through [`AuditLayer::events`] of the same layer configuration, into
//! the same sink:
//!
//! - `event`: `disable` of a policy, with account, resource, description, in a system
//!   [`AuditContext`] (actor and ray id taken from it);
//! - `event_with_change`: the same with the policy's typed value before and after, each reduced
//!   by its `ToSchema` schema (the ~0.5 KB policy, its webhook URL not auditable).
//!
//! The sink serializes each record to JSON into a reused buffer (what a storing sink does to a
//! record first) and keeps nothing, so every variant pays for the record it makes and no more.
//!
//! After the criterion groups, the bench times the four variants again, interleaved in rounds
//! of 2,000, and prints the ratios `event / (request_audited − request_bare)`: at most 1 means
//! an event costs no more per record than a request's record.
//!
//! ```text
//! cargo bench -p audit-layer --bench events
//! ```

use std::cell::RefCell;
use std::hint::black_box;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use audit_layer::AuditLayer;
use audit_layer::context::{AuditContext, WithAuditContext};
use audit_layer::event::AuditEvents;
use audit_layer::record::{ActionType, AuditRecord};
use audit_layer::sink::AuditSink;
use audit_layer::spec::OpenApiDocument;
use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::routing::get;
use bytes::Bytes;
use criterion::{Criterion, criterion_group, criterion_main};
use http::{HeaderValue, Method, Request, StatusCode, Uri, header};
use http_body_util::BodyExt;
use serde::{Deserialize, Serialize};
use tokio::runtime::Runtime;
use tower::{Service, ServiceExt};
use utoipa::ToSchema;

// The load benchmark's module, of which this bench uses a part (it allows its own dead code).
#[path = "../../loadbench/src/api.rs"]
mod api;

use api::{BEARER, ITEM_ROUTE, POLICY_JSON, USER_AGENT, get_policy, update_policy};

/// A request path matching [`ITEM_ROUTE`].
const PATH: &str = "/accounts/023e105f4ecef8ad9ca31a8372d0c353/alerting/v3/policies/0da2b59e-f118-439d-8097-bdfb215203c9";

const DISABLE: ActionType = ActionType::from_static("disable");

/// A sink that serializes every record into a reused buffer and keeps nothing.
#[derive(Clone, Copy)]
struct SerializingSink;

thread_local! {
    static BUFFER: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

impl AuditSink for SerializingSink {
    fn submit(&self, record: AuditRecord) {
        BUFFER.with_borrow_mut(|buffer| {
            buffer.clear();
            serde_json::to_writer(&mut *buffer, &record).expect("a record serializes");
            black_box(buffer.len());
        });
    }
}

/// The policy, as an app holds it: typed, with a schema that marks what may be recorded.
#[derive(Clone, Serialize, Deserialize, ToSchema)]
struct Policy {
    #[schema(extensions(("x-auditable" = json!(true))))]
    name: String,
    #[schema(extensions(("x-auditable" = json!(true))))]
    description: String,
    #[schema(extensions(("x-auditable" = json!(true))))]
    enabled: bool,
    #[schema(extensions(("x-auditable" = json!(true))))]
    alert_type: String,
    filters: Filters,
    mechanisms: Mechanisms,
}

#[derive(Clone, Serialize, Deserialize, ToSchema)]
struct Filters {
    #[schema(extensions(("x-auditable" = json!(true))))]
    services: Vec<String>,
    #[schema(extensions(("x-auditable" = json!(true))))]
    zones: Vec<String>,
}

#[derive(Clone, Serialize, Deserialize, ToSchema)]
struct Mechanisms {
    webhooks: Vec<Webhook>,
}

#[derive(Clone, Serialize, Deserialize, ToSchema)]
struct Webhook {
    #[schema(extensions(("x-auditable" = json!(true))))]
    id: String,
    /// Carries a secret: not auditable.
    url: String,
}

fn app() -> Router {
    Router::new().route(ITEM_ROUTE, get(get_policy).put(update_policy))
}

/// The layer, its policy compiled from an OpenAPI document whose `PUT` takes a [`Policy`]: the
/// request's record holds the policy reduced by the same schema as the events' values.
fn layer() -> AuditLayer {
    use utoipa::PartialSchema;
    let mut components = serde_json::Map::new();
    let mut referenced = Vec::new();
    <Policy as ToSchema>::schemas(&mut referenced);
    for (name, schema) in referenced {
        components.insert(name, serde_json::to_value(schema).expect("a schema"));
    }
    components.insert(
        "Policy".into(),
        serde_json::to_value(Policy::schema()).expect("a schema"),
    );
    let document = serde_json::json!({
        "openapi": "3.1.0",
        "info": {"title": "bench", "version": "1"},
        "paths": {ITEM_ROUTE: {
            "get": {"summary": "Get a Notification policy", "responses": {"200": {"description": "ok"}}},
            "put": {
                "summary": "Update a Notification policy",
                "requestBody": {"content": {"application/json": {"schema": {"$ref": "#/components/schemas/Policy"}}}},
                "responses": {"200": {"description": "ok"}},
            },
        }},
        "components": {"schemas": components},
    });
    AuditLayer::new(OpenApiDocument::from_value(document)).sink(SerializingSink)
}

fn put_request() -> Request<Body> {
    Request::builder()
        .method(Method::PUT)
        .uri(Uri::from_static(PATH))
        .header(header::HOST, HeaderValue::from_static("api.example.com"))
        .header(header::USER_AGENT, HeaderValue::from_static(USER_AGENT))
        .header(header::ACCEPT, HeaderValue::from_static("application/json"))
        .header(header::AUTHORIZATION, HeaderValue::from_static(BEARER))
        .header(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )
        .header(header::CONTENT_LENGTH, HeaderValue::from(POLICY_JSON.len()))
        .extension(ConnectInfo(SocketAddr::from(([127, 0, 0, 1], 40000))))
        .body(Body::from(Bytes::from_static(POLICY_JSON.as_bytes())))
        .expect("the bench request is valid")
}

/// One request through `svc`, response body read to its end.
async fn roundtrip(svc: &mut Router) -> StatusCode {
    let Ok(ready) = ServiceExt::<Request<Body>>::ready(svc).await;
    let Ok(response) = ready.call(put_request()).await;
    let (parts, body) = response.into_parts();
    black_box(body.collect().await.expect("a readable body").to_bytes());
    parts.status
}

fn emit(events: &AuditEvents, change: Option<(&Policy, &Policy)>) {
    let event = events
        .event(DISABLE)
        .account("023e105f4ecef8ad9ca31a8372d0c353")
        .scope("accounts")
        .product("alerting")
        .resource_type("policies")
        .resource_id("0da2b59e-f118-439d-8097-bdfb215203c9")
        .description("Disabled the policy after 3 consecutive failed deliveries");
    match change {
        Some((before, after)) => event.before(before).after(after).emit(),
        None => event.emit(),
    }
}

/// The four variants, as closures over what each needs.
struct Variants {
    bare: Router,
    audited: Router,
    events: AuditEvents,
    before: Policy,
    after: Policy,
    system: AuditContext,
}

impl Variants {
    fn new() -> Self {
        let layer = layer();
        let before: Policy = serde_json::from_str(POLICY_JSON).expect("the policy parses");
        let mut after = before.clone();
        after.enabled = false;
        Self {
            bare: app(),
            events: layer.events(),
            audited: app().layer(layer),
            before,
            after,
            system: AuditContext::system(),
        }
    }

    /// `iters` of variant `which`, timed.
    async fn time(&self, which: &str, iters: u64) -> Duration {
        let start = Instant::now();
        match which {
            "request_bare" | "request_audited" => {
                let mut svc = if which == "request_bare" {
                    self.bare.clone()
                } else {
                    self.audited.clone()
                };
                for _ in 0..iters {
                    black_box(roundtrip(&mut svc).await);
                }
            }
            "event" => {
                async {
                    for _ in 0..iters {
                        emit(&self.events, None);
                    }
                }
                .in_audit_context(self.system.clone())
                .await;
            }
            _ => {
                async {
                    for _ in 0..iters {
                        emit(&self.events, Some((&self.before, &self.after)));
                    }
                }
                .in_audit_context(self.system.clone())
                .await;
            }
        }
        start.elapsed()
    }
}

const VARIANTS: [&str; 4] = [
    "request_bare",
    "request_audited",
    "event",
    "event_with_change",
];

/// Every variant works: the requests answer 200, and an event validates against the schema and
/// holds no secret.
fn preflight(rt: &Runtime, v: &Variants) {
    rt.block_on(async {
        assert_eq!(roundtrip(&mut v.bare.clone()).await, StatusCode::OK);
        assert_eq!(roundtrip(&mut v.audited.clone()).await, StatusCode::OK);
    });
    let requests = audit_layer::sink::MemorySink::new();
    let mut audited = app().layer(layer().sink(requests.clone()));
    rt.block_on(async { assert_eq!(roundtrip(&mut audited).await, StatusCode::OK) });
    let request = &requests.records()[0];
    let body = request
        .resource
        .request
        .as_ref()
        .expect("a request body")
        .to_value();
    assert_eq!(body["enabled"], true, "{body}");
    assert!(
        body["mechanisms"]["webhooks"][0].get("url").is_none(),
        "{body}"
    );
    let records = audit_layer::sink::MemorySink::new();
    let events = AuditEvents::new(records.clone());
    rt.block_on(
        async { emit(&events, Some((&v.before, &v.after))) }.in_audit_context(v.system.clone()),
    );
    let record = &records.records()[0];
    let change = record.change.as_ref().expect("a change");
    assert_eq!(
        change.after.as_ref().expect("after").to_value()["enabled"],
        false
    );
    let json = serde_json::to_string(record).expect("serializes");
    assert!(!json.contains("hooks.example.com"), "{json}");
}

fn events_vs_requests(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    let variants = Variants::new();
    preflight(&rt, &variants);

    let mut group = c.benchmark_group("events");
    group.warm_up_time(Duration::from_secs(2));
    group.measurement_time(Duration::from_secs(5));
    for which in VARIANTS {
        group.bench_function(which, |b| {
            b.to_async(&rt)
                .iter_custom(|iters| variants.time(which, iters))
        });
    }
    group.finish();

    report_ratios(&rt, &variants);
}

/// Times the variants again, interleaved in rounds (so that drift affects all alike), and
/// prints each event's cost over the request record's. Skipped in test mode (`cargo test
/// --benches`, no `--bench` argument), where criterion runs each function once.
fn report_ratios(rt: &Runtime, v: &Variants) {
    // `cargo bench` passes `--bench`; without it criterion runs in test mode.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    const ROUND: u64 = 2_000;
    const ROUNDS: u32 = 30;
    let mut total = [Duration::ZERO; 4];
    for _ in 0..ROUNDS {
        for (i, which) in VARIANTS.iter().enumerate() {
            total[i] += rt.block_on(v.time(which, ROUND));
        }
    }
    let per = |i: usize| total[i].as_nanos() as f64 / f64::from(ROUNDS) / ROUND as f64;
    let record = per(1) - per(0);
    println!(
        "\nper record (ns): request_bare {:.0}, request_audited {:.0} (record: {record:.0}), \
         event {:.0}, event_with_change {:.0}",
        per(0),
        per(1),
        per(2),
        per(3)
    );
    println!(
        "ratio event / request record: {:.2}; event_with_change / request record: {:.2}",
        per(2) / record,
        per(3) / record
    );
}

criterion_group!(benches, events_vs_requests);
criterion_main!(benches);
