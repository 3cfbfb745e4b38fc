//! The driver: starts each server, loads it, measures it, stops it, counts its records.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use audit_store::sqlx::{self, Row};
use serde::Serialize;

use crate::flags::Flags;
use crate::ingest::IngestReport;
use crate::load::{self, LoadOutcome, LoadPlan};
use crate::nats::NatsServer;
use crate::stats::{Spread, group, quantile};
use crate::usage::process_usage;
use crate::{BoxError, Kind, ServerReport, Variant, unix_ms};

const HELP: &str = "\
loadbench: whole axum servers under HTTP load, with and without auditing

USAGE: loadbench [OPTIONS]

  --rounds N            rounds; every variant and kind once per round, interleaved [3]
  --seconds S           measured load per server, seconds [10]
  --warmup S            warm-up before measuring, seconds [1]
  --connections N       concurrent keep-alive connections [16]
  --rates LIST          load levels: 'sat' (closed loop, as fast as answered) and/or
                        requests per second, comma-separated [sat]
  --variants LIST       bare,trace,audit-discard,audit-sqlite,audit-postgres,rune,audit-nats
                        [all]
  --kinds LIST          GET,POST [both]
  --postgres-url URL    the PostgreSQL the audit-postgres server writes to; its tables go into
                        a schema of this run, dropped at the end
                        [$AUDIT_TEST_POSTGRES_URL or postgres://postgres@127.0.0.1:5432/test]
  --nats-server PATH    the nats-server the audit-nats variant publishes to (started on a
                        free port, JetStream in a temporary directory)
                        [/usr/sbin/nats-server, else the PATH's]
  --nats-nodes N        audit-nats: 1 server, or a cluster of N on loopback with the stream
                        replicated on every node (3: R3, as in a fleet); NATS CPU is
                        then the nodes' together [1]
  --nats-ingest MODE    audit-nats: 'live' (the ingestor consumes during the load: end-to-end
                        lag) or 'backlog' (it starts once the server exited: its rows/s,
                        against the in-process pipeline fed the same records) [live]
  --ingest-writers N    writers of the ingestor's (and the baseline's) pipeline [3]
  --queue-capacity N    the audit pipeline's queue, records [8192]
  --batch-size N        the audit pipeline's largest transaction, records [4000]
  --spool-budget BYTES  the audit pipeline's spool budget [268435456]
  --backpressure MS     the storing variants hold requests up to MS while the pipeline's
                        queue is three-quarters full (PipelineBuilder::backpressure); 0 is
                        the default mode: never wait, spill the excess to the spool [0]
  --rss-bound MIB       the peak RSS the storing variants must stay under [64]
  --out FILE            every run as a JSON line [target/loadbench/runs.jsonl]
  --smoke               one round of 2 s per server and 0.5 s warm-up at 2,000 req/s
                        (CI; a later --rates overrides the level)

Exits non-zero when any answered request has no stored record, or a request failed.
";

/// The driver's options.
#[derive(Debug)]
struct Options {
    rounds: usize,
    seconds: f64,
    warmup: f64,
    connections: usize,
    rates: Vec<Option<f64>>,
    variants: Vec<Variant>,
    kinds: Vec<Kind>,
    postgres_url: String,
    nats_server: PathBuf,
    nats_nodes: usize,
    backlog: bool,
    ingest_writers: usize,
    queue_capacity: usize,
    batch_size: usize,
    spool_budget: u64,
    backpressure_ms: u64,
    rss_bound_mib: f64,
    out: PathBuf,
}

impl Options {
    fn parse(args: &[String]) -> Result<Option<Self>, BoxError> {
        let mut options = Self {
            rounds: 3,
            seconds: 10.0,
            warmup: 1.0,
            connections: 16,
            rates: vec![None],
            variants: Variant::ALL.to_vec(),
            kinds: vec![Kind::Get, Kind::Post],
            postgres_url: std::env::var("AUDIT_TEST_POSTGRES_URL")
                .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned()),
            nats_server: crate::nats::default_binary(),
            nats_nodes: 1,
            backlog: false,
            ingest_writers: 3,
            queue_capacity: 8192,
            batch_size: 4000,
            spool_budget: 256 << 20,
            backpressure_ms: 0,
            rss_bound_mib: 64.0,
            out: PathBuf::from("target/loadbench/runs.jsonl"),
        };
        let mut flags = Flags::new(args);
        while let Some(flag) = flags.flag() {
            match flag {
                "-h" | "--help" => {
                    print!("{HELP}");
                    return Ok(None);
                }
                "--rounds" => options.rounds = flags.parse(flag)?,
                "--seconds" => options.seconds = flags.parse(flag)?,
                "--warmup" => options.warmup = flags.parse(flag)?,
                "--connections" => options.connections = flags.parse(flag)?,
                "--rates" => options.rates = flags.list(flag, parse_rate)?,
                "--variants" => options.variants = flags.list(flag, Variant::parse)?,
                "--kinds" => options.kinds = flags.list(flag, Kind::parse)?,
                "--postgres-url" => options.postgres_url = flags.value(flag)?.to_owned(),
                "--nats-server" => options.nats_server = PathBuf::from(flags.value(flag)?),
                "--nats-nodes" => {
                    options.nats_nodes = flags.parse(flag)?;
                    if !(1..=5).contains(&options.nats_nodes) {
                        return Err(format!(
                            "invalid --nats-nodes {}: expected 1 to 5",
                            options.nats_nodes
                        )
                        .into());
                    }
                }
                "--nats-ingest" => {
                    options.backlog = match flags.value(flag)? {
                        "live" => false,
                        "backlog" => true,
                        other => {
                            return Err(format!(
                                "invalid --nats-ingest {other:?}: expected live or backlog"
                            )
                            .into());
                        }
                    }
                }
                "--ingest-writers" => options.ingest_writers = flags.parse(flag)?,
                "--queue-capacity" => options.queue_capacity = flags.parse(flag)?,
                "--batch-size" => options.batch_size = flags.parse(flag)?,
                "--spool-budget" => options.spool_budget = flags.parse(flag)?,
                "--backpressure" => options.backpressure_ms = flags.parse(flag)?,
                "--rss-bound" => options.rss_bound_mib = flags.parse(flag)?,
                "--out" => options.out = PathBuf::from(flags.value(flag)?),
                "--smoke" => {
                    options.rounds = 1;
                    options.seconds = 2.0;
                    options.warmup = 0.5;
                    // A level storage absorbs even on a slow CI machine: zero loss is a hard
                    // requirement there. Saturation drops are measured by the full run.
                    options.rates = vec![Some(2000.0)];
                }
                other => return Err(format!("unknown option {other:?}; see --help").into()),
            }
        }
        if options.rounds == 0 || options.connections == 0 || options.seconds <= 0.0 {
            return Err("--rounds, --connections and --seconds must be positive".into());
        }
        Ok(Some(options))
    }
}

/// A load level: `sat` (saturation, `None`) or requests per second.
fn parse_rate(rate: &str) -> Result<Option<f64>, BoxError> {
    match rate {
        "sat" => Ok(None),
        r => r
            .parse()
            .map(Some)
            .map_err(|e| format!("invalid rate {r:?}: {e} (a number or 'sat')").into()),
    }
}

