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

use wide::u8x16;

use super::plan::{DROP, KeyWords, Node, NodeId, PlanArena, Props, TypeMask, types};

/// The deepest nesting accepted: below serde_json's limit of 128, so a kept value can always be
/// read back.
pub(crate) const MAX_DEPTH: usize = 100;

/// Bodies up to 64 × this many bytes keep their [`string_stops`] on the stack.
const STACK_STOP_WORDS: usize = 64;

/// Bodies up to 64 × this many bytes (1 KiB) keep them in a smaller array, so that the
/// common small body does not clear the whole stack array first.
const SMALL_STOP_WORDS: usize = 16;

/// Objects with more undeclared keys than this switch duplicate detection from a scan to a hash
/// set.
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
    // Validated whole, up front: the scanner then only looks for JSON's own delimiters, and any
    // slice of the body between them is text. The basic check, which only says whether, is the
    // faster; the compat one then says where.
    let text = match simdutf8::basic::from_utf8(body) {
        Ok(text) => text,
        Err(_) => simdutf8::compat::from_utf8(body)
            .map_err(|e| Unparsed::new("invalid UTF-8", e.valid_up_to()))?,
    };
    let words = body.len().div_ceil(64);
    let mut small = [0u64; SMALL_STOP_WORDS];
    let mut on_stack: [u64; STACK_STOP_WORDS];
    let mut on_heap: Vec<u64>;
    let stops = if words <= SMALL_STOP_WORDS {
        &mut small[..words]
    } else if words <= STACK_STOP_WORDS {
        on_stack = [0; STACK_STOP_WORDS];
        &mut on_stack[..words]
    } else {
        on_heap = vec![0; words];
        &mut on_heap[..]
    };
    string_stops(body, stops);
    let mut scanner = Scanner {
        b: body,
        stops,
        pos: 0,
        arena,
        out: Output {
            body: text,
            // Never longer than the body, but for a root written as `{}`.
            text: String::with_capacity(body.len().max(2)),
            start: 0,
            end: 0,
        },
        keys: Vec::new(),
        kept_objects: Vec::new(),
        failure: Unparsed::new("expected a JSON value", 0),
    };
    match scanner.root(root) {
        Ok(()) => Ok(scanner.out.finish()),
        Err(Stop) => Err(scanner.failure),
    }
}

/// Checks that `body` is one valid JSON value, as [`redact`] would.
#[cfg(test)]
pub(crate) fn validate(body: &[u8]) -> Result<(), Unparsed> {
    redact(&PlanArena::default(), DROP, body).map(drop)
}

/// The scan failed; why and where is in [`Scanner::failure`]. A unit, so that the scanner's
/// results travel in registers.
struct Stop;

type Scan<T> = Result<T, Stop>;

struct Scanner<'a> {
    b: &'a [u8],
    /// One bit per byte of the body (bit `i % 64` of word `i / 64`), set where a string's
    /// plain run ends: a quote, a backslash, a control character. See [`string_stops`].
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

/// The kept text being built: what has been written, followed by a run of the body not yet
/// copied. Kept values mostly sit next to each other in the body, so most appends only move
/// the end of the run, and the text is copied in a few long pieces.
struct Output<'a> {
    body: &'a str,
    text: String,
    /// The pending run, `body[start..end]`.
    start: usize,
    end: usize,
}

impl Output<'_> {
    /// The length of the output so far.
    #[inline]
    fn len(&self) -> usize {
        self.text.len() + (self.end - self.start)
    }

    /// Appends `body[start..end]`.
    #[inline]
    fn copy(&mut self, start: usize, end: usize) {
        if start != self.end {
            self.flush();
            self.start = start;
        }
        self.end = end;
    }

    /// Appends a member spelled with whitespace: the comma at `comma` if any, the key, the
    /// colon at `colon` and the value, each copied from the body.
    #[cold]
    #[inline(never)]
    fn pieces(
        &mut self,
        comma: Option<usize>,
        key: std::ops::Range<usize>,
        colon: usize,
        value: std::ops::Range<usize>,
    ) {
        if let Some(comma) = comma {
            self.copy(comma, comma + 1);
        }
        self.copy(key.start, key.end);
        self.copy(colon, colon + 1);
        self.copy(value.start, value.end);
    }

    /// Cuts the output back to an earlier length.
    #[inline]
    fn truncate(&mut self, len: usize) {
        match len.checked_sub(self.text.len()) {
            Some(run) => self.end = self.start + run,
            None => {
                self.text.truncate(len);
                self.start = self.end;
            }
        }
    }

    #[inline(never)]
    fn flush(&mut self) {
        if self.start != self.end {
            self.text.push_str(&self.body[self.start..self.end]);
            self.start = self.end;
        }
    }

    fn finish(mut self) -> String {
        self.flush();
        self.text
    }
}

/// The keys an object the plan reads has shown so far, to refuse a duplicate.
struct ObjectKeys<'a> {
    /// Declared keys, one bit per property index (the first 64).
    declared: u64,
    /// The other keys, from the first one on: most objects have none, and set up nothing.
    others: Option<KeySet<'a>>,
}

impl<'a> ObjectKeys<'a> {
    #[inline(always)]
    fn new() -> Self {
        Self {
            declared: 0,
            others: None,
        }
    }

