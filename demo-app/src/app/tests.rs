//! The app assembled by [`router`], as `main` assembles it, on a seeded SQLite database in a
//! temporary directory, driven request by request. Records go to a `MemorySink`, or through
//! the real ingest pipeline into a real `SqliteStore` where a test needs what the pipeline adds
//! (account names) or what is actually stored.

use std::net::SocketAddr;
use std::path::Path;

use audit_layer::record::AuditRecord;
use audit_layer::sink::MemorySink;
use audit_store::SqliteStore;
use audit_store::pipeline::{self, IngestSink};
use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::header::{AUTHORIZATION, CONTENT_TYPE, COOKIE, SET_COOKIE, USER_AGENT};
use axum::http::{HeaderMap, Method, Request, StatusCode};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use tempfile::TempDir;
use tower::ServiceExt;

use super::*;
use crate::db::Db;
use crate::db::seed::tests::{seeded_db, test_seed_config};
use crate::db::seed_ids::{
    ALICE, BOB, DEMO_ACCOUNT, EXAMPLE_ZONE, OTHER_ACCOUNT, OTHER_ZONE, POLICY,
};
use crate::secrets::sha256_hex;

const REGENERATE: &str =
    "regenerate it with: cargo run -p demo-app -- --print-openapi > schemas/demo-openapi.json";

/// Who sends a request.
#[derive(Clone, Copy)]
enum Caller<'a> {
    Anonymous,
    Token(&'a str),
    Session(&'a str),
}

struct Reply {
    status: StatusCode,
    headers: HeaderMap,
    body: Value,
}

/// The app on a seeded database, with the seeded tokens.
struct TestApp {
    router: Router,
    admin_token: String,
    other_token: String,
    password: String,
    _dir: TempDir,
}

/// The real pipeline and store behind a [`TestApp`].
struct Stored {
    sink: IngestSink,
    store: SqliteStore,
    worker: tokio::task::JoinHandle<()>,
}

impl Stored {
    /// Flushes the pipeline and returns every stored record's JSON text, in time order.
    async fn records(self) -> Vec<String> {
        self.sink.shutdown().await;
        self.worker.await.unwrap();
        sqlx::query_scalar("SELECT record FROM audit_logs ORDER BY time_ms, id")
            .fetch_all(self.store.pool())
            .await
            .unwrap()
    }
}

impl TestApp {
    async fn build(dir: TempDir, db: Db, sink: impl AuditSink) -> Self {
        let state = AppState::new(db);
        let config = test_seed_config();
        let (router, _flush) = router(state, sink, Router::new(), |layer| layer).unwrap();
        Self {
            router,
            admin_token: config.admin_token.unwrap(),
            other_token: config.other_token.unwrap(),
            password: config.password,
            _dir: dir,
        }
    }

    async fn with_memory_sink() -> (Self, MemorySink) {
        let dir = tempfile::tempdir().unwrap();
        let (db, _) = seeded_db(dir.path()).await;
        let records = MemorySink::new();
        (Self::build(dir, db, records.clone()).await, records)
    }

    async fn with_store() -> (Self, Stored) {
        let dir = tempfile::tempdir().unwrap();
        let (db, _) = seeded_db(dir.path()).await;
        let store = SqliteStore::open(dir.path().join("audit.db"))
            .await
            .unwrap();
        audit_store::store::AuditStore::migrate(&store)
            .await
            .unwrap();
        let (sink, pipeline) = pipeline::builder(store.clone())
            .spool(dir.path().join("spool"), 16 * 1024 * 1024)
            .directory(AppDirectory(db.clone()))
            .build()
            .await
            .unwrap();
        let worker = tokio::spawn(pipeline.run());
        let app = Self::build(dir, db, sink.clone()).await;
        (
            app,
            Stored {
                sink,
                store,
                worker,
            },
        )
    }

    async fn send(
        &self,
        method: Method,
        uri: &str,
        caller: Caller<'_>,
        body: Option<Value>,
    ) -> Reply {
        let mut request = Request::builder()
            .method(method)
            .uri(uri)
            .header(USER_AGENT, "Postman");
        match caller {
            Caller::Anonymous => {}
            Caller::Token(token) => {
                request = request.header(AUTHORIZATION, format!("Bearer {token}"))
            }
            Caller::Session(session) => {
                request = request.header(COOKIE, format!("theme=dark; demo_session={session}"));
            }
        }
        let body = match body {
            Some(json) => {
                request = request.header(CONTENT_TYPE, "application/json");
                Body::from(json.to_string())
            }
            None => Body::empty(),
        };
        let mut request = request.body(body).unwrap();
        request
            .extensions_mut()
            .insert(ConnectInfo(SocketAddr::from(([127, 0, 0, 1], 51000))));
        let response = self.router.clone().oneshot(request).await.unwrap();
        let (parts, body) = response.into_parts();
        // Read to the end: the layer emits the record when the response body ends.
        let bytes = body.collect().await.unwrap().to_bytes();
        let body = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes)
                .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()))
        };
        Reply {
            status: parts.status,
            headers: parts.headers,
            body,
        }
    }

    async fn get(&self, uri: &str, caller: Caller<'_>) -> Reply {
        self.send(Method::GET, uri, caller, None).await
    }

    async fn delete(&self, uri: &str, caller: Caller<'_>) -> Reply {
        self.send(Method::DELETE, uri, caller, None).await
    }

    async fn post(&self, uri: &str, caller: Caller<'_>, body: Value) -> Reply {
        self.send(Method::POST, uri, caller, Some(body)).await
    }

    async fn put(&self, uri: &str, caller: Caller<'_>, body: Value) -> Reply {
        self.send(Method::PUT, uri, caller, Some(body)).await
    }

    async fn patch(&self, uri: &str, caller: Caller<'_>, body: Value) -> Reply {
        self.send(Method::PATCH, uri, caller, Some(body)).await
    }

    /// Tries to log in, whatever the answer.
    async fn try_login(&self, email: &str, password: &str) -> Reply {
        let credentials = json!({"email": email, "password": password});
        self.post("/login", Caller::Anonymous, credentials).await
    }

    /// Logs in and returns the session cookie's value.
    async fn login(&self, email: &str, password: &str) -> String {
        let reply = self.try_login(email, password).await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
        let cookie = reply.headers[SET_COOKIE].to_str().unwrap();
        assert!(
            cookie.contains("HttpOnly") && cookie.contains("SameSite=Lax"),
            "{cookie}"
        );
        cookie
            .split(';')
            .next()
            .and_then(|c| c.strip_prefix("demo_session="))
            .unwrap()
            .to_owned()
    }
}

