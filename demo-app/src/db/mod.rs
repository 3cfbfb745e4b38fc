//! The application's own database: the connection pool (SQLite or PostgreSQL), the migrations
//! of the app's tables, the ids and times its rows hold, and the demo seed ([`mod@seed`]).
//!
//! Every query is written once, in the SQL both databases accept (`$1` placeholders,
//! `ON CONFLICT`), and run on whichever pool is configured through [`on_db!`] (or, for a
//! statement whose changed rows are all that matters, [`execute!`]; for a select whose
//! parameters are all text, [`select`]).
//!
//! Below the HTTP layers: it uses [`crate::secrets`] (to seed hashed credentials) and nothing
//! else of the crate.

pub(crate) mod seed;

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use audit_layer::record::Timestamp;
use sqlx::migrate::{MigrateError, Migrator};
use sqlx::postgres::{PgPool, PgPoolOptions, PgRow};
use sqlx::query::QueryAs;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteRow,
    SqliteSynchronous,
};
use sqlx::{Database, Encode, FromRow, Type};

pub(crate) use self::seed::{SeedConfig, SeededAccount, seed, seed_ids};

/// The table that tracks the app's migrations. Not sqlx's default `_sqlx_migrations`, which the
/// audit store used before it kept its own `_audit_migrations` (the store moves its rows out at
/// its first start): kept, so that demo databases made since still open.
const MIGRATIONS_TABLE: &str = "_demo_app_migrations";

/// The app's database, SQLite or PostgreSQL, chosen by the database URL at start-up.
#[derive(Clone, Debug)]
pub(crate) enum Db {
    /// An embedded SQLite file (the default).
    Sqlite(SqlitePool),
    /// A PostgreSQL server.
    Postgres(PgPool),
}

/// Runs `$body` with `$pool` bound to the concrete pool of `$db`: the same query text and
/// binds, compiled once per backend.
macro_rules! on_db {
    ($db:expr, $pool:ident => $body:expr) => {
        match $db {
            $crate::db::Db::Sqlite($pool) => $body,
            $crate::db::Db::Postgres($pool) => $body,
        }
    };
}
pub(crate) use on_db;

/// Runs the statement `$query` (a `sqlx::query(...)` with its binds) on `$db` and evaluates to
/// the number of rows it changed: `Result<u64, sqlx::Error>`, whichever the backend.
macro_rules! execute {
    ($db:expr, $query:expr) => {
        $crate::db::on_db!($db, pool => $query.execute(pool).await.map(|r| r.rows_affected()))
    };
}
pub(crate) use execute;

impl Db {
    /// Opens (creating if missing, readable and writable by the owner only) a SQLite file in
    /// WAL mode, as the audit store does. SQLite gives the `-wal` and `-shm` files the
    /// database file's permissions.
    pub(crate) async fn open_sqlite(path: &Path) -> Result<Self, sqlx::Error> {
        create_private(path)?;
        Self::sqlite(SqliteConnectOptions::new().filename(path)).await
    }

    /// Connects to a `sqlite:` or `postgres:` URL.
    pub(crate) async fn connect(url: &str) -> Result<Self, sqlx::Error> {
        if url.starts_with("postgres:") || url.starts_with("postgresql:") {
            let pool = PgPoolOptions::new()
                .max_connections(8)
                .acquire_timeout(Duration::from_secs(10))
                .connect(url)
                .await?;
            return Ok(Self::Postgres(pool));
        }
        Self::sqlite(SqliteConnectOptions::from_str(url)?).await
    }

    /// Opens the SQLite database `options` names (creating it if missing) in WAL mode, as the
    /// audit store does.
    async fn sqlite(options: SqliteConnectOptions) -> Result<Self, sqlx::Error> {
        let options = options
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(Duration::from_secs(10))
            .foreign_keys(true);
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(options)
            .await?;
        Ok(Self::Sqlite(pool))
    }

    /// Creates or updates the app's tables. Safe on every start and from several instances.
    pub(crate) async fn migrate(&self) -> Result<(), MigrateError> {
        let mut migrator = match self {
            Self::Sqlite(_) => sqlx::migrate!("migrations/sqlite"),
            Self::Postgres(_) => sqlx::migrate!("migrations/postgres"),
        };
        migrator.dangerous_set_table_name(MIGRATIONS_TABLE);
        run_migrator(self, &migrator).await
    }

    /// Whether the database answers.
    pub(crate) async fn ping(&self) -> Result<(), sqlx::Error> {
        on_db!(self, p => sqlx::query("SELECT 1").execute(p).await.map(drop))
    }
}

