//! Events: audit records of actions that are not HTTP requests — what a background job did, a
//! policy the app enforced, an action a request caused, a login the app handles itself.
//!
//! An event is the same [`AuditRecord`] a request makes, built by [`AuditEvent`] and sent
//! through the same sink (the layer's, with the same pipeline and delivery promises) under the
//! same bounds: every string escaped and capped at the layer's
//! [string limit](crate::AuditLayer::string_limit), the record at its
//! [record limit](crate::AuditLayer::record_limit). Values it carries (`resource.request`,
//! `resource.response`, `change.before`/`after`) are typed, and reduced by the schema of their
//! type to what it marks `x-auditable` (see [`auditable`](crate::auditable)), never recorded
//! whole.
//!
//! Who acted and the ray id come from the [context](crate::context) the event is emitted in
//! (a request's [`AuditHandle::context`](crate::AuditHandle::context), or a future's
//! [`in_audit_context`](crate::context::WithAuditContext::in_audit_context)) unless the event
//! sets them; an event outside any context gets a ray id of its own and no actor.
//!
//! A record of an event has no `raw.method`, `raw.uri` or `raw.status_code` unless it sets
//! them (an event that does stand for an exchange, say a webhook the app received).
//!
//! ```
//! use audit_layer::{AuditLayer, AuditPolicy, Identity};
//! use audit_layer::context::{AuditContext, WithAuditContext};
//! use audit_layer::record::{ActionType, ActorType};
//! use audit_layer::sink::MemorySink;
//!
//! const ROTATE: ActionType = ActionType::from_static("rotate");
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let records = MemorySink::new();
//! let layer = AuditLayer::new(AuditPolicy::default()).sink(records.clone());
//! let events = layer.events(); // cheap to clone: hand it to the jobs
//!
//! // A nightly job: the system acts, every event of the run shares a ray id.
//! async move {
//!     events
//!         .event(ROTATE)
//!         .account("acc_demo")
//!         .product("tokens")
//!         .resource_type("signing_keys")
//!         .resource_id("key_7")
//!         .description("Rotated the signing key")
//!         .emit();
//! }
//! .in_audit_context(AuditContext::system())
//! .await;
//!
//! let record = &records.records()[0];
//! assert_eq!(record.action.kind.as_str(), "rotate");
//! assert_eq!(record.actor.kind, Some(ActorType::System));
//! assert_eq!(record.raw.method, None);
//! # }
//! ```

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use uuid::Uuid;

use crate::capture::RecordLimits;
use crate::context::AuditContext;
use crate::escape;
use crate::identity::Identity;
use crate::record::{
    Account, Action, ActionResult, ActionType, Actor, AuditRecord, InvalidEventTime, InvalidRayId,
    Raw, Resource, Timestamp, Token, Zone,
};
use crate::sink::{AuditSink, NotCommitted};

/// How far back of now an event may be dated ([`AuditEvent::time`]).
pub const MAX_EVENT_AGE: Duration = Duration::from_secs(7 * 86_400);
/// How far ahead of now an event may be dated ([`AuditEvent::time`]): clocks disagree a little.
pub const MAX_EVENT_LEAD: Duration = Duration::from_secs(300);

/// What an app emits events with: the layer's sink and record bounds. From
/// [`AuditLayer::events`](crate::AuditLayer::events), or [`AuditEvents::new`] for a process
/// with no layer. Cheap to clone: all clones share the sink.
#[derive(Clone)]
pub struct AuditEvents {
    sink: Arc<dyn AuditSink>,
    limits: RecordLimits,
    /// The layer's service name, which every record of it carries.
    service: Option<Arc<str>>,
}

impl std::fmt::Debug for AuditEvents {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditEvents")
            .field("limits", &self.limits)
            .finish_non_exhaustive()
    }
}

impl AuditEvents {
    /// Events into `sink`, with the default bounds (8 KiB strings, 64 KiB records). An app
    /// with an [`AuditLayer`](crate::AuditLayer) takes [`AuditLayer::events`](crate::AuditLayer::events)
    /// instead: the layer's sink and bounds.
    ///
    /// ```
    /// use audit_layer::event::AuditEvents;
    /// use audit_layer::record::ActionType;
    /// use audit_layer::sink::MemorySink;
    ///
    /// let records = MemorySink::new();
    /// let events = AuditEvents::new(records.clone());
    /// events.event(ActionType::Login).account("acc_demo").emit();
    /// assert_eq!(records.len(), 1);
    /// ```
    pub fn new(sink: impl AuditSink) -> Self {
        Self::with_sink(Arc::new(sink), RecordLimits::default(), None)
    }

