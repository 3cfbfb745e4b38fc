//! Times as the store keeps them: milliseconds since the Unix epoch, UTC.

use audit_layer::record::Timestamp;

/// Parses a time as the query API does: a date (`YYYY-MM-DD`, midnight UTC) or an RFC 3339
/// time, to ms since the Unix epoch.
///
/// ```
/// assert_eq!(audit_store::time::parse_time("2025-01-01"), Some(1_735_689_600_000));
/// assert_eq!(audit_store::time::parse_time("2025-01-01T00:00:01Z"), Some(1_735_689_601_000));
/// assert_eq!(audit_store::time::parse_time("yesterday"), None);
/// ```
pub fn parse_time(value: &str) -> Option<i64> {
    if let Ok(t) = value.parse::<Timestamp>() {
        return Some(t.unix_millis());
    }
    let format = time::macros::format_description!("[year]-[month]-[day]");
    let date = time::Date::parse(value, &format).ok()?;
    Some(date.midnight().assume_utc().unix_timestamp() * 1000)
}

/// Now, in ms since the Unix epoch.
pub(crate) fn now_ms() -> i64 {
    Timestamp::now().unix_millis()
}
