//! The SQL both backends share, written once over sqlx's [`Database`]:
//! the [`Catalog`] (tenants, API keys, secrets, packages), the
//! [`Executions`] side that clients read and act on (records, journals,
//! approvals, cancel, retry), the engine's creation of executions and its
//! approval timeouts.
//!
//! Placeholders are `$N` (SQLite accepts them as well as PostgreSQL) and
//! type hints are `CAST(… AS …)`, which both speak. What really differs is
//! a [`Dialect`]. The engine's hot path (group commits, claims, leases,
//! `LISTEN`) stays in each backend, where the SQL is not the same.

use super::rows::{
    self, API_KEY_COLUMNS, APPROVAL_COLUMNS, AUDIT_COLUMNS, Columns, ENTRY_COLUMNS,
    EXECUTION_COLUMNS, OPERATOR_KEY_COLUMNS, PACKAGE_COLUMNS, SCHEDULE_COLUMNS, SIGNAL_COLUMNS,
    TENANT_COLUMNS, TRIGGER_COLUMNS,
};
use super::{Catalog, Executions, NewSignal, PendingUpgrade};
use crate::error::{Error, Result};
use crate::journal::Entry;
use crate::model::{
    ApiKeyRecord, ApprovalRecord, AuditRecord, Decision, ExecutionRecord, ListFilter, NewExecution,
    NodeRecord, PackageInfo, PackageRecord, Quotas, ScheduleAdvance, ScheduleRecord, SecretRecord,
    SignalRecord, Status, TenantRecord, TriggerRecord,
};
use async_trait::async_trait;
use sqlx::query::Query;
use sqlx::{ColumnIndex, Database, Decode, Encode, Executor, IntoArguments, Pool, Type};
use std::collections::HashSet;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, LazyLock, Mutex};

/// What [`FetchWritten::fetch_written`] returns.
pub(super) type Written<'e, DB> =
    Pin<Box<dyn Future<Output = Result<Option<<DB as Database>::Row>>> + Send + 'e>>;

/// A write with `RETURNING` run on its own (outside a transaction) whose
/// row is read only once the statement has finished.
///
/// A statement outside a transaction commits when it finishes, and a
/// commit that fails — a full disk — is reported by that last step (on
/// SQLite) or after the rows (on PostgreSQL). `fetch_optional` stops at
/// the first row and never sees that error: the caller would answer with
/// a row that was never stored. Every such write goes through here.
pub(super) trait FetchWritten<DB: Database> {
    /// The first row the statement returned, once it is durable.
    fn fetch_written<'e>(self, pool: &'e Pool<DB>) -> Written<'e, DB>
    where
        Self: 'e;
}

impl<'q, DB> FetchWritten<DB> for Query<'q, DB, <DB as Database>::Arguments<'q>>
where
    DB: Database,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    <DB as Database>::Arguments<'q>: IntoArguments<'q, DB>,
{
    fn fetch_written<'e>(self, pool: &'e Pool<DB>) -> Written<'e, DB>
    where
        Self: 'e,
    {
        Box::pin(async move { Ok(self.fetch_all(pool).await?.into_iter().next()) })
    }
}

/// The sleep a hibernating execution waits for (its
/// [`Timer`](super::Timer)): timer `$2` of invocation `$4`, due at `$3`,
/// its result at seq `$5`, of execution `$1`; none while it is paused or
/// has a cancel requested.
pub(super) const SET_TIMER: &str = "INSERT INTO timers (execution_id, seq, due_at, invocation, \
     next_seq) SELECT $1, $2, $3, $4, $5 WHERE NOT EXISTS (SELECT 1 FROM executions \
       WHERE id = $1 AND (paused OR cancel_requested)) \
     ON CONFLICT (execution_id) DO UPDATE SET seq = excluded.seq, due_at = excluded.due_at, \
     invocation = excluded.invocation, next_seq = excluded.next_seq";

/// Deletes execution `$1`'s timer (see [`Timer`](super::Timer)).
pub(super) const CLEAR_TIMER: &str = "DELETE FROM timers WHERE execution_id = $1";

/// [`super::SideWrite::ConsumeSignal`]: signal `$4` of execution `$3` is
/// delivered to the call at `$1`, at `$2`.
pub(super) const CONSUME_SIGNAL: &str = "UPDATE signals SET consumed_by = $1, consumed_at = $2 \
     WHERE execution_id = $3 AND seq = $4 AND consumed_by IS NULL";

/// What the two backends do differently in the shared SQL.
#[derive(Debug, Clone, Copy)]
pub(super) struct Dialect {
    /// How a write transaction begins (SQLite takes the write lock at
    /// once, so two writers never deadlock upgrading their locks).
    pub begin: &'static str,
    /// Appended to a `SELECT` of one row that the transaction then
    /// changes: PostgreSQL locks the row (SQLite's write transaction holds
    /// the whole database already).
    pub lock_row: &'static str,
    /// Run first in an upload's transaction, so uploads never race for a
    /// version number (PostgreSQL; SQLite's write lock does it).
    pub lock_uploads: Option<&'static str>,
    /// Appended to a claim's `SELECT`: PostgreSQL skips rows another
    /// transaction has locked, so claimers never wait on each other.
    pub skip_locked: &'static str,
    /// Run first in a transaction whose commit need not be flushed (task
    /// claims: see `store::tasks`).
    pub no_flush: Option<&'static str>,
    /// The shard of the open-executions count that this connection's
    /// writes add to (migration 0014): its backend on PostgreSQL, the one
    /// writer's on SQLite.
    pub shard: &'static str,
    /// The text of an execution's input at the JSON path bound at `{}`
    /// (see [`Dialect::json_path`]).
    pub input_at: &'static str,
    /// A path of field names as `input_at` takes it.
    pub json_path: fn(&[String]) -> String,
}

/// A value bound to a `$N` of [`ListWhere`].
enum Bound {
    Text(String),
    Number(i64),
}

/// The `WHERE` of the executions list: only the filters a [`ListFilter`]
/// sets (a clause per filter, no `$N IS NULL OR …` left for every row to
/// evaluate), its values to bind in order as `$1`, `$2`, …
struct ListWhere {
    clauses: Vec<String>,
    values: Vec<Bound>,
}

impl ListWhere {
    /// `filter`'s filters (its status only with `with_status`), not its
    /// paging. An input field is looked for in the text first (`LIKE` on
    /// its name and value, cheap) and only the inputs that contain both
    /// are parsed.
    fn of(dialect: &Dialect, filter: &ListFilter, with_status: bool) -> Self {
        let mut w = ListWhere {
            clauses: Vec::new(),
            values: Vec::new(),
        };
        let text = |s: &str| Bound::Text(s.to_owned());
        if let Some(status) = filter.status.filter(|_| with_status) {
            w.add("status = {}", [text(status.as_str())]);
        }
        if let Some(tenant) = &filter.tenant {
            w.add("tenant = {}", [text(tenant)]);
        }
        if let Some(workflow) = &filter.workflow {
            w.add("workflow = {}", [text(workflow)]);
        }
        if let Some(package) = &filter.package {
            w.add("package_name = {}", [text(package)]);
        }
        for (column, prefix) in [
            ("id", &filter.id_prefix),
            ("package_name", &filter.package_prefix),
            ("workflow", &filter.workflow_prefix),
        ] {
            if let Some(prefix) = prefix {
                let n = prefix.chars().count() as i64;
                w.add(
                    &format!("SUBSTR({column}, 1, CAST({{}} AS INTEGER)) = {{}}"),
                    [Bound::Number(n), text(prefix)],
                );
            }
        }
        if let Some(from) = filter.created_from_ms {
            w.add("created_at >= {}", [Bound::Number(from)]);
        }
        if let Some(to) = filter.created_to_ms {
            w.add("created_at < {}", [Bound::Number(to)]);
        }
        if let Some((path, value)) = &filter.input_field {
            let name = path.last().map_or("", String::as_str);
            w.add("input LIKE {}", [Bound::Text(format!("%\"{name}\"%"))]);
            // The value as the input's text shows it, unless JSON may have
            // escaped it there.
            let plain = value
                .bytes()
                .all(|b| (b' '..=b'~').contains(&b) && b != b'"' && b != b'\\');
            if plain {
                w.add("input LIKE {}", [Bound::Text(format!("%{value}%"))]);
            }
            w.add(
                &format!("{} = {{}}", dialect.input_at),
                [Bound::Text((dialect.json_path)(path)), text(value)],
            );
        }
        w
    }

