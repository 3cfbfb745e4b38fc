//! What the benchmarks share: the record generator ([`world`], [`records`]), CPU and load
//! readings ([`cpu`]), database setup ([`postgres`], [`sqlite`]), the store's own statements
//! as text ([`sql`]) and the command line and printing of the load harnesses (this module).
//!
//! Each benchmark uses part of it.
#![allow(dead_code)]

pub(crate) mod cpu;
pub(crate) mod postgres;
pub(crate) mod records;
pub(crate) mod rng;
pub(crate) mod sql;
pub(crate) mod sqlite;
pub(crate) mod world;

use std::future::Future;
use std::time::{SystemTime, UNIX_EPOCH};

pub(crate) use audit_layer::BoxError;
pub(crate) type BoxResult<T> = Result<T, BoxError>;

/// Runs a load harness: parses its command line (a usage error exits with 2), then `run` on a
/// multi-threaded tokio runtime (a failure exits with 1).
pub(crate) fn harness<A, F>(
    bench: &str,
    usage: &str,
    parse: impl FnOnce() -> BoxResult<A>,
    run: impl FnOnce(A) -> F,
) where
    F: Future<Output = BoxResult<()>>,
{
    let args = match parse() {
        Ok(args) => args,
        Err(e) => {
            eprintln!("{bench} bench: {e}\n\n{usage}");
            std::process::exit(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("{bench} bench: cannot start tokio: {e}");
            std::process::exit(1);
        }
    };
    if let Err(e) = runtime.block_on(run(args)) {
        eprintln!("{bench} bench failed: {e}");
        std::process::exit(1);
    }
}

/// The backends a benchmark runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Backend {
    Sqlite,
    Postgres,
}

impl Backend {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Self::Sqlite => "sqlite",
            Self::Postgres => "postgres",
        }
    }

    pub(crate) fn title(self) -> &'static str {
        match self {
            Self::Sqlite => "SQLite",
            Self::Postgres => "PostgreSQL",
        }
    }
}

/// The options every load harness takes: `--rows N`, `--quick`, `--backend
/// sqlite|postgres|both` and `--seed N`.
#[derive(Debug)]
pub(crate) struct Common {
    pub(crate) rows: usize,
    pub(crate) backends: Vec<Backend>,
    /// Whether PostgreSQL was asked for by name (then an unreachable server is an error).
    pub(crate) postgres_required: bool,
    pub(crate) seed: u64,
    /// Run by `cargo test --benches`: tiny, and skip what is missing.
    pub(crate) smoke: bool,
    pub(crate) quick: bool,
}

impl Common {
    /// The run's name in its first line.
    pub(crate) fn mode(&self) -> &'static str {
        if self.smoke {
            "smoke (cargo test)"
        } else if self.quick {
            "quick"
        } else {
            "full"
        }
    }
}

/// A load harness's command line.
pub(crate) struct Argv {
    args: std::vec::IntoIter<String>,
    usage: &'static str,
    /// Run by `cargo test --benches` (criterion's rule: `cargo bench` passes `--bench`, a test
    /// run passes nothing or `--test`).
    pub(crate) smoke: bool,
    quick: bool,
    rows: Option<usize>,
    backend: String,
    /// `--seed`, so far.
    pub(crate) seed: u64,
}

impl Argv {
    pub(crate) fn from_env(usage: &'static str, seed: u64) -> Self {
        let args: Vec<String> = std::env::args().skip(1).collect();
        let smoke = args.iter().any(|a| a == "--test") || !args.iter().any(|a| a == "--bench");
        Self {
            args: args.into_iter(),
            usage,
            smoke,
            quick: false,
            rows: None,
            backend: "both".to_owned(),
            seed,
        }
    }

    /// The next argument that is the harness's own. Cargo's (`--bench`, `--test`) and the
    /// [`Common`] options are taken here; `-h` and `--help` print the usage and exit.
    pub(crate) fn next_flag(&mut self) -> BoxResult<Option<String>> {
        while let Some(arg) = self.args.next() {
            match arg.as_str() {
                "--bench" | "--test" => {}
                "-h" | "--help" => {
                    println!("{}", self.usage);
                    std::process::exit(0);
                }
                "--rows" => self.rows = Some(self.count("--rows")?),
                "--quick" => self.quick = true,
                "--backend" => self.backend = self.value("--backend")?,
                "--seed" => self.seed = self.value("--seed")?.parse()?,
                _ => return Ok(Some(arg)),
            }
        }
        Ok(None)
    }

    /// The value of `flag`: the next argument.
    pub(crate) fn value(&mut self, flag: &str) -> BoxResult<String> {
        self.args
            .next()
            .ok_or_else(|| format!("{flag} needs a value").into())
    }

    /// The count `flag` is given ([`parse_count`]).
    pub(crate) fn count(&mut self, flag: &str) -> BoxResult<usize> {
        parse_count(&self.value(flag)?)
    }

    /// An argument no option matched: an error, except under `cargo test`, whose own flags
    /// may be passed along.
    pub(crate) fn unknown(&self, arg: &str) -> BoxResult<()> {
        if self.smoke {
            Ok(())
        } else {
            Err(format!("unknown argument {arg:?}").into())
        }
    }

    /// The common options, with 2,000 rows by default in a smoke run, 20,000 with `--quick`,
    /// else 1,000,000.
    pub(crate) fn common(&self) -> BoxResult<Common> {
        let backends = match self.backend.as_str() {
            "sqlite" => vec![Backend::Sqlite],
            "postgres" => vec![Backend::Postgres],
            "both" => vec![Backend::Sqlite, Backend::Postgres],
            other => return Err(format!("--backend {other:?}: sqlite, postgres or both").into()),
        };
        let default_rows = if self.smoke {
            2_000
        } else if self.quick {
            20_000
        } else {
            1_000_000
        };
        Ok(Common {
            rows: self.rows.unwrap_or(default_rows),
            backends,
            postgres_required: self.backend == "postgres",
            seed: self.seed,
            smoke: self.smoke,
            quick: self.quick,
        })
    }
}

/// Parses `1000000`, `1_000_000`, `1,000,000`, `20k` or `1M`.
pub(crate) fn parse_count(s: &str) -> BoxResult<usize> {
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
        .map_err(|e| format!("{s:?} is not a count: {e}"))?;
    if n == 0 {
        return Err("a count must be at least 1".into());
    }
    Ok(n * scale)
}

/// Milliseconds since the Unix epoch now: the end of a data set's 30 days.
pub(crate) fn now_ms() -> BoxResult<i64> {
    Ok(i64::try_from(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_millis(),
    )?)
}

/// The CPUs this process may use.
pub(crate) fn cpus() -> usize {
    std::thread::available_parallelism().map_or(0, usize::from)
}

/// A section's title line.
pub(crate) fn section(title: &str) {
    println!("== {title}");
}

/// A goal's verdict.
pub(crate) fn verdict(met: bool) -> &'static str {
    if met { "MET" } else { "MISSED" }
}
