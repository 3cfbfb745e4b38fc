//! Request paths matched against the policy's path templates, a segment at a time.
//!
//! The policy still inserts every template into a `matchit` router, which refuses templates
//! that conflict; this tree answers the lookups. It matches exactly as that router does for the
//! templates [`RouteTemplate::parse`](super::RouteTemplate::parse) accepts (literal segments,
//! whole-segment `{param}`s, a final `{*catch_all}`): a literal segment before a parameter
//! before a catch-all, trying the next alternative whenever the rest of the path does not
//! match; a parameter takes one segment, empty only if another segment follows; a catch-all
//! takes the rest, which must not be empty. Unlike the radix tree it does not scan each
//! segment for its end byte by byte: a literal is compared in place, and only a parameter
//! looks for the next `/`, 16 bytes at a time.

use wide::u8x16;

/// The templates of a policy, as a tree of segments.
#[derive(Debug)]
pub(crate) struct SegmentRouter {
    /// The root is node 0: what follows the path's leading `/`.
    nodes: Vec<SegmentNode>,
}

/// What may follow one position in a template: the segment that starts there.
#[derive(Debug, Default)]
struct SegmentNode {
    /// The route (the policy's index) whose template ends just before this position's `/`.
    value: Option<usize>,
    /// Literal segments, each with the node after it.
    literals: Vec<(Literal, usize)>,
    /// A `{param}` segment, with the node after it.
    param: Option<usize>,
    /// A `{*catch_all}` segment: the route it ends.
    catch_all: Option<usize>,
}

/// A literal segment, with its first eight bytes as a word: most literals are that short, and
/// compare with one load from the path.
#[derive(Debug)]
struct Literal {
    text: Box<[u8]>,
    /// The first eight bytes (little-endian, zero-padded), and a mask of the text's own.
    head: u64,
    mask: u64,
}

impl Literal {
    fn new(text: &[u8]) -> Self {
        let mut head = [0u8; 8];
        let len = text.len().min(8);
        head[..len].copy_from_slice(&text[..len]);
        Self {
            text: text.into(),
            head: u64::from_le_bytes(head),
            mask: u64::MAX.checked_shr(64 - 8 * len as u32).unwrap_or(0),
        }
    }

    /// Whether `bytes` starts with the literal.
    #[inline]
    fn starts(&self, bytes: &[u8]) -> bool {
        match bytes.first_chunk::<8>() {
            Some(word) if self.text.len() <= 8 => {
                u64::from_le_bytes(*word) & self.mask == self.head
            }
            _ => starts_with(bytes, &self.text),
        }
    }
}

/// One segment of a template, as the router matches it.
enum Part<'t> {
    Literal(&'t str),
    Param,
    CatchAll,
}

impl Default for SegmentRouter {
    fn default() -> Self {
        Self {
            nodes: vec![SegmentNode::default()],
        }
    }
}

impl SegmentRouter {
    /// Adds `template` (valid, and accepted by `matchit`) as route `value`.
    pub(crate) fn insert(&mut self, template: &str, value: usize) {
        // "/" is one empty literal segment, like "/a/" ends with one.
        let rest = template.strip_prefix('/').unwrap_or(template);
        let parts = rest.split('/').map(|part| {
            match part.strip_prefix('{').and_then(|p| p.strip_suffix('}')) {
                Some(name) if name.starts_with('*') => Part::CatchAll,
                Some(_) => Part::Param,
                None => Part::Literal(part),
            }
        });
        let mut node = 0;
        // The node the last segment leads to; a catch-all ends the template itself.
        for part in parts {
            node = match part {
                Part::Literal(literal) => {
                    let found = self.nodes[node]
                        .literals
                        .iter()
                        .find(|(l, _)| *l.text == *literal.as_bytes())
                        .map(|&(_, next)| next);
                    match found {
                        Some(next) => next,
                        None => {
                            let next = self.push();
                            self.nodes[node]
                                .literals
                                .push((Literal::new(literal.as_bytes()), next));
                            next
                        }
                    }
                }
                Part::Param => match self.nodes[node].param {
                    Some(next) => next,
                    None => {
                        let next = self.push();
                        self.nodes[node].param = Some(next);
                        next
                    }
                },
                Part::CatchAll => {
                    self.nodes[node].catch_all = Some(value);
                    return;
                }
            };
        }
        self.nodes[node].value = Some(value);
    }

    fn push(&mut self) -> usize {
        self.nodes.push(SegmentNode::default());
        self.nodes.len() - 1
    }

    /// The route matching `path`.
    #[inline]
    pub(crate) fn at(&self, path: &str) -> Option<usize> {
        let rest = path.as_bytes().strip_prefix(b"/")?;
        self.find(0, rest)
    }

