//! A record as stored: typed columns for every query filter, plus the record's JSON.
//!
//! This module owns the column list; both backends insert and select through it.

use std::borrow::Cow;

use audit_layer::record::AuditRecord;
use uuid::Uuid;

use crate::Result;

/// The stored columns, in insert order. `record` holds the record's JSON exactly as
/// serialized, so a record read back is byte-for-byte the one written.
pub(crate) const COLUMNS: [&str; 24] = [
    "id",
    "time_ms",
    "account_id",
    "account_name",
    "zone_id",
    "zone_name",
    "action_type",
    "action_result",
    "actor_email",
    "actor_id",
    "actor_ip_address",
    "actor_type",
    "actor_context",
    "actor_token_id",
    "actor_token_name",
    "raw_ray_id",
    "raw_method",
    "raw_status_code",
    "raw_uri",
    "resource_id",
    "resource_product",
    "resource_type",
    "resource_scope",
    "record",
];

/// Computes the digest of the 24 [`COLUMNS`] of a row read back, starting at column `offset`,
/// as [`chain::row_digest`](crate::chain) computes it for a row written.
///
/// Text columns are hashed as the bytes stored, without checking their type or that they are
/// UTF-8 (a third of the decoding time of a verifier's scan): a value written as text hashes
/// as its bytes, and any other value (one changed in the database to a number, say) to other
/// bytes, so it does not match its chain hash.
pub(crate) fn digest_columns<R: sqlx::Row>(row: &R, offset: usize) -> Result<[u8; 32]>
where
    usize: sqlx::ColumnIndex<R>,
    for<'r> Option<&'r [u8]>: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> i64: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> i32: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> Uuid: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
{
    let mut digest = crate::chain::RowDigest::new();
    for (i, name) in COLUMNS.iter().enumerate() {
        let at = offset + i;
        match *name {
            "id" => digest.uuid(row.try_get::<Uuid, _>(at)?),
            "time_ms" => digest.int(row.try_get::<i64, _>(at)?),
            "raw_status_code" => digest.int(i64::from(row.try_get::<i32, _>(at)?)),
            _ => digest.bytes(row.try_get_unchecked::<Option<&[u8]>, _>(at)?),
        }
    }
    Ok(digest.finish())
}

/// A link read back from `chain_seq, chain_hash, chain_seal` followed by the 24
/// [`COLUMNS`] (the select list of [`chain_select`]).
pub(crate) fn chain_row_of<R: sqlx::Row>(row: &R) -> Result<crate::chain::ChainRow>
where
    usize: sqlx::ColumnIndex<R>,
    for<'r> Option<&'r str>: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> Option<&'r [u8]>: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> i64: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> i32: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> Uuid: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
{
    Ok(crate::chain::ChainRow {
        seq: row.try_get(0)?,
        hash: row
            .try_get::<Option<&[u8]>, _>(1)?
            .unwrap_or_default()
            .to_vec(),
        seal: row
            .try_get::<Option<&[u8]>, _>(2)?
            .unwrap_or_default()
            .to_vec(),
        id: row.try_get(3)?,
        digest: digest_columns(row, 3)?,
    })
}

/// A link read back as [`chain_row_of`] does, with the chain it belongs to (its
/// `account_id`, `""` when it has none).
#[cfg(feature = "postgres")]
pub(crate) fn scanned_link_of<R: sqlx::Row>(row: &R) -> Result<crate::chain::ScannedLink>
where
    usize: sqlx::ColumnIndex<R>,
    for<'r> Option<&'r str>: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> Option<&'r [u8]>: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> i64: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> i32: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> Uuid: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
{
    // `account_id` is the third of the columns after the three chain columns.
    let chain = row.try_get::<Option<&str>, _>(3 + 2)?.unwrap_or("");
    Ok(crate::chain::ScannedLink {
        chain: chain.to_owned(),
        row: chain_row_of(row)?,
    })
}

/// `chain_seq, chain_hash, chain_seal` and the 24 [`COLUMNS`]: what [`chain_row_of`] and
/// [`scanned_link_of`] decode.
pub(crate) fn chain_select() -> String {
    format!("chain_seq, chain_hash, chain_seal, {}", COLUMNS.join(", "))
}

/// The text columns among [`COLUMNS`], in order.
#[cfg(feature = "sqlite")]
fn text_columns() -> impl Iterator<Item = &'static str> {
    COLUMNS
        .iter()
        .copied()
        .filter(|c| !matches!(*c, "id" | "time_ms" | "raw_status_code"))
}

/// The select list of [`packed_link_of`], for SQLite (3.44 or later, as bundled): the chain
/// columns, the three typed columns, and the 21 text columns packed into two values, their
/// byte lengths (`-1` for NULL) and their concatenation. SQLite's driver copies every value
/// of a row into its own allocation before handing it over: 8 values instead of 27 take a
/// third off the verifier's cost per record.
#[cfg(feature = "sqlite")]
pub(crate) fn packed_chain_select() -> String {
    let lengths: Vec<String> = text_columns()
        .map(|c| format!("ifnull(octet_length({c}), -1)"))
        .collect();
    let texts: Vec<&str> = text_columns().collect();
    format!(
        "chain_seq, chain_hash, chain_seal, id, time_ms, raw_status_code, \
         concat_ws(',', {}), concat({})",
        lengths.join(", "),
        texts.join(", ")
    )
}

