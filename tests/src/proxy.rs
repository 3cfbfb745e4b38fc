//! A loopback TCP proxy in front of PostgreSQL that can delay every chunk, refuse service, or
//! cut only the audit store's connections: the faults a network or a pooler inflicts.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

#[derive(Debug)]
struct ProxyState {
    upstream: SocketAddr,
    delay_us: AtomicU64,
    reject: AtomicBool,
    /// Bumped to cut every open connection.
    cut: watch::Sender<u64>,
    /// While on, a connection that sends a statement naming an audit table (`audit_`) is
    /// cut: the audit store's connections fail, the app's own keep working.
    reject_audit: AtomicBool,
    /// Bumped to cut the open connections that have named an audit table.
    cut_audit: watch::Sender<u64>,
    /// Connections cut because they named an audit table while `reject_audit` was on.
    audit_cuts: AtomicU64,
}

/// A loopback TCP proxy: passes bytes both ways, each chunk delayed by a settable latency
/// (without serializing the delays), or refuses service (accepts and closes at once, and
/// cuts open connections) like a dead database behind a connection pooler.
#[derive(Debug)]
pub struct Proxy {
    port: u16,
    state: Arc<ProxyState>,
    accept: JoinHandle<()>,
}

impl Proxy {
    /// Starts the proxy on a free loopback port, passing everything to `upstream`.
    pub async fn start(upstream: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("proxy binds");
        let port = listener.local_addr().expect("proxy address").port();
        let (cut, _) = watch::channel(0);
        let (cut_audit, _) = watch::channel(0);
        let state = Arc::new(ProxyState {
            upstream,
            delay_us: AtomicU64::new(0),
            reject: AtomicBool::new(false),
            cut,
            reject_audit: AtomicBool::new(false),
            cut_audit,
            audit_cuts: AtomicU64::new(0),
        });
        let accept_state = Arc::clone(&state);
        let accept = tokio::spawn(async move {
            loop {
                let Ok((client, _)) = listener.accept().await else {
                    continue;
                };
                if accept_state.reject.load(Ordering::Acquire) {
                    drop(client);
                    continue;
                }
                let state = Arc::clone(&accept_state);
                tokio::spawn(connection(client, state));
            }
        });
        Self {
            port,
            state,
            accept,
        }
    }

    /// `postgres://postgres@127.0.0.1:<proxy port>/postgres`.
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// Every chunk, either way, is forwarded `delay` after it was read.
    pub fn set_delay(&self, delay: Duration) {
        self.state.delay_us.store(
            u64::try_from(delay.as_micros()).unwrap_or(u64::MAX),
            Ordering::Release,
        );
    }

    /// While on: new connections are closed at once and open ones are cut.
    pub fn set_reject(&self, on: bool) {
        self.state.reject.store(on, Ordering::Release);
        if on {
            self.state.cut.send_modify(|n| *n += 1);
        }
    }

    /// While on: the audit store's connections (those that name an `audit_` table) are cut,
    /// open ones at once and new ones at their first audit statement; the app's own queries
    /// pass. The audit database is down, the app's database is not.
    pub fn set_reject_audit(&self, on: bool) {
        self.state.reject_audit.store(on, Ordering::Release);
        if on {
            self.state.cut_audit.send_modify(|n| *n += 1);
        }
    }

    /// Connections cut so far because they named an audit table while that was refused.
    pub fn audit_cuts(&self) -> u64 {
        self.state.audit_cuts.load(Ordering::Acquire)
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.accept.abort();
        self.state.cut.send_modify(|n| *n += 1);
    }
}

async fn connection(client: TcpStream, state: Arc<ProxyState>) {
    let mut cut = state.cut.subscribe();
    let mut cut_audit = state.cut_audit.subscribe();
    let Ok(server) = TcpStream::connect(state.upstream).await else {
        return;
    };
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let (client_read, client_write) = client.into_split();
    let (server_read, server_write) = server.into_split();
    // Set once this connection has sent a statement naming an audit table.
    let audit = Arc::new(AtomicBool::new(false));
    let (refused_tx, mut refused) = watch::channel(false);
    let both = async {
        tokio::join!(
            pump(
                client_read,
                server_write,
                Arc::clone(&state),
                Some((Arc::clone(&audit), refused_tx))
            ),
            pump(server_read, client_write, Arc::clone(&state), None),
        )
    };
    let audit_cut = async {
        loop {
            if cut_audit.changed().await.is_err() {
                std::future::pending::<()>().await;
            }
            if audit.load(Ordering::Acquire) {
                return;
            }
        }
    };
    tokio::select! {
        _ = both => {}
        _ = cut.changed() => {}
        () = audit_cut => {}
        _ = refused.wait_for(|r| *r) => {}
    }
}

/// Whether `chunk` names an audit table (the SQL text of a Parse or Query message).
fn names_audit_table(chunk: &[u8]) -> bool {
    chunk.windows(6).any(|w| w == b"audit_")
}

async fn pump(
    mut from: OwnedReadHalf,
    mut to: OwnedWriteHalf,
    state: Arc<ProxyState>,
    // For the client-to-server direction: the connection's audit flag, and where to say
    // that it must be cut.
    watch_audit: Option<(Arc<AtomicBool>, watch::Sender<bool>)>,
) {
    let (tx, mut rx) = mpsc::channel::<(tokio::time::Instant, Vec<u8>)>(1024);
    let reader = async move {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = match from.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            if let Some((audit, refuse)) = &watch_audit
                && names_audit_table(&buf[..n])
            {
                audit.store(true, Ordering::Release);
                if state.reject_audit.load(Ordering::Acquire) {
                    state.audit_cuts.fetch_add(1, Ordering::AcqRel);
                    let _ = refuse.send(true);
                    break;
                }
            }
            let delay = Duration::from_micros(state.delay_us.load(Ordering::Acquire));
            let due = tokio::time::Instant::now() + delay;
            if tx.send((due, buf[..n].to_vec())).await.is_err() {
                break;
            }
        }
    };
    let writer = async move {
        while let Some((due, chunk)) = rx.recv().await {
            tokio::time::sleep_until(due).await;
            if to.write_all(&chunk).await.is_err() {
                break;
            }
        }
        let _ = to.shutdown().await;
    };
    tokio::join!(reader, writer);
}
