//! Compiling an OpenAPI description into an [`AuditPolicy`].
//!
//! The app's own API description says what may be recorded. Three kinds of input compile to
//! the same policy, once, at start-up:
//!
//! - a `utoipa::openapi::OpenApi` (feature `utoipa`), as `#[derive(OpenApi)]` or utoipa-axum's
//!   `OpenApiRouter::split_for_parts()` returns it — OpenAPI 3.1;
//! - an `openapiv3::OpenAPI` (feature `openapiv3`), as dropshot and progenitor users hold one —
//!   OpenAPI 3.0;
//! - an [`OpenApiDocument`]: a JSON or YAML file or string, OpenAPI 3.0 or 3.1.
//!
//! # Markings
//!
//! Default deny: a value reaches a record only if its schema says `x-auditable: true`.
//!
//! - Scalars, arrays of scalars and free-form objects are kept iff their property is marked.
//! - Objects with declared `properties` are descended into — through `$ref` (cycles included),
//!   `allOf`, and the nullable forms (3.0 `nullable`, 3.1 `type: [X, "null"]`, `oneOf`/`anyOf`
//!   with a `{"type": "null"}` branch) — and appear only as containers of kept values. Marking
//!   the leaves is therefore enough.
//! - `oneOf`/`anyOf`: a key is kept only if every branch that declares it marks it.
//! - Arrays apply their item plan to each element. Keys the schema does not declare are
//!   dropped; `additionalProperties: {schema}` maps keep each entry by the value schema (a
//!   marked map keeps its scalar values).
//! - A query parameter keeps its value in `raw.uri` only if the parameter (or its schema) is
//!   marked; otherwise the value is `REDACTED`. A parameter the operation does not declare is
//!   recorded as `REDACTED`, name and value.
//!
//! Operation extensions: `x-audit: false` (record nothing, e.g. health checks),
//! `x-audit-action` (e.g. `login`), `x-audit-level` (`metadata`, `request`,
//! `request_response`), `x-audit-product`, `x-audit-resource-type`, `x-audit-scope`, and
//! `x-audit-product-category` (also on a path item, for all its operations): the category of
//! the operation's product, which the audit log API serves and filters by (see
//! [`AuditPolicy::product_categories`](crate::AuditPolicy::product_categories)).
//!
//! A broken description fails at start-up with the JSON pointer of the fault and the fix: a
//! dangling or external `$ref`, a marked field that is `writeOnly` or `format: password`, an
//! unknown level or action, a marking that is not a boolean.
//!
//! ```
//! use audit_layer::{AuditLayer, spec::OpenApiDocument};
//!
//! let doc = OpenApiDocument::from_yaml_str(r#"
//! openapi: 3.0.3
//! info: {title: Alerting, version: "1"}
//! paths:
//!   /accounts/{account_id}/alerting/v3/policies/{policy_id}:
//!     put:
//!       summary: Update a Notification policy
//!       requestBody:
//!         content:
//!           application/json:
//!             schema:
//!               type: object
//!               properties:
//!                 name: {type: string, x-auditable: true}
//!                 webhook_secret: {type: string}
//!       responses:
//!         "200": {description: OK}
//! "#)?;
//! let layer = AuditLayer::try_new(doc)?;
//! # Ok::<(), audit_layer::PolicyError>(())
//! ```
//!
//! # utoipa
//!
//! Mark a field with `#[schema(extensions(("x-auditable" = json!(true))))]`. utoipa keeps the
//! extension on fields of named structs, but silently drops it on fields whose schema is a
//! `$ref` (another `ToSchema` type, inline or `Option<Struct>`). That is harmless here: a
//! nested object is descended into anyway, so mark the leaves inside the nested type.

mod compile;

use std::path::Path;
use std::sync::Arc;

use serde_json::Value;

use crate::policy::{AuditPolicy, IntoAuditPolicy, PolicyError, TenantParams};

/// An OpenAPI 3.0 or 3.1 document, read from JSON or YAML.
#[derive(Clone, Debug)]
pub struct OpenApiDocument {
    document: Value,
    tenants: TenantParams,
}

impl OpenApiDocument {
    /// A document already parsed into JSON.
    pub fn from_value(document: Value) -> Self {
        Self {
            document,
            tenants: TenantParams::default(),
        }
    }

