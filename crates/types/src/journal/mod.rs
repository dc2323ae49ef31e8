//! The journal, typed: what an execution's history is made of.
//!
//! An [`Entry`] is one [`Event`] of an execution, in order (`seq`), made
//! by one invocation: `wf` for the workflow, `<call seq>.<attempt>` for a
//! step attempt, `engine` or `operator` for what they wrote. The events:
//!
//! - [`Call`]: a host call of user code (`call-step`, `sleep`, `now-ms`,
//!   `http`, …), with the hash of its arguments, which replay compares —
//!   each kind in its own module under [`calls`], listed once in
//!   [`call`]'s table;
//! - the engine's bookkeeping of calls that take time: [`Event::Result`]
//!   (the answer of the call at `call`), [`Event::Attempt`],
//!   [`Event::AttemptFailed`], [`Event::Served`], [`Event::PollCheck`];
//! - what the engine records about invocations and executions:
//!   [`Event::Output`], [`Event::Usage`], [`Event::Started`],
//!   [`Event::Finished`], [`Event::Retried`], [`Event::Upgraded`].
//!
//! # Stored form
//!
//! A row per entry: the event's kind (`call-step`, `result`, …), the seq
//! it refers to (`ref_seq`, for results and attempts), the arguments' hash
//! (for calls) and the rest as a JSON object (`payload`). [`Event::to_row`]
//! and [`Event::from_row`] are the only places that know it; the format is
//! the one journals have always been written in, so older databases load
//! and replay unchanged.

pub mod call;
pub mod calls;

use crate::model::Status;
pub use crate::model::{CallError, ErrorKind};
pub use call::{
    Call, CallKind, Detail, DurableCall, Immediate, Show, ShowContext, Shown, describe_call,
};
pub use calls::*;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

/// The invocation id of the workflow itself.
pub const WORKFLOW: &str = "wf";
/// The invocation of what the engine writes about an execution.
pub const ENGINE: &str = "engine";
/// The invocation of what an operator did (a retry).
pub const OPERATOR: &str = "operator";

/// The invocation id of attempt `attempt` of the step call at `seq`.
pub fn step_invocation(seq: i64, attempt: u32) -> String {
    format!("{seq}.{attempt}")
}

/// How a call that takes time ended.
pub type Outcome = Result<Value, CallError>;

/// One entry of an execution's journal.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    pub seq: i64,
    /// Who made it: `wf`, `<call seq>.<attempt>`, `engine`, `operator`.
    pub invocation: String,
    pub event: Event,
    pub at_ms: i64,
}

