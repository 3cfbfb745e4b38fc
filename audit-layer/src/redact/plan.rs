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
    /// by `additional` (a map's value plan, or [`DROP`]). Sorted by key for binary search.
    Object {
        props: Box<[(Box<str>, NodeId)]>,
        additional: NodeId,
    },
    /// An array: every element by the same plan.
    Array { items: NodeId },
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

    /// An object node, with its properties sorted for lookup.
    pub(crate) fn object(
        &mut self,
        mut props: Vec<(Box<str>, NodeId)>,
        additional: NodeId,
    ) -> NodeId {
        props.sort_by(|a, b| a.0.cmp(&b.0));
        self.push(Node::Object {
            props: props.into(),
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

    /// The plan for a key of an object node.
    pub(crate) fn child(
        &self,
        props: &[(Box<str>, NodeId)],
        additional: NodeId,
        key: &str,
    ) -> Option<NodeId> {
        match props.binary_search_by(|(name, _)| (**name).cmp(key)) {
            Ok(i) => Some(props[i].1),
            Err(_) => (additional != DROP).then_some(additional),
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
                for (key, na) in pa.iter() {
                    let merged = match pb.binary_search_by(|(k, _)| k.cmp(key)) {
                        Ok(i) => self.intersect_inner(*na, pb[i].1, seen),
                        // Declared by one side only: that side decides.
                        Err(_) => *na,
                    };
                    props.push((key.clone(), merged));
                }
                for (key, nb) in pb.iter() {
                    if pa.binary_search_by(|(k, _)| k.cmp(key)).is_err() {
                        props.push((key.clone(), *nb));
                    }
                }
                props.sort_by(|x, y| x.0.cmp(&y.0));
                let additional = self.intersect_inner(xa, xb, seen);
                Node::Object {
                    props: props.into(),
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
        let kept: Vec<(&str, NodeId)> = props.iter().map(|(k, n)| (&**k, *n)).collect();
        assert_eq!(kept, [("name", KEEP), ("only_a", KEEP), ("secret", DROP)]);
    }

    #[test]
    fn intersection_of_cyclic_plans_terminates() {
        let mut arena = PlanArena::default();
        let a = arena.reserve();
        arena.set(
            a,
            Node::Object {
                props: vec![("child".into(), a), ("v".into(), KEEP)].into(),
                additional: DROP,
            },
        );
        let b = arena.reserve();
        arena.set(
            b,
            Node::Object {
                props: vec![("child".into(), b), ("v".into(), DROP)].into(),
                additional: DROP,
            },
        );
        let both = arena.intersect(a, b);
        let Node::Object { props, .. } = arena.get(both).clone() else {
            panic!("an object")
        };
        assert_eq!(props[0], ("child".into(), both));
        assert_eq!(props[1], ("v".into(), DROP));
    }
}
