//! `GET /accounts/{account_id}/logs/audit/{id}/history` and
//! `GET /accounts/{account_id}/logs/audit/product_categories`, driven in-process, on SQLite and
//! PostgreSQL (`backend_tests!`): exact histories from the `change` records carry, approximate
//! ones from their bodies, the RFC 6902 patches between, paging, bounds, access and every bad
//! parameter.

#[macro_use]
mod common;

use audit_layer::ProductCategories;
use audit_layer::record::{ActionResult, ActionType, AuditRecord, Timestamp};
use audit_store::model::StoredRecord;
use audit_store::query::{Access, AuditLogRouter};
use audit_store::store::ChainedStore;
use axum::Router;
use http::StatusCode;
use http::header::AUTHORIZATION;
use serde_json::{Value, json};

use common::{BASE_MS, Fixture, TestResult, record};

backend_tests!(
    told_changes_make_an_exact_history,
    bodies_make_an_approximate_history,
    histories_page_within_their_bounds,
    unknown_records_and_bad_parameters_are_refused,
    product_categories_are_listed_and_filter,
);

const ACCOUNT: &str = "acc_history";
const OTHER: &str = "acc_other";
const RANGE: &str = "since=2025-03-01&before=2025-04-01";

/// Alice may read `ACCOUNT`; nobody else anything.
fn authorize(request: &http::request::Parts, account_id: &str) -> Access {
    match request.headers.get("authorization").map(|v| v.as_bytes()) {
        None => Access::Unauthenticated,
        Some(b"Bearer alice") if account_id == ACCOUNT => Access::Allowed,
        Some(_) => Access::Denied,
    }
}

fn router<S: ChainedStore>(store: &S, page_bytes: usize) -> Router {
    let categories = ProductCategories::new()
        .category("DNS", ["dns", "zones"])
        .and_then(|c| c.category("Notifications", ["alerting"]))
        .expect("valid categories");
    AuditLogRouter::new(store.clone(), authorize)
        .page_bytes(page_bytes)
        .product_categories(categories)
        .into_router()
}

async fn get(router: &Router, uri: &str, auth: Option<&str>) -> TestResult<(StatusCode, Value)> {
    let auth = common::bearer(auth);
    let reply = common::get(router, uri, &[(AUTHORIZATION, auth.as_deref())]).await?;
    Ok((reply.status, reply.json()?))
}

/// A write of `account` to the DNS record `id` at `BASE_MS + i` seconds.
fn write(account: &str, id: &str, i: i64, kind: ActionType, method: &str) -> AuditRecord {
    let mut r = record(Some(account), BASE_MS + i * 1000);
    r.action.kind = kind;
    r.raw.method = Some(method.to_owned());
    r.resource.id = Some(id.to_owned());
    r.resource.product = Some("dns".into());
    r.resource.kind = Some("dns_records".into());
    r.resource.request = None;
    r.resource.response = None;
    r
}

/// The record's JSON with `change` added, as the layer writes a write whose handler told the
/// resource's value before and after.
fn with_change(record: &AuditRecord, before: Value, after: Value) -> TestResult<StoredRecord> {
    let mut json: Value = serde_json::to_value(record)?;
    json["change"] = json!({"before": before, "after": after});
    Ok(StoredRecord::from_json(serde_json::to_string(&json)?)?)
}

fn stored(record: &AuditRecord) -> TestResult<StoredRecord> {
    Ok(StoredRecord::from_record(record)?)
}

fn history_uri(record: &AuditRecord, extra: &str) -> String {
    format!(
        "/accounts/{ACCOUNT}/logs/audit/{}/history?{RANGE}&action_time={}{extra}",
        record.id, record.action.time
    )
}

/// The entries' ids, and each entry's `history`.
fn entries(body: &Value) -> (Vec<String>, Vec<Value>) {
    let result = body["result"].as_array().cloned().unwrap_or_default();
    (
        result
            .iter()
            .map(|e| e["id"].as_str().unwrap_or("").to_owned())
            .collect(),
        result.iter().map(|e| e["history"].clone()).collect(),
    )
}

