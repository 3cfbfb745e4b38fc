//! End-to-end load benchmark of whole HTTP servers: what does auditing cost a service?
//!
//! Run with: `cargo run --release -p loadbench -- --rounds 3 --seconds 10`
//!
//! One binary plays two roles. `loadbench serve --variant <v>` is the server under test: the
//! same axum handlers (a `GET` of a policy, and a `POST` whose handler parses a 0.5 KB JSON
//! policy) behind one of six stacks:
//!
//! | variant | what wraps the handlers |
//! |---|---|
//! | `bare` | nothing |
//! | `trace` | tower-http `TraceLayer` (INFO span and response event) into a non-blocking file appender |
//! | `audit-discard` | `AuditLayer` with a `DiscardSink`: capture and redaction alone |
//! | `audit-sqlite` | `AuditLayer` into the ingest pipeline and the SQLite store |
//! | `audit-postgres` | `AuditLayer` into the ingest pipeline and the PostgreSQL store |
//! | `rune` | `rune-axum-audit`'s stdout sink, with stdout sent to `/dev/null` |
//! | `audit-nats` | `AuditLayer` into the ingest pipeline publishing to NATS JetStream (fleet mode's `NatsDestination`), a `nats-server` the driver starts; one ingestor (`loadbench ingest`, the library `audit-ingest` runs) writes the stream into the PostgreSQL schema |
//!
//! Without `serve`, the binary is the driver and the load generator. For every round, request
//! kind and variant (interleaved, the order rotated each round) it starts a fresh server
//! process on 127.0.0.1, warms it up, drives it with a closed-loop HTTP/1.1 load from this
//! process for a bounded time, samples the server's CPU (`/proc/<pid>/stat`) and peak RSS
//! (`VmHWM`), sends `SIGTERM` the moment the load stops, waits for the server to flush and
//! exit, and then reads the database: every request answered carried its own `x-request-id`,
//! which the layer keeps as `raw.cf_ray_id`, so the records stored are compared with the requests
//! answered one by one. It prints Markdown tables of medians with min–max, ratios computed
//! within each round, and writes every run as JSON lines.
//!
//! For `audit-nats`, the records are counted in PostgreSQL once the ingestor caught up
//! (answered → published → ingested → committed, end to end), and the run also reports the
//! CPU per record of the NATS server, the ingestor and PostgreSQL, and the end-to-end lag
//! (request start → row committed). With `--nats-ingest backlog` the ingestor starts only
//! once the server exited (the stream holds every record): its committed rows/s then measure
//! its capacity, against the in-process pipeline over the same store fed the same records
//! (`loadbench ingest --baseline`) in the same run.
//!
//! `--smoke` runs one short round (CI) and fails on any lost record.
//!
//! `loadbench load --addr HOST:PORT [--kind GET|POST] [--seconds S] [--connections N]` only
//! drives a server started by hand, e.g. one running under `valgrind --tool=callgrind` or
//! `perf record` for a profile.

mod api;
mod driver;
mod flags;
mod ingest;
mod load;
mod nats;
mod server;
mod stats;
mod usage;

use std::process::ExitCode;

/// With the `mimalloc` feature, every role of the binary (servers, driver, ingestor, the
/// in-process baseline) allocates through mimalloc instead of the system's allocator.
#[cfg(feature = "mimalloc")]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let outcome = match args.first().map(String::as_str) {
        Some("serve") => server::main(&args[1..]),
        Some("load") => driver::load_only(&args[1..]),
        Some("ingest") => ingest::main(&args[1..]),
        _ => driver::main(&args),
    };
    match outcome {
        Ok(code) => code,
        Err(e) => {
            eprintln!("loadbench: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Errors of the benchmark, as text for a person.
use audit_layer::BoxError;

/// The variants, in the order the tables list them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
enum Variant {
    Bare,
    Trace,
    AuditDiscard,
    AuditSqlite,
    AuditPostgres,
    Rune,
    AuditNats,
}

impl Variant {
    const ALL: [Variant; 7] = [
        Variant::Bare,
        Variant::Trace,
        Variant::AuditDiscard,
        Variant::AuditSqlite,
        Variant::AuditPostgres,
        Variant::Rune,
        Variant::AuditNats,
    ];

    fn name(self) -> &'static str {
        match self {
            Variant::Bare => "bare",
            Variant::Trace => "trace",
            Variant::AuditDiscard => "audit-discard",
            Variant::AuditSqlite => "audit-sqlite",
            Variant::AuditPostgres => "audit-postgres",
            Variant::Rune => "rune",
            Variant::AuditNats => "audit-nats",
        }
    }

    fn parse(name: &str) -> Result<Self, BoxError> {
        Self::ALL
            .into_iter()
            .find(|v| v.name() == name)
            .ok_or_else(|| {
                format!(
                    "unknown variant {name:?}: expected one of {}",
                    Self::ALL.map(Variant::name).join(", ")
                )
                .into()
            })
    }

    /// Whether every answered request must have a stored record.
    fn stores(self) -> bool {
        matches!(
            self,
            Variant::AuditSqlite | Variant::AuditPostgres | Variant::AuditNats
        )
    }

    /// Whether its records end in the benchmark's PostgreSQL schema.
    fn uses_postgres(self) -> bool {
        matches!(self, Variant::AuditPostgres | Variant::AuditNats)
    }
}

/// The request kinds, each measured on its own.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
enum Kind {
    Get,
    Post,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Get => "GET",
            Kind::Post => "POST",
        }
    }

    /// `GET` or `POST`, in any case.
    fn parse(name: &str) -> Result<Self, BoxError> {
        match name.to_ascii_uppercase().as_str() {
            "GET" => Ok(Kind::Get),
            "POST" => Ok(Kind::Post),
            _ => Err(format!("invalid kind {name:?}: expected GET or POST").into()),
        }
    }
}

/// What the server reports when it exits, read by the driver.
#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
struct ServerReport {
    /// utime + stime of the whole process at exit, in clock ticks.
    cpu_ticks: u64,
    /// Peak resident set size (`VmHWM`) at exit, KiB.
    peak_rss_kib: u64,
    /// How long the flush after `SIGTERM` took (server stop to pipeline done), ms.
    shutdown_ms: u64,
    /// The pipeline's counters at exit (audit-sqlite, audit-postgres).
    enqueued: u64,
    stored: u64,
    dropped: u64,
    spooled: u64,
    gap_records: u64,
    /// Requests held back by backpressure, and those that went on after the longest wait.
    waited: u64,
    waits_timed_out: u64,
    /// Per committed record: commit time minus the record's `action.time`, ms.
    lags_ms: Vec<u32>,
    /// Per committed batch: (unix ms when the insert returned, records committed so far).
    commits: Vec<(i64, u64)>,
}

/// Milliseconds since the Unix epoch now.
fn unix_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}
