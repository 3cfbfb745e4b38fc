//! An application adopting the store into a database it already migrates with sqlx: the
//! store's migrations recorded in a table of its own (`_audit_migrations`), beside the app's
//! in sqlx's default `_sqlx_migrations`, run in either order, or by the app's own migrator;
//! a database migrated by the previous release (the store's rows in `_sqlx_migrations`)
//! upgraded; the tables under another prefix and, on PostgreSQL, in a schema of their own.
//!
//! Each scenario is written once and run on both backends (`mod sqlite`, `mod postgres`).
//! Every PostgreSQL test works in schemas of its own (the app's, as its `search_path`, and the
//! store's when it has one), dropped at its end.

mod common;

use audit_store::chain::{ChainKeys, ChainSecret};
use audit_store::model::{Direction, RecordQuery};
use audit_store::sqlx::migrate::{MigrateError, Migration, MigrationType, Migrator};
use audit_store::sqlx::{self, AssertSqlSafe, SqlSafeStr as _};
use audit_store::store::{AuditStore, ChainedStore, TableNames};
use audit_store::{PostgresStore, SqliteStore};
use common::{BASE_MS, SchemaGuard, TEST_TIMEOUT, TestResult, record, rows, time_limit};
use sqlx::Connection as _;
use sqlx::postgres::PgPool;
use sqlx::sqlite::SqlitePool;
use uuid::Uuid;

/// The test app's own migrations, recorded by its migrator in sqlx's default table.
fn app_migrations() -> Vec<Migration> {
    let migration = |version, description: &'static str, sql: &'static str| {
        Migration::new(
            version,
            description.into(),
            MigrationType::Simple,
            sql.into_sql_str(),
            false,
        )
    };
    vec![
        migration(
            1,
            "widgets",
            "CREATE TABLE widgets (id BIGINT PRIMARY KEY, name TEXT NOT NULL)",
        ),
        migration(
            2,
            "widget colour",
            "ALTER TABLE widgets ADD COLUMN colour TEXT",
        ),
    ]
}

/// The app's migrator, as an app writes it (`sqlx::migrate!()`: the default table).
fn app_migrator() -> Migrator {
    Migrator::with_migrations(app_migrations())
}

fn versions_of(migrations: &[Migration]) -> Vec<(i64, Vec<u8>)> {
    migrations
        .iter()
        .map(|m| (m.version, m.checksum.to_vec()))
        .collect()
}

fn keys() -> TestResult<ChainKeys> {
    Ok(ChainKeys::from_secret(&ChainSecret::from_hex(
        &"ab".repeat(32),
    )?))
}

// ---------------------------------------------------------------------------------------------
// The app's database and the store on it, on either backend
// ---------------------------------------------------------------------------------------------

/// The app's database.
enum AppDb {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

/// `$body` with `$pool` bound to the app database's pool, whichever backend it is on.
macro_rules! on_pool {
    ($db:expr, $pool:ident => $body:expr) => {
        match $db {
            AppDb::Sqlite($pool) => $body,
            AppDb::Postgres($pool) => $body,
        }
    };
}

impl AppDb {
    async fn run(&self, migrator: &Migrator) -> Result<(), MigrateError> {
        on_pool!(self, pool => migrator.run(pool).await)
    }

    /// The version and checksum of every row of the migrations table `table`.
    async fn recorded(&self, table: &str) -> TestResult<Vec<(i64, Vec<u8>)>> {
        let sql = format!("SELECT version, checksum FROM {table} ORDER BY version");
        Ok(on_pool!(self, pool => sqlx::query_as(AssertSqlSafe(sql)).fetch_all(pool).await?))
    }

    /// The app's own table works.
    async fn app_runs(&self) -> TestResult {
        let sql = match self {
            Self::Sqlite(_) => "INSERT INTO widgets (id, name, colour) VALUES (?, 'w', 'red')",
            Self::Postgres(_) => "INSERT INTO widgets (id, name, colour) VALUES ($1, 'w', 'red')",
        };
        let id = i64::from(Uuid::new_v4().as_u128() as u16);
        on_pool!(self, pool => {
            sqlx::query(sql).bind(id).execute(pool).await?;
        });
        Ok(())
    }

