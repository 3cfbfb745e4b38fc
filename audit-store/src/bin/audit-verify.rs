//! `audit-verify`: verifies the hash chains of an audit-store database from the command line,
//! with only the public key (or also the chain secret, to check every record's seal).
//!
//! ```text
//! audit-verify --database-url sqlite://audit.db --public-key 3b6a27bc...
//! audit-verify --database-url postgres://auditor@db/app --public-key @audit-public.key \
//!     --account acc-1 --since 2026-11-01 --checkpoints checkpoints.jsonl
//! ```
//!
//! Without `--account`, `--since` or `--before` it verifies the whole database in one pass
//! over its records (`verify::verify_all`): every chain, including one named only by a
//! checkpoint. With them, each account's records are read through the account index
//! (`verify::verify`).
//!
//! Prints one line per account, `ok` with counts or the first broken sequence number and the
//! kind of break (`--json`: one report per line). Exits 0 when every chain verifies, 1 when
//! one is broken, 2 when it cannot run (bad arguments, unreachable database).

use std::path::PathBuf;
use std::process::ExitCode;

use audit_store::chain::{ChainKeys, ChainSecret, JsonLinesCheckpoints, PublicKey, Verifier};
use audit_store::model::Checkpoint;
use audit_store::store::ChainedStore;
use audit_store::verify::{self, Span, VerifyReport};
use audit_store::{PostgresStore, SqliteStore};
use clap::Parser;

/// Verifies the tamper-evident hash chains of an audit log database.
#[derive(Debug, Parser)]
#[command(name = "audit-verify", version)]
struct Args {
    /// The database: `sqlite://path/to/audit.db` or `postgres://user@host/db`.
    #[arg(long, env = "AUDIT_VERIFY_DATABASE_URL")]
    database_url: String,
    /// The Ed25519 public key (64 hex digits), or `@file` holding it. Repeat to also trust
    /// keys used before a rotation.
    #[arg(long = "public-key", required = true)]
    public_keys: Vec<String>,
    /// A file holding the chain secret (64 hex digits): also checks every record's seal,
    /// which locates edits exactly and covers records newer than the last checkpoint.
    #[arg(long)]
    secret_file: Option<PathBuf>,
    /// The accounts to verify (repeatable). Default: every chain in the database, in one pass.
    #[arg(long = "account")]
    accounts: Vec<String>,
    /// Verify records at or after this time (YYYY-MM-DD or RFC 3339).
    #[arg(long)]
    since: Option<String>,
    /// Verify records before this time.
    #[arg(long)]
    before: Option<String>,
    /// Checkpoints kept outside the database (JSON lines, as `JsonLinesCheckpoints` writes).
    #[arg(long)]
    checkpoints: Option<PathBuf>,
    /// One JSON report per line instead of text.
    #[arg(long)]
    json: bool,
}

fn read_key_arg(value: &str) -> Result<String, String> {
    match value.strip_prefix('@') {
        Some(path) => std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read the public key file {path}: {e}")),
        None => Ok(value.to_owned()),
    }
}

fn verifier(args: &Args) -> Result<Verifier, String> {
    let mut keys = Vec::new();
    for value in &args.public_keys {
        let text = read_key_arg(value)?;
        keys.push(PublicKey::from_hex(&text).map_err(|e| format!("--public-key: {e}"))?);
    }
    let mut verifier = match &args.secret_file {
        Some(path) => {
            let text = std::fs::read_to_string(path).map_err(|e| {
                format!("cannot read the chain secret file {}: {e}", path.display())
            })?;
            let secret = ChainSecret::from_hex(&text)
                .map_err(|e| format!("--secret-file {}: {e}", path.display()))?;
            let own = ChainKeys::from_secret(&secret);
            if !keys.contains(&own.public_key()) {
                return Err(format!(
                    "--secret-file {} does not belong to any --public-key given",
                    path.display()
                ));
            }
            own.verifier()
        }
        None => Verifier::public(keys[0]),
    };
    for key in keys {
        verifier = verifier.also_trust(key);
    }
    Ok(verifier)
}

