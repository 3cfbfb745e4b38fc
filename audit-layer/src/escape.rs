//! Escaping of untrusted strings before they enter a record, and their length caps.
//!
//! A record is read by people in terminals, log viewers and line-oriented tools. Header
//! values, paths and query strings come from anyone on the network, so characters that can
//! move the cursor, recolour the screen, forge line breaks or reorder what is displayed are
//! written out as visible escapes instead: control characters, the line and paragraph
//! separators U+2028 and U+2029 (line breaks for JavaScript and Python's `str.splitlines`), and
//! the invisible format characters of Unicode category Cf (the bidi controls U+202A–U+202E,
//! U+2066–U+2069, U+200E, U+200F, U+061C, zero-width characters, the byte order mark, tags).
//! Bytes that are not UTF-8 are escaped too.
//!
//! [`visible_within`] also caps a string's length, with a visible [`TRUNCATION_MARKER`];
//! [`json_text`] escapes the same characters inside a JSON text (a redacted body) as `\uXXXX`.

use std::borrow::Cow;
use std::fmt::Write;

/// How a string cut by [`visible_within`] ends: this, then `from N bytes]`, after the part
/// kept.
pub const TRUNCATION_MARKER: &str = "…[truncated";

/// The smallest length cap [`visible_within`] applies: room for the marker and some text.
pub const MIN_STRING_LIMIT: usize = 64;

/// `bytes` as a string with hidden characters and invalid UTF-8 escaped.
///
/// C0 controls and DEL become `\xNN`; C1 controls, U+2028, U+2029 and the format characters
/// (category Cf, see the [module docs](self)) `\u{NNNN}`; every byte of an invalid UTF-8
/// sequence `\xNN`. Clean input is returned borrowed, without allocating.
///
/// ```
/// use audit_layer::escape::visible;
///
/// assert_eq!(visible(b"curl/8.5"), "curl/8.5");
/// assert_eq!(visible(b"evil\r\nX-Injected: 1\x1b[31m"), r"evil\x0d\x0aX-Injected: 1\x1b[31m");
/// assert_eq!(visible(b"caf\xc3\xa9 \xff"), r"café \xff");
/// assert_eq!(visible("admin\u{202e}nimda\u{2028}".as_bytes()), r"admin\u{202e}nimda\u{2028}");
/// ```
pub fn visible(bytes: &[u8]) -> Cow<'_, str> {
    // The common case, printable ASCII, needs no decoding.
    if printable_ascii(bytes) {
        return Cow::Borrowed(std::str::from_utf8(bytes).unwrap_or_default());
    }
    if let Ok(s) = std::str::from_utf8(bytes)
        && !s.chars().any(is_hidden)
    {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(bytes.len() + 16);
    for chunk in bytes.utf8_chunks() {
        for c in chunk.valid().chars() {
            push_char(&mut out, c);
        }
        for &b in chunk.invalid() {
            push_byte(&mut out, b);
        }
    }
    Cow::Owned(out)
}

/// Whether every byte of `bytes` is printable ASCII (0x20 to 0x7e). Folded without an early
/// exit, so that it compiles to SIMD: with `all`, the layer bench's GET spent ~2,000 more
/// instructions per request in this check (callgrind, `cargo bench -p audit-layer --bench
/// layer`, BENCHMARKS.md).
fn printable_ascii(bytes: &[u8]) -> bool {
    bytes
        .iter()
        .fold(true, |all, &b| all & (b.wrapping_sub(0x20) < 0x5f))
}

/// [`visible`], at most `limit` bytes long: a longer result is cut on a character boundary
/// (never inside an escape) and ends with `…[truncated from N bytes]`, where `N` is the length
/// of `bytes`, the marker included in the `limit`. A `limit` below [`MIN_STRING_LIMIT`] counts
/// as that. Only as much of `bytes` is read and escaped as the result keeps.
///
/// ```
/// use audit_layer::escape::visible_within;
///
/// assert_eq!(visible_within(b"curl/8.5", 64), "curl/8.5");
/// let agent = "A".repeat(100_000);
/// let kept = visible_within(agent.as_bytes(), 100);
/// assert_eq!(kept.len(), 100);
/// assert!(kept.ends_with("AAA…[truncated from 100000 bytes]"));
/// ```
pub fn visible_within(bytes: &[u8], limit: usize) -> Cow<'_, str> {
    let limit = limit.max(MIN_STRING_LIMIT);
    // Escaping never shortens: a longer input needs cutting whatever it holds.
    if bytes.len() <= limit {
        let whole = visible(bytes);
        if whole.len() <= limit {
            return whole;
        }
    }
    let marker = format!("{TRUNCATION_MARKER} from {} bytes]", bytes.len());
    let budget = limit.saturating_sub(marker.len());
    let mut out = String::with_capacity(limit);
    'chunks: for chunk in bytes.utf8_chunks() {
        for c in chunk.valid().chars() {
            let before = out.len();
            push_char(&mut out, c);
            if out.len() > budget {
                out.truncate(before);
                break 'chunks;
            }
        }
        for &b in chunk.invalid() {
            let before = out.len();
            push_byte(&mut out, b);
            if out.len() > budget {
                out.truncate(before);
                break 'chunks;
            }
        }
    }
    out.push_str(&marker);
    Cow::Owned(out)
}

