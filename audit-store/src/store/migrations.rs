//! The store's migrations: the SQL files of `migrations/{sqlite,postgres}/`, embedded at
//! compile time and given the store's [`TableNames`] at run time, recorded in a table of the
//! store's own (`_audit_migrations` by default), never in sqlx's default `_sqlx_migrations`,
//! which an application's own migrator uses.
//!
//! With the default names a migration's text, and so its checksum, is the file's: a database
//! migrated by an earlier release (which recorded the store's migrations in
//! `_sqlx_migrations`) is upgraded by [`migrate`]: on its first run, the store's rows move
//! from `_sqlx_migrations` to the store's table, in one transaction; the application's rows
//! there stay. A row is the store's when its version and checksum are those of one of the
//! store's migrations.
//!
//! Another prefix replaces `audit_` at the start of every identifier of the files; a
//! PostgreSQL schema is created by each migration if missing and made its `search_path` while
//! it runs (restored at its end), so nothing it creates or drops lies outside the schema.

use sqlx::migrate::{Migrate, Migration, Migrator};
use sqlx::{AssertSqlSafe, Decode, Encode, Executor, IntoArguments, Pool, SqlSafeStr as _, Type};

use super::TableNames;
use super::shared::Backend;
use super::sql::Dialect;
use crate::Result;

/// The table sqlx records migrations in unless told otherwise, where releases before
/// `_audit_migrations` recorded the store's.
pub(crate) const SQLX_DEFAULT_TABLE: &str = "_sqlx_migrations";

/// Where a migration into a schema keeps the search path it restores at its end.
const SAVED_SEARCH_PATH: &str = "audit_store.saved_search_path";

/// The SQLite store's migrations, for `names`.
#[cfg(feature = "sqlite")]
pub(crate) fn sqlite(names: &TableNames) -> Vec<Migration> {
    let embedded = sqlx::migrate!("migrations/sqlite");
    embedded
        .iter()
        .map(|m| renamed(m, names, Dialect::Sqlite))
        .collect()
}

/// The PostgreSQL store's migrations, for `names`.
#[cfg(feature = "postgres")]
pub(crate) fn postgres(names: &TableNames) -> Vec<Migration> {
    let embedded = sqlx::migrate!("migrations/postgres");
    embedded
        .iter()
        .map(|m| renamed(m, names, Dialect::Postgres))
        .collect()
}

/// `migration` with the store's names in its text (and so its own checksum).
fn renamed(migration: &Migration, names: &TableNames, dialect: Dialect) -> Migration {
    let mut sql = with_prefix(migration.sql.as_str(), names.table_prefix());
    if let (Dialect::Postgres, Some(schema)) = (dialect, names.schema_name()) {
        // The search path is the schema while the migration runs, and what it was after it:
        // an application's migrator records the migration (in its own table, unqualified)
        // in the same transaction. Outside a transaction (`no_tx`), for the session.
        let local = if migration.no_tx { "false" } else { "true" };
        sql = format!(
            "CREATE SCHEMA IF NOT EXISTS \"{schema}\";\n\
             SELECT set_config('{SAVED_SEARCH_PATH}', current_setting('search_path'), {local});\n\
             SELECT set_config('search_path', '\"{schema}\"', {local});\n\
             {sql}\n\
             SELECT set_config('search_path', current_setting('{SAVED_SEARCH_PATH}'), {local});\n"
        );
    }
    if sql == migration.sql.as_str() {
        return migration.clone();
    }
    Migration::new(
        migration.version,
        migration.description.clone(),
        migration.migration_type,
        AssertSqlSafe(sql).into_sql_str(),
        migration.no_tx,
    )
}

