//! The HTTP shapes every product shares: the error answer ([`ApiError`], [`ErrorBody`]) and the
//! failure answers operations document ([`error_answers!`]), the JSON body extractor
//! ([`ApiJson`]), the paths of an account and of a zone ([`AccountPath`], [`ZonePath`]), the
//! `{"id": ...}` answer of writes ([`ResourceId`]), fetch-or-404 ([`found`], [`changed`],
//! [`changed_id`], [`created`]), paging ([`Page`]), name checks ([`check_name`]), and what
//! all the operations of a product share in the document ([`product`]).

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::{FromRequest, FromRequestParts, Query, Request};
use axum::http::StatusCode;
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::openapi::path::Operation;
use utoipa::openapi::response::ResponseBuilder;
use utoipa::openapi::{self, ContentBuilder, Ref, RefOr};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;

use crate::db::is_unique_violation;
use crate::state::AppState;

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

/// A JSON request body whose rejections are [`ApiError::BadRequest`] answers. The body must
/// be a JSON object, as every request body the document describes is: serde would otherwise
/// take a struct from an array of its fields' values too (`[null, null]`).
#[derive(Debug)]
pub(crate) struct ApiJson<T>(pub(crate) T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        if !is_json(request.headers()) {
            return Err(ApiError::BadRequest(
                "Expected request with `Content-Type: application/json`".into(),
            ));
        }
        let body = axum::body::Bytes::from_request(request, state)
            .await
            .map_err(|rejection| ApiError::BadRequest(rejection.body_text()))?;
        if body.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
            return Err(ApiError::BadRequest(
                "invalid request body: expected a JSON object".into(),
            ));
        }
        // As axum's `Json` reads it: fields the type does not name are skipped unread.
        match Json::<T>::from_bytes(&body) {
            Ok(Json(value)) => Ok(Self(value)),
            Err(rejection) => Err(ApiError::BadRequest(rejection.body_text())),
        }
    }
}

/// Whether the request says its body is JSON (`application/json`, or `application/*+json`),
/// as axum's `Json` decides.
fn is_json(headers: &axum::http::HeaderMap) -> bool {
    let Some(value) = headers
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let essence = value
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    essence == "application/json"
        || (essence.starts_with("application/") && essence.ends_with("+json"))
}

/// Query parameters whose rejections are [`ApiError::BadRequest`] answers (a JSON error body,
/// as the document declares, not axum's plain text).
#[derive(Debug)]
pub(crate) struct ApiQuery<T>(pub(crate) T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match Query::<T>::from_request_parts(parts, state).await {
            Ok(Query(value)) => Ok(Self(value)),
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

/// The answer of a create: the resource just written, read back. Its absence is a fault of the
/// database, not of the request.
pub(crate) fn created<T>(resource: Option<T>) -> Result<Json<T>, ApiError> {
    resource.map(Json).ok_or(ApiError::Internal)
}

/// The outcome of a write that names its resource: `Ok` when it changed a row, `404 <what> not
/// found` when it changed none.
pub(crate) fn changed(rows: u64, what: &'static str) -> Result<(), ApiError> {
    if rows == 0 {
        return Err(ApiError::NotFound(what));
    }
    Ok(())
}

/// `e` as an answer: `409` with `message` when it is a unique-constraint violation (the write
/// would duplicate what exists), else the database's failure.
pub(crate) fn conflict_if_duplicate(e: sqlx::Error, message: impl FnOnce() -> String) -> ApiError {
    if is_unique_violation(&e) {
        return ApiError::Conflict(message());
    }
    e.into()
}

/// The `{"id": id}` answer of a write (a delete, a revocation, an overwrite) that named the
/// resource `id`: as [`changed`], `404 <what> not found` when it changed no row.
pub(crate) fn changed_id(
    rows: u64,
    what: &'static str,
    id: String,
) -> Result<Json<ResourceId>, ApiError> {
    changed(rows, what)?;
    Ok(Json(ResourceId { id }))
}

/// The last page a list operation serves (`maximum` of `page` in the document).
pub(crate) const MAX_PAGE: u32 = 1_000_000;

/// The `page` (from 1 to [`MAX_PAGE`]) and `per_page` (1–500, default 50) query parameters of
/// list operations.
///
/// Extracted on its own (`Query<Page>`) beside the operation's filters: a struct flattened into
/// another would reach `serde_urlencoded` as text and fail to parse its numbers.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct Page {
    /// The page, from 1.
    pub(crate) page: Option<u32>,
    /// Items per page.
    pub(crate) per_page: Option<u32>,
}

impl Page {
    /// `(limit, offset)` for SQL, or which parameter is out of range.
    pub(crate) fn limit_offset(&self) -> Result<(i64, i64), ApiError> {
        let per_page = self.per_page.unwrap_or(50);
        if !(1..=500).contains(&per_page) {
            return Err(ApiError::BadRequest(format!(
                "invalid value for 'per_page': expected 1 to 500, got {per_page}"
            )));
        }
        let page = self.page.unwrap_or(1);
        if page == 0 {
            return Err(ApiError::BadRequest(
                "invalid value for 'page': pages start at 1".into(),
            ));
        }
        if page > MAX_PAGE {
            return Err(ApiError::BadRequest(format!(
                "invalid value for 'page': expected at most {MAX_PAGE}, got {page}"
            )));
        }
        Ok((
            i64::from(per_page),
            i64::from(page - 1) * i64::from(per_page),
        ))
    }
}

/// The path of an account and of what it holds: `/accounts/{account_id}`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub(crate) struct AccountPath {
    /// The account id
    pub(crate) account_id: String,
}

