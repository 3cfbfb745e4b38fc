//! Tamper-evidence benchmark: what chaining costs at ingest, and how fast a chain verifies.
//!
//! ```text
//! AUDIT_TEST_POSTGRES_URL=postgres://postgres@127.0.0.1:5432/test \
//!   cargo bench -p audit-store --bench chain -- --rows 1000000
//! cargo bench -p audit-store --bench chain -- --quick        # 20k rows
//! cargo test -p audit-store --bench chain                    # 2,000 rows, smoke (CI)
//! ```
//!
//! Options: `--rows N` (default 1,000,000), `--quick` (20,000), `--accounts N` (default
//! 1,000), `--backend sqlite|postgres|both`, `--postgres-url URL`, `--seed N`,
//! `--verify-rounds N` (default 2), `--no-per-account` (skip the per-account baseline),
//! `--batch N` (records per `insert`, default 10,000).
//!
//! A load harness, not criterion: one long run per configuration, on both backends:
//!
//! 1. **Ingest.** The same N generated records (the ingest benchmark's records from
//!    `benches/support`: ~650 B of JSON, 1,000 accounts, account 0 holding 10 % and
//!    accounts 1–9 another 20 %) are flattened to `StoredRecord`s before any clock starts, then
//!    written in batches of 10,000 (`--batch`; the pipeline's default is 4,000 now) through
//!    `AuditStore::insert` into an unchained store and a chained store, each on a fresh
//!    database (SQLite file, PostgreSQL schema built by `migrate()`). The batches
//!    **alternate** between the two stores, and which store goes first alternates too, so a
//!    change in the machine's load hits both alike. Per store: the wall time of its `insert` calls, this process's CPU
//!    (user + system, from `/proc/self/stat`) during them, and for a local PostgreSQL the
//!    server's CPU (postmaster and children, from `/proc`).
//! 2. **Verification.** A checkpoint is signed for every chain (`chain::checkpoint`), then
//!    the whole store is verified with `chain::verify_all` (one pass in table order): with the
//!    secret (`ChainKeys::verifier`, seals checked) and with the public key only
//!    (`Verifier::public`), and the bare scan (`AuditStore::chain_scan`: the database, row
//!    decoding and the column digest, no linking) to show where the time goes. Then the
//!    largest account alone with `chain::verify` (its records through the account index),
//!    the same three ways. `--verify-rounds` rounds, in alternating order. The baseline,
//!    once (first round): every account in turn with `chain::verify`, as the store was
//!    verified before `verify_all` existed.
//! 3. **Checks** (every mode, so the CI smoke run asserts them): both stores hold N rows; the
//!    chain heads add up to N; every report is `ok`, covers its whole chain and matched its
//!    checkpoint; and after the timings one record of the largest account is changed in the
//!    database, and both verifiers, and `verify_all`, must find it at its sequence number.
//!
//! Under `cargo test --benches` (`--test`, or no `--bench` argument) it runs the 2,000-row
//! smoke pass and skips whatever is missing instead of failing.
//!
//! PostgreSQL: `--postgres-url`, else `AUDIT_BENCH_POSTGRES_URL`, else
//! `AUDIT_TEST_POSTGRES_URL` (the variables the ingest benchmark reads); with none of them set
//! the PostgreSQL runs are skipped with a message. Each run creates two schemas of its own,
//! `chainbench_<pid>_<time>_plain` and `..._chained`, and drops them at the end (also when
//! the run fails).

mod support;

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use audit_store::chain::{ChainKeys, ChainSecret, Verifier};
use audit_store::model::{ChainScope, StoredRecord};
use audit_store::store::sql::Dialect;
use audit_store::store::{AuditStore, ChainedStore};
use audit_store::verify::{self, BreakKind, Span, VerifyReport};
use audit_store::{PostgresStore, SqliteStore};
use futures_util::StreamExt as _;
use sqlx::AssertSqlSafe;

use support::cpu::{self, Cpu};
use support::records::Dataset;
use support::world::{Profile, World};
use support::{Argv, Backend, BoxResult, Common, postgres, sqlite, verdict};

/// Records per `AuditStore::insert` by default (`--batch`): the batch size the figures in
/// BENCHMARKS.md were first measured with (the pipeline's default is 4,000 since).
const BATCH: usize = 10_000;
/// The goals of the issue.
const GOAL_INGEST_COST: f64 = 0.10;
const GOAL_VERIFY_SECONDS_PER_MILLION: f64 = 10.0;

