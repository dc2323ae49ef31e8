//! The PostgreSQL store: one database shared by any number of engine nodes.
//!
//! PostgreSQL is the distributed substrate (DESIGN.md "Scheduler and
//! nodes"): row locks serialise a node's fenced commit with another node's
//! claim of the same execution, claims skip rows another node has locked
//! (`FOR UPDATE SKIP LOCKED`), and a trigger sends `NOTIFY cerebelum_due`
//! when an execution becomes claimable, which every node `LISTEN`s to.
//!
//! A group commit is one transaction of a few statements whatever its
//! size: the fencing check locks all its executions in one query, and the
//! journal rows, creations and status changes go in as arrays (`UNNEST`).
//!
//! Lock order, to rule out deadlocks: every statement that locks several
//! execution rows locks them in id order (`ORDER BY id FOR UPDATE`), and
//! execution rows are locked before approval rows. Claims never wait
//! (`SKIP LOCKED`).

use super::rows::{
    self, API_KEY_COLUMNS, APPROVAL_COLUMNS, ENTRY_COLUMNS, EXECUTION_COLUMNS, PACKAGE_COLUMNS,
    TENANT_COLUMNS,
};
use super::{EngineFailure, Store, Synchronous};
use crate::error::{Error, Result};
use crate::model::{
    ApiKeyRecord, ApprovalRecord, Claim, CommitOp, Decision, Entry, ExecutionRecord, ListFilter,
    NewExecution, PackageRecord, Quotas, SecretRecord, SideWrite, StatusChange, TenantRecord,
};
use async_trait::async_trait;
use serde_json::Value;
use sqlx::postgres::{PgConnectOptions, PgListener, PgPool, PgPoolOptions};
use sqlx::{PgConnection, Row};
use std::collections::{HashMap, HashSet};
use std::str::FromStr;
use std::time::Duration;

/// The channel the `executions_due_notify` trigger notifies.
const DUE_CHANNEL: &str = "cerebelum_due";

/// PostgreSQL-backed [`Store`].
pub struct PgStore {
    pool: PgPool,
}

/// `url` with its password masked, for messages and logs.
pub(crate) fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let (authority, tail) = match rest.find('/') {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    match authority.rsplit_once('@') {
        Some((user, host)) => match user.split_once(':') {
            Some((name, _password)) => format!("{scheme}://{name}:***@{host}{tail}"),
            None => url.to_owned(),
        },
        None => url.to_owned(),
    }
}

impl PgStore {
    /// Connects to the database at `url` and migrates it. `sync`: `full`
    /// waits for PostgreSQL's WAL flush on every commit; `normal` does not
    /// (`synchronous_commit = off`: survives a crash of engine nodes, not
    /// of the PostgreSQL server).
    pub async fn open(url: &str, sync: Synchronous) -> Result<Self> {
        let shown = redact(url);
        let mut options = PgConnectOptions::from_str(url).map_err(|e| {
            Error::InvalidInput(format!(
                "invalid PostgreSQL URL {shown}: {e}; expected \
                 postgres://USER[:PASSWORD]@HOST[:PORT]/DATABASE"
            ))
        })?;
        options = options.application_name("cerebelum");
        if sync == Synchronous::Normal {
            options = options.options([("synchronous_commit", "off")]);
        }
        // One connection first, to report the real failure (the pool
        // would retry until its timeout and say only that it timed out).
        let probe = tokio::time::timeout(
            Duration::from_secs(10),
            sqlx::ConnectOptions::connect(&options),
        )
        .await;
        let cannot = |why: String| {
            Error::InvalidInput(format!("cannot connect to PostgreSQL at {shown}: {why}"))
        };
        match probe {
            Err(_) => return Err(cannot("no answer within 10 s".into())),
            Ok(Err(sqlx::Error::Database(e))) if e.code().as_deref() == Some("3D000") => {
                return Err(cannot(format!(
                    "{}; create it first (e.g. `createdb`) or name another database",
                    e.message()
                )));
            }
            Ok(Err(e)) => return Err(cannot(e.to_string())),
            Ok(Ok(conn)) => sqlx::Connection::close(conn).await?,
        }
        let pool = PgPoolOptions::new()
            .max_connections(8)
            .min_connections(1)
            .acquire_timeout(Duration::from_secs(10))
            .connect_with(options)
            .await
            .map_err(|e| cannot(e.to_string()))?;
        // sqlx serialises concurrent migrations with an advisory lock, so
        // nodes starting together on a fresh database are safe.
        sqlx::migrate!("./migrations/postgres")
            .run(&pool)
            .await
            .map_err(|e| rows::migrate_error(&shown, e))?;
        Ok(Self { pool })
    }
}

