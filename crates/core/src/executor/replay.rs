//! Replay: the journal of an execution indexed per invocation, so each host
//! call can be matched against the call recorded at the same place.

use crate::journal::{Entry, ErrorKind, Event, Outcome, PollCheck, step_invocation};
use std::collections::HashMap;
use std::fmt;

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
    Limit { kind: ErrorKind, message: String },
    /// The workflow continued as execution `next` (`continue-as-new`): it
    /// completes with `{"continued_as": next}`.
    ContinueAsNew { next: String },
    /// A cancellation stopped running guest code (see
    /// `invocation::stop_on_cancel`).
    Cancelled,
}

impl fmt::Display for Interrupt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Interrupt::Suspend { wake_at } => write!(f, "suspended until {wake_at:?}"),
            Interrupt::Nondeterminism(m) => write!(f, "nondeterminism: {m}"),
            Interrupt::LostOwnership => f.write_str("lost ownership"),
            Interrupt::Infra(m) => write!(f, "engine error: {m}"),
            Interrupt::Limit { message, .. } => f.write_str(message),
            Interrupt::ContinueAsNew { next } => write!(f, "continued as {next}"),
            Interrupt::Cancelled => f.write_str("cancelled while running"),
        }
    }
}

impl std::error::Error for Interrupt {}

impl From<crate::Error> for Interrupt {
    fn from(e: crate::Error) -> Self {
        match e {
            crate::Error::LostOwnership(_) => Interrupt::LostOwnership,
            // Its message without the prefix: the drive makes it a
            // runtime error again (and said "runtime error: " twice).
            crate::Error::Runtime(message) => Interrupt::Infra(message),
            other => Interrupt::Infra(other.to_string()),
        }
    }
}

/// What a retried attempt or a poll's unready check left in the journal:
/// the progress of a call that takes time.
#[derive(Debug, Clone, PartialEq)]
pub enum Progress {
    /// An attempt failed; the next is due at `retry_at`.
    Failed { retry_at: i64 },
    /// A poll check found nothing ready.
    Checked(PollCheck),
}

/// The journal, indexed for replay.
#[derive(Debug, Default)]
pub struct ReplayIndex {
    /// Recorded calls of each invocation, in order.
    calls: HashMap<String, Vec<Entry>>,
    /// Results by the seq of their call. Error results from before the last
    /// operator retry are void (the failed call is retried live).
    results: HashMap<i64, Outcome>,
    /// Failed attempts and unready poll checks by call seq, since the last
    /// retry.
    progress: HashMap<i64, Vec<Progress>>,
    /// Highest attempt number started, by call seq (all time).
    attempts_used: HashMap<i64, u32>,
    /// Highest attempt number that ended (failed, or was voided by a
    /// retry), by call seq (all time).
    attempts_ended: HashMap<i64, u32>,
    /// The invocation (journal) of attempts that re-ran an earlier one's,
    /// by (call seq, attempt).
    reruns: HashMap<(i64, u32), String>,
    /// The execution was hibernated before this run (see
    /// [`crate::store::Claim::resumed`]): its unfinished attempts were
    /// suspended at a durable wait, not cut short.
    pub resumed: bool,
    /// Whether a cancellation was delivered to the workflow.
    pub cancel_delivered: bool,
    /// Bytes of stdout / stderr journaled per invocation.
    output: HashMap<(String, String), usize>,
    /// Fuel burned by the invocations journaled so far.
    pub fuel_used: u64,
}

impl ReplayIndex {
    pub fn build(entries: &[Entry]) -> Self {
        let retry_marker = entries
            .iter()
            .filter(|e| matches!(e.event, Event::Retried(_)))
            .map(|e| e.seq)
            .max()
            .unwrap_or(0);
        let mut index = ReplayIndex::default();
        for e in entries {
            match &e.event {
                Event::Call { .. } => index
                    .calls
                    .entry(e.invocation.clone())
                    .or_default()
                    .push(e.clone()),
                Event::Result { call, outcome } => {
                    let void = e.seq < retry_marker && outcome.is_err();
                    if void {
                        let used = index.attempts_used(*call);
                        let ended = index.attempts_ended.entry(*call).or_default();
                        *ended = (*ended).max(used);
                    } else {
                        if matches!(outcome, Err(err) if err.kind == ErrorKind::Cancelled) {
                            index.cancel_delivered = true;
                        }
                        index.results.insert(*call, outcome.clone());
                    }
                }
                Event::Attempt { call, attempt } => {
                    let used = index.attempts_used.entry(*call).or_default();
                    *used = (*used).max(attempt.attempt);
                    if let Some(inv) = &attempt.invocation {
                        index.reruns.insert((*call, attempt.attempt), inv.clone());
                    }
                }
                Event::AttemptFailed { call, failed } => {
                    index.ended(*call, failed.attempt);
                    if e.seq > retry_marker {
                        index
                            .progress
                            .entry(*call)
                            .or_default()
                            .push(Progress::Failed {
                                retry_at: failed.retry_at,
                            });
                    }
                }
                Event::PollCheck { call, check } => {
                    index.ended(*call, check.attempt);
                    if e.seq > retry_marker {
                        index
                            .progress
                            .entry(*call)
                            .or_default()
                            .push(Progress::Checked(check.clone()));
                    }
                }
                Event::Output(out) => {
                    *index
                        .output
                        .entry((e.invocation.clone(), out.stream.clone()))
                        .or_default() += out.bytes as usize;
                }
                Event::Usage(usage) => index.fuel_used += usage.fuel,
                Event::Started(_)
                | Event::Finished(_)
                | Event::Retried(_)
                | Event::Upgraded(_)
                | Event::Served { .. } => {}
            }
        }
        index
    }

