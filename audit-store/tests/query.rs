//! The audit log query router (`GET /accounts/{account_id}/logs/audit[/{id}]`), driven
//! in-process with `tower::ServiceExt::oneshot`, the same tests on SQLite and PostgreSQL (see
//! `backend_tests!`). Every answer is compared with an in-memory reference filter over the
//! records the test inserted.

#[macro_use]
mod common;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::IpAddr;
use std::time::Duration;

use audit_layer::escape::visible;
use audit_layer::record::{
    Account, Action, ActionResult, ActionType, Actor, ActorContext, ActorType, AuditRecord, Raw,
    Resource, Timestamp, Token, Zone,
};
use audit_store::model::StoredRecord;
use audit_store::query::{Access, AuditLogRouter};
use audit_store::store::{AuditStore, ChainedStore};
use axum::Router;
use axum::body::Body;
use common::{Fixture, Reply, Rng, TestResult, ms, record_id};
use http::request::Parts;
use http::{Request, StatusCode, header};
use http_body_util::BodyExt;
use serde_json::Value;
use serde_json::value::RawValue;
use tower::ServiceExt;
use uuid::Uuid;

backend_tests!(
    every_filter_and_its_not_form,
    aliases_and_non_canonical_values,
    combinations_and_repeated_values,
    time_range_bounds,
    direction_orders_by_time_then_id,
    limit_default_and_maximum,
    paging_walks_every_record_once,
    paging_survives_concurrent_inserts,
    tampered_cursors_are_rejected,
    cursor_binding_is_unambiguous,
    access_is_checked_and_nothing_leaks,
    every_bad_parameter_is_named,
    injection_payloads_are_inert,
    one_record_is_served_byte_for_byte,
    ndjson_export_honours_filters_and_access,
    no_answer_is_cached_or_sniffed,
);

// ---------------------------------------------------------------------------------------------
// The data set
// ---------------------------------------------------------------------------------------------

const ALPHA: &str = "acc_alpha";
const BETA: &str = "acc_beta";
const GAMMA: &str = "acc_gamma";
/// The default query range: all of March 2025.
const SINCE: &str = "2025-03-01";
const BEFORE: &str = "2025-04-01";

/// The 21 filters of the original API (without aliases).
const FILTERS: [&str; 21] = [
    "action_type",
    "action_result",
    "actor_email",
    "actor_id",
    "actor_ip_address",
    "actor_type",
    "actor_context",
    "actor_token_id",
    "actor_token_name",
    "id",
    "raw_ray_id",
    "raw_method",
    "raw_status_code",
    "raw_uri",
    "resource_id",
    "resource_product",
    "resource_type",
    "resource_scope",
    "zone_id",
    "zone_name",
    "account_name",
];

/// The filters whose values are validated (enumerations, an address, ids, a status code).
const VALIDATED_FILTERS: [&str; 8] = [
    "action_type",
    "action_result",
    "actor_ip_address",
    "actor_type",
    "actor_context",
    "id",
    "audit_log_id",
    "raw_status_code",
];

/// Whether a filter's values are free text (no validation besides length): every other
/// filter, and the `raw_cf_ray_id` alias.
fn is_text_filter(name: &str) -> bool {
    (FILTERS.contains(&name) || name == "raw_cf_ray_id") && !VALIDATED_FILTERS.contains(&name)
}

/// Who acts in the data set.
struct Who {
    email: Option<&'static str>,
    id: Option<&'static str>,
    kind: Option<ActorType>,
    context: Option<ActorContext>,
    token_id: Option<&'static str>,
    token_name: Option<&'static str>,
    has_ip: bool,
}

const ACTORS: [Who; 7] = [
    Who {
        email: Some("alice@example.com"),
        id: Some("user_alice"),
        kind: Some(ActorType::User),
        context: Some(ActorContext::Dash),
        token_id: None,
        token_name: None,
        has_ip: true,
    },
    Who {
        email: Some("bob@example.com"),
        id: Some("user_bob"),
        kind: Some(ActorType::User),
        context: Some(ActorContext::ApiToken),
        token_id: Some("tok_bob_ci"),
        token_name: Some("CI deploy"),
        has_ip: true,
    },
    Who {
        email: Some("carol@example.org"),
        id: Some("user_carol"),
        kind: Some(ActorType::User),
        context: Some(ActorContext::Oauth),
        token_id: Some("tok_carol"),
        token_name: Some("Carol's laptop ✓"),
        has_ip: true,
    },
    Who {
        email: Some("dave@example.net"),
        id: Some("user_dave"),
        kind: Some(ActorType::User),
        context: Some(ActorContext::ApiKey),
        token_id: None,
        token_name: None,
        has_ip: true,
    },
    Who {
        email: None,
        id: Some("svc_billing"),
        kind: Some(ActorType::Account),
        context: Some(ActorContext::ApiToken),
        token_id: Some("tok_billing"),
        token_name: None,
        has_ip: true,
    },
    Who {
        email: None,
        id: Some("system"),
        kind: Some(ActorType::System),
        context: Some(ActorContext::System),
        token_id: None,
        token_name: None,
        has_ip: false,
    },
    // Failed authentication: actor unknown, IP known.
    Who {
        email: None,
        id: None,
        kind: None,
        context: None,
        token_id: None,
        token_name: None,
        has_ip: true,
    },
];

const IPS: [&str; 4] = [
    "192.0.2.10",
    "198.51.100.7",
    "2001:db8::1",
    "2001:db8::beef",
];

/// What a request touches, and the path template it came through.
struct Place {
    scope: Option<&'static str>,
    product: Option<&'static str>,
    kind: Option<&'static str>,
    id_prefix: Option<&'static str>,
    zoned: bool,
    path: &'static str,
}

const PLACES: [Place; 6] = [
    Place {
        scope: Some("accounts"),
        product: Some("alerting"),
        kind: Some("policies"),
        id_prefix: Some("pol_"),
        zoned: false,
        path: "/accounts/{account}/alerting/v3/policies/{id}",
    },
    Place {
        scope: Some("zones"),
        product: Some("dns"),
        kind: Some("records"),
        id_prefix: Some("rec_"),
        zoned: true,
        path: "/zones/{zone}/dns_records/{id}",
    },
    Place {
        scope: Some("zones"),
        product: Some("workers"),
        kind: Some("scripts"),
        id_prefix: Some("script-"),
        zoned: true,
        path: "/zones/{zone}/workers/scripts/{id}",
    },
    Place {
        scope: Some("accounts"),
        product: Some("members"),
        kind: Some("members"),
        id_prefix: None,
        zoned: false,
        path: "/accounts/{account}/members",
    },
    Place {
        scope: Some("user"),
        product: Some("tokens"),
        kind: Some("tokens"),
        id_prefix: Some("tok_"),
        zoned: false,
        path: "/user/tokens/{id}",
    },
    Place {
        scope: None,
        product: None,
        kind: None,
        id_prefix: None,
        zoned: false,
        path: "/login",
    },
];

const ACTION_TYPES: [ActionType; 7] = [
    ActionType::View,
    ActionType::View,
    ActionType::Create,
    ActionType::Update,
    ActionType::Delete,
    ActionType::Login,
    ActionType::Logout,
];

const STATUSES: [u16; 12] = [200, 200, 201, 204, 304, 400, 401, 403, 404, 409, 500, 503];

fn account_names(account: &str) -> &'static [Option<&'static str>] {
    match account {
        // Renamed once, and a directory lookup that sometimes failed.
        ALPHA => &[
            Some("Alpha Corp"),
            Some("Alpha Corp"),
            Some("Alpha Corp"),
            Some("Alpha Inc."),
            None,
        ],
        BETA => &[Some("Beta LLC")],
        _ => &[None],
    }
}

fn zones(account: &str) -> &'static [(&'static str, Option<&'static str>)] {
    match account {
        ALPHA => &[
            ("zone_a1", Some("alpha.example")),
            ("zone_a2", None),
            ("zone_a3", Some("www.alpha.example")),
        ],
        BETA => &[("zone_b1", Some("beta.example"))],
        _ => &[("zone_g1", Some("gamma.example"))],
    }
}

/// A realistic record of `account` (or of none) at `time_ms`.
fn make_record(rng: &mut Rng, account: Option<&str>, time_ms: i64) -> AuditRecord {
    let id = record_id(rng, time_ms);
    let who = rng.pick(&ACTORS);
    let mut kind = *rng.pick(&ACTION_TYPES);
    let place = rng.pick(&PLACES);
    if place.product.is_none() {
        kind = if rng.percent(50) {
            ActionType::Login
        } else {
            ActionType::Logout
        };
    }
    let method = match kind {
        ActionType::View => *rng.pick(&["GET", "GET", "HEAD"]),
        ActionType::Create
        | ActionType::Login
        | ActionType::Logout
        | ActionType::Gap
        | ActionType::Summary
        | ActionType::Other(_) => "POST",
        ActionType::Update => *rng.pick(&["PUT", "PATCH"]),
        ActionType::Delete => "DELETE",
    };
    let status = *rng.pick(&STATUSES);
    let zone = (place.zoned)
        .then(|| *rng.pick(zones(account.unwrap_or(GAMMA))))
        .map(|(id, name)| Zone {
            id: id.to_owned(),
            name: name.map(str::to_owned),
        });
    let resource_id = place
        .id_prefix
        .map(|prefix| format!("{prefix}{}", rng.below(6)));
    let mut uri = place
        .path
        .replace("{account}", account.unwrap_or("none"))
        .replace("{zone}", zone.as_ref().map_or("none", |z| z.id.as_str()))
        .replace("{id}", resource_id.as_deref().unwrap_or(""));
    if kind == ActionType::View && rng.percent(40) {
        uri.push_str("?page=2&per_page=REDACTED");
    }
    let body = (kind != ActionType::View).then(|| {
        serde_json::json!({
            "name": format!("policy {} ✓ «quoted» \"x\"", rng.below(1000)),
            "enabled": rng.percent(50),
            "nested": {"list": [1, 2.5, null, {"z": "last", "a": "first"}]},
        })
    });
    let mut record = AuditRecord {
        id,
        account: account.map(|id| Account {
            id: id.to_owned(),
            name: rng.pick(account_names(id)).map(str::to_owned),
        }),
        action: Action {
            description: Some(format!("{} a {}", kind, place.kind.unwrap_or("session")).into()),
            result: ActionResult::from_status(status),
            time: Timestamp::from_unix_millis(time_ms),
            kind,
        },
        actor: Actor {
            context: who.context,
            email: who.email.map(str::to_owned),
            id: who.id.map(str::to_owned),
            ip_address: who
                .has_ip
                .then(|| rng.pick(&IPS).parse::<IpAddr>().expect("a valid IP")),
            token: Token {
                id: who.token_id.map(str::to_owned),
                name: who.token_name.map(str::to_owned),
            },
            kind: who.kind,
        },
        raw: Raw {
            method: Some(method.to_owned()),
            cf_ray_id: format!("{:016x}", rng.next_u64()),
            status_code: Some(status),
            uri: Some(uri),
            user_agent: Some(
                rng.pick(&["curl/8.5.0", "cloudflare-python/5.0", "Mozilla/5.0"])
                    .to_string(),
            ),
            client_request_id: None,
            client_gone: false,
        },
        resource: Resource {
            id: resource_id,
            product: place.product.map(Into::into),
            request: body.clone().map(Into::into),
            response: body.map(|_| serde_json::json!({"success": true}).into()),
            scope: place.scope.map(Into::into),
            kind: place.kind.map(Into::into),
        },
        zone,
        trace: None,
        service: None,
        change: None,
    };
    // Some are events, not requests: no method, URI or status (NULL columns), an action type
    // of their own.
    if rng.percent(10) {
        record.action.kind = ActionType::from_static("expire");
        record.raw.method = None;
        record.raw.status_code = None;
        record.raw.uri = None;
    }
    record
}