    /// Adds `clause`, each `{}` in it a parameter bound to the next of
    /// `values`.
    fn add<const N: usize>(&mut self, clause: &str, values: [Bound; N]) {
        let parts: Vec<&str> = clause.split("{}").collect();
        debug_assert_eq!(parts.len() - 1, N, "{clause}");
        let mut sql = parts[0].to_owned();
        for (part, value) in parts[1..].iter().zip(values) {
            self.values.push(value);
            sql.push_str(&format!("${}{part}", self.values.len()));
        }
        self.clauses.push(sql);
    }

    /// The clauses joined (`TRUE` when none).
    fn sql(&self) -> String {
        if self.clauses.is_empty() {
            "TRUE".to_owned()
        } else {
            self.clauses.join(" AND ")
        }
    }

    /// The next parameter's number.
    fn next(&self) -> usize {
        self.values.len() + 1
    }
}

/// Binds `where_`'s values, in order, to `query`.
macro_rules! bind_where {
    ($query:expr, $where_:expr) => {{
        let mut query = $query;
        for value in &$where_.values {
            query = match value {
                Bound::Text(text) => query.bind(text.as_str()),
                Bound::Number(n) => query.bind(*n),
            };
        }
        query
    }};
}

/// Reads of one row by its key that a backend answers on the calling
/// thread, without sqlx (SQLite: [`super::sqlite_reads`]); `None` if no
/// row matched.
pub(super) trait PointReads: Send + Sync {
    fn execution(&self, id: &str) -> Result<Option<ExecutionRecord>>;
    fn tenant_by_key(&self, hash: &str, now_ms: i64) -> Result<Option<TenantRecord>>;
    fn package(
        &self,
        tenant: &str,
        name: &str,
        version: Option<i64>,
    ) -> Result<Option<PackageRecord>>;
}

/// An execution's record by its id ($1).
pub(super) static EXECUTION_BY_ID: LazyLock<String> =
    LazyLock::new(|| format!("SELECT {EXECUTION_COLUMNS} FROM executions WHERE id = $1"));

/// The tenant of the API key whose hash is $1, if it is valid at $2.
pub(super) static TENANT_BY_KEY: LazyLock<String> = LazyLock::new(|| {
    format!(
        "SELECT {TENANT_COLUMNS} FROM tenants WHERE name = \
         (SELECT tenant FROM api_keys WHERE hash = $1 AND revoked_at IS NULL \
         AND (expires_at IS NULL OR expires_at > $2))"
    )
});

/// Tenant $1's package named $2: version $3, or its newest if $3 is NULL.
pub(super) static PACKAGE_BY_NAME: LazyLock<String> = LazyLock::new(|| {
    format!(
        "SELECT {PACKAGE_COLUMNS} FROM packages WHERE tenant = $1 AND name = $2 \
         AND (CAST($3 AS BIGINT) IS NULL OR version = $3) ORDER BY version DESC LIMIT 1"
    )
});

/// The shared SQL over a backend's pools: `reader` serves reads, `writer`
/// writes (SQLite: one connection, this process's only sqlx writer;
/// PostgreSQL: the same pool as `reader`).
pub(super) struct Sql<DB: Database> {
    pub(super) reader: Pool<DB>,
    pub(super) writer: Pool<DB>,
    pub(super) dialect: Dialect,
    /// Claims and completions of tasks, committed in batches.
    pub(super) task_batches: super::tasks::Batches,
    /// The tenants whose open count this process is folding.
    pub(super) folding: Arc<Mutex<HashSet<String>>>,
    /// Point reads answered without sqlx, where the backend has them.
    pub(super) point: Option<Arc<dyn PointReads>>,
}

/// How many rows (shards) of a tenant's open count make a read fold them.
const FOLD_OPEN_COUNTS_AT: i64 = 64;

impl<DB: Database> Sql<DB> {
    /// Marks `tenant`'s open count as being folded; `false` if it was.
    fn folding(&self, tenant: &str) -> bool {
        self.folding
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(tenant.to_owned())
    }

    /// Begins a write transaction on a task of its own, so that a caller
    /// who stops waiting half-way (an RPC its client cancelled) cannot
    /// leave it open. sqlx 0.8 loses track of a transaction whose `begin`
    /// is dropped between the `BEGIN` and the [`sqlx::Transaction`] that
    /// rolls it back on drop: the connection goes back to its pool inside
    /// the transaction, its later writes are never committed, and on
    /// SQLite it keeps the write lock, so every other write waits for it
    /// and fails. Once the transaction exists, dropping it rolls it back.
    pub(super) async fn begin_write(&self) -> Result<sqlx::Transaction<'static, DB>> {
        let writer = self.writer.clone();
        let begin = self.dialect.begin;
        match tokio::spawn(async move { writer.begin_with(begin).await }).await {
            Ok(begun) => Ok(begun?),
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            Err(e) => Err(Error::Runtime(format!(
                "beginning a write transaction: {e}"
            ))),
        }
    }
}

/// Folds `tenant`'s rows in `open_counts` into this connection's shard,
/// in one transaction, so the sum stays the count. On PostgreSQL, rows
/// another transaction is adding to are left for a later fold instead of
/// waited for.
async fn fold_open_counts<DB>(writer: Pool<DB>, dialect: Dialect, tenant: &str) -> Result<()>
where
    DB: Database,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'q> DB::Arguments<'q>: IntoArguments<'q, DB>,
    for<'q> &'q str: Encode<'q, DB> + Type<DB>,
    for<'q> i64: Encode<'q, DB> + Type<DB>,
    for<'r> i64: Decode<'r, DB>,
    usize: ColumnIndex<DB::Row>,
{
    let shard = dialect.shard;
    let mut tx = writer.begin_with(dialect.begin).await?;
    let counts = sqlx::query_scalar::<DB, i64>(&format!(
        "DELETE FROM open_counts WHERE tenant = $1 AND shard IN (SELECT shard FROM open_counts \
         WHERE tenant = $1 AND shard <> {shard}{}) RETURNING n",
        dialect.skip_locked
    ))
    .bind(tenant)
    .fetch_all(&mut *tx)
    .await?;
    sqlx::query::<DB>(&format!(
        "INSERT INTO open_counts (tenant, shard, n) VALUES ($1, {shard}, $2) \
         ON CONFLICT (tenant, shard) DO UPDATE SET n = open_counts.n + excluded.n"
    ))
    .bind(tenant)
    .bind(counts.iter().sum::<i64>())
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(())
}

/// Execution `id`, read on `conn` (with the dialect's row lock if `lock`).
async fn execution_in<DB>(
    conn: &mut DB::Connection,
    id: &str,
    lock: &str,
) -> Result<ExecutionRecord>
where
    DB: Database,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'q> DB::Arguments<'q>: IntoArguments<'q, DB>,
    for<'q> &'q str: Encode<'q, DB> + Type<DB>,
    DB::Row: Columns,
{
    let row = sqlx::query::<DB>(&format!("{}{lock}", *EXECUTION_BY_ID))
        .bind(id)
        .fetch_optional(&mut *conn)
        .await?
        .ok_or_else(|| rows::execution_not_found(id))?;
    rows::execution(&row)
}

