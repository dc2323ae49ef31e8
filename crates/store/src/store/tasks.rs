//! The task queue of external workers, written once for both backends
//! (see [`Tasks`]), and the statements the group commits run for
//! [`super::SideWrite::OpenTask`] and [`super::SideWrite::CloseTask`].
//!
//! Every change to a task runs in a write transaction that reads the task
//! row first (locked on PostgreSQL), so a claim, a heartbeat, a completion
//! and a timeout of one task are serialised: the first to commit decides,
//! and a claim that is no longer current is refused with nothing stored.
//!
//! On SQLite, claims and completions, the two writes a worker makes per
//! task, are committed in batches ([`Batches`]) on the commit connection,
//! as journal entries are: whatever workers ask while one transaction
//! commits goes into the next one, so a flush (0.1–4 ms) is paid per batch,
//! not per task, and the one writer never waits on another. On PostgreSQL
//! each runs in a transaction of its own: they run in parallel on the
//! pool, claims skipping each other's rows (a batch on one connection
//! would hold its row locks for all its round trips).
//!
//! Claims are committed without waiting for the flush (SQLite
//! `synchronous=NORMAL` for a batch of claims only, PostgreSQL
//! `synchronous_commit=off`): a claim survives a crash of the engine (the
//! kill -9 the tests do), and a power loss can only undo it — the task is
//! then claimed again and its first worker's result refused, an attempt
//! run twice as a worker killed mid-task would. Completions are always
//! flushed: a worker told its result was taken never sends it again.

use super::Tasks;
use super::rows::Columns;
use super::sql::{FetchWritten, Sql};
use super::sqlite_commit::CommitConnection;
use crate::error::{Error, Result};
use crate::journal::{outcome_payload, parse_outcome};
use crate::model::{
    CallError, ErrorKind, StepCallRecord, TaskBeat, TaskClaim, TaskId, TaskRecord, TaskStatus,
    TaskToken, WorkerRecord,
};
use crate::util::new_id;
use async_trait::async_trait;
use serde_json::Value;
use sqlx::{ColumnIndex, Database, Decode, Encode, Executor, IntoArguments, Type};
use std::sync::{Arc, OnceLock};
use tokio::sync::{mpsc, oneshot};

/// How many claims and completions one transaction takes at most.
const MAX_BATCH: usize = 256;

/// A claim or a completion waiting for the next batch.
pub(super) enum BatchOp {
    Claim {
        tenant: String,
        queue: String,
        worker: String,
        now_ms: i64,
        done: oneshot::Sender<Result<Option<TaskClaim>>>,
    },
    Complete {
        tenant: String,
        token: TaskToken,
        outcome: std::result::Result<Value, CallError>,
        now_ms: i64,
        done: oneshot::Sender<Result<()>>,
    },
}

/// What a batched operation answered.
pub(super) enum BatchResult {
    Claim(Result<Option<TaskClaim>>),
    Complete(Result<()>),
}

impl BatchResult {
    /// Whether the transaction may go on after it: a refusal (conflict,
    /// not found) is an answer; any other error aborts the batch.
    pub(super) fn keeps_batch(&self) -> bool {
        let error = match self {
            BatchResult::Claim(r) => r.as_ref().err(),
            BatchResult::Complete(r) => r.as_ref().err(),
        };
        matches!(error, None | Some(Error::Conflict(_) | Error::NotFound(_)))
    }

    /// The error of an answer that does not keep the batch.
    pub(super) fn into_error(self) -> Error {
        match self {
            BatchResult::Claim(Err(e)) | BatchResult::Complete(Err(e)) => e,
            _ => Error::Runtime("a task batch failed without an error".into()),
        }
    }
}

impl BatchOp {
    fn answer(self, result: BatchResult) {
        match (self, result) {
            (BatchOp::Claim { done, .. }, BatchResult::Claim(r)) => {
                let _ = done.send(r);
            }
            (BatchOp::Complete { done, .. }, BatchResult::Complete(r)) => {
                let _ = done.send(r);
            }
            (op, result) => op.fail(match result {
                BatchResult::Claim(Err(e)) | BatchResult::Complete(Err(e)) => e,
                _ => Error::Runtime("a task batch answered the wrong operation".into()),
            }),
        }
    }

    fn fail(self, error: Error) {
        match self {
            BatchOp::Claim { done, .. } => {
                let _ = done.send(Err(error));
            }
            BatchOp::Complete { done, .. } => {
                let _ = done.send(Err(error));
            }
        }
    }
}

/// The queue of claims and completions of one store, and the task that
/// commits them in batches (started on first use).
#[derive(Default)]
pub(super) struct Batches {
    queue: Arc<OnceLock<mpsc::UnboundedSender<BatchOp>>>,
    /// SQLite: batches run on the commit connection (rusqlite, one thread
    /// hop per batch), not statement by statement through sqlx's writer.
    commits: Option<Arc<CommitConnection>>,
}

impl Batches {
    /// Batches that run on SQLite's commit connection.
    pub(super) fn on(commits: Arc<CommitConnection>) -> Self {
        Self {
            queue: Arc::default(),
            commits: Some(commits),
        }
    }
}

/// Queues a task: `$1` execution, `$2` seq, `$3` attempt, `$4` queue,
/// `$5` step, `$6` input, `$7` now, `$8` schedule-to-start, `$9`
/// start-to-close, `$10` heartbeat, `$11`/`$12` sticky worker and until.
/// The tenant is the execution's. Numbered so SQLite binds them in order.
///
/// A worker has at most one queued task waiting for it: if it has one
/// already (it is busy, and executions keep finishing their steps on it),
/// the new task goes to any worker at once rather than wait for it.
pub(super) const OPEN_TASK: &str = "INSERT INTO tasks (execution_id, seq, attempt, tenant, queue, \
     step, input, status, created_at, schedule_to_start_ms, start_to_close_ms, heartbeat_ms, \
     sticky_worker, sticky_until, deadline_at) \
     SELECT $1, $2, $3, tenant, $4, $5, $6, 'queued', $7, $8, $9, $10, \
     CASE WHEN EXISTS (SELECT 1 FROM tasks q WHERE q.tenant = executions.tenant \
     AND q.queue = $4 AND q.status = 'queued' AND q.sticky_worker = $11) THEN NULL ELSE $11 END, \
     $12, $7 + $8 \
     FROM executions WHERE id = $1 \
     ON CONFLICT (execution_id, seq, attempt) DO NOTHING";

