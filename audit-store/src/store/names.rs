//! Where a store's tables are: the one place their names are built. Every statement of the
//! stores, and the migrations (see [`migrations`](super::migrations)), take the names from a
//! [`TableNames`].

use crate::{Result, StoreError};

/// The prefix of the store's tables by default: `audit_logs`, `audit_chain_heads`,
/// `audit_checkpoints`, and the migrations table `_audit_migrations`.
pub const DEFAULT_PREFIX: &str = "audit_";

/// The longest prefix: the longest name built from it (`<prefix>logs_account_actor_email`,
/// an index) then stays within PostgreSQL's 63 bytes.
const MAX_PREFIX: usize = 32;

/// The names of a store's tables: a prefix (default [`DEFAULT_PREFIX`]) and, on PostgreSQL,
/// a schema (default none: the tables are found through the connection's `search_path`).
///
/// The prefix replaces `audit_` in every name the store creates: tables, indexes, PostgreSQL's
/// monthly partitions and the migrations table (`_<prefix>migrations`). Give a store its
/// names before its first [`migrate`](super::AuditStore::migrate), and always the same ones:
/// a store with other names sees another, empty, log.
///
/// ```
/// use audit_store::store::TableNames;
///
/// # fn main() -> audit_store::Result<()> {
/// let names = TableNames::new().prefix("billing_audit_")?.schema("compliance")?;
/// assert_eq!(names.logs(), r#""compliance".billing_audit_logs"#);
/// assert_eq!(names.migrations(), r#""compliance"._billing_audit_migrations"#);
/// assert_eq!(TableNames::new().logs(), "audit_logs");
/// assert!(TableNames::new().prefix("audit logs; DROP TABLE x; --").is_err());
/// # Ok(()) }
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TableNames {
    prefix: String,
    schema: Option<String>,
    logs: String,
    chain_heads: String,
    checkpoints: String,
    migrations: String,
}

impl Default for TableNames {
    fn default() -> Self {
        Self::build(DEFAULT_PREFIX.to_owned(), None)
    }
}

impl TableNames {
    /// The default names: prefix `audit_`, no schema.
    pub fn new() -> Self {
        Self::default()
    }

    /// The prefix of every name (`audit_` by default): 1 to 32 characters, lower-case ASCII
    /// letters, digits and `_`, starting with a letter or `_`.
    ///
    /// # Errors
    ///
    /// [`StoreError::Config`] naming the prefix when it is not such an identifier.
    pub fn prefix(self, prefix: &str) -> Result<Self> {
        check_identifier("table prefix", prefix, MAX_PREFIX)?;
        Ok(Self::build(prefix.to_owned(), self.schema))
    }

    /// The PostgreSQL schema holding the tables; the migrations create it when missing.
    /// Defaults to none: unqualified names, found through the `search_path`. A SQLite store
    /// refuses names with a schema.
    ///
    /// # Errors
    ///
    /// [`StoreError::Config`] naming the schema when it is not 1 to 63 lower-case ASCII
    /// letters, digits and `_`, starting with a letter or `_`, or starts with `pg_`.
    pub fn schema(self, schema: &str) -> Result<Self> {
        check_identifier("PostgreSQL schema", schema, 63)?;
        if schema.starts_with("pg_") {
            return Err(StoreError::Config(format!(
                "invalid PostgreSQL schema {schema:?}: names starting with pg_ are reserved"
            )));
        }
        Ok(Self::build(self.prefix, Some(schema.to_owned())))
    }

    fn build(prefix: String, schema: Option<String>) -> Self {
        let qualified = |name: String| match &schema {
            Some(schema) => format!("\"{schema}\".{name}"),
            None => name,
        };
        Self {
            logs: qualified(format!("{prefix}logs")),
            chain_heads: qualified(format!("{prefix}chain_heads")),
            checkpoints: qualified(format!("{prefix}checkpoints")),
            migrations: qualified(format!("_{prefix}migrations")),
            prefix,
            schema,
        }
    }

