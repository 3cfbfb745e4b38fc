//! The audit chain's keys, for the store's tamper-evident chain: the secret from
//! `DEMO_CHAIN_SECRET`, else from the data directory's `chain.secret` (created at first start,
//! readable by the owner only); the public key written beside it for `audit-verify`.

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
fn stored_secret(path: &Path) -> Result<ChainSecret, StartError> {
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
