//! The `audit-verify` binary against a real SQLite database: `ok` and exit 0 on an untouched
//! log, the break and exit 1 after an edit, a clear error and exit 2 on bad input, and never
//! a secret in its output.

#[allow(unused_macros)]
mod common;

use std::path::Path;
use std::process::Command;

use audit_store::SqliteStore;
use audit_store::chain::{ChainKeys, ChainSecret, JsonLinesCheckpoints};
use audit_store::store::{AuditStore, ChainedStore};

use common::{BASE_MS, TestResult, record, rows};

const SECRET_HEX: &str = "5ec2e75ec2e75ec2e75ec2e75ec2e75ec2e75ec2e75ec2e75ec2e75ec2e75ec2";

struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

fn run(args: &[&str]) -> TestResult<Run> {
    let output = Command::new(env!("CARGO_BIN_EXE_audit-verify"))
        .args(args)
        .env_remove("AUDIT_VERIFY_DATABASE_URL")
        .output()?;
    let run = Run {
        code: output.status.code(),
        stdout: String::from_utf8(output.stdout)?,
        stderr: String::from_utf8(output.stderr)?,
    };
    assert!(
        !run.stdout.contains(SECRET_HEX) && !run.stderr.contains(SECRET_HEX),
        "the secret was printed"
    );
    Ok(run)
}

fn url(path: &Path) -> String {
    format!("sqlite://{}", path.display())
}

#[tokio::test]
async fn the_command_line_verifier_finds_what_was_changed() -> TestResult {
    let dir = tempfile::tempdir()?;
    let db = dir.path().join("audit.db");
    let keys = ChainKeys::from_secret(&ChainSecret::from_hex(SECRET_HEX)?);
    let store = SqliteStore::open(&db).await?.chained(keys.clone());
    store.migrate().await?;
    for account in ["acc-1", "acc-2"] {
        let records: Vec<_> = (0..30)
            .map(|i| record(Some(account), BASE_MS + i))
            .collect();
        store.insert(&rows(&records)?).await?;
    }
    let checkpoints = store.checkpoint(BASE_MS + 1000).await?;
    let kept = dir.path().join("checkpoints.jsonl");
    audit_store::chain::CheckpointSink::publish(&JsonLinesCheckpoints::new(&kept), &checkpoints)
        .await?;
    let public = dir.path().join("audit-public.key");
    std::fs::write(&public, format!("{}\n", keys.public_key()))?;
    let secret = dir.path().join("chain.secret");
    std::fs::write(&secret, SECRET_HEX)?;
    let database = url(&db);
    let public_arg = format!("@{}", public.display());

    // Untouched: every chain ok, with and without the secret.
    let ok = run(&["--database-url", &database, "--public-key", &public_arg])?;
    assert_eq!(ok.code, Some(0), "{}{}", ok.stdout, ok.stderr);
    assert!(
        ok.stdout
            .contains("ok \"acc-1\": 30 records (sequence 1 to 30), 1 checkpoints matched"),
        "{}",
        ok.stdout
    );
    assert!(ok.stdout.contains("ok \"acc-2\""), "{}", ok.stdout);
    assert!(ok.stdout.contains("seals not checked"), "{}", ok.stdout);
    let sealed = run(&[
        "--database-url",
        &database,
        "--public-key",
        &public_arg,
        "--secret-file",
        &secret.display().to_string(),
        "--account",
        "acc-1",
        "--json",
    ])?;
    assert_eq!(sealed.code, Some(0), "{}", sealed.stderr);
    let report: serde_json::Value = serde_json::from_str(sealed.stdout.trim())?;
    assert_eq!(
        (
            report["ok"].clone(),
            report["seals_checked"].clone(),
            report["records"].clone()
        ),
        (true.into(), true.into(), 30.into())
    );

    // An edit, and the newest records deleted with the head and checkpoints made to match:
    // found, the latter through the checkpoints kept outside.
    sqlx::raw_sql(
        "UPDATE audit_logs SET record = replace(record, 'alice', 'mallory') \
             WHERE account_id = 'acc-1' AND chain_seq = 9; \
         DELETE FROM audit_logs WHERE account_id = 'acc-2' AND chain_seq > 27; \
         UPDATE audit_chain_heads SET seq = 27 WHERE chain = 'acc-2'; \
         DELETE FROM audit_checkpoints",
    )
    .execute(store.pool())
    .await?;
    let broken = run(&[
        "--database-url",
        &database,
        "--public-key",
        &public_arg,
        "--checkpoints",
        &kept.display().to_string(),
    ])?;
    assert_eq!(broken.code, Some(1), "{}{}", broken.stdout, broken.stderr);
    assert!(
        broken
            .stdout
            .contains("BROKEN \"acc-1\": broken at sequence 9 (modified)"),
        "{}",
        broken.stdout
    );
    assert!(
        broken
            .stdout
            .contains("BROKEN \"acc-2\": broken at sequence 28 (truncated)"),
        "{}",
        broken.stdout
    );

    // Bad input: named, never echoed, exit 2.
    let canary = "not-a-key-canary-7f3a";
    let bad = run(&["--database-url", &database, "--public-key", canary])?;
    assert_eq!(bad.code, Some(2));
    assert!(
        bad.stderr.contains("--public-key") && !bad.stderr.contains(canary),
        "{}",
        bad.stderr
    );
    let other = ChainKeys::from_secret(&ChainSecret::from_bytes([1; 32]))
        .public_key()
        .to_hex();
    let mismatch = run(&[
        "--database-url",
        &database,
        "--public-key",
        &other,
        "--secret-file",
        &secret.display().to_string(),
    ])?;
    assert_eq!(mismatch.code, Some(2));
    assert!(
        mismatch
            .stderr
            .contains("does not belong to any --public-key"),
        "{}",
        mismatch.stderr
    );
    let missing = run(&[
        "--database-url",
        &url(&dir.path().join("nope.db")),
        "--public-key",
        &public_arg,
    ])?;
    assert_eq!(missing.code, Some(2));
    assert!(
        missing.stderr.contains("no SQLite database at"),
        "{}",
        missing.stderr
    );
    assert!(
        !dir.path().join("nope.db").exists(),
        "the verifier must not create a database"
    );
    let wrong_key = run(&["--database-url", &database, "--public-key", &other])?;
    assert_eq!(
        wrong_key.code,
        Some(1),
        "checkpoints signed by another key are bad checkpoints"
    );
    assert!(
        wrong_key.stdout.contains("bad_checkpoint") || wrong_key.stdout.contains("BROKEN"),
        "{}",
        wrong_key.stdout
    );
    Ok(())
}
