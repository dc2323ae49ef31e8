//! The embedded SQLite store (WAL). One writer connection serialises this
//! process's writes; other processes (CLI commands) wait on `busy_timeout`.

use super::rows;
use super::sql::{CLEAR_TIMER, Dialect, Sql};
use super::sqlite_commit::CommitConnection;
use super::sqlite_reads::Readers;
use super::tasks::Batches;
use super::{
    Catalog, Claim, CommitOp, EngineFailure, Executions, FiredTimers, Renewed, Store, Tasks,
};
use crate::error::{Error, Result};
use crate::journal::Event;
use crate::model::{ApprovalRecord, ExecutionRecord, NewExecution};
use async_trait::async_trait;
use sqlx::Sqlite;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

/// How hard SQLite flushes a commit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Synchronous {
    /// fsync on every commit: a returned append survives power loss.
    #[default]
    Full,
    /// No fsync per commit (WAL): survives a process crash (`kill -9`),
    /// not a power loss. Faster on slow disks.
    Normal,
}

/// SQLite-backed [`Store`].
pub struct SqliteStore {
    /// The shared SQL: reads on a pool (point reads of one row by its key
    /// inline, on rusqlite connections: `sqlite_reads`), writes on one
    /// sqlx connection.
    sql: Sql<Sqlite>,
    /// The hot path's own connection (rusqlite): group commits, claims,
    /// leases.
    commits: Arc<CommitConnection>,
}

/// SQLite's side of the shared SQL: a write transaction takes the write
/// lock at once; rows need no lock of their own.
const DIALECT: Dialect = Dialect {
    begin: "BEGIN IMMEDIATE",
    lock_row: "",
    lock_uploads: None,
    skip_locked: "",
    // Claims run on the commit connection (`sqlite_tasks`), which says so.
    no_flush: None,
    shard: "0",
    input_at: "CAST(json_extract(input, {}) AS TEXT)",
    json_path: sqlite_json_path,
};

/// `$."a"."b"`: SQLite's JSON path of fields `a`, `b` (names are
/// letters, digits, `_` and `-`: the API checks).
fn sqlite_json_path(path: &[String]) -> String {
    path.iter()
        .fold("$".to_owned(), |p, field| format!("{p}.\"{field}\""))
}

impl SqliteStore {
    /// Opens (creating if needed) the database file at `path` and migrates it.
    pub async fn open(path: impl AsRef<Path>, sync: Synchronous) -> Result<Self> {
        let path = path.as_ref();
        // It holds tenants' secrets: readable by its owner only, and so are
        // the -wal and -shm files SQLite creates with the database's mode.
        create_private(path)?;
        let options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(match sync {
                Synchronous::Full => SqliteSynchronous::Full,
                Synchronous::Normal => SqliteSynchronous::Normal,
            })
            .busy_timeout(Duration::from_secs(30))
            .foreign_keys(true);
        let connect = |max: u32| {
            SqlitePoolOptions::new()
                .max_connections(max)
                .min_connections(1)
                .idle_timeout(None)
                .max_lifetime(None)
                .before_acquire(|conn, _| Box::pin(out_of_transaction(conn)))
                .connect_with(options.clone())
        };
        // Processes opening a fresh database at once (a `serve` and a
        // `start`) must not both run the first migration: serialise them
        // on a lock file beside the database.
        let lock_path = path.with_extension("db-migrate.lock");
        let lock = private_file()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|e| {
                Error::InvalidInput(format!(
                    "cannot open SQLite database {}: {e}",
                    path.display()
                ))
            })?;
        let lock = tokio::task::spawn_blocking(move || lock.lock().map(|()| lock))
            .await
            .map_err(|e| Error::Runtime(format!("lock task: {e}")))?
            .map_err(|e| Error::io(format!("locking {}", lock_path.display()), e))?;
        let writer = connect(1).await.map_err(|e| {
            Error::InvalidInput(format!(
                "cannot open SQLite database {}: {e}",
                path.display()
            ))
        })?;
        let migrate = |e| rows::migrate_error(&path.display().to_string(), e);
        let migrator = super::migrations::sqlite().await.map_err(migrate)?;
        migrator.run(&writer).await.map_err(migrate)?;
        drop(lock);
        let reader = connect(4).await?;
        let commits = Arc::new(CommitConnection::open(path, sync == Synchronous::Full)?);
        Ok(Self {
            sql: Sql {
                reader,
                writer,
                dialect: DIALECT,
                folding: Default::default(),
                task_batches: Batches::on(commits.clone()),
                point: Some(Arc::new(Readers::new(path))),
            },
            commits,
        })
    }
}

