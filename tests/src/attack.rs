//! Attacks on the running demo as tools, and what they cost it: a flood of anonymous requests,
//! connections that stall before the last byte of their body, slow readers of an NDJSON
//! export, the demo's memory watched through `/proc` while they run, and text checked the way
//! Python's `str.splitlines()` reads it. The attack suite (`tests/demo_attacks.rs`) asserts
//! bounds with them; its measurement of issue 18's figures prints them.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::JoinHandle;

use crate::demo::status_kib;

// ---------------------------------------------------------------------------------------------
// Memory
// ---------------------------------------------------------------------------------------------

/// The environment that makes a process's RSS follow its live memory: glibc's malloc returns
/// every block of 128 KiB or more to the system when it is freed (it otherwise raises that
/// threshold as blocks are freed and keeps them, so that one attack's freed buffers would
/// hide the next one's). Give it to the demo of a test that measures memory.
pub const MEASURED_MALLOC: (&str, &str) = ("GLIBC_TUNABLES", "glibc.malloc.mmap_threshold=131072");

/// Samples a process's resident memory (`VmRSS`) every 10 ms until stopped: the baseline when
/// it started and the highest sample since.
#[derive(Debug)]
pub struct MemoryWatch {
    stop: Arc<AtomicBool>,
    peak_kib: Arc<AtomicU64>,
    task: JoinHandle<()>,
    baseline_kib: u64,
}

/// What a [`MemoryWatch`] saw.
#[derive(Clone, Copy, Debug)]
pub struct MemoryPeak {
    /// `VmRSS` when the watch started, KiB.
    pub baseline_kib: u64,
    /// The highest `VmRSS` sampled, KiB.
    pub peak_kib: u64,
}

impl MemoryPeak {
    /// How much the peak exceeds the baseline, MiB.
    pub fn added_mib(&self) -> f64 {
        self.peak_kib.saturating_sub(self.baseline_kib) as f64 / 1024.0
    }
}

