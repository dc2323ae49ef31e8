//! The task queue of external workers, written once for both backends
//! (see [`Tasks`]), and the statements the group commits run for
//! [`super::SideWrite::OpenTask`] and [`super::SideWrite::CloseTask`].
//!
//! Every change to a task runs in a write transaction that reads the task
//! row first (locked on PostgreSQL), so a claim, a heartbeat, a completion
//! and a timeout of one task are serialised: the first to commit decides,
//! and a claim that is no longer current is refused with nothing stored.

use super::Tasks;
use super::rows::Columns;
use super::sql::Sql;
use crate::error::{Error, Result};
use crate::journal::{outcome_payload, parse_outcome};
use crate::model::{
    CallError, ErrorKind, TaskBeat, TaskClaim, TaskId, TaskRecord, TaskStatus, TaskToken,
    WorkerRecord,
};
use crate::util::new_id;
use async_trait::async_trait;
use serde_json::Value;
use sqlx::{ColumnIndex, Database, Decode, Encode, Executor, IntoArguments, Type};

/// Queues a task: `$1` execution, `$2` seq, `$3` attempt, `$4` queue,
/// `$5` step, `$6` input, `$7` now, `$8` schedule-to-start, `$9`
/// start-to-close, `$10` heartbeat, `$11`/`$12` sticky worker and until.
/// The tenant is the execution's. Numbered so SQLite binds them in order.
pub(super) const OPEN_TASK: &str = "INSERT INTO tasks (execution_id, seq, attempt, tenant, queue, \
     step, input, status, created_at, schedule_to_start_ms, start_to_close_ms, heartbeat_ms, \
     sticky_worker, sticky_until, deadline_at) \
     SELECT $1, $2, $3, tenant, $4, $5, $6, 'queued', $7, $8, $9, $10, $11, $12, $7 + $8 \
     FROM executions WHERE id = $1 \
     ON CONFLICT (execution_id, seq, attempt) DO NOTHING";

/// Cancels a task that has no outcome yet: `$1` now, `$2` execution,
/// `$3` seq, `$4` attempt. The claim stays, so its worker learns of the
/// cancellation at its next heartbeat.
pub(super) const CLOSE_TASK: &str = "UPDATE tasks SET status = 'cancelled', finished_at = $1 \
     WHERE execution_id = $2 AND seq = $3 AND attempt = $4 AND status IN ('queued', 'claimed')";

const TASK_COLUMNS: &str = "execution_id, seq, attempt, tenant, queue, step, input, status, \
     created_at, schedule_to_start_ms, start_to_close_ms, heartbeat_ms, claim_id, worker_id, \
     claimed_at, heartbeat_at, deadline_at, progress, outcome";

/// A task row with what the checks need beyond its record.
struct Row {
    record: TaskRecord,
    claim: Option<String>,
    input: String,
    schedule_to_start_ms: Option<i64>,
    start_to_close_ms: i64,
    heartbeat_ms: Option<i64>,
}

fn task_row(row: &impl Columns) -> Result<Row> {
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
        },
        claim: row.text("claim_id")?,
        input: row.string("input")?,
        schedule_to_start_ms: row.int("schedule_to_start_ms")?,
        start_to_close_ms: row.number("start_to_close_ms")?,
        heartbeat_ms: row.int("heartbeat_ms")?,
    })
}

