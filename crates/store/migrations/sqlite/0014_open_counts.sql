-- How many open (pending, running or waiting) executions each tenant
-- has, kept by triggers in the same transaction as every change of an
-- execution's status, so that a start reads its tenant's count instead
-- of counting its executions (issue 31). A tenant's count is the sum of
-- its rows, one per `shard`: on PostgreSQL each connection writes its own
-- (its backend's pid), so concurrent writers never wait for each other's
-- counter or deadlock on two tenants'; SQLite has one writer and one
-- shard, 0. A read that finds many rows folds them
-- (`Executions::count_open_executions`).
-- A later migration that rebuilds `executions` must create the triggers
-- again.

CREATE TABLE open_counts (
    tenant TEXT NOT NULL,
    shard  INTEGER NOT NULL,
    n      INTEGER NOT NULL,
    PRIMARY KEY (tenant, shard)
);

INSERT INTO open_counts (tenant, shard, n)
    SELECT tenant, 0, COUNT(*) FROM executions
    WHERE status IN ('pending', 'running', 'waiting') GROUP BY tenant;

CREATE TRIGGER executions_opened AFTER INSERT ON executions
    WHEN NEW.status IN ('pending', 'running', 'waiting')
BEGIN
    INSERT OR IGNORE INTO open_counts (tenant, shard, n) VALUES (NEW.tenant, 0, 0);
    UPDATE open_counts SET n = n + 1 WHERE tenant = NEW.tenant AND shard = 0;
END;

CREATE TRIGGER executions_open_changed AFTER UPDATE OF status ON executions
    WHEN (OLD.status IN ('pending', 'running', 'waiting'))
        <> (NEW.status IN ('pending', 'running', 'waiting'))
BEGIN
    INSERT OR IGNORE INTO open_counts (tenant, shard, n) VALUES (NEW.tenant, 0, 0);
    UPDATE open_counts
    SET n = n + CASE WHEN NEW.status IN ('pending', 'running', 'waiting') THEN 1 ELSE -1 END
    WHERE tenant = NEW.tenant AND shard = 0;
END;

CREATE TRIGGER executions_open_deleted AFTER DELETE ON executions
    WHEN OLD.status IN ('pending', 'running', 'waiting')
BEGIN
    UPDATE open_counts SET n = n - 1 WHERE tenant = OLD.tenant AND shard = 0;
END;