async fn execution_in(conn: &mut PgConnection, id: &str, lock: bool) -> Result<ExecutionRecord> {
    let row = sqlx::query(&format!(
        "SELECT {EXECUTION_COLUMNS} FROM executions WHERE id = $1{}",
        if lock { " FOR UPDATE" } else { "" }
    ))
    .bind(id)
    .fetch_optional(&mut *conn)
    .await?
    .ok_or_else(|| rows::execution_not_found(id))?;
    rows::execution(&row)
}

/// The journal rows of a batch, column by column (for one `UNNEST` insert),
/// borrowing the batch's strings.
#[derive(Default)]
struct EntryColumns<'a> {
    execution_id: Vec<&'a str>,
    seq: Vec<i64>,
    invocation: Vec<&'a str>,
    kind: Vec<&'a str>,
    ref_seq: Vec<Option<i64>>,
    args_hash: Vec<Option<&'a str>>,
    payload: Vec<String>,
    at: Vec<i64>,
}

impl<'a> EntryColumns<'a> {
    fn push(&mut self, id: &'a str, e: &'a Entry) {
        self.execution_id.push(id);
        self.seq.push(e.seq);
        self.invocation.push(&e.invocation);
        self.kind.push(&e.kind);
        self.ref_seq.push(e.ref_seq);
        self.args_hash.push(e.args_hash.as_deref());
        self.payload.push(e.payload.to_string());
        self.at.push(e.at_ms);
    }

    async fn insert(self, conn: &mut PgConnection) -> Result<()> {
        if self.seq.is_empty() {
            return Ok(());
        }
        sqlx::query(
            "INSERT INTO journal (execution_id, seq, invocation, kind, ref_seq, args_hash, \
             payload, at) SELECT * FROM UNNEST($1::text[], $2::bigint[], $3::text[], $4::text[], \
             $5::bigint[], $6::text[], $7::text[], $8::bigint[])",
        )
        .bind(self.execution_id)
        .bind(self.seq)
        .bind(self.invocation)
        .bind(self.kind)
        .bind(self.ref_seq)
        .bind(self.args_hash)
        .bind(self.payload)
        .bind(self.at)
        .execute(&mut *conn)
        .await?;
        Ok(())
    }
}

/// Inserts the batch's new executions; returns the ids that were inserted
/// (the others name a package that does not exist).
async fn create_all(
    conn: &mut PgConnection,
    ops: &[CommitOp],
    now_ms: i64,
) -> Result<HashSet<String>> {
    let mut id = Vec::new();
    let mut name = Vec::new();
    let mut version = Vec::new();
    let mut workflow = Vec::new();
    let mut input = Vec::new();
    let mut owner: Vec<Option<&str>> = Vec::new();
    let mut lease: Vec<Option<i64>> = Vec::new();
    let mut tenant = Vec::new();
    for c in ops.iter().filter_map(|op| op.create.as_ref()) {
        id.push(c.new.id.as_str());
        tenant.push(c.new.tenant.as_str());
        name.push(c.new.package_name.as_str());
        version.push(c.new.package_version);
        workflow.push(c.new.workflow.as_str());
        input.push(c.new.input.to_string());
        owner.push(c.owner.as_ref().map(|o| o.0.as_str()));
        lease.push(c.owner.as_ref().map(|o| o.1));
    }
    if id.is_empty() {
        return Ok(HashSet::new());
    }
    // Owned: running at epoch 1, else pending and due now at epoch 0.
    let inserted = sqlx::query_scalar(
        "INSERT INTO executions (id, tenant, package_sha256, package_name, package_version, \
         workflow, input, status, created_at, updated_at, wake_at, owner, lease_expires_at, epoch) \
         SELECT n.id, p.tenant, p.sha256, p.name, p.version, n.workflow, n.input, \
           CASE WHEN n.owner IS NULL THEN 'pending' ELSE 'running' END, $7, $7, \
           CASE WHEN n.owner IS NULL THEN $7 END, n.owner, n.lease, \
           CASE WHEN n.owner IS NULL THEN 0 ELSE 1 END \
         FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::bigint[], \
           $8::text[], $9::bigint[]) AS n (id, name, workflow, input, owner, lease, tenant, version) \
         JOIN packages p ON p.tenant = n.tenant AND p.name = n.name AND p.version = n.version \
         RETURNING id",
    )
    .bind(id)
    .bind(name)
    .bind(workflow)
    .bind(input)
    .bind(owner)
    .bind(lease)
    .bind(now_ms)
    .bind(tenant)
    .bind(version)
    .fetch_all(&mut *conn)
    .await?;
    Ok(inserted.into_iter().collect())
}

