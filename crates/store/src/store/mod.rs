//! Storage, split by who uses it: the [`Catalog`] (tenants, keys,
//! secrets, packages: the API and `cerebelum admin`), [`Executions`] (what
//! clients read and decide), and the [`Store`] itself (what engine nodes
//! write: group commits, claims, leases), with its durability contract.
//! Two backends: SQLite (embedded, one node) and PostgreSQL (any number of
//! nodes sharing one database). The SQL that is the same on both is
//! written once (`sql.rs`, generic over sqlx's `Database`); each backend
//! keeps only its hot path (`sqlite.rs` + `sqlite_commit.rs`,
//! `postgres.rs`).
//!
//! # Durability contract
//!
//! When [`Store::commit`] returns `Ok` for an operation, its journal
//! entries, side writes and status change are durable (on SQLite with
//! `synchronous=FULL`, flushed to disk; on PostgreSQL, committed with
//! `synchronous_commit=on`) and atomic: all or none of one
//! operation is stored. Every operation is fenced by the owner's epoch: if
//! another node has claimed the execution since, the operation is refused
//! with [`Error::LostOwnership`] and nothing of it is stored.
//!
//! # Which writes are durable when
//!
//! The engine writes through the group committer ([`JournalWriter`]),
//! which commits in order per execution: a write that is waited for makes
//! everything queued before it durable too. What is waited for, and why:
//!
//! - **A call's result, before user code sees it**: a step's result (or
//!   its failure after the last attempt), a poll's outcome, an error the
//!   engine answers a call with (unknown step, bad options), a delivered
//!   cancellation. The call entry itself and its `attempt` entries are
//!   *not* waited for: they ride in the result's commit (or the first
//!   commit within 10 ms after them: `RIDE_ALONG`). If the engine dies
//!   before, the workflow re-issues the same call on replay and the step
//!   runs again: at least once, as after any crash during a step.
//! - **What a step journals and then acts on**: an HTTP response is
//!   durable before the step reads it; a failed attempt's retry time is
//!   durable before the backoff starts (a crash does not restart it).
//! - **A worker task** (its `attempt` entry and [`SideWrite::OpenTask`],
//!   one commit) before any worker can claim it.
//! - **An approval's request** ([`SideWrite::OpenApproval`] with its call
//!   entry) before the engine looks for a decision on it.
//! - **A child's start**: its `start-child` entry and its creation
//!   ([`SideWrite::CreateChild`]), one commit fenced by the parent's
//!   epoch, before the parent's code gets the handle.
//! - **Status changes**: an execution's creation before its id is
//!   returned; hibernation ([`StatusChange::Waiting`]) and its end
//!   ([`StatusChange::Finished`]) before the node lets go of it.
//! - **A hibernated execution's due sleep**: its result, journaled by
//!   [`Store::fire_timers`] for every due execution in a few transactions
//!   (it names the sleep with the hibernation: [`Timer`]).
//!
//! Not waited for (committed with the next write that is, or within
//! `RIDE_ALONG`): call and attempt entries, the answers of the clock and
//! randomness (replayed only if they were stored before a result that
//! depends on them, which the order above guarantees), logs, captured
//! output, progress, a sleep's due time (an in-process sleep, until it
//! hibernates), the result of an elapsed sleep and of a decided approval
//! (the approval row and the clock hold them), a worker's outcome (its
//! task row holds it). A crash loses only such a suffix of a journal that
//! nobody has seen, and replay writes it anew.

mod feed;
mod group;
mod migrations;
mod ops;
mod postgres;
mod rows;
mod sql;
mod sqlite;
mod sqlite_commit;
mod sqlite_reads;
mod sqlite_tasks;
mod tasks;

pub use feed::{FeedEvent, Feeds, Follower};
pub use group::{CommitMetrics, GroupCommitter, JournalWriter, NewEntry, REDACTED, redact};
pub use ops::{Claim, CommitOp, Creation, FiredTimers, SideWrite, StatusChange, Timer};
pub use postgres::PgStore;
pub use rows::execution_not_found;
pub use sqlite::{SqliteStore, Synchronous};

