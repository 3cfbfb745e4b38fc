//! Service-level tests of the middleware: `ServiceBuilder` + `service_fn`, driven by hand, so
//! that every way an exchange can end is reached deterministically. End-to-end tests over a
//! real server live in the workspace's `tests/` crate.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode};
use http_body::Frame;
use http_body_util::{BodyExt, Empty, Full, StreamBody};
use serde_json::json;
use tower::{BoxError, Service, ServiceBuilder, ServiceExt, service_fn};

use crate::record::{ActionResult, ActionType, AuditRecord};
use crate::sink::MemorySink;
use crate::{AuditBody, AuditLayer, AuditPolicy, AuditRequestBody, Operation};

const POLICY_PATH: &str = "/accounts/acc_1/alerting/v3/policies/pol_1";
const WAIT: Duration = Duration::from_secs(5);

fn policy() -> AuditPolicy {
    let template = "/accounts/{account_id}/alerting/v3/policies/{policy_id}";
    AuditPolicy::builder()
        .operation(Operation::new(Method::PUT, template).summary("Update a Notification policy"))
        .operation(Operation::new(Method::GET, template).summary("Get a Notification policy"))
        .operation(Operation::new(Method::GET, "/healthz").not_audited())
        .build()
        .expect("valid policy")
}

fn layer(sink: &MemorySink) -> AuditLayer {
    AuditLayer::new(policy()).sink(sink.clone())
}

fn put(body: &'static str) -> Request<Full<Bytes>> {
    Request::put(POLICY_PATH)
        .header("content-type", "application/json")
        .header("user-agent", "Postman")
        .body(Full::new(Bytes::from_static(body.as_bytes())))
        .expect("valid request")
}

async fn only_record(sink: &MemorySink) -> AuditRecord {
    let mut records = sink.wait_for(1, WAIT).await;
    // Give a duplicate emission the chance to show up before asserting there is none.
    tokio::task::yield_now().await;
    assert_eq!(
        sink.len(),
        1,
        "exactly one record per request: {:#?}",
        sink.records()
    );
    records.remove(0)
}

/// An inner service that echoes the request body and counts its calls.
fn echo(
    calls: Arc<AtomicUsize>,
) -> impl Service<
    Request<AuditRequestBody<Full<Bytes>>>,
    Response = Response<Full<Bytes>>,
    Error = BoxError,
    Future = impl Send,
> + Clone {
    service_fn(move |req: Request<AuditRequestBody<Full<Bytes>>>| {
        let calls = Arc::clone(&calls);
        async move {
            calls.fetch_add(1, Ordering::SeqCst);
            let request_id = req.headers().get("x-request-id").cloned();
            let body = req.into_body().collect().await?.to_bytes();
            let mut response = Response::new(Full::new(body));
            response
                .headers_mut()
                .insert("content-type", HeaderValue::from_static("application/json"));
            if let Some(id) = request_id {
                response.headers_mut().insert("x-seen-request-id", id);
            }
            Ok::<_, BoxError>(response)
        }
    })
}

