//! The audit record: one JSON object per request or [event](crate::event), answering who,
//! what, when, where and how (and, when the app tells, what changed).
//!
//! The shape follows the sample record of the original automatic audit log system field for
//! field, and is described precisely by `schemas/audit-log.schema.json` (JSON Schema 2020-12).
//! Optional fields are omitted from the JSON when unknown, except `actor.token`, which is always
//! present (an empty object when the actor did not use a token), as in the original.
//!
//! Names follow the original's v2 API: `raw.cf_ray_id`, and the token both as the sample's
//! `actor.token` object and as the flat `actor.token_id` and `actor.token_name` the official
//! SDKs read. Records written before these names (`raw.ray_id`, no flat token fields) still
//! deserialize, so spooled records of an older version replay.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::Value;
use serde_json::value::RawValue;
use uuid::Uuid;

/// One audit record, as stored and as served by the query API.
///
/// ```
/// use audit_layer::record::{ActionResult, ActionType, AuditRecord};
///
/// let json = r#"{
///   "id": "01948c5e-9a2d-7b3c-8f00-0123456789ab",
///   "account": {"id": "acc_demo"},
///   "action": {"result": "success", "time": "2025-01-23T18:25:14.749Z", "type": "update"},
///   "actor": {"ip_address": "127.0.0.1", "token": {}},
///   "raw": {"method": "PUT", "cf_ray_id": "8f3a", "status_code": 200, "uri": "/accounts/acc_demo"},
///   "resource": {"scope": "accounts"}
/// }"#;
/// let record: AuditRecord = serde_json::from_str(json)?;
/// assert_eq!(record.action.kind, ActionType::Update);
/// assert_eq!(record.action.result, ActionResult::Success);
/// assert_eq!(record.action.time.to_string(), "2025-01-23T18:25:14.749Z");
/// # Ok::<(), serde_json::Error>(())
/// ```
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AuditRecord {
    /// Unique, time-ordered id (UUIDv7); the idempotency key for retried writes.
    pub id: Uuid,
    /// The account the action belongs to, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub account: Option<Account>,
    /// What was done, when, and whether it worked.
    pub action: Action,
    /// Who did it, from where, and how they were authenticated.
    pub actor: Actor,
    /// The raw HTTP exchange, for tracing a record back to one request.
    pub raw: Raw,
    /// What the action touched, with the redacted request and response bodies.
    pub resource: Resource,
    /// The zone the action belongs to, when the route has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub zone: Option<Zone>,
    /// What the action changed: the resource's value before and after it, redacted by the
    /// schema of its type, when the app told (see [`Change`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub change: Option<Change>,
    /// The distributed trace the request belongs to: from the request's W3C `traceparent`
    /// header, or the current OpenTelemetry span (feature `opentelemetry`). See
    /// [`correlation`](crate::correlation).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace: Option<Trace>,
    /// The name of the service that made the record
    /// ([`AuditLayer::service_name`](crate::AuditLayer::service_name)).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<Arc<str>>,
}

/// The default cap on each string a record holds (`raw.user_agent`, `raw.uri`, ids, what the
/// app or a header says of the actor): 8 KiB, its truncation marker included. See
/// [`AuditLayer::string_limit`](crate::AuditLayer::string_limit).
pub const DEFAULT_STRING_LIMIT: usize = 8 * 1024;

/// The default cap on one record's JSON text: 64 KiB. See
/// [`AuditLayer::record_limit`](crate::AuditLayer::record_limit).
pub const DEFAULT_RECORD_LIMIT: usize = 64 * 1024;

/// The smallest record limit: room for who, what and when with every string cut short.
pub const MIN_RECORD_LIMIT: usize = 4 * 1024;

/// The most characters of an id a record takes from a request path (an account, a zone, a
/// resource), after escaping; a longer one is cut there.
pub const MAX_PATH_ID_CHARS: usize = 256;

impl AuditRecord {
    /// Visits every free-text string the record holds, the strings the escaping and the caps
    /// apply to: account and zone ids and names, the actor's, the raw exchange's, the
    /// resource's id and labels, the service. Bodies and `change` (JSON the redactor wrote)
    /// are not visited. The one list both the layer's caps and the events' cleaning walk.
    pub(crate) fn visit_texts(
        &mut self,
        mut text: impl FnMut(&mut String),
        mut shared: impl FnMut(&mut Arc<str>),
    ) {
        let Self {
            account,
            action,
            actor,
            raw,
            resource,
            zone,
            service,
            ..
        } = self;
        for (id, name) in [
            account.as_mut().map(|a| (&mut a.id, &mut a.name)),
            zone.as_mut().map(|z| (&mut z.id, &mut z.name)),
        ]
        .into_iter()
        .flatten()
        {
            text(id);
            name.as_mut().map(&mut text);
        }
        text(&mut raw.cf_ray_id);
        for s in [
            &mut actor.email,
            &mut actor.id,
            &mut actor.token.id,
            &mut actor.token.name,
            &mut raw.user_agent,
            &mut raw.client_request_id,
            &mut raw.method,
            &mut raw.uri,
            &mut resource.id,
        ]
        .into_iter()
        .flatten()
        {
            text(s);
        }
        for s in [
            &mut action.description,
            &mut resource.product,
            &mut resource.scope,
            &mut resource.kind,
            service,
        ]
        .into_iter()
        .flatten()
        {
            shared(s);
        }
    }

    /// Field names, quotes, punctuation, the id, the time, the address and the enums: at most
    /// this many bytes of a record's JSON text are not its strings and bodies.
    const STRUCTURE: usize = 1024;

    /// About how many bytes the record takes when serialized: the lengths of its strings and
    /// bodies plus a fixed allowance for names and punctuation. Cheap (no serialization), and
    /// never below the true size by more than the escaping of its strings adds; for bounding
    /// queues and batches in bytes.
    ///
    /// ```
    /// use audit_layer::record::AuditRecord;
    ///
    /// # let json = r#"{"id":"01a2160e-562e-73be-befc-c44b8cd9efa2","action":{"result":"success",
    /// #   "time":"2025-01-23T18:25:14.749Z","type":"view"},"actor":{},"raw":{"method":"GET",
    /// #   "cf_ray_id":"r","status_code":200,"uri":"/"},"resource":{}}"#;
    /// let record: AuditRecord = serde_json::from_str(json)?;
    /// let exact = serde_json::to_string(&record)?.len();
    /// assert!(record.size_hint() >= exact);
    /// # Ok::<(), serde_json::Error>(())
    /// ```
    pub fn size_hint(&self) -> usize {
        /// Field names, quotes, punctuation, the id, the time and the enums.
        const FIXED: usize = 512;
        let (strings, bodies) = self.lengths();
        FIXED + strings + bodies
    }

