//! The app's settings: the command line and environment ([`Args`], parsed by clap), checked
//! into a [`Config`] before anything starts, and [`StartError`], why the app did not start
//! (with its exit code).
//!
//! Every setting error names the setting and what it expects; none echoes a secret (a
//! database URL's password is shown as `***`).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use audit_store::chain::ChainSecret;
use clap::Parser;

use crate::db::SeedConfig;

/// The seeded users' password when `DEMO_PASSWORD` is not set.
pub(crate) const DEFAULT_PASSWORD: &str = "demo-password";

/// The audit spool's disk budget: 256 MiB.
const SPOOL_BUDGET_BYTES: u64 = 256 * 1024 * 1024;

/// The audit layer's read timeout for bodies read ahead of the app's auth: 10 s.
const BODY_READ_TIMEOUT_MS: u64 = 10_000;

/// The audit layer's window for coalescing failed authentications: 60 s.
const FAILED_AUTH_WINDOW_MS: u64 = 60_000;

/// How often expired API tokens are swept: every 60 s.
const SWEEP_INTERVAL_MS: u64 = 60_000;

/// Consecutive failed deliveries that disable an alerting policy: 3.
const MAX_FAILED_DELIVERIES: u32 = 3;

/// Command line and environment settings.
#[derive(Debug, Parser)]
#[command(
    name = "demo-app",
    version,
    about = "A multi-product API audited end to end by audit-layer and audit-store.",
    after_help = "Secrets are read from the environment only:\n  \
        DEMO_ADMIN_TOKEN  the value of acc_demo's seeded API token (random at each start when unset)\n  \
        DEMO_OTHER_TOKEN  the value of acc_other's seeded API token (random at each start when unset)\n  \
        DEMO_PASSWORD     the seeded users' password (default: demo-password)\n  \
        DEMO_CHAIN_SECRET the audit chain's secret, 64 hex digits (default: DATA_DIR/chain.secret, created at first start)\n\n\
        Push export and alerting (environment only):\n  \
        DEMO_EXPORT_URL    an HTTP receiver of every account's records (batched, gzipped)\n  \
        DEMO_EXPORT_FORMAT ndjson (default), logpush or ocsf\n  \
        DEMO_EXPORT_SECRET the key of the X-Audit-Signature HMAC of each batch\n  \
        DEMO_ALERT_URL     a webhook told of 5 failed logins per address in 5 minutes\n  \
        DEMO_ALERT_SECRET  the key of the X-Audit-Signature HMAC of each notification"
)]
pub(crate) struct Args {
    /// The address to listen on.
    #[arg(long, env = "DEMO_LISTEN", default_value = "127.0.0.1:8080")]
    listen: String,
    /// The database: `sqlite://FILE` or `postgres://USER@HOST/DB`. A PostgreSQL URL holds the
    /// app's tables and the audit log. Default: SQLite files in the data directory.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    database_url: Option<String>,
    /// Where the default SQLite files and the audit spool live.
    #[arg(long, env = "DEMO_DATA_DIR", default_value = "demo-data")]
    data_dir: PathBuf,
    /// Strict audit mode: a response is released only once its record is committed, and
    /// requests are refused with 503 while the audit database is unavailable.
    #[arg(long, env = "DEMO_STRICT")]
    strict: bool,
    /// The audit spool's disk budget in bytes (records beyond it are dropped, counted, and
    /// reported by a gap record). Default: 256 MiB.
    #[arg(long, env = "DEMO_SPOOL_BUDGET", default_value_t = SPOOL_BUDGET_BYTES)]
    spool_budget: u64,
    /// How long a request body the audit layer reads ahead of the app's authentication may
    /// take to arrive whole, in milliseconds; a body still incomplete then is answered 408.
    #[arg(long, env = "DEMO_BODY_READ_TIMEOUT_MS", default_value_t = BODY_READ_TIMEOUT_MS,
        value_parser = clap::value_parser!(u64).range(1..))]
    body_read_timeout_ms: u64,
    /// The bytes that request bodies read ahead of the app's authentication may hold at once,
    /// all requests together; a body beyond it is answered 503. Default: 32 MiB.
    #[arg(long, env = "DEMO_BODY_BUDGET", default_value_t = audit_layer::DEFAULT_BODY_BUDGET)]
    body_budget: usize,
    /// Records of failed authentication (401/403, no actor known) kept one by one per source,
    /// account and window; beyond it they are counted into one summary record per window.
    #[arg(long, env = "DEMO_FAILED_AUTH_RATE", default_value_t = audit_layer::DEFAULT_FAILED_AUTH_RATE)]
    failed_auth_rate: u32,
    /// The window of --failed-auth-rate, in milliseconds.
    #[arg(long, env = "DEMO_FAILED_AUTH_WINDOW_MS", default_value_t = FAILED_AUTH_WINDOW_MS,
        value_parser = clap::value_parser!(u64).range(1..))]
    failed_auth_window_ms: u64,
    /// How often the background sweep revokes expired API tokens, in milliseconds.
    #[arg(long, env = "DEMO_SWEEP_INTERVAL_MS", default_value_t = SWEEP_INTERVAL_MS,
        value_parser = clap::value_parser!(u64).range(1..))]
    sweep_interval_ms: u64,
    /// How many consecutive failed deliveries to its webhooks disable an alerting policy.
    #[arg(long, env = "DEMO_MAX_FAILED_DELIVERIES", default_value_t = MAX_FAILED_DELIVERIES,
        value_parser = clap::value_parser!(u32).range(1..))]
    max_failed_deliveries: u32,
    /// Fleet mode: publish audit records to a NATS JetStream stream on these servers
    /// (comma-separated seed URLs) instead of writing the audit database; `audit-ingest`
    /// processes write them into it, and the query API reads it as before. The stream
    /// `AUDIT` is created when missing.
    #[arg(long, env = "AUDIT_NATS_URL", hide_env_values = true)]
    nats_url: Option<String>,
    /// Replicas of the audit stream when the app creates it (3 in a three-node cluster).
    #[arg(long, env = "AUDIT_NATS_REPLICAS", default_value_t = 1)]
    nats_replicas: usize,
    /// Print the OpenAPI document and exit.
    #[arg(long)]
    pub(crate) print_openapi: bool,
}