#[tokio::test]
async fn a_request_becomes_exactly_one_record_and_the_handler_sees_identical_bytes() {
    let sink = MemorySink::new();
    let calls = Arc::new(AtomicUsize::new(0));
    let svc = ServiceBuilder::new()
        .layer(layer(&sink))
        .service(echo(calls.clone()));
    let body = r#"{"name":"Advanced Security Events Alert","enabled":false}"#;

    let response = svc.oneshot(put(body)).await.expect("served");
    assert_eq!(response.status(), StatusCode::OK);
    let request_id = response.headers()["x-request-id"].clone();
    assert_eq!(response.headers()["x-seen-request-id"], request_id);
    let echoed = response
        .into_body()
        .collect()
        .await
        .expect("body")
        .to_bytes();
    assert_eq!(echoed, body.as_bytes());

    let record = only_record(&sink).await;
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    assert_eq!(record.raw.ray_id, request_id.to_str().expect("ascii"));
    assert_eq!(record.raw.method, "PUT");
    assert_eq!(record.raw.status_code, 200);
    assert_eq!(record.raw.uri, POLICY_PATH);
    assert_eq!(record.raw.user_agent.as_deref(), Some("Postman"));
    assert_eq!(record.action.kind, ActionType::Update);
    assert_eq!(record.action.result, ActionResult::Success);
    assert_eq!(
        record.action.description.as_deref(),
        Some("Update a Notification policy")
    );
    assert_eq!(record.account.map(|a| a.id).as_deref(), Some("acc_1"));
    assert_eq!(record.resource.id.as_deref(), Some("pol_1"));
    assert_eq!(record.resource.scope.as_deref(), Some("accounts"));
    assert_eq!(record.resource.product.as_deref(), Some("alerting"));
    assert_eq!(record.resource.kind.as_deref(), Some("policies"));
    assert_eq!(
        record.resource.request.as_ref().map(|b| b.to_value()),
        Some(json!({}))
    );
    assert_eq!(
        record.resource.response.as_ref().map(|b| b.to_value()),
        Some(json!({}))
    );
    assert_eq!(record.id.get_version_num(), 7);
}

#[tokio::test]
async fn views_carry_no_bodies() {
    let sink = MemorySink::new();
    let svc = ServiceBuilder::new()
        .layer(layer(&sink))
        .service(echo(Arc::default()));
    let req = Request::get(POLICY_PATH)
        .body(Full::new(Bytes::from_static(b"{\"sneaky\":1}")))
        .expect("valid request");
    let response = svc.oneshot(req).await.expect("served");
    response.into_body().collect().await.expect("body");
    let record = only_record(&sink).await;
    assert_eq!(record.action.kind, ActionType::View);
    assert_eq!(record.resource.request, None);
    assert_eq!(record.resource.response, None);
}

#[tokio::test]
async fn operations_not_audited_leave_no_record() {
    let sink = MemorySink::new();
    let mut svc = ServiceBuilder::new()
        .layer(layer(&sink))
        .service(echo(Arc::default()));
    let health = Request::get("/healthz")
        .body(Full::default())
        .expect("valid request");
    let response = svc
        .ready()
        .await
        .expect("ready")
        .call(health)
        .await
        .expect("served");
    assert!(!response.headers().contains_key("x-request-id"));
    response.into_body().collect().await.expect("body");
    let response = svc
        .ready()
        .await
        .expect("ready")
        .call(put("{}"))
        .await
        .expect("served");
    response.into_body().collect().await.expect("body");
    assert_eq!(only_record(&sink).await.raw.uri, POLICY_PATH);
}

#[tokio::test]
async fn a_client_gone_before_the_response_is_recorded_as_499() {
    let sink = MemorySink::new();
    let svc = ServiceBuilder::new()
        .layer(layer(&sink))
        .service(service_fn(
            |_req: Request<AuditRequestBody<Full<Bytes>>>| async {
                std::future::pending::<Result<Response<Empty<Bytes>>, Infallible>>().await
            },
        ));
    let call = svc.oneshot(put("{}"));
    assert!(
        tokio::time::timeout(Duration::from_millis(20), call)
            .await
            .is_err()
    );
    let record = only_record(&sink).await;
    assert_eq!(record.raw.status_code, 499);
    assert_eq!(record.action.result, ActionResult::Failure);
    assert_eq!(
        record.resource.request.as_ref().map(|b| b.to_value()),
        Some(json!({})),
        "the body had been read"
    );
}

