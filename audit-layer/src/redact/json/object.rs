//! Objects walked by their plan: each member's key looked up among the declared properties and
//! checked for duplicates, its value dropped, kept, or walked, kept members written as runs of
//! the body.

use std::borrow::Cow;

use super::super::plan::{DROP, KeyWords, Node, NodeId, Props, TypeMask, types};
use super::duplicate_keys::ObjectKeys;
use super::stops::next_stop;
use super::strings::unescape;
use super::unparsed::{
    DUPLICATE_KEY, EXPECTED_COLON, EXPECTED_KEY, OBJECT_DELIMITER, Scan, TOO_DEEP,
};
use super::{MAX_DEPTH, Scanner, is_ws, skip_ws};

impl<'a> Scanner<'a> {
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
            return Err(self.fail_at(DUPLICATE_KEY, key_start));
        }
        Ok(found.map_or(additional, |index| props.node(index)))
    }

    /// Walks the object at the cursor, `depth` levels deep: each declared key by its own plan,
    /// every other by `additional`. Returns whether it wrote anything; `force` writes it even
    /// if it keeps nothing.
    pub(super) fn object(
        &mut self,
        props: &Props,
        additional: NodeId,
        depth: usize,
        force: bool,
    ) -> Scan<bool> {
        if depth > MAX_DEPTH {
            return Err(self.fail(TOO_DEEP));
        }
        // The body, its stops and the cursor are kept in locals (and handed to the member
        // helpers), and the cursor is stored back only before a call that reads it: the loop
        // then runs in registers. Delimiters are written as copies of the body's own, so that
        // kept members next to each other extend one run of output.
        //
        // The opening, the delimiters and the closing are done here, not by the
        // `open_container`, `delimiter` and `close_container` that arrays share: through them
        // the redact_1kb bench ran 9,496 instructions per call instead of 9,161 (callgrind,
        // 2026-12-06, BENCHMARKS.md), the object loop's registers allocated worse.
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
                let (child, member) =
                    self.member(b, stops, comma, pos, props, additional, &mut seen)?;
                pos = if child == DROP {
                    self.dropped_member(b, stops, &member, depth)?
                } else if let Node::Keep(mask) = self.arena.get(child) {
                    self.kept_member(b, stops, &member, *mask, depth, &mut kept_any)?
                } else {
                    self.walked_member(&member, child, depth, &mut kept_any)?
                };
                // A comma or the closing brace, whitespace first only if there is any.
                let delimiter = loop {
                    match b.get(pos) {
                        Some(&delimiter @ (b',' | b'}')) => break delimiter,
                        Some(&byte) if is_ws(byte) => pos = skip_ws(b, pos),
                        _ => {
                            self.pos = pos;
                            return Err(self.fail(OBJECT_DELIMITER));
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

    /// A member's key, at or after `pos` (past whitespace), and its colon: the key checked
    /// against the object's other keys (`seen`) and looked up among its declared properties.
    /// Returns the plan of the member's value and where its parts stand, `comma` being the
    /// comma before it.
    // The body and its stops are passed in rather than read from `self`: read there, they
    // are loaded again for every member (an earlier cut of these helpers: 9,400 against 9,228
    // instructions per call of redact_1kb, callgrind, 2026-12-06).
    #[inline(always)]
    #[expect(
        clippy::too_many_arguments,
        reason = "the body and its stops come in as arguments, as said above"
    )]
    fn member(
        &mut self,
        b: &'a [u8],
        stops: &[u64],
        comma: usize,
        mut pos: usize,
        props: &Props,
        additional: NodeId,
        seen: &mut ObjectKeys<'a>,
    ) -> Scan<(NodeId, Member)> {
        if b.get(pos) != Some(&b'"') {
            pos = skip_ws(b, pos);
            if b.get(pos) != Some(&b'"') {
                self.pos = pos;
                return Err(self.fail(EXPECTED_KEY));
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
                return Err(self.fail_at(DUPLICATE_KEY, key_start));
            }
            found.map_or(additional, |(_, node)| node)
        } else {
            // An escape, or a string that is not one: read by the general path.
            self.pos = key_start;
            self.string()?;
            pos = self.pos;
            self.escaped_key(props, additional, seen, key_start)?
        };
        let key_end = pos;
        // The most common spelling, `"key":"string"`, in one test: the colon right after the
        // key and the value's quote right after it.
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
                    return Err(self.fail(EXPECTED_COLON));
                }
                colon
            };
            (colon, skip_ws(b, colon + 1))
        };
        let member = Member {
            comma,
            key_start,
            key_end,
            colon,
            value,
            tight_string,
        };
        Ok((child, member))
    }

    /// Skips the value of a member the plan drops; returns the position after it. A plain
    /// string, the most common dropped value, is skipped in place; anything else by the
    /// general skipper.
    #[inline(always)]
    fn dropped_member(
        &mut self,
        b: &[u8],
        stops: &[u64],
        member: &Member,
        depth: usize,
    ) -> Scan<usize> {
        let value = member.value;
        let close = if member.value_is_string(b) {
            next_stop(stops, b.len(), value + 1)
        } else {
            value
        };
        if close > value && b.get(close) == Some(&b'"') {
            Ok(close + 1)
        } else {
            self.pos = value;
            self.skip_value(depth, false)?;
            Ok(self.pos)
        }
    }

    /// Reads the value of a member kept whole if of the `mask` types, and writes the member if
    /// it is; returns the position after it. Read first, written only if kept: nothing to take
    /// back.
    #[inline(always)]
    fn kept_member(
        &mut self,
        b: &[u8],
        stops: &[u64],
        member: &Member,
        mask: TypeMask,
        depth: usize,
        kept_any: &mut bool,
    ) -> Scan<usize> {
        let value = member.value;
        let (keep, end) = if member.value_is_string(b) {
            let close = next_stop(stops, b.len(), value + 1);
            let end = if b.get(close) == Some(&b'"') {
                close + 1
            } else {
                self.pos = value;
                self.string()?;
                self.pos
            };
            (mask & types::STRING != 0, end)
        } else {
            self.pos = value;
            let keep = self.keep_scan(mask, depth)?;
            (keep, self.pos)
        };
        if keep {
            if member.is_one_piece(*kept_any) {
                // `,"key":value` (or without the comma) as one piece of the body.
                let start = if *kept_any {
                    member.comma
                } else {
                    member.key_start
                };
                self.out.copy(start, end);
            } else {
                let comma = kept_any.then_some(member.comma);
                self.out.pieces(
                    comma,
                    member.key_start..member.key_end,
                    member.colon,
                    value..end,
                );
            }
            *kept_any = true;
        }
        Ok(end)
    }

    /// Walks the value of a member by its plan `child`, an object or an array: the comma, the
    /// key and the colon are written first, and taken back if the value keeps nothing.
    /// Returns the position after the value.
    #[inline(always)]
    fn walked_member(
        &mut self,
        member: &Member,
        child: NodeId,
        depth: usize,
        kept_any: &mut bool,
    ) -> Scan<usize> {
        if *kept_any {
            self.out.copy(member.comma, member.comma + 1);
        }
        self.out.copy(member.key_start, member.key_end);
        self.out.copy(member.colon, member.colon + 1);
        self.pos = member.value;
        if self.value(child, depth, false)? {
            *kept_any = true;
        } else {
            // The value wrote nothing (or took it back): take back the comma, the key and the
            // colon.
            let written = usize::from(*kept_any) + (member.key_end - member.key_start) + 1;
            self.out.truncate(self.out.len() - written);
        }
        Ok(self.pos)
    }
}