/// `patch` applied to `before` gives `after`.
fn assert_patch_applies(history: &Value) {
    let patch: json_patch::Patch =
        serde_json::from_value(history["patch"].clone()).expect("a patch");
    let mut value = history["before"].clone();
    json_patch::patch(&mut value, &patch).expect("the patch applies");
    assert_eq!(value, history["after"], "{history:#}");
}

async fn told_changes_make_an_exact_history<S: ChainedStore>(fx: &Fixture<S>) -> TestResult {
    let created = write(ACCOUNT, "rec_1", 1, ActionType::Create, "POST");
    let renamed = write(ACCOUNT, "rec_1", 2, ActionType::Update, "PUT");
    let viewed = write(ACCOUNT, "rec_1", 3, ActionType::View, "GET");
    let mut failed = write(ACCOUNT, "rec_1", 4, ActionType::Update, "PUT");
    failed.action.result = ActionResult::Failure;
    let ttl = write(ACCOUNT, "rec_1", 5, ActionType::Update, "PATCH");
    let deleted = write(ACCOUNT, "rec_1", 6, ActionType::Delete, "DELETE");
    let other_record = write(ACCOUNT, "rec_2", 2, ActionType::Update, "PUT");
    let other_account = write(OTHER, "rec_1", 2, ActionType::Update, "PUT");
    let v1 = json!({"name": "www", "type": "A", "content": "192.0.2.1", "ttl": 60});
    let v2 = json!({"name": "web", "type": "A", "content": "192.0.2.1", "ttl": 60});
    let v3 = json!({"name": "web", "type": "A", "content": "192.0.2.1", "ttl": 300});
    fx.store
        .insert(&[
            with_change(&created, Value::Null, v1.clone())?,
            with_change(&renamed, v1.clone(), v2.clone())?,
            stored(&viewed)?,
            with_change(&failed, v2.clone(), json!({"name": "never"}))?,
            with_change(&ttl, v2.clone(), v3.clone())?,
            with_change(&deleted, v3.clone(), Value::Null)?,
            with_change(&other_record, json!({}), json!({"name": "other"}))?,
            with_change(&other_account, json!({}), json!({"name": "theirs"}))?,
        ])
        .await?;
    let api = router(&fx.store, 1 << 20);

    let (status, body) = get(&api, &history_uri(&renamed, ""), Some("alice")).await?;
    assert_eq!(status, StatusCode::OK, "{body:#}");
    assert_eq!(body["result_info"]["history_status"], "exact", "{body:#}");
    assert_eq!(body["result_info"]["count"], 4);
    let (ids, histories) = entries(&body);
    let want: Vec<String> = [&deleted, &ttl, &renamed, &created]
        .iter()
        .map(|r| r.id.to_string())
        .collect();
    assert_eq!(
        ids, want,
        "the successful writes of this record only, newest first"
    );
    let values: Vec<(Value, Value)> = histories
        .iter()
        .map(|h| (h["before"].clone(), h["after"].clone()))
        .collect();
    assert_eq!(
        values,
        vec![
            (v3.clone(), Value::Null),
            (v2.clone(), v3),
            (v1.clone(), v2),
            (Value::Null, v1)
        ]
    );
    for history in &histories {
        assert_eq!(history["source"], "change");
        assert_patch_applies(history);
    }
    assert_eq!(
        histories[1]["patch"],
        json!([{"op": "replace", "path": "/ttl", "value": 300}]),
        "RFC 6902"
    );
    // Each entry is the record as the list serves it, with its history.
    let (_, one) = get(
        &api,
        &format!("/accounts/{ACCOUNT}/logs/audit/{}", ttl.id),
        Some("alice"),
    )
    .await?;
    let mut entry = body["result"][1].clone();
    entry.as_object_mut().ok_or("an object")?.remove("history");
    assert_eq!(entry, one["result"]);

    // Oldest first, from the history of another of its records: the same resource.
    let (_, asc) = get(
        &api,
        &history_uri(&deleted, "&direction=asc"),
        Some("alice"),
    )
    .await?;
    let (mut ids_asc, _) = entries(&asc);
    ids_asc.reverse();
    assert_eq!(ids_asc, ids);
    Ok(())
}