/// One server run, as measured; written as a JSON line.
#[derive(Debug, Default, Serialize)]
struct RunResult {
    round: usize,
    kind: &'static str,
    variant: &'static str,
    /// `None`: saturation (closed loop).
    rate: Option<f64>,
    requests: u64,
    window_s: f64,
    rps: f64,
    p50_us: u32,
    p99_us: u32,
    p999_us: u32,
    /// Server CPU from the window's start to the process's exit (flush included), per request.
    cpu_us_per_request: f64,
    /// The same, counting only the measured window.
    cpu_us_per_request_window: f64,
    peak_rss_kib: u64,
    /// CPU of every `postgres` process on this machine from the window's start to the
    /// server's exit, per request (audit-postgres only; includes other clients' work).
    db_cpu_us_per_request: f64,
    /// audit-nats: CPU of the NATS server from the window's start until the ingestor caught
    /// up, per request.
    nats_cpu_us_per_request: f64,
    /// audit-nats: CPU of the ingestor process per row it committed.
    ingest_cpu_us_per_row: f64,
    /// audit-nats, backlog: the ingestor's committed rows/s (first pull to last commit), and
    /// the in-process pipeline's over the same store and records (first submit to last
    /// commit), with its CPU per row.
    ingest_rows_per_s: f64,
    baseline_rows_per_s: f64,
    baseline_cpu_us_per_row: f64,
    /// audit-nats, live: request start → row committed by the ingestor, ms.
    e2e_lag_p50_ms: u32,
    e2e_lag_p99_ms: u32,
    e2e_lag_max_ms: u32,
    /// audit-nats: from the server's exit until the ingestor had committed every record, ms.
    drain_ms: u64,
    /// audit-nats, backlog: the stream's bytes per record it held (file storage).
    stream_bytes_per_record: f64,
    /// audit-nats, backlog: records per message in the stream.
    stream_records_per_message: f64,
    dead_lettered: u64,
    /// audit-nats: the ingestor's messages handed back for redelivery, and records its
    /// pipeline dropped (a run with any fails).
    ingest_redelivered: u64,
    ingest_dropped: u64,
    errors: u64,
    first_error: Option<String>,
    /// Requests answered `200`, warm-up included.
    answered: u64,
    /// Of those, how many have their record in the database after the server exited.
    stored: u64,
    /// Answered requests without a record (lost).
    missing: u64,
    /// Records in the database that match no answered request (or repeat one).
    extra: u64,
    /// Records committed when the load stopped (the `SIGTERM`), from the server's commit log.
    committed_at_stop: u64,
    /// Records committed per second during the measured window.
    committed_per_s: f64,
    lag_p50_ms: u32,
    lag_p99_ms: u32,
    lag_max_ms: u32,
    shutdown_ms: u64,
    dropped: u64,
    spooled: u64,
    /// Requests held back by backpressure, and those that went on after the longest wait.
    waited: u64,
    waits_timed_out: u64,
    load_avg: String,
}

/// `loadbench [options]`: the benchmark.
pub(crate) fn main(args: &[String]) -> Result<ExitCode, BoxError> {
    let Some(options) = Options::parse(args)? else {
        return Ok(ExitCode::SUCCESS);
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let exe = std::env::current_exe()?;
    let scratch = std::env::temp_dir().join(format!("loadbench-{}", std::process::id()));
    std::fs::create_dir_all(&scratch)?;
    let postgres = if options.variants.iter().any(|v| v.uses_postgres()) {
        Some(runtime.block_on(Postgres::prepare(&options.postgres_url))?)
    } else {
        None
    };
    let nats = if options.variants.contains(&Variant::AuditNats) {
        Some(NatsServer::start(
            &options.nats_server,
            &scratch.join("nats"),
            options.nats_nodes,
        )?)
    } else {
        None
    };
    if let Some(parent) = options.out.parent() {
        std::fs::create_dir_all(parent)?;
    }
    let mut out = std::fs::File::create(&options.out)?;
    let started = Instant::now();
    eprintln!(
        "loadbench: {} rounds x {} kinds x {} variants x {} levels, {} s each (+{} s warm-up), {} connections; load {}",
        options.rounds,
        options.kinds.len(),
        options.variants.len(),
        options.rates.len(),
        options.seconds,
        options.warmup,
        options.connections,
        load_average()
    );
    let bench = Bench {
        options: &options,
        exe: &exe,
        scratch: &scratch,
        postgres: postgres.as_ref(),
        nats: nats.as_ref(),
    };
    let mut results = Vec::new();
    let outcome = bench.run_all(&runtime, &mut out, &mut results);
    if let Some(pg) = &postgres {
        runtime.block_on(pg.drop_schema());
    }
    drop(nats);
    let _ = std::fs::remove_dir_all(&scratch);
    outcome?;

    let report = tables(&options, &results);
    println!("{report}");
    eprintln!(
        "loadbench: done in {:.0} s; load {}; runs in {}",
        started.elapsed().as_secs_f64(),
        load_average(),
        options.out.display()
    );
    Ok(verdict(&results))
}

/// What every run of the benchmark shares.
struct Bench<'a> {
    options: &'a Options,
    exe: &'a Path,
    scratch: &'a Path,
    postgres: Option<&'a Postgres>,
    nats: Option<&'a NatsServer>,
}

impl Bench<'_> {
    /// The PostgreSQL schema of the run.
    fn pg(&self) -> Result<&Postgres, BoxError> {
        self.postgres.ok_or_else(|| "no PostgreSQL prepared".into())
    }

    /// The NATS server's URL.
    fn nats_url(&self) -> Result<&str, BoxError> {
        self.nats
            .map(NatsServer::url)
            .ok_or_else(|| "no NATS server started".into())
    }

    /// Every round, level, kind and variant, one server each: each result is printed, written
    /// to `out` as a JSON line and kept in `results`.
    fn run_all(
        &self,
        runtime: &tokio::runtime::Runtime,
        out: &mut std::fs::File,
        results: &mut Vec<RunResult>,
    ) -> Result<(), BoxError> {
        let options = self.options;
        for round in 0..options.rounds {
            for &rate in &options.rates {
                for &kind in &options.kinds {
                    // Rotated each round, so no variant always runs first or last.
                    let mut order = options.variants.clone();
                    let shift = round % order.len().max(1);
                    order.rotate_left(shift);
                    for variant in order {
                        let run = Run {
                            bench: self,
                            round,
                            kind,
                            variant,
                            rate,
                        };
                        let result = runtime.block_on(run.execute())?;
                        print_progress(&result, variant);
                        use std::io::Write;
                        writeln!(out, "{}", serde_json::to_string(&result)?)?;
                        results.push(result);
                    }
                }
            }
        }
        Ok(())
    }
}

