//! Invitations, as the invited user sees them: `GET /user/invites`,
//! `PATCH /user/invites/{invite_id}`.
//!
//! An administrator's `POST /accounts/{account_id}/members` makes nobody a member: it sends an
//! invitation (see [`super::members`]), which grants nothing. Only the invited user, signed in
//! to the dashboard as themselves, answers it: `accepted` makes them a member with the offered
//! role, `rejected` withdraws it. Nobody else can: another user's invitation is `404`, as one
//! that does not exist, and an API token is `403` — it acts on its own account only, and
//! joining another account is the user's own decision.
//!
//! The record of an answer is filed in the log of the inviting account: its owners see who
//! joined or refused, and who tried to answer an invitation that is not theirs. Auditable: the
//! invitation's id, account, role, inviter and status, and the answer.

use audit_layer::Identity;
use audit_layer::record::ActorContext;
use axum::extract::{Path, State};
use axum::{Extension, Json};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::api::{ApiError, ApiJson, ErrorBody, error_answers, product};
use crate::auth::{AuditFacts, Principal};
use crate::db::{now_ms, on_db, rfc3339, select};
use crate::state::AppState;

/// An invitation to become a member of an account.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub(crate) struct Invite {
    /// The invitation id.
    #[schema(extensions(("x-auditable" = json!(true))))]
    pub(crate) id: String,
    /// The account the invitation is to.
    #[schema(extensions(("x-auditable" = json!(true))))]
    pub(crate) account_id: String,
    /// The account's name.
    pub(crate) account_name: String,
    /// The role the membership would have: `administrator` or `member`.
    #[schema(extensions(("x-auditable" = json!(true))))]
    pub(crate) role: String,
    /// The user id of the administrator who sent it, while that user exists.
    #[schema(extensions(("x-auditable" = json!(true))))]
    pub(crate) invited_by: Option<String>,
    /// `pending`; after an answer, `accepted` or `rejected`.
    #[schema(extensions(("x-auditable" = json!(true))))]
    pub(crate) status: String,
    /// When it was sent (RFC 3339).
    pub(crate) invited_on: String,
}

/// The invited user's answer.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub(crate) struct InviteAnswer {
    /// `accepted` (become a member) or `rejected` (withdraw the invitation).
    #[schema(extensions(("x-auditable" = json!(true))))]
    pub(crate) status: String,
}

/// The path of one of the caller's invitations: `/user/invites/{invite_id}`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub(crate) struct InvitePath {
    /// The invitation id
    pub(crate) invite_id: String,
}

error_answers! {
    /// `401` and `403`: invitations are answered by the invited user, signed in; see
    /// [`require_session`].
    SessionRequired => [
        (401, "Not signed in"),
        (403, "An API token: invitations need a dashboard session"),
    ];
}

#[derive(sqlx::FromRow)]
struct InviteRow {
    id: String,
    account_id: String,
    account_name: String,
    user_id: String,
    role: String,
    invited_by: Option<String>,
    created_ms: i64,
}

impl InviteRow {
    fn into_invite(self, status: &str) -> Invite {
        Invite {
            id: self.id,
            account_id: self.account_id,
            account_name: self.account_name,
            role: self.role,
            invited_by: self.invited_by,
            status: status.to_owned(),
            invited_on: rfc3339(self.created_ms),
        }
    }
}

/// The columns of [`InviteRow`]; `WHERE` follows.
macro_rules! select_invites {
    ($where:literal) => {
        concat!(
            "SELECT i.id, i.account_id, a.name AS account_name, i.user_id, i.role, ",
            "i.invited_by, i.created_ms ",
            "FROM invitations i JOIN accounts a ON a.id = i.account_id ",
            $where
        )
    };
}

/// `Ok` for a dashboard session; an API token acts on its own account only.
fn require_session(principal: &Principal) -> Result<(), ApiError> {
    if matches!(principal.context, ActorContext::Dash) {
        return Ok(());
    }
    Err(ApiError::Forbidden(
        "invitations are answered by the invited user, signed in: log in with POST /login \
         and send the demo_session cookie (an API token acts on its own account only)",
    ))
}

