//! End-to-end tests of the real `demo-app` binary: each test builds it once (`cargo build -p
//! demo-app`), starts it on a free loopback port with its data in a fresh temporary directory
//! and canary secrets in its environment, drives it over HTTP as a user would (dashboard
//! login, API tokens, alerting policies, DNS records), stops it with SIGTERM, and checks what
//! a user would notice: the audit log read through the app's own query API, the files left on
//! disk, the answers to other accounts, the records that survive a restart, and how bad
//! configuration is refused.
//!
//! Run with `cargo test -p audit-tests --test demo_end_to_end`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::collections::{HashMap, HashSet};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use audit_layer::record::Timestamp;
use reqwest::Method;
use serde_json::{Value, json};

// ---------------------------------------------------------------------------------------------
// Canaries: secrets that must never reach the audit log, and that are easy to find in bytes
// ---------------------------------------------------------------------------------------------

/// The seeded users' password (`DEMO_PASSWORD`).
const PASSWORD: &str = "CANARY-PASSWORD-7f3c9e21d4a8";
/// `acc_demo`'s seeded API token (`DEMO_ADMIN_TOKEN`).
const ADMIN_TOKEN: &str = "CANARYTOKEN-admin-5b8e2f1a9c3d";
/// `acc_other`'s seeded API token (`DEMO_OTHER_TOKEN`).
const OTHER_TOKEN: &str = "CANARYTOKEN-other-3d7a6c0e4b1f";
/// The secret part of the alerting policy's webhook URL (`mechanisms` is not auditable).
const WEBHOOK_CANARY: &str = "CANARY-WEBHOOK-9e4d2a7b1f60";
/// The DNS record's free-text comment (not auditable).
const COMMENT_CANARY: &str = "CANARY-DNS-COMMENT-41c8e7";

const DEMO: &str = "acc_demo";
const OTHER: &str = "acc_other";
const ALICE: &str = "alice@example.com";
const ALICE_ID: &str = "7c5dae5552338874e5053f2534d2767a";
const BOB: &str = "bob@example.org";
const SEEDED_POLICY: &str = "0da2b59e-f118-439d-8097-bdfb215203c9";
const USER_AGENT: &str = "demo-e2e/1.0 (demo_end_to_end)";

/// The full webhook URL of the policies the tests write.
fn webhook_url() -> String {
    format!("https://hooks.example.com/{WEBHOOK_CANARY}/T000/B000")
}

// ---------------------------------------------------------------------------------------------
// The binary
// ---------------------------------------------------------------------------------------------

/// The `demo-app` binary, built once per test process by `cargo build -p demo-app`.
fn demo_binary() -> &'static Path {
    static BINARY: OnceLock<PathBuf> = OnceLock::new();
    BINARY.get_or_init(build_demo_binary)
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the tests crate lives in the workspace")
        .to_path_buf()
}

fn build_demo_binary() -> PathBuf {
    let root = workspace_root();
    let cargo = std::env::var_os("CARGO")
        .or_else(|| option_env!("CARGO").map(Into::into))
        .unwrap_or_else(|| "cargo".into());
    let output = Command::new(cargo)
        .args(["build", "-p", "demo-app", "--bin", "demo-app"])
        .arg("--message-format=json-render-diagnostics")
        .arg("--manifest-path")
        .arg(root.join("Cargo.toml"))
        .current_dir(&root)
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()
        .expect("cargo runs");
    assert!(
        output.status.success(),
        "cargo build -p demo-app failed: {}",
        output.status
    );
    // The executable cargo reports, wherever the target directory is; else the usual place.
    let reported = String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .filter(|m| m["reason"] == "compiler-artifact" && m["target"]["name"] == "demo-app")
        .filter_map(|m| m["executable"].as_str().map(PathBuf::from))
        .next_back();
    let path = reported.unwrap_or_else(|| {
        let target = std::env::var_os("CARGO_TARGET_DIR")
            .map(PathBuf::from)
            .map_or_else(|| root.join("target"), |t| root.join(t));
        target
            .join("debug")
            .join(format!("demo-app{}", std::env::consts::EXE_SUFFIX))
    });
    assert!(path.is_file(), "no demo-app binary at {}", path.display());
    path
}