    pub(crate) fn with_sink(
        sink: Arc<dyn AuditSink>,
        limits: RecordLimits,
        service: Option<Arc<str>>,
    ) -> Self {
        Self {
            sink,
            limits,
            service,
        }
    }

    /// Begins the record of an action of type `action` (a built-in one, or any other:
    /// [`ActionType::new`]), now, successful unless [`result`](AuditEvent::result) says
    /// otherwise.
    pub fn event(&self, action: ActionType) -> AuditEvent<'_> {
        AuditEvent {
            events: self,
            record: AuditRecord {
                id: Uuid::now_v7(),
                account: None,
                action: Action {
                    description: None,
                    result: ActionResult::Success,
                    time: Timestamp::now(),
                    kind: action,
                },
                actor: Actor::default(),
                raw: Raw {
                    method: None,
                    cf_ray_id: String::new(),
                    status_code: None,
                    uri: None,
                    user_agent: None,
                    client_request_id: None,
                    client_gone: false,
                },
                resource: Resource::default(),
                zone: None,
                change: None,
                trace: None,
                service: self.service.clone(),
            },
            actor: None,
            context: None,
        }
    }
}

/// The record of one event, being built; see the [module docs](self). Nothing is recorded
/// until [`emit`](Self::emit) or [`emit_and_commit`](Self::emit_and_commit).
#[must_use = "an event is recorded only when emitted"]
pub struct AuditEvent<'a> {
    events: &'a AuditEvents,
    record: AuditRecord,
    /// Set by [`actor`](Self::actor); else the context's.
    actor: Option<Identity>,
    /// Set by [`context`](Self::context); else the current one.
    context: Option<AuditContext>,
}

impl std::fmt::Debug for AuditEvent<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditEvent")
            .field("action", &self.record.action.kind)
            .finish_non_exhaustive()
    }
}

