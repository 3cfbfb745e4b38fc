//! A syslog collector over TCP or TLS (RFC 5425): each record one RFC 5424 message, framed
//! by octet counting (RFC 6587), on a connection kept open between batches.

use std::sync::Arc;
use std::time::Duration;

use futures_util::FutureExt as _;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tokio::sync::Mutex;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

use super::{DeliveryError, Destination};
use crate::export::ExportConfigError;
use crate::export::batch::EncodedBatch;
use crate::export::tls::{TlsConfig, describe as describe_tls};

/// Sends each record of a batch as one RFC 5424 message over TCP, octet-counted (RFC 6587:
/// `<length> <message>`), so a record's JSON is never split or merged by a receiver looking
/// for newlines:
///
/// `<PRI>1 <action.time, RFC 3339 UTC with ms> <hostname> <app name> <pid> audit - <line>`
///
/// PRI is the [facility](Self::facility) (13, "log audit", by default) times 8 plus the
/// severity: 6 (informational). The message is the record's line in the job's format. A
/// batch is delivered once every message is written to the connection: TCP syslog has no
/// acknowledgement, so a collector that crashes with messages in its buffers loses them (as
/// for every TCP syslog sender). The connection is kept between batches; one the collector
/// closed meanwhile (a restart, an idle timeout) is noticed before the next batch, which
/// goes on a new one. A failed write drops the connection; the next attempt connects again
/// and sends the whole batch.
///
/// With [`tls`](Self::tls) the connection is TLS (RFC 5425, the same octet-counted frames),
/// the collector's certificate checked against the configuration's certificate authorities
/// and the host of the address; without, plain TCP, for a collector on the loopback or a
/// private network.
///
/// Collectors cap messages (rsyslog: 8 KiB by default, `maxMessageSize`); records are sent
/// whole, so raise the cap to the layer's record cap.
///
/// ```
/// use audit_store::export::SyslogDestination;
///
/// use audit_store::export::TlsConfig;
///
/// let collector = SyslogDestination::new("127.0.0.1:514")?.app_name("billing-api")?;
/// let over_tls = SyslogDestination::new("logs.example:6514")?.tls(TlsConfig::platform())?;
/// # Ok::<(), audit_store::export::ExportConfigError>(())
/// ```
#[derive(Debug)]
pub struct SyslogDestination {
    address: String,
    hostname: String,
    app_name: String,
    facility: u8,
    timeout: Duration,
    tls: Option<Tls>,
    connection: Mutex<Option<Connection>>,
}

/// What a TLS connection to the collector needs.
#[derive(Clone)]
struct Tls {
    connector: TlsConnector,
    server_name: ServerName<'static>,
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tls")
            .field("server_name", &self.server_name)
            .finish_non_exhaustive()
    }
}

/// An open connection to the collector.
#[derive(Debug)]
enum Connection {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

impl Connection {
    /// Whether the collector closed or reset the connection since the last batch. It never
    /// sends anything, so a read that completes at once is an end of stream or an error;
    /// one that would wait means the connection is open. The read does not wait. Over TLS
    /// it takes the records the collector sent (session tickets), which yield no data.
    ///
    /// Without this check the first batch after a collector restart would be written into
    /// the dead connection's send buffer, counted as delivered, and lost.
    fn closed_by_peer(&mut self) -> bool {
        let mut buf = [0u8; 512];
        // Bounded: a collector that does send something is not read for ever.
        for _ in 0..64 {
            let read = match self {
                Self::Plain(stream) => stream.read(&mut buf).now_or_never(),
                Self::Tls(stream) => stream.read(&mut buf).now_or_never(),
            };
            match read {
                None => return false,
                Some(Ok(0) | Err(_)) => return true,
                Some(Ok(_)) => {}
            }
        }
        false
    }

