//! Ingest load benchmark: realistic ~600-byte records through the real pipeline
//! (`pipeline::builder(store)` → `IngestSink::submit` → batches → `store.insert`), next to the
//! databases' own bulk loaders loading the same rows into the same table with the same
//! indexes, in the same run:
//!
//! - SQLite: `sqlite3 <db> -cmd '.mode csv' '.import --skip 0 rows.csv audit_logs'`;
//! - PostgreSQL: `psql <url> -c "\copy audit_logs(<24 columns>) FROM 'rows.csv' CSV"`.
//!
//! A load harness, not criterion: one long run per configuration.
//!
//! ```text
//! cargo bench -p audit-store --bench ingest -- --rows 1000000 [--backend sqlite|postgres|both]
//! cargo bench -p audit-store --bench ingest -- --quick      # 20k rows, CI smoke, < 60 s
//! ```
//!
//! Other options: `--index-rows N` (rows for the index-cost runs, default 200,000),
//! `--pg-writers 2,3,4` (pipeline writers tried for PostgreSQL), `--no-index-cost`,
//! `--breakdown` (time serialization and direct `store.insert` apart from the pipeline),
//! `--experiments` (changes to the defaults, each through the same pipeline: SQLite page size,
//! cache and batch size, including the settings before they were tuned; PostgreSQL 1,000-row
//! batches), `--seed N`,
//! `--sample N` (print N generated records as JSON lines and exit), `--sqlite3-cache-kib N`
//! (give the sqlite3 shell a page cache too; the store uses 16,384 KiB).
//!
//! Under `cargo test --benches` (no `--bench` argument) it runs a 2,000-row smoke pass and
//! skips whatever is missing instead of failing.
//!
//! # Requirements
//!
//! - The `sqlite3` command-line shell for the SQLite reference: `apt-get install -y sqlite3`.
//!   Without it the reference is skipped with a message.
//! - `psql` and a PostgreSQL server at `AUDIT_BENCH_POSTGRES_URL`, else
//!   `AUDIT_TEST_POSTGRES_URL`, else `postgres://postgres@127.0.0.1:5432/test`. The benchmark
//!   drops and recreates the schema `audit_bench` for every run; nothing else is touched.
//!   Server CPU is read from `/proc` when the server runs on this machine.
//!
//! # What is measured, and how it is kept fair
//!
//! - Records are generated before the clock starts (deterministic from `--seed`; times spread
//!   over the 30 days ending now, in time order, ids UUIDv7 of their time). The CSV is written
//!   from the same records through `StoredRecord::from_record`, so both sides load identical
//!   column values.
//! - Every run starts on a fresh database (SQLite file) or a fresh schema (PostgreSQL), built by
//!   the store's own `migrate()`: the same table and the same indexes for both tools. For the
//!   index-cost runs the secondary indexes are dropped after `migrate()`.
//! - Ours: the clock runs from the first `submit` until the last record is committed (the
//!   pipeline's `stored` counter reaches N), with `shutdown()` already called; how much later
//!   `shutdown()` returns is reported separately (it waits for the recovery task's next
//!   probe). The producer respects backpressure (pauses while the queue holds more than one
//!   lane's capacity) and the run asserts that nothing was dropped.
//! - CPU per row: ours is this process's user+system time (it includes SQLite itself, which is
//!   embedded); a reference tool's is its child process's time. For PostgreSQL the server's CPU
//!   (its postmaster and children, including reaped backends) is reported alongside.
//! - PostgreSQL: the table is partitioned by month. Ours creates partitions as it goes (inside
//!   the timed run). For `\copy`, the partitions are created before the clock starts by
//!   inserting one row per day of the data through the store and deleting them again.
//!   A `CHECKPOINT` precedes every timed PostgreSQL run.
//! - SQLite: the database file is created by `SqliteStore::open` for both tools, so the
//!   reference loads into the same page size (the 16 MiB page cache is a connection setting:
//!   the shell keeps its default 2 MB). `.import` cannot write BLOBs, so the reference stores
//!   `id` as its 36-character text and empty strings where ours stores NULL (CSV has no NULL
//!   for `.import`). Same table, same indexes; the reference's rows are a little larger (it is
//!   not favoured by this).

use std::collections::BTreeMap;
use std::io::{BufWriter, Write as _};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use audit_layer::record::{
    Account, Action, ActionResult, ActionType, Actor, ActorContext, ActorType, AuditRecord, Raw,
    Resource, Timestamp, Token, Zone,
};
use audit_layer::sink::AuditSink;
use audit_store::model::StoredRecord;
use audit_store::store::{AuditStore, ChainedStore};
use audit_store::{PostgresStore, SqliteStore, pipeline};
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::{AssertSqlSafe, Connection as _, Executor as _};
use uuid::Uuid;

type BoxError = Box<dyn std::error::Error + Send + Sync>;
type BoxResult<T> = Result<T, BoxError>;

/// The stored columns in table order (mirrors `audit_store::row::COLUMNS`, which is private).
const COLUMNS: [&str; 24] = [
    "id",
    "time_ms",
    "account_id",
    "account_name",
    "zone_id",
    "zone_name",
    "action_type",
    "action_result",
    "actor_email",
    "actor_id",
    "actor_ip_address",
    "actor_type",
    "actor_context",
    "actor_token_id",
    "actor_token_name",
    "raw_ray_id",
    "raw_method",
    "raw_status_code",
    "raw_uri",
    "resource_id",
    "resource_product",
    "resource_type",
    "resource_scope",
    "record",
];

const SCHEMA: &str = "audit_bench";
const DEFAULT_PG_URL: &str = "postgres://postgres@127.0.0.1:5432/test";
/// The pipeline's queue capacity (its documented default, set explicitly so the producer
/// knows the lane size).
const QUEUE_CAPACITY: usize = 65_536;
/// The producer looks at the queue depth every this many submits.
const CHECK_EVERY: usize = 64;
/// The index every query uses; the one kept by the "one index" configuration.
const MAIN_INDEX: &str = "audit_logs_account_time";
const DAY_MS: i64 = 86_400_000;
/// The advisory lock that keeps concurrent runs out of each other's schema.
const LOCK_KEY: i64 = 0x6175_6469_745f_6263;
/// `--sqlite3-cache-kib`: a page cache for the sqlite3 shell too (it defaults to 2 MB).
static SQLITE3_CACHE_KIB: std::sync::OnceLock<u32> = std::sync::OnceLock::new();

fn main() {
    let args = match Args::parse() {
        Ok(args) => args,
        Err(e) => {
            eprintln!("ingest bench: {e}\n\n{USAGE}");
            std::process::exit(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("ingest bench: cannot start tokio: {e}");
            std::process::exit(1);
        }
    };
    if let Err(e) = runtime.block_on(run(args)) {
        eprintln!("ingest bench failed: {e}");
        std::process::exit(1);
    }
}

const USAGE: &str = "usage: cargo bench -p audit-store --bench ingest -- [--rows N] \
[--backend sqlite|postgres|both] [--quick] [--index-rows N] [--pg-writers 2,3,4] \
[--no-index-cost] [--breakdown] [--experiments] [--seed N] [--sample N] [--sqlite3-cache-kib N]";

// ---------------------------------------------------------------------------------------------
// Command line

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Backend {
    Sqlite,
    Postgres,
}

impl Backend {
    fn name(self) -> &'static str {
        match self {
            Self::Sqlite => "sqlite",
            Self::Postgres => "postgres",
        }
    }
}

#[derive(Debug)]
struct Args {
    rows: usize,
    backends: Vec<Backend>,
    /// Whether the user asked for PostgreSQL by name (then an unreachable server is an error).
    postgres_required: bool,
    index_rows: usize,
    pg_writers: Vec<usize>,
    index_cost: bool,
    breakdown: bool,
    experiments: bool,
    seed: u64,
    /// Run by `cargo test --benches`: tiny, and skip what is missing.
    smoke: bool,
    quick: bool,
}

