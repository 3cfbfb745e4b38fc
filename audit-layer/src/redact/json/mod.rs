//! Redaction of a JSON body in one pass over its bytes.
//!
//! The body is never turned into a tree. The scanner walks it once, validating it fully (RFC
//! 8259: UTF-8, string escapes including surrogate pairs, number grammar, nesting), skipping the
//! values the plan drops and copying the text of the values it keeps into the output, which is
//! therefore itself valid JSON in the body's own spelling. Containers appear in the output only
//! when they hold a kept value (the root always does). Anything that is not exactly one valid
//! JSON object or array — trailing bytes, duplicate keys in an object the plan reads, nesting
//! beyond [`MAX_DEPTH`], numbers beyond `f64` — fails with a reason that quotes none of the
//! body.
//!
//! The scanner's parts, in the order a body meets them:
//!
//! - [`stops`]: the string-stop bitmap, built over the whole body before the scan;
//! - [`walk`]: the root, and each value dispatched by its plan node; [`object`] and
//!   [`array`](mod@array) walk the containers the plan reads;
//! - [`strings`], [`scalars`]: strings and keys, numbers and literals;
//! - [`skip`]: values dropped, or kept whole, validated without being written;
//! - [`duplicate_keys`]: the keys each object has shown, to refuse a repeated one;
//! - [`output`]: the kept text, built from runs of the body;
//! - [`unparsed`]: why a body is refused, and where.

mod array;
mod duplicate_keys;
mod object;
mod output;
mod scalars;
mod skip;
mod stops;
mod strings;
mod unparsed;
mod walk;

use std::borrow::Cow;

#[cfg(test)]
use super::plan::DROP;
use super::plan::{NodeId, PlanArena};
use duplicate_keys::KeySet;
use output::Output;
use stops::with_string_stops;
pub use unparsed::Unparsed;
use unparsed::{EXPECTED_VALUE, INVALID_UTF8, Scan, Stop};

/// The deepest nesting accepted: below serde_json's limit of 128, so a kept value can always be
/// read back.
pub(crate) const MAX_DEPTH: usize = 100;

/// Redacts `body` by the plan rooted at `root`, returning the kept JSON text.
pub(crate) fn redact(arena: &PlanArena, root: NodeId, body: &[u8]) -> Result<String, Unparsed> {
    // Validated whole, up front: the scanner then only looks for JSON's own delimiters, and any
    // slice of the body between them is text. The basic check, which only says whether, is the
    // faster; the compat one then says where.
    let text = match simdutf8::basic::from_utf8(body) {
        Ok(text) => text,
        Err(_) => simdutf8::compat::from_utf8(body)
            .map_err(|e| Unparsed::new(INVALID_UTF8, e.valid_up_to()))?,
    };
    with_string_stops(body, |stops, plain| {
        let mut scanner = Scanner {
            b: body,
            stops,
            pos: 0,
            arena,
            out: Output::new(text),
            keys: Vec::new(),
            kept_objects: Vec::new(),
            failure: Unparsed::new(EXPECTED_VALUE, 0),
        };
        match scanner.root(root) {
            // A body of printable ASCII keeps nothing a reader could be misled by.
            Ok(()) if plain => Ok(scanner.out.finish()),
            Ok(()) => Ok(crate::escape::json_text(scanner.out.finish())),
            Err(Stop) => Err(scanner.failure),
        }
    })
}

/// Checks that `body` is one valid JSON value, as [`redact`] would.
#[cfg(test)]
pub(crate) fn validate(body: &[u8]) -> Result<(), Unparsed> {
    redact(&PlanArena::default(), DROP, body).map(drop)
}

/// The state of one scan: the body, the cursor, the plan, and what is kept so far. Its methods
/// are spread over this module's children, by what they read.
struct Scanner<'a> {
    b: &'a [u8],
    /// One bit per byte of the body (bit `i % 64` of word `i / 64`), set where a string's
    /// plain run ends: a quote, a backslash, a control character. See [`stops`].
    stops: &'a [u64],
    pos: usize,
    arena: &'a PlanArena,
    out: Output<'a>,
    /// Undeclared keys of the objects being checked for duplicates, innermost last, by meaning
    /// (escapes resolved).
    keys: Vec<Cow<'a, [u8]>>,
    /// The key sets of the objects open inside a kept value being skipped, innermost last.
    kept_objects: Vec<KeySet<'a>>,
    /// Why the scan stopped, once it has.
    failure: Unparsed,
}

/// Whether `byte` is JSON whitespace.
#[inline(always)]
fn is_ws(byte: u8) -> bool {
    matches!(byte, b' ' | b'\n' | b'\r' | b'\t')
}

/// The first byte at or after `pos` that is not whitespace (or the end of `body`).
#[inline(always)]
fn skip_ws(body: &[u8], mut pos: usize) -> usize {
    while let Some(&byte) = body.get(pos)
        && is_ws(byte)
    {
        pos += 1;
    }
    pos
}