/// A command for the binary with a clean environment for its settings: only what a test
/// passes reaches it.
fn demo_command() -> Command {
    let mut command = Command::new(demo_binary());
    for name in [
        "DEMO_LISTEN",
        "DATABASE_URL",
        "DEMO_DATA_DIR",
        "DEMO_ADMIN_TOKEN",
        "DEMO_OTHER_TOKEN",
        "DEMO_PASSWORD",
        "RUST_LOG",
    ] {
        command.env_remove(name);
    }
    command.stdin(Stdio::null());
    command
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A running `demo-app`, killed (SIGKILL) if the test ends without stopping it.
struct Demo {
    child: Option<Child>,
    base: String,
    stdout: PathBuf,
    stderr: PathBuf,
}

impl Demo {
    /// Starts the binary on a free port with its data in `data_dir` and its output in
    /// `logs_dir`, and waits until `/healthz` answers.
    async fn start(data_dir: &Path, logs_dir: &Path) -> Self {
        std::fs::create_dir_all(logs_dir).unwrap();
        // Each start gets its own log files, so that a restart keeps the first run's.
        let n = std::fs::read_dir(logs_dir).unwrap().count();
        let stdout = logs_dir.join(format!("stdout-{n}.txt"));
        let stderr = logs_dir.join(format!("stderr-{n}.txt"));
        let mut last_error = String::new();
        // The port is free when picked; if another process takes it first, try another.
        for _ in 0..3 {
            let port = free_port();
            let child = demo_command()
                .arg("--listen")
                .arg(format!("127.0.0.1:{port}"))
                .arg("--data-dir")
                .arg(data_dir)
                .env("DEMO_ADMIN_TOKEN", ADMIN_TOKEN)
                .env("DEMO_OTHER_TOKEN", OTHER_TOKEN)
                .env("DEMO_PASSWORD", PASSWORD)
                .stdout(std::fs::File::create(&stdout).unwrap())
                .stderr(std::fs::File::create(&stderr).unwrap())
                .spawn()
                .expect("demo-app starts");
            let mut demo = Self {
                child: Some(child),
                base: format!("http://127.0.0.1:{port}"),
                stdout: stdout.clone(),
                stderr: stderr.clone(),
            };
            match demo.wait_healthy().await {
                Ok(()) => return demo,
                Err(e) => last_error = e,
            }
        }
        panic!("demo-app did not become healthy: {last_error}");
    }

    async fn wait_healthy(&mut self) -> Result<(), String> {
        let client = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                self.child = None;
                return Err(format!(
                    "exited with {status}; stderr: {}",
                    std::fs::read_to_string(&self.stderr).unwrap_or_default()
                ));
            }
            if let Ok(reply) = client
                .get(format!("{}/healthz", self.base))
                .timeout(Duration::from_secs(2))
                .send()
                .await
                && reply.status() == 200
            {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err("no answer from /healthz within 30 s".into());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Stops the binary with SIGTERM (graceful: in-flight requests finish and the audit
    /// pipeline is flushed) and waits for it to exit.
    async fn stop(&mut self) -> ExitStatus {
        let mut child = self.child.take().expect("running");
        let signalled = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .expect("kill runs");
        assert!(signalled.success(), "kill -TERM failed: {signalled}");
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("demo-app did not exit within 20 s of SIGTERM");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn stdout(&self) -> String {
        std::fs::read_to_string(&self.stdout).unwrap_or_default()
    }

    fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }
}

impl Drop for Demo {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

// ---------------------------------------------------------------------------------------------
// HTTP
// ---------------------------------------------------------------------------------------------

#[derive(Clone, Debug)]
enum Auth {
    None,
    Bearer(String),
    Session(String),
}

impl Auth {
    fn admin() -> Self {
        Self::Bearer(ADMIN_TOKEN.into())
    }

    fn other() -> Self {
        Self::Bearer(OTHER_TOKEN.into())
    }
}

#[derive(Debug)]
struct Reply {
    status: u16,
    /// The `x-request-id` header: the record's `raw.ray_id`.
    ray_id: Option<String>,
    set_cookie: Vec<String>,
    text: String,
}

impl Reply {
    fn json(&self) -> Value {
        serde_json::from_str(&self.text)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", self.text))
    }

    fn ray(&self) -> String {
        self.ray_id
            .clone()
            .unwrap_or_else(|| panic!("no x-request-id on an audited answer: {self:?}"))
    }

    fn expect(self, status: u16, what: &str) -> Self {
        assert_eq!(self.status, status, "{what}: {}", self.text);
        self
    }
}

/// A client of one running app that remembers every `x-request-id` it was answered with.
struct Api {
    client: reqwest::Client,
    base: String,
    rays: Mutex<Vec<String>>,
}

impl Api {
    fn new(demo: &Demo) -> Self {
        Self {
            client: reqwest::Client::builder()
                .user_agent(USER_AGENT)
                .timeout(Duration::from_secs(20))
                .build()
                .unwrap(),
            base: demo.base.clone(),
            rays: Mutex::new(Vec::new()),
        }
    }

    async fn call(
        &self,
        method: Method,
        path: &str,
        query: &[(&str, &str)],
        auth: &Auth,
        body: Option<&Value>,
    ) -> Reply {
        let url = format!("{}{path}", self.base);
        // Without parameters, no `?` at all (an empty query is still a query).
        let url = if query.is_empty() {
            reqwest::Url::parse(&url)
        } else {
            reqwest::Url::parse_with_params(&url, query)
        }
        .expect("a valid URL");
        let mut request = self.client.request(method, url);
        request = match auth {
            Auth::None => request,
            Auth::Bearer(token) => request.bearer_auth(token),
            Auth::Session(session) => {
                request.header("cookie", format!("theme=dark; demo_session={session}"))
            }
        };
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = request.send().await.expect("the app answers");
        let status = response.status().as_u16();
        let ray_id = response
            .headers()
            .get("x-request-id")
            .map(|v| v.to_str().unwrap().to_owned());
        let set_cookie = response
            .headers()
            .get_all("set-cookie")
            .iter()
            .map(|v| v.to_str().unwrap().to_owned())
            .collect();
        let text = response.text().await.unwrap();
        if let Some(ray) = &ray_id {
            self.rays.lock().unwrap().push(ray.clone());
        }
        Reply {
            status,
            ray_id,
            set_cookie,
            text,
        }
    }

    async fn get(&self, path: &str, auth: &Auth) -> Reply {
        self.call(Method::GET, path, &[], auth, None).await
    }

    async fn post(&self, path: &str, auth: &Auth, body: &Value) -> Reply {
        self.call(Method::POST, path, &[], auth, Some(body)).await
    }

    async fn put(&self, path: &str, auth: &Auth, body: &Value) -> Reply {
        self.call(Method::PUT, path, &[], auth, Some(body)).await
    }

    async fn delete(&self, path: &str, auth: &Auth) -> Reply {
        self.call(Method::DELETE, path, &[], auth, None).await
    }

    fn rays(&self) -> Vec<String> {
        self.rays.lock().unwrap().clone()
    }

    /// Logs in; the session cookie's value.
    async fn login(&self, email: &str, password: &str) -> (Reply, Option<String>) {
        let reply = self
            .post(
                "/login",
                &Auth::None,
                &json!({"email": email, "password": password}),
            )
            .await;
        let session = reply.set_cookie.iter().find_map(|c| {
            c.split(';')
                .next()?
                .trim()
                .strip_prefix("demo_session=")
                .filter(|v| !v.is_empty())
                .map(str::to_owned)
        });
        (reply, session)
    }
}

/// `since` (yesterday) and `before` (tomorrow) as dates, which cover every record of a test.
fn log_window() -> (String, String) {
    let day = 24 * 60 * 60 * 1000;
    let now = Timestamp::now().unix_millis();
    let date = |ms: i64| Timestamp::from_unix_millis(ms).to_string()[..10].to_owned();
    (date(now - day), date(now + day))
}

/// An account's whole audit log, read through the app's query API page by page.
struct LogRead {
    records: Vec<Value>,
    /// Every page's body, as answered.
    bodies: Vec<String>,
    pages: usize,
}

impl LogRead {
    fn by_ray(&self) -> HashMap<String, Vec<&Value>> {
        let mut map: HashMap<String, Vec<&Value>> = HashMap::new();
        for record in &self.records {
            let ray = record["raw"]["ray_id"].as_str().unwrap_or_default();
            map.entry(ray.to_owned()).or_default().push(record);
        }
        map
    }

    fn one(&self, ray: &str) -> &Value {
        let found: Vec<&Value> = self
            .records
            .iter()
            .filter(|r| r["raw"]["ray_id"] == ray)
            .collect();
        assert_eq!(found.len(), 1, "records with raw.ray_id {ray}: {found:#?}");
        found[0]
    }
}

async fn read_log(api: &Api, account: &str, auth: &Auth, limit: u32) -> LogRead {
    let (since, before) = log_window();
    let limit = limit.to_string();
    let mut cursor: Option<String> = None;
    let mut read = LogRead {
        records: Vec::new(),
        bodies: Vec::new(),
        pages: 0,
    };
    loop {
        let mut query = vec![
            ("since", since.as_str()),
            ("before", before.as_str()),
            ("limit", limit.as_str()),
        ];
        if let Some(cursor) = &cursor {
            query.push(("cursor", cursor.as_str()));
        }
        let path = format!("/accounts/{account}/logs/audit");
        let reply = api
            .call(Method::GET, &path, &query, auth, None)
            .await
            .expect(200, "reading the audit log");
        let body = reply.json();
        assert_eq!(body["success"], true, "{body}");
        let page = body["result"].as_array().expect("result is an array");
        assert_eq!(
            body["result_info"]["count"],
            page.len(),
            "result_info.count: {body}"
        );
        read.records.extend(page.iter().cloned());
        read.bodies.push(reply.text);
        read.pages += 1;
        assert!(read.pages <= 1000, "the cursor never ends");
        match body["result_info"]["cursor"].as_str() {
            Some(next) => {
                assert_eq!(
                    body["result_info"]["cursors"]["after"], next,
                    "cursor and cursors.after differ"
                );
                cursor = Some(next.to_owned());
            }
            None => break,
        }
    }
    read
}

/// Reads the log until every one of `rays` is in it (the pipeline writes in batches, off the
/// request path), or fails naming the missing ones.
async fn wait_for_rays(api: &Api, account: &str, auth: &Auth, rays: &[String]) -> LogRead {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let read = read_log(api, account, auth, 1000).await;
        let present = read.by_ray();
        let missing: Vec<&String> = rays.iter().filter(|r| !present.contains_key(*r)).collect();
        if missing.is_empty() {
            return read;
        }
        assert!(
            Instant::now() < deadline,
            "{} of {} records never reached {account}'s audit log: {missing:?}",
            missing.len(),
            rays.len()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Asserts `record`'s value at each JSON pointer.
#[track_caller]
fn assert_fields(what: &str, record: &Value, fields: &[(&str, Value)]) {
    for (pointer, expected) in fields {
        let actual = record.pointer(pointer).unwrap_or(&Value::Null);
        assert_eq!(
            actual, expected,
            "{what}: {pointer} is {actual}, expected {expected}; record: {record:#}"
        );
    }
}

#[track_caller]
fn assert_valid(record: &Value) {
    if let Err(e) = audit_layer::schema::validate_json(record) {
        panic!("record does not validate against the schema: {e}; {record:#}");
    }
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

    let record = log.one(s.ray("login"));
    assert_fields(
        "login",
        record,
        &[
            ("/action/type", json!("login")),
            ("/action/result", json!("success")),
            ("/action/description", json!("Log in")),
            ("/resource/scope", json!("user")),
            ("/resource/product", json!("auth")),
            ("/resource/type", json!("sessions")),
            ("/resource/id", json!(ALICE_ID)),
            ("/resource/response", json!({"user": {"id": ALICE_ID}})),
            ("/raw/method", json!("POST")),
            ("/raw/status_code", json!(200)),
            ("/raw/uri", json!("/login")),
        ],
    );
    assert_fields("login", record, &alice_dash);

    let record = log.one(s.ray("dash_zones"));
    assert_fields(
        "dashboard zones",
        record,
        &[
            ("/action/type", json!("view")),
            ("/action/result", json!("success")),
            ("/action/description", json!("List Zones")),
            ("/resource/product", json!("zones")),
            ("/resource/type", json!("zones")),
            ("/resource/request", Value::Null),
            ("/resource/response", Value::Null),
            ("/raw/method", json!("GET")),
            ("/raw/status_code", json!(200)),
            ("/raw/uri", json!("/zones")),
        ],
    );
    assert_fields("dashboard zones", record, &alice_dash);

    let record = log.one(s.ray("dash_policies"));
    assert_fields(
        "dashboard policies",
        record,
        &[
            ("/action/type", json!("view")),
            ("/action/result", json!("success")),
            ("/resource/scope", json!("accounts")),
            ("/resource/product", json!("alerting")),
            ("/resource/type", json!("policies")),
            ("/raw/method", json!("GET")),
            ("/raw/status_code", json!(200)),
        ],
    );
    assert_fields("dashboard policies", record, &alice_dash);

    let record = log.one(s.ray("token_create"));
    assert_fields(
        "token creation",
        record,
        &[
            ("/action/type", json!("create")),
            ("/action/result", json!("success")),
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
            ("/raw/method", json!("POST")),
            ("/raw/status_code", json!(200)),
        ],
    );
    assert_fields("token creation", record, &alice_dash);

    let record = log.one(s.ray("token_use"));
    assert_fields(
        "the new token's first use",
        record,
        &[
            ("/action/type", json!("view")),
            ("/action/result", json!("success")),
            ("/resource/product", json!("tokens")),
            ("/raw/method", json!("GET")),
            ("/raw/status_code", json!(200)),
        ],
    );
    assert_fields("the new token's first use", record, &alice_token);

    let record = log.one(s.ray("zone_lookup"));
    assert_fields(
        "zone lookup",
        record,
        &[
            ("/action/type", json!("view")),
            ("/raw/uri", json!("/zones?name=example.com")),
            ("/raw/status_code", json!(200)),
        ],
    );
    assert_fields("zone lookup", record, &alice_token);

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
    for (step, action, method, description, request) in [
        (
            "policy_create",
            "create",
            "POST",
            "Create a Notification policy",
            Some(policy_request("e2e policy", true)),
        ),
        (
            "policy_update",
            "update",
            "PUT",
            "Update a Notification policy",
            Some(policy_request("e2e policy renamed", false)),
        ),
        (
            "policy_delete",
            "delete",
            "DELETE",
            "Delete a Notification policy",
            None,
        ),
    ] {
        let record = log.one(s.ray(step));
        assert_fields(
            step,
            record,
            &[
                ("/action/type", json!(action)),
                ("/action/result", json!("success")),
                ("/action/description", json!(description)),
                ("/resource/scope", json!("accounts")),
                ("/resource/product", json!("alerting")),
                ("/resource/type", json!("policies")),
                ("/resource/id", json!(s.policy_id)),
                ("/resource/response", json!({"id": s.policy_id})),
                ("/raw/method", json!(method)),
                ("/raw/status_code", json!(200)),
            ],
        );
        assert_fields(step, record, &alice_token);
        if let Some(request) = request {
            assert_fields(step, record, &[("/resource/request", request)]);
        }
        if step != "policy_create" {
            assert_fields(step, record, &[("/raw/uri", json!(policy_uri))]);
        }
    }

    let dns_request = |content: &str| json!({"type": "A", "name": "e2e", "content": content, "ttl": 300, "proxied": false});
    let dns_response = |content: &str| {
        json!({"id": s.dns_id, "zone_id": s.zone_id, "type": "A", "name": "e2e.example.com",
            "content": content, "ttl": 300, "proxied": false})
    };
    for (step, action, method, request, response) in [
        (
            "dns_create",
            "create",
            "POST",
            Some(dns_request("192.0.2.55")),
            dns_response("192.0.2.55"),
        ),
        (
            "dns_update",
            "update",
            "PUT",
            Some(dns_request("192.0.2.56")),
            dns_response("192.0.2.56"),
        ),
        (
            "dns_delete",
            "delete",
            "DELETE",
            None,
            json!({"id": s.dns_id}),
        ),
    ] {
        let record = log.one(s.ray(step));
        assert_fields(
            step,
            record,
            &[
                ("/action/type", json!(action)),
                ("/action/result", json!("success")),
                ("/zone/id", json!(s.zone_id)),
                ("/zone/name", json!("example.com")),
                ("/resource/scope", json!("zones")),
                ("/resource/product", json!("dns")),
                ("/resource/type", json!("dns_records")),
                ("/resource/id", json!(s.dns_id)),
                ("/resource/response", response),
                ("/raw/method", json!(method)),
                ("/raw/status_code", json!(200)),
            ],
        );
        assert_fields(step, record, &alice_dash);
        if let Some(request) = request {
            assert_fields(step, record, &[("/resource/request", request)]);
        }
    }

    let record = log.one(s.ray("login_failed"));
    assert_fields(
        "failed login",
        record,
        &[
            ("/action/type", json!("login")),
            ("/action/result", json!("failure")),
            ("/resource/product", json!("auth")),
            ("/resource/type", json!("sessions")),
            ("/raw/method", json!("POST")),
            ("/raw/status_code", json!(401)),
            ("/raw/uri", json!("/login")),
            ("/actor/ip_address", json!("127.0.0.1")),
            // Authentication failed: who tried is unknown.
            ("/actor/email", Value::Null),
            ("/actor/id", Value::Null),
            ("/actor/context", Value::Null),
        ],
    );

    let record = log.one(s.ray("logout"));
    assert_fields(
        "logout",
        record,
        &[
            ("/action/type", json!("logout")),
            ("/action/result", json!("success")),
            ("/raw/status_code", json!(204)),
        ],
    );
    assert_fields("logout", record, &alice_dash);

    // One record read by id, through the same router.
    let id = log.one(s.ray("policy_create"))["id"].as_str().unwrap();
    let reply = api
        .get(&format!("/accounts/{DEMO}/logs/audit/{id}"), &admin)
        .await
        .expect(200, "one record by id");
    let one = reply.json();
    assert_eq!(one["result"], *log.one(s.ray("policy_create")));
    assert_valid(&one["result"]);
}

// ---------------------------------------------------------------------------------------------
// 2. Secrets: nothing in clear on disk, nothing non-auditable in the audit log
// ---------------------------------------------------------------------------------------------

fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files.extend(files_under(&path));
        } else {
            files.push(path);
        }
    }
    files
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

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
        let id = log.one(s.ray(step))["id"].as_str().unwrap().to_owned();
        let reply = api
            .get(&format!("/accounts/{DEMO}/logs/audit/{id}"), &admin)
            .await
            .expect(200, "one record by id");
        answered.push(reply.text);
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
    // exist, with nothing of acc_demo's log in it.
    let not_found = json!({"success": false, "errors": [{"code": 10404, "message": "not found"}],
        "messages": [], "result": null});
    let path = format!("/accounts/{DEMO}/logs/audit");
    let reply = api.call(Method::GET, &path, &window, &other, None).await;
    assert_eq!(reply.status, 404, "{}", reply.text);
    assert_eq!(reply.json(), not_found);
    for leak in [
        demo_ray.as_str(),
        demo_record_id.as_str(),
        ALICE,
        "Example account",
    ] {
        assert!(!reply.text.contains(leak), "the 404 shows {leak}");
    }
    let missing = api
        .call(
            Method::GET,
            "/accounts/acc_nope/logs/audit",
            &window,
            &other,
            None,
        )
        .await;
    assert_eq!((missing.status, missing.json()), (404, not_found.clone()));
    // Also with a filter that would match, and by record id.
    let reply = api
        .call(
            Method::GET,
            &path,
            &[
                ("since", since.as_str()),
                ("before", before.as_str()),
                ("raw_ray_id", demo_ray.as_str()),
            ],
            &other,
            None,
        )
        .await;
    assert_eq!((reply.status, reply.json()), (404, not_found.clone()));
    let reply = api
        .get(
            &format!("/accounts/{DEMO}/logs/audit/{demo_record_id}"),
            &other,
        )
        .await;
    assert_eq!((reply.status, reply.json()), (404, not_found.clone()));

    // Another account's record id under one's own account: 404, as an id that does not exist.
    let reply = api
        .get(
            &format!("/accounts/{DEMO}/logs/audit/{other_record_id}"),
            &admin,
        )
        .await;
    assert_eq!((reply.status, reply.json()), (404, not_found.clone()));
    let reply = api
        .get(
            &format!("/accounts/{OTHER}/logs/audit/{other_record_id}"),
            &admin,
        )
        .await;
    assert_eq!((reply.status, reply.json()), (404, not_found.clone()));
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
    for body in &other_log.bodies {
        for leak in ["Example account", ALICE, DEMO, "example.com\""] {
            assert!(!body.contains(leak), "acc_other's log shows {leak}: {body}");
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
        assert_eq!(by_ray[ray].len(), 1, "records with raw.ray_id {ray}");
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
    let mut child = command.spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("demo-app {args:?} {env:?} did not exit: it started instead of refusing");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let output = child.wait_with_output().unwrap();
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