/// One run's line on stderr.
fn print_progress(result: &RunResult, variant: Variant) {
    eprintln!(
        "  round {} {:>4} {:<14} {:>9} req/s  p99 {:>7.2} ms  cpu {:>6.1} µs/req  rss {:>5.1} MiB{}",
        result.round + 1,
        result.kind,
        result.variant,
        group(result.rps, 0),
        f64::from(result.p99_us) / 1000.0,
        result.cpu_us_per_request,
        result.peak_rss_kib as f64 / 1024.0,
        if variant == Variant::AuditNats {
            format!(
                "  stored {}/{} (lost {}), stream lag p99 {} ms, end-to-end p99 {} ms, nats {:.1} µs/req, ingestor {:.1} µs/row, db {:.1} µs/req, ingest {} rows/s (pipeline {})",
                result.stored,
                result.answered,
                result.missing,
                result.lag_p99_ms,
                result.e2e_lag_p99_ms,
                result.nats_cpu_us_per_request,
                result.ingest_cpu_us_per_row,
                result.db_cpu_us_per_request,
                group(result.ingest_rows_per_s, 0),
                group(result.baseline_rows_per_s, 0)
            ) + &if result.stream_bytes_per_record > 0.0 {
                format!(
                    ", stream {:.0} B/record, {:.0} records/message",
                    result.stream_bytes_per_record, result.stream_records_per_message
                )
            } else {
                String::new()
            }
        } else if variant.stores() {
            format!(
                "  stored {}/{} (lost {}), lag p99 {} ms, {} rows/s",
                result.stored,
                result.answered,
                result.missing,
                result.lag_p99_ms,
                group(result.committed_per_s, 0)
            )
        } else {
            String::new()
        }
    );
}

/// Failure when any answered request has no record, or a request failed (each such run
/// printed).
fn verdict(results: &[RunResult]) -> ExitCode {
    let failed: Vec<&RunResult> = results
        .iter()
        .filter(|r| r.missing > 0 || r.extra > 0 || r.errors > 0 || r.ingest_dropped > 0)
        .collect();
    for r in &failed {
        eprintln!(
            "FAILED: round {} {} {}: {} lost, {} unexpected records, {} failed requests, {} dropped by the ingestor {}",
            r.round + 1,
            r.kind,
            r.variant,
            r.missing,
            r.extra,
            r.errors,
            r.ingest_dropped,
            r.first_error.as_deref().unwrap_or("")
        );
    }
    if failed.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// `loadbench load ...`: load a server started by hand (for profiling); print what it did.
pub(crate) fn load_only(args: &[String]) -> Result<ExitCode, BoxError> {
    let mut plan = LoadPlan {
        addr: "127.0.0.1:8080".parse()?,
        kind: Kind::Post,
        connections: 4,
        warmup: Duration::from_secs(1),
        duration: Duration::from_secs(10),
        rate: None,
    };
    let mut flags = Flags::new(args);
    while let Some(flag) = flags.flag() {
        match flag {
            "--addr" => plan.addr = flags.parse(flag)?,
            "--kind" => plan.kind = Kind::parse(flags.value(flag)?)?,
            "--seconds" => plan.duration = Duration::from_secs_f64(flags.parse(flag)?),
            "--warmup" => plan.warmup = Duration::from_secs_f64(flags.parse(flag)?),
            "--connections" => plan.connections = flags.parse(flag)?,
            "--rate" => plan.rate = Some(flags.parse(flag)?),
            other => return Err(format!("load: unknown option {other:?}").into()),
        }
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let outcome = runtime.block_on(load::run(&plan, || {}, || {}))?;
    println!(
        "{} requests answered ({} in the window, {:.0} req/s), {} failed {}",
        outcome.answered_total(),
        outcome.measured,
        outcome.measured as f64 / outcome.window.as_secs_f64(),
        outcome.errors,
        outcome.first_error.as_deref().unwrap_or("")
    );
    Ok(ExitCode::SUCCESS)
}

/// The PostgreSQL schema the audit-postgres servers write into.
struct Postgres {
    pool: sqlx::PgPool,
    schema: String,
    server_url: String,
}

impl Postgres {
    async fn prepare(url: &str) -> Result<Self, BoxError> {
        let pool = sqlx::postgres::PgPoolOptions::new()
            .max_connections(2)
            .acquire_timeout(Duration::from_secs(5))
            .connect(url)
            .await
            .map_err(|e| {
                format!("PostgreSQL at {url}: {e} (start it, pass --postgres-url, or leave audit-postgres out with --variants)")
            })?;
        let schema = format!("loadbench_{}", std::process::id());
        let separator = if url.contains('?') { '&' } else { '?' };
        let server_url = format!("{url}{separator}options[search_path]={schema}");
        Ok(Self {
            pool,
            schema,
            server_url,
        })
    }

    /// An empty schema for the next server.
    async fn reset(&self) -> Result<(), BoxError> {
        let schema = &self.schema;
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
            "DROP SCHEMA IF EXISTS {schema} CASCADE; CREATE SCHEMA {schema}"
        )))
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn drop_schema(&self) {
        let schema = &self.schema;
        let dropped = sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
            "DROP SCHEMA IF EXISTS {schema} CASCADE"
        )))
        .execute(&self.pool)
        .await;
        if let Err(e) = dropped {
            eprintln!("loadbench: could not drop schema {schema}: {e}");
        }
    }

    /// Records stored (gap records apart).
    async fn count(&self) -> Result<u64, BoxError> {
        let schema = &self.schema;
        let n: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            "SELECT count(*) FROM {schema}.audit_logs WHERE action_type <> 'gap'"
        )))
        .fetch_one(&self.pool)
        .await?;
        Ok(u64::try_from(n).unwrap_or(0))
    }

    async fn ray_ids(&self) -> Result<Vec<String>, BoxError> {
        let schema = &self.schema;
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT raw_ray_id FROM {schema}.audit_logs WHERE action_type <> 'gap'"
        )))
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .iter()
            .map(|r| r.try_get::<String, _>(0))
            .collect::<Result<_, _>>()?)
    }
}

/// One server, one kind, one level, one round.
struct Run<'a> {
    bench: &'a Bench<'a>,
    round: usize,
    kind: Kind,
    variant: Variant,
    rate: Option<f64>,
}