fn policy_uri(account: &str, policy: &str) -> String {
    format!("/accounts/{account}/alerting/v3/policies/{policy}")
}

/// The announcement's sample request, plus what must not be recorded.
fn sample_policy_update() -> Value {
    json!({
        "name": "Advanced Security Events Alert",
        "enabled": false,
        "alert_type": "clickhouse_alert_fw_ent_anomaly",
        "filters": {
            "services": ["securitylevel", "ratelimit", "firewallrules"],
            "zones": [EXAMPLE_ZONE],
        },
        "mechanisms": {
            "email": [{"id": "soc@example.com"}],
            "webhooks": [{"url": "https://hooks.example.com/services/T0/B0/CANARY-webhook-secret"}],
        },
        "undeclared": "CANARY-undeclared",
    })
}

fn parse(records: &[String]) -> Vec<Value> {
    records
        .iter()
        .map(|text| {
            let record: AuditRecord = serde_json::from_str(text).unwrap();
            audit_layer::schema::validate(&record).unwrap();
            serde_json::from_str(text).unwrap()
        })
        .collect()
}

#[test]
fn the_committed_openapi_document_is_current() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../schemas/demo-openapi.json");
    let committed = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}; {REGENERATE}", path.display()));
    let committed: Value = serde_json::from_str(&committed)
        .unwrap_or_else(|e| panic!("schemas/demo-openapi.json is not JSON ({e}); {REGENERATE}"));
    let current: Value = serde_json::from_str(openapi_json_text()).unwrap();
    assert!(
        committed == current,
        "schemas/demo-openapi.json differs from the document the app serves; {REGENERATE}"
    );
}

#[test]
fn the_document_compiles_into_an_audit_policy() {
    AuditLayer::try_new(openapi()).unwrap();
}

