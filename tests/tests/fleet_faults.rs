//! Faults of fleet mode (issue 23), under load, against the real binaries: two `demo-app`
//! instances publishing their audit records to a 3-node NATS JetStream cluster
//! (`AUDIT_NATS_URL`, the stream replicated on all three), two `audit-ingest` processes
//! sharing the stream's durable consumer and writing into a PostgreSQL cluster of the test's
//! own (initdb'd into a temporary directory, on a free port). Every node, port and directory is
//! the test's own: never the machine's NATS on 4222 or its PostgreSQL on 5432.
//!
//! Two tests, each starting one fleet and putting it through its faults in turn (a start of
//! three NATS nodes, PostgreSQL, two demos and two ingestors is most of a case's cost on the
//! 2-core machine, so the cases of a test share it; the two tests run side by side):
//!
//! - [`nats_faults_every_answer_stored_once`]: the stream leader's node SIGKILLed mid-load and
//!   restarted later; then the whole cluster unreachable (every node stopped) for
//!   [`NATS_OUTAGE`], the apps spooling and then replaying; then SIGTERM of everything after
//!   the load (demos, ingestors, every NATS node), and a restart of the cluster and an
//!   ingestor, which find every record still in the stream.
//! - [`ingest_faults_every_answer_stored_once`]: one of the two ingestors SIGKILLed mid-load
//!   (its unacknowledged messages are redelivered to the other once their acknowledgement wait
//!   passes); then PostgreSQL stopped (`-m immediate`) for [`pg_outage`] (30 s) mid-load, the
//!   stream holding the records and the ingestors resuming.
//!
//! Each case runs its own bounded load on both demos (a few thousand requests; the
//! `x-request-id` of every answer recorded) and then checks, once the ingestors caught up: every
//! answered request has exactly one record (its `raw_ray_id`), none twice, no gap record, and
//! every hash chain in the database verifies with the fleet's chain secret
//! (`verify::verify_all`, as `audit-verify --secret-file` runs it). Each case prints one
//! `SUMMARY fleet-<case> ...` line.
//!
//! `AUDIT_FAULT_LOAD_SECS` (the load around each fault, 8), `AUDIT_FLEET_RATE` (requests/s per
//! demo, 200) and `AUDIT_FAULT_OUTAGE_SECS` (the PostgreSQL outage, 30) scale them. Without
//! `nats-server` or PostgreSQL's server tools they print `SKIPPED` and pass, except under
//! `CI=true`, where they fail.
//!
//! Run with `cargo test --workspace --test fleet_faults -- --nocapture`.

#![allow(clippy::unwrap_used, missing_docs)]

use std::time::{Duration, Instant};

use audit_store::PostgresStore;
use audit_store::chain::{ChainKeys, ChainSecret};
use audit_store::verify::{self, Outcome};
use audit_tests::{
    Accounting, Demo, DemoConfig, IngestConfig, Ingestor, Load, LoadSpec, NatsCluster, PgCluster,
    Samples, StoredRecords, env_number, env_secs, wait_for_catch_up,
};

/// The stream the demos publish to and the ingestors consume (the binaries' default).
const STREAM: &str = "AUDIT";
/// Where poison messages go (the dead-letter stream the demos create beside [`STREAM`]).
const DEAD_LETTERS: &str = "AUDIT_DEAD";
/// The ingestors' durable consumer (the binary's default).
const CONSUMER: &str = "audit-ingest";

/// How long JetStream waits for an ingestor's acknowledgement before it hands a message to
/// another (the consumer's `ack_wait`; `audit-ingest` defaults to 30 s): shorter here, so that
/// the killed ingestor's messages come back within the test's time budget.
const ACK_WAIT: Duration = Duration::from_secs(10);

/// How long the whole NATS cluster stays unreachable.
const NATS_OUTAGE: Duration = Duration::from_secs(10);

/// The chain secret of the fleet (the ingestors write the chains; the demos authenticate
/// their spools with it): a fixed test value, so that the verifier is given it too.
const CHAIN_SECRET: &str = "5f3c0a8e9b7d6c4e2a1f0b9c8d7e6f5a4b3c2d1e0f9a8b7c6d5e4f3a2b1c0d9e";

/// The load around each fault (`AUDIT_FAULT_LOAD_SECS`, 8 s).
fn load_phase() -> Duration {
    env_secs("AUDIT_FAULT_LOAD_SECS", Duration::from_secs(8))
}