const USAGE: &str = "usage: cargo bench -p audit-store --bench chain -- [--rows N] [--quick] \
[--accounts N] [--backend sqlite|postgres|both] [--postgres-url URL] [--seed N] \
[--verify-rounds N] [--no-per-account] [--batch N]";

fn main() {
    support::harness("chain", USAGE, Args::parse, run);
}

// ---------------------------------------------------------------------------------------------
// Command line

#[derive(Debug)]
struct Args {
    common: Common,
    accounts: usize,
    postgres_url: Option<String>,
    verify_rounds: usize,
    /// Skip the baseline: every account verified in turn with `chain::verify`.
    no_per_account: bool,
    /// Records per `insert`.
    batch: usize,
}

impl Args {
    fn parse() -> BoxResult<Self> {
        let mut argv = Argv::from_env(USAGE, 0x00c4_a1a5);
        let mut accounts = 1_000;
        let mut postgres_url = None;
        let mut verify_rounds = None;
        let mut no_per_account = false;
        let mut batch = BATCH;
        while let Some(arg) = argv.next_flag()? {
            match arg.as_str() {
                "--accounts" => accounts = argv.count("--accounts")?,
                "--postgres-url" => postgres_url = Some(argv.value("--postgres-url")?),
                "--no-per-account" => no_per_account = true,
                "--batch" => batch = argv.count("--batch")?.max(1),
                "--verify-rounds" => verify_rounds = Some(argv.count("--verify-rounds")?),
                other => argv.unknown(other)?,
            }
        }
        let common = argv.common()?;
        Ok(Self {
            accounts,
            postgres_url: postgres_url
                .filter(|u| !u.trim().is_empty())
                .or_else(postgres::url_from_env),
            verify_rounds: verify_rounds.unwrap_or(if common.smoke { 1 } else { 2 }),
            no_per_account,
            batch,
            common,
        })
    }
}

// ---------------------------------------------------------------------------------------------
// Measurements

/// Wall and CPU time accumulated over some calls.
#[derive(Clone, Copy, Debug, Default)]
struct Tally {
    /// Rows written (ingest) or records verified.
    rows: u64,
    wall: Duration,
    /// This process, user + system, clock ticks.
    own: u64,
    /// The PostgreSQL server's processes, clock ticks, when visible.
    server: Option<u64>,
}

impl Tally {
    fn add(&mut self, other: Self) {
        self.rows += other.rows;
        self.wall += other.wall;
        self.own += other.own;
        self.server = match (self.server, other.server) {
            (Some(a), Some(b)) => Some(a + b),
            (None, b) => b,
            (a, None) => a,
        };
    }

    fn rate(&self) -> f64 {
        self.rows as f64 / self.wall.as_secs_f64().max(1e-9)
    }
}

/// Times `body`: wall time, this process's CPU and the server's.
async fn timed<T, F>(server: Option<u32>, body: F) -> BoxResult<(T, Tally)>
where
    F: Future<Output = BoxResult<(T, u64)>>,
{
    let before = Cpu::before(server);
    let started = Instant::now();
    let (value, rows) = body.await?;
    let wall = started.elapsed();
    let cpu = Cpu::after(server).since(before);
    Ok((
        value,
        Tally {
            rows,
            wall,
            own: cpu.own,
            server: cpu.server,
        },
    ))
}

struct Env {
    ticks: f64,
}

impl Env {
    /// Ticks per row in µs.
    fn per_row(&self, ticks: u64, rows: u64) -> f64 {
        cpu::per_row(ticks, self.ticks, rows)
    }

    /// `, server X µs/<unit>` when the server's CPU is known.
    fn server(&self, t: &Tally, precision: usize, unit: &str) -> String {
        t.server.map_or_else(String::new, |s| {
            format!(", server {:.precision$} µs/{unit}", self.per_row(s, t.rows))
        })
    }
}

struct IngestResult {
    backend: Backend,
    plain: Tally,
    chained: Tally,
    plain_bytes: Option<u64>,
    chained_bytes: Option<u64>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    /// Verification with the secret: links, seals, checkpoints.
    Full,
    /// Verification with the public key: links and checkpoints.
    Public,
    /// `chain_scan` alone: the database, decoding, the column digest.
    Walk,
    /// The baseline: `chain::verify` for every account in turn, with the secret.
    PerAccount,
}