#[tokio::test]
async fn a_policy_update_is_recorded_like_the_announcements_sample() {
    let (app, stored) = TestApp::with_store().await;
    let session = app.login("alice@example.com", &app.password).await;
    let uri = policy_uri(DEMO_ACCOUNT, POLICY);
    let reply = app
        .put(&uri, Caller::Session(&session), sample_policy_update())
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    assert_eq!(reply.body, json!({"id": POLICY}));
    let ray_id = reply.headers["x-request-id"].to_str().unwrap().to_owned();
    // The write happened.
    let read = app.get(&uri, Caller::Session(&session)).await;
    assert_eq!(read.body["enabled"], json!(false));
    assert_eq!(read.body["mechanisms"]["email"][0]["id"], "soc@example.com");

    let records = parse(&stored.records().await);
    let record = records
        .iter()
        .find(|r| r["raw"]["method"] == "PUT")
        .expect("a record of the PUT");

    let mut keys: Vec<&str> = record
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    keys.sort_unstable();
    // The sample's fields, and the service that made the record (no trace: the request
    // carried no traceparent).
    assert_eq!(
        keys,
        [
            "account", "action", "actor", "id", "raw", "resource", "service"
        ]
    );
    assert_eq!(record["service"], super::SERVICE_NAME);
    let id = uuid::Uuid::parse_str(record["id"].as_str().unwrap()).unwrap();
    assert_eq!(id.get_version_num(), 7);

    assert_eq!(record["account"]["id"], DEMO_ACCOUNT);
    assert_eq!(record["account"]["name"], "Example account");

    assert_eq!(
        record["action"]["description"],
        "Update a Notification policy"
    );
    assert_eq!(record["action"]["result"], "success");
    assert_eq!(record["action"]["type"], "update");
    let time = record["action"]["time"].as_str().unwrap();
    assert!(time.len() == 24 && time.ends_with('Z'), "{time}");

    assert_eq!(record["actor"]["context"], "dash");
    assert_eq!(record["actor"]["email"], "alice@example.com");
    assert_eq!(record["actor"]["id"], ALICE);
    assert_eq!(record["actor"]["ip_address"], "127.0.0.1");
    assert_eq!(record["actor"]["token"], json!({}));
    assert_eq!(record["actor"]["type"], "user");

    assert_eq!(record["raw"]["cf_ray_id"], ray_id);
    assert_eq!(record["raw"]["method"], "PUT");
    assert_eq!(record["raw"]["status_code"], 200);
    assert_eq!(record["raw"]["uri"], uri);
    assert_eq!(record["raw"]["user_agent"], "Postman");

    assert_eq!(record["resource"]["id"], POLICY);
    assert_eq!(record["resource"]["product"], "alerting");
    assert_eq!(record["resource"]["scope"], "accounts");
    assert_eq!(record["resource"]["type"], "policies");
    assert_eq!(
        record["resource"]["request"],
        json!({
            "alert_type": "clickhouse_alert_fw_ent_anomaly",
            "enabled": false,
            "filters": {
                "services": ["securitylevel", "ratelimit", "firewallrules"],
                "zones": [EXAMPLE_ZONE],
            },
            "name": "Advanced Security Events Alert",
        })
    );
    assert_eq!(record["resource"]["response"], json!({"id": POLICY}));
}

/// The secrets [`token_lifecycle`] sends or receives.
struct LifecycleSecrets {
    session: String,
    token_id: String,
    token: String,
}

/// A wrong password tried at login: a canary no record may hold.
const WRONG_PASSWORD: &str = "CANARY-wrong-password";
/// A token no account has: a canary no record may hold.
const BOGUS_TOKEN: &str = "demo_CANARY0000000000000000000000000000000000000";

/// Logs in wrongly, unknown and rightly; creates a token, uses it, revokes it and uses it
/// again; writes the policy with the admin token, reads zones as the other account, and sends
/// a bogus token: ten requests, each checked as it is answered.
async fn token_lifecycle(app: &TestApp) -> LifecycleSecrets {
    let failed = app.try_login("alice@example.com", WRONG_PASSWORD).await;
    assert_eq!(failed.status, StatusCode::UNAUTHORIZED);
    let unknown = app.try_login("nobody@example.com", WRONG_PASSWORD).await;
    assert_eq!(
        unknown.body, failed.body,
        "an unknown email is answered like a wrong password"
    );
    let session = app.login("alice@example.com", &app.password).await;

    let created = app
        .post(
            &format!("/accounts/{DEMO_ACCOUNT}/tokens"),
            Caller::Session(&session),
            json!({"name": "CI deploys"}),
        )
        .await;
    assert_eq!(created.status, StatusCode::OK, "{}", created.body);
    let token_id = created.body["id"].as_str().unwrap().to_owned();
    let token = created.body["value"].as_str().unwrap().to_owned();
    let zones = app.get("/zones", Caller::Token(&token)).await;
    assert_eq!(zones.status, StatusCode::OK);
    app.put(
        &policy_uri(DEMO_ACCOUNT, POLICY),
        Caller::Token(&app.admin_token),
        sample_policy_update(),
    )
    .await;
    app.get("/zones", Caller::Token(&app.other_token)).await;
    let revoked = app
        .delete(
            &format!("/accounts/{DEMO_ACCOUNT}/tokens/{token_id}"),
            Caller::Token(&token),
        )
        .await;
    assert_eq!(revoked.status, StatusCode::OK);
    let after = app.get("/zones", Caller::Token(&token)).await;
    assert_eq!(
        after.status,
        StatusCode::UNAUTHORIZED,
        "a revoked token no longer works"
    );
    let bogus = app.get("/zones", Caller::Token(BOGUS_TOKEN)).await;
    assert_eq!(bogus.status, StatusCode::UNAUTHORIZED);
    LifecycleSecrets {
        session,
        token_id,
        token,
    }
}

