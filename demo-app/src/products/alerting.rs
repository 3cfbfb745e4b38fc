//! Alerting (notification) policies: `GET/POST /accounts/{account_id}/alerting/v3/policies`,
//! `GET/PUT/DELETE /accounts/{account_id}/alerting/v3/policies/{policy_id}`.
//!
//! Auditable: what a policy alerts on — `name`, `description`, `enabled`, `alert_type` and
//! `filters.{services, zones}`. Not its `mechanisms`: webhook URLs carry secrets in their
//! paths and queries, and email targets are personal data the log does not need. Writes answer
//! `{"id": ...}`, so a record's `resource.response` is the policy id, as in the original
//! system's sample record.

mod deliveries;

use axum::Json;
use axum::extract::{Path, State};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use self::deliveries::spawn_test_delivery;
use crate::api::{AccountPath, ApiError, ApiJson, InvalidField, NoSuchAccount, ResourceId};
use crate::api::{changed_id, check_name, error_answers, found, product};
use crate::auth::{AuditFacts, zone_account};
use crate::db::{Db, execute, new_id, now_ms, rfc3339, select};
use crate::state::AppState;

/// A notification policy, as read.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub(crate) struct Policy {
    /// The policy id.
    #[schema(extensions(("x-auditable" = json!(true))))]
    pub(crate) id: String,
    /// The policy's name.
    pub(crate) name: String,
    /// What the policy is for.
    pub(crate) description: Option<String>,
    /// Whether alerts are sent.
    pub(crate) enabled: bool,
    /// The kind of alert, e.g. `clickhouse_alert_fw_ent_anomaly`.
    pub(crate) alert_type: String,
    /// Which events alert.
    pub(crate) filters: Filters,
    /// Where alerts go.
    pub(crate) mechanisms: Mechanisms,
    /// When the policy was created (RFC 3339).
    pub(crate) created: String,
    /// When the policy last changed (RFC 3339).
    pub(crate) modified: String,
}

/// A notification policy, as written by `POST` and `PUT`.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub(crate) struct PolicyInput {
    /// The policy's name (1–256 characters).
    #[schema(min_length = 1, max_length = 256, pattern = r"^[^\u0000-\u001f\u007f-\u009f]*[^\s\u0000-\u001f\u007f-\u009f][^\u0000-\u001f\u007f-\u009f]*$", extensions(("x-auditable" = json!(true))))]
    pub(crate) name: String,
    /// What the policy is for (up to 1024 characters).
    #[schema(max_length = 1024, extensions(("x-auditable" = json!(true))))]
    pub(crate) description: Option<String>,
    /// Whether alerts are sent.
    #[schema(extensions(("x-auditable" = json!(true))))]
    pub(crate) enabled: bool,
    /// The kind of alert: lowercase letters, digits and `_`.
    #[schema(pattern = r"^[a-z0-9_]{1,100}$", extensions(("x-auditable" = json!(true))))]
    pub(crate) alert_type: String,
    /// Which events alert; all when absent.
    pub(crate) filters: Option<Filters>,
    /// Where alerts go. Never recorded.
    pub(crate) mechanisms: Option<Mechanisms>,
}

/// Which events alert.
#[derive(Debug, Default, Serialize, Deserialize, ToSchema)]
pub(crate) struct Filters {
    /// Only events of these services (e.g. `securitylevel`, `ratelimit`, `firewallrules`).
    #[serde(default)]
    #[schema(extensions(("x-auditable" = json!(true))))]
    pub(crate) services: Vec<String>,
    /// Only events of these zones (ids of the account's zones).
    #[serde(default)]
    #[schema(extensions(("x-auditable" = json!(true))))]
    pub(crate) zones: Vec<String>,
}

/// Where alerts go.
#[derive(Debug, Default, Serialize, Deserialize, ToSchema)]
pub(crate) struct Mechanisms {
    /// Email targets.
    #[serde(default)]
    pub(crate) email: Vec<EmailTarget>,
    /// Webhook targets.
    #[serde(default)]
    pub(crate) webhooks: Vec<WebhookTarget>,
}

/// An email target.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub(crate) struct EmailTarget {
    /// The address.
    pub(crate) id: String,
}

/// A webhook target.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub(crate) struct WebhookTarget {
    /// The URL alerts are posted to (`http://` or `https://`); it often carries a secret.
    #[schema(pattern = "^https?://")]
    pub(crate) url: String,
}

#[derive(sqlx::FromRow)]
struct PolicyRow {
    id: String,
    name: String,
    description: Option<String>,
    enabled: bool,
    alert_type: String,
    filters: String,
    mechanisms: String,
    created_ms: i64,
    modified_ms: i64,
}

impl TryFrom<PolicyRow> for Policy {
    type Error = ApiError;