/// The path of a zone and of its DNS records: `/zones/{zone_id}`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub(crate) struct ZonePath {
    /// The zone id
    pub(crate) zone_id: String,
}

/// A product's routes as the document describes them: every operation tagged `tag` (the
/// product's name in the document) and given the audit markings `extensions` (`x-audit-*`
/// names and values) that all of them share.
pub(crate) fn product(
    tag: &str,
    extensions: &[(&str, &str)],
    mut router: OpenApiRouter<AppState>,
) -> OpenApiRouter<AppState> {
    for_each_operation(&mut router, |_, operation| {
        operation.tags = Some(vec![tag.to_owned()]);
        if !extensions.is_empty() {
            let marks = extensions
                .iter()
                .map(|&(name, value)| (name.to_owned(), Value::from(value)));
            operation
                .extensions
                .get_or_insert_with(Default::default)
                .extend(marks);
        }
    });
    router
}

/// Calls `f` with every operation `router` documents, and its path template.
pub(crate) fn for_each_operation(
    router: &mut OpenApiRouter<AppState>,
    mut f: impl FnMut(&str, &mut Operation),
) {
    for (path, item) in router.get_openapi_mut().paths.paths.iter_mut() {
        let operations = [
            &mut item.get,
            &mut item.put,
            &mut item.post,
            &mut item.delete,
            &mut item.options,
            &mut item.head,
            &mut item.patch,
            &mut item.trace,
        ];
        for operation in operations.into_iter().flatten() {
            f(path, operation);
        }
    }
}

