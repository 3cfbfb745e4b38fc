//! Records as CSV (RFC 4180), for spreadsheets: one row per record, every cell quoted, and
//! cells that a spreadsheet would run as a formula defused.
//!
//! A record holds what clients sent (a URI, a user agent, an e-mail address): a cell starting
//! with `=`, `+`, `-`, `@`, a tab or a carriage return is prefixed with `'` (OWASP's advice on
//! CSV injection), so `=HYPERLINK(...)` shows as text instead of running.

use serde_json::Value;

use super::FormatError;
use super::fields::Fields;
use crate::model::PageRow;

/// The columns, and the record path each comes from.
const COLUMNS: [(&str, &[&str]); 25] = [
    ("id", &["id"]),
    ("action_time", &["action", "time"]),
    ("account_id", &["account", "id"]),
    ("account_name", &["account", "name"]),
    ("zone_id", &["zone", "id"]),
    ("zone_name", &["zone", "name"]),
    ("action_type", &["action", "type"]),
    ("action_result", &["action", "result"]),
    ("action_description", &["action", "description"]),
    ("actor_type", &["actor", "type"]),
    ("actor_context", &["actor", "context"]),
    ("actor_email", &["actor", "email"]),
    ("actor_id", &["actor", "id"]),
    ("actor_ip_address", &["actor", "ip_address"]),
    ("actor_token_id", &["actor", "token", "id"]),
    ("actor_token_name", &["actor", "token", "name"]),
    ("raw_method", &["raw", "method"]),
    ("raw_status_code", &["raw", "status_code"]),
    ("raw_uri", &["raw", "uri"]),
    ("raw_user_agent", &["raw", "user_agent"]),
    ("resource_scope", &["resource", "scope"]),
    ("resource_product", &["resource", "product"]),
    ("resource_type", &["resource", "type"]),
    ("resource_id", &["resource", "id"]),
    ("resource_request", &["resource", "request"]),
];

/// The header row, newline included.
///
/// ```
/// let header = audit_store::export::csv_header();
/// assert!(header.starts_with("\"id\",\"action_time\",\"account_id\","));
/// assert!(header.ends_with(",\"raw_ray_id\"\r\n"));
/// ```
pub fn header() -> String {
    let mut out = String::new();
    for (i, (name, _)) in COLUMNS.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        cell(name, &mut out);
    }
    out.push_str(",\"resource_response\",\"raw_ray_id\"\r\n");
    out
}

/// Appends `row` as a CSV row, `\r\n` included.
///
/// # Errors
///
/// When the stored record is not a JSON object.
pub fn write_row(row: &PageRow, out: &mut String) -> Result<(), FormatError> {
    let fields = Fields::parse(row)?;
    let text = |value: Option<&Value>| match value {
        None => String::new(),
        Some(Value::String(s)) => s.clone(),
        Some(other) => other.to_string(),
    };
    for (i, (_, path)) in COLUMNS.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        cell(&text(fields.get(path)), out);
    }
    out.push(',');
    cell(&text(fields.get(&["resource", "response"])), out);
    out.push(',');
    cell(fields.ray_id().unwrap_or(""), out);
    out.push_str("\r\n");
    Ok(())
}

/// One quoted cell: quotes doubled, a formula's first character defused.
fn cell(value: &str, out: &mut String) {
    out.push('"');
    if value.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        out.push('\'');
    }
    for c in value.chars() {
        if c == '"' {
            out.push('"');
        }
        out.push(c);
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cell_of(value: &str) -> String {
        let mut out = String::new();
        cell(value, &mut out);
        out
    }

    #[test]
    fn formulas_are_defused_and_quotes_doubled() {
        assert_eq!(cell_of("=HYPERLINK(\"x\")"), "\"'=HYPERLINK(\"\"x\"\")\"");
        for start in ["+1", "-2+3", "@SUM(A1)", "\tx", "\rx"] {
            assert!(cell_of(start).starts_with("\"'"), "{start:?}");
        }
        assert_eq!(cell_of("a,b\nc"), "\"a,b\nc\"");
        assert_eq!(cell_of("plain"), "\"plain\"");
    }

    #[test]
    fn a_row_has_a_cell_for_every_header_column() {
        let row = PageRow {
            time_ms: 0,
            id: uuid::Uuid::nil(),
            record: r#"{"id":"x","action":{"type":"login","time":"2026-01-01T00:00:00Z"},"raw":{"method":"POST","status_code":401,"uri":"=cmd|' /C calc'!A0","cf_ray_id":"r1"},"actor":{"email":"-@x"}}"#.into(),
        };
        let mut out = String::new();
        write_row(&row, &mut out).unwrap();
        assert_eq!(
            out.matches("\",\"").count(),
            header().matches("\",\"").count()
        );
        assert!(out.contains("\"'=cmd|' /C calc'!A0\""), "{out}");
        assert!(out.contains("\"'-@x\""), "{out}");
        assert!(out.ends_with("\"r1\"\r\n"), "{out}");
    }
}
