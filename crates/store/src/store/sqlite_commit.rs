//! The hot write path of the SQLite store: group commits run synchronously
//! on the group-commit thread with a connection of their own, so a batch
//! costs no thread hop per statement (sqlx's SQLite driver sends every
//! statement to a worker thread and back, ~45 µs each here).

use super::sql::{CONSUME_SIGNAL, SET_TIMER};
use super::tasks::{CLOSE_TASK, OPEN_TASK, WAKE};
use super::{CommitOp, Creation, SideWrite, StatusChange};
use crate::error::{Error, Result};
use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};
use serde_json::Value;
use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The commit connection. [`super::Store::commit`] is called only from the
/// group-commit thread, so it runs the transaction inline, on that thread.
pub(super) struct CommitConnection {
    conn: Mutex<Connection>,
    stop: Arc<AtomicBool>,
    /// Commits are flushed (`synchronous=FULL`).
    full_sync: bool,
}

impl Drop for CommitConnection {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// How often the WAL is checkpointed into the database file.
const CHECKPOINT_EVERY: Duration = Duration::from_millis(500);

/// Past this size the WAL is checkpointed whole and truncated (issue 31).
/// A passive checkpoint copies frames into the database but never
/// shortens the file, and under a steady stream of readers and writers
/// SQLite never gets to start the log over: it grew to 6.7 GB for a
/// 120 MB database. The truncating checkpoint waits for readers to move to
/// the newest snapshot and holds writers for its copy; half of the 64 MB
/// the WAL may reach leaves room for what is written between two looks.
const WAL_TRUNCATE_AT: u64 = 32 << 20;

/// Past this many frames in the log (about 4 MiB, SQLite's own
/// auto-checkpoint point) the checkpoint makes the next commit start the
/// log over, at the beginning of the file. A commit that overwrites the
/// file's blocks is flushed by one write; one that lengthens it also
/// flushes the file's size and blocks through the file system's journal:
/// 0.3 against 0.5-0.7 ms a flush on this disk. Left alone the log never
/// started over while readers came and went (every commit of W3 grew it)
/// until the truncation at [`WAL_TRUNCATE_AT`] emptied the file.
const WAL_RESTART_FRAMES: i64 = 1000;

/// One look of the checkpoint thread: a passive checkpoint, which copies
/// the log beside readers and writers, then a restarting one past
/// [`WAL_RESTART_FRAMES`], or a truncating one past [`WAL_TRUNCATE_AT`].
/// Either then has little left to copy and holds writers only briefly.
fn checkpoint(conn: &Connection, wal: &Path) {
    let size = std::fs::metadata(wal).map_or(0, |m| m.len());
    // Its columns: 1 if it could not finish, frames in the log.
    let run = |mode: &str| {
        conn.query_row(&format!("PRAGMA wal_checkpoint({mode})"), [], |r| {
            Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?))
        })
        .inspect_err(|e| tracing::warn!(error = %e, mode, "WAL checkpoint failed"))
        .ok()
    };
    let Some((_, frames)) = run("PASSIVE") else {
        return;
    };
    if size > WAL_TRUNCATE_AT {
        if let Some((busy, _)) = run("TRUNCATE")
            && busy != 0
        {
            tracing::warn!(wal_bytes = size, "the WAL could not be truncated yet");
        }
    } else if frames >= WAL_RESTART_FRAMES {
        // It waits for readers of the log holding writers off: briefly,
        // or it gives up until the next look (a slow reader must not stall
        // commits).
        let waited = conn.busy_handler(Some(busy_briefly));
        run("RESTART");
        let restored = conn.busy_handler(Some(busy));
        if let Err(e) = waited.and(restored) {
            tracing::warn!(error = %e, "setting the checkpoint's busy handler failed");
        }
    }
}

/// The busy handler of a restarting checkpoint: 25 short sleeps, a
/// couple of milliseconds.
fn busy_briefly(count: i32) -> bool {
    std::thread::sleep(Duration::from_micros(20));
    count < 25
}

/// Waits on a lock held by another connection in short sleeps: the
/// default handler sleeps at least a millisecond, far longer than one of
/// our write transactions holds the lock.
fn busy(count: i32) -> bool {
    std::thread::sleep(Duration::from_micros(if count < 100 { 20 } else { 1000 }));
    count < 30_000
}