    /// Records declared property `index`; false if the object already had it.
    #[inline(always)]
    fn note_declared(
        &mut self,
        keys: &mut Vec<Cow<'a, [u8]>>,
        index: usize,
        key: impl FnOnce() -> Cow<'a, [u8]>,
    ) -> bool {
        if index < 64 {
            let bit = 1u64 << index;
            let fresh = self.declared & bit == 0;
            self.declared |= bit;
            fresh
        } else {
            // Beyond the first 64 properties: compared as text, like undeclared keys.
            self.note(keys, key())
        }
    }

    /// Records `key`, which no declared property of the object matches; false if the object
    /// already had it. The object's keys on the key stack start where it stands at the first
    /// one: every value before it has taken its own keys off again.
    #[inline]
    fn note(&mut self, keys: &mut Vec<Cow<'a, [u8]>>, key: Cow<'a, [u8]>) -> bool {
        self.others
            .get_or_insert_with(|| KeySet::new(keys.len()))
            .note(keys, key)
    }

    /// Where the object's keys start on the key stack, if it has put any there.
    #[inline(always)]
    fn base(&self) -> Option<usize> {
        self.others.as_ref().map(|others| others.base)
    }
}

/// The undeclared keys one object has shown so far, to refuse a duplicate.
struct KeySet<'a> {
    /// The first other keys spelled without escapes, in place in the body: most objects
    /// have few undeclared keys, and these need no allocation.
    few: [Option<&'a [u8]>; FEW_KEYS],
    few_len: usize,
    /// Where the object's further other keys start on the scanner's key stack.
    base: usize,
    /// All the other keys, once there are more than [`LINEAR_KEY_CHECK`].
    many: Option<HashSet<Cow<'a, [u8]>>>,
}

/// How many undeclared keys a [`KeySet`] holds without the key stack.
const FEW_KEYS: usize = 4;

impl<'a> KeySet<'a> {
    #[inline]
    fn new(base: usize) -> Self {
        Self {
            few: [None; FEW_KEYS],
            few_len: 0,
            base,
            many: None,
        }
    }

    /// Records `key`, which no declared property of the object matches; false if the object
    /// already had it.
    #[inline(never)]
    fn note(&mut self, keys: &mut Vec<Cow<'a, [u8]>>, key: Cow<'a, [u8]>) -> bool {
        // The common case: a key in place, while the object has had only a few, all of them
        // in place too.
        if let Cow::Borrowed(key) = key
            && self.few_len < FEW_KEYS
            && keys.len() == self.base
            && self.many.is_none()
        {
            let same = |k: &[u8]| k.len() == key.len() && k.iter().eq(key.iter());
            if self.few[..self.few_len].iter().flatten().any(|k| same(k)) {
                return false;
            }
            self.few[self.few_len] = Some(key);
            self.few_len += 1;
            return true;
        }
        self.note_more(keys, key)
    }

    /// [`note`](Self::note) past the first few keys in place.
    #[inline(never)]
    fn note_more(&mut self, keys: &mut Vec<Cow<'a, [u8]>>, key: Cow<'a, [u8]>) -> bool {
        if let Some(set) = &mut self.many {
            return set.insert(key);
        }
        // Keys are short: compared byte by byte once the lengths agree, without a call.
        let same = |k: &[u8]| k.len() == key.len() && k.iter().eq(key.iter());
        if self.few.iter().flatten().any(|k| same(k)) || keys[self.base..].iter().any(|k| same(k)) {
            return false;
        }
        match key {
            Cow::Borrowed(key) if self.few_len < FEW_KEYS => {
                self.few[self.few_len] = Some(key);
                self.few_len += 1;
            }
            key => {
                keys.push(key);
                if keys.len() - self.base + self.few_len > LINEAR_KEY_CHECK {
                    let mut set: HashSet<Cow<'a, [u8]>> = keys.drain(self.base..).collect();
                    set.extend(self.few.iter().flatten().map(|k| Cow::Borrowed(*k)));
                    self.many = Some(set);
                }
            }
        }
        true
    }
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

/// The first string stop (see [`string_stops`]) at or after `pos`, or `len`, the body's length.
#[inline(always)]
fn next_stop(stops: &[u64], len: usize, pos: usize) -> usize {
    let mut word = pos / 64;
    let Some(&first) = stops.get(word) else {
        return len;
    };
    let bits = first >> (pos % 64);
    if bits != 0 {
        return pos + bits.trailing_zeros() as usize;
    }
    loop {
        word += 1;
        match stops.get(word) {
            Some(&0) => {}
            Some(&bits) => return word * 64 + bits.trailing_zeros() as usize,
            None => return len,
        }
    }
}

/// Marks, one bit per byte of `body`, the bytes that end a plain run inside a string: the
/// quote, the backslash, and control characters (below 0x20), 64 bytes at a time, so that a
/// string is then scanned by counting zeros.
fn string_stops(body: &[u8], stops: &mut [u64]) {
    let (blocks, rest) = body.as_chunks::<64>();
    for (block, bits) in blocks.iter().zip(stops.iter_mut()) {
        *bits = block_stops(block);
    }
    if !rest.is_empty() {
        // The tail, padded with spaces (no stop) to a whole block.
        let mut block = [b' '; 64];
        block[..rest.len()].copy_from_slice(rest);
        if let Some(bits) = stops.get_mut(blocks.len()) {
            *bits = block_stops(&block);
        }
    }
}

/// The string stops of 64 bytes, bit `i` for byte `i`: per 16 bytes, a flip, a minimum and a
/// compare for the quote and the control characters, a compare for the backslash, and a
/// movemask.
#[inline(always)]
fn block_stops(block: &[u8; 64]) -> u64 {
    // `b ^ 2` is at most 0x20 exactly for the control characters (0x00..=0x1F, which the
    // flip keeps below 0x20) and the quote (0x22 becomes 0x20): one test for both.
    let flip = u8x16::splat(0x02);
    let space = u8x16::splat(0x20);
    let backslash = u8x16::splat(b'\\');
    let (lanes, _) = block.as_chunks::<16>();
    let mut mask = 0u64;
    for (i, lane) in lanes.iter().enumerate() {
        let v = u8x16::new(*lane);
        let flipped = v ^ flip;
        let special = flipped.min(space).simd_eq(flipped) | v.simd_eq(backslash);
        mask |= u64::from(special.to_bitmask()) << (16 * i);
    }
    mask
}

impl<'a> Scanner<'a> {
    /// The whole body: one object or array, and nothing after it but whitespace.
    fn root(&mut self, root: NodeId) -> Scan<()> {
        self.ws();
        let open = match self.peek() {
            Some(open @ (b'{' | b'[')) => open,
            Some(_) => return Err(self.fail("the body is not a JSON object or array")),
            None => return Err(self.fail("the body is empty")),
        };
        // A root that keeps nothing is still read as a container, so that its own keys are
        // checked for duplicates.
        let wrote = match (self.arena.get(root), open) {
            (Node::Drop, b'{') => self.object(&Props::new(Vec::new()), DROP, 1, true)?,
            _ => self.value(root, 0, true)?,
        };
        if !wrote {
            // The root keeps nothing, or is not the declared shape: still say a body came.
            self.out.truncate(0);
            self.out
                .text
                .push_str(if open == b'{' { "{}" } else { "[]" });
        }
        self.ws();
        if self.pos != self.b.len() {
            return Err(self.fail("trailing characters after the JSON value"));
        }
        Ok(())
    }

