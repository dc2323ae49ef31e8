//! Replay: the journal of an execution indexed per invocation, so each host
//! call can be matched against the call recorded at the same place.

use crate::model::Entry;
use serde_json::Value;
use std::collections::HashMap;
use std::fmt;

/// The invocation id of the workflow itself.
pub const WORKFLOW: &str = "wf";

/// The invocation id of attempt `attempt` of the step call at `seq`.
pub fn step_invocation(seq: i64, attempt: u32) -> String {
    format!("{seq}.{attempt}")
}

/// Hash of a call's kind and arguments, as recorded and compared.
pub fn args_hash(kind: &str, args: &Value) -> String {
    use sha2::Digest;
    let mut h = sha2::Sha256::new();
    h.update(kind.as_bytes());
    h.update([0]);
    h.update(args.to_string().as_bytes());
    hex::encode(&h.finalize()[..8])
}

/// Why user code was stopped from the host: not a failure of the code.
#[derive(Debug, Clone)]
pub enum Interrupt {
    /// The execution hibernates; it is due again at `wake_at` (or on an event).
    Suspend { wake_at: Option<i64> },
    /// Replay found a different call than the journal recorded.
    Nondeterminism(String),
    /// Another node owns the execution now.
    LostOwnership,
    /// The engine failed (database, runtime); the execution resumes later.
    Infra(String),
    /// The execution went past a limit of its tenant (`kind` names it):
    /// it fails with that error.
    Limit { kind: &'static str, message: String },
}

impl fmt::Display for Interrupt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Interrupt::Suspend { wake_at } => write!(f, "suspended until {wake_at:?}"),
            Interrupt::Nondeterminism(m) => write!(f, "nondeterminism: {m}"),
            Interrupt::LostOwnership => f.write_str("lost ownership"),
            Interrupt::Infra(m) => write!(f, "engine error: {m}"),
            Interrupt::Limit { message, .. } => f.write_str(message),
        }
    }
}

impl std::error::Error for Interrupt {}

impl From<crate::Error> for Interrupt {
    fn from(e: crate::Error) -> Self {
        match e {
            crate::Error::LostOwnership(_) => Interrupt::LostOwnership,
            other => Interrupt::Infra(other.to_string()),
        }
    }
}

/// Whether a result payload is an error (`{"err": ...}`) of kind `kind`.
pub fn is_error_kind(result: &Value, kind: &str) -> bool {
    result
        .get("err")
        .and_then(|e| e.get("kind"))
        .and_then(Value::as_str)
        == Some(kind)
}

