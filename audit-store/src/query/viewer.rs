//! The audit log viewer: a page of the router (`GET /accounts/{account_id}/logs/audit/viewer`)
//! where an account's admins read, filter and follow their log in a browser, served when the
//! app asks for it ([`AuditLogRouter::with_viewer`]; feature `viewer`).
//!
//! The page is plain HTML, CSS and JavaScript embedded in the binary: no build step, no
//! request to another origin. It reads the router's own endpoints with the browser's
//! credentials (a session cookie works: the page is authorized by the same [`Authorizer`](super::Authorizer)
//! as the API, so a caller who may not read the account gets the API's 401 or 404 instead of
//! the page). The API's query parameters select the view, and the page keeps its whole state
//! in the URL, so a link reproduces what its sender saw.
//!
//! Every string of a record may be hostile: the script builds the page with `textContent` and
//! `createElement` only (never markup from data), and every answer carries a strict
//! `Content-Security-Policy` (scripts and styles from this origin only, no inline script or
//! style, no `eval`, no plugin, no form, no request elsewhere; `frame-ancestors` as the app
//! sets it, `'none'` by default), `X-Content-Type-Options: nosniff` and
//! `Referrer-Policy: no-referrer`. The viewer only reads: it has no state-changing action, so
//! nothing for a cross-site request to forge.

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderValue, StatusCode, header, request::Parts};
use axum::response::Response;
use axum::routing::get;

use super::{AuditLogRouter, Shared, authorize};
use crate::store::ChainedStore;

const INDEX: &str = include_str!("../../viewer/index.html");
const SCRIPT: &str = include_str!("../../viewer/viewer.js");
const STYLE: &str = include_str!("../../viewer/viewer.css");

/// The viewer's settings.
#[derive(Clone, Debug)]
pub(super) struct Viewer {
    /// The whole `Content-Security-Policy` header value.
    policy: HeaderValue,
}

impl Viewer {
    fn new(frame_ancestors: &str) -> Self {
        let policy = format!(
            "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
             connect-src 'self'; base-uri 'none'; form-action 'none'; \
             frame-ancestors {frame_ancestors}"
        );
        Self {
            policy: HeaderValue::from_str(&policy).expect("validated sources"),
        }
    }

    /// The viewer's routes, on the router's state.
    pub(super) fn routes<S: ChainedStore>(
        self,
        router: Router<Arc<Shared<S>>>,
        base: &str,
    ) -> Router<Arc<Shared<S>>> {
        let policy = self.policy;
        let page_policy = policy.clone();
        router
            .route(
                &format!("{base}/viewer"),
                get(move |state, path, parts| page::<S>(state, path, parts, page_policy.clone())),
            )
            .route(
                &format!("{base}/viewer/{{asset}}"),
                get(move |path| asset(path, policy.clone())),
            )
    }
}

/// A source of `frame-ancestors` the viewer cannot use, and why.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid frame-ancestors source {given:?}: {why}")]
pub struct InvalidFrameAncestor {
    given: String,
    why: &'static str,
}

/// Checks one CSP source expression: a keyword (`'self'`, `'none'`), a scheme (`https:`) or
/// a host source (`https://app.example.com`, `*.example.com:443`).
fn check_source(source: &str) -> Result<(), InvalidFrameAncestor> {
    let invalid = |why| InvalidFrameAncestor {
        given: source.chars().take(80).collect(),
        why,
    };
    if source == "'self'" || source == "'none'" {
        return Ok(());
    }
    if source.is_empty() {
        return Err(invalid("empty"));
    }
    if !source
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"-._~:/*%[]".contains(&b))
    {
        return Err(invalid(
            "expected 'self', 'none', a scheme such as https: or a host such as https://app.example.com",
        ));
    }
    Ok(())
}

impl<S: ChainedStore> AuditLogRouter<S> {
    /// Serves the viewer with the router: `GET /accounts/{account_id}/logs/audit/viewer` (its
    /// assets under that path). Needs the `viewer` feature. The page may not be framed (CSP
    /// `frame-ancestors 'none'`) unless the app says by whom
    /// ([`viewer_frame_ancestors`](Self::viewer_frame_ancestors)).
    ///
    /// ```
    /// use audit_store::query::{Access, AuditLogRouter};
    /// # fn run(store: audit_store::SqliteStore) {
    /// let router = AuditLogRouter::new(store, |_: &http::request::Parts, _: &str| Access::Allowed)
    ///     .with_viewer()
    ///     .into_router();
    /// # let _ = router; }
    /// ```
    pub fn with_viewer(mut self) -> Self {
        if self.viewer.is_none() {
            self.viewer = Some(Viewer::new("'none'"));
        }
        self
    }

