//! Accounts: `GET /accounts`, `GET /accounts/{account_id}`, `PATCH /accounts/{account_id}`.
//!
//! Auditable: the account's id, name and security settings.

use axum::Extension;
use axum::Json;
use axum::extract::{Path, State};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::api::{AccountPath, ApiError, ApiJson, ErrorBody, InvalidField, NoSuchAccount};
use crate::api::{changed, check_name, found, product};
use crate::auth::Principal;
use crate::db::{Db, execute, rfc3339, select};
use crate::state::AppState;

/// An account.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub(crate) struct Account {
    /// The account id.
    #[schema(extensions(("x-auditable" = json!(true))))]
    pub(crate) id: String,
    /// The account's display name.
    #[schema(extensions(("x-auditable" = json!(true))))]
    pub(crate) name: String,
    /// Security settings.
    pub(crate) settings: AccountSettings,
    /// When the account was created (RFC 3339).
    #[schema(extensions(("x-auditable" = json!(true))))]
    pub(crate) created_on: String,
}

/// An account's security settings.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub(crate) struct AccountSettings {
    /// Whether members must use two-factor authentication.
    #[schema(extensions(("x-auditable" = json!(true))))]
    pub(crate) enforce_twofactor: bool,
}

/// The fields of an account that may change; absent fields stay as they are.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub(crate) struct AccountUpdate {
    /// A new display name (1–100 characters).
    #[schema(min_length = 1, max_length = 100, pattern = r"^[^\u0000-\u001f\u007f-\u009f]*[^\s\u0000-\u001f\u007f-\u009f][^\u0000-\u001f\u007f-\u009f]*$", extensions(("x-auditable" = json!(true))))]
    pub(crate) name: Option<String>,
    /// New security settings.
    pub(crate) settings: Option<AccountSettingsUpdate>,
}

/// Security settings to change.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub(crate) struct AccountSettingsUpdate {
    /// Whether members must use two-factor authentication.
    #[schema(extensions(("x-auditable" = json!(true))))]
    pub(crate) enforce_twofactor: Option<bool>,
}

#[derive(sqlx::FromRow)]
struct AccountRow {
    id: String,
    name: String,
    enforce_twofactor: bool,
    created_ms: i64,
}

impl From<AccountRow> for Account {
    fn from(r: AccountRow) -> Self {
        Self {
            id: r.id,
            name: r.name,
            settings: AccountSettings {
                enforce_twofactor: r.enforce_twofactor,
            },
            created_on: rfc3339(r.created_ms),
        }
    }
}

async fn load(db: &Db, account_id: &str) -> Result<Option<Account>, ApiError> {
    const SQL: &str = "SELECT id, name, enforce_twofactor, created_ms FROM accounts WHERE id = $1";
    let row: Option<AccountRow> = select(SQL, &[account_id]).optional(db).await?;
    Ok(row.map(Account::from))
}

/// The name of an account, for the audit pipeline's directory.
pub(crate) async fn account_name(db: &Db, account_id: &str) -> Result<Option<String>, sqlx::Error> {
    select("SELECT name FROM accounts WHERE id = $1", &[account_id])
        .text(db)
        .await
}

/// List Accounts
#[utoipa::path(
    get,
    path = "/accounts",
    responses(
        (status = 200, description = "The accounts the caller may act on", body = Vec<Account>),
        (status = 401, description = "Not authenticated", body = ErrorBody),
    ),
)]
pub(crate) async fn list_accounts(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
) -> Result<Json<Vec<Account>>, ApiError> {
    let mut accounts = Vec::with_capacity(principal.accounts.len());
    for id in &principal.accounts {
        if let Some(account) = load(&state.db, id).await? {
            accounts.push(account);
        }
    }
    Ok(Json(accounts))
}

/// Account Details
#[utoipa::path(
    get,
    path = "/accounts/{account_id}",
    params(AccountPath),
    responses(
        (status = 200, description = "The account", body = Account),
        NoSuchAccount,
    ),
)]
pub(crate) async fn get_account(
    State(state): State<AppState>,
    Path(AccountPath { account_id }): Path<AccountPath>,
) -> Result<Json<Account>, ApiError> {
    found(load(&state.db, &account_id).await?, "account")
}

/// Update Account
#[utoipa::path(
    patch,
    path = "/accounts/{account_id}",
    params(AccountPath),
    request_body = AccountUpdate,
    responses(
        (status = 200, description = "The updated account", body = Account),
        InvalidField,
        NoSuchAccount,
    ),
)]
pub(crate) async fn update_account(
    State(state): State<AppState>,
    Path(AccountPath { account_id }): Path<AccountPath>,
    ApiJson(update): ApiJson<AccountUpdate>,
) -> Result<Json<Account>, ApiError> {
    if let Some(name) = &update.name {
        check_name("name", name, 100)?;
    }
    let twofactor = update.settings.and_then(|s| s.enforce_twofactor);
    let rows = execute!(
        &state.db,
        sqlx::query(
            "UPDATE accounts SET name = COALESCE($1, name), \
             enforce_twofactor = COALESCE($2, enforce_twofactor) WHERE id = $3",
        )
        .bind(update.name.as_deref())
        .bind(twofactor)
        .bind(&account_id)
    )?;
    changed(rows, "account")?;
    found(load(&state.db, &account_id).await?, "account")
}

/// The routes of these operations, tagged `accounts`, in the `Account` product category.
pub(crate) fn routes() -> OpenApiRouter<AppState> {
    let router = OpenApiRouter::new()
        .routes(routes!(list_accounts))
        .routes(routes!(get_account, update_account));
    product(
        "accounts",
        &[("x-audit-product-category", "Account")],
        router,
    )
}