impl AuditEvent<'_> {
    /// Who acted. Defaults to the context's actor (see [`context`](Self::context)); with
    /// none, the record names no actor. The identity's `account_id` and `resource_id` fill
    /// in [`account`](Self::account) and [`resource_id`](Self::resource_id) when those are not
    /// set.
    pub fn actor(mut self, actor: Identity) -> Self {
        self.actor = Some(actor);
        self
    }

    /// The context whose actor and ray id the event takes (unless set here): a request's
    /// ([`AuditHandle::context`](crate::AuditHandle::context)) or a run's. Defaults to the
    /// [current](AuditContext::current) one; with none, the event gets a ray id of its own.
    ///
    /// ```
    /// use audit_layer::context::AuditContext;
    /// use audit_layer::event::AuditEvents;
    /// use audit_layer::record::ActionType;
    /// use audit_layer::sink::MemorySink;
    /// use audit_layer::Identity;
    ///
    /// let records = MemorySink::new();
    /// let events = AuditEvents::new(records.clone());
    /// let request = AuditContext::new(Identity::user("usr_1")).with_ray_id("8f3a")?;
    /// events
    ///     .event(ActionType::from_static("disable"))
    ///     .context(&request)
    ///     .actor(Identity::system()) // the system acted, as caused by the request
    ///     .emit();
    /// let record = &records.records()[0];
    /// assert_eq!(record.raw.cf_ray_id, "8f3a");
    /// assert_eq!(record.actor.id, None);
    /// # Ok::<(), audit_layer::record::InvalidRayId>(())
    /// ```
    pub fn context(mut self, context: &AuditContext) -> Self {
        self.context = Some(context.clone());
        self
    }

    /// The ray id, tying the event to a request or a run; overrides the context's.
    ///
    /// # Errors
    ///
    /// When `ray_id` is not 1 to 128 characters of `A-Z a-z 0-9 . _ : -` (the event is
    /// dropped: build it again with a good one, or without).
    pub fn ray_id(mut self, ray_id: &str) -> Result<Self, InvalidRayId> {
        InvalidRayId::check(ray_id)?;
        self.record.raw.cf_ray_id = ray_id.to_owned();
        Ok(self)
    }

    /// The account the action belongs to.
    pub fn account(mut self, id: impl Into<String>) -> Self {
        self.record.account = Some(Account {
            id: id.into(),
            name: None,
        });
        self
    }

    /// The zone the action belongs to.
    pub fn zone(mut self, id: impl Into<String>) -> Self {
        self.record.zone = Some(Zone {
            id: id.into(),
            name: None,
        });
        self
    }

    /// What was done, for people: `action.description`.
    pub fn description(mut self, text: impl Into<Arc<str>>) -> Self {
        self.record.action.description = Some(text.into());
        self
    }

    /// Whether it worked. Defaults to success.
    pub fn result(mut self, result: ActionResult) -> Self {
        self.record.action.result = result;
        self
    }

    /// When it happened. Defaults to when the event was begun.
    ///
    /// # Errors
    ///
    /// When `time` is more than [`MAX_EVENT_AGE`] (7 days) before now or more than
    /// [`MAX_EVENT_LEAD`] (5 min) after it. An account's log is a chain in the order records
    /// are written: a record far older than those before it reads as an edited time to
    /// retention's check, and one far in the future sorts after everything to come.
    pub fn time(mut self, time: Timestamp) -> Result<Self, InvalidEventTime> {
        let now = Timestamp::now();
        let millis = |d: Duration| i64::try_from(d.as_millis()).unwrap_or(i64::MAX);
        let earliest = now.unix_millis().saturating_sub(millis(MAX_EVENT_AGE));
        let latest = now.unix_millis().saturating_add(millis(MAX_EVENT_LEAD));
        if !(earliest..=latest).contains(&time.unix_millis()) {
            return Err(InvalidEventTime::new(
                time,
                now,
                MAX_EVENT_AGE,
                MAX_EVENT_LEAD,
            ));
        }
        self.record.action.time = time;
        Ok(self)
    }

    /// `resource.scope`, e.g. `accounts` or `zones`.
    pub fn scope(mut self, scope: impl Into<Arc<str>>) -> Self {
        self.record.resource.scope = Some(scope.into());
        self
    }

    /// `resource.product`, e.g. `alerting`.
    pub fn product(mut self, product: impl Into<Arc<str>>) -> Self {
        self.record.resource.product = Some(product.into());
        self
    }

    /// `resource.type`, e.g. `policies`.
    pub fn resource_type(mut self, kind: impl Into<Arc<str>>) -> Self {
        self.record.resource.kind = Some(kind.into());
        self
    }

    /// `resource.id`.
    pub fn resource_id(mut self, id: impl Into<String>) -> Self {
        self.record.resource.id = Some(id.into());
        self
    }

    /// The client's address, when the event stands for something a client did.
    pub fn ip_address(mut self, ip: IpAddr) -> Self {
        self.record.actor.ip_address = Some(ip);
        self
    }

    /// `raw.method`, for an event that stands for an exchange (a webhook received, a call
    /// made). Absent otherwise.
    pub fn method(mut self, method: impl Into<String>) -> Self {
        self.record.raw.method = Some(method.into());
        self
    }

    /// `raw.uri`, for an event that stands for an exchange. Its query is recorded as a
    /// request's to an operation that declares no parameter: each `REDACTED=REDACTED`, so
    /// that a token in it never reaches the record; the path is escaped and capped. A `uri`
    /// that is not a URI reference keeps only what comes before its `?`.
    pub fn uri(mut self, uri: impl Into<String>) -> Self {
        let uri = uri.into();
        let recorded = match uri.parse::<http::Uri>() {
            // As the layer records a request no operation describes.
            Ok(parsed) => crate::service::recorded_uri(None, &parsed),
            Err(_) => uri.split('?').next().unwrap_or_default().to_owned(),
        };
        self.record.raw.uri = Some(recorded);
        self
    }

    /// `raw.status_code`, for an event that stands for an exchange. Does not set the
    /// [`result`](Self::result).
    pub fn status_code(mut self, status: u16) -> Self {
        self.record.raw.status_code = Some(status);
        self
    }

    /// Sends the record to the sink, without waiting (as a request's record): queued, spooled
    /// while the store is down, counted if dropped.
    pub fn emit(self) {
        let sink = Arc::clone(&self.events.sink);
        sink.submit(self.finish());
    }

    /// Sends the record to the sink and completes once it is durably stored, as strict mode
    /// does for a request: for an action that must not go unrecorded (the app waits, or undoes
    /// it, on an error).
    ///
    /// # Errors
    ///
    /// When the sink could not store the record ([`NotCommitted`] says why).
    pub async fn emit_and_commit(self) -> Result<(), NotCommitted> {
        let sink = Arc::clone(&self.events.sink);
        sink.submit_and_commit(self.finish()).await
    }

    /// The finished record: actor and ray id from the context where not set, every string
    /// escaped and capped, the whole within the record limit.
    fn finish(self) -> AuditRecord {
        let Self {
            events,
            mut record,
            actor,
            context,
        } = self;
        let context = context.or_else(AuditContext::current);
        let actor = actor.or_else(|| context.as_ref().and_then(|c| c.actor().cloned()));
        if record.raw.cf_ray_id.is_empty() {
            record.raw.cf_ray_id = match context.as_ref().and_then(AuditContext::ray_id) {
                Some(ray) => ray.to_owned(),
                None => record.id.simple().to_string(),
            };
        }
        if let Some(identity) = actor {
            record.actor.id = identity.id;
            record.actor.email = identity.email;
            record.actor.kind = identity.kind;
            record.actor.context = identity.context;
            record.actor.token = Token {
                id: identity.token_id,
                name: identity.token_name,
            };
            if record.account.is_none() {
                record.account = identity.account_id.map(|id| Account { id, name: None });
            }
            if record.resource.id.is_none() {
                record.resource.id = identity.resource_id;
            }
        }
        clean(&mut record, events.limits);
        crate::record::cap_ids(&mut record);
        events.limits.fit(&mut record);
        record
    }
}

