//! The compiled redaction tree: what to keep of a JSON value, node by node.
//!
//! Nodes live in an arena and refer to each other by index, so recursive schemas (`$ref`
//! cycles) compile to cyclic graphs without reference counting, and every operation of a
//! policy shares one arena.

/// Index of a node in a [`PlanArena`].
pub(crate) type NodeId = u32;

/// Keeps nothing of the value.
pub(crate) const DROP: NodeId = 0;
/// Keeps the whole value, whatever its type.
pub(crate) const KEEP: NodeId = 1;

/// The JSON types a kept value may have; a value of another type is dropped, so a client
/// cannot slip an object full of secrets into a field declared as a string.
pub(crate) type TypeMask = u8;

/// Bits of a [`TypeMask`].
pub(crate) mod types {
    use super::TypeMask;
    pub(crate) const NULL: TypeMask = 1;
    pub(crate) const BOOLEAN: TypeMask = 1 << 1;
    /// Integers only (no fraction, no exponent).
    pub(crate) const INTEGER: TypeMask = 1 << 2;
    /// Any number.
    pub(crate) const NUMBER: TypeMask = 1 << 3;
    pub(crate) const STRING: TypeMask = 1 << 4;
    pub(crate) const ARRAY: TypeMask = 1 << 5;
    pub(crate) const OBJECT: TypeMask = 1 << 6;
    pub(crate) const ANY: TypeMask = (1 << 7) - 1;
}

/// What to keep of one JSON value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Node {
    /// Nothing.
    Drop,
    /// All of it, if it is of one of these types.
    Keep(TypeMask),
    /// An object with declared properties: each declared key by its own plan, every other key
    /// by `additional` (a map's value plan, or [`DROP`]).
    Object { props: Props, additional: NodeId },
    /// An array: every element by the same plan.
    Array { items: NodeId },
}

/// The declared properties of an object node, sorted by key, with an index that finds a key
/// in one probe in the common case: an open-addressing table hashed on the key's length and
/// its first and last eight bytes, which also settle equality for keys of up to 16 bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Props {
    entries: Box<[(Box<str>, NodeId)]>,
    /// A power of two in length, at least twice the entries (or empty), so that a probe always
    /// ends on an empty slot.
    slots: Box<[Slot]>,
}

/// One slot of the index of a [`Props`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Slot {
    words: KeyWords,
    /// The entry's index, or [`Slot::EMPTY`].
    index: u32,
    /// The entry's plan, so that a lookup reads one slot only.
    node: NodeId,
}

impl Slot {
    const EMPTY: u32 = u32::MAX;
}

/// A key as the index compares it: its length and its first and last eight bytes
/// (little-endian, zero-padded; `tail` is 0 for keys of up to eight bytes).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct KeyWords {
    len: usize,
    head: u64,
    tail: u64,
}

/// The low `len` bytes of a `u64`, by `len` up to 8.
const HEAD_MASKS: [u64; 9] = [
    0,
    0xFF,
    0xFFFF,
    0xFF_FFFF,
    0xFFFF_FFFF,
    0xFF_FFFF_FFFF,
    0xFFFF_FFFF_FFFF,
    0xFF_FFFF_FFFF_FFFF,
    u64::MAX,
];

impl KeyWords {
    /// The words of `key`.
    pub(crate) fn of(key: &[u8]) -> Self {
        match (key.first_chunk::<8>(), key.last_chunk::<8>()) {
            (Some(head), Some(tail)) => Self {
                len: key.len(),
                head: u64::from_le_bytes(*head),
                tail: if key.len() > 8 {
                    u64::from_le_bytes(*tail)
                } else {
                    0
                },
            },
            _ => {
                let mut head = [0u8; 8];
                head[..key.len()].copy_from_slice(key);
                Self {
                    len: key.len(),
                    head: u64::from_le_bytes(head),
                    tail: 0,
                }
            }
        }
    }