impl Mode {
    fn label(self) -> &'static str {
        match self {
            Self::Full => "verify, secret (seals)",
            Self::Public => "verify, public key only",
            Self::Walk => "chain_scan only",
            Self::PerAccount => "per account, secret",
        }
    }
}

struct VerifyResult {
    backend: Backend,
    scope: &'static str,
    accounts: usize,
    mode: Mode,
    /// One per round.
    rounds: Vec<Tally>,
}

impl VerifyResult {
    fn best(&self) -> Tally {
        self.rounds
            .iter()
            .copied()
            .min_by_key(|t| t.wall)
            .unwrap_or_default()
    }

    fn mean_wall(&self) -> f64 {
        self.rounds
            .iter()
            .map(|t| t.wall.as_secs_f64())
            .sum::<f64>()
            / self.rounds.len().max(1) as f64
    }
}

// ---------------------------------------------------------------------------------------------
// The benchmark

async fn run(args: Args) -> BoxResult<()> {
    println!("audit-store chain benchmark, {} mode", args.common.mode());
    println!("  machine: {} CPUs; {}", support::cpus(), cpu::load());
    let env = Env {
        ticks: cpu::clock_ticks_per_second(),
    };
    let (rows, largest) = generate(&args)?;
    let keys = ChainKeys::from_secret(&ChainSecret::from_bytes([0x5a; 32]));
    let ctx = Ctx {
        args: &args,
        env: &env,
        rows: &rows,
        keys: &keys,
        largest: &largest,
    };
    let mut ingests = Vec::new();
    let mut verifies = Vec::new();
    for backend in args.common.backends.clone() {
        let outcome = match backend {
            Backend::Sqlite => {
                let tmp = tempfile::Builder::new().prefix("audit-chain-").tempdir()?;
                Some(sqlite_run(&ctx, tmp.path()).await?)
            }
            Backend::Postgres => match &args.postgres_url {
                Some(url) => postgres_run(&ctx, url).await?,
                None => {
                    println!(
                        "\n== postgres: skipped (set AUDIT_TEST_POSTGRES_URL, \
                         AUDIT_BENCH_POSTGRES_URL or --postgres-url)"
                    );
                    None
                }
            },
        };
        if let Some((i, v)) = outcome {
            ingests.push(i);
            verifies.extend(v);
        }
    }

    println!();
    println!("== Results ({} rows; {})", rows.len(), cpu::load());
    print_ingest(&ingests, &env);
    println!();
    print_verify(&verifies, &env);
    println!();
    println!("== Goals");
    if args.common.smoke {
        println!("  (smoke run: correctness only; a debug build says nothing about the goals)");
        return Ok(());
    }
    if rows.len() < 1_000_000 {
        println!("  (indicative only: the goals are stated for 1M records)");
    }
    print_goals(&ingests, &verifies);
    println!();
    println!("Notes:");
    println!(
        "  - batches alternate between the unchained and the chained store (first store \
         alternating too); the clock runs only inside store.insert"
    );
    println!(
        "  - cpu = this process (includes SQLite, which is embedded); srv = the PostgreSQL \
         server's processes (any other client's load on that server included)"
    );
    println!(
        "  - the machine is shared: compare the two columns of one run, not absolute rates \
         across runs"
    );
    Ok(())
}

/// The records, flattened before any clock starts, and the account holding the most.
fn generate(args: &Args) -> BoxResult<(Vec<StoredRecord>, String)> {
    let data = Dataset {
        world: Arc::new(World::new(args.common.seed, Profile::chain(args.accounts))),
        n: args.common.rows,
        seed: args.common.seed,
        end_ms: support::now_ms()?,
    };
    let started = Instant::now();
    let rows: Vec<StoredRecord> = data
        .iter()
        .map(|r| StoredRecord::from_record(&r))
        .collect::<Result<_, _>>()?;
    let json_bytes: usize = rows.iter().map(|r| r.record.len()).sum();
    let mut per_account: HashMap<&str, u64> = HashMap::new();
    for r in &rows {
        *per_account
            .entry(r.account_id.as_deref().unwrap_or(""))
            .or_default() += 1;
    }
    let (largest, held) = per_account
        .iter()
        .max_by_key(|(a, n)| (**n, *a))
        .map(|(a, n)| ((*a).to_owned(), *n))
        .ok_or("no records")?;
    println!(
        "  {} records generated in {:.1} s: {:.0} B of JSON on average, {} accounts, the \
         largest holding {} ({:.1} %); batches of {}",
        rows.len(),
        started.elapsed().as_secs_f64(),
        json_bytes as f64 / rows.len().max(1) as f64,
        per_account.len(),
        held,
        100.0 * held as f64 / rows.len().max(1) as f64,
        args.batch
    );
    drop(per_account);
    Ok((rows, largest))
}