/// A link read back from [`packed_chain_select`], with its chain, digested as
/// [`digest_columns`] digests the columns one by one.
#[cfg(feature = "sqlite")]
pub(crate) fn packed_link_of<R: sqlx::Row>(row: &R) -> Result<crate::chain::ScannedLink>
where
    usize: sqlx::ColumnIndex<R>,
    for<'r> Option<&'r [u8]>: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> &'r [u8]: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> i64: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> i32: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> Uuid: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
{
    let id: Uuid = row.try_get(3)?;
    let lengths: &[u8] = row.try_get_unchecked(6)?;
    let texts: &[u8] = row.try_get_unchecked(7)?;
    let malformed = || crate::StoreError::Config(format!("record {id}: unreadable packed columns"));
    let mut lengths = lengths.split(|b| *b == b',').map(|n| {
        std::str::from_utf8(n)
            .ok()
            .and_then(|n| n.parse::<i64>().ok())
            .ok_or_else(malformed)
    });
    let mut at = 0usize;
    let mut next_text = || -> Result<Option<&[u8]>> {
        let n = lengths.next().ok_or_else(malformed)??;
        if n < 0 {
            return Ok(None);
        }
        let end = usize::try_from(n)
            .ok()
            .and_then(|n| at.checked_add(n))
            .filter(|end| *end <= texts.len())
            .ok_or_else(malformed)?;
        let text = &texts[at..end];
        at = end;
        Ok(Some(text))
    };
    let mut digest = crate::chain::RowDigest::new();
    let mut chain = String::new();
    for name in COLUMNS {
        match name {
            "id" => digest.uuid(id),
            "time_ms" => digest.int(row.try_get::<i64, _>(4)?),
            "raw_status_code" => digest.int(i64::from(row.try_get::<i32, _>(5)?)),
            _ => {
                let text = next_text()?;
                if name == "account_id" {
                    chain = String::from_utf8_lossy(text.unwrap_or_default()).into_owned();
                }
                digest.bytes(text);
            }
        }
    }
    if at != texts.len() {
        return Err(malformed());
    }
    Ok(crate::chain::ScannedLink {
        chain,
        row: crate::chain::ChainRow {
            seq: row.try_get(0)?,
            id,
            digest: digest.finish(),
            hash: row
                .try_get::<Option<&[u8]>, _>(1)?
                .unwrap_or_default()
                .to_vec(),
            seal: row
                .try_get::<Option<&[u8]>, _>(2)?
                .unwrap_or_default()
                .to_vec(),
        },
    })
}

/// A chain head read back: `chain, seq, hash`.
pub(crate) fn head_of<R: sqlx::Row>(row: &R) -> Result<crate::chain::ChainHead>
where
    usize: sqlx::ColumnIndex<R>,
    for<'r> String: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> i64: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> Vec<u8>: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
{
    Ok(crate::chain::ChainHead {
        chain: row.try_get(0)?,
        seq: row.try_get(1)?,
        hash: row.try_get(2)?,
    })
}

/// A checkpoint read back: `chain, seq, head, time_ms, kind, key_id, signature`.
pub(crate) fn checkpoint_of<R: sqlx::Row>(row: &R) -> Result<crate::chain::Checkpoint>
where
    usize: sqlx::ColumnIndex<R>,
    for<'r> String: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> i64: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> Vec<u8>: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
{
    use crate::chain::CheckpointKind;
    let kind: String = row.try_get(4)?;
    Ok(crate::chain::Checkpoint {
        account_id: row.try_get(0)?,
        seq: row.try_get(1)?,
        head: row.try_get(2)?,
        time_ms: row.try_get(3)?,
        // An unknown kind can only be an edit: it fails the signature check as a checkpoint.
        kind: CheckpointKind::parse(&kind).unwrap_or(CheckpointKind::Checkpoint),
        key_id: row.try_get(5)?,
        signature: row.try_get(6)?,
    })
}

/// One record flattened into its columns.
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
    /// `action.type`.
    pub action_type: &'static str,
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
    /// `raw.ray_id`.
    pub raw_ray_id: String,
    /// `raw.method`.
    pub raw_method: String,
    /// `raw.status_code`.
    pub raw_status_code: i32,
    /// `raw.uri`.
    pub raw_uri: String,
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
            action_type: action.kind.as_str(),
            action_result: action.result.as_str(),
            actor_email: o(actor.email),
            actor_id: o(actor.id),
            actor_ip_address: actor.ip_address.map(|ip| ip.to_string()),
            actor_type: actor.kind.map(|k| k.as_str()),
            actor_context: actor.context.map(|c| c.as_str()),
            actor_token_id: o(actor.token.id),
            actor_token_name: o(actor.token.name),
            raw_ray_id: t(raw.ray_id),
            raw_method: t(raw.method),
            raw_status_code: i32::from(raw.status_code),
            raw_uri: t(raw.uri),
            resource_id: o(resource.id),
            resource_product: s(resource.product),
            resource_type: s(resource.kind),
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