impl Run<'_> {
    async fn execute(&self) -> Result<RunResult, BoxError> {
        let dir = self.bench.scratch.join(format!(
            "{}-{}-{}",
            self.round,
            self.kind.name(),
            self.variant.name()
        ));
        std::fs::create_dir_all(&dir)?;
        let addr = free_port()?;
        let report_path = dir.join("report.json");
        if self.variant.uses_postgres() {
            self.bench.pg()?.reset().await?;
        }
        // Live: the ingestor consumes while the load runs.
        let mut live_ingestor = if self.variant == Variant::AuditNats && !self.bench.options.backlog
        {
            Some(self.start_ingest(&dir, "ingest", false).await?)
        } else {
            None
        };
        let mut child = self.start_server(&dir, addr, &report_path).await?;
        let pid = child.0.id();

        // From here to the server's exit the steps stay in one function, in this order: the
        // CPU samples are taken by the load's callbacks, and SIGTERM follows the load at once.
        let plan = LoadPlan {
            addr,
            kind: self.kind,
            connections: self.bench.options.connections,
            warmup: Duration::from_secs_f64(self.bench.options.warmup),
            duration: Duration::from_secs_f64(self.bench.options.seconds),
            rate: self.rate,
        };
        let db_start = postgres_ticks();
        let nats_start = self.nats_ticks();
        let mut at_start = None;
        let mut at_end = None;
        let load: LoadOutcome = load::run(
            &plan,
            || at_start = Some(process_usage(pid)),
            || at_end = Some((process_usage(pid), unix_ms())),
        )
        .await?;
        // The load stopped: every connection has its last answer.
        let stopped_ms = unix_ms();
        rustix::process::kill_process(
            rustix::process::Pid::from_raw(i32::try_from(pid)?).ok_or("no pid")?,
            rustix::process::Signal::TERM,
        )?;
        let status = child.wait(crate::server::EXIT_TIMEOUT).await?;
        if !status.success() {
            return Err(format!(
                "{} server exited with {status}; see {}",
                self.variant.name(),
                dir.join("server.log").display()
            )
            .into());
        }
        let report: ServerReport = serde_json::from_slice(&std::fs::read(&report_path)?)?;
        let publish_ticks = (
            self.nats_ticks().saturating_sub(nats_start),
            postgres_ticks().saturating_sub(db_start),
        );
        let fleet = if self.variant == Variant::AuditNats {
            Some(self.ingest(&dir, live_ingestor.take(), &report).await?)
        } else {
            None
        };
        let db_ticks = postgres_ticks().saturating_sub(db_start);

        let (start_ticks, _) = at_start.ok_or("no CPU sample at the window's start")??;
        let ((end_ticks, _), end_ms) = match at_end {
            Some((usage, ms)) => (usage?, ms),
            None => return Err("no CPU sample at the window's end".into()),
        };
        let mut result = self.result(&load, &report, (start_ticks, end_ticks), db_ticks);
        if let Some(fleet) = fleet {
            fleet.fill(&mut result, publish_ticks.0, publish_ticks.1);
        }
        if self.variant.stores() {
            self.check_storage(&mut result, &dir, &load, report, (stopped_ms, end_ms))
                .await?;
        }
        let _ = std::fs::remove_dir_all(&dir);
        Ok(result)
    }

    /// Starts this run's server, listening on `addr`, and waits until it accepts connections.
    async fn start_server(
        &self,
        dir: &Path,
        addr: SocketAddr,
        report_path: &Path,
    ) -> Result<ServerProcess, BoxError> {
        let options = self.bench.options;
        let mut command = Command::new(self.bench.exe);
        command
            .arg("serve")
            .args(["--variant", self.variant.name()])
            .args(["--listen", &addr.to_string()])
            .arg("--report")
            .arg(report_path)
            .arg("--data-dir")
            .arg(dir)
            .args(["--queue-capacity", &options.queue_capacity.to_string()])
            .args(["--batch-size", &options.batch_size.to_string()])
            .args(["--spool-budget", &options.spool_budget.to_string()])
            .args(["--backpressure", &options.backpressure_ms.to_string()])
            .stdin(Stdio::null())
            // rune's sink prints every event here.
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("server.log"))?);
        if self.variant == Variant::AuditPostgres {
            command.args(["--postgres-url", &self.bench.pg()?.server_url]);
        }
        if self.variant == Variant::AuditNats {
            command.args(["--nats-url", self.bench.nats_url()?]);
        }
        let mut child = ServerProcess(command.spawn()?);
        wait_until_listening(&mut child.0, addr, dir).await?;
        Ok(child)
    }

    /// Starts `loadbench ingest` (`baseline`: the in-process pipeline over the stream's
    /// records) into the run's schema, its report and log named after `name` in `dir`; an
    /// ingestor is waited for until it consumes.
    async fn start_ingest(
        &self,
        dir: &Path,
        name: &str,
        baseline: bool,
    ) -> Result<ServerProcess, BoxError> {
        let options = self.bench.options;
        let ready = dir.join(format!("{name}.ready"));
        let log = dir.join(format!("{name}.log"));
        let mut command = Command::new(self.bench.exe);
        command
            .arg("ingest")
            .args(["--nats-url", self.bench.nats_url()?])
            .args(["--postgres-url", &self.bench.pg()?.server_url])
            .arg("--report")
            .arg(dir.join(format!("{name}.json")))
            .arg("--ready")
            .arg(&ready)
            .args(["--writers", &options.ingest_writers.to_string()])
            .args(["--batch-size", &options.batch_size.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log)?);
        if baseline {
            command.arg("--baseline");
        }
        let mut child = ServerProcess(command.spawn()?);
        if !baseline {
            let deadline = Instant::now() + Duration::from_secs(60);
            while !ready.exists() {
                if let Some(status) = child.0.try_wait()? {
                    let log = std::fs::read_to_string(&log).unwrap_or_default();
                    return Err(format!("the ingestor exited with {status}:\n{log}").into());
                }
                if Instant::now() > deadline {
                    return Err("the ingestor did not connect within 60 s".into());
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        Ok(child)
    }

    /// The ingest side of an `audit-nats` run, once the server exited having published
    /// `report.stored` records: the `live` ingestor (else, backlog: the baseline pipeline,
    /// then an ingestor on an empty schema) until every record is committed, then `SIGTERM`.
    async fn ingest(
        &self,
        dir: &Path,
        live: Option<ServerProcess>,
        report: &ServerReport,
    ) -> Result<FleetFigures, BoxError> {
        let pg = self.bench.pg()?;
        let mut baseline = None;
        let mut stream_bytes = (0, 0);
        let (mut ingestor, started) = match live {
            Some(ingestor) => (ingestor, Instant::now()),
            None => {
                stream_bytes = backlog_bytes(self.bench.nats_url()?).await?;
                let (ticks, db) = (self.nats_ticks(), postgres_ticks());
                let mut process = self.start_ingest(dir, "baseline", true).await?;
                let status = process.wait(crate::server::EXIT_TIMEOUT).await?;
                let log = || std::fs::read_to_string(dir.join("baseline.log")).unwrap_or_default();
                if !status.success() {
                    return Err(format!("the baseline exited with {status}:\n{}", log()).into());
                }
                let report = read_ingest(&dir.join("baseline.json"))?;
                if report.dropped > 0 {
                    return Err(format!(
                        "the baseline pipeline dropped {} of {} records: its rows/s would not compare",
                        report.dropped, report.records_read
                    )
                    .into());
                }
                baseline = Some((
                    report,
                    self.nats_ticks().saturating_sub(ticks),
                    postgres_ticks().saturating_sub(db),
                ));
                pg.reset().await?;
                let started = Instant::now();
                (self.start_ingest(dir, "ingest", false).await?, started)
            }
        };
        let (nats_start, db_start) = (self.nats_ticks(), postgres_ticks());
        // Until every published record is committed, or nothing new comes for 20 s. Polled
        // on the stream's consumer (every message acknowledged: every record committed),
        // which is cheap: a count(*) of the table 20 times a second took PostgreSQL CPU from
        // the ingestor it measures. The table is counted once a second for the 20 s rule.
        let mut consumer = ingest_consumer(self.bench.nats_url()?).await.ok();
        let mut last = (0, Instant::now());
        let mut counted = Instant::now();
        loop {
            let settled = match &mut consumer {
                Some(consumer) => consumer
                    .info()
                    .await
                    .is_ok_and(|info| info.num_pending == 0 && info.num_ack_pending == 0),
                None => false,
            };
            if settled || counted.elapsed() >= Duration::from_secs(1) {
                counted = Instant::now();
                let stored = pg.count().await?;
                if stored >= report.stored {
                    break;
                }
                if stored != last.0 {
                    last = (stored, Instant::now());
                } else if last.1.elapsed() > Duration::from_secs(20) {
                    break;
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let drain = started.elapsed();
        // Read before the ingestor exits: its connections' backends take their CPU time
        // with them when they end.
        let db_ticks = postgres_ticks().saturating_sub(db_start);
        let pid =
            rustix::process::Pid::from_raw(i32::try_from(ingestor.0.id())?).ok_or("no pid")?;
        rustix::process::kill_process(pid, rustix::process::Signal::TERM)?;
        let status = ingestor.wait(crate::server::EXIT_TIMEOUT).await?;
        if !status.success() {
            let log = std::fs::read_to_string(dir.join("ingest.log")).unwrap_or_default();
            return Err(format!("the ingestor exited with {status}:\n{log}").into());
        }
        Ok(FleetFigures {
            ingest: read_ingest(&dir.join("ingest.json"))?,
            nats_ticks: self.nats_ticks().saturating_sub(nats_start),
            db_ticks,
            baseline,
            drain,
            backlog: self.bench.options.backlog,
            stream_bytes,
        })
    }

    fn nats_ticks(&self) -> u64 {
        self.bench.nats.map_or(0, NatsServer::ticks)
    }

    /// The run's figures from the load, the server's report, the server's CPU ticks at the
    /// measured window's start and end, and PostgreSQL's ticks.
    fn result(
        &self,
        load: &LoadOutcome,
        report: &ServerReport,
        (start_ticks, end_ticks): (u64, u64),
        db_ticks: u64,
    ) -> RunResult {
        let tick_us = 1e6 / rustix::param::clock_ticks_per_second() as f64;
        let requests = load.measured.max(1) as f64;
        let mut latencies = load.latencies_us.clone();
        latencies.sort_unstable();
        RunResult {
            round: self.round,
            kind: self.kind.name(),
            variant: self.variant.name(),
            rate: self.rate,
            requests: load.measured,
            window_s: load.window.as_secs_f64(),
            rps: load.measured as f64 / load.window.as_secs_f64(),
            p50_us: quantile(&latencies, 0.5),
            p99_us: quantile(&latencies, 0.99),
            p999_us: quantile(&latencies, 0.999),
            cpu_us_per_request: report.cpu_ticks.saturating_sub(start_ticks) as f64 * tick_us
                / requests,
            cpu_us_per_request_window: end_ticks.saturating_sub(start_ticks) as f64 * tick_us
                / requests,
            peak_rss_kib: report.peak_rss_kib,
            db_cpu_us_per_request: if self.variant.uses_postgres() {
                db_ticks as f64 * tick_us / requests
            } else {
                0.0
            },
            errors: load.errors,
            first_error: load.first_error.clone(),
            answered: load.answered_total(),
            shutdown_ms: report.shutdown_ms,
            dropped: report.dropped,
            spooled: report.spooled,
            waited: report.waited,
            waits_timed_out: report.waits_timed_out,
            load_avg: load_average(),
            ..RunResult::default()
        }
    }

    /// For a storing variant: the records stored against the requests answered, and the
    /// commit log's figures, given when the load stopped and when the window ended (unix ms).
    async fn check_storage(
        &self,
        result: &mut RunResult,
        dir: &Path,
        load: &LoadOutcome,
        report: ServerReport,
        (stopped_ms, end_ms): (i64, i64),
    ) -> Result<(), BoxError> {
        let ids = match self.variant {
            Variant::AuditSqlite => sqlite_ray_ids(&dir.join("audit.db")).await?,
            _ => {
                self.bench
                    .postgres
                    .ok_or("no PostgreSQL prepared")?
                    .ray_ids()
                    .await?
            }
        };
        let (found, extra) = match_ids(&load.answered, &ids);
        result.stored = found;
        result.extra = extra;
        result.missing = result.answered - found;
        let window_start_ms = stopped_ms - i64::try_from(load.window.as_millis()).unwrap_or(0);
        result.committed_at_stop = committed_by(&report.commits, end_ms.max(stopped_ms));
        let in_window = committed_by(&report.commits, end_ms)
            .saturating_sub(committed_by(&report.commits, window_start_ms));
        result.committed_per_s = in_window as f64 / load.window.as_secs_f64();
        let mut lags = report.lags_ms;
        lags.sort_unstable();
        result.lag_p50_ms = quantile(&lags, 0.5);
        result.lag_p99_ms = quantile(&lags, 0.99);
        result.lag_max_ms = lags.last().copied().unwrap_or(0);
        Ok(())
    }
}

/// What the ingest side of an `audit-nats` run measured.
struct FleetFigures {
    ingest: IngestReport,
    /// CPU of the NATS server and of every `postgres` process while the ingestor caught up.
    nats_ticks: u64,
    db_ticks: u64,
    /// Backlog: the in-process pipeline's report, and the NATS and PostgreSQL ticks of it.
    baseline: Option<(IngestReport, u64, u64)>,
    /// From the server's exit (backlog: the ingestor's start) until every record was
    /// committed.
    drain: Duration,
    backlog: bool,
    /// Backlog: the stream's bytes and messages before the ingestor started.
    stream_bytes: (u64, u64),
}

impl FleetFigures {
    /// Puts the figures into `r`, given the NATS and PostgreSQL ticks from the window's start
    /// to the server's exit (the publishing phase).
    fn fill(self, r: &mut RunResult, publish_nats_ticks: u64, publish_db_ticks: u64) {
        let tick_us = 1e6 / rustix::param::clock_ticks_per_second() as f64;
        let rows = self.ingest.stored.max(1) as f64;
        r.nats_cpu_us_per_request = (publish_nats_ticks + self.nats_ticks) as f64 * tick_us / rows;
        r.db_cpu_us_per_request = (publish_db_ticks + self.db_ticks) as f64 * tick_us / rows;
        r.ingest_cpu_us_per_row = self.ingest.cpu_ticks as f64 * tick_us / rows;
        r.drain_ms = u64::try_from(self.drain.as_millis()).unwrap_or(u64::MAX);
        r.dead_lettered = self.ingest.dead_lettered;
        r.ingest_redelivered = self.ingest.redelivered;
        r.ingest_dropped = self.ingest.dropped;
        if self.backlog {
            // Records, not messages: a message carries many.
            r.stream_bytes_per_record = self.stream_bytes.0 as f64 / rows;
            r.stream_records_per_message = rows / self.stream_bytes.1.max(1) as f64;
            r.ingest_rows_per_s = rows_per_s(&self.ingest);
            if let Some((baseline, _, _)) = &self.baseline {
                r.baseline_rows_per_s = rows_per_s(baseline);
                r.baseline_cpu_us_per_row =
                    baseline.cpu_ticks as f64 * tick_us / baseline.stored.max(1) as f64;
            }
        } else {
            let mut lags = self.ingest.lags_ms;
            lags.sort_unstable();
            r.e2e_lag_p50_ms = quantile(&lags, 0.5);
            r.e2e_lag_p99_ms = quantile(&lags, 0.99);
            r.e2e_lag_max_ms = lags.last().copied().unwrap_or(0);
        }
    }
}

/// Rows committed per second, from the report's start to its last commit.
fn rows_per_s(report: &IngestReport) -> f64 {
    let Some(&(last_ms, committed)) = report.commits.last() else {
        return 0.0;
    };
    let span_s = (last_ms - report.started_ms).max(1) as f64 / 1000.0;
    committed as f64 / span_s
}

/// The bytes and messages the fleet's stream holds now.
async fn backlog_bytes(url: &str) -> Result<(u64, u64), BoxError> {
    let client = async_nats::connect(crate::nats::first_url(url)).await?;
    let mut stream = async_nats::jetstream::new(client)
        .get_stream(audit_store::fleet::FleetConfig::new(url)?.stream_name())
        .await?;
    let info = stream.info().await?;
    Ok((info.state.bytes, info.state.messages))
}

/// The ingestors' durable consumer: with no message pending or unacknowledged, every record
/// of the stream is committed.
async fn ingest_consumer(
    url: &str,
) -> Result<async_nats::jetstream::consumer::PullConsumer, BoxError> {
    let client = async_nats::connect(crate::nats::first_url(url)).await?;
    let stream = async_nats::jetstream::new(client)
        .get_stream(audit_store::fleet::FleetConfig::new(url)?.stream_name())
        .await?;
    let consumer = stream
        .get_consumer(audit_store::fleet::DEFAULT_CONSUMER)
        .await?;
    Ok(consumer)
}

fn read_ingest(path: &Path) -> Result<IngestReport, BoxError> {
    Ok(serde_json::from_slice(&std::fs::read(path)?)?)
}

/// A server process, killed if the driver gives up on it.
struct ServerProcess(Child);

impl ServerProcess {
    async fn wait(&mut self, timeout: Duration) -> Result<std::process::ExitStatus, BoxError> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.0.try_wait()? {
                return Ok(status);
            }
            if Instant::now() > deadline {
                return Err(
                    format!("the server did not exit within {timeout:?} of SIGTERM").into(),
                );
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// A loopback address with a port free right now.
fn free_port() -> Result<SocketAddr, BoxError> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?)
}

async fn wait_until_listening(
    child: &mut Child,
    addr: SocketAddr,
    dir: &Path,
) -> Result<(), BoxError> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if tokio::net::TcpStream::connect(addr).await.is_ok() {
            return Ok(());
        }
        if let Some(status) = child.try_wait()? {
            let log = std::fs::read_to_string(dir.join("server.log")).unwrap_or_default();
            return Err(format!("the server exited with {status} before listening:\n{log}").into());
        }
        if Instant::now() > deadline {
            return Err(format!("the server did not listen on {addr} within 60 s").into());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// CPU time (clock ticks) of every process named `postgres` now, with the backends that
/// have exited (counted in the postmaster's reaped children).
fn postgres_ticks() -> u64 {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return 0;
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/comm"))
                .is_ok_and(|c| c.trim_end() == "postgres")
        })
        .filter_map(|pid| crate::usage::cpu_ticks_with_reaped_children(pid).ok())
        .sum()
}

/// The 1, 5 and 15 minute load averages.
fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

/// Records committed at or before `at_ms`, from the server's commit log.
fn committed_by(commits: &[(i64, u64)], at_ms: i64) -> u64 {
    commits
        .iter()
        .take_while(|(ms, _)| *ms <= at_ms)
        .last()
        .map_or(0, |(_, n)| *n)
}

async fn sqlite_ray_ids(db: &Path) -> Result<Vec<String>, BoxError> {
    let options = sqlx::sqlite::SqliteConnectOptions::new()
        .filename(db)
        .read_only(true);
    let pool = sqlx::SqlitePool::connect_with(options).await?;
    let rows = sqlx::query("SELECT raw_ray_id FROM audit_logs WHERE action_type <> 'gap'")
        .fetch_all(&pool)
        .await?;
    pool.close().await;
    Ok(rows
        .iter()
        .map(|r| r.try_get::<String, _>(0))
        .collect::<Result<_, _>>()?)
}

/// How many of the answered requests (`answered[i]` on connection `i`, ids `c<i>-<n>`) have a
/// stored id, and how many stored ids match none (or repeat one).
fn match_ids(answered: &[u64], stored: &[String]) -> (u64, u64) {
    let mut seen: Vec<Vec<bool>> = answered
        .iter()
        .map(|&n| vec![false; usize::try_from(n).unwrap_or(0)])
        .collect();
    let (mut found, mut extra) = (0, 0);
    for id in stored {
        let parsed = id
            .strip_prefix('c')
            .and_then(|rest| rest.split_once('-'))
            .and_then(|(c, n)| Some((c.parse::<usize>().ok()?, n.parse::<usize>().ok()?)));
        match parsed.and_then(|(c, n)| seen.get_mut(c)?.get_mut(n)) {
            Some(slot) if !*slot => {
                *slot = true;
                found += 1;
            }
            _ => extra += 1,
        }
    }
    (found, extra)
}

/// The runs of one kind, variant and level, every round.
fn runs_of(
    results: &[RunResult],
    kind: Kind,
    variant: Variant,
    rate: Option<f64>,
) -> Vec<&RunResult> {
    results
        .iter()
        .filter(|r| r.kind == kind.name() && r.variant == variant.name() && r.rate == rate)
        .collect()
}

/// `variant`'s run in the same round, of the same kind and level as `r`: the baseline a
/// ratio of one round is taken against.
fn same_round<'a>(
    results: &'a [RunResult],
    r: &RunResult,
    variant: Variant,
) -> Option<&'a RunResult> {
    results.iter().find(|b| {
        b.round == r.round && b.kind == r.kind && b.rate == r.rate && b.variant == variant.name()
    })
}

/// The Markdown tables: medians with min–max over rounds, ratios within each round.
fn tables(options: &Options, results: &[RunResult]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{} round(s) × {} s per server (after {} s warm-up), {} connections; load average at the end: {}\n",
        options.rounds,
        options.seconds,
        options.warmup,
        options.connections,
        load_average()
    );
    let _ = writeln!(
        out,
        "Storing variants: queue {} records, batches of up to {}, spool budget {} MiB, backpressure {}.\n",
        group(options.queue_capacity as f64, 0),
        group(options.batch_size as f64, 0),
        options.spool_budget >> 20,
        match options.backpressure_ms {
            0 => "off (the default mode: a request never waits; the excess goes to the spool)"
                .to_owned(),
            ms => format!("on (a request waits up to {ms} ms while the queue is 3/4 full)"),
        }
    );
    for &rate in &options.rates {
        let level = match rate {
            None => "saturation (closed loop)".to_owned(),
            Some(r) => format!("{} req/s offered", group(r, 0)),
        };
        throughput_table(&mut out, options, results, rate, &level);
        if options.variants.iter().any(|v| v.stores()) {
            storage_table(&mut out, options, results, rate, &level);
        }
        if options.variants.contains(&Variant::AuditNats) {
            fleet_table(&mut out, options, results, rate, &level);
        }
    }
    let _ = writeln!(out, "{}", goals(options, results));
    out
}

/// Throughput, latency and CPU of every kind and variant at one level.
fn throughput_table(
    out: &mut String,
    options: &Options,
    results: &[RunResult],
    rate: Option<f64>,
    level: &str,
) {
    let _ = writeln!(out, "### Throughput, latency, CPU — {level}\n");
    let _ = writeln!(
        out,
        "| request | variant | req/s | ÷ bare | ÷ trace | p50 ms | p99 ms | p99.9 ms | server CPU µs/req | + vs bare µs | peak RSS MiB |"
    );
    let _ = writeln!(out, "|---|---|---|---|---|---|---|---|---|---|---|");
    for &kind in &options.kinds {
        for &variant in &options.variants {
            let runs = runs_of(results, kind, variant, rate);
            if runs.is_empty() {
                continue;
            }
            let show = |f: &dyn Fn(&RunResult) -> Option<f64>, decimals: usize| {
                Spread::of(runs.iter().filter_map(|r| f(r)))
                    .map_or_else(|| "–".to_owned(), |s| s.show(decimals))
            };
            let ratio = |base: Variant| {
                move |r: &RunResult| same_round(results, r, base).map(|b| r.rps / b.rps)
            };
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                kind.name(),
                variant.name(),
                show(&|r| Some(r.rps), 0),
                show(&ratio(Variant::Bare), 2),
                show(&ratio(Variant::Trace), 2),
                show(&|r| Some(f64::from(r.p50_us) / 1000.0), 2),
                show(&|r| Some(f64::from(r.p99_us) / 1000.0), 2),
                show(&|r| Some(f64::from(r.p999_us) / 1000.0), 2),
                show(&|r| Some(r.cpu_us_per_request), 1),
                show(
                    &|r| same_round(results, r, Variant::Bare)
                        .map(|b| r.cpu_us_per_request - b.cpu_us_per_request),
                    1
                ),
                show(&|r| Some(r.peak_rss_kib as f64 / 1024.0), 1),
            );
        }
    }
}

