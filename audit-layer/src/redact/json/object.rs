//! Objects walked by their plan: each member's key looked up among the declared properties and
//! checked for duplicates, its value dropped, kept, or walked, kept members written as runs of
//! the body.

use std::borrow::Cow;

use super::super::plan::{DROP, KeyWords, Node, NodeId, Props, types};
use super::duplicate_keys::ObjectKeys;
use super::stops::next_stop;
use super::strings::unescape;
use super::unparsed::{
    DUPLICATE_KEY, EXPECTED_COLON, EXPECTED_KEY, OBJECT_DELIMITER, Scan, TOO_DEEP,
};
use super::{MAX_DEPTH, Scanner};
use super::{is_ws, skip_ws};

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
                            return Err(self.fail(EXPECTED_COLON));
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