/// What every backend's run needs.
struct Ctx<'a> {
    args: &'a Args,
    env: &'a Env,
    rows: &'a [StoredRecord],
    keys: &'a ChainKeys,
    largest: &'a str,
}

async fn sqlite_run(ctx: &Ctx<'_>, dir: &Path) -> BoxResult<(IngestResult, Vec<VerifyResult>)> {
    println!("\n== sqlite");
    let plain_path = dir.join("plain.db");
    let chained_path = dir.join("chained.db");
    let plain = SqliteStore::open(&plain_path).await?;
    plain.migrate().await?;
    let chained = SqliteStore::open(&chained_path)
        .await?
        .chained(ctx.keys.clone());
    chained.migrate().await?;
    let mut ingested = ingest(ctx, Backend::Sqlite, &plain, &chained, None).await?;
    plain.pool().close().await;
    let verifies = verify_and_tamper(ctx, Backend::Sqlite, &chained, None).await?;
    chained.pool().close().await;
    ingested.plain_bytes = Some(sqlite::bytes(&plain_path));
    ingested.chained_bytes = Some(sqlite::bytes(&chained_path));
    Ok((ingested, verifies))
}

/// `None`: skipped (smoke mode and no server).
async fn postgres_run(
    ctx: &Ctx<'_>,
    url: &str,
) -> BoxResult<Option<(IngestResult, Vec<VerifyResult>)>> {
    println!("\n== postgres");
    let postmaster = match postgres::reach(url).await {
        Ok(pm) => pm,
        Err(e) if ctx.args.common.smoke => {
            println!("  !! {e}: PostgreSQL is skipped");
            return Ok(None);
        }
        Err(e) => return Err(e.into()),
    };
    let base = format!("chainbench_{}_{}", std::process::id(), support::now_ms()?);
    let schemas = [format!("{base}_plain"), format!("{base}_chained")];
    println!(
        "  {url}, schemas {} and {}; server CPU {}",
        schemas[0],
        schemas[1],
        if postmaster.is_some() {
            "read from /proc"
        } else {
            "not visible (remote server)"
        }
    );
    let outcome = postgres_body(ctx, url, &schemas, postmaster).await;
    // Always drop the schemas, also after a failure.
    for schema in &schemas {
        if let Err(e) = postgres::drop_schema(url, schema).await {
            eprintln!("  could not drop schema {schema}: {e}");
        }
    }
    outcome.map(Some)
}

async fn postgres_body(
    ctx: &Ctx<'_>,
    url: &str,
    schemas: &[String; 2],
    postmaster: Option<u32>,
) -> BoxResult<(IngestResult, Vec<VerifyResult>)> {
    let plain = postgres::fresh_store(url, &schemas[0], 4).await?;
    let chained = postgres::fresh_store(url, &schemas[1], 4)
        .await?
        .chained(ctx.keys.clone());
    // Every run starts from clean buffers.
    postgres::checkpoint(plain.pool()).await;
    let mut ingested = ingest(ctx, Backend::Postgres, &plain, &chained, postmaster).await?;
    ingested.plain_bytes = postgres::table_bytes(plain.pool()).await?;
    ingested.chained_bytes = postgres::table_bytes(chained.pool()).await?;
    plain.pool().close().await;
    let verifies = verify_and_tamper(ctx, Backend::Postgres, &chained, postmaster).await?;
    chained.pool().close().await;
    Ok((ingested, verifies))
}

// ---------------------------------------------------------------------------------------------
// Ingest

