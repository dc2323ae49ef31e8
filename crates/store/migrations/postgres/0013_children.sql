-- Child workflows (issue 18): an execution started by another one's
-- `start-child` names its parent; cancelling the parent cancels it
-- unless it was started detached. Its end wakes the parent.
ALTER TABLE executions ADD COLUMN parent_id TEXT;
ALTER TABLE executions ADD COLUMN detached BOOLEAN NOT NULL DEFAULT FALSE;
CREATE INDEX executions_by_parent ON executions (parent_id) WHERE parent_id IS NOT NULL;
