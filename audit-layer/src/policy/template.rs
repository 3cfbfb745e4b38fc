//! Path templates (`/accounts/{account_id}/alerting/v3/policies/{policy_id}`), compiled once
//! into the names a record needs: scope, product, resource type, and which parameters carry the
//! account, zone and resource ids.

use std::borrow::Cow;
use std::sync::Arc;

use percent_encoding::percent_decode_str;

use super::{PolicyError, TenantParams};
use crate::escape;
use crate::record::MAX_PATH_ID_CHARS;

#[derive(Clone, Debug, PartialEq, Eq)]
enum Segment {
    Literal(Box<str>),
    Param(Box<str>),
    CatchAll(Box<str>),
}

/// A compiled path template.
#[derive(Clone, Debug)]
pub(crate) struct RouteTemplate {
    text: Arc<str>,
    segments: Box<[Segment]>,
    pub(crate) scope: Option<Arc<str>>,
    pub(crate) product: Option<Arc<str>>,
    pub(crate) kind: Option<Arc<str>>,
    account: Option<usize>,
    zone: Option<usize>,
    resource_id: Option<usize>,
}

/// The values of the parameters a record uses, taken from one request path.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct PathIds {
    pub(crate) account: Option<String>,
    pub(crate) zone: Option<String>,
    pub(crate) resource: Option<String>,
}

impl RouteTemplate {
    /// [`parse_with`](Self::parse_with) the default tenant parameters.
    #[cfg(test)]
    pub(crate) fn parse(template: &str) -> Result<Self, PolicyError> {
        Self::parse_with(template, &TenantParams::default())
    }

    /// Parses `template`, in OpenAPI (`{name}`) or axum (`{name}`, `{*rest}`) syntax; its
    /// account and zone ids are in the parameters `tenants` names.
    pub(crate) fn parse_with(template: &str, tenants: &TenantParams) -> Result<Self, PolicyError> {
        let invalid = |why: &str| PolicyError::InvalidTemplate {
            template: template.to_owned(),
            why: why.to_owned(),
        };
        let Some(rest) = template.strip_prefix('/') else {
            return Err(invalid("a path template must start with '/'"));
        };
        let mut segments = Vec::new();
        if !rest.is_empty() {
            let parts: Vec<&str> = rest.split('/').collect();
            for (i, part) in parts.iter().enumerate() {
                let segment = match part.strip_prefix('{').and_then(|p| p.strip_suffix('}')) {
                    Some(name) if name.starts_with('*') => {
                        if i + 1 != parts.len() {
                            return Err(invalid("a catch-all parameter must be the last segment"));
                        }
                        Segment::CatchAll(name[1..].into())
                    }
                    Some(name) => Segment::Param(name.into()),
                    None => Segment::Literal((*part).into()),
                };
                if let Segment::Param(name) | Segment::CatchAll(name) = &segment {
                    if name.is_empty() || name.contains(['{', '}', '*']) {
                        return Err(invalid("parameter names must be non-empty and plain"));
                    }
                } else if part.contains(['{', '}']) {
                    return Err(invalid(
                        "a parameter must span a whole segment, like /zones/{zone_id}",
                    ));
                }
                segments.push(segment);
            }
        }
        Ok(Self::from_segments(template, segments.into(), tenants))
    }

    fn from_segments(text: &str, segments: Box<[Segment]>, tenants: &TenantParams) -> Self {
        let param = |wanted: &str| {
            segments.iter().position(
                |s| matches!(s, Segment::Param(n) | Segment::CatchAll(n) if &**n == wanted),
            )
        };
        let is_param = |i: usize| matches!(segments.get(i), Some(Segment::Param(_)));
        let literal = |i: usize| match segments.get(i) {
            Some(Segment::Literal(l)) => Some(&**l),
            _ => None,
        };

        // /{scope}/{scope_id}/{product}/v3/.../{type}/{resource_id}
        let scope_at = segments
            .iter()
            .position(|s| matches!(s, Segment::Literal(_)));
        let scope = scope_at.and_then(literal);
        let scope_param = scope_at.map(|i| i + 1).filter(|&i| is_param(i));
        let after_scope = scope_at.map_or(0, |i| scope_param.unwrap_or(i) + 1);
        let names: Vec<&str> = (after_scope..segments.len())
            .filter_map(literal)
            .filter(|l| !is_version(l))
            .collect();
        let product = names.first().copied().or(scope);
        let kind = names.last().copied().or(scope);
        let last = segments.len().checked_sub(1);
        let resource_id = match last {
            Some(i) if is_param(i) && Some(i) != scope_param => Some(i),
            Some(i) if is_param(i) && names.is_empty() => scope_param,
            _ => None,
        };

        let scoped = |name: &str| scope_param.filter(|_| scope == Some(name));
        Self {
            text: text.into(),
            account: param(&tenants.account).or_else(|| scoped("accounts")),
            zone: param(&tenants.zone).or_else(|| scoped("zones")),
            resource_id,
            scope: scope.map(Arc::from),
            product: product.map(Arc::from),
            kind: kind.map(Arc::from),
            segments,
        }
    }

    /// The template as written.
    pub(crate) fn as_str(&self) -> &str {
        &self.text
    }