    #[inline(always)]
    fn peek(&self) -> Option<u8> {
        self.b.get(self.pos).copied()
    }

    /// Records why the scan stops here.
    #[cold]
    #[inline(never)]
    fn fail(&mut self, reason: &'static str) -> Stop {
        self.fail_at(reason, self.pos)
    }

    #[cold]
    #[inline(never)]
    fn fail_at(&mut self, reason: &'static str, at: usize) -> Stop {
        self.failure = Unparsed::new(reason, at);
        Stop
    }

    #[inline(always)]
    fn ws(&mut self) {
        while let Some(b' ' | b'\n' | b'\r' | b'\t') = self.peek() {
            self.pos += 1;
        }
    }

    #[inline(always)]
    fn expect(&mut self, byte: u8, reason: &'static str) -> Scan<()> {
        if self.peek() == Some(byte) {
            self.pos += 1;
            Ok(())
        } else {
            Err(self.fail(reason))
        }
    }

    /// Walks one value by plan `node`, appending what it keeps to the output. Returns whether
    /// it appended anything; `force` keeps an empty container (the root). Inlined into its
    /// callers, so that a container recurses straight into the next.
    #[inline(always)]
    fn value(&mut self, node: NodeId, depth: usize, force: bool) -> Scan<bool> {
        let arena = self.arena;
        match arena.get(node) {
            Node::Drop => {
                self.skip_value(depth, false)?;
                Ok(false)
            }
            Node::Keep(mask) => self.keep(*mask, depth),
            Node::Object { props, additional } => {
                // A marked map of scalars is kept whole: even empty or null (it was cleared).
                let whole = props.is_empty() && matches!(arena.get(*additional), Node::Keep(_));
                if self.peek() != Some(b'{') {
                    // Not the declared shape: nothing of it is kept.
                    return self.keep_null_or_skip(whole, depth);
                }
                let cleared = whole && self.is_empty_container();
                self.object(props, *additional, depth + 1, force || cleared)
            }
            Node::Array { items } => {
                // A marked array of scalars is kept whole: even empty or null (it was cleared).
                let whole = matches!(arena.get(*items), Node::Keep(_));
                if self.peek() != Some(b'[') {
                    return self.keep_null_or_skip(whole, depth);
                }
                let cleared = whole && self.is_empty_container();
                self.array(*items, depth + 1, force || cleared)
            }
        }
    }

    /// A value kept whole if its type is in `mask`, and otherwise skipped.
    #[inline]
    fn keep(&mut self, mask: u8, depth: usize) -> Scan<bool> {
        let start = self.pos;
        let keep = self.keep_scan(mask, depth)?;
        if keep {
            self.out.copy(start, self.pos);
        }
        Ok(keep)
    }

