//! Shared helpers for the end-to-end tests of the real `demo-app` binary: building it once,
//! running it on a free loopback port with its data in a directory the test owns (killed if the
//! test ends without stopping it, stopped gracefully with SIGTERM otherwise), calling it over
//! HTTP, and reading its audit log through its own query API.
//!
//! One implementation of each of these, for every test file that drives the binary.

use std::collections::HashMap;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use audit_layer::record::Timestamp;
use reqwest::Method;
use serde_json::{Value, json};

// ---------------------------------------------------------------------------------------------
// What the demo seeds, and the canary secrets the tests give it
// ---------------------------------------------------------------------------------------------

/// The seeded users' password (`DEMO_PASSWORD`): a canary that must never reach the audit log.
pub const PASSWORD: &str = "CANARY-PASSWORD-7f3c9e21d4a8";
/// `acc_demo`'s seeded API token (`DEMO_ADMIN_TOKEN`): a canary.
pub const ADMIN_TOKEN: &str = "CANARYTOKEN-admin-5b8e2f1a9c3d";
/// `acc_other`'s seeded API token (`DEMO_OTHER_TOKEN`): a canary.
pub const OTHER_TOKEN: &str = "CANARYTOKEN-other-3d7a6c0e4b1f";

/// The seeded account that alice administers.
pub const DEMO: &str = "acc_demo";
/// The seeded account of bob.
pub const OTHER: &str = "acc_other";
/// `acc_demo`'s user, whose API token is [`ADMIN_TOKEN`].
pub const ALICE: &str = "alice@example.com";
/// Alice's user id.
pub const ALICE_ID: &str = "7c5dae5552338874e5053f2534d2767a";
/// `acc_other`'s user, whose API token is [`OTHER_TOKEN`].
pub const BOB: &str = "bob@example.org";
/// The id of `acc_demo`'s seeded alerting policy.
pub const SEEDED_POLICY: &str = "0da2b59e-f118-439d-8097-bdfb215203c9";
/// The `User-Agent` of [`Api`]'s requests.
pub const USER_AGENT: &str = "demo-e2e/1.0 (audit-tests)";

// ---------------------------------------------------------------------------------------------
// The binary
// ---------------------------------------------------------------------------------------------

/// The `demo-app` binary, built once per test process by `cargo build -p demo-app`.
pub fn demo_binary() -> &'static Path {
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
pub fn demo_command() -> Command {
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
        .and_then(|listener| listener.local_addr())
        .expect("a free loopback port")
        .port()
}

// ---------------------------------------------------------------------------------------------
// The running process
// ---------------------------------------------------------------------------------------------

/// A running `demo-app`, killed (SIGKILL) if the test ends without stopping it.
#[derive(Debug)]
pub struct Demo {
    child: Option<Child>,
    addr: SocketAddr,
    base: String,
    stdout: PathBuf,
    stderr: PathBuf,
}