/// Whether a pooled connection may be used: not when it is still inside
/// a transaction. A COMMIT that fails for a full disk makes SQLite roll
/// the transaction back itself; the ROLLBACK that sqlx then sends fails
/// ("no transaction is active") and sqlx counts the connection as inside
/// a transaction for ever, so every later `BEGIN` on it would fail
/// ("begin_with at non-zero transaction depth") until a restart. Such a
/// connection is closed, and the pool opens a fresh one.
async fn out_of_transaction(conn: &mut sqlx::SqliteConnection) -> sqlx::Result<bool> {
    use sqlx::Connection;
    if !conn.is_in_transaction() {
        return Ok(true);
    }
    // A rollback may still be queued on the connection's worker: let it run.
    conn.ping().await?;
    Ok(!conn.is_in_transaction())
}

/// Options that create a file readable and writable by its owner only.
fn private_file() -> std::fs::OpenOptions {
    let mut options = std::fs::OpenOptions::new();
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options
}

/// Creates the database file `path` (owner-only) if it does not exist.
fn create_private(path: &Path) -> Result<()> {
    match private_file().write(true).create_new(true).open(path) {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(Error::InvalidInput(format!(
            "cannot create SQLite database {}: {e}",
            path.display()
        ))),
    }
}

impl SqliteStore {
    /// Runs a frequent write (claims, leases) on the commit connection, on
    /// a blocking thread.
    async fn on_commit_connection<T: Send + 'static>(
        &self,
        f: impl FnOnce(&rusqlite::Connection) -> rusqlite::Result<T> + Send + 'static,
    ) -> Result<T> {
        let commits = self.commits.clone();
        tokio::task::spawn_blocking(move || commits.run(f))
            .await
            .map_err(|e| Error::Runtime(format!("database task: {e}")))?
    }
}

#[async_trait]
impl Store for SqliteStore {
    fn catalog(&self) -> &dyn Catalog {
        &self.sql
    }

    fn executions(&self) -> &dyn Executions {
        &self.sql
    }

    fn tasks(&self) -> &dyn Tasks {
        &self.sql
    }

    async fn create_execution(
        &self,
        new: NewExecution,
        now_ms: i64,
        owner: Option<(&str, i64)>,
    ) -> Result<ExecutionRecord> {
        self.sql.create_execution(new, now_ms, owner).await
    }

    async fn commit(&self, ops: Vec<CommitOp>, now_ms: i64) -> Result<Vec<Result<()>>> {
        self.commits.commit(&ops, now_ms)
    }

    async fn claim_due(
        &self,
        owner: &str,
        now_ms: i64,
        lease_ms: i64,
        limit: i64,
    ) -> Result<Vec<Claim>> {
        let owner = owner.to_owned();
        self.on_commit_connection(move |c| {
            // Hibernated executions first. Each kind is found, then claimed
            // by id, in one write transaction: a claim tells what it took
            // (SQLite's RETURNING cannot see the values it replaced).
            let tx =
                rusqlite::Transaction::new_unchecked(c, rusqlite::TransactionBehavior::Immediate)?;
            let mut claims = Vec::new();
            for (resumed, taken_over, due) in [
                (
                    true,
                    false,
                    "SELECT id, wake_at FROM executions \
                     WHERE status = 'waiting' AND wake_at <= ?1 LIMIT ?2",
                ),
                (
                    false,
                    false,
                    "SELECT id, NULL FROM executions \
                     WHERE status = 'pending' AND wake_at <= ?1 LIMIT ?2",
                ),
                (
                    false,
                    true,
                    "SELECT id, NULL FROM executions \
                     WHERE status = 'running' AND lease_expires_at < ?1 LIMIT ?2",
                ),
            ] {
                let left = limit - claims.len() as i64;
                if left <= 0 {
                    break;
                }
                let found = tx
                    .prepare_cached(due)?
                    .query_map(rusqlite::params![now_ms, left], |r| {
                        Ok((r.get::<_, String>(0)?, r.get::<_, Option<i64>>(1)?))
                    })?
                    .collect::<rusqlite::Result<Vec<_>>>()?;
                let mut claim = tx.prepare_cached(
                    "UPDATE executions SET owner = ?1, lease_expires_at = ?2 + ?3, \
                     epoch = epoch + 1, status = 'running', wake_at = NULL, updated_at = ?2 \
                     WHERE id = ?4 RETURNING epoch, signals",
                )?;
                // Its code ends the sleep it waited for, if any.
                let mut no_timer = tx.prepare_cached(CLEAR_TIMER)?;
                for (execution_id, wake_at) in found {
                    let (epoch, signals) = claim.query_row(
                        rusqlite::params![owner, now_ms, lease_ms, execution_id],
                        |r| Ok((r.get(0)?, r.get(1)?)),
                    )?;
                    no_timer.execute(rusqlite::params![execution_id])?;
                    claims.push(Claim {
                        execution_id,
                        epoch,
                        signals,
                        resumed,
                        late_ms: wake_at.map(|w| now_ms - w),
                        taken_over,
                    });
                }
            }
            tx.commit()?;
            Ok(claims)
        })
        .await
    }

