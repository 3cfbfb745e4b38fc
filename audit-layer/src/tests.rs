//! Service-level tests of the middleware: `ServiceBuilder` + `service_fn`, driven by hand, so
//! that every way an exchange can end is reached deterministically. End-to-end tests over a
//! real server live in the workspace's `tests/` crate.

use std::convert::Infallible;
use std::fmt::Debug;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode};
use http_body::Frame;
use http_body_util::{BodyExt, Empty, Full, StreamBody};
use serde_json::{Value, json};
use tokio::sync::Notify;
use tower::{BoxError, Service, ServiceBuilder, ServiceExt, service_fn};

use crate::record::{ActionResult, ActionType, AuditRecord};
use crate::sink::MemorySink;
use crate::{
    Audit, AuditBody, AuditLayer, AuditPolicy, AuditRequestBody, AuditSink, Backpressure, Commit,
    NotCommitted, Operation,
};

const TEMPLATE: &str = "/accounts/{account_id}/alerting/v3/policies/{policy_id}";
const POLICY_PATH: &str = "/accounts/acc_1/alerting/v3/policies/pol_1";
const WAIT: Duration = Duration::from_secs(5);

/// The request the inner services here receive.
type Req = Request<AuditRequestBody<Full<Bytes>>>;

fn policy() -> AuditPolicy {
    AuditPolicy::builder()
        .operation(Operation::new(Method::PUT, TEMPLATE).summary("Update a Notification policy"))
        .operation(Operation::new(Method::GET, TEMPLATE).summary("Get a Notification policy"))
        .operation(Operation::new(Method::GET, "/healthz").not_audited())
        .build()
        .expect("valid policy")
}

fn layer(sink: &MemorySink) -> AuditLayer {
    AuditLayer::new(policy()).sink(sink.clone())
}

/// `inner` behind `layer`, stacked as an app stacks them.
fn audited<S>(layer: AuditLayer, inner: S) -> Audit<S> {
    ServiceBuilder::new().layer(layer).service(inner)
}

fn put(body: &'static str) -> Request<Full<Bytes>> {
    Request::put(POLICY_PATH)
        .header("content-type", "application/json")
        .header("user-agent", "Postman")
        .body(Full::new(Bytes::from_static(body.as_bytes())))
        .expect("valid request")
}

fn get(path: &str) -> Request<Full<Bytes>> {
    Request::get(path)
        .body(Full::default())
        .expect("valid request")
}

/// Calls `svc` once it is ready, as a server does.
async fn serve<S, R>(svc: &mut S, req: R) -> S::Response
where
    S: Service<R>,
    S::Error: Debug,
{
    svc.ready()
        .await
        .expect("ready")
        .call(req)
        .await
        .expect("served")
}

/// The whole body of `response`.
async fn body_of<B>(response: Response<B>) -> Bytes
where
    B: http_body::Body,
    B::Error: Debug,
{
    response
        .into_body()
        .collect()
        .await
        .expect("body")
        .to_bytes()
}

fn recorded_request(record: &AuditRecord) -> Option<Value> {
    record.resource.request.as_ref().map(|b| b.to_value())
}

