//! An application adopting the store into a database it already migrates with sqlx: the
//! store's migrations recorded in a table of its own (`_audit_migrations`), beside the app's
//! in sqlx's default `_sqlx_migrations`, run in either order, or by the app's own migrator;
//! a database migrated by the previous release (the store's rows in `_sqlx_migrations`)
//! upgraded; the tables under another prefix and, on PostgreSQL, in a schema of their own.
//!
//! Every PostgreSQL test works in schemas of its own (the app's, as its `search_path`, and the
//! store's when it has one), dropped at its end.

mod common;

use std::str::FromStr as _;

use audit_store::chain::{ChainKeys, ChainSecret};
use audit_store::model::{Direction, RecordQuery};
use audit_store::sqlx::migrate::{Migration, MigrationType, Migrator};
use audit_store::sqlx::{self, AssertSqlSafe, SqlSafeStr as _};
use audit_store::store::{AuditStore, ChainedStore, TableNames};
use audit_store::{PostgresStore, SqliteStore};
use common::{BASE_MS, TEST_TIMEOUT, TestResult, record, rows, time_limit};
use sqlx::Connection as _;
use sqlx::postgres::{PgConnectOptions, PgConnection, PgPool, PgPoolOptions};
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

/// The version and checksum of every row of the migrations table `table`.
async fn recorded_sqlite(pool: &SqlitePool, table: &str) -> TestResult<Vec<(i64, Vec<u8>)>> {
    Ok(sqlx::query_as(AssertSqlSafe(format!(
        "SELECT version, checksum FROM {table} ORDER BY version"
    )))
    .fetch_all(pool)
    .await?)
}

async fn recorded_pg(pool: &PgPool, table: &str) -> TestResult<Vec<(i64, Vec<u8>)>> {
    Ok(sqlx::query_as(AssertSqlSafe(format!(
        "SELECT version, checksum FROM {table} ORDER BY version"
    )))
    .fetch_all(pool)
    .await?)
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

// ---------------------------------------------------------------------------------------------
// SQLite
// ---------------------------------------------------------------------------------------------

async fn sqlite_store(dir: &tempfile::TempDir) -> TestResult<SqliteStore> {
    Ok(SqliteStore::open(dir.path().join("app.db"))
        .await?
        .chained(keys()?))
}

async fn sqlite_app_runs(pool: &SqlitePool) -> TestResult {
    sqlx::query("INSERT INTO widgets (id, name, colour) VALUES (?, 'w', 'red')")
        .bind(i64::from(rand_u16()))
        .execute(pool)
        .await?;
    Ok(())
}

fn rand_u16() -> u16 {
    Uuid::new_v4().as_u128() as u16
}

#[tokio::test]
async fn sqlite_app_and_store_migrate_in_either_order_each_in_its_own_table() -> TestResult {
    time_limit(TEST_TIMEOUT, async {
        for app_first in [true, false] {
            let dir = tempfile::tempdir()?;
            let store = sqlite_store(&dir).await?;
            let pool = store.pool().clone();
            if app_first {
                app_migrator().run(&pool).await?;
                store.migrate().await?;
            } else {
                store.migrate().await?;
                app_migrator().run(&pool).await?;
            }
            // A restart: both again, the other way round.
            store.migrate().await?;
            app_migrator().run(&pool).await?;
            assert_eq!(
                recorded_sqlite(&pool, "_sqlx_migrations").await?,
                versions_of(&app_migrations())
            );
            assert_eq!(
                recorded_sqlite(&pool, "_audit_migrations").await?,
                versions_of(&store.migrations())
            );
            sqlite_app_runs(&pool).await?;
            store_runs(&store).await?;
        }
        Ok(())
    })
    .await
}

#[tokio::test]
async fn sqlite_the_apps_own_migrator_runs_the_stores_migrations() -> TestResult {
    time_limit(TEST_TIMEOUT, async {
        let dir = tempfile::tempdir()?;
        let store = sqlite_store(&dir).await?;
        let pool = store.pool().clone();
        let merged = || {
            let mut migrations = app_migrations();
            migrations.extend(store.migrations());
            Migrator::with_migrations(migrations)
        };
        merged().run(&pool).await?;
        merged().run(&pool).await?;
        let mut expected = versions_of(&app_migrations());
        expected.extend(versions_of(&store.migrations()));
        assert_eq!(recorded_sqlite(&pool, "_sqlx_migrations").await?, expected);
        sqlite_app_runs(&pool).await?;
        store_runs(&store).await?;
        Ok(())
    })
    .await
}

/// A database as the previous release left it: the app's migrations and the store's, all in
/// `_sqlx_migrations` (the store ran `sqlx::migrate!` with the default table), and records.
#[tokio::test]
async fn sqlite_a_database_migrated_by_the_previous_release_upgrades() -> TestResult {
    time_limit(TEST_TIMEOUT, async {
        let dir = tempfile::tempdir()?;
        let store = sqlite_store(&dir).await?;
        let pool = store.pool().clone();
        // The previous release's `migrate()`, verbatim, then the app's migrator, which had
        // to ignore the store's rows (versions it does not know) to run at all.
        sqlx::migrate!("migrations/sqlite").run(&pool).await?;
        app_migrator().set_ignore_missing(true).run(&pool).await?;
        let stale = app_migrator().run(&pool).await.unwrap_err();
        assert!(
            matches!(stale, sqlx::migrate::MigrateError::VersionMissing(_)),
            "{stale}"
        );
        store_runs(&store).await?;

        store.migrate().await?;
        assert_eq!(
            recorded_sqlite(&pool, "_audit_migrations").await?,
            versions_of(&store.migrations())
        );
        assert_eq!(
            recorded_sqlite(&pool, "_sqlx_migrations").await?,
            versions_of(&app_migrations()),
            "the app's rows stay, the store's moved"
        );
        app_migrator().run(&pool).await?;
        store.migrate().await?;
        assert_eq!(store.count().await?, 5, "the records are kept");
        store_runs(&store).await?;
        sqlite_app_runs(&pool).await?;
        Ok(())
    })
    .await
}

#[tokio::test]
async fn sqlite_stores_under_two_prefixes_share_a_file_and_not_their_records() -> TestResult {
    time_limit(TEST_TIMEOUT, async {
        let dir = tempfile::tempdir()?;
        let default = sqlite_store(&dir).await?;
        let other = sqlite_store(&dir)
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
                "billing_audit_logs"
            ]
        );
        let schema = TableNames::new().schema("audit")?;
        let refused = sqlite_store(&dir).await?.table_names(schema).unwrap_err();
        assert!(
            refused.to_string().contains("schemas are PostgreSQL's"),
            "{refused}"
        );
        Ok(())
    })
    .await
}