/// The seq after the last of execution `id`'s journal, read on `conn`.
async fn next_seq_in<DB>(conn: &mut DB::Connection, id: &str) -> Result<i64>
where
    DB: Database,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'q> DB::Arguments<'q>: IntoArguments<'q, DB>,
    for<'q> &'q str: Encode<'q, DB> + Type<DB>,
    for<'r> i64: Decode<'r, DB> + Type<DB>,
    usize: sqlx::ColumnIndex<DB::Row>,
{
    let seq: i64 = sqlx::query_scalar::<DB, i64>(
        "SELECT COALESCE(MAX(seq), 0) + 1 FROM journal WHERE execution_id = $1",
    )
    .bind(id)
    .fetch_one(&mut *conn)
    .await?;
    Ok(seq)
}

/// Appends an operator's `entry` to execution `id`'s journal, on `conn`
/// (outside the group commit: retries, upgrades).
async fn insert_entry_in<DB>(conn: &mut DB::Connection, id: &str, entry: &Entry) -> Result<()>
where
    DB: Database,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'q> DB::Arguments<'q>: IntoArguments<'q, DB>,
    for<'q> &'q str: Encode<'q, DB> + Type<DB>,
    for<'q> Option<&'q str>: Encode<'q, DB>,
    for<'q> i64: Encode<'q, DB> + Type<DB>,
    for<'q> Option<i64>: Encode<'q, DB>,
    for<'q> String: Encode<'q, DB> + Type<DB>,
{
    sqlx::query::<DB>(
        "INSERT INTO journal (execution_id, seq, invocation, kind, ref_seq, args_hash, \
         payload, at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
    )
    .bind(id)
    .bind(entry.seq)
    .bind(entry.invocation.as_str())
    .bind(entry.event.kind())
    .bind(entry.event.ref_seq())
    .bind(entry.event.args_hash())
    .bind(entry.event.payload_text())
    .bind(entry.at_ms)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

#[async_trait]
impl<DB> Catalog for Sql<DB>
where
    DB: Database,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'q> DB::Arguments<'q>: IntoArguments<'q, DB>,
    for<'q> &'q str: Encode<'q, DB> + Type<DB>,
    for<'q> &'q [u8]: Encode<'q, DB> + Type<DB>,
    for<'q> i64: Encode<'q, DB> + Type<DB>,
    for<'q> Option<i64>: Encode<'q, DB>,
    for<'q> Option<&'q str>: Encode<'q, DB>,
    for<'q> bool: Encode<'q, DB> + Type<DB>,
    for<'q> String: Encode<'q, DB> + Type<DB>,
    for<'r> String: Decode<'r, DB>,
    for<'r> i64: Decode<'r, DB>,
    for<'r> Vec<u8>: Decode<'r, DB> + Type<DB>,
    usize: ColumnIndex<DB::Row>,
    DB::Row: Columns,
{
    async fn create_tenant(
        &self,
        name: &str,
        quotas: &Quotas,
        http_allow: &[String],
        now_ms: i64,
    ) -> Result<TenantRecord> {
        let row = sqlx::query::<DB>(&format!(
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
        .fetch_written(&self.writer)
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
        let row = sqlx::query::<DB>(&format!(
            "UPDATE tenants SET max_package_bytes = $1, max_open_executions = $2, \
             max_payload_bytes = $3, limits = $4 WHERE name = $5 RETURNING {TENANT_COLUMNS}"
        ))
        .bind(quotas.max_package_bytes)
        .bind(quotas.max_open_executions)
        .bind(quotas.max_payload_bytes)
        .bind(rows::limits_json(quotas, http_allow))
        .bind(name)
        .fetch_written(&self.writer)
        .await?
        .ok_or_else(|| rows::tenant_not_found(name))?;
        rows::tenant(&row)
    }

    async fn tenant(&self, name: &str) -> Result<TenantRecord> {
        let row = sqlx::query::<DB>(&format!(
            "SELECT {TENANT_COLUMNS} FROM tenants WHERE name = $1"
        ))
        .bind(name)
        .fetch_optional(&self.reader)
        .await?
        .ok_or_else(|| rows::tenant_not_found(name))?;
        rows::tenant(&row)
    }

    async fn list_tenants(&self) -> Result<Vec<TenantRecord>> {
        let found = sqlx::query::<DB>(&format!(
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
        let row = sqlx::query::<DB>(
            "INSERT INTO secrets (tenant, name, value, updated_at) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (tenant, name) DO UPDATE SET value = excluded.value, \
             updated_at = excluded.updated_at RETURNING tenant, name, updated_at",
        )
        .bind(tenant)
        .bind(name)
        .bind(value)
        .bind(now_ms)
        .fetch_written(&self.writer)
        .await?
        .ok_or_else(|| rows::secret_not_found(tenant, name))?;
        rows::secret(&row)
    }

    async fn delete_secret(&self, tenant: &str, name: &str) -> Result<()> {
        sqlx::query::<DB>("DELETE FROM secrets WHERE tenant = $1 AND name = $2 RETURNING name")
            .bind(tenant)
            .bind(name)
            .fetch_written(&self.writer)
            .await?
            .ok_or_else(|| rows::secret_not_found(tenant, name))?;
        Ok(())
    }

    async fn list_secrets(&self, tenant: &str) -> Result<Vec<SecretRecord>> {
        self.tenant(tenant).await?;
        let found = sqlx::query::<DB>(
            "SELECT tenant, name, updated_at FROM secrets WHERE tenant = $1 ORDER BY name",
        )
        .bind(tenant)
        .fetch_all(&self.reader)
        .await?;
        found.iter().map(rows::secret).collect()
    }

    async fn secret_values(&self, tenant: &str) -> Result<Vec<(String, String)>> {
        Ok(sqlx::query_as::<DB, (String, String)>(
            "SELECT name, value FROM secrets WHERE tenant = $1 ORDER BY name",
        )
        .bind(tenant)
        .fetch_all(&self.reader)
        .await?)
    }

    async fn add_api_key(&self, key: &ApiKeyRecord, hash: &str) -> Result<()> {
        self.tenant(&key.tenant).await?;
        sqlx::query::<DB>(
            "INSERT INTO api_keys (id, tenant, hash, created_at, expires_at) \
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(key.id.as_str())
        .bind(key.tenant.as_str())
        .bind(hash)
        .bind(key.created_at_ms)
        .bind(key.expires_at_ms)
        .execute(&self.writer)
        .await?;
        Ok(())
    }

    async fn revoke_api_key(&self, id: &str, now_ms: i64) -> Result<ApiKeyRecord> {
        match sqlx::query::<DB>(&format!(
            "UPDATE api_keys SET revoked_at = COALESCE(revoked_at, $1) WHERE id = $2 \
             RETURNING {API_KEY_COLUMNS}"
        ))
        .bind(now_ms)
        .bind(id)
        .fetch_written(&self.writer)
        .await?
        {
            Some(row) => rows::api_key(&row),
            None => {
                let row = sqlx::query::<DB>(&format!(
                    "UPDATE operator_keys SET revoked_at = COALESCE(revoked_at, $1) \
                     WHERE id = $2 RETURNING {OPERATOR_KEY_COLUMNS}",
                ))
                .bind(now_ms)
                .bind(id)
                .fetch_written(&self.writer)
                .await?
                .ok_or_else(|| rows::api_key_not_found(id))?;
                rows::api_key(&row)
            }
        }
    }

    async fn add_operator_key(&self, key: &ApiKeyRecord, hash: &str) -> Result<()> {
        sqlx::query::<DB>(
            "INSERT INTO operator_keys (id, hash, created_at, expires_at) VALUES ($1, $2, $3, $4)",
        )
        .bind(key.id.as_str())
        .bind(hash)
        .bind(key.created_at_ms)
        .bind(key.expires_at_ms)
        .execute(&self.writer)
        .await?;
        Ok(())
    }

    async fn list_operator_keys(&self) -> Result<Vec<ApiKeyRecord>> {
        let found = sqlx::query::<DB>(&format!(
            "SELECT {OPERATOR_KEY_COLUMNS} FROM operator_keys ORDER BY created_at, id"
        ))
        .fetch_all(&self.reader)
        .await?;
        found.iter().map(rows::api_key).collect()
    }

    async fn operator_by_key(&self, hash: &str, now_ms: i64) -> Result<Option<String>> {
        Ok(sqlx::query_scalar::<DB, String>(
            "SELECT id FROM operator_keys WHERE hash = $1 AND revoked_at IS NULL \
             AND (expires_at IS NULL OR expires_at > $2)",
        )
        .bind(hash)
        .bind(now_ms)
        .fetch_optional(&self.reader)
        .await?)
    }

    async fn list_api_keys(&self, tenant: &str) -> Result<Vec<ApiKeyRecord>> {
        self.tenant(tenant).await?;
        let found = sqlx::query::<DB>(&format!(
            "SELECT {API_KEY_COLUMNS} FROM api_keys WHERE tenant = $1 ORDER BY created_at, id"
        ))
        .bind(tenant)
        .fetch_all(&self.reader)
        .await?;
        found.iter().map(rows::api_key).collect()
    }

    async fn tenant_by_key(&self, hash: &str, now_ms: i64) -> Result<Option<TenantRecord>> {
        if let Some(point) = &self.point {
            return point.tenant_by_key(hash, now_ms);
        }
        let row = sqlx::query::<DB>(&TENANT_BY_KEY)
            .bind(hash)
            .bind(now_ms)
            .fetch_optional(&self.reader)
            .await?;
        row.as_ref().map(rows::tenant).transpose()
    }

    async fn key_used(&self, hash: &str, now_ms: i64) -> Result<()> {
        for table in ["api_keys", "operator_keys"] {
            sqlx::query::<DB>(&format!(
                "UPDATE {table} SET last_used_at = $2 WHERE hash = $1 \
                 AND (last_used_at IS NULL OR last_used_at < $2)"
            ))
            .bind(hash)
            .bind(now_ms)
            .execute(&self.writer)
            .await?;
        }
        Ok(())
    }

    async fn append_audit(&self, record: &AuditRecord) -> Result<()> {
        let detail = match &record.detail {
            Some(detail) => detail.to_string(),
            None => String::new(),
        };
        sqlx::query::<DB>(
            "INSERT INTO audit_log (at, tenant, actor, origin, action, target, detail) \
             VALUES ($1, $2, $3, $4, $5, $6, NULLIF($7, ''))",
        )
        .bind(record.at_ms)
        .bind(record.tenant.as_str())
        .bind(record.actor.as_str())
        .bind(record.origin.as_str())
        .bind(record.action.as_str())
        .bind(record.target.as_str())
        .bind(detail)
        .execute(&self.writer)
        .await?;
        Ok(())
    }

    async fn list_audit(
        &self,
        tenant: Option<&str>,
        before_id: Option<i64>,
        limit: i64,
    ) -> Result<Vec<AuditRecord>> {
        let sql = format!(
            "SELECT {AUDIT_COLUMNS} FROM audit_log WHERE id < $1 {} ORDER BY id DESC LIMIT $2",
            if tenant.is_some() {
                "AND tenant = $3"
            } else {
                ""
            }
        );
        let mut query = sqlx::query::<DB>(&sql)
            .bind(before_id.unwrap_or(i64::MAX))
            .bind(limit.max(0));
        if let Some(tenant) = tenant {
            query = query.bind(tenant);
        }
        let found = query.fetch_all(&self.reader).await?;
        found.iter().map(rows::audit).collect()
    }

    async fn create_schedule(&self, schedule: &ScheduleRecord) -> Result<()> {
        let s = schedule;
        let created = sqlx::query::<DB>(
            "INSERT INTO schedules (tenant, name, cron, timezone, package, version, workflow, \
             input, overlap, catch_up, paused, next_due, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13) \
             ON CONFLICT (tenant, name) DO NOTHING RETURNING name",
        )
        .bind(s.tenant.as_str())
        .bind(s.name.as_str())
        .bind(s.cron.as_str())
        .bind(s.timezone.as_str())
        .bind(s.package.as_str())
        .bind(s.version)
        .bind(s.workflow.as_str())
        .bind(s.input.as_str())
        .bind(s.overlap.as_str())
        .bind(s.catch_up)
        .bind(s.paused)
        .bind(s.next_due_ms)
        .bind(s.created_at_ms)
        .fetch_written(&self.writer)
        .await?;
        if created.is_none() {
            return Err(Error::Conflict(format!(
                "tenant '{}' has a schedule named '{}' already (delete it first, or pick \
                 another name)",
                s.tenant, s.name
            )));
        }
        Ok(())
    }

    async fn schedule(&self, tenant: &str, name: &str) -> Result<ScheduleRecord> {
        let found = sqlx::query::<DB>(&format!(
            "SELECT {SCHEDULE_COLUMNS} FROM schedules WHERE tenant = $1 AND name = $2"
        ))
        .bind(tenant)
        .bind(name)
        .fetch_optional(&self.reader)
        .await?;
        match found {
            Some(row) => rows::schedule(&row),
            None => Err(rows::schedule_not_found(tenant, name)),
        }
    }

    async fn list_schedules(&self, tenant: &str) -> Result<Vec<ScheduleRecord>> {
        let found = sqlx::query::<DB>(&format!(
            "SELECT {SCHEDULE_COLUMNS} FROM schedules WHERE tenant = $1 ORDER BY name"
        ))
        .bind(tenant)
        .fetch_all(&self.reader)
        .await?;
        found.iter().map(rows::schedule).collect()
    }

    async fn set_schedule_paused(
        &self,
        tenant: &str,
        name: &str,
        paused: bool,
        next_due_ms: Option<i64>,
    ) -> Result<ScheduleRecord> {
        let row = sqlx::query::<DB>(&format!(
            "UPDATE schedules SET paused = $3, next_due = COALESCE($4, next_due) \
             WHERE tenant = $1 AND name = $2 RETURNING {SCHEDULE_COLUMNS}"
        ))
        .bind(tenant)
        .bind(name)
        .bind(paused)
        .bind(next_due_ms)
        .fetch_written(&self.writer)
        .await?
        .ok_or_else(|| rows::schedule_not_found(tenant, name))?;
        rows::schedule(&row)
    }

    async fn delete_schedule(&self, tenant: &str, name: &str) -> Result<()> {
        let deleted = sqlx::query::<DB>(
            "DELETE FROM schedules WHERE tenant = $1 AND name = $2 RETURNING name",
        )
        .bind(tenant)
        .bind(name)
        .fetch_written(&self.writer)
        .await?;
        if deleted.is_none() {
            return Err(rows::schedule_not_found(tenant, name));
        }
        Ok(())
    }

    async fn due_schedules(&self, now_ms: i64, limit: i64) -> Result<Vec<ScheduleRecord>> {
        let found = sqlx::query::<DB>(&format!(
            "SELECT {SCHEDULE_COLUMNS} FROM schedules WHERE paused = $1 AND next_due <= $2 \
             ORDER BY next_due LIMIT $3"
        ))
        .bind(false)
        .bind(now_ms)
        .bind(limit)
        .fetch_all(&self.reader)
        .await?;
        found.iter().map(rows::schedule).collect()
    }

    async fn advance_schedules(&self, advances: &[ScheduleAdvance]) -> Result<Vec<bool>> {
        let mut tx = self.begin_write().await?;
        let mut moved = Vec::with_capacity(advances.len());
        for a in advances {
            let row = sqlx::query::<DB>(
                "UPDATE schedules SET next_due = $4, last_due = COALESCE($5, last_due), \
                 last_execution = COALESCE($6, last_execution), last_error = $7, \
                 fired = fired + $8, skipped = skipped + $9 \
                 WHERE tenant = $1 AND name = $2 AND next_due = $3 RETURNING name",
            )
            .bind(a.tenant.as_str())
            .bind(a.name.as_str())
            .bind(a.from_due_ms)
            .bind(a.next_due_ms)
            .bind(a.last_due_ms)
            .bind(a.last_execution.as_deref())
            .bind(a.last_error.as_deref())
            .bind(a.fired)
            .bind(a.skipped)
            .fetch_optional(&mut *tx)
            .await?;
            moved.push(row.is_some());
        }
        tx.commit().await?;
        Ok(moved)
    }

    async fn create_trigger(&self, trigger: &TriggerRecord) -> Result<()> {
        let t = trigger;
        let created = sqlx::query::<DB>(
            "INSERT INTO triggers (tenant, name, package, version, workflow, hmac_secret, \
             token_hash, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) \
             ON CONFLICT (tenant, name) DO NOTHING RETURNING name",
        )
        .bind(t.tenant.as_str())
        .bind(t.name.as_str())
        .bind(t.package.as_str())
        .bind(t.version)
        .bind(t.workflow.as_str())
        .bind(t.hmac_secret.as_deref())
        .bind(t.token_hash.as_deref())
        .bind(t.created_at_ms)
        .fetch_written(&self.writer)
        .await?;
        if created.is_none() {
            return Err(Error::Conflict(format!(
                "tenant '{}' has a trigger named '{}' already (delete it first, or pick another \
                 name)",
                t.tenant, t.name
            )));
        }
        Ok(())
    }

    async fn trigger(&self, tenant: &str, name: &str) -> Result<TriggerRecord> {
        let found = sqlx::query::<DB>(&format!(
            "SELECT {TRIGGER_COLUMNS} FROM triggers WHERE tenant = $1 AND name = $2"
        ))
        .bind(tenant)
        .bind(name)
        .fetch_optional(&self.reader)
        .await?;
        match found {
            Some(row) => rows::trigger(&row),
            None => Err(rows::trigger_not_found(tenant, name)),
        }
    }

    async fn list_triggers(&self, tenant: &str) -> Result<Vec<TriggerRecord>> {
        let found = sqlx::query::<DB>(&format!(
            "SELECT {TRIGGER_COLUMNS} FROM triggers WHERE tenant = $1 ORDER BY name"
        ))
        .bind(tenant)
        .fetch_all(&self.reader)
        .await?;
        found.iter().map(rows::trigger).collect()
    }

    async fn delete_trigger(&self, tenant: &str, name: &str) -> Result<()> {
        let deleted = sqlx::query::<DB>(
            "DELETE FROM triggers WHERE tenant = $1 AND name = $2 RETURNING name",
        )
        .bind(tenant)
        .bind(name)
        .fetch_written(&self.writer)
        .await?;
        if deleted.is_none() {
            return Err(rows::trigger_not_found(tenant, name));
        }
        Ok(())
    }

    async fn put_package(
        &self,
        tenant: &str,
        name: &str,
        sha256: &str,
        bytes: &[u8],
        info: &PackageInfo,
        now_ms: i64,
    ) -> Result<PackageRecord> {
        let mut tx = self.begin_write().await?;
        if let Some(lock) = self.dialect.lock_uploads {
            sqlx::query::<DB>(lock).execute(&mut *tx).await?;
        }
        if let Some(row) = sqlx::query::<DB>(&format!(
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
        sqlx::query::<DB>(
            "INSERT INTO package_blobs (sha256, bytes) VALUES ($1, $2) ON CONFLICT DO NOTHING",
        )
        .bind(sha256)
        .bind(bytes)
        .execute(&mut *tx)
        .await?;
        let version: i64 = sqlx::query_scalar::<DB, i64>(
            "SELECT COALESCE(MAX(version), 0) + 1 FROM packages WHERE tenant = $1 AND name = $2",
        )
        .bind(tenant)
        .bind(name)
        .fetch_one(&mut *tx)
        .await?;
        let row = sqlx::query::<DB>(&format!(
            "INSERT INTO packages (tenant, sha256, name, version, size, info, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING {PACKAGE_COLUMNS}"
        ))
        .bind(tenant)
        .bind(sha256)
        .bind(name)
        .bind(version)
        .bind(bytes.len() as i64)
        .bind(rows::info_json(info))
        .bind(now_ms)
        .fetch_one(&mut *tx)
        .await?;
        tx.commit().await?;
        rows::package(&row)
    }

    async fn package(&self, tenant: &str, sha256: &str) -> Result<PackageRecord> {
        let row = sqlx::query::<DB>(&format!(
            "SELECT {PACKAGE_COLUMNS} FROM packages WHERE tenant = $1 AND sha256 = $2 \
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
        sqlx::query_scalar::<DB, Vec<u8>>("SELECT bytes FROM package_blobs WHERE sha256 = $1")
            .bind(sha256)
            .fetch_optional(&self.reader)
            .await?
            .ok_or_else(|| rows::package_not_found(sha256))
    }

    async fn list_packages(&self, tenant: &str) -> Result<Vec<PackageRecord>> {
        let found = sqlx::query::<DB>(&format!(
            "SELECT {PACKAGE_COLUMNS} FROM packages WHERE tenant = $1 ORDER BY name, version"
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
        if let Some(point) = &self.point {
            if let Some(found) = point.package(tenant, name, version)? {
                return Ok(found);
            }
        } else if let Some(row) = sqlx::query::<DB>(&PACKAGE_BY_NAME)
            .bind(tenant)
            .bind(name)
            .bind(version)
            .fetch_optional(&self.reader)
            .await?
        {
            return rows::package(&row);
        }
        let versions: Vec<String> = sqlx::query_scalar::<DB, String>(
            "SELECT CAST(version AS TEXT) FROM packages WHERE tenant = $1 AND name = $2 \
             ORDER BY version",
        )
        .bind(tenant)
        .bind(name)
        .fetch_all(&self.reader)
        .await?;
        if !versions.is_empty() {
            return Err(rows::no_package_named(name, version, &versions));
        }
        let names: Vec<String> = sqlx::query_scalar::<DB, String>(
            "SELECT DISTINCT name FROM packages WHERE tenant = $1 ORDER BY name",
        )
        .bind(tenant)
        .fetch_all(&self.reader)
        .await?;
        Err(rows::no_package_named(name, None, &names))
    }
}

#[async_trait]
impl<DB> Executions for Sql<DB>
where
    DB: Database,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'q> DB::Arguments<'q>: IntoArguments<'q, DB>,
    for<'q> &'q str: Encode<'q, DB> + Type<DB>,
    for<'q> Option<&'q str>: Encode<'q, DB>,
    for<'q> i64: Encode<'q, DB> + Type<DB>,
    for<'q> Option<i64>: Encode<'q, DB>,
    for<'q> String: Encode<'q, DB> + Type<DB>,
    for<'r> i64: Decode<'r, DB>,
    for<'r> String: Decode<'r, DB>,
    usize: ColumnIndex<DB::Row>,
    DB::Row: Columns,
{
    async fn count_open_executions(&self, tenant: &str) -> Result<i64> {
        // The triggers of migration 0014 keep the count, in shards, in the
        // same transactions as the status changes: their sum is the count.
        let (open, rows) = sqlx::query_as::<DB, (i64, i64)>(
            "SELECT CAST(COALESCE(SUM(n), 0) AS BIGINT), COUNT(*) FROM open_counts \
             WHERE tenant = $1",
        )
        .bind(tenant)
        .fetch_one(&self.reader)
        .await?;
        if rows > FOLD_OPEN_COUNTS_AT && self.folding(tenant) {
            // On a task of its own: the caller neither waits for it nor
            // can drop it half-way (see `begin_write`).
            let (writer, dialect, folding) =
                (self.writer.clone(), self.dialect, self.folding.clone());
            let tenant = tenant.to_owned();
            tokio::spawn(async move {
                if let Err(e) = fold_open_counts(writer, dialect, &tenant).await {
                    tracing::warn!(%tenant, error = %e, "folding the open-executions count failed");
                }
                folding
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .remove(&tenant);
            });
        }
        Ok(open)
    }

    async fn longest_open_journal(&self, tenant: &str) -> Result<Option<(String, i64)>> {
        Ok(sqlx::query_as::<DB, (String, i64)>(
            "SELECT id, entries FROM (SELECT id, \
               (SELECT COALESCE(MAX(seq), 0) FROM journal WHERE execution_id = e.id) AS entries \
               FROM executions e WHERE tenant = $1 \
               AND status IN ('pending', 'running', 'waiting')) open_journals \
             ORDER BY entries DESC, id LIMIT 1",
        )
        .bind(tenant)
        .fetch_optional(&self.reader)
        .await?)
    }

    async fn execution(&self, id: &str) -> Result<ExecutionRecord> {
        if let Some(point) = &self.point {
            return point
                .execution(id)?
                .ok_or_else(|| rows::execution_not_found(id));
        }
        let mut conn = self.reader.acquire().await?;
        execution_in::<DB>(&mut conn, id, "").await
    }

    async fn nodes(&self) -> Result<Vec<NodeRecord>> {
        let found = sqlx::query::<DB>(
            "SELECT owner, COUNT(*) AS owned, MIN(lease_expires_at) AS lease_min, \
             MAX(lease_expires_at) AS lease_max FROM executions \
             WHERE status = 'running' AND owner IS NOT NULL GROUP BY owner ORDER BY owner",
        )
        .fetch_all(&self.reader)
        .await?;
        found
            .iter()
            .map(|row| {
                Ok(NodeRecord {
                    id: row.string("owner")?,
                    owned: row.number("owned")?,
                    lease_min_ms: row.int("lease_min")?.unwrap_or(0),
                    lease_max_ms: row.int("lease_max")?.unwrap_or(0),
                })
            })
            .collect()
    }

    async fn gauges(&self, seen_since_ms: i64) -> Result<super::Gauges> {
        let open = sqlx::query_as::<DB, (String, String, i64)>(
            "SELECT tenant, status, COUNT(*) FROM executions \
             WHERE status IN ('pending', 'running', 'waiting') GROUP BY tenant, status",
        )
        .fetch_all(&self.reader)
        .await?;
        let queued = sqlx::query_as::<DB, (String, String, i64)>(
            "SELECT tenant, queue, COUNT(*) FROM tasks WHERE status = 'queued' \
             GROUP BY tenant, queue",
        )
        .fetch_all(&self.reader)
        .await?;
        let workers = sqlx::query_as::<DB, (String, String, i64)>(
            "SELECT tenant, queue, COUNT(*) FROM workers WHERE last_seen_at >= $1 \
             GROUP BY tenant, queue",
        )
        .bind(seen_since_ms)
        .fetch_all(&self.reader)
        .await?;
        Ok(super::Gauges {
            open,
            queued,
            workers,
        })
    }

    async fn list_executions(&self, filter: &ListFilter) -> Result<Vec<ExecutionRecord>> {
        let mut where_ = ListWhere::of(&self.dialect, filter, true);
        // Paging back reads the nearest newer ones first, then turns them.
        let (cursor, order, direction) = match (&filter.before, &filter.after) {
            (Some(before), _) => (Some(before), "ASC", ">"),
            (None, Some(after)) => (Some(after), "DESC", "<"),
            (None, None) => (None, "DESC", ""),
        };
        if let Some((at, id)) = cursor {
            where_.add(
                &format!("(created_at, id) {direction} ({{}}, CAST({{}} AS TEXT))"),
                [Bound::Number(*at), Bound::Text(id.clone())],
            );
        }
        let sql = format!(
            "SELECT {EXECUTION_COLUMNS} FROM executions WHERE {} \
             ORDER BY created_at {order}, id {order} LIMIT ${}",
            where_.sql(),
            where_.next()
        );
        let query = bind_where!(sqlx::query::<DB>(&sql), where_).bind(if filter.limit > 0 {
            filter.limit
        } else {
            100
        });
        let found = query.fetch_all(&self.reader).await?;
        let mut listed: Vec<ExecutionRecord> =
            found.iter().map(rows::execution).collect::<Result<_>>()?;
        if filter.before.is_some() {
            listed.reverse();
        }
        Ok(listed)
    }

    async fn keyed_executions(
        &self,
        tenant: &str,
        prefix: &str,
        limit: i64,
    ) -> Result<Vec<ExecutionRecord>> {
        // Not a range of the (tenant, idempotency_key) index: under
        // PostgreSQL's linguistic collations punctuation does not order
        // as bytes, so `>= 'p:' AND < 'p;'` could miss keys.
        let found = sqlx::query::<DB>(&format!(
            "SELECT {EXECUTION_COLUMNS} FROM executions WHERE tenant = $1 \
             AND SUBSTR(idempotency_key, 1, LENGTH($2)) = $2 \
             ORDER BY created_at DESC, id DESC LIMIT $3"
        ))
        .bind(tenant)
        .bind(prefix)
        .bind(limit)
        .fetch_all(&self.reader)
        .await?;
        found.iter().map(rows::execution).collect()
    }

    async fn count_by_status(&self, filter: &ListFilter) -> Result<Vec<(Status, i64)>> {
        let where_ = ListWhere::of(&self.dialect, filter, false);
        let sql = format!(
            "SELECT status, COUNT(*) FROM executions WHERE {} GROUP BY status",
            where_.sql()
        );
        let counted: Vec<(String, i64)> =
            bind_where!(sqlx::query_as::<DB, (String, i64)>(&sql), where_)
                .fetch_all(&self.reader)
                .await?;
        let mut counts = counted
            .into_iter()
            .map(|(status, n)| {
                Status::parse(&status)
                    .map(|s| (s, n))
                    .ok_or_else(|| Error::Store(format!("an execution has status {status:?}")))
            })
            .collect::<Result<Vec<_>>>()?;
        counts.sort_by_key(|(status, _)| Status::ALL.iter().position(|s| s == status));
        Ok(counts)
    }

    async fn journal(&self, id: &str, after_seq: i64) -> Result<Vec<Entry>> {
        let found = sqlx::query::<DB>(&format!(
            "SELECT {ENTRY_COLUMNS} FROM journal WHERE execution_id = $1 AND seq > $2 ORDER BY seq"
        ))
        .bind(id)
        .bind(after_seq)
        .fetch_all(&self.reader)
        .await?;
        found.iter().map(rows::entry).collect()
    }

    async fn latest_progress(&self, id: &str) -> Result<Option<Entry>> {
        let found = sqlx::query::<DB>(&format!(
            "SELECT {ENTRY_COLUMNS} FROM journal WHERE execution_id = $1 \
             AND kind = 'report-progress' ORDER BY seq DESC LIMIT 1"
        ))
        .bind(id)
        .fetch_optional(&self.reader)
        .await?;
        found.as_ref().map(rows::entry).transpose()
    }

    async fn approvals(&self, execution_id: &str) -> Result<Vec<ApprovalRecord>> {
        let found = sqlx::query::<DB>(&format!(
            "SELECT {APPROVAL_COLUMNS} FROM approvals WHERE execution_id = $1 \
             ORDER BY created_at, key"
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
        let lock = self.dialect.lock_row;
        let mut tx = self.begin_write().await?;
        // Execution row first, then approvals: the order a commit locks them.
        let execution = execution_in::<DB>(&mut tx, execution_id, lock).await?;
        let row = sqlx::query::<DB>(&format!(
            "SELECT {APPROVAL_COLUMNS} FROM approvals WHERE execution_id = $1 AND key = $2{lock}"
        ))
        .bind(execution_id)
        .bind(key)
        .fetch_optional(&mut *tx)
        .await?;
        let (status, value) = rows::decision_columns(decision);
        let Some(row) = row else {
            let pending: Vec<String> = sqlx::query_scalar::<DB, String>(
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
        sqlx::query::<DB>(
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
        sqlx::query::<DB>(super::tasks::WAKE)
            .bind(now_ms)
            .bind(execution_id)
            .execute(&mut *tx)
            .await?;
        sqlx::query::<DB>(super::tasks::NUDGE)
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

    async fn send_signal(
        &self,
        execution_id: &str,
        signal: &NewSignal,
        max_buffered: i64,
        now_ms: i64,
    ) -> Result<(SignalRecord, bool)> {
        let mut tx = self.begin_write().await?;
        let execution = execution_in::<DB>(&mut tx, execution_id, self.dialect.lock_row).await?;
        if let Some(id) = &signal.signal_id {
            let sent = sqlx::query::<DB>(&format!(
                "SELECT {SIGNAL_COLUMNS} FROM signals WHERE execution_id = $1 AND signal_id = $2"
            ))
            .bind(execution_id)
            .bind(id.as_str())
            .fetch_optional(&mut *tx)
            .await?;
            if let Some(row) = sent {
                let sent = rows::signal(&row)?;
                if sent.name != signal.name || sent.payload != signal.payload {
                    return Err(Error::Conflict(format!(
                        "signal id '{id}' was sent to {execution_id} before as '{}' with \
                         another payload; a signal id names one signal: use a new id for a new \
                         signal",
                        sent.name
                    )));
                }
                return Ok((sent, false));
            }
        }
        if execution.status.is_terminal() {
            return Err(rows::nothing_to_signal(&execution));
        }
        let buffered: i64 = sqlx::query_scalar::<DB, i64>(
            "SELECT COUNT(*) FROM signals WHERE execution_id = $1 AND consumed_by IS NULL",
        )
        .bind(execution_id)
        .fetch_one(&mut *tx)
        .await?;
        if buffered >= max_buffered {
            return Err(Error::QuotaExceeded(format!(
                "execution {execution_id} has {buffered} signals it has not taken yet, the most \
                 it may buffer; it takes them with await-signal"
            )));
        }
        let seq: i64 = sqlx::query_scalar::<DB, i64>(
            "SELECT COALESCE(MAX(seq), 0) + 1 FROM signals WHERE execution_id = $1",
        )
        .bind(execution_id)
        .fetch_one(&mut *tx)
        .await?;
        sqlx::query::<DB>(
            "INSERT INTO signals (execution_id, seq, name, payload, signal_id, received_at) \
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(execution_id)
        .bind(seq)
        .bind(signal.name.as_str())
        .bind(signal.payload.to_string())
        .bind(signal.signal_id.as_deref())
        .bind(now_ms)
        .execute(&mut *tx)
        .await?;
        sqlx::query::<DB>(super::tasks::WAKE)
            .bind(now_ms)
            .bind(execution_id)
            .execute(&mut *tx)
            .await?;
        sqlx::query::<DB>(super::tasks::NUDGE)
            .bind(now_ms)
            .bind(execution_id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok((
            SignalRecord {
                execution_id: execution_id.to_owned(),
                seq,
                name: signal.name.clone(),
                payload: signal.payload.clone(),
                signal_id: signal.signal_id.clone(),
                received_at_ms: now_ms,
                consumed_by: None,
            },
            true,
        ))
    }

    async fn buffered_signals(&self, execution_id: &str) -> Result<Vec<SignalRecord>> {
        let found = sqlx::query::<DB>(&format!(
            "SELECT {SIGNAL_COLUMNS} FROM signals WHERE execution_id = $1 \
             AND consumed_by IS NULL ORDER BY seq"
        ))
        .bind(execution_id)
        .fetch_all(&self.reader)
        .await?;
        found.iter().map(rows::signal).collect()
    }

    async fn next_signal(&self, execution_id: &str, name: &str) -> Result<Option<SignalRecord>> {
        let found = sqlx::query::<DB>(&format!(
            "SELECT {SIGNAL_COLUMNS} FROM signals WHERE execution_id = $1 AND name = $2 \
             AND consumed_by IS NULL ORDER BY seq LIMIT 1"
        ))
        .bind(execution_id)
        .bind(name)
        .fetch_optional(&self.reader)
        .await?;
        found.as_ref().map(rows::signal).transpose()
    }

    async fn request_cancel(&self, execution_id: &str, now_ms: i64) -> Result<ExecutionRecord> {
        let mut tx = self.begin_write().await?;
        let execution = execution_in::<DB>(&mut tx, execution_id, self.dialect.lock_row).await?;
        if execution.status.is_terminal() {
            return Err(rows::nothing_to_cancel(&execution));
        }
        let row = sqlx::query::<DB>(&format!(
            "UPDATE executions SET cancel_requested = TRUE, paused = FALSE, signals = signals + 1, \
             wake_at = CASE WHEN status IN ('waiting', 'pending') THEN $1 ELSE wake_at END \
             WHERE id = $2 RETURNING {EXECUTION_COLUMNS}"
        ))
        .bind(now_ms)
        .bind(execution_id)
        .fetch_one(&mut *tx)
        .await?;
        // Its children (and theirs) are cancelled with it, unless started
        // detached. None keeps its timer: its code ends the sleep.
        let mut parents = vec![execution_id.to_owned()];
        while let Some(parent) = parents.pop() {
            sqlx::query::<DB>(CLEAR_TIMER)
                .bind(&parent)
                .execute(&mut *tx)
                .await?;
            let children = sqlx::query_scalar::<DB, String>(
                "UPDATE executions SET cancel_requested = TRUE, paused = FALSE, \
                 signals = signals + 1, \
                 wake_at = CASE WHEN status IN ('waiting', 'pending') THEN $1 ELSE wake_at END \
                 WHERE parent_id = $2 AND NOT detached AND NOT cancel_requested \
                 AND status IN ('pending', 'running', 'waiting') RETURNING id",
            )
            .bind(now_ms)
            .bind(parent)
            .fetch_all(&mut *tx)
            .await?;
            parents.extend(children);
        }
        tx.commit().await?;
        rows::execution(&row)
    }

    async fn set_paused(
        &self,
        execution_id: &str,
        paused: bool,
        now_ms: i64,
    ) -> Result<ExecutionRecord> {
        let mut tx = self.begin_write().await?;
        let execution = execution_in::<DB>(&mut tx, execution_id, self.dialect.lock_row).await?;
        if execution.status.is_terminal() {
            return Err(Error::Conflict(format!(
                "execution {execution_id} is already {}; there is nothing to {}",
                execution.status,
                if paused { "pause" } else { "resume" }
            )));
        }
        // Paused: a hibernated or pending one keeps no due time (nothing
        // claims it); resumed: it is due at once, and replay finds its
        // timers' own due times again.
        let sql = if paused {
            format!(
                "UPDATE executions SET paused = TRUE, signals = signals + 1, updated_at = $1, \
                 wake_at = CASE WHEN status IN ('waiting', 'pending') THEN NULL \
                 ELSE wake_at END WHERE id = $2 RETURNING {EXECUTION_COLUMNS}"
            )
        } else {
            format!(
                "UPDATE executions SET paused = FALSE, signals = signals + 1, updated_at = $1, \
                 wake_at = CASE WHEN status IN ('waiting', 'pending') THEN $1 \
                 ELSE wake_at END WHERE id = $2 RETURNING {EXECUTION_COLUMNS}"
            )
        };
        let row = sqlx::query::<DB>(&sql)
            .bind(now_ms)
            .bind(execution_id)
            .fetch_one(&mut *tx)
            .await?;
        if paused {
            // Nor a timer: its code ends the sleep once it is resumed.
            sqlx::query::<DB>(CLEAR_TIMER)
                .bind(execution_id)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        rows::execution(&row)
    }

    async fn retry_execution(&self, execution_id: &str, now_ms: i64) -> Result<ExecutionRecord> {
        let mut tx = self.begin_write().await?;
        let execution = execution_in::<DB>(&mut tx, execution_id, self.dialect.lock_row).await?;
        rows::check_retryable(&execution)?;
        let seq = next_seq_in::<DB>(&mut tx, execution_id).await?;
        let entry = rows::retried_entry(&execution, seq, now_ms);
        insert_entry_in::<DB>(&mut tx, execution_id, &entry).await?;
        let row = sqlx::query::<DB>(&format!(
            "UPDATE executions SET status = 'pending', result = NULL, error = NULL, owner = NULL, \
             engine_failures = 0, engine_error = NULL, lease_expires_at = NULL, wake_at = $1, \
             epoch = epoch + 1, cancel_requested = FALSE, paused = FALSE, updated_at = $1 WHERE id = $2 \
             RETURNING {EXECUTION_COLUMNS}"
        ))
        .bind(now_ms)
        .bind(execution_id)
        .fetch_one(&mut *tx)
        .await?;
        tx.commit().await?;
        rows::execution(&row)
    }

    async fn upgrade_execution(
        &self,
        execution_id: &str,
        from_version: i64,
        last_seq: i64,
        to: &PackageRecord,
        now_ms: i64,
    ) -> Result<ExecutionRecord> {
        let mut tx = self.begin_write().await?;
        let execution = execution_in::<DB>(&mut tx, execution_id, self.dialect.lock_row).await?;
        // Its timer, if it has one, is locked before the journal's end is
        // read: a sweep firing it meanwhile would journal the sleep's
        // result at the same seq (the sweep skips a timer held here).
        sqlx::query::<DB>(&format!(
            "SELECT seq FROM timers WHERE execution_id = $1{}",
            self.dialect.lock_row
        ))
        .bind(execution_id)
        .execute(&mut *tx)
        .await?;
        let seq = next_seq_in::<DB>(&mut tx, execution_id).await?;
        let entry = rows::upgraded_entry(&execution, from_version, last_seq, seq, to, now_ms)?;
        insert_entry_in::<DB>(&mut tx, execution_id, &entry).await?;
        // The sleep's result, when it fires, comes after this entry.
        sqlx::query::<DB>("UPDATE timers SET next_seq = $1 WHERE execution_id = $2")
            .bind(seq + 1)
            .bind(execution_id)
            .execute(&mut *tx)
            .await?;
        let row = sqlx::query::<DB>(&format!(
            "UPDATE executions SET package_sha256 = $1, package_version = $2, updated_at = $3 \
             WHERE id = $4 RETURNING {EXECUTION_COLUMNS}"
        ))
        .bind(to.sha256.as_str())
        .bind(to.version)
        .bind(now_ms)
        .bind(execution_id)
        .fetch_one(&mut *tx)
        .await?;
        sqlx::query::<DB>("DELETE FROM pending_upgrades WHERE execution_id = $1")
            .bind(execution_id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        rows::execution(&row)
    }

    async fn request_upgrade(&self, upgrade: &PendingUpgrade) -> Result<()> {
        sqlx::query::<DB>(
            "INSERT INTO pending_upgrades (execution_id, to_version, actor, origin, requested_at) \
             VALUES ($1, $2, $3, $4, $5) ON CONFLICT (execution_id) DO UPDATE SET \
             to_version = excluded.to_version, actor = excluded.actor, \
             origin = excluded.origin, requested_at = excluded.requested_at",
        )
        .bind(upgrade.execution_id.as_str())
        .bind(upgrade.to_version)
        .bind(upgrade.actor.as_str())
        .bind(upgrade.origin.as_str())
        .bind(upgrade.requested_at_ms)
        .execute(&self.writer)
        .await?;
        Ok(())
    }

    async fn pending_upgrade(&self, execution_id: &str) -> Result<Option<PendingUpgrade>> {
        let found = sqlx::query_as::<DB, (String, i64, String, String, i64)>(&format!(
            "SELECT {PENDING_UPGRADE_COLUMNS} FROM pending_upgrades WHERE execution_id = $1"
        ))
        .bind(execution_id)
        .fetch_optional(&self.reader)
        .await?;
        Ok(found.map(pending_upgrade))
    }

    async fn due_upgrades(&self, limit: i64) -> Result<Vec<PendingUpgrade>> {
        let found = sqlx::query_as::<DB, (String, i64, String, String, i64)>(&format!(
            "SELECT {PENDING_UPGRADE_COLUMNS} FROM pending_upgrades p WHERE EXISTS \
             (SELECT 1 FROM executions e WHERE e.id = p.execution_id \
              AND e.status NOT IN ('pending', 'running')) \
             ORDER BY requested_at LIMIT $1"
        ))
        .bind(limit)
        .fetch_all(&self.reader)
        .await?;
        Ok(found.into_iter().map(pending_upgrade).collect())
    }

    async fn drop_upgrade(&self, execution_id: &str) -> Result<()> {
        sqlx::query::<DB>("DELETE FROM pending_upgrades WHERE execution_id = $1")
            .bind(execution_id)
            .execute(&self.writer)
            .await?;
        Ok(())
    }
}

/// The columns [`pending_upgrade`] reads, in order.
const PENDING_UPGRADE_COLUMNS: &str = "execution_id, to_version, actor, origin, requested_at";

fn pending_upgrade(
    (execution_id, to_version, actor, origin, requested_at_ms): (String, i64, String, String, i64),
) -> PendingUpgrade {
    PendingUpgrade {
        execution_id,
        to_version,
        actor,
        origin,
        requested_at_ms,
    }
}

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
    for<'q> bool: Encode<'q, DB> + Type<DB>,
    DB::Row: Columns,
{
    /// See [`super::Store::create_execution`]. One statement: atomic
    /// without a transaction; an idempotency key the tenant used before
    /// inserts nothing and returns the earlier execution.
    pub(super) async fn create_execution(
        &self,
        new: NewExecution,
        now_ms: i64,
        owner: Option<(&str, i64)>,
    ) -> Result<ExecutionRecord> {
        let owned = owner.is_some();
        let row = sqlx::query::<DB>(&format!(
            "INSERT INTO executions (id, tenant, package_sha256, package_name, package_version, \
             workflow, input, idempotency_key, status, created_at, updated_at, wake_at, owner, \
             lease_expires_at, epoch, worker_queue, continued_from, parent_id, detached) \
             SELECT $1, tenant, sha256, name, version, $2, $3, $4, $5, $6, $6, $7, $8, $9, $10, \
             $11, $15, $16, $17 FROM packages WHERE tenant = $12 AND name = $13 AND version = $14 \
             ON CONFLICT (tenant, idempotency_key) DO NOTHING \
             RETURNING {EXECUTION_COLUMNS}"
        ))
        .bind(new.id.as_str())
        .bind(new.workflow.as_str())
        .bind(new.input.to_string())
        .bind(new.idempotency_key.as_deref())
        .bind(if owned { "running" } else { "pending" })
        .bind(now_ms)
        .bind((!owned).then_some(now_ms))
        .bind(owner.map(|o| o.0))
        .bind(owner.map(|o| o.1))
        .bind(if owned { 1_i64 } else { 0 })
        .bind(new.worker_queue.as_deref())
        .bind(new.tenant.as_str())
        .bind(new.package_name.as_str())
        .bind(new.package_version)
        .bind(new.continued_from.as_deref())
        .bind(new.parent_id.as_deref())
        .bind(new.detached)
        .fetch_written(&self.writer)
        .await?;
        if let Some(row) = row {
            return rows::execution(&row);
        }
        // Nothing inserted: the key was used before, or no such package.
        if let Some(key) = &new.idempotency_key
            && let Some(row) = sqlx::query::<DB>(&format!(
                "SELECT {EXECUTION_COLUMNS} FROM executions \
                 WHERE tenant = $1 AND idempotency_key = $2"
            ))
            .bind(new.tenant.as_str())
            .bind(key.as_str())
            .fetch_written(&self.writer)
            .await?
        {
            return rows::execution(&row);
        }
        Err(rows::package_not_found(&new.package_sha256))
    }

    /// See [`super::Store::time_out_approval`].
    pub(super) async fn time_out_approval(
        &self,
        execution_id: &str,
        key: &str,
        now_ms: i64,
    ) -> Result<ApprovalRecord> {
        let mut tx = self.begin_write().await?;
        sqlx::query::<DB>(
            "UPDATE approvals SET status = 'timed-out', decided_at = $1 \
             WHERE execution_id = $2 AND key = $3 AND status = 'pending'",
        )
        .bind(now_ms)
        .bind(execution_id)
        .bind(key)
        .execute(&mut *tx)
        .await?;
        let row = sqlx::query::<DB>(&format!(
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
}