use crate::error::Result;
use crate::journal::Entry;
use crate::model::{
    ApiKeyRecord, ApprovalRecord, AuditRecord, CallError, Decision, ExecutionRecord, ListFilter,
    NewExecution, NodeRecord, PackageInfo, PackageRecord, Quotas, ScheduleAdvance, ScheduleRecord,
    SecretRecord, SignalRecord, StepCallRecord, TaskBeat, TaskClaim, TaskId, TaskRecord, TaskToken,
    TenantRecord, TriggerRecord, WorkerRecord,
};
use async_trait::async_trait;
use serde_json::Value;
use std::sync::Arc;

/// Tenants, their API keys and secrets, and packages: what the API and
/// `cerebelum admin` manage. Written once for both backends (`sql.rs`).
#[async_trait]
pub trait Catalog: Send + Sync {
    /// Creates a tenant; a conflict if the name is taken.
    async fn create_tenant(
        &self,
        name: &str,
        quotas: &Quotas,
        http_allow: &[String],
        now_ms: i64,
    ) -> Result<TenantRecord>;

    /// Replaces a tenant's quotas (`None`: the server default) and HTTP
    /// allow-list.
    async fn update_tenant(
        &self,
        name: &str,
        quotas: &Quotas,
        http_allow: &[String],
    ) -> Result<TenantRecord>;

    async fn tenant(&self, name: &str) -> Result<TenantRecord>;

    /// Every tenant, by name.
    async fn list_tenants(&self) -> Result<Vec<TenantRecord>>;

    /// Sets (creates or replaces) a secret of `tenant`.
    async fn set_secret(
        &self,
        tenant: &str,
        name: &str,
        value: &str,
        now_ms: i64,
    ) -> Result<SecretRecord>;

    /// Deletes a secret; not found if there is none by that name.
    async fn delete_secret(&self, tenant: &str, name: &str) -> Result<()>;

    /// The names of a tenant's secrets (never their values), by name.
    async fn list_secrets(&self, tenant: &str) -> Result<Vec<SecretRecord>>;

    /// A tenant's secrets with their values, for the sandbox only.
    async fn secret_values(&self, tenant: &str) -> Result<Vec<(String, String)>>;

    /// Stores a new API key of `key.tenant` by the SHA-256 of its secret.
    async fn add_api_key(&self, key: &ApiKeyRecord, hash: &str) -> Result<()>;

    /// Revokes the key (a tenant's or an operator's) with this id at once
    /// (idempotent).
    async fn revoke_api_key(&self, id: &str, now_ms: i64) -> Result<ApiKeyRecord>;

    /// Stores a new operator key (see [`ApiKeyRecord::tenant`]) by the
    /// SHA-256 of its secret.
    async fn add_operator_key(&self, key: &ApiKeyRecord, hash: &str) -> Result<()>;

    /// The operator keys, revoked ones included, oldest first.
    async fn list_operator_keys(&self) -> Result<Vec<ApiKeyRecord>>;

    /// The id of the operator key whose secret hashes to `hash`, if it is
    /// neither revoked nor expired at `now_ms`.
    async fn operator_by_key(&self, hash: &str, now_ms: i64) -> Result<Option<String>>;

    /// A tenant's keys, revoked ones included, oldest first.
    async fn list_api_keys(&self, tenant: &str) -> Result<Vec<ApiKeyRecord>>;

    /// The tenant of the key whose secret hashes to `hash`, if it is
    /// neither revoked nor expired at `now_ms`.
    async fn tenant_by_key(&self, hash: &str, now_ms: i64) -> Result<Option<TenantRecord>>;

    /// Records that the key (a tenant's or an operator's) whose secret
    /// hashes to `hash` was used at `now_ms`.
    async fn key_used(&self, hash: &str, now_ms: i64) -> Result<()>;

    /// Appends a row to the audit log (its `id` is assigned).
    async fn append_audit(&self, record: &AuditRecord) -> Result<()>;

