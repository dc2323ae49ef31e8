//! The records the engine stores: packages, executions, journal entries,
//! approvals. Backends map them to tables; nothing here knows SQL.

mod call_error;
mod package;
mod task;

pub use call_error::{CallError, ErrorKind};
pub use package::{
    CheckedExecution, MIN_HEARTBEAT_MS, PackageCheck, PackageInfo, Placement, RetryPolicy,
    StepInfo, StepOptions, UpgradeResult, WorkflowInfo,
};
pub use task::{
    StepCallRecord, TaskBeat, TaskClaim, TaskId, TaskRecord, TaskSpec, TaskStatus, TaskTimeouts,
    TaskToken, WorkerRecord, check_queue_name,
};

use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::fmt;

/// Status of an execution.
///
/// `pending` → `running` ⇄ `waiting` → `completed` | `failed` | `cancelled`;
/// an operator retry moves `failed`/`cancelled` back to `pending`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Started, not yet claimed by a node.
    Pending,
    /// Owned by a node that is driving it (holds an instance or runs a step).
    Running,
    /// Hibernated: no instance; woken at `wake_at` or by an approval/cancel.
    Waiting,
    Completed,
    Failed,
    Cancelled,
}

impl Status {
    /// Every status, in the order an execution goes through them.
    pub const ALL: [Status; 6] = [
        Status::Pending,
        Status::Running,
        Status::Waiting,
        Status::Completed,
        Status::Failed,
        Status::Cancelled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Status::Pending => "pending",
            Status::Running => "running",
            Status::Waiting => "waiting",
            Status::Completed => "completed",
            Status::Failed => "failed",
            Status::Cancelled => "cancelled",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "pending" => Status::Pending,
            "running" => Status::Running,
            "waiting" => Status::Waiting,
            "completed" => Status::Completed,
            "failed" => Status::Failed,
            "cancelled" => Status::Cancelled,
            _ => return None,
        })
    }

    /// Completed, failed or cancelled: nothing will run unless retried.
    pub fn is_terminal(self) -> bool {
        matches!(self, Status::Completed | Status::Failed | Status::Cancelled)
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The tenant of everything stored before tenants existed, and of the
/// local commands (those without `--server`).
pub const DEFAULT_TENANT: &str = "default";

/// A tenant: the owner of packages and executions, isolated from the others.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct TenantRecord {
    pub name: String,
    pub created_at_ms: i64,
    /// Its own limits; `None` where the server's default applies.
    pub quotas: Quotas,
    /// Where its steps may send HTTP requests (see [`crate::http::AllowList`]
    /// for the forms of an entry); empty: nowhere.
    pub http_allow: Vec<String>,
}

/// Per-tenant limits. As stored, `None` means "the server's default".
///
/// The first three are checked by the API; the others by the sandbox, on
/// every invocation (one run of workflow code, or one step attempt).
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq)]
pub struct Quotas {
    /// Largest package (.wasm) that may be uploaded, bytes.
    pub max_package_bytes: Option<i64>,
    /// Executions not yet completed, failed or cancelled (pending, running
    /// or waiting) at once.
    pub max_open_executions: Option<i64>,
    /// Largest JSON payload: an execution's input, an approval's payload,
    /// a step's input or result, bytes.
    pub max_payload_bytes: Option<i64>,
    /// Linear memory of one invocation, bytes.
    pub memory_bytes: Option<i64>,
    /// CPU time of one invocation, ms (a step's own timeout may be lower).
    pub cpu_ms: Option<i64>,
    /// Fuel (about one unit per wasm instruction) one execution may burn
    /// in all its invocations, when the server meters fuel (`--fuel`).
    pub fuel: Option<i64>,
    /// Journal entries of one execution.
    pub max_journal_entries: Option<i64>,
    /// Captured stdout + stderr of one invocation, bytes; more is dropped.
    pub max_output_bytes: Option<i64>,
    /// Body of one HTTP response a step receives, bytes.
    pub max_response_bytes: Option<i64>,
    /// Invocations of the tenant running guest code at once (on this node).
    pub max_concurrency: Option<i64>,
    /// Journaled host calls per second the tenant's code may make (on this
    /// node) while other tenants have work there; faster callers wait, off
    /// their CPU time. A tenant alone is not slowed.
    pub max_journal_rate: Option<i64>,
    /// Watch streams the tenant may have open at once (on this node).
    pub max_streams: Option<i64>,
    /// Executions the tenant may start per second (on this node) while
    /// other tenants have work there; faster starts wait, and are refused
    /// if they would wait too long. A tenant alone is not slowed.
    pub max_start_rate: Option<i64>,
}

