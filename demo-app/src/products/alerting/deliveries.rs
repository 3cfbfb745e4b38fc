//! Test deliveries of alerting policies, and the enforcement that disables a policy whose
//! webhooks keep failing: work a request starts and a task of its own finishes, audited as
//! events tied to that request.
//!
//! When a `PUT` turns a policy on (from disabled) and it has webhooks, the handler spawns a test
//! delivery in the request's audit context
//! ([`AuditFacts::context`](crate::auth::AuditFacts::context)): the task checks that each
//! webhook's endpoint accepts a connection (within 2 s; no alert content is sent; at most
//! 10 webhooks, 16 deliveries at once, never an address of this machine or a private network) and
//! records a `deliver` event — its actor is the user who sent the `PUT`, its ray id the
//! `PUT`'s. A failed delivery counts against the policy; at the limit
//! ([`crate::state::AppState::max_failed_deliveries`]) the app disables the policy and records a `disable`
//! event whose actor is the system, still under the `PUT`'s ray id, with the policy's value
//! before and after (its auditable fields: never the webhook URLs, which carry secrets).

use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use audit_layer::record::{ActionResult, ActionType};
use audit_layer::{AuditContext, AuditEvent, AuditEvents, Identity, WithAuditContext};

use super::{Filters, Mechanisms, Policy, PolicyInput, WebhookTarget};
use crate::db::{Db, execute, now_ms};
use crate::state::AppState;

/// A test delivery to a policy's webhooks.
const DELIVER: ActionType = ActionType::from_static("deliver");
/// The app disabled a policy.
const DISABLE: ActionType = ActionType::from_static("disable");

/// How long a webhook's endpoint may take to resolve, and to accept a connection.
const CONNECT_WITHIN: Duration = Duration::from_secs(2);

/// Test deliveries under way at once, at most: a policy turned on beyond them gets none (and
/// the log says so).
const CONCURRENT_DELIVERIES: usize = 16;

/// Webhooks of one policy a test delivery tries, at most.
const WEBHOOKS_TRIED: usize = 10;

fn deliveries() -> &'static Arc<tokio::sync::Semaphore> {
    static DELIVERIES: OnceLock<Arc<tokio::sync::Semaphore>> = OnceLock::new();
    DELIVERIES.get_or_init(|| Arc::new(tokio::sync::Semaphore::new(CONCURRENT_DELIVERIES)))
}

/// Spawns the test delivery of `policy` (just turned on by a request) in `context`, the
/// request's: the events it records carry the request's actor and ray id.
pub(crate) fn spawn_test_delivery(
    state: &AppState,
    context: AuditContext,
    account_id: String,
    policy: Policy,
) {
    let Some(events) = state.events().cloned() else {
        return;
    };
    let Ok(permit) = Arc::clone(deliveries()).try_acquire_owned() else {
        tracing::warn!(
            target: "demo_app",
            "test delivery skipped: {CONCURRENT_DELIVERIES} already under way"
        );
        return;
    };
    let db = state.db.clone();
    let max_failures = state.max_failed_deliveries;
    tokio::spawn(
        async move {
            let _permit = permit;
            if let Err(e) = deliver(&db, &events, &account_id, policy, max_failures).await {
                tracing::warn!(target: "demo_app", "test delivery: database error: {e}");
            }
        }
        .in_audit_context(context),
    );
}

async fn deliver(
    db: &Db,
    events: &AuditEvents,
    account_id: &str,
    policy: Policy,
    max_failures: u32,
) -> Result<(), sqlx::Error> {
    let hooks = &policy.mechanisms.webhooks[..policy.mechanisms.webhooks.len().min(WEBHOOKS_TRIED)];
    let mut delivered = 0;
    for hook in hooks {
        if reachable(&hook.url).await {
            delivered += 1;
        }
    }
    let failed = delivered < hooks.len();
    policy_event(events, DELIVER, account_id, &policy)
        .description(format!(
            "Test alert delivered to {delivered} of {} webhooks",
            hooks.len()
        ))
        .result(if failed {
            ActionResult::Failure
        } else {
            ActionResult::Success
        })
        .emit();
    if !failed {
        execute!(
            db,
            sqlx::query(
                "UPDATE alerting_policies SET failed_deliveries = 0 WHERE account_id = $1 AND id = $2"
            )
            .bind(account_id)
            .bind(&policy.id)
        )?;
        return Ok(());
    }
    let failures: i64 = match db {
        Db::Sqlite(pool) => {
            sqlx::query_scalar(
                "UPDATE alerting_policies SET failed_deliveries = failed_deliveries + 1 \
                 WHERE account_id = $1 AND id = $2 RETURNING failed_deliveries",
            )
            .bind(account_id)
            .bind(&policy.id)
            .fetch_optional(pool)
            .await?
        }
        Db::Postgres(pool) => {
            sqlx::query_scalar(
                "UPDATE alerting_policies SET failed_deliveries = failed_deliveries + 1 \
                 WHERE account_id = $1 AND id = $2 RETURNING failed_deliveries::int8",
            )
            .bind(account_id)
            .bind(&policy.id)
            .fetch_optional(pool)
            .await?
        }
    }
    .unwrap_or_default();
    if failures < i64::from(max_failures) {
        return Ok(());
    }
    let disabled = execute!(
        db,
        sqlx::query(
            "UPDATE alerting_policies SET enabled = $1, modified_ms = $2 \
             WHERE account_id = $3 AND id = $4 AND enabled = $5",
        )
        .bind(false)
        .bind(now_ms())
        .bind(account_id)
        .bind(&policy.id)
        .bind(true)
    )?;
    if disabled == 1 {
        let before = as_input(&policy, true);
        let after = as_input(&policy, false);
        policy_event(events, DISABLE, account_id, &policy)
            .actor(Identity::system())
            .description(format!(
                "Disabled the policy after {failures} consecutive failed deliveries"
            ))
            .before(&before)
            .after(&after)
            .emit();
    }
    Ok(())
}

