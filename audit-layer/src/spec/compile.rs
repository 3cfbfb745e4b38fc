//! OpenAPI 3.0/3.1 document → [`AuditPolicy`]. See the [parent module](super) for the rules.

use std::collections::HashMap;
use std::sync::Arc;

use http::Method;
use serde_json::{Map, Value};

use crate::policy::{AuditLevel, AuditPolicy, Operation, PolicyError, TenantParams};
use crate::record::ActionType;
use crate::redact::{
    ContentPlans, DROP, KEEP, Node, NodeId, PlanArena, QueryPlan, RedactionPlan, ResponsePlans,
    StatusPattern, TypeMask, types,
};

const METHODS: [(&str, Method); 8] = [
    ("get", Method::GET),
    ("put", Method::PUT),
    ("post", Method::POST),
    ("delete", Method::DELETE),
    ("options", Method::OPTIONS),
    ("head", Method::HEAD),
    ("patch", Method::PATCH),
    ("trace", Method::TRACE),
];

/// The extension naming an operation's product category, on the operation or on its path
/// item (for all its operations).
const CATEGORY: &str = "x-audit-product-category";

/// Plan roots by media type; `None` for a media type whose bodies are not recorded.
type MediaPlans = Vec<(Box<str>, Option<NodeId>)>;

/// An operation whose body plans are still arena node ids.
struct Pending {
    operation: Operation,
    request: MediaPlans,
    responses: Vec<(StatusPattern, MediaPlans)>,
}

/// Compiles a whole document.
pub(crate) fn compile(doc: &Value, tenants: &TenantParams) -> Result<AuditPolicy, PolicyError> {
    let version = doc.get("openapi").and_then(Value::as_str).unwrap_or("");
    if !(version.starts_with("3.0") || version.starts_with("3.1")) {
        return Err(spec_error(
            "/openapi",
            format!("unsupported OpenAPI version {version:?}: expected 3.0.x or 3.1.x"),
        ));
    }
    let mut compiler = Compiler {
        doc,
        arena: PlanArena::default(),
        memo: HashMap::new(),
    };
    let mut pending = Vec::new();
    if let Some(paths) = doc.get("paths") {
        let paths = as_object(paths, "/paths")?;
        for (template, item) in paths {
            let item_ptr = format!("/paths/{}", escape_pointer(template));
            let (item, item_ptr) = compiler.resolve(item, &item_ptr)?;
            let item = as_object(item, &item_ptr)?;
            let shared_params = item.get("parameters");
            let shared_category = extension_str(item, CATEGORY, &item_ptr)?;
            for (name, method) in &METHODS {
                if let Some(op) = item.get(*name) {
                    let op_ptr = format!("{item_ptr}/{name}");
                    let mut next = compiler.operation(
                        template,
                        method.clone(),
                        op,
                        &op_ptr,
                        shared_params,
                        &item_ptr,
                    )?;
                    if let Some(category) = shared_category
                        && !as_object(op, &op_ptr)?.contains_key(CATEGORY)
                    {
                        next.operation = next.operation.product_category(category);
                    }
                    pending.push(next);
                }
            }
        }
    }
    let arena = Arc::new(compiler.arena);
    let plan = |node: Option<NodeId>| node.map(|root| RedactionPlan::new(Arc::clone(&arena), root));
    let content = |entries: Vec<(Box<str>, Option<NodeId>)>| {
        ContentPlans::new(
            entries
                .into_iter()
                .map(|(media, node)| (media, plan(node)))
                .collect(),
        )
    };
    let mut builder = AuditPolicy::builder().tenant_params(tenants.clone());
    for p in pending {
        let responses = p
            .responses
            .into_iter()
            .map(|(status, entries)| (status, content(entries)))
            .collect();
        builder = builder.operation(
            p.operation
                .request_plans(content(p.request))
                .response_plans(ResponsePlans::new(responses)),
        );
    }
    builder.build()
}

