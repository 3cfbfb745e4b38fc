//! Strings and keys: a string crossed from quote to quote over the stop bitmap, its escapes
//! validated (surrogate pairs included), and a key read by its meaning.

use std::borrow::Cow;

use super::Scanner;
use super::stops::next_stop;
use super::unparsed::{
    CONTROL_CHARACTER, INVALID_ESCAPE, INVALID_UNICODE_ESCAPE, LONE_SURROGATE, Scan,
    UNTERMINATED_STRING,
};

impl<'a> Scanner<'a> {
    /// The key at the cursor (which is on its opening quote), by meaning: borrowed from the
    /// body, or with its escapes resolved. The cursor ends just past the closing quote.
    #[inline]
    pub(super) fn key(&mut self) -> Scan<Cow<'a, [u8]>> {
        let start = self.pos;
        let escaped = self.string()?;
        let b = self.b;
        Ok(if escaped {
            Cow::Owned(unescape(&b[start + 1..self.pos - 1]))
        } else {
            Cow::Borrowed(&b[start + 1..self.pos - 1])
        })
    }

    /// A string, from its opening quote to just past its closing one. Returns whether it
    /// contains escapes.
    #[inline(always)]
    pub(super) fn string(&mut self) -> Scan<bool> {
        let mut escaped = false;
        let mut pos = self.pos + 1;
        loop {
            pos = next_stop(self.stops, self.b.len(), pos);
            match self.b.get(pos) {
                Some(b'"') => {
                    self.pos = pos + 1;
                    return Ok(escaped);
                }
                Some(b'\\') => {
                    escaped = true;
                    self.pos = pos;
                    self.escape()?;
                    pos = self.pos;
                }
                Some(_) => {
                    self.pos = pos;
                    return Err(self.fail(CONTROL_CHARACTER));
                }
                None => {
                    self.pos = pos;
                    return Err(self.fail(UNTERMINATED_STRING));
                }
            }
        }
    }

    fn escape(&mut self) -> Scan<()> {
        self.pos += 1; // '\'
        match self.peek() {
            Some(b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't') => {
                self.pos += 1;
                Ok(())
            }
            Some(b'u') => {
                self.pos += 1;
                let unit = self.hex4()?;
                if (0xDC00..0xE000).contains(&unit) {
                    return Err(self.fail(LONE_SURROGATE));
                }
                if (0xD800..0xDC00).contains(&unit) {
                    if !self.b[self.pos..].starts_with(b"\\u") {
                        return Err(self.fail(LONE_SURROGATE));
                    }
                    self.pos += 2;
                    let low = self.hex4()?;
                    if !(0xDC00..0xE000).contains(&low) {
                        return Err(self.fail(LONE_SURROGATE));
                    }
                }
                Ok(())
            }
            _ => Err(self.fail(INVALID_ESCAPE)),
        }
    }

    fn hex4(&mut self) -> Scan<u32> {
        let Some(hex) = self.b.get(self.pos..self.pos + 4) else {
            return Err(self.fail(INVALID_UNICODE_ESCAPE));
        };
        let mut value = 0u32;
        for &h in hex {
            let Some(digit) = (h as char).to_digit(16) else {
                return Err(self.fail(INVALID_UNICODE_ESCAPE));
            };
            value = value * 16 + digit;
        }
        self.pos += 4;
        Ok(value)
    }
}

/// The end, just past its closing quote, of the string opening at `at` in `body` if it is
/// plain (no escape, no control character), found by the string stops alone; `None` if no
/// string opens there or it needs [`Scanner::string`].
#[inline(always)]
pub(super) fn plain_string_end(body: &[u8], stops: &[u64], at: usize) -> Option<usize> {
    if body.get(at) != Some(&b'"') {
        return None;
    }
    let close = next_stop(stops, body.len(), at + 1);
    (body.get(close) == Some(&b'"')).then_some(close + 1)
}

/// The text of a validated string body with escapes resolved.
pub(super) fn unescape(raw: &[u8]) -> Vec<u8> {
    let mut quoted = Vec::with_capacity(raw.len() + 2);
    quoted.push(b'"');
    quoted.extend_from_slice(raw);
    quoted.push(b'"');
    // The scanner validated the escapes, so serde_json cannot fail here.
    serde_json::from_slice::<String>(&quoted)
        .unwrap_or_default()
        .into_bytes()
}

#[cfg(test)]
mod tests {
    use super::super::tests::run;

    #[test]
    fn strings_are_read_across_block_boundaries() {
        // Every offset of the string's end, escapes and control characters relative to the
        // 64-byte blocks of the stop bitmap, and bytes above 0x7F next to a quote.
        for pad in 0..140 {
            let filler = "é".repeat(pad / 2) + &"x".repeat(pad % 2);
            let body = format!(r#"{{"name":"{filler}\"\u00e9\ud83d\ude00€","secret":"{filler}"}}"#);
            let kept = run(&body).unwrap();
            assert_eq!(
                kept,
                format!(r#"{{"name":"{filler}\"\u00e9\ud83d\ude00€"}}"#),
                "{pad}"
            );
            let control = format!("{{\"secret\":\"{filler}\u{1f}\"}}");
            let err = run(&control).unwrap_err();
            assert_eq!(err.reason(), "control character in a string", "{pad}");
            assert_eq!(
                err.to_string(),
                format!(
                    "control character in a string at byte {}",
                    11 + filler.len()
                )
            );
            let open = format!(r#"{{"secret":"{filler}"#);
            assert_eq!(run(&open).unwrap_err().reason(), "unterminated string");
            let escape_at_end = format!(r#"{{"secret":"{filler}\"#);
            assert_eq!(
                run(&escape_at_end).unwrap_err().reason(),
                "invalid escape in a string"
            );
        }
    }
}