/// Writes every row into both stores in batches of `--batch`, alternating between them, and
/// checks both hold every row. The result's sizes are for the caller to fill in.
async fn ingest<S: ChainedStore>(
    ctx: &Ctx<'_>,
    backend: Backend,
    plain: &S,
    chained: &S,
    server: Option<u32>,
) -> BoxResult<IngestResult> {
    let mut tallies = [Tally::default(); 2];
    let batches = ctx.rows.len().div_ceil(ctx.args.batch);
    let report_every = batches.div_ceil(10).max(1);
    println!(
        "  ingest: {} rows in {batches} batches, alternating unchained/chained",
        ctx.rows.len()
    );
    for (i, batch) in ctx.rows.chunks(ctx.args.batch).enumerate() {
        let order = if i % 2 == 0 { [0, 1] } else { [1, 0] };
        for which in order {
            let store = if which == 0 { plain } else { chained };
            let ((), t) = timed(server, async {
                let n = store.insert(batch).await?;
                if n != batch.len() as u64 {
                    return Err(format!(
                        "{} {} store: {n} of {} rows stored",
                        backend.name(),
                        if which == 0 { "unchained" } else { "chained" },
                        batch.len()
                    )
                    .into());
                }
                Ok(((), n))
            })
            .await?;
            tallies[which].add(t);
        }
        if (i + 1) % report_every == 0 || i + 1 == batches {
            println!(
                "    {:>8} rows: unchained {:>7.0} rows/s, chained {:>7.0} rows/s ({:.3}x); \
                 load {}",
                tallies[0].rows,
                tallies[0].rate(),
                tallies[1].rate(),
                tallies[1].rate() / tallies[0].rate(),
                cpu::load1()
            );
        }
    }
    for (name, t) in [("unchained", tallies[0]), ("chained", tallies[1])] {
        println!(
            "    {name:<9} {} rows in {:.2} s = {:.0} rows/s; cpu {:.1} µs/row{}",
            t.rows,
            t.wall.as_secs_f64(),
            t.rate(),
            ctx.env.per_row(t.own, t.rows),
            ctx.env.server(&t, 1, "row")
        );
    }
    check_ingest(ctx, plain, chained).await?;
    Ok(IngestResult {
        backend,
        plain: tallies[0],
        chained: tallies[1],
        plain_bytes: None,
        chained_bytes: None,
    })
}

/// Both stores hold every row, and the chained store's heads account for all of them.
async fn check_ingest<S: ChainedStore>(ctx: &Ctx<'_>, plain: &S, chained: &S) -> BoxResult<()> {
    let n = ctx.rows.len() as u64;
    let (a, b) = (plain.count().await?, chained.count().await?);
    if a != n || b != n {
        return Err(format!("stored {a} unchained and {b} chained rows, expected {n}").into());
    }
    let heads = chained.chain_heads().await?;
    let linked: i64 = heads.iter().map(|h| h.seq).sum();
    if u64::try_from(linked).ok() != Some(n) {
        return Err(format!("the chain heads account for {linked} rows, expected {n}").into());
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Verification

/// Signs a checkpoint for every chain, times the verifications, then tampers with the store.
async fn verify_and_tamper<S: Tamper>(
    ctx: &Ctx<'_>,
    backend: Backend,
    store: &S,
    server: Option<u32>,
) -> BoxResult<Vec<VerifyResult>> {
    let (checkpoints, t) = timed(server, async {
        let cps = store.checkpoint(support::now_ms()?).await?;
        let n = cps.len() as u64;
        Ok((cps, n))
    })
    .await?;
    println!(
        "  checkpoint: {} chains signed in {:.3} s",
        checkpoints.len(),
        t.wall.as_secs_f64()
    );
    let heads: Vec<(String, i64)> = store
        .chain_heads()
        .await?
        .into_iter()
        .map(|h| (h.chain, h.seq))
        .collect();
    let all: Vec<&str> = heads.iter().map(|(c, _)| c.as_str()).collect();
    let mut results = Vec::new();
    for (scope, accounts) in [
        ("all accounts", all),
        ("largest account", vec![ctx.largest]),
    ] {
        let expected: u64 = heads
            .iter()
            .filter(|(c, _)| accounts.contains(&c.as_str()))
            .map(|(_, s)| u64::try_from(*s).unwrap_or(0))
            .sum();
        let scope = Scope {
            backend,
            name: scope,
            accounts: &accounts,
            expected,
        };
        results.extend(verify_rounds(ctx, store, server, &scope).await?);
    }
    tamper_check(ctx, store).await?;
    Ok(results)
}

/// The accounts one set of verifications covers.
struct Scope<'a> {
    backend: Backend,
    name: &'static str,
    accounts: &'a [&'a str],
    /// The records their chains hold.
    expected: u64,
}

