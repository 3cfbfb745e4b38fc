-- Invitations to become a member of an account (SQLite). An administrator's "add member"
-- creates one; only the invited user, signed in as themselves, turns it into a row of
-- `members` (accepts) or deletes it (rejects). A pending invitation grants nothing: access
-- comes from `members` only.
CREATE TABLE IF NOT EXISTS invitations (
    id         TEXT   PRIMARY KEY,
    account_id TEXT   NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    user_id    TEXT   NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    role       TEXT   NOT NULL,
    -- The administrator who sent it; NULL once that user is deleted.
    invited_by TEXT   REFERENCES users (id) ON DELETE SET NULL,
    created_ms BIGINT NOT NULL,
    UNIQUE (account_id, user_id)
);
CREATE INDEX IF NOT EXISTS invitations_user ON invitations (user_id, created_ms);