/// Cancels a task that has no outcome yet: `$1` now, `$2` execution,
/// `$3` seq, `$4` attempt. The claim stays, so its worker learns of the
/// cancellation at its next heartbeat.
pub(super) const CLOSE_TASK: &str = "UPDATE tasks SET status = 'cancelled', finished_at = $1 \
     WHERE execution_id = $2 AND seq = $3 AND attempt = $4 AND status IN ('queued', 'claimed')";

/// The next task `$4` (a worker) may claim on tenant `$1`'s queue `$2`
/// at `$3`: its own sticky tasks first, then the oldest.
pub(super) fn claim_select(skip_locked: &str) -> String {
    format!(
        "SELECT {TASK_COLUMNS} FROM tasks \
         WHERE tenant = $1 AND queue = $2 AND status = 'queued' \
         AND (deadline_at IS NULL OR deadline_at > $3) AND (ready_at IS NULL OR ready_at <= $3) \
         AND (sticky_worker IS NULL OR sticky_worker = $4 OR sticky_until <= $3) \
         ORDER BY CASE WHEN sticky_worker = $4 THEN 0 ELSE 1 END, created_at, \
         execution_id, seq LIMIT 1{skip_locked}"
    )
}

/// Claims a task: `$1` claim id, `$2` worker, `$3` now, `$4` deadline,
/// `$5`..`$7` the task.
pub(super) const CLAIM_TASK: &str = "UPDATE tasks SET status = 'claimed', claim_id = $1, \
     worker_id = $2, claimed_at = $3, heartbeat_at = $3, deadline_at = $4 \
     WHERE execution_id = $5 AND seq = $6 AND attempt = $7";

/// The task `$1`..`$3`, with `lock` appended (a row lock or nothing).
pub(super) fn task_select(lock: &str) -> String {
    format!(
        "SELECT {TASK_COLUMNS} FROM tasks \
         WHERE execution_id = $1 AND seq = $2 AND attempt = $3{lock}"
    )
}

/// Stores a task's outcome: `$1` status, `$2` outcome, `$3` now,
/// `$4`..`$6` the task.
pub(super) const FINISH_TASK: &str = "UPDATE tasks SET status = $1, outcome = $2, \
     finished_at = $3 WHERE execution_id = $4 AND seq = $5 AND attempt = $6";

/// Makes the tasks of execution `$2` handed back until later (a worker
/// step waiting for a decision) claimable at `$1`, as a decision does;
/// a task still claimed is marked (`ready_at` after its claim), so that
/// handing it back then makes it claimable at once: the decision may come
/// between a worker step's asking and its handing the task back. (A
/// worker step that only sleeps comes back early, replays its sleep and
/// hands the task back again.)
pub(super) const NUDGE: &str = "UPDATE tasks SET ready_at = CASE \
     WHEN status = 'claimed' THEN CASE WHEN claimed_at >= $1 THEN claimed_at + 1 ELSE $1 END \
     ELSE $1 END \
     WHERE execution_id = $2 AND (status = 'claimed' OR (status = 'queued' AND ready_at > $1))";

/// Wakes execution `$2` at `$1`, as an approval's decision does.
pub(super) const WAKE: &str = "UPDATE executions SET signals = signals + 1, \
     wake_at = CASE WHEN status = 'waiting' AND NOT paused THEN $1 ELSE wake_at END WHERE id = $2";

const TASK_COLUMNS: &str = "execution_id, seq, attempt, tenant, queue, step, input, status, \
     created_at, schedule_to_start_ms, start_to_close_ms, heartbeat_ms, claim_id, worker_id, \
     claimed_at, heartbeat_at, deadline_at, progress, outcome, ready_at";

/// A task row with what the checks need beyond its record.
pub(super) struct Row {
    pub(super) record: TaskRecord,
    claim: Option<String>,
    input: String,
    schedule_to_start_ms: Option<i64>,
    start_to_close_ms: i64,
    heartbeat_ms: Option<i64>,
    /// Handed back once (its step may have recorded calls).
    handed_back: bool,
}

pub(super) fn task_row(row: &impl Columns) -> Result<Row> {
    let status = row.string("status")?;
    let outcome = row
        .json("outcome")?
        .map(parse_outcome)
        .transpose()
        .map_err(|e| Error::Schema(format!("corrupt task outcome: {e}")))?;
    Ok(Row {
        record: TaskRecord {
            id: TaskId {
                execution_id: row.string("execution_id")?,
                seq: row.number("seq")?,
                attempt: u32::try_from(row.number("attempt")?)
                    .map_err(|_| Error::Schema("task attempt out of range".into()))?,
            },
            tenant: row.string("tenant")?,
            queue: row.string("queue")?,
            step: row.string("step")?,
            status: TaskStatus::parse(&status)
                .ok_or_else(|| Error::Schema(format!("unknown task status '{status}'")))?,
            created_at_ms: row.number("created_at")?,
            worker: row.text("worker_id")?,
            claimed_at_ms: row.int("claimed_at")?,
            heartbeat_at_ms: row.int("heartbeat_at")?,
            deadline_at_ms: row.int("deadline_at")?,
            progress: row.json("progress")?,
            outcome,
            ready_at_ms: row.int("ready_at")?,
        },
        claim: row.text("claim_id")?,
        input: row.string("input")?,
        schedule_to_start_ms: row.int("schedule_to_start_ms")?,
        start_to_close_ms: row.number("start_to_close_ms")?,
        heartbeat_ms: row.int("heartbeat_ms")?,
        handed_back: row.int("ready_at")?.is_some(),
    })
}

