//! End-to-end tests of the real `demo-app` binary: each test builds it once (`cargo build -p
//! demo-app`), starts it on a free loopback port with its data in a fresh temporary directory
//! and canary secrets in its environment, drives it over HTTP as a user would (dashboard
//! login, API tokens, alerting policies, DNS records), stops it with SIGTERM, and checks what
//! a user would notice: the audit log read through the app's own query API, the files left on
//! disk, the answers to other accounts, the records that survive a restart, and how bad
//! configuration is refused.
//!
//! The binary, the process guard, the HTTP client and the audit log reader are the shared
//! helpers of the `audit-tests` library (`tests/src/`).
//!
//! Run with `cargo test -p audit-tests --test demo_end_to_end`.

#![allow(clippy::unwrap_used, missing_docs)]

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use audit_tests::{
    ADMIN_TOKEN, ALICE, ALICE_ID, Api, Auth, BOB, DEMO, Demo, OTHER, OTHER_TOKEN, PASSWORD,
    SEEDED_POLICY, USER_AGENT, assert_fields, assert_valid, contains, demo_command, exits_within,
    files_under, log_window, not_found, read_log, read_one, wait_for_rays,
};
use reqwest::Method;
use serde_json::{Value, json};

// ---------------------------------------------------------------------------------------------
// Canaries: secrets that must never reach the audit log, and that are easy to find in bytes
// ---------------------------------------------------------------------------------------------
//
// Also the seeded password and tokens, `audit_tests::{PASSWORD, ADMIN_TOKEN, OTHER_TOKEN}`,
// which the shared `Demo` gives the binary.

/// The secret part of the alerting policy's webhook URL (`mechanisms` is not auditable).
const WEBHOOK_CANARY: &str = "CANARY-WEBHOOK-9e4d2a7b1f60";
/// The DNS record's free-text comment (not auditable).
const COMMENT_CANARY: &str = "CANARY-DNS-COMMENT-41c8e7";

/// The full webhook URL of the policies the tests write.
fn webhook_url() -> String {
    format!("https://hooks.example.com/{WEBHOOK_CANARY}/T000/B000")
}

// ---------------------------------------------------------------------------------------------
// A full session, shared by the log and the secrets tests
// ---------------------------------------------------------------------------------------------

/// What a session did: the ids it created, the secrets it was given, and the `x-request-id`
/// of each step.
#[derive(Debug, Default)]
struct Session {
    session: String,
    token_id: String,
    token_value: String,
    zone_id: String,
    policy_id: String,
    dns_id: String,
    rays: HashMap<&'static str, String>,
}

impl Session {
    fn ray(&self, step: &str) -> &str {
        &self.rays[step]
    }
}

fn policy_body(name: &str, zone_id: &str, enabled: bool) -> Value {
    json!({
        "name": name,
        "description": "written by demo_end_to_end",
        "enabled": enabled,
        "alert_type": "clickhouse_alert_fw_ent_anomaly",
        "filters": {"services": ["securitylevel", "ratelimit"], "zones": [zone_id]},
        "mechanisms": {
            "email": [{"id": ALICE}],
            "webhooks": [{"url": webhook_url()}],
        },
    })
}

fn dns_body(content: &str) -> Value {
    json!({
        "type": "A",
        "name": "e2e",
        "content": content,
        "ttl": 300,
        "proxied": false,
        "comment": COMMENT_CANARY,
    })
}

