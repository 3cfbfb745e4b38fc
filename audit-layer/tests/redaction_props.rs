#![allow(missing_docs)]
//! Property tests of redaction on the alerting fixture (`schemas/fixtures/alerting-3.0.yaml`).
//!
//! Bodies are generated from the fixture's `Policy` schema: random subsets of the declared
//! keys, random undeclared keys, random nesting in mechanisms, labels, headers and condition
//! trees, arrays of random length. Every string at a marked position is `KEEP-<hex>`; every
//! other string, and every undeclared key, is `CANARY-<hex>`. The redacted body must hold every
//! `KEEP-` value and no `CANARY`, whatever the key order and whitespace.

use std::collections::BTreeSet;
use std::sync::{Arc, OnceLock};

use audit_layer::spec::OpenApiDocument;
use audit_layer::{AuditPolicy, IntoAuditPolicy};
use http::Method;
use proptest::collection::{btree_map, vec};
use proptest::prelude::*;
use serde_json::Value;

const FIXTURE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../schemas/fixtures/alerting-3.0.yaml"
);
const URI: &str = "/accounts/a/alerting/v3/policies/p";

fn policy() -> &'static AuditPolicy {
    static POLICY: OnceLock<Arc<AuditPolicy>> = OnceLock::new();
    POLICY.get_or_init(|| {
        OpenApiDocument::from_path(FIXTURE)
            .expect("the fixture parses")
            .into_audit_policy()
            .expect("the fixture compiles")
    })
}

/// The body as a record keeps it.
fn redact(body: &str) -> String {
    policy()
        .redact_request_body(&Method::PUT, URI, Some("application/json"), body.as_bytes())
        .expect("a JSON body is recorded")
        .get()
        .to_owned()
}

// ---------------------------------------------------------------------------------------------
// A JSON value whose objects keep their keys in a chosen order.

#[derive(Clone, Debug)]
enum J {
    Null,
    Bool(bool),
    Int(i64),
    Str(String),
    Arr(Vec<J>),
    Obj(Vec<(String, J)>),
}

impl J {
    /// The `KEEP-` strings anywhere in the value.
    fn keeps(&self, into: &mut BTreeSet<String>) {
        match self {
            J::Str(s) if s.starts_with("KEEP-") => {
                into.insert(s.clone());
            }
            J::Arr(items) => items.iter().for_each(|i| i.keeps(into)),
            J::Obj(entries) => entries.iter().for_each(|(_, v)| v.keeps(into)),
            _ => {}
        }
    }
}

/// A small deterministic generator for key order and whitespace.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        // xorshift64*
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: usize) -> usize {
        usize::try_from(self.next() % n as u64).unwrap_or(0)
    }
}

/// Serializes `value`: compactly in its own key order without `rng`, otherwise with every
/// object's keys shuffled and random JSON whitespace between all tokens.
fn write(value: &J, rng: &mut Option<Rng>, out: &mut String) {
    fn ws(rng: &mut Option<Rng>, out: &mut String) {
        if let Some(rng) = rng {
            for _ in 0..rng.below(3) {
                out.push([' ', '\n', '\r', '\t'][rng.below(4)]);
            }
        }
    }
    fn string(s: &str, out: &mut String) {
        out.push_str(&serde_json::to_string(s).expect("a string serializes"));
    }
    ws(rng, out);
    match value {
        J::Null => out.push_str("null"),
        J::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        J::Int(i) => out.push_str(&i.to_string()),
        J::Str(s) => string(s, out),
        J::Arr(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write(item, rng, out);
            }
            ws(rng, out);
            out.push(']');
        }
        J::Obj(entries) => {
            let mut order: Vec<usize> = (0..entries.len()).collect();
            if let Some(rng) = rng {
                for i in (1..order.len()).rev() {
                    order.swap(i, rng.below(i + 1));
                }
            }
            out.push('{');
            for (n, &i) in order.iter().enumerate() {
                if n > 0 {
                    out.push(',');
                }
                ws(rng, out);
                string(&entries[i].0, out);
                ws(rng, out);
                out.push(':');
                write(&entries[i].1, rng, out);
            }
            ws(rng, out);
            out.push('}');
        }
    }
    ws(rng, out);
}

fn compact(value: &J) -> String {
    let mut out = String::new();
    write(value, &mut None, &mut out);
    out
}

fn spaced(value: &J, seed: u64) -> String {
    let mut out = String::new();
    write(value, &mut Some(Rng(seed | 1)), &mut out);
    out
}

// ---------------------------------------------------------------------------------------------
// Strategies shaped like the fixture's schemas.

fn hex() -> impl Strategy<Value = String> {
    "[0-9a-f]{8,12}"
}

/// A value at a marked position.
fn keep() -> BoxedStrategy<J> {
    hex().prop_map(|h| J::Str(format!("KEEP-{h}"))).boxed()
}

