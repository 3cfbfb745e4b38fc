-- The per-chain index of migration 2 made every chained insert update one more index keyed by
-- account: about 40 % of what chaining cost PostgreSQL at ingest (BENCHMARKS.md, "Tamper
-- evidence"). Verification no longer needs it: a whole store is verified in one sequential
-- scan (`chain::verify_all`), one account through `audit_logs_account_time`, its records put
-- back into sequence order in memory (`chain::verify`). Dropping the partitioned index drops
-- every partition's.
DROP INDEX IF EXISTS audit_logs_chain;