/// Logs in to the dashboard, creates and uses an API token, writes an alerting policy and a
/// DNS record through their whole life, fails a login and logs out.
async fn full_session(api: &Api) -> Session {
    let mut s = Session::default();

    // Dashboard login.
    let (reply, session) = api.login(ALICE, PASSWORD).await;
    let reply = reply.expect(200, "login with the right password");
    assert_eq!(reply.json()["user"]["email"], ALICE);
    assert_eq!(reply.json()["accounts"], json!([DEMO]));
    s.session = session.expect("login sets the demo_session cookie");
    let dash = Auth::Session(s.session.clone());
    s.rays.insert("login", reply.ray());

    // Dashboard pages.
    let reply = api.get("/zones", &dash).await.expect(200, "dash: zones");
    let zones = reply.json();
    s.zone_id = zones
        .as_array()
        .unwrap()
        .iter()
        .find(|z| z["name"] == "example.com")
        .and_then(|z| z["id"].as_str())
        .expect("example.com is among alice's zones")
        .to_owned();
    s.rays.insert("dash_zones", reply.ray());
    let reply = api
        .get(&format!("/accounts/{DEMO}/alerting/v3/policies"), &dash)
        .await
        .expect(200, "dash: policies");
    assert!(
        reply
            .json()
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["id"] == SEEDED_POLICY)
    );
    s.rays.insert("dash_policies", reply.ray());

    // A new API token, its value shown once.
    let reply = api
        .post(
            &format!("/accounts/{DEMO}/tokens"),
            &dash,
            &json!({"name": "e2e token"}),
        )
        .await
        .expect(200, "create a token");
    let created = reply.json();
    s.token_id = created["id"].as_str().unwrap().to_owned();
    s.token_value = created["value"].as_str().unwrap().to_owned();
    assert_eq!(created["name"], "e2e token");
    assert!(s.token_value.len() >= 32, "{created}");
    s.rays.insert("token_create", reply.ray());
    let token = Auth::Bearer(s.token_value.clone());

    // The new token at work.
    let reply = api
        .get(&format!("/accounts/{DEMO}/tokens"), &token)
        .await
        .expect(200, "list tokens with the new token");
    let listed = reply.json();
    let mine = listed
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["id"] == s.token_id.as_str())
        .expect("the new token is listed");
    assert_eq!(mine["status"], "active");
    assert!(
        !reply.text.contains(&s.token_value),
        "a listing shows a token value"
    );
    s.rays.insert("token_use", reply.ray());
    let reply = api
        .call(
            Method::GET,
            "/zones",
            &[("name", "example.com")],
            &token,
            None,
        )
        .await
        .expect(200, "find the zone by name");
    assert_eq!(reply.json()[0]["id"], s.zone_id.as_str());
    s.rays.insert("zone_lookup", reply.ray());

    // An alerting policy, created, updated and deleted with the new token.
    let policies = format!("/accounts/{DEMO}/alerting/v3/policies");
    let reply = api
        .post(
            &policies,
            &token,
            &policy_body("e2e policy", &s.zone_id, true),
        )
        .await
        .expect(200, "create a policy");
    s.policy_id = reply.json()["id"].as_str().unwrap().to_owned();
    s.rays.insert("policy_create", reply.ray());
    let policy = format!("{policies}/{}", s.policy_id);
    let reply = api
        .get(&policy, &token)
        .await
        .expect(200, "read the policy");
    assert_eq!(
        reply.json()["mechanisms"]["webhooks"][0]["url"],
        webhook_url(),
        "the app keeps the webhook"
    );
    let reply = api
        .put(
            &policy,
            &token,
            &policy_body("e2e policy renamed", &s.zone_id, false),
        )
        .await
        .expect(200, "update the policy");
    assert_eq!(reply.json()["id"], s.policy_id.as_str());
    s.rays.insert("policy_update", reply.ray());
    let reply = api
        .delete(&policy, &token)
        .await
        .expect(200, "delete the policy");
    s.rays.insert("policy_delete", reply.ray());
    api.get(&policy, &token)
        .await
        .expect(404, "a deleted policy");

    // A DNS record of example.com, created, updated and deleted from the dashboard.
    let records = format!("/zones/{}/dns_records", s.zone_id);
    let reply = api
        .post(&records, &dash, &dns_body("192.0.2.55"))
        .await
        .expect(200, "create a DNS record");
    let created = reply.json();
    s.dns_id = created["id"].as_str().unwrap().to_owned();
    assert_eq!(created["name"], "e2e.example.com");
    assert_eq!(created["comment"], COMMENT_CANARY);
    s.rays.insert("dns_create", reply.ray());
    let record = format!("{records}/{}", s.dns_id);
    let reply = api
        .put(&record, &dash, &dns_body("192.0.2.56"))
        .await
        .expect(200, "update the DNS record");
    assert_eq!(reply.json()["content"], "192.0.2.56");
    s.rays.insert("dns_update", reply.ray());
    let reply = api
        .delete(&record, &dash)
        .await
        .expect(200, "delete the DNS record");
    s.rays.insert("dns_delete", reply.ray());

    // A failed login for alice.
    let (reply, session) = api.login(ALICE, "wrong-password-1234").await;
    let reply = reply.expect(401, "login with a wrong password");
    assert_eq!(session, None, "a failed login sets no session");
    assert_eq!(reply.json()["errors"][0]["code"], 10001);
    s.rays.insert("login_failed", reply.ray());

    // Logging out ends the session.
    let reply = api
        .call(Method::POST, "/logout", &[], &dash, None)
        .await
        .expect(204, "logout");
    s.rays.insert("logout", reply.ray());
    api.get("/zones", &dash)
        .await
        .expect(401, "the session after logout");

    s
}

