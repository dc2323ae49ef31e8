//! The embedded SQLite store (WAL). One writer connection serialises this
//! process's writes; other processes (CLI commands) wait on `busy_timeout`.

use super::Store;
use super::sqlite_commit::CommitConnection;
use crate::error::{Error, Result};
use crate::model::{
    ApprovalRecord, Claim, CommitOp, Decision, Entry, ExecutionRecord, ListFilter, NewExecution,
    PackageRecord, Status,
};
use async_trait::async_trait;
use serde_json::Value;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteRow,
    SqliteSynchronous,
};
use sqlx::{Row, SqliteConnection};
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
    writer: SqlitePool,
    reader: SqlitePool,
    commits: Arc<CommitConnection>,
}

const EXECUTION_COLUMNS: &str = "id, package_sha256, package_name, package_version, workflow, \
     input, status, result, error, created_at, updated_at, wake_at, owner, epoch, cancel_requested";

impl SqliteStore {
    /// Opens (creating if needed) the database file at `path` and migrates it.
    pub async fn open(path: impl AsRef<Path>, sync: Synchronous) -> Result<Self> {
        let path = path.as_ref();
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
                .connect_with(options.clone())
        };
        // Processes opening a fresh database at once (a `serve` and a
        // `start`) must not both run the first migration: serialise them
        // on a lock file beside the database.
        let lock_path = path.with_extension("db-migrate.lock");
        let lock = std::fs::OpenOptions::new()
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
        sqlx::migrate!("./migrations/sqlite")
            .run(&writer)
            .await
            .map_err(|e| match e {
                sqlx::migrate::MigrateError::VersionMissing(v) => Error::Schema(format!(
                    "{} was migrated to schema version {v}, which this cerebelum binary does \
                     not know: it was written by a newer version; upgrade cerebelum",
                    path.display()
                )),
                other => Error::Schema(format!("migrating {}: {other}", path.display())),
            })?;
        drop(lock);
        let reader = connect(4).await?;
        let commits = Arc::new(CommitConnection::open(path, sync == Synchronous::Full)?);
        Ok(Self {
            writer,
            reader,
            commits,
        })
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

fn json(text: Option<String>) -> Result<Option<Value>> {
    text.map(|t| serde_json::from_str(&t))
        .transpose()
        .map_err(|e| Error::Schema(format!("corrupt JSON in the database: {e}")))
}

fn execution_from_row(row: &SqliteRow) -> Result<ExecutionRecord> {
    let status: String = row.try_get("status")?;
    Ok(ExecutionRecord {
        id: row.try_get("id")?,
        package_sha256: row.try_get("package_sha256")?,
        package_name: row.try_get("package_name")?,
        package_version: row.try_get("package_version")?,
        workflow: row.try_get("workflow")?,
        input: json(row.try_get("input")?)?.unwrap_or(Value::Null),
        status: Status::parse(&status)
            .ok_or_else(|| Error::Schema(format!("unknown status {status:?}")))?,
        result: json(row.try_get("result")?)?,
        error: json(row.try_get("error")?)?,
        created_at_ms: row.try_get("created_at")?,
        updated_at_ms: row.try_get("updated_at")?,
        wake_at_ms: row.try_get("wake_at")?,
        owner: row.try_get("owner")?,
        epoch: row.try_get("epoch")?,
        cancel_requested: row.try_get::<i64, _>("cancel_requested")? != 0,
    })
}

fn package_from_row(row: &SqliteRow) -> Result<PackageRecord> {
    Ok(PackageRecord {
        sha256: row.try_get("sha256")?,
        name: row.try_get("name")?,
        version: row.try_get("version")?,
        info: json(row.try_get("info")?)?.unwrap_or(Value::Null),
        created_at_ms: row.try_get("created_at")?,
    })
}

fn entry_from_row(row: &SqliteRow) -> Result<Entry> {
    Ok(Entry {
        seq: row.try_get("seq")?,
        invocation: row.try_get("invocation")?,
        kind: row.try_get("kind")?,
        ref_seq: row.try_get("ref_seq")?,
        args_hash: row.try_get("args_hash")?,
        payload: json(row.try_get("payload")?)?.unwrap_or(Value::Null),
        at_ms: row.try_get("at")?,
    })
}

fn approval_from_row(row: &SqliteRow) -> Result<ApprovalRecord> {
    Ok(ApprovalRecord {
        execution_id: row.try_get("execution_id")?,
        key: row.try_get("key")?,
        status: row.try_get("status")?,
        request: json(row.try_get("request")?)?.unwrap_or(Value::Null),
        decision: json(row.try_get("decision")?)?,
    })
}

fn not_found(id: &str) -> Error {
    Error::NotFound(format!(
        "no execution with id '{id}'; `cerebelum list` shows the executions"
    ))
}

async fn execution_in(conn: &mut SqliteConnection, id: &str) -> Result<ExecutionRecord> {
    let row = sqlx::query(&format!(
        "SELECT {EXECUTION_COLUMNS} FROM executions WHERE id = ?"
    ))
    .bind(id)
    .fetch_optional(&mut *conn)
    .await?
    .ok_or_else(|| not_found(id))?;
    execution_from_row(&row)
}

async fn insert_entry(conn: &mut SqliteConnection, id: &str, e: &Entry) -> Result<()> {
    sqlx::query(
        "INSERT INTO journal (execution_id, seq, invocation, kind, ref_seq, args_hash, payload, at) \
         VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
    )
    .bind(id)
    .bind(e.seq)
    .bind(&e.invocation)
    .bind(&e.kind)
    .bind(e.ref_seq)
    .bind(&e.args_hash)
    .bind(e.payload.to_string())
    .bind(e.at_ms)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

#[async_trait]
impl Store for SqliteStore {
    async fn put_package(
        &self,
        name: &str,
        sha256: &str,
        bytes: &[u8],
        info: &Value,
        now_ms: i64,
    ) -> Result<PackageRecord> {
        let mut tx = self.writer.begin_with("BEGIN IMMEDIATE").await?;
        if let Some(row) = sqlx::query(
            "SELECT sha256, name, version, info, created_at FROM packages WHERE sha256 = ?",
        )
        .bind(sha256)
        .fetch_optional(&mut *tx)
        .await?
        {
            return package_from_row(&row);
        }
        let version: i64 =
            sqlx::query_scalar("SELECT COALESCE(MAX(version), 0) + 1 FROM packages WHERE name = ?")
                .bind(name)
                .fetch_one(&mut *tx)
                .await?;
        sqlx::query(
            "INSERT INTO packages (sha256, name, version, bytes, info, created_at) VALUES (?, ?, ?, ?, ?, ?)",
        )
        .bind(sha256)
        .bind(name)
        .bind(version)
        .bind(bytes)
        .bind(info.to_string())
        .bind(now_ms)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(PackageRecord {
            sha256: sha256.to_owned(),
            name: name.to_owned(),
            version,
            info: info.clone(),
            created_at_ms: now_ms,
        })
    }

    async fn package(&self, sha256: &str) -> Result<PackageRecord> {
        let row = sqlx::query(
            "SELECT sha256, name, version, info, created_at FROM packages WHERE sha256 = ?",
        )
        .bind(sha256)
        .fetch_optional(&self.reader)
        .await?
        .ok_or_else(|| Error::NotFound(format!("no package with sha256 {sha256}")))?;
        package_from_row(&row)
    }

    async fn package_bytes(&self, sha256: &str) -> Result<Vec<u8>> {
        sqlx::query_scalar("SELECT bytes FROM packages WHERE sha256 = ?")
            .bind(sha256)
            .fetch_optional(&self.reader)
            .await?
            .ok_or_else(|| Error::NotFound(format!("no package with sha256 {sha256}")))
    }

    async fn list_packages(&self) -> Result<Vec<PackageRecord>> {
        let rows = sqlx::query(
            "SELECT sha256, name, version, info, created_at FROM packages ORDER BY name, version",
        )
        .fetch_all(&self.reader)
        .await?;
        rows.iter().map(package_from_row).collect()
    }

    async fn latest_package(&self, name: &str) -> Result<PackageRecord> {
        let row = sqlx::query(
            "SELECT sha256, name, version, info, created_at FROM packages WHERE name = ? \
             ORDER BY version DESC LIMIT 1",
        )
        .bind(name)
        .fetch_optional(&self.reader)
        .await?;
        match row {
            Some(row) => package_from_row(&row),
            None => {
                let names: Vec<String> =
                    sqlx::query_scalar("SELECT DISTINCT name FROM packages ORDER BY name")
                        .fetch_all(&self.reader)
                        .await?;
                Err(Error::NotFound(format!(
                    "no package named '{name}'; known packages: {}",
                    if names.is_empty() {
                        "none".to_owned()
                    } else {
                        names.join(", ")
                    }
                )))
            }
        }
    }

    async fn create_execution(
        &self,
        new: NewExecution,
        now_ms: i64,
        owner: Option<(&str, i64)>,
    ) -> Result<ExecutionRecord> {
        let insert = format!(
            "INSERT INTO executions (id, package_sha256, package_name, package_version, workflow, \
             input, idempotency_key, status, created_at, updated_at, wake_at, owner, \
             lease_expires_at, epoch) \
             SELECT ?, sha256, name, version, ?, ?, ?, ?, ?, ?, ?, ?, ?, ? FROM packages WHERE sha256 = ? \
             RETURNING {EXECUTION_COLUMNS}"
        );
        let query = sqlx::query(&insert)
            .bind(&new.id)
            .bind(&new.workflow)
            .bind(new.input.to_string())
            .bind(&new.idempotency_key)
            .bind(if owner.is_some() {
                "running"
            } else {
                "pending"
            })
            .bind(now_ms)
            .bind(now_ms)
            .bind(if owner.is_some() { None } else { Some(now_ms) })
            .bind(owner.map(|o| o.0))
            .bind(owner.map(|o| o.1))
            .bind(if owner.is_some() { 1 } else { 0 })
            .bind(&new.package_sha256);
        let missing = || Error::NotFound(format!("no package with sha256 {}", new.package_sha256));
        let Some(key) = &new.idempotency_key else {
            // One statement: atomic without a transaction.
            let row = query
                .fetch_optional(&self.writer)
                .await?
                .ok_or_else(missing)?;
            return execution_from_row(&row);
        };
        let mut tx = self.writer.begin_with("BEGIN IMMEDIATE").await?;
        let existing: Option<String> =
            sqlx::query_scalar("SELECT id FROM executions WHERE idempotency_key = ?")
                .bind(key)
                .fetch_optional(&mut *tx)
                .await?;
        if let Some(id) = existing {
            return execution_in(&mut tx, &id).await;
        }
        let row = query.fetch_optional(&mut *tx).await?.ok_or_else(missing)?;
        tx.commit().await?;
        execution_from_row(&row)
    }

    async fn execution(&self, id: &str) -> Result<ExecutionRecord> {
        let mut conn = self.reader.acquire().await?;
        execution_in(&mut conn, id).await
    }

    async fn list_executions(&self, filter: &ListFilter) -> Result<Vec<ExecutionRecord>> {
        let rows = sqlx::query(&format!(
            "SELECT {EXECUTION_COLUMNS} FROM executions \
             WHERE (?1 IS NULL OR status = ?1) AND (?2 IS NULL OR workflow = ?2) \
             ORDER BY created_at DESC, id DESC LIMIT ?3"
        ))
        .bind(filter.status.map(Status::as_str))
        .bind(&filter.workflow)
        .bind(if filter.limit > 0 { filter.limit } else { 100 })
        .fetch_all(&self.reader)
        .await?;
        rows.iter().map(execution_from_row).collect()
    }

    async fn journal(&self, id: &str, after_seq: i64) -> Result<Vec<Entry>> {
        let rows = sqlx::query(
            "SELECT seq, invocation, kind, ref_seq, args_hash, payload, at FROM journal \
             WHERE execution_id = ? AND seq > ? ORDER BY seq",
        )
        .bind(id)
        .bind(after_seq)
        .fetch_all(&self.reader)
        .await?;
        rows.iter().map(entry_from_row).collect()
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
            let mut claim = c.prepare_cached(
                "UPDATE executions SET owner = ?1, lease_expires_at = ?2 + ?3, epoch = epoch + 1, \
                 status = 'running', wake_at = NULL, updated_at = ?2 \
                 WHERE id IN ( \
                   SELECT id FROM executions WHERE status IN ('pending', 'waiting') AND wake_at <= ?2 \
                   UNION ALL \
                   SELECT id FROM executions WHERE status = 'running' AND lease_expires_at < ?2 \
                   LIMIT ?4) \
                 RETURNING id, epoch, signals",
            )?;
            let rows = claim.query_map(rusqlite::params![owner, now_ms, lease_ms, limit], |r| {
                Ok(Claim {
                    execution_id: r.get(0)?,
                    epoch: r.get(1)?,
                    signals: r.get(2)?,
                })
            })?;
            rows.collect()
        })
        .await
    }