impl Quotas {
    /// These quotas, with `defaults` where they have none.
    pub fn or(self, defaults: Quotas) -> Quotas {
        Quotas {
            max_package_bytes: self.max_package_bytes.or(defaults.max_package_bytes),
            max_open_executions: self.max_open_executions.or(defaults.max_open_executions),
            max_payload_bytes: self.max_payload_bytes.or(defaults.max_payload_bytes),
            memory_bytes: self.memory_bytes.or(defaults.memory_bytes),
            cpu_ms: self.cpu_ms.or(defaults.cpu_ms),
            fuel: self.fuel.or(defaults.fuel),
            max_journal_entries: self.max_journal_entries.or(defaults.max_journal_entries),
            max_output_bytes: self.max_output_bytes.or(defaults.max_output_bytes),
            max_response_bytes: self.max_response_bytes.or(defaults.max_response_bytes),
            max_concurrency: self.max_concurrency.or(defaults.max_concurrency),
            max_journal_rate: self.max_journal_rate.or(defaults.max_journal_rate),
            max_streams: self.max_streams.or(defaults.max_streams),
            max_start_rate: self.max_start_rate.or(defaults.max_start_rate),
        }
    }
}

/// The built-in quotas of tenants that set none of their own (a server
/// changes them with the same flags on `serve`). Memory and CPU are `None`:
/// the engine's `--memory-limit-mb` and step timeouts apply.
pub const DEFAULT_QUOTAS: Quotas = Quotas {
    max_package_bytes: Some(64 << 20),
    max_open_executions: Some(10_000),
    max_payload_bytes: Some(1 << 20),
    memory_bytes: None,
    cpu_ms: None,
    fuel: None,
    max_journal_entries: Some(100_000),
    max_output_bytes: Some(64 << 10),
    max_response_bytes: Some(10 << 20),
    max_concurrency: None,
    max_journal_rate: Some(DEFAULT_JOURNAL_RATE),
    max_streams: Some(100),
    max_start_rate: Some(DEFAULT_START_RATE),
};

/// The built-in [`Quotas::max_journal_rate`] (it applies only while other
/// tenants have work on the node). A journaled call costs the engine work
/// outside the guest's turns on the cores (the host call, the journal
/// write, its share of a commit): on two cores, a tenant fanning out steps
/// made a neighbour's 3-step workflow 3.2-5.3x slower at 10,000 calls a
/// second, 1.2-2.5x at 2,000 and 1.3-1.6x at 1,000 (`--bench hostile`,
/// issue 31). A node with more cores can take more: `serve
/// --max-journal-rate`.
pub const DEFAULT_JOURNAL_RATE: i64 = 1_000;

/// The built-in [`Quotas::max_start_rate`] (it too applies only while other
/// tenants have work on the node). Each execution that starts and ends
/// costs the engine work outside the guest's turns on the cores (its
/// creation's commit, instantiating its workflow and steps, its end, the
/// feed of whoever watches it): on two cores, a tenant whose executions
/// fail at once and are started again (a stack overflow, a denied HTTP
/// request, 64 KiB printed) slowed a neighbour 1.5-2.1x at 100 starts a
/// second, 0.9-1.4x at 50 (`--bench hostile`, issue 31). A node with more
/// cores can take more: `serve --max-start-rate`.
pub const DEFAULT_START_RATE: i64 = 50;

