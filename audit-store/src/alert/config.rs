//! Alert rules from a YAML file.

use std::time::Duration;

use serde::Deserialize;

use super::AlertRule;
use crate::export::ExportConfigError;
use crate::model::{Column, ColumnFilter, FilterValue};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RulesFile {
    rules: Vec<RuleEntry>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleEntry {
    name: String,
    #[serde(default)]
    filter: std::collections::BTreeMap<String, OneOrMany>,
    group_by: Option<String>,
    threshold: u32,
    window: String,
    outside_hours_utc: Option<[u8; 2]>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum OneOrMany {
    One(Scalar),
    Many(Vec<Scalar>),
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Scalar {
    Int(i64),
    Text(String),
}

/// Parses alert rules from YAML:
///
/// ```yaml
/// rules:
///   - name: failed-logins
///     filter: { action_type: login, action_result: failure }
///     group_by: actor_email
///     threshold: 5
///     window: 5m
///   - name: policy-deleted
///     filter: { action_type: delete, resource_type: policies }
///     threshold: 1
///     window: 1m
///   - name: tokens-after-hours
///     filter: { action_type: create, resource_type: tokens }
///     threshold: 1
///     window: 1m
///     outside_hours_utc: [8, 18]
/// ```
///
/// Filters are the query API's (`action_type`, `actor_email`, `raw_status_code`, ...; a name
/// ending in `.not` excludes its values); a list of values matches any of them. Windows are
/// a number and a unit: `30s`, `5m`, `1h`.
///
/// ```
/// let rules = audit_store::alert::rules_from_yaml(
///     "rules:\n  - {name: deletes, filter: {action_type: delete}, threshold: 1, window: 1m}\n",
/// )?;
/// assert_eq!(rules[0].name(), "deletes");
/// # Ok::<(), audit_store::export::ExportConfigError>(())
/// ```
///
/// # Errors
///
/// A message naming the rule and the setting that is wrong.
pub fn rules_from_yaml(text: &str) -> Result<Vec<AlertRule>, ExportConfigError> {
    let file: RulesFile = yaml_serde::from_str(text)
        .map_err(|e| ExportConfigError::new(format!("invalid alert rules: {e}")))?;
    file.rules.into_iter().map(rule_of).collect()
}

fn rule_of(entry: RuleEntry) -> Result<AlertRule, ExportConfigError> {
    let name = entry.name;
    let window = parse_window(&entry.window).ok_or_else(|| {
        ExportConfigError::new(format!(
            "invalid window {:?} of alert rule {name:?}: expected a number and s, m or h (5m)",
            entry.window
        ))
    })?;
    let mut rule = AlertRule::new(&name, entry.threshold, window)?;
    for (key, values) in entry.filter {
        let (column_name, negated) = match key.strip_suffix(".not") {
            Some(column) => (column, true),
            None => (key.as_str(), false),
        };
        let column = column_named(column_name).ok_or_else(|| {
            ExportConfigError::new(format!(
                "unknown filter {key:?} of alert rule {name:?}: expected one of the query API's \
                 filters (action_type, actor_email, ...)"
            ))
        })?;
        let values = match values {
            OneOrMany::One(v) => vec![v],
            OneOrMany::Many(v) => v,
        };
        let values = values
            .into_iter()
            .map(|v| value_of(column, v))
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| {
                ExportConfigError::new(format!(
                    "invalid value of filter {key:?} of alert rule {name:?}"
                ))
            })?;
        rule = rule.filter(ColumnFilter {
            column,
            negated,
            values,
        });
    }
    if let Some(group) = entry.group_by {
        let column = column_named(&group).ok_or_else(|| {
            ExportConfigError::new(format!(
                "unknown group_by {group:?} of alert rule {name:?}: expected a filter's name \
                 (actor_email, actor_ip_address, ...)"
            ))
        })?;
        rule = rule.group_by(column);
    }
    if let Some([start, end]) = entry.outside_hours_utc {
        rule = rule.outside_hours_utc(start, end)?;
    }
    Ok(rule)
}

fn column_named(name: &str) -> Option<Column> {
    Column::ALL.into_iter().find(|c| c.name() == name)
}

fn value_of(column: Column, value: Scalar) -> Option<FilterValue> {
    match (column, value) {
        (Column::RawStatusCode, Scalar::Int(i)) => i32::try_from(i).ok().map(FilterValue::Int),
        (Column::RawStatusCode, Scalar::Text(t)) => t.parse().ok().map(FilterValue::Int),
        (Column::Id, Scalar::Text(t)) => t.parse().ok().map(FilterValue::Uuid),
        (Column::Id, Scalar::Int(_)) => None,
        (_, Scalar::Text(t)) => Some(FilterValue::Text(t)),
        (_, Scalar::Int(i)) => Some(FilterValue::Text(i.to_string())),
    }
}

/// `30s`, `5m`, `1h`.
fn parse_window(text: &str) -> Option<Duration> {
    let text = text.trim();
    let unit = text.chars().last()?;
    let number: u64 = text[..text.len() - unit.len_utf8()].trim().parse().ok()?;
    let seconds = match unit {
        's' => number,
        'm' => number.checked_mul(60)?,
        'h' => number.checked_mul(3600)?,
        _ => return None,
    };
    Some(Duration::from_secs(seconds))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rules_file_parses_with_filters_groups_and_hours() {
        let rules = rules_from_yaml(
            "rules:\n  - name: failed-logins\n    filter: { action_type: login, action_result: [failure], raw_status_code.not: 200 }\n    group_by: actor_email\n    threshold: 5\n    window: 5m\n    outside_hours_utc: [8, 18]\n",
        )
        .unwrap();
        let rule = &rules[0];
        assert_eq!(rule.threshold, 5);
        assert_eq!(rule.window, Duration::from_secs(300));
        assert_eq!(rule.group_by, Some(Column::ActorEmail));
        assert_eq!(rule.outside_hours_utc, Some((8, 18)));
        assert!(
            rule.filters
                .iter()
                .any(|f| f.negated && f.values == vec![FilterValue::Int(200)])
        );
    }

    #[test]
    fn a_bad_rule_is_named_with_what_is_wrong() {
        let err = |yaml: &str| rules_from_yaml(yaml).unwrap_err().to_string();
        assert!(
            err("rules:\n  - {name: r, threshold: 1, window: 5 minutes}\n")
                .contains("invalid window \"5 minutes\" of alert rule \"r\"")
        );
        assert!(
            err("rules:\n  - {name: r, filter: {colour: red}, threshold: 1, window: 1m}\n")
                .contains("unknown filter \"colour\"")
        );
        assert!(err("rules:\n  - {name: r, threshold: 0, window: 1m}\n").contains("threshold"));
        assert!(
            err("rules:\n  - {name: r, treshold: 1, window: 1m}\n").contains("invalid alert rules")
        );
    }
}