/// An event `action` on `account_id`'s alerting policy `policy`.
fn policy_event<'a>(
    events: &'a AuditEvents,
    action: ActionType,
    account_id: &str,
    policy: &Policy,
) -> AuditEvent<'a> {
    events
        .event(action)
        .account(account_id)
        .scope("accounts")
        .product("alerting")
        .resource_type("policies")
        .resource_id(policy.id.as_str())
}

/// The policy as written, enabled or not: the shape whose schema marks what of a policy the
/// log may hold.
fn as_input(policy: &Policy, enabled: bool) -> PolicyInput {
    PolicyInput {
        name: policy.name.clone(),
        description: policy.description.clone(),
        enabled,
        alert_type: policy.alert_type.clone(),
        filters: Some(Filters {
            services: policy.filters.services.clone(),
            zones: policy.filters.zones.clone(),
        }),
        mechanisms: Some(Mechanisms {
            email: Vec::new(),
            webhooks: policy
                .mechanisms
                .webhooks
                .iter()
                .map(|w| WebhookTarget { url: w.url.clone() })
                .collect(),
        }),
    }
}

/// Whether the endpoint of webhook `url` (`http://` or `https://`) accepts a TCP connection
/// within [`CONNECT_WITHIN`]. A host that resolves to an address of this machine or of a
/// private network is not connected to (it counts as a failed delivery): a policy's webhook
/// must not make the app probe what only it can reach.
async fn reachable(url: &str) -> bool {
    let Some((host, port)) = endpoint(url) else {
        return false;
    };
    let Ok(Ok(addresses)) = tokio::time::timeout(
        CONNECT_WITHIN,
        tokio::net::lookup_host((host.as_str(), port)),
    )
    .await
    else {
        return false;
    };
    let addresses: Vec<SocketAddr> = addresses.collect();
    if addresses.is_empty() || !addresses.iter().all(|a| is_public(a.ip())) {
        return false;
    }
    matches!(
        tokio::time::timeout(
            CONNECT_WITHIN,
            tokio::net::TcpStream::connect(&addresses[..])
        )
        .await,
        Ok(Ok(_))
    )
}

/// Whether `ip` is a public address: not loopback, private, link-local, shared (CGNAT),
/// unspecified, broadcast or multicast.
fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, ..] = v4.octets();
            !(v4.is_private()
                || v4.is_loopback()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.is_multicast()
                || a == 0
                || (a == 100 && (b & 0xc0) == 64))
        }
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => is_public(IpAddr::V4(v4)),
            None => {
                let first = v6.segments()[0];
                !(v6.is_loopback()
                    || v6.is_unspecified()
                    || v6.is_multicast()
                    || (first & 0xfe00) == 0xfc00
                    || (first & 0xffc0) == 0xfe80)
            }
        },
    }
}

/// The host and port of an `http://` or `https://` URL.
fn endpoint(url: &str) -> Option<(String, u16)> {
    let (rest, default_port) = if let Some(rest) = url.strip_prefix("https://") {
        (rest, 443)
    } else {
        (url.strip_prefix("http://")?, 80)
    };
    let authority = rest.split(['/', '?', '#']).next()?;
    let host_port = authority.rsplit('@').next()?;
    let (host, port) = if let Some(v6) = host_port.strip_prefix('[') {
        let (host, after) = v6.split_once(']')?;
        let port = match after.strip_prefix(':') {
            Some(port) => port.parse().ok()?,
            None => default_port,
        };
        (host, port)
    } else {
        match host_port.rsplit_once(':') {
            Some((host, port)) => (host, port.parse().ok()?),
            None => (host_port, default_port),
        }
    };
    (!host.is_empty()).then(|| (host.to_owned(), port))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_public_addresses_are_probed() {
        for private in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "0.0.0.0",
            "100.64.0.1",
            "255.255.255.255",
            "::1",
            "::",
            "fd00::1",
            "fe80::1",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
        ] {
            assert!(!is_public(private.parse().unwrap()), "{private}");
        }
        for public in ["192.0.2.1", "8.8.8.8", "2001:db8::1", "::ffff:8.8.8.8"] {
            assert!(is_public(public.parse().unwrap()), "{public}");
        }
    }

    #[tokio::test]
    async fn a_webhook_on_this_machine_is_not_connected_to() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        assert!(!reachable(&format!("http://127.0.0.1:{port}/hook")).await);
        assert!(!reachable(&format!("http://localhost:{port}/hook")).await);
    }

    #[test]
    fn a_webhook_endpoint_is_its_host_and_port() {
        for (url, want) in [
            (
                "https://hooks.example.com/T0/B0?x=1",
                Some(("hooks.example.com", 443)),
            ),
            ("http://127.0.0.1:9/hook", Some(("127.0.0.1", 9))),
            ("http://user:pw@[::1]:8080/x", Some(("::1", 8080))),
            ("http://[::1]/x", Some(("::1", 80))),
            ("ftp://example.com/", None),
            ("http:///nohost", None),
            ("http://host:notaport/", None),
        ] {
            let got = endpoint(url);
            assert_eq!(got.as_ref().map(|(h, p)| (h.as_str(), *p)), want, "{url}");
        }
    }
}