fn open(path: &Path, full_sync: bool) -> Result<Connection> {
    let conn = Connection::open(path)
        .map_err(|e| Error::Store(format!("opening {}: {e}", path.display())))?;
    conn.busy_handler(Some(busy))
        .and_then(|()| conn.pragma_update(None, "journal_mode", "WAL"))
        .and_then(|()| {
            conn.pragma_update(
                None,
                "synchronous",
                if full_sync { "FULL" } else { "NORMAL" },
            )
        })
        .map_err(|e| {
            Error::Store(format!(
                "configuring a connection to {}: {e}",
                path.display()
            ))
        })?;
    Ok(conn)
}

impl CommitConnection {
    /// Opens its own connection to the (already migrated) database.
    pub(super) fn open(path: &Path, full_sync: bool) -> Result<Self> {
        let conn = open(path, full_sync)?;
        // Checkpoints (which flush the database file) run on their own
        // thread, not in a commit that someone waits for.
        conn.pragma_update(None, "wal_autocheckpoint", 0)
            .map_err(|e| Error::Store(format!("configuring the commit connection: {e}")))?;
        let stop = Arc::new(AtomicBool::new(false));
        let checkpoints = open(path, full_sync)?;
        let wal = {
            let mut name = path.as_os_str().to_owned();
            name.push("-wal");
            std::path::PathBuf::from(name)
        };
        let stopped = stop.clone();
        std::thread::Builder::new()
            .name("cerebelum-checkpoint".into())
            .spawn(move || {
                while !stopped.load(Ordering::Relaxed) {
                    std::thread::sleep(CHECKPOINT_EVERY);
                    checkpoint(&checkpoints, &wal);
                }
            })
            .map_err(|e| Error::io("starting the checkpoint thread", e))?;
        Ok(Self {
            conn: Mutex::new(conn),
            stop,
            full_sync,
        })
    }

    /// Runs `f` on the commit connection (it blocks: call it from a
    /// blocking thread). Every frequent write of this process goes through
    /// this one connection, so they never wait on each other in SQLite's
    /// busy handler.
    pub(super) fn run<T>(&self, f: impl FnOnce(&Connection) -> rusqlite::Result<T>) -> Result<T> {
        let conn = self.conn.lock().unwrap_or_else(|p| p.into_inner());
        f(&conn).map_err(|e| Error::sqlite("database write", e))
    }

    /// Runs a batch of task claims and completions (it blocks, as
    /// [`Self::run`] does).
    pub(super) fn tasks(
        &self,
        ops: &[super::tasks::BatchOp],
    ) -> Result<Vec<super::tasks::BatchResult>> {
        let mut conn = self.conn.lock().unwrap_or_else(|p| p.into_inner());
        super::sqlite_tasks::run_batch(&mut conn, self.full_sync, ops)
    }