fn step_call_row(row: &impl Columns) -> Result<StepCallRecord> {
    Ok(StepCallRecord {
        position: row.number("position")?,
        kind: row.string("kind")?,
        args: row.string("args")?,
        answer: row.string("answer")?,
        at_ms: row.number("at")?,
    })
}

pub(super) fn task_not_found(tenant: Option<&str>, id: &TaskId) -> Error {
    let whose = tenant
        .map(|t| format!(" of tenant '{t}'"))
        .unwrap_or_default();
    Error::NotFound(format!(
        "no task{whose} for attempt {} of call {} of execution '{}'",
        id.attempt, id.seq, id.execution_id
    ))
}

/// Why the claim `token` is no longer current, as a worker should read it.
fn stale_claim(token: &TaskToken, task: &TaskRecord) -> Error {
    let why = match task.status {
        TaskStatus::TimedOut => "it timed out",
        TaskStatus::Completed => "the task was completed",
        TaskStatus::Cancelled => "the execution no longer waits for it (cancelled)",
        TaskStatus::Queued => "the task was handed back to its queue",
        TaskStatus::Claimed => "another worker has claimed the task since",
    };
    Error::Conflict(format!(
        "the claim {token} is no longer current: {why}; its result is not used"
    ))
}

/// Why a worker step's call `now` differs from the one its history
/// recorded at the same position: the sandbox's words for the same fault.
pub fn step_nondeterminism(step: &str, recorded: &StepCallRecord, now: &StepCallRecord) -> String {
    format!(
        "at call {} step '{step}' made a different call than its history recorded: recorded \
         `{}({})`, now `{}({})`; the code is not deterministic (or the journal was modified)",
        now.position, recorded.kind, recorded.args, now.kind, now.args
    )
}

/// The deadline of a claim made or heartbeaten at `now_ms`.
fn claim_deadline(row: &Row, now_ms: i64) -> i64 {
    let close = row.record.claimed_at_ms.unwrap_or(now_ms) + row.start_to_close_ms;
    match row.heartbeat_ms {
        Some(beat) => close.min(now_ms + beat),
        None => close,
    }
}

/// The error a timed-out task ends its attempt with.
pub(super) fn timeout_error(row: &Row, now_ms: i64) -> CallError {
    let task = &row.record;
    let message = match (task.status, task.worker.as_deref()) {
        (TaskStatus::Queued, _) => format!(
            "no worker on queue '{}' took step '{}' within its schedule-to-start timeout of {} ms",
            task.queue,
            task.step,
            row.schedule_to_start_ms.unwrap_or_default()
        ),
        (_, worker) => {
            let worker = worker.unwrap_or("?");
            let claimed = task.claimed_at_ms.unwrap_or(now_ms);
            if claimed + row.start_to_close_ms <= now_ms {
                format!(
                    "worker '{worker}' did not complete step '{}' within its start-to-close \
                     timeout of {} ms",
                    task.step, row.start_to_close_ms
                )
            } else {
                format!(
                    "worker '{worker}' sent no heartbeat for step '{}' within its heartbeat \
                     timeout of {} ms",
                    task.step,
                    row.heartbeat_ms.unwrap_or_default()
                )
            }
        }
    };
    CallError::new(ErrorKind::Deadline, message)
}

/// The claim of the queued task `row` made at `now_ms` (a fresh claim
/// id), and the task's id; the caller stores it with [`CLAIM_TASK`].
pub(super) fn claim_of(mut row: Row, now_ms: i64) -> (TaskClaim, TaskId) {
    row.record.claimed_at_ms = Some(now_ms);
    let deadline = claim_deadline(&row, now_ms);
    let id = row.record.id.clone();
    let resumed = row.handed_back || id.attempt > 1;
    let claim = TaskClaim {
        token: TaskToken {
            id: row.record.id,
            claim: new_id("cl"),
        },
        step: row.record.step,
        input: row.input,
        deadline_at_ms: deadline,
        heartbeat_ms: row.heartbeat_ms.map(|h| h as u64),
        resumed,
    };
    (claim, id)
}

/// Whether `token` is the current claim of the task `row`: `Ok(row)` if
/// so, `Err(row)` if its deadline has passed (the caller stores the
/// timeout and refuses), an error if the claim is not current at all.
pub(super) fn check_claim(
    row: Row,
    token: &TaskToken,
    now_ms: i64,
) -> Result<std::result::Result<Row, Row>> {
    if row.claim.as_deref() != Some(token.claim.as_str()) {
        return Err(stale_claim(token, &row.record));
    }
    match row.record.status {
        TaskStatus::Claimed if row.record.deadline_at_ms.is_some_and(|d| d <= now_ms) => {
            Ok(Err(row))
        }
        TaskStatus::Claimed | TaskStatus::Completed | TaskStatus::Cancelled => Ok(Ok(row)),
        TaskStatus::TimedOut | TaskStatus::Queued => Err(stale_claim(token, &row.record)),
    }
}

/// Whether the current claim's completion is to be stored: not if the
/// same claim completed already (a retried request); refused if the task
/// was cancelled.
pub(super) fn completes(row: &Row, token: &TaskToken) -> Result<bool> {
    match row.record.status {
        TaskStatus::Completed => Ok(false),
        TaskStatus::Cancelled => Err(stale_claim(token, &row.record)),
        _ => Ok(true),
    }
}

/// The refusal of a claim found expired (once its timeout is stored).
pub(super) fn expired_refusal(row: &Row) -> Error {
    let token = TaskToken {
        id: row.record.id.clone(),
        claim: row.claim.clone().unwrap_or_default(),
    };
    let expired = TaskRecord {
        status: TaskStatus::TimedOut,
        ..row.record.clone()
    };
    stale_claim(&token, &expired)
}