/// Declares the failure answers an operation documents in `#[utoipa::path(responses(...))]`:
/// each `Name => [(status, "description"), ...]` is an uninhabited type (it documents, it is
/// never answered) whose [`IntoResponses`](utoipa::IntoResponses) lists those statuses, each
/// with an [`ErrorBody`]. The answers themselves are [`ApiError`]s.
///
/// A macro because `responses(...)` names a type, and each type needs its own impl.
macro_rules! error_answers {
    ($($(#[$doc:meta])* $name:ident => [$(($status:literal, $description:literal)),+ $(,)?];)+) => {$(
        $(#[$doc])*
        #[derive(Debug)]
        pub(crate) enum $name {}

        impl utoipa::IntoResponses for $name {
            fn responses() -> std::collections::BTreeMap<
                String,
                utoipa::openapi::RefOr<utoipa::openapi::response::Response>,
            > {
                $crate::api::error_responses(&[$(($status, $description)),+])
            }
        }
    )+};
}
pub(crate) use error_answers;

/// The OpenAPI responses of `(status, description)` pairs, each answering an [`ErrorBody`]
/// (see [`error_answers!`]).
pub(crate) fn error_responses(
    answers: &[(u16, &str)],
) -> BTreeMap<String, RefOr<openapi::response::Response>> {
    let body = || {
        ContentBuilder::new()
            .schema(Some(Ref::from_schema_name(ErrorBody::name())))
            .build()
    };
    answers
        .iter()
        .map(|&(status, description)| {
            let response = ResponseBuilder::new()
                .description(description)
                .content("application/json", body())
                .build();
            (status.to_string(), RefOr::T(response))
        })
        .collect()
}

/// The OpenAPI responses of `(status, description)` pairs, each answering plain text (what
/// the audit layer answers when it refuses a request body itself).
pub(crate) fn text_responses(
    answers: &[(u16, &str)],
) -> BTreeMap<String, RefOr<openapi::response::Response>> {
    answers
        .iter()
        .map(|&(status, description)| {
            let text = ContentBuilder::new()
                .schema(Some(
                    openapi::ObjectBuilder::new().schema_type(openapi::schema::Type::String),
                ))
                .build();
            let response = ResponseBuilder::new()
                .description(description)
                .content("text/plain", text)
                .build();
            (status.to_string(), RefOr::T(response))
        })
        .collect()
}

/// Adds `answers` to every operation of `router` that `applies` to (given its path template
/// and itself), each status it does not declare yet: the answers that come from what runs
/// around the handlers (authentication and access checks, the audit layer's bounds), declared
/// once for every operation they can answer, so that the document says all a client can get.
pub(crate) fn declare_answers(
    router: &mut OpenApiRouter<AppState>,
    answers: &BTreeMap<String, RefOr<openapi::response::Response>>,
    applies: impl Fn(&str, &Operation) -> bool,
) {
    for_each_operation(router, |path, operation| {
        if !applies(path, operation) {
            return;
        }
        for (status, response) in answers {
            operation
                .responses
                .responses
                .entry(status.clone())
                .or_insert_with(|| response.clone());
        }
    });
}

error_answers! {
    /// `404`: the path's account does not exist, or is not the caller's.
    NoSuchAccount => [(404, "No such account (or not the caller's)")];
    /// `404`: the path's zone does not exist, or is not the caller's.
    NoSuchZone => [(404, "No such zone (or not the caller's)")];
    /// `400`: a field of the body is invalid; the message names it.
    InvalidField => [(400, "Invalid field")];
    /// `400`: the name in the body is invalid.
    InvalidName => [(400, "Invalid name")];
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

#[cfg(test)]
mod tests {
    use serde_json::json;
    use utoipa::IntoResponses;

    use super::*;

    fn bad_request_naming(result: Result<(i64, i64), ApiError>) -> String {
        match result {
            Err(ApiError::BadRequest(message)) => message,
            other => panic!("expected a 400, got {other:?}"),
        }
    }

    #[test]
    fn pages_become_limit_and_offset_or_a_400_naming_the_parameter() {
        assert_eq!(Page::default().limit_offset().ok(), Some((50, 0)));
        let third = Page {
            page: Some(3),
            per_page: Some(20),
        };
        assert_eq!(third.limit_offset().ok(), Some((20, 40)));
        let none_per_page = Page {
            page: None,
            per_page: Some(0),
        };
        assert!(bad_request_naming(none_per_page.limit_offset()).contains("'per_page'"));
        let page_zero = Page {
            page: Some(0),
            per_page: None,
        };
        assert!(bad_request_naming(page_zero.limit_offset()).contains("'page'"));
    }

    #[test]
    fn error_answers_document_each_status_with_an_error_body() {
        let body =
            json!({"application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}});
        let zone = serde_json::to_value(NoSuchZone::responses()).unwrap();
        assert_eq!(
            zone,
            json!({"404": {"description": "No such zone (or not the caller's)", "content": body}})
        );
        error_answers! {
            /// Two answers.
            Both => [(401, "Not signed in"), (403, "Not allowed")];
        }
        let both = serde_json::to_value(Both::responses()).unwrap();
        assert_eq!(both["401"]["description"], "Not signed in");
        assert_eq!(both["403"]["content"], body);
    }

    #[test]
    fn a_write_that_changed_nothing_is_a_404_naming_what() {
        assert_eq!(changed_id(1, "zone", "z1".into()).unwrap().0.id, "z1");
        assert!(matches!(
            changed_id(0, "zone", "z1".into()),
            Err(ApiError::NotFound("zone"))
        ));
        assert!(matches!(created::<u8>(None), Err(ApiError::Internal)));
    }
}