impl Scope<'_> {
    /// The whole store, verified in one pass.
    fn whole(&self) -> bool {
        self.name == "all accounts"
    }
}

/// `--verify-rounds` rounds of every mode over `scope`, in alternating order; the baseline
/// only in the first.
async fn verify_rounds<S: ChainedStore>(
    ctx: &Ctx<'_>,
    store: &S,
    server: Option<u32>,
    scope: &Scope<'_>,
) -> BoxResult<Vec<VerifyResult>> {
    let full = ctx.keys.verifier();
    let public = Verifier::public(ctx.keys.public_key());
    let mut modes = vec![Mode::Full, Mode::Public, Mode::Walk];
    if scope.whole() && !ctx.args.no_per_account {
        modes.push(Mode::PerAccount);
    }
    let mut runs: Vec<VerifyResult> = modes
        .into_iter()
        .map(|mode| VerifyResult {
            backend: scope.backend,
            scope: scope.name,
            accounts: scope.accounts.len(),
            mode,
            rounds: Vec::new(),
        })
        .collect();
    for round in 0..ctx.args.verify_rounds {
        let mut order: Vec<usize> = (0..runs.len()).collect();
        if round % 2 == 1 {
            order.reverse();
        }
        for k in order {
            let mode = runs[k].mode;
            if mode == Mode::PerAccount && round > 0 {
                continue; // the baseline, once
            }
            let verifier = if mode == Mode::Public { &public } else { &full };
            let ((), t) = timed(
                server,
                verify_scope(store, verifier, mode, scope.whole(), scope.accounts),
            )
            .await?;
            if t.rows != scope.expected {
                return Err(format!(
                    "{} {}, {}: {} records checked, expected {}",
                    scope.backend.name(),
                    scope.name,
                    mode.label(),
                    t.rows,
                    scope.expected
                )
                .into());
            }
            println!(
                "  {:<15} {:<24} round {}: {} accounts, {} records in {:.2} s = \
                 {:.0} records/s; cpu {:.2} µs/record{}; load {}",
                scope.name,
                mode.label(),
                round + 1,
                scope.accounts.len(),
                t.rows,
                t.wall.as_secs_f64(),
                t.rate(),
                ctx.env.per_row(t.own, t.rows),
                ctx.env.server(&t, 2, "record"),
                cpu::load1()
            );
            runs[k].rounds.push(t);
        }
    }
    Ok(runs)
}

/// Every report must be `ok`, cover its whole chain and have matched the checkpoint just made.
fn check_report(report: &VerifyReport, seals: bool) -> BoxResult<()> {
    if !report.ok
        || report.seals_checked != seals
        || report.checkpoints == 0
        || report.after_latest_checkpoint != 0
        || report.first_seq != Some(1)
        || report.last_seq != i64::try_from(report.records).ok()
    {
        return Err(format!("account {:?} did not verify: {report:?}", report.account_id).into());
    }
    Ok(())
}

/// Verifies (or only reads) `accounts`: the whole store (`whole`) with `verify_all` or one
/// `chain_scan`, else each account with `chain::verify` or its account scan. Returns the
/// records checked.
async fn verify_scope<S: ChainedStore>(
    store: &S,
    verifier: &Verifier,
    mode: Mode,
    whole: bool,
    accounts: &[&str],
) -> BoxResult<((), u64)> {
    let seals = verifier.checks_seals();
    let mut records = 0;
    match mode {
        Mode::Walk => {
            let scopes: Vec<ChainScope> = if whole {
                vec![ChainScope::All]
            } else {
                accounts
                    .iter()
                    .map(|a| ChainScope::Chain {
                        chain: (*a).to_owned(),
                        first: 1,
                        last: i64::MAX,
                    })
                    .collect()
            };
            for scope in scopes {
                let mut scan = store.chain_scan(scope);
                while let Some(chunk) = scan.next().await {
                    records += chunk?.len() as u64;
                }
            }
        }
        Mode::Full | Mode::Public if whole => {
            let reports = verify::verify_all(store, verifier, &[]).await?;
            if reports.len() != accounts.len() {
                return Err(format!(
                    "verify_all reported {} chains, expected {}",
                    reports.len(),
                    accounts.len()
                )
                .into());
            }
            for report in &reports {
                check_report(report, seals)?;
                records += report.records;
            }
        }
        Mode::Full | Mode::Public | Mode::PerAccount => {
            for account in accounts {
                let report = verify::verify(store, verifier, account, Span::all(), &[]).await?;
                check_report(&report, seals)?;
                records += report.records;
            }
        }
    }
    Ok(((), records))
}