    /// The length of the record's JSON text (as `serde_json::to_string` writes it), counted
    /// without building it.
    ///
    /// ```
    /// use audit_layer::record::AuditRecord;
    ///
    /// # let json = r#"{"id":"01a2160e-562e-73be-befc-c44b8cd9efa2","action":{"result":"success",
    /// #   "time":"2025-01-23T18:25:14.749Z","type":"view"},"actor":{},"raw":{"method":"GET",
    /// #   "cf_ray_id":"r","status_code":200,"uri":"/"},"resource":{}}"#;
    /// let record: AuditRecord = serde_json::from_str(json)?;
    /// assert_eq!(record.json_len(), serde_json::to_string(&record)?.len());
    /// # Ok::<(), serde_json::Error>(())
    /// ```
    pub fn json_len(&self) -> usize {
        /// Counts what is written to it.
        struct Counter(usize);
        impl std::io::Write for Counter {
            fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
                self.0 += buf.len();
                Ok(buf.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let mut counter = Counter(0);
        // A record always serializes (its maps have string keys), and the counter never fails.
        let _ = serde_json::to_writer(&mut counter, self);
        counter.0
    }

    /// The most bytes the record's JSON text can take, from the lengths of its parts: each
    /// string at worst six times its length (every character a `\u00XX` escape), bodies as
    /// they are, [`STRUCTURE`](Self::STRUCTURE) for the rest. Cheap (no serialization).
    pub(crate) fn max_json_len(&self) -> usize {
        let (strings, bodies) = self.lengths();
        Self::STRUCTURE + 6 * strings + bodies
    }

    /// The total length of the record's strings, and of its bodies' JSON texts.
    fn lengths(&self) -> (usize, usize) {
        let text = |s: &Option<String>| s.as_ref().map_or(0, String::len);
        let shared = |s: &Option<Arc<str>>| s.as_ref().map_or(0, |s| s.len());
        let body = |b: &Option<Body>| b.as_ref().map_or(0, |b| b.get().len());
        let account = self
            .account
            .as_ref()
            .map_or(0, |a| a.id.len() + text(&a.name));
        let zone = self.zone.as_ref().map_or(0, |z| z.id.len() + text(&z.name));
        let trace = self
            .trace
            .as_ref()
            .map_or(0, |t| t.trace_id.len() + t.span_id.len());
        let actor = &self.actor;
        let raw = &self.raw;
        let resource = &self.resource;
        let strings = account
            + zone
            + trace
            + shared(&self.service)
            + shared(&self.action.description)
            + text(&actor.email)
            + text(&actor.id)
            // Twice: in `actor.token` and as `actor.token_id`, `actor.token_name`.
            + 2 * text(&actor.token.id)
            + 2 * text(&actor.token.name)
            + text(&raw.method)
            + raw.cf_ray_id.len()
            + text(&raw.uri)
            + text(&raw.user_agent)
            + text(&raw.client_request_id)
            + text(&resource.id)
            + shared(&resource.product)
            + shared(&resource.scope)
            + shared(&resource.kind);
        let change = self
            .change
            .as_ref()
            .map_or(0, |c| body(&c.before) + body(&c.after));
        (
            strings,
            body(&resource.request) + body(&resource.response) + change,
        )
    }
}

/// The distributed trace a record belongs to, as W3C Trace Context ids in lowercase hex.
///
/// **Unverified** when it comes from the request's `traceparent` header: anyone can send any
/// well-formed ids; they tie the record to the caller's traces, they prove nothing.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Trace {
    /// The trace id: 32 lowercase hex digits, not all zero.
    pub trace_id: String,
    /// The span the request was made in (the `traceparent`'s parent id), or the server's own
    /// current span (OpenTelemetry): 16 lowercase hex digits, not all zero.
    pub span_id: String,
}

/// The account an action belongs to.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Account {
    /// The account id, from the path (`{account_id}`) or from the actor's handle.
    pub id: String,
    /// The account's display name, filled in by the ingest pipeline's directory lookup.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

/// The zone an action belongs to.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Zone {
    /// The zone id, from the path (`{zone_id}`).
    pub id: String,
    /// The zone's display name, filled in by the ingest pipeline's directory lookup.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

/// What was done.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Action {
    /// The operation's summary from the API description, e.g. `Update a Notification policy`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<Arc<str>>,
    /// `success` for statuses below 400, otherwise `failure`.
    pub result: ActionResult,
    /// When the request arrived, UTC, millisecond precision.
    pub time: Timestamp,
    /// The kind of action.
    #[serde(rename = "type")]
    pub kind: ActionType,
}

/// Whether an action succeeded.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ActionResult {
    /// The response status was below 400.
    Success,
    /// The response status was 400 or above, or the exchange did not complete.
    Failure,
}

impl ActionResult {
    /// The result a response status stands for: `success` below 400, otherwise `failure`.
    ///
    /// ```
    /// use audit_layer::record::ActionResult;
    /// assert_eq!(ActionResult::from_status(204), ActionResult::Success);
    /// assert_eq!(ActionResult::from_status(404), ActionResult::Failure);
    /// ```
    pub fn from_status(status: u16) -> Self {
        if status < 400 {
            Self::Success
        } else {
            Self::Failure
        }
    }

    /// The wire name, as in the JSON record.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Success => "success",
            Self::Failure => "failure",
        }
    }
}