impl Scanner<'_> {
    /// The byte at the cursor.
    #[inline(always)]
    fn peek(&self) -> Option<u8> {
        self.b.get(self.pos).copied()
    }

    /// Moves the cursor past any whitespace.
    // Not `self.pos = skip_ws(self.b, self.pos)`: written so, the skipper ran 219
    // instructions more per call of the keep-nothing bench (callgrind, 2026-12-06).
    #[inline(always)]
    fn ws(&mut self) {
        while let Some(b' ' | b'\n' | b'\r' | b'\t') = self.peek() {
            self.pos += 1;
        }
    }

    /// Moves the cursor past `byte`, which must be there (or fails with `reason`).
    #[inline(always)]
    fn expect(&mut self, byte: u8, reason: &'static str) -> Scan<()> {
        if self.peek() == Some(byte) {
            self.pos += 1;
            Ok(())
        } else {
            Err(self.fail(reason))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::plan::{DROP, KEEP, PlanArena};
    use super::*;

    /// `{name, enabled, filters{services[], zones[]}, mechanisms{...}}` with the alerting
    /// policy's markings.
    pub(super) fn policy_plan() -> (PlanArena, NodeId) {
        let mut arena = PlanArena::default();
        let filters = arena.object(
            vec![("services".into(), KEEP), ("zones".into(), KEEP)],
            DROP,
        );
        let webhook = arena.object(vec![("id".into(), KEEP), ("url".into(), DROP)], DROP);
        let webhooks = arena.array(webhook);
        let mechanisms = arena.object(vec![("webhooks".into(), webhooks)], DROP);
        let root = arena.object(
            vec![
                ("name".into(), KEEP),
                ("enabled".into(), KEEP),
                ("secret".into(), DROP),
                ("filters".into(), filters),
                ("mechanisms".into(), mechanisms),
            ],
            DROP,
        );
        (arena, root)
    }

    pub(super) fn run(body: &str) -> Result<String, Unparsed> {
        run_bytes(body.as_bytes())
    }

    pub(super) fn run_bytes(body: &[u8]) -> Result<String, Unparsed> {
        let (arena, root) = policy_plan();
        redact(&arena, root, body)
    }

    #[test]
    fn keeps_marked_values_in_their_own_spelling() {
        let body = r#" {"name" : "Adv\u0061nced", "secret":"s3cr3t", "enabled":false,
            "filters":{"services":["a","b"],"zones":[],"other":1},
            "mechanisms":{"webhooks":[{"id":"w1","url":"https://hooks/s3cr3t"},{"url":"x"}]},
            "undeclared":{"deep":[1,2,{"x":"s3cr3t"}]}} "#;
        assert_eq!(
            run(body).unwrap(),
            r#"{"name":"Adv\u0061nced","enabled":false,"filters":{"services":["a","b"],"zones":[]},"mechanisms":{"webhooks":[{"id":"w1"}]}}"#
        );
    }

    #[test]
    fn hidden_characters_and_line_breaks_in_the_kept_text_are_escaped() {
        let body = "{\"name\":\"a\u{2028}b\u{202e}c\u{7f}\",\"secret\":\"\u{2029}\",\n\
            \"filters\":{\"services\":[\r\n\"x\u{85}\",\"\u{e0041}\"]}}";
        assert_eq!(
            run(body).unwrap(),
            r#"{"name":"a\u2028b\u202ec\u007f","filters":{"services":[  "x\u0085","\udb40\udc41"]}}"#
        );
        // What the body means is kept.
        let kept: serde_json::Value = serde_json::from_str(&run(body).unwrap()).unwrap();
        assert_eq!(kept["name"], "a\u{2028}b\u{202e}c\u{7f}");
    }

    #[test]
    fn invalid_utf8_is_refused_where_std_finds_it() {
        let bad: &[&[u8]] = &[
            b"\xff",
            b"\xc3",
            b"\xc0\xaf",
            b"\xe0\x80\xaf",
            b"\xed\xa0\x80",
            b"\xf4\x90\x80\x80",
            b"\xf0\x9f\x98",
            b"\x80",
        ];
        for pad in [0, 1, 15, 16, 31, 32, 60, 63, 64, 100, 1000] {
            for seq in bad {
                let mut body = format!(
                    r#"{{"name":"{}"#,
                    "é".repeat(pad / 2) + &"x".repeat(pad % 2)
                )
                .into_bytes();
                body.extend_from_slice(seq);
                body.extend_from_slice(br#"","secret":"s3cr3t"}"#);
                let expected = std::str::from_utf8(&body).unwrap_err().valid_up_to();
                let err = run_bytes(&body).unwrap_err();
                assert_eq!(err.reason(), "invalid UTF-8");
                assert_eq!(
                    err.to_string(),
                    format!("invalid UTF-8 at byte {expected}"),
                    "{pad} {seq:?}"
                );
            }
        }
    }

    #[test]
    fn the_validator_agrees_with_serde_json_on_samples() {
        let samples: &[&[u8]] = &[
            b"{}",
            b"[]",
            b"[1,-0,0.5e-3,1E+2,true,false,null,\"\\u00e9\\ud83d\\ude00\"]",
            b"{\"a\":{\"b\":[{}]}}",
            b"[1,]",
            b"[01]",
            b"[1.]",
            b"[.5]",
            b"[-]",
            b"{\"a\"}",
            b"[\"\\u12\"]",
            b"[\"\t\"]",
            b" [ 1 , 2 ] ",
            b"[1 2]",
            b"{\"a\":1 \"b\":2}",
        ];
        for sample in samples {
            let ours = validate(sample).is_ok();
            let theirs = serde_json::from_slice::<serde_json::Value>(sample).is_ok();
            assert_eq!(ours, theirs, "{}", String::from_utf8_lossy(sample));
        }
    }
}
