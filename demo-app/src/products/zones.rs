//! Zones: `GET/POST /zones`, `GET/PATCH/DELETE /zones/{zone_id}`.
//!
//! A zone belongs to one account; its records are filed in that account's audit log (the
//! auth middleware tells the layer the zone's account, since zone paths do not name it).
//! Auditable: the zone's id, name, owning account and status.

use audit_layer::Identity;
use axum::extract::{Path, State};
use axum::{Extension, Json};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::api::{ApiError, ApiJson, ApiQuery, ErrorBody, Page, ResourceId};
use crate::api::{InvalidName, NoSuchAccount, NoSuchZone, ZonePath};
use crate::api::{changed_id, conflict_if_duplicate, created, found, product};
use crate::auth::{AuditFacts, Principal};
use crate::db::{Db, execute, new_id, now_ms, on_db, rfc3339, select};
use crate::state::AppState;

/// A zone (a domain).
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub(crate) struct Zone {
    /// The zone id.
    #[schema(extensions(("x-auditable" = json!(true))))]
    pub(crate) id: String,
    /// The domain, e.g. `example.com`.
    #[schema(extensions(("x-auditable" = json!(true))))]
    pub(crate) name: String,
    /// `active`.
    #[schema(extensions(("x-auditable" = json!(true))))]
    pub(crate) status: String,
    /// Whether the zone is paused (its traffic not proxied).
    #[schema(extensions(("x-auditable" = json!(true))))]
    pub(crate) paused: bool,
    /// The account that owns the zone.
    pub(crate) account: ZoneAccount,
    /// When the zone was created (RFC 3339).
    pub(crate) created_on: String,
    /// When the zone last changed (RFC 3339).
    pub(crate) modified_on: String,
}

/// The account of a zone.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub(crate) struct ZoneAccount {
    /// The account id.
    #[schema(extensions(("x-auditable" = json!(true))))]
    pub(crate) id: String,
}

/// A zone to create.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub(crate) struct ZoneCreate {
    /// The domain, e.g. `example.net`: dotted labels of letters, digits and `-`, at most 253
    /// characters.
    #[schema(max_length = 253, pattern = r"^\s*[a-zA-Z0-9]([a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?(\.[a-zA-Z0-9]([a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?)+\.?\s*$", extensions(("x-auditable" = json!(true))))]
    pub(crate) name: String,
    /// The account to create the zone in; defaults to the caller's (a token's) account.
    pub(crate) account: Option<ZoneAccount>,
}

/// The fields of a zone that may change.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub(crate) struct ZoneUpdate {
    /// Pause or unpause the zone.
    #[schema(extensions(("x-auditable" = json!(true))))]
    pub(crate) paused: Option<bool>,
}

/// The filter of `GET /zones` (its paging is a [`Page`]).
#[derive(Debug, Default, Deserialize)]
pub(crate) struct ZoneQuery {
    /// Only the zone with this name.
    pub(crate) name: Option<String>,
}

#[derive(sqlx::FromRow)]
struct ZoneRow {
    id: String,
    account_id: String,
    name: String,
    status: String,
    paused: bool,
    created_ms: i64,
    modified_ms: i64,
}

impl From<ZoneRow> for Zone {
    fn from(r: ZoneRow) -> Self {
        Self {
            id: r.id,
            name: r.name,
            status: r.status,
            paused: r.paused,
            account: ZoneAccount { id: r.account_id },
            created_on: rfc3339(r.created_ms),
            modified_on: rfc3339(r.modified_ms),
        }
    }
}

async fn load(db: &Db, zone_id: &str) -> Result<Option<Zone>, ApiError> {
    const SQL: &str = "SELECT id, account_id, name, status, paused, created_ms, modified_ms FROM zones WHERE id = $1";
    let row: Option<ZoneRow> = select(SQL, &[zone_id]).optional(db).await?;
    Ok(row.map(Zone::from))
}

/// The name (domain) of a zone, for the audit pipeline's directory.
pub(crate) async fn zone_name(db: &Db, zone_id: &str) -> Result<Option<String>, sqlx::Error> {
    select("SELECT name FROM zones WHERE id = $1", &[zone_id])
        .text(db)
        .await
}

/// List Zones
#[utoipa::path(
    get,
    path = "/zones",
    params(
        ("name" = Option<String>, Query, description = "Only the zone with this name", extensions(("x-auditable" = json!(true)))),
        ("page" = Option<u32>, Query, minimum = 1, maximum = 1000000, description = "Page, from 1 to 1,000,000", extensions(("x-auditable" = json!(true)))),
        ("per_page" = Option<u32>, Query, minimum = 1, maximum = 500, description = "Zones per page (1–500, default 50)", extensions(("x-auditable" = json!(true)))),
    ),
    responses(
        (status = 200, description = "The zones of the caller's accounts", body = Vec<Zone>),
        (status = 400, description = "Invalid page", body = ErrorBody),
    ),
)]
pub(crate) async fn list_zones(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    ApiQuery(page): ApiQuery<Page>,
    ApiQuery(query): ApiQuery<ZoneQuery>,
) -> Result<Json<Vec<Zone>>, ApiError> {
    let (limit, offset) = page.limit_offset()?;
    // A caller has few accounts: one query per account, merged, keeps the SQL portable.
    let mut zones = Vec::new();
    for account in &principal.accounts {
        const SQL: &str = "SELECT id, account_id, name, status, paused, created_ms, modified_ms FROM zones \
            WHERE account_id = $1 AND ($2 IS NULL OR name = $2) ORDER BY name";
        let rows: Vec<ZoneRow> = on_db!(&state.db, p => sqlx::query_as(SQL)
            .bind(account)
            .bind(query.name.as_deref())
            .fetch_all(p)
            .await)?;
        zones.extend(rows.into_iter().map(Zone::from));
    }
    zones.sort_by(|a, b| a.name.cmp(&b.name));
    let zones = zones
        .into_iter()
        .skip(usize::try_from(offset).unwrap_or(usize::MAX))
        .take(usize::try_from(limit).unwrap_or(0))
        .collect();
    Ok(Json(zones))
}