/// How long PostgreSQL is down (`AUDIT_FAULT_OUTAGE_SECS`, 30 s).
fn pg_outage() -> Duration {
    env_secs("AUDIT_FAULT_OUTAGE_SECS", Duration::from_secs(30))
}

/// The load on each demo (`AUDIT_FLEET_RATE`, 200 requests/s): a quarter authenticated writes,
/// the rest unauthenticated `POST`s.
fn load_spec() -> LoadSpec {
    LoadSpec::at_rate(env_number("AUDIT_FLEET_RATE", 200.0))
}

fn blocking<T>(f: impl FnOnce() -> T) -> T {
    tokio::task::block_in_place(f)
}

/// The fleet: the NATS cluster, PostgreSQL, two demos and two ingestors.
struct Fleet {
    nats: NatsCluster,
    pg: PgCluster,
    dir: tempfile::TempDir,
    demos: Vec<Demo>,
    ingestors: Vec<Option<Ingestor>>,
}

impl Fleet {
    /// Starts a fleet, or `None` when NATS or PostgreSQL is not available here (the test
    /// skips; a failure under `CI=true`).
    async fn start(test: &str) -> Option<Self> {
        let nats = blocking(|| NatsCluster::start_or_skip(test))?;
        let pg = blocking(|| PgCluster::start_or_skip(test))?;
        let dir = tempfile::Builder::new()
            .prefix("fleet-faults-")
            .tempdir()
            .unwrap();
        let mut fleet = Self {
            nats,
            pg,
            dir,
            demos: Vec::new(),
            ingestors: Vec::new(),
        };
        // One at a time: each migrates the app's tables, and the first creates the stream.
        for i in 0..2 {
            let demo = fleet.start_demo(i).await;
            fleet.demos.push(demo);
        }
        for i in 0..2 {
            let ingestor = fleet.start_ingestor(i).await;
            fleet.ingestors.push(Some(ingestor));
        }
        Some(fleet)
    }

    /// Demo `i`, publishing to the cluster. Failed authentications are not coalesced: every
    /// anonymous request of the load must be stored once.
    async fn start_demo(&self, i: usize) -> Demo {
        let config = DemoConfig::default()
            .database_url(self.pg.url())
            .arg("--failed-auth-rate")
            .arg(u32::MAX.to_string())
            .env("AUDIT_NATS_URL", self.nats.urls())
            .env("AUDIT_NATS_REPLICAS", "3")
            .env("DEMO_CHAIN_SECRET", CHAIN_SECRET);
        let dir = self.dir.path().join(format!("demo-{i}"));
        Demo::start_with(&dir.join("data"), &dir.join("logs"), &config).await
    }

    async fn start_ingestor(&self, i: usize) -> Ingestor {
        let config = IngestConfig::new(self.nats.urls(), self.pg.url())
            .env("AUDIT_CHAIN_SECRET", CHAIN_SECRET)
            .env("AUDIT_ACK_WAIT", ACK_WAIT.as_secs().to_string())
            .env("RUST_LOG", "info");
        Ingestor::start(&self.dir.path().join(format!("ingest-{i}")), &config).await
    }

    /// Load on both demos.
    fn load(&self) -> Vec<Load> {
        self.demos
            .iter()
            .map(|d| Load::start(d.base(), load_spec()))
            .collect()
    }

    /// The tails of every process's stderr, for failure messages.
    fn logs(&self) -> String {
        let mut out = String::new();
        for (i, demo) in self.demos.iter().enumerate() {
            out.push_str(&format!("--- demo {i}:\n{}\n", demo.stderr_tail(15)));
        }
        for (i, ingestor) in self.ingestors.iter().enumerate() {
            if let Some(ingestor) = ingestor {
                out.push_str(&format!(
                    "--- ingestor {i}:\n{}\n",
                    ingestor.stderr_tail(15)
                ));
            }
        }
        out
    }

    /// How many messages the consumer has not had acknowledged yet (pending delivery, and
    /// delivered but unacknowledged), as the cluster says; `None` if it cannot say.
    fn unacknowledged(&mut self) -> Option<u64> {
        let info = blocking(|| self.nats.consumer_info(STREAM, CONSUMER)).ok()?;
        Some(info["num_pending"].as_u64()? + info["num_ack_pending"].as_u64()?)
    }
}

/// Stops every load; all their samples, by send time.
async fn stop_loads(loads: Vec<Load>) -> Samples {
    let mut all = Vec::new();
    for load in loads {
        all.extend(load.stop().await.0);
    }
    all.sort_by_key(|s| s.sent);
    Samples(all)
}