/// `sql` with `prefix` instead of `audit_` at the start of every word (identifiers, and the
/// comments' mentions of them).
fn with_prefix(sql: &str, prefix: &str) -> String {
    if prefix == super::names::DEFAULT_PREFIX {
        return sql.to_owned();
    }
    let mut out = String::with_capacity(sql.len() + 64);
    let mut rest = sql;
    while let Some(at) = rest.find("audit_") {
        let word_start = rest[..at]
            .chars()
            .next_back()
            .is_none_or(|c| !(c.is_ascii_alphanumeric() || c == '_'));
        out.push_str(&rest[..at]);
        out.push_str(if word_start { prefix } else { "audit_" });
        rest = &rest[at + "audit_".len()..];
    }
    out.push_str(rest);
    out
}

/// A migrator of `migrations` recording them in `names`' migrations table (creating its
/// schema first, if any).
pub(crate) fn migrator(migrations: Vec<Migration>, names: &TableNames) -> Migrator {
    let mut migrator = Migrator::with_migrations(migrations);
    migrator.dangerous_set_table_name(names.migrations().to_owned());
    if let Some(schema) = names.schema_name() {
        migrator.create_schema(format!("\"{schema}\""));
    }
    migrator
}

/// Runs `migrations` on `pool`, recorded in `names`' migrations table, after moving the rows
/// an earlier release wrote in `_sqlx_migrations` (see the [module](self)).
pub(crate) async fn migrate<DB>(
    pool: &Pool<DB>,
    names: &TableNames,
    migrations: Vec<Migration>,
) -> Result<()>
where
    DB: Backend,
    DB::Connection: Migrate,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    DB::Arguments: IntoArguments<DB> + Default,
    for<'t> &'t str: Encode<'t, DB> + Type<DB>,
    for<'t> i64: Encode<'t, DB> + Decode<'t, DB> + Type<DB>,
    for<'t> &'t [u8]: Encode<'t, DB> + Type<DB>,
    for<'t> bool: Decode<'t, DB> + Type<DB>,
    usize: sqlx::ColumnIndex<DB::Row>,
{
    let mut conn = pool.acquire().await?;
    // The lock sqlx's migrators take (PostgreSQL: an advisory lock per database; SQLite: none,
    // the transaction's `BEGIN IMMEDIATE` serializes instead).
    conn.lock().await?;
    let adopted = adopt_sqlx_rows::<DB>(&mut conn, names, &migrations).await;
    conn.unlock().await?;
    drop(conn);
    adopted?;
    migrator(migrations, names).run(pool).await?;
    Ok(())
}

