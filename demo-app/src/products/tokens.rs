//! API tokens: `GET/POST /accounts/{account_id}/tokens`,
//! `DELETE /accounts/{account_id}/tokens/{token_id}`.
//!
//! A token acts as the user who created it, on this account only. Its value is answered once,
//! by the create call, and stored only as a SHA-256 hash; it is never auditable. The id and
//! the name are, so that a record of the token's later use (`actor.token`) can be traced back
//! to the record of its creation.

use axum::extract::{Path, State};
use axum::{Extension, Json};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::api::{AccountPath, ApiError, ApiJson, ErrorBody, InvalidName, NoSuchAccount};
use crate::api::{ResourceId, changed_id, check_name, product};
use crate::auth::{AuditFacts, Principal};
use crate::db::{execute, new_id, now_ms, rfc3339, select};
use crate::secrets::{new_secret, sha256_hex};
use crate::state::AppState;

/// An API token, without its value.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub(crate) struct Token {
    /// The token id.
    #[schema(extensions(("x-auditable" = json!(true))))]
    pub(crate) id: String,
    /// The token's display name.
    #[schema(extensions(("x-auditable" = json!(true))))]
    pub(crate) name: String,
    /// `active` or `revoked`.
    #[schema(extensions(("x-auditable" = json!(true))))]
    pub(crate) status: String,
    /// The user the token acts as.
    #[schema(extensions(("x-auditable" = json!(true))))]
    pub(crate) user_id: String,
    /// When the token was created (RFC 3339).
    pub(crate) created_on: String,
    /// When the token was revoked (RFC 3339).
    pub(crate) revoked_on: Option<String>,
}

/// A token to create.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub(crate) struct TokenCreate {
    /// A display name (1–100 characters), e.g. `CI deploys`.
    #[schema(min_length = 1, max_length = 100, pattern = r"^[^\u0000-\u001f\u007f-\u009f]*[^\s\u0000-\u001f\u007f-\u009f][^\u0000-\u001f\u007f-\u009f]*$", extensions(("x-auditable" = json!(true))))]
    pub(crate) name: String,
    /// When the token stops working (RFC 3339, in the future: a time past is a `409`); never
    /// when absent. A background sweep revokes expired tokens.
    #[schema(
        format = DateTime,
        pattern = r"^[0-9]{4}-((0[1-9]|1[0-2])-(0[1-9]|1[0-9]|2[0-8])|(0[13-9]|1[0-2])-(29|30)|(0[13578]|1[02])-31)T([01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](\.[0-9]{1,9})?(Z|[+-]([01][0-9]|2[0-3]):[0-5][0-9])$",
        extensions(("x-auditable" = json!(true)))
    )]
    pub(crate) expires_on: Option<String>,
}

/// A created token, with its value: the only time the value is shown.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub(crate) struct TokenCreated {
    /// The token id.
    #[schema(extensions(("x-auditable" = json!(true))))]
    pub(crate) id: String,
    /// The token's display name.
    #[schema(extensions(("x-auditable" = json!(true))))]
    pub(crate) name: String,
    /// The secret to send as `Authorization: Bearer <value>`. Store it now: it cannot be read
    /// again. Never recorded.
    pub(crate) value: String,
    /// When the token was created (RFC 3339).
    pub(crate) created_on: String,
}

/// The path of one token: `/accounts/{account_id}/tokens/{token_id}`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub(crate) struct TokenPath {
    /// The account id
    pub(crate) account_id: String,
    /// The token id
    pub(crate) token_id: String,
}

#[derive(sqlx::FromRow)]
struct TokenRow {
    id: String,
    name: String,
    user_id: String,
    created_ms: i64,
    revoked_ms: Option<i64>,
}

