//! Duplicate keys: the keys each object the plan reads has shown so far, to refuse a body
//! that repeats one (its meaning would depend on the reader).

use std::borrow::Cow;
use std::collections::HashSet;

/// Objects with more undeclared keys than this switch duplicate detection from a scan to a hash
/// set.
const LINEAR_KEY_CHECK: usize = 32;

/// The keys an object the plan reads has shown so far, to refuse a duplicate.
pub(super) struct ObjectKeys<'a> {
    /// Declared keys, one bit per property index (the first 64).
    declared: u64,
    /// The other keys, from the first one on: most objects have none, and set up nothing.
    others: Option<KeySet<'a>>,
}

impl<'a> ObjectKeys<'a> {
    #[inline(always)]
    pub(super) fn new() -> Self {
        Self {
            declared: 0,
            others: None,
        }
    }

    /// Records declared property `index`; false if the object already had it.
    #[inline(always)]
    pub(super) fn note_declared(
        &mut self,
        keys: &mut Vec<Cow<'a, [u8]>>,
        index: usize,
        key: impl FnOnce() -> Cow<'a, [u8]>,
    ) -> bool {
        if index < 64 {
            let bit = 1u64 << index;
            let fresh = self.declared & bit == 0;
            self.declared |= bit;
            fresh
        } else {
            // Beyond the first 64 properties: compared as text, like undeclared keys.
            self.note(keys, key())
        }
    }

    /// Records `key`, which no declared property of the object matches; false if the object
    /// already had it. The object's keys on the key stack start where it stands at the first
    /// one: every value before it has taken its own keys off again.
    #[inline]
    pub(super) fn note(&mut self, keys: &mut Vec<Cow<'a, [u8]>>, key: Cow<'a, [u8]>) -> bool {
        self.others
            .get_or_insert_with(|| KeySet::new(keys.len()))
            .note(keys, key)
    }

    /// Where the object's keys start on the key stack, if it has put any there.
    #[inline(always)]
    pub(super) fn base(&self) -> Option<usize> {
        self.others.as_ref().map(|others| others.base)
    }
}

/// The undeclared keys one object has shown so far, to refuse a duplicate.
pub(super) struct KeySet<'a> {
    /// The first other keys spelled without escapes, in place in the body: most objects
    /// have few undeclared keys, and these need no allocation.
    few: [Option<&'a [u8]>; FEW_KEYS],
    few_len: usize,
    /// Where the object's further other keys start on the scanner's key stack.
    pub(super) base: usize,
    /// All the other keys, once there are more than [`LINEAR_KEY_CHECK`].
    many: Option<HashSet<Cow<'a, [u8]>>>,
}

/// How many undeclared keys a [`KeySet`] holds without the key stack.
const FEW_KEYS: usize = 4;

impl<'a> KeySet<'a> {
    #[inline]
    pub(super) fn new(base: usize) -> Self {
        Self {
            few: [None; FEW_KEYS],
            few_len: 0,
            base,
            many: None,
        }
    }

    /// Records `key`, which no declared property of the object matches; false if the object
    /// already had it.
    #[inline(never)]
    pub(super) fn note(&mut self, keys: &mut Vec<Cow<'a, [u8]>>, key: Cow<'a, [u8]>) -> bool {
        // The common case: a key in place, while the object has had only a few, all of them
        // in place too.
        if let Cow::Borrowed(key) = key
            && self.few_len < FEW_KEYS
            && keys.len() == self.base
            && self.many.is_none()
        {
            let same = |k: &[u8]| k.len() == key.len() && k.iter().eq(key.iter());
            if self.few[..self.few_len].iter().flatten().any(|k| same(k)) {
                return false;
            }
            self.few[self.few_len] = Some(key);
            self.few_len += 1;
            return true;
        }
        self.note_more(keys, key)
    }

