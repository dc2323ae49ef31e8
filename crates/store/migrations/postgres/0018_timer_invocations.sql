-- A timer carries the invocation of its `sleep` call, and is kept only
-- while its execution waits unpaused and without a cancel requested (a
-- pause or a cancel request deletes it; its code then ends the sleep).
-- So the sweep (`Store::fire_timers`) reads neither `executions` nor the
-- sleep's journal entry: 10,000 due among a million hibernated executions
-- cost a random read of each otherwise.
ALTER TABLE timers ADD COLUMN invocation TEXT;
UPDATE timers t SET invocation = j.invocation
FROM journal j WHERE j.execution_id = t.execution_id AND j.seq = t.seq;
DELETE FROM timers t WHERE t.invocation IS NULL OR NOT EXISTS (
    SELECT 1 FROM executions e WHERE e.id = t.execution_id
    AND e.status = 'waiting' AND NOT e.paused AND NOT e.cancel_requested);
ALTER TABLE timers ALTER COLUMN invocation SET NOT NULL;
