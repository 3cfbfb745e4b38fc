//! The `audit-verify` binary against a real SQLite database: `ok` and exit 0 on an untouched
//! log, the break and exit 1 after an edit, `UNVERIFIABLE` and exit 3 where no checkpoint
//! covers a chain, a clear error and exit 2 on bad input or a public key it cannot trust,
//! and never a secret in its output.

#[allow(unused_macros)]
mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

use audit_store::SqliteStore;
use audit_store::chain::{ChainKeys, ChainSecret, JsonLinesCheckpoints};
use audit_store::store::{AuditStore, ChainedStore};

use common::{BASE_MS, TestResult, record, rows};
use sha2::Digest as _;

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

/// `audit-verify --database-url <database> --public-key <key>`, then `extra`.
fn verify(database: &str, key: &str, extra: &[&str]) -> TestResult<Run> {
    let mut args = vec!["--database-url", database, "--public-key", key];
    args.extend_from_slice(extra);
    run(&args)
}

fn url(path: &Path) -> String {
    format!("sqlite://{}", path.display())
}

#[tokio::test]
async fn the_command_line_verifier_finds_what_was_changed() -> TestResult {
    let dir = tempfile::tempdir()?;
    let keys = ChainKeys::from_secret(&ChainSecret::from_hex(SECRET_HEX)?);
    let (store, database, kept) = two_accounts(dir.path(), &keys).await?;
    // The auditor's copy of the key, outside the database's directory.
    let auditor = tempfile::tempdir()?;
    let public = auditor.path().join("audit-public.key");
    std::fs::write(&public, format!("{}\n", keys.public_key()))?;
    let secret = dir.path().join("chain.secret");
    std::fs::write(&secret, SECRET_HEX)?;
    let public_arg = format!("@{}", public.display());

    // A secret others may read is refused, as the store refuses it, and never shown.
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o644))?;
    let exposed = verify(
        &database,
        &public_arg,
        &["--secret-file", &secret.display().to_string()],
    )?;
    assert_eq!(
        exposed.code,
        Some(2),
        "{}{}",
        exposed.stdout,
        exposed.stderr
    );
    assert!(exposed.stderr.contains("chmod 600"), "{}", exposed.stderr);
    assert!(!exposed.stderr.contains(SECRET_HEX), "{}", exposed.stderr);
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600))?;

    // Untouched: every chain ok, with and without the secret.
    let ok = verify(&database, &public_arg, &[])?;
    assert_eq!(ok.code, Some(0), "{}{}", ok.stdout, ok.stderr);
    assert!(
        ok.stdout
            .contains("ok \"acc-1\": 30 records (sequence 1 to 30), 1 checkpoints matched"),
        "{}",
        ok.stdout
    );
    assert!(ok.stdout.contains("ok \"acc-2\""), "{}", ok.stdout);
    assert!(ok.stdout.contains("seals not checked"), "{}", ok.stdout);
    let sealed = verify(
        &database,
        &public_arg,
        &[
            "--secret-file",
            &secret.display().to_string(),
            "--account",
            "acc-1",
            "--json",
        ],
    )?;
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
    let broken = verify(
        &database,
        &public_arg,
        &["--checkpoints", &kept.display().to_string()],
    )?;
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
    let bad = verify(&database, canary, &[])?;
    assert_eq!(bad.code, Some(2));
    assert!(
        bad.stderr.contains("--public-key") && !bad.stderr.contains(canary),
        "{}",
        bad.stderr
    );
    let other = ChainKeys::from_secret(&ChainSecret::from_bytes([1; 32]))
        .public_key()
        .to_hex();
    let mismatch = verify(
        &database,
        &other,
        &["--secret-file", &secret.display().to_string()],
    )?;
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
    let wrong_key = verify(&database, &other, &[])?;
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

/// A database of two accounts of 30 records each, checkpointed (also into a file kept
/// outside); returns the store, the database URL and the file of checkpoints.
async fn two_accounts(
    dir: &Path,
    keys: &ChainKeys,
) -> TestResult<(SqliteStore, String, std::path::PathBuf)> {
    let db = dir.join("audit.db");
    let store = SqliteStore::open(&db).await?.chained(keys.clone());
    store.migrate().await?;
    for account in ["acc-1", "acc-2"] {
        let records: Vec<_> = (0..30)
            .map(|i| record(Some(account), BASE_MS + i))
            .collect();
        store.insert(&rows(&records)?).await?;
    }
    let checkpoints = store.checkpoint(BASE_MS + 1000).await?;
    let kept = dir.join("checkpoints.jsonl");
    audit_store::chain::CheckpointSink::publish(&JsonLinesCheckpoints::new(&kept), &checkpoints)
        .await?;
    Ok((store, url(&db), kept))
}

