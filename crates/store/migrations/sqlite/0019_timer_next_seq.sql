-- A timer carries the seq its sleep's result takes: the journal's end when
-- its execution hibernated (an upgrade, the one write to a hibernated
-- execution's journal, moves it on). So the sweep (`Store::fire_timers`)
-- no longer looks up each due execution's last journal entry.
ALTER TABLE timers ADD COLUMN next_seq INTEGER NOT NULL DEFAULT 0;
UPDATE timers SET next_seq = COALESCE((SELECT MAX(j.seq) + 1 FROM journal j
    WHERE j.execution_id = timers.execution_id), 0);
DELETE FROM timers WHERE next_seq = 0;
