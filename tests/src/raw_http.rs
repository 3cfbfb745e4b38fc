//! HTTP/1.1 over a bare TCP stream, for clients that must misbehave (lying lengths, bodies cut
//! off, bytes HTTP forbids): what is sent is exactly the bytes given, and every answer is read
//! off the wire until the server closes the connection.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// How long a server may keep a connection open after its last answer.
const CLOSES_WITHIN: Duration = Duration::from_secs(10);

/// One answer read off the wire.
#[derive(Debug)]
pub struct RawResponse {
    /// The status code.
    pub status: u16,
    /// The headers, names in lower case, in the order received.
    pub headers: Vec<(String, String)>,
    /// The body (as framed by its `Content-Length`).
    pub body: Vec<u8>,
}

impl RawResponse {
    /// The first header named `name` (lower case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The body as text, bytes that are not UTF-8 replaced.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// Asserts an answer of the app (through the audit layer): `status`, and an
    /// `x-request-id` of the layer's own, not `sent`, the one the request carried (from a
    /// client, not a trusted proxy).
    #[track_caller]
    pub fn assert_app(&self, what: &str, status: u16, sent: &str) {
        assert_eq!(self.status, status, "{what}: {self:?} {}", self.text());
        let echoed = self.header("x-request-id");
        assert!(
            echoed.is_some_and(|ray| ray != sent),
            "{what}: x-request-id {echoed:?}, the client sent {sent:?}: {self:?}"
        );
    }

    /// Asserts an answer of hyper itself, which refused the request before the app saw it: no
    /// `x-request-id` (the audit layer never ran) and an empty body.
    #[track_caller]
    pub fn assert_hyper(&self, what: &str, status: u16) {
        assert_eq!(self.status, status, "{what}: {self:?} {}", self.text());
        assert_eq!(self.header("x-request-id"), None, "{what}: {self:?}");
        assert!(self.body.is_empty(), "{what}: {}", self.text());
    }
}

/// Reads until the server closes (or resets) the connection; fails, naming `what`, after 10 s.
pub async fn read_until_closed<R: AsyncRead + Unpin>(reader: &mut R, what: &str) -> Vec<u8> {
    let mut received = Vec::new();
    let mut chunk = vec![0u8; 64 * 1024];
    let read = tokio::time::timeout(CLOSES_WITHIN, async {
        loop {
            match reader.read(&mut chunk).await {
                Ok(0) => break,
                Ok(n) => received.extend_from_slice(&chunk[..n]),
                // A reset after the answer (the server closes with our bytes unread): what
                // was received stands.
                Err(_) => break,
            }
        }
    })
    .await;
    assert!(
        read.is_ok(),
        "{what}: the server neither closed nor reset the connection within {CLOSES_WITHIN:?}; \
         received {:?}",
        String::from_utf8_lossy(&received)
    );
    received
}

/// Splits what was received into answers, each framed by its `Content-Length` (or running to
/// the end without one).
pub fn parse_responses(mut bytes: &[u8], what: &str) -> Vec<RawResponse> {
    let mut responses = Vec::new();
    while !bytes.is_empty() {
        let end = bytes
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .unwrap_or_else(|| {
                panic!(
                    "{what}: an incomplete answer: {:?}",
                    String::from_utf8_lossy(bytes)
                )
            });
        let head = std::str::from_utf8(&bytes[..end]).expect("an ASCII response head");
        let mut lines = head.split("\r\n");
        let status = lines
            .next()
            .and_then(|l| l.split(' ').nth(1))
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("{what}: not an HTTP answer: {head:?}"));
        let headers: Vec<(String, String)> = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
            .collect();
        let rest = &bytes[end + 4..];
        let length = headers
            .iter()
            .find(|(n, _)| n == "content-length")
            .map_or(rest.len(), |(_, v)| {
                v.parse().expect("a numeric Content-Length")
            });
        assert!(rest.len() >= length, "{what}: a short answer body");
        responses.push(RawResponse {
            status,
            headers,
            body: rest[..length].to_vec(),
        });
        bytes = &rest[length..];
    }
    responses
}

/// Writes `request` to `addr` (as far as the server reads it; with `half_close`, then shuts
/// the writing side, as a client that has nothing more to send), then reads every answer
/// until the server closes the connection.
pub async fn raw_exchange(
    addr: SocketAddr,
    request: &[u8],
    half_close: bool,
    what: &str,
) -> Vec<RawResponse> {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    // The server may answer and close before it has read everything (a refusal).
    let _ = stream.write_all(request).await;
    if half_close {
        stream.shutdown().await.expect("half-close");
    }
    let received = read_until_closed(&mut stream, what).await;
    parse_responses(&received, what)
}

/// [`raw_exchange`] for a request that gets exactly one answer.
pub async fn raw_one(
    addr: SocketAddr,
    request: &[u8],
    half_close: bool,
    what: &str,
) -> RawResponse {
    let mut responses = raw_exchange(addr, request, half_close, what).await;
    assert_eq!(responses.len(), 1, "{what}: answers {responses:?}");
    responses.remove(0)
}