    /// The audit log, newest first: of one tenant, or of all; only rows
    /// older than `before_id` (to page back); at most `limit`.
    async fn list_audit(
        &self,
        tenant: Option<&str>,
        before_id: Option<i64>,
        limit: i64,
    ) -> Result<Vec<AuditRecord>>;

    /// Stores a new schedule; Conflict if its tenant has one of that name.
    async fn create_schedule(&self, schedule: &ScheduleRecord) -> Result<()>;

    /// Schedule `name` of `tenant` (NotFound if none).
    async fn schedule(&self, tenant: &str, name: &str) -> Result<ScheduleRecord>;

    /// A tenant's schedules, by name.
    async fn list_schedules(&self, tenant: &str) -> Result<Vec<ScheduleRecord>>;

    /// Pauses or resumes a schedule; `next_due_ms`, if given, replaces its
    /// next due time.
    async fn set_schedule_paused(
        &self,
        tenant: &str,
        name: &str,
        paused: bool,
        next_due_ms: Option<i64>,
    ) -> Result<ScheduleRecord>;

    async fn delete_schedule(&self, tenant: &str, name: &str) -> Result<()>;

    /// Schedules of every tenant due at `now_ms` and not paused, earliest
    /// first, at most `limit`.
    async fn due_schedules(&self, now_ms: i64, limit: i64) -> Result<Vec<ScheduleRecord>>;

    /// Moves schedules on, each if its next due time is still its
    /// `from_due_ms` (compare-and-set: of several nodes firing it, one
    /// moves it), in one transaction; whether each moved.
    async fn advance_schedules(&self, advances: &[ScheduleAdvance]) -> Result<Vec<bool>>;

    /// Stores a new trigger; Conflict if its tenant has one of that name.
    async fn create_trigger(&self, trigger: &TriggerRecord) -> Result<()>;

    /// Trigger `name` of `tenant` (NotFound if none).
    async fn trigger(&self, tenant: &str, name: &str) -> Result<TriggerRecord>;

    /// A tenant's triggers, by name.
    async fn list_triggers(&self, tenant: &str) -> Result<Vec<TriggerRecord>>;

    async fn delete_trigger(&self, tenant: &str, name: &str) -> Result<()>;

    /// Stores a package version of `tenant`. Idempotent: identical bytes
    /// (same sha256) under the same name return the existing record; new
    /// bytes under a known name get the next version. Bytes are stored
    /// once, whatever names they are uploaded under.
    async fn put_package(
        &self,
        tenant: &str,
        name: &str,
        sha256: &str,
        bytes: &[u8],
        info: &PackageInfo,
        now_ms: i64,
    ) -> Result<PackageRecord>;

    /// The tenant's package with this sha256 (the newest, if several
    /// packages have those bytes).
    async fn package(&self, tenant: &str, sha256: &str) -> Result<PackageRecord>;

    /// The bytes of the package with this sha256 (of whichever tenant:
    /// the hash names the bytes).
    async fn package_bytes(&self, sha256: &str) -> Result<Vec<u8>>;

    /// Every package version of the tenant, by name then version.
    async fn list_packages(&self, tenant: &str) -> Result<Vec<PackageRecord>>;

    /// The tenant's package called `name`: that version, or the newest.
    async fn find_package(
        &self,
        tenant: &str,
        name: &str,
        version: Option<i64>,
    ) -> Result<PackageRecord>;
}

/// Counts read from the database at each scrape of `/metrics`.
pub use crate::metrics::Gauges;

/// What clients read and decide about executions: records, journals,
/// approvals, cancellation and operator retries. Written once for both
/// backends (`sql.rs`). Decisions, cancels and retries wake the execution
/// (its `wake_at`, and a `NOTIFY` on PostgreSQL).
#[async_trait]
pub trait Executions: Send + Sync {
    /// The tenant's executions that are pending, running or waiting.
    async fn count_open_executions(&self, tenant: &str) -> Result<i64>;

    /// The tenant's open execution with the longest journal, and its
    /// length (the journal limit is per execution).
    async fn longest_open_journal(&self, tenant: &str) -> Result<Option<(String, i64)>>;