fn recorded_response(record: &AuditRecord) -> Option<Value> {
    record.resource.response.as_ref().map(|b| b.to_value())
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
) -> impl Service<Req, Response = Response<Full<Bytes>>, Error = BoxError, Future = impl Send> + Clone
{
    service_fn(move |req: Req| {
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
    let svc = audited(layer(&sink), echo(calls.clone()));
    let body = r#"{"name":"Advanced Security Events Alert","enabled":false}"#;

    let response = svc.oneshot(put(body)).await.expect("served");
    assert_eq!(response.status(), StatusCode::OK);
    let request_id = response.headers()["x-request-id"].clone();
    assert_eq!(response.headers()["x-seen-request-id"], request_id);
    assert_eq!(body_of(response).await, body.as_bytes());

    let record = only_record(&sink).await;
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    assert_eq!(record.raw.cf_ray_id, request_id.to_str().expect("ascii"));
    assert_eq!(record.raw.method.as_deref(), Some("PUT"));
    assert_eq!(record.raw.status_code, Some(200));
    assert_eq!(record.raw.uri.as_deref(), Some(POLICY_PATH));
    assert_eq!(record.raw.user_agent.as_deref(), Some("Postman"));
    assert_eq!(record.action.kind, ActionType::Update);
    assert_eq!(record.action.result, ActionResult::Success);
    assert_eq!(
        record.action.description.as_deref(),
        Some("Update a Notification policy")
    );
    assert_eq!(
        record.account.as_ref().map(|a| a.id.as_str()),
        Some("acc_1")
    );
    assert_eq!(record.resource.id.as_deref(), Some("pol_1"));
    assert_eq!(record.resource.scope.as_deref(), Some("accounts"));
    assert_eq!(record.resource.product.as_deref(), Some("alerting"));
    assert_eq!(record.resource.kind.as_deref(), Some("policies"));
    assert_eq!(recorded_request(&record), Some(json!({})));
    assert_eq!(recorded_response(&record), Some(json!({})));
    assert_eq!(record.id.get_version_num(), 7);
}

#[tokio::test]
async fn views_carry_no_bodies() {
    let sink = MemorySink::new();
    let svc = audited(layer(&sink), echo(Arc::default()));
    let req = Request::get(POLICY_PATH)
        .body(Full::new(Bytes::from_static(b"{\"sneaky\":1}")))
        .expect("valid request");
    body_of(svc.oneshot(req).await.expect("served")).await;
    let record = only_record(&sink).await;
    assert_eq!(record.action.kind, ActionType::View);
    assert_eq!(record.resource.request, None);
    assert_eq!(record.resource.response, None);
}

#[tokio::test]
async fn operations_not_audited_leave_no_record() {
    let sink = MemorySink::new();
    let mut svc = audited(layer(&sink), echo(Arc::default()));
    let response = serve(&mut svc, get("/healthz")).await;
    assert!(!response.headers().contains_key("x-request-id"));
    body_of(response).await;
    body_of(serve(&mut svc, put("{}")).await).await;
    assert_eq!(
        only_record(&sink).await.raw.uri.as_deref(),
        Some(POLICY_PATH)
    );
}

#[tokio::test]
async fn a_handler_still_running_when_its_detached_time_is_up_is_recorded_as_499() {
    let sink = MemorySink::new();
    let svc = audited(
        layer(&sink).detached_timeout(Duration::from_millis(50)),
        service_fn(|_req: Req| async {
            std::future::pending::<Result<Response<Empty<Bytes>>, Infallible>>().await
        }),
    );
    let call = svc.oneshot(put("{}"));
    assert!(
        tokio::time::timeout(Duration::from_millis(20), call)
            .await
            .is_err()
    );
    let record = only_record(&sink).await;
    assert_eq!(record.raw.status_code, Some(499));
    assert_eq!(record.action.result, ActionResult::Failure);
    assert!(!record.raw.client_gone, "a handler that did not complete");
    assert_eq!(
        recorded_request(&record),
        Some(json!({})),
        "the body had been read"
    );
}

#[tokio::test]
async fn a_handler_whose_client_left_finishes_and_is_recorded_with_its_outcome() {
    let sink = MemorySink::new();
    let release = Arc::new(Notify::new());
    let changed = Arc::new(AtomicBool::new(false));
    let svc = audited(
        layer(&sink),
        service_fn({
            let (release, changed) = (Arc::clone(&release), Arc::clone(&changed));
            move |_req: Req| {
                let (release, changed) = (Arc::clone(&release), Arc::clone(&changed));
                async move {
                    release.notified().await;
                    changed.store(true, Ordering::SeqCst);
                    let mut response = Response::new(Full::new(Bytes::from_static(b"{}")));
                    response
                        .headers_mut()
                        .insert("content-type", HeaderValue::from_static("application/json"));
                    Ok::<_, Infallible>(response)
                }
            }
        }),
    );
    // The server drops the response future when the client goes away.
    let call = svc.oneshot(put(r#"{"name":"x"}"#));
    assert!(
        tokio::time::timeout(Duration::from_millis(20), call)
            .await
            .is_err()
    );
    assert!(sink.is_empty(), "no record while the handler runs on");
    release.notify_one();
    let record = only_record(&sink).await;
    assert!(changed.load(Ordering::SeqCst), "the handler ran to its end");
    assert_eq!(
        (record.raw.status_code, record.action.result),
        (Some(200), ActionResult::Success)
    );
    assert!(record.raw.client_gone);
}

#[tokio::test]
async fn an_unaudited_handler_whose_client_left_is_dropped_not_finished() {
    let sink = MemorySink::new();
    let ran_to_end = Arc::new(AtomicBool::new(false));
    let svc = audited(
        layer(&sink),
        service_fn({
            let ran_to_end = Arc::clone(&ran_to_end);
            move |_req: Req| {
                let ran_to_end = Arc::clone(&ran_to_end);
                async move {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    ran_to_end.store(true, Ordering::SeqCst);
                    Ok::<_, Infallible>(Response::new(Empty::<Bytes>::new()))
                }
            }
        }),
    );
    // `/healthz` is not audited: nothing to finish for a record, and no work to multiply by
    // asking and leaving.
    let call = svc.oneshot(get("/healthz"));
    assert!(
        tokio::time::timeout(Duration::from_millis(10), call)
            .await
            .is_err()
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!ran_to_end.load(Ordering::SeqCst));
    assert!(sink.is_empty());
}

#[tokio::test]
async fn a_handler_that_panicked_is_not_polled_again_when_its_future_is_dropped() {
    let sink = MemorySink::new();
    let polls = Arc::new(AtomicUsize::new(0));
    let svc = audited(
        layer(&sink),
        service_fn({
            let polls = Arc::clone(&polls);
            move |_req: Req| {
                let polls = Arc::clone(&polls);
                std::future::poll_fn(move |_| {
                    polls.fetch_add(1, Ordering::SeqCst);
                    panic!("handler bug");
                    #[allow(unreachable_code)]
                    std::task::Poll::Ready(Ok::<_, Infallible>(
                        Response::new(Empty::<Bytes>::new()),
                    ))
                })
            }
        }),
    );
    // As a panic-catching layer outside does: the panic is caught, then the future dropped.
    let mut call = Box::pin(svc.oneshot(put("{}")));
    let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let waker = std::task::Waker::noop();
        let mut cx = std::task::Context::from_waker(waker);
        for _ in 0..100 {
            if call.as_mut().poll(&mut cx).is_ready() {
                break;
            }
        }
    }));
    assert!(caught.is_err(), "the handler panicked");
    drop(call);
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(polls.load(Ordering::SeqCst), 1, "polled once, never again");
}

#[tokio::test]
async fn the_flush_handle_waits_for_handlers_whose_clients_left() {
    let sink = MemorySink::new();
    let layer = layer(&sink);
    let flush = layer.flush_handle();
    let svc = audited(
        layer,
        service_fn(|_req: Req| async {
            tokio::time::sleep(Duration::from_millis(100)).await;
            Ok::<_, Infallible>(Response::new(Empty::<Bytes>::new()))
        }),
    );
    let call = svc.oneshot(put("{}"));
    assert!(
        tokio::time::timeout(Duration::from_millis(10), call)
            .await
            .is_err()
    );
    assert!(sink.is_empty());
    let flushed = flush.flush(WAIT).await;
    assert_eq!(flushed.handlers_still_running, 0);
    assert_eq!(sink.len(), 1, "recorded before flush returned");
    assert!(sink.records()[0].raw.client_gone);
}

#[tokio::test]
async fn a_handler_panic_is_recorded_as_a_500_failure() {
    let sink = MemorySink::new();
    let svc = audited(
        layer(&sink),
        service_fn(|_req: Req| async {
            if true {
                panic!("handler bug");
            }
            Ok::<_, Infallible>(Response::new(Empty::<Bytes>::new()))
        }),
    );
    let joined = tokio::spawn(svc.oneshot(put("{}"))).await;
    assert!(joined.expect_err("the panic propagates").is_panic());
    let record = only_record(&sink).await;
    assert_eq!(record.raw.status_code, Some(500));
    assert_eq!(record.action.result, ActionResult::Failure);
}

#[tokio::test]
async fn an_inner_service_error_is_recorded_and_passed_on() {
    let sink = MemorySink::new();
    let svc = audited(
        layer(&sink),
        service_fn(|_req: Req| async {
            Err::<Response<Empty<Bytes>>, BoxError>("upstream refused".into())
        }),
    );
    let err = svc
        .oneshot(put("{}"))
        .await
        .expect_err("the error passes through");
    assert_eq!(err.to_string(), "upstream refused");
    let record = only_record(&sink).await;
    assert_eq!(
        (record.raw.status_code, record.action.result),
        (Some(500), ActionResult::Failure)
    );
}

type Chunks = StreamBody<tokio_stream::wrappers::ReceiverStream<Result<Frame<Bytes>, Infallible>>>;

fn streaming_service(
    chunks: usize,
) -> impl Service<Req, Response = Response<Chunks>, Error = Infallible, Future = impl Send> + Clone
{
    service_fn(move |_req: Req| async move {
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
    })
}

#[tokio::test]
async fn streaming_responses_pass_through_and_are_recorded_at_their_end() {
    let sink = MemorySink::new();
    let svc = audited(layer(&sink).body_limit(1024), streaming_service(32));
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
        recorded_response(&record),
        Some(
            json!({"_truncated": "the response body exceeded the audit body limit of 1024 bytes"})
        )
    );
}

