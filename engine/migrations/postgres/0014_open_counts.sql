-- How many open (pending, running or waiting) executions each tenant
-- has, kept by triggers in the same transaction as every change of an
-- execution's status, so that a start reads its tenant's count instead
-- of counting its executions (issue 31). A tenant's count is the sum of
-- its rows: a change adds a row (+1 or -1) instead of updating one, so
-- that concurrent writers (two nodes' group commits, an API write) never
-- wait for each other's counter row or deadlock on two tenants' rows; a
-- read that finds many rows folds them into one
-- (`Executions::count_open_executions`).

CREATE TABLE open_counts (
    tenant TEXT NOT NULL,
    delta  BIGINT NOT NULL
);

CREATE INDEX open_counts_tenant ON open_counts (tenant);

INSERT INTO open_counts (tenant, delta)
    SELECT tenant, COUNT(*) FROM executions
    WHERE status IN ('pending', 'running', 'waiting') GROUP BY tenant;

CREATE FUNCTION open_counts_track() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        INSERT INTO open_counts (tenant, delta) VALUES (OLD.tenant, -1);
    ELSIF NEW.status IN ('pending', 'running', 'waiting') THEN
        INSERT INTO open_counts (tenant, delta) VALUES (NEW.tenant, 1);
    ELSE
        INSERT INTO open_counts (tenant, delta) VALUES (NEW.tenant, -1);
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER executions_opened AFTER INSERT ON executions FOR EACH ROW
    WHEN (NEW.status IN ('pending', 'running', 'waiting'))
    EXECUTE FUNCTION open_counts_track();

CREATE TRIGGER executions_open_changed AFTER UPDATE OF status ON executions FOR EACH ROW
    WHEN ((OLD.status IN ('pending', 'running', 'waiting'))
        IS DISTINCT FROM (NEW.status IN ('pending', 'running', 'waiting')))
    EXECUTE FUNCTION open_counts_track();

CREATE TRIGGER executions_open_deleted AFTER DELETE ON executions FOR EACH ROW
    WHEN (OLD.status IN ('pending', 'running', 'waiting'))
    EXECUTE FUNCTION open_counts_track();