/// What the `limits` column of `tenants` holds (JSON): the sandbox part of
/// [`Quotas`] and the HTTP allow-list.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct StoredLimits {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_bytes: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_ms: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fuel: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_journal_entries: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_output_bytes: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_response_bytes: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_concurrency: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_journal_rate: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_streams: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_start_rate: Option<i64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub http_allow: Vec<String>,
}

impl StoredLimits {
    pub fn of(quotas: &Quotas, http_allow: &[String]) -> Self {
        Self {
            memory_bytes: quotas.memory_bytes,
            cpu_ms: quotas.cpu_ms,
            fuel: quotas.fuel,
            max_journal_entries: quotas.max_journal_entries,
            max_output_bytes: quotas.max_output_bytes,
            max_response_bytes: quotas.max_response_bytes,
            max_concurrency: quotas.max_concurrency,
            max_journal_rate: quotas.max_journal_rate,
            max_streams: quotas.max_streams,
            max_start_rate: quotas.max_start_rate,
            http_allow: http_allow.to_vec(),
        }
    }

    /// Fills the sandbox fields of `quotas`.
    pub fn apply(&self, quotas: &mut Quotas) {
        quotas.memory_bytes = self.memory_bytes;
        quotas.cpu_ms = self.cpu_ms;
        quotas.fuel = self.fuel;
        quotas.max_journal_entries = self.max_journal_entries;
        quotas.max_output_bytes = self.max_output_bytes;
        quotas.max_response_bytes = self.max_response_bytes;
        quotas.max_concurrency = self.max_concurrency;
        quotas.max_journal_rate = self.max_journal_rate;
        quotas.max_streams = self.max_streams;
        quotas.max_start_rate = self.max_start_rate;
    }
}

/// A named secret of a tenant, without its value.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct SecretRecord {
    pub tenant: String,
    pub name: String,
    pub updated_at_ms: i64,
}

/// An API key as stored: only a hash of the secret is kept.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ApiKeyRecord {
    /// The key's public prefix, e.g. `ck_3f9a1c0d`; names it for `revoke`.
    pub id: String,
    /// Its tenant; empty for an operator key, which belongs to no tenant
    /// and sees them all in the console.
    pub tenant: String,
    pub created_at_ms: i64,
    pub revoked_at_ms: Option<i64>,
    /// Refused from then on; `None`: never.
    pub expires_at_ms: Option<i64>,
    /// When it last authenticated a request (to a minute; `None`: never).
    pub last_used_at_ms: Option<i64>,
}

impl ApiKeyRecord {
    /// `active`, `revoked` or `expired` at `now_ms`.
    pub fn state(&self, now_ms: i64) -> &'static str {
        if self.revoked_at_ms.is_some() {
            "revoked"
        } else if self.expires_at_ms.is_some_and(|at| at <= now_ms) {
            "expired"
        } else {
            "active"
        }
    }
}

/// What a due time of a schedule does while the execution started by the
/// one before is still open (pending, running or waiting).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Overlap {
    /// Starts nothing (counted as skipped).
    Skip,
    /// Waits until that execution ends, then starts one (later due times
    /// that pass meanwhile collapse into it).
    BufferOne,
    /// Starts another regardless.
    Allow,
}

impl Overlap {
    pub const ALL: [Overlap; 3] = [Overlap::Skip, Overlap::BufferOne, Overlap::Allow];

    pub fn as_str(self) -> &'static str {
        match self {
            Overlap::Skip => "skip",
            Overlap::BufferOne => "buffer-one",
            Overlap::Allow => "allow",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|o| o.as_str() == text)
    }
}

