-- Signals (issue 18): named JSON messages sent to an execution, stored
-- when received, in order (`seq` per execution), and delivered each to
-- one `await-signal` call of the execution: `consumed_by` is that call's
-- seq, written in the same commit as the call's result.
CREATE TABLE signals (
    execution_id TEXT NOT NULL,
    seq          INTEGER NOT NULL,
    name         TEXT NOT NULL,
    payload      TEXT NOT NULL,
    -- The sender's id: sending it again is the same signal.
    signal_id    TEXT,
    received_at  INTEGER NOT NULL,
    consumed_by  INTEGER,
    consumed_at  INTEGER,
    PRIMARY KEY (execution_id, seq)
);
CREATE UNIQUE INDEX signals_by_id ON signals (execution_id, signal_id)
    WHERE signal_id IS NOT NULL;
CREATE INDEX signals_buffered ON signals (execution_id, name, seq)
    WHERE consumed_by IS NULL;
