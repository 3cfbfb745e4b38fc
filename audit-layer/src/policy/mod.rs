//! The compiled audit policy: what to record for each operation of an API.
//!
//! An [`AuditPolicy`] maps (method, path template) to a per-operation plan: its summary (the
//! record's `action.description`), action type, resource naming, how much of the exchange to
//! record ([`AuditLevel`]), and how to redact bodies and query strings. It is compiled once at
//! start-up; a request only looks its operation up.
//!
//! Requests to routes the policy does not describe are still recorded, with metadata only (no
//! bodies): their resource names come from axum's `MatchedPath` when the layer sits inside a
//! `Router` (feature `axum`), and are absent otherwise.
//!
//! ```
//! use audit_layer::{AuditLevel, AuditPolicy, Operation};
//! use audit_layer::record::ActionType;
//! use http::Method;
//!
//! let policy = AuditPolicy::builder()
//!     .operation(
//!         Operation::new(Method::PUT, "/accounts/{account_id}/alerting/v3/policies/{policy_id}")
//!             .summary("Update a Notification policy"),
//!     )
//!     .operation(Operation::new(Method::POST, "/login").action(ActionType::Login).product("auth"))
//!     .operation(Operation::new(Method::GET, "/healthz").not_audited())
//!     .build()?;
//! assert_eq!(policy.len(), 3);
//! # Ok::<(), audit_layer::PolicyError>(())
//! ```

mod categories;
mod router;
mod template;
mod tenants;

use std::collections::HashMap;
use std::sync::{Arc, PoisonError, RwLock};

use http::Method;

use crate::record::ActionType;
use crate::redact::{ContentPlans, QueryPlan, RedactedBody, ResponsePlans};
pub use categories::{ProductCategories, ProductCategory};
use router::SegmentRouter;
pub(crate) use template::{PathIds, RouteTemplate};
pub use tenants::TenantParams;

/// How many undescribed routes' plans are cached; an app has far fewer routes than this.
const MAX_UNDESCRIBED_ROUTES: usize = 4096;

/// A policy that cannot be compiled. Reported at start-up, never per request.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PolicyError {
    /// A tenant path parameter name a template cannot hold (see [`TenantParams`]).
    #[error(
        "invalid tenant path parameter name {name:?}: expected the name of a path parameter, \
         such as \"account_id\" (not empty, without {{ }} / *)"
    )]
    InvalidTenantParam {
        /// The name as given (at most 128 characters).
        name: String,
    },
    /// A path template that is not of the form `/segment/{param}/...`.
    #[error("invalid path template {template:?}: {why}")]
    InvalidTemplate {
        /// The template as given.
        template: String,
        /// What is wrong with it.
        why: String,
    },
    /// The same method and template described twice.
    #[error("operation {method} {template} is described twice: describe each operation once")]
    DuplicateOperation {
        /// The method.
        method: String,
        /// The path template.
        template: String,
    },
    /// A fault in an OpenAPI description, at a JSON pointer.
    #[error("audit spec error at {pointer}: {message}")]
    Spec {
        /// Where in the document, as a JSON pointer fragment (`#/paths/~1login/post`).
        pointer: String,
        /// What is wrong, and how to fix it.
        message: String,
    },
    /// An OpenAPI description that could not be read or parsed.
    #[error("cannot read {source_name}: {message}")]
    Parse {
        /// The file, or what was being read.
        source_name: String,
        /// Why.
        message: String,
    },
    /// A product category that cannot be used (see [`ProductCategories`]), or one given to an
    /// operation that has no product.
    #[error("invalid product category {category:?}: {why}")]
    ProductCategory {
        /// The category, escaped.
        category: String,
        /// What is wrong with it, and how to fix it.
        why: String,
    },
    /// Two templates that match the same paths (e.g. `/a/{x}` and `/a/{y}`).
    #[error("path template {template:?} conflicts with another template: {why}")]
    ConflictingTemplate {
        /// The template that could not be added.
        template: String,
        /// The router's explanation.
        why: String,
    },
}