impl fmt::Display for Overlap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A schedule: a tenant's workflow started at the due times of a cron
/// expression in a time zone.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ScheduleRecord {
    pub tenant: String,
    pub name: String,
    /// Five fields (minute hour day-of-month month day-of-week), or six
    /// with seconds first.
    pub cron: String,
    /// An IANA time zone, e.g. `Europe/Madrid` or `UTC`.
    pub timezone: String,
    pub package: String,
    /// `None`: the package's newest version at each firing.
    pub version: Option<i64>,
    pub workflow: String,
    /// The input of each execution, JSON text.
    pub input: String,
    pub overlap: Overlap,
    /// Of the due times missed while no node ran, the latest this many
    /// are fired (with `allow`; otherwise one).
    pub catch_up: i64,
    pub paused: bool,
    pub next_due_ms: i64,
    pub last_due_ms: Option<i64>,
    pub last_execution: Option<String>,
    /// Why the last firing started nothing.
    pub last_error: Option<String>,
    /// Executions started, and due times skipped, so far.
    pub fired: i64,
    pub skipped: i64,
    pub created_at_ms: i64,
}

/// What firing a schedule changes in it: schedule `name` of `tenant`,
/// if its next due time is still `from_due_ms`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ScheduleAdvance {
    pub tenant: String,
    pub name: String,
    pub from_due_ms: i64,
    pub next_due_ms: i64,
    pub last_due_ms: Option<i64>,
    pub last_execution: Option<String>,
    pub last_error: Option<String>,
    pub fired: i64,
    pub skipped: i64,
}

/// An HTTP trigger: `POST /t/<tenant>/<name>` starts `workflow` of
/// `package` with the request's JSON body as input.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct TriggerRecord {
    pub tenant: String,
    pub name: String,
    pub package: String,
    /// `None`: the package's newest version at each request.
    pub version: Option<i64>,
    pub workflow: String,
    /// The tenant's secret whose value signs request bodies
    /// (HMAC-SHA256, `X-Hub-Signature-256: sha256=<hex>`).
    pub hmac_secret: Option<String>,
    /// Without `hmac_secret`: the SHA-256 of the token requests carry
    /// (`Authorization: Bearer <token>`).
    #[serde(skip)]
    pub token_hash: Option<String>,
    pub created_at_ms: i64,
}

/// One row of the audit log: who did what, to what, when and from where.
/// Rows are only ever appended.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct AuditRecord {
    /// Its place in the log (0 before it is stored).
    pub id: i64,
    pub at_ms: i64,
    /// The tenant acted on; empty for what belongs to no tenant.
    pub tenant: String,
    /// The id of the key that acted, or `cli:<user>` for `cerebelum admin`
    /// on the database.
    pub actor: String,
    /// The peer address of the request, or `local`.
    pub origin: String,
    /// What was done: `execution.approve`, `key.create`, ...
    pub action: String,
    /// The execution, key, tenant or secret name acted on.
    pub target: String,
    /// More about it (e.g. an approval's key); never a secret's value.
    pub detail: Option<Value>,
}

/// A node that owns running executions (an engine process: one on
/// SQLite, several on PostgreSQL).
#[derive(Debug, Clone, Serialize)]
pub struct NodeRecord {
    pub id: String,
    /// Running executions it holds a lease on.
    pub owned: i64,
    /// The soonest and the latest expiry of those leases.
    pub lease_min_ms: i64,
    pub lease_max_ms: i64,
}

/// A stored package version.
#[derive(Debug, Clone, Serialize)]
pub struct PackageRecord {
    pub tenant: String,
    pub sha256: String,
    pub name: String,
    pub version: i64,
    /// What its `describe` returned.
    pub info: PackageInfo,
    pub created_at_ms: i64,
    /// Size of the component, bytes.
    pub size_bytes: i64,
}