/// One transaction for the whole batch; each operation fenced by its epoch.
async fn commit_batch(
    conn: &mut PgConnection,
    ops: &[CommitOp],
    now_ms: i64,
) -> Result<Vec<Result<()>>> {
    let created = create_all(conn, ops, now_ms).await?;
    // Lock every execution of the batch, in id order (so two nodes
    // committing for the same executions cannot deadlock). A claim by
    // another node either happened before (the epoch moved on: fenced) or
    // waits for this transaction; it never interleaves with it.
    let mut ids: Vec<&str> = ops
        .iter()
        .filter(|op| op.create.is_none())
        .map(|op| op.execution_id.as_str())
        .collect();
    ids.sort_unstable();
    ids.dedup();
    let epochs: HashMap<String, i64> = if ids.is_empty() {
        HashMap::new()
    } else {
        sqlx::query_as("SELECT id, epoch FROM executions WHERE id = ANY($1) ORDER BY id FOR UPDATE")
            .bind(&ids)
            .fetch_all(&mut *conn)
            .await?
            .into_iter()
            .collect()
    };
    let mut owned: HashMap<(&str, i64), bool> = HashMap::new();
    let mut results = Vec::with_capacity(ops.len());
    let mut entries = EntryColumns::default();
    let mut applied: Vec<&CommitOp> = Vec::new();
    for op in ops {
        let key = (op.execution_id.as_str(), op.epoch);
        if let Some(creation) = &op.create {
            if !created.contains(&op.execution_id) {
                results.push(Err(rows::package_not_found(&creation.new.package_sha256)));
                continue;
            }
            owned.insert(key, true);
        }
        let is_owned = *owned
            .entry(key)
            .or_insert_with(|| epochs.get(&op.execution_id) == Some(&op.epoch));
        if !is_owned {
            results.push(Err(Error::LostOwnership(op.execution_id.clone())));
            continue;
        }
        for e in &op.entries {
            entries.push(&op.execution_id, e);
        }
        if op.status.is_some() {
            // Ownership ends with a status change.
            owned.insert(key, false);
        }
        applied.push(op);
        results.push(Ok(()));
    }
    entries.insert(conn).await?;
    for op in &applied {
        for side in &op.side {
            side_write(conn, &op.execution_id, side, now_ms).await?;
        }
    }
    status_changes(conn, &applied, now_ms).await?;
    Ok(results)
}

async fn side_write(
    conn: &mut PgConnection,
    id: &str,
    side: &SideWrite,
    now_ms: i64,
) -> Result<()> {
    match side {
        SideWrite::OpenApproval { key, request } => {
            sqlx::query(
                "INSERT INTO approvals (execution_id, key, status, request, created_at) \
                 VALUES ($1, $2, 'pending', $3, $4) ON CONFLICT (execution_id, key) DO NOTHING",
            )
            .bind(id)
            .bind(key)
            .bind(request.to_string())
            .bind(now_ms)
            .execute(&mut *conn)
            .await?;
        }
        SideWrite::CloseApproval { key, status } => {
            sqlx::query(
                "UPDATE approvals SET status = $1, decided_at = $2 \
                 WHERE execution_id = $3 AND key = $4 AND status = 'pending'",
            )
            .bind(status)
            .bind(now_ms)
            .bind(id)
            .bind(key)
            .execute(&mut *conn)
            .await?;
        }
    }
    Ok(())
}

