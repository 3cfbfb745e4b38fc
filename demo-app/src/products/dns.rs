//! DNS records: `GET/POST /zones/{zone_id}/dns_records`,
//! `GET/PUT/DELETE /zones/{zone_id}/dns_records/{record_id}`.
//!
//! Auditable: the record's type, name, content, TTL and proxy status — "who pointed `www` at
//! this address" is the question a DNS audit log answers. Not the free-text `comment`, which
//! people use for notes that may hold anything.

use std::net::{Ipv4Addr, Ipv6Addr};

use axum::Json;
use axum::extract::{Path, State};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::zones::zone_name;
use crate::api::{
    ApiError, ApiJson, ApiQuery, InvalidField, NoSuchZone, Page, ResourceId, ZonePath,
};
use crate::api::{changed, changed_id, created, error_answers, found, product};
use crate::auth::AuditFacts;
use crate::db::{Db, execute, new_id, now_ms, on_db, rfc3339, select};
use crate::state::AppState;

/// The record types the demo serves.
pub(crate) const TYPES: [&str; 6] = ["A", "AAAA", "CNAME", "MX", "NS", "TXT"];

/// A DNS record.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub(crate) struct DnsRecord {
    /// The record id.
    #[schema(extensions(("x-auditable" = json!(true))))]
    pub(crate) id: String,
    /// The zone the record belongs to.
    #[schema(extensions(("x-auditable" = json!(true))))]
    pub(crate) zone_id: String,
    /// `A`, `AAAA`, `CNAME`, `MX`, `NS` or `TXT`.
    #[serde(rename = "type")]
    #[schema(extensions(("x-auditable" = json!(true))))]
    pub(crate) kind: String,
    /// The fully qualified name, e.g. `www.example.com`.
    #[schema(extensions(("x-auditable" = json!(true))))]
    pub(crate) name: String,
    /// The value: an address, a host name or text.
    #[schema(extensions(("x-auditable" = json!(true))))]
    pub(crate) content: String,
    /// Time to live in seconds; `1` means automatic.
    #[schema(extensions(("x-auditable" = json!(true))))]
    pub(crate) ttl: i64,
    /// Whether traffic to the name is proxied.
    #[schema(extensions(("x-auditable" = json!(true))))]
    pub(crate) proxied: bool,
    /// A note for people. Not recorded.
    pub(crate) comment: Option<String>,
    /// When the record was created (RFC 3339).
    pub(crate) created_on: String,
    /// When the record last changed (RFC 3339).
    pub(crate) modified_on: String,
}

/// A DNS record to create, or to replace an existing one with. Its schema in the document is
/// written by hand ([`super::dns_input`]): what a record needs depends on its type.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct DnsRecordInput {
    /// `A`, `AAAA`, `CNAME`, `MX`, `NS` or `TXT` (any case).
    #[serde(rename = "type")]
    pub(crate) kind: String,
    /// The name: `@` for the zone apex, a name relative to the zone (`www`), or a fully
    /// qualified name inside the zone; at most 253 characters.
    pub(crate) name: String,
    /// The value: an IPv4 address (`A`), an IPv6 address (`AAAA`), a host name (`CNAME`,
    /// `MX`, `NS`) or text (`TXT`, up to 2048 characters).
    pub(crate) content: String,
    /// Time to live in seconds (30–86400), or `1` for automatic (the default).
    #[serde(default, deserialize_with = "json_integer")]
    pub(crate) ttl: Option<i64>,
    /// Whether to proxy traffic to the name (`A`, `AAAA` and `CNAME` only). Defaults to `false`.
    pub(crate) proxied: Option<bool>,
    /// A note for people (up to 100 characters). Not recorded.
    pub(crate) comment: Option<String>,
}

