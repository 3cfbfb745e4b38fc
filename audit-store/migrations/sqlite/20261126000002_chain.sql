-- Tamper evidence: every record of a chained store carries its place in its account's hash
-- chain (`chain_seq`, 1, 2, ...), the chain hash over its columns and the previous record's
-- hash (`chain_hash`), and that hash sealed with the server's secret (`chain_seal`). Records
-- written by a store without chain keys leave the three columns NULL.
ALTER TABLE audit_logs ADD COLUMN chain_seq INTEGER;
ALTER TABLE audit_logs ADD COLUMN chain_hash BLOB;
ALTER TABLE audit_logs ADD COLUMN chain_seal BLOB;

-- Verification walks one chain in sequence order. Partial: an unchained store pays nothing.
-- Records without an account form the chain named ''.
CREATE INDEX IF NOT EXISTS audit_logs_chain
    ON audit_logs (coalesce(account_id, ''), chain_seq, id) WHERE chain_seq IS NOT NULL;

-- The newest record of every chain. Writers lock a chain's row for the length of their
-- transaction, which makes it the one ordering point per account, across processes too.
CREATE TABLE IF NOT EXISTS audit_chain_heads (
    chain TEXT    NOT NULL PRIMARY KEY,
    seq   INTEGER NOT NULL,
    hash  BLOB    NOT NULL
) WITHOUT ROWID;

-- Signed statements about a chain: `checkpoint` (its head at a time) and `anchor` (where
-- it starts after retention pruned older records).
CREATE TABLE IF NOT EXISTS audit_checkpoints (
    chain     TEXT    NOT NULL,
    seq       INTEGER NOT NULL,
    head      BLOB    NOT NULL,
    time_ms   INTEGER NOT NULL,
    kind      TEXT    NOT NULL,
    key_id    TEXT    NOT NULL,
    signature BLOB    NOT NULL,
    PRIMARY KEY (chain, seq, time_ms, kind)
) WITHOUT ROWID;
