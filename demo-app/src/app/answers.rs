//! The answers that come from what runs around the handlers, declared in the document for
//! every operation that can get them: the authentication middleware's `401` and `404`, and
//! the audit layer's refusals of request bodies (`408`, `413`, `503`). Each operation's own
//! `responses(...)` declares what its handler answers; these complete them, so that the
//! document is all a client can get (Schemathesis checks it: `scripts/check-demo-openapi.sh`).

use utoipa::openapi::RefOr;
use utoipa::openapi::path::{Operation, ParameterIn};
use utoipa_axum::router::OpenApiRouter;

use crate::api::{declare_answers, error_responses, text_responses};
use crate::state::AppState;

/// Declares the answers of [`require_auth`](crate::auth::require_auth) on every protected
/// operation, and the audit layer's on every operation with a request body.
pub(super) fn declare(
    protected: &mut OpenApiRouter<AppState>,
    public: &mut OpenApiRouter<AppState>,
) {
    let unauthenticated = error_responses(&[(401, "Not authenticated")]);
    declare_answers(protected, &unauthenticated, |_, _| true);
    // The middleware checks the path's account and zone, and refuses a path whose parameters
    // do not decode, before any handler runs.
    let not_found = error_responses(&[(
        404,
        "No such account, zone or resource (or not the caller's)",
    )]);
    declare_answers(protected, &not_found, |path, _| path.contains('{'));
    let has_body = |_: &str, operation: &Operation| operation.request_body.is_some();
    let invalid = error_responses(&[(400, "The request body is not the JSON object described")]);
    declare_answers(protected, &invalid, has_body);
    declare_answers(public, &invalid, has_body);
    let has_query = |_: &str, operation: &Operation| {
        operation
            .parameters
            .iter()
            .flatten()
            .any(|p| matches!(p, RefOr::T(p) if matches!(p.parameter_in, ParameterIn::Query)))
    };
    let invalid_query = error_responses(&[(400, "A query parameter is invalid")]);
    declare_answers(protected, &invalid_query, has_query);
    let bodies = text_responses(&[
        (
            408,
            "The request body did not arrive within the read timeout",
        ),
        (413, "The request body is over the audit layer's body limit"),
        (503, "Too many request bodies in flight (Retry-After: 1)"),
    ]);
    declare_answers(protected, &bodies, has_body);
    declare_answers(public, &bodies, has_body);
}
