//! A destination's secret (an HMAC key, a token) and the batch signature made with it.

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

/// The name of the signature header of an HTTP delivery and an alert notification.
pub const SIGNATURE_HEADER: &str = "X-Audit-Signature";

/// A secret a destination holds: never in `Debug` output, logs, errors, records or API
/// answers. It has no `Display` and no `Serialize`; `Debug` prints `Secret(redacted)`.
///
/// ```
/// use audit_store::export::Secret;
///
/// let secret = Secret::new("whsec-canary-1234");
/// assert_eq!(format!("{secret:?}"), "Secret(redacted)");
/// ```
#[derive(Clone)]
pub struct Secret(Box<[u8]>);

impl Secret {
    /// A secret of these bytes.
    pub fn new(secret: impl Into<Vec<u8>>) -> Self {
        Self(secret.into().into_boxed_slice())
    }

    /// The secret's bytes, for the one place that uses them.
    pub(crate) fn expose(&self) -> &[u8] {
        &self.0
    }

    /// Whether the secret is empty (refused where a key is needed).
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(redacted)")
    }
}

/// The value of [`SIGNATURE_HEADER`] for `body` sent at `unix_seconds`:
/// `t=<unix seconds>,v1=<hex HMAC-SHA256 over "<t>." followed by the body as sent>`. A receiver
/// recomputes it with the shared secret, compares in constant time, and refuses a `t` too far
/// from its clock (a replayed delivery).
///
/// ```
/// use audit_store::export::{Secret, signature};
///
/// let header = signature(&Secret::new("key"), 1_700_000_000, b"{\"id\":1}\n");
/// assert!(header.starts_with("t=1700000000,v1="));
/// assert_eq!(header.len(), "t=1700000000,v1=".len() + 64);
/// ```
pub fn signature(secret: &Secret, unix_seconds: u64, body: &[u8]) -> String {
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(secret.expose())
        .unwrap_or_else(|_| unreachable!("HMAC takes a key of any length"));
    mac.update(unix_seconds.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!(
        "t={unix_seconds},v1={}",
        hex::encode(mac.finalize().into_bytes())
    )
}

/// Whether `header` is a valid signature of `body` under `secret`, made within `tolerance`
/// seconds of `now_seconds`: what a receiver checks (and the tests' receivers do).
///
/// ```
/// use audit_store::export::{Secret, signature, verify_signature};
///
/// let secret = Secret::new("key");
/// let header = signature(&secret, 1_000, b"body");
/// assert!(verify_signature(&secret, &header, b"body", 1_010, 300));
/// assert!(!verify_signature(&secret, &header, b"body!", 1_010, 300));
/// assert!(!verify_signature(&secret, &header, b"body", 2_000, 300), "too old");
/// ```
pub fn verify_signature(
    secret: &Secret,
    header: &str,
    body: &[u8],
    now_seconds: u64,
    tolerance: u64,
) -> bool {
    let mut t = None;
    let mut v1 = None;
    for part in header.split(',') {
        match part.split_once('=') {
            Some(("t", value)) => t = value.parse::<u64>().ok(),
            Some(("v1", value)) => v1 = hex::decode(value).ok(),
            _ => {}
        }
    }
    let (Some(t), Some(v1)) = (t, v1) else {
        return false;
    };
    if t.abs_diff(now_seconds) > tolerance {
        return false;
    }
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(secret.expose())
        .unwrap_or_else(|_| unreachable!("HMAC takes a key of any length"));
    mac.update(t.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    mac.verify_slice(&v1).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_signature_is_the_hmac_of_the_time_a_dot_and_the_body() {
        // RFC 4231 test case 2 shape: key "Jefe", over "1." + "what do ya want for nothing?".
        let header = signature(&Secret::new("Jefe"), 1, b"what do ya want for nothing?");
        let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(b"Jefe").unwrap();
        mac.update(b"1.what do ya want for nothing?");
        assert_eq!(
            header,
            format!("t=1,v1={}", hex::encode(mac.finalize().into_bytes()))
        );
    }

    #[test]
    fn a_signature_under_another_secret_or_garbled_is_refused() {
        let header = signature(&Secret::new("a"), 5, b"x");
        assert!(!verify_signature(&Secret::new("b"), &header, b"x", 5, 0));
        assert!(!verify_signature(&Secret::new("a"), "t=5", b"x", 5, 0));
        assert!(!verify_signature(
            &Secret::new("a"),
            "v1=zz,t=5",
            b"x",
            5,
            0
        ));
    }
}
