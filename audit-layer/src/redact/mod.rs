//! Redaction: what of a body and a query string may enter a record.
//!
//! Default deny. A body is reduced by its operation's [`RedactionPlan`], compiled once from the
//! API description: a value reaches the record only if the schema marks it `x-auditable: true`
//! (see the crate's `spec` module for the rules). A query value is kept only if its parameter is
//! listed in the operation's [`QueryPlan`], and is otherwise replaced by `REDACTED`.
//!
//! Bodies that are not what the schema says — not JSON, invalid JSON, trailing bytes, duplicate
//! keys, nesting deeper than 100 levels, numbers beyond `f64`, a content type the operation does
//! not describe — are replaced by a marker, `{"_unparsed": "<reason>"}`, that quotes none of the
//! body. The request itself is served normally.

mod json;
mod plan;

use std::borrow::Cow;
use std::fmt::Write;
use std::sync::Arc;

use http::HeaderValue;
use percent_encoding::percent_decode_str;
use serde_json::value::RawValue;

use crate::escape;
pub use json::Unparsed;
pub(crate) use plan::{DROP, KEEP, Node, NodeId, PlanArena, TypeMask, types};

/// The text that replaces a query value that is not auditable.
pub const REDACTED: &str = "REDACTED";

/// Query parameter names longer than this, or with characters outside `[A-Za-z0-9_.\-\[\]]`,
/// are replaced too: a "name" like that is more likely a pasted secret than a parameter.
const MAX_PLAIN_QUERY_NAME: usize = 32;

/// How to reduce one JSON body to what may be recorded: a compiled tree of keep/drop
/// decisions, shared by all operations of a policy.
///
/// The default plan keeps nothing: an object body becomes `{}`, which says that a body was
/// sent and nothing of it was auditable.
///
/// ```
/// use audit_layer::redact::RedactionPlan;
///
/// let plan = RedactionPlan::keep_nothing();
/// assert_eq!(plan.redact_json(br#"{"password": "hunter2"}"#).unwrap(), "{}");
/// assert_eq!(
///     plan.redact_json(br#"{"a": 1} trailing"#).unwrap_err().to_string(),
///     "trailing characters after the JSON value at byte 9"
/// );
/// ```
#[derive(Clone, Debug)]
pub struct RedactionPlan {
    arena: Arc<PlanArena>,
    root: NodeId,
}

#[cfg(test)]
impl RedactionPlan {
    /// Whether `other` is this very plan (a clone of it), not one compiled again.
    pub(crate) fn is_same_plan(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.arena, &other.arena) && self.root == other.root
    }
}

impl Default for RedactionPlan {
    fn default() -> Self {
        Self::keep_nothing()
    }
}

impl RedactionPlan {
    /// A plan that keeps nothing of the body.
    pub fn keep_nothing() -> Self {
        Self::keep_nothing_in(Arc::new(PlanArena::default()))
    }

    pub(crate) fn keep_nothing_in(arena: Arc<PlanArena>) -> Self {
        Self { arena, root: DROP }
    }

    pub(crate) fn new(arena: Arc<PlanArena>, root: NodeId) -> Self {
        Self { arena, root }
    }

    /// Redacts a JSON body: the kept values, as JSON text in the body's own spelling, or why
    /// the body could not be read (a reason that quotes none of it).
    ///
    /// # Errors
    ///
    /// When `body` is not exactly one valid JSON object or array (see the [module docs](self)).
    pub fn redact_json(&self, body: &[u8]) -> Result<String, Unparsed> {
        json::redact(&self.arena, self.root, body)
    }
}

/// The request (or response) body plans of one operation, by media type.
#[derive(Clone, Debug, Default)]
pub(crate) struct ContentPlans {
    entries: Box<[(Box<str>, Option<RedactionPlan>)]>,
    /// For each entry, whether its media type has no uppercase letter: then a content type
    /// spelled exactly like it matches without lowercasing.
    lowercase: Box<[bool]>,
    /// For each entry, whether its media type is lowercase and its own [`essence`]: then a
    /// whole `Content-Type` value spelled exactly like it selects it (or an earlier entry
    /// spelled the same), without reading the value for parameters and whitespace first.
    exact: Box<[bool]>,
}

