//! The load generator: closed-loop HTTP/1.1 over keep-alive connections, one request in flight
//! per connection, every request with its own `x-request-id` (`c<connection>-<sequence>`).
//!
//! Because ids are sequential per connection and a connection stops at its first error, the
//! set of requests answered is exactly `c<i>-0 .. c<i>-<answered[i]>` for every connection,
//! which the driver compares with the `raw.cf_ray_id`s stored.
//!
//! HTTP is written by hand (the servers are ours and always send `Content-Length`), so the
//! generator spends as little as possible of the CPU it shares with the server.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::api::{BEARER, POLICY_JSON, USER_AGENT};
use crate::{BoxError, Kind};

/// Accounts the requests are spread over, so that a multi-writer pipeline uses its lanes.
const ACCOUNTS: [&str; 8] = [
    "023e105f4ecef8ad9ca31a8372d0c353",
    "9a7806061c88ada191ed06f989cc3dac",
    "1d5fdc9e88c8a8c4518b068cd94331fe",
    "7b4f3c0a9e2d4b1c8f6a5e3d2c1b0a99",
    "5c2e8a1f4b7d9e3c6a0f2b4d8e1c7a35",
    "e4d3c2b1a09f8e7d6c5b4a3928170654",
    "0f1e2d3c4b5a69788796a5b4c3d2e1f0",
    "b8c9dae0f1a2b3c4d5e6f708192a3b4c",
];

/// One load run against one server.
#[derive(Clone, Debug)]
pub(crate) struct LoadPlan {
    pub(crate) addr: SocketAddr,
    pub(crate) kind: Kind,
    pub(crate) connections: usize,
    pub(crate) warmup: Duration,
    pub(crate) duration: Duration,
    /// Total requests per second to pace at; `None`: as fast as answers come (saturation).
    pub(crate) rate: Option<f64>,
}

/// What a load run saw.
#[derive(Debug, Default)]
pub(crate) struct LoadOutcome {
    /// Requests answered `200`, per connection, warm-up included.
    pub(crate) answered: Vec<u64>,
    /// Requests completed inside the measured window.
    pub(crate) measured: u64,
    /// Their latencies, µs (from the scheduled send time when paced).
    pub(crate) latencies_us: Vec<u32>,
    /// The measured window's length.
    pub(crate) window: Duration,
    /// Failed requests (connection errors, non-200 answers), and the first one's description.
    pub(crate) errors: u64,
    pub(crate) first_error: Option<String>,
}

impl LoadOutcome {
    /// Requests answered in all, warm-up included.
    pub(crate) fn answered_total(&self) -> u64 {
        self.answered.iter().sum()
    }
}

/// Runs `plan`. `at_window_start` runs when the warm-up ends and `at_window_end` when the
/// measured window closes (before in-flight requests finish); the function returns once every
/// connection has its last answer and is closed.
pub(crate) async fn run(
    plan: &LoadPlan,
    at_window_start: impl FnOnce(),
    at_window_end: impl FnOnce(),
) -> Result<LoadOutcome, BoxError> {
    let start = Instant::now();
    let window_start = start + plan.warmup;
    let end = window_start + plan.duration;
    let mut tasks = tokio::task::JoinSet::new();
    let shared = Arc::new(plan.clone());
    for conn in 0..plan.connections {
        let plan = Arc::clone(&shared);
        tasks.spawn(connection(plan, conn, start, window_start, end));
    }
    tokio::time::sleep_until(window_start.into()).await;
    at_window_start();
    let measured_from = Instant::now();
    tokio::time::sleep_until(end.into()).await;
    at_window_end();
    let window = measured_from.elapsed();
    let mut outcome = LoadOutcome {
        answered: vec![0; plan.connections],
        window,
        ..LoadOutcome::default()
    };
    while let Some(joined) = tasks.join_next().await {
        let conn = joined?;
        outcome.answered[conn.index] = conn.answered;
        outcome.measured += conn.latencies_us.len() as u64;
        outcome.latencies_us.extend(conn.latencies_us);
        if let Some(e) = conn.error {
            outcome.errors += 1;
            outcome.first_error.get_or_insert(e);
        }
    }
    Ok(outcome)
}

struct ConnectionOutcome {
    index: usize,
    answered: u64,
    latencies_us: Vec<u32>,
    error: Option<String>,
}

