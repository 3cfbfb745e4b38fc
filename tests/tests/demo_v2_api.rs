//! The v2 API's names, filter values, product categories and resource histories, end to end:
//! the real `demo-app` binary, driven over HTTP with its seeded API token, read through its
//! own audit log API.
//!
//! Run with `cargo test -p audit-tests --test demo_v2_api`.

#![allow(clippy::unwrap_used, missing_docs)]

use audit_tests::{
    ADMIN_TOKEN, Api, Auth, DEMO, Demo, EXAMPLE_ZONE, OTHER, SEEDED_POLICY, assert_valid,
    log_window, not_found, read_log_where, wait_for_rays,
};
use reqwest::Method;
use serde_json::{Value, json};

/// The secret part of the policies' webhook URL (`mechanisms` is not auditable).
const WEBHOOK_CANARY: &str = "CANARY-V2-WEBHOOK-5c1e9a";

fn policy_body(name: &str, enabled: bool) -> Value {
    json!({
        "name": name,
        "enabled": enabled,
        "alert_type": "clickhouse_alert_fw_ent_anomaly",
        "filters": {"services": ["securitylevel"], "zones": [EXAMPLE_ZONE]},
        "mechanisms": {"webhooks": [{"url": format!("https://hooks.example.com/{WEBHOOK_CANARY}")}]},
    })
}

