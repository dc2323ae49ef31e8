-- Cerebelum schema, SQLite. Times are milliseconds since the Unix epoch.

CREATE TABLE packages (
    sha256      TEXT PRIMARY KEY,
    name        TEXT NOT NULL,
    version     INTEGER NOT NULL,
    bytes       BLOB NOT NULL,
    info        TEXT NOT NULL,
    created_at  INTEGER NOT NULL,
    UNIQUE (name, version)
);

CREATE TABLE executions (
    id               TEXT PRIMARY KEY,
    package_sha256   TEXT NOT NULL REFERENCES packages (sha256),
    package_name     TEXT NOT NULL,
    package_version  INTEGER NOT NULL,
    workflow         TEXT NOT NULL,
    input            TEXT NOT NULL,
    idempotency_key  TEXT UNIQUE,
    status           TEXT NOT NULL,
    result           TEXT,
    error            TEXT,
    created_at       INTEGER NOT NULL,
    updated_at       INTEGER NOT NULL,
    -- When a pending/waiting execution is due; NULL: only an event wakes it.
    wake_at          INTEGER,
    -- Ownership: the node driving it, until lease_expires_at; every claim
    -- bumps epoch, and every journal write is fenced by it.
    owner            TEXT,
    lease_expires_at INTEGER,
    epoch            INTEGER NOT NULL DEFAULT 0,
    cancel_requested INTEGER NOT NULL DEFAULT 0,
    -- Bumped by every approval decision and cancel request, so a node that
    -- hibernates an execution can tell an event arrived while it ran.
    signals          INTEGER NOT NULL DEFAULT 0
);

CREATE INDEX executions_due ON executions (status, wake_at);
CREATE INDEX executions_lease ON executions (status, lease_expires_at);
CREATE INDEX executions_owner ON executions (owner);
CREATE INDEX executions_created ON executions (created_at);

CREATE TABLE journal (
    execution_id TEXT NOT NULL,
    seq          INTEGER NOT NULL,
    invocation   TEXT NOT NULL,
    kind         TEXT NOT NULL,
    ref_seq      INTEGER,
    args_hash    TEXT,
    payload      TEXT NOT NULL,
    at           INTEGER NOT NULL,
    PRIMARY KEY (execution_id, seq)
) WITHOUT ROWID;

CREATE TABLE approvals (
    execution_id TEXT NOT NULL,
    key          TEXT NOT NULL,
    -- pending | approved | rejected | timed-out | cancelled
    status       TEXT NOT NULL,
    request      TEXT NOT NULL,
    decision     TEXT,
    created_at   INTEGER NOT NULL,
    decided_at   INTEGER,
    PRIMARY KEY (execution_id, key)
);