/// The records a test inserted, with the JSON each was stored as.
struct Data {
    records: Vec<AuditRecord>,
    json: HashMap<Uuid, String>,
}

impl Data {
    fn new() -> Self {
        Self {
            records: Vec::new(),
            json: HashMap::new(),
        }
    }

    fn time_of(&self, id: Uuid) -> i64 {
        self.records
            .iter()
            .find(|r| r.id == id)
            .map(|r| r.action.time.unix_millis())
            .expect("a known record")
    }

    /// Inserts `records` (in batches of at most 1,000) and remembers them.
    async fn insert<S: ChainedStore>(
        &mut self,
        store: &S,
        records: Vec<AuditRecord>,
    ) -> TestResult<()> {
        let rows: Vec<StoredRecord> = records
            .iter()
            .map(StoredRecord::from_record)
            .collect::<Result<_, _>>()?;
        for chunk in rows.chunks(1000) {
            let new = store.insert(chunk).await?;
            assert_eq!(new, chunk.len() as u64, "every record is new");
        }
        for row in rows {
            self.json.insert(row.id, row.record);
        }
        self.records.extend(records);
        Ok(())
    }

    /// The ids the API must return for `params` on `account`, in order.
    fn expected(&self, account: &str, params: &[(String, String)]) -> Vec<Uuid> {
        let spec = Spec::of(params);
        let mut hits: Vec<&AuditRecord> = self
            .records
            .iter()
            .filter(|r| r.account.as_ref().is_some_and(|a| a.id == account))
            .filter(|r| spec.matches(r))
            .collect();
        hits.sort_by_key(|r| (r.action.time.unix_millis(), r.id));
        if !spec.asc {
            hits.reverse();
        }
        hits.into_iter().map(|r| r.id).collect()
    }

    /// The distinct values of a filter's field among `account`'s records in March, most
    /// frequent first; and whether some record lacks the field.
    fn values(&self, account: &str, name: &str) -> (Vec<String>, bool) {
        let mut counts: BTreeMap<String, usize> = BTreeMap::new();
        let mut some_null = false;
        let (since, before) = (ms("2025-03-01T00:00:00Z"), ms("2025-04-01T00:00:00Z"));
        for r in &self.records {
            let time = r.action.time.unix_millis();
            if r.account.as_ref().is_none_or(|a| a.id != account) || time < since || time >= before
            {
                continue;
            }
            match field(r, name) {
                Some(v) => *counts.entry(v).or_default() += 1,
                None => some_null = true,
            }
        }
        let mut values: Vec<(String, usize)> = counts.into_iter().collect();
        values.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        (values.into_iter().map(|(v, _)| v).collect(), some_null)
    }
}

/// The standard data set: three accounts (one large), records spread over ten days with
/// same-millisecond ties, records at and just outside the range's edges, records of no
/// account, and one record full of characters that need escaping.
fn dataset() -> Vec<AuditRecord> {
    let mut rng = Rng(0x5eed_0001);
    let mut out = Vec::new();
    for (account, n) in [(ALPHA, 260), (BETA, 90), (GAMMA, 40)] {
        let mut t = ms("2025-03-02T00:00:00Z");
        for _ in 0..n {
            // 15% share the previous record's millisecond.
            if !rng.percent(15) {
                t += 1 + rng.below(100 * 60_000) as i64;
            }
            out.push(make_record(&mut rng, Some(account), t));
        }
        for edge in [
            "2025-02-27T12:00:00Z",
            "2025-02-28T23:59:59.999Z",
            "2025-03-01T00:00:00Z",
            "2025-03-31T23:59:59.999Z",
            "2025-04-01T00:00:00Z",
            "2025-04-03T08:00:00Z",
        ] {
            out.push(make_record(&mut rng, Some(account), ms(edge)));
        }
    }
    for _ in 0..3 {
        let t = ms("2025-03-05T00:00:00Z") + rng.below(86_400_000) as i64;
        out.push(make_record(&mut rng, None, t));
    }
    let mut special = make_record(&mut rng, Some(ALPHA), ms("2025-03-04T04:04:04.404Z"));
    special.action.description = Some("Zürich \u{202e}txet\u{202c} 🚀 \"q\" \\ back\\slash".into());
    special.resource.request = Some(
        serde_json::json!({
            "b": 2, "a": [1, 2.5, -0.0, 1e-7, null, {"z": "\u{0}\u{1f}", "y": "🚀"}], "é": {"k": false}
        })
        .into(),
    );
    special.actor.email = Some("ünïcødé+tag@exämple.com".to_owned());
    out.push(special);
    // Control characters in filterable fields (a record replayed from elsewhere).
    let mut control = make_record(&mut rng, Some(ALPHA), ms("2025-03-05T05:05:05.505Z"));
    control.actor.email = Some("mallory\u{7}@example.com".to_owned());
    control.actor.token.name = Some("tab\there\u{0}".to_owned());
    control.raw.uri = Some("/accounts/acc_alpha/members?q=\u{1b}[31m\u{85}".to_owned());
    out.push(control);
    // Inserted in a scrambled order: storage order must not matter.
    let mut scrambled = Vec::with_capacity(out.len());
    while !out.is_empty() {
        let i = rng.below(out.len());
        scrambled.push(out.swap_remove(i));
    }
    scrambled
}

/// The standard data set loaded into the fixture, and the API over it.
async fn loaded<S: ChainedStore>(fx: &Fixture<S>) -> TestResult<(Data, Api)> {
    Ok((load(fx).await?, Api::new(fx.store.clone())))
}

async fn load<S: ChainedStore>(fx: &Fixture<S>) -> TestResult<Data> {
    let mut data = Data::new();
    let records = dataset();
    // Several batches, as the pipeline would write them.
    let mut rest = records;
    while !rest.is_empty() {
        let tail = rest.split_off(rest.len().saturating_sub(97));
        data.insert(&fx.store, tail).await?;
    }
    Ok(data)
}

// ---------------------------------------------------------------------------------------------
// The reference filter
// ---------------------------------------------------------------------------------------------

fn canonical_name(name: &str) -> &str {
    match name {
        "raw_cf_ray_id" => "raw_ray_id",
        "audit_log_id" => "id",
        other => other,
    }
}

/// A record's value for a filter, as text. Text columns hold control characters escaped
/// (`\x07`), the way the layer writes them; a text filter's value is escaped the same way.
fn field(r: &AuditRecord, name: &str) -> Option<String> {
    let value = record_field(r, name)?;
    Some(if is_text_filter(name) {
        visible(value.as_bytes()).into_owned()
    } else {
        value
    })
}

fn record_field(r: &AuditRecord, name: &str) -> Option<String> {
    let owned = |v: &Option<String>| v.clone();
    let arc = |v: &Option<std::sync::Arc<str>>| v.as_deref().map(str::to_owned);
    match canonical_name(name) {
        "action_type" => Some(r.action.kind.as_str().to_owned()),
        "action_result" => Some(r.action.result.as_str().to_owned()),
        "actor_email" => owned(&r.actor.email),
        "actor_id" => owned(&r.actor.id),
        "actor_ip_address" => r.actor.ip_address.map(|ip| ip.to_string()),
        "actor_type" => r.actor.kind.map(|k| k.as_str().to_owned()),
        "actor_context" => r.actor.context.map(|c| c.as_str().to_owned()),
        "actor_token_id" => owned(&r.actor.token.id),
        "actor_token_name" => owned(&r.actor.token.name),
        "id" => Some(r.id.to_string()),
        "raw_ray_id" => Some(r.raw.cf_ray_id.clone()),
        "raw_method" => r.raw.method.clone(),
        "raw_status_code" => r.raw.status_code.map(|c| c.to_string()),
        "raw_uri" => r.raw.uri.clone(),
        "resource_id" => owned(&r.resource.id),
        "resource_product" => arc(&r.resource.product),
        "resource_type" => arc(&r.resource.kind),
        "resource_scope" => arc(&r.resource.scope),
        "zone_id" => r.zone.as_ref().map(|z| z.id.clone()),
        "zone_name" => r.zone.as_ref().and_then(|z| z.name.clone()),
        "account_name" => r.account.as_ref().and_then(|a| a.name.clone()),
        other => panic!("no filter {other}"),
    }
}

/// A filter value in the form the record's field has (the API accepts equivalent spellings
/// of ids, addresses and status codes).
fn normalize(name: &str, value: &str) -> String {
    match canonical_name(name) {
        "id" => value
            .parse::<Uuid>()
            .map_or_else(|_| value.to_owned(), |u| u.to_string()),
        "actor_ip_address" => value
            .parse::<IpAddr>()
            .map_or_else(|_| value.to_owned(), |ip| ip.to_string()),
        "raw_status_code" => value
            .strip_suffix(".0")
            .unwrap_or(value)
            .parse::<u16>()
            .map_or_else(|_| value.to_owned(), |c| c.to_string()),
        _ if is_text_filter(name) => visible(value.as_bytes()).into_owned(),
        _ => value.to_owned(),
    }
}

fn parse_time(value: &str) -> i64 {
    if let Ok(t) = value.parse::<Timestamp>() {
        return t.unix_millis();
    }
    let format = time::macros::format_description!("[year]-[month]-[day]");
    let date = time::Date::parse(value, &format).expect("a valid test date");
    date.midnight().assume_utc().unix_timestamp() * 1000
}

/// A query as the reference filter understands it.
struct Spec {
    since_ms: i64,
    before_ms: i64,
    asc: bool,
    /// (filter, negated) → values, OR-ed; filters AND-ed.
    filters: BTreeMap<(String, bool), Vec<String>>,
}

