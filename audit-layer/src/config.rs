//! The layer's settings, as the [`AuditLayer`](crate::AuditLayer) builds them and the
//! [`Audit`](crate::Audit) service reads them on every request.

use std::sync::Arc;
use std::time::Duration;

use http::HeaderName;

use crate::ahead::BodyBudget;
use crate::capture::RecordLimits;
use crate::client_ip::TrustedProxies;
use crate::coalesce::{Coalescing, Rules};
use crate::detach::Detached;
use crate::policy::AuditPolicy;
use crate::sink::AuditSink;

/// Everything a layer was configured with; shared by its services behind an `Arc`.
#[derive(Clone)]
pub(crate) struct Config {
    pub(crate) policy: Arc<AuditPolicy>,
    /// Where records go: the app's sink behind the coalescing of failed authentications
    /// (`coalescing` itself).
    pub(crate) sink: Arc<dyn AuditSink>,
    pub(crate) coalescing: Arc<Coalescing>,
    pub(crate) body_limit: usize,
    /// The longest a body read ahead of the handler may take to arrive.
    pub(crate) body_read_timeout: Duration,
    /// The bytes all requests may hold in bodies read ahead of their handlers.
    pub(crate) body_budget: Arc<BodyBudget>,
    /// Handlers finishing on their own after their clients left.
    pub(crate) detached: Arc<Detached>,
    pub(crate) trusted_proxies: TrustedProxies,
    pub(crate) request_id_header: HeaderName,
    pub(crate) strict: bool,
    // --- What a record holds (layer-content, issue 18) ---
    /// The caps on each recorded string and on each record's JSON text.
    pub(crate) record_limits: RecordLimits,
    /// The service name every record carries.
    pub(crate) service: Option<Arc<str>>,
}

impl Config {
    /// Sends records to `sink`, coalescing failed authentications by `rules`.
    pub(crate) fn set_sink(&mut self, sink: Arc<dyn AuditSink>, mut rules: Rules) {
        rules.service = self.service.clone();
        let coalescing = Coalescing::new(sink, rules);
        self.sink = Arc::clone(&coalescing) as Arc<dyn AuditSink>;
        self.coalescing = coalescing;
    }

    /// Coalesces failed authentications by the rules `change` makes of the current ones.
    pub(crate) fn set_rules(&mut self, change: impl FnOnce(&mut Rules)) {
        let mut rules = self.coalescing.rules();
        change(&mut rules);
        let sink = Arc::clone(self.coalescing.inner());
        self.set_sink(sink, rules);
    }
}
