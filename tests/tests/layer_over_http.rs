//! End-to-end tests of the audit layer over real HTTP: a real axum server on a loopback port,
//! driven by reqwest and, where a client must misbehave, by raw TCP.
//!
//! Every record is read through `MemorySink::wait_for`/`records`, which also fails the test if
//! any record did not validate against `schemas/audit-log.schema.json`.

#![allow(clippy::unwrap_used, missing_docs)]

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use audit_layer::record::{ActorContext, AuditRecord, Timestamp};
use audit_layer::redact::QueryPlan;
use audit_layer::sink::MemorySink;
use audit_layer::{AuditHandle, AuditLayer, AuditPolicy, Identity, Operation};
use audit_tests::read_until_closed;
use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderName, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Extension, Json, Router};
use serde_json::{Value, json};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tower_http::catch_panic::CatchPanicLayer;

// ---------------------------------------------------------------------------------------------
// The app under test
// ---------------------------------------------------------------------------------------------

const POLICY: &str = "/accounts/{account_id}/alerting/v3/policies/{policy_id}";
const DNS_RECORD: &str = "/zones/{zone_id}/dns_records/{record_id}";
const EXPORT: &str = "/zones/{zone_id}/exports/{export_id}";
const WHOAMI: &str = "/user";
const VERIFY_TOKEN: &str = "/accounts/{account_id}/tokens/verify";
const CRASH: &str = "/accounts/{account_id}/crash";
const MEMBERS: &str = "/accounts/{account_id}/members";
const HEALTHZ: &str = "/healthz";

/// The policy that the update tests write.
const POLICY_1: &str = "/accounts/acc_1/alerting/v3/policies/pol_1";

const UPDATE_SUMMARY: &str = "Update a Notification policy";
const USER_AGENT: &str = "audit-e2e/1.0 (layer_over_http)";

const EXPORT_CHUNK: usize = 64 * 1024;
const EXPORT_CHUNKS: usize = 64;
const EXPORT_LEN: usize = EXPORT_CHUNK * EXPORT_CHUNKS;

/// The API description the layer audits by. `POST /accounts/{account_id}/members` is served
/// but deliberately not described.
fn policy() -> AuditPolicy {
    AuditPolicy::builder()
        .operation(Operation::new(Method::PUT, POLICY).summary(UPDATE_SUMMARY))
        .operation(Operation::new(Method::GET, POLICY).summary("Get a Notification policy"))
        .operation(
            Operation::new(Method::GET, DNS_RECORD)
                .summary("DNS Record Details")
                .query_plan(QueryPlan::new(["name"])),
        )
        .operation(Operation::new(Method::DELETE, DNS_RECORD).summary("Delete DNS Record"))
        .operation(
            Operation::new(Method::GET, EXPORT)
                .summary("Download a zone export")
                .query_plan(QueryPlan::default().declare(["hold"])),
        )
        .operation(Operation::new(Method::GET, WHOAMI).summary("User Details"))
        .operation(Operation::new(Method::GET, VERIFY_TOKEN).summary("Verify Token"))
        .operation(Operation::new(Method::GET, CRASH).summary("Crash"))
        .operation(Operation::new(Method::GET, HEALTHZ).not_audited())
        .build()
        .unwrap()
}

struct AppState {
    /// How many times a handler that takes a request body ran.
    body_handler_calls: AtomicUsize,
    /// Holds the last chunk of `?hold=1` exports until a permit is added.
    export_gate: Semaphore,
}

impl Default for AppState {
    fn default() -> Self {
        Self {
            body_handler_calls: AtomicUsize::new(0),
            export_gate: Semaphore::new(0),
        }
    }
}

async fn update_policy(
    State(state): State<Arc<AppState>>,
    Path((_account_id, policy_id)): Path<(String, String)>,
    body: Bytes,
) -> Response {
    state.body_handler_calls.fetch_add(1, Ordering::SeqCst);
    let echo = json!({
        "id": policy_id,
        "received_len": body.len(),
        "received_fnv": fnv1a(&body).to_string(),
        "secret": "CANARY-response-body",
    });
    (
        [(
            http::header::SET_COOKIE,
            "session=CANARY-set-cookie; HttpOnly",
        )],
        Json(echo),
    )
        .into_response()
}

async fn get_policy(Path((_account_id, policy_id)): Path<(String, String)>) -> Response {
    match policy_id.as_str() {
        "missing" => (StatusCode::NOT_FOUND, "no such policy").into_response(),
        "forbidden" => (StatusCode::FORBIDDEN, "not yours").into_response(),
        _ => Json(json!({"id": policy_id, "name": "On-call"})).into_response(),
    }
}

async fn get_dns_record(Path((_zone_id, record_id)): Path<(String, String)>) -> Json<Value> {
    Json(json!({"id": record_id, "type": "A"}))
}

async fn delete_dns_record() -> StatusCode {
    tokio::time::sleep(Duration::from_millis(300)).await;
    StatusCode::NO_CONTENT
}

/// 4 MiB in 64 KiB chunks. `?hold=1` waits for a gate permit before the last chunk;
/// `?pace_ms=N` sleeps N ms before each chunk.
async fn export(
    State(state): State<Arc<AppState>>,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    let hold = query.contains_key("hold");
    let pace = query
        .get("pace_ms")
        .and_then(|v| v.parse().ok())
        .map(Duration::from_millis);
    let chunks = futures_util::stream::unfold(0usize, move |i| {
        let state = Arc::clone(&state);
        async move {
            if i == EXPORT_CHUNKS {
                return None;
            }
            if hold && i == EXPORT_CHUNKS - 1 {
                state.export_gate.acquire().await.unwrap().forget();
            }
            if let Some(pace) = pace {
                tokio::time::sleep(pace).await;
            }
            Some((Ok::<_, Infallible>(export_chunk(i)), i + 1))
        }
    });
    Body::from_stream(chunks).into_response()
}