async fn bodies_make_an_approximate_history<S: ChainedStore>(fx: &Fixture<S>) -> TestResult {
    let mut created = write(ACCOUNT, "pol_1", 1, ActionType::Create, "POST");
    created.resource.request = Some(json!({"name": "page me", "enabled": true}).into());
    created.resource.response =
        Some(json!({"id": "pol_1", "name": "page me", "enabled": true}).into());
    let mut patched = write(ACCOUNT, "pol_1", 2, ActionType::Update, "PATCH");
    patched.resource.request = Some(json!({"enabled": false}).into());
    let mut put = write(ACCOUNT, "pol_1", 3, ActionType::Update, "PUT");
    put.resource.request = Some(json!({"_truncated": "the body was over the cap"}).into());
    let mut replaced = write(ACCOUNT, "pol_1", 4, ActionType::Update, "PUT");
    replaced.resource.request = Some(json!({"name": "page us", "enabled": true}).into());
    let deleted = write(ACCOUNT, "pol_1", 5, ActionType::Delete, "DELETE");
    let records = [&created, &patched, &put, &replaced, &deleted];
    let rows: Vec<StoredRecord> = records
        .iter()
        .map(|r| stored(r))
        .collect::<TestResult<_>>()?;
    fx.store.insert(&rows).await?;
    let api = router(&fx.store, 1 << 20);

    let (status, body) = get(
        &api,
        &history_uri(&patched, "&direction=asc"),
        Some("alice"),
    )
    .await?;
    assert_eq!(status, StatusCode::OK, "{body:#}");
    assert_eq!(body["result_info"]["history_status"], "approximate");
    let (ids, histories) = entries(&body);
    assert_eq!(ids.len(), 5);
    let page_me = json!({"id": "pol_1", "name": "page me", "enabled": true});
    let paused = json!({"id": "pol_1", "name": "page me", "enabled": false});
    let page_us = json!({"name": "page us", "enabled": true});
    let expected = [
        ("bodies", Value::Null, page_me.clone()),
        ("bodies", page_me, paused.clone()),
        ("none", paused, Value::Null),
        ("bodies", Value::Null, page_us.clone()),
        ("bodies", page_us, Value::Null),
    ];
    for (history, (source, before, after)) in histories.iter().zip(expected) {
        assert_eq!(history["source"], source, "{history:#}");
        assert_eq!(
            (&history["before"], &history["after"]),
            (&before, &after),
            "{history:#}"
        );
    }
    // A value not known (after the truncated body, before the next write) has no patch.
    assert!(histories[2].get("patch").is_none() && histories[3].get("patch").is_none());
    for i in [0, 1, 4] {
        assert_patch_applies(&histories[i]);
    }

    // A page that starts after the first write still knows the value before it.
    let (_, first) = get(
        &api,
        &history_uri(&patched, "&direction=asc&limit=1"),
        Some("alice"),
    )
    .await?;
    let cursor = first["result_info"]["cursor"].as_str().ok_or("a cursor")?;
    let uri = history_uri(&patched, &format!("&direction=asc&limit=1&cursor={cursor}"));
    let (_, page) = get(&api, &uri, Some("alice")).await?;
    let (_, second) = entries(&page);
    assert_eq!(
        second[0]["before"],
        json!({"id": "pol_1", "name": "page me", "enabled": true})
    );
    Ok(())
}

