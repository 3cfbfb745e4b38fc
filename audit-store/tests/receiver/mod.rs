//! A real HTTP receiver for the export and alert tests: axum on a local port, checking each
//! delivery's gzip and signature, keeping what it accepts, and misbehaving on demand (errors,
//! slowness, reset connections, stopped).

#![allow(dead_code)]

pub(crate) mod tls;

use std::io::Read as _;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use audit_store::export::{Secret, verify_signature};
use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// How the receiver answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub(crate) enum Mode {
    /// 200, keeping the delivery.
    Ok = 0,
    /// 500 with `Retry-After: 1`, keeping nothing.
    Error = 1,
    /// Keeps the delivery, then answers after `slow` (later than the sender waits).
    Slow = 2,
    /// Resets every new connection (RST, nothing read).
    Reset = 3,
}

/// One delivery the receiver kept.
#[derive(Clone, Debug)]
pub(crate) struct Delivery {
    pub(crate) idempotency_key: String,
    pub(crate) lines: Vec<String>,
}

/// What every copy of the receiver shares.
pub(crate) struct Shared {
    mode: AtomicU8,
    secret: Secret,
    slow: Duration,
    pub(crate) kept: Mutex<Vec<Delivery>>,
    /// Requests whose body was not gzip or whose signature did not verify.
    pub(crate) bad: AtomicU64,
    pub(crate) requests: AtomicU64,
    /// TLS handshakes that failed (a TLS receiver only).
    pub(crate) handshakes_failed: AtomicU64,
    /// A body holding this text is refused (413), keeping nothing: a record or group value
    /// the receiver cannot take.
    refuse: Mutex<Option<String>>,
}

impl Shared {
    pub(crate) fn new(secret: Secret, slow: Duration) -> Arc<Self> {
        Arc::new(Self {
            mode: AtomicU8::new(Mode::Ok as u8),
            secret,
            slow,
            kept: Mutex::default(),
            bad: AtomicU64::new(0),
            requests: AtomicU64::new(0),
            handshakes_failed: AtomicU64::new(0),
            refuse: Mutex::default(),
        })
    }

    /// Refuses (413) every body holding `text`.
    pub(crate) fn refuse(&self, text: &str) {
        *self.refuse.lock().unwrap_or_else(PoisonError::into_inner) = Some(text.to_owned());
    }

    pub(crate) fn set_mode(&self, mode: Mode) {
        self.mode.store(mode as u8, Ordering::SeqCst);
    }

    fn mode(&self) -> Mode {
        match self.mode.load(Ordering::SeqCst) {
            1 => Mode::Error,
            2 => Mode::Slow,
            3 => Mode::Reset,
            _ => Mode::Ok,
        }
    }

