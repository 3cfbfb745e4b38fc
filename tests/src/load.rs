//! A bounded load on the demo, and what became of it: every request's send time, latency,
//! status and `x-request-id`, compared with what the audit tables hold.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::task::JoinHandle;

use crate::postgres::StoredRecords;
use crate::seed::{ADMIN_TOKEN, DEMO, EXAMPLE_ZONE, SEEDED_POLICY};

/// What a load request does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RequestKind {
    /// An authenticated audited write (`PUT` of the seeded policy, `POST` of a new one): the
    /// app's own handler and authentication use the database.
    Write,
    /// An audited `POST` without credentials, answered `401` by the demo without touching any
    /// database: its latency is the audit layer's alone.
    Anonymous,
}

/// One request of the load.
#[derive(Clone, Debug)]
pub struct Sample {
    /// What it did.
    pub kind: RequestKind,
    /// When it was sent, since the load started.
    pub sent: Duration,
    /// How long its answer took, body included (until it failed, for no answer).
    pub latency: Duration,
    /// The answer's status and `x-request-id`; `None` when no answer came (connection
    /// refused or cut, timeout).
    pub answer: Option<(u16, Option<String>)>,
    /// The name of the policy an authenticated `POST` asked to create (unique in the run).
    pub created: Option<String>,
}

/// How much load, by kind: workers and the total rate they aim at (requests/s).
#[derive(Clone, Copy, Debug)]
pub struct LoadSpec {
    /// Workers sending authenticated writes.
    pub writers: usize,
    /// The writers' total rate, requests/s.
    pub write_rate: f64,
    /// Workers sending unauthenticated requests.
    pub anonymous: usize,
    /// The unauthenticated workers' total rate, requests/s.
    pub anonymous_rate: f64,
}

impl LoadSpec {
    /// `total` requests/s: a quarter authenticated writes, the rest unauthenticated, with a
    /// worker for every 50 requests/s (each worker waits for its answer before the next).
    pub fn at_rate(total: f64) -> Self {
        let write_rate = (total / 4.0).max(1.0);
        let anonymous_rate = (total - write_rate).max(1.0);
        let workers = |rate: f64| ((rate / 50.0).ceil() as usize).max(1);
        Self {
            writers: workers(write_rate),
            write_rate,
            anonymous: workers(anonymous_rate),
            anonymous_rate,
        }
    }
}

/// A running load generator; [`stop`](Self::stop) it to get every sample.
#[derive(Debug)]
pub struct Load {
    stop: Arc<AtomicBool>,
    tasks: Vec<JoinHandle<Vec<Sample>>>,
    /// When it started: samples' send times count from here.
    pub started: Instant,
}

fn policy_body(name: &str) -> Value {
    json!({
        "name": name,
        "description": "written by the fault tests",
        "enabled": true,
        "alert_type": "clickhouse_alert_fw_ent_anomaly",
        "filters": {"services": ["securitylevel", "ratelimit"], "zones": [EXAMPLE_ZONE]},
        "mechanisms": {"webhooks": [{"url": "https://hooks.example.com/services/T000/B000/XXXX"}]},
    })
}

impl Load {
    /// Starts the workers of `spec` against the demo at `base` (its base URL).
    pub fn start(base: &str, spec: LoadSpec) -> Self {
        let client = reqwest::Client::builder()
            .user_agent("faults-load/1.0")
            .timeout(Duration::from_secs(30))
            .build()
            .expect("an HTTP client");
        static LOADS: AtomicU64 = AtomicU64::new(0);
        let load = LOADS.fetch_add(1, Ordering::Relaxed);
        let stop = Arc::new(AtomicBool::new(false));
        let started = Instant::now();
        let mut tasks = Vec::new();
        let workers = [
            (RequestKind::Write, spec.writers, spec.write_rate),
            (RequestKind::Anonymous, spec.anonymous, spec.anonymous_rate),
        ];
        for (kind, count, rate) in workers {
            for worker in 0..count {
                let period = Duration::from_secs_f64(count as f64 / rate.max(0.001));
                tasks.push(tokio::spawn(worker_loop(
                    client.clone(),
                    base.to_owned(),
                    kind,
                    format!("{load}.{worker}"),
                    period,
                    Arc::clone(&stop),
                    started,
                )));
            }
        }
        Self {
            stop,
            tasks,
            started,
        }
    }

    /// Stops sending and waits for the requests in flight; every sample, by send time.
    pub async fn stop(self) -> Samples {
        self.stop.store(true, Ordering::Release);
        let mut samples = Vec::new();
        for task in self.tasks {
            samples.extend(task.await.expect("a load worker"));
        }
        samples.sort_by_key(|s| s.sent);
        Samples(samples)
    }
}

