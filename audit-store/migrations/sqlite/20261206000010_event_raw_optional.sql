-- Events (actions that are not HTTP requests) have no method, URI or status: `raw_method`,
-- `raw_status_code` and `raw_uri` become nullable. SQLite cannot drop a NOT NULL constraint in
-- place, so the table is rebuilt with the same columns in the same order, its rows copied as
-- they are (chain columns included: a record's chain hash covers its values, which do not
-- change), and its indexes made again. On a large table this takes a while and the write
-- lock: upgrade at a quiet time (records meanwhile go to the spool).
CREATE TABLE audit_logs_new (
    id               BLOB    NOT NULL PRIMARY KEY,
    time_ms          INTEGER NOT NULL,
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
    raw_method       TEXT,
    raw_status_code  INTEGER,
    raw_uri          TEXT,
    resource_id      TEXT,
    resource_product TEXT,
    resource_type    TEXT,
    resource_scope   TEXT,
    record           TEXT    NOT NULL,
    chain_seq        INTEGER,
    chain_hash       BLOB,
    chain_seal       BLOB
) WITHOUT ROWID;

INSERT INTO audit_logs_new (
    id, time_ms, account_id, account_name, zone_id, zone_name, action_type, action_result,
    actor_email, actor_id, actor_ip_address, actor_type, actor_context, actor_token_id,
    actor_token_name, raw_ray_id, raw_method, raw_status_code, raw_uri, resource_id,
    resource_product, resource_type, resource_scope, record, chain_seq, chain_hash, chain_seal
)
SELECT
    id, time_ms, account_id, account_name, zone_id, zone_name, action_type, action_result,
    actor_email, actor_id, actor_ip_address, actor_type, actor_context, actor_token_id,
    actor_token_name, raw_ray_id, raw_method, raw_status_code, raw_uri, resource_id,
    resource_product, resource_type, resource_scope, record, chain_seq, chain_hash, chain_seal
FROM audit_logs;

DROP TABLE audit_logs;
ALTER TABLE audit_logs_new RENAME TO audit_logs;

CREATE INDEX IF NOT EXISTS audit_logs_account_time ON audit_logs (account_id, time_ms, id);
CREATE INDEX IF NOT EXISTS audit_logs_account_actor_email ON audit_logs (account_id, actor_email, time_ms);
CREATE INDEX IF NOT EXISTS audit_logs_account_product ON audit_logs (account_id, resource_product, time_ms);
CREATE INDEX IF NOT EXISTS audit_logs_account_action ON audit_logs (account_id, action_type, time_ms);
CREATE INDEX IF NOT EXISTS audit_logs_time ON audit_logs (time_ms);
