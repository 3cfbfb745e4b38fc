//! The one list of stored columns: each column's name, SQL type and where a [`StoredRecord`]
//! keeps its value. Both backends build their statements, binds and decoders from it, and the
//! chain hashes a record's columns in its order.

use uuid::Uuid;

use super::StoredRecord;

/// The SQL type of a stored column.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ColumnType {
    /// A UUID (`uuid` in PostgreSQL, a 16-byte blob in SQLite).
    Uuid,
    /// A 64-bit integer.
    BigInt,
    /// A 32-bit integer, possibly NULL.
    Int,
    /// Text, possibly NULL.
    Text,
}

/// One column's value in a [`StoredRecord`], borrowed from it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ColumnValue<'a> {
    /// A [`ColumnType::Uuid`] value.
    Uuid(Uuid),
    /// A [`ColumnType::BigInt`] value.
    BigInt(i64),
    /// A [`ColumnType::Int`] value; `None` is NULL.
    Int(Option<i32>),
    /// A [`ColumnType::Text`] value; `None` is NULL.
    Text(Option<&'a str>),
}

/// A column of the `audit_logs` table that every record fills.
#[derive(Clone, Copy)]
pub struct StoredColumn {
    /// The column's SQL name (a fixed identifier, never user input).
    pub name: &'static str,
    /// Its SQL type.
    pub ty: ColumnType,
    value: for<'a> fn(&'a StoredRecord) -> ColumnValue<'a>,
}

impl std::fmt::Debug for StoredColumn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoredColumn")
            .field("name", &self.name)
            .field("ty", &self.ty)
            .finish()
    }
}

impl StoredColumn {
    /// This column's value in `record`.
    pub fn value<'a>(&self, record: &'a StoredRecord) -> ColumnValue<'a> {
        (self.value)(record)
    }
}

macro_rules! columns {
    ($($name:ident: $ty:ident = |$r:ident| $value:expr;)*) => {
        /// The stored columns, in the order every statement names them and the chain hashes
        /// them. `record` holds the record's JSON exactly as serialized, so a record read back
        /// is byte for byte the one written; the others are for filtering.
        ///
        /// ```
        /// use audit_store::model::COLUMNS;
        ///
        /// assert_eq!(COLUMNS[0].name, "id");
        /// assert_eq!(COLUMNS.last().map(|c| c.name), Some("record"));
        /// ```
        pub const COLUMNS: [StoredColumn; [$(stringify!($name)),*].len()] = [$(
            StoredColumn {
                name: stringify!($name),
                ty: ColumnType::$ty,
                value: |$r| $value,
            },
        )*];
    };
}

columns! {
    id: Uuid = |r| ColumnValue::Uuid(r.id);
    time_ms: BigInt = |r| ColumnValue::BigInt(r.time_ms);
    account_id: Text = |r| ColumnValue::Text(r.account_id.as_deref());
    account_name: Text = |r| ColumnValue::Text(r.account_name.as_deref());
    zone_id: Text = |r| ColumnValue::Text(r.zone_id.as_deref());
    zone_name: Text = |r| ColumnValue::Text(r.zone_name.as_deref());
    action_type: Text = |r| ColumnValue::Text(Some(&r.action_type));
    action_result: Text = |r| ColumnValue::Text(Some(r.action_result));
    actor_email: Text = |r| ColumnValue::Text(r.actor_email.as_deref());
    actor_id: Text = |r| ColumnValue::Text(r.actor_id.as_deref());
    actor_ip_address: Text = |r| ColumnValue::Text(r.actor_ip_address.as_deref());
    actor_type: Text = |r| ColumnValue::Text(r.actor_type);
    actor_context: Text = |r| ColumnValue::Text(r.actor_context);
    actor_token_id: Text = |r| ColumnValue::Text(r.actor_token_id.as_deref());
    actor_token_name: Text = |r| ColumnValue::Text(r.actor_token_name.as_deref());
    raw_ray_id: Text = |r| ColumnValue::Text(Some(&r.raw_ray_id));
    raw_method: Text = |r| ColumnValue::Text(r.raw_method.as_deref());
    raw_status_code: Int = |r| ColumnValue::Int(r.raw_status_code);
    raw_uri: Text = |r| ColumnValue::Text(r.raw_uri.as_deref());
    resource_id: Text = |r| ColumnValue::Text(r.resource_id.as_deref());
    resource_product: Text = |r| ColumnValue::Text(r.resource_product.as_deref());
    resource_type: Text = |r| ColumnValue::Text(r.resource_type.as_deref());
    resource_scope: Text = |r| ColumnValue::Text(r.resource_scope.as_deref());
    record: Text = |r| ColumnValue::Text(Some(&r.record));
}

/// The columns a chained store adds to each record: its sequence number in its account's
/// chain, its chain hash and the hash's seal (see [`chain`](crate::chain)). NULL in records
/// written without chain keys.
pub const LINK_COLUMNS: [&str; 3] = ["chain_seq", "chain_hash", "chain_seal"];

/// The index in [`COLUMNS`] of the column `name`.
///
/// # Panics
///
/// When no stored column has that name (a bug: the names are fixed).
pub(crate) const fn index_of(name: &str) -> usize {
    let mut i = 0;
    while i < COLUMNS.len() {
        if eq(COLUMNS[i].name.as_bytes(), name.as_bytes()) {
            return i;
        }
        i += 1;
    }
    panic!("not a stored column");
}

const fn eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let mut i = 0;
    while i < a.len() {
        if a[i] != b[i] {
            return false;
        }
        i += 1;
    }
    true
}

/// The text columns of [`COLUMNS`], in order.
#[cfg(feature = "sqlite")]
pub(crate) fn text_columns() -> impl Iterator<Item = &'static StoredColumn> {
    COLUMNS.iter().filter(|c| c.ty == ColumnType::Text)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Column;

    #[test]
    fn every_filter_column_is_a_stored_column() {
        for column in Column::ALL {
            assert!(
                COLUMNS.iter().any(|c| c.name == column.name()),
                "{column:?}"
            );
        }
        assert_eq!(index_of("account_id"), 2);
        assert_eq!(COLUMNS.len(), 24);
        #[cfg(feature = "sqlite")]
        assert_eq!(text_columns().count(), 21);
    }
}