/// A step of [`full_session`] and its record: the step, `action.type`, `raw.method`,
/// `raw.status_code` (which tells `action.result`), the step's own fields and who acted (as
/// JSON pointers and values).
type Step<'a> = (
    &'a str,
    &'a str,
    &'a str,
    u16,
    Vec<(&'a str, Value)>,
    &'a [(&'a str, Value)],
);

// ---------------------------------------------------------------------------------------------
// 1. A full session, as the audit log tells it
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn a_full_session_is_in_the_audit_log() {
    let dir = tempfile::tempdir().unwrap();
    let demo = Demo::start(&dir.path().join("data"), &dir.path().join("logs")).await;
    let api = Api::new(&demo);
    let s = full_session(&api).await;

    let admin = Auth::admin();
    let expected: Vec<String> = s.rays.values().cloned().collect();
    let log = wait_for_rays(&api, DEMO, &admin, &expected).await;
    // Read again in small pages: the cursor walks the same records, none skipped or repeated.
    let paged = read_log(&api, DEMO, &admin, 4).await;
    assert!(paged.pages > 3, "{} pages of 4", paged.pages);
    let ids: Vec<&str> = paged
        .records
        .iter()
        .map(|r| r["id"].as_str().unwrap())
        .collect();
    let unique: HashSet<&str> = ids.iter().copied().collect();
    assert_eq!(unique.len(), ids.len(), "a record came twice across pages");
    let first_read: HashSet<&str> = log
        .records
        .iter()
        .map(|r| r["id"].as_str().unwrap())
        .collect();
    assert!(
        first_read.is_subset(&unique),
        "paging lost records that one page had"
    );
    let times: Vec<&str> = paged
        .records
        .iter()
        .map(|r| r["action"]["time"].as_str().unwrap())
        .collect();
    assert!(
        times.windows(2).all(|w| w[0] >= w[1]),
        "not newest first: {times:?}"
    );

    for record in &paged.records {
        assert_valid(record);
        assert_fields("every record", record, &[("/account/id", json!(DEMO))]);
    }
    let alice_dash = [
        ("/actor/type", json!("user")),
        ("/actor/context", json!("dash")),
        ("/actor/email", json!(ALICE)),
        ("/actor/id", json!(ALICE_ID)),
        ("/actor/ip_address", json!("127.0.0.1")),
        ("/account/name", json!("Example account")),
        ("/raw/user_agent", json!(USER_AGENT)),
    ];
    let alice_token = [
        ("/actor/type", json!("user")),
        ("/actor/context", json!("api_token")),
        ("/actor/email", json!(ALICE)),
        ("/actor/id", json!(ALICE_ID)),
        ("/actor/token/id", json!(s.token_id)),
        ("/actor/token/name", json!("e2e token")),
    ];
    // Authentication failed: who tried is unknown.
    let nobody = [
        ("/actor/ip_address", json!("127.0.0.1")),
        ("/actor/email", Value::Null),
        ("/actor/id", Value::Null),
        ("/actor/context", Value::Null),
    ];

    let policy_request = |name: &str, enabled: bool| {
        json!({
            "name": name,
            "description": "written by demo_end_to_end",
            "enabled": enabled,
            "alert_type": "clickhouse_alert_fw_ent_anomaly",
            "filters": {"services": ["securitylevel", "ratelimit"], "zones": [s.zone_id]},
        })
    };
    let policy_uri = format!("/accounts/{DEMO}/alerting/v3/policies/{}", s.policy_id);
    let policy = |description: &str, more: Vec<(&'static str, Value)>| {
        let mut fields = vec![
            ("/action/description", json!(description)),
            ("/resource/scope", json!("accounts")),
            ("/resource/product", json!("alerting")),
            ("/resource/type", json!("policies")),
            ("/resource/id", json!(s.policy_id)),
            ("/resource/response", json!({"id": s.policy_id})),
        ];
        fields.extend(more);
        fields
    };
    let dns_request = |content: &str| json!({"type": "A", "name": "e2e", "content": content, "ttl": 300, "proxied": false});
    let dns_response = |content: &str| {
        json!({"id": s.dns_id, "zone_id": s.zone_id, "type": "A", "name": "e2e.example.com",
            "content": content, "ttl": 300, "proxied": false})
    };
    let dns = |response: Value, more: Vec<(&'static str, Value)>| {
        let mut fields = vec![
            ("/zone/id", json!(s.zone_id)),
            ("/zone/name", json!("example.com")),
            ("/resource/scope", json!("zones")),
            ("/resource/product", json!("dns")),
            ("/resource/type", json!("dns_records")),
            ("/resource/id", json!(s.dns_id)),
            ("/resource/response", response),
        ];
        fields.extend(more);
        fields
    };

    // Each step's record: what was done, how it went, its own fields, and who acted.
    let steps: Vec<Step<'_>> = vec![
        (
            "login",
            "login",
            "POST",
            200,
            vec![
                ("/action/description", json!("Log in")),
                ("/resource/scope", json!("user")),
                ("/resource/product", json!("auth")),
                ("/resource/type", json!("sessions")),
                ("/resource/id", json!(ALICE_ID)),
                ("/resource/response", json!({"user": {"id": ALICE_ID}})),
                ("/raw/uri", json!("/login")),
            ],
            &alice_dash,
        ),
        (
            "dash_zones",
            "view",
            "GET",
            200,
            vec![
                ("/action/description", json!("List Zones")),
                ("/resource/product", json!("zones")),
                ("/resource/type", json!("zones")),
                ("/resource/request", Value::Null),
                ("/resource/response", Value::Null),
                ("/raw/uri", json!("/zones")),
            ],
            &alice_dash,
        ),
        (
            "dash_policies",
            "view",
            "GET",
            200,
            vec![
                ("/resource/scope", json!("accounts")),
                ("/resource/product", json!("alerting")),
                ("/resource/type", json!("policies")),
            ],
            &alice_dash,
        ),
        (
            "token_create",
            "create",
            "POST",
            200,
            vec![
                ("/action/description", json!("Create Token")),
                ("/resource/scope", json!("accounts")),
                ("/resource/product", json!("tokens")),
                ("/resource/type", json!("tokens")),
                ("/resource/id", json!(s.token_id)),
                ("/resource/request", json!({"name": "e2e token"})),
                (
                    "/resource/response",
                    json!({"id": s.token_id, "name": "e2e token"}),
                ),
            ],
            &alice_dash,
        ),
        (
            "token_use",
            "view",
            "GET",
            200,
            vec![("/resource/product", json!("tokens"))],
            &alice_token,
        ),
        (
            "zone_lookup",
            "view",
            "GET",
            200,
            vec![("/raw/uri", json!("/zones?name=example.com"))],
            &alice_token,
        ),
        (
            "policy_create",
            "create",
            "POST",
            200,
            policy(
                "Create a Notification policy",
                vec![("/resource/request", policy_request("e2e policy", true))],
            ),
            &alice_token,
        ),
        (
            "policy_update",
            "update",
            "PUT",
            200,
            policy(
                "Update a Notification policy",
                vec![
                    (
                        "/resource/request",
                        policy_request("e2e policy renamed", false),
                    ),
                    ("/raw/uri", json!(policy_uri)),
                ],
            ),
            &alice_token,
        ),
        (
            "policy_delete",
            "delete",
            "DELETE",
            200,
            policy(
                "Delete a Notification policy",
                vec![("/raw/uri", json!(policy_uri))],
            ),
            &alice_token,
        ),
        (
            "dns_create",
            "create",
            "POST",
            200,
            dns(
                dns_response("192.0.2.55"),
                vec![("/resource/request", dns_request("192.0.2.55"))],
            ),
            &alice_dash,
        ),
        (
            "dns_update",
            "update",
            "PUT",
            200,
            dns(
                dns_response("192.0.2.56"),
                vec![("/resource/request", dns_request("192.0.2.56"))],
            ),
            &alice_dash,
        ),
        (
            "dns_delete",
            "delete",
            "DELETE",
            200,
            dns(json!({"id": s.dns_id}), vec![]),
            &alice_dash,
        ),
        (
            "login_failed",
            "login",
            "POST",
            401,
            vec![
                ("/resource/product", json!("auth")),
                ("/resource/type", json!("sessions")),
                ("/raw/uri", json!("/login")),
            ],
            &nobody,
        ),
        ("logout", "logout", "POST", 204, vec![], &alice_dash),
    ];
    assert_eq!(
        steps.len(),
        s.rays.len(),
        "a step of the session is not checked"
    );
    for (step, action, method, status, fields, actor) in &steps {
        let record = log.one(s.ray(step));
        let result = if *status < 400 { "success" } else { "failure" };
        assert_fields(
            step,
            record,
            &[
                ("/action/type", json!(action)),
                ("/action/result", json!(result)),
                ("/raw/method", json!(method)),
                ("/raw/status_code", json!(status)),
            ],
        );
        assert_fields(step, record, fields);
        assert_fields(step, record, actor);
    }

    // One record read by id, through the same router.
    let id = log.one(s.ray("policy_create"))["id"].as_str().unwrap();
    let one = read_one(&api, DEMO, &admin, id).await.json();
    assert_eq!(one["result"], *log.one(s.ray("policy_create")));
    assert_valid(&one["result"]);
}