/// The kind of action: one of the built-in ones, or any other an app names.
///
/// A request's is derived from its HTTP method unless the operation overrides it
/// (`x-audit-action`); an [event](crate::event)'s is whatever the app says it did. Any name of
/// the form `[a-z][a-z0-9_]{0,63}` is an action type ([`ActionType::new`]); the built-in ones
/// are the variants, so a name is always the same value however it was made.
///
/// ```
/// use audit_layer::record::ActionType;
///
/// assert_eq!(ActionType::new("update")?, ActionType::Update);
/// let rotated = ActionType::new("key_rotated")?;
/// assert_eq!(rotated.as_str(), "key_rotated");
/// assert_eq!(serde_json::to_string(&rotated)?, r#""key_rotated""#);
/// let err = ActionType::new("Key Rotated").unwrap_err();
/// assert_eq!(
///     err.to_string(),
///     r#"invalid action type "Key Rotated": expected a lowercase name of letters, digits and '_' that starts with a letter, at most 64 bytes long (e.g. key_rotated); 'K' at byte 0 is not allowed"#
/// );
///
/// // Checked when the program is compiled:
/// const DISABLE: ActionType = ActionType::from_static("disable");
/// assert_eq!(DISABLE.as_str(), "disable");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ActionType {
    /// A read: `GET`, `HEAD` (and `OPTIONS`).
    View,
    /// `POST`.
    Create,
    /// `PUT` or `PATCH`.
    Update,
    /// `DELETE`.
    Delete,
    /// A sign-in attempt.
    Login,
    /// A sign-out.
    Logout,
    /// Written by the storage pipeline, not by a request: records of this account were lost
    /// (the queue was full or the spool out of budget). The description says how many and
    /// between which times; `resource.request` holds `{"lost", "first", "last"}`.
    Gap,
    /// Stands for records the layer coalesced instead of recording each one (failed
    /// authentication beyond a rate, per source and account): the description and
    /// `resource.request` say how many, from where, to what, and between which times.
    Summary,
    /// Any other action an app names, e.g. `key_rotated` or `disable`: made only by
    /// [`ActionType::new`] and [`ActionType::from_static`], which give the variants above for
    /// their names.
    Other(ActionName),
}

/// The name of an action type that is not one of the built-in ones: `[a-z][a-z0-9_]{0,63}`,
/// held inline (no allocation, `Copy`).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct ActionName {
    len: u8,
    bytes: [u8; ActionName::MAX_LEN],
}

impl ActionName {
    /// The longest name: 64 bytes.
    pub const MAX_LEN: usize = 64;

    /// The name.
    pub fn as_str(&self) -> &str {
        // Checked to be ASCII when made.
        std::str::from_utf8(&self.bytes[..usize::from(self.len)]).unwrap_or("")
    }
}

impl fmt::Debug for ActionName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

/// The built-in action types and their names, in the order of the variants.
const BUILT_IN: [(ActionType, &str); 8] = [
    (ActionType::View, "view"),
    (ActionType::Create, "create"),
    (ActionType::Update, "update"),
    (ActionType::Delete, "delete"),
    (ActionType::Login, "login"),
    (ActionType::Logout, "logout"),
    (ActionType::Gap, "gap"),
    (ActionType::Summary, "summary"),
];

/// Why a name is not an action type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum NameFault {
    Empty,
    TooLong,
    /// The byte at this index is not allowed there.
    Byte(usize),
}

const fn bytes_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let mut i = 0;
    while i < a.len() {
        if a[i] != b[i] {
            return false;
        }
        i += 1;
    }
    true
}

/// The action type `name` is, in a `const` context too.
const fn parse_action(name: &[u8]) -> Result<ActionType, NameFault> {
    if name.is_empty() {
        return Err(NameFault::Empty);
    }
    let mut i = 0;
    while i < BUILT_IN.len() {
        if bytes_eq(BUILT_IN[i].1.as_bytes(), name) {
            return Ok(BUILT_IN[i].0);
        }
        i += 1;
    }
    if name.len() > ActionName::MAX_LEN {
        return Err(NameFault::TooLong);
    }
    let mut bytes = [0u8; ActionName::MAX_LEN];
    let mut i = 0;
    while i < name.len() {
        let b = name[i];
        let allowed = b.is_ascii_lowercase() || (i > 0 && (b.is_ascii_digit() || b == b'_'));
        if !allowed {
            return Err(NameFault::Byte(i));
        }
        bytes[i] = b;
        i += 1;
    }
    Ok(ActionType::Other(ActionName {
        // At most 64.
        len: name.len() as u8,
        bytes,
    }))
}

impl ActionType {
    /// The action type named `name`: a built-in one, or any other of the form
    /// `[a-z][a-z0-9_]{0,63}`.
    ///
    /// # Errors
    ///
    /// When `name` is not of that form; the error quotes it (escaped, cut to 64 characters)
    /// and says what is wrong.
    pub fn new(name: &str) -> Result<Self, InvalidActionType> {
        parse_action(name.as_bytes()).map_err(|fault| InvalidActionType::new(name, fault))
    }

    /// [`ActionType::new`] for a name known when the program is written, checked at compile
    /// time in a `const`.
    ///
    /// # Panics
    ///
    /// When `name` is not an action type (in a `const`, the program does not compile):
    ///
    /// ```compile_fail
    /// use audit_layer::record::ActionType;
    ///
    /// const BAD: ActionType = ActionType::from_static("Key Rotated");
    /// ```
    #[track_caller]
    pub const fn from_static(name: &'static str) -> Self {
        match parse_action(name.as_bytes()) {
            Ok(action) => action,
            Err(_) => panic!(
                "not an action type: expected a lowercase name of letters, digits and '_' that starts with a letter, at most 64 bytes long"
            ),
        }
    }

    /// The action type a method stands for when the operation does not say otherwise.
    ///
    /// ```
    /// use audit_layer::record::ActionType;
    /// use http::Method;
    /// assert_eq!(ActionType::from_method(&Method::PATCH), ActionType::Update);
    /// assert_eq!(ActionType::from_method(&Method::HEAD), ActionType::View);
    /// ```
    pub fn from_method(method: &http::Method) -> Self {
        match *method {
            http::Method::POST => Self::Create,
            http::Method::PUT | http::Method::PATCH => Self::Update,
            http::Method::DELETE => Self::Delete,
            _ => Self::View,
        }
    }

