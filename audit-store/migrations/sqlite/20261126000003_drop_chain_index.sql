-- The per-chain index of migration 2 made every chained insert update a fifth B-tree keyed by
-- account: about two thirds of what chaining cost SQLite at ingest (BENCHMARKS.md, "Tamper
-- evidence"). Verification no longer needs it: a whole store is verified in one pass in table
-- order (`chain::verify_all`), one account through `audit_logs_account_time`, its records
-- put back into sequence order in memory (`chain::verify`).
DROP INDEX IF EXISTS audit_logs_chain;
