-- Push export reads each account's records in commit order, so that a record committed long
-- after its action (replayed from the spool after an outage) is read after its commit instead
-- of falling behind a job that already passed its time. `committed_ms` is when the statement
-- writing the record began (`statement_timestamp()`: after a chained write has locked its
-- chains' heads), the same for all the rows of an `INSERT` or a `COPY`. Records stored before this migration have 0 (a constant
-- default: no rewrite of the table): they come first, in (time, id) order, which is where the
-- jobs' old (time, id) positions were.
ALTER TABLE audit_logs ADD COLUMN IF NOT EXISTS committed_ms bigint NOT NULL DEFAULT 0;
ALTER TABLE audit_logs ALTER COLUMN committed_ms
    SET DEFAULT (floor(extract(epoch FROM statement_timestamp()) * 1000))::bigint;
CREATE INDEX IF NOT EXISTS audit_logs_account_committed
    ON audit_logs (account_id, committed_ms, time_ms, id);

-- A job's positions gain the commit stamp of their record (0 for the positions written before,
-- which were in (time, id) order: the order of the records stamped 0).
ALTER TABLE audit_export_positions
    ADD COLUMN IF NOT EXISTS delivered_committed_ms bigint NOT NULL DEFAULT 0,
    ADD COLUMN IF NOT EXISTS pending_committed_ms bigint NOT NULL DEFAULT 0;