    /// The wire name, borrowed for the built-in types (no allocation), owned for others.
    ///
    /// ```
    /// use audit_layer::record::ActionType;
    /// use std::borrow::Cow;
    ///
    /// assert!(matches!(ActionType::Update.into_name(), Cow::Borrowed("update")));
    /// assert_eq!(ActionType::new("expire")?.into_name(), "expire");
    /// # Ok::<(), audit_layer::record::InvalidActionType>(())
    /// ```
    pub fn into_name(self) -> std::borrow::Cow<'static, str> {
        match self {
            Self::Other(name) => std::borrow::Cow::Owned(name.as_str().to_owned()),
            built_in => std::borrow::Cow::Borrowed(
                BUILT_IN
                    .iter()
                    .find(|(t, _)| *t == built_in)
                    .map_or("", |(_, name)| name),
            ),
        }
    }

    /// The wire name, as in the JSON record.
    pub fn as_str(&self) -> &str {
        match self {
            Self::View => "view",
            Self::Create => "create",
            Self::Update => "update",
            Self::Delete => "delete",
            Self::Login => "login",
            Self::Logout => "logout",
            Self::Gap => "gap",
            Self::Summary => "summary",
            Self::Other(name) => name.as_str(),
        }
    }
}

impl fmt::Display for ActionType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for ActionType {
    type Err = InvalidActionType;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::new(s)
    }
}

impl TryFrom<&str> for ActionType {
    type Error = InvalidActionType;

    fn try_from(s: &str) -> Result<Self, Self::Error> {
        Self::new(s)
    }
}

impl Serialize for ActionType {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for ActionType {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        Self::new(&s).map_err(serde::de::Error::custom)
    }
}

/// A name that is not an action type.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "invalid action type {value:?}: expected a lowercase name of letters, digits and '_' that starts with a letter, at most 64 bytes long (e.g. key_rotated); {why}"
)]
pub struct InvalidActionType {
    value: String,
    why: String,
}

impl InvalidActionType {
    fn new(name: &str, fault: NameFault) -> Self {
        // Bounded and escaped: the name may come from anywhere.
        let value = crate::escape::visible(name.as_bytes())
            .chars()
            .take(64)
            .collect();
        let why = match fault {
            NameFault::Empty => "it is empty".to_owned(),
            NameFault::TooLong => format!("it is {} bytes long", name.len()),
            NameFault::Byte(at) => {
                let c = name[at..].chars().next().unwrap_or('?');
                let shown = crate::escape::visible(c.to_string().as_bytes()).into_owned();
                format!("'{shown}' at byte {at} is not allowed")
            }
        };
        Self { value, why }
    }
}

/// Who acted, from where, and how they were authenticated.
///
/// The token is written twice: as the sample record's `token` object and as the v2 API's flat
/// `token_id` and `token_name`, so that readers of either find it. Reading takes the object,
/// or the flat fields when the object lacks them.
///
/// ```
/// use audit_layer::record::{Actor, Token};
///
/// let actor = Actor {
///     token: Token { id: Some("tok_1".into()), name: Some("CI deploy".into()) },
///     ..Actor::default()
/// };
/// let json = serde_json::to_value(&actor)?;
/// assert_eq!(json["token_id"], "tok_1");
/// assert_eq!(json["token_name"], "CI deploy");
/// assert_eq!(json["token"]["id"], "tok_1");
/// let flat: Actor = serde_json::from_str(r#"{"token_id": "tok_1", "token_name": "CI deploy"}"#)?;
/// assert_eq!(flat, actor);
/// # Ok::<(), serde_json::Error>(())
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(from = "ActorFields")]
pub struct Actor {
    /// How the actor reached the API.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context: Option<ActorContext>,
    /// The actor's email address, for users.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    /// The actor's id in the application.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// The client's IP address (the socket peer, or the forwarded client behind a trusted proxy).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip_address: Option<std::net::IpAddr>,
    /// The API token used, if any; an empty object otherwise. Also written as `token_id` and
    /// `token_name`.
    pub token: Token,
    /// What kind of principal acted; absent when authentication failed or was not attempted.
    pub kind: Option<ActorType>,
}

impl Serialize for Actor {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;

        fn field<S: SerializeStruct, T: Serialize>(
            s: &mut S,
            name: &'static str,
            value: Option<&T>,
        ) -> Result<(), S::Error> {
            match value {
                Some(value) => s.serialize_field(name, value),
                None => s.skip_field(name),
            }
        }
        let mut s = serializer.serialize_struct("Actor", 8)?;
        field(&mut s, "context", self.context.as_ref())?;
        field(&mut s, "email", self.email.as_ref())?;
        field(&mut s, "id", self.id.as_ref())?;
        field(&mut s, "ip_address", self.ip_address.as_ref())?;
        field(&mut s, "token_id", self.token.id.as_ref())?;
        field(&mut s, "token_name", self.token.name.as_ref())?;
        s.serialize_field("token", &self.token)?;
        field(&mut s, "type", self.kind.as_ref())?;
        s.end()
    }
}

/// An [`Actor`] as read: the `token` object and the flat `token_id`, `token_name` apart.
#[derive(Deserialize)]
struct ActorFields {
    #[serde(default)]
    context: Option<ActorContext>,
    #[serde(default)]
    email: Option<String>,
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    ip_address: Option<std::net::IpAddr>,
    #[serde(default)]
    token_id: Option<String>,
    #[serde(default)]
    token_name: Option<String>,
    #[serde(default)]
    token: Token,
    #[serde(default, rename = "type")]
    kind: Option<ActorType>,
}

impl From<ActorFields> for Actor {
    fn from(fields: ActorFields) -> Self {
        let ActorFields {
            context,
            email,
            id,
            ip_address,
            token_id,
            token_name,
            mut token,
            kind,
        } = fields;
        token.id = token.id.or(token_id);
        token.name = token.name.or(token_name);
        Self {
            context,
            email,
            id,
            ip_address,
            token,
            kind,
        }
    }
}

/// The API token an actor used.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Token {
    /// The token's id (never its secret value).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// The token's display name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

/// What kind of principal acted.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ActorType {
    /// A person.
    User,
    /// An account-owned credential acting on the account's behalf.
    Account,
    /// The system itself (scheduled jobs, automation).
    System,
}

impl ActorType {
    /// The wire name, as in the JSON record.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::User => "user",
            Self::Account => "account",
            Self::System => "system",
        }
    }
}

impl std::str::FromStr for ActorType {
    type Err = UnknownVariant;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s {
            "user" => Self::User,
            "account" => Self::Account,
            "system" => Self::System,
            _ => {
                return Err(UnknownVariant::new(
                    "actor type",
                    s,
                    "user, account, system",
                ));
            }
        })
    }
}

/// How an actor was authenticated.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ActorContext {
    /// A bearer API token.
    ApiToken,
    /// A legacy API key.
    ApiKey,
    /// A dashboard session (cookie).
    Dash,
    /// An OAuth access token.
    Oauth,
    /// The system itself.
    System,
}