impl Args {
    fn parse() -> BoxResult<Self> {
        let argv: Vec<String> = std::env::args().skip(1).collect();
        // `cargo bench` passes `--bench`; `cargo test --benches` does not.
        let smoke = !argv.iter().any(|a| a == "--bench");
        let mut rows = None;
        let mut index_rows = None;
        let mut backend = "both".to_owned();
        let mut quick = false;
        let mut pg_writers = None;
        let mut index_cost = true;
        let mut breakdown = false;
        let mut experiments = false;
        let mut seed = 0x00a0_d17e_u64;
        let mut it = argv.iter();
        while let Some(arg) = it.next() {
            let mut value = |name: &str| {
                it.next()
                    .cloned()
                    .ok_or_else(|| BoxError::from(format!("{name} needs a value")))
            };
            match arg.as_str() {
                "--bench" => {}
                "--rows" => rows = Some(parse_count(&value("--rows")?)?),
                "--index-rows" => index_rows = Some(parse_count(&value("--index-rows")?)?),
                "--backend" => backend = value("--backend")?,
                "--quick" => quick = true,
                "--pg-writers" => {
                    let list = value("--pg-writers")?;
                    let parsed: Result<Vec<usize>, _> =
                        list.split(',').map(|w| w.trim().parse::<usize>()).collect();
                    let parsed = parsed.map_err(|e| format!("--pg-writers {list}: {e}"))?;
                    if parsed.is_empty() || parsed.contains(&0) {
                        return Err("--pg-writers takes writer counts of at least 1".into());
                    }
                    pg_writers = Some(parsed);
                }
                "--no-index-cost" => index_cost = false,
                "--breakdown" => breakdown = true,
                "--experiments" => experiments = true,
                "--sample" => {
                    let n = parse_count(&value("--sample")?)?;
                    let data = Dataset {
                        world: Arc::new(World::new(seed)),
                        n: n.max(1000),
                        seed,
                        end_ms: 1_767_225_600_000,
                    };
                    for record in data.iter().take(n) {
                        println!("{}", serde_json::to_string(&record)?);
                    }
                    std::process::exit(0);
                }
                "--seed" => seed = value("--seed")?.parse()?,
                "--sqlite3-cache-kib" => {
                    let kib: u32 = value("--sqlite3-cache-kib")?.parse()?;
                    let _ = SQLITE3_CACHE_KIB.set(kib);
                }
                "-h" | "--help" => {
                    println!("{USAGE}");
                    std::process::exit(0);
                }
                // Under `cargo test` the test harness's own flags may be passed along.
                _ if smoke => {}
                other => return Err(format!("unknown argument {other:?}").into()),
            }
        }
        let (backends, postgres_required) = match backend.as_str() {
            "sqlite" => (vec![Backend::Sqlite], false),
            "postgres" => (vec![Backend::Postgres], true),
            "both" => (vec![Backend::Sqlite, Backend::Postgres], false),
            other => return Err(format!("--backend {other:?}: sqlite, postgres or both").into()),
        };
        let default_rows = if smoke {
            2_000
        } else if quick {
            20_000
        } else {
            1_000_000
        };
        let rows = rows.unwrap_or(default_rows);
        let index_rows = index_rows.unwrap_or(if smoke || quick { rows } else { 200_000 });
        Ok(Self {
            rows,
            backends,
            postgres_required,
            index_rows: index_rows.min(rows).max(1),
            pg_writers: pg_writers.unwrap_or_else(|| if smoke { vec![2] } else { vec![2, 3, 4] }),
            // On 2,000 debug-build rows the index cost says nothing; keep CI's smoke run short.
            index_cost: index_cost && !smoke,
            breakdown,
            experiments,
            seed,
            smoke,
            quick,
        })
    }
}

fn parse_count(s: &str) -> BoxResult<usize> {
    let cleaned: String = s.chars().filter(|c| *c != '_' && *c != ',').collect();
    let (digits, scale) = match cleaned.strip_suffix(['k', 'K']) {
        Some(d) => (d, 1_000),
        None => match cleaned.strip_suffix(['m', 'M']) {
            Some(d) => (d, 1_000_000),
            None => (cleaned.as_str(), 1),
        },
    };
    let n: usize = digits
        .parse()
        .map_err(|e| format!("{s:?} is not a row count: {e}"))?;
    if n == 0 {
        return Err("a row count must be at least 1".into());
    }
    Ok(n * scale)
}

// ---------------------------------------------------------------------------------------------
// Records

/// SplitMix64: small, fast, and the same everywhere.
struct Rng(u64);

impl Rng {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n.max(1) as u64) as usize
    }

    /// Percent chance.
    fn percent(&mut self, p: u64) -> bool {
        self.next_u64() % 100 < p
    }

    fn hex(&mut self, len: usize) -> String {
        const DIGITS: &[u8; 16] = b"0123456789abcdef";
        (0..len)
            .map(|_| char::from(DIGITS[(self.next_u64() & 15) as usize]))
            .collect()
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }

    /// An index drawn with the given weights.
    fn weighted(&mut self, weights: &[u32]) -> usize {
        let total: u32 = weights.iter().sum();
        let mut x = (self.next_u64() % u64::from(total.max(1))) as u32;
        for (i, w) in weights.iter().enumerate() {
            if x < *w {
                return i;
            }
            x -= w;
        }
        weights.len() - 1
    }
}

struct Principal {
    context: ActorContext,
    kind: ActorType,
    email: Option<String>,
    id: String,
    ip: IpAddr,
    token: Token,
    user_agent: &'static str,
}

struct Tenant {
    id: String,
    zones: Vec<String>,
    principals: Vec<Principal>,
}

struct Endpoint {
    product: Arc<str>,
    scope: Arc<str>,
    kind: Arc<str>,
    path: &'static str,
    zoned: bool,
    weight: u32,
    /// List, get, create, update, delete.
    descriptions: [Arc<str>; 5],
}

/// The accounts, people, tokens and endpoints records are drawn from.
struct World {
    tenants: Vec<Tenant>,
    endpoints: Vec<Endpoint>,
}

const USER_AGENTS: [&str; 8] = [
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 18_1 like Mac OS X) Mobile/15E148 Safari/604.1",
    "Mozilla/5.0 (X11; Linux x86_64; rv:133.0) Gecko/20100101 Firefox/133.0",
    "Terraform/1.9.8 terraform-provider-cloudflare/4.48.0",
    "curl/8.5.0",
    "python-requests/2.32.3",
    "Go-http-client/2.0",
    "axios/1.7.9",
];

const FIRST_NAMES: [&str; 10] = [
    "alice", "bob", "carol", "dave", "erin", "frank", "grace", "heidi", "ivan", "judy",
];
const LAST_NAMES: [&str; 8] = [
    "smith", "garcia", "chen", "müller", "okafor", "tanaka", "novak", "silva",
];
const TOKEN_NAMES: [&str; 6] = [
    "terraform-ci",
    "deploy-bot",
    "Edit zone DNS",
    "monitoring (read only)",
    "github-actions",
    "backup exporter",
];

impl World {
    fn new(seed: u64) -> Self {
        let mut rng = Rng(seed ^ 0x0005_eed0_fa11);
        let endpoints = [
            (
                "alerting",
                "accounts",
                "policies",
                "alerting/v3/policies",
                false,
                20,
                "Notification policy",
                "Notification policies",
            ),
            (
                "dns",
                "zones",
                "dns_records",
                "dns_records",
                true,
                25,
                "DNS record",
                "DNS records",
            ),
            (
                "workers",
                "accounts",
                "scripts",
                "workers/scripts",
                false,
                10,
                "Worker script",
                "Worker scripts",
            ),
            (
                "firewall",
                "zones",
                "rules",
                "firewall/rules",
                true,
                10,
                "firewall rule",
                "firewall rules",
            ),
            (
                "access",
                "accounts",
                "apps",
                "access/apps",
                false,
                6,
                "Access application",
                "Access applications",
            ),
            (
                "r2",
                "accounts",
                "buckets",
                "r2/buckets",
                false,
                4,
                "R2 bucket",
                "R2 buckets",
            ),
            (
                "ssl",
                "zones",
                "certificate_packs",
                "ssl/certificate_packs",
                true,
                3,
                "certificate pack",
                "certificate packs",
            ),
            (
                "members",
                "accounts",
                "members",
                "members",
                false,
                3,
                "account member",
                "account members",
            ),
            (
                "load_balancing",
                "zones",
                "load_balancers",
                "load_balancers",
                true,
                5,
                "load balancer",
                "load balancers",
            ),
            (
                "rulesets", "zones", "rulesets", "rulesets", true, 8, "ruleset", "rulesets",
            ),
            (
                "tunnels",
                "accounts",
                "cfd_tunnel",
                "cfd_tunnel",
                false,
                3,
                "Cloudflare Tunnel",
                "Cloudflare Tunnels",
            ),
            (
                "zone_settings",
                "zones",
                "settings",
                "settings",
                true,
                3,
                "zone setting",
                "zone settings",
            ),
        ]
        .into_iter()
        .map(
            |(product, scope, kind, path, zoned, weight, one, many)| Endpoint {
                product: product.into(),
                scope: scope.into(),
                kind: kind.into(),
                path,
                zoned,
                weight,
                descriptions: [
                    format!("List {many}").into(),
                    format!("Get a {one}").into(),
                    format!("Create a {one}").into(),
                    format!("Update a {one}").into(),
                    format!("Delete a {one}").into(),
                ],
            },
        )
        .collect();
        let tenants = (0..100)
            .map(|a| {
                let company = format!("ex{a:02}.io");
                let zones = (0..1 + rng.below(if a == 0 { 20 } else { 5 }))
                    .map(|_| rng.hex(20))
                    .collect();
                let people = if a == 0 { 40 } else { 2 + rng.below(11) };
                let principals = (0..people)
                    .map(|p| {
                        let email = format!(
                            "{}.{}{p}@{company}",
                            rng.pick(&FIRST_NAMES),
                            rng.pick(&LAST_NAMES)
                        );
                        let ip = if rng.percent(20) {
                            IpAddr::V6(Ipv6Addr::new(
                                0x2001,
                                0x0db8,
                                rng.next_u64() as u16,
                                rng.next_u64() as u16,
                                0,
                                0,
                                0,
                                rng.next_u64() as u16,
                            ))
                        } else {
                            IpAddr::V4(Ipv4Addr::from(rng.next_u64() as u32))
                        };
                        let token = |rng: &mut Rng| Token {
                            id: Some(rng.hex(16)),
                            name: Some((*rng.pick(&TOKEN_NAMES)).to_owned()),
                        };
                        let (context, kind, email, token, user_agent) = match rng.below(20) {
                            0..=3 => (
                                ActorContext::Dash,
                                ActorType::User,
                                Some(email),
                                Token::default(),
                                USER_AGENTS[rng.below(3)],
                            ),
                            4..=8 => {
                                let t = token(&mut rng);
                                (
                                    ActorContext::ApiToken,
                                    ActorType::User,
                                    Some(email),
                                    t,
                                    USER_AGENTS[3 + rng.below(5)],
                                )
                            }
                            9..=12 => {
                                let t = token(&mut rng);
                                (
                                    ActorContext::ApiToken,
                                    ActorType::Account,
                                    None,
                                    t,
                                    USER_AGENTS[3 + rng.below(5)],
                                )
                            }
                            _ => (
                                ActorContext::ApiKey,
                                ActorType::User,
                                Some(email),
                                Token::default(),
                                USER_AGENTS[3 + rng.below(5)],
                            ),
                        };
                        Principal {
                            context,
                            kind,
                            email,
                            id: rng.hex(16),
                            ip,
                            token,
                            user_agent,
                        }
                    })
                    .collect();
                Tenant {
                    id: rng.hex(20),
                    zones,
                    principals,
                }
            })
            .collect();
        Self { tenants, endpoints }
    }