    /// Which path parameters carry the account and zone ids. Defaults to `account_id` and
    /// `zone_id` (see [`TenantParams`]). For a utoipa document, go through its JSON:
    ///
    /// ```
    /// use audit_layer::{AuditLayer, TenantParams};
    /// use audit_layer::spec::OpenApiDocument;
    ///
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let api = serde_json::json!({"openapi": "3.1.0", "info": {"title": "t", "version": "1"},
    ///     "paths": {"/orgs/{org_id}/members": {"get": {"responses": {"200": {"description": "ok"}}}}}});
    /// let spec = OpenApiDocument::from_value(api)
    ///     .tenant_params(TenantParams::new().account("org_id")?);
    /// let layer = AuditLayer::try_new(spec)?;
    /// # Ok(()) }
    /// ```
    #[must_use]
    pub fn tenant_params(mut self, tenants: TenantParams) -> Self {
        self.tenants = tenants;
        self
    }

    /// Parses a JSON document.
    ///
    /// # Errors
    ///
    /// When `text` is not JSON.
    pub fn from_json_str(text: &str) -> Result<Self, PolicyError> {
        serde_json::from_str(text)
            .map(Self::from_value)
            .map_err(|e| PolicyError::Parse {
                source_name: "the OpenAPI document".into(),
                message: format!("invalid JSON: {e}"),
            })
    }

    /// Parses a YAML document (YAML 1.2, a superset of JSON).
    ///
    /// # Errors
    ///
    /// When `text` is not YAML, or holds values JSON cannot (non-string keys, ...).
    pub fn from_yaml_str(text: &str) -> Result<Self, PolicyError> {
        yaml_serde::from_str::<Value>(text)
            .map(Self::from_value)
            .map_err(|e| PolicyError::Parse {
                source_name: "the OpenAPI document".into(),
                message: format!("invalid YAML: {e}"),
            })
    }

    /// Parses a document, JSON or YAML (JSON when it starts with `{`).
    ///
    /// # Errors
    ///
    /// When `text` is neither.
    pub fn from_str_any(text: &str) -> Result<Self, PolicyError> {
        if text.trim_start().starts_with('{') {
            Self::from_json_str(text)
        } else {
            Self::from_yaml_str(text)
        }
    }

    /// Reads a document from a file: JSON for `.json`, otherwise YAML (which also reads JSON).
    ///
    /// # Errors
    ///
    /// When the file cannot be read or parsed; the error names the file.
    pub fn from_path(path: impl AsRef<Path>) -> Result<Self, PolicyError> {
        let path = path.as_ref();
        let name = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| PolicyError::Parse {
            source_name: name.clone(),
            message: format!("cannot read the file: {e}"),
        })?;
        let is_json = path
            .extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("json"));
        let parsed = if is_json {
            Self::from_json_str(&text)
        } else {
            Self::from_yaml_str(&text)
        };
        parsed.map_err(|e| match e {
            PolicyError::Parse { message, .. } => PolicyError::Parse {
                source_name: name,
                message,
            },
            other => other,
        })
    }

    /// The document as JSON.
    pub fn as_value(&self) -> &Value {
        &self.document
    }

    /// Compiles the document into a policy.
    ///
    /// # Errors
    ///
    /// When the document is not a usable OpenAPI 3.0/3.1 description, with the JSON pointer
    /// of the fault.
    pub fn compile(&self) -> Result<AuditPolicy, PolicyError> {
        compile::compile(&self.document, &self.tenants)
    }
}

impl IntoAuditPolicy for OpenApiDocument {
    fn into_audit_policy(self) -> Result<Arc<AuditPolicy>, PolicyError> {
        self.compile().map(Arc::new)
    }
}

impl IntoAuditPolicy for &OpenApiDocument {
    fn into_audit_policy(self) -> Result<Arc<AuditPolicy>, PolicyError> {
        self.compile().map(Arc::new)
    }
}

#[cfg(feature = "utoipa")]
#[cfg_attr(docsrs, doc(cfg(feature = "utoipa")))]
impl IntoAuditPolicy for utoipa::openapi::OpenApi {
    fn into_audit_policy(self) -> Result<Arc<AuditPolicy>, PolicyError> {
        (&self).into_audit_policy()
    }
}

#[cfg(feature = "utoipa")]
#[cfg_attr(docsrs, doc(cfg(feature = "utoipa")))]
impl IntoAuditPolicy for &utoipa::openapi::OpenApi {
    fn into_audit_policy(self) -> Result<Arc<AuditPolicy>, PolicyError> {
        compile_serialized(self, "the utoipa OpenApi")
    }
}

#[cfg(feature = "openapiv3")]
#[cfg_attr(docsrs, doc(cfg(feature = "openapiv3")))]
impl IntoAuditPolicy for openapiv3::OpenAPI {
    fn into_audit_policy(self) -> Result<Arc<AuditPolicy>, PolicyError> {
        (&self).into_audit_policy()
    }
}

#[cfg(feature = "openapiv3")]
#[cfg_attr(docsrs, doc(cfg(feature = "openapiv3")))]
impl IntoAuditPolicy for &openapiv3::OpenAPI {
    fn into_audit_policy(self) -> Result<Arc<AuditPolicy>, PolicyError> {
        compile_serialized(self, "the openapiv3 OpenAPI")
    }
}

/// Compiles a description held as another crate's type, through the JSON it serializes to.
#[cfg(any(feature = "utoipa", feature = "openapiv3"))]
fn compile_serialized(
    description: &impl serde::Serialize,
    source_name: &str,
) -> Result<Arc<AuditPolicy>, PolicyError> {
    let document = serde_json::to_value(description).map_err(|e| PolicyError::Parse {
        source_name: source_name.into(),
        message: format!("does not serialize: {e}"),
    })?;
    OpenApiDocument::from_value(document).into_audit_policy()
}

/// The plan of one schema of `doc`, at `pointer` (see [`compile::compile_schema`]).
#[cfg(feature = "utoipa")]
pub(crate) fn schema_plan(
    doc: &Value,
    pointer: &str,
) -> Result<crate::redact::RedactionPlan, PolicyError> {
    compile::compile_schema(doc, pointer)
}

#[cfg(feature = "utoipa")]
pub(crate) use compile::escape_pointer;

#[cfg(test)]
mod tests;