impl ActorContext {
    /// The wire name, as in the JSON record.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ApiToken => "api_token",
            Self::ApiKey => "api_key",
            Self::Dash => "dash",
            Self::Oauth => "oauth",
            Self::System => "system",
        }
    }
}

impl std::str::FromStr for ActorContext {
    type Err = UnknownVariant;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s {
            "api_token" => Self::ApiToken,
            "api_key" => Self::ApiKey,
            "dash" => Self::Dash,
            "oauth" => Self::Oauth,
            "system" => Self::System,
            _ => {
                return Err(UnknownVariant::new(
                    "actor context",
                    s,
                    "api_token, api_key, dash, oauth, system",
                ));
            }
        })
    }
}

/// A string that names no variant of one of the record's enums.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("unknown {what} {value:?}: expected one of {expected}")]
pub struct UnknownVariant {
    what: &'static str,
    value: String,
    expected: &'static str,
}

impl UnknownVariant {
    fn new(what: &'static str, value: &str, expected: &'static str) -> Self {
        // Bounded and escaped: the value may come from an untrusted header.
        let value = crate::escape::visible(value.as_bytes())
            .chars()
            .take(64)
            .collect();
        Self {
            what,
            value,
            expected,
        }
    }
}

/// The raw HTTP exchange; for an [event](crate::event) without one, its ray id alone.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Raw {
    /// The request method; absent for an event that no request made.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
    /// The request's trace id (the v2 API's name for it): the configured request-id header,
    /// or one the layer generated. Read also as `ray_id`, the name records had before.
    #[serde(alias = "ray_id")]
    pub cf_ray_id: String,
    /// The response status; `499` when the client went away before a response, `500` when the
    /// handler panicked; absent for an event that no request made.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status_code: Option<u16>,
    /// The path as the router matched it (percent-escapes of unreserved characters decoded,
    /// see [`routed_path`](crate::redact::routed_path)) and the query: a parameter the
    /// operation does not declare becomes `REDACTED` (name and value), the value of one it
    /// does not mark auditable `REDACTED`; hidden characters escaped, at most the string
    /// limit long; absent for an event that no request made.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uri: Option<String>,
    /// The `User-Agent` header, hidden characters escaped, at most the string limit long.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_agent: Option<String>,
    /// The request id the client sent, when the layer did not take it as `cf_ray_id` (it came
    /// from a peer that is not a trusted proxy). **Unverified**: anyone can send any value;
    /// useful only to match a client's own logs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_request_id: Option<String>,
    /// The client went away before the whole response was sent. The handler completed: the
    /// status and result are its own (a handler that did not complete is recorded `499`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub client_gone: bool,
}

impl Raw {
    /// The exchange of a record that no single request made (a summary the layer counts, a
    /// gap the store reports): no method, no URI, `id` as the ray id, and `status`.
    ///
    /// ```
    /// use audit_layer::record::Raw;
    ///
    /// let raw = Raw::synthetic(uuid::Uuid::nil(), 500);
    /// assert_eq!(
    ///     (raw.method.as_deref(), raw.uri.as_deref(), raw.status_code),
    ///     (Some("-"), Some("-"), Some(500))
    /// );
    /// ```
    pub fn synthetic(id: uuid::Uuid, status: u16) -> Self {
        Self {
            method: Some("-".into()),
            cf_ray_id: id.simple().to_string(),
            status_code: Some(status),
            uri: Some("-".into()),
            user_agent: None,
            client_request_id: None,
            client_gone: false,
        }
    }
}

/// Whether `value` is a well-formed ray id: 1 to 128 characters of `A-Z a-z 0-9 . _ : -`.
pub(crate) fn is_valid_ray_id(value: &[u8]) -> bool {
    (1..=128).contains(&value.len())
        && value
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'))
}

/// An event time too far from now, given to an [event](crate::event::AuditEvent::time).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "invalid event time {time}: an event may be dated at most {max_age_days} days back and \
     {max_lead_secs} s ahead of now ({now})"
)]
pub struct InvalidEventTime {
    time: Timestamp,
    now: Timestamp,
    max_age_days: u64,
    max_lead_secs: u64,
}

impl InvalidEventTime {
    pub(crate) fn new(
        time: Timestamp,
        now: Timestamp,
        max_age: Duration,
        max_lead: Duration,
    ) -> Self {
        Self {
            time,
            now,
            max_age_days: max_age.as_secs() / 86_400,
            max_lead_secs: max_lead.as_secs(),
        }
    }
}

/// Cuts the account and zone ids to [`MAX_PATH_ID_CHARS`] characters, as ids taken from a
/// path are: whoever gave them (an event, the app's identity), the store indexes them.
pub(crate) fn cap_ids(record: &mut AuditRecord) {
    for id in [
        record.account.as_mut().map(|a| &mut a.id),
        record.zone.as_mut().map(|z| &mut z.id),
    ]
    .into_iter()
    .flatten()
    {
        if let Some((cut, _)) = id.char_indices().nth(MAX_PATH_ID_CHARS) {
            id.truncate(cut);
        }
    }
}

/// A ray id that is not well-formed, given to an [event](crate::event) or an
/// [`AuditContext`](crate::context::AuditContext).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid ray id {0:?}: expected 1 to 128 characters of A-Z a-z 0-9 . _ : -")]
pub struct InvalidRayId(String);

impl InvalidRayId {
    /// Checks `value`; the error quotes it escaped and cut to 64 characters.
    pub(crate) fn check(value: &str) -> Result<(), Self> {
        if is_valid_ray_id(value.as_bytes()) {
            Ok(())
        } else {
            Err(Self(
                crate::escape::visible(value.as_bytes())
                    .chars()
                    .take(64)
                    .collect(),
            ))
        }
    }
}

/// What an action touched.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Resource {
    /// The resource id: the path parameter that names the resource.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// The product, e.g. `alerting`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub product: Option<Arc<str>>,
    /// The redacted request body; absent for `view` actions and bodiless requests.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request: Option<Body>,
    /// The redacted response body; absent for `view` actions and bodiless responses.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response: Option<Body>,
    /// The scope, e.g. `accounts` or `zones`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<Arc<str>>,
    /// The resource type, e.g. `policies`.
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub kind: Option<Arc<str>>,
}

