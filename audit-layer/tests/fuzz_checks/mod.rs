//! The invariants the fuzz targets check, shared by `fuzz/fuzz_targets/*.rs` (through
//! `#[path]`) and by the corpus replay test `tests/fuzz_corpus.rs` (through `mod`), so that CI
//! runs exactly the checks the fuzzer runs. `tests/redaction_fixture.rs` takes the marker
//! reasons from here too.
//!
//! Two entry points, one per fuzz target; each panics on a violated invariant:
//!
//! - [`check_redact`]: a body, redacted by the operations of a policy compiled once from
//!   `schemas/fixtures/alerting-3.0.yaml`;
//! - [`check_spec`]: a document, read as JSON or YAML and compiled; a compiled policy then
//!   redacts a few fixed bodies for each of its operations.
//!
//! What every redaction must satisfy, whatever the plan:
//!
//! 1. an empty body gives no output, any other body gives one (for described operations);
//! 2. the output is valid JSON for `serde_json::Value`;
//! 3. a marker (`{"_unparsed": reason}`) has a known reason that quotes nothing of the body,
//!    and a body that `serde_json` reads strictly (one object or array, no duplicate key,
//!    finite numbers, at most 99 levels) never gets a parse marker;
//! 4. anything else comes from a body `serde_json` accepts, has the body's root shape, holds
//!    no string token that is not spelled the same in the body (once hidden characters are
//!    escaped, as `audit_layer::escape::json_text` does), is a sub-tree of the body
//!    (keys at the same places, arrays as sub-sequences, equal leaves), and redacts to itself.
//!
//! And for the fixture's operations, a differential check: when the body reads strictly, the
//! output equals what [`Plan`] — the fixture's markings, derived by hand from the YAML by the
//! rules in `audit_layer::spec` — keeps of it. When the fixture changes, update the plans in
//! `fixture_cases` (the replay test fails until they agree).

#![allow(dead_code, reason = "each fuzz target uses one entry point")]

use std::collections::HashSet;
use std::fmt;
use std::sync::OnceLock;

