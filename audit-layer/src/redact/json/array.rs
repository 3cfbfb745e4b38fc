//! Arrays walked by their plan: every item by the same plan, with a loop of its own for arrays
//! of scalars kept whole.

use super::super::plan::{Node, NodeId, TypeMask, types};
use super::strings::plain_string_end;
use super::unparsed::Scan;
use super::walk::Delimiter;
use super::{Scanner, skip_ws};

impl Scanner<'_> {
    /// Walks the array at the cursor, `depth` levels deep, each item by plan `items`. Returns
    /// whether it wrote anything; `force` writes it even if it keeps nothing.
    pub(super) fn array(&mut self, items: NodeId, depth: usize, force: bool) -> Scan<bool> {
        if let Node::Keep(mask) = self.arena.get(items) {
            return self.scalar_array(*mask, depth, force);
        }
        // As in `object`: the body and the cursor in locals, delimiters copied.
        let b = self.b;
        let (open, mut pos) = self.open_container(depth)?;
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
                match self.delimiter::<b']'>(self.pos)? {
                    Delimiter::Comma(at) => {
                        comma = at;
                        pos = skip_ws(b, at + 1);
                    }
                    Delimiter::Close(at) => {
                        pos = at;
                        break;
                    }
                }
            }
        }
        Ok(self.close_container(pos, kept_any, force))
    }

    /// [`array`](Self::array) with items kept whole when of the `mask` types: a loop of its
    /// own, small, with plain strings read in place.
    // The loop around the items is written out again rather than shared with `array`
    // through a closure: shared, the redact_1kb bench ran 29 instructions more per call
    // (callgrind, 2026-12-06).
    fn scalar_array(&mut self, mask: TypeMask, depth: usize, force: bool) -> Scan<bool> {
        let b = self.b;
        let stops = self.stops;
        let (open, mut pos) = self.open_container(depth)?;
        let mut kept_any = false;
        let mut comma = open;
        if b.get(pos) != Some(&b']') {
            loop {
                let keep = match plain_string_end(b, stops, pos) {
                    Some(end) => {
                        self.pos = end;
                        mask & types::STRING != 0
                    }
                    None => {
                        self.pos = pos;
                        self.keep_scan(mask, depth)?
                    }
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
                match self.delimiter::<b']'>(self.pos)? {
                    Delimiter::Comma(at) => {
                        comma = at;
                        pos = skip_ws(b, at + 1);
                    }
                    Delimiter::Close(at) => {
                        pos = at;
                        break;
                    }
                }
            }
        }
        Ok(self.close_container(pos, kept_any, force))
    }
}
