//! The NATS server the `audit-nats` variant publishes to: one `nats-server` with JetStream,
//! started by the driver on a free loopback port with its store in the run's scratch
//! directory (never the machine's own server on 4222), killed when the driver is done.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::BoxError;
use crate::usage::process_usage;

/// A `nats-server` of the benchmark's own.
pub(crate) struct NatsServer {
    child: Child,
    url: String,
}

impl NatsServer {
    /// Starts `binary` (JetStream on, store in `dir`) on a free port and waits until it
    /// answers `/healthz`.
    pub(crate) fn start(binary: &Path, dir: &Path) -> Result<Self, BoxError> {
        std::fs::create_dir_all(dir)?;
        let client = free_port()?;
        let monitor = free_port()?;
        let config = dir.join("nats.conf");
        std::fs::write(
            &config,
            format!(
                "listen: {client}\nhttp: {monitor}\nlog_file: \"{log}\"\n\
                 jetstream {{ store_dir: \"{store}\" }}\n",
                log = dir.join("server.log").display(),
                store = dir.join("jetstream").display(),
            ),
        )?;
        let child = Command::new(binary)
            .arg("-c")
            .arg(&config)
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
        let mut server = Self {
            child,
            url: format!("nats://{client}"),
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while !healthy(monitor) {
            if let Some(status) = server.child.try_wait()? {
                return Err(format!(
                    "nats-server exited with {status}; see {}",
                    dir.join("server.log").display()
                )
                .into());
            }
            if Instant::now() > deadline {
                return Err("nats-server did not become healthy within 30 s".into());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(server)
    }

    /// `nats://127.0.0.1:<port>`.
    pub(crate) fn url(&self) -> &str {
        &self.url
    }

    /// Its CPU so far (utime + stime, clock ticks).
    pub(crate) fn ticks(&self) -> u64 {
        process_usage(self.child.id()).map_or(0, |(ticks, _)| ticks)
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
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

fn free_port() -> Result<SocketAddr, BoxError> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?)
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
