//! The host calls that take time: steps (with retries), polls, approvals
//! and sleeps, and the one waiting primitive they share.
//!
//! Each starts from its journaled call entry (live or replayed) and picks
//! up where the journal stops: completed calls return their recorded
//! result, a call cut short by a crash continues from its recorded
//! attempts and due times.

use super::invocation::{self, Entrypoint, Outcome};
use super::parse_payload;
use super::replay::{Interrupt, Progress};
use super::state::ExecState;
use super::worker::{WorkerAttempt, WorkerEnd};
use crate::journal::{
    Attempt, AttemptFailed, CallError, Decided, ErrorKind, Event, Outcome as CallResult, PollCheck,
    Received, Served, step_invocation,
};
use crate::model::{RetryPolicy, Status, StepOptions};
use crate::store::{NewEntry, SideWrite};
use serde_json::Value;
use std::sync::Arc;
use std::time::Duration;

/// What a call that takes time ends with.
pub type CallOutcome = Result<CallResult, Interrupt>;

/// How a wait ended.
pub enum Wait {
    Elapsed,
    Cancelled,
    /// Too long to wait in process: the execution hibernates.
    Hibernate,
}

impl ExecState {
    /// Waits until `due_ms` (journaled), in process if it is short.
    /// `interruptible`: a cancellation ends the wait (workflow code only).
    pub async fn wait_until(&self, due_ms: i64, interruptible: bool) -> Wait {
        let threshold = self.engine.config.hibernate_after.as_millis() as i64;
        loop {
            if interruptible && self.cancel.pending() {
                return Wait::Cancelled;
            }
            let remaining = due_ms - self.engine.now_ms();
            if remaining <= 0 {
                return Wait::Elapsed;
            }
            if remaining > threshold {
                return Wait::Hibernate;
            }
            let notified = self.cancel.notify.notified();
            tokio::select! {
                _ = self.engine.clock.sleep_until(due_ms) => {}
                _ = notified, if interruptible => {}
            }
        }
    }

    /// Journals the result of the call at `seq`; durably if user code must
    /// not see it before it is stored.
    pub async fn resolve(
        &self,
        invocation: &str,
        seq: i64,
        result: CallResult,
        durable: bool,
        side: Vec<SideWrite>,
    ) -> CallOutcome {
        let entry = NewEntry::new(
            invocation,
            Event::Result {
                call: seq,
                outcome: result.clone(),
            },
        );
        if durable || !side.is_empty() {
            self.writer.commit(vec![entry], side, None).await?;
        } else {
            self.writer.push(entry).await?;
        }
        Ok(result)
    }

    /// Journals the result of the call at `seq`, after `served` (the
    /// worker that served it, in the same commit).
    ///
    /// A worker's outcome is not waited for: the task keeps it durably, so
    /// after a crash that loses the entries the open attempt finds it again
    /// and they are written anew — user code may see it at once. Anything
    /// else the code then makes durable is committed after them, in order.
    async fn resolve_after(
        &self,
        invocation: &str,
        seq: i64,
        result: CallResult,
        served: Option<NewEntry>,
    ) -> CallOutcome {
        let Some(served) = served else {
            return self
                .resolve(invocation, seq, result, true, Vec::new())
                .await;
        };
        let entry = NewEntry::new(
            invocation,
            Event::Result {
                call: seq,
                outcome: result.clone(),
            },
        );
        self.writer.push_all(vec![served, entry]).await?;
        Ok(result)
    }

    /// Delivers a pending cancellation as the result of the call at `seq`,
    /// if there is one and `interruptible`.
    pub async fn deliver_cancel(
        &self,
        invocation: &str,
        seq: i64,
        interruptible: bool,
        side: Vec<SideWrite>,
    ) -> Option<CallOutcome> {
        if !interruptible || !self.cancel.take() {
            return None;
        }
        tracing::info!(seq, "delivering cancellation");
        Some(
            self.resolve(invocation, seq, Err(CallError::cancelled()), true, side)
                .await,
        )
    }

    /// What the call at `seq` is answered with before it waits: its
    /// recorded result (replay), or a pending cancellation (delivered to
    /// workflow code). `None`: it goes on.
    pub async fn answered(
        &self,
        caller: &str,
        seq: i64,
        interruptible: bool,
    ) -> Option<CallOutcome> {
        if let Some(result) = self.recorded_result(seq) {
            return Some(Ok(result));
        }
        self.deliver_cancel(caller, seq, interruptible, Vec::new())
            .await
    }

