//! What a group commit writes: journal entries, side writes and status
//! changes of executions, fenced by their owner's epoch, and the claims
//! that hand executions to nodes.

use crate::journal::Entry;
use crate::model::{CallError, ExecutionRecord, NewExecution, PackageRecord, Status, TaskSpec};
use serde_json::Value;

/// The status change written together with a batch of journal entries.
#[derive(Debug, Clone)]
pub enum StatusChange {
    /// Hibernate: drop ownership, wake at `wake_at_ms` (or only on an event).
    ///
    /// If an approval or cancel arrived since the claim (`signals` moved past
    /// `seen_signals`), the execution is due at once instead.
    Waiting {
        wake_at_ms: Option<i64>,
        seen_signals: i64,
        /// The sleep it waits for, if any: fired by [`Store::fire_timers`]
        /// when due (see [`Timer`]).
        ///
        /// [`Store::fire_timers`]: super::Store::fire_timers
        timer: Option<Timer>,
    },
    /// Finished: drop ownership for good.
    Finished {
        status: Status,
        result: Option<Value>,
        error: Option<CallError>,
    },
}

/// A `sleep` call a hibernated execution waits for. When it is due, the
/// node journals the call's result for every such execution in one
/// statement ([`Store::fire_timers`](super::Store::fire_timers)), the way a
/// timer fires apart from the code that waits for it; the code resumes
/// from that result when the node has room to run it.
///
/// An execution that is paused or has a cancel requested keeps no timer:
/// the hibernation writes none, and a pause or a cancel request deletes it
/// (a cancel, with its children's), so the sweep reads the timers alone.
/// Its code ends the sleep when it runs again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Timer {
    /// The seq of the `sleep` call.
    pub seq: i64,
    /// When it ends (journaled with the call).
    pub due_at: i64,
    /// The invocation that made the call, whose result it is (`1`, or
    /// `2.1` for a sleep inside a step).
    pub invocation: String,
    /// The seq its result takes: the journal's end at the hibernation.
    /// The [`JournalWriter`](super::JournalWriter) that commits the
    /// hibernation sets it; an upgrade (the one write to a hibernated
    /// execution's journal) moves it on. So the sweep reads no journal
    /// entry, not even the last one's key.
    pub next_seq: i64,
}

impl Timer {
    /// The `sleep` at `seq` of `invocation`, due at `due_at`; its
    /// [`next_seq`](Timer::next_seq) is set when it is committed.
    pub fn new(seq: i64, due_at: i64, invocation: impl Into<String>) -> Self {
        Self {
            seq,
            due_at,
            invocation: invocation.into(),
            next_seq: 0,
        }
    }
}

/// What one [`Store::fire_timers`](super::Store::fire_timers) did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FiredTimers {
    /// The executions whose sleep ended, with the seq of its result.
    pub fired: Vec<(String, i64)>,
    /// Whether more may be due already: a transaction fired as many as it
    /// could (its `limit`).
    pub more: bool,
    /// When the next waiting execution is due (a timer or any other wake
    /// time), if one is: the scheduler wakes then, not at its next tick.
    pub next_due: Option<i64>,
}

/// A side table write that must be atomic with journal entries.
#[derive(Debug, Clone)]
pub enum SideWrite {
    /// Register an approval the execution now waits on (pending).
    OpenApproval { key: String, request: Value },
    /// Close a pending approval without a decision (cancelled).
    CloseApproval { key: String, status: String },
    /// Deliver the buffered signal `signal` (its seq among the
    /// execution's signals) to the `await-signal` call at `call`, whose
    /// result is in the same operation.
    ConsumeSignal { signal: i64, call: i64 },
    /// The execution ended and wakes its parent, which may await it (in the
    /// operation that finishes it).
    WakeParent { parent: String },
    /// Queue a task for an external worker (the attempt's entry is in the
    /// same operation).
    OpenTask(TaskSpec),
    /// The execution no longer waits for this task: unless it has an
    /// outcome already, it is cancelled (a worker holding it learns so at
    /// its next heartbeat, and its completion is refused).
    CloseTask { seq: i64, attempt: u32 },
    /// Create the child that the `start-child` entry in the same operation
    /// starts: the child exists if and only if that entry does, and both
    /// are fenced by the parent's epoch (a parent that lost its lease
    /// starts no orphan). Its idempotency key (`child:<parent>:<seq>`)
    /// keeps a replay from creating it again.
    CreateChild(Box<Creation>),
}

/// A new execution, created by a group commit (so starts are batched
/// like journal writes). With `owner` (node, lease expiry) it is created
/// claimed by that node at epoch 1, else pending at epoch 0.
#[derive(Debug, Clone)]
pub struct Creation {
    pub new: NewExecution,
    pub owner: Option<(String, i64)>,
}

impl Creation {
    /// The record as the commit writes it, for the package `package`.
    pub fn record(&self, package: &PackageRecord, now_ms: i64) -> ExecutionRecord {
        let owned = self.owner.is_some();
        ExecutionRecord {
            id: self.new.id.clone(),
            tenant: self.new.tenant.clone(),
            package_sha256: self.new.package_sha256.clone(),
            package_name: package.name.clone(),
            package_version: package.version,
            workflow: self.new.workflow.clone(),
            input: self.new.input.clone(),
            status: if owned {
                Status::Running
            } else {
                Status::Pending
            },
            result: None,
            error: None,
            created_at_ms: now_ms,
            updated_at_ms: now_ms,
            wake_at_ms: if owned { None } else { Some(now_ms) },
            owner: self.owner.as_ref().map(|o| o.0.clone()),
            epoch: self.epoch(),
            cancel_requested: false,
            engine_failures: 0,
            engine_error: None,
            worker_queue: self.new.worker_queue.clone(),
            paused: false,
            continued_from: self.new.continued_from.clone(),
            parent_id: self.new.parent_id.clone(),
            detached: self.new.detached,
            idempotency_key: self.new.idempotency_key.clone(),
        }
    }

    pub fn epoch(&self) -> i64 {
        if self.owner.is_some() { 1 } else { 0 }
    }
}

/// One unit of a group commit: entries (and maybe a status change) of one
/// execution, fenced by the owner's epoch.
#[derive(Debug, Clone)]
pub struct CommitOp {
    /// Creates the execution first (no idempotency key; see [`Creation`]).
    pub create: Option<Creation>,
    pub execution_id: String,
    pub epoch: i64,
    pub entries: Vec<Entry>,
    pub side: Vec<SideWrite>,
    pub status: Option<StatusChange>,
}

/// An execution claimed by a node: it owns it until its lease expires.
#[derive(Debug, Clone)]
pub struct Claim {
    pub execution_id: String,
    pub epoch: i64,
    /// The execution's signal counter when claimed (see `StatusChange::Waiting`).
    pub signals: i64,
    /// It was hibernated (`waiting`): the engine suspended its invocations
    /// at durable waits. Otherwise (new, retried, or taken over after a
    /// crash or a lost lease) a step attempt it left unfinished was cut
    /// short, and runs again under the next attempt number.
    pub resumed: bool,
    /// For a hibernated execution: how long after its due time it was
    /// claimed (a timer's lateness; the `timer_lateness` metric).
    pub late_ms: Option<i64>,
    /// It was running on a node whose lease expired (a crash, or a node
    /// that lost the database): taken over.
    pub taken_over: bool,
}
