//! The demo's products, one module each: accounts, members (and, in `invites`, the invited
//! user's side of an invitation), API tokens, zones, DNS records, alerting policies and the
//! dashboard login. Each owns its tables' queries, its request and response shapes, its
//! handlers and its `routes()`, which tag all its operations at once (with the audit markings
//! they share, such as `x-audit-product`); what they share is in [`crate::api`]: the paths of
//! an account and a zone, the failure answers operations document, fetch-or-404 and paging.
//!
//! Every operation carries a `#[utoipa::path]` with a summary (the record's
//! `action.description`) and marks with `x-auditable` exactly the fields an operator wants in
//! the audit log: names, settings and ids, never secrets (passwords, token values, webhook
//! URLs, session ids) nor free text that may hold them.

pub(crate) mod accounts;
pub(crate) mod alerting;
pub(crate) mod dns;
mod dns_input;
pub(crate) mod invites;
pub(crate) mod login;
pub(crate) mod members;
pub(crate) mod tokens;
pub(crate) mod zones;
