//! The redacted text as it is built: runs of the body's own bytes, coalesced.

/// The kept text being built: what has been written, followed by a run of the body not yet
/// copied. Kept values mostly sit next to each other in the body, so most appends only move
/// the end of the run, and the text is copied in a few long pieces.
pub(super) struct Output<'a> {
    body: &'a str,
    text: String,
    /// The pending run, `body[start..end]`.
    start: usize,
    end: usize,
}

impl<'a> Output<'a> {
    /// An empty output over `body`, with room for all of it.
    pub(super) fn new(body: &'a str) -> Self {
        Self {
            body,
            // Never longer than the body, but for a root written as `{}`.
            text: String::with_capacity(body.len().max(2)),
            start: 0,
            end: 0,
        }
    }

    /// The length of the output so far.
    #[inline]
    pub(super) fn len(&self) -> usize {
        self.text.len() + (self.end - self.start)
    }

    /// Appends `body[start..end]`.
    #[inline]
    pub(super) fn copy(&mut self, start: usize, end: usize) {
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
    pub(super) fn pieces(
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
    pub(super) fn truncate(&mut self, len: usize) {
        match len.checked_sub(self.text.len()) {
            Some(run) => self.end = self.start + run,
            None => {
                self.text.truncate(len);
                self.start = self.end;
            }
        }
    }

    /// Replaces all of the output with `text`.
    pub(super) fn set(&mut self, text: &str) {
        self.truncate(0);
        self.text.push_str(text);
    }

    #[inline(never)]
    fn flush(&mut self) {
        if self.start != self.end {
            self.text.push_str(&self.body[self.start..self.end]);
            self.start = self.end;
        }
    }

    pub(super) fn finish(mut self) -> String {
        self.flush();
        self.text
    }
}
