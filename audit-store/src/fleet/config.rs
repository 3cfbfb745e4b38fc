//! [`FleetConfig`]: where the stream is, what it is called, how records are spread over its
//! subjects, and how the stream is created.

use std::time::Duration;

use async_nats::ServerAddr;

use super::subject::{check_name, check_subject, partition, redact_url};
use crate::{Result, StoreError};

/// The stream a fleet shares: servers, names, partitions and the stream's limits. Every app
/// instance and every ingestor of one fleet uses the same settings.
///
/// ```
/// use std::time::Duration;
/// use audit_store::fleet::FleetConfig;
///
/// let fleet = FleetConfig::new("nats://10.0.0.1:4222, nats://10.0.0.2:4222")?
///     .stream("AUDIT")
///     .subject_prefix("audit.records")
///     .replicas(3)
///     .max_bytes(Some(50 << 30));
/// fleet.validate()?;
/// assert_eq!(fleet.subject(Some("acc")), "audit.records.10");
/// assert_eq!(fleet.subject(None), "audit.records.0");
/// # Ok::<(), audit_store::StoreError>(())
/// ```
#[derive(Clone)]
#[must_use]
pub struct FleetConfig {
    pub(crate) servers: Vec<ServerAddr>,
    /// The servers as given, for [`redacted_servers`](Self::redacted_servers).
    pub(crate) server_texts: Vec<String>,
    pub(crate) stream: String,
    pub(crate) subject_prefix: String,
    pub(crate) partitions: u32,
    pub(crate) replicas: usize,
    pub(crate) duplicate_window: Duration,
    pub(crate) max_bytes: Option<u64>,
    pub(crate) max_age: Option<Duration>,
    pub(crate) dead_letter_subject: String,
    pub(crate) dead_letter_stream: String,
    pub(crate) dead_letter_max_age: Duration,
    pub(crate) dead_letter_max_bytes: u64,
    pub(crate) request_timeout: Duration,
    pub(crate) client_name: String,
    pub(crate) records_per_message: usize,
    pub(crate) message_bytes: usize,
}

impl std::fmt::Debug for FleetConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FleetConfig")
            .field("servers", &self.redacted_servers())
            .field("stream", &self.stream)
            .field("subject_prefix", &self.subject_prefix)
            .field("partitions", &self.partitions)
            .field("replicas", &self.replicas)
            .field("duplicate_window", &self.duplicate_window)
            .field("max_bytes", &self.max_bytes)
            .field("max_age", &self.max_age)
            .field("dead_letter_subject", &self.dead_letter_subject)
            .field("records_per_message", &self.records_per_message)
            .field("message_bytes", &self.message_bytes)
            .finish_non_exhaustive()
    }
}

/// The default stream name.
pub const DEFAULT_STREAM: &str = "AUDIT";
/// The default subject prefix.
pub const DEFAULT_SUBJECT_PREFIX: &str = "audit.records";
/// The default dead-letter subject.
pub const DEFAULT_DEAD_LETTER_SUBJECT: &str = "audit.dead";