impl MemoryWatch {
    /// Starts watching the process `pid`.
    pub fn start(pid: u32) -> Self {
        let baseline_kib = status_kib(pid, "VmRSS").expect("the process runs");
        let stop = Arc::new(AtomicBool::new(false));
        let peak_kib = Arc::new(AtomicU64::new(baseline_kib));
        let task = tokio::spawn({
            let (stop, peak_kib) = (Arc::clone(&stop), Arc::clone(&peak_kib));
            async move {
                while !stop.load(Ordering::Relaxed) {
                    let Some(rss) = status_kib(pid, "VmRSS") else {
                        break;
                    };
                    peak_kib.fetch_max(rss, Ordering::Relaxed);
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            }
        });
        Self {
            stop,
            peak_kib,
            task,
            baseline_kib,
        }
    }

    /// The baseline and the peak so far.
    pub fn peak(&self) -> MemoryPeak {
        MemoryPeak {
            baseline_kib: self.baseline_kib,
            peak_kib: self.peak_kib.load(Ordering::Relaxed),
        }
    }

    /// Stops watching: the baseline and the peak.
    pub async fn stop(self) -> MemoryPeak {
        self.stop.store(true, Ordering::Relaxed);
        let peak = self.peak();
        self.task.await.expect("the sampler does not panic");
        peak
    }
}

// ---------------------------------------------------------------------------------------------
// A flood of anonymous requests
// ---------------------------------------------------------------------------------------------

/// An anonymous flood: `GET path` without credentials, with a `User-Agent` of
/// `user_agent_bytes`, from `connections` clients at once, until `requests` were sent or
/// `duration` passed.
#[derive(Clone, Debug)]
pub struct FloodSpec {
    /// The path (and query) every request asks for.
    pub path: String,
    /// The size of each request's `User-Agent`.
    pub user_agent_bytes: usize,
    /// Clients sending at once, each waiting for its answer before the next request.
    pub connections: usize,
    /// The most requests to send.
    pub requests: usize,
    /// The longest the flood lasts.
    pub duration: Duration,
}

/// What a flood got.
#[derive(Clone, Debug, Default)]
pub struct FloodOutcome {
    /// Requests sent.
    pub sent: usize,
    /// Answers by status.
    pub by_status: BTreeMap<u16, usize>,
    /// Requests that got no answer (connection refused or cut, timeout).
    pub unanswered: usize,
    /// How long it lasted.
    pub elapsed: Duration,
}

/// The `User-Agent` of a flood: `flood/1.0 ` and then `x` up to `bytes`.
pub fn long_user_agent(bytes: usize) -> String {
    let mut agent = String::from("flood/1.0 ");
    agent.extend(std::iter::repeat_n('x', bytes.saturating_sub(agent.len())));
    agent
}

/// Runs `spec` against the demo at `base` (its base URL).
pub async fn flood(base: &str, spec: &FloodSpec) -> FloodOutcome {
    let client = reqwest::Client::builder()
        .user_agent(long_user_agent(spec.user_agent_bytes))
        .timeout(Duration::from_secs(30))
        .build()
        .expect("an HTTP client");
    let url = format!("{base}{}", spec.path);
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let workers: Vec<JoinHandle<FloodOutcome>> = (0..spec.connections)
        .map(|_| {
            let (client, url, next) = (client.clone(), url.clone(), Arc::clone(&next));
            let (requests, duration) = (spec.requests, spec.duration);
            tokio::spawn(async move {
                let mut outcome = FloodOutcome::default();
                while next.fetch_add(1, Ordering::Relaxed) < requests
                    && started.elapsed() < duration
                {
                    outcome.sent += 1;
                    match client.get(&url).send().await {
                        Ok(response) => {
                            let status = response.status().as_u16();
                            let _ = response.bytes().await;
                            *outcome.by_status.entry(status).or_default() += 1;
                        }
                        Err(_) => outcome.unanswered += 1,
                    }
                }
                outcome
            })
        })
        .collect();
    let mut total = FloodOutcome::default();
    for worker in workers {
        let outcome = worker.await.expect("a flood worker does not panic");
        total.sent += outcome.sent;
        total.unanswered += outcome.unanswered;
        for (status, n) in outcome.by_status {
            *total.by_status.entry(status).or_default() += n;
        }
    }
    total.elapsed = started.elapsed();
    total
}

// ---------------------------------------------------------------------------------------------
// Bodies that never end
// ---------------------------------------------------------------------------------------------

/// Connections that each send the head of `POST path` without credentials, announcing a body
/// of `body_bytes`, then all of it but the last byte, and stall.
#[derive(Clone, Debug)]
pub struct SlowBodySpec {
    /// How many connections.
    pub connections: usize,
    /// The path of an operation whose body the audit layer reads before the app's auth runs.
    pub path: String,
    /// The announced `Content-Length`.
    pub body_bytes: usize,
}

/// What became of one stalled connection.
#[derive(Clone, Debug)]
pub struct SlowBodyOutcome {
    /// Whether every byte but the last went out (else the server stopped reading first).
    pub sent_all: bool,
    /// The status of the answer, if one came.
    pub status: Option<u16>,
    /// Whether the server closed (or reset) the connection before an answer's head came.
    pub closed: bool,
    /// When the answer or the close came, since the connection started.
    pub after: Option<Duration>,
}

/// Stalled connections in flight: see [`start`](Self::start).
#[derive(Debug)]
pub struct SlowBodies {
    tasks: Vec<JoinHandle<SlowBodyOutcome>>,
    done_sending: Arc<AtomicUsize>,
}

impl SlowBodies {
    /// Opens every connection of `spec` to `addr`; each waits for its answer until `deadline`.
    pub fn start(addr: SocketAddr, spec: &SlowBodySpec, deadline: Instant) -> Self {
        let head: Arc<[u8]> = format!(
            "POST {} HTTP/1.1\r\nHost: {addr}\r\nUser-Agent: slow-body/1.0\r\n\
             Content-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            spec.path, spec.body_bytes
        )
        .into_bytes()
        .into();
        let mut body = b"{\"name\":\"".to_vec();
        body.resize(spec.body_bytes.saturating_sub(1), b'a');
        let body: Arc<[u8]> = body.into();
        let done_sending = Arc::new(AtomicUsize::new(0));
        let tasks = (0..spec.connections)
            .map(|_| {
                tokio::spawn(stalled_connection(
                    addr,
                    Arc::clone(&head),
                    Arc::clone(&body),
                    Arc::clone(&done_sending),
                    deadline,
                ))
            })
            .collect();
        Self {
            tasks,
            done_sending,
        }
    }