// ---------------------------------------------------------------------------------------------
// 2. Secrets: nothing in clear on disk, nothing non-auditable in the audit log
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn no_secret_reaches_the_disk_or_the_audit_log() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut demo = Demo::start(&data, &dir.path().join("logs")).await;
    let api = Api::new(&demo);
    let s = full_session(&api).await;

    let secrets: [(&str, &str); 5] = [
        ("the password", PASSWORD),
        ("the seeded admin token", ADMIN_TOKEN),
        ("the seeded other token", OTHER_TOKEN),
        ("the new token's value", &s.token_value),
        ("the session id", &s.session),
    ];
    let not_auditable: [(&str, &str); 2] = [
        ("the webhook URL", WEBHOOK_CANARY),
        ("the DNS record's comment", COMMENT_CANARY),
    ];

    // The audit log API answers none of them.
    let admin = Auth::admin();
    let expected: Vec<String> = s.rays.values().cloned().collect();
    let log = wait_for_rays(&api, DEMO, &admin, &expected).await;
    let mut answered = log.bodies.clone();
    for step in [
        "policy_create",
        "policy_update",
        "dns_create",
        "login",
        "login_failed",
    ] {
        let id = log.one(s.ray(step))["id"].as_str().unwrap();
        answered.push(read_one(&api, DEMO, &admin, id).await.text);
    }
    for body in &answered {
        for (what, value) in secrets.iter().chain(&not_auditable) {
            assert!(
                !body.contains(value),
                "the audit log API answers {what}: {body}"
            );
        }
    }

    // Stop gracefully: every record is flushed to disk.
    let status = demo.stop().await;
    assert!(status.success(), "SIGTERM exit: {status}");

    let files = files_under(&data);
    let names: Vec<String> = files
        .iter()
        .map(|f| f.strip_prefix(&data).unwrap().display().to_string())
        .collect();
    for expected in ["app.db", "audit.db"] {
        assert!(
            names.iter().any(|n| n == expected),
            "no {expected}: {names:?}"
        );
    }
    assert!(data.join("spool").is_dir(), "no spool directory: {names:?}");
    let mut audit_bytes = Vec::new();
    for (file, name) in files.iter().zip(&names) {
        let bytes = std::fs::read(file).unwrap();
        for (what, value) in &secrets {
            assert!(
                !contains(&bytes, value.as_bytes()),
                "{what} is in clear in {name}"
            );
        }
        let audit_file = name.starts_with("audit.db") || name.starts_with("spool");
        if audit_file {
            for (what, value) in &not_auditable {
                assert!(
                    !contains(&bytes, value.as_bytes()),
                    "{what} (not auditable) is in the audit file {name}"
                );
            }
            audit_bytes.extend_from_slice(&bytes);
        }
    }
    // The scan reads the records: the policy's (auditable) name is in the audit files.
    assert!(
        contains(&audit_bytes, b"e2e policy renamed"),
        "the audit files hold no record of the session ({names:?})"
    );

    // Nor does the app's own log output carry them (its start-up banner is checked apart:
    // see the report).
    let stderr = demo.stderr();
    for (what, value) in secrets.iter().chain(&not_auditable) {
        assert!(!stderr.contains(value), "stderr shows {what}: {stderr}");
    }
    let stdout = demo.stdout();
    for (what, value) in [
        ("the password", PASSWORD),
        ("the new token's value", s.token_value.as_str()),
        ("the session id", s.session.as_str()),
    ] {
        assert!(!stdout.contains(value), "stdout shows {what}");
    }
}