    async fn fire_timers(&self, now_ms: i64, limit: i64) -> Result<FiredTimers> {
        let event = Event::Result {
            call: 0,
            outcome: Ok(serde_json::Value::Null),
        };
        let (kind, payload) = (event.kind(), event.payload_text());
        self.on_commit_connection(move |c| {
            let tx =
                rusqlite::Transaction::new_unchecked(c, rusqlite::TransactionBehavior::Immediate)?;
            let due = tx
                .prepare_cached(
                    // A timer is there only while its execution waits,
                    // unpaused and not cancelled, and says its result's
                    // seq (see `Timer`).
                    "SELECT t.execution_id, t.seq, t.invocation, t.next_seq \
                     FROM timers t WHERE t.due_at <= ?1 ORDER BY t.due_at LIMIT ?2",
                )?
                .query_map(rusqlite::params![now_ms, limit], |r| {
                    Ok((
                        r.get::<_, String>(0)?,
                        r.get::<_, i64>(1)?,
                        r.get::<_, String>(2)?,
                        r.get::<_, i64>(3)?,
                    ))
                })?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            let mut fired = Vec::with_capacity(due.len());
            {
                let mut insert = tx.prepare_cached(
                    "INSERT INTO journal (execution_id, seq, invocation, kind, ref_seq, args_hash, \
                     payload, at) VALUES (?, ?, ?, ?, ?, NULL, ?, ?)",
                )?;
                let mut clear = tx.prepare_cached(CLEAR_TIMER)?;
                for (id, call, invocation, seq) in due {
                    insert.execute(rusqlite::params![
                        id, seq, invocation, kind, call, payload, now_ms
                    ])?;
                    clear.execute(rusqlite::params![id])?;
                    fired.push((id, seq));
                }
            }
            let next_due = tx
                .prepare_cached(
                    "SELECT MIN(wake_at) FROM executions WHERE status = 'waiting' AND wake_at > ?",
                )?
                .query_row(rusqlite::params![now_ms], |r| r.get::<_, Option<i64>>(0))?;
            tx.commit()?;
            Ok(FiredTimers {
                more: fired.len() as i64 == limit,
                fired,
                next_due,
            })
        })
        .await
    }

    async fn renew_leases(&self, owner: &str, now_ms: i64, lease_ms: i64) -> Result<Vec<Renewed>> {
        let owner = owner.to_owned();
        self.on_commit_connection(move |c| {
            let mut renew = c.prepare_cached(
                "UPDATE executions SET lease_expires_at = ? WHERE owner = ? AND status = 'running' \
                 RETURNING id, cancel_requested, paused",
            )?;
            let rows = renew.query_map(rusqlite::params![now_ms + lease_ms, owner], |r| {
                Ok(Renewed {
                    execution_id: r.get(0)?,
                    cancel_requested: r.get::<_, i64>(1)? != 0,
                    paused: r.get::<_, i64>(2)? != 0,
                })
            })?;
            rows.collect::<rusqlite::Result<Vec<_>>>()
        })
        .await
    }

    async fn abandon(&self, execution_id: &str, epoch: i64, failure: &EngineFailure) -> Result<()> {
        let id = execution_id.to_owned();
        let f = failure.clone();
        self.on_commit_connection(move |c| {
            c.prepare_cached(
                "UPDATE executions SET owner = NULL, engine_failures = engine_failures + 1, \
                 engine_error = ?, lease_expires_at = ? + MIN(?, ? * (1 << MIN(engine_failures, 20))) \
                 WHERE id = ? AND epoch = ? AND status = 'running'",
            )?
            .execute(rusqlite::params![
                f.error,
                f.now_ms,
                f.max_delay_ms,
                f.base_delay_ms,
                id,
                epoch
            ])
            .map(|_| ())
        })
        .await
    }

    async fn release_leases(&self, owner: &str) -> Result<()> {
        let owner = owner.to_owned();
        self.on_commit_connection(move |c| {
            c.prepare_cached(
                "UPDATE executions SET lease_expires_at = 0 WHERE owner = ? AND status = 'running'",
            )?
            .execute(rusqlite::params![owner])
            .map(|_| ())
        })
        .await
    }

    async fn time_out_approval(
        &self,
        execution_id: &str,
        key: &str,
        now_ms: i64,
    ) -> Result<ApprovalRecord> {
        self.sql.time_out_approval(execution_id, key, now_ms).await
    }
}