    async fn renew_leases(&self, owner: &str, now_ms: i64, lease_ms: i64) -> Result<Vec<String>> {
        let owner = owner.to_owned();
        self.on_commit_connection(move |c| {
            let mut renew = c.prepare_cached(
                "UPDATE executions SET lease_expires_at = ? WHERE owner = ? AND status = 'running' \
                 RETURNING id, cancel_requested",
            )?;
            let rows = renew.query_map(rusqlite::params![now_ms + lease_ms, owner], |r| {
                Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)? != 0))
            })?;
            let mut cancelled = Vec::new();
            for row in rows {
                let (id, cancel) = row?;
                if cancel {
                    cancelled.push(id);
                }
            }
            Ok(cancelled)
        })
        .await
    }

    async fn abandon(&self, execution_id: &str, epoch: i64, retry_at_ms: i64) -> Result<()> {
        let id = execution_id.to_owned();
        self.on_commit_connection(move |c| {
            c.prepare_cached(
                "UPDATE executions SET owner = NULL, lease_expires_at = ? \
                 WHERE id = ? AND epoch = ? AND status = 'running'",
            )?
            .execute(rusqlite::params![retry_at_ms, id, epoch])
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

    async fn approvals(&self, execution_id: &str) -> Result<Vec<ApprovalRecord>> {
        let rows = sqlx::query(
            "SELECT execution_id, key, status, request, decision FROM approvals \
             WHERE execution_id = ? ORDER BY created_at, key",
        )
        .bind(execution_id)
        .fetch_all(&self.reader)
        .await?;
        rows.iter().map(approval_from_row).collect()
    }

    async fn decide_approval(
        &self,
        execution_id: &str,
        key: &str,
        decision: &Decision,
        now_ms: i64,
    ) -> Result<ApprovalRecord> {
        let mut tx = self.writer.begin_with("BEGIN IMMEDIATE").await?;
        let execution = execution_in(&mut tx, execution_id).await?;
        let row = sqlx::query(
            "SELECT execution_id, key, status, request, decision FROM approvals \
             WHERE execution_id = ? AND key = ?",
        )
        .bind(execution_id)
        .bind(key)
        .fetch_optional(&mut *tx)
        .await?;
        let (status, value) = match decision {
            Decision::Approve(payload) => ("approved", payload.clone()),
            Decision::Reject(reason) => ("rejected", Value::String(reason.clone())),
        };
        let Some(row) = row else {
            let pending: Vec<String> = sqlx::query_scalar(
                "SELECT key FROM approvals WHERE execution_id = ? AND status = 'pending' ORDER BY key",
            )
            .bind(execution_id)
            .fetch_all(&mut *tx)
            .await?;
            return Err(Error::Conflict(if pending.is_empty() {
                format!(
                    "execution {execution_id} ({}) is not waiting for approval '{key}': it is not \
                     waiting for any approval",
                    execution.status
                )
            } else {
                format!(
                    "execution {execution_id} is not waiting for approval '{key}'; it is waiting \
                     for: {}",
                    pending.join(", ")
                )
            }));
        };
        let current = approval_from_row(&row)?;
        if current.status != "pending" {
            if current.status == status && current.decision.as_ref() == Some(&value) {
                return Ok(current);
            }
            return Err(Error::Conflict(format!(
                "approval '{key}' of execution {execution_id} is already {}{}",
                current.status,
                current
                    .decision
                    .as_ref()
                    .map(|d| format!(" ({d})"))
                    .unwrap_or_default()
            )));
        }
        sqlx::query(
            "UPDATE approvals SET status = ?, decision = ?, decided_at = ? \
             WHERE execution_id = ? AND key = ?",
        )
        .bind(status)
        .bind(value.to_string())
        .bind(now_ms)
        .bind(execution_id)
        .bind(key)
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "UPDATE executions SET signals = signals + 1, \
             wake_at = CASE WHEN status = 'waiting' THEN ? ELSE wake_at END WHERE id = ?",
        )
        .bind(now_ms)
        .bind(execution_id)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(ApprovalRecord {
            status: status.to_owned(),
            decision: Some(value),
            ..current
        })
    }

    async fn time_out_approval(
        &self,
        execution_id: &str,
        key: &str,
        now_ms: i64,
    ) -> Result<ApprovalRecord> {
        let mut tx = self.writer.begin_with("BEGIN IMMEDIATE").await?;
        sqlx::query(
            "UPDATE approvals SET status = 'timed-out', decided_at = ? \
             WHERE execution_id = ? AND key = ? AND status = 'pending'",
        )
        .bind(now_ms)
        .bind(execution_id)
        .bind(key)
        .execute(&mut *tx)
        .await?;
        let row = sqlx::query(
            "SELECT execution_id, key, status, request, decision FROM approvals \
             WHERE execution_id = ? AND key = ?",
        )
        .bind(execution_id)
        .bind(key)
        .fetch_optional(&mut *tx)
        .await?
        .ok_or_else(|| Error::NotFound(format!("no approval '{key}' on {execution_id}")))?;
        tx.commit().await?;
        approval_from_row(&row)
    }

    async fn request_cancel(&self, execution_id: &str, now_ms: i64) -> Result<ExecutionRecord> {
        let mut tx = self.writer.begin_with("BEGIN IMMEDIATE").await?;
        let execution = execution_in(&mut tx, execution_id).await?;
        if execution.status.is_terminal() {
            return Err(Error::Conflict(format!(
                "execution {execution_id} is already {}; there is nothing to cancel",
                execution.status
            )));
        }
        sqlx::query(
            "UPDATE executions SET cancel_requested = 1, signals = signals + 1, \
             wake_at = CASE WHEN status IN ('waiting', 'pending') THEN ? ELSE wake_at END \
             WHERE id = ?",
        )
        .bind(now_ms)
        .bind(execution_id)
        .execute(&mut *tx)
        .await?;
        let record = execution_in(&mut tx, execution_id).await?;
        tx.commit().await?;
        Ok(record)
    }

    async fn retry_execution(&self, execution_id: &str, now_ms: i64) -> Result<ExecutionRecord> {
        let mut tx = self.writer.begin_with("BEGIN IMMEDIATE").await?;
        let execution = execution_in(&mut tx, execution_id).await?;
        if !matches!(execution.status, Status::Failed | Status::Cancelled) {
            return Err(Error::Conflict(format!(
                "execution {execution_id} is {}; only failed or cancelled executions can be retried",
                execution.status
            )));
        }
        let seq: i64 = sqlx::query_scalar(
            "SELECT COALESCE(MAX(seq), 0) + 1 FROM journal WHERE execution_id = ?",
        )
        .bind(execution_id)
        .fetch_one(&mut *tx)
        .await?;
        let entry = Entry {
            seq,
            invocation: "operator".into(),
            kind: "retried".into(),
            ref_seq: None,
            args_hash: None,
            payload: serde_json::json!({ "previous_status": execution.status, "error": execution.error }),
            at_ms: now_ms,
        };
        insert_entry(&mut tx, execution_id, &entry).await?;
        sqlx::query(
            "UPDATE executions SET status = 'pending', result = NULL, error = NULL, owner = NULL, \
             lease_expires_at = NULL, wake_at = ?, epoch = epoch + 1, cancel_requested = 0, \
             updated_at = ? WHERE id = ?",
        )
        .bind(now_ms)
        .bind(now_ms)
        .bind(execution_id)
        .execute(&mut *tx)
        .await?;
        let record = execution_in(&mut tx, execution_id).await?;
        tx.commit().await?;
        Ok(record)
    }

    async fn count_by_status(&self) -> Result<Vec<(String, i64)>> {
        let rows = sqlx::query(
            "SELECT status, COUNT(*) AS n FROM executions GROUP BY status ORDER BY status",
        )
        .fetch_all(&self.reader)
        .await?;
        rows.iter()
            .map(|r| Ok((r.try_get("status")?, r.try_get("n")?)))
            .collect()
    }
}
