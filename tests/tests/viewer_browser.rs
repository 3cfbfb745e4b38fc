//! The audit log viewer (issue 21) in a real browser: Debian's headless Chromium driven
//! through its chromedriver (WebDriver, `fantoccini`), against the running demo binary.
//!
//! - a user logs in to the demo, opens the viewer, filters by clicking an actor, opens a
//!   record, follows its resource's history to an earlier write, loads the next page and
//!   exports; what the page shows is compared with what the query API answers for the same
//!   query (the history with the history endpoint's answer);
//! - an XSS corpus is put in every record string the demo records (user agent, URI, resource
//!   id, body values, token name, login email) through real requests: no dialog opens, the
//!   page-level canary stays unset, no request leaves for another origin, the payloads show
//!   as text, and the CSP header is present;
//! - `axe-core` (npm, MPL-2.0; installed with npm under the target dir when missing) finds no
//!   serious or critical accessibility violation in the list or a record;
//! - screenshots of the list and a record at 375 and 1,440 px wide are written to
//!   `<target>/viewer-screenshots/`.
//!
//! Needs `chromium` and `chromium-driver` (`apt-get install -y chromium chromium-driver`;
//! `.ci/run` installs them) and `npm`; without them each test says it is skipped (and fails
//! under `CI=true`). Run with `cargo test -p audit-tests --test viewer_browser`.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use audit_layer::record::Timestamp;
use audit_tests::{
    ADMIN_TOKEN, ALICE, Api, Auth, DEMO, Demo, EXAMPLE_ZONE, PASSWORD, SEEDED_POLICY, free_port,
    skip,
};
use fantoccini::{Client, ClientBuilder, Locator};
use reqwest::Method;
use serde_json::{Value, json};
use tokio::process::{Child, Command};

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
/// The longest any one wait in the page may take.
const WAIT: Duration = Duration::from_secs(15);

// ---------------------------------------------------------------------------------------------
// The browser

/// chromedriver on a free port, and a session of headless Chromium through it. Dropping it
/// kills chromedriver (and so the browser).
struct Browser {
    client: Client,
    _driver: Child,
    downloads: tempfile::TempDir,
}

/// Whether the browser tests can run here; says why not otherwise.
fn browser_available(test: &str) -> bool {
    for (path, package) in [(CHROMIUM, "chromium"), (CHROMEDRIVER, "chromium-driver")] {
        if !Path::new(path).exists() {
            skip(
                test,
                &format!("{path} is missing"),
                &format!("apt-get install -y {package}"),
            );
            return false;
        }
    }
    true
}