/// What a record says about a body.
pub(crate) type RecordedBody = RedactedBody;

/// A body as a record holds it: the kept fields, or a marker, as JSON text.
///
/// The text is valid JSON by construction (the redactor's output, or a marker it built), so it
/// is not validated again on the request path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RedactedBody(String);

impl RedactedBody {
    /// The JSON text.
    pub fn get(&self) -> &str {
        &self.0
    }

    /// The text as a [`RawValue`], checked.
    pub fn into_raw_value(self) -> Option<Box<RawValue>> {
        RawValue::from_string(self.0).ok()
    }
}

impl std::fmt::Display for RedactedBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl ContentPlans {
    /// Plans for the given media types; `None` marks a described media type whose bodies are
    /// not JSON and so are not recorded.
    pub(crate) fn new(entries: Vec<(Box<str>, Option<RedactionPlan>)>) -> Self {
        let lowercase = entries
            .iter()
            .map(|(media, _)| !media.bytes().any(|b| b.is_ascii_uppercase()))
            .collect::<Box<[bool]>>();
        let exact = entries
            .iter()
            .zip(&lowercase)
            .map(|((media, _), &lowercase)| {
                lowercase && essence(media.as_bytes()) == Some(&**media)
            })
            .collect();
        Self {
            entries: entries.into(),
            lowercase,
            exact,
        }
    }

    /// One plan for every JSON body.
    #[cfg(test)]
    pub(crate) fn json(plan: RedactionPlan) -> Self {
        Self::new(vec![("application/json".into(), Some(plan))])
    }

    /// The body as a record holds it: `None` for an empty body, the redacted JSON, or a marker.
    pub(crate) fn redact(
        &self,
        content_type: Option<&HeaderValue>,
        body: &[u8],
    ) -> Option<RecordedBody> {
        self.redact_typed(content_type.map(HeaderValue::as_bytes), body)
    }

    /// [`redact`](Self::redact) with the `Content-Type` value as bytes (a value that is not
    /// visible ASCII counts as none, as [`HeaderValue::to_str`] has it).
    pub(crate) fn redact_typed(
        &self,
        content_type: Option<&[u8]>,
        body: &[u8],
    ) -> Option<RecordedBody> {
        if body.is_empty() {
            return None;
        }
        if self.entries.is_empty() {
            // Nothing described: whatever the body is, nothing of it is kept.
            static KEEP_NOTHING: std::sync::OnceLock<RedactionPlan> = std::sync::OnceLock::new();
            let plan = KEEP_NOTHING.get_or_init(RedactionPlan::keep_nothing);
            return Some(match plan.redact_json(body) {
                Ok(kept) => raw(kept),
                Err(e) => marker("_unparsed", &e.to_string()),
            });
        }
        Some(match self.choose(content_type) {
            Choice::Plan(plan) => Self::redact_by(plan, body),
            Choice::NoContentType => marker("_unparsed", "the body has no content type"),
            Choice::NotDescribed => marker(
                "_unparsed",
                "the content type is not described for this operation",
            ),
        })
    }

    /// Whether a body of `content_type` is one whose bodies are not recorded (a described
    /// media type that is not JSON: an upload): its record says so without reading it.
    pub(crate) fn skips(&self, content_type: Option<&HeaderValue>) -> bool {
        matches!(
            self.choose(content_type.map(HeaderValue::as_bytes)),
            Choice::Plan(None)
        )
    }