fn canary_string() -> impl Strategy<Value = String> {
    hex().prop_map(|h| format!("CANARY-{h}"))
}

/// A string at an unmarked position.
fn canary() -> BoxedStrategy<J> {
    canary_string().prop_map(J::Str).boxed()
}

/// Any JSON value whose strings and keys are all canaries.
fn canary_json() -> BoxedStrategy<J> {
    let leaf = prop_oneof![
        Just(J::Null),
        any::<bool>().prop_map(J::Bool),
        any::<i64>().prop_map(J::Int),
        canary(),
    ];
    leaf.prop_recursive(3, 16, 4, |inner| {
        prop_oneof![
            vec(inner.clone(), 0..4).prop_map(J::Arr),
            btree_map(canary_string(), inner, 0..4).prop_map(|m| J::Obj(m.into_iter().collect())),
        ]
    })
    .boxed()
}

/// Keys the schema does not declare, with canary values.
fn undeclared() -> BoxedStrategy<Vec<(String, J)>> {
    btree_map(canary_string(), canary_json(), 0..3)
        .prop_map(|m| m.into_iter().collect())
        .boxed()
}

/// An object of the declared keys that are present, then the undeclared ones.
fn object(declared: Vec<(&'static str, Option<J>)>, extra: Vec<(String, J)>) -> J {
    let mut entries: Vec<(String, J)> = declared
        .into_iter()
        .filter_map(|(k, v)| v.map(|v| (k.to_owned(), v)))
        .collect();
    entries.extend(extra);
    J::Obj(entries)
}

fn opt(s: BoxedStrategy<J>) -> BoxedStrategy<Option<J>> {
    proptest::option::of(s).boxed()
}

fn array(item: BoxedStrategy<J>) -> BoxedStrategy<J> {
    vec(item, 0..4).prop_map(J::Arr).boxed()
}

fn nullable(s: BoxedStrategy<J>) -> BoxedStrategy<J> {
    prop_oneof![3 => s, 1 => Just(J::Null)].boxed()
}

fn filters() -> BoxedStrategy<J> {
    (
        opt(array(keep())),
        opt(array(keep())),
        opt(array(canary())),
        undeclared(),
    )
        .prop_map(|(services, zones, selectors, extra)| {
            object(
                vec![
                    ("services", services),
                    ("zones", zones),
                    ("selectors", selectors),
                ],
                extra,
            )
        })
        .boxed()
}

fn email_mechanism() -> BoxedStrategy<J> {
    (opt(keep()), undeclared())
        .prop_map(|(id, extra)| object(vec![("id", id)], extra))
        .boxed()
}

fn webhook() -> BoxedStrategy<J> {
    (opt(keep()), opt(canary()), undeclared())
        .prop_map(|(id, url, extra)| object(vec![("id", id), ("url", url)], extra))
        .boxed()
}

/// `Target` (oneOf) and `fallback` (anyOf): `address` is marked in one branch only, so it is
/// never kept; `name` is declared by one branch only, and marked.
fn target() -> BoxedStrategy<J> {
    let email = (opt(keep()), opt(keep()), opt(canary()), undeclared()).prop_map(
        |(kind, id, address, extra)| {
            object(
                vec![("type", kind), ("id", id), ("address", address)],
                extra,
            )
        },
    );
    let webhook = (
        opt(keep()),
        opt(keep()),
        opt(canary()),
        opt(keep()),
        undeclared(),
    )
        .prop_map(|(kind, id, address, name, extra)| {
            object(
                vec![
                    ("type", kind),
                    ("id", id),
                    ("address", address),
                    ("name", name),
                ],
                extra,
            )
        });
    prop_oneof![email, webhook].boxed()
}

fn mechanisms() -> BoxedStrategy<J> {
    (
        opt(array(email_mechanism())),
        opt(array(webhook())),
        opt(target()),
        opt(target()),
        undeclared(),
    )
        .prop_map(|(email, webhooks, default_target, fallback, extra)| {
            object(
                vec![
                    ("email", email),
                    ("webhooks", webhooks),
                    ("default_target", default_target),
                    ("fallback", fallback),
                ],
                extra,
            )
        })
        .boxed()
}

/// A condition tree, up to four levels deep.
fn condition() -> BoxedStrategy<J> {
    let leaf = (opt(keep()), opt(keep()), opt(canary()), undeclared()).prop_map(
        |(op, field, value, extra)| {
            object(vec![("op", op), ("field", field), ("value", value)], extra)
        },
    );
    leaf.prop_recursive(4, 24, 3, |inner| {
        (
            opt(keep()),
            opt(keep()),
            opt(canary()),
            vec(inner, 0..3),
            undeclared(),
        )
            .prop_map(|(op, field, value, children, extra)| {
                object(
                    vec![
                        ("op", op),
                        ("field", field),
                        ("value", value),
                        ("children", Some(J::Arr(children))),
                    ],
                    extra,
                )
            })
    })
    .boxed()
}

fn labels() -> BoxedStrategy<J> {
    btree_map("lbl_[a-z0-9]{1,6}", keep(), 0..4)
        .prop_map(|m| J::Obj(m.into_iter().collect()))
        .boxed()
}

fn headers() -> BoxedStrategy<J> {
    btree_map(
        canary_string(),
        prop_oneof![3 => canary(), 1 => canary_json()],
        0..4,
    )
    .prop_map(|m| J::Obj(m.into_iter().collect()))
    .boxed()
}

/// A body shaped like the fixture's `Policy`.
fn policy_body() -> BoxedStrategy<J> {
    let scalars = (
        opt(keep()),
        opt(keep()),
        opt(nullable(keep())),
        opt(any::<bool>().prop_map(J::Bool).boxed()),
        opt(keep()),
        opt(nullable(
            any::<i32>().prop_map(|i| J::Int(i.into())).boxed(),
        )),
    );
    let nested = (
        opt(nullable(filters())),
        opt(mechanisms()),
        opt(labels()),
        opt(headers()),
        opt(nullable(condition())),
        undeclared(),
    );
    (scalars, nested)
        .prop_map(
            |(
                (id, name, description, enabled, alert_type, cooldown_seconds),
                (filters, mechanisms, labels, headers, condition, extra),
            )| {
                object(
                    vec![
                        ("id", id),
                        ("name", name),
                        ("description", description),
                        ("enabled", enabled),
                        ("alert_type", alert_type),
                        ("cooldown_seconds", cooldown_seconds),
                        ("filters", filters),
                        ("mechanisms", mechanisms),
                        ("labels", labels),
                        ("headers", headers),
                        ("condition", condition),
                    ],
                    extra,
                )
            },
        )
        .boxed()
}

// ---------------------------------------------------------------------------------------------
// Properties

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn every_marked_value_is_kept_and_nothing_else(body in policy_body(), seed in any::<u64>()) {
        let mut keeps = BTreeSet::new();
        body.keeps(&mut keeps);
        for text in [compact(&body), spaced(&body, seed)] {
            let kept = redact(&text);
            prop_assert!(!kept.contains("CANARY"), "kept a value that is not auditable:\n{kept}\nfrom\n{text}");
            serde_json::from_str::<Value>(&kept).map_err(|e| TestCaseError::fail(format!("{e}: {kept}")))?;
            for keep in &keeps {
                prop_assert!(kept.contains(&format!("\"{keep}\"")), "lost {keep}:\n{kept}\nfrom\n{text}");
            }
        }
    }

    #[test]
    fn key_order_and_whitespace_do_not_change_what_is_kept(body in policy_body(), seed in any::<u64>()) {
        let plain = redact(&compact(&body));
        let shuffled = redact(&spaced(&body, seed));
        let plain: Value = serde_json::from_str(&plain).map_err(|e| TestCaseError::fail(format!("{e}: {plain}")))?;
        let shuffled: Value = serde_json::from_str(&shuffled).map_err(|e| TestCaseError::fail(format!("{e}: {shuffled}")))?;
        prop_assert_eq!(plain, shuffled);
    }
}

