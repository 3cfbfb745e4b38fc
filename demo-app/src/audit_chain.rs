//! The audit chain's keys, for the store's tamper-evident chain: the secret from
//! `DEMO_CHAIN_SECRET`, else from the data directory's `chain.secret` (created at first start,
//! readable by the owner only, and refused if anyone else may read it); the public key written
//! beside it for `audit-verify`.

use std::path::Path;

use audit_store::chain::{ChainKeys, ChainSecret};

use crate::config::{Config, StartError};

/// The audit chain's keys: from DEMO_CHAIN_SECRET, else from the data directory's
/// `chain.secret` (created, readable by the owner only, at first start). The public key is
/// written beside it as `audit-public.key`, for `audit-verify`.
pub(crate) fn chain_keys(config: &Config) -> Result<ChainKeys, StartError> {
    let secret = match &config.chain_secret {
        Some(secret) => secret.clone(),
        None => stored_secret(&config.data_dir.join("chain.secret"))?,
    };
    let keys = ChainKeys::from_secret(&secret);
    let public = config.data_dir.join("audit-public.key");
    std::fs::write(&public, format!("{}\n", keys.public_key()))
        .map_err(|e| StartError::Runtime(format!("cannot write {}: {e}", public.display())))?;
    Ok(keys)
}

/// The secret in the file at `path`; a new one, written there, when there is no such file.
/// A file that other users may read or write is refused: whoever holds the secret can forge
/// the seals of records.
fn stored_secret(path: &Path) -> Result<ChainSecret, StartError> {
    check_private(path)?;
    match std::fs::read_to_string(path) {
        Ok(text) => ChainSecret::from_hex(&text).map_err(|e| {
            StartError::Config(format!("invalid chain secret in {}: {e}", path.display()))
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let secret = ChainSecret::generate();
            write_private(path, &secret.to_hex()).map_err(|e| {
                StartError::Runtime(format!("cannot write {}: {e}", path.display()))
            })?;
            Ok(secret)
        }
        Err(e) => Err(StartError::Runtime(format!(
            "cannot read {}: {e}",
            path.display()
        ))),
    }
}

/// `Ok` unless the file at `path` exists and its permissions give other users any access.
fn check_private(path: &Path) -> Result<(), StartError> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = match std::fs::metadata(path) {
            Ok(metadata) => metadata.permissions().mode() & 0o777,
            Err(_) => return Ok(()),
        };
        if mode & 0o077 != 0 {
            return Err(StartError::Config(format!(
                "the chain secret {} is accessible to other users (mode {mode:04o}): \
                 anyone who reads it can forge audit records; make it private with \
                 `chmod 600 {}` (and replace the secret if others may have read it)",
                path.display(),
                path.display()
            )));
        }
    }
    #[cfg(not(unix))]
    let _ = path;
    Ok(())
}

/// Creates `path` with `text`, readable and writable by the owner only.
fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write as _;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(path)?;
    file.write_all(text.as_bytes())?;
    file.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_secret_is_created_private_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("chain.secret");
        let created = stored_secret(&path).ok().unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let read = stored_secret(&path).ok().unwrap();
        assert_eq!(read.to_hex(), created.to_hex());
    }

    #[cfg(unix)]
    #[test]
    fn a_secret_others_may_read_is_refused_naming_the_file_and_the_fix() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("chain.secret");
        stored_secret(&path).ok().unwrap();
        for mode in [0o644, 0o640, 0o602] {
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
            let Err(StartError::Config(message)) = stored_secret(&path) else {
                panic!("mode {mode:o}: the secret was read");
            };
            assert!(message.contains(&path.display().to_string()), "{message}");
            assert!(message.contains("chmod 600"), "{message}");
        }
    }
}