    async fn execution(&self, id: &str) -> Result<ExecutionRecord>;

    /// Newest first.
    async fn list_executions(&self, filter: &ListFilter) -> Result<Vec<ExecutionRecord>>;

    /// Tenant `tenant`'s executions whose idempotency key starts with
    /// `prefix` (e.g. a trigger's deliveries), newest first, at most
    /// `limit`.
    async fn keyed_executions(
        &self,
        tenant: &str,
        prefix: &str,
        limit: i64,
    ) -> Result<Vec<ExecutionRecord>>;

    /// How many executions `filter` finds in each status (its status,
    /// paging and limit left out); statuses without any are left out.
    async fn count_by_status(
        &self,
        filter: &ListFilter,
    ) -> Result<Vec<(crate::model::Status, i64)>>;

    /// The nodes that own running executions now, by node id.
    async fn nodes(&self) -> Result<Vec<NodeRecord>>;

    /// Counts for `/metrics`: open executions by tenant and status, queued
    /// tasks by tenant and worker queue, and workers by tenant and queue
    /// seen polling since `seen_since_ms`.
    async fn gauges(&self, seen_since_ms: i64) -> Result<Gauges>;

    /// Journal entries with `seq > after_seq`, in order.
    async fn journal(&self, id: &str, after_seq: i64) -> Result<Vec<Entry>>;

    /// The last `report-progress` call of execution `id`, if it made one.
    async fn latest_progress(&self, id: &str) -> Result<Option<Entry>>;

    async fn approvals(&self, execution_id: &str) -> Result<Vec<ApprovalRecord>>;

    /// Records an operator's decision and wakes the execution. Idempotent
    /// for the same decision; an error if the execution is not waiting on
    /// `key` or it was decided differently.
    async fn decide_approval(
        &self,
        execution_id: &str,
        key: &str,
        decision: &Decision,
        now_ms: i64,
    ) -> Result<ApprovalRecord>;

    /// Stores signal `name` for the execution (buffered until an
    /// `await-signal` takes it) and wakes it. With `signal_id` that was
    /// sent before, returns that signal instead (`false`: not new); a
    /// conflict if it had another name or payload. Refused once the
    /// execution has ended, or with `max_buffered` signals waiting.
    async fn send_signal(
        &self,
        execution_id: &str,
        signal: &NewSignal,
        max_buffered: i64,
        now_ms: i64,
    ) -> Result<(SignalRecord, bool)>;

    /// The signals the execution received that no `await-signal` has
    /// taken yet, in order.
    async fn buffered_signals(&self, execution_id: &str) -> Result<Vec<SignalRecord>>;

    /// The first buffered signal named `name`.
    async fn next_signal(&self, execution_id: &str, name: &str) -> Result<Option<SignalRecord>>;

    /// Requests cancellation and wakes the execution.
    async fn request_cancel(&self, execution_id: &str, now_ms: i64) -> Result<ExecutionRecord>;

    /// Pauses (`true`) or resumes an execution and wakes it: paused, it
    /// runs no new invocation; resumed, it is due at once. A conflict once
    /// it has ended.
    async fn set_paused(
        &self,
        execution_id: &str,
        paused: bool,
        now_ms: i64,
    ) -> Result<ExecutionRecord>;

    /// Operator retry of a failed or cancelled execution: appends a
    /// `retried` entry and makes it pending again.
    async fn retry_execution(&self, execution_id: &str, now_ms: i64) -> Result<ExecutionRecord>;

    /// Operator upgrade of a hibernated execution to package version `to`:
    /// appends an `upgraded` entry and moves it to `to`, in one
    /// transaction, if it still waits on version `from_version` with
    /// `last_seq` its journal's last entry (what the replay check that
    /// allowed it saw); else a conflict, and nothing changes.
    async fn upgrade_execution(
        &self,
        execution_id: &str,
        from_version: i64,
        last_seq: i64,
        to: &PackageRecord,
        now_ms: i64,
    ) -> Result<ExecutionRecord>;