/// A request for another account's log or record: what it is, its path, query and
/// credentials.
type Hidden<'a> = (&'a str, String, &'a [(&'a str, &'a str)], &'a Auth);

// ---------------------------------------------------------------------------------------------
// 3. Accounts are isolated
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn another_account_sees_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let demo = Demo::start(&dir.path().join("data"), &dir.path().join("logs")).await;
    let api = Api::new(&demo);
    let admin = Auth::admin();
    let other = Auth::other();
    let (since, before) = log_window();
    let window = [("since", since.as_str()), ("before", before.as_str())];

    // Something in each account's log.
    let demo_ray = api
        .get(&format!("/accounts/{DEMO}/alerting/v3/policies"), &admin)
        .await
        .expect(200, "acc_demo reads its policies")
        .ray();
    let other_ray = api
        .get("/zones", &other)
        .await
        .expect(200, "acc_other reads its zones")
        .ray();
    let demo_log = wait_for_rays(&api, DEMO, &admin, std::slice::from_ref(&demo_ray)).await;
    let other_log = wait_for_rays(&api, OTHER, &other, std::slice::from_ref(&other_ray)).await;
    let demo_record_id = demo_log.one(&demo_ray)["id"].as_str().unwrap().to_owned();
    let other_record_id = other_log.one(&other_ray)["id"].as_str().unwrap().to_owned();

    // acc_other's token reading acc_demo's log: 404, exactly as for an account that does not
    // exist, with nothing of acc_demo's log in it; also with a filter that would match, and by
    // record id. Another account's record id under one's own account: 404, as an id that does
    // not exist.
    let path = format!("/accounts/{DEMO}/logs/audit");
    let filtered = [
        ("since", since.as_str()),
        ("before", before.as_str()),
        ("raw_ray_id", demo_ray.as_str()),
    ];
    let hidden: [Hidden<'_>; 6] = [
        (
            "acc_demo's log, to acc_other",
            path.clone(),
            &window,
            &other,
        ),
        (
            "no such account",
            "/accounts/acc_nope/logs/audit".into(),
            &window,
            &other,
        ),
        (
            "acc_demo's log filtered, to acc_other",
            path.clone(),
            &filtered,
            &other,
        ),
        (
            "acc_demo's record, to acc_other",
            format!("/accounts/{DEMO}/logs/audit/{demo_record_id}"),
            &[],
            &other,
        ),
        (
            "acc_other's record under acc_demo",
            format!("/accounts/{DEMO}/logs/audit/{other_record_id}"),
            &[],
            &admin,
        ),
        (
            "acc_other's record, to acc_demo",
            format!("/accounts/{OTHER}/logs/audit/{other_record_id}"),
            &[],
            &admin,
        ),
    ];
    for (what, path, query, auth) in hidden {
        let reply = api.call(Method::GET, &path, query, auth, None).await;
        assert_eq!(reply.status, 404, "{what}: {}", reply.text);
        assert_eq!(reply.json(), not_found(), "{what}");
        for leak in [
            demo_ray.as_str(),
            demo_record_id.as_str(),
            ALICE,
            "Example account",
        ] {
            assert!(!reply.text.contains(leak), "{what}: the 404 shows {leak}");
        }
    }
    let reply = api
        .get(
            &format!("/accounts/{OTHER}/logs/audit/{other_record_id}"),
            &other,
        )
        .await
        .expect(200, "acc_other reads its own record");
    assert_eq!(reply.json()["result"]["id"], other_record_id.as_str());

    // No credentials: 401. Bad credentials too.
    let reply = api
        .call(Method::GET, &path, &window, &Auth::None, None)
        .await;
    assert_eq!(reply.status, 401, "{}", reply.text);
    assert!(reply.json()["result"].is_null(), "{}", reply.text);
    let bogus = Auth::Bearer("CANARYTOKEN-nobody-000000000000".into());
    let reply = api.call(Method::GET, &path, &window, &bogus, None).await;
    assert_eq!(reply.status, 401, "{}", reply.text);

    // acc_other's token writing acc_demo's policy: 404 (the app answers another account's
    // resources as missing), the same answer as for an account that does not exist, and the
    // policy is unchanged.
    let write = json!({"name": "hijacked", "enabled": false, "alert_type": "x",
        "mechanisms": {"webhooks": [{"url": "https://attacker.example/hook"}]}});
    let reply = api
        .put(
            &format!("/accounts/{DEMO}/alerting/v3/policies/{SEEDED_POLICY}"),
            &other,
            &write,
        )
        .await;
    assert_eq!(reply.status, 404, "{}", reply.text);
    let hijack_ray = reply.ray();
    let missing = api
        .put(
            &format!("/accounts/acc_nope/alerting/v3/policies/{SEEDED_POLICY}"),
            &other,
            &write,
        )
        .await;
    assert_eq!((missing.status, missing.json()), (404, reply.json()));
    let reply = api
        .delete(
            &format!("/accounts/{DEMO}/alerting/v3/policies/{SEEDED_POLICY}"),
            &other,
        )
        .await;
    assert_eq!(reply.status, 404, "{}", reply.text);
    let policy = api
        .get(
            &format!("/accounts/{DEMO}/alerting/v3/policies/{SEEDED_POLICY}"),
            &admin,
        )
        .await
        .expect(200, "the seeded policy is still there")
        .json();
    assert_eq!(policy["name"], "Advanced Security Events Alert");
    assert_eq!(policy["mechanisms"]["webhooks"], json!([]));

    // acc_demo's zone, through acc_other's token: 404, as a zone that does not exist.
    let zones = api.get("/zones", &admin).await.expect(200, "zones").json();
    let zone = zones[0]["id"].as_str().unwrap().to_owned();
    let reply = api.get(&format!("/zones/{zone}/dns_records"), &other).await;
    assert_eq!(reply.status, 404, "{}", reply.text);
    let missing = api
        .get(
            "/zones/00000000000000000000000000000000/dns_records",
            &other,
        )
        .await;
    assert_eq!((missing.status, missing.json()), (404, reply.json()));

    // The attempt is in acc_demo's log (its owners see it), by bob's token; acc_other's own
    // log holds nothing of acc_demo.
    let demo_log = wait_for_rays(&api, DEMO, &admin, std::slice::from_ref(&hijack_ray)).await;
    let attempt = demo_log.one(&hijack_ray);
    assert_valid(attempt);
    assert_fields(
        "the cross-account write",
        attempt,
        &[
            ("/account/id", json!(DEMO)),
            ("/action/type", json!("update")),
            ("/action/result", json!("failure")),
            ("/actor/context", json!("api_token")),
            ("/actor/email", json!(BOB)),
            ("/raw/status_code", json!(404)),
            ("/resource/id", json!(SEEDED_POLICY)),
        ],
    );
    let other_log = read_log(&api, OTHER, &other, 1000).await;
    // alice's own probes of acc_other are filed there, naming her (as bob's are in acc_demo's
    // log); nothing else of acc_demo may show.
    for record in &other_log.records {
        if record["actor"]["email"] == ALICE {
            assert_eq!(record["action"]["result"], "failure", "{record:#}");
            continue;
        }
        let text = record.to_string();
        for leak in ["Example account", ALICE, DEMO, "example.com\""] {
            assert!(!text.contains(leak), "acc_other's log shows {leak}: {text}");
        }
    }
    for record in &other_log.records {
        assert_valid(record);
        assert_eq!(record["account"]["id"], OTHER, "{record:#}");
    }
}

