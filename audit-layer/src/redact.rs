//! Redaction: what of a body and a query string may enter a record.
//!
//! Default deny. A body is reduced by its operation's [`RedactionPlan`], compiled once from the
//! API description; a query value is kept only if its parameter is listed in the operation's
//! [`QueryPlan`], and otherwise replaced by `REDACTED`.

use std::borrow::Cow;
use std::fmt::Write;
use std::sync::Arc;

use percent_encoding::percent_decode_str;
use serde_json::{Map, Value};

use crate::escape;

/// The text that replaces a query value that is not auditable.
pub const REDACTED: &str = "REDACTED";

/// Query parameter names longer than this, or with characters outside `[A-Za-z0-9_.\-\[\]]`,
/// are replaced too: a "name" like that is more likely a pasted secret than a parameter.
const MAX_PLAIN_QUERY_NAME: usize = 32;

/// How to reduce a body to what may be recorded.
///
/// The default plan keeps nothing: a body becomes `{}`, which says that a body was sent and
/// nothing of it was auditable.
#[derive(Clone, Debug, Default)]
pub struct RedactionPlan {
    _keep_nothing: (),
}

impl RedactionPlan {
    /// A plan that keeps nothing of the body.
    pub fn keep_nothing() -> Self {
        Self::default()
    }

    /// The body as it may be recorded; `None` for an empty body.
    pub(crate) fn redact(&self, body: &[u8]) -> Option<Value> {
        if body.is_empty() {
            return None;
        }
        Some(Value::Object(Map::new()))
    }
}

/// Which query parameters of an operation keep their values in `raw.uri`.
///
/// ```
/// use audit_layer::redact::QueryPlan;
///
/// let plan = QueryPlan::new(["page", "per_page"]);
/// assert!(plan.is_auditable("page"));
/// assert!(!plan.is_auditable("api_key"));
/// ```
#[derive(Clone, Debug, Default)]
pub struct QueryPlan {
    auditable: Arc<[Box<str>]>,
}

impl QueryPlan {
    /// A plan that keeps the values of the named parameters.
    pub fn new<I, S>(auditable: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<Box<str>>,
    {
        Self {
            auditable: auditable.into_iter().map(Into::into).collect(),
        }
    }

    /// Whether the value of parameter `name` may be recorded.
    pub fn is_auditable(&self, name: &str) -> bool {
        self.auditable.iter().any(|n| **n == *name)
    }

    /// `path?query` as it may be recorded: query values redacted unless auditable, control
    /// characters and invalid UTF-8 escaped.
    pub(crate) fn redact_uri(&self, uri: &http::Uri) -> String {
        let path = escape::visible(uri.path().as_bytes());
        let Some(query) = uri.query() else {
            return path.into_owned();
        };
        let mut out = String::with_capacity(path.len() + query.len() + 16);
        out.push_str(&path);
        out.push('?');
        for (i, pair) in query.split('&').enumerate() {
            if i > 0 {
                out.push('&');
            }
            let (raw_name, value) = match pair.split_once('=') {
                Some((name, value)) => (name, Some(value)),
                None => (pair, None),
            };
            let name: Cow<'_, str> = percent_decode_str(raw_name).decode_utf8_lossy();
            if !is_plain_name(&name) {
                out.push_str(REDACTED);
                if value.is_some() {
                    let _ = write!(out, "={REDACTED}");
                }
                continue;
            }
            out.push_str(raw_name);
            match value {
                Some(value) if self.is_auditable(&name) => {
                    out.push('=');
                    out.push_str(&escape::visible(value.as_bytes()));
                }
                Some(_) => {
                    let _ = write!(out, "={REDACTED}");
                }
                None => {}
            }
        }
        out
    }
}

fn is_plain_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_PLAIN_QUERY_NAME
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.' | b'[' | b']'))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn redact(plan: &QueryPlan, uri: &str) -> String {
        plan.redact_uri(&uri.parse().unwrap())
    }

    #[test]
    fn only_auditable_query_values_are_kept() {
        let plan = QueryPlan::new(["page"]);
        assert_eq!(redact(&plan, "/zones?page=2&token=s3cret&flag"), "/zones?page=2&token=REDACTED&flag");
        assert_eq!(redact(&plan, "/zones"), "/zones");
        assert_eq!(redact(&QueryPlan::default(), "/z?page=2"), "/z?page=REDACTED");
    }

    #[test]
    fn names_that_look_like_secrets_are_redacted_too() {
        let plan = QueryPlan::new(["page"]);
        let secret = "sk_live_51HqLyjWDarjtT1zdp7dcXYZabcdefgh";
        assert_eq!(redact(&plan, &format!("/a?{secret}")), "/a?REDACTED");
        assert_eq!(redact(&plan, "/a?we%20ird=1&=x"), "/a?REDACTED=REDACTED&REDACTED=REDACTED");
        assert_eq!(redact(&plan, "/a?filter[name]=x"), "/a?filter[name]=REDACTED");
    }

    #[test]
    fn auditable_values_are_escaped() {
        let plan = QueryPlan::new(["q"]);
        let uri = http::Uri::from_maybe_shared(bytes::Bytes::from_static(b"/a%1b?q=%1b[31m")).unwrap();
        assert_eq!(plan.redact_uri(&uri), "/a%1b?q=%1b[31m");
    }

    #[test]
    fn the_default_body_plan_keeps_nothing() {
        let plan = RedactionPlan::keep_nothing();
        assert_eq!(plan.redact(br#"{"password":"hunter2"}"#), Some(Value::Object(Map::new())));
        assert_eq!(plan.redact(b""), None);
    }
}