    /// One record at `time_ms`.
    fn record(&self, rng: &mut Rng, time_ms: i64) -> AuditRecord {
        // Account 0 holds 10% of the traffic; the other 99 share the rest.
        let tenant = if rng.percent(10) {
            &self.tenants[0]
        } else {
            &self.tenants[1 + rng.below(self.tenants.len() - 1)]
        };
        let principal = rng.pick(&tenant.principals);
        let weights: Vec<u32> = self.endpoints.iter().map(|e| e.weight).collect();
        let endpoint = &self.endpoints[rng.weighted(&weights)];
        // list, get, create, put, patch, delete
        let op = rng.weighted(&[35, 30, 10, 7, 10, 8]);
        let (method, description) = match op {
            0 => ("GET", 0),
            1 => ("GET", 1),
            2 => ("POST", 2),
            3 => ("PUT", 3),
            4 => ("PATCH", 3),
            _ => ("DELETE", 4),
        };
        let status: u16 = match (op, rng.below(100)) {
            (_, 99) => 500,
            (0 | 1, 0..=2) => 404,
            (0 | 1, 3..=4) => 403,
            (2, 0..=7) => 400,
            (2, 8..=10) => 409,
            (3 | 4, 0..=5) => 400,
            (3..=5, 6..=9) => 404,
            (2, _) => 201,
            _ => 200,
        };
        let zone = endpoint.zoned.then(|| rng.pick(&tenant.zones).clone());
        let resource_id = (op != 0 && op != 2).then(|| rng.hex(16));
        let mut uri = match &zone {
            Some(z) => format!("/zones/{z}/{}", endpoint.path),
            None => format!("/accounts/{}/{}", tenant.id, endpoint.path),
        };
        if let Some(id) = &resource_id {
            uri.push('/');
            uri.push_str(id);
        }
        if op == 0 && rng.percent(50) {
            uri.push_str(&format!("?page={}&per_page=50", 1 + rng.below(5)));
        }
        let name = format!("{}-{}", endpoint.kind, rng.below(500));
        let (request, response) = match op {
            0 | 1 => (None, None),
            2 | 3 => (
                Some(serde_json::json!({
                    "name": name,
                    "enabled": rng.percent(80),
                    "description": "REDACTED",
                })),
                Some(response_body(rng, status, resource_id.as_deref())),
            ),
            4 => (
                Some(serde_json::json!({"enabled": rng.percent(50)})),
                Some(response_body(rng, status, resource_id.as_deref())),
            ),
            _ => (
                None,
                Some(response_body(rng, status, resource_id.as_deref())),
            ),
        };
        let mut random = [0_u8; 10];
        random[..8].copy_from_slice(&rng.next_u64().to_le_bytes());
        random[8..].copy_from_slice(&rng.next_u64().to_le_bytes()[..2]);
        let id = uuid::Builder::from_unix_timestamp_millis(time_ms as u64, &random).into_uuid();
        AuditRecord {
            id,
            account: Some(Account {
                id: tenant.id.clone(),
                name: None,
            }),
            action: Action {
                // Half the operations have a summary in the API description.
                description: (endpoint.weight as usize + description)
                    .is_multiple_of(2)
                    .then(|| Arc::clone(&endpoint.descriptions[description])),
                result: ActionResult::from_status(status),
                time: Timestamp::from_unix_millis(time_ms),
                kind: action_type(method),
            },
            actor: Actor {
                context: Some(principal.context),
                email: principal.email.clone(),
                id: Some(principal.id.clone()),
                ip_address: Some(principal.ip),
                token: principal.token.clone(),
                kind: Some(principal.kind),
            },
            raw: Raw {
                method: method.to_owned(),
                ray_id: rng.hex(16),
                status_code: status,
                uri,
                user_agent: Some(principal.user_agent.to_owned()),
            },
            resource: Resource {
                id: resource_id,
                product: Some(Arc::clone(&endpoint.product)),
                request: request.map(Into::into),
                response: response.map(Into::into),
                scope: Some(Arc::clone(&endpoint.scope)),
                kind: Some(Arc::clone(&endpoint.kind)),
            },
            zone: zone.map(|id| Zone { id, name: None }),
        }
    }
}

fn action_type(method: &str) -> ActionType {
    match method {
        "POST" => ActionType::Create,
        "PUT" | "PATCH" => ActionType::Update,
        "DELETE" => ActionType::Delete,
        _ => ActionType::View,
    }
}

fn response_body(rng: &mut Rng, status: u16, id: Option<&str>) -> serde_json::Value {
    if status < 400 {
        let id = id.map_or_else(|| rng.hex(16), str::to_owned);
        serde_json::json!({"success": true, "result": {"id": id}})
    } else {
        serde_json::json!({"success": false, "errors": [{"code": 1000 + u32::from(status)}]})
    }
}

/// A deterministic set of `n` records over the 30 days ending at `end_ms`, in time order.
#[derive(Clone)]
struct Dataset {
    world: Arc<World>,
    n: usize,
    seed: u64,
    end_ms: i64,
}

impl Dataset {
    fn iter(&self) -> impl Iterator<Item = AuditRecord> + '_ {
        let span = 30 * DAY_MS;
        let start = self.end_ms - span;
        let step = (span / self.n as i64).max(1);
        let mut rng = Rng(self.seed ^ (self.n as u64).rotate_left(32));
        (0..self.n).map(move |i| {
            let base = start + (i128::from(span) * i as i128 / self.n as i128) as i64;
            let jitter = (rng.next_u64() % step as u64) as i64;
            self.world.record(&mut rng, base + jitter)
        })
    }

    fn records(&self) -> Vec<AuditRecord> {
        self.iter().collect()
    }

    /// Writes the rows as CSV (the 24 columns in table order) and returns facts about them.
    fn write_csv(&self, path: &Path) -> BoxResult<CsvInfo> {
        let file = std::fs::File::create(path)?;
        let mut out = BufWriter::with_capacity(1 << 20, file);
        let mut line = Vec::with_capacity(4096);
        let mut json_bytes = 0_u64;
        let mut per_day: BTreeMap<i64, StoredRecord> = BTreeMap::new();
        for record in self.iter() {
            let row = StoredRecord::from_record(&record)?;
            json_bytes += row.record.len() as u64;
            line.clear();
            csv_row(&mut line, &row);
            out.write_all(&line)?;
            per_day.entry(row.time_ms.div_euclid(DAY_MS)).or_insert(row);
        }
        out.flush()?;
        Ok(CsvInfo {
            bytes: std::fs::metadata(path)?.len(),
            avg_json: json_bytes as f64 / self.n as f64,
            one_per_day: per_day.into_values().collect(),
        })
    }
}

