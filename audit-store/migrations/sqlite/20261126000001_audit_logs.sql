-- One row per audit record: typed columns for every query filter, and the record's JSON
-- exactly as the layer serialized it.
CREATE TABLE IF NOT EXISTS audit_logs (
    id               BLOB    NOT NULL PRIMARY KEY, -- UUIDv7, 16 bytes: byte order is time order
    time_ms          INTEGER NOT NULL,             -- action.time, ms since the Unix epoch
    account_id       TEXT,
    account_name     TEXT,
    zone_id          TEXT,
    zone_name        TEXT,
    action_type      TEXT    NOT NULL,
    action_result    TEXT    NOT NULL,
    actor_email      TEXT,
    actor_id         TEXT,
    actor_ip_address TEXT,
    actor_type       TEXT,
    actor_context    TEXT,
    actor_token_id   TEXT,
    actor_token_name TEXT,
    raw_ray_id       TEXT    NOT NULL,
    raw_method       TEXT    NOT NULL,
    raw_status_code  INTEGER NOT NULL,
    raw_uri          TEXT    NOT NULL,
    resource_id      TEXT,
    resource_product TEXT,
    resource_type    TEXT,
    resource_scope   TEXT,
    record           TEXT    NOT NULL
) WITHOUT ROWID;

-- Every query is per account and time range, newest first, keyset-paginated on (time, id).
CREATE INDEX IF NOT EXISTS audit_logs_account_time ON audit_logs (account_id, time_ms, id);
-- The filters investigations use most, each with the time so a range scan stays in order.
CREATE INDEX IF NOT EXISTS audit_logs_account_actor_email ON audit_logs (account_id, actor_email, time_ms);
CREATE INDEX IF NOT EXISTS audit_logs_account_product ON audit_logs (account_id, resource_product, time_ms);
CREATE INDEX IF NOT EXISTS audit_logs_account_action ON audit_logs (account_id, action_type, time_ms);
-- Retention deletes by time across accounts.
CREATE INDEX IF NOT EXISTS audit_logs_time ON audit_logs (time_ms);
