//! Authentication and access: who the caller is (an API token or a dashboard session), which
//! accounts and zones they may touch, and telling the audit layer who acted.
//!
//! [`require_auth`] runs inside the `AuditLayer`, on every route but the public ones
//! (`/login`, `/logout`, `/healthz`, `/openapi.json`):
//!
//! - `Authorization: Bearer <token>` is an API token (`actor.context: api_token`); it acts on
//!   the one account it was created in.
//! - the `demo_session` cookie set by `POST /login` is a dashboard session
//!   (`actor.context: dash`); it acts on every account its user is a member of, and on the
//!   user's own invitations (`/user/invites`), which no API token may answer.
//! - anything else is answered `401` — still audited, with the actor unknown and its IP known.
//!
//! Access is checked here, before any handler runs, from the path's `{account_id}` and
//! `{zone_id}`. An account or zone the caller may not touch is answered `404 Not Found`, for
//! reads and writes alike and with the same body as one that does not exist: a caller learns
//! nothing about other accounts, not even that an id is taken. The record of such a request is
//! filed in the log of the account the path names, or of the zone's account: its owners see
//! the attempt, and the caller's own log never gets another account's account or zone name
//! (which the audit pipeline fills in). A zone id that does not exist files the record in the
//! caller's home account.
//!
//! Secrets are stored hashed only (see [`crate::secrets`]): API tokens and session ids are
//! looked up by their SHA-256.

use audit_layer::AuditContext;
use audit_layer::record::ActorContext;
use audit_layer::{AuditHandle, Identity};
use axum::extract::{FromRequestParts, RawPathParams, Request, State};
use axum::http::HeaderMap;
use axum::http::header::{AUTHORIZATION, COOKIE};
use axum::http::request::Parts;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::api::ApiError;
use crate::db::{Db, now_ms, on_db, select};
use crate::secrets::sha256_hex;
use crate::state::AppState;

/// The name of the dashboard session cookie.
pub(crate) const SESSION_COOKIE: &str = "demo_session";

/// How long a dashboard session lasts: 8 hours.
pub(crate) const SESSION_TTL_MS: i64 = 8 * 60 * 60 * 1000;

/// An authenticated caller, in the request's extensions for the handlers.
#[derive(Clone, Debug)]
pub(crate) struct Principal {
    /// The user's id.
    pub(crate) user_id: String,
    /// The user's email.
    pub(crate) email: String,
    /// How the caller authenticated: `ApiToken` or `Dash`.
    pub(crate) context: ActorContext,
    /// The API token used, by id and name.
    pub(crate) token: Option<(String, String)>,
    /// The accounts the caller may act on; the first is their home account.
    pub(crate) accounts: Vec<String>,
}

impl Principal {
    /// Whether the caller may act on `account_id`.
    pub(crate) fn can_access(&self, account_id: &str) -> bool {
        self.accounts.iter().any(|a| a == account_id)
    }

    /// The account the caller acts for when the path names none.
    pub(crate) fn home_account(&self) -> Option<&str> {
        self.accounts.first().map(String::as_str)
    }

    /// The account an operation whose path names none acts in: `requested`, else the caller's
    /// home account. `404 account not found` when the caller may not act on it.
    pub(crate) fn account_for(&self, requested: Option<String>) -> Result<String, ApiError> {
        let account_id = match requested {
            Some(account_id) => account_id,
            None => self.home_account().unwrap_or_default().to_owned(),
        };
        if !self.can_access(&account_id) {
            return Err(ApiError::NotFound("account"));
        }
        Ok(account_id)
    }

    /// What the audit record says about this caller.
    pub(crate) fn identity(&self) -> Identity {
        let mut identity = Identity::user(&self.user_id)
            .email(&self.email)
            .context(self.context);
        if let Some((id, name)) = &self.token {
            identity = identity.token(id, name);
        }
        if let Some(account) = self.home_account() {
            identity = identity.account(account);
        }
        identity
    }
}

