-- How many open (pending, running or waiting) executions each tenant
-- has, kept by triggers in the same transaction as every change of an
-- execution's status, so that a start reads its tenant's count instead
-- of counting its executions (issue 31). A tenant's count is the sum of
-- its rows, one per `shard`: each connection adds to its own (its
-- backend's pid), so concurrent writers (two nodes' group commits, an
-- API write) never wait for each other's counter or deadlock on two
-- tenants'. The update of a row changes no indexed column, so it stays
-- on its page (HOT) and leaves nothing for an index scan to skip. A read
-- that finds many rows (connections come and go) folds them
-- (`Executions::count_open_executions`).

CREATE TABLE open_counts (
    tenant TEXT NOT NULL,
    shard  BIGINT NOT NULL,
    n      BIGINT NOT NULL,
    PRIMARY KEY (tenant, shard)
);

INSERT INTO open_counts (tenant, shard, n)
    SELECT tenant, 0, COUNT(*) FROM executions
    WHERE status IN ('pending', 'running', 'waiting') GROUP BY tenant;

CREATE FUNCTION open_counts_track() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    t TEXT;
    d BIGINT;
BEGIN
    IF TG_OP = 'DELETE' THEN
        t := OLD.tenant;
        d := -1;
    ELSE
        t := NEW.tenant;
        d := CASE WHEN NEW.status IN ('pending', 'running', 'waiting') THEN 1 ELSE -1 END;
    END IF;
    INSERT INTO open_counts (tenant, shard, n) VALUES (t, pg_backend_pid(), d)
    ON CONFLICT (tenant, shard) DO UPDATE SET n = open_counts.n + EXCLUDED.n;
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
