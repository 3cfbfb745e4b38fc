//! Values the plan drops, and values kept whole: validated and skipped without writing
//! anything, iteratively, so that any nesting costs no stack.

use super::duplicate_keys::KeySet;
use super::stops::next_stop;
use super::strings::plain_string_end;
use super::unparsed::{
    ARRAY_DELIMITER, DUPLICATE_KEY, EXPECTED_COLON, EXPECTED_KEY, EXPECTED_VALUE, OBJECT_DELIMITER,
    Scan, TOO_DEEP,
};
use super::{MAX_DEPTH, Scanner};

impl Scanner<'_> {
    /// Skips one value, validating it. Iterative, with the open containers as a bit stack:
    /// any nesting costs no stack and no allocation. `kept` also rejects duplicate keys and
    /// numbers that do not fit an `f64` (the value could not be read back).
    pub(super) fn skip_value(&mut self, depth: usize, kept: bool) -> Scan<()> {
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
                        return Err(self.fail(TOO_DEEP));
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
                // Not one arm with `{`: merged, the keep-nothing bench ran 100 instructions
                // more per call (callgrind, 2026-12-06).
                Some(b'[') => {
                    if depth + nesting >= MAX_DEPTH {
                        return Err(self.fail(TOO_DEEP));
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
                _ => return Err(self.fail(EXPECTED_VALUE)),
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
                    (_, true) => return Err(self.fail(OBJECT_DELIMITER)),
                    (_, false) => return Err(self.fail(ARRAY_DELIMITER)),
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
            pos = plain_string_end(b, stops, pos)?;
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
            return Err(self.fail(EXPECTED_KEY));
        }
        let start = self.pos;
        if kept {
            let key = self.key()?;
            if let Some(set) = self.kept_objects.last_mut()
                && !set.note(&mut self.keys, key)
            {
                return Err(self.fail_at(DUPLICATE_KEY, start));
            }
        } else {
            self.string()?;
        }
        self.ws();
        self.expect(b':', EXPECTED_COLON)
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::run;

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
}
