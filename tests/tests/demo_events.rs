//! End-to-end tests of events: actions of the real `demo-app` binary that are not HTTP requests,
//! read back through its audit log API.
//!
//! - A `PUT` that turns an alerting policy on starts a test delivery in a task of its own: its
//!   `deliver` event names the user who sent the `PUT`, and the `disable` event of the
//!   enforcement that follows (the system acting) carries the `PUT`'s ray id, as the `PUT`'s own
//!   record does.
//! - A DNS record update records its exact value before and after.
//! - The token expiry sweep (a background job) revokes an expired token as the system, under a
//!   ray id of its own, with the token's value before and after.
//! - Canary secrets in those values (a webhook URL, a DNS comment) reach no record, no answer of
//!   the audit log API and no file of the audit store; every record, events included, validates
//!   against `schemas/audit-log.schema.json`.
//!
//! Run with `cargo test -p audit-tests --test demo_events`.

#![allow(clippy::unwrap_used, missing_docs)]

use std::path::Path;
use std::time::{Duration, Instant};

use audit_layer::record::Timestamp;
use audit_tests::{
    ALICE, ALICE_ID, Api, Auth, DEMO, Demo, DemoConfig, EXAMPLE_ZONE, PASSWORD, assert_valid,
    contains, files_under, read_log, read_log_where, read_one,
};
use serde_json::{Value, json};

/// In the webhook URL of the policy whose deliveries fail.
const WEBHOOK_CANARY: &str = "CANARY-EVENT-WEBHOOK-8c21f07d";
/// In the DNS record's comment (not auditable).
const COMMENT_CANARY: &str = "CANARY-EVENT-COMMENT-3e9b55aa";

/// A webhook URL nobody listens at: a loopback port that was free a moment ago.
fn dead_webhook() -> String {
    let port = audit_tests::free_port();
    format!("http://127.0.0.1:{port}/{WEBHOOK_CANARY}/hook")
}

/// The demo with a fast token sweep, and policies disabled at the first failed delivery.
async fn start(data: &Path, logs: &Path) -> Demo {
    let config = DemoConfig::default()
        .arg("--sweep-interval-ms=200")
        .arg("--max-failed-deliveries=1");
    Demo::start_with(data, logs, &config).await
}

/// The records of `account` that `filters` select, read until `done` holds of them (the
/// pipeline writes off the request path; the events come from tasks of their own), or fails
/// after 20 s naming `what`.
async fn wait_until(
    api: &Api,
    filters: &[(&str, &str)],
    what: &str,
    done: impl Fn(&[Value]) -> bool,
) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let read = read_log_where(api, DEMO, &Auth::admin(), filters, 1000).await;
        if done(&read.records) {
            return read.records;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: not in the audit log after 20 s: {:#?}",
            read.records
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn of_type<'a>(records: &'a [Value], action: &str) -> Vec<&'a Value> {
    records
        .iter()
        .filter(|r| r["action"]["type"] == action)
        .collect()
}

