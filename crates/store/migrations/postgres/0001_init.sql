-- Cerebelum schema, PostgreSQL. The same tables as the SQLite schema; times
-- are milliseconds since the Unix epoch; JSON is stored as text, exactly as
-- the engine wrote it.

CREATE TABLE packages (
    sha256      TEXT PRIMARY KEY,
    name        TEXT NOT NULL,
    version     BIGINT NOT NULL,
    bytes       BYTEA NOT NULL,
    info        TEXT NOT NULL,
    created_at  BIGINT NOT NULL,
    UNIQUE (name, version)
);

CREATE TABLE executions (
    id               TEXT PRIMARY KEY,
    package_sha256   TEXT NOT NULL REFERENCES packages (sha256),
    package_name     TEXT NOT NULL,
    package_version  BIGINT NOT NULL,
    workflow         TEXT NOT NULL,
    input            TEXT NOT NULL,
    idempotency_key  TEXT UNIQUE,
    status           TEXT NOT NULL,
    result           TEXT,
    error            TEXT,
    created_at       BIGINT NOT NULL,
    updated_at       BIGINT NOT NULL,
    -- When a pending/waiting execution is due; NULL: only an event wakes it.
    wake_at          BIGINT,
    -- Ownership: the node driving it, until lease_expires_at; every claim
    -- bumps epoch, and every journal write is fenced by it.
    owner            TEXT,
    lease_expires_at BIGINT,
    epoch            BIGINT NOT NULL DEFAULT 0,
    cancel_requested BOOLEAN NOT NULL DEFAULT FALSE,
    -- Bumped by every approval decision and cancel request, so a node that
    -- hibernates an execution can tell an event arrived while it ran.
    signals          BIGINT NOT NULL DEFAULT 0
);

-- The claim query's two halves: due pending/waiting work, expired leases.
CREATE INDEX executions_due ON executions (wake_at) WHERE status IN ('pending', 'waiting');
CREATE INDEX executions_lease ON executions (lease_expires_at) WHERE status = 'running';
CREATE INDEX executions_owner ON executions (owner) WHERE owner IS NOT NULL;
CREATE INDEX executions_created ON executions (created_at);

CREATE TABLE journal (
    execution_id TEXT NOT NULL,
    seq          BIGINT NOT NULL,
    invocation   TEXT NOT NULL,
    kind         TEXT NOT NULL,
    ref_seq      BIGINT,
    args_hash    TEXT,
    payload      TEXT NOT NULL,
    at           BIGINT NOT NULL,
    PRIMARY KEY (execution_id, seq)
);

CREATE TABLE approvals (
    execution_id TEXT NOT NULL,
    key          TEXT NOT NULL,
    -- pending | approved | rejected | timed-out | cancelled
    status       TEXT NOT NULL,
    request      TEXT NOT NULL,
    decision     TEXT,
    created_at   BIGINT NOT NULL,
    decided_at   BIGINT,
    PRIMARY KEY (execution_id, key)
);

-- Wakes every node (LISTEN cerebelum_due) when an execution becomes
-- claimable by a write: a start, an approval decision, a cancel or retry,
-- a hibernation. Notifications are sent at commit and folded per
-- transaction; a node that hears one runs its claim query at once instead
-- of at its next polling tick (which stays the fallback, and the only path
-- for timers).
CREATE FUNCTION cerebelum_notify_due() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('cerebelum_due', '');
    RETURN NULL;
END;
$$;

CREATE TRIGGER executions_due_notify
    AFTER INSERT OR UPDATE OF wake_at, status ON executions
    FOR EACH ROW
    WHEN (NEW.status IN ('pending', 'waiting') AND NEW.wake_at IS NOT NULL)
    EXECUTE FUNCTION cerebelum_notify_due();