impl Browser {
    async fn start(width: u32, height: u32) -> Self {
        let port = free_port();
        let driver = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("chromedriver starts");
        let deadline = Instant::now() + WAIT;
        while tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_err()
        {
            assert!(Instant::now() < deadline, "chromedriver did not listen");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let downloads = tempfile::tempdir().expect("a download dir");
        let capabilities = json!({
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": CHROMIUM,
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu",
                         "--disable-dev-shm-usage", "--no-first-run",
                         format!("--window-size={width},{height}")],
                "prefs": {
                    "download.default_directory": downloads.path(),
                    "download.prompt_for_download": false,
                },
            },
        });
        let Value::Object(capabilities) = capabilities else {
            unreachable!()
        };
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        let client = ClientBuilder::new(connector)
            .capabilities(capabilities)
            .connect(&format!("http://127.0.0.1:{port}"))
            .await
            .expect("a WebDriver session");
        Self {
            client,
            _driver: driver,
            downloads,
        }
    }

    async fn js(&self, script: &str) -> Value {
        self.client
            .execute(script, Vec::new())
            .await
            .unwrap_or_else(|e| panic!("script {script:?} failed: {e}"))
    }

    /// Waits until `predicate` (a JS expression) is true.
    async fn until(&self, predicate: &str) {
        let deadline = Instant::now() + WAIT;
        loop {
            if self.js(&format!("return !!({predicate});")).await == json!(true) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the page never reached {predicate:?}; it shows: {}",
                self.js("return document.body.innerText.slice(0, 2000);")
                    .await
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn click(&self, css: &str) {
        self.client
            .find(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("no {css}: {e}"))
            .click()
            .await
            .unwrap_or_else(|e| panic!("cannot click {css}: {e}"));
    }

    /// The ids of the records the list shows, in order.
    async fn listed_ids(&self) -> Vec<String> {
        let ids = self
            .js("return Array.from(document.querySelectorAll('#records > li')).map(li => li.dataset.id);")
            .await;
        serde_json::from_value(ids).expect("a list of ids")
    }

    /// Logs in as alice through the demo's own `POST /login`, from the demo's origin: the
    /// session cookie the viewer then uses.
    async fn log_in(&self, demo: &Demo) {
        self.client
            .goto(&format!("{}/healthz", demo.base()))
            .await
            .expect("the demo answers");
        let status = self
            .client
            .execute_async(
                "const [email, password, done] = arguments;
                 fetch('/login', {method: 'POST', headers: {'content-type': 'application/json'},
                     body: JSON.stringify({email, password})}).then(r => done(r.status));",
                vec![json!(ALICE), json!(PASSWORD)],
            )
            .await
            .expect("the login runs");
        assert_eq!(status, json!(200), "alice logs in");
    }

    async fn screenshot(&self, name: &str) {
        let png = self.client.screenshot().await.expect("a screenshot");
        let dir = target_dir().join("viewer-screenshots");
        std::fs::create_dir_all(&dir).expect("the screenshot dir");
        std::fs::write(dir.join(format!("{name}.png")), png).expect("the screenshot is written");
    }

    async fn close(self) {
        let _ = self.client.close().await;
    }
}

fn target_dir() -> PathBuf {
    // <target>/debug/deps/<this test>
    std::env::current_exe()
        .expect("the test binary's path")
        .ancestors()
        .nth(3)
        .expect("the target dir")
        .to_owned()
}

// ---------------------------------------------------------------------------------------------
// The demo and its log

/// The range every view of a test shows: the last day up to now, as explicit times, so that
/// the page and the API are asked the same query. Reads of the log are audited too: their
/// records come after the range's end, so what the range holds stays the same once the
/// records already made have been written (waited for here).
async fn settled_range(api: &Api, count: usize) -> (String, String) {
    let now = Timestamp::now().unix_millis();
    let window = (
        Timestamp::from_unix_millis(now - 86_400_000).to_string(),
        Timestamp::from_unix_millis(now + 1).to_string(),
    );
    let deadline = Instant::now() + WAIT;
    let mut last = 0;
    loop {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let (ids, _) = api_page(
            api,
            &[
                ("since", &window.0),
                ("before", &window.1),
                ("limit", "1000"),
            ],
        )
        .await;
        if ids.len() >= count && ids.len() == last {
            return window;
        }
        assert!(
            Instant::now() < deadline,
            "only {} records arrived",
            ids.len()
        );
        last = ids.len();
    }
}

fn viewer_url(demo: &Demo, query: &[(&str, &str)]) -> String {
    let query: String = form_urlencoded(query);
    format!("{}/accounts/{DEMO}/logs/audit/viewer?{query}", demo.base())
}

fn form_urlencoded(pairs: &[(&str, &str)]) -> String {
    reqwest::Url::parse_with_params("http://x/", pairs)
        .expect("a URL")
        .query()
        .unwrap_or("")
        .to_owned()
}

/// A page of the API's answer for `query`: its record ids and cursor.
async fn api_page(api: &Api, query: &[(&str, &str)]) -> (Vec<String>, Option<String>) {
    let reply = api
        .call(
            Method::GET,
            &format!("/accounts/{DEMO}/logs/audit"),
            query,
            &Auth::Bearer(ADMIN_TOKEN.into()),
            None,
        )
        .await
        .expect(200, "the API answers");
    let body = reply.json();
    let ids = body["result"]
        .as_array()
        .expect("records")
        .iter()
        .map(|r| r["id"].as_str().expect("an id").to_owned())
        .collect();
    (
        ids,
        body["result_info"]["cursor"].as_str().map(str::to_owned),
    )
}

async fn start_demo() -> (tempfile::TempDir, Demo, Api) {
    let dir = tempfile::tempdir().expect("a temp dir");
    let demo = Demo::start(&dir.path().join("data"), &dir.path().join("logs")).await;
    let api = Api::new(&demo);
    (dir, demo, api)
}

// ---------------------------------------------------------------------------------------------
// The scenario

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_filters_by_actor_opens_a_record_pages_and_exports() {
    if !browser_available("a_user_filters_by_actor_opens_a_record_pages_and_exports") {
        return;
    }
    let (_dir, mut demo, api) = start_demo().await;
    let admin = Auth::Bearer(ADMIN_TOKEN.into());
    // More than a page (50) of records by the admin token, and some by alice's session.
    for i in 0..60 {
        let path = if i % 2 == 0 { "/zones" } else { "/accounts" };
        api.get(path, &admin).await.expect(200, "a read");
    }
    let (_, session) = api.login(ALICE, PASSWORD).await;
    let alice = Auth::Session(session.expect("a session"));
    for _ in 0..3 {
        api.get(&format!("/accounts/{DEMO}/members"), &alice)
            .await
            .expect(200, "alice reads members");
    }
    // Then she renames the seeded alerting policy twice: a resource with a history, her
    // newest records.
    let policy = format!("/accounts/{DEMO}/alerting/v3/policies/{SEEDED_POLICY}");
    for name in ["viewer first", "viewer second"] {
        let body = json!({
            "name": name,
            "enabled": true,
            "alert_type": "clickhouse_alert_fw_ent_anomaly",
            "filters": {"services": ["securitylevel"], "zones": [EXAMPLE_ZONE]},
        });
        api.put(&policy, &alice, &body)
            .await
            .expect(200, "alice updates the policy");
    }
    let window = settled_range(&api, 66).await;
    let (since, before) = (&window.0, &window.1);

    let browser = Browser::start(1440, 900).await;
    browser.log_in(&demo).await;
    browser
        .client
        .goto(&viewer_url(&demo, &[("since", since), ("before", before)]))
        .await
        .expect("the viewer opens");
    browser
        .until("document.querySelectorAll('#records > li').length > 0")
        .await;
    // The first page is the API's first page of 50, for the same query.
    let (first, cursor) = api_page(
        &api,
        &[("since", since), ("before", before), ("limit", "50")],
    )
    .await;
    assert!(cursor.is_some(), "the log holds more than a page");
    let listed = browser.listed_ids().await;
    assert_eq!(listed[..50], first[..], "the first page is the API's");

    // Load the next page (the button, unless scrolling to it already did): the page shows the
    // API's second page after the first.
    browser
        .js("const more = document.getElementById('more'); if (!more.hidden) more.click();")
        .await;
    browser
        .until("document.querySelectorAll('#records > li').length > 50")
        .await;
    let cursor = cursor.unwrap();
    let (second, _) = api_page(
        &api,
        &[
            ("since", since),
            ("before", before),
            ("limit", "50"),
            ("cursor", &cursor),
        ],
    )
    .await;
    let listed = browser.listed_ids().await;
    let expected: Vec<String> = first.iter().chain(&second).cloned().collect();
    assert_eq!(
        listed[..expected.len()],
        expected[..],
        "the next page follows"
    );

    // Filter by clicking alice's email in the list: the URL holds the filter, and the list is
    // the API's answer for it.
    browser
        .js(&format!(
            "Array.from(document.querySelectorAll('#records button[data-filter=\"actor_email\"]'))
                .find(b => b.textContent === {ALICE:?}).click();"
        ))
        .await;
    browser
        .until("location.search.includes('actor_email=')")
        .await;
    browser
        .until("document.querySelectorAll('#records > li').length > 0 && !document.getElementById('status').textContent.startsWith('Loading')")
        .await;
    let url = browser.client.current_url().await.expect("a URL");
    assert!(
        url.query_pairs()
            .any(|(k, v)| k == "actor_email" && v == ALICE),
        "{url}"
    );
    let (by_alice, _) = api_page(
        &api,
        &[
            ("since", since),
            ("before", before),
            ("limit", "50"),
            ("actor_email", ALICE),
        ],
    )
    .await;
    assert!(by_alice.len() >= 3, "alice's records: {by_alice:?}");
    assert_eq!(
        browser.listed_ids().await,
        by_alice,
        "the filtered list is the API's"
    );
    let chips = browser
        .js("return document.getElementById('chips').innerText;")
        .await;
    assert!(
        chips.as_str().unwrap().contains(ALICE),
        "a chip shows the filter: {chips}"
    );

    // Open the first record: every field is there, the id among them.
    browser.click("#records > li .open").await;
    browser
        .until("!document.getElementById('detail').hidden")
        .await;
    let detail = browser
        .js("return document.getElementById('detail').innerText;")
        .await;
    let detail = detail.as_str().unwrap();
    assert!(detail.contains(&by_alice[0]), "the record's id: {detail}");
    assert!(
        detail.contains("actor.email") && detail.contains(ALICE),
        "{detail}"
    );
    let url = browser.client.current_url().await.expect("a URL");
    assert!(
        url.query().unwrap_or("").contains(&by_alice[0]),
        "the URL holds the record: {url}"
    );

    // Its resource's history (the policy's two updates) is the history endpoint's answer for
    // the query the page made; following it to the earlier update opens that record.
    let history = follow_history(&browser, &api, &by_alice[0], since).await;
    assert!(history.len() >= 2, "both updates: {history:?}");
    assert_eq!(
        history[..2],
        by_alice[..2],
        "the policy's updates, newest first"
    );
    browser
        .js("document.getElementById('history').scrollIntoView();")
        .await;
    browser.screenshot("record-1440").await;
    browser
        .js("document.getElementById('close-detail').click();")
        .await;

    // A link reproduces the view: reloading the URL shows the same list.
    browser.client.refresh().await.expect("a reload");
    browser
        .until("document.querySelectorAll('#records > li').length > 0")
        .await;
    assert_eq!(
        browser.listed_ids().await,
        by_alice,
        "the URL reproduces the view"
    );

    // Export the current filter as NDJSON: the file holds the API's export of the same query.
    browser.click("#export-ndjson").await;
    let deadline = Instant::now() + WAIT;
    let file = loop {
        let found = std::fs::read_dir(browser.downloads.path())
            .expect("the download dir")
            .filter_map(Result::ok)
            .map(|e| e.path())
            .find(|p| p.extension().is_some_and(|e| e == "ndjson"));
        if let Some(file) = found {
            break file;
        }
        assert!(Instant::now() < deadline, "no export was downloaded");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let exported = std::fs::read_to_string(&file).expect("the export");
    let exported: Vec<String> = exported
        .lines()
        .map(|l| {
            serde_json::from_str::<Value>(l).expect("NDJSON")["id"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    // Alice's reads of the log itself are audited too: the export is the API's answer at the
    // time, which holds at least the records listed.
    for id in &by_alice {
        assert!(exported.contains(id), "the export holds {id}");
    }
    assert!(
        exported
            .iter()
            .all(|id| !first.contains(id) || by_alice.contains(id)),
        "only alice's"
    );

    // Narrow screens read the same view.
    browser
        .client
        .set_window_size(375, 800)
        .await
        .expect("a narrow window");
    browser.screenshot("list-375").await;
    browser.click("#records > li .open").await;
    browser
        .until("!document.getElementById('detail').hidden")
        .await;
    browser.screenshot("record-375").await;
    browser
        .client
        .set_window_size(1440, 900)
        .await
        .expect("a wide window");
    browser
        .js("document.getElementById('close-detail').click(); window.scrollTo(0, 0);")
        .await;
    browser.screenshot("list-1440").await;
    browser.close().await;
    demo.stop().await;
}

/// The history the open record `id` shows: waits for it, compares it with the history
/// endpoint's answer for the query the page made (`data-api` of the section), then follows it
/// to the next write (keyboard: focus and Enter) and checks that record opens, with the same
/// history and itself marked. Returns the history's record ids, newest first.
async fn follow_history(browser: &Browser, api: &Api, id: &str, since: &str) -> Vec<String> {
    let loaded = "document.querySelector('#history [role=status]') \
        && !document.querySelector('#history [role=status]').textContent.startsWith('Loading')";
    browser.until(loaded).await;
    let shown = browser
        .js("const s = document.getElementById('history');
             return {api: s.dataset.api, status: s.querySelector('[role=status]').textContent,
                     ids: Array.from(s.querySelectorAll('ol.history > li')).map(li => li.dataset.id),
                     current: Array.from(s.querySelectorAll('ol.history > li.current')).map(li => li.dataset.id),
                     text: Array.from(s.querySelectorAll('ol.history > li')).map(li => li.innerText)};")
        .await;
    let query = shown["api"].as_str().expect("the section names its query");
    let (path, query) = query.split_once('?').expect("a query");
    assert_eq!(path, format!("/{id}/history"));
    let pairs: Vec<(String, String)> = reqwest::Url::parse(&format!("http://x/?{query}"))
        .expect("a query string")
        .query_pairs()
        .into_owned()
        .collect();
    let param = |name: &str| {
        pairs
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
            .unwrap_or_else(|| panic!("the history query has no {name}: {query}"))
    };
    let ms = |t: &str| t.parse::<Timestamp>().expect("a time").unix_millis();
    assert_eq!(ms(&param("since")), ms(since), "the view's range");
    let pairs: Vec<(&str, &str)> = pairs
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let answer = api
        .call(
            Method::GET,
            &format!("/accounts/{DEMO}/logs/audit{path}"),
            &pairs,
            &Auth::Bearer(ADMIN_TOKEN.into()),
            None,
        )
        .await
        .expect(200, "the history endpoint answers")
        .json();
    let entries = answer["result"].as_array().expect("history entries");
    let expected: Vec<String> = entries
        .iter()
        .map(|e| e["id"].as_str().expect("an id").to_owned())
        .collect();
    let ids: Vec<String> = serde_json::from_value(shown["ids"].clone()).expect("ids");
    assert_eq!(ids, expected, "the page's history is the endpoint's");
    assert_eq!(shown["current"], json!([id]), "the open record is marked");
    // Each entry shows its write's changes as the endpoint's patch gives them.
    let texts = shown["text"].as_array().expect("texts");
    for (entry, text) in entries.iter().zip(texts) {
        let text = text.as_str().unwrap_or("");
        for op in entry["history"]["patch"]
            .as_array()
            .into_iter()
            .flatten()
            .take(8)
        {
            let path = op["path"].as_str().unwrap_or("");
            assert!(text.contains(path), "{path} in {text:?}");
        }
    }
    let status = shown["status"].as_str().unwrap_or("");
    let kind = answer["result_info"]["history_status"]
        .as_str()
        .unwrap_or("");
    assert!(
        kind != "approximate" || status.contains("derived from the recorded"),
        "the page says the values are approximate: {status}"
    );
    // Follow the history to the write after this one in the list, with the keyboard.
    let Some(next) = ids.iter().skip_while(|i| *i != id).nth(1).cloned() else {
        return ids;
    };
    let button = browser
        .client
        .find(Locator::Css(&format!(
            "#history li[data-id=\"{next}\"] button.follow"
        )))
        .await
        .expect("the entry is a button");
    button.send_keys("\u{e007}").await.expect("Enter");
    browser
        .until(&format!(
            "new URLSearchParams(location.search).get('record') === {next:?}"
        ))
        .await;
    browser.until(loaded).await;
    let followed = browser
        .js("return {text: document.getElementById('detail-body').innerText,
                     current: Array.from(document.querySelectorAll('#history ol.history > li.current')).map(li => li.dataset.id),
                     ids: Array.from(document.querySelectorAll('#history ol.history > li')).map(li => li.dataset.id)};")
        .await;
    assert!(
        followed["text"].as_str().unwrap_or("").contains(&next),
        "the earlier write is open: {followed}"
    );
    assert_eq!(followed["current"], json!([next]), "{followed}");
    assert_eq!(followed["ids"], json!(ids), "the same resource's history");
    ids
}

// ---------------------------------------------------------------------------------------------
// Stored XSS

/// What an attacker puts in every string a record holds. Each would set the canary
/// `window.__xss`, open a dialog, or load something from another origin, if it ever ran.
const CORPUS: [&str; 12] = [
    "<script>window.__xss=1;alert(1)</script>",
    "<img src=x onerror=\"window.__xss=2;alert(2)\">",
    "\"><svg onload=window.__xss=3>",
    "javascript:window.__xss=4;alert(4)",
    "<a href=\"javascript:window.__xss=5\">x</a>",
    "{{constructor.constructor('window.__xss=6')()}}",
    "${window.__xss=7}",
    "</textarea></title><script>window.__xss=8</script>",
    "<iframe srcdoc=\"<script>parent.__xss=9</script>\">",
    "\u{202e}<b>gnp.exe</b>",
    "<img src=\"http://evil.invalid/x.png\">",
    "<style>@import 'http://evil.invalid/a.css';</style><div style=\"background:url(//evil.invalid)\">",
];

/// Every string in `value`.
fn leaves(value: &Value, into: &mut Vec<String>) {
    match value {
        Value::String(s) => into.push(s.clone()),
        Value::Array(items) => items.iter().for_each(|v| leaves(v, into)),
        Value::Object(map) => map.iter().for_each(|(k, v)| {
            into.push(k.clone());
            leaves(v, into);
        }),
        _ => {}
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_xss_corpus_in_every_record_string_stays_text() {
    if !browser_available("an_xss_corpus_in_every_record_string_stays_text") {
        return;
    }
    let (_dir, mut demo, api) = start_demo().await;
    let admin = Auth::Bearer(ADMIN_TOKEN.into());
    let zone = audit_tests::EXAMPLE_ZONE;
    for (i, payload) in CORPUS.iter().enumerate() {
        // User agent (a header: its own characters only) and the URI's path and query.
        let agent: String = payload
            .chars()
            .filter(|c| !c.is_control() && *c != '\u{202e}')
            .collect();
        let request = api
            .request(
                Method::GET,
                &format!("/zones/{payload}"),
                &[("name", payload)],
                &admin,
            )
            .header("user-agent", agent);
        api.send(request).await;
        // Body values, and a resource id in the path.
        api.call(
            Method::POST,
            &format!("/zones/{zone}/dns_records"),
            &[],
            &admin,
            Some(&json!({"type": "TXT", "name": format!("x{i}"), "content": payload, "ttl": 1})),
        )
        .await;
        api.call(
            Method::DELETE,
            &format!("/zones/{zone}/dns_records/{payload}"),
            &[],
            &admin,
            None,
        )
        .await;
        // A token named with it, then used: the actor's token name.
        let created = api
            .call(
                Method::POST,
                &format!("/accounts/{DEMO}/tokens"),
                &[],
                &admin,
                Some(&json!({"name": payload})),
            )
            .await;
        if let Some(value) = created.json()["result"]["value"].as_str() {
            api.get("/zones", &Auth::Bearer(value.to_owned())).await;
        }
        // A login with it as the email.
        api.login(payload, "wrong").await;
    }
    let window = settled_range(&api, CORPUS.len() * 2).await;
    let (since, before) = (&window.0, &window.1);

    let browser = Browser::start(1440, 900).await;
    browser.log_in(&demo).await;
    let url = viewer_url(&demo, &[("since", since), ("before", before)]);
    browser.client.goto(&url).await.expect("the viewer opens");
    browser.js("window.__xss = undefined;").await;
    browser
        .until("document.querySelectorAll('#records > li').length > 0 && !document.getElementById('status').textContent.startsWith('Loading')")
        .await;
    // Every record of the first page opened, one after the other: what the list and each
    // record show, as text.
    let mut text = browser
        .js("return document.body.innerText;")
        .await
        .as_str()
        .unwrap()
        .to_owned();
    let opened = browser
        .js("return document.querySelectorAll('#records > li .open').length;")
        .await
        .as_u64()
        .unwrap();
    assert!(opened >= 20, "the hostile records are listed: {opened}");
    for i in 0..opened.min(50) {
        browser
            .js(&format!(
                "document.querySelectorAll('#records > li .open')[{i}].click();"
            ))
            .await;
        browser.until("!document.getElementById('detail').hidden && !document.getElementById('detail-body').textContent.startsWith('Loading')").await;
        tokio::time::sleep(Duration::from_millis(30)).await;
        let detail = browser
            .js("return document.getElementById('detail').innerText;")
            .await;
        text.push_str(detail.as_str().unwrap());
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    // No dialog: a WebDriver command would fail while one is open.
    assert!(
        browser.client.get_alert_text().await.is_err(),
        "no dialog opened"
    );
    assert_eq!(
        browser.js("return window.__xss === undefined;").await,
        json!(true),
        "no payload ran"
    );
    // The payloads are on the page as text (those the demo kept whole: a URI holds its own
    // percent-encoded form).
    let held = api
        .call(
            Method::GET,
            &format!("/accounts/{DEMO}/logs/audit"),
            &[("since", since), ("before", before), ("limit", "50")],
            &admin,
            None,
        )
        .await
        .expect(200, "the API answers")
        .json();
    let mut strings = Vec::new();
    leaves(&held["result"], &mut strings);
    let held: Vec<&str> = CORPUS
        .iter()
        .copied()
        .filter(|p| strings.iter().any(|s| s.contains(p)))
        .collect();
    assert!(held.len() >= 6, "the records hold the payloads: {held:#?}");
    for payload in held {
        // In a body, as the JSON it is part of (quotes escaped).
        let in_json = serde_json::to_string(payload).unwrap();
        assert!(
            text.contains(payload) || text.contains(&in_json[1..in_json.len() - 1]),
            "{payload:?} shows as text"
        );
    }
    // Nothing was requested from another origin.
    let origins = browser
        .js("return performance.getEntriesByType('resource').map(e => new URL(e.name).origin);")
        .await;
    let origin = demo.base().trim_end_matches('/').to_owned();
    for seen in origins.as_array().unwrap() {
        assert_eq!(
            seen.as_str(),
            Some(origin.as_str()),
            "a request left for {seen}"
        );
    }
    // No element the data could have made: no script, image, frame or inline style.
    let made = browser
        .js("return document.querySelectorAll('script:not([src]), img, iframe, svg[onload], [style], a[href^=\"javascript\"]').length;")
        .await;
    assert_eq!(made, json!(0), "no element from data");
    // The trends list the hostile actor emails as text too, through the stats endpoint.
    browser.close().await;

    // The headers of the page and its assets.
    let page = api
        .send(api.request(
            Method::GET,
            &format!("/accounts/{DEMO}/logs/audit/viewer"),
            &[],
            &admin,
        ))
        .await
        .expect(200, "the page");
    let _ = page;
    let response = reqwest::Client::new()
        .get(format!("{}/accounts/{DEMO}/logs/audit/viewer", demo.base()))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .expect("the page");
    let csp = response.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        csp.contains("default-src 'none'") && csp.contains("script-src 'self'"),
        "{csp}"
    );
    assert!(!csp.contains("unsafe"), "{csp}");
    assert!(csp.contains("frame-ancestors 'none'"), "{csp}");
    assert_eq!(response.headers()["x-content-type-options"], "nosniff");
    assert_eq!(response.headers()["referrer-policy"], "no-referrer");
    // Without credentials, no page: the API's 401.
    let anonymous = reqwest::get(format!("{}/accounts/{DEMO}/logs/audit/viewer", demo.base()))
        .await
        .expect("an answer");
    assert_eq!(anonymous.status(), 401);
    demo.stop().await;
}

// ---------------------------------------------------------------------------------------------
// Accessibility

/// `axe.min.js` of the npm package `axe-core` (MPL-2.0), installed under the target dir
/// with npm when missing.
fn axe_script() -> Option<String> {
    let prefix = target_dir().join("npm");
    let script = prefix.join("node_modules/axe-core/axe.min.js");
    if !script.is_file() {
        let installed = std::process::Command::new("npm")
            .args(["install", "--no-audit", "--no-fund", "--silent", "--prefix"])
            .arg(&prefix)
            .arg("axe-core@4")
            .status()
            .is_ok_and(|s| s.success());
        if !installed {
            return None;
        }
    }
    std::fs::read_to_string(script).ok()
}

/// The serious and critical violations axe-core finds on the page as it is.
async fn violations(browser: &Browser, axe: &str) -> Vec<String> {
    browser
        .client
        .execute(axe, Vec::new())
        .await
        .expect("axe-core loads");
    let found = browser
        .client
        .execute_async(
            "const done = arguments[0];
             axe.run(document, {resultTypes: ['violations']}).then(r => done(r.violations
               .filter(v => v.impact === 'serious' || v.impact === 'critical')
               .map(v => v.impact + ' ' + v.id + ': ' + v.help + ' at '
                 + v.nodes.map(n => n.target.join(' ')).join(', '))));",
            Vec::new(),
        )
        .await
        .expect("axe-core runs");
    serde_json::from_value(found).expect("a list")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn axe_finds_no_serious_violation_in_the_list_or_a_record() {
    if !browser_available("axe_finds_no_serious_violation_in_the_list_or_a_record") {
        return;
    }
    let Some(axe) = axe_script() else {
        skip(
            "axe_finds_no_serious_violation_in_the_list_or_a_record",
            "npm could not install axe-core",
            "install npm (apt-get install -y npm) with access to the npm registry",
        );
        return;
    };
    let (_dir, mut demo, api) = start_demo().await;
    let admin = Auth::Bearer(ADMIN_TOKEN.into());
    for _ in 0..5 {
        api.get("/zones", &admin).await.expect(200, "a read");
    }
    api.login(ALICE, "wrong").await;
    let window = settled_range(&api, 6).await;
    let browser = Browser::start(1440, 900).await;
    browser.log_in(&demo).await;
    browser
        .client
        .goto(&viewer_url(
            &demo,
            &[("since", &window.0), ("before", &window.1)],
        ))
        .await
        .expect("the viewer opens");
    browser.until("document.querySelectorAll('#records > li').length > 0 && document.querySelector('#chart svg') && !document.getElementById('integrity').textContent.startsWith('Checking')").await;
    let list = violations(&browser, &axe).await;
    assert!(list.is_empty(), "the list: {list:#?}");
    browser.click("#records > li .open").await;
    browser
        .until("!document.getElementById('detail').hidden")
        .await;
    let record = violations(&browser, &axe).await;
    assert!(record.is_empty(), "a record: {record:#?}");
    // The keyboard alone: Escape closes the record and focus returns to its button.
    browser
        .client
        .active_element()
        .await
        .expect("focus")
        .send_keys("\u{e00c}")
        .await
        .expect("Escape");
    browser
        .until("document.getElementById('detail').hidden")
        .await;
    assert_eq!(
        browser
            .js("return document.activeElement.classList.contains('open');")
            .await,
        json!(true),
        "focus returns to the record's button"
    );
    browser.close().await;
    demo.stop().await;
}
