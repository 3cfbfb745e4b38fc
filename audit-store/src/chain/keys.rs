//! The chain's keys: one 32-byte secret, from which the seal key and the Ed25519 signing key
//! are derived, and the public key that verifies checkpoints without the secret.

use std::fmt;
use std::path::{Path, PathBuf};

use ed25519_dalek::{Signer, SigningKey, Verifier as _, VerifyingKey};
use hmac::{Hmac, KeyInit, Mac};
use sha2::{Digest, Sha256};

/// A key that could not be read. Never contains the key material it was given.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    /// Not 64 hexadecimal digits (32 bytes).
    #[error("{what} must be 64 hexadecimal digits (32 bytes)")]
    Format {
        /// Which key.
        what: &'static str,
    },
    /// 32 bytes that are not an Ed25519 public key.
    #[error("the public key is not a valid Ed25519 point")]
    NotAPoint,
    /// A secret file that other users may read or write: whoever reads it can forge records.
    #[error(
        "the chain secret {p} is accessible to other users (mode {mode:04o}): anyone who \
         reads it can forge audit records; make it private with `chmod 600 {p}` (and \
         replace the secret if others may have read it)",
        p = .path.display()
    )]
    Exposed {
        /// The file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// No file at the path.
    #[error("no chain secret at {} (create one with 64 hexadecimal digits, mode 600)", .path.display())]
    Missing {
        /// The path.
        path: PathBuf,
    },
    /// The file could not be read.
    #[error("cannot read the chain secret {}: {reason}", .path.display())]
    Unreadable {
        /// The file.
        path: PathBuf,
        /// The operating system's reason.
        reason: String,
    },
    /// The file does not hold 64 hexadecimal digits.
    #[error("the chain secret {} must hold 64 hexadecimal digits (32 bytes)", .path.display())]
    FileFormat {
        /// The file.
        path: PathBuf,
    },
}

fn parse_hex32(text: &str, what: &'static str) -> Result<[u8; 32], KeyError> {
    let mut bytes = [0u8; 32];
    hex::decode_to_slice(text.trim(), &mut bytes).map_err(|_| KeyError::Format { what })?;
    Ok(bytes)
}

/// The server's chain secret: 32 random bytes. Keep it like a password (a secret manager, a
/// file readable by the service only); whoever holds it can rewrite the chain.
///
/// ```
/// use audit_store::chain::ChainSecret;
///
/// let secret = ChainSecret::generate();
/// let again = ChainSecret::from_hex(&secret.to_hex()).unwrap();
/// assert_eq!(format!("{again:?}"), "ChainSecret(..)"); // never printed
/// ```
#[derive(Clone)]
pub struct ChainSecret([u8; 32]);

impl fmt::Debug for ChainSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ChainSecret(..)")
    }
}

impl ChainSecret {
    /// A secret from its 32 bytes.
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// A secret from 64 hexadecimal digits (surrounding whitespace ignored, so a key file's
    /// trailing newline is fine).
    ///
    /// # Errors
    ///
    /// When `text` is not 64 hexadecimal digits; the error does not repeat the input.
    pub fn from_hex(text: &str) -> Result<Self, KeyError> {
        parse_hex32(text, "the chain secret").map(Self)
    }

    /// A fresh secret from the operating system's random source.
    ///
    /// # Panics
    ///
    /// When the operating system has no random source to offer (it always has on the
    /// platforms Rust's standard library supports).
    pub fn generate() -> Self {
        let mut bytes = [0u8; 32];
        getrandom::fill(&mut bytes).expect("the operating system's random source");
        Self(bytes)
    }