    /// Waits until every connection sent all it will (all but the last byte, or as much as
    /// the server read before refusing), or `limit` passed; how many did.
    pub async fn wait_sent(&self, limit: Duration) -> usize {
        let deadline = Instant::now() + limit;
        loop {
            let done = self.done_sending.load(Ordering::Relaxed);
            if done == self.tasks.len() || Instant::now() > deadline {
                return done;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Every connection's outcome, once each got its answer or its deadline passed.
    pub async fn outcomes(self) -> Vec<SlowBodyOutcome> {
        let mut outcomes = Vec::with_capacity(self.tasks.len());
        for task in self.tasks {
            outcomes.push(task.await.expect("a connection task does not panic"));
        }
        outcomes
    }
}

async fn stalled_connection(
    addr: SocketAddr,
    head: Arc<[u8]>,
    body: Arc<[u8]>,
    done_sending: Arc<AtomicUsize>,
    deadline: Instant,
) -> SlowBodyOutcome {
    let started = Instant::now();
    let Ok(stream) = TcpStream::connect(addr).await else {
        done_sending.fetch_add(1, Ordering::Relaxed);
        return SlowBodyOutcome {
            sent_all: false,
            status: None,
            closed: true,
            after: Some(started.elapsed()),
        };
    };
    let (mut reader, mut writer) = stream.into_split();
    let send = async {
        writer.write_all(&head).await?;
        writer.write_all(&body).await
    };
    // Read while sending: a refusal may come before the body is out. The answer's head is
    // enough; a server that answers may still close, or not.
    let answer = async {
        let mut received = Vec::new();
        let mut chunk = [0u8; 4096];
        loop {
            match reader.read(&mut chunk).await {
                Ok(0) | Err(_) => return (received, true),
                Ok(n) => received.extend_from_slice(&chunk[..n]),
            }
            if received.windows(4).any(|w| w == b"\r\n\r\n") {
                return (received, false);
            }
        }
    };
    tokio::pin!(send, answer);
    let mut sent_all = false;
    let until = tokio::time::Instant::from_std(deadline);
    let outcome = tokio::time::timeout_at(until, async {
        tokio::select! {
            sent = &mut send => {
                sent_all = sent.is_ok();
                done_sending.fetch_add(1, Ordering::Relaxed);
                (&mut answer).await
            }
            received = &mut answer => {
                done_sending.fetch_add(1, Ordering::Relaxed);
                received
            }
        }
    })
    .await;
    let (received, closed) = outcome.unwrap_or_default();
    let status = std::str::from_utf8(&received)
        .ok()
        .and_then(|text| text.strip_prefix("HTTP/1.1 "))
        .and_then(|rest| rest.get(..3)?.parse().ok());
    SlowBodyOutcome {
        sent_all,
        status,
        closed,
        after: (closed || status.is_some()).then(|| started.elapsed()),
    }
}

// ---------------------------------------------------------------------------------------------
// Slow readers
// ---------------------------------------------------------------------------------------------

/// Opens `readers` connections that each ask for `path` with the headers `headers` (lines
/// without their CRLF), read its first `read_bytes` and then read nothing more, holding the
/// connection open until dropped: the server has to keep what it wants to send.
pub async fn slow_readers(
    addr: SocketAddr,
    path: &str,
    headers: &[String],
    readers: usize,
    read_bytes: usize,
) -> Vec<TcpStream> {
    let mut request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\n");
    for header in headers {
        request.push_str(header);
        request.push_str("\r\n");
    }
    request.push_str("\r\n");
    let mut streams = Vec::with_capacity(readers);
    for _ in 0..readers {
        let mut stream = TcpStream::connect(addr).await.expect("connect");
        stream
            .write_all(request.as_bytes())
            .await
            .expect("the request is sent");
        let mut read = 0;
        let mut chunk = vec![0u8; 16 * 1024];
        while read < read_bytes {
            match tokio::time::timeout(Duration::from_secs(20), stream.read(&mut chunk)).await {
                Ok(Ok(0) | Err(_)) | Err(_) => break,
                Ok(Ok(n)) => read += n,
            }
        }
        streams.push(stream);
    }
    streams
}

// ---------------------------------------------------------------------------------------------
// Lines as Python reads them
// ---------------------------------------------------------------------------------------------

/// How Python reads a text of JSON lines: `str.splitlines()`, then `json.loads` on each line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PythonLines {
    /// How many lines `splitlines()` makes of it.
    pub lines: usize,
    /// How many of them `json.loads` parses.
    pub json: usize,
}

/// `text` read by `python3` as [`PythonLines`]; `None` when there is no `python3` here.
pub fn python_json_lines(text: &str) -> Option<PythonLines> {
    const SCRIPT: &str = "import json, sys\n\
        lines = sys.stdin.buffer.read().decode('utf-8').splitlines()\n\
        ok = 0\n\
        for line in lines:\n\
        \x20   try:\n\
        \x20       json.loads(line)\n\
        \x20       ok += 1\n\
        \x20   except ValueError:\n\
        \x20       pass\n\
        print(len(lines), ok)\n";
    let mut child = Command::new("python3")
        .args(["-c", SCRIPT])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .ok()?;
    {
        use std::io::Write as _;
        let mut stdin = child.stdin.take().expect("a piped stdin");
        stdin
            .write_all(text.as_bytes())
            .expect("python3 reads its stdin");
    }
    let output = child.wait_with_output().expect("python3 runs");
    assert!(output.status.success(), "python3 failed: {output:?}");
    let out = String::from_utf8_lossy(&output.stdout);
    let mut numbers = out.split_whitespace().map(|n| n.parse().expect("a count"));
    Some(PythonLines {
        lines: numbers.next().expect("the line count"),
        json: numbers.next().expect("the JSON count"),
    })
}