use audit_layer::AuditPolicy;
use audit_layer::spec::OpenApiDocument;
use http::Method;
use serde::de::{self, Deserialize, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::value::RawValue;
use serde_json::{Map, Value};

/// The realistic spec the redaction target compiles once.
pub(crate) const FIXTURE: &str = include_str!("../../../schemas/fixtures/alerting-3.0.yaml");

/// Reasons a body may be replaced by a marker. Parse failures are `"<reason> at byte <n>"`.
pub(crate) const PARSE_REASONS: &[&str] = &[
    "invalid UTF-8",
    "the body is empty",
    "the body is not a JSON object or array",
    "trailing characters after the JSON value",
    "nested deeper than 100 levels",
    "expected a string key",
    "expected ':' after a key",
    "expected ',' or '}' in an object",
    "expected ',' or ']' in an array",
    "expected a JSON value",
    "invalid literal",
    "invalid number",
    "number out of range",
    "control character in a string",
    "unterminated string",
    "lone surrogate in a string escape",
    "invalid escape in a string",
    "invalid \\u escape",
    "duplicate key in an object",
];

/// Markers that say why a body was not read at all.
pub(crate) const OTHER_REASONS: &[&str] = &[
    "the body has no content type",
    "the content type is not described for this operation",
    "bodies of this content type are not recorded",
    "the response status is not described for this operation",
];

// ---------------------------------------------------------------------------------------------
// Entry points

/// Redacts `data` as the body of each fixture operation and checks every invariant.
pub(crate) fn check_redact(data: &[u8]) {
    let policy = fixture_policy();
    let facts = Facts::of(data);
    for case in fixture_cases() {
        let redact = |body: &[u8]| case.redact(policy, body);
        let out = redact(data);
        check_output(&facts, out.as_deref(), true, &redact, case.name);
        // An integer spelled without fraction or exponent that serde_json reads as a float
        // (`-0`, beyond 64 bits) cannot be typed from a `Value`: no differential check then.
        let comparable = !facts.float_spelled_integer;
        if let (Some(out), Some(strict), true) = (&out, &facts.strict, comparable) {
            let got: Value = serde_json::from_str(out.get()).unwrap_or(Value::Null);
            if !is_marker(&got) {
                let want = case.plan.apply_root(strict);
                assert!(
                    got == want,
                    "{}: the output differs from the reference plan\n  body: {}\n  got:  {got}\n  want: {want}",
                    case.name,
                    show(data),
                );
            }
        }
    }
}

/// Reads `data` as an OpenAPI document (JSON or YAML) and compiles it; errors are fine,
/// panics are not. A compiled policy then redacts [`SAMPLE_BODIES`] for its operations.
pub(crate) fn check_spec(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let doc = match OpenApiDocument::from_str_any(text) {
        Ok(doc) => doc,
        Err(e) => {
            let _ = e.to_string();
            return;
        }
    };
    let policy = match doc.compile() {
        Ok(policy) => policy,
        Err(e) => {
            let _ = e.to_string();
            return;
        }
    };
    let Some(paths) = doc.as_value().get("paths").and_then(Value::as_object) else {
        return;
    };
    let bodies: Vec<Facts<'_>> = SAMPLE_BODIES.iter().map(|b| Facts::of(b)).collect();
    for (template, item) in paths.iter().take(4) {
        let path = concrete_path(template);
        for (name, method) in [
            ("get", Method::GET),
            ("put", Method::PUT),
            ("post", Method::POST),
            ("delete", Method::DELETE),
            ("patch", Method::PATCH),
        ] {
            if item.get(name).is_none() {
                continue;
            }
            let request = |body: &[u8]| {
                raw(policy.redact_request_body(&method, &path, Some("application/json"), body))
            };
            let response = |body: &[u8]| {
                raw(policy.redact_response_body(
                    &method,
                    &path,
                    200,
                    Some("application/json"),
                    body,
                ))
            };
            for facts in &bodies {
                check_output(
                    facts,
                    request(facts.input).as_deref(),
                    false,
                    &request,
                    "request",
                );
                check_output(
                    facts,
                    response(facts.input).as_deref(),
                    false,
                    &response,
                    "response",
                );
            }
        }
    }
}

/// The redactor's output as a checked `RawValue`: output that is not valid JSON fails here.
fn raw(body: Option<audit_layer::redact::RedactedBody>) -> Option<Box<RawValue>> {
    body.map(|b| {
        let text = b.get().to_owned();
        b.into_raw_value()
            .unwrap_or_else(|| panic!("the redactor's output is not valid JSON: {text}"))
    })
}

/// Bodies a fuzzed policy redacts: a realistic one, nesting, a root array, a scalar.
const SAMPLE_BODIES: &[&[u8]] = &[
    br#"{"id":"p1","name":"n","enabled":true,"filters":{"zones":["z"],"selectors":["s"]},"mechanisms":{"webhooks":[{"id":"w","url":"https://h/s3cr3t"}]},"labels":{"a":"b"},"x":{"y":[1,{"z":null}]}}"#,
    br#"[{"a":1},[2,[3,{"b":"c"}]],"d"]"#,
    br#""scalar""#,
];

/// `/a/{x}/b` → `/a/x/b`.
fn concrete_path(template: &str) -> String {
    template
        .split('/')
        .map(|segment| {
            if segment.starts_with('{') {
                "x"
            } else {
                segment
            }
        })
        .collect::<Vec<_>>()
        .join("/")
}

// ---------------------------------------------------------------------------------------------
// Plan-independent invariants

/// What the checks need to know of one input, computed once.
struct Facts<'a> {
    input: &'a [u8],
    /// `serde_json` accepts it, ignoring values (no depth limit, no duplicate or range check).
    syntax_ok: bool,
    /// The first byte that is not JSON whitespace.
    root: Option<u8>,
    /// `serde_json::Value`, duplicates resolved last-wins.
    lax: Option<Value>,
    /// A strict read: an object or array, no duplicate key, at most 99 levels, finite
    /// numbers.
    strict: Option<Value>,
    /// Every string token, as spelled (quotes included) once hidden characters are escaped
    /// (`audit_layer::escape::json_text`, as the redactor writes its output).
    strings: HashSet<String>,
    /// A number token that `str::parse::<f64>` reads as infinite (or not at all).
    unrepresentable_number: bool,
    /// A number token with no fraction or exponent that serde_json reads as a float: `-0`,
    /// or beyond `i64`/`u64`.
    float_spelled_integer: bool,
}