#[tokio::test]
async fn a_response_dropped_mid_stream_keeps_the_handlers_outcome_marked_client_gone() {
    let sink = MemorySink::new();
    let svc = audited(layer(&sink), streaming_service(32));
    let response = svc.oneshot(put("{}")).await.expect("served");
    let mut body = response.into_body();
    body.frame().await.expect("a first frame").expect("ok");
    drop(body);
    let record = only_record(&sink).await;
    assert_eq!(record.raw.status_code, Some(200));
    assert_eq!(record.action.result, ActionResult::Success);
    assert!(record.raw.client_gone);
    assert_eq!(
        recorded_response(&record),
        Some(json!({"_truncated": "the response ended before it was complete"}))
    );
}

#[tokio::test]
async fn an_empty_response_is_complete_even_if_never_polled() {
    let sink = MemorySink::new();
    let svc = audited(
        layer(&sink),
        service_fn(|_req: Req| async {
            let mut response = Response::new(Empty::<Bytes>::new());
            *response.status_mut() = StatusCode::NO_CONTENT;
            Ok::<_, Infallible>(response)
        }),
    );
    let response: Response<AuditBody<Empty<Bytes>>> = svc.oneshot(put("{}")).await.expect("served");
    drop(response);
    let record = only_record(&sink).await;
    assert_eq!(
        (record.raw.status_code, record.action.result),
        (Some(204), ActionResult::Success)
    );
}