/// What happened.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// A host call of user code; `hash` is its arguments' (see
    /// [`CallKind::hash`]).
    Call {
        hash: String,
        call: Call,
    },
    /// The answer of the call at seq `call`.
    Result {
        call: i64,
        outcome: Outcome,
    },
    /// An attempt of the step (or check of the poll) called at `call`
    /// starts.
    Attempt {
        call: i64,
        attempt: Attempt,
    },
    /// That attempt failed and is retried at `retry_at`.
    AttemptFailed {
        call: i64,
        failed: AttemptFailed,
    },
    /// The external worker that served an attempt (journaled with the
    /// attempt's outcome).
    Served {
        call: i64,
        served: Served,
    },
    /// A poll check found nothing ready.
    PollCheck {
        call: i64,
        check: PollCheck,
    },
    /// What an invocation wrote to stdout or stderr (only what a replay
    /// had not written before).
    Output(Output),
    /// Fuel an invocation burned.
    Usage(Usage),
    Started(Started),
    /// The execution completed, failed or was cancelled.
    Finished(Finished),
    /// An operator retried the execution.
    Retried(Retried),
    /// An operator moved the hibernated execution to another version of
    /// its package (`cerebelum upgrade`), its journal having replayed
    /// cleanly against that version's code.
    Upgraded(Upgraded),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Attempt {
    pub step: String,
    pub attempt: u32,
    /// The invocation it runs as, when it re-runs an earlier attempt's
    /// journal (after a crash); else `<call seq>.<attempt>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub invocation: Option<String>,
    /// The external worker queue it was queued on; none: the sandbox.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queue: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Served {
    pub step: String,
    pub attempt: u32,
    /// The worker's id, as it registered.
    pub worker: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AttemptFailed {
    pub step: String,
    pub attempt: u32,
    pub error: CallError,
    pub retry_at: i64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PollCheck {
    pub attempt: u32,
    pub check: u32,
    pub next_at: i64,
    pub error: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Output {
    /// `stdout` or `stderr`.
    pub stream: String,
    pub text: String,
    pub bytes: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Usage {
    pub fuel: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Started {
    pub workflow: String,
    pub input: Value,
    /// The package's sha256.
    pub package: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Finished {
    /// Completed, failed or cancelled (the kind of the entry).
    #[serde(skip, default = "completed")]
    pub status: Status,
    pub result: Option<Value>,
    pub error: Option<CallError>,
}

fn completed() -> Status {
    Status::Completed
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Retried {
    pub previous_status: Status,
    pub error: Option<CallError>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Upgraded {
    pub from_version: i64,
    /// The sha256 of the package it ran on.
    pub from_package: String,
    pub to_version: i64,
    /// The sha256 of the package it runs on from here.
    pub to_package: String,
}

/// An entry's columns as stored (and sent over the API).
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    pub kind: String,
    pub ref_seq: Option<i64>,
    pub args_hash: Option<String>,
    pub payload: Value,
}

/// JSON text of `v` (what the journal stores).
fn text(v: &impl Serialize) -> String {
    serde_json::to_string(v).unwrap_or_else(|_| "null".into())
}

/// A result payload as stored, borrowed for serialisation:
/// `{"ok": value}` or `{"err": error}`.
#[derive(Serialize)]
enum OutcomeText<'a> {
    #[serde(rename = "ok")]
    Ok(&'a Value),
    #[serde(rename = "err")]
    Err(&'a CallError),
}

/// An `ok` / `err` result payload.
pub fn outcome_payload(outcome: &Outcome) -> Value {
    match outcome {
        Ok(v) => json!({ "ok": v }),
        Err(e) => json!({ "err": e }),
    }
}

/// The outcome an `ok` / `err` payload holds (see [`outcome_payload`]).
pub fn parse_outcome(payload: Value) -> Result<Outcome, serde_json::Error> {
    let Value::Object(mut map) = payload else {
        return Ok(Ok(Value::Null));
    };
    match map.remove("err") {
        Some(e) => Ok(Err(serde_json::from_value(e)?)),
        None => Ok(Ok(map.remove("ok").unwrap_or(Value::Null))),
    }
}

impl Event {
    /// The kind it is stored under.
    pub fn kind(&self) -> &'static str {
        match self {
            Event::Call { call, .. } => call.kind().as_str(),
            Event::Result { .. } => "result",
            Event::Attempt { .. } => "attempt",
            Event::AttemptFailed { .. } => "attempt-failed",
            Event::Served { .. } => "served",
            Event::PollCheck { .. } => "poll-check",
            Event::Output(_) => "output",
            Event::Usage(_) => "usage",
            Event::Started(_) => "started",
            Event::Finished(f) => match f.status {
                Status::Failed => "failed",
                Status::Cancelled => "cancelled",
                _ => "completed",
            },
            Event::Retried(_) => "retried",
            Event::Upgraded(_) => "upgraded",
        }
    }

    /// The call it answers or belongs to (`ref_seq`), if any.
    pub fn ref_seq(&self) -> Option<i64> {
        match self {
            Event::Result { call, .. }
            | Event::Attempt { call, .. }
            | Event::AttemptFailed { call, .. }
            | Event::Served { call, .. }
            | Event::PollCheck { call, .. } => Some(*call),
            _ => None,
        }
    }

    /// The `payload` column of the stored form, as JSON text (what the
    /// commit path writes; [`Event::to_row`] has it as a value).
    pub fn payload_text(&self) -> String {
        match self {
            Event::Call { call, .. } => call.payload_text(),
            Event::Result { outcome, .. } => text(&match outcome {
                Ok(v) => OutcomeText::Ok(v),
                Err(e) => OutcomeText::Err(e),
            }),
            Event::Attempt { attempt, .. } => text(attempt),
            Event::AttemptFailed { failed, .. } => text(failed),
            Event::Served { served, .. } => text(served),
            Event::PollCheck { check, .. } => text(check),
            Event::Output(o) => text(o),
            Event::Usage(u) => text(u),
            Event::Started(s) => text(s),
            Event::Finished(f) => text(f),
            Event::Retried(r) => text(r),
            Event::Upgraded(u) => text(u),
        }
    }

    /// The hash of the call's arguments, for calls.
    pub fn args_hash(&self) -> Option<&str> {
        match self {
            Event::Call { hash, .. } => Some(hash),
            _ => None,
        }
    }

    /// The stored form.
    pub fn to_row(&self) -> Row {
        fn value(v: &impl Serialize) -> Value {
            serde_json::to_value(v).unwrap_or(Value::Null)
        }
        let (args_hash, payload) = match self {
            Event::Call { hash, call } => (Some(hash.clone()), call.payload()),
            Event::Result { outcome, .. } => (None, outcome_payload(outcome)),
            Event::Attempt { attempt, .. } => (None, value(attempt)),
            Event::AttemptFailed { failed, .. } => (None, value(failed)),
            Event::Served { served, .. } => (None, value(served)),
            Event::PollCheck { check, .. } => (None, value(check)),
            Event::Output(o) => (None, value(o)),
            Event::Usage(u) => (None, value(u)),
            Event::Started(s) => (None, value(s)),
            Event::Finished(f) => (None, value(f)),
            Event::Retried(r) => (None, value(r)),
            Event::Upgraded(u) => (None, value(u)),
        };
        Row {
            kind: self.kind().to_owned(),
            ref_seq: self.ref_seq(),
            args_hash,
            payload,
        }
    }

    /// Reads a stored entry; an error says what does not fit.
    pub fn from_row(row: Row) -> Result<Self, String> {
        let Row {
            kind,
            ref_seq,
            args_hash,
            payload,
        } = row;
        let fail = |e: serde_json::Error| format!("journal entry of kind '{kind}': {e}");
        let call =
            || ref_seq.ok_or_else(|| format!("journal entry of kind '{kind}' has no ref_seq"));
        fn from<T: DeserializeOwned>(v: Value) -> Result<T, serde_json::Error> {
            serde_json::from_value(v)
        }
        if let Some(call_kind) = CallKind::parse(&kind) {
            return Ok(Event::Call {
                hash: args_hash.unwrap_or_default(),
                call: Call::parse(call_kind, payload).map_err(fail)?,
            });
        }
        Ok(match kind.as_str() {
            "result" => Event::Result {
                call: call()?,
                outcome: parse_outcome(payload).map_err(fail)?,
            },
            "attempt" => Event::Attempt {
                call: call()?,
                attempt: from(payload).map_err(fail)?,
            },
            "attempt-failed" => Event::AttemptFailed {
                call: call()?,
                failed: from(payload).map_err(fail)?,
            },
            "served" => Event::Served {
                call: call()?,
                served: from(payload).map_err(fail)?,
            },
            "poll-check" => Event::PollCheck {
                call: call()?,
                check: from(payload).map_err(fail)?,
            },
            "output" => Event::Output(from(payload).map_err(fail)?),
            "usage" => Event::Usage(from(payload).map_err(fail)?),
            "started" => Event::Started(from(payload).map_err(fail)?),
            "completed" | "failed" | "cancelled" => {
                let mut finished: Finished = from(payload).map_err(fail)?;
                finished.status = Status::parse(&kind).unwrap_or(Status::Completed);
                Event::Finished(finished)
            }
            "retried" => Event::Retried(from(payload).map_err(fail)?),
            "upgraded" => Event::Upgraded(from(payload).map_err(fail)?),
            other => {
                return Err(format!(
                    "unknown journal entry kind '{other}' (written by a newer cerebelum?)"
                ));
            }
        })
    }
}

impl Entry {
    /// The stored form of this entry.
    pub fn row(&self) -> Row {
        self.event.to_row()
    }

    /// The call this entry records, if it is one.
    pub fn call(&self) -> Option<(&Call, &str)> {
        match &self.event {
            Event::Call { call, hash } => Some((call, hash)),
            _ => None,
        }
    }
}

/// Entries print (and travel as JSON) in their stored form:
/// `{"seq", "invocation", "kind", "ref_seq", "args_hash", "payload", "at_ms"}`.
impl Serialize for Entry {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let row = self.row();
        let mut out = s.serialize_struct("Entry", 7)?;
        out.serialize_field("seq", &self.seq)?;
        out.serialize_field("invocation", &self.invocation)?;
        out.serialize_field("kind", &row.kind)?;
        out.serialize_field("ref_seq", &row.ref_seq)?;
        out.serialize_field("args_hash", &row.args_hash)?;
        out.serialize_field("payload", &row.payload)?;
        out.serialize_field("at_ms", &self.at_ms)?;
        out.end()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Rows exactly as journals have always been written.
    fn stored() -> Vec<(&'static str, Option<i64>, Option<&'static str>, Value)> {
        vec![
            (
                "started",
                None,
                None,
                json!({"workflow": "w", "input": {"n": 1}, "package": "abc"}),
            ),
            (
                "call-step",
                None,
                Some("0011223344556677"),
                json!({"args": {"step": "s", "input": {"x": 1}, "options": null}}),
            ),
            ("attempt", Some(2), None, json!({"step": "s", "attempt": 1})),
            (
                "attempt-failed",
                Some(2),
                None,
                json!({"step": "s", "attempt": 1, "retry_at": 9,
                       "error": {"kind": "transient", "message": "m", "details": null}}),
            ),
            ("result", Some(2), None, json!({"ok": {"y": 2}})),
            (
                "result",
                Some(2),
                None,
                json!({"err": {"kind": "deadline", "message": "late", "details": null}}),
            ),
            (
                "sleep",
                None,
                Some("h"),
                json!({"args": {"duration_ms": 5}, "due_at": 7}),
            ),
            (
                "poll",
                None,
                Some("h"),
                json!({"args": {"check_step": "c", "input": null,
                       "options": {"interval_ms": 1, "max_attempts": 3, "timeout_ms": null}},
                       "started_at": 4}),
            ),
            (
                "poll-check",
                Some(8),
                None,
                json!({"attempt": 1, "check": 1, "next_at": 3, "error": null}),
            ),
            (
                "await-approval",
                None,
                Some("h"),
                json!({"args": {"key": "k", "message": "m", "details": null, "timeout_ms": null},
                       "due_at": null}),
            ),
            (
                "await-signal",
                None,
                Some("h"),
                json!({"args": {"name": "go", "timeout_ms": 5}, "due_at": 9}),
            ),
            (
                "set-state",
                None,
                Some("h"),
                json!({"args": {"state": {"phase": "dns"}}, "answer": null}),
            ),
            (
                "start-child",
                None,
                Some("h"),
                json!({"args": {"workflow": "deploy", "input": {"n": 1},
                                "options": {"package": null, "version": null, "detached": false}},
                       "child": {"id": "ex_c", "package": "kit", "version": 2}}),
            ),
            (
                "await-child",
                None,
                Some("h"),
                json!({"args": {"handle": 7}}),
            ),
            (
                "continue-as-new",
                None,
                Some("h"),
                json!({"args": {"input": {"cursor": 7}}, "answer": "ex_next"}),
            ),
            (
                "report-progress",
                None,
                Some("h"),
                json!({"args": {"percent": 50, "message": "half"}, "answer": null}),
            ),
            (
                "now-ms",
                None,
                Some("h"),
                json!({"args": {}, "answer": 1234}),
            ),
            (
                "record",
                None,
                Some("h"),
                json!({"args": {"name": "n"}, "answer": [1, 2]}),
            ),
            (
                "http",
                None,
                Some("h"),
                json!({"args": {"method": "GET", "url": "http://x/", "headers": [["a", "b"]],
                       "body_sha256": null, "body_bytes": null},
                       "answer": {"status": 200, "headers": [], "encoding": "utf8", "body": "hi"}}),
            ),
            (
                "http",
                None,
                Some("h"),
                json!({"args": {"method": "GET", "url": "http://x/", "headers": [],
                       "body_sha256": null, "body_bytes": null},
                       "answer": {"error": "denied"}}),
            ),
            (
                "output",
                None,
                None,
                json!({"stream": "stdout", "text": "hi\n", "bytes": 3}),
            ),
            ("usage", None, None, json!({"fuel": 77})),
            (
                "failed",
                None,
                None,
                json!({"result": null,
                       "error": {"kind": "trap", "message": "boom", "details": null}}),
            ),
            (
                "retried",
                None,
                None,
                json!({"previous_status": "failed",
                       "error": {"kind": "trap", "message": "boom", "details": null}}),
            ),
        ]
    }

    #[test]
    fn stored_rows_read_typed_and_write_back_the_same() {
        for (kind, ref_seq, hash, payload) in stored() {
            let row = Row {
                kind: kind.into(),
                ref_seq,
                args_hash: hash.map(str::to_owned),
                payload: payload.clone(),
            };
            let event = Event::from_row(row.clone()).unwrap_or_else(|e| panic!("{kind}: {e}"));
            assert_eq!(event.to_row(), row, "{kind}");
        }
    }

    #[test]
    fn the_payload_text_is_the_stored_payload() {
        for (kind, ref_seq, hash, payload) in stored() {
            let row = Row {
                kind: kind.into(),
                ref_seq,
                args_hash: hash.map(str::to_owned),
                payload,
            };
            let event = Event::from_row(row.clone()).unwrap();
            let text: Value = serde_json::from_str(&event.payload_text()).unwrap();
            assert_eq!(text, row.payload, "{kind}");
            assert_eq!(event.args_hash(), row.args_hash.as_deref(), "{kind}");
        }
    }

    #[test]
    fn an_unknown_kind_is_an_error_that_says_so() {
        let row = Row {
            kind: "teleport".into(),
            ref_seq: None,
            args_hash: None,
            payload: json!({}),
        };
        assert!(
            Event::from_row(row)
                .unwrap_err()
                .contains("unknown journal entry kind")
        );
    }

    #[test]
    fn the_hash_depends_on_kind_and_args_as_it_always_did() {
        let a = CallKind::Sleep.hash(&SleepArgs { duration_ms: 1 });
        assert_eq!(a, CallKind::Sleep.hash(&json!({"duration_ms": 1})));
        assert_ne!(a, CallKind::Sleep.hash(&SleepArgs { duration_ms: 2 }));
        assert_ne!(a, CallKind::Poll.hash(&SleepArgs { duration_ms: 1 }));
        // The value every journal written so far has for this call.
        use sha2::Digest;
        let mut h = sha2::Sha256::new();
        h.update(b"sleep\0{\"duration_ms\":1}");
        assert_eq!(a, hex::encode(&h.finalize()[..8]));
        // Objects keep the order they were written in; the hash reads
        // their keys sorted, as when maps were sorted.
        let unsorted: Value =
            serde_json::from_str(r#"{"b":1,"a":{"d":[{"z":1,"y":2}],"c":3}}"#).unwrap();
        let mut h = sha2::Sha256::new();
        h.update(b"call-step\0");
        h.update(br#"{"a":{"c":3,"d":[{"y":2,"z":1}]},"b":1}"#);
        assert_eq!(
            CallKind::CallStep.hash_value(&unsorted),
            hex::encode(&h.finalize()[..8])
        );
    }

    #[test]
    fn objects_keep_the_order_they_were_written_in() {
        let text = r#"{"slack":1,"github":2,"jira":{"z":1,"a":2}}"#;
        let value: Value = serde_json::from_str(text).unwrap();
        assert_eq!(value.to_string(), text);
    }
}
