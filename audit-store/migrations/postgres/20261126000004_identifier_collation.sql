-- The indexed text columns hold identifiers (account ids, e-mail addresses, product and action
-- names) that the query API matches only for equality. Under a linguistic collation every
-- index comparison went through strcoll (and under C.UTF-8 too, before PostgreSQL 17); the
-- index comparisons were about a third of PostgreSQL's CPU per inserted record, and byte
-- comparisons took a tenth off it (BENCHMARKS.md, "Whole servers").
-- With COLLATE "C" they compare as bytes; equality is the same for any deterministic
-- collation, so no query changes. A collation change rebuilds the indexes, not the table;
-- on a large existing table that rebuild holds the table's lock (and so ingestion, which
-- meanwhile goes to the spool) for as long as it takes: upgrade at a quiet time.
ALTER TABLE audit_logs
    ALTER COLUMN account_id TYPE text COLLATE "C",
    ALTER COLUMN actor_email TYPE text COLLATE "C",
    ALTER COLUMN resource_product TYPE text COLLATE "C",
    ALTER COLUMN action_type TYPE text COLLATE "C";