/// Hibernations and finishes of the batch, one statement each.
async fn status_changes(conn: &mut PgConnection, ops: &[&CommitOp], now_ms: i64) -> Result<()> {
    let (mut wait_ids, mut wake_at, mut seen) = (Vec::new(), Vec::new(), Vec::new());
    let (mut done_ids, mut status, mut result, mut error) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for op in ops {
        match &op.status {
            None => {}
            Some(StatusChange::Waiting {
                wake_at_ms,
                seen_signals,
            }) => {
                wait_ids.push(op.execution_id.clone());
                wake_at.push(*wake_at_ms);
                seen.push(*seen_signals);
            }
            Some(StatusChange::Finished {
                status: s,
                result: r,
                error: e,
            }) => {
                done_ids.push(op.execution_id.clone());
                status.push(s.as_str().to_owned());
                result.push(r.as_ref().map(Value::to_string));
                error.push(e.as_ref().map(Value::to_string));
            }
        }
    }
    if !wait_ids.is_empty() {
        // An approval or cancel that arrived since the claim makes it due now.
        sqlx::query(
            "UPDATE executions e SET status = 'waiting', owner = NULL, lease_expires_at = NULL, \
             engine_failures = 0, engine_error = NULL, \
             wake_at = CASE WHEN e.signals != w.seen THEN $4 ELSE w.wake_at END, updated_at = $4 \
             FROM UNNEST($1::text[], $2::bigint[], $3::bigint[]) AS w (id, wake_at, seen) \
             WHERE e.id = w.id",
        )
        .bind(wait_ids)
        .bind(wake_at)
        .bind(seen)
        .bind(now_ms)
        .execute(&mut *conn)
        .await?;
    }
    if !done_ids.is_empty() {
        sqlx::query(
            "UPDATE executions e SET status = d.status, result = d.result, error = d.error, \
             owner = NULL, lease_expires_at = NULL, wake_at = NULL, engine_failures = 0, \
             engine_error = NULL, updated_at = $5 \
             FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[]) \
               AS d (id, status, result, error) \
             WHERE e.id = d.id",
        )
        .bind(done_ids)
        .bind(status)
        .bind(result)
        .bind(error)
        .bind(now_ms)
        .execute(&mut *conn)
        .await?;
    }
    Ok(())
}

#[async_trait]
impl Store for PgStore {
    async fn create_tenant(
        &self,
        name: &str,
        quotas: &Quotas,
        http_allow: &[String],
        now_ms: i64,
    ) -> Result<TenantRecord> {
        let row = sqlx::query(&format!(
            "INSERT INTO tenants (name, created_at, max_package_bytes, max_open_executions, \
             max_payload_bytes, limits) VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (name) \
             DO NOTHING RETURNING {TENANT_COLUMNS}"
        ))
        .bind(name)
        .bind(now_ms)
        .bind(quotas.max_package_bytes)
        .bind(quotas.max_open_executions)
        .bind(quotas.max_payload_bytes)
        .bind(rows::limits_json(quotas, http_allow))
        .fetch_optional(&self.pool)
        .await?
        .ok_or_else(|| rows::tenant_exists(name))?;
        rows::tenant(&row)
    }

    async fn update_tenant(
        &self,
        name: &str,
        quotas: &Quotas,
        http_allow: &[String],
    ) -> Result<TenantRecord> {
        let row = sqlx::query(&format!(
            "UPDATE tenants SET max_package_bytes = $1, max_open_executions = $2, \
             max_payload_bytes = $3, limits = $4 WHERE name = $5 RETURNING {TENANT_COLUMNS}"
        ))
        .bind(quotas.max_package_bytes)
        .bind(quotas.max_open_executions)
        .bind(quotas.max_payload_bytes)
        .bind(rows::limits_json(quotas, http_allow))
        .bind(name)
        .fetch_optional(&self.pool)
        .await?
        .ok_or_else(|| rows::tenant_not_found(name))?;
        rows::tenant(&row)
    }

    async fn tenant(&self, name: &str) -> Result<TenantRecord> {
        let row = sqlx::query(&format!(
            "SELECT {TENANT_COLUMNS} FROM tenants WHERE name = $1"
        ))
        .bind(name)
        .fetch_optional(&self.pool)
        .await?
        .ok_or_else(|| rows::tenant_not_found(name))?;
        rows::tenant(&row)
    }

