//! The demo application: a realistic multi-product API (accounts, members, API tokens, zones,
//! DNS records, alerting policies, dashboard login) audited end to end — every request becomes
//! an audit record, redacted by the app's own OpenAPI document, stored by `audit-store`.
//!
//! Run with: `cargo run -p demo-app`.
//!
//! With no configuration it listens on `127.0.0.1:8080`, keeps its data in SQLite files under
//! `./demo-data/` (`app.db` for the app's tables, `audit.db` for the audit log, `spool/` for
//! audit records waiting for their database), seeds two accounts, and prints their API tokens
//! and commands to try. `--help` lists the settings; each also reads an environment variable.
//!
//! The app's tables and the audit log are two SQLite files because SQLite has one writer per
//! file: the audit pipeline's batched writes then never queue behind the app's transactions
//! (nor the reverse), and the log can be kept, copied or pruned on its own schedule. With a
//! PostgreSQL `DATABASE_URL` both live in that one database, each with its own migrations
//! table.

mod api;
mod app;
mod auth;
mod db;
mod products;
mod secrets;
mod state;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use audit_store::chain::{ChainKeys, ChainSecret, JsonLinesCheckpoints};
use audit_store::pipeline;
use audit_store::store::ChainedStore;
use audit_store::{PostgresStore, SqliteStore};
use clap::Parser;

use crate::app::AppDirectory;
use crate::db::{Db, SeedConfig, SeededAccount, seed_ids};
use crate::state::AppState;

/// The seeded users' password when `DEMO_PASSWORD` is not set.
const DEFAULT_PASSWORD: &str = "demo-password";

/// The audit spool's disk budget: 256 MiB.
const SPOOL_BUDGET_BYTES: u64 = 256 * 1024 * 1024;

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
        DEMO_CHAIN_SECRET the audit chain's secret, 64 hex digits (default: DATA_DIR/chain.secret, created at first start)"
)]
struct Args {
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
    /// Print the OpenAPI document and exit.
    #[arg(long)]
    print_openapi: bool,
}

/// Which database, checked.
#[derive(Debug)]
enum Database {
    /// SQLite: the app's tables in `app` (a `sqlite:` URL) or the data directory's `app.db`;
    /// the audit log in the data directory's `audit.db`.
    Sqlite { app: Option<String> },
    /// One PostgreSQL database for both.
    Postgres(String),
}

/// The settings, checked.
#[derive(Debug)]
struct Config {
    listen: SocketAddr,
    database: Database,
    data_dir: PathBuf,
    seed: SeedConfig,
    chain_secret: Option<ChainSecret>,
    password_from_env: bool,
    strict: bool,
    spool_budget: u64,
}

/// Why the app did not start: bad configuration (exit code 2) or a failure at start-up (1).
#[derive(Debug)]
enum StartError {
    Config(String),
    Runtime(String),
}

fn main() -> ExitCode {
    let args = match Args::try_parse() {
        Ok(args) => args,
        Err(e) => {
            use clap::error::ErrorKind;
            if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) {
                let _ = e.print();
                return ExitCode::SUCCESS;
            }
            let text = e.render().to_string();
            eprintln!(
                "{}",
                text.lines().next().unwrap_or("error: invalid arguments")
            );
            return ExitCode::from(2);
        }
    };
    if args.print_openapi {
        print!("{}", app::openapi_json_text());
        return ExitCode::SUCCESS;
    }
    let config = match Config::check(args) {
        Ok(config) => config,
        Err(e) => return e.exit(),
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,sqlx=warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            return StartError::Runtime(format!("cannot start the async runtime: {e}")).exit();
        }
    };
    match runtime.block_on(start(config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => e.exit(),
    }
}

