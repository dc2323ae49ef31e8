//! The embedded SQLite store (WAL). One writer connection serialises this
//! process's writes; other processes (CLI commands) wait on `busy_timeout`.

use super::rows::{
    self, API_KEY_COLUMNS, APPROVAL_COLUMNS, ENTRY_COLUMNS, EXECUTION_COLUMNS, PACKAGE_COLUMNS,
    TENANT_COLUMNS,
};
use super::sqlite_commit::CommitConnection;
use super::{EngineFailure, Store};
use crate::error::{Error, Result};
use crate::model::{
    ApiKeyRecord, ApprovalRecord, Claim, CommitOp, Decision, Entry, ExecutionRecord, ListFilter,
    NewExecution, PackageRecord, Quotas, SecretRecord, Status, TenantRecord,
};
use async_trait::async_trait;
use serde_json::Value;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
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
        sqlx::migrate!("./migrations/sqlite")
            .run(&writer)
            .await
            .map_err(|e| rows::migrate_error(&path.display().to_string(), e))?;
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

async fn execution_in(conn: &mut SqliteConnection, id: &str) -> Result<ExecutionRecord> {
    let row = sqlx::query(&format!(
        "SELECT {EXECUTION_COLUMNS} FROM executions WHERE id = ?"
    ))
    .bind(id)
    .fetch_optional(&mut *conn)
    .await?
    .ok_or_else(|| rows::execution_not_found(id))?;
    rows::execution(&row)
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
    async fn create_tenant(
        &self,
        name: &str,
        quotas: &Quotas,
        http_allow: &[String],
        now_ms: i64,
    ) -> Result<TenantRecord> {
        let inserted = sqlx::query(
            "INSERT INTO tenants (name, created_at, max_package_bytes, max_open_executions, \
             max_payload_bytes, limits) VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (name) DO NOTHING",
        )
        .bind(name)
        .bind(now_ms)
        .bind(quotas.max_package_bytes)
        .bind(quotas.max_open_executions)
        .bind(quotas.max_payload_bytes)
        .bind(rows::limits_json(quotas, http_allow))
        .execute(&self.writer)
        .await?;
        if inserted.rows_affected() == 0 {
            return Err(rows::tenant_exists(name));
        }
        self.tenant(name).await
    }

    async fn update_tenant(
        &self,
        name: &str,
        quotas: &Quotas,
        http_allow: &[String],
    ) -> Result<TenantRecord> {
        let row = sqlx::query(&format!(
            "UPDATE tenants SET max_package_bytes = ?, max_open_executions = ?, \
             max_payload_bytes = ?, limits = ? WHERE name = ? RETURNING {TENANT_COLUMNS}"
        ))
        .bind(quotas.max_package_bytes)
        .bind(quotas.max_open_executions)
        .bind(quotas.max_payload_bytes)
        .bind(rows::limits_json(quotas, http_allow))
        .bind(name)
        .fetch_optional(&self.writer)
        .await?
        .ok_or_else(|| rows::tenant_not_found(name))?;
        rows::tenant(&row)
    }

    async fn tenant(&self, name: &str) -> Result<TenantRecord> {
        let row = sqlx::query(&format!(
            "SELECT {TENANT_COLUMNS} FROM tenants WHERE name = ?"
        ))
        .bind(name)
        .fetch_optional(&self.reader)
        .await?
        .ok_or_else(|| rows::tenant_not_found(name))?;
        rows::tenant(&row)
    }

    async fn list_tenants(&self) -> Result<Vec<TenantRecord>> {
        let found = sqlx::query(&format!(
            "SELECT {TENANT_COLUMNS} FROM tenants ORDER BY name"
        ))
        .fetch_all(&self.reader)
        .await?;
        found.iter().map(rows::tenant).collect()
    }

    async fn set_secret(
        &self,
        tenant: &str,
        name: &str,
        value: &str,
        now_ms: i64,
    ) -> Result<SecretRecord> {
        self.tenant(tenant).await?;
        let row = sqlx::query(
            "INSERT INTO secrets (tenant, name, value, updated_at) VALUES (?, ?, ?, ?) \
             ON CONFLICT (tenant, name) DO UPDATE SET value = excluded.value, \
             updated_at = excluded.updated_at RETURNING tenant, name, updated_at",
        )
        .bind(tenant)
        .bind(name)
        .bind(value)
        .bind(now_ms)
        .fetch_one(&self.writer)
        .await?;
        rows::secret(&row)
    }

    async fn delete_secret(&self, tenant: &str, name: &str) -> Result<()> {
        let deleted = sqlx::query("DELETE FROM secrets WHERE tenant = ? AND name = ?")
            .bind(tenant)
            .bind(name)
            .execute(&self.writer)
            .await?;
        if deleted.rows_affected() == 0 {
            return Err(rows::secret_not_found(tenant, name));
        }
        Ok(())
    }

    async fn list_secrets(&self, tenant: &str) -> Result<Vec<SecretRecord>> {
        self.tenant(tenant).await?;
        let found = sqlx::query(
            "SELECT tenant, name, updated_at FROM secrets WHERE tenant = ? ORDER BY name",
        )
        .bind(tenant)
        .fetch_all(&self.reader)
        .await?;
        found.iter().map(rows::secret).collect()
    }

    async fn secret_values(&self, tenant: &str) -> Result<Vec<(String, String)>> {
        Ok(
            sqlx::query_as("SELECT name, value FROM secrets WHERE tenant = ? ORDER BY name")
                .bind(tenant)
                .fetch_all(&self.reader)
                .await?,
        )
    }

    async fn add_api_key(&self, key: &ApiKeyRecord, hash: &str) -> Result<()> {
        self.tenant(&key.tenant).await?;
        sqlx::query("INSERT INTO api_keys (id, tenant, hash, created_at) VALUES (?, ?, ?, ?)")
            .bind(&key.id)
            .bind(&key.tenant)
            .bind(hash)
            .bind(key.created_at_ms)
            .execute(&self.writer)
            .await?;
        Ok(())
    }

    async fn revoke_api_key(&self, id: &str, now_ms: i64) -> Result<ApiKeyRecord> {
        let row = sqlx::query(&format!(
            "UPDATE api_keys SET revoked_at = COALESCE(revoked_at, ?) WHERE id = ? \
             RETURNING {API_KEY_COLUMNS}"
        ))
        .bind(now_ms)
        .bind(id)
        .fetch_optional(&self.writer)
        .await?
        .ok_or_else(|| rows::api_key_not_found(id))?;
        rows::api_key(&row)
    }

    async fn list_api_keys(&self, tenant: &str) -> Result<Vec<ApiKeyRecord>> {
        self.tenant(tenant).await?;
        let found = sqlx::query(&format!(
            "SELECT {API_KEY_COLUMNS} FROM api_keys WHERE tenant = ? ORDER BY created_at, id"
        ))
        .bind(tenant)
        .fetch_all(&self.reader)
        .await?;
        found.iter().map(rows::api_key).collect()
    }

    async fn tenant_by_key(&self, hash: &str) -> Result<Option<TenantRecord>> {
        let row = sqlx::query(&format!(
            "SELECT {TENANT_COLUMNS} FROM tenants WHERE name = \
             (SELECT tenant FROM api_keys WHERE hash = ? AND revoked_at IS NULL)"
        ))
        .bind(hash)
        .fetch_optional(&self.reader)
        .await?;
        row.as_ref().map(rows::tenant).transpose()
    }

    async fn count_open_executions(&self, tenant: &str) -> Result<i64> {
        Ok(sqlx::query_scalar(
            "SELECT COUNT(*) FROM executions WHERE tenant = ? \
             AND status IN ('pending', 'running', 'waiting')",
        )
        .bind(tenant)
        .fetch_one(&self.reader)
        .await?)
    }

    async fn put_package(
        &self,
        tenant: &str,
        name: &str,
        sha256: &str,
        bytes: &[u8],
        info: &Value,
        now_ms: i64,
    ) -> Result<PackageRecord> {
        let mut tx = self.writer.begin_with("BEGIN IMMEDIATE").await?;
        if let Some(row) = sqlx::query(&format!(
            "SELECT {PACKAGE_COLUMNS} FROM packages WHERE tenant = ? AND name = ? AND sha256 = ? \
             ORDER BY version DESC LIMIT 1"
        ))
        .bind(tenant)
        .bind(name)
        .bind(sha256)
        .fetch_optional(&mut *tx)
        .await?
        {
            return rows::package(&row);
        }
        sqlx::query(
            "INSERT INTO package_blobs (sha256, bytes) VALUES (?, ?) ON CONFLICT DO NOTHING",
        )
        .bind(sha256)
        .bind(bytes)
        .execute(&mut *tx)
        .await?;
        let version: i64 = sqlx::query_scalar(
            "SELECT COALESCE(MAX(version), 0) + 1 FROM packages WHERE tenant = ? AND name = ?",
        )
        .bind(tenant)
        .bind(name)
        .fetch_one(&mut *tx)
        .await?;
        let row = sqlx::query(&format!(
            "INSERT INTO packages (tenant, sha256, name, version, size, info, created_at) \
             VALUES (?, ?, ?, ?, ?, ?, ?) RETURNING {PACKAGE_COLUMNS}",
        ))
        .bind(tenant)
        .bind(sha256)
        .bind(name)
        .bind(version)
        .bind(bytes.len() as i64)
        .bind(info.to_string())
        .bind(now_ms)
        .fetch_one(&mut *tx)
        .await?;
        tx.commit().await?;
        rows::package(&row)
    }

    async fn package(&self, tenant: &str, sha256: &str) -> Result<PackageRecord> {
        let row = sqlx::query(&format!(
            "SELECT {PACKAGE_COLUMNS} FROM packages WHERE tenant = ? AND sha256 = ? \
             ORDER BY created_at DESC, version DESC LIMIT 1"
        ))
        .bind(tenant)
        .bind(sha256)
        .fetch_optional(&self.reader)
        .await?
        .ok_or_else(|| rows::package_not_found(sha256))?;
        rows::package(&row)
    }

    async fn package_bytes(&self, sha256: &str) -> Result<Vec<u8>> {
        sqlx::query_scalar("SELECT bytes FROM package_blobs WHERE sha256 = ?")
            .bind(sha256)
            .fetch_optional(&self.reader)
            .await?
            .ok_or_else(|| rows::package_not_found(sha256))
    }

    async fn list_packages(&self, tenant: &str) -> Result<Vec<PackageRecord>> {
        let found = sqlx::query(&format!(
            "SELECT {PACKAGE_COLUMNS} FROM packages WHERE tenant = ? ORDER BY name, version"
        ))
        .bind(tenant)
        .fetch_all(&self.reader)
        .await?;
        found.iter().map(rows::package).collect()
    }

    async fn find_package(
        &self,
        tenant: &str,
        name: &str,
        version: Option<i64>,
    ) -> Result<PackageRecord> {
        let row = sqlx::query(&format!(
            "SELECT {PACKAGE_COLUMNS} FROM packages WHERE tenant = ?1 AND name = ?2 \
             AND (?3 IS NULL OR version = ?3) ORDER BY version DESC LIMIT 1"
        ))
        .bind(tenant)
        .bind(name)
        .bind(version)
        .fetch_optional(&self.reader)
        .await?;
        if let Some(row) = row {
            return rows::package(&row);
        }
        let versions: Vec<String> = sqlx::query_scalar(
            "SELECT CAST(version AS TEXT) FROM packages WHERE tenant = ? AND name = ? \
             ORDER BY version",
        )
        .bind(tenant)
        .bind(name)
        .fetch_all(&self.reader)
        .await?;
        if !versions.is_empty() {
            return Err(rows::no_package_named(name, version, &versions));
        }
        let names: Vec<String> =
            sqlx::query_scalar("SELECT DISTINCT name FROM packages WHERE tenant = ? ORDER BY name")
                .bind(tenant)
                .fetch_all(&self.reader)
                .await?;
        Err(rows::no_package_named(name, None, &names))
    }

    async fn create_execution(
        &self,
        new: NewExecution,
        now_ms: i64,
        owner: Option<(&str, i64)>,
    ) -> Result<ExecutionRecord> {
        let insert = format!(
            "INSERT INTO executions (id, tenant, package_sha256, package_name, package_version, \
             workflow, input, idempotency_key, status, created_at, updated_at, wake_at, owner, \
             lease_expires_at, epoch) \
             SELECT ?, tenant, sha256, name, version, ?, ?, ?, ?, ?, ?, ?, ?, ?, ? FROM packages \
             WHERE tenant = ? AND name = ? AND version = ? \
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
            .bind(&new.tenant)
            .bind(&new.package_name)
            .bind(new.package_version);
        let missing = || rows::package_not_found(&new.package_sha256);
        let Some(key) = &new.idempotency_key else {
            // One statement: atomic without a transaction.
            let row = query
                .fetch_optional(&self.writer)
                .await?
                .ok_or_else(missing)?;
            return rows::execution(&row);
        };
        let mut tx = self.writer.begin_with("BEGIN IMMEDIATE").await?;
        let existing: Option<String> = sqlx::query_scalar(
            "SELECT id FROM executions WHERE tenant = ? AND idempotency_key = ?",
        )
        .bind(&new.tenant)
        .bind(key)
        .fetch_optional(&mut *tx)
        .await?;
        if let Some(id) = existing {
            return execution_in(&mut tx, &id).await;
        }
        let row = query.fetch_optional(&mut *tx).await?.ok_or_else(missing)?;
        tx.commit().await?;
        rows::execution(&row)
    }

    async fn execution(&self, id: &str) -> Result<ExecutionRecord> {
        let mut conn = self.reader.acquire().await?;
        execution_in(&mut conn, id).await
    }

    async fn list_executions(&self, filter: &ListFilter) -> Result<Vec<ExecutionRecord>> {
        let found = sqlx::query(&format!(
            "SELECT {EXECUTION_COLUMNS} FROM executions \
             WHERE (?1 IS NULL OR status = ?1) AND (?2 IS NULL OR workflow = ?2) \
             AND (?3 IS NULL OR tenant = ?3) AND (?4 IS NULL OR package_name = ?4) \
             AND (?5 IS NULL OR created_at < ?5 OR (created_at = ?5 AND id < ?6)) \
             ORDER BY created_at DESC, id DESC LIMIT ?7"
        ))
        .bind(filter.status.map(Status::as_str))
        .bind(&filter.workflow)
        .bind(&filter.tenant)
        .bind(&filter.package)
        .bind(filter.after.as_ref().map(|a| a.0))
        .bind(filter.after.as_ref().map(|a| a.1.as_str()))
        .bind(if filter.limit > 0 { filter.limit } else { 100 })
        .fetch_all(&self.reader)
        .await?;
        found.iter().map(rows::execution).collect()
    }

    async fn journal(&self, id: &str, after_seq: i64) -> Result<Vec<Entry>> {
        let found = sqlx::query(&format!(
            "SELECT {ENTRY_COLUMNS} FROM journal WHERE execution_id = ? AND seq > ? ORDER BY seq"
        ))
        .bind(id)
        .bind(after_seq)
        .fetch_all(&self.reader)
        .await?;
        found.iter().map(rows::entry).collect()
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
            // Hibernated executions first, in a statement of their own: a
            // claim tells whether the execution was hibernated (SQLite's
            // RETURNING cannot see the status it replaced).
            let mut claims = Vec::new();
            for (resumed, due) in [
                (
                    true,
                    "SELECT id FROM executions WHERE status = 'waiting' AND wake_at <= ?2 LIMIT ?4",
                ),
                (
                    false,
                    "SELECT id FROM executions WHERE status = 'pending' AND wake_at <= ?2 \
                     UNION ALL \
                     SELECT id FROM executions WHERE status = 'running' AND lease_expires_at < ?2 \
                     LIMIT ?4",
                ),
            ] {
                let left = limit - claims.len() as i64;
                if left <= 0 {
                    break;
                }
                let mut claim = c.prepare_cached(&format!(
                    "UPDATE executions SET owner = ?1, lease_expires_at = ?2 + ?3, \
                     epoch = epoch + 1, status = 'running', wake_at = NULL, updated_at = ?2 \
                     WHERE id IN ({due}) RETURNING id, epoch, signals"
                ))?;
                let rows =
                    claim.query_map(rusqlite::params![owner, now_ms, lease_ms, left], |r| {
                        Ok(Claim {
                            execution_id: r.get(0)?,
                            epoch: r.get(1)?,
                            signals: r.get(2)?,
                            resumed,
                        })
                    })?;
                for row in rows {
                    claims.push(row?);
                }
            }
            Ok(claims)
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

    async fn approvals(&self, execution_id: &str) -> Result<Vec<ApprovalRecord>> {
        let found = sqlx::query(&format!(
            "SELECT {APPROVAL_COLUMNS} FROM approvals \
             WHERE execution_id = ? ORDER BY created_at, key"
        ))
        .bind(execution_id)
        .fetch_all(&self.reader)
        .await?;
        found.iter().map(rows::approval).collect()
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
        let row = sqlx::query(&format!(
            "SELECT {APPROVAL_COLUMNS} FROM approvals \
             WHERE execution_id = ? AND key = ?"
        ))
        .bind(execution_id)
        .bind(key)
        .fetch_optional(&mut *tx)
        .await?;
        let (status, value) = rows::decision_columns(decision);
        let Some(row) = row else {
            let pending: Vec<String> = sqlx::query_scalar(
                "SELECT key FROM approvals WHERE execution_id = ? AND status = 'pending' ORDER BY key",
            )
            .bind(execution_id)
            .fetch_all(&mut *tx)
            .await?;
            return Err(rows::not_waiting_for(&execution, key, &pending));
        };
        let current = rows::approval(&row)?;
        if current.status != "pending" {
            return rows::decided_already(current, status, &value);
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
        let row = sqlx::query(&format!(
            "SELECT {APPROVAL_COLUMNS} FROM approvals \
             WHERE execution_id = ? AND key = ?"
        ))
        .bind(execution_id)
        .bind(key)
        .fetch_optional(&mut *tx)
        .await?
        .ok_or_else(|| Error::NotFound(format!("no approval '{key}' on {execution_id}")))?;
        tx.commit().await?;
        rows::approval(&row)
    }

    async fn request_cancel(&self, execution_id: &str, now_ms: i64) -> Result<ExecutionRecord> {
        let mut tx = self.writer.begin_with("BEGIN IMMEDIATE").await?;
        let execution = execution_in(&mut tx, execution_id).await?;
        if execution.status.is_terminal() {
            return Err(rows::nothing_to_cancel(&execution));
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
        rows::check_retryable(&execution)?;
        let seq: i64 = sqlx::query_scalar(
            "SELECT COALESCE(MAX(seq), 0) + 1 FROM journal WHERE execution_id = ?",
        )
        .bind(execution_id)
        .fetch_one(&mut *tx)
        .await?;
        let entry = rows::retried_entry(&execution, seq, now_ms);
        insert_entry(&mut tx, execution_id, &entry).await?;
        sqlx::query(
            "UPDATE executions SET status = 'pending', result = NULL, error = NULL, owner = NULL, \
             engine_failures = 0, engine_error = NULL, \
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
        let found = sqlx::query(
            "SELECT status, COUNT(*) AS n FROM executions GROUP BY status ORDER BY status",
        )
        .fetch_all(&self.reader)
        .await?;
        found
            .iter()
            .map(|r| Ok((r.try_get("status")?, r.try_get("n")?)))
            .collect()
    }
}