    /// The route matching `rest` (the path after a `/`) from `node` on. Calls itself only
    /// where there is an alternative to come back to (a literal and a parameter or catch-all
    /// at the same position); otherwise walks on in place.
    fn find(&self, mut node: usize, mut rest: &[u8]) -> Option<usize> {
        loop {
            let here = self.nodes.get(node)?;
            let wild = here.param.is_some() || here.catch_all.is_some();
            // At most one literal is the whole segment: `Some(after)` when a `/` follows it.
            let literal = here.literals.iter().find_map(|(literal, next)| {
                if !literal.starts(rest) {
                    return None;
                }
                let len = literal.text.len();
                match rest.get(len) {
                    None => Some((*next, None)),
                    Some(b'/') => Some((*next, rest.get(len + 1..))),
                    Some(_) => None,
                }
            });
            match literal {
                Some((next, None)) => {
                    let found = self.nodes.get(next).and_then(|n| n.value);
                    if found.is_some() || !wild {
                        return found;
                    }
                }
                Some((next, Some(after))) if !wild => {
                    (node, rest) = (next, after);
                    continue;
                }
                Some((next, Some(after))) => {
                    if let Some(found) = self.find(next, after) {
                        return Some(found);
                    }
                }
                None => {}
            }
            if let Some(next) = here.param {
                match slash(rest) {
                    // The last segment: a parameter is never empty there.
                    None if rest.is_empty() => {}
                    None => {
                        let found = self.nodes.get(next).and_then(|n| n.value);
                        if found.is_some() || here.catch_all.is_none() {
                            return found;
                        }
                    }
                    Some(end) if here.catch_all.is_none() => {
                        (node, rest) = (next, rest.get(end + 1..)?);
                        continue;
                    }
                    Some(end) => {
                        if let Some(found) = self.find(next, rest.get(end + 1..)?) {
                            return Some(found);
                        }
                    }
                }
            }
            return here.catch_all.filter(|_| !rest.is_empty());
        }
    }
}

/// Whether `bytes` starts with `prefix` (a literal segment, short): compared eight bytes at a
/// time in place, without a call.
#[inline]
fn starts_with(bytes: &[u8], prefix: &[u8]) -> bool {
    let Some(head) = bytes.get(..prefix.len()) else {
        return false;
    };
    let (words, tail) = head.as_chunks::<8>();
    let (prefix_words, prefix_tail) = prefix.as_chunks::<8>();
    words
        .iter()
        .zip(prefix_words)
        .all(|(a, b)| u64::from_ne_bytes(*a) == u64::from_ne_bytes(*b))
        && tail.iter().zip(prefix_tail).all(|(a, b)| a == b)
}