/// How much of an exchange an operation's records keep.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum AuditLevel {
    /// Who, what, when, where and how; no bodies.
    Metadata,
    /// Metadata and the redacted request body.
    Request,
    /// Metadata and the redacted request and response bodies. The default for described
    /// operations.
    #[default]
    RequestResponse,
}

impl std::str::FromStr for AuditLevel {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "metadata" => Ok(Self::Metadata),
            "request" => Ok(Self::Request),
            "request_response" => Ok(Self::RequestResponse),
            other => Err(format!(
                "unknown audit level {other:?}: expected metadata, request or request_response"
            )),
        }
    }
}

/// One operation of the API, as the policy should record it.
///
/// Every setting is optional; an operation with none records the method's action type, the
/// names derived from its template, and bodies redacted by its plans (until redaction plans are
/// set, nothing of a body is kept).
#[derive(Clone, Debug)]
pub struct Operation {
    method: Method,
    template: String,
    summary: Option<String>,
    action: Option<ActionType>,
    scope: Option<String>,
    product: Option<String>,
    product_category: Option<String>,
    resource_type: Option<String>,
    level: AuditLevel,
    audited: bool,
    strict: Option<bool>,
    request: ContentPlans,
    response: ResponsePlans,
    query: QueryPlan,
}

impl Operation {
    /// An operation by method and path template (`/zones/{zone_id}`).
    pub fn new(method: Method, template: impl Into<String>) -> Self {
        Self {
            method,
            template: template.into(),
            summary: None,
            action: None,
            scope: None,
            product: None,
            product_category: None,
            resource_type: None,
            level: AuditLevel::default(),
            audited: true,
            strict: None,
            request: ContentPlans::default(),
            response: ResponsePlans::default(),
            query: QueryPlan::default(),
        }
    }

    /// The record's `action.description`. Defaults to none.
    pub fn summary(mut self, summary: impl Into<String>) -> Self {
        self.summary = Some(summary.into());
        self
    }

    /// The record's `action.type`. Defaults to the method's (`POST` is `create`, ...).
    pub fn action(mut self, action: ActionType) -> Self {
        self.action = Some(action);
        self
    }

    /// The record's `resource.scope`. Defaults to the template's first segment.
    pub fn scope(mut self, scope: impl Into<String>) -> Self {
        self.scope = Some(scope.into());
        self
    }

    /// The record's `resource.product`. Defaults to the first segment after the scope and its
    /// id that is not a version (`alerting` in `/accounts/{account_id}/alerting/v3/policies`).
    pub fn product(mut self, product: impl Into<String>) -> Self {
        self.product = Some(product.into());
        self
    }

    /// The product category the operation's product belongs to: the policy's
    /// [`product_categories`](AuditPolicy::product_categories) group the products of the
    /// operations naming each category, for the audit log API's `product_category` filter.
    /// Defaults to none.
    ///
    /// ```
    /// use audit_layer::{AuditPolicy, Operation};
    /// use http::Method;
    ///
    /// let policy = AuditPolicy::builder()
    ///     .operation(Operation::new(Method::PUT, "/zones/{zone_id}/dns_records/{id}")
    ///         .product("dns").product_category("DNS"))
    ///     .operation(Operation::new(Method::PATCH, "/zones/{zone_id}").product_category("DNS"))
    ///     .build()?;
    /// let dns = policy.product_categories().get("dns").unwrap();
    /// assert_eq!(dns.products(), ["dns", "zones"]);
    /// # Ok::<(), audit_layer::PolicyError>(())
    /// ```
    pub fn product_category(mut self, category: impl Into<String>) -> Self {
        self.product_category = Some(category.into());
        self
    }

    /// The record's `resource.type`. Defaults to the template's last literal segment
    /// (`policies`).
    pub fn resource_type(mut self, resource_type: impl Into<String>) -> Self {
        self.resource_type = Some(resource_type.into());
        self
    }