/// Compiles the schema at `pointer` in `doc` (whose `$ref`s point into `doc`) into a plan of
/// its own: a value of that schema keeps only what it marks auditable.
#[cfg(feature = "utoipa")]
pub(crate) fn compile_schema(doc: &Value, pointer: &str) -> Result<RedactionPlan, PolicyError> {
    let mut compiler = Compiler {
        doc,
        arena: PlanArena::default(),
        memo: HashMap::new(),
    };
    let Some(schema) = doc.pointer(pointer) else {
        return Err(spec_error(pointer, "no schema at this pointer"));
    };
    let root = compiler.schema(schema, pointer, false, 0)?;
    Ok(RedactionPlan::new(Arc::new(compiler.arena), root))
}

struct Compiler<'d> {
    doc: &'d Value,
    arena: PlanArena,
    /// Compiled `$ref` targets, by (pointer, whether the referring property was marked).
    memo: HashMap<(String, bool), NodeId>,
}

impl<'d> Compiler<'d> {
    /// Follows `$ref`s (to other parts of the same document) until a value without one.
    fn resolve(&self, value: &'d Value, ptr: &str) -> Result<(&'d Value, String), PolicyError> {
        let mut value = value;
        let mut ptr = ptr.to_owned();
        for _ in 0..64 {
            let Some(reference) = value.get("$ref") else {
                return Ok((value, ptr));
            };
            let (target, target_ptr) = self.target(reference, &ptr)?;
            value = target;
            ptr = target_ptr;
        }
        Err(spec_error(
            &ptr,
            "a chain of more than 64 $refs: is it a loop?",
        ))
    }