    /// Commits the batch on the calling thread (it blocks: call it from a
    /// thread that may block, like the group-commit thread).
    pub(super) fn commit(&self, ops: &[CommitOp], now_ms: i64) -> Result<Vec<Result<()>>> {
        let mut conn = self.conn.lock().unwrap_or_else(|p| p.into_inner());
        commit(&mut conn, ops, now_ms).map_err(|e| Error::sqlite("journal commit", e))
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
        if let Some(creation) = &op.create {
            match create(&tx, creation, now_ms)? {
                Created::New => {}
                Created::KeyTaken(id) => {
                    results.push(Err(Error::KeyTaken(id)));
                    continue;
                }
                Created::NoPackage => {
                    results.push(Err(super::rows::package_not_found(
                        &creation.new.package_sha256,
                    )));
                    continue;
                }
            }
            owned.insert(key, true);
        }
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

/// What a creation in a group commit did.
enum Created {
    New,
    /// Its idempotency key is taken, by this execution.
    KeyTaken(String),
    /// Its package does not exist.
    NoPackage,
}

/// Inserts a new execution, unless its idempotency key is taken.
fn create(tx: &rusqlite::Transaction<'_>, c: &Creation, now_ms: i64) -> rusqlite::Result<Created> {
    let owned = c.owner.is_some();
    let inserted = tx
        .prepare_cached(
            "INSERT INTO executions (id, tenant, package_sha256, package_name, package_version, \
             workflow, input, status, created_at, updated_at, wake_at, owner, lease_expires_at, \
             epoch, worker_queue, idempotency_key, continued_from, parent_id, detached) \
             SELECT ?, tenant, sha256, name, version, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ? \
             FROM packages WHERE tenant = ? AND name = ? AND version = ? \
             ON CONFLICT (tenant, idempotency_key) DO NOTHING",
        )?
        .execute(params![
            c.new.id,
            c.new.workflow,
            c.new.input.to_string(),
            if owned { "running" } else { "pending" },
            now_ms,
            now_ms,
            if owned { None } else { Some(now_ms) },
            c.owner.as_ref().map(|o| &o.0),
            c.owner.as_ref().map(|o| o.1),
            c.epoch(),
            c.new.worker_queue,
            c.new.idempotency_key,
            c.new.continued_from,
            c.new.parent_id,
            c.new.detached,
            c.new.tenant,
            c.new.package_name,
            c.new.package_version
        ])?;
    if inserted == 1 {
        return Ok(Created::New);
    }
    let Some(key) = &c.new.idempotency_key else {
        return Ok(Created::NoPackage);
    };
    let taken = tx
        .prepare_cached("SELECT id FROM executions WHERE tenant = ? AND idempotency_key = ?")?
        .query_row(params![c.new.tenant, key], |row| row.get(0))
        .optional()?;
    Ok(taken.map_or(Created::NoPackage, Created::KeyTaken))
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
            e.event.kind(),
            e.event.ref_seq(),
            e.event.args_hash(),
            e.event.payload_text(),
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
            SideWrite::OpenTask(task) => {
                tx.prepare_cached(OPEN_TASK)?.execute(params![
                    id,
                    task.seq,
                    task.attempt,
                    task.queue,
                    task.step,
                    task.input,
                    now_ms,
                    task.timeouts.schedule_to_start_ms.map(|t| t as i64),
                    task.timeouts.start_to_close_ms as i64,
                    task.timeouts.heartbeat_ms.map(|t| t as i64),
                    task.sticky.as_ref().map(|s| &s.0),
                    task.sticky.as_ref().map(|s| s.1),
                ])?;
            }
            SideWrite::CloseTask { seq, attempt } => {
                tx.prepare_cached(CLOSE_TASK)?
                    .execute(params![now_ms, id, seq, attempt])?;
            }
            SideWrite::WakeParent { parent } => {
                tx.prepare_cached(WAKE)?.execute(params![now_ms, parent])?;
            }
            SideWrite::ConsumeSignal { signal, call } => {
                tx.prepare_cached(CONSUME_SIGNAL)?
                    .execute(params![call, now_ms, id, signal])?;
            }
            SideWrite::CreateChild(child) => {
                if !matches!(create(tx, child, now_ms)?, Created::New) {
                    // Not expected: the package was found before and is
                    // never deleted, and the key holds a seq not used
                    // before. A replay creates it if it can.
                    tracing::warn!(execution_id = %id, child = %child.new.id,
                        "a child started in this commit was not created");
                }
            }
        }
    }
    match &op.status {
        None => {}
        Some(StatusChange::Waiting {
            wake_at_ms,
            seen_signals,
            timer,
        }) => {
            tx.prepare_cached(
                "UPDATE executions SET status = 'waiting', owner = NULL, lease_expires_at = NULL, \
                 engine_failures = 0, engine_error = NULL, \
                 wake_at = CASE WHEN paused THEN NULL WHEN signals != ? THEN ? ELSE ? END, \
                 updated_at = ? WHERE id = ?",
            )?
            .execute(params![seen_signals, now_ms, wake_at_ms, now_ms, id])?;
            if let Some(timer) = timer {
                tx.prepare_cached(SET_TIMER)?.execute(params![
                    id,
                    timer.seq,
                    timer.due_at,
                    timer.invocation,
                    timer.next_seq
                ])?;
            }
        }
        Some(StatusChange::Finished {
            status,
            result,
            error,
        }) => {
            tx.prepare_cached(
                "UPDATE executions SET status = ?, result = ?, error = ?, owner = NULL, \
                 lease_expires_at = NULL, wake_at = NULL, engine_failures = 0, \
                 engine_error = NULL, updated_at = ? WHERE id = ?",
            )?
            .execute(params![
                status.as_str(),
                result.as_ref().map(Value::to_string),
                error
                    .as_ref()
                    .map(|e| serde_json::to_string(e).unwrap_or_default()),
                now_ms,
                id
            ])?;
        }
    }
    Ok(())
}
