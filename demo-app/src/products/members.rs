//! Account members: `GET/POST /accounts/{account_id}/members`,
//! `DELETE /accounts/{account_id}/members/{member_id}`.
//!
//! Adding a member sends an invitation: the user is listed as `pending` and may act on nothing
//! of the account until they accept it themselves (see [`super::invites`]). An administrator
//! withdraws a pending invitation as they remove a member.
//!
//! Auditable: who was invited or removed (user id and email) and with which role: who may act
//! on an account is exactly what an audit has to answer.

use axum::extract::{Path, State};
use axum::{Extension, Json};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::api::{AccountPath, ApiError, ApiJson, ErrorBody, NoSuchAccount, ResourceId};
use crate::api::{conflict_if_duplicate, product};
use crate::auth::{AuditFacts, Principal};
use crate::db::{new_id, now_ms, on_db, select};
use crate::state::AppState;

/// The roles a member may have.
pub(crate) const ROLES: [&str; 2] = ["administrator", "member"];

/// A member of an account.
#[derive(Debug, Serialize, Deserialize, ToSchema, sqlx::FromRow)]
pub(crate) struct Member {
    /// The member's user id.
    #[schema(extensions(("x-auditable" = json!(true))))]
    pub(crate) id: String,
    /// The member's email.
    #[schema(extensions(("x-auditable" = json!(true))))]
    pub(crate) email: String,
    /// `administrator` or `member`.
    #[schema(extensions(("x-auditable" = json!(true))))]
    pub(crate) role: String,
    /// `accepted`, or `pending` until the invited user accepts the invitation.
    #[schema(extensions(("x-auditable" = json!(true))))]
    pub(crate) status: String,
}

/// A member to invite: an existing user by email, or a new one (who cannot sign in until
/// they have a password).
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub(crate) struct MemberCreate {
    /// The user's email (at most 254 characters).
    #[schema(max_length = 254, pattern = r"^\s*[^@\s<>,\u0000-\u001f\u007f-\u009f]+@[^@\s<>,.\u0000-\u001f\u007f-\u009f][^@\s<>,\u0000-\u001f\u007f-\u009f]*\.[^@\s<>,\u0000-\u001f\u007f-\u009f]*[^@\s<>,.\u0000-\u001f\u007f-\u009f]\s*$", extensions(("x-auditable" = json!(true))))]
    pub(crate) email: String,
    /// `administrator` or `member`.
    #[schema(pattern = "^(administrator|member)$", extensions(("x-auditable" = json!(true))))]
    pub(crate) role: String,
}

/// The path of one member: `/accounts/{account_id}/members/{member_id}`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub(crate) struct MemberPath {
    /// The account id
    pub(crate) account_id: String,
    /// The member's user id
    pub(crate) member_id: String,
}

/// List Members
#[utoipa::path(
    get,
    path = "/accounts/{account_id}/members",
    params(AccountPath),
    responses(
        (status = 200, description = "The account's members, and the users invited", body = Vec<Member>),
        NoSuchAccount,
    ),
)]
pub(crate) async fn list_members(
    State(state): State<AppState>,
    Path(AccountPath { account_id }): Path<AccountPath>,
) -> Result<Json<Vec<Member>>, ApiError> {
    // Members (`accepted`) and invited users (`pending`), oldest first.
    const SQL: &str = "SELECT u.id AS id, u.email AS email, m.role AS role, \
        'accepted' AS status, m.created_ms AS created_ms \
        FROM members m JOIN users u ON u.id = m.user_id WHERE m.account_id = $1 \
        UNION ALL \
        SELECT u.id, u.email, i.role, 'pending', i.created_ms \
        FROM invitations i JOIN users u ON u.id = i.user_id WHERE i.account_id = $1 \
        ORDER BY created_ms, email";
    Ok(Json(select(SQL, &[&account_id]).all(&state.db).await?))
}

/// Invite Member
///
/// Invites a user (an existing one by email, or a new one) to become a member with `role`.
/// The answer is the member, `pending`: they may act on nothing of the account until they
/// accept the invitation themselves (`PATCH /user/invites/{invite_id}`).
#[utoipa::path(
    post,
    path = "/accounts/{account_id}/members",
    params(AccountPath),
    request_body = MemberCreate,
    responses(
        (status = 200, description = "The invited member, pending", body = Member),
        (status = 400, description = "Invalid email or role", body = ErrorBody),
        NoSuchAccount,
        (status = 409, description = "Already a member, or already invited", body = ErrorBody),
    ),
)]
pub(crate) async fn add_member(
    State(state): State<AppState>,
    facts: AuditFacts,
    Extension(principal): Extension<Principal>,
    Path(AccountPath { account_id }): Path<AccountPath>,
    ApiJson(input): ApiJson<MemberCreate>,
) -> Result<Json<Member>, ApiError> {
    let email = input.email.trim().to_ascii_lowercase();
    if !is_email(&email) {
        return Err(ApiError::BadRequest(
            "invalid value for 'email': expected an address like name@example.com".into(),
        ));
    }
    if !ROLES.contains(&input.role.as_str()) {
        return Err(ApiError::BadRequest(format!(
            "invalid value for 'role': expected one of {ROLES:?}, got {:?}",
            input.role
        )));
    }
    let now = now_ms();
    let result: Result<Option<String>, sqlx::Error> = on_db!(&state.db, p => async {
        let mut tx = p.begin().await?;
        // A new user has no password: it cannot sign in, so not accept either, until it has one.
        sqlx::query("INSERT INTO users (id, email, password_hash, created_ms) VALUES ($1, $2, NULL, $3) ON CONFLICT (email) DO NOTHING")
            .bind(new_id()).bind(&email).bind(now)
            .execute(&mut *tx).await?;
        let user_id: String = sqlx::query_scalar("SELECT id FROM users WHERE email = $1")
            .bind(&email)
            .fetch_one(&mut *tx).await?;
        let member: Option<String> = sqlx::query_scalar("SELECT user_id FROM members WHERE account_id = $1 AND user_id = $2")
            .bind(&account_id).bind(&user_id)
            .fetch_optional(&mut *tx).await?;
        if member.is_some() {
            return Ok(None);
        }
        sqlx::query("INSERT INTO invitations (id, account_id, user_id, role, invited_by, created_ms) VALUES ($1, $2, $3, $4, $5, $6)")
            .bind(new_id()).bind(&account_id).bind(&user_id).bind(&input.role).bind(&principal.user_id).bind(now)
            .execute(&mut *tx).await?;
        tx.commit().await?;
        Ok(Some(user_id))
    }.await);
    let user_id = result
        .map_err(|e| {
            conflict_if_duplicate(e, || format!("{email} is already invited to this account"))
        })?
        .ok_or_else(|| {
            ApiError::Conflict(format!("{email} is already a member of this account"))
        })?;
    facts.resource_id(&user_id);
    Ok(Json(Member {
        id: user_id,
        email,
        role: input.role,
        status: "pending".into(),
    }))
}