/// Which database, checked.
#[derive(Debug)]
pub(crate) enum Database {
    /// SQLite: the app's tables in `app` (a `sqlite:` URL) or the data directory's `app.db`;
    /// the audit log in the data directory's `audit.db`.
    Sqlite { app: Option<String> },
    /// One PostgreSQL database for both.
    Postgres(String),
}

/// The settings, checked.
#[derive(Debug)]
pub(crate) struct Config {
    /// Where to listen.
    pub(crate) listen: SocketAddr,
    /// Where the app's tables and the audit log live.
    pub(crate) database: Database,
    /// Where the default SQLite files, the spool and the chain's files live.
    pub(crate) data_dir: PathBuf,
    /// The seeded tokens and password.
    pub(crate) seed: SeedConfig,
    /// The audit chain's secret from `DEMO_CHAIN_SECRET`, if set.
    pub(crate) chain_secret: Option<ChainSecret>,
    /// Whether the seeded users' password came from `DEMO_PASSWORD` (then it is never printed).
    pub(crate) password_from_env: bool,
    /// Strict audit mode.
    pub(crate) strict: bool,
    /// The audit spool's disk budget in bytes.
    pub(crate) spool_budget: u64,
    /// The audit layer's bounds on what anyone can make it hold.
    pub(crate) bounds: AuditBounds,
    /// The background jobs' settings.
    pub(crate) jobs: crate::jobs::JobSettings,
    /// Push export and alerting.
    pub(crate) push: crate::push::PushConfig,
    /// Fleet mode: the NATS stream records are published to (`AUDIT_NATS_URL`).
    pub(crate) fleet: Option<audit_store::fleet::FleetConfig>,
}

/// The audit layer's bounds on what anonymous clients can make it hold and write (see the
/// `audit_layer` crate's "Bounds").
#[derive(Debug)]
pub(crate) struct AuditBounds {
    /// The longest a body read ahead of the app's auth may take to arrive.
    pub(crate) body_read_timeout: Duration,
    /// The bytes such bodies may hold at once.
    pub(crate) body_budget: usize,
    /// Records of failed authentication kept one by one per source, account and window.
    pub(crate) failed_auth_rate: u32,
    /// That window.
    pub(crate) failed_auth_window: Duration,
}

/// Why the app did not start: bad configuration (exit code 2) or a failure at start-up (1).
#[derive(Debug)]
pub(crate) enum StartError {
    /// A setting is invalid; the message names it.
    Config(String),
    /// Something failed while starting or serving.
    Runtime(String),
}

impl StartError {
    /// A [`StartError::Runtime`]: `what` failed because of `e`.
    pub(crate) fn runtime(what: &str, e: &dyn std::fmt::Display) -> Self {
        Self::Runtime(format!("{what}: {e}"))
    }

    /// Prints the error and returns the process's exit code.
    pub(crate) fn exit(self) -> ExitCode {
        match self {
            Self::Config(message) => {
                eprintln!("demo-app: {message}");
                ExitCode::from(2)
            }
            Self::Runtime(message) => {
                eprintln!("demo-app: {message}");
                ExitCode::FAILURE
            }
        }
    }
}