    async fn list_tenants(&self) -> Result<Vec<TenantRecord>> {
        let found = sqlx::query(&format!(
            "SELECT {TENANT_COLUMNS} FROM tenants ORDER BY name"
        ))
        .fetch_all(&self.pool)
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
            "INSERT INTO secrets (tenant, name, value, updated_at) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (tenant, name) DO UPDATE SET value = excluded.value, \
             updated_at = excluded.updated_at RETURNING tenant, name, updated_at",
        )
        .bind(tenant)
        .bind(name)
        .bind(value)
        .bind(now_ms)
        .fetch_one(&self.pool)
        .await?;
        rows::secret(&row)
    }

    async fn delete_secret(&self, tenant: &str, name: &str) -> Result<()> {
        let deleted = sqlx::query("DELETE FROM secrets WHERE tenant = $1 AND name = $2")
            .bind(tenant)
            .bind(name)
            .execute(&self.pool)
            .await?;
        if deleted.rows_affected() == 0 {
            return Err(rows::secret_not_found(tenant, name));
        }
        Ok(())
    }

    async fn list_secrets(&self, tenant: &str) -> Result<Vec<SecretRecord>> {
        self.tenant(tenant).await?;
        let found = sqlx::query(
            "SELECT tenant, name, updated_at FROM secrets WHERE tenant = $1 ORDER BY name",
        )
        .bind(tenant)
        .fetch_all(&self.pool)
        .await?;
        found.iter().map(rows::secret).collect()
    }

    async fn secret_values(&self, tenant: &str) -> Result<Vec<(String, String)>> {
        Ok(
            sqlx::query_as("SELECT name, value FROM secrets WHERE tenant = $1 ORDER BY name")
                .bind(tenant)
                .fetch_all(&self.pool)
                .await?,
        )
    }

    async fn add_api_key(&self, key: &ApiKeyRecord, hash: &str) -> Result<()> {
        self.tenant(&key.tenant).await?;
        sqlx::query("INSERT INTO api_keys (id, tenant, hash, created_at) VALUES ($1, $2, $3, $4)")
            .bind(&key.id)
            .bind(&key.tenant)
            .bind(hash)
            .bind(key.created_at_ms)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn revoke_api_key(&self, id: &str, now_ms: i64) -> Result<ApiKeyRecord> {
        let row = sqlx::query(&format!(
            "UPDATE api_keys SET revoked_at = COALESCE(revoked_at, $1) WHERE id = $2 \
             RETURNING {API_KEY_COLUMNS}"
        ))
        .bind(now_ms)
        .bind(id)
        .fetch_optional(&self.pool)
        .await?
        .ok_or_else(|| rows::api_key_not_found(id))?;
        rows::api_key(&row)
    }

    async fn list_api_keys(&self, tenant: &str) -> Result<Vec<ApiKeyRecord>> {
        self.tenant(tenant).await?;
        let found = sqlx::query(&format!(
            "SELECT {API_KEY_COLUMNS} FROM api_keys WHERE tenant = $1 ORDER BY created_at, id"
        ))
        .bind(tenant)
        .fetch_all(&self.pool)
        .await?;
        found.iter().map(rows::api_key).collect()
    }

    async fn tenant_by_key(&self, hash: &str) -> Result<Option<TenantRecord>> {
        let row = sqlx::query(&format!(
            "SELECT {TENANT_COLUMNS} FROM tenants WHERE name = \
             (SELECT tenant FROM api_keys WHERE hash = $1 AND revoked_at IS NULL)"
        ))
        .bind(hash)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(rows::tenant).transpose()
    }

    async fn count_open_executions(&self, tenant: &str) -> Result<i64> {
        Ok(sqlx::query_scalar(
            "SELECT COUNT(*) FROM executions WHERE tenant = $1 \
             AND status IN ('pending', 'running', 'waiting')",
        )
        .bind(tenant)
        .fetch_one(&self.pool)
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
        let mut tx = self.pool.begin().await?;
        // Uploads are rare: serialise them, so versions never collide.
        sqlx::query("SELECT pg_advisory_xact_lock(hashtext('cerebelum.packages'))")
            .execute(&mut *tx)
            .await?;
        if let Some(row) = sqlx::query(&format!(
            "SELECT {PACKAGE_COLUMNS} FROM packages WHERE tenant = $1 AND name = $2 \
             AND sha256 = $3 ORDER BY version DESC LIMIT 1"
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
            "INSERT INTO package_blobs (sha256, bytes) VALUES ($1, $2) ON CONFLICT DO NOTHING",
        )
        .bind(sha256)
        .bind(bytes)
        .execute(&mut *tx)
        .await?;
        let version: i64 = sqlx::query_scalar(
            "SELECT COALESCE(MAX(version), 0) + 1 FROM packages WHERE tenant = $1 AND name = $2",
        )
        .bind(tenant)
        .bind(name)
        .fetch_one(&mut *tx)
        .await?;
        let row = sqlx::query(&format!(
            "INSERT INTO packages (tenant, sha256, name, version, size, info, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING {PACKAGE_COLUMNS}"
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
            "SELECT {PACKAGE_COLUMNS} FROM packages WHERE tenant = $1 AND sha256 = $2 \
             ORDER BY created_at DESC, version DESC LIMIT 1"
        ))
        .bind(tenant)
        .bind(sha256)
        .fetch_optional(&self.pool)
        .await?
        .ok_or_else(|| rows::package_not_found(sha256))?;
        rows::package(&row)
    }

    async fn package_bytes(&self, sha256: &str) -> Result<Vec<u8>> {
        sqlx::query_scalar("SELECT bytes FROM package_blobs WHERE sha256 = $1")
            .bind(sha256)
            .fetch_optional(&self.pool)
            .await?
            .ok_or_else(|| rows::package_not_found(sha256))
    }

    async fn list_packages(&self, tenant: &str) -> Result<Vec<PackageRecord>> {
        let found = sqlx::query(&format!(
            "SELECT {PACKAGE_COLUMNS} FROM packages WHERE tenant = $1 ORDER BY name, version"
        ))
        .bind(tenant)
        .fetch_all(&self.pool)
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
            "SELECT {PACKAGE_COLUMNS} FROM packages WHERE tenant = $1 AND name = $2 \
             AND ($3::bigint IS NULL OR version = $3) ORDER BY version DESC LIMIT 1"
        ))
        .bind(tenant)
        .bind(name)
        .bind(version)
        .fetch_optional(&self.pool)
        .await?;
        if let Some(row) = row {
            return rows::package(&row);
        }
        let versions: Vec<String> = sqlx::query_scalar(
            "SELECT version::text FROM packages WHERE tenant = $1 AND name = $2 ORDER BY version",
        )
        .bind(tenant)
        .bind(name)
        .fetch_all(&self.pool)
        .await?;
        if !versions.is_empty() {
            return Err(rows::no_package_named(name, version, &versions));
        }
        let names: Vec<String> = sqlx::query_scalar(
            "SELECT DISTINCT name FROM packages WHERE tenant = $1 ORDER BY name",
        )
        .bind(tenant)
        .fetch_all(&self.pool)
        .await?;
        Err(rows::no_package_named(name, None, &names))
    }

    async fn create_execution(
        &self,
        new: NewExecution,
        now_ms: i64,
        owner: Option<(&str, i64)>,
    ) -> Result<ExecutionRecord> {
        let row = sqlx::query(&format!(
            "INSERT INTO executions (id, tenant, package_sha256, package_name, package_version, \
             workflow, input, idempotency_key, status, created_at, updated_at, wake_at, owner, \
             lease_expires_at, epoch) \
             SELECT $1, tenant, sha256, name, version, $2, $3, $4, $5, $6, $6, $7, $8, $9, $10 \
             FROM packages WHERE tenant = $12 AND name = $11 AND version = $13 \
             ON CONFLICT (tenant, idempotency_key) DO NOTHING \
             RETURNING {EXECUTION_COLUMNS}"
        ))
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
        .bind(if owner.is_some() { None } else { Some(now_ms) })
        .bind(owner.map(|o| o.0))
        .bind(owner.map(|o| o.1))
        .bind(if owner.is_some() { 1_i64 } else { 0 })
        .bind(&new.package_name)
        .bind(&new.tenant)
        .bind(new.package_version)
        .fetch_optional(&self.pool)
        .await?;
        if let Some(row) = row {
            return rows::execution(&row);
        }
        // Nothing inserted: the key was used before, or no such package.
        if let Some(key) = &new.idempotency_key
            && let Some(row) = sqlx::query(&format!(
                "SELECT {EXECUTION_COLUMNS} FROM executions \
                 WHERE tenant = $1 AND idempotency_key = $2"
            ))
            .bind(&new.tenant)
            .bind(key)
            .fetch_optional(&self.pool)
            .await?
        {
            return rows::execution(&row);
        }
        Err(rows::package_not_found(&new.package_sha256))
    }

    async fn execution(&self, id: &str) -> Result<ExecutionRecord> {
        let mut conn = self.pool.acquire().await?;
        execution_in(&mut conn, id, false).await
    }

    async fn list_executions(&self, filter: &ListFilter) -> Result<Vec<ExecutionRecord>> {
        let found = sqlx::query(&format!(
            "SELECT {EXECUTION_COLUMNS} FROM executions \
             WHERE ($1::text IS NULL OR status = $1) AND ($2::text IS NULL OR workflow = $2) \
             AND ($3::text IS NULL OR tenant = $3) AND ($4::text IS NULL OR package_name = $4) \
             AND ($5::bigint IS NULL OR (created_at, id) < ($5, $6::text)) \
             ORDER BY created_at DESC, id DESC LIMIT $7"
        ))
        .bind(filter.status.map(|s| s.as_str()))
        .bind(&filter.workflow)
        .bind(&filter.tenant)
        .bind(&filter.package)
        .bind(filter.after.as_ref().map(|a| a.0))
        .bind(filter.after.as_ref().map(|a| a.1.as_str()))
        .bind(if filter.limit > 0 { filter.limit } else { 100 })
        .fetch_all(&self.pool)
        .await?;
        found.iter().map(rows::execution).collect()
    }

    async fn journal(&self, id: &str, after_seq: i64) -> Result<Vec<Entry>> {
        let found = sqlx::query(&format!(
            "SELECT {ENTRY_COLUMNS} FROM journal WHERE execution_id = $1 AND seq > $2 ORDER BY seq"
        ))
        .bind(id)
        .bind(after_seq)
        .fetch_all(&self.pool)
        .await?;
        found.iter().map(rows::entry).collect()
    }

    async fn commit(&self, ops: Vec<CommitOp>, now_ms: i64) -> Result<Vec<Result<()>>> {
        let mut tx = self.pool.begin().await?;
        let results = commit_batch(&mut tx, &ops, now_ms).await?;
        tx.commit().await?;
        Ok(results)
    }

    async fn claim_due(
        &self,
        owner: &str,
        now_ms: i64,
        lease_ms: i64,
        limit: i64,
    ) -> Result<Vec<Claim>> {
        let claimed = sqlx::query_as::<_, (String, i64, i64, bool)>(
            "UPDATE executions e SET owner = $1, lease_expires_at = $2 + $3, epoch = e.epoch + 1, \
             status = 'running', wake_at = NULL, updated_at = $2 \
             FROM (SELECT id, status = 'waiting' AS resumed FROM executions \
                   WHERE (status IN ('pending', 'waiting') AND wake_at <= $2) \
                      OR (status = 'running' AND lease_expires_at < $2) \
                   LIMIT $4 FOR UPDATE SKIP LOCKED) due \
             WHERE e.id = due.id \
             RETURNING e.id, e.epoch, e.signals, due.resumed",
        )
        .bind(owner)
        .bind(now_ms)
        .bind(lease_ms)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        Ok(claimed
            .into_iter()
            .map(|(execution_id, epoch, signals, resumed)| Claim {
                execution_id,
                epoch,
                signals,
                resumed,
            })
            .collect())
    }

    async fn renew_leases(&self, owner: &str, now_ms: i64, lease_ms: i64) -> Result<Vec<String>> {
        let renewed: Vec<(String, bool)> = sqlx::query_as(
            "UPDATE executions SET lease_expires_at = $1 WHERE id IN ( \
               SELECT id FROM executions WHERE owner = $2 AND status = 'running' \
               ORDER BY id FOR UPDATE) \
             RETURNING id, cancel_requested",
        )
        .bind(now_ms + lease_ms)
        .bind(owner)
        .fetch_all(&self.pool)
        .await?;
        Ok(renewed
            .into_iter()
            .filter(|(_, cancel)| *cancel)
            .map(|(id, _)| id)
            .collect())
    }

    async fn abandon(&self, execution_id: &str, epoch: i64, failure: &EngineFailure) -> Result<()> {
        sqlx::query(
            "UPDATE executions SET owner = NULL, engine_failures = engine_failures + 1, \
             engine_error = $1, lease_expires_at = $2 + LEAST($3::bigint, \
               $4::bigint * (1::bigint << LEAST(engine_failures, 20)::int)) \
             WHERE id = $5 AND epoch = $6 AND status = 'running'",
        )
        .bind(&failure.error)
        .bind(failure.now_ms)
        .bind(failure.max_delay_ms)
        .bind(failure.base_delay_ms)
        .bind(execution_id)
        .bind(epoch)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn release_leases(&self, owner: &str) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        let released = sqlx::query(
            "UPDATE executions SET lease_expires_at = 0 WHERE id IN ( \
               SELECT id FROM executions WHERE owner = $1 AND status = 'running' \
               ORDER BY id FOR UPDATE)",
        )
        .bind(owner)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if released > 0 {
            // Claimable at once: tell the other nodes.
            sqlx::query("SELECT pg_notify($1, '')")
                .bind(DUE_CHANNEL)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn approvals(&self, execution_id: &str) -> Result<Vec<ApprovalRecord>> {
        let found = sqlx::query(&format!(
            "SELECT {APPROVAL_COLUMNS} FROM approvals WHERE execution_id = $1 \
             ORDER BY created_at, key"
        ))
        .bind(execution_id)
        .fetch_all(&self.pool)
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
        let mut tx = self.pool.begin().await?;
        // Execution row first, then approvals: the order a commit locks them.
        let execution = execution_in(&mut tx, execution_id, true).await?;
        let row = sqlx::query(&format!(
            "SELECT {APPROVAL_COLUMNS} FROM approvals WHERE execution_id = $1 AND key = $2 \
             FOR UPDATE"
        ))
        .bind(execution_id)
        .bind(key)
        .fetch_optional(&mut *tx)
        .await?;
        let (status, value) = rows::decision_columns(decision);
        let Some(row) = row else {
            let pending: Vec<String> = sqlx::query_scalar(
                "SELECT key FROM approvals WHERE execution_id = $1 AND status = 'pending' \
                 ORDER BY key",
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
            "UPDATE approvals SET status = $1, decision = $2, decided_at = $3 \
             WHERE execution_id = $4 AND key = $5",
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
             wake_at = CASE WHEN status = 'waiting' THEN $1 ELSE wake_at END WHERE id = $2",
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
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "UPDATE approvals SET status = 'timed-out', decided_at = $1 \
             WHERE execution_id = $2 AND key = $3 AND status = 'pending'",
        )
        .bind(now_ms)
        .bind(execution_id)
        .bind(key)
        .execute(&mut *tx)
        .await?;
        let row = sqlx::query(&format!(
            "SELECT {APPROVAL_COLUMNS} FROM approvals WHERE execution_id = $1 AND key = $2"
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
        let mut tx = self.pool.begin().await?;
        let execution = execution_in(&mut tx, execution_id, true).await?;
        if execution.status.is_terminal() {
            return Err(rows::nothing_to_cancel(&execution));
        }
        let row = sqlx::query(&format!(
            "UPDATE executions SET cancel_requested = TRUE, signals = signals + 1, \
             wake_at = CASE WHEN status IN ('waiting', 'pending') THEN $1 ELSE wake_at END \
             WHERE id = $2 RETURNING {EXECUTION_COLUMNS}"
        ))
        .bind(now_ms)
        .bind(execution_id)
        .fetch_one(&mut *tx)
        .await?;
        tx.commit().await?;
        rows::execution(&row)
    }

    async fn retry_execution(&self, execution_id: &str, now_ms: i64) -> Result<ExecutionRecord> {
        let mut tx = self.pool.begin().await?;
        let execution = execution_in(&mut tx, execution_id, true).await?;
        rows::check_retryable(&execution)?;
        let seq: i64 = sqlx::query_scalar(
            "SELECT COALESCE(MAX(seq), 0) + 1 FROM journal WHERE execution_id = $1",
        )
        .bind(execution_id)
        .fetch_one(&mut *tx)
        .await?;
        let retried = rows::retried_entry(&execution, seq, now_ms);
        let mut entries = EntryColumns::default();
        entries.push(execution_id, &retried);
        entries.insert(&mut tx).await?;
        let row = sqlx::query(&format!(
            "UPDATE executions SET status = 'pending', result = NULL, error = NULL, owner = NULL, \
             engine_failures = 0, engine_error = NULL, \
             lease_expires_at = NULL, wake_at = $1, epoch = epoch + 1, cancel_requested = FALSE, \
             updated_at = $1 WHERE id = $2 RETURNING {EXECUTION_COLUMNS}"
        ))
        .bind(now_ms)
        .bind(execution_id)
        .fetch_one(&mut *tx)
        .await?;
        tx.commit().await?;
        rows::execution(&row)
    }

    async fn count_by_status(&self) -> Result<Vec<(String, i64)>> {
        let found = sqlx::query(
            "SELECT status, COUNT(*) AS n FROM executions GROUP BY status ORDER BY status",
        )
        .fetch_all(&self.pool)
        .await?;
        found
            .iter()
            .map(|r| Ok((r.try_get("status")?, r.try_get("n")?)))
            .collect()
    }

    async fn listen_due(
        &self,
        due: super::DueCallback,
    ) -> Result<Option<tokio::task::JoinHandle<()>>> {
        let mut listener = PgListener::connect_with(&self.pool).await?;
        listener.listen(DUE_CHANNEL).await?;
        Ok(Some(tokio::spawn(async move {
            loop {
                // `try_recv` reconnects after a lost connection and returns
                // `None` once: notifications may have been missed, so look.
                match listener.try_recv().await {
                    Ok(_) => due(),
                    Err(e) => {
                        tracing::warn!(error = %e, "listening for due executions failed; polling until it recovers");
                        due();
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                }
            }
        })))
    }
}

#[cfg(test)]
mod tests {
    use super::redact;

    #[test]
    fn passwords_are_masked_in_urls() {
        assert_eq!(
            redact("postgres://me:s3cret@db:5432/x?sslmode=require"),
            "postgres://me:***@db:5432/x?sslmode=require"
        );
        assert_eq!(
            redact("postgres://me@db/x"),
            "postgres://me@db/x",
            "nothing to mask"
        );
        assert_eq!(redact("postgres://me:p@ss@db/x"), "postgres://me:***@db/x");
        assert_eq!(redact("cerebelum.db"), "cerebelum.db");
    }
}
