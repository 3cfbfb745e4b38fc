//! The official `cloudflare` Python SDK (5.x), pointed at the audit log router, lists and
//! paginates unchanged, reads the v2 API's names as its typed attributes (`raw.cf_rayid`,
//! `actor.token_id`, `actor.token_name`), filters by the values and product categories the v2
//! API allows, and reads the product categories and a resource's history: `tests/sdk/list_audit.py` is run against a real server on
//! `127.0.0.1:0` with the Python named by `AUDIT_SDK_PYTHON` (a venv with `cloudflare`
//! installed); without it the tests are skipped, and fail under CI (see `common::skip`).
//!
//! ```sh
//! python3 -m venv target/sdkvenv && target/sdkvenv/bin/pip install 'cloudflare>=5,<6'
//! AUDIT_SDK_PYTHON=target/sdkvenv/bin/python cargo test -p audit-store --test sdk_compat
//! ```

mod common;

use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use audit_layer::ProductCategories;
use audit_layer::record::{
    Account, Action, ActionResult, ActionType, Actor, ActorContext, ActorType, AuditRecord, Raw,
    Resource, Timestamp, Token, Trace,
};
use audit_store::model::StoredRecord;
use audit_store::query::{Access, AuditLogRouter};
use audit_store::store::AuditStore;
use axum::Router;
use common::{Rng, SDK_PYTHON_VAR, TestResult, env_or_skip, ms, record_id};
use http::request::Parts;

const ACCOUNT: &str = "acc_sdk";
const OTHER: &str = "acc_sdk_other";
const TOKEN: &str = "sdk-test-token";

/// The SDK authenticates with `Authorization: Bearer <api_token>`.
fn authorize(request: &Parts, account_id: &str) -> Access {
    match request
        .headers
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    {
        None => Access::Unauthenticated,
        Some(value) if value == format!("Bearer {TOKEN}") && account_id == ACCOUNT => {
            Access::Allowed
        }
        Some(_) => Access::Denied,
    }
}

fn record(rng: &mut Rng, account: &str, time_ms: i64) -> AuditRecord {
    let id = record_id(rng, time_ms);
    let (kind, method) = [
        (ActionType::View, "GET"),
        (ActionType::View, "GET"),
        (ActionType::View, "HEAD"),
        (ActionType::Create, "POST"),
        (ActionType::Update, "PATCH"),
        (ActionType::Delete, "DELETE"),
        (ActionType::Login, "POST"),
    ][rng.below(7)];
    let status = [200, 201, 204, 403, 404, 500][rng.below(6)];
    let n = rng.below(20);
    let policy = format!("pol_{n}");
    // Two products, for the product category filter.
    let product = if n.is_multiple_of(2) {
        "alerting"
    } else {
        "dns"
    };
    AuditRecord {
        id,
        account: Some(Account {
            id: account.to_owned(),
            name: Some("SDK Test Account".to_owned()),
        }),
        action: Action {
            description: Some("Update a Notification policy".into()),
            result: ActionResult::from_status(status),
            time: Timestamp::from_unix_millis(time_ms),
            kind,
        },
        actor: Actor {
            context: Some(ActorContext::ApiToken),
            email: Some("sdk@example.com".to_owned()),
            id: Some("user_sdk".to_owned()),
            ip_address: Some("192.0.2.44".parse().expect("an IP")),
            token: Token {
                id: Some("tok_sdk".to_owned()),
                name: Some("SDK test".to_owned()),
            },
            kind: Some(ActorType::User),
        },
        raw: Raw {
            method: Some(method.to_owned()),
            cf_ray_id: format!("{:016x}", rng.next_u64()),
            status_code: Some(status),
            uri: Some(format!("/accounts/{account}/alerting/v3/policies/{policy}")),
            user_agent: Some("cloudflare-python".to_owned()),
            client_request_id: None,
            client_gone: false,
        },
        resource: Resource {
            id: Some(policy),
            product: Some(product.into()),
            request: (kind != ActionType::View)
                .then(|| serde_json::json!({"name": "page me"}).into()),
            response: None,
            scope: Some("accounts".into()),
            kind: Some("policies".into()),
        },
        zone: None,
        change: None,
        // Fields of ours the original records lack: the SDK must read past them.
        trace: Some(Trace {
            trace_id: format!("{:016x}{:016x}", rng.next_u64() | 1, rng.next_u64()),
            span_id: format!("{:016x}", rng.next_u64() | 1),
        }),
        service: Some("sdk-test-api".into()),
    }
}

