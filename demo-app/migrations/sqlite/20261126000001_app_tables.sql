-- The demo application's own tables (SQLite). Times are Unix milliseconds; secrets are stored
-- only as hashes: argon2 PHC strings for passwords, SHA-256 hex for API tokens and sessions.
CREATE TABLE IF NOT EXISTS accounts (
    id                TEXT    PRIMARY KEY,
    name              TEXT    NOT NULL,
    enforce_twofactor INTEGER NOT NULL DEFAULT 0,
    created_ms        BIGINT  NOT NULL
);

CREATE TABLE IF NOT EXISTS users (
    id            TEXT   PRIMARY KEY,
    email         TEXT   NOT NULL UNIQUE,
    -- NULL until the invited user sets a password: such a user cannot log in.
    password_hash TEXT,
    created_ms    BIGINT NOT NULL
);

CREATE TABLE IF NOT EXISTS members (
    account_id TEXT   NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    user_id    TEXT   NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    role       TEXT   NOT NULL,
    created_ms BIGINT NOT NULL,
    PRIMARY KEY (account_id, user_id)
);

CREATE TABLE IF NOT EXISTS api_tokens (
    id         TEXT   PRIMARY KEY,
    account_id TEXT   NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    user_id    TEXT   NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    name       TEXT   NOT NULL,
    token_hash TEXT   NOT NULL UNIQUE,
    created_ms BIGINT NOT NULL,
    revoked_ms BIGINT
);
CREATE INDEX IF NOT EXISTS api_tokens_account ON api_tokens (account_id, created_ms);

CREATE TABLE IF NOT EXISTS sessions (
    id_hash    TEXT   PRIMARY KEY,
    user_id    TEXT   NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    created_ms BIGINT NOT NULL,
    expires_ms BIGINT NOT NULL
);

CREATE TABLE IF NOT EXISTS zones (
    id          TEXT    PRIMARY KEY,
    account_id  TEXT    NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    name        TEXT    NOT NULL UNIQUE,
    status      TEXT    NOT NULL,
    paused      INTEGER NOT NULL DEFAULT 0,
    created_ms  BIGINT  NOT NULL,
    modified_ms BIGINT  NOT NULL
);
CREATE INDEX IF NOT EXISTS zones_account ON zones (account_id, name);

CREATE TABLE IF NOT EXISTS dns_records (
    id          TEXT    PRIMARY KEY,
    zone_id     TEXT    NOT NULL REFERENCES zones (id) ON DELETE CASCADE,
    type        TEXT    NOT NULL,
    name        TEXT    NOT NULL,
    content     TEXT    NOT NULL,
    ttl         BIGINT  NOT NULL,
    proxied     INTEGER NOT NULL DEFAULT 0,
    comment     TEXT,
    created_ms  BIGINT  NOT NULL,
    modified_ms BIGINT  NOT NULL
);
CREATE INDEX IF NOT EXISTS dns_records_zone ON dns_records (zone_id, name);

CREATE TABLE IF NOT EXISTS alerting_policies (
    id          TEXT    PRIMARY KEY,
    account_id  TEXT    NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    name        TEXT    NOT NULL,
    description TEXT,
    enabled     INTEGER NOT NULL,
    alert_type  TEXT    NOT NULL,
    -- JSON: {"services": [...], "zones": [...]} and {"email": [...], "webhooks": [...]}.
    filters     TEXT    NOT NULL,
    mechanisms  TEXT    NOT NULL,
    created_ms  BIGINT  NOT NULL,
    modified_ms BIGINT  NOT NULL
);
CREATE INDEX IF NOT EXISTS alerting_policies_account ON alerting_policies (account_id, created_ms);