/// What a case found, once the ingestors caught up.
struct Settled {
    stored: StoredRecords,
    accounting: Accounting,
    chains: usize,
    chains_ok: usize,
    dead_letters: u64,
    catch_up: Duration,
}

/// Waits until every answered request of `samples` is stored (or nothing new arrives for
/// `patience`), verifies every chain, and asserts the case's promise: most requests answered
/// (each with its `x-request-id`), each answer stored exactly once, no gap record, no broken
/// chain.
async fn settle(case: &str, fleet: &mut Fleet, samples: &Samples, patience: Duration) -> Settled {
    let rays = samples.answered_rays();
    let started = Instant::now();
    let stored = wait_for_catch_up(&fleet.pg, &rays, patience, Duration::from_secs(180)).await;
    let catch_up = started.elapsed();
    let accounting = Accounting::of(&rays, &stored);
    eprintln!(
        "[{case}] sent {}, answered by status {:?}, unanswered {}; {accounting}; caught up in \
         {catch_up:.1?}",
        samples.0.len(),
        samples.by_status(),
        samples.unanswered()
    );
    assert_eq!(
        samples.answered_without_ray(),
        0,
        "{case}: answers without x-request-id"
    );
    let answered = samples.0.len() - samples.unanswered();
    assert!(
        answered * 10 >= samples.0.len() * 9 && answered > 0,
        "{case}: only {answered} of {} requests answered\n{}",
        samples.0.len(),
        fleet.logs()
    );
    assert!(
        accounting.missing.is_empty() && accounting.duplicated.is_empty(),
        "{case}: {accounting}; missing (first 10): {:?}; duplicated (first 10): {:?}\n{}",
        &accounting.missing[..accounting.missing.len().min(10)],
        &accounting.duplicated[..accounting.duplicated.len().min(10)],
        fleet.logs()
    );
    assert_eq!(
        stored.gap_records, 0,
        "{case}: a gap record says records were lost"
    );
    let (chains, chains_ok) = verify_chains(case, &fleet.pg).await;
    let dead_letters = blocking(|| fleet.nats.stream_info(DEAD_LETTERS))
        .map(|i| i["state"]["messages"].as_u64().unwrap_or(0))
        .unwrap_or_else(|e| panic!("{case}: the dead-letter stream cannot be read: {e}"));
    assert_eq!(dead_letters, 0, "{case}: messages were dead-lettered");
    Settled {
        stored,
        accounting,
        chains,
        chains_ok,
        dead_letters,
        catch_up,
    }
}

/// Verifies every chain of the database with the fleet's secret (every record's seal and
/// link, and the checkpoints' signatures): none may be broken. How many chains, and how many
/// of them a checkpoint covers to the end (`ok`; the rest are `unverifiable`: their newest
/// records are sealed and linked, and the next checkpoint vouches for them).
async fn verify_chains(case: &str, pg: &PgCluster) -> (usize, usize) {
    let keys = ChainKeys::from_secret(&ChainSecret::from_hex(CHAIN_SECRET).unwrap());
    let store = PostgresStore::connect(&pg.url())
        .await
        .unwrap()
        .chained(keys.clone());
    let reports = verify::verify_all(&store, &keys.verifier(), &[])
        .await
        .unwrap();
    for report in &reports {
        assert!(
            report.broken.is_none() && report.outcome != Outcome::Broken,
            "{case}: the chain of {:?} is broken: {:?}",
            report.account_id,
            report.broken
        );
    }
    assert!(!reports.is_empty(), "{case}: no chain in the database");
    let ok = reports.iter().filter(|r| r.outcome == Outcome::Ok).count();
    (reports.len(), ok)
}

/// The case's `SUMMARY` line: `lead` counts, the accounting, the chains, then `tail`.
fn summary(case: &str, samples: &Samples, outcome: &Settled, tail: &[(&str, u64)]) {
    let a = &outcome.accounting;
    let counts: Vec<String> = [
        ("sent", samples.0.len() as u64),
        ("answered", a.answered as u64),
        ("unanswered", samples.unanswered() as u64),
        ("stored_once", a.once as u64),
        ("missing", a.missing.len() as u64),
        ("duplicated", a.duplicated.len() as u64),
        ("gap_records", outcome.stored.gap_records),
        ("chains", outcome.chains as u64),
        ("chains_broken", 0),
        ("chains_checkpointed", outcome.chains_ok as u64),
        ("dead_letters", outcome.dead_letters),
        ("catch_up_ms", outcome.catch_up.as_millis() as u64),
    ]
    .iter()
    .chain(tail)
    .map(|(k, v)| format!("{k}={v}"))
    .collect();
    eprintln!("SUMMARY fleet-{case} {}", counts.join(" "));
}