#[tokio::test]
async fn a_declared_body_over_the_limit_is_refused_without_running_the_handler() {
    let sink = MemorySink::new();
    let calls = Arc::new(AtomicUsize::new(0));
    let svc = audited(layer(&sink).body_limit(16), echo(calls.clone()));
    let response = svc
        .oneshot(put(r#"{"name":"longer than sixteen bytes"}"#))
        .await
        .expect("served");
    assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert!(response.headers().contains_key("x-request-id"));
    assert_eq!(body_of(response).await, "request body too large");
    let record = only_record(&sink).await;
    assert_eq!(calls.load(Ordering::SeqCst), 0);
    assert_eq!(
        (record.raw.status_code, record.action.result),
        (Some(413), ActionResult::Failure)
    );
    assert_eq!(
        recorded_request(&record),
        Some(json!({"_truncated": "the request body exceeded the audit body limit of 16 bytes"}))
    );
}

#[tokio::test]
async fn a_streamed_body_over_the_limit_is_refused_as_it_arrives() {
    let sink = MemorySink::new();
    let calls = Arc::new(AtomicUsize::new(0));
    let calls_in = calls.clone();
    let svc = audited(
        layer(&sink).body_limit(100),
        service_fn(move |_req: Request<AuditRequestBody<StreamBody<_>>>| {
            calls_in.fetch_add(1, Ordering::SeqCst);
            async { Ok::<_, Infallible>(Response::new(Empty::<Bytes>::new())) }
        }),
    );
    let chunks = (0..10).map(|_| Ok::<_, Infallible>(Frame::data(Bytes::from_static(&[b'x'; 30]))));
    let req = Request::put(POLICY_PATH)
        .body(StreamBody::new(tokio_stream::iter(chunks)))
        .expect("valid request");
    let response = svc.oneshot(req).await.expect("served");
    assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);
    drop(response);
    let record = only_record(&sink).await;
    assert_eq!(calls.load(Ordering::SeqCst), 0);
    assert_eq!(record.raw.status_code, Some(413));
}

#[tokio::test]
async fn a_body_that_fails_midway_is_recorded_as_truncated() {
    let sink = MemorySink::new();
    let svc = audited(
        layer(&sink),
        service_fn(|_req: Request<AuditRequestBody<StreamBody<_>>>| async {
            unreachable!("the handler must not run without its body");
            #[allow(unreachable_code)]
            Ok::<_, Infallible>(Response::new(Empty::<Bytes>::new()))
        }),
    );
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
        recorded_request(&record),
        Some(json!({"_truncated": "the request body ended before it was complete"}))
    );
}