    fn try_from(r: PolicyRow) -> Result<Self, ApiError> {
        let corrupt = |e: serde_json::Error| {
            tracing::error!(target: "demo_app", policy = %r.id, "stored policy is not valid JSON: {e}");
            ApiError::Internal
        };
        Ok(Self {
            filters: serde_json::from_str(&r.filters).map_err(corrupt)?,
            mechanisms: serde_json::from_str(&r.mechanisms).map_err(corrupt)?,
            id: r.id,
            name: r.name,
            description: r.description,
            enabled: r.enabled,
            alert_type: r.alert_type,
            created: rfc3339(r.created_ms),
            modified: rfc3339(r.modified_ms),
        })
    }
}

/// The columns of [`PolicyRow`]; `WHERE` follows.
macro_rules! select_policies {
    ($where:literal) => {
        concat!(
            "SELECT id, name, description, enabled, alert_type, filters, mechanisms, created_ms, modified_ms ",
            "FROM alerting_policies ",
            $where
        )
    };
}

/// The path of one policy: `/accounts/{account_id}/alerting/v3/policies/{policy_id}`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub(crate) struct PolicyPath {
    /// The account id
    pub(crate) account_id: String,
    /// The policy id
    pub(crate) policy_id: String,
}

error_answers! {
    /// `404`: the account has no policy with the path's id.
    NoSuchPolicy => [(404, "No such policy")];
}

/// The input, checked, with `filters` and `mechanisms` as stored (JSON text).
struct Checked {
    input: PolicyInput,
    filters: String,
    mechanisms: String,
}

/// Checks `input` as a policy of `account_id`: its zones must be the account's.
async fn check(db: &Db, account_id: &str, mut input: PolicyInput) -> Result<Checked, ApiError> {
    let bad = |field: &str, why: &str| {
        ApiError::BadRequest(format!("invalid value for '{field}': {why}"))
    };
    check_name("name", &input.name, 256)?;
    if input
        .description
        .as_ref()
        .is_some_and(|d| d.chars().count() > 1024)
    {
        return Err(bad("description", "at most 1024 characters"));
    }
    if input.alert_type.is_empty()
        || input.alert_type.len() > 100
        || !input
            .alert_type
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
    {
        return Err(bad(
            "alert_type",
            "expected lowercase letters, digits and '_', like clickhouse_alert_fw_ent_anomaly",
        ));
    }
    let filters = input.filters.take().unwrap_or_default();
    for zone in &filters.zones {
        if zone_account(db, zone).await?.as_deref() != Some(account_id) {
            // The body is well-formed; the zone it names is not the account's.
            return Err(ApiError::NotFound("zone in 'filters.zones'"));
        }
    }
    let mechanisms = input.mechanisms.take().unwrap_or_default();
    for webhook in &mechanisms.webhooks {
        if !(webhook.url.starts_with("https://") || webhook.url.starts_with("http://")) {
            return Err(bad("mechanisms.webhooks.url", "expected an http(s) URL"));
        }
    }
    let to_json = |e: serde_json::Error| {
        tracing::error!(target: "demo_app", "policy does not serialize: {e}");
        ApiError::Internal
    };
    Ok(Checked {
        filters: serde_json::to_string(&filters).map_err(to_json)?,
        mechanisms: serde_json::to_string(&mechanisms).map_err(to_json)?,
        input,
    })
}

/// Creates a policy: the parameters of [`UPDATE`], in the same order.
const INSERT: &str = "INSERT INTO alerting_policies (name, description, enabled, alert_type, filters, mechanisms, modified_ms, account_id, id, created_ms) \
    VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $7)";

/// Overwrites a policy: its fields ($1–$6), the time ($7), the account ($8) and the policy id
/// ($9).
const UPDATE: &str = "UPDATE alerting_policies SET name = $1, description = $2, enabled = $3, alert_type = $4, \
    filters = $5, mechanisms = $6, modified_ms = $7 WHERE account_id = $8 AND id = $9";

/// Writes `policy` as the policy `policy_id` of `account_id` with [`INSERT`] or [`UPDATE`],
/// and returns the number of rows written.
async fn save(
    db: &Db,
    sql: &'static str,
    account_id: &str,
    policy_id: &str,
    policy: &Checked,
) -> Result<u64, sqlx::Error> {
    execute!(
        db,
        sqlx::query(sql)
            .bind(&policy.input.name)
            .bind(policy.input.description.as_deref())
            .bind(policy.input.enabled)
            .bind(&policy.input.alert_type)
            .bind(&policy.filters)
            .bind(&policy.mechanisms)
            .bind(now_ms())
            .bind(account_id)
            .bind(policy_id)
    )
}

/// List Notification policies
#[utoipa::path(
    get,
    path = "/accounts/{account_id}/alerting/v3/policies",
    params(AccountPath),
    responses(
        (status = 200, description = "The account's policies", body = Vec<Policy>),
        NoSuchAccount,
    ),
)]
pub(crate) async fn list_policies(
    State(state): State<AppState>,
    Path(AccountPath { account_id }): Path<AccountPath>,
) -> Result<Json<Vec<Policy>>, ApiError> {
    const SQL: &str = select_policies!("WHERE account_id = $1 ORDER BY created_ms, id");
    let rows: Vec<PolicyRow> = select(SQL, &[&account_id]).all(&state.db).await?;
    rows.into_iter()
        .map(Policy::try_from)
        .collect::<Result<_, _>>()
        .map(Json)
}