    /// Reads a value by a [`Node::Keep`] plan; returns whether it is to be kept (it is not
    /// written).
    #[inline(never)]
    fn keep_scan(&mut self, mask: u8, depth: usize) -> Scan<bool> {
        // The value's type, as the bits of a mask that keep it.
        let kind = match self.peek() {
            Some(b'"') => {
                self.string()?;
                types::STRING
            }
            Some(b'-' | b'0'..=b'9') => {
                let numeric = mask & (types::NUMBER | types::INTEGER) != 0;
                if self.number(numeric)? {
                    types::NUMBER | types::INTEGER
                } else {
                    types::NUMBER
                }
            }
            Some(b't') => {
                self.literal(b"true")?;
                types::BOOLEAN
            }
            Some(b'f') => {
                self.literal(b"false")?;
                types::BOOLEAN
            }
            Some(b'n') => {
                self.literal(b"null")?;
                types::NULL
            }
            Some(b'{') => {
                self.skip_value(depth, mask & types::OBJECT != 0)?;
                types::OBJECT
            }
            Some(b'[') => {
                self.skip_value(depth, mask & types::ARRAY != 0)?;
                types::ARRAY
            }
            _ => return Err(self.fail("expected a JSON value")),
        };
        Ok(mask & kind != 0)
    }

    /// Whether the container opening at the cursor is empty (`{}`, `[ ]`).
    #[inline(always)]
    fn is_empty_container(&self) -> bool {
        let close = if self.b[self.pos] == b'{' { b'}' } else { b']' };
        self.b.get(skip_ws(self.b, self.pos + 1)) == Some(&close)
    }

    /// A value that is not the container the plan expects: kept only if it is `null` and the
    /// container would have been kept whole; otherwise skipped.
    fn keep_null_or_skip(&mut self, whole: bool, depth: usize) -> Scan<bool> {
        if whole && self.b[self.pos..].starts_with(b"null") {
            self.out.copy(self.pos, self.pos + 4);
            self.pos += 4;
            return Ok(true);
        }
        self.skip_value(depth, false)?;
        Ok(false)
    }

    /// The key at the cursor (which is on its opening quote), by meaning: borrowed from the
    /// body, or with its escapes resolved. The cursor ends just past the closing quote.
    #[inline]
    fn key(&mut self) -> Scan<Cow<'a, [u8]>> {
        let start = self.pos;
        let escaped = self.string()?;
        let b = self.b;
        Ok(if escaped {
            Cow::Owned(unescape(&b[start + 1..self.pos - 1]))
        } else {
            Cow::Borrowed(&b[start + 1..self.pos - 1])
        })
    }

    /// The plan for a key spelled with escapes (its cursor just past it), matched and checked
    /// for duplicates by its meaning.
    #[inline(never)]
    fn escaped_key(
        &mut self,
        props: &Props,
        additional: NodeId,
        seen: &mut ObjectKeys<'a>,
        key_start: usize,
    ) -> Scan<NodeId> {
        let key = unescape(&self.b[key_start + 1..self.pos - 1]);
        let found = props.find(&key);
        let fresh = match found {
            Some(index) => seen.note_declared(&mut self.keys, index, || Cow::Owned(key)),
            None => seen.note(&mut self.keys, Cow::Owned(key)),
        };
        if !fresh {
            return Err(self.fail_at("duplicate key in an object", key_start));
        }
        Ok(found.map_or(additional, |index| props.node(index)))
    }

