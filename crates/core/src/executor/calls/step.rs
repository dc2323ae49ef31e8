//! `call-step`, `start-step` and `await-steps`: a step runs to its result
//! with retries, each attempt in the sandbox (a new invocation with its own
//! journal) or as a task on a worker queue. `poll` runs its checks the same
//! way ([`run_attempt`]).

use super::{CallOutcome, WasmResult, check_payload, payload_result};
use crate::executor::guest::GuestData;
use crate::executor::invocation::{self, Entrypoint, Outcome};
use crate::executor::parse_payload;
use crate::executor::replay::{Interrupt, Progress};
use crate::executor::state::ExecState;
use crate::executor::worker::{WorkerAttempt, WorkerEnd};
use crate::journal::{
    Attempt, AttemptFailed, AwaitSteps, CallError, CallStep, DurableCall, ErrorKind, Event,
    Handles, Served, StartStep, StepArgs, step_invocation,
};
use crate::model::{RetryPolicy, StepOptions};
use crate::runtime::bindings::cerebelum::workflow::host::StepHandle;
use crate::runtime::bindings::cerebelum::workflow::types as t;
use crate::store::{NewEntry, SideWrite};
use std::sync::Arc;
use std::time::Duration;

/// The step call of kind `C` (`call-step` or `start-step`) journaled:
/// its seq, with the step, its input and options.
async fn journal<C: DurableCall>(
    data: &mut GuestData,
    step: String,
    input: &str,
    options: Option<t::StepOptions>,
    make: fn(StepArgs) -> C,
    args_of: fn(C) -> StepArgs,
) -> WasmResult<(i64, StepArgs)> {
    check_payload(
        data.invocation()?,
        &format!("the input of step '{step}'"),
        input.len(),
    )?;
    let args = StepArgs {
        step,
        input: parse_payload(input),
        options: options.map(StepOptions::from),
    };
    let (seq, call) = data.call(args, |_, args| (make(args), Vec::new())).await?;
    Ok((seq, args_of(call)))
}

/// `call-step`: runs the step and waits for its result.
pub async fn call_step(
    data: &mut GuestData,
    step: String,
    input: String,
    options: Option<t::StepOptions>,
) -> WasmResult<Result<String, t::Error>> {
    let (seq, args) = journal(
        data,
        step,
        &input,
        options,
        |args| CallStep { args },
        |c| c.args,
    )
    .await?;
    let began = data.sandbox.wait_on_guests_begin();
    let inv = data.invocation()?;
    let outcome = run(
        inv.exec.clone(),
        inv.id.clone(),
        seq,
        args.step,
        input,
        args.options,
        inv.is_workflow(),
    )
    .await;
    data.sandbox.wait_end(began).await;
    payload_result(outcome)
}

/// `start-step`: runs the step beside the code; its handle is the call's
/// seq, for `await-steps`.
pub async fn start_step(
    data: &mut GuestData,
    step: String,
    input: String,
    options: Option<t::StepOptions>,
) -> WasmResult<StepHandle> {
    let (seq, args) = journal(
        data,
        step,
        &input,
        options,
        |args| StartStep { args },
        |c| c.args,
    )
    .await?;
    let inv = data.invocation()?;
    if inv.exec.recorded_result(seq).is_none() {
        // The step runs beside the workflow, in its span.
        let task = tokio::spawn(tracing::Instrument::in_current_span(run(
            inv.exec.clone(),
            inv.id.clone(),
            seq,
            args.step,
            input,
            args.options,
            false,
        )));
        inv.exec
            .tasks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(seq, task);
    }
    Ok(seq as u64)
}