    /// The words of `text[start..start + len]`, read in place: the eight bytes at `start`
    /// whole when `text` goes on that far (a key in a body is followed at least by its closing
    /// quote), masked to a shorter key's own, and a longer key's last eight.
    #[inline]
    pub(crate) fn within(text: &[u8], start: usize, len: usize) -> Self {
        match text.get(start..).and_then(<[u8]>::first_chunk::<8>) {
            Some(head) if len <= 8 => Self {
                len,
                // The key's own bytes only.
                head: u64::from_le_bytes(*head) & HEAD_MASKS[len],
                tail: 0,
            },
            // A longer key: its last eight bytes too, in place.
            Some(head) if len > 8 => match text
                .get(start + len - 8..)
                .and_then(<[u8]>::first_chunk::<8>)
            {
                Some(tail) => Self {
                    len,
                    head: u64::from_le_bytes(*head),
                    tail: u64::from_le_bytes(*tail),
                },
                None => Self::of(&text[start..start + len]),
            },
            _ => Self::of(&text[start..start + len]),
        }
    }

    #[inline]
    fn hash(self) -> usize {
        let mixed = (self.head ^ self.tail.rotate_left(29) ^ self.len as u64)
            .wrapping_mul(0x9E37_79B9_7F4A_7C15);
        (mixed >> 40) as usize
    }
}

impl Props {
    /// Indexes `entries` (sorted here by key).
    pub(crate) fn new(mut entries: Vec<(Box<str>, NodeId)>) -> Self {
        entries.sort_by(|a, b| a.0.cmp(&b.0));
        let size = match entries.len() {
            0 => 0,
            n => (2 * n).next_power_of_two(),
        };
        let empty = Slot {
            words: KeyWords::of(b""),
            index: Slot::EMPTY,
            node: DROP,
        };
        let mut slots = vec![empty; size].into_boxed_slice();
        for (i, (key, node)) in entries.iter().enumerate() {
            let words = KeyWords::of(key.as_bytes());
            let mut at = words.hash() & (size - 1);
            while slots[at].index != Slot::EMPTY {
                at = (at + 1) & (size - 1);
            }
            // More than 2^31 properties cannot be: the body they came from would not fit.
            slots[at] = Slot {
                words,
                index: u32::try_from(i).unwrap_or(Slot::EMPTY - 1),
                node: *node,
            };
        }
        Self {
            entries: entries.into(),
            slots,
        }
    }

    /// The properties, sorted by key.
    pub(crate) fn entries(&self) -> &[(Box<str>, NodeId)] {
        &self.entries
    }

    /// Whether no property is declared.
    pub(crate) fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The plan of the property at `index`.
    pub(crate) fn node(&self, index: usize) -> NodeId {
        self.entries[index].1
    }

    /// The index of property `key` (its unescaped text), if declared.
    pub(crate) fn find(&self, key: &[u8]) -> Option<usize> {
        self.find_words(key, KeyWords::of(key))
    }

    /// [`find`](Self::find), with the key's words already read.
    #[inline]
    pub(crate) fn find_words(&self, key: &[u8], words: KeyWords) -> Option<usize> {
        self.lookup(key, words).map(|(index, _)| index)
    }

    /// The index and the plan of property `key` (its unescaped text, whose words are
    /// `words`), if declared.
    #[inline]
    pub(crate) fn lookup(&self, key: &[u8], words: KeyWords) -> Option<(usize, NodeId)> {
        // With no slots, the mask keeps every bit and the first probe finds nothing.
        let mask = self.slots.len().wrapping_sub(1);
        let mut at = words.hash() & mask;
        loop {
            let slot = self.slots.get(at)?;
            if slot.index == Slot::EMPTY {
                return None;
            }
            if slot.words == words {
                let index = slot.index as usize;
                if words.len <= 16 || self.entries.get(index)?.0.as_bytes() == key {
                    return Some((index, slot.node));
                }
            }
            at = (at + 1) & mask;
        }
    }
}

/// The nodes of one or more redaction trees.
#[derive(Clone, Debug)]
pub(crate) struct PlanArena {
    nodes: Vec<Node>,
}