// ---------------------------------------------------------------------------------------------
// Tampering

/// A store whose rows the benchmark can change behind its back, as an insider would.
trait Tamper: ChainedStore {
    /// Appends a space to the JSON of record `seq` of `chain`; returns the rows changed.
    async fn tamper(&self, chain: &str, seq: i64) -> Result<u64, sqlx::Error>;
}

fn tamper_sql(dialect: Dialect) -> String {
    format!(
        "UPDATE audit_logs SET record = record || ' ' \
         WHERE coalesce(account_id, '') = {} AND chain_seq = {}",
        dialect.placeholder(1),
        dialect.placeholder(2)
    )
}

macro_rules! tamper_in {
    ($store:ty, $dialect:expr) => {
        impl Tamper for $store {
            async fn tamper(&self, chain: &str, seq: i64) -> Result<u64, sqlx::Error> {
                let done = sqlx::query(AssertSqlSafe(tamper_sql($dialect)))
                    .bind(chain.to_owned())
                    .bind(seq)
                    .execute(self.pool())
                    .await?;
                Ok(done.rows_affected())
            }
        }
    };
}

tamper_in!(SqliteStore, Dialect::Sqlite);
tamper_in!(PostgresStore, Dialect::Postgres);

/// Changes one record of the largest account behind the store's back; both verifiers, and
/// `verify_all`, must find it at its sequence number.
async fn tamper_check<S: Tamper>(ctx: &Ctx<'_>, store: &S) -> BoxResult<()> {
    let head = store
        .chain_head(ctx.largest)
        .await?
        .ok_or("the largest account has no chain")?;
    let seq = (head.seq / 2).max(1);
    let changed = store.tamper(ctx.largest, seq).await?;
    if changed != 1 {
        return Err(format!("the tamper changed {changed} rows, expected 1").into());
    }
    let found = |report: &VerifyReport, how: &str| -> BoxResult<()> {
        match &report.broken {
            Some(b) if b.seq == seq && b.kind == BreakKind::Modified => Ok(()),
            other => Err(format!(
                "a record changed at sequence {seq} was not found ({how}): {other:?}"
            )
            .into()),
        }
    };
    for verifier in [ctx.keys.verifier(), Verifier::public(ctx.keys.public_key())] {
        let report = verify::verify(store, &verifier, ctx.largest, Span::all(), &[]).await?;
        found(
            &report,
            &format!("verify, seals {}", verifier.checks_seals()),
        )?;
    }
    let reports = verify::verify_all(store, &ctx.keys.verifier(), &[]).await?;
    let broken: Vec<&VerifyReport> = reports.iter().filter(|r| !r.ok).collect();
    match broken.as_slice() {
        [report] if report.account_id == ctx.largest => found(report, "verify_all")?,
        _ => {
            return Err(format!(
                "verify_all: expected only {:?} broken, got {:?}",
                ctx.largest,
                broken.iter().map(|r| &r.account_id).collect::<Vec<_>>()
            )
            .into());
        }
    }
    println!(
        "  tamper check: a record changed at sequence {seq} is found by both verifiers and by \
         verify_all"
    );
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Output

fn print_ingest(results: &[IngestResult], env: &Env) {
    println!("Ingest: store.insert, alternating stores");
    println!(
        "{:<9} {:<10} {:>9} {:>8} {:>9} {:>10} {:>10} {:>10} {:>10} {:>9}",
        "backend",
        "store",
        "rows",
        "seconds",
        "rows/s",
        "vs plain",
        "cpu µs/row",
        "srv µs/row",
        "tot µs/row",
        "bytes/row"
    );
    for r in results {
        for (name, t, bytes) in [
            ("unchained", r.plain, r.plain_bytes),
            ("chained", r.chained, r.chained_bytes),
        ] {
            let cpu = env.per_row(t.own, t.rows);
            let srv = t.server.map(|s| env.per_row(s, t.rows));
            println!(
                "{:<9} {:<10} {:>9} {:>8.2} {:>9.0} {:>10} {:>10.1} {:>10} {:>10.1} {:>9}",
                r.backend.name(),
                name,
                t.rows,
                t.wall.as_secs_f64(),
                t.rate(),
                format!("{:.3}x", t.rate() / r.plain.rate()),
                cpu,
                srv.map_or_else(|| "-".to_owned(), |s| format!("{s:.1}")),
                cpu + srv.unwrap_or(0.0),
                bytes.map_or_else(
                    || "-".to_owned(),
                    |b| format!("{:.0}", b as f64 / t.rows.max(1) as f64)
                ),
            );
        }
    }
}

fn print_verify(results: &[VerifyResult], env: &Env) {
    println!("Verification (best round; every round listed above)");
    println!(
        "{:<9} {:<16} {:<24} {:>8} {:>9} {:>8} {:>8} {:>10} {:>10} {:>12} {:>9}",
        "backend",
        "scope",
        "what",
        "accounts",
        "records",
        "seconds",
        "mean s",
        "records/s",
        "cpu µs/rec",
        "srv µs/rec",
        "s per 1M"
    );
    for v in results {
        let t = v.best();
        println!(
            "{:<9} {:<16} {:<24} {:>8} {:>9} {:>8.2} {:>8.2} {:>10.0} {:>10.2} {:>12} {:>9.2}",
            v.backend.name(),
            v.scope,
            v.mode.label(),
            v.accounts,
            t.rows,
            t.wall.as_secs_f64(),
            v.mean_wall(),
            t.rate(),
            env.per_row(t.own, t.rows),
            t.server.map_or_else(
                || "-".to_owned(),
                |s| format!("{:.2}", env.per_row(s, t.rows))
            ),
            t.wall.as_secs_f64() * 1e6 / t.rows.max(1) as f64,
        );
    }
}

/// The goals: what chaining costs at ingest, how fast the whole store verifies, and
/// `verify_all` against the per-account baseline.
fn print_goals(ingests: &[IngestResult], verifies: &[VerifyResult]) {
    for i in ingests {
        let ratio = i.chained.rate() / i.plain.rate();
        let cost = 1.0 - ratio;
        println!(
            "  {:<9} ingest: chained {:.0} rows/s vs unchained {:.0} = {:.3}x, chaining costs \
             {:.1} % of throughput (goal ≤ {:.0} %): {}",
            i.backend.name(),
            i.chained.rate(),
            i.plain.rate(),
            ratio,
            100.0 * cost,
            100.0 * GOAL_INGEST_COST,
            verdict(cost <= GOAL_INGEST_COST)
        );
    }
    for v in verifies
        .iter()
        .filter(|v| v.scope == "all accounts" && matches!(v.mode, Mode::Full | Mode::Public))
    {
        let best = v.best();
        let per_million = best.wall.as_secs_f64() * 1e6 / best.rows.max(1) as f64;
        println!(
            "  {:<9} {}: {} records in {:.2} s (best of {}, mean {:.2} s) = {:.2} s per 1M \
             records (goal < {GOAL_VERIFY_SECONDS_PER_MILLION:.0} s): {}",
            v.backend.name(),
            v.mode.label(),
            best.rows,
            best.wall.as_secs_f64(),
            v.rounds.len(),
            v.mean_wall(),
            per_million,
            verdict(per_million < GOAL_VERIFY_SECONDS_PER_MILLION)
        );
    }
    for backend in [Backend::Sqlite, Backend::Postgres] {
        let find = |mode| {
            verifies
                .iter()
                .find(|v| v.backend == backend && v.scope == "all accounts" && v.mode == mode)
        };
        if let (Some(all), Some(base)) = (find(Mode::Full), find(Mode::PerAccount)) {
            // The baseline ran once, in the first round: compare with that round.
            let (a, b) = (
                all.rounds[0].wall.as_secs_f64(),
                base.best().wall.as_secs_f64(),
            );
            println!(
                "  {:<9} verify_all (secret) vs chain::verify per account, first round: \
                 {a:.2} s vs {b:.2} s = {:.2}x the time ({:.1}x faster)",
                backend.name(),
                a / b,
                b / a
            );
        }
    }
}
