//! Push export and alerting, configured from the environment (secrets and the URLs that may
//! carry tokens are read from there only):
//!
//! - `DEMO_EXPORT_URL`: an HTTP receiver; one export job of every account's records,
//!   batched, gzipped, signed with `DEMO_EXPORT_SECRET` when set, in `DEMO_EXPORT_FORMAT`
//!   (`ndjson`, the default; `logpush`; `ocsf`).
//! - `DEMO_ALERT_URL`: a webhook notified when 5 failed logins from one address hit an
//!   account within 5 minutes, signed with `DEMO_ALERT_SECRET` when set. The notification is
//!   recorded in the account's log as a system event.
//!
//! Both jobs read committed records and keep their place in the audit database, and their
//! counters are in the pipeline's metrics.

use std::sync::Arc;
use std::time::Duration;

use audit_store::alert::{AlertRule, Alerts};
use audit_store::export::{ExportJob, Format, HttpDestination, Secret};
use audit_store::model::Column;
use audit_store::pipeline::IngestSink;
use audit_store::store::ExportPositions;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// A setting that is wrong; the message names it (the app exits with 2).
#[derive(Debug)]
pub(crate) struct BadSetting(pub(crate) String);

/// How old a record must be before the jobs read it: the pipeline commits within this.
const SETTLE: Duration = Duration::from_secs(2);

/// The export and alert settings.
#[derive(Debug, Default)]
pub(crate) struct PushConfig {
    export: Option<(HttpDestination, Format)>,
    alert: Option<HttpDestination>,
}

/// The value of `name`, if set and not empty.
fn env(name: &str) -> Result<Option<String>, BadSetting> {
    match std::env::var(name) {
        Ok(value) if value.is_empty() => Ok(None),
        Ok(value) => Ok(Some(value)),
        Err(std::env::VarError::NotPresent) => Ok(None),
        Err(std::env::VarError::NotUnicode(_)) => Err(BadSetting(format!(
            "invalid value for {name}: not valid UTF-8"
        ))),
    }
}

/// A receiver at the URL in `url_var`, signed with the secret in `secret_var` if set.
fn destination(url_var: &str, secret_var: &str) -> Result<Option<HttpDestination>, BadSetting> {
    let Some(url) = env(url_var)? else {
        if env(secret_var)?.is_some() {
            return Err(BadSetting(format!(
                "{secret_var} is set but {url_var} is not: set both, or neither"
            )));
        }
        return Ok(None);
    };
    let mut destination = HttpDestination::new(&url)
        .map_err(|e| BadSetting(format!("invalid value for {url_var}: {e}")))?;
    if let Some(secret) = env(secret_var)? {
        destination = destination.secret(Secret::new(secret));
    }
    Ok(Some(destination))
}

impl PushConfig {
    /// Reads and checks the settings.
    pub(crate) fn from_env() -> Result<Self, BadSetting> {
        let format = match env("DEMO_EXPORT_FORMAT")? {
            None => Format::Ndjson,
            Some(name) => name
                .parse()
                .map_err(|e| BadSetting(format!("invalid value for DEMO_EXPORT_FORMAT: {e}")))?,
        };
        Ok(Self {
            export: destination("DEMO_EXPORT_URL", "DEMO_EXPORT_SECRET")?
                .map(|destination| (destination, format)),
            alert: destination("DEMO_ALERT_URL", "DEMO_ALERT_SECRET")?,
        })
    }
}

/// The running jobs.
#[derive(Debug, Default)]
pub(crate) struct PushJobs(Vec<(oneshot::Sender<()>, JoinHandle<()>)>);

/// The failed-login rule of the demo: 5 per source address per 5 minutes, in one account.
fn failed_logins() -> Result<AlertRule, BadSetting> {
    Ok(AlertRule::new("failed-logins", 5, Duration::from_secs(300))
        .map_err(|e| BadSetting(e.to_string()))?
        .only(Column::ActionType, ["login"])
        .only(Column::ActionResult, ["failure"])
        .group_by(Column::ActorIpAddress))
}

impl PushJobs {
    /// Starts the configured jobs over `store`, reporting their counters to `sink`'s metrics
    /// and recording alert notifications through it.
    pub(crate) fn start<S: ExportPositions>(
        config: PushConfig,
        store: &S,
        sink: &IngestSink,
    ) -> Result<Self, BadSetting> {
        let mut jobs = Self::default();
        let config_error = |e: audit_store::export::ExportConfigError| BadSetting(e.to_string());
        if let Some((destination, format)) = config.export {
            let job = ExportJob::new("demo-export", store.clone(), destination)
                .map_err(config_error)?
                .format(format)
                .settle(SETTLE);
            sink.report_export(&job.status());
            tracing::info!(target: "demo_app", "exporting every account's audit log as {format} to DEMO_EXPORT_URL");
            jobs.spawn(|stopped| job.run(stopped));
        }
        if let Some(webhook) = config.alert {
            let alerts = Alerts::new(vec![failed_logins()?], webhook, Arc::new(sink.clone()));
            let job = ExportJob::new("demo-alerts", store.clone(), alerts)
                .map_err(config_error)?
                .settle(SETTLE);
            sink.report_export(&job.status());
            tracing::info!(target: "demo_app", "alerting DEMO_ALERT_URL on 5 failed logins per address in 5 minutes");
            jobs.spawn(|stopped| job.run(stopped));
        }
        Ok(jobs)
    }

    fn spawn<F>(
        &mut self,
        run: impl FnOnce(std::pin::Pin<Box<dyn Future<Output = ()> + Send>>) -> F,
    ) where
        F: Future<Output = ()> + Send + 'static,
    {
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(run(Box::pin(async move {
            let _ = stopped.await;
        })));
        self.0.push((stop, task));
    }

    /// Stops every job (a delivery in flight gets its stop grace; one not answered in it is sent
    /// again at the next start).
    pub(crate) async fn stop(self) {
        for (stop, task) in self.0 {
            let _ = stop.send(());
            let _ = task.await;
        }
    }
}
