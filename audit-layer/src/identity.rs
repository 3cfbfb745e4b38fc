//! Telling the layer who acted: the [`AuditHandle`] in request extensions, or
//! `x-audit-actor-*` response headers.
//!
//! The layer cannot know who a caller is; the application's authentication code does. It tells
//! the layer in-process, in one of two ways:
//!
//! - through the [`AuditHandle`] the layer inserts into every request's extensions (an axum
//!   handler or middleware takes it with `Extension<AuditHandle>`), or
//! - through response headers named `x-audit-actor-*` ([`headers`]), which the layer reads and
//!   strips, so they never reach the client. This suits code that cannot see the request's
//!   extensions, such as a proxied upstream.
//!
//! When both are present, the handle wins field by field.
//!
//! ```
//! use audit_layer::{AuditHandle, Identity};
//! use audit_layer::record::ActorContext;
//! use axum::{Extension, Router, routing::get};
//!
//! async fn whoami(Extension(audit): Extension<AuditHandle>) -> &'static str {
//!     // ...after checking the caller's token:
//!     audit.identify(
//!         Identity::user("usr_42")
//!             .email("alice@example.com")
//!             .context(ActorContext::ApiToken)
//!             .token("tok_7", "CI deploys")
//!             .account("acc_demo"),
//!     );
//!     "alice"
//! }
//! let app: Router = Router::new().route("/whoami", get(whoami));
//! ```

use std::sync::{Arc, Mutex, PoisonError};

use http::HeaderMap;

use crate::escape;
use crate::record::{ActorContext, ActorType, Change};

/// Longest identity string kept from a response header; longer values are cut.
const MAX_HEADER_VALUE: usize = 256;

/// The response headers the layer reads the actor from, and strips.
pub mod headers {
    /// Prefix of every actor header; the layer strips all headers with this prefix.
    pub const PREFIX: &str = "x-audit-actor-";
    /// The actor's id.
    pub const ID: &str = "x-audit-actor-id";
    /// The actor's email.
    pub const EMAIL: &str = "x-audit-actor-email";
    /// `user`, `account` or `system`.
    pub const TYPE: &str = "x-audit-actor-type";
    /// `api_token`, `api_key`, `dash`, `oauth` or `system`.
    pub const CONTEXT: &str = "x-audit-actor-context";
    /// The id of the token used.
    pub const TOKEN_ID: &str = "x-audit-actor-token-id";
    /// The name of the token used.
    pub const TOKEN_NAME: &str = "x-audit-actor-token-name";
    /// The account the action belongs to, when the path does not name it.
    pub const ACCOUNT_ID: &str = "x-audit-actor-account-id";
}

/// Who acted, as the application's authentication code knows it.
///
/// Every field is optional: set what is known. A request whose authentication failed still
/// produces a record, with only the IP address known about the actor; setting an `account` on a
/// failed login files the record in that account's log.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Identity {
    /// The actor's id.
    pub id: Option<String>,
    /// The actor's email.
    pub email: Option<String>,
    /// What kind of principal acted.
    pub kind: Option<ActorType>,
    /// How the actor was authenticated.
    pub context: Option<ActorContext>,
    /// The id of the API token used (never its value).
    pub token_id: Option<String>,
    /// The display name of the API token used.
    pub token_name: Option<String>,
    /// The account the action belongs to, when the path does not name it (e.g. `POST /login`).
    pub account_id: Option<String>,
    /// The id of the resource acted on, when the path does not name it (e.g. a created one).
    pub resource_id: Option<String>,
}

impl Identity {
    /// A person, by id.
    pub fn user(id: impl Into<String>) -> Self {
        Self {
            id: Some(id.into()),
            kind: Some(ActorType::User),
            ..Self::default()
        }
    }

    /// The system itself.
    pub fn system() -> Self {
        Self {
            kind: Some(ActorType::System),
            context: Some(ActorContext::System),
            ..Self::default()
        }
    }

    /// An actor nobody could authenticate: useful to file a failed login under an account.
    pub fn anonymous() -> Self {
        Self::default()
    }

    /// Sets the email.
    pub fn email(mut self, email: impl Into<String>) -> Self {
        self.email = Some(email.into());
        self
    }

    /// Sets how the actor was authenticated.
    pub fn context(mut self, context: ActorContext) -> Self {
        self.context = Some(context);
        self
    }

    /// Sets the API token used, by id and display name.
    pub fn token(mut self, id: impl Into<String>, name: impl Into<String>) -> Self {
        self.token_id = Some(id.into());
        self.token_name = Some(name.into());
        self
    }

    /// Sets the account the action belongs to.
    pub fn account(mut self, account_id: impl Into<String>) -> Self {
        self.account_id = Some(account_id.into());
        self
    }

    /// Sets the id of the resource acted on.
    pub fn resource_id(mut self, resource_id: impl Into<String>) -> Self {
        self.resource_id = Some(resource_id.into());
        self
    }