    /// The plan a body of `content_type` is redacted by, or why there is none.
    #[inline]
    fn choose(&self, content_type: Option<&[u8]>) -> Choice<'_> {
        // The common case: the value is exactly a described media type. The slow path below
        // would pick the same entry: the value is then its own essence, all lowercase, so the
        // first entry it matches there is the first spelled like it.
        if let Some(content_type) = content_type
            && let Some(((_, plan), _)) = self
                .entries
                .iter()
                .zip(&self.exact)
                .find(|((media, _), exact)| **exact && media.as_bytes() == content_type)
        {
            return Choice::Plan(plan.as_ref());
        }
        // Compared as if lowercased, without building the lowercase text.
        let Some(essence) = content_type.and_then(essence) else {
            return Choice::NoContentType;
        };
        let entry = self
            .entries
            .iter()
            .zip(&self.lowercase)
            .find(|((media, _), lowercase)| {
                // Spelled exactly like a lowercase media type: the common case, one compare.
                **lowercase && **media == *essence || is_lowercase_of(media, essence)
            })
            .map(|(entry, _)| entry)
            .or_else(|| {
                is_json_ignoring_case(essence)
                    .then(|| self.entries.iter().find(|(media, _)| is_json(media)))
                    .flatten()
            })
            .or_else(|| self.entries.iter().find(|(media, _)| &**media == "*/*"));
        match entry {
            None => Choice::NotDescribed,
            Some((_, plan)) => Choice::Plan(plan.as_ref()),
        }
    }

    /// The body by the plan of its media type (`None` for one whose bodies are not recorded).
    #[inline]
    fn redact_by(plan: Option<&RedactionPlan>, body: &[u8]) -> RecordedBody {
        match plan {
            None => not_recorded(),
            Some(plan) => match plan.redact_json(body) {
                Ok(kept) => raw(kept),
                Err(e) => marker("_unparsed", &e.to_string()),
            },
        }
    }
}

/// What [`ContentPlans`] picks for a body.
enum Choice<'a> {
    /// The plan of the body's media type (`None`: described, not recorded).
    Plan(Option<&'a RedactionPlan>),
    /// The body has no (readable) content type.
    NoContentType,
    /// Its content type is not one the operation describes.
    NotDescribed,
}

/// The marker of a body whose media type is described but not JSON.
pub(crate) fn not_recorded() -> RecordedBody {
    marker("_unparsed", "bodies of this content type are not recorded")
}

/// The media type of a `Content-Type` value: the text before any parameters, trimmed; `None`
/// if that is empty or the value is not visible ASCII (as [`HeaderValue::to_str`] requires).
fn essence(value: &[u8]) -> Option<&str> {
    if !value
        .iter()
        .all(|&b| b == b'\t' || (b' '..=b'~').contains(&b))
    {
        return None;
    }
    let text = std::str::from_utf8(value).ok()?;
    let end = text.bytes().position(|b| b == b';').unwrap_or(text.len());
    // Visible ASCII: the only whitespace left to trim is spaces and tabs.
    let essence = text[..end].trim_ascii();
    (!essence.is_empty()).then_some(essence)
}

fn is_json(media: &str) -> bool {
    media == "application/json" || media.ends_with("+json")
}

/// [`is_json`] of `media` lowercased.
fn is_json_ignoring_case(media: &str) -> bool {
    media.eq_ignore_ascii_case("application/json")
        || media
            .len()
            .checked_sub(5)
            .and_then(|at| media.get(at..))
            .is_some_and(|tail| tail.eq_ignore_ascii_case("+json"))
}

/// Whether `lower` is `text` with its ASCII letters lowercased.
fn is_lowercase_of(lower: &str, text: &str) -> bool {
    lower.len() == text.len()
        && lower
            .bytes()
            .zip(text.bytes())
            .all(|(l, t)| l == t.to_ascii_lowercase())
}

fn raw(json: String) -> RecordedBody {
    RedactedBody(json)
}

/// `{"<key>": "<reason>"}`, the marker that replaces a body.
pub(crate) fn marker(key: &str, reason: &str) -> RecordedBody {
    RedactedBody(serde_json::json!({ key: reason }).to_string())
}

/// Response body plans of one operation, by status.
#[derive(Clone, Debug, Default)]
pub(crate) struct ResponsePlans {
    /// `(status pattern, plans)`: an exact status (`200`), a class (`2XX`), or `default`.
    entries: Box<[(StatusPattern, ContentPlans)]>,
}