#[async_trait]
impl<DB> Tasks for Sql<DB>
where
    DB: Database,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'q> DB::Arguments<'q>: IntoArguments<'q, DB>,
    for<'q> &'q str: Encode<'q, DB> + Type<DB>,
    for<'q> Option<&'q str>: Encode<'q, DB>,
    for<'q> i64: Encode<'q, DB> + Type<DB>,
    for<'q> Option<i64>: Encode<'q, DB>,
    for<'q> String: Encode<'q, DB> + Type<DB>,
    for<'q> Option<String>: Encode<'q, DB>,
    for<'r> i64: Decode<'r, DB>,
    for<'r> String: Decode<'r, DB>,
    usize: ColumnIndex<DB::Row>,
    DB::Row: Columns,
{
    async fn claim_task(
        &self,
        tenant: &str,
        queue: &str,
        worker: &str,
        now_ms: i64,
    ) -> Result<Option<TaskClaim>> {
        // Most polls find nothing: look without the write lock first.
        let queued = sqlx::query_scalar::<DB, i64>(
            "SELECT COUNT(*) FROM (SELECT 1 FROM tasks \
             WHERE tenant = $1 AND queue = $2 AND status = 'queued' \
             AND (ready_at IS NULL OR ready_at <= $3) LIMIT 1) AS q",
        )
        .bind(tenant)
        .bind(queue)
        .bind(now_ms)
        .fetch_one(&self.reader)
        .await?;
        if queued == 0 {
            return Ok(None);
        }
        if let Some(batches) = self.batches() {
            let (done, answer) = oneshot::channel();
            let op = BatchOp::Claim {
                tenant: tenant.to_owned(),
                queue: queue.to_owned(),
                worker: worker.to_owned(),
                now_ms,
                done,
            };
            batches.send(op).map_err(|_| batches_stopped())?;
            return answer.await.map_err(|_| batches_stopped())?;
        }
        // A transaction of its own (PostgreSQL: claims run in parallel,
        // skipping each other's rows), not flushed (see the module's docs).
        let mut tx = self.begin_write().await?;
        if let Some(no_flush) = self.dialect.no_flush {
            sqlx::query::<DB>(no_flush).execute(&mut *tx).await?;
        }
        let result = self.claim_in(&mut tx, tenant, queue, worker, now_ms).await;
        end(tx, result).await
    }

    async fn heartbeat_task(
        &self,
        tenant: &str,
        token: &TaskToken,
        progress: Option<&Value>,
        now_ms: i64,
    ) -> Result<TaskBeat> {
        let mut tx = self.begin_write().await?;
        let result = self
            .heartbeat_in(&mut tx, tenant, token, progress, now_ms)
            .await;
        end(tx, result).await
    }

    async fn complete_task(
        &self,
        tenant: &str,
        token: &TaskToken,
        outcome: &std::result::Result<Value, CallError>,
        now_ms: i64,
    ) -> Result<()> {
        if let Some(batches) = self.batches() {
            let (done, answer) = oneshot::channel();
            let op = BatchOp::Complete {
                tenant: tenant.to_owned(),
                token: token.clone(),
                outcome: outcome.clone(),
                now_ms,
                done,
            };
            batches.send(op).map_err(|_| batches_stopped())?;
            return answer.await.map_err(|_| batches_stopped())?;
        }
        let mut tx = self.begin_write().await?;
        let result = self
            .complete_in(&mut tx, tenant, token, outcome, now_ms)
            .await;
        end(tx, result).await
    }

    async fn release_task(
        &self,
        tenant: &str,
        token: &TaskToken,
        resume_at_ms: Option<i64>,
        now_ms: i64,
    ) -> Result<()> {
        let mut tx = self.begin_write().await?;
        let result = self
            .release_in(&mut tx, tenant, token, resume_at_ms, now_ms)
            .await;
        end(tx, result).await
    }

    async fn resolve_step_signal(
        &self,
        id: &TaskId,
        position: i64,
        name: &str,
        due_at_ms: Option<i64>,
        now_ms: i64,
    ) -> Result<StepCallRecord> {
        let mut tx = self.begin_write().await?;
        let result = self
            .resolve_signal_in(&mut tx, id, position, name, due_at_ms, now_ms)
            .await;
        end(tx, result).await
    }

    async fn step_calls(&self, id: &TaskId) -> Result<Vec<StepCallRecord>> {
        let mut conn = self.reader.acquire().await?;
        self.history(&mut conn, id).await
    }

    async fn attempt_calls(&self, id: &TaskId, kind: &str) -> Result<Vec<StepCallRecord>> {
        let mut conn = self.reader.acquire().await?;
        let rows = sqlx::query::<DB>(
            "SELECT position, kind, args, answer, at FROM step_calls \
             WHERE execution_id = $1 AND seq = $2 AND attempt = $3 AND kind = $4 \
             ORDER BY position",
        )
        .bind(id.execution_id.as_str())
        .bind(id.seq)
        .bind(i64::from(id.attempt))
        .bind(kind)
        .fetch_all(&mut *conn)
        .await?;
        rows.iter().map(step_call_row).collect()
    }

    async fn record_step_calls(
        &self,
        tenant: &str,
        token: &TaskToken,
        calls: &[StepCallRecord],
        approval: Option<(&str, &Value)>,
        now_ms: i64,
    ) -> Result<StepCallRecord> {
        let mut tx = self.begin_write().await?;
        let result = self
            .record_in(&mut tx, tenant, token, calls, approval, now_ms)
            .await;
        end(tx, result).await
    }

    async fn task(&self, id: &TaskId) -> Result<TaskRecord> {
        let row = sqlx::query::<DB>(&format!(
            "SELECT {TASK_COLUMNS} FROM tasks WHERE execution_id = $1 AND seq = $2 AND attempt = $3"
        ))
        .bind(id.execution_id.as_str())
        .bind(id.seq)
        .bind(i64::from(id.attempt))
        .fetch_optional(&self.reader)
        .await?
        .ok_or_else(|| task_not_found(None, id))?;
        Ok(task_row(&row)?.record)
    }

    async fn open_tasks(&self, execution_id: &str) -> Result<Vec<TaskRecord>> {
        let rows = sqlx::query::<DB>(&format!(
            "SELECT {TASK_COLUMNS} FROM tasks WHERE execution_id = $1 \
             AND status IN ('queued', 'claimed') ORDER BY seq, attempt"
        ))
        .bind(execution_id)
        .fetch_all(&self.reader)
        .await?;
        rows.iter().map(|row| Ok(task_row(row)?.record)).collect()
    }

    async fn time_out_task(&self, id: &TaskId, now_ms: i64) -> Result<TaskRecord> {
        let mut tx = self.begin_write().await?;
        let result = self.time_out_in(&mut tx, id, now_ms).await;
        end(tx, result).await
    }

    async fn register_worker(&self, worker: &WorkerRecord) -> Result<()> {
        sqlx::query::<DB>(
            "INSERT INTO workers (tenant, worker_id, queue, host, max_tasks, registered_at, \
             last_seen_at) VALUES ($1, $2, $3, $4, $5, $6, $6) \
             ON CONFLICT (tenant, worker_id) DO UPDATE SET queue = $3, host = $4, \
             max_tasks = $5, registered_at = $6, last_seen_at = $6",
        )
        .bind(worker.tenant.as_str())
        .bind(worker.worker_id.as_str())
        .bind(worker.queue.as_str())
        .bind(worker.host.as_str())
        .bind(worker.max_tasks)
        .bind(worker.registered_at_ms)
        .execute(&self.writer)
        .await?;
        Ok(())
    }

    async fn worker_seen(&self, tenant: &str, worker_id: &str, now_ms: i64) -> Result<bool> {
        let updated = sqlx::query::<DB>(
            "UPDATE workers SET last_seen_at = $1 WHERE tenant = $2 AND worker_id = $3 \
             RETURNING worker_id",
        )
        .bind(now_ms)
        .bind(tenant)
        .bind(worker_id)
        .fetch_written(&self.writer)
        .await?;
        Ok(updated.is_some())
    }

    async fn remove_worker(&self, tenant: &str, worker_id: &str) -> Result<()> {
        sqlx::query::<DB>("DELETE FROM workers WHERE tenant = $1 AND worker_id = $2")
            .bind(tenant)
            .bind(worker_id)
            .execute(&self.writer)
            .await?;
        Ok(())
    }

    async fn list_workers(&self, tenant: &str, seen_since_ms: i64) -> Result<Vec<WorkerRecord>> {
        let found = sqlx::query::<DB>(
            "SELECT w.tenant, w.worker_id, w.queue, w.host, w.max_tasks, w.registered_at, \
             w.last_seen_at, (SELECT COUNT(*) FROM tasks t WHERE t.tenant = w.tenant \
             AND t.worker_id = w.worker_id AND t.status = 'claimed') AS in_flight \
             FROM workers w WHERE w.tenant = $1 AND w.last_seen_at >= $2 \
             ORDER BY w.queue, w.worker_id",
        )
        .bind(tenant)
        .bind(seen_since_ms)
        .fetch_all(&self.reader)
        .await?;
        found
            .iter()
            .map(|row| {
                Ok(WorkerRecord {
                    tenant: row.string("tenant")?,
                    worker_id: row.string("worker_id")?,
                    queue: row.string("queue")?,
                    host: row.string("host")?,
                    max_tasks: row.number("max_tasks")?,
                    registered_at_ms: row.number("registered_at")?,
                    last_seen_at_ms: row.number("last_seen_at")?,
                    tasks_in_flight: row.number("in_flight")?,
                })
            })
            .collect()
    }

    async fn queued_by_queue(&self, tenant: &str) -> Result<Vec<(String, i64)>> {
        Ok(sqlx::query_as::<DB, (String, i64)>(
            "SELECT queue, COUNT(*) FROM tasks WHERE tenant = $1 AND status = 'queued' \
             GROUP BY queue ORDER BY queue",
        )
        .bind(tenant)
        .fetch_all(&self.reader)
        .await?)
    }
}

