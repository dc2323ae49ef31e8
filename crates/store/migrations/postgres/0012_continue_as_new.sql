-- Continue-as-new (issue 18): an execution that restarted itself with a
-- new input and an empty journal names the one it continues.
ALTER TABLE executions ADD COLUMN continued_from TEXT;