/// A JSON integer, also when written with a zero fraction (`300.0`): JSON Schema's `integer`
/// is any number without a fractional part, and the document says `integer`.
fn json_integer<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<i64>, D::Error> {
    use serde::de::Error;
    /// Beyond 2^53 a float no longer holds every integer.
    const EXACT: f64 = 9_007_199_254_740_992.0;
    let Some(number) = Option::<serde_json::Number>::deserialize(deserializer)? else {
        return Ok(None);
    };
    let whole = number.as_i64().or_else(|| {
        number
            .as_f64()
            .filter(|f| f.fract() == 0.0 && f.abs() <= EXACT)
            .map(|f| f as i64)
    });
    whole
        .map(Some)
        .ok_or_else(|| D::Error::custom(format!("invalid value: {number}, expected an integer")))
}

impl utoipa::PartialSchema for DnsRecordInput {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        super::dns_input::schema()
    }
}

impl ToSchema for DnsRecordInput {
    fn name() -> std::borrow::Cow<'static, str> {
        "DnsRecordInput".into()
    }
}

/// The filters of the record list (its paging is a [`Page`]).
#[derive(Debug, Default, Deserialize)]
pub(crate) struct DnsQuery {
    /// Only records of this type.
    #[serde(rename = "type")]
    pub(crate) kind: Option<String>,
    /// Only records with this fully qualified name.
    pub(crate) name: Option<String>,
}

/// The path of one record: `/zones/{zone_id}/dns_records/{record_id}`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub(crate) struct RecordPath {
    /// The zone id
    pub(crate) zone_id: String,
    /// The record id
    pub(crate) record_id: String,
}

error_answers! {
    /// `404`: the zone has no record with the path's id.
    NoSuchRecord => [(404, "No such record")];
}

#[derive(sqlx::FromRow)]
struct DnsRow {
    id: String,
    zone_id: String,
    #[sqlx(rename = "type")]
    kind: String,
    name: String,
    content: String,
    ttl: i64,
    proxied: bool,
    comment: Option<String>,
    created_ms: i64,
    modified_ms: i64,
}

impl From<DnsRow> for DnsRecord {
    fn from(r: DnsRow) -> Self {
        Self {
            id: r.id,
            zone_id: r.zone_id,
            kind: r.kind,
            name: r.name,
            content: r.content,
            ttl: r.ttl,
            proxied: r.proxied,
            comment: r.comment,
            created_on: rfc3339(r.created_ms),
            modified_on: rfc3339(r.modified_ms),
        }
    }
}

/// A validated record, normalized: uppercase type, fully qualified lowercase name.
struct Checked {
    kind: String,
    name: String,
    content: String,
    ttl: i64,
    proxied: bool,
    comment: Option<String>,
}

fn check(input: DnsRecordInput, zone: &str) -> Result<Checked, ApiError> {
    let bad = |field: &str, why: String| {
        ApiError::BadRequest(format!("invalid value for '{field}': {why}"))
    };
    let kind = input.kind.to_ascii_uppercase();
    if !TYPES.contains(&kind.as_str()) {
        return Err(bad(
            "type",
            format!("expected one of {TYPES:?}, got {:?}", input.kind),
        ));
    }
    if input.name.chars().count() > 253 {
        return Err(bad("name", "at most 253 characters".into()));
    }
    let raw = input.name.trim().trim_end_matches('.').to_ascii_lowercase();
    let name = if raw == "@" || raw.is_empty() {
        zone.to_owned()
    } else if raw == zone || raw.ends_with(&format!(".{zone}")) {
        raw
    } else {
        format!("{raw}.{zone}")
    };
    if !has_host_labels(&name) {
        return Err(bad(
            "name",
            format!("expected a host name inside {zone}, got {:?}", input.name),
        ));
    }
    let content = input.content.trim().to_owned();
    let content_ok = match kind.as_str() {
        "A" => content.parse::<Ipv4Addr>().is_ok(),
        "AAAA" => content.parse::<Ipv6Addr>().is_ok(),
        "TXT" => !content.is_empty() && content.chars().count() <= 2048,
        _ => content.chars().count() <= 253 && has_host_labels(content.trim_end_matches('.')),
    };
    if !content_ok {
        return Err(bad(
            "content",
            format!("not a valid {kind} value: {content:?}"),
        ));
    }
    let ttl = input.ttl.unwrap_or(1);
    if ttl != 1 && !(30..=86_400).contains(&ttl) {
        return Err(bad(
            "ttl",
            format!("expected 1 (automatic) or 30 to 86400, got {ttl}"),
        ));
    }
    let proxied = input.proxied.unwrap_or(false);
    if proxied && !matches!(kind.as_str(), "A" | "AAAA" | "CNAME") {
        return Err(bad("proxied", format!("{kind} records cannot be proxied")));
    }
    if let Some(comment) = &input.comment
        && comment.chars().count() > 100
    {
        return Err(bad("comment", "at most 100 characters".into()));
    }
    Ok(Checked {
        kind,
        name,
        content,
        ttl,
        proxied,
        comment: input.comment,
    })
}

