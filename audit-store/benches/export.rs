//! Push export throughput: an export job (every account, NDJSON, gzip, HMAC-signed, 500
//! records a batch) delivering a SQLite store's records to a local HTTP receiver, next to
//! `curl` posting the same batches, built beforehand, to the same receiver, in the same run.
//!
//! A load harness, not criterion: one run per side.
//!
//! ```text
//! cargo bench -p audit-store --bench export -- --rows 200000
//! cargo bench -p audit-store --bench export -- --quick     # 20k rows
//! ```
//!
//! Under `cargo test --benches` (no `--bench` argument) it runs a 2,000-row smoke pass, and
//! skips the `curl` side when `curl` is missing.
//!
//! # What is measured, and how it is kept fair
//!
//! - The receiver is this benchmark's binary run again as a child process (axum; it reads
//!   each body whole and answers 200): its CPU is neither side's.
//! - Ours: from the job's start until the receiver has taken every record: reading the
//!   committed records page by page, encoding, gzip, signing, HTTP. CPU per record is this
//!   process's user+system time over that span.
//! - `curl`: the job's own batches (same records, same gzip level, same headers, signed),
//!   captured before the clock starts and written to files, posted by one `curl -K` run (one
//!   kept-alive connection, as ours). Its CPU is the reaped child's user+system time. It does
//!   none of the reading, encoding or compressing: the ratio is what the export costs on top
//!   of sending.

mod support;

use std::io::Write as _;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use audit_store::SqliteStore;
use audit_store::export::{
    DeliveryError, Destination, EncodedBatch, ExportJob, HttpDestination, Secret, signature,
};
use audit_store::model::StoredRecord;
use audit_store::store::AuditStore as _;
use support::cpu::{Cpu, clock_ticks_per_second, per_row};
use support::records::Dataset;
use support::world::{Profile, World};
use support::{Argv, BoxResult};

const USAGE: &str = "cargo bench -p audit-store --bench export -- [--rows N] [--quick] [--seed N]";
/// The variable that makes the binary the receiver (its value is ignored).
const RECEIVER_VAR: &str = "AUDIT_EXPORT_BENCH_RECEIVER";
const SECRET: &str = "bench-secret";

fn main() {
    if std::env::var_os(RECEIVER_VAR).is_some() {
        receiver();
        return;
    }
    support::harness(
        "export",
        USAGE,
        || {
            let mut argv = Argv::from_env(USAGE, 7);
            while let Some(arg) = argv.next_flag()? {
                argv.unknown(&arg)?;
            }
            argv.common()
        },
        run,
    );
}

/// The receiver: prints its port, then takes posts until its stdin closes.
fn receiver() {
    let Ok(runtime) = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
    else {
        std::process::exit(1);
    };
    runtime.block_on(async {
        let Ok(listener) = tokio::net::TcpListener::bind("127.0.0.1:0").await else {
            std::process::exit(1);
        };
        let port = listener.local_addr().map_or(0, |a| a.port());
        println!("{port}");
        let _ = std::io::stdout().flush();
        let app = axum::Router::new().route(
            "/ingest",
            axum::routing::post(|body: axum::body::Bytes| async move {
                std::hint::black_box(body.len());
                "ok"
            }),
        );
        let stdin_closed = tokio::task::spawn_blocking(|| {
            let _ = std::io::Read::read_to_end(&mut std::io::stdin(), &mut Vec::new());
        });
        let _ = axum::serve(listener, app)
            .with_graceful_shutdown(async {
                let _ = stdin_closed.await;
            })
            .await;
    });
}

/// A batch and its gzipped body.
type Captured = (EncodedBatch, Vec<u8>);

/// Keeps the batches the job builds, as `curl` will send them.
#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<Captured>>>);

impl Destination for Capture {
    async fn deliver(&self, batch: &EncodedBatch) -> Result<(), DeliveryError> {
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(batch.lines.as_bytes())
            .map_err(|e| DeliveryError::new(e.to_string()))?;
        let body = gz.finish().map_err(|e| DeliveryError::new(e.to_string()))?;
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push((batch.clone(), body));
        Ok(())
    }
}

/// Counts what a destination delivered.
struct Counted<D>(D, Arc<AtomicU64>);

impl<D: Destination> Destination for Counted<D> {
    async fn deliver(&self, batch: &EncodedBatch) -> Result<(), DeliveryError> {
        self.0.deliver(batch).await?;
        self.1.fetch_add(batch.records as u64, Ordering::Relaxed);
        Ok(())
    }
}

