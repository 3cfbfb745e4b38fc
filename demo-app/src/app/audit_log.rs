//! The audit log's side of the app: the query API over the audit store, guarded by the
//! demo's own credentials ([`audit_log_authorizer`], [`configure_audit_log_router`]), and the
//! account and zone names the ingest pipeline adds to records ([`AppDirectory`]).

use audit_layer::{AuditHandle, ProductCategories};
use audit_store::chain::JsonLinesCheckpoints;
use audit_store::pipeline::{Directory, Lookup};
use audit_store::query::{Access, ApiDescription, AuditLogRouter, Authorization, Authorizer};
use audit_store::store::ChainedStore;
use axum::http::request::Parts;

use crate::auth::authenticate;
use crate::db::Db;
use crate::products::{accounts, zones};
use crate::state::AppState;

/// Who may read the audit log through the query API: an account's token (or a member's
/// session) reads only that account's log; no credentials is a 401, another account a 404.
pub(crate) fn audit_log_authorizer(state: &AppState) -> impl Authorizer {
    DemoAuthorizer(state.db.clone())
}

/// The audit log query API, `GET /accounts/{account_id}/logs/audit?since=&before=`, as the
/// app serves it: its `/verify` also reads the checkpoints the pipeline keeps outside the
/// database (`checkpoints`); its `product_category` filter takes the `categories` of the
/// app's document ([`product_categories`](super::product_categories)). The viewer is served
/// with it (`/accounts/{account_id}/logs/audit/viewer`): a logged-in dashboard user opens it
/// with the session cookie. The app's document describes it with
/// [`audit_log_description`].
pub(crate) fn configure_audit_log_router<S: ChainedStore>(
    router: AuditLogRouter<S>,
    checkpoints: JsonLinesCheckpoints,
    categories: ProductCategories,
) -> AuditLogRouter<S> {
    router
        .external_checkpoints(checkpoints)
        .with_viewer()
        .product_categories(categories)
}

/// The router of [`configure_audit_log_router`] over `store`, for the tests.
#[cfg(test)]
pub(crate) fn audit_log_router<S: ChainedStore>(
    store: S,
    state: &AppState,
    checkpoints: JsonLinesCheckpoints,
    categories: ProductCategories,
) -> AuditLogRouter<S> {
    let router = AuditLogRouter::new(store, audit_log_authorizer(state));
    configure_audit_log_router(router, checkpoints, categories)
}

/// What the app's document says of [`configure_audit_log_router`]'s router (its
/// `description()`, which a test compares): at the root, with the viewer, `product_category`
/// taking `categories`.
pub(super) fn audit_log_description(categories: ProductCategories) -> ApiDescription {
    ApiDescription::new()
        .product_categories(categories)
        .viewer(true)
}

/// Decides audit log access with the demo's tokens and sessions.
struct DemoAuthorizer(Db);

impl Authorizer for DemoAuthorizer {
    fn authorize<'a>(&'a self, request: &'a Parts, account_id: &'a str) -> Authorization<'a> {
        Box::pin(async move {
            let principal = match authenticate(&self.0, &request.headers).await {
                Ok(Some(principal)) => principal,
                Ok(None) | Err(_) => return Access::Unauthenticated,
            };
            // Reads of the log are audited like any request: say who read it.
            if let Some(audit) = request.extensions.get::<AuditHandle>() {
                audit.identify(principal.identity());
            }
            if principal.can_access(account_id) {
                Access::Allowed
            } else {
                Access::Denied
            }
        })
    }
}

/// Account and zone names for the audit pipeline, read from the app's own tables.
#[derive(Clone, Debug)]
pub(crate) struct AppDirectory(pub(crate) Db);

impl Directory for AppDirectory {
    fn account_name<'a>(&'a self, account_id: &'a str) -> Lookup<'a> {
        Box::pin(async move { Ok(accounts::account_name(&self.0, account_id).await?) })
    }

    fn zone_name<'a>(&'a self, zone_id: &'a str) -> Lookup<'a> {
        Box::pin(async move { Ok(zones::zone_name(&self.0, zone_id).await?) })
    }
}