impl FleetConfig {
    /// A fleet on the NATS servers `servers`: comma-separated seed URLs (`nats://host:port`,
    /// `tls://...`, or `host:port`; credentials as `nats://user:password@host`), of which
    /// the client learns the rest of the cluster. Every other setting has its default.
    ///
    /// # Errors
    ///
    /// [`StoreError::Config`] naming the URL (without its credentials) that does not parse,
    /// or saying the list is empty.
    pub fn new(servers: &str) -> Result<Self> {
        let mut addrs = Vec::new();
        let mut texts = Vec::new();
        for text in servers.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let addr: ServerAddr = text.parse().map_err(|e: std::io::Error| {
                StoreError::Config(format!(
                    "invalid value for 'nats url': {:?} is not a NATS server URL ({e}); expected e.g. nats://127.0.0.1:4222",
                    redact_url(text)
                ))
            })?;
            addrs.push(addr);
            texts.push(text.to_owned());
        }
        if addrs.is_empty() {
            return Err(StoreError::Config(
                "invalid value for 'nats url': no server given; expected comma-separated URLs such as nats://127.0.0.1:4222".to_owned(),
            ));
        }
        Ok(Self {
            servers: addrs,
            server_texts: texts,
            stream: DEFAULT_STREAM.to_owned(),
            subject_prefix: DEFAULT_SUBJECT_PREFIX.to_owned(),
            partitions: 16,
            replicas: 1,
            duplicate_window: Duration::from_secs(120),
            max_bytes: None,
            max_age: None,
            dead_letter_subject: DEFAULT_DEAD_LETTER_SUBJECT.to_owned(),
            dead_letter_stream: format!("{DEFAULT_STREAM}_DEAD"),
            dead_letter_max_age: Duration::from_secs(30 * 24 * 3600),
            dead_letter_max_bytes: 1 << 30,
            request_timeout: Duration::from_secs(5),
            client_name: "audit".to_owned(),
            records_per_message: 256,
            message_bytes: 256 << 10,
        })
    }

    /// The stream's name. Defaults to `AUDIT`; the dead-letter stream is named after it
    /// (`AUDIT_DEAD`).
    pub fn stream(mut self, name: impl Into<String>) -> Self {
        self.stream = name.into();
        self.dead_letter_stream = format!("{}_DEAD", self.stream);
        self
    }

    /// The subjects' prefix: records go to `<prefix>.<partition>`, and the stream takes
    /// `<prefix>.>`. Defaults to `audit.records`.
    pub fn subject_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.subject_prefix = prefix.into();
        self
    }

    /// How many subjects records are spread over (by account, see
    /// [`partition`](super::partition)). Defaults to 16. Every publisher of a fleet must use
    /// the same number, or one account's records land in two subjects.
    pub fn partitions(mut self, partitions: u32) -> Self {
        self.partitions = partitions;
        self
    }

    /// The stream's replicas when [`ensure_stream`](super::NatsDestination::ensure_stream)
    /// creates it: 3 in a three-node cluster (a write is acknowledged once two nodes hold it),
    /// 1 on a single server. Defaults to 1. An existing stream keeps its own.
    pub fn replicas(mut self, replicas: usize) -> Self {
        self.replicas = replicas;
        self
    }

    /// How long the stream remembers a record id to drop a second publish of it. Defaults
    /// to 2 minutes: longer than a publisher's retries, and than a replay right after NATS
    /// comes back. The SQL store skips a record it holds whatever the window.
    pub fn duplicate_window(mut self, window: Duration) -> Self {
        self.duplicate_window = window;
        self
    }

    /// The most bytes the stream holds (records not yet ingested). Defaults to none: up to
    /// the server's JetStream storage limit. When full, publishes fail and app instances
    /// spool locally; nothing already in the stream is dropped.
    pub fn max_bytes(mut self, bytes: Option<u64>) -> Self {
        self.max_bytes = bytes;
        self
    }

    /// How long a record not yet ingested may stay in the stream before JetStream deletes
    /// it. Defaults to none (kept until ingested): a record deleted this way is lost without
    /// a gap record, so set it only as a last resort for disk.
    pub fn max_age(mut self, age: Option<Duration>) -> Self {
        self.max_age = age;
        self
    }

    /// Where ingestors move poison messages. Defaults to `audit.dead`, kept by the stream
    /// `<stream>_DEAD` that [`ensure_stream`](super::NatsDestination::ensure_stream) creates.
    pub fn dead_letter_subject(mut self, subject: impl Into<String>) -> Self {
        self.dead_letter_subject = subject.into();
        self
    }

    /// How long the dead-letter stream keeps messages. Defaults to 30 days.
    pub fn dead_letter_max_age(mut self, age: Duration) -> Self {
        self.dead_letter_max_age = age;
        self
    }

    /// The most bytes the dead-letter stream keeps; beyond them, the oldest messages go.
    /// Defaults to 1 GiB. Poison is moved aside record by record, headers added, so a
    /// publisher sending junk could otherwise fill the servers' disks faster than it sends.
    pub fn dead_letter_max_bytes(mut self, bytes: u64) -> Self {
        self.dead_letter_max_bytes = bytes.max(1 << 20);
        self
    }

    /// How long a request to NATS (a publish's acknowledgement, stream information) may
    /// take. Defaults to 5 s.
    pub fn request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = timeout;
        self
    }

    /// The client name the servers show for this connection. Defaults to `audit`.
    pub fn client_name(mut self, name: impl Into<String>) -> Self {
        self.client_name = name.into();
        self
    }

    /// The most records a publisher packs into one message (see
    /// [the module docs](super)). Defaults to 256; 1 publishes each record as a
    /// message of its own. At most [`MAX_RECORDS_PER_MESSAGE`](super::MAX_RECORDS_PER_MESSAGE),
    /// beyond which ingestors take a message for poison.
    pub fn records_per_message(mut self, records: usize) -> Self {
        self.records_per_message = records;
        self
    }

    /// The most bytes of records a publisher packs into one message; a record larger than
    /// this goes alone. Defaults to 256 KiB, and never more than the servers' payload limit
    /// (`max_payload`, 1 MiB unless configured).
    pub fn message_bytes(mut self, bytes: usize) -> Self {
        self.message_bytes = bytes;
        self
    }

    /// Checks every setting.
    ///
    /// # Errors
    ///
    /// [`StoreError::Config`] naming the setting and the value that cannot work.
    pub fn validate(&self) -> Result<()> {
        check_name("stream", &self.stream).map_err(StoreError::Config)?;
        check_name("dead-letter stream", &self.dead_letter_stream).map_err(StoreError::Config)?;
        check_subject("subject prefix", &self.subject_prefix).map_err(StoreError::Config)?;
        check_subject("dead-letter subject", &self.dead_letter_subject)
            .map_err(StoreError::Config)?;
        if self.dead_letter_subject == self.subject_prefix
            || self
                .dead_letter_subject
                .starts_with(&format!("{}.", self.subject_prefix))
        {
            return Err(StoreError::Config(format!(
                "invalid value for 'dead-letter subject': {:?} is inside the records' subjects {}.>",
                self.dead_letter_subject, self.subject_prefix
            )));
        }
        if self.partitions == 0 || self.partitions > 1024 {
            return Err(StoreError::Config(format!(
                "invalid value for 'partitions': expected 1 to 1024, got {}",
                self.partitions
            )));
        }
        if !(1..=5).contains(&self.replicas) {
            return Err(StoreError::Config(format!(
                "invalid value for 'replicas': expected 1 to 5 (3 in a three-node cluster), got {}",
                self.replicas
            )));
        }
        if !(1..=super::MAX_RECORDS_PER_MESSAGE).contains(&self.records_per_message) {
            return Err(StoreError::Config(format!(
                "invalid value for 'records per message': expected 1 to {}, got {}",
                super::MAX_RECORDS_PER_MESSAGE,
                self.records_per_message
            )));
        }
        if !(1024..=64 << 20).contains(&self.message_bytes) {
            return Err(StoreError::Config(format!(
                "invalid value for 'message bytes': expected 1 KiB to 64 MiB, got {}",
                self.message_bytes
            )));
        }
        if self.duplicate_window < Duration::from_secs(1) {
            return Err(StoreError::Config(format!(
                "invalid value for 'duplicate window': expected at least 1 s, got {:?}",
                self.duplicate_window
            )));
        }
        Ok(())
    }

    /// The subject of a record of `account_id`: `<prefix>.<partition>`.
    pub fn subject(&self, account_id: Option<&str>) -> String {
        self.subject_of(self.partition_of(account_id))
    }

    /// The partition of a record of `account_id`.
    pub(crate) fn partition_of(&self, account_id: Option<&str>) -> u32 {
        partition(account_id, self.partitions)
    }

    /// The subject of `partition`.
    pub(crate) fn subject_of(&self, partition: u32) -> String {
        format!("{}.{partition}", self.subject_prefix)
    }

    /// The stream's name.
    pub fn stream_name(&self) -> &str {
        &self.stream
    }

    /// The servers, without their credentials: fit for logs.
    pub fn redacted_servers(&self) -> String {
        self.server_texts
            .iter()
            .map(|s| redact_url(s))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Connects to the servers. With `wait` false, returns at once and connects in the
    /// background (an app starts while NATS is down, and spools); with `wait` true, fails
    /// when no server answers within the request timeout.
    ///
    /// # Errors
    ///
    /// [`StoreError::Stream`] naming the servers (without credentials) and the cause.
    pub async fn connect(&self, wait: bool) -> Result<async_nats::Client> {
        self.validate()?;
        let mut options = async_nats::ConnectOptions::new()
            .name(&self.client_name)
            .connection_timeout(self.request_timeout)
            .request_timeout(Some(self.request_timeout))
            // Reconnect for ever: a fleet outlives a NATS outage.
            .max_reconnects(None);
        if !wait {
            options = options.retry_on_initial_connect();
        }
        options.connect(self.servers.clone()).await.map_err(|e| {
            StoreError::Stream(format!(
                "cannot connect to NATS at {} (nats url): {}",
                self.redacted_servers(),
                e.kind()
            ))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_settings_are_named() {
        let err = |c: FleetConfig| c.validate().unwrap_err().to_string();
        let base = || FleetConfig::new("nats://127.0.0.1:1").unwrap();
        assert!(err(base().stream("A.B")).contains("'stream'"));
        assert!(err(base().subject_prefix("audit.*")).contains("'subject prefix'"));
        assert!(
            err(base().dead_letter_subject("audit.records.dead")).contains("'dead-letter subject'")
        );
        assert!(err(base().partitions(0)).contains("'partitions'"));
        assert!(err(base().replicas(0)).contains("'replicas'"));
        assert!(err(base().duplicate_window(Duration::ZERO)).contains("'duplicate window'"));
        assert!(err(base().records_per_message(0)).contains("'records per message'"));
        assert!(err(base().records_per_message(4097)).contains("got 4097"));
        assert!(err(base().message_bytes(10)).contains("'message bytes'"));
        assert!(base().validate().is_ok());
    }

    #[test]
    fn urls_are_parsed_and_never_shown_with_secrets() {
        let fleet = FleetConfig::new(" nats://a:secret@127.0.0.1:4001 ,127.0.0.1:4002,").unwrap();
        assert_eq!(fleet.servers.len(), 2);
        assert_eq!(
            fleet.redacted_servers(),
            "nats://a:***@127.0.0.1:4001,127.0.0.1:4002"
        );
        assert!(!format!("{fleet:?}").contains("secret"));
        let empty = FleetConfig::new(" , ").unwrap_err().to_string();
        assert!(empty.contains("'nats url'"), "{empty}");
        let bad = FleetConfig::new("nats://u:secret@[::1")
            .unwrap_err()
            .to_string();
        assert!(bad.contains("'nats url'"), "{bad}");
        assert!(!bad.contains("secret"), "{bad}");
    }

    #[test]
    fn subjects_follow_the_partition() {
        let fleet = FleetConfig::new("127.0.0.1:1")
            .unwrap()
            .subject_prefix("x.y")
            .partitions(4);
        assert_eq!(fleet.subject(None), "x.y.0");
        assert_eq!(
            fleet.subject(Some("acc")),
            format!("x.y.{}", partition(Some("acc"), 4))
        );
    }
}