/// What the storing variants stored, lost, and how fast, at one level.
fn storage_table(
    out: &mut String,
    options: &Options,
    results: &[RunResult],
    rate: Option<f64>,
    level: &str,
) {
    let _ = writeln!(out, "\n### Storage — {level}\n");
    let _ = writeln!(
        out,
        "| request | variant | answered | stored after SIGTERM | lost | committed when load stopped | committed rows/s under load | lag p50 ms | lag p99 ms | lag max ms | flush after SIGTERM ms | dropped | spooled | held (timed out) | peak RSS MiB (bound {}) | PostgreSQL CPU µs/req |",
        options.rss_bound_mib
    );
    let _ = writeln!(
        out,
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"
    );
    for &kind in &options.kinds {
        for &variant in options.variants.iter().filter(|v| v.stores()) {
            let runs = runs_of(results, kind, variant, rate);
            if runs.is_empty() {
                continue;
            }
            let show = |f: &dyn Fn(&RunResult) -> f64, decimals: usize| spread(&runs, f, decimals);
            let lost: u64 = runs.iter().map(|r| r.missing).sum();
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} | **{}** in {} runs | {} | {} | {} | {} | {} | {} | {} | {} | {} ({}) | {} | {} |",
                kind.name(),
                variant.name(),
                show(&|r| r.answered as f64, 0),
                show(&|r| r.stored as f64, 0),
                lost,
                runs.len(),
                show(
                    &|r| 100.0 * r.committed_at_stop as f64 / r.answered.max(1) as f64,
                    0
                ) + " %",
                show(&|r| r.committed_per_s, 0),
                show(&|r| f64::from(r.lag_p50_ms), 0),
                show(&|r| f64::from(r.lag_p99_ms), 0),
                show(&|r| f64::from(r.lag_max_ms), 0),
                show(&|r| r.shutdown_ms as f64, 0),
                show(&|r| r.dropped as f64, 0),
                show(&|r| r.spooled as f64, 0),
                show(&|r| r.waited as f64, 0),
                show(&|r| r.waits_timed_out as f64, 0),
                show(&|r| r.peak_rss_kib as f64 / 1024.0, 1),
                if variant.uses_postgres() {
                    show(&|r| r.db_cpu_us_per_request, 1)
                } else {
                    "in-process".to_owned()
                },
            );
        }
    }
    let _ = writeln!(out);
}