type ChunkSender = tokio::sync::mpsc::Sender<Result<Frame<Bytes>, Infallible>>;

/// A request declaring 100 bytes of body, which the test sends chunk by chunk.
fn put_streamed() -> (ChunkSender, Request<Chunks>) {
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    let body = StreamBody::new(tokio_stream::wrappers::ReceiverStream::new(rx));
    let req = Request::put(POLICY_PATH)
        .header("content-length", "200")
        .body(body)
        .expect("valid request");
    (tx, req)
}

#[tokio::test]
async fn a_body_that_stalls_before_its_end_is_answered_408_and_recorded() {
    let sink = MemorySink::new();
    let calls = Arc::new(AtomicUsize::new(0));
    let calls_in = Arc::clone(&calls);
    let svc = audited(
        layer(&sink).body_read_timeout(Duration::from_millis(100)),
        service_fn(move |_req: Request<AuditRequestBody<StreamBody<_>>>| {
            calls_in.fetch_add(1, Ordering::SeqCst);
            async { Ok::<_, Infallible>(Response::new(Empty::<Bytes>::new())) }
        }),
    );
    let (tx, req) = put_streamed();
    tx.send(Ok(Frame::data(Bytes::from_static(&[b' '; 99]))))
        .await
        .expect("sent");
    let response = svc.oneshot(req).await.expect("served");
    assert_eq!(response.status(), StatusCode::REQUEST_TIMEOUT);
    assert_eq!(body_of(response).await, "request body timed out");
    let record = only_record(&sink).await;
    assert_eq!(calls.load(Ordering::SeqCst), 0);
    assert_eq!(
        (record.raw.status_code, record.action.result),
        (Some(408), ActionResult::Failure)
    );
    assert_eq!(
        recorded_request(&record),
        Some(
            json!({"_truncated": "the request body did not arrive within the audit read timeout of 100 ms"})
        )
    );
    drop(tx);
}

#[tokio::test]
async fn bodies_beyond_the_shared_budget_are_answered_503_and_recorded() {
    let sink = MemorySink::new();
    let svc = audited(
        layer(&sink).body_budget(250),
        service_fn(|_req: Request<AuditRequestBody<StreamBody<_>>>| async {
            Ok::<_, Infallible>(Response::new(Empty::<Bytes>::new()))
        }),
    );
    // The first body holds 100 of the 250 bytes (what it sent of the 200 it declared) while
    // it waits for its end; the second sends 160.
    let (first_tx, first) = put_streamed();
    let first = tokio::spawn(svc.clone().oneshot(first));
    first_tx
        .send(Ok(Frame::data(Bytes::from_static(&[b' '; 100]))))
        .await
        .expect("sent");
    tokio::time::sleep(Duration::from_millis(20)).await;
    let (second_tx, second) = put_streamed();
    second_tx
        .send(Ok(Frame::data(Bytes::from_static(&[b' '; 160]))))
        .await
        .expect("sent");
    let response = svc.clone().oneshot(second).await.expect("served");
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(response.headers()["retry-after"], "1");
    drop(response);
    let record = only_record(&sink).await;
    assert_eq!(
        (record.raw.status_code, record.action.result),
        (Some(503), ActionResult::Failure)
    );
    assert!(
        !record.raw.client_gone,
        "no handler ran: nothing went on alone"
    );
    assert_eq!(
        recorded_request(&record),
        Some(
            json!({"_truncated": "the request body was not read whole: the audit budget of 250 bytes for bodies read ahead of handlers was spent"})
        )
    );
    // Once the first body arrives, its bytes go back to the budget.
    first_tx
        .send(Ok(Frame::data(Bytes::from_static(&[b' '; 100]))))
        .await
        .expect("sent");
    drop(first_tx);
    let response = first.await.expect("joined").expect("served");
    assert_eq!(response.status(), StatusCode::OK);
    drop(response);
    let (third_tx, third) = put_streamed();
    for _ in 0..2 {
        third_tx
            .send(Ok(Frame::data(Bytes::from_static(&[b' '; 100]))))
            .await
            .expect("sent");
    }
    drop(third_tx);
    let response = svc.oneshot(third).await.expect("served");
    assert_eq!(response.status(), StatusCode::OK, "the budget was returned");
}