    /// The prefix (`audit_` by default).
    pub fn table_prefix(&self) -> &str {
        &self.prefix
    }

    /// The PostgreSQL schema, if one was set.
    pub fn schema_name(&self) -> Option<&str> {
        self.schema.as_deref()
    }

    /// The records' table, as written in SQL (schema-qualified when a schema is set).
    pub fn logs(&self) -> &str {
        &self.logs
    }

    /// The chains' heads table, as written in SQL.
    pub fn chain_heads(&self) -> &str {
        &self.chain_heads
    }

    /// The signed checkpoints' table, as written in SQL.
    pub fn checkpoints(&self) -> &str {
        &self.checkpoints
    }

    /// The table [`migrate`](super::AuditStore::migrate) records the store's migrations in
    /// (`_audit_migrations` by default), as written in SQL.
    pub fn migrations(&self) -> &str {
        &self.migrations
    }

    /// `name` in the schema, if one is set (for names built from the prefix, such as
    /// PostgreSQL's partitions).
    #[cfg_attr(not(any(test, feature = "postgres")), allow(dead_code))]
    pub(crate) fn qualify(&self, name: &str) -> String {
        match &self.schema {
            Some(schema) => format!("\"{schema}\".{name}"),
            None => name.to_owned(),
        }
    }

    /// A SQLite store's names: no schema.
    #[cfg_attr(not(feature = "sqlite"), allow(dead_code))]
    pub(crate) fn for_sqlite(self) -> Result<Self> {
        match &self.schema {
            None => Ok(self),
            Some(schema) => Err(StoreError::Config(format!(
                "a SQLite store has no schema (got {schema:?}): schemas are PostgreSQL's; use a \
                 table prefix instead"
            ))),
        }
    }
}

/// Checks that `value` is a plain lower-case SQL identifier of at most `max` bytes.
fn check_identifier(what: &str, value: &str, max: usize) -> Result<()> {
    let mut chars = value.chars();
    let starts_well = chars
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c == '_');
    let rest_ok = chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if starts_well && rest_ok && value.len() <= max {
        return Ok(());
    }
    let shown: String = value.chars().take(80).collect();
    Err(StoreError::Config(format!(
        "invalid {what} {shown:?}: expected 1 to {max} lower-case ASCII letters, digits and '_', \
         starting with a letter or '_'"
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_defaults_are_the_names_of_earlier_releases() {
        let names = TableNames::default();
        assert_eq!(
            (
                names.logs(),
                names.chain_heads(),
                names.checkpoints(),
                names.migrations()
            ),
            (
                "audit_logs",
                "audit_chain_heads",
                "audit_checkpoints",
                "_audit_migrations"
            )
        );
        assert_eq!(names.qualify("audit_logs_p2026_01"), "audit_logs_p2026_01");
    }

    #[test]
    fn a_schema_qualifies_every_name_and_the_prefix_replaces_audit() {
        let names = TableNames::new()
            .schema("s1")
            .unwrap()
            .prefix("x_")
            .unwrap();
        assert_eq!(names.logs(), "\"s1\".x_logs");
        assert_eq!(names.chain_heads(), "\"s1\".x_chain_heads");
        assert_eq!(names.checkpoints(), "\"s1\".x_checkpoints");
        assert_eq!(names.migrations(), "\"s1\"._x_migrations");
        assert_eq!(names.qualify("x_logs_p2026_01"), "\"s1\".x_logs_p2026_01");
        assert!(names.for_sqlite().is_err());
    }

    #[test]
    fn bad_identifiers_are_refused_by_name() {
        for bad in ["", "Audit_", "a-b", "a b", "1x", "x\"; --", &"x".repeat(33)] {
            let e = TableNames::new().prefix(bad).unwrap_err().to_string();
            assert!(e.contains("invalid table prefix"), "{e}");
        }
        let e = TableNames::new()
            .schema("pg_catalog")
            .unwrap_err()
            .to_string();
        assert!(e.contains("reserved"), "{e}");
        assert!(TableNames::new().schema("").is_err());
    }
}