/// List Invitations
///
/// The signed-in user's pending invitations to other accounts.
#[utoipa::path(
    get,
    path = "/user/invites",
    responses(
        (status = 200, description = "The caller's pending invitations", body = Vec<Invite>),
        SessionRequired,
    ),
    security(("dash_session" = [])),
)]
pub(crate) async fn list_invites(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
) -> Result<Json<Vec<Invite>>, ApiError> {
    require_session(&principal)?;
    const SQL: &str = select_invites!("WHERE i.user_id = $1 ORDER BY i.created_ms, i.id");
    let rows: Vec<InviteRow> = select(SQL, &[&principal.user_id]).all(&state.db).await?;
    Ok(Json(
        rows.into_iter().map(|r| r.into_invite("pending")).collect(),
    ))
}

/// Respond to Invitation
///
/// Accepts (`accepted`: the caller becomes a member of the account, with the offered role) or
/// rejects (`rejected`) one of the caller's own pending invitations.
#[utoipa::path(
    patch,
    path = "/user/invites/{invite_id}",
    params(InvitePath),
    request_body = InviteAnswer,
    responses(
        (status = 200, description = "The invitation, answered", body = Invite),
        (status = 400, description = "Invalid status", body = ErrorBody),
        SessionRequired,
        (status = 404, description = "No such pending invitation (or not the caller's)", body = ErrorBody),
    ),
    security(("dash_session" = [])),
)]
pub(crate) async fn answer_invite(
    State(state): State<AppState>,
    facts: AuditFacts,
    Extension(principal): Extension<Principal>,
    Path(InvitePath { invite_id }): Path<InvitePath>,
    ApiJson(input): ApiJson<InviteAnswer>,
) -> Result<Json<Invite>, ApiError> {
    require_session(&principal)?;
    let accept = match input.status.as_str() {
        "accepted" => true,
        "rejected" => false,
        other => {
            return Err(ApiError::BadRequest(format!(
                "invalid value for 'status': expected \"accepted\" or \"rejected\", got {other:?}"
            )));
        }
    };
    const SQL: &str = select_invites!("WHERE i.id = $1");
    let row: Option<InviteRow> = select(SQL, &[&invite_id]).optional(&state.db).await?;
    let Some(row) = row else {
        return Err(ApiError::NotFound("invitation"));
    };
    // Filed with the inviting account, also when the invitation is someone else's.
    facts.identify(Identity::anonymous().account(&row.account_id));
    if row.user_id != principal.user_id {
        return Err(ApiError::NotFound("invitation"));
    }
    let now = now_ms();
    let answered: Result<bool, sqlx::Error> = on_db!(&state.db, p => async {
        let mut tx = p.begin().await?;
        let deleted = sqlx::query("DELETE FROM invitations WHERE id = $1 AND user_id = $2")
            .bind(&row.id).bind(&row.user_id)
            .execute(&mut *tx).await?
            .rows_affected();
        if deleted == 0 {
            // Answered meanwhile, or withdrawn by an administrator.
            return Ok(false);
        }
        if accept {
            sqlx::query("INSERT INTO members (account_id, user_id, role, created_ms) VALUES ($1, $2, $3, $4) ON CONFLICT (account_id, user_id) DO NOTHING")
                .bind(&row.account_id).bind(&row.user_id).bind(&row.role).bind(now)
                .execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(true)
    }.await);
    if !answered? {
        return Err(ApiError::NotFound("invitation"));
    }
    Ok(Json(row.into_invite(&input.status)))
}

/// The routes of these operations, tagged `user` and marked `x-audit-product: members`, in
/// the `Account` product category.
pub(crate) fn routes() -> OpenApiRouter<AppState> {
    let router = OpenApiRouter::new()
        .routes(routes!(list_invites))
        .routes(routes!(answer_invite));
    let marks = [
        ("x-audit-product", "members"),
        ("x-audit-product-category", "Account"),
    ];
    product("user", &marks, router)
}
