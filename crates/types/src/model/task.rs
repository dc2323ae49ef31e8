//! External tasks: step attempts served by worker processes outside the
//! sandbox, through a durable queue per tenant and queue name.
//!
//! The engine creates a task ([`TaskSpec`]) in the same commit as the
//! attempt's journal entry. A worker claims it ([`TaskClaim`]), which
//! hands it a fencing [`TaskToken`]; heartbeats and the completion must
//! carry that token, and are refused once the claim has timed out or the
//! task was handed back. The outcome a worker reports is stored on the
//! task and wakes the execution, whose owner then journals it as the
//! call's result: the journal gets it exactly once.

use super::CallError;
use crate::error::{Error, Result};
use serde_json::Value;
use std::fmt;

/// A task's place: the step call's journal seq and the attempt number.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TaskId {
    pub execution_id: String,
    pub seq: i64,
    pub attempt: u32,
}

/// The time limits of a task. A missed one ends the attempt with an
/// error of kind `deadline`, retried by the step's retry policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TaskTimeouts {
    /// From creation until a worker claims it (none: wait for ever).
    pub schedule_to_start_ms: Option<u64>,
    /// From the claim until the completion.
    pub start_to_close_ms: u64,
    /// Between two heartbeats of the claiming worker (none: not checked).
    pub heartbeat_ms: Option<u64>,
}

/// A new task, written by a group commit with its attempt's entry.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskSpec {
    pub seq: i64,
    pub attempt: u32,
    pub queue: String,
    pub step: String,
    /// The step's input (JSON text).
    pub input: String,
    pub timeouts: TaskTimeouts,
    /// The worker this task prefers, and until when (sticky routing).
    pub sticky: Option<(String, i64)>,
}

/// Where a task stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TaskStatus {
    /// Waiting for a worker.
    Queued,
    /// Claimed by a worker, which has not completed it yet.
    Claimed,
    /// A worker reported its outcome.
    Completed,
    /// A timeout passed (the outcome says which).
    TimedOut,
    /// The execution no longer waits for it (cancelled or ended).
    Cancelled,
}

impl TaskStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            TaskStatus::Queued => "queued",
            TaskStatus::Claimed => "claimed",
            TaskStatus::Completed => "completed",
            TaskStatus::TimedOut => "timed-out",
            TaskStatus::Cancelled => "cancelled",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        [
            TaskStatus::Queued,
            TaskStatus::Claimed,
            TaskStatus::Completed,
            TaskStatus::TimedOut,
            TaskStatus::Cancelled,
        ]
        .into_iter()
        .find(|t| t.as_str() == s)
    }

    /// It has an outcome or will never get one.
    pub fn is_final(self) -> bool {
        !matches!(self, TaskStatus::Queued | TaskStatus::Claimed)
    }
}

impl fmt::Display for TaskStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The fencing token of one claim: what a heartbeat, a completion or a
/// hand-back must name.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TaskToken {
    pub id: TaskId,
    /// New at every claim.
    pub claim: String,
}

impl fmt::Display for TaskToken {
    /// `execution/seq/attempt/claim`: the form workers get on the wire.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}/{}/{}/{}",
            self.id.execution_id, self.id.seq, self.id.attempt, self.claim
        )
    }
}

impl std::str::FromStr for TaskToken {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || format!("'{s}' is not a task token (expected execution/seq/attempt/claim)");
        let mut parts = s.rsplitn(4, '/');
        let claim = parts.next().filter(|c| !c.is_empty()).ok_or_else(bad)?;
        let attempt = parts.next().and_then(|a| a.parse().ok()).ok_or_else(bad)?;
        let seq = parts.next().and_then(|q| q.parse().ok()).ok_or_else(bad)?;
        let execution_id = parts.next().filter(|e| !e.is_empty()).ok_or_else(bad)?;
        Ok(TaskToken {
            id: TaskId {
                execution_id: execution_id.to_owned(),
                seq,
                attempt,
            },
            claim: claim.to_owned(),
        })
    }
}