async fn worker_loop(
    client: reqwest::Client,
    base: String,
    kind: RequestKind,
    worker: String,
    period: Duration,
    stop: Arc<AtomicBool>,
    started: Instant,
) -> Vec<Sample> {
    let mut samples = Vec::new();
    let mut ticks = tokio::time::interval(period);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let policies = format!("{base}/accounts/{DEMO}/alerting/v3/policies");
    let seeded = format!("{policies}/{SEEDED_POLICY}");
    let mut n = 0u64;
    loop {
        ticks.tick().await;
        if stop.load(Ordering::Acquire) {
            return samples;
        }
        n += 1;
        let created = (kind == RequestKind::Write && n.is_multiple_of(2))
            .then(|| format!("load {worker}-{n}"));
        let request = match kind {
            RequestKind::Write if created.is_some() => client
                .post(&policies)
                .bearer_auth(ADMIN_TOKEN)
                .json(&policy_body(created.as_deref().unwrap_or_default())),
            RequestKind::Write => client
                .put(&seeded)
                .bearer_auth(ADMIN_TOKEN)
                .json(&policy_body(&format!("seeded, written by {worker}-{n}"))),
            RequestKind::Anonymous => client
                .post(&policies)
                .json(&policy_body(&format!("anonymous {worker}-{n}"))),
        };
        let sent = started.elapsed();
        let began = Instant::now();
        let answer = match request.send().await {
            Ok(response) => {
                let status = response.status().as_u16();
                let ray = response
                    .headers()
                    .get("x-request-id")
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned);
                // The answer counts once its body is in.
                match response.bytes().await {
                    Ok(_) => Some((status, ray)),
                    Err(_) => None,
                }
            }
            Err(_) => None,
        };
        samples.push(Sample {
            kind,
            sent,
            latency: began.elapsed(),
            answer,
            created,
        });
    }
}

/// Every request of a load, by send time.
#[derive(Debug)]
pub struct Samples(pub Vec<Sample>);

impl Samples {
    /// The `x-request-id` of every answered request (any status).
    pub fn answered_rays(&self) -> Vec<String> {
        self.0
            .iter()
            .filter_map(|s| s.answer.as_ref()?.1.clone())
            .collect()
    }

    /// Answers without an `x-request-id` (an audited route always sends one).
    pub fn answered_without_ray(&self) -> usize {
        self.0
            .iter()
            .filter(|s| matches!(s.answer, Some((_, None))))
            .count()
    }

    /// Requests that got no answer.
    pub fn unanswered(&self) -> usize {
        self.0.iter().filter(|s| s.answer.is_none()).count()
    }

    /// Answered requests by status.
    pub fn by_status(&self) -> Vec<(u16, usize)> {
        let mut counts: HashMap<u16, usize> = HashMap::new();
        for s in &self.0 {
            if let Some((status, _)) = s.answer {
                *counts.entry(status).or_default() += 1;
            }
        }
        let mut counts: Vec<_> = counts.into_iter().collect();
        counts.sort_unstable();
        counts
    }

    /// Latency percentiles of the answered requests of `kind` sent in `[from, to)`.
    pub fn latency(&self, kind: RequestKind, from: Duration, to: Duration) -> Latency {
        let mut latencies: Vec<Duration> = self
            .0
            .iter()
            .filter(|s| s.kind == kind && s.answer.is_some() && s.sent >= from && s.sent < to)
            .map(|s| s.latency)
            .collect();
        latencies.sort_unstable();
        Latency::of(&latencies)
    }
}

/// Latency percentiles of a set of requests.
#[derive(Clone, Copy, Debug, Default)]
pub struct Latency {
    /// How many requests.
    pub count: usize,
    /// The median.
    pub p50: Duration,
    /// The 99th percentile.
    pub p99: Duration,
    /// The slowest.
    pub max: Duration,
}

impl Latency {
    /// The percentiles of `sorted` (ascending).
    pub fn of(sorted: &[Duration]) -> Self {
        if sorted.is_empty() {
            return Self::default();
        }
        let at = |q: f64| sorted[((sorted.len() - 1) as f64 * q).round() as usize];
        Self {
            count: sorted.len(),
            p50: at(0.50),
            p99: at(0.99),
            max: sorted[sorted.len() - 1],
        }
    }
}

impl std::fmt::Display for Latency {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "n={:>5} p50={:>7.1?} p99={:>7.1?} max={:>7.1?}",
            self.count, self.p50, self.p99, self.max
        )
    }
}

/// How the answered rays of a load compare with the audit tables.
#[derive(Debug)]
pub struct Accounting {
    /// Answered requests (each has an `x-request-id`).
    pub answered: usize,
    /// Answered and stored exactly once.
    pub once: usize,
    /// Answered and not stored.
    pub missing: Vec<String>,
    /// Answered and stored more than once: (ray, copies).
    pub duplicated: Vec<(String, u64)>,
    /// Stored records whose request got no answer (or is not from this load).
    pub stored_unanswered: u64,
}

impl Accounting {
    /// Compares the answered `rays` with what `stored` holds.
    pub fn of(rays: &[String], stored: &StoredRecords) -> Self {
        let mut once = 0;
        let mut missing = Vec::new();
        let mut duplicated = Vec::new();
        for ray in rays {
            match stored.by_ray.get(ray).copied().unwrap_or(0) {
                0 => missing.push(ray.clone()),
                1 => once += 1,
                n => duplicated.push((ray.clone(), n)),
            }
        }
        let answered: HashSet<&String> = rays.iter().collect();
        let stored_unanswered = stored
            .by_ray
            .iter()
            .filter(|(ray, _)| !answered.contains(ray))
            .map(|(_, n)| *n)
            .sum();
        Self {
            answered: rays.len(),
            once,
            missing,
            duplicated,
            stored_unanswered,
        }
    }
}

impl std::fmt::Display for Accounting {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "answered {}, stored exactly once {}, missing {}, duplicated {}, stored without an answer {}",
            self.answered,
            self.once,
            self.missing.len(),
            self.duplicated.len(),
            self.stored_unanswered
        )
    }
}