/// [`visible_within`] of a string already held: `s` itself when it needs neither escaping nor
/// cutting.
pub(crate) fn visible_string(s: String, limit: usize) -> String {
    // Already a `str`: a clean one is known without validating its UTF-8 again (the layer
    // bench's GET spent 700 instructions a request in `from_utf8` here, callgrind).
    if s.len() <= limit.max(MIN_STRING_LIMIT)
        && (printable_ascii(s.as_bytes()) || !s.chars().any(is_hidden))
    {
        return s;
    }
    match visible_within(s.as_bytes(), limit) {
        Cow::Borrowed(_) => s,
        Cow::Owned(escaped) => escaped,
    }
}

/// Whether `c` is written as an escape in a recorded string: a control character (category
/// Cc), U+2028 LINE SEPARATOR, U+2029 PARAGRAPH SEPARATOR, or a format character (Cf).
///
/// ```
/// use audit_layer::escape::is_hidden;
///
/// assert!(is_hidden('\n') && is_hidden('\u{85}') && is_hidden('\u{2028}'));
/// assert!(is_hidden('\u{202e}') && is_hidden('\u{200b}') && is_hidden('\u{feff}'));
/// assert!(!is_hidden('é') && !is_hidden('€') && !is_hidden(' '));
/// ```
pub fn is_hidden(c: char) -> bool {
    let code = c as u32;
    if code < 0xad {
        return c.is_control();
    }
    code == 0x2028 || code == 0x2029 || is_format(code)
}

/// The code points of Unicode's general category Cf (format), Unicode 16.0, as inclusive
/// ranges in order.
const FORMAT: [(u32, u32); 21] = [
    (0x00AD, 0x00AD),
    (0x0600, 0x0605),
    (0x061C, 0x061C),
    (0x06DD, 0x06DD),
    (0x070F, 0x070F),
    (0x0890, 0x0891),
    (0x08E2, 0x08E2),
    (0x180E, 0x180E),
    (0x200B, 0x200F),
    (0x202A, 0x202E),
    (0x2060, 0x2064),
    (0x2066, 0x206F),
    (0xFEFF, 0xFEFF),
    (0xFFF9, 0xFFFB),
    (0x110BD, 0x110BD),
    (0x110CD, 0x110CD),
    (0x13430, 0x1343F),
    (0x1BCA0, 0x1BCA3),
    (0x1D173, 0x1D17A),
    (0xE0001, 0xE0001),
    (0xE0020, 0xE007F),
];

fn is_format(code: u32) -> bool {
    let at = FORMAT.partition_point(|&(_, last)| last < code);
    FORMAT.get(at).is_some_and(|&(first, _)| first <= code)
}

fn push_char(out: &mut String, c: char) {
    if !is_hidden(c) {
        out.push(c);
    } else if (c as u32) < 0x80 {
        let _ = write!(out, "\\x{:02x}", c as u32);
    } else {
        let _ = write!(out, "\\u{{{:x}}}", c as u32);
    }
}

fn push_byte(out: &mut String, b: u8) {
    let _ = write!(out, "\\x{b:02x}");
}