impl Default for PlanArena {
    fn default() -> Self {
        Self {
            nodes: vec![Node::Drop, Node::Keep(types::ANY)],
        }
    }
}

impl PlanArena {
    pub(crate) fn get(&self, id: NodeId) -> &Node {
        &self.nodes[id as usize]
    }

    /// Reserves a node, to be filled by [`set`](Self::set) once its children are compiled.
    pub(crate) fn reserve(&mut self) -> NodeId {
        self.push(Node::Drop)
    }

    pub(crate) fn set(&mut self, id: NodeId, node: Node) {
        self.nodes[id as usize] = node;
    }

    pub(crate) fn push(&mut self, node: Node) -> NodeId {
        let id = NodeId::try_from(self.nodes.len()).unwrap_or(NodeId::MAX);
        self.nodes.push(node);
        id
    }

    /// An object node, with its properties indexed for lookup.
    pub(crate) fn object(&mut self, props: Vec<(Box<str>, NodeId)>, additional: NodeId) -> NodeId {
        self.push(Node::Object {
            props: Props::new(props),
            additional,
        })
    }

    /// An array node: each element by `items`. Even with `items` keeping everything, only an
    /// array is kept.
    pub(crate) fn array(&mut self, items: NodeId) -> NodeId {
        match items {
            DROP => DROP,
            items => self.push(Node::Array { items }),
        }
    }

    /// A node keeping values of the `mask` types.
    pub(crate) fn keep(&mut self, mask: TypeMask) -> NodeId {
        match mask {
            0 => DROP,
            types::ANY => KEEP,
            mask => self.push(Node::Keep(mask)),
        }
    }

    /// The plan that keeps only what both `a` and `b` keep: for a key that several `oneOf`
    /// branches (or `allOf` parts) declare, a value is kept only if every one of them keeps it.
    pub(crate) fn intersect(&mut self, a: NodeId, b: NodeId) -> NodeId {
        self.intersect_inner(a, b, &mut Vec::new())
    }