/// What an action changed: the resource's value before and after it, each redacted by the
/// schema of the type it came from (only `x-auditable` fields are kept), as the app told
/// through the `AuditHandle`'s `before` and `after` (feature `utoipa`), or an
/// [event](crate::event)'s builder.
///
/// Both keys are always written: `null` says the resource did not exist on that side (a
/// creation, a deletion) or that the app did not tell it.
///
/// ```
/// use audit_layer::record::{Body, Change};
/// use serde_json::json;
///
/// let change = Change { before: None, after: Some(Body::from(json!({"ttl": 300}))) };
/// assert_eq!(serde_json::to_value(&change)?, json!({"before": null, "after": {"ttl": 300}}));
/// # Ok::<(), serde_json::Error>(())
/// ```
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Change {
    /// The value before the action; `null` when there was none, or it was not told.
    #[serde(default)]
    pub before: Option<Body>,
    /// The value after the action; `null` when there is none (a deletion), or it was not told.
    #[serde(default)]
    pub after: Option<Body>,
}

/// A recorded body: the redacted JSON, kept as text.
///
/// The layer writes a body once, as the redactor produced it, and the store copies that text
/// into the stored record unchanged: a body is never parsed into a tree on the request path.
/// [`Body::to_value`] parses it when a caller wants to look inside. Two bodies are equal when
/// they hold the same JSON value, whatever their whitespace or key order.
///
/// A body's text is one line: line breaks in the JSON it is made from (whitespace, the only
/// place JSON allows them) become spaces, so that a record's JSON is one line, as the
/// pipeline's spool and the fleet's messages (a record per line) need.
///
/// ```
/// use audit_layer::record::Body;
/// use serde_json::json;
///
/// let body = Body::from_json(r#"{"name": "page me", "enabled": true}"#.to_owned())?;
/// assert_eq!(body.get(), r#"{"name": "page me", "enabled": true}"#);
/// assert_eq!(body.to_value()["name"], "page me");
/// assert_eq!(body, Body::from(json!({"enabled": true, "name": "page me"})));
/// # Ok::<(), serde_json::Error>(())
/// ```
#[derive(Clone, Serialize)]
#[serde(transparent)]
pub struct Body(Box<RawValue>);

impl Body {
    /// A body from JSON text, checked to be one valid JSON value; its line breaks become
    /// spaces.
    ///
    /// ```
    /// use audit_layer::record::Body;
    ///
    /// let body = Body::from_json("{\n  \"ttl\": 300\n}".to_owned())?;
    /// assert_eq!(body.get(), "{   \"ttl\": 300 }");
    /// # Ok::<(), serde_json::Error>(())
    /// ```
    pub fn from_json(json: String) -> Result<Self, serde_json::Error> {
        RawValue::from_string(json).map(Self::from)
    }

    /// A body of the redactor's text, which holds no line break (it writes whitespace it
    /// keeps as spaces): not scanned again on the request path.
    pub(crate) fn from_redacted(raw: Box<RawValue>) -> Self {
        debug_assert!(!has_line_break(raw.get()), "{}", raw.get());
        Self(raw)
    }

    /// The JSON text.
    pub fn get(&self) -> &str {
        self.0.get()
    }

    /// The body parsed into a [`Value`].
    pub fn to_value(&self) -> Value {
        // The text was checked when the body was made.
        serde_json::from_str(self.0.get()).unwrap_or(Value::Null)
    }
}

impl From<Box<RawValue>> for Body {
    /// The body of `raw`, its line breaks made spaces.
    fn from(raw: Box<RawValue>) -> Self {
        if !has_line_break(raw.get()) {
            return Self(raw);
        }
        // A line break in valid JSON is whitespace between tokens (inside a string it must be
        // escaped): a space in its place leaves the same value, and valid JSON.
        match RawValue::from_string(raw.get().replace(['\n', '\r'], " ")) {
            Ok(one_line) => Self(one_line),
            Err(_) => Self(raw),
        }
    }
}

impl<'de> Deserialize<'de> for Body {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Box::<RawValue>::deserialize(deserializer).map(Self::from)
    }
}

/// Whether `json` holds a line break (CR or LF).
fn has_line_break(json: &str) -> bool {
    json.bytes().any(|b| b == b'\n' || b == b'\r')
}

impl From<Value> for Body {
    fn from(value: Value) -> Self {
        Self::from(&value)
    }
}

impl From<&Value> for Body {
    fn from(value: &Value) -> Self {
        // A `Value` always serializes: its map keys are strings.
        Self(serde_json::value::to_raw_value(value).expect("a JSON value serializes"))
    }
}

impl PartialEq for Body {
    fn eq(&self, other: &Self) -> bool {
        self.get() == other.get() || self.to_value() == other.to_value()
    }
}

impl PartialEq<Value> for Body {
    fn eq(&self, other: &Value) -> bool {
        self.to_value() == *other
    }
}

impl fmt::Debug for Body {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Body").field(&self.get()).finish()
    }
}

impl fmt::Display for Body {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.get())
    }
}

/// A point in time with millisecond precision, serialized as RFC 3339 in UTC
/// (`2025-01-23T18:25:14.749Z`).
///
/// ```
/// use audit_layer::record::Timestamp;
///
/// let t = Timestamp::from_unix_millis(1_737_656_714_749);
/// assert_eq!(t.to_string(), "2025-01-23T18:25:14.749Z");
/// assert_eq!("2025-01-23T18:25:14.749Z".parse::<Timestamp>()?, t);
/// # Ok::<(), audit_layer::record::InvalidTimestamp>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(i64);

impl Timestamp {
    /// The current time, truncated to milliseconds.
    pub fn now() -> Self {
        Self::from_system_time(SystemTime::now())
    }

    /// A system time, truncated to milliseconds.
    pub fn from_system_time(time: SystemTime) -> Self {
        match time.duration_since(UNIX_EPOCH) {
            Ok(d) => Self(i64::try_from(d.as_millis()).unwrap_or(i64::MAX)),
            Err(e) => Self(-i64::try_from(e.duration().as_millis()).unwrap_or(i64::MAX)),
        }
    }

    /// Milliseconds since the Unix epoch.
    pub fn from_unix_millis(millis: i64) -> Self {
        // Within what RFC 3339 writes (years 0000 to 9999): every timestamp can be written,
        // and read back.
        Self(millis.clamp(MIN_MILLIS, MAX_MILLIS))
    }

