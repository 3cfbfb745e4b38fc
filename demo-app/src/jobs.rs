//! Background jobs: work the app does on its own, audited as system events.
//!
//! [`sweep_expired_tokens`] runs every `--sweep-interval-ms`: it revokes the API tokens whose
//! `expires_on` passed and records an `expire` event for each, the system acting, in a run
//! whose events share a ray id of their own, with the token's value before and after. (A
//! token past its expiry works until the next sweep revokes it.) The server spawns it and
//! stops it at shutdown, before the audit pipeline flushes.
//!
//! The other job, test deliveries of alerting policies and the enforcement that disables a
//! failing policy, is started by a request: see `products::alerting`.

use std::time::Duration;

use audit_layer::record::ActionType;
use audit_layer::{AuditContext, AuditEvents, WithAuditContext};

use crate::db::{Db, execute, now_ms, rfc3339, select};
use crate::products::tokens::Token;
use crate::state::AppState;

/// The background jobs' settings.
#[derive(Clone, Copy, Debug)]
pub(crate) struct JobSettings {
    /// How often expired API tokens are swept.
    pub(crate) sweep_interval: Duration,
    /// Consecutive failed deliveries that disable an alerting policy.
    pub(crate) max_failed_deliveries: u32,
}

/// An API token expired and was revoked.
const EXPIRE: ActionType = ActionType::from_static("expire");

/// Sweeps expired tokens every `interval`, forever (the caller aborts the task at shutdown).
pub(crate) async fn sweep_expired_tokens(state: AppState, interval: Duration) {
    let mut ticks = tokio::time::interval(interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        let Some(events) = state.events() else {
            continue;
        };
        // Each run is the system acting, under a ray id of its own.
        let run = sweep_once(&state.db, events).in_audit_context(AuditContext::system());
        if let Err(e) = run.await {
            tracing::warn!(target: "demo_app", "token expiry sweep: database error: {e}");
        }
    }
}

#[derive(sqlx::FromRow)]
struct ExpiredRow {
    id: String,
    account_id: String,
    name: String,
    user_id: String,
    created_ms: i64,
}

/// Revokes every token past its expiry, recording an `expire` event for each.
async fn sweep_once(db: &Db, events: &AuditEvents) -> Result<(), sqlx::Error> {
    let now = now_ms();
    let now_text = now.to_string();
    // The bind is text: compared as a number (SQLite by the column's affinity, PostgreSQL by
    // the cast).
    const SQL: &str = "SELECT id, account_id, name, user_id, created_ms FROM api_tokens \
        WHERE revoked_ms IS NULL AND expires_ms IS NOT NULL AND expires_ms <= CAST($1 AS BIGINT) \
        ORDER BY expires_ms, id LIMIT 1000";
    let expired: Vec<ExpiredRow> = select(SQL, &[&now_text]).all(db).await?;
    for row in expired {
        let revoked = execute!(
            db,
            sqlx::query(
                "UPDATE api_tokens SET revoked_ms = $1 WHERE id = $2 AND revoked_ms IS NULL"
            )
            .bind(now)
            .bind(&row.id)
        )?;
        if revoked != 1 {
            continue;
        }
        let token = |status: &str, revoked_on: Option<String>| Token {
            id: row.id.clone(),
            name: row.name.clone(),
            status: status.to_owned(),
            user_id: row.user_id.clone(),
            created_on: rfc3339(row.created_ms),
            revoked_on,
        };
        events
            .event(EXPIRE)
            .account(row.account_id.as_str())
            .scope("accounts")
            .product("tokens")
            .resource_type("tokens")
            .resource_id(row.id.as_str())
            .description("Revoked an API token past its expiry")
            .before(&token("active", None))
            .after(&token("revoked", Some(rfc3339(now))))
            .emit();
    }
    Ok(())
}
