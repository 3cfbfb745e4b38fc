-- Events (actions that are not HTTP requests) have no method, URI or status: `raw_method`,
-- `raw_status_code` and `raw_uri` become nullable. On a partitioned table this applies to
-- every partition, and changes only the catalog (no rewrite, no scan).
ALTER TABLE audit_logs
    ALTER COLUMN raw_method DROP NOT NULL,
    ALTER COLUMN raw_status_code DROP NOT NULL,
    ALTER COLUMN raw_uri DROP NOT NULL;