#[test]
fn the_generators_reach_every_marked_position() {
    // A fixed body with a KEEP value at each kind of marked position, so that a schema change
    // that stops the properties from reaching one is noticed.
    let body = r#"{"id":"KEEP-1","name":"KEEP-2","description":"KEEP-3","alert_type":"KEEP-4",
        "filters":{"services":["KEEP-5"],"zones":["KEEP-6"],"selectors":["CANARY-1"]},
        "mechanisms":{"email":[{"id":"KEEP-7"}],"webhooks":[{"id":"KEEP-8","url":"CANARY-2"}],
          "default_target":{"type":"KEEP-9","id":"KEEP-10","address":"CANARY-3","name":"KEEP-11"},
          "fallback":{"type":"KEEP-12","id":"KEEP-13","address":"CANARY-4"}},
        "labels":{"lbl_a":"KEEP-14"},"headers":{"CANARY-5":"CANARY-6"},
        "condition":{"op":"KEEP-15","field":"KEEP-16","value":"CANARY-7","children":[{"op":"KEEP-17","value":"CANARY-8"}]},
        "CANARY-9":{"CANARY-10":["CANARY-11"]}}"#;
    let kept = redact(body);
    assert!(!kept.contains("CANARY"), "{kept}");
    for i in 1..=17 {
        assert!(
            kept.contains(&format!("\"KEEP-{i}\"")),
            "KEEP-{i} lost: {kept}"
        );
    }
}
