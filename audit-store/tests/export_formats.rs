//! The export formats: OCSF API Activity validated against the published OCSF schema (1.8.0,
//! `tests/fixtures/ocsf/`), the Logpush `audit_logs_v2` field names, and CSV from the query
//! API's export endpoint, formula-injection safe.

mod common;

use std::net::{IpAddr, Ipv4Addr};

use audit_layer::record::{ActionResult, ActionType, ActorContext, ActorType, AuditRecord};
use audit_store::SqliteStore;
use audit_store::export::Format;
use audit_store::model::{PageRow, StoredRecord};
use audit_store::query::{Access, AuditLogRouter};
use audit_store::store::AuditStore as _;
use axum::body::Body;
use common::{BASE_MS, TestResult, record};
use http_body_util::BodyExt as _;
use tower::ServiceExt as _;

/// Records of every shape the layer and the pipeline write: each action type, both results,
/// users, tokens, system actors, no actor at all, bodies, zones, gap and summary records.
fn variety() -> TestResult<Vec<AuditRecord>> {
    let mut records = Vec::new();
    for (i, kind) in [
        ActionType::View,
        ActionType::Create,
        ActionType::Update,
        ActionType::Delete,
    ]
    .into_iter()
    .enumerate()
    {
        let mut r = record(Some("acc_1"), BASE_MS + i as i64);
        r.action.kind = kind;
        records.push(r);
    }
    let mut login = record(Some("acc_1"), BASE_MS + 10);
    login.action.kind = "login".parse()?;
    login.action.result = ActionResult::Failure;
    login.raw.status_code = Some(401);
    login.actor = Default::default();
    login.actor.ip_address = Some(IpAddr::V4(Ipv4Addr::new(203, 0, 113, 9)));
    records.push(login);
    let mut system = record(Some("acc_1"), BASE_MS + 11);
    system.actor = Default::default();
    system.actor.kind = Some(ActorType::System);
    system.actor.context = Some(ActorContext::System);
    system.raw.uri = Some("/jobs/rotate?dry_run=REDACTED".into());
    system.resource = Default::default();
    records.push(system);
    let mut token = record(Some("acc_1"), BASE_MS + 12);
    token.actor.email = None;
    token.actor.kind = Some(ActorType::Account);
    token.actor.token.id = Some("tok_1".into());
    token.actor.token.name = Some("CI".into());
    token.resource.request = Some(serde_json::json!({"name": "=cmd", "n": [1, 2]}).into());
    token.resource.response = Some(serde_json::json!({"id": "p1"}).into());
    token.account.as_mut().ok_or("account")?.name = Some("Acme".into());
    token.zone = Some(audit_layer::record::Zone {
        id: "zone_1".into(),
        name: Some("example.com".into()),
    });
    records.push(token);
    let mut email_only = record(Some("acc_1"), BASE_MS + 13);
    email_only.actor.id = None;
    email_only.resource.id = None;
    records.push(email_only);
    for kind in ["gap", "summary"] {
        let mut r = record(Some("acc_1"), BASE_MS + 14);
        r.action.kind = kind.parse()?;
        r.actor = Default::default();
        records.push(r);
    }
    Ok(records)
}

fn row_of(record: &AuditRecord) -> TestResult<PageRow> {
    let stored = StoredRecord::from_record(record)?;
    Ok(PageRow {
        time_ms: stored.time_ms,
        id: stored.id,
        record: stored.record,
    })
}

fn line(format: Format, record: &AuditRecord) -> TestResult<serde_json::Value> {
    let mut out = String::new();
    format.write_line(&row_of(record)?, &mut out)?;
    assert!(out.ends_with('\n') && !out[..out.len() - 1].contains('\n'));
    Ok(serde_json::from_str(&out)?)
}

fn ocsf_validator() -> TestResult<jsonschema::Validator> {
    let schema: serde_json::Value =
        serde_json::from_str(include_str!("fixtures/ocsf/api_activity-1.8.0.schema.json"))?;
    Ok(jsonschema::draft202012::new(&schema)?)
}

#[test]
fn ocsf_output_validates_against_the_ocsf_schema_for_every_kind_of_record() -> TestResult {
    let validator = ocsf_validator()?;
    for record in variety()? {
        let event = line(Format::Ocsf, &record)?;
        let errors: Vec<String> = validator
            .iter_errors(&event)
            .map(|e| format!("{} at {}", e, e.instance_path()))
            .collect();
        assert!(errors.is_empty(), "{errors:#?}\n{event:#}");
        assert_eq!(event["class_uid"], 6003);
        assert_eq!(event["metadata"]["uid"], record.id.to_string());
        assert_eq!(event["time"], record.action.time.unix_millis());
    }
    Ok(())
}

#[test]
fn ocsf_maps_the_action_the_actor_and_the_outcome_field_by_field() -> TestResult {
    let records = variety()?;
    let delete = line(Format::Ocsf, &records[3])?;
    assert_eq!(
        (
            &delete["activity_id"],
            &delete["activity_name"],
            &delete["type_uid"]
        ),
        (
            &serde_json::json!(4),
            &serde_json::json!("Delete"),
            &serde_json::json!(600_304)
        )
    );
    assert_eq!(delete["actor"]["user"]["email_addr"], "alice@example.com");
    assert_eq!(delete["metadata"]["tenant_uid"], "acc_1");
    let login = line(Format::Ocsf, &records[4])?;
    assert_eq!(
        (&login["activity_id"], &login["activity_name"]),
        (&serde_json::json!(99), &serde_json::json!("login"))
    );
    assert_eq!(
        (&login["status_id"], &login["status_code"]),
        (&serde_json::json!(2), &serde_json::json!("401"))
    );
    assert_eq!(login["src_endpoint"]["ip"], "203.0.113.9");
    let system = line(Format::Ocsf, &records[5])?;
    assert_eq!(system["actor"]["app_name"], "system");
    assert_eq!(
        system["http_request"]["url"]["query_string"],
        "dry_run=REDACTED"
    );
    let token = line(Format::Ocsf, &records[6])?;
    assert_eq!(token["actor"]["user"]["credential_uid"], "tok_1");
    assert_eq!(token["resources"][0]["data"]["response"]["id"], "p1");
    assert_eq!(token["unmapped"]["zone"]["name"], "example.com");
    Ok(())
}

