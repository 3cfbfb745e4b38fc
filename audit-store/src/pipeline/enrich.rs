//! Enrichment: account and zone names from the application's directory, behind a bounded,
//! expiring read-through cache, off the request path.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use std::panic::AssertUnwindSafe;

use audit_layer::record::AuditRecord;
use futures_util::FutureExt;

use audit_layer::BoxError;

/// A lookup's future.
pub type Lookup<'a> = Pin<Box<dyn Future<Output = Result<Option<String>, BoxError>> + Send + 'a>>;

/// Where the application keeps the display names of its accounts and zones.
///
/// Called by the ingest pipeline, never on the request path, and only on a cache miss. A
/// failing lookup is not fatal: the record is stored without the name.
///
/// ```
/// use audit_store::pipeline::{Directory, Lookup};
///
/// struct Names;
///
/// impl Directory for Names {
///     fn account_name<'a>(&'a self, account_id: &'a str) -> Lookup<'a> {
///         Box::pin(async move { Ok((account_id == "acc_demo").then(|| "Example account".to_owned())) })
///     }
///     fn zone_name<'a>(&'a self, _zone_id: &'a str) -> Lookup<'a> {
///         Box::pin(async { Ok(None) })
///     }
/// }
/// ```
pub trait Directory: Send + Sync + 'static {
    /// The display name of an account; `None` if it has none (or does not exist).
    fn account_name<'a>(&'a self, account_id: &'a str) -> Lookup<'a>;
    /// The display name (domain) of a zone; `None` if it has none.
    fn zone_name<'a>(&'a self, zone_id: &'a str) -> Lookup<'a>;
}

/// Fills in `account.name` and `zone.name`.
#[derive(Clone)]
pub(crate) struct Enricher {
    directory: Arc<dyn Directory>,
    accounts: moka::future::Cache<String, Option<String>>,
    zones: moka::future::Cache<String, Option<String>>,
    timeout: Duration,
}

impl Enricher {
    pub(crate) fn new(
        directory: Arc<dyn Directory>,
        capacity: u64,
        ttl: Duration,
        timeout: Duration,
    ) -> Self {
        let cache = || {
            moka::future::Cache::builder()
                .max_capacity(capacity)
                .time_to_live(ttl)
                .build()
        };
        Self {
            directory,
            accounts: cache(),
            zones: cache(),
            timeout,
        }
    }

    pub(crate) async fn enrich(&self, record: &mut AuditRecord) {
        if let Some(account) = record.account.as_mut().filter(|a| a.name.is_none()) {
            account.name = self.name(&self.accounts, &account.id, true).await;
        }
        if let Some(zone) = record.zone.as_mut().filter(|z| z.name.is_none()) {
            zone.name = self.name(&self.zones, &zone.id, false).await;
        }
    }

    async fn name(
        &self,
        cache: &moka::future::Cache<String, Option<String>>,
        id: &str,
        account: bool,
    ) -> Option<String> {
        let directory = &self.directory;
        // Concurrent misses for the same id share one lookup.
        let lookup = async {
            let lookup = async {
                if account {
                    directory.account_name(id).await
                } else {
                    directory.zone_name(id).await
                }
            };
            // A directory that hangs or panics is a failed lookup, not a stalled pipeline.
            match tokio::time::timeout(self.timeout, AssertUnwindSafe(lookup).catch_unwind()).await
            {
                Ok(Ok(result)) => result,
                Ok(Err(_)) => Err(BoxError::from("the directory panicked")),
                Err(_) => Err(BoxError::from("the directory lookup timed out")),
            }
        };
        match cache.try_get_with(id.to_owned(), lookup).await {
            // A name is the app's data, which a tenant may have chosen: escaped and capped as
            // the layer does every string it records.
            Ok(name) => name.map(|n| {
                audit_layer::escape::visible_within(n.as_bytes(), audit_layer::DEFAULT_STRING_LIMIT)
                    .into_owned()
            }),
            Err(e) => {
                // Errors are not cached: the next record asks again.
                let what = if account { "account" } else { "zone" };
                tracing::warn!(target: "audit_store", "directory lookup failed for {what} {id:?}: {e}");
                None
            }
        }
    }
}