    async fn write_all(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        match self {
            Self::Plain(stream) => {
                stream.write_all(bytes).await?;
                stream.flush().await
            }
            Self::Tls(stream) => {
                stream.write_all(bytes).await?;
                stream.flush().await
            }
        }
    }
}

/// RFC 5424's PRINTUSASCII: a header field's characters (`NILVALUE` when empty).
fn header_field(value: &str, max: usize, what: &str) -> Result<String, ExportConfigError> {
    if value.is_empty() || value.len() > max || !value.bytes().all(|b| (33..=126).contains(&b)) {
        return Err(ExportConfigError::new(format!(
            "invalid syslog {what} {:?}: expected 1 to {max} printable ASCII characters without \
             spaces",
            value.chars().take(80).collect::<String>()
        )));
    }
    Ok(value.to_owned())
}

impl SyslogDestination {
    /// A collector at `address` (`host:port`), app name `audit-export`, facility 13, a 10 s
    /// timeout, and this machine's hostname.
    ///
    /// # Errors
    ///
    /// When `address` has no port.
    pub fn new(address: &str) -> Result<Self, ExportConfigError> {
        if address
            .rsplit_once(':')
            .is_none_or(|(_, port)| port.parse::<u16>().is_err())
        {
            return Err(ExportConfigError::new(format!(
                "invalid syslog address {:?}: expected host:port",
                address.chars().take(80).collect::<String>()
            )));
        }
        let hostname = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .ok()
            .and_then(|h| header_field(h.trim(), 255, "hostname").ok())
            .unwrap_or_else(|| "-".to_owned());
        Ok(Self {
            address: address.to_owned(),
            hostname,
            app_name: "audit-export".to_owned(),
            facility: 13,
            timeout: Duration::from_secs(10),
            tls: None,
            connection: Mutex::new(None),
        })
    }

    /// The APP-NAME field (1 to 48 printable ASCII characters). Defaults to `audit-export`.
    ///
    /// # Errors
    ///
    /// When `name` is not such a field.
    pub fn app_name(mut self, name: &str) -> Result<Self, ExportConfigError> {
        self.app_name = header_field(name, 48, "app name")?;
        Ok(self)
    }

    /// The HOSTNAME field. Defaults to this machine's hostname.
    ///
    /// # Errors
    ///
    /// When `hostname` is not 1 to 255 printable ASCII characters.
    pub fn hostname(mut self, hostname: &str) -> Result<Self, ExportConfigError> {
        self.hostname = header_field(hostname, 255, "hostname")?;
        Ok(self)
    }

    /// The facility (0 to 23). Defaults to 13, "log audit".
    ///
    /// # Errors
    ///
    /// When `facility` is above 23.
    pub fn facility(mut self, facility: u8) -> Result<Self, ExportConfigError> {
        if facility > 23 {
            return Err(ExportConfigError::new(format!(
                "invalid syslog facility {facility}: expected 0 to 23"
            )));
        }
        self.facility = facility;
        Ok(self)
    }

    /// How long connecting and writing a batch may take. Defaults to 10 s.
    #[must_use]
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Connects over TLS (RFC 5425), checking the collector's certificate against `tls`'s
    /// certificate authorities and the address's host name (or IP address). Defaults to plain
    /// TCP.
    ///
    /// # Errors
    ///
    /// When the address's host is not a DNS name or IP address, or the configuration cannot
    /// be set up.
    pub fn tls(mut self, tls: TlsConfig) -> Result<Self, ExportConfigError> {
        let host = self
            .address
            .rsplit_once(':')
            .map_or(self.address.as_str(), |(host, _)| host)
            .trim_start_matches('[')
            .trim_end_matches(']');
        let server_name = ServerName::try_from(host.to_owned()).map_err(|_| {
            ExportConfigError::new(format!(
                "invalid syslog address {:?}: its host is not a DNS name or IP address, which \
                 TLS checks the certificate against",
                self.address
            ))
        })?;
        self.tls = Some(Tls {
            connector: TlsConnector::from(Arc::new(tls.client_config(&[])?)),
            server_name,
        });
        Ok(self)
    }

    /// The batch's messages, each framed.
    fn frames(&self, batch: &EncodedBatch) -> Vec<u8> {
        let pri = u16::from(self.facility) * 8 + 6;
        let pid = std::process::id();
        let mut out = Vec::with_capacity(batch.lines.len() + batch.records * 100);
        for (line, (time_ms, _)) in batch.lines().zip(&batch.positions) {
            let time = audit_layer::record::Timestamp::from_unix_millis(*time_ms);
            let message = format!(
                "<{pri}>1 {time} {} {} {pid} audit - {line}",
                self.hostname, self.app_name
            );
            out.extend_from_slice(format!("{} ", message.len()).as_bytes());
            out.extend_from_slice(message.as_bytes());
        }
        out
    }

