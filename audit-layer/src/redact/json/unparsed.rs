//! Why a body could not be redacted: the error the `_unparsed` marker quotes, and how the
//! scanner stops with it.

use std::fmt;

use super::Scanner;

/// Why a body could not be redacted. Says where, never what.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Unparsed {
    reason: &'static str,
    at: usize,
}

impl Unparsed {
    pub(super) fn new(reason: &'static str, at: usize) -> Self {
        Self { reason, at }
    }

    /// The reason, without the position.
    pub fn reason(&self) -> &'static str {
        self.reason
    }
}

impl fmt::Display for Unparsed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} at byte {}", self.reason, self.at)
    }
}

impl std::error::Error for Unparsed {}

/// The scan failed; why and where is in [`Scanner::failure`]. A unit, so that the scanner's
/// results travel in registers.
pub(super) struct Stop;

/// What a step of the scan returns.
pub(super) type Scan<T> = Result<T, Stop>;

impl Scanner<'_> {
    /// Records why the scan stops here.
    #[cold]
    #[inline(never)]
    pub(super) fn fail(&mut self, reason: &'static str) -> Stop {
        self.fail_at(reason, self.pos)
    }

    /// Records why the scan stops, and where.
    #[cold]
    #[inline(never)]
    pub(super) fn fail_at(&mut self, reason: &'static str, at: usize) -> Stop {
        self.failure = Unparsed::new(reason, at);
        Stop
    }
}

#[cfg(test)]
mod tests {
    use super::super::redact;
    use super::super::tests::policy_plan;

    #[test]
    fn malformed_bodies_are_refused_with_a_reason_and_no_content() {
        let cases: &[(&[u8], &str)] = &[
            (b"", "the body is empty"),
            (b"   ", "the body is empty"),
            (b"\"s3cr3t\"", "the body is not a JSON object or array"),
            (
                b"{\"name\":\"x\"} trailing",
                "trailing characters after the JSON value",
            ),
            (
                b"{\"name\":\"x\"}{}",
                "trailing characters after the JSON value",
            ),
            (
                b"{\"secret\":\"a\",\"secret\":\"b\"}",
                "duplicate key in an object",
            ),
            (b"{\"name\":\"\xff\"}", "invalid UTF-8"),
            (b"{\"name\":1e999}", "number out of range"),
            (b"{\"name\":01}", "expected ',' or '}' in an object"),
            (b"{\"name\":\"a\x01b\"}", "control character in a string"),
            (
                b"{\"name\":\"\\ud800\"}",
                "lone surrogate in a string escape",
            ),
            (b"{\"name\":\"\\x\"}", "invalid escape in a string"),
            (b"{\"name\":tru}", "invalid literal"),
            (b"{\"name\" \"x\"}", "expected ':' after a key"),
            (b"{\"secret\":[1,2}", "expected ',' or ']' in an array"),
            (
                b"{\"secret\":{\"a\":1]}",
                "expected ',' or '}' in an object",
            ),
            (b"{name:1}", "expected a string key"),
            (b"{\"secret\":\"unterminated", "unterminated string"),
            (b"{\"secret\":1,}", "expected a string key"),
        ];
        for (body, reason) in cases {
            let err = redact(&policy_plan().0, policy_plan().1, body).unwrap_err();
            assert_eq!(err.reason(), *reason, "{}", String::from_utf8_lossy(body));
            assert!(!err.to_string().contains("s3cr3t"));
        }
    }
}