/// Fleet mode at one level: CPU per record of each process, lags, the ingestor's rate.
fn fleet_table(
    out: &mut String,
    options: &Options,
    results: &[RunResult],
    rate: Option<f64>,
    level: &str,
) {
    let _ = writeln!(
        out,
        "### Fleet mode (audit-nats: app → NATS JetStream ({}) → one ingestor → PostgreSQL, ingestor {}) — {level}\n",
        match options.nats_nodes {
            1 => "one node".to_owned(),
            n => format!("{n} nodes, R{n}; NATS CPU of all nodes"),
        },
        if options.backlog {
            "started once the app exited: a backlog"
        } else {
            "consuming during the load"
        }
    );
    let _ = writeln!(
        out,
        "| request | answered | stored end to end | lost | app CPU µs/req | NATS CPU µs/row | ingestor CPU µs/row | PostgreSQL CPU µs/row | stream ack lag p99 ms | end-to-end lag p50 / p99 / max ms | caught up after ms | ingestor rows/s | in-process pipeline rows/s (CPU µs/row) | dead-lettered | redelivered / dropped by the ingestor |"
    );
    let _ = writeln!(
        out,
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"
    );
    for &kind in &options.kinds {
        let runs = runs_of(results, kind, Variant::AuditNats, rate);
        if runs.is_empty() {
            continue;
        }
        let show = |f: &dyn Fn(&RunResult) -> f64, decimals: usize| spread(&runs, f, decimals);
        let lost: u64 = runs.iter().map(|r| r.missing).sum();
        let _ = writeln!(
            out,
            "| {} | {} | {} | **{}** | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} / {} |",
            kind.name(),
            show(&|r| r.answered as f64, 0),
            show(&|r| r.stored as f64, 0),
            lost,
            show(&|r| r.cpu_us_per_request, 1),
            show(&|r| r.nats_cpu_us_per_request, 1),
            show(&|r| r.ingest_cpu_us_per_row, 1),
            show(&|r| r.db_cpu_us_per_request, 1),
            show(&|r| f64::from(r.lag_p99_ms), 0),
            if options.backlog {
                "– (backlog)".to_owned()
            } else {
                format!(
                    "{} / {} / {}",
                    show(&|r| f64::from(r.e2e_lag_p50_ms), 0),
                    show(&|r| f64::from(r.e2e_lag_p99_ms), 0),
                    show(&|r| f64::from(r.e2e_lag_max_ms), 0)
                )
            },
            show(&|r| r.drain_ms as f64, 0),
            if options.backlog {
                show(&|r| r.ingest_rows_per_s, 0)
            } else {
                "– (live)".to_owned()
            },
            if options.backlog {
                format!(
                    "{} ({})",
                    show(&|r| r.baseline_rows_per_s, 0),
                    show(&|r| r.baseline_cpu_us_per_row, 1)
                )
            } else {
                "–".to_owned()
            },
            show(&|r| r.dead_lettered as f64, 0),
            show(&|r| r.ingest_redelivered as f64, 0),
            show(&|r| r.ingest_dropped as f64, 0),
        );
    }
    let _ = writeln!(out);
}