impl StartError {
    fn exit(self) -> ExitCode {
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
fn redact_url(url: &str) -> String {
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

impl Config {
    fn check(args: Args) -> Result<Self, StartError> {
        let listen = args.listen.parse().map_err(|_| {
            StartError::Config(format!(
                "invalid value for --listen/DEMO_LISTEN: expected an address like 127.0.0.1:8080, got {:?}",
                args.listen
            ))
        })?;
        let database = match args.database_url.filter(|u| !u.is_empty()) {
            None => Database::Sqlite { app: None },
            Some(url) if url.starts_with("postgres://") || url.starts_with("postgresql://") => {
                Database::Postgres(url)
            }
            Some(url) if url.starts_with("sqlite:") => Database::Sqlite { app: Some(url) },
            Some(url) => {
                return Err(StartError::Config(format!(
                    "invalid value for --database-url/DATABASE_URL: expected sqlite://FILE or postgres://USER@HOST/DB, got {:?}",
                    redact_url(&url)
                )));
            }
        };
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
        let chain_secret = env_secret("DEMO_CHAIN_SECRET")?
            .map(|hex| {
                ChainSecret::from_hex(&hex).map_err(|e| {
                    StartError::Config(format!("invalid value for DEMO_CHAIN_SECRET: {e}"))
                })
            })
            .transpose()?;
        let password = env_secret("DEMO_PASSWORD")?;
        if let Some(password) = &password
            && (password.chars().count() < 8 || password.len() > 1024)
        {
            return Err(StartError::Config(
                "invalid value for DEMO_PASSWORD: expected 8 to 1024 characters".into(),
            ));
        }
        Ok(Self {
            listen,
            database,
            data_dir: args.data_dir,
            chain_secret,
            password_from_env: password.is_some(),
            strict: args.strict,
            spool_budget: args.spool_budget,
            seed: SeedConfig {
                admin_token,
                other_token,
                password: password.unwrap_or_else(|| DEFAULT_PASSWORD.to_owned()),
            },
        })
    }
}

/// Opens the databases, seeds, and serves until SIGINT or SIGTERM.
async fn start(config: Config) -> Result<(), StartError> {
    let runtime =
        |what: &str, e: &dyn std::fmt::Display| StartError::Runtime(format!("{what}: {e}"));
    std::fs::create_dir_all(&config.data_dir).map_err(|e| {
        StartError::Config(format!(
            "invalid value for --data-dir/DEMO_DATA_DIR: cannot create {}: {e}",
            config.data_dir.display()
        ))
    })?;
    let (db, described) = match &config.database {
        Database::Sqlite { app: None } => {
            let path = config.data_dir.join("app.db");
            let db = Db::open_sqlite(&path).await.map_err(|e| {
                runtime(
                    &format!("cannot open the app database {}", path.display()),
                    &e,
                )
            })?;
            (db, format!("sqlite {}", path.display()))
        }
        Database::Sqlite { app: Some(url) } | Database::Postgres(url) => {
            let db = Db::connect(url).await.map_err(|e| {
                runtime(&format!("cannot open DATABASE_URL {}", redact_url(url)), &e)
            })?;
            (db, redact_url(url))
        }
    };
    db.migrate()
        .await
        .map_err(|e| runtime("cannot migrate the app database", &e))?;
    let seeded = db::seed(&db, &config.seed)
        .await
        .map_err(|e| runtime("cannot seed the app database", &e))?;
    let state = AppState { db: db.clone() };
    let keys = chain_keys(&config)?;
    match &config.database {
        Database::Postgres(url) => {
            let store = PostgresStore::connect(url)
                .await
                .map_err(|e| runtime("cannot open the audit database (DATABASE_URL)", &e))?
                .chained(keys);
            let where_ = format!("{described} (tables audit_logs*)");
            serve(config, state, store, &described, &where_, &seeded).await
        }
        Database::Sqlite { .. } => {
            let path = config.data_dir.join("audit.db");
            let store = SqliteStore::open(&path)
                .await
                .map_err(|e| {
                    runtime(
                        &format!("cannot open the audit database {}", path.display()),
                        &e,
                    )
                })?
                .chained(keys);
            let where_ = format!("sqlite {}", path.display());
            serve(config, state, store, &described, &where_, &seeded).await
        }
    }
}

/// The audit chain's keys: from DEMO_CHAIN_SECRET, else from the data directory's
/// `chain.secret` (created, readable by the owner only, at first start). The public key is
/// written beside it as `audit-public.key`, for `audit-verify`.
fn chain_keys(config: &Config) -> Result<ChainKeys, StartError> {
    let secret = match &config.chain_secret {
        Some(secret) => secret.clone(),
        None => {
            let path = config.data_dir.join("chain.secret");
            match std::fs::read_to_string(&path) {
                Ok(text) => ChainSecret::from_hex(&text).map_err(|e| {
                    StartError::Config(format!("invalid chain secret in {}: {e}", path.display()))
                })?,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    let secret = ChainSecret::generate();
                    write_private(&path, &secret.to_hex()).map_err(|e| {
                        StartError::Runtime(format!("cannot write {}: {e}", path.display()))
                    })?;
                    secret
                }
                Err(e) => {
                    return Err(StartError::Runtime(format!(
                        "cannot read {}: {e}",
                        path.display()
                    )));
                }
            }
        }
    };
    let keys = ChainKeys::from_secret(&secret);
    let public = config.data_dir.join("audit-public.key");
    std::fs::write(&public, format!("{}\n", keys.public_key()))
        .map_err(|e| StartError::Runtime(format!("cannot write {}: {e}", public.display())))?;
    Ok(keys)
}

/// Creates `path` with `text`, readable and writable by the owner only.
fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write as _;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(path)?;
    file.write_all(text.as_bytes())?;
    file.sync_all()
}

/// Runs the audit pipeline into `store` and serves the app until a shutdown signal; then
/// finishes in-flight requests and flushes the pipeline.
async fn serve<S: ChainedStore>(
    config: Config,
    state: AppState,
    store: S,
    app_db: &str,
    audit_db: &str,
    seeded: &[SeededAccount],
) -> Result<(), StartError> {
    let runtime =
        |what: &str, e: &dyn std::fmt::Display| StartError::Runtime(format!("{what}: {e}"));
    store
        .migrate()
        .await
        .map_err(|e| runtime("cannot migrate the audit database", &e))?;
    let spool = config.data_dir.join("spool");
    let (sink, pipeline) = pipeline::builder(store.clone())
        .spool(&spool, config.spool_budget)
        .directory(AppDirectory(state.db.clone()))
        .checkpoint_sink(JsonLinesCheckpoints::new(
            config.data_dir.join("checkpoints.jsonl"),
        ))
        .build()
        .await
        .map_err(|e| runtime("cannot start the audit pipeline", &e))?;
    let worker = tokio::spawn(pipeline.run());
    let audit_log = app::audit_log_router(store, state.clone());
    let app = app::router(state, sink.clone(), audit_log, config.strict).map_err(|e| {
        runtime(
            "the OpenAPI document does not compile into an audit policy",
            &e,
        )
    })?;

    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|e| {
            runtime(
                &format!("cannot listen on {} (--listen/DEMO_LISTEN)", config.listen),
                &e,
            )
        })?;
    let local = listener
        .local_addr()
        .map_err(|e| runtime("cannot read the listening address", &e))?;
    print_banner(&config, local, app_db, audit_db, &spool, seeded);