#[cfg(feature = "utoipa")]
#[cfg_attr(docsrs, doc(cfg(feature = "utoipa")))]
impl AuditEvent<'_> {
    /// `resource.request`: what the action was asked to do, reduced to the fields `T`'s
    /// schema marks `x-auditable` (see [`auditable`](crate::auditable)).
    pub fn request<T: serde::Serialize + utoipa::ToSchema + 'static>(mut self, value: &T) -> Self {
        self.record.resource.request = Some(crate::auditable::redact(value));
        self
    }

    /// `resource.response`: what the action answered or produced, reduced like
    /// [`request`](Self::request).
    pub fn response<T: serde::Serialize + utoipa::ToSchema + 'static>(mut self, value: &T) -> Self {
        self.record.resource.response = Some(crate::auditable::redact(value));
        self
    }

    /// `change.before`: the resource's value before the action, reduced like
    /// [`request`](Self::request).
    ///
    /// ```
    /// use audit_layer::event::AuditEvents;
    /// use audit_layer::record::ActionType;
    /// use audit_layer::sink::MemorySink;
    /// use serde::Serialize;
    /// use serde_json::json;
    /// use utoipa::ToSchema;
    ///
    /// #[derive(Serialize, ToSchema)]
    /// struct Policy {
    ///     #[schema(extensions(("x-auditable" = json!(true))))]
    ///     enabled: bool,
    ///     webhook_url: String,
    /// }
    ///
    /// let records = MemorySink::new();
    /// let url = "https://hooks.example/s3cr3t".to_owned();
    /// AuditEvents::new(records.clone())
    ///     .event(ActionType::from_static("disable"))
    ///     .before(&Policy { enabled: true, webhook_url: url.clone() })
    ///     .after(&Policy { enabled: false, webhook_url: url })
    ///     .emit();
    /// let change = records.records()[0].change.clone().unwrap();
    /// assert_eq!(change.before.unwrap(), json!({"enabled": true}));
    /// assert_eq!(change.after.unwrap(), json!({"enabled": false}));
    /// ```
    pub fn before<T: serde::Serialize + utoipa::ToSchema + 'static>(mut self, value: &T) -> Self {
        let change = self.record.change.get_or_insert_with(Default::default);
        change.before = Some(crate::auditable::redact(value));
        self
    }

    /// `change.after`: the resource's value after the action, reduced like
    /// [`request`](Self::request).
    pub fn after<T: serde::Serialize + utoipa::ToSchema + 'static>(mut self, value: &T) -> Self {
        let change = self.record.change.get_or_insert_with(Default::default);
        change.after = Some(crate::auditable::redact(value));
        self
    }
}