impl Spec {
    fn of(params: &[(String, String)]) -> Self {
        let mut spec = Self {
            since_ms: parse_time(SINCE),
            before_ms: parse_time(BEFORE),
            asc: false,
            filters: BTreeMap::new(),
        };
        for (key, value) in params {
            match key.as_str() {
                "since" => spec.since_ms = parse_time(value),
                "before" => spec.before_ms = parse_time(value),
                "direction" => spec.asc = value == "asc",
                "limit" | "cursor" => {}
                _ => {
                    let (name, negated) = match key.strip_suffix(".not") {
                        Some(name) => (name, true),
                        None => (key.as_str(), false),
                    };
                    spec.filters
                        .entry((canonical_name(name).to_owned(), negated))
                        .or_default()
                        .push(normalize(name, value));
                }
            }
        }
        spec
    }

    fn matches(&self, r: &AuditRecord) -> bool {
        let time = r.action.time.unix_millis();
        if time < self.since_ms || time >= self.before_ms {
            return false;
        }
        self.filters.iter().all(|((name, negated), values)| {
            let value = field(r, name);
            let hit = value.as_ref().is_some_and(|v| values.contains(v));
            if *negated { !hit } else { hit }
        })
    }
}

// ---------------------------------------------------------------------------------------------
// The API, in-process
// ---------------------------------------------------------------------------------------------

fn bearer(account: &str) -> String {
    format!("Bearer token-{account}")
}

/// Allowed for the bearer token of the account, Denied for other tokens, Unauthenticated
/// without one.
fn authorize(request: &Parts, account_id: &str) -> Access {
    match request
        .headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    {
        None => Access::Unauthenticated,
        Some(token) if token == bearer(account_id) => Access::Allowed,
        Some(_) => Access::Denied,
    }
}

/// `params` with `since` and `before` added unless given.
fn q(params: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = Vec::new();
    if !params.iter().any(|(k, _)| *k == "since") {
        out.push(("since".into(), SINCE.into()));
    }
    if !params.iter().any(|(k, _)| *k == "before") {
        out.push(("before".into(), BEFORE.into()));
    }
    out.extend(
        params
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned())),
    );
    out
}

fn with(params: &[(String, String)], key: &str, value: &str) -> Vec<(String, String)> {
    let mut out = params.to_vec();
    out.push((key.to_owned(), value.to_owned()));
    out
}

fn encode(params: &[(String, String)]) -> String {
    form_urlencoded::Serializer::new(String::new())
        .extend_pairs(params)
        .finish()
}

fn list_uri(account: &str, params: &[(String, String)]) -> String {
    format!("/accounts/{account}/logs/audit?{}", encode(params))
}

/// A response, read whole.
/// What the query API's answers are checked for, beyond [`Reply`]'s own.
trait Envelope {
    fn error_message(&self) -> TestResult<String>;
}

impl Envelope for Reply {
    /// `errors[0].message` of an error envelope, after checking the envelope.
    fn error_message(&self) -> TestResult<String> {
        let body = self.json()?;
        assert_eq!(body["success"], false, "{body}");
        assert!(body["result"].is_null(), "{body}");
        assert!(body["messages"].is_array(), "{body}");
        assert!(body["errors"][0]["code"].is_u64(), "{body}");
        Ok(body["errors"][0]["message"]
            .as_str()
            .ok_or("errors[0].message is not a string")?
            .to_owned())
    }
}

/// One page of a list answer.
#[derive(Debug)]
struct Page {
    ids: Vec<Uuid>,
    records: Vec<String>,
    cursor: Option<String>,
}

/// Parses and checks a list envelope; the records are kept as the exact bytes served.
fn parse_page(body: &[u8]) -> TestResult<Page> {
    let envelope: Value = serde_json::from_slice(body)?;
    assert_eq!(envelope["success"], true, "{envelope}");
    assert_eq!(envelope["errors"], serde_json::json!([]), "{envelope}");
    assert_eq!(envelope["messages"], serde_json::json!([]), "{envelope}");
    let info = &envelope["result_info"];
    let count = info["count"].as_u64().ok_or("result_info.count")?;
    let cursor = info["cursor"].as_str().map(str::to_owned);
    let after = info["cursors"]["after"].as_str().map(str::to_owned);
    assert!(info["cursors"].is_object(), "result_info.cursors: {info}");
    assert_eq!(cursor, after, "result_info.cursor and cursors.after differ");
    let raw: HashMap<String, Box<RawValue>> = serde_json::from_slice(body)?;
    let result: Vec<Box<RawValue>> = serde_json::from_str(raw["result"].get())?;
    assert_eq!(result.len() as u64, count, "count is the page's length");
    let mut ids = Vec::with_capacity(result.len());
    let mut records = Vec::with_capacity(result.len());
    for record in result {
        let value: Value = serde_json::from_str(record.get())?;
        ids.push(value["id"].as_str().ok_or("record without id")?.parse()?);
        records.push(record.get().to_owned());
    }
    Ok(Page {
        ids,
        records,
        cursor,
    })
}

#[derive(Clone)]
struct Api {
    router: Router,
}

impl Api {
    fn new<S: ChainedStore>(store: S) -> Self {
        Self {
            router: AuditLogRouter::new(store, authorize).into_router(),
        }
    }

    async fn send(&self, uri: &str, auth: Option<&str>, accept: Option<&str>) -> TestResult<Reply> {
        common::get(
            &self.router,
            uri,
            &[(header::AUTHORIZATION, auth), (header::ACCEPT, accept)],
        )
        .await
    }

    /// `GET` one record (or whatever stands where its id goes) as the account's owner.
    async fn one(&self, account: &str, id: &dyn std::fmt::Display) -> TestResult<Reply> {
        let uri = format!("/accounts/{account}/logs/audit/{id}");
        self.send(&uri, Some(&bearer(account)), None).await
    }

    /// `GET` a list as the account's owner.
    async fn get(&self, account: &str, params: &[(String, String)]) -> TestResult<Reply> {
        self.send(&list_uri(account, params), Some(&bearer(account)), None)
            .await
    }

    /// One page, which must be a 200.
    async fn page(&self, account: &str, params: &[(String, String)]) -> TestResult<Page> {
        let reply = self.get(account, params).await?;
        if reply.status != StatusCode::OK {
            return Err(format!(
                "{} for {}: {}",
                reply.status,
                list_uri(account, params),
                reply.text()
            )
            .into());
        }
        assert_eq!(reply.content_type, "application/json");
        parse_page(&reply.body)
    }

    /// Every page of a query, following `result_info.cursors.after`.
    async fn walk(&self, account: &str, params: &[(String, String)]) -> TestResult<Vec<Page>> {
        let limit: usize = params
            .iter()
            .find(|(k, _)| k == "limit")
            .map_or(Ok(100), |(_, v)| v.parse())?;
        let mut pages: Vec<Page> = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let params = match &cursor {
                Some(c) => with(params, "cursor", c),
                None => params.to_vec(),
            };
            let page = self.page(account, &params).await?;
            cursor = page.cursor.clone();
            let last = cursor.is_none();
            if !last {
                assert_eq!(page.ids.len(), limit, "a page before the last is full");
            }
            assert!(page.ids.len() <= limit);
            pages.push(page);
            if last {
                return Ok(pages);
            }
            assert!(pages.len() < 5000, "paging does not end");
        }
    }

    /// Every id of a query, in the order served; also checks every record is byte-for-byte
    /// the JSON inserted.
    async fn ids(
        &self,
        data: &Data,
        account: &str,
        params: &[(String, String)],
    ) -> TestResult<Vec<Uuid>> {
        let params = if params.iter().any(|(k, _)| k == "limit") {
            params.to_vec()
        } else {
            with(params, "limit", "1000")
        };
        let mut ids = Vec::new();
        for page in self.walk(account, &params).await? {
            for (id, record) in page.ids.iter().zip(&page.records) {
                assert_eq!(
                    Some(record),
                    data.json.get(id),
                    "record {id} not served byte for byte"
                );
            }
            ids.extend(page.ids);
        }
        Ok(ids)
    }

    /// Checks that `params` on `account` answers exactly the reference's records, in order.
    async fn check(
        &self,
        data: &Data,
        account: &str,
        params: &[(String, String)],
    ) -> TestResult<Vec<Uuid>> {
        let got = self.ids(data, account, params).await?;
        let want = data.expected(account, params);
        if got != want {
            let g: HashSet<_> = got.iter().collect();
            let w: HashSet<_> = want.iter().collect();
            return Err(format!(
                "{}: got {} records, want {} ({} missing, {} unexpected; same set: {})",
                encode(params),
                got.len(),
                want.len(),
                w.difference(&g).count(),
                g.difference(&w).count(),
                g == w,
            )
            .into());
        }
        Ok(got)
    }
}

// ---------------------------------------------------------------------------------------------
// Filters
// ---------------------------------------------------------------------------------------------

async fn every_filter_and_its_not_form<S: ChainedStore>(fx: &Fixture<S>) -> TestResult {
    let (data, api) = loaded(fx).await?;
    let everything = api.check(&data, ALPHA, &q(&[])).await?;
    assert!(everything.len() > 250, "the data set is large enough");
    for name in FILTERS {
        let (values, some_null) = data.values(ALPHA, name);
        assert!(values.len() >= 2, "{name}: the data set has two values");
        let (v1, v2) = (values[0].as_str(), values[1].as_str());
        let not = format!("{name}.not");
        let positive = api.check(&data, ALPHA, &q(&[(name, v1)])).await?;
        assert!(!positive.is_empty(), "{name}={v1} matches something");
        let negative = api.check(&data, ALPHA, &q(&[(&not, v1)])).await?;
        assert_eq!(
            positive.len() + negative.len(),
            everything.len(),
            "{name}: the filter and its .not form partition the records (NULLs in .not)"
        );
        api.check(&data, ALPHA, &q(&[(name, v1), (name, v2)]))
            .await?;
        api.check(&data, ALPHA, &q(&[(&not, v1), (&not, v2)]))
            .await?;
        let none = api
            .check(&data, ALPHA, &q(&[(name, v1), (&not, v1)]))
            .await?;
        assert!(none.is_empty(), "{name}: x and not x");
        // Direction does not change the set.
        api.check(&data, ALPHA, &q(&[(name, v2), ("direction", "asc")]))
            .await?;
        if some_null {
            // A record without the field is not matched by any value, but by every .not.
            let nulls = data
                .expected(ALPHA, &q(&[]))
                .into_iter()
                .filter(|id| {
                    let r = data.records.iter().find(|r| r.id == *id).expect("known");
                    field(r, name).is_none()
                })
                .count();
            assert!(nulls > 0);
            let all_values: Vec<(&str, &str)> =
                values.iter().map(|v| (not.as_str(), v.as_str())).collect();
            let only_nulls = api.check(&data, ALPHA, &q(&all_values)).await?;
            assert_eq!(
                only_nulls.len(),
                nulls,
                "{name}.not of every value: the NULLs"
            );
        }
        if is_text_filter(name) {
            let nothing = api
                .check(&data, ALPHA, &q(&[(name, "no such value")]))
                .await?;
            assert!(nothing.is_empty());
        }
        // Another account's values stay in their account.
        api.check(&data, BETA, &q(&[(name, v1)])).await?;
    }
    Ok(())
}