#[tokio::test]
async fn without_a_checkpoint_a_chain_is_unverifiable_and_the_exit_status_is_3() -> TestResult {
    let dir = tempfile::tempdir()?;
    let keys = ChainKeys::from_secret(&ChainSecret::from_hex(SECRET_HEX)?);
    let (store, database, _) = two_accounts(dir.path(), &keys).await?;
    let key = keys.public_key().to_hex();
    let ok = verify(&database, &key, &[])?;
    assert_eq!(ok.code, Some(0), "{}", ok.stdout);

    // An insider rewrites acc-1 (here: records newer than its checkpoint, as a rechained log
    // would be) and deletes the stored checkpoints: with only the public key nothing can
    // prove the log wrong, and nothing vouches for it either.
    let more: Vec<_> = (30..35)
        .map(|i| record(Some("acc-1"), BASE_MS + i))
        .collect();
    store.insert(&rows(&more)?).await?;
    let tail = verify(&database, &key, &[])?;
    assert_eq!(tail.code, Some(3), "{}{}", tail.stdout, tail.stderr);
    assert!(
        tail.stdout.contains("UNVERIFIABLE \"acc-1\"")
            && tail
                .stdout
                .contains("records 31 to 35 are newer than the newest checkpoint")
            && tail.stdout.contains("ok \"acc-2\""),
        "{}",
        tail.stdout
    );
    sqlx::raw_sql("DELETE FROM audit_checkpoints")
        .execute(store.pool())
        .await?;
    for args in [
        vec!["--database-url", &database, "--public-key", &key],
        vec![
            "--database-url",
            &database,
            "--public-key",
            &key,
            "--account",
            "acc-2",
            "--json",
        ],
    ] {
        let none = run(&args)?;
        assert_eq!(none.code, Some(3), "{}{}", none.stdout, none.stderr);
        assert!(
            none.stdout.contains("UNVERIFIABLE") || none.stdout.contains("\"unverifiable\""),
            "{}",
            none.stdout
        );
        assert!(!none.stdout.contains("ok \""), "{}", none.stdout);
    }
    // An empty database proves nothing either.
    let empty_dir = tempfile::tempdir()?;
    let empty = SqliteStore::open(empty_dir.path().join("audit.db")).await?;
    empty.migrate().await?;
    let nothing = run(&[
        "--database-url",
        &url(&empty_dir.path().join("audit.db")),
        "--public-key",
        &key,
    ])?;
    assert_eq!(nothing.code, Some(3), "{}", nothing.stdout);
    Ok(())
}

#[tokio::test]
async fn a_public_key_from_the_data_directory_is_refused_unless_pinned() -> TestResult {
    let dir = tempfile::tempdir()?;
    let keys = ChainKeys::from_secret(&ChainSecret::from_hex(SECRET_HEX)?);
    let (_store, database, _) = two_accounts(dir.path(), &keys).await?;
    // The key the server left beside its database: an insider may have replaced it.
    let beside = dir.path().join("audit-public.key");
    std::fs::write(&beside, format!("{}\n", keys.public_key()))?;
    let beside_arg = format!("@{}", beside.display());
    let refused = verify(&database, &beside_arg, &[])?;
    assert_eq!(refused.code, Some(2), "{}", refused.stdout);
    assert!(
        refused.stderr.contains("database's directory") && refused.stderr.contains("--fingerprint"),
        "{}",
        refused.stderr
    );
    assert!(refused.stdout.is_empty(), "{}", refused.stdout);

    // Pinned by its fingerprint, the same file is trusted...
    let bytes = hex::decode(keys.public_key().to_hex())?;
    let print = hex::encode(sha2::Sha256::digest(&bytes));
    let pinned = verify(&database, &beside_arg, &["--fingerprint", &print])?;
    assert_eq!(pinned.code, Some(0), "{}{}", pinned.stdout, pinned.stderr);
    // ... and a key an insider put there instead is not.
    let theirs = ChainKeys::from_secret(&ChainSecret::from_bytes([6; 32]));
    std::fs::write(&beside, format!("{}\n", theirs.public_key()))?;
    let swapped = verify(&database, &beside_arg, &["--fingerprint", &print])?;
    assert_eq!(swapped.code, Some(2), "{}", swapped.stdout);
    assert!(
        swapped.stderr.contains("no --fingerprint pins"),
        "{}",
        swapped.stderr
    );
    let bad = verify(&database, &beside_arg, &["--fingerprint", "abc"])?;
    assert_eq!(bad.code, Some(2));
    assert!(bad.stderr.contains("--fingerprint"), "{}", bad.stderr);
    Ok(())
}

#[tokio::test]
async fn accounts_are_found_from_records_and_checkpoints_not_only_from_heads() -> TestResult {
    let dir = tempfile::tempdir()?;
    let keys = ChainKeys::from_secret(&ChainSecret::from_hex(SECRET_HEX)?);
    let (store, database, kept) = two_accounts(dir.path(), &keys).await?;
    let key = keys.public_key().to_hex();
    let kept = kept.display().to_string();
    // acc-1 loses its head row; acc-2 loses its records, head and stored checkpoints.
    sqlx::raw_sql(
        "DELETE FROM audit_chain_heads WHERE chain = 'acc-1'; \
         DELETE FROM audit_logs WHERE account_id = 'acc-2'; \
         DELETE FROM audit_chain_heads WHERE chain = 'acc-2'; \
         DELETE FROM audit_checkpoints WHERE chain = 'acc-2'",
    )
    .execute(store.pool())
    .await?;
    // Account by account (a span), and the whole store in one pass.
    for extra in [vec!["--since", "2020-01-01"], vec![]] {
        let mut args = vec![
            "--database-url",
            database.as_str(),
            "--public-key",
            key.as_str(),
            "--checkpoints",
            kept.as_str(),
        ];
        args.extend(extra.iter().copied());
        let report = run(&args)?;
        assert_eq!(report.code, Some(1), "{}{}", report.stdout, report.stderr);
        assert!(
            report.stdout.contains("BROKEN \"acc-1\"") && report.stdout.contains("head_missing"),
            "{args:?}: {}",
            report.stdout
        );
        assert!(
            report.stdout.contains("BROKEN \"acc-2\"") && report.stdout.contains("truncated"),
            "{args:?}: {}",
            report.stdout
        );
    }
    Ok(())
}