#[tokio::test]
async fn a_handler_panic_is_recorded_as_a_500_failure() {
    let sink = MemorySink::new();
    let svc = ServiceBuilder::new()
        .layer(layer(&sink))
        .service(service_fn(
            |_req: Request<AuditRequestBody<Full<Bytes>>>| async {
                if true {
                    panic!("handler bug");
                }
                Ok::<_, Infallible>(Response::new(Empty::<Bytes>::new()))
            },
        ));
    let joined = tokio::spawn(svc.oneshot(put("{}"))).await;
    assert!(joined.expect_err("the panic propagates").is_panic());
    let record = only_record(&sink).await;
    assert_eq!(record.raw.status_code, 500);
    assert_eq!(record.action.result, ActionResult::Failure);
}

#[tokio::test]
async fn an_inner_service_error_is_recorded_and_passed_on() {
    let sink = MemorySink::new();
    let svc = ServiceBuilder::new()
        .layer(layer(&sink))
        .service(service_fn(
            |_req: Request<AuditRequestBody<Full<Bytes>>>| async {
                Err::<Response<Empty<Bytes>>, BoxError>("upstream refused".into())
            },
        ));
    let err = svc
        .oneshot(put("{}"))
        .await
        .expect_err("the error passes through");
    assert_eq!(err.to_string(), "upstream refused");
    let record = only_record(&sink).await;
    assert_eq!(
        (record.raw.status_code, record.action.result),
        (500, ActionResult::Failure)
    );
}

type Chunks = StreamBody<tokio_stream::wrappers::ReceiverStream<Result<Frame<Bytes>, Infallible>>>;

fn streaming_service(
    chunks: usize,
) -> impl Service<
    Request<AuditRequestBody<Full<Bytes>>>,
    Response = Response<Chunks>,
    Error = Infallible,
    Future = impl Send,
> + Clone {
    service_fn(
        move |_req: Request<AuditRequestBody<Full<Bytes>>>| async move {
            let (tx, rx) = tokio::sync::mpsc::channel(1);
            tokio::spawn(async move {
                for i in 0..chunks {
                    let chunk = Bytes::from(vec![b'a' + (i % 26) as u8; 64 * 1024]);
                    if tx.send(Ok(Frame::data(chunk))).await.is_err() {
                        return;
                    }
                }
                let mut trailers = HeaderMap::new();
                trailers.insert("x-checksum", HeaderValue::from_static("abc"));
                let _ = tx.send(Ok(Frame::trailers(trailers))).await;
            });
            Ok(Response::new(StreamBody::new(
                tokio_stream::wrappers::ReceiverStream::new(rx),
            )))
        },
    )
}

#[tokio::test]
async fn streaming_responses_pass_through_and_are_recorded_at_their_end() {
    let sink = MemorySink::new();
    let svc = ServiceBuilder::new()
        .layer(layer(&sink).body_limit(1024))
        .service(streaming_service(32));
    let response = svc.oneshot(put("{}")).await.expect("served");
    let mut body = response.into_body();
    let mut received = 0;
    let mut trailers = None;
    while let Some(frame) = body.frame().await {
        let frame = frame.expect("frame");
        if let Some(data) = frame.data_ref() {
            received += data.len();
            assert!(sink.is_empty(), "no record before the body ends");
        }
        if let Ok(t) = frame.into_trailers() {
            trailers = Some(t);
        }
    }
    assert_eq!(received, 32 * 64 * 1024);
    assert_eq!(
        trailers.expect("trailers pass through")["x-checksum"],
        "abc"
    );
    let record = only_record(&sink).await;
    assert_eq!(record.action.result, ActionResult::Success);
    assert_eq!(
        record.resource.response.as_ref().map(|b| b.to_value()),
        Some(
            json!({"_truncated": "the response body exceeded the audit body limit of 1024 bytes"})
        )
    );
}