    /// Fills the fields this identity lacks from `other`.
    pub(crate) fn or(mut self, other: Self) -> Self {
        fn fill<T>(a: &mut Option<T>, b: Option<T>) {
            if a.is_none() {
                *a = b;
            }
        }
        fill(&mut self.id, other.id);
        fill(&mut self.email, other.email);
        fill(&mut self.kind, other.kind);
        fill(&mut self.context, other.context);
        fill(&mut self.token_id, other.token_id);
        fill(&mut self.token_name, other.token_name);
        fill(&mut self.account_id, other.account_id);
        fill(&mut self.resource_id, other.resource_id);
        self
    }

    /// Reads the `x-audit-actor-*` headers and removes them from `headers`.
    ///
    /// Values are escaped and cut to 256 characters; a type or context that names no known
    /// variant is ignored.
    pub(crate) fn take_from_headers(headers: &mut HeaderMap) -> Option<Self> {
        // Fast path: almost every response carries no actor header.
        if !headers
            .keys()
            .any(|name| name.as_str().starts_with(headers::PREFIX))
        {
            return None;
        }
        let mut take = |name: &'static str| -> Option<String> {
            // Only the first value counts; all are removed.
            let value = headers.remove(name)?;
            Some(
                escape::visible(value.as_bytes())
                    .chars()
                    .take(MAX_HEADER_VALUE)
                    .collect(),
            )
        };
        let identity = Self {
            id: take(headers::ID),
            email: take(headers::EMAIL),
            kind: take(headers::TYPE).and_then(|v| v.parse().ok()),
            context: take(headers::CONTEXT).and_then(|v| v.parse().ok()),
            token_id: take(headers::TOKEN_ID),
            token_name: take(headers::TOKEN_NAME),
            account_id: take(headers::ACCOUNT_ID),
            resource_id: None,
        };
        // Anything else under the prefix is stripped too: it was meant for the layer alone.
        let rest: Vec<_> = headers
            .keys()
            .filter(|name| name.as_str().starts_with(headers::PREFIX))
            .cloned()
            .collect();
        for name in rest {
            headers.remove(name);
        }
        Some(identity)
    }
}

/// A handle to the audit record of the request being served, found in the request's
/// extensions.
///
/// Cloning is cheap; all clones refer to the same record. Handlers and middleware take it as
/// an extractor, `audit: AuditHandle` (feature `axum`, see [`extract`](crate::extract)), or
/// with `Extension<AuditHandle>`, and call [`identify`](Self::identify) to say who acted,
/// [`before`](Self::before) and [`after`](Self::after) to say what changed, and
/// [`context`](Self::context) for the request's actor and ray id, which
/// [events](crate::event) it causes carry (also in the tasks it spawns, see
/// [`InAuditContext`](crate::context::InAuditContext)).
///
/// What it is told goes into the record when the response ends; a handle kept longer (in a
/// spawned task) still answers [`ray_id`](Self::ray_id), but tells the record nothing more.
#[derive(Clone, Debug, Default)]
pub struct AuditHandle {
    told: Arc<Mutex<Told>>,
}

/// What the app told the handle, and the request's ray id.
#[derive(Debug, Default)]
struct Told {
    /// The request's trace id (`raw.cf_ray_id`); empty for a handle made outside the layer.
    ray_id: String,
    identity: Option<Identity>,
    change: Option<Change>,
}

/// What a request's record takes from its handle when it is finished.
pub(crate) struct Finished {
    pub(crate) ray_id: String,
    pub(crate) identity: Option<Identity>,
    pub(crate) change: Option<Change>,
}

impl AuditHandle {
    /// The handle of a request whose trace id is `ray_id`.
    pub(crate) fn for_request(ray_id: String) -> Self {
        Self {
            told: Arc::new(Mutex::new(Told {
                ray_id,
                ..Told::default()
            })),
        }
    }

    fn told(&self) -> std::sync::MutexGuard<'_, Told> {
        self.told.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Records who acted. A later call replaces the fields it sets and keeps the others.
    ///
    /// ```
    /// use audit_layer::{AuditHandle, Identity};
    ///
    /// let handle = AuditHandle::default();
    /// handle.identify(Identity::anonymous().account("acc_demo"));
    /// handle.identify(Identity::user("usr_1"));
    /// let identity = handle.identity().unwrap();
    /// assert_eq!(identity.id.as_deref(), Some("usr_1"));
    /// assert_eq!(identity.account_id.as_deref(), Some("acc_demo"));
    /// ```
    pub fn identify(&self, identity: Identity) {
        let mut told = self.told();
        told.identity = Some(match told.identity.take() {
            Some(previous) => identity.or(previous),
            None => identity,
        });
    }

    /// What has been recorded about the actor so far.
    pub fn identity(&self) -> Option<Identity> {
        self.told().identity.clone()
    }