/// `await-steps`: the results of started steps, in the order of their
/// handles.
pub async fn await_steps(
    data: &mut GuestData,
    handles: Vec<StepHandle>,
) -> WasmResult<Vec<Result<String, t::Error>>> {
    let args = Handles {
        handles: handles.clone(),
    };
    data.call(args, |_, args| (AwaitSteps { args }, Vec::new()))
        .await?;
    let began = data.sandbox.wait_on_guests_begin();
    let exec = data.invocation()?.exec.clone();
    let mut results = Vec::with_capacity(handles.len());
    let mut suspend: Option<Option<i64>> = None;
    for handle in handles {
        let seq = handle as i64;
        let outcome = match exec.recorded_result(seq) {
            Some(r) => Ok(r),
            None => {
                let task = exec
                    .tasks
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .remove(&seq);
                match task {
                    Some(task) => task.await.unwrap_or_else(|e| {
                        Err(Interrupt::Infra(format!("step task failed: {e}")))
                    }),
                    None => Ok(Err(CallError::new(
                        ErrorKind::InvalidHandle,
                        format!(
                            "no step was started with handle {handle} (or it was awaited already)"
                        ),
                    ))),
                }
            }
        };
        match outcome {
            Ok(r) => results.push(r.map(|v| v.to_string()).map_err(Into::into)),
            Err(Interrupt::Suspend { wake_at }) => {
                // Others keep running; hibernate once they are done,
                // waking for the earliest.
                let earliest = match (suspend.flatten(), wake_at) {
                    (Some(a), Some(b)) => Some(a.min(b)),
                    (a, b) => a.or(b),
                };
                suspend = Some(earliest);
            }
            Err(other) => return Err(wasmtime::Error::new(other)),
        }
    }
    data.sandbox.wait_end(began).await;
    if let Some(wake_at) = suspend {
        return Err(wasmtime::Error::new(Interrupt::Suspend { wake_at }));
    }
    Ok(results)
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
pub async fn run(
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
        if let Some(due) = retry_at.take()
            && let Some(ended) = exec.wait_for_due(&caller, seq, due, interruptible).await
        {
            return ended;
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
            Ran::Outcome(outcome, served) => (outcome, served),
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
        // A worker step that diverged from its history is not retried: a
        // new attempt would start afresh and repeat what the history holds
        // (as in the sandbox, where nondeterminism stops the execution).
        let tries_left = failed < policy.max_attempts
            && error.kind != ErrorKind::Nondeterminism
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
        if served.is_empty() {
            exec.writer.push_durable(failed_entry).await?;
        } else {
            let mut entries = served;
            entries.push(failed_entry);
            exec.writer.commit(entries, Vec::new(), None).await?;
        }
        attempt += 1;
        invocation = step_invocation(seq, attempt);
        retry_at = Some(due);
    }
}

/// The worker queue that serves `step` in this execution: the
/// execution's own, else the one the package places the step on; none:
/// the sandbox. An error if no worker can reach this engine (`run`).
pub fn step_queue(exec: &ExecState, step: &str) -> Result<Option<String>, CallError> {
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
pub struct Placement<'a> {
    pub caller: &'a str,
    pub seq: i64,
    pub step: &'a str,
    pub input: &'a String,
    /// The worker queue that serves it; none: the sandbox.
    pub queue: Option<&'a str>,
    pub timeout: Duration,
    pub interruptible: bool,
}

/// How an attempt ended.
pub enum Ran {
    /// With the journal entries to write before the outcome, in its
    /// commit: on a worker, what the step printed and the worker that
    /// served it (none in the sandbox, which journals its output as it
    /// goes).
    Outcome(Outcome, Vec<NewEntry>),
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
pub async fn run_attempt(
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
        return Ok(Ran::Outcome(outcome, Vec::new()));
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
        WorkerEnd::Returned {
            outcome,
            worker,
            output,
        } => {
            // What the step printed, as a sandboxed attempt's output, then
            // the worker that served it.
            let printed_by = step_invocation(place.seq, *attempt);
            let mut entries: Vec<NewEntry> = output
                .into_iter()
                .map(|out| NewEntry::new(printed_by.as_str(), Event::Output(out)))
                .collect();
            entries.extend(worker.map(|worker| {
                NewEntry::new(
                    place.caller,
                    Event::Served {
                        call: place.seq,
                        served: Served {
                            step: place.step.to_owned(),
                            attempt: *attempt,
                            worker,
                        },
                    },
                )
            }));
            Ok(Ran::Outcome(
                Outcome::Returned(outcome.map(|v| v.to_string())),
                entries,
            ))
        }
        WorkerEnd::Cancelled => {
            let close = vec![SideWrite::CloseTask {
                seq: place.seq,
                attempt: *attempt,
            }];
            Ok(Ran::Cancelled(
                exec.end_cancelled(place.caller, place.seq, close).await,
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
    if exec.engine.config.replay_only {
        // A new attempt runs code live: a replay check ends here.
        return Err(Interrupt::Suspend { wake_at: None });
    }
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
