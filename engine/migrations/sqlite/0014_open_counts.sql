-- How many open (pending, running or waiting) executions each tenant
-- has, kept by triggers in the same transaction as every change of an
-- execution's status, so that a start reads its tenant's count instead
-- of counting its executions (issue 31). A tenant's count is the sum of
-- its rows: a change adds a row (+1 or -1) instead of updating one, so
-- that writers on PostgreSQL never wait for each other's counter; a read
-- that finds many rows folds them into one
-- (`Executions::count_open_executions`).
-- A later migration that rebuilds `executions` must create the triggers
-- again.

CREATE TABLE open_counts (
    tenant TEXT NOT NULL,
    delta  INTEGER NOT NULL
);

CREATE INDEX open_counts_tenant ON open_counts (tenant);

INSERT INTO open_counts (tenant, delta)
    SELECT tenant, COUNT(*) FROM executions
    WHERE status IN ('pending', 'running', 'waiting') GROUP BY tenant;

CREATE TRIGGER executions_opened AFTER INSERT ON executions
    WHEN NEW.status IN ('pending', 'running', 'waiting')
BEGIN
    INSERT INTO open_counts (tenant, delta) VALUES (NEW.tenant, 1);
END;

CREATE TRIGGER executions_open_changed AFTER UPDATE OF status ON executions
    WHEN (OLD.status IN ('pending', 'running', 'waiting'))
        <> (NEW.status IN ('pending', 'running', 'waiting'))
BEGIN
    INSERT INTO open_counts (tenant, delta) VALUES (NEW.tenant,
        CASE WHEN NEW.status IN ('pending', 'running', 'waiting') THEN 1 ELSE -1 END);
END;

CREATE TRIGGER executions_open_deleted AFTER DELETE ON executions
    WHEN OLD.status IN ('pending', 'running', 'waiting')
BEGIN
    INSERT INTO open_counts (tenant, delta) VALUES (OLD.tenant, -1);
END;