    /// The request's trace id, as its record's `raw.cf_ray_id` and the response's request-id
    /// header say it; `None` for a handle made outside the layer.
    ///
    /// ```
    /// use audit_layer::AuditHandle;
    ///
    /// assert_eq!(AuditHandle::default().ray_id(), None);
    /// ```
    pub fn ray_id(&self) -> Option<String> {
        let told = self.told();
        (!told.ray_id.is_empty()).then(|| told.ray_id.clone())
    }

    /// The identity from the handle, completed by the one from response headers; the ray id
    /// and what changed. The ray id is moved out when no other clone of the handle is left.
    pub(crate) fn finish(&self, from_headers: Option<Identity>) -> Finished {
        let shared = Arc::strong_count(&self.told) > 1;
        let mut told = self.told();
        let identity = match (told.identity.take(), from_headers) {
            (Some(a), Some(b)) => Some(a.or(b)),
            (a, b) => a.or(b),
        };
        Finished {
            ray_id: if shared {
                told.ray_id.clone()
            } else {
                std::mem::take(&mut told.ray_id)
            },
            identity,
            change: told.change.take(),
        }
    }
}

#[cfg(feature = "utoipa")]
#[cfg_attr(docsrs, doc(cfg(feature = "utoipa")))]
impl AuditHandle {
    /// Records the resource's value before the request changed it: the record's
    /// `change.before`, reduced at once to the fields `T`'s schema marks `x-auditable` (see
    /// [`auditable`](crate::auditable)); the value itself is not kept. A later call replaces it.
    ///
    /// ```
    /// use audit_layer::AuditHandle;
    /// use serde::Serialize;
    /// use utoipa::ToSchema;
    ///
    /// #[derive(Serialize, ToSchema)]
    /// struct DnsRecord {
    ///     #[schema(extensions(("x-auditable" = json!(true))))]
    ///     content: String,
    ///     /// Free text: not marked, never recorded.
    ///     comment: String,
    /// }
    ///
    /// let audit = AuditHandle::default();
    /// audit.before(&DnsRecord { content: "192.0.2.1".into(), comment: "secret".into() });
    /// audit.after(&DnsRecord { content: "192.0.2.2".into(), comment: "secret".into() });
    /// ```
    pub fn before<T: serde::Serialize + utoipa::ToSchema + 'static>(&self, value: &T) {
        let body = crate::auditable::redact(value);
        self.told()
            .change
            .get_or_insert_with(Change::default)
            .before = Some(body);
    }

    /// Records the resource's value after the request changed it: the record's
    /// `change.after`; see [`before`](Self::before).
    pub fn after<T: serde::Serialize + utoipa::ToSchema + 'static>(&self, value: &T) {
        let body = crate::auditable::redact(value);
        self.told().change.get_or_insert_with(Change::default).after = Some(body);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    #[test]
    fn actor_headers_are_read_and_stripped() {
        let mut headers = HeaderMap::new();
        headers.insert("content-type", HeaderValue::from_static("application/json"));
        headers.insert(headers::ID, HeaderValue::from_static("usr_1"));
        headers.insert(headers::EMAIL, HeaderValue::from_static("a@example.com"));
        headers.insert(headers::TYPE, HeaderValue::from_static("user"));
        headers.insert(headers::CONTEXT, HeaderValue::from_static("dash"));
        headers.insert("x-audit-actor-future-field", HeaderValue::from_static("x"));
        let identity = Identity::take_from_headers(&mut headers).unwrap();
        assert_eq!(identity.id.as_deref(), Some("usr_1"));
        assert_eq!(identity.kind, Some(ActorType::User));
        assert_eq!(identity.context, Some(ActorContext::Dash));
        assert_eq!(headers.len(), 1, "{headers:?}");
        assert!(headers.contains_key("content-type"));
    }

    #[test]
    fn header_values_are_escaped_bounded_and_validated() {
        let mut headers = HeaderMap::new();
        let long = "x".repeat(1000);
        headers.insert(headers::ID, HeaderValue::from_str(&long).unwrap());
        headers.insert(
            headers::EMAIL,
            HeaderValue::from_bytes(b"a\xff\tb@x").unwrap(),
        );
        headers.insert(headers::TYPE, HeaderValue::from_static("root"));
        let identity = Identity::take_from_headers(&mut headers).unwrap();
        assert_eq!(identity.id.unwrap().len(), MAX_HEADER_VALUE);
        assert_eq!(identity.email.as_deref(), Some(r"a\xff\x09b@x"));
        assert_eq!(identity.kind, None);
        assert!(headers.is_empty());
    }

    #[test]
    fn the_handle_wins_field_by_field() {
        let handle = AuditHandle::default();
        handle.identify(Identity::user("from-handle"));
        let from_headers = Identity::user("from-header").email("h@example.com");
        let identity = handle.finish(Some(from_headers)).identity.unwrap();
        assert_eq!(identity.id.as_deref(), Some("from-handle"));
        assert_eq!(identity.email.as_deref(), Some("h@example.com"));
    }
}
