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

use std::borrow::Cow;
use std::collections::HashSet;
use std::fmt;

use super::plan::{Node, NodeId, PlanArena, types};

/// The deepest nesting accepted: below serde_json's limit of 128, so a kept value can always be
/// read back.
pub(crate) const MAX_DEPTH: usize = 100;

/// Objects with more keys than this switch duplicate detection from a scan to a hash set.
const LINEAR_KEY_CHECK: usize = 32;

/// Why a body could not be redacted. Says where, never what.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Unparsed {
    reason: &'static str,
    at: usize,
}

impl Unparsed {
    fn new(reason: &'static str, at: usize) -> Self {
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

/// Redacts `body` by the plan rooted at `root`, returning the kept JSON text.
pub(crate) fn redact(arena: &PlanArena, root: NodeId, body: &[u8]) -> Result<String, Unparsed> {
    let text =
        std::str::from_utf8(body).map_err(|e| Unparsed::new("invalid UTF-8", e.valid_up_to()))?;
    let mut scanner = Scanner {
        text,
        b: body,
        pos: 0,
        keys: Vec::with_capacity(LINEAR_KEY_CHECK),
        open: Vec::new(),
    };
    // The output is never longer than the body.
    let mut out = String::with_capacity(body.len());
    scanner.ws();
    match scanner.peek() {
        Some(open @ (b'{' | b'[')) => {
            // A root that keeps nothing is still read as a container, so that its own keys
            // are checked for duplicates.
            let wrote = match (arena.get(root), open) {
                (Node::Drop, b'{') => {
                    scanner.object(arena, &[], super::plan::DROP, &mut out, 1, true)?
                }
                _ => scanner.value(arena, root, &mut out, 0, true)?,
            };
            if !wrote {
                // The root keeps nothing, or is not the declared shape: still say a body came.
                out.clear();
                out.push_str(if open == b'{' { "{}" } else { "[]" });
            }
        }
        Some(_) => {
            return Err(Unparsed::new(
                "the body is not a JSON object or array",
                scanner.pos,
            ));
        }
        None => return Err(Unparsed::new("the body is empty", scanner.pos)),
    }
    scanner.ws();
    if scanner.pos != body.len() {
        return Err(Unparsed::new(
            "trailing characters after the JSON value",
            scanner.pos,
        ));
    }
    Ok(out)
}

/// Checks that `body` is one valid JSON value, as [`redact`] would.
#[cfg(test)]
pub(crate) fn validate(body: &[u8]) -> Result<(), Unparsed> {
    redact(&PlanArena::default(), super::plan::DROP, body).map(drop)
}

struct Scanner<'a> {
    text: &'a str,
    b: &'a [u8],
    pos: usize,
    /// Keys of the objects being walked, innermost last, for duplicate detection.
    keys: Vec<Cow<'a, str>>,
    /// The containers a skipped value has open (reused: skipping never nests).
    open: Vec<Container>,
}

/// Bytes that end the fast path inside a string: the quote, the backslash, control characters.
static STRING_STOP: [bool; 256] = {
    let mut table = [false; 256];
    let mut i = 0;
    while i < 0x20 {
        table[i] = true;
        i += 1;
    }
    table[b'"' as usize] = true;
    table[b'\\' as usize] = true;
    table
};

#[derive(Clone, Copy, PartialEq, Eq)]
enum Container {
    Object,
    Array,
}

impl<'a> Scanner<'a> {
    fn peek(&self) -> Option<u8> {
        self.b.get(self.pos).copied()
    }

    fn err<T>(&self, reason: &'static str) -> Result<T, Unparsed> {
        Err(Unparsed::new(reason, self.pos))
    }

    fn ws(&mut self) {
        while let Some(b' ' | b'\n' | b'\r' | b'\t') = self.peek() {
            self.pos += 1;
        }
    }

    fn expect(&mut self, byte: u8, reason: &'static str) -> Result<(), Unparsed> {
        if self.peek() == Some(byte) {
            self.pos += 1;
            Ok(())
        } else {
            self.err(reason)
        }
    }