    /// The ids this template names, read from `path` (which it is known to match).
    pub(crate) fn ids(&self, path: &str) -> PathIds {
        let wanted = [self.account, self.zone, self.resource_id];
        if wanted.iter().all(Option::is_none) {
            return PathIds::default();
        }
        let mut found: [Option<String>; 3] = Default::default();
        // Each part's end found by a byte loop: `str::splitn` searches with `memchr`, whose
        // set-up costs more than these short segments (~450 instructions a request in the
        // layer bench's GET; callgrind, `cargo bench -p audit-layer --bench layer`).
        let mut rest = Some(path.strip_prefix('/').unwrap_or(path));
        let last = self.segments.len().saturating_sub(1);
        for (i, segment) in self.segments.iter().enumerate() {
            let Some(current) = rest else { break };
            // The last segment keeps the rest of the path, as `splitn` would.
            let end = (i < last)
                .then(|| current.bytes().position(|b| b == b'/'))
                .flatten();
            let (part, after) = match end {
                Some(at) => (&current[..at], Some(&current[at + 1..])),
                None => (current, None),
            };
            rest = after;
            if matches!(segment, Segment::Literal(_)) {
                continue;
            }
            for (slot, want) in found.iter_mut().zip(wanted) {
                if want == Some(i) {
                    *slot = Some(path_value(part));
                }
            }
        }
        let [account, zone, resource] = found;
        PathIds {
            account,
            zone,
            resource,
        }
    }
}

/// A percent-decoded, escaped, bounded path parameter value.
fn path_value(raw: &str) -> String {
    // Visible ASCII but `%`, in one fold without an early exit (it compiles to SIMD).
    let plain = raw.bytes().fold(true, |plain, b| {
        plain & (b.wrapping_sub(0x21) < 0x5e) & (b != b'%')
    });
    if raw.len() <= MAX_PATH_ID_CHARS && plain {
        return raw.to_owned();
    }
    let decoded: Cow<'_, [u8]> = percent_decode_str(raw).into();
    let visible = escape::visible(&decoded);
    match visible.char_indices().nth(MAX_PATH_ID_CHARS) {
        Some((cut, _)) => visible[..cut].to_owned(),
        None => visible.into_owned(),
    }
}

/// `v3`, `v1.1`, `2`: version segments name no product or resource.
fn is_version(segment: &str) -> bool {
    let digits = segment.strip_prefix(['v', 'V']).unwrap_or(segment);
    !digits.is_empty() && digits.chars().all(|c| c.is_ascii_digit() || c == '.')
}

#[cfg(test)]
mod tests {
    use super::*;

    /// (scope, product, resource type) of a template.
    fn names(t: &str) -> [Option<String>; 3] {
        let t = RouteTemplate::parse(t).unwrap();
        [&t.scope, &t.product, &t.kind].map(|v| v.as_deref().map(str::to_owned))
    }

    fn o(s: &str) -> Option<String> {
        Some(s.to_owned())
    }

    #[test]
    fn resource_names_follow_the_original_system() {
        for (template, [scope, product, kind]) in [
            (
                "/accounts/{account_id}/alerting/v3/policies/{policy_id}",
                ["accounts", "alerting", "policies"],
            ),
            (
                "/accounts/{account_id}",
                ["accounts", "accounts", "accounts"],
            ),
            (
                "/accounts/{account_id}/members",
                ["accounts", "members", "members"],
            ),
            (
                "/zones/{zone_id}/dns_records/{record_id}",
                ["zones", "dns_records", "dns_records"],
            ),
            ("/zones", ["zones", "zones", "zones"]),
            ("/login", ["login", "login", "login"]),
        ] {
            assert_eq!(
                names(template),
                [o(scope), o(product), o(kind)],
                "{template}"
            );
        }
        assert_eq!(names("/"), [None, None, None]);
    }

    #[test]
    fn ids_come_from_the_path() {
        let t = RouteTemplate::parse("/accounts/{account_id}/alerting/v3/policies/{policy_id}")
            .unwrap();
        assert_eq!(
            t.ids("/accounts/acc_1/alerting/v3/policies/p%2F1"),
            PathIds {
                account: o("acc_1"),
                zone: None,
                resource: o("p/1")
            }
        );
        let t = RouteTemplate::parse("/zones/{zone_id}/dns_records/{record_id}").unwrap();
        let ids = t.ids("/zones/z1/dns_records/r%1b9");
        assert_eq!((ids.zone, ids.resource), (o("z1"), o(r"r\x1b9")));
        let t = RouteTemplate::parse("/accounts/{id}").unwrap();
        let ids = t.ids("/accounts/acc_2");
        assert_eq!((ids.account, ids.resource), (o("acc_2"), o("acc_2")));
        let t = RouteTemplate::parse("/accounts/{account_id}/members").unwrap();
        assert_eq!(t.ids("/accounts/a/members").resource, None);
    }

    #[test]
    fn catch_all_parameters_take_the_rest() {
        let t = RouteTemplate::parse("/zones/{zone_id}/files/{*path}").unwrap();
        let ids = t.ids("/zones/z/files/a/b/c");
        assert_eq!((ids.zone, ids.resource), (o("z"), None));
        assert_eq!(t.as_str(), "/zones/{zone_id}/files/{*path}");
    }

    #[test]
    fn malformed_templates_are_rejected_with_the_reason() {
        for (bad, why) in [
            ("accounts", "must start with '/'"),
            ("/a/{*rest}/b", "catch-all"),
            ("/a/{}", "non-empty"),
            ("/a/x{id}", "whole segment"),
        ] {
            let err = RouteTemplate::parse(bad).unwrap_err().to_string();
            assert!(err.contains(bad) && err.contains(why), "{bad}: {err}");
        }
    }
}
