//! Arrays walked by their plan: every item by the same plan, with a loop of its own for arrays
//! of scalars kept whole.

use super::super::plan::{Node, NodeId, TypeMask, types};
use super::stops::next_stop;
use super::unparsed::{ARRAY_DELIMITER, Scan, TOO_DEEP};
use super::{MAX_DEPTH, Scanner};
use super::{is_ws, skip_ws};

impl Scanner<'_> {
    pub(super) fn array(&mut self, items: NodeId, depth: usize, force: bool) -> Scan<bool> {
        if depth > MAX_DEPTH {
            return Err(self.fail(TOO_DEEP));
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
                            return Err(self.fail(ARRAY_DELIMITER));
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
                            return Err(self.fail(ARRAY_DELIMITER));
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
}