#[tokio::test]
async fn events_are_tied_to_what_caused_them_and_hold_no_secret() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut demo = start(&data, &dir.path().join("logs")).await;
    let api = Api::new(&demo);
    let admin = Auth::admin();

    // 1. A policy with a dead webhook, created off, then turned on by a PUT.
    let policies = format!("/accounts/{DEMO}/alerting/v3/policies");
    let body = |enabled: bool| {
        json!({"name": "events policy", "enabled": enabled, "alert_type": "events_test",
            "mechanisms": {"webhooks": [{"url": dead_webhook()}]}})
    };
    let created = api
        .post(&policies, &admin, &body(false))
        .await
        .expect(200, "create a policy, off");
    let policy_id = created.json()["id"].as_str().unwrap().to_owned();
    let policy = format!("{policies}/{policy_id}");
    let put = api
        .put(&policy, &admin, &body(true))
        .await
        .expect(200, "turn the policy on");
    let put_ray = put.ray();

    // The PUT, the delivery it started and the enforcement that followed share its ray id.
    let caused = wait_until(&api, &[("raw_ray_id", &put_ray)], "the PUT's events", |r| {
        of_type(r, "disable").len() == 1
    })
    .await;
    assert_eq!(caused.len(), 3, "the PUT, deliver, disable: {caused:#?}");
    let put_record = of_type(&caused, "update")[0];
    assert_eq!(put_record["raw"]["method"], "PUT");
    let deliver = of_type(&caused, "deliver")[0];
    let disable = of_type(&caused, "disable")[0];
    // The spawned delivery names the user who started it.
    assert_eq!(deliver["actor"]["id"], ALICE_ID, "{deliver}");
    assert_eq!(deliver["actor"]["type"], "user");
    assert_eq!(deliver["actor"]["context"], "api_token");
    assert_eq!(deliver["action"]["result"], "failure");
    assert_eq!(deliver["resource"]["id"], policy_id.as_str());
    // The enforcement is the system's, caused by the PUT.
    assert_eq!(disable["actor"]["type"], "system", "{disable}");
    assert_eq!(disable["actor"]["context"], "system");
    assert!(disable["actor"].get("id").is_none());
    for event in [deliver, disable] {
        assert!(event["raw"].get("method").is_none(), "{event}");
        assert!(event["raw"].get("uri").is_none(), "{event}");
        assert!(event["raw"].get("status_code").is_none(), "{event}");
        assert_eq!(event["account"]["id"], DEMO);
    }
    assert_eq!(disable["change"]["before"]["enabled"], true, "{disable}");
    assert_eq!(disable["change"]["after"]["enabled"], false, "{disable}");
    assert_eq!(disable["change"]["after"]["name"], "events policy");
    let reply = api
        .get(&policy, &admin)
        .await
        .expect(200, "read the policy");
    assert_eq!(reply.json()["enabled"], false, "the policy was disabled");
    // Events are filtered like any record: by their own type, by the NULL of their method.
    let by_type = read_log_where(&api, DEMO, &admin, &[("action_type", "disable")], 100).await;
    assert_eq!(by_type.records.len(), 1);
    let not_put = read_log_where(
        &api,
        DEMO,
        &admin,
        &[("raw_ray_id", &put_ray), ("raw_method.not", "PUT")],
        100,
    )
    .await;
    assert_eq!(not_put.records.len(), 2, "the events, whose method is NULL");

    // 2. A DNS record update: its exact value before and after, never its comment.
    let records = format!("/zones/{EXAMPLE_ZONE}/dns_records");
    let dns = |content: &str| {
        json!({"type": "A", "name": "events", "content": content, "ttl": 300,
            "proxied": false, "comment": COMMENT_CANARY})
    };
    let created = api
        .post(&records, &admin, &dns("192.0.2.10"))
        .await
        .expect(200, "create a DNS record");
    let record_id = created.json()["id"].as_str().unwrap().to_owned();
    let update = api
        .put(
            &format!("{records}/{record_id}"),
            &admin,
            &dns("192.0.2.11"),
        )
        .await
        .expect(200, "update the DNS record");
    let update_ray = update.ray();
    let updated = wait_until(
        &api,
        &[("raw_ray_id", &update_ray)],
        "the DNS update",
        |r| !r.is_empty(),
    )
    .await;
    let change = &updated[0]["change"];
    let name = "events.example.com";
    for (side, content) in [("before", "192.0.2.10"), ("after", "192.0.2.11")] {
        assert_eq!(
            change[side],
            json!({"id": record_id, "zone_id": EXAMPLE_ZONE, "type": "A", "name": name,
                "content": content, "ttl": 300, "proxied": false}),
            "change.{side}"
        );
    }

    // 3. A token that expires: the sweep revokes it, the system acting, in a run of its own.
    let expires = Timestamp::from_unix_millis(Timestamp::now().unix_millis() + 1000);
    let token = api
        .post(
            &format!("/accounts/{DEMO}/tokens"),
            &admin,
            &json!({"name": "short-lived", "expires_on": expires.to_string()}),
        )
        .await
        .expect(200, "create a token that expires in a second");
    let token_id = token.json()["id"].as_str().unwrap().to_owned();
    let token_value = token.json()["value"].as_str().unwrap().to_owned();
    let expired = wait_until(
        &api,
        &[("action_type", "expire"), ("resource_id", &token_id)],
        "the token's expiry",
        |r| r.len() == 1,
    )
    .await;
    let expire = &expired[0];
    assert_eq!(expire["actor"]["type"], "system", "{expire}");
    assert_eq!(expire["resource"]["product"], "tokens");
    assert_eq!(expire["change"]["before"]["status"], "active");
    assert_eq!(expire["change"]["after"]["status"], "revoked");
    let run_ray = expire["raw"]["cf_ray_id"].as_str().unwrap().to_owned();
    assert_eq!(run_ray.len(), 32, "a ray id of the run's own: {run_ray}");
    let in_run = read_log_where(&api, DEMO, &admin, &[("raw_ray_id", &run_ray)], 100).await;
    assert!(
        in_run
            .records
            .iter()
            .all(|r| r["action"]["type"] == "expire"),
        "only the sweep's events carry its run's ray id"
    );
    api.get(
        &format!("/accounts/{DEMO}/tokens"),
        &Auth::Bearer(token_value.clone()),
    )
    .await
    .expect(401, "the expired token no longer works");

    // 4. Login and logout remain user-level records; a failed login too.
    let (reply, session) = api.login(ALICE, PASSWORD).await;
    let login_ray = reply.expect(200, "login").ray();
    let (reply, _) = api.login(ALICE, "wrong-password-5678").await;
    let failed_ray = reply.expect(401, "a failed login").ray();
    let logout = api
        .call(
            reqwest::Method::POST,
            "/logout",
            &[],
            &Auth::Session(session.unwrap()),
            None,
        )
        .await
        .expect(204, "logout");
    for (ray, action, result) in [
        (login_ray, "login", "success"),
        (failed_ray, "login", "failure"),
        (logout.ray(), "logout", "success"),
    ] {
        let r = wait_until(&api, &[("raw_ray_id", &ray)], action, |r| !r.is_empty()).await;
        assert_eq!(r[0]["action"]["type"], action);
        assert_eq!(r[0]["action"]["result"], result);
        if result == "success" {
            assert_eq!(r[0]["actor"]["type"], "user", "{}", r[0]);
        }
    }

    // Every record validates; no answer of the audit log API holds a canary.
    let log = read_log(&api, DEMO, &admin, 1000).await;
    for record in &log.records {
        assert_valid(record);
    }
    let canaries = [
        ("the webhook URL", WEBHOOK_CANARY),
        ("the DNS comment", COMMENT_CANARY),
        ("the token value", &token_value),
    ];
    let mut answered = log.bodies.clone();
    for record in [put_record, deliver, disable, &updated[0], expire] {
        let id = record["id"].as_str().unwrap();
        answered.push(read_one(&api, DEMO, &admin, id).await.text);
    }
    for body in &answered {
        for (what, canary) in canaries {
            assert!(!body.contains(canary), "the audit log API answers {what}");
        }
    }

    // Nor does any file of the audit store (the app's own tables keep the webhook and the
    // comment: they are its data).
    let status = demo.stop().await;
    assert!(status.success(), "SIGTERM exit: {status}");
    let mut audit_bytes = Vec::new();
    for file in files_under(&data) {
        let name = file.strip_prefix(&data).unwrap().display().to_string();
        if name.starts_with("app.db") {
            continue;
        }
        let bytes = std::fs::read(&file).unwrap();
        for (what, canary) in canaries {
            assert!(
                !contains(&bytes, canary.as_bytes()),
                "{what} is in the audit file {name}"
            );
        }
        audit_bytes.extend_from_slice(&bytes);
    }
    // The scan reads the records: the events' auditable fields are in the audit files.
    assert!(
        contains(
            &audit_bytes,
            b"Disabled the policy after 1 consecutive failed deliveries"
        ),
        "the audit files hold no record of the events"
    );
}
