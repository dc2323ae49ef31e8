-- The sleep a hibernated execution waits for (issue 31, item 7): the seq
-- of its `sleep` call and when it is due, one row per execution. When it
-- comes, the node's scheduler journals the sleep's result for every due
-- execution at once (`Store::fire_timers`), without instantiating any,
-- and deletes their rows; their code resumes from that result as the
-- node has room. Written by the commit that hibernates the execution;
-- a claim deletes it too (the code then ends the sleep itself). A table
-- of its own: firing touches no row (and no index) of `executions`.
CREATE TABLE timers (
    execution_id TEXT PRIMARY KEY,
    seq          INTEGER NOT NULL,
    due_at       INTEGER NOT NULL
);
CREATE INDEX timers_due ON timers (due_at);