/// `GET path?query` as the admin: the status and the JSON body.
async fn get(api: &Api, path: &str, query: &[(&str, &str)]) -> (u16, Value, String) {
    let reply = api
        .call(Method::GET, path, query, &Auth::admin(), None)
        .await;
    let body: Value = serde_json::from_str(&reply.text).unwrap_or(Value::Null);
    (reply.status, body, reply.text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_serves_the_v2_names_categories_and_histories() {
    let dir = tempfile::tempdir().unwrap();
    let demo = Demo::start(&dir.path().join("data"), &dir.path().join("logs")).await;
    let api = Api::new(&demo);
    let admin = Auth::admin();
    let policy = format!("/accounts/{DEMO}/alerting/v3/policies/{SEEDED_POLICY}");
    let first = api
        .put(&policy, &admin, &policy_body("v2 first", true))
        .await
        .expect(200, "update the policy");
    let second = api
        .put(&policy, &admin, &policy_body("v2 second", false))
        .await
        .expect(200, "update it again");
    let zones = api
        .get("/zones", &admin)
        .await
        .expect(200, "list the zones");
    let rays = [first.ray(), second.ray(), zones.ray()];
    let log = wait_for_rays(&api, DEMO, &admin, &rays).await;

    // The v2 names, in records that validate against the schema.
    let update = log.one(&second.ray()).clone();
    assert_valid(&update);
    assert_eq!(update["raw"]["cf_ray_id"], second.ray().as_str());
    assert!(update["raw"].get("ray_id").is_none(), "{update:#}");
    assert_eq!(update["actor"]["token_id"], update["actor"]["token"]["id"]);
    assert_eq!(update["actor"]["token_name"], "demo admin token");

    // Values the v2 API allows: nothing is a cloudflare_admin, everything is not one.
    let (since, before) = log_window();
    let window = [("since", since.as_str()), ("before", before.as_str())];
    let path = format!("/accounts/{DEMO}/logs/audit");
    let (status, body, _) = get(
        &api,
        &path,
        &[&window[..], &[("actor_type", "cloudflare_admin")]].concat(),
    )
    .await;
    assert_eq!((status, &body["result"]), (200, &json!([])), "{body}");
    // Read first: records only come in (the log's own reads are recorded too), so the
    // filtered read, after it, must hold every one of them.
    let all = read_log_where(&api, DEMO, &admin, &[], 1000).await;
    let not_admin = read_log_where(
        &api,
        DEMO,
        &admin,
        &[
            ("actor_type.not", "cloudflare_admin"),
            ("actor_context.not", "origin_ca_key"),
        ],
        1000,
    )
    .await;
    let kept: std::collections::HashSet<&Value> =
        not_admin.records.iter().map(|r| &r["id"]).collect();
    let left_out: Vec<&Value> = all
        .records
        .iter()
        .map(|r| &r["id"])
        .filter(|id| !kept.contains(id))
        .collect();
    assert!(left_out.is_empty(), "filtered out: {left_out:?}");

    // The categories the demo's OpenAPI document declares, and the filter by one.
    let (status, body, _) = get(&api, &format!("{path}/product_categories"), &[]).await;
    assert_eq!(status, 200, "{body}");
    let categories: Vec<(String, Vec<String>)> = body["result"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            let products = c["products"].as_array().unwrap().iter();
            (
                c["value"].as_str().unwrap().to_owned(),
                products
                    .map(|p| p["value"].as_str().unwrap().to_owned())
                    .collect(),
            )
        })
        .collect();
    for (category, product) in [
        ("Notifications", "alerting"),
        ("DNS", "dns"),
        ("DNS", "zones"),
        ("Account", "members"),
        ("Access", "auth"),
    ] {
        assert!(
            categories
                .iter()
                .any(|(c, p)| c == category && p.iter().any(|p| p == product)),
            "{category} holds {product}: {categories:?}"
        );
    }
    let notifications = read_log_where(
        &api,
        DEMO,
        &admin,
        &[("product_category", "notifications")],
        1000,
    )
    .await;
    assert!(notifications.records.len() >= 2);
    assert!(
        notifications
            .records
            .iter()
            .all(|r| r["resource"]["product"] == "alerting")
    );
    let dns = read_log_where(&api, DEMO, &admin, &[("product_category", "DNS")], 1000).await;
    assert!(
        dns.records
            .iter()
            .any(|r| r["raw"]["cf_ray_id"] == zones.ray().as_str())
    );
    let (status, body, _) = get(
        &api,
        &path,
        &[&window[..], &[("product_category", "billing")]].concat(),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("'product_category'")
    );

    // The policy's history: its updates, approximate (from the recorded, redacted bodies).
    let id = update["id"].as_str().unwrap();
    let time = update["action"]["time"].as_str().unwrap();
    let history = format!("{path}/{id}/history");
    let query = [&window[..], &[("action_time", time), ("direction", "asc")]].concat();
    let (status, body, text) = get(&api, &history, &query).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["result_info"]["history_status"], "approximate",
        "{body:#}"
    );
    let entries = body["result"].as_array().unwrap();
    let names: Vec<&Value> = entries
        .iter()
        .map(|e| &e["history"]["after"]["name"])
        .collect();
    assert_eq!(names, [&json!("v2 first"), &json!("v2 second")], "{body:#}");
    assert_eq!(entries[1]["history"]["before"]["name"], "v2 first");
    assert!(
        entries[1]["history"]["patch"]
            .as_array()
            .unwrap()
            .contains(&json!({"op": "replace", "path": "/name", "value": "v2 second"})),
        "{body:#}"
    );
    for secret in [WEBHOOK_CANARY, ADMIN_TOKEN] {
        assert!(!text.contains(secret), "{secret} in the history");
    }

    // An id that is not this account's, or not at that time: 404, unavailable; another
    // account's history: the 404 that tells nothing.
    let (status, body, _) = get(
        &api,
        &history,
        &[&window[..], &[("action_time", "2001-01-01T00:00:00Z")]].concat(),
    )
    .await;
    assert_eq!(
        (status, &body["result_info"]["history_status"]),
        (404, &json!("unavailable"))
    );
    let (status, body, _) = get(
        &api,
        &format!("/accounts/{OTHER}/logs/audit/{id}/history"),
        &query,
    )
    .await;
    assert_eq!((status, body), (404, not_found()));

    // Hostile values in the new parameters: a 400 naming the parameter, never a 5xx, a
    // database error or a secret.
    let long = "9".repeat(5000);
    for payload in ["' OR 1=1 --", "%", "\u{0}' --", "\u{1b}[2J", long.as_str()] {
        let attempts = [
            (
                history.clone(),
                vec![window[0], window[1], ("action_time", payload)],
                "'action_time'",
            ),
            (
                history.clone(),
                [&query[..], &[("cursor", payload)]].concat(),
                "'cursor'",
            ),
            (
                history.clone(),
                [&query[..], &[("limit", payload)]].concat(),
                "'limit'",
            ),
            (
                path.clone(),
                [&window[..], &[("product_category", payload)]].concat(),
                "'product_category'",
            ),
            (format!("{path}/{id}x/history"), query.clone(), "UUID"),
        ];
        for (target, params, named) in attempts {
            let (status, body, text) = get(&api, &target, &params).await;
            assert_eq!(status, 400, "{target} {params:?}: {text}");
            let message = body["errors"][0]["message"].as_str().unwrap();
            assert!(message.contains(named), "{message}");
            for word in ["sqlx", "sqlite", "SQLITE", "syntax error", ADMIN_TOKEN] {
                assert!(!text.contains(word), "{word} in {text}");
            }
        }
    }
}
