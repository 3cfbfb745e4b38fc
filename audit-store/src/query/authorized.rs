//! The start every route shares: the account in the path, the app's [`Authorizer`](super::Authorizer)'s
//! decision for it, and the route's own parameters, parsed. A handler takes an
//! [`Authorized<P>`] and starts from what it needs; a caller without access gets the 401 or
//! 404 before anything else is looked at, then a bad record id or parameter its 400.

use std::sync::Arc;

use axum::extract::{FromRequestParts, Path, RawQuery};
use axum::http::StatusCode;
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use uuid::Uuid;

use super::{Shared, authorize, bad_record_id, error, params};

/// An account the caller may read, with the route's parameters `P`.
pub(super) struct Authorized<P> {
    pub(super) account_id: String,
    pub(super) params: P,
}

/// What a route reads from its path's record id (`{id}`, when the route has one) and its
/// query string; the response to give instead when they are wrong.
pub(super) trait RouteParams<S>: Sized {
    #[expect(
        clippy::result_large_err,
        reason = "the answer itself, as axum's rejections are: made once per refused request"
    )]
    fn parse(shared: &Shared<S>, id: Option<&str>, query: &str) -> Result<Self, Response>;
}

impl<S, P> FromRequestParts<Arc<Shared<S>>> for Authorized<P>
where
    S: Send + Sync + 'static,
    P: RouteParams<S> + Send,
{
    type Rejection = Response;

    async fn from_request_parts(
        parts: &mut Parts,
        shared: &Arc<Shared<S>>,
    ) -> Result<Self, Response> {
        let Path(mut path) = Path::<Vec<String>>::from_request_parts(parts, shared)
            .await
            .map_err(IntoResponse::into_response)?;
        let id = (path.len() > 1).then(|| path.remove(1));
        let account_id = path.swap_remove(0);
        let Ok(RawQuery(raw)) = RawQuery::from_request_parts(parts, shared).await;
        if let Some(denied) = authorize(shared, parts, &account_id).await {
            return Err(denied);
        }
        let params = P::parse(shared, id.as_deref(), raw.as_deref().unwrap_or(""))?;
        Ok(Self { account_id, params })
    }
}

/// A bad parameter's answer: a 400 naming it.
fn bad_request(e: &params::BadParameter) -> Response {
    error(StatusCode::BAD_REQUEST, 400, &e.to_string())
}

/// The record `{id}` in the path.
pub(super) struct RecordId(pub(super) Uuid);

impl<S> RouteParams<S> for RecordId {
    fn parse(_: &Shared<S>, id: Option<&str>, _: &str) -> Result<Self, Response> {
        match id.map(str::parse::<Uuid>) {
            Some(Ok(id)) => Ok(Self(id)),
            _ => Err(bad_record_id()),
        }
    }
}

/// A route that takes no parameters (the product categories).
pub(super) struct NoParams;

impl<S> RouteParams<S> for NoParams {
    fn parse(_: &Shared<S>, _: Option<&str>, query: &str) -> Result<Self, Response> {
        let Some((key, _)) = form_urlencoded::parse(query.as_bytes()).next() else {
            return Ok(Self);
        };
        let key: String = audit_layer::escape::visible(key.as_bytes())
            .chars()
            .take(64)
            .collect();
        Err(error(
            StatusCode::BAD_REQUEST,
            400,
            &format!("unknown parameter {key:?}: product categories take no parameters"),
        ))
    }
}

impl<S> RouteParams<S> for params::LogQuery {
    fn parse(shared: &Shared<S>, _: Option<&str>, query: &str) -> Result<Self, Response> {
        params::parse(query, &shared.categories).map_err(|e| bad_request(&e))
    }
}

impl<S> RouteParams<S> for crate::verify::Span {
    fn parse(_: &Shared<S>, _: Option<&str>, query: &str) -> Result<Self, Response> {
        params::parse_span(query).map_err(|e| bad_request(&e))
    }
}

impl<S> RouteParams<S> for params::HistoryQuery {
    fn parse(_: &Shared<S>, _: Option<&str>, query: &str) -> Result<Self, Response> {
        params::parse_history(query).map_err(|e| bad_request(&e))
    }
}

/// Two in order: a record's id, then its route's query (the history).
impl<S, A: RouteParams<S>, B: RouteParams<S>> RouteParams<S> for (A, B) {
    fn parse(shared: &Shared<S>, id: Option<&str>, query: &str) -> Result<Self, Response> {
        Ok((A::parse(shared, id, query)?, B::parse(shared, id, query)?))
    }
}