impl Demo {
    /// Starts the binary on a free port with its data in `data_dir`, its output in `logs_dir`
    /// and the canary secrets ([`ADMIN_TOKEN`], [`OTHER_TOKEN`], [`PASSWORD`]) in its
    /// environment, and waits until `/healthz` answers.
    pub async fn start(data_dir: &Path, logs_dir: &Path) -> Self {
        std::fs::create_dir_all(logs_dir).expect("the logs directory can be created");
        // Each start gets its own log files, so that a restart keeps the first run's.
        let n = std::fs::read_dir(logs_dir)
            .expect("the logs directory can be read")
            .count();
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
                .stdout(std::fs::File::create(&stdout).expect("the stdout file can be created"))
                .stderr(std::fs::File::create(&stderr).expect("the stderr file can be created"))
                .spawn()
                .expect("demo-app starts");
            let addr = SocketAddr::from(([127, 0, 0, 1], port));
            let mut demo = Self {
                child: Some(child),
                addr,
                base: format!("http://{addr}"),
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

    /// The address it listens on, for clients that speak raw TCP.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Its base URL, `http://127.0.0.1:<port>`.
    pub fn base(&self) -> &str {
        &self.base
    }

    /// Whether the process has exited, and how (`None` while it runs).
    fn exited(&mut self) -> Option<ExitStatus> {
        let child = self.child.as_mut()?;
        child.try_wait().expect("the child's status can be read")
    }

    async fn wait_healthy(&mut self) -> Result<(), String> {
        let client = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.exited() {
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

    /// Asserts that the process still runs and answers `GET /healthz` with `200` within 5 s;
    /// `after` says what it just went through, for the failure message.
    pub async fn assert_alive(&mut self, after: &str) {
        if let Some(status) = self.exited() {
            self.child = None;
            panic!(
                "demo-app exited with {status} after {after}; stderr: {}",
                self.stderr()
            );
        }
        let reply = reqwest::Client::new()
            .get(format!("{}/healthz", self.base))
            .timeout(Duration::from_secs(5))
            .send()
            .await;
        match reply {
            Ok(reply) if reply.status() == 200 => {}
            Ok(reply) => panic!("/healthz answers {} after {after}", reply.status()),
            Err(e) => panic!("/healthz does not answer after {after}: {e}"),
        }
    }

    /// Stops the binary with SIGTERM (graceful: in-flight requests finish and the audit
    /// pipeline is flushed) and waits for it to exit.
    pub async fn stop(&mut self) -> ExitStatus {
        let mut child = self.child.take().expect("running");
        let signalled = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .expect("kill runs");
        assert!(signalled.success(), "kill -TERM failed: {signalled}");
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = child.try_wait().expect("the child's status can be read") {
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

    /// What it printed on stdout so far.
    pub fn stdout(&self) -> String {
        std::fs::read_to_string(&self.stdout).unwrap_or_default()
    }

    /// What it printed on stderr so far.
    pub fn stderr(&self) -> String {
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

/// How a request authenticates.
#[derive(Clone, Debug)]
pub enum Auth {
    /// No credentials.
    None,
    /// `Authorization: Bearer <token>`.
    Bearer(String),
    /// The dashboard session cookie.
    Session(String),
}

impl Auth {
    /// `acc_demo`'s seeded API token (alice's).
    pub fn admin() -> Self {
        Self::Bearer(ADMIN_TOKEN.into())
    }

    /// `acc_other`'s seeded API token (bob's).
    pub fn other() -> Self {
        Self::Bearer(OTHER_TOKEN.into())
    }
}

/// An answer, read whole.
#[derive(Debug)]
pub struct Reply {
    /// The status code.
    pub status: u16,
    /// The `x-request-id` header: the record's `raw.ray_id`.
    pub ray_id: Option<String>,
    /// Every `Set-Cookie` header.
    pub set_cookie: Vec<String>,
    /// The body, as text.
    pub text: String,
}

impl Reply {
    /// The body as JSON; panics if it is not.
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.text)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", self.text))
    }

    /// The `x-request-id`; panics if there is none.
    pub fn ray(&self) -> String {
        self.ray_id
            .clone()
            .unwrap_or_else(|| panic!("no x-request-id on an audited answer: {self:?}"))
    }

    /// Asserts the status, naming `what` on failure.
    #[track_caller]
    pub fn expect(self, status: u16, what: &str) -> Self {
        assert_eq!(self.status, status, "{what}: {}", self.text);
        self
    }
}

/// A client of one running app that remembers every `x-request-id` it was answered with.
#[derive(Debug)]
pub struct Api {
    client: reqwest::Client,
    base: String,
    rays: Mutex<Vec<String>>,
}

impl Api {
    /// A client of `demo`, sending [`USER_AGENT`].
    pub fn new(demo: &Demo) -> Self {
        Self {
            client: reqwest::Client::builder()
                .user_agent(USER_AGENT)
                .timeout(Duration::from_secs(20))
                .build()
                .expect("a reqwest client"),
            base: demo.base.clone(),
            rays: Mutex::new(Vec::new()),
        }
    }

    /// A request to `path` (with the `query` parameters, if any) carrying `auth`, for the
    /// caller to complete (headers, a body) and [`send`](Self::send).
    pub fn request(
        &self,
        method: Method,
        path: &str,
        query: &[(&str, &str)],
        auth: &Auth,
    ) -> reqwest::RequestBuilder {
        let url = format!("{}{path}", self.base);
        // Without parameters, no `?` at all (an empty query is still a query).
        let url = if query.is_empty() {
            reqwest::Url::parse(&url)
        } else {
            reqwest::Url::parse_with_params(&url, query)
        }
        .expect("a valid URL");
        let request = self.client.request(method, url);
        match auth {
            Auth::None => request,
            Auth::Bearer(token) => request.bearer_auth(token),
            Auth::Session(session) => {
                request.header("cookie", format!("theme=dark; demo_session={session}"))
            }
        }
    }

    /// Sends `request` and reads the answer whole.
    pub async fn send(&self, request: reqwest::RequestBuilder) -> Reply {
        let response = request.send().await.expect("the app answers");
        let status = response.status().as_u16();
        let ray_id = response
            .headers()
            .get("x-request-id")
            .map(|v| v.to_str().expect("an ASCII x-request-id").to_owned());
        let set_cookie = response
            .headers()
            .get_all("set-cookie")
            .iter()
            .map(|v| v.to_str().expect("an ASCII Set-Cookie").to_owned())
            .collect();
        let text = response.text().await.expect("the body is read");
        if let Some(ray) = &ray_id {
            self.rays
                .lock()
                .expect("the lock is not poisoned")
                .push(ray.clone());
        }
        Reply {
            status,
            ray_id,
            set_cookie,
            text,
        }
    }

    /// `method path?query` with `auth` and a JSON `body`.
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        query: &[(&str, &str)],
        auth: &Auth,
        body: Option<&Value>,
    ) -> Reply {
        let mut request = self.request(method, path, query, auth);
        if let Some(body) = body {
            request = request.json(body);
        }
        self.send(request).await
    }

    /// `GET path`.
    pub async fn get(&self, path: &str, auth: &Auth) -> Reply {
        self.call(Method::GET, path, &[], auth, None).await
    }

    /// `POST path` with a JSON body.
    pub async fn post(&self, path: &str, auth: &Auth, body: &Value) -> Reply {
        self.call(Method::POST, path, &[], auth, Some(body)).await
    }

    /// `PUT path` with a JSON body.
    pub async fn put(&self, path: &str, auth: &Auth, body: &Value) -> Reply {
        self.call(Method::PUT, path, &[], auth, Some(body)).await
    }

    /// `DELETE path`.
    pub async fn delete(&self, path: &str, auth: &Auth) -> Reply {
        self.call(Method::DELETE, path, &[], auth, None).await
    }

    /// Every `x-request-id` answered so far, in order.
    pub fn rays(&self) -> Vec<String> {
        self.rays.lock().expect("the lock is not poisoned").clone()
    }

    /// Logs in; the answer and the session cookie's value.
    pub async fn login(&self, email: &str, password: &str) -> (Reply, Option<String>) {
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

// ---------------------------------------------------------------------------------------------
// The audit log, read through the app's query API
// ---------------------------------------------------------------------------------------------

/// `since` (yesterday) and `before` (tomorrow) as dates, which cover every record of a test.
pub fn log_window() -> (String, String) {
    let day = 24 * 60 * 60 * 1000;
    let now = Timestamp::now().unix_millis();
    let date = |ms: i64| Timestamp::from_unix_millis(ms).to_string()[..10].to_owned();
    (date(now - day), date(now + day))
}

/// An account's audit log (or the part a filter selects), read page by page.
#[derive(Debug)]
pub struct LogRead {
    /// The records, as answered (newest first).
    pub records: Vec<Value>,
    /// Every page's body, as answered.
    pub bodies: Vec<String>,
    /// How many pages were read.
    pub pages: usize,
}

impl LogRead {
    /// The records by `raw.ray_id`.
    pub fn by_ray(&self) -> HashMap<String, Vec<&Value>> {
        let mut map: HashMap<String, Vec<&Value>> = HashMap::new();
        for record in &self.records {
            let ray = record["raw"]["ray_id"].as_str().unwrap_or_default();
            map.entry(ray.to_owned()).or_default().push(record);
        }
        map
    }

    /// The one record with `raw.ray_id` `ray`; panics unless there is exactly one.
    #[track_caller]
    pub fn one(&self, ray: &str) -> &Value {
        let found: Vec<&Value> = self
            .records
            .iter()
            .filter(|r| r["raw"]["ray_id"] == ray)
            .collect();
        assert_eq!(found.len(), 1, "records with raw.ray_id {ray}: {found:#?}");
        found[0]
    }
}

/// `account`'s whole audit log of the [`log_window`], read in pages of `limit`.
pub async fn read_log(api: &Api, account: &str, auth: &Auth, limit: u32) -> LogRead {
    read_log_where(api, account, auth, &[], limit).await
}

/// The records of `account`'s audit log in the [`log_window`] that match `filters` (the query
/// API's own parameters, e.g. `("raw_ray_id", ray)`), read in pages of `limit`.
pub async fn read_log_where(
    api: &Api,
    account: &str,
    auth: &Auth,
    filters: &[(&str, &str)],
    limit: u32,
) -> LogRead {
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
        query.extend_from_slice(filters);
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
pub async fn wait_for_rays(api: &Api, account: &str, auth: &Auth, rays: &[String]) -> LogRead {
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

/// The records with `raw.ray_id` `ray` in `account`'s log, read by that filter once at least
/// one is there, or fails after 15 s.
pub async fn wait_for_ray(api: &Api, account: &str, auth: &Auth, ray: &str) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let read = read_log_where(api, account, auth, &[("raw_ray_id", ray)], 1000).await;
        if !read.records.is_empty() {
            return read.records;
        }
        assert!(
            Instant::now() < deadline,
            "no record with raw.ray_id {ray} reached {account}'s audit log in 15 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Asserts `record`'s value at each JSON pointer.
#[track_caller]
pub fn assert_fields(what: &str, record: &Value, fields: &[(&str, Value)]) {
    for (pointer, expected) in fields {
        let actual = record.pointer(pointer).unwrap_or(&Value::Null);
        assert_eq!(
            actual, expected,
            "{what}: {pointer} is {actual}, expected {expected}; record: {record:#}"
        );
    }
}

/// Asserts that `record` validates against `schemas/audit-log.schema.json`.
#[track_caller]
pub fn assert_valid(record: &Value) {
    if let Err(e) = audit_layer::schema::validate_json(record) {
        panic!("record does not validate against the schema: {e}; {record:#}");
    }
}
