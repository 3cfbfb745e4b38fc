//! The field names of Cloudflare Logpush's `audit_logs_v2` dataset, so pipelines built for
//! the original system's Logpush jobs parse our export unchanged.
//!
//! | field | from |
//! |---|---|
//! | `AccountID`, `AccountName` | `account.id`, `account.name` |
//! | `ActionDescription`, `ActionResult`, `ActionTimestamp`, `ActionType` | `action.description`, `.result`, `.time` (RFC 3339), `.type` |
//! | `ActorContext`, `ActorEmail`, `ActorID`, `ActorIPAddress`, `ActorType` | `actor.context`, `.email`, `.id`, `.ip_address`, `.type` |
//! | `ActorTokenDetails` | `actor.token` (`{"id", "name"}`) |
//! | `AuditLogID` | `id` |
//! | `Raw` | `raw` (the object as stored) |
//! | `ResourceID`, `ResourceProduct`, `ResourceScope`, `ResourceType` | `resource.id`, `.product`, `.scope`, `.type` |
//! | `ResourceRequest`, `ResourceResponse` | `resource.request`, `.response` (redacted bodies) |
//! | `ZoneID`, `ZoneName` | `zone.id`, `zone.name` |
//!
//! A field the record does not have is left out. `ResourceValue` (the resource's state after
//! the action) is not in a record and never written.

use serde_json::{Map, Value};

use super::FormatError;
use super::fields::Fields;
use crate::model::PageRow;

/// Every `audit_logs_v2` field written, and the record path it comes from.
pub(super) const FIELDS: [(&str, &[&str]); 21] = [
    ("AccountID", &["account", "id"]),
    ("AccountName", &["account", "name"]),
    ("ActionDescription", &["action", "description"]),
    ("ActionResult", &["action", "result"]),
    ("ActionTimestamp", &["action", "time"]),
    ("ActionType", &["action", "type"]),
    ("ActorContext", &["actor", "context"]),
    ("ActorEmail", &["actor", "email"]),
    ("ActorID", &["actor", "id"]),
    ("ActorIPAddress", &["actor", "ip_address"]),
    ("ActorTokenDetails", &["actor", "token"]),
    ("ActorType", &["actor", "type"]),
    ("AuditLogID", &["id"]),
    ("Raw", &["raw"]),
    ("ResourceID", &["resource", "id"]),
    ("ResourceProduct", &["resource", "product"]),
    ("ResourceRequest", &["resource", "request"]),
    ("ResourceResponse", &["resource", "response"]),
    ("ResourceScope", &["resource", "scope"]),
    ("ResourceType", &["resource", "type"]),
    ("ZoneID", &["zone", "id"]),
];

/// `row` as one `audit_logs_v2` line (without its newline).
pub(super) fn write(row: &PageRow, out: &mut String) -> Result<(), FormatError> {
    let fields = Fields::parse(row)?;
    let mut line = Map::new();
    for (name, path) in FIELDS {
        if let Some(value) = fields.get(path)
            && !value.as_object().is_some_and(Map::is_empty)
        {
            line.insert(name.to_owned(), value.clone());
        }
    }
    if let Some(zone) = fields.get(&["zone", "name"]) {
        line.insert("ZoneName".to_owned(), zone.clone());
    }
    out.push_str(&Value::Object(line).to_string());
    Ok(())
}