async fn aliases_and_non_canonical_values<S: ChainedStore>(fx: &Fixture<S>) -> TestResult {
    let (data, api) = loaded(fx).await?;
    let all = data.expected(ALPHA, &q(&[]));
    let (r1, r2) = (
        data.records.iter().find(|r| r.id == all[3]).ok_or("r1")?,
        data.records.iter().find(|r| r.id == all[40]).ok_or("r2")?,
    );
    let (ray1, ray2) = (r1.raw.cf_ray_id.as_str(), r2.raw.cf_ray_id.as_str());
    let (id1, id2) = (r1.id.to_string(), r2.id.to_string());

    let by_ray = api.check(&data, ALPHA, &q(&[("raw_ray_id", ray1)])).await?;
    assert_eq!(by_ray, vec![r1.id]);
    let by_alias = api
        .check(&data, ALPHA, &q(&[("raw_cf_ray_id", ray1)]))
        .await?;
    assert_eq!(by_alias, by_ray, "raw_cf_ray_id is raw_ray_id");
    // The name and its alias are one filter: their values are OR-ed.
    let both = api
        .check(
            &data,
            ALPHA,
            &q(&[("raw_ray_id", ray1), ("raw_cf_ray_id", ray2)]),
        )
        .await?;
    assert_eq!(both.len(), 2);
    let not = api
        .check(
            &data,
            ALPHA,
            &q(&[("raw_cf_ray_id.not", ray1), ("raw_ray_id.not", ray2)]),
        )
        .await?;
    assert_eq!(not.len(), all.len() - 2);

    // Values the v2 API allows that no record of this log holds select nothing, and their
    // `.not` forms everything (records without an actor type or context included).
    for (name, value) in [
        ("actor_type", "cloudflare_admin"),
        ("actor_context", "origin_ca_key"),
    ] {
        let none = api.check(&data, ALPHA, &q(&[(name, value)])).await?;
        assert!(none.is_empty(), "{name}={value}: {none:?}");
        let not = format!("{name}.not");
        let every = api
            .check(&data, ALPHA, &q(&[(not.as_str(), value)]))
            .await?;
        assert_eq!(every, all, "{not}={value}");
    }

    let by_id = api.check(&data, ALPHA, &q(&[("id", &id1)])).await?;
    assert_eq!(by_id, vec![r1.id]);
    assert_eq!(
        api.check(&data, ALPHA, &q(&[("audit_log_id", &id1)]))
            .await?,
        by_id,
        "audit_log_id is id"
    );
    let two = api
        .check(&data, ALPHA, &q(&[("id", &id1), ("audit_log_id", &id2)]))
        .await?;
    assert_eq!(two.len(), 2);
    let not = api
        .check(&data, ALPHA, &q(&[("audit_log_id.not", &id1)]))
        .await?;
    assert_eq!(not.len(), all.len() - 1);
    // Other spellings of the same UUID.
    for spelling in [
        id1.to_uppercase(),
        r1.id.simple().to_string(),
        r1.id.urn().to_string(),
    ] {
        let got = api.check(&data, ALPHA, &q(&[("id", &spelling)])).await?;
        assert_eq!(got, vec![r1.id], "id={spelling}");
    }
    // Another account's id matches nothing here.
    let beta_id = data.expected(BETA, &q(&[]))[0].to_string();
    assert!(
        api.check(&data, ALPHA, &q(&[("id", &beta_id)]))
            .await?
            .is_empty()
    );

    // Equivalent spellings of addresses and status codes.
    let v6 = api
        .check(&data, ALPHA, &q(&[("actor_ip_address", "2001:db8::1")]))
        .await?;
    assert!(!v6.is_empty());
    assert_eq!(
        api.check(
            &data,
            ALPHA,
            &q(&[("actor_ip_address", "2001:0DB8:0000::0001")])
        )
        .await?,
        v6
    );
    let e404 = api
        .check(&data, ALPHA, &q(&[("raw_status_code", "404")]))
        .await?;
    assert!(!e404.is_empty());
    assert_eq!(
        api.check(&data, ALPHA, &q(&[("raw_status_code", "404.0")]))
            .await?,
        e404,
        "clients that type numbers as floats"
    );

    // A cursor minted for a filter works with its alias (the same query).
    let params = q(&[("raw_ray_id.not", ray1), ("limit", "5")]);
    let first = api.page(ALPHA, &params).await?;
    let cursor = first.cursor.ok_or("a second page")?;
    let aliased = q(&[
        ("raw_cf_ray_id.not", ray1),
        ("limit", "5"),
        ("cursor", &cursor),
    ]);
    let second = api.page(ALPHA, &aliased).await?;
    let want = data.expected(ALPHA, &params);
    assert_eq!(second.ids, want[5..10].to_vec());
    Ok(())
}

async fn combinations_and_repeated_values<S: ChainedStore>(fx: &Fixture<S>) -> TestResult {
    let (data, api) = loaded(fx).await?;
    let combos: Vec<Vec<(&str, &str)>> = vec![
        vec![
            ("action_type", "create"),
            ("action_type", "update"),
            ("actor_email", "alice@example.com"),
        ],
        vec![
            ("action_result", "failure"),
            ("raw_status_code", "500"),
            ("raw_status_code", "503"),
        ],
        vec![
            ("resource_product", "dns"),
            ("zone_id", "zone_a1"),
            ("action_type.not", "view"),
        ],
        vec![
            ("actor_type", "user"),
            ("actor_context.not", "dash"),
            ("actor_token_id.not", "tok_bob_ci"),
        ],
        vec![
            ("account_name.not", "Alpha Corp"),
            ("zone_name.not", "alpha.example"),
        ],
        vec![
            ("actor_email", "alice@example.com"),
            ("actor_email", "bob@example.com"),
            ("actor_email.not", "bob@example.com"),
        ],
        vec![
            ("resource_scope", "zones"),
            ("resource_type", "records"),
            ("resource_type", "scripts"),
            ("raw_method", "DELETE"),
            ("raw_method", "PATCH"),
            ("actor_ip_address.not", "192.0.2.10"),
        ],
        vec![
            ("resource_id", "pol_1"),
            ("resource_id", "rec_1"),
            ("resource_id", "script-1"),
            ("action_result", "success"),
            ("actor_id.not", "system"),
        ],
        vec![
            ("raw_uri", "/accounts/acc_alpha/members"),
            ("action_type", "view"),
        ],
        vec![("action_type", "view"), ("action_type.not", "view")],
    ];
    for combo in &combos {
        for direction in ["desc", "asc"] {
            let mut params = q(combo);
            params.push(("direction".into(), direction.into()));
            api.check(&data, ALPHA, &params).await?;
            api.check(&data, BETA, &params).await?;
        }
    }
    // Every .not form at once, each with a value that matches some records.
    let mut all_not: Vec<(String, String)> = Vec::new();
    for name in FILTERS {
        let (values, _) = data.values(ALPHA, name);
        all_not.push((format!("{name}.not"), values[values.len() - 1].clone()));
    }
    let all_not: Vec<(&str, &str)> = all_not
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    api.check(&data, ALPHA, &q(&all_not)).await?;

    // 100 values in one query is the most allowed, and they are OR-ed.
    let mut many: Vec<(String, String)> = (0..99)
        .map(|i| ("actor_email".to_owned(), format!("nobody{i}@example.com")))
        .collect();
    many.push(("actor_email".into(), "carol@example.org".into()));
    let many: Vec<(&str, &str)> = many.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let carol = api.check(&data, ALPHA, &q(&many)).await?;
    assert!(!carol.is_empty());
    Ok(())
}

async fn time_range_bounds<S: ChainedStore>(fx: &Fixture<S>) -> TestResult {
    let (data, api) = loaded(fx).await?;
    let march = api.check(&data, ALPHA, &q(&[])).await?;
    // `since` is inclusive, `before` exclusive: the records at 2025-03-01T00:00:00.000Z and
    // 2025-03-31T23:59:59.999Z are in, those at 2025-02-28T23:59:59.999Z and
    // 2025-04-01T00:00:00.000Z are out.
    let times: HashSet<i64> = march.iter().map(|id| data.time_of(*id)).collect();
    assert!(times.contains(&ms("2025-03-01T00:00:00Z")));
    assert!(times.contains(&ms("2025-03-31T23:59:59.999Z")));
    assert!(!times.contains(&ms("2025-02-28T23:59:59.999Z")));
    assert!(!times.contains(&ms("2025-04-01T00:00:00Z")));
    // The same range in other spellings.
    for (since, before) in [
        ("2025-03-01T00:00:00Z", "2025-04-01T00:00:00.000Z"),
        ("2025-03-01T01:00:00+01:00", "2025-03-31T19:00:00-05:00"),
        ("2025-03-01T00:00:00.000Z", "2025-04-01"),
    ] {
        let got = api
            .check(&data, ALPHA, &q(&[("since", since), ("before", before)]))
            .await?;
        assert_eq!(got, march, "since={since} before={before}");
    }
    // Wider and narrower ranges.
    api.check(
        &data,
        ALPHA,
        &q(&[("since", "2025-01-01"), ("before", "2026-01-01")]),
    )
    .await?;
    api.check(
        &data,
        ALPHA,
        &q(&[("since", "2025-03-04"), ("before", "2025-03-06")]),
    )
    .await?;
    // A one-millisecond window holds exactly the records of that millisecond.
    let t = data.time_of(march[17]);
    let (since, before) = (
        Timestamp::from_unix_millis(t).to_string(),
        Timestamp::from_unix_millis(t + 1).to_string(),
    );
    let one_ms = api
        .check(&data, ALPHA, &q(&[("since", &since), ("before", &before)]))
        .await?;
    assert!(one_ms.contains(&march[17]));
    assert!(one_ms.iter().all(|id| data.time_of(*id) == t));
    // A range with nothing in it.
    let empty = api
        .check(
            &data,
            ALPHA,
            &q(&[("since", "2024-01-01"), ("before", "2024-02-01")]),
        )
        .await?;
    assert!(empty.is_empty());
    let page = api
        .page(
            ALPHA,
            &q(&[("since", "2024-01-01"), ("before", "2024-02-01")]),
        )
        .await?;
    assert!(page.cursor.is_none());
    Ok(())
}