async fn histories_page_within_their_bounds<S: ChainedStore>(fx: &Fixture<S>) -> TestResult {
    let big = "x".repeat(2000);
    let mut rows = Vec::new();
    let mut all = Vec::new();
    for i in 0..12 {
        let r = write(ACCOUNT, "rec_9", i, ActionType::Update, "PUT");
        rows.push(with_change(
            &r,
            json!({"note": big, "n": i}),
            json!({"note": big, "n": i + 1}),
        )?);
        all.push(r);
    }
    fx.store.insert(&rows).await?;
    let want: Vec<String> = all.iter().rev().map(|r| r.id.to_string()).collect();

    // By `limit`, and by the byte budget (entries hold three copies of the value).
    for (page_bytes, limit) in [(1 << 20, "&limit=5"), (24 * 1024, "")] {
        let api = router(&fx.store, page_bytes);
        let mut seen = Vec::new();
        let mut cursor = String::new();
        for _ in 0..20 {
            let (status, body) = get(
                &api,
                &history_uri(&all[0], &format!("{limit}{cursor}")),
                Some("alice"),
            )
            .await?;
            assert_eq!(status, StatusCode::OK, "{body:#}");
            let (ids, _) = entries(&body);
            assert!(
                !ids.is_empty() && ids.len() < 12,
                "{page_bytes}: {} entries",
                ids.len()
            );
            seen.extend(ids);
            match body["result_info"]["cursor"].as_str() {
                Some(next) => cursor = format!("&cursor={next}"),
                None => break,
            }
        }
        assert_eq!(
            seen, want,
            "every write once, in order ({page_bytes} bytes{limit})"
        );
    }

    // A cursor is bound to its history.
    let api = router(&fx.store, 1 << 20);
    let (_, first) = get(&api, &history_uri(&all[0], "&limit=2"), Some("alice")).await?;
    let cursor = first["result_info"]["cursor"]
        .as_str()
        .ok_or("a cursor")?
        .to_owned();
    let (head, last) = cursor.split_at(cursor.len() - 1);
    let edited = format!("{head}{}", if last == "A" { "B" } else { "A" });
    for uri in [
        history_uri(&all[1], &format!("&limit=2&cursor={cursor}")),
        history_uri(&all[0], &format!("&direction=asc&cursor={cursor}")),
        history_uri(&all[0], &format!("&cursor={edited}")),
    ] {
        let (status, body) = get(&api, &uri, Some("alice")).await?;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{uri}");
        assert!(
            body["errors"][0]["message"]
                .as_str()
                .unwrap_or("")
                .contains("'cursor'")
        );
    }
    Ok(())
}

async fn unknown_records_and_bad_parameters_are_refused<S: ChainedStore>(
    fx: &Fixture<S>,
) -> TestResult {
    let known = write(ACCOUNT, "rec_1", 1, ActionType::Update, "PUT");
    let theirs = write(OTHER, "rec_1", 1, ActionType::Update, "PUT");
    let mut nameless = write(ACCOUNT, "rec_1", 2, ActionType::Update, "PUT");
    nameless.resource.id = None;
    fx.store
        .insert(&[stored(&known)?, stored(&theirs)?, stored(&nameless)?])
        .await?;
    let api = router(&fx.store, 1 << 20);

    // An id this account's log does not hold, or not at that time: 404, unavailable.
    let mut elsewhere = theirs.clone();
    elsewhere.account = known.account.clone();
    let mut later = known.clone();
    later.action.time = Timestamp::from_unix_millis(known.action.time.unix_millis() + 1);
    for record in [&elsewhere, &later] {
        let (status, body) = get(&api, &history_uri(record, ""), Some("alice")).await?;
        assert_eq!(status, StatusCode::NOT_FOUND, "{body:#}");
        assert_eq!(body["result_info"]["history_status"], "unavailable");
        assert!(!body.to_string().contains(OTHER));
    }
    // A record that names no resource: an empty history, unavailable.
    let (status, body) = get(&api, &history_uri(&nameless, ""), Some("alice")).await?;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        body["result_info"],
        json!({"count": 0, "history_status": "unavailable", "cursors": {}})
    );
    // Access: as every route.
    let (status, _) = get(&api, &history_uri(&known, ""), None).await?;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let uri = history_uri(&theirs, "").replace(ACCOUNT, OTHER);
    let (status, body) = get(&api, &uri, Some("alice")).await?;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(
        body["result_info"].is_null(),
        "nothing said of another account: {body:#}"
    );

    // Every bad parameter is a 400 naming it.
    let base = format!("/accounts/{ACCOUNT}/logs/audit/{}/history", known.id);
    let time = known.action.time.to_string();
    for (uri, named) in [
        (format!("{base}?{RANGE}"), "'action_time'"),
        (
            format!("{base}?before=2025-04-01&action_time={time}"),
            "'since'",
        ),
        (format!("{base}?{RANGE}&action_time=later"), "'action_time'"),
        (
            format!("{base}?{RANGE}&action_time={time}&limit=0"),
            "'limit'",
        ),
        (
            format!("{base}?{RANGE}&action_time={time}&direction=up"),
            "'direction'",
        ),
        (
            format!("{base}?{RANGE}&action_time={time}&actor_email=a"),
            "\"actor_email\"",
        ),
        (
            format!("/accounts/{ACCOUNT}/logs/audit/nope/history?{RANGE}&action_time={time}"),
            "UUID",
        ),
    ] {
        let (status, body) = get(&api, &uri, Some("alice")).await?;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{uri}: {body:#}");
        let message = body["errors"][0]["message"].as_str().unwrap_or("");
        assert!(message.contains(named), "{uri}: {message}");
    }
    Ok(())
}

