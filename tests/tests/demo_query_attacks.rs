//! Reading the log, as an attacker (issue 8), against the running `demo-app` binary (its
//! embedded SQLite default): another account's id in the path, a cursor from another account
//! or edited at any one character, SQL-injection payloads in every filter and its `.not` form,
//! huge `limit`s, thousands of repeated filters, and requests without credentials. Each answer
//! is 400, 401 or 404 as DESIGN.md says — or 200 with exactly the records the filter selects
//! — never a 5xx, never a database error, never another account's data or a secret.
//!
//! The same attacks run in-process on both backends in `audit-store/tests/query.rs`; this file
//! proves them through the real app, its authorizer and its HTTP stack. Every category prints
//! and asserts exact counts (`SUMMARY query-attacks ...`).
//!
//! Run with `cargo test -p audit-tests --test demo_query_attacks -- --nocapture`.

#![allow(clippy::unwrap_used, missing_docs)]

use std::collections::BTreeMap;

use audit_layer::record::Timestamp;
use audit_tests::{
    ADMIN_TOKEN, Api, Auth, DEMO, Demo, OTHER, OTHER_TOKEN, PASSWORD, Reply, log_window, not_found,
    wait_for_rays,
};
use reqwest::Method;

/// Every filter of the API, with the original's aliases.
const FILTERS: [&str; 23] = [
    "action_type",
    "action_result",
    "actor_email",
    "actor_id",
    "actor_ip_address",
    "actor_type",
    "actor_context",
    "actor_token_id",
    "actor_token_name",
    "id",
    "audit_log_id",
    "raw_ray_id",
    "raw_cf_ray_id",
    "raw_method",
    "raw_status_code",
    "raw_uri",
    "resource_id",
    "resource_product",
    "resource_type",
    "resource_scope",
    "zone_id",
    "zone_name",
    "account_name",
];

const PAYLOADS: [&str; 14] = [
    "' OR 1=1 --",
    "\"; DROP TABLE audit_logs; --",
    "' UNION SELECT record FROM audit_logs --",
    "%' OR '1'='1",
    "1) OR (1=1",
    "acc_demo' OR account_id <> '",
    "%",
    "_",
    "\\",
    "$1",
    "?",
    "\u{0}' OR 1=1 --",
    "\u{1b}[2J\r\n",
    "ünïcødé \u{202e} 🚀",
];

/// What a database error leaking into an answer would look like.
const DATABASE_WORDS: [&str; 8] = [
    "sqlx",
    "SQLITE",
    "sqlite",
    "syntax error",
    "no such column",
    "near \"",
    "postgres",
    "database error",
];

/// Nothing of these may appear in any answer.
const SECRETS: [&str; 3] = [ADMIN_TOKEN, OTHER_TOKEN, PASSWORD];

/// Statuses seen per category, and every answer checked for leaks.
#[derive(Default)]
struct Tally {
    by_category: BTreeMap<&'static str, BTreeMap<u16, usize>>,
}

impl Tally {
    /// Counts `reply` under `category` and checks that it leaks nothing: no database error,
    /// no secret, and (unless `own` says whose log may show) no record of acc_demo.
    #[track_caller]
    fn count(&mut self, category: &'static str, what: &str, reply: &Reply) {
        *self
            .by_category
            .entry(category)
            .or_default()
            .entry(reply.status)
            .or_default() += 1;
        assert!(
            reply.status < 500,
            "{category}: {what}: {} {}",
            reply.status,
            reply.text
        );
        if reply.status != 200 {
            let body = reply.json();
            assert_eq!(body["success"], false, "{what}: {body}");
            assert!(body["result"].is_null(), "{what}: {body}");
            for word in DATABASE_WORDS {
                assert!(
                    !reply.text.contains(word),
                    "{category}: {what}: the answer shows {word:?}: {}",
                    reply.text
                );
            }
        }
        for secret in SECRETS {
            assert!(
                !reply.text.contains(secret),
                "{what}: the answer shows a secret"
            );
        }
    }

    fn get(&self, category: &str, status: u16) -> usize {
        self.by_category
            .get(category)
            .and_then(|s| s.get(&status))
            .copied()
            .unwrap_or(0)
    }

    fn total(&self, category: &str) -> usize {
        self.by_category
            .get(category)
            .map_or(0, |s| s.values().sum())
    }
}

