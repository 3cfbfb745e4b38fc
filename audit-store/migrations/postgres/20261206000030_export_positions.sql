-- Push export: how far each export job has delivered each account's log, in (time, id)
-- order. `pending_*` is the last record of the batch being delivered (written before it is
-- sent): after a restart the same batch is read again, up to that record, and sent under the
-- same idempotency key. NULL when no batch is in flight.
CREATE TABLE IF NOT EXISTS audit_export_positions (
    job               text   COLLATE "C" NOT NULL,
    account_id        text   COLLATE "C" NOT NULL,
    delivered_time_ms bigint,
    delivered_id      uuid,
    pending_time_ms   bigint,
    pending_id        uuid,
    updated_ms        bigint NOT NULL,
    PRIMARY KEY (job, account_id)
);
