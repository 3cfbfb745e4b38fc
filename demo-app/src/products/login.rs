//! Dashboard sign-in: `POST /login` and `POST /logout`.
//!
//! A login checks the email and password (argon2id) and sets the `demo_session` cookie; later
//! requests with it act as the user, `actor.context: dash`. Nothing of the request body is
//! auditable. A failed login is recorded (`action.type: login`, `result: failure`) in the log
//! of the account the email belongs to, so the account's owners see attempts on their users;
//! the actor stays unknown, as authentication failed.

use std::sync::OnceLock;

use audit_layer::Identity;
use audit_layer::record::ActorContext;
use axum::Json;
use axum::extract::State;
use axum::http::header::SET_COOKIE;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::api::{ApiError, ApiJson, ErrorBody, product};
use crate::auth::{AuditFacts, SESSION_COOKIE, SESSION_TTL_MS, accounts_of, session_cookie};
use crate::db::{execute, now_ms, rfc3339, select};
use crate::secrets::{hash_password, new_secret, sha256_hex, verify_password};
use crate::state::AppState;

/// Credentials.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub(crate) struct LoginRequest {
    /// The user's email.
    pub(crate) email: String,
    /// The user's password.
    #[schema(format = Password, write_only)]
    pub(crate) password: String,
}

/// A successful login. The session itself is in the `Set-Cookie` header only.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub(crate) struct LoginResponse {
    /// Who logged in.
    pub(crate) user: LoginUser,
    /// The accounts the session may act on.
    pub(crate) accounts: Vec<String>,
    /// When the session ends (RFC 3339).
    pub(crate) expires_on: String,
}

/// The user who logged in.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub(crate) struct LoginUser {
    /// The user id.
    #[schema(extensions(("x-auditable" = json!(true))))]
    pub(crate) id: String,
    /// The user's email.
    pub(crate) email: String,
}

#[derive(sqlx::FromRow)]
struct UserRow {
    id: String,
    email: String,
    password_hash: Option<String>,
}

/// A hash to verify against when the email is unknown, so that a login takes as long whether
/// or not the email exists.
fn dummy_hash() -> &'static str {
    static HASH: OnceLock<String> = OnceLock::new();
    HASH.get_or_init(|| hash_password("no user has this password"))
}

/// `user` when `password` is theirs, else [`ApiError::InvalidCredentials`] (the one answer
/// for a wrong email or password). Without a user the password is checked against
/// [`dummy_hash`] all the same.
async fn check_password(user: Option<UserRow>, password: String) -> Result<UserRow, ApiError> {
    let hash = user
        .as_ref()
        .and_then(|u| u.password_hash.clone())
        .unwrap_or_else(|| dummy_hash().to_owned());
    // argon2 takes tens of milliseconds of CPU: off the async workers.
    let matches = tokio::task::spawn_blocking(move || verify_password(&password, &hash))
        .await
        .unwrap_or(false);
    match user {
        Some(user) if matches && user.password_hash.is_some() => Ok(user),
        _ => Err(ApiError::InvalidCredentials),
    }
}

/// What the record of a login or logout says about the user: the actor, a dashboard session,
/// and the resource, the user.
fn dash_identity(user: &UserRow) -> Identity {
    Identity::user(&user.id)
        .email(&user.email)
        .context(ActorContext::Dash)
        .resource_id(&user.id)
}

/// A `Set-Cookie` header setting the session cookie to `value` for `max_age_s` seconds; `0`
/// clears it.
fn set_session_cookie(value: &str, max_age_s: i64) -> Result<HeaderMap, ApiError> {
    let cookie =
        format!("{SESSION_COOKIE}={value}; HttpOnly; SameSite=Lax; Path=/; Max-Age={max_age_s}");
    let mut headers = HeaderMap::new();
    headers.insert(
        SET_COOKIE,
        HeaderValue::from_str(&cookie).map_err(|_| ApiError::Internal)?,
    );
    Ok(headers)
}

