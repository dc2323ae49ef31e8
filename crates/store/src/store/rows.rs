//! What the SQL backends share: mapping rows to records (the column names
//! are the same in both schemas) and the messages of their errors.

use crate::error::{Error, Result};
use crate::journal::{Entry, Event, OPERATOR, Retried, Row as JournalRow, Upgraded};
use crate::model::{
    ApiKeyRecord, ApprovalRecord, AuditRecord, ExecutionRecord, Overlap, PackageInfo,
    PackageRecord, Quotas, ScheduleRecord, SecretRecord, SignalRecord, Status, StoredLimits,
    TenantRecord, TriggerRecord,
};
use serde_json::Value;
use sqlx::{ColumnIndex, Decode, Row, Type};

/// Columns of `executions` that make an [`ExecutionRecord`].
pub(super) const EXECUTION_COLUMNS: &str = "id, tenant, package_sha256, package_name, package_version, \
     workflow, input, status, result, error, created_at, updated_at, wake_at, owner, epoch, \
     cancel_requested, engine_failures, engine_error, worker_queue, paused, continued_from, \
     parent_id, detached, idempotency_key";

/// Columns of `packages` that make a [`PackageRecord`] (not the bytes).
pub(super) const PACKAGE_COLUMNS: &str = "tenant, sha256, name, version, info, created_at, size";

/// Columns of `tenants` that make a [`TenantRecord`].
pub(super) const TENANT_COLUMNS: &str =
    "name, created_at, max_package_bytes, max_open_executions, max_payload_bytes, limits";

/// Columns of `api_keys` that make an [`ApiKeyRecord`] (not the hash).
pub(super) const API_KEY_COLUMNS: &str =
    "id, tenant, created_at, revoked_at, expires_at, last_used_at";

/// Columns of `operator_keys` that make an [`ApiKeyRecord`] (no tenant).
pub(super) const OPERATOR_KEY_COLUMNS: &str =
    "id, '' AS tenant, created_at, revoked_at, expires_at, last_used_at";

/// Columns of `audit_log` that make an [`AuditRecord`].
pub(super) const AUDIT_COLUMNS: &str = "id, at, tenant, actor, origin, action, target, detail";

/// Columns of `schedules` that make a [`ScheduleRecord`].
pub(super) const SCHEDULE_COLUMNS: &str = "tenant, name, cron, timezone, package, version, \
     workflow, input, overlap, catch_up, paused, next_due, last_due, last_execution, last_error, \
     fired, skipped, created_at";

/// Columns of `triggers` that make a [`TriggerRecord`].
pub(super) const TRIGGER_COLUMNS: &str =
    "tenant, name, package, version, workflow, hmac_secret, token_hash, created_at";

/// Columns of `journal` that make an [`Entry`].
pub(super) const ENTRY_COLUMNS: &str = "seq, invocation, kind, ref_seq, args_hash, payload, at";

/// Columns of `approvals` that make an [`ApprovalRecord`].
pub(super) const APPROVAL_COLUMNS: &str = "execution_id, key, status, request, decision";

/// Columns of `signals` that make a [`SignalRecord`].
pub(super) const SIGNAL_COLUMNS: &str =
    "execution_id, seq, name, payload, signal_id, received_at, consumed_by";

/// Typed column access on a row of either backend.
pub(super) trait Columns {
    fn text(&self, column: &str) -> Result<Option<String>>;
    fn int(&self, column: &str) -> Result<Option<i64>>;
    fn flag(&self, column: &str) -> Result<bool>;

    fn string(&self, column: &str) -> Result<String> {
        self.text(column)?
            .ok_or_else(|| Error::Schema(format!("column {column} is NULL")))
    }

    fn number(&self, column: &str) -> Result<i64> {
        self.int(column)?
            .ok_or_else(|| Error::Schema(format!("column {column} is NULL")))
    }

    fn json(&self, column: &str) -> Result<Option<Value>> {
        self.text(column)?
            .map(|t| serde_json::from_str(&t))
            .transpose()
            .map_err(|e| Error::Schema(format!("corrupt JSON in column {column}: {e}")))
    }
}

impl<R: Row> Columns for R
where
    for<'a> &'a str: ColumnIndex<R>,
    for<'r> String: Decode<'r, R::Database> + Type<R::Database>,
    for<'r> i64: Decode<'r, R::Database> + Type<R::Database>,
    for<'r> bool: Decode<'r, R::Database> + Type<R::Database>,
{
    fn text(&self, column: &str) -> Result<Option<String>> {
        Ok(self.try_get(column)?)
    }

    fn int(&self, column: &str) -> Result<Option<i64>> {
        Ok(self.try_get(column)?)
    }

    fn flag(&self, column: &str) -> Result<bool> {
        Ok(self.try_get(column)?)
    }
}

