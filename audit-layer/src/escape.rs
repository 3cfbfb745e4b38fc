//! Escaping of untrusted strings before they enter a record.
//!
//! A record is read by people in terminals and log viewers. Header values, paths and query
//! strings come from anyone on the network, so control characters (which can move the cursor,
//! recolour the screen or forge line breaks) and bytes that are not UTF-8 are written out as
//! visible escapes instead.

use std::borrow::Cow;
use std::fmt::Write;

/// `bytes` as a string with control characters and invalid UTF-8 escaped.
///
/// C0 controls and DEL become `\xNN`, C1 controls `\u{NN}`, and every byte of an invalid
/// UTF-8 sequence `\xNN`. Clean input is returned borrowed, without allocating.
///
/// ```
/// use audit_layer::escape::visible;
///
/// assert_eq!(visible(b"curl/8.5"), "curl/8.5");
/// assert_eq!(visible(b"evil\r\nX-Injected: 1\x1b[31m"), r"evil\x0d\x0aX-Injected: 1\x1b[31m");
/// assert_eq!(visible(b"caf\xc3\xa9 \xff"), r"café \xff");
/// ```
pub fn visible(bytes: &[u8]) -> Cow<'_, str> {
    // The common case, printable ASCII, needs no decoding.
    if bytes.iter().all(|&b| (0x20..0x7f).contains(&b)) {
        return Cow::Borrowed(std::str::from_utf8(bytes).unwrap_or_default());
    }
    if let Ok(s) = std::str::from_utf8(bytes)
        && !s.chars().any(needs_escape)
    {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(bytes.len() + 16);
    for chunk in bytes.utf8_chunks() {
        for c in chunk.valid().chars() {
            push_char(&mut out, c);
        }
        for b in chunk.invalid() {
            let _ = write!(out, "\\x{b:02x}");
        }
    }
    Cow::Owned(out)
}

fn needs_escape(c: char) -> bool {
    c.is_control()
}

fn push_char(out: &mut String, c: char) {
    if !needs_escape(c) {
        out.push(c);
    } else if (c as u32) < 0x80 {
        let _ = write!(out, "\\x{:02x}", c as u32);
    } else {
        let _ = write!(out, "\\u{{{:x}}}", c as u32);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clean_input_is_borrowed() {
        assert!(matches!(visible(b"Mozilla/5.0 (X11)"), Cow::Borrowed(_)));
        assert!(matches!(visible("žluťoučký".as_bytes()), Cow::Borrowed(_)));
    }

    #[test]
    fn every_control_character_is_escaped() {
        for c in (0u32..0x20).chain([0x7f]).chain(0x80..0xa0) {
            let c = char::from_u32(c).unwrap();
            let s = c.to_string();
            let escaped = visible(s.as_bytes());
            assert!(
                !escaped.chars().any(char::is_control),
                "{c:?} -> {escaped:?}"
            );
            assert!(escaped.starts_with('\\'), "{c:?} -> {escaped:?}");
        }
        assert_eq!(visible("a\u{85}b".as_bytes()), r"a\u{85}b");
    }

    #[test]
    fn invalid_utf8_is_escaped_bytewise() {
        assert_eq!(visible(b"\xe2\x82"), r"\xe2\x82");
        assert_eq!(visible(b"ok\xc0\xafok"), r"ok\xc0\xafok");
    }
}