    /// The recorded result of the call at `seq`, if the journal has one.
    pub fn recorded_result(&self, seq: i64) -> Option<CallResult> {
        let index = self.index.lock().unwrap_or_else(|p| p.into_inner());
        index.result(seq).cloned()
    }
}

/// Retry policy and CPU deadline of a step call: the call's options, else
/// the step's defaults from `describe`, else the engine's.
pub fn resolve_options(
    exec: &ExecState,
    step: &str,
    call: Option<&StepOptions>,
) -> Result<(RetryPolicy, Duration), CallError> {
    let info = exec
        .package
        .info
        .step(step)
        .map_err(|m| CallError::new(ErrorKind::UnknownStep, m))?;
    let retry = call
        .and_then(|o| o.retry.clone())
        .or_else(|| info.options.retry.clone())
        .unwrap_or_default();
    let timeout = call
        .and_then(|o| o.attempt_timeout_ms)
        .or(info.options.attempt_timeout_ms)
        .map(Duration::from_millis)
        .unwrap_or(exec.engine.config.step_timeout);
    Ok((retry, timeout))
}

/// Runs the step call journaled at `seq` to its result, with retries.
pub async fn step_call(
    exec: Arc<ExecState>,
    caller: String,
    seq: i64,
    step: String,
    input: String,
    options: Option<StepOptions>,
    interruptible: bool,
) -> CallOutcome {
    if let Some(answered) = exec.answered(&caller, seq, interruptible).await {
        return answered;
    }
    let (policy, timeout) = match resolve_options(&exec, &step, options.as_ref()) {
        Ok(p) => p,
        Err(e) => return exec.resolve(&caller, seq, Err(e), true, Vec::new()).await,
    };
    let (mut failed, (mut attempt, mut invocation), mut retry_at, mut open) = {
        let index = exec.index.lock().unwrap_or_else(|p| p.into_inner());
        let failed = index.progress(seq);
        let retry_at = failed.last().and_then(|p| match p {
            Progress::Failed { retry_at } => Some(*retry_at),
            Progress::Checked(_) => None,
        });
        (
            failed.len() as u32,
            index.next_attempt(seq),
            retry_at,
            index.open_attempt(seq),
        )
    };
    let queue = match step_queue(&exec, &step) {
        Ok(queue) => queue,
        Err(e) => return exec.resolve(&caller, seq, Err(e), true, Vec::new()).await,
    };
    loop {
        if let Some(due) = retry_at.take() {
            match exec.wait_until(due, interruptible).await {
                Wait::Elapsed => {}
                Wait::Cancelled => {
                    return exec
                        .deliver_cancel(&caller, seq, true, Vec::new())
                        .await
                        .unwrap_or_else(|| Ok(Err(CallError::cancelled())));
                }
                Wait::Hibernate => return Err(Interrupt::Suspend { wake_at: Some(due) }),
            }
        }
        let place = Placement {
            caller: &caller,
            seq,
            step: &step,
            input: &input,
            queue: queue.as_deref(),
            timeout,
            interruptible,
        };
        let guest_attempt = attempt;
        let (outcome, served) = match run_attempt(
            &exec,
            &place,
            &mut attempt,
            open.take(),
            &invocation,
            guest_attempt,
        )
        .await?
        {
            Ran::Outcome(outcome, served) => (outcome, served.map(|s| *s)),
            Ran::Cancelled(done) => return done,
        };
        let error = match outcome {
            Outcome::Returned(Ok(text)) => {
                match exec.check_payload(&format!("the result of step '{step}'"), text.len()) {
                    Ok(()) => {
                        exec.step_finished(true);
                        return exec
                            .resolve_after(&caller, seq, Ok(parse_payload(&text)), served)
                            .await;
                    }
                    Err(e) => e,
                }
            }
            Outcome::Returned(Err(e)) => e,
            Outcome::Interrupted(Interrupt::Nondeterminism(m)) => {
                CallError::new(ErrorKind::Nondeterminism, m)
            }
            Outcome::Interrupted(Interrupt::Cancelled) => {
                // A cancellation stopped the attempt: it is the call's result.
                tracing::info!(seq, %step, attempt, "cancellation stopped the step attempt");
                return match exec
                    .deliver_cancel(&caller, seq, interruptible, Vec::new())
                    .await
                {
                    Some(delivered) => delivered,
                    None => {
                        exec.resolve(&caller, seq, Err(CallError::cancelled()), true, Vec::new())
                            .await
                    }
                };
            }
            Outcome::Interrupted(other) => return Err(other),
        };
        failed += 1;
        let tries_left = failed < policy.max_attempts
            && !policy
                .non_retryable
                .iter()
                .any(|k| k == error.kind.as_str());
        let message = exec.sandbox.redact(&error.message);
        tracing::info!(seq, %step, attempt, kind = %error.kind, %message, tries_left, "step attempt failed");
        if !tries_left {
            exec.step_finished(false);
            return exec.resolve_after(&caller, seq, Err(error), served).await;
        }
        let due = exec.engine.now_ms() + policy.backoff_ms(failed) as i64;
        let failure = AttemptFailed {
            step: step.clone(),
            attempt,
            error,
            retry_at: due,
        };
        let failed_entry = NewEntry::new(
            caller.clone(),
            Event::AttemptFailed {
                call: seq,
                failed: failure,
            },
        );
        match served {
            Some(served) => {
                exec.writer
                    .commit(vec![served, failed_entry], Vec::new(), None)
                    .await?
            }
            None => {
                exec.writer.push_durable(failed_entry).await?;
            }
        }
        attempt += 1;
        invocation = step_invocation(seq, attempt);
        retry_at = Some(due);
    }
}