/// Labels of a host name as records use them: letters, digits, `-` and `_` (`_dmarc`), at
/// most 63 each, a leading `*` wildcard allowed. (The lengths of whole names are bounded where
/// the document says: a record's name as sent, a host name as content.)
fn has_host_labels(name: &str) -> bool {
    name.split('.').enumerate().all(|(i, label)| {
        (i == 0 && label == "*")
            || (!label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'))
    })
}

async fn load(db: &Db, zone_id: &str, record_id: &str) -> Result<Option<DnsRecord>, ApiError> {
    const SQL: &str = "SELECT id, zone_id, type, name, content, ttl, proxied, comment, created_ms, modified_ms \
        FROM dns_records WHERE zone_id = $1 AND id = $2";
    let row: Option<DnsRow> = select(SQL, &[zone_id, record_id]).optional(db).await?;
    Ok(row.map(DnsRecord::from))
}

/// `input` checked as a record of the zone `zone_id` (see [`check`]).
async fn check_in_zone(db: &Db, zone_id: &str, input: DnsRecordInput) -> Result<Checked, ApiError> {
    let zone = zone_name(db, zone_id)
        .await?
        .ok_or(ApiError::NotFound("zone"))?;
    check(input, &zone)
}

/// Creates a record: the parameters of [`UPDATE`], in the same order.
const INSERT: &str = "INSERT INTO dns_records (type, name, content, ttl, proxied, comment, modified_ms, zone_id, id, created_ms) \
    VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $7)";

/// Overwrites a record: its fields ($1–$6), the time ($7), the zone ($8) and the record id ($9).
const UPDATE: &str = "UPDATE dns_records SET type = $1, name = $2, content = $3, ttl = $4, proxied = $5, comment = $6, \
    modified_ms = $7 WHERE zone_id = $8 AND id = $9";

/// Writes `record` as the record `record_id` of the zone `zone_id` with [`INSERT`] or
/// [`UPDATE`], and returns the number of rows written.
async fn save(
    db: &Db,
    sql: &'static str,
    zone_id: &str,
    record_id: &str,
    record: &Checked,
) -> Result<u64, sqlx::Error> {
    execute!(
        db,
        sqlx::query(sql)
            .bind(&record.kind)
            .bind(&record.name)
            .bind(&record.content)
            .bind(record.ttl)
            .bind(record.proxied)
            .bind(record.comment.as_deref())
            .bind(now_ms())
            .bind(zone_id)
            .bind(record_id)
    )
}

/// List DNS Records
#[utoipa::path(
    get,
    path = "/zones/{zone_id}/dns_records",
    params(
        ZonePath,
        ("type" = Option<String>, Query, description = "Only records of this type", extensions(("x-auditable" = json!(true)))),
        ("name" = Option<String>, Query, description = "Only records with this name", extensions(("x-auditable" = json!(true)))),
        ("page" = Option<u32>, Query, minimum = 1, maximum = 1000000, description = "Page, from 1 to 1,000,000", extensions(("x-auditable" = json!(true)))),
        ("per_page" = Option<u32>, Query, minimum = 1, maximum = 500, description = "Records per page (1–500, default 50)", extensions(("x-auditable" = json!(true)))),
    ),
    responses(
        (status = 200, description = "The zone's records", body = Vec<DnsRecord>),
        NoSuchZone,
    ),
)]
pub(crate) async fn list_records(
    State(state): State<AppState>,
    Path(ZonePath { zone_id }): Path<ZonePath>,
    ApiQuery(page): ApiQuery<Page>,
    ApiQuery(query): ApiQuery<DnsQuery>,
) -> Result<Json<Vec<DnsRecord>>, ApiError> {
    const SQL: &str = "SELECT id, zone_id, type, name, content, ttl, proxied, comment, created_ms, modified_ms \
        FROM dns_records WHERE zone_id = $1 AND ($2 IS NULL OR type = $2) AND ($3 IS NULL OR name = $3) \
        ORDER BY name, type, id LIMIT $4 OFFSET $5";
    let (limit, offset) = page.limit_offset()?;
    let kind = query.kind.map(|k| k.to_ascii_uppercase());
    let name = query.name.map(|n| n.to_ascii_lowercase());
    let rows: Vec<DnsRow> = on_db!(&state.db, p => sqlx::query_as(SQL)
        .bind(&zone_id)
        .bind(kind.as_deref())
        .bind(name.as_deref())
        .bind(limit)
        .bind(offset)
        .fetch_all(p)
        .await)?;
    Ok(Json(rows.into_iter().map(DnsRecord::from).collect()))
}