    /// The value a `$ref` points at.
    fn target(&self, reference: &Value, ptr: &str) -> Result<(&'d Value, String), PolicyError> {
        let Some(reference) = reference.as_str() else {
            return Err(spec_error(ptr, "$ref must be a string"));
        };
        let Some(pointer) = reference.strip_prefix('#') else {
            return Err(spec_error(
                ptr,
                format!(
                    "external $ref {reference:?} is not supported: bundle the document into one file first"
                ),
            ));
        };
        let decoded = percent_encoding::percent_decode_str(pointer).decode_utf8_lossy();
        match self.doc.pointer(&decoded) {
            Some(target) => Ok((target, decoded.into_owned())),
            None => Err(spec_error(
                ptr,
                format!("dangling $ref {reference:?}: nothing in the document has that pointer"),
            )),
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn operation(
        &mut self,
        template: &str,
        method: Method,
        op: &'d Value,
        ptr: &str,
        shared_params: Option<&'d Value>,
        item_ptr: &str,
    ) -> Result<Pending, PolicyError> {
        let op = as_object(op, ptr)?;
        let mut operation = Operation::new(method, template);
        if let Some(summary) = op.get("summary").and_then(Value::as_str) {
            operation = operation.summary(summary);
        }
        if extension_bool(op, "x-audit", ptr)? == Some(false) {
            operation = operation.not_audited();
        }
        if let Some(action) = extension_str(op, "x-audit-action", ptr)? {
            let action: ActionType = action
                .parse()
                .map_err(|e| spec_error(&format!("{ptr}/x-audit-action"), format!("{e}")))?;
            operation = operation.action(action);
        }
        if let Some(strict) = extension_bool(op, "x-audit-strict", ptr)? {
            operation = operation.strict(strict);
        }
        if let Some(level) = extension_str(op, "x-audit-level", ptr)? {
            let level: AuditLevel = level
                .parse()
                .map_err(|e: String| spec_error(&format!("{ptr}/x-audit-level"), e))?;
            operation = operation.level(level);
        }
        if let Some(scope) = extension_str(op, "x-audit-scope", ptr)? {
            operation = operation.scope(scope);
        }
        if let Some(product) = extension_str(op, "x-audit-product", ptr)? {
            operation = operation.product(product);
        }
        if let Some(category) = extension_str(op, CATEGORY, ptr)? {
            operation = operation.product_category(category);
        }
        if let Some(kind) = extension_str(op, "x-audit-resource-type", ptr)? {
            operation = operation.resource_type(kind);
        }

        let query = self.query_params(shared_params, item_ptr, op.get("parameters"), ptr)?;
        let (auditable, declared): (Vec<_>, Vec<_>) = query.into_iter().partition(|(_, m)| *m);
        operation = operation.query_plan(
            QueryPlan::new(auditable.into_iter().map(|(name, _)| name))
                .declare(declared.into_iter().map(|(name, _)| name)),
        );

        let request = match op.get("requestBody") {
            Some(body) => {
                let (body, body_ptr) = self.resolve(body, &format!("{ptr}/requestBody"))?;
                self.content(body.get("content"), &format!("{body_ptr}/content"))?
            }
            None => Vec::new(),
        };
        let mut responses = Vec::new();
        if let Some(all) = op.get("responses") {
            for (status, response) in as_object(all, &format!("{ptr}/responses"))? {
                let status_ptr = format!("{ptr}/responses/{}", escape_pointer(status));
                let Some(pattern) = StatusPattern::parse(status) else {
                    return Err(spec_error(
                        &status_ptr,
                        format!(
                            "{status:?} is not a response status: expected e.g. 200, 2XX or default"
                        ),
                    ));
                };
                let (response, response_ptr) = self.resolve(response, &status_ptr)?;
                let content =
                    self.content(response.get("content"), &format!("{response_ptr}/content"))?;
                responses.push((pattern, content));
            }
        }
        Ok(Pending {
            operation,
            request,
            responses,
        })
    }

    /// The query parameters, by name, and whether each is marked auditable (operation
    /// parameters override the path item's of the same name).
    fn query_params(
        &mut self,
        shared: Option<&'d Value>,
        shared_ptr: &str,
        own: Option<&'d Value>,
        own_ptr: &str,
    ) -> Result<Vec<(String, bool)>, PolicyError> {
        let mut marked: Vec<(String, bool)> = Vec::new();
        for (list, base) in [(shared, shared_ptr), (own, own_ptr)] {
            let Some(list) = list else { continue };
            let list_ptr = format!("{base}/parameters");
            let Some(list) = list.as_array() else {
                return Err(spec_error(&list_ptr, "parameters must be an array"));
            };
            for (i, param) in list.iter().enumerate() {
                let (param, param_ptr) = self.resolve(param, &format!("{list_ptr}/{i}"))?;
                if param.get("in").and_then(Value::as_str) != Some("query") {
                    continue;
                }
                let Some(name) = param.get("name").and_then(Value::as_str) else {
                    return Err(spec_error(&param_ptr, "a parameter needs a name"));
                };
                let schema = param.get("schema");
                let is_marked = mark(param, &param_ptr)?
                    || match schema {
                        Some(schema) => mark(schema, &format!("{param_ptr}/schema"))?,
                        None => false,
                    };
                if is_marked && let Some(schema) = schema {
                    let (schema, schema_ptr) =
                        self.resolve(schema, &format!("{param_ptr}/schema"))?;
                    forbid_secret(schema, &schema_ptr)?;
                }
                marked.retain(|(n, _)| n != name);
                marked.push((name.to_owned(), is_marked));
            }
        }
        Ok(marked)
    }

    /// Plans by media type for a `content` map.
    fn content(
        &mut self,
        content: Option<&'d Value>,
        ptr: &str,
    ) -> Result<MediaPlans, PolicyError> {
        let Some(content) = content else {
            return Ok(Vec::new());
        };
        let mut entries = Vec::new();
        for (media, media_object) in as_object(content, ptr)? {
            let media_ptr = format!("{ptr}/{}", escape_pointer(media));
            let essence = media
                .split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase();
            let json =
                essence == "application/json" || essence.ends_with("+json") || essence == "*/*";
            let node = if json {
                match media_object.get("schema") {
                    Some(schema) => {
                        Some(self.schema(schema, &format!("{media_ptr}/schema"), false, 0)?)
                    }
                    None => Some(DROP),
                }
            } else {
                None
            };
            entries.push((essence.into_boxed_str(), node));
        }
        Ok(entries)
    }

    /// Compiles one schema. `marked`: the property holding this value is marked auditable.
    ///
    /// A schema that describes a secret (`writeOnly`, `format: password`) keeps nothing: one
    /// marked itself is refused by [`forbid_secret`], and one whose `$ref` or `allOf` parts
    /// are marked (a reusable auditable type given to a password field) is refused here.
    fn schema(
        &mut self,
        schema: &'d Value,
        ptr: &str,
        marked: bool,
        depth: usize,
    ) -> Result<NodeId, PolicyError> {
        let id = self.schema_parts(schema, ptr, marked, depth)?;
        if is_secret(schema) && !matches!(self.arena.get(id), Node::Drop) {
            return Err(spec_error(
                ptr,
                "this field is a secret (writeOnly or format: password), but the schemas it \
                 is made of ($ref, allOf) are marked x-auditable: secrets are never auditable; \
                 give it a schema that is not marked",
            ));
        }
        Ok(id)
    }

    /// [`schema`](Self::schema) without the secret check.
    fn schema_parts(
        &mut self,
        schema: &'d Value,
        ptr: &str,
        marked: bool,
        depth: usize,
    ) -> Result<NodeId, PolicyError> {
        if depth > 256 {
            return Err(spec_error(ptr, "schema nested deeper than 256 levels"));
        }
        let object = match schema {
            Value::Object(object) => object,
            Value::Bool(true) => return Ok(if marked { KEEP } else { DROP }),
            Value::Bool(false) => return Ok(DROP),
            _ => return Err(spec_error(ptr, "a schema must be an object or a boolean")),
        };
        let marked = marked || mark(schema, ptr)?;
        if marked {
            forbid_secret(schema, ptr)?;
        }

        if let Some(reference) = object.get("$ref") {
            let (target, target_ptr) = self.target(reference, ptr)?;
            let key = (target_ptr, marked);
            if let Some(&id) = self.memo.get(&key) {
                return Ok(id);
            }
            let id = self.arena.reserve();
            self.memo.insert(key.clone(), id);
            let compiled = self.schema(target, &key.0, marked, depth + 1)?;
            // 3.1 allows siblings next to $ref (utoipa puts them there): combine them too.
            let siblings = object.keys().any(|k| is_structural(k));
            let node = if siblings {
                let own = self.structure(object, ptr, marked, depth)?;
                self.combine(&[compiled, own], Combinator::All)
            } else {
                compiled
            };
            let resolved = self.arena.get(node).clone();
            self.arena.set(id, resolved);
            return Ok(id);
        }
        self.structure(object, ptr, marked, depth)
    }

    /// The plan of a schema object's own keywords (all but `$ref`).
    fn structure(
        &mut self,
        object: &'d Map<String, Value>,
        ptr: &str,
        marked: bool,
        depth: usize,
    ) -> Result<NodeId, PolicyError> {
        let mut parts = Vec::new();
        for keyword in ["allOf", "oneOf", "anyOf"] {
            let Some(branches) = object.get(keyword) else {
                continue;
            };
            let Some(branches) = branches.as_array() else {
                return Err(spec_error(
                    &format!("{ptr}/{keyword}"),
                    format!("{keyword} must be an array"),
                ));
            };
            let combinator = if keyword == "allOf" {
                Combinator::All
            } else {
                Combinator::Alternatives
            };
            let mut compiled = Vec::with_capacity(branches.len());
            for (i, branch) in branches.iter().enumerate() {
                // `{"type": "null"}` makes the others nullable; it is no alternative shape.
                if combinator == Combinator::Alternatives && is_null_schema(branch) {
                    continue;
                }
                compiled.push(self.schema(
                    branch,
                    &format!("{ptr}/{keyword}/{i}"),
                    marked,
                    depth + 1,
                )?);
            }
            parts.push(self.combine(&compiled, combinator));
        }

        if let Some(properties) = object.get("properties") {
            let props_ptr = format!("{ptr}/properties");
            let mut props = Vec::new();
            for (name, property) in as_object(properties, &props_ptr)? {
                let property_ptr = format!("{props_ptr}/{}", escape_pointer(name));
                let node = self.schema(property, &property_ptr, false, depth + 1)?;
                props.push((Box::<str>::from(name.as_str()), node));
            }
            let additional = match object.get("additionalProperties") {
                Some(schema @ Value::Object(_)) => self.schema(
                    schema,
                    &format!("{ptr}/additionalProperties"),
                    false,
                    depth + 1,
                )?,
                _ => DROP,
            };
            parts.push(
                if props.iter().all(|(_, n)| *n == DROP) && additional == DROP {
                    DROP
                } else {
                    self.arena.object(props, additional)
                },
            );
        } else if let Some(schema @ Value::Object(_)) = object.get("additionalProperties") {
            // A map: every value by the value schema; marking the map marks its values.
            let values = self.schema(
                schema,
                &format!("{ptr}/additionalProperties"),
                marked,
                depth + 1,
            )?;
            parts.push(match values {
                DROP => DROP,
                values => self.arena.object(Vec::new(), values),
            });
        } else if let Some(items) = object.get("items") {
            let items = self.schema(items, &format!("{ptr}/items"), marked, depth + 1)?;
            parts.push(self.arena.array(items));
        }

        Ok(match parts.len() {
            0 if marked => self.arena.keep(type_mask(object)),
            0 => DROP,
            _ => self.combine(&parts, Combinator::All),
        })
    }

    /// One plan from several (`allOf` parts, `oneOf`/`anyOf` branches, `$ref` siblings).
    ///
    /// The parts that declare structure (objects, arrays) decide, and a key several of them
    /// declare is kept only if each keeps it. Parts that declare no structure (a `required`
    /// list, a description) take no part in that. If no part declares structure the value is a
    /// scalar: kept if marked, or if every alternative (`oneOf`/`anyOf`) or any part (`allOf`)
    /// is kept.
    fn combine(&mut self, parts: &[NodeId], combinator: Combinator) -> NodeId {
        let structural: Vec<NodeId> = parts
            .iter()
            .copied()
            .filter(|&id| {
                matches!(self.arena.get(id), Node::Object { .. } | Node::Array { .. })
                    || self.is_pending(id)
            })
            .collect();
        if let Some((&first, rest)) = structural.split_first() {
            return rest
                .iter()
                .fold(first, |acc, &next| self.arena.intersect(acc, next));
        }
        let masks: Vec<TypeMask> = parts
            .iter()
            .filter_map(|&p| match self.arena.get(p) {
                Node::Keep(mask) => Some(*mask),
                _ => None,
            })
            .collect();
        let kept = match combinator {
            Combinator::All => !masks.is_empty(),
            Combinator::Alternatives => !parts.is_empty() && masks.len() == parts.len(),
        };
        if kept {
            let union = masks.iter().fold(0, |acc, m| acc | m);
            self.arena.keep(union)
        } else {
            DROP
        }
    }

    /// Whether `id` is a `$ref` still being compiled (a cycle back to it).
    fn is_pending(&self, id: NodeId) -> bool {
        id > KEEP
            && matches!(self.arena.get(id), Node::Drop)
            && self.memo.values().any(|&m| m == id)
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Combinator {
    /// `allOf`: every part applies.
    All,
    /// `oneOf`/`anyOf`: the value is one of them.
    Alternatives,
}

/// The JSON types a schema allows: from `type` (a name or, in 3.1, a list), else from the
/// values of `enum`/`const`, else any. `null` is always allowed: it carries nothing.
fn type_mask(schema: &Map<String, Value>) -> TypeMask {
    fn of_name(name: &str) -> TypeMask {
        match name {
            "null" => types::NULL,
            "boolean" => types::BOOLEAN,
            "integer" => types::INTEGER,
            "number" => types::NUMBER,
            "string" => types::STRING,
            "array" => types::ARRAY,
            "object" => types::OBJECT,
            _ => types::ANY,
        }
    }
    fn of_value(value: &Value) -> TypeMask {
        match value {
            Value::Null => types::NULL,
            Value::Bool(_) => types::BOOLEAN,
            Value::Number(n) if n.is_f64() => types::NUMBER,
            Value::Number(_) => types::INTEGER,
            Value::String(_) => types::STRING,
            Value::Array(_) => types::ARRAY,
            Value::Object(_) => types::OBJECT,
        }
    }
    let mask = match (schema.get("type"), schema.get("enum"), schema.get("const")) {
        (Some(Value::String(name)), _, _) => of_name(name),
        (Some(Value::Array(names)), _, _) => names
            .iter()
            .map(|n| n.as_str().map_or(types::ANY, of_name))
            .fold(0, |acc, m| acc | m),
        (None, Some(Value::Array(values)), _) => values.iter().fold(0, |acc, v| acc | of_value(v)),
        (None, None, Some(value)) => of_value(value),
        _ => types::ANY,
    };
    if mask == 0 {
        types::ANY
    } else {
        mask | types::NULL
    }
}

/// `{"type": "null"}`, `{"const": null}`, `{"enum": [null]}`.
fn is_null_schema(schema: &Value) -> bool {
    schema.get("type").and_then(Value::as_str) == Some("null")
        || schema.get("const") == Some(&Value::Null)
        || schema
            .get("enum")
            .and_then(Value::as_array)
            .is_some_and(|e| e.len() == 1 && e[0].is_null())
}

/// Whether a schema (or parameter) carries `x-auditable: true`.
fn mark(value: &Value, ptr: &str) -> Result<bool, PolicyError> {
    match value.get("x-auditable") {
        None | Some(Value::Bool(false)) => Ok(false),
        Some(Value::Bool(true)) => Ok(true),
        Some(_) => Err(spec_error(
            &format!("{ptr}/x-auditable"),
            "x-auditable must be true or false",
        )),
    }
}

/// Whether a schema describes a secret: `writeOnly`, or `format: password`.
fn is_secret(schema: &Value) -> bool {
    schema.get("writeOnly") == Some(&Value::Bool(true))
        || schema.get("format").and_then(Value::as_str) == Some("password")
}

/// A marked value that is a secret by its own description is a spec error.
fn forbid_secret(schema: &Value, ptr: &str) -> Result<(), PolicyError> {
    if schema.get("writeOnly") == Some(&Value::Bool(true)) {
        return Err(spec_error(
            ptr,
            "x-auditable is set on a writeOnly field: write-only values are secrets and never auditable; remove x-auditable",
        ));
    }
    if schema.get("format").and_then(Value::as_str) == Some("password") {
        return Err(spec_error(
            ptr,
            "x-auditable is set on a field with format: password: passwords are never auditable; remove x-auditable",
        ));
    }
    Ok(())
}

fn is_structural(keyword: &str) -> bool {
    matches!(
        keyword,
        "properties" | "additionalProperties" | "items" | "allOf" | "oneOf" | "anyOf"
    )
}

fn extension_str<'a>(
    op: &'a Map<String, Value>,
    name: &str,
    ptr: &str,
) -> Result<Option<&'a str>, PolicyError> {
    match op.get(name) {
        None => Ok(None),
        Some(Value::String(s)) if !s.is_empty() => Ok(Some(s)),
        Some(_) => Err(spec_error(
            &format!("{ptr}/{name}"),
            format!("{name} must be a non-empty string"),
        )),
    }
}

fn extension_bool(
    op: &Map<String, Value>,
    name: &str,
    ptr: &str,
) -> Result<Option<bool>, PolicyError> {
    match op.get(name) {
        None => Ok(None),
        Some(Value::Bool(value)) => Ok(Some(*value)),
        Some(_) => Err(spec_error(
            &format!("{ptr}/{name}"),
            format!("{name} must be true or false"),
        )),
    }
}

fn as_object<'a>(value: &'a Value, ptr: &str) -> Result<&'a Map<String, Value>, PolicyError> {
    value
        .as_object()
        .ok_or_else(|| spec_error(ptr, "expected an object"))
}

/// `~` and `/` escaped for a JSON pointer token (RFC 6901).
pub(crate) fn escape_pointer(token: &str) -> String {
    token.replace('~', "~0").replace('/', "~1")
}

fn spec_error(pointer: &str, message: impl Into<String>) -> PolicyError {
    PolicyError::Spec {
        pointer: format!("#{pointer}"),
        message: message.into(),
    }
}