// ---------------------------------------------------------------------------------------------
// 4. A restart loses nothing that was answered
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn records_of_answered_requests_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let logs = dir.path().join("logs");
    let mut demo = Demo::start(&data, &logs).await;
    let api = std::sync::Arc::new(Api::new(&demo));
    let admin = Auth::admin();

    // A burst of reads and writes, answered just before SIGTERM.
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..36 {
        let api = std::sync::Arc::clone(&api);
        let admin = admin.clone();
        tasks.spawn(async move {
            match i % 3 {
                0 => {
                    let body = json!({"name": format!("restart policy {i}"), "enabled": true,
                        "alert_type": "restart_test", "mechanisms": {"webhooks": [{"url": webhook_url()}]}});
                    api.post(&format!("/accounts/{DEMO}/alerting/v3/policies"), &admin, &body)
                        .await
                        .expect(200, "create a policy");
                }
                1 => {
                    api.get(&format!("/accounts/{DEMO}"), &admin)
                        .await
                        .expect(200, "read the account");
                }
                _ => {
                    api.get(&format!("/accounts/{DEMO}/tokens"), &admin)
                        .await
                        .expect(200, "list tokens");
                }
            }
        });
    }
    while let Some(done) = tasks.join_next().await {
        done.unwrap();
    }
    let answered = api.rays();
    assert_eq!(answered.len(), 36, "every answer has an x-request-id");
    let status = demo.stop().await;
    assert!(status.success(), "SIGTERM exit: {status}");
    let spooled: Vec<PathBuf> = files_under(&data.join("spool"));
    assert!(
        spooled.is_empty(),
        "a graceful stop left records in the spool instead of the database: {spooled:?}"
    );

    // Restarted on the same data: every answered request has exactly one record, at once.
    let demo = Demo::start(&data, &logs).await;
    let api = Api::new(&demo);
    let log = read_log(&api, DEMO, &admin, 1000).await;
    let by_ray = log.by_ray();
    let missing: Vec<&String> = answered
        .iter()
        .filter(|r| !by_ray.contains_key(*r))
        .collect();
    if !missing.is_empty() {
        // Tell "flushed late (replayed from the spool)" from "lost".
        tokio::time::sleep(Duration::from_secs(3)).await;
        let later_read = read_log(&api, DEMO, &admin, 1000).await;
        let later = later_read.by_ray();
        let lost: Vec<&&String> = missing
            .iter()
            .filter(|r| !later.contains_key(**r))
            .collect();
        panic!(
            "{} of {} records of answered requests were not in the log after the restart; {} still missing 3 s later: {lost:?}",
            missing.len(),
            answered.len(),
            lost.len()
        );
    }
    for ray in &answered {
        assert_eq!(by_ray[ray].len(), 1, "records with raw.cf_ray_id {ray}");
        assert_valid(by_ray[ray][0]);
    }
    let creates = log
        .records
        .iter()
        .filter(|r| r["action"]["type"] == "create" && r["resource"]["product"] == "alerting")
        .count();
    assert_eq!(creates, 12, "policy creations in the log");
}