impl Config {
    /// Checks `args` and the secrets in the environment.
    pub(crate) fn check(args: Args) -> Result<Self, StartError> {
        let listen = args.listen.parse().map_err(|_| {
            StartError::Config(format!(
                "invalid value for --listen/DEMO_LISTEN: expected an address like 127.0.0.1:8080, got {:?}",
                args.listen
            ))
        })?;
        let database = check_database(args.database_url)?;
        let (admin_token, other_token) = seed_tokens()?;
        let chain_secret = env_secret("DEMO_CHAIN_SECRET")?
            .map(|hex| {
                ChainSecret::from_hex(&hex).map_err(|e| {
                    StartError::Config(format!("invalid value for DEMO_CHAIN_SECRET: {e}"))
                })
            })
            .transpose()?;
        let password = seed_password()?;
        let push = crate::push::PushConfig::from_env().map_err(|e| StartError::Config(e.0))?;
        let fleet = args
            .nats_url
            .map(|urls| {
                let fleet = audit_store::fleet::FleetConfig::new(&urls)?
                    .replicas(args.nats_replicas)
                    .client_name("demo-app");
                fleet.validate().map(|()| fleet)
            })
            .transpose()
            .map_err(|e| {
                StartError::Config(format!(
                    "--nats-url/AUDIT_NATS_URL, --nats-replicas/AUDIT_NATS_REPLICAS: {e}"
                ))
            })?;
        Ok(Self {
            push,
            fleet,
            listen,
            database,
            data_dir: args.data_dir,
            chain_secret,
            password_from_env: password.is_some(),
            strict: args.strict,
            spool_budget: args.spool_budget,
            bounds: AuditBounds {
                body_read_timeout: Duration::from_millis(args.body_read_timeout_ms),
                body_budget: args.body_budget,
                failed_auth_rate: args.failed_auth_rate,
                failed_auth_window: Duration::from_millis(args.failed_auth_window_ms),
            },
            jobs: crate::jobs::JobSettings {
                sweep_interval: Duration::from_millis(args.sweep_interval_ms),
                max_failed_deliveries: args.max_failed_deliveries,
            },
            seed: SeedConfig {
                admin_token,
                other_token,
                password: password.unwrap_or_else(|| DEFAULT_PASSWORD.to_owned()),
            },
        })
    }
}

/// The database a `--database-url` names; none (or empty) is the default SQLite files.
fn check_database(url: Option<String>) -> Result<Database, StartError> {
    match url.filter(|u| !u.is_empty()) {
        None => Ok(Database::Sqlite { app: None }),
        Some(url) if url.starts_with("postgres://") || url.starts_with("postgresql://") => {
            Ok(Database::Postgres(url))
        }
        Some(url) if url.starts_with("sqlite:") => Ok(Database::Sqlite { app: Some(url) }),
        Some(url) => Err(StartError::Config(format!(
            "invalid value for --database-url/DATABASE_URL: expected sqlite://FILE or postgres://USER@HOST/DB, got {:?}",
            redact_url(&url)
        ))),
    }
}

/// `DEMO_ADMIN_TOKEN` and `DEMO_OTHER_TOKEN`, each checked, and different when both are set.
fn seed_tokens() -> Result<(Option<String>, Option<String>), StartError> {
    let admin_token = env_secret("DEMO_ADMIN_TOKEN")?;
    let other_token = env_secret("DEMO_OTHER_TOKEN")?;
    for (name, token) in [
        ("DEMO_ADMIN_TOKEN", &admin_token),
        ("DEMO_OTHER_TOKEN", &other_token),
    ] {
        if let Some(token) = token {
            check_token(name, token)?;
        }
    }
    if admin_token.is_some() && admin_token == other_token {
        return Err(StartError::Config(
            "invalid value for DEMO_OTHER_TOKEN: it must differ from DEMO_ADMIN_TOKEN".into(),
        ));
    }
    Ok((admin_token, other_token))
}

/// `DEMO_PASSWORD`, checked: 8 to 1024 characters.
fn seed_password() -> Result<Option<String>, StartError> {
    let password = env_secret("DEMO_PASSWORD")?;
    if let Some(password) = &password
        && (password.chars().count() < 8 || password.len() > 1024)
    {
        return Err(StartError::Config(
            "invalid value for DEMO_PASSWORD: expected 8 to 1024 characters".into(),
        ));
    }
    Ok(password)
}

/// Reads a secret from the environment; unset and empty are the same.
fn env_secret(name: &str) -> Result<Option<String>, StartError> {
    match std::env::var(name) {
        Ok(value) if value.is_empty() => Ok(None),
        Ok(value) => Ok(Some(value)),
        Err(std::env::VarError::NotPresent) => Ok(None),
        Err(std::env::VarError::NotUnicode(_)) => Err(StartError::Config(format!(
            "invalid value for {name}: not valid UTF-8"
        ))),
    }
}