/// Creates the empty file `path`, readable and writable by the owner only, unless it exists.
fn create_private(path: &Path) -> std::io::Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    match options.open(path) {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(e),
    }
}

async fn run_migrator(db: &Db, migrator: &Migrator) -> Result<(), MigrateError> {
    on_db!(db, p => migrator.run(p).await)
}

/// A row both backends decode: any `#[derive(sqlx::FromRow)]` of the app.
pub(crate) trait AnyRow:
    for<'r> FromRow<'r, SqliteRow> + for<'r> FromRow<'r, PgRow> + Send + Unpin
{
}

impl<R> AnyRow for R where
    R: for<'r> FromRow<'r, SqliteRow> + for<'r> FromRow<'r, PgRow> + Send + Unpin
{
}

/// A select whose parameters are all text (ids, names), on either backend: `sql` with `binds`
/// as its `$1`, `$2`, ... in order.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Select<'q> {
    sql: &'static str,
    binds: &'q [&'q str],
}

/// The select `sql` with the parameters `binds`; run it with [`Select::all`],
/// [`Select::optional`] or [`Select::text`].
pub(crate) fn select<'q>(sql: &'static str, binds: &'q [&'q str]) -> Select<'q> {
    Select { sql, binds }
}

impl<'q> Select<'q> {
    fn query<DB, R>(self) -> QueryAs<'q, DB, R, DB::Arguments>
    where
        DB: Database,
        R: for<'r> FromRow<'r, DB::Row>,
        &'q str: Encode<'q, DB> + Type<DB>,
    {
        let query = sqlx::query_as(self.sql);
        self.binds
            .iter()
            .fold(query, |query, value| query.bind(*value))
    }

    /// Every row selected.
    pub(crate) async fn all<R: AnyRow>(self, db: &Db) -> Result<Vec<R>, sqlx::Error> {
        on_db!(db, p => self.query().fetch_all(p).await)
    }

    /// The row selected, if any.
    pub(crate) async fn optional<R: AnyRow>(self, db: &Db) -> Result<Option<R>, sqlx::Error> {
        on_db!(db, p => self.query().fetch_optional(p).await)
    }

    /// The one text column of the row selected, if any (a name, an owner's id).
    pub(crate) async fn text(self, db: &Db) -> Result<Option<String>, sqlx::Error> {
        let row: Option<(String,)> = self.optional(db).await?;
        Ok(row.map(|(text,)| text))
    }
}

/// A new resource id: a UUIDv7 in 32 hex digits (time-ordered, like the audit record ids).
pub(crate) fn new_id() -> String {
    uuid::Uuid::now_v7().simple().to_string()
}

/// The current time in Unix milliseconds, as stored.
pub(crate) fn now_ms() -> i64 {
    Timestamp::now().unix_millis()
}

/// A stored time as RFC 3339, as answered (`2025-01-23T18:25:14.749Z`).
pub(crate) fn rfc3339(ms: i64) -> String {
    Timestamp::from_unix_millis(ms).to_string()
}

/// Whether a database error is a unique-constraint violation (a duplicate).
pub(crate) fn is_unique_violation(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(db) if db.is_unique_violation())
}

#[cfg(test)]
mod tests {
    use super::seed::tests::seeded_db;
    use super::seed_ids::{DEMO_ACCOUNT, EXAMPLE_ZONE, OTHER_ACCOUNT};
    use super::*;

    #[tokio::test]
    async fn selects_bind_their_text_parameters_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let (db, _) = seeded_db(dir.path()).await;
        let name = select("SELECT name FROM accounts WHERE id = $1", &[DEMO_ACCOUNT]);
        assert_eq!(
            name.text(&db).await.unwrap().as_deref(),
            Some("Example account")
        );
        let missing = select("SELECT name FROM accounts WHERE id = $1", &["acc_none"]);
        assert_eq!(missing.text(&db).await.unwrap(), None);

        const ZONE_OF: &str = "SELECT id, account_id FROM zones WHERE account_id = $1 AND id = $2";
        let theirs: Option<(String, String)> = select(ZONE_OF, &[OTHER_ACCOUNT, EXAMPLE_ZONE])
            .optional(&db)
            .await
            .unwrap();
        assert_eq!(theirs, None, "the example zone is not the other account's");
        let ours: Vec<(String, String)> = select(ZONE_OF, &[DEMO_ACCOUNT, EXAMPLE_ZONE])
            .all(&db)
            .await
            .unwrap();
        assert_eq!(ours, [(EXAMPLE_ZONE.to_owned(), DEMO_ACCOUNT.to_owned())]);
    }
}