#[tokio::test]
async fn an_upload_of_a_media_type_not_recorded_streams_to_the_handler_whatever_its_size() {
    let document = json!({
        "openapi": "3.1.0",
        "info": {"title": "t", "version": "1"},
        "paths": {"/accounts/{account_id}/files": {"post": {
            "summary": "Upload a file",
            "requestBody": {"content": {
                "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
                "application/json": {"schema": {"type": "object", "properties": {
                    "name": {"type": "string", "x-auditable": true}}}}
            }},
            "responses": {"200": {"description": "ok"}}
        }}}
    });
    let served = |sink: &MemorySink| {
        let policy = crate::spec::OpenApiDocument::from_value(document.clone())
            .compile()
            .expect("valid document");
        audited(
            AuditLayer::new(policy).sink(sink.clone()).body_limit(1024),
            echo(Arc::default()),
        )
    };
    let sink = MemorySink::new();
    let svc = served(&sink);
    // Twice the body limit: read ahead it would be refused 413.
    let upload = Bytes::from(vec![7u8; 2048]);
    let req = Request::post("/accounts/acc_1/files")
        .header("content-type", "application/octet-stream")
        .header("content-length", "2048")
        .body(Full::new(upload.clone()))
        .expect("valid request");
    let response = svc.oneshot(req).await.expect("served");
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        response
            .into_body()
            .collect()
            .await
            .expect("body")
            .to_bytes(),
        upload,
        "the handler got the whole upload"
    );
    let record = only_record(&sink).await;
    assert_eq!(
        recorded_request(&record),
        Some(json!({"_unparsed": "bodies of this content type are not recorded"}))
    );
    // A JSON body of the same operation is still read and redacted.
    let sink = MemorySink::new();
    let svc = served(&sink);
    let req = Request::post("/accounts/acc_1/files")
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from_static(
            br#"{"name":"a","secret":"s"}"#,
        )))
        .expect("valid request");
    let response = svc.oneshot(req).await.expect("served");
    assert_eq!(response.status(), StatusCode::OK);
    drop(response);
    let record = only_record(&sink).await;
    assert_eq!(recorded_request(&record), Some(json!({"name": "a"})));
}

#[tokio::test]
async fn undescribed_requests_still_produce_a_metadata_record() {
    let sink = MemorySink::new();
    let svc = audited(layer(&sink), echo(Arc::default()));
    let req = Request::post("/somewhere/else?secret=s3cr3t")
        .body(Full::new(Bytes::from_static(b"{\"password\":\"hunter2\"}")))
        .expect("valid request");
    let echoed = body_of(svc.oneshot(req).await.expect("served")).await;
    assert_eq!(
        echoed, "{\"password\":\"hunter2\"}",
        "the body reaches the handler"
    );
    let record = only_record(&sink).await;
    assert_eq!(record.action.kind, ActionType::Create);
    assert_eq!(
        record.raw.uri.as_deref(),
        Some("/somewhere/else?REDACTED=REDACTED")
    );
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
    let svc = audited(layer(&sink), echo(Arc::default()));
    let mut req = put("{}");
    req.extensions_mut()
        .insert(SocketAddr::from(([192, 0, 2, 7], 51000)));
    body_of(svc.oneshot(req).await.expect("served")).await;
    let record = only_record(&sink).await;
    assert_eq!(record.actor.ip_address, Some([192, 0, 2, 7].into()));
}

