//! SQLite's task batches: the claims and completions of workers run on
//! the commit connection (rusqlite: one thread hop per batch, where sqlx
//! hops to its connection thread and back for every statement), with the
//! statements and checks of [`super::tasks`].

use super::sqlite_reads::Lite;
use super::tasks::{
    BatchOp, BatchResult, CLAIM_TASK, FINISH_TASK, Row, WAKE, check_claim, claim_of, claim_select,
    completes, expired_refusal, needs_flush, task_not_found, task_row, task_select, timeout_error,
};
use crate::error::{Error, Result};
use crate::journal::outcome_payload;
use crate::model::{CallError, TaskClaim, TaskId, TaskToken};
use rusqlite::{Connection, OptionalExtension, Transaction, TransactionBehavior, params};
use serde_json::Value;

fn failed(e: rusqlite::Error) -> Error {
    Error::sqlite("task batch", e)
}

/// Runs `ops` in one transaction; their answers, in order. A refusal is
/// an answer; another error rolls everything back. `full`: the
/// connection flushes its commits (`synchronous=FULL`), which a batch of
/// claims only skips (see [`super::tasks`]).
pub(super) fn run_batch(
    conn: &mut Connection,
    full: bool,
    ops: &[BatchOp],
) -> Result<Vec<BatchResult>> {
    let relax = full && !needs_flush(ops);
    if relax {
        conn.pragma_update(None, "synchronous", "NORMAL")
            .map_err(failed)?;
    }
    let ran = run_in_tx(conn, ops);
    if relax {
        conn.pragma_update(None, "synchronous", "FULL")
            .map_err(failed)?;
    }
    ran
}

fn run_in_tx(conn: &mut Connection, ops: &[BatchOp]) -> Result<Vec<BatchResult>> {
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(failed)?;
    let mut results = Vec::with_capacity(ops.len());
    for op in ops {
        let result = match op {
            BatchOp::Claim {
                tenant,
                queue,
                worker,
                now_ms,
                ..
            } => BatchResult::Claim(claim(&tx, tenant, queue, worker, *now_ms)),
            BatchOp::Complete {
                tenant,
                token,
                outcome,
                now_ms,
                ..
            } => BatchResult::Complete(complete(&tx, tenant, token, outcome, *now_ms)),
        };
        if !result.keeps_batch() {
            // Dropping the transaction rolls it back.
            return Err(result.into_error());
        }
        results.push(result);
    }
    tx.commit().map_err(failed)?;
    Ok(results)
}

fn claim(
    tx: &Transaction<'_>,
    tenant: &str,
    queue: &str,
    worker: &str,
    now_ms: i64,
) -> Result<Option<TaskClaim>> {
    let found = tx
        .prepare_cached(&claim_select(""))
        .map_err(failed)?
        .query_row(params![tenant, queue, now_ms, worker], |r| {
            Ok(task_row(&Lite(r)))
        })
        .optional()
        .map_err(failed)?
        .transpose()?;
    let Some(found) = found else {
        return Ok(None);
    };
    let (claim, id) = claim_of(found, now_ms);
    tx.prepare_cached(CLAIM_TASK)
        .and_then(|mut s| {
            s.execute(params![
                claim.token.claim,
                worker,
                now_ms,
                claim.deadline_at_ms,
                id.execution_id,
                id.seq,
                id.attempt
            ])
        })
        .map_err(failed)?;
    Ok(Some(claim))
}

fn complete(
    tx: &Transaction<'_>,
    tenant: &str,
    token: &TaskToken,
    outcome: &std::result::Result<Value, CallError>,
    now_ms: i64,
) -> Result<()> {
    let id = &token.id;
    let row = match check_claim(task(tx, tenant, id)?, token, now_ms)? {
        Ok(row) => row,
        Err(expired) => {
            let error = timeout_error(&expired, now_ms);
            finish(tx, id, "timed-out", &Err(error), now_ms)?;
            return Err(expired_refusal(&expired));
        }
    };
    if completes(&row, token)? {
        finish(tx, id, "completed", outcome, now_ms)?;
    }
    Ok(())
}

/// The task `id` of `tenant`.
fn task(tx: &Transaction<'_>, tenant: &str, id: &TaskId) -> Result<Row> {
    tx.prepare_cached(&task_select(""))
        .map_err(failed)?
        .query_row(params![id.execution_id, id.seq, id.attempt], |r| {
            Ok(task_row(&Lite(r)))
        })
        .optional()
        .map_err(failed)?
        .transpose()?
        .filter(|row| row.record.tenant == tenant)
        .ok_or_else(|| task_not_found(Some(tenant), id))
}

/// Stores the task's outcome and wakes its execution.
fn finish(
    tx: &Transaction<'_>,
    id: &TaskId,
    status: &str,
    outcome: &std::result::Result<Value, CallError>,
    now_ms: i64,
) -> Result<()> {
    tx.prepare_cached(FINISH_TASK)
        .and_then(|mut s| {
            s.execute(params![
                status,
                outcome_payload(outcome).to_string(),
                now_ms,
                id.execution_id,
                id.seq,
                id.attempt
            ])
        })
        .and_then(|_| tx.prepare_cached(WAKE))
        .and_then(|mut s| s.execute(params![now_ms, id.execution_id]))
        .map_err(failed)?;
    Ok(())
}
