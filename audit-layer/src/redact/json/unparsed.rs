//! Why a body could not be redacted: the error the `_unparsed` marker quotes, every reason it
//! can give, and how the scanner stops with one.

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

// Every reason a body is refused for, as its `_unparsed` marker says it before the position.
// None quotes the body. Tests compare with the text, not with these names, so that a change to
// what a user reads shows in them.
pub(super) const INVALID_UTF8: &str = "invalid UTF-8";
pub(super) const EMPTY_BODY: &str = "the body is empty";
pub(super) const NOT_A_CONTAINER: &str = "the body is not a JSON object or array";
pub(super) const TRAILING: &str = "trailing characters after the JSON value";
pub(super) const EXPECTED_VALUE: &str = "expected a JSON value";
/// Names [`MAX_DEPTH`](super::MAX_DEPTH); a test checks that the two agree.
pub(super) const TOO_DEEP: &str = "nested deeper than 100 levels";
pub(super) const EXPECTED_KEY: &str = "expected a string key";
pub(super) const EXPECTED_COLON: &str = "expected ':' after a key";
pub(super) const OBJECT_DELIMITER: &str = "expected ',' or '}' in an object";
pub(super) const ARRAY_DELIMITER: &str = "expected ',' or ']' in an array";
pub(super) const DUPLICATE_KEY: &str = "duplicate key in an object";
pub(super) const INVALID_LITERAL: &str = "invalid literal";
pub(super) const INVALID_NUMBER: &str = "invalid number";
pub(super) const NUMBER_OUT_OF_RANGE: &str = "number out of range";
pub(super) const CONTROL_CHARACTER: &str = "control character in a string";
pub(super) const UNTERMINATED_STRING: &str = "unterminated string";
pub(super) const INVALID_ESCAPE: &str = "invalid escape in a string";
pub(super) const INVALID_UNICODE_ESCAPE: &str = "invalid \\u escape";
pub(super) const LONE_SURROGATE: &str = "lone surrogate in a string escape";

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
    use super::super::tests::policy_plan;
    use super::super::{MAX_DEPTH, redact};
    use super::TOO_DEEP;

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

    #[test]
    fn the_nesting_reason_names_the_limit() {
        assert_eq!(TOO_DEEP, format!("nested deeper than {MAX_DEPTH} levels"));
    }
}
