//! How long a job waits before sending a failed batch again: exponential backoff with full
//! jitter, or what the destination asked for (`Retry-After`), within bounds.

use std::time::Duration;

/// Backoff between the attempts of one batch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Backoff {
    /// The first wait's upper bound.
    pub(crate) first: Duration,
    /// The longest wait, also for a `Retry-After` that asks for more.
    pub(crate) max: Duration,
}

impl Backoff {
    /// The wait after failed attempt `attempt` (1, 2, ...): a destination's `Retry-After`
    /// when it gave one (at least `first`, so that `Retry-After: 0` or a date past is not a
    /// busy loop, and at most `max`), otherwise a uniformly random time up to
    /// `first * 2^(attempt - 1)`, capped at `max` (full jitter: many jobs failing at once do
    /// not retry in step).
    pub(crate) fn wait(&self, attempt: u32, retry_after: Option<Duration>) -> Duration {
        if let Some(asked) = retry_after {
            return asked.max(self.first).min(self.max);
        }
        let ceiling = self
            .first
            .saturating_mul(1u32 << attempt.saturating_sub(1).min(20))
            .min(self.max);
        ceiling.mul_f64(unit_random())
    }
}

/// A random number in `[0, 1)`.
fn unit_random() -> f64 {
    let mut bytes = [0u8; 8];
    // No entropy is a reason for no jitter, not for no retry.
    if getrandom::fill(&mut bytes).is_err() {
        return 1.0;
    }
    (u64::from_le_bytes(bytes) >> 11) as f64 / (1u64 << 53) as f64
}

/// The wait a `Retry-After` header value asks for: delay-seconds, or an HTTP date (the time
/// until then; nothing for a date past). `None` for anything else.
pub(crate) fn parse_retry_after(value: &str, now: std::time::SystemTime) -> Option<Duration> {
    let value = value.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let date =
        time::OffsetDateTime::parse(value, &time::format_description::well_known::Rfc2822).ok()?;
    let at = std::time::SystemTime::from(date);
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

#[cfg(test)]
mod tests {
    use std::time::{SystemTime, UNIX_EPOCH};

    use super::*;

    #[test]
    fn waits_grow_exponentially_within_their_cap_and_are_jittered() {
        let backoff = Backoff {
            first: Duration::from_millis(100),
            max: Duration::from_secs(2),
        };
        let waits: Vec<Duration> = (0..200).map(|_| backoff.wait(3, None)).collect();
        assert!(waits.iter().all(|w| *w <= Duration::from_millis(400)));
        assert!(
            waits.iter().any(|w| *w != waits[0]),
            "jittered: not all the same"
        );
        assert!((0..50).all(|_| backoff.wait(30, None) <= Duration::from_secs(2)));
    }

    #[test]
    fn a_destinations_retry_after_is_honoured_up_to_the_cap() {
        let backoff = Backoff {
            first: Duration::from_millis(100),
            max: Duration::from_secs(60),
        };
        assert_eq!(
            backoff.wait(1, Some(Duration::from_secs(7))),
            Duration::from_secs(7)
        );
        assert_eq!(
            backoff.wait(1, Some(Duration::from_secs(3600))),
            Duration::from_secs(60)
        );
        // A destination asking for no wait at all still gets the first wait.
        assert_eq!(
            backoff.wait(1, Some(Duration::ZERO)),
            Duration::from_millis(100)
        );
    }

    #[test]
    fn retry_after_is_seconds_or_an_http_date() {
        let now = UNIX_EPOCH + Duration::from_secs(784_111_767); // Sun, 06 Nov 1994 08:49:27 GMT
        assert_eq!(
            parse_retry_after(" 120 ", now),
            Some(Duration::from_secs(120))
        );
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:49:37 GMT", now),
            Some(Duration::from_secs(10))
        );
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:49:17 GMT", now),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after("soon", SystemTime::now()), None);
    }
}