// ---------------------------------------------------------------------------------------------
// PostgreSQL
// ---------------------------------------------------------------------------------------------

/// Schemas of one test, dropped at its end (also when it fails).
struct Schemas {
    url: String,
    names: Vec<String>,
}

impl Schemas {
    fn new(url: &str) -> Self {
        Self {
            url: url.to_owned(),
            names: Vec::new(),
        }
    }

    /// A fresh schema name (letters, digits and `_`), dropped at the end.
    fn fresh(&mut self, what: &str) -> String {
        let name = format!("adopt_{what}_{}", Uuid::now_v7().simple());
        self.names.push(name.clone());
        name
    }

    /// A pool whose `search_path` is a fresh schema: the app's database.
    async fn app_pool(&mut self) -> TestResult<PgPool> {
        let schema = self.fresh("app");
        let mut admin = PgConnection::connect(&self.url).await?;
        sqlx::query(AssertSqlSafe(format!("CREATE SCHEMA {schema}")))
            .execute(&mut admin)
            .await?;
        admin.close().await?;
        let options = PgConnectOptions::from_str(&self.url)?.options([("search_path", &schema)]);
        Ok(PgPoolOptions::new()
            .max_connections(4)
            .connect_with(options)
            .await?)
    }
}

impl Drop for Schemas {
    fn drop(&mut self) {
        let (url, names) = (self.url.clone(), std::mem::take(&mut self.names));
        let cleanup = std::thread::spawn(move || -> Result<(), String> {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| e.to_string())?;
            runtime.block_on(async {
                let mut conn = PgConnection::connect(&url)
                    .await
                    .map_err(|e| e.to_string())?;
                for name in names {
                    sqlx::query(AssertSqlSafe(format!(
                        "DROP SCHEMA IF EXISTS {name} CASCADE"
                    )))
                    .execute(&mut conn)
                    .await
                    .map_err(|e| e.to_string())?;
                }
                Ok(())
            })
        });
        if let Ok(Err(e)) = cleanup.join() {
            eprintln!("could not drop the test's schemas: {e}");
        }
    }
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

async fn pg_app_runs(pool: &PgPool) -> TestResult {
    sqlx::query("INSERT INTO widgets (id, name, colour) VALUES ($1, 'w', 'red')")
        .bind(i64::from(rand_u16()))
        .execute(pool)
        .await?;
    Ok(())
}

#[tokio::test]
async fn postgres_app_and_store_migrate_in_either_order_each_in_its_own_table() -> TestResult {
    let Some(url) = common::postgres_url() else {
        return Ok(());
    };
    time_limit(TEST_TIMEOUT, async {
        let mut schemas = Schemas::new(&url);
        for app_first in [true, false] {
            let pool = schemas.app_pool().await?;
            let store = PostgresStore::new(pool.clone()).chained(keys()?);
            if app_first {
                app_migrator().run(&pool).await?;
                store.migrate().await?;
            } else {
                store.migrate().await?;
                app_migrator().run(&pool).await?;
            }
            store.migrate().await?;
            app_migrator().run(&pool).await?;
            assert_eq!(
                recorded_pg(&pool, "_sqlx_migrations").await?,
                versions_of(&app_migrations())
            );
            assert_eq!(
                recorded_pg(&pool, "_audit_migrations").await?,
                versions_of(&store.migrations())
            );
            pg_app_runs(&pool).await?;
            store_runs(&store).await?;
        }
        Ok(())
    })
    .await
}