#[tokio::test]
async fn no_password_or_token_value_reaches_a_record() {
    let (app, stored) = TestApp::with_store().await;
    let LifecycleSecrets {
        session,
        token_id,
        token,
    } = token_lifecycle(&app).await;

    let texts = stored.records().await;
    let records = parse(&texts);
    assert_eq!(records.len(), 10, "{texts:#?}");
    let secrets = [
        app.password.as_str(),
        WRONG_PASSWORD,
        app.admin_token.as_str(),
        app.other_token.as_str(),
        token.as_str(),
        session.as_str(),
        BOGUS_TOKEN,
        "CANARY",
    ];
    for text in &texts {
        for secret in secrets {
            assert!(!text.contains(secret), "{secret:?} leaked into {text}");
            assert!(
                !text.contains(&sha256_hex(secret)),
                "a hash of {secret:?} leaked into {text}"
            );
        }
    }

    let logins: Vec<&Value> = records
        .iter()
        .filter(|r| r["action"]["type"] == "login")
        .collect();
    assert_eq!(logins.len(), 3);
    let wrong = logins[0];
    assert_eq!(wrong["action"]["result"], "failure");
    assert_eq!(wrong["raw"]["status_code"], 401);
    assert_eq!(
        wrong["account"]["id"], DEMO_ACCOUNT,
        "filed in the email's account"
    );
    assert_eq!(
        wrong["actor"],
        json!({"ip_address": "127.0.0.1", "token": {}})
    );
    assert_eq!(
        logins[1]["account"],
        Value::Null,
        "an unknown email belongs to no account"
    );
    assert_eq!(logins[2]["action"]["result"], "success");
    assert_eq!(logins[2]["actor"]["context"], "dash");
    assert_eq!(
        logins[2]["resource"]["response"],
        json!({"user": {"id": ALICE}})
    );

    let creation = &records[3];
    assert_eq!(creation["action"]["type"], "create");
    assert_eq!(creation["resource"]["id"], token_id.as_str());
    assert_eq!(
        creation["resource"]["request"],
        json!({"name": "CI deploys"})
    );
    assert_eq!(
        creation["resource"]["response"],
        json!({"id": token_id, "name": "CI deploys"})
    );
    let used = &records[4];
    assert_eq!(used["actor"]["context"], "api_token");
    assert_eq!(
        used["actor"]["token"],
        json!({"id": token_id, "name": "CI deploys"})
    );
    assert_eq!(used["actor"]["token_id"], json!(token_id));
    assert_eq!(used["actor"]["token_name"], "CI deploys");
    assert_eq!(used["account"]["id"], DEMO_ACCOUNT);
    let other = &records[6];
    assert_eq!(other["account"]["id"], OTHER_ACCOUNT);
    assert_eq!(other["account"]["name"], "Other account");
    assert_eq!(other["actor"]["id"], BOB);
    let unauthenticated = &records[9];
    assert_eq!(unauthenticated["raw"]["status_code"], 401);
    assert_eq!(
        unauthenticated["actor"],
        json!({"ip_address": "127.0.0.1", "token": {}})
    );
}

#[tokio::test]
async fn another_accounts_resources_are_not_found() {
    let (app, records) = TestApp::with_memory_sink().await;
    let bob = Caller::Token(&app.other_token);
    let alice = Caller::Token(&app.admin_token);

    let theirs = app.get(&format!("/accounts/{DEMO_ACCOUNT}"), bob).await;
    let nobodys = app.get("/accounts/acc_nobody", alice).await;
    assert_eq!(theirs.status, StatusCode::NOT_FOUND);
    assert_eq!(theirs.body, nobodys.body, "no hint that the account exists");

    let write = app
        .put(
            &policy_uri(DEMO_ACCOUNT, POLICY),
            bob,
            sample_policy_update(),
        )
        .await;
    assert_eq!(write.status, StatusCode::NOT_FOUND);
    let policy = app.get(&policy_uri(DEMO_ACCOUNT, POLICY), alice).await;
    assert_eq!(policy.body["enabled"], json!(true), "unchanged");

    for method in [Method::GET, Method::DELETE] {
        let reply = app
            .send(method, &format!("/zones/{EXAMPLE_ZONE}"), bob, None)
            .await;
        assert_eq!(reply.status, StatusCode::NOT_FOUND);
    }
    let dns = app
        .get(&format!("/zones/{EXAMPLE_ZONE}/dns_records"), bob)
        .await;
    assert_eq!(dns.status, StatusCode::NOT_FOUND);
    let create = app
        .post(
            "/zones",
            bob,
            json!({"name": "sneaky.example.net", "account": {"id": DEMO_ACCOUNT}}),
        )
        .await;
    assert_eq!(create.status, StatusCode::NOT_FOUND);
    let zone = app.get(&format!("/zones/{EXAMPLE_ZONE}"), alice).await;
    assert_eq!(zone.status, StatusCode::OK, "still there");
    let listed = app.get("/zones", bob).await;
    assert_eq!(listed.body.as_array().unwrap().len(), 1);
    assert_eq!(listed.body[0]["id"], OTHER_ZONE);

    let anonymous = app
        .get(&format!("/accounts/{DEMO_ACCOUNT}"), Caller::Anonymous)
        .await;
    assert_eq!(anonymous.status, StatusCode::UNAUTHORIZED);

    let records = records.records();
    let attempt = records
        .iter()
        .find(|r| r.raw.method.as_deref() == Some("PUT"))
        .expect("the refused write is recorded");
    assert_eq!(attempt.raw.status_code, Some(404));
    assert_eq!(
        attempt.account.as_ref().unwrap().id,
        DEMO_ACCOUNT,
        "the owner sees the attempt"
    );
    assert_eq!(attempt.actor.id.as_deref(), Some(BOB));
    let probe = records
        .iter()
        .find(|r| {
            r.raw.method.as_deref() == Some("GET")
                && r.raw.uri.as_deref() == Some(&*format!("/zones/{EXAMPLE_ZONE}"))
        })
        .unwrap();
    assert_eq!(probe.raw.status_code, Some(404));
    assert_eq!(
        probe.account.as_ref().unwrap().id,
        DEMO_ACCOUNT,
        "filed with the zone's owner, never in the prober's log under the zone's name"
    );
    let last = records.last().unwrap();
    assert_eq!(last.raw.status_code, Some(401));
    assert_eq!(last.actor.id, None);
    assert_eq!(last.account.as_ref().unwrap().id, DEMO_ACCOUNT);
}