// ---------------------------------------------------------------------------------------------
// 5. Bad configuration is refused, naming the setting
// ---------------------------------------------------------------------------------------------

/// Runs the binary with `args` and `env` to its exit: the exit code and stderr.
fn run_to_exit(args: &[&str], env: &[(&str, &str)]) -> (Option<i32>, String) {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut command = demo_command();
    command
        .args(args)
        .arg("--data-dir")
        .arg(&data)
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    for (name, value) in env {
        command.env(name, value);
    }
    let output = exits_within(
        command.spawn().unwrap(),
        Duration::from_secs(20),
        &format!("{args:?} {env:?} started instead of refusing"),
    );
    assert!(
        !data.exists(),
        "a refused configuration still created the data directory"
    );
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[track_caller]
fn assert_refused(
    (code, stderr): (Option<i32>, String),
    names: &[&str],
    must_not_show: Option<&str>,
) {
    assert_eq!(code, Some(2), "exit code; stderr: {stderr:?}");
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "one line of stderr: {stderr:?}");
    for name in names {
        assert!(lines[0].contains(name), "{name} is not named: {stderr:?}");
    }
    if let Some(secret) = must_not_show {
        assert!(
            !stderr.contains(secret),
            "stderr echoes the secret: {stderr:?}"
        );
    }
}

