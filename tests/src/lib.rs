//! The harness of the end-to-end tests: the real `demo-app` binary as a child process, the
//! HTTP client that drives it, its audit log read through its own query API, and — for the
//! fault tests — a private PostgreSQL cluster, a fault-injecting TCP proxy in front of it and
//! a bounded load generator. One implementation of each, for every test file.
//!
//! | module | what it is |
//! | --- | --- |
//! | `seed` | what the demo seeds, and the canary secrets the tests give it |
//! | `demo` | the binary: built once, started on a free port, stopped or killed |
//! | `api` | a client of the running demo: [`Api`], [`Auth`], [`Reply`] |
//! | `log` | the audit log read through the query API, and assertions on records |
//! | `raw_http` | HTTP/1.1 over a bare TCP stream, for clients that must misbehave |
//! | `postgres` | a PostgreSQL cluster of the test's own, and its audit tables read directly |
//! | `nats` | a 3-node NATS JetStream cluster of the test's own, and the JetStream API asked directly |
//! | `process` | a binary run as a child process, its output in files, stopped or killed |
//! | `ingest` | the `audit-ingest` binary (fleet mode's ingestor): built once, started, stopped or killed |
//! | `proxy` | a TCP proxy that delays or cuts the way to PostgreSQL |
//! | `load` | a bounded load on the demo, and its accounting against the audit tables |
//! | `attack` | floods, stalled bodies and slow readers against the demo, its memory watched |
//! | `env` | the fault tests' settings from the environment, which the soak scales |
//! | `disk` | the files the demo leaves, searched for secrets |
//! | `spool` | the demo's spool directory, seen from outside |
//! | `skip` | [`skip`]: a test that cannot run here is skipped, or fails under `CI=true` |

mod api;
mod attack;
mod demo;
mod disk;
mod env;
mod ingest;
mod load;
mod log;
mod nats;
mod ports;
mod postgres;
mod process;
mod proxy;
mod raw_http;
mod seed;
mod skip;
mod spool;

pub use api::{Api, Auth, Reply};
pub use attack::{
    FloodOutcome, FloodSpec, MEASURED_MALLOC, MemoryPeak, MemoryWatch, PythonLines, SlowBodies,
    SlowBodyOutcome, SlowBodySpec, flood, long_user_agent, python_json_lines, slow_readers,
};
pub use demo::{
    DEMO_BIN_VAR, Demo, DemoConfig, demo_binary, demo_command, demo_has_flag, exits_within,
    status_kib,
};
pub use disk::{contains, files_under};
pub use env::{env_number, env_secs};
pub use ingest::{INGEST_BIN_VAR, IngestConfig, Ingestor, ingest_binary};
pub use load::{Accounting, Latency, Load, LoadSpec, RequestKind, Sample, Samples};
pub use log::{
    LogRead, assert_fields, assert_valid, log_window, not_found, read_log, read_log_where,
    read_one, wait_for_ray, wait_for_rays,
};
pub use nats::{NATS_BIN_VAR, NatsCluster, NatsConnection};
pub use ports::free_port;
pub use postgres::{PG_BIN_VAR, PgCluster, StoredRecords, wait_for_catch_up};
pub use process::signal;
pub use proxy::Proxy;
pub use raw_http::{RawResponse, parse_responses, raw_exchange, raw_one, read_until_closed};
pub use seed::{
    ADMIN_TOKEN, ALICE, ALICE_ID, BOB, DEMO, EXAMPLE_ZONE, OTHER, OTHER_TOKEN, PASSWORD,
    SEEDED_POLICY, USER_AGENT,
};
pub use skip::skip;
pub use spool::{spool_bytes, spool_segments, spool_text};
