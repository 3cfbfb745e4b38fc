//! The HTTP shapes every product shares: the error answer ([`ApiError`], [`ErrorBody`]), the
//! JSON body extractor ([`ApiJson`]), the `{"id": ...}` answer of writes ([`ResourceId`]),
//! fetch-or-404 ([`found`], [`changed`]), paging ([`limit_offset`]) and name checks
//! ([`check_name`]).

use axum::Json;
use axum::extract::{FromRequest, Request};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// An error answered to the client as `{"success": false, "errors": [{"code", "message"}]}`.
#[derive(Debug)]
pub(crate) enum ApiError {
    /// `400`: the request is malformed or invalid; the message says which field and why.
    BadRequest(String),
    /// `401`: no valid API token or session.
    Unauthenticated,
    /// `401`: a login with a wrong email or password (the same answer for both).
    InvalidCredentials,
    /// `403`: the caller is authenticated, but not in the way this operation needs; the
    /// message says which way it does.
    Forbidden(&'static str),
    /// `404`: the named kind of thing does not exist, or the caller may not see it.
    NotFound(&'static str),
    /// `409`: the request conflicts with what exists; the message says what.
    Conflict(String),
    /// `500`: the database failed; details are logged, not answered.
    Internal,
}

impl From<sqlx::Error> for ApiError {
    fn from(e: sqlx::Error) -> Self {
        tracing::error!(target: "demo_app", "database error: {e}");
        Self::Internal
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code, message) = match self {
            Self::BadRequest(message) => (StatusCode::BAD_REQUEST, 1004, message),
            Self::Unauthenticated => (
                StatusCode::UNAUTHORIZED,
                10000,
                "authentication required: send 'Authorization: Bearer <token>' or log in".into(),
            ),
            Self::InvalidCredentials => (
                StatusCode::UNAUTHORIZED,
                10001,
                "invalid email or password".into(),
            ),
            Self::Forbidden(message) => (StatusCode::FORBIDDEN, 9109, message.to_owned()),
            Self::NotFound(what) => (StatusCode::NOT_FOUND, 7003, format!("{what} not found")),
            Self::Conflict(message) => (StatusCode::CONFLICT, 1061, message),
            Self::Internal => (
                StatusCode::INTERNAL_SERVER_ERROR,
                10002,
                "internal error; try again later".into(),
            ),
        };
        let body = ErrorBody {
            success: false,
            errors: vec![ErrorDetail { code, message }],
        };
        (status, Json(body)).into_response()
    }
}

/// The body of every error answer.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub(crate) struct ErrorBody {
    /// Always `false`.
    pub(crate) success: bool,
    /// What went wrong.
    pub(crate) errors: Vec<ErrorDetail>,
}

/// One error.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub(crate) struct ErrorDetail {
    /// A stable numeric code.
    #[schema(extensions(("x-auditable" = json!(true))))]
    pub(crate) code: u32,
    /// A message for people; it may echo the request, so it is not recorded.
    pub(crate) message: String,
}

/// A JSON request body whose rejections are [`ApiError::BadRequest`] answers.
#[derive(Debug)]
pub(crate) struct ApiJson<T>(pub(crate) T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        match Json::<T>::from_request(request, state).await {
            Ok(Json(value)) => Ok(Self(value)),
            Err(rejection) => Err(ApiError::BadRequest(rejection.body_text())),
        }
    }
}

/// The `{"id": ...}` answer of writes whose result is the resource's id.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub(crate) struct ResourceId {
    /// The id of the resource written.
    #[schema(extensions(("x-auditable" = json!(true))))]
    pub(crate) id: String,
}

/// The answer of a read: the resource, or `404 <what> not found` when there is none (or it
/// is not the caller's).
pub(crate) fn found<T>(resource: Option<T>, what: &'static str) -> Result<Json<T>, ApiError> {
    resource.map(Json).ok_or(ApiError::NotFound(what))
}

/// The outcome of a write that names its resource: `Ok` when it changed a row, `404 <what> not
/// found` when it changed none.
pub(crate) fn changed(rows: u64, what: &'static str) -> Result<(), ApiError> {
    if rows == 0 {
        return Err(ApiError::NotFound(what));
    }
    Ok(())
}

/// `(limit, offset)` for SQL from the `page` (from 1) and `per_page` (1–500, default 50) query
/// parameters of list operations, or which parameter is out of range.
pub(crate) fn limit_offset(
    page: Option<u32>,
    per_page: Option<u32>,
) -> Result<(i64, i64), ApiError> {
    let per_page = per_page.unwrap_or(50);
    if !(1..=500).contains(&per_page) {
        return Err(ApiError::BadRequest(format!(
            "invalid value for 'per_page': expected 1 to 500, got {per_page}"
        )));
    }
    let page = page.unwrap_or(1);
    if page == 0 {
        return Err(ApiError::BadRequest(
            "invalid value for 'page': pages start at 1".into(),
        ));
    }
    Ok((
        i64::from(per_page),
        i64::from(page - 1) * i64::from(per_page),
    ))
}

/// Checks a required display name: 1–`max` characters, not blank, no control characters.
pub(crate) fn check_name(field: &str, value: &str, max: usize) -> Result<(), ApiError> {
    if value.trim().is_empty() || value.chars().count() > max || value.chars().any(char::is_control)
    {
        return Err(ApiError::BadRequest(format!(
            "invalid value for '{field}': expected 1 to {max} printable characters"
        )));
    }
    Ok(())
}