async fn direction_orders_by_time_then_id<S: ChainedStore>(fx: &Fixture<S>) -> TestResult {
    let (data, api) = loaded(fx).await?;
    let default = api.check(&data, ALPHA, &q(&[])).await?;
    let desc = api
        .check(&data, ALPHA, &q(&[("direction", "desc")]))
        .await?;
    let asc = api.check(&data, ALPHA, &q(&[("direction", "asc")])).await?;
    assert_eq!(default, desc, "desc is the default");
    let mut reversed = asc.clone();
    reversed.reverse();
    assert_eq!(desc, reversed);
    // Strictly increasing (time, id), with same-millisecond ties ordered by id.
    let keys: Vec<(i64, Uuid)> = asc.iter().map(|id| (data.time_of(*id), *id)).collect();
    assert!(
        keys.windows(2).all(|w| w[0] < w[1]),
        "asc is (time, id) order"
    );
    let ties = keys.windows(2).filter(|w| w[0].0 == w[1].0).count();
    assert!(
        ties > 10,
        "the data set has same-millisecond records ({ties})"
    );
    Ok(())
}

async fn limit_default_and_maximum<S: ChainedStore>(fx: &Fixture<S>) -> TestResult {
    let (mut data, api) = loaded(fx).await?;
    let want = data.expected(ALPHA, &q(&[]));
    let page = api.page(ALPHA, &q(&[])).await?;
    assert_eq!(page.ids, want[..100].to_vec(), "100 by default");
    assert!(page.cursor.is_some());
    for (limit, n) in [("1", 1), ("37", 37), ("100.0", 100), ("1000.0", want.len())] {
        let page = api.page(ALPHA, &q(&[("limit", limit)])).await?;
        assert_eq!(page.ids, want[..n].to_vec(), "limit={limit}");
        assert_eq!(page.cursor.is_some(), n < want.len());
    }

    // An account with more than 1,000 records: 1,000 is the largest page.
    let mut rng = Rng(77);
    let big: Vec<AuditRecord> = (0..1003)
        .map(|i| {
            make_record(
                &mut rng,
                Some("acc_big"),
                ms("2025-03-10T00:00:00Z") + i * 1000,
            )
        })
        .collect();
    data.insert(&fx.store, big).await?;
    let want = data.expected("acc_big", &q(&[]));
    assert_eq!(want.len(), 1003);
    let first = api.page("acc_big", &q(&[("limit", "1000")])).await?;
    assert_eq!(first.ids, want[..1000].to_vec());
    let cursor = first.cursor.ok_or("a cursor after 1,000")?;
    let second = api
        .page("acc_big", &q(&[("limit", "1000"), ("cursor", &cursor)]))
        .await?;
    assert_eq!(second.ids, want[1000..].to_vec());
    assert!(second.cursor.is_none(), "the last page has no cursor");
    let reply = api.get("acc_big", &q(&[("limit", "1001")])).await?;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    assert!(reply.error_message()?.contains("'limit'"));
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Paging
// ---------------------------------------------------------------------------------------------

async fn paging_walks_every_record_once<S: ChainedStore>(fx: &Fixture<S>) -> TestResult {
    let (mut data, api) = loaded(fx).await?;
    for (filters, limits) in [
        (vec![], &["7", "100"][..]),
        (vec![("action_type.not", "view")], &["7", "100"][..]),
        (
            vec![
                ("actor_email", "alice@example.com"),
                ("actor_email", "carol@example.org"),
            ],
            &["1", "7"][..],
        ),
        (vec![("zone_name.not", "alpha.example")], &["7", "100"][..]),
    ] {
        for direction in ["desc", "asc"] {
            for limit in limits {
                let mut params = q(&filters);
                params.push(("direction".into(), direction.into()));
                params.push(("limit".into(), (*limit).into()));
                let got = api.check(&data, ALPHA, &params).await?;
                let unique: HashSet<_> = got.iter().collect();
                assert_eq!(unique.len(), got.len(), "no record twice");
                // A range wholly in the past always returns the same records.
                assert_eq!(api.ids(&data, ALPHA, &params).await?, got);
            }
        }
    }
    // Exactly two full pages: the second has no cursor, and there is no empty third page.
    let mut rng = Rng(99);
    let even: Vec<AuditRecord> = (0..14)
        .map(|i| {
            make_record(
                &mut rng,
                Some("acc_even"),
                ms("2025-03-10T00:00:00Z") + i / 3,
            )
        })
        .collect();
    data.insert(&fx.store, even).await?;
    let pages = api.walk("acc_even", &q(&[("limit", "7")])).await?;
    assert_eq!(pages.len(), 2);
    assert!(pages[0].cursor.is_some() && pages[1].cursor.is_none());
    assert_eq!(pages[1].ids.len(), 7);
    let ids: Vec<Uuid> = pages.into_iter().flat_map(|p| p.ids).collect();
    assert_eq!(ids, data.expected("acc_even", &q(&[])));
    // Nothing at all: an empty page without a cursor.
    let pages = api.walk("acc_empty", &q(&[("limit", "7")])).await?;
    assert_eq!(pages.len(), 1);
    assert!(pages[0].ids.is_empty() && pages[0].cursor.is_none());
    // A client may change the page size between pages.
    let want = data.expected(ALPHA, &q(&[]));
    let first = api.page(ALPHA, &q(&[("limit", "10")])).await?;
    let cursor = first.cursor.ok_or("cursor")?;
    let second = api
        .page(ALPHA, &q(&[("limit", "25"), ("cursor", &cursor)]))
        .await?;
    assert_eq!(second.ids, want[10..35].to_vec());
    Ok(())
}

async fn paging_survives_concurrent_inserts<S: ChainedStore>(fx: &Fixture<S>) -> TestResult {
    let (mut data, api) = loaded(fx).await?;
    let mut rng = Rng(4242);
    for filters in [vec![], vec![("action_type.not", "view")]] {
        for direction in ["desc", "asc"] {
            let mut params = q(&filters);
            params.push(("direction".into(), direction.into()));
            params.push(("limit".into(), "7".into()));
            let spec = Spec::of(&params);
            let original = data.expected(ALPHA, &params);
            let mut seen: Vec<Uuid> = Vec::new();
            // New matching records inserted ahead of the position reached: must be served.
            let mut ahead: Vec<Uuid> = Vec::new();
            let mut cursor: Option<String> = None;
            loop {
                let request = match &cursor {
                    Some(c) => with(&params, "cursor", c),
                    None => params.clone(),
                };
                let page = api.page(ALPHA, &request).await?;
                seen.extend(&page.ids);
                let Some(next) = page.cursor else { break };
                cursor = Some(next);
                // Between two pages, records arrive: newer than everything, in the middle of
                // the range, and in the very millisecond of the last record served.
                let last = *seen.last().ok_or("a full page")?;
                let last_key = (data.time_of(last), last);
                let newest = data
                    .records
                    .iter()
                    .map(|r| r.action.time.unix_millis())
                    .filter(|t| *t < ms("2025-03-31T00:00:00Z"))
                    .max()
                    .unwrap_or(0);
                let times = [
                    newest + 1 + rng.below(3_600_000) as i64,
                    ms("2025-03-02T00:00:00Z") + rng.below(10 * 86_400_000) as i64,
                    last_key.0,
                ];
                let fresh: Vec<AuditRecord> = times
                    .iter()
                    .map(|t| make_record(&mut rng, Some(ALPHA), *t))
                    .collect();
                for r in &fresh {
                    let key = (r.action.time.unix_millis(), r.id);
                    let beyond = if spec.asc {
                        key > last_key
                    } else {
                        key < last_key
                    };
                    if beyond && spec.matches(r) {
                        ahead.push(r.id);
                    }
                }
                data.insert(&fx.store, fresh).await?;
                assert!(seen.len() < 5000, "paging does not end");
            }
            let unique: HashSet<Uuid> = seen.iter().copied().collect();
            assert_eq!(
                unique.len(),
                seen.len(),
                "{direction}: a record served twice"
            );
            let of_original: Vec<Uuid> = seen
                .iter()
                .copied()
                .filter(|id| original.contains(id))
                .collect();
            assert_eq!(
                of_original, original,
                "{direction} {filters:?}: the original records, each once, in order"
            );
            let keys: Vec<(i64, Uuid)> = seen.iter().map(|id| (data.time_of(*id), *id)).collect();
            assert!(
                keys.windows(2)
                    .all(|w| if spec.asc { w[0] < w[1] } else { w[0] > w[1] }),
                "{direction}: served in order"
            );
            for id in &ahead {
                assert!(
                    unique.contains(id),
                    "{direction}: a record inserted ahead of the cursor was skipped"
                );
            }
            assert!(!ahead.is_empty());
        }
    }
    Ok(())
}

async fn tampered_cursors_are_rejected<S: ChainedStore>(fx: &Fixture<S>) -> TestResult {
    let (data, api) = loaded(fx).await?;
    let params = q(&[("action_type.not", "view"), ("limit", "5")]);
    let first = api.page(ALPHA, &params).await?;
    let cursor = first.cursor.ok_or("a cursor")?;
    // The genuine cursor works.
    let second = api.page(ALPHA, &with(&params, "cursor", &cursor)).await?;
    assert_eq!(second.ids, data.expected(ALPHA, &params)[5..10].to_vec());

    let rejected = |reply: Reply, what: &str| -> TestResult {
        assert_eq!(
            reply.status,
            StatusCode::BAD_REQUEST,
            "{what}: {}",
            reply.text()
        );
        let message = reply.error_message()?;
        assert!(message.contains("cursor"), "{what}: {message}");
        Ok(())
    };

    // One character edited anywhere.
    let chars: Vec<char> = cursor.chars().collect();
    for i in 0..chars.len() {
        for replacement in ['A', 'B', 'f', 'z', '0', '9', '-', '_'] {
            if chars[i] == replacement {
                continue;
            }
            let mut edited = chars.clone();
            edited[i] = replacement;
            let edited: String = edited.into_iter().collect();
            let reply = api.get(ALPHA, &with(&params, "cursor", &edited)).await?;
            rejected(reply, &format!("char {i} → {replacement}"))?;
        }
    }
    // One byte edited anywhere (every bit of every decoded byte).
    use base64::Engine;
    let engine = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let bytes = engine.decode(&cursor)?;
    for i in 0..bytes.len() {
        for bit in 0..8 {
            let mut edited = bytes.clone();
            edited[i] ^= 1 << bit;
            let reply = api
                .get(ALPHA, &with(&params, "cursor", &engine.encode(&edited)))
                .await?;
            rejected(reply, &format!("byte {i} bit {bit}"))?;
        }
    }
    // Truncated, extended, re-padded, and garbage.
    let garbage: Vec<String> = vec![
        cursor[..cursor.len() - 1].to_owned(),
        format!("{cursor}A"),
        format!("{cursor}="),
        cursor[1..].to_owned(),
        cursor.replace('-', "+").replace('_', "/"),
        String::new(),
        "garbage".into(),
        "not base64 !".into(),
        "🙂".into(),
        "\u{0}".into(),
        "' OR 1=1 --".into(),
        "A".repeat(10_000),
    ];
    for g in &garbage {
        if *g == cursor {
            continue;
        }
        let reply = api.get(ALPHA, &with(&params, "cursor", g)).await?;
        let shown: String = g.chars().take(20).collect();
        rejected(reply, &format!("cursor {shown:?}"))?;
    }

    // A genuine cursor used for another query.
    let beta_first = api.page(BETA, &params).await?;
    let beta_cursor = beta_first.cursor.ok_or("a beta cursor")?;
    rejected(
        api.get(ALPHA, &with(&params, "cursor", &beta_cursor))
            .await?,
        "another account's cursor",
    )?;
    rejected(
        api.get(BETA, &with(&params, "cursor", &cursor)).await?,
        "a cursor used on another account",
    )?;
    let others: Vec<Vec<(String, String)>> = vec![
        q(&[("action_type.not", "create"), ("limit", "5")]),
        q(&[("action_type", "view"), ("limit", "5")]),
        q(&[("limit", "5")]),
        q(&[
            ("action_type.not", "view"),
            ("action_type.not", "create"),
            ("limit", "5"),
        ]),
        q(&[
            ("action_type.not", "view"),
            ("actor_type", "user"),
            ("limit", "5"),
        ]),
        q(&[
            ("action_type.not", "view"),
            ("direction", "asc"),
            ("limit", "5"),
        ]),
        q(&[
            ("action_type.not", "view"),
            ("since", "2025-03-02"),
            ("limit", "5"),
        ]),
        q(&[
            ("action_type.not", "view"),
            ("before", "2025-03-30"),
            ("limit", "5"),
        ]),
    ];
    for other in &others {
        rejected(
            api.get(ALPHA, &with(other, "cursor", &cursor)).await?,
            &format!("cursor used with {}", encode(other)),
        )?;
    }
    // Parameter order and the limit are not part of the query's identity.
    let reordered = vec![
        ("limit".to_owned(), "3".to_owned()),
        ("action_type.not".to_owned(), "view".to_owned()),
        ("before".to_owned(), BEFORE.to_owned()),
        ("since".to_owned(), SINCE.to_owned()),
        ("cursor".to_owned(), cursor.clone()),
    ];
    let page = api.page(ALPHA, &reordered).await?;
    assert_eq!(page.ids, data.expected(ALPHA, &params)[5..8].to_vec());

    // Cursors are signed per router: another instance (another key) refuses them, unless
    // the instances share a key.
    let restarted = Api::new(fx.store.clone());
    rejected(
        restarted
            .get(ALPHA, &with(&params, "cursor", &cursor))
            .await?,
        "a cursor of another router instance",
    )?;
    let key = [7u8; 32];
    let a = Api {
        router: AuditLogRouter::new(fx.store.clone(), authorize)
            .cursor_key(key)
            .into_router(),
    };
    let b = Api {
        router: AuditLogRouter::new(fx.store.clone(), authorize)
            .cursor_key(key)
            .into_router(),
    };
    let shared = a.page(ALPHA, &params).await?.cursor.ok_or("cursor")?;
    let page = b.page(ALPHA, &with(&params, "cursor", &shared)).await?;
    assert_eq!(page.ids, second.ids);
    Ok(())
}

async fn cursor_binding_is_unambiguous<S: ChainedStore>(fx: &Fixture<S>) -> TestResult {
    let (_data, api) = loaded(fx).await?;
    // Two different queries whose canonical forms must not collide: a filter value holding
    // the binding's separators must not pass for several filters or several values.
    let cases = [
        (
            q(&[
                ("actor_email", "alice@example.com"),
                ("actor_id", "user_alice"),
                ("limit", "2"),
            ]),
            q(&[
                ("actor_email", "alice@example.com|actor_id=t:user_alice"),
                ("limit", "2"),
            ]),
        ),
        (
            q(&[
                ("actor_email", "alice@example.com"),
                ("actor_email", "bob@example.com"),
                ("limit", "2"),
            ]),
            q(&[
                ("actor_email", "alice@example.com\u{1f}t:bob@example.com"),
                ("limit", "2"),
            ]),
        ),
    ];
    let mut accepted = Vec::new();
    for (minted_for, used_with) in &cases {
        let cursor = api
            .page(ALPHA, minted_for)
            .await?
            .cursor
            .ok_or("a cursor")?;
        let reply = api.get(ALPHA, &with(used_with, "cursor", &cursor)).await?;
        if reply.status != StatusCode::BAD_REQUEST {
            accepted.push(format!(
                "a cursor minted for `{}` was accepted ({}) for `{}`",
                encode(minted_for),
                reply.status,
                encode(used_with)
            ));
        }
    }
    assert!(accepted.is_empty(), "{accepted:#?}");
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Access
// ---------------------------------------------------------------------------------------------

async fn access_is_checked_and_nothing_leaks<S: ChainedStore>(fx: &Fixture<S>) -> TestResult {
    let (data, api) = loaded(fx).await?;
    let alpha_ids = data.expected(ALPHA, &q(&[]));
    let alpha_record = alpha_ids[0];
    let beta_record = data.expected(BETA, &q(&[]))[0];
    let cursor = api
        .page(ALPHA, &q(&[("limit", "3")]))
        .await?
        .cursor
        .ok_or("cursor")?;
    let leaks = |reply: &Reply, what: &str| {
        let text = reply.text();
        for needle in [
            ALPHA, "alpha", "Alpha", "@example", "user_", "zone_", "policies",
        ] {
            assert!(
                !text.contains(needle),
                "{what}: the 404 leaks {needle:?}: {text}"
            );
        }
        for id in &alpha_ids {
            assert!(
                !text.contains(&id.to_string()),
                "{what}: the 404 leaks a record id"
            );
        }
    };
    let list = list_uri(ALPHA, &q(&[]));
    let one = format!("/accounts/{ALPHA}/logs/audit/{alpha_record}");
    let with_cursor = list_uri(ALPHA, &q(&[("limit", "3"), ("cursor", &cursor)]));
    let bad_params = list_uri(ALPHA, &q(&[("colour", "red")]));
    let mut not_found_bodies = HashSet::new();
    for (uri, accept) in [
        (&list, None),
        (&list, Some("application/x-ndjson")),
        (&one, None),
        (&with_cursor, None),
        // Parameters are not even looked at for a caller without access.
        (&bad_params, None),
    ] {
        // Another account's token: 404, as if the account did not exist.
        let reply = api.send(uri, Some(&bearer(BETA)), accept).await?;
        assert_eq!(
            reply.status,
            StatusCode::NOT_FOUND,
            "{uri}: {}",
            reply.text()
        );
        assert_eq!(reply.content_type, "application/json");
        reply.error_message()?;
        leaks(&reply, uri);
        not_found_bodies.insert(reply.body.clone());
        // A token of nobody: the same 404.
        let reply = api.send(uri, Some("Bearer nonsense"), accept).await?;
        assert_eq!(reply.status, StatusCode::NOT_FOUND);
        leaks(&reply, uri);
        not_found_bodies.insert(reply.body.clone());
        // No credentials: 401.
        let reply = api.send(uri, None, accept).await?;
        assert_eq!(
            reply.status,
            StatusCode::UNAUTHORIZED,
            "{uri}: {}",
            reply.text()
        );
        reply.error_message()?;
        leaks(&reply, uri);
    }
    // An account that does not exist answers exactly as an existing one the caller may not see.
    let reply = api
        .send(&list_uri("acc_nope", &q(&[])), Some(&bearer(BETA)), None)
        .await?;
    assert_eq!(reply.status, StatusCode::NOT_FOUND);
    not_found_bodies.insert(reply.body.clone());
    assert_eq!(not_found_bodies.len(), 1, "every 404 is the same");

    // A record of another account through one's own account: 404, nothing leaked.
    let reply = api.one(ALPHA, &beta_record).await?;
    assert_eq!(reply.status, StatusCode::NOT_FOUND);
    assert!(!reply.text().contains(&beta_record.to_string()));
    assert!(!reply.text().contains(BETA));
    // An existing account with access sees its own, and nothing else.
    let beta = api.check(&data, BETA, &q(&[])).await?;
    assert!(beta.iter().all(|id| !alpha_ids.contains(id)));
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Bad parameters
// ---------------------------------------------------------------------------------------------

async fn every_bad_parameter_is_named<S: ChainedStore>(fx: &Fixture<S>) -> TestResult {
    let (_data, api) = loaded(fx).await?;
    let base = format!("since={SINCE}&before={BEFORE}");
    let long = "x".repeat(1025);
    let many: String = (0..101).map(|i| format!("&actor_email=a{i}%40x")).collect();
    let cases: Vec<(String, &str)> = vec![
        (format!("before={BEFORE}"), "since"),
        (format!("since={SINCE}"), "before"),
        (String::new(), "since"),
        (format!("since=yesterday&before={BEFORE}"), "since"),
        (format!("since=&before={BEFORE}"), "since"),
        (format!("since=2025-02-30&before={BEFORE}"), "since"),
        (
            format!("since=2025-03-01T25:00:00Z&before={BEFORE}"),
            "since",
        ),
        (format!("since=1741000000&before={BEFORE}"), "since"),
        (format!("since={SINCE}&before=2025-13-01"), "before"),
        (
            format!("since={SINCE}&before=2025-03-01T00:00:00"),
            "before",
        ),
        (format!("{base}&since={SINCE}"), "since"),
        (format!("{base}&limit=0"), "limit"),
        (format!("{base}&limit=1001"), "limit"),
        (format!("{base}&limit=abc"), "limit"),
        (format!("{base}&limit=-1"), "limit"),
        (format!("{base}&limit=1.5"), "limit"),
        (format!("{base}&limit="), "limit"),
        (format!("{base}&limit=99999999999999999999"), "limit"),
        (format!("{base}&limit=5&limit=6"), "limit"),
        (format!("{base}&direction=up"), "direction"),
        (format!("{base}&direction=DESC"), "direction"),
        (format!("{base}&action_type=Edit"), "action_type"),
        (format!("{base}&action_type.not=no%20such"), "action_type"),
        (format!("{base}&action_result=maybe"), "action_result"),
        (format!("{base}&actor_type=robot"), "actor_type"),
        (format!("{base}&actor_context=cookie"), "actor_context"),
        (format!("{base}&raw_status_code=abc"), "raw_status_code"),
        (format!("{base}&raw_status_code=200.5"), "raw_status_code"),
        (format!("{base}&raw_status_code=2e2"), "raw_status_code"),
        (format!("{base}&raw_status_code=99"), "raw_status_code"),
        (format!("{base}&raw_status_code=600"), "raw_status_code"),
        (format!("{base}&raw_status_code.not=x"), "raw_status_code"),
        (format!("{base}&id=1"), "id"),
        (format!("{base}&audit_log_id=not-a-uuid"), "audit_log_id"),
        (
            format!("{base}&actor_ip_address=999.1.1.1"),
            "actor_ip_address",
        ),
        (
            format!("{base}&actor_ip_address=localhost"),
            "actor_ip_address",
        ),
        (format!("{base}&colour=red"), "colour"),
        (format!("{base}&action_types=view"), "action_types"),
        (format!("{base}&limit.not=5"), "limit.not"),
        (format!("{base}&product_category=dns"), "product_category"),
        (format!("{base}&actor_email={long}"), "actor_email"),
        (format!("{base}{many}"), "actor_email"),
    ];
    // An empty range is not an error: an empty answer that says why.
    for query in [
        format!("since={SINCE}&before={SINCE}"),
        format!("since={BEFORE}&before={SINCE}"),
    ] {
        let uri = format!("/accounts/{ALPHA}/logs/audit?{query}");
        let reply = api.send(&uri, Some(&bearer(ALPHA)), None).await?;
        assert_eq!(reply.status, StatusCode::OK, "{query}: {}", reply.text());
        assert!(
            reply.text().contains("is not after"),
            "{query}: {}",
            reply.text()
        );
    }
    let mut unnamed = Vec::new();
    for (query, parameter) in &cases {
        let uri = format!("/accounts/{ALPHA}/logs/audit?{query}");
        let reply = api.send(&uri, Some(&bearer(ALPHA)), None).await?;
        assert_eq!(
            reply.status,
            StatusCode::BAD_REQUEST,
            "{query}: {}",
            reply.text()
        );
        assert_eq!(reply.content_type, "application/json");
        let message = reply.error_message()?;
        if !message.contains(parameter) {
            unnamed.push(format!("{parameter}: {message:?}"));
        }
        // The export asks the same questions before it streams anything.
        let reply = api
            .send(&uri, Some(&bearer(ALPHA)), Some("application/x-ndjson"))
            .await?;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "ndjson {query}");
    }
    // The single-record route: a path that is not an id.
    let reply = api
        .send(
            &format!("/accounts/{ALPHA}/logs/audit/not-an-id"),
            Some(&bearer(ALPHA)),
            None,
        )
        .await?;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    assert!(reply.error_message()?.contains("id"));
    assert!(
        unnamed.is_empty(),
        "400s that do not name their parameter: {unnamed:#?}"
    );
    Ok(())
}

const PAYLOADS: [&str; 18] = [
    "' OR 1=1 --",
    "\"; DROP TABLE audit_logs; --",
    "%' OR '1'='1",
    "\\",
    "\\'",
    "' UNION SELECT record FROM audit_logs --",
    "1) OR (1=1",
    "%",
    "_",
    "*",
    "NULL",
    "$1",
    "?",
    "ünïcødé ✓ 🚀 \u{202e}",
    "\u{feff}\u{200b}",
    "\u{0}",
    "a\u{0}' OR 1=1 --",
    "\u{1b}[2J\r\n",
];

async fn injection_payloads_are_inert<S: ChainedStore>(fx: &Fixture<S>) -> TestResult {
    let (data, api) = loaded(fx).await?;
    let count = fx.store.count().await?;
    let everything = data.expected(ALPHA, &q(&[]));
    let mut failures = Vec::new();
    let names: Vec<&str> = FILTERS
        .iter()
        .copied()
        .chain(["raw_cf_ray_id", "audit_log_id"])
        .collect();
    for name in &names {
        for payload in PAYLOADS {
            for negated in [false, true] {
                let key = if negated {
                    format!("{name}.not")
                } else {
                    (*name).to_owned()
                };
                // A day of records: the .not forms answer all of them.
                let params = q(&[
                    (&key, payload),
                    ("since", "2025-03-03"),
                    ("before", "2025-03-04"),
                ]);
                let reply = api.get(ALPHA, &params).await?;
                match reply.status {
                    StatusCode::OK => {
                        let page = parse_page(&reply.body)?;
                        let want = data.expected(ALPHA, &params);
                        if negated {
                            assert_eq!(page.ids, want, "{key}={payload:?}");
                        } else {
                            assert!(page.ids.is_empty(), "{key}={payload:?} matched records");
                            assert!(want.is_empty());
                        }
                    }
                    StatusCode::BAD_REQUEST => {
                        let message = reply.error_message()?;
                        assert!(message.contains(name), "{key}={payload:?}: {message}");
                        assert!(
                            !is_text_filter(name),
                            "{key}={payload:?}: a text filter refused {message}"
                        );
                    }
                    other => failures.push(format!(
                        "{key}={payload:?} ({}): {other} {}",
                        fx.backend,
                        reply.text()
                    )),
                }
            }
        }
    }
    // The other parameters refuse them.
    for name in ["since", "before", "direction", "limit", "cursor"] {
        for payload in PAYLOADS {
            let mut params: Vec<(String, String)> =
                q(&[]).into_iter().filter(|(k, _)| k != name).collect();
            params.push((name.to_owned(), payload.to_owned()));
            let reply = api.get(ALPHA, &params).await?;
            if reply.status != StatusCode::BAD_REQUEST {
                failures.push(format!(
                    "{name}={payload:?}: {} {}",
                    reply.status,
                    reply.text()
                ));
            }
        }
    }
    // Payloads in the path.
    for payload in ["' OR 1=1 --", "%27%20OR%201%3D1%20--", "..%2F..%2Fetc"] {
        let encoded: String = form_urlencoded::byte_serialize(payload.as_bytes()).collect();
        let reply = api.one(ALPHA, &encoded).await?;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{payload}");
    }
    assert_eq!(fx.store.count().await?, count, "the table is intact");
    assert_eq!(api.check(&data, ALPHA, &q(&[])).await?, everything);
    assert!(failures.is_empty(), "neither 200 nor 400: {failures:#?}");
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// One record
// ---------------------------------------------------------------------------------------------

/// Answers hold records (or speak of them): a browser's cache must not keep them for whoever
/// uses the machine next, nor a proxy's for everyone.
async fn no_answer_is_cached_or_sniffed<S: ChainedStore>(fx: &Fixture<S>) -> TestResult {
    let (data, api) = loaded(fx).await?;
    let record = data.expected(ALPHA, &q(&[]))[0];
    let base = format!("/accounts/{ALPHA}/logs/audit");
    let range = format!("since={SINCE}&before={BEFORE}");
    let mine = Some(bearer(ALPHA));
    for (uri, auth, accept) in [
        (format!("{base}?{range}"), mine.clone(), None),
        (
            format!("{base}?{range}"),
            mine.clone(),
            Some("application/x-ndjson"),
        ),
        (format!("{base}?{range}"), mine.clone(), Some("text/csv")),
        (format!("{base}/{record}"), mine.clone(), None),
        (
            format!("{base}/{record}/history?{range}"),
            mine.clone(),
            None,
        ),
        (format!("{base}/stats?{range}"), mine.clone(), None),
        (format!("{base}/verify?{range}"), mine.clone(), None),
        (format!("{base}/product_categories"), mine.clone(), None),
        // Errors too: a bad parameter, and another account's records.
        (format!("{base}?colour=red"), mine.clone(), None),
        (format!("{base}?{range}"), Some(bearer(BETA)), None),
    ] {
        let reply = api.send(&uri, auth.as_deref(), accept).await?;
        let header = |name| {
            reply
                .headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_owned()
        };
        assert_eq!(
            header(header::CACHE_CONTROL),
            "no-store",
            "{uri} ({accept:?}): {}",
            reply.status
        );
        assert_eq!(header(header::X_CONTENT_TYPE_OPTIONS), "nosniff", "{uri}");
    }
    Ok(())
}

async fn one_record_is_served_byte_for_byte<S: ChainedStore>(fx: &Fixture<S>) -> TestResult {
    let (data, api) = loaded(fx).await?;
    let alpha = data.expected(ALPHA, &q(&[]));
    let special = data
        .records
        .iter()
        .find(|r| r.action.time.unix_millis() == ms("2025-03-04T04:04:04.404Z"))
        .ok_or("the special record")?
        .id;
    // Records outside any default range are served too: the id is enough.
    let outside = data.expected(
        ALPHA,
        &q(&[("since", "2025-04-02"), ("before", "2025-05-01")]),
    );
    assert_eq!(outside.len(), 1);
    for id in alpha.iter().take(25).chain([&special, &outside[0]]) {
        for spelling in [id.to_string(), id.to_string().to_uppercase()] {
            let reply = api.one(ALPHA, &spelling).await?;
            assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
            assert_eq!(reply.content_type, "application/json");
            let envelope: HashMap<String, Box<RawValue>> = serde_json::from_slice(&reply.body)?;
            assert_eq!(envelope["success"].get(), "true");
            assert_eq!(envelope["errors"].get(), "[]");
            assert_eq!(
                Some(&envelope["result"].get().to_owned()),
                data.json.get(id),
                "record {id} byte for byte"
            );
        }
    }
    // Someone else's record, and no record at all: 404.
    for id in [data.expected(BETA, &q(&[]))[0], Uuid::now_v7(), Uuid::nil()] {
        let reply = api.one(ALPHA, &id).await?;
        assert_eq!(reply.status, StatusCode::NOT_FOUND);
        reply.error_message()?;
    }
    // The special record is served byte for byte in lists too.
    let got = api
        .check(&data, ALPHA, &q(&[("id", &special.to_string())]))
        .await?;
    assert_eq!(got, vec![special]);
    let got = api
        .check(
            &data,
            ALPHA,
            &q(&[("actor_email", "ünïcødé+tag@exämple.com")]),
        )
        .await?;
    assert_eq!(got, vec![special]);

    // Control characters: a filter value holding them finds the record holding them, which
    // is served as written.
    let control = data
        .records
        .iter()
        .find(|r| r.action.time.unix_millis() == ms("2025-03-05T05:05:05.505Z"))
        .ok_or("the record with control characters")?
        .id;
    for (name, value) in [
        ("actor_email", "mallory\u{7}@example.com"),
        ("actor_token_name", "tab\there\u{0}"),
        ("raw_uri", "/accounts/acc_alpha/members?q=\u{1b}[31m\u{85}"),
    ] {
        let got = api.check(&data, ALPHA, &q(&[(name, value)])).await?;
        assert_eq!(got, vec![control], "{name}={value:?}");
    }
    let reply = api.one(ALPHA, &control).await?;
    let envelope: HashMap<String, Box<RawValue>> = serde_json::from_slice(&reply.body)?;
    assert_eq!(
        Some(&envelope["result"].get().to_owned()),
        data.json.get(&control)
    );
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// NDJSON export
// ---------------------------------------------------------------------------------------------

/// An export, read frame by frame: the lines, the largest frame and how many frames.
struct Export {
    status: StatusCode,
    content_type: String,
    lines: Vec<String>,
    largest_frame: usize,
    frames: usize,
}

async fn export(
    router: &Router,
    account: &str,
    params: &[(String, String)],
    auth: Option<&str>,
) -> TestResult<Export> {
    let mut request =
        Request::get(list_uri(account, params)).header(header::ACCEPT, "application/x-ndjson");
    if let Some(auth) = auth {
        request = request.header(header::AUTHORIZATION, auth);
    }
    let response = router.clone().oneshot(request.body(Body::empty())?).await?;
    let status = response.status();
    let content_type = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    let mut body = response.into_body();
    let mut buffer: Vec<u8> = Vec::new();
    let mut lines = Vec::new();
    let (mut largest_frame, mut frames) = (0, 0);
    while let Some(frame) = body.frame().await {
        let Ok(data) = frame?.into_data() else {
            continue;
        };
        frames += 1;
        largest_frame = largest_frame.max(data.len());
        buffer.extend_from_slice(&data);
        // Lines may in principle span frames: keep the unfinished tail.
        if let Some(end) = buffer.iter().rposition(|b| *b == b'\n') {
            let rest = buffer.split_off(end + 1);
            let complete = std::mem::replace(&mut buffer, rest);
            for line in complete[..complete.len() - 1].split(|b| *b == b'\n') {
                lines.push(String::from_utf8(line.to_vec())?);
            }
        }
    }
    if status == StatusCode::OK {
        assert!(buffer.is_empty(), "the export ends with a newline");
    } else {
        lines.push(String::from_utf8(buffer)?);
    }
    Ok(Export {
        status,
        content_type,
        lines,
        largest_frame,
        frames,
    })
}

/// Checks every line is one valid JSON record, byte for byte the one inserted, and returns
/// the ids in order.
fn export_ids(data: &Data, lines: &[String]) -> TestResult<Vec<Uuid>> {
    let mut ids = Vec::with_capacity(lines.len());
    for line in lines {
        serde_json::from_str::<&RawValue>(line)
            .map_err(|e| format!("not one JSON value per line ({e}): {line}"))?;
        // Every record starts with its id (`{"id":"<36>"`).
        let id: Uuid = line
            .get(7..43)
            .ok_or("a line too short for a record")?
            .parse()?;
        assert_eq!(Some(line), data.json.get(&id), "record {id} byte for byte");
        ids.push(id);
    }
    Ok(ids)
}

async fn ndjson_export_honours_filters_and_access<S: ChainedStore>(fx: &Fixture<S>) -> TestResult {
    let data = load(fx).await?;
    let router = AuditLogRouter::new(fx.store.clone(), authorize).into_router();
    let token = bearer(ALPHA);
    for params in [
        q(&[]),
        q(&[("direction", "asc")]),
        q(&[
            ("action_type.not", "view"),
            ("zone_name.not", "alpha.example"),
        ]),
        q(&[
            ("actor_email", "bob@example.com"),
            ("actor_email", "carol@example.org"),
        ]),
        // The export streams every match: `limit` does not cut it short.
        q(&[("limit", "5")]),
        q(&[("since", "2024-01-01"), ("before", "2024-02-01")]),
    ] {
        let out = export(&router, ALPHA, &params, Some(&token)).await?;
        assert_eq!(out.status, StatusCode::OK, "{:?}", out.lines);
        assert_eq!(out.content_type, "application/x-ndjson");
        assert_eq!(
            export_ids(&data, &out.lines)?,
            data.expected(ALPHA, &params),
            "{}",
            encode(&params)
        );
    }
    // Access: another account's export is a 404, without credentials a 401, nothing streamed.
    let out = export(&router, ALPHA, &q(&[]), Some(&bearer(BETA))).await?;
    assert_eq!(out.status, StatusCode::NOT_FOUND);
    assert!(!out.lines.concat().contains("alpha"));
    let out = export(&router, ALPHA, &q(&[]), None).await?;
    assert_eq!(out.status, StatusCode::UNAUTHORIZED);
    // Beta's export holds beta's records only.
    let out = export(&router, BETA, &q(&[]), Some(&bearer(BETA))).await?;
    assert_eq!(export_ids(&data, &out.lines)?, data.expected(BETA, &q(&[])));
    Ok(())
}

/// `n` rows for `account`, one every `step_ms` from `start_ms`, stamped from a few dozen
/// realistic templates (each made by `StoredRecord::from_record`): id, time and ray id
/// differ per row, in the columns and in the JSON alike. Serializing 100,000 records one by
/// one takes longer than the rest of the test in a debug build.
fn stamped(
    data: &mut Data,
    rng: &mut Rng,
    account: &str,
    start_ms: i64,
    step_ms: i64,
    n: i64,
) -> TestResult<Vec<StoredRecord>> {
    const TEMPLATE_TIME: i64 = 946_684_800_000; // 2000-01-01T00:00:00.000Z
    let templates: Vec<(AuditRecord, StoredRecord)> = (0..48)
        .map(|i| {
            let mut r = make_record(rng, Some(account), TEMPLATE_TIME);
            r.id = Uuid::nil();
            r.raw.cf_ray_id = "RAY_PLACEHOLDER_".into();
            if i % 4 != 0 {
                r.resource.request = None;
                r.resource.response = None;
            }
            let row = StoredRecord::from_record(&r)?;
            Ok((r, row))
        })
        .collect::<TestResult<_>>()?;
    let nil = Uuid::nil().to_string();
    let template_time = Timestamp::from_unix_millis(TEMPLATE_TIME).to_string();
    let mut rows = Vec::with_capacity(n as usize);
    for i in 0..n {
        let (record, template) = rng.pick(&templates);
        let time_ms = start_ms + i * step_ms;
        let id = record_id(rng, time_ms);
        let ray = format!("{:016x}", rng.next_u64());
        let mut row = template.clone();
        row.id = id;
        row.time_ms = time_ms;
        row.raw_ray_id = ray.clone();
        row.record = template
            .record
            .replacen(&nil, &id.to_string(), 1)
            .replacen(
                &template_time,
                &Timestamp::from_unix_millis(time_ms).to_string(),
                1,
            )
            .replacen("RAY_PLACEHOLDER_", &ray, 1);
        let mut record = record.clone();
        record.id = id;
        record.action.time = Timestamp::from_unix_millis(time_ms);
        record.raw.cf_ray_id = ray;
        data.json.insert(id, row.record.clone());
        data.records.push(record);
        rows.push(row);
    }
    Ok(rows)
}

/// 100,000 records exported as NDJSON (SQLite): exactly the matching records, one JSON per
/// line, in pages of at most 1,000 records, so no frame is larger than ~2 MB however large
/// the export.
#[tokio::test]
async fn ndjson_export_of_100k_records_is_paged() -> TestResult {
    let fx = common::sqlite().await?;
    let mut data = Data::new();
    let mut rng = Rng(100_000);
    let start = ms("2025-03-01T00:00:00Z");
    let bulk = stamped(&mut data, &mut rng, "acc_bulk", start, 20, 100_000)?;
    let other = stamped(&mut data, &mut rng, "acc_other", start, 7, 500)?;
    for chunk in bulk.chunks(1000).chain(other.chunks(1000)) {
        assert_eq!(fx.store.insert(chunk).await?, chunk.len() as u64);
    }
    assert_eq!(fx.store.count().await?, 100_500);
    // A sample checks the stamped rows are what the records say.
    for row in bulk.iter().step_by(9_973) {
        let record: AuditRecord = serde_json::from_str(&row.record)?;
        assert_eq!(StoredRecord::from_record(&record)?, *row);
    }

    let router = AuditLogRouter::new(fx.store.clone(), authorize).into_router();
    let token = bearer("acc_bulk");
    let all = q(&[]);

    // Access first: nothing is streamed to a caller without access.
    let out = export(&router, "acc_bulk", &all, Some(&bearer("acc_other"))).await?;
    assert_eq!(out.status, StatusCode::NOT_FOUND);
    assert!(!out.lines.concat().contains("acc_bulk"));
    let out = export(&router, "acc_bulk", &all, None).await?;
    assert_eq!(out.status, StatusCode::UNAUTHORIZED);

    // Filters: a quarter of the range, one action type, oldest first.
    let filtered = q(&[
        ("action_type", "delete"),
        ("direction", "asc"),
        ("since", "2025-03-01T00:00:00Z"),
        ("before", "2025-03-01T00:08:20Z"),
    ]);
    let out = export(&router, "acc_bulk", &filtered, Some(&token)).await?;
    assert_eq!(out.status, StatusCode::OK);
    let want = data.expected("acc_bulk", &filtered);
    assert!(
        want.len() > 1_000,
        "{} records: more than a page",
        want.len()
    );
    assert_eq!(export_ids(&data, &out.lines)?, want);

    // Everything. With keyset pages of 1,000 this takes a few seconds in a debug build; a
    // page query that scans from the start of the range each time makes it quadratic.
    const BUDGET: Duration = Duration::from_secs(30);
    let out = tokio::time::timeout(BUDGET, export(&router, "acc_bulk", &all, Some(&token)))
        .await
        .map_err(|_| {
            format!(
                "exporting 100,000 records took longer than {BUDGET:?}: each page costs more \
                 than the one before (the page query scans the rows already served)"
            )
        })??;
    assert_eq!(out.status, StatusCode::OK);
    assert_eq!(out.content_type, "application/x-ndjson");
    assert_eq!(out.lines.len(), 100_000);
    assert_eq!(
        export_ids(&data, &out.lines)?,
        data.expected("acc_bulk", &all)
    );
    assert!(
        out.largest_frame <= 2 * 1024 * 1024,
        "a frame of {} bytes: the export is not paged",
        out.largest_frame
    );
    assert!(out.frames >= 100, "{} frames for 100 pages", out.frames);
    fx.teardown().await
}