/// Create DNS Record
#[utoipa::path(
    post,
    path = "/zones/{zone_id}/dns_records",
    params(ZonePath),
    request_body = DnsRecordInput,
    responses(
        (status = 200, description = "The new record", body = DnsRecord),
        InvalidField,
        NoSuchZone,
    ),
)]
pub(crate) async fn create_record(
    State(state): State<AppState>,
    facts: AuditFacts,
    Path(ZonePath { zone_id }): Path<ZonePath>,
    ApiJson(input): ApiJson<DnsRecordInput>,
) -> Result<Json<DnsRecord>, ApiError> {
    let record = check_in_zone(&state.db, &zone_id, input).await?;
    let id = new_id();
    save(&state.db, INSERT, &zone_id, &id, &record).await?;
    facts.resource_id(&id);
    created(load(&state.db, &zone_id, &id).await?)
}

/// DNS Record Details
#[utoipa::path(
    get,
    path = "/zones/{zone_id}/dns_records/{record_id}",
    params(RecordPath),
    responses(
        (status = 200, description = "The record", body = DnsRecord),
        NoSuchRecord,
    ),
)]
pub(crate) async fn get_record(
    State(state): State<AppState>,
    Path(path): Path<RecordPath>,
) -> Result<Json<DnsRecord>, ApiError> {
    found(
        load(&state.db, &path.zone_id, &path.record_id).await?,
        "DNS record",
    )
}

/// Overwrite DNS Record
#[utoipa::path(
    put,
    path = "/zones/{zone_id}/dns_records/{record_id}",
    params(RecordPath),
    request_body = DnsRecordInput,
    responses(
        (status = 200, description = "The updated record", body = DnsRecord),
        InvalidField,
        NoSuchRecord,
    ),
)]
pub(crate) async fn update_record(
    State(state): State<AppState>,
    facts: AuditFacts,
    Path(path): Path<RecordPath>,
    ApiJson(input): ApiJson<DnsRecordInput>,
) -> Result<Json<DnsRecord>, ApiError> {
    let record = check_in_zone(&state.db, &path.zone_id, input).await?;
    let before = load(&state.db, &path.zone_id, &path.record_id).await?;
    let rows = save(&state.db, UPDATE, &path.zone_id, &path.record_id, &record).await?;
    changed(rows, "DNS record")?;
    let after = found(
        load(&state.db, &path.zone_id, &path.record_id).await?,
        "DNS record",
    )?;
    // The record's exact value before and after, as the audit log's `change` (its auditable
    // fields: never the comment).
    facts.change(before.as_ref(), Some(&after.0));
    Ok(after)
}