async fn product_categories_are_listed_and_filter<S: ChainedStore>(fx: &Fixture<S>) -> TestResult {
    let mut rows = Vec::new();
    let mut by_product = Vec::new();
    for (i, product) in ["dns", "zones", "alerting", "tokens", "dns"]
        .iter()
        .enumerate()
    {
        let mut r = record(Some(ACCOUNT), BASE_MS + i as i64 * 1000);
        r.resource.product = Some((*product).into());
        rows.push(stored(&r)?);
        by_product.push((r.id.to_string(), *product));
    }
    fx.store.insert(&rows).await?;
    let api = router(&fx.store, 1 << 20);

    let (status, body) = get(
        &api,
        &format!("/accounts/{ACCOUNT}/logs/audit/product_categories"),
        Some("alice"),
    )
    .await?;
    assert_eq!(status, StatusCode::OK, "{body:#}");
    assert_eq!(
        body["result"],
        json!([
            {"value": "DNS", "label": "DNS", "products": [{"value": "dns", "label": "dns"}, {"value": "zones", "label": "zones"}]},
            {"value": "Notifications", "label": "Notifications", "products": [{"value": "alerting", "label": "alerting"}]},
        ])
    );
    let (status, _) = get(
        &api,
        &format!("/accounts/{ACCOUNT}/logs/audit/product_categories"),
        None,
    )
    .await?;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, _) = get(
        &api,
        &format!("/accounts/{OTHER}/logs/audit/product_categories"),
        Some("alice"),
    )
    .await?;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, body) = get(
        &api,
        &format!("/accounts/{ACCOUNT}/logs/audit/product_categories?x=1"),
        Some("alice"),
    )
    .await?;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body:#}");

    let ids = |products: &[&str]| -> Vec<String> {
        let mut ids: Vec<String> = by_product
            .iter()
            .filter(|(_, p)| products.contains(p))
            .map(|(id, _)| id.clone())
            .collect();
        ids.reverse();
        ids
    };
    for (query, want) in [
        ("product_category=dns", ids(&["dns", "zones"])),
        (
            "product_category=DNS&product_category=notifications",
            ids(&["dns", "zones", "alerting"]),
        ),
        (
            "product_category=Notifications&resource_product=tokens",
            ids(&["alerting", "tokens"]),
        ),
        ("product_category.not=dns", ids(&["alerting", "tokens"])),
    ] {
        let (status, body) = get(
            &api,
            &format!("/accounts/{ACCOUNT}/logs/audit?{RANGE}&{query}"),
            Some("alice"),
        )
        .await?;
        assert_eq!(status, StatusCode::OK, "{query}: {body:#}");
        let (found, _) = entries(&body);
        assert_eq!(found, want, "{query}");
    }
    let (status, body) = get(
        &api,
        &format!("/accounts/{ACCOUNT}/logs/audit?{RANGE}&product_category=security"),
        Some("alice"),
    )
    .await?;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let message = body["errors"][0]["message"].as_str().unwrap_or("");
    assert!(
        message.contains("'product_category'") && message.contains("\"security\""),
        "{message}"
    );
    Ok(())
}