/// Create a Notification policy
#[utoipa::path(
    post,
    path = "/accounts/{account_id}/alerting/v3/policies",
    params(AccountPath),
    request_body = PolicyInput,
    responses(
        (status = 200, description = "The new policy's id", body = ResourceId),
        InvalidField,
        NoSuchAccount,
    ),
)]
pub(crate) async fn create_policy(
    State(state): State<AppState>,
    facts: AuditFacts,
    Path(AccountPath { account_id }): Path<AccountPath>,
    ApiJson(input): ApiJson<PolicyInput>,
) -> Result<Json<ResourceId>, ApiError> {
    let policy = check(&state.db, &account_id, input).await?;
    let id = new_id();
    save(&state.db, INSERT, &account_id, &id, &policy).await?;
    facts.resource_id(&id);
    Ok(Json(ResourceId { id }))
}

/// Get a Notification policy
#[utoipa::path(
    get,
    path = "/accounts/{account_id}/alerting/v3/policies/{policy_id}",
    params(PolicyPath),
    responses(
        (status = 200, description = "The policy", body = Policy),
        NoSuchPolicy,
    ),
)]
pub(crate) async fn get_policy(
    State(state): State<AppState>,
    Path(path): Path<PolicyPath>,
) -> Result<Json<Policy>, ApiError> {
    const SQL: &str = select_policies!("WHERE account_id = $1 AND id = $2");
    let row: Option<PolicyRow> = select(SQL, &[&path.account_id, &path.policy_id])
        .optional(&state.db)
        .await?;
    found(row.map(Policy::try_from).transpose()?, "policy")
}

/// Update a Notification policy
#[utoipa::path(
    put,
    path = "/accounts/{account_id}/alerting/v3/policies/{policy_id}",
    params(PolicyPath),
    request_body = PolicyInput,
    responses(
        (status = 200, description = "The policy's id", body = ResourceId),
        InvalidField,
        NoSuchPolicy,
    ),
)]
pub(crate) async fn update_policy(
    State(state): State<AppState>,
    facts: AuditFacts,
    Path(path): Path<PolicyPath>,
    ApiJson(input): ApiJson<PolicyInput>,
) -> Result<Json<ResourceId>, ApiError> {
    let policy = check(&state.db, &path.account_id, input).await?;
    let was_enabled = load(&state.db, &path.account_id, &path.policy_id)
        .await?
        .map(|p| p.enabled);
    let rows = save(
        &state.db,
        UPDATE,
        &path.account_id,
        &path.policy_id,
        &policy,
    )
    .await?;
    // Turned on: a test alert goes to its webhooks, in a task of its own that the audit log
    // ties to this request.
    if rows == 1
        && policy.input.enabled
        && was_enabled == Some(false)
        && let Some(updated) = load(&state.db, &path.account_id, &path.policy_id).await?
        && !updated.mechanisms.webhooks.is_empty()
    {
        spawn_test_delivery(&state, facts.context(), path.account_id.clone(), updated);
    }
    changed_id(rows, "policy", path.policy_id)
}

/// The policy `policy_id` of `account_id`, if any.
async fn load(db: &Db, account_id: &str, policy_id: &str) -> Result<Option<Policy>, ApiError> {
    const SQL: &str = select_policies!("WHERE account_id = $1 AND id = $2");
    let row: Option<PolicyRow> = select(SQL, &[account_id, policy_id]).optional(db).await?;
    row.map(Policy::try_from).transpose()
}

/// Delete a Notification policy
#[utoipa::path(
    delete,
    path = "/accounts/{account_id}/alerting/v3/policies/{policy_id}",
    params(PolicyPath),
    responses(
        (status = 200, description = "The deleted policy's id", body = ResourceId),
        NoSuchPolicy,
    ),
)]
pub(crate) async fn delete_policy(
    State(state): State<AppState>,
    Path(path): Path<PolicyPath>,
) -> Result<Json<ResourceId>, ApiError> {
    let rows = execute!(
        &state.db,
        sqlx::query("DELETE FROM alerting_policies WHERE account_id = $1 AND id = $2")
            .bind(&path.account_id)
            .bind(&path.policy_id)
    )?;
    changed_id(rows, "policy", path.policy_id)
}

/// The routes of these operations, tagged `alerting`, in the `Notifications` product category.
pub(crate) fn routes() -> OpenApiRouter<AppState> {
    let router = OpenApiRouter::new()
        .routes(routes!(list_policies, create_policy))
        .routes(routes!(get_policy, update_policy, delete_policy));
    product(
        "alerting",
        &[("x-audit-product-category", "Notifications")],
        router,
    )
}
