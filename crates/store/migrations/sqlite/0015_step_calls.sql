-- Durable calls inside a step on an external worker (issue 33). A worker
-- step's sleep, a retry-wrapped call, a poll's check: each is recorded
-- here under the task's claim, in order, as the step's own journal. When
-- the step runs again (its worker died, or it handed the task back for a
-- long wait), the worker gets this history with the task and replays it:
-- every call made before returns its recorded answer without running.
--
-- A history belongs to the step call (execution_id, seq); an attempt
-- inherits the calls of the attempts before it, back to the last one the
-- step itself failed (a new attempt after a failure starts afresh).
CREATE TABLE step_calls (
    execution_id TEXT NOT NULL,
    seq          INTEGER NOT NULL,
    attempt      INTEGER NOT NULL,
    -- 0, 1, 2, ... across the inherited history.
    position     INTEGER NOT NULL,
    kind         TEXT NOT NULL,
    args         TEXT NOT NULL,
    answer       TEXT NOT NULL,
    at           INTEGER NOT NULL,
    PRIMARY KEY (execution_id, seq, attempt, position)
);

-- A task handed back until a time (a worker step's long sleep) is not
-- claimed before it.
ALTER TABLE tasks ADD COLUMN ready_at INTEGER;