    /// Milliseconds since the Unix epoch.
    pub fn unix_millis(self) -> i64 {
        self.0
    }

    /// This time as a [`SystemTime`].
    pub fn to_system_time(self) -> SystemTime {
        let magnitude = Duration::from_millis(self.0.unsigned_abs());
        if self.0 >= 0 {
            UNIX_EPOCH + magnitude
        } else {
            UNIX_EPOCH - magnitude
        }
    }

    /// The UTC calendar date: (year, month 1–12, day 1–31), in the proleptic Gregorian
    /// calendar.
    ///
    /// ```
    /// use audit_layer::record::Timestamp;
    ///
    /// assert_eq!(Timestamp::from_unix_millis(1_737_656_714_749).date(), (2025, 1, 23));
    /// assert_eq!(Timestamp::from_unix_millis(-1).date(), (1969, 12, 31));
    /// ```
    pub fn date(self) -> (i64, u8, u8) {
        // H. Hinnant's `civil_from_days`: days since 1970-01-01 to a date, exact for every i64
        // day count this type can hold.
        let z = self.0.div_euclid(MILLIS_PER_DAY) + 719_468;
        let era = z.div_euclid(146_097);
        let doe = z.rem_euclid(146_097);
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let day = doy - (153 * mp + 2) / 5 + 1;
        let month = if mp < 10 { mp + 3 } else { mp - 9 };
        // Both are in range by construction (1..=31 and 1..=12).
        (
            yoe + era * 400 + i64::from(month <= 2),
            u8::try_from(month).unwrap_or(0),
            u8::try_from(day).unwrap_or(0),
        )
    }

    /// `2025-01-23T18:25:14.749Z`, for years 0000 to 9999: written digit by digit (records
    /// are serialized at ingest, one timestamp each, and the `time` crate's formatting took
    /// a tenth of that).
    fn rfc3339(self) -> Option<[u8; 24]> {
        let (year, month, day) = self.date();
        if !(0..=9999).contains(&year) {
            return None;
        }
        let ms = self.0.rem_euclid(MILLIS_PER_DAY);
        let mut out = *b"0000-00-00T00:00:00.000Z";
        let mut put = |at: usize, width: usize, mut value: i64| {
            for i in (at..at + width).rev() {
                // A decimal digit: `value % 10` is in 0..=9.
                out[i] = b'0' + (value % 10) as u8;
                value /= 10;
            }
        };
        put(0, 4, year);
        put(5, 2, i64::from(month));
        put(8, 2, i64::from(day));
        put(11, 2, ms / 3_600_000);
        put(14, 2, ms / 60_000 % 60);
        put(17, 2, ms / 1000 % 60);
        put(20, 3, ms % 1000);
        Some(out)
    }

    fn to_offset_date_time(self) -> Option<time::OffsetDateTime> {
        time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(self.0) * 1_000_000).ok()
    }
}

const MILLIS_PER_DAY: i64 = 86_400_000;
/// 0000-01-01T00:00:00.000Z.
const MIN_MILLIS: i64 = -62_167_219_200_000;
/// 9999-12-31T23:59:59.999Z.
const MAX_MILLIS: i64 = 253_402_300_799_999;

const RFC3339_MILLIS: &[time::format_description::BorrowedFormatItem<'static>] = time::macros::format_description!(
    "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z"
);

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(text) = self.rfc3339() {
            // ASCII digits and punctuation only.
            return f.write_str(std::str::from_utf8(&text).map_err(|_| fmt::Error)?);
        }
        // Years before 0 or after 9999: as the `time` crate writes them, or not at all.
        let formatted = self
            .to_offset_date_time()
            .and_then(|t| t.format(RFC3339_MILLIS).ok())
            .ok_or(fmt::Error)?;
        f.write_str(&formatted)
    }
}

/// A string that is not an RFC 3339 time.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid timestamp {0:?}: expected RFC 3339, e.g. 2025-01-23T18:25:14.749Z")]
pub struct InvalidTimestamp(String);