/// Moves the rows of `migrations` from `_sqlx_migrations` to `names`' migrations table, when
/// that table does not exist yet; returns how many moved.
async fn adopt_sqlx_rows<DB>(
    conn: &mut DB::Connection,
    names: &TableNames,
    migrations: &[Migration],
) -> Result<u64>
where
    DB: Backend,
    DB::Connection: Migrate,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    DB::Arguments: IntoArguments<DB> + Default,
    for<'t> &'t str: Encode<'t, DB> + Type<DB>,
    for<'t> i64: Encode<'t, DB> + Decode<'t, DB> + Type<DB>,
    for<'t> &'t [u8]: Encode<'t, DB> + Type<DB>,
    for<'t> bool: Decode<'t, DB> + Type<DB>,
    usize: sqlx::ColumnIndex<DB::Row>,
{
    let begin = match DB::DIALECT {
        Dialect::Sqlite => "BEGIN IMMEDIATE",
        Dialect::Postgres => "BEGIN",
    };
    let mut tx = sqlx::Connection::begin_with(&mut *conn, AssertSqlSafe(begin.to_owned())).await?;
    let ours = names.migrations();
    if !table_exists::<DB>(&mut tx, SQLX_DEFAULT_TABLE).await?
        || table_exists::<DB>(&mut tx, ours).await?
    {
        return Ok(0);
    }
    if let Some(schema) = names.schema_name() {
        tx.create_schema_if_not_exists(&format!("\"{schema}\""))
            .await?;
    }
    tx.ensure_migrations_table(ours).await?;
    let (p1, p2) = (DB::DIALECT.placeholder(1), DB::DIALECT.placeholder(2));
    let copy = format!(
        "INSERT INTO {ours} (version, description, installed_on, success, checksum, execution_time) \
         SELECT version, description, installed_on, success, checksum, execution_time \
         FROM {SQLX_DEFAULT_TABLE} WHERE version = {p1} AND checksum = {p2}"
    );
    let delete =
        format!("DELETE FROM {SQLX_DEFAULT_TABLE} WHERE version = {p1} AND checksum = {p2}");
    let mut moved = 0;
    for migration in migrations {
        let checksum: &[u8] = &migration.checksum;
        let copied = sqlx::query(AssertSqlSafe(copy.clone()))
            .bind(migration.version)
            .bind(checksum)
            .execute(&mut *tx)
            .await?;
        moved += super::shared::RowsAffected::rows_affected(&copied);
        sqlx::query(AssertSqlSafe(delete.clone()))
            .bind(migration.version)
            .bind(checksum)
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await?;
    if moved > 0 {
        tracing::info!(
            target: "audit_store",
            "moved the audit store's {moved} migration rows from {SQLX_DEFAULT_TABLE} to {ours}"
        );
    }
    Ok(moved)
}

/// Whether the table `name` (as written in SQL, maybe schema-qualified) exists.
async fn table_exists<DB>(conn: &mut DB::Connection, name: &str) -> Result<bool>
where
    DB: Backend,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    DB::Arguments: IntoArguments<DB> + Default,
    for<'t> &'t str: Encode<'t, DB> + Type<DB>,
    for<'t> bool: Decode<'t, DB> + Type<DB>,
    usize: sqlx::ColumnIndex<DB::Row>,
{
    let sql = match DB::DIALECT {
        Dialect::Sqlite => {
            "SELECT EXISTS (SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?)"
        }
        Dialect::Postgres => "SELECT to_regclass($1) IS NOT NULL",
    };
    let exists: bool = sqlx::query_scalar(AssertSqlSafe(sql.to_owned()))
        .bind(name)
        .fetch_one(&mut *conn)
        .await?;
    Ok(exists)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_names_keep_the_files_checksums() {
        let names = TableNames::default();
        for (built, file) in sqlite(&names)
            .iter()
            .zip(sqlx::migrate!("migrations/sqlite").iter())
        {
            assert_eq!(built.checksum, file.checksum);
            assert_eq!(built.description, file.description);
        }
        for (built, file) in postgres(&names)
            .iter()
            .zip(sqlx::migrate!("migrations/postgres").iter())
        {
            assert_eq!(built.checksum, file.checksum);
        }
    }

    #[test]
    fn a_prefix_replaces_audit_at_the_start_of_words_only() {
        assert_eq!(
            with_prefix(
                "CREATE INDEX audit_logs_x ON audit_logs (faudit_y); -- audit_checkpoints",
                "b_"
            ),
            "CREATE INDEX b_logs_x ON b_logs (faudit_y); -- b_checkpoints"
        );
        let names = TableNames::new().prefix("b_").unwrap();
        let sql = sqlite(&names)[0].sql.as_str().to_owned();
        assert!(sql.contains("CREATE TABLE IF NOT EXISTS b_logs ("), "{sql}");
        assert!(!sql.contains("audit_"), "{sql}");
    }

    #[test]
    fn a_schema_is_the_search_path_of_each_migration() {
        let names = TableNames::new().schema("tenant_audit").unwrap();
        for m in postgres(&names) {
            assert!(
                m.sql.as_str().starts_with("CREATE SCHEMA IF NOT EXISTS \"tenant_audit\";\n")
                    && m.sql.as_str().contains(
                        "SELECT set_config('search_path', '\"tenant_audit\"', true);\n"
                    )
                    && m.sql.as_str().ends_with(
                        "SELECT set_config('search_path', current_setting('audit_store.saved_search_path'), true);\n"
                    ),
                "{}",
                m.sql.as_str()
            );
        }
    }
}
