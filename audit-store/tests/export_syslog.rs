//! The syslog destination against a real rsyslog (Debian's `rsyslog` package): the test
//! starts its own `rsyslogd` on a free port with a generated configuration whose template
//! writes the fields rsyslog parsed from each message, and checks them.

mod common;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use audit_layer::record::Timestamp;
use audit_store::SqliteStore;
use audit_store::export::{ExportJob, SyslogDestination};
use audit_store::model::StoredRecord;
use audit_store::store::AuditStore as _;
use common::{BASE_MS, TestResult, record, time_limit};
use tokio::sync::oneshot;

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

/// Starts rsyslogd on `port`, writing what it parses into `dir/parsed.log`.
fn start_rsyslog(binary: &str, dir: &Path, port: u16) -> TestResult<Rsyslog> {
    let config = format!(
        r#"global(workDirectory="{dir}" maxMessageSize="256k")
module(load="imtcp")
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
        let _rsyslog = start_rsyslog(binary, dir.path(), port)?;
        let mut waited = 0;
        while tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_err()
        {
            assert!(waited < 100, "rsyslogd did not listen on {port}");
            tokio::time::sleep(Duration::from_millis(50)).await;
            waited += 1;
        }

        let store = SqliteStore::open(dir.path().join("audit.db")).await?;
        store.migrate().await?;
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
        let rows: Vec<StoredRecord> = records
            .iter()
            .map(StoredRecord::from_record)
            .collect::<Result<_, _>>()?;
        store.insert(&rows).await?;

        let destination = SyslogDestination::new(&format!("127.0.0.1:{port}"))?
            .hostname("web-1")?
            .app_name("billing-api")?;
        let job = ExportJob::new("syslog", store, destination)?
            .settle(Duration::ZERO)
            .batch_records(4)
            .poll_interval(Duration::from_millis(20));
        let status = job.status();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(job.run(async move {
            let _ = stopped.await;
        }));
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
        let _ = stop.send(());
        task.await?;
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