/// Where the parts of one member of an object stand in the body.
struct Member {
    /// The comma before the member, or the object's opening brace before its first.
    comma: usize,
    /// The key's opening quote.
    key_start: usize,
    /// Just past the key's closing quote.
    key_end: usize,
    colon: usize,
    /// The first byte of the value.
    value: usize,
    /// Spelled `"key":"…`: the colon right after the key, the value's quote right after it.
    tight_string: bool,
}

impl Member {
    /// Whether the value starts with a quote.
    #[inline(always)]
    fn value_is_string(&self, body: &[u8]) -> bool {
        self.tight_string || body.get(self.value) == Some(&b'"')
    }

    /// Whether the member, with its comma unless it is the first kept (`!kept_any`), is
    /// spelled without whitespace: then it is written as one piece of the body.
    #[inline(always)]
    fn is_one_piece(&self, kept_any: bool) -> bool {
        (!kept_any || self.comma + 1 == self.key_start)
            && (self.tight_string || self.key_end == self.colon && self.colon + 1 == self.value)
    }
}

#[cfg(test)]
mod tests {
    use super::super::super::plan::{DROP, KEEP, PlanArena};
    use super::super::redact;
    use super::super::tests::run;

    #[test]
    fn escaped_keys_are_matched_by_their_meaning() {
        assert_eq!(run(r#"{"n\u0061me":"x"}"#).unwrap(), r#"{"n\u0061me":"x"}"#);
        let err = run(r#"{"name":"x","n\u0061me":"y"}"#).unwrap_err();
        assert_eq!(err.reason(), "duplicate key in an object");
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
}