    let served = axum::serve(
        listener,
        app.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(shutdown_signal())
    .await;
    tracing::info!(target: "demo_app", "stopped accepting; flushing the audit pipeline");
    sink.shutdown().await;
    let _ = worker.await;
    served.map_err(|e| runtime("the server failed", &e))
}

/// Resolves at the first SIGINT (Ctrl-C) or SIGTERM.
async fn shutdown_signal() {
    let interrupt = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = interrupt => {}
        () = terminate => {}
    }
}

/// Prints where the app listens, what was seeded, and commands to paste.
fn print_banner(
    config: &Config,
    local: SocketAddr,
    app_db: &str,
    audit_db: &str,
    spool: &Path,
    seeded: &[SeededAccount],
) {
    use audit_layer::record::Timestamp;

    let ip = if local.ip().is_unspecified() {
        IpAddr::V4(Ipv4Addr::LOCALHOST)
    } else {
        local.ip()
    };
    let base = format!("http://{}", SocketAddr::new(ip, local.port()));
    let (password_note, login_password) = if config.password_from_env {
        ("from DEMO_PASSWORD".to_owned(), "$DEMO_PASSWORD")
    } else {
        (
            format!("{DEFAULT_PASSWORD} (set DEMO_PASSWORD to change it)"),
            DEFAULT_PASSWORD,
        )
    };
    let now = Timestamp::now();
    let date = |t: Timestamp| t.to_string().chars().take(10).collect::<String>();
    let since = date(now);
    let before = date(Timestamp::from_unix_millis(
        now.unix_millis() + 24 * 60 * 60 * 1000,
    ));
    let account = seed_ids::DEMO_ACCOUNT;
    let policy = seed_ids::POLICY;
    let zone = seed_ids::EXAMPLE_ZONE;
    let token = seeded.first().map_or("", |a| a.token.as_str());
    let policy_body = format!(
        r#"{{"name":"Advanced Security Events Alert","enabled":false,"alert_type":"clickhouse_alert_fw_ent_anomaly","filters":{{"services":["securitylevel","ratelimit","firewallrules"],"zones":["{zone}"]}},"mechanisms":{{"webhooks":[{{"url":"https://hooks.example.com/services/T000/B000/XXXX"}}]}}}}"#
    );

    let mut lines = vec![
        String::new(),
        format!("demo-app {} listening on {base}", env!("CARGO_PKG_VERSION")),
        format!("  app database:   {app_db}"),
        format!("  audit database: {audit_db}, spool {}", spool.display()),
        format!(
            "  audit chain:    public key {} (checkpoints in {})",
            config.data_dir.join("audit-public.key").display(),
            config.data_dir.join("checkpoints.jsonl").display()
        ),
        format!("  OpenAPI:        {base}/openapi.json"),
        String::new(),
        format!("Seeded accounts (users' password: {password_note}):"),
    ];
    for a in seeded {
        let origin = if a.token_generated {
            format!("new at each start; set {} to fix it", a.token_env)
        } else {
            format!("from {}", a.token_env)
        };
        lines.push(format!(
            "  {:<10} {:<18} {:<18} API token {} ({origin})",
            a.id,
            format!("{:?}", a.name),
            a.email,
            a.token
        ));
    }
    lines.extend([
        String::new(),
        "Try:".to_owned(),
        format!("  export TOKEN={token}"),
        String::new(),
        "  # update the seeded notification policy (an audited write; the webhook URL is never recorded)".to_owned(),
        format!(r#"  curl -X PUT "{base}/accounts/{account}/alerting/v3/policies/{policy}" \"#),
        r#"    -H "Authorization: Bearer $TOKEN" -H "Content-Type: application/json" -A Postman \"#.to_owned(),
        format!("    --data-raw '{policy_body}'"),
        String::new(),
        "  # read the account's audit log".to_owned(),
        format!(r#"  curl -H "Authorization: Bearer $TOKEN" "{base}/accounts/{account}/logs/audit?since={since}&before={before}""#),
        "  # verify the account's tamper-evident chain".to_owned(),
        format!(r#"  curl -H "Authorization: Bearer $TOKEN" "{base}/accounts/{account}/logs/audit/verify""#),
        String::new(),
        r#"  # or log in as the dashboard does (a cookie session: actor.context "dash")"#.to_owned(),
        format!(
            r#"  curl -c cookies.txt -H "Content-Type: application/json" --data-raw '{{"email":"alice@example.com","password":"{login_password}"}}' {base}/login"#
        ),
        format!("  curl -b cookies.txt {base}/zones"),
        String::new(),
        "Stop with Ctrl-C: in-flight requests finish, then the audit pipeline is flushed.".to_owned(),
    ]);
    println!("{}", lines.join("\n"));
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
    fn a_postgres_url_switches_both_databases() {
        let config = check(&["demo-app", "--database-url", "postgres://u@localhost/demo"])
            .ok()
            .unwrap();
        assert!(matches!(config.database, Database::Postgres(_)));
    }
}