/// `f` over `runs` as a table cell: its spread, or "–" when there is none.
fn spread(runs: &[&RunResult], f: &dyn Fn(&RunResult) -> f64, decimals: usize) -> String {
    Spread::of(runs.iter().map(|r| f(r))).map_or_else(|| "–".to_owned(), |s| s.show(decimals))
}

/// The median over rounds, at saturation, of `f` for `kind` and `variant`.
fn median(
    results: &[RunResult],
    kind: Kind,
    variant: Variant,
    f: &dyn Fn(&RunResult) -> Option<f64>,
) -> Option<f64> {
    let values: Vec<f64> = runs_of(results, kind, variant, None)
        .into_iter()
        .filter_map(f)
        .collect();
    Spread::of(values).map(|s| s.median)
}

fn met(ok: bool) -> &'static str {
    if ok { "met" } else { "**not met**" }
}

/// The goals, checked against the medians.
fn goals(options: &Options, results: &[RunResult]) -> String {
    let mut out = String::from("### Goals\n\n");
    let extra_cpu = |kind, variant| {
        median(results, kind, variant, &|r| {
            same_round(results, r, Variant::Bare)
                .map(|b| r.cpu_us_per_request - b.cpu_us_per_request)
        })
    };
    for kind in [Kind::Get, Kind::Post] {
        if let (Some(audit), Some(trace)) = (
            extra_cpu(kind, Variant::AuditDiscard),
            extra_cpu(kind, Variant::Trace),
        ) {
            let _ = writeln!(
                out,
                "- {}: audit-discard adds {audit:.1} µs CPU per request over bare, trace {trace:.1} µs: {}",
                kind.name(),
                met(audit <= trace)
            );
        }
    }
    let mut by_variant: BTreeMap<&str, (u64, usize)> = BTreeMap::new();
    for r in results.iter().filter(|r| {
        r.variant == "audit-sqlite" || r.variant == "audit-postgres" || r.variant == "audit-nats"
    }) {
        let entry = by_variant.entry(r.variant).or_default();
        entry.0 += r.missing;
        entry.1 += 1;
    }
    for (variant, (lost, runs)) in &by_variant {
        let _ = writeln!(
            out,
            "- {variant}: {lost} records lost over {runs} runs (every level, SIGTERM included): {}",
            met(*lost == 0)
        );
    }
    for (variant, floor) in [(Variant::AuditPostgres, 0.5), (Variant::AuditSqlite, 0.4)] {
        if let Some(ratio) = median(results, Kind::Post, variant, &|r| {
            same_round(results, r, Variant::Bare).map(|b| r.rps / b.rps)
        }) {
            let _ = writeln!(
                out,
                "- {}: POST throughput {ratio:.2} of bare (goal ≥ {floor}): {}",
                variant.name(),
                met(ratio >= floor)
            );
        }
    }
    for variant in [Variant::AuditSqlite, Variant::AuditPostgres] {
        storage_goals(&mut out, options, results, variant);
    }
    fleet_goals(&mut out, results);
    out
}

