-- Tamper evidence: every record of a chained store carries its place in its account's hash
-- chain (`chain_seq`, 1, 2, ...), the chain hash over its columns and the previous record's
-- hash (`chain_hash`), and that hash sealed with the server's secret (`chain_seal`). Records
-- written by a store without chain keys leave the three columns NULL.
ALTER TABLE audit_logs ADD COLUMN IF NOT EXISTS chain_seq bigint;
ALTER TABLE audit_logs ADD COLUMN IF NOT EXISTS chain_hash bytea;
ALTER TABLE audit_logs ADD COLUMN IF NOT EXISTS chain_seal bytea;

-- Verification walks one chain in sequence order. Partial: an unchained store pays nothing.
-- Records without an account form the chain named ''.
CREATE INDEX IF NOT EXISTS audit_logs_chain
    ON audit_logs ((coalesce(account_id, '')), chain_seq, id) WHERE chain_seq IS NOT NULL;

-- The newest record of every chain. Writers lock a chain's row (`FOR UPDATE`) for the length
-- of their transaction: the one ordering point per account, across app instances.
CREATE TABLE IF NOT EXISTS audit_chain_heads (
    chain text   NOT NULL PRIMARY KEY,
    seq   bigint NOT NULL,
    hash  bytea  NOT NULL
);

-- Signed statements about a chain: `checkpoint` (its head at a time) and `anchor` (where
-- it starts after retention pruned older records).
CREATE TABLE IF NOT EXISTS audit_checkpoints (
    chain     text   NOT NULL,
    seq       bigint NOT NULL,
    head      bytea  NOT NULL,
    time_ms   bigint NOT NULL,
    kind      text   NOT NULL,
    key_id    text   NOT NULL,
    signature bytea  NOT NULL,
    PRIMARY KEY (chain, seq, time_ms, kind)
);