impl<'a> Facts<'a> {
    fn of(input: &'a [u8]) -> Self {
        let text = std::str::from_utf8(input).ok();
        let root = input
            .iter()
            .copied()
            .find(|b| !matches!(b, b' ' | b'\n' | b'\r' | b'\t'));
        let syntax_ok = text.is_some_and(|t| serde_json::from_str::<IgnoredAny>(t).is_ok());
        let lax = text
            .filter(|_| syntax_ok)
            .and_then(|t| serde_json::from_str::<Value>(t).ok());
        let strict = text
            .filter(|_| lax.is_some() && matches!(root, Some(b'{' | b'[')))
            .and_then(|t| serde_json::from_str::<Strict>(t).ok())
            .map(|s| s.0)
            // The redactor's limit (100 levels) is below serde_json's.
            .filter(|v| nesting(v) <= 99);
        let (_, numbers) = text.map(tokens).unwrap_or_default();
        let escaped = text.map(|t| audit_layer::escape::json_text(t.to_owned()));
        let strings = escaped
            .as_deref()
            .map(|t| tokens(t).0.into_iter().map(str::to_owned).collect())
            .unwrap_or_default();
        let unrepresentable_number = numbers
            .iter()
            .any(|n| !n.parse::<f64>().is_ok_and(f64::is_finite));
        let float_spelled_integer = numbers.iter().any(|n| {
            !n.contains(['.', 'e', 'E'])
                && (n.starts_with("-0") || (n.parse::<i64>().is_err() && n.parse::<u64>().is_err()))
        });
        Self {
            input,
            syntax_ok,
            root,
            lax,
            strict,
            strings,
            unrepresentable_number,
            float_spelled_integer,
        }
    }
}

/// Checks one redaction's output against the input's facts. `described`: the operation is
/// known to describe JSON request bodies, so a non-empty body always gives an output.
fn check_output(
    facts: &Facts<'_>,
    out: Option<&RawValue>,
    described: bool,
    redact: &dyn Fn(&[u8]) -> Option<Box<RawValue>>,
    what: &str,
) {
    let body = facts.input;
    let Some(out) = out else {
        assert!(
            !described || body.is_empty(),
            "{what}: no output for a non-empty body {}",
            show(body)
        );
        return;
    };
    assert!(!body.is_empty(), "{what}: an output for an empty body");
    let text = out.get();
    let value: Value = match serde_json::from_str(text) {
        Ok(value) => value,
        Err(e) => panic!(
            "{what}: the output is not valid JSON for serde_json ({e})\n  body: {}\n  out:  {text}",
            show(body)
        ),
    };

    if is_marker(&value) {
        let reason = value["_unparsed"].as_str().unwrap_or_default();
        let parse_reason = match reason.rsplit_once(" at byte ") {
            Some((reason, at)) => {
                let at: usize = at.parse().unwrap_or(usize::MAX);
                assert!(
                    at <= body.len(),
                    "{what}: marker position {at} beyond the body"
                );
                assert!(
                    PARSE_REASONS.contains(&reason),
                    "{what}: unknown marker {text}"
                );
                Some(reason)
            }
            None => {
                assert!(
                    OTHER_REASONS.contains(&reason),
                    "{what}: unknown marker {text}"
                );
                None
            }
        };
        if let Some(reason) = parse_reason {
            let boundary_number = reason == "number out of range" && facts.unrepresentable_number;
            assert!(
                facts.strict.is_none() || boundary_number,
                "{what}: a body serde_json reads strictly was refused: {text}\n  body: {}",
                show(body)
            );
        }
        return;
    }

    assert!(
        facts.syntax_ok,
        "{what}: a body serde_json refuses was redacted\n  body: {}\n  out:  {text}",
        show(body)
    );
    assert_eq!(
        facts.root,
        text.bytes().next(),
        "{what}: the output's root shape is not the body's: {text}"
    );
    let (out_strings, _) = tokens(text);
    for s in out_strings {
        assert!(
            facts.strings.contains(s),
            "{what}: the output holds {s}, which the body does not spell so\n  body: {}\n  out:  {text}",
            show(body)
        );
    }
    if let Some(input) = &facts.lax {
        assert!(
            is_subtree(&value, input),
            "{what}: the output is not a sub-tree of the body\n  body: {}\n  out:  {text}",
            show(body)
        );
    }
    let again = redact(text.as_bytes());
    assert_eq!(
        again.as_deref().map(RawValue::get),
        Some(text),
        "{what}: redacting the output again changes it"
    );
}

