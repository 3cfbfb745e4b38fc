//! [`AppState`]: what every handler and the auth middleware share.

use std::sync::{Arc, OnceLock};

use audit_layer::AuditEvents;

use crate::db::Db;

/// Consecutive failed deliveries that disable an alerting policy, unless configured.
pub(crate) const DEFAULT_MAX_FAILED_DELIVERIES: u32 = 3;

/// What every handler shares.
#[derive(Clone, Debug)]
pub(crate) struct AppState {
    /// The app's own database.
    pub(crate) db: Db,
    /// What the app records audit events with: the audit layer's, set once the layer is built
    /// (see `app::router`); unset when the app runs without one.
    events: Arc<OnceLock<AuditEvents>>,
    /// Consecutive failed deliveries that disable an alerting policy.
    pub(crate) max_failed_deliveries: u32,
}

impl AppState {
    /// The state of an app over `db`, with no audit events yet.
    pub(crate) fn new(db: Db) -> Self {
        Self {
            db,
            events: Arc::default(),
            max_failed_deliveries: DEFAULT_MAX_FAILED_DELIVERIES,
        }
    }

    /// The audit layer's events, once set.
    pub(crate) fn events(&self) -> Option<&AuditEvents> {
        self.events.get()
    }

    /// Sets the audit events, once: later calls keep the first.
    pub(crate) fn set_events(&self, events: AuditEvents) {
        let _ = self.events.set(events);
    }
}