async fn whoami(Extension(audit): Extension<AuditHandle>) -> &'static str {
    audit.identify(
        Identity::user("usr_alice")
            .email("alice@example.com")
            .context(ActorContext::Dash),
    );
    "alice"
}

/// Tells the layer who acted through `x-audit-actor-*` response headers, as an upstream that
/// cannot see the request's extensions would.
async fn verify_token() -> Response {
    (
        [
            ("x-audit-actor-id", "usr_bob"),
            ("x-audit-actor-email", "bob@example.com"),
            ("x-audit-actor-type", "user"),
            ("x-audit-actor-context", "api_token"),
            ("x-audit-actor-token-id", "tok_7"),
            ("x-audit-actor-token-name", "CI deploys"),
            ("x-audit-actor-future-field", "meant for the layer"),
            ("x-served-by", "token-service"),
        ],
        Json(json!({"status": "active"})),
    )
        .into_response()
}

async fn crash() -> &'static str {
    panic!("the handler exploded (expected by the test)");
}

async fn create_member(
    State(state): State<Arc<AppState>>,
    Path(account_id): Path<String>,
    body: Bytes,
) -> (StatusCode, Json<Value>) {
    state.body_handler_calls.fetch_add(1, Ordering::SeqCst);
    (
        StatusCode::CREATED,
        Json(json!({"account": account_id, "received_len": body.len()})),
    )
}

fn routes(state: Arc<AppState>) -> Router {
    Router::new()
        .route(POLICY, get(get_policy).put(update_policy))
        .route(DNS_RECORD, get(get_dns_record).delete(delete_dns_record))
        .route(EXPORT, get(export))
        .route(WHOAMI, get(whoami))
        .route(VERIFY_TOKEN, get(verify_token))
        .route(CRASH, get(crash))
        .route(MEMBERS, axum::routing::post(create_member))
        .route(HEALTHZ, get(|| async { "ok" }))
        .with_state(state)
}

// ---------------------------------------------------------------------------------------------
// Harness
// ---------------------------------------------------------------------------------------------

/// Where the audit layer sits.
#[derive(Clone, Copy)]
enum Mount {
    /// `Router::layer(audit)`: inside the router, sees `MatchedPath`.
    InRouter,
    /// `.layer(CatchPanicLayer).layer(audit)`: panics become 500s before reaching the layer.
    InRouterOverCatchPanic,
    /// `.layer(audit).layer(CatchPanicLayer)`: the panic unwinds through the layer and is
    /// turned into a 500 outside it.
    InRouterUnderCatchPanic,
    /// `ServiceBuilder::new().layer(audit).service(router)`: outside the router, no
    /// `MatchedPath`.
    AroundRouter,
}

struct TestApp {
    addr: SocketAddr,
    sink: MemorySink,
    state: Arc<AppState>,
}

impl TestApp {
    /// `method path_and_query` with `headers` and `body`, from a new [`client`]: the answer's
    /// head (its body is the caller's to read), or why none came.
    async fn try_send(
        &self,
        method: Method,
        path_and_query: &str,
        headers: &[(&str, &str)],
        body: Option<reqwest::Body>,
    ) -> reqwest::Result<reqwest::Response> {
        let url = format!("http://{}{path_and_query}", self.addr);
        let mut request = client().request(method, url);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        if let Some(body) = body {
            request = request.body(body);
        }
        request.send().await
    }

    /// [`try_send`](Self::try_send), which must be answered.
    async fn send(
        &self,
        method: Method,
        path_and_query: &str,
        headers: &[(&str, &str)],
        body: Option<reqwest::Body>,
    ) -> reqwest::Response {
        self.try_send(method, path_and_query, headers, body)
            .await
            .unwrap()
    }

    /// `GET path_and_query`.
    async fn get(&self, path_and_query: &str) -> reqwest::Response {
        self.send(Method::GET, path_and_query, &[], None).await
    }

    /// `PUT path_and_query` of a JSON `body`.
    async fn put_json(
        &self,
        path_and_query: &str,
        body: impl Into<reqwest::Body>,
    ) -> reqwest::Response {
        let json = [("content-type", "application/json")];
        self.send(Method::PUT, path_and_query, &json, Some(body.into()))
            .await
    }
}

/// Serves the app with the layer inside the router, configured by `configure`.
async fn spawn_app(configure: impl FnOnce(AuditLayer) -> AuditLayer) -> TestApp {
    spawn_app_with(Mount::InRouter, configure).await
}

async fn spawn_app_with(mount: Mount, configure: impl FnOnce(AuditLayer) -> AuditLayer) -> TestApp {
    let sink = MemorySink::new();
    let layer = configure(AuditLayer::new(policy()).sink(sink.clone()));
    let state = Arc::new(AppState::default());
    let router = routes(Arc::clone(&state));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    match mount {
        Mount::InRouter => serve_router(listener, router.layer(layer)),
        Mount::InRouterOverCatchPanic => {
            serve_router(listener, router.layer(CatchPanicLayer::new()).layer(layer))
        }
        Mount::InRouterUnderCatchPanic => {
            serve_router(listener, router.layer(layer).layer(CatchPanicLayer::new()))
        }
        Mount::AroundRouter => {
            let service = tower::ServiceBuilder::new()
                .map_response(IntoResponse::into_response)
                .layer(layer)
                .service(router);
            let make = axum::ServiceExt::<Request>::into_make_service_with_connect_info::<SocketAddr>(
                service,
            );
            tokio::spawn(async move { axum::serve(listener, make).await.unwrap() });
        }
    }
    TestApp { addr, sink, state }
}