struct CsvInfo {
    bytes: u64,
    avg_json: f64,
    /// One row of each day in the data (their ids altered): inserting them creates every
    /// PostgreSQL partition the data needs.
    one_per_day: Vec<StoredRecord>,
}

fn csv_row(out: &mut Vec<u8>, r: &StoredRecord) {
    fn text(out: &mut Vec<u8>, v: Option<&str>) {
        // NULL is an empty unquoted field; every value is quoted, so "" stays an empty string.
        if let Some(s) = v {
            out.push(b'"');
            for b in s.bytes() {
                if b == b'"' {
                    out.push(b'"');
                }
                out.push(b);
            }
            out.push(b'"');
        }
        out.push(b',');
    }
    fn int(out: &mut Vec<u8>, v: i64) {
        out.extend_from_slice(v.to_string().as_bytes());
        out.push(b',');
    }
    let id = r.id.hyphenated().to_string();
    text(out, Some(&id));
    int(out, r.time_ms);
    text(out, r.account_id.as_deref());
    text(out, r.account_name.as_deref());
    text(out, r.zone_id.as_deref());
    text(out, r.zone_name.as_deref());
    text(out, Some(r.action_type));
    text(out, Some(r.action_result));
    text(out, r.actor_email.as_deref());
    text(out, r.actor_id.as_deref());
    text(out, r.actor_ip_address.as_deref());
    text(out, r.actor_type);
    text(out, r.actor_context);
    text(out, r.actor_token_id.as_deref());
    text(out, r.actor_token_name.as_deref());
    text(out, Some(&r.raw_ray_id));
    text(out, Some(&r.raw_method));
    int(out, i64::from(r.raw_status_code));
    text(out, Some(&r.raw_uri));
    text(out, r.resource_id.as_deref());
    text(out, r.resource_product.as_deref());
    text(out, r.resource_type.as_deref());
    text(out, r.resource_scope.as_deref());
    text(out, Some(&r.record));
    // The last field's comma becomes the line end.
    out.pop();
    out.push(b'\n');
}

// ---------------------------------------------------------------------------------------------
// CPU time from /proc (no unsafe: the workspace forbids it, so no getrusage)

#[derive(Clone, Copy, Debug, Default)]
struct Cpu {
    /// This process: user + system ticks.
    own: u64,
    /// This process's reaped children (the reference tools): user + system ticks.
    children: u64,
    /// The system-time part of `own`.
    own_sys: u64,
    /// The system-time part of `children`.
    children_sys: u64,
    /// Every `postgres` process on this machine, with the children it reaped.
    server: Option<u64>,
}

impl Cpu {
    fn now(server: Option<u32>) -> Self {
        let [utime, stime, cutime, cstime] =
            stat_ticks(Path::new("/proc/self/stat")).unwrap_or_default();
        Self {
            own: utime + stime,
            children: cutime + cstime,
            own_sys: stime,
            children_sys: cstime,
            server: server.and_then(postgres_ticks),
        }
    }

    fn since(self, before: Self) -> Self {
        Self {
            own: self.own.saturating_sub(before.own),
            children: self.children.saturating_sub(before.children),
            own_sys: self.own_sys.saturating_sub(before.own_sys),
            children_sys: self.children_sys.saturating_sub(before.children_sys),
            server: self
                .server
                .zip(before.server)
                .map(|(a, b)| a.saturating_sub(b)),
        }
    }
}

/// utime, stime, cutime, cstime of `/proc/<pid>/stat`, in clock ticks.
fn stat_ticks(path: &Path) -> Option<[u64; 4]> {
    let stat = std::fs::read_to_string(path).ok()?;
    // Fields after the command name (which may hold spaces), from field 3 (state) on.
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let field = |n: usize| fields.get(n - 3)?.parse::<u64>().ok();
    Some([field(14)?, field(15)?, field(16)?, field(17)?])
}

/// CPU ticks of one PostgreSQL server: its postmaster (with the children it reaped: exited
/// backends, autovacuum workers) and its live children. Other servers on the machine (tests
/// start their own) are not counted.
fn postgres_ticks(postmaster: u32) -> Option<u64> {
    let mut total: u64 = stat_ticks(Path::new(&format!("/proc/{postmaster}/stat")))?
        .iter()
        .sum();
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if !name.bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        if parent_pid(&entry.path()) == Some(postmaster)
            && let Some(t) = stat_ticks(&entry.path().join("stat"))
        {
            total += t.iter().sum::<u64>();
        }
    }
    Some(total)
}

/// Field 4 of `/proc/<pid>/stat`.
fn parent_pid(dir: &Path) -> Option<u32> {
    let stat = std::fs::read_to_string(dir.join("stat")).ok()?;
    stat[stat.rfind(')')? + 1..]
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

fn clock_ticks_per_second() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse::<f64>().ok())
        .filter(|t| *t > 0.0)
        .unwrap_or(100.0)
}

// ---------------------------------------------------------------------------------------------
// Runs

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Indexes {
    /// Everything `migrate()` creates.
    All,
    /// The primary key and `audit_logs_account_time`.
    One,
    /// The primary key only.
    None,
}

impl Indexes {
    fn label(self) -> &'static str {
        match self {
            Self::All => "all (migrate)",
            Self::One => "pk+account_time",
            Self::None => "pk only",
        }
    }

    fn keeps(self, index: &str) -> bool {
        match self {
            Self::All => true,
            Self::One => index == MAIN_INDEX,
            Self::None => false,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Tool {
    /// Our pipeline; `variant` names a non-default configuration (experiments).
    Ours {
        writers: usize,
        variant: &'static str,
    },
    Reference,
}

#[derive(Clone, Debug)]
struct Measured {
    backend: Backend,
    indexes: Indexes,
    tool: Tool,
    rows: usize,
    wall: Duration,
    cpu: Cpu,
    /// Bytes on disk after the load (database file, or table + indexes).
    bytes: Option<u64>,
    /// Ours: how much longer `shutdown()` took to return after the last commit.
    shutdown_lag: Option<Duration>,
}

impl Measured {
    fn rate(&self) -> f64 {
        self.rows as f64 / self.wall.as_secs_f64().max(1e-9)
    }

    fn tool_name(&self) -> String {
        match (&self.tool, self.backend) {
            (Tool::Ours { writers, variant }, _) => format!(
                "ours: pipeline, {writers} writer{}{}{variant}",
                if *writers == 1 { "" } else { "s" },
                if variant.is_empty() { "" } else { ", " },
            ),
            (Tool::Reference, Backend::Sqlite) => match SQLITE3_CACHE_KIB.get() {
                Some(kib) => format!("sqlite3 .import, cache {} MiB", kib / 1024),
                None => "sqlite3 .import".to_owned(),
            },
            (Tool::Reference, Backend::Postgres) => "psql \\copy".to_owned(),
        }
    }

    /// Client-side ticks: ours is this process, a reference tool its child process.
    fn client_ticks(&self) -> u64 {
        match self.tool {
            Tool::Ours { .. } => self.cpu.own,
            Tool::Reference => self.cpu.children,
        }
    }

    /// The system-time part of [`client_ticks`](Self::client_ticks).
    fn client_sys_ticks(&self) -> u64 {
        match self.tool {
            Tool::Ours { .. } => self.cpu.own_sys,
            Tool::Reference => self.cpu.children_sys,
        }
    }
}

/// Submits every record through the real pipeline and waits until all are committed.
async fn run_pipeline<S: ChainedStore>(
    store: S,
    records: Vec<AuditRecord>,
    writers: usize,
    batch_size: Option<usize>,
    server_cpu: Option<u32>,
) -> BoxResult<(Duration, Cpu, Duration)> {
    let n = records.len() as u64;
    let mut builder = pipeline::builder(store)
        .queue_capacity(QUEUE_CAPACITY)
        .writers(writers);
    if let Some(batch) = batch_size {
        builder = builder.batch_size(batch);
    }
    let (sink, pipeline) = builder.build().await?;
    // Lanes are per account; keeping the whole queue under one lane's capacity guarantees no
    // lane can overflow, whatever the account mix.
    let high_water = QUEUE_CAPACITY
        .div_ceil(writers)
        .saturating_sub(2 * CHECK_EVERY)
        .max(CHECK_EVERY);
    let before = Cpu::now(server_cpu);
    let started = Instant::now();
    let worker = tokio::spawn(pipeline.run());
    for (i, record) in records.into_iter().enumerate() {
        if i % CHECK_EVERY == 0 {
            while sink.metrics().queue_depth as usize >= high_water {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        }
        sink.submit(record);
    }
    // The clock stops when the last record is committed (`stored` counts committed rows);
    // `shutdown()` returns later, by up to the pipeline's probe interval (see the report).
    let mut committed = None;
    {
        let shutdown = sink.shutdown();
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                () = &mut shutdown => break,
                () = tokio::time::sleep(Duration::from_millis(1)) => {
                    if committed.is_none() && sink.metrics().stored >= n {
                        committed = Some(started.elapsed());
                    }
                }
            }
        }
    }
    worker.await?;
    let until_shutdown = started.elapsed();
    let cpu = Cpu::now(server_cpu).since(before);
    let wall = committed.unwrap_or(until_shutdown);
    let m = sink.metrics();
    if m.dropped != 0 || m.stored != n || m.spooled != 0 {
        return Err(format!(
            "pipeline lost records: {n} submitted, {} stored, {} dropped, {} spooled ({m:?})",
            m.stored, m.dropped, m.spooled
        )
        .into());
    }
    if m.failed_writes != 0 {
        eprintln!(
            "  warning: {} batch writes failed and were retried",
            m.failed_writes
        );
    }
    Ok((wall, cpu, until_shutdown.saturating_sub(wall)))
}

/// Runs an external loader and times it; its CPU is this process's reaped-children time.
fn run_tool(mut command: Command, server_cpu: Option<u32>) -> BoxResult<(Duration, Cpu, String)> {
    let before = Cpu::now(server_cpu);
    let started = Instant::now();
    let output = command.output()?;
    let wall = started.elapsed();
    let cpu = Cpu::now(server_cpu).since(before);
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr);
    if !output.status.success() || !stderr.trim().is_empty() {
        let stderr: String = stderr.chars().take(2000).collect();
        return Err(format!("{command:?} failed ({}): {stderr}", output.status).into());
    }
    Ok((wall, cpu, stdout))
}

