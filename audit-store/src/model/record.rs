//! A record as stored: typed columns for every query filter, plus the record's JSON.

use std::borrow::Cow;

use audit_layer::record::AuditRecord;
use uuid::Uuid;

use crate::Result;

/// The longest account or zone id a stored record may name, in bytes: the layer's own bound on
/// an id taken from a request path ([`MAX_PATH_ID_CHARS`] characters), at 4 bytes a
/// character. A much longer one could not be held by the store's indexes (PostgreSQL refuses
/// an index row over about 2.7 KB), and the pipeline never attributes a gap record to one.
///
/// [`MAX_PATH_ID_CHARS`]: audit_layer::record::MAX_PATH_ID_CHARS
pub const MAX_ID_BYTES: usize = audit_layer::record::MAX_PATH_ID_CHARS * 4;

/// The longest `actor_email`, `resource_product` or `resource_type` column, in bytes (an
/// email address has at most 254): beyond it the column holds the value's first bytes, and
/// the record's JSON the whole of it. An app may record a sign-in's claimed email of
/// kilobytes; in full it would make a row PostgreSQL's indexes refuse.
pub const MAX_INDEXED_TEXT_BYTES: usize = 320;

/// One record flattened into its [columns](super::COLUMNS).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredRecord {
    /// `id`.
    pub id: Uuid,
    /// `action.time`, milliseconds since the Unix epoch.
    pub time_ms: i64,
    /// `account.id`.
    pub account_id: Option<String>,
    /// `account.name`.
    pub account_name: Option<String>,
    /// `zone.id`.
    pub zone_id: Option<String>,
    /// `zone.name`.
    pub zone_name: Option<String>,
    /// `action.type` (borrowed for the built-in types).
    pub action_type: Cow<'static, str>,
    /// `action.result`.
    pub action_result: &'static str,
    /// `actor.email`.
    pub actor_email: Option<String>,
    /// `actor.id`.
    pub actor_id: Option<String>,
    /// `actor.ip_address`.
    pub actor_ip_address: Option<String>,
    /// `actor.type`.
    pub actor_type: Option<&'static str>,
    /// `actor.context`.
    pub actor_context: Option<&'static str>,
    /// `actor.token.id`.
    pub actor_token_id: Option<String>,
    /// `actor.token.name`.
    pub actor_token_name: Option<String>,
    /// `raw.cf_ray_id`.
    pub raw_ray_id: String,
    /// `raw.method`; NULL for an event with no request.
    pub raw_method: Option<String>,
    /// `raw.status_code`; NULL for an event with no request.
    pub raw_status_code: Option<i32>,
    /// `raw.uri`; NULL for an event with no request.
    pub raw_uri: Option<String>,
    /// `resource.id`.
    pub resource_id: Option<String>,
    /// `resource.product`.
    pub resource_product: Option<String>,
    /// `resource.type`.
    pub resource_type: Option<String>,
    /// `resource.scope`.
    pub resource_scope: Option<String>,
    /// The record as JSON.
    pub record: String,
}

impl StoredRecord {
    /// Flattens a record given as the JSON it was serialized to, keeping that text as is (a
    /// record replayed from the spool is stored byte for byte as first written).
    pub fn from_json(json: String) -> Result<Self> {
        let record: AuditRecord = serde_json::from_str(&json)?;
        let mut stored = Self::flatten(record, String::new());
        stored.record = json;
        Ok(stored)
    }

    /// Flattens a record, serializing it once.
    pub fn from_record(record: &AuditRecord) -> Result<Self> {
        Self::try_from(record.clone())
    }

    /// Columns are for filtering; the JSON keeps the exact text. Control characters (a NUL
    /// is refused by PostgreSQL's text type) are written visibly, as the layer does. Strings
    /// that need no escaping move from the record into their columns.
    pub(crate) fn flatten(record: AuditRecord, json: String) -> Self {
        fn t(v: String) -> String {
            if let Cow::Owned(escaped) = audit_layer::escape::visible(v.as_bytes()) {
                escaped
            } else {
                v
            }
        }
        fn capped(mut v: String) -> String {
            v.truncate(v.floor_char_boundary(MAX_INDEXED_TEXT_BYTES));
            v
        }
        let o = |v: Option<String>| v.map(t);
        let s = |v: Option<std::sync::Arc<str>>| {
            v.map(|v| audit_layer::escape::visible(v.as_bytes()).into_owned())
        };
        let AuditRecord {
            id,
            account,
            action,
            actor,
            raw,
            resource,
            zone,
            ..
        } = record;
        let (account_id, account_name) = match account {
            Some(a) => (Some(t(a.id)), o(a.name)),
            None => (None, None),
        };
        let (zone_id, zone_name) = match zone {
            Some(z) => (Some(t(z.id)), o(z.name)),
            None => (None, None),
        };
        Self {
            id,
            time_ms: action.time.unix_millis(),
            account_id,
            account_name,
            zone_id,
            zone_name,
            action_type: action.kind.into_name(),
            action_result: action.result.as_str(),
            actor_email: o(actor.email).map(capped),
            actor_id: o(actor.id),
            actor_ip_address: actor.ip_address.map(|ip| ip.to_string()),
            actor_type: actor.kind.map(|k| k.as_str()),
            actor_context: actor.context.map(|c| c.as_str()),
            actor_token_id: o(actor.token.id),
            actor_token_name: o(actor.token.name),
            raw_ray_id: t(raw.cf_ray_id),
            raw_method: o(raw.method),
            raw_status_code: raw.status_code.map(i32::from),
            raw_uri: o(raw.uri),
            resource_id: o(resource.id),
            resource_product: s(resource.product).map(capped),
            resource_type: s(resource.kind).map(capped),
            resource_scope: s(resource.scope),
            record: json,
        }
    }
}

/// Flattens a record it owns, serializing it once: strings that need no escaping move into
/// their columns (the pipeline's way: it owns each record it stores).
impl TryFrom<AuditRecord> for StoredRecord {
    type Error = crate::StoreError;

    fn try_from(record: AuditRecord) -> Result<Self> {
        let json = serde_json::to_string(&record)?;
        Ok(Self::flatten(record, json))
    }
}

#[cfg(test)]
impl StoredRecord {
    /// A stored row of `account` with id `id`; the other columns are fixed.
    pub(crate) fn sample(id: u128, account: Option<&str>) -> Self {
        Self {
            id: Uuid::from_u128(id),
            time_ms: 1,
            account_id: account.map(str::to_owned),
            account_name: None,
            zone_id: None,
            zone_name: None,
            action_type: "create".into(),
            action_result: "success",
            actor_email: None,
            actor_id: None,
            actor_ip_address: None,
            actor_type: None,
            actor_context: None,
            actor_token_id: None,
            actor_token_name: None,
            raw_ray_id: "r".into(),
            raw_method: Some("POST".into()),
            raw_status_code: Some(200),
            raw_uri: Some("/".into()),
            resource_id: None,
            resource_product: None,
            resource_type: None,
            resource_scope: None,
            record: "{}".into(),
        }
    }
}