/// What is needed to create an execution.
#[derive(Debug, Clone)]
pub struct NewExecution {
    pub id: String,
    pub tenant: String,
    /// The package version it runs: by name and version (the same bytes
    /// may be several packages), and the bytes' hash.
    pub package_name: String,
    pub package_version: i64,
    pub package_sha256: String,
    pub workflow: String,
    pub input: Value,
    pub idempotency_key: Option<String>,
    /// Every step runs on this external worker queue (none: each step
    /// where its package places it).
    pub worker_queue: Option<String>,
    /// The execution this one continues (`continue-as-new`).
    pub continued_from: Option<String>,
    /// The execution that started this one as its child (`start-child`).
    pub parent_id: Option<String>,
    /// A child left running when its parent is cancelled.
    pub detached: bool,
}

/// An execution as stored.
#[derive(Debug, Clone, Serialize)]
pub struct ExecutionRecord {
    pub id: String,
    pub tenant: String,
    pub package_sha256: String,
    pub package_name: String,
    pub package_version: i64,
    pub workflow: String,
    pub input: Value,
    pub status: Status,
    pub result: Option<Value>,
    pub error: Option<CallError>,
    pub created_at_ms: i64,
    pub updated_at_ms: i64,
    pub wake_at_ms: Option<i64>,
    pub owner: Option<String>,
    pub epoch: i64,
    pub cancel_requested: bool,
    /// Engine failures (a database or runtime error, not user code)
    /// since the execution last made progress; retried with a growing
    /// delay, it fails after [`MAX_ENGINE_FAILURES`].
    pub engine_failures: i64,
    /// The last of those failures.
    pub engine_error: Option<String>,
    /// Every step runs on this external worker queue.
    pub worker_queue: Option<String>,
    /// An operator paused it: it runs no new invocation until resumed.
    pub paused: bool,
    /// The execution this one continues (`continue-as-new`).
    pub continued_from: Option<String>,
    /// The execution that started this one as its child (`start-child`).
    pub parent_id: Option<String>,
    /// A child left running when its parent is cancelled.
    pub detached: bool,
    /// The idempotency key it was started with (see [`Origin`]).
    pub idempotency_key: Option<String>,
}

/// Where an execution came from, as its idempotency key says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin<'a> {
    /// A schedule's due time (ms since the epoch), or with `by_hand` its
    /// Trigger now at that time.
    Schedule {
        name: &'a str,
        due_ms: i64,
        by_hand: bool,
    },
    /// A delivery to an HTTP trigger (its id, or `sha256:…` of a long one).
    Trigger { name: &'a str, delivery: &'a str },
    /// A caller's own idempotency key.
    Key(&'a str),
}

impl ExecutionRecord {
    /// Where it came from, when its start had an idempotency key.
    pub fn origin(&self) -> Option<Origin<'_>> {
        let key = self.idempotency_key.as_deref()?;
        // `schedule:NAME:DUE_MS`, or `schedule:NAME:now:MS` by hand.
        if let Some(rest) = key.strip_prefix("schedule:") {
            let parts: Vec<&str> = rest.split(':').collect();
            let (name, by_hand, due) = match parts[..] {
                [name, due] => (name, false, due),
                [name, "now", at] => (name, true, at),
                _ => return Some(Origin::Key(key)),
            };
            if let Ok(due_ms) = due.parse() {
                return Some(Origin::Schedule {
                    name,
                    due_ms,
                    by_hand,
                });
            }
        }
        if let Some((name, delivery)) = key
            .strip_prefix("trigger:")
            .and_then(|rest| rest.split_once(':'))
        {
            return Some(Origin::Trigger { name, delivery });
        }
        Some(Origin::Key(key))
    }
}

/// Engine failures in a row after which an execution fails (with error
/// kind `engine`) instead of being retried again: an operator looks at it
/// and retries it.
pub const MAX_ENGINE_FAILURES: i64 = 10;

