-- A timer carries the seq its sleep's result takes: the journal's end when
-- its execution hibernated (an upgrade, the one write to a hibernated
-- execution's journal, moves it on). So the sweep (`Store::fire_timers`)
-- no longer looks up each due execution's last journal entry: with 10,000
-- due among a million hibernated executions, that lookup was a random
-- read of the journal's key index (and often its heap) per timer.
ALTER TABLE timers ADD COLUMN next_seq BIGINT;
UPDATE timers t SET next_seq = (SELECT MAX(j.seq) + 1 FROM journal j
    WHERE j.execution_id = t.execution_id);
DELETE FROM timers WHERE next_seq IS NULL;
ALTER TABLE timers ALTER COLUMN next_seq SET NOT NULL;