/// The worker queue that serves `step` in this execution: the
/// execution's own, else the one the package places the step on; none:
/// the sandbox. An error if no worker can reach this engine (`run`).
fn step_queue(exec: &ExecState, step: &str) -> Result<Option<String>, CallError> {
    let queue = exec.record.worker_queue.clone().or_else(|| {
        let info = exec.package.info.step(step).ok()?;
        info.options.worker.clone()
    });
    match queue {
        Some(queue) if !exec.engine.config.serves_workers => Err(CallError::new(
            ErrorKind::Denied,
            format!(
                "step '{step}' runs on worker queue '{queue}', and `cerebelum run` serves no \
                 workers; run the package on a server: `cerebelum serve`, a worker (`python -m \
                 cerebelum worker FILE.py --queue {queue}`), then `cerebelum start`"
            ),
        )),
        queue => Ok(queue),
    }
}

/// Where and how one attempt of a step (or check of a poll) runs.
struct Placement<'a> {
    caller: &'a str,
    seq: i64,
    step: &'a str,
    input: &'a String,
    /// The worker queue that serves it; none: the sandbox.
    queue: Option<&'a str>,
    timeout: Duration,
    interruptible: bool,
}

/// How an attempt ended.
enum Ran {
    /// With the worker that served it, as a journal entry to write with
    /// the outcome (none in the sandbox, or if no worker took it).
    Outcome(Outcome, Option<Box<NewEntry>>),
    /// The execution was cancelled while a worker had it: delivered.
    Cancelled(CallOutcome),
}

/// Runs attempt `attempt` of the call at `place.seq`: in the sandbox as
/// `invocation` (the guest sees `guest_attempt`), or as a task on the
/// worker queue. `open` is the attempt journaled before a crash or a
/// hibernation: its task is waited for again (a worker may hold it), and
/// `attempt` becomes it.
#[tracing::instrument(
    name = "step_attempt",
    skip_all,
    fields(step = place.step, call = place.seq, attempt = *attempt, queue = place.queue)
)]
async fn run_attempt(
    exec: &Arc<ExecState>,
    place: &Placement<'_>,
    attempt: &mut u32,
    open: Option<u32>,
    invocation: &str,
    guest_attempt: u32,
) -> Result<Ran, Interrupt> {
    if exec.cancel.paused() {
        // Paused by an operator: no new invocation. The execution
        // hibernates without a due time until it is resumed, and this call
        // runs its attempt then.
        tracing::info!(
            seq = place.seq,
            "paused: hibernating before the next attempt"
        );
        return Err(Interrupt::Suspend { wake_at: None });
    }
    let Some(queue) = place.queue else {
        push_attempt(
            exec,
            place.caller,
            place.seq,
            place.step,
            *attempt,
            invocation,
        )
        .await?;
        let outcome = invocation::run(
            exec,
            invocation.to_owned(),
            guest_attempt,
            place.timeout,
            Entrypoint::Step {
                name: place.step,
                input: place.input,
            },
        )
        .await;
        return Ok(Ran::Outcome(outcome, None));
    };
    let mut on_worker = WorkerAttempt {
        caller: place.caller,
        seq: place.seq,
        step: place.step,
        input: place.input,
        queue,
        attempt: *attempt,
        timeout: place.timeout,
        interruptible: place.interruptible,
    };
    let resume = match open {
        Some(open) => {
            on_worker.attempt = open;
            on_worker.exists(exec).await?
        }
        None => false,
    };
    if resume {
        *attempt = on_worker.attempt;
    } else {
        on_worker.attempt = *attempt;
        on_worker.open(exec).await?;
    }
    match on_worker.wait(exec, !resume).await? {
        WorkerEnd::Returned { outcome, worker } => {
            let served = worker.map(|worker| {
                Box::new(NewEntry::new(
                    place.caller,
                    Event::Served {
                        call: place.seq,
                        served: Served {
                            step: place.step.to_owned(),
                            attempt: *attempt,
                            worker,
                        },
                    },
                ))
            });
            Ok(Ran::Outcome(
                Outcome::Returned(outcome.map(|v| v.to_string())),
                served,
            ))
        }
        WorkerEnd::Cancelled => {
            let close = vec![SideWrite::CloseTask {
                seq: place.seq,
                attempt: *attempt,
            }];
            Ok(Ran::Cancelled(
                exec.deliver_cancel(place.caller, place.seq, true, close)
                    .await
                    .unwrap_or_else(|| Ok(Err(CallError::cancelled()))),
            ))
        }
    }
}