fn serve_router(listener: TcpListener, app: Router) {
    let make = app.into_make_service_with_connect_info::<SocketAddr>();
    tokio::spawn(async move { axum::serve(listener, make).await.unwrap() });
}

/// A client that talks to the loopback server directly, whatever the environment's proxies.
fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .user_agent(USER_AGENT)
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap()
}

/// Waits for `n` records, gives stragglers a moment, and checks that exactly `n` arrived.
async fn exactly(sink: &MemorySink, n: usize) -> Vec<AuditRecord> {
    sink.wait_for(n, Duration::from_secs(5)).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let records = sink.records();
    assert_eq!(
        records.len(),
        n,
        "expected exactly {n} records: {records:#?}"
    );
    records
}

/// Exactly one record, as JSON.
async fn only_record(sink: &MemorySink) -> Value {
    let records = exactly(sink, 1).await;
    serde_json::to_value(&records[0]).unwrap()
}

/// Sends raw bytes, then reads until the server closes (or resets) the connection: what came
/// back, as text.
async fn raw_exchange(addr: SocketAddr, request: &[u8]) -> String {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(request).await.unwrap();
    let response = read_until_closed(&mut stream, "a raw request").await;
    String::from_utf8_lossy(&response).into_owned()
}

fn export_chunk(i: usize) -> Bytes {
    (0..EXPORT_CHUNK)
        .map(|j| ((i * 131 + j * 7 + j / 251) % 256) as u8)
        .collect::<Vec<u8>>()
        .into()
}

fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, &b| {
        (hash ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// Every string in `value`, keys included.
fn all_strings(value: &Value, out: &mut Vec<String>) {
    match value {
        Value::String(s) => out.push(s.clone()),
        Value::Array(items) => items.iter().for_each(|v| all_strings(v, out)),
        Value::Object(map) => {
            for (k, v) in map {
                out.push(k.clone());
                all_strings(v, out);
            }
        }
        _ => {}
    }
}

fn header_names_with_prefix(headers: &reqwest::header::HeaderMap, prefix: &str) -> Vec<String> {
    headers
        .keys()
        .map(|name| name.as_str().to_owned())
        .filter(|name| name.starts_with(prefix))
        .collect()
}

/// The value of the header `name` of `response`, which must have it.
fn header(response: &reqwest::Response, name: &str) -> String {
    response.headers()[name].to_str().unwrap().to_owned()
}

fn is_generated_ray_id(s: &str) -> bool {
    s.len() == 32
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

// ---------------------------------------------------------------------------------------------
// 1–3: what a request becomes
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn an_update_becomes_exactly_one_complete_record() {
    let app = spawn_app(|layer| layer).await;
    let body = serde_json::to_vec(&json!({
        "name": "On-call",
        "enabled": true,
        "mechanisms": {"email": [{"id": "ops@example.com"}]},
    }))
    .unwrap();
    let before = Timestamp::now();
    let response = app.put_json(POLICY_1, body.clone()).await;
    assert_eq!(response.status(), 200);
    let echo: Value = response.json().await.unwrap();
    let after = Timestamp::now();

    // The handler saw the very bytes the client sent, though the layer read them first.
    assert_eq!(echo["received_len"], json!(body.len()));
    assert_eq!(echo["received_fnv"], json!(fnv1a(&body).to_string()));
    assert_eq!(app.state.body_handler_calls.load(Ordering::SeqCst), 1);

    let records = exactly(&app.sink, 1).await;
    let record = &records[0];
    assert_eq!(
        record.id.get_version_num(),
        7,
        "id {} is not a UUIDv7",
        record.id
    );
    assert!(
        before <= record.action.time && record.action.time <= after,
        "action.time {} outside [{before}, {after}]",
        record.action.time
    );
    let json = serde_json::to_value(record).unwrap();
    let time = json["action"]["time"].as_str().unwrap();
    assert_eq!(time.len(), "2025-01-23T18:25:14.749Z".len(), "{time}");
    assert_eq!(&time[19..20], ".", "{time}");
    assert!(time[20..23].bytes().all(|b| b.is_ascii_digit()), "{time}");
    assert!(time.ends_with('Z'), "{time}");

    assert_eq!(json["action"]["type"], "update");
    assert_eq!(json["action"]["result"], "success");
    assert_eq!(json["action"]["description"], UPDATE_SUMMARY);
    assert_eq!(json["account"], json!({"id": "acc_1"}));
    assert_eq!(json.get("zone"), None);
    assert_eq!(json["resource"]["scope"], "accounts");
    assert_eq!(json["resource"]["product"], "alerting");
    assert_eq!(json["resource"]["type"], "policies");
    assert_eq!(json["resource"]["id"], "pol_1");
    // The redactor keeps nothing yet: a body was sent, none of it is auditable.
    assert_eq!(json["resource"]["request"], json!({}));
    assert_eq!(json["resource"]["response"], json!({}));
    assert_eq!(json["raw"]["method"], "PUT");
    assert_eq!(json["raw"]["status_code"], 200);
    assert_eq!(
        json["raw"]["uri"],
        "/accounts/acc_1/alerting/v3/policies/pol_1"
    );
    assert_eq!(json["raw"]["user_agent"], USER_AGENT);
    assert_eq!(
        json["actor"],
        json!({"ip_address": "127.0.0.1", "token": {}})
    );
}

#[tokio::test]
async fn a_read_is_a_view_without_bodies() {
    let app = spawn_app(|layer| layer).await;
    let response = app.get(POLICY_1).await;
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.json::<Value>().await.unwrap(),
        json!({"id": "pol_1", "name": "On-call"})
    );

    let json = only_record(&app.sink).await;
    assert_eq!(json["action"]["type"], "view");
    assert_eq!(json["action"]["result"], "success");
    assert_eq!(json["action"]["description"], "Get a Notification policy");
    assert_eq!(json["raw"]["method"], "GET");
    assert_eq!(json["raw"]["status_code"], 200);
    assert_eq!(json["resource"]["id"], "pol_1");
    assert_eq!(json["resource"].get("request"), None, "{json}");
    assert_eq!(json["resource"].get("response"), None, "{json}");
}

/// axum answers HEAD with the GET handler and throws the response body away unpolled; the
/// exchange is still complete and successful.
#[tokio::test]
async fn a_head_request_is_a_successful_view() {
    let app = spawn_app(|layer| layer).await;
    let response = app
        .send(Method::HEAD, "/zones/z_1/dns_records/rec_1", &[], None)
        .await;
    assert_eq!(response.status(), 200);
    assert!(response.bytes().await.unwrap().is_empty());

    let json = only_record(&app.sink).await;
    assert_eq!(json["raw"]["method"], "HEAD");
    assert_eq!(json["action"]["type"], "view");
    assert_eq!(json["action"]["result"], "success");
    assert_eq!(json["action"]["description"], "DNS Record Details");
    assert_eq!(json["raw"]["status_code"], 200);
}

#[tokio::test]
async fn client_errors_are_recorded_as_failures_with_their_status() {
    let app = spawn_app(|layer| layer).await;
    for (policy_id, status) in [("missing", 404), ("forbidden", 403)] {
        let response = app
            .get(&format!("/accounts/acc_1/alerting/v3/policies/{policy_id}"))
            .await;
        assert_eq!(response.status(), status);
        response.bytes().await.unwrap();
    }
    let records = exactly(&app.sink, 2).await;
    let outcomes: Vec<_> = records
        .iter()
        .map(|r| {
            (
                r.resource.id.clone().unwrap(),
                r.action.result.as_str(),
                r.raw.status_code.unwrap_or_default(),
            )
        })
        .collect();
    assert_eq!(
        outcomes,
        [
            ("missing".to_owned(), "failure", 404),
            ("forbidden".to_owned(), "failure", 403)
        ]
    );
}

// ---------------------------------------------------------------------------------------------
// 4: panics
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn a_panic_caught_inside_the_layer_is_a_500_failure() {
    let app = spawn_app_with(Mount::InRouterOverCatchPanic, |layer| layer).await;
    let response = app.get("/accounts/acc_1/crash").await;
    assert_eq!(response.status(), 500);
    let ray_id = header(&response, "x-request-id");
    response.bytes().await.unwrap();

    let json = only_record(&app.sink).await;
    assert_eq!(json["action"]["result"], "failure");
    assert_eq!(json["raw"]["status_code"], 500);
    assert_eq!(json["raw"]["cf_ray_id"], ray_id.as_str());
    assert_eq!(json["action"]["description"], "Crash");
}

/// The same panic, caught by a `CatchPanicLayer` applied after (outside) the audit layer: the
/// client gets a 500, and the record must say 500 too, not "client went away" (499).
#[tokio::test]
async fn a_panic_caught_outside_the_layer_is_recorded_as_a_500() {
    let app = spawn_app_with(Mount::InRouterUnderCatchPanic, |layer| layer).await;
    let response = app.get("/accounts/acc_1/crash").await;
    assert_eq!(response.status(), 500);
    response.bytes().await.unwrap();

    let json = only_record(&app.sink).await;
    assert_eq!(json["action"]["result"], "failure");
    assert_eq!(json["raw"]["status_code"], 500, "{json}");
}

#[tokio::test]
async fn an_uncaught_panic_drops_the_connection_and_is_still_recorded() {
    let app = spawn_app(|layer| layer).await;
    let err = app
        .try_send(Method::GET, "/accounts/acc_1/crash", &[], None)
        .await
        .unwrap_err();
    assert!(err.is_request() && !err.is_timeout(), "{err:?}");

    let json = only_record(&app.sink).await;
    assert_eq!(json["action"]["result"], "failure");
    assert_eq!(json["raw"]["status_code"], 500);
    assert_eq!(json["raw"]["uri"], "/accounts/acc_1/crash");
    assert_eq!(json["account"]["id"], "acc_1");

    // The server survives the panic.
    let response = app.get("/user").await;
    assert_eq!(response.status(), 200);
    exactly(&app.sink, 2).await;
}

// ---------------------------------------------------------------------------------------------
// 5: clients that go away
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn a_client_that_hangs_up_mid_request_body_is_recorded_once() {
    let app = spawn_app(|layer| layer).await;
    {
        let mut stream = TcpStream::connect(app.addr).await.unwrap();
        stream
            .write_all(
                b"PUT /accounts/acc_1/alerting/v3/policies/pol_1 HTTP/1.1\r\n\
                  Host: localhost\r\n\
                  Content-Type: application/json\r\n\
                  Content-Length: 1000\r\n\
                  \r\n\
                  {\"name\":\"half a bo",
            )
            .await
            .unwrap();
        stream.flush().await.unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        stream.shutdown().await.unwrap();
        // Dropped here: the connection is closed.
    }

    let json = only_record(&app.sink).await;
    assert_eq!(json["action"]["result"], "failure");
    assert_eq!(
        json["resource"]["request"],
        json!({"_truncated": "the request body ended before it was complete"})
    );
    // The layer answered the broken request with a 400 (as nginx logs a client that closed
    // while sending its body); nobody was left to read it.
    assert_eq!(json["raw"]["status_code"], 400, "{json}");
    assert_eq!(app.state.body_handler_calls.load(Ordering::SeqCst), 0);

    // The server keeps serving.
    let response = app.get(POLICY_1).await;
    assert_eq!(response.status(), 200);
    exactly(&app.sink, 2).await;
}

/// Opens a `DELETE` of rec_1 (whose handler takes 300 ms) and hangs up 50 ms later.
async fn hang_up_during_the_delete(app: &TestApp) {
    let mut stream = TcpStream::connect(app.addr).await.unwrap();
    stream
        .write_all(b"DELETE /zones/z_1/dns_records/rec_1 HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    // Dropped while the handler sleeps.
}

/// A client that leaves does not change what happened: the handler runs to its end on its
/// own, and the record has its status and result, marked `client_gone`.
#[tokio::test]
async fn a_client_that_hangs_up_during_a_slow_handler_gets_the_handlers_outcome() {
    let app = spawn_app(|layer| layer).await;
    hang_up_during_the_delete(&app).await;

    let json = only_record(&app.sink).await;
    assert_eq!(json["action"]["type"], "delete");
    assert_eq!(json["action"]["result"], "success");
    assert_eq!(json["raw"]["status_code"], 204);
    assert_eq!(json["raw"]["client_gone"], true);
    assert_eq!(json["zone"], json!({"id": "z_1"}));
    assert_eq!(json["resource"]["id"], "rec_1");
}

/// A handler still running at the detached timeout after its client left is dropped: it did
/// not complete, and only then is the record a `499` failure.
#[tokio::test]
async fn a_handler_that_outlives_the_detached_timeout_is_a_499() {
    let app = spawn_app(|layer| layer.detached_timeout(Duration::from_millis(100))).await;
    hang_up_during_the_delete(&app).await;

    let json = only_record(&app.sink).await;
    assert_eq!(json["action"]["type"], "delete");
    assert_eq!(json["action"]["result"], "failure");
    assert_eq!(json["raw"]["status_code"], 499);
    assert_eq!(json["resource"]["id"], "rec_1");
}

// ---------------------------------------------------------------------------------------------
// 6: bodies over the limit
// ---------------------------------------------------------------------------------------------

const OVER_LIMIT_MARKER: &str = "the request body exceeded the audit body limit of 1024 bytes";

/// A body over the limit was refused: no handler ran, and the one record is a failure with
/// status 413 whose request body is replaced by the marker.
async fn assert_refused_over_limit(app: &TestApp) {
    assert_eq!(app.state.body_handler_calls.load(Ordering::SeqCst), 0);
    let json = only_record(&app.sink).await;
    assert_eq!(json["action"]["result"], "failure");
    assert_eq!(json["raw"]["status_code"], 413);
    assert_eq!(
        json["resource"]["request"],
        json!({"_truncated": OVER_LIMIT_MARKER})
    );
}

#[tokio::test]
async fn a_declared_over_limit_body_is_refused_before_the_handler() {
    let app = spawn_app(|layer| layer.body_limit(1024)).await;
    let response = app.put_json(POLICY_1, vec![b' '; 2048]).await;
    assert_eq!(response.status(), 413);
    assert!(response.headers().contains_key("x-request-id"));
    assert_eq!(response.text().await.unwrap(), "request body too large");

    assert_refused_over_limit(&app).await;
}

/// The handler never ran, so there is no operation response to audit: the layer's own
/// refusal text must not be recorded as the operation's response body.
#[tokio::test]
async fn a_refused_request_records_no_response_body() {
    let app = spawn_app(|layer| layer.body_limit(1024)).await;
    let response = app.put_json(POLICY_1, vec![b' '; 2048]).await;
    assert_eq!(response.status(), 413);
    assert_eq!(
        response.headers()["content-type"],
        "text/plain; charset=utf-8"
    );
    response.bytes().await.unwrap();

    let json = only_record(&app.sink).await;
    assert_eq!(
        json["resource"]["request"],
        json!({"_truncated": OVER_LIMIT_MARKER})
    );
    assert_eq!(json["resource"].get("response"), None, "{json}");
}

#[tokio::test]
async fn a_body_exactly_at_the_limit_reaches_the_handler() {
    let app = spawn_app(|layer| layer.body_limit(1024)).await;
    let body = format!(r#"{{"name":"{}"}}"#, "x".repeat(1024 - 11)).into_bytes();
    assert_eq!(body.len(), 1024);
    let response = app.put_json(POLICY_1, body.clone()).await;
    assert_eq!(response.status(), 200);
    let echo: Value = response.json().await.unwrap();
    assert_eq!(echo["received_len"], 1024);
    assert_eq!(echo["received_fnv"], json!(fnv1a(&body).to_string()));
    let json = only_record(&app.sink).await;
    assert_eq!(json["action"]["result"], "success");
    assert_eq!(json["resource"]["request"], json!({}));
}

#[tokio::test]
async fn a_chunked_over_limit_body_is_refused_before_the_handler() {
    let app = spawn_app(|layer| layer.body_limit(1024)).await;
    let mut request = b"PUT /accounts/acc_1/alerting/v3/policies/pol_1 HTTP/1.1\r\n\
                        Host: localhost\r\n\
                        Content-Type: application/json\r\n\
                        Transfer-Encoding: chunked\r\n\
                        Connection: close\r\n\
                        \r\n"
        .to_vec();
    for _ in 0..3 {
        request.extend_from_slice(format!("{:x}\r\n", 700).as_bytes());
        request.extend_from_slice(&[b' '; 700]);
        request.extend_from_slice(b"\r\n");
    }
    request.extend_from_slice(b"0\r\n\r\n");

    let response = raw_exchange(app.addr, &request).await;
    assert!(response.starts_with("HTTP/1.1 413 "), "{response}");
    assert!(response.ends_with("request body too large"), "{response}");

    assert_refused_over_limit(&app).await;
}

// ---------------------------------------------------------------------------------------------
// 7: streaming responses
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn a_streamed_response_arrives_intact_and_is_recorded_at_its_end() {
    let app = spawn_app(|layer| layer).await;
    let mut response = app.get("/zones/z_1/exports/exp_1?hold=1").await;
    assert_eq!(response.status(), 200);

    let mut received = Vec::with_capacity(EXPORT_LEN);
    while received.len() < EXPORT_LEN - EXPORT_CHUNK {
        received.extend_from_slice(&response.chunk().await.unwrap().unwrap());
    }
    // All but the held last chunk arrived: the exchange is not over, so no record yet.
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(
        app.sink.records().is_empty(),
        "recorded before the body ended"
    );

    app.state.export_gate.add_permits(1);
    while let Some(chunk) = response.chunk().await.unwrap() {
        received.extend_from_slice(&chunk);
    }
    let expected: Vec<u8> = (0..EXPORT_CHUNKS)
        .flat_map(|i| export_chunk(i).to_vec())
        .collect();
    assert_eq!(received.len(), EXPORT_LEN);
    assert_eq!(fnv1a(&received), fnv1a(&expected));

    let json = only_record(&app.sink).await;
    assert_eq!(json["action"]["result"], "success");
    assert_eq!(json["raw"]["status_code"], 200);
    assert_eq!(json["raw"]["uri"], "/zones/z_1/exports/exp_1?hold=REDACTED");
    assert_eq!(json["resource"].get("response"), None);
}

/// The handler completed; its answer did not all reach the client: recorded with the
/// handler's outcome, marked `client_gone`.
#[tokio::test]
async fn a_client_that_drops_a_streamed_response_midway_is_marked_gone() {
    let app = spawn_app(|layer| layer).await;
    let mut response = app.get("/zones/z_1/exports/exp_1?pace_ms=5").await;
    assert_eq!(response.status(), 200);
    let mut received = 0;
    while received < 3 * EXPORT_CHUNK {
        received += response.chunk().await.unwrap().unwrap().len();
    }
    drop(response);

    let json = only_record(&app.sink).await;
    assert_eq!(json["action"]["result"], "success");
    assert_eq!(json["raw"]["status_code"], 200);
    assert_eq!(json["raw"]["client_gone"], true);
}

// ---------------------------------------------------------------------------------------------
// 8: who acted
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn the_actor_told_through_the_handle_is_recorded() {
    let app = spawn_app(|layer| layer).await;
    let response = app.get("/user").await;
    assert_eq!(response.status(), 200);
    assert_eq!(
        header_names_with_prefix(response.headers(), "x-audit-actor-"),
        Vec::<String>::new()
    );
    assert_eq!(response.text().await.unwrap(), "alice");

    let json = only_record(&app.sink).await;
    assert_eq!(
        json["actor"],
        json!({
            "id": "usr_alice",
            "email": "alice@example.com",
            "type": "user",
            "context": "dash",
            "ip_address": "127.0.0.1",
            "token": {},
        })
    );
}

#[tokio::test]
async fn the_actor_told_through_response_headers_is_recorded_and_the_headers_stripped() {
    let app = spawn_app(|layer| layer).await;
    let response = app.get("/accounts/acc_1/tokens/verify").await;
    assert_eq!(response.status(), 200);
    assert_eq!(
        header_names_with_prefix(response.headers(), "x-audit-"),
        Vec::<String>::new()
    );
    assert_eq!(response.headers()["x-served-by"], "token-service");
    assert_eq!(
        response.json::<Value>().await.unwrap(),
        json!({"status": "active"})
    );

    let json = only_record(&app.sink).await;
    assert_eq!(
        json["actor"],
        json!({
            "id": "usr_bob",
            "email": "bob@example.com",
            "type": "user",
            "context": "api_token",
            "ip_address": "127.0.0.1",
            "token_id": "tok_7",
            "token_name": "CI deploys",
            "token": {"id": "tok_7", "name": "CI deploys"},
        })
    );
    assert_eq!(json["account"]["id"], "acc_1");
}

// ---------------------------------------------------------------------------------------------
// 9: credentials
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn credentials_never_reach_a_record() {
    let app = spawn_app(|layer| layer).await;
    let response = app
        .send(
            Method::PUT,
            "/accounts/acc_1/alerting/v3/policies/pol_1?token=CANARY-q&api_key=CANARY-k",
            &[
                ("authorization", "Bearer CANARY-auth-7f3a"),
                ("cookie", "session=CANARY-cookie-91b2; theme=dark"),
                ("x-api-key", "CANARY-api-key"),
                ("x-auth-key", "CANARY-auth-key"),
                ("proxy-authorization", "Basic CANARY-proxy"),
                ("content-type", "application/json"),
            ],
            Some(r#"{"name":"On-call","secret":"CANARY-request-body"}"#.into()),
        )
        .await;
    assert_eq!(response.status(), 200);
    assert!(
        response.headers()["set-cookie"]
            .to_str()
            .unwrap()
            .contains("CANARY-set-cookie"),
        "the handler's Set-Cookie must still reach the client"
    );
    response.bytes().await.unwrap();

    let records = exactly(&app.sink, 1).await;
    for record in &records {
        let text = serde_json::to_string(record).unwrap();
        assert!(!text.contains("CANARY"), "a credential leaked into {text}");
    }
    assert_eq!(
        records[0].raw.uri.as_deref().unwrap_or_default(),
        "/accounts/acc_1/alerting/v3/policies/pol_1?REDACTED=REDACTED&REDACTED=REDACTED"
    );
}

// ---------------------------------------------------------------------------------------------
// 10: client IP
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn a_trusted_proxy_forwarded_for_is_the_client_ip() {
    let app = spawn_app(|layer| layer.trusted_proxies(["127.0.0.0/8".parse().unwrap()])).await;
    let response = app
        .send(
            Method::GET,
            "/user",
            &[("x-forwarded-for", "203.0.113.7")],
            None,
        )
        .await;
    assert_eq!(response.status(), 200);
    let json = only_record(&app.sink).await;
    assert_eq!(json["actor"]["ip_address"], "203.0.113.7");
}

/// The proxy appends to X-Forwarded-For and passes the client's own `Forwarded` on: the
/// client cannot name its address with it.
#[tokio::test]
async fn a_client_forwarded_header_behind_an_x_forwarded_for_proxy_is_not_read() {
    let app = spawn_app(|layer| layer.trusted_proxies(["127.0.0.0/8".parse().unwrap()])).await;
    let response = app
        .send(
            Method::GET,
            "/user",
            &[
                ("forwarded", "for=6.6.6.6"),
                ("x-forwarded-for", "203.0.113.7"),
            ],
            None,
        )
        .await;
    assert_eq!(response.status(), 200);
    let json = only_record(&app.sink).await;
    assert_eq!(json["actor"]["ip_address"], "203.0.113.7");
}

#[tokio::test]
async fn forwarding_headers_are_ignored_without_trusted_proxies() {
    let app = spawn_app(|layer| layer).await;
    let response = app
        .send(
            Method::GET,
            "/user",
            &[
                ("x-forwarded-for", "203.0.113.7"),
                ("forwarded", "for=198.51.100.9"),
            ],
            None,
        )
        .await;
    assert_eq!(response.status(), 200);
    let json = only_record(&app.sink).await;
    assert_eq!(json["actor"]["ip_address"], "127.0.0.1");
}

#[tokio::test]
async fn a_trusted_proxy_rfc7239_forwarded_ipv6_is_the_client_ip() {
    let app = spawn_app(|layer| {
        layer
            .trusted_proxies(["127.0.0.0/8".parse().unwrap()])
            .forwarding_header(audit_layer::ForwardingHeader::Forwarded)
    })
    .await;
    let response = app
        .send(
            Method::GET,
            "/user",
            &[
                ("forwarded", r#"for="[2001:db8::7]""#),
                ("x-forwarded-for", "203.0.113.7"),
            ],
            None,
        )
        .await;
    assert_eq!(response.status(), 200);
    let json = only_record(&app.sink).await;
    assert_eq!(json["actor"]["ip_address"], "2001:db8::7");
}

// ---------------------------------------------------------------------------------------------
// 11: request id
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn the_generated_request_id_is_echoed_and_is_the_ray_id() {
    let app = spawn_app(|layer| layer).await;
    let response = app.get("/user").await;
    assert_eq!(response.status(), 200);
    let echoed = header(&response, "x-request-id");
    assert!(is_generated_ray_id(&echoed), "{echoed}");
    let records = exactly(&app.sink, 1).await;
    assert_eq!(records[0].raw.cf_ray_id, echoed);
}

/// The test client on loopback, as a trusted proxy.
fn loopback_trusted(layer: AuditLayer) -> AuditLayer {
    layer.trusted_proxies(["127.0.0.0/8".parse().unwrap()])
}

#[tokio::test]
async fn a_well_formed_request_id_from_a_trusted_proxy_is_kept() {
    let app = spawn_app(loopback_trusted).await;
    let response = app
        .send(Method::GET, "/user", &[("x-request-id", "abc-123")], None)
        .await;
    assert_eq!(response.headers()["x-request-id"], "abc-123");
    let records = exactly(&app.sink, 1).await;
    assert_eq!(records[0].raw.cf_ray_id, "abc-123");
    assert_eq!(records[0].raw.client_request_id, None);
}

#[tokio::test]
async fn a_request_id_from_a_client_is_replaced_and_kept_apart() {
    let app = spawn_app(|layer| layer).await;
    let response = app
        .send(Method::GET, "/user", &[("x-request-id", "abc-123")], None)
        .await;
    let echoed = header(&response, "x-request-id");
    assert!(is_generated_ray_id(&echoed), "{echoed}");
    let records = exactly(&app.sink, 1).await;
    assert_eq!(records[0].raw.cf_ray_id, echoed);
    assert_eq!(records[0].raw.client_request_id.as_deref(), Some("abc-123"));
}

#[tokio::test]
async fn a_malformed_incoming_request_id_is_replaced() {
    let app = spawn_app(loopback_trusted).await;
    let too_long = "a".repeat(300);
    for bad in [too_long.as_str(), "abc 123", "abc/123"] {
        let response = app
            .send(Method::GET, "/user", &[("x-request-id", bad)], None)
            .await;
        let echoed = header(&response, "x-request-id");
        assert!(
            is_generated_ray_id(&echoed),
            "{bad:?} was echoed as {echoed:?}"
        );
        response.bytes().await.unwrap();
    }
    let records = exactly(&app.sink, 3).await;
    for record in &records {
        assert!(
            is_generated_ray_id(&record.raw.cf_ray_id),
            "{}",
            record.raw.cf_ray_id
        );
    }
}

#[tokio::test]
async fn a_custom_request_id_header_is_honoured() {
    let app = spawn_app(|layer| {
        loopback_trusted(layer).request_id_header(HeaderName::from_static("cf-ray"))
    })
    .await;
    let response = app
        .send(
            Method::GET,
            "/user",
            &[("cf-ray", "8f3a2b1c0d-SJC"), ("x-request-id", "ignored-1")],
            None,
        )
        .await;
    assert_eq!(response.headers()["cf-ray"], "8f3a2b1c0d-SJC");
    assert!(!response.headers().contains_key("x-request-id"));
    response.bytes().await.unwrap();

    let response = app.get("/user").await;
    let generated = header(&response, "cf-ray");
    assert!(is_generated_ray_id(&generated), "{generated}");
    response.bytes().await.unwrap();

    let records = exactly(&app.sink, 2).await;
    assert_eq!(records[0].raw.cf_ray_id, "8f3a2b1c0d-SJC");
    assert_eq!(records[1].raw.cf_ray_id, generated);
}

// ---------------------------------------------------------------------------------------------
// 12: control characters
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn control_characters_are_escaped_in_every_recorded_string() {
    let app = spawn_app(|layer| layer).await;
    // A tab, a UTF-8 C1 control (U+009B, CSI) and obs-text 0xff in the User-Agent; a raw C1
    // control and a percent-encoded ESC in the path and in an auditable query value.
    let request =
        b"GET /zones/z%1b1/dns_records/r\xc2\x9b9?name=%1b[31m\xc2\x85red&other=x HTTP/1.1\r\n\
                    Host: localhost\r\n\
                    User-Agent: evil\tagent\xc2\x9b[31m\xff\r\n\
                    Connection: close\r\n\
                    \r\n";
    let response = raw_exchange(app.addr, request).await;
    assert!(response.starts_with("HTTP/1.1 200 "), "{response}");

    let json = only_record(&app.sink).await;
    let mut strings = Vec::new();
    all_strings(&json, &mut strings);
    for s in &strings {
        assert!(
            !s.chars().any(char::is_control),
            "control character in {s:?}"
        );
    }
    assert_eq!(json["raw"]["user_agent"], r"evil\x09agent\u{9b}[31m\xff");
    assert_eq!(
        json["raw"]["uri"],
        r"/zones/z%1b1/dns_records/r\u{9b}9?name=%1b[31m\u{85}red&REDACTED=REDACTED"
    );
    assert_eq!(json["zone"]["id"], r"z\x1b1");
    assert_eq!(json["resource"]["id"], r"r\u{9b}9");
}

// ---------------------------------------------------------------------------------------------
// 13–15: which operations, named how
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn a_layer_around_the_router_names_resources_from_the_policy() {
    let app = spawn_app_with(Mount::AroundRouter, |layer| layer).await;
    let response = app.put_json(POLICY_1, r#"{"name":"On-call"}"#).await;
    assert_eq!(response.status(), 200);
    let ray_id = header(&response, "x-request-id");
    response.bytes().await.unwrap();

    let json = only_record(&app.sink).await;
    assert_eq!(json["action"]["type"], "update");
    assert_eq!(json["action"]["description"], UPDATE_SUMMARY);
    assert_eq!(json["resource"]["scope"], "accounts");
    assert_eq!(json["resource"]["product"], "alerting");
    assert_eq!(json["resource"]["type"], "policies");
    assert_eq!(json["resource"]["id"], "pol_1");
    assert_eq!(json["resource"]["request"], json!({}));
    assert_eq!(json["account"]["id"], "acc_1");
    assert_eq!(json["actor"]["ip_address"], "127.0.0.1");
    assert_eq!(json["raw"]["cf_ray_id"], ray_id.as_str());
    assert_eq!(app.state.body_handler_calls.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn an_undescribed_route_records_metadata_named_by_the_matched_path() {
    let app = spawn_app(|layer| layer).await;
    let response = app
        .send(
            Method::POST,
            "/accounts/acc_9/members",
            &[("content-type", "application/json")],
            Some(r#"{"email":"new@example.com","roles":["admin"]}"#.into()),
        )
        .await;
    assert_eq!(response.status(), 201);
    let echo: Value = response.json().await.unwrap();
    assert_eq!(echo["received_len"], 45);

    let json = only_record(&app.sink).await;
    assert_eq!(json["action"]["type"], "create");
    assert_eq!(json["action"]["result"], "success");
    assert_eq!(json["action"].get("description"), None);
    assert_eq!(json["account"]["id"], "acc_9");
    assert_eq!(json["resource"]["scope"], "accounts");
    assert_eq!(json["resource"]["product"], "members");
    assert_eq!(json["resource"]["type"], "members");
    assert_eq!(json["resource"].get("id"), None);
    assert_eq!(json["resource"].get("request"), None, "{json}");
    assert_eq!(json["resource"].get("response"), None, "{json}");
    assert_eq!(json["raw"]["status_code"], 201);
}

#[tokio::test]
async fn a_not_audited_operation_leaves_no_record() {
    let app = spawn_app(|layer| layer).await;
    let response = app.get("/healthz").await;
    assert_eq!(response.status(), 200);
    assert!(!response.headers().contains_key("x-request-id"));
    assert_eq!(response.text().await.unwrap(), "ok");

    let response = app.get("/zones/z_1/dns_records/rec_1").await;
    assert_eq!(response.status(), 200);
    response.bytes().await.unwrap();

    let records = exactly(&app.sink, 1).await;
    assert_eq!(
        records[0].raw.uri.as_deref(),
        Some("/zones/z_1/dns_records/rec_1")
    );
    assert_eq!(
        records[0].action.description.as_deref(),
        Some("DNS Record Details")
    );
}
