//! The NATS servers the `audit-nats` variant publishes to: one `nats-server` with JetStream,
//! or a cluster of them (`--nats-nodes 3`, the stream then replicated on every node), started
//! by the driver on free loopback ports with their stores in the run's scratch directory
//! (never the machine's own server on 4222), killed when the driver is done.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::BoxError;
use crate::usage::process_usage;

/// The `nats-server`s of the benchmark's own: one, or a cluster.
pub(crate) struct NatsServer {
    nodes: Vec<Child>,
    url: String,
}

impl NatsServer {
    /// Starts `nodes` servers of `binary` (JetStream on, stores under `dir`; more than one
    /// form a cluster) on free ports and waits until each answers `/healthz`.
    pub(crate) fn start(binary: &Path, dir: &Path, nodes: usize) -> Result<Self, BoxError> {
        std::fs::create_dir_all(dir)?;
        let free = free_ports(3 * nodes)?;
        let ports: Vec<(SocketAddr, SocketAddr, SocketAddr)> =
            free.chunks(3).map(|p| (p[0], p[1], p[2])).collect();
        let mut server = Self {
            nodes: Vec::new(),
            url: ports
                .iter()
                .map(|(client, _, _)| format!("nats://{client}"))
                .collect::<Vec<_>>()
                .join(","),
        };
        for (i, &(client, monitor, route)) in ports.iter().enumerate() {
            let node = dir.join(format!("n{i}"));
            std::fs::create_dir_all(&node)?;
            let mut config = format!(
                "server_name: n{i}\nlisten: {client}\nhttp: {monitor}\nlog_file: \"{log}\"\n\
                 jetstream {{ store_dir: \"{store}\" }}\n",
                log = node.join("server.log").display(),
                store = node.join("jetstream").display(),
            );
            if nodes > 1 {
                let routes: Vec<String> = ports
                    .iter()
                    .filter(|(_, _, r)| *r != route)
                    .map(|(_, _, r)| format!("nats-route://{r}"))
                    .collect();
                config.push_str(&format!(
                    "cluster {{ name: loadbench, listen: {route}, routes: [{}] }}\n",
                    routes.join(", ")
                ));
            }
            let file = node.join("nats.conf");
            std::fs::write(&file, config)?;
            let child = Command::new(binary)
                .arg("-c")
                .arg(&file)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .map_err(|e| {
                    format!(
                        "cannot run {}: {e} (install nats-server, Debian: nats-server; pass \
                         --nats-server; or leave audit-nats out with --variants)",
                        binary.display()
                    )
                })?;
            server.nodes.push(child);
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        for (i, &(_, monitor, _)) in ports.iter().enumerate() {
            while !healthy(monitor) {
                if let Some(status) = server.nodes[i].try_wait()? {
                    return Err(format!(
                        "nats-server exited with {status}; see {}",
                        dir.join(format!("n{i}/server.log")).display()
                    )
                    .into());
                }
                if Instant::now() > deadline {
                    return Err("nats-server did not become healthy within 30 s".into());
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        Ok(server)
    }

    /// `nats://127.0.0.1:<port>`, comma-separated for a cluster.
    pub(crate) fn url(&self) -> &str {
        &self.url
    }

    /// Their CPU so far, all nodes together (utime + stime, clock ticks).
    pub(crate) fn ticks(&self) -> u64 {
        self.nodes
            .iter()
            .map(|n| process_usage(n.id()).map_or(0, |(ticks, _)| ticks))
            .sum()
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        for node in &mut self.nodes {
            let _ = node.kill();
            let _ = node.wait();
        }
    }
}

/// The fleet on `url`: a stream replicated on every server the driver started.
pub(crate) fn fleet(url: &str) -> Result<audit_store::fleet::FleetConfig, BoxError> {
    Ok(audit_store::fleet::FleetConfig::new(url)?.replicas(url.split(',').count()))
}

/// The first server of a comma-separated list, for a client that takes one.
pub(crate) fn first_url(url: &str) -> &str {
    url.split(',').next().unwrap_or(url)
}

/// The `nats-server` binary: Debian's, else the first on the `PATH`.
pub(crate) fn default_binary() -> PathBuf {
    let debian = PathBuf::from("/usr/sbin/nats-server");
    if debian.is_file() {
        return debian;
    }
    std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .map(|dir| dir.join("nats-server"))
        .find(|p| p.is_file())
        .unwrap_or(debian)
}

/// `n` distinct free ports: every listener is held until all are bound, so that the kernel
/// cannot hand out one port twice (a server then failed with "address already in use").
fn free_ports(n: usize) -> Result<Vec<SocketAddr>, BoxError> {
    let listeners = (0..n)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0"))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(listeners
        .iter()
        .map(std::net::TcpListener::local_addr)
        .collect::<Result<_, _>>()?)
}

/// Whether the monitoring endpoint answers `/healthz` with 200.
fn healthy(monitor: SocketAddr) -> bool {
    use std::io::{Read, Write};
    let Ok(mut stream) = std::net::TcpStream::connect(monitor) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    if stream
        .write_all(b"GET /healthz HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
        .is_err()
    {
        return false;
    }
    let mut answer = String::new();
    let _ = stream.read_to_string(&mut answer);
    answer.starts_with("HTTP/1.0 200") || answer.starts_with("HTTP/1.1 200")
}
