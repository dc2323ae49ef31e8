-- Schedules (issue 18): a tenant's workflow started at the due times of a
-- cron expression in a time zone. Each due time starts at most one
-- execution: its idempotency key is `schedule:<name>:<due ms>`, so a node
-- that fires, crashes and fires again, or two nodes firing at once, get the
-- same execution. `next_due` moves on by compare-and-set.
CREATE TABLE schedules (
    tenant          TEXT NOT NULL,
    name            TEXT NOT NULL,
    cron            TEXT NOT NULL,
    timezone        TEXT NOT NULL,
    package         TEXT NOT NULL,
    -- NULL: the package's latest version at each firing.
    version         BIGINT,
    workflow        TEXT NOT NULL,
    -- JSON text.
    input           TEXT NOT NULL,
    -- 'skip', 'buffer-one' or 'allow': what a due time does while the
    -- execution of the one before is still open.
    overlap         TEXT NOT NULL,
    -- Due times missed while no node ran: the latest this many are fired.
    catch_up        BIGINT NOT NULL,
    paused          BOOLEAN NOT NULL DEFAULT FALSE,
    -- The next due time, ms since the epoch.
    next_due        BIGINT NOT NULL,
    last_due        BIGINT,
    last_execution  TEXT,
    -- Why the last firing started nothing (a deleted package, a quota).
    last_error      TEXT,
    fired           BIGINT NOT NULL DEFAULT 0,
    skipped         BIGINT NOT NULL DEFAULT 0,
    created_at      BIGINT NOT NULL,
    PRIMARY KEY (tenant, name)
);

CREATE INDEX schedules_due ON schedules (next_due) WHERE NOT paused;