    /// Walks one value by plan `node`, appending what it keeps to `out`. Returns whether it
    /// appended anything; `force` keeps an empty container (the root).
    fn value(
        &mut self,
        arena: &PlanArena,
        node: NodeId,
        out: &mut String,
        depth: usize,
        force: bool,
    ) -> Result<bool, Unparsed> {
        match arena.get(node) {
            Node::Drop => {
                self.skip_value(depth, false)?;
                Ok(false)
            }
            Node::Keep(mask) => {
                let mask = *mask;
                let start = self.pos;
                let kind = match self.peek() {
                    Some(b'{') => types::OBJECT,
                    Some(b'[') => types::ARRAY,
                    Some(b'"') => types::STRING,
                    Some(b't' | b'f') => types::BOOLEAN,
                    Some(b'n') => types::NULL,
                    _ => types::NUMBER,
                };
                let numeric = types::NUMBER | types::INTEGER;
                let may_keep = if kind == types::NUMBER {
                    mask & numeric != 0
                } else {
                    mask & kind != 0
                };
                self.skip_value(depth, may_keep)?;
                let text = &self.text[start..self.pos];
                let keep = may_keep
                    && (kind != types::NUMBER
                        || mask & types::NUMBER != 0
                        || !text.contains(['.', 'e', 'E']));
                if keep {
                    out.push_str(text);
                }
                Ok(keep)
            }
            Node::Object { props, additional } => {
                // A marked map of scalars is kept whole: even empty or null (it was cleared).
                let whole = props.is_empty() && matches!(arena.get(*additional), Node::Keep(_));
                if self.peek() != Some(b'{') {
                    // Not the declared shape: nothing of it is kept.
                    return self.keep_null_or_skip(whole, out, depth);
                }
                let cleared = whole && self.is_empty_container();
                self.object(arena, props, *additional, out, depth + 1, force || cleared)
            }
            Node::Array { items } => {
                // A marked array of scalars is kept whole: even empty or null (it was cleared).
                let whole = matches!(arena.get(*items), Node::Keep(_));
                if self.peek() != Some(b'[') {
                    return self.keep_null_or_skip(whole, out, depth);
                }
                let cleared = whole && self.is_empty_container();
                self.array(arena, *items, out, depth + 1, force || cleared)
            }
        }
    }

    /// Whether the container opening at the cursor is empty (`{}`, `[ ]`).
    fn is_empty_container(&self) -> bool {
        let rest = &self.b[self.pos + 1..];
        let close = rest
            .iter()
            .find(|b| !matches!(b, b' ' | b'\n' | b'\r' | b'\t'));
        matches!(
            (self.b[self.pos], close),
            (b'{', Some(b'}')) | (b'[', Some(b']'))
        )
    }

    /// A value that is not the container the plan expects: kept only if it is `null` and the
    /// container would have been kept whole; otherwise skipped.
    fn keep_null_or_skip(
        &mut self,
        whole: bool,
        out: &mut String,
        depth: usize,
    ) -> Result<bool, Unparsed> {
        if whole && self.b[self.pos..].starts_with(b"null") {
            self.pos += 4;
            out.push_str("null");
            return Ok(true);
        }
        self.skip_value(depth, false)?;
        Ok(false)
    }

    fn object(
        &mut self,
        arena: &PlanArena,
        props: &[(Box<str>, NodeId)],
        additional: NodeId,
        out: &mut String,
        depth: usize,
        force: bool,
    ) -> Result<bool, Unparsed> {
        if depth > MAX_DEPTH {
            return self.err("nested deeper than 100 levels");
        }
        self.pos += 1; // '{'
        let mark = out.len();
        out.push('{');
        let mut kept_any = false;
        let base = self.keys.len();
        let mut many: Option<HashSet<Cow<'a, str>>> = None;
        self.ws();
        if self.peek() == Some(b'}') {
            self.pos += 1;
        } else {
            loop {
                self.ws();
                if self.peek() != Some(b'"') {
                    return self.err("expected a string key");
                }
                let key_start = self.pos;
                let escaped = self.string()?;
                let raw_key = &self.text[key_start..self.pos];
                let key: Cow<'a, str> = if escaped {
                    Cow::Owned(unescape(&raw_key[1..raw_key.len() - 1]))
                } else {
                    Cow::Borrowed(&raw_key[1..raw_key.len() - 1])
                };
                self.note_key(base, &mut many, key.clone(), key_start)?;
                self.ws();
                self.expect(b':', "expected ':' after a key")?;
                self.ws();
                match arena.child(props, additional, &key) {
                    None => self.skip_value(depth, false)?,
                    Some(child) => {
                        let before = out.len();
                        if kept_any {
                            out.push(',');
                        }
                        out.push_str(raw_key);
                        out.push(':');
                        if self.value(arena, child, out, depth, false)? {
                            kept_any = true;
                        } else {
                            out.truncate(before);
                        }
                    }
                }
                self.ws();
                match self.peek() {
                    Some(b',') => self.pos += 1,
                    Some(b'}') => {
                        self.pos += 1;
                        break;
                    }
                    _ => return self.err("expected ',' or '}' in an object"),
                }
            }
        }
        self.keys.truncate(base);
        if kept_any || force {
            out.push('}');
            Ok(true)
        } else {
            out.truncate(mark);
            Ok(false)
        }
    }