/// Whether the batch's commit must be flushed before it is answered:
/// unless it holds claims only (see the module's docs).
pub(super) fn needs_flush(ops: &[BatchOp]) -> bool {
    ops.iter().any(|op| !matches!(op, BatchOp::Claim { .. }))
}

fn batches_stopped() -> Error {
    Error::Runtime("the task batch committer has stopped".into())
}

/// Commits the claims and completions queued on `rx` in batches, on
/// SQLite's commit connection: one transaction takes everything queued
/// while the previous one ran. If a batch fails (not a refusal: an error
/// of the database), its operations run again one per transaction, so one
/// failing operation fails alone.
async fn commit_batches(commits: Arc<CommitConnection>, mut rx: mpsc::UnboundedReceiver<BatchOp>) {
    let mut ops = Vec::new();
    while let Some(first) = rx.recv().await {
        ops.push(first);
        while ops.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(op) => ops.push(op),
                Err(_) => break,
            }
        }
        let batch;
        (batch, ops) = run_ops(&commits, std::mem::take(&mut ops)).await;
        match batch {
            Ok(results) => {
                for (op, result) in ops.drain(..).zip(results) {
                    op.answer(result);
                }
            }
            Err(e) if ops.len() == 1 => {
                if let Some(op) = ops.pop() {
                    op.fail(e);
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, ops = ops.len(), "a task batch failed; committing its operations one by one");
                for op in std::mem::take(&mut ops) {
                    let (result, mut op) = run_ops(&commits, vec![op]).await;
                    let Some(op) = op.pop() else { continue };
                    match result.map(|mut r| r.pop()) {
                        Ok(Some(result)) => op.answer(result),
                        Ok(None) => op.fail(batches_stopped()),
                        Err(e) => op.fail(e),
                    }
                }
            }
        }
    }
}