pub(super) fn execution(row: &impl Columns) -> Result<ExecutionRecord> {
    let status = row.string("status")?;
    Ok(ExecutionRecord {
        id: row.string("id")?,
        tenant: row.string("tenant")?,
        package_sha256: row.string("package_sha256")?,
        package_name: row.string("package_name")?,
        package_version: row.number("package_version")?,
        workflow: row.string("workflow")?,
        input: row.json("input")?.unwrap_or(Value::Null),
        status: Status::parse(&status)
            .ok_or_else(|| Error::Schema(format!("unknown status {status:?}")))?,
        result: row.json("result")?,
        error: row
            .json("error")?
            .map(serde_json::from_value)
            .transpose()
            .map_err(|e| Error::Schema(format!("corrupt execution error: {e}")))?,
        created_at_ms: row.number("created_at")?,
        updated_at_ms: row.number("updated_at")?,
        wake_at_ms: row.int("wake_at")?,
        owner: row.text("owner")?,
        epoch: row.number("epoch")?,
        cancel_requested: row.flag("cancel_requested")?,
        engine_failures: row.number("engine_failures")?,
        engine_error: row.text("engine_error")?,
        worker_queue: row.text("worker_queue")?,
        paused: row.flag("paused")?,
        continued_from: row.text("continued_from")?,
        parent_id: row.text("parent_id")?,
        detached: row.flag("detached")?,
        idempotency_key: row.text("idempotency_key")?,
    })
}

pub(super) fn package(row: &impl Columns) -> Result<PackageRecord> {
    Ok(PackageRecord {
        tenant: row.string("tenant")?,
        sha256: row.string("sha256")?,
        name: row.string("name")?,
        version: row.number("version")?,
        info: match row.json("info")? {
            Some(v) => serde_json::from_value(v)
                .map_err(|e| Error::Schema(format!("corrupt package info: {e}")))?,
            None => PackageInfo::default(),
        },
        created_at_ms: row.number("created_at")?,
        size_bytes: row.number("size")?,
    })
}

pub(super) fn tenant(row: &impl Columns) -> Result<TenantRecord> {
    let limits: StoredLimits = match row.json("limits")? {
        Some(v) => serde_json::from_value(v)
            .map_err(|e| Error::Schema(format!("corrupt tenant limits: {e}")))?,
        None => StoredLimits::default(),
    };
    let mut quotas = Quotas {
        max_package_bytes: row.int("max_package_bytes")?,
        max_open_executions: row.int("max_open_executions")?,
        max_payload_bytes: row.int("max_payload_bytes")?,
        ..Quotas::default()
    };
    limits.apply(&mut quotas);
    Ok(TenantRecord {
        name: row.string("name")?,
        created_at_ms: row.number("created_at")?,
        quotas,
        http_allow: limits.http_allow,
    })
}

/// The `info` column of a package, as stored.
pub(super) fn info_json(info: &PackageInfo) -> String {
    serde_json::to_string(info).unwrap_or_else(|_| "{}".into())
}

/// The `limits` column of a tenant, as stored.
pub(super) fn limits_json(quotas: &Quotas, http_allow: &[String]) -> String {
    serde_json::to_string(&StoredLimits::of(quotas, http_allow)).unwrap_or_else(|_| "{}".into())
}

pub(super) fn secret(row: &impl Columns) -> Result<SecretRecord> {
    Ok(SecretRecord {
        tenant: row.string("tenant")?,
        name: row.string("name")?,
        updated_at_ms: row.number("updated_at")?,
    })
}

pub(super) fn secret_not_found(tenant: &str, name: &str) -> Error {
    Error::NotFound(format!(
        "tenant '{tenant}' has no secret named '{name}'; `cerebelum admin secret list {tenant}` \
         shows its secrets"
    ))
}

pub(super) fn api_key(row: &impl Columns) -> Result<ApiKeyRecord> {
    Ok(ApiKeyRecord {
        id: row.string("id")?,
        tenant: row.string("tenant")?,
        created_at_ms: row.number("created_at")?,
        revoked_at_ms: row.int("revoked_at")?,
        expires_at_ms: row.int("expires_at")?,
        last_used_at_ms: row.int("last_used_at")?,
    })
}

pub(super) fn audit(row: &impl Columns) -> Result<AuditRecord> {
    Ok(AuditRecord {
        id: row.number("id")?,
        at_ms: row.number("at")?,
        tenant: row.string("tenant")?,
        actor: row.string("actor")?,
        origin: row.string("origin")?,
        action: row.string("action")?,
        target: row.string("target")?,
        detail: row.json("detail")?,
    })
}