async fn connection(
    plan: Arc<LoadPlan>,
    index: usize,
    start: Instant,
    window_start: Instant,
    end: Instant,
) -> ConnectionOutcome {
    let mut outcome = ConnectionOutcome {
        index,
        answered: 0,
        latencies_us: Vec::new(),
        error: None,
    };
    let interval = plan
        .rate
        .map(|rate| Duration::from_secs_f64(plan.connections as f64 / rate.max(1.0)));
    // Paced connections start spread over one interval, not all at once.
    let offset = interval.map_or(Duration::ZERO, |i| {
        i.mul_f64(index as f64 / plan.connections as f64)
    });
    let result = async {
        let mut stream = TcpStream::connect(plan.addr).await?;
        stream.set_nodelay(true)?;
        let account = ACCOUNTS[index % ACCOUNTS.len()];
        let mut request = Vec::with_capacity(1024);
        let mut buffer = vec![0u8; 4096];
        loop {
            let scheduled = match interval {
                Some(i) => start + offset + i.mul_f64(outcome.answered as f64),
                None => Instant::now(),
            };
            if scheduled >= end {
                return Ok::<(), BoxError>(());
            }
            if scheduled > Instant::now() {
                tokio::time::sleep_until(scheduled.into()).await;
            }
            write_request(&mut request, plan.kind, account, index, outcome.answered);
            stream.write_all(&request).await?;
            let status = read_response(&mut stream, &mut buffer).await?;
            let done = Instant::now();
            if status != 200 {
                return Err(
                    format!("request c{index}-{} answered {status}", outcome.answered).into(),
                );
            }
            outcome.answered += 1;
            if scheduled >= window_start && done < end {
                let micros = done.duration_since(scheduled).as_micros();
                outcome
                    .latencies_us
                    .push(u32::try_from(micros).unwrap_or(u32::MAX));
            }
        }
    }
    .await;
    if let Err(e) = result {
        outcome.error = Some(e.to_string());
    }
    outcome
}

/// The request bytes for request `seq` of connection `conn`.
fn write_request(out: &mut Vec<u8>, kind: Kind, account: &str, conn: usize, seq: u64) {
    use std::io::Write;
    out.clear();
    // Writing into a Vec cannot fail.
    let _ = match kind {
        Kind::Get => write!(
            out,
            "GET /accounts/{account}/alerting/v3/policies/0da2b59e-f118-439d-8097-bdfb215203c9 HTTP/1.1\r\n\
             host: 127.0.0.1\r\nuser-agent: {USER_AGENT}\r\naccept: application/json\r\n\
             authorization: {BEARER}\r\nx-request-id: c{conn}-{seq}\r\n\r\n"
        ),
        Kind::Post => write!(
            out,
            "POST /accounts/{account}/alerting/v3/policies HTTP/1.1\r\n\
             host: 127.0.0.1\r\nuser-agent: {USER_AGENT}\r\naccept: application/json\r\n\
             authorization: {BEARER}\r\nx-request-id: c{conn}-{seq}\r\n\
             content-type: application/json\r\ncontent-length: {}\r\n\r\n{POLICY_JSON}",
            POLICY_JSON.len()
        ),
    };
}

/// Reads one response; returns its status. The body is read (by `Content-Length`) and dropped.
async fn read_response(stream: &mut TcpStream, buffer: &mut Vec<u8>) -> Result<u16, BoxError> {
    let mut filled = 0;
    loop {
        if filled == buffer.len() {
            buffer.resize(buffer.len() * 2, 0);
        }
        let n = stream.read(&mut buffer[filled..]).await?;
        if n == 0 {
            return Err("the server closed the connection".into());
        }
        filled += n;
        if let Some(head) = parse_head(&buffer[..filled])? {
            let total = head.header_len + head.content_length;
            while filled < total {
                if total > buffer.len() {
                    buffer.resize(total, 0);
                }
                let n = stream.read(&mut buffer[filled..total]).await?;
                if n == 0 {
                    return Err("the server closed the connection mid-body".into());
                }
                filled += n;
            }
            if filled > total {
                return Err("unexpected bytes after a response".into());
            }
            return Ok(head.status);
        }
    }
}

#[derive(Debug, PartialEq, Eq)]
struct Head {
    status: u16,
    header_len: usize,
    content_length: usize,
}

/// The status line and `Content-Length` of a response head, once all of it has arrived.
fn parse_head(bytes: &[u8]) -> Result<Option<Head>, BoxError> {
    let Some(end) = bytes.windows(4).position(|w| w == b"\r\n\r\n") else {
        return Ok(None);
    };
    let head = std::str::from_utf8(&bytes[..end])?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("bad status line {status_line:?}"))?;
    let mut content_length = None;
    for line in lines {
        if let Some((name, value)) = line.split_once(':')
            && name.eq_ignore_ascii_case("content-length")
        {
            content_length = Some(value.trim().parse()?);
        }
    }
    Ok(Some(Head {
        status,
        header_len: end + 4,
        content_length: content_length.ok_or("a response without content-length")?,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_head_is_parsed_once_complete() {
        let response = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\ncontent-length: 12\r\n\r\n{\"id\":\"p1\"}x";
        assert_eq!(parse_head(&response[..20]).ok().flatten(), None);
        let head = parse_head(response).ok().flatten();
        assert_eq!(
            head,
            Some(Head {
                status: 200,
                header_len: response.len() - 12,
                content_length: 12
            })
        );
    }

    #[test]
    fn requests_carry_their_id_and_body() {
        let mut out = Vec::new();
        write_request(&mut out, Kind::Post, ACCOUNTS[0], 3, 17);
        let text = String::from_utf8(out).unwrap_or_default();
        assert!(text.contains("x-request-id: c3-17\r\n"));
        assert!(text.ends_with(POLICY_JSON));
        assert!(text.contains(&format!("content-length: {}\r\n", POLICY_JSON.len())));
    }
}
