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
//! `create` of an `audit_alerts` `notifications` resource by a `system` actor. One the
//! webhook [refuses](crate::export::DeliveryError::refused) for what it holds (a 400, 413 or
//! 422: a group value, chosen by whoever made the records, that the receiver cannot take) is
//! given up after [`REFUSALS_BEFORE_GIVING_UP`] refusals and recorded the same way with the
//! result `failure`: it does not hold back every other notification, of every account.
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

/// Groups kept per rule and account at most; past it the quieter half is forgotten. (Small
/// under test, so that a test can pass it.)
const MAX_GROUPS: usize = if cfg!(test) { 1_000 } else { 100_000 };
/// The actor of the system events that record notifications; such events are not counted by
/// the rules (a rule matching them would fire on its own notifications for ever).
const ALERTS_ACTOR: &str = "audit-alerts";

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
    /// Per (rule, account), per group: each account's groups apart, so that one account's
    /// flood of groups is bounded and forgotten on its own, never another account's.
    windows: HashMap<(usize, String), HashMap<String, Window>>,
    /// The idempotency key of the last batch counted per account: a batch sent again (after
    /// a failed notification) is not counted again.
    counted: HashMap<String, String>,
    /// The newest action time counted per account.
    newest: HashMap<String, i64>,
    /// Fired and not yet delivered.
    pending: Vec<Notification>,
    /// Refusals of a pending notification by the webhook, by its key.
    refusals: HashMap<String, u32>,
}

/// How many times the webhook may [refuse](crate::export::DeliveryError::refused) a
/// notification before it is given up (recorded with the result `failure`).
pub const REFUSALS_BEFORE_GIVING_UP: u32 = 3;

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

    /// Counts one more refusal of the notification `key`: whether it is to be given up.
    fn refused_enough(&self, key: &str) -> bool {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let refusals = state.refusals.entry(key.to_owned()).or_default();
        *refusals += 1;
        *refusals >= REFUSALS_BEFORE_GIVING_UP
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
            if record.actor_type == Some("system")
                && record.actor_id.as_deref() == Some(ALERTS_ACTOR)
            {
                continue;
            }
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
                let groups = state
                    .windows
                    .entry((index, batch.account_id.clone()))
                    .or_default();
                if !groups.contains_key(&group) && groups.len() >= MAX_GROUPS {
                    forget_quietest(groups);
                }
                let window = groups.entry(group.clone()).or_default();
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
                        .push(notification(rule, &batch.account_id, &group, &fired));
                }
            }
        }
        // Forget this account's groups whose window has passed.
        if let Some(now) = state.newest.get(&batch.account_id).copied() {
            for (index, rule) in self.rules.iter().enumerate() {
                let Some(groups) = state.windows.get_mut(&(index, batch.account_id.clone())) else {
                    continue;
                };
                let window_ms = i64::try_from(rule.window.as_millis()).unwrap_or(i64::MAX);
                groups.retain(|_, window| {
                    window.quiet_until > now
                        || window
                            .times
                            .back()
                            .is_some_and(|(t, _)| *t > now.saturating_sub(window_ms))
                });
                if groups.is_empty() {
                    state.windows.remove(&(index, batch.account_id.clone()));
                }
            }
        }
    }
}