    /// Keeps an upgrade asked for an execution that does not wait yet, to
    /// apply when it hibernates (replacing one asked before). Removed by
    /// [`Executions::upgrade_execution`], in its transaction, or
    /// [`Executions::drop_upgrade`].
    async fn request_upgrade(&self, upgrade: &PendingUpgrade) -> Result<()>;

    /// The upgrade asked for `execution_id` and not applied yet, if any.
    async fn pending_upgrade(&self, execution_id: &str) -> Result<Option<PendingUpgrade>>;

    /// Upgrades asked for executions that now wait or have ended (what
    /// is left to do about them), at most `limit`, oldest asked first.
    async fn due_upgrades(&self, limit: i64) -> Result<Vec<PendingUpgrade>>;

    /// Forgets the upgrade asked for `execution_id`.
    async fn drop_upgrade(&self, execution_id: &str) -> Result<()>;
}

/// An upgrade asked for an execution that was running: see
/// [`Executions::request_upgrade`].
#[derive(Debug, Clone, PartialEq)]
pub struct PendingUpgrade {
    pub execution_id: String,
    /// The version of its package to move it to.
    pub to_version: i64,
    /// Who asked, for the audit record of the outcome.
    pub actor: String,
    pub origin: String,
    pub requested_at_ms: i64,
}

/// A signal as sent: see [`Executions::send_signal`].
#[derive(Debug, Clone)]
pub struct NewSignal {
    pub name: String,
    pub payload: Value,
    pub signal_id: Option<String>,
}

/// The durable task queue of external workers (see [`crate::model::TaskSpec`]):
/// tasks are created by group commits ([`SideWrite::OpenTask`]); workers
/// claim, heartbeat and complete them here, always within their tenant.
/// Written once for both backends (`tasks.rs`); claims skip rows another
/// transaction holds (`FOR UPDATE SKIP LOCKED` on PostgreSQL).
#[async_trait]
pub trait Tasks: Send + Sync {
    /// Claims the oldest task of the tenant's `queue` that `worker` may
    /// take (one sticky to it first; none sticky to another worker until
    /// its window ends; none past its schedule-to-start deadline), with a
    /// new fencing token.
    async fn claim_task(
        &self,
        tenant: &str,
        queue: &str,
        worker: &str,
        now_ms: i64,
    ) -> Result<Option<TaskClaim>>;

    /// Records a heartbeat (and its progress) of the claim `token`,
    /// extending its deadline. Refused ([`crate::Error::Conflict`]) once
    /// the claim is no longer current: timed out (this call may be the
    /// one that finds it so), handed back or completed.
    async fn heartbeat_task(
        &self,
        tenant: &str,
        token: &TaskToken,
        progress: Option<&Value>,
        now_ms: i64,
    ) -> Result<TaskBeat>;

    /// Stores the outcome of the claim `token` and wakes its execution.
    /// Idempotent for the same claim; refused, storing nothing, once the
    /// claim is no longer current.
    async fn complete_task(
        &self,
        tenant: &str,
        token: &TaskToken,
        outcome: &std::result::Result<Value, CallError>,
        now_ms: i64,
    ) -> Result<()>;

    /// Hands a claimed task back to its queue: the claim ends and another
    /// worker may take it at once (a worker stopping), or from
    /// `resume_at_ms` on (a worker step's long wait: the step waits
    /// durably, and whoever takes it then replays its [`Self::step_calls`]).
    async fn release_task(
        &self,
        tenant: &str,
        token: &TaskToken,
        resume_at_ms: Option<i64>,
        now_ms: i64,
    ) -> Result<()>;

    /// The durable calls the step of task `id` inherits, in order: those
    /// its step call's earlier attempts recorded, back to the last attempt
    /// the step itself completed (a failure: the next attempt starts
    /// afresh), and its own.
    async fn step_calls(&self, id: &TaskId) -> Result<Vec<StepCallRecord>>;

    /// The calls of `kind` that attempt `id` itself recorded, in order
    /// (not those it inherited): the `output` its step printed, which the
    /// engine journals with the attempt's outcome.
    async fn attempt_calls(&self, id: &TaskId, kind: &str) -> Result<Vec<StepCallRecord>>;