/// Which statuses a response description covers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum StatusPattern {
    Exact(u16),
    Class(u16),
    Default,
}

impl StatusPattern {
    /// Parses an OpenAPI responses key: `200`, `2XX`, `default`.
    pub(crate) fn parse(key: &str) -> Option<Self> {
        if key == "default" {
            return Some(Self::Default);
        }
        if let Ok(code) = key.parse::<u16>() {
            return (100..600).contains(&code).then_some(Self::Exact(code));
        }
        let bytes = key.as_bytes();
        match bytes {
            [d @ b'1'..=b'5', x, y]
                if x.eq_ignore_ascii_case(&b'X') && y.eq_ignore_ascii_case(&b'X') =>
            {
                Some(Self::Class(u16::from(d - b'0')))
            }
            _ => None,
        }
    }
}

impl ResponsePlans {
    pub(crate) fn new(entries: Vec<(StatusPattern, ContentPlans)>) -> Self {
        Self {
            entries: entries.into(),
        }
    }

    /// The plans for a status: exact, then class, then `default`.
    pub(crate) fn for_status(&self, status: u16) -> Option<&ContentPlans> {
        let find = |wanted: StatusPattern| {
            self.entries
                .iter()
                .find(|(p, _)| *p == wanted)
                .map(|(_, c)| c)
        };
        find(StatusPattern::Exact(status))
            .or_else(|| find(StatusPattern::Class(status / 100)))
            .or_else(|| find(StatusPattern::Default))
    }

    pub(crate) fn redact(
        &self,
        status: u16,
        content_type: Option<&HeaderValue>,
        body: &[u8],
    ) -> Option<RecordedBody> {
        self.redact_typed(status, content_type.map(HeaderValue::as_bytes), body)
    }

    /// [`redact`](Self::redact) with the `Content-Type` value as bytes.
    pub(crate) fn redact_typed(
        &self,
        status: u16,
        content_type: Option<&[u8]>,
        body: &[u8],
    ) -> Option<RecordedBody> {
        if body.is_empty() {
            return None;
        }
        match self.for_status(status) {
            Some(plans) => plans.redact_typed(content_type, body),
            None if self.entries.is_empty() => {
                ContentPlans::default().redact_typed(content_type, body)
            }
            None => Some(marker(
                "_unparsed",
                "the response status is not described for this operation",
            )),
        }
    }
}

/// Which query parameters of an operation `raw.uri` names, and which keep their values.
///
/// A parameter the operation does not declare is recorded as `REDACTED` (name and value): a
/// client can put anything in a name, a token or a password too. A declared parameter keeps
/// its name; its value is `REDACTED` unless the parameter is auditable. An auditable parameter
/// is declared.
///
/// ```
/// use audit_layer::redact::QueryPlan;
///
/// let plan = QueryPlan::new(["page", "per_page"]).declare(["sort"]);
/// assert!(plan.is_auditable("page") && plan.is_declared("page"));
/// assert!(plan.is_declared("sort") && !plan.is_auditable("sort"));
/// assert!(!plan.is_declared("api_key"));
/// ```
#[derive(Clone, Debug, Default)]
pub struct QueryPlan {
    auditable: Arc<[Box<str>]>,
    /// Declared and not auditable.
    declared: Arc<[Box<str>]>,
}