/// Forgets the quieter half of one rule's groups of one account (those whose last record is
/// oldest), when it holds [`MAX_GROUPS`]: a flood of distinct groups (addresses, emails)
/// cannot grow memory without bound, and costs only the flooding account its windows.
fn forget_quietest(groups: &mut HashMap<String, Window>) {
    tracing::warn!(target: "audit_store::alert", groups = groups.len(), "too many alert groups in one account: the quieter half forgotten");
    let mut last: Vec<i64> = groups
        .values()
        .map(|w| w.times.back().map_or(i64::MIN, |(t, _)| *t))
        .collect();
    let middle = last.len() / 2;
    let (_, cut, _) = last.select_nth_unstable(middle);
    let cut = *cut;
    groups.retain(|_, w| w.times.back().is_some_and(|(t, _)| *t > cut));
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

/// The system event recording a delivered notification, or (`refused` by the webhook, with
/// its answer) one given up.
fn event(notification: &Notification, refused: Option<&str>) -> AuditRecord {
    let id = Uuid::now_v7();
    let description = match refused {
        None => notification.description.clone(),
        Some(answer) => format!(
            "{}; not delivered: the webhook refused it {REFUSALS_BEFORE_GIVING_UP} times ({answer})",
            notification.description
        ),
    };
    AuditRecord {
        id,
        account: Some(Account {
            id: notification.account_id.clone(),
            name: None,
        }),
        action: Action {
            description: Some(description.as_str().into()),
            result: if refused.is_none() {
                ActionResult::Success
            } else {
                ActionResult::Failure
            },
            time: Timestamp::now(),
            kind: ActionType::Create,
        },
        actor: Actor {
            context: Some(ActorContext::System),
            id: Some(ALERTS_ACTOR.to_owned()),
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
        if batch.format != crate::export::Format::Ndjson {
            // The rules read stored records: another format would match nothing, silently.
            return Err(DeliveryError::new(format!(
                "alert rules read the records as stored: build the alerts' export job with \
                 Format::Ndjson, not {:?}",
                batch.format
            )));
        }
        self.count(batch);
        loop {
            let next = {
                let state = self.state.lock().unwrap_or_else(|e| e.into_inner());
                state.pending.first().cloned()
            };
            let Some(notification) = next else {
                return Ok(());
            };
            let posted = self
                .webhook
                .post(
                    notification.body.clone().into_bytes(),
                    "application/json",
                    false,
                    &notification.key,
                )
                .await;
            let refused = match posted {
                Ok(()) => None,
                Err(e) if e.is_refused() && self.refused_enough(&notification.key) => {
                    tracing::error!(
                        target: "audit_store::alert",
                        account = ?notification.account_id,
                        notification = %notification.key,
                        "the alert webhook refused a notification {REFUSALS_BEFORE_GIVING_UP} times; \
                         given up and recorded as failed: {e}"
                    );
                    Some(e.to_string())
                }
                // Retried with the batch, after the job's backoff.
                Err(e) => {
                    return Err(DeliveryError::new(format!(
                        "alert notification failed: {e}"
                    )));
                }
            };
            {
                let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
                state.pending.retain(|n| n.key != notification.key);
                state.refusals.remove(&notification.key);
            }
            self.events.submit(event(&notification, refused.as_deref()));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::export::Format;

    const RULES: &str = "
rules:
  - name: failed-logins
    filter: { action_type: login, action_result: failure }
    group_by: actor_email
    threshold: 5
    window: 5m
  - name: anything-created
    filter: { action_type: create }
    threshold: 1
    window: 5m
";

    fn alerts() -> Alerts {
        Alerts::new(
            rules_from_yaml(RULES).unwrap(),
            HttpDestination::new("http://127.0.0.1:9/alerts").unwrap(),
            Arc::new(audit_layer::sink::MemorySink::new()),
        )
    }

    /// A failed login of `email` into `account` at `time_ms`, as stored.
    fn failed_login(account: &str, email: &str, time_ms: i64) -> AuditRecord {
        let mut record = event(
            &Notification {
                key: "k".into(),
                account_id: account.into(),
                body: "{}".into(),
                description: String::new(),
            },
            None,
        );
        record.action.kind = "login".parse().unwrap();
        record.action.result = ActionResult::Failure;
        record.action.time = Timestamp::from_unix_millis(time_ms);
        record.actor = Actor {
            email: Some(email.into()),
            kind: Some(ActorType::User),
            ..Actor::default()
        };
        record
    }

    fn batch(account: &str, key: &str, records: &[AuditRecord]) -> EncodedBatch {
        let lines: String = records
            .iter()
            .map(|r| serde_json::to_string(r).unwrap() + "\n")
            .collect();
        EncodedBatch {
            job: "alerts".into(),
            account_id: account.into(),
            idempotency_key: key.into(),
            first: (0, Uuid::nil()),
            last: (0, Uuid::nil()),
            records: records.len(),
            format: Format::Ndjson,
            lines,
            positions: vec![(0, Uuid::nil()); records.len()],
        }
    }

    fn fired(alerts: &Alerts) -> Vec<(String, String)> {
        let state = alerts.state.lock().unwrap();
        state
            .pending
            .iter()
            .map(|n| (n.account_id.clone(), n.description.clone()))
            .collect()
    }

    #[test]
    fn a_flood_of_groups_in_one_account_forgets_only_that_accounts_windows() {
        let alerts = alerts();
        let t = 1_700_000_000_000;
        let victim: Vec<_> = (0..4)
            .map(|i| failed_login("acc_b", "victim@example.com", t + i))
            .collect();
        alerts.count(&batch("acc_b", "b1", &victim));
        // Another tenant makes far more groups than one rule and account may hold.
        for chunk in 0..3 {
            let flood: Vec<_> = (0..MAX_GROUPS)
                .map(|i| failed_login("acc_a", &format!("u{chunk}-{i}@example.com"), t + 10))
                .collect();
            alerts.count(&batch("acc_a", &format!("a{chunk}"), &flood));
        }
        {
            let state = alerts.state.lock().unwrap();
            assert!(state.windows[&(0, "acc_a".to_owned())].len() <= MAX_GROUPS);
        }
        assert!(fired(&alerts).is_empty());
        // The victim's fifth failure still fires.
        let fifth = failed_login("acc_b", "victim@example.com", t + 20);
        alerts.count(&batch("acc_b", "b2", &[fifth]));
        let fired = fired(&alerts);
        assert_eq!(fired.len(), 1, "{fired:?}");
        assert_eq!(fired[0].0, "acc_b");
    }

    #[tokio::test]
    async fn a_batch_in_another_format_than_ndjson_is_refused_with_the_fix() {
        let alerts = alerts();
        let mut logpush = batch("acc_a", "l1", &[]);
        logpush.format = Format::Logpush;
        let refused = alerts.deliver(&logpush).await.expect_err("not read");
        assert!(refused.to_string().contains("Format::Ndjson"), "{refused}");
    }

    #[test]
    fn the_events_recording_notifications_are_not_counted() {
        let alerts = alerts();
        let notice = event(
            &Notification {
                key: "k".into(),
                account_id: "acc_a".into(),
                body: "{}".into(),
                description: "failed-logins fired".into(),
            },
            None,
        );
        alerts.count(&batch("acc_a", "n1", std::slice::from_ref(&notice)));
        assert!(
            fired(&alerts).is_empty(),
            "a notification would fire a notification"
        );
        // Any other create fires the catch-all rule.
        let mut created = notice;
        created.id = Uuid::now_v7();
        created.actor = Actor {
            id: Some("user-1".into()),
            kind: Some(ActorType::User),
            ..Actor::default()
        };
        alerts.count(&batch("acc_a", "n2", &[created]));
        assert_eq!(fired(&alerts).len(), 1);
    }
}