/// A valid JSON text (a redacted body) that line-oriented readers and terminals show as it is:
/// every hidden character from DEL up (see [`is_hidden`]; in valid JSON they stand only
/// inside strings) written as a `\uXXXX` escape (a surrogate pair above U+FFFF), and raw line
/// breaks (CR, LF: in valid JSON they are whitespace between tokens) as spaces. The JSON value
/// is unchanged. `text` itself when there is nothing to change.
///
/// ```
/// use audit_layer::escape::json_text;
///
/// assert_eq!(json_text("{\"name\":\"ok\"}".to_owned()), r#"{"name":"ok"}"#);
/// assert_eq!(
///     json_text("{\"name\":\"a\u{2028}b\u{202e}c\",\n\"tag\":\"\u{e0041}\"}".to_owned()),
///     r#"{"name":"a\u2028b\u202ec", "tag":"\udb40\udc41"}"#
/// );
/// ```
pub fn json_text(text: String) -> String {
    let needs = |c: char| c == '\n' || c == '\r' || (c >= '\u{7f}' && is_hidden(c));
    let Some(first) = text.find(needs) else {
        return text;
    };
    let mut out = String::with_capacity(text.len() + 16);
    out.push_str(&text[..first]);
    for c in text[first..].chars() {
        if c == '\n' || c == '\r' {
            out.push(' ');
        } else if c >= '\u{7f}' && is_hidden(c) {
            let mut units = [0u16; 2];
            for unit in c.encode_utf16(&mut units) {
                let _ = write!(out, "\\u{unit:04x}");
            }
        } else {
            out.push(c);
        }
    }
    out
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

    #[test]
    fn separators_bidi_controls_and_format_characters_are_escaped() {
        let tricky = "north\u{2028}south\u{2029}east\u{202e}tsew\u{2066}x\u{200f}\u{61c}\u{feff}";
        assert_eq!(
            visible(tricky.as_bytes()),
            r"north\u{2028}south\u{2029}east\u{202e}tsew\u{2066}x\u{200f}\u{61c}\u{feff}"
        );
        assert_eq!(visible("tag\u{e0041}".as_bytes()), r"tag\u{e0041}");
        // Neighbours of the escaped ranges stay as they are.
        for c in [
            '\u{2027}', '\u{202f}', '\u{2065}', '\u{2070}', '\u{ac}', '\u{ae}',
        ] {
            assert_eq!(visible(c.to_string().as_bytes()), c.to_string(), "{c:?}");
        }
    }

    #[test]
    fn the_format_table_is_unicode_category_cf() {
        use unicode_general_category::{GeneralCategory, get_general_category};
        assert!(FORMAT.windows(2).all(|w| w[0].1 < w[1].0));
        for c in (0..=0x10_FFFF).filter_map(char::from_u32) {
            let category = get_general_category(c);
            let expected = matches!(
                category,
                GeneralCategory::Control
                    | GeneralCategory::Format
                    | GeneralCategory::LineSeparator
                    | GeneralCategory::ParagraphSeparator
            );
            assert_eq!(is_hidden(c), expected, "U+{:04X} {category:?}", c as u32);
        }
    }

    #[test]
    fn a_long_string_is_cut_with_a_marker_within_the_limit() {
        let agent = "M".repeat(400_000);
        let kept = visible_within(agent.as_bytes(), 8192);
        assert_eq!(kept.len(), 8192);
        assert!(kept.starts_with("MMMM"));
        assert!(
            kept.ends_with("M…[truncated from 400000 bytes]"),
            "{kept:.40}"
        );
        // Exactly at the limit: kept whole, borrowed.
        let exact = "x".repeat(100);
        assert!(matches!(visible_within(exact.as_bytes(), 100), Cow::Borrowed(s) if s == exact));
        // Short enough, but long once escaped: cut.
        let controls = "\x01".repeat(50);
        let kept = visible_within(controls.as_bytes(), 100);
        assert!(
            kept.len() <= 100 && kept.contains(TRUNCATION_MARKER),
            "{kept}"
        );
        // A limit below the minimum counts as the minimum.
        assert_eq!(visible_within(agent.as_bytes(), 1).len(), MIN_STRING_LIMIT);
    }

    #[test]
    fn a_cut_falls_between_characters_and_never_inside_an_escape() {
        for text in ["é€😀".repeat(3000), "ab\x1bcd\u{2028}".repeat(2000)] {
            // Where each character's text (escaped or not) ends in the whole escaped string.
            let ends: Vec<usize> = text
                .chars()
                .scan(0, |at, c| {
                    *at += visible(c.to_string().as_bytes()).len();
                    Some(*at)
                })
                .collect();
            let whole = visible(text.as_bytes());
            for limit in 64..160 {
                let kept = visible_within(text.as_bytes(), limit);
                assert!(kept.len() <= limit, "{limit}: {}", kept.len());
                let (body, marker) = kept.split_once(TRUNCATION_MARKER).unwrap();
                assert_eq!(marker, format!(" from {} bytes]", text.len()));
                assert!(whole.starts_with(body), "{limit}: {body:?}");
                let at = ends.iter().position(|&end| end == body.len());
                assert!(
                    body.is_empty() || at.is_some(),
                    "{limit}: cut inside {body:?}"
                );
                // And as late as the limit allows: the next character would not have fitted.
                let next = at.map_or(ends[0], |i| ends[i + 1]);
                assert!(kept.len() - body.len() + next > limit, "{limit}: {kept:?}");
            }
        }
        let invalid = b"\xff".repeat(100);
        let kept = visible_within(&invalid, 64);
        assert!(
            kept.starts_with(r"\xff\xff") && kept.ends_with("bytes]"),
            "{kept}"
        );
        assert!(kept.len() <= 64);
    }

    #[test]
    fn json_text_escapes_hidden_characters_and_keeps_the_value() {
        let texts = [
            "{\"a\":\"x\u{2028}y\u{2029}z\u{202e}\u{85}\u{ad}\u{e007f}\"}",
            "[\n  \"\u{2066}k\u{2069}\",\r\n  {\"\u{200b}key\": 1}\n]",
            "{\"plain\":\"é€😀\"}",
        ];
        for text in texts {
            let escaped = json_text(text.to_owned());
            assert!(!escaped.contains(['\n', '\r']), "{escaped}");
            assert!(
                !escaped.chars().any(is_hidden),
                "{escaped:?} still holds a hidden character"
            );
            let before: serde_json::Value = serde_json::from_str(text).unwrap();
            let after: serde_json::Value = serde_json::from_str(&escaped).unwrap();
            assert_eq!(before, after);
        }
        let plain = "{\"plain\":\"é€😀\"}".to_owned();
        let address = plain.as_ptr();
        let kept = json_text(plain);
        assert_eq!(kept.as_ptr(), address, "clean text is not copied");
    }
}