    /// A new connection to the collector, TLS when configured.
    async fn connect(&self) -> Result<Connection, DeliveryError> {
        let address = &self.address;
        let stream = TcpStream::connect(address).await.map_err(|e| {
            DeliveryError::new(format!(
                "cannot connect to the syslog collector {address}: {e}"
            ))
        })?;
        let _ = stream.set_nodelay(true);
        let Some(tls) = &self.tls else {
            return Ok(Connection::Plain(stream));
        };
        let stream = tls
            .connector
            .connect(tls.server_name.clone(), stream)
            .await
            .map_err(|e| {
                DeliveryError::new(format!(
                    "the TLS handshake with the syslog collector {address} failed: {}",
                    describe_tls(&e)
                ))
            })?;
        Ok(Connection::Tls(Box::new(stream)))
    }

    async fn send(&self, frames: &[u8]) -> Result<(), DeliveryError> {
        let mut connection = self.connection.lock().await;
        if connection.as_mut().is_some_and(Connection::closed_by_peer) {
            *connection = None;
        }
        if connection.is_none() {
            *connection = Some(self.connect().await?);
        }
        let Some(stream) = connection.as_mut() else {
            unreachable!("connected above");
        };
        if let Err(e) = stream.write_all(frames).await {
            *connection = None;
            return Err(DeliveryError::new(format!(
                "writing to the syslog collector {} failed: {e}",
                self.address
            )));
        }
        Ok(())
    }
}

impl Destination for SyslogDestination {
    async fn deliver(&self, batch: &EncodedBatch) -> Result<(), DeliveryError> {
        let frames = self.frames(batch);
        match tokio::time::timeout(self.timeout, self.send(&frames)).await {
            Ok(sent) => sent,
            Err(_) => {
                *self.connection.lock().await = None;
                Err(DeliveryError::new(format!(
                    "the syslog collector {} did not take the batch within {:?}",
                    self.address, self.timeout
                )))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::export::Format;

    fn batch(lines: &str) -> EncodedBatch {
        EncodedBatch {
            job: "j".into(),
            account_id: "a".into(),
            idempotency_key: "k".into(),
            first: (0, uuid::Uuid::nil()),
            last: (0, uuid::Uuid::nil()),
            records: 1,
            format: Format::Ndjson,
            lines: format!("{lines}\n"),
            positions: vec![(0, uuid::Uuid::nil())],
        }
    }

    #[tokio::test]
    async fn a_batch_after_the_collector_closed_the_connection_goes_on_a_new_one() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap().to_string();
        let destination = SyslogDestination::new(&address).unwrap();

        destination.deliver(&batch("{\"n\":1}")).await.unwrap();
        let (mut first, _) = listener.accept().await.unwrap();
        let mut got = vec![0u8; 4096];
        let n = first.read(&mut got).await.unwrap();
        assert!(String::from_utf8_lossy(&got[..n]).contains("{\"n\":1}"));
        // The collector restarts: its end of the connection is closed.
        drop(first);
        tokio::time::sleep(Duration::from_millis(100)).await;

        destination.deliver(&batch("{\"n\":2}")).await.unwrap();
        let (mut second, _) = tokio::time::timeout(Duration::from_secs(5), listener.accept())
            .await
            .expect("the second batch comes on a new connection")
            .unwrap();
        let n = second.read(&mut got).await.unwrap();
        assert!(String::from_utf8_lossy(&got[..n]).contains("{\"n\":2}"));
    }

    #[test]
    fn each_record_is_one_octet_counted_rfc_5424_message() {
        let destination = SyslogDestination::new("127.0.0.1:1")
            .unwrap()
            .hostname("web-1")
            .unwrap();
        let batch = EncodedBatch {
            last: (1, uuid::Uuid::nil()),
            records: 2,
            positions: vec![
                (0, uuid::Uuid::nil()),
                (1_700_000_000_123, uuid::Uuid::nil()),
            ],
            ..batch("{\"a\":\"é\"}\n{}")
        };
        let frames = String::from_utf8(destination.frames(&batch)).unwrap();
        let pid = std::process::id();
        let first = format!(
            "<110>1 1970-01-01T00:00:00.000Z web-1 audit-export {pid} audit - {{\"a\":\"é\"}}"
        );
        let second =
            format!("<110>1 2023-11-14T22:13:20.123Z web-1 audit-export {pid} audit - {{}}");
        assert_eq!(
            frames,
            format!("{} {first}{} {second}", first.len(), second.len())
        );
    }

    #[test]
    fn header_fields_are_printable_ascii() {
        assert!(SyslogDestination::new("host").is_err());
        let d = SyslogDestination::new("host:514").unwrap();
        assert!(d.app_name("has space").is_err());
        assert!(
            SyslogDestination::new("host:514")
                .unwrap()
                .facility(24)
                .is_err()
        );
    }
}