/// The journal, indexed for replay.
#[derive(Debug, Default)]
pub struct ReplayIndex {
    /// Recorded calls of each invocation, in order.
    calls: HashMap<String, Vec<Entry>>,
    /// Results by the seq of their call. Error results from before the last
    /// operator retry are void (the failed call is retried live).
    results: HashMap<i64, Value>,
    /// `attempt-failed` / `poll-check` entries by call seq, since the last retry.
    progress: HashMap<i64, Vec<Entry>>,
    /// Highest attempt number started, by call seq (all time).
    attempts_used: HashMap<i64, u32>,
    /// Highest attempt number that ended (failed, or was voided by a
    /// retry), by call seq (all time).
    attempts_ended: HashMap<i64, u32>,
    /// The invocation (journal) of attempts that re-ran an earlier one's,
    /// by (call seq, attempt).
    reruns: HashMap<(i64, u32), String>,
    /// The execution was hibernated before this run (see
    /// [`crate::model::Claim::resumed`]): its unfinished attempts were
    /// suspended at a durable wait, not cut short.
    pub resumed: bool,
    /// Whether a cancellation was delivered to the workflow.
    pub cancel_delivered: bool,
    /// Bytes of stdout / stderr journaled per invocation.
    output: HashMap<(String, &'static str), usize>,
    /// Fuel burned by the invocations journaled so far.
    pub fuel_used: u64,
}

impl ReplayIndex {
    pub fn build(entries: &[Entry]) -> Self {
        let retry_marker = entries
            .iter()
            .filter(|e| e.kind == "retried")
            .map(|e| e.seq)
            .max()
            .unwrap_or(0);
        let mut index = ReplayIndex::default();
        for e in entries {
            match e.kind.as_str() {
                "result" => {
                    let Some(call) = e.ref_seq else { continue };
                    let void = e.seq < retry_marker && e.payload.get("err").is_some();
                    if void {
                        let used = index.attempts_used(call);
                        let ended = index.attempts_ended.entry(call).or_default();
                        *ended = (*ended).max(used);
                    } else {
                        if is_error_kind(&e.payload, "cancelled") {
                            index.cancel_delivered = true;
                        }
                        index.results.insert(call, e.payload.clone());
                    }
                }
                "attempt" => {
                    if let (Some(call), Some(n)) = (e.ref_seq, e.payload["attempt"].as_u64()) {
                        let used = index.attempts_used.entry(call).or_default();
                        *used = (*used).max(n as u32);
                        if let Some(inv) = e.payload["invocation"].as_str() {
                            index.reruns.insert((call, n as u32), inv.to_owned());
                        }
                    }
                }
                "attempt-failed" | "poll-check" => {
                    if let (Some(call), Some(n)) = (e.ref_seq, e.payload["attempt"].as_u64()) {
                        let ended = index.attempts_ended.entry(call).or_default();
                        *ended = (*ended).max(n as u32);
                    }
                    if let Some(call) = e.ref_seq
                        && e.seq > retry_marker
                    {
                        index.progress.entry(call).or_default().push(e.clone());
                    }
                }
                "retried" | "started" | "completed" | "failed" | "cancelled" => {}
                "output" => {
                    let stream = match e.payload["stream"].as_str() {
                        Some("stderr") => "stderr",
                        _ => "stdout",
                    };
                    let bytes = e.payload["bytes"].as_u64().unwrap_or(0) as usize;
                    *index
                        .output
                        .entry((e.invocation.clone(), stream))
                        .or_default() += bytes;
                }
                "usage" => index.fuel_used += e.payload["fuel"].as_u64().unwrap_or(0),
                _ => index
                    .calls
                    .entry(e.invocation.clone())
                    .or_default()
                    .push(e.clone()),
            }
        }
        index
    }

    /// Bytes of `stream` journaled for `invocation` (its replay writes
    /// them again; only what comes after is new).
    pub fn output_recorded(&self, invocation: &str, stream: &str) -> usize {
        self.output
            .iter()
            .find(|((inv, s), _)| inv == invocation && *s == stream)
            .map_or(0, |(_, n)| *n)
    }

    /// The recorded call at `cursor` of `invocation`, if the journal has one.
    pub fn call(&self, invocation: &str, cursor: usize) -> Option<&Entry> {
        self.calls.get(invocation).and_then(|c| c.get(cursor))
    }

    pub fn result(&self, call_seq: i64) -> Option<&Value> {
        self.results.get(&call_seq)
    }

    pub fn progress(&self, call_seq: i64) -> &[Entry] {
        self.progress
            .get(&call_seq)
            .map(Vec::as_slice)
            .unwrap_or(&[])
    }

    fn attempts_used(&self, call_seq: i64) -> u32 {
        self.attempts_used.get(&call_seq).copied().unwrap_or(0)
    }

    /// The invocation (journal) of attempt `attempt` of the call at `call_seq`.
    pub fn attempt_invocation(&self, call_seq: i64, attempt: u32) -> String {
        self.reruns
            .get(&(call_seq, attempt))
            .cloned()
            .unwrap_or_else(|| step_invocation(call_seq, attempt))
    }