    /// How much of the exchange to keep. Defaults to [`AuditLevel::RequestResponse`].
    pub fn level(mut self, level: AuditLevel) -> Self {
        self.level = level;
        self
    }

    /// Strict mode for this operation, whatever the layer's setting
    /// ([`AuditLayer::strict`](crate::AuditLayer::strict)). Defaults to the layer's.
    pub fn strict(mut self, strict: bool) -> Self {
        self.strict = Some(strict);
        self
    }

    /// Records nothing at all for this operation (health checks, metrics scrapes).
    pub fn not_audited(mut self) -> Self {
        self.audited = false;
        self
    }

    /// Request plans by media type, as compiled from an API description.
    pub(crate) fn request_plans(mut self, plans: ContentPlans) -> Self {
        self.request = plans;
        self
    }

    /// Response plans by status and media type, as compiled from an API description.
    pub(crate) fn response_plans(mut self, plans: ResponsePlans) -> Self {
        self.response = plans;
        self
    }

    /// Which query parameters `raw.uri` names, and which keep their values (see
    /// [`QueryPlan`]). Defaults to none: every parameter is recorded as `REDACTED=REDACTED`.
    pub fn query_plan(mut self, plan: QueryPlan) -> Self {
        self.query = plan;
        self
    }
}

/// The compiled plan of one operation.
#[derive(Debug)]
pub(crate) struct OperationPlan {
    pub(crate) template: RouteTemplate,
    pub(crate) summary: Option<Arc<str>>,
    pub(crate) action: ActionType,
    pub(crate) scope: Option<Arc<str>>,
    pub(crate) product: Option<Arc<str>>,
    pub(crate) kind: Option<Arc<str>>,
    pub(crate) level: AuditLevel,
    pub(crate) audited: bool,
    pub(crate) strict: Option<bool>,
    pub(crate) request: ContentPlans,
    pub(crate) response: ResponsePlans,
    pub(crate) query: QueryPlan,
}

impl OperationPlan {
    fn compile(op: Operation, tenants: &TenantParams) -> Result<Self, PolicyError> {
        let template = RouteTemplate::parse_with(&op.template, tenants)?;
        let name = |explicit: Option<String>, derived: &Option<Arc<str>>| {
            explicit.map(Arc::from).or_else(|| derived.clone())
        };
        Ok(Self {
            summary: op.summary.map(Arc::from),
            action: op
                .action
                .unwrap_or_else(|| ActionType::from_method(&op.method)),
            scope: name(op.scope, &template.scope),
            product: name(op.product, &template.product),
            kind: name(op.resource_type, &template.kind),
            level: op.level,
            audited: op.audited,
            strict: op.strict,
            request: op.request,
            response: op.response,
            query: op.query,
            template,
        })
    }

    /// The plan for a route the policy does not describe: metadata only, names from the
    /// template axum matched.
    pub(crate) fn undescribed(method: &Method, template: RouteTemplate) -> Self {
        Self {
            summary: None,
            action: ActionType::from_method(method),
            scope: template.scope.clone(),
            product: template.product.clone(),
            kind: template.kind.clone(),
            level: AuditLevel::Metadata,
            audited: true,
            strict: None,
            request: ContentPlans::default(),
            response: ResponsePlans::default(),
            query: QueryPlan::default(),
            template,
        }
    }
}

/// The plans of one path template, by method.
type MethodPlans = Vec<(Method, Arc<OperationPlan>)>;

/// Builds an [`AuditPolicy`] from [`Operation`]s.
#[derive(Debug, Default)]
pub struct AuditPolicyBuilder {
    operations: Vec<Operation>,
    tenants: TenantParams,
}

impl AuditPolicyBuilder {
    /// Which path parameters carry the account and zone ids. Defaults to `account_id` and
    /// `zone_id` (see [`TenantParams`]).
    pub fn tenant_params(mut self, tenants: TenantParams) -> Self {
        self.tenants = tenants;
        self
    }

    /// Adds one operation.
    pub fn operation(mut self, operation: Operation) -> Self {
        self.operations.push(operation);
        self
    }