    fn object(
        &mut self,
        props: &Props,
        additional: NodeId,
        depth: usize,
        force: bool,
    ) -> Scan<bool> {
        if depth > MAX_DEPTH {
            return Err(self.fail("nested deeper than 100 levels"));
        }
        // The body, its stops and the cursor are kept in locals, and the cursor is stored
        // back only before a call that reads it: the loop then runs in registers. Delimiters
        // are written as copies of the body's own, so that kept members next to each other
        // extend one run of output.
        let b = self.b;
        let stops = self.stops;
        let open = self.pos;
        self.out.copy(open, open + 1);
        let mut pos = skip_ws(b, open + 1);
        let mut kept_any = false;
        let mut seen = ObjectKeys::new();
        // Where the comma before the current member is (none before the first).
        let mut comma = open;
        if b.get(pos) != Some(&b'}') {
            loop {
                if b.get(pos) != Some(&b'"') {
                    pos = skip_ws(b, pos);
                    if b.get(pos) != Some(&b'"') {
                        self.pos = pos;
                        return Err(self.fail("expected a string key"));
                    }
                }
                let key_start = pos;
                let close = next_stop(stops, b.len(), key_start + 1);
                let child = if b.get(close) == Some(&b'"') {
                    // A key without escapes, read in place.
                    pos = close + 1;
                    let key = &b[key_start + 1..close];
                    let found = props.lookup(key, KeyWords::within(b, key_start + 1, key.len()));
                    let fresh = match found {
                        Some((index, _)) => {
                            seen.note_declared(&mut self.keys, index, || Cow::Borrowed(key))
                        }
                        None => seen.note(&mut self.keys, Cow::Borrowed(key)),
                    };
                    if !fresh {
                        return Err(self.fail_at("duplicate key in an object", key_start));
                    }
                    found.map_or(additional, |(_, node)| node)
                } else {
                    // An escape, or a string that is not one: read by the general path.
                    self.pos = key_start;
                    self.string()?;
                    pos = self.pos;
                    self.escaped_key(props, additional, &mut seen, key_start)?
                };
                let key_end = pos;
                // The most common spelling, `"key":"string"`, in one test: the colon right
                // after the key and the value's quote right after it.
                let tight_string = b.get(pos..pos + 2) == Some(b":\"");
                let (colon, value) = if tight_string {
                    (pos, pos + 1)
                } else {
                    let colon = if b.get(pos) == Some(&b':') {
                        pos
                    } else {
                        let colon = skip_ws(b, pos);
                        if b.get(colon) != Some(&b':') {
                            self.pos = colon;
                            return Err(self.fail("expected ':' after a key"));
                        }
                        colon
                    };
                    (colon, skip_ws(b, colon + 1))
                };
                if child == DROP {
                    // A dropped plain string, the most common dropped value, is skipped in
                    // place; anything else by the general skipper.
                    let close = if tight_string || b.get(value) == Some(&b'"') {
                        next_stop(stops, b.len(), value + 1)
                    } else {
                        value
                    };
                    if close > value && b.get(close) == Some(&b'"') {
                        pos = close + 1;
                    } else {
                        self.pos = value;
                        self.skip_value(depth, false)?;
                        pos = self.pos;
                    }
                } else if let Node::Keep(mask) = self.arena.get(child) {
                    // Read first, written only if kept: nothing to take back.
                    let keep = if tight_string || b.get(value) == Some(&b'"') {
                        let close = next_stop(stops, b.len(), value + 1);
                        if b.get(close) == Some(&b'"') {
                            pos = close + 1;
                        } else {
                            self.pos = value;
                            self.string()?;
                            pos = self.pos;
                        }
                        mask & types::STRING != 0
                    } else {
                        self.pos = value;
                        let keep = self.keep_scan(*mask, depth)?;
                        pos = self.pos;
                        keep
                    };
                    if keep {
                        if (!kept_any || comma + 1 == key_start)
                            && (tight_string || key_end == colon && colon + 1 == value)
                        {
                            // `,"key":value` (or without the comma) as one piece of the body.
                            self.out.copy(if kept_any { comma } else { key_start }, pos);
                        } else {
                            let comma = kept_any.then_some(comma);
                            self.out
                                .pieces(comma, key_start..key_end, colon, value..pos);
                        }
                        kept_any = true;
                    }
                } else {
                    if kept_any {
                        self.out.copy(comma, comma + 1);
                    }
                    self.out.copy(key_start, key_end);
                    self.out.copy(colon, colon + 1);
                    self.pos = value;
                    if self.value(child, depth, false)? {
                        kept_any = true;
                    } else {
                        // The value wrote nothing (or took it back): take back the comma,
                        // the key and the colon.
                        let written = usize::from(kept_any) + (key_end - key_start) + 1;
                        self.out.truncate(self.out.len() - written);
                    }
                    pos = self.pos;
                }
                // A comma or the closing brace, whitespace first only if there is any.
                let delimiter = loop {
                    match b.get(pos) {
                        Some(&delimiter @ (b',' | b'}')) => break delimiter,
                        Some(&byte) if is_ws(byte) => pos = skip_ws(b, pos),
                        _ => {
                            self.pos = pos;
                            return Err(self.fail("expected ',' or '}' in an object"));
                        }
                    }
                };
                if delimiter == b'}' {
                    break;
                }
                comma = pos;
                pos += 1;
            }
        }
        // `pos` is on the closing brace.
        self.pos = pos + 1;
        if let Some(base) = seen.base() {
            self.keys.truncate(base);
        }
        if kept_any || force {
            self.out.copy(pos, pos + 1);
            Ok(true)
        } else {
            // Nothing was kept: what the container wrote is its opening alone (each member
            // or item that kept nothing took its own text back).
            self.out.truncate(self.out.len() - 1);
            Ok(false)
        }
    }

    fn array(&mut self, items: NodeId, depth: usize, force: bool) -> Scan<bool> {
        if depth > MAX_DEPTH {
            return Err(self.fail("nested deeper than 100 levels"));
        }
        if let Node::Keep(mask) = self.arena.get(items) {
            return self.scalar_array(*mask, depth, force);
        }
        // As in `object`: the body and the cursor in locals, delimiters copied.
        let b = self.b;
        let open = self.pos;
        self.out.copy(open, open + 1);
        let mut pos = skip_ws(b, open + 1);
        let mut kept_any = false;
        let mut comma = open;
        if b.get(pos) != Some(&b']') {
            loop {
                self.pos = pos;
                if kept_any {
                    self.out.copy(comma, comma + 1);
                }
                if self.value(items, depth, false)? {
                    kept_any = true;
                } else if kept_any {
                    // The item wrote nothing (or took it back): take back the comma.
                    self.out.truncate(self.out.len() - 1);
                }
                pos = self.pos;
                let delimiter = loop {
                    match b.get(pos) {
                        Some(&delimiter @ (b',' | b']')) => break delimiter,
                        Some(&byte) if is_ws(byte) => pos = skip_ws(b, pos),
                        _ => {
                            self.pos = pos;
                            return Err(self.fail("expected ',' or ']' in an array"));
                        }
                    }
                };
                if delimiter == b']' {
                    break;
                }
                comma = pos;
                pos = skip_ws(b, pos + 1);
            }
        }
        // `pos` is on the closing bracket.
        self.pos = pos + 1;
        if kept_any || force {
            self.out.copy(pos, pos + 1);
            Ok(true)
        } else {
            // Nothing was kept: what the container wrote is its opening alone (each member
            // or item that kept nothing took its own text back).
            self.out.truncate(self.out.len() - 1);
            Ok(false)
        }
    }