/// Answered requests sent in `[from, to)` since the load started.
fn answered_between(samples: &Samples, from: Duration, to: Duration) -> u64 {
    samples
        .0
        .iter()
        .filter(|s| s.answer.is_some() && s.sent >= from && s.sent < to)
        .count() as u64
}

// ---------------------------------------------------------------------------------------------
// NATS: a node killed, the whole cluster unreachable, everything stopped
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_faults_every_answer_stored_once() {
    let Some(mut fleet) = Fleet::start("fleet-nats").await else {
        return;
    };
    let phase = load_phase();

    // 1. The stream leader's node SIGKILLed a third into the load, restarted two thirds in.
    let loads = fleet.load();
    let started = Instant::now();
    tokio::time::sleep(phase / 3).await;
    let leader = blocking(|| fleet.nats.stream_info(STREAM))
        .ok()
        .and_then(|i| i["cluster"]["leader"].as_str().map(str::to_owned));
    let victim = leader
        .as_deref()
        .and_then(|l| fleet.nats.index_of(l))
        .unwrap_or(1);
    let killed_at = started.elapsed();
    blocking(|| fleet.nats.kill(victim));
    tokio::time::sleep(phase / 3).await;
    let restarting = Instant::now();
    blocking(|| fleet.nats.restart(victim));
    let restart = restarting.elapsed();
    let restarted_at = started.elapsed();
    tokio::time::sleep(phase / 3).await;
    let samples = stop_loads(loads).await;
    let outcome = settle("node-kill", &mut fleet, &samples, Duration::from_secs(40)).await;
    summary(
        "node-kill",
        &samples,
        &outcome,
        &[
            ("killed_leader", u64::from(leader.is_some())),
            (
                "answered_while_down",
                answered_between(&samples, killed_at, restarted_at),
            ),
            ("restart_ms", restart.as_millis() as u64),
        ],
    );
    for demo in &mut fleet.demos {
        demo.assert_alive("a NATS node's SIGKILL").await;
    }

    // 2. The whole cluster unreachable for NATS_OUTAGE: the apps spool, then replay.
    let loads = fleet.load();
    let started = Instant::now();
    tokio::time::sleep(phase / 2).await;
    let down_at = started.elapsed();
    blocking(|| fleet.nats.stop_all());
    tokio::time::sleep(NATS_OUTAGE).await;
    let up_at = started.elapsed();
    let starting = Instant::now();
    blocking(|| fleet.nats.start_all());
    let start_all = starting.elapsed();
    tokio::time::sleep(phase / 2).await;
    let samples = stop_loads(loads).await;
    for demo in &mut fleet.demos {
        demo.assert_alive("the NATS outage").await;
    }
    let outcome = settle("nats-outage", &mut fleet, &samples, Duration::from_secs(40)).await;
    summary(
        "nats-outage",
        &samples,
        &outcome,
        &[
            ("outage_s", NATS_OUTAGE.as_secs()),
            (
                "answered_in_outage",
                answered_between(&samples, down_at, up_at),
            ),
            ("cluster_start_ms", start_all.as_millis() as u64),
        ],
    );

    // 3. SIGTERM of everything after the load: demos (flushed to the stream), ingestors (their
    // batch committed and acknowledged), every NATS node. Started again, the cluster still
    // holds what was not ingested, and one ingestor stores it.
    let loads = fleet.load();
    tokio::time::sleep(phase / 2).await;
    let samples = stop_loads(loads).await;
    let stopping = Instant::now();
    for demo in &mut fleet.demos {
        let status = demo.stop().await;
        assert!(status.success(), "demo SIGTERM exit: {status}");
    }
    let demos_ms = stopping.elapsed().as_millis() as u64;
    let left_after_demos = fleet.unacknowledged().unwrap_or(u64::MAX);
    let stopping = Instant::now();
    for ingestor in fleet.ingestors.iter_mut().flatten() {
        let status = ingestor.stop().await;
        assert!(
            status.success(),
            "audit-ingest SIGTERM exit: {status}; {}",
            ingestor.stderr_tail(20)
        );
    }
    let ingestors_ms = stopping.elapsed().as_millis() as u64;
    // What was stored by then: never twice.
    let before_restart = blocking(|| StoredRecords::read(&fleet.pg)).unwrap();
    let twice = before_restart.by_ray.values().filter(|n| **n > 1).count();
    assert_eq!(twice, 0, "records stored twice before the restart");
    blocking(|| fleet.nats.stop_all());
    blocking(|| fleet.nats.start_all());
    let ingestor = fleet.start_ingestor(0).await;
    fleet.ingestors = vec![Some(ingestor)];
    let outcome = settle("sigterm-all", &mut fleet, &samples, Duration::from_secs(40)).await;
    let stored_before_restart = samples
        .answered_rays()
        .iter()
        .filter(|r| before_restart.by_ray.contains_key(*r))
        .count() as u64;
    summary(
        "sigterm-all",
        &samples,
        &outcome,
        &[
            ("demos_exit_ms", demos_ms),
            ("ingestors_exit_ms", ingestors_ms),
            ("unacked_after_demos", left_after_demos),
            ("stored_before_restart", stored_before_restart),
        ],
    );
    // Every record is stored: the last acknowledgements follow their commits.
    let deadline = Instant::now() + Duration::from_secs(15);
    while fleet.unacknowledged() != Some(0) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let left = fleet.unacknowledged();
    assert_eq!(
        left,
        Some(0),
        "the consumer still has messages to acknowledge"
    );
}