    /// Records the next durable calls of the step the claim `token` runs,
    /// in order, in one transaction (the first one's `position` must be
    /// the length of its history, the others follow it). A call sent
    /// again (the same position, kind and arguments: a retried request)
    /// keeps the one recorded; a different call where one is recorded
    /// is refused as nondeterminism ([`crate::Error::Conflict`]), as is a
    /// claim no longer current. With `approval` (its key and request), the
    /// last call waits for a person: the approval is opened (pending) in
    /// the same transaction, for `cerebelum approve` and the console to
    /// decide. The last call as recorded; `calls` must not be empty.
    async fn record_step_calls(
        &self,
        tenant: &str,
        token: &TaskToken,
        calls: &[StepCallRecord],
        approval: Option<(&str, &Value)>,
        now_ms: i64,
    ) -> Result<StepCallRecord>;

    /// Answers the `signal` call that step call `id` recorded at
    /// `position` if it still waits: with the next signal `name` the
    /// execution received that nothing took (taken by it, for good), or,
    /// from `due_at_ms` on, with a timeout. The call as it now stands.
    async fn resolve_step_signal(
        &self,
        id: &TaskId,
        position: i64,
        name: &str,
        due_at_ms: Option<i64>,
        now_ms: i64,
    ) -> Result<StepCallRecord>;

    async fn task(&self, id: &TaskId) -> Result<TaskRecord>;

    /// The tasks of execution `execution_id` no worker has finished
    /// (queued or claimed), in call order.
    async fn open_tasks(&self, execution_id: &str) -> Result<Vec<TaskRecord>>;

    /// Times the task out if its deadline has passed (its outcome then
    /// says which timeout), and returns it as it now stands.
    async fn time_out_task(&self, id: &TaskId, now_ms: i64) -> Result<TaskRecord>;

    /// Registers (or re-registers) a worker of `tenant`.
    async fn register_worker(&self, worker: &WorkerRecord) -> Result<()>;

    /// Notes that a worker is alive; `false` if it is not registered (it
    /// should register again).
    async fn worker_seen(&self, tenant: &str, worker_id: &str, now_ms: i64) -> Result<bool>;

    async fn remove_worker(&self, tenant: &str, worker_id: &str) -> Result<()>;

    /// The tenant's workers seen since `seen_since_ms`, by queue then id,
    /// with the tasks each holds.
    async fn list_workers(&self, tenant: &str, seen_since_ms: i64) -> Result<Vec<WorkerRecord>>;

    /// The tenant's tasks waiting for a worker, by queue.
    async fn queued_by_queue(&self, tenant: &str) -> Result<Vec<(String, i64)>>;
}

