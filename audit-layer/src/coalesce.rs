//! Coalescing of failed authentications: records of requests answered `401` or `403` without
//! an authenticated actor (no `actor.id`, no token) are kept individually up to a rate per
//! source and account and window; beyond it they are counted, and each window's count goes to
//! the sink as one `summary` record when the window closes (or at a flush). Anyone can send
//! such requests: this bounds what they write into an account's log, and drops nothing
//! silently.
//!
//! The table of open windows is bounded: past `sources` (source, account) pairs, new pairs are
//! counted by source alone; past `sources` sources too, in one window for everyone.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::{Duration, Instant};

use uuid::Uuid;

use crate::record::{
    Account, Action, ActionResult, ActionType, Actor, AuditRecord, Body, Raw, Resource, Timestamp,
};
use crate::sink::{AuditSink, Backpressure, Commit};

/// The default number of failed-authentication records kept individually per source, account
/// and window: 10.
pub const DEFAULT_FAILED_AUTH_RATE: u32 = 10;

/// The default coalescing window: 60 s.
pub const DEFAULT_FAILED_AUTH_WINDOW: Duration = Duration::from_secs(60);

/// The default number of (source, account) pairs counted at once: 10,000 (and as many
/// sources beyond them).
pub const DEFAULT_FAILED_AUTH_SOURCES: usize = 10_000;

/// How failed authentications are coalesced.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Rules {
    /// Records kept individually per key and window.
    pub(crate) rate: u32,
    /// The window, from a key's first record.
    pub(crate) window: Duration,
    /// Keys counted at once, per kind of key.
    pub(crate) sources: usize,
    /// The service name summaries carry: the layer's.
    pub(crate) service: Option<Arc<str>>,
}

impl Default for Rules {
    fn default() -> Self {
        Self {
            rate: DEFAULT_FAILED_AUTH_RATE,
            window: DEFAULT_FAILED_AUTH_WINDOW,
            sources: DEFAULT_FAILED_AUTH_SOURCES,
            service: None,
        }
    }
}

/// What a window counts for: a source and an account, a source alone (past the cap of
/// pairs), or everyone (past the cap of sources too).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum Key {
    Pair(Option<IpAddr>, Option<String>),
    Source(Option<IpAddr>),
    Everyone,
}

impl Key {
    fn source(&self) -> Option<IpAddr> {
        match self {
            Self::Pair(ip, _) | Self::Source(ip) => *ip,
            Self::Everyone => None,
        }
    }

    fn account(&self) -> Option<&str> {
        match self {
            Self::Pair(_, account) => account.as_deref(),
            Self::Source(_) | Self::Everyone => None,
        }
    }

    fn by(&self) -> &'static str {
        match self {
            Self::Pair(..) => "source_account",
            Self::Source(_) => "source",
            Self::Everyone => "everyone",
        }
    }
}

/// One key's window: records kept so far, and what was counted instead.
#[derive(Debug)]
struct Window {
    opened: Instant,
    kept: u32,
    count: u64,
    first: Timestamp,
    last: Timestamp,
    /// Counted records by status (a handful of statuses at most).
    statuses: Vec<(u16, u64)>,
}

impl Window {
    fn new(opened: Instant) -> Self {
        Self {
            opened,
            kept: 0,
            count: 0,
            first: Timestamp::from_unix_millis(0),
            last: Timestamp::from_unix_millis(0),
            statuses: Vec::new(),
        }
    }

    /// Counts `record` instead of keeping it.
    fn count(&mut self, record: &AuditRecord) {
        let time = record.action.time;
        if self.count == 0 {
            self.first = time;
            self.last = time;
        } else {
            self.first = self.first.min(time);
            self.last = self.last.max(time);
        }
        self.count += 1;
        // Counted records are of failed authentications: they have a status.
        let status = record.raw.status_code.unwrap_or_default();
        match self.statuses.iter_mut().find(|(s, _)| *s == status) {
            Some((_, n)) => *n += 1,
            None => self.statuses.push((status, 1)),
        }
    }
}

/// The open windows, bounded.
#[derive(Debug, Default)]
struct Table {
    pairs: HashMap<Key, Window>,
    sources: HashMap<Key, Window>,
    everyone: Option<Window>,
}

