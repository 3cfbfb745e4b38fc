//! `audit-verify`: verifies the hash chains of an audit-store database from the command line,
//! with only the public key (or also the chain secret, to check every record's seal).
//!
//! ```text
//! audit-verify --database-url sqlite://data/audit.db --public-key 3b6a27bc...
//! audit-verify --database-url sqlite://data/audit.db --public-key @data/audit-public.key \
//!     --fingerprint 9f86d081884c7d65...
//! audit-verify --database-url postgres://auditor@db/app --public-key @/etc/audit/public.key \
//!     --account acc-1 --since 2026-11-01 --checkpoints /mnt/elsewhere/checkpoints.jsonl
//! ```
//!
//! The public key is what every signature is checked against, so the verifier pins it: given
//! on the command line, or read from a file outside the database's directory; a key file in
//! that directory (which whoever can write the database can write too, with a key of their
//! own and checkpoints re-signed with it) is refused unless `--fingerprint` pins it (the
//! SHA-256 of the key, 64 hex digits; `--fingerprint` also pins keys from anywhere else).
//!
//! Without `--account`, `--since` or `--before` it verifies the whole database in one pass
//! over its records (`verify::verify_all`): every chain, including one named only by a
//! checkpoint. With them, each account's records are read through the account index
//! (`verify::verify`).
//!
//! Accounts are found from the records, the chain heads, and the checkpoints stored and kept
//! outside: an account whose head row, or whose records and head, were deleted is still
//! reported.
//!
//! Prints one line per account: `ok` with counts, `UNVERIFIABLE` with what no checkpoint
//! covers, or `BROKEN` with the first broken sequence number and the kind of break
//! (`--json`: one report per line).
//!
//! Exit status: 0 when every chain verifies, 1 when one is broken, 3 when none is broken but
//! one is unverifiable (no checkpoint covers all it holds: its newest records could have been
//! deleted or rewritten unseen), 2 when it cannot run (bad arguments, a key not pinned, an
//! unreachable database).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use audit_store::chain::{ChainKeys, ChainSecret, JsonLinesCheckpoints, PublicKey, Verifier};
use audit_store::model::Checkpoint;
use audit_store::store::{ChainedStore, TableNames};
use audit_store::verify::{self, Outcome, Span, VerifyReport};
use audit_store::{PostgresStore, SqliteStore};
use clap::Parser;

/// Verifies the tamper-evident hash chains of an audit log database.
#[derive(Debug, Parser)]
#[command(name = "audit-verify", version)]
struct Args {
    /// The database: `sqlite://path/to/audit.db` or `postgres://user@host/db`.
    #[arg(long, env = "AUDIT_VERIFY_DATABASE_URL")]
    database_url: String,
    /// The Ed25519 public key (64 hex digits), or `@file` holding it: a file outside the
    /// database's directory, or one pinned by `--fingerprint`. Repeat to also trust keys used
    /// before a rotation.
    #[arg(long = "public-key", required = true)]
    public_keys: Vec<String>,
    /// The SHA-256 of a trusted public key (64 hex digits): pins keys read from files. Given,
    /// every key read from a file must match one.
    #[arg(long = "fingerprint")]
    fingerprints: Vec<String>,
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
    /// The prefix of the store's tables, when the app gave it one (`TableNames::prefix`).
    #[arg(long, default_value = audit_store::store::DEFAULT_PREFIX)]
    table_prefix: String,
    /// The PostgreSQL schema of the store's tables, when the app gave it one
    /// (`TableNames::schema`).
    #[arg(long)]
    schema: Option<String>,
}

/// The store's table names the arguments give.
fn table_names(args: &Args) -> Result<TableNames, String> {
    let names = TableNames::new()
        .prefix(&args.table_prefix)
        .map_err(|e| format!("--table-prefix: {e}"))?;
    match &args.schema {
        None => Ok(names),
        Some(schema) => names.schema(schema).map_err(|e| format!("--schema: {e}")),
    }
}

/// The SHA-256 of a public key, in hex: its fingerprint.
fn fingerprint(key: &PublicKey) -> String {
    use sha2::Digest as _;
    let bytes = hex::decode(key.to_hex()).unwrap_or_default();
    hex::encode(sha2::Sha256::digest(bytes))
}

/// The directory of the SQLite database `url` names (`None` for PostgreSQL): where the
/// database's writers can write.
fn data_directory(url: &str) -> Option<PathBuf> {
    let path = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))?;
    let path = path.split('?').next().unwrap_or(path);
    let dir = Path::new(path).parent()?;
    let dir = if dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        dir
    };
    dir.canonicalize().ok()
}