fn task_not_found(tenant: Option<&str>, id: &TaskId) -> Error {
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

/// The deadline of a claim made or heartbeaten at `now_ms`.
fn claim_deadline(row: &Row, now_ms: i64) -> i64 {
    let close = row.record.claimed_at_ms.unwrap_or(now_ms) + row.start_to_close_ms;
    match row.heartbeat_ms {
        Some(beat) => close.min(now_ms + beat),
        None => close,
    }
}

/// The error a timed-out task ends its attempt with.
fn timeout_error(row: &Row, now_ms: i64) -> CallError {
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
             WHERE tenant = $1 AND queue = $2 AND status = 'queued' LIMIT 1) AS q",
        )
        .bind(tenant)
        .bind(queue)
        .fetch_one(&self.reader)
        .await?;
        if queued == 0 {
            return Ok(None);
        }
        let mut tx = self.writer.begin_with(self.dialect.begin).await?;
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
        let mut tx = self.writer.begin_with(self.dialect.begin).await?;
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
        let mut tx = self.writer.begin_with(self.dialect.begin).await?;
        let result = self
            .complete_in(&mut tx, tenant, token, outcome, now_ms)
            .await;
        end(tx, result).await
    }

    async fn release_task(&self, tenant: &str, token: &TaskToken, now_ms: i64) -> Result<()> {
        let mut tx = self.writer.begin_with(self.dialect.begin).await?;
        let result = self.release_in(&mut tx, tenant, token, now_ms).await;
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

    async fn time_out_task(&self, id: &TaskId, now_ms: i64) -> Result<TaskRecord> {
        let mut tx = self.writer.begin_with(self.dialect.begin).await?;
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
        .fetch_optional(&self.writer)
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
    async fn claim_in(
        &self,
        tx: &mut DB::Connection,
        tenant: &str,
        queue: &str,
        worker: &str,
        now_ms: i64,
    ) -> Result<Option<TaskClaim>> {
        let found = sqlx::query::<DB>(&format!(
            "SELECT {TASK_COLUMNS} FROM tasks \
             WHERE tenant = $1 AND queue = $2 AND status = 'queued' \
             AND (deadline_at IS NULL OR deadline_at > $3) \
             AND (sticky_worker IS NULL OR sticky_worker = $4 OR sticky_until <= $3) \
             ORDER BY CASE WHEN sticky_worker = $4 THEN 0 ELSE 1 END, created_at, \
             execution_id, seq LIMIT 1{}",
            self.dialect.skip_locked
        ))
        .bind(tenant)
        .bind(queue)
        .bind(now_ms)
        .bind(worker)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(found) = found else {
            return Ok(None);
        };
        let mut row = task_row(&found)?;
        row.record.claimed_at_ms = Some(now_ms);
        let deadline = claim_deadline(&row, now_ms);
        let claim = new_id("cl");
        let id = &row.record.id;
        sqlx::query::<DB>(
            "UPDATE tasks SET status = 'claimed', claim_id = $1, worker_id = $2, claimed_at = $3, \
             heartbeat_at = $3, deadline_at = $4 \
             WHERE execution_id = $5 AND seq = $6 AND attempt = $7",
        )
        .bind(claim.as_str())
        .bind(worker)
        .bind(now_ms)
        .bind(deadline)
        .bind(id.execution_id.as_str())
        .bind(id.seq)
        .bind(i64::from(id.attempt))
        .execute(&mut *tx)
        .await?;
        Ok(Some(TaskClaim {
            token: TaskToken {
                id: row.record.id,
                claim,
            },
            step: row.record.step,
            input: row.input,
            deadline_at_ms: deadline,
            heartbeat_ms: row.heartbeat_ms.map(|h| h as u64),
        }))
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
        if row.record.status == TaskStatus::Completed {
            // The same claim completing again (a retried request).
            return Ok(());
        }
        if row.record.status == TaskStatus::Cancelled {
            return Err(stale_claim(token, &row.record));
        }
        sqlx::query::<DB>(
            "UPDATE tasks SET status = 'completed', outcome = $1, finished_at = $2 \
             WHERE execution_id = $3 AND seq = $4 AND attempt = $5",
        )
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
             deadline_at = $1 + schedule_to_start_ms \
             WHERE execution_id = $2 AND seq = $3 AND attempt = $4",
        )
        .bind(now_ms)
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
    sqlx::query::<DB>(
        "UPDATE executions SET signals = signals + 1, \
         wake_at = CASE WHEN status = 'waiting' THEN $1 ELSE wake_at END WHERE id = $2",
    )
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
        let row = sqlx::query::<DB>(&format!(
            "SELECT {TASK_COLUMNS} FROM tasks \
             WHERE execution_id = $1 AND seq = $2 AND attempt = $3{}",
            self.dialect.lock_row
        ))
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
    async fn current_claim(
        &self,
        conn: &mut DB::Connection,
        tenant: &str,
        token: &TaskToken,
        now_ms: i64,
    ) -> Result<std::result::Result<Row, Row>> {
        let row = self.locked(conn, Some(tenant), &token.id).await?;
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
        let token = TaskToken {
            id: id.clone(),
            claim: row.claim.clone().unwrap_or_default(),
        };
        let expired = TaskRecord {
            status: TaskStatus::TimedOut,
            ..row.record.clone()
        };
        Err(stale_claim(&token, &expired))
    }

    async fn store_timeout(
        &self,
        conn: &mut DB::Connection,
        id: &TaskId,
        error: &CallError,
        now_ms: i64,
    ) -> Result<()> {
        sqlx::query::<DB>(
            "UPDATE tasks SET status = 'timed-out', outcome = $1, finished_at = $2 \
             WHERE execution_id = $3 AND seq = $4 AND attempt = $5",
        )
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
