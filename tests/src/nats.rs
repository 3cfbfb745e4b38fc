//! A NATS JetStream cluster of the test's own: three `nats-server` processes (JetStream on,
//! one cluster, routes between them), each on free loopback ports with its store in a
//! temporary directory; never the machine's own server on 4222. Nodes can be SIGKILLed and
//! restarted on the same ports and store, the whole cluster stopped and started again, and
//! every node is killed when the cluster is dropped.
//!
//! [`NatsConnection`] speaks the NATS client protocol over a plain TCP stream, just enough
//! for a test to ask the JetStream API (`$JS.API.*`) what a stream or a consumer holds and
//! to publish with an acknowledgement: the cluster is checked with the server's own answers,
//! independently of the library under test.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::ports::free_port;
use crate::process::signal;
use crate::skip::or_skip;

/// The variable that names the `nats-server` binary, where it is not `/usr/sbin/nats-server`
/// (Debian's package) or on the `PATH`.
pub const NATS_BIN_VAR: &str = "AUDIT_TEST_NATS_SERVER";

/// How long a cluster (or a restarted node) may take to elect a JetStream meta leader and
/// report itself healthy, on a busy machine.
const READY_WITHIN: Duration = Duration::from_secs(60);

/// How many nodes a cluster has.
const NODES: usize = 3;

/// The `nats-server` binary: [`NATS_BIN_VAR`] if set (a wrong setting is reported, not worked
/// around), else Debian's `/usr/sbin/nats-server`, else the first on the `PATH`.
fn nats_server_binary() -> Result<PathBuf, String> {
    if let Some(path) = std::env::var_os(NATS_BIN_VAR) {
        let path = PathBuf::from(path);
        return if path.is_file() {
            Ok(path)
        } else {
            Err(format!("{NATS_BIN_VAR}={} is not a file", path.display()))
        };
    }
    let debian = PathBuf::from("/usr/sbin/nats-server");
    if debian.is_file() {
        return Ok(debian);
    }
    std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .map(|dir| dir.join("nats-server"))
        .find(|p| p.is_file())
        .ok_or_else(|| "no nats-server in /usr/sbin or on the PATH".to_owned())
}

/// One node: its ports, its directory and its process while it runs.
#[derive(Debug)]
struct Node {
    name: String,
    client_port: u16,
    cluster_port: u16,
    monitor_port: u16,
    dir: PathBuf,
    child: Option<Child>,
}

impl Node {
    fn config_path(&self) -> PathBuf {
        self.dir.join("nats.conf")
    }

    fn log_path(&self) -> PathBuf {
        self.dir.join("server.log")
    }

    /// Writes the node's configuration: its ports, its JetStream store, routes to `routes`.
    fn write_config(&self, cluster: &str, routes: &[u16]) {
        let routes: Vec<String> = routes
            .iter()
            .map(|p| format!("\"nats-route://127.0.0.1:{p}\""))
            .collect();
        let config = format!(
            "server_name: {name}\n\
             listen: 127.0.0.1:{client}\n\
             http: 127.0.0.1:{monitor}\n\
             log_file: \"{log}\"\n\
             jetstream {{\n  store_dir: \"{store}\"\n  max_memory_store: 64MB\n  max_file_store: 4GB\n}}\n\
             cluster {{\n  name: {cluster}\n  listen: 127.0.0.1:{route}\n  routes: [{routes}]\n}}\n",
            name = self.name,
            client = self.client_port,
            monitor = self.monitor_port,
            log = self.log_path().display(),
            store = self.dir.join("jetstream").display(),
            route = self.cluster_port,
            routes = routes.join(", "),
        );
        std::fs::write(self.config_path(), config).expect("the node's configuration is written");
    }