/// A token value the app can store and a client can send: 16–256 characters of the bearer
/// token alphabet (RFC 6750).
fn check_token(name: &str, value: &str) -> Result<(), StartError> {
    let ok = (16..=256).contains(&value.len())
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._~+/=".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(StartError::Config(format!(
            "invalid value for {name}: expected 16 to 256 characters of A-Z a-z 0-9 - . _ ~ + / ="
        )))
    }
}

/// `url` with any password replaced by `***`, for messages.
pub(crate) fn redact_url(url: &str) -> String {
    match url.split_once("://") {
        Some((scheme, rest)) => match rest.split_once('@') {
            Some((user_info, host)) => {
                let user = user_info.split(':').next().unwrap_or("");
                if user_info.contains(':') {
                    format!("{scheme}://{user}:***@{host}")
                } else {
                    url.to_owned()
                }
            }
            None => url.to_owned(),
        },
        None => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(argv: &[&str]) -> Result<Config, StartError> {
        Config::check(Args::try_parse_from(argv).unwrap())
    }

    #[test]
    fn defaults_start_on_loopback_with_embedded_sqlite() {
        let config = check(&["demo-app"]).ok().unwrap();
        assert_eq!(config.listen, "127.0.0.1:8080".parse().unwrap());
        assert!(matches!(config.database, Database::Sqlite { app: None }));
        assert_eq!(config.data_dir, PathBuf::from("demo-data"));
    }

    #[test]
    fn bad_settings_are_named() {
        let Err(StartError::Config(message)) = check(&["demo-app", "--listen", "nowhere"]) else {
            panic!("expected a configuration error");
        };
        assert!(message.contains("--listen/DEMO_LISTEN"), "{message}");
        let Err(StartError::Config(message)) =
            check(&["demo-app", "--database-url", "mysql://root:hunter2@db/x"])
        else {
            panic!("expected a configuration error");
        };
        assert!(message.contains("DATABASE_URL"), "{message}");
        assert!(!message.contains("hunter2"), "{message}");
        assert!(check_token("DEMO_ADMIN_TOKEN", "short").is_err());
        assert!(check_token("DEMO_ADMIN_TOKEN", "demo_0123456789abcdef").is_ok());
    }

    #[test]
    fn the_audit_bounds_have_defaults_and_flags() {
        let config = check(&["demo-app"]).ok().unwrap();
        assert_eq!(config.bounds.body_read_timeout, Duration::from_secs(10));
        assert_eq!(config.bounds.body_budget, 32 * 1024 * 1024);
        assert_eq!(config.bounds.failed_auth_rate, 10);
        assert_eq!(config.bounds.failed_auth_window, Duration::from_secs(60));
        let args = [
            "demo-app",
            "--body-read-timeout-ms",
            "2500",
            "--body-budget",
            "1000",
            "--failed-auth-rate",
            "3",
            "--failed-auth-window-ms",
            "500",
        ];
        let config = check(&args).ok().unwrap();
        assert_eq!(config.bounds.body_read_timeout, Duration::from_millis(2500));
        assert_eq!(config.bounds.body_budget, 1000);
        assert_eq!(config.bounds.failed_auth_rate, 3);
        assert_eq!(config.bounds.failed_auth_window, Duration::from_millis(500));
        for flag in ["--body-read-timeout-ms", "--failed-auth-window-ms"] {
            let zero = Args::try_parse_from(["demo-app", flag, "0"]);
            let message = zero.err().unwrap().to_string();
            assert!(message.contains(flag), "{message}");
        }
    }

    #[test]
    fn a_postgres_url_switches_both_databases() {
        let config = check(&["demo-app", "--database-url", "postgres://u@localhost/demo"])
            .ok()
            .unwrap();
        assert!(matches!(config.database, Database::Postgres(_)));
    }

    #[test]
    fn a_nats_url_switches_to_publishing_and_a_bad_one_is_named_without_its_password() {
        let config = check(&[
            "demo-app",
            "--nats-url",
            "nats://app:hunter2@10.0.0.1:4222,nats://10.0.0.2:4222",
            "--nats-replicas",
            "3",
        ])
        .ok()
        .unwrap();
        let fleet = config.fleet.as_ref().unwrap();
        assert_eq!(
            fleet.redacted_servers(),
            "nats://app:***@10.0.0.1:4222,nats://10.0.0.2:4222"
        );
        assert!(!format!("{config:?}").contains("hunter2"));
        for bad in [
            vec!["demo-app", "--nats-url", "nats://app:hunter2@[::1"],
            vec![
                "demo-app",
                "--nats-url",
                "nats://10.0.0.1",
                "--nats-replicas",
                "0",
            ],
        ] {
            let Err(StartError::Config(message)) = check(&bad) else {
                panic!("expected a configuration error for {bad:?}");
            };
            assert!(message.contains("AUDIT_NATS_URL"), "{message}");
            assert!(!message.contains("hunter2"), "{message}");
        }
    }
}
