-- The sleep a hibernated execution waits for (issue 31, item 7): the seq
-- of its `sleep` call and when it is due. When it comes, the node's
-- scheduler journals the sleep's result for every due execution at once
-- (`Store::fire_timers`), without instantiating any; their code resumes
-- from that result as the node has room. Written by the commit that
-- hibernates the execution, cleared when the timer fires.
ALTER TABLE executions ADD COLUMN timer_seq BIGINT;
ALTER TABLE executions ADD COLUMN timer_due BIGINT;
-- Only hibernated executions with a sleep pending are in it (a claim
-- clears the timer too).
CREATE INDEX executions_timers ON executions (timer_due) WHERE timer_seq IS NOT NULL;
