-- Push export reads each account's records in commit order, so that a record committed long
-- after its action (replayed from the spool after an outage) is read after its commit instead
-- of falling behind a job that already passed its time. `committed_ms` is when the record's
-- write began (the store stamps it, the same for a whole transaction); records stored before
-- this migration have 0: they come first, in (time, id) order, which is where the jobs' old
-- (time, id) positions were.
-- Nullable: the ingest benchmark's `sqlite3 .import` reference loads the 24 stored columns
-- and fills the rest with NULL. The store always writes it; a NULL row is never exported.
ALTER TABLE audit_logs ADD COLUMN committed_ms INTEGER DEFAULT 0;
CREATE INDEX IF NOT EXISTS audit_logs_account_committed
    ON audit_logs (account_id, committed_ms, time_ms, id);

-- A job's positions gain the commit stamp of their record (0 for the positions written before,
-- which were in (time, id) order: the order of the records stamped 0).
ALTER TABLE audit_export_positions ADD COLUMN delivered_committed_ms INTEGER NOT NULL DEFAULT 0;
ALTER TABLE audit_export_positions ADD COLUMN pending_committed_ms INTEGER NOT NULL DEFAULT 0;
