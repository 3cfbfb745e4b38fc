//! Validation of records against `schemas/audit-log.schema.json` (feature `validate`).
//!
//! The JSON Schema is the published contract of the record format; every record the test
//! suites produce is checked against it, with format checking on (`uuid`, `date-time`,
//! `ip`).
//!
//! ```
//! # let record: audit_layer::record::AuditRecord = serde_json::from_str(r#"{"id":"01948c5e-9a2d-7b3c-8f00-0123456789ab","action":{"result":"success","time":"2025-01-23T18:25:14.749Z","type":"view"},"actor":{"token":{}},"raw":{"method":"GET","cf_ray_id":"r","status_code":200,"uri":"/"},"resource":{}}"#).unwrap();
//! audit_layer::schema::validate(&record)?;
//! # Ok::<(), audit_layer::schema::SchemaViolation>(())
//! ```

use std::sync::OnceLock;

use serde_json::Value;

use crate::record::AuditRecord;

/// The text of `schemas/audit-log.schema.json` (packaged in the crate as
/// `audit-layer/schemas/audit-log.schema.json`, a link to the workspace's file).
pub const AUDIT_LOG_SCHEMA: &str = include_str!("../schemas/audit-log.schema.json");

/// A record (or JSON value) that does not satisfy the record schema.
#[derive(Debug, thiserror::Error)]
#[error("audit record {id} violates audit-log.schema.json: {problems}")]
pub struct SchemaViolation {
    id: String,
    problems: String,
}

fn validator() -> &'static jsonschema::Validator {
    static VALIDATOR: OnceLock<jsonschema::Validator> = OnceLock::new();
    VALIDATOR.get_or_init(|| {
        let schema: Value = serde_json::from_str(AUDIT_LOG_SCHEMA)
            .unwrap_or_else(|e| panic!("schemas/audit-log.schema.json is not JSON: {e}"));
        jsonschema::draft202012::options()
            .should_validate_formats(true)
            .build(&schema)
            .unwrap_or_else(|e| panic!("schemas/audit-log.schema.json is not a valid schema: {e}"))
    })
}

/// Checks one record against the schema, as the JSON it serializes to.
pub fn validate(record: &AuditRecord) -> Result<(), SchemaViolation> {
    let json = serde_json::to_value(record).map_err(|e| SchemaViolation {
        id: record.id.to_string(),
        problems: format!("does not serialize: {e}"),
    })?;
    validate_json(&json)
}

/// Checks one JSON value against the schema.
pub fn validate_json(json: &Value) -> Result<(), SchemaViolation> {
    let problems: Vec<String> = validator()
        .iter_errors(json)
        .map(|e| format!("at '{}': {e}", e.instance_path()))
        .collect();
    if problems.is_empty() {
        return Ok(());
    }
    Err(SchemaViolation {
        id: json
            .get("id")
            .and_then(Value::as_str)
            .unwrap_or("<no id>")
            .to_owned(),
        problems: problems.join("; "),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn sample() -> Value {
        json!({
            "id": "01948c5e-9a2d-7b3c-8f00-0123456789ab",
            "account": {"id": "acc_demo", "name": "Example account"},
            "action": {"description": "Update a Notification policy", "result": "success",
                       "time": "2025-01-23T18:25:14.749Z", "type": "update"},
            "actor": {"context": "dash", "email": "alice@example.com", "id": "usr_1",
                      "ip_address": "127.0.0.1", "token": {}, "type": "user"},
            "raw": {"method": "PUT", "cf_ray_id": "8f3a21c0d9e6b7a4", "status_code": 200,
                    "uri": "/accounts/acc_demo/alerting/v3/policies/p1", "user_agent": "Postman"},
            "resource": {"id": "p1", "product": "alerting", "request": {"enabled": false},
                         "response": {"id": "p1"}, "scope": "accounts", "type": "policies"},
            "zone": {"id": "zone_1", "name": "example.com"}
        })
    }

    #[test]
    fn the_announcement_sample_validates() {
        validate_json(&sample()).unwrap();
        let record: AuditRecord = serde_json::from_value(sample()).unwrap();
        validate(&record).unwrap();
    }

    #[test]
    fn an_event_with_no_exchange_and_an_action_of_its_own_validates() {
        let mut record = sample();
        record["action"]["type"] = json!("policy_disabled_2");
        record["raw"] = json!({"cf_ray_id": "0193aa"});
        record["change"] = json!({"before": {"enabled": true}, "after": {"_truncated": "dropped"}});
        validate_json(&record).unwrap();
        let parsed: AuditRecord = serde_json::from_value(record.clone()).unwrap();
        assert_eq!(
            serde_json::to_value(&parsed).unwrap()["change"],
            record["change"]
        );
        record["raw"] = json!({});
        assert!(validate_json(&record).is_err(), "raw.cf_ray_id is required");
    }

    #[test]
    fn the_schema_rejects_what_the_contract_forbids() {
        let cases: &[(&str, Value)] = &[
            ("/id", json!("not-a-uuid")),
            ("/action/time", json!("2025-01-23 18:25")),
            ("/action/type", json!("Edit")),
            ("/action/type", json!("key rotated")),
            ("/change/before", json!("a string")),
            ("/change/after", json!(42)),
            ("/action/result", json!("ok")),
            ("/actor/type", json!("robot")),
            ("/actor/context", json!("cookie")),
            ("/actor/ip_address", json!("999.1.1.1")),
            ("/raw/status_code", json!(99)),
            ("/raw/method", json!("")),
            ("/resource/request", json!("a string")),
            ("/actor/password", json!("hunter2")),
        ];
        for (pointer, bad) in cases {
            let mut record = sample();
            record["change"] = json!({"before": null, "after": {"name": "ok"}});
            validate_json(&record).unwrap();
            let (parent, key) = pointer.rsplit_once('/').unwrap();
            record.pointer_mut(parent).unwrap()[key] = bad.clone();
            let err = validate_json(&record).expect_err(pointer);
            assert!(err.to_string().contains(parent), "{pointer}: {err}");
        }
        for required in ["id", "action", "actor", "raw", "resource"] {
            let mut record = sample();
            record.as_object_mut().unwrap().remove(required);
            assert!(validate_json(&record).is_err(), "{required} is required");
        }
    }
}