    fn spawn(&mut self, binary: &Path) {
        let child = Command::new(binary)
            .arg("-c")
            .arg(self.config_path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("nats-server starts");
        self.child = Some(child);
    }

    /// Whether its process runs (reaps it if it exited).
    fn running(&mut self) -> bool {
        match self.child.as_mut() {
            Some(child) => match child.try_wait() {
                Ok(None) => true,
                _ => {
                    self.child = None;
                    false
                }
            },
            None => false,
        }
    }

    /// A GET of the monitoring endpoint `path`: the body, if it answered 200.
    fn monitor(&self, path: &str) -> Option<String> {
        http_get(self.monitor_port, path)
    }

    /// Whether it answers `/healthz` with ok and knows a JetStream meta leader.
    fn ready(&self) -> Result<(), String> {
        let health = self
            .monitor("/healthz")
            .ok_or_else(|| format!("{}: /healthz is not ok", self.name))?;
        if !health.contains("\"ok\"") {
            return Err(format!("{}: /healthz says {health}", self.name));
        }
        let jsz = self
            .monitor("/jsz")
            .ok_or_else(|| format!("{}: no /jsz", self.name))?;
        let jsz: Value = serde_json::from_str(&jsz).map_err(|e| format!("/jsz: {e}"))?;
        match jsz["meta_cluster"]["leader"].as_str() {
            Some(leader) if !leader.is_empty() => Ok(()),
            _ => Err(format!("{}: no JetStream meta leader yet", self.name)),
        }
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A GET of `http://127.0.0.1:<port><path>` over HTTP/1.0: the body of a `200` answer.
fn http_get(port: u16, path: &str) -> Option<String> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").ok()?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer).ok()?;
    let (head, body) = answer.split_once("\r\n\r\n")?;
    head.starts_with("HTTP/1.0 200")
        .then(|| body.to_owned())
        .or_else(|| head.starts_with("HTTP/1.1 200").then(|| body.to_owned()))
}

/// A 3-node NATS JetStream cluster of the test's own; every node killed when dropped.
#[derive(Debug)]
pub struct NatsCluster {
    root: tempfile::TempDir,
    binary: PathBuf,
    nodes: Vec<Node>,
}

impl NatsCluster {
    /// Starts three nodes and waits until each is healthy and knows a JetStream meta leader;
    /// `Err` is why NATS is not available here (the caller skips). Failures of an available
    /// `nats-server` panic.
    pub fn start() -> Result<Self, String> {
        let binary = nats_server_binary()?;
        let root = tempfile::Builder::new()
            .prefix("nats-cluster-")
            .tempdir()
            .expect("a temporary directory");
        let mut nodes: Vec<Node> = (0..NODES)
            .map(|i| {
                let dir = root.path().join(format!("n{i}"));
                std::fs::create_dir_all(&dir).expect("the node's directory");
                Node {
                    name: format!("n{i}"),
                    client_port: free_port(),
                    cluster_port: free_port(),
                    monitor_port: free_port(),
                    dir,
                    child: None,
                }
            })
            .collect();
        let cluster = format!("audit-test-{}", std::process::id());
        let route_ports: Vec<u16> = nodes.iter().map(|n| n.cluster_port).collect();
        for node in &mut nodes {
            let others: Vec<u16> = route_ports
                .iter()
                .copied()
                .filter(|p| *p != node.cluster_port)
                .collect();
            node.write_config(&cluster, &others);
            node.spawn(&binary);
        }
        let mut cluster = Self {
            root,
            binary,
            nodes,
        };
        cluster.wait_ready(0..NODES);
        Ok(cluster)
    }

    /// [`start`](Self::start), or, where `nats-server` is not available,
    /// [`skip`](crate::skip) the test `what` (a failure under `CI=true`) and `None`.
    pub fn start_or_skip(what: &str) -> Option<Self> {
        or_skip(
            Self::start(),
            what,
            &format!(
                "install nats-server (Debian: nats-server), or set {NATS_BIN_VAR} to its path"
            ),
        )
    }

    /// Waits until the nodes `which` run, answer `/healthz` and know a meta leader; panics
    /// with their logs' tails after [`READY_WITHIN`].
    fn wait_ready(&mut self, which: std::ops::Range<usize>) {
        let deadline = Instant::now() + READY_WITHIN;
        loop {
            let mut waiting = Vec::new();
            for i in which.clone() {
                if !self.nodes[i].running()
                    && Instant::now() < deadline
                    && self.log_tail(i, 5).contains("address already in use")
                {
                    // A restarted node's port, free when it was chosen, was taken meanwhile
                    // by a short-lived socket of another test: try again until it is free.
                    std::thread::sleep(Duration::from_millis(200));
                    let binary = self.binary.clone();
                    self.nodes[i].spawn(&binary);
                    waiting.push(format!("{} respawned", self.nodes[i].name));
                    continue;
                }
                if !self.nodes[i].running() {
                    panic!(
                        "nats-server {} exited; its log:\n{}",
                        self.nodes[i].name,
                        self.log_tail(i, 30)
                    );
                }
                if let Err(e) = self.nodes[i].ready() {
                    waiting.push(e);
                }
            }
            if waiting.is_empty() {
                return;
            }
            if Instant::now() > deadline {
                panic!(
                    "the NATS cluster is not ready within {READY_WITHIN:?}: {}; log of n0:\n{}",
                    waiting.join("; "),
                    self.log_tail(0, 30)
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The client URLs of every node, comma-separated (`nats://127.0.0.1:<port>,...`): the
    /// seed list a client is given.
    pub fn urls(&self) -> String {
        (0..NODES)
            .map(|i| self.url(i))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The client URL of node `i`.
    pub fn url(&self, i: usize) -> String {
        format!("nats://127.0.0.1:{}", self.nodes[i].client_port)
    }

    /// The process id of node `i`, while it runs.
    pub fn pid(&self, i: usize) -> Option<u32> {
        self.nodes[i].child.as_ref().map(Child::id)
    }

    /// The index of the node named `name` (`n0`, `n1`, `n2`), as the JetStream API names
    /// leaders.
    pub fn index_of(&self, name: &str) -> Option<usize> {
        self.nodes.iter().position(|n| n.name == name)
    }

    /// Kills node `i` with SIGKILL (nothing flushed, no goodbye to the others) and reaps it.
    pub fn kill(&mut self, i: usize) {
        self.nodes[i].kill();
    }

    /// Starts node `i` again, on the same ports with the same store, and waits until it is
    /// back in the cluster (healthy: its streams caught up).
    pub fn restart(&mut self, i: usize) {
        assert!(!self.nodes[i].running(), "node {i} still runs");
        let binary = self.binary.clone();
        self.nodes[i].spawn(&binary);
        self.wait_ready(i..i + 1);
    }

    /// Stops every node (SIGTERM, waited for): the whole cluster unreachable, connections
    /// refused, until [`start_all`](Self::start_all).
    pub fn stop_all(&mut self) {
        for node in &mut self.nodes {
            if let Some(child) = &node.child {
                signal(child.id(), "TERM");
            }
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        for node in &mut self.nodes {
            while node.running() {
                if Instant::now() > deadline {
                    node.kill();
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }

    /// Starts every stopped node again (same ports, same stores) and waits until the cluster
    /// is ready.
    pub fn start_all(&mut self) {
        let binary = self.binary.clone();
        for node in &mut self.nodes {
            if !node.running() {
                node.spawn(&binary);
            }
        }
        self.wait_ready(0..NODES);
    }

    /// The last `n` lines of node `i`'s log, for failure messages.
    pub fn log_tail(&self, i: usize, n: usize) -> String {
        let text = std::fs::read_to_string(self.nodes[i].log_path()).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }

    /// The directory the nodes' stores and logs are in.
    pub fn dir(&self) -> &Path {
        self.root.path()
    }

    /// A connection to the first running node that accepts one.
    pub fn connect(&mut self) -> Result<NatsConnection, String> {
        let mut last = "no node runs".to_owned();
        for i in 0..NODES {
            if !self.nodes[i].running() {
                continue;
            }
            match NatsConnection::connect(self.nodes[i].client_port) {
                Ok(connection) => return Ok(connection),
                Err(e) => last = e,
            }
        }
        Err(last)
    }

    /// A JetStream API request (`$JS.API.<api>` with the JSON `body`), sent through any
    /// running node and retried for up to 30 s while the cluster answers that it is not
    /// ready (no leader yet, no responders): the answer, or the last error.
    pub fn js_api(&mut self, api: &str, body: &Value) -> Result<Value, String> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let answer = self
                .connect()
                .and_then(|mut c| c.js_api(api, body, Duration::from_secs(5)));
            match answer {
                Ok(answer) => return Ok(answer),
                Err(e) if Instant::now() > deadline => return Err(e),
                Err(_) => std::thread::sleep(Duration::from_millis(200)),
            }
        }
    }

    /// The state of the stream `stream` (`state.messages`, `state.first_seq`, ...) and its
    /// cluster (`cluster.leader`, `cluster.replicas`), as `$JS.API.STREAM.INFO` answers.
    pub fn stream_info(&mut self, stream: &str) -> Result<Value, String> {
        self.js_api(&format!("STREAM.INFO.{stream}"), &Value::Null)
    }

    /// The state of the consumer `consumer` of `stream` (`num_pending`, `num_ack_pending`,
    /// `delivered`, `ack_floor`), as `$JS.API.CONSUMER.INFO` answers.
    pub fn consumer_info(&mut self, stream: &str, consumer: &str) -> Result<Value, String> {
        self.js_api(&format!("CONSUMER.INFO.{stream}.{consumer}"), &Value::Null)
    }
}

impl Drop for NatsCluster {
    fn drop(&mut self) {
        for node in &mut self.nodes {
            node.kill();
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The client protocol, just enough for the JetStream API
// ---------------------------------------------------------------------------------------------

/// A connection speaking the NATS client protocol (`CONNECT`, `SUB`, `PUB`, `MSG`/`HMSG`,
/// `PING`/`PONG`) over a plain TCP stream: requests and their replies, one at a time.
#[derive(Debug)]
pub struct NatsConnection {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
    next_sid: u64,
}

impl NatsConnection {
    /// Connects to the node listening on loopback `port` and completes the handshake.
    pub fn connect(port: u16) -> Result<Self, String> {
        let stream = TcpStream::connect(("127.0.0.1", port))
            .map_err(|e| format!("connect to 127.0.0.1:{port}: {e}"))?;
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .map_err(|e| e.to_string())?;
        let writer = stream.try_clone().map_err(|e| e.to_string())?;
        let mut connection = Self {
            reader: BufReader::new(stream),
            writer,
            next_sid: 1,
        };
        let info = connection.line()?;
        if !info.starts_with("INFO ") {
            return Err(format!("expected INFO from the server, got {info:?}"));
        }
        connection.send(
            b"CONNECT {\"verbose\":false,\"pedantic\":false,\"headers\":true,\
              \"no_responders\":true,\"lang\":\"audit-tests\",\"version\":\"0\"}\r\nPING\r\n",
        )?;
        loop {
            match connection.line()?.as_str() {
                "PONG" => return Ok(connection),
                line if line.starts_with("-ERR") => return Err(line.to_owned()),
                _ => {}
            }
        }
    }

    fn send(&mut self, bytes: &[u8]) -> Result<(), String> {
        self.writer.write_all(bytes).map_err(|e| e.to_string())
    }

    /// One protocol line, without its `\r\n`.
    fn line(&mut self) -> Result<String, String> {
        let mut line = String::new();
        let n = self
            .reader
            .read_line(&mut line)
            .map_err(|e| format!("reading from the server: {e}"))?;
        if n == 0 {
            return Err("the server closed the connection".to_owned());
        }
        Ok(line.trim_end_matches(['\r', '\n']).to_owned())
    }

    fn payload(&mut self, len: usize) -> Result<Vec<u8>, String> {
        let mut bytes = vec![0; len + 2];
        self.reader
            .read_exact(&mut bytes)
            .map_err(|e| format!("reading a message: {e}"))?;
        bytes.truncate(len);
        Ok(bytes)
    }

    /// Publishes `payload` to `subject` and waits up to `timeout` for the reply: its
    /// payload. A reply carrying only a status header (no responders, a timeout) is an error.
    pub fn request(
        &mut self,
        subject: &str,
        payload: &[u8],
        timeout: Duration,
    ) -> Result<Vec<u8>, String> {
        let sid = self.next_sid;
        self.next_sid += 1;
        let inbox = format!("_INBOX.audit_tests.{}.{sid}", std::process::id());
        let mut out = format!(
            "SUB {inbox} {sid}\r\nPUB {subject} {inbox} {}\r\n",
            payload.len()
        )
        .into_bytes();
        out.extend_from_slice(payload);
        out.extend_from_slice(format!("\r\nUNSUB {sid} 1\r\n").as_bytes());
        self.send(&out)?;
        // A reply not in within the timeout is an error, as a client library's would be.
        self.reader
            .get_ref()
            .set_read_timeout(Some(timeout))
            .map_err(|e| e.to_string())?;
        loop {
            let line = self
                .line()
                .map_err(|e| format!("no reply to {subject} within {timeout:?}: {e}"))?;
            let words: Vec<&str> = line.split_whitespace().collect();
            match words.first().copied() {
                Some("PING") => self.send(b"PONG\r\n")?,
                Some("MSG") => {
                    // MSG <subject> <sid> [reply-to] <#bytes>
                    let len = parse_len(words.last())?;
                    let body = self.payload(len)?;
                    if words.get(2) == Some(&sid.to_string().as_str()) {
                        return Ok(body);
                    }
                }
                Some("HMSG") => {
                    // HMSG <subject> <sid> [reply-to] <#header bytes> <#total bytes>
                    let total = parse_len(words.last())?;
                    let header_len = parse_len(words.get(words.len() - 2))?;
                    let bytes = self.payload(total)?;
                    if words.get(2) == Some(&sid.to_string().as_str()) {
                        let headers = String::from_utf8_lossy(&bytes[..header_len]).into_owned();
                        let body = bytes[header_len..].to_vec();
                        let status_only = headers
                            .lines()
                            .next()
                            .is_some_and(|l| l.split_whitespace().nth(1).is_some());
                        if status_only && body.is_empty() {
                            return Err(format!(
                                "{subject}: {}",
                                headers.lines().next().unwrap_or_default()
                            ));
                        }
                        return Ok(body);
                    }
                }
                Some("-ERR") => return Err(line),
                _ => {}
            }
        }
    }

    /// A JetStream API request: `$JS.API.<api>` with `body` (JSON; `null` sends nothing).
    /// The answer, or the API's error (`{"error": {"code", "description"}}`) as text.
    pub fn js_api(&mut self, api: &str, body: &Value, timeout: Duration) -> Result<Value, String> {
        let payload = if body.is_null() {
            Vec::new()
        } else {
            serde_json::to_vec(body).map_err(|e| e.to_string())?
        };
        let reply = self.request(&format!("$JS.API.{api}"), &payload, timeout)?;
        let answer: Value =
            serde_json::from_slice(&reply).map_err(|e| format!("$JS.API.{api}: {e}"))?;
        match answer.get("error") {
            Some(error) => Err(format!("$JS.API.{api}: {error}")),
            None => Ok(answer),
        }
    }
}

fn parse_len(word: Option<&&str>) -> Result<usize, String> {
    word.and_then(|w| w.parse().ok())
        .ok_or_else(|| "a message line without its length".to_owned())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    /// Publishes `count` messages to `subject`, each acknowledged by the stream (retried
    /// while a new stream leader is being elected): the last acknowledged sequence number.
    fn publish_acked(cluster: &mut NatsCluster, subject: &str, from: usize, count: usize) -> u64 {
        let mut last = 0;
        for n in from..from + count {
            let deadline = Instant::now() + Duration::from_secs(30);
            loop {
                let ack = cluster.connect().and_then(|mut c| {
                    let reply =
                        c.request(subject, format!("m{n}").as_bytes(), Duration::from_secs(2))?;
                    serde_json::from_slice::<Value>(&reply).map_err(|e| e.to_string())
                });
                match ack {
                    Ok(ack) if ack["seq"].as_u64().is_some() => {
                        last = ack["seq"].as_u64().unwrap_or_default();
                        break;
                    }
                    other if Instant::now() > deadline => {
                        panic!("message {n} never acknowledged: {other:?}")
                    }
                    _ => std::thread::sleep(Duration::from_millis(100)),
                }
            }
        }
        last
    }

    /// The cluster forms (every node knows a meta leader), an R3 file stream is created, and
    /// its messages survive SIGKILL of the stream's leader: the survivors elect another,
    /// take new messages, and the restarted node catches up with all of them.
    #[test]
    fn a_replicated_stream_survives_a_node_kill_and_the_node_catches_up() {
        let Some(mut cluster) = NatsCluster::start_or_skip("nats-cluster") else {
            return;
        };
        assert_eq!(cluster.urls().split(',').count(), 3);
        assert!(
            !cluster.urls().contains(":4222"),
            "never the machine's own server"
        );
        let created = cluster
            .js_api(
                "STREAM.CREATE.HARNESS",
                &json!({"name": "HARNESS", "subjects": ["harness.>"], "num_replicas": 3,
                        "storage": "file"}),
            )
            .expect("the stream is created");
        assert_eq!(created["config"]["num_replicas"], 3, "{created}");
        assert_eq!(publish_acked(&mut cluster, "harness.a", 0, 50), 50);

        let info = cluster.stream_info("HARNESS").unwrap();
        let leader = info["cluster"]["leader"].as_str().unwrap().to_owned();
        let victim = cluster
            .index_of(&leader)
            .expect("the leader is one of ours");
        cluster.kill(victim);
        assert_eq!(
            publish_acked(&mut cluster, "harness.b", 50, 50),
            100,
            "the survivors take new messages"
        );
        let info = cluster.stream_info("HARNESS").unwrap();
        assert_eq!(info["state"]["messages"], 100, "{info}");
        assert_ne!(info["cluster"]["leader"].as_str(), Some(leader.as_str()));

        cluster.restart(victim);
        // Ask the restarted node itself until it holds every message.
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let port = cluster.nodes[victim].client_port;
            let held = NatsConnection::connect(port)
                .and_then(|mut c| {
                    c.js_api("STREAM.INFO.HARNESS", &Value::Null, Duration::from_secs(5))
                })
                .map(|i| i["cluster"]["replicas"].clone());
            let current = held.as_ref().is_ok_and(|replicas| {
                replicas
                    .as_array()
                    .is_some_and(|r| r.len() == 2 && r.iter().all(|p| p["current"] == true))
            });
            if current {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "the restarted node did not catch up: {held:?}"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        let info = cluster.stream_info("HARNESS").unwrap();
        assert_eq!(info["state"]["messages"], 100, "{info}");
    }

    /// The whole cluster stopped and started again keeps its stream and every message.
    #[test]
    fn a_stopped_cluster_starts_again_with_its_messages() {
        let Some(mut cluster) = NatsCluster::start_or_skip("nats-cluster-restart") else {
            return;
        };
        cluster
            .js_api(
                "STREAM.CREATE.WHOLE",
                &json!({"name": "WHOLE", "subjects": ["whole.>"], "num_replicas": 3,
                        "storage": "file"}),
            )
            .expect("the stream is created");
        publish_acked(&mut cluster, "whole.a", 0, 20);
        cluster.stop_all();
        assert!(
            NatsConnection::connect(cluster.nodes[0].client_port).is_err(),
            "a stopped cluster refuses connections"
        );
        cluster.start_all();
        let info = cluster.stream_info("WHOLE").unwrap();
        assert_eq!(info["state"]["messages"], 20, "{info}");
    }
}
