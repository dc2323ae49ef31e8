-- A timer carries the invocation of its `sleep` call, and is kept only
-- while its execution waits unpaused and without a cancel requested (a
-- pause or a cancel request deletes it; its code then ends the sleep).
-- So the sweep (`Store::fire_timers`) reads neither `executions` nor the
-- sleep's journal entry.
ALTER TABLE timers ADD COLUMN invocation TEXT NOT NULL DEFAULT '';
UPDATE timers SET invocation = COALESCE((SELECT j.invocation FROM journal j
    WHERE j.execution_id = timers.execution_id AND j.seq = timers.seq), '');
DELETE FROM timers WHERE invocation = '' OR NOT EXISTS (
    SELECT 1 FROM executions e WHERE e.id = timers.execution_id
    AND e.status = 'waiting' AND NOT e.paused AND NOT e.cancel_requested);