/// A task as a worker receives it when it claims one.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskClaim {
    pub token: TaskToken,
    pub step: String,
    pub input: String,
    /// When the claim times out unless the worker heartbeats or completes.
    pub deadline_at_ms: i64,
    pub heartbeat_ms: Option<u64>,
    /// The step may have recorded calls before (a later attempt, or a
    /// task handed back): its history is worth reading.
    pub resumed: bool,
}

/// A durable call a step made on an external worker (its sleep, a
/// retry-wrapped call, a poll's check), as recorded under the task's
/// claim: the step's own journal, which a re-run of the step replays.
#[derive(Debug, Clone, PartialEq)]
pub struct StepCallRecord {
    /// 0, 1, 2, … in the step call's history.
    pub position: i64,
    /// What the call was: `sleep`, `now`, `random`, or the name the SDK
    /// recorded a value under (`retry`, `poll-check`, …).
    pub kind: String,
    /// Its arguments, JSON (as the worker sent them).
    pub args: String,
    /// Its answer, JSON: the value recorded, or for `sleep` when it ends.
    pub answer: String,
    pub at_ms: i64,
}

impl StepCallRecord {
    /// Whether the call still waits for its answer (an approval or a
    /// signal recorded as `{"pending": true, ...}`). Read from the
    /// answer's top level: a payload that mentions "pending" is an answer.
    pub fn pending(&self) -> bool {
        serde_json::from_str::<Value>(&self.answer)
            .is_ok_and(|answer| answer.get("pending").is_some())
    }
}

/// A task as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskRecord {
    pub id: TaskId,
    pub tenant: String,
    pub queue: String,
    pub step: String,
    pub status: TaskStatus,
    pub created_at_ms: i64,
    /// The worker holding (or that last held) it.
    pub worker: Option<String>,
    pub claimed_at_ms: Option<i64>,
    pub heartbeat_at_ms: Option<i64>,
    pub deadline_at_ms: Option<i64>,
    /// The last progress a heartbeat reported.
    pub progress: Option<Value>,
    /// What the worker reported, or the timeout.
    pub outcome: Option<Result<Value, CallError>>,
    /// Handed back until then (a worker step's long wait).
    pub ready_at_ms: Option<i64>,
}

/// What a heartbeat learns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TaskBeat {
    /// The task's new deadline.
    pub deadline_at_ms: i64,
    /// The execution was cancelled: the worker should stop and complete
    /// (its outcome will not be used).
    pub cancel_requested: bool,
}

/// A worker as it registered and was last seen.
#[derive(Debug, Clone, PartialEq)]
pub struct WorkerRecord {
    pub tenant: String,
    pub worker_id: String,
    pub queue: String,
    pub host: String,
    pub max_tasks: i64,
    pub registered_at_ms: i64,
    pub last_seen_at_ms: i64,
    /// Tasks it holds now.
    pub tasks_in_flight: i64,
}

/// Checks the name of a worker queue: 1 to 128 letters, digits, `-`,
/// `_` and `.`.
pub fn check_queue_name(queue: &str) -> Result<()> {
    let fine = !queue.is_empty()
        && queue.len() <= 128
        && queue
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if !fine {
        return Err(Error::InvalidInput(format!(
            "'{}' is not a worker queue name: use 1 to 128 letters, digits, '-', '_' or '.'",
            crate::util::shorten(queue, 80)
        )));
    }
    Ok(())
}

#[cfg(test)]
mod step_call_tests {
    use super::StepCallRecord;

    fn answered(answer: &str) -> StepCallRecord {
        StepCallRecord {
            position: 0,
            kind: "signal".into(),
            args: r#"{"name":"go"}"#.into(),
            answer: answer.into(),
            at_ms: 0,
        }
    }

    #[test]
    fn only_a_top_level_pending_waits() {
        assert!(answered(r#"{"pending":true,"due_at_ms":null}"#).pending());
        // A payload that says "pending" is an answer, not a wait.
        assert!(!answered(r#"{"signal":{"status":"pending"}}"#).pending());
        assert!(!answered(r#"{"approved":{"pending":1}}"#).pending());
    }
}
