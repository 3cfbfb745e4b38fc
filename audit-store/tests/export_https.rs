//! The HTTPS destination against a real TLS receiver (axum over tokio-rustls on a local port)
//! whose certificate, and the client's, are made in the test by a CA of its own (rcgen): a job
//! trusting that CA delivers, presenting its client certificate; a job trusting another CA
//! fails every attempt, says which destination and why, and leaks no secret.

mod common;
mod receiver;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use audit_store::SqliteStore;
use audit_store::export::{HttpDestination, Secret, TlsConfig};
use audit_store::store::AuditStore as _;
use common::{TestResult, record, rows, run_export, time_limit};
use receiver::tls::Pki;
use receiver::{Receiver, Shared};

const SECRET: &str = "whsec-canary-https-81c2";

/// A store with `n` records of `acc_a`, long settled.
async fn store_with(dir: &tempfile::TempDir, n: i64) -> TestResult<SqliteStore> {
    let store = common::sqlite_in(dir.path()).await?;
    let records: Vec<_> = (0..n).map(|i| record(Some("acc_a"), 1_000 + i)).collect();
    store.insert(&rows(&records)?).await?;
    Ok(store)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_trusting_the_receivers_ca_delivers_over_https_with_its_client_certificate()
-> TestResult {
    time_limit(Duration::from_secs(20), async {
        let dir = tempfile::tempdir()?;
        let store = store_with(&dir, 3).await?;
        let pki = Pki::new()?;
        let shared = Shared::new(Secret::new(SECRET), Duration::ZERO);
        // The receiver refuses a client without a certificate of its CA.
        let receiver = Receiver::start_tls(
            Arc::clone(&shared),
            "127.0.0.1:0".parse()?,
            pki.server_config(true)?,
        )
        .await?;
        let tls = TlsConfig::ca_bundle_pem(pki.ca_pem.as_bytes())?.client_certificate(
            pki.client_pem.as_bytes(),
            &Secret::new(pki.client_key_pem.clone()),
        )?;
        let url = format!("https://localhost:{}/ingest", receiver.addr.port());
        let destination = HttpDestination::new(&url)?
            .secret(Secret::new(SECRET))
            .tls(tls.clone())?;
        let metrics = run_export(
            "siem",
            store.clone(),
            destination,
            Duration::from_secs(10),
            |m| m.delivered_records >= 3,
        )
        .await?;
        assert_eq!(metrics.delivered_records, 3, "{metrics:?}");
        assert_eq!(metrics.failed_attempts, 0, "{metrics:?}");
        let lines: usize = shared.deliveries().iter().map(|d| d.lines.len()).sum();
        assert_eq!(lines, 3);
        assert_eq!(shared.bad.load(Ordering::Relaxed), 0, "gzipped and signed");
        assert_eq!(shared.handshakes_failed.load(Ordering::Relaxed), 0);

        // Without its client certificate, the same job is refused by the receiver.
        let fresh = tempfile::tempdir()?;
        let destination = HttpDestination::new(&url)?
            .secret(Secret::new(SECRET))
            .tls(TlsConfig::ca_bundle_pem(pki.ca_pem.as_bytes())?)?;
        let refused = run_export(
            "siem",
            store_with(&fresh, 1).await?,
            destination,
            Duration::from_secs(5),
            |m| m.failed_attempts >= 2,
        )
        .await?;
        assert_eq!(refused.delivered_records, 0, "{refused:?}");
        assert!(refused.failed_attempts >= 2, "{refused:?}");
        receiver.stop().await;
        Ok(())
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_ca_fails_every_attempt_naming_the_destination_and_no_secret() -> TestResult {
    time_limit(Duration::from_secs(20), async {
        let dir = tempfile::tempdir()?;
        let store = store_with(&dir, 2).await?;
        let pki = Pki::new()?;
        let shared = Shared::new(Secret::new(SECRET), Duration::ZERO);
        let receiver = Receiver::start_tls(
            Arc::clone(&shared),
            "127.0.0.1:0".parse()?,
            pki.server_config(false)?,
        )
        .await?;
        let key = Secret::new(pki.client_key_pem.clone());
        let tls = TlsConfig::ca_bundle_pem(pki.other_ca_pem.as_bytes())?
            .client_certificate(pki.client_pem.as_bytes(), &key)?;
        let port = receiver.addr.port();
        let url = format!("https://localhost:{port}/ingest?token=urltoken-canary-9d");
        let destination = HttpDestination::new(&url)?
            .secret(Secret::new(SECRET))
            .tls(tls.clone())?;
        let mut reported = format!("{destination:?}{tls:?}");
        let metrics = run_export("siem", store, destination, Duration::from_secs(5), |m| {
            m.failed_attempts >= 3
        })
        .await?;
        receiver.stop().await;
        // Counted as failures and retried; nothing delivered.
        assert!(metrics.failed_attempts >= 3, "{metrics:?}");
        assert!(metrics.consecutive_failures >= 3, "{metrics:?}");
        assert_eq!(metrics.delivered_records, 0);
        assert!(shared.deliveries().is_empty());
        // The error names the destination and the cause.
        let error = metrics.last_error.clone().unwrap_or_default();
        let endpoint = format!("localhost:{port}");
        assert!(error.contains(&endpoint), "{error}");
        assert!(
            error.contains("certificate") && error.contains("UnknownIssuer"),
            "{error}"
        );
        // And nothing holds a secret: the HMAC key, the URL's token, the client key.
        reported.push_str(&format!("{metrics:?}{}", metrics.to_prometheus()));
        let key_body: String = pki
            .client_key_pem
            .lines()
            .filter(|l| !l.starts_with("-----"))
            .collect();
        for canary in [SECRET, "urltoken-canary", &key_body[..24], "PRIVATE KEY"] {
            assert!(!reported.contains(canary), "{canary} in: {reported}");
        }
        Ok(())
    })
    .await
}

#[test]
fn tls_settings_are_refused_where_they_cannot_apply() -> TestResult {
    let pki = Pki::new()?;
    // An http URL never uses TLS: a configuration for it is a mistake.
    let plain = HttpDestination::new("http://127.0.0.1:9/ingest")?
        .tls(TlsConfig::ca_bundle_pem(pki.ca_pem.as_bytes())?);
    assert!(plain.is_err());
    // A key that does not match the certificate.
    let other_key = rcgen::KeyPair::generate()?.serialize_pem();
    let mismatched = TlsConfig::ca_bundle_pem(pki.ca_pem.as_bytes())?
        .client_certificate(pki.client_pem.as_bytes(), &Secret::new(other_key.clone()))?;
    let err = HttpDestination::new("https://localhost:9/ingest")?
        .tls(mismatched)
        .unwrap_err()
        .to_string();
    assert!(err.contains("client certificate"), "{err}");
    assert!(!err.contains(&other_key[30..60]), "{err}");
    Ok(())
}