/// The request's [`AuditHandle`], for handlers that tell the record what the path cannot (the
/// id of a created resource, the account a login belongs to).
///
/// Absent only when the app runs without the audit layer; then telling is a no-op.
#[derive(Clone, Debug, Default)]
pub(crate) struct AuditFacts(Option<AuditHandle>);

impl AuditFacts {
    /// Adds to what the record says about the actor and the resource.
    pub(crate) fn identify(&self, identity: Identity) {
        if let Some(handle) = &self.0 {
            handle.identify(identity);
        }
    }

    /// Sets the record's `resource.id`, for a resource the path does not name (a created one).
    pub(crate) fn resource_id(&self, id: &str) {
        self.identify(Identity::anonymous().resource_id(id));
    }

    /// Sets the record's `change`: the resource's value before and after the request (either
    /// absent for a creation or a deletion), each reduced to its type's auditable fields.
    pub(crate) fn change<T: serde::Serialize + utoipa::ToSchema + 'static>(
        &self,
        before: Option<&T>,
        after: Option<&T>,
    ) {
        if let Some(handle) = &self.0 {
            if let Some(before) = before {
                handle.before(before);
            }
            if let Some(after) = after {
                handle.after(after);
            }
        }
    }

    /// The request's audit context (who acted, the request's ray id), for work it hands to
    /// another task: events emitted there are tied to this request.
    pub(crate) fn context(&self) -> AuditContext {
        self.0
            .as_ref()
            .map(AuditHandle::context)
            .unwrap_or_default()
    }
}

impl<S: Send + Sync> FromRequestParts<S> for AuditFacts {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        Ok(Self(parts.extensions.get::<AuditHandle>().cloned()))
    }
}

/// The middleware that authenticates every protected request and checks its access to the
/// path's account and zone. See the [module docs](self).
pub(crate) async fn require_auth(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Response {
    let (mut parts, body) = request.into_parts();
    let facts = AuditFacts(parts.extensions.get::<AuditHandle>().cloned());
    let principal = match authenticate(&state.db, &parts.headers).await {
        Ok(Some(principal)) => principal,
        Ok(None) => return ApiError::Unauthenticated.into_response(),
        Err(e) => return e.into_response(),
    };
    facts.identify(principal.identity());

    // A path whose parameters cannot be decoded names no resource anyone may touch: refuse it
    // here rather than skip the access checks below.
    let params = match RawPathParams::from_request_parts(&mut parts, &state).await {
        Ok(params) => Some(params),
        Err(_) => return ApiError::NotFound("resource").into_response(),
    };
    let param = |name: &str| {
        params.as_ref().and_then(|p| {
            p.iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| v.to_owned())
        })
    };
    if let Some(account_id) = param("account_id")
        && !principal.can_access(&account_id)
    {
        return ApiError::NotFound("account").into_response();
    }
    if let Some(zone_id) = param("zone_id") {
        match zone_account(&state.db, &zone_id).await {
            Ok(Some(account)) => {
                // Filed with the zone's owner, also when the caller may not touch the zone:
                // in the caller's own log the record would carry the zone's name.
                let allowed = principal.can_access(&account);
                facts.identify(Identity::anonymous().account(account));
                if !allowed {
                    return ApiError::NotFound("zone").into_response();
                }
            }
            Ok(None) => return ApiError::NotFound("zone").into_response(),
            Err(e) => return ApiError::from(e).into_response(),
        }
    }
    parts.extensions.insert(principal);
    next.run(Request::from_parts(parts, body)).await
}

/// The account that owns `zone_id`, if the zone exists.
pub(crate) async fn zone_account(db: &Db, zone_id: &str) -> Result<Option<String>, sqlx::Error> {
    select("SELECT account_id FROM zones WHERE id = $1", &[zone_id])
        .text(db)
        .await
}