fn have(program: &str) -> bool {
    Command::new("which")
        .arg(program)
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

// --- SQLite

/// The SQLite configurations `--experiments` tries, as changes to the store's defaults
/// (`SqliteStore::open`: 8 KiB pages, a 16 MiB page cache; the pipeline: batches of 10,000).
const SQLITE_EXPERIMENTS: [SqliteTuning; 7] = [
    SqliteTuning {
        cache_kib: None,
        batch_size: None,
        page_size: None,
        label: "",
    },
    SqliteTuning {
        cache_kib: Some(2_000),
        batch_size: Some(1_000),
        page_size: Some(4_096),
        label: "old defaults: 4 KiB pages, 2 MB cache, batch 1k",
    },
    SqliteTuning {
        cache_kib: None,
        batch_size: Some(1_000),
        page_size: None,
        label: "batch 1k",
    },
    SqliteTuning {
        cache_kib: None,
        batch_size: None,
        page_size: Some(4_096),
        label: "4 KiB pages",
    },
    SqliteTuning {
        cache_kib: Some(131_072),
        batch_size: None,
        page_size: None,
        label: "cache 128 MiB",
    },
    SqliteTuning {
        cache_kib: Some(32_768),
        batch_size: None,
        page_size: None,
        label: "cache 32 MiB (the default before 2026-11-26)",
    },
    SqliteTuning {
        cache_kib: Some(8_192),
        batch_size: None,
        page_size: None,
        label: "cache 8 MiB",
    },
];

/// A change to the store's SQLite settings, to try it before making it in the store.
#[derive(Clone, Copy, Debug, Default)]
struct SqliteTuning {
    /// `PRAGMA cache_size` in KiB (the store sets 16,384).
    cache_kib: Option<u32>,
    /// The pipeline's batch size (its default is 10,000).
    batch_size: Option<usize>,
    /// `PRAGMA page_size` for the new file (the store sets 8,192): rows of a `WITHOUT ROWID`
    /// table longer than about a quarter page spill into overflow pages.
    page_size: Option<u32>,
    label: &'static str,
}

impl SqliteTuning {
    fn is_default(&self) -> bool {
        self.cache_kib.is_none() && self.page_size.is_none()
    }
}

async fn sqlite_fresh(path: &Path, indexes: Indexes) -> BoxResult<SqliteStore> {
    sqlite_fresh_tuned(path, indexes, SqliteTuning::default()).await
}

async fn sqlite_fresh_tuned(
    path: &Path,
    indexes: Indexes,
    tuning: SqliteTuning,
) -> BoxResult<SqliteStore> {
    for suffix in ["", "-wal", "-shm", "-journal"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
    }
    let store = if tuning.is_default() {
        SqliteStore::open(path).await?
    } else {
        // `SqliteStore::open`'s settings (its `with_options` is private: keep these in step),
        // with the tuning's changes.
        let page_size = tuning.page_size.unwrap_or(8_192);
        let cache_kib = tuning.cache_kib.unwrap_or(16_384);
        let options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .pragma("page_size", page_size.to_string())
            .pragma("cache_size", format!("-{cache_kib}"))
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(Duration::from_secs(10));
        // One connection, as the store's writer: one page cache, warmed by every insert.
        let pool = SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(options)
            .await?;
        SqliteStore::new(pool)
    };
    store.migrate().await?;
    drop_sqlite_indexes(store.pool(), indexes).await?;
    Ok(store)
}

async fn drop_sqlite_indexes(pool: &SqlitePool, indexes: Indexes) -> BoxResult<()> {
    let names: Vec<String> = sqlx::query_scalar(
        "SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'audit_logs' \
         AND sql IS NOT NULL",
    )
    .fetch_all(pool)
    .await?;
    for name in names.iter().filter(|n| !indexes.keeps(n)) {
        sqlx::query(AssertSqlSafe(format!("DROP INDEX \"{name}\"")))
            .execute(pool)
            .await?;
    }
    Ok(())
}

fn sqlite_bytes(path: &Path) -> u64 {
    ["", "-wal"]
        .iter()
        .filter_map(|s| std::fs::metadata(format!("{}{s}", path.display())).ok())
        .map(|m| m.len())
        .sum()
}

async fn sqlite_count(path: &Path) -> BoxResult<u64> {
    let store = SqliteStore::open(path).await?;
    let n = store.count().await?;
    store.pool().close().await;
    Ok(n)
}

async fn sqlite_ours(dir: &Path, data: &Dataset, indexes: Indexes) -> BoxResult<Measured> {
    sqlite_ours_tuned(dir, data, indexes, SqliteTuning::default()).await
}

async fn sqlite_ours_tuned(
    dir: &Path,
    data: &Dataset,
    indexes: Indexes,
    tuning: SqliteTuning,
) -> BoxResult<Measured> {
    let path = dir.join("ours.db");
    let store = sqlite_fresh_tuned(&path, indexes, tuning).await?;
    let records = data.records();
    let (wall, cpu, lag) = run_pipeline(store.clone(), records, 1, tuning.batch_size, None).await?;
    store.pool().close().await;
    let bytes = sqlite_bytes(&path);
    check_count("sqlite ours", sqlite_count(&path).await?, data.n)?;
    remove_sqlite(&path);
    Ok(Measured {
        backend: Backend::Sqlite,
        indexes,
        tool: Tool::Ours {
            writers: 1,
            variant: tuning.label,
        },
        rows: data.n,
        wall,
        cpu,
        bytes: Some(bytes),
        shutdown_lag: Some(lag),
    })
}

async fn sqlite_reference(
    dir: &Path,
    csv: &Path,
    rows: usize,
    indexes: Indexes,
) -> BoxResult<Measured> {
    let path = dir.join("reference.db");
    let store = sqlite_fresh(&path, indexes).await?;
    // `.import` needs exactly the CSV's 24 columns: drop the three chain columns (always NULL
    // in an unchained store, as in ours, whose partial chain index then holds no entry).
    for sql in [
        "DROP INDEX IF EXISTS audit_logs_chain",
        "ALTER TABLE audit_logs DROP COLUMN chain_seal",
        "ALTER TABLE audit_logs DROP COLUMN chain_hash",
        "ALTER TABLE audit_logs DROP COLUMN chain_seq",
    ] {
        sqlx::query(sql).execute(store.pool()).await?;
    }
    store.pool().close().await;
    let mut command = Command::new("sqlite3");
    command.arg(&path);
    if let Some(kib) = SQLITE3_CACHE_KIB.get() {
        command
            .arg("-cmd")
            .arg(format!("PRAGMA cache_size = -{kib}"));
    }
    command
        .arg("-cmd")
        .arg(".mode csv")
        .arg(format!(".import --skip 0 \"{}\" audit_logs", csv.display()));
    let (wall, cpu, _) = run_tool(command, None)?;
    let bytes = sqlite_bytes(&path);
    check_count("sqlite3 .import", sqlite_count(&path).await?, rows)?;
    remove_sqlite(&path);
    Ok(Measured {
        backend: Backend::Sqlite,
        indexes,
        tool: Tool::Reference,
        rows,
        wall,
        cpu,
        bytes: Some(bytes),
        shutdown_lag: None,
    })
}

fn remove_sqlite(path: &Path) {
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
    }
}

