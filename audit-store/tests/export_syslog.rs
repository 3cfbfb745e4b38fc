//! The syslog destination against a real rsyslog (Debian's `rsyslog` package, and
//! `rsyslog-gnutls` for TLS): the test starts its own `rsyslogd` on a free port with a
//! generated configuration whose template writes the fields rsyslog parsed from each message,
//! and checks them; over plain TCP, and over TLS (RFC 5425) with a certificate made in the
//! test by a CA of its own.

mod common;
mod receiver;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use audit_layer::record::Timestamp;
use audit_store::export::{ExportJob, Secret, SyslogDestination, TlsConfig};
use audit_store::store::AuditStore as _;
use common::{BASE_MS, RunningJob, TestResult, record, run_export, time_limit};
use receiver::tls::Pki;

/// Our own rsyslogd, killed when dropped.
struct Rsyslog(Child);

impl Drop for Rsyslog {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn rsyslogd() -> Option<&'static str> {
    ["/usr/sbin/rsyslogd", "/sbin/rsyslogd"]
        .into_iter()
        .find(|p| Path::new(p).exists())
}

/// rsyslog's GnuTLS network stream driver (Debian's `rsyslog-gnutls`), if installed.
fn gtls_driver() -> bool {
    [
        "/usr/lib/x86_64-linux-gnu",
        "/usr/lib/aarch64-linux-gnu",
        "/usr/lib",
    ]
    .iter()
    .any(|dir| Path::new(dir).join("rsyslog/lmnsd_gtls.so").exists())
}

