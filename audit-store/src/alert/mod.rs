//! Alerting: rules over committed records, and a signed webhook notification when one fires,
//! itself recorded as a system event in the account's log.
//!
//! [`Alerts`] is an export [`Destination`]: run it in an
//! [`ExportJob`](crate::export::ExportJob) and it sees every committed record once, in commit
//! order per account, with the job's durable place in the log (a restarted job resumes
//! where it was). Each [`AlertRule`] counts the records that match its filters, per account
//! and per value of its grouping column, over a sliding window; when a group reaches the
//! threshold, one notification goes to the webhook (a JSON body, signed and keyed like an
//! HTTP export batch: `X-Audit-Signature`, `Idempotency-Key`), and the group is quiet for a
//! window. A notification that fails is retried with the batch (its records are not counted
//! twice). Once delivered, it is recorded through `events` (the pipeline's sink) as a
//! `create` of an `audit_alerts` `notifications` resource by a `system` actor.
//!
//! Windows live in memory: after a restart, records before the job's place no longer count
//! toward a window (a burst split by a restart may not fire). Windows are over the records'
//! action times: a record committed late still counts in its group's window if that window
//! is still open (its time is within a window of the group's newest), and is too late to
//! count otherwise.
//!
//! ```no_run
//! use std::sync::Arc;
//! use std::time::Duration;
//!
//! use audit_store::SqliteStore;
//! use audit_store::alert::{AlertRule, Alerts};
//! use audit_store::export::{ExportJob, HttpDestination, Secret};
//! use audit_store::model::Column;
//!
//! # async fn run(store: SqliteStore, sink: audit_store::pipeline::IngestSink) -> Result<(), Box<dyn std::error::Error>> {
//! let rule = AlertRule::new("failed-logins", 5, Duration::from_secs(300))?
//!     .only(Column::ActionType, ["login"])
//!     .only(Column::ActionResult, ["failure"])
//!     .group_by(Column::ActorEmail);
//! let webhook = HttpDestination::new("http://127.0.0.1:8443/alerts")?
//!     .secret(Secret::new(std::env::var("ALERT_SECRET")?));
//! let alerts = Alerts::new(vec![rule], webhook, Arc::new(sink));
//! let job = ExportJob::new("alerts", store, alerts)?.settle(Duration::from_secs(1));
//! tokio::spawn(job.run(std::future::pending()));
//! # Ok(()) }
//! ```

mod config;
mod rule;

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use audit_layer::record::{
    Account, Action, ActionResult, ActionType, Actor, ActorContext, ActorType, AuditRecord, Raw,
    Resource, Timestamp,
};
use audit_layer::sink::AuditSink;
use sha2::{Digest, Sha256};
use uuid::Uuid;

pub use config::rules_from_yaml;
pub use rule::AlertRule;

use crate::export::{DeliveryError, Destination, EncodedBatch, HttpDestination};
use crate::model::StoredRecord;

/// Groups kept per rule and account at most; past it the quietest are forgotten.
const MAX_GROUPS: usize = 100_000;

/// A sliding window of one group.
#[derive(Debug, Default)]
struct Window {
    times: VecDeque<(i64, Uuid)>,
    /// No notification before this time (ms): one per group per window.
    quiet_until: i64,
}

/// A notification to send, and then to record.
#[derive(Clone, Debug)]
struct Notification {
    key: String,
    account_id: String,
    body: String,
    description: String,
}

#[derive(Debug, Default)]
struct State {
    /// Per (rule, account, group).
    windows: HashMap<(usize, String, String), Window>,
    /// The idempotency key of the last batch counted per account: a batch sent again (after
    /// a failed notification) is not counted again.
    counted: HashMap<String, String>,
    /// The newest action time counted per account.
    newest: HashMap<String, i64>,
    /// Fired and not yet delivered.
    pending: Vec<Notification>,
}

/// Evaluates [`AlertRule`]s over the batches of an export job and notifies a webhook (see the
/// module's docs).
pub struct Alerts {
    rules: Vec<AlertRule>,
    webhook: HttpDestination,
    events: Arc<dyn AuditSink>,
    state: Mutex<State>,
}

impl std::fmt::Debug for Alerts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Alerts")
            .field("rules", &self.rules)
            .field("webhook", &self.webhook)
            .finish_non_exhaustive()
    }
}

impl Alerts {
    /// Evaluates `rules`, notifies `webhook` (give it a [`secret`](HttpDestination::secret)
    /// to sign notifications), and records each notification through `events`.
    pub fn new(
        rules: Vec<AlertRule>,
        webhook: HttpDestination,
        events: Arc<dyn AuditSink>,
    ) -> Self {
        Self {
            rules,
            webhook,
            events,
            state: Mutex::default(),
        }
    }

