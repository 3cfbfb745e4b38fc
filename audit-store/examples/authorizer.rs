//! Who may read which account's audit log: an [`Authorizer`] that asks the app (here, a
//! table of API tokens and the account each belongs to, as your database would hold it).
//!
//! A caller without a valid token gets `401`; a token of another account gets `404`, as if
//! the account did not exist, so the log of one tenant never tells another that it exists.
//!
//! Run with: `cargo run -p audit-store --example authorizer`, then
//!
//! ```sh
//! curl -i -H 'authorization: Bearer token-of-acc-1' 'localhost:3000/accounts/acc_1/logs/audit?since=2026-01-01&before=2030-01-01'   # 200
//! curl -i -H 'authorization: Bearer token-of-acc-1' 'localhost:3000/accounts/acc_2/logs/audit?since=2026-01-01&before=2030-01-01'   # 404
//! curl -i 'localhost:3000/accounts/acc_1/logs/audit?since=2026-01-01&before=2030-01-01'                                             # 401
//! ```

use std::collections::HashMap;
use std::sync::Arc;

use audit_layer::{AuditHandle, AuditLayer, AuditPolicy, Identity};
use audit_store::AuditLog;
use audit_store::query::{Access, Authorization, Authorizer};
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;

/// API tokens and the account each may read. An app would look them up in its database: the
/// decision is async.
struct TokenAuthorizer {
    accounts_by_token: Arc<HashMap<String, String>>,
}

impl TokenAuthorizer {
    async fn account_of(&self, token: &str) -> Option<String> {
        self.accounts_by_token.get(token).cloned()
    }
}

impl Authorizer for TokenAuthorizer {
    fn authorize<'a>(&'a self, request: &'a Parts, account_id: &'a str) -> Authorization<'a> {
        Box::pin(async move {
            let token = request
                .headers
                .get(AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.strip_prefix("Bearer "));
            let Some(account) = (match token {
                Some(token) => self.account_of(token).await,
                None => None,
            }) else {
                return Access::Unauthenticated;
            };
            // Reads of the log are audited too: say who read it.
            if let Some(audit) = request.extensions.get::<AuditHandle>() {
                audit.identify(Identity::user(format!("reader-of-{account}")).account(&account));
            }
            if account == account_id {
                Access::Allowed
            } else {
                Access::Denied
            }
        })
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let tokens = HashMap::from([
        ("token-of-acc-1".to_owned(), "acc_1".to_owned()),
        ("token-of-acc-2".to_owned(), "acc_2".to_owned()),
    ]);
    let authorizer = TokenAuthorizer {
        accounts_by_token: Arc::new(tokens),
    };
    let audit = AuditLog::sqlite("audit-authorizer-example.db")
        .authorizer(authorizer)
        .start()
        .await?;
    // Reads of the log are audited too.
    let app = audit
        .router()
        .layer(audit.layer(AuditLayer::new(AuditPolicy::default())));

    let listener = tokio::net::TcpListener::bind("127.0.0.1:3000").await?;
    println!("listening on http://{}", listener.local_addr()?);
    axum::serve(listener, app)
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await?;
    audit.shutdown().await;
    Ok(())
}