    /// Compiles the policy.
    ///
    /// # Errors
    ///
    /// A malformed path template, an operation described twice, or two templates that match
    /// the same paths.
    pub fn build(self) -> Result<AuditPolicy, PolicyError> {
        let mut policy = AuditPolicy {
            tenants: self.tenants,
            ..AuditPolicy::default()
        };
        for mut op in self.operations {
            let method = op.method.clone();
            let category = op.product_category.take();
            let plan = OperationPlan::compile(op, &policy.tenants)?;
            if let Some(category) = category {
                let Some(product) = plan.product.as_deref() else {
                    return Err(PolicyError::ProductCategory {
                        category,
                        why: format!(
                            "operation {method} {} has no product to put in it: set one \
                             (x-audit-product, Operation::product)",
                            plan.template.as_str()
                        ),
                    });
                };
                policy.categories =
                    std::mem::take(&mut policy.categories).category(&category, [product])?;
            }
            let template = plan.template.as_str().to_owned();
            let index = match policy.by_template.get(&template) {
                Some(&index) => index,
                None => {
                    let index = policy.routes.len();
                    policy.router.insert(template.clone(), index).map_err(|e| {
                        PolicyError::ConflictingTemplate {
                            template: template.clone(),
                            why: e.to_string(),
                        }
                    })?;
                    policy.segments.insert(&template, index);
                    policy.routes.push(Vec::new());
                    policy.by_template.insert(template.clone(), index);
                    index
                }
            };
            let methods = &mut policy.routes[index];
            if methods.iter().any(|(m, _)| *m == method) {
                return Err(PolicyError::DuplicateOperation {
                    method: method.to_string(),
                    template,
                });
            }
            methods.push((method, Arc::new(plan)));
            policy.operations += 1;
        }
        Ok(policy)
    }
}

/// The compiled audit policy of an API. See the [module docs](self).
///
/// The default policy describes no operation: every request is recorded with metadata only.
#[derive(Default)]
pub struct AuditPolicy {
    /// Refuses templates that conflict (the tree below assumes it did).
    router: matchit::Router<usize>,
    /// Finds the route of a path, as `router` would.
    segments: SegmentRouter,
    routes: Vec<MethodPlans>,
    by_template: HashMap<String, usize>,
    operations: usize,
    categories: ProductCategories,
    /// Plans for the routes axum matched that the policy does not describe, compiled on
    /// first use. Keys are route templates, so the map is bounded by the app's routes.
    undescribed: RwLock<HashMap<Box<str>, MethodPlans>>,
    /// Which path parameters carry the account and zone ids.
    tenants: TenantParams,
}

impl std::fmt::Debug for AuditPolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditPolicy")
            .field("operations", &self.operations)
            .finish_non_exhaustive()
    }
}

impl AuditPolicy {
    /// A builder to describe operations one by one.
    pub fn builder() -> AuditPolicyBuilder {
        AuditPolicyBuilder::default()
    }

    /// How many operations the policy describes.
    pub fn len(&self) -> usize {
        self.operations
    }

    /// Whether the policy describes no operation.
    pub fn is_empty(&self) -> bool {
        self.operations == 0
    }

    /// The product categories the operations declare, each with the products of the
    /// operations naming it (see [`Operation::product_category`]; `x-audit-product-category`
    /// in an API description). Give them to the audit log API, which serves them and filters
    /// by them.
    pub fn product_categories(&self) -> &ProductCategories {
        &self.categories
    }

    /// The plan for a request: by the template axum matched when there is one, otherwise by
    /// matching the path against the policy's own templates.
    pub(crate) fn plan_for(
        &self,
        method: &Method,
        matched_template: Option<&str>,
        path: &str,
    ) -> Option<Arc<OperationPlan>> {
        self.plan_ref(method, matched_template, path)
            .map(Arc::clone)
    }