    /// The secret as 64 hexadecimal digits, to store it.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    /// The secret in the file at `path`: 64 hexadecimal digits (surrounding whitespace
    /// ignored). On Unix, a file that anyone but its owner may read or write (any of the
    /// mode bits `077`) is refused before it is read: whoever reads the secret can forge
    /// records and checkpoints.
    ///
    /// ```
    /// use audit_store::chain::{ChainSecret, KeyError};
    /// # #[cfg(unix)] {
    /// use std::os::unix::fs::PermissionsExt as _;
    ///
    /// # let dir = tempfile::tempdir().unwrap();
    /// let path = dir.path().join("chain.secret");
    /// let secret = ChainSecret::create_file(&path).unwrap(); // mode 600
    /// assert_eq!(ChainSecret::from_file(&path).unwrap().to_hex(), secret.to_hex());
    ///
    /// std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    /// let refused = ChainSecret::from_file(&path).unwrap_err();
    /// assert!(matches!(refused, KeyError::Exposed { mode: 0o644, .. }));
    /// assert!(refused.to_string().contains("chmod 600"));
    /// # }
    /// ```
    ///
    /// # Errors
    ///
    /// [`KeyError::Exposed`] for a file others may access, [`KeyError::Missing`] when there is
    /// no file, [`KeyError::Unreadable`] when it cannot be read, [`KeyError::FileFormat`] when
    /// it does not hold 64 hexadecimal digits. Each names the path, never the content.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self, KeyError> {
        let path = path.as_ref();
        let unreadable = |e: std::io::Error| match e.kind() {
            std::io::ErrorKind::NotFound => KeyError::Missing {
                path: path.to_owned(),
            },
            _ => KeyError::Unreadable {
                path: path.to_owned(),
                reason: e.to_string(),
            },
        };
        let file = std::fs::File::open(path).map_err(unreadable)?;
        // The mode of the file opened, not of whatever the path names a moment later.
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = file.metadata().map_err(unreadable)?.permissions().mode() & 0o777;
            if mode & 0o077 != 0 {
                return Err(KeyError::Exposed {
                    path: path.to_owned(),
                    mode,
                });
            }
        }
        let mut text = String::new();
        std::io::Read::read_to_string(&mut { file }, &mut text).map_err(unreadable)?;
        parse_hex32(&text, "the chain secret")
            .map(Self)
            .map_err(|_| KeyError::FileFormat {
                path: path.to_owned(),
            })
    }

    /// Generates a secret and writes it to a new file at `path`, readable and writable by
    /// its owner only (mode 600 on Unix, whatever the process's umask), synced to disk.
    ///
    /// # Errors
    ///
    /// [`KeyError::Unreadable`] naming the path when the file exists already or cannot be
    /// written.
    pub fn create_file(path: impl AsRef<Path>) -> Result<Self, KeyError> {
        let path = path.as_ref();
        let secret = Self::generate();
        crate::private_files::create_new(path, format!("{}\n", secret.to_hex()).as_bytes())
            .map_err(|e| KeyError::Unreadable {
                path: path.to_owned(),
                reason: e.to_string(),
            })?;
        Ok(secret)
    }
}

/// Derives a 32-byte key for one purpose from the secret (HMAC-SHA256 as a PRF).
fn derive(secret: &ChainSecret, purpose: &[u8]) -> [u8; 32] {
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(&secret.0).expect("any key length");
    mac.update(purpose);
    mac.finalize().into_bytes().into()
}

/// An Ed25519 public key that verifies checkpoints. Publish it; it reveals nothing.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct PublicKey(VerifyingKey);

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({})", self.to_hex())
    }
}

impl fmt::Display for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl PublicKey {
    /// A public key from 64 hexadecimal digits.
    ///
    /// # Errors
    ///
    /// When `text` is not 64 hexadecimal digits, or not an Ed25519 point.
    pub fn from_hex(text: &str) -> Result<Self, KeyError> {
        let bytes = parse_hex32(text, "the public key")?;
        VerifyingKey::from_bytes(&bytes)
            .map(Self)
            .map_err(|_| KeyError::NotAPoint)
    }

    /// The key as 64 hexadecimal digits.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0.as_bytes())
    }

    /// A short name for the key, stored with each checkpoint: the first 8 bytes of the
    /// SHA-256 of the key, in hexadecimal.
    pub fn key_id(&self) -> String {
        hex::encode(&Sha256::digest(self.0.as_bytes())[..8])
    }

    pub(crate) fn verifies(&self, message: &[u8], signature: &[u8]) -> bool {
        let Ok(signature) = ed25519_dalek::Signature::from_slice(signature) else {
            return false;
        };
        self.0.verify(message, &signature).is_ok()
    }
}