fn check_count(what: &str, got: u64, want: usize) -> BoxResult<()> {
    if got == want as u64 {
        Ok(())
    } else {
        Err(format!("{what}: {got} rows in the table, expected {want}").into())
    }
}

// --- PostgreSQL

struct Postgres {
    url: String,
    /// The server's postmaster, when its processes are visible in /proc.
    local: Option<u32>,
    /// Holds an advisory lock for the whole run, so two benchmarks (say, one under
    /// `cargo test --benches`) never drop each other's schema.
    _lock: sqlx::PgConnection,
}

impl Postgres {
    async fn admin(&self) -> BoxResult<PgPool> {
        Ok(PgPoolOptions::new()
            .max_connections(1)
            .connect(&self.url)
            .await?)
    }

    /// Drops and recreates the benchmark schema; returns a store whose pool lives in it,
    /// migrated and with the chosen indexes.
    async fn fresh(&self, indexes: Indexes) -> BoxResult<PostgresStore> {
        let admin = self.admin().await?;
        admin
            .execute(AssertSqlSafe(format!(
                "DROP SCHEMA IF EXISTS {SCHEMA} CASCADE; CREATE SCHEMA {SCHEMA}"
            )))
            .await?;
        admin.close().await;
        let options = PgConnectOptions::from_str(&self.url)?.options([("search_path", SCHEMA)]);
        let pool = PgPoolOptions::new()
            .max_connections(10)
            .connect_with(options)
            .await?;
        let store = PostgresStore::new(pool);
        store.migrate().await?;
        let names: Vec<String> = sqlx::query_scalar(
            "SELECT c.relname::text FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid \
             WHERE i.indrelid = to_regclass('audit_logs') AND NOT i.indisprimary",
        )
        .fetch_all(store.pool())
        .await?;
        for name in names.iter().filter(|n| !indexes.keeps(n)) {
            sqlx::query(AssertSqlSafe(format!("DROP INDEX \"{name}\"")))
                .execute(store.pool())
                .await?;
        }
        Ok(store)
    }

    /// Flushes the server's dirty buffers so every timed run starts alike, then lets the
    /// backends of closed connections exit (their CPU would otherwise blur the server's).
    async fn checkpoint(&self, pool: &PgPool) {
        if let Err(e) = sqlx::query("CHECKPOINT").execute(pool).await {
            eprintln!("  note: CHECKPOINT failed ({e}); continuing");
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }

    async fn table_bytes(&self, pool: &PgPool) -> BoxResult<Option<u64>> {
        let bytes: Option<i64> = sqlx::query_scalar(
            "SELECT sum(pg_total_relation_size(inhrelid))::int8 FROM pg_inherits \
             WHERE inhparent = to_regclass('audit_logs')",
        )
        .fetch_one(pool)
        .await?;
        Ok(bytes.and_then(|b| u64::try_from(b).ok()))
    }

    async fn ours(&self, data: &Dataset, indexes: Indexes, writers: usize) -> BoxResult<Measured> {
        self.ours_batched(data, indexes, writers, None, "").await
    }

    async fn ours_batched(
        &self,
        data: &Dataset,
        indexes: Indexes,
        writers: usize,
        batch_size: Option<usize>,
        variant: &'static str,
    ) -> BoxResult<Measured> {
        let store = self.fresh(indexes).await?;
        self.checkpoint(store.pool()).await;
        let records = data.records();
        let (wall, cpu, lag) =
            run_pipeline(store.clone(), records, writers, batch_size, self.local).await?;
        check_count("postgres ours", store.count().await?, data.n)?;
        let bytes = self.table_bytes(store.pool()).await?;
        store.pool().close().await;
        Ok(Measured {
            backend: Backend::Postgres,
            indexes,
            tool: Tool::Ours { writers, variant },
            rows: data.n,
            wall,
            cpu,
            bytes,
            shutdown_lag: Some(lag),
        })
    }

    async fn reference(
        &self,
        csv: &Path,
        info: &CsvInfo,
        rows: usize,
        indexes: Indexes,
    ) -> BoxResult<Measured> {
        let store = self.fresh(indexes).await?;
        // `\copy` into the partitioned parent needs the month partitions: let the store create
        // them (one row per day of the data), then remove those rows.
        let seeds: Vec<StoredRecord> = info
            .one_per_day
            .iter()
            .enumerate()
            .map(|(i, r)| {
                let mut r = r.clone();
                r.id = Uuid::from_u128(i as u128 + 1);
                r
            })
            .collect();
        store.insert(&seeds).await?;
        sqlx::query("DELETE FROM audit_logs")
            .execute(store.pool())
            .await?;
        self.checkpoint(store.pool()).await;
        let mut command = Command::new("psql");
        command
            .arg(&self.url)
            .arg("-X")
            .arg("-q")
            .arg("-v")
            .arg("ON_ERROR_STOP=1")
            .arg("-c")
            .arg(format!(
                "\\copy audit_logs({}) FROM '{}' CSV",
                COLUMNS.join(", "),
                csv.display()
            ))
            .env("PGOPTIONS", format!("-c search_path={SCHEMA}"));
        let (wall, cpu, _) = run_tool(command, self.local)?;
        check_count("psql \\copy", store.count().await?, rows)?;
        let bytes = self.table_bytes(store.pool()).await?;
        store.pool().close().await;
        Ok(Measured {
            backend: Backend::Postgres,
            indexes,
            tool: Tool::Reference,
            rows,
            wall,
            cpu,
            bytes,
            shutdown_lag: None,
        })
    }

    async fn drop_schema(&self) {
        if let Ok(admin) = self.admin().await {
            let _ = admin
                .execute(AssertSqlSafe(format!(
                    "DROP SCHEMA IF EXISTS {SCHEMA} CASCADE"
                )))
                .await;
            admin.close().await;
        }
    }
}

async fn connect_postgres() -> Result<Postgres, String> {
    let url = std::env::var("AUDIT_BENCH_POSTGRES_URL")
        .or_else(|_| std::env::var("AUDIT_TEST_POSTGRES_URL"))
        .unwrap_or_else(|_| DEFAULT_PG_URL.to_owned());
    let pool = tokio::time::timeout(
        Duration::from_secs(5),
        PgPoolOptions::new().max_connections(1).connect(&url),
    )
    .await
    .map_err(|_| format!("PostgreSQL at {url} did not answer within 5 s"))?
    .map_err(|e| format!("PostgreSQL at {url} is unreachable: {e}"))?;
    // The server is local when our backend is a process here; its parent is the postmaster.
    let backend: i32 = sqlx::query_scalar("SELECT pg_backend_pid()")
        .fetch_one(&pool)
        .await
        .map_err(|e| format!("PostgreSQL at {url}: {e}"))?;
    pool.close().await;
    let local = parent_pid(Path::new(&format!("/proc/{backend}")))
        .filter(|pm| postgres_ticks(*pm).is_some())
        .filter(|pm| {
            std::fs::read_to_string(format!("/proc/{pm}/comm"))
                .is_ok_and(|c| c.trim_end() == "postgres")
        });
    let mut lock = sqlx::PgConnection::connect(&url)
        .await
        .map_err(|e| format!("PostgreSQL at {url}: {e}"))?;
    let locked: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
        .bind(LOCK_KEY)
        .fetch_one(&mut lock)
        .await
        .map_err(|e| format!("PostgreSQL at {url}: {e}"))?;
    if !locked {
        println!("  another ingest benchmark is using schema {SCHEMA}; waiting for it to finish");
        sqlx::query("SELECT pg_advisory_lock($1)")
            .bind(LOCK_KEY)
            .execute(&mut lock)
            .await
            .map_err(|e| format!("PostgreSQL at {url}: {e}"))?;
    }
    Ok(Postgres {
        url,
        local,
        _lock: lock,
    })
}

// ---------------------------------------------------------------------------------------------
// The benchmark

struct Env {
    ticks: f64,
    sqlite3: bool,
    psql: bool,
    postgres: Option<Postgres>,
}

async fn run(args: Args) -> BoxResult<()> {
    let mode = if args.smoke {
        "smoke (cargo test)"
    } else if args.quick {
        "quick"
    } else {
        "full"
    };
    println!("audit-store ingest benchmark, {mode} mode");
    println!(
        "  machine: {} CPUs, load average {}",
        std::thread::available_parallelism().map_or(0, usize::from),
        std::fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" ")
    );
    let mut env = Env {
        ticks: clock_ticks_per_second(),
        sqlite3: have("sqlite3"),
        psql: have("psql"),
        postgres: None,
    };
    if args.backends.contains(&Backend::Sqlite) && !env.sqlite3 {
        println!(
            "  !! the sqlite3 command-line shell is not installed: the SQLite reference \
             (.import) is skipped. Install it with `apt-get install -y sqlite3`."
        );
    }
    if env.sqlite3 {
        let v = Command::new("sqlite3").arg("--version").output();
        if let Ok(v) = v {
            let v = String::from_utf8_lossy(&v.stdout);
            println!(
                "  sqlite3 shell {}",
                v.split_whitespace().next().unwrap_or("?")
            );
        }
    }
    if args.backends.contains(&Backend::Postgres) {
        match connect_postgres().await {
            Ok(pg) => {
                println!(
                    "  PostgreSQL at {} (schema {SCHEMA}); server CPU {}",
                    pg.url,
                    if pg.local.is_some() {
                        "read from /proc"
                    } else {
                        "not visible (remote server)"
                    }
                );
                if !env.psql {
                    println!(
                        "  !! psql is not installed: the PostgreSQL reference (\\copy) is \
                         skipped. Install it with `apt-get install -y postgresql-client`."
                    );
                }
                env.postgres = Some(pg);
            }
            Err(e) if args.postgres_required && !args.smoke => return Err(e.into()),
            Err(e) => println!("  !! {e}: PostgreSQL runs are skipped"),
        }
    }