/// A few hundred records of the account over March 2025 (with same-millisecond ties), some
/// just outside the range, and another account's records in the same times.
fn records() -> Vec<AuditRecord> {
    let mut rng = Rng(0x5d4);
    let mut out = Vec::new();
    let mut t = ms("2025-03-01T00:00:00Z");
    for i in 0..360 {
        if i % 9 != 4 {
            t += 1 + rng.below(3 * 3_600_000) as i64;
        }
        out.push(record(&mut rng, ACCOUNT, t));
        if i % 5 == 0 {
            out.push(record(&mut rng, OTHER, t));
        }
    }
    assert!(t < ms("2025-04-01T00:00:00Z"));
    for edge in ["2025-02-28T23:59:59.999Z", "2025-04-01T00:00:00Z"] {
        let mut r = record(&mut rng, ACCOUNT, ms(edge));
        r.action.kind = ActionType::Create;
        out.push(r);
    }
    out
}

/// The ids the SDK must see: the account's records in `[since, before)` whose action type is
/// not excluded, in `(time, id)` order.
fn expected(
    records: &[AuditRecord],
    since: i64,
    before: i64,
    excluded: &[ActionType],
    asc: bool,
) -> Vec<String> {
    let mut hits: Vec<&AuditRecord> = records
        .iter()
        .filter(|r| r.account.as_ref().is_some_and(|a| a.id == ACCOUNT))
        .filter(|r| (since..before).contains(&r.action.time.unix_millis()))
        .filter(|r| !excluded.contains(&r.action.kind))
        .collect();
    hits.sort_by_key(|r| (r.action.time.unix_millis(), r.id));
    if !asc {
        hits.reverse();
    }
    hits.into_iter().map(|r| r.id.to_string()).collect()
}

/// A running server, and the URIs it was asked for.
struct Server {
    base_url: String,
    requests: Arc<Mutex<Vec<String>>>,
    task: tokio::task::JoinHandle<()>,
    _dir: tempfile::TempDir,
}

async fn serve(records: &[AuditRecord]) -> TestResult<Server> {
    let dir = tempfile::tempdir()?;
    let store = common::sqlite_in(dir.path()).await?;
    let rows: Vec<StoredRecord> = records
        .iter()
        .map(StoredRecord::from_record)
        .collect::<Result<_, _>>()?;
    for chunk in rows.chunks(100) {
        store.insert(chunk).await?;
    }
    let requests: Arc<Mutex<Vec<String>>> = Arc::default();
    let log = Arc::clone(&requests);
    let categories = ProductCategories::new().category("Notifications", ["alerting"])?;
    let app: Router = AuditLogRouter::new(store, authorize)
        .product_categories(categories)
        .into_router()
        .layer(axum::middleware::from_fn(
            move |request: axum::extract::Request, next: axum::middleware::Next| {
                log.lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .push(request.uri().to_string());
                next.run(request)
            },
        ));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let address = listener.local_addr()?;
    let task = tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            eprintln!("test server failed: {e}");
        }
    });
    Ok(Server {
        base_url: format!("http://{address}"),
        requests,
        task,
        _dir: dir,
    })
}

/// `tests/sdk/list_audit.py` run by `python` against `server`, as `token` for `account`,
/// with no proxy in the way.
fn script(python: &str, server: &Server, token: &str, account: &str) -> tokio::process::Command {
    let script: PathBuf = [env!("CARGO_MANIFEST_DIR"), "tests", "sdk", "list_audit.py"]
        .iter()
        .collect();
    let mut command = tokio::process::Command::new(python);
    command
        .arg(&script)
        .args(["--base-url", &server.base_url, "--token", token])
        .args(["--account", account])
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .kill_on_drop(true);
    for proxy in [
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "ALL_PROXY",
        "http_proxy",
        "https_proxy",
        "all_proxy",
    ] {
        command.env_remove(proxy);
    }
    command
}

/// Runs the script as the account's owner with `args` and returns the ids it printed.
async fn run_sdk(python: &str, server: &Server, args: &[&str]) -> TestResult<Vec<String>> {
    Ok(serde_json::from_value(
        run_sdk_json(python, server, args).await?,
    )?)
}

