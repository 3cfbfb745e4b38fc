//! The audit chain's keys, for the store's tamper-evident chain: the secret from
//! `DEMO_CHAIN_SECRET`, else from the data directory's `chain.secret` (created at first start,
//! readable by the owner only, and refused if anyone else may read it); the public key written
//! beside it for `audit-verify`.

use std::path::Path;

use audit_store::chain::{ChainKeys, ChainSecret, KeyError};

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

/// The secret in the file at `path` ([`ChainSecret::from_file`], which refuses a file other
/// users may read or write: whoever holds the secret can forge the seals of records); a new
/// one, written there readable by the owner only, when there is no such file.
fn stored_secret(path: &Path) -> Result<ChainSecret, StartError> {
    match ChainSecret::from_file(path) {
        Err(KeyError::Missing { .. }) => {
            ChainSecret::create_file(path).map_err(|e| StartError::Runtime(e.to_string()))
        }
        Err(e @ KeyError::Unreadable { .. }) => Err(StartError::Runtime(e.to_string())),
        other => other.map_err(|e| StartError::Config(e.to_string())),
    }
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