/// `{"_unparsed": "..."}`. The plans checked here keep no root key `_unparsed`.
fn is_marker(value: &Value) -> bool {
    value
        .as_object()
        .is_some_and(|o| o.len() == 1 && o.get("_unparsed").is_some_and(Value::is_string))
}

/// Whether `out` is `input` with things left out: the same keys at the same places, array
/// elements in order (a sub-sequence), equal leaves.
fn is_subtree(out: &Value, input: &Value) -> bool {
    match (out, input) {
        (Value::Object(o), Value::Object(i)) => o
            .iter()
            .all(|(k, v)| i.get(k).is_some_and(|iv| is_subtree(v, iv))),
        (Value::Array(o), Value::Array(i)) => {
            let mut rest = i.iter();
            o.iter().all(|v| rest.any(|iv| is_subtree(v, iv)))
        }
        (o, i) => o == i,
    }
}

/// The string tokens (as spelled, quotes included) and number tokens of JSON-ish text.
fn tokens(text: &str) -> (HashSet<&str>, Vec<&str>) {
    let b = text.as_bytes();
    let mut strings = HashSet::new();
    let mut numbers = Vec::new();
    let mut i = 0;
    while i < b.len() {
        let start = i;
        match b[i] {
            b'"' => {
                i += 1;
                while i < b.len() && b[i] != b'"' {
                    i += if b[i] == b'\\' { 2 } else { 1 };
                }
                i = (i + 1).min(b.len());
                strings.extend(text.get(start..i));
            }
            b'-' | b'0'..=b'9' => {
                while i < b.len() && matches!(b[i], b'0'..=b'9' | b'-' | b'+' | b'.' | b'e' | b'E')
                {
                    i += 1;
                }
                numbers.extend(text.get(start..i));
            }
            _ => i += 1,
        }
    }
    (strings, numbers)
}

/// At most 200 bytes of a body, for failure messages.
fn show(body: &[u8]) -> String {
    let shown = String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned();
    if body.len() > 200 {
        format!("{shown}... ({} bytes)", body.len())
    } else {
        shown
    }
}

/// A `serde_json::Value` read that refuses duplicate keys.
/// How many containers deep `value` nests (a scalar is 0).
fn nesting(value: &Value) -> usize {
    match value {
        Value::Array(items) => 1 + items.iter().map(nesting).max().unwrap_or(0),
        Value::Object(map) => 1 + map.values().map(nesting).max().unwrap_or(0),
        _ => 0,
    }
}

struct Strict(Value);

impl<'de> Deserialize<'de> for Strict {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(StrictVisitor).map(Strict)
    }
}

struct StrictVisitor;

impl<'de> Visitor<'de> for StrictVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value without duplicate keys")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::new();
        while let Some(Strict(item)) = seq.next_element()? {
            items.push(item);
        }
        Ok(Value::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut object = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            let Strict(value) = map.next_value()?;
            if object.insert(key, value).is_some() {
                return Err(de::Error::custom("duplicate key"));
            }
        }
        Ok(Value::Object(object))
    }
}

// ---------------------------------------------------------------------------------------------
// The fixture's operations and their expected plans

