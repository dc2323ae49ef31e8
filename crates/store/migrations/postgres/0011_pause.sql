-- Pause / resume of an execution by an operator (issue 18): a paused
-- execution runs no new invocation (its hibernation keeps no due time,
-- and a node running it stops at its next step attempt) until resumed.
ALTER TABLE executions ADD COLUMN paused BOOLEAN NOT NULL DEFAULT FALSE;