#[tokio::test]
async fn a_response_dropped_mid_stream_is_a_failure() {
    let sink = MemorySink::new();
    let svc = ServiceBuilder::new()
        .layer(layer(&sink))
        .service(streaming_service(32));
    let response = svc.oneshot(put("{}")).await.expect("served");
    let mut body = response.into_body();
    body.frame().await.expect("a first frame").expect("ok");
    drop(body);
    let record = only_record(&sink).await;
    assert_eq!(record.raw.status_code, 200);
    assert_eq!(record.action.result, ActionResult::Failure);
    assert_eq!(
        record.resource.response.as_ref().map(|b| b.to_value()),
        Some(json!({"_truncated": "the response ended before it was complete"}))
    );
}

#[tokio::test]
async fn an_empty_response_is_complete_even_if_never_polled() {
    let sink = MemorySink::new();
    let svc = ServiceBuilder::new()
        .layer(layer(&sink))
        .service(service_fn(
            |_req: Request<AuditRequestBody<Full<Bytes>>>| async {
                let mut response = Response::new(Empty::<Bytes>::new());
                *response.status_mut() = StatusCode::NO_CONTENT;
                Ok::<_, Infallible>(response)
            },
        ));
    let response: Response<AuditBody<Empty<Bytes>>> = svc.oneshot(put("{}")).await.expect("served");
    drop(response);
    let record = only_record(&sink).await;
    assert_eq!(
        (record.raw.status_code, record.action.result),
        (204, ActionResult::Success)
    );
}