// ---------------------------------------------------------------------------------------------
// The ingest side: an ingestor killed, PostgreSQL down
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ingest_faults_every_answer_stored_once() {
    let Some(mut fleet) = Fleet::start("fleet-ingest").await else {
        return;
    };
    let phase = load_phase();

    // 4. One of the two ingestors SIGKILLed mid-load: what it had not acknowledged goes to the
    // other once the acknowledgement wait passes.
    let loads = fleet.load();
    tokio::time::sleep(phase / 2).await;
    let mut victim = fleet.ingestors[0].take().unwrap();
    victim.kill().await;
    tokio::time::sleep(phase / 2).await;
    let samples = stop_loads(loads).await;
    let ack_wait_s = blocking(|| fleet.nats.consumer_info(STREAM, CONSUMER))
        .ok()
        .and_then(|i| i["config"]["ack_wait"].as_u64())
        .map_or(0, |ns| ns / 1_000_000_000);
    // The redelivery waits for the acknowledgement wait: patience beyond it.
    let patience = Duration::from_secs(ack_wait_s + 15);
    let outcome = settle("ingestor-kill", &mut fleet, &samples, patience).await;
    fleet.ingestors[1]
        .as_mut()
        .unwrap()
        .assert_alive("the other ingestor's SIGKILL");
    summary(
        "ingestor-kill",
        &samples,
        &outcome,
        &[("ack_wait_s", ack_wait_s)],
    );
    fleet.ingestors[0] = Some(fleet.start_ingestor(0).await);

    // 5. PostgreSQL stopped for the outage mid-load: the stream holds the records, the
    // ingestors resume. (The demos' own tables are in the same PostgreSQL: authenticated
    // writes fail meanwhile, and are recorded like every answer.)
    let outage = pg_outage();
    let loads = fleet.load();
    let started = Instant::now();
    tokio::time::sleep(phase / 2).await;
    let down_at = started.elapsed();
    blocking(|| fleet.pg.stop("immediate"));
    tokio::time::sleep(outage / 2).await;
    let held_mid_outage = fleet.unacknowledged().unwrap_or(0);
    tokio::time::sleep(outage / 2).await;
    let up_at = started.elapsed();
    blocking(|| fleet.pg.restart());
    tokio::time::sleep(phase / 2).await;
    let samples = stop_loads(loads).await;
    for (i, ingestor) in fleet.ingestors.iter_mut().enumerate() {
        ingestor
            .as_mut()
            .unwrap()
            .assert_alive(&format!("the PostgreSQL outage (ingestor {i})"));
    }
    let outcome = settle("pg-outage", &mut fleet, &samples, Duration::from_secs(40)).await;
    summary(
        "pg-outage",
        &samples,
        &outcome,
        &[
            ("outage_s", outage.as_secs()),
            (
                "answered_in_outage",
                answered_between(&samples, down_at, up_at),
            ),
            ("held_in_stream_mid_outage", held_mid_outage),
        ],
    );
}