    /// [`plan_for`](Self::plan_for), borrowed.
    #[inline]
    fn plan_ref(
        &self,
        method: &Method,
        matched_template: Option<&str>,
        path: &str,
    ) -> Option<&Arc<OperationPlan>> {
        let index = match matched_template {
            Some(template) => self.by_template.get(template).copied(),
            None => None,
        }
        .or_else(|| self.segments.at(path))?;
        let methods = self.routes.get(index)?;
        let find = |wanted: &Method| methods.iter().find(|(m, _)| m == wanted);
        // A HEAD is a GET without a body; axum routes it to the GET handler too.
        find(method)
            .or_else(|| {
                (*method == Method::HEAD)
                    .then(|| find(&Method::GET))
                    .flatten()
            })
            .map(|(_, plan)| plan)
    }

    /// The request body of `method path` as a record would hold it: the kept fields as JSON
    /// text, a `{"_unparsed": ...}` marker, or `None` when nothing is recorded (an empty body,
    /// an operation the policy does not describe or does not record bodies of).
    ///
    /// The layer does this for every request; it is public for tools, tests and fuzzing.
    ///
    /// ```
    /// use audit_layer::spec::OpenApiDocument;
    /// use http::Method;
    ///
    /// let policy = OpenApiDocument::from_yaml_str(r#"
    /// openapi: 3.1.0
    /// info: {title: t, version: "1"}
    /// paths:
    ///   /login:
    ///     post:
    ///       requestBody:
    ///         content:
    ///           application/json:
    ///             schema:
    ///               type: object
    ///               properties:
    ///                 email: {type: string, x-auditable: true}
    ///                 password: {type: string, format: password}
    /// "#)?.compile()?;
    /// let body = br#"{"email": "alice@example.com", "password": "hunter2"}"#;
    /// let kept = policy.redact_request_body(&Method::POST, "/login", Some("application/json"), body);
    /// assert_eq!(kept.unwrap().get(), r#"{"email":"alice@example.com"}"#);
    /// # Ok::<(), audit_layer::PolicyError>(())
    /// ```
    pub fn redact_request_body(
        &self,
        method: &Method,
        path: &str,
        content_type: Option<&str>,
        body: &[u8],
    ) -> Option<RedactedBody> {
        self.recording(method, path, AuditLevel::Request)?
            .request
            .redact_typed(content_type.map(str::as_bytes), body)
    }

    /// The response body of `method path` with `status`, as a record would hold it; see
    /// [`redact_request_body`](Self::redact_request_body).
    pub fn redact_response_body(
        &self,
        method: &Method,
        path: &str,
        status: u16,
        content_type: Option<&str>,
        body: &[u8],
    ) -> Option<RedactedBody> {
        self.recording(method, path, AuditLevel::RequestResponse)?
            .response
            .redact_typed(status, content_type.map(str::as_bytes), body)
    }

    /// The plan of `method path` when its records keep at least `level`.
    fn recording(&self, method: &Method, path: &str, level: AuditLevel) -> Option<&OperationPlan> {
        let plan = self.plan_ref(method, None, path)?;
        (plan.audited && plan.level >= level).then_some(&**plan)
    }

    /// The metadata-only plan for a route axum matched that the policy does not describe.
    pub(crate) fn undescribed_plan(
        &self,
        method: &Method,
        matched_template: &str,
    ) -> Option<Arc<OperationPlan>> {
        let cache = &self.undescribed;
        let cached = |methods: &MethodPlans| {
            methods
                .iter()
                .find(|(m, _)| m == method)
                .map(|(_, p)| Arc::clone(p))
        };
        if let Some(plan) = cache
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(matched_template)
            .and_then(cached)
        {
            return Some(plan);
        }
        let template = RouteTemplate::parse_with(matched_template, &self.tenants).ok()?;
        let plan = Arc::new(OperationPlan::undescribed(method, template));
        let mut cache = cache.write().unwrap_or_else(PoisonError::into_inner);
        if cache.len() < MAX_UNDESCRIBED_ROUTES {
            cache
                .entry(matched_template.into())
                .or_default()
                .push((method.clone(), Arc::clone(&plan)));
        }
        Some(plan)
    }
}

