-- The statistics of one account's records with a filter (the viewer's trends, the stats
-- endpoint) read six columns of every matching record: time, result, actor, action, resource
-- type and product. With the filter indexes holding only (account, filter, time), each
-- matching record was read from the table, one heap block per record at a million rows
-- (issue 21, BENCHMARKS.md, "The viewer"). Each filter index now carries the other stats
-- columns (`INCLUDE`: stored in the leaf entries, not part of the key), so the index the
-- planner already picks for the filter answers the statistics with an index-only scan. The
-- key, and so every page query's plan, is unchanged. Dropping and creating an index on the
-- partitioned table does so on every partition; the build holds the table's lock (ingestion
-- meanwhile goes to the spool) for as long as it takes: upgrade at a quiet time.
DROP INDEX IF EXISTS audit_logs_account_actor_email;
CREATE INDEX IF NOT EXISTS audit_logs_account_actor_email
    ON audit_logs (account_id, actor_email, time_ms)
    INCLUDE (action_result, action_type, resource_type, resource_product);
DROP INDEX IF EXISTS audit_logs_account_product;
CREATE INDEX IF NOT EXISTS audit_logs_account_product
    ON audit_logs (account_id, resource_product, time_ms)
    INCLUDE (action_result, actor_email, action_type, resource_type);
DROP INDEX IF EXISTS audit_logs_account_action;
CREATE INDEX IF NOT EXISTS audit_logs_account_action
    ON audit_logs (account_id, action_type, time_ms)
    INCLUDE (action_result, actor_email, resource_type, resource_product);