    /// [`array`](Self::array) with items kept whole when of the `mask` types: a loop of its
    /// own, small, with plain strings read in place.
    fn scalar_array(&mut self, mask: TypeMask, depth: usize, force: bool) -> Scan<bool> {
        let b = self.b;
        let stops = self.stops;
        let open = self.pos;
        self.out.copy(open, open + 1);
        let mut pos = skip_ws(b, open + 1);
        let mut kept_any = false;
        let mut comma = open;
        if b.get(pos) != Some(&b']') {
            loop {
                let close = match b.get(pos) {
                    Some(b'"') => next_stop(stops, b.len(), pos + 1),
                    _ => pos,
                };
                let keep = if close > pos && b.get(close) == Some(&b'"') {
                    self.pos = close + 1;
                    mask & types::STRING != 0
                } else {
                    self.pos = pos;
                    self.keep_scan(mask, depth)?
                };
                if keep {
                    if kept_any && comma + 1 == pos {
                        self.out.copy(comma, self.pos);
                    } else {
                        if kept_any {
                            self.out.copy(comma, comma + 1);
                        }
                        self.out.copy(pos, self.pos);
                    }
                    kept_any = true;
                }
                pos = self.pos;
                let delimiter = loop {
                    match b.get(pos) {
                        Some(&delimiter @ (b',' | b']')) => break delimiter,
                        Some(&byte) if is_ws(byte) => pos = skip_ws(b, pos),
                        _ => {
                            self.pos = pos;
                            return Err(self.fail("expected ',' or ']' in an array"));
                        }
                    }
                };
                if delimiter == b']' {
                    break;
                }
                comma = pos;
                pos = skip_ws(b, pos + 1);
            }
        }
        // `pos` is on the closing bracket.
        self.pos = pos + 1;
        if kept_any || force {
            self.out.copy(pos, pos + 1);
            Ok(true)
        } else {
            // Nothing was kept: what the container wrote is its opening alone (each member
            // or item that kept nothing took its own text back).
            self.out.truncate(self.out.len() - 1);
            Ok(false)
        }
    }

