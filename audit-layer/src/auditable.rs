//! Typed values reduced to what their schema marks auditable: the resource values an app hands
//! to an [event](crate::event) or to the [`AuditHandle`](crate::AuditHandle) (what changed).
//!
//! A value is redacted by the `utoipa::ToSchema` schema of its own type, by the same rules and
//! the same redactor as a request body (see [`spec`](crate::spec)): default deny, a value is kept
//! only if its field says `x-auditable: true`, nested types are descended into, a field that is
//! `writeOnly` or `format: password` and marked is an error. The plan of each type is compiled
//! once, the first time a value of the type is redacted (or at start-up, by [`prepare`]), and
//! kept for the life of the process; each value is then serialized once and reduced by the
//! plan, never held whole in a record.
//!
//! ```
//! use audit_layer::auditable;
//! use serde::Serialize;
//! use serde_json::json;
//! use utoipa::ToSchema;
//!
//! #[derive(Serialize, ToSchema)]
//! struct Webhook {
//!     #[schema(extensions(("x-auditable" = json!(true))))]
//!     name: String,
//!     /// Carries a secret: not marked, never recorded.
//!     url: String,
//! }
//!
//! auditable::prepare::<Webhook>()?; // at start-up: a marking error shows now
//! let hook = Webhook { name: "pager".into(), url: "https://hooks.example/s3cr3t".into() };
//! assert_eq!(auditable::redact(&hook), json!({"name": "pager"}));
//! # Ok::<(), audit_layer::PolicyError>(())
//! ```

use std::any::TypeId;
use std::collections::HashMap;
use std::sync::{OnceLock, PoisonError, RwLock};

use serde::Serialize;
use serde_json::{Map, json};
use utoipa::ToSchema;

use crate::policy::PolicyError;
use crate::record::Body;
use crate::redact::RedactionPlan;
use crate::spec::{escape_pointer, schema_plan};

/// The compiled plan of each type redacted so far, or why its schema does not compile.
type Plans = RwLock<HashMap<TypeId, Result<RedactionPlan, PolicyError>>>;

fn plans() -> &'static Plans {
    static PLANS: OnceLock<Plans> = OnceLock::new();
    PLANS.get_or_init(Plans::default)
}

/// Compiles the plan of `T` now, so that a marking error shows at start-up rather than as a
/// marker in the first record that holds a `T`.
///
/// # Errors
///
/// When `T`'s schema marks a secret auditable (a `writeOnly` or `format: password` field) or is
/// otherwise broken; the error names the JSON pointer of the fault in `T`'s schema
/// (`#/components/schemas/<name>/...`).
pub fn prepare<T: ToSchema + 'static>() -> Result<(), PolicyError> {
    plan_of::<T>().map(drop)
}

/// The plan of `T`: compiled the first time, then read from the cache.
fn plan_of<T: ToSchema + 'static>() -> Result<RedactionPlan, PolicyError> {
    let id = TypeId::of::<T>();
    if let Some(plan) = plans()
        .read()
        .unwrap_or_else(PoisonError::into_inner)
        .get(&id)
    {
        return plan.clone();
    }
    let compiled = compile::<T>();
    plans()
        .write()
        .unwrap_or_else(PoisonError::into_inner)
        .entry(id)
        .or_insert(compiled)
        .clone()
}

/// `T`'s schema, with those it refers to, as the `components` of a document of its own.
fn compile<T: ToSchema>() -> Result<RedactionPlan, PolicyError> {
    let unserializable = |e: serde_json::Error| PolicyError::Parse {
        source_name: format!("the schema of {}", T::name()),
        message: format!("does not serialize: {e}"),
    };
    let mut referenced = Vec::new();
    T::schemas(&mut referenced);
    let mut components = Map::new();
    for (name, schema) in referenced {
        components.insert(name, serde_json::to_value(schema).map_err(unserializable)?);
    }
    let name = T::name().into_owned();
    let own = serde_json::to_value(T::schema()).map_err(unserializable)?;
    let pointer = format!("/components/schemas/{}", escape_pointer(&name));
    components.insert(name, own);
    let doc = json!({"openapi": "3.1.0", "components": {"schemas": components}});
    schema_plan(&doc, &pointer)
}