/// Fleet mode's goals (issue 23): the app side's POST throughput with the NATS sink, the
/// ingestor's rows/s against the in-process pipeline, the end-to-end lag at 10,000 req/s.
fn fleet_goals(out: &mut String, results: &[RunResult]) {
    if let Some(ratio) = median(results, Kind::Post, Variant::AuditNats, &|r| {
        same_round(results, r, Variant::Bare).map(|b| r.rps / b.rps)
    }) {
        let against = [Variant::AuditPostgres, Variant::AuditSqlite]
            .into_iter()
            .filter_map(|v| {
                median(results, Kind::Post, Variant::AuditNats, &|r| {
                    same_round(results, r, v).map(|b| r.rps / b.rps)
                })
                .map(|x| format!("{x:.2}x {}", v.name()))
            })
            .collect::<Vec<_>>();
        let _ = writeln!(
            out,
            "- audit-nats: POST throughput {ratio:.2} of bare (goal ≥ 0.7): {}; {}",
            met(ratio >= 0.7),
            if against.is_empty() {
                "no in-process SQL variant in this run".to_owned()
            } else {
                format!("{} in the same rounds", against.join(", "))
            }
        );
    }
    let ratios: Vec<f64> = results
        .iter()
        .filter(|r| r.variant == "audit-nats" && r.baseline_rows_per_s > 0.0)
        .map(|r| r.ingest_rows_per_s / r.baseline_rows_per_s)
        .collect();
    if let Some(spread) = Spread::of(ratios) {
        let _ = writeln!(
            out,
            "- audit-nats: one ingestor's committed rows/s {} of the in-process pipeline's over the same PostgreSQL and records (goal ≥ 0.9): {}",
            spread.show(2),
            met(spread.median >= 0.9)
        );
    }
    for r in results
        .iter()
        .filter(|r| r.variant == "audit-nats" && r.rate == Some(10_000.0) && r.e2e_lag_p99_ms > 0)
    {
        let _ = writeln!(
            out,
            "- audit-nats {} at 10,000 req/s offered ({} req/s served), round {}: end-to-end lag p99 {} ms (goal < 1,000 ms): {}",
            r.kind,
            group(r.rps, 0),
            r.round + 1,
            r.e2e_lag_p99_ms,
            met(r.e2e_lag_p99_ms < 1000)
        );
    }
}

/// A storing variant's goals: its peak RSS, and per kind its commit lag and rate.
fn storage_goals(out: &mut String, options: &Options, results: &[RunResult], variant: Variant) {
    let peak = results
        .iter()
        .filter(|r| r.variant == variant.name())
        .map(|r| r.peak_rss_kib as f64 / 1024.0)
        .fold(None, |m: Option<f64>, v| Some(m.map_or(v, |m| m.max(v))));
    if let Some(peak) = peak {
        let _ = writeln!(
            out,
            "- {}: highest peak RSS {peak:.1} MiB (bound {} MiB): {}",
            variant.name(),
            options.rss_bound_mib,
            met(peak < options.rss_bound_mib)
        );
    }
    for kind in [Kind::Get, Kind::Post] {
        if let (Some(lag), Some(rows)) = (
            median(results, kind, variant, &|r| Some(f64::from(r.lag_p99_ms))),
            median(results, kind, variant, &|r| Some(r.committed_per_s)),
        ) {
            let _ = writeln!(
                out,
                "- {} {}: capture-to-commit lag p99 {lag:.0} ms (goal < 1,000 ms: {}); {} rows/s committed under load, {:.1}x phoxia-auditlog's 8–10k (goal ≥ 3x: {})",
                variant.name(),
                kind.name(),
                met(lag < 1000.0),
                group(rows, 0),
                rows / 10_000.0,
                met(rows >= 30_000.0)
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stored_ids_are_matched_one_to_one() {
        let stored: Vec<String> = ["c0-0", "c0-1", "c1-0", "c1-0", "c2-0", "x"]
            .iter()
            .map(|s| (*s).to_owned())
            .collect();
        // Connection 0 answered 3, connection 1 answered 1, connection 2 none.
        assert_eq!(match_ids(&[3, 1, 0], &stored), (3, 3));
    }

    #[test]
    fn commits_are_read_up_to_a_time() {
        let log = [(100, 10), (200, 25), (300, 40)];
        assert_eq!(committed_by(&log, 50), 0);
        assert_eq!(committed_by(&log, 200), 25);
        assert_eq!(committed_by(&log, 1000), 40);
    }
}