pub(super) fn schedule(row: &impl Columns) -> Result<ScheduleRecord> {
    let overlap = row.string("overlap")?;
    Ok(ScheduleRecord {
        tenant: row.string("tenant")?,
        name: row.string("name")?,
        cron: row.string("cron")?,
        timezone: row.string("timezone")?,
        package: row.string("package")?,
        version: row.int("version")?,
        workflow: row.string("workflow")?,
        input: row.string("input")?,
        overlap: Overlap::parse(&overlap)
            .ok_or_else(|| Error::Schema(format!("unknown overlap policy {overlap:?}")))?,
        catch_up: row.number("catch_up")?,
        paused: row.flag("paused")?,
        next_due_ms: row.number("next_due")?,
        last_due_ms: row.int("last_due")?,
        last_execution: row.text("last_execution")?,
        last_error: row.text("last_error")?,
        fired: row.number("fired")?,
        skipped: row.number("skipped")?,
        created_at_ms: row.number("created_at")?,
    })
}

pub(super) fn schedule_not_found(tenant: &str, name: &str) -> Error {
    Error::NotFound(format!(
        "tenant '{tenant}' has no schedule named '{name}' (`cerebelum schedule list` shows them)"
    ))
}

pub(super) fn trigger(row: &impl Columns) -> Result<TriggerRecord> {
    Ok(TriggerRecord {
        tenant: row.string("tenant")?,
        name: row.string("name")?,
        package: row.string("package")?,
        version: row.int("version")?,
        workflow: row.string("workflow")?,
        hmac_secret: row.text("hmac_secret")?,
        token_hash: row.text("token_hash")?,
        created_at_ms: row.number("created_at")?,
    })
}

pub(super) fn trigger_not_found(tenant: &str, name: &str) -> Error {
    Error::NotFound(format!(
        "tenant '{tenant}' has no trigger named '{name}' (`cerebelum trigger list` shows them)"
    ))
}

pub(super) fn tenant_not_found(name: &str) -> Error {
    Error::NotFound(format!(
        "no tenant named '{name}'; create it with `cerebelum admin tenant create {name}`"
    ))
}

pub(super) fn tenant_exists(name: &str) -> Error {
    Error::Conflict(format!("tenant '{name}' exists already"))
}

pub(super) fn api_key_not_found(id: &str) -> Error {
    Error::NotFound(format!(
        "no API key with id '{id}'; `cerebelum admin key list TENANT` shows the ids"
    ))
}

pub(super) fn entry(row: &impl Columns) -> Result<Entry> {
    let event = Event::from_row(JournalRow {
        kind: row.string("kind")?,
        ref_seq: row.int("ref_seq")?,
        args_hash: row.text("args_hash")?,
        payload: row.json("payload")?.unwrap_or(Value::Null),
    })
    .map_err(Error::Schema)?;
    Ok(Entry {
        seq: row.number("seq")?,
        invocation: row.string("invocation")?,
        event,
        at_ms: row.number("at")?,
    })
}

pub(super) fn approval(row: &impl Columns) -> Result<ApprovalRecord> {
    Ok(ApprovalRecord {
        execution_id: row.string("execution_id")?,
        key: row.string("key")?,
        status: row.string("status")?,
        request: row.json("request")?.unwrap_or(Value::Null),
        decision: row.json("decision")?,
    })
}

pub(super) fn signal(row: &impl Columns) -> Result<SignalRecord> {
    Ok(SignalRecord {
        execution_id: row.string("execution_id")?,
        seq: row.number("seq")?,
        name: row.string("name")?,
        payload: row.json("payload")?.unwrap_or(Value::Null),
        signal_id: row.text("signal_id")?,
        received_at_ms: row.number("received_at")?,
        consumed_by: row.int("consumed_by")?,
    })
}

/// Signalling an execution that has ended.
pub(super) fn nothing_to_signal(execution: &ExecutionRecord) -> Error {
    Error::Conflict(format!(
        "execution {} is already {}; it takes no more signals",
        execution.id, execution.status
    ))
}

pub fn execution_not_found(id: &str) -> Error {
    Error::NotFound(format!(
        "no execution with id '{id}'; `cerebelum list` shows the executions"
    ))
}

pub(super) fn package_not_found(sha256: &str) -> Error {
    Error::NotFound(format!("no package with sha256 {sha256}"))
}