impl Table {
    /// The open window for `pair`, or the coarser one it falls into past the caps; a window
    /// found expired is replaced, its summary pushed to `closed`.
    fn window(
        &mut self,
        pair: Key,
        now: Instant,
        rules: &Rules,
        closed: &mut Vec<(Key, Window)>,
    ) -> &mut Window {
        let expired = |w: &Window| now.duration_since(w.opened) >= rules.window;
        let (map, key) = if self.pairs.contains_key(&pair) || self.pairs.len() < rules.sources {
            (&mut self.pairs, pair)
        } else {
            let source = Key::Source(pair.source());
            if self.sources.contains_key(&source) || self.sources.len() < rules.sources {
                (&mut self.sources, source)
            } else {
                let window = self.everyone.get_or_insert_with(|| Window::new(now));
                if expired(window) {
                    let old = std::mem::replace(window, Window::new(now));
                    closed.push((Key::Everyone, old));
                }
                return window;
            }
        };
        if map.get(&key).is_some_and(expired)
            && let Some(old) = map.remove(&key)
        {
            closed.push((key.clone(), old));
        }
        map.entry(key).or_insert_with(|| Window::new(now))
    }

    /// Removes the windows closed by `now` (all of them with `all`) into `closed`.
    fn close(
        &mut self,
        now: Instant,
        window: Duration,
        all: bool,
        closed: &mut Vec<(Key, Window)>,
    ) {
        let done = |w: &Window| all || now.duration_since(w.opened) >= window;
        for map in [&mut self.pairs, &mut self.sources] {
            let keys: Vec<Key> = map
                .iter()
                .filter(|(_, w)| done(w))
                .map(|(k, _)| k.clone())
                .collect();
            for key in keys {
                if let Some(w) = map.remove(&key) {
                    closed.push((key, w));
                }
            }
        }
        if self.everyone.as_ref().is_some_and(done)
            && let Some(w) = self.everyone.take()
        {
            closed.push((Key::Everyone, w));
        }
    }

    fn is_empty(&self) -> bool {
        self.pairs.is_empty() && self.sources.is_empty() && self.everyone.is_none()
    }
}

/// The sink the layer's records go through: failed authentications are coalesced here, every
/// other record passes straight to the app's sink.
pub(crate) struct Coalescing {
    sink: Arc<dyn AuditSink>,
    rules: Rules,
    table: Mutex<Table>,
    /// Itself, for the task that closes windows on time.
    this: Weak<Coalescing>,
    /// Whether that task runs.
    ticking: std::sync::atomic::AtomicBool,
}

impl Coalescing {
    pub(crate) fn new(sink: Arc<dyn AuditSink>, rules: Rules) -> Arc<Self> {
        Arc::new_cyclic(|this| Self {
            sink,
            rules,
            table: Mutex::new(Table::default()),
            this: this.clone(),
            ticking: std::sync::atomic::AtomicBool::new(false),
        })
    }

    pub(crate) fn rules(&self) -> Rules {
        self.rules.clone()
    }

    /// The app's sink, behind the coalescing.
    pub(crate) fn inner(&self) -> &Arc<dyn AuditSink> {
        &self.sink
    }

    /// Whether `record` is one of a failed authentication: `401` or `403`, no actor known.
    fn is_failed_auth(record: &AuditRecord) -> bool {
        matches!(record.raw.status_code, Some(401 | 403))
            && record.actor.id.is_none()
            && record.actor.token.id.is_none()
            && !matches!(record.action.kind, ActionType::Summary | ActionType::Gap)
    }

    /// `Some(record)` when it is to be kept; `None` when it was counted.
    fn admit(&self, record: AuditRecord) -> Option<AuditRecord> {
        if !Self::is_failed_auth(&record) {
            return Some(record);
        }
        let now = Instant::now();
        let pair = Key::Pair(
            record.actor.ip_address,
            record.account.as_ref().map(|a| a.id.clone()),
        );
        let mut closed = Vec::new();
        let keep = {
            let mut table = self.table.lock().unwrap_or_else(PoisonError::into_inner);
            let window = table.window(pair, now, &self.rules, &mut closed);
            if window.kept < self.rules.rate {
                window.kept += 1;
                true
            } else {
                window.count(&record);
                false
            }
        };
        self.emit(closed);
        self.tick_on_time();
        keep.then_some(record)
    }

    /// Emits the summaries of the windows closed by now.
    fn close_due(&self) {
        self.close(false);
    }

    /// Emits the summaries of every open window (`all`), or of those closed by now.
    pub(crate) fn close(&self, all: bool) {
        let mut closed = Vec::new();
        self.table
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .close(Instant::now(), self.rules.window, all, &mut closed);
        self.emit(closed);
    }

    fn emit(&self, closed: Vec<(Key, Window)>) {
        for (key, window) in closed {
            if window.count > 0 {
                self.sink.submit(summary(&key, &window, &self.rules));
            }
        }
    }