    /// The previous release's `migrate()`, verbatim: the store's migrations by
    /// `sqlx::migrate!`, recorded in the default table.
    async fn migrate_as_the_previous_release(&self) -> TestResult {
        match self {
            Self::Sqlite(pool) => sqlx::migrate!("migrations/sqlite").run(pool).await?,
            Self::Postgres(pool) => sqlx::migrate!("migrations/postgres").run(pool).await?,
        }
        Ok(())
    }

    /// The app's migrator, run where the store's rows share its table: refused.
    async fn stale_app_migrator_is_refused(&self) -> TestResult {
        // On a connection of its own, closed after: a failed sqlx migrator keeps its
        // advisory lock (PostgreSQL).
        let stale = on_pool!(self, pool => {
            let mut conn = pool.acquire().await?.detach();
            let stale = app_migrator()
                .run(&mut conn)
                .await
                .expect_err("a migrator missing applied versions is refused");
            conn.close().await?;
            stale
        });
        assert!(matches!(stale, MigrateError::VersionMissing(_)), "{stale}");
        Ok(())
    }
}

/// A chained store whose migrations an app can run itself.
trait AdoptedStore: ChainedStore {
    fn migrations(&self) -> Vec<Migration>;
}

impl AdoptedStore for SqliteStore {
    fn migrations(&self) -> Vec<Migration> {
        SqliteStore::migrations(self)
    }
}

impl AdoptedStore for PostgresStore {
    fn migrations(&self) -> Vec<Migration> {
        PostgresStore::migrations(self)
    }
}

/// Fresh app databases on one backend, each with a (not yet migrated) chained store.
trait Backend {
    type Store: AdoptedStore;
    /// `None` when the backend is not configured here (the test is skipped, or fails in CI).
    fn new() -> Option<Self>
    where
        Self: Sized;
    async fn app(&mut self) -> TestResult<(AppDb, Self::Store)>;
}

/// SQLite: a file in a temp dir per app.
#[derive(Default)]
struct Sqlite {
    dirs: Vec<tempfile::TempDir>,
}

impl Sqlite {
    /// The store on the app's file (`app.db` in `dir`).
    async fn store(dir: &tempfile::TempDir) -> TestResult<SqliteStore> {
        Ok(SqliteStore::open(dir.path().join("app.db"))
            .await?
            .chained(keys()?))
    }
}

impl Backend for Sqlite {
    type Store = SqliteStore;

    fn new() -> Option<Self> {
        Some(Self::default())
    }

    async fn app(&mut self) -> TestResult<(AppDb, SqliteStore)> {
        let dir = tempfile::tempdir()?;
        let store = Self::store(&dir).await?;
        self.dirs.push(dir);
        Ok((AppDb::Sqlite(store.pool().clone()), store))
    }
}

/// PostgreSQL: a schema per app on `AUDIT_TEST_POSTGRES_URL` (its pool's `search_path`), and
/// those of the stores, all dropped at the end.
struct Postgres {
    url: String,
    schemas: Vec<SchemaGuard>,
}

impl Postgres {
    /// A fresh name for a store's schema (the store creates it), dropped at the end.
    fn store_schema(&mut self) -> String {
        let schema = common::fresh_schema_name("adopt_store");
        self.schemas.push(SchemaGuard::new(&self.url, &schema));
        schema
    }

    /// The tables (and partitioned tables) of `schema`, by name.
    async fn tables_in(pool: &PgPool, schema: &str) -> TestResult<Vec<String>> {
        Ok(sqlx::query_scalar(
            "SELECT c.relname::text FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
             WHERE n.nspname = $1 AND c.relkind IN ('r', 'p') ORDER BY 1",
        )
        .bind(schema)
        .fetch_all(pool)
        .await?)
    }
}

impl Backend for Postgres {
    type Store = PostgresStore;