/// Journals the start of attempt `attempt` of the call at `seq`, which
/// runs as `invocation` (named only when it re-runs an earlier attempt's).
/// An attempt counts against the tenant's journal rate like a host call:
/// a tenant that fans out thousands of steps is paced the same way.
async fn push_attempt(
    exec: &ExecState,
    caller: &str,
    seq: i64,
    step: &str,
    attempt: u32,
    invocation: &str,
) -> Result<(), Interrupt> {
    if let Some(rate) = &exec.sandbox.journal_rate
        && exec.engine.runtime.cpu().contended()
    {
        let pause = rate.take();
        if !pause.is_zero() {
            tokio::time::sleep(pause).await;
        }
    }
    let attempt = Attempt {
        step: step.to_owned(),
        attempt,
        invocation: (invocation != step_invocation(seq, attempt)).then(|| invocation.to_owned()),
        queue: None,
    };
    exec.writer
        .push(NewEntry::new(caller, Event::Attempt { call: seq, attempt }))
        .await?;
    crate::metrics::metrics()
        .step_attempts
        .get_or_create(&crate::metrics::Metrics::package(
            &exec.record.tenant,
            &exec.record.package_name,
        ))
        .inc();
    Ok(())
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
pub async fn poll_call(
    exec: Arc<ExecState>,
    caller: String,
    seq: i64,
    check_step: String,
    input: String,
    plan: PollPlan,
    interruptible: bool,
) -> CallOutcome {
    if let Some(result) = exec.recorded_result(seq) {
        return Ok(result);
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
            match exec.wait_until(due, interruptible).await {
                Wait::Elapsed => {}
                Wait::Cancelled => {
                    return exec
                        .deliver_cancel(&caller, seq, true, Vec::new())
                        .await
                        .unwrap_or_else(|| Ok(Err(CallError::cancelled())));
                }
                Wait::Hibernate => return Err(Interrupt::Suspend { wake_at: Some(due) }),
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
        if let Some(served) = served {
            exec.writer.push(*served).await?;
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

/// Waits for the approval journaled at `seq` to be decided or to time out.
pub async fn approval_call(
    exec: Arc<ExecState>,
    caller: String,
    seq: i64,
    key: String,
    due_ms: Option<i64>,
    interruptible: bool,
) -> CallOutcome {
    if let Some(result) = exec.recorded_result(seq) {
        return Ok(result);
    }
    loop {
        let close = vec![SideWrite::CloseApproval {
            key: key.clone(),
            status: "cancelled".into(),
        }];
        if let Some(done) = exec
            .deliver_cancel(&caller, seq, interruptible, close)
            .await
        {
            return done;
        }
        let approvals = exec
            .engine
            .store
            .executions()
            .approvals(&exec.record.id)
            .await?;
        let current = approvals.into_iter().find(|a| a.key == key);
        let decision = current.as_ref().and_then(|a| match a.status.as_str() {
            "approved" => Some(Decided::Approved(a.decision.clone().unwrap_or(Value::Null))),
            "rejected" => Some(Decided::Rejected(match a.decision.clone() {
                Some(Value::String(reason)) => reason,
                Some(other) => other.to_string(),
                None => String::new(),
            })),
            "timed-out" => Some(Decided::TimedOut),
            _ => None,
        });
        if let Some(decision) = decision {
            return exec
                .resolve(&caller, seq, Ok(decision.to_value()), false, Vec::new())
                .await;
        }
        match due_ms {
            // The row is written with the call entry: it exists once that
            // batch is durable, which hibernation waits for anyway.
            Some(due) if current.is_some() && exec.engine.now_ms() >= due => {
                exec.engine
                    .store
                    .time_out_approval(&exec.record.id, &key, exec.engine.now_ms())
                    .await?;
            }
            _ => {
                exec.writer.sync().await?;
                if current.is_none() {
                    // Written by the sync above; look again.
                    if !exec
                        .engine
                        .store
                        .executions()
                        .approvals(&exec.record.id)
                        .await?
                        .iter()
                        .any(|a| a.key == key)
                    {
                        return Err(Interrupt::Infra(format!(
                            "approval '{key}' was not recorded"
                        )));
                    }
                    continue;
                }
                return Err(Interrupt::Suspend { wake_at: due_ms });
            }
        }
    }
}

/// Waits for the next signal `name` of the execution (the call at `seq`),
/// or until `due_ms`. A buffered signal is taken in the commit that
/// journals the result, so it is delivered once: a crash before that
/// commit leaves it buffered for the replayed call.
pub async fn signal_call(
    exec: Arc<ExecState>,
    caller: String,
    seq: i64,
    name: String,
    due_ms: Option<i64>,
    interruptible: bool,
) -> CallOutcome {
    if let Some(answered) = exec.answered(&caller, seq, interruptible).await {
        return answered;
    }
    if let Some(signal) = exec
        .engine
        .store
        .executions()
        .next_signal(&exec.record.id, &name)
        .await?
    {
        let take = vec![SideWrite::ConsumeSignal {
            signal: signal.seq,
            call: seq,
        }];
        let received = Received::Signal(signal.payload).to_value();
        return exec.resolve(&caller, seq, Ok(received), true, take).await;
    }
    if due_ms.is_some_and(|due| exec.engine.now_ms() >= due) {
        // Durable: what the code does next must not change on a replay
        // that finds a signal sent after the timeout.
        let timed_out = Received::TimedOut.to_value();
        return exec
            .resolve(&caller, seq, Ok(timed_out), true, Vec::new())
            .await;
    }
    // Nothing yet: hibernate until the timeout. A signal sent meanwhile
    // wakes the execution (or, sent before the hibernation is stored,
    // makes it due at once: see `StatusChange::Waiting`).
    exec.writer.sync().await?;
    Err(Interrupt::Suspend { wake_at: due_ms })
}

/// Waits for the child started at `handle` (execution `child`) to end,
/// following it through its continue-as-new runs: the result of the call
/// at `seq` is the child's result or error.
pub async fn child_call(
    exec: Arc<ExecState>,
    caller: String,
    seq: i64,
    handle: u64,
    child: Option<String>,
    interruptible: bool,
) -> CallOutcome {
    if let Some(answered) = exec.answered(&caller, seq, interruptible).await {
        return answered;
    }
    let Some(mut id) = child else {
        let e = CallError::new(
            ErrorKind::InvalidHandle,
            format!("no child was started with handle {handle}"),
        );
        return exec.resolve(&caller, seq, Err(e), true, Vec::new()).await;
    };
    let executions = &exec.engine.store;
    loop {
        let child = executions.executions().execution(&id).await?;
        let result = match child.status {
            Status::Completed => {
                let next = child
                    .result
                    .as_ref()
                    .and_then(|r| r.get("continued_as"))
                    .and_then(Value::as_str);
                if let Some(next) = next
                    && let Ok(run) = executions.executions().execution(next).await
                    && run.continued_from.as_deref() == Some(id.as_str())
                {
                    id = run.id;
                    continue;
                }
                Ok(child.result.unwrap_or(Value::Null))
            }
            Status::Failed => {
                let e = child
                    .error
                    .unwrap_or_else(|| CallError::new(ErrorKind::Other("error".into()), ""));
                Err(CallError::new(
                    e.kind,
                    format!(
                        "child workflow {} ({id}) failed: {}",
                        child.workflow, e.message
                    ),
                ))
            }
            Status::Cancelled => Err(CallError::new(
                ErrorKind::ChildCancelled,
                format!("child workflow {} ({id}) was cancelled", child.workflow),
            )),
            _ => {
                // Its end wakes this execution (`SideWrite::WakeParent`).
                exec.writer.sync().await?;
                return Err(Interrupt::Suspend { wake_at: None });
            }
        };
        // Not durable: the child's row holds it.
        return exec.resolve(&caller, seq, result, false, Vec::new()).await;
    }
}
