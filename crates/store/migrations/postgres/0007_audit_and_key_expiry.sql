-- The audit log (issue 19): who (a key id, or `cli:<user>` for
-- `cerebelum admin` on the database), did what, to what, when, from where.
-- Append-only: the trigger refuses to change or delete a row.
CREATE TABLE audit_log (
    id      BIGSERIAL PRIMARY KEY,
    at      BIGINT NOT NULL,
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

CREATE FUNCTION audit_log_append_only() RETURNS trigger AS $$
BEGIN
    RAISE EXCEPTION 'the audit log is append-only';
END;
$$ LANGUAGE plpgsql;

CREATE TRIGGER audit_log_append_only BEFORE UPDATE OR DELETE ON audit_log
    FOR EACH ROW EXECUTE FUNCTION audit_log_append_only();

-- Keys (issue 19) get an optional expiry (refused from then on, like a
-- revoked key) and the time they were last used (written at most once a
-- minute per key and node).
ALTER TABLE api_keys ADD COLUMN expires_at BIGINT;
ALTER TABLE api_keys ADD COLUMN last_used_at BIGINT;
ALTER TABLE operator_keys ADD COLUMN expires_at BIGINT;
ALTER TABLE operator_keys ADD COLUMN last_used_at BIGINT;