impl std::str::FromStr for Timestamp {
    type Err = InvalidTimestamp;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let invalid = || InvalidTimestamp(s.chars().take(64).collect());
        let t = time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
            .map_err(|_| invalid())?;
        let millis = t.unix_timestamp_nanos().div_euclid(1_000_000);
        i64::try_from(millis).map(Self).map_err(|_| invalid())
    }
}

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_body_is_one_line_however_its_json_was_spelled() {
        let pretty = "{\r\n  \"name\": \"a\\nb\",\n  \"tags\": [\n    1,\n    2\n  ]\n}";
        let from_text = Body::from_json(pretty.to_owned()).unwrap();
        let from_raw = Body::from(RawValue::from_string(pretty.to_owned()).unwrap());
        let parsed: Body = serde_json::from_str(&format!("[{pretty}]"))
            .map(|mut v: Vec<Body>| v.remove(0))
            .unwrap();
        for body in [&from_text, &from_raw, &parsed] {
            assert!(!body.get().contains(['\n', '\r']), "{:?}", body.get());
            // The escaped line break inside the string is the value's, and stays.
            assert_eq!(
                body.to_value(),
                serde_json::json!({"name": "a\nb", "tags": [1, 2]})
            );
        }
        let change = Change {
            before: None,
            after: Some(from_text),
        };
        assert!(!serde_json::to_string(&change).unwrap().contains('\n'));
    }

    #[test]
    fn timestamps_round_trip_with_millisecond_precision() {
        for millis in [0, 1, 999, 1_737_656_714_749, 253_402_300_799_999] {
            let t = Timestamp::from_unix_millis(millis);
            assert_eq!(t.to_string().parse::<Timestamp>(), Ok(t), "{t}");
            assert_eq!(Timestamp::from_system_time(t.to_system_time()), t);
        }
        assert_eq!(
            Timestamp::from_unix_millis(0).to_string(),
            "1970-01-01T00:00:00.000Z"
        );
    }

    /// What `Display` wrote before it formatted digits itself.
    fn formatted_by_time(t: Timestamp) -> Option<String> {
        t.to_offset_date_time()?.format(RFC3339_MILLIS).ok()
    }

    #[test]
    fn timestamps_are_written_as_the_time_crate_writes_them() {
        // Both ends of the digit-by-digit range, leap days, the epoch and just before it.
        for millis in [
            -62_167_219_200_000,
            -1,
            0,
            951_782_400_000,
            4_107_542_399_999,
            253_402_300_799_999,
        ] {
            let t = Timestamp::from_unix_millis(millis);
            assert_eq!(Some(t.to_string()), formatted_by_time(t), "{millis}");
        }
        // Outside years 0 to 9999, a time is taken at the nearest end: it can be written.
        let before_year_0 = Timestamp::from_unix_millis(-62_167_219_200_001);
        assert_eq!(before_year_0.to_string(), "0000-01-01T00:00:00.000Z");
        let after_9999 = Timestamp::from_unix_millis(i64::MAX);
        assert_eq!(after_9999.to_string(), "9999-12-31T23:59:59.999Z");
    }

    proptest::proptest! {
        #[test]
        fn any_timestamp_in_years_0_to_9999_is_written_as_the_time_crate_writes_it(
            millis in -62_167_219_200_000_i64..=253_402_300_799_999,
        ) {
            let t = Timestamp::from_unix_millis(millis);
            proptest::prop_assert_eq!(Some(t.to_string()), formatted_by_time(t));
            let date = t.to_offset_date_time().unwrap().date();
            proptest::prop_assert_eq!(
                t.date(),
                (i64::from(date.year()), u8::from(date.month()), date.day())
            );
        }
    }

    #[test]
    fn offsets_are_normalized_to_utc() {
        let t: Timestamp = "2025-01-23T19:25:14.749+01:00".parse().unwrap();
        assert_eq!(t.to_string(), "2025-01-23T18:25:14.749Z");
    }

    #[test]
    fn a_bad_timestamp_names_the_input() {
        let err = "yesterday".parse::<Timestamp>().unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid timestamp \"yesterday\": expected RFC 3339, e.g. 2025-01-23T18:25:14.749Z"
        );
    }

    #[test]
    fn minimal_record_serializes_like_the_original() {
        let record = AuditRecord {
            id: Uuid::nil(),
            account: Some(Account {
                id: "acc".into(),
                name: None,
            }),
            action: Action {
                description: None,
                result: ActionResult::Success,
                time: Timestamp::from_unix_millis(0),
                kind: ActionType::View,
            },
            actor: Actor::default(),
            raw: Raw {
                method: Some("GET".into()),
                cf_ray_id: "r".into(),
                status_code: Some(200),
                uri: Some("/".into()),
                user_agent: None,
                client_request_id: None,
                client_gone: false,
            },
            resource: Resource::default(),
            zone: None,
            change: None,
            trace: None,
            service: None,
        };
        let json = serde_json::to_string(&record).unwrap();
        assert_eq!(
            json,
            r#"{"id":"00000000-0000-0000-0000-000000000000","account":{"id":"acc"},"action":{"result":"success","time":"1970-01-01T00:00:00.000Z","type":"view"},"actor":{"token":{}},"raw":{"method":"GET","cf_ray_id":"r","status_code":200,"uri":"/"},"resource":{}}"#
        );
        assert_eq!(serde_json::from_str::<AuditRecord>(&json).unwrap(), record);
    }

    #[test]
    fn records_of_the_previous_names_still_read() {
        // As written before `cf_ray_id` and the flat token fields: a spooled record of an
        // older version replays.
        let old = r#"{"id":"00000000-0000-0000-0000-000000000000","action":{"result":"success","time":"1970-01-01T00:00:00.000Z","type":"view"},"actor":{"token":{"id":"tok","name":"CI"}},"raw":{"method":"GET","ray_id":"r","status_code":200,"uri":"/"},"resource":{}}"#;
        let record: AuditRecord = serde_json::from_str(old).unwrap();
        assert_eq!(record.raw.cf_ray_id, "r");
        assert_eq!(record.actor.token.id.as_deref(), Some("tok"));
        let json = serde_json::to_string(&record).unwrap();
        assert!(
            json.contains(
                r#""actor":{"token_id":"tok","token_name":"CI","token":{"id":"tok","name":"CI"}}"#
            ),
            "{json}"
        );
        assert!(json.contains(r#""cf_ray_id":"r""#), "{json}");
        assert_eq!(record.json_len(), json.len());
        assert!(record.size_hint() >= json.len());
    }

    #[test]
    fn action_types_are_the_built_in_ones_or_well_formed_names() {
        assert_eq!(ActionType::new("summary"), Ok(ActionType::Summary));
        let longest = format!("a{}", "b_9".repeat(21));
        assert_eq!(longest.len(), 64);
        assert_eq!(ActionType::new(&longest).unwrap().as_str(), longest);
        for bad in [
            "",
            "9lives",
            "_x",
            "Upper",
            "a-b",
            "a b",
            "ünï",
            &format!("{longest}c"),
        ] {
            let err = ActionType::new(bad).unwrap_err().to_string();
            assert!(err.starts_with("invalid action type"), "{bad:?}: {err}");
        }
        assert!(
            ActionType::new(&"x".repeat(100))
                .unwrap_err()
                .to_string()
                .ends_with("it is 100 bytes long")
        );
        let custom = ActionType::from_static("key_rotated");
        let json = serde_json::to_string(&custom).unwrap();
        assert_eq!(serde_json::from_str::<ActionType>(&json).unwrap(), custom);
        assert!(serde_json::from_str::<ActionType>(r#""Key""#).is_err());
        assert_eq!(ActionType::View.into_name(), "view");
    }

    #[test]
    fn enum_names_match_the_wire() {
        for t in [
            ActionType::View,
            ActionType::Create,
            ActionType::Update,
            ActionType::Delete,
            ActionType::Login,
            ActionType::Logout,
            ActionType::Gap,
        ] {
            assert_eq!(serde_json::to_value(t).unwrap(), t.as_str());
            assert_eq!(t.as_str().parse::<ActionType>(), Ok(t));
        }
        for c in [
            ActorContext::ApiToken,
            ActorContext::ApiKey,
            ActorContext::Dash,
            ActorContext::Oauth,
            ActorContext::System,
        ] {
            assert_eq!(serde_json::to_value(c).unwrap(), c.as_str());
            assert_eq!(c.as_str().parse::<ActorContext>(), Ok(c));
        }
        let err = "root\u{1b}[31m".parse::<ActorType>().unwrap_err();
        assert_eq!(
            err.to_string(),
            r#"unknown actor type "root\\x1b[31m": expected one of user, account, system"#
        );
    }
}