    fn ended(&mut self, call: i64, attempt: u32) {
        let ended = self.attempts_ended.entry(call).or_default();
        *ended = (*ended).max(attempt);
    }

    /// Bytes of `stream` journaled for `invocation` (its replay writes
    /// them again; only what comes after is new).
    pub fn output_recorded(&self, invocation: &str, stream: &str) -> usize {
        self.output
            .get(&(invocation.to_owned(), stream.to_owned()))
            .copied()
            .unwrap_or(0)
    }

    /// The recorded call at `cursor` of `invocation`, if the journal has one.
    pub fn call(&self, invocation: &str, cursor: usize) -> Option<&Entry> {
        self.calls.get(invocation).and_then(|c| c.get(cursor))
    }

    pub fn result(&self, call_seq: i64) -> Option<&Outcome> {
        self.results.get(&call_seq)
    }

    pub fn progress(&self, call_seq: i64) -> &[Progress] {
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

    /// The number of the attempt of the call at `call_seq` that was
    /// started and never ended, if there is one.
    pub fn open_attempt(&self, call_seq: i64) -> Option<u32> {
        let used = self.attempts_used(call_seq);
        let ended = self.attempts_ended.get(&call_seq).copied().unwrap_or(0);
        (used > ended).then_some(used)
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::journal::{
        Attempt, AttemptFailed, Call, CallError, CallKind, NoArgs, Retried, Sleep, SleepArgs,
        WORKFLOW,
    };
    use crate::model::Status;
    use serde_json::json;

    fn entry(seq: i64, inv: &str, event: Event) -> Entry {
        Entry {
            seq,
            invocation: inv.into(),
            event,
            at_ms: 0,
        }
    }

    fn step_call(seq: i64) -> Entry {
        let call = Call::NowMs(crate::journal::NowMs {
            args: NoArgs {},
            answer: 0,
        });
        let hash = CallKind::NowMs.hash(&NoArgs {});
        entry(seq, WORKFLOW, Event::Call { hash, call })
    }

    fn attempt(seq: i64, call: i64, n: u32) -> Entry {
        entry(
            seq,
            WORKFLOW,
            Event::Attempt {
                call,
                attempt: Attempt {
                    step: "s".into(),
                    attempt: n,
                    invocation: None,
                    queue: None,
                },
            },
        )
    }

    fn failed(seq: i64, call: i64, n: u32) -> Entry {
        entry(
            seq,
            WORKFLOW,
            Event::AttemptFailed {
                call,
                failed: AttemptFailed {
                    step: "s".into(),
                    attempt: n,
                    error: CallError::new(ErrorKind::Other("x".into()), "m"),
                    retry_at: 5,
                },
            },
        )
    }

    fn result(seq: i64, call: i64, outcome: Outcome) -> Entry {
        entry(seq, WORKFLOW, Event::Result { call, outcome })
    }

    #[test]
    fn error_results_before_a_retry_are_void() {
        let entries = vec![
            step_call(1),
            result(2, 1, Ok(json!(1))),
            step_call(3),
            attempt(4, 3, 1),
            entry(5, "3.1", step_call(5).event),
            attempt(6, 3, 2),
            failed(7, 3, 2),
            attempt(8, 3, 3),
            result(9, 3, Err(CallError::new(ErrorKind::Other("x".into()), ""))),
            entry(
                10,
                "operator",
                Event::Retried(Retried {
                    previous_status: Status::Failed,
                    error: None,
                }),
            ),
        ];
        let index = ReplayIndex::build(&entries);
        assert_eq!(index.result(1), Some(&Ok(json!(1))));
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
            step_call(1),
            attempt(2, 1, 1),
            failed(3, 1, 1),
            attempt(4, 1, 2),
        ];
        let mut index = ReplayIndex::build(&entries);
        assert_eq!(index.next_attempt(1), (3, "1.2".to_owned()));
        assert_eq!(index.progress(1), [Progress::Failed { retry_at: 5 }]);
        index.resumed = true;
        assert_eq!(
            index.next_attempt(1),
            (2, "1.2".to_owned()),
            "a hibernated attempt goes on under its number"
        );
        // The re-run crashes too: its successor still replays attempt 2's journal.
        let mut rerun = attempt(5, 1, 3);
        if let Event::Attempt { attempt, .. } = &mut rerun.event {
            attempt.invocation = Some("1.2".into());
        }
        entries.push(rerun);
        let index = ReplayIndex::build(&entries);
        assert_eq!(index.next_attempt(1), (4, "1.2".to_owned()));
    }

    #[test]
    fn cancelled_result_marks_delivery() {
        let sleep = Event::Call {
            hash: CallKind::Sleep.hash(&SleepArgs { duration_ms: 1 }),
            call: Call::Sleep(Sleep {
                args: SleepArgs { duration_ms: 1 },
                due_at: 1,
            }),
        };
        let entries = vec![
            entry(1, WORKFLOW, sleep),
            result(2, 1, Err(CallError::cancelled())),
        ];
        assert!(ReplayIndex::build(&entries).cancel_delivered);
    }
}