/// Anything the layer can compile an [`AuditPolicy`] from.
pub trait IntoAuditPolicy {
    /// Compiles the policy.
    ///
    /// # Errors
    ///
    /// When the description is inconsistent; the error says where and how to fix it.
    fn into_audit_policy(self) -> Result<Arc<AuditPolicy>, PolicyError>;
}

impl IntoAuditPolicy for AuditPolicy {
    fn into_audit_policy(self) -> Result<Arc<AuditPolicy>, PolicyError> {
        Ok(Arc::new(self))
    }
}

impl IntoAuditPolicy for Arc<AuditPolicy> {
    fn into_audit_policy(self) -> Result<Arc<AuditPolicy>, PolicyError> {
        Ok(self)
    }
}

impl IntoAuditPolicy for AuditPolicyBuilder {
    fn into_audit_policy(self) -> Result<Arc<AuditPolicy>, PolicyError> {
        self.build().map(Arc::new)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> AuditPolicy {
        AuditPolicy::builder()
            .operation(
                Operation::new(
                    Method::PUT,
                    "/accounts/{account_id}/alerting/v3/policies/{policy_id}",
                )
                .summary("Update a Notification policy"),
            )
            .operation(Operation::new(
                Method::GET,
                "/accounts/{account_id}/alerting/v3/policies/{policy_id}",
            ))
            .operation(
                Operation::new(Method::POST, "/login")
                    .action(ActionType::Login)
                    .scope("user")
                    .product("auth")
                    .resource_type("session"),
            )
            .build()
            .unwrap()
    }

    #[test]
    fn operations_are_found_by_template_or_by_path() {
        let policy = policy();
        let path = "/accounts/a/alerting/v3/policies/p";
        let by_path = policy.plan_for(&Method::PUT, None, path).unwrap();
        assert_eq!(
            by_path.summary.as_deref(),
            Some("Update a Notification policy")
        );
        assert_eq!(by_path.action, ActionType::Update);
        let template = "/accounts/{account_id}/alerting/v3/policies/{policy_id}";
        let by_template = policy.plan_for(&Method::PUT, Some(template), path).unwrap();
        assert!(Arc::ptr_eq(&by_path, &by_template));
        assert!(policy.plan_for(&Method::DELETE, None, path).is_none());
        assert!(policy.plan_for(&Method::GET, None, "/nowhere").is_none());
        assert_eq!(
            policy.plan_for(&Method::HEAD, None, path).unwrap().action,
            ActionType::View
        );
    }

    #[test]
    fn overrides_replace_derived_names() {
        let plan = policy().plan_for(&Method::POST, None, "/login").unwrap();
        assert_eq!(plan.action, ActionType::Login);
        assert_eq!(plan.scope.as_deref(), Some("user"));
        assert_eq!(plan.product.as_deref(), Some("auth"));
        assert_eq!(plan.kind.as_deref(), Some("session"));
    }

    #[test]
    fn inconsistent_policies_fail_to_build() {
        let twice = AuditPolicy::builder()
            .operation(Operation::new(Method::GET, "/zones"))
            .operation(Operation::new(Method::GET, "/zones"))
            .build()
            .unwrap_err();
        assert_eq!(
            twice.to_string(),
            "operation GET /zones is described twice: describe each operation once"
        );
        let conflict = AuditPolicy::builder()
            .operation(Operation::new(Method::GET, "/zones/{zone_id}"))
            .operation(Operation::new(Method::GET, "/zones/{id}"))
            .build()
            .unwrap_err();
        assert!(
            matches!(conflict, PolicyError::ConflictingTemplate { .. }),
            "{conflict}"
        );
    }

    #[test]
    fn audit_levels_parse_with_a_helpful_error() {
        assert_eq!("request".parse(), Ok(AuditLevel::Request));
        assert_eq!(
            "everything".parse::<AuditLevel>().unwrap_err(),
            "unknown audit level \"everything\": expected metadata, request or request_response"
        );
    }
}