/// Who sent `headers`: the API token in `Authorization`, else the session cookie. `None`
/// when neither is present and valid.
///
/// # Errors
///
/// When the database fails.
pub(crate) async fn authenticate(
    db: &Db,
    headers: &HeaderMap,
) -> Result<Option<Principal>, ApiError> {
    if let Some(value) = headers.get(AUTHORIZATION) {
        let token = value
            .to_str()
            .ok()
            .and_then(|v| {
                v.strip_prefix("Bearer ")
                    .or_else(|| v.strip_prefix("bearer "))
            })
            .map(str::trim);
        return match token {
            Some(token) if !token.is_empty() => by_token(db, token).await,
            _ => Ok(None),
        };
    }
    match session_cookie(headers) {
        Some(session) => by_session(db, &session).await,
        None => Ok(None),
    }
}

#[derive(sqlx::FromRow)]
struct TokenRow {
    token_id: String,
    token_name: String,
    account_id: String,
    user_id: String,
    email: String,
}

async fn by_token(db: &Db, token: &str) -> Result<Option<Principal>, ApiError> {
    const SQL: &str = "SELECT t.id AS token_id, t.name AS token_name, t.account_id, u.id AS user_id, u.email \
        FROM api_tokens t JOIN users u ON u.id = t.user_id \
        JOIN members m ON m.account_id = t.account_id AND m.user_id = t.user_id \
        WHERE t.token_hash = $1 AND t.revoked_ms IS NULL";
    let hash = sha256_hex(token);
    let row: Option<TokenRow> = select(SQL, &[&hash]).optional(db).await?;
    Ok(row.map(|r| Principal {
        user_id: r.user_id,
        email: r.email,
        context: ActorContext::ApiToken,
        token: Some((r.token_id, r.token_name)),
        accounts: vec![r.account_id],
    }))
}

#[derive(sqlx::FromRow)]
struct SessionRow {
    user_id: String,
    email: String,
}

async fn by_session(db: &Db, session: &str) -> Result<Option<Principal>, ApiError> {
    const SQL: &str = "SELECT u.id AS user_id, u.email FROM sessions s JOIN users u ON u.id = s.user_id \
        WHERE s.id_hash = $1 AND s.expires_ms > $2";
    let hash = sha256_hex(session);
    let row: Option<SessionRow> =
        on_db!(db, p => sqlx::query_as(SQL).bind(&hash).bind(now_ms()).fetch_optional(p).await)?;
    let Some(row) = row else { return Ok(None) };
    let accounts = accounts_of(db, &row.user_id).await?;
    Ok(Some(Principal {
        user_id: row.user_id,
        email: row.email,
        context: ActorContext::Dash,
        token: None,
        accounts,
    }))
}

/// The accounts `user_id` is a member of, oldest membership first. A pending invitation is
/// not a membership: it grants nothing until the user accepts it.
pub(crate) async fn accounts_of(db: &Db, user_id: &str) -> Result<Vec<String>, sqlx::Error> {
    on_db!(db, p => sqlx::query_scalar(
        "SELECT account_id FROM members WHERE user_id = $1 ORDER BY created_ms, account_id",
    )
    .bind(user_id)
    .fetch_all(p)
    .await)
}

/// The value of the session cookie, if the request carries one.
pub(crate) fn session_cookie(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == SESSION_COOKIE)
        .map(|(_, value)| value.trim_matches('"').to_owned())
        .filter(|v| !v.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    #[test]
    fn the_session_cookie_is_found_among_others() {
        let mut headers = HeaderMap::new();
        headers.append(
            COOKIE,
            HeaderValue::from_static("theme=dark; demo_session=demo_abc"),
        );
        assert_eq!(session_cookie(&headers).as_deref(), Some("demo_abc"));
        headers.clear();
        headers.append(COOKIE, HeaderValue::from_static("demo_session="));
        assert_eq!(session_cookie(&headers), None);
    }
}