impl QueryPlan {
    /// A plan that keeps the values of the named parameters (which it declares), and declares
    /// no other.
    pub fn new<I, S>(auditable: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<Box<str>>,
    {
        Self {
            auditable: auditable.into_iter().map(Into::into).collect(),
            declared: Arc::from([]),
        }
    }

    /// Declares the named parameters too: `raw.uri` keeps their names, with their values
    /// `REDACTED` (unless they are auditable).
    pub fn declare<I, S>(mut self, names: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<Box<str>>,
    {
        let mut declared: Vec<Box<str>> = self.declared.iter().cloned().collect();
        declared.extend(names.into_iter().map(Into::into));
        self.declared = declared.into();
        self
    }

    /// Whether the value of parameter `name` may be recorded.
    pub fn is_auditable(&self, name: &str) -> bool {
        self.auditable.iter().any(|n| **n == *name)
    }

    /// Whether parameter `name` is declared, so that its name may be recorded: an auditable
    /// parameter, or one named by [`declare`](Self::declare). `name[]` (the array form) is
    /// declared with `name`.
    pub fn is_declared(&self, name: &str) -> bool {
        let name = name.strip_suffix("[]").unwrap_or(name);
        self.is_auditable(name) || self.declared.iter().any(|n| **n == *name)
    }

    /// `path?query` as it may be recorded: the path as routed (see [`routed_path`]), query
    /// parameters the operation does not declare redacted whole, values redacted unless
    /// auditable, hidden characters and invalid UTF-8 escaped.
    pub(crate) fn redact_uri(&self, uri: &http::Uri) -> String {
        let path = routed_path(uri.path());
        let path = escape::visible(path.as_bytes());
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
            if pair.is_empty() {
                // `?` alone, or `a=1&&b=2`: nothing was sent, so nothing is redacted.
                continue;
            }
            let (raw_name, value) = match pair.split_once('=') {
                Some((name, value)) => (name, Some(value)),
                None => (pair, None),
            };
            let name: Cow<'_, str> = percent_decode_str(raw_name).decode_utf8_lossy();
            if !is_plain_name(&name) || !self.is_declared(&name) {
                out.push_str(REDACTED);
                if value.is_some() {
                    let _ = write!(out, "={REDACTED}");
                }
                continue;
            }
            // Decoded: a declared name, plain ASCII.
            out.push_str(&name);
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

/// `path` as the router matched it: the percent-escapes of unreserved characters (RFC 3986:
/// `A-Z a-z 0-9 - . _ ~`) decoded, for they name the same resource either way
/// (`/accounts/acc%5Fdemo` is `/accounts/acc_demo`); every other escape kept as written, so
/// that `%2F` stays apart from a `/` that separates segments.
///
/// ```
/// # use audit_layer::redact::routed_path;
/// assert_eq!(routed_path("/accounts/acc%5Fdemo/%7Ehome"), "/accounts/acc_demo/~home");
/// assert_eq!(routed_path("/files/a%2Fb%20c%zz%4"), "/files/a%2Fb%20c%zz%4");
/// ```
pub fn routed_path(path: &str) -> Cow<'_, str> {
    // Most paths hold no escape, known by a fold without an early exit, which compiles to
    // SIMD: `str::find` alone cost the layer bench's GET ~270 instructions a request
    // (callgrind, `cargo bench -p audit-layer --bench layer`, BENCHMARKS.md).
    if !path.bytes().fold(false, |any, b| any | (b == b'%')) {
        return Cow::Borrowed(path);
    }
    let Some(first) = path.find('%') else {
        return Cow::Borrowed(path);
    };
    let bytes = path.as_bytes();
    let mut out = String::with_capacity(path.len());
    // `path[copied..at]` is still to be written as it is.
    let mut copied = 0;
    let mut at = first;
    while let Some(offset) = path[at..].find('%') {
        at += offset;
        let decoded = bytes
            .get(at + 1..at + 3)
            .and_then(|hex| std::str::from_utf8(hex).ok())
            .and_then(|hex| u8::from_str_radix(hex, 16).ok())
            .filter(|&b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~'));
        match decoded {
            Some(b) => {
                out.push_str(&path[copied..at]);
                out.push(char::from(b));
                at += 3;
                copied = at;
            }
            None => at += 1,
        }
    }
    out.push_str(&path[copied..]);
    Cow::Owned(out)
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
        let plan = QueryPlan::new(["page"]).declare(["token", "flag"]);
        assert_eq!(
            redact(&plan, "/zones?page=2&token=s3cret&flag"),
            "/zones?page=2&token=REDACTED&flag"
        );
        assert_eq!(redact(&plan, "/zones"), "/zones");
        assert_eq!(redact(&plan, "/login?"), "/login?");
        assert_eq!(
            redact(&plan, "/zones?page=1&&token=x"),
            "/zones?page=1&&token=REDACTED"
        );
        assert_eq!(
            redact(&QueryPlan::default().declare(["page"]), "/z?page=2"),
            "/z?page=REDACTED"
        );
    }

    #[test]
    fn undeclared_names_are_redacted_with_their_values() {
        let plan = QueryPlan::new(["page"]).declare(["filter", "ids"]);
        assert_eq!(
            redact(&plan, "/login?pw-secret-1&page=2&token[tok_5ecret9]=1"),
            "/login?REDACTED&page=2&REDACTED=REDACTED"
        );
        assert_eq!(
            redact(&QueryPlan::default(), "/z?page=2&x"),
            "/z?REDACTED=REDACTED&REDACTED"
        );
        // Declared names are matched decoded, and written so.
        assert_eq!(
            redact(&plan, "/a?pa%67e=3&ids[]=1"),
            "/a?page=3&ids[]=REDACTED"
        );
        assert_eq!(redact(&plan, "/a?filter[name]=x"), "/a?REDACTED=REDACTED");
    }

    #[test]
    fn names_that_look_like_secrets_are_redacted_even_if_declared() {
        let secret = "sk_live_51HqLyjWDarjtT1zdp7dcXYZabcdefgh";
        let plan = QueryPlan::new(["page"]).declare([secret, "we ird", ""]);
        assert_eq!(redact(&plan, &format!("/a?{secret}")), "/a?REDACTED");
        assert_eq!(
            redact(&plan, "/a?we%20ird=1&=x"),
            "/a?REDACTED=REDACTED&REDACTED=REDACTED"
        );
    }

    #[test]
    fn auditable_values_are_escaped() {
        let plan = QueryPlan::new(["q"]);
        let uri =
            http::Uri::from_maybe_shared(bytes::Bytes::from_static(b"/a%1b?q=%1b[31m")).unwrap();
        assert_eq!(plan.redact_uri(&uri), "/a%1b?q=%1b[31m");
    }

    #[test]
    fn the_path_is_recorded_as_routed() {
        let plan = QueryPlan::new(["page"]);
        assert_eq!(
            redact(&plan, "/accounts/acc%5Fdemo/alerting/v3/p%6flicies?page=1"),
            "/accounts/acc_demo/alerting/v3/policies?page=1"
        );
        // Reserved and other characters stay escaped; malformed escapes stay as written.
        for kept in [
            "/a%2Fb", "/a%3f", "/%25", "/%", "/a%4", "/a%g1", "/%C3%A9", "/%00",
        ] {
            assert_eq!(redact(&plan, kept), kept);
        }
        assert_eq!(routed_path("%41%2d%2E%5f%7e%30"), "A-._~0");
        assert_eq!(routed_path("%%41"), "%A");
        assert!(matches!(routed_path("/plain/path"), Cow::Borrowed(_)));
    }

    fn json_type() -> HeaderValue {
        HeaderValue::from_static("application/json; charset=utf-8")
    }

    #[test]
    fn the_default_plans_keep_nothing() {
        let plans = ContentPlans::default();
        let kept = plans
            .redact(Some(&json_type()), br#"{"password":"hunter2"}"#)
            .unwrap();
        assert_eq!(kept.get(), "{}");
        assert!(plans.redact(Some(&json_type()), b"").is_none());
    }

    #[test]
    fn bodies_are_chosen_by_content_type() {
        let plans = ContentPlans::new(vec![
            (
                "application/json".into(),
                Some(RedactionPlan::keep_nothing()),
            ),
            ("multipart/form-data".into(), None),
        ]);
        let body = br#"{"a":1}"#;
        let redact = |ct: &'static str| {
            plans
                .redact(Some(&HeaderValue::from_static(ct)), body)
                .unwrap()
                .get()
                .to_owned()
        };
        assert_eq!(redact("application/json"), "{}");
        assert_eq!(redact("Application/JSON; charset=utf-8"), "{}");
        assert_eq!(redact("application/merge-patch+json"), "{}");
        assert_eq!(
            redact("multipart/form-data; boundary=x"),
            r#"{"_unparsed":"bodies of this content type are not recorded"}"#
        );
        assert_eq!(
            redact("text/plain"),
            r#"{"_unparsed":"the content type is not described for this operation"}"#
        );
        assert_eq!(
            plans.redact(None, body).unwrap().get(),
            r#"{"_unparsed":"the body has no content type"}"#
        );
        let bad = plans
            .redact(Some(&json_type()), b"{\"a\":1,\"a\":2}")
            .unwrap();
        assert_eq!(
            bad.get(),
            r#"{"_unparsed":"duplicate key in an object at byte 7"}"#
        );
    }

    #[test]
    fn content_types_match_by_their_lowercase_essence() {
        let plans = ContentPlans::new(vec![
            (
                "application/json".into(),
                Some(RedactionPlan::keep_nothing()),
            ),
            (
                "Application/Vnd.Upper+JSON".into(),
                Some(RedactionPlan::keep_nothing()),
            ),
        ]);
        let redact = |ct: &'static str| {
            plans
                .redact(Some(&HeaderValue::from_static(ct)), br#"{"a":1}"#)
                .unwrap()
                .get()
                .to_owned()
        };
        assert_eq!(redact("application/json"), "{}");
        assert_eq!(redact(" \tAPPLICATION/Json\t ; charset=utf-8"), "{}");
        assert_eq!(redact("application/json;"), "{}");
        // A described media type with capitals is only ever compared with a lowercased
        // content type, so no spelling matches it (a JSON one still finds the JSON plan).
        assert_eq!(redact("Application/Vnd.Upper+JSON"), "{}");
        let only_upper = ContentPlans::new(vec![(
            "Application/Vnd.Upper".into(),
            Some(RedactionPlan::keep_nothing()),
        )]);
        assert_eq!(
            only_upper
                .redact(
                    Some(&HeaderValue::from_static("Application/Vnd.Upper")),
                    b"{}"
                )
                .unwrap()
                .get(),
            r#"{"_unparsed":"the content type is not described for this operation"}"#
        );
        for empty in ["", " ", "; charset=utf-8", " \t;x"] {
            assert_eq!(
                redact(empty),
                r#"{"_unparsed":"the body has no content type"}"#,
                "{empty:?}"
            );
        }
        let not_visible = HeaderValue::from_bytes(b"application/json\xff").unwrap();
        assert_eq!(
            plans.redact(Some(&not_visible), b"{}").unwrap().get(),
            r#"{"_unparsed":"the body has no content type"}"#
        );
    }

    #[test]
    fn responses_are_chosen_by_status() {
        assert_eq!(StatusPattern::parse("2XX"), Some(StatusPattern::Class(2)));
        assert_eq!(StatusPattern::parse("4xx"), Some(StatusPattern::Class(4)));
        assert_eq!(StatusPattern::parse("600"), None);
        let mut arena = PlanArena::default();
        let ok = arena.object(vec![("id".into(), KEEP)], DROP);
        let arena = Arc::new(arena);
        let plans = ResponsePlans::new(vec![
            (
                StatusPattern::Exact(200),
                ContentPlans::json(RedactionPlan::new(arena.clone(), ok)),
            ),
            (
                StatusPattern::Class(4),
                ContentPlans::json(RedactionPlan::keep_nothing_in(arena)),
            ),
        ]);
        let body = br#"{"id":"p1","secret":"x"}"#;
        let ct = json_type();
        assert_eq!(
            plans.redact(200, Some(&ct), body).unwrap().get(),
            r#"{"id":"p1"}"#
        );
        assert_eq!(plans.redact(404, Some(&ct), body).unwrap().get(), "{}");
        assert_eq!(
            plans.redact(500, Some(&ct), body).unwrap().get(),
            r#"{"_unparsed":"the response status is not described for this operation"}"#
        );
    }
}