/// Starts rsyslogd on `port`, writing what it parses into `dir/parsed.log`; with `pki`, its
/// input is TLS only, presenting the PKI's server certificate.
fn start_rsyslog(binary: &str, dir: &Path, port: u16, pki: Option<&Pki>) -> TestResult<Rsyslog> {
    let (global_tls, imtcp) = match pki {
        None => (String::new(), r#"module(load="imtcp")"#.to_owned()),
        Some(pki) => {
            std::fs::write(dir.join("ca.pem"), &pki.ca_pem)?;
            std::fs::write(dir.join("server.pem"), &pki.server_pem)?;
            std::fs::write(dir.join("server.key"), &pki.server_key_pem)?;
            (
                format!(
                    r#" defaultNetstreamDriver="gtls" defaultNetstreamDriverCAFile="{dir}/ca.pem" defaultNetstreamDriverCertFile="{dir}/server.pem" defaultNetstreamDriverKeyFile="{dir}/server.key""#,
                    dir = dir.display()
                ),
                r#"module(load="imtcp" streamDriver.name="gtls" streamDriver.mode="1" streamDriver.authMode="anon")"#
                    .to_owned(),
            )
        }
    };
    let config = format!(
        r#"global(workDirectory="{dir}" maxMessageSize="256k"{global_tls})
{imtcp}
template(name="parsed" type="list") {{
  property(name="syslogfacility") constant(value="|")
  property(name="syslogseverity") constant(value="|")
  property(name="protocol-version") constant(value="|")
  property(name="timereported" dateFormat="rfc3339") constant(value="|")
  property(name="hostname") constant(value="|")
  property(name="app-name") constant(value="|")
  property(name="procid") constant(value="|")
  property(name="msgid") constant(value="|")
  property(name="structured-data") constant(value="|")
  property(name="msg") constant(value="\n")
}}
ruleset(name="audit") {{
  action(type="omfile" file="{dir}/parsed.log" template="parsed")
}}
input(type="imtcp" port="{port}" ruleset="audit")
"#,
        dir = dir.display()
    );
    let path = dir.join("rsyslog.conf");
    std::fs::write(&path, config)?;
    let child = Command::new(binary)
        .arg("-n")
        .arg("-f")
        .arg(&path)
        .arg("-i")
        .arg(dir.join("rsyslogd.pid"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()?;
    Ok(Rsyslog(child))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rsyslog_parses_every_record_as_an_rfc_5424_message() -> TestResult {
    let Some(binary) = rsyslogd() else {
        common::skip(
            "the rsyslog test",
            "rsyslogd is not installed (apt-get install -y rsyslog)",
        );
        return Ok(());
    };
    time_limit(Duration::from_secs(20), async {
        let dir = tempfile::tempdir()?;
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let _rsyslog = start_rsyslog(binary, dir.path(), port, None)?;
        listening(port).await;

        let store = common::sqlite_in(dir.path()).await?;
        let mut records = Vec::new();
        for i in 0..5 {
            let mut r = record(Some("acc_1"), BASE_MS + i);
            r.action.description = Some(format!("Ünïcode and a\nnewline {i}").into());
            records.push(r);
        }
        // Larger than rsyslog's default message size, one frame all the same.
        let mut large = record(Some("acc_1"), BASE_MS + 10);
        large.resource.request = Some(serde_json::json!({ "blob": "x".repeat(20_000) }).into());
        records.push(large);
        let rows = common::rows(&records)?;
        store.insert(&rows).await?;

        let destination = SyslogDestination::new(&format!("127.0.0.1:{port}"))?
            .hostname("web-1")?
            .app_name("billing-api")?;
        let job = ExportJob::new("syslog", store, destination)?
            .settle(Duration::ZERO)
            .batch_records(4)
            .poll_interval(Duration::from_millis(20));
        let status = job.status();
        let job = RunningJob::spawn(job);
        let parsed = dir.path().join("parsed.log");
        let mut lines = Vec::new();
        for _ in 0..200 {
            lines = std::fs::read_to_string(&parsed)
                .unwrap_or_default()
                .lines()
                .map(str::to_owned)
                .collect();
            if lines.len() >= rows.len() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        job.stop().await?;
        assert_eq!(lines.len(), rows.len(), "{lines:#?}");
        assert_eq!(status.snapshot().delivered_records, rows.len() as u64);
        let pid = std::process::id().to_string();
        for (line, row) in lines.iter().zip(&rows) {
            let fields: Vec<&str> = line.splitn(10, '|').collect();
            assert_eq!(
                &fields[..3],
                &["13", "6", "1"],
                "facility, severity, version: {line}"
            );
            let reported: Timestamp = fields[3].parse()?;
            assert_eq!(reported.unix_millis(), row.time_ms, "{line}");
            assert_eq!(
                &fields[4..9],
                &["web-1", "billing-api", pid.as_str(), "audit", "-"],
                "{line}"
            );
            assert_eq!(fields[9], row.record, "the message is the record, whole");
        }
        Ok(())
    })
    .await
}

/// Waits until `port` accepts connections (rsyslogd has started).
async fn listening(port: u16) {
    let mut waited = 0;
    while tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .is_err()
    {
        assert!(waited < 100, "rsyslogd did not listen on {port}");
        tokio::time::sleep(Duration::from_millis(50)).await;
        waited += 1;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rsyslog_parses_records_sent_over_tls_and_a_wrong_ca_is_refused() -> TestResult {
    let Some(binary) = rsyslogd() else {
        common::skip(
            "the rsyslog TLS test",
            "rsyslogd is not installed (apt-get install -y rsyslog rsyslog-gnutls)",
        );
        return Ok(());
    };
    if !gtls_driver() {
        common::skip(
            "the rsyslog TLS test",
            "rsyslog's TLS driver is not installed (apt-get install -y rsyslog-gnutls)",
        );
        return Ok(());
    }
    time_limit(Duration::from_secs(30), async {
        let dir = tempfile::tempdir()?;
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let pki = Pki::new()?;
        let _rsyslog = start_rsyslog(binary, dir.path(), port, Some(&pki))?;
        listening(port).await;

        let store = common::sqlite_in(dir.path()).await?;
        let records: Vec<_> = (0..3).map(|i| record(Some("acc_1"), BASE_MS + i)).collect();
        let rows = common::rows(&records)?;
        store.insert(&rows).await?;

        // A job trusting another CA: every attempt fails, naming the collector and the
        // cause, and nothing reaches rsyslog.
        let key = Secret::new(pki.client_key_pem.clone());
        let wrong = TlsConfig::ca_bundle_pem(pki.other_ca_pem.as_bytes())?
            .client_certificate(pki.client_pem.as_bytes(), &key)?;
        let address = format!("127.0.0.1:{port}");
        let destination = SyslogDestination::new(&address)?.tls(wrong)?;
        let debug = format!("{destination:?}");
        let refused = run_export(
            "syslog",
            store.clone(),
            destination,
            Duration::from_secs(5),
            |m| m.failed_attempts >= 3,
        )
        .await?;
        assert!(refused.failed_attempts >= 3, "{refused:?}");
        assert_eq!(refused.delivered_records, 0);
        let error = refused.last_error.clone().unwrap_or_default();
        assert!(
            error.contains(&address) && error.contains("UnknownIssuer"),
            "{error}"
        );
        let key_body: String = pki
            .client_key_pem
            .lines()
            .filter(|l| !l.starts_with("-----"))
            .collect();
        for text in [format!("{refused:?}"), debug] {
            assert!(
                !text.contains(&key_body[..24]) && !text.contains("PRIVATE KEY"),
                "{text}"
            );
        }

        // The right CA: rsyslog receives and parses every record.
        let right = TlsConfig::ca_bundle_pem(pki.ca_pem.as_bytes())?;
        let destination = SyslogDestination::new(&address)?
            .hostname("web-1")?
            .app_name("billing-api")?
            .tls(right)?;
        let parsed = dir.path().join("parsed.log");
        let sent = run_export("syslog", store, destination, Duration::from_secs(10), |m| {
            m.delivered_records >= 3
                && std::fs::read_to_string(&parsed)
                    .unwrap_or_default()
                    .lines()
                    .count()
                    >= 3
        })
        .await?;
        assert_eq!(sent.delivered_records, 3, "{sent:?}");
        let text = std::fs::read_to_string(&parsed)?;
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3, "{lines:#?}");
        for (line, row) in lines.iter().zip(&rows) {
            let fields: Vec<&str> = line.splitn(10, '|').collect();
            assert_eq!(&fields[..3], &["13", "6", "1"], "{line}");
            assert_eq!(&fields[4..6], &["web-1", "billing-api"], "{line}");
            assert_eq!(fields[9], row.record, "the message is the record, whole");
        }
        Ok(())
    })
    .await
}
