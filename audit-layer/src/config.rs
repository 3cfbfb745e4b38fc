//! The layer's settings, as the [`AuditLayer`](crate::AuditLayer) builds them and the
//! [`Audit`](crate::Audit) service reads them on every request.

use std::sync::Arc;

use http::HeaderName;

use crate::capture::RecordLimits;
use crate::client_ip::TrustedProxies;
use crate::policy::AuditPolicy;
use crate::sink::AuditSink;

/// Everything a layer was configured with; shared by its services behind an `Arc`.
#[derive(Clone)]
pub(crate) struct Config {
    pub(crate) policy: Arc<AuditPolicy>,
    pub(crate) sink: Arc<dyn AuditSink>,
    pub(crate) body_limit: usize,
    pub(crate) trusted_proxies: TrustedProxies,
    pub(crate) request_id_header: HeaderName,
    pub(crate) strict: bool,
    // --- What a record holds (layer-content, issue 18) ---
    /// The caps on each recorded string and on each record's JSON text.
    pub(crate) record_limits: RecordLimits,
}