#[tokio::test]
async fn zones_and_dns_records_keep_their_state_and_record_what_changed() {
    let (app, records) = TestApp::with_memory_sink().await;
    let alice = Caller::Token(&app.admin_token);

    let zone = app
        .post("/zones", alice, json!({"name": "Shop.Example.NET."}))
        .await;
    assert_eq!(zone.status, StatusCode::OK, "{}", zone.body);
    assert_eq!(zone.body["name"], "shop.example.net");
    assert_eq!(zone.body["account"]["id"], DEMO_ACCOUNT);
    let zone_id = zone.body["id"].as_str().unwrap().to_owned();
    let again = app
        .post("/zones", alice, json!({"name": "shop.example.net"}))
        .await;
    assert_eq!(again.status, StatusCode::CONFLICT);
    let records_uri = format!("/zones/{zone_id}/dns_records");
    let record = app
        .post(
            &records_uri,
            alice,
            json!({"type": "A", "name": "www", "content": "192.0.2.7", "proxied": true, "comment": "ask Bob"}),
        )
        .await;
    assert_eq!(record.status, StatusCode::OK, "{}", record.body);
    assert_eq!(record.body["name"], "www.shop.example.net");
    let record_id = record.body["id"].as_str().unwrap().to_owned();
    let invalid = app
        .post(
            &records_uri,
            alice,
            json!({"type": "A", "name": "www", "content": "nope"}),
        )
        .await;
    assert_eq!(invalid.status, StatusCode::BAD_REQUEST);
    assert!(
        invalid.body["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("'content'")
    );
    let record_uri = format!("{records_uri}/{record_id}");
    let updated = app
        .put(
            &record_uri,
            alice,
            json!({"type": "A", "name": "www", "content": "192.0.2.8", "ttl": 300}),
        )
        .await;
    assert_eq!(updated.body["content"], "192.0.2.8");
    assert_eq!(updated.body["ttl"], 300);
    let listed = app.get(&format!("{records_uri}?type=a"), alice).await;
    assert_eq!(listed.body.as_array().unwrap().len(), 1);
    let deleted = app.delete(&record_uri, alice).await;
    assert_eq!(deleted.body, json!({"id": record_id}));
    let gone = app.get(&record_uri, alice).await;
    assert_eq!(gone.status, StatusCode::NOT_FOUND);

    let records = records.records();
    let zone_created = records
        .iter()
        .find(|r| r.raw.uri.as_deref() == Some("/zones"))
        .unwrap();
    assert_eq!(zone_created.resource.id.as_deref(), Some(zone_id.as_str()));
    assert_eq!(zone_created.account.as_ref().unwrap().id, DEMO_ACCOUNT);
    assert_eq!(
        zone_created.resource.request.as_ref().map(|b| b.to_value()),
        Some(json!({"name": "Shop.Example.NET."}))
    );
    let dns_created = records
        .iter()
        .find(|r| r.raw.uri.as_ref() == Some(&records_uri) && r.raw.status_code == Some(200))
        .unwrap();
    assert_eq!(dns_created.zone.as_ref().unwrap().id, zone_id);
    assert_eq!(dns_created.account.as_ref().unwrap().id, DEMO_ACCOUNT);
    assert_eq!(dns_created.resource.product.as_deref(), Some("dns"));
    assert_eq!(dns_created.resource.id.as_deref(), Some(record_id.as_str()));
    assert_eq!(
        dns_created.resource.request.as_ref().map(|b| b.to_value()),
        Some(json!({"type": "A", "name": "www", "content": "192.0.2.7", "proxied": true})),
        "the comment is not recorded"
    );
    let listing = records
        .iter()
        .find(|r| {
            r.raw
                .uri
                .as_deref()
                .is_some_and(|u| u.starts_with(&format!("{records_uri}?")))
        })
        .unwrap();
    assert_eq!(
        listing.raw.uri.clone().unwrap_or_default(),
        format!("{records_uri}?type=a"),
        "marked query values are kept"
    );
}

#[tokio::test]
async fn members_the_account_and_policies_keep_their_state() {
    let (app, _records) = TestApp::with_memory_sink().await;
    let alice = Caller::Token(&app.admin_token);
    let members_uri = format!("/accounts/{DEMO_ACCOUNT}/members");
    let policies_uri = format!("/accounts/{DEMO_ACCOUNT}/alerting/v3/policies");

    let added = app
        .post(
            &members_uri,
            alice,
            invitation("carol@example.com", "member"),
        )
        .await;
    assert_eq!(added.status, StatusCode::OK, "{}", added.body);
    assert_eq!(added.body["status"], "pending");
    let carol = added.body["id"].as_str().unwrap().to_owned();
    let members = app.get(&members_uri, alice).await;
    assert_eq!(members.body.as_array().unwrap().len(), 2);
    let last_admin = app.delete(&format!("{members_uri}/{ALICE}"), alice).await;
    assert_eq!(last_admin.status, StatusCode::CONFLICT);
    let removed = app.delete(&format!("{members_uri}/{carol}"), alice).await;
    assert_eq!(removed.status, StatusCode::OK);

    let rename =
        json!({"name": "Example account (renamed)", "settings": {"enforce_twofactor": true}});
    let renamed = app
        .patch(&format!("/accounts/{DEMO_ACCOUNT}"), alice, rename)
        .await;
    assert_eq!(renamed.body["name"], "Example account (renamed)");
    assert_eq!(renamed.body["settings"]["enforce_twofactor"], true);

    let created = app
        .post(
            &policies_uri,
            alice,
            json!({"name": "DNS changes", "enabled": true, "alert_type": "dns_record_change",
                        "filters": {"zones": [OTHER_ZONE]}}),
        )
        .await;
    assert_eq!(
        created.status,
        StatusCode::NOT_FOUND,
        "another account's zone"
    );
    let created = app
        .post(
            &policies_uri,
            alice,
            json!({"name": "DNS changes", "enabled": true, "alert_type": "dns_record_change"}),
        )
        .await;
    let policy_id = created.body["id"].as_str().unwrap().to_owned();
    let policies = app.get(&policies_uri, alice).await;
    assert_eq!(policies.body.as_array().unwrap().len(), 2);
    let deleted = app
        .delete(&policy_uri(DEMO_ACCOUNT, &policy_id), alice)
        .await;
    assert_eq!(deleted.status, StatusCode::OK);
}

/// The body of an invitation of `email` with `role`.
fn invitation(email: &str, role: &str) -> Value {
    json!({"email": email, "role": role})
}

/// The app with Alice signed in, about to be invited to the other account by its
/// administrator Bob: the app, its records, and her session.
async fn alice_signed_in() -> (TestApp, MemorySink, String) {
    let (app, records) = TestApp::with_memory_sink().await;
    let session = app.login("alice@example.com", &app.password).await;
    (app, records, session)
}

/// Alice's pending invitations, as her dashboard session lists them.
async fn invites_of(app: &TestApp, session: &str) -> Vec<Value> {
    let reply = app.get("/user/invites", Caller::Session(session)).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    reply.body.as_array().unwrap().clone()
}

#[tokio::test]
async fn an_invitation_grants_nothing_until_the_invited_user_accepts_it() {
    let (app, records, alice_session) = alice_signed_in().await;
    let (alice, bob) = (
        Caller::Session(&alice_session),
        Caller::Token(&app.other_token),
    );
    let members_uri = format!("/accounts/{OTHER_ACCOUNT}/members");

    let invite = invitation("Alice@Example.com", "administrator");
    let invited = app.post(&members_uri, bob, invite).await;
    assert_eq!(invited.status, StatusCode::OK, "{}", invited.body);
    assert_eq!(
        invited.body,
        json!({"id": ALICE, "email": "alice@example.com", "role": "administrator", "status": "pending"})
    );
    let invite = invitation("alice@example.com", "member");
    let again = app.post(&members_uri, bob, invite).await;
    assert_eq!(again.status, StatusCode::CONFLICT, "{}", again.body);

    // Pending: nothing of acc_other is hers, by session or by token.
    for caller in [alice, Caller::Token(&app.admin_token)] {
        let account = app.get(&format!("/accounts/{OTHER_ACCOUNT}"), caller).await;
        assert_eq!(account.status, StatusCode::NOT_FOUND, "{}", account.body);
    }
    let zones = app.get("/zones", alice).await;
    assert!(
        zones
            .body
            .as_array()
            .unwrap()
            .iter()
            .all(|z| z["id"] != OTHER_ZONE),
        "{}",
        zones.body
    );
    let members = app.get(&members_uri, bob).await;
    assert_eq!(members.body[1]["status"], "pending", "{}", members.body);

    let invites = invites_of(&app, &alice_session).await;
    assert_eq!(invites.len(), 1, "{invites:?}");
    let invite = &invites[0];
    assert_eq!(invite["account_id"], OTHER_ACCOUNT);
    assert_eq!(invite["account_name"], "Other account");
    assert_eq!(invite["role"], "administrator");
    assert_eq!(invite["invited_by"], BOB);
    assert_eq!(invite["status"], "pending");
    let invite_uri = format!("/user/invites/{}", invite["id"].as_str().unwrap());

    // Nobody answers for her: not bob (the inviter), not with her API token, not anonymously.
    let bob_session = app.login("bob@example.org", &app.password).await;
    let accepted = json!({"status": "accepted"});
    let by_bob = app
        .patch(&invite_uri, Caller::Session(&bob_session), accepted.clone())
        .await;
    assert_eq!(by_bob.status, StatusCode::NOT_FOUND, "{}", by_bob.body);
    let by_token = app
        .patch(
            &invite_uri,
            Caller::Token(&app.admin_token),
            accepted.clone(),
        )
        .await;
    assert_eq!(by_token.status, StatusCode::FORBIDDEN, "{}", by_token.body);
    let listed_by_token = app
        .get("/user/invites", Caller::Token(&app.admin_token))
        .await;
    assert_eq!(listed_by_token.status, StatusCode::FORBIDDEN);
    let anonymous = app
        .patch(&invite_uri, Caller::Anonymous, accepted.clone())
        .await;
    assert_eq!(anonymous.status, StatusCode::UNAUTHORIZED);
    let unknown = app
        .patch("/user/invites/nope", alice, accepted.clone())
        .await;
    assert_eq!(unknown.status, StatusCode::NOT_FOUND);
    let bad = app
        .patch(&invite_uri, alice, json!({"status": "maybe"}))
        .await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST, "{}", bad.body);
    let account = app.get(&format!("/accounts/{OTHER_ACCOUNT}"), alice).await;
    assert_eq!(account.status, StatusCode::NOT_FOUND, "still not hers");

    // Her own acceptance makes her a member, with the role offered.
    let answer = app.patch(&invite_uri, alice, accepted.clone()).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    assert_eq!(answer.body["status"], "accepted");
    let account = app.get(&format!("/accounts/{OTHER_ACCOUNT}"), alice).await;
    assert_eq!(account.status, StatusCode::OK, "{}", account.body);
    let members = app.get(&members_uri, bob).await;
    assert_eq!(members.body[1]["id"], ALICE);
    assert_eq!(members.body[1]["status"], "accepted");
    assert!(invites_of(&app, &alice_session).await.is_empty());
    let twice = app.patch(&invite_uri, alice, accepted).await;
    assert_eq!(twice.status, StatusCode::NOT_FOUND);

    // The acceptance is filed with the inviting account, and says who accepted what.
    let records: Vec<Value> = records
        .records()
        .iter()
        .map(|r| serde_json::to_value(r).unwrap())
        .collect();
    let answers: Vec<&Value> = records
        .iter()
        .filter(|r| r["raw"]["method"] == "PATCH" && r["raw"]["uri"] == invite_uri)
        .collect();
    let statuses: Vec<&Value> = answers.iter().map(|r| &r["raw"]["status_code"]).collect();
    assert_eq!(statuses, [404, 403, 401, 400, 200, 404]);
    let accepted = answers[4];
    assert_eq!(accepted["account"]["id"], OTHER_ACCOUNT, "{accepted:#}");
    assert_eq!(accepted["actor"]["id"], ALICE);
    assert_eq!(accepted["actor"]["context"], "dash");
    assert_eq!(accepted["action"]["description"], "Respond to Invitation");
    assert_eq!(accepted["resource"]["id"], invite["id"]);
    assert_eq!(accepted["resource"]["product"], "members");
    assert_eq!(
        accepted["resource"]["request"],
        json!({"status": "accepted"})
    );
    assert_eq!(accepted["resource"]["response"]["role"], "administrator");
    let bobs_try = answers[0];
    assert_eq!(
        bobs_try["account"]["id"], OTHER_ACCOUNT,
        "the owners see the attempt"
    );
    assert_eq!(bobs_try["actor"]["id"], BOB);
}