/// What a chained store writes with: the seal key and the signing key, derived from one
/// [`ChainSecret`].
///
/// ```
/// use audit_store::chain::{ChainKeys, ChainSecret};
///
/// let keys = ChainKeys::from_secret(&ChainSecret::from_bytes([7; 32]));
/// // The public key is what auditors get; it verifies checkpoints.
/// let public = keys.public_key().to_hex();
/// assert_eq!(public.len(), 64);
/// ```
#[derive(Clone)]
pub struct ChainKeys {
    seal: SealKey,
    spool: SealKey,
    signing: SigningKey,
    public: PublicKey,
}

impl fmt::Debug for ChainKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ChainKeys")
            .field("public", &self.public)
            .finish_non_exhaustive()
    }
}

impl ChainKeys {
    /// The keys derived from `secret`.
    pub fn from_secret(secret: &ChainSecret) -> Self {
        let signing = SigningKey::from_bytes(&derive(secret, b"audit-chain/v1 signing"));
        let public = PublicKey(signing.verifying_key());
        Self {
            seal: SealKey(derive(secret, b"audit-chain/v1 seal")),
            spool: SealKey(derive(secret, b"audit-spool/v1 line")),
            signing,
            public,
        }
    }

    /// The public key, for verifiers that do not hold the secret.
    pub fn public_key(&self) -> PublicKey {
        self.public
    }

    /// A verifier that checks everything: signatures and every record's seal.
    pub fn verifier(&self) -> Verifier {
        Verifier {
            public: vec![self.public],
            seal: Some(self.seal.clone()),
        }
    }

    pub(crate) fn seal_key(&self) -> &SealKey {
        &self.seal
    }

    /// The key that authenticates the lines of the pipeline's spool: another purpose, so a
    /// spool's MAC is never a record's seal.
    pub(crate) fn spool_key(&self) -> &SealKey {
        &self.spool
    }

    pub(crate) fn sign(&self, message: &[u8]) -> [u8; 64] {
        self.signing.sign(message).to_bytes()
    }
}

/// An HMAC key derived from the chain secret: the one that seals each record's chain hash, or
/// the one that authenticates spooled records.
#[derive(Clone)]
pub(crate) struct SealKey([u8; 32]);

impl fmt::Debug for SealKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SealKey(..)")
    }
}

impl SealKey {
    pub(crate) fn bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

/// What verification trusts: one or more public keys (several while keys rotate), and, on
/// the server, the seal key.
///
/// With only public keys, verification checks every checkpoint's signature and the chain's
/// links up to the newest checkpoint: a record changed, deleted or inserted before it is
/// found. With the secret (see [`ChainKeys::verifier`]) it also checks each record's seal,
/// which locates a break exactly even when whoever edited the database recomputed the
/// unkeyed hashes, and covers records written after the newest checkpoint.
#[derive(Clone)]
pub struct Verifier {
    public: Vec<PublicKey>,
    seal: Option<SealKey>,
}

impl fmt::Debug for Verifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Verifier")
            .field("public", &self.public)
            .field("checks_seals", &self.seal.is_some())
            .finish()
    }
}

impl Verifier {
    /// A verifier holding only `public`: what an auditor runs.
    ///
    /// ```
    /// use audit_store::chain::{ChainKeys, ChainSecret, Verifier};
    ///
    /// let keys = ChainKeys::from_secret(&ChainSecret::generate());
    /// let verifier = Verifier::public(keys.public_key());
    /// assert!(!verifier.checks_seals());
    /// ```
    pub fn public(public: PublicKey) -> Self {
        Self {
            public: vec![public],
            seal: None,
        }
    }

    /// Also accepts checkpoints signed by `public` (an earlier key, after a rotation).
    #[must_use]
    pub fn also_trust(mut self, public: PublicKey) -> Self {
        if !self.public.contains(&public) {
            self.public.push(public);
        }
        self
    }

    /// Whether this verifier checks every record's seal (it holds the secret).
    pub fn checks_seals(&self) -> bool {
        self.seal.is_some()
    }

    pub(crate) fn seal_key(&self) -> Option<&SealKey> {
        self.seal.as_ref()
    }