    /// Starts the task that closes windows on time, once, on the current tokio runtime (without
    /// one, windows close as new records reach them, and at a flush).
    fn tick_on_time(&self) {
        use std::sync::atomic::Ordering;
        if self.ticking.load(Ordering::Relaxed) {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        if self.ticking.swap(true, Ordering::AcqRel) {
            return;
        }
        let this = self.this.clone();
        let tick = (self.rules.window / 4).clamp(Duration::from_millis(10), Duration::from_secs(1));
        runtime.spawn(async move {
            loop {
                tokio::time::sleep(tick).await;
                let Some(this) = this.upgrade() else { return };
                this.close_due();
                // Idle: the task ends, and the next coalesced record starts it again.
                let table = this.table.lock().unwrap_or_else(PoisonError::into_inner);
                if table.is_empty() {
                    this.ticking.store(false, Ordering::Release);
                    return;
                }
            }
        });
    }
}

impl Drop for Coalescing {
    fn drop(&mut self) {
        // Nothing counted is lost with the layer.
        let mut closed = Vec::new();
        self.table
            .get_mut()
            .unwrap_or_else(PoisonError::into_inner)
            .close(Instant::now(), self.rules.window, true, &mut closed);
        self.emit(closed);
    }
}

impl AuditSink for Coalescing {
    fn submit(&self, record: AuditRecord) {
        if let Some(record) = self.admit(record) {
            self.sink.submit(record);
        }
    }

    /// A counted record is committed with its summary: the refusal it stands for is released
    /// at once.
    fn submit_and_commit(&self, record: AuditRecord) -> Commit {
        match self.admit(record) {
            Some(record) => self.sink.submit_and_commit(record),
            None => Box::pin(std::future::ready(Ok(()))),
        }
    }

    fn is_available(&self) -> bool {
        self.sink.is_available()
    }