/// Escapes and caps every string the app gave: an event's text may come from anywhere.
fn clean(record: &mut AuditRecord, limits: RecordLimits) {
    record.visit_texts(
        |s| *s = limits.string(std::mem::take(s)),
        |value| {
            if let std::borrow::Cow::Owned(cleaned) =
                escape::visible_within(value.as_bytes(), limits.string)
            {
                *value = Arc::from(cleaned);
            }
        },
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::context::WithAuditContext;
    use crate::record::ActorContext;
    use crate::sink::MemorySink;

    fn events() -> (AuditEvents, MemorySink) {
        let sink = MemorySink::new();
        (AuditEvents::new(sink.clone()), sink)
    }

    #[test]
    fn an_event_is_dated_within_a_week_back_and_minutes_ahead() {
        let (events, sink) = events();
        let now = Timestamp::now().unix_millis();
        let yesterday = Timestamp::from_unix_millis(now - 86_400_000);
        events
            .event(ActionType::Update)
            .time(yesterday)
            .expect("a day back")
            .emit();
        assert_eq!(sink.records()[0].action.time, yesterday);
        for (far, what) in [
            (now - 31 * 86_400_000, "a month back"),
            (now + 3_600_000, "an hour ahead"),
            (i64::MAX, "year 10000 and on"),
        ] {
            let refused = events
                .event(ActionType::Update)
                .time(Timestamp::from_unix_millis(far))
                .expect_err(what);
            assert!(
                refused
                    .to_string()
                    .contains("at most 7 days back and 300 s ahead"),
                "{refused}"
            );
        }
    }

    #[test]
    fn the_query_of_an_events_uri_is_redacted() {
        let (events, sink) = events();
        events
            .event(ActionType::Create)
            .uri("/hooks/stripe?token=s3cr3t&x=1")
            .emit();
        events
            .event(ActionType::Create)
            .uri("not a uri?token=s3cr3t")
            .emit();
        let records = sink.records();
        assert_eq!(
            records[0].raw.uri.as_deref(),
            Some("/hooks/stripe?REDACTED=REDACTED&REDACTED=REDACTED")
        );
        assert_eq!(records[1].raw.uri.as_deref(), Some("not a uri"));
    }

    #[test]
    fn any_timestamp_is_written_as_rfc_3339_and_read_back() {
        for millis in [
            i64::MIN,
            -62_167_219_200_001,
            0,
            253_402_300_800_000,
            i64::MAX,
        ] {
            let time = Timestamp::from_unix_millis(millis);
            let text = serde_json::to_string(&time).expect("written, never a panic");
            let back: Timestamp = serde_json::from_str(&text).expect("read back");
            assert_eq!(back, time, "{text}");
        }
    }

    #[test]
    fn account_and_zone_ids_an_event_names_are_cut_as_path_ids_are() {
        let (events, sink) = events();
        events
            .event(ActionType::Login)
            .account("a".repeat(3000))
            .zone("日".repeat(3000))
            .emit();
        let record = &sink.records()[0];
        let account = record.account.as_ref().unwrap();
        let zone = record.zone.as_ref().unwrap();
        assert_eq!(account.id.chars().count(), crate::record::MAX_PATH_ID_CHARS);
        assert_eq!(zone.id.chars().count(), crate::record::MAX_PATH_ID_CHARS);
    }

    #[test]
    fn an_event_outside_any_context_has_a_ray_id_of_its_own_and_no_request_parts() {
        let (events, sink) = events();
        events.event(ActionType::Logout).account("acc_1").emit();
        let record = &sink.records()[0];
        assert_eq!(record.raw.cf_ray_id, record.id.simple().to_string());
        assert_eq!(
            (
                record.raw.method.as_ref(),
                record.raw.uri.as_ref(),
                record.raw.status_code
            ),
            (None, None, None)
        );
        assert_eq!(record.actor, Actor::default());
        let json = serde_json::to_value(record).unwrap();
        assert_eq!(
            json["raw"],
            serde_json::json!({"cf_ray_id": record.raw.cf_ray_id})
        );
    }

    #[tokio::test]
    async fn an_event_takes_actor_and_ray_from_the_current_context_unless_set() {
        let (events, sink) = events();
        let request = AuditContext::new(
            Identity::user("usr_1")
                .context(ActorContext::ApiToken)
                .token("tok_1", "CI")
                .account("acc_1"),
        )
        .with_ray_id("ray-of-the-put")
        .unwrap();
        let job = events.clone();
        tokio::spawn(
            async move {
                job.event(ActionType::from_static("deliver")).emit();
                job.event(ActionType::from_static("disable"))
                    .actor(Identity::system())
                    .account("acc_1")
                    .emit();
                job.event(ActionType::from_static("other"))
                    .ray_id("own")
                    .unwrap()
                    .emit();
            }
            .in_audit_context(request),
        )
        .await
        .unwrap();
        let records = sink.records();
        assert_eq!(records[0].actor.id.as_deref(), Some("usr_1"));
        assert_eq!(records[0].actor.token.name.as_deref(), Some("CI"));
        assert_eq!(records[0].account.as_ref().unwrap().id, "acc_1");
        assert_eq!(records[0].raw.cf_ray_id, "ray-of-the-put");
        assert_eq!(
            records[1].actor.kind,
            Some(crate::record::ActorType::System)
        );
        assert_eq!(records[1].actor.id, None);
        assert_eq!(records[1].raw.cf_ray_id, "ray-of-the-put");
        assert_eq!(records[2].raw.cf_ray_id, "own");
    }

    /// A value with one auditable field and one secret.
    #[derive(serde::Serialize, utoipa::ToSchema)]
    struct Setting {
        #[schema(extensions(("x-auditable" = json!(true))))]
        level: u32,
        token: String,
    }

    #[tokio::test]
    async fn a_request_and_the_events_it_causes_share_its_ray_id_and_actor() {
        use std::convert::Infallible;

        use bytes::Bytes;
        use http::{Request, Response};
        use http_body_util::{BodyExt, Full};
        use tower::{ServiceBuilder, ServiceExt, service_fn};

        use crate::{AuditHandle, AuditLayer, AuditPolicy, AuditRequestBody};

        let sink = MemorySink::new();
        let layer = AuditLayer::new(AuditPolicy::default()).sink(sink.clone());
        let events = layer.events();
        let svc = ServiceBuilder::new().layer(layer).service(service_fn(
            move |req: Request<AuditRequestBody<Full<Bytes>>>| {
                let events = events.clone();
                async move {
                    let audit = req.extensions().get::<AuditHandle>().cloned().unwrap();
                    audit.identify(Identity::user("usr_9").account("acc_9"));
                    audit.before(&Setting {
                        level: 1,
                        token: "CANARY-SECRET".into(),
                    });
                    audit.after(&Setting {
                        level: 2,
                        token: "CANARY-SECRET".into(),
                    });
                    let job = tokio::spawn(
                        async move {
                            events.event(ActionType::from_static("reindex")).emit();
                        }
                        .in_audit_context(audit.context()),
                    );
                    job.await.unwrap();
                    Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"{}"))))
                }
            },
        ));
        let request = Request::put("/settings").body(Full::default()).unwrap();
        let response = svc.oneshot(request).await.unwrap();
        response.into_body().collect().await.unwrap();
        let records = sink.wait_for(2, std::time::Duration::from_secs(5)).await;
        let (event, request) = (&records[0], &records[1]);
        assert_eq!(event.action.kind.as_str(), "reindex");
        assert_eq!(request.raw.method.as_deref(), Some("PUT"));
        assert_eq!(event.raw.cf_ray_id, request.raw.cf_ray_id);
        assert_eq!(event.actor.id.as_deref(), Some("usr_9"));
        assert_eq!(event.account.as_ref().unwrap().id, "acc_9");
        let change = request.change.as_ref().unwrap();
        assert_eq!(
            change.before.as_ref().unwrap(),
            &serde_json::json!({"level": 1})
        );
        assert_eq!(
            change.after.as_ref().unwrap(),
            &serde_json::json!({"level": 2})
        );
        let json = serde_json::to_string(&records).unwrap();
        assert!(!json.contains("CANARY-SECRET"));
    }

    #[test]
    fn a_bad_ray_id_is_refused_naming_it() {
        let (events, sink) = events();
        let err = events
            .event(ActionType::Update)
            .ray_id("ray\u{1b}[31m id")
            .unwrap_err();
        assert!(
            err.to_string()
                .starts_with(r#"invalid ray id "ray\\x1b[31m id""#),
            "{err}"
        );
        assert_eq!(sink.len(), 0);
    }

    #[test]
    fn hostile_strings_are_escaped_and_capped() {
        let sink = MemorySink::new();
        let events = AuditEvents::with_sink(
            Arc::new(sink.clone()),
            RecordLimits {
                string: 256,
                record: crate::record::DEFAULT_RECORD_LIMIT,
            },
            None,
        );
        events
            .event(ActionType::Update)
            .resource_id(format!("id\u{1b}[31m{}", "x".repeat(10_000)))
            .description("evil\u{202e}text")
            .uri("/ho\nok?q=1")
            .emit();
        let record = &sink.records()[0];
        let id = record.resource.id.as_deref().unwrap();
        assert!(id.len() <= 256 && id.starts_with(r"id\x1b[31m"), "{id}");
        assert_eq!(
            record.action.description.as_deref(),
            Some(r"evil\u{202e}text")
        );
        // Not a URI: its query is dropped, and the rest escaped.
        assert_eq!(record.raw.uri.as_deref(), Some(r"/ho\x0aok"));
    }
}