    /// The number and the invocation of the next attempt of the call at
    /// `call_seq`. An attempt that was started and never ended runs again,
    /// replaying what it journaled: under its own number if the engine
    /// suspended it (hibernation), else (the engine crashed, or stopped)
    /// under the next number, so the step's code can tell it may be a
    /// re-run. Otherwise a new number, with an invocation of its own.
    pub fn next_attempt(&self, call_seq: i64) -> (u32, String) {
        let used = self.attempts_used(call_seq);
        let ended = self.attempts_ended.get(&call_seq).copied().unwrap_or(0);
        if used > ended {
            let invocation = self.attempt_invocation(call_seq, used);
            if self.resumed {
                (used, invocation)
            } else {
                (used + 1, invocation)
            }
        } else {
            (ended + 1, step_invocation(call_seq, ended + 1))
        }
    }
}

/// A short description of a call for messages: `call-step {"step":"greet",..}`.
pub fn describe_call(kind: &str, args: &Value) -> String {
    format!("{kind} {}", crate::util::shorten(&args.to_string(), 120))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn entry(seq: i64, inv: &str, kind: &str, ref_seq: Option<i64>, payload: Value) -> Entry {
        Entry {
            seq,
            invocation: inv.into(),
            kind: kind.into(),
            ref_seq,
            args_hash: None,
            payload,
            at_ms: 0,
        }
    }

    #[test]
    fn error_results_before_a_retry_are_void() {
        let entries = vec![
            entry(1, WORKFLOW, "call-step", None, json!({})),
            entry(2, WORKFLOW, "result", Some(1), json!({"ok": 1})),
            entry(3, WORKFLOW, "call-step", None, json!({})),
            entry(4, WORKFLOW, "attempt", Some(3), json!({"attempt": 1})),
            entry(5, "3.1", "now-ms", None, json!({})),
            entry(6, WORKFLOW, "attempt", Some(3), json!({"attempt": 2})),
            entry(
                7,
                WORKFLOW,
                "attempt-failed",
                Some(3),
                json!({"attempt": 2}),
            ),
            entry(8, WORKFLOW, "attempt", Some(3), json!({"attempt": 3})),
            entry(
                9,
                WORKFLOW,
                "result",
                Some(3),
                json!({"err": {"kind": "x"}}),
            ),
            entry(10, "operator", "retried", None, json!({})),
        ];
        let index = ReplayIndex::build(&entries);
        assert_eq!(index.result(1), Some(&json!({"ok": 1})));
        assert_eq!(index.result(3), None, "the failed call is retried live");
        assert!(
            index.progress(3).is_empty(),
            "attempts before the retry do not count"
        );
        assert_eq!(index.call(WORKFLOW, 1).map(|e| e.seq), Some(3));
        assert_eq!(
            index.next_attempt(3),
            (4, "3.4".to_owned()),
            "a new attempt number after the retry"
        );
    }

    #[test]
    fn a_crashed_attempt_reruns_its_journal_under_the_next_number() {
        let mut entries = vec![
            entry(1, WORKFLOW, "call-step", None, json!({})),
            entry(2, WORKFLOW, "attempt", Some(1), json!({"attempt": 1})),
            entry(
                3,
                WORKFLOW,
                "attempt-failed",
                Some(1),
                json!({"attempt": 1}),
            ),
            entry(4, WORKFLOW, "attempt", Some(1), json!({"attempt": 2})),
        ];
        let mut index = ReplayIndex::build(&entries);
        assert_eq!(index.next_attempt(1), (3, "1.2".to_owned()));
        assert_eq!(index.progress(1).len(), 1);
        index.resumed = true;
        assert_eq!(
            index.next_attempt(1),
            (2, "1.2".to_owned()),
            "a hibernated attempt goes on under its number"
        );
        // The re-run crashes too: its successor still replays attempt 2's journal.
        entries.push(entry(
            5,
            WORKFLOW,
            "attempt",
            Some(1),
            json!({"attempt": 3, "invocation": "1.2"}),
        ));
        let index = ReplayIndex::build(&entries);
        assert_eq!(index.next_attempt(1), (4, "1.2".to_owned()));
    }

    #[test]
    fn cancelled_result_marks_delivery() {
        let entries = vec![
            entry(1, WORKFLOW, "sleep", None, json!({})),
            entry(
                2,
                WORKFLOW,
                "result",
                Some(1),
                json!({"err": {"kind": "cancelled"}}),
            ),
        ];
        assert!(ReplayIndex::build(&entries).cancel_delivered);
    }

    #[test]
    fn hash_depends_on_kind_and_args() {
        let a = args_hash("sleep", &json!({"ms": 1}));
        assert_eq!(a, args_hash("sleep", &json!({"ms": 1})));
        assert_ne!(a, args_hash("sleep", &json!({"ms": 2})));
        assert_ne!(a, args_hash("poll", &json!({"ms": 1})));
    }
}