/// Inside an axum `Router`: described operations are found either way; a route the policy does
/// not describe is named by axum's `MatchedPath` with the `axum` feature, and not without it.
#[tokio::test]
async fn undescribed_routes_are_named_by_axum_with_the_axum_feature() {
    let sink = MemorySink::new();
    let ok = || async { "{}" };
    let mut app = axum::Router::new()
        .route("/zones/{zone_id}/dns_records", axum::routing::post(ok))
        .route(TEMPLATE, axum::routing::put(ok))
        .layer(layer(&sink));
    for req in [
        Request::post("/zones/z_1/dns_records"),
        Request::put(POLICY_PATH),
    ] {
        let req = req.body(axum::body::Body::empty()).expect("valid request");
        body_of(serve(&mut app, req).await).await;
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
    unavailable: Arc<AtomicBool>,
    fail: Arc<AtomicBool>,
    release: Arc<Notify>,
}

impl AuditSink for CommitSink {
    fn submit(&self, record: AuditRecord) {
        self.records.submit(record);
    }

    fn submit_and_commit(&self, record: AuditRecord) -> Commit {
        let this = self.clone();
        Box::pin(async move {
            this.release.notified().await;
            if this.fail.load(Ordering::SeqCst) {
                return Err(NotCommitted::Dropped);
            }
            this.records.submit(record);
            Ok(())
        })
    }

    fn is_available(&self) -> bool {
        !self.unavailable.load(Ordering::SeqCst)
    }
}

/// The test policy's operations, all strict, recorded into `sink`.
fn strict_layer(sink: &CommitSink) -> AuditLayer {
    AuditLayer::new(policy()).sink(sink.clone()).strict(true)
}

#[tokio::test]
async fn strict_mode_releases_the_response_only_after_the_commit() {
    let sink = CommitSink::default();
    let svc = audited(strict_layer(&sink), echo(Arc::default()));
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
    assert_eq!(body_of(response).await, r#"{"name":"x"}"#);
    let record = sink.records.records().remove(0);
    assert_eq!(recorded_response(&record), Some(json!({})));
}

/// A download of 64 MiB in 64 KiB frames, then a stream that never ends (an SSE feed).
struct Download {
    frames_left: usize,
}

impl http_body::Body for Download {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        if self.frames_left == 0 {
            return std::task::Poll::Pending;
        }
        self.frames_left -= 1;
        std::task::Poll::Ready(Some(Ok(Frame::data(Bytes::from(vec![b'x'; 64 * 1024])))))
    }
}

#[tokio::test]
async fn strict_mode_releases_a_response_whose_body_it_does_not_record_at_once() {
    let sink = CommitSink::default();
    sink.release.notify_one();
    let download = service_fn(|_: Req| async {
        Ok::<_, BoxError>(Response::new(Download { frames_left: 1024 }))
    });
    let svc = audited(strict_layer(&sink), download);
    // A view's response body is not recorded: nothing of it is read before the commit.
    let response = tokio::time::timeout(WAIT, svc.oneshot(get(POLICY_PATH)))
        .await
        .expect("the response is released without reading its body")
        .expect("served");
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(sink.records.len(), 1, "committed before the release");
    let mut body = response.into_body();
    let frame = body.frame().await.expect("a frame").expect("data");
    assert_eq!(frame.data_ref().map(Bytes::len), Some(64 * 1024));
}

/// A response body that yields one frame and then fails.
struct Failing {
    sent: bool,
}

impl http_body::Body for Failing {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
        if self.sent {
            return std::task::Poll::Ready(Some(Err(std::io::Error::other("backend gone"))));
        }
        self.sent = true;
        std::task::Poll::Ready(Some(Ok(Frame::data(Bytes::from_static(b"{\"name\":")))))
    }
}

#[tokio::test]
async fn strict_mode_answers_500_for_a_held_body_that_fails_rather_than_cut_it_short() {
    let sink = CommitSink::default();
    sink.release.notify_one();
    let failing = service_fn(|_: Req| async {
        let mut response = Response::new(Failing { sent: false });
        response
            .headers_mut()
            .insert("content-type", HeaderValue::from_static("application/json"));
        Ok::<_, BoxError>(response)
    });
    let svc = audited(strict_layer(&sink), failing);
    // A PUT's response body is recorded, so it is held until the commit.
    let response = tokio::time::timeout(WAIT, svc.oneshot(put("{}")))
        .await
        .expect("answered")
        .expect("served");
    assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(body_of(response).await, "response body failed");
}

#[tokio::test]
async fn strict_mode_fails_closed_before_the_handler_when_the_store_is_unavailable() {
    let sink = CommitSink::default();
    sink.unavailable.store(true, Ordering::SeqCst);
    let calls = Arc::new(AtomicUsize::new(0));
    let svc = audited(strict_layer(&sink), echo(calls.clone()));
    let response = svc.oneshot(put("{}")).await.expect("served");
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(body_of(response).await, "audit log unavailable");
    assert_eq!(calls.load(Ordering::SeqCst), 0, "no handler ran");
    let record = only_record(&sink.records).await;
    assert_eq!(
        (record.raw.status_code, record.action.result),
        (Some(503), ActionResult::Failure)
    );
}