    /// Whether one of the trusted keys, named by `key_id`, signed `message`.
    pub(crate) fn signed(&self, key_id: &str, message: &[u8], signature: &[u8]) -> bool {
        self.public
            .iter()
            .filter(|k| k.key_id() == key_id)
            .any(|k| k.verifies(message, signature))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_derive_deterministically_and_separately() {
        let secret = ChainSecret::from_bytes([1; 32]);
        let (a, b) = (
            ChainKeys::from_secret(&secret),
            ChainKeys::from_secret(&secret),
        );
        assert_eq!(a.public_key(), b.public_key());
        assert_ne!(a.seal_key().bytes(), &[1; 32]);
        assert_ne!(a.seal_key().bytes(), &a.signing.to_bytes());
        assert_ne!(a.spool_key().bytes(), a.seal_key().bytes());
        assert_ne!(a.spool_key().bytes(), &a.signing.to_bytes());
        let other = ChainKeys::from_secret(&ChainSecret::from_bytes([2; 32]));
        assert_ne!(a.public_key(), other.public_key());
    }

    #[test]
    fn signatures_verify_only_with_the_right_key_and_message() {
        let keys = ChainKeys::from_secret(&ChainSecret::from_bytes([3; 32]));
        let verifier = Verifier::public(keys.public_key());
        let id = keys.public_key().key_id();
        let signature = keys.sign(b"message");
        assert!(verifier.signed(&id, b"message", &signature));
        assert!(!verifier.signed(&id, b"messagE", &signature));
        assert!(!verifier.signed("0000000000000000", b"message", &signature));
        let stranger = ChainKeys::from_secret(&ChainSecret::from_bytes([4; 32]));
        assert!(!verifier.signed(&id, b"message", &stranger.sign(b"message")));
        assert!(!verifier.signed(&id, b"message", &signature[..63]));
    }

    #[test]
    fn a_secret_file_is_read_when_private_and_every_error_names_the_path_only()
    -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("chain.secret");
        assert_eq!(
            ChainSecret::from_file(&path).err(),
            Some(KeyError::Missing { path: path.clone() })
        );
        let created = ChainSecret::create_file(&path)?;
        assert_eq!(ChainSecret::from_file(&path)?.0, created.0);
        assert!(
            ChainSecret::create_file(&path).is_err(),
            "an existing secret is never replaced"
        );
        let canary = "c0ffee-not-hex-canary";
        let garbled = dir.path().join("garbled.secret");
        crate::private_files::create_new(&garbled, canary.as_bytes())?;
        let e = ChainSecret::from_file(&garbled)
            .err()
            .ok_or("a garbled secret is refused")?;
        assert_eq!(
            e,
            KeyError::FileFormat {
                path: garbled.clone()
            }
        );
        assert!(
            e.to_string().contains(&garbled.display().to_string()),
            "{e}"
        );
        assert!(!e.to_string().contains(canary), "{e}");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            for mode in [0o640, 0o604, 0o660, 0o644] {
                std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode))?;
                let e = ChainSecret::from_file(&path)
                    .err()
                    .ok_or("an exposed secret is refused")?;
                assert_eq!(
                    e,
                    KeyError::Exposed {
                        path: path.clone(),
                        mode
                    }
                );
                let message = e.to_string();
                assert!(message.contains(&format!("{mode:04o}")), "{message}");
                assert!(
                    message.contains(&format!("chmod 600 {}", path.display())),
                    "{message}"
                );
                assert!(!message.contains(&created.to_hex()), "{message}");
            }
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o400))?;
            assert_eq!(ChainSecret::from_file(&path)?.0, created.0);
        }
        Ok(())
    }

    #[test]
    fn hex_round_trips_and_errors_never_echo_the_input() {
        let secret = ChainSecret::generate();
        assert_eq!(ChainSecret::from_hex(&secret.to_hex()).unwrap().0, secret.0);
        let canary = "c0ffee-not-hex-canary";
        let e = ChainSecret::from_hex(canary).unwrap_err().to_string();
        assert!(!e.contains(canary), "{e}");
        assert!(e.contains("chain secret"), "{e}");
        assert!(!format!("{secret:?}").contains(&secret.to_hex()));
        let keys = ChainKeys::from_secret(&secret);
        assert!(!format!("{keys:?}").contains(&secret.to_hex()));
        let public = keys.public_key();
        assert_eq!(PublicKey::from_hex(&format!("{public}\n")).unwrap(), public);
        assert!(PublicKey::from_hex("zz").is_err());
    }
}
