//! Numbers and literals: the number grammar (and, for a kept number, whether it fits an
//! `f64`), `true`, `false` and `null`.

use super::Scanner;
use super::unparsed::{INVALID_LITERAL, INVALID_NUMBER, NUMBER_OUT_OF_RANGE, Scan};

impl Scanner<'_> {
    #[inline]
    pub(super) fn literal(&mut self, word: &'static [u8]) -> Scan<()> {
        if self.b[self.pos..].starts_with(word) {
            self.pos += word.len();
            Ok(())
        } else {
            Err(self.fail(INVALID_LITERAL))
        }
    }

    #[inline]
    fn digits(&mut self) -> usize {
        let start = self.pos;
        while let Some(b'0'..=b'9') = self.peek() {
            self.pos += 1;
        }
        self.pos - start
    }

    /// A number; returns whether it is spelled as an integer (no fraction, no exponent).
    /// `kept` also refuses one beyond `f64`.
    pub(super) fn number(&mut self, kept: bool) -> Scan<bool> {
        let start = self.pos;
        if self.peek() == Some(b'-') {
            self.pos += 1;
        }
        let integer_digits = match self.peek() {
            Some(b'0') => {
                self.pos += 1;
                1
            }
            Some(b'1'..=b'9') => self.digits(),
            _ => return Err(self.fail(INVALID_NUMBER)),
        };
        let mut integral = true;
        if self.peek() == Some(b'.') {
            self.pos += 1;
            if self.digits() == 0 {
                return Err(self.fail(INVALID_NUMBER));
            }
            integral = false;
        }
        let mut exponent = false;
        if let Some(b'e' | b'E') = self.peek() {
            self.pos += 1;
            if let Some(b'+' | b'-') = self.peek() {
                self.pos += 1;
            }
            if self.digits() == 0 {
                return Err(self.fail(INVALID_NUMBER));
            }
            integral = false;
            exponent = true;
        }
        // Without an exponent, fewer than 309 integer digits is below 1e308: always finite.
        if kept && (exponent || integer_digits > 308) && !is_finite(&self.b[start..self.pos]) {
            return Err(self.fail_at(NUMBER_OUT_OF_RANGE, start));
        }
        Ok(integral)
    }
}

/// Whether a number (valid JSON grammar) fits an `f64`.
fn is_finite(number: &[u8]) -> bool {
    std::str::from_utf8(number)
        .ok()
        .and_then(|n| n.parse::<f64>().ok())
        .is_some_and(f64::is_finite)
}

#[cfg(test)]
mod tests {
    use super::super::tests::run;

    #[test]
    fn huge_numbers_in_dropped_fields_do_not_matter() {
        assert_eq!(
            run(r#"{"secret":1e999,"name":123456789012345678901234567890}"#).unwrap(),
            r#"{"name":123456789012345678901234567890}"#
        );
    }

    #[test]
    fn only_kept_numbers_are_checked_for_range() {
        let digits = |n: usize| format!("1{}", "0".repeat(n - 1));
        assert_eq!(
            run(&format!(r#"{{"name":{}}}"#, digits(308))).unwrap(),
            format!(r#"{{"name":{}}}"#, digits(308))
        );
        assert_eq!(
            run(&format!(r#"{{"name":{}}}"#, digits(400)))
                .unwrap_err()
                .reason(),
            "number out of range"
        );
        assert_eq!(
            run(&format!(r#"{{"secret":{}}}"#, digits(400))).unwrap(),
            "{}"
        );
        assert_eq!(
            run(r#"{"name":-1.5e-400}"#).unwrap(),
            r#"{"name":-1.5e-400}"#
        );
        assert_eq!(
            run(r#"{"name":1.7976931348623159e308}"#)
                .unwrap_err()
                .reason(),
            "number out of range"
        );
    }
}