    let tmp = tempfile::Builder::new().prefix("audit-ingest-").tempdir()?;
    let world = Arc::new(World::new(args.seed));
    let end_ms = i64::try_from(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_millis(),
    )?;
    let mut results: Vec<Measured> = Vec::new();
    let mut notes: Vec<String> = Vec::new();

    // (a)–(c): the full comparison, all indexes.
    let data = Dataset {
        world: Arc::clone(&world),
        n: args.rows,
        seed: args.seed,
        end_ms,
    };
    let csv = tmp.path().join("rows.csv");
    let started = Instant::now();
    let info = data.write_csv(&csv)?;
    println!(
        "  data: {} records, average record JSON {:.0} bytes, CSV {:.1} MB (written in {:.1} s)",
        data.n,
        info.avg_json,
        info.bytes as f64 / 1e6,
        started.elapsed().as_secs_f64()
    );
    println!();

    let mut best_writers = args.pg_writers[0];
    for backend in args.backends.clone() {
        match backend {
            Backend::Sqlite => {
                section(&format!("SQLite, {} rows, all indexes", data.n));
                results.push(report(
                    sqlite_ours(tmp.path(), &data, Indexes::All).await?,
                    &env,
                ));
                if env.sqlite3 {
                    results.push(report(
                        sqlite_reference(tmp.path(), &csv, data.n, Indexes::All).await?,
                        &env,
                    ));
                }
            }
            Backend::Postgres => {
                let Some(pg) = &env.postgres else { continue };
                section(&format!("PostgreSQL, {} rows, all indexes", data.n));
                let mut best: Option<(f64, usize)> = None;
                for &writers in &args.pg_writers {
                    let m = report(pg.ours(&data, Indexes::All, writers).await?, &env);
                    if best.is_none_or(|(rate, _)| m.rate() > rate) {
                        best = Some((m.rate(), writers));
                    }
                    results.push(m);
                }
                if let Some((_, w)) = best {
                    best_writers = w;
                }
                if env.psql {
                    results.push(report(
                        pg.reference(&csv, &info, data.n, Indexes::All).await?,
                        &env,
                    ));
                }
            }
        }
    }

    // (d): what the indexes cost, on a smaller set.
    let mut index_results: Vec<Measured> = Vec::new();
    let small = Dataset {
        n: args.index_rows,
        ..data.clone()
    };
    let small_csv = tmp.path().join("rows-small.csv");
    let small_info = if small.n == data.n || !(args.index_cost || args.experiments) {
        None
    } else {
        Some(small.write_csv(&small_csv)?)
    };
    let (csv_path, csv_info) = match &small_info {
        Some(i) => (small_csv.as_path(), i),
        None => (csv.as_path(), &info),
    };
    if args.index_cost {
        for backend in args.backends.clone() {
            if backend == Backend::Postgres && env.postgres.is_none() {
                continue;
            }
            section(&format!(
                "{}: index cost, {} rows",
                if backend == Backend::Sqlite {
                    "SQLite"
                } else {
                    "PostgreSQL"
                },
                small.n
            ));
            for indexes in [Indexes::All, Indexes::One, Indexes::None] {
                match backend {
                    Backend::Sqlite => {
                        index_results.push(report(
                            sqlite_ours(tmp.path(), &small, indexes).await?,
                            &env,
                        ));
                        if env.sqlite3 {
                            index_results.push(report(
                                sqlite_reference(tmp.path(), csv_path, small.n, indexes).await?,
                                &env,
                            ));
                        }
                    }
                    Backend::Postgres => {
                        let Some(pg) = &env.postgres else { continue };
                        index_results
                            .push(report(pg.ours(&small, indexes, best_writers).await?, &env));
                        if env.psql {
                            index_results.push(report(
                                pg.reference(csv_path, csv_info, small.n, indexes).await?,
                                &env,
                            ));
                        }
                    }
                }
            }
        }
    }

    // Configurations the store does not use today, through the same pipeline.
    let mut experiment_results: Vec<Measured> = Vec::new();
    if args.experiments {
        for backend in args.backends.clone() {
            match backend {
                Backend::Sqlite => {
                    section(&format!(
                        "SQLite: experiments, {} rows, all indexes",
                        small.n
                    ));
                    if env.sqlite3 {
                        experiment_results.push(report(
                            sqlite_reference(tmp.path(), csv_path, small.n, Indexes::All).await?,
                            &env,
                        ));
                    }
                    for tuning in SQLITE_EXPERIMENTS {
                        experiment_results.push(report(
                            sqlite_ours_tuned(tmp.path(), &small, Indexes::All, tuning).await?,
                            &env,
                        ));
                    }
                }
                Backend::Postgres => {
                    let Some(pg) = &env.postgres else { continue };
                    section(&format!(
                        "PostgreSQL: experiments, {} rows, all indexes",
                        small.n
                    ));
                    if env.psql {
                        experiment_results.push(report(
                            pg.reference(csv_path, csv_info, small.n, Indexes::All)
                                .await?,
                            &env,
                        ));
                    }
                    experiment_results.push(report(
                        pg.ours(&small, Indexes::All, best_writers).await?,
                        &env,
                    ));
                    experiment_results.push(report(
                        pg.ours_batched(
                            &small,
                            Indexes::All,
                            best_writers,
                            Some(1_000),
                            "batch 1k",
                        )
                        .await?,
                        &env,
                    ));
                }
            }
        }
    }
    let _ = std::fs::remove_file(&small_csv);

    if args.breakdown {
        breakdown(&args, &env, tmp.path(), &world, end_ms, best_writers).await?;
    }

    if let Some(pg) = &env.postgres {
        pg.drop_schema().await;
    }

    println!();
    section("Results");
    print_table(&results, &env);
    if !index_results.is_empty() {
        println!();
        section("Index cost");
        print_table(&index_results, &env);
        print_index_summary(&index_results);
    }
    if !experiment_results.is_empty() {
        println!();
        section("Experiments (not what the store does today)");
        print_table(&experiment_results, &env);
    }
    println!();
    section("Goals");
    if args.smoke || args.quick || args.rows < 1_000_000 {
        println!(
            "  (indicative only: the goals are stated for 1M rows; run without --quick for them)"
        );
    }
    goals(&results, &mut notes);
    for n in &notes {
        println!("  {n}");
    }
    println!();
    println!("Fairness notes:");
    println!(
        "  - both tools load the same rows into a table built by the store's migrate(), \
         same indexes, fresh each run"
    );
    println!(
        "  - sqlite3 .import stores id as 36-char text (CSV cannot carry a BLOB) and '' for \
         NULL; ours stores a 16-byte BLOB and NULL"
    );
    println!(
        "  - PostgreSQL partitions for \\copy are created before its clock starts (one row per \
         day inserted through the store, then deleted); ours creates them inside its run"
    );
    println!(
        "  - CPU: ours = this process (SQLite is embedded, so it includes SQLite); reference = \
         the tool's process; server = the PostgreSQL server's postmaster and its children \
         (checkpointer and walwriter included, and any other client's load on that server)"
    );
    println!(
        "  - ours is timed until its last commit; shutdown() returns later (see the per-run \
         lines), which is not counted"
    );
    Ok(())
}

fn section(title: &str) {
    println!("== {title}");
}

fn report(m: Measured, env: &Env) -> Measured {
    let per_row = |ticks: u64| ticks as f64 * 1e6 / env.ticks / m.rows as f64;
    let server = m
        .cpu
        .server
        .map(|t| format!(", server {:.1} µs/row", per_row(t)))
        .unwrap_or_default();
    println!(
        "  {:<44} {:>9} rows in {:>7.2} s = {:>9.0} rows/s; cpu {:.1} µs/row{server}{lag}",
        m.tool_name(),
        m.rows,
        m.wall.as_secs_f64(),
        m.rate(),
        per_row(m.client_ticks()),
        lag = m
            .shutdown_lag
            .map(|l| format!(
                "; shutdown() returned {:.0} ms after the last commit",
                l.as_secs_f64() * 1e3
            ))
            .unwrap_or_default(),
    );
    m
}

