//! `poll`: the check step runs every interval until it returns something
//! other than `null` (or the poll times out or runs out of checks), one
//! journal entry per check; each check is an attempt like a step's.

use super::step::{Placement, Ran, resolve_options, run_attempt, step_queue};
use super::{CallOutcome, WasmResult, payload_result};
use crate::executor::guest::GuestData;
use crate::executor::invocation::Outcome;
use crate::executor::parse_payload;
use crate::executor::replay::{Interrupt, Progress};
use crate::executor::state::ExecState;
use crate::journal::{
    CallError, ErrorKind, Event, Poll, PollArgs, PollCheck, PollOptions, step_invocation,
};
use crate::runtime::bindings::cerebelum::workflow::types as t;
use crate::store::NewEntry;
use std::sync::Arc;

/// `poll`: journals the call, then runs it to its result.
pub async fn poll(
    data: &mut GuestData,
    check_step: String,
    input: String,
    options: t::PollOptions,
) -> WasmResult<Result<String, t::Error>> {
    let args = PollArgs {
        check_step,
        input: parse_payload(&input),
        options: PollOptions {
            interval_ms: options.interval_ms,
            max_attempts: options.max_attempts,
            timeout_ms: options.timeout_ms,
        },
    };
    let (seq, poll) = data
        .call(args, |inv, args| {
            let started_at = inv.exec.engine.now_ms();
            (Poll { args, started_at }, Vec::new())
        })
        .await?;
    let plan = PollPlan {
        interval_ms: poll.args.options.interval_ms,
        max_attempts: poll.args.options.max_attempts.max(1),
        deadline_ms: poll.deadline_ms(),
    };
    let began = data.sandbox.wait_on_guests_begin();
    let inv = data.invocation()?;
    let outcome = run(
        inv.exec.clone(),
        inv.id.clone(),
        seq,
        poll.args.check_step,
        input,
        plan,
        inv.is_workflow(),
    )
    .await;
    data.sandbox.wait_end(began).await;
    payload_result(outcome)
}

/// Options of a poll, as journaled.
#[derive(Debug, Clone, Copy)]
pub struct PollPlan {
    pub interval_ms: u64,
    pub max_attempts: u32,
    /// Absolute deadline, from the journaled start.
    pub deadline_ms: Option<i64>,
}

/// Runs the poll journaled at `seq`: the check step until it returns
/// something other than `null`, one journal entry per check.
pub async fn run(
    exec: Arc<ExecState>,
    caller: String,
    seq: i64,
    check_step: String,
    input: String,
    plan: PollPlan,
    interruptible: bool,
) -> CallOutcome {
    if let Some(recorded) = exec.recorded(seq) {
        return recorded;
    }
    let (mut checks, (mut number, mut invocation), mut next_at, mut last_error, mut open) = {
        let index = exec.index.lock().unwrap_or_else(|p| p.into_inner());
        let done = index.progress(seq);
        let last = done.last().and_then(|p| match p {
            Progress::Checked(check) => Some(check),
            Progress::Failed { .. } => None,
        });
        (
            done.len() as u32,
            index.next_attempt(seq),
            last.map(|c| c.next_at),
            last.and_then(|c| c.error.clone()),
            index.open_attempt(seq),
        )
    };
    let queue = match step_queue(&exec, &check_step) {
        Ok(queue) => queue,
        Err(e) => return exec.resolve(&caller, seq, Err(e), true, Vec::new()).await,
    };
    let (_, timeout) = match resolve_options(&exec, &check_step, None) {
        Ok(p) => p,
        Err(e) => return exec.resolve(&caller, seq, Err(e), true, Vec::new()).await,
    };
    loop {
        if let Some(due) = next_at.take() {
            if let Some(ended) = exec.wait_for_due(&caller, seq, due, interruptible).await {
                return ended;
            }
        } else if let Some(done) = exec
            .deliver_cancel(&caller, seq, interruptible, Vec::new())
            .await
        {
            return done;
        }
        let last = last_error
            .as_deref()
            .map(|e| format!(" (last check failed: {e})"))
            .unwrap_or_default();
        if let Some(deadline) = plan.deadline_ms
            && exec.engine.now_ms() >= deadline
        {
            let e = CallError::new(
                ErrorKind::PollTimeout,
                format!("poll of '{check_step}' timed out after {checks} checks{last}"),
            );
            return exec.resolve(&caller, seq, Err(e), true, Vec::new()).await;
        }
        checks += 1;
        let place = Placement {
            caller: &caller,
            seq,
            step: &check_step,
            input: &input,
            queue: queue.as_deref(),
            timeout,
            interruptible,
        };
        let (outcome, served) = match run_attempt(
            &exec,
            &place,
            &mut number,
            open.take(),
            &invocation,
            checks,
        )
        .await?
        {
            Ran::Outcome(outcome, served) => (outcome, served),
            Ran::Cancelled(done) => return done,
        };
        if !served.is_empty() {
            exec.writer.push_all(served).await?;
        }
        last_error = None;
        match outcome {
            Outcome::Returned(Ok(text)) => {
                let value = parse_payload(&text);
                if !value.is_null() {
                    return exec
                        .resolve(&caller, seq, Ok(value), true, Vec::new())
                        .await;
                }
            }
            Outcome::Returned(Err(e)) => last_error = Some(format!("{}: {}", e.kind, e.message)),
            Outcome::Interrupted(Interrupt::Nondeterminism(m)) => last_error = Some(m),
            Outcome::Interrupted(other) => return Err(other),
        }
        if checks >= plan.max_attempts {
            let last = last_error
                .as_deref()
                .map(|e| format!(" (last check failed: {e})"))
                .unwrap_or_default();
            let e = CallError::new(
                ErrorKind::PollExhausted,
                format!("'{check_step}' was not ready after {checks} checks{last}"),
            );
            return exec.resolve(&caller, seq, Err(e), true, Vec::new()).await;
        }
        let mut due = exec.engine.now_ms() + plan.interval_ms as i64;
        if let Some(deadline) = plan.deadline_ms {
            due = due.min(deadline);
        }
        let check = PollCheck {
            attempt: number,
            check: checks,
            next_at: due,
            error: last_error.clone(),
        };
        exec.writer
            .push(NewEntry::new(
                caller.clone(),
                Event::PollCheck { call: seq, check },
            ))
            .await?;
        number += 1;
        invocation = step_invocation(seq, number);
        next_at = Some(due);
    }
}
