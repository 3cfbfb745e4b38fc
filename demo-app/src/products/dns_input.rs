//! The document's schema of a DNS record to write (`DnsRecordInput`), written out by hand: its
//! rules depend on the record's type (an `A` record's content is an IPv4 address, an `MX`
//! record cannot be proxied...), which a derived schema cannot say. Each branch of its `anyOf`
//! is one type; `dns::check` enforces exactly these rules.

use serde_json::{Value, json};
use utoipa::openapi::{RefOr, Schema};

/// A host name's labels (letters, digits, `-`, `_`), a leading `*` wildcard allowed; a
/// trailing dot and surrounding spaces are allowed too.
const HOST: &str = r"^\s*(\*|(\*\.)?[A-Za-z0-9_-]{1,63}(\.[A-Za-z0-9_-]{1,63})*)\.*\s*$";

/// An IPv4 address as Rust reads one: four decimal bytes, no leading zeros; spaces around.
const IPV4: &str = r"^\s*((25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])\.){3}(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])\s*$";

/// A record's name: `@` or nothing for the zone apex, or host-name labels.
const NAME: &str = r"^\s*(@|\*|(\*\.)?[A-Za-z0-9_-]{1,63}(\.[A-Za-z0-9_-]{1,63})*)?\.*\s*$";

/// `x-auditable: true` added to `schema`.
fn auditable(mut schema: Value) -> Value {
    schema["x-auditable"] = Value::Bool(true);
    schema
}

/// The branch of one record type: `type` (any case), what `content` must be, and whether it
/// may be proxied.
fn branch(type_pattern: &str, content: Value, proxiable: bool) -> Value {
    let proxied = if proxiable {
        json!({"type": ["boolean", "null"]})
    } else {
        json!({"type": ["boolean", "null"], "enum": [false, null]})
    };
    json!({
        "type": "object",
        "properties": {
            "type": auditable(json!({"type": "string", "pattern": type_pattern})),
            "content": auditable(content),
            "proxied": auditable(proxied),
        },
    })
}

/// The schema of `DnsRecordInput`.
pub(super) fn schema() -> RefOr<Schema> {
    let host = json!({"type": "string", "maxLength": 253, "pattern": HOST});
    let types = [
        branch(
            "^[aA]$",
            json!({"type": "string", "format": "ipv4", "pattern": IPV4}),
            true,
        ),
        branch(
            "^[aA]{4}$",
            json!({"type": "string", "format": "ipv6"}),
            true,
        ),
        branch("^[cC][nN][aA][mM][eE]$", host.clone(), true),
        branch("^[mM][xX]$", host.clone(), false),
        branch("^[nN][sS]$", host, false),
        branch(
            "^[tT][xX][tT]$",
            json!({"type": "string", "minLength": 1, "maxLength": 2048, "pattern": r"\S"}),
            false,
        ),
    ];
    let fields = json!({
        "type": "object",
        "description": "A DNS record to create, or to replace an existing one with.",
        "required": ["type", "name", "content"],
        "properties": {
            "type": auditable(json!({
                "type": "string",
                "description": "`A`, `AAAA`, `CNAME`, `MX`, `NS` or `TXT` (any case).",
            })),
            "name": auditable(json!({
                "type": "string",
                "maxLength": 253,
                "pattern": NAME,
                "description": "The name: `@` for the zone apex, a name relative to the zone \
                    (`www`), or a fully qualified name inside the zone; at most 253 characters.",
            })),
            "content": auditable(json!({
                "type": "string",
                "description": "The value: an IPv4 address (`A`), an IPv6 address (`AAAA`), a \
                    host name (`CNAME`, `MX`, `NS`) or text (`TXT`, up to 2048 characters).",
            })),
            "ttl": auditable(json!({
                "description": "Time to live in seconds (30–86400), or `1` for automatic (the \
                    default).",
                "anyOf": [
                    {"type": "null"},
                    {"type": "integer", "enum": [1]},
                    {"type": "integer", "minimum": 30, "maximum": 86400},
                ],
            })),
            "proxied": auditable(json!({
                "type": ["boolean", "null"],
                "description": "Whether to proxy traffic to the name (`A`, `AAAA` and `CNAME` \
                    only). Defaults to `false`.",
            })),
            "comment": {
                "type": ["string", "null"],
                "maxLength": 100,
                "description": "A note for people (up to 100 characters). Not recorded.",
            },
        },
    });
    let schema = json!({"allOf": [fields, {"anyOf": types}]});
    // A literal above: it always has the shape of a schema.
    serde_json::from_value(schema).unwrap_or_else(|e| panic!("the DNS input schema: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_schema_says_what_each_type_needs() {
        let schema = serde_json::to_value(schema()).unwrap();
        let branches = schema["allOf"][1]["anyOf"].as_array().unwrap();
        assert_eq!(branches.len(), 6);
        assert_eq!(branches[0]["properties"]["content"]["format"], "ipv4");
        assert_eq!(
            branches[3]["properties"]["proxied"]["enum"],
            json!([false, null])
        );
        assert_eq!(
            schema["allOf"][0]["properties"]["ttl"]["anyOf"][1]["enum"],
            json!([1])
        );
    }
}