/// Runs the script as the account's owner with `args` and returns the JSON it printed.
async fn run_sdk_json(
    python: &str,
    server: &Server,
    args: &[&str],
) -> TestResult<serde_json::Value> {
    let mut command = script(python, server, TOKEN, ACCOUNT);
    command.args(args);
    let output = tokio::time::timeout(Duration::from_secs(60), command.output())
        .await
        .map_err(|_| "the SDK script did not finish within 60 s")??;
    let stderr = String::from_utf8_lossy(&output.stderr);
    if !output.status.success() {
        return Err(format!("list_audit.py failed ({}): {stderr}", output.status).into());
    }
    let printed = serde_json::from_slice(&output.stdout).map_err(|e| {
        format!(
            "the script printed no JSON ({e}): {}\n{stderr}",
            String::from_utf8_lossy(&output.stdout)
        )
    })?;
    Ok(printed)
}

/// The Python to run the SDK with, or `None` after [`common::skip`].
fn python() -> Option<String> {
    env_or_skip(SDK_PYTHON_VAR, "the Python SDK test")
}

/// The Python to run the SDK with, the records and a server holding them; `None` when the
/// test is skipped.
async fn setup() -> TestResult<Option<(String, Vec<AuditRecord>, Server)>> {
    let Some(python) = python() else {
        return Ok(None);
    };
    let records = records();
    let server = serve(&records).await?;
    Ok(Some((python, records, server)))
}

/// The list requests the server saw since `from`.
fn list_requests(server: &Server, from: usize) -> Vec<String> {
    server
        .requests
        .lock()
        .unwrap_or_else(PoisonError::into_inner)[from..]
        .iter()
        .filter(|uri| uri.starts_with(&format!("/accounts/{ACCOUNT}/logs/audit?")))
        .cloned()
        .collect()
}

#[tokio::test]
async fn the_python_sdk_lists_and_paginates_unchanged() -> TestResult {
    let Some((python, records, server)) = setup().await? else {
        return Ok(());
    };
    let (since, before) = (ms("2025-03-01T00:00:00Z"), ms("2025-04-01T00:00:00Z"));

    // Newest first (the default), RFC 3339 times, `action_type.not=view`, 7 per page.
    let want = expected(&records, since, before, &[ActionType::View], false);
    assert!(want.len() > 150, "{} records: many pages", want.len());
    let ids = run_sdk(
        &python,
        &server,
        &[
            "--since",
            "2025-03-01T00:00:00Z",
            "--before",
            "2025-04-01T00:00:00Z",
            "--limit",
            "7",
        ],
    )
    .await?;
    assert_eq!(ids.len(), want.len(), "the SDK saw every record once");
    assert_eq!(
        ids, want,
        "the SDK saw exactly the non-view records, newest first"
    );
    let requests = list_requests(&server, 0);
    assert_eq!(
        requests.len(),
        want.len().div_ceil(7),
        "one request per page: {requests:#?}"
    );
    for (i, uri) in requests.iter().enumerate() {
        assert!(uri.contains("action_type.not=view"), "{uri}");
        assert_eq!(uri.contains("cursor="), i > 0, "{uri}");
    }
    eprintln!("the SDK's first request: {}", requests[0]);

    // Oldest first, dates as `datetime.date` objects, two excluded types, 13 per page.
    let seen = server
        .requests
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .len();
    let want = expected(
        &records,
        since,
        before,
        &[ActionType::View, ActionType::Delete],
        true,
    );
    let ids = run_sdk(
        &python,
        &server,
        &[
            "--since",
            "2025-03-01",
            "--before",
            "2025-04-01",
            "--dates-as-objects",
            "--direction",
            "asc",
            "--limit",
            "13",
            "--not-action-type",
            "view",
            "--not-action-type",
            "delete",
        ],
    )
    .await?;
    assert_eq!(ids, want, "oldest first, without views and deletes");
    let requests = list_requests(&server, seen);
    assert_eq!(requests.len(), want.len().div_ceil(13));
    assert!(requests[0].contains("action_type.not=view&action_type.not=delete"));

    // The default page size (no limit given).
    let want = expected(&records, since, before, &[ActionType::View], false);
    let ids = run_sdk(
        &python,
        &server,
        &["--since", "2025-03-01", "--before", "2025-04-01"],
    )
    .await?;
    assert_eq!(ids, want);
    server.task.abort();
    Ok(())
}