#[tokio::test]
async fn a_declared_body_over_the_limit_is_refused_without_running_the_handler() {
    let sink = MemorySink::new();
    let calls = Arc::new(AtomicUsize::new(0));
    let svc = ServiceBuilder::new()
        .layer(layer(&sink).body_limit(16))
        .service(echo(calls.clone()));
    let response = svc
        .oneshot(put(r#"{"name":"longer than sixteen bytes"}"#))
        .await
        .expect("served");
    assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert!(response.headers().contains_key("x-request-id"));
    let text = response
        .into_body()
        .collect()
        .await
        .expect("body")
        .to_bytes();
    assert_eq!(text, "request body too large");
    let record = only_record(&sink).await;
    assert_eq!(calls.load(Ordering::SeqCst), 0);
    assert_eq!(
        (record.raw.status_code, record.action.result),
        (413, ActionResult::Failure)
    );
    assert_eq!(
        record.resource.request.as_ref().map(|b| b.to_value()),
        Some(json!({"_truncated": "the request body exceeded the audit body limit of 16 bytes"}))
    );
}

#[tokio::test]
async fn a_streamed_body_over_the_limit_is_refused_as_it_arrives() {
    let sink = MemorySink::new();
    let calls = Arc::new(AtomicUsize::new(0));
    let calls_in = calls.clone();
    let svc = ServiceBuilder::new()
        .layer(layer(&sink).body_limit(100))
        .service(service_fn(
            move |_req: Request<AuditRequestBody<StreamBody<_>>>| {
                calls_in.fetch_add(1, Ordering::SeqCst);
                async { Ok::<_, Infallible>(Response::new(Empty::<Bytes>::new())) }
            },
        ));
    let chunks = (0..10).map(|_| Ok::<_, Infallible>(Frame::data(Bytes::from_static(&[b'x'; 30]))));
    let req = Request::put(POLICY_PATH)
        .body(StreamBody::new(tokio_stream::iter(chunks)))
        .expect("valid request");
    let response = svc.oneshot(req).await.expect("served");
    assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);
    drop(response);
    let record = only_record(&sink).await;
    assert_eq!(calls.load(Ordering::SeqCst), 0);
    assert_eq!(record.raw.status_code, 413);
}

#[tokio::test]
async fn a_body_that_fails_midway_is_recorded_as_truncated() {
    let sink = MemorySink::new();
    let svc = ServiceBuilder::new()
        .layer(layer(&sink))
        .service(service_fn(
            |_req: Request<AuditRequestBody<StreamBody<_>>>| async {
                unreachable!("the handler must not run without its body");
                #[allow(unreachable_code)]
                Ok::<_, Infallible>(Response::new(Empty::<Bytes>::new()))
            },
        ));
    let chunks: Vec<Result<Frame<Bytes>, std::io::Error>> = vec![
        Ok(Frame::data(Bytes::from_static(b"{\"na"))),
        Err(std::io::Error::new(
            std::io::ErrorKind::ConnectionReset,
            "peer reset",
        )),
    ];
    let req = Request::put(POLICY_PATH)
        .body(StreamBody::new(tokio_stream::iter(chunks)))
        .expect("valid request");
    let response = svc.oneshot(req).await.expect("served");
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    drop(response);
    let record = only_record(&sink).await;
    assert_eq!(record.action.result, ActionResult::Failure);
    assert_eq!(
        record.resource.request.as_ref().map(|b| b.to_value()),
        Some(json!({"_truncated": "the request body ended before it was complete"}))
    );
}

#[tokio::test]
async fn undescribed_requests_still_produce_a_metadata_record() {
    let sink = MemorySink::new();
    let svc = ServiceBuilder::new()
        .layer(layer(&sink))
        .service(echo(Arc::default()));
    let req = Request::post("/somewhere/else?secret=s3cr3t")
        .body(Full::new(Bytes::from_static(b"{\"password\":\"hunter2\"}")))
        .expect("valid request");
    let response = svc.oneshot(req).await.expect("served");
    let echoed = response
        .into_body()
        .collect()
        .await
        .expect("body")
        .to_bytes();
    assert_eq!(
        echoed, "{\"password\":\"hunter2\"}",
        "the body reaches the handler"
    );
    let record = only_record(&sink).await;
    assert_eq!(record.action.kind, ActionType::Create);
    assert_eq!(record.raw.uri, "/somewhere/else?secret=REDACTED");
    assert_eq!(record.resource.request, None);
    let json = serde_json::to_string(&record).expect("serializes");
    assert!(
        !json.contains("hunter2") && !json.contains("s3cr3t"),
        "{json}"
    );
}

#[tokio::test]
async fn the_client_address_is_a_socket_addr_the_server_put_in_the_extensions() {
    let sink = MemorySink::new();
    let svc = ServiceBuilder::new()
        .layer(layer(&sink))
        .service(echo(Arc::default()));
    let mut req = put("{}");
    req.extensions_mut()
        .insert(SocketAddr::from(([192, 0, 2, 7], 51000)));
    let response = svc.oneshot(req).await.expect("served");
    response.into_body().collect().await.expect("body");
    let record = only_record(&sink).await;
    assert_eq!(record.actor.ip_address, Some([192, 0, 2, 7].into()));
}

/// Inside an axum `Router`: described operations are found either way; a route the policy does
/// not describe is named by axum's `MatchedPath` with the `axum` feature, and not without it.
#[tokio::test]
async fn undescribed_routes_are_named_by_axum_with_the_axum_feature() {
    let sink = MemorySink::new();
    let ok = || async { "{}" };
    let app = axum::Router::new()
        .route("/zones/{zone_id}/dns_records", axum::routing::post(ok))
        .route(
            "/accounts/{account_id}/alerting/v3/policies/{policy_id}",
            axum::routing::put(ok),
        )
        .layer(layer(&sink));
    for req in [
        Request::post("/zones/z_1/dns_records").body(axum::body::Body::empty()),
        Request::put(POLICY_PATH).body(axum::body::Body::empty()),
    ] {
        let response = app.clone().oneshot(req.expect("request")).await;
        let Ok(response) = response;
        response.into_body().collect().await.expect("body");
    }
    let records = sink.wait_for(2, WAIT).await;
    let named = cfg!(feature = "axum");
    let undescribed = &records[0];
    assert_eq!(
        undescribed.zone.as_ref().map(|z| z.id.as_str()),
        named.then_some("z_1")
    );
    assert_eq!(
        undescribed.resource.scope.as_deref(),
        named.then_some("zones")
    );
    assert_eq!(
        undescribed.resource.kind.as_deref(),
        named.then_some("dns_records")
    );
    assert_eq!(
        records[1].action.description.as_deref(),
        Some("Update a Notification policy")
    );
}

/// A sink for strict mode: availability and commit outcomes set by the test.
#[derive(Clone, Default)]
struct CommitSink {
    records: MemorySink,
    unavailable: Arc<std::sync::atomic::AtomicBool>,
    fail: Arc<std::sync::atomic::AtomicBool>,
    release: Arc<tokio::sync::Notify>,
}

impl crate::AuditSink for CommitSink {
    fn submit(&self, record: AuditRecord) {
        crate::AuditSink::submit(&self.records, record);
    }

    fn submit_and_commit(&self, record: AuditRecord) -> crate::Commit {
        let this = self.clone();
        Box::pin(async move {
            this.release.notified().await;
            if this.fail.load(Ordering::SeqCst) {
                return Err(crate::NotCommitted::Dropped);
            }
            crate::AuditSink::submit(&this.records, record);
            Ok(())
        })
    }

    fn is_available(&self) -> bool {
        !self.unavailable.load(Ordering::SeqCst)
    }
}

#[tokio::test]
async fn strict_mode_releases_the_response_only_after_the_commit() {
    let sink = CommitSink::default();
    let svc = ServiceBuilder::new()
        .layer(AuditLayer::new(policy()).sink(sink.clone()).strict(true))
        .service(echo(Arc::default()));
    let call = tokio::spawn(svc.oneshot(put(r#"{"name":"x"}"#)));
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(!call.is_finished(), "the response waits for the commit");
    assert!(sink.records.is_empty());
    sink.release.notify_one();
    let response = call.await.expect("joined").expect("served");
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        sink.records.len(),
        1,
        "committed before the response was released"
    );
    let hint = http_body::Body::size_hint(response.body());
    assert_eq!(hint.exact(), Some(12), "a held body keeps its exact size");
    let body = response
        .into_body()
        .collect()
        .await
        .expect("body")
        .to_bytes();
    assert_eq!(body, r#"{"name":"x"}"#);
    let record = sink.records.records().remove(0);
    assert_eq!(
        record.resource.response.as_ref().map(|b| b.to_value()),
        Some(json!({}))
    );
}

#[tokio::test]
async fn strict_mode_fails_closed_before_the_handler_when_the_store_is_unavailable() {
    let sink = CommitSink::default();
    sink.unavailable.store(true, Ordering::SeqCst);
    let calls = Arc::new(AtomicUsize::new(0));
    let svc = ServiceBuilder::new()
        .layer(AuditLayer::new(policy()).sink(sink.clone()).strict(true))
        .service(echo(calls.clone()));
    let response = svc.oneshot(put("{}")).await.expect("served");
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    let text = response
        .into_body()
        .collect()
        .await
        .expect("body")
        .to_bytes();
    assert_eq!(text, "audit log unavailable");
    assert_eq!(calls.load(Ordering::SeqCst), 0, "no handler ran");
    let record = only_record(&sink.records).await;
    assert_eq!(
        (record.raw.status_code, record.action.result),
        (503, ActionResult::Failure)
    );
}

#[tokio::test]
async fn strict_mode_answers_503_when_the_commit_fails() {
    let sink = CommitSink::default();
    sink.fail.store(true, Ordering::SeqCst);
    let svc = ServiceBuilder::new()
        .layer(AuditLayer::new(policy()).sink(sink.clone()).strict(true))
        .service(echo(Arc::default()));
    let call = tokio::spawn(svc.oneshot(put("{}")));
    tokio::time::sleep(Duration::from_millis(20)).await;
    sink.release.notify_one();
    let response = call.await.expect("joined").expect("served");
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(response.headers().contains_key("x-request-id"));
}

#[tokio::test]
async fn strictness_is_set_per_operation_too() {
    let sink = CommitSink::default();
    sink.unavailable.store(true, Ordering::SeqCst);
    let template = "/accounts/{account_id}/alerting/v3/policies/{policy_id}";
    let policy = AuditPolicy::builder()
        .operation(Operation::new(Method::PUT, template).strict(true))
        .operation(Operation::new(Method::GET, template))
        .build()
        .expect("valid policy");
    let mut svc = ServiceBuilder::new()
        .layer(AuditLayer::new(policy).sink(sink.clone()))
        .service(echo(Arc::default()));
    let put_response = svc
        .ready()
        .await
        .expect("ready")
        .call(put("{}"))
        .await
        .expect("served");
    assert_eq!(put_response.status(), StatusCode::SERVICE_UNAVAILABLE);
    let get = Request::get(POLICY_PATH)
        .body(Full::default())
        .expect("request");
    let get_response = svc
        .ready()
        .await
        .expect("ready")
        .call(get)
        .await
        .expect("served");
    assert_eq!(
        get_response.status(),
        StatusCode::OK,
        "the GET is not strict"
    );
}

/// A sink that is full until the test opens it: `backpressure` hands out a wait on `open`.
#[derive(Clone, Default)]
struct FullSink {
    records: MemorySink,
    full: Arc<std::sync::atomic::AtomicBool>,
    open: Arc<tokio::sync::Notify>,
}

impl crate::AuditSink for FullSink {
    fn submit(&self, record: AuditRecord) {
        crate::AuditSink::submit(&self.records, record);
    }

    fn backpressure(&self) -> Option<crate::Backpressure> {
        if !self.full.load(Ordering::SeqCst) {
            return None;
        }
        let open = Arc::clone(&self.open);
        Some(Box::pin(async move { open.notified().await }))
    }
}

#[tokio::test]
async fn backpressure_holds_audited_requests_before_the_handler_runs() {
    let sink = FullSink::default();
    sink.full.store(true, Ordering::SeqCst);
    let calls = Arc::new(AtomicUsize::new(0));
    let svc = ServiceBuilder::new()
        .layer(AuditLayer::new(policy()).sink(sink.clone()))
        .service(echo(calls.clone()));

    // A body-recording PUT and a GET both wait; neither handler runs, nothing is recorded.
    let put_call = tokio::spawn(svc.clone().oneshot(put(r#"{"name":"x"}"#)));
    let get = Request::get(POLICY_PATH)
        .body(Full::default())
        .expect("request");
    let get_call = tokio::spawn(svc.clone().oneshot(get));
    // An unaudited operation never waits.
    let health = Request::get("/healthz")
        .body(Full::default())
        .expect("request");
    let response = tokio::time::timeout(WAIT, svc.clone().oneshot(health))
        .await
        .expect("the health check does not wait")
        .expect("served");
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(calls.load(Ordering::SeqCst), 1, "only the health check ran");
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(!put_call.is_finished() && !get_call.is_finished());
    assert_eq!(
        calls.load(Ordering::SeqCst),
        1,
        "held requests run no handler"
    );
    assert!(sink.records.is_empty());

    // Room again: both go on, are served in full and recorded.
    sink.full.store(false, Ordering::SeqCst);
    sink.open.notify_waiters();
    for call in [put_call, get_call] {
        let response = tokio::time::timeout(WAIT, call)
            .await
            .expect("released")
            .expect("joined")
            .expect("served");
        assert_eq!(response.status(), StatusCode::OK);
        response.into_body().collect().await.expect("body");
    }
    assert_eq!(calls.load(Ordering::SeqCst), 3);
    let records = sink.records.wait_for(2, WAIT).await;
    let put_record = records
        .iter()
        .find(|r| r.raw.method == "PUT")
        .expect("the PUT is recorded");
    assert_eq!(
        put_record.resource.request.as_ref().map(|b| b.to_value()),
        Some(json!({})),
        "the body read after the wait is captured (and redacted: nothing is marked)"
    );
}