#[tokio::test]
async fn postgres_a_database_migrated_by_the_previous_release_upgrades() -> TestResult {
    let Some(url) = common::postgres_url() else {
        return Ok(());
    };
    time_limit(TEST_TIMEOUT, async {
        let mut schemas = Schemas::new(&url);
        let pool = schemas.app_pool().await?;
        let store = PostgresStore::new(pool.clone()).chained(keys()?);
        sqlx::migrate!("migrations/postgres").run(&pool).await?;
        app_migrator().set_ignore_missing(true).run(&pool).await?;
        // On a connection of its own, closed after: a failed sqlx migrator keeps its
        // advisory lock.
        let mut conn = pool.acquire().await?.detach();
        let stale = app_migrator().run(&mut conn).await.unwrap_err();
        assert!(
            matches!(stale, sqlx::migrate::MigrateError::VersionMissing(_)),
            "{stale}"
        );
        conn.close().await?;
        store_runs(&store).await?;

        store.migrate().await?;
        assert_eq!(
            recorded_pg(&pool, "_audit_migrations").await?,
            versions_of(&store.migrations())
        );
        assert_eq!(
            recorded_pg(&pool, "_sqlx_migrations").await?,
            versions_of(&app_migrations())
        );
        app_migrator().run(&pool).await?;
        store.migrate().await?;
        assert_eq!(store.count().await?, 5);
        store_runs(&store).await?;
        pg_app_runs(&pool).await?;
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
    let Some(url) = common::postgres_url() else {
        return Ok(());
    };
    time_limit(TEST_TIMEOUT, async {
        let mut schemas = Schemas::new(&url);
        let pool = schemas.app_pool().await?;
        let schema = schemas.fresh("store");
        let names = TableNames::new().prefix("tenant_audit_")?.schema(&schema)?;
        let store = PostgresStore::new(pool.clone())
            .chained(keys()?)
            .table_names(names);
        let merged = || {
            let mut migrations = app_migrations();
            migrations.extend(store.migrations());
            Migrator::with_migrations(migrations)
        };
        merged().run(&pool).await?;
        merged().run(&pool).await?;
        let mut expected = versions_of(&app_migrations());
        expected.extend(versions_of(&store.migrations()));
        assert_eq!(recorded_pg(&pool, "_sqlx_migrations").await?, expected);
        pg_app_runs(&pool).await?;
        store_runs(&store).await?;

        let app_schema: String = sqlx::query_scalar("SELECT current_schema()")
            .fetch_one(&pool)
            .await?;
        assert_eq!(
            tables_in(&pool, &app_schema).await?,
            ["_sqlx_migrations", "widgets"],
            "nothing of the store's in the app's schema"
        );
        let store_tables = tables_in(&pool, &schema).await?;
        assert_eq!(
            store_tables,
            [
                "tenant_audit_chain_heads",
                "tenant_audit_checkpoints",
                "tenant_audit_logs",
                "tenant_audit_logs_p2025_03"
            ]
        );
        // Retention drops the month's partition, in the store's schema.
        let retention = store.retain(BASE_MS + 40 * 24 * 3600 * 1000).await?;
        assert_eq!(retention.deleted, 5, "{retention:?}");
        assert!(
            !tables_in(&pool, &schema)
                .await?
                .contains(&"tenant_audit_logs_p2025_03".to_owned())
        );
        Ok(())
    })
    .await
}

#[tokio::test]
async fn postgres_a_store_in_its_own_schema_migrates_itself_and_runs() -> TestResult {
    let Some(url) = common::postgres_url() else {
        return Ok(());
    };
    time_limit(TEST_TIMEOUT, async {
        let mut schemas = Schemas::new(&url);
        let pool = schemas.app_pool().await?;
        let schema = schemas.fresh("own");
        let store = PostgresStore::new(pool.clone())
            .chained(keys()?)
            .table_names(TableNames::new().schema(&schema)?);
        app_migrator().run(&pool).await?;
        store.migrate().await?;
        store.migrate().await?;
        app_migrator().run(&pool).await?;
        let recorded = recorded_pg(&pool, &format!("{schema}._audit_migrations")).await?;
        assert_eq!(recorded, versions_of(&store.migrations()));
        store_runs(&store).await?;
        let search_path: String = sqlx::query_scalar("SHOW search_path")
            .fetch_one(&pool)
            .await?;
        assert!(search_path.starts_with("adopt_app_"), "{search_path}");
        let n: i64 = sqlx::query_scalar(AssertSqlSafe(format!(
            "SELECT count(*) FROM {schema}.audit_logs"
        )))
        .fetch_one(&pool)
        .await?;
        assert_eq!(n, 5);
        Ok(())
    })
    .await
}