/// The engine's storage: its [`Catalog`] and [`Executions`], and what
/// engine nodes write (group commits, claims, leases). See the module docs
/// for the durability contract.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Tenants, keys, secrets and packages.
    fn catalog(&self) -> &dyn Catalog;

    /// Executions as clients read and act on them.
    fn executions(&self) -> &dyn Executions;

    /// The task queue of external workers.
    fn tasks(&self) -> &dyn Tasks;

    /// Creates an execution: `pending` and due at once, or, with `owner`
    /// (node, lease expiry), already claimed by that node at epoch 1 so it
    /// can drive it without a round trip. With an idempotency key that the
    /// tenant used before, returns the earlier execution instead. (Starts
    /// are created in the group commit, [`Store::commit`]; this is for
    /// children and continue-as-new.)
    async fn create_execution(
        &self,
        new: NewExecution,
        now_ms: i64,
        owner: Option<(&str, i64)>,
    ) -> Result<ExecutionRecord>;

    /// Commits many operations in one transaction (group commit). Each
    /// operation gets its own result: a fenced-off one fails alone. A
    /// creation whose idempotency key the tenant used before (or an
    /// earlier creation of the batch took) fails alone with
    /// [`KeyTaken`](crate::error::Error::KeyTaken), naming the execution
    /// that has it. Called from the group-commit thread only: a backend
    /// may block in it.
    async fn commit(&self, ops: Vec<CommitOp>, now_ms: i64) -> Result<Vec<Result<()>>>;

    /// Claims up to `limit` executions that are due (pending, waiting with
    /// `wake_at <= now`, or running under an expired lease) for `owner`,
    /// bumping their fencing epoch.
    async fn claim_due(
        &self,
        owner: &str,
        now_ms: i64,
        lease_ms: i64,
        limit: i64,
    ) -> Result<Vec<Claim>>;

    /// Fires due timers: for hibernated executions whose [`Timer`] is due
    /// at `now_ms` (and that are not paused), journals the sleep's result
    /// (`null`, at `now_ms`, under the sleep's invocation) and clears the
    /// timer, in one transaction per up to `limit` timers (PostgreSQL runs
    /// a few such transactions at once, over parts of the timers). It touches no
    /// lease or epoch: a hibernated execution has no owner, and the node
    /// that claims it next reads the result with the rest of its journal.
    /// Also says when the next waiting execution is due.
    async fn fire_timers(&self, now_ms: i64, limit: i64) -> Result<FiredTimers>;

    /// Extends the leases `owner` holds; returns, for each of them, what
    /// operators asked of it (a cancellation, a pause).
    async fn renew_leases(&self, owner: &str, now_ms: i64, lease_ms: i64) -> Result<Vec<Renewed>>;

    /// Gives up ownership after an engine failure (not a failure of user
    /// code): counts it on the execution (with its message) and makes the
    /// execution due again on any node after a delay that doubles with
    /// each failure in a row (see [`EngineFailure`]).
    async fn abandon(&self, execution_id: &str, epoch: i64, failure: &EngineFailure) -> Result<()>;

    /// Gives up every lease `owner` holds (graceful shutdown).
    async fn release_leases(&self, owner: &str) -> Result<()>;

    /// Resolves a pending approval as timed out, unless it was decided
    /// meanwhile. Returns the approval as it now stands.
    async fn time_out_approval(
        &self,
        execution_id: &str,
        key: &str,
        now_ms: i64,
    ) -> Result<ApprovalRecord>;

    /// Calls `due` whenever another process may have made an execution
    /// claimable (a start, an approval, a cancel, a released lease), so
    /// the scheduler claims it at once instead of at its next tick. Returns
    /// the listening task, or `None` where the backend cannot listen
    /// (SQLite: one node, polling only).
    async fn listen_due(&self, due: DueCallback) -> Result<Option<tokio::task::JoinHandle<()>>> {
        let _ = due;
        Ok(None)
    }
}

/// A lease [`Store::renew_leases`] extended, with what operators asked.
#[derive(Debug, Clone, PartialEq)]
pub struct Renewed {
    pub execution_id: String,
    pub cancel_requested: bool,
    pub paused: bool,
}

/// An engine failure of an execution, for [`Store::abandon`]: the
/// execution is due again `base_delay_ms << (failures before this one)`
/// after `now_ms`, at most `max_delay_ms`.
#[derive(Debug, Clone)]
pub struct EngineFailure {
    pub error: String,
    pub now_ms: i64,
    pub base_delay_ms: i64,
    pub max_delay_ms: i64,
}

/// A database URL fit for messages and logs: any password masked.
pub fn redacted(url: &str) -> String {
    postgres::redact(url)
}

/// What [`Store::listen_due`] calls.
pub type DueCallback = Box<dyn Fn() + Send + Sync>;

/// A shared store handle.
pub type SharedStore = Arc<dyn Store>;

/// Opens the store named by `url`: `postgres://…` (or `postgresql://…`)
/// for PostgreSQL, else a file path or `sqlite://path` for SQLite.
pub async fn open(url: &str, sync: Synchronous) -> Result<SharedStore> {
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        return Ok(Arc::new(PgStore::open(url, sync).await?));
    }
    let path = url.strip_prefix("sqlite://").unwrap_or(url);
    Ok(Arc::new(SqliteStore::open(path, sync).await?))
}
