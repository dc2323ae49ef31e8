-- Upgrades asked for executions that were running (issue 36): `cerebelum
-- upgrade ID --to V` of an execution that does not wait yet is kept here,
-- and applied when it next hibernates (if its journal then replays cleanly
-- against V), or dropped with why. One per execution: asking again
-- replaces it. The row goes in the transaction that upgrades it.
CREATE TABLE pending_upgrades (
    execution_id TEXT PRIMARY KEY,
    to_version   BIGINT NOT NULL,
    -- Who asked (the audit record's actor and origin).
    actor        TEXT NOT NULL,
    origin       TEXT NOT NULL,
    requested_at BIGINT NOT NULL
);