/// List Tokens
#[utoipa::path(
    get,
    path = "/accounts/{account_id}/tokens",
    params(AccountPath),
    responses(
        (status = 200, description = "The account's tokens, without values", body = Vec<Token>),
        NoSuchAccount,
    ),
)]
pub(crate) async fn list_tokens(
    State(state): State<AppState>,
    Path(AccountPath { account_id }): Path<AccountPath>,
) -> Result<Json<Vec<Token>>, ApiError> {
    const SQL: &str = "SELECT id, name, user_id, created_ms, revoked_ms FROM api_tokens \
        WHERE account_id = $1 ORDER BY created_ms, id";
    let rows: Vec<TokenRow> = select(SQL, &[&account_id]).all(&state.db).await?;
    Ok(Json(
        rows.into_iter()
            .map(|r| Token {
                id: r.id,
                name: r.name,
                status: if r.revoked_ms.is_some() {
                    "revoked"
                } else {
                    "active"
                }
                .into(),
                user_id: r.user_id,
                created_on: rfc3339(r.created_ms),
                revoked_on: r.revoked_ms.map(rfc3339),
            })
            .collect(),
    ))
}

/// Create Token
#[utoipa::path(
    post,
    path = "/accounts/{account_id}/tokens",
    params(AccountPath),
    request_body = TokenCreate,
    responses(
        (status = 200, description = "The new token, with its value (shown once)", body = TokenCreated),
        InvalidName,
        NoSuchAccount,
        (status = 409, description = "`expires_on` is not in the future", body = ErrorBody),
    ),
)]
pub(crate) async fn create_token(
    State(state): State<AppState>,
    facts: AuditFacts,
    Extension(principal): Extension<Principal>,
    Path(AccountPath { account_id }): Path<AccountPath>,
    ApiJson(input): ApiJson<TokenCreate>,
) -> Result<Json<TokenCreated>, ApiError> {
    check_name("name", &input.name, 100)?;
    let expires_ms = match input.expires_on.as_deref() {
        None => None,
        Some(text) => Some(expiry(text)?),
    };
    let id = new_id();
    let value = new_secret();
    let now = now_ms();
    execute!(
        &state.db,
        sqlx::query(
            "INSERT INTO api_tokens (id, account_id, user_id, name, token_hash, created_ms, revoked_ms, expires_ms) \
             VALUES ($1, $2, $3, $4, $5, $6, NULL, $7)",
        )
        .bind(&id)
        .bind(&account_id)
        .bind(&principal.user_id)
        .bind(&input.name)
        .bind(sha256_hex(&value))
        .bind(now)
        .bind(expires_ms)
    )?;
    facts.resource_id(&id);
    Ok(Json(TokenCreated {
        id,
        name: input.name,
        value,
        created_on: rfc3339(now),
    }))
}

/// `expires_on`, checked: an RFC 3339 time in the future, as milliseconds since the epoch.
fn expiry(text: &str) -> Result<i64, ApiError> {
    let bad = |why: &str| ApiError::BadRequest(format!("invalid value for 'expires_on': {why}"));
    let time: audit_layer::record::Timestamp = text
        .parse()
        .map_err(|_| bad("expected an RFC 3339 time, e.g. 2030-01-01T00:00:00Z"))?;
    let ms = time.unix_millis();
    // A well-formed time that the clock has passed: the request is valid, the present
    // refuses it.
    if ms <= now_ms() {
        return Err(ApiError::Conflict(
            "invalid value for 'expires_on': expected a time in the future".into(),
        ));
    }
    Ok(ms)
}

/// Revoke Token
#[utoipa::path(
    delete,
    path = "/accounts/{account_id}/tokens/{token_id}",
    params(TokenPath),
    responses(
        (status = 200, description = "The revoked token's id", body = ResourceId),
        (status = 404, description = "No such active token in this account", body = ErrorBody),
    ),
)]
pub(crate) async fn revoke_token(
    State(state): State<AppState>,
    Path(TokenPath {
        account_id,
        token_id,
    }): Path<TokenPath>,
) -> Result<Json<ResourceId>, ApiError> {
    let rows = execute!(
        &state.db,
        sqlx::query(
            "UPDATE api_tokens SET revoked_ms = $1 WHERE id = $2 AND account_id = $3 AND revoked_ms IS NULL",
        )
        .bind(now_ms())
        .bind(&token_id)
        .bind(&account_id)
    )?;
    changed_id(rows, "token", token_id)
}

/// The routes of these operations, tagged `tokens`, in the `Access` product category.
pub(crate) fn routes() -> OpenApiRouter<AppState> {
    let router = OpenApiRouter::new()
        .routes(routes!(list_tokens, create_token))
        .routes(routes!(revoke_token));
    product("tokens", &[("x-audit-product-category", "Access")], router)
}