/// Remove Member
///
/// Also revokes the API tokens the member holds on this account; for a pending member,
/// withdraws the invitation. The account's last administrator cannot be removed.
#[utoipa::path(
    delete,
    path = "/accounts/{account_id}/members/{member_id}",
    params(MemberPath),
    responses(
        (status = 200, description = "The removed member's id", body = ResourceId),
        (status = 409, description = "The account's last administrator", body = ErrorBody),
        (status = 404, description = "No such member or invitation", body = ErrorBody),
    ),
)]
pub(crate) async fn remove_member(
    State(state): State<AppState>,
    Path(MemberPath {
        account_id,
        member_id,
    }): Path<MemberPath>,
) -> Result<Json<ResourceId>, ApiError> {
    enum Outcome {
        Removed,
        NotMember,
        LastAdministrator,
    }
    let now = now_ms();
    let outcome: Result<Outcome, sqlx::Error> = on_db!(&state.db, p => async {
        let mut tx = p.begin().await?;
        let role: Option<String> = sqlx::query_scalar("SELECT role FROM members WHERE account_id = $1 AND user_id = $2")
            .bind(&account_id).bind(&member_id)
            .fetch_optional(&mut *tx).await?;
        let Some(role) = role else {
            let withdrawn = sqlx::query("DELETE FROM invitations WHERE account_id = $1 AND user_id = $2")
                .bind(&account_id).bind(&member_id)
                .execute(&mut *tx).await?
                .rows_affected();
            tx.commit().await?;
            return Ok(if withdrawn == 0 { Outcome::NotMember } else { Outcome::Removed });
        };
        if role == "administrator" {
            let admins: i64 = sqlx::query_scalar("SELECT count(*) FROM members WHERE account_id = $1 AND role = 'administrator'")
                .bind(&account_id)
                .fetch_one(&mut *tx).await?;
            if admins <= 1 {
                return Ok(Outcome::LastAdministrator);
            }
        }
        sqlx::query("DELETE FROM members WHERE account_id = $1 AND user_id = $2")
            .bind(&account_id).bind(&member_id)
            .execute(&mut *tx).await?;
        sqlx::query("UPDATE api_tokens SET revoked_ms = $1 WHERE account_id = $2 AND user_id = $3 AND revoked_ms IS NULL")
            .bind(now).bind(&account_id).bind(&member_id)
            .execute(&mut *tx).await?;
        tx.commit().await?;
        Ok(Outcome::Removed)
    }.await);
    match outcome? {
        Outcome::Removed => Ok(Json(ResourceId { id: member_id })),
        Outcome::NotMember => Err(ApiError::NotFound("member")),
        // The request is valid; what exists forbids it.
        Outcome::LastAdministrator => Err(ApiError::Conflict(
            "cannot remove the account's last administrator".into(),
        )),
    }
}

/// The routes of these operations, tagged `members`, in the `Account` product category.
pub(crate) fn routes() -> OpenApiRouter<AppState> {
    let router = OpenApiRouter::new()
        .routes(routes!(list_members, add_member))
        .routes(routes!(remove_member));
    product(
        "members",
        &[("x-audit-product-category", "Account")],
        router,
    )
}

/// A plausible email address: one `@` between a non-empty local part and a dotted domain, no
/// spaces or control characters, at most 254 characters (as the document says).
pub(crate) fn is_email(email: &str) -> bool {
    let Some((local, domain)) = email.split_once('@') else {
        return false;
    };
    !local.is_empty()
        && email.chars().count() <= 254
        && !domain.contains('@')
        && domain.contains('.')
        && !domain.starts_with('.')
        && !domain.ends_with('.')
        && !email
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || matches!(c, '<' | '>' | ','))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emails_are_checked() {
        assert!(is_email("alice@example.com"));
        for bad in [
            "alice",
            "@example.com",
            "a@b",
            "a@@b.com",
            "a b@c.com",
            "a@.com",
            "a@b.com.",
        ] {
            assert!(!is_email(bad), "{bad}");
        }
    }
}
