//! Subjects and names: the stable partition of an account, what a subject or a stream name
//! may be, and server URLs made fit to print.

/// The partition of an account's records among `partitions` subjects: FNV-1a (64 bits) of the
/// account id, modulo `partitions`; records without an account are partition 0.
///
/// Stable across processes, versions and platforms (unlike `std`'s hasher), so every app
/// instance sends one account's records to the same subject.
///
/// ```
/// use audit_store::fleet::partition;
///
/// assert_eq!(partition(Some("023e105f4ecef8ad9ca31a8372d0c353"), 16), partition(Some("023e105f4ecef8ad9ca31a8372d0c353"), 16));
/// assert_eq!(partition(None, 16), 0);
/// assert!(partition(Some("acc"), 16) < 16);
/// ```
pub fn partition(account_id: Option<&str>, partitions: u32) -> u32 {
    let Some(account) = account_id else { return 0 };
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in account.as_bytes() {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    (hash % u64::from(partitions.max(1))) as u32
}

/// Checks a subject (or a subject prefix) a fleet publishes to: dot-separated tokens of
/// printable ASCII without spaces, no empty token, no wildcard (`*`, `>`).
pub(crate) fn check_subject(setting: &str, subject: &str) -> Result<(), String> {
    let fault = if subject.is_empty() {
        Some("it is empty")
    } else if subject.split('.').any(str::is_empty) {
        Some("a token between dots is empty")
    } else if subject
        .bytes()
        .any(|b| !b.is_ascii_graphic() || b == b'*' || b == b'>')
    {
        Some("only printable ASCII without spaces or wildcards (*, >) is allowed")
    } else {
        None
    };
    match fault {
        Some(fault) => Err(format!(
            "invalid value for '{setting}': {fault}, got {subject:?} (expected e.g. \"audit.records\")"
        )),
        None => Ok(()),
    }
}

/// Checks a stream or consumer name: letters, digits, `-` and `_`, at most 64 characters
/// (what JetStream accepts everywhere, also as a file name).
pub(crate) fn check_name(setting: &str, name: &str) -> Result<(), String> {
    if name.is_empty()
        || name.len() > 64
        || !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return Err(format!(
            "invalid value for '{setting}': expected 1 to 64 letters, digits, '-' or '_', got {name:?}"
        ));
    }
    Ok(())
}

/// `url` without the password or token it may carry (`nats://user:secret@host` →
/// `nats://user:***@host`), for logs and errors.
///
/// ```
/// use audit_store::fleet::redact_url;
///
/// assert_eq!(redact_url("nats://app:s3cret@10.0.0.1:4222"), "nats://app:***@10.0.0.1:4222");
/// assert_eq!(redact_url("nats://token@10.0.0.1"), "nats://***@10.0.0.1");
/// assert_eq!(redact_url("10.0.0.1:4222"), "10.0.0.1:4222");
/// ```
pub fn redact_url(url: &str) -> String {
    let (scheme, rest) = match url.find("://") {
        Some(at) => url.split_at(at + 3),
        None => ("", url),
    };
    let authority_end = rest.find('/').unwrap_or(rest.len());
    match rest[..authority_end].rfind('@') {
        Some(at) => {
            let userinfo = &rest[..at];
            let shown = match userinfo.split_once(':') {
                Some((user, _)) => format!("{user}:***"),
                None => "***".to_owned(),
            };
            format!("{scheme}{shown}{}", &rest[at..])
        }
        None => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partitions_are_stable_and_spread() {
        // Fixed values: a change of hash would send an account's records to another subject
        // than running instances do.
        // FNV-1a of "acc" is 0xe723ca190545841a.
        assert_eq!(partition(Some("acc"), 16), 10);
        assert_eq!(
            partition(Some("acc"), 7),
            (0xe723_ca19_0545_841a_u64 % 7) as u32
        );
        assert_eq!(
            partition(Some(""), 16),
            (0xcbf2_9ce4_8422_2325_u64 % 16) as u32
        );
        assert_eq!(partition(None, 16), 0);
        assert_eq!(partition(Some("anything"), 1), 0);
        assert_eq!(partition(Some("anything"), 0), 0);
        let mut seen = std::collections::HashSet::new();
        for i in 0..1000 {
            seen.insert(partition(Some(&format!("account-{i}")), 16));
        }
        assert_eq!(seen.len(), 16, "1,000 accounts use every partition");
    }

    #[test]
    fn subjects_are_checked() {
        assert!(check_subject("subject prefix", "audit.records").is_ok());
        assert!(check_subject("subject prefix", "a").is_ok());
        for bad in [
            "",
            "audit..records",
            ".audit",
            "audit.",
            "audit.*",
            "audit.>",
            "audit records",
        ] {
            let err = check_subject("subject prefix", bad).unwrap_err();
            assert!(err.contains("'subject prefix'"), "{err}");
        }
    }

    #[test]
    fn names_are_checked() {
        assert!(check_name("stream", "AUDIT").is_ok());
        assert!(check_name("stream", "audit-ingest_2").is_ok());
        for bad in ["", "A.B", "A B", "A*", &"x".repeat(65)] {
            let err = check_name("stream", bad).unwrap_err();
            assert!(err.contains("'stream'"), "{err}");
        }
    }

    #[test]
    fn urls_lose_their_secrets() {
        assert_eq!(redact_url("nats://u:p@h:4222"), "nats://u:***@h:4222");
        assert_eq!(redact_url("tls://tok@h"), "tls://***@h");
        assert_eq!(redact_url("nats://h:4222/x@y"), "nats://h:4222/x@y");
        assert_eq!(redact_url("u:p@h"), "u:***@h");
    }
}
