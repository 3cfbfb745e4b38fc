//! The string-stop bitmap: one bit per byte of the body, set at the bytes that end a plain run
//! inside a string (the quote, the backslash, control characters), built 64 bytes at a time
//! with 16-byte SIMD compares before the scan, so that the scanner crosses a string by
//! counting zeros instead of reading it byte by byte.

use wide::u8x16;

/// Bodies up to 64 × this many bytes keep their [`string_stops`] on the stack.
const STACK_STOP_WORDS: usize = 64;

/// Bodies up to 64 × this many bytes (1 KiB) keep them in a smaller array, so that the
/// common small body does not clear the whole stack array first.
const SMALL_STOP_WORDS: usize = 16;

/// The first string stop (see [`string_stops`]) at or after `pos`, or `len`, the body's length.
#[inline(always)]
pub(super) fn next_stop(stops: &[u64], len: usize, pos: usize) -> usize {
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

/// Calls `scan` with the string stops of `body` (see [`string_stops`]), kept on the stack for
/// all but large bodies, and whether `body` is plain (see [`string_stops`]).
#[inline(always)]
pub(super) fn with_string_stops<R>(body: &[u8], scan: impl FnOnce(&[u64], bool) -> R) -> R {
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
    let plain = string_stops(body, stops);
    scan(stops, plain)
}

/// Marks, one bit per byte of `body`, the bytes that end a plain run inside a string: the
/// quote, the backslash, and control characters (below 0x20), 64 bytes at a time, so that a
/// string is then scanned by counting zeros. Returns whether the body is plain: printable
/// ASCII only (no control byte, DEL or byte above 0x7F), so that its kept text needs no
/// [`json_text`](crate::escape::json_text) pass.
// Inline: out of line, as the split into modules first left it, a call cost 16 instructions
// per body (callgrind, 2026-12-06).
#[inline]
fn string_stops(body: &[u8], stops: &mut [u64]) -> bool {
    let mut bytes = ByteRange::default();
    let (blocks, rest) = body.as_chunks::<64>();
    for (block, bits) in blocks.iter().zip(stops.iter_mut()) {
        *bits = block_stops(block, &mut bytes);
    }
    if !rest.is_empty() {
        // The tail, padded with spaces (no stop, plain) to a whole block.
        let mut block = [b' '; 64];
        block[..rest.len()].copy_from_slice(rest);
        if let Some(bits) = stops.get_mut(blocks.len()) {
            *bits = block_stops(&block, &mut bytes);
        }
    }
    bytes.is_plain()
}

/// The smallest and largest byte seen, lane by lane.
struct ByteRange {
    min: u8x16,
    max: u8x16,
}

impl Default for ByteRange {
    fn default() -> Self {
        Self {
            min: u8x16::splat(0x20),
            max: u8x16::splat(0x20),
        }
    }
}

impl ByteRange {
    /// Whether every byte seen was printable ASCII (0x20 to 0x7E).
    // Lane-wise, not through arrays: byte by byte, the test cost 14 instructions per body more
    // (callgrind, 2026-12-06). Keeping the range in locals returned by `block_stops` instead
    // of this struct cost 32 more.
    #[inline(always)]
    fn is_plain(&self) -> bool {
        let low = self.min.max(u8x16::splat(0x20)).simd_eq(self.min);
        let high = self.max.min(u8x16::splat(0x7e)).simd_eq(self.max);
        (low & high).to_bitmask() == 0xFFFF
    }
}

/// The string stops of 64 bytes, bit `i` for byte `i`: per 16 bytes, a flip, a minimum and a
/// compare for the quote and the control characters, a compare for the backslash, and a
/// movemask. A minimum and a maximum more per 16 bytes keep the range of the bytes seen in
/// `bytes`.
#[inline(always)]
fn block_stops(block: &[u8; 64], bytes: &mut ByteRange) -> u64 {
    // `b ^ 2` is at most 0x20 exactly for the control characters (0x00..=0x1F, which the
    // flip keeps below 0x20) and the quote (0x22 becomes 0x20): one test for both.
    let flip = u8x16::splat(0x02);
    let space = u8x16::splat(0x20);
    let backslash = u8x16::splat(b'\\');
    let (lanes, _) = block.as_chunks::<16>();
    let mut mask = 0u64;
    for (i, lane) in lanes.iter().enumerate() {
        let v = u8x16::new(*lane);
        bytes.min = bytes.min.min(v);
        bytes.max = bytes.max.max(v);
        let flipped = v ^ flip;
        let special = flipped.min(space).simd_eq(flipped) | v.simd_eq(backslash);
        mask |= u64::from(special.to_bitmask()) << (16 * i);
    }
    mask
}

#[cfg(test)]
mod tests {
    use super::*;

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
                let plain = string_stops(&body, &mut stops);
                assert_eq!(plain, (0x20..0x7f).contains(&byte), "byte {byte:#04x}");
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
}