    /// Records `key` as seen in the current object (whose keys start at `base` on the key
    /// stack), failing on a duplicate.
    fn note_key(
        &mut self,
        base: usize,
        many: &mut Option<HashSet<Cow<'a, str>>>,
        key: Cow<'a, str>,
        at: usize,
    ) -> Result<(), Unparsed> {
        let duplicate = match many {
            Some(set) => !set.insert(key),
            None if self.keys[base..].contains(&key) => true,
            None => {
                self.keys.push(key);
                if self.keys.len() - base > LINEAR_KEY_CHECK {
                    *many = Some(self.keys.drain(base..).collect());
                }
                false
            }
        };
        if duplicate {
            return Err(Unparsed::new("duplicate key in an object", at));
        }
        Ok(())
    }

    fn array(
        &mut self,
        arena: &PlanArena,
        items: NodeId,
        out: &mut String,
        depth: usize,
        force: bool,
    ) -> Result<bool, Unparsed> {
        if depth > MAX_DEPTH {
            return self.err("nested deeper than 100 levels");
        }
        self.pos += 1; // '['
        let mark = out.len();
        out.push('[');
        let mut kept_any = false;
        self.ws();
        if self.peek() == Some(b']') {
            self.pos += 1;
        } else {
            loop {
                self.ws();
                let before = out.len();
                if kept_any {
                    out.push(',');
                }
                if self.value(arena, items, out, depth, false)? {
                    kept_any = true;
                } else {
                    out.truncate(before);
                }
                self.ws();
                match self.peek() {
                    Some(b',') => self.pos += 1,
                    Some(b']') => {
                        self.pos += 1;
                        break;
                    }
                    _ => return self.err("expected ',' or ']' in an array"),
                }
            }
        }
        if kept_any || force {
            out.push(']');
            Ok(true)
        } else {
            out.truncate(mark);
            Ok(false)
        }
    }