/// No package `name` (version `version`); `known` are the tenant's names
/// (or that package's versions, when only the version was wrong).
pub(super) fn no_package_named(name: &str, version: Option<i64>, known: &[String]) -> Error {
    let list = |what: &str| {
        if known.is_empty() {
            format!("{what}: none")
        } else {
            format!("{what}: {}", known.join(", "))
        }
    };
    Error::NotFound(match version {
        Some(v) if !known.is_empty() => {
            format!("package '{name}' has no version {v}; {}", list("versions"))
        }
        _ => format!("no package named '{name}'; {}", list("known packages")),
    })
}

/// The decision as stored: status and value.
pub(super) fn decision_columns(decision: &crate::model::Decision) -> (&'static str, Value) {
    match decision {
        crate::model::Decision::Approve(payload) => ("approved", payload.clone()),
        crate::model::Decision::Reject(reason) => ("rejected", Value::String(reason.clone())),
    }
}

/// Deciding approval `key` that the execution does not wait for.
pub(super) fn not_waiting_for(execution: &ExecutionRecord, key: &str, pending: &[String]) -> Error {
    let id = &execution.id;
    Error::Conflict(if pending.is_empty() {
        format!(
            "execution {id} ({}) is not waiting for approval '{key}': it is not waiting for any \
             approval",
            execution.status
        )
    } else {
        format!(
            "execution {id} is not waiting for approval '{key}'; it is waiting for: {}",
            pending.join(", ")
        )
    })
}

/// The outcome of deciding an approval that is no longer pending: the same
/// decision again is a success (idempotent), another one a conflict.
pub(super) fn decided_already(
    current: ApprovalRecord,
    status: &str,
    value: &Value,
) -> Result<ApprovalRecord> {
    if current.status == status && current.decision.as_ref() == Some(value) {
        return Ok(current);
    }
    Err(Error::Conflict(format!(
        "approval '{}' of execution {} is already {}{}",
        current.key,
        current.execution_id,
        current.status,
        current
            .decision
            .as_ref()
            .map(|d| format!(" ({d})"))
            .unwrap_or_default()
    )))
}

pub(super) fn nothing_to_cancel(execution: &ExecutionRecord) -> Error {
    Error::Conflict(format!(
        "execution {} is already {}; there is nothing to cancel",
        execution.id, execution.status
    ))
}

/// An operator may retry only failed or cancelled executions.
pub(super) fn check_retryable(execution: &ExecutionRecord) -> Result<()> {
    if matches!(execution.status, Status::Failed | Status::Cancelled) {
        return Ok(());
    }
    Err(Error::Conflict(format!(
        "execution {} is {}; only failed or cancelled executions can be retried",
        execution.id, execution.status
    )))
}

/// The `retried` entry an operator retry appends at `seq`.
pub(super) fn retried_entry(execution: &ExecutionRecord, seq: i64, now_ms: i64) -> Entry {
    Entry {
        seq,
        invocation: OPERATOR.into(),
        event: Event::Retried(Retried {
            previous_status: execution.status,
            error: execution.error.clone(),
        }),
        at_ms: now_ms,
    }
}

/// The `upgraded` entry an operator upgrade appends at `seq` (the one
/// after the journal's last now), if `execution` is as the replay check
/// that allowed the upgrade saw it: hibernated on `from_version`, its
/// journal ending at `last_seq`.
pub(super) fn upgraded_entry(
    execution: &ExecutionRecord,
    from_version: i64,
    last_seq: i64,
    seq: i64,
    to: &PackageRecord,
    now_ms: i64,
) -> Result<Entry> {
    let id = &execution.id;
    if execution.status != Status::Waiting {
        return Err(Error::Conflict(format!(
            "execution {id} is {}, not waiting: only a hibernated execution is upgraded",
            execution.status
        )));
    }
    if execution.package_version != from_version || seq != last_seq + 1 {
        return Err(Error::Conflict(format!(
            "execution {id} moved on while it was checked (now on v{}, {} journal entries); \
             upgrade it again",
            execution.package_version,
            seq - 1
        )));
    }
    Ok(Entry {
        seq,
        invocation: OPERATOR.into(),
        event: Event::Upgraded(Upgraded {
            from_version,
            from_package: execution.package_sha256.clone(),
            to_version: to.version,
            to_package: to.sha256.clone(),
        }),
        at_ms: now_ms,
    })
}

/// A migration error, or a schema newer than this binary, as one message.
pub(super) fn migrate_error(database: &str, e: sqlx::migrate::MigrateError) -> Error {
    match e {
        sqlx::migrate::MigrateError::VersionMissing(v) => Error::Schema(format!(
            "{database} was migrated to schema version {v}, which this cerebelum binary does not \
             know: it was written by a newer version; upgrade cerebelum"
        )),
        other => Error::Schema(format!("migrating {database}: {other}")),
    }
}
