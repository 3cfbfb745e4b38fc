//! Reading a stored record's fields by path, for the formats that map them.

use serde_json::Value;

/// A stored record parsed for mapping.
pub(super) struct Fields(pub(super) Value);

impl Fields {
    pub(super) fn parse(row: &crate::model::PageRow) -> Result<Self, super::FormatError> {
        match serde_json::from_str::<Value>(&row.record) {
            Ok(value @ Value::Object(_)) => Ok(Self(value)),
            Ok(_) => Err(super::FormatError::new(row.id, "not a JSON object")),
            Err(e) => Err(super::FormatError::new(row.id, &e.to_string())),
        }
    }

    /// The value at `path`, if present and not null.
    pub(super) fn get(&self, path: &[&str]) -> Option<&Value> {
        let mut value = &self.0;
        for key in path {
            value = value.get(key)?;
        }
        (!value.is_null()).then_some(value)
    }

    /// The string at `path`.
    pub(super) fn str(&self, path: &[&str]) -> Option<&str> {
        self.get(path).and_then(Value::as_str)
    }

    /// The request's ray id (`raw.cf_ray_id`, or `raw.ray_id` in records written before it
    /// was renamed).
    pub(super) fn ray_id(&self) -> Option<&str> {
        self.str(&["raw", "cf_ray_id"])
            .or_else(|| self.str(&["raw", "ray_id"]))
    }

    /// The HTTP status, as stored.
    pub(super) fn status_code(&self) -> Option<i64> {
        self.get(&["raw", "status_code"]).and_then(Value::as_i64)
    }
}