/// Log in
///
/// Checks the email and password and starts a dashboard session (the `demo_session` cookie,
/// HttpOnly, SameSite=Lax, 8 hours).
#[utoipa::path(
    post,
    path = "/login",
    request_body = LoginRequest,
    responses(
        (status = 200, description = "Logged in; the session cookie is set", body = LoginResponse,
            headers(("set-cookie" = String, description = "demo_session=...; HttpOnly; SameSite=Lax"))),
        (status = 400, description = "Malformed body", body = ErrorBody),
        (status = 401, description = "Wrong email or password", body = ErrorBody),
    ),
    extensions(("x-audit-action" = json!("login"))),
)]
pub(crate) async fn login(
    State(state): State<AppState>,
    facts: AuditFacts,
    ApiJson(input): ApiJson<LoginRequest>,
) -> Result<Response, ApiError> {
    let email = input.email.trim().to_ascii_lowercase();
    const SQL: &str = "SELECT id, email, password_hash FROM users WHERE email = $1";
    let user: Option<UserRow> = select(SQL, &[&email]).optional(&state.db).await?;
    if let Some(user) = &user
        && let Some(home) = accounts_of(&state.db, &user.id).await?.first()
    {
        facts.identify(Identity::anonymous().account(home));
    }
    let user = check_password(user, input.password).await?;

    let session = new_secret();
    let now = now_ms();
    let expires = now + SESSION_TTL_MS;
    execute!(
        &state.db,
        sqlx::query(
            "INSERT INTO sessions (id_hash, user_id, created_ms, expires_ms) VALUES ($1, $2, $3, $4)",
        )
        .bind(sha256_hex(&session))
        .bind(&user.id)
        .bind(now)
        .bind(expires)
    )?;
    let accounts = accounts_of(&state.db, &user.id).await?;
    facts.identify(dash_identity(&user));
    let headers = set_session_cookie(&session, SESSION_TTL_MS / 1000)?;
    let body = LoginResponse {
        user: LoginUser {
            id: user.id,
            email: user.email,
        },
        accounts,
        expires_on: rfc3339(expires),
    };
    Ok((headers, Json(body)).into_response())
}

/// Log out
///
/// Ends the dashboard session of the `demo_session` cookie, if any, and clears the cookie.
#[utoipa::path(
    post,
    path = "/logout",
    responses((status = 204, description = "Logged out; the session cookie is cleared")),
    extensions(("x-audit-action" = json!("logout"))),
)]
pub(crate) async fn logout(
    State(state): State<AppState>,
    facts: AuditFacts,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    if let Some(session) = session_cookie(&headers) {
        let hash = sha256_hex(&session);
        const SQL: &str = "SELECT u.id, u.email, u.password_hash FROM sessions s \
            JOIN users u ON u.id = s.user_id WHERE s.id_hash = $1";
        let user: Option<UserRow> = select(SQL, &[&hash]).optional(&state.db).await?;
        if let Some(user) = user {
            let mut identity = dash_identity(&user);
            if let Some(home) = accounts_of(&state.db, &user.id).await?.first() {
                identity = identity.account(home);
            }
            facts.identify(identity);
        }
        execute!(
            &state.db,
            sqlx::query("DELETE FROM sessions WHERE id_hash = $1 OR expires_ms <= $2")
                .bind(&hash)
                .bind(now_ms())
        )?;
    }
    let headers = set_session_cookie("", 0)?;
    Ok((StatusCode::NO_CONTENT, headers).into_response())
}

/// The routes of these operations, tagged `login`: public (no credentials), and recorded as
/// the user's (`x-audit-scope`) actions on their sessions, in the `auth` product (product
/// category `Access`).
pub(crate) fn routes() -> OpenApiRouter<AppState> {
    let router = OpenApiRouter::new()
        .routes(routes!(login))
        .routes(routes!(logout));
    let marks = [
        ("x-audit-product", "auth"),
        ("x-audit-scope", "user"),
        ("x-audit-resource-type", "sessions"),
        ("x-audit-product-category", "Access"),
    ];
    product("login", &marks, router)
}
