-- Operator keys (issue 17): a key that belongs to no tenant and sees every
-- tenant in the console (`cerebelum admin key create --operator`). Like
-- api_keys, only the SHA-256 of the whole key is stored.
CREATE TABLE operator_keys (
    id         TEXT PRIMARY KEY,
    hash       TEXT NOT NULL UNIQUE,
    created_at BIGINT NOT NULL,
    revoked_at BIGINT
);

-- The operator's list of every tenant's executions, newest first.
CREATE INDEX executions_newest ON executions (created_at);