/// Runs `ops` in one transaction on the commit connection (on a blocking
/// thread); their answers, and `ops` back.
async fn run_ops(
    commits: &Arc<CommitConnection>,
    ops: Vec<BatchOp>,
) -> (Result<Vec<BatchResult>>, Vec<BatchOp>) {
    let commits = commits.clone();
    let ran = tokio::task::spawn_blocking(move || {
        let result = commits.tasks(&ops);
        (result, ops)
    })
    .await;
    match ran {
        Ok(ran) => ran,
        // The closure panicked: its operations are gone, and their callers
        // see their answers dropped.
        Err(e) => (Err(Error::Runtime(format!("task batch: {e}"))), Vec::new()),
    }
}

/// The bodies of the task transactions (see [`end`]).
impl<DB> Sql<DB>
where
    DB: Database,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'q> DB::Arguments<'q>: IntoArguments<'q, DB>,
    for<'q> &'q str: Encode<'q, DB> + Type<DB>,
    for<'q> Option<&'q str>: Encode<'q, DB>,
    for<'q> i64: Encode<'q, DB> + Type<DB>,
    for<'q> Option<i64>: Encode<'q, DB>,
    for<'q> String: Encode<'q, DB> + Type<DB>,
    for<'q> Option<String>: Encode<'q, DB>,
    for<'r> i64: Decode<'r, DB>,
    for<'r> String: Decode<'r, DB>,
    usize: ColumnIndex<DB::Row>,
    DB::Row: Columns,
{
    /// The queue of the next batch, if this store batches (SQLite; the
    /// batch task starts on first use).
    fn batches(&self) -> Option<&mpsc::UnboundedSender<BatchOp>> {
        let commits = self.task_batches.commits.as_ref()?;
        Some(self.task_batches.queue.get_or_init(|| {
            let (tx, rx) = mpsc::unbounded_channel();
            tokio::spawn(commit_batches(commits.clone(), rx));
            tx
        }))
    }

    async fn claim_in(
        &self,
        tx: &mut DB::Connection,
        tenant: &str,
        queue: &str,
        worker: &str,
        now_ms: i64,
    ) -> Result<Option<TaskClaim>> {
        let found = sqlx::query::<DB>(&claim_select(self.dialect.skip_locked))
            .bind(tenant)
            .bind(queue)
            .bind(now_ms)
            .bind(worker)
            .fetch_optional(&mut *tx)
            .await?;
        let Some(found) = found else {
            return Ok(None);
        };
        let (claim, id) = claim_of(task_row(&found)?, now_ms);
        sqlx::query::<DB>(CLAIM_TASK)
            .bind(claim.token.claim.as_str())
            .bind(worker)
            .bind(now_ms)
            .bind(claim.deadline_at_ms)
            .bind(id.execution_id.as_str())
            .bind(id.seq)
            .bind(i64::from(id.attempt))
            .execute(&mut *tx)
            .await?;
        Ok(Some(claim))
    }

    async fn heartbeat_in(
        &self,
        tx: &mut DB::Connection,
        tenant: &str,
        token: &TaskToken,
        progress: Option<&Value>,
        now_ms: i64,
    ) -> Result<TaskBeat> {
        let row = match self.current_claim(&mut *tx, tenant, token, now_ms).await? {
            Ok(row) => row,
            Err(expired) => return self.refuse_expired(tx, &expired, now_ms).await,
        };
        let cancel_requested = sqlx::query_scalar::<DB, i64>(
            "SELECT CAST(CASE WHEN cancel_requested THEN 1 ELSE 0 END AS BIGINT) FROM executions \
             WHERE id = $1",
        )
        .bind(token.id.execution_id.as_str())
        .fetch_optional(&mut *tx)
        .await?
        .is_some_and(|c| c != 0);
        if row.record.status == TaskStatus::Completed {
            return Err(stale_claim(token, &row.record));
        }
        if row.record.status == TaskStatus::Cancelled {
            return Ok(TaskBeat {
                deadline_at_ms: row.record.deadline_at_ms.unwrap_or(now_ms),
                cancel_requested: true,
            });
        }
        let deadline = claim_deadline(&row, now_ms);
        sqlx::query::<DB>(
            "UPDATE tasks SET heartbeat_at = $1, deadline_at = $2, \
             progress = COALESCE($3, progress) \
             WHERE execution_id = $4 AND seq = $5 AND attempt = $6",
        )
        .bind(now_ms)
        .bind(deadline)
        .bind(progress.map(Value::to_string))
        .bind(token.id.execution_id.as_str())
        .bind(token.id.seq)
        .bind(i64::from(token.id.attempt))
        .execute(&mut *tx)
        .await?;
        Ok(TaskBeat {
            deadline_at_ms: deadline,
            cancel_requested,
        })
    }

    async fn complete_in(
        &self,
        tx: &mut DB::Connection,
        tenant: &str,
        token: &TaskToken,
        outcome: &std::result::Result<Value, CallError>,
        now_ms: i64,
    ) -> Result<()> {
        let row = match self.current_claim(&mut *tx, tenant, token, now_ms).await? {
            Ok(row) => row,
            Err(expired) => return self.refuse_expired(tx, &expired, now_ms).await,
        };
        if !completes(&row, token)? {
            return Ok(());
        }
        sqlx::query::<DB>(FINISH_TASK)
            .bind("completed")
            .bind(outcome_payload(outcome).to_string())
            .bind(now_ms)
            .bind(token.id.execution_id.as_str())
            .bind(token.id.seq)
            .bind(i64::from(token.id.attempt))
            .execute(&mut *tx)
            .await?;
        wake::<DB>(&mut *tx, &token.id.execution_id, now_ms).await?;
        Ok(())
    }

    async fn release_in(
        &self,
        tx: &mut DB::Connection,
        tenant: &str,
        token: &TaskToken,
        resume_at_ms: Option<i64>,
        now_ms: i64,
    ) -> Result<()> {
        let row = match self.current_claim(&mut *tx, tenant, token, now_ms).await? {
            Ok(row) => row,
            Err(expired) => return self.refuse_expired(tx, &expired, now_ms).await,
        };
        if row.record.status != TaskStatus::Claimed {
            return Err(stale_claim(token, &row.record));
        }
        sqlx::query::<DB>(
            "UPDATE tasks SET status = 'queued', claim_id = NULL, worker_id = NULL, \
             claimed_at = NULL, heartbeat_at = NULL, sticky_worker = NULL, \
             deadline_at = COALESCE($2, $1) + schedule_to_start_ms, \
             ready_at = CASE WHEN ready_at > claimed_at THEN $1 ELSE COALESCE($2, $1) END \
             WHERE execution_id = $3 AND seq = $4 AND attempt = $5",
        )
        .bind(now_ms)
        .bind(resume_at_ms)
        .bind(token.id.execution_id.as_str())
        .bind(token.id.seq)
        .bind(i64::from(token.id.attempt))
        .execute(&mut *tx)
        .await?;
        Ok(())
    }

    async fn time_out_in(
        &self,
        tx: &mut DB::Connection,
        id: &TaskId,
        now_ms: i64,
    ) -> Result<TaskRecord> {
        let mut row = self.locked(&mut *tx, None, id).await?;
        if row.record.deadline_at_ms.is_some_and(|d| d <= now_ms) && !row.record.status.is_final() {
            let error = timeout_error(&row, now_ms);
            self.store_timeout(&mut *tx, id, &error, now_ms).await?;
            row.record.status = TaskStatus::TimedOut;
            row.record.outcome = Some(Err(error));
        }
        Ok(row.record)
    }
}