#[test]
fn bad_configuration_exits_2_naming_the_setting() {
    assert_refused(
        run_to_exit(&["--listen", "nonsense"], &[]),
        &["--listen", "DEMO_LISTEN"],
        None,
    );
    assert_refused(
        run_to_exit(
            &["--listen", "127.0.0.1:0"],
            &[("DATABASE_URL", "mysql://x")],
        ),
        &["DATABASE_URL"],
        None,
    );
    // The same settings from their other source, and secrets that must not be echoed.
    assert_refused(
        run_to_exit(&[], &[("DEMO_LISTEN", "nonsense")]),
        &["DEMO_LISTEN"],
        None,
    );
    assert_refused(
        run_to_exit(
            &[
                "--listen",
                "127.0.0.1:0",
                "--database-url",
                "mysql://root:CANARYpw99@db/x",
            ],
            &[],
        ),
        &["DATABASE_URL"],
        Some("CANARYpw99"),
    );
    assert_refused(
        run_to_exit(
            &["--listen", "127.0.0.1:0"],
            &[("DEMO_ADMIN_TOKEN", "CANARY-short")],
        ),
        &["DEMO_ADMIN_TOKEN"],
        Some("CANARY-short"),
    );
    assert_refused(
        run_to_exit(
            &["--listen", "127.0.0.1:0"],
            &[("DEMO_PASSWORD", "CANARY7")],
        ),
        &["DEMO_PASSWORD"],
        Some("CANARY7"),
    );
}
