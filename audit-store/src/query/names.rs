//! Records stored before the v2 API's names, served under them.
//!
//! Records written before `raw.cf_ray_id` and the flat `actor.token_id`, `actor.token_name`
//! (`raw.ray_id`, the token only as `actor.token`) stay in the database as they were written:
//! a chained record's digest covers its stored JSON, so rewriting the rows would break the
//! chain and with it the tamper evidence of everything before. They are mapped when read
//! instead: the query router serves each such record as the current code writes it, parsed
//! into an [`AuditRecord`] (which reads the old names) and serialized again. Bodies are kept as
//! their JSON text, so nothing but the names changes. The `raw_ray_id` column, which the
//! filters read, was named for the record's field and is the same for both.

use std::borrow::Cow;

use audit_layer::record::AuditRecord;

/// The record's JSON under the current names: `json` itself when it already has them (the
/// common case, found without parsing), otherwise the record written again.
pub(super) fn current(json: &str) -> Cow<'_, str> {
    if !has_previous_names(json) {
        return Cow::Borrowed(json);
    }
    match serde_json::from_str::<AuditRecord>(json).and_then(|r| serde_json::to_string(&r)) {
        Ok(renamed) => Cow::Owned(renamed),
        // Every stored record was written from an `AuditRecord`; one that no longer reads
        // is served as stored rather than not at all.
        Err(_) => Cow::Borrowed(json),
    }
}

/// Whether `json` names its trace id `ray_id`: its first `"ray_id":` comes before any
/// `"cf_ray_id":`. Inside a JSON string a quote is always escaped, so `"ray_id":` occurs only
/// as a key, and no key of the parts written before `raw` (account, action, actor) has that
/// name; a body after it that does cannot be taken for it. A false positive would cost only
/// a parse: a record already under the current names is written again unchanged.
fn has_previous_names(json: &str) -> bool {
    let Some(old) = json.find(r#""ray_id":"#) else {
        return false;
    };
    json.find(r#""cf_ray_id":"#).is_none_or(|new| old < new)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// As `e904ca3` wrote a record of a request made with an API token.
    const PREVIOUS: &str = r#"{"id":"019ae3d2-7a1b-7c3d-8e4f-0123456789ab","account":{"id":"acc"},"action":{"result":"success","time":"2026-12-01T10:00:00.000Z","type":"update"},"actor":{"context":"api_token","id":"usr","token":{"id":"tok_1","name":"CI"},"type":"user"},"raw":{"method":"PUT","ray_id":"8f3a","status_code":200,"uri":"/x"},"resource":{"request":{"ray_id":"in a body","cf_ray_id":1}}}"#;

    #[test]
    fn a_record_of_the_previous_names_is_served_under_the_current_ones() {
        let served = current(PREVIOUS).into_owned();
        assert_eq!(
            served,
            r#"{"id":"019ae3d2-7a1b-7c3d-8e4f-0123456789ab","account":{"id":"acc"},"action":{"result":"success","time":"2026-12-01T10:00:00.000Z","type":"update"},"actor":{"context":"api_token","id":"usr","token_id":"tok_1","token_name":"CI","token":{"id":"tok_1","name":"CI"},"type":"user"},"raw":{"method":"PUT","cf_ray_id":"8f3a","status_code":200,"uri":"/x"},"resource":{"request":{"ray_id":"in a body","cf_ray_id":1}}}"#
        );
        assert!(
            matches!(current(&served), Cow::Borrowed(_)),
            "already current: as is"
        );
    }

    #[test]
    fn a_key_named_ray_id_in_a_body_does_not_make_a_record_old() {
        let record: AuditRecord = serde_json::from_str(PREVIOUS).unwrap();
        let json = serde_json::to_string(&record).unwrap();
        assert!(!has_previous_names(&json), "{json}");
        // Text that only looks like the key, inside a string, is escaped.
        let quoted = json.replace("\"in a body\"", r#""\"ray_id\":""#);
        assert!(!has_previous_names(&quoted));
    }

    #[test]
    fn a_record_that_does_not_read_is_served_as_stored() {
        let broken = r#"{"raw":{"ray_id":"r"}}"#;
        assert_eq!(current(broken), broken);
    }
}