    /// Skips one value, validating it. Iterative, with the open containers as a bit stack:
    /// any nesting costs no stack and no allocation. `kept` also rejects duplicate keys and
    /// numbers that do not fit an `f64` (the value could not be read back).
    fn skip_value(&mut self, depth: usize, kept: bool) -> Scan<()> {
        if !kept && let Some(end) = self.skip_flat(depth) {
            self.pos = end;
            return Ok(());
        }
        // One bit per open container, innermost lowest: 1 for an object. `MAX_DEPTH` keeps
        // `nesting` below 128.
        let mut open: u128 = 0;
        let mut nesting = 0usize;
        'value: loop {
            self.ws();
            match self.peek() {
                Some(b'"') => {
                    self.string()?;
                }
                Some(b'{') => {
                    if depth + nesting >= MAX_DEPTH {
                        return Err(self.fail("nested deeper than 100 levels"));
                    }
                    self.pos += 1;
                    self.ws();
                    if self.peek() == Some(b'}') {
                        self.pos += 1;
                    } else {
                        open = open << 1 | 1;
                        nesting += 1;
                        if kept {
                            self.kept_objects.push(KeySet::new(self.keys.len()));
                        }
                        self.skipped_key(kept)?;
                        continue 'value;
                    }
                }
                Some(b'[') => {
                    if depth + nesting >= MAX_DEPTH {
                        return Err(self.fail("nested deeper than 100 levels"));
                    }
                    self.pos += 1;
                    self.ws();
                    if self.peek() == Some(b']') {
                        self.pos += 1;
                    } else {
                        open <<= 1;
                        nesting += 1;
                        continue 'value;
                    }
                }
                Some(b't') => self.literal(b"true")?,
                Some(b'f') => self.literal(b"false")?,
                Some(b'n') => self.literal(b"null")?,
                Some(b'-' | b'0'..=b'9') => {
                    self.number(kept)?;
                }
                _ => return Err(self.fail("expected a JSON value")),
            }
            // After a value: close what ends here, or move on to the next element.
            while nesting > 0 {
                self.ws();
                let in_object = open & 1 == 1;
                match (self.peek(), in_object) {
                    (Some(b','), true) => {
                        self.pos += 1;
                        self.skipped_key(kept)?;
                        continue 'value;
                    }
                    (Some(b','), false) => {
                        self.pos += 1;
                        continue 'value;
                    }
                    (Some(b'}'), true) => {
                        self.pos += 1;
                        open >>= 1;
                        nesting -= 1;
                        if let Some(set) = self.kept_objects.pop() {
                            self.keys.truncate(set.base);
                        }
                    }
                    (Some(b']'), false) => {
                        self.pos += 1;
                        open >>= 1;
                        nesting -= 1;
                    }
                    (_, true) => return Err(self.fail("expected ',' or '}' in an object")),
                    (_, false) => return Err(self.fail("expected ',' or ']' in an array")),
                }
            }
            return Ok(());
        }
    }

    /// The end of the value at the cursor if it is written compactly as an array of plain
    /// strings or an object of plain string members (a list of selectors, a map of headers),
    /// read in place; `None` for anything else, which [`skip_value`](Self::skip_value) then
    /// reads from the start as before (a dropped value is only validated, so nothing is
    /// taken back).
    #[inline(always)]
    fn skip_flat(&self, depth: usize) -> Option<usize> {
        let b = self.b;
        let stops = self.stops;
        // One level deeper, as the general skipper counts it.
        if depth >= MAX_DEPTH {
            return None;
        }
        let mut pos = self.pos;
        let (object, close) = match b.get(pos) {
            Some(b'[') => (false, b']'),
            Some(b'{') => (true, b'}'),
            _ => return None,
        };
        pos += 1;
        loop {
            if b.get(pos) != Some(&b'"') {
                return None;
            }
            let end = next_stop(stops, b.len(), pos + 1);
            if b.get(end) != Some(&b'"') {
                return None;
            }
            pos = end + 1;
            if object {
                if b.get(pos..pos + 2) != Some(b":\"") {
                    return None;
                }
                let end = next_stop(stops, b.len(), pos + 2);
                if b.get(end) != Some(&b'"') {
                    return None;
                }
                pos = end + 1;
            }
            match b.get(pos) {
                Some(&byte) if byte == close => return Some(pos + 1),
                Some(b',') => pos += 1,
                _ => return None,
            }
        }
    }

    /// A key and its colon, inside a skipped object; inside a kept one (`kept`), also
    /// checked against the object's other keys.
    #[inline(always)]
    fn skipped_key(&mut self, kept: bool) -> Scan<()> {
        self.ws();
        if self.peek() != Some(b'"') {
            return Err(self.fail("expected a string key"));
        }
        let start = self.pos;
        if kept {
            let key = self.key()?;
            if let Some(set) = self.kept_objects.last_mut()
                && !set.note(&mut self.keys, key)
            {
                return Err(self.fail_at("duplicate key in an object", start));
            }
        } else {
            self.string()?;
        }
        self.ws();
        self.expect(b':', "expected ':' after a key")
    }

    #[inline]
    fn literal(&mut self, word: &'static [u8]) -> Scan<()> {
        if self.b[self.pos..].starts_with(word) {
            self.pos += word.len();
            Ok(())
        } else {
            Err(self.fail("invalid literal"))
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
    fn number(&mut self, kept: bool) -> Scan<bool> {
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
            _ => return Err(self.fail("invalid number")),
        };
        let mut integral = true;
        if self.peek() == Some(b'.') {
            self.pos += 1;
            if self.digits() == 0 {
                return Err(self.fail("invalid number"));
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
                return Err(self.fail("invalid number"));
            }
            integral = false;
            exponent = true;
        }
        // Without an exponent, fewer than 309 integer digits is below 1e308: always finite.
        if kept && (exponent || integer_digits > 308) && !is_finite(&self.b[start..self.pos]) {
            return Err(self.fail_at("number out of range", start));
        }
        Ok(integral)
    }

    /// A string, from its opening quote to just past its closing one. Returns whether it
    /// contains escapes.
    #[inline(always)]
    fn string(&mut self) -> Scan<bool> {
        let mut escaped = false;
        let mut pos = self.pos + 1;
        loop {
            pos = self.next_stop(pos);
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
                    return Err(self.fail("control character in a string"));
                }
                None => {
                    self.pos = pos;
                    return Err(self.fail("unterminated string"));
                }
            }
        }
    }

    /// The first string stop at or after `pos`, or the end of the body.
    #[inline(always)]
    fn next_stop(&self, pos: usize) -> usize {
        next_stop(self.stops, self.b.len(), pos)
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
                    return Err(self.fail("lone surrogate in a string escape"));
                }
                if (0xD800..0xDC00).contains(&unit) {
                    if !self.b[self.pos..].starts_with(b"\\u") {
                        return Err(self.fail("lone surrogate in a string escape"));
                    }
                    self.pos += 2;
                    let low = self.hex4()?;
                    if !(0xDC00..0xE000).contains(&low) {
                        return Err(self.fail("lone surrogate in a string escape"));
                    }
                }
                Ok(())
            }
            _ => Err(self.fail("invalid escape in a string")),
        }
    }

    fn hex4(&mut self) -> Scan<u32> {
        let Some(hex) = self.b.get(self.pos..self.pos + 4) else {
            return Err(self.fail("invalid \\u escape"));
        };
        let mut value = 0u32;
        for &h in hex {
            let Some(digit) = (h as char).to_digit(16) else {
                return Err(self.fail("invalid \\u escape"));
            };
            value = value * 16 + digit;
        }
        self.pos += 4;
        Ok(value)
    }
}

/// Whether a number (valid JSON grammar) fits an `f64`.
fn is_finite(number: &[u8]) -> bool {
    std::str::from_utf8(number)
        .ok()
        .and_then(|n| n.parse::<f64>().ok())
        .is_some_and(f64::is_finite)
}