/// `value` reduced to the fields its type's schema marks `x-auditable`, as a record holds it.
///
/// Never the value itself when something goes wrong: a type whose schema does not compile, or a
/// value that does not serialize to a JSON object or array, is recorded as a marker
/// (`{"_unparsed": "<reason>"}`) that quotes none of the value.
pub fn redact<T: Serialize + ToSchema + 'static>(value: &T) -> Body {
    let plan = match plan_of::<T>() {
        Ok(plan) => plan,
        Err(e) => {
            tracing::warn!(target: "audit_layer", "a value was not recorded: {e}");
            return marker(format!("the schema of {} does not compile: {e}", T::name()));
        }
    };
    // The value's JSON text is scratch: written into a buffer of the thread's, reused.
    thread_local! {
        static SCRATCH: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
    }
    let kept = SCRATCH.with_borrow_mut(|json| {
        json.clear();
        let serialized = serde_json::to_writer(&mut *json, value);
        let kept = serialized.map(|()| plan.redact_json(json));
        // A large value's buffer is not kept for the life of the thread.
        if json.capacity() > SCRATCH_KEPT {
            *json = Vec::new();
        }
        kept
    });
    match kept {
        Err(_) => marker(format!(
            "a value of {} does not serialize to JSON",
            T::name()
        )),
        Ok(Ok(kept)) => {
            Body::from_json(kept).unwrap_or_else(|_| marker("internal redaction error".into()))
        }
        Ok(Err(e)) => marker(e.to_string()),
    }
}

/// The largest scratch buffer a thread keeps between values: 64 KiB.
const SCRATCH_KEPT: usize = 64 * 1024;

fn marker(reason: String) -> Body {
    Body::from(json!({ "_unparsed": reason }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Serialize, ToSchema)]
    struct Record {
        #[schema(extensions(("x-auditable" = json!(true))))]
        name: String,
        #[schema(extensions(("x-auditable" = json!(true))))]
        ttl: u32,
        comment: String,
        settings: Settings,
        tags: Vec<Tag>,
    }

    #[derive(Serialize, ToSchema)]
    struct Settings {
        #[schema(extensions(("x-auditable" = json!(true))))]
        proxied: bool,
        secret: String,
    }

    #[derive(Serialize, ToSchema)]
    struct Tag {
        #[schema(extensions(("x-auditable" = json!(true))))]
        key: String,
        value: String,
    }

    #[derive(Serialize, ToSchema)]
    struct Leaky {
        #[schema(write_only, extensions(("x-auditable" = json!(true))))]
        password: String,
    }

    const CANARY: &str = "CANARY-TYPED-7f3e";

    #[test]
    fn a_value_keeps_only_its_marked_fields_nested_types_included() {
        let record = Record {
            name: "www".into(),
            ttl: 300,
            comment: CANARY.into(),
            settings: Settings {
                proxied: true,
                secret: CANARY.into(),
            },
            tags: vec![Tag {
                key: "env".into(),
                value: CANARY.into(),
            }],
        };
        let body = redact(&record);
        assert_eq!(
            body,
            json!({"name": "www", "ttl": 300, "settings": {"proxied": true}, "tags": [{"key": "env"}]})
        );
        assert!(!body.get().contains(CANARY));
    }

    #[test]
    fn a_marked_secret_is_an_error_naming_the_field_and_never_recorded() {
        let err = prepare::<Leaky>().unwrap_err().to_string();
        assert!(
            err.contains("#/components/schemas/Leaky/properties/password")
                && err.contains("writeOnly"),
            "{err}"
        );
        let body = redact(&Leaky {
            password: CANARY.into(),
        });
        assert!(!body.get().contains(CANARY), "{body}");
        assert!(
            body.to_value()["_unparsed"]
                .as_str()
                .unwrap()
                .contains("writeOnly")
        );
    }

    #[test]
    fn a_plan_is_compiled_once_per_type() {
        // Other tests fill the same process-wide cache meanwhile: the plan is compared by
        // identity, not by the size of the cache.
        prepare::<Settings>().unwrap();
        let first = plan_of::<Settings>().unwrap();
        for _ in 0..3 {
            redact(&Settings {
                proxied: false,
                secret: String::new(),
            });
        }
        assert!(plan_of::<Settings>().unwrap().is_same_plan(&first));
    }
}