    fn backpressure(&self) -> Option<Backpressure> {
        self.sink.backpressure()
    }
}

/// The record that stands for the records `window` counted for `key`.
fn summary(key: &Key, window: &Window, rules: &Rules) -> AuditRecord {
    let id = Uuid::now_v7();
    let (first, last) = (window.first.to_string(), window.last.to_string());
    let source = key
        .source()
        .map_or_else(|| "unknown sources".to_owned(), |ip| ip.to_string());
    let status = window
        .statuses
        .iter()
        .max_by_key(|(status, n)| (*n, std::cmp::Reverse(*status)))
        .map_or(401, |(status, _)| *status);
    let statuses: serde_json::Map<String, serde_json::Value> = window
        .statuses
        .iter()
        .map(|(status, n)| (status.to_string(), (*n).into()))
        .collect();
    AuditRecord {
        id,
        account: key.account().map(|id| Account {
            id: id.to_owned(),
            name: None,
        }),
        action: Action {
            description: Some(
                format!(
                    "{} requests that failed authentication from {source} between {first} and \
                     {last}, beyond {} per {} s, counted here instead of recorded one by one",
                    window.count,
                    rules.rate,
                    rules.window.as_secs_f64()
                )
                .into(),
            ),
            result: ActionResult::Failure,
            time: window.last,
            kind: ActionType::Summary,
        },
        actor: Actor {
            ip_address: key.source(),
            ..Actor::default()
        },
        raw: Raw::synthetic(id, status),
        resource: Resource {
            id: None,
            product: Some("audit_log".into()),
            request: Some(Body::from(serde_json::json!({
                "count": window.count,
                "first": first,
                "last": last,
                "statuses": statuses,
                "by": key.by(),
            }))),
            response: None,
            scope: Some("accounts".into()),
            kind: Some("summary".into()),
        },
        zone: None,
        change: None,
        trace: None,
        service: rules.service.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::Token;
    use crate::sink::MemorySink;

    /// The record of an anonymous `GET` of `account`'s policies from `ip`, answered `status`.
    fn refused(ip: &str, account: &str, status: u16, ms: i64) -> AuditRecord {
        AuditRecord {
            id: Uuid::now_v7(),
            account: Some(Account {
                id: account.to_owned(),
                name: None,
            }),
            action: Action {
                description: None,
                result: ActionResult::Failure,
                time: Timestamp::from_unix_millis(ms),
                kind: ActionType::View,
            },
            actor: Actor {
                ip_address: Some(ip.parse().unwrap()),
                token: Token::default(),
                ..Actor::default()
            },
            raw: Raw {
                method: Some("GET".into()),
                cf_ray_id: "r".into(),
                status_code: Some(status),
                uri: Some(format!("/accounts/{account}/alerting/v3/policies")),
                user_agent: Some("curl".into()),
                client_request_id: None,
                client_gone: false,
            },
            resource: Resource::default(),
            zone: None,
            change: None,
            trace: None,
            service: None,
        }
    }

    fn rules(rate: u32, window_ms: u64, sources: usize) -> Rules {
        Rules {
            rate,
            window: Duration::from_millis(window_ms),
            sources,
            service: None,
        }
    }

    fn summaries(sink: &MemorySink) -> Vec<serde_json::Value> {
        sink.records()
            .iter()
            .filter(|r| r.action.kind == ActionType::Summary)
            .map(|r| serde_json::to_value(r).unwrap())
            .collect()
    }

    #[tokio::test]
    async fn beyond_the_rate_failed_authentications_are_counted_into_one_summary() {
        let sink = MemorySink::new();
        let coalescing = Coalescing::new(Arc::new(sink.clone()), rules(3, 60_000, 100));
        for i in 0..10 {
            coalescing.submit(refused("192.0.2.1", "acc_1", 401, 1000 + i));
        }
        coalescing.submit(refused("192.0.2.1", "acc_1", 403, 2000));
        // Another account, another source: their own allowance.
        coalescing.submit(refused("192.0.2.1", "acc_2", 401, 1000));
        coalescing.submit(refused("192.0.2.9", "acc_1", 401, 1000));
        assert_eq!(sink.len(), 5, "3 + 1 + 1 kept individually");
        coalescing.close(true);
        let summaries = summaries(&sink);
        assert_eq!(summaries.len(), 1, "{summaries:#?}");
        let summary = &summaries[0];
        assert_eq!(summary["action"]["type"], "summary");
        assert_eq!(summary["account"]["id"], "acc_1");
        assert_eq!(summary["actor"]["ip_address"], "192.0.2.1");
        assert_eq!(summary["raw"]["status_code"], 401);
        let request = &summary["resource"]["request"];
        assert_eq!(request["count"], 8);
        assert_eq!(
            request["first"],
            Timestamp::from_unix_millis(1003).to_string()
        );
        assert_eq!(
            request["last"],
            Timestamp::from_unix_millis(2000).to_string()
        );
        assert_eq!(request["statuses"], serde_json::json!({"401": 7, "403": 1}));
        assert_eq!(request["by"], "source_account");
    }

    #[tokio::test]
    async fn other_records_pass_untouched() {
        let sink = MemorySink::new();
        let coalescing = Coalescing::new(Arc::new(sink.clone()), rules(0, 60_000, 100));
        let mut known = refused("192.0.2.1", "acc_1", 403, 1);
        known.actor.id = Some("usr_1".into());
        coalescing.submit(known);
        coalescing.submit(refused("192.0.2.1", "acc_1", 404, 1));
        coalescing.submit(refused("192.0.2.1", "acc_1", 401, 1));
        assert_eq!(sink.len(), 2);
        drop(coalescing);
        assert_eq!(
            summaries(&sink).len(),
            1,
            "the count is emitted when dropped"
        );
    }

    #[tokio::test]
    async fn a_window_is_summarized_when_it_closes() {
        let sink = MemorySink::new();
        let coalescing = Coalescing::new(Arc::new(sink.clone()), rules(1, 500, 100));
        for i in 0..4 {
            coalescing.submit(refused("192.0.2.1", "acc_1", 401, i));
        }
        assert_eq!(sink.len(), 1);
        let records = sink.wait_for(2, Duration::from_secs(5)).await;
        assert_eq!(records[1].action.kind, ActionType::Summary);
        assert_eq!(
            records[1].resource.request.as_ref().unwrap().to_value()["count"],
            3
        );
        // The next window keeps its own first record.
        coalescing.submit(refused("192.0.2.1", "acc_1", 401, 10));
        assert_eq!(sink.len(), 3);
    }

    #[tokio::test]
    async fn past_the_cap_sources_then_everyone_are_counted_together() {
        let sink = MemorySink::new();
        let coalescing = Coalescing::new(Arc::new(sink.clone()), rules(0, 60_000, 2));
        for account in ["a", "b", "c", "d"] {
            coalescing.submit(refused("192.0.2.1", account, 401, 1));
        }
        for source in ["192.0.2.2", "192.0.2.3"] {
            coalescing.submit(refused(source, "e", 401, 1));
        }
        assert!(sink.is_empty());
        coalescing.close(true);
        let mut by: Vec<(String, u64)> = summaries(&sink)
            .iter()
            .map(|s| {
                let request = &s["resource"]["request"];
                (
                    request["by"].as_str().unwrap().to_owned(),
                    request["count"].as_u64().unwrap(),
                )
            })
            .collect();
        by.sort();
        // a, b by pair; c, d by their source; the other sources' pairs… the pairs are full,
        // 192.0.2.2 takes the second source slot, 192.0.2.3 falls to everyone.
        assert_eq!(
            by,
            [
                ("everyone".to_owned(), 1),
                ("source".to_owned(), 1),
                ("source".to_owned(), 2),
                ("source_account".to_owned(), 1),
                ("source_account".to_owned(), 1),
            ]
        );
        let total: u64 = by.iter().map(|(_, n)| n).sum();
        assert_eq!(total, 6, "every record counted once");
    }
}