    pub(crate) fn deliveries(&self) -> Vec<Delivery> {
        self.kept
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

/// A listener that resets new connections while the receiver is in [`Mode::Reset`].
struct Resetting {
    inner: TcpListener,
    shared: Arc<Shared>,
}

impl axum::serve::Listener for Resetting {
    type Io = TcpStream;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (TcpStream, SocketAddr) {
        loop {
            let Ok((stream, addr)) = self.inner.accept().await else {
                continue;
            };
            if self.shared.mode() == Mode::Reset {
                self.shared.requests.fetch_add(1, Ordering::Relaxed);
                // Linger 0: closing sends RST instead of FIN.
                let _ = stream.set_zero_linger();
                drop(stream);
                continue;
            }
            return (stream, addr);
        }
    }

    fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.inner.local_addr()
    }
}

/// A TLS listener: each connection's handshake is done before it is served; one that fails
/// (the client does not trust the certificate, or has none when one is required) is counted
/// as a request and dropped.
struct TlsListening {
    inner: TcpListener,
    acceptor: tokio_rustls::TlsAcceptor,
    shared: Arc<Shared>,
}

impl axum::serve::Listener for TlsListening {
    type Io = tokio_rustls::server::TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, SocketAddr) {
        loop {
            let Ok((stream, addr)) = self.inner.accept().await else {
                continue;
            };
            let handshake = self.acceptor.accept(stream);
            match tokio::time::timeout(Duration::from_secs(5), handshake).await {
                Ok(Ok(tls)) => return (tls, addr),
                _ => {
                    self.shared.requests.fetch_add(1, Ordering::Relaxed);
                    self.shared
                        .handshakes_failed
                        .fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.inner.local_addr()
    }
}

async fn receive(State(shared): State<Arc<Shared>>, headers: HeaderMap, body: Bytes) -> Response {
    shared.requests.fetch_add(1, Ordering::Relaxed);
    let mode = shared.mode();
    if mode == Mode::Error {
        let mut response = StatusCode::INTERNAL_SERVER_ERROR.into_response();
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        return close(response);
    }
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let signed = headers
        .get("x-audit-signature")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| verify_signature(&shared.secret, v, &body, now, 300));
    let gzipped = headers
        .get(header::CONTENT_ENCODING)
        .is_some_and(|v| v == "gzip");
    let mut text = String::new();
    let unzipped = if gzipped {
        flate2::read::GzDecoder::new(&body[..])
            .read_to_string(&mut text)
            .is_ok()
    } else {
        // A plain body: an alert notification (JSON), kept as one line.
        text = String::from_utf8_lossy(&body).into_owned();
        !text.contains('\n')
    };
    let key = headers
        .get("idempotency-key")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let (true, true, Some(idempotency_key)) = (signed, unzipped, key) else {
        shared.bad.fetch_add(1, Ordering::Relaxed);
        return close(StatusCode::BAD_REQUEST.into_response());
    };
    let refused = shared
        .refuse
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .as_deref()
        .is_some_and(|marker| text.contains(marker));
    if refused {
        return close(StatusCode::PAYLOAD_TOO_LARGE.into_response());
    }
    shared
        .kept
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .push(Delivery {
            idempotency_key,
            lines: text.lines().map(str::to_owned).collect(),
        });
    if mode == Mode::Slow {
        tokio::time::sleep(shared.slow).await;
    }
    close(StatusCode::OK.into_response())
}

/// Every answer closes its connection: each delivery connects anew, so the listener decides
/// about each one.
fn close(mut response: Response) -> Response {
    response
        .headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    response
}

/// A running receiver; [`stop`](Self::stop) closes its port.
pub(crate) struct Receiver {
    pub(crate) addr: SocketAddr,
    stop: oneshot::Sender<()>,
    task: JoinHandle<()>,
}

impl Receiver {
    /// Serves `shared` on `addr` (`127.0.0.1:0` for a free port).
    pub(crate) async fn start(shared: Arc<Shared>, addr: SocketAddr) -> std::io::Result<Self> {
        let inner = TcpListener::bind(addr).await?;
        let addr = inner.local_addr()?;
        let app = Router::new()
            .route("/ingest", post(receive))
            .with_state(Arc::clone(&shared));
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let _ = axum::serve(Resetting { inner, shared }, app)
                .with_graceful_shutdown(async move {
                    let _ = stopped.await;
                })
                .await;
        });
        Ok(Self { addr, stop, task })
    }

    /// Serves `shared` over TLS (HTTPS) with `config` on `addr`.
    pub(crate) async fn start_tls(
        shared: Arc<Shared>,
        addr: SocketAddr,
        config: Arc<rustls::ServerConfig>,
    ) -> std::io::Result<Self> {
        let inner = TcpListener::bind(addr).await?;
        let addr = inner.local_addr()?;
        let app = Router::new()
            .route("/ingest", post(receive))
            .with_state(Arc::clone(&shared));
        let listener = TlsListening {
            inner,
            acceptor: tokio_rustls::TlsAcceptor::from(config),
            shared,
        };
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async move {
                    let _ = stopped.await;
                })
                .await;
        });
        Ok(Self { addr, stop, task })
    }

    /// Stops accepting and waits for the server to end (its port is closed).
    pub(crate) async fn stop(self) {
        let _ = self.stop.send(());
        // A slow handler still running is cut off: the port must close now.
        self.task.abort();
        let _ = self.task.await;
    }
}