/// An approval as stored.
#[derive(Debug, Clone, Serialize)]
pub struct ApprovalRecord {
    pub execution_id: String,
    pub key: String,
    /// `pending`, `approved`, `rejected`, `timed-out` or `cancelled`.
    pub status: String,
    pub request: Value,
    /// For `approved` the payload, for `rejected` the reason (a JSON string).
    pub decision: Option<Value>,
}

/// A signal sent to an execution (see `await-signal`).
#[derive(Debug, Clone, PartialEq)]
pub struct SignalRecord {
    pub execution_id: String,
    /// Its place in the order the execution received signals, from 1.
    pub seq: i64,
    pub name: String,
    pub payload: Value,
    /// The sender's id, if it gave one: sending it again is the same signal.
    pub signal_id: Option<String>,
    pub received_at_ms: i64,
    /// The seq of the `await-signal` call it was delivered to; none while
    /// buffered.
    pub consumed_by: Option<i64>,
}

/// An operator's decision on an approval.
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    Approve(Value),
    Reject(String),
}

/// Filter for listing executions, newest first.
#[derive(Debug, Clone, Default)]
pub struct ListFilter {
    /// Only this tenant's executions (the API always sets it).
    pub tenant: Option<String>,
    pub status: Option<Status>,
    /// Package name.
    pub package: Option<String>,
    pub workflow: Option<String>,
    /// Only ids that start with this (letters, digits, '-' and '_').
    pub id_prefix: Option<String>,
    /// Only packages whose name starts with this.
    pub package_prefix: Option<String>,
    /// Only workflows whose name starts with this.
    pub workflow_prefix: Option<String>,
    /// Only executions created at or after this time (ms since the epoch).
    pub created_from_ms: Option<i64>,
    /// Only executions created before this time.
    pub created_to_ms: Option<i64>,
    /// Only executions whose input has, at this path of field names from
    /// its top (`["server", "name"]`: `input.server.name`), this value,
    /// compared as text (a string without its quotes, a number as
    /// written).
    pub input_field: Option<(Vec<String>, String)>,
    /// Paging: only executions listed after this one, i.e. older than
    /// (created_at_ms, id).
    pub after: Option<(i64, String)>,
    /// Paging back: only executions listed before this one (newer than
    /// it): the `limit` nearest it, still newest first.
    pub before: Option<(i64, String)>,
    pub limit: i64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_origin_is_read_from_the_idempotency_key() {
        let keyed = |key: Option<&str>| ExecutionRecord {
            id: "ex_1".into(),
            tenant: "t".into(),
            package_sha256: String::new(),
            package_name: "p".into(),
            package_version: 1,
            workflow: "w".into(),
            input: Value::Null,
            status: Status::Pending,
            result: None,
            error: None,
            created_at_ms: 0,
            updated_at_ms: 0,
            wake_at_ms: None,
            owner: None,
            epoch: 0,
            cancel_requested: false,
            engine_failures: 0,
            engine_error: None,
            worker_queue: None,
            paused: false,
            continued_from: None,
            parent_id: None,
            detached: false,
            idempotency_key: key.map(str::to_owned),
        };
        let schedule = |name, due_ms, by_hand| {
            Some(Origin::Schedule {
                name,
                due_ms,
                by_hand,
            })
        };
        assert_eq!(
            keyed(Some("schedule:nightly:1700")).origin(),
            schedule("nightly", 1700, false)
        );
        assert_eq!(
            keyed(Some("schedule:nightly:now:1800")).origin(),
            schedule("nightly", 1800, true)
        );
        assert_eq!(
            keyed(Some("trigger:on-push:abc:def")).origin(),
            Some(Origin::Trigger {
                name: "on-push",
                delivery: "abc:def"
            })
        );
        assert_eq!(
            keyed(Some("schedule:odd")).origin(),
            Some(Origin::Key("schedule:odd"))
        );
        assert_eq!(
            keyed(Some("order-7")).origin(),
            Some(Origin::Key("order-7"))
        );
        assert_eq!(keyed(None).origin(), None);
    }
}