/// The policy compiled from [`FIXTURE`], once.
pub(crate) fn fixture_policy() -> &'static AuditPolicy {
    static POLICY: OnceLock<AuditPolicy> = OnceLock::new();
    POLICY.get_or_init(|| {
        OpenApiDocument::from_yaml_str(FIXTURE)
            .and_then(|doc| doc.compile())
            .unwrap_or_else(|e| panic!("the fixture compiles: {e}"))
    })
}

/// One redaction of the fixture policy.
struct Case {
    name: &'static str,
    method: Method,
    path: &'static str,
    /// `None`: the request body; `Some(status)`: the response body.
    status: Option<u16>,
    plan: Plan,
}

impl Case {
    fn redact(&self, policy: &AuditPolicy, body: &[u8]) -> Option<Box<RawValue>> {
        let ct = Some("application/json");
        raw(match self.status {
            None => policy.redact_request_body(&self.method, self.path, ct, body),
            Some(status) => policy.redact_response_body(&self.method, self.path, status, ct, body),
        })
    }
}

fn fixture_cases() -> [Case; 4] {
    [
        Case {
            name: "PUT policy request",
            method: Method::PUT,
            path: "/accounts/a1/alerting/v3/policies/p1",
            status: None,
            plan: POLICY,
        },
        Case {
            name: "GET policies 200 response",
            method: Method::GET,
            path: "/accounts/a1/alerting/v3/policies",
            status: Some(200),
            plan: Plan::Object(&[
                ("success", BOOLEAN),
                ("result", Plan::Array(&POLICY)),
                (
                    "result_info",
                    Plan::Object(&[
                        ("page", INTEGER),
                        ("per_page", INTEGER),
                        ("total_count", INTEGER),
                    ]),
                ),
            ]),
        },
        Case {
            name: "POST login request",
            method: Method::POST,
            path: "/login",
            status: None,
            plan: Plan::Object(&[
                ("email", STRING),
                ("password", Plan::Drop),
                ("remember_me", BOOLEAN),
            ]),
        },
        Case {
            name: "PUT policy 404 response",
            method: Method::PUT,
            path: "/accounts/a1/alerting/v3/policies/p1",
            status: Some(404),
            plan: Plan::Object(&[
                ("code", INTEGER),
                ("message", STRING),
                ("debug_token", Plan::Drop),
            ]),
        },
    ]
}

