//! The store's own statements, built by `audit_store::store::sql`, as text and bound values:
//! what a benchmark runs outside the store (`EXPLAIN`, a count, raw sqlx) is then exactly what
//! the store sends.

use audit_store::model::RecordQuery;
use audit_store::store::TableNames;
use audit_store::store::sql::{self, Dialect, QueryTarget};
use sqlx::query::Query;
use sqlx::{AssertSqlSafe, Database, Encode, Type};
use uuid::Uuid;

/// A bound value.
#[derive(Clone, Debug)]
pub(crate) enum Param {
    Text(String),
    Int4(i32),
    Int8(i64),
    Uuid(Uuid),
}

impl Param {
    /// The value's PostgreSQL type, for `PREPARE`.
    pub(crate) fn pg_type(&self) -> &'static str {
        match self {
            Self::Text(_) => "text",
            Self::Int4(_) => "int4",
            Self::Int8(_) => "int8",
            Self::Uuid(_) => "uuid",
        }
    }

    /// The value as a PostgreSQL literal, for `EXECUTE` (the values are the benchmark's own:
    /// hex, emails, numbers).
    pub(crate) fn pg_literal(&self) -> String {
        match self {
            Self::Text(t) => format!("'{}'", t.replace('\'', "''")),
            Self::Int4(i) => i.to_string(),
            Self::Int8(i) => i.to_string(),
            Self::Uuid(u) => format!("'{u}'"),
        }
    }
}

/// A statement's text, with its dialect's placeholders, and the values bound to them.
#[derive(Clone, Debug)]
pub(crate) struct Statement {
    dialect: Dialect,
    pub(crate) sql: String,
    pub(crate) params: Vec<Param>,
}

impl QueryTarget for Statement {
    fn sql(&mut self, sql: &str) {
        self.sql.push_str(sql);
    }

    fn text(&mut self, value: String) {
        self.bind(Param::Text(value));
    }

    fn int(&mut self, value: i32) {
        self.bind(Param::Int4(value));
    }

    fn bigint(&mut self, value: i64) {
        self.bind(Param::Int8(value));
    }

    fn uuid(&mut self, value: Uuid) {
        self.bind(Param::Uuid(value));
    }
}

impl Statement {
    fn new(dialect: Dialect) -> Self {
        Self {
            dialect,
            sql: String::new(),
            params: Vec::new(),
        }
    }

    fn bind(&mut self, param: Param) {
        self.params.push(param);
        self.sql
            .push_str(&self.dialect.placeholder(self.params.len()));
    }

    /// The page query the store runs for `query` ([`sql::page`]).
    pub(crate) fn page(dialect: Dialect, query: &RecordQuery) -> Self {
        let mut statement = Self::new(dialect);
        sql::page(&mut statement, &TableNames::default(), query);
        statement
    }

    /// How many rows `query` selects without its limit: its page query, unlimited, counted.
    pub(crate) fn count(dialect: Dialect, query: &RecordQuery) -> Self {
        let mut statement = Self::new(dialect);
        statement.sql("SELECT count(*) FROM (");
        let unlimited = RecordQuery {
            limit: u32::MAX,
            ..query.clone()
        };
        sql::page(&mut statement, &TableNames::default(), &unlimited);
        statement.sql(") AS matching");
        statement
    }

    /// `wrap` around this statement's text, with the same values (`{}` marks the statement).
    pub(crate) fn wrapped(&self, wrap: &str) -> Self {
        Self {
            sql: wrap.replace("{}", &self.sql),
            ..self.clone()
        }
    }

    /// A sqlx query of this statement, its values bound.
    pub(crate) fn query<'q, DB: Database>(&self) -> Query<'q, DB, DB::Arguments>
    where
        String: for<'t> Encode<'t, DB> + Type<DB>,
        i32: for<'t> Encode<'t, DB> + Type<DB>,
        i64: for<'t> Encode<'t, DB> + Type<DB>,
        Uuid: for<'t> Encode<'t, DB> + Type<DB>,
    {
        let mut query = sqlx::query(AssertSqlSafe(self.sql.clone()));
        for param in &self.params {
            query = match param {
                Param::Text(t) => query.bind(t.clone()),
                Param::Int4(i) => query.bind(*i),
                Param::Int8(i) => query.bind(*i),
                Param::Uuid(u) => query.bind(*u),
            };
        }
        query
    }

    /// The PostgreSQL types of the values, for `PREPARE name(<types>)`.
    pub(crate) fn pg_types(&self) -> String {
        let types: Vec<&str> = self.params.iter().map(Param::pg_type).collect();
        types.join(", ")
    }

    /// The values as PostgreSQL literals, for `EXECUTE name(<literals>)`.
    pub(crate) fn pg_literals(&self) -> String {
        let literals: Vec<String> = self.params.iter().map(Param::pg_literal).collect();
        literals.join(", ")
    }
}
