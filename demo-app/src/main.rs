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
//!
//! The modules, in layers: each uses only those listed before it.
//!
//! - [`secrets`]: password hashing, token and session secrets, SHA-256.
//! - [`db`]: the app's database (SQLite or PostgreSQL), its migrations, ids and times of rows,
//!   and the demo seed.
//! - [`api`]: the HTTP shapes every product shares: the error answer, the JSON extractor,
//!   paging, name checks, fetch-or-404.
//! - [`state`]: what the handlers share.
//! - [`auth`]: who the caller is and what they may touch; telling the audit layer who acted.
//! - [`products`]: the operations, one module a product.
//! - [`jobs`]: background work the app does on its own (the token expiry sweep), audited as
//!   system events.
//! - [`app`]: the router, its OpenAPI document, the audit layer over it, and the audit log
//!   query API with its directory of names.
//! - [`config`], [`audit_chain`], [`banner`], [`push`], [`server`]: settings, the audit
//!   chain's keys, the start-up banner, push export and alerting, and serving until a
//!   shutdown signal.

mod api;
mod app;
mod audit_chain;
mod auth;
mod banner;
mod config;
mod db;
mod jobs;
mod products;
mod push;
mod secrets;
mod server;
mod state;

use std::process::ExitCode;

use clap::Parser;

use crate::config::{Args, Config, StartError};

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
    // Before the audit pipeline is built: it registers its metrics then.
    app::install_metrics();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            return StartError::Runtime(format!("cannot start the async runtime: {e}")).exit();
        }
    };
    match runtime.block_on(server::start(config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => e.exit(),
    }
}
