-- External workers (issue 15): a step attempt served by a worker process
-- outside the sandbox is a task. The engine creates it in the same commit
-- as the attempt's journal entry; a worker of the same tenant claims it
-- from its queue, heartbeats it and completes it; the execution's owner
-- journals the outcome (exactly once) and closes the task.
--
-- A claim is fenced: claim_id is new at every claim, and a heartbeat or a
-- completion must name it. A claim that timed out, or a task handed back,
-- refuses the old claim's completion and stores none of it.
CREATE TABLE tasks (
    execution_id  TEXT NOT NULL,
    -- The step call's journal seq and the attempt number.
    seq           BIGINT NOT NULL,
    attempt       BIGINT NOT NULL,
    tenant        TEXT NOT NULL,
    queue         TEXT NOT NULL,
    step          TEXT NOT NULL,
    input         TEXT NOT NULL,
    -- queued | claimed | completed | timed-out | cancelled
    status        TEXT NOT NULL,
    created_at    BIGINT NOT NULL,
    schedule_to_start_ms BIGINT,
    start_to_close_ms    BIGINT NOT NULL,
    heartbeat_ms         BIGINT,
    -- Tasks of one execution prefer the worker that served its previous
    -- task until sticky_until; then any worker of the queue takes them.
    sticky_worker TEXT,
    sticky_until  BIGINT,
    claim_id      TEXT,
    worker_id     TEXT,
    claimed_at    BIGINT,
    heartbeat_at  BIGINT,
    -- When the task times out if nothing happens: queued, created_at +
    -- schedule_to_start_ms; claimed, the earlier of the start-to-close
    -- and the next heartbeat's deadline.
    deadline_at   BIGINT,
    progress      TEXT,
    -- JSON, as a journal result: {"ok": value} or {"err": {"kind", "message"}}.
    outcome       TEXT,
    finished_at   BIGINT,
    PRIMARY KEY (execution_id, seq, attempt)
);

CREATE INDEX tasks_queued ON tasks (tenant, queue, status, created_at);

-- Workers as they last said: registered, heartbeating, gone.
CREATE TABLE workers (
    tenant          TEXT NOT NULL,
    worker_id       TEXT NOT NULL,
    queue           TEXT NOT NULL,
    host            TEXT NOT NULL,
    max_tasks       BIGINT NOT NULL,
    registered_at   BIGINT NOT NULL,
    last_seen_at    BIGINT NOT NULL,
    PRIMARY KEY (tenant, worker_id)
);

-- An execution started with a worker queue (`start --worker-queue`, what
-- `execute(distributed=True)` uses) runs every step on that queue.
ALTER TABLE executions ADD COLUMN worker_queue TEXT;