/// Create Zone
#[utoipa::path(
    post,
    path = "/zones",
    request_body = ZoneCreate,
    responses(
        (status = 200, description = "The new zone", body = Zone),
        InvalidName,
        NoSuchAccount,
        (status = 409, description = "The zone exists already", body = ErrorBody),
    ),
)]
pub(crate) async fn create_zone(
    State(state): State<AppState>,
    facts: AuditFacts,
    Extension(principal): Extension<Principal>,
    ApiJson(input): ApiJson<ZoneCreate>,
) -> Result<Json<Zone>, ApiError> {
    let name = input.name.trim().trim_end_matches('.').to_ascii_lowercase();
    if !is_domain(&name) {
        return Err(ApiError::BadRequest(format!(
            "invalid value for 'name': expected a domain like example.net, got {:?}",
            input.name
        )));
    }
    let account_id = principal.account_for(input.account.map(|a| a.id))?;
    facts.identify(Identity::anonymous().account(&account_id));
    let id = new_id();
    let now = now_ms();
    execute!(
        &state.db,
        sqlx::query(
            "INSERT INTO zones (id, account_id, name, status, paused, created_ms, modified_ms) \
             VALUES ($1, $2, $3, 'active', $4, $5, $5)",
        )
        .bind(&id)
        .bind(&account_id)
        .bind(&name)
        .bind(false)
        .bind(now)
    )
    .map_err(|e| conflict_if_duplicate(e, || format!("the zone {name} exists already")))?;
    facts.resource_id(&id);
    created(load(&state.db, &id).await?)
}

/// Zone Details
#[utoipa::path(
    get,
    path = "/zones/{zone_id}",
    params(ZonePath),
    responses(
        (status = 200, description = "The zone", body = Zone),
        NoSuchZone,
    ),
)]
pub(crate) async fn get_zone(
    State(state): State<AppState>,
    Path(ZonePath { zone_id }): Path<ZonePath>,
) -> Result<Json<Zone>, ApiError> {
    found(load(&state.db, &zone_id).await?, "zone")
}

/// Edit Zone
#[utoipa::path(
    patch,
    path = "/zones/{zone_id}",
    params(ZonePath),
    request_body = ZoneUpdate,
    responses(
        (status = 200, description = "The updated zone", body = Zone),
        NoSuchZone,
    ),
)]
pub(crate) async fn update_zone(
    State(state): State<AppState>,
    Path(ZonePath { zone_id }): Path<ZonePath>,
    ApiJson(update): ApiJson<ZoneUpdate>,
) -> Result<Json<Zone>, ApiError> {
    execute!(
        &state.db,
        sqlx::query(
            "UPDATE zones SET paused = COALESCE($1, paused), modified_ms = $2 WHERE id = $3"
        )
        .bind(update.paused)
        .bind(now_ms())
        .bind(&zone_id)
    )?;
    found(load(&state.db, &zone_id).await?, "zone")
}

/// Delete Zone
///
/// Deletes the zone's DNS records too.
#[utoipa::path(
    delete,
    path = "/zones/{zone_id}",
    params(ZonePath),
    responses(
        (status = 200, description = "The deleted zone's id", body = ResourceId),
        NoSuchZone,
    ),
)]
pub(crate) async fn delete_zone(
    State(state): State<AppState>,
    Path(ZonePath { zone_id }): Path<ZonePath>,
) -> Result<Json<ResourceId>, ApiError> {
    let rows = execute!(
        &state.db,
        sqlx::query("DELETE FROM zones WHERE id = $1").bind(&zone_id)
    )?;
    changed_id(rows, "zone", zone_id)
}

/// The routes of these operations, tagged `zones`, in the `DNS` product category.
pub(crate) fn routes() -> OpenApiRouter<AppState> {
    let router = OpenApiRouter::new()
        .routes(routes!(list_zones, create_zone))
        .routes(routes!(get_zone, update_zone, delete_zone));
    product("zones", &[("x-audit-product-category", "DNS")], router)
}

/// Whether `name` is a lowercase domain of at least two labels: letters, digits and inner
/// hyphens, 1–63 characters a label, 253 in all.
pub(crate) fn is_domain(name: &str) -> bool {
    let labels: Vec<&str> = name.split('.').collect();
    name.len() <= 253
        && labels.len() >= 2
        && labels.iter().all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn domains_are_checked() {
        assert!(is_domain("example.com"));
        assert!(is_domain("a-b.example.co.uk"));
        for bad in [
            "com",
            "Example.com",
            "-a.com",
            "a..com",
            "a_b.com",
            "exa mple.com",
        ] {
            assert!(!is_domain(bad), "{bad}");
        }
    }
}
