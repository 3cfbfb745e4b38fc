-- One row per audit record: typed columns for every query filter, and the record's JSON
-- exactly as the layer serialized it (text, not jsonb, which would reorder and respace it).
-- Partitioned by month of action.time: retention drops whole partitions. The store creates
-- each month's partition before it first writes to it.
CREATE TABLE IF NOT EXISTS audit_logs (
    id               uuid    NOT NULL,
    time_ms          bigint  NOT NULL,
    account_id       text,
    account_name     text,
    zone_id          text,
    zone_name        text,
    action_type      text    NOT NULL,
    action_result    text    NOT NULL,
    actor_email      text,
    actor_id         text,
    actor_ip_address text,
    actor_type       text,
    actor_context    text,
    actor_token_id   text,
    actor_token_name text,
    raw_ray_id       text    NOT NULL,
    raw_method       text    NOT NULL,
    raw_status_code  integer NOT NULL,
    raw_uri          text    NOT NULL,
    resource_id      text,
    resource_product text,
    resource_type    text,
    resource_scope   text,
    record           text    NOT NULL,
    PRIMARY KEY (id, time_ms)
) PARTITION BY RANGE (time_ms);

CREATE INDEX IF NOT EXISTS audit_logs_account_time ON audit_logs (account_id, time_ms, id);
CREATE INDEX IF NOT EXISTS audit_logs_account_actor_email ON audit_logs (account_id, actor_email, time_ms);
CREATE INDEX IF NOT EXISTS audit_logs_account_product ON audit_logs (account_id, resource_product, time_ms);
CREATE INDEX IF NOT EXISTS audit_logs_account_action ON audit_logs (account_id, action_type, time_ms);