/// What to keep of a value, as the fixture's markings say: the reference for the
/// differential check. Objects list their declared keys; undeclared keys are dropped.
#[derive(Clone, Copy)]
enum Plan {
    Drop,
    /// The value, if its JSON type is in the mask (bits below).
    Keep(u8),
    Object(&'static [(&'static str, Plan)]),
    /// A map (`additionalProperties`, no `properties`): every entry by the one plan.
    Map(&'static Plan),
    Array(&'static Plan),
    /// A named (possibly recursive) plan.
    Named(fn() -> Plan),
}

/// Type bits of [`Plan::Keep`].
const T_NULL: u8 = 1;
const T_BOOLEAN: u8 = 1 << 1;
/// Integers only: no fraction, no exponent.
const T_INTEGER: u8 = 1 << 2;
const T_NUMBER: u8 = 1 << 3;
const T_STRING: u8 = 1 << 4;

/// A marked leaf of each type: `null` is always allowed besides the declared type.
const STRING: Plan = Plan::Keep(T_STRING | T_NULL);
const BOOLEAN: Plan = Plan::Keep(T_BOOLEAN | T_NULL);
const INTEGER: Plan = Plan::Keep(T_INTEGER | T_NULL);

/// `#/components/schemas/Policy` (and `PolicyCreate`, which adds only an unmarked key).
const POLICY: Plan = Plan::Object(&[
    ("id", STRING),
    ("name", STRING),
    ("description", STRING),
    ("enabled", BOOLEAN),
    ("alert_type", STRING),
    ("cooldown_seconds", INTEGER),
    (
        "filters",
        Plan::Object(&[
            ("services", Plan::Array(&STRING)),
            ("zones", Plan::Array(&STRING)),
            ("selectors", Plan::Drop),
        ]),
    ),
    (
        "mechanisms",
        Plan::Object(&[
            ("email", Plan::Array(&Plan::Object(&[("id", STRING)]))),
            (
                "webhooks",
                Plan::Array(&Plan::Object(&[("id", STRING), ("url", Plan::Drop)])),
            ),
            ("default_target", TARGET),
            ("fallback", TARGET),
        ]),
    ),
    // A marked map of strings.
    ("labels", Plan::Map(&STRING)),
    ("headers", Plan::Drop),
    // oneOf [Condition, null]: Condition.
    ("condition", Plan::Named(condition)),
]);

/// `oneOf`/`anyOf` [EmailTarget, WebhookTarget]: a key is kept iff every branch declaring it
/// marks it (`address` is marked by one branch only, `name` declared by one only).
const TARGET: Plan = Plan::Object(&[
    ("type", STRING),
    ("id", STRING),
    ("address", Plan::Drop),
    ("name", STRING),
]);

/// `#/components/schemas/Condition`, recursive through `children`.
fn condition() -> Plan {
    Plan::Object(&[
        ("op", STRING),
        ("field", STRING),
        ("value", Plan::Drop),
        ("children", Plan::Array(&Plan::Named(condition))),
    ])
}

impl Plan {
    fn resolved(self) -> Plan {
        match self {
            Plan::Named(plan) => plan().resolved(),
            plan => plan,
        }
    }

    /// The expected output for a whole body (an object or array): the root always stays.
    fn apply_root(self, body: &Value) -> Value {
        self.apply(body, true).unwrap_or_else(|| match body {
            Value::Array(_) => Value::Array(Vec::new()),
            _ => Value::Object(Map::new()),
        })
    }

    /// What is kept of `value`; containers only when they hold something (or `force`).
    ///
    /// An array or map of marked scalars is kept whole: even empty, or `null` (a clearing).
    fn apply(self, value: &Value, force: bool) -> Option<Value> {
        let plan = self.resolved();
        let whole = match plan {
            Plan::Map(items) | Plan::Array(items) => matches!(items.resolved(), Plan::Keep(_)),
            _ => false,
        };
        match (plan, value) {
            (Plan::Named(_) | Plan::Drop, _) => None,
            (Plan::Keep(mask), _) => keeps_type(mask, value).then(|| value.clone()),
            (Plan::Object(props), Value::Object(object)) => {
                let mut kept = Map::new();
                for (key, v) in object {
                    let child = props.iter().find(|(name, _)| name == key).map(|(_, p)| *p);
                    if let Some(v) = child.and_then(|p| p.apply(v, false)) {
                        kept.insert(key.clone(), v);
                    }
                }
                (force || !kept.is_empty()).then_some(Value::Object(kept))
            }
            (Plan::Map(values), Value::Object(object)) => {
                let kept: Map<String, Value> = object
                    .iter()
                    .filter_map(|(k, v)| Some((k.clone(), values.apply(v, false)?)))
                    .collect();
                let cleared = whole && object.is_empty();
                (force || cleared || !kept.is_empty()).then_some(Value::Object(kept))
            }
            (Plan::Array(items), Value::Array(array)) => {
                let kept: Vec<Value> = array.iter().filter_map(|v| items.apply(v, false)).collect();
                let cleared = whole && array.is_empty();
                (force || cleared || !kept.is_empty()).then_some(Value::Array(kept))
            }
            (Plan::Map(_) | Plan::Array(_), Value::Null) if whole => Some(Value::Null),
            // Not the declared shape: nothing of it is kept.
            (Plan::Object(_) | Plan::Map(_) | Plan::Array(_), _) => None,
        }
    }
}

/// Whether a value of this JSON type may be kept by a `Keep(mask)`.
fn keeps_type(mask: u8, value: &Value) -> bool {
    match value {
        Value::Null => mask & T_NULL != 0,
        Value::Bool(_) => mask & T_BOOLEAN != 0,
        Value::Number(n) => mask & T_NUMBER != 0 || (mask & T_INTEGER != 0 && !n.is_f64()),
        Value::String(_) => mask & T_STRING != 0,
        // No marked leaf of the fixture allows containers.
        Value::Array(_) | Value::Object(_) => false,
    }
}
