//! The walk driven by the plan: the root, each value dispatched by its plan node to be
//! dropped, kept whole, or walked as an object or an array, and what objects and arrays share:
//! how a container opens, finds the end of each member or item, and closes.

use super::super::plan::{DROP, Node, NodeId, Props, types};
use super::unparsed::{
    ARRAY_DELIMITER, EMPTY_BODY, EXPECTED_VALUE, NOT_A_CONTAINER, OBJECT_DELIMITER, Scan, TOO_DEEP,
    TRAILING,
};
use super::{MAX_DEPTH, Scanner, is_ws, skip_ws};

/// What ends a member of an object or an item of an array.
pub(super) enum Delimiter {
    /// A comma, at this position: another member or item follows.
    Comma(usize),
    /// The container's closing bracket, at this position.
    Close(usize),
}

impl Scanner<'_> {
    /// The whole body: one object or array, and nothing after it but whitespace.
    pub(super) fn root(&mut self, root: NodeId) -> Scan<()> {
        self.ws();
        let open = match self.peek() {
            Some(open @ (b'{' | b'[')) => open,
            Some(_) => return Err(self.fail(NOT_A_CONTAINER)),
            None => return Err(self.fail(EMPTY_BODY)),
        };
        // A root that keeps nothing is still read as a container, so that its own keys are
        // checked for duplicates.
        let wrote = match (self.arena.get(root), open) {
            (Node::Drop, b'{') => self.object(&Props::new(Vec::new()), DROP, 1, true)?,
            _ => self.value(root, 0, true)?,
        };
        if !wrote {
            // The root keeps nothing, or is not the declared shape: still say a body came.
            self.out.set(if open == b'{' { "{}" } else { "[]" });
        }
        self.ws();
        if self.pos != self.b.len() {
            return Err(self.fail(TRAILING));
        }
        Ok(())
    }

    /// Walks one value by plan `node`, appending what it keeps to the output. Returns whether
    /// it appended anything; `force` keeps an empty container (the root). Inlined into its
    /// callers, so that a container recurses straight into the next.
    #[inline(always)]
    pub(super) fn value(&mut self, node: NodeId, depth: usize, force: bool) -> Scan<bool> {
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
    pub(super) fn keep_scan(&mut self, mask: u8, depth: usize) -> Scan<bool> {
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
            _ => return Err(self.fail(EXPECTED_VALUE)),
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

    /// Opens the container at the cursor, `depth` levels deep: writes its opening bracket
    /// (taken back by [`close_container`](Self::close_container) if it keeps nothing) and
    /// returns the bracket's position and that of the first byte after it that is not
    /// whitespace.
    #[inline(always)]
    pub(super) fn open_container(&mut self, depth: usize) -> Scan<(usize, usize)> {
        if depth > MAX_DEPTH {
            return Err(self.fail(TOO_DEEP));
        }
        let open = self.pos;
        self.out.copy(open, open + 1);
        Ok((open, skip_ws(self.b, open + 1)))
    }

    /// The delimiter after a member or an item ending at `pos`, in a container closed by
    /// `CLOSE`. Whitespace is looked for only when the delimiter is not right there.
    #[inline(always)]
    pub(super) fn delimiter<const CLOSE: u8>(&mut self, mut pos: usize) -> Scan<Delimiter> {
        let b = self.b;
        loop {
            match b.get(pos) {
                Some(b',') => return Ok(Delimiter::Comma(pos)),
                Some(&byte) if byte == CLOSE => return Ok(Delimiter::Close(pos)),
                Some(&byte) if is_ws(byte) => pos = skip_ws(b, pos),
                _ => {
                    self.pos = pos;
                    let reason = if CLOSE == b'}' {
                        OBJECT_DELIMITER
                    } else {
                        ARRAY_DELIMITER
                    };
                    return Err(self.fail(reason));
                }
            }
        }
    }

    /// Closes the container whose closing bracket is at `close`, the cursor moving past it.
    /// Returns whether the container is written: if it kept anything, or if `force`d.
    /// Otherwise what it wrote is its opening bracket alone (each member or item that kept
    /// nothing took its own text back), and that is taken back too.
    #[inline(always)]
    pub(super) fn close_container(&mut self, close: usize, kept_any: bool, force: bool) -> bool {
        self.pos = close + 1;
        if kept_any || force {
            self.out.copy(close, close + 1);
            true
        } else {
            self.out.truncate(self.out.len() - 1);
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::run;

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
}