/// Every field name of the dataset, from Cloudflare's documentation of `audit_logs_v2`.
const LOGPUSH_FIELDS: [&str; 23] = [
    "AccountID",
    "AccountName",
    "ActionDescription",
    "ActionResult",
    "ActionTimestamp",
    "ActionType",
    "ActorContext",
    "ActorEmail",
    "ActorID",
    "ActorIPAddress",
    "ActorTokenDetails",
    "ActorType",
    "AuditLogID",
    "Raw",
    "ResourceID",
    "ResourceProduct",
    "ResourceRequest",
    "ResourceResponse",
    "ResourceScope",
    "ResourceType",
    "ResourceValue",
    "ZoneID",
    "ZoneName",
];

#[test]
fn logpush_lines_use_the_audit_logs_v2_field_names() -> TestResult {
    let records = variety()?;
    let mut seen = std::collections::BTreeSet::new();
    for record in &records {
        let event = line(Format::Logpush, record)?;
        for key in event.as_object().ok_or("an object")?.keys() {
            assert!(LOGPUSH_FIELDS.contains(&key.as_str()), "{key}");
            seen.insert(key.clone());
        }
    }
    let token = line(Format::Logpush, &records[6])?;
    assert_eq!(token["AuditLogID"], records[6].id.to_string());
    assert_eq!(token["ActorTokenDetails"]["name"], "CI");
    assert_eq!(token["ZoneName"], "example.com");
    assert_eq!(token["Raw"]["method"], "PUT");
    assert_eq!(token["ResourceRequest"]["name"], "=cmd");
    assert_eq!(token["ActionTimestamp"], records[6].action.time.to_string());
    assert_eq!(
        seen.len(),
        LOGPUSH_FIELDS.len() - 1,
        "every field but ResourceValue: {seen:?}"
    );
    Ok(())
}

#[tokio::test]
async fn the_query_apis_export_answers_csv_with_formulas_defused() -> TestResult {
    let dir = tempfile::tempdir()?;
    let store = common::sqlite_in(dir.path()).await?;
    let mut hostile = record(Some("acc_1"), BASE_MS);
    hostile.raw.uri = Some("=HYPERLINK(\"http://evil.example\",\"x\")".into());
    hostile.actor.email = Some("+1@example.com".into());
    hostile.action.description = Some("line\nbreak, \"quoted\"".into());
    let plain = record(Some("acc_1"), BASE_MS + 1);
    store
        .insert(&[
            StoredRecord::from_record(&hostile)?,
            StoredRecord::from_record(&plain)?,
        ])
        .await?;
    let router = AuditLogRouter::new(store, |_: &http::request::Parts, _: &str| Access::Allowed)
        .into_router();
    let response = router
        .clone()
        .oneshot(
            http::Request::get(
                "/accounts/acc_1/logs/audit?since=2025-01-01&before=2030-01-01&format=csv&direction=asc",
            )
            .body(Body::empty())?,
        )
        .await?;
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.headers()[http::header::CONTENT_TYPE],
        "text/csv; charset=utf-8"
    );
    let body = String::from_utf8(response.into_body().collect().await?.to_bytes().to_vec())?;
    let mut reader = body.split("\r\n");
    let header = reader.next().ok_or("a header")?;
    assert!(header.starts_with("\"id\",\"action_time\""));
    assert!(
        body.contains("\"'=HYPERLINK(\"\"http://evil.example\"\",\"\"x\"\")\""),
        "{body}"
    );
    assert!(body.contains("\"'+1@example.com\""), "{body}");
    assert!(body.contains("\"line\nbreak, \"\"quoted\"\"\""), "{body}");
    assert!(body.find(&hostile.id.to_string()) < body.find(&plain.id.to_string()));
    assert_eq!(body.matches("\r\n").count(), 3, "a header and two rows");
    // The viewer's CSV button asks with `Accept: text/csv`: the same answer.
    let by_accept = router
        .oneshot(
            http::Request::get(
                "/accounts/acc_1/logs/audit?since=2025-01-01&before=2030-01-01&direction=asc",
            )
            .header(http::header::ACCEPT, "text/csv")
            .body(Body::empty())?,
        )
        .await?;
    assert_eq!(
        by_accept.headers()[http::header::CONTENT_TYPE],
        "text/csv; charset=utf-8"
    );
    let by_accept = by_accept.into_body().collect().await?.to_bytes();
    assert_eq!(String::from_utf8(by_accept.to_vec())?, body);
    // A format the API does not have is a 400 naming it.
    let bad = AuditLogRouter::new(
        SqliteStore::open(dir.path().join("other.db")).await?,
        |_: &http::request::Parts, _: &str| Access::Allowed,
    )
    .into_router()
    .oneshot(
        http::Request::get(
            "/accounts/acc_1/logs/audit?since=2025-01-01&before=2030-01-01&format=xls",
        )
        .body(Body::empty())?,
    )
    .await?;
    assert_eq!(bad.status(), 400);
    Ok(())
}