/// Delete DNS Record
#[utoipa::path(
    delete,
    path = "/zones/{zone_id}/dns_records/{record_id}",
    params(RecordPath),
    responses(
        (status = 200, description = "The deleted record's id", body = ResourceId),
        NoSuchRecord,
    ),
)]
pub(crate) async fn delete_record(
    State(state): State<AppState>,
    Path(RecordPath { zone_id, record_id }): Path<RecordPath>,
) -> Result<Json<ResourceId>, ApiError> {
    let rows = execute!(
        &state.db,
        sqlx::query("DELETE FROM dns_records WHERE zone_id = $1 AND id = $2")
            .bind(&zone_id)
            .bind(&record_id)
    )?;
    changed_id(rows, "DNS record", record_id)
}

/// The routes of these operations, tagged `dns` and marked `x-audit-product: dns`, in the
/// `DNS` product category.
pub(crate) fn routes() -> OpenApiRouter<AppState> {
    let router = OpenApiRouter::new()
        .routes(routes!(list_records, create_record))
        .routes(routes!(get_record, update_record, delete_record));
    let marks = [
        ("x-audit-product", "dns"),
        ("x-audit-product-category", "DNS"),
    ];
    product("dns", &marks, router)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input(kind: &str, name: &str, content: &str) -> DnsRecordInput {
        DnsRecordInput {
            kind: kind.into(),
            name: name.into(),
            content: content.into(),
            ttl: None,
            proxied: None,
            comment: None,
        }
    }

    #[test]
    fn a_ttl_is_an_integer_also_with_a_zero_fraction() {
        let parse = |ttl: &str| {
            let body =
                format!(r#"{{"type": "A", "name": "www", "content": "192.0.2.1", "ttl": {ttl}}}"#);
            serde_json::from_str::<DnsRecordInput>(&body).map(|input| input.ttl)
        };
        assert_eq!(parse("300.0").unwrap(), Some(300));
        assert_eq!(parse("300").unwrap(), Some(300));
        assert_eq!(parse("null").unwrap(), None);
        assert!(parse("300.5").is_err());
        assert!(parse("1e300").is_err());
    }

    #[test]
    fn names_are_made_fully_qualified_inside_the_zone() {
        let apex = check(input("a", "@", "192.0.2.1"), "example.com")
            .ok()
            .unwrap();
        assert_eq!(
            (apex.kind.as_str(), apex.name.as_str()),
            ("A", "example.com")
        );
        let www = check(input("CNAME", "www", "example.com"), "example.com")
            .ok()
            .unwrap();
        assert_eq!(www.name, "www.example.com");
        let fq = check(
            input("TXT", "_dmarc.example.com", "v=DMARC1; p=none"),
            "example.com",
        );
        assert_eq!(fq.ok().unwrap().name, "_dmarc.example.com");
    }

    #[test]
    fn invalid_records_are_refused_naming_the_field() {
        let cases = [
            (input("A", "www", "not-an-ip"), "'content'"),
            (input("AAAA", "www", "192.0.2.1"), "'content'"),
            (input("SRV", "www", "x"), "'type'"),
            (input("A", "bad name", "192.0.2.1"), "'name'"),
            (
                DnsRecordInput {
                    ttl: Some(5),
                    ..input("A", "www", "192.0.2.1")
                },
                "'ttl'",
            ),
            (
                DnsRecordInput {
                    proxied: Some(true),
                    ..input("TXT", "www", "x")
                },
                "'proxied'",
            ),
        ];
        for (case, field) in cases {
            match check(case, "example.com") {
                Err(ApiError::BadRequest(message)) => assert!(message.contains(field), "{message}"),
                _ => panic!("expected a 400 naming {field}"),
            }
        }
    }
}