/// Runs `job` until `delivered` reaches `n`.
async fn run_job<D: Destination>(
    job: ExportJob<SqliteStore, D>,
    delivered: &AtomicU64,
    n: u64,
) -> BoxResult<()> {
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(job.run(async move {
        let _ = stopped.await;
    }));
    let deadline = Instant::now() + Duration::from_secs(600);
    while delivered.load(Ordering::Relaxed) < n {
        if Instant::now() > deadline {
            return Err("the export did not finish in 10 minutes".into());
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let _ = stop.send(());
    task.await?;
    Ok(())
}

fn job<D: Destination>(
    name: &str,
    store: SqliteStore,
    destination: D,
) -> BoxResult<ExportJob<SqliteStore, D>> {
    Ok(ExportJob::new(name, store, destination)?
        .settle(Duration::ZERO)
        .poll_interval(Duration::from_millis(1)))
}

async fn run(common: support::Common) -> BoxResult<()> {
    let n = common.rows;
    println!(
        "export bench ({}): {n} records, {} accounts, NDJSON gzip signed, 500 a batch, {} CPUs, load {}",
        common.mode(),
        Profile::INGEST.accounts,
        support::cpus(),
        support::cpu::load_averages()
    );
    let tmp = tempfile::Builder::new().prefix("audit-export-").tempdir()?;
    let store = SqliteStore::open(tmp.path().join("audit.db")).await?;
    store.migrate().await?;
    let data = Dataset {
        world: Arc::new(World::new(common.seed, Profile::INGEST)),
        n,
        seed: common.seed,
        end_ms: support::now_ms()?,
    };
    let rows: Vec<StoredRecord> = data
        .iter()
        .map(StoredRecord::try_from)
        .collect::<Result<_, _>>()?;
    for chunk in rows.chunks(5000) {
        store.insert(chunk).await?;
    }
    let json_bytes: usize = rows.iter().map(|r| r.record.len() + 1).sum();
    drop(rows);

    // The batches, captured before any clock starts.
    let capture = Capture::default();
    let captured = Arc::new(AtomicU64::new(0));
    run_job(
        job(
            "capture",
            store.clone(),
            Counted(capture.clone(), Arc::clone(&captured)),
        )?,
        &captured,
        n as u64,
    )
    .await?;
    let batches = std::mem::take(&mut *capture.0.lock().unwrap_or_else(|e| e.into_inner()));
    let gz_bytes: usize = batches.iter().map(|(_, body)| body.len()).sum();
    println!(
        "  {} batches, {:.1} MB of NDJSON, {:.1} MB gzipped",
        batches.len(),
        json_bytes as f64 / 1e6,
        gz_bytes as f64 / 1e6
    );

    let mut child = Command::new(std::env::current_exe()?)
        .env(RECEIVER_VAR, "1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()?;
    let mut port = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(child.stdout.take().ok_or("the receiver's stdout")?),
        &mut port,
    )?;
    let url = format!("http://127.0.0.1:{}/ingest", port.trim());
    let hz = clock_ticks_per_second();

    // Ours.
    let delivered = Arc::new(AtomicU64::new(0));
    let destination = Counted(
        HttpDestination::new(&url)?.secret(Secret::new(SECRET)),
        Arc::clone(&delivered),
    );
    let ours_job = job("bench", store.clone(), destination)?;
    let cpu = Cpu::before(None);
    let started = Instant::now();
    run_job(ours_job, &delivered, n as u64).await?;
    let ours_wall = started.elapsed();
    let ours_cpu = Cpu::after(None).since(cpu).own;

    // curl, the same batches.
    let curl = Command::new("curl").arg("--version").output().is_ok();
    let mut curl_figures = None;
    if curl {
        let mut config = String::new();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)?
            .as_secs();
        for (i, (batch, body)) in batches.iter().enumerate() {
            let path = tmp.path().join(format!("batch-{i}.gz"));
            std::fs::write(&path, body)?;
            if i > 0 {
                config.push_str("next\n");
            }
            config.push_str(&format!(
                "url = \"{url}\"\nrequest = \"POST\"\nsilent\noutput = \"/dev/null\"\n\
                 header = \"Content-Type: application/x-ndjson\"\nheader = \"Content-Encoding: gzip\"\n\
                 header = \"Idempotency-Key: {}\"\nheader = \"X-Audit-Signature: {}\"\n\
                 data-binary = \"@{}\"\n",
                batch.idempotency_key,
                signature(&Secret::new(SECRET), now, body),
                path.display()
            ));
        }
        let config_path = tmp.path().join("curl.cfg");
        std::fs::write(&config_path, config)?;
        let cpu = Cpu::before(None);
        let started = Instant::now();
        let status = Command::new("curl")
            .arg("--fail")
            .arg("-K")
            .arg(&config_path)
            .status()?;
        let wall = started.elapsed();
        let cpu = Cpu::after(None).since(cpu).children;
        if !status.success() {
            return Err(format!("curl failed: {status}").into());
        }
        curl_figures = Some((wall, cpu));
    } else {
        println!("  curl is not installed: its side is skipped (apt-get install -y curl)");
    }
    drop(child.stdin.take());
    let _ = child.wait();

    let rate = |wall: Duration| n as f64 / wall.as_secs_f64();
    println!(
        "  ours: {:>9.0} records/s ({:.2} s), CPU {:.2} µs/record",
        rate(ours_wall),
        ours_wall.as_secs_f64(),
        per_row(ours_cpu, hz, n as u64)
    );
    if let Some((wall, cpu)) = curl_figures {
        println!(
            "  curl: {:>9.0} records/s ({:.2} s), CPU {:.2} µs/record",
            rate(wall),
            wall.as_secs_f64(),
            per_row(cpu, hz, n as u64)
        );
        println!(
            "  ours / curl: throughput {:.2}x, CPU per record {:.2}x",
            rate(ours_wall) / rate(wall),
            ours_cpu as f64 / (cpu.max(1)) as f64
        );
    }
    Ok(())
}