#[tokio::test]
async fn the_python_sdk_sees_an_error_for_another_account() -> TestResult {
    let Some((python, _, server)) = setup().await? else {
        return Ok(());
    };
    // Denied: the SDK raises for the 404 (the script exits 2 and prints the body).
    let output = script(&python, &server, "someone-else", OTHER)
        .args(["--since", "2025-03-01", "--before", "2025-04-01"])
        .output()
        .await?;
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("HTTP 404"), "{stderr}");
    assert!(!stderr.contains(OTHER), "the 404 names nothing: {stderr}");
    // A bad parameter: the SDK surfaces the 400 and its message.
    let output = script(&python, &server, TOKEN, ACCOUNT)
        .args(["--since", "2025-03-01", "--before", "2025-04-01"])
        .args(["--limit", "5000"])
        .output()
        .await?;
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("HTTP 400") && stderr.contains("'limit'"),
        "{stderr}"
    );
    server.task.abort();
    Ok(())
}

#[tokio::test]
async fn the_python_sdk_reads_the_v2_names_and_filters_as_the_v2_api_allows() -> TestResult {
    let Some((python, records, server)) = setup().await? else {
        return Ok(());
    };
    let (since, before) = (ms("2025-03-01T00:00:00Z"), ms("2025-04-01T00:00:00Z"));
    let range = [
        "--since",
        "2025-03-01",
        "--before",
        "2025-04-01",
        "--limit",
        "100",
    ];
    let want = expected(&records, since, before, &[ActionType::View], false);
    let by_id = |id: &str| records.iter().find(|r| r.id.to_string() == id);

    // The typed attributes of the v2 names: raw.cf_rayid, actor.token_id, actor.token_name.
    let printed = run_sdk_json(&python, &server, &[&range[..], &["--fields"][..]].concat()).await?;
    let rows: Vec<[Option<String>; 4]> = serde_json::from_value(printed)?;
    assert_eq!(rows.len(), want.len());
    for [id, ray, token_id, token_name] in &rows {
        let id = id.as_deref().unwrap_or_default();
        let record = by_id(id).ok_or("a record the server holds")?;
        assert_eq!(ray.as_deref(), Some(record.raw.cf_ray_id.as_str()), "{id}");
        assert_eq!(token_id.as_deref(), Some("tok_sdk"), "{id}");
        assert_eq!(token_name.as_deref(), Some("SDK test"), "{id}");
    }

    // actor_type.not=cloudflare_admin: a value the v2 API allows, held by no record here.
    let seen = server
        .requests
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .len();
    let args = [&range[..], &["--not-actor-type", "cloudflare_admin"][..]].concat();
    assert_eq!(run_sdk(&python, &server, &args).await?, want);
    assert!(list_requests(&server, seen)[0].contains("actor_type.not=cloudflare_admin"));

    // product_category (any case): the records of the category's products.
    let args = [&range[..], &["--product-category", "notifications"][..]].concat();
    let alerting: Vec<String> = want
        .iter()
        .filter(|id| by_id(id).and_then(|r| r.resource.product.as_deref()) == Some("alerting"))
        .cloned()
        .collect();
    assert!(!alerting.is_empty() && alerting.len() < want.len());
    assert_eq!(run_sdk(&python, &server, &args).await?, alerting);

    // The product categories, and a resource's history, through the SDK's own methods.
    let categories = run_sdk_json(
        &python,
        &server,
        &[&range[..], &["--categories"][..]].concat(),
    )
    .await?;
    assert_eq!(
        categories,
        serde_json::json!([["Notifications", ["alerting"]]])
    );
    let write = records
        .iter()
        .filter(|r| r.account.as_ref().is_some_and(|a| a.id == ACCOUNT))
        .filter(|r| (since..before).contains(&r.action.time.unix_millis()))
        .find(|r| r.action.kind == ActionType::Update && r.action.result == ActionResult::Success)
        .ok_or("an update")?;
    let mut history: Vec<&AuditRecord> = records
        .iter()
        .filter(|r| r.account.as_ref().is_some_and(|a| a.id == ACCOUNT))
        .filter(|r| (since..before).contains(&r.action.time.unix_millis()))
        .filter(|r| r.resource.id == write.resource.id && r.action.kind != ActionType::View)
        .filter(|r| r.action.result == ActionResult::Success)
        .collect();
    history.sort_by_key(|r| std::cmp::Reverse((r.action.time.unix_millis(), r.id)));
    let want: Vec<String> = history.iter().map(|r| r.id.to_string()).collect();
    let (id, time) = (write.id.to_string(), write.action.time.to_string());
    let args = [
        &range[..4],
        &["--history", id.as_str(), "--action-time", time.as_str()][..],
    ]
    .concat();
    assert_eq!(run_sdk(&python, &server, &args).await?, want);
    server.task.abort();
    Ok(())
}
