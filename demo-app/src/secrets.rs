//! Secrets, made and stored: users' passwords hashed with argon2id ([`hash_password`],
//! [`verify_password`]), and the random values the app hands out — API tokens and session ids
//! ([`new_secret`]) — stored as their SHA-256 ([`sha256_hex`]).
//!
//! The bottom layer of the crate: it knows nothing of the database or of HTTP.

use std::fmt::Write as _;

use argon2::{Argon2, PasswordHasher, PasswordVerifier};
use sha2::{Digest, Sha256};

/// The prefix of every API token and session id the app generates.
const SECRET_PREFIX: &str = "demo_";

/// A new random secret (API token value or session id): `demo_` and 48 hex digits, 192 bits
/// from the operating system's CSPRNG.
///
/// # Panics
///
/// If the operating system has no randomness to give, which leaves nothing safe to do.
pub(crate) fn new_secret() -> String {
    let mut bytes = [0u8; 24];
    getrandom::fill(&mut bytes).expect("the OS random number generator failed");
    let mut secret = String::from(SECRET_PREFIX);
    secret.push_str(&hex(&bytes));
    secret
}

/// The SHA-256 of `secret`, in hex: how API tokens and session ids are stored and looked up.
/// A fast hash is right for them: they are long random values, not guessable passwords.
pub(crate) fn sha256_hex(secret: &str) -> String {
    hex(&Sha256::digest(secret.as_bytes()))
}

fn hex(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(out, "{b:02x}");
    }
    out
}

/// The argon2id hasher: the crate's defaults (19 MiB, 2 passes), the OWASP recommendation.
/// Unit tests use the cheapest parameters, since debug builds of argon2 are slow.
fn argon2() -> Argon2<'static> {
    if cfg!(test) {
        argon2::Params::new(8, 1, 1, None).map_or_else(|_| Argon2::default(), Argon2::from)
    } else {
        Argon2::default()
    }
}

/// Hashes a password with argon2id and a random salt, as a PHC string.
///
/// # Panics
///
/// If the operating system has no randomness to give, or argon2 rejects its own defaults.
pub(crate) fn hash_password(password: &str) -> String {
    let mut salt = [0u8; 16];
    getrandom::fill(&mut salt).expect("the OS random number generator failed");
    argon2()
        .hash_password_with_salt(password.as_bytes(), &salt)
        .expect("argon2 hashes with its default parameters")
        .to_string()
}

/// Whether `password` matches the PHC string `hash`. A malformed hash matches nothing.
pub(crate) fn verify_password(password: &str, hash: &str) -> bool {
    argon2().verify_password(password.as_bytes(), hash).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_salted_and_verified() {
        let a = hash_password("hunter2 hunter2");
        let b = hash_password("hunter2 hunter2");
        assert_ne!(a, b, "each hash has its own salt");
        assert!(a.starts_with("$argon2id$"), "{a}");
        assert!(verify_password("hunter2 hunter2", &a));
        assert!(!verify_password("hunter3 hunter3", &a));
        assert!(!verify_password("hunter2 hunter2", "not a hash"));
    }

    #[test]
    fn secrets_are_random_and_stored_as_sha256() {
        let a = new_secret();
        assert_eq!(a.len(), SECRET_PREFIX.len() + 48);
        assert_ne!(a, new_secret());
        assert_eq!(
            sha256_hex("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