/// The public key `value` gives (hex, or `@file`), pinned.
fn pinned_key(args: &Args, value: &str, pins: &[String]) -> Result<PublicKey, String> {
    let Some(path) = value.strip_prefix('@') else {
        return PublicKey::from_hex(value).map_err(|e| format!("--public-key: {e}"));
    };
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read the public key file {path}: {e}"))?;
    let key = PublicKey::from_hex(&text).map_err(|e| format!("--public-key @{path}: {e}"))?;
    let print = fingerprint(&key);
    if !pins.is_empty() {
        return if pins.contains(&print) {
            Ok(key)
        } else {
            Err(format!(
                "--public-key @{path}: the key in it has fingerprint {print}, which no \
                 --fingerprint pins: it is not the key you trust"
            ))
        };
    }
    let inside = match (
        data_directory(&args.database_url),
        Path::new(path).canonicalize(),
    ) {
        (Some(dir), Ok(file)) => file.starts_with(dir),
        _ => false,
    };
    if inside {
        return Err(format!(
            "--public-key @{path}: the key file is in the database's directory, which whoever \
             can write the database can also write (a key of their own, and checkpoints \
             re-signed with it): give the key itself (64 hex digits, as the server printed it), \
             a copy kept elsewhere, or pin this one with --fingerprint {print} after checking \
             that fingerprint against one you trust"
        ));
    }
    Ok(key)
}

fn verifier(args: &Args) -> Result<Verifier, String> {
    let mut pins = Vec::new();
    for pin in &args.fingerprints {
        let pin = pin.trim().to_ascii_lowercase();
        if pin.len() != 64 || !pin.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(
                "--fingerprint: expected the SHA-256 of a public key, 64 hex digits".to_owned(),
            );
        }
        pins.push(pin);
    }
    let mut keys = Vec::new();
    for value in &args.public_keys {
        keys.push(pinned_key(args, value, &pins)?);
    }
    let mut verifier = match &args.secret_file {
        Some(path) => {
            // Refused when others may read it, as the store refuses it; errors name the
            // path, never the content.
            let secret = ChainSecret::from_file(path).map_err(|e| format!("--secret-file: {e}"))?;
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

/// What the reports say, taken together.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Verdict {
    Ok,
    Unverifiable,
    Broken,
}

async fn run<S: ChainedStore>(
    store: S,
    args: &Args,
    verifier: &Verifier,
    span: Span,
    external: &[Checkpoint],
) -> Result<Verdict, String> {
    let mut verdict = Verdict::Ok;
    let mut any = false;
    let mut print = |report: &VerifyReport| {
        any = true;
        verdict = verdict.max(match report.outcome {
            Outcome::Ok => Verdict::Ok,
            Outcome::Unverifiable => Verdict::Unverifiable,
            _ => Verdict::Broken,
        });
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
            verify::chains(&store, external)
                .await
                .map_err(|e| format!("cannot list the chains: {e}"))?
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
        // Nothing vouches that the database should be empty.
        println!("UNVERIFIABLE: no chains in this database, and no checkpoint names one");
        verdict = Verdict::Unverifiable;
    }
    Ok(verdict)
}

fn describe(r: &VerifyReport) -> String {
    let name = if r.account_id.is_empty() {
        "(records without an account)".to_owned()
    } else {
        format!("{:?}", r.account_id)
    };
    let range = match (r.first_seq, r.last_seq) {
        (Some(a), Some(b)) => format!(" (sequence {a} to {b})"),
        _ => String::new(),
    };
    let seals = if r.seals_checked {
        "checked"
    } else {
        "not checked (no secret)"
    };
    match (&r.broken, &r.unverifiable) {
        (Some(b), _) => format!("BROKEN {name}: {b}"),
        (None, Some(why)) => format!(
            "UNVERIFIABLE {name}: {} records linked{range}, seals {seals}, but {why}",
            r.records
        ),
        (None, None) => {
            let latest = match r.latest_checkpoint {
                Some((seq, _)) => format!(", newest checkpoint at {seq}"),
                None => String::new(),
            };
            format!(
                "ok {name}: {} records{range}, {} checkpoints matched{latest}, seals {seals}",
                r.records, r.checkpoints
            )
        }
    }
}

async fn main_inner(args: Args) -> Result<Verdict, String> {
    let verifier = verifier(&args)?;
    let span = span(&args)?;
    let external = match &args.checkpoints {
        Some(path) => JsonLinesCheckpoints::read(path).map_err(|e| e.to_string())?,
        None => Vec::new(),
    };
    let url = args.database_url.as_str();
    let names = table_names(&args)?;
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        let store = PostgresStore::connect(url)
            .await
            .map_err(|e| format!("cannot connect to the PostgreSQL database: {e}"))?
            .table_names(names);
        run(store, &args, &verifier, span, &external).await
    } else if url.starts_with("sqlite:") {
        let store = SqliteStore::connect_existing(url)
            .await
            .map_err(|e| format!("cannot open the SQLite database: {e}"))?
            .table_names(names)
            .map_err(|e| format!("--schema: {e}"))?;
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
        Ok(Verdict::Ok) => ExitCode::SUCCESS,
        Ok(Verdict::Broken) => ExitCode::from(1),
        Ok(Verdict::Unverifiable) => ExitCode::from(3),
        Err(e) => {
            eprintln!("audit-verify: {e}");
            ExitCode::from(2)
        }
    }
}
