//! The audit log, read through the demo's own query API: page by page, filtered, or waited for
//! until the records of given requests are in (the pipeline writes off the request path).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use audit_layer::record::Timestamp;
use reqwest::Method;
use serde_json::{Value, json};

use crate::api::{Api, Auth, Reply};

/// `since` (yesterday) and `before` (tomorrow) as dates, which cover every record of a test.
pub fn log_window() -> (String, String) {
    let day = 24 * 60 * 60 * 1000;
    let now = Timestamp::now().unix_millis();
    let date = |ms: i64| Timestamp::from_unix_millis(ms).to_string()[..10].to_owned();
    (date(now - day), date(now + day))
}

/// The query API's answer to an account's log or record that the caller may not see: the
/// same `404` as for one that does not exist, so that it tells nothing of the other account.
pub fn not_found() -> Value {
    json!({"success": false, "errors": [{"code": 10404, "message": "not found"}],
        "messages": [], "result": null})
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
    /// The records by `raw.cf_ray_id`.
    pub fn by_ray(&self) -> HashMap<String, Vec<&Value>> {
        let mut map: HashMap<String, Vec<&Value>> = HashMap::new();
        for record in &self.records {
            let ray = record["raw"]["cf_ray_id"].as_str().unwrap_or_default();
            map.entry(ray.to_owned()).or_default().push(record);
        }
        map
    }

    /// The one record with `raw.cf_ray_id` `ray`; panics unless there is exactly one.
    #[track_caller]
    pub fn one(&self, ray: &str) -> &Value {
        let found: Vec<&Value> = self
            .records
            .iter()
            .filter(|r| r["raw"]["cf_ray_id"] == ray)
            .collect();
        assert_eq!(
            found.len(),
            1,
            "records with raw.cf_ray_id {ray}: {found:#?}"
        );
        found[0]
    }
}

/// The answer to `GET /accounts/{account}/logs/audit/{id}` (one record), which must be a 200.
pub async fn read_one(api: &Api, account: &str, auth: &Auth, id: &str) -> Reply {
    api.get(&format!("/accounts/{account}/logs/audit/{id}"), auth)
        .await
        .expect(200, "one record by id")
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

/// The records with `raw.cf_ray_id` `ray` in `account`'s log, read by that filter once at least
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
            "no record with raw.cf_ray_id {ray} reached {account}'s audit log in 15 s"
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
