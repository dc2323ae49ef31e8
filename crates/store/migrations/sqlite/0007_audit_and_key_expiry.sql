-- The audit log (issue 19): who (a key id, or `cli:<user>` for
-- `cerebelum admin` on the database), did what, to what, when, from where.
-- Append-only: the triggers refuse to change or delete a row.
CREATE TABLE audit_log (
    id      INTEGER PRIMARY KEY AUTOINCREMENT,
    at      INTEGER NOT NULL,
    -- The tenant acted on; '' for what belongs to no tenant (operator keys).
    tenant  TEXT NOT NULL,
    actor   TEXT NOT NULL,
    -- The peer address of the request, or 'local'.
    origin  TEXT NOT NULL,
    -- e.g. 'execution.cancel', 'key.create'.
    action  TEXT NOT NULL,
    -- The execution id, key id, tenant or secret name acted on.
    target  TEXT NOT NULL,
    -- More about it, as JSON (e.g. the approval key); never a secret.
    detail  TEXT
);

CREATE INDEX audit_log_tenant ON audit_log (tenant, id);

CREATE TRIGGER audit_log_no_update BEFORE UPDATE ON audit_log
BEGIN
    SELECT RAISE(ABORT, 'the audit log is append-only');
END;

CREATE TRIGGER audit_log_no_delete BEFORE DELETE ON audit_log
BEGIN
    SELECT RAISE(ABORT, 'the audit log is append-only');
END;

-- Keys (issue 19) get an optional expiry (refused from then on, like a
-- revoked key) and the time they were last used (written at most once a
-- minute per key and node).
ALTER TABLE api_keys ADD COLUMN expires_at INTEGER;
ALTER TABLE api_keys ADD COLUMN last_used_at INTEGER;
ALTER TABLE operator_keys ADD COLUMN expires_at INTEGER;
ALTER TABLE operator_keys ADD COLUMN last_used_at INTEGER;