/// The text of a validated string body with escapes resolved.
fn unescape(raw: &[u8]) -> Vec<u8> {
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
        run_bytes(body.as_bytes())
    }

    fn run_bytes(body: &[u8]) -> Result<String, Unparsed> {
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
    fn escaped_keys_match_declared_keys_and_count_as_duplicates() {
        let mut arena = PlanArena::default();
        let root = arena.object(vec![("password".into(), DROP), ("user".into(), KEEP)], DROP);
        let run = |body: &str| redact(&arena, root, body.as_bytes());
        assert_eq!(run(r#"{"\u0070assword":"s3cr3t"}"#).unwrap(), "{}");
        assert_eq!(
            run(r#"{"\u0075ser":"u","\u0070assword":"s3cr3t"}"#).unwrap(),
            r#"{"\u0075ser":"u"}"#
        );
        for body in [
            r#"{"password":"a","\u0070assword":"s3cr3t"}"#,
            r#"{"\u0070assword":"a","pass\u0077ord":"s3cr3t"}"#,
            r#"{"user":"a","us\u0065r":"b"}"#,
            r#"{"x\/y":1,"x/y":2}"#,
        ] {
            let err = run(body).unwrap_err();
            assert_eq!(err.reason(), "duplicate key in an object", "{body}");
        }
    }

    #[test]
    fn keys_alike_in_length_and_ends_are_told_apart() {
        // Same length and same first and last eight bytes: only the middle differs.
        let long_a = "prefix__AAAA_middle_a__suffix__";
        let long_b = "prefix__BBBB_middle_b__suffix__";
        let mut arena = PlanArena::default();
        let root = arena.object(
            vec![
                (long_a.into(), KEEP),
                (long_b.into(), DROP),
                ("ab".into(), KEEP),
                ("abcdefgh".into(), KEEP),
                ("abcdefghi".into(), DROP),
                ("".into(), KEEP),
            ],
            DROP,
        );
        let run = |body: &str| redact(&arena, root, body.as_bytes()).unwrap();
        let body = format!(
            r#"{{"{long_b}":"s3cr3t","{long_a}":1,"a":"s3cr3t","abc":"s3cr3t","abcdefghi":"s3cr3t","abcdefgh":2,"ab":3,"":4,"abcdefgi":"s3cr3t","\u0000":"s3cr3t"}}"#
        );
        assert_eq!(
            run(&body),
            format!(r#"{{"{long_a}":1,"abcdefgh":2,"ab":3,"":4}}"#)
        );
        let dup = format!(r#"{{"{long_a}":1,"{long_a}":2}}"#);
        assert_eq!(
            redact(&arena, root, dup.as_bytes()).unwrap_err().reason(),
            "duplicate key in an object"
        );
    }

    #[test]
    fn duplicates_are_found_beyond_the_first_64_declared_keys() {
        let mut arena = PlanArena::default();
        let props = (0..100)
            .map(|i| (format!("k{i:03}").into(), KEEP))
            .collect();
        let root = arena.object(props, DROP);
        for dup in ["k000", "k063", "k064", "k099"] {
            let body = format!(r#"{{"{dup}":1,"k050":2,"{dup}":3}}"#);
            let err = redact(&arena, root, body.as_bytes()).unwrap_err();
            assert_eq!(err.reason(), "duplicate key in an object", "{dup}");
        }
        assert_eq!(
            redact(&arena, root, br#"{"k099":1,"k064":2,"k000":3}"#).unwrap(),
            r#"{"k099":1,"k064":2,"k000":3}"#
        );
    }

    #[test]
    fn string_stops_mark_exactly_quotes_backslashes_and_control_bytes() {
        // Every byte value, at offsets in every 16-byte lane of a block, in whole blocks and
        // in a padded tail.
        for len in [64, 3 * 64 + 17, 5] {
            for byte in 0..=255u8 {
                let mut body = vec![b'a'; len];
                for at in (0..len).step_by(3) {
                    body[at] = byte;
                }
                let mut stops = vec![0u64; len.div_ceil(64)];
                string_stops(&body, &mut stops);
                for i in 0..stops.len() * 64 {
                    let marked = stops[i / 64] >> (i % 64) & 1 == 1;
                    let expected = body
                        .get(i)
                        .is_some_and(|&c| c == b'"' || c == b'\\' || c < 0x20);
                    assert_eq!(marked, expected, "byte {byte:#04x} at {i} of {len}");
                }
            }
        }
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

    #[test]
    fn kept_values_apart_in_the_body_are_joined_correctly() {
        assert_eq!(
            run(r#"{"secret":"s3cr3t","name":"n","undeclared":[1,{"a":"s3cr3t"}],"enabled":true}"#)
                .unwrap(),
            r#"{"name":"n","enabled":true}"#
        );
        assert_eq!(
            run("{\n  \"filters\" : { \"zones\" : [ \"z\" , \"y\" ] , \"other\":1 },\n  \"name\":\"n\"\n}")
                .unwrap(),
            r#"{"filters":{"zones":[ "z" , "y" ]},"name":"n"}"#
        );
        assert_eq!(
            run(r#"{"mechanisms":{"webhooks":[{"url":"s3cr3t"},{"id":"w2","url":"s3cr3t"},{"id":"w3"}]}}"#)
                .unwrap(),
            r#"{"mechanisms":{"webhooks":[{"id":"w2"},{"id":"w3"}]}}"#
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