    fn new() -> Option<Self> {
        Some(Self {
            url: common::postgres_url()?,
            schemas: Vec::new(),
        })
    }

    async fn app(&mut self) -> TestResult<(AppDb, PostgresStore)> {
        let (guard, pool) = SchemaGuard::fresh(&self.url, "adopt_app").await?;
        self.schemas.push(guard);
        let store = PostgresStore::new(pool.clone()).chained(keys()?);
        Ok((AppDb::Postgres(pool), store))
    }
}

/// One `#[tokio::test]` per scenario and backend, in `mod sqlite` and `mod postgres`.
macro_rules! on_both_backends {
    ($($scenario:ident),+ $(,)?) => {
        on_both_backends!(@backend sqlite, Sqlite, $($scenario),+);
        on_both_backends!(@backend postgres, Postgres, $($scenario),+);
    };
    (@backend $module:ident, $backend:ident, $($scenario:ident),+) => {
        mod $module {
            $(
                #[tokio::test]
                async fn $scenario() -> $crate::TestResult {
                    let Some(backend) = <$crate::$backend as $crate::Backend>::new() else {
                        return Ok(());
                    };
                    $crate::time_limit($crate::TEST_TIMEOUT, super::$scenario(backend)).await
                }
            )+
        }
    };
}

on_both_backends!(
    app_and_store_migrate_in_either_order_each_in_its_own_table,
    the_apps_own_migrator_runs_the_stores_migrations,
    a_database_migrated_by_the_previous_release_upgrades,
);

// ---------------------------------------------------------------------------------------------
// Scenarios
// ---------------------------------------------------------------------------------------------

/// The store works: chained records go in, come back in a page, the chain verifies.
async fn store_runs<S: ChainedStore>(store: &S) -> TestResult {
    let before = store.count().await?;
    let records: Vec<_> = (0..5)
        .map(|i| record(Some("acc_adopt"), BASE_MS + i))
        .collect();
    assert_eq!(store.insert(&rows(&records)?).await?, 5);
    assert_eq!(store.count().await?, before + 5);
    let page = store
        .page(&RecordQuery {
            account_id: "acc_adopt".into(),
            since_ms: BASE_MS,
            before_ms: BASE_MS + 1000,
            filters: Vec::new(),
            direction: Direction::Asc,
            after: None,
            limit: 100,
            max_bytes: None,
            time_limit: None,
        })
        .await?;
    assert_eq!(page.rows.len() as u64, before + 5);
    let head = store
        .chain_head("acc_adopt")
        .await?
        .ok_or("no chain head")?;
    assert_eq!(head.seq as u64, before + 5);
    store.checkpoint(BASE_MS + 2000).await?;
    let verifier = keys()?.verifier();
    let report = audit_store::verify::verify(
        store,
        &verifier,
        "acc_adopt",
        audit_store::verify::Span::all(),
        &[],
    )
    .await?;
    assert!(report.ok, "{report:?}");
    Ok(())
}

async fn app_and_store_migrate_in_either_order_each_in_its_own_table<B: Backend>(
    mut backend: B,
) -> TestResult {
    for app_first in [true, false] {
        let (db, store) = backend.app().await?;
        if app_first {
            db.run(&app_migrator()).await?;
            store.migrate().await?;
        } else {
            store.migrate().await?;
            db.run(&app_migrator()).await?;
        }
        // A restart: both again, the other way round.
        store.migrate().await?;
        db.run(&app_migrator()).await?;
        assert_eq!(
            db.recorded("_sqlx_migrations").await?,
            versions_of(&app_migrations())
        );
        assert_eq!(
            db.recorded("_audit_migrations").await?,
            versions_of(&store.migrations())
        );
        db.app_runs().await?;
        store_runs(&store).await?;
    }
    Ok(())
}

async fn the_apps_own_migrator_runs_the_stores_migrations<B: Backend>(
    mut backend: B,
) -> TestResult {
    let (db, store) = backend.app().await?;
    the_apps_migrator_runs(&db, &store).await
}

/// The app's migrator, with the store's migrations added, run twice: both sets recorded in
/// the app's table, both work.
async fn the_apps_migrator_runs(db: &AppDb, store: &impl AdoptedStore) -> TestResult {
    let merged = || {
        let mut migrations = app_migrations();
        migrations.extend(store.migrations());
        Migrator::with_migrations(migrations)
    };
    db.run(&merged()).await?;
    db.run(&merged()).await?;
    let mut expected = versions_of(&app_migrations());
    expected.extend(versions_of(&store.migrations()));
    assert_eq!(db.recorded("_sqlx_migrations").await?, expected);
    db.app_runs().await?;
    store_runs(store).await
}

/// A database as the previous release left it: the app's migrations and the store's, all in
/// `_sqlx_migrations` (the store ran `sqlx::migrate!` with the default table), and records.
async fn a_database_migrated_by_the_previous_release_upgrades<B: Backend>(
    mut backend: B,
) -> TestResult {
    let (db, store) = backend.app().await?;
    // The app's migrator had to ignore the store's rows (versions it does not know) to run
    // at all.
    db.migrate_as_the_previous_release().await?;
    db.run(app_migrator().set_ignore_missing(true)).await?;
    db.stale_app_migrator_is_refused().await?;
    store_runs(&store).await?;

    store.migrate().await?;
    assert_eq!(
        db.recorded("_audit_migrations").await?,
        versions_of(&store.migrations())
    );
    assert_eq!(
        db.recorded("_sqlx_migrations").await?,
        versions_of(&app_migrations()),
        "the app's rows stay, the store's moved"
    );
    db.run(&app_migrator()).await?;
    store.migrate().await?;
    assert_eq!(store.count().await?, 5, "the records are kept");
    store_runs(&store).await?;
    db.app_runs().await
}

// ---------------------------------------------------------------------------------------------
// What one backend has: prefixes in one SQLite file, a PostgreSQL schema of the store's own
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn sqlite_stores_under_two_prefixes_share_a_file_and_not_their_records() -> TestResult {
    time_limit(TEST_TIMEOUT, async {
        let dir = tempfile::tempdir()?;
        let default = Sqlite::store(&dir).await?;
        let other = Sqlite::store(&dir)
            .await?
            .table_names(TableNames::new().prefix("billing_audit_")?)?;
        default.migrate().await?;
        other.migrate().await?;
        store_runs(&other).await?;
        assert_eq!(default.count().await?, 0);
        assert_eq!(other.count().await?, 5);
        let tables: Vec<String> = sqlx::query_scalar(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name LIKE '%billing%' \
             ORDER BY name",
        )
        .fetch_all(other.pool())
        .await?;
        assert_eq!(
            tables,
            [
                "_billing_audit_migrations",
                "billing_audit_chain_heads",
                "billing_audit_checkpoints",
                "billing_audit_export_positions",
                "billing_audit_logs"
            ]
        );
        let schema = TableNames::new().schema("audit")?;
        let refused = Sqlite::store(&dir).await?.table_names(schema).unwrap_err();
        assert!(
            refused.to_string().contains("schemas are PostgreSQL's"),
            "{refused}"
        );
        Ok(())
    })
    .await
}

/// The store in a schema of its own, under another prefix, migrated by the app's migrator
/// (whose table stays where the app keeps it): nothing of the store's lands in the app's
/// schema, and retention drops the store's own monthly partitions.
#[tokio::test]
async fn postgres_a_store_in_its_own_schema_under_a_prefix_run_by_the_apps_migrator() -> TestResult
{
    let Some(mut backend) = Postgres::new() else {
        return Ok(());
    };
    time_limit(TEST_TIMEOUT, async {
        let (db, store) = backend.app().await?;
        let schema = backend.store_schema();
        let names = TableNames::new().prefix("tenant_audit_")?.schema(&schema)?;
        let store = store.table_names(names);
        the_apps_migrator_runs(&db, &store).await?;

        let AppDb::Postgres(pool) = &db else {
            unreachable!("a PostgreSQL app")
        };
        let app_schema: String = sqlx::query_scalar("SELECT current_schema()")
            .fetch_one(pool)
            .await?;
        assert_eq!(
            Postgres::tables_in(pool, &app_schema).await?,
            ["_sqlx_migrations", "widgets"],
            "nothing of the store's in the app's schema"
        );
        assert_eq!(
            Postgres::tables_in(pool, &schema).await?,
            [
                "tenant_audit_chain_heads",
                "tenant_audit_checkpoints",
                "tenant_audit_export_positions",
                "tenant_audit_logs",
                "tenant_audit_logs_p2025_03"
            ]
        );
        // Retention drops the month's partition, in the store's schema.
        let retention = store.retain(BASE_MS + 40 * 24 * 3600 * 1000).await?;
        assert_eq!(retention.deleted, 5, "{retention:?}");
        assert!(
            !Postgres::tables_in(pool, &schema)
                .await?
                .contains(&"tenant_audit_logs_p2025_03".to_owned())
        );
        Ok(())
    })
    .await
}

#[tokio::test]
async fn postgres_a_store_in_its_own_schema_migrates_itself_and_runs() -> TestResult {
    let Some(mut backend) = Postgres::new() else {
        return Ok(());
    };
    time_limit(TEST_TIMEOUT, async {
        let (db, store) = backend.app().await?;
        let schema = backend.store_schema();
        let store = store.table_names(TableNames::new().schema(&schema)?);
        db.run(&app_migrator()).await?;
        store.migrate().await?;
        store.migrate().await?;
        db.run(&app_migrator()).await?;
        let recorded = db.recorded(&format!("{schema}._audit_migrations")).await?;
        assert_eq!(recorded, versions_of(&store.migrations()));
        store_runs(&store).await?;
        let AppDb::Postgres(pool) = &db else {
            unreachable!("a PostgreSQL app")
        };
        let search_path: String = sqlx::query_scalar("SHOW search_path")
            .fetch_one(pool)
            .await?;
        assert!(search_path.starts_with("adopt_app_"), "{search_path}");
        let n: i64 = sqlx::query_scalar(AssertSqlSafe(format!(
            "SELECT count(*) FROM {schema}.audit_logs"
        )))
        .fetch_one(pool)
        .await?;
        assert_eq!(n, 5);
        Ok(())
    })
    .await
}

/// `audit-verify` reads a store under another prefix when told it.
#[tokio::test]
async fn the_command_line_verifier_reads_tables_under_a_prefix() -> TestResult {
    time_limit(TEST_TIMEOUT, async {
        let dir = tempfile::tempdir()?;
        let store = Sqlite::store(&dir)
            .await?
            .table_names(TableNames::new().prefix("billing_audit_")?)?;
        store.migrate().await?;
        store_runs(&store).await?;
        let database = format!("sqlite://{}", dir.path().join("app.db").display());
        let public = keys()?.public_key().to_string();
        let verify = |extra: &[&str]| -> TestResult<std::process::Output> {
            Ok(
                std::process::Command::new(env!("CARGO_BIN_EXE_audit-verify"))
                    .args(["--database-url", &database, "--public-key", &public])
                    .args(extra)
                    .env_remove("AUDIT_VERIFY_DATABASE_URL")
                    .output()?,
            )
        };
        let found = verify(&["--table-prefix", "billing_audit_"])?;
        let stdout = String::from_utf8_lossy(&found.stdout);
        assert_eq!(found.status.code(), Some(0), "{stdout}");
        assert!(stdout.contains("ok \"acc_adopt\": 5 records"), "{stdout}");
        let missing = verify(&[])?;
        assert_ne!(
            missing.status.code(),
            Some(0),
            "the default tables do not exist"
        );
        let bad = verify(&["--table-prefix", "x; DROP TABLE y"])?;
        assert_eq!(bad.status.code(), Some(2));
        assert!(String::from_utf8_lossy(&bad.stderr).contains("--table-prefix"));
        Ok(())
    })
    .await
}
