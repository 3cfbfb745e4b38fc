//! Push export and alerting of the real `demo-app`: started with `DEMO_EXPORT_URL` (OCSF,
//! signed) and `DEMO_ALERT_URL` pointing at a receiver in this test (axum on a free port), it
//! pushes every record of the session to the receiver, each a valid OCSF 1.8.0 API Activity
//! event, and five failed logins from one address send one signed alert, itself recorded in
//! the account's log.
//!
//! Run with `cargo test -p audit-tests --test demo_push`.

#![allow(clippy::unwrap_used, missing_docs)]

use std::io::Read as _;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use audit_store::export::{Secret, verify_signature};
use audit_tests::{ALICE, Api, Auth, DEMO, Demo, DemoConfig, read_log};
use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use serde_json::{Value, json};

const EXPORT_SECRET: &str = "CANARY-EXPORT-SECRET-5d1e";
const ALERT_SECRET: &str = "CANARY-ALERT-SECRET-77b0";

/// One body the receiver got: its path (`export`, `alert`) and its lines.
type Body = (String, Vec<String>);

/// What the receiver got.
#[derive(Clone, Default)]
struct Received(Arc<Mutex<Vec<Body>>>);

impl Received {
    fn lines(&self, path: &str) -> Vec<String> {
        self.0
            .lock()
            .unwrap()
            .iter()
            .filter(|(p, _)| p == path)
            .flat_map(|(_, lines)| lines.clone())
            .collect()
    }
}

async fn receive(
    State(received): State<Received>,
    Path(path): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> StatusCode {
    let secret = match path.as_str() {
        "export" => EXPORT_SECRET,
        _ => ALERT_SECRET,
    };
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let signed = headers
        .get("x-audit-signature")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| verify_signature(&Secret::new(secret), v, &body, now, 300));
    if !signed || headers.get("idempotency-key").is_none() {
        return StatusCode::UNAUTHORIZED;
    }
    let mut text = String::new();
    if headers.get("content-encoding").is_some_and(|v| v == "gzip") {
        flate2::read::GzDecoder::new(&body[..])
            .read_to_string(&mut text)
            .unwrap();
    } else {
        text = String::from_utf8(body.to_vec()).unwrap();
    }
    received
        .0
        .lock()
        .unwrap()
        .push((path, text.lines().map(str::to_owned).collect()));
    StatusCode::OK
}

#[tokio::test]
async fn the_demo_pushes_every_record_as_valid_ocsf_and_alerts_once_on_five_failed_logins() {
    let received = Received::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let receiver = listener.local_addr().unwrap();
    let app = Router::new()
        .route("/{path}", post(receive))
        .with_state(received.clone());
    tokio::spawn(async move { axum::serve(listener, app).await });

    let dir = tempfile::tempdir().unwrap();
    let config = DemoConfig::default()
        .env("DEMO_EXPORT_URL", format!("http://{receiver}/export"))
        .env("DEMO_EXPORT_FORMAT", "ocsf")
        .env("DEMO_EXPORT_SECRET", EXPORT_SECRET)
        .env("DEMO_ALERT_URL", format!("http://{receiver}/alert"))
        .env("DEMO_ALERT_SECRET", ALERT_SECRET);
    let mut demo =
        Demo::start_with(&dir.path().join("data"), &dir.path().join("logs"), &config).await;
    let api = Api::new(&demo);
    let admin = Auth::admin();
    api.get(&format!("/accounts/{DEMO}"), &admin)
        .await
        .expect(200, "the account");
    api.post(
        &format!("/accounts/{DEMO}/tokens"),
        &admin,
        &json!({"name": "ci", "policies": []}),
    )
    .await;
    for _ in 0..5 {
        let (reply, _) = api.login(ALICE, "not-the-password").await;
        reply.expect(401, "a failed login");
    }
    api.get(&format!("/accounts/{DEMO}/members"), &admin).await;

    // The alert is recorded; then every record of the account's log as read then arrives
    // (reading the log is audited too: later reads add records, which are not waited for).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let log = loop {
        let log = read_log(&api, DEMO, &admin, 1000).await;
        if log
            .records
            .iter()
            .any(|r| r["resource"]["type"] == "notifications")
        {
            break log;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no alert recorded\n{}",
            demo.stderr_tail(20)
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let events = loop {
        let events: Vec<Value> = received
            .lines("export")
            .iter()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        let missing = log
            .records
            .iter()
            .filter(|r| !events.iter().any(|e| e["metadata"]["uid"] == r["id"]))
            .count();
        if missing == 0 {
            break events;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{missing} records of {} not pushed\n{}",
            log.records.len(),
            demo.stderr_tail(20)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(log.records.len() >= 8, "{}", log.records.len());

    // Each one a valid OCSF API Activity event.
    let schema: Value = serde_json::from_str(include_str!(
        "../../audit-store/tests/fixtures/ocsf/api_activity-1.8.0.schema.json"
    ))
    .unwrap();
    let validator = jsonschema::draft202012::new(&schema).unwrap();
    for event in &events {
        let errors: Vec<String> = validator
            .iter_errors(event)
            .map(|e| e.to_string())
            .collect();
        assert!(errors.is_empty(), "{errors:#?}\n{event:#}");
    }
    let logins: Vec<&Value> = events
        .iter()
        .filter(|e| e["activity_name"] == "login")
        .collect();
    assert_eq!(logins.len(), 5);
    assert!(logins.iter().all(|e| e["status_id"] == 2));

    // One alert, signed, for the address the five failures came from; logged as a system event.
    let alerts = received.lines("alert");
    assert_eq!(alerts.len(), 1, "{alerts:#?}");
    let alert: Value = serde_json::from_str(&alerts[0]).unwrap();
    assert_eq!(alert["rule"], "failed-logins");
    assert_eq!(alert["group"], "127.0.0.1");
    assert_eq!(alert["count"], 5);
    let notice = log
        .records
        .iter()
        .find(|r| r["resource"]["type"] == "notifications")
        .unwrap();
    assert_eq!(notice["actor"]["type"], "system");
    assert_eq!(notice["resource"]["id"], alert["notification_id"]);

    // The secrets are in no record, pushed line or log line.
    demo.stop().await;
    let everything = format!(
        "{}{}{}{}",
        log.bodies.concat(),
        received.lines("export").concat(),
        demo.stdout(),
        demo.stderr()
    );
    for secret in [EXPORT_SECRET, ALERT_SECRET] {
        assert!(!everything.contains(secret), "{secret} leaked");
    }
}