fn reference_for<'a>(results: &'a [Measured], m: &Measured) -> Option<&'a Measured> {
    results.iter().find(|r| {
        r.tool == Tool::Reference
            && r.backend == m.backend
            && r.indexes == m.indexes
            && r.rows == m.rows
    })
}

fn print_table(results: &[Measured], env: &Env) {
    println!(
        "{:<9} {:<16} {:<44} {:>8} {:>8} {:>8} {:>8} {:>10} {:>5} {:>10} {:>10} {:>9}",
        "backend",
        "indexes",
        "tool",
        "rows",
        "seconds",
        "rows/s",
        "ours/ref",
        "cpu µs/row",
        "sys%",
        "srv µs/row",
        "tot µs/row",
        "bytes/row"
    );
    for m in results {
        let per_row = |ticks: u64| ticks as f64 * 1e6 / env.ticks / m.rows as f64;
        let ratio = match (&m.tool, reference_for(results, m)) {
            (Tool::Ours { .. }, Some(r)) => format!("{:.2}x", m.rate() / r.rate()),
            _ => "-".to_owned(),
        };
        let client = per_row(m.client_ticks());
        let (server, total) = match m.cpu.server {
            Some(s) => (
                format!("{:.1}", per_row(s)),
                format!("{:.1}", client + per_row(s)),
            ),
            None => ("-".to_owned(), format!("{client:.1}")),
        };
        println!(
            "{:<9} {:<16} {:<44} {:>8} {:>8.2} {:>8.0} {:>8} {:>10.1} {:>5.0} {:>10} {:>10} {:>9}",
            m.backend.name(),
            m.indexes.label(),
            m.tool_name(),
            m.rows,
            m.wall.as_secs_f64(),
            m.rate(),
            ratio,
            client,
            100.0 * m.client_sys_ticks() as f64 / m.client_ticks().max(1) as f64,
            server,
            total,
            m.bytes.map_or_else(
                || "-".to_owned(),
                |b| format!("{:.0}", b as f64 / m.rows as f64)
            ),
        );
    }
}

fn print_index_summary(results: &[Measured]) {
    println!("rows/s with all indexes vs without secondary indexes (pk only):");
    for backend in [Backend::Sqlite, Backend::Postgres] {
        for reference in [false, true] {
            let find = |indexes: Indexes| {
                results.iter().find(|m| {
                    m.backend == backend
                        && m.indexes == indexes
                        && matches!(m.tool, Tool::Reference) == reference
                })
            };
            if let (Some(all), Some(one), Some(none)) =
                (find(Indexes::All), find(Indexes::One), find(Indexes::None))
            {
                println!(
                    "  {:<9} {:<44} pk only {:>8.0} rows/s, +account_time {:>8.0} ({:.0}%), \
                     all {:>8.0} ({:.0}%): the secondary indexes cost {:.0}% of throughput",
                    backend.name(),
                    all.tool_name(),
                    none.rate(),
                    one.rate(),
                    100.0 * one.rate() / none.rate(),
                    all.rate(),
                    100.0 * all.rate() / none.rate(),
                    100.0 * (1.0 - all.rate() / none.rate()),
                );
            }
        }
    }
}

fn goals(results: &[Measured], notes: &mut Vec<String>) {
    let best = |backend: Backend| {
        results
            .iter()
            .filter(|m| m.backend == backend && matches!(m.tool, Tool::Ours { .. }))
            .max_by(|a, b| a.rate().total_cmp(&b.rate()))
    };
    for (backend, goal, reference) in [
        (Backend::Sqlite, 1.0, "sqlite3 .import"),
        (Backend::Postgres, 0.8, "psql \\copy"),
    ] {
        let Some(ours) = best(backend) else { continue };
        match reference_for(results, ours) {
            Some(r) => {
                let ratio = ours.rate() / r.rate();
                notes.push(format!(
                    "{:<9} ours {:.0} rows/s ({}) vs {} {:.0} rows/s = {:.2}x, goal ≥ {goal:.1}x: {}",
                    backend.name(),
                    ours.rate(),
                    ours.tool_name(),
                    r.tool_name(),
                    r.rate(),
                    ratio,
                    if ratio >= goal { "MET" } else { "MISSED" }
                ));
            }
            None => notes.push(format!(
                "{:<9} ours {:.0} rows/s; no {reference} run to compare with",
                backend.name(),
                ours.rate()
            )),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Breakdown: where the time goes, stage by stage

async fn breakdown(
    args: &Args,
    env: &Env,
    dir: &Path,
    world: &Arc<World>,
    end_ms: i64,
    pg_writers: usize,
) -> BoxResult<()> {
    let data = Dataset {
        world: Arc::clone(world),
        n: args.index_rows,
        seed: args.seed,
        end_ms,
    };
    section(&format!("Breakdown, {} rows, all indexes", data.n));
    let per_row = |ticks: u64, n: usize| ticks as f64 * 1e6 / env.ticks / n as f64;

    let before = Cpu::now(None);
    let started = Instant::now();
    let records = data.records();
    let generated = started.elapsed();
    let cpu_gen = Cpu::now(None).since(before);
    println!(
        "  generate records (not timed in runs): {:.2} s, {:.2} µs/row cpu",
        generated.as_secs_f64(),
        per_row(cpu_gen.own, data.n)
    );

    let before = Cpu::now(None);
    let started = Instant::now();
    let rows: Vec<StoredRecord> = records
        .iter()
        .map(StoredRecord::from_record)
        .collect::<Result<_, _>>()?;
    let flattened = started.elapsed();
    let cpu_flat = Cpu::now(None).since(before);
    println!(
        "  StoredRecord::from_record (serde_json + columns): {:.2} s = {:.0} rows/s, {:.2} µs/row cpu",
        flattened.as_secs_f64(),
        data.n as f64 / flattened.as_secs_f64(),
        per_row(cpu_flat.own, data.n)
    );
    drop(records);

    for backend in args.backends.clone() {
        match backend {
            Backend::Sqlite => {
                let path: PathBuf = dir.join("breakdown.db");
                let store = sqlite_fresh(&path, Indexes::All).await?;
                let (wall, cpu) = direct_inserts(&store, &rows, 1).await?;
                println!(
                    "  sqlite   store.insert direct (1000-row batches, 1 task): {:.2} s = {:.0} rows/s, {:.1} µs/row cpu",
                    wall.as_secs_f64(),
                    data.n as f64 / wall.as_secs_f64(),
                    per_row(cpu.own, data.n)
                );
                store.pool().close().await;
                remove_sqlite(&path);
            }
            Backend::Postgres => {
                let Some(pg) = &env.postgres else { continue };
                for tasks in [1, pg_writers] {
                    let store = pg.fresh(Indexes::All).await?;
                    pg.checkpoint(store.pool()).await;
                    let before = Cpu::now(pg.local);
                    let (wall, _) = direct_inserts(&store, &rows, tasks).await?;
                    let cpu = Cpu::now(pg.local).since(before);
                    println!(
                        "  postgres store.insert direct (1000-row batches, {tasks} task{}): {:.2} s = {:.0} rows/s, {:.1} µs/row cpu, server {}",
                        if tasks == 1 { "" } else { "s" },
                        wall.as_secs_f64(),
                        data.n as f64 / wall.as_secs_f64(),
                        per_row(cpu.own, data.n),
                        cpu.server.map_or_else(
                            || "-".to_owned(),
                            |s| format!("{:.1} µs/row", per_row(s, data.n))
                        )
                    );
                    store.pool().close().await;
                    if tasks == pg_writers {
                        break;
                    }
                }
            }
        }
    }
    Ok(())
}

/// Writes pre-flattened rows with `store.insert` in 1000-row batches from `tasks` tasks:
/// the store alone, without the pipeline or serialization.
async fn direct_inserts<S: ChainedStore>(
    store: &S,
    rows: &[StoredRecord],
    tasks: usize,
) -> BoxResult<(Duration, Cpu)> {
    let rows: Arc<[StoredRecord]> = rows.into();
    let before = Cpu::now(None);
    let started = Instant::now();
    let chunks = rows.len().div_ceil(1000);
    let mut set = tokio::task::JoinSet::new();
    for t in 0..tasks {
        let store = store.clone();
        let rows = Arc::clone(&rows);
        set.spawn(async move {
            let mut c = t;
            while c < chunks {
                let end = ((c + 1) * 1000).min(rows.len());
                store.insert(&rows[c * 1000..end]).await?;
                c += tasks;
            }
            Ok::<_, audit_store::StoreError>(())
        });
    }
    while let Some(r) = set.join_next().await {
        r??;
    }
    Ok((started.elapsed(), Cpu::now(None).since(before)))
}