/// The position of the first `/` in `bytes`.
#[inline]
fn slash(bytes: &[u8]) -> Option<usize> {
    let (chunks, tail) = bytes.as_chunks::<16>();
    let slash = u8x16::splat(b'/');
    for (i, chunk) in chunks.iter().enumerate() {
        let mask = u8x16::new(*chunk).simd_eq(slash).to_bitmask();
        if mask != 0 {
            return Some(16 * i + mask.trailing_zeros() as usize);
        }
    }
    if tail.is_empty() {
        return None;
    }
    // The tail: the last 16 bytes, shifted past those already looked at (or, in a segment
    // shorter than that, byte by byte).
    let mask = match bytes.last_chunk::<16>() {
        Some(last) => u8x16::new(*last).simd_eq(slash).to_bitmask() >> (16 - tail.len()),
        None => return tail.iter().position(|&b| b == b'/'),
    };
    (mask != 0).then(|| 16 * chunks.len() + mask.trailing_zeros() as usize)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Both routers over the same templates (those matchit accepts).
    fn routers(templates: &[String]) -> (SegmentRouter, matchit::Router<usize>) {
        let mut ours = SegmentRouter::default();
        let mut theirs = matchit::Router::new();
        let mut seen = std::collections::HashSet::new();
        for (i, template) in templates.iter().enumerate() {
            if super::super::RouteTemplate::parse(template).is_err() || !seen.insert(template) {
                continue;
            }
            if theirs.insert(template.clone(), i).is_ok() {
                ours.insert(template, i);
            }
        }
        (ours, theirs)
    }

    /// Checks that both routers find the same route for each path; returns how many paths
    /// matched one.
    fn agree(templates: &[String], paths: &[String]) -> usize {
        let (ours, theirs) = routers(templates);
        let mut found = 0;
        for path in paths {
            let expected = theirs.at(path).ok().map(|m| *m.value);
            assert_eq!(ours.at(path), expected, "{path:?} in {templates:?}");
            found += usize::from(expected.is_some());
        }
        if std::env::var_os("ROUTER_STATS").is_some() {
            eprintln!("{found}/{}", paths.len());
        }
        found
    }

    fn strings(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn matches_as_matchit_does_on_edge_cases() {
        let templates = strings(&[
            "/",
            "/a",
            "/a/",
            "/a/b",
            "/a/{x}",
            "/a/{x}/b",
            "/a/{x}/{y}",
            "/a//c",
            "/ab",
            "/{z}",
            "/{z}/d",
            "/files/{*rest}",
            "/files/a",
            "/files/a/b",
            "/accounts/{account_id}/alerting/v3/policies/{policy_id}",
            "/accounts/{account_id}/alerting/v3/policies",
            "/accounts/{account_id}/{product}/v3/x",
        ]);
        let paths = strings(&[
            "",
            "/",
            "//",
            "a",
            "/a",
            "/a/",
            "/a//",
            "/a//b",
            "/a//c",
            "/a/b",
            "/a/b/",
            "/a/b/b",
            "/a/q/b",
            "/a/q/r",
            "/a/q/r/",
            "/ab",
            "/abc",
            "/abc/d",
            "/ab/d",
            "/x/d",
            "/x/e",
            "/files",
            "/files/",
            "/files//",
            "/files/a",
            "/files/ab",
            "/files/a/",
            "/files/a/b",
            "/files/a/b/c",
            "/accounts/023e105f4ecef8ad9ca31a8372d0c353/alerting/v3/policies/0da2b59e-f118-439d-8097-bdfb215203c9",
            "/accounts/023e105f4ecef8ad9ca31a8372d0c353/alerting/v3/policies",
            "/accounts/023e105f4ecef8ad9ca31a8372d0c353/alerting/v3/policies/",
            "/accounts//alerting/v3/policies/p",
            "/accounts/a/alerting/v3/x",
            "/accounts/a/other/v3/x",
        ]);
        assert_eq!(agree(&templates, &paths), 26);
        // Without the templates that hide the others.
        assert_eq!(agree(&templates[4..], &paths), 24);
        assert_eq!(agree(&templates[9..], &paths), 18);
        assert_eq!(agree(&[], &paths), 0);
    }

    #[test]
    fn prefixes_are_compared_in_words_and_bytes() {
        let text = b"abcdefghijklmnopqrstu";
        for len in 0..=text.len() {
            for cut in 0..=text.len() {
                let mut prefix = text[..len].to_vec();
                if let Some(byte) = prefix.get_mut(cut) {
                    *byte = b'X';
                }
                assert_eq!(
                    starts_with(text, &prefix),
                    text.starts_with(&prefix),
                    "{len} {cut}"
                );
                assert_eq!(
                    starts_with(&text[..cut], &prefix),
                    text[..cut].starts_with(&prefix)
                );
                let literal = Literal::new(&prefix);
                assert_eq!(literal.starts(text), text.starts_with(&prefix));
                assert_eq!(
                    literal.starts(&text[..cut]),
                    text[..cut].starts_with(&prefix),
                    "{len} {cut}"
                );
            }
        }
    }

    #[test]
    fn slashes_are_found_in_every_position() {
        for len in 0..70 {
            for at in 0..=len {
                let mut bytes = vec![b'a'; len];
                if at < len {
                    bytes[at] = b'/';
                }
                let expected = bytes.iter().position(|&b| b == b'/');
                assert_eq!(slash(&bytes), expected, "{len} {at}");
            }
        }
    }

    /// A segment of a template or a path, from a small alphabet so that they collide.
    fn segment() -> impl Strategy<Value = String> {
        prop_oneof![
            4 => "[ab]{0,2}",
            1 => Just("{p}".to_owned()),
            1 => Just("{q}".to_owned()),
            1 => Just("{*r}".to_owned()),
        ]
    }

    fn template() -> impl Strategy<Value = String> {
        prop::collection::vec(segment(), 1..5).prop_map(|s| format!("/{}", s.join("/")))
    }

    fn path() -> impl Strategy<Value = String> {
        prop_oneof![
            9 => prop::collection::vec("[ab]{0,2}", 1..6).prop_map(|s| format!("/{}", s.join("/"))),
            1 => "[ab/]{0,6}",
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]
        #[test]
        fn matches_as_matchit_does(
            templates in prop::collection::vec(template(), 0..8),
            paths in prop::collection::vec(path(), 1..16),
        ) {
            agree(&templates, &paths);
        }
    }
}