#[tokio::test]
async fn a_rejected_or_withdrawn_invitation_leaves_no_membership() {
    let (app, _records, alice_session) = alice_signed_in().await;
    let (alice, bob) = (
        Caller::Session(&alice_session),
        Caller::Token(&app.other_token),
    );
    let members_uri = format!("/accounts/{OTHER_ACCOUNT}/members");
    let invite = invitation("alice@example.com", "member");

    let invited = app.post(&members_uri, bob, invite.clone()).await;
    assert_eq!(invited.status, StatusCode::OK, "{}", invited.body);
    let id = invites_of(&app, &alice_session).await[0]["id"].clone();
    let rejected = app
        .patch(
            &format!("/user/invites/{}", id.as_str().unwrap()),
            alice,
            json!({"status": "rejected"}),
        )
        .await;
    assert_eq!(rejected.status, StatusCode::OK, "{}", rejected.body);
    assert_eq!(rejected.body["status"], "rejected");
    let account = app.get(&format!("/accounts/{OTHER_ACCOUNT}"), alice).await;
    assert_eq!(account.status, StatusCode::NOT_FOUND);
    assert_eq!(
        app.get(&members_uri, bob)
            .await
            .body
            .as_array()
            .unwrap()
            .len(),
        1
    );

    // Invited again, then withdrawn by the administrator: nothing left to accept.
    let invited = app.post(&members_uri, bob, invite).await;
    assert_eq!(invited.status, StatusCode::OK, "{}", invited.body);
    assert_eq!(invites_of(&app, &alice_session).await.len(), 1);
    let withdrawn = app.delete(&format!("{members_uri}/{ALICE}"), bob).await;
    assert_eq!(withdrawn.status, StatusCode::OK, "{}", withdrawn.body);
    assert!(invites_of(&app, &alice_session).await.is_empty());
    let gone = app.delete(&format!("{members_uri}/{ALICE}"), bob).await;
    assert_eq!(gone.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn health_and_the_document_answer_unrecorded() {
    let (app, records) = TestApp::with_memory_sink().await;
    let health = app.get("/healthz", Caller::Anonymous).await;
    assert_eq!(health.status, StatusCode::OK);
    let document = app.get("/openapi.json", Caller::Anonymous).await;
    assert_eq!(document.body["openapi"], "3.1.0");

    let records = records.records();
    assert!(
        !records
            .iter()
            .any(|r| matches!(r.raw.uri.as_deref(), Some("/healthz" | "/openapi.json"))),
        "x-audit: false operations are not recorded"
    );
}

/// The audit log query API is in the document (and so in the audit policy): a read of the log
/// is recorded with the operation's summary, its reader, and its parameter names, their values
/// redacted (none is marked auditable).
#[tokio::test]
async fn the_audit_log_api_is_described_and_a_read_of_it_is_recorded_as_described() {
    let document = openapi();
    for path in [
        "/accounts/{account_id}/logs/audit",
        "/accounts/{account_id}/logs/audit/verify",
        "/accounts/{account_id}/logs/audit/{id}",
    ] {
        assert!(document.paths.get_path_item(path).is_some(), "{path}");
    }
    let dir = tempfile::tempdir().unwrap();
    let (db, _) = seeded_db(dir.path()).await;
    let store = SqliteStore::open(dir.path().join("audit.db"))
        .await
        .unwrap();
    audit_store::store::AuditStore::migrate(&store)
        .await
        .unwrap();
    let state = AppState::new(db);
    let checkpoints = audit_store::chain::JsonLinesCheckpoints::new(dir.path().join("c.jsonl"));
    let categories = super::product_categories().unwrap();
    let log = audit_log_router(store, &state, checkpoints, categories.clone());
    // The document describes the router as it is.
    assert_eq!(
        serde_json::to_value(log.description().openapi()).unwrap(),
        serde_json::to_value(super::audit_log_description(categories).openapi()).unwrap()
    );
    let log = log.into_router();
    let records = MemorySink::new();
    let (app, _flush) = router(state, records.clone(), log, |layer| layer).unwrap();
    let token = test_seed_config().admin_token.unwrap();
    let uri = format!("/accounts/{DEMO_ACCOUNT}/logs/audit?since=2000-01-01&before=2100-01-01");
    let request = Request::get(&uri)
        .header(AUTHORIZATION, format!("Bearer {token}"))
        .extension(ConnectInfo(SocketAddr::from(([127, 0, 0, 1], 40_000))))
        .body(Body::empty())
        .unwrap();
    let response = app.oneshot(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    response.into_body().collect().await.unwrap();
    let read = records
        .records()
        .into_iter()
        .find(|r| {
            r.raw
                .uri
                .as_deref()
                .is_some_and(|u| u.contains("/logs/audit"))
        })
        .expect("the read is recorded");
    assert_eq!(
        read.action.description.as_deref(),
        Some("List an account's audit logs")
    );
    assert_eq!(
        read.raw.uri.as_deref(),
        Some(
            format!("/accounts/{DEMO_ACCOUNT}/logs/audit?since=REDACTED&before=REDACTED").as_str()
        )
    );
    assert!(read.actor.id.is_some());
}