    fn intersect_inner(
        &mut self,
        a: NodeId,
        b: NodeId,
        seen: &mut Vec<(NodeId, NodeId, NodeId)>,
    ) -> NodeId {
        if a == b {
            return a;
        }
        if a == DROP || b == DROP {
            return DROP;
        }
        if a == KEEP {
            return b;
        }
        if b == KEEP {
            return a;
        }
        if let Some(&(_, _, id)) = seen.iter().find(|(x, y, _)| (*x, *y) == (a, b)) {
            return id;
        }
        let id = self.reserve();
        seen.push((a, b, id));
        let node = match (self.get(a).clone(), self.get(b).clone()) {
            (
                Node::Object {
                    props: pa,
                    additional: xa,
                },
                Node::Object {
                    props: pb,
                    additional: xb,
                },
            ) => {
                let mut props: Vec<(Box<str>, NodeId)> = Vec::new();
                for (key, na) in pa.entries() {
                    let merged = match pb.find(key.as_bytes()) {
                        Some(i) => self.intersect_inner(*na, pb.node(i), seen),
                        // Declared by one side only: that side decides.
                        None => *na,
                    };
                    props.push((key.clone(), merged));
                }
                for (key, nb) in pb.entries() {
                    if pa.find(key.as_bytes()).is_none() {
                        props.push((key.clone(), *nb));
                    }
                }
                let additional = self.intersect_inner(xa, xb, seen);
                Node::Object {
                    props: Props::new(props),
                    additional,
                }
            }
            (Node::Array { items: ia }, Node::Array { items: ib }) => Node::Array {
                items: self.intersect_inner(ia, ib, seen),
            },
            (Node::Keep(ma), Node::Keep(mb)) if ma & mb == 0 => Node::Drop,
            (Node::Keep(ma), Node::Keep(mb)) => Node::Keep(ma & mb),
            // A typed keep and a structure: the structure decides (a scalar is dropped by it).
            (Node::Keep(_), other) | (other, Node::Keep(_)) => other,
            // An object plan and an array plan: a value is one or the other, and each shape
            // keeps only what its own plan keeps.
            (Node::Object { .. }, Node::Array { .. })
            | (Node::Array { .. }, Node::Object { .. }) => Node::Drop,
            (x, _) => x,
        };
        self.set(id, node);
        id
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn intersection_keeps_what_every_declaring_side_keeps() {
        let mut arena = PlanArena::default();
        let a = arena.object(
            vec![
                ("name".into(), KEEP),
                ("secret".into(), KEEP),
                ("only_a".into(), KEEP),
            ],
            DROP,
        );
        let b = arena.object(vec![("name".into(), KEEP), ("secret".into(), DROP)], DROP);
        let both = arena.intersect(a, b);
        let Node::Object { props, .. } = arena.get(both).clone() else {
            panic!("an object")
        };
        let kept: Vec<(&str, NodeId)> = props.entries().iter().map(|(k, n)| (&**k, *n)).collect();
        assert_eq!(kept, [("name", KEEP), ("only_a", KEEP), ("secret", DROP)]);
    }

    #[test]
    fn every_declared_key_is_found_and_no_other() {
        let mut keys: Vec<String> = (0..300).map(|i| format!("field_{i}")).collect();
        keys.extend(["", "a", "ab", "abcdefgh", "abcdefghi", "abcdefghabcdefgh"].map(String::from));
        keys.push("abcdefgh_middle_abcdefgh".into());
        keys.push("abcdefgh_MIDDLE_abcdefgh".into());
        let props = Props::new(
            keys.iter()
                .enumerate()
                .map(|(i, k)| (k.as_str().into(), NodeId::try_from(i).unwrap()))
                .collect(),
        );
        for (i, key) in keys.iter().enumerate() {
            let index = props.find(key.as_bytes()).expect(key);
            assert_eq!(props.entries()[index].0.as_ref(), key);
            assert_eq!(props.node(index), NodeId::try_from(i).unwrap());
        }
        for missing in [
            "field_300",
            "field_",
            "abc",
            "abcdefgh\0",
            "abcdefgh_middle_abcdefgX",
            "abcdefgh_Middle_abcdefgh",
            "b",
        ] {
            assert_eq!(props.find(missing.as_bytes()), None, "{missing}");
        }
        assert_eq!(Props::new(Vec::new()).find(b"x"), None);
    }

    #[test]
    fn key_words_in_a_body_match_those_of_the_key_alone() {
        let body = b"{\"id\":1,\"abcdefgh\":2,\"abcdefghijklmnopq\":3,\"\":4,\"x\"";
        for (start, len) in [(2, 2), (10, 8), (22, 17), (45, 0), (49, 1)] {
            assert_eq!(
                KeyWords::within(body, start, len),
                KeyWords::of(&body[start..start + len]),
                "{start}"
            );
        }
        // Every key length up to 24, starting anywhere, up to the end of the text.
        let text: Vec<u8> = (0u8..40).map(|i| b'a' + i % 26).collect();
        for start in 0..text.len() {
            for len in 0..=24.min(text.len() - start) {
                assert_eq!(
                    KeyWords::within(&text, start, len),
                    KeyWords::of(&text[start..start + len]),
                    "{start} {len}"
                );
            }
        }
    }

    #[test]
    fn intersection_of_cyclic_plans_terminates() {
        let mut arena = PlanArena::default();
        let a = arena.reserve();
        arena.set(
            a,
            Node::Object {
                props: Props::new(vec![("child".into(), a), ("v".into(), KEEP)]),
                additional: DROP,
            },
        );
        let b = arena.reserve();
        arena.set(
            b,
            Node::Object {
                props: Props::new(vec![("child".into(), b), ("v".into(), DROP)]),
                additional: DROP,
            },
        );
        let both = arena.intersect(a, b);
        let Node::Object { props, .. } = arena.get(both).clone() else {
            panic!("an object")
        };
        assert_eq!(props.entries()[0], ("child".into(), both));
        assert_eq!(props.entries()[1], ("v".into(), DROP));
    }
}
