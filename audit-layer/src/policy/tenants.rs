//! Which path parameters carry the tenant: [`TenantParams`].

use std::sync::Arc;

use super::PolicyError;

/// The names of the path parameters whose values are a record's account id and zone id:
/// `account_id` and `zone_id` by default (`/accounts/{account_id}/...`). An app whose tenants
/// are, say, organizations names its own (`/orgs/{org_id}/...`).
///
/// Besides a parameter of that name, the parameter right after a leading `accounts` or
/// `zones` segment (`/accounts/{id}`) is the account's or the zone's, whatever its name.
///
/// ```
/// use audit_layer::{AuditPolicy, Operation, TenantParams};
/// use http::Method;
///
/// # fn main() -> Result<(), audit_layer::PolicyError> {
/// let policy = AuditPolicy::builder()
///     .tenant_params(TenantParams::new().account("org_id")?.zone("site_id")?)
///     .operation(Operation::new(Method::PUT, "/orgs/{org_id}/sites/{site_id}"))
///     .build()?;
/// # Ok(()) }
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TenantParams {
    pub(crate) account: Arc<str>,
    pub(crate) zone: Arc<str>,
}

impl Default for TenantParams {
    fn default() -> Self {
        Self {
            account: Arc::from("account_id"),
            zone: Arc::from("zone_id"),
        }
    }
}

impl TenantParams {
    /// The defaults: `account_id` and `zone_id`.
    pub fn new() -> Self {
        Self::default()
    }

    /// The parameter carrying the account id.
    ///
    /// # Errors
    ///
    /// [`PolicyError::InvalidTenantParam`] when `name` is empty or holds what a path template
    /// cannot name a parameter with (`{`, `}`, `/`, `*`).
    pub fn account(mut self, name: &str) -> Result<Self, PolicyError> {
        self.account = checked(name)?;
        Ok(self)
    }

    /// The parameter carrying the zone id.
    ///
    /// # Errors
    ///
    /// As [`account`](Self::account).
    pub fn zone(mut self, name: &str) -> Result<Self, PolicyError> {
        self.zone = checked(name)?;
        Ok(self)
    }

    /// The account parameter's name.
    pub fn account_param(&self) -> &str {
        &self.account
    }

    /// The zone parameter's name.
    pub fn zone_param(&self) -> &str {
        &self.zone
    }
}

fn checked(name: &str) -> Result<Arc<str>, PolicyError> {
    if name.is_empty()
        || name.len() > 128
        || name.chars().any(|c| "{}/*".contains(c) || c.is_control())
    {
        return Err(PolicyError::InvalidTenantParam {
            name: name.chars().take(128).collect(),
        });
    }
    Ok(Arc::from(name))
}

#[cfg(test)]
mod tests {
    use http::Method;

    use super::*;
    use crate::policy::{AuditPolicy, Operation, RouteTemplate};

    #[test]
    fn the_named_parameters_carry_the_account_and_zone() {
        let tenants = TenantParams::new()
            .account("org_id")
            .unwrap()
            .zone("site_id")
            .unwrap();
        let t =
            RouteTemplate::parse_with("/orgs/{org_id}/sites/{site_id}/pages/{page_id}", &tenants)
                .unwrap();
        let ids = t.ids("/orgs/o1/sites/s1/pages/p1");
        assert_eq!(ids.account.as_deref(), Some("o1"));
        assert_eq!(ids.zone.as_deref(), Some("s1"));
        assert_eq!(ids.resource.as_deref(), Some("p1"));
        // The defaults no longer name the account; a leading `accounts` segment still does.
        let t = RouteTemplate::parse_with("/x/{account_id}", &tenants).unwrap();
        assert_eq!(t.ids("/x/a1").account, None);
        let t = RouteTemplate::parse_with("/accounts/{id}/members", &tenants).unwrap();
        assert_eq!(t.ids("/accounts/a2/members").account.as_deref(), Some("a2"));
    }

    #[test]
    fn a_policy_and_its_undescribed_routes_use_the_names() {
        let policy = AuditPolicy::builder()
            .tenant_params(TenantParams::new().account("org_id").unwrap())
            .operation(Operation::new(Method::GET, "/orgs/{org_id}/members"))
            .build()
            .unwrap();
        let plan = policy
            .plan_for(&Method::GET, None, "/orgs/o9/members")
            .unwrap();
        assert_eq!(
            plan.template.ids("/orgs/o9/members").account.as_deref(),
            Some("o9")
        );
        let undescribed = policy
            .undescribed_plan(&Method::GET, "/orgs/{org_id}/teams")
            .unwrap();
        assert_eq!(
            undescribed
                .template
                .ids("/orgs/o8/teams")
                .account
                .as_deref(),
            Some("o8")
        );
    }

    #[test]
    fn names_a_template_cannot_hold_are_refused() {
        for bad in ["", "a}", "{a", "a/b", "*a", "a\nb"] {
            let e = TenantParams::new().account(bad).unwrap_err();
            assert!(
                e.to_string().contains("invalid tenant path parameter name"),
                "{e}"
            );
        }
    }
}