    /// [`note`](Self::note) past the first few keys in place.
    #[inline(never)]
    fn note_more(&mut self, keys: &mut Vec<Cow<'a, [u8]>>, key: Cow<'a, [u8]>) -> bool {
        if let Some(set) = &mut self.many {
            return set.insert(key);
        }
        // Keys are short: compared byte by byte once the lengths agree, without a call. A
        // closure here and in `note`, not one shared function: shared, the keep-nothing bench
        // ran 85 instructions more per call (callgrind, 2026-12-06).
        let same = |k: &[u8]| k.len() == key.len() && k.iter().eq(key.iter());
        if self.few.iter().flatten().any(|k| same(k)) || keys[self.base..].iter().any(|k| same(k)) {
            return false;
        }
        match key {
            Cow::Borrowed(key) if self.few_len < FEW_KEYS => {
                self.few[self.few_len] = Some(key);
                self.few_len += 1;
            }
            key => {
                keys.push(key);
                if keys.len() - self.base + self.few_len > LINEAR_KEY_CHECK {
                    let mut set: HashSet<Cow<'a, [u8]>> = keys.drain(self.base..).collect();
                    set.extend(self.few.iter().flatten().map(|k| Cow::Borrowed(*k)));
                    self.many = Some(set);
                }
            }
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::super::super::plan::{DROP, KEEP, PlanArena};
    use super::super::redact;
    use super::super::tests::run;

    #[test]
    fn objects_with_many_keys_still_catch_duplicates() {
        let mut body: String = (0..1000).map(|i| format!("\"k{i}\":{i},")).collect();
        body = format!("{{{body}\"k500\":1}}");
        assert_eq!(
            run(&body).unwrap_err().reason(),
            "duplicate key in an object"
        );
        let unique: String = (0..1000)
            .map(|i| format!("\"k{i}\":{i}"))
            .collect::<Vec<_>>()
            .join(",");
        assert_eq!(
            run(&format!("{{{unique},\"name\":\"n\"}}")).unwrap(),
            r#"{"name":"n"}"#
        );
    }

    #[test]
    fn escaped_keys_match_declared_keys_and_count_as_duplicates() {
        let mut arena = PlanArena::default();
        let root = arena.object(vec![("password".into(), DROP), ("user".into(), KEEP)], DROP);
        let run = |body: &str| redact(&arena, root, body.as_bytes());
        assert_eq!(run(r#"{"\u0070assword":"s3cr3t"}"#).unwrap(), "{}");
        assert_eq!(
            run(r#"{"\u0075ser":"u","\u0070assword":"s3cr3t"}"#).unwrap(),
            r#"{"\u0075ser":"u"}"#
        );
        for body in [
            r#"{"password":"a","\u0070assword":"s3cr3t"}"#,
            r#"{"\u0070assword":"a","pass\u0077ord":"s3cr3t"}"#,
            r#"{"user":"a","us\u0065r":"b"}"#,
            r#"{"x\/y":1,"x/y":2}"#,
        ] {
            let err = run(body).unwrap_err();
            assert_eq!(err.reason(), "duplicate key in an object", "{body}");
        }
    }

    #[test]
    fn duplicates_are_found_beyond_the_first_64_declared_keys() {
        let mut arena = PlanArena::default();
        let props = (0..100)
            .map(|i| (format!("k{i:03}").into(), KEEP))
            .collect();
        let root = arena.object(props, DROP);
        for dup in ["k000", "k063", "k064", "k099"] {
            let body = format!(r#"{{"{dup}":1,"k050":2,"{dup}":3}}"#);
            let err = redact(&arena, root, body.as_bytes()).unwrap_err();
            assert_eq!(err.reason(), "duplicate key in an object", "{dup}");
        }
        assert_eq!(
            redact(&arena, root, br#"{"k099":1,"k064":2,"k000":3}"#).unwrap(),
            r#"{"k099":1,"k064":2,"k000":3}"#
        );
    }
}
