//! The hot write path of the SQLite store: group commits run synchronously
//! on the group-commit thread with a connection of their own, so a batch
//! costs no thread hop per statement (sqlx's SQLite driver sends every
//! statement to a worker thread and back, ~45 µs each here).

use crate::error::{Error, Result};
use crate::model::{CommitOp, SideWrite, StatusChange};
use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};
use serde_json::Value;
use std::collections::HashMap;
use std::path::Path;
use std::sync::Mutex;
use std::time::Duration;

/// The commit connection. [`super::Store::commit`] is called only from the
/// group-commit thread, so it runs the transaction inline, on that thread.
pub(super) struct CommitConnection {
    conn: Mutex<Connection>,
}

impl CommitConnection {
    /// Opens its own connection to the (already migrated) database.
    pub(super) fn open(path: &Path, full_sync: bool) -> Result<Self> {
        let conn = Connection::open(path)
            .map_err(|e| Error::Runtime(format!("opening {} for commits: {e}", path.display())))?;
        conn.busy_timeout(Duration::from_secs(30))
            .and_then(|()| conn.pragma_update(None, "journal_mode", "WAL"))
            .and_then(|()| {
                conn.pragma_update(
                    None,
                    "synchronous",
                    if full_sync { "FULL" } else { "NORMAL" },
                )
            })
            .map_err(|e| Error::Runtime(format!("configuring the commit connection: {e}")))?;
        Ok(Self {
            conn: Mutex::new(conn),
        })
    }

    /// Commits the batch on the calling thread (it blocks: call it from a
    /// thread that may block, like the group-commit thread).
    pub(super) fn commit(&self, ops: &[CommitOp], now_ms: i64) -> Result<Vec<Result<()>>> {
        let mut conn = self.conn.lock().unwrap_or_else(|p| p.into_inner());
        commit(&mut conn, ops, now_ms).map_err(|e| Error::Runtime(format!("journal commit: {e}")))
    }
}

/// One transaction for the whole batch; each operation fenced by its epoch.
fn commit(
    conn: &mut Connection,
    ops: &[CommitOp],
    now_ms: i64,
) -> rusqlite::Result<Vec<Result<()>>> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let mut owned: HashMap<(&str, i64), bool> = HashMap::new();
    let mut results = Vec::with_capacity(ops.len());
    for op in ops {
        let key = (op.execution_id.as_str(), op.epoch);
        let is_owned = match owned.get(&key) {
            Some(o) => *o,
            None => {
                let o = tx
                    .prepare_cached("SELECT 1 FROM executions WHERE id = ? AND epoch = ?")?
                    .query_row(params![op.execution_id, op.epoch], |_| Ok(()))
                    .optional()?
                    .is_some();
                owned.insert(key, o);
                o
            }
        };
        if !is_owned {
            results.push(Err(Error::LostOwnership(op.execution_id.clone())));
            continue;
        }
        apply(&tx, op, now_ms)?;
        if op.status.is_some() {
            // Ownership ends with a status change.
            owned.insert(key, false);
        }
        results.push(Ok(()));
    }
    tx.commit()?;
    Ok(results)
}

fn apply(tx: &rusqlite::Transaction<'_>, op: &CommitOp, now_ms: i64) -> rusqlite::Result<()> {
    let id = &op.execution_id;
    let mut insert = tx.prepare_cached(
        "INSERT INTO journal (execution_id, seq, invocation, kind, ref_seq, args_hash, payload, at) \
         VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
    )?;
    for e in &op.entries {
        insert.execute(params![
            id,
            e.seq,
            e.invocation,
            e.kind,
            e.ref_seq,
            e.args_hash,
            e.payload.to_string(),
            e.at_ms
        ])?;
    }
    for side in &op.side {
        match side {
            SideWrite::OpenApproval { key, request } => {
                tx.prepare_cached(
                    "INSERT INTO approvals (execution_id, key, status, request, created_at) \
                     VALUES (?, ?, 'pending', ?, ?) ON CONFLICT (execution_id, key) DO NOTHING",
                )?
                .execute(params![id, key, request.to_string(), now_ms])?;
            }
            SideWrite::CloseApproval { key, status } => {
                tx.prepare_cached(
                    "UPDATE approvals SET status = ?, decided_at = ? \
                     WHERE execution_id = ? AND key = ? AND status = 'pending'",
                )?
                .execute(params![status, now_ms, id, key])?;
            }
        }
    }
    match &op.status {
        None => {}
        Some(StatusChange::Waiting {
            wake_at_ms,
            seen_signals,
        }) => {
            tx.prepare_cached(
                "UPDATE executions SET status = 'waiting', owner = NULL, lease_expires_at = NULL, \
                 wake_at = CASE WHEN signals != ? THEN ? ELSE ? END, updated_at = ? WHERE id = ?",
            )?
            .execute(params![seen_signals, now_ms, wake_at_ms, now_ms, id])?;
        }
        Some(StatusChange::Finished {
            status,
            result,
            error,
        }) => {
            tx.prepare_cached(
                "UPDATE executions SET status = ?, result = ?, error = ?, owner = NULL, \
                 lease_expires_at = NULL, wake_at = NULL, updated_at = ? WHERE id = ?",
            )?
            .execute(params![
                status.as_str(),
                result.as_ref().map(Value::to_string),
                error.as_ref().map(Value::to_string),
                now_ms,
                id
            ])?;
        }
    }
    Ok(())
}