/// Ends a task transaction whatever its outcome, so no row lock outlives
/// the call (a dropped sqlx transaction rolls back only when its
/// connection is next used): commits on success and on a refusal (which
/// may have stored a timeout), rolls back on any other error.
async fn end<DB: Database, T>(tx: sqlx::Transaction<'_, DB>, result: Result<T>) -> Result<T> {
    match result {
        Ok(_) | Err(Error::Conflict(_) | Error::NotFound(_)) => tx.commit().await?,
        Err(_) => tx.rollback().await?,
    }
    result
}

/// Wakes the execution a task belongs to, as an approval's decision does.
async fn wake<DB>(conn: &mut DB::Connection, execution_id: &str, now_ms: i64) -> Result<()>
where
    DB: Database,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'q> DB::Arguments<'q>: IntoArguments<'q, DB>,
    for<'q> &'q str: Encode<'q, DB> + Type<DB>,
    for<'q> i64: Encode<'q, DB> + Type<DB>,
{
    sqlx::query::<DB>(WAKE)
        .bind(now_ms)
        .bind(execution_id)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

impl<DB> Sql<DB>
where
    DB: Database,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'q> DB::Arguments<'q>: IntoArguments<'q, DB>,
    for<'q> &'q str: Encode<'q, DB> + Type<DB>,
    for<'q> i64: Encode<'q, DB> + Type<DB>,
    for<'q> String: Encode<'q, DB> + Type<DB>,
    DB::Row: Columns,
{
    /// The task `id` (of `tenant`, if given), locked for this transaction.
    async fn locked(
        &self,
        conn: &mut DB::Connection,
        tenant: Option<&str>,
        id: &TaskId,
    ) -> Result<Row> {
        // Execution row first, then the task: the order a commit locks them.
        sqlx::query::<DB>(&format!(
            "SELECT id FROM executions WHERE id = $1{}",
            self.dialect.lock_row
        ))
        .bind(id.execution_id.as_str())
        .fetch_optional(&mut *conn)
        .await?;
        let row = sqlx::query::<DB>(&task_select(self.dialect.lock_row))
            .bind(id.execution_id.as_str())
            .bind(id.seq)
            .bind(i64::from(id.attempt))
            .fetch_optional(&mut *conn)
            .await?
            .map(|r| task_row(&r))
            .transpose()?
            .filter(|r| tenant.is_none_or(|t| r.record.tenant == t));
        row.ok_or_else(|| task_not_found(tenant, id))
    }

    /// The task of the claim `token`, locked, if that claim is current:
    /// `Err(row)` if its deadline has passed (the caller stores the
    /// timeout); an error if the claim is not current at all.
    /// The history task `id` inherits (see [`Tasks::step_calls`]).
    async fn history(&self, conn: &mut DB::Connection, id: &TaskId) -> Result<Vec<StepCallRecord>> {
        let rows = sqlx::query::<DB>(
            "SELECT position, kind, args, answer, at FROM step_calls \
             WHERE execution_id = $1 AND seq = $2 AND attempt <= $3 \
             AND attempt > COALESCE((SELECT MAX(attempt) FROM tasks \
             WHERE execution_id = $1 AND seq = $2 AND attempt < $3 \
             AND status = 'completed'), 0) \
             ORDER BY position",
        )
        .bind(id.execution_id.as_str())
        .bind(id.seq)
        .bind(i64::from(id.attempt))
        .fetch_all(&mut *conn)
        .await?;
        rows.iter().map(step_call_row).collect()
    }

    async fn resolve_signal_in(
        &self,
        tx: &mut DB::Connection,
        id: &TaskId,
        position: i64,
        name: &str,
        due_at_ms: Option<i64>,
        now_ms: i64,
    ) -> Result<StepCallRecord> {
        let history = self.history(&mut *tx, id).await?;
        let Some(call) = usize::try_from(position)
            .ok()
            .and_then(|p| history.get(p))
            .filter(|c| c.kind == "signal")
        else {
            return Err(Error::NotFound(format!(
                "call {position} of step call {} of execution '{}' is not a signal",
                id.seq, id.execution_id
            )));
        };
        if !call.pending() {
            return Ok(call.clone());
        }
        let next = sqlx::query::<DB>(
            "SELECT seq, payload FROM signals WHERE execution_id = $1 AND name = $2 \
             AND consumed_by IS NULL ORDER BY seq LIMIT 1",
        )
        .bind(id.execution_id.as_str())
        .bind(name)
        .fetch_optional(&mut *tx)
        .await?;
        let answer = match next {
            Some(row) => {
                let seq: i64 = row.number("seq")?;
                let payload = row.json("payload")?.unwrap_or(Value::Null);
                // Taken by the step call, as an await-signal call takes one.
                sqlx::query::<DB>(super::sql::CONSUME_SIGNAL)
                    .bind(id.seq)
                    .bind(now_ms)
                    .bind(id.execution_id.as_str())
                    .bind(seq)
                    .execute(&mut *tx)
                    .await?;
                serde_json::json!({ "signal": payload })
            }
            None if due_at_ms.is_some_and(|d| d <= now_ms) => {
                serde_json::json!({ "timed_out": true })
            }
            None => return Ok(call.clone()),
        };
        let answer = answer.to_string();
        sqlx::query::<DB>(
            "UPDATE step_calls SET answer = $1 WHERE execution_id = $2 AND seq = $3 \
             AND position = $4 AND kind = 'signal'",
        )
        .bind(answer.as_str())
        .bind(id.execution_id.as_str())
        .bind(id.seq)
        .bind(position)
        .execute(&mut *tx)
        .await?;
        Ok(StepCallRecord {
            answer,
            ..call.clone()
        })
    }

    async fn record_in(
        &self,
        tx: &mut DB::Connection,
        tenant: &str,
        token: &TaskToken,
        calls: &[StepCallRecord],
        approval: Option<(&str, &Value)>,
        now_ms: i64,
    ) -> Result<StepCallRecord> {
        let row = match self.current_claim(&mut *tx, tenant, token, now_ms).await? {
            Ok(row) => row,
            Err(expired) => return self.refuse_expired(tx, &expired, now_ms).await,
        };
        if row.record.status != TaskStatus::Claimed {
            return Err(stale_claim(token, &row.record));
        }
        let mut history = self.history(&mut *tx, &token.id).await?;
        let mut last = None;
        for (i, call) in calls.iter().enumerate() {
            if let Some(recorded) = usize::try_from(call.position)
                .ok()
                .and_then(|p| history.get(p))
            {
                if recorded.kind != call.kind || recorded.args != call.args {
                    return Err(Error::Conflict(step_nondeterminism(
                        &row.record.step,
                        recorded,
                        call,
                    )));
                }
                last = Some(recorded.clone());
                continue;
            }
            let next = history.len() as i64;
            if call.position != next {
                return Err(Error::InvalidInput(format!(
                    "step '{}' recorded call {} while its history has {next} calls: calls are \
                     recorded in order, the next one at position {next}",
                    row.record.step, call.position
                )));
            }
            sqlx::query::<DB>(
                "INSERT INTO step_calls (execution_id, seq, attempt, position, kind, args, \
                 answer, at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
            )
            .bind(token.id.execution_id.as_str())
            .bind(token.id.seq)
            .bind(i64::from(token.id.attempt))
            .bind(call.position)
            .bind(call.kind.as_str())
            .bind(call.args.as_str())
            .bind(call.answer.as_str())
            .bind(now_ms)
            .execute(&mut *tx)
            .await?;
            if let Some((key, request)) = approval.filter(|_| i + 1 == calls.len()) {
                // A key the execution waited on before keeps its decision.
                sqlx::query::<DB>(
                    "INSERT INTO approvals (execution_id, key, status, request, created_at) \
                     VALUES ($1, $2, 'pending', $3, $4) ON CONFLICT (execution_id, key) DO NOTHING",
                )
                .bind(token.id.execution_id.as_str())
                .bind(key)
                .bind(request.to_string())
                .bind(now_ms)
                .execute(&mut *tx)
                .await?;
            }
            let recorded = StepCallRecord {
                at_ms: now_ms,
                ..call.clone()
            };
            history.push(recorded.clone());
            last = Some(recorded);
        }
        last.ok_or_else(|| Error::InvalidInput("no call to record".into()))
    }

    async fn current_claim(
        &self,
        conn: &mut DB::Connection,
        tenant: &str,
        token: &TaskToken,
        now_ms: i64,
    ) -> Result<std::result::Result<Row, Row>> {
        let row = self.locked(conn, Some(tenant), &token.id).await?;
        check_claim(row, token, now_ms)
    }

    /// Stores the timeout of a claim found expired and refuses the claim
    /// (the transaction commits the timeout: see [`end`]).
    async fn refuse_expired<T>(
        &self,
        conn: &mut DB::Connection,
        row: &Row,
        now_ms: i64,
    ) -> Result<T> {
        let id = &row.record.id;
        self.store_timeout(conn, id, &timeout_error(row, now_ms), now_ms)
            .await?;
        Err(expired_refusal(row))
    }

    async fn store_timeout(
        &self,
        conn: &mut DB::Connection,
        id: &TaskId,
        error: &CallError,
        now_ms: i64,
    ) -> Result<()> {
        sqlx::query::<DB>(FINISH_TASK)
            .bind("timed-out")
            .bind(outcome_payload(&Err(error.clone())).to_string())
            .bind(now_ms)
            .bind(id.execution_id.as_str())
            .bind(id.seq)
            .bind(i64::from(id.attempt))
            .execute(&mut *conn)
            .await?;
        wake::<DB>(conn, &id.execution_id, now_ms).await
    }
}