fn span(args: &Args) -> Result<Span, String> {
    let parse = |name: &str, value: &Option<String>| -> Result<Option<i64>, String> {
        value
            .as_deref()
            .map(|v| {
                audit_store::time::parse_time(v).ok_or_else(|| {
                    format!("--{name}: expected YYYY-MM-DD or an RFC 3339 time, got {v:?}")
                })
            })
            .transpose()
    };
    Ok(Span {
        since_ms: parse("since", &args.since)?,
        before_ms: parse("before", &args.before)?,
    })
}

async fn run<S: ChainedStore>(
    store: S,
    args: &Args,
    verifier: &Verifier,
    span: Span,
    external: &[Checkpoint],
) -> Result<bool, String> {
    let mut all_ok = true;
    let mut any = false;
    let mut print = |report: &VerifyReport| {
        any = true;
        all_ok &= report.ok;
        if args.json {
            println!("{}", serde_json::to_string(report).unwrap_or_default());
        } else {
            println!("{}", describe(report));
        }
    };
    if args.accounts.is_empty() && span == Span::all() {
        // The whole store: one pass over every record.
        let reports = verify::verify_all(&store, verifier, external)
            .await
            .map_err(|e| format!("cannot verify the store: {e}"))?;
        reports.iter().for_each(&mut print);
    } else {
        let accounts = if args.accounts.is_empty() {
            store
                .chain_heads()
                .await
                .map_err(|e| format!("cannot list the chains: {e}"))?
                .into_iter()
                .map(|h| h.chain)
                .collect()
        } else {
            args.accounts.clone()
        };
        for account in &accounts {
            let report = verify::verify(&store, verifier, account, span, external)
                .await
                .map_err(|e| format!("cannot verify {account:?}: {e}"))?;
            print(&report);
        }
    }
    if !any && !args.json {
        println!("no chains in this database");
    }
    Ok(all_ok)
}

fn describe(r: &VerifyReport) -> String {
    let name = if r.account_id.is_empty() {
        "(records without an account)".to_owned()
    } else {
        format!("{:?}", r.account_id)
    };
    match &r.broken {
        Some(b) => format!("BROKEN {name}: {b}"),
        None => {
            let range = match (r.first_seq, r.last_seq) {
                (Some(a), Some(b)) => format!(" (sequence {a} to {b})"),
                _ => String::new(),
            };
            let latest = match r.latest_checkpoint {
                Some((seq, _)) => format!(", newest checkpoint at {seq}"),
                None => ", no checkpoint yet".to_owned(),
            };
            format!(
                "ok {name}: {} records{range}, {} checkpoints matched{latest}, seals {}",
                r.records,
                r.checkpoints,
                if r.seals_checked {
                    "checked"
                } else {
                    "not checked (no secret)"
                }
            )
        }
    }
}

async fn main_inner(args: Args) -> Result<bool, String> {
    let verifier = verifier(&args)?;
    let span = span(&args)?;
    let external = match &args.checkpoints {
        Some(path) => JsonLinesCheckpoints::read(path).map_err(|e| e.to_string())?,
        None => Vec::new(),
    };
    let url = args.database_url.as_str();
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        let store = PostgresStore::connect(url)
            .await
            .map_err(|e| format!("cannot connect to the PostgreSQL database: {e}"))?;
        run(store, &args, &verifier, span, &external).await
    } else if url.starts_with("sqlite:") {
        let store = SqliteStore::connect_existing(url)
            .await
            .map_err(|e| format!("cannot open the SQLite database: {e}"))?;
        run(store, &args, &verifier, span, &external).await
    } else {
        Err("--database-url: expected sqlite://... or postgres://...".into())
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("audit-verify: cannot start: {e}");
            return ExitCode::from(2);
        }
    };
    match runtime.block_on(main_inner(args)) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("audit-verify: {e}");
            ExitCode::from(2)
        }
    }
}