    /// Serves the viewer ([`with_viewer`](Self::with_viewer)) and lets the pages of
    /// `sources` embed it in a frame (the CSP `frame-ancestors` directive): `'self'`,
    /// `'none'`, schemes (`https:`) or hosts (`https://app.example.com`).
    ///
    /// ```
    /// use audit_store::query::{Access, AuditLogRouter};
    /// # fn run(store: audit_store::SqliteStore) -> Result<(), audit_store::query::InvalidFrameAncestor> {
    /// let router = AuditLogRouter::new(store, |_: &http::request::Parts, _: &str| Access::Allowed)
    ///     .viewer_frame_ancestors(&["'self'", "https://admin.example.com"])?;
    /// assert!(
    ///     AuditLogRouter::new(router_store(), |_: &http::request::Parts, _: &str| Access::Allowed)
    ///         .viewer_frame_ancestors(&["x; script-src *"])
    ///         .is_err()
    /// );
    /// # Ok(()) }
    /// # fn router_store() -> audit_store::SqliteStore { unimplemented!() }
    /// ```
    ///
    /// # Errors
    ///
    /// [`InvalidFrameAncestor`] naming the first source that is not a CSP source expression
    /// (a `;`, a quote or a space would let it change the rest of the policy).
    pub fn viewer_frame_ancestors(
        mut self,
        sources: &[&str],
    ) -> Result<Self, InvalidFrameAncestor> {
        for source in sources {
            check_source(source)?;
        }
        let list = if sources.is_empty() {
            "'none'".to_owned()
        } else {
            sources.join(" ")
        };
        self.viewer = Some(Viewer::new(&list));
        Ok(self)
    }
}

/// The headers every answer of the viewer carries.
fn secured(mut response: Response, policy: HeaderValue, content_type: &'static str) -> Response {
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(header::CONTENT_SECURITY_POLICY, policy);
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}

async fn page<S: ChainedStore>(
    State(shared): State<Arc<Shared<S>>>,
    Path(account_id): Path<String>,
    parts: Parts,
    policy: HeaderValue,
) -> Response {
    if let Some(denied) = authorize(&shared, &parts, &account_id).await {
        return denied;
    }
    secured(
        Response::new(Body::from(INDEX)),
        policy,
        "text/html; charset=utf-8",
    )
}

async fn asset(Path((_, name)): Path<(String, String)>, policy: HeaderValue) -> Response {
    let (body, content_type) = match name.as_str() {
        "viewer.js" => (SCRIPT, "text/javascript; charset=utf-8"),
        "viewer.css" => (STYLE, "text/css; charset=utf-8"),
        _ => {
            let mut response = Response::new(Body::from("not found"));
            *response.status_mut() = StatusCode::NOT_FOUND;
            return secured(response, policy, "text/plain; charset=utf-8");
        }
    };
    secured(Response::new(Body::from(body)), policy, content_type)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources_that_would_change_the_policy_are_refused() {
        for good in [
            "'self'",
            "'none'",
            "https:",
            "https://app.example.com",
            "*.example.com:443",
        ] {
            assert_eq!(check_source(good), Ok(()), "{good}");
        }
        for bad in [
            "",
            "a; script-src *",
            "'unsafe-inline'",
            "a b",
            "x\r\nSet-Cookie: y",
            "\"x\"",
        ] {
            let e = check_source(bad).expect_err(bad).to_string();
            assert!(e.starts_with("invalid frame-ancestors source"), "{e}");
        }
    }

    #[test]
    fn the_policy_forbids_inline_code_and_other_origins() {
        let policy = Viewer::new("'none'").policy;
        let policy = policy.to_str().unwrap_or_default();
        assert!(policy.contains("script-src 'self';"));
        assert!(!policy.contains("unsafe"));
        assert!(policy.ends_with("frame-ancestors 'none'"));
    }

    #[test]
    fn the_page_loads_only_its_own_assets() {
        assert!(INDEX.contains(r#"src="viewer/viewer.js""#));
        assert!(!INDEX.contains("<script>"), "no inline script");
        assert!(!INDEX.contains("style="), "no inline style");
        assert!(!SCRIPT.contains("innerHTML"), "the DOM is built from nodes");
        assert!(!SCRIPT.contains("eval("));
    }
}