#[tokio::test]
async fn strict_mode_answers_503_when_the_commit_fails() {
    let sink = CommitSink::default();
    sink.fail.store(true, Ordering::SeqCst);
    let svc = audited(strict_layer(&sink), echo(Arc::default()));
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
    let policy = AuditPolicy::builder()
        .operation(Operation::new(Method::PUT, TEMPLATE).strict(true))
        .operation(Operation::new(Method::GET, TEMPLATE))
        .build()
        .expect("valid policy");
    let mut svc = audited(
        AuditLayer::new(policy).sink(sink.clone()),
        echo(Arc::default()),
    );
    let put_response = serve(&mut svc, put("{}")).await;
    assert_eq!(put_response.status(), StatusCode::SERVICE_UNAVAILABLE);
    let get_response = serve(&mut svc, get(POLICY_PATH)).await;
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
    full: Arc<AtomicBool>,
    open: Arc<Notify>,
}

impl AuditSink for FullSink {
    fn submit(&self, record: AuditRecord) {
        self.records.submit(record);
    }

    fn backpressure(&self) -> Option<Backpressure> {
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
    let svc = audited(
        AuditLayer::new(policy()).sink(sink.clone()),
        echo(calls.clone()),
    );

    // A body-recording PUT and a GET both wait; neither handler runs, nothing is recorded.
    let put_call = tokio::spawn(svc.clone().oneshot(put(r#"{"name":"x"}"#)));
    let get_call = tokio::spawn(svc.clone().oneshot(get(POLICY_PATH)));
    // An unaudited operation never waits.
    let response = tokio::time::timeout(WAIT, svc.clone().oneshot(get("/healthz")))
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
        body_of(response).await;
    }
    assert_eq!(calls.load(Ordering::SeqCst), 3);
    let records = sink.records.wait_for(2, WAIT).await;
    let put_record = records
        .iter()
        .find(|r| r.raw.method.as_deref() == Some("PUT"))
        .expect("the PUT is recorded");
    assert_eq!(
        recorded_request(put_record),
        Some(json!({})),
        "the body read after the wait is captured (and redacted: nothing is marked)"
    );
}

#[tokio::test]
async fn failed_authentications_beyond_the_rate_are_counted_and_flushed_as_a_summary() {
    let sink = MemorySink::new();
    let layer = layer(&sink)
        .failed_auth_rate(2)
        .failed_auth_window(Duration::from_secs(60));
    let flush = layer.flush_handle();
    let mut svc = audited(
        layer,
        service_fn(|req: Req| async move {
            let known = req.headers().contains_key("authorization");
            if known {
                let handle = req.extensions().get::<crate::AuditHandle>().cloned();
                handle
                    .expect("a handle")
                    .identify(crate::Identity::user("usr_1"));
            }
            let mut response = Response::new(Empty::<Bytes>::new());
            *response.status_mut() = StatusCode::FORBIDDEN;
            Ok::<_, Infallible>(response)
        }),
    );
    let peer: SocketAddr = "192.0.2.7:4000".parse().expect("an address");
    for i in 0..6 {
        let mut req = get(POLICY_PATH);
        req.extensions_mut().insert(peer);
        if i == 5 {
            req.headers_mut()
                .insert("authorization", HeaderValue::from_static("Bearer t"));
        }
        body_of(serve(&mut svc, req).await).await;
    }
    assert_eq!(
        sink.len(),
        3,
        "two anonymous refusals and the known actor's"
    );
    flush.flush(WAIT).await;
    let records = sink.records();
    assert_eq!(records.len(), 4);
    let summary = &records[3];
    assert_eq!(summary.action.kind, ActionType::Summary);
    assert_eq!(summary.actor.ip_address, Some(peer.ip()));
    assert_eq!(
        summary.account.as_ref().map(|a| a.id.as_str()),
        Some("acc_1")
    );
    let counted = summary
        .resource
        .request
        .as_ref()
        .expect("counts")
        .to_value();
    assert_eq!(counted["count"], 3);
    assert_eq!(counted["statuses"], json!({"403": 3}));
}