    /// Counts `batch`'s records and queues the notifications of the rules they fire.
    fn count(&self, batch: &EncodedBatch) {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let state = &mut *state;
        if state
            .counted
            .get(&batch.account_id)
            .is_some_and(|key| *key == batch.idempotency_key)
        {
            return;
        }
        state
            .counted
            .insert(batch.account_id.clone(), batch.idempotency_key.clone());
        for line in batch.lines() {
            let Ok(record) = StoredRecord::from_json(line.to_owned()) else {
                tracing::warn!(target: "audit_store::alert", "a stored record is not readable: skipped by the alert rules");
                continue;
            };
            let newest = state
                .newest
                .entry(batch.account_id.clone())
                .or_insert(record.time_ms);
            *newest = (*newest).max(record.time_ms);
            for (index, rule) in self.rules.iter().enumerate() {
                if !rule.matches(&record) {
                    continue;
                }
                let Some(group) = rule.group_of(&record) else {
                    continue;
                };
                let window_ms = i64::try_from(rule.window.as_millis()).unwrap_or(i64::MAX);
                let key = (index, batch.account_id.clone(), group);
                let window = state.windows.entry(key.clone()).or_default();
                // The group's newest time; a record committed late goes in its place in time,
                // or nowhere if its window has passed.
                let newest = window
                    .times
                    .back()
                    .map_or(record.time_ms, |(t, _)| (*t).max(record.time_ms));
                if record.time_ms <= newest.saturating_sub(window_ms) {
                    continue;
                }
                let at = (record.time_ms, record.id);
                let place = window.times.partition_point(|p| *p <= at);
                window.times.insert(place, at);
                while window
                    .times
                    .front()
                    .is_some_and(|(t, _)| *t <= newest.saturating_sub(window_ms))
                {
                    window.times.pop_front();
                }
                if window.times.len() >= rule.threshold as usize && newest >= window.quiet_until {
                    let fired: Vec<(i64, Uuid)> = window.times.drain(..).collect();
                    window.quiet_until = newest.saturating_add(window_ms);
                    state
                        .pending
                        .push(notification(rule, &batch.account_id, &key.2, &fired));
                }
            }
        }
        // Forget groups whose window has passed, and bound the rest.
        if let Some(now) = state.newest.get(&batch.account_id).copied() {
            state.windows.retain(|(index, account, _), window| {
                let window_ms =
                    i64::try_from(self.rules[*index].window.as_millis()).unwrap_or(i64::MAX);
                account != &batch.account_id
                    || window.quiet_until > now
                    || window
                        .times
                        .back()
                        .is_some_and(|(t, _)| *t > now.saturating_sub(window_ms))
            });
        }
        if state.windows.len() > MAX_GROUPS * self.rules.len().max(1) {
            tracing::warn!(target: "audit_store::alert", "too many alert groups at once: windows forgotten");
            state.windows.clear();
        }
    }
}

/// The notification of `rule` firing for `group` of `account_id` on `fired`.
fn notification(
    rule: &AlertRule,
    account_id: &str,
    group: &str,
    fired: &[(i64, Uuid)],
) -> Notification {
    let first = fired.first().copied().unwrap_or((0, Uuid::nil()));
    let last = fired.last().copied().unwrap_or(first);
    let mut hash = Sha256::new();
    for part in [
        rule.name.as_bytes(),
        account_id.as_bytes(),
        group.as_bytes(),
    ] {
        hash.update((part.len() as u64).to_be_bytes());
        hash.update(part);
    }
    hash.update(first.1.as_bytes());
    let key = hex::encode(&hash.finalize()[..16]);
    let group_by = rule.group_by.map(|c| c.name());
    let body = serde_json::json!({
        "type": "audit.alert",
        "notification_id": key,
        "rule": rule.name,
        "account_id": account_id,
        "group_by": group_by,
        "group": group_by.map(|_| group),
        "count": fired.len(),
        "threshold": rule.threshold,
        "window_seconds": rule.window.as_secs(),
        "first_time": Timestamp::from_unix_millis(first.0).to_string(),
        "last_time": Timestamp::from_unix_millis(last.0).to_string(),
        "record_ids": fired.iter().map(|(_, id)| id.to_string()).collect::<Vec<_>>(),
    })
    .to_string();
    let description = match group_by {
        Some(column) => format!(
            "Alert {}: {} matching records with {column} {group:?} within {} s",
            rule.name,
            fired.len(),
            rule.window.as_secs()
        ),
        None => format!(
            "Alert {}: {} matching records within {} s",
            rule.name,
            fired.len(),
            rule.window.as_secs()
        ),
    };
    Notification {
        key,
        account_id: account_id.to_owned(),
        body,
        description,
    }
}

/// The system event recording a delivered notification.
fn event(notification: &Notification) -> AuditRecord {
    let id = Uuid::now_v7();
    AuditRecord {
        id,
        account: Some(Account {
            id: notification.account_id.clone(),
            name: None,
        }),
        action: Action {
            description: Some(notification.description.as_str().into()),
            result: ActionResult::Success,
            time: Timestamp::now(),
            kind: ActionType::Create,
        },
        actor: Actor {
            context: Some(ActorContext::System),
            id: Some("audit-alerts".to_owned()),
            kind: Some(ActorType::System),
            ..Actor::default()
        },
        // An event no request made: its ray id alone.
        raw: Raw {
            method: None,
            cf_ray_id: id.simple().to_string(),
            status_code: None,
            uri: None,
            user_agent: None,
            client_request_id: None,
            client_gone: false,
        },
        resource: Resource {
            id: Some(notification.key.clone()),
            product: Some("audit_alerts".into()),
            scope: Some("accounts".into()),
            kind: Some("notifications".into()),
            request: serde_json::from_str::<serde_json::Value>(&notification.body)
                .ok()
                .map(Into::into),
            response: None,
        },
        zone: None,
        change: None,
        trace: None,
        service: None,
    }
}

impl Destination for Alerts {
    async fn deliver(&self, batch: &EncodedBatch) -> Result<(), DeliveryError> {
        self.count(batch);
        loop {
            let next = {
                let state = self.state.lock().unwrap_or_else(|e| e.into_inner());
                state.pending.first().cloned()
            };
            let Some(notification) = next else {
                return Ok(());
            };
            self.webhook
                .post(
                    notification.body.clone().into_bytes(),
                    "application/json",
                    false,
                    &notification.key,
                )
                .await
                .map_err(|e| DeliveryError::new(format!("alert notification failed: {e}")))?;
            self.state
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .pending
                .retain(|n| n.key != notification.key);
            self.events.submit(event(&notification));
        }
    }
}