    /// Skips one value, validating it. Iterative: any nesting depth costs no stack.
    /// `kept` also rejects numbers that do not fit an `f64` (they could not be read back).
    fn skip_value(&mut self, depth: usize, kept: bool) -> Result<(), Unparsed> {
        // For a kept value, the keys of each open object, to refuse duplicates.
        let mut key_sets: Vec<(usize, Option<HashSet<Cow<'a, str>>>)> = Vec::new();
        let mut open = std::mem::take(&mut self.open);
        open.clear();
        let result = self.skip_in(depth, kept, &mut open, &mut key_sets);
        self.open = open;
        result
    }

    fn skip_in(
        &mut self,
        depth: usize,
        kept: bool,
        open: &mut Vec<Container>,
        key_sets: &mut Vec<(usize, Option<HashSet<Cow<'a, str>>>)>,
    ) -> Result<(), Unparsed> {
        'value: loop {
            self.ws();
            match self.peek() {
                Some(b'{') => {
                    if depth + open.len() >= MAX_DEPTH {
                        return self.err("nested deeper than 100 levels");
                    }
                    self.pos += 1;
                    self.ws();
                    if self.peek() == Some(b'}') {
                        self.pos += 1;
                    } else {
                        open.push(Container::Object);
                        if kept {
                            key_sets.push((self.keys.len(), None));
                        }
                        self.skipped_key(kept, key_sets)?;
                        continue 'value;
                    }
                }
                Some(b'[') => {
                    if depth + open.len() >= MAX_DEPTH {
                        return self.err("nested deeper than 100 levels");
                    }
                    self.pos += 1;
                    self.ws();
                    if self.peek() == Some(b']') {
                        self.pos += 1;
                    } else {
                        open.push(Container::Array);
                        continue 'value;
                    }
                }
                Some(b'"') => {
                    self.string()?;
                }
                Some(b't') => self.literal(b"true")?,
                Some(b'f') => self.literal(b"false")?,
                Some(b'n') => self.literal(b"null")?,
                Some(b'-' | b'0'..=b'9') => self.number(kept)?,
                _ => return self.err("expected a JSON value"),
            }
            // After a value: close what ends here, or move on to the next element.
            loop {
                let Some(&container) = open.last() else {
                    return Ok(());
                };
                self.ws();
                match (self.peek(), container) {
                    (Some(b','), Container::Object) => {
                        self.pos += 1;
                        self.skipped_key(kept, key_sets)?;
                        continue 'value;
                    }
                    (Some(b','), Container::Array) => {
                        self.pos += 1;
                        continue 'value;
                    }
                    (Some(b'}'), Container::Object) => {
                        self.pos += 1;
                        open.pop();
                        if let Some((base, _)) = key_sets.pop() {
                            self.keys.truncate(base);
                        }
                    }
                    (Some(b']'), Container::Array) => {
                        self.pos += 1;
                        open.pop();
                    }
                    (_, Container::Object) => return self.err("expected ',' or '}' in an object"),
                    (_, Container::Array) => return self.err("expected ',' or ']' in an array"),
                }
            }
        }
    }

    /// A key and its colon, inside a skipped object; inside a kept one (`kept`), also
    /// checked against the object's other keys.
    fn skipped_key(
        &mut self,
        kept: bool,
        key_sets: &mut [(usize, Option<HashSet<Cow<'a, str>>>)],
    ) -> Result<(), Unparsed> {
        self.ws();
        if self.peek() != Some(b'"') {
            return self.err("expected a string key");
        }
        let start = self.pos;
        let escaped = self.string()?;
        if kept && let Some((base, many)) = key_sets.last_mut() {
            let raw = &self.text[start + 1..self.pos - 1];
            let key = if escaped {
                Cow::Owned(unescape(raw))
            } else {
                Cow::Borrowed(raw)
            };
            self.note_key(*base, many, key, start)?;
        }
        self.ws();
        self.expect(b':', "expected ':' after a key")
    }

    fn literal(&mut self, word: &'static [u8]) -> Result<(), Unparsed> {
        if self.b[self.pos..].starts_with(word) {
            self.pos += word.len();
            Ok(())
        } else {
            self.err("invalid literal")
        }
    }

    fn digits(&mut self) -> usize {
        let start = self.pos;
        while let Some(b'0'..=b'9') = self.peek() {
            self.pos += 1;
        }
        self.pos - start
    }

    fn number(&mut self, kept: bool) -> Result<(), Unparsed> {
        let start = self.pos;
        if self.peek() == Some(b'-') {
            self.pos += 1;
        }
        match self.peek() {
            Some(b'0') => self.pos += 1,
            Some(b'1'..=b'9') => {
                self.digits();
            }
            _ => return self.err("invalid number"),
        }
        if self.peek() == Some(b'.') {
            self.pos += 1;
            if self.digits() == 0 {
                return self.err("invalid number");
            }
        }
        if let Some(b'e' | b'E') = self.peek() {
            self.pos += 1;
            if let Some(b'+' | b'-') = self.peek() {
                self.pos += 1;
            }
            if self.digits() == 0 {
                return self.err("invalid number");
            }
        }
        if kept {
            let finite = self.text[start..self.pos]
                .parse::<f64>()
                .is_ok_and(f64::is_finite);
            if !finite {
                return Err(Unparsed::new("number out of range", start));
            }
        }
        Ok(())
    }

    /// A string, from its opening quote to just past its closing one. Returns whether it
    /// contains escapes.
    fn string(&mut self) -> Result<bool, Unparsed> {
        self.pos += 1; // '"'
        let mut escaped = false;
        loop {
            self.skip_plain_chars();
            match self.peek() {
                Some(b'"') => {
                    self.pos += 1;
                    return Ok(escaped);
                }
                Some(b'\\') => {
                    escaped = true;
                    self.escape()?;
                }
                Some(_) => return self.err("control character in a string"),
                None => return self.err("unterminated string"),
            }
        }
    }

    /// Moves to the next quote, backslash or control character (or the end), eight bytes at a
    /// time while none is in sight.
    fn skip_plain_chars(&mut self) {
        const ONES: u64 = 0x0101_0101_0101_0101;
        const HIGH: u64 = 0x8080_8080_8080_8080;
        // Bytes that are zero in `v` set their high bit: exactly for the lowest one, with rare
        // false positives only above it.
        let zero = |v: u64| v.wrapping_sub(ONES) & !v & HIGH;
        loop {
            let Some(chunk) = self.b.get(self.pos..self.pos + 8) else {
                while let Some(&c) = self.b.get(self.pos) {
                    if STRING_STOP[c as usize] {
                        return;
                    }
                    self.pos += 1;
                }
                return;
            };
            let mut word = [0u8; 8];
            word.copy_from_slice(chunk);
            let w = u64::from_le_bytes(word);
            let special = zero(w ^ (ONES * u64::from(b'"')))
                | zero(w ^ (ONES * u64::from(b'\\')))
                | (w.wrapping_sub(ONES * 0x20) & !w & HIGH);
            if special != 0 {
                // The lowest flagged byte is exact (false positives only ever sit above a
                // true match).
                self.pos += (special.trailing_zeros() / 8) as usize;
                return;
            }
            self.pos += 8;
        }
    }

    fn escape(&mut self) -> Result<(), Unparsed> {
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
                    return self.err("lone surrogate in a string escape");
                }
                if (0xD800..0xDC00).contains(&unit) {
                    if !self.b[self.pos..].starts_with(b"\\u") {
                        return self.err("lone surrogate in a string escape");
                    }
                    self.pos += 2;
                    let low = self.hex4()?;
                    if !(0xDC00..0xE000).contains(&low) {
                        return self.err("lone surrogate in a string escape");
                    }
                }
                Ok(())
            }
            _ => self.err("invalid escape in a string"),
        }
    }

