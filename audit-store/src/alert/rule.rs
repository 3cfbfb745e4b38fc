//! An alert rule: which committed records count, grouped by what, how many within how long.

use std::time::Duration;

use crate::export::ExportConfigError;
use crate::model::{COLUMNS, Column, ColumnFilter, ColumnValue, FilterValue, StoredRecord};

/// A rule over committed records: records matching every filter, counted per account and per
/// value of a [`group_by`](Self::group_by) column, over a sliding window; when a group
/// reaches the threshold within the window, the rule fires, once per group per window.
///
/// ```
/// use std::time::Duration;
///
/// use audit_store::alert::AlertRule;
/// use audit_store::model::Column;
///
/// // 5 failed logins per actor in 5 minutes.
/// let rule = AlertRule::new("failed-logins", 5, Duration::from_secs(300))?
///     .only(Column::ActionType, ["login"])
///     .only(Column::ActionResult, ["failure"])
///     .group_by(Column::ActorEmail);
/// # Ok::<(), audit_store::export::ExportConfigError>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AlertRule {
    pub(super) name: String,
    pub(super) filters: Vec<ColumnFilter>,
    pub(super) group_by: Option<Column>,
    pub(super) threshold: u32,
    pub(super) window: Duration,
    pub(super) outside_hours_utc: Option<(u8, u8)>,
}

impl AlertRule {
    /// A rule named `name` (1 to 64 letters, digits, `-`, `_` or `.`) that fires when
    /// `threshold` (at least 1) matching records of one account fall within `window`.
    ///
    /// # Errors
    ///
    /// When the name, threshold or window is invalid.
    pub fn new(name: &str, threshold: u32, window: Duration) -> Result<Self, ExportConfigError> {
        ExportConfigError::check_name("alert rule", name)?;
        if threshold == 0 {
            return Err(ExportConfigError::new(format!(
                "invalid threshold of alert rule {name:?}: expected at least 1"
            )));
        }
        if window.is_zero() {
            return Err(ExportConfigError::new(format!(
                "invalid window of alert rule {name:?}: expected more than 0 s"
            )));
        }
        Ok(Self {
            name: name.to_owned(),
            filters: Vec::new(),
            group_by: None,
            threshold,
            window,
            outside_hours_utc: None,
        })
    }

    /// Counts only records matching `filter` (the query API's filters; several are AND-ed).
    #[must_use]
    pub fn filter(mut self, filter: ColumnFilter) -> Self {
        self.filters.push(filter);
        self
    }

    /// Counts only records whose text `column` is one of `values`.
    #[must_use]
    pub fn only<V: Into<String>>(
        self,
        column: Column,
        values: impl IntoIterator<Item = V>,
    ) -> Self {
        self.filter(ColumnFilter {
            column,
            negated: false,
            values: values
                .into_iter()
                .map(|v| FilterValue::Text(v.into()))
                .collect(),
        })
    }

    /// Counts each value of `column` apart (records where it is empty are not counted).
    /// Defaults to one count per account.
    #[must_use]
    pub fn group_by(mut self, column: Column) -> Self {
        self.group_by = Some(column);
        self
    }

    /// Counts only records whose time is outside `[start, end)` o'clock UTC (office hours;
    /// `start` may be after `end` for a span over midnight).
    ///
    /// # Errors
    ///
    /// When an hour is above 23.
    pub fn outside_hours_utc(mut self, start: u8, end: u8) -> Result<Self, ExportConfigError> {
        if start > 23 || end > 23 {
            return Err(ExportConfigError::new(format!(
                "invalid office hours of alert rule {:?}: expected hours from 0 to 23",
                self.name
            )));
        }
        self.outside_hours_utc = Some((start, end));
        Ok(self)
    }

    /// The rule's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Whether `record` counts for this rule.
    pub(super) fn matches(&self, record: &StoredRecord) -> bool {
        if let Some((start, end)) = self.outside_hours_utc {
            let hour = u8::try_from(record.time_ms.rem_euclid(86_400_000) / 3_600_000).unwrap_or(0);
            let inside = if start <= end {
                (start..end).contains(&hour)
            } else {
                hour >= start || hour < end
            };
            if inside {
                return false;
            }
        }
        self.filters.iter().all(|filter| {
            let value = value_of(record, filter.column);
            let listed = filter.values.iter().any(|v| equal(&value, v));
            match (filter.negated, value) {
                (false, ColumnValue::Text(None)) => false,
                (false, _) => listed,
                (true, ColumnValue::Text(None)) => true,
                (true, _) => !listed,
            }
        })
    }

    /// The group `record` counts in; `None` when the grouping column is empty.
    pub(super) fn group_of(&self, record: &StoredRecord) -> Option<String> {
        let Some(column) = self.group_by else {
            return Some(String::new());
        };
        match value_of(record, column) {
            ColumnValue::Text(None) => None,
            ColumnValue::Text(Some("")) => None,
            ColumnValue::Text(Some(text)) => Some(text.to_owned()),
            ColumnValue::Int(i) => i.map(|i| i.to_string()),
            ColumnValue::BigInt(i) => Some(i.to_string()),
            ColumnValue::Uuid(u) => Some(u.to_string()),
        }
    }
}

/// A filterable column's value in a stored record (the same value SQL filters compare).
fn value_of(record: &StoredRecord, column: Column) -> ColumnValue<'_> {
    COLUMNS
        .iter()
        .find(|c| c.name == column.name())
        .map_or(ColumnValue::Text(None), |c| c.value(record))
}

fn equal(value: &ColumnValue<'_>, wanted: &FilterValue) -> bool {
    match (value, wanted) {
        (ColumnValue::Text(Some(a)), FilterValue::Text(b)) => a == b,
        (ColumnValue::Int(Some(a)), FilterValue::Int(b)) => a == b,
        (ColumnValue::Uuid(a), FilterValue::Uuid(b)) => a == b,
        _ => false,
    }
}