fn error_message(reply: &Reply) -> String {
    reply.json()["errors"][0]["message"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

/// `GET /accounts/{account}/logs/audit?<window>&<raw query>`, the query written by hand (so
/// that repeated and odd parameters go out exactly as written).
async fn list(api: &Api, account: &str, raw_query: &str, auth: &Auth) -> Reply {
    let (since, before) = log_window();
    let path = format!("/accounts/{account}/logs/audit?since={since}&before={before}{raw_query}");
    api.send(api.request(Method::GET, &path, &[], auth)).await
}

fn encode(value: &str) -> String {
    let mut out = String::new();
    for b in value.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[tokio::test]
async fn an_attacker_reading_the_log_gets_400_401_404_and_nothing_else() {
    let dir = tempfile::tempdir().unwrap();
    let mut demo = Demo::start(&dir.path().join("data"), &dir.path().join("logs")).await;
    let api = Api::new(&demo);
    let admin = Auth::admin();
    let other = Auth::other();
    let mut tally = Tally::default();
    let clock = std::time::Instant::now();
    let lap = |what: &str| eprintln!("[query-attacks] {what} done at {:.1?}", clock.elapsed());

    // Something in each account's log: three reads each.
    let mut demo_rays = Vec::new();
    let mut other_rays = Vec::new();
    for _ in 0..3 {
        let reply = api
            .get(&format!("/accounts/{DEMO}/alerting/v3/policies"), &admin)
            .await;
        demo_rays.push(reply.expect(200, "acc_demo's policies").ray());
        let reply = api.get("/zones", &other).await;
        other_rays.push(reply.expect(200, "acc_other's zones").ray());
    }
    wait_for_rays(&api, DEMO, &admin, &demo_rays).await;
    wait_for_rays(&api, OTHER, &other, &other_rays).await;
    // Every read so far flushed (the pipeline writes every 20 ms), then the log as it is now.
    // Reads are audited too, so later answers are compared over a frozen window: from the
    // oldest record to the newest one (`before` is exclusive, so the newest is left out, and
    // with it anything in its millisecond).
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    let baseline = list(&api, DEMO, "&limit=1000", &admin).await;
    let baseline = baseline.expect(200, "the baseline").json();
    let records = baseline["result"].as_array().unwrap();
    let time = |r: &serde_json::Value| -> Timestamp {
        r["action"]["time"].as_str().unwrap().parse().unwrap()
    };
    let newest = time(&records[0]);
    let oldest = time(records.last().unwrap());
    let frozen = format!(
        "since={}&before={}",
        encode(&oldest.to_string()),
        encode(&newest.to_string())
    );
    let demo_ids: Vec<String> = records
        .iter()
        .filter(|r| time(r) < newest)
        .map(|r| r["id"].as_str().unwrap().to_owned())
        .collect();
    let frozen_count = demo_ids.len();
    assert!(
        frozen_count >= 3,
        "the frozen window holds {frozen_count} records"
    );
    let frozen_list = |query: String, auth: Auth| {
        let api = &api;
        let frozen = frozen.clone();
        async move {
            let path = format!("/accounts/{DEMO}/logs/audit?{frozen}{query}");
            api.send(api.request(Method::GET, &path, &[], &auth)).await
        }
    };

    lap("setup");
    // 1. Another account's id in the path: the same 404 as an account that does not exist.
    let cross: Vec<(String, &str)> = vec![
        (format!("/accounts/{DEMO}/logs/audit"), "the list"),
        (
            format!("/accounts/{DEMO}/logs/audit/{}", demo_ids[0]),
            "a record",
        ),
        (
            "/accounts/acc_nope/logs/audit".to_owned(),
            "no such account",
        ),
    ];
    for (path, what) in &cross {
        for accept in [None, Some("application/x-ndjson")] {
            let (since, before) = log_window();
            let mut request = api.request(
                Method::GET,
                path,
                &[("since", &since), ("before", &before)],
                &other,
            );
            if let Some(accept) = accept {
                request = request.header("accept", accept);
            }
            let reply = api.send(request).await;
            tally.count("another account", what, &reply);
            assert_eq!((reply.status, reply.json()), (404, not_found()), "{what}");
            for id in &demo_ids {
                assert!(!reply.text.contains(id.as_str()), "{what} shows {id}");
            }
        }
    }

    lap("another account");
    // 2. Cursors: from another account, bound to other filters, edited at any one character.
    let page = list(&api, DEMO, "&limit=1", &admin)
        .await
        .expect(200, "page 1");
    let demo_cursor = page.json()["result_info"]["cursor"]
        .as_str()
        .unwrap()
        .to_owned();
    let page = list(&api, OTHER, "&limit=1", &other)
        .await
        .expect(200, "page 1");
    let other_cursor = page.json()["result_info"]["cursor"]
        .as_str()
        .unwrap()
        .to_owned();
    // The genuine cursor works.
    let reply = list(
        &api,
        DEMO,
        &format!("&limit=1&cursor={demo_cursor}"),
        &admin,
    )
    .await;
    tally.count("cursor genuine", "the genuine cursor", &reply);
    assert_eq!(reply.status, 200, "{}", reply.text);
    let mut foreign = vec![
        (
            "acc_other's cursor on acc_demo's log",
            list(
                &api,
                DEMO,
                &format!("&limit=1&cursor={other_cursor}"),
                &admin,
            )
            .await,
        ),
        (
            "acc_demo's cursor on acc_other's log",
            list(
                &api,
                OTHER,
                &format!("&limit=1&cursor={demo_cursor}"),
                &other,
            )
            .await,
        ),
        (
            "the cursor with another filter",
            list(
                &api,
                DEMO,
                &format!("&limit=1&action_type=view&cursor={demo_cursor}"),
                &admin,
            )
            .await,
        ),
        (
            "the cursor with the other direction",
            list(
                &api,
                DEMO,
                &format!("&limit=1&direction=asc&cursor={demo_cursor}"),
                &admin,
            )
            .await,
        ),
    ];
    for (what, reply) in foreign.drain(..) {
        tally.count("cursor foreign", what, &reply);
        assert_eq!(reply.status, 400, "{what}: {}", reply.text);
        assert!(
            error_message(&reply).contains("cursor"),
            "{what}: {}",
            reply.text
        );
    }
    let chars: Vec<char> = demo_cursor.chars().collect();
    for i in 0..chars.len() {
        let mut edited = chars.clone();
        edited[i] = if chars[i] == 'A' { 'B' } else { 'A' };
        let edited: String = edited.into_iter().collect();
        let reply = list(&api, DEMO, &format!("&limit=1&cursor={edited}"), &admin).await;
        tally.count("cursor edited", "an edited cursor", &reply);
        assert_eq!(reply.status, 400, "character {i} edited: {}", reply.text);
        assert!(error_message(&reply).contains("cursor"), "{}", reply.text);
    }

    lap("cursors");
    // 3. SQL injection in every filter and its `.not` form: 200 with no record (the plain
    // form) or every record of the window (the `.not` form), or 400 naming the filter.
    let mut injected = 0;
    for name in FILTERS {
        for payload in PAYLOADS {
            for negated in [false, true] {
                let key = if negated {
                    format!("{name}.not")
                } else {
                    name.to_owned()
                };
                let reply = frozen_list(
                    format!("&limit=1000&{key}={}", encode(payload)),
                    admin.clone(),
                )
                .await;
                injected += 1;
                tally.count("injection", &format!("{key}={payload:?}"), &reply);
                match reply.status {
                    200 => {
                        let n = reply.json()["result"].as_array().unwrap().len();
                        let want = if negated { frozen_count } else { 0 };
                        assert_eq!(n, want, "{key}={payload:?}: {n} records");
                    }
                    400 => assert!(
                        error_message(&reply).contains(name),
                        "{key}={payload:?}: {}",
                        reply.text
                    ),
                    other => panic!("{key}={payload:?}: {other} {}", reply.text),
                }
            }
        }
    }
    // The table is intact: the frozen window answers exactly what it did.
    let reply = frozen_list("&limit=1000".to_owned(), admin.clone()).await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    let after: Vec<String> = reply.json()["result"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(after, demo_ids, "the log changed under injection");

    lap("injection");
    // 4. Huge and odd limits: 400 naming `limit`.
    for limit in [
        "1001",
        "5000",
        "1000000000000",
        "18446744073709551616",
        "0",
        "-1",
        "1e3",
        "0x10",
    ] {
        let reply = list(&api, DEMO, &format!("&limit={limit}"), &admin).await;
        tally.count("limit", limit, &reply);
        assert_eq!(reply.status, 400, "limit={limit}: {}", reply.text);
        assert!(error_message(&reply).contains("limit"), "{}", reply.text);
    }

    lap("limits");
    // 5. Repeated filters: 100 values are allowed; 101, 2,000 and 4,000 are a 400 naming the
    // filter; 2,000 distinct unknown parameters a 400 naming the first.
    // (A URI is at most 64 KiB to the client's HTTP stack: 4,000 short values fit.)
    let repeated =
        |name: &str, n: usize| -> String { (0..n).map(|i| format!("&{name}={i}")).collect() };
    let reply = list(&api, DEMO, &repeated("actor_email", 100), &admin).await;
    tally.count("repeated filters", "100 values", &reply);
    assert_eq!(reply.status, 200, "100 values: {}", reply.text);
    for (name, n) in [
        ("actor_email", 101),
        ("actor_email", 2000),
        ("actor_email.not", 2000),
        ("zone_id", 4000),
    ] {
        let reply = list(&api, DEMO, &repeated(name, n), &admin).await;
        tally.count("repeated filters", name, &reply);
        assert_eq!(reply.status, 400, "{n} × {name}: {}", reply.text);
        let message = error_message(&reply);
        assert!(message.contains(name), "{n} × {name}: {message}");
    }
    let unknown: String = (0..2000).map(|i| format!("&p{i}=1")).collect();
    let reply = list(&api, DEMO, &unknown, &admin).await;
    tally.count("repeated filters", "2,000 unknown parameters", &reply);
    assert_eq!(reply.status, 400, "{}", reply.text);
    assert!(error_message(&reply).contains("p0"), "{}", reply.text);
    let since_twice: String = (0..2000).map(|_| "&since=2020-01-01").collect();
    let reply = list(&api, DEMO, &since_twice, &admin).await;
    tally.count("repeated filters", "2,000 × since", &reply);
    assert_eq!(reply.status, 400, "{}", reply.text);
    assert!(error_message(&reply).contains("since"), "{}", reply.text);

    lap("repeated filters");
    // 6. No credentials, or made-up ones: 401 on every route of the log, whatever account.
    let bogus = [
        Auth::None,
        Auth::Bearer("CANARYTOKEN-nobody-000000000000".into()),
        Auth::Bearer(format!("{ADMIN_TOKEN}x")),
        Auth::Session("not-a-session".into()),
    ];
    let routes = [
        format!("/accounts/{DEMO}/logs/audit"),
        format!("/accounts/{DEMO}/logs/audit/{}", demo_ids[0]),
        format!("/accounts/{OTHER}/logs/audit"),
        "/accounts/acc_nope/logs/audit".to_owned(),
    ];
    for auth in &bogus {
        for route in &routes {
            let (since, before) = log_window();
            let reply = api
                .send(api.request(
                    Method::GET,
                    route,
                    &[("since", &since), ("before", &before)],
                    auth,
                ))
                .await;
            tally.count("no credentials", route, &reply);
            assert_eq!(reply.status, 401, "{auth:?} {route}: {}", reply.text);
            for id in &demo_ids {
                assert!(!reply.text.contains(id.as_str()), "{route} shows {id}");
            }
        }
    }

    lap("no credentials");
    demo.assert_alive("the attacks").await;
    let counts: Vec<String> = tally
        .by_category
        .iter()
        .map(|(category, statuses)| {
            let statuses: Vec<String> = statuses.iter().map(|(s, n)| format!("{s}:{n}")).collect();
            format!("{}={}", category.replace(' ', "_"), statuses.join(","))
        })
        .collect();
    eprintln!("SUMMARY query-attacks {}", counts.join(" "));

    // Exact counts per category.
    assert_eq!(tally.get("another account", 404), 6);
    assert_eq!(tally.get("cursor foreign", 400), 4);
    assert_eq!(tally.get("cursor edited", 400), chars.len());
    assert_eq!(tally.total("cursor edited"), chars.len());
    assert_eq!(tally.total("injection"), injected);
    assert_eq!(injected, FILTERS.len() * PAYLOADS.len() * 2);
    assert_eq!(
        tally.get("injection", 200) + tally.get("injection", 400),
        injected,
        "injection answers other than 200 and 400"
    );
    assert_eq!(tally.get("limit", 400), 8);
    assert_eq!(tally.get("repeated filters", 400), 6);
    assert_eq!(tally.get("repeated filters", 200), 1);
    assert_eq!(tally.get("no credentials", 401), bogus.len() * routes.len());
    let status = demo.stop().await;
    assert!(status.success(), "SIGTERM exit: {status}");
}