    fn hex4(&mut self) -> Result<u32, Unparsed> {
        let Some(hex) = self.b.get(self.pos..self.pos + 4) else {
            return self.err("invalid \\u escape");
        };
        let mut value = 0u32;
        for &h in hex {
            let digit = (h as char).to_digit(16);
            let Some(digit) = digit else {
                return self.err("invalid \\u escape");
            };
            value = value * 16 + digit;
        }
        self.pos += 4;
        Ok(value)
    }
}

/// The text of a validated string body with escapes resolved.
fn unescape(raw: &str) -> String {
    // The scanner validated the escapes, so serde_json cannot fail here.
    serde_json::from_str::<String>(&format!("\"{raw}\"")).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::super::plan::{DROP, KEEP, PlanArena};
    use super::*;

    /// `{name, enabled, filters{services[], zones[]}, mechanisms{...}}` with the alerting
    /// policy's markings.
    fn policy_plan() -> (PlanArena, NodeId) {
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

    fn run(body: &str) -> Result<String, Unparsed> {
        let (arena, root) = policy_plan();
        redact(&arena, root, body.as_bytes())
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
    fn empty_containers_are_omitted_but_the_root_stays() {
        assert_eq!(
            run(r#"{"secret":"x","filters":{"other":1}}"#).unwrap(),
            "{}"
        );
        assert_eq!(run("[]").unwrap(), "[]");
    }

    #[test]
    fn values_of_the_wrong_shape_are_dropped() {
        assert_eq!(
            run(r#"{"filters":"s3cr3t","mechanisms":[1]}"#).unwrap(),
            "{}"
        );
    }

    #[test]
    fn escaped_keys_are_matched_by_their_meaning() {
        assert_eq!(run(r#"{"n\u0061me":"x"}"#).unwrap(), r#"{"n\u0061me":"x"}"#);
        let err = run(r#"{"name":"x","n\u0061me":"y"}"#).unwrap_err();
        assert_eq!(err.reason(), "duplicate key in an object");
    }

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
    fn huge_numbers_in_dropped_fields_do_not_matter() {
        assert_eq!(
            run(r#"{"secret":1e999,"name":123456789012345678901234567890}"#).unwrap(),
            r#"{"name":123456789012345678901234567890}"#
        );
    }

    #[test]
    fn deep_nesting_is_refused_without_exhausting_the_stack() {
        for (open, close) in [("[", "]"), ("{\"secret\":", "}"), ("{\"filters\":", "}")] {
            let body = format!(
                "{{\"secret\":{}1{}}}",
                open.repeat(10_000),
                close.repeat(10_000)
            );
            assert_eq!(
                run(&body).unwrap_err().reason(),
                "nested deeper than 100 levels"
            );
        }
        let within = format!("{{\"secret\":{}1{}}}", "[".repeat(90), "]".repeat(90));
        assert_eq!(run(&within).unwrap(), "{}");
    }

    #[test]
    fn objects_with_many_keys_still_catch_duplicates() {
        let mut body: String = (0..1000).map(|i| format!("\"k{i}\":{i},")).collect();
        body = format!("{{{body}\"k500\":1}}");
        assert_eq!(
            run(&body).unwrap_err().reason(),
            "duplicate key in an object"
        );
        let unique: String = (0..1000)
            .map(|i| format!("\"k{i}\":{i}"))
            .collect::<Vec<_>>()
            .join(",");
        assert_eq!(
            run(&format!("{{{unique},\"name\":\"n\"}}")).unwrap(),
            r#"{"name":"n"}"#
        );
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
